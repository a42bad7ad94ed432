//! A worker's data: the results it keeps, how many bytes they take, the
//! ones it spilled to disk, and the tasks it has on its pool.
//!
//! Memory counts the results held in memory (their encoded size). Above the
//! spill target the least recently used results go to disk, encoded, and are
//! read from there when needed; above the pause threshold (higher) the
//! worker starts no new task until it holds less.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use shoal_graph::remote::{RemoteError, RemoteFunc};
use shoal_graph::{Key, KeyBuildHasher, KeyHashMap, Value};
use shoal_local::Handle;
use shoal_proto::TaskId;

use super::SameHostTransfer;
use super::shm::{ShmFiles, Source};
use crate::conn::FrameReader;

/// A result kept by this worker.
pub(crate) enum Held {
    /// Made here: kept decoded, with the function that made it (whose codec
    /// encodes it only when it must leave).
    Value { value: Value, producer: &'static RemoteFunc },
    /// Put here by a client (scatter): kept as the bytes that came, decoded
    /// by each consumer's own parameter codec, sent on as they are.
    Bytes(Bytes),
    /// Spilled: its encoded bytes are in this file, read (and decoded by the
    /// consumer's codec) when needed.
    Spilled(PathBuf),
}

pub(crate) struct Stored {
    pub(crate) held: Held,
    /// Its encoded size: what memory limits and the scheduler count.
    pub(crate) nbytes: u64,
    /// When it was last used (its place in the spill order).
    used: u64,
}

/// Why a stored value could not be had.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StoreError {
    #[error(transparent)]
    Codec(#[from] RemoteError),
    #[error("cannot read the spilled value back from {path}: {source}")]
    Disk { path: PathBuf, source: std::io::Error },
}

impl Stored {
    pub(crate) fn new(held: Held, nbytes: u64) -> Stored {
        Stored { held, nbytes, used: 0 }
    }

    fn in_memory(&self) -> bool {
        !matches!(self.held, Held::Spilled(_))
    }

    /// The value as argument `position` of `consumer`.
    pub(crate) fn value_for(&self, consumer: &RemoteFunc, position: usize) -> Result<Value, StoreError> {
        match &self.held {
            Held::Value { value, .. } => Ok(value.clone()),
            // Shared decoding: a `Blob` argument refers to the stored bytes.
            Held::Bytes(bytes) => Ok(consumer.decode_arg_shared(position, bytes)?),
            Held::Spilled(_) => Ok(consumer.decode_arg_shared(position, &self.encoded()?)?),
        }
    }

    /// The value's bytes, to send to a peer or a client: encoded once for a
    /// value made here, shared (not copied) for bytes kept as they came.
    pub(crate) fn encoded(&self) -> Result<Bytes, StoreError> {
        match &self.held {
            Held::Value { value, producer } => Ok(Bytes::from(producer.encode_result(value)?)),
            Held::Bytes(bytes) => Ok(bytes.clone()),
            Held::Spilled(path) => {
                std::fs::read(path).map(Bytes::from).map_err(|source| StoreError::Disk { path: path.clone(), source })
            }
        }
    }

    /// What a shared-memory file of this value is written from (outside
    /// the worker's lock: encoding a large value takes a while).
    pub(crate) fn share_source(&self) -> Result<Source, StoreError> {
        match &self.held {
            Held::Value { value, producer } => Ok(Source::Value { value: value.clone(), producer }),
            _ => Ok(Source::Bytes(self.encoded()?)),
        }
    }
}

/// Where and from how many bytes a worker spills.
pub(crate) struct Spill {
    /// Spill while more than this many bytes are in memory.
    target: u64,
    /// The directory for this worker's files (made on first use, removed
    /// with the worker).
    dir: PathBuf,
    made_dir: bool,
    next_file: u64,
    /// Bytes on disk now.
    spilled: u64,
}

impl Spill {
    pub(crate) fn new(target: u64, dir: PathBuf) -> Spill {
        Spill { target, dir, made_dir: false, next_file: 0, spilled: 0 }
    }

    /// Writes one value's bytes to a new file.
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<PathBuf> {
        if !self.made_dir {
            std::fs::create_dir_all(&self.dir)?;
            self.made_dir = true;
        }
        let path = self.dir.join(format!("{}.bin", self.next_file));
        self.next_file += 1;
        std::fs::write(&path, bytes)?;
        Ok(path)
    }

    fn clear(&mut self) {
        if self.made_dir {
            // What cannot be removed stays behind in a temporary directory.
            let _ = std::fs::remove_dir_all(&self.dir);
            self.made_dir = false;
        }
        self.spilled = 0;
    }
}

impl Drop for Spill {
    fn drop(&mut self) {
        self.clear();
    }
}

/// An open connection to a peer's data server, kept for the next fetch.
pub(crate) struct PeerConn {
    pub(crate) reader: FrameReader,
    pub(crate) write: tokio::net::tcp::OwnedWriteHalf,
}

/// The bytes a worker holds — stored results, and results its threads
/// have made that the worker loop has not stored yet — against its pause
/// threshold. Tasks about to start wait here while it is over, so a burst
/// of queued tasks cannot run past the limit before the loop notices.
pub(crate) struct Memory {
    /// Pause above this many bytes (`u64::MAX`: no limit).
    threshold: u64,
    inner: Mutex<MemoryInner>,
    below: Condvar,
}

#[derive(Default)]
struct MemoryInner {
    stored: u64,
    made: KeyHashMap<u64>,
    made_total: u64,
}

/// A waiting task looks again this often, in case a wake-up was missed.
const RECHECK: Duration = Duration::from_millis(50);

impl Memory {
    pub(crate) fn new(threshold: u64) -> Memory {
        Memory { threshold, inner: Mutex::default(), below: Condvar::new() }
    }

    fn lock(&self) -> MutexGuard<'_, MemoryInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Bytes of stored results in memory.
    fn stored(&self) -> u64 {
        self.lock().stored
    }

    /// Bytes held now, made results included.
    pub(crate) fn held(&self) -> u64 {
        let m = self.lock();
        m.stored + m.made_total
    }

    /// Whether the worker is over its pause threshold.
    pub(crate) fn over(&self) -> bool {
        self.held() > self.threshold
    }

    /// Waits (on a task's thread) until the worker is below its threshold.
    pub(crate) fn pass(&self) {
        let mut m = self.lock();
        while m.stored + m.made_total > self.threshold {
            m = self.below.wait_timeout(m, RECHECK).unwrap_or_else(|p| p.into_inner()).0;
        }
    }

    /// A task's thread made this result; the loop stores it soon.
    pub(crate) fn made(&self, key: &Key, bytes: u64) {
        let mut m = self.lock();
        m.made_total += bytes;
        if let Some(old) = m.made.insert(key.clone(), bytes) {
            m.made_total = m.made_total.saturating_sub(old);
        }
    }

    /// A made result was stored or dropped.
    pub(crate) fn settle(&self, key: &Key) {
        let mut m = self.lock();
        if let Some(bytes) = m.made.remove(key) {
            m.made_total = m.made_total.saturating_sub(bytes);
            self.below.notify_all();
        }
    }

    fn add_stored(&self, bytes: u64) {
        self.lock().stored += bytes;
    }

    fn sub_stored(&self, bytes: u64) {
        let mut m = self.lock();
        m.stored = m.stored.saturating_sub(bytes);
        self.below.notify_all();
    }

    /// Nothing is held any more: waiting tasks go on.
    pub(crate) fn clear(&self) {
        *self.lock() = MemoryInner::default();
        self.below.notify_all();
    }
}

pub(crate) struct State {
    store: KeyHashMap<Stored>,
    /// What the stored results (and those about to be) weigh.
    pub(crate) memory: Arc<Memory>,
    /// Results in memory by last use, oldest first: the spill order (kept
    /// only by a worker that spills).
    lru: BTreeMap<u64, Key>,
    clock: u64,
    spill: Option<Spill>,
    /// Idle connections to other workers' data servers, by address: a fetch
    /// reuses one instead of paying a connect and a handshake.
    pub(crate) peers: HashMap<Arc<str>, Vec<PeerConn>>,
    /// Tasks on the pool: their handle, their function, when they were
    /// queued, and the id the scheduler sent them with.
    pub(crate) running: KeyHashMap<(Handle, &'static RemoteFunc, std::time::Instant, TaskId)>,
    /// Tasks given to this worker while it was paused, not started yet.
    pub(crate) parked: HashSet<Key, KeyBuildHasher>,
    /// Results written to shared memory for fetchers on this host; `None`
    /// where the host has no shared-memory directory, or the worker was told
    /// not to use it.
    pub(crate) shm: Option<ShmFiles>,
    /// How large results move between this worker and others on its host.
    pub(crate) same_host: SameHostTransfer,
    /// The address this worker's data server listens on: a peer serving on
    /// it too is on this host.
    pub(crate) own_ip: IpAddr,
}

impl State {
    pub(crate) fn new(memory: Arc<Memory>, spill: Option<Spill>, same_host: SameHostTransfer, own_ip: IpAddr) -> State {
        State {
            store: KeyHashMap::default(),
            memory,
            lru: BTreeMap::new(),
            clock: 0,
            spill,
            peers: HashMap::new(),
            running: KeyHashMap::default(),
            parked: HashSet::default(),
            shm: if same_host == SameHostTransfer::Tcp { None } else { ShmFiles::new() },
            same_host,
            own_ip,
        }
    }

    /// A stored value, which counts as a use of it (it is spilled last).
    /// Whether `key` is held (not a use of it).
    pub(crate) fn holds(&self, key: &Key) -> bool {
        self.store.contains_key(key)
    }

    pub(crate) fn get(&mut self, key: &Key) -> Option<&Stored> {
        self.clock += 1;
        let now = self.clock;
        let stored = self.store.get_mut(key)?;
        // The order of use only matters to a worker that spills.
        if stored.in_memory() && self.spill.is_some() {
            self.lru.remove(&stored.used);
            self.lru.insert(now, key.clone());
        }
        stored.used = now;
        Some(stored)
    }

    pub(crate) fn keep(&mut self, key: Key, mut stored: Stored) {
        self.remove(&key);
        self.clock += 1;
        stored.used = self.clock;
        self.memory.add_stored(stored.nbytes);
        if self.spill.is_some() {
            self.lru.insert(stored.used, key.clone());
        }
        self.store.insert(key, stored);
    }

    pub(crate) fn remove(&mut self, key: &Key) {
        if let Some(shm) = &mut self.shm {
            shm.remove(key);
        }
        let Some(old) = self.store.remove(key) else { return };
        match &old.held {
            Held::Spilled(path) => {
                let _ = std::fs::remove_file(path);
                if let Some(spill) = &mut self.spill {
                    spill.spilled = spill.spilled.saturating_sub(old.nbytes);
                }
            }
            _ => {
                self.lru.remove(&old.used);
                self.memory.sub_stored(old.nbytes);
            }
        }
    }

    /// Bytes spilled to disk now.
    pub(crate) fn spilled_bytes(&self) -> u64 {
        self.spill.as_ref().map_or(0, |s| s.spilled)
    }

    /// Moves the least recently used results to disk until what is in
    /// memory is at the spill target. A disk that refuses a write ends
    /// spilling for this worker (it then pauses at its threshold instead).
    pub(crate) fn spill_to_target(&mut self) {
        let Some(target) = self.spill.as_ref().map(|s| s.target) else { return };
        while self.memory.stored() > target {
            let Some((&used, key)) = self.lru.iter().next() else { return };
            let key = key.clone();
            let Some(stored) = self.store.get(&key) else {
                self.lru.remove(&used);
                continue;
            };
            let written = match stored.encoded() {
                Ok(bytes) => self.spill.as_mut().map(|s| s.write(&bytes)),
                Err(e) => {
                    tracing::error!("cannot encode {key} to spill it: {e}");
                    None
                }
            };
            match written {
                Some(Ok(path)) => {
                    self.lru.remove(&used);
                    if let Some(stored) = self.store.get_mut(&key) {
                        stored.held = Held::Spilled(path);
                        self.memory.sub_stored(stored.nbytes);
                        if let Some(spill) = &mut self.spill {
                            spill.spilled += stored.nbytes;
                        }
                    }
                }
                Some(Err(e)) => {
                    tracing::error!("cannot spill to disk, holding everything in memory from now on: {e}");
                    self.spill = None;
                    return;
                }
                // Not encodable: leave it where it is, try the next one.
                None => {
                    self.lru.remove(&used);
                }
            }
        }
    }

    /// Drops everything: results, queued and parked tasks, peer connections
    /// (a restarted cluster's peers are new processes).
    pub(crate) fn reset(&mut self) {
        for (_, (handle, ..)) in self.running.drain() {
            handle.cancel();
        }
        self.store.clear();
        self.lru.clear();
        if let Some(spill) = &mut self.spill {
            spill.clear();
        }
        self.memory.clear();
        self.parked.clear();
        self.peers.clear();
        if let Some(shm) = &mut self.shm {
            shm.clear();
        }
    }
}

pub(crate) type Shared = Arc<Mutex<State>>;

/// A worker's shared state, with its pause threshold and where it spills.
pub(crate) fn shared(threshold: u64, spill: Option<Spill>, same_host: SameHostTransfer, own_ip: IpAddr) -> Shared {
    Arc::new(Mutex::new(State::new(Arc::new(Memory::new(threshold)), spill, same_host, own_ip)))
}

pub(crate) fn lock(state: &Shared) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
