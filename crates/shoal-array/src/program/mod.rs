//! Fused blockwise kernels: a small program per chunk, run block by block.
//!
//! A chain of elementwise operations (random → arcsin → add → …) becomes one
//! [`Program`]: instructions in dependency order, each reading earlier
//! instructions' results. One task evaluates it over its chunk in blocks of
//! [`BLOCK`] elements, so every intermediate lives in a buffer that stays in
//! cache and no temporary array is ever made (numexpr's trick). What the last
//! instruction gives goes to a sink: written into the output chunk, or folded
//! straight into a partial reduction.

mod ir;

use crate::chunk::Chunk;
use crate::dtype::{DType, Kind, Scalar};
use crate::{rng, vmath};

pub(crate) use ir::{At, BinaryOp, Dist, Instr, Leaf, Program, UnaryOp};

/// Elements per block: eight instructions' buffers of 8 KiB stay in L2.
pub(crate) const BLOCK: usize = 1024;

/// One block of values in its wide kind.
#[derive(Debug)]
pub(crate) enum Buf {
    F(Vec<f64>),
    I(Vec<i64>),
    B(Vec<bool>),
}

impl Buf {
    fn new(kind: Kind) -> Buf {
        match kind {
            Kind::Float => Buf::F(vec![0.0; BLOCK]),
            Kind::Int => Buf::I(vec![0; BLOCK]),
            Kind::Bool => Buf::B(vec![false; BLOCK]),
        }
    }
}

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

/// Writes blocks of wide values into a chunk's own type.
enum Writer<'a> {
    F64(&'a mut [f64]),
    F32(&'a mut [f32]),
    I64(&'a mut [i64]),
    I32(&'a mut [i32]),
    U8(&'a mut [u8]),
    Bool(&'a mut [bool]),
}

impl<'a> Writer<'a> {
    fn new(chunk: &'a mut Chunk) -> Result<Writer<'a>, KernelError> {
        let missing = || KernelError("output chunk is not contiguous".into());
        Ok(match chunk {
            Chunk::F64(d) => Writer::F64(d.as_slice_mut().ok_or_else(missing)?),
            Chunk::F32(d) => Writer::F32(d.as_slice_mut().ok_or_else(missing)?),
            Chunk::I64(d) => Writer::I64(d.as_slice_mut().ok_or_else(missing)?),
            Chunk::I32(d) => Writer::I32(d.as_slice_mut().ok_or_else(missing)?),
            Chunk::U8(d) => Writer::U8(d.as_slice_mut().ok_or_else(missing)?),
            Chunk::Bool(d) => Writer::Bool(d.as_slice_mut().ok_or_else(missing)?),
        })
    }

    fn write(&mut self, first: usize, values: &Buf, len: usize) {
        let range = first..first + len;
        match (self, values) {
            (Writer::F64(o), Buf::F(v)) => o[range].copy_from_slice(&v[..len]),
            (Writer::F32(o), Buf::F(v)) => o[range].iter_mut().zip(v).for_each(|(o, v)| *o = *v as f32),
            (Writer::I64(o), Buf::I(v)) => o[range].copy_from_slice(&v[..len]),
            (Writer::I32(o), Buf::I(v)) => o[range].iter_mut().zip(v).for_each(|(o, v)| *o = *v as i32),
            (Writer::U8(o), Buf::I(v)) => o[range].iter_mut().zip(v).for_each(|(o, v)| *o = *v as u8),
            (Writer::Bool(o), Buf::B(v)) => o[range].copy_from_slice(&v[..len]),
            _ => unreachable!("a program's result buffer has the kind of its type"),
        }
    }
}

/// Per leaf: where its values sit, as an affine map from the chunk's
/// element index to an address (a counter, or an offset into an input).
#[derive(Default, PartialEq)]
struct Layout {
    base: u64,
    strides: Vec<u64>,
    /// The input is laid out exactly like the output: read it as a slice.
    contiguous: bool,
}

fn row_major(shape: &[usize]) -> Vec<u64> {
    let mut strides = vec![0u64; shape.len()];
    let mut s = 1u64;
    for (d, &n) in shape.iter().enumerate().rev() {
        strides[d] = s;
        s *= n as u64;
    }
    strides
}

fn prepare(program: &Program, at: &At, inputs: &[Chunk]) -> Result<Vec<Layout>, KernelError> {
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
struct RowPattern {
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
struct Addresses {
    buf: Vec<u64>,
    of: Option<usize>,
    /// By leaf: leaves of other strides in one program would otherwise
    /// rebuild a shared pattern at every block.
    patterns: Vec<RowPattern>,
}

impl Addresses {
    /// The addresses of elements `first..first + len` under leaf `leaf`'s layout.
    fn get(&mut self, shape: &[usize], layouts: &[Layout], leaf: usize, first: usize, len: usize) -> &[u64] {
        if self.of.is_none_or(|held| layouts[held] != layouts[leaf]) {
            fill_addresses(shape, &layouts[leaf], first, &mut self.buf[..len], &mut self.patterns[leaf]);
            self.of = Some(leaf);
        }
        &self.buf[..len]
    }
}

#[allow(clippy::too_many_arguments)]
fn fill_leaf(
    leaf: &Leaf,
    (layouts, slot): (&[Layout], usize),
    inputs: &[Chunk],
    at: &At,
    first: usize,
    len: usize,
    addresses: &mut Addresses,
    out: &mut Buf,
) -> Result<(), KernelError> {
    let layout = &layouts[slot];
    match (leaf, out) {
        (Leaf::Full(Scalar::Float(v)), Buf::F(o)) => o[..len].fill(*v),
        (Leaf::Full(Scalar::Int(v)), Buf::I(o)) => o[..len].fill(*v),
        (Leaf::Full(Scalar::Bool(v)), Buf::B(o)) => o[..len].fill(*v),
        (Leaf::Random { seed, dist, .. }, out) => {
            let addresses = addresses.get(&at.shape, layouts, slot, first, len);
            match (dist, out) {
                (Dist::Uniform { low, high }, Buf::F(o)) => {
                    rng::uniform(*seed, addresses, &mut o[..len]);
                    if *low != 0.0 || *high != 1.0 {
                        let width = high - low;
                        o[..len].iter_mut().for_each(|v| *v = low + width * *v);
                    }
                }
                (Dist::Normal { mean, std }, Buf::F(o)) => {
                    rng::normal(*seed, addresses, &mut o[..len]);
                    o[..len].iter_mut().for_each(|v| *v = mean + std * *v);
                }
                (Dist::Integers { low, high }, Buf::I(o)) => {
                    let mut bits = vec![0u64; len];
                    rng::bits(*seed, addresses, &mut bits);
                    let width = high.wrapping_sub(*low) as u64 as u128;
                    for (o, b) in o.iter_mut().zip(bits) {
                        *o = low.wrapping_add(((b as u128 * width) >> 64) as i64);
                    }
                }
                _ => return Err(KernelError("random leaf of the wrong type".into())),
            }
        }
        (Leaf::Linear { start, step, last, .. }, out) => {
            let addresses = addresses.get(&at.shape, layouts, slot, first, len);
            match (start, step, out) {
                (Scalar::Float(start), Scalar::Float(step), Buf::F(o)) => {
                    for (o, &i) in o.iter_mut().zip(addresses.iter()) {
                        *o = start + step * i as f64;
                    }
                    if let Some((at_index, value)) = last {
                        for (o, &i) in o.iter_mut().zip(addresses.iter()) {
                            if i as usize == *at_index {
                                *o = *value;
                            }
                        }
                    }
                }
                (Scalar::Int(start), Scalar::Int(step), Buf::I(o)) => {
                    for (o, &i) in o.iter_mut().zip(addresses.iter()) {
                        *o = start.wrapping_add(step.wrapping_mul(i as i64));
                    }
                }
                _ => return Err(KernelError("linear leaf of the wrong type".into())),
            }
        }
        (Leaf::Input { index, .. }, out) => {
            let chunk = &inputs[*index as usize];
            if layout.contiguous {
                read_slice(chunk, first, len, out)?;
            } else {
                gather(chunk, addresses.get(&at.shape, layouts, slot, first, len), out)?;
            }
        }
        (Leaf::Full(_), _) => return Err(KernelError("constant of the wrong type".into())),
    }
    Ok(())
}

fn read_slice(chunk: &Chunk, first: usize, len: usize, out: &mut Buf) -> Result<(), KernelError> {
    let range = first..first + len;
    let not_contiguous = || KernelError("input chunk is not contiguous".into());
    match (chunk, out) {
        (Chunk::F64(d), Buf::F(o)) => o[..len].copy_from_slice(&d.as_slice().ok_or_else(not_contiguous)?[range]),
        (Chunk::F32(d), Buf::F(o)) => widen(&d.as_slice().ok_or_else(not_contiguous)?[range], o, |v| v as f64),
        (Chunk::I64(d), Buf::I(o)) => o[..len].copy_from_slice(&d.as_slice().ok_or_else(not_contiguous)?[range]),
        (Chunk::I32(d), Buf::I(o)) => widen(&d.as_slice().ok_or_else(not_contiguous)?[range], o, |v| v as i64),
        (Chunk::U8(d), Buf::I(o)) => widen(&d.as_slice().ok_or_else(not_contiguous)?[range], o, |v| v as i64),
        (Chunk::Bool(d), Buf::B(o)) => o[..len].copy_from_slice(&d.as_slice().ok_or_else(not_contiguous)?[range]),
        (c, _) => return Err(KernelError(format!("input chunk of type {} where another was expected", c.dtype()))),
    }
    Ok(())
}

fn widen<S: Copy, W>(src: &[S], out: &mut [W], f: impl Fn(S) -> W) {
    out.iter_mut().zip(src).for_each(|(o, &s)| *o = f(s));
}

fn gather(chunk: &Chunk, addresses: &[u64], out: &mut Buf) -> Result<(), KernelError> {
    fn pick<S: Copy, W>(src: &[S], addresses: &[u64], out: &mut [W], f: impl Fn(S) -> W) {
        out.iter_mut().zip(addresses).for_each(|(o, &a)| *o = f(src[a as usize]));
    }
    let not_contiguous = || KernelError("input chunk is not contiguous".into());
    match (chunk, out) {
        (Chunk::F64(d), Buf::F(o)) => pick(d.as_slice().ok_or_else(not_contiguous)?, addresses, o, |v| v),
        (Chunk::F32(d), Buf::F(o)) => pick(d.as_slice().ok_or_else(not_contiguous)?, addresses, o, |v| v as f64),
        (Chunk::I64(d), Buf::I(o)) => pick(d.as_slice().ok_or_else(not_contiguous)?, addresses, o, |v| v),
        (Chunk::I32(d), Buf::I(o)) => pick(d.as_slice().ok_or_else(not_contiguous)?, addresses, o, |v| v as i64),
        (Chunk::U8(d), Buf::I(o)) => pick(d.as_slice().ok_or_else(not_contiguous)?, addresses, o, |v| v as i64),
        (Chunk::Bool(d), Buf::B(o)) => pick(d.as_slice().ok_or_else(not_contiguous)?, addresses, o, |v| v),
        (c, _) => return Err(KernelError(format!("input chunk of type {} where another was expected", c.dtype()))),
    }
    Ok(())
}

/// Rounds wide values to the instruction's own type.
fn narrow(buf: &mut Buf, dtype: DType, len: usize) {
    match (dtype, buf) {
        (DType::Float32, Buf::F(v)) => v[..len].iter_mut().for_each(|x| *x = *x as f32 as f64),
        (DType::Int32, Buf::I(v)) => v[..len].iter_mut().for_each(|x| *x = *x as i32 as i64),
        (DType::UInt8, Buf::I(v)) => v[..len].iter_mut().for_each(|x| *x = *x as u8 as i64),
        _ => {}
    }
}

fn map_f(a: &[f64], o: &mut [f64], f: impl Fn(f64) -> f64) {
    o.iter_mut().zip(a).for_each(|(o, &a)| *o = f(a));
}

fn unary(op: UnaryOp, a: &Buf, out: &mut Buf, len: usize) -> Result<(), KernelError> {
    use UnaryOp::*;
    match (a, out) {
        (Buf::F(a), Buf::F(o)) => {
            let (a, o) = (&a[..len], &mut o[..len]);
            match op {
                Asin => vmath::asin(a, o),
                Acos => vmath::acos(a, o),
                Neg => map_f(a, o, |x| -x),
                Abs => map_f(a, o, f64::abs),
                Sign => map_f(a, o, |x| {
                    if x > 0.0 {
                        1.0
                    } else if x < 0.0 {
                        -1.0
                    } else {
                        x
                    }
                }),
                Sqrt => map_f(a, o, f64::sqrt),
                Cbrt => map_f(a, o, f64::cbrt),
                Exp => vmath::exp(a, o),
                Exp2 => map_f(a, o, f64::exp2),
                Expm1 => map_f(a, o, f64::exp_m1),
                Ln => vmath::ln(a, o),
                Log2 => map_f(a, o, f64::log2),
                Log10 => map_f(a, o, f64::log10),
                Log1p => map_f(a, o, f64::ln_1p),
                Sin => vmath::sin(a, o),
                Cos => vmath::cos(a, o),
                Tan => map_f(a, o, f64::tan),
                Atan => map_f(a, o, f64::atan),
                Sinh => map_f(a, o, f64::sinh),
                Cosh => map_f(a, o, f64::cosh),
                Tanh => map_f(a, o, f64::tanh),
                Floor => map_f(a, o, f64::floor),
                Ceil => map_f(a, o, f64::ceil),
                Round => map_f(a, o, f64::round_ties_even),
                Not | IsNan | IsFinite => return Err(mismatch(op.name())),
            }
        }
        (Buf::F(a), Buf::B(o)) => {
            let f: fn(f64) -> bool = match op {
                IsNan => f64::is_nan,
                IsFinite => f64::is_finite,
                _ => return Err(mismatch(op.name())),
            };
            o[..len].iter_mut().zip(&a[..len]).for_each(|(o, &a)| *o = f(a));
        }
        (Buf::I(a), Buf::I(o)) => {
            let f: fn(i64) -> i64 = match op {
                Neg => i64::wrapping_neg,
                Not => |x| !x,
                Abs => i64::wrapping_abs,
                Sign => i64::signum,
                Floor | Ceil | Round => |x| x,
                _ => return Err(mismatch(op.name())),
            };
            o[..len].iter_mut().zip(&a[..len]).for_each(|(o, &a)| *o = f(a));
        }
        (Buf::I(_), Buf::B(o)) => match op {
            IsNan => o[..len].fill(false),
            IsFinite => o[..len].fill(true),
            _ => return Err(mismatch(op.name())),
        },
        (Buf::B(a), Buf::B(o)) => match op {
            Not => o[..len].iter_mut().zip(&a[..len]).for_each(|(o, &a)| *o = !a),
            IsNan => o[..len].fill(false),
            IsFinite => o[..len].fill(true),
            _ => return Err(mismatch(op.name())),
        },
        _ => return Err(mismatch(op.name())),
    }
    Ok(())
}

fn mismatch(op: &str) -> KernelError {
    KernelError(format!("{op} applied to values of an unsupported type"))
}

fn zip_into<A: Copy, B: Copy, O>(a: &[A], b: &[B], o: &mut [O], f: impl Fn(A, B) -> O) {
    o.iter_mut().zip(a.iter().zip(b)).for_each(|(o, (&a, &b))| *o = f(a, b));
}

fn binary(op: BinaryOp, a: &Buf, b: &Buf, out: &mut Buf, len: usize) -> Result<(), KernelError> {
    use BinaryOp::*;
    match (a, b, out) {
        (Buf::F(a), Buf::F(b), Buf::F(o)) => {
            let (a, b, o) = (&a[..len], &b[..len], &mut o[..len]);
            match op {
                Add => zip_into(a, b, o, |a, b| a + b),
                Sub => zip_into(a, b, o, |a, b| a - b),
                Mul => zip_into(a, b, o, |a, b| a * b),
                Div => zip_into(a, b, o, |a, b| a / b),
                // NumPy's remainder takes the divisor's sign.
                Rem => zip_into(a, b, o, |a, b| {
                    let r = a % b;
                    if r != 0.0 && (r < 0.0) != (b < 0.0) { r + b } else { r }
                }),
                Pow => zip_into(a, b, o, f64::powf),
                Atan2 => zip_into(a, b, o, f64::atan2),
                Hypot => zip_into(a, b, o, f64::hypot),
                // NaN wins, as in NumPy.
                Minimum => zip_into(a, b, o, |a, b| if a.is_nan() || b.is_nan() { f64::NAN } else { a.min(b) }),
                Maximum => zip_into(a, b, o, |a, b| if a.is_nan() || b.is_nan() { f64::NAN } else { a.max(b) }),
                _ => return Err(mismatch(op.name())),
            }
        }
        (Buf::F(a), Buf::F(b), Buf::B(o)) => {
            let f = comparison::<f64>(op).ok_or_else(|| mismatch(op.name()))?;
            zip_into(&a[..len], &b[..len], &mut o[..len], f);
        }
        (Buf::I(a), Buf::I(b), Buf::I(o)) => {
            let f: fn(i64, i64) -> i64 = match op {
                Add => i64::wrapping_add,
                Sub => i64::wrapping_sub,
                Mul => i64::wrapping_mul,
                Div => floor_div,
                Rem => floor_rem,
                Pow => |a, b| if b < 0 { 0 } else { a.wrapping_pow(b.min(u32::MAX as i64) as u32) },
                Minimum => i64::min,
                Maximum => i64::max,
                And => |a, b| a & b,
                Or => |a, b| a | b,
                Xor => |a, b| a ^ b,
                Atan2 | Hypot => return Err(mismatch(op.name())),
                _ => return Err(mismatch(op.name())),
            };
            zip_into(&a[..len], &b[..len], &mut o[..len], f);
        }
        (Buf::I(a), Buf::I(b), Buf::B(o)) => {
            let f = comparison::<i64>(op).ok_or_else(|| mismatch(op.name()))?;
            zip_into(&a[..len], &b[..len], &mut o[..len], f);
        }
        (Buf::B(a), Buf::B(b), Buf::B(o)) => {
            let f: fn(bool, bool) -> bool = match op {
                And | Minimum | Mul => |a, b| a & b,
                Or | Maximum | Add => |a, b| a | b,
                Xor | Ne => |a, b| a ^ b,
                Eq => |a, b| a == b,
                Lt => |a, b| !a & b,
                Le => |a, b| !a | b,
                Gt => |a, b| a & !b,
                Ge => |a, b| a | !b,
                _ => return Err(mismatch(op.name())),
            };
            zip_into(&a[..len], &b[..len], &mut o[..len], f);
        }
        _ => return Err(mismatch(op.name())),
    }
    Ok(())
}

/// The comparison `op` stands for, if it is one.
fn comparison<T: PartialOrd>(op: BinaryOp) -> Option<fn(T, T) -> bool> {
    use BinaryOp::*;
    Some(match op {
        Eq => |a, b| a == b,
        Ne => |a, b| a != b,
        Lt => |a, b| a < b,
        Le => |a, b| a <= b,
        Gt => |a, b| a > b,
        Ge => |a, b| a >= b,
        _ => return None,
    })
}

fn select(c: &Buf, a: &Buf, b: &Buf, out: &mut Buf, len: usize) -> Result<(), KernelError> {
    let Buf::B(c) = c else { return Err(mismatch("where")) };
    let c = &c[..len];
    fn pick<T: Copy>(c: &[bool], a: &[T], b: &[T], o: &mut [T]) {
        for (i, o) in o.iter_mut().enumerate() {
            *o = if c[i] { a[i] } else { b[i] };
        }
    }
    match (a, b, out) {
        (Buf::F(a), Buf::F(b), Buf::F(o)) => pick(c, a, b, &mut o[..len]),
        (Buf::I(a), Buf::I(b), Buf::I(o)) => pick(c, a, b, &mut o[..len]),
        (Buf::B(a), Buf::B(b), Buf::B(o)) => pick(c, a, b, &mut o[..len]),
        _ => return Err(mismatch("where")),
    }
    Ok(())
}

fn cast(a: &Buf, out: &mut Buf, len: usize) {
    match (a, out) {
        (Buf::F(a), Buf::F(o)) => o[..len].copy_from_slice(&a[..len]),
        (Buf::I(a), Buf::I(o)) => o[..len].copy_from_slice(&a[..len]),
        (Buf::B(a), Buf::B(o)) => o[..len].copy_from_slice(&a[..len]),
        (Buf::F(a), Buf::I(o)) => widen(&a[..len], o, |v| v as i64),
        (Buf::F(a), Buf::B(o)) => widen(&a[..len], o, |v| v != 0.0),
        (Buf::I(a), Buf::F(o)) => widen(&a[..len], o, |v| v as f64),
        (Buf::I(a), Buf::B(o)) => widen(&a[..len], o, |v| v != 0),
        (Buf::B(a), Buf::F(o)) => widen(&a[..len], o, |v| if v { 1.0 } else { 0.0 }),
        (Buf::B(a), Buf::I(o)) => widen(&a[..len], o, i64::from),
    }
}

/// NumPy's `floor_divide` on integers: rounds toward negative infinity;
/// division by zero gives 0.
fn floor_div(a: i64, b: i64) -> i64 {
    if b == 0 {
        return 0;
    }
    let q = a.wrapping_div(b);
    if a.wrapping_rem(b) != 0 && ((a < 0) != (b < 0)) { q - 1 } else { q }
}

/// NumPy's `remainder` on integers: the sign of the divisor; by zero gives 0.
fn floor_rem(a: i64, b: i64) -> i64 {
    if b == 0 {
        return 0;
    }
    let r = a.wrapping_rem(b);
    if r != 0 && ((r < 0) != (b < 0)) { r + b } else { r }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

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
