//! [`LocalCluster`]: a scheduler and workers on this machine.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shoal_client::{Client, Error};
use shoal_net::{RunningScheduler, RunningWorker, SchedulerServerConfig, start_scheduler, start_worker};
use shoal_proto::PeerAddress;
use shoal_worker::SameHostTransfer;

use crate::DeployError;
use crate::launch::{Spelling, WorkerLaunch, WorkerOption};
use crate::nanny::{NANNY_POLL, Watched, WorkerProcess, WorkerProgram};

/// How long [`LocalCluster::scale`] waits for new worker processes to join.
const JOIN_TIMEOUT: Duration = Duration::from_secs(60);

/// Builds a [`LocalCluster`].
#[derive(Clone, Debug)]
pub struct LocalClusterBuilder {
    workers: usize,
    processes: bool,
    /// What every worker is launched with (its scheduler and name are set
    /// per worker).
    launch: WorkerLaunch,
    worker_resources: BTreeMap<usize, Vec<(String, f64)>>,
    no_worker_timeout: Option<Duration>,
}

impl LocalClusterBuilder {
    /// How many workers (default 2).
    pub fn workers(mut self, n: usize) -> LocalClusterBuilder {
        self.workers = n;
        self
    }

    /// Task slots per worker (default: cores divided among the workers).
    pub fn threads_per_worker(mut self, n: usize) -> LocalClusterBuilder {
        self.launch.threads = Some(n.max(1));
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
        self.launch.token = Some(token.into());
        self
    }

    /// Resources every worker offers, by name and amount (Dask's
    /// `resources={"GPU": 1}`): tasks submitted with
    /// `TaskOptions::resources` run only on workers that have enough, and
    /// hold the amounts while they run. No GPUs are detected for a local
    /// cluster's workers: what is declared here is what they offer, with
    /// their task slots as `cpu` (unless `cpu` is declared).
    ///
    /// ```
    /// #[shoal::remote]
    /// fn on_gpu(x: u64) -> u64 { x * 2 }
    ///
    /// let cluster =
    ///     shoal::LocalCluster::builder().workers(2).threads_per_worker(1).resources([("gpu", 1.0)]).build()?;
    /// let client = cluster.client()?;
    /// let info = client.scheduler_info()?;
    /// let offered = vec![("gpu".to_string(), 1.0), ("cpu".to_string(), 1.0)];
    /// assert!(info.iter().all(|w| w.resources == offered));
    /// let opts = shoal::TaskOptions::new().resources([("gpu", 1.0)]);
    /// assert_eq!(client.submit_with(&opts, on_gpu, (21u64,)).result()?, 42);
    /// # Ok::<(), shoal::Error>(())
    /// ```
    pub fn resources<S: Into<String>>(mut self, resources: impl IntoIterator<Item = (S, f64)>) -> LocalClusterBuilder {
        self.launch.resources = Some(resources.into_iter().map(|(n, a)| (n.into(), a)).collect());
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
        self.launch.memory_limit = bytes;
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
        self.launch.memory_target = fraction;
        self
    }

    /// The fraction of the memory limit above which a worker pauses: it
    /// starts no new tasks, and the scheduler sends it none, until
    /// spilling or released results bring it below again (default 0.8, as
    /// Dask's `pause`). Only matters with a
    /// [`memory_limit`](Self::memory_limit).
    ///
    /// ```
    /// let cluster = shoal::LocalCluster::builder().memory_limit(1 << 30).memory_pause(0.9).build()?;
    /// let err = shoal::LocalCluster::builder().memory_pause(1.5).build().err().expect("not a fraction");
    /// assert!(err.to_string().contains("memory_pause 1.5"), "{err}");
    /// # Ok::<(), shoal::Error>(())
    /// ```
    pub fn memory_pause(mut self, fraction: f64) -> LocalClusterBuilder {
        self.launch.memory_pause = fraction;
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
        self.launch.memory_terminate = fraction;
        self
    }

    /// The directory workers spill to (each makes its own directory in it,
    /// removed when the worker ends); default: the temporary directory.
    pub fn local_directory(mut self, dir: impl Into<PathBuf>) -> LocalClusterBuilder {
        self.launch.local_directory = Some(dir.into());
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
        self.launch.same_host_transfer = how;
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
        self.launch.inline_max = bytes;
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
    pub fn build(self) -> Result<LocalCluster, DeployError> {
        let worker_of = WorkerOption::Scheduler.env();
        if std::env::var_os(worker_of).is_some() {
            return Err(DeployError::InsideWorker);
        }
        self.launch.validate(Spelling::Code)?;
        for resources in self.worker_resources.values() {
            let one = WorkerLaunch { resources: Some(resources.clone()), ..WorkerLaunch::default() };
            one.check(WorkerOption::Resources, Spelling::Code)?;
        }
        let mut config = SchedulerServerConfig { token: self.launch.token.clone(), ..Default::default() };
        config.scheduler.no_worker_timeout_us = self.no_worker_timeout.map(|t| t.as_micros() as u64);
        let scheduler = start_scheduler(config)?;
        let mut launch = self.launch;
        launch.scheduler = Some(PeerAddress::from_socket(scheduler.address()));
        // The scheduler lives in this process: if it is gone, so is the cluster.
        launch.death_timeout = Duration::ZERO;
        let program =
            if self.processes { Some(WorkerProgram::this_program().map_err(DeployError::CurrentExe)?) } else { None };
        let spec =
            Arc::new(Spec { address: scheduler.address(), launch, worker_resources: self.worker_resources, program });
        let processes: Arc<Mutex<Vec<WorkerProcess>>> = Arc::default();
        let nanny = if self.processes {
            Some(
                Nanny::start(processes.clone())
                    .map_err(|source| DeployError::Io { what: "cannot start the nanny's thread", source })?,
            )
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
    launch: WorkerLaunch,
    worker_resources: BTreeMap<usize, Vec<(String, f64)>>,
    /// This program, when workers are processes.
    program: Option<WorkerProgram>,
}

impl Spec {
    fn name(index: usize) -> String {
        format!("local-{index}")
    }

    /// Worker `index`'s options: its name, and its own resources if it has
    /// any.
    fn launch(&self, index: usize) -> WorkerLaunch {
        let mut launch = self.launch.clone();
        launch.name = Some(Spec::name(index));
        let mut resources = self.worker_resources.get(&index).cloned().or(launch.resources).unwrap_or_default();
        resources.retain(|(_, a)| *a > 0.0);
        launch.resources = Some(resources);
        launch
    }
}

/// Watches a local cluster's worker processes (see the `nanny` module):
/// restarts each that exits to restart or passes its memory limit.
struct Nanny {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Nanny {
    fn start(processes: Arc<Mutex<Vec<WorkerProcess>>>) -> std::io::Result<Nanny> {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::Builder::new().name("shoal-nanny".into()).spawn(move || {
            while !stopped.load(Ordering::Acquire) {
                std::thread::sleep(NANNY_POLL);
                let Ok(mut procs) = processes.lock() else { return };
                for p in procs.iter_mut() {
                    if let Err(e) = p.watch() {
                        eprintln!("shoal: cannot look after worker {}: {e}", p.name());
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
        let launch = WorkerLaunch {
            threads: Some((cores / 2).max(1)),
            // Nothing is detected for a local cluster's workers: they offer
            // what is declared.
            resources: Some(Vec::new()),
            ..WorkerLaunch::default()
        };
        LocalClusterBuilder {
            workers: 2,
            processes: true,
            launch,
            worker_resources: BTreeMap::new(),
            no_worker_timeout: None,
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
        Client::connect_with_token(&self.spec.address.to_string(), self.spec.launch.token.as_deref())
    }

    /// How many workers are running (or starting).
    pub fn worker_count(&self) -> usize {
        self.workers.lock().map_or(0, |w| w.len()) + self.processes.lock().map_or(0, |p| p.len())
    }

    /// Process ids of the worker processes (a restart gives new ones).
    pub fn worker_pids(&self) -> Vec<u32> {
        self.processes.lock().map_or_else(|_| Vec::new(), |p| p.iter().map(WorkerProcess::pid).collect())
    }

    /// Starts or stops workers until there are `n`. Stopped workers' results
    /// are recomputed elsewhere if still needed.
    ///
    /// # Errors
    /// [`DeployError`] when a worker cannot start or does not join.
    pub fn scale(&self, n: usize) -> Result<(), DeployError> {
        if let Some(program) = &self.spec.program {
            return self.scale_processes(program, n);
        }
        let mut workers = self.workers.lock().map_err(|_| DeployError::Poisoned("the cluster's worker list"))?;
        let mut started = self.started.lock().map_err(|_| DeployError::Poisoned("the cluster's counter"))?;
        while workers.len() > n {
            workers.pop();
        }
        while workers.len() < n {
            let launch = self.spec.launch(*started);
            *started += 1;
            let name = Spec::name(*started - 1);
            let config = launch.config(Spelling::Code)?;
            workers.push(start_worker(config).map_err(|source| DeployError::Worker { name, source })?);
        }
        Ok(())
    }
}

impl LocalCluster {
    fn scale_processes(&self, program: &WorkerProgram, n: usize) -> Result<(), DeployError> {
        let mut children = self.processes.lock().map_err(|_| DeployError::Poisoned("the cluster's process list"))?;
        let mut started = self.started.lock().map_err(|_| DeployError::Poisoned("the cluster's counter"))?;
        while children.len() > n {
            if let Some(mut p) = children.pop() {
                p.stop();
            }
        }
        while children.len() < n {
            let index = *started;
            *started += 1;
            let process = WorkerProcess::start(self.spec.launch(index), program.clone()).map_err(|source| {
                DeployError::Spawn { name: Spec::name(index), program: program.exe.clone(), source }
            })?;
            children.push(process);
        }
        drop(started);
        // Wait until the scheduler knows them all, or a worker died.
        let client = self.client()?;
        let deadline = Instant::now() + JOIN_TIMEOUT;
        loop {
            if client.scheduler_info()?.len() >= n {
                return Ok(());
            }
            for p in children.iter_mut() {
                if let Watched::Exited(status) = p
                    .watch()
                    .map_err(|source| DeployError::Io { what: "cannot look after a worker process", source })?
                {
                    return Err(DeployError::ExitedEarly { name: p.name().to_string(), pid: p.pid(), status });
                }
            }
            if Instant::now() > deadline {
                return Err(DeployError::JoinTimeout { workers: n, timeout: JOIN_TIMEOUT });
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
                p.stop();
            }
        }
        self.scheduler.take();
    }
}
