//! One block of an array, as tasks pass it around.

use ndarray::{ArrayD, IxDyn};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use shoal_graph::Blob;

use crate::dtype::DType;

/// The data of one chunk, in its element type.
///
/// Tasks of an array's graph take and return chunks; inside one process a
/// chunk moves between tasks without copying. Between processes a chunk is
/// its type, its shape and its elements' little-endian bytes in one piece
/// (written and read with a copy each, not element by element through
/// serde, which costs several times more for a chunk of millions).
#[derive(Clone, Debug, PartialEq)]
pub enum Chunk {
    /// `f64` data.
    F64(ArrayD<f64>),
    /// `f32` data.
    F32(ArrayD<f32>),
    /// `i64` data.
    I64(ArrayD<i64>),
    /// `i32` data.
    I32(ArrayD<i32>),
    /// `u8` data.
    U8(ArrayD<u8>),
    /// `bool` data.
    Bool(ArrayD<bool>),
}

/// Applies one expression to the array inside any chunk.
macro_rules! with_data {
    ($chunk:expr, $data:ident => $body:expr) => {
        match $chunk {
            Chunk::F64($data) => $body,
            Chunk::F32($data) => $body,
            Chunk::I64($data) => $body,
            Chunk::I32($data) => $body,
            Chunk::U8($data) => $body,
            Chunk::Bool($data) => $body,
        }
    };
}

impl Chunk {
    /// The element type.
    pub fn dtype(&self) -> DType {
        match self {
            Chunk::F64(_) => DType::Float64,
            Chunk::F32(_) => DType::Float32,
            Chunk::I64(_) => DType::Int64,
            Chunk::I32(_) => DType::Int32,
            Chunk::U8(_) => DType::UInt8,
            Chunk::Bool(_) => DType::Bool,
        }
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        with_data!(self, d => d.shape())
    }

    /// A chunk of `dtype` and `shape` filled with zeros (false).
    pub(crate) fn zeros(dtype: DType, shape: &[usize]) -> Chunk {
        let dim = IxDyn(shape);
        match dtype {
            DType::Float64 => Chunk::F64(ArrayD::zeros(dim)),
            DType::Float32 => Chunk::F32(ArrayD::zeros(dim)),
            DType::Int64 => Chunk::I64(ArrayD::zeros(dim)),
            DType::Int32 => Chunk::I32(ArrayD::zeros(dim)),
            DType::UInt8 => Chunk::U8(ArrayD::zeros(dim)),
            DType::Bool => Chunk::Bool(ArrayD::from_elem(dim, false)),
        }
    }
}

/// A number whose wire form is its little-endian bytes.
trait Element: Copy + Default {
    const SIZE: usize;
    fn put(self, out: &mut [u8]);
    fn get(bytes: &[u8]) -> Option<Self>;
}

macro_rules! element {
    ($($t:ty),*) => {$(
        impl Element for $t {
            const SIZE: usize = std::mem::size_of::<$t>();
            fn put(self, out: &mut [u8]) {
                out.copy_from_slice(&self.to_le_bytes());
            }
            fn get(bytes: &[u8]) -> Option<Self> {
                Some(<$t>::from_le_bytes(bytes.try_into().ok()?))
            }
        }
    )*};
}

element!(f64, f32, i64, i32, u8);

impl Element for bool {
    const SIZE: usize = 1;
    fn put(self, out: &mut [u8]) {
        out[0] = u8::from(self);
    }
    fn get(bytes: &[u8]) -> Option<bool> {
        match bytes {
            [0] => Some(false),
            [1] => Some(true),
            _ => None,
        }
    }
}

fn to_bytes<T: Element>(data: &ArrayD<T>) -> Vec<u8> {
    let mut out = vec![0; data.len() * T::SIZE];
    let slots = out.chunks_exact_mut(T::SIZE);
    match data.as_slice() {
        // Row-major in memory (nearly always): a plain loop the compiler vectorises.
        Some(elements) => slots.zip(elements).for_each(|(slot, x)| x.put(slot)),
        // Logical (row-major) order, whatever the memory layout.
        None => slots.zip(data.iter()).for_each(|(slot, x)| x.put(slot)),
    }
    out
}

fn from_bytes<T: Element, E: serde::de::Error>(shape: Vec<usize>, bytes: &[u8]) -> Result<ArrayD<T>, E> {
    let len = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
    if len.and_then(|n| n.checked_mul(T::SIZE)) != Some(bytes.len()) {
        return Err(E::custom(format!("a chunk of shape {shape:?} cannot hold {} bytes", bytes.len())));
    }
    let data = bytes
        .chunks_exact(T::SIZE)
        .map(T::get)
        .collect::<Option<Vec<T>>>()
        .ok_or_else(|| E::custom("a chunk of booleans holds a byte other than 0 or 1"))?;
    ArrayD::from_shape_vec(IxDyn(&shape), data).map_err(E::custom)
}

impl Serialize for Chunk {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let bytes = with_data!(self, d => to_bytes(d));
        (self.dtype(), self.shape(), Blob::from(bytes)).serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Chunk {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Chunk, D::Error> {
        let (dtype, shape, bytes): (DType, Vec<usize>, Blob) = Deserialize::deserialize(deserializer)?;
        Ok(match dtype {
            DType::Float64 => Chunk::F64(from_bytes(shape, &bytes)?),
            DType::Float32 => Chunk::F32(from_bytes(shape, &bytes)?),
            DType::Int64 => Chunk::I64(from_bytes(shape, &bytes)?),
            DType::Int32 => Chunk::I32(from_bytes(shape, &bytes)?),
            DType::UInt8 => Chunk::U8(from_bytes(shape, &bytes)?),
            DType::Bool => Chunk::Bool(from_bytes(shape, &bytes)?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn round_trip(chunk: &Chunk) -> Chunk {
        let wire = postcard::to_allocvec(chunk).expect("encodes");
        postcard::from_bytes(&wire).expect("decodes")
    }

    proptest! {
        #[test]
        fn chunks_of_every_type_and_layout_round_trip(shape in proptest::collection::vec(0usize..4, 0..4),
                                                      seed in any::<u64>()) {
            let n: usize = shape.iter().product();
            let mut x = seed | 1;
            let mut next = move || { x ^= x << 13; x ^= x >> 7; x ^= x << 17; x };
            let f: Vec<f64> = (0..n).map(|_| f64::from_bits(next())).collect();
            let chunks = [
                Chunk::F64(ArrayD::from_shape_vec(IxDyn(&shape), f.clone()).expect("shape")),
                Chunk::F32(ArrayD::from_shape_vec(IxDyn(&shape), f.iter().map(|v| *v as f32).collect()).expect("shape")),
                Chunk::I64(ArrayD::from_shape_vec(IxDyn(&shape), f.iter().map(|v| v.to_bits() as i64).collect()).expect("shape")),
                Chunk::I32(ArrayD::from_shape_vec(IxDyn(&shape), f.iter().map(|v| v.to_bits() as i32).collect()).expect("shape")),
                Chunk::U8(ArrayD::from_shape_vec(IxDyn(&shape), f.iter().map(|v| v.to_bits() as u8).collect()).expect("shape")),
                Chunk::Bool(ArrayD::from_shape_vec(IxDyn(&shape), f.iter().map(|v| v.to_bits() & 1 == 1).collect()).expect("shape")),
            ];
            for chunk in &chunks {
                let back = round_trip(chunk);
                // Bitwise for floats: NaN payloads included.
                prop_assert_eq!(postcard::to_allocvec(&back).expect("encodes"), postcard::to_allocvec(chunk).expect("encodes"));
                prop_assert_eq!(back.shape(), chunk.shape());
            }
            // A transposed view (not in row-major memory order) goes out in
            // logical order.
            if let Chunk::F64(a) = &chunks[0] {
                let transposed = Chunk::F64(a.view().reversed_axes().to_owned());
                let Chunk::F64(back) = round_trip(&transposed) else { panic!("an f64 chunk") };
                prop_assert!(back.iter().map(|v| v.to_bits()).eq(a.t().iter().map(|v| v.to_bits())));
                let want: Vec<usize> = a.shape().iter().rev().copied().collect();
                prop_assert_eq!(back.shape(), &want[..]);
            }
        }
    }

    #[test]
    fn bad_chunks_are_errors() {
        let bad_len =
            postcard::to_allocvec(&(DType::Float64, vec![2usize, 2], Blob::from(vec![0u8; 8]))).expect("encodes");
        assert!(postcard::from_bytes::<Chunk>(&bad_len).is_err(), "4 elements need 32 bytes");
        let bad_bool = postcard::to_allocvec(&(DType::Bool, vec![1usize], Blob::from(vec![7u8]))).expect("encodes");
        assert!(postcard::from_bytes::<Chunk>(&bad_bool).is_err());
        let bad_tag = postcard::to_allocvec(&(200u8, vec![0usize], Blob::from(Vec::<u8>::new()))).expect("encodes");
        assert!(postcard::from_bytes::<Chunk>(&bad_tag).is_err());
        let huge = postcard::to_allocvec(&(DType::Float64, vec![usize::MAX, 2], Blob::from(Vec::<u8>::new())))
            .expect("encodes");
        assert!(postcard::from_bytes::<Chunk>(&huge).is_err(), "an overflowing shape is an error, not a panic");
    }
}
