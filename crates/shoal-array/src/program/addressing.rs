//! Where a block's elements are: the addresses each leaf reads them at.
//!
//! Every leaf's values are an affine map from the chunk's flat element
//! index to an address: an offset into an input chunk (with stride 0 along
//! broadcast axes), the global row-major index of a random array (the
//! counter its numbers are hashed from), or the global index along a linear
//! leaf's axis. [`prepare`] checks the inputs against the program and makes
//! each leaf's [`Layout`] once per task; per block, [`Addresses`] fills a
//! leaf's addresses and keeps them for the next leaf laid out alike.
//!
//! This is index arithmetic apart from what the values are, so it is kept
//! apart from the evaluation and tested on its own against the
//! element-by-element map.

use super::KernelError;
use super::ir::{At, Instr, Leaf, Program};
use crate::chunk::Chunk;

/// Per leaf: where its values sit, as an affine map from the chunk's
/// element index to an address (a counter, or an offset into an input).
#[derive(Default, PartialEq)]
pub(super) struct Layout {
    base: u64,
    strides: Vec<u64>,
    /// The input is laid out exactly like the output: read it as a slice.
    pub(super) contiguous: bool,
}

/// The row-major strides of `shape`, in elements.
fn row_major(shape: &[usize]) -> Vec<u64> {
    let mut strides = vec![0u64; shape.len()];
    let mut s = 1u64;
    for (d, &n) in shape.iter().enumerate().rev() {
        strides[d] = s;
        s *= n as u64;
    }
    strides
}

/// Each instruction's layout over chunk `at` (the default one where it is
/// not a leaf), after checking that the inputs are what the program reads.
pub(super) fn prepare(program: &Program, at: &At, inputs: &[Chunk]) -> Result<Vec<Layout>, KernelError> {
    let ndim = at.shape.len();
    program
        .instrs
        .iter()
        .map(|(instr, _)| {
            let Instr::Leaf(leaf) = instr else { return Ok(Layout::default()) };
            match leaf {
                Leaf::Input { index, broadcast } => {
                    let chunk = inputs.get(*index as usize).ok_or_else(|| {
                        KernelError(format!("input {index} is missing: {} inputs were given", inputs.len()))
                    })?;
                    let shape = chunk.shape();
                    if shape.len() > ndim {
                        return Err(KernelError(format!("input {index} has shape {shape:?}, output {:?}", at.shape)));
                    }
                    // Align to the output's axes: missing leading axes broadcast.
                    let lead = ndim - shape.len();
                    let mut strides = vec![0u64; ndim];
                    let own = row_major(shape);
                    let mut same = lead == 0;
                    for d in 0..ndim {
                        let extent = if d < lead { 1 } else { shape[d - lead] };
                        let stretched = d < lead || broadcast.get(d).copied().unwrap_or(false);
                        if stretched {
                            if extent != 1 {
                                return Err(KernelError(format!("input {index} cannot broadcast along axis {d}")));
                            }
                            same &= at.shape[d] == 1;
                        } else {
                            if extent != at.shape[d] {
                                return Err(KernelError(format!(
                                    "input {index} has shape {shape:?}, output chunk {:?}",
                                    at.shape
                                )));
                            }
                            strides[d] = own[d - lead];
                        }
                    }
                    Ok(Layout { base: 0, strides, contiguous: same })
                }
                Leaf::Random { shape, .. } => {
                    if shape.len() != ndim {
                        return Err(KernelError(format!("random leaf of {} axes in {ndim}", shape.len())));
                    }
                    let global = row_major(shape);
                    let mut base = 0u64;
                    let mut strides = vec![0u64; ndim];
                    for d in 0..ndim {
                        // An axis of extent 1 (broadcast or not) always has index 0.
                        if shape[d] > 1 {
                            strides[d] = global[d];
                            base += at.offset[d] as u64 * global[d];
                        }
                    }
                    Ok(Layout { base, strides, contiguous: false })
                }
                Leaf::Linear { axis, .. } => {
                    let mut strides = vec![0u64; ndim];
                    let base = match (strides.get_mut(*axis), at.offset.get(*axis)) {
                        (Some(s), Some(o)) => {
                            *s = 1;
                            *o as u64
                        }
                        _ => return Err(KernelError(format!("axis {axis} of a linear leaf in {ndim} axes"))),
                    };
                    Ok(Layout { base, strides, contiguous: false })
                }
                Leaf::Full(_) => Ok(Layout::default()),
            }
        })
        .collect()
}

/// Rows shorter than this are filled from a [`RowPattern`]: chunks like
/// `(1000, 1000, 5)` have rows of 5, and a loop per row (or an odometer step
/// per row) would cost more than the hashing the addresses feed.
const SHORT_ROW: usize = 64;

/// The most offsets a [`RowPattern`] holds (32 KiB: it stays in L1/L2).
const PATTERN_LEN: usize = 4096;

/// The offsets of a group of whole short rows from the group's first
/// element: with them, a block of addresses is one vectorised add of a
/// base to a slice, whatever the row length.
#[derive(Default)]
pub(super) struct RowPattern {
    /// `(width, rows, step, row_step)` the offsets are for.
    of: Option<(usize, usize, u64, u64)>,
    offsets: Vec<u64>,
}

impl RowPattern {
    fn offsets(&mut self, width: usize, rows: usize, step: u64, row_step: u64) -> &[u64] {
        let key = (width, rows, step, row_step);
        if self.of != Some(key) {
            self.offsets.clear();
            for r in 0..rows as u64 {
                self.offsets.extend((0..width as u64).map(|k| r * row_step + k * step));
            }
            self.of = Some(key);
        }
        &self.offsets
    }
}

/// The addresses of elements `first..first + out.len()` of a chunk of
/// `shape` (row-major), for the affine map `base + Σ index·stride`.
fn fill_addresses(shape: &[usize], layout: &Layout, first: usize, out: &mut [u64], pattern: &mut RowPattern) {
    let ndim = shape.len();
    if ndim == 0 {
        out.fill(layout.base);
        return;
    }
    let last = ndim - 1;
    if last > 0 && shape[last] < SHORT_ROW {
        fill_short_rows(shape, layout, first, out, pattern);
        return;
    }
    let mut index = vec![0usize; ndim];
    let mut rest = first;
    for d in (0..ndim).rev() {
        index[d] = rest % shape[d].max(1);
        rest /= shape[d].max(1);
    }
    let mut row = layout.base + (0..last).map(|d| index[d] as u64 * layout.strides[d]).sum::<u64>();
    let step = layout.strides[last];
    let width = shape[last];
    let mut pos = 0;
    while pos < out.len() {
        let run = (width - index[last]).min(out.len() - pos);
        let mut address = row + index[last] as u64 * step;
        for slot in &mut out[pos..pos + run] {
            *slot = address;
            address += step;
        }
        pos += run;
        index[last] += run;
        if index[last] == width {
            index[last] = 0;
            advance(shape, layout, &mut index, &mut row, last);
        }
    }
}

/// [`fill_addresses`] for rows shorter than [`SHORT_ROW`] (at least two
/// axes): the two innermost axes form planes, cut into groups of whole rows
/// that share one [`RowPattern`]; each group's addresses are its base plus
/// the pattern.
fn fill_short_rows(shape: &[usize], layout: &Layout, first: usize, out: &mut [u64], pattern: &mut RowPattern) {
    let last = shape.len() - 1;
    let outer = last - 1;
    let width = shape[last].max(1);
    let plane = width * shape[outer].max(1);
    let rows = shape[outer].clamp(1, PATTERN_LEN / width);
    let group = rows * width;
    let offsets = pattern.offsets(width, rows, layout.strides[last], layout.strides[outer]);
    let mut pos = 0;
    while pos < out.len() {
        let q = first + pos;
        let (plane_number, within) = (q / plane, q % plane);
        let (g, r) = (within / group, within % group);
        // The plane's last group may be short.
        let n = (group.min(plane - g * group) - r).min(out.len() - pos);
        let mut base = layout.base + (g * rows) as u64 * layout.strides[outer];
        let mut rest = plane_number;
        for d in (0..outer).rev() {
            base += (rest % shape[d].max(1)) as u64 * layout.strides[d];
            rest /= shape[d].max(1);
        }
        for (slot, &offset) in out[pos..pos + n].iter_mut().zip(&offsets[r..r + n]) {
            *slot = base + offset;
        }
        pos += n;
    }
}

/// Steps the odometer of the axes before `below` by one.
fn advance(shape: &[usize], layout: &Layout, index: &mut [usize], row: &mut u64, below: usize) {
    for d in (0..below).rev() {
        index[d] += 1;
        *row += layout.strides[d];
        if index[d] < shape[d] {
            return;
        }
        *row -= layout.strides[d] * shape[d] as u64;
        index[d] = 0;
    }
}

/// The address buffer of a block, and the leaf whose layout it holds:
/// leaves laid out alike (`x` and `y` of one shape and chunking) share one
/// fill.
pub(super) struct Addresses {
    pub(super) buf: Vec<u64>,
    pub(super) of: Option<usize>,
    /// By leaf: leaves of other strides in one program would otherwise
    /// rebuild a shared pattern at every block.
    pub(super) patterns: Vec<RowPattern>,
}

impl Addresses {
    /// The addresses of elements `first..first + len` under leaf `leaf`'s layout.
    pub(super) fn get(&mut self, shape: &[usize], layouts: &[Layout], leaf: usize, first: usize, len: usize) -> &[u64] {
        if self.of.is_none_or(|held| layouts[held] != layouts[leaf]) {
            fill_addresses(shape, &layouts[leaf], first, &mut self.buf[..len], &mut self.patterns[leaf]);
            self.of = Some(leaf);
        }
        &self.buf[..len]
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::program::BLOCK;

    /// The address of flat element `q` of a chunk, one element at a time.
    fn address_of(shape: &[usize], layout: &Layout, q: usize) -> u64 {
        let mut rest = q;
        let mut address = layout.base;
        for d in (0..shape.len()).rev() {
            address += (rest % shape[d]) as u64 * layout.strides[d];
            rest /= shape[d];
        }
        address
    }

    proptest! {
        /// Blocks of addresses, from any starting element, for short and
        /// long rows and any strides, match the element-by-element map.
        #[test]
        fn addresses_follow_the_affine_map(
            shape in prop::collection::vec(1usize..80, 0..4),
            strides in prop::collection::vec(0u64..100_000, 4),
            base in 0u64..1_000_000,
            start in 0usize..1_000_000,
            len in 1usize..=BLOCK,
        ) {
            let total: usize = shape.iter().product();
            let first = start % total;
            let len = len.min(total - first);
            let layout = Layout { base, strides: strides[..shape.len()].to_vec(), contiguous: false };
            let mut out = vec![0u64; len];
            let mut pattern = RowPattern::default();
            // Twice: the second fill reuses the pattern of the first.
            for _ in 0..2 {
                fill_addresses(&shape, &layout, first, &mut out, &mut pattern);
                for (k, &a) in out.iter().enumerate() {
                    prop_assert_eq!(a, address_of(&shape, &layout, first + k), "element {}", first + k);
                }
            }
        }
    }
}
