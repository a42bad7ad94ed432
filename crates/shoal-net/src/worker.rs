//! A worker: runs the tasks its scheduler gives it on a local thread pool,
//! keeps their results, and serves them to peers and clients directly.
//!
//! ```text
//!  scheduler ──Compute──▶ worker ──fetch inputs──▶ peers' data servers
//!      ▲                    │ run on the shoal-local pool
//!      └──Finished (batched)┘ keep the result; encode it only when asked
//! ```
//! Arguments arrive encoded and are decoded with the codec registered with
//! the task's function (`#[shoal::remote]`); results stay decoded in the
//! store and are encoded with the codec of the function that made them only
//! when a peer or a client asks for them.
//!
//! A worker whose scheduler goes away keeps trying to reach it again for
//! its `death_timeout`, then ends; one that is told to restart drops all its
//! data and registers afresh (or, under a nanny, ends so that a new process
//! takes its place). Over its memory limit it pauses: it starts no new tasks
//! and tells the scheduler to send it none until it holds less again.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal_graph::remote::{RemoteFunc, require};
use shoal_graph::{Arg, Func, Key, Task, Value};
use shoal_local::{Notify, Runtime, Submission};
use shoal_proto::{
    ArgMsg, ComputeMsg, FinishedList, FinishedMsg, FromWorker, Hello, HelloReply, Resources, Role, ToWorker, WorkerId,
    WorkerInfo, check_reply, decode_message, encode_message,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};

use crate::conn::{Background, FrameReader, writer};

mod cma;
mod peer;
mod shm;
mod store;

pub use shm::remove_files_of as remove_shared_files_of;

use store::{Held, Shared, StoreError, Stored, lock};

/// How to run a worker.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// The scheduler to join.
    pub scheduler: SocketAddr,
    /// This worker's name (restrictions refer to it).
    pub name: String,
    /// Task slots (threads of the pool).
    pub threads: usize,
    /// The cluster token.
    pub token: Option<String>,
    /// Address the data server listens on (any free port); the default,
    /// loopback, becomes the address on the route to the scheduler when
    /// the scheduler is on another address and the worker has a token
    /// (see `start_worker`).
    pub listen: IpAddr,
    /// The largest frame accepted.
    pub max_frame: usize,
    /// Named amounts this worker offers (`("gpu", 2.0)`): a task that needs
    /// some runs only on a worker that has them, and uses them up while it
    /// runs.
    pub resources: Resources,
    /// Bytes of results this worker may hold (0: no limit). Past
    /// `memory_pause_fraction` of it, it pauses.
    pub memory_limit: u64,
    /// The fraction of `memory_limit` above which the worker starts no new
    /// tasks until it holds less (Dask's 80 % by default).
    pub memory_pause_fraction: f64,
    /// The fraction of `memory_limit` above which the least recently used
    /// results are spilled to disk (Dask's 60 % by default); `None` never
    /// spills. Spilled results are read back when a task or a peer needs
    /// them.
    pub memory_target_fraction: Option<f64>,
    /// Where spilled results go: a directory of this worker's own is made
    /// in it and removed when the worker ends (default: the system's
    /// temporary directory).
    pub local_directory: Option<std::path::PathBuf>,
    /// How long the worker keeps trying to reach its scheduler, when it
    /// starts and after losing it, before it gives up; zero makes one try.
    pub death_timeout: Duration,
    /// Whether a restart ends the worker (a nanny then starts a new process
    /// in its place) instead of clearing its state and registering again.
    pub exit_on_restart: bool,
    /// How results of 1 MiB or more move between this worker and others on
    /// its host, both ways.
    pub same_host_transfer: SameHostTransfer,
    /// Results up to this many bytes (encoded) also go to the scheduler
    /// with the completion report, which hands them to the tasks waiting
    /// for them along with their compute messages: those tasks start
    /// without a round trip to this worker, so a chain of small tasks
    /// across workers runs about twice as fast. 0 sends none; more than
    /// [`INLINE_LIMIT`](shoal_proto::INLINE_LIMIT) (64 KiB) counts as that.
    /// The default, [`DEFAULT_INLINE_MAX`], covers numbers, short strings
    /// and small structs; bulk data always moves worker to worker.
    pub inline_max: usize,
}

/// The default [`WorkerConfig::inline_max`]: 1 KiB.
pub const DEFAULT_INLINE_MAX: usize = 1024;

/// How large results (1 MiB or more) move between workers on one host
/// (peers reached on a loopback address). Whatever is chosen, a transfer
/// that cannot take that way falls back to the next: reading, then a
/// shared file, then TCP. Workers on other hosts always use TCP.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SameHostTransfer {
    /// The fetcher copies the result straight out of the holder's memory
    /// (`process_vm_readv`, Linux): one copy, the fastest. Where the
    /// kernel does not allow it (Yama `ptrace_scope` ≥ 1), a shared file.
    #[default]
    Read,
    /// The holder writes the result into a file in `/dev/shm` that the
    /// fetcher maps: no access to each other's memory.
    File,
    /// Through the data connection, as between hosts.
    Tcp,
}

impl SameHostTransfer {
    /// The name [`FromStr`](std::str::FromStr) reads: `read`, `file` or `tcp`.
    pub fn name(self) -> &'static str {
        match self {
            SameHostTransfer::Read => "read",
            SameHostTransfer::File => "file",
            SameHostTransfer::Tcp => "tcp",
        }
    }
}

impl std::fmt::Display for SameHostTransfer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for SameHostTransfer {
    type Err = String;

    /// ```
    /// use shoal_net::SameHostTransfer;
    /// assert_eq!("file".parse::<SameHostTransfer>(), Ok(SameHostTransfer::File));
    /// assert!("shm".parse::<SameHostTransfer>().unwrap_err().contains("read, file or tcp"));
    /// ```
    fn from_str(text: &str) -> Result<SameHostTransfer, String> {
        [SameHostTransfer::Read, SameHostTransfer::File, SameHostTransfer::Tcp]
            .into_iter()
            .find(|t| t.name() == text)
            .ok_or_else(|| format!("{text:?} is not a same-host transfer: give read, file or tcp"))
    }
}

impl WorkerConfig {
    /// A worker joining `scheduler` with one thread per core, no resources,
    /// no memory limit, and one try to reach the scheduler.
    pub fn new(scheduler: SocketAddr, name: impl Into<String>) -> WorkerConfig {
        WorkerConfig {
            scheduler,
            name: name.into(),
            threads: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            token: None,
            listen: IpAddr::from([127, 0, 0, 1]),
            max_frame: shoal_proto::DEFAULT_MAX_FRAME,
            resources: Vec::new(),
            memory_limit: 0,
            memory_pause_fraction: 0.8,
            memory_target_fraction: Some(0.6),
            local_directory: None,
            death_timeout: Duration::ZERO,
            exit_on_restart: false,
            same_host_transfer: SameHostTransfer::Read,
            inline_max: DEFAULT_INLINE_MAX,
        }
    }
}

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

/// Tells the worker loop that a task is done.
struct Done {
    key: Key,
    tx: mpsc::UnboundedSender<Key>,
}

impl Notify for Done {
    fn done(&self, _index: usize) {
        let _ = self.tx.send(self.key.clone());
    }
}

/// Starts a worker and waits until its scheduler has welcomed it (trying
/// for up to `death_timeout` if it cannot be reached yet).
///
/// # Errors
/// When the data server cannot listen, the scheduler cannot be reached in
/// time, or it refuses the worker.
pub fn start_worker(config: WorkerConfig) -> Result<RunningWorker, WorkerError> {
    let io = |what: &str| {
        let what = what.to_string();
        move |source| WorkerError::Io { what, source }
    };
    let pool = Runtime::threads(config.threads).map_err(io("cannot start the worker's threads"))?;
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
        let ctx = Arc::new(Ctx::new(config, data_address, pool));
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

/// The directory worker `name` of process `pid` spills to, in `base`
/// (its local directory): `shoal-worker-<pid>-<name>`.
pub fn spill_directory(base: &std::path::Path, pid: u32, name: &str) -> std::path::PathBuf {
    let name: String = name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect();
    base.join(format!("shoal-worker-{pid}-{name}"))
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
}

/// What every part of a worker shares.
struct Ctx {
    config: WorkerConfig,
    data_address: SocketAddr,
    pool: Runtime,
    state: Shared,
    done: mpsc::UnboundedSender<Key>,
    done_rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<Key>>,
    /// Whether the worker is paused for memory; arriving tasks wait on it.
    paused: watch::Sender<bool>,
    /// Its bytes against the pause threshold; starting tasks wait on it.
    memory: Arc<store::Memory>,
}

impl Ctx {
    fn new(config: WorkerConfig, data_address: SocketAddr, pool: Runtime) -> Ctx {
        let (done, done_rx) = mpsc::unbounded_channel();
        if config.memory_limit > 0 {
            crate::recycle::limit_to_memory(config.memory_limit);
        }
        let threshold = if config.memory_limit == 0 {
            u64::MAX
        } else {
            (config.memory_limit as f64 * config.memory_pause_fraction) as u64
        };
        let spill = match (config.memory_limit, config.memory_target_fraction) {
            (limit, Some(fraction)) if limit > 0 => {
                let base = config.local_directory.clone().unwrap_or_else(std::env::temp_dir);
                let dir = spill_directory(&base, std::process::id(), &config.name);
                Some(store::Spill::new((limit as f64 * fraction) as u64, dir))
            }
            _ => None,
        };
        let state = store::shared(threshold, spill, config.same_host_transfer, data_address.ip());
        let memory = lock(&state).memory.clone();
        Ctx {
            config,
            data_address,
            pool,
            state,
            done,
            done_rx: tokio::sync::Mutex::new(done_rx),
            paused: watch::channel(false).0,
            memory,
        }
    }

    async fn run(
        self: &Arc<Self>,
        data: std::net::TcpListener,
        ready: std::sync::mpsc::Sender<Result<WorkerId, WorkerError>>,
        stop: oneshot::Receiver<()>,
    ) -> WorkerExit {
        let exit = self.serve(data, ready, stop).await;
        // Tasks waiting for a pause to end would keep the pool from stopping.
        lock(&self.state).reset();
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
        let (mut reader, mut out) = match joined {
            Ok((reader, out, id)) => {
                let _ = ready.send(Ok(id));
                (reader, out)
            }
            Err(e) => {
                let _ = ready.send(Err(e));
                return WorkerExit::SchedulerGone;
            }
        };
        match TcpListener::from_std(data) {
            Ok(listener) => {
                tokio::spawn(peer::serve_data(
                    listener,
                    self.state.clone(),
                    self.config.token.clone(),
                    self.config.max_frame,
                ));
            }
            Err(e) => tracing::error!("the data server cannot start: {e}"),
        }
        let name = &self.config.name;
        loop {
            match self.session(&mut reader, &out, &mut stop).await {
                Ended::Stopped => return WorkerExit::Stopped,
                Ended::Restart if self.config.exit_on_restart => return WorkerExit::Restart,
                ended => {
                    // Whatever this worker held belongs to a cluster state
                    // that is gone: a restarted scheduler, or one that has
                    // written this worker off and is recomputing its data.
                    lock(&self.state).reset();
                    self.paused.send_replace(false);
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
                        Ok((r, o, id)) => {
                            tracing::info!("worker {name}: joined the scheduler again as {id}");
                            reader = r;
                            out = o;
                            self.update_pause(&out);
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
    async fn session(
        self: &Arc<Self>,
        reader: &mut FrameReader,
        out: &mpsc::UnboundedSender<Vec<u8>>,
        stop: &mut oneshot::Receiver<()>,
    ) -> Ended {
        let mut done_rx = self.done_rx.lock().await;
        // Well inside the scheduler's worker timeout, even on a loaded machine.
        let mut heartbeat = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                _ = &mut *stop => return Ended::Stopped,
                _ = heartbeat.tick() => {
                    let memory = self.memory.held();
                    send(out, &FromWorker::Heartbeat { memory });
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
                    match msg {
                        ToWorker::Compute(tasks) => {
                            for task in tasks {
                                // Most tasks have all they need here: they go to the pool
                                // at once, without a task of the loop's own each.
                                if let Some((task, remote)) = prepare_here(self, task, out) {
                                    tokio::spawn(prepare(self.clone(), task, remote, out.clone()));
                                }
                            }
                        }
                        ToWorker::Release(keys) => {
                            let mut st = lock(&self.state);
                            for k in keys {
                                st.remove(&k);
                                st.parked.remove(&k);
                                if let Some((handle, ..)) = st.running.remove(&k) {
                                    handle.cancel();
                                    st.memory.settle(&k);
                                }
                            }
                        }
                        ToWorker::Steal(keys) => {
                            let mut given = Vec::new();
                            let mut st = lock(&self.state);
                            for k in keys {
                                if st.parked.remove(&k) {
                                    given.push(k);
                                    continue;
                                }
                                let pending = st.running.get(&k).is_some_and(|(h, ..)| h.phase() == shoal_local::Phase::Pending);
                                if pending
                                    && let Some((handle, ..)) = st.running.remove(&k) {
                                        handle.cancel();
                                        given.push(k);
                                    }
                            }
                            drop(st);
                            send(out, &FromWorker::Stolen(given));
                        }
                        ToWorker::Shutdown => return Ended::Stopped,
                        ToWorker::Restart => return Ended::Restart,
                    }
                }
                Some(first) = done_rx.recv() => {
                    // Everything finished by now goes in one report.
                    let mut finished = FinishedList::new();
                    let mut key = Some(first);
                    while let Some(k) = key {
                        if let Some(report) = complete(&self.state, k, self.config.inline_max) {
                            match report {
                                Ok(f) => finished.push(f),
                                Err(failed) => send(out, &failed),
                            }
                        }
                        key = done_rx.try_recv().ok();
                    }
                    if !finished.is_empty() {
                        send(out, &FromWorker::Finished(finished));
                    }
                }
            }
            self.update_pause(out);
        }
    }

    /// Pauses or resumes the worker as its held bytes cross the pause
    /// threshold, and tells the scheduler.
    fn update_pause(&self, out: &mpsc::UnboundedSender<Vec<u8>>) {
        let limit = self.config.memory_limit;
        if limit == 0 {
            return;
        }
        {
            let mut st = lock(&self.state);
            let before = st.spilled_bytes();
            st.spill_to_target();
            if st.spilled_bytes() > before {
                tracing::debug!(
                    "worker {}: spilled {} bytes to disk ({} there now)",
                    self.config.name,
                    st.spilled_bytes() - before,
                    st.spilled_bytes()
                );
            }
        }
        let held = self.memory.held();
        let over = self.memory.over();
        if *self.paused.borrow() != over {
            if over {
                tracing::warn!(
                    "worker {}: pausing, it holds {held} bytes of its {limit}-byte memory limit",
                    self.config.name
                );
            } else {
                tracing::info!("worker {}: resuming, it holds {held} bytes", self.config.name);
            }
            self.paused.send_replace(over);
            send(out, &FromWorker::Paused(over));
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

/// Hands a task to the pool if everything it needs is here (the worker is
/// not paused, and its arguments are values or results this worker holds);
/// otherwise gives it back, with its function, for [`prepare`].
fn prepare_here(
    ctx: &Arc<Ctx>,
    task: ComputeMsg,
    out: &mpsc::UnboundedSender<Vec<u8>>,
) -> Option<(ComputeMsg, &'static RemoteFunc)> {
    let remote = match require(&task.func) {
        Ok(r) => r,
        Err(e) => {
            send(out, &FromWorker::Failed { key: task.key, message: e.to_string() });
            return None;
        }
    };
    if *ctx.paused.borrow() {
        return Some((task, remote));
    }
    let mut values = Vec::with_capacity(task.args.len());
    for (position, arg) in task.args.iter().enumerate() {
        let value = match arg {
            ArgMsg::Value(bytes) => remote.decode_arg(position, bytes).map_err(StoreError::from),
            ArgMsg::Key(dep) => match lock(&ctx.state).get(dep).map(|s| s.value_for(remote, position)) {
                Some(value) => value,
                // Sent along by the scheduler: decoded here, with no detour
                // through the fetching path.
                None => match peer::inline_input(dep, &task.deps) {
                    Some(bytes) => remote.decode_arg(position, bytes).map_err(StoreError::from),
                    None => return Some((task, remote)),
                },
            },
            ArgMsg::List(_) => return Some((task, remote)),
        };
        match value {
            Ok(v) => values.push(v),
            Err(e) => {
                send(out, &FromWorker::Failed { key: task.key, message: e.to_string() });
                return None;
            }
        }
    }
    to_pool(ctx, task.id, task.key, remote, values);
    None
}

/// Gets a task's function and inputs (fetching what is elsewhere), then
/// hands it to the pool. While the worker is paused for memory the task
/// waits, parked, before fetching anything (the scheduler may steal it).
async fn prepare(ctx: Arc<Ctx>, task: ComputeMsg, remote: &'static RemoteFunc, out: mpsc::UnboundedSender<Vec<u8>>) {
    let ComputeMsg { id, key, args, deps, .. } = task;
    let token = ctx.config.token.as_deref();
    let max_frame = ctx.config.max_frame;
    let state = &ctx.state;
    let mut paused = ctx.paused.subscribe();
    if *paused.borrow_and_update() {
        lock(state).parked.insert(key.clone());
        while *paused.borrow_and_update() {
            if paused.changed().await.is_err() {
                return;
            }
        }
        if !lock(state).parked.remove(&key) {
            // Stolen, released or reset meanwhile.
            return;
        }
    }
    let mut values = Vec::with_capacity(args.len());
    let mut missing = Vec::new();
    for (position, arg) in args.iter().enumerate() {
        let value = match arg {
            ArgMsg::Value(bytes) => remote.decode_arg(position, bytes).map_err(StoreError::from),
            ArgMsg::Key(dep) => {
                let local = lock(state).get(dep).map(|s| s.value_for(remote, position));
                match local {
                    Some(v) => v,
                    None => match peer::fetch(dep, &deps, state, token, max_frame).await {
                        Some(bytes) => remote.decode_arg_shared(position, &bytes).map_err(StoreError::from),
                        None => {
                            missing.push(dep.clone());
                            continue;
                        }
                    },
                }
            }
            ArgMsg::List(elements) => {
                // postcard writes a Vec<T> as its length (varint) followed by
                // its elements: the parameter's own codec decodes the result.
                let mut bytes = match postcard::to_allocvec(&(elements.len() as u64)) {
                    Ok(b) => b,
                    Err(e) => {
                        send(&out, &FromWorker::Failed { key, message: e.to_string() });
                        return;
                    }
                };
                let mut complete = true;
                for element in elements {
                    match peer::element_bytes(element, state, &deps, token, max_frame).await {
                        Some(b) => bytes.extend_from_slice(&b),
                        None => {
                            missing.push(element.clone());
                            complete = false;
                        }
                    }
                }
                if !complete {
                    continue;
                }
                remote.decode_arg(position, &bytes).map_err(StoreError::from)
            }
        };
        match value {
            Ok(v) => values.push(v),
            Err(e) => {
                send(&out, &FromWorker::Failed { key, message: e.to_string() });
                return;
            }
        }
    }
    if !missing.is_empty() {
        send(&out, &FromWorker::MissingData { key, missing });
        return;
    }
    to_pool(&ctx, id, key, remote, values);
}

/// Submits a task whose inputs are all here to the pool, and has its end
/// reported to the worker loop.
fn to_pool(ctx: &Arc<Ctx>, id: shoal_proto::TaskId, key: Key, remote: &'static RemoteFunc, values: Vec<Value>) {
    let state = &ctx.state;
    let func = if ctx.config.memory_limit > 0 {
        // Checked when a thread takes the task, not only when it arrives;
        // its result counts as soon as it exists.
        let (memory, inner, made) = (ctx.memory.clone(), remote.func().clone(), key.clone());
        let (name, identity) = (inner.name().to_string(), inner.identity());
        Func::new(
            &name,
            identity,
            Box::new(move |args| {
                memory.pass();
                let value = inner.call(args)?;
                memory.made(&made, remote.result_size(&value).unwrap_or(0));
                Ok(value)
            }),
        )
    } else {
        remote.func().clone()
    };
    let task = Task { key: key.clone(), func, args: values.into_iter().map(Arg::Value).collect() };
    let Some(handle) = ctx.pool.submit_one(Submission::new(task).held()) else { return };
    lock(state).running.insert(key.clone(), (handle.clone(), remote, Instant::now(), id));
    handle.subscribe(Arc::new(Done { key, tx: ctx.done.clone() }), 0);
}

/// A finished task's report: its result goes to the store.
/// Results up to `inline_max` bytes come along encoded (see
/// [`WorkerConfig::inline_max`]).
fn complete(state: &Shared, key: Key, inline_max: usize) -> Option<Result<FinishedMsg, FromWorker>> {
    let mut st = lock(state);
    let (handle, producer, queued, id) = st.running.remove(&key)?;
    let report = match handle.try_outcome()? {
        Ok(value) => {
            let nbytes = producer.result_size(&value).unwrap_or(0);
            let inline = if inline_max > 0 && nbytes <= inline_max.min(shoal_proto::INLINE_LIMIT) as u64 {
                producer.encode_result(&value).ok()
            } else {
                None
            };
            st.keep(key.clone(), Stored::new(Held::Value { value, producer }, nbytes));
            // Time on this worker, queueing included: what the scheduler
            // should expect a task of this group to occupy a slot for.
            let duration_us = queued.elapsed().as_micros() as u64;
            Ok(FinishedMsg { id, key: key.clone(), nbytes, duration_us, inline })
        }
        Err(failure) => {
            let message = match &failure.root().kind {
                shoal_local::FailureKind::Task(e) => e.to_string(),
                _ => failure.to_string(),
            };
            Err(FromWorker::Failed { key: key.clone(), message })
        }
    };
    // Stored now (counted once, there), or failed.
    st.memory.settle(&key);
    Some(report)
}
