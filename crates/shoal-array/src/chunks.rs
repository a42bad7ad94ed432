//! Chunk arithmetic: how an array is cut into blocks.
//!
//! An array of shape `(n0, n1, …)` is cut along each axis into runs of
//! sizes that add up to `n_i` (Dask's `chunks` tuple of tuples); a block is
//! one run on every axis, named by its index in the grid of blocks.

use std::fmt;

use crate::error::ArrayError;

/// Dask's default target for automatic chunks: 128 MiB.
pub const AUTO_CHUNK_BYTES: usize = 128 << 20;

/// How to cut an array into chunks.
///
/// Converts from a block size per axis (`[1000, 1000, 5]`), one size for
/// every axis (`1000`), explicit sizes per axis (`vec![vec![2, 3], vec![4]]`)
/// or `"auto"`. A block size of 0, or one larger than its axis, means the
/// whole axis.
///
/// ```
/// use shoal_array::Chunks;
/// let c: Chunks = [1000, 5].into();
/// assert_eq!(c.resolve(&[2500, 10], 8)?, vec![vec![1000, 1000, 500], vec![5, 5]]);
/// let auto: Chunks = "auto".into();
/// assert_eq!(auto.resolve(&[100, 100], 8)?, vec![vec![100], vec![100]]);
/// # Ok::<(), shoal_array::ArrayError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Chunks {
    /// Chunks of about this many bytes, as even as the shape allows.
    Auto(usize),
    /// This block size along each axis; the last block of an axis may be smaller.
    Blocks(Vec<usize>),
    /// This block size along every axis.
    Uniform(usize),
    /// The size of every block along each axis.
    Explicit(Vec<Vec<usize>>),
}

impl Chunks {
    /// The default: automatic chunks of 128 MiB.
    pub fn auto() -> Chunks {
        Chunks::Auto(AUTO_CHUNK_BYTES)
    }

    /// The block sizes along each axis for an array of `shape` whose
    /// elements take `itemsize` bytes.
    ///
    /// # Errors
    /// [`ArrayError::Chunks`] when the specification has another number of
    /// axes than the shape, or explicit sizes do not add up to an axis.
    pub fn resolve(&self, shape: &[usize], itemsize: usize) -> Result<Vec<Vec<usize>>, ArrayError> {
        let fail = |reason: String| ArrayError::Chunks { chunks: self.to_string(), shape: shape.to_vec(), reason };
        match self {
            Chunks::Auto(bytes) => {
                Ok(auto_blocks(shape, itemsize, *bytes).iter().zip(shape).map(|(&b, &n)| regular(n, b)).collect())
            }
            Chunks::Blocks(blocks) => {
                if blocks.len() != shape.len() {
                    return Err(fail(format!("{} block sizes for {} axes", blocks.len(), shape.len())));
                }
                Ok(blocks.iter().zip(shape).map(|(&b, &n)| regular(n, b)).collect())
            }
            Chunks::Uniform(block) => Ok(shape.iter().map(|&n| regular(n, *block)).collect()),
            Chunks::Explicit(sizes) => {
                if sizes.len() != shape.len() {
                    return Err(fail(format!("{} axes of sizes for {} axes", sizes.len(), shape.len())));
                }
                for (axis, (s, &n)) in sizes.iter().zip(shape).enumerate() {
                    if s.iter().sum::<usize>() != n || s.is_empty() {
                        return Err(fail(format!(
                            "the sizes of axis {axis} add up to {}, not {n}",
                            s.iter().sum::<usize>()
                        )));
                    }
                    if n > 0 && s.contains(&0) {
                        return Err(fail(format!("axis {axis} has an empty block")));
                    }
                }
                Ok(sizes.clone())
            }
        }
    }
}

impl fmt::Display for Chunks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Chunks::Auto(bytes) => write!(f, "auto ({bytes} bytes)"),
            Chunks::Blocks(b) => write!(f, "{b:?}"),
            Chunks::Uniform(b) => write!(f, "{b}"),
            Chunks::Explicit(s) => write!(f, "{s:?}"),
        }
    }
}

impl From<&str> for Chunks {
    /// `"auto"`; any other text is also read as automatic chunks (the
    /// specification has nothing else to say in text).
    fn from(_: &str) -> Chunks {
        Chunks::auto()
    }
}

impl From<usize> for Chunks {
    /// One block size for every axis.
    fn from(block: usize) -> Chunks {
        Chunks::Uniform(block)
    }
}

impl<const N: usize> From<[usize; N]> for Chunks {
    fn from(blocks: [usize; N]) -> Chunks {
        Chunks::Blocks(blocks.to_vec())
    }
}

impl From<&[usize]> for Chunks {
    fn from(blocks: &[usize]) -> Chunks {
        Chunks::Blocks(blocks.to_vec())
    }
}

impl From<Vec<usize>> for Chunks {
    fn from(blocks: Vec<usize>) -> Chunks {
        Chunks::Blocks(blocks)
    }
}

impl From<Vec<Vec<usize>>> for Chunks {
    fn from(sizes: Vec<Vec<usize>>) -> Chunks {
        Chunks::Explicit(sizes)
    }
}

/// Sizes of blocks of `block` along an axis of `n` (whole axis for 0 or
/// more than `n`).
pub(crate) fn regular(n: usize, block: usize) -> Vec<usize> {
    if n == 0 {
        return vec![0];
    }
    let block = if block == 0 || block > n { n } else { block };
    let mut sizes = vec![block; n / block];
    if !n.is_multiple_of(block) {
        sizes.push(n % block);
    }
    sizes
}

/// Block sizes per axis so one block is at most `limit` bytes: the largest
/// block is halved until it fits, then each axis is cut evenly.
fn auto_blocks(shape: &[usize], itemsize: usize, limit: usize) -> Vec<usize> {
    let mut blocks: Vec<usize> = shape.iter().map(|&n| n.max(1)).collect();
    let elements = (limit / itemsize.max(1)).max(1);
    while blocks.iter().product::<usize>() > elements {
        let Some((axis, _)) = blocks.iter().enumerate().max_by_key(|(_, b)| **b) else { break };
        blocks[axis] = blocks[axis].div_ceil(2);
    }
    blocks
        .iter()
        .zip(shape)
        .map(|(&b, &n)| {
            let count = n.div_ceil(b.max(1)).max(1);
            n.div_ceil(count).max(1)
        })
        .collect()
}

/// The start of each block along an axis, and the end of the axis last.
pub(crate) fn offsets(sizes: &[usize]) -> Vec<usize> {
    let mut out = Vec::with_capacity(sizes.len() + 1);
    let mut at = 0;
    out.push(0);
    for s in sizes {
        at += s;
        out.push(at);
    }
    out
}

/// The number of blocks along each axis.
pub(crate) fn grid(chunks: &[Vec<usize>]) -> Vec<usize> {
    chunks.iter().map(Vec::len).collect()
}

/// Every block index of a grid, in row-major order.
pub(crate) fn block_indices(grid: &[usize]) -> Vec<Vec<usize>> {
    let total: usize = grid.iter().product();
    let mut out = Vec::with_capacity(total);
    if total == 0 {
        return out;
    }
    let mut idx = vec![0; grid.len()];
    for _ in 0..total {
        out.push(idx.clone());
        for axis in (0..grid.len()).rev() {
            idx[axis] += 1;
            if idx[axis] < grid[axis] {
                break;
            }
            idx[axis] = 0;
        }
    }
    out
}

/// The row-major position of block `idx` in `grid`.
pub(crate) fn linear(idx: &[usize], grid: &[usize]) -> usize {
    idx.iter().zip(grid).fold(0, |acc, (&i, &g)| acc * g + i)
}

/// The offset and shape of block `idx`.
pub(crate) fn block_region(chunks: &[Vec<usize>], idx: &[usize]) -> (Vec<usize>, Vec<usize>) {
    let offset = chunks.iter().zip(idx).map(|(s, &i)| s[..i].iter().sum()).collect();
    let shape = chunks.iter().zip(idx).map(|(s, &i)| s[i]).collect();
    (offset, shape)
}

/// The block of an axis with these `offsets` that holds position `pos`.
pub(crate) fn block_of(offsets: &[usize], pos: usize) -> usize {
    offsets.partition_point(|&o| o <= pos).saturating_sub(1).min(offsets.len().saturating_sub(2))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn regular_blocks_end_with_the_remainder() {
        assert_eq!(regular(10, 4), vec![4, 4, 2]);
        assert_eq!(regular(10, 0), vec![10]);
        assert_eq!(regular(10, 20), vec![10]);
        assert_eq!(regular(0, 5), vec![0]);
    }

    #[test]
    fn auto_chunks_fit_the_byte_target() {
        let c = Chunks::Auto(AUTO_CHUNK_BYTES).resolve(&[10_000, 10_000, 10], 8).expect("resolves");
        let largest: usize = c.iter().map(|s| s.iter().copied().max().unwrap_or(0)).product();
        assert!(largest * 8 <= AUTO_CHUNK_BYTES, "{c:?}");
        assert!(largest * 8 >= AUTO_CHUNK_BYTES / 8, "{c:?} is needlessly small");
    }

    #[test]
    fn explicit_sizes_must_add_up() {
        let err = Chunks::Explicit(vec![vec![3, 3]]).resolve(&[7], 8).expect_err("6 is not 7");
        assert!(err.to_string().contains("add up to 6, not 7"), "{err}");
        let err = Chunks::Blocks(vec![2]).resolve(&[4, 4], 8).expect_err("axes differ");
        assert!(err.to_string().contains("1 block sizes for 2 axes"), "{err}");
    }

    proptest! {
        #[test]
        fn blocks_cover_each_axis(shape in proptest::collection::vec(0usize..50, 0..4), block in 0usize..20) {
            let chunks = Chunks::Blocks(vec![block; shape.len()]).resolve(&shape, 8).expect("resolves");
            for (sizes, &n) in chunks.iter().zip(&shape) {
                prop_assert_eq!(sizes.iter().sum::<usize>(), n);
                let offs = offsets(sizes);
                for pos in 0..n {
                    let b = block_of(&offs, pos);
                    prop_assert!(offs[b] <= pos && pos < offs[b + 1]);
                }
            }
            let g = grid(&chunks);
            for (n, idx) in block_indices(&g).iter().enumerate() {
                prop_assert_eq!(linear(idx, &g), n);
            }
        }
    }
}
