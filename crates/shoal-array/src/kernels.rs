//! The task functions of array graphs, registered for remote workers.
//!
//! Every array task calls one of these few functions; what differs between
//! tasks is data (a [`Program`], a [`ReduceSpec`], an [`Assembly`]), so the
//! same functions serve every array on every executor, and workers in other
//! processes find them by name like any `#[shoal::remote]` function.

use std::sync::Arc;

use ndarray::ArrayD;

use crate::assemble::{self, Assembly};
use crate::chunk::Chunk;
use crate::dtype::Element;
use crate::program::{self, At, KernelError, Program};
use crate::reduce::{self, Partial, ReduceSpec};

/// Evaluates a fused program over one chunk.
///
/// # Errors
/// When the inputs do not fit the program.
pub(crate) fn blockwise(program: Arc<Program>, at: At, inputs: Vec<Chunk>) -> Result<Chunk, KernelError> {
    program::materialize(&program, &at, &inputs)
}

/// Evaluates a fused program over one chunk and folds it into a partial
/// reduction.
///
/// # Errors
/// When the inputs do not fit the program.
pub(crate) fn reduce_chunk(
    program: Arc<Program>,
    at: At,
    spec: Arc<ReduceSpec>,
    inputs: Vec<Chunk>,
) -> Result<Partial, KernelError> {
    reduce::partial(&program, &at, &spec, &inputs)
}

/// Merges partial reductions: one level of the tree.
///
/// # Errors
/// When the partials do not belong together.
pub(crate) fn reduce_combine(spec: Arc<ReduceSpec>, parts: Vec<Partial>) -> Result<Partial, KernelError> {
    reduce::combine(&spec, parts)
}

/// Merges partial reductions and makes the result block: the tree's root.
///
/// # Errors
/// When the partials do not belong together.
pub(crate) fn reduce_finish(spec: Arc<ReduceSpec>, parts: Vec<Partial>) -> Result<Chunk, KernelError> {
    reduce::finish(&spec, parts)
}

/// Builds a chunk from pieces of others.
///
/// # Errors
/// When a piece does not fit.
pub(crate) fn assemble(spec: Arc<Assembly>, inputs: Vec<Chunk>) -> Result<Chunk, KernelError> {
    assemble::assemble(&spec, inputs)
}

/// One block of a matrix product.
///
/// # Errors
/// When the blocks do not fit.
pub(crate) fn matmul(pairs: Vec<Chunk>) -> Result<Chunk, KernelError> {
    assemble::matmul(pairs)
}

/// A chunk given as data (`from_ndarray`).
///
/// # Errors
/// Never; the signature is a task's.
pub(crate) fn literal(chunk: Chunk) -> Result<Chunk, KernelError> {
    Ok(chunk)
}

/// A chunk's data as an `ndarray` (for `map_blocks` and `from_fn`).
///
/// # Errors
/// When the chunk has another type.
pub(crate) fn to_ndarray<T: Element>(chunk: Chunk) -> Result<ArrayD<T>, KernelError> {
    let dtype = chunk.dtype();
    T::from_chunk(chunk).ok_or_else(|| KernelError(format!("a chunk of {dtype} where {} was expected", T::DTYPE)))
}

/// An `ndarray` as a chunk, checked against the shape the graph expects.
///
/// # Errors
/// When a user's block function returned another shape.
pub(crate) fn from_ndarray<T: Element>(data: ArrayD<T>, shape: Vec<usize>) -> Result<Chunk, KernelError> {
    if data.shape() != shape.as_slice() {
        return Err(KernelError(format!("a block of shape {:?} where {shape:?} was expected", data.shape())));
    }
    Ok(T::into_chunk(data.as_standard_layout().into_owned()))
}

shoal_graph::register_remote! {
    "blockwise" => (Arc<Program>, At, Vec<Chunk>), blockwise;
    "reduce_chunk" => (Arc<Program>, At, Arc<ReduceSpec>, Vec<Chunk>), reduce_chunk;
    "reduce_combine" => (Arc<ReduceSpec>, Vec<Partial>), reduce_combine;
    "reduce_finish" => (Arc<ReduceSpec>, Vec<Partial>), reduce_finish;
    "assemble" => (Arc<Assembly>, Vec<Chunk>), assemble;
    "matmul" => (Vec<Chunk>,), matmul;
    "literal" => (Chunk,), literal;
    "to_ndarray<f64>" => (Chunk,), to_ndarray::<f64>;
    "to_ndarray<f32>" => (Chunk,), to_ndarray::<f32>;
    "to_ndarray<i64>" => (Chunk,), to_ndarray::<i64>;
    "to_ndarray<i32>" => (Chunk,), to_ndarray::<i32>;
    "to_ndarray<u8>" => (Chunk,), to_ndarray::<u8>;
    "to_ndarray<bool>" => (Chunk,), to_ndarray::<bool>;
    "from_ndarray<f64>" => (ArrayD<f64>, Vec<usize>), from_ndarray::<f64>;
    "from_ndarray<f32>" => (ArrayD<f32>, Vec<usize>), from_ndarray::<f32>;
    "from_ndarray<i64>" => (ArrayD<i64>, Vec<usize>), from_ndarray::<i64>;
    "from_ndarray<i32>" => (ArrayD<i32>, Vec<usize>), from_ndarray::<i32>;
    "from_ndarray<u8>" => (ArrayD<u8>, Vec<usize>), from_ndarray::<u8>;
    "from_ndarray<bool>" => (ArrayD<bool>, Vec<usize>), from_ndarray::<bool>;
}
