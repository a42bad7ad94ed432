//! The scheduler's network shell: a TCP listener, one reader and one writer
//! per connection, and one task that owns the [`Scheduler`] and feeds it the
//! events the connections decode.
//!
//! The state machine never waits on a socket: readers hand it decoded
//! messages through a channel, and what it sends goes to per-connection
//! writer queues. A peer that sends anything malformed — a bad handshake, an
//! oversized or undecodable frame — loses its connection, with the reason
//! logged; nobody else notices.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use shoal_proto::{
    ClientId, FromScheduler, FromWorker, HelloReply, KeysRef, Role, ToScheduler, ToWorker, WorkerId, WorkerInfo,
    check_hello, decode_hello, decode_message, encode_message,
};
use shoal_scheduler::{Assigned, Comm, Scheduler, SchedulerConfig};

use crate::conn::{Background, Closed, FrameReader, writer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

/// How to run a scheduler.
#[derive(Clone, Debug)]
pub struct SchedulerServerConfig {
    /// Where to listen; port 0 picks a free one.
    pub listen: SocketAddr,
    /// The cluster token peers must present; `None` accepts any peer (only
    /// sensible on loopback).
    pub token: Option<String>,
    /// How often time passes for the state machine (heartbeats, stealing).
    pub tick: Duration,
    /// The largest frame accepted from a peer.
    pub max_frame: usize,
    /// The state machine's tunables.
    pub scheduler: SchedulerConfig,
    /// Told when clients and workers come and go, for a launcher whose
    /// processes live and die together (`mpirun` mode).
    pub membership: Option<std::sync::mpsc::Sender<Membership>>,
}

/// A client or worker joining or leaving, as [`SchedulerServerConfig::membership`]
/// reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Membership {
    /// A client connected.
    ClientJoined(ClientId),
    /// A client's connection ended.
    ClientLeft(ClientId),
    /// A worker registered, under this name.
    WorkerJoined(String),
    /// A worker's connection ended or it fell silent.
    WorkerLeft(String),
}

impl Default for SchedulerServerConfig {
    fn default() -> SchedulerServerConfig {
        SchedulerServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            token: None,
            tick: Duration::from_millis(100),
            max_frame: shoal_proto::DEFAULT_MAX_FRAME,
            scheduler: SchedulerConfig::default(),
            membership: None,
        }
    }
}

/// Why a scheduler could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The listening address could not be bound.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// The address.
        address: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
    /// The runtime thread could not start.
    #[error("cannot start the scheduler thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// A scheduler running on its own thread. Dropping it stops it.
pub struct RunningScheduler {
    address: SocketAddr,
    service: Background,
    shutdown: mpsc::UnboundedSender<()>,
}

impl RunningScheduler {
    /// The address clients and workers connect to.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Stops the scheduler and waits for its thread.
    pub fn stop(mut self) {
        self.service.stop();
    }

    /// Tells every worker to stop, waits (up to [`SHUTDOWN_GRACE`]) until
    /// they have gone, then stops: a cluster ending as a whole, whose
    /// workers must not wait out their death timeout.
    pub fn shutdown(mut self) {
        if self.shutdown.send(()).is_ok() {
            self.service.join();
        }
        self.service.stop();
    }

    /// Runs until stopped (for `shoal scheduler`).
    pub fn wait(mut self) {
        self.service.join();
    }
}

/// Starts a scheduler listening on `config.listen`.
///
/// # Errors
/// When the address cannot be bound or the thread cannot start.
pub fn start_scheduler(config: SchedulerServerConfig) -> Result<RunningScheduler, ServerError> {
    let std_listener = std::net::TcpListener::bind(config.listen)
        .map_err(|source| ServerError::Bind { address: config.listen, source })?;
    let address = std_listener.local_addr().map_err(|source| ServerError::Bind { address: config.listen, source })?;
    std_listener.set_nonblocking(true).map_err(|source| ServerError::Bind { address, source })?;
    let (shutdown, shutdown_rx) = mpsc::unbounded_channel();
    let service =
        Background::spawn("shoal-scheduler".into(), move |stop| serve(std_listener, config, stop, shutdown_rx))
            .map_err(ServerError::Thread)?;
    Ok(RunningScheduler { address, service, shutdown })
}

/// What connections tell the core.
enum Event {
    ClientJoined { out: mpsc::UnboundedSender<Vec<u8>>, id: oneshot::Sender<ClientId> },
    Client(ClientId, ToScheduler),
    ClientLeft(ClientId),
    WorkerJoined { info: WorkerInfo, out: mpsc::UnboundedSender<Vec<u8>>, id: oneshot::Sender<WorkerId> },
    Worker(WorkerId, FromWorker),
    WorkerLeft(WorkerId),
}

/// Sends the state machine's messages to connection writers, encoded once.
#[derive(Default)]
struct NetComm {
    clients: HashMap<ClientId, mpsc::UnboundedSender<Vec<u8>>>,
    workers: HashMap<WorkerId, mpsc::UnboundedSender<Vec<u8>>>,
    /// Who is told of comings and goings, and the names it knows workers by.
    membership: Option<std::sync::mpsc::Sender<Membership>>,
    names: HashMap<WorkerId, String>,
}

impl NetComm {
    fn tell(&self, change: Membership) {
        if let Some(membership) = &self.membership {
            let _ = membership.send(change);
        }
    }

    /// Reports a worker gone, once, whether its connection ended or it fell silent.
    fn worker_left(&mut self, id: WorkerId) {
        if let Some(name) = self.names.remove(&id) {
            self.tell(Membership::WorkerLeft(name));
        }
    }
}

impl Comm for NetComm {
    fn to_worker(&mut self, worker: WorkerId, msg: ToWorker) {
        send_encoded(self.workers.get(&worker), &msg, worker);
    }

    fn compute(&mut self, worker: WorkerId, tasks: &Assigned<'_>) {
        send_encoded(self.workers.get(&worker), tasks, worker);
    }

    fn keys(&mut self, worker: WorkerId, msg: KeysRef<'_>) {
        send_encoded(self.workers.get(&worker), &msg, worker);
    }

    fn to_client(&mut self, client: ClientId, msgs: Vec<FromScheduler>) {
        send_encoded(self.clients.get(&client), &msgs, client);
    }
}

/// Encodes `msg` as one frame for a peer's writer, if the peer is still
/// connected.
fn send_encoded<T: serde::Serialize + ?Sized>(
    out: Option<&mpsc::UnboundedSender<Vec<u8>>>,
    msg: &T,
    peer: impl std::fmt::Display,
) {
    let Some(out) = out else { return };
    let mut frame = Vec::new();
    match encode_message(msg, &mut frame) {
        Ok(()) => {
            let _ = out.send(frame);
        }
        Err(e) => tracing::error!("cannot encode a message for {peer}: {e}"),
    }
}

/// How long [`RunningScheduler::shutdown`] waits for workers to leave.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

async fn serve(
    listener: std::net::TcpListener,
    config: SchedulerServerConfig,
    mut stop: oneshot::Receiver<()>,
    mut shutdown: mpsc::UnboundedReceiver<()>,
) {
    let listener = match TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("cannot use the listening socket: {e}");
            return;
        }
    };
    let (events_tx, mut events) = mpsc::unbounded_channel::<Event>();
    let mut scheduler = Scheduler::new(config.scheduler.clone());
    let mut comm = NetComm { membership: config.membership.clone(), ..NetComm::default() };
    let mut closing: Option<Instant> = None;
    let started = Instant::now();
    let now_us = || started.elapsed().as_micros() as u64;
    let mut tick = tokio::time::interval(config.tick);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            Some(()) = shutdown.recv(), if closing.is_none() => {
                for out in comm.workers.values() {
                    send_encoded(Some(out), &ToWorker::Shutdown, "a worker");
                }
                closing = Some(Instant::now());
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    tokio::spawn(connection(stream, peer, config.token.clone(), config.max_frame, events_tx.clone()));
                }
                Err(e) => tracing::warn!("accept failed: {e}"),
            },
            Some(event) = events.recv() => {
                // What is already waiting is handled now, worker messages
                // as bursts: one round of placement and one send per peer.
                let mut burst = Vec::new();
                let mut next = Some(event);
                let mut handled = 0;
                while let Some(event) = next {
                    handle_event(event, &mut burst, &mut scheduler, &mut comm, now_us());
                    handled += 1;
                    next = if handled < MAX_BURST { events.try_recv().ok() } else { None };
                }
                if !burst.is_empty() {
                    scheduler.on_worker_messages(burst, now_us(), &mut comm);
                }
            }
            _ = tick.tick() => {
                scheduler.on_tick(now_us(), &mut comm);
                // Workers lost for silence: closing their connection tells them.
                let known: std::collections::HashSet<WorkerId> = scheduler.workers().iter().map(|w| w.id).collect();
                let silent: Vec<WorkerId> = comm.workers.keys().filter(|id| !known.contains(id)).copied().collect();
                for id in silent {
                    comm.workers.remove(&id);
                    comm.worker_left(id);
                }
                if closing.is_some_and(|since| comm.workers.is_empty() || since.elapsed() >= SHUTDOWN_GRACE) {
                    break;
                }
            }
        }
    }
}

/// The most events handled before the scheduler's answers to a burst go
/// out, so that a flood of reports cannot hold them back for long.
const MAX_BURST: usize = 1024;

/// Handles an event: a worker's message joins the burst, anything else
/// is handled after the burst so far (events keep their order).
fn handle_event(
    event: Event,
    burst: &mut Vec<(WorkerId, FromWorker)>,
    scheduler: &mut Scheduler,
    comm: &mut NetComm,
    now_us: u64,
) {
    if !matches!(event, Event::Worker(..)) && !burst.is_empty() {
        scheduler.on_worker_messages(std::mem::take(burst), now_us, comm);
    }
    match event {
        Event::Worker(w, msg) => burst.push((w, msg)),
        Event::ClientJoined { out, id } => {
            let client = scheduler.on_client_connected();
            send_welcome(&out, client.0);
            comm.clients.insert(client, out);
            comm.tell(Membership::ClientJoined(client));
            let _ = id.send(client);
        }
        Event::Client(c, msg) => scheduler.on_client_message(c, msg, comm),
        Event::ClientLeft(c) => {
            comm.clients.remove(&c);
            scheduler.on_client_disconnected(c, comm);
            comm.tell(Membership::ClientLeft(c));
        }
        Event::WorkerJoined { info, out, id } => {
            // The welcome, then the writer, before the first compute goes out.
            send_welcome(&out, scheduler.next_worker_id().0);
            comm.workers.insert(scheduler.next_worker_id(), out);
            let name = info.name.clone();
            let worker = scheduler.on_worker_registered(info, now_us, comm);
            if comm.membership.is_some() {
                comm.names.insert(worker, name.clone());
                comm.tell(Membership::WorkerJoined(name));
            }
            let _ = id.send(worker);
        }
        Event::WorkerLeft(w) => {
            comm.workers.remove(&w);
            scheduler.on_worker_lost(w, comm);
            comm.worker_left(w);
        }
    }
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    token: Option<String>,
    max_frame: usize,
    events: mpsc::UnboundedSender<Event>,
) {
    let (read, write) = stream.into_split();
    let (out_tx, out_rx) = mpsc::unbounded_channel::<Vec<u8>>();
    tokio::spawn(writer(write, out_rx));
    let mut reader = FrameReader::new(read, max_frame);
    match serve_peer(&mut reader, token.as_deref(), &out_tx, &events).await {
        Ok(()) | Err(Closed::Eof) => tracing::debug!("{peer} disconnected"),
        Err(reason) => tracing::warn!("closing the connection from {peer}: {reason}"),
    }
}

async fn serve_peer(
    reader: &mut FrameReader,
    token: Option<&str>,
    out: &mpsc::UnboundedSender<Vec<u8>>,
    events: &mpsc::UnboundedSender<Event>,
) -> Result<(), Closed> {
    let hello = decode_hello(&reader.next_message().await?)?;
    let role = match check_hello(&hello, token) {
        Ok(role) => role,
        Err(e) => {
            let mut frame = Vec::new();
            encode_message(&HelloReply::rejected(&e), &mut frame)?;
            let _ = out.send(frame);
            return Err(Closed::Handshake(e));
        }
    };
    match role {
        Role::Client => {
            let (id_tx, id_rx) = oneshot::channel();
            events.send(Event::ClientJoined { out: out.clone(), id: id_tx }).map_err(|_| Closed::Shutdown)?;
            let id = id_rx.await.map_err(|_| Closed::Shutdown)?;
            let result = forward(reader, events, |msg: ToScheduler| Event::Client(id, msg)).await;
            let _ = events.send(Event::ClientLeft(id));
            result
        }
        Role::Worker => {
            let FromWorker::Register(info) = decode_message::<FromWorker>(&reader.next_message().await?)? else {
                return Err(Closed::NotRegistered);
            };
            let (id_tx, id_rx) = oneshot::channel();
            events.send(Event::WorkerJoined { info, out: out.clone(), id: id_tx }).map_err(|_| Closed::Shutdown)?;
            let id = id_rx.await.map_err(|_| Closed::Shutdown)?;
            let result = forward(reader, events, |msg: FromWorker| Event::Worker(id, msg)).await;
            let _ = events.send(Event::WorkerLeft(id));
            result
        }
        Role::Peer => Err(Closed::Handshake(shoal_proto::HandshakeError::Rejected {
            reason: "the scheduler serves clients and workers, not data peers".into(),
        })),
    }
}

/// Decodes a peer's messages and hands them to the core until the
/// connection ends or sends something malformed.
async fn forward<T: serde::de::DeserializeOwned>(
    reader: &mut FrameReader,
    events: &mpsc::UnboundedSender<Event>,
    event: impl Fn(T) -> Event,
) -> Result<(), Closed> {
    loop {
        let msg = decode_message::<T>(&reader.next_message().await?)?;
        events.send(event(msg)).map_err(|_| Closed::Shutdown)?;
    }
}

fn send_welcome(out: &mpsc::UnboundedSender<Vec<u8>>, id: u32) {
    let mut frame = Vec::new();
    match encode_message(&HelloReply::welcome(id), &mut frame) {
        Ok(()) => {
            let _ = out.send(frame);
        }
        Err(e) => tracing::error!("cannot encode a welcome: {e}"),
    }
}
