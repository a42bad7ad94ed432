//! The high-level graph: one node per array operation (a layer), with the
//! shape, chunks and type of its result. Building it is cheap and never
//! touches data; [`crate::lower`] turns it into tasks.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use shoal_client::Future;

use crate::chunk::Chunk;
use crate::chunks::{block_indices, grid};
use crate::dtype::DType;
use crate::error::ArrayError;
use crate::program::{BinaryOp, Leaf, UnaryOp};
use crate::reduce::ReduceSpec;
use crate::structure::Structure;

/// Makes the task of one block of a `map_blocks` or `from_fn` layer from the
/// block's input (if any) and its expected shape and offset.
pub(crate) type BlockFn =
    dyn Fn(Option<shoal_client::Delayed<Chunk>>, &crate::program::At) -> shoal_client::Delayed<Chunk> + Send + Sync;

/// One operation of the high-level graph.
pub(crate) enum Op {
    /// Values made where they are needed: random, constant, ranges.
    Source(Leaf),
    Unary(UnaryOp, Arc<Node>),
    Binary(BinaryOp, Arc<Node>, Arc<Node>),
    Where(Arc<Node>, Arc<Node>, Arc<Node>),
    Cast(Arc<Node>),
    Reduce {
        input: Arc<Node>,
        spec: Arc<ReduceSpec>,
        split_every: usize,
    },
    /// Data moved between chunks (slice, rechunk, transpose, …).
    Structure {
        inputs: Vec<Arc<Node>>,
        structure: Structure,
    },
    Matmul(Arc<Node>, Arc<Node>),
    /// Chunks given as data, in row-major block order.
    Data(Vec<Chunk>),
    /// Chunks already computed and held on the executor.
    Persisted(Vec<Future<Chunk>>),
    /// A user function per block.
    Blocks {
        input: Option<Arc<Node>>,
        name: String,
        make: Arc<BlockFn>,
    },
}

/// A layer of the high-level graph.
pub(crate) struct Node {
    /// Unique in this process: what lowering memoises on.
    pub(crate) id: u64,
    pub(crate) op: Op,
    pub(crate) shape: Vec<usize>,
    pub(crate) chunks: Vec<Vec<usize>>,
    pub(crate) dtype: DType,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl Node {
    pub(crate) fn new(op: Op, shape: Vec<usize>, chunks: Vec<Vec<usize>>, dtype: DType) -> Arc<Node> {
        Arc::new(Node { id: NEXT_ID.fetch_add(1, Ordering::Relaxed), op, shape, chunks, dtype })
    }

    pub(crate) fn ndim(&self) -> usize {
        self.shape.len()
    }

    /// Number of blocks.
    pub(crate) fn nblocks(&self) -> usize {
        self.chunks.iter().map(Vec::len).product()
    }

    pub(crate) fn block_indices(&self) -> Vec<Vec<usize>> {
        block_indices(&grid(&self.chunks))
    }

    /// Whether this layer is elementwise (fusable into its consumer).
    pub(crate) fn is_blockwise(&self) -> bool {
        matches!(self.op, Op::Source(_) | Op::Unary(..) | Op::Binary(..) | Op::Where(..) | Op::Cast(_))
    }

    /// The layers this one reads.
    pub(crate) fn inputs(&self) -> Vec<&Arc<Node>> {
        match &self.op {
            Op::Source(_) | Op::Data(_) | Op::Persisted(_) => vec![],
            Op::Unary(_, a) | Op::Cast(a) => vec![a],
            Op::Binary(_, a, b) | Op::Matmul(a, b) => vec![a, b],
            Op::Where(c, a, b) => vec![c, a, b],
            Op::Reduce { input, .. } => vec![input],
            Op::Structure { inputs, .. } => inputs.iter().collect(),
            Op::Blocks { input, .. } => input.iter().collect(),
        }
    }

    /// A short name for the layer, as Dask names layers.
    pub(crate) fn label(&self) -> String {
        match &self.op {
            Op::Source(Leaf::Random { .. }) => "random".into(),
            Op::Source(Leaf::Full(_)) => "full".into(),
            Op::Source(Leaf::Linear { .. }) => "arange".into(),
            Op::Source(Leaf::Input { .. }) => "input".into(),
            Op::Unary(op, _) => op.name().into(),
            Op::Binary(op, _, _) => op.name().into(),
            Op::Where(..) => "where".into(),
            Op::Cast(_) => format!("astype-{}", self.dtype),
            Op::Reduce { spec, .. } => spec.op.name().into(),
            Op::Structure { structure, .. } => structure.name().into(),
            Op::Matmul(..) => "matmul".into(),
            Op::Data(_) => "array".into(),
            Op::Persisted(_) => "persisted".into(),
            Op::Blocks { name, .. } => name.clone(),
        }
    }

    /// Tasks of this layer alone before fusion (a reduction counts its tree).
    fn own_tasks(&self) -> usize {
        match &self.op {
            Op::Reduce { input, spec, split_every } => {
                let per_block: usize =
                    input.chunks.iter().zip(&spec.reduced).map(|(c, &r)| if r { c.len() } else { 1 }).product();
                self.nblocks() * (per_block + tree_levels(per_block, *split_every))
            }
            _ => self.nblocks(),
        }
    }

    /// Tasks of the whole graph before fusion, as Dask counts them.
    pub(crate) fn task_count(self: &Arc<Node>) -> usize {
        let mut seen = rustc_hash::FxHashSet::default();
        let mut stack = vec![self];
        let mut total = 0;
        while let Some(n) = stack.pop() {
            if seen.insert(n.id) {
                total += n.own_tasks();
                stack.extend(n.inputs());
            }
        }
        total
    }

    /// The high-level graph in Graphviz DOT: one box per layer.
    pub(crate) fn layers_dot(self: &Arc<Node>) -> String {
        let mut out = String::from("digraph {\n  rankdir=BT;\n  node [shape=box, fontname=\"Helvetica\"];\n");
        let mut seen = rustc_hash::FxHashSet::default();
        let mut stack = vec![self];
        while let Some(n) = stack.pop() {
            if !seen.insert(n.id) {
                continue;
            }
            out.push_str(&format!(
                "  n{} [label=\"{}\\n{:?} in {} chunks\"];\n",
                n.id,
                n.label(),
                n.shape,
                n.nblocks()
            ));
            for input in n.inputs() {
                out.push_str(&format!("  n{} -> n{};\n", input.id, n.id));
                stack.push(input);
            }
        }
        out.push_str("}\n");
        out
    }
}

/// Combination tasks in a tree over `n` partials, `split_every` at a time
/// (the finishing task included).
pub(crate) fn tree_levels(n: usize, split_every: usize) -> usize {
    let split = split_every.max(2);
    let mut tasks = 0;
    let mut width = n;
    while width > split {
        width = width.div_ceil(split);
        tasks += width;
    }
    tasks + 1
}

/// Broadcasts shapes NumPy's way (aligned at the last axis).
///
/// # Errors
/// [`ArrayError::Shapes`] when two extents differ and neither is 1.
pub(crate) fn broadcast_shapes(operation: &'static str, a: &[usize], b: &[usize]) -> Result<Vec<usize>, ArrayError> {
    let ndim = a.len().max(b.len());
    let at = |s: &[usize], d: usize| if d + s.len() >= ndim { s[d + s.len() - ndim] } else { 1 };
    (0..ndim)
        .map(|d| match (at(a, d), at(b, d)) {
            (x, y) if x == y => Ok(x),
            (1, y) => Ok(y),
            (x, 1) => Ok(x),
            _ => Err(ArrayError::Shapes {
                operation,
                left: a.to_vec(),
                right: b.to_vec(),
                reason: format!("cannot be broadcast together (axis {d})"),
            }),
        })
        .collect()
}
