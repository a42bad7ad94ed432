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
//!
//! A process started by an MPI launcher with 3 ranks or more (`mpirun -np
//! N`, `mpiexec -n N`, `srun -n N`) takes its part of a whole cluster
//! instead ([`shoal_deploy::mpi`]): rank 0 the scheduler and ranks 2 and up
//! workers, which never return into `main`, and rank 1 a client that does.

use std::sync::{Once, OnceLock};
use std::time::Duration;

use shoal_client::Client;
use shoal_deploy::mpi::{MpiWorld, RankEnd, run_rank};
pub use shoal_deploy::{RESTART_EXIT_CODE, WORKER_OF};
use shoal_deploy::{Spelling, WorkerLaunch};
use shoal_net::WorkerExit;

/// Rank 1's client of its `mpirun` run, kept for the life of the process
/// (so [`Client::current`] finds it).
static MPI_CLIENT: OnceLock<Client> = OnceLock::new();
static MPI_RANK: Once = Once::new();
static MPI_REFUSED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Keeps this program out of `mpirun` mode, whatever launcher starts it:
/// for a program meant to be started as many independent copies, as the
/// `shoal` command is (`srun -n 4 shoal worker tcp://…` starts 4 workers).
/// Call it from a constructor (`#[ctor::ctor]`): the mode is taken
/// before `main`.
pub fn refuse_mpi_mode() {
    MPI_REFUSED.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Becomes a worker if this process was started as one (and then exits);
/// takes its part of an `mpirun` run if an MPI launcher started it with 3
/// ranks or more (see [`init_mpi`]); returns at once otherwise. It runs
/// automatically before `main`; calling it again is harmless.
///
/// The worker process exits with 0 when its scheduler is gone (after its
/// death timeout), with [`RESTART_EXIT_CODE`] when its nanny is to start a
/// new process in its place, and with 1 when it could not start, after
/// printing why.
pub fn init() {
    let code = match run_worker() {
        Ok(None) => {
            MPI_RANK.call_once(become_an_mpi_rank);
            return;
        }
        Ok(Some(WorkerExit::Restart)) => RESTART_EXIT_CODE,
        Ok(Some(_)) => 0,
        Err(message) => {
            eprintln!("shoal worker: {message}");
            1
        }
    };
    std::process::exit(code);
}

/// The client of this program's `mpirun` run, as dask-mpi's
/// `initialize()` then `Client()`: started as `mpirun -np N ./prog` (or
/// `mpiexec -n N`, `srun -n N`; N at least 3), rank 0 of the program
/// becomes the scheduler and ranks 2 and up its workers, before `main`;
/// rank 1 runs `main`, where this returns its client once every worker
/// rank has joined (and [`Client::current`] returns the same one, so
/// collections compute on the cluster without naming it).
///
/// No MPI library is linked: ranks come from the launcher's variables
/// (Open MPI, MPICH and Intel MPI's Hydra, PMIx, `srun`). The scheduler's
/// address and a fresh token pass through the launcher's PMI where it has
/// one, through a private file in the run's directory when every rank is
/// on one node, and otherwise through `SHOAL_SCHEDULER_FILE`, a path on a
/// directory every node shares. When `main` returns, the scheduler stops
/// the workers and every rank exits 0; when any rank dies, the others end
/// within seconds, non-zero, saying which. `SHOAL_MPI=0` turns the mode
/// off for a program run under a launcher for other reasons.
///
/// A process that no launcher started as one of 3 or more ranks — run on
/// its own, or N copies started by a launcher of another MPI, each rank 0
/// of 1 — prints why and exits with code 2.
///
/// ```no_run
/// use shoal::array::{self, RandomState};
///
/// fn main() -> Result<(), Box<dyn std::error::Error>> {
///     let client = shoal::init_mpi();
///     println!("{} workers", client.scheduler_info()?.len());
///     let x = RandomState::new(0).random(&[10_000, 1_000], [1_000, 1_000]);
///     let column_sums = array::arcsin(&x).sum([0]).compute()?;
///     println!("{:?}", &column_sums.as_slice().unwrap_or(&[])[..5]);
///     Ok(())
/// }
/// ```
pub fn init_mpi() -> Client {
    init();
    if let Some(client) = MPI_CLIENT.get() {
        return client.clone();
    }
    eprintln!("shoal mpirun: {}", MpiWorld::not_launched(|name| std::env::var(name).ok()));
    std::process::exit(2);
}

/// Takes this process's part of an `mpirun` run, if it is in one: the
/// scheduler's and the workers' ranks exit when the run ends; rank 1 keeps
/// its client and returns.
fn become_an_mpi_rank() {
    if MPI_REFUSED.load(std::sync::atomic::Ordering::Relaxed) {
        return;
    }
    let world = match MpiWorld::from_env() {
        Ok(Some(world)) => world,
        Ok(None) => return,
        Err(e) => {
            eprintln!("shoal mpirun: {e}");
            std::process::exit(2);
        }
    };
    match run_rank(&world) {
        Ok(RankEnd::Exit(code)) => std::process::exit(code),
        Ok(RankEnd::Client(client)) => {
            watch_the_scheduler(client.clone());
            let _ = MPI_CLIENT.set(client);
        }
        Err(e) => {
            eprintln!("shoal mpirun: {e}");
            std::process::exit(1);
        }
    }
}

/// Ends rank 1 when its scheduler is gone, whatever `main` is doing: the
/// run cannot go on without rank 0.
fn watch_the_scheduler(client: Client) {
    let watch = move || {
        while client.is_connected() {
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("shoal mpirun: rank 1 (main): the scheduler (rank 0) is gone; ending the run");
        std::process::exit(1);
    };
    if let Err(e) = std::thread::Builder::new().name("shoal-mpi-watch".into()).spawn(watch) {
        eprintln!("shoal mpirun: rank 1 cannot watch its scheduler: {e}");
    }
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
