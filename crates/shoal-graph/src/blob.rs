//! [`Blob`]: bulk bytes that move between processes with at most one copy.
//!
//! A `Vec<u8>` result goes through serde element by element. A `Blob` is
//! written as its length and then its bytes in one `memcpy` (postcard's
//! byte-string form, which is also exactly how postcard writes a `Vec<u8>`,
//! so a `Blob` result can be taken as a `Vec<u8>` argument and the other
//! way round).
//!
//! Decoding copies the bytes once, except inside [`with_backing`]: there a
//! `Blob` whose bytes lie in the shared buffer being decoded becomes a
//! reference into that buffer instead of a copy. Workers decode fetched
//! results that way, so a result that arrived in one frame, or in a shared
//! memory mapping, is never copied again.

use std::cell::RefCell;
use std::fmt;
use std::ops::Deref;

use bytes::Bytes;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// Immutable bulk bytes, cheap to clone (a reference count), that a remote
/// function returns or takes when it moves much data.
///
/// Cloning shares the bytes; [`Blob::from`] a `Vec<u8>` takes the vector
/// without copying it.
///
/// # Examples
///
/// ```
/// use shoal_graph::Blob;
///
/// let blob = Blob::from(vec![1u8, 2, 3]);
/// assert_eq!(&blob[..], &[1, 2, 3]);
/// // Encoded as length + bytes: the same as a Vec<u8>.
/// let wire = postcard::to_allocvec(&blob)?;
/// assert_eq!(wire, postcard::to_allocvec(&vec![1u8, 2, 3])?);
/// assert_eq!(postcard::from_bytes::<Blob>(&wire)?, blob);
/// # Ok::<(), postcard::Error>(())
/// ```
///
/// # Performance
///
/// Encoding is one copy of the bytes; decoding is one copy, or none inside
/// [`with_backing`] (how shoal's workers decode what they fetch).
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Blob(Bytes);

impl Blob {
    /// A blob of these bytes (copied once).
    pub fn copy_from_slice(bytes: &[u8]) -> Blob {
        Blob(Bytes::copy_from_slice(bytes))
    }

    /// The bytes as [`bytes::Bytes`], sharing them.
    pub fn to_bytes(&self) -> Bytes {
        self.0.clone()
    }

    /// The number of bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no bytes.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Deref for Blob {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl AsRef<[u8]> for Blob {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl From<Vec<u8>> for Blob {
    fn from(bytes: Vec<u8>) -> Blob {
        Blob(Bytes::from(bytes))
    }
}

impl From<Bytes> for Blob {
    fn from(bytes: Bytes) -> Blob {
        Blob(bytes)
    }
}

impl From<Blob> for Bytes {
    fn from(blob: Blob) -> Bytes {
        blob.0
    }
}

impl fmt::Debug for Blob {
    /// The length and the first few bytes: a blob is usually too big to print.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let head = &self.0[..self.0.len().min(8)];
        write!(f, "Blob({} bytes: {head:02x?}{})", self.0.len(), if self.0.len() > 8 { "…" } else { "" })
    }
}

impl Serialize for Blob {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.0)
    }
}

thread_local! {
    /// The shared buffer being decoded on this thread, if any (see
    /// [`with_backing`]).
    static BACKING: RefCell<Option<Bytes>> = const { RefCell::new(None) };
}

/// Runs `decode` with `backing` as the buffer that [`Blob`]s decoded on this
/// thread may refer to instead of copying from.
///
/// `decode` should decode from `backing` itself; a blob whose bytes lie
/// inside it is then a slice of it (no copy, and it keeps the whole buffer
/// alive), any other blob is copied as usual. Nested calls see the innermost
/// backing.
///
/// # Examples
///
/// ```
/// use bytes::Bytes;
/// use shoal_graph::{Blob, blob::with_backing};
///
/// let wire = Bytes::from(postcard::to_allocvec(&Blob::from(vec![7u8; 1000]))?);
/// let blob: Blob = with_backing(&wire, || postcard::from_bytes(&wire))?;
/// // The blob's bytes are the wire's bytes, after the 2-byte length.
/// assert_eq!(blob.as_ptr(), wire[2..].as_ptr());
/// # Ok::<(), postcard::Error>(())
/// ```
pub fn with_backing<R>(backing: &Bytes, decode: impl FnOnce() -> R) -> R {
    struct Restore(Option<Bytes>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let previous = self.0.take();
            BACKING.with(|b| *b.borrow_mut() = previous);
        }
    }
    let previous = BACKING.with(|b| b.borrow_mut().replace(backing.clone()));
    // Restored even if `decode` panics, so a later decode on this thread
    // never refers to a stale buffer.
    let _restore = Restore(previous);
    decode()
}

/// A blob of `bytes`: a slice of the current backing if they lie in it.
fn from_borrowed(bytes: &[u8]) -> Blob {
    let shared = BACKING.with(|b| {
        let backing = b.borrow();
        let backing = backing.as_ref()?;
        let (start, end) = (backing.as_ptr() as usize, backing.as_ptr() as usize + backing.len());
        let (at, len) = (bytes.as_ptr() as usize, bytes.len());
        // `slice_ref` panics on a slice outside the buffer: check first.
        (at >= start && at.checked_add(len)? <= end && !bytes.is_empty()).then(|| backing.slice_ref(bytes))
    });
    Blob(shared.unwrap_or_else(|| Bytes::copy_from_slice(bytes)))
}

struct BlobVisitor;

impl<'de> Visitor<'de> for BlobVisitor {
    type Value = Blob;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a byte string")
    }

    fn visit_borrowed_bytes<E: de::Error>(self, v: &'de [u8]) -> Result<Blob, E> {
        Ok(from_borrowed(v))
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Blob, E> {
        Ok(from_borrowed(v))
    }

    fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Blob, E> {
        Ok(Blob::from(v))
    }

    /// Self-describing formats (JSON) write bytes as a sequence of numbers.
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Blob, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 20));
        while let Some(b) = seq.next_element::<u8>()? {
            out.push(b);
        }
        Ok(Blob::from(out))
    }
}

impl<'de> Deserialize<'de> for Blob {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Blob, D::Error> {
        deserializer.deserialize_bytes(BlobVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outside_a_backing_decoding_copies() {
        let wire = postcard::to_allocvec(&Blob::from(vec![5u8; 300])).expect("encodes");
        let blob: Blob = postcard::from_bytes(&wire).expect("decodes");
        assert_eq!(&blob[..], &[5u8; 300][..]);
        assert_ne!(blob.as_ptr(), wire[2..].as_ptr());
    }

    #[test]
    fn a_blob_from_another_buffer_is_copied_and_the_backing_is_restored() {
        let backing = Bytes::from(vec![0u8; 16]);
        let wire = postcard::to_allocvec(&Blob::from(vec![9u8; 4])).expect("encodes");
        let blob: Blob = with_backing(&backing, || postcard::from_bytes(&wire)).expect("decodes");
        assert_eq!(&blob[..], &[9u8; 4]);
        assert!(BACKING.with(|b| b.borrow().is_none()));
    }

    #[test]
    fn truncated_and_garbage_input_is_an_error() {
        let wire = postcard::to_allocvec(&Blob::from(vec![1u8; 200])).expect("encodes");
        let shared = Bytes::from(wire.clone());
        for cut in 0..wire.len() {
            let part = shared.slice(..cut);
            assert!(with_backing(&part, || postcard::from_bytes::<Blob>(&part)).is_err(), "cut at {cut}");
        }
        assert!(postcard::from_bytes::<Blob>(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]).is_err());
    }

    #[test]
    fn json_round_trip() {
        let blob = Blob::from(vec![1u8, 2]);
        let json = serde_json::to_string(&blob).expect("encodes");
        assert_eq!(serde_json::from_str::<Blob>(&json).expect("decodes"), blob);
    }
}

// A task may return bulk bytes as they are.
crate::task_output!(Blob);
