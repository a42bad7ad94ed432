//! A worker's data server — peers and clients fetch results from it,
//! clients put scattered data on it and run functions on it — and fetching
//! inputs from other workers' data servers.

use shoal_graph::Key;
use shoal_graph::remote::require;
use shoal_proto::{
    DepLocation, FrameKind, Hello, HelloReply, PeerReply, PeerRequest, Role, check_hello, check_reply, decode_hello,
    decode_message, encode_message, encode_raw,
};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use super::store::{Held, PeerConn, Shared, Stored, lock};
use crate::conn::{Closed, FrameReader};

/// Fetches a result from one of the workers that hold it.
pub(crate) async fn fetch(
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

/// The encoded result of `key`: from this worker's store, or fetched.
pub(crate) async fn element_bytes(
    key: &Key,
    state: &Shared,
    deps: &[DepLocation],
    token: Option<&str>,
    max_frame: usize,
) -> Option<Vec<u8>> {
    let local = lock(state).get(key).map(|s| s.encoded().map(|b| b.into_owned()));
    match local {
        Some(Ok(bytes)) => Some(bytes),
        Some(Err(e)) => {
            tracing::error!("cannot encode {key}: {e}");
            None
        }
        None => fetch(key, deps, state, token, max_frame).await,
    }
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
    let PeerReply::Data { keys, .. } = decode_message(&conn.reader.next_message().await?)? else {
        return Err(Closed::Unexpected("a reply other than data to a request for data"));
    };
    if !keys.contains(key) {
        return Ok(None);
    }
    let frame = conn.reader.next_frame().await?;
    if frame.kind != FrameKind::Raw {
        return Err(Closed::UnexpectedRaw);
    }
    Ok(Some(frame.body))
}

pub(crate) async fn serve_data(listener: TcpListener, state: Shared, token: Option<String>, max_frame: usize) {
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
        let mut out = Vec::new();
        match decode_message(&reader.next_message().await?)? {
            PeerRequest::Get(wanted) => get(&state, wanted, &mut out)?,
            PeerRequest::Put(keys) => {
                // Every value arrives before any is kept: a connection cut
                // half-way stores nothing.
                let mut values = Vec::with_capacity(keys.len());
                for _ in &keys {
                    let frame = reader.next_frame().await?;
                    if frame.kind != FrameKind::Raw {
                        return Err(Closed::Unexpected("a message where a scattered value was due"));
                    }
                    values.push(frame.body);
                }
                let mut st = lock(&state);
                for (k, bytes) in keys.iter().zip(values) {
                    let nbytes = bytes.len() as u64;
                    st.keep(k.clone(), Stored::new(Held::Bytes(bytes), nbytes));
                }
                drop(st);
                encode_message(&PeerReply::Stored(keys), &mut out)?;
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

/// Encodes the results asked for that this worker holds.
fn get(state: &Shared, wanted: Vec<Key>, out: &mut Vec<u8>) -> Result<(), Closed> {
    let mut keys = Vec::new();
    let mut missing = Vec::new();
    let mut bodies = Vec::new();
    {
        let mut st = lock(state);
        for k in wanted {
            match st.get(&k).map(Stored::encoded) {
                Some(Ok(bytes)) => {
                    keys.push(k);
                    bodies.push(bytes.into_owned());
                }
                Some(Err(e)) => {
                    tracing::error!("cannot encode {k}: {e}");
                    missing.push(k);
                }
                None => missing.push(k),
            }
        }
    }
    encode_message(&PeerReply::Data { keys, missing }, out)?;
    for body in &bodies {
        encode_raw(body, out)?;
    }
    Ok(())
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
