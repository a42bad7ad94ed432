//! A worker's data: the results it keeps, how many bytes they take, and the
//! tasks it has on its pool.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use shoal_graph::remote::{RemoteError, RemoteFunc};
use shoal_graph::{Key, Value};
use shoal_local::Handle;

use crate::conn::FrameReader;

/// A result kept by this worker.
pub(crate) enum Held {
    /// Made here: kept decoded, with the function that made it (whose codec
    /// encodes it only when it must leave).
    Value { value: Value, producer: &'static RemoteFunc },
    /// Put here by a client (scatter): kept as the bytes that came, decoded
    /// by each consumer's own parameter codec, sent on as they are.
    Bytes(Vec<u8>),
}

pub(crate) struct Stored {
    pub(crate) held: Held,
    /// Its encoded size: what memory limits and the scheduler count.
    pub(crate) nbytes: u64,
}

impl Stored {
    /// The value as argument `position` of `consumer`.
    pub(crate) fn value_for(&self, consumer: &RemoteFunc, position: usize) -> Result<Value, RemoteError> {
        match &self.held {
            Held::Value { value, .. } => Ok(value.clone()),
            Held::Bytes(bytes) => consumer.decode_arg(position, bytes),
        }
    }

    /// The value's bytes, to send to a peer or a client.
    pub(crate) fn encoded(&self) -> Result<std::borrow::Cow<'_, [u8]>, RemoteError> {
        match &self.held {
            Held::Value { value, producer } => producer.encode_result(value).map(std::borrow::Cow::Owned),
            Held::Bytes(bytes) => Ok(std::borrow::Cow::Borrowed(bytes)),
        }
    }
}

/// An open connection to a peer's data server, kept for the next fetch.
pub(crate) struct PeerConn {
    pub(crate) reader: FrameReader,
    pub(crate) write: tokio::net::tcp::OwnedWriteHalf,
}

#[derive(Default)]
pub(crate) struct State {
    store: HashMap<Key, Stored>,
    /// Sum of the stored results' sizes.
    held_bytes: u64,
    /// Idle connections to other workers' data servers, by address: a fetch
    /// reuses one instead of paying a connect and a handshake.
    pub(crate) peers: HashMap<String, Vec<PeerConn>>,
    /// Tasks on the pool: their handle, their function, when they were queued.
    pub(crate) running: HashMap<Key, (Handle, &'static RemoteFunc, std::time::Instant)>,
    /// Tasks given to this worker while it was paused, not started yet.
    pub(crate) parked: HashSet<Key>,
}

impl State {
    pub(crate) fn get(&self, key: &Key) -> Option<&Stored> {
        self.store.get(key)
    }

    pub(crate) fn keep(&mut self, key: Key, stored: Stored) {
        self.held_bytes += stored.nbytes;
        if let Some(old) = self.store.insert(key, stored) {
            self.held_bytes = self.held_bytes.saturating_sub(old.nbytes);
        }
    }

    pub(crate) fn remove(&mut self, key: &Key) {
        if let Some(old) = self.store.remove(key) {
            self.held_bytes = self.held_bytes.saturating_sub(old.nbytes);
        }
    }

    pub(crate) fn held_bytes(&self) -> u64 {
        self.held_bytes
    }

    /// Drops everything: results, queued and parked tasks, peer connections
    /// (a restarted cluster's peers are new processes).
    pub(crate) fn reset(&mut self) {
        for (_, (handle, ..)) in self.running.drain() {
            handle.cancel();
        }
        self.store.clear();
        self.held_bytes = 0;
        self.parked.clear();
        self.peers.clear();
    }
}

pub(crate) type Shared = Arc<Mutex<State>>;

pub(crate) fn lock(state: &Shared) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
