//! Workers ordered by load.

use shoal_proto::WorkerId;

const ABSENT: u32 = u32::MAX;

/// A leaf no worker uses; larger than any real entry.
const VACANT: (u64, WorkerId) = (u64::MAX, WorkerId(u32::MAX));

/// Workers by load (queued microseconds per thread), least loaded first,
/// ties to the lower id.
///
/// A tournament tree: workers are leaves, and each inner node holds the
/// smaller of its two children, so the root is the least loaded worker. A
/// change of load recomputes the leaf's ancestors, stopping where nothing
/// changed: at most log2(workers) steps through a compact array, with no
/// allocation and no data-dependent swaps. Every task changes its worker's
/// load twice (assigned, then done), so this is on the hot path.
#[derive(Default)]
pub(crate) struct LoadIndex {
    /// Node `n`'s children are `2n` and `2n + 1`; leaves are
    /// `leaves..2 * leaves`; node 0 is unused.
    tree: Vec<(u64, WorkerId)>,
    leaves: usize,
    /// Leaf number by worker number (`ABSENT`: not in the index). Four
    /// bytes per worker ever registered.
    leaf: Vec<u32>,
    /// Leaves no worker uses.
    vacant: Vec<u32>,
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
        self.set(leaf as usize, (load, w));
    }

    pub(crate) fn remove(&mut self, w: WorkerId) {
        let Some(leaf) = self.position(w) else { return };
        self.leaf[w.0 as usize] = ABSENT;
        self.vacant.push(leaf as u32);
        self.set(leaf, VACANT);
    }

    pub(crate) fn update(&mut self, w: WorkerId, load: u64) {
        if let Some(leaf) = self.position(w) {
            self.set(leaf, (load, w));
        }
    }

    /// The least loaded worker.
    pub(crate) fn least(&self) -> Option<WorkerId> {
        self.tree.get(1).filter(|&&entry| entry != VACANT).map(|&(_, w)| w)
    }

    /// Every worker, in no particular order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = WorkerId> + '_ {
        self.tree.iter().skip(self.leaves).filter(|&&entry| entry != VACANT).map(|&(_, w)| w)
    }

    fn position(&self, w: WorkerId) -> Option<usize> {
        self.leaf.get(w.0 as usize).filter(|&&l| l != ABSENT).map(|&l| l as usize)
    }

    fn set(&mut self, leaf: usize, entry: (u64, WorkerId)) {
        let mut n = self.leaves + leaf;
        self.tree[n] = entry;
        while n > 1 {
            n /= 2;
            let smaller = self.tree[2 * n].min(self.tree[2 * n + 1]);
            if self.tree[n] == smaller {
                break;
            }
            self.tree[n] = smaller;
        }
    }

    /// Doubles the leaves (workers keep their leaf numbers).
    fn grow(&mut self) {
        let old = self.leaves;
        self.leaves = (old * 2).max(64);
        let mut tree = vec![VACANT; 2 * self.leaves];
        if old > 0 {
            tree[self.leaves..self.leaves + old].copy_from_slice(&self.tree[old..2 * old]);
        }
        for n in (1..self.leaves).rev() {
            tree[n] = tree[2 * n].min(tree[2 * n + 1]);
        }
        self.tree = tree;
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
            let expected = loads.iter().enumerate().filter_map(|(w, l)| l.map(|l| (l, WorkerId(w as u32)))).min();
            assert_eq!(index.least(), expected.map(|(_, w)| w));
            assert_eq!(index.iter().count(), loads.iter().flatten().count());
        }
    }
}
