//! Starting shoal clusters.
//!
//! [`LocalCluster`] starts a scheduler and workers on this machine and hands
//! out [`Client`]s connected to it — the same distributed path (scheduler,
//! placement, peer-to-peer data, encoded arguments and results) that a
//! cluster of machines uses, for development, tests and small jobs.

use std::net::SocketAddr;
use std::sync::Mutex;

use shoal_client::{Client, Error};
use shoal_net::{RunningScheduler, RunningWorker, SchedulerServerConfig, WorkerConfig, start_scheduler, start_worker};

/// Builds a [`LocalCluster`].
#[derive(Clone, Debug)]
pub struct LocalClusterBuilder {
    workers: usize,
    threads_per_worker: usize,
    token: Option<String>,
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
        let scheduler = start_scheduler(SchedulerServerConfig { token: self.token.clone(), ..Default::default() })
            .map_err(|e| Error::Start(e.to_string()))?;
        let cluster = LocalCluster {
            address: scheduler.address(),
            threads_per_worker: self.threads_per_worker,
            token: self.token,
            workers: Mutex::new(Vec::new()),
            started: Mutex::new(0),
            scheduler: Some(scheduler),
        };
        cluster.scale(self.workers)?;
        Ok(cluster)
    }
}

/// A scheduler and workers on this machine.
///
/// The workers currently run as threads of this process (Dask's
/// `LocalCluster(processes=False)`); tasks still go through the scheduler,
/// their functions must be `#[shoal::remote]`, and data moves between workers
/// over loopback TCP. Dropping the cluster stops everything. The `shoal`
/// crate's documentation has a runnable example.
pub struct LocalCluster {
    address: SocketAddr,
    threads_per_worker: usize,
    token: Option<String>,
    workers: Mutex<Vec<RunningWorker>>,
    started: Mutex<usize>,
    scheduler: Option<RunningScheduler>,
}

impl LocalCluster {
    /// A builder: two workers, the cores shared among them.
    pub fn builder() -> LocalClusterBuilder {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        LocalClusterBuilder { workers: 2, threads_per_worker: (cores / 2).max(1), token: None }
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

    /// How many workers are running.
    pub fn worker_count(&self) -> usize {
        self.workers.lock().map_or(0, |w| w.len())
    }

    /// Starts or stops workers until there are `n`. Stopped workers' results
    /// are recomputed elsewhere if still needed.
    ///
    /// # Errors
    /// [`Error::Start`] when a worker cannot start.
    pub fn scale(&self, n: usize) -> Result<(), Error> {
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

impl Drop for LocalCluster {
    fn drop(&mut self) {
        if let Ok(mut workers) = self.workers.lock() {
            workers.clear();
        }
        self.scheduler.take();
    }
}
