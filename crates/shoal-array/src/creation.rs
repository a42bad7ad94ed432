//! Making arrays: constants, ranges, random numbers, data, generators.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use ndarray::{ArrayBase, ArrayD, Data, Dimension, Slice};
use shoal_client::{TaskOptions, delayed_with};
use shoal_graph::TaskFn;

use crate::array::Array;
use crate::chunks::{Chunks, block_region};
use crate::dtype::{DType, Element, Number, Scalar};
use crate::error::ArrayError;
use crate::kernels;
use crate::node::{Node, Op};
use crate::ops::rechunk_node;
use crate::program::{Dist, Leaf};
use crate::structure::Structure;

fn source<T: Element>(leaf: Leaf, shape: &[usize], chunks: Chunks) -> Array<T> {
    Array::from_result(
        chunks.resolve(shape, T::DTYPE.size()).map(|c| Node::new(Op::Source(leaf), shape.to_vec(), c, T::DTYPE)),
    )
}

/// An array of `shape` filled with `value`.
///
/// ```
/// let x = shoal_array::full(&[2, 3], 7i64, 2);
/// assert_eq!(x.sum(..).compute()?.sum(), 42);
/// # Ok::<(), shoal_array::ArrayError>(())
/// ```
pub fn full<T: Element>(shape: &[usize], value: T, chunks: impl Into<Chunks>) -> Array<T> {
    source(Leaf::Full(value.to_scalar()), shape, chunks.into())
}

/// An array of zeros (`false`).
pub fn zeros<T: Element>(shape: &[usize], chunks: impl Into<Chunks>) -> Array<T> {
    full(shape, T::default(), chunks)
}

/// An array of ones (`true`).
pub fn ones<T: Number>(shape: &[usize], chunks: impl Into<Chunks>) -> Array<T> {
    let one = match T::DTYPE {
        DType::Float64 | DType::Float32 => Scalar::Float(1.0),
        _ => Scalar::Int(1),
    };
    source(Leaf::Full(one), shape, chunks.into())
}

/// Values from `start` up to (not including) `stop` by `step`, as NumPy's
/// `arange`: `ceil((stop − start) / step)` of them.
///
/// ```
/// let x = shoal_array::arange(0i64, 10, 3, 2);
/// assert_eq!(x.compute()?.into_raw_vec_and_offset().0, vec![0, 3, 6, 9]);
/// # Ok::<(), shoal_array::ArrayError>(())
/// ```
pub fn arange<T: Number>(start: T, stop: T, step: T, chunks: impl Into<Chunks>) -> Array<T> {
    let (s, e, st) = (start.to_scalar(), stop.to_scalar(), step.to_scalar());
    let wide = |v: Scalar| match v {
        Scalar::Float(f) => f,
        Scalar::Int(i) => i as f64,
        Scalar::Bool(b) => f64::from(u8::from(b)),
    };
    let (a, b, c) = (wide(s), wide(e), wide(st));
    if c == 0.0 || !c.is_finite() || !a.is_finite() || !b.is_finite() {
        return Array::invalid(ArrayError::Invalid {
            operation: "arange",
            message: format!("step {c} from {a} to {b}"),
        });
    }
    let n = ((b - a) / c).ceil().max(0.0) as usize;
    source(Leaf::Linear { axis: 0, start: s, step: st, last: None }, &[n], chunks.into())
}

/// `num` values evenly spaced from `start` to `stop`, both included (NumPy's
/// `linspace`).
pub fn linspace(start: f64, stop: f64, num: usize, chunks: impl Into<Chunks>) -> Array<f64> {
    let step = if num > 1 { (stop - start) / (num - 1) as f64 } else { 0.0 };
    let last = (num > 1).then(|| (num - 1, stop));
    source(
        Leaf::Linear { axis: 0, start: Scalar::Float(start), step: Scalar::Float(step), last },
        &[num],
        chunks.into(),
    )
}

/// An array holding `data`, cut into chunks (each chunk is copied once, into
/// the graph).
///
/// ```
/// let data = ndarray::Array2::from_shape_fn((4, 4), |(i, j)| (i * 4 + j) as f64);
/// let x = shoal_array::from_ndarray(&data, [2, 2]);
/// assert_eq!(x.sum(..).compute()?.sum(), 120.0);
/// # Ok::<(), shoal_array::ArrayError>(())
/// ```
pub fn from_ndarray<T: Element, S: Data<Elem = T>, D: Dimension>(
    data: &ArrayBase<S, D>,
    chunks: impl Into<Chunks>,
) -> Array<T> {
    let shape = data.shape().to_vec();
    let sizes = match chunks.into().resolve(&shape, T::DTYPE.size()) {
        Ok(c) => c,
        Err(e) => return Array::invalid(e),
    };
    let view = data.view().into_dyn();
    let blocks = crate::chunks::block_indices(&crate::chunks::grid(&sizes))
        .iter()
        .map(|idx| {
            let (offset, shape) = block_region(&sizes, idx);
            let part = view.slice_each_axis(|ax| {
                let d = ax.axis.index();
                Slice::from(offset[d]..offset[d] + shape[d])
            });
            T::into_chunk(part.to_owned().as_standard_layout().into_owned())
        })
        .collect();
    Array::from_node(Node::new(Op::Data(blocks), shape, sizes, T::DTYPE))
}

/// An array whose blocks a function makes: `f(offset, shape)` returns the
/// block at `offset` (its first element's global index) of `shape`.
///
/// On a cluster, `f` must be a `#[shoal::remote]` function; on threads any
/// closure works.
///
/// ```
/// use ndarray::ArrayD;
/// fn block(offset: Vec<usize>, shape: Vec<usize>) -> ArrayD<i64> {
///     ArrayD::from_shape_fn(shape, |i| (offset[0] + i[0]) as i64)
/// }
/// let x = shoal_array::from_fn(&[10], 4, block);
/// assert_eq!(x.sum(..).compute()?.sum(), 45);
/// # Ok::<(), shoal_array::ArrayError>(())
/// ```
pub fn from_fn<T, F>(shape: &[usize], chunks: impl Into<Chunks>, f: F) -> Array<T>
where
    T: Element,
    F: TaskFn<(Vec<usize>, Vec<usize>), Output = ArrayD<T>> + Clone,
{
    let sizes = match chunks.into().resolve(shape, T::DTYPE.size()) {
        Ok(c) => c,
        Err(e) => return Array::invalid(e),
    };
    let opts = TaskOptions::new().pure(true).name("from_fn");
    let make = move |_: Option<shoal_client::Delayed<crate::Chunk>>, at: &crate::program::At| {
        let block = delayed_with(&opts, f.clone(), (at.offset.clone(), at.shape.clone()));
        delayed_with(&opts, kernels::from_ndarray::<T>, (block, at.shape.clone()))
    };
    let op = Op::Blocks { input: None, name: "from_fn".into(), make: Arc::new(make) };
    Array::from_node(Node::new(op, shape.to_vec(), sizes, T::DTYPE))
}

/// Arrays joined along an existing axis; all other axes must agree.
///
/// ```
/// let a = shoal_array::zeros::<i64>(&[2, 3], 2);
/// let b = shoal_array::ones::<i64>(&[1, 3], 2);
/// let c = shoal_array::concatenate(&[&a, &b], 0);
/// assert_eq!(c.shape(), &[3, 3]);
/// assert_eq!(c.sum(..).compute()?.sum(), 3);
/// # Ok::<(), shoal_array::ArrayError>(())
/// ```
pub fn concatenate<T: Element>(arrays: &[&Array<T>], axis: usize) -> Array<T> {
    let built = (|| {
        let nodes = arrays.iter().map(|a| a.node().cloned()).collect::<Result<Vec<_>, _>>()?;
        let first = nodes
            .first()
            .ok_or_else(|| ArrayError::Invalid { operation: "concatenate", message: "no arrays given".into() })?;
        let ndim = first.ndim();
        if axis >= ndim {
            return Err(ArrayError::Axis { operation: "concatenate", axis, ndim });
        }
        let mut inputs = Vec::new();
        let mut shape = first.shape.clone();
        shape[axis] = 0;
        for n in &nodes {
            let same = n.ndim() == ndim && (0..ndim).all(|d| d == axis || n.shape[d] == first.shape[d]);
            if !same {
                return Err(ArrayError::Shapes {
                    operation: "concatenate",
                    left: first.shape.clone(),
                    right: n.shape.clone(),
                    reason: format!("differ off axis {axis}"),
                });
            }
            shape[axis] += n.shape[axis];
            // Arrays empty along the axis add no blocks.
            if n.shape[axis] > 0 {
                let want =
                    (0..ndim).map(|d| if d == axis { n.chunks[d].clone() } else { first.chunks[d].clone() }).collect();
                inputs.push(rechunk_node(n, want));
            }
        }
        if inputs.is_empty() {
            inputs.push(first.clone());
        }
        let along: Vec<usize> = inputs.iter().flat_map(|n| n.chunks[axis].iter().copied()).collect();
        let mut chunks = first.chunks.clone();
        chunks[axis] = along;
        Ok(Node::new(Op::Structure { inputs, structure: Structure::Concatenate { axis } }, shape, chunks, first.dtype))
    })();
    Array::from_result(built)
}

/// Arrays of one shape stacked along a new axis at `axis`.
///
/// ```
/// let a = shoal_array::zeros::<f64>(&[3], 2);
/// let b = shoal_array::ones::<f64>(&[3], 2);
/// let s = shoal_array::stack(&[&a, &b], 0);
/// assert_eq!(s.shape(), &[2, 3]);
/// assert_eq!(s.sum(1).compute()?.into_raw_vec_and_offset().0, vec![0.0, 3.0]);
/// # Ok::<(), shoal_array::ArrayError>(())
/// ```
pub fn stack<T: Element>(arrays: &[&Array<T>], axis: usize) -> Array<T> {
    let built = (|| {
        let nodes = arrays.iter().map(|a| a.node().cloned()).collect::<Result<Vec<_>, _>>()?;
        let first = nodes
            .first()
            .ok_or_else(|| ArrayError::Invalid { operation: "stack", message: "no arrays given".into() })?;
        if axis > first.ndim() {
            return Err(ArrayError::Axis { operation: "stack", axis, ndim: first.ndim() + 1 });
        }
        let mut inputs = Vec::new();
        for n in &nodes {
            if n.shape != first.shape {
                return Err(ArrayError::Shapes {
                    operation: "stack",
                    left: first.shape.clone(),
                    right: n.shape.clone(),
                    reason: "differ".into(),
                });
            }
            inputs.push(rechunk_node(n, first.chunks.clone()));
        }
        let mut shape = first.shape.clone();
        shape.insert(axis, nodes.len());
        let mut chunks = first.chunks.clone();
        chunks.insert(axis, vec![1; nodes.len()]);
        Ok(Node::new(Op::Structure { inputs, structure: Structure::Stack { axis } }, shape, chunks, first.dtype))
    })();
    Array::from_result(built)
}

/// Random arrays from a seed: the same seed gives the same numbers for any
/// chunking and any executor, because each element is a function of the
/// seed, the call, and its index alone (a counter-based generator).
///
/// Like NumPy's `RandomState`, each call draws a new stream: two calls of
/// `random` on one state give different arrays.
///
/// ```
/// use shoal_array::RandomState;
/// let a = RandomState::new(42).random(&[1000], 100).compute()?;
/// let b = RandomState::new(42).random(&[1000], 7).compute()?;
/// assert_eq!(a, b);
/// # Ok::<(), shoal_array::ArrayError>(())
/// ```
#[derive(Debug)]
pub struct RandomState {
    seed: u64,
    stream: AtomicU64,
}

impl RandomState {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> RandomState {
        RandomState { seed, stream: AtomicU64::new(0) }
    }

    /// A generator with a seed from the clock: different each run.
    pub fn from_entropy() -> RandomState {
        static CALLS: AtomicU64 = AtomicU64::new(0);
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
        RandomState::new(nanos ^ CALLS.fetch_add(1, Ordering::Relaxed).wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }

    /// The seed of the next stream.
    fn next_seed(&self) -> u64 {
        let stream = self.stream.fetch_add(1, Ordering::Relaxed);
        let mut z = self.seed ^ stream.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn draw<T: Element>(&self, dist: Dist, shape: &[usize], chunks: Chunks) -> Array<T> {
        source(Leaf::Random { seed: self.next_seed(), dist, shape: shape.to_vec() }, shape, chunks)
    }

    /// Uniform in `[0, 1)` (Dask's `random.random`).
    pub fn random(&self, shape: &[usize], chunks: impl Into<Chunks>) -> Array<f64> {
        self.draw(Dist::Uniform { low: 0.0, high: 1.0 }, shape, chunks.into())
    }

    /// Uniform in `[low, high)`.
    pub fn uniform(&self, low: f64, high: f64, shape: &[usize], chunks: impl Into<Chunks>) -> Array<f64> {
        if !(low.is_finite() && high.is_finite() && low <= high) {
            return Array::invalid(ArrayError::Invalid {
                operation: "uniform",
                message: format!("bounds [{low}, {high}) are not finite and ordered"),
            });
        }
        self.draw(Dist::Uniform { low, high }, shape, chunks.into())
    }

    /// Normal with mean `mean` and standard deviation `std`.
    pub fn normal(&self, mean: f64, std: f64, shape: &[usize], chunks: impl Into<Chunks>) -> Array<f64> {
        if !(mean.is_finite() && std.is_finite() && std >= 0.0) {
            return Array::invalid(ArrayError::Invalid {
                operation: "normal",
                message: format!("mean {mean} and standard deviation {std} must be finite, the deviation ≥ 0"),
            });
        }
        self.draw(Dist::Normal { mean, std }, shape, chunks.into())
    }

    /// Integers uniform in `[low, high)`.
    pub fn integers(&self, low: i64, high: i64, shape: &[usize], chunks: impl Into<Chunks>) -> Array<i64> {
        if low >= high {
            return Array::invalid(ArrayError::Invalid {
                operation: "integers",
                message: format!("low {low} must be below high {high}"),
            });
        }
        self.draw(Dist::Integers { low, high }, shape, chunks.into())
    }
}

/// Uniform random numbers in `[0, 1)` from a fresh seed (Dask's
/// `da.random.random`); use [`RandomState`] for reproducible numbers.
pub fn random(shape: &[usize], chunks: impl Into<Chunks>) -> Array<f64> {
    RandomState::from_entropy().random(shape, chunks)
}
