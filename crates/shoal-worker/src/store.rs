//! A worker's results: kept decoded where they were made, as bytes where
//! they came from a client, or on disk once spilled.
//!
//! Memory counts the results held in memory (their encoded size). Above the
//! spill target the least recently used results go to disk, encoded, and are
//! read from there when needed; the pause threshold (higher) is the
//! [`MemoryGate`]'s.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use shoal_graph::remote::{RemoteError, RemoteFunc};
use shoal_graph::{Key, KeyHashMap, Value};

use crate::memory::MemoryGate;

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
pub enum StoreError {
    /// Its codec refused it.
    #[error(transparent)]
    Codec(#[from] RemoteError),
    /// Its spill file could not be read back.
    #[error("cannot read the spilled value back from {path}: {source}")]
    Disk {
        /// The spill file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// A result on its way out of the store: to a peer, a client or a shared
/// file.
pub enum Payload {
    /// A decoded result, encoded by its producer's codec where it goes.
    Value {
        /// The result.
        value: Value,
        /// The function that made it.
        producer: &'static RemoteFunc,
    },
    /// Bytes already encoded.
    Bytes(Bytes),
}

impl Payload {
    /// The encoded bytes: one copy for a value, none for bytes.
    ///
    /// # Errors
    /// When the producer's codec cannot encode the value.
    pub fn encode(self) -> Result<Bytes, RemoteError> {
        match self {
            Payload::Value { value, producer } => Ok(Bytes::from(producer.encode_result(&value)?)),
            Payload::Bytes(bytes) => Ok(bytes),
        }
    }
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

    /// The value's bytes: encoded once for a value made here, shared (not
    /// copied) for bytes kept as they came.
    pub(crate) fn encoded(&self) -> Result<Bytes, StoreError> {
        match &self.held {
            Held::Value { value, producer } => Ok(Bytes::from(producer.encode_result(value)?)),
            Held::Bytes(bytes) => Ok(bytes.clone()),
            Held::Spilled(path) => {
                std::fs::read(path).map(Bytes::from).map_err(|source| StoreError::Disk { path: path.clone(), source })
            }
        }
    }

    /// What leaves the store for this value (encoding a large value takes a
    /// while, so that happens outside the worker's lock).
    pub(crate) fn payload(&self) -> Result<Payload, StoreError> {
        match &self.held {
            Held::Value { value, producer } => Ok(Payload::Value { value: value.clone(), producer }),
            _ => Ok(Payload::Bytes(self.encoded()?)),
        }
    }
}

/// The directory worker `name` of process `pid` spills to, in `base`
/// (its local directory): `shoal-worker-<pid>-<name>`.
pub fn spill_directory(base: &Path, pid: u32, name: &str) -> PathBuf {
    let name: String = name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect();
    base.join(format!("shoal-worker-{pid}-{name}"))
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

/// The results of one worker, with their spill order.
pub(crate) struct Store {
    map: KeyHashMap<Stored>,
    /// What the stored results (and those about to be) weigh.
    gate: Arc<MemoryGate>,
    /// Results in memory by last use, oldest first: the spill order (kept
    /// only by a worker that spills).
    lru: BTreeMap<u64, Key>,
    clock: u64,
    spill: Option<Spill>,
}

impl Store {
    pub(crate) fn new(gate: Arc<MemoryGate>, spill: Option<Spill>) -> Store {
        Store { map: KeyHashMap::default(), gate, lru: BTreeMap::new(), clock: 0, spill }
    }

    /// Whether `key` is held (not a use of it).
    pub(crate) fn holds(&self, key: &Key) -> bool {
        self.map.contains_key(key)
    }

    /// A stored value, which counts as a use of it (it is spilled last).
    pub(crate) fn get(&mut self, key: &Key) -> Option<&Stored> {
        self.clock += 1;
        let now = self.clock;
        let stored = self.map.get_mut(key)?;
        // The order of use only matters to a worker that spills.
        if stored.in_memory() && self.spill.is_some() {
            self.lru.remove(&stored.used);
            self.lru.insert(now, key.clone());
        }
        stored.used = now;
        Some(stored)
    }

    /// Keeps a result; whether it replaced one held under the same key.
    pub(crate) fn keep(&mut self, key: Key, mut stored: Stored) -> bool {
        let replaced = self.remove(&key);
        self.clock += 1;
        stored.used = self.clock;
        self.gate.add_stored(stored.nbytes);
        if self.spill.is_some() {
            self.lru.insert(stored.used, key.clone());
        }
        self.map.insert(key, stored);
        replaced
    }

    /// Drops a result; whether it was held.
    pub(crate) fn remove(&mut self, key: &Key) -> bool {
        let Some(old) = self.map.remove(key) else { return false };
        match &old.held {
            Held::Spilled(path) => {
                let _ = std::fs::remove_file(path);
                if let Some(spill) = &mut self.spill {
                    spill.spilled = spill.spilled.saturating_sub(old.nbytes);
                }
            }
            _ => {
                self.lru.remove(&old.used);
                self.gate.sub_stored(old.nbytes);
            }
        }
        true
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
        while self.gate.stored() > target {
            let Some((&used, key)) = self.lru.iter().next() else { return };
            let key = key.clone();
            let Some(stored) = self.map.get(&key) else {
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
                    if let Some(stored) = self.map.get_mut(&key) {
                        stored.held = Held::Spilled(path);
                        self.gate.sub_stored(stored.nbytes);
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

    /// Drops every result, spilled ones included.
    pub(crate) fn clear(&mut self) {
        self.map.clear();
        self.lru.clear();
        if let Some(spill) = &mut self.spill {
            spill.clear();
        }
        self.gate.clear();
    }
}
