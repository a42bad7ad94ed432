//! Starting shoal clusters.
//!
//! - [`LocalCluster`] starts a scheduler and workers on this machine and
//!   hands out [`Client`](shoal_client::Client)s connected to it — the same
//!   distributed path (scheduler, placement, peer-to-peer data, encoded
//!   arguments and results) that a cluster of machines uses, for
//!   development, tests and small jobs.
//! - [`jobqueue`] submits workers as batch jobs of SLURM, Grid Engine, PBS
//!   or HTCondor, and [`efficiency`] reads back how well a finished job used
//!   what it reserved.
//! - [`WorkerLaunch`] is the one contract between a launcher and the worker
//!   process it starts: every option, as a variable and as a flag, read and
//!   checked in one place. [`WorkerProcess`] is the nanny that starts and
//!   restarts a worker process from it.
//! - [`mpi`] turns one program started by `mpirun` (or `mpiexec`, `srun`)
//!   into a cluster: rank 0 the scheduler, rank 1 `main`, the rest workers.
//! - [`parse_resources`], [`parse_bytes`] and [`worker_resources`] read what
//!   users write.

pub mod efficiency;
mod error;
pub mod jobqueue;
mod launch;
mod local;
pub mod mpi;
mod nanny;
mod spec;

pub use error::DeployError;
pub use launch::{
    LaunchError, Spelling, TUNED_ENVIRONMENT, WorkerLaunch, WorkerOption, default_name, host_name, tune_environment,
};
pub use local::{LocalCluster, LocalClusterBuilder};
pub use nanny::{NANNY_POLL, Restart, Watched, WorkerProcess, WorkerProgram, remove_worker_files};
pub use spec::{
    SpecError, cpus_granted, detect_cpus, detect_gpus, format_resources, gpus_from, parse_bytes, parse_resources,
    worker_resources,
};

/// A fresh cluster token: 128 bits from the kernel's random source, hex.
pub(crate) fn fresh_token() -> Result<String, DeployError> {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|source| DeployError::Io { what: "cannot read /dev/urandom for a cluster token", source })?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// This host's address on its default route (toward a documentation
/// address, to which nothing is sent).
pub(crate) fn default_route_ip() -> Option<std::net::IpAddr> {
    shoal_net::route_to(std::net::SocketAddr::from(([198, 51, 100, 1], 9)))
}

/// The variable that makes a process a worker (see `shoal::init`).
pub const WORKER_OF: &str = WorkerOption::Scheduler.env();

/// The exit code of a worker process told to restart: its nanny (a
/// `LocalCluster`, or `shoal worker`) starts a new process in its place.
pub const RESTART_EXIT_CODE: i32 = 75;

/// The `GLIBC_TUNABLES` value that makes glibc's `malloc` use transparent
/// huge pages (see [`TUNED_ENVIRONMENT`]).
pub const HUGE_PAGE_MALLOC: &str = "glibc.malloc.hugetlb=1";

/// Starts this program again, once, with `GLIBC_TUNABLES` set to
/// [`HUGE_PAGE_MALLOC`], unless the user set `GLIBC_TUNABLES` (to
/// anything); returns only when that did not happen.
///
/// glibc's `malloc` uses transparent huge pages only when told so at
/// start-up. A scheduler keeps hundreds of thousands of small records and
/// visits them in random order, and on virtual machines each TLB miss
/// costs a two-level page walk: with huge pages `cluster-noop` measured
/// about 20 % faster. The `shoal` and `shoal-bench` binaries call this
/// first; child processes inherit the setting. Other C libraries ignore
/// the variable; elsewhere than Linux this does nothing. A rank of an
/// `mpirun` run is never restarted: its place in the run is taken before
/// `main` (rank 1 is already the run's client).
pub fn restart_with_huge_page_malloc() {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        if std::env::var_os("GLIBC_TUNABLES").is_some() || matches!(mpi::MpiWorld::from_env(), Ok(Some(_))) {
            return;
        }
        let Ok(exe) = std::env::current_exe() else { return };
        // `exec` returns only if it failed; then this process just goes on.
        let _failed = std::process::Command::new(exe)
            .args(std::env::args_os().skip(1))
            .env("GLIBC_TUNABLES", HUGE_PAGE_MALLOC)
            .exec();
    }
}
