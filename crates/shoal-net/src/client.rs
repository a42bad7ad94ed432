//! A client's connection to a scheduler, and fetching results from workers.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use shoal_graph::Key;
use shoal_proto::{
    FrameDecoder, FrameKind, FromScheduler, Hello, HelloReply, PeerReply, PeerRequest, Role, ToScheduler, check_reply,
    decode_message, encode_message,
};
use tokio::net::TcpStream as AsyncTcpStream;
use tokio::sync::{mpsc, oneshot};

use crate::conn::{Background, FrameReader, writer};

/// Called with every batch of messages from the scheduler, then once with
/// `None` when the connection ends.
pub type OnMessages = Arc<dyn Fn(Option<Vec<FromScheduler>>) + Send + Sync>;

/// Why a client could not connect or fetch.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
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
    out: mpsc::UnboundedSender<Vec<u8>>,
    token: Option<String>,
    _service: Background,
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
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<mpsc::UnboundedSender<Vec<u8>>, ClientError>>();
        let token_owned = token.map(str::to_string);
        let service = Background::spawn("shoal-client".into(), move |stop| {
            serve(address, token_owned, on_messages, ready_tx, stop)
        })
        .map_err(|source| ClientError::Io { what: "cannot start the client thread".into(), source })?;
        let out = ready_rx.recv().map_err(|_| ClientError::Protocol {
            what: format!("connecting to {address}"),
            reason: "the connection thread ended".into(),
        })??;
        Ok(ClientConnection { out, token: token.map(str::to_string), _service: service })
    }

    /// Sends a message to the scheduler.
    pub fn send(&self, msg: &ToScheduler) {
        let mut frame = Vec::new();
        if encode_message(msg, &mut frame).is_ok() {
            let _ = self.out.send(frame);
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
}

async fn serve(
    address: SocketAddr,
    token: Option<String>,
    on_messages: OnMessages,
    ready: std::sync::mpsc::Sender<Result<mpsc::UnboundedSender<Vec<u8>>, ClientError>>,
    mut stop: oneshot::Receiver<()>,
) {
    let what = format!("connecting to the scheduler at {address}");
    let stream = match AsyncTcpStream::connect(address).await {
        Ok(s) => s,
        Err(source) => {
            let _ = ready.send(Err(ClientError::Io { what, source }));
            return;
        }
    };
    let _ = stream.set_nodelay(true);
    let (read, write) = stream.into_split();
    let (out, out_rx) = mpsc::unbounded_channel();
    tokio::spawn(writer(write, out_rx));
    let mut hello = Vec::new();
    if let Err(e) = encode_message(&Hello::new(Role::Client, "client", token.as_deref()), &mut hello) {
        let _ = ready.send(Err(ClientError::Protocol { what, reason: e.to_string() }));
        return;
    }
    let _ = out.send(hello);
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

/// Fetches results from a data server with blocking I/O, in the order asked.
fn fetch_blocking(address: &str, wanted: &[Key], token: Option<&str>) -> Result<Vec<Option<Vec<u8>>>, ClientError> {
    let what = || format!("fetching {} results from {address}", wanted.len());
    let io = |source| ClientError::Io { what: what(), source };
    let proto = |reason: String| ClientError::Protocol { what: what(), reason };
    let mut stream = TcpStream::connect(address.trim_start_matches("tcp://")).map_err(io)?;
    stream.set_read_timeout(Some(Duration::from_secs(60))).map_err(io)?;
    let _ = stream.set_nodelay(true);
    let mut request = Vec::new();
    encode_message(&Hello::new(Role::Peer, "client", token), &mut request).map_err(|e| proto(e.to_string()))?;
    encode_message(&PeerRequest::Get(wanted.to_vec()), &mut request).map_err(|e| proto(e.to_string()))?;
    stream.write_all(&request).map_err(io)?;
    let mut decoder = FrameDecoder::default();
    let mut buf = vec![0u8; 256 * 1024];
    let mut next = |decoder: &mut FrameDecoder| -> Result<shoal_proto::Frame, ClientError> {
        loop {
            if let Some(frame) = decoder.next_frame().map_err(|e| proto(e.to_string()))? {
                return Ok(frame);
            }
            let n = stream.read(&mut buf).map_err(io)?;
            if n == 0 {
                return Err(proto("the worker closed the connection".into()));
            }
            decoder.push(&buf[..n]);
        }
    };
    let reply: HelloReply = decode_message(&next(&mut decoder)?.body).map_err(|e| proto(e.to_string()))?;
    check_reply(&reply).map_err(|e| proto(e.to_string()))?;
    let PeerReply::Data { keys, .. } = decode_message(&next(&mut decoder)?.body).map_err(|e| proto(e.to_string()))?;
    let mut bodies: shoal_graph::KeyHashMap<Vec<u8>> = shoal_graph::KeyHashMap::default();
    for key in keys {
        let frame = next(&mut decoder)?;
        if frame.kind != FrameKind::Raw {
            return Err(proto("expected a result's bytes".into()));
        }
        bodies.insert(key, frame.body);
    }
    Ok(wanted.iter().map(|k| bodies.remove(k)).collect())
}
