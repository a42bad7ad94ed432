//! One program, many roles: a process started as a worker of a cluster
//! becomes that worker before the program's `main` (or the test harness)
//! runs, and never returns into it.
//!
//! The launcher (for example `LocalCluster::builder().processes(true)`) sets
//! `SHOAL_WORKER_OF` to the scheduler's address; `SHOAL_WORKER_NAME`,
//! `SHOAL_WORKER_THREADS` and `SHOAL_TOKEN` complete the worker's
//! configuration. Every binary that links shoal — the user's program, its
//! tests, its benchmarks — can therefore be a worker, with every function it
//! registered with `#[shoal::remote]`.

use std::net::ToSocketAddrs;

pub use shoal_deploy::WORKER_OF;

/// Becomes a worker if this process was started as one (and then exits);
/// returns at once otherwise. It runs automatically before `main`; calling
/// it again is harmless.
pub fn init() {
    let Ok(address) = std::env::var(WORKER_OF) else { return };
    let code = match run_worker(&address) {
        Ok(()) => 0,
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

fn run_worker(address: &str) -> Result<(), String> {
    let scheduler = address
        .trim_start_matches("tcp://")
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| format!("{WORKER_OF}={address:?} is not a scheduler address (host:port)"))?;
    let name = std::env::var("SHOAL_WORKER_NAME").unwrap_or_else(|_| format!("worker-{}", std::process::id()));
    let mut config = shoal_net::WorkerConfig::new(scheduler, name);
    if let Ok(t) = std::env::var("SHOAL_WORKER_THREADS") {
        config.threads = t.parse().map_err(|_| format!("SHOAL_WORKER_THREADS={t:?} is not a number"))?;
    }
    config.token = std::env::var("SHOAL_TOKEN").ok();
    let worker = shoal_net::start_worker(config).map_err(|e| e.to_string())?;
    // Returns when the scheduler goes away: a worker never outlives its cluster.
    worker.wait();
    Ok(())
}

/// Registers [`init`] to run before `main`, once every remote function is
/// registered (see `shoal_graph::remote::run_after_registrations`).
#[ctor::ctor]
fn become_a_worker_if_started_as_one() {
    shoal_graph::remote::run_after_registrations(init);
}
