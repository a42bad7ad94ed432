//! One program, many roles: a process started as a worker of a cluster
//! becomes that worker before the program's `main` (or the test harness)
//! runs, and never returns into it.
//!
//! The launcher (`LocalCluster`, `shoal worker`, a job script) sets
//! `SHOAL_WORKER_OF` to the scheduler's address; the other variables of
//! [`shoal_deploy::env`] complete the worker's configuration: its name,
//! threads, resources (GPUs are detected when none are given), memory
//! limit, death timeout, token, and whether a nanny restarts it. Every
//! binary that links shoal — the user's program, its tests, its benchmarks
//! — can therefore be a worker, with every function it registered with
//! `#[shoal::remote]`.

use std::net::ToSocketAddrs;
use std::time::Duration;

use shoal_deploy::env;
pub use shoal_deploy::{RESTART_EXIT_CODE, WORKER_OF};
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
    let Ok(address) = std::env::var(WORKER_OF) else { return };
    let code = match run_worker(&address) {
        Ok(WorkerExit::Restart) => RESTART_EXIT_CODE,
        Ok(_) => 0,
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

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

fn run_worker(address: &str) -> Result<WorkerExit, String> {
    let scheduler = address
        .trim_start_matches("tcp://")
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| format!("{WORKER_OF}={address:?} is not a scheduler address (host:port)"))?;
    let name = var(env::WORKER_NAME).unwrap_or_else(|| format!("worker-{}", std::process::id()));
    let mut config = shoal_worker::WorkerConfig::new(scheduler, name);
    if let Some(t) = var(env::WORKER_THREADS) {
        config.threads = t
            .parse()
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| format!("{}={t:?} is not a number of threads", env::WORKER_THREADS))?;
    }
    config.resources = match var(env::WORKER_RESOURCES) {
        // Set by a launcher that already decided (possibly: none).
        Some(text) => {
            let mut r = shoal_deploy::parse_resources(&text).map_err(|e| format!("{}: {e}", env::WORKER_RESOURCES))?;
            r.retain(|(_, a)| *a > 0.0);
            r
        }
        None => shoal_deploy::worker_resources(None).map_err(|e| e.to_string())?,
    };
    if let Some(m) = var(env::MEMORY_LIMIT) {
        config.memory_limit = shoal_deploy::parse_bytes(&m).map_err(|e| format!("{}: {e}", env::MEMORY_LIMIT))?;
    }
    if let Some(t) = var(env::MEMORY_TARGET) {
        config.memory_target_fraction = match t.as_str() {
            "none" | "false" => None,
            _ => Some(t.parse().ok().filter(|f: &f64| *f > 0.0 && *f <= 1.0).ok_or_else(|| {
                format!("{}={t:?} is not a fraction above 0 and at most 1 (or none)", env::MEMORY_TARGET)
            })?),
        };
    }
    config.local_directory = var(env::LOCAL_DIRECTORY).map(std::path::PathBuf::from);
    if let Some(d) = var(env::DEATH_TIMEOUT) {
        let seconds: f64 = d
            .parse()
            .ok()
            .filter(|s: &f64| s.is_finite() && *s >= 0.0)
            .ok_or_else(|| format!("{}={d:?} is not a number of seconds", env::DEATH_TIMEOUT))?;
        config.death_timeout = Duration::from_secs_f64(seconds);
    }
    if let Some(t) = var(env::SAME_HOST_TRANSFER) {
        config.same_host_transfer = t.parse().map_err(|e| format!("{}: {e}", env::SAME_HOST_TRANSFER))?;
    }
    if let Some(m) = var(env::INLINE_MAX) {
        let bytes = shoal_deploy::parse_bytes(&m).map_err(|e| format!("{}: {e}", env::INLINE_MAX))?;
        config.inline_max = usize::try_from(bytes).map_err(|_| format!("{}={m:?} is too large", env::INLINE_MAX))?;
    }
    if let Some(ip) = var(env::LISTEN) {
        config.listen = ip.parse().map_err(|_| format!("{}={ip:?} is not an IP address", env::LISTEN))?;
    }
    config.exit_on_restart = std::env::var_os(env::NANNY).is_some();
    config.token = var(env::TOKEN);
    let worker = shoal_net::start_worker(config).map_err(|e| e.to_string())?;
    // Returns when the scheduler is gone for good or a restart ends this
    // process: a worker never outlives its cluster.
    Ok(worker.wait())
}

/// Registers [`init`] to run before `main`, once every remote function is
/// registered (see `shoal_graph::remote::run_after_registrations`).
#[ctor::ctor]
fn become_a_worker_if_started_as_one() {
    shoal_graph::remote::run_after_registrations(init);
}
