//! A worker's data server — peers and clients fetch results from it,
//! clients put scattered data on it and run functions on it — and fetching
//! inputs from other workers' data servers.

use shoal_graph::remote::{RemoteError, RemoteFunc, require};
use shoal_graph::{Key, Value};
use std::collections::HashMap;
use std::net::IpAddr;

use bytes::Bytes;
use shoal_proto::{
    DepLocation, Hello, HelloReply, Loan, PeerAddress, PeerReply, PeerRequest, ProtoError, Role, check_hello,
    check_reply, decode_hello, decode_message, encode_message, encode_raw, raw_header,
};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use shoal_worker::{Payload, SameHostTransfer, inline_input};
use std::sync::Arc;

use super::cma::{self, Pinned};
use super::shm::{self, shm_dir};
use super::{Ctx, lock};
use crate::conn::{Closed, FrameReader};

/// Results smaller than this are copied into the reply buffer so that many
/// go out in one write; larger ones are written from their own buffers.
const COPY_BELOW_BYTES: usize = 64 << 10;

/// Results at least this large are read from the holder's memory (or go
/// through shared memory) between workers on one host; smaller ones over
/// the (pooled) TCP connection.
const SHARE_MIN_BYTES: u64 = 1 << 20;

/// An open connection to a peer's data server, kept for the next fetch.
pub(super) struct PeerConn {
    reader: FrameReader,
    write: tokio::net::tcp::OwnedWriteHalf,
}

/// Fetches a result from one of the workers that hold it (or takes it from
/// the compute message, if it came inline). From a holder on this host a
/// large result is read from its memory, else through a shared-memory
/// file; everything else comes over TCP.
pub(super) async fn fetch(dep: &DepLocation, ctx: &Ctx) -> Option<Bytes> {
    let key = &dep.key;
    if let Some(data) = inline_input(key, std::slice::from_ref(dep)) {
        // The scheduler sent it along: no round trip.
        return Some(Bytes::copy_from_slice(data));
    }
    let (token, max_frame) = (ctx.config.token.as_deref(), ctx.config.max_frame);
    // A loan or a file costs a round trip and several system calls: worth it
    // for bulk results only, never for the many small ones.
    let large = dep.nbytes >= SHARE_MIN_BYTES;
    let shm = (large && lock(&ctx.shared).shm.is_some()).then(shm_dir).flatten();
    let read = ctx.config.same_host_transfer == SameHostTransfer::Read;
    let own = ctx.data_address.ip();
    for holder in &dep.holders {
        let idle = lock(&ctx.shared).peers.get_mut(holder).and_then(Vec::pop);
        let conn = match idle {
            Some(conn) => Ok(conn),
            None => connect_peer(holder, token, max_frame).await,
        };
        let result = match conn {
            Ok(mut conn) => {
                let local = large && same_host(holder, own);
                let mut result = Ok(None);
                if local && read && !cma::denied() {
                    result = request_lent(&mut conn, key, max_frame).await;
                }
                // Not lent (or not readable): a shared file, and else the
                // same connection still serves it over TCP.
                if let (Ok(None), Some(dir)) = (&result, shm.as_ref().filter(|_| local)) {
                    result = request_shared(&mut conn, key, dir).await;
                }
                if let Ok(None) = result {
                    result = request(&mut conn, key).await;
                }
                if result.is_ok() {
                    lock(&ctx.shared).peers.entry(holder.clone()).or_default().push(conn);
                }
                result
            }
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

/// Whether a data server's address is on this host: a loopback address, or
/// the address this worker's own data server listens on (see the `shm`
/// module for why only these count).
fn same_host(address: &str, own: IpAddr) -> bool {
    address.parse::<PeerAddress>().ok().and_then(|a| a.socket_addr()).is_some_and(|a| is_this_host(a.ip(), own))
}

/// Whether `ip` is this host's, as far as a connection can tell: loopback,
/// or the address this worker serves on (a TCP peer cannot claim a source
/// address it does not have).
pub(crate) fn is_this_host(ip: IpAddr, own: IpAddr) -> bool {
    ip.is_loopback() || ip == own
}

/// Connects to a data server and says hello.
async fn connect_peer(address: &str, token: Option<&str>, max_frame: usize) -> Result<PeerConn, Closed> {
    let address: PeerAddress =
        address.parse().map_err(|e| Closed::Io(std::io::Error::new(std::io::ErrorKind::InvalidInput, e)))?;
    let stream = TcpStream::connect((address.host(), address.port())).await?;
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

/// Asks a data server on this host to lend one result, and reads it from
/// the server's memory; `Ok(None)` if it does not, or the read fails (then
/// a shared file or TCP is tried).
async fn request_lent(conn: &mut PeerConn, key: &Key, max_frame: usize) -> Result<Option<Bytes>, Closed> {
    let mut request = Vec::new();
    encode_message(&PeerRequest::Lend(vec![key.clone()]), &mut request)?;
    conn.write.write_all(&request).await?;
    let PeerReply::Lent { pid, identity_addr, identity, loans, .. } =
        decode_message(&conn.reader.next_message().await?)?
    else {
        return Err(Closed::Unexpected("a reply other than loans to a request to lend"));
    };
    let Some(Loan { id, head, addr, len, .. }) = loans.into_iter().find(|l| l.key == *key) else { return Ok(None) };
    // Copying hundreds of megabytes is not for the loop.
    let read = tokio::task::spawn_blocking(move || {
        cma::read(&cma::Offer { pid, identity_addr, identity, head: &head, addr, len }, max_frame)
    })
    .await;
    // Returned whatever happened: the holder may let the value go now.
    request.clear();
    encode_message(&PeerRequest::Return(vec![id]), &mut request)?;
    conn.write.write_all(&request).await?;
    Ok(blocking_outcome(key, "read it from its holder's memory", read))
}

/// What a blocking read of a result gave: its bytes, or `None` (logged)
/// when the next way to fetch it should be tried.
fn blocking_outcome<E: std::fmt::Display>(
    key: &Key,
    how: &str,
    outcome: Result<Result<Bytes, E>, tokio::task::JoinError>,
) -> Option<Bytes> {
    match outcome {
        Ok(Ok(bytes)) => Some(bytes),
        Ok(Err(e)) => {
            tracing::debug!("{key}: cannot {how} ({e}); trying the next way");
            None
        }
        Err(e) => {
            tracing::error!("{key}: trying to {how} failed: {e}");
            None
        }
    }
}

/// Asks a data server on this host to share one result through shared
/// memory, and maps it; `Ok(None)` if it does not, or the file cannot be
/// mapped (then TCP is tried).
async fn request_shared(conn: &mut PeerConn, key: &Key, dir: &std::path::Path) -> Result<Option<Bytes>, Closed> {
    let mut request = Vec::new();
    encode_message(&PeerRequest::Share(vec![key.clone()]), &mut request)?;
    conn.write.write_all(&request).await?;
    let PeerReply::Shared { files, .. } = decode_message(&conn.reader.next_message().await?)? else {
        return Err(Closed::Unexpected("a reply other than shared files to a request to share"));
    };
    let Some((_, name)) = files.into_iter().find(|(k, _)| k == key) else { return Ok(None) };
    let dir = dir.to_path_buf();
    // Mapping (and faulting in) hundreds of megabytes is not for the loop.
    let mapped = tokio::task::spawn_blocking(move || shm::map(&dir, &name)).await;
    Ok(blocking_outcome(key, "map its shared file", mapped))
}

/// Asks a data server for one result; `Ok(None)` if it does not hold it.
async fn request(conn: &mut PeerConn, key: &Key) -> Result<Option<Bytes>, Closed> {
    let mut request = Vec::new();
    encode_message(&PeerRequest::Get(vec![key.clone()]), &mut request)?;
    conn.write.write_all(&request).await?;
    let PeerReply::Data { keys, .. } = decode_message(&conn.reader.next_message().await?)? else {
        return Err(Closed::Unexpected("a reply other than data to a request for data"));
    };
    if !keys.contains(key) {
        return Ok(None);
    }
    Ok(Some(conn.reader.next_raw().await?))
}

pub(super) async fn serve_data(listener: TcpListener, ctx: Arc<Ctx>) {
    let own = listener.local_addr().map_or(IpAddr::from([127, 0, 0, 1]), |a| a.ip());
    loop {
        let Ok((stream, peer)) = listener.accept().await else { continue };
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let local = is_this_host(peer.ip(), own);
            if let Err(e) = serve_peer(stream, &ctx, local).await
                && !matches!(e, Closed::Eof)
            {
                tracing::warn!("closing the data connection from {peer}: {e}");
            }
        });
    }
}

/// Serves one connection; `local` says the peer is on this host (it may be
/// given results through shared memory).
async fn serve_peer(stream: TcpStream, ctx: &Arc<Ctx>, local: bool) -> Result<(), Closed> {
    let (token, max_frame) = (ctx.config.token.as_deref(), ctx.config.max_frame);
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
    // What this connection's fetcher is reading from this process's memory:
    // kept until returned, or until the connection (and so the fetcher's
    // interest) ends.
    let mut loans: HashMap<u64, Pinned> = HashMap::new();
    // A request read ahead while gathering actor calls, for the next turn.
    let mut held: Option<PeerRequest> = None;
    let mut next_loan = 0;
    loop {
        let mut out = Vec::new();
        let request = match held.take() {
            Some(request) => request,
            None => decode_message(&reader.next_message().await?)?,
        };
        match request {
            PeerRequest::Get(wanted) => {
                // The message, then each result as a raw frame. Small ones
                // are gathered into one write (a gather of thousands must
                // not cost a system call each); large ones are written
                // straight from their buffers, never copied.
                let bodies = get(ctx, wanted, &mut out).await?;
                for body in &bodies {
                    let (head, body) = body.parts()?;
                    let total = head.len() + body.len();
                    let len = u32::try_from(total)
                        .map_err(|_| ProtoError::FrameTooLarge { len: total, max: u32::MAX as usize })?;
                    out.extend_from_slice(&raw_header(len));
                    out.extend_from_slice(&head);
                    if body.len() < COPY_BELOW_BYTES {
                        out.extend_from_slice(body);
                    } else {
                        write.write_all(&out).await?;
                        out.clear();
                        write.write_all(body).await?;
                    }
                }
            }
            PeerRequest::Share(wanted) => {
                let reply = share(ctx, wanted, local).await;
                encode_message(&reply, &mut out)?;
            }
            PeerRequest::Lend(wanted) => {
                let reply = lend(ctx, wanted, local, &mut loans, &mut next_loan);
                encode_message(&reply, &mut out)?;
            }
            PeerRequest::Return(ids) => {
                for id in ids {
                    loans.remove(&id);
                }
            }
            PeerRequest::Put(keys) => {
                // Every value arrives before any is kept: a connection cut
                // half-way stores nothing.
                let mut values = Vec::with_capacity(keys.len());
                for _ in &keys {
                    values.push(reader.next_raw().await?);
                }
                ctx.event(|worker, now, comm| worker.on_put(keys.iter().cloned().zip(values), now, comm));
                encode_message(&PeerReply::Stored(keys), &mut out)?;
            }
            PeerRequest::ActorCall { actor, method, args } => {
                // Calls of this actor that came with it run together, in
                // order, on one thread: one hand-over for the lot.
                let mut calls = vec![(method, args)];
                while let Some(body) = reader.buffered_message()? {
                    match decode_message(&body)? {
                        PeerRequest::ActorCall { actor: a, method, args } if a == actor => calls.push((method, args)),
                        other => {
                            held = Some(other);
                            break;
                        }
                    }
                }
                let cell = lock(&ctx.shared).worker.actor(&actor);
                let replies: Vec<Result<Vec<u8>, String>> = match cell {
                    // A method may take long: not on the loop, which serves
                    // everyone else.
                    Some(cell) => {
                        let n = calls.len();
                        tokio::task::spawn_blocking(move || {
                            calls.iter().map(|(method, args)| cell.call(method, args)).collect()
                        })
                        .await
                        .unwrap_or_else(|e| vec![Err(format!("the call's thread failed: {e}")); n])
                    }
                    None => {
                        let missing = format!("worker {} holds no actor {actor}", ctx.config.name);
                        vec![Err(missing); calls.len()]
                    }
                };
                for reply in replies {
                    encode_message(&PeerReply::Called(reply), &mut out)?;
                }
            }
            PeerRequest::Run { func, args } => match run_here(&func, args).await {
                Ok(bytes) => {
                    encode_message(&PeerReply::Ran(Ok(())), &mut out)?;
                    encode_raw(&bytes, &mut out)?;
                }
                Err(message) => encode_message(&PeerReply::Ran(Err(message)), &mut out)?,
            },
        }
        write.write_all(&out).await?;
    }
}

/// A result on its way to a peer over TCP.
enum Outgoing {
    /// Its encoding.
    Encoded(Bytes),
    /// A value whose type is its own encoding (a `Blob`, a vector of
    /// numbers: see [`RemoteFunc::borrow_result`]): written from the
    /// value's memory, so a large result is not copied before the kernel
    /// copies it.
    InPlace { value: Value, producer: &'static RemoteFunc },
}

impl Outgoing {
    fn new(source: Payload) -> Result<Outgoing, RemoteError> {
        match source {
            Payload::Value { value, producer } if producer.borrow_result(&value).is_some() => {
                Ok(Outgoing::InPlace { value, producer })
            }
            other => Ok(Outgoing::Encoded(other.encode()?)),
        }
    }

    /// The encoding's head (owned, short) and body.
    fn parts(&self) -> Result<(Vec<u8>, &[u8]), Closed> {
        match self {
            Outgoing::Encoded(bytes) => Ok((Vec::new(), bytes)),
            Outgoing::InPlace { value, producer } => producer
                .borrow_result(value)
                .ok_or(Closed::Unexpected("a result that could be written in place no longer can")),
        }
    }
}

/// Writes the reply to a [`PeerRequest::Get`] into `out` and returns the
/// results that follow it.
async fn get(ctx: &Ctx, wanted: Vec<Key>, out: &mut Vec<u8>) -> Result<Vec<Outgoing>, Closed> {
    let mut keys = Vec::new();
    let mut missing = Vec::new();
    let mut sources = Vec::new();
    {
        let mut shared = lock(&ctx.shared);
        for k in wanted {
            match shared.worker.payload(&k) {
                Some(Ok(source)) => {
                    keys.push(k);
                    sources.push(source);
                }
                Some(Err(e)) => {
                    tracing::error!("cannot read {k}: {e}");
                    missing.push(k);
                }
                None => missing.push(k),
            }
        }
    }
    // Encoded outside the lock: a large result takes a while.
    let mut bodies = Vec::with_capacity(sources.len());
    for (k, source) in keys.iter().zip(sources) {
        match Outgoing::new(source) {
            Ok(body) => bodies.push(body),
            Err(e) => {
                // The reply is not written yet: the key just goes missing.
                tracing::error!("cannot encode {k}: {e}");
                missing.push(k.clone());
            }
        }
    }
    keys.retain(|k| !missing.contains(k));
    encode_message(&PeerReply::Data { keys, missing }, out)?;
    Ok(bodies)
}

/// The reply to a [`PeerRequest::Lend`]: each result held is pinned in
/// `loans` under a fresh id.
fn lend(ctx: &Ctx, wanted: Vec<Key>, local: bool, loans: &mut HashMap<u64, Pinned>, next_loan: &mut u64) -> PeerReply {
    let identity = cma::identity();
    let mut lent = Vec::new();
    let mut missing = Vec::new();
    for key in wanted {
        // A peer on another host cannot read this process's memory.
        let source = if local && ctx.config.same_host_transfer == SameHostTransfer::Read {
            lock(&ctx.shared).worker.payload(&key)
        } else {
            None
        };
        match source.map(|s| s.map_err(|e| e.to_string()).and_then(|s| cma::lendable(s).map_err(|e| e.to_string()))) {
            Some(Ok(lendable)) => {
                let id = *next_loan;
                *next_loan += 1;
                loans.insert(id, lendable.pinned);
                lent.push(Loan { key, id, head: lendable.head, addr: lendable.addr, len: lendable.len });
            }
            Some(Err(e)) => {
                tracing::error!("cannot lend {key}: {e}");
                missing.push(key);
            }
            None => missing.push(key),
        }
    }
    PeerReply::Lent {
        pid: std::process::id(),
        identity_addr: identity.as_ptr() as u64,
        identity: *identity,
        loans: lent,
        missing,
    }
}

/// The reply to a [`PeerRequest::Share`]: each result held is written to a
/// shared-memory file once (later requests reuse it).
async fn share(ctx: &Ctx, wanted: Vec<Key>, local: bool) -> PeerReply {
    let mut files = Vec::new();
    let mut missing = Vec::new();
    if !local {
        // A peer on another host cannot open this host's files.
        return PeerReply::Shared { files, missing: wanted };
    }
    for key in wanted {
        let todo = {
            let mut shared = lock(&ctx.shared);
            let source = shared.worker.payload(&key);
            match (&mut shared.shm, source) {
                (Some(shm), Some(Ok(source))) => match shm.get(&key) {
                    Some(name) => Ok(name.to_string()),
                    None => Err((source, shm.reserve())),
                },
                _ => {
                    missing.push(key);
                    continue;
                }
            }
        };
        let name = match todo {
            Ok(name) => name,
            Err((source, (name, path))) => {
                match tokio::task::spawn_blocking(move || shm::write(&path, source)).await {
                    Ok(Ok(())) => {}
                    failed => {
                        tracing::warn!("cannot share {key} through shared memory: {failed:?}");
                        missing.push(key);
                        continue;
                    }
                }
                let mut shared = lock(&ctx.shared);
                let held = shared.worker.holds(&key);
                match &mut shared.shm {
                    Some(shm) if held => shm.record(key.clone(), name),
                    Some(shm) => {
                        // Released while it was written.
                        shm.discard(&name);
                        missing.push(key);
                        continue;
                    }
                    None => {
                        missing.push(key);
                        continue;
                    }
                }
            }
        };
        files.push((key, name));
    }
    PeerReply::Shared { files, missing }
}

/// Runs a registered function on its own thread (the worker's loop and its
/// task slots stay free) and encodes its result; a failure or panic comes
/// back as its message.
async fn run_here(func: &str, args: Vec<Vec<u8>>) -> Result<Vec<u8>, String> {
    let remote = require(func).map_err(|e| e.to_string())?;
    if args.len() != remote.arity() {
        return Err(format!("`{func}` takes {} arguments, {} were given", remote.arity(), args.len()));
    }
    let values = args
        .iter()
        .enumerate()
        .map(|(i, a)| remote.decode_arg(i, a))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let called = tokio::task::spawn_blocking(move || {
        remote
            .func()
            .call(values)
            .and_then(|v| remote.encode_result(&v).map_err(|e| shoal_graph::TaskError::Failed(e.to_string())))
    })
    .await;
    match called {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(e)) => Err(e.to_string()),
        Err(join) => Err(match join.try_into_panic() {
            Ok(payload) => payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .map_or_else(|| "it panicked".to_string(), |m| format!("it panicked: {m}")),
            Err(e) => e.to_string(),
        }),
    }
}
