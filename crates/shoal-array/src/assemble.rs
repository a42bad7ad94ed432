//! Moving data between chunks: slicing, rechunking, concatenating,
//! stacking, transposing and reshaping are all "cut pieces out of input
//! chunks, transform them, and place them in an output chunk".

use ndarray::{ArrayD, ArrayViewD, Axis, IxDyn, Slice};
use serde::{Deserialize, Serialize};

use crate::chunk::Chunk;
use crate::dtype::DType;
use crate::program::KernelError;

/// A slice of one axis: `start..end` by `step`, in the chunk's own
/// coordinates (a negative step walks backwards from `end - 1`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct AxisSlice {
    /// First index (included).
    pub(crate) start: usize,
    /// Last index (excluded).
    pub(crate) end: usize,
    /// Step; negative walks backwards.
    pub(crate) step: isize,
}

/// One piece of an output chunk.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Piece {
    /// Which input chunk.
    pub(crate) input: u32,
    /// What to cut out of it, per axis.
    pub(crate) cut: Vec<AxisSlice>,
    /// Axes (after cutting, each of length 1) to drop: integer indexing.
    pub(crate) drop: Vec<usize>,
    /// Axis order afterwards (transpose), if changed.
    pub(crate) permute: Option<Vec<usize>>,
    /// Shape afterwards (reshape), if changed.
    pub(crate) reshape: Option<Vec<usize>>,
    /// Where it goes in the output chunk: `start..end` per axis.
    pub(crate) place: Vec<(usize, usize)>,
}

/// An output chunk made of pieces of input chunks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Assembly {
    /// The output chunk's shape.
    pub(crate) shape: Vec<usize>,
    /// Its type.
    pub(crate) dtype: DType,
    /// The pieces; together they cover it.
    pub(crate) pieces: Vec<Piece>,
}

/// Builds the output chunk.
///
/// # Errors
/// When a piece does not fit its input or its place.
pub(crate) fn assemble(spec: &Assembly, inputs: Vec<Chunk>) -> Result<Chunk, KernelError> {
    let mut out = Chunk::zeros(spec.dtype, &spec.shape);
    for (n, piece) in spec.pieces.iter().enumerate() {
        let input = inputs
            .get(piece.input as usize)
            .ok_or_else(|| KernelError(format!("piece {n} reads input {}, of {}", piece.input, inputs.len())))?;
        let fail = |e: String| KernelError(format!("piece {n}: {e}"));
        match (&mut out, input) {
            (Chunk::F64(o), Chunk::F64(i)) => place(o, i.view(), piece).map_err(fail)?,
            (Chunk::F32(o), Chunk::F32(i)) => place(o, i.view(), piece).map_err(fail)?,
            (Chunk::I64(o), Chunk::I64(i)) => place(o, i.view(), piece).map_err(fail)?,
            (Chunk::I32(o), Chunk::I32(i)) => place(o, i.view(), piece).map_err(fail)?,
            (Chunk::U8(o), Chunk::U8(i)) => place(o, i.view(), piece).map_err(fail)?,
            (Chunk::Bool(o), Chunk::Bool(i)) => place(o, i.view(), piece).map_err(fail)?,
            (o, i) => return Err(fail(format!("input of type {} for output of type {}", i.dtype(), o.dtype()))),
        }
    }
    Ok(out)
}

fn place<T: Clone>(out: &mut ArrayD<T>, input: ArrayViewD<'_, T>, piece: &Piece) -> Result<(), String> {
    if piece.cut.len() != input.ndim() {
        return Err(format!("{} axis slices for an input of {} axes", piece.cut.len(), input.ndim()));
    }
    for (axis, (s, &n)) in piece.cut.iter().zip(input.shape()).enumerate() {
        if s.start > s.end || s.end > n || s.step == 0 {
            return Err(format!("slice {s:?} of axis {axis} (length {n})"));
        }
    }
    let mut view = input.slice_each_axis(|ax| {
        let s = piece.cut[ax.axis.index()];
        Slice::new(s.start as isize, Some(s.end as isize), s.step)
    });
    for &axis in piece.drop.iter().rev() {
        if axis >= view.ndim() || view.len_of(Axis(axis)) != 1 {
            return Err(format!("cannot drop axis {axis} of a piece of shape {:?}", view.shape()));
        }
        view = view.index_axis_move(Axis(axis), 0);
    }
    if let Some(order) = &piece.permute {
        let mut seen = vec![false; view.ndim()];
        if order.len() != view.ndim() || order.iter().any(|&a| a >= seen.len() || std::mem::replace(&mut seen[a], true))
        {
            return Err(format!("axis order {order:?} for a piece of {} axes", view.ndim()));
        }
        view = view.permuted_axes(IxDyn(order));
    }
    let shaped;
    let view = match &piece.reshape {
        Some(shape) => {
            shaped = view
                .to_shape(IxDyn(shape))
                .map_err(|e| format!("piece of shape {:?} as {shape:?}: {e}", view.shape()))?;
            shaped.view()
        }
        None => view,
    };
    if piece.place.len() != out.ndim() {
        return Err(format!("a place of {} axes in an output of {}", piece.place.len(), out.ndim()));
    }
    for (axis, (&(start, end), &n)) in piece.place.iter().zip(out.shape()).enumerate() {
        if start > end || end > n {
            return Err(format!("place {start}..{end} on axis {axis} (length {n})"));
        }
    }
    let mut target = out.slice_each_axis_mut(|ax| {
        let (start, end) = piece.place[ax.axis.index()];
        Slice::from(start..end)
    });
    if target.shape() != view.shape() {
        return Err(format!("a piece of shape {:?} for a place of shape {:?}", view.shape(), target.shape()));
    }
    target.assign(&view);
    Ok(())
}

/// A blocked matrix product: the sum of `a_k · b_k` over the pairs
/// `[a_0, b_0, a_1, b_1, …]`.
///
/// # Errors
/// When the inputs are not pairs of matrices of matching shapes.
pub(crate) fn matmul(inputs: Vec<Chunk>) -> Result<Chunk, KernelError> {
    use ndarray::Ix2;
    fn product<T>(pairs: &[Chunk], get: impl Fn(&Chunk) -> Option<&ArrayD<T>>) -> Result<ArrayD<T>, KernelError>
    where
        T: ndarray::LinalgScalar,
    {
        let mut acc: Option<ndarray::Array2<T>> = None;
        for (k, pair) in pairs.chunks(2).enumerate() {
            let (Some(a), Some(b)) = (pair.first().and_then(&get), pair.get(1).and_then(&get)) else {
                return Err(KernelError(format!("matmul pair {k} is incomplete or of mixed types")));
            };
            let a = a.view().into_dimensionality::<Ix2>().map_err(|e| KernelError(format!("matmul pair {k}: {e}")))?;
            let b = b.view().into_dimensionality::<Ix2>().map_err(|e| KernelError(format!("matmul pair {k}: {e}")))?;
            if a.ncols() != b.nrows() {
                return Err(KernelError(format!("matmul pair {k}: {:?} by {:?}", a.shape(), b.shape())));
            }
            let p = a.dot(&b);
            acc = Some(match acc {
                Some(mut acc) if acc.shape() == p.shape() => {
                    acc.zip_mut_with(&p, |a, &b| *a = *a + b);
                    acc
                }
                Some(acc) => {
                    return Err(KernelError(format!("matmul pair {k}: {:?} into {:?}", p.shape(), acc.shape())));
                }
                None => p,
            });
        }
        acc.map(ndarray::Array2::into_dyn).ok_or_else(|| KernelError("matmul of no pairs".into()))
    }
    let first = inputs.first().ok_or_else(|| KernelError("matmul of no pairs".into()))?;
    Ok(match first {
        Chunk::F64(_) => Chunk::F64(product(&inputs, |c| if let Chunk::F64(d) = c { Some(d) } else { None })?),
        Chunk::F32(_) => Chunk::F32(product(&inputs, |c| if let Chunk::F32(d) = c { Some(d) } else { None })?),
        Chunk::I64(_) => Chunk::I64(product(&inputs, |c| if let Chunk::I64(d) = c { Some(d) } else { None })?),
        Chunk::I32(_) => Chunk::I32(product(&inputs, |c| if let Chunk::I32(d) = c { Some(d) } else { None })?),
        Chunk::U8(_) => Chunk::U8(product(&inputs, |c| if let Chunk::U8(d) = c { Some(d) } else { None })?),
        Chunk::Bool(_) => return Err(KernelError("matmul of booleans: cast to an integer type first".into())),
    })
}
