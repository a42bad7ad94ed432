//! One program, many roles: a process started as a worker of a cluster
//! becomes that worker before the program's `main` (or the test harness)
//! runs, and never returns into it.
//!
//! The launcher (`LocalCluster`, `shoal worker`, a job script) sets
//! `SHOAL_WORKER_OF` to the scheduler's address; the other variables of the
//! launch contract ([`WorkerOption`](crate::deploy::WorkerOption)) complete
//! the worker's configuration: its name, threads, resources (GPUs are
//! detected when none are given), memory limits, death timeout, token, and
//! whether a nanny restarts it. Every binary that links shoal — the user's
//! program, its tests, its benchmarks — can therefore be a worker, with
//! every function it registered with `#[shoal::remote]`.

pub use shoal_deploy::{RESTART_EXIT_CODE, WORKER_OF};
use shoal_deploy::{Spelling, WorkerLaunch};
use shoal_net::WorkerExit;

/// Becomes a worker if this process was started as one (and then exits);
/// returns at once otherwise. It runs automatically before `main`; calling
/// it again is harmless.
///
/// The worker process exits with 0 when its scheduler is gone (after its
/// death timeout), with [`RESTART_EXIT_CODE`] when its nanny is to start a
/// new process in its place, and with 1 when it could not start, after
/// printing why.
pub fn init() {
    let code = match run_worker() {
        Ok(None) => return,
        Ok(Some(WorkerExit::Restart)) => RESTART_EXIT_CODE,
        Ok(Some(_)) => 0,
        Err(message) => {
            eprintln!("shoal worker: {message}");
            1
        }
    };
    std::process::exit(code);
}

/// Whether this process is a worker (set by the launcher).
pub fn is_worker() -> bool {
    std::env::var_os(WORKER_OF).is_some()
}

/// Runs this process as the worker its environment describes, if it does.
fn run_worker() -> Result<Option<WorkerExit>, String> {
    let Some(launch) = WorkerLaunch::from_env().map_err(|e| e.to_string())? else { return Ok(None) };
    let config = launch.config(Spelling::Env).map_err(|e| e.to_string())?;
    let worker = shoal_net::start_worker(config).map_err(|e| e.to_string())?;
    // Returns when the scheduler is gone for good or a restart ends this
    // process: a worker never outlives its cluster.
    Ok(Some(worker.wait()))
}

/// Registers [`init`] to run before `main`, once every remote function is
/// registered (see `shoal_graph::remote::run_after_registrations`).
#[ctor::ctor]
fn become_a_worker_if_started_as_one() {
    shoal_graph::remote::run_after_registrations(init);
}
