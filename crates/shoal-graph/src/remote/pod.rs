//! Fast paths for vectors of fixed-width numbers (`Vec<u8>`, `Vec<i8>`,
//! `Vec<f32>`, `Vec<f64>`).
//!
//! postcard writes such a vector as its length (a varint) followed by each
//! element's little-endian bytes, but it gets there one element at a time
//! through serde, which is slow for hundreds of megabytes. These functions
//! write and read exactly the same bytes in bulk, so the wire format does
//! not change and either side may take either path. Integers wider than a
//! byte are varints in postcard and keep the serde path.

use std::any::Any;
use std::sync::Arc;

use crate::Value;

/// A number whose postcard encoding is its `SIZE` little-endian bytes.
trait Pod: bytemuck::Pod + Send + Sync + 'static {
    const SIZE: usize;
    fn put(self, out: &mut [u8]);
    fn get(bytes: &[u8]) -> Self;
    /// The elements' encoding, read in place: on a little-endian machine a
    /// number's memory is its encoding, so a vector is copied (or lent) with
    /// one memcpy instead of element by element.
    fn as_bytes(v: &[Self]) -> Option<&[u8]> {
        cfg!(target_endian = "little").then(|| bytemuck::cast_slice(v))
    }
}

macro_rules! pod {
    ($($t:ty);*) => {$(
        impl Pod for $t {
            const SIZE: usize = std::mem::size_of::<$t>();
            fn put(self, out: &mut [u8]) {
                out.copy_from_slice(&self.to_le_bytes());
            }
            fn get(bytes: &[u8]) -> Self {
                let mut le = [0; std::mem::size_of::<$t>()];
                le.copy_from_slice(bytes);
                <$t>::from_le_bytes(le)
            }
        }
    )*};
}

pod!(u8; i8; f32; f64);

/// Calls `$f::<P>` with the element type `P` of the vector `$value` is, if
/// it is one of the fast-path vectors.
macro_rules! with_pod_vec {
    ($value:expr, |$v:ident| $body:expr) => {{
        let any: &dyn Any = $value;
        if let Some($v) = any.downcast_ref::<Vec<u8>>() {
            Some($body)
        } else if let Some($v) = any.downcast_ref::<Vec<i8>>() {
            Some($body)
        } else if let Some($v) = any.downcast_ref::<Vec<f32>>() {
            Some($body)
        } else if let Some($v) = any.downcast_ref::<Vec<f64>>() {
            Some($body)
        } else {
            None
        }
    }};
}

/// The bytes of postcard's varint for `n`.
fn varint_len(n: usize) -> usize {
    let bits = usize::BITS - n.leading_zeros();
    (bits.max(1) as usize).div_ceil(7)
}

fn write_varint(mut n: usize, out: &mut [u8]) -> usize {
    let mut i = 0;
    while n >= 0x80 {
        out[i] = (n as u8) | 0x80;
        n >>= 7;
        i += 1;
    }
    out[i] = n as u8;
    i + 1
}

fn size_of_vec<P: Pod>(v: &[P]) -> usize {
    varint_len(v.len()) + v.len() * P::SIZE
}

fn encode_vec<P: Pod>(v: &[P], out: &mut [u8]) {
    let head = write_varint(v.len(), out);
    let body = &mut out[head..];
    if let Some(bytes) = P::as_bytes(v) {
        // One memcpy; the loop below would do the same, less surely.
        body.copy_from_slice(bytes);
        return;
    }
    for (chunk, x) in body.chunks_exact_mut(P::SIZE).zip(v) {
        x.put(chunk);
    }
}

fn decode_vec<P: Pod>(bytes: &[u8]) -> Result<Vec<P>, postcard::Error> {
    let (len, rest) = postcard::take_from_bytes::<u64>(bytes)?;
    // The declared length is checked against the bytes present before
    // anything is allocated: a corrupt length is an error, not a huge vector.
    let n = usize::try_from(len)
        .ok()
        .and_then(|len| len.checked_mul(P::SIZE))
        .filter(|&n| n <= rest.len())
        .ok_or(postcard::Error::DeserializeUnexpectedEnd)?;
    Ok(rest[..n].chunks_exact(P::SIZE).map(P::get).collect())
}

/// The encoded size of `value`, if it is a fast-path vector.
pub(super) fn size<T: 'static>(value: &T) -> Option<usize> {
    with_pod_vec!(value, |v| size_of_vec(v))
}

/// Encodes a fast-path vector into `out`, exactly [`size`] bytes long;
/// does nothing for another type.
pub(super) fn encode<T: 'static>(value: &T, out: &mut [u8]) {
    let _ = with_pod_vec!(value, |v| encode_vec(v, out));
}

fn write_vec<P: Pod>(v: &[P], out: &mut dyn std::io::Write) -> std::io::Result<()> {
    let mut head = [0; 10];
    let n = write_varint(v.len(), &mut head);
    out.write_all(&head[..n])?;
    if let Some(bytes) = P::as_bytes(v) {
        return out.write_all(bytes);
    }
    // Numbers go out through a small buffer, a block at a time.
    let mut buf = vec![0; 64 * 1024];
    for block in v.chunks(buf.len() / P::SIZE) {
        let used = &mut buf[..block.len() * P::SIZE];
        for (chunk, x) in used.chunks_exact_mut(P::SIZE).zip(block) {
            x.put(chunk);
        }
        out.write_all(used)?;
    }
    Ok(())
}

/// Writes a fast-path vector's encoding to `out`; `None` for another type.
pub(super) fn write<T: 'static>(value: &T, out: &mut dyn std::io::Write) -> Option<std::io::Result<()>> {
    with_pod_vec!(value, |v| write_vec(v, &mut *out))
}

fn borrow_vec<P: Pod>(v: &[P]) -> Option<(Vec<u8>, &[u8])> {
    let body = P::as_bytes(v)?;
    let mut head = vec![0; 10];
    let n = write_varint(v.len(), &mut head);
    head.truncate(n);
    Some((head, body))
}

/// The encoding of `value` as a short head (the length) and a body that
/// is the value's own memory, when it is a [`Blob`](crate::Blob) or a
/// fast-path vector whose memory is its encoding.
pub(super) fn borrow<T: 'static>(value: &T) -> Option<(Vec<u8>, &[u8])> {
    let any: &dyn Any = value;
    if let Some(blob) = any.downcast_ref::<crate::Blob>() {
        return borrow_vec::<u8>(blob);
    }
    with_pod_vec!(value, |v| borrow_vec(v)).flatten()
}

fn erase<P: Pod>(v: Vec<P>) -> Value {
    Arc::new(v)
}

/// Decodes a fast-path vector; `None` when `T` is not one.
pub(super) fn decode<T: 'static>(bytes: &[u8]) -> Option<Result<Value, postcard::Error>> {
    use std::any::TypeId;
    let t = TypeId::of::<T>();
    if t == TypeId::of::<Vec<u8>>() {
        Some(decode_vec::<u8>(bytes).map(erase))
    } else if t == TypeId::of::<Vec<i8>>() {
        Some(decode_vec::<i8>(bytes).map(erase))
    } else if t == TypeId::of::<Vec<f32>>() {
        Some(decode_vec::<f32>(bytes).map(erase))
    } else if t == TypeId::of::<Vec<f64>>() {
        Some(decode_vec::<f64>(bytes).map(erase))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn fast<T: 'static>(value: &T) -> Vec<u8> {
        let mut out = vec![0; size(value).expect("a fast-path vector")];
        encode(value, &mut out);
        out
    }

    fn decoded<T: Clone + 'static>(bytes: &[u8]) -> Result<T, postcard::Error> {
        decode::<T>(bytes).expect("a fast-path type").map(|v| v.downcast_ref::<T>().expect("its type").clone())
    }

    #[test]
    fn other_types_take_the_serde_path() {
        assert_eq!(size(&vec![1u64]), None);
        assert!(decode::<Vec<i64>>(&[0]).is_none());
        assert!(decode::<String>(&[0]).is_none());
    }

    proptest! {
        #[test]
        fn same_bytes_as_postcard(b in proptest::collection::vec(any::<u8>(), 0..300),
                                  f in proptest::collection::vec(any::<f64>(), 0..300),
                                  g in proptest::collection::vec(any::<f32>(), 0..40),
                                  i in proptest::collection::vec(any::<i8>(), 0..40)) {
            prop_assert_eq!(fast(&b), postcard::to_allocvec(&b).expect("encodes"));
            prop_assert_eq!(fast(&f), postcard::to_allocvec(&f).expect("encodes"));
            prop_assert_eq!(fast(&g), postcard::to_allocvec(&g).expect("encodes"));
            prop_assert_eq!(fast(&i), postcard::to_allocvec(&i).expect("encodes"));
            let mut written = Vec::new();
            write(&f, &mut written).expect("a fast-path vector").expect("writes");
            prop_assert_eq!(&written, &fast(&f));
            prop_assert_eq!(decoded::<Vec<u8>>(&fast(&b)).expect("decodes"), b);
            let back = decoded::<Vec<f64>>(&fast(&f)).expect("decodes");
            prop_assert!(back.iter().zip(&f).all(|(x, y)| x.to_bits() == y.to_bits()) && back.len() == f.len());
        }

        /// A lent encoding, head then body, is the postcard encoding.
        #[test]
        fn borrowed_encoding_is_the_encoding(b in proptest::collection::vec(any::<u8>(), 0..300),
                                             f in proptest::collection::vec(any::<f64>(), 0..300),
                                             g in proptest::collection::vec(any::<f32>(), 0..40)) {
            fn joined<T: 'static>(value: &T) -> Vec<u8> {
                let (mut head, body) = borrow(value).expect("lendable");
                head.extend_from_slice(body);
                head
            }
            prop_assert_eq!(joined(&b), postcard::to_allocvec(&b).expect("encodes"));
            prop_assert_eq!(joined(&f), postcard::to_allocvec(&f).expect("encodes"));
            prop_assert_eq!(joined(&g), postcard::to_allocvec(&g).expect("encodes"));
            let blob = crate::Blob::from(b.clone());
            prop_assert_eq!(joined(&blob), postcard::to_allocvec(&blob).expect("encodes"));
            prop_assert!(borrow(&vec![1u64]).is_none() && borrow(&String::new()).is_none());
        }

        /// Truncated or corrupt input is an error, never a panic or a huge
        /// allocation; whatever decodes agrees with postcard's own decoder.
        #[test]
        fn truncated_or_corrupt_input_never_panics(f in proptest::collection::vec(any::<f64>(), 0..50),
                                                   cut in any::<prop::sample::Index>(),
                                                   garbage in proptest::collection::vec(any::<u8>(), 0..40)) {
            let wire = fast(&f);
            let part = &wire[..cut.index(wire.len() + 1)];
            let ours = decoded::<Vec<f64>>(part).map(|v| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>());
            let theirs = postcard::take_from_bytes::<Vec<f64>>(part)
                .map(|(v, _)| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>());
            prop_assert_eq!(ours.ok(), theirs.ok());
            let ours = decoded::<Vec<u8>>(&garbage).ok();
            prop_assert_eq!(ours, postcard::take_from_bytes::<Vec<u8>>(&garbage).ok().map(|(v, _)| v));
        }
    }

    #[test]
    fn a_huge_declared_length_is_an_error() {
        let wire = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 1, 2, 3];
        assert!(decoded::<Vec<f64>>(&wire).is_err());
        assert!(decoded::<Vec<u8>>(&wire).is_err());
    }

    #[test]
    fn varint_lengths() {
        for n in [0usize, 1, 127, 128, 16_383, 16_384, 200_000_000, usize::MAX] {
            let mut out = [0; 10];
            assert_eq!(write_varint(n, &mut out), varint_len(n), "{n}");
            assert_eq!(&out[..varint_len(n)], postcard::to_allocvec(&(n as u64)).expect("encodes"), "{n}");
        }
    }
}
