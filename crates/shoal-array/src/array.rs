//! [`Array`]: the lazy chunked array users hold.

use std::fmt;
use std::marker::PhantomData;
use std::path::Path;
use std::sync::Arc;

use ndarray::{ArrayD, IxDyn, Slice};
use shoal_client::{Client, Delayed};

use crate::chunk::Chunk;
use crate::chunks::{block_region, grid};
use crate::dtype::{DType, Element};
use crate::error::ArrayError;
use crate::lower::Lowering;
use crate::node::{Node, Op};

/// A chunked n-dimensional array of `T`: a lazy graph that computes it.
///
/// Operations build the graph and return at once; [`Array::compute`] runs it
/// on the current [`Client`] (threads, or a cluster) and returns an
/// [`ndarray::ArrayD`]. Before running, chains of elementwise operations are
/// fused into one task per chunk, and only the chunks the result needs are
/// computed.
///
/// An operation that cannot work (shapes that do not broadcast, an axis out
/// of range) gives an array that carries the error; `compute` returns it.
///
/// ```
/// use shoal_array::{self as array, Array};
/// let client = shoal_client::Client::threads()?;
/// let x: Array<f64> = array::arange(0.0, 6.0, 1.0, 2).reshape(&[2, 3]);
/// let y = (&x * 2.0 + 1.0).sum(1);
/// assert_eq!(y.compute_with(&client)?.into_raw_vec_and_offset().0, vec![9.0, 27.0]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Array<T: Element> {
    node: Result<Arc<Node>, ArrayError>,
    _type: PhantomData<fn() -> T>,
}

impl<T: Element> Clone for Array<T> {
    fn clone(&self) -> Array<T> {
        Array { node: self.node.clone(), _type: PhantomData }
    }
}

impl<T: Element> Array<T> {
    pub(crate) fn from_node(node: Arc<Node>) -> Array<T> {
        Array { node: Ok(node), _type: PhantomData }
    }

    pub(crate) fn from_result(node: Result<Arc<Node>, ArrayError>) -> Array<T> {
        Array { node, _type: PhantomData }
    }

    pub(crate) fn invalid(error: ArrayError) -> Array<T> {
        Array { node: Err(error), _type: PhantomData }
    }

    pub(crate) fn node(&self) -> Result<&Arc<Node>, ArrayError> {
        self.node.as_ref().map_err(Clone::clone)
    }

    /// The shape; empty for an array that carries an error.
    pub fn shape(&self) -> &[usize] {
        self.node.as_ref().map_or(&[], |n| &n.shape)
    }

    /// The number of axes.
    pub fn ndim(&self) -> usize {
        self.shape().len()
    }

    /// The number of elements.
    pub fn size(&self) -> usize {
        self.shape().iter().product()
    }

    /// The size of every block along each axis (Dask's `chunks`).
    pub fn chunks(&self) -> &[Vec<usize>] {
        self.node.as_ref().map_or(&[], |n| &n.chunks)
    }

    /// The largest block along each axis (Dask's `chunksize`).
    pub fn chunksize(&self) -> Vec<usize> {
        self.chunks().iter().map(|c| c.iter().copied().max().unwrap_or(0)).collect()
    }

    /// The number of blocks along each axis.
    pub fn numblocks(&self) -> Vec<usize> {
        grid(self.chunks())
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        T::DTYPE
    }

    /// Bytes of the whole array once computed.
    pub fn nbytes(&self) -> usize {
        self.size() * T::DTYPE.size()
    }

    /// The error this array carries, if building it failed somewhere.
    ///
    /// # Errors
    /// That error.
    pub fn validate(&self) -> Result<(), ArrayError> {
        self.node().map(|_| ())
    }

    /// Tasks in the graph before fusion (what Dask's repr counts).
    pub fn task_count(&self) -> usize {
        self.node.as_ref().map_or(0, Node::task_count)
    }

    /// The tasks that computing this array runs: one per chunk for each
    /// fused chain, in row-major block order.
    ///
    /// # Errors
    /// The error the array carries.
    pub fn to_delayed(&self) -> Result<Vec<Delayed<Chunk>>, ArrayError> {
        self.lower(true)
    }

    fn lower(&self, fuse: bool) -> Result<Vec<Delayed<Chunk>>, ArrayError> {
        let node = self.node()?;
        let mut lowering = Lowering::new(fuse);
        Ok(node.block_indices().iter().map(|idx| lowering.block(node, idx)).collect())
    }

    /// Computes the array on the current client ([`Client::current`]).
    ///
    /// # Errors
    /// The error the array carries, or the first task that failed.
    pub fn compute(&self) -> Result<ArrayD<T>, ArrayError> {
        self.compute_with(&Client::current())
    }

    /// Computes the array on `client`.
    ///
    /// # Errors
    /// The error the array carries, or the first task that failed.
    pub fn compute_with(&self, client: &Client) -> Result<ArrayD<T>, ArrayError> {
        self.compute_lowered(client, true)
    }

    /// Computes the array on `client` without fusing its graph first (as
    /// Dask's `optimize_graph=False`): one task per operation and chunk. The
    /// values are the same; this is for comparing and debugging.
    ///
    /// # Errors
    /// The error the array carries, or the first task that failed.
    pub fn compute_unoptimized_with(&self, client: &Client) -> Result<ArrayD<T>, ArrayError> {
        self.compute_lowered(client, false)
    }

    fn compute_lowered(&self, client: &Client, fuse: bool) -> Result<ArrayD<T>, ArrayError> {
        let node = self.node()?;
        let tasks = self.lower(fuse)?;
        let chunks = shoal_client::Computable::compute_on(&tasks, client)?;
        assemble(node, chunks)
    }

    /// Starts computing the array on `client` and returns an array backed by
    /// the results, which stay there (Dask's `persist`): later computations
    /// start from them.
    ///
    /// # Errors
    /// The error the array carries.
    pub fn persist(&self, client: &Client) -> Result<Array<T>, ArrayError> {
        let node = self.node()?;
        let futures = shoal_client::persist(&self.lower(true)?, client)?;
        Ok(Array::from_node(Node::new(Op::Persisted(futures), node.shape.clone(), node.chunks.clone(), node.dtype)))
    }

    /// The task graph in Graphviz DOT: after optimisation (`optimize`: fused
    /// and culled, what runs) or before it (one task per layer and chunk).
    ///
    /// # Errors
    /// The error the array carries.
    pub fn to_dot(&self, optimize: bool) -> Result<String, ArrayError> {
        let mut all = shoal_graph::Graph::new();
        for task in self.lower(optimize)? {
            for t in task.graph().into_tasks() {
                all.insert(t);
            }
        }
        // Lists of chunks passed as one argument are plumbing: draw their
        // elements as the arguments they are.
        let lists: rustc_hash::FxHashMap<shoal_graph::Key, Vec<shoal_graph::Arg>> =
            all.tasks().iter().filter(|t| shoal_client::is_list(t)).map(|t| (t.key.clone(), t.args.clone())).collect();
        let mut graph = shoal_graph::Graph::new();
        for mut task in all.into_tasks().into_iter().filter(|t| !shoal_client::is_list(t)) {
            task.args = task
                .args
                .into_iter()
                .flat_map(|a| match &a {
                    shoal_graph::Arg::Key(k) if lists.contains_key(k) => lists[k].clone(),
                    _ => vec![a],
                })
                .collect();
            graph.insert(task);
        }
        Ok(graph.to_dot())
    }

    /// The high-level graph in DOT: one box per operation, with its shape
    /// and number of chunks.
    ///
    /// # Errors
    /// The error the array carries.
    pub fn layers_dot(&self) -> Result<String, ArrayError> {
        Ok(self.node()?.layers_dot())
    }

    /// Writes a picture of the task graph (see [`Array::to_dot`]): DOT for
    /// `.dot`, else rendered by Graphviz (`.svg`, `.png`, `.pdf`).
    ///
    /// # Errors
    /// The error the array carries, or the file could not be written or
    /// rendered.
    pub fn visualize(&self, path: impl AsRef<Path>, optimize: bool) -> Result<(), Box<dyn std::error::Error>> {
        let dot = self.to_dot(optimize)?;
        shoal_graph::write_dot(&dot, path.as_ref())?;
        Ok(())
    }
}

/// The whole array from its blocks, in row-major block order.
fn assemble<T: Element>(node: &Node, chunks: Vec<Chunk>) -> Result<ArrayD<T>, ArrayError> {
    let indices = node.block_indices();
    if chunks.len() == 1 {
        if let Some(chunk) = chunks.into_iter().next() {
            return check::<T>(chunk, &node.shape, &indices[0]);
        }
        unreachable!("one chunk was there");
    }
    let mut out = ArrayD::from_elem(IxDyn(&node.shape), T::default());
    for (chunk, idx) in chunks.into_iter().zip(&indices) {
        let (offset, shape) = block_region(&node.chunks, idx);
        let data = check::<T>(chunk, &shape, idx)?;
        out.slice_each_axis_mut(|ax| {
            let d = ax.axis.index();
            Slice::from(offset[d]..offset[d] + shape[d])
        })
        .assign(&data);
    }
    Ok(out)
}

fn check<T: Element>(chunk: Chunk, shape: &[usize], idx: &[usize]) -> Result<ArrayD<T>, ArrayError> {
    let (dtype, got) = (chunk.dtype(), chunk.shape().to_vec());
    let data = T::from_chunk(chunk).ok_or_else(|| ArrayError::Chunk {
        index: idx.to_vec(),
        message: format!("{dtype} where {} was expected", T::DTYPE),
    })?;
    if got != shape {
        return Err(ArrayError::Chunk {
            index: idx.to_vec(),
            message: format!("shape {got:?} where {shape:?} was expected"),
        });
    }
    Ok(data)
}

/// Bytes in binary units, as Dask prints them (`78.12 kiB`).
fn human_bytes(n: usize) -> String {
    const UNITS: [&str; 6] = ["B", "kiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{n} B") } else { format!("{value:.2} {}", UNITS[unit]) }
}

fn tuple(values: &[usize]) -> String {
    match values {
        [one] => format!("({one},)"),
        _ => format!("({})", values.iter().map(usize::to_string).collect::<Vec<_>>().join(", ")),
    }
}

impl<T: Element> fmt::Display for Array<T> {
    /// A table like Dask's repr:
    ///
    /// ```text
    /// shoal::Array<float64> (arcsin-arccos-add-sum)
    ///          Array        Chunk
    /// Bytes    78.12 kiB    7.81 kiB
    /// Shape    (10000,)     (1000,)
    /// Count    1310 tasks   10 chunks
    /// Type     float64      ndarray
    /// ```
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let node = match &self.node {
            Ok(n) => n,
            Err(e) => return write!(f, "shoal::Array<{}> (invalid: {e})", T::DTYPE),
        };
        let chunk = self.chunksize();
        let chunk_bytes = chunk.iter().product::<usize>() * T::DTYPE.size();
        let rows = [
            ("Bytes", human_bytes(self.nbytes()), human_bytes(chunk_bytes)),
            ("Shape", tuple(self.shape()), tuple(&chunk)),
            ("Count", format!("{} tasks", self.task_count()), format!("{} chunks", node.nblocks())),
            ("Type", T::DTYPE.to_string(), "ndarray".to_string()),
        ];
        let width = rows.iter().map(|r| r.1.len()).max().unwrap_or(0).max(5) + 2;
        writeln!(f, "shoal::Array<{}> ({})", T::DTYPE, node.label())?;
        writeln!(f, "{:<9}{:<width$}Chunk", "", "Array")?;
        for (i, (name, whole, part)) in rows.iter().enumerate() {
            write!(f, "{name:<9}{whole:<width$}{part}")?;
            if i + 1 < rows.len() {
                writeln!(f)?;
            }
        }
        Ok(())
    }
}

impl<T: Element> fmt::Debug for Array<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.node {
            Ok(n) => write!(
                f,
                "shoal.array<{}, shape={}, dtype={}, chunksize={}>",
                n.label(),
                tuple(&n.shape),
                T::DTYPE,
                tuple(&self.chunksize())
            ),
            Err(e) => write!(f, "shoal.array<invalid: {e}>"),
        }
    }
}
