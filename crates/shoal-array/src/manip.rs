//! Changing an array's shape, layout and chunks: slicing, transposing,
//! reshaping, rechunking; blocked matrix products; functions per block.

use std::sync::Arc;

use ndarray::{ArrayD, SliceInfoElem};
use shoal_client::{TaskOptions, delayed_with};
use shoal_graph::TaskFn;

use crate::array::Array;
use crate::chunks::Chunks;
use crate::dtype::{Element, Number};
use crate::error::ArrayError;
use crate::kernels;
use crate::node::{Node, Op};
use crate::ops::{rechunk_node, reshape_node};
use crate::structure::{SliceAxis, Structure, range_chunks};

/// A position counted from the end when negative, as `ndarray` and NumPy do.
fn resolve(position: isize, n: usize) -> isize {
    if position < 0 { position + n as isize } else { position }
}

impl<T: Element> Array<T> {
    /// A slice, written with `ndarray`'s `s!` macro and its meaning: ranges
    /// with steps (a negative step walks the range backwards), single
    /// indices that drop their axis, and `NewAxis`. Missing trailing axes
    /// are taken whole.
    ///
    /// Only the chunks the slice touches are computed.
    ///
    /// ```
    /// use ndarray::s;
    /// let x = shoal_array::arange(0i64, 20, 1, 4).reshape(&[4, 5]);
    /// let y = x.slice(s![1..3, ..;2]);
    /// assert_eq!(y.shape(), &[2, 3]);
    /// assert_eq!(y.compute()?.into_raw_vec_and_offset().0, vec![5, 7, 9, 10, 12, 14]);
    /// assert_eq!(x.slice(s![-1, 4]).compute()?.sum(), 19);
    /// # Ok::<(), shoal_array::ArrayError>(())
    /// ```
    pub fn slice(&self, info: impl AsRef<[SliceInfoElem]>) -> Array<T> {
        let built = (|| {
            let node = self.node()?;
            let elems = info.as_ref();
            let used = elems.iter().filter(|e| !matches!(e, SliceInfoElem::NewAxis)).count();
            if used > node.ndim() {
                return Err(ArrayError::Invalid {
                    operation: "slice",
                    message: format!("{used} indices for an array of {} axes", node.ndim()),
                });
            }
            let mut axes = Vec::new();
            let mut shape = Vec::new();
            let mut chunks = Vec::new();
            let mut axis = 0;
            let whole = SliceInfoElem::Slice { start: 0, end: None, step: 1 };
            let rest = (used..node.ndim()).map(|_| &whole);
            for elem in elems.iter().chain(rest) {
                match *elem {
                    SliceInfoElem::NewAxis => {
                        axes.push(SliceAxis::NewAxis);
                        shape.push(1);
                        chunks.push(vec![1]);
                        continue;
                    }
                    SliceInfoElem::Index(i) => {
                        let n = node.shape[axis];
                        let p = resolve(i, n);
                        if p < 0 || p as usize >= n {
                            return Err(ArrayError::Invalid {
                                operation: "slice",
                                message: format!("index {i} is out of bounds for axis {axis} of length {n}"),
                            });
                        }
                        axes.push(SliceAxis::Index(p as usize));
                    }
                    SliceInfoElem::Slice { start, end, step } => {
                        let n = node.shape[axis];
                        if step == 0 {
                            return Err(ArrayError::Invalid {
                                operation: "slice",
                                message: format!("step 0 on axis {axis}"),
                            });
                        }
                        let lo = resolve(start, n).clamp(0, n as isize) as usize;
                        let hi = end.map_or(n as isize, |e| resolve(e, n)).clamp(0, n as isize) as usize;
                        let span = hi.saturating_sub(lo);
                        let len = span.div_ceil(step.unsigned_abs());
                        let first = if step > 0 { lo } else { hi.saturating_sub(1) };
                        axes.push(SliceAxis::Range { start: first, step, len });
                        shape.push(len);
                        chunks.push(range_chunks(&node.chunks[axis], first, step, len));
                    }
                }
                axis += 1;
            }
            let identity =
                shape == node.shape && axes.iter().all(|a| matches!(a, SliceAxis::Range { start: 0, step: 1, .. }));
            if identity {
                return Ok(node.clone());
            }
            Ok(Node::new(
                Op::Structure { inputs: vec![node.clone()], structure: Structure::Slice(axes) },
                shape,
                chunks,
                node.dtype,
            ))
        })();
        Array::from_result(built)
    }

    /// The axes reversed.
    pub fn transpose(&self) -> Array<T> {
        let order: Vec<usize> = (0..self.ndim()).rev().collect();
        self.permute_axes(&order)
    }

    /// The axes in a new order: axis `j` of the result is axis `order[j]` of
    /// this array.
    pub fn permute_axes(&self, order: &[usize]) -> Array<T> {
        let built = (|| {
            let node = self.node()?;
            let mut seen = vec![false; node.ndim()];
            let valid = order.len() == node.ndim()
                && order.iter().all(|&a| a < seen.len() && !std::mem::replace(&mut seen[a], true));
            if !valid {
                return Err(ArrayError::Invalid {
                    operation: "transpose",
                    message: format!("{order:?} is not an order of {} axes", node.ndim()),
                });
            }
            if order.iter().enumerate().all(|(j, &a)| j == a) {
                return Ok(node.clone());
            }
            let shape = order.iter().map(|&a| node.shape[a]).collect();
            let chunks = order.iter().map(|&a| node.chunks[a].clone()).collect();
            Ok(Node::new(
                Op::Structure { inputs: vec![node.clone()], structure: Structure::Transpose(order.to_vec()) },
                shape,
                chunks,
                node.dtype,
            ))
        })();
        Array::from_result(built)
    }

    /// The same elements (row-major order) in another shape. Blocks are
    /// merged along the first axis where needed so each holds whole rows of
    /// the result; the other axes become one chunk each.
    pub fn reshape(&self, shape: &[usize]) -> Array<T> {
        Array::from_result(self.node().and_then(|n| reshape_node(n, shape)))
    }

    /// The same array cut into other chunks.
    ///
    /// # Performance
    /// Each new chunk is copied together from the old chunks it overlaps.
    pub fn rechunk(&self, chunks: impl Into<Chunks>) -> Array<T> {
        let chunks = chunks.into();
        Array::from_result(self.node().and_then(|n| Ok(rechunk_node(n, chunks.resolve(&n.shape, T::DTYPE.size())?))))
    }

    /// Applies `f` to every block (an `ndarray` of the block's shape), which
    /// must return a block of the same shape. On a cluster `f` must be a
    /// `#[shoal::remote]` function.
    ///
    /// ```
    /// use ndarray::ArrayD;
    /// fn square(block: ArrayD<f64>) -> ArrayD<f64> { block.mapv(|v| v * v) }
    /// let x = shoal_array::arange(0.0, 4.0, 1.0, 2).map_blocks(square);
    /// assert_eq!(x.compute()?.into_raw_vec_and_offset().0, vec![0.0, 1.0, 4.0, 9.0]);
    /// # Ok::<(), shoal_array::ArrayError>(())
    /// ```
    pub fn map_blocks<U, F>(&self, f: F) -> Array<U>
    where
        U: Element,
        F: TaskFn<(ArrayD<T>,), Output = ArrayD<U>> + Clone,
    {
        let built = self.node().map(|node| {
            let opts = TaskOptions::new().pure(true).name("map_blocks");
            let make = move |input: Option<shoal_client::Delayed<crate::Chunk>>, at: &crate::program::At| {
                let data = delayed_with(
                    &opts,
                    kernels::to_ndarray::<T>,
                    (input.unwrap_or_else(|| unreachable!("map_blocks has an input")),),
                );
                let out = delayed_with(&opts, f.clone(), (data,));
                delayed_with(&opts, kernels::from_ndarray::<U>, (out, at.shape.clone()))
            };
            let op = Op::Blocks { input: Some(node.clone()), name: "map_blocks".into(), make: Arc::new(make) };
            Node::new(op, node.shape.clone(), node.chunks.clone(), U::DTYPE)
        });
        Array::from_result(built)
    }
}

impl<T: Number> Array<T> {
    /// The matrix product of two 2-d arrays, block by block: block `(i, j)`
    /// of the result sums `a(i, k) · b(k, j)` over `k` in one task.
    ///
    /// ```
    /// let a = shoal_array::ones::<f64>(&[4, 6], [2, 3]);
    /// let b = shoal_array::ones::<f64>(&[6, 2], [2, 2]);
    /// let c = a.matmul(&b);
    /// assert_eq!(c.shape(), &[4, 2]);
    /// assert!(c.compute()?.iter().all(|&v| v == 6.0));
    /// # Ok::<(), shoal_array::ArrayError>(())
    /// ```
    pub fn matmul(&self, other: &Array<T>) -> Array<T> {
        let built = (|| {
            let (a, b) = (self.node()?, other.node()?);
            if a.ndim() != 2 || b.ndim() != 2 || a.shape[1] != b.shape[0] {
                return Err(ArrayError::Shapes {
                    operation: "matmul",
                    left: a.shape.clone(),
                    right: b.shape.clone(),
                    reason: "are not 2-d with matching inner sizes".into(),
                });
            }
            let b = rechunk_node(b, vec![a.chunks[1].clone(), b.chunks[1].clone()]);
            let shape = vec![a.shape[0], b.shape[1]];
            let chunks = vec![a.chunks[0].clone(), b.chunks[1].clone()];
            Ok(Node::new(Op::Matmul(a.clone(), b), shape, chunks, a.dtype))
        })();
        Array::from_result(built)
    }

    /// The same as [`Array::matmul`].
    pub fn dot(&self, other: &Array<T>) -> Array<T> {
        self.matmul(other)
    }
}
