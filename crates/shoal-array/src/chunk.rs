//! One block of an array, as tasks pass it around.

use ndarray::{ArrayD, IxDyn};
use serde::{Deserialize, Serialize};

use crate::dtype::DType;

/// The data of one chunk, in its element type.
///
/// Tasks of an array's graph take and return chunks; inside one process a
/// chunk moves between tasks without copying.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
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
