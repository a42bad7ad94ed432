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

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};

use shoal_graph::remote::{RemoteFunc, require};
use shoal_graph::{Arg, Key, Task, Value};
use shoal_local::{Handle, Notify, Runtime, Submission};
use shoal_proto::{
    ArgMsg, ComputeMsg, DepLocation, FinishedMsg, FrameKind, FromWorker, Hello, HelloReply, PeerReply, PeerRequest,
    Role, TaskId, ToWorker, WorkerId, WorkerInfo, check_hello, check_reply, decode_hello, decode_message,
    encode_message, encode_raw,
};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

use crate::conn::{Background, Closed, FrameReader, writer};

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
    /// Address the data server listens on (any free port).
    pub listen: IpAddr,
    /// The largest frame accepted.
    pub max_frame: usize,
}

impl WorkerConfig {
    /// A worker joining `scheduler` with one thread per core.
    pub fn new(scheduler: SocketAddr, name: impl Into<String>) -> WorkerConfig {
        WorkerConfig {
            scheduler,
            name: name.into(),
            threads: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            token: None,
            listen: IpAddr::from([127, 0, 0, 1]),
            max_frame: shoal_proto::DEFAULT_MAX_FRAME,
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

/// A worker running on its own thread. Dropping it stops it.
pub struct RunningWorker {
    id: WorkerId,
    data_address: SocketAddr,
    service: Background,
}

impl RunningWorker {
    /// The id the scheduler gave it.
    pub fn id(&self) -> WorkerId {
        self.id
    }

    /// Where peers and clients fetch its results.
    pub fn data_address(&self) -> SocketAddr {
        self.data_address
    }

    /// Runs until the scheduler goes away (for a worker process).
    pub fn wait(mut self) {
        self.service.join();
    }
}

/// A result kept by this worker, with the function that made it (whose
/// codec encodes it when it must leave).
struct Stored {
    value: Value,
    producer: &'static RemoteFunc,
}

/// An open connection to a peer's data server, kept for the next fetch.
struct PeerConn {
    reader: FrameReader,
    write: tokio::net::tcp::OwnedWriteHalf,
}

#[derive(Default)]
struct State {
    store: HashMap<Key, Stored>,
    /// Idle connections to other workers' data servers, by address: a fetch
    /// reuses one instead of paying a connect and a handshake.
    peers: HashMap<Arc<str>, Vec<PeerConn>>,
    /// Tasks on the pool: their handle, their function, when they were
    /// queued, and the id the scheduler sent them with.
    running: HashMap<Key, (Handle, &'static RemoteFunc, std::time::Instant, TaskId)>,
}

type Shared = Arc<Mutex<State>>;

fn lock(state: &Shared) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
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

/// Starts a worker and waits until its scheduler has welcomed it.
///
/// # Errors
/// When the data server cannot listen, the scheduler cannot be reached, or
/// it refuses the worker.
pub fn start_worker(config: WorkerConfig) -> Result<RunningWorker, WorkerError> {
    let io = |what: &str| {
        let what = what.to_string();
        move |source| WorkerError::Io { what, source }
    };
    let pool = Runtime::threads(config.threads).map_err(io("cannot start the worker's threads"))?;
    let data = std::net::TcpListener::bind((config.listen, 0)).map_err(io("cannot open the data server"))?;
    let data_address = data.local_addr().map_err(io("cannot open the data server"))?;
    data.set_nonblocking(true).map_err(io("cannot open the data server"))?;
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<WorkerId, WorkerError>>();
    let service = Background::spawn(format!("shoal-worker-{}", config.name), move |stop| {
        run(config, data, data_address, pool, ready_tx, stop)
    })
    .map_err(io("cannot start the worker thread"))?;
    let id = ready_rx.recv().map_err(|_| WorkerError::Io {
        what: "the worker thread ended before joining".into(),
        source: std::io::Error::other("worker thread ended"),
    })??;
    Ok(RunningWorker { id, data_address, service })
}

async fn run(
    config: WorkerConfig,
    data: std::net::TcpListener,
    data_address: SocketAddr,
    pool: Runtime,
    ready: std::sync::mpsc::Sender<Result<WorkerId, WorkerError>>,
    mut stop: oneshot::Receiver<()>,
) {
    let joined = join(&config, data_address).await;
    let (mut reader, out) = match joined {
        Ok((reader, out, id)) => {
            let _ = ready.send(Ok(id));
            (reader, out)
        }
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let state: Shared = Arc::default();
    match TcpListener::from_std(data) {
        Ok(listener) => {
            tokio::spawn(serve_data(listener, state.clone(), config.token.clone(), config.max_frame));
        }
        Err(e) => tracing::error!("the data server cannot start: {e}"),
    }
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Key>();
    // Well inside the scheduler's worker timeout, even on a loaded machine.
    let mut heartbeat = tokio::time::interval(std::time::Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = heartbeat.tick() => {
                let memory = lock(&state).store.len() as u64;
                send(&out, &FromWorker::Heartbeat { memory });
            }
            msg = reader.next_message() => {
                let msg = match msg.and_then(|body| Ok(decode_message::<ToWorker>(&body)?)) {
                    Ok(m) => m,
                    Err(e) => {
                        // Without its scheduler a worker has nothing to do.
                        tracing::warn!("worker {}: the scheduler connection ended: {e}", config.name);
                        break;
                    }
                };
                match msg {
                    ToWorker::Compute(tasks) => {
                        for task in tasks {
                            tokio::spawn(prepare(task, state.clone(), pool.clone(), out.clone(), done_tx.clone(), config.token.clone(), config.max_frame));
                        }
                    }
                    ToWorker::Release(keys) => {
                        let mut st = lock(&state);
                        for k in keys {
                            st.store.remove(&k);
                            if let Some((handle, ..)) = st.running.remove(&k) {
                                handle.cancel();
                            }
                        }
                    }
                    ToWorker::Steal(keys) => {
                        let mut given = Vec::new();
                        let mut st = lock(&state);
                        for k in keys {
                            let pending = st.running.get(&k).is_some_and(|(h, ..)| h.phase() == shoal_local::Phase::Pending);
                            if pending {
                                if let Some((handle, ..)) = st.running.remove(&k) {
                                    handle.cancel();
                                    given.push(k);
                                }
                            }
                        }
                        drop(st);
                        send(&out, &FromWorker::Stolen(given));
                    }
                    ToWorker::Shutdown => break,
                }
            }
            Some(first) = done_rx.recv() => {
                // Everything finished by now goes in one report.
                let mut finished = Vec::new();
                let mut key = Some(first);
                while let Some(k) = key {
                    if let Some(report) = complete(&state, k) {
                        match report {
                            Ok(f) => finished.push(f),
                            Err(failed) => send(&out, &failed),
                        }
                    }
                    key = done_rx.try_recv().ok();
                }
                if !finished.is_empty() {
                    send(&out, &FromWorker::Finished(finished));
                }
            }
        }
    }
}

/// Connects, says hello, registers; the reader, the writer queue and the id.
async fn join(
    config: &WorkerConfig,
    data_address: SocketAddr,
) -> Result<(FrameReader, mpsc::UnboundedSender<Vec<u8>>, WorkerId), WorkerError> {
    let refused = |reason: String| WorkerError::Refused { address: config.scheduler, reason };
    let stream = TcpStream::connect(config.scheduler).await.map_err(|source| WorkerError::Io {
        what: format!("cannot reach the scheduler at {}", config.scheduler),
        source,
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
        memory_limit: 0,
        resources: vec![],
    };
    send(&out, &FromWorker::Register(info));
    let mut reader = FrameReader::new(read, config.max_frame);
    let body = reader.next_message().await.map_err(|e| refused(e.to_string()))?;
    let reply: HelloReply = decode_message(&body).map_err(|e| refused(e.to_string()))?;
    let id = check_reply(&reply).map_err(|e| refused(e.to_string()))?;
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

/// Gets a task's function and inputs (fetching what is elsewhere), then
/// hands it to the pool.
async fn prepare(
    task: ComputeMsg,
    state: Shared,
    pool: Runtime,
    out: mpsc::UnboundedSender<Vec<u8>>,
    done: mpsc::UnboundedSender<Key>,
    token: Option<String>,
    max_frame: usize,
) {
    let ComputeMsg { id, key, func, args, deps, .. } = task;
    let remote = match require(&func) {
        Ok(r) => r,
        Err(e) => {
            send(&out, &FromWorker::Failed { key, message: e.to_string() });
            return;
        }
    };
    let mut values = Vec::with_capacity(args.len());
    let mut missing = Vec::new();
    for (position, arg) in args.iter().enumerate() {
        let value = match arg {
            ArgMsg::Value(bytes) => remote.decode_arg(position, bytes),
            ArgMsg::Key(dep) => {
                let local = lock(&state).store.get(dep).map(|s| s.value.clone());
                match local {
                    Some(v) => Ok(v),
                    None => match fetch(dep, &deps, &state, token.as_deref(), max_frame).await {
                        Some(bytes) => remote.decode_arg(position, &bytes),
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
                    match element_bytes(element, &state, &deps, token.as_deref(), max_frame).await {
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
                remote.decode_arg(position, &bytes)
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
    let task =
        Task { key: key.clone(), func: remote.func().clone(), args: values.into_iter().map(Arg::Value).collect() };
    let Some(handle) = pool.submit_one(Submission::new(task).held()) else { return };
    lock(&state).running.insert(key.clone(), (handle.clone(), remote, std::time::Instant::now(), id));
    handle.subscribe(Arc::new(Done { key, tx: done }), 0);
}

/// The encoded result of `key`: from this worker's store, or fetched.
async fn element_bytes(
    key: &Key,
    state: &Shared,
    deps: &[DepLocation],
    token: Option<&str>,
    max_frame: usize,
) -> Option<Vec<u8>> {
    let local = lock(state).store.get(key).map(|s| s.producer.encode_result(&s.value));
    match local {
        Some(Ok(bytes)) => Some(bytes),
        Some(Err(e)) => {
            tracing::error!("cannot encode {key}: {e}");
            None
        }
        None => fetch(key, deps, state, token, max_frame).await,
    }
}

/// A finished task's report: its result goes to the store.
fn complete(state: &Shared, key: Key) -> Option<Result<FinishedMsg, FromWorker>> {
    let mut st = lock(state);
    let (handle, producer, queued, id) = st.running.remove(&key)?;
    match handle.try_outcome()? {
        Ok(value) => {
            let nbytes = producer.result_size(&value).unwrap_or(0);
            st.store.insert(key.clone(), Stored { value, producer });
            // Time on this worker, queueing included: what the scheduler
            // should expect a task of this group to occupy a slot for.
            let duration_us = queued.elapsed().as_micros() as u64;
            Some(Ok(FinishedMsg { id, key, nbytes, duration_us }))
        }
        Err(failure) => {
            let message = match &failure.root().kind {
                shoal_local::FailureKind::Task(e) => e.to_string(),
                _ => failure.to_string(),
            };
            Some(Err(FromWorker::Failed { key, message }))
        }
    }
}

/// Fetches a result from one of the workers that hold it.
async fn fetch(
    key: &Key,
    deps: &[DepLocation],
    state: &Shared,
    token: Option<&str>,
    max_frame: usize,
) -> Option<Vec<u8>> {
    let holders = deps.iter().find(|d| d.key == *key).map(|d| d.holders.clone()).unwrap_or_default();
    for holder in holders {
        let idle = lock(state).peers.get_mut(&holder).and_then(Vec::pop);
        let conn = match idle {
            Some(conn) => Ok(conn),
            None => connect_peer(&holder, token, max_frame).await,
        };
        let result = match conn {
            Ok(mut conn) => match request(&mut conn, key).await {
                Ok(bytes) => {
                    lock(state).peers.entry(holder.clone()).or_default().push(conn);
                    Ok(bytes)
                }
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        match result {
            Ok(Some(bytes)) => return Some(bytes),
            Ok(None) => {}
            Err(e) => tracing::debug!("fetching {key} from {holder} failed: {e}"),
        }
    }
    None
}

/// Connects to a data server and says hello.
async fn connect_peer(address: &str, token: Option<&str>, max_frame: usize) -> Result<PeerConn, Closed> {
    let stream = TcpStream::connect(address.trim_start_matches("tcp://")).await?;
    let _ = stream.set_nodelay(true);
    let (read, mut write) = stream.into_split();
    let mut hello = Vec::new();
    encode_message(&Hello::new(Role::Peer, "fetch", token), &mut hello)?;
    write.write_all(&hello).await?;
    let mut reader = FrameReader::new(read, max_frame);
    let reply: HelloReply = decode_message(&reader.next_message().await?)?;
    check_reply(&reply)?;
    Ok(PeerConn { reader, write })
}

/// Asks a data server for one result; `Ok(None)` if it does not hold it.
async fn request(conn: &mut PeerConn, key: &Key) -> Result<Option<Vec<u8>>, Closed> {
    let mut request = Vec::new();
    encode_message(&PeerRequest::Get(vec![key.clone()]), &mut request)?;
    conn.write.write_all(&request).await?;
    let PeerReply::Data { keys, .. } = decode_message(&conn.reader.next_message().await?)?;
    if !keys.contains(key) {
        return Ok(None);
    }
    let frame = conn.reader.next_frame().await?;
    if frame.kind != FrameKind::Raw {
        return Err(Closed::UnexpectedRaw);
    }
    Ok(Some(frame.body))
}

async fn serve_data(listener: TcpListener, state: Shared, token: Option<String>, max_frame: usize) {
    loop {
        let Ok((stream, peer)) = listener.accept().await else { continue };
        let state = state.clone();
        let token = token.clone();
        tokio::spawn(async move {
            if let Err(e) = serve_peer(stream, state, token.as_deref(), max_frame).await {
                if !matches!(e, Closed::Eof) {
                    tracing::warn!("closing the data connection from {peer}: {e}");
                }
            }
        });
    }
}

async fn serve_peer(stream: TcpStream, state: Shared, token: Option<&str>, max_frame: usize) -> Result<(), Closed> {
    let _ = stream.set_nodelay(true);
    let (read, mut write) = stream.into_split();
    let mut reader = FrameReader::new(read, max_frame);
    let hello = decode_hello(&reader.next_message().await?)?;
    let mut out = Vec::new();
    if let Err(e) = check_hello(&hello, token) {
        encode_message(&HelloReply::rejected(&e), &mut out)?;
        write.write_all(&out).await?;
        return Err(Closed::Handshake(e));
    }
    encode_message(&HelloReply::welcome(0), &mut out)?;
    write.write_all(&out).await?;
    loop {
        let PeerRequest::Get(wanted) = decode_message(&reader.next_message().await?)?;
        let mut keys = Vec::new();
        let mut missing = Vec::new();
        let mut bodies = Vec::new();
        {
            let st = lock(&state);
            for k in wanted {
                let encoded = st.store.get(&k).map(|s| s.producer.encode_result(&s.value));
                match encoded {
                    Some(Ok(bytes)) => {
                        keys.push(k);
                        bodies.push(bytes);
                    }
                    Some(Err(e)) => {
                        tracing::error!("cannot encode {k}: {e}");
                        missing.push(k);
                    }
                    None => missing.push(k),
                }
            }
        }
        let mut out = Vec::new();
        encode_message(&PeerReply::Data { keys, missing }, &mut out)?;
        for body in &bodies {
            encode_raw(body, &mut out)?;
        }
        write.write_all(&out).await?;
    }
}
