//! The errors a user of the client sees.

use std::sync::Arc;
use std::time::Duration;

use shoal_local::{Failure, FailureKind};

/// Why a result could not be had.
///
/// Every variant names the key it is about. [`Error::is_retryable`] says
/// whether running the same work again may help.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The task's function returned an error or panicked (after its retries).
    #[error("task {key} failed: {message}")]
    TaskFailed {
        /// The task.
        key: String,
        /// The error's message, or the panic's.
        message: String,
    },
    /// A task this one needs has no result, so this one never ran.
    #[error("task {key} did not run: {}", dependency_story(.dependency, .failed, .message))]
    DependencyFailed {
        /// The task that did not run.
        key: String,
        /// Its direct dependency that has no result.
        dependency: String,
        /// The task where the failure started.
        failed: String,
        /// What went wrong there.
        message: String,
    },
    /// The task (or one it needs) was cancelled.
    #[error("task {key} was cancelled")]
    Cancelled {
        /// The cancelled task.
        key: String,
    },
    /// The task refers to a key the executor does not hold.
    #[error("task {key} refers to {dependency}, which this client does not hold (was its future dropped?)")]
    UnknownDependency {
        /// The task.
        key: String,
        /// The key it refers to.
        dependency: String,
    },
    /// The executor stopped before the task ran.
    #[error("task {key} did not run: its client shut down")]
    Shutdown {
        /// The task.
        key: String,
    },
    /// Waiting took longer than allowed; the task goes on.
    #[error("task {key} was not done after {after:?}")]
    Timeout {
        /// The task waited for.
        key: String,
        /// How long was waited.
        after: Duration,
    },
    /// Workers running the task died too often (Dask's `KilledWorker`).
    #[error("task {key} was running on {attempts} workers that died; it is not retried again")]
    WorkerLost {
        /// The task.
        key: String,
        /// How many workers died running it.
        attempts: u32,
    },
    /// No worker can run the task.
    #[error("task {key} cannot run on this cluster: {reason}")]
    Rejected {
        /// The task.
        key: String,
        /// Why.
        reason: String,
    },
    /// The task cannot go to a cluster as written.
    #[error("task {key} cannot run on a cluster: {message}")]
    NotRemote {
        /// The task.
        key: String,
        /// What is missing and how to fix it.
        message: String,
    },
    /// The cluster restarted ([`Client::restart`](crate::Client::restart))
    /// after the task was submitted: it and its result are gone.
    #[error("task {key} was dropped when the cluster restarted; submit it again")]
    Restarted {
        /// The task.
        key: String,
    },
    /// A function run on a worker with [`Client::run`](crate::Client::run)
    /// failed or panicked there.
    #[error("{function} failed on worker {worker}: {message}")]
    RunFailed {
        /// The function's registered name.
        function: String,
        /// The worker's name.
        worker: String,
        /// The error's message, or the panic's.
        message: String,
    },
    /// A worker or the scheduler could not be reached, or broke off, during
    /// a direct exchange (scatter, run, restart).
    #[error("cannot complete the exchange with {peer}: {message}")]
    Connection {
        /// The worker (by name) or the scheduler.
        peer: String,
        /// What failed.
        message: String,
    },
    /// The operation needs something this executor does not have.
    #[error("{operation} is not available here: {reason}")]
    Unsupported {
        /// What was asked.
        operation: String,
        /// Why not, and what to do instead.
        reason: String,
    },
    /// An actor's worker died (or cannot be reached): the calls waiting for
    /// it and every later one fail.
    #[error("actor {actor} is lost with its worker {worker}: {reason}")]
    ActorLost {
        /// The actor: its type and its key.
        actor: String,
        /// The worker it lived on.
        worker: String,
        /// What happened.
        reason: String,
    },
    /// A graph could not be run as built.
    #[error("invalid graph: {0}")]
    Graph(#[from] shoal_graph::GraphError),
    /// The executor could not be started.
    #[error("cannot start the executor: {0}")]
    Start(String),
    /// A cluster could not be started or changed (its scheduler, its
    /// workers, its batch jobs); the source says why.
    #[error(transparent)]
    Deploy(Cause),
}

/// The error of a part below the client (a cluster's deployment), kept
/// whole with its sources; compared by its message.
#[derive(Clone, Debug)]
pub struct Cause(Arc<dyn std::error::Error + Send + Sync>);

impl Cause {
    /// Wraps an error.
    pub fn new(error: impl std::error::Error + Send + Sync + 'static) -> Cause {
        Cause(Arc::new(error))
    }

    /// The error itself, to downcast to its type.
    pub fn get(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.0
    }
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for Cause {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

impl PartialEq for Cause {
    fn eq(&self, other: &Cause) -> bool {
        self.0.to_string() == other.0.to_string()
    }
}

impl Eq for Cause {}

fn dependency_story(dependency: &str, failed: &str, message: &str) -> String {
    if dependency == failed {
        format!("its dependency {failed} failed: {message}")
    } else {
        format!("its dependency {dependency} has no result, because task {failed} failed: {message}")
    }
}

impl Error {
    /// Whether submitting the same work again may succeed: true for timeouts,
    /// shutdowns, lost workers, restarts and broken connections, false for
    /// failures of the work itself.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::Timeout { .. }
                | Error::Shutdown { .. }
                | Error::WorkerLost { .. }
                | Error::Restarted { .. }
                | Error::Connection { .. }
        )
    }

    pub(crate) fn from_failure(failure: &Arc<Failure>) -> Error {
        let key = failure.key.to_string();
        match &failure.kind {
            FailureKind::Task(e) => Error::TaskFailed { key, message: e.to_string() },
            FailureKind::Dependency(cause) => {
                let root = cause.root();
                if matches!(root.kind, FailureKind::Cancelled) {
                    return Error::Cancelled { key };
                }
                let message = match &root.kind {
                    FailureKind::Task(e) => e.to_string(),
                    _ => root.to_string(),
                };
                Error::DependencyFailed {
                    key,
                    dependency: cause.key.to_string(),
                    failed: root.key.to_string(),
                    message,
                }
            }
            FailureKind::Cancelled => Error::Cancelled { key },
            FailureKind::UnknownDependency(dep) => Error::UnknownDependency { key, dependency: dep.to_string() },
            FailureKind::Shutdown => Error::Shutdown { key },
        }
    }
}
