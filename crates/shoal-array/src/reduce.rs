//! Reductions as trees: a partial per chunk, combined in groups, finished.
//!
//! A chunk's partial is folded straight out of its fused program's blocks
//! (no chunk is ever made for it). Partials of the chunks along the reduced
//! axes are combined `split_every` at a time, then the last combination is
//! turned into the result (a mean divides, a standard deviation takes a
//! square root). Means and variances keep counts and centred moments (Chan's
//! parallel update), so they stay accurate for data far from zero.

use serde::{Deserialize, Serialize};

use crate::chunk::Chunk;
use crate::dtype::DType;
use crate::program::{At, Buf, KernelError, Program, run};

/// A reduction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub(crate) enum ReduceOp {
    /// Sum (integers and booleans sum as `i64`).
    Sum,
    /// Product.
    Prod,
    /// Arithmetic mean, as `f64`.
    Mean,
    /// Smallest value; NaN if any is NaN.
    Min,
    /// Largest value; NaN if any is NaN.
    Max,
    /// Variance with `ddof` delta degrees of freedom, as `f64`.
    Var(u32),
    /// Standard deviation with `ddof` delta degrees of freedom, as `f64`.
    Std(u32),
    /// Index of the first smallest value along one axis.
    ArgMin,
    /// Index of the first largest value along one axis.
    ArgMax,
    /// Whether any value is true (non-zero).
    Any,
    /// Whether every value is true (non-zero).
    All,
}

impl ReduceOp {
    /// NumPy's name.
    pub(crate) fn name(self) -> &'static str {
        match self {
            ReduceOp::Sum => "sum",
            ReduceOp::Prod => "prod",
            ReduceOp::Mean => "mean",
            ReduceOp::Min => "min",
            ReduceOp::Max => "max",
            ReduceOp::Var(_) => "var",
            ReduceOp::Std(_) => "std",
            ReduceOp::ArgMin => "argmin",
            ReduceOp::ArgMax => "argmax",
            ReduceOp::Any => "any",
            ReduceOp::All => "all",
        }
    }

    /// The result's type for input of type `input`.
    pub(crate) fn output(self, input: DType) -> DType {
        match self {
            ReduceOp::Sum | ReduceOp::Prod => match input {
                DType::Float64 | DType::Float32 => input,
                _ => DType::Int64,
            },
            ReduceOp::Min | ReduceOp::Max => input,
            ReduceOp::Mean | ReduceOp::Var(_) | ReduceOp::Std(_) => DType::Float64,
            ReduceOp::ArgMin | ReduceOp::ArgMax => DType::Int64,
            ReduceOp::Any | ReduceOp::All => DType::Bool,
        }
    }
}

/// What one reduction task needs to know.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct ReduceSpec {
    /// The reduction.
    pub(crate) op: ReduceOp,
    /// Which axes of the input are reduced.
    pub(crate) reduced: Vec<bool>,
    /// Whether reduced axes stay as axes of length 1.
    pub(crate) keepdims: bool,
    /// The result's type.
    pub(crate) dtype: DType,
}

/// The state of a reduction over part of the reduced axes, shaped like the
/// result block with every reduced axis of length 1.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Partial {
    shape: Vec<usize>,
    data: PartialData,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
enum PartialData {
    Float(Vec<f64>),
    Int(Vec<i64>),
    Bool(Vec<bool>),
    Mean { sum: Vec<f64>, n: Vec<f64> },
    Moments { n: Vec<f64>, mean: Vec<f64>, m2: Vec<f64> },
    ArgFloat { value: Vec<f64>, index: Vec<i64> },
    ArgInt { value: Vec<i64>, index: Vec<i64> },
}

impl Partial {
    fn identity(op: ReduceOp, input: DType, shape: Vec<usize>) -> Partial {
        let n: usize = shape.iter().product();
        let float = matches!(input, DType::Float64 | DType::Float32);
        let data = match op {
            ReduceOp::Sum if float => PartialData::Float(vec![0.0; n]),
            ReduceOp::Sum => PartialData::Int(vec![0; n]),
            ReduceOp::Prod if float => PartialData::Float(vec![1.0; n]),
            ReduceOp::Prod => PartialData::Int(vec![1; n]),
            ReduceOp::Min if float => PartialData::Float(vec![f64::INFINITY; n]),
            ReduceOp::Min => PartialData::Int(vec![i64::MAX; n]),
            ReduceOp::Max if float => PartialData::Float(vec![f64::NEG_INFINITY; n]),
            ReduceOp::Max => PartialData::Int(vec![i64::MIN; n]),
            ReduceOp::Mean => PartialData::Mean { sum: vec![0.0; n], n: vec![0.0; n] },
            ReduceOp::Var(_) | ReduceOp::Std(_) => {
                PartialData::Moments { n: vec![0.0; n], mean: vec![0.0; n], m2: vec![0.0; n] }
            }
            ReduceOp::ArgMin | ReduceOp::ArgMax if float => {
                PartialData::ArgFloat { value: vec![f64::NAN; n], index: vec![-1; n] }
            }
            ReduceOp::ArgMin | ReduceOp::ArgMax => PartialData::ArgInt { value: vec![0; n], index: vec![-1; n] },
            ReduceOp::Any => PartialData::Bool(vec![false; n]),
            ReduceOp::All => PartialData::Bool(vec![true; n]),
        };
        Partial { shape, data }
    }
}

/// A run of consecutive values of one block and where they go.
struct Segment {
    /// Position in the block.
    start: usize,
    len: usize,
    /// Position in the partial of the first value.
    position: usize,
    /// All values go to `position` (the innermost axis is reduced), or value
    /// `k` goes to `position + k`.
    folded: bool,
    /// Global index along the reduced axis of the first value (arg reductions).
    index: i64,
}

/// Splits blocks of a chunk into segments that map simply onto its partial.
struct Segments {
    /// Adjacent axes with the same role merged: (extent, reduced).
    dims: Vec<(usize, bool)>,
    /// Stride in the partial of each merged kept axis (0 for reduced).
    strides: Vec<usize>,
    /// Offset of the chunk along the reduced axis, for arg reductions.
    reduced_offset: i64,
}

impl Segments {
    fn new(shape: &[usize], reduced: &[bool], offset: &[usize]) -> Segments {
        let mut dims: Vec<(usize, bool)> = Vec::new();
        for (&n, &r) in shape.iter().zip(reduced) {
            match dims.last_mut() {
                Some((m, lr)) if *lr == r => *m *= n,
                _ => dims.push((n, r)),
            }
        }
        if dims.is_empty() {
            dims.push((1, false));
        }
        let mut strides = vec![0; dims.len()];
        let mut s = 1;
        for (d, &(n, r)) in dims.iter().enumerate().rev() {
            if !r {
                strides[d] = s;
                s *= n;
            }
        }
        let reduced_offset = reduced.iter().position(|&r| r).map_or(0, |a| offset[a] as i64);
        Segments { dims, strides, reduced_offset }
    }

    /// The segments of elements `first..first + len` of the chunk.
    fn each(&self, first: usize, len: usize, mut f: impl FnMut(Segment)) {
        let nd = self.dims.len();
        let last = nd - 1;
        let mut index = vec![0usize; nd];
        let mut rest = first;
        for d in (0..nd).rev() {
            let n = self.dims[d].0.max(1);
            index[d] = rest % n;
            rest /= n;
        }
        let mut pos = 0;
        while pos < len {
            let run = (self.dims[last].0 - index[last]).min(len - pos);
            let position: usize = (0..nd).map(|d| index[d] * self.strides[d]).sum();
            let reduced_axis_index = (0..nd).find(|&d| self.dims[d].1).map_or(0, |d| index[d]);
            f(Segment {
                start: pos,
                len: run,
                position,
                folded: self.dims[last].1,
                index: self.reduced_offset + reduced_axis_index as i64,
            });
            pos += run;
            index[last] += run;
            if index[last] == self.dims[last].0 {
                index[last] = 0;
                for d in (0..last).rev() {
                    index[d] += 1;
                    if index[d] < self.dims[d].0 {
                        break;
                    }
                    index[d] = 0;
                }
            }
        }
    }
}

/// Sums with eight accumulators: two AVX registers of independent adds hide
/// the add latency (one running sum costs about 1 ns per element), and
/// partial sums are more accurate than one long one.
fn sum(values: &[f64]) -> f64 {
    let mut acc = [0.0f64; 8];
    let mut chunks = values.chunks_exact(8);
    for c in &mut chunks {
        for k in 0..8 {
            acc[k] += c[k];
        }
    }
    let tail: f64 = chunks.remainder().iter().sum();
    ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7])) + tail
}

fn min_f(acc: f64, x: f64) -> f64 {
    if x < acc || x.is_nan() { x } else { acc }
}

fn max_f(acc: f64, x: f64) -> f64 {
    if x > acc || x.is_nan() { x } else { acc }
}

/// Whether `x` at `index` replaces the current best (`best`, `at`): the first
/// NaN wins, then the first strictly better value.
fn better_f(op: ReduceOp, x: f64, best: f64, at: i64) -> bool {
    if at < 0 {
        return true;
    }
    if best.is_nan() {
        return false;
    }
    if x.is_nan() {
        return true;
    }
    if op == ReduceOp::ArgMin { x < best } else { x > best }
}

fn better_i(op: ReduceOp, x: i64, best: i64, at: i64) -> bool {
    at < 0 || if op == ReduceOp::ArgMin { x < best } else { x > best }
}

impl Partial {
    fn fold(&mut self, op: ReduceOp, values: &Buf, s: &Segment) {
        let range = s.start..s.start + s.len;
        let p = s.position;
        match (&mut self.data, values) {
            (PartialData::Float(acc), Buf::F(v)) => {
                let v = &v[range];
                match (op, s.folded) {
                    (ReduceOp::Sum, true) => acc[p] += sum(v),
                    (ReduceOp::Sum, false) => acc[p..p + s.len].iter_mut().zip(v).for_each(|(a, x)| *a += x),
                    (ReduceOp::Prod, true) => acc[p] *= v.iter().product::<f64>(),
                    (ReduceOp::Prod, false) => acc[p..p + s.len].iter_mut().zip(v).for_each(|(a, x)| *a *= x),
                    (ReduceOp::Min, true) => acc[p] = v.iter().fold(acc[p], |a, &x| min_f(a, x)),
                    (ReduceOp::Min, false) => acc[p..].iter_mut().zip(v).for_each(|(a, &x)| *a = min_f(*a, x)),
                    (ReduceOp::Max, true) => acc[p] = v.iter().fold(acc[p], |a, &x| max_f(a, x)),
                    (ReduceOp::Max, false) => acc[p..].iter_mut().zip(v).for_each(|(a, &x)| *a = max_f(*a, x)),
                    _ => unreachable!("float partials are sums, products, minima and maxima"),
                }
            }
            (PartialData::Int(acc), values) => {
                let each = |f: &mut dyn FnMut(usize, i64)| match values {
                    Buf::I(v) => v[range.clone()].iter().enumerate().for_each(|(k, &x)| f(k, x)),
                    Buf::B(v) => v[range.clone()].iter().enumerate().for_each(|(k, &x)| f(k, i64::from(x))),
                    Buf::F(_) => unreachable!("integer partials come from integer or boolean values"),
                };
                let folded = s.folded;
                let mut apply = |k: usize, x: i64| {
                    let slot = &mut acc[if folded { p } else { p + k }];
                    *slot = match op {
                        ReduceOp::Sum => slot.wrapping_add(x),
                        ReduceOp::Prod => slot.wrapping_mul(x),
                        ReduceOp::Min => (*slot).min(x),
                        ReduceOp::Max => (*slot).max(x),
                        _ => unreachable!("integer partials are sums, products, minima and maxima"),
                    };
                };
                each(&mut apply);
            }
            (PartialData::Bool(acc), values) => {
                let truth = |k: usize| match values {
                    Buf::B(v) => v[s.start + k],
                    Buf::I(v) => v[s.start + k] != 0,
                    Buf::F(v) => v[s.start + k] != 0.0,
                };
                for k in 0..s.len {
                    let slot = &mut acc[if s.folded { p } else { p + k }];
                    *slot = if op == ReduceOp::Any { *slot | truth(k) } else { *slot & truth(k) };
                }
            }
            (PartialData::Mean { sum: total, n }, values) => {
                let v = as_floats(values, range);
                if s.folded {
                    total[p] += sum(&v);
                    n[p] += s.len as f64;
                } else {
                    for (k, x) in v.iter().enumerate() {
                        total[p + k] += x;
                        n[p + k] += 1.0;
                    }
                }
            }
            (PartialData::Moments { n, mean, m2 }, values) => {
                let v = as_floats(values, range);
                if s.folded {
                    let count = s.len as f64;
                    let m = sum(&v) / count;
                    let q: f64 = v.iter().map(|x| (x - m) * (x - m)).sum();
                    merge_moments((&mut n[p], &mut mean[p], &mut m2[p]), (count, m, q));
                } else {
                    for (k, &x) in v.iter().enumerate() {
                        merge_moments((&mut n[p + k], &mut mean[p + k], &mut m2[p + k]), (1.0, x, 0.0));
                    }
                }
            }
            (PartialData::ArgFloat { value, index }, Buf::F(v)) => {
                for (k, &x) in v[range].iter().enumerate() {
                    let (slot, at) = if s.folded { (p, s.index + k as i64) } else { (p + k, s.index) };
                    if better_f(op, x, value[slot], index[slot]) {
                        value[slot] = x;
                        index[slot] = at;
                    }
                }
            }
            (PartialData::ArgInt { value, index }, values) => {
                for k in 0..s.len {
                    let x = match values {
                        Buf::I(v) => v[s.start + k],
                        Buf::B(v) => i64::from(v[s.start + k]),
                        Buf::F(_) => unreachable!("integer arg partials come from integer values"),
                    };
                    let (slot, at) = if s.folded { (p, s.index + k as i64) } else { (p + k, s.index) };
                    if better_i(op, x, value[slot], index[slot]) {
                        value[slot] = x;
                        index[slot] = at;
                    }
                }
            }
            _ => unreachable!("partial kinds follow the values' kind"),
        }
    }

    fn merge(&mut self, op: ReduceOp, other: &Partial) -> Result<(), KernelError> {
        if self.shape != other.shape {
            return Err(KernelError(format!("partials of shapes {:?} and {:?}", self.shape, other.shape)));
        }
        match (&mut self.data, &other.data) {
            (PartialData::Float(a), PartialData::Float(b)) => {
                for (a, &b) in a.iter_mut().zip(b) {
                    *a = match op {
                        ReduceOp::Sum => *a + b,
                        ReduceOp::Prod => *a * b,
                        ReduceOp::Min => min_f(*a, b),
                        _ => max_f(*a, b),
                    }
                }
            }
            (PartialData::Int(a), PartialData::Int(b)) => {
                for (a, &b) in a.iter_mut().zip(b) {
                    *a = match op {
                        ReduceOp::Sum => a.wrapping_add(b),
                        ReduceOp::Prod => a.wrapping_mul(b),
                        ReduceOp::Min => (*a).min(b),
                        _ => (*a).max(b),
                    }
                }
            }
            (PartialData::Bool(a), PartialData::Bool(b)) => {
                for (a, &b) in a.iter_mut().zip(b) {
                    *a = if op == ReduceOp::Any { *a | b } else { *a & b };
                }
            }
            (PartialData::Mean { sum: s, n }, PartialData::Mean { sum: s2, n: n2 }) => {
                s.iter_mut().zip(s2).for_each(|(a, b)| *a += b);
                n.iter_mut().zip(n2).for_each(|(a, b)| *a += b);
            }
            (PartialData::Moments { n, mean, m2 }, PartialData::Moments { n: n2, mean: mean2, m2: q2 }) => {
                for i in 0..n.len() {
                    merge_moments((&mut n[i], &mut mean[i], &mut m2[i]), (n2[i], mean2[i], q2[i]));
                }
            }
            (PartialData::ArgFloat { value, index }, PartialData::ArgFloat { value: v2, index: i2 }) => {
                for i in 0..value.len() {
                    // Partials are merged in axis order, but an earlier index
                    // wins a tie whichever side it is on.
                    let take = i2[i] >= 0
                        && (better_f(op, v2[i], value[i], index[i])
                            || (v2[i] == value[i] || v2[i].is_nan() && value[i].is_nan()) && i2[i] < index[i]);
                    if take {
                        value[i] = v2[i];
                        index[i] = i2[i];
                    }
                }
            }
            (PartialData::ArgInt { value, index }, PartialData::ArgInt { value: v2, index: i2 }) => {
                for i in 0..value.len() {
                    let take = i2[i] >= 0
                        && (better_i(op, v2[i], value[i], index[i]) || v2[i] == value[i] && i2[i] < index[i]);
                    if take {
                        value[i] = v2[i];
                        index[i] = i2[i];
                    }
                }
            }
            _ => return Err(KernelError("partials of different reductions".into())),
        }
        Ok(())
    }
}

fn as_floats(values: &Buf, range: std::ops::Range<usize>) -> std::borrow::Cow<'_, [f64]> {
    match values {
        Buf::F(v) => std::borrow::Cow::Borrowed(&v[range]),
        Buf::I(v) => v[range].iter().map(|&x| x as f64).collect(),
        Buf::B(v) => v[range].iter().map(|&x| if x { 1.0 } else { 0.0 }).collect(),
    }
}

/// Chan et al.'s parallel update of (count, mean, centred sum of squares).
fn merge_moments(into: (&mut f64, &mut f64, &mut f64), other: (f64, f64, f64)) {
    let (n, mean, m2) = into;
    let (nb, mb, qb) = other;
    if nb == 0.0 {
        return;
    }
    let total = *n + nb;
    let delta = mb - *mean;
    *mean += delta * nb / total;
    *m2 += qb + delta * delta * *n * nb / total;
    *n = total;
}

/// The partial of one chunk: `program` evaluated over `at` and folded.
///
/// # Errors
/// When the inputs do not fit the program.
pub(crate) fn partial(program: &Program, at: &At, spec: &ReduceSpec, inputs: &[Chunk]) -> Result<Partial, KernelError> {
    let shape: Vec<usize> = at.shape.iter().zip(&spec.reduced).map(|(&n, &r)| if r { 1 } else { n }).collect();
    let mut state = Partial::identity(spec.op, program.dtype(), shape);
    let segments = Segments::new(&at.shape, &spec.reduced, &at.offset);
    run(program, at, inputs, |first, values, len| {
        segments.each(first, len, |s| state.fold(spec.op, values, &s));
    })?;
    Ok(state)
}

/// Several partials of the same result block merged into one.
///
/// # Errors
/// When the partials do not belong together.
pub(crate) fn combine(spec: &ReduceSpec, parts: Vec<Partial>) -> Result<Partial, KernelError> {
    let mut parts = parts.into_iter();
    let mut acc = parts.next().ok_or_else(|| KernelError("nothing to combine".into()))?;
    for p in parts {
        acc.merge(spec.op, &p)?;
    }
    Ok(acc)
}

/// The result block from the partials of all its chunks.
///
/// # Errors
/// When the partials do not belong together.
pub(crate) fn finish(spec: &ReduceSpec, parts: Vec<Partial>) -> Result<Chunk, KernelError> {
    let Partial { shape, data } = combine(spec, parts)?;
    let out_shape: Vec<usize> = if spec.keepdims {
        shape.clone()
    } else {
        shape.iter().zip(&spec.reduced).filter(|(_, r)| !**r).map(|(&n, _)| n).collect()
    };
    let dim = ndarray::IxDyn(&out_shape);
    let shaped = |e: ndarray::ShapeError| KernelError(format!("result block of shape {out_shape:?}: {e}"));
    let chunk = match data {
        PartialData::Float(v) => match spec.dtype {
            DType::Float32 => {
                Chunk::F32(ndarray::ArrayD::from_shape_vec(dim, v.iter().map(|&x| x as f32).collect()).map_err(shaped)?)
            }
            _ => Chunk::F64(ndarray::ArrayD::from_shape_vec(dim, v).map_err(shaped)?),
        },
        PartialData::Int(v) => match spec.dtype {
            DType::Int32 => {
                Chunk::I32(ndarray::ArrayD::from_shape_vec(dim, v.iter().map(|&x| x as i32).collect()).map_err(shaped)?)
            }
            DType::UInt8 => {
                Chunk::U8(ndarray::ArrayD::from_shape_vec(dim, v.iter().map(|&x| x as u8).collect()).map_err(shaped)?)
            }
            DType::Bool => {
                Chunk::Bool(ndarray::ArrayD::from_shape_vec(dim, v.iter().map(|&x| x != 0).collect()).map_err(shaped)?)
            }
            _ => Chunk::I64(ndarray::ArrayD::from_shape_vec(dim, v).map_err(shaped)?),
        },
        PartialData::Bool(v) => Chunk::Bool(ndarray::ArrayD::from_shape_vec(dim, v).map_err(shaped)?),
        PartialData::Mean { sum, n } => Chunk::F64(
            ndarray::ArrayD::from_shape_vec(dim, sum.iter().zip(&n).map(|(s, n)| s / n).collect()).map_err(shaped)?,
        ),
        PartialData::Moments { n, m2, .. } => {
            let ddof = match spec.op {
                ReduceOp::Var(d) | ReduceOp::Std(d) => f64::from(d),
                _ => 0.0,
            };
            let root = matches!(spec.op, ReduceOp::Std(_));
            let values = n
                .iter()
                .zip(&m2)
                .map(|(&n, &q)| {
                    let var = if n - ddof > 0.0 { q / (n - ddof) } else { f64::NAN };
                    if root { var.sqrt() } else { var }
                })
                .collect();
            Chunk::F64(ndarray::ArrayD::from_shape_vec(dim, values).map_err(shaped)?)
        }
        PartialData::ArgFloat { index, .. } | PartialData::ArgInt { index, .. } => {
            Chunk::I64(ndarray::ArrayD::from_shape_vec(dim, index).map_err(shaped)?)
        }
    };
    Ok(chunk)
}
