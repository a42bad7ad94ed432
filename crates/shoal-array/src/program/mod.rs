//! Fused blockwise kernels: a small program per chunk, run block by block.
//!
//! A chain of elementwise operations (random → arcsin → add → …) becomes one
//! [`Program`]: instructions in dependency order, each reading earlier
//! instructions' results. One task evaluates it over its chunk in blocks of
//! [`BLOCK`] elements, so every intermediate lives in a buffer that stays in
//! cache and no temporary array is ever made (numexpr's trick). What the last
//! instruction gives goes to a sink: written into the output chunk, or folded
//! straight into a partial reduction.

mod addressing;
mod eval;
mod ir;

use crate::chunk::Chunk;

use addressing::{Addresses, RowPattern, prepare};
use eval::{Writer, binary, cast, fill_leaf, narrow, select, unary};

pub(crate) use eval::Buf;
pub(crate) use ir::{At, BinaryOp, Dist, Instr, Leaf, Program, UnaryOp};

/// Elements per block: eight instructions' buffers of 8 KiB stay in L2.
pub(crate) const BLOCK: usize = 1024;

/// Why a program could not run on its inputs: a graph wired wrongly.
#[derive(Debug, thiserror::Error)]
#[error("fused kernel: {0}")]
pub(crate) struct KernelError(pub(crate) String);

/// Runs `program` over the chunk `at`, block by block, handing each block's
/// result to `sink(first element, values)`.
///
/// # Errors
/// When the inputs do not match what the program expects.
pub(crate) fn run(
    program: &Program,
    at: &At,
    inputs: &[Chunk],
    mut sink: impl FnMut(usize, &Buf, usize),
) -> Result<(), KernelError> {
    let leaves = prepare(program, at, inputs)?;
    let mut bufs: Vec<Buf> = program.instrs.iter().map(|(_, d)| Buf::new(d.kind())).collect();
    let patterns = leaves.iter().map(|_| RowPattern::default()).collect();
    let mut addresses = Addresses { buf: vec![0u64; BLOCK], of: None, patterns };
    let total = at.len();
    let mut first = 0;
    while first < total {
        let len = BLOCK.min(total - first);
        addresses.of = None;
        for (i, (instr, dtype)) in program.instrs.iter().enumerate() {
            let (done, rest) = bufs.split_at_mut(i);
            let out = &mut rest[0];
            match instr {
                Instr::Leaf(leaf) => {
                    fill_leaf(leaf, (&leaves, i), inputs, at, first, len, &mut addresses, out)?;
                }
                Instr::Unary(op, a) => unary(*op, &done[*a as usize], out, len)?,
                Instr::Binary(op, a, b) => binary(*op, &done[*a as usize], &done[*b as usize], out, len)?,
                Instr::Where(c, a, b) => select(&done[*c as usize], &done[*a as usize], &done[*b as usize], out, len)?,
                Instr::Cast(a) => cast(&done[*a as usize], out, len),
            }
            narrow(out, *dtype, len);
        }
        if let Some(result) = bufs.last() {
            sink(first, result, len);
        }
        first += len;
    }
    Ok(())
}

/// Evaluates `program` over chunk `at` into a chunk of its result type.
///
/// # Errors
/// When the inputs do not match what the program expects.
pub(crate) fn materialize(program: &Program, at: &At, inputs: &[Chunk]) -> Result<Chunk, KernelError> {
    let dtype = program.dtype();
    let mut out = Chunk::zeros(dtype, &at.shape);
    {
        let mut writer = Writer::new(&mut out)?;
        run(program, at, inputs, |first, values, len| writer.write(first, values, len))?;
    }
    Ok(out)
}
