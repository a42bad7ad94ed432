//! A client's connection to a scheduler, and fetching results from workers.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use shoal_graph::Key;
use shoal_proto::{
    FrameDecoder, FrameKind, FromScheduler, Hello, HelloReply, PeerAddress, PeerReply, PeerRequest, Role, ToScheduler,
    check_reply, decode_message, encode_message, encode_raw,
};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream as AsyncTcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::{mpsc, oneshot};

use crate::conn::{Background, FrameReader};

/// Called with every batch of messages from the scheduler, then once with
/// `None` when the connection ends.
pub type OnMessages = Arc<dyn Fn(Option<Vec<FromScheduler>>) + Send + Sync>;

/// Why a client could not connect or fetch.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing accepted a connection at the scheduler's address.
    #[error(
        "no scheduler answers at tcp://{address} ({source}): is one running there? Start one with \
         `shoal scheduler --port {port}`, or let LocalCluster start one", port = address.port()
    )]
    Unreachable {
        /// The scheduler's address.
        address: SocketAddr,
        /// What the connection attempt said.
        source: std::io::Error,
    },
    /// A socket operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// The peer spoke, but not as expected.
    #[error("{what}: {reason}")]
    Protocol {
        /// What was being done.
        what: String,
        /// What went wrong.
        reason: String,
    },
}

/// A connection to a scheduler, served by a background thread.
pub struct ClientConnection {
    out: mpsc::UnboundedSender<Outgoing>,
    releases: Arc<Mutex<Releases>>,
    token: Option<String>,
    _service: Background,
}

/// What the connection's writer sends.
enum Outgoing {
    Frame(Vec<u8>),
    /// The keys released since generation `.0` began, if still unsent.
    Releases(u64),
}

/// Keys released but not yet sent. Dropping many futures at once must not
/// cost a message each: the first release queues a marker, and the keys
/// released until the writer reaches it go out in one message. A message
/// sent meanwhile takes the pending keys with it first (ending the
/// generation), so no release ever overtakes a message sent before it —
/// a task submitted with a dependency reaches the scheduler before that
/// dependency's release.
#[derive(Default)]
struct Releases {
    keys: Vec<Key>,
    generation: u64,
}

impl Releases {
    /// The pending keys as a message, ending this generation.
    fn take_frame(&mut self) -> Option<Vec<u8>> {
        if self.keys.is_empty() {
            return None;
        }
        self.generation += 1;
        let mut frame = Vec::new();
        encode_message(&ToScheduler::Release(std::mem::take(&mut self.keys)), &mut frame).ok()?;
        Some(frame)
    }
}

fn lock(releases: &Mutex<Releases>) -> MutexGuard<'_, Releases> {
    releases.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl ClientConnection {
    /// Connects and says hello; `on_messages` then hears everything the
    /// scheduler says, on the connection's thread.
    ///
    /// # Errors
    /// When the scheduler cannot be reached or refuses the client.
    pub fn connect(
        address: SocketAddr,
        token: Option<&str>,
        on_messages: OnMessages,
    ) -> Result<ClientConnection, ClientError> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<mpsc::UnboundedSender<Outgoing>, ClientError>>();
        let token_owned = token.map(str::to_string);
        let releases = Arc::new(Mutex::new(Releases::default()));
        let for_writer = releases.clone();
        let service = Background::spawn("shoal-client".into(), move |stop| {
            serve(address, token_owned, on_messages, for_writer, ready_tx, stop)
        })
        .map_err(|source| ClientError::Io { what: "cannot start the client thread".into(), source })?;
        let out = ready_rx.recv().map_err(|_| ClientError::Protocol {
            what: format!("connecting to {address}"),
            reason: "the connection thread ended".into(),
        })??;
        Ok(ClientConnection { out, releases, token: token.map(str::to_string), _service: service })
    }

    /// Sends a message to the scheduler (after any releases made before it).
    pub fn send(&self, msg: &ToScheduler) {
        let mut frame = Vec::new();
        if encode_message(msg, &mut frame).is_ok() {
            // Under the lock: the order of the queue is the order of calls.
            let mut releases = lock(&self.releases);
            if let Some(released) = releases.take_frame() {
                let _ = self.out.send(Outgoing::Frame(released));
            }
            let _ = self.out.send(Outgoing::Frame(frame));
        }
    }

    /// Tells the scheduler that this client no longer needs `key`'s result:
    /// batched with the releases that follow it closely, and never sent
    /// after a message that was sent later.
    pub fn release(&self, key: Key) {
        let mut releases = lock(&self.releases);
        releases.keys.push(key);
        if releases.keys.len() == 1 {
            let _ = self.out.send(Outgoing::Releases(releases.generation));
        }
    }

    /// Fetches one result's bytes from a worker's data server, on the
    /// calling thread; `Ok(None)` when that worker does not hold it.
    ///
    /// # Errors
    /// When the worker cannot be reached or answers wrongly.
    pub fn fetch(&self, address: &str, key: &Key) -> Result<Option<Vec<u8>>, ClientError> {
        let mut got = fetch_blocking(address, std::slice::from_ref(key), self.token.as_deref())?;
        Ok(got.pop().flatten())
    }

    /// Fetches several results from one data server in one request; each
    /// entry is `None` where the worker does not hold that key.
    ///
    /// # Errors
    /// When the worker cannot be reached or answers wrongly.
    pub fn fetch_many(&self, address: &str, keys: &[Key]) -> Result<Vec<Option<Vec<u8>>>, ClientError> {
        fetch_blocking(address, keys, self.token.as_deref())
    }

    /// Stores encoded values (postcard) on the worker at `address`, under
    /// these keys: a client's scatter.
    ///
    /// # Errors
    /// When the worker cannot be reached or does not confirm every value.
    pub fn put(&self, address: &str, values: &[(Key, Vec<u8>)]) -> Result<(), ClientError> {
        put_blocking(address, values, self.token.as_deref())
    }

    /// Runs a registered function on the worker at `address`, outside its
    /// task queue (a client's `run`): `Ok(Ok(bytes))` is the encoded result,
    /// `Ok(Err(message))` the function's failure or panic there.
    ///
    /// # Errors
    /// When the worker cannot be reached or answers wrongly.
    pub fn run_on(
        &self,
        address: &str,
        func: &str,
        args: Vec<Vec<u8>>,
    ) -> Result<Result<Vec<u8>, String>, ClientError> {
        run_blocking(address, func, args, self.token.as_deref())
    }
}

/// Writes what the client queues: everything queued goes out in one write,
/// with each release marker replaced by the keys released since.
async fn write_out(
    mut write: OwnedWriteHalf,
    mut out: mpsc::UnboundedReceiver<Outgoing>,
    releases: Arc<Mutex<Releases>>,
) {
    while let Some(first) = out.recv().await {
        let mut batch = Vec::new();
        let mut next = Some(first);
        while let Some(item) = next {
            match item {
                // The first frame becomes the batch rather than being copied.
                Outgoing::Frame(frame) if batch.is_empty() => batch = frame,
                Outgoing::Frame(frame) => batch.extend_from_slice(&frame),
                Outgoing::Releases(generation) => {
                    let mut releases = lock(&releases);
                    // An older generation went out with a later message.
                    if releases.generation == generation
                        && let Some(frame) = releases.take_frame()
                    {
                        batch.extend_from_slice(&frame);
                    }
                }
            }
            next = out.try_recv().ok();
        }
        if write.write_all(&batch).await.is_err() {
            return;
        }
    }
}

async fn serve(
    address: SocketAddr,
    token: Option<String>,
    on_messages: OnMessages,
    releases: Arc<Mutex<Releases>>,
    ready: std::sync::mpsc::Sender<Result<mpsc::UnboundedSender<Outgoing>, ClientError>>,
    mut stop: oneshot::Receiver<()>,
) {
    let what = format!("connecting to the scheduler at {address}");
    let stream = match AsyncTcpStream::connect(address).await {
        Ok(s) => s,
        Err(source) => {
            let _ = ready.send(Err(ClientError::Unreachable { address, source }));
            return;
        }
    };
    let _ = stream.set_nodelay(true);
    let (read, write) = stream.into_split();
    let (out, out_rx) = mpsc::unbounded_channel();
    tokio::spawn(write_out(write, out_rx, releases));
    let mut hello = Vec::new();
    if let Err(e) = encode_message(&Hello::new(Role::Client, "client", token.as_deref()), &mut hello) {
        let _ = ready.send(Err(ClientError::Protocol { what, reason: e.to_string() }));
        return;
    }
    let _ = out.send(Outgoing::Frame(hello));
    let mut reader = FrameReader::new(read, shoal_proto::DEFAULT_MAX_FRAME);
    let welcome = async {
        let reply: HelloReply = decode_message(&reader.next_message().await?)?;
        check_reply(&reply)?;
        Ok::<(), crate::conn::Closed>(())
    };
    if let Err(e) = welcome.await {
        let _ = ready.send(Err(ClientError::Protocol { what, reason: e.to_string() }));
        return;
    }
    let _ = ready.send(Ok(out));
    loop {
        tokio::select! {
            _ = &mut stop => break,
            msg = reader.next_message() => {
                match msg.and_then(|body| Ok(decode_message::<Vec<FromScheduler>>(&body)?)) {
                    Ok(batch) => on_messages(Some(batch)),
                    Err(e) => {
                        tracing::warn!("the scheduler connection ended: {e}");
                        break;
                    }
                }
            }
        }
    }
    on_messages(None);
}

/// How long a fetch or a put waits for a worker to answer: data moves at
/// once, so a silent worker is a dead one.
const TRANSFER_TIMEOUT: Option<Duration> = Some(Duration::from_secs(60));

/// A blocking connection to a worker's data server, from a client thread.
struct DataConn {
    stream: TcpStream,
    decoder: FrameDecoder,
    buf: Vec<u8>,
    what: String,
}

/// Raw bodies at least this large are read past the decoder.
const DIRECT_BODY_BYTES: usize = 1 << 20;

impl DataConn {
    /// Connects and says hello; `what` names the operation in errors, and
    /// `timeout` bounds every wait for an answer (`None`: a `run` may take
    /// as long as the user's function does).
    fn open(
        address: &str,
        token: Option<&str>,
        what: String,
        timeout: Option<Duration>,
    ) -> Result<DataConn, ClientError> {
        let io = |source| ClientError::Io { what: what.clone(), source };
        let address: PeerAddress =
            address.parse().map_err(|e| io(std::io::Error::new(std::io::ErrorKind::InvalidInput, e)))?;
        let stream =
            TcpStream::connect(crate::resolve(&address).map_err(|e| io(std::io::Error::other(e)))?).map_err(io)?;
        stream.set_read_timeout(timeout).map_err(io)?;
        let _ = stream.set_nodelay(true);
        let mut conn = DataConn { stream, decoder: FrameDecoder::default(), buf: vec![0u8; 256 * 1024], what };
        let mut hello = Vec::new();
        encode_message(&Hello::new(Role::Peer, "client", token), &mut hello).map_err(|e| conn.proto(e.to_string()))?;
        conn.write(&hello)?;
        let reply: HelloReply = conn.message()?;
        check_reply(&reply).map_err(|e| conn.proto(e.to_string()))?;
        Ok(conn)
    }

    fn proto(&self, reason: String) -> ClientError {
        ClientError::Protocol { what: self.what.clone(), reason }
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        self.stream.write_all(bytes).map_err(|source| ClientError::Io { what: self.what.clone(), source })
    }

    fn frame(&mut self) -> Result<shoal_proto::Frame, ClientError> {
        loop {
            if let Some(frame) = self.decoder.next_frame().map_err(|e| self.proto(e.to_string()))? {
                return Ok(frame);
            }
            self.read_more()?;
        }
    }

    /// Reads what the connection has into the decoder.
    fn read_more(&mut self) -> Result<(), ClientError> {
        let n =
            self.stream.read(&mut self.buf).map_err(|source| ClientError::Io { what: self.what.clone(), source })?;
        if n == 0 {
            return Err(self.proto("the worker closed the connection".into()));
        }
        self.decoder.push(&self.buf[..n]);
        Ok(())
    }

    fn message<T: serde::de::DeserializeOwned>(&mut self) -> Result<T, ClientError> {
        let frame = self.frame()?;
        decode_message(&frame.body).map_err(|e| self.proto(e.to_string()))
    }

    /// The next frame's body, which must be raw bytes; a large one is read
    /// straight from the connection into its own vector (the decoder's
    /// buffer would grow by doubling and be copied out of again).
    fn raw(&mut self) -> Result<Vec<u8>, ClientError> {
        loop {
            if let Some((kind, len)) = self.decoder.next_header().map_err(|e| self.proto(e.to_string()))? {
                if kind != FrameKind::Raw {
                    return Err(self.proto("expected a value's bytes".into()));
                }
                if len >= DIRECT_BODY_BYTES {
                    // Zeroed memory this large is mapped lazily: its pages are
                    // used only as bytes arrive (the length is within the cap).
                    let mut body = vec![0; len];
                    let n = self.decoder.take_body_start(&mut body);
                    self.stream
                        .read_exact(&mut body[n..])
                        .map_err(|source| ClientError::Io { what: self.what.clone(), source })?;
                    return Ok(body);
                }
                if let Some(frame) = self.decoder.next_frame().map_err(|e| self.proto(e.to_string()))? {
                    return Ok(frame.body);
                }
            }
            self.read_more()?;
        }
    }

    fn request(&mut self, request: &PeerRequest, raw: &[Vec<u8>]) -> Result<PeerReply, ClientError> {
        let mut out = Vec::new();
        encode_message(request, &mut out).map_err(|e| self.proto(e.to_string()))?;
        for body in raw {
            encode_raw(body, &mut out).map_err(|e| self.proto(e.to_string()))?;
        }
        self.write(&out)?;
        self.message()
    }
}

/// A blocking connection to a worker's data server for actor calls: calls
/// written together, answered in order.
pub struct ActorConnection {
    conn: DataConn,
}

/// One actor call: the actor (its creating task's key), the method, the
/// encoded arguments.
pub type ActorCallMsg = (Key, String, Vec<Vec<u8>>);

impl ActorConnection {
    /// Connects to the data server at `address` and says hello.
    ///
    /// # Errors
    /// When the worker cannot be reached or refuses.
    pub fn open(address: &str, token: Option<&str>) -> Result<ActorConnection, ClientError> {
        // No timeout on answers: a method takes as long as it takes.
        Ok(ActorConnection { conn: DataConn::open(address, token, format!("calling an actor on {address}"), None)? })
    }

    /// Sends every call at once, then reads their answers, in order: the
    /// method's encoded result or its failure's message each.
    ///
    /// # Errors
    /// When the connection breaks or the worker answers wrongly: what was
    /// not answered may or may not have run.
    pub fn call_many(&mut self, calls: Vec<ActorCallMsg>) -> Result<Vec<Result<Vec<u8>, String>>, ClientError> {
        let mut out = Vec::new();
        let n = calls.len();
        for (actor, method, args) in calls {
            encode_message(&PeerRequest::ActorCall { actor, method, args }, &mut out)
                .map_err(|e| self.conn.proto(e.to_string()))?;
        }
        self.conn.write(&out)?;
        (0..n)
            .map(|_| match self.conn.message()? {
                PeerReply::Called(result) => Ok(result),
                other => Err(self.conn.proto(format!("the worker answered an actor call with {other:?}"))),
            })
            .collect()
    }
}

/// The cluster token this process's worker joined with: actor handles that
/// tasks are given call their actors with it.
static PROCESS_TOKEN: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();

/// Records the token of this process's worker (the first one set stays).
pub(crate) fn set_process_token(token: Option<&str>) {
    let _ = PROCESS_TOKEN.set(token.map(str::to_string));
}

/// The cluster token of this process's worker, if it is a worker that has
/// one.
pub fn process_token() -> Option<String> {
    PROCESS_TOKEN.get().cloned().flatten()
}

/// Fetches results from a data server with blocking I/O, in the order asked.
fn fetch_blocking(address: &str, wanted: &[Key], token: Option<&str>) -> Result<Vec<Option<Vec<u8>>>, ClientError> {
    let mut conn =
        DataConn::open(address, token, format!("fetching {} results from {address}", wanted.len()), TRANSFER_TIMEOUT)?;
    let PeerReply::Data { keys, .. } = conn.request(&PeerRequest::Get(wanted.to_vec()), &[])? else {
        return Err(conn.proto("the worker answered a request for data with something else".into()));
    };
    // The reply lists the keys held in the order asked (the missing ones
    // left out), so one walk over both pairs them without hashing.
    let mut bodies = Vec::with_capacity(wanted.len());
    let mut held = keys.into_iter().peekable();
    for k in wanted {
        if held.next_if(|h| h == k).is_some() {
            bodies.push(Some(conn.raw()?));
        } else {
            bodies.push(None);
        }
    }
    if held.next().is_some() {
        return Err(conn.proto("the worker sent results that were not asked for, or out of order".into()));
    }
    Ok(bodies)
}

/// Stores encoded values on a worker's data server (a client's scatter).
fn put_blocking(address: &str, values: &[(Key, Vec<u8>)], token: Option<&str>) -> Result<(), ClientError> {
    let mut conn =
        DataConn::open(address, token, format!("putting {} values on {address}", values.len()), TRANSFER_TIMEOUT)?;
    let keys: Vec<Key> = values.iter().map(|(k, _)| k.clone()).collect();
    let bodies: Vec<Vec<u8>> = values.iter().map(|(_, b)| b.clone()).collect();
    match conn.request(&PeerRequest::Put(keys.clone()), &bodies)? {
        PeerReply::Stored(stored) if stored == keys => Ok(()),
        other => Err(conn.proto(format!("the worker did not confirm the values: {other:?}"))),
    }
}

/// Runs a registered function on a worker, outside its task queue.
fn run_blocking(
    address: &str,
    func: &str,
    args: Vec<Vec<u8>>,
    token: Option<&str>,
) -> Result<Result<Vec<u8>, String>, ClientError> {
    let mut conn = DataConn::open(address, token, format!("running {func} on {address}"), None)?;
    match conn.request(&PeerRequest::Run { func: func.to_string(), args }, &[])? {
        PeerReply::Ran(Ok(())) => Ok(Ok(conn.raw()?)),
        PeerReply::Ran(Err(message)) => Ok(Err(message)),
        other => Err(conn.proto(format!("expected the result of a run, got {other:?}"))),
    }
}
