//! The keys a runtime knows, each mapped to its live node.
//!
//! Sharded by token so that submitting threads and releasing workers rarely
//! meet on one lock; the set stores the node pointer only and borrows the key
//! from the node, so a key is not stored twice.

use std::borrow::Borrow;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use parking_lot::{Mutex, MutexGuard};
use rustc_hash::FxHashSet;
use shoal_graph::Key;

use crate::node::Node;

const SHARDS: usize = 32;

pub(crate) struct ByKey(pub(crate) Arc<Node>);

impl Borrow<Key> for ByKey {
    fn borrow(&self) -> &Key {
        &self.0.key
    }
}

impl Hash for ByKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.key.hash(state);
    }
}

impl PartialEq for ByKey {
    fn eq(&self, other: &ByKey) -> bool {
        self.0.key == other.0.key
    }
}

impl Eq for ByKey {}

pub(crate) struct KeyMap {
    shards: Box<[Mutex<FxHashSet<ByKey>>]>,
}

impl KeyMap {
    pub(crate) fn new() -> KeyMap {
        KeyMap { shards: (0..SHARDS).map(|_| Mutex::new(FxHashSet::default())).collect() }
    }

    pub(crate) fn shard(&self, key: &Key) -> MutexGuard<'_, FxHashSet<ByKey>> {
        let i = (key.token().0 as usize ^ key.index().first().copied().unwrap_or(0) as usize) % SHARDS;
        self.shards[i].lock()
    }

    /// The live node for a key.
    pub(crate) fn get(&self, key: &Key) -> Option<Arc<Node>> {
        self.shard(key).get(key).map(|n| n.0.clone())
    }

    /// Forgets `node`'s key if it still maps to `node`.
    pub(crate) fn remove(&self, node: &Arc<Node>) {
        let mut shard = self.shard(&node.key);
        if shard.get(&node.key).is_some_and(|n| Arc::ptr_eq(&n.0, node)) {
            shard.remove(&node.key);
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }
}
