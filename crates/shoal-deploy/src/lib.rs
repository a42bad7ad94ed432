//! Starting shoal clusters.
//!
//! [`LocalCluster`] starts a scheduler and workers on this machine and hands
//! out [`Client`]s connected to it — the same distributed path (scheduler,
//! placement, peer-to-peer data, encoded arguments and results) that a
//! cluster of machines uses, for development, tests and small jobs.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use shoal_client::{Client, Error};
/// The variable that makes a process a worker (see `shoal::init`).
pub const WORKER_OF: &str = "SHOAL_WORKER_OF";

use shoal_net::{RunningScheduler, RunningWorker, SchedulerServerConfig, WorkerConfig, start_scheduler, start_worker};

/// Builds a [`LocalCluster`].
#[derive(Clone, Debug)]
pub struct LocalClusterBuilder {
    workers: usize,
    threads_per_worker: usize,
    token: Option<String>,
    processes: bool,
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

    /// Starts the scheduler and the workers, listening on loopback only.
    ///
    /// # Errors
    /// [`Error::Start`] naming what could not start.
    pub fn build(self) -> Result<LocalCluster, Error> {
        if std::env::var_os(WORKER_OF).is_some() {
            return Err(Error::Start(format!(
                "this process is a worker ({WORKER_OF} is set) and cannot start clusters; \
                 a worker process must not run the program's main: link the `shoal` crate, whose start-up hook \
                 turns it into a worker, or call shoal::init() first thing in main"
            )));
        }
        let scheduler = start_scheduler(SchedulerServerConfig { token: self.token.clone(), ..Default::default() })
            .map_err(|e| Error::Start(e.to_string()))?;
        let cluster = LocalCluster {
            address: scheduler.address(),
            threads_per_worker: self.threads_per_worker,
            token: self.token,
            workers: Mutex::new(Vec::new()),
            processes: Mutex::new(Vec::new()),
            use_processes: self.processes,
            started: Mutex::new(0),
            scheduler: Some(scheduler),
        };
        cluster.scale(self.workers)?;
        Ok(cluster)
    }
}

/// A scheduler and workers on this machine.
///
/// The workers are processes of this same program by default, or threads of
/// this process with `processes(false)`; either way tasks go through the
/// scheduler, their functions must be `#[shoal::remote]`, and data moves
/// between workers over loopback TCP. Dropping the cluster stops everything,
/// worker processes included. The `shoal`
/// crate's documentation has a runnable example.
pub struct LocalCluster {
    address: SocketAddr,
    threads_per_worker: usize,
    token: Option<String>,
    workers: Mutex<Vec<RunningWorker>>,
    processes: Mutex<Vec<Child>>,
    use_processes: bool,
    started: Mutex<usize>,
    scheduler: Option<RunningScheduler>,
}

impl LocalCluster {
    /// A builder: two worker processes, the cores shared among them.
    pub fn builder() -> LocalClusterBuilder {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        LocalClusterBuilder { workers: 2, threads_per_worker: (cores / 2).max(1), token: None, processes: true }
    }

    /// The scheduler's address.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// A client of this cluster (it also becomes the current client).
    ///
    /// # Errors
    /// [`Error::Start`] when the scheduler cannot be reached.
    pub fn client(&self) -> Result<Client, Error> {
        Client::connect_with_token(&self.address.to_string(), self.token.as_deref())
    }

    /// How many workers are running (or starting).
    pub fn worker_count(&self) -> usize {
        self.workers.lock().map_or(0, |w| w.len()) + self.processes.lock().map_or(0, |p| p.len())
    }

    /// Process ids of the worker processes.
    pub fn worker_pids(&self) -> Vec<u32> {
        self.processes.lock().map_or_else(|_| Vec::new(), |p| p.iter().map(Child::id).collect())
    }

    /// Starts or stops workers until there are `n`. Stopped workers' results
    /// are recomputed elsewhere if still needed.
    ///
    /// # Errors
    /// [`Error::Start`] when a worker cannot start.
    pub fn scale(&self, n: usize) -> Result<(), Error> {
        if self.use_processes {
            return self.scale_processes(n);
        }
        let mut workers =
            self.workers.lock().map_err(|_| Error::Start("the cluster's worker list is poisoned".into()))?;
        let mut started = self.started.lock().map_err(|_| Error::Start("the cluster's counter is poisoned".into()))?;
        while workers.len() > n {
            workers.pop();
        }
        while workers.len() < n {
            let config = WorkerConfig {
                threads: self.threads_per_worker,
                token: self.token.clone(),
                ..WorkerConfig::new(self.address, format!("local-{}", *started))
            };
            *started += 1;
            workers.push(start_worker(config).map_err(|e| Error::Start(e.to_string()))?);
        }
        Ok(())
    }
}

impl LocalCluster {
    fn scale_processes(&self, n: usize) -> Result<(), Error> {
        let mut children =
            self.processes.lock().map_err(|_| Error::Start("the cluster's process list is poisoned".into()))?;
        let mut started = self.started.lock().map_err(|_| Error::Start("the cluster's counter is poisoned".into()))?;
        while children.len() > n {
            if let Some(mut child) = children.pop() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        let exe = std::env::current_exe()
            .map_err(|e| Error::Start(format!("cannot find this program to start workers: {e}")))?;
        while children.len() < n {
            let mut command = Command::new(&exe);
            command
                .env(WORKER_OF, self.address.to_string())
                .env("SHOAL_WORKER_NAME", format!("local-{}", *started))
                .env("SHOAL_WORKER_THREADS", self.threads_per_worker.to_string())
                .stdin(Stdio::null());
            if let Some(token) = &self.token {
                command.env("SHOAL_TOKEN", token);
            }
            // Each worker thread runs one task: numeric libraries must not
            // start a thread per core each (thread oversubscription).
            for var in ["OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"] {
                if std::env::var_os(var).is_none() {
                    command.env(var, "1");
                }
            }
            *started += 1;
            children.push(command.spawn().map_err(|e| Error::Start(format!("cannot start a worker process: {e}")))?);
        }
        drop(started);
        // Wait until the scheduler knows them all, or a worker died.
        let client = self.client()?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if client.scheduler_info()?.len() >= n {
                return Ok(());
            }
            for child in children.iter_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(Error::Start(format!(
                        "worker process {} exited ({status}) before joining; does the program link the `shoal` crate?",
                        child.id()
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

impl Drop for LocalCluster {
    fn drop(&mut self) {
        if let Ok(mut workers) = self.workers.lock() {
            workers.clear();
        }
        if let Ok(mut children) = self.processes.lock() {
            for mut child in children.drain(..) {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        self.scheduler.take();
    }
}
