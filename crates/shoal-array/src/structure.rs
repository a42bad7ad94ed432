//! Layers that move data between chunks, and which pieces of which input
//! chunks each output chunk is made of.

use crate::assemble::{Assembly, AxisSlice, Piece};
use crate::chunks::{block_of, offsets};
use crate::dtype::DType;

/// One axis of a slice, resolved against the input's shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum SliceAxis {
    /// Positions `start + k·step` for `k` in `0..len`.
    Range { start: usize, step: isize, len: usize },
    /// One position; the axis goes away.
    Index(usize),
    /// A new axis of length 1.
    NewAxis,
}

/// How a structural layer is made from its inputs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Structure {
    /// Input 0 cut into the layer's chunks.
    Rechunk,
    /// Input 0 sliced.
    Slice(Vec<SliceAxis>),
    /// The inputs joined along an axis; blocks pass through unchanged.
    Concatenate { axis: usize },
    /// The inputs stacked along a new axis.
    Stack { axis: usize },
    /// Input 0 with its axes reordered: output axis `j` is input axis `perm[j]`.
    Transpose(Vec<usize>),
    /// Input 0 (chunked by rows that map onto whole output rows) reshaped.
    Reshape,
}

impl Structure {
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Structure::Rechunk => "rechunk",
            Structure::Slice(_) => "getitem",
            Structure::Concatenate { .. } => "concatenate",
            Structure::Stack { .. } => "stack",
            Structure::Transpose(_) => "transpose",
            Structure::Reshape => "reshape",
        }
    }
}

/// What one output block needs: input blocks (input number, block index),
/// and how to build it from them — `None` when it is exactly the one input
/// block.
pub(crate) struct Plan {
    pub(crate) sources: Vec<(usize, Vec<usize>)>,
    pub(crate) assembly: Option<Assembly>,
}

/// An input block overlapping an output block along one axis: its index,
/// the overlap in its own coordinates, and in the output block's.
type Overlap = (usize, AxisSlice, (usize, usize));

/// The region `offset..offset + shape` of a block.
fn region(chunks: &[Vec<usize>], idx: &[usize]) -> Vec<(usize, usize)> {
    chunks
        .iter()
        .zip(idx)
        .map(|(sizes, &i)| {
            let start: usize = sizes[..i].iter().sum();
            (start, start + sizes[i])
        })
        .collect()
}

fn full(shape: &[usize]) -> Vec<AxisSlice> {
    shape.iter().map(|&n| AxisSlice { start: 0, end: n, step: 1 }).collect()
}

/// The plan of output block `idx` of a structural layer with `chunks` and
/// `dtype`, made from inputs with `input_chunks`.
pub(crate) fn plan(
    structure: &Structure,
    chunks: &[Vec<usize>],
    dtype: DType,
    input_chunks: &[&[Vec<usize>]],
    idx: &[usize],
) -> Plan {
    let out_region = region(chunks, idx);
    let out_shape: Vec<usize> = out_region.iter().map(|(a, b)| b - a).collect();
    let single = |input: usize, block: Vec<usize>, piece: Piece| Plan {
        sources: vec![(input, block)],
        assembly: Some(Assembly { shape: out_shape.clone(), dtype, pieces: vec![piece] }),
    };
    match structure {
        Structure::Rechunk => {
            let inc = input_chunks[0];
            let offs: Vec<Vec<usize>> = inc.iter().map(|s| offsets(s)).collect();
            // Per axis: the input blocks overlapping the output block, with
            // the overlap in input-local and output-local coordinates.
            let per_axis: Vec<Vec<Overlap>> = out_region
                .iter()
                .enumerate()
                .map(|(d, &(lo, hi))| {
                    if lo == hi {
                        return vec![(0, AxisSlice { start: 0, end: 0, step: 1 }, (0, 0))];
                    }
                    let (first, last) = (block_of(&offs[d], lo), block_of(&offs[d], hi - 1));
                    (first..=last)
                        .map(|b| {
                            let (bs, be) = (offs[d][b], offs[d][b + 1]);
                            let (s, e) = (lo.max(bs), hi.min(be));
                            (b, AxisSlice { start: s - bs, end: e - bs, step: 1 }, (s - lo, e - lo))
                        })
                        .collect()
                })
                .collect();
            let mut sources = Vec::new();
            let mut pieces = Vec::new();
            let mut counter = vec![0usize; per_axis.len()];
            loop {
                let block: Vec<usize> = counter.iter().zip(&per_axis).map(|(&c, a)| a[c].0).collect();
                let cut: Vec<AxisSlice> = counter.iter().zip(&per_axis).map(|(&c, a)| a[c].1).collect();
                let place: Vec<(usize, usize)> = counter.iter().zip(&per_axis).map(|(&c, a)| a[c].2).collect();
                pieces.push(Piece {
                    input: sources.len() as u32,
                    cut,
                    drop: vec![],
                    permute: None,
                    reshape: None,
                    place,
                });
                sources.push((0, block));
                let mut d = per_axis.len();
                loop {
                    if d == 0 {
                        let whole = pieces.len() == 1
                            && input_chunks[0].iter().zip(&sources[0].1).zip(&out_shape).all(|((s, &b), &n)| s[b] == n);
                        let assembly = (!whole).then(|| Assembly { shape: out_shape.clone(), dtype, pieces });
                        return Plan { sources, assembly };
                    }
                    d -= 1;
                    counter[d] += 1;
                    if counter[d] < per_axis[d].len() {
                        break;
                    }
                    counter[d] = 0;
                }
            }
        }
        Structure::Slice(axes) => {
            let inc = input_chunks[0];
            let mut block = Vec::new();
            let mut cut = Vec::new();
            let mut drop = Vec::new();
            let mut out_axis = 0;
            let mut new_axes = false;
            for (input_axis, axis) in axes.iter().filter(|a| **a != SliceAxis::NewAxis).enumerate() {
                let offs = offsets(&inc[input_axis]);
                match axis {
                    SliceAxis::Index(i) => {
                        let b = block_of(&offs, *i);
                        block.push(b);
                        cut.push(AxisSlice { start: i - offs[b], end: i - offs[b] + 1, step: 1 });
                        drop.push(input_axis);
                    }
                    SliceAxis::Range { start, step, .. } => {
                        // Skip new axes to find this range's output axis.
                        while axes_out_is_new(axes, out_axis) {
                            out_axis += 1;
                        }
                        let (lo, hi) = out_region[out_axis];
                        out_axis += 1;
                        if lo == hi {
                            block.push(0);
                            cut.push(AxisSlice { start: 0, end: 0, step: 1 });
                            continue;
                        }
                        let first = (*start as isize + lo as isize * step) as usize;
                        let last = (*start as isize + (hi as isize - 1) * step) as usize;
                        let b = block_of(&offs, first);
                        let (min, max) = (first.min(last) - offs[b], first.max(last) - offs[b]);
                        block.push(b);
                        cut.push(AxisSlice { start: min, end: max + 1, step: *step });
                    }
                    SliceAxis::NewAxis => unreachable!("filtered out"),
                }
            }
            for a in axes {
                new_axes |= *a == SliceAxis::NewAxis;
            }
            let piece = Piece {
                input: 0,
                cut,
                drop,
                permute: None,
                reshape: new_axes.then(|| out_shape.clone()),
                place: out_shape.iter().map(|&n| (0, n)).collect(),
            };
            single(0, block, piece)
        }
        Structure::Concatenate { axis } => {
            let mut local = idx[*axis];
            let mut input = 0;
            while local >= input_chunks[input][*axis].len() {
                local -= input_chunks[input][*axis].len();
                input += 1;
            }
            let mut block = idx.to_vec();
            block[*axis] = local;
            Plan { sources: vec![(input, block)], assembly: None }
        }
        Structure::Stack { axis } => {
            let input = idx[*axis];
            let mut block = idx.to_vec();
            block.remove(*axis);
            let in_shape: Vec<usize> = input_chunks[input].iter().zip(&block).map(|(s, &b)| s[b]).collect();
            let piece = Piece {
                input: 0,
                cut: full(&in_shape),
                drop: vec![],
                permute: None,
                reshape: Some(out_shape.clone()),
                place: out_shape.iter().map(|&n| (0, n)).collect(),
            };
            single(input, block, piece)
        }
        Structure::Transpose(perm) => {
            let mut block = vec![0; perm.len()];
            for (j, &p) in perm.iter().enumerate() {
                block[p] = idx[j];
            }
            let in_shape: Vec<usize> = input_chunks[0].iter().zip(&block).map(|(s, &b)| s[b]).collect();
            let piece = Piece {
                input: 0,
                cut: full(&in_shape),
                drop: vec![],
                permute: Some(perm.clone()),
                reshape: None,
                place: out_shape.iter().map(|&n| (0, n)).collect(),
            };
            single(0, block, piece)
        }
        Structure::Reshape => {
            let inc = input_chunks[0];
            let mut block = vec![0; inc.len()];
            if let (Some(b), Some(&i)) = (block.first_mut(), idx.first()) {
                *b = i;
            }
            let in_shape: Vec<usize> = inc.iter().zip(&block).map(|(s, &b)| s[b]).collect();
            let piece = Piece {
                input: 0,
                cut: full(&in_shape),
                drop: vec![],
                permute: None,
                reshape: Some(out_shape.clone()),
                place: out_shape.iter().map(|&n| (0, n)).collect(),
            };
            single(0, block, piece)
        }
    }
}

/// Whether output axis `out_axis` of a slice is a new axis.
fn axes_out_is_new(axes: &[SliceAxis], out_axis: usize) -> bool {
    axes.iter().filter(|a| !matches!(a, SliceAxis::Index(_))).nth(out_axis) == Some(&SliceAxis::NewAxis)
}

/// The chunks along an axis selected by a range of a slice: one block per
/// input block that holds any selected position, in the order visited.
pub(crate) fn range_chunks(sizes: &[usize], start: usize, step: isize, len: usize) -> Vec<usize> {
    if len == 0 {
        return vec![0];
    }
    let offs = offsets(sizes);
    let mut out: Vec<usize> = Vec::new();
    let mut current = usize::MAX;
    for k in 0..len {
        let p = (start as isize + k as isize * step) as usize;
        let b = block_of(&offs, p);
        if b == current {
            if let Some(last) = out.last_mut() {
                *last += 1;
            }
        } else {
            out.push(1);
            current = b;
        }
    }
    out
}
