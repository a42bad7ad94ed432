//! shoal: parallel task graphs for Rust programs, from the threads of one
//! process to the nodes of a cluster.
//!
//! Describe work as tasks — plain Rust functions and their arguments — and
//! shoal runs them in parallel, each as soon as its inputs exist:
//!
//! - [`Client`] submits tasks and returns [`Future`]s ([`Client::submit`],
//!   [`Client::map`]); futures are arguments of later tasks, and [`gather`],
//!   [`wait`], [`as_completed`] collect them.
//! - [`delayed`] builds a lazy graph that [`Delayed::compute`] or [`compute`]
//!   runs, sharing common work and freeing intermediate results early.
//! - A task that panics or returns `Err` fails only its own future, with its
//!   key and message; the tasks that need it fail naming it ([`Error`]).
//! - [`ProgressBar`] draws progress on the terminal.
//! - Equal pure calls get equal [`Key`]s, so they run once.
//!
//! ```
//! use shoal::{Client, delayed};
//!
//! fn double(x: i64) -> i64 { x * 2 }
//! fn add(a: i64, b: i64) -> i64 { a + b }
//!
//! let client = Client::threads()?;
//! let futures = client.map(double, 0..10i64);
//! let total = client.submit(add, (&futures[1], &futures[2]));
//! assert_eq!(total.result()?, 6);
//!
//! let lazy = delayed(add, (delayed(double, (3,)), 4));
//! assert_eq!(lazy.compute()?, 10);
//! # Ok::<(), shoal::Error>(())
//! ```
//!
//! The same calls run on a cluster: a scheduler and workers
//! ([`LocalCluster`] starts them on this machine, `shoal worker` on the nodes
//! of a batch job), with functions marked
//! [`#[shoal::remote]`](macro@remote) so every process can find them by name.
//! A cluster adds [`Client::scatter`] (data put on the workers once),
//! [`Client::run`] (a function on every worker), [`Client::restart`],
//! [`Client::persist`], and [`TaskOptions`] for priorities, resources
//! (`gpu`, memory, anything named) and worker restrictions:
//!
//! ```
//! #[shoal::remote]
//! fn square(x: u64) -> u64 { x * x }
//!
//! let cluster = shoal::LocalCluster::builder().workers(2).threads_per_worker(1).build()?;
//! let client = cluster.client()?;
//! let futures = client.map(square, 0..10u64);
//! assert_eq!(client.gather(&futures)?.iter().sum::<u64>(), 285);
//! # Ok::<(), shoal::Error>(())
//! ```

#![deny(missing_docs)]

/// What [`Client::scheduler_info`] says of each worker of a cluster.
///
/// ```
/// let cluster = shoal::LocalCluster::builder()
///     .processes(false)
///     .workers(2)
///     .threads_per_worker(1)
///     .memory_limit(1 << 30)
///     .resources([("gpu", 1.0)])
///     .build()?;
/// let info: Vec<shoal::WorkerInfo> = cluster.client()?.scheduler_info()?;
/// for w in &info {
///     // Its number and name, where peers fetch from it, its task slots, its
///     // memory limit and what it held at its last heartbeat, its resources.
///     println!("{} {} at {}: {} threads, {} of {} bytes, {:?}",
///              w.id, w.name, w.data_address, w.threads, w.memory, w.memory_limit, w.resources);
/// }
/// assert_eq!(info.len(), 2);
/// assert!(info.iter().all(|w| w.threads == 1 && w.memory_limit == 1 << 30));
/// // Each offers its task slots as CPUs too (Ray's `num_cpus`).
/// assert!(info.iter().all(|w| w.resources == vec![("gpu".to_string(), 1.0), ("cpu".to_string(), 1.0)]));
/// # Ok::<(), shoal::Error>(())
/// ```
pub use shoal_client::WorkerInfo;
pub use shoal_client::{
    ArgContext, AsCompleted, Cause, Client, ClientBuilder, Computable, Delayed, Error, Executor, Future, IntoArg,
    IntoArgs, MapInput, ProgressBar, Status, TaskOptions, as_completed, compute, delayed, delayed_with,
    fire_and_forget, gather, progress, wait, wait_timeout,
};
pub use shoal_deploy::{LocalCluster, LocalClusterBuilder};
pub use shoal_graph::{Blob, Key, TaskError, TaskOutput, Token, VisualizeError, task_output};
/// A worker's number in its cluster ([`WorkerInfo::id`]).
pub use shoal_proto::WorkerId;
pub use shoal_worker::SameHostTransfer;

mod role;

pub use role::{RESTART_EXIT_CODE, WORKER_OF, init, init_mpi, is_worker, refuse_mpi_mode};
/// `mpirun` mode's pieces: ranks, launchers, and how the scheduler's address travels.
pub use shoal_deploy::mpi;

/// Marks a function as runnable on remote workers; see [`remote`](mod@remote).
pub use shoal_macros::{actor, main, remote};

/// Remote functions: the registry `#[shoal::remote]` fills, and the codecs.
///
/// ```
/// #[shoal::remote]
/// fn scale(x: f64, by: f64) -> f64 { x * by }
///
/// let name = format!("{}::scale", module_path!());
/// let f = shoal::remote::require(&name)?;
/// let args = [f.encode_arg(0, &2.5f64)?, f.encode_arg(1, &4.0f64)?];
/// assert_eq!(f.decode_result::<f64>(&f.call_encoded(&args)?)?, 10.0);
/// assert!(shoal::remote::require("nowhere::missing").is_err());
/// # Ok::<(), shoal::remote::RemoteError>(())
/// ```
pub mod remote {
    pub use shoal_graph::remote::*;
}

#[doc(hidden)]
pub mod __private {
    pub use inventory;
    pub use serde;
}

/// Actors: stateful objects that live on a worker, their methods called
/// with futures for their results; see [`shoal_client::actor`] and
/// [`#[shoal::actor]`](macro@actor).
///
/// ```
/// pub struct Counter { n: u64 }
///
/// #[shoal::actor]
/// impl Counter {
///     pub fn new() -> Counter { Counter { n: 0 } }
///     pub fn increment(&mut self) -> u64 { self.n += 1; self.n }
/// }
///
/// let cluster = shoal::LocalCluster::builder().workers(2).build()?;
/// let client = cluster.client()?;
/// let counters: Vec<_> = (0..4).map(|_| client.actor(Counter::new, ())).collect();
/// let calls: Vec<_> = counters.iter().map(|c| c.increment()).collect();
/// assert_eq!(shoal::gather(&calls)?, vec![1, 1, 1, 1]);
/// # Ok::<(), shoal::Error>(())
/// ```
pub mod actor {
    pub use shoal_client::actor::*;
    pub use shoal_graph::actor::ActorCell;
}

/// The README's examples, compiled and run as doctests.
#[doc = include_str!("../../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

/// Ray's spelling of tasks on shoal's runtime: `f.remote(x)`, [`get`],
/// [`put`], and Ray's [`wait`](ray::wait) (the root [`wait`] is Dask's);
/// see [`shoal_client::ray`].
///
/// ```
/// use shoal::ray::Remote;
///
/// #[shoal::remote]
/// fn increment(x: u64) -> u64 { x + 1 }
///
/// let cluster = shoal::LocalCluster::builder().workers(2).build()?;
/// let _client = cluster.client()?;                  // the current client: calls go here
/// let refs: Vec<_> = (0..8u64).map(|x| increment.remote(x)).collect();
/// assert_eq!(shoal::get(&refs)?, (1..=8).collect::<Vec<u64>>());
/// # Ok::<(), shoal::Error>(())
/// ```
pub mod ray {
    pub use shoal_client::ray::*;
}

pub use shoal_client::ray::{get, put};

/// Chunked n-dimensional arrays (Dask's `dask.array`); see [`shoal_array`].
///
/// ```
/// use shoal::array::{self, RandomState};
/// let rng = RandomState::new(1);
/// let x = rng.random(&[200, 300], [100, 100]);
/// let z = (array::arcsin(&x) + array::arccos(&x)).mean(..);
/// assert!((z.compute()?.sum() - std::f64::consts::FRAC_PI_2).abs() < 1e-12);
/// # Ok::<(), shoal::array::ArrayError>(())
/// ```
pub mod array {
    pub use shoal_array::*;
}

/// Bags: partitioned collections of plain values, as Dask's `dask.bag`
/// (see [`shoal_bag`] for the whole list of operations). Steps fuse into
/// one task per partition; on a cluster they are `#[shoal::remote]`
/// functions.
///
/// ```
/// #[shoal::remote]
/// fn double(x: i64) -> i64 { x * 2 }
///
/// let b = shoal::bag::from_sequence(0..10);
/// assert_eq!(b.to_string(), "shoal.bag<from_sequence, npartitions=10>");
/// assert_eq!(b.map(double).compute()?, vec![0, 2, 4, 6, 8, 10, 12, 14, 16, 18]);
/// # Ok::<(), shoal::bag::BagError>(())
/// ```
pub mod bag {
    pub use shoal_bag::*;
}

/// Launching workers: the contract between a launcher and the worker
/// process it starts — every option, as an environment variable and as a
/// `shoal worker` flag — for job scripts and launchers of your own.
///
/// ```
/// use shoal::deploy::WorkerOption;
/// // What a hand-written job script exports for a worker of 4 threads.
/// assert_eq!(WorkerOption::Threads.env(), "SHOAL_WORKER_THREADS");
/// assert_eq!(WorkerOption::Scheduler.env(), shoal::WORKER_OF);
/// ```
pub mod deploy {
    pub use shoal_deploy::{DeployError, LaunchError, Spelling, WorkerLaunch, WorkerOption};
    pub use shoal_net::{ResolveError, ServerError, WorkerError};
    pub use shoal_proto::{AddressError, PeerAddress};
}

/// Workers as batch jobs of SLURM, Grid Engine, PBS or HTCondor, with the scheduler in
/// this process (dask-jobqueue's clusters).
pub mod jobqueue {
    pub use shoal_deploy::jobqueue::*;
}

/// The task-graph core: keys, tasks, graphs, culling and ordering.
pub mod graph {
    pub use shoal_graph::*;
}
