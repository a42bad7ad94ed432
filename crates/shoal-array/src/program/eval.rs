//! What each instruction does to a block: filling leaves, the elementwise
//! functions, and writing the result into a chunk.
//!
//! A block holds its values wide, in a [`Buf`] of `f64`, `i64` or `bool`,
//! whatever the instruction's own type: each operation then has one loop
//! per kind rather than one per type, and [`narrow`] rounds (or wraps)
//! every result back to the instruction's type so narrow types keep their
//! range at each step. A leaf reads its input chunk as a slice when it is
//! laid out like the output, and gathers through the addresses of
//! `addressing` otherwise; [`Writer`] stores the last result in the output
//! chunk's own type.
//!
//! The loops over a block are here, in generic helpers (`map_f`,
//! `zip_into`, `widen`) that the compiler specialises for each function
//! they are given; the vectorised transcendental functions are in `vmath`,
//! the counter-based random numbers in `rng`.

use super::addressing::{Addresses, Layout};
use super::ir::{At, BinaryOp, Dist, Leaf, UnaryOp};
use super::{BLOCK, KernelError};
use crate::chunk::Chunk;
use crate::dtype::{DType, Kind, Scalar};
use crate::{rng, vmath};

/// One block of values in its wide kind.
#[derive(Debug)]
pub(crate) enum Buf {
    F(Vec<f64>),
    I(Vec<i64>),
    B(Vec<bool>),
}

impl Buf {
    pub(super) fn new(kind: Kind) -> Buf {
        match kind {
            Kind::Float => Buf::F(vec![0.0; BLOCK]),
            Kind::Int => Buf::I(vec![0; BLOCK]),
            Kind::Bool => Buf::B(vec![false; BLOCK]),
        }
    }
}

/// Writes blocks of wide values into a chunk's own type.
pub(super) enum Writer<'a> {
    F64(&'a mut [f64]),
    F32(&'a mut [f32]),
    I64(&'a mut [i64]),
    I32(&'a mut [i32]),
    U8(&'a mut [u8]),
    Bool(&'a mut [bool]),
}

impl<'a> Writer<'a> {
    pub(super) fn new(chunk: &'a mut Chunk) -> Result<Writer<'a>, KernelError> {
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

    pub(super) fn write(&mut self, first: usize, values: &Buf, len: usize) {
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

#[allow(clippy::too_many_arguments)]
pub(super) fn fill_leaf(
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
pub(super) fn narrow(buf: &mut Buf, dtype: DType, len: usize) {
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

pub(super) fn unary(op: UnaryOp, a: &Buf, out: &mut Buf, len: usize) -> Result<(), KernelError> {
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

pub(super) fn binary(op: BinaryOp, a: &Buf, b: &Buf, out: &mut Buf, len: usize) -> Result<(), KernelError> {
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

pub(super) fn select(c: &Buf, a: &Buf, b: &Buf, out: &mut Buf, len: usize) -> Result<(), KernelError> {
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

pub(super) fn cast(a: &Buf, out: &mut Buf, len: usize) {
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
