//! The nanny's memory guard: with a terminate fraction set
//! ([`LocalClusterBuilder::memory_terminate`](crate::LocalClusterBuilder::memory_terminate),
//! `shoal worker --memory-terminate`), a worker process whose resident
//! memory passes that fraction of its memory limit is killed and started
//! afresh, as Dask's nanny does at 95 %.
//!
//! The worker itself spills results to disk past its target and stops
//! taking tasks past its pause fraction, but it counts only the results it
//! holds. A task that allocates far more than its result (or leaks) is what
//! this guard is for: the machine's memory is shared, and one runaway
//! worker must not take the node (and every other worker on it) down with
//! the kernel's out-of-memory killer. The scheduler sees the worker lost and
//! runs its tasks elsewhere; a task that kills every worker it runs on fails
//! with `WorkerLost` once its allowed attempts are spent.
//!
//! Resident memory includes the program itself (some megabytes): the guard
//! is off by default because a memory limit of results alone may be smaller
//! than that.

use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

/// The resident memory of process `pid`, in bytes, from `/proc`; `None`
/// where there is no `/proc` or the process is gone.
pub fn resident_bytes(pid: u32) -> Option<u64> {
    vm_rss(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
}

/// The `VmRSS` line of a `/proc/<pid>/status` text, in bytes.
fn vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
    let kib: u64 = line.trim().strip_suffix("kB")?.trim().parse().ok()?;
    kib.checked_mul(1024)
}

/// Why worker `name` (process `pid`) must be restarted, if its resident
/// memory is past `fraction` of `memory_limit` (0: no limit).
pub fn past_memory_terminate(name: &str, pid: u32, memory_limit: u64, fraction: f64) -> Option<String> {
    if memory_limit == 0 {
        return None;
    }
    let resident = resident_bytes(pid)?;
    let threshold = (memory_limit as f64 * fraction) as u64;
    (resident > threshold).then(|| {
        format!(
            "worker {name} (process {pid}) uses {resident} bytes, past {:.0} % of its {memory_limit}-byte memory \
             limit: restarting it (its tasks run again elsewhere; a task that needs more memory than a worker has \
             fails once its attempts are spent)",
            fraction * 100.0
        )
    })
}

/// The least time between a worker killed for memory and its next start:
/// a process over the limit as soon as it starts (a limit near the
/// program's own size) is not restarted in a tight loop.
const RESTART_PAUSE: Duration = Duration::from_secs(1);

/// Kills worker `name`'s process for passing its memory limit (`why` says
/// how; see [`past_memory_terminate`]), removes what it leaves behind (see
/// [`remove_worker_files`](crate::remove_worker_files)), and says how long
/// its nanny waits before starting the next one.
pub fn stop_over_memory(
    child: &mut Child,
    name: &str,
    why: &str,
    local_directory: Option<&Path>,
    started: Instant,
) -> Duration {
    eprintln!("shoal: {why}");
    crate::stop_worker(child, name, local_directory);
    let lived = started.elapsed();
    if lived >= RESTART_PAUSE {
        return Duration::ZERO;
    }
    eprintln!(
        "shoal: worker {name} passed its limit {lived:.1?} after starting; is the memory limit larger than the \
         program itself? starting it again in {RESTART_PAUSE:?}"
    );
    RESTART_PAUSE
}

/// Checks a terminate fraction; `what` names the option in the error.
///
/// # Errors
/// A fraction that is not a number above 0.
pub fn check_terminate_fraction(what: &str, fraction: f64) -> Result<(), String> {
    if fraction.is_finite() && fraction > 0.0 {
        Ok(())
    } else {
        Err(format!("{what} {fraction}: give a fraction of the memory limit above 0 (Dask's is 0.95)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_resident_size_is_read_from_the_status_text() {
        let status = "Name:\tprog\nVmPeak:\t  9000 kB\nVmRSS:\t    1234 kB\nThreads:\t3\n";
        assert_eq!(vm_rss(status), Some(1234 * 1024));
        assert_eq!(vm_rss("Name:\tprog\n"), None);
        assert_eq!(vm_rss("VmRSS:\t  12x kB\n"), None);
        assert_eq!(vm_rss("VmRSS:\t  12 MB\n"), None);
    }

    #[test]
    fn this_process_is_measured_and_judged_against_a_limit() {
        let pid = std::process::id();
        if std::path::Path::new("/proc/self/status").exists() {
            let resident = resident_bytes(pid).expect("this process has a resident size");
            assert!(resident > 100 << 10, "{resident} bytes");
            let why =
                past_memory_terminate("local-7", pid, 1 << 20, 0.95).expect("a test binary takes more than 1 MiB");
            assert!(why.contains("local-7") && why.contains("95 % of its 1048576-byte memory limit"), "{why}");
        }
        assert_eq!(past_memory_terminate("local-7", pid, 0, 0.95), None, "no limit");
        assert_eq!(past_memory_terminate("local-7", pid, u64::MAX / 2, 0.95), None);
    }

    #[test]
    fn a_terminate_fraction_must_be_a_positive_number() {
        assert!(check_terminate_fraction("x", 0.95).is_ok() && check_terminate_fraction("x", 1.5).is_ok());
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let err = check_terminate_fraction("memory_terminate", bad).expect_err("not a fraction");
            assert!(err.starts_with("memory_terminate"), "{err}");
        }
    }
}
