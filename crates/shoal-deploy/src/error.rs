//! Why a cluster could not be started or changed.

use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use crate::launch::LaunchError;

/// Why a cluster (its scheduler, its workers, its batch jobs) could not be
/// started or changed. The causes are kept as sources.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// A worker process tried to start a cluster of its own.
    #[error(
        "this process is a worker (SHOAL_WORKER_OF is set) and cannot start clusters; a worker process must not run \
         the program's main: link the `shoal` crate, whose start-up hook turns it into a worker, or call \
         shoal::init() first thing in main"
    )]
    InsideWorker,
    /// The workers' options cannot make a worker.
    #[error(transparent)]
    Launch(#[from] LaunchError),
    /// The scheduler could not start.
    #[error("cannot start the scheduler: {0}")]
    Scheduler(#[from] shoal_net::ServerError),
    /// A worker in this process could not start.
    #[error("cannot start worker {name}: {source}")]
    Worker {
        /// The worker.
        name: String,
        /// Why.
        source: shoal_net::WorkerError,
    },
    /// A worker process could not start.
    #[error("cannot start {} as worker {name}: {source}", program.display())]
    Spawn {
        /// The worker.
        name: String,
        /// The program.
        program: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A worker process ended before it joined its scheduler.
    #[error("worker process {pid} ({name}) exited ({status}) before joining; does the program link the `shoal` crate?")]
    ExitedEarly {
        /// The worker.
        name: String,
        /// Its process.
        pid: u32,
        /// How it ended.
        status: ExitStatus,
    },
    /// Workers did not join in time.
    #[error("{workers} workers did not join the scheduler within {timeout:?}")]
    JoinTimeout {
        /// How many were waited for.
        workers: usize,
        /// How long.
        timeout: Duration,
    },
    /// The running program could not be found, to start it as workers.
    #[error("cannot find this program to start workers: {0}")]
    CurrentExe(#[source] std::io::Error),
    /// A system call failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// Why it failed.
        source: std::io::Error,
    },
    /// A thread holding a lock of the cluster panicked.
    #[error("{0} is poisoned: a thread panicked while changing it")]
    Poisoned(&'static str),
    /// Options that cannot make a batch job.
    #[error("{0}")]
    JobOption(String),
    /// A file could not be written or a directory made.
    #[error("{what} {}: {source}", path.display())]
    File {
        /// What was being done.
        what: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// Why it failed.
        source: std::io::Error,
    },
    /// This host has no network address for batch jobs to reach it on.
    #[error("this host has no address on a network for the jobs to reach; give scheduler_ip")]
    NoNetwork,
    /// A resource manager's command could not run.
    #[error("cannot run {program} (is this a node of the cluster, with its commands on PATH?): {source}")]
    Command {
        /// The command.
        program: String,
        /// Why.
        source: std::io::Error,
    },
    /// A resource manager's command refused.
    #[error("{program} failed ({status}): {stderr}")]
    CommandFailed {
        /// The command.
        program: String,
        /// How it ended.
        status: ExitStatus,
        /// What it said.
        stderr: String,
    },
    /// A submission printed no job id.
    #[error("{program} printed no job id for {}: {printed:?}", script.display())]
    NoJobId {
        /// The submit command.
        program: String,
        /// The job script.
        script: PathBuf,
        /// What it printed.
        printed: String,
    },
    /// Batch jobs' workers did not join in time.
    #[error("{joined} of {workers} workers joined within {timeout:?}; the jobs' output is in {}", log_directory.display())]
    JobsSilent {
        /// How many joined.
        joined: usize,
        /// How many were waited for.
        workers: usize,
        /// How long.
        timeout: Duration,
        /// Where the jobs write their output.
        log_directory: PathBuf,
    },
    /// Talking to the cluster's own scheduler failed.
    #[error(transparent)]
    Client(#[from] shoal_client::Error),
}

impl From<DeployError> for shoal_client::Error {
    fn from(error: DeployError) -> shoal_client::Error {
        match error {
            DeployError::Client(e) => e,
            other => shoal_client::Error::Deploy(shoal_client::Cause::new(other)),
        }
    }
}
