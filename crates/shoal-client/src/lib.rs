//! The shoal client: submit functions as tasks, get futures, build lazy graphs.
//!
//! - [`Client`] runs tasks on an [`Executor`]: `Sync` (one thread, for
//!   debugging) or `Threads` (a work-stealing pool).
//! - [`Client::submit`] and [`Client::map`] return [`Future`]s; futures are
//!   arguments of later submits, [`gather`], [`wait`] and [`as_completed`]
//!   collect them.
//! - [`delayed`] builds a lazy graph; [`Delayed::compute`] and [`compute`] run
//!   it, freeing intermediate results as soon as they are no longer needed.
//! - A task that panics or returns `Err` fails only its own future; tasks that
//!   need it fail with [`Error::DependencyFailed`], naming it.
//! - [`ProgressBar`] draws progress of computations; [`progress`] of futures.
//!
//! ```
//! use shoal_client::{Client, Error, delayed};
//!
//! fn inc(x: i64) -> i64 { x + 1 }
//! fn checked_div(a: i64, b: i64) -> Result<i64, String> {
//!     if b == 0 { Err("division by zero".into()) } else { Ok(a / b) }
//! }
//!
//! let client = Client::threads().unwrap();
//! let a = client.submit(inc, (1,));
//! let b = client.submit(inc, (&a,));
//! assert_eq!(b.result().unwrap(), 3);
//!
//! let bad = client.submit(checked_div, (1, 0));
//! assert!(matches!(bad.result(), Err(Error::TaskFailed { .. })));
//!
//! let total = delayed(inc, (delayed(inc, (40,)),));
//! assert_eq!(total.compute_with(&client).unwrap(), 42);
//! ```

pub mod actor;
mod args;
mod client;
mod cluster;
mod delayed;
mod error;
mod future;
mod list;
mod list_task;
mod ops;
mod options;
mod progress;
pub mod ray;
mod status;

pub use args::{ArgContext, IntoArg, IntoArgs, MapInput};
pub use client::{
    AsCompleted, Client, ClientBuilder, Executor, WorkerInfo, as_completed, fire_and_forget, gather, wait, wait_timeout,
};
pub use delayed::{Computable, Delayed, compute, delayed, delayed_with, persist};
pub use error::{Cause, Error};
pub use future::Future;
pub use list_task::is_list;
pub use options::TaskOptions;
pub use progress::{ProgressBar, progress};
pub use status::Status;
