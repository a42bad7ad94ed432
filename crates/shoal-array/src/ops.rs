//! Elementwise operations with NumPy broadcasting, and reductions.

use std::sync::Arc;

use crate::array::Array;
use crate::dtype::{Bits, DType, Element, Float, Number, Scalar};
use crate::error::ArrayError;
use crate::node::{Node, Op, broadcast_shapes};
use crate::program::{BinaryOp, Leaf, UnaryOp};
use crate::reduce::{ReduceOp, ReduceSpec};
use crate::structure::Structure;

/// Something that can stand where an array of `T` is expected: an array, or
/// a single value broadcast everywhere.
pub trait Operand<T: Element> {
    /// The graph node it stands for.
    ///
    /// # Errors
    /// The error an array operand carries.
    #[doc(hidden)]
    fn into_node(self) -> Result<NodeRef, ArrayError>;
}

/// A handle to a graph node; only this crate can look inside.
#[doc(hidden)]
pub struct NodeRef(pub(crate) Arc<Node>);

impl<T: Element> Operand<T> for &Array<T> {
    fn into_node(self) -> Result<NodeRef, ArrayError> {
        self.node().cloned().map(NodeRef)
    }
}

impl<T: Element> Operand<T> for Array<T> {
    fn into_node(self) -> Result<NodeRef, ArrayError> {
        self.node().cloned().map(NodeRef)
    }
}

impl<T: Element> Operand<T> for T {
    fn into_node(self) -> Result<NodeRef, ArrayError> {
        Ok(NodeRef(scalar_node(self.to_scalar(), T::DTYPE)))
    }
}

/// A 0-d array holding one value.
pub(crate) fn scalar_node(value: Scalar, dtype: DType) -> Arc<Node> {
    Node::new(Op::Source(Leaf::Full(value)), vec![], vec![], dtype)
}

pub(crate) fn unary_node(op: UnaryOp, a: &Arc<Node>) -> Arc<Node> {
    let dtype = if op.is_predicate() { DType::Bool } else { a.dtype };
    Node::new(Op::Unary(op, a.clone()), a.shape.clone(), a.chunks.clone(), dtype)
}

pub(crate) fn cast_node(a: &Arc<Node>, dtype: DType) -> Arc<Node> {
    if a.dtype == dtype {
        return a.clone();
    }
    Node::new(Op::Cast(a.clone()), a.shape.clone(), a.chunks.clone(), dtype)
}

/// The node `a` with its chunks along each axis set as given (no layer when
/// they already are).
pub(crate) fn rechunk_node(a: &Arc<Node>, chunks: Vec<Vec<usize>>) -> Arc<Node> {
    if a.chunks == chunks {
        return a.clone();
    }
    Node::new(
        Op::Structure { inputs: vec![a.clone()], structure: Structure::Rechunk },
        a.shape.clone(),
        chunks,
        a.dtype,
    )
}

/// Operands broadcast together: the result's shape and chunks, and the
/// operands rechunked to agree.
struct Broadcast {
    shape: Vec<usize>,
    chunks: Vec<Vec<usize>>,
    aligned: Vec<Arc<Node>>,
}

/// Broadcasts operands; where they disagree on chunks the first operand's win.
fn broadcast(operation: &'static str, nodes: &[&Arc<Node>]) -> Result<Broadcast, ArrayError> {
    let mut shape: Vec<usize> = Vec::new();
    for n in nodes {
        shape = broadcast_shapes(operation, &shape, &n.shape)?;
    }
    let ndim = shape.len();
    let mut chunks: Vec<Option<Vec<usize>>> = vec![None; ndim];
    for n in nodes {
        let lead = ndim - n.ndim();
        for (j, c) in n.chunks.iter().enumerate() {
            if n.shape[j] != 1 && chunks[j + lead].is_none() {
                chunks[j + lead] = Some(c.clone());
            }
        }
    }
    let chunks: Vec<Vec<usize>> = chunks.into_iter().zip(&shape).map(|(c, &n)| c.unwrap_or_else(|| vec![n])).collect();
    let aligned = nodes
        .iter()
        .map(|n| {
            let lead = ndim - n.ndim();
            let want: Vec<Vec<usize>> = (0..n.ndim())
                .map(|j| if n.shape[j] == 1 { n.chunks[j].clone() } else { chunks[j + lead].clone() })
                .collect();
            rechunk_node(n, want)
        })
        .collect();
    Ok(Broadcast { shape, chunks, aligned })
}

pub(crate) fn binary_node(op: BinaryOp, a: &Arc<Node>, b: &Arc<Node>) -> Result<Arc<Node>, ArrayError> {
    let Broadcast { shape, chunks, aligned } = broadcast(op.name(), &[a, b])?;
    let dtype = if op.is_comparison() { DType::Bool } else { a.dtype };
    Ok(Node::new(Op::Binary(op, aligned[0].clone(), aligned[1].clone()), shape, chunks, dtype))
}

fn binary<T: Element, U: Element>(op: BinaryOp, a: &Array<T>, b: impl Operand<T>) -> Array<U> {
    Array::from_result(a.node().and_then(|a| binary_node(op, a, &b.into_node()?.0)))
}

fn unary<T: Element, U: Element>(op: UnaryOp, a: &Array<T>) -> Array<U> {
    Array::from_result(a.node().map(|a| unary_node(op, a)))
}

/// Elements of `a` where `condition` holds, else of `b` (NumPy's `where`),
/// broadcast together.
///
/// ```
/// use shoal_array as array;
/// let x = array::arange(0i64, 5, 1, 5);
/// let y = array::where_(&x.greater(2), &x, 0);
/// assert_eq!(y.compute()?.into_raw_vec_and_offset().0, vec![0, 0, 0, 3, 4]);
/// # Ok::<(), shoal_array::ArrayError>(())
/// ```
pub fn where_<T: Element>(condition: &Array<bool>, a: impl Operand<T>, b: impl Operand<T>) -> Array<T> {
    let built = (|| {
        let (c, a, b) = (condition.node()?.clone(), a.into_node()?.0, b.into_node()?.0);
        let Broadcast { shape, chunks, aligned } = broadcast("where", &[&c, &a, &b])?;
        Ok(Node::new(Op::Where(aligned[0].clone(), aligned[1].clone(), aligned[2].clone()), shape, chunks, T::DTYPE))
    })();
    Array::from_result(built)
}

macro_rules! std_ops {
    ($($trait:ident $method:ident $op:ident $bound:ident;)*) => {$(
        impl<T: $bound, R: Operand<T>> std::ops::$trait<R> for &Array<T> {
            type Output = Array<T>;
            fn $method(self, rhs: R) -> Array<T> {
                binary(BinaryOp::$op, self, rhs)
            }
        }
        impl<T: $bound, R: Operand<T>> std::ops::$trait<R> for Array<T> {
            type Output = Array<T>;
            fn $method(self, rhs: R) -> Array<T> {
                binary(BinaryOp::$op, &self, rhs)
            }
        }
    )*};
}

std_ops! {
    Add add Add Number;
    Sub sub Sub Number;
    Mul mul Mul Number;
    Div div Div Number;
    Rem rem Rem Number;
    BitAnd bitand And Bits;
    BitOr bitor Or Bits;
    BitXor bitxor Xor Bits;
}

/// `2.0 * &x`: a value on the left.
macro_rules! scalar_left {
    ($($t:ty),*) => {$(
        impl std::ops::Add<&Array<$t>> for $t {
            type Output = Array<$t>;
            fn add(self, rhs: &Array<$t>) -> Array<$t> { binary(BinaryOp::Add, &constant(self), rhs) }
        }
        impl std::ops::Sub<&Array<$t>> for $t {
            type Output = Array<$t>;
            fn sub(self, rhs: &Array<$t>) -> Array<$t> { binary(BinaryOp::Sub, &constant(self), rhs) }
        }
        impl std::ops::Mul<&Array<$t>> for $t {
            type Output = Array<$t>;
            fn mul(self, rhs: &Array<$t>) -> Array<$t> { binary(BinaryOp::Mul, &constant(self), rhs) }
        }
        impl std::ops::Div<&Array<$t>> for $t {
            type Output = Array<$t>;
            fn div(self, rhs: &Array<$t>) -> Array<$t> { binary(BinaryOp::Div, &constant(self), rhs) }
        }
    )*};
}

scalar_left!(f64, f32, i64, i32, u8);

/// A 0-d array of `value`: it broadcasts to any shape.
fn constant<T: Element>(value: T) -> Array<T> {
    Array::from_node(scalar_node(value.to_scalar(), T::DTYPE))
}

impl<T: Number> std::ops::Neg for &Array<T> {
    type Output = Array<T>;
    fn neg(self) -> Array<T> {
        unary(UnaryOp::Neg, self)
    }
}

impl<T: Number> std::ops::Neg for Array<T> {
    type Output = Array<T>;
    fn neg(self) -> Array<T> {
        unary(UnaryOp::Neg, &self)
    }
}

impl std::ops::Not for &Array<bool> {
    type Output = Array<bool>;
    fn not(self) -> Array<bool> {
        unary(UnaryOp::Not, self)
    }
}

impl std::ops::Not for Array<bool> {
    type Output = Array<bool>;
    fn not(self) -> Array<bool> {
        unary(UnaryOp::Not, &self)
    }
}

macro_rules! float_unary {
    ($($(#[$doc:meta])* $name:ident $op:ident;)*) => {
        impl<T: Float> Array<T> {$(
            $(#[$doc])*
            pub fn $name(&self) -> Array<T> {
                unary(UnaryOp::$op, self)
            }
        )*}

        $(
            $(#[$doc])*
            pub fn $name<T: Float>(x: &Array<T>) -> Array<T> {
                x.$name()
            }
        )*
    };
}

float_unary! {
    /// Sine, elementwise.
    sin Sin;
    /// Cosine, elementwise.
    cos Cos;
    /// Tangent, elementwise.
    tan Tan;
    /// Inverse sine, elementwise (NaN outside [-1, 1]); vectorised, within 2 ulp.
    arcsin Asin;
    /// Inverse cosine, elementwise (NaN outside [-1, 1]); vectorised, within 2 ulp.
    arccos Acos;
    /// Inverse tangent, elementwise.
    arctan Atan;
    /// Hyperbolic sine, elementwise.
    sinh Sinh;
    /// Hyperbolic cosine, elementwise.
    cosh Cosh;
    /// Hyperbolic tangent, elementwise.
    tanh Tanh;
    /// `e^x`, elementwise.
    exp Exp;
    /// `2^x`, elementwise.
    exp2 Exp2;
    /// `e^x − 1`, accurate near 0, elementwise.
    expm1 Expm1;
    /// Natural logarithm, elementwise.
    log Ln;
    /// Base-2 logarithm, elementwise.
    log2 Log2;
    /// Base-10 logarithm, elementwise.
    log10 Log10;
    /// `ln(1 + x)`, accurate near 0, elementwise.
    log1p Log1p;
    /// Square root, elementwise.
    sqrt Sqrt;
    /// Cube root, elementwise.
    cbrt Cbrt;
    /// Largest integer not above, elementwise.
    floor Floor;
    /// Smallest integer not below, elementwise.
    ceil Ceil;
    /// Nearest integer, halves to even (as NumPy), elementwise.
    round Round;
}

impl<T: Float> Array<T> {
    /// `atan2(self, other)`, the angle of the point (other, self), elementwise.
    pub fn arctan2(&self, other: impl Operand<T>) -> Array<T> {
        binary(BinaryOp::Atan2, self, other)
    }

    /// `sqrt(self² + other²)` without overflow, elementwise.
    pub fn hypot(&self, other: impl Operand<T>) -> Array<T> {
        binary(BinaryOp::Hypot, self, other)
    }

    /// Whether each element is NaN.
    pub fn isnan(&self) -> Array<bool> {
        unary(UnaryOp::IsNan, self)
    }

    /// Whether each element is finite.
    pub fn isfinite(&self) -> Array<bool> {
        unary(UnaryOp::IsFinite, self)
    }
}

impl<T: Number> Array<T> {
    /// Absolute value, elementwise.
    pub fn abs(&self) -> Array<T> {
        unary(UnaryOp::Abs, self)
    }

    /// −1, 0 or 1 by sign (NaN stays NaN), elementwise.
    pub fn sign(&self) -> Array<T> {
        unary(UnaryOp::Sign, self)
    }

    /// `self` to the power `exponent`, elementwise (integers: a negative
    /// exponent gives 0).
    pub fn pow(&self, exponent: impl Operand<T>) -> Array<T> {
        binary(BinaryOp::Pow, self, exponent)
    }

    /// The smaller of each pair (NaN if either is), elementwise.
    pub fn minimum(&self, other: impl Operand<T>) -> Array<T> {
        binary(BinaryOp::Minimum, self, other)
    }

    /// The larger of each pair (NaN if either is), elementwise.
    pub fn maximum(&self, other: impl Operand<T>) -> Array<T> {
        binary(BinaryOp::Maximum, self, other)
    }

    /// Each element limited to `[low, high]`.
    pub fn clip(&self, low: T, high: T) -> Array<T> {
        self.maximum(low).minimum(high)
    }
}

impl<T: Element> Array<T> {
    /// `self == other`, elementwise.
    pub fn equal(&self, other: impl Operand<T>) -> Array<bool> {
        binary(BinaryOp::Eq, self, other)
    }

    /// `self != other`, elementwise.
    pub fn not_equal(&self, other: impl Operand<T>) -> Array<bool> {
        binary(BinaryOp::Ne, self, other)
    }

    /// `self < other`, elementwise.
    pub fn less(&self, other: impl Operand<T>) -> Array<bool> {
        binary(BinaryOp::Lt, self, other)
    }

    /// `self <= other`, elementwise.
    pub fn less_equal(&self, other: impl Operand<T>) -> Array<bool> {
        binary(BinaryOp::Le, self, other)
    }

    /// `self > other`, elementwise.
    pub fn greater(&self, other: impl Operand<T>) -> Array<bool> {
        binary(BinaryOp::Gt, self, other)
    }

    /// `self >= other`, elementwise.
    pub fn greater_equal(&self, other: impl Operand<T>) -> Array<bool> {
        binary(BinaryOp::Ge, self, other)
    }

    /// The same values as another element type (floats to integers truncate
    /// toward zero; anything to `bool` is "not zero").
    pub fn astype<U: Element>(&self) -> Array<U> {
        Array::from_result(self.node().map(|n| cast_node(n, U::DTYPE)))
    }
}

impl Array<bool> {
    /// `self && other`, elementwise.
    pub fn logical_and(&self, other: impl Operand<bool>) -> Array<bool> {
        binary(BinaryOp::And, self, other)
    }

    /// `self || other`, elementwise.
    pub fn logical_or(&self, other: impl Operand<bool>) -> Array<bool> {
        binary(BinaryOp::Or, self, other)
    }

    /// `self != other`, elementwise.
    pub fn logical_xor(&self, other: impl Operand<bool>) -> Array<bool> {
        binary(BinaryOp::Xor, self, other)
    }

    /// `!self`, elementwise.
    pub fn logical_not(&self) -> Array<bool> {
        unary(UnaryOp::Not, self)
    }
}

/// Which axes a reduction runs over: `..` for all, one axis, or several.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Axes {
    /// Every axis.
    All,
    /// These axes.
    These(Vec<usize>),
}

impl From<std::ops::RangeFull> for Axes {
    fn from(_: std::ops::RangeFull) -> Axes {
        Axes::All
    }
}

impl From<usize> for Axes {
    fn from(axis: usize) -> Axes {
        Axes::These(vec![axis])
    }
}

impl<const N: usize> From<[usize; N]> for Axes {
    fn from(axes: [usize; N]) -> Axes {
        Axes::These(axes.to_vec())
    }
}

impl From<&[usize]> for Axes {
    fn from(axes: &[usize]) -> Axes {
        Axes::These(axes.to_vec())
    }
}

impl From<Vec<usize>> for Axes {
    fn from(axes: Vec<usize>) -> Axes {
        Axes::These(axes)
    }
}

/// Options of a reduction.
///
/// ```
/// use shoal_array::{self as array, Reduction};
/// let x = array::ones::<f64>(&[4, 6], [2, 2]);
/// let s = x.sum_with(1, Reduction::new().keepdims(true).split_every(2));
/// assert_eq!(s.shape(), &[4, 1]);
/// assert_eq!(s.compute()?.sum(), 24.0);
/// # Ok::<(), shoal_array::ArrayError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reduction {
    keepdims: bool,
    split_every: usize,
}

impl Default for Reduction {
    fn default() -> Reduction {
        Reduction { keepdims: false, split_every: 8 }
    }
}

impl Reduction {
    /// Reduced axes go away, partials are combined 8 at a time.
    pub fn new() -> Reduction {
        Reduction::default()
    }

    /// Keep reduced axes as axes of length 1.
    pub fn keepdims(mut self, keep: bool) -> Reduction {
        self.keepdims = keep;
        self
    }

    /// How many partial results one task of the reduction tree combines (at
    /// least 2): fewer means a deeper tree with smaller tasks.
    pub fn split_every(mut self, n: usize) -> Reduction {
        self.split_every = n.max(2);
        self
    }
}

pub(crate) fn reduce_node(
    op: ReduceOp,
    input: &Arc<Node>,
    axes: &Axes,
    options: Reduction,
) -> Result<Arc<Node>, ArrayError> {
    let operation = op.name();
    let ndim = input.ndim();
    let mut reduced = vec![false; ndim];
    match axes {
        Axes::All => reduced.fill(true),
        Axes::These(list) => {
            for &axis in list {
                if axis >= ndim {
                    return Err(ArrayError::Axis { operation, axis, ndim });
                }
                reduced[axis] = true;
            }
        }
    }
    let arg = matches!(op, ReduceOp::ArgMin | ReduceOp::ArgMax);
    if arg && reduced.iter().filter(|&&r| r).count() > 1 {
        if *axes == Axes::All {
            // NumPy's argmin over everything is over the flattened array.
            let flat = reshape_node(input, &[input.shape.iter().product()])?;
            return reduce_node(op, &flat, &Axes::These(vec![0]), options);
        }
        return Err(ArrayError::Invalid { operation, message: format!("one axis at a time, not {axes:?}") });
    }
    let empty = input.shape.iter().zip(&reduced).any(|(&n, &r)| r && n == 0);
    if empty && matches!(op, ReduceOp::Min | ReduceOp::Max | ReduceOp::ArgMin | ReduceOp::ArgMax) {
        return Err(ArrayError::Invalid { operation, message: "a reduction of no elements has no identity".into() });
    }
    let mut shape = Vec::new();
    let mut chunks = Vec::new();
    for (d, &r) in reduced.iter().enumerate() {
        if !r {
            shape.push(input.shape[d]);
            chunks.push(input.chunks[d].clone());
        } else if options.keepdims {
            shape.push(1);
            chunks.push(vec![1]);
        }
    }
    let dtype = op.output(input.dtype);
    let spec = Arc::new(ReduceSpec { op, reduced, keepdims: options.keepdims, dtype });
    Ok(Node::new(Op::Reduce { input: input.clone(), spec, split_every: options.split_every }, shape, chunks, dtype))
}

/// `input` reshaped (rechunked first so each block maps onto whole rows).
pub(crate) fn reshape_node(input: &Arc<Node>, shape: &[usize]) -> Result<Arc<Node>, ArrayError> {
    let total: usize = input.shape.iter().product();
    if shape.iter().product::<usize>() != total {
        return Err(ArrayError::Shapes {
            operation: "reshape",
            left: input.shape.clone(),
            right: shape.to_vec(),
            reason: "hold different numbers of elements".into(),
        });
    }
    if input.shape == shape {
        return Ok(input.clone());
    }
    let inner = |s: &[usize]| s.iter().skip(1).product::<usize>().max(1);
    let (inner_in, inner_out) = (inner(&input.shape), inner(shape));
    let single_rows = input.ndim() == 0 || shape.is_empty() || total == 0;
    // Input rows per block must be a multiple of this so blocks hold whole output rows.
    let step = if single_rows { usize::MAX } else { lcm(inner_in, inner_out) / inner_in };
    let rows_in = input.shape.first().copied().unwrap_or(1);
    let mut row_blocks = Vec::new();
    if single_rows || step >= rows_in {
        row_blocks.push(rows_in);
    } else {
        let mut acc = 0;
        for &c in input.chunks.first().map_or(&[][..], Vec::as_slice) {
            acc += c;
            if acc % step == 0 || row_blocks.iter().sum::<usize>() + acc == rows_in {
                row_blocks.push(acc);
                acc = 0;
            }
        }
        if acc > 0 {
            row_blocks.push(acc);
        }
    }
    let mut in_chunks: Vec<Vec<usize>> = input.shape.iter().map(|&n| vec![n]).collect();
    if let Some(first) = in_chunks.first_mut() {
        *first = row_blocks.clone();
    }
    let aligned = rechunk_node(input, in_chunks);
    let mut out_chunks: Vec<Vec<usize>> = shape.iter().map(|&n| vec![n]).collect();
    if let Some(first) = out_chunks.first_mut()
        && !single_rows
    {
        *first = row_blocks.iter().map(|r| r * inner_in / inner_out).collect();
    }
    Ok(Node::new(
        Op::Structure { inputs: vec![aligned], structure: Structure::Reshape },
        shape.to_vec(),
        out_chunks,
        input.dtype,
    ))
}

fn lcm(a: usize, b: usize) -> usize {
    fn gcd(a: usize, b: usize) -> usize {
        if b == 0 { a } else { gcd(b, a % b) }
    }
    a / gcd(a, b).max(1) * b
}

macro_rules! reductions {
    ($($(#[$doc:meta])* $name:ident $with:ident $op:expr => $out:ty;)*) => {
        impl<T: Element> Array<T> {$(
            $(#[$doc])*
            pub fn $name(&self, axes: impl Into<Axes>) -> Array<$out> {
                self.$with(axes, Reduction::default())
            }

            $(#[$doc])*
            /// With options: `keepdims`, `split_every`.
            pub fn $with(&self, axes: impl Into<Axes>, options: Reduction) -> Array<$out> {
                self.reduce($op, axes.into(), options)
            }
        )*}
    };
}

reductions! {
    /// Sum over `axes` (`..` for all) as a tree reduction; integers and
    /// booleans sum as `i64`.
    sum sum_with ReduceOp::Sum => T::Sum;
    /// Product over `axes`.
    prod prod_with ReduceOp::Prod => T::Sum;
    /// Mean over `axes`, as `f64`.
    mean mean_with ReduceOp::Mean => f64;
    /// Smallest element over `axes` (NaN if any is NaN).
    min min_with ReduceOp::Min => T;
    /// Largest element over `axes` (NaN if any is NaN).
    max max_with ReduceOp::Max => T;
    /// Index of the first smallest element along one axis (`..`: in the
    /// flattened array).
    argmin argmin_with ReduceOp::ArgMin => i64;
    /// Index of the first largest element along one axis (`..`: in the
    /// flattened array).
    argmax argmax_with ReduceOp::ArgMax => i64;
    /// Whether any element over `axes` is non-zero.
    any any_with ReduceOp::Any => bool;
    /// Whether every element over `axes` is non-zero.
    all all_with ReduceOp::All => bool;
}

impl<T: Element> Array<T> {
    /// Variance over `axes` with `ddof` delta degrees of freedom (0: the
    /// population variance, as NumPy), as `f64`.
    pub fn var(&self, axes: impl Into<Axes>, ddof: u32) -> Array<f64> {
        self.var_with(axes, ddof, Reduction::default())
    }

    /// [`Array::var`] with options: `keepdims`, `split_every`.
    pub fn var_with(&self, axes: impl Into<Axes>, ddof: u32, options: Reduction) -> Array<f64> {
        self.reduce(ReduceOp::Var(ddof), axes.into(), options)
    }

    /// Standard deviation over `axes` with `ddof` delta degrees of freedom.
    pub fn std(&self, axes: impl Into<Axes>, ddof: u32) -> Array<f64> {
        self.std_with(axes, ddof, Reduction::default())
    }

    /// [`Array::std`] with options: `keepdims`, `split_every`.
    pub fn std_with(&self, axes: impl Into<Axes>, ddof: u32, options: Reduction) -> Array<f64> {
        self.reduce(ReduceOp::Std(ddof), axes.into(), options)
    }

    fn reduce<U: Element>(&self, op: ReduceOp, axes: Axes, options: Reduction) -> Array<U> {
        Array::from_result(self.node().and_then(|n| reduce_node(op, n, &axes, options)))
    }
}
