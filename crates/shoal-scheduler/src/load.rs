//! Workers ordered by load.

use shoal_proto::WorkerId;

const ABSENT: u32 = u32::MAX;

/// A leaf no worker uses: larger than any real entry.
const VACANT: u64 = u64::MAX;

/// Bits of an entry that number its leaf: at most 16 million workers at
/// once are indexed (a scheduler holds a connection per worker, so the
/// operating system runs out of descriptors long before).
const LEAF_BITS: u32 = 24;

/// The largest load an entry holds; more counts as this much (some 12 days
/// of queued work per thread).
const MAX_LOAD: u64 = (1 << (64 - LEAF_BITS)) - 2;

/// Workers by load (queued microseconds per thread), least loaded first.
///
/// A tournament tree: workers are leaves, and each inner node holds the
/// smallest of its children, so the root is the least loaded worker. An
/// entry is the load and the leaf number packed in one integer (ties go to
/// the lower leaf: registration order, with the leaves of departed workers
/// reused), so taking the smaller of two is one branch-free comparison. A
/// change of load recomputes the leaf's ancestors, stopping where nothing
/// changed, with no allocation. Every task changes its worker's load twice
/// (assigned, then done), so this is on the hot path; an assignment raises
/// the least loaded worker's load, which changes every ancestor. Four
/// children a node, side by side in 32 bytes, halve the levels of a binary
/// tree: for a thousand workers, a fifth fewer instructions per raised
/// load than a binary tree (callgrind, the simulator's random DAG).
#[derive(Default)]
pub(crate) struct LoadIndex {
    /// Node `n`'s children are `4n..4n + 4`; the root is node 1. Level `j`
    /// is `4^j..2 * 4^j` (the rest is unused), and the leaves are the last
    /// level, `leaves..2 * leaves`.
    tree: Vec<u64>,
    leaves: usize,
    /// The worker at each leaf.
    owner: Vec<WorkerId>,
    /// Leaf number by worker number (`ABSENT`: not in the index). Four
    /// bytes per worker ever registered.
    leaf: Vec<u32>,
    /// Leaves no worker uses.
    vacant: Vec<u32>,
}

fn entry(load: u64, leaf: usize) -> u64 {
    (load.min(MAX_LOAD) << LEAF_BITS) | leaf as u64
}

/// The smallest of node `n`'s four children.
fn children_min(tree: &[u64], n: usize) -> u64 {
    let c = &tree[4 * n..4 * n + 4];
    c[0].min(c[1]).min(c[2].min(c[3]))
}

impl LoadIndex {
    pub(crate) fn insert(&mut self, w: WorkerId, load: u64) {
        let n = w.0 as usize;
        if self.leaf.len() <= n {
            self.leaf.resize(n + 1, ABSENT);
        }
        if self.leaf[n] != ABSENT {
            self.update(w, load);
            return;
        }
        if self.vacant.is_empty() {
            self.grow();
        }
        let Some(leaf) = self.vacant.pop() else { return };
        self.leaf[n] = leaf;
        self.owner[leaf as usize] = w;
        self.set(leaf as usize, entry(load, leaf as usize));
    }

    pub(crate) fn remove(&mut self, w: WorkerId) {
        let Some(leaf) = self.position(w) else { return };
        self.leaf[w.0 as usize] = ABSENT;
        self.vacant.push(leaf as u32);
        self.set(leaf, VACANT);
    }

    pub(crate) fn update(&mut self, w: WorkerId, load: u64) {
        if let Some(leaf) = self.position(w) {
            self.set(leaf, entry(load, leaf));
        }
    }

    /// The least loaded worker.
    pub(crate) fn least(&self) -> Option<WorkerId> {
        let top = *self.tree.get(1)?;
        (top != VACANT).then(|| self.owner[(top & ((1 << LEAF_BITS) - 1)) as usize])
    }

    /// A worker's load, if it is in the index.
    pub(crate) fn load(&self, w: WorkerId) -> Option<u64> {
        self.position(w).map(|leaf| self.tree[self.leaves + leaf] >> LEAF_BITS)
    }

    /// Every worker, in no particular order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = WorkerId> + '_ {
        self.tree[self.leaves..].iter().zip(&self.owner).filter(|(e, _)| **e != VACANT).map(|(_, w)| *w)
    }

    fn position(&self, w: WorkerId) -> Option<usize> {
        self.leaf.get(w.0 as usize).filter(|&&l| l != ABSENT).map(|&l| l as usize)
    }

    fn set(&mut self, leaf: usize, entry: u64) {
        let tree = &mut self.tree[..];
        let mut n = self.leaves + leaf;
        tree[n] = entry;
        while n > 1 {
            n /= 4;
            let smallest = children_min(tree, n);
            if tree[n] == smallest {
                break;
            }
            tree[n] = smallest;
        }
    }

    /// Quadruples the leaves (workers keep their leaf numbers), up to the
    /// most an entry can number.
    fn grow(&mut self) {
        let old = self.leaves;
        if old >= 1 << LEAF_BITS {
            return;
        }
        self.leaves = (old * 4).max(64);
        let mut tree = vec![VACANT; 2 * self.leaves];
        if old > 0 {
            tree[self.leaves..self.leaves + old].copy_from_slice(&self.tree[old..2 * old]);
        }
        // Level by level from the leaves up: level `j` is `4^j..2 * 4^j`.
        let mut level = self.leaves / 4;
        while level >= 1 {
            for n in level..2 * level {
                tree[n] = children_min(&tree, n);
            }
            level /= 4;
        }
        self.tree = tree;
        self.owner.resize(self.leaves, WorkerId(u32::MAX));
        self.vacant.extend((old as u32..self.leaves as u32).rev());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The least loaded worker after each of a run of changes, checked
    /// against a plain scan.
    #[test]
    fn the_least_loaded_worker_is_always_first() {
        let mut index = LoadIndex::default();
        let mut loads: Vec<Option<u64>> = vec![None; 100];
        let mut x = 12345u64;
        for _ in 0..5_000 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let w = ((x >> 33) % 100) as usize;
            let load = (x >> 50) % 16;
            match (x >> 20) % 4 {
                0 => {
                    index.remove(WorkerId(w as u32));
                    loads[w] = None;
                }
                1 => {
                    index.insert(WorkerId(w as u32), load);
                    loads[w] = Some(load);
                }
                _ => {
                    index.update(WorkerId(w as u32), load);
                    if loads[w].is_some() {
                        loads[w] = Some(load);
                    }
                }
            }
            let least = loads.iter().flatten().min();
            assert_eq!(index.least().and_then(|w| loads[w.0 as usize]).as_ref(), least);
            for (w, l) in loads.iter().enumerate() {
                assert_eq!(index.load(WorkerId(w as u32)), *l);
            }
            assert_eq!(index.iter().count(), loads.iter().flatten().count());
        }
    }

    /// Over a thousand workers (the index grows three times), with the
    /// least loaded one raised again and again as assignments do.
    #[test]
    fn a_thousand_workers_stay_ordered_as_the_least_loaded_takes_work() {
        let mut index = LoadIndex::default();
        let mut loads: Vec<u64> = (0..1100u64).map(|w| (w * 7919) % 1000).collect();
        for (w, &l) in loads.iter().enumerate() {
            index.insert(WorkerId(w as u32), l);
        }
        for step in 0..20_000u64 {
            let w = index.least().expect("workers").0 as usize;
            assert_eq!(Some(&loads[w]), loads.iter().min(), "step {step}");
            loads[w] += 1 + step % 5;
            index.update(WorkerId(w as u32), loads[w]);
            if step % 7 == 0 {
                let other = (step * 31 % 1100) as usize;
                loads[other] = loads[other].saturating_sub(3);
                index.update(WorkerId(other as u32), loads[other]);
            }
        }
    }
}
