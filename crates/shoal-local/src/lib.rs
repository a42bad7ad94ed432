//! In-process executors for shoal task graphs.
//!
//! [`Runtime::threads`] is a work-stealing pool (crossbeam-deque) with one
//! deque per thread: a finishing task pushes the dependents it made ready to
//! its own deque and runs the newest first, so work proceeds depth first and
//! intermediate results are freed early; idle threads steal. [`Runtime::sync`]
//! runs everything on the thread that waits, in a fixed order, for debugging.
//!
//! No value is serialised on this path: results are shared
//! [`Value`](shoal_graph::Value)s, and the last task to read a result that
//! nobody else holds takes it without copying.
//!
//! ```
//! use std::sync::Arc;
//! use shoal_graph::{Arg, Key, Task, TaskFn, Token};
//! use shoal_local::{Runtime, Submission};
//!
//! fn double(x: i64) -> i64 { x * 2 }
//! let rt = Runtime::threads(2).unwrap();
//! let task = Task {
//!     key: Key::scalar("double", Token(7)),
//!     func: TaskFn::<(i64,)>::into_func(double),
//!     args: vec![Arg::Value(Arc::new(21i64))],
//! };
//! let handles = rt.submit([Submission::new(task).held()]);
//! let value = handles[0].wait().unwrap();
//! assert_eq!(*value.downcast::<i64>().unwrap(), 42);
//! ```

mod keymap;
mod node;
mod runtime;
mod sleep;

pub use node::{Failure, FailureKind, Notify, Outcome, Phase};
pub use runtime::{Handle, LocalDeps, Runtime, Stats, Submission};
