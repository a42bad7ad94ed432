//! Starting shoal clusters.
//!
//! [`LocalCluster`] starts a scheduler and workers on this machine and hands
//! out [`Client`]s connected to it — the same distributed path (scheduler,
//! placement, peer-to-peer data, encoded arguments and results) that a
//! cluster of machines uses, for development, tests and small jobs.
//!
//! The [`env`](mod@env) variables are how a launcher (a `LocalCluster`, `shoal
//! worker`, a job script) configures a worker process; [`parse_resources`],
//! [`parse_bytes`] and [`worker_resources`] read what users write.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shoal_client::{Client, Error};
use shoal_net::{RunningScheduler, RunningWorker, SchedulerServerConfig, start_scheduler, start_worker};
use shoal_worker::{SameHostTransfer, WorkerConfig};

pub mod jobqueue;
mod memory;
mod spec;

pub use memory::{check_terminate_fraction, past_memory_terminate, resident_bytes, stop_over_memory};
pub use spec::{SpecError, detect_gpus, format_resources, gpus_from, parse_bytes, parse_resources, worker_resources};

/// The variable that makes a process a worker (see `shoal::init`).
pub const WORKER_OF: &str = env::WORKER_OF;

/// The exit code of a worker process told to restart: its nanny (a
/// `LocalCluster`, or `shoal worker`) starts a new process in its place.
pub const RESTART_EXIT_CODE: i32 = 75;

/// The environment variables that configure a worker process; a launcher
/// sets them, `shoal::init` reads them.
pub mod env {
    /// The scheduler's address (`host:port`); its presence makes the process
    /// a worker.
    pub const WORKER_OF: &str = "SHOAL_WORKER_OF";
    /// The worker's name (default `worker-<pid>`).
    pub const WORKER_NAME: &str = "SHOAL_WORKER_NAME";
    /// Task slots (default: one per core).
    pub const WORKER_THREADS: &str = "SHOAL_WORKER_THREADS";
    /// Resources, `gpu=2,mem=4e9`. When it is not set, the worker offers the
    /// GPUs it detects; when set (even empty), exactly these.
    pub const WORKER_RESOURCES: &str = "SHOAL_WORKER_RESOURCES";
    /// The memory limit in bytes (`4e9`, `4GB`; default none).
    pub const MEMORY_LIMIT: &str = "SHOAL_MEMORY_LIMIT";
    /// The fraction of the memory limit above which results spill to disk
    /// (default 0.6; `none` never spills).
    pub const MEMORY_TARGET: &str = "SHOAL_MEMORY_TARGET";
    /// Where spilled results go (default: the temporary directory).
    pub const LOCAL_DIRECTORY: &str = "SHOAL_LOCAL_DIRECTORY";
    /// Seconds the worker keeps trying to reach a scheduler that is gone
    /// (default 0: it exits at once).
    pub const DEATH_TIMEOUT: &str = "SHOAL_DEATH_TIMEOUT";
    /// Set by a nanny that restarts the worker: a restart then ends the
    /// process (with [`RESTART_EXIT_CODE`](crate::RESTART_EXIT_CODE)).
    pub const NANNY: &str = "SHOAL_NANNY";
    /// The cluster token.
    pub const TOKEN: &str = "SHOAL_TOKEN";
    /// The address the worker serves its peers on (default: loopback, or
    /// the address on the route to a scheduler on the network).
    pub const LISTEN: &str = "SHOAL_WORKER_LISTEN";
    /// How large results move between workers of one host: `read`
    /// (default), `file` or `tcp` (see `SameHostTransfer`).
    pub const SAME_HOST_TRANSFER: &str = "SHOAL_SAME_HOST_TRANSFER";
    /// Bytes (`1024`, `64KiB`): results up to this size also travel with
    /// their completion report through the scheduler to the tasks and
    /// clients that read them (default 1 KiB; 0: none; at most 64 KiB).
    pub const INLINE_MAX: &str = "SHOAL_INLINE_MAX";
}

/// Sets what a worker process should run with, where the user has not set
/// it already:
/// - `OMP_NUM_THREADS`, `MKL_NUM_THREADS` and `OPENBLAS_NUM_THREADS` = 1:
///   each worker thread runs one task, so numeric libraries must not start
///   a thread per core each (thread oversubscription);
/// - `GLIBC_TUNABLES=glibc.malloc.hugetlb=1`: glibc's `malloc` then asks for
///   transparent huge pages. A worker keeps hundreds of thousands of small
///   records (its store, its queues) and walks them in random order; on
///   virtual machines every TLB miss costs a two-level page walk, and with
///   huge pages `cluster-noop` measured about 12 % faster. Ignored by other
///   C libraries and where huge pages are off.
pub fn tune_worker_environment(command: &mut Command) {
    for var in ["OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"] {
        if std::env::var_os(var).is_none() {
            command.env(var, "1");
        }
    }
    if std::env::var_os("GLIBC_TUNABLES").is_none() {
        command.env("GLIBC_TUNABLES", HUGE_PAGE_MALLOC);
    }
}

/// The `GLIBC_TUNABLES` value that makes glibc's `malloc` use transparent
/// huge pages (see [`tune_worker_environment`]).
pub const HUGE_PAGE_MALLOC: &str = "glibc.malloc.hugetlb=1";

/// Builds a [`LocalCluster`].
#[derive(Clone, Debug)]
pub struct LocalClusterBuilder {
    workers: usize,
    threads_per_worker: usize,
    token: Option<String>,
    processes: bool,
    resources: Vec<(String, f64)>,
    worker_resources: BTreeMap<usize, Vec<(String, f64)>>,
    memory_limit: u64,
    memory_target: Option<f64>,
    memory_terminate: Option<f64>,
    local_directory: Option<PathBuf>,
    no_worker_timeout: Option<Duration>,
    same_host_transfer: SameHostTransfer,
    inline_max: usize,
}

impl LocalClusterBuilder {
    /// How many workers (default 2).
    pub fn workers(mut self, n: usize) -> LocalClusterBuilder {
        self.workers = n;
        self
    }

    /// Task slots per worker (default: cores divided among the workers).
    pub fn threads_per_worker(mut self, n: usize) -> LocalClusterBuilder {
        self.threads_per_worker = n.max(1);
        self
    }

    /// Workers as separate processes (the default) — this program,
    /// re-executed, becoming a worker before its `main` runs — or, with
    /// `false`, as threads of this process.
    pub fn processes(mut self, processes: bool) -> LocalClusterBuilder {
        self.processes = processes;
        self
    }

    /// A cluster token that clients and workers must present.
    pub fn token(mut self, token: impl Into<String>) -> LocalClusterBuilder {
        self.token = Some(token.into());
        self
    }

    /// Resources every worker offers, by name and amount (Dask's
    /// `resources={"GPU": 1}`): tasks submitted with
    /// `TaskOptions::resources` run only on workers that have enough, and
    /// hold the amounts while they run. Nothing is detected for a local
    /// cluster's workers: what is declared here is what they offer.
    ///
    /// ```
    /// #[shoal::remote]
    /// fn on_gpu(x: u64) -> u64 { x * 2 }
    ///
    /// let cluster = shoal::LocalCluster::builder().workers(2).resources([("gpu", 1.0)]).build()?;
    /// let client = cluster.client()?;
    /// let info = client.scheduler_info()?;
    /// assert!(info.iter().all(|w| w.resources == vec![("gpu".to_string(), 1.0)]));
    /// let opts = shoal::TaskOptions::new().resources([("gpu", 1.0)]);
    /// assert_eq!(client.submit_with(&opts, on_gpu, (21u64,)).result()?, 42);
    /// # Ok::<(), shoal::Error>(())
    /// ```
    pub fn resources<S: Into<String>>(mut self, resources: impl IntoIterator<Item = (S, f64)>) -> LocalClusterBuilder {
        self.resources = resources.into_iter().map(|(n, a)| (n.into(), a)).collect();
        self
    }

    /// Resources of one worker, by its index (worker `local-<index>`, the
    /// `index`-th started, counting those [`LocalCluster::scale`] starts
    /// later), instead of those given to [`resources`](Self::resources): a
    /// cluster where only some workers have a GPU.
    ///
    /// ```
    /// #[shoal::remote]
    /// fn worker_name(_x: u64) -> String { std::env::var("SHOAL_WORKER_NAME").unwrap_or_default() }
    ///
    /// let cluster = shoal::LocalCluster::builder().workers(2).worker_resources(1, [("gpu", 1.0)]).build()?;
    /// let client = cluster.client()?;
    /// let opts = shoal::TaskOptions::new().resources([("gpu", 1.0)]).pure(false);
    /// let places = client.gather(&client.map_with(&opts, worker_name, 0..4u64))?;
    /// assert!(places.iter().all(|p| p == "local-1"), "{places:?}");
    /// # Ok::<(), shoal::Error>(())
    /// ```
    pub fn worker_resources<S: Into<String>>(
        mut self,
        index: usize,
        resources: impl IntoIterator<Item = (S, f64)>,
    ) -> LocalClusterBuilder {
        self.worker_resources.insert(index, resources.into_iter().map(|(n, a)| (n.into(), a)).collect());
        self
    }

    /// Bytes of results each worker may hold in memory (default: no
    /// limit), reported in `Client::scheduler_info`. Above 60 % of it a
    /// worker spills results to disk ([`memory_target`](Self::memory_target));
    /// above 80 % it pauses: it starts no new tasks, and the scheduler sends
    /// it none, until spilling or released results bring it below again.
    ///
    /// ```
    /// let cluster = shoal::LocalCluster::builder().workers(1).memory_limit(2_000_000_000).build()?;
    /// let info = cluster.client()?.scheduler_info()?;
    /// assert_eq!(info[0].memory_limit, 2_000_000_000);
    /// # Ok::<(), shoal::Error>(())
    /// ```
    pub fn memory_limit(mut self, bytes: u64) -> LocalClusterBuilder {
        self.memory_limit = bytes;
        self
    }

    /// The fraction of the memory limit above which a worker spills its
    /// least recently used results to disk (default 0.6, as Dask's
    /// `target`), reading them back when a task or a client needs them;
    /// `None` never spills, so a worker over 80 % pauses instead. Only
    /// matters with a [`memory_limit`](Self::memory_limit).
    ///
    /// ```
    /// #[shoal::remote]
    /// fn block(i: u64) -> Vec<u8> { vec![i as u8; 400_000] }
    ///
    /// // 1 MB per worker, 4 MB of results: most of them go to disk.
    /// let dir = std::env::temp_dir().join(format!("shoal-doc-spill-{}", std::process::id()));
    /// let cluster = shoal::LocalCluster::builder()
    ///     .workers(1)
    ///     .memory_limit(1_000_000)
    ///     .memory_target(Some(0.6))
    ///     .local_directory(&dir)
    ///     .build()?;
    /// let client = cluster.client()?;
    /// let blocks = client.map(block, 0..10u64);
    /// let back = client.gather(&blocks)?;
    /// assert!(back.iter().enumerate().all(|(i, b)| b.len() == 400_000 && b[0] == i as u8));
    /// # drop((client, cluster));
    /// # let _ = std::fs::remove_dir_all(&dir);
    /// # Ok::<(), shoal::Error>(())
    /// ```
    pub fn memory_target(mut self, fraction: Option<f64>) -> LocalClusterBuilder {
        self.memory_target = fraction;
        self
    }

    /// The fraction of the memory limit past which a worker process's
    /// resident memory makes the cluster kill it and start a new one
    /// (Dask's nanny `terminate`, 0.95 there); its tasks run again
    /// elsewhere, and one that kills every worker it runs on fails with
    /// `WorkerLost` once its attempts are spent. Default `None`: the limit
    /// counts results, and a worker's resident memory includes the program
    /// itself, so this guard is for limits well above the program's size.
    /// Worker processes only.
    ///
    /// ```
    /// #[shoal::remote]
    /// fn hog(mb: u64) -> u64 {
    ///     let v = vec![1u8; (mb as usize) << 20];
    ///     std::thread::sleep(std::time::Duration::from_secs(5)); // the nanny acts first
    ///     v.iter().map(|&b| u64::from(b)).sum()
    /// }
    ///
    /// let cluster = shoal::LocalCluster::builder()
    ///     .workers(1)
    ///     .memory_limit(200 << 20)
    ///     .memory_terminate(Some(0.95))
    ///     .build()?;
    /// let client = cluster.client()?;
    /// let err = client.submit(hog, (400u64,)).result().expect_err("no worker can hold 400 MiB");
    /// assert!(matches!(err, shoal::Error::WorkerLost { .. }), "{err}");
    /// # Ok::<(), shoal::Error>(())
    /// ```
    pub fn memory_terminate(mut self, fraction: Option<f64>) -> LocalClusterBuilder {
        self.memory_terminate = fraction;
        self
    }

    /// The directory workers spill to (each makes its own directory in it,
    /// removed when the worker ends); default: the temporary directory.
    pub fn local_directory(mut self, dir: impl Into<PathBuf>) -> LocalClusterBuilder {
        self.local_directory = Some(dir.into());
        self
    }

    /// How large results move between the workers (default
    /// [`SameHostTransfer::Read`]: straight out of the holder's memory).
    ///
    /// ```
    /// use shoal::{LocalCluster, SameHostTransfer};
    /// let cluster = LocalCluster::builder().workers(1).same_host_transfer(SameHostTransfer::File).build()?;
    /// # Ok::<(), shoal::Error>(())
    /// ```
    pub fn same_host_transfer(mut self, how: SameHostTransfer) -> LocalClusterBuilder {
        self.same_host_transfer = how;
        self
    }

    /// Results up to this many bytes (encoded) also travel with their
    /// completion report through the scheduler, which passes them to the
    /// tasks and clients that read them: no fetch from the worker that
    /// holds them (default 1 KiB; 0: every result is fetched; at most
    /// 64 KiB).
    ///
    /// ```
    /// use shoal::LocalCluster;
    /// let cluster = LocalCluster::builder().workers(1).inline_max(0).build()?;
    /// # Ok::<(), shoal::Error>(())
    /// ```
    pub fn inline_max(mut self, bytes: usize) -> LocalClusterBuilder {
        self.inline_max = bytes;
        self
    }

    /// How long a task that no worker may run (it needs resources or
    /// workers the cluster lacks) waits for such a worker to join before it
    /// fails with `Error::Rejected` saying what is missing (default: it
    /// waits for ever, saying why in `Future::pending_reason`).
    ///
    /// ```
    /// use std::time::Duration;
    /// #[shoal::remote]
    /// fn inc(x: u64) -> u64 { x + 1 }
    ///
    /// let cluster = shoal::LocalCluster::builder().workers(1).no_worker_timeout(Duration::from_millis(300)).build()?;
    /// let client = cluster.client()?;
    /// let on_a_gpu = client.submit_with(&shoal::TaskOptions::new().resources([("gpu", 1.0)]), inc, (1u64,));
    /// let err = on_a_gpu.result().expect_err("no worker has a GPU");
    /// assert!(err.to_string().contains("it needs gpu=1 and no connected worker has any gpu"), "{err}");
    /// # Ok::<(), shoal::Error>(())
    /// ```
    pub fn no_worker_timeout(mut self, timeout: Duration) -> LocalClusterBuilder {
        self.no_worker_timeout = Some(timeout);
        self
    }

    /// Starts the scheduler and the workers, listening on loopback only.
    ///
    /// # Errors
    /// [`Error::Start`] naming what could not start, or the resource that
    /// is not a name with an amount of at least zero.
    pub fn build(self) -> Result<LocalCluster, Error> {
        if std::env::var_os(WORKER_OF).is_some() {
            return Err(Error::Start(format!(
                "this process is a worker ({WORKER_OF} is set) and cannot start clusters; \
                 a worker process must not run the program's main: link the `shoal` crate, whose start-up hook \
                 turns it into a worker, or call shoal::init() first thing in main"
            )));
        }
        if let Some(f) = self.memory_target.filter(|f| !(*f > 0.0 && *f <= 1.0)) {
            return Err(Error::Start(format!("memory_target(Some({f})): give a fraction above 0 and at most 1")));
        }
        if let Some(f) = self.memory_terminate {
            check_terminate_fraction("memory_terminate", f).map_err(Error::Start)?;
            if self.memory_limit == 0 {
                return Err(Error::Start(format!(
                    "memory_terminate(Some({f})) needs a memory_limit: it is a fraction of that limit"
                )));
            }
        }
        for (name, amount) in self.resources.iter().chain(self.worker_resources.values().flatten()) {
            if name.is_empty() || !amount.is_finite() || *amount < 0.0 {
                return Err(Error::Start(format!(
                    "resource {name:?}={amount}: names must not be empty and amounts must be numbers of at least 0"
                )));
            }
        }
        let mut config = SchedulerServerConfig { token: self.token.clone(), ..Default::default() };
        config.scheduler.no_worker_timeout_us = self.no_worker_timeout.map(|t| t.as_micros() as u64);
        let scheduler = start_scheduler(config).map_err(|e| Error::Start(e.to_string()))?;
        let spec = Arc::new(Spec {
            address: scheduler.address(),
            threads: self.threads_per_worker,
            token: self.token,
            resources: self.resources,
            worker_resources: self.worker_resources,
            memory_limit: self.memory_limit,
            memory_target: self.memory_target,
            memory_terminate: self.memory_terminate,
            local_directory: self.local_directory,
            same_host_transfer: self.same_host_transfer,
            inline_max: self.inline_max,
            exe: if self.processes {
                Some(
                    std::env::current_exe()
                        .map_err(|e| Error::Start(format!("cannot find this program to start workers: {e}")))?,
                )
            } else {
                None
            },
        });
        let processes: Arc<Mutex<Vec<WorkerProcess>>> = Arc::default();
        let nanny = if self.processes {
            Some(Nanny::start(spec.clone(), processes.clone()).map_err(|e| Error::Start(e.to_string()))?)
        } else {
            None
        };
        let cluster = LocalCluster {
            spec,
            workers: Mutex::new(Vec::new()),
            processes,
            started: Mutex::new(0),
            nanny,
            scheduler: Some(scheduler),
        };
        cluster.scale(self.workers)?;
        Ok(cluster)
    }
}

/// What every worker of a local cluster is started with.
#[derive(Debug)]
struct Spec {
    address: SocketAddr,
    threads: usize,
    token: Option<String>,
    resources: Vec<(String, f64)>,
    worker_resources: BTreeMap<usize, Vec<(String, f64)>>,
    memory_limit: u64,
    memory_target: Option<f64>,
    memory_terminate: Option<f64>,
    local_directory: Option<PathBuf>,
    same_host_transfer: SameHostTransfer,
    inline_max: usize,
    /// This program, when workers are processes.
    exe: Option<PathBuf>,
}

impl Spec {
    fn name(index: usize) -> String {
        format!("local-{index}")
    }

    fn resources_of(&self, index: usize) -> Vec<(String, f64)> {
        let mut r = self.worker_resources.get(&index).unwrap_or(&self.resources).clone();
        r.retain(|(_, a)| *a > 0.0);
        r
    }

    fn config(&self, index: usize) -> WorkerConfig {
        WorkerConfig {
            threads: self.threads,
            token: self.token.clone(),
            resources: self.resources_of(index),
            memory_limit: self.memory_limit,
            memory_target_fraction: self.memory_target,
            local_directory: self.local_directory.clone(),
            same_host_transfer: self.same_host_transfer,
            inline_max: self.inline_max,
            ..WorkerConfig::new(self.address, Spec::name(index))
        }
    }

    /// Starts worker process `index`: this program, which becomes a worker
    /// before its `main` (see `shoal::init`).
    fn spawn(&self, exe: &PathBuf, index: usize) -> std::io::Result<Child> {
        let mut command = Command::new(exe);
        command
            .env(env::WORKER_OF, self.address.to_string())
            .env(env::WORKER_NAME, Spec::name(index))
            .env(env::WORKER_THREADS, self.threads.to_string())
            .env(env::WORKER_RESOURCES, format_resources(&self.resources_of(index)))
            .env(env::MEMORY_LIMIT, self.memory_limit.to_string())
            .env(env::MEMORY_TARGET, self.memory_target.map_or_else(|| "none".to_string(), |f| f.to_string()))
            // The scheduler lives in the parent: if it is gone, so is the cluster.
            .env(env::DEATH_TIMEOUT, "0")
            .env(env::NANNY, "1")
            .env(env::SAME_HOST_TRANSFER, self.same_host_transfer.name())
            .env(env::INLINE_MAX, self.inline_max.to_string())
            .stdin(Stdio::null());
        if let Some(token) = &self.token {
            command.env(env::TOKEN, token);
        }
        if let Some(dir) = &self.local_directory {
            command.env(env::LOCAL_DIRECTORY, dir);
        }
        tune_worker_environment(&mut command);
        command.spawn()
    }
}

/// Removes what killed worker process `pid`, worker `name`, could not: its
/// spill directory (in `local_directory`, or in the system's temporary
/// directory; that one only, since nodes may share the directory) and the
/// files it shared with workers of its host.
pub fn remove_worker_files(pid: u32, name: &str, local_directory: Option<&std::path::Path>) {
    let base = local_directory.map_or_else(std::env::temp_dir, std::path::Path::to_path_buf);
    let _ = std::fs::remove_dir_all(shoal_worker::spill_directory(&base, pid, name));
    shoal_net::remove_shared_files_of(pid);
}

/// Kills worker process `child` (worker `name`), waits for it, and removes
/// what it could not (see [`remove_worker_files`]).
pub fn stop_worker(child: &mut Child, name: &str, local_directory: Option<&std::path::Path>) {
    let _ = child.kill();
    let _ = child.wait();
    remove_worker_files(child.id(), name, local_directory);
}

/// A worker process of a local cluster.
struct WorkerProcess {
    child: Child,
    index: usize,
    started: Instant,
    /// When the nanny starts a new process in this one's place.
    restart_at: Option<Instant>,
}

impl WorkerProcess {
    fn new(child: Child, index: usize) -> WorkerProcess {
        WorkerProcess { child, index, started: Instant::now(), restart_at: None }
    }

    /// Kills the process and removes what it cannot remove itself.
    fn stop(&mut self, spec: &Spec) {
        stop_worker(&mut self.child, &Spec::name(self.index), spec.local_directory.as_deref());
    }
}

/// Watches a local cluster's worker processes and starts a new one in the
/// place of each that exits to restart, or that it kills for passing its
/// memory limit (Dask's nanny, for all of them).
struct Nanny {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// How often the nanny looks at its processes: a restart waits about this
/// long for its new process, and each look is one `waitpid` per worker.
const NANNY_POLL: Duration = Duration::from_millis(20);

impl Nanny {
    fn start(spec: Arc<Spec>, processes: Arc<Mutex<Vec<WorkerProcess>>>) -> std::io::Result<Nanny> {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::Builder::new().name("shoal-nanny".into()).spawn(move || {
            let Some(exe) = spec.exe.clone() else { return };
            while !stopped.load(Ordering::Acquire) {
                std::thread::sleep(NANNY_POLL);
                let Ok(mut procs) = processes.lock() else { return };
                for p in procs.iter_mut() {
                    let exited = p.child.try_wait();
                    let told_to_restart =
                        matches!(exited, Ok(Some(status)) if status.code() == Some(RESTART_EXIT_CODE));
                    if told_to_restart && p.restart_at.is_none() {
                        p.restart_at = Some(Instant::now());
                    }
                    // Only a process still running is measured: the pid of one
                    // that ended may belong to another process by now.
                    if matches!(exited, Ok(None))
                        && let Some(fraction) = spec.memory_terminate
                        && let Some(why) =
                            past_memory_terminate(&Spec::name(p.index), p.child.id(), spec.memory_limit, fraction)
                    {
                        let local = spec.local_directory.as_deref();
                        let pause = stop_over_memory(&mut p.child, &Spec::name(p.index), &why, local, p.started);
                        p.restart_at = Some(Instant::now() + pause);
                    }
                    if p.restart_at.is_some_and(|at| Instant::now() >= at) {
                        match spec.spawn(&exe, p.index) {
                            Ok(child) => *p = WorkerProcess::new(child, p.index),
                            Err(e) => {
                                eprintln!("shoal: cannot start a new process for worker {}: {e}", Spec::name(p.index))
                            }
                        }
                    }
                }
            }
        })?;
        Ok(Nanny { stop, thread: Some(thread) })
    }
}

impl Drop for Nanny {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            // The nanny thread only ends by this flag; it panics on nothing.
            let _ = thread.join();
        }
    }
}

/// A scheduler and workers on this machine.
///
/// The workers are processes of this same program by default, or threads of
/// this process with `processes(false)`; either way tasks go through the
/// scheduler, their functions must be `#[shoal::remote]`, and data moves
/// between workers over loopback TCP. [`LocalCluster::close`] or dropping the
/// cluster stops everything, worker processes included. The `shoal`
/// crate's documentation has a runnable example.
pub struct LocalCluster {
    spec: Arc<Spec>,
    workers: Mutex<Vec<RunningWorker>>,
    processes: Arc<Mutex<Vec<WorkerProcess>>>,
    started: Mutex<usize>,
    nanny: Option<Nanny>,
    scheduler: Option<RunningScheduler>,
}

impl LocalCluster {
    /// A builder: two worker processes, the cores shared among them.
    pub fn builder() -> LocalClusterBuilder {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        LocalClusterBuilder {
            workers: 2,
            threads_per_worker: (cores / 2).max(1),
            token: None,
            processes: true,
            resources: Vec::new(),
            worker_resources: BTreeMap::new(),
            memory_limit: 0,
            memory_target: Some(0.6),
            memory_terminate: None,
            local_directory: None,
            same_host_transfer: SameHostTransfer::default(),
            no_worker_timeout: None,
            inline_max: shoal_worker::DEFAULT_INLINE_MAX,
        }
    }

    /// The scheduler's address.
    pub fn address(&self) -> SocketAddr {
        self.spec.address
    }

    /// A client of this cluster (it also becomes the current client).
    ///
    /// # Errors
    /// [`Error::Start`] when the scheduler cannot be reached.
    pub fn client(&self) -> Result<Client, Error> {
        Client::connect_with_token(&self.spec.address.to_string(), self.spec.token.as_deref())
    }

    /// How many workers are running (or starting).
    pub fn worker_count(&self) -> usize {
        self.workers.lock().map_or(0, |w| w.len()) + self.processes.lock().map_or(0, |p| p.len())
    }

    /// Process ids of the worker processes (a restart gives new ones).
    pub fn worker_pids(&self) -> Vec<u32> {
        self.processes.lock().map_or_else(|_| Vec::new(), |p| p.iter().map(|p| p.child.id()).collect())
    }

    /// Starts or stops workers until there are `n`. Stopped workers' results
    /// are recomputed elsewhere if still needed.
    ///
    /// # Errors
    /// [`Error::Start`] when a worker cannot start.
    pub fn scale(&self, n: usize) -> Result<(), Error> {
        if let Some(exe) = &self.spec.exe {
            return self.scale_processes(exe, n);
        }
        let mut workers =
            self.workers.lock().map_err(|_| Error::Start("the cluster's worker list is poisoned".into()))?;
        let mut started = self.started.lock().map_err(|_| Error::Start("the cluster's counter is poisoned".into()))?;
        while workers.len() > n {
            workers.pop();
        }
        while workers.len() < n {
            let config = self.spec.config(*started);
            *started += 1;
            workers.push(start_worker(config).map_err(|e| Error::Start(e.to_string()))?);
        }
        Ok(())
    }
}

impl LocalCluster {
    fn scale_processes(&self, exe: &PathBuf, n: usize) -> Result<(), Error> {
        let mut children =
            self.processes.lock().map_err(|_| Error::Start("the cluster's process list is poisoned".into()))?;
        let mut started = self.started.lock().map_err(|_| Error::Start("the cluster's counter is poisoned".into()))?;
        while children.len() > n {
            if let Some(mut p) = children.pop() {
                p.stop(&self.spec);
            }
        }
        while children.len() < n {
            let index = *started;
            *started += 1;
            let child =
                self.spec.spawn(exe, index).map_err(|e| Error::Start(format!("cannot start a worker process: {e}")))?;
            children.push(WorkerProcess::new(child, index));
        }
        drop(started);
        // Wait until the scheduler knows them all, or a worker died.
        let client = self.client()?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if client.scheduler_info()?.len() >= n {
                return Ok(());
            }
            for p in children.iter_mut() {
                if let Ok(Some(status)) = p.child.try_wait() {
                    return Err(Error::Start(format!(
                        "worker process {} exited ({status}) before joining; does the program link the `shoal` crate?",
                        p.child.id()
                    )));
                }
            }
            if Instant::now() > deadline {
                return Err(Error::Start(format!("{n} workers did not join the scheduler within 60 s")));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl LocalCluster {
    /// Stops every worker and the scheduler, and returns once the worker
    /// processes are gone and their files removed (Dask's
    /// `cluster.close()`). Clients of the cluster see their connection
    /// close. Dropping the cluster does the same; `close` says so where
    /// the code reads it.
    ///
    /// ```
    /// let cluster = shoal_deploy::LocalCluster::builder().processes(false).workers(2).build()?;
    /// let client = cluster.client()?;
    /// assert_eq!(client.scheduler_info()?.len(), 2);
    /// drop(client);
    /// cluster.close();
    /// # Ok::<(), shoal_client::Error>(())
    /// ```
    pub fn close(self) {
        drop(self);
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        // The nanny first, so that it starts nothing new while its
        // processes are killed.
        self.nanny.take();
        if let Ok(mut workers) = self.workers.lock() {
            workers.clear();
        }
        if let Ok(mut children) = self.processes.lock() {
            for mut p in children.drain(..) {
                p.stop(&self.spec);
            }
        }
        self.scheduler.take();
    }
}
