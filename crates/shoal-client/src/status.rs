//! Where a task is, in the words every backend shares.

use std::fmt;

/// Where a future's task is, as Dask reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Status {
    /// Waiting for inputs, queued, or running.
    Pending,
    /// Done; the result is available.
    Finished,
    /// Failed, or a task it needs failed.
    Error,
    /// Cancelled.
    Cancelled,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Pending => "pending",
            Status::Finished => "finished",
            Status::Error => "error",
            Status::Cancelled => "cancelled",
        })
    }
}
