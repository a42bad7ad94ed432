//! The task-graph core of shoal: keys, task specs and graphs, with culling,
//! ordering and Graphviz output. Pure: no threads, sockets or clocks.
//!
//! - [`Key`] names a result: `prefix-token` plus an optional chunk index, with a
//!   [`Token`] that is a hash of the function and its arguments, so equal pure
//!   calls get equal keys.
//! - [`Task`] is a [`Func`] (a stable name and an erased body) with [`Arg`]s
//!   that are literal [`Value`]s or other tasks' keys.
//! - [`Graph`] holds tasks by key; [`Graph::cull`] keeps what outputs need and
//!   [`Graph::order`] gives a memory-friendly execution order.
//! - [`TaskFn`] and [`TaskOutput`] turn plain Rust functions into tasks.
//! - [`Blob`] is bulk bytes that cross processes in one copy (or none).
//!
//! ```
//! use std::sync::Arc;
//! use shoal_graph::{Arg, Graph, Key, Task, TaskFn, Token};
//!
//! fn inc(x: i64) -> i64 { x + 1 }
//! let func = TaskFn::<(i64,)>::into_func(inc);
//! let a = Key::scalar("inc", Token(1));
//! let b = Key::scalar("inc", Token(2));
//! let mut graph = Graph::new();
//! graph.insert(Task { key: a.clone(), func: func.clone(), args: vec![Arg::Value(Arc::new(1i64))] });
//! graph.insert(Task { key: b.clone(), func, args: vec![Arg::Key(a.clone())] });
//! assert_eq!(graph.order().unwrap(), vec![0, 1]);
//! assert_eq!(graph.cull(&[a]).len(), 1);
//! assert!(graph.to_dot().starts_with("digraph"));
//! ```

pub mod actor;
pub mod blob;
mod dot;
pub mod elements;
mod func;
mod graph;
mod key;
pub mod partition;
pub mod remote;
mod task;

pub use blob::Blob;
pub use dot::{VisualizeError, write_dot};
pub use func::{TaskFn, TaskOutput, call_tokenizer, fn_identity, take_arg};
pub use graph::{Dep, Graph, GraphError};
pub use key::{Key, KeyBuildHasher, KeyHashMap, KeyHasher, Prefix, Token, Tokenizer, short_fn_name};
pub use task::{Arg, CallFn, Func, Task, TaskError, Value};
