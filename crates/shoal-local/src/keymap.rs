//! The keys a runtime knows, each mapped to its live node.
//!
//! Sharded by the token's top bits so that submitting threads and releasing
//! workers rarely meet on one lock. Each entry is the key's hash and the node
//! (the key itself lives in the node): growing a table never touches the
//! nodes, and removing a node compares pointers, not keys.

use std::hash::BuildHasher;
use std::sync::Arc;

use hashbrown::HashTable;
use parking_lot::{Mutex, MutexGuard};
use shoal_graph::{Key, KeyBuildHasher};

use crate::node::Node;

const SHARDS: usize = 32;

pub(crate) struct Entry {
    hash: u64,
    node: Arc<Node>,
}

pub(crate) struct Shard {
    table: HashTable<Entry>,
}

pub(crate) struct KeyMap {
    shards: Box<[Mutex<Shard>]>,
}

fn hash_key(key: &Key) -> u64 {
    KeyBuildHasher::default().hash_one(key)
}

fn shard_index(key: &Key) -> usize {
    let chunk = key.index().first().copied().unwrap_or(0) as usize;
    ((key.token().0 >> 120) as usize ^ chunk) % SHARDS
}

impl Shard {
    /// The live entry for `key`.
    pub(crate) fn get(&self, key: &Key) -> Option<&Arc<Node>> {
        self.table.find(hash_key(key), |e| e.node.key == *key).map(|e| &e.node)
    }

    /// Adds a node whose key is not in the shard.
    #[cfg(test)]
    pub(crate) fn insert(&mut self, node: Arc<Node>) {
        let hash = hash_key(&node.key);
        self.table.insert_unique(hash, Entry { hash, node }, |e| e.hash);
    }

    /// The live node for `key` (`Err`), or the node `make` builds, now in the
    /// shard (`Ok`): one probe either way. A node that `is_live` rejects is
    /// replaced.
    pub(crate) fn find_or_insert(
        &mut self,
        key: &Key,
        is_live: impl Fn(&Node) -> bool,
        make: impl FnOnce() -> Arc<Node>,
    ) -> Result<Arc<Node>, Arc<Node>> {
        let hash = hash_key(key);
        match self.table.entry(hash, |e| e.node.key == *key, |e| e.hash) {
            hashbrown::hash_table::Entry::Occupied(mut o) => {
                if is_live(&o.get().node) {
                    return Err(o.get().node.clone());
                }
                let node = make();
                o.get_mut().node = node.clone();
                Ok(node)
            }
            hashbrown::hash_table::Entry::Vacant(v) => {
                let node = make();
                v.insert(Entry { hash, node: node.clone() });
                Ok(node)
            }
        }
    }

    /// Removes the entry of `node`, if it is there.
    pub(crate) fn remove_node(&mut self, node: &Arc<Node>) {
        if let Ok(entry) = self.table.find_entry(hash_key(&node.key), |e| Arc::ptr_eq(&e.node, node)) {
            entry.remove();
        }
    }
}

impl KeyMap {
    pub(crate) fn new() -> KeyMap {
        KeyMap { shards: (0..SHARDS).map(|_| Mutex::new(Shard { table: HashTable::new() })).collect() }
    }

    pub(crate) fn shard(&self, key: &Key) -> MutexGuard<'_, Shard> {
        self.shards[shard_index(key)].lock()
    }

    /// The live node for a key.
    pub(crate) fn get(&self, key: &Key) -> Option<Arc<Node>> {
        self.shard(key).get(key).cloned()
    }

    /// Forgets `node`'s key if it still maps to `node`.
    pub(crate) fn remove(&self, node: &Arc<Node>) {
        self.shard(&node.key).remove_node(node);
    }

    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().table.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_graph::{Func, Token};

    #[test]
    fn removal_is_by_node_not_by_key() {
        let map = KeyMap::new();
        let key = Key::scalar("k", Token(42));
        let func = Func::new("f", None, Box::new(|_| Ok(Arc::new(()) as shoal_graph::Value)));
        let node = |f: &Func| {
            let body = crate::node::Body { func: f.clone(), args: Default::default() };
            Arc::new(Node::new(key.clone(), body, 0, 0, 0, Vec::new()))
        };
        let a = node(&func);
        let b = node(&func);
        map.shard(&key).insert(a.clone());
        map.remove(&b);
        assert!(map.get(&key).is_some_and(|n| Arc::ptr_eq(&n, &a)), "a stale node must not remove its successor");
        map.remove(&a);
        assert!(map.get(&key).is_none());
        assert_eq!(map.len(), 0);
    }
}
