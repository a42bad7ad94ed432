//! Chunked n-dimensional arrays for shoal, as Dask's `dask.array` is for
//! NumPy: an [`Array`] is cut into chunks, operations on it build a graph,
//! and [`Array::compute`] runs the graph on any shoal executor — threads in
//! this process, or the workers of a cluster — and returns an
//! [`ndarray::ArrayD`].
//!
//! - Creation: [`zeros`], [`ones`], [`full`], [`arange`], [`linspace`],
//!   [`from_ndarray`], [`from_fn`], [`stack`], [`concatenate`], and random
//!   numbers from a [`RandomState`] (uniform, normal, integers) — the same
//!   seed gives the same numbers for any chunking.
//! - Elementwise maths with NumPy broadcasting: operators (`+ − × ÷ %`,
//!   `& | ^ !`), comparisons, [`where_`], and the ufuncs (`sin` … `arctan2`,
//!   `exp` … `log1p`, `sqrt`, `floor`, `isnan`, …) as methods and functions.
//! - Reductions over any axes as trees: `sum`, `prod`, `mean`, `min`, `max`,
//!   `var`, `std`, `argmin`, `argmax`, `any`, `all` ([`Reduction`] sets
//!   `keepdims` and `split_every`).
//! - Slicing with `ndarray::s!`, `transpose`, `reshape`, `rechunk`,
//!   `matmul`, `map_blocks`, `persist`, `visualize`.
//!
//! Before it runs, the graph is optimised: only the chunks the result needs
//! become tasks, and chains of elementwise operations become one fused
//! kernel per chunk that works through its chunk in cache-sized blocks, so
//! `(arcsin(x) + arccos(y)).sum(..)` over random `x` and `y` is one task per
//! chunk that never stores `x`, `y` or any temporary.
//!
//! ```
//! use shoal_array::{self as array, RandomState};
//!
//! let rng = RandomState::new(0);
//! let x = rng.random(&[1_000, 1_000, 10], [250, 250, 5]);
//! let y = rng.random(&[1_000, 1_000, 10], [250, 250, 5]);
//! let z = (array::arcsin(&x) + array::arccos(&y)).sum([1, 2]);
//! println!("{z}");
//! let values = z.compute()?;
//! let mean = values.mean().unwrap_or(0.0) / 10_000.0;
//! assert!((mean - std::f64::consts::FRAC_PI_2).abs() < 1e-2);
//! # Ok::<(), shoal_array::ArrayError>(())
//! ```
//!
//! On a cluster the same code runs unchanged: the array's tasks call a few
//! functions this crate registers for remote workers, and what differs
//! between tasks travels as data.

mod array;
mod assemble;
mod chunk;
mod chunks;
mod creation;
mod dtype;
mod error;
mod kernels;
mod lower;
mod manip;
mod node;
mod ops;
mod program;
mod reduce;
mod rng;
mod structure;
mod vmath;

pub use array::Array;
pub use chunk::Chunk;
pub use chunks::{AUTO_CHUNK_BYTES, Chunks};
pub use creation::{
    RandomState, arange, concatenate, from_fn, from_ndarray, full, linspace, ones, random, stack, zeros,
};
pub use dtype::{Bits, DType, Element, Float, Integer, Number, Scalar};
pub use error::ArrayError;
pub use ndarray;
pub use ops::{
    Axes, Operand, Reduction, arccos, arcsin, arctan, cbrt, ceil, cos, cosh, exp, exp2, expm1, floor, log, log1p, log2,
    log10, round, sin, sinh, sqrt, tan, tanh, where_,
};
