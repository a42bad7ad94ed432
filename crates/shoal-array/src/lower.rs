//! From the high-level graph to tasks: culled, fused, one task per chunk.
//!
//! Lowering starts from the blocks that are asked for and walks back, so
//! only the chunks they need become tasks (culling by construction). A chain
//! of elementwise layers becomes one [`Program`] run by one task per chunk
//! (fusion); a reduction folds its input's program into its per-chunk
//! partials. Keys are content-addressed, so equal work asked for twice in
//! one computation runs once.
//!
//! Cost: one hash-map probe per (layer, block) visited, and one program per
//! fused layer shared by all its chunks.

use std::sync::Arc;

use rustc_hash::FxHashMap;
use shoal_client::{Delayed, TaskOptions, delayed_with};

use crate::chunk::Chunk;
use crate::chunks::{block_region, grid, linear};
use crate::kernels;
use crate::node::{Node, Op};
use crate::program::{At, Instr, Leaf, Program};
use crate::reduce::Partial;
use crate::structure::plan;

/// A fused kernel and the layers whose chunks it reads.
struct Fused {
    program: Arc<Program>,
    inputs: Vec<Arc<Node>>,
    name: String,
}

/// Turns layers into tasks, memoising blocks and programs.
pub(crate) struct Lowering {
    fuse: bool,
    blocks: FxHashMap<(u64, usize), Delayed<Chunk>>,
    programs: FxHashMap<u64, Arc<Fused>>,
}

fn opts(name: &str) -> TaskOptions {
    TaskOptions::new().pure(true).name(name)
}

impl Lowering {
    /// `fuse: false` gives one task per layer and chunk, the graph before
    /// optimisation.
    pub(crate) fn new(fuse: bool) -> Lowering {
        Lowering { fuse, blocks: FxHashMap::default(), programs: FxHashMap::default() }
    }

    /// The task of block `idx` of `node`.
    pub(crate) fn block(&mut self, node: &Arc<Node>, idx: &[usize]) -> Delayed<Chunk> {
        let slot = (node.id, linear(idx, &grid(&node.chunks)));
        if let Some(d) = self.blocks.get(&slot) {
            return d.clone();
        }
        let task = self.make(node, idx);
        self.blocks.insert(slot, task.clone());
        task
    }

    fn make(&mut self, node: &Arc<Node>, idx: &[usize]) -> Delayed<Chunk> {
        let (offset, shape) = block_region(&node.chunks, idx);
        let at = At { offset, shape };
        match &node.op {
            Op::Source(_) | Op::Unary(..) | Op::Binary(..) | Op::Where(..) | Op::Cast(_) => {
                let fused = self.fused(node);
                let inputs = self.input_blocks(&fused, node, idx);
                delayed_with(&opts(&fused.name), kernels::blockwise, (fused.program.clone(), at, inputs))
            }
            Op::Reduce { input, spec, split_every } => {
                // Output block idx → the input blocks along the reduced axes.
                let mut kept = idx.iter();
                let mut ranges: Vec<Vec<usize>> = Vec::with_capacity(input.ndim());
                for (d, &r) in spec.reduced.iter().enumerate() {
                    if r {
                        if spec.keepdims {
                            kept.next();
                        }
                        ranges.push((0..input.chunks[d].len()).collect());
                    } else {
                        ranges.push(vec![kept.next().copied().unwrap_or(0)]);
                    }
                }
                let fused = self.fused_or_input(input);
                let mut parts: Vec<Delayed<Partial>> = Vec::new();
                for block in cartesian(&ranges) {
                    let (offset, shape) = block_region(&input.chunks, &block);
                    let inputs = self.input_blocks(&fused, input, &block);
                    parts.push(delayed_with(
                        &opts(&format!("{}-{}", fused.name, spec.op.name())),
                        kernels::reduce_chunk,
                        (fused.program.clone(), At { offset, shape }, spec.clone(), inputs),
                    ));
                }
                let split = (*split_every).max(2);
                let combine_name = format!("{}-combine", spec.op.name());
                while parts.len() > split {
                    parts = parts
                        .chunks(split)
                        .map(|group| delayed_with(&opts(&combine_name), kernels::reduce_combine, (spec.clone(), group)))
                        .collect();
                }
                delayed_with(
                    &opts(&format!("{}-aggregate", spec.op.name())),
                    kernels::reduce_finish,
                    (spec.clone(), parts),
                )
            }
            Op::Structure { inputs, structure } => {
                let input_chunks: Vec<&[Vec<usize>]> = inputs.iter().map(|n| n.chunks.as_slice()).collect();
                let p = plan(structure, &node.chunks, node.dtype, &input_chunks, idx);
                let sources: Vec<Delayed<Chunk>> =
                    p.sources.iter().map(|(i, block)| self.block(&inputs[*i], block)).collect();
                match p.assembly {
                    None => sources.into_iter().next().unwrap_or_else(|| unreachable!("a plan has a source")),
                    Some(assembly) => {
                        delayed_with(&opts(structure.name()), kernels::assemble, (Arc::new(assembly), sources))
                    }
                }
            }
            Op::Matmul(a, b) => {
                let (i, j) = (idx[0], idx[1]);
                let mut pairs = Vec::new();
                for k in 0..a.chunks[1].len() {
                    pairs.push(self.block(a, &[i, k]));
                    pairs.push(self.block(b, &[k, j]));
                }
                delayed_with(&opts("matmul"), kernels::matmul, (pairs,))
            }
            Op::Data(chunks) => {
                let n = linear(idx, &grid(&node.chunks));
                let chunk = chunks.get(n).cloned().unwrap_or_else(|| Chunk::zeros(node.dtype, &at.shape));
                delayed_with(&opts("array"), kernels::literal, (chunk,))
            }
            Op::Persisted(futures) => {
                let n = linear(idx, &grid(&node.chunks));
                match futures.get(n) {
                    Some(f) => delayed_with(&opts("persisted"), kernels::literal, (f,)),
                    None => unreachable!("a persisted array has a future per block"),
                }
            }
            Op::Blocks { input, make, .. } => {
                let source = input.as_ref().map(|i| self.block(i, idx));
                make(source, &at)
            }
        }
    }

    /// The input blocks a fused program over block `idx` of `root` reads.
    fn input_blocks(&mut self, fused: &Fused, root: &Node, idx: &[usize]) -> Vec<Delayed<Chunk>> {
        fused
            .inputs
            .iter()
            .map(|input| {
                let lead = root.ndim() - input.ndim();
                let block: Vec<usize> =
                    (0..input.ndim()).map(|j| if input.shape[j] == 1 { 0 } else { idx[j + lead] }).collect();
                self.block(input, &block)
            })
            .collect()
    }

    /// A program that reads `node`'s blocks: its own fused program when it is
    /// elementwise (and fusion is on), else the identity over its blocks.
    fn fused_or_input(&mut self, node: &Arc<Node>) -> Arc<Fused> {
        if node.is_blockwise() && self.fuse {
            return self.fused(node);
        }
        let mut program = Program::default();
        program.push(Instr::Leaf(Leaf::Input { index: 0, broadcast: vec![false; node.ndim()] }), node.dtype);
        Arc::new(Fused { program: Arc::new(program), inputs: vec![node.clone()], name: node.label() })
    }

    /// The fused program of an elementwise layer and the elementwise layers
    /// behind it (only itself when fusion is off).
    fn fused(&mut self, root: &Arc<Node>) -> Arc<Fused> {
        if let Some(f) = self.programs.get(&root.id) {
            return f.clone();
        }
        let mut program = Program::default();
        let mut inputs: Vec<Arc<Node>> = Vec::new();
        let mut emitted: FxHashMap<u64, u32> = FxHashMap::default();
        let ndim = root.ndim();
        // Post-order walk without recursion: (node, children pushed?).
        let mut stack: Vec<(&Arc<Node>, bool)> = vec![(root, false)];
        while let Some((node, expanded)) = stack.pop() {
            if emitted.contains_key(&node.id) {
                continue;
            }
            let inline = node.is_blockwise() && (self.fuse || Arc::ptr_eq(node, root));
            if inline && !expanded {
                stack.push((node, true));
                for input in node.inputs().into_iter().rev() {
                    stack.push((input, false));
                }
                continue;
            }
            let lead = ndim - node.ndim();
            let at = |n: &Arc<Node>| emitted[&n.id];
            let instr = if !inline {
                let broadcast = (0..ndim).map(|d| d < lead || node.shape[d - lead] == 1).collect();
                inputs.push(node.clone());
                Instr::Leaf(Leaf::Input { index: (inputs.len() - 1) as u32, broadcast })
            } else {
                match &node.op {
                    Op::Source(leaf) => Instr::Leaf(align(leaf, lead)),
                    Op::Unary(op, a) => Instr::Unary(*op, at(a)),
                    Op::Binary(op, a, b) => Instr::Binary(*op, at(a), at(b)),
                    Op::Where(c, a, b) => Instr::Where(at(c), at(a), at(b)),
                    Op::Cast(a) => Instr::Cast(at(a)),
                    _ => unreachable!("only elementwise layers are inlined"),
                }
            };
            let slot = program.push(instr, node.dtype);
            emitted.insert(node.id, slot);
        }
        let name = program.describe();
        let fused = Arc::new(Fused { program: Arc::new(program), inputs, name });
        self.programs.insert(root.id, fused.clone());
        fused
    }
}

/// A source leaf of a layer with `lead` fewer axes than the program's.
fn align(leaf: &Leaf, lead: usize) -> Leaf {
    match leaf {
        Leaf::Random { seed, dist, shape } => {
            let mut aligned = vec![1; lead];
            aligned.extend_from_slice(shape);
            Leaf::Random { seed: *seed, dist: *dist, shape: aligned }
        }
        Leaf::Linear { axis, start, step, last } => {
            Leaf::Linear { axis: axis + lead, start: *start, step: *step, last: *last }
        }
        other => other.clone(),
    }
}

/// Every combination of one entry per list, in row-major order.
fn cartesian(ranges: &[Vec<usize>]) -> Vec<Vec<usize>> {
    let mut out = vec![Vec::with_capacity(ranges.len())];
    for r in ranges {
        out = out
            .into_iter()
            .flat_map(|prefix| {
                r.iter().map(move |&x| {
                    let mut p = prefix.clone();
                    p.push(x);
                    p
                })
            })
            .collect();
    }
    out
}
