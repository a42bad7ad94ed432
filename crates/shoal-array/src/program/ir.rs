//! The instruction set of a fused kernel: what a [`Program`] computes, and
//! the chunk [`At`] a task runs it over.
//!
//! These are plain data with serde derives: a program and its `At` are the
//! arguments of an array task, so they travel to remote workers as bytes
//! and the same few registered functions evaluate every program. How a
//! program runs lives beside it, in `addressing` (where a block's elements
//! sit) and `eval` (what each instruction does to a block).

use serde::{Deserialize, Serialize};

use crate::dtype::{DType, Scalar};

/// Random distributions.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) enum Dist {
    /// Uniform in `[low, high)`.
    Uniform {
        /// Lower bound (included).
        low: f64,
        /// Upper bound (excluded).
        high: f64,
    },
    /// Normal with this mean and standard deviation.
    Normal {
        /// The mean.
        mean: f64,
        /// The standard deviation.
        std: f64,
    },
    /// Integers uniform in `[low, high)`.
    Integers {
        /// Lower bound (included).
        low: i64,
        /// Upper bound (excluded).
        high: i64,
    },
}

/// Elementwise functions of one argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[allow(missing_docs)]
pub(crate) enum UnaryOp {
    Neg,
    Not,
    Abs,
    Sign,
    Sqrt,
    Cbrt,
    Exp,
    Exp2,
    Expm1,
    Ln,
    Log2,
    Log10,
    Log1p,
    Sin,
    Cos,
    Tan,
    Asin,
    Acos,
    Atan,
    Sinh,
    Cosh,
    Tanh,
    Floor,
    Ceil,
    Round,
    IsNan,
    IsFinite,
}

impl UnaryOp {
    /// NumPy's name, used in task names.
    pub(crate) fn name(self) -> &'static str {
        use UnaryOp::*;
        match self {
            Neg => "negative",
            Not => "invert",
            Abs => "absolute",
            Sign => "sign",
            Sqrt => "sqrt",
            Cbrt => "cbrt",
            Exp => "exp",
            Exp2 => "exp2",
            Expm1 => "expm1",
            Ln => "log",
            Log2 => "log2",
            Log10 => "log10",
            Log1p => "log1p",
            Sin => "sin",
            Cos => "cos",
            Tan => "tan",
            Asin => "arcsin",
            Acos => "arccos",
            Atan => "arctan",
            Sinh => "sinh",
            Cosh => "cosh",
            Tanh => "tanh",
            Floor => "floor",
            Ceil => "ceil",
            Round => "round",
            IsNan => "isnan",
            IsFinite => "isfinite",
        }
    }

    /// Whether the result is boolean.
    pub(crate) fn is_predicate(self) -> bool {
        matches!(self, UnaryOp::IsNan | UnaryOp::IsFinite)
    }
}

/// Elementwise functions of two arguments.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[allow(missing_docs)]
pub(crate) enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
    Pow,
    Atan2,
    Hypot,
    Minimum,
    Maximum,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    And,
    Or,
    Xor,
}

impl BinaryOp {
    /// NumPy's name, used in task names.
    pub(crate) fn name(self) -> &'static str {
        use BinaryOp::*;
        match self {
            Add => "add",
            Sub => "subtract",
            Mul => "multiply",
            Div => "divide",
            Rem => "remainder",
            Pow => "power",
            Atan2 => "arctan2",
            Hypot => "hypot",
            Minimum => "minimum",
            Maximum => "maximum",
            Eq => "equal",
            Ne => "not_equal",
            Lt => "less",
            Le => "less_equal",
            Gt => "greater",
            Ge => "greater_equal",
            And => "and",
            Or => "or",
            Xor => "xor",
        }
    }

    /// Whether the result is boolean whatever the operands are.
    pub(crate) fn is_comparison(self) -> bool {
        use BinaryOp::*;
        matches!(self, Eq | Ne | Lt | Le | Gt | Ge)
    }
}

/// Where a leaf's values come from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) enum Leaf {
    /// Input chunk `index` of the task; `broadcast` marks its axes of size 1
    /// that stretch over the output's.
    Input { index: u32, broadcast: Vec<bool> },
    /// Random numbers of an array of `shape` (aligned to the output's axes,
    /// 1 where broadcast): element `i` in row-major order is a function of
    /// `(seed, i)` alone, so any chunking gives the same numbers.
    Random { seed: u64, dist: Dist, shape: Vec<usize> },
    /// One value everywhere.
    Full(Scalar),
    /// `start + step · i` along `axis`, `i` the global index; `last` pins the
    /// value at one index (linspace's exact end point).
    Linear { axis: usize, start: Scalar, step: Scalar, last: Option<(usize, f64)> },
}

/// One instruction: what it computes from earlier instructions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) enum Instr {
    Leaf(Leaf),
    Unary(UnaryOp, u32),
    Binary(BinaryOp, u32, u32),
    Where(u32, u32, u32),
    Cast(u32),
}

/// A fused kernel: instructions in dependency order, each with the type of
/// its result; the last one is the result.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Program {
    pub(crate) instrs: Vec<(Instr, DType)>,
}

impl Program {
    /// The result type.
    pub(crate) fn dtype(&self) -> DType {
        self.instrs.last().map_or(DType::Float64, |(_, d)| *d)
    }

    /// Appends an instruction; returns its index.
    pub(crate) fn push(&mut self, instr: Instr, dtype: DType) -> u32 {
        self.instrs.push((instr, dtype));
        (self.instrs.len() - 1) as u32
    }

    /// A short description of what it computes (`random-arcsin-add`), for
    /// task names.
    pub(crate) fn describe(&self) -> String {
        let mut parts: Vec<&str> = Vec::new();
        for (instr, _) in &self.instrs {
            let name = match instr {
                Instr::Leaf(Leaf::Random { .. }) => "random",
                Instr::Leaf(Leaf::Full(_)) => "full",
                Instr::Leaf(Leaf::Linear { .. }) => "arange",
                Instr::Leaf(Leaf::Input { .. }) => continue,
                Instr::Unary(op, _) => op.name(),
                Instr::Binary(op, _, _) => op.name(),
                Instr::Where(..) => "where",
                Instr::Cast(_) => "astype",
            };
            if parts.last() != Some(&name) {
                parts.push(name);
            }
        }
        if parts.is_empty() { "copy".into() } else { parts.join("-") }
    }
}

/// The chunk a task computes: its offset in the whole array and its shape.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct At {
    /// Global index of the chunk's first element along each axis.
    pub(crate) offset: Vec<usize>,
    /// The chunk's shape.
    pub(crate) shape: Vec<usize>,
}

impl At {
    /// Number of elements.
    pub(crate) fn len(&self) -> usize {
        self.shape.iter().product()
    }
}
