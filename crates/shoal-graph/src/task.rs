//! Task specs: a function, its arguments, and the key of its result.

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use crate::key::{Key, Prefix, Token};

/// A type-erased result or argument, shared without copying.
///
/// Results stay in this form inside one process; they are encoded only when
/// they must leave it, with the codec of the function that made them.
pub type Value = Arc<dyn Any + Send + Sync>;

/// The type-erased body of a task: resolved argument values in, result out.
pub type CallFn = dyn Fn(Vec<Value>) -> Result<Value, TaskError> + Send + Sync;

/// A function that tasks call, with the stable name it is known by.
///
/// The name is the full Rust path of the function (`my_crate::stats::mean`),
/// the same in every process of one binary, which is what the distributed
/// runtime registers functions under.
///
/// Cloning is one reference-count increment: a million tasks of one `map`
/// share one `Func`.
#[derive(Clone)]
pub struct Func(Arc<FuncInner>);

struct FuncInner {
    name: Arc<str>,
    short_name: Prefix,
    identity: Option<Token>,
    call: Box<CallFn>,
}

impl Func {
    /// A function from its stable name and its erased body.
    ///
    /// `identity` is the token of the function itself; `None` means the function
    /// carries state that cannot be hashed (a capturing closure), so calls of it
    /// are never deduplicated.
    pub fn new(name: &str, identity: Option<Token>, call: Box<CallFn>) -> Func {
        Func(Arc::new(FuncInner {
            name: name.into(),
            short_name: crate::key::short_fn_name(name).into(),
            identity,
            call,
        }))
    }

    /// The stable full name.
    pub fn name(&self) -> &str {
        &self.0.name
    }

    /// The short name used as key prefix (`double`, `lambda`).
    pub fn short_name(&self) -> &Prefix {
        &self.0.short_name
    }

    /// The token of the function itself, if it has no hidden state.
    pub fn identity(&self) -> Option<Token> {
        self.0.identity
    }

    /// Runs the body.
    ///
    /// # Errors
    /// Whatever the function returns as an error; panics are not caught here.
    pub fn call(&self, args: Vec<Value>) -> Result<Value, TaskError> {
        (self.0.call)(args)
    }
}

impl fmt::Debug for Func {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Func({})", self.0.name)
    }
}

/// One argument of a task: a literal value, or the result of another task.
#[derive(Clone)]
pub enum Arg {
    /// A literal value, moved into the task.
    Value(Value),
    /// The result of the task with this key.
    Key(Key),
}

impl fmt::Debug for Arg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Arg::Value(_) => f.write_str("<value>"),
            Arg::Key(k) => write!(f, "{k}"),
        }
    }
}

/// A task: call `func` on `args`; the result is stored under `key`.
#[derive(Clone, Debug)]
pub struct Task {
    /// The key of the result.
    pub key: Key,
    /// The function to call.
    pub func: Func,
    /// Its arguments, in order.
    pub args: Vec<Arg>,
}

impl Task {
    /// The keys this task needs, in argument order (repeats included).
    pub fn dependencies(&self) -> impl Iterator<Item = &Key> {
        self.args.iter().filter_map(|a| match a {
            Arg::Key(k) => Some(k),
            Arg::Value(_) => None,
        })
    }
}

/// Why one task's function failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TaskError {
    /// The function returned an error.
    #[error("{0}")]
    Failed(String),
    /// The function panicked.
    #[error("panicked: {0}")]
    Panicked(String),
    /// An argument had another type than the function takes: a graph wired wrongly.
    #[error("argument {position} has the wrong type: expected {expected}")]
    ArgumentType {
        /// Zero-based position of the argument.
        position: usize,
        /// The type the function takes.
        expected: &'static str,
    },
    /// The task was given fewer arguments than its function takes.
    #[error("expected {expected} arguments, got {got}")]
    ArgumentCount {
        /// How many the function takes.
        expected: usize,
        /// How many it got.
        got: usize,
    },
}
