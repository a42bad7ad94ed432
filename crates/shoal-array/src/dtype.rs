//! Element types: what an array holds, and how kernels widen it.
//!
//! Kernels compute in three wide kinds — `f64` for floats, `i64` for
//! integers, `bool` — and round each intermediate back to the array's own
//! type, so `f32` and `u8` arithmetic gives what it would in that type (for
//! `+ − × ÷` and `sqrt`, rounding an `f64` result to `f32` is exact rounding)
//! while one kernel serves every type.

use std::fmt;

use ndarray::ArrayD;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::chunk::Chunk;

/// The type of an array's elements, as NumPy names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DType {
    /// `f64`.
    Float64,
    /// `f32`.
    Float32,
    /// `i64`.
    Int64,
    /// `i32`.
    Int32,
    /// `u8`.
    UInt8,
    /// `bool`.
    Bool,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::Float64 | DType::Int64 => 8,
            DType::Float32 | DType::Int32 => 4,
            DType::UInt8 | DType::Bool => 1,
        }
    }

    /// The wide kind kernels compute this type in.
    pub(crate) fn kind(self) -> Kind {
        match self {
            DType::Float64 | DType::Float32 => Kind::Float,
            DType::Int64 | DType::Int32 | DType::UInt8 => Kind::Int,
            DType::Bool => Kind::Bool,
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DType::Float64 => "float64",
            DType::Float32 => "float32",
            DType::Int64 => "int64",
            DType::Int32 => "int32",
            DType::UInt8 => "uint8",
            DType::Bool => "bool",
        })
    }
}

/// The wide kinds kernels compute in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Float,
    Int,
    Bool,
}

/// A literal element in its wide kind.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum Scalar {
    /// A float.
    Float(f64),
    /// An integer.
    Int(i64),
    /// A truth value.
    Bool(bool),
}

mod sealed {
    pub trait Sealed {}
}

/// An element type of [`Array`](crate::Array): `f64`, `f32`, `i64`, `i32`,
/// `u8` or `bool`.
pub trait Element:
    sealed::Sealed + Copy + PartialEq + fmt::Debug + Default + Send + Sync + Serialize + DeserializeOwned + 'static
{
    /// Its [`DType`].
    const DTYPE: DType;
    /// The type its sums and products have: itself for floats, `i64` for
    /// integers and booleans (as NumPy widens them).
    type Sum: Element;
    /// As a literal of its wide kind.
    fn to_scalar(self) -> Scalar;
    /// The chunk holding `data`.
    fn into_chunk(data: ArrayD<Self>) -> Chunk;
    /// The data of a chunk of this type; `None` for a chunk of another type.
    fn from_chunk(chunk: Chunk) -> Option<ArrayD<Self>>;
}

/// Element types with arithmetic: every type but `bool`.
pub trait Number: Element {}

/// Floating-point element types: `f64` and `f32`.
pub trait Float: Number {}

/// Integer element types: `i64`, `i32`, `u8`.
pub trait Integer: Number {}

/// Types with `&`, `|` and `^`: integers (bitwise) and `bool` (logical).
pub trait Bits: Element {}

macro_rules! element {
    ($t:ty, $dtype:ident, $variant:ident, $scalar:ident, $wide:ty, $sum:ty) => {
        impl sealed::Sealed for $t {}
        impl Element for $t {
            const DTYPE: DType = DType::$dtype;
            type Sum = $sum;
            fn to_scalar(self) -> Scalar {
                Scalar::$scalar(self as $wide)
            }
            fn into_chunk(data: ArrayD<Self>) -> Chunk {
                Chunk::$variant(data)
            }
            fn from_chunk(chunk: Chunk) -> Option<ArrayD<Self>> {
                match chunk {
                    Chunk::$variant(data) => Some(data),
                    _ => None,
                }
            }
        }
    };
}

element!(f64, Float64, F64, Float, f64, f64);
element!(f32, Float32, F32, Float, f64, f32);
element!(i64, Int64, I64, Int, i64, i64);
element!(i32, Int32, I32, Int, i64, i64);
element!(u8, UInt8, U8, Int, i64, i64);
element!(bool, Bool, Bool, Bool, bool, i64);

impl Number for f64 {}
impl Number for f32 {}
impl Number for i64 {}
impl Number for i32 {}
impl Number for u8 {}
impl Float for f64 {}
impl Float for f32 {}
impl Integer for i64 {}
impl Integer for i32 {}
impl Integer for u8 {}
impl Bits for i64 {}
impl Bits for i32 {}
impl Bits for u8 {}
impl Bits for bool {}
