//! A worker's network shell: the connection to its scheduler (joining,
//! heartbeats, joining again after a loss), its data server, and fetching
//! inputs from peers, around the [`Worker`] state machine of
//! `shoal-worker`, which decides everything about tasks and results.
//!
//! ```text
//!  scheduler ──Compute──▶ worker ──fetch inputs──▶ peers' data servers
//!      ▲                    │ run on the thread pool
//!      └──Finished (batched)┘ keep the result; encode it only when asked
//! ```
//! Everything runs on one thread (a current-thread tokio runtime) but the
//! pool's: the state machine and what the shell keeps beside it are behind
//! one lock, taken by the scheduler connection, the data server and the
//! fetches in turn.
//!
//! A worker whose scheduler goes away keeps trying to reach it again for
//! its `death_timeout`, then ends; one that is told to restart drops all its
//! data and registers afresh (or, under a nanny, ends so that a new process
//! takes its place).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use shoal_graph::Key;
use shoal_local::Handle;
use shoal_proto::{
    DepLocation, FromWorker, Hello, HelloReply, Role, ToWorker, WorkerId, WorkerInfo, check_reply, decode_message,
    encode_message,
};
use shoal_worker::{Control, Pool, Runnable, SameHostTransfer, TaskOutcome, Worker, WorkerComm, WorkerConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

use crate::conn::{Background, FrameReader, writer};

mod cma;
mod peer;
mod shm;

pub use shm::remove_files_of as remove_shared_files_of;

use peer::PeerConn;
use shm::ShmFiles;

/// Why a worker could not start.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// A socket operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// The scheduler refused or did not answer properly.
    #[error("the scheduler at {address} refused this worker: {reason}")]
    Refused {
        /// The scheduler.
        address: SocketAddr,
        /// Why.
        reason: String,
    },
}

/// Why a worker ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkerExit {
    /// Its scheduler went away and did not come back within the death timeout.
    SchedulerGone,
    /// It was told to restart and `exit_on_restart` is set: its nanny starts
    /// a new process in its place.
    Restart,
    /// It was stopped (dropped, or told to shut down).
    Stopped,
}

/// A worker running on its own thread. Dropping it stops it.
pub struct RunningWorker {
    id: WorkerId,
    data_address: SocketAddr,
    service: Background,
    exit: std::sync::mpsc::Receiver<WorkerExit>,
}

impl RunningWorker {
    /// The id the scheduler gave it when it first joined.
    pub fn id(&self) -> WorkerId {
        self.id
    }

    /// Where peers and clients fetch its results.
    pub fn data_address(&self) -> SocketAddr {
        self.data_address
    }

    /// Runs until the worker ends (for a worker process), and says why. It
    /// returns as soon as the worker has ended, without waiting for a task
    /// still running on its threads (threads cannot be interrupted; a worker
    /// process exits and takes them along).
    pub fn wait(mut self) -> WorkerExit {
        let exit = self.exit.recv().unwrap_or(WorkerExit::Stopped);
        self.service.detach();
        exit
    }
}

/// Starts a worker and waits until its scheduler has welcomed it (trying
/// for up to `death_timeout` if it cannot be reached yet).
///
/// # Errors
/// When the data server cannot listen, the scheduler cannot be reached in
/// time, or it refuses the worker.
pub fn start_worker(config: WorkerConfig) -> Result<RunningWorker, WorkerError> {
    crate::client::set_process_token(config.token.as_deref());
    let io = |what: &str| {
        let what = what.to_string();
        move |source| WorkerError::Io { what, source }
    };
    // The address on the route to the scheduler may not take a listener (an
    // IPv6 link-local one without its scope): then the configured one.
    let data = std::net::TcpListener::bind((data_server_ip(&config), 0))
        .or_else(|_| std::net::TcpListener::bind((config.listen, 0)))
        .map_err(io("cannot open the data server"))?;
    let data_address = data.local_addr().map_err(io("cannot open the data server"))?;
    data.set_nonblocking(true).map_err(io("cannot open the data server"))?;
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<WorkerId, WorkerError>>();
    let (exit_tx, exit) = std::sync::mpsc::channel::<WorkerExit>();
    let service = Background::spawn(format!("shoal-worker-{}", config.name), move |stop| async move {
        let ctx = match Ctx::new(config, data_address) {
            Ok(ctx) => Arc::new(ctx),
            Err(source) => {
                let _ =
                    ready_tx.send(Err(WorkerError::Io { what: "cannot start the worker's threads".into(), source }));
                return;
            }
        };
        let exit = ctx.run(data, ready_tx, stop).await;
        let _ = exit_tx.send(exit);
    })
    .map_err(io("cannot start the worker thread"))?;
    let id = ready_rx.recv().map_err(|_| WorkerError::Io {
        what: "the worker thread ended before joining".into(),
        source: std::io::Error::other("worker thread ended"),
    })??;
    Ok(RunningWorker { id, data_address, service, exit })
}

/// Where the data server listens: `config.listen`, unless that is a
/// loopback address and the scheduler is not. Then peers on other hosts
/// must reach it too: it listens on (and the scheduler hands out) the
/// address of this host's interface that the route to the scheduler takes,
/// as Dask picks a worker's interface — with a cluster token only, since
/// the data server runs functions and hands out results to whoever it
/// welcomes.
fn data_server_ip(config: &WorkerConfig) -> IpAddr {
    if !config.listen.is_loopback() || config.scheduler.ip().is_loopback() {
        return config.listen;
    }
    if config.token.is_none() {
        tracing::warn!(
            "worker {}: its scheduler is at {} but the worker has no cluster token, so it serves its peers on \
             loopback only: workers on other hosts cannot fetch its results (give every process the same token)",
            config.name,
            config.scheduler
        );
        return config.listen;
    }
    route_to(config.scheduler).unwrap_or(config.listen)
}

/// This host's address on the route to `target`: a UDP socket "connected"
/// to it (which sends nothing) is bound to the interface the kernel picks.
pub fn route_to(target: SocketAddr) -> Option<IpAddr> {
    let any: SocketAddr = if target.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { ([0u16; 8], 0).into() };
    let socket = std::net::UdpSocket::bind(any).ok()?;
    socket.connect(target).ok()?;
    Some(socket.local_addr().ok()?.ip()).filter(|ip| !ip.is_unspecified())
}

/// How one connection to the scheduler ended.
enum Ended {
    Stopped,
    Restart,
    Lost,
    /// The process passed its memory terminate fraction.
    OverMemory,
}

/// How often a worker that ends past its memory terminate fraction samples
/// its resident memory: a task allocating quickly must not get far past the
/// threshold before the sample sees it.
const MEMORY_SAMPLE: Duration = Duration::from_millis(100);

/// The state machine, and what the shell keeps beside it, under one lock.
struct Shared {
    worker: Worker<Handle>,
    /// Results written to shared memory for fetchers on this host; `None`
    /// where the host has no shared-memory directory, or the worker was told
    /// not to use it.
    shm: Option<ShmFiles>,
    /// Idle connections to other workers' data servers, by address: a fetch
    /// reuses one instead of paying a connect and a handshake.
    peers: HashMap<Arc<str>, Vec<PeerConn>>,
    /// The writer queue of the connection to the scheduler, while there is
    /// one.
    out: Option<mpsc::UnboundedSender<Vec<u8>>>,
}

/// What every part of a worker shares.
struct Ctx {
    config: WorkerConfig,
    data_address: SocketAddr,
    pool: Pool,
    shared: Mutex<Shared>,
    done_rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<Key>>,
    started: Instant,
}

/// What the state machine's actions become: frames to the scheduler, tasks
/// on the pool, fetches started once the lock is let go.
struct NetComm<'a> {
    out: Option<&'a mpsc::UnboundedSender<Vec<u8>>>,
    pool: &'a Pool,
    shm: &'a mut Option<ShmFiles>,
    fetches: Vec<DepLocation>,
}

impl WorkerComm for NetComm<'_> {
    type Handle = Handle;

    fn to_scheduler(&mut self, msg: FromWorker) {
        if let Some(out) = self.out {
            send(out, &msg);
        }
    }

    fn fetch(&mut self, dep: &DepLocation) {
        self.fetches.push(dep.clone());
    }

    fn forget(&mut self, key: &Key) {
        if let Some(shm) = self.shm {
            shm.remove(key);
        }
    }

    fn execute(&mut self, task: Runnable) -> Option<Handle> {
        self.pool.execute(task)
    }

    fn cancel(&mut self, handle: &Handle) {
        self.pool.cancel(handle);
    }

    fn not_started(&self, handle: &Handle) -> bool {
        self.pool.not_started(handle)
    }

    fn outcome(&mut self, handle: &Handle) -> Option<TaskOutcome> {
        self.pool.outcome(handle)
    }
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Ctx {
    fn new(config: WorkerConfig, data_address: SocketAddr) -> std::io::Result<Ctx> {
        let (done, done_rx) = mpsc::unbounded_channel();
        if config.memory_limit > 0 {
            crate::recycle::limit_to_memory(config.memory_limit);
        }
        let worker = Worker::new(&config, std::process::id());
        let pool = Pool::new(config.threads, worker.memory_gate().clone(), move |key| {
            let _ = done.send(key);
        })?;
        let shm = if config.same_host_transfer == SameHostTransfer::Tcp { None } else { ShmFiles::new() };
        Ok(Ctx {
            config,
            data_address,
            pool,
            shared: Mutex::new(Shared { worker, shm, peers: HashMap::new(), out: None }),
            done_rx: tokio::sync::Mutex::new(done_rx),
            started: Instant::now(),
        })
    }

    /// Microseconds since the worker started: the state machine's clock.
    fn now_us(&self) -> u64 {
        self.started.elapsed().as_micros() as u64
    }

    /// Runs one event through the state machine, then starts the fetches
    /// it asked for.
    fn event<R>(self: &Arc<Self>, f: impl FnOnce(&mut Worker<Handle>, u64, &mut NetComm<'_>) -> R) -> R {
        let mut guard = lock(&self.shared);
        let Shared { worker, shm, out, .. } = &mut *guard;
        let mut comm = NetComm { out: out.as_ref(), pool: &self.pool, shm, fetches: Vec::new() };
        let result = f(worker, self.now_us(), &mut comm);
        let fetches = comm.fetches;
        drop(guard);
        for dep in fetches {
            tokio::spawn(fetch_input(self.clone(), dep));
        }
        result
    }

    /// Drops everything the worker holds and every connection to a peer
    /// (a restarted cluster's peers are new processes).
    fn reset(self: &Arc<Self>) {
        self.event(|worker, _, comm| worker.reset(comm));
        let mut shared = lock(&self.shared);
        shared.peers.clear();
        if let Some(shm) = &mut shared.shm {
            shm.clear();
        }
    }

    /// The writer queue of the scheduler connection, while there is one.
    fn connected(&self, out: Option<mpsc::UnboundedSender<Vec<u8>>>) {
        lock(&self.shared).out = out;
    }

    async fn run(
        self: &Arc<Self>,
        data: std::net::TcpListener,
        ready: std::sync::mpsc::Sender<Result<WorkerId, WorkerError>>,
        stop: oneshot::Receiver<()>,
    ) -> WorkerExit {
        let exit = self.serve(data, ready, stop).await;
        // Nothing queued stays on the pool of a worker that ended.
        self.reset();
        exit
    }

    async fn serve(
        self: &Arc<Self>,
        data: std::net::TcpListener,
        ready: std::sync::mpsc::Sender<Result<WorkerId, WorkerError>>,
        mut stop: oneshot::Receiver<()>,
    ) -> WorkerExit {
        let joined = tokio::select! {
            _ = &mut stop => return WorkerExit::Stopped,
            joined = self.join_in_time() => joined,
        };
        let mut reader = match joined {
            Ok((reader, out, id)) => {
                self.connected(Some(out));
                let _ = ready.send(Ok(id));
                reader
            }
            Err(e) => {
                let _ = ready.send(Err(e));
                return WorkerExit::SchedulerGone;
            }
        };
        match TcpListener::from_std(data) {
            Ok(listener) => {
                tokio::spawn(peer::serve_data(listener, self.clone()));
            }
            Err(e) => tracing::error!("the data server cannot start: {e}"),
        }
        let name = &self.config.name;
        loop {
            match self.session(&mut reader, &mut stop).await {
                Ended::Stopped => return WorkerExit::Stopped,
                Ended::Restart if self.config.exit_on_restart => return WorkerExit::Restart,
                // Only a worker that ends on restart samples its memory.
                Ended::OverMemory => return WorkerExit::Restart,
                ended => {
                    // Whatever this worker held belongs to a cluster state
                    // that is gone: a restarted scheduler, or one that has
                    // written this worker off and is recomputing its data.
                    self.connected(None);
                    self.reset();
                    if matches!(ended, Ended::Lost) {
                        tracing::warn!(
                            "worker {name}: lost the scheduler at {}; trying to reach it for {:?}",
                            self.config.scheduler,
                            self.config.death_timeout
                        );
                    }
                    let joined = tokio::select! {
                        _ = &mut stop => return WorkerExit::Stopped,
                        joined = self.join_in_time() => joined,
                    };
                    match joined {
                        Ok((r, out, id)) => {
                            tracing::info!("worker {name}: joined the scheduler again as {id}");
                            reader = r;
                            self.connected(Some(out));
                            self.event(|worker, now, comm| worker.on_joined(now, comm));
                        }
                        Err(e) => {
                            tracing::warn!("worker {name}: giving up: {e}");
                            return WorkerExit::SchedulerGone;
                        }
                    }
                }
            }
        }
    }

    /// Serves one connection to the scheduler until it ends.
    async fn session(self: &Arc<Self>, reader: &mut FrameReader, stop: &mut oneshot::Receiver<()>) -> Ended {
        let mut done_rx = self.done_rx.lock().await;
        let mut done = Vec::new();
        // Well inside the scheduler's worker timeout, even on a loaded machine.
        let mut heartbeat = tokio::time::interval(Duration::from_millis(500));
        let sampling = self.config.exit_on_restart && self.config.memory_terminate_fraction.is_some();
        let mut sample = tokio::time::interval(MEMORY_SAMPLE);
        loop {
            tokio::select! {
                _ = &mut *stop => return Ended::Stopped,
                _ = sample.tick(), if sampling => {
                    let resident = crate::memory::resident_bytes(std::process::id());
                    let over = resident.and_then(|r| lock(&self.shared).worker.on_memory_sample(r));
                    if over == Some(Control::OverMemory) {
                        return Ended::OverMemory;
                    }
                }
                _ = heartbeat.tick() => {
                    self.event(|worker, now, comm| worker.on_tick(now, comm));
                    crate::recycle::trim();
                }
                msg = reader.next_message() => {
                    let msg = match msg.and_then(|body| Ok(decode_message::<ToWorker>(&body)?)) {
                        Ok(m) => m,
                        Err(e) => {
                            tracing::warn!("worker {}: the scheduler connection ended: {e}", self.config.name);
                            return Ended::Lost;
                        }
                    };
                    match self.event(|worker, now, comm| worker.on_message(msg, now, comm)) {
                        Some(Control::Shutdown) => return Ended::Stopped,
                        Some(Control::Restart) => return Ended::Restart,
                        Some(Control::OverMemory) => return Ended::OverMemory,
                        None => {}
                    }
                }
                Some(first) = done_rx.recv() => {
                    // Everything finished by now goes in one report.
                    done.push(first);
                    while let Ok(key) = done_rx.try_recv() {
                        done.push(key);
                    }
                    self.event(|worker, now, comm| worker.on_tasks_done(done.drain(..), now, comm));
                }
            }
        }
    }

    /// Joins the scheduler, trying again until the death timeout has passed
    /// (at least once); a refusal is final.
    async fn join_in_time(&self) -> Result<(FrameReader, mpsc::UnboundedSender<Vec<u8>>, WorkerId), WorkerError> {
        let deadline = Instant::now() + self.config.death_timeout;
        let mut pause = Duration::from_millis(50);
        loop {
            match join(&self.config, self.data_address).await {
                Ok(joined) => return Ok(joined),
                Err((e, final_)) => {
                    let now = Instant::now();
                    if final_ || now >= deadline {
                        return Err(e);
                    }
                    tracing::debug!("worker {}: {e}; trying again", self.config.name);
                    tokio::time::sleep(pause.min(deadline - now)).await;
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
            }
        }
    }
}

/// Connects, says hello, registers; the reader, the writer queue and the
/// id — or the error and whether it is final (the scheduler refused).
async fn join(
    config: &WorkerConfig,
    data_address: SocketAddr,
) -> Result<(FrameReader, mpsc::UnboundedSender<Vec<u8>>, WorkerId), (WorkerError, bool)> {
    let refused = |reason: String| WorkerError::Refused { address: config.scheduler, reason };
    let stream = TcpStream::connect(config.scheduler).await.map_err(|source| {
        (WorkerError::Io { what: format!("cannot reach the scheduler at {}", config.scheduler), source }, false)
    })?;
    let _ = stream.set_nodelay(true);
    let (read, write) = stream.into_split();
    let (out, out_rx) = mpsc::unbounded_channel();
    tokio::spawn(writer(write, out_rx));
    send(&out, &Hello::new(Role::Worker, config.name.clone(), config.token.as_deref()));
    let info = WorkerInfo {
        id: WorkerId(0),
        name: config.name.clone(),
        data_address: data_address.to_string(),
        threads: config.threads as u32,
        memory_limit: config.memory_limit,
        memory: 0,
        resources: config.resources.clone(),
    };
    send(&out, &FromWorker::Register(info));
    let mut reader = FrameReader::new(read, config.max_frame);
    // A scheduler going away mid-handshake is worth another try; an answer
    // that refuses is not.
    let body = reader.next_message().await.map_err(|e| (refused(e.to_string()), false))?;
    let reply: HelloReply = decode_message(&body).map_err(|e| (refused(e.to_string()), true))?;
    let id = check_reply(&reply).map_err(|e| (refused(e.to_string()), true))?;
    Ok((reader, out, WorkerId(id)))
}

fn send<T: serde::Serialize>(out: &mpsc::UnboundedSender<Vec<u8>>, msg: &T) {
    let mut frame = Vec::new();
    match encode_message(msg, &mut frame) {
        Ok(()) => {
            let _ = out.send(frame);
        }
        Err(e) => tracing::error!("cannot encode a message: {e}"),
    }
}

/// Fetches one input for the state machine, and hands it what came.
async fn fetch_input(ctx: Arc<Ctx>, dep: DepLocation) {
    let data = peer::fetch(&dep, &ctx).await;
    ctx.event(|worker, now, comm| worker.on_peer_data(&dep.key, data, now, comm));
}
