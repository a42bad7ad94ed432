//! Workers ordered by load.

use shoal_proto::WorkerId;

const ABSENT: u32 = u32::MAX;

/// Workers by load (queued microseconds per thread), least loaded first,
/// ties to the lower id.
///
/// A binary min-heap that knows where each worker sits: the least loaded
/// worker is the first entry, and a change of load moves one entry up or
/// down, O(log workers) with no allocation. Every task changes its worker's
/// load twice (assigned, then done), so this is on the hot path; an ordered
/// set would cost a removal and an insertion each time, with allocation
/// churn in its nodes.
#[derive(Default)]
pub(crate) struct LoadIndex {
    heap: Vec<(u64, WorkerId)>,
    /// Heap position by worker number (`ABSENT`: not in the heap). Four
    /// bytes per worker ever registered.
    pos: Vec<u32>,
}

impl LoadIndex {
    pub(crate) fn insert(&mut self, w: WorkerId, load: u64) {
        let n = w.0 as usize;
        if self.pos.len() <= n {
            self.pos.resize(n + 1, ABSENT);
        }
        if self.pos[n] != ABSENT {
            self.update(w, load);
            return;
        }
        self.heap.push((load, w));
        self.pos[n] = (self.heap.len() - 1) as u32;
        self.sift_up(self.heap.len() - 1);
    }

    pub(crate) fn remove(&mut self, w: WorkerId) {
        let Some(p) = self.position(w) else { return };
        let last = self.heap.len() - 1;
        self.swap(p, last);
        self.heap.pop();
        self.pos[w.0 as usize] = ABSENT;
        if p < self.heap.len() {
            self.sift_down(p);
            self.sift_up(p);
        }
    }

    pub(crate) fn update(&mut self, w: WorkerId, load: u64) {
        let Some(p) = self.position(w) else { return };
        let before = self.heap[p].0;
        self.heap[p].0 = load;
        if load < before {
            self.sift_up(p);
        } else {
            self.sift_down(p);
        }
    }

    /// The least loaded worker.
    pub(crate) fn least(&self) -> Option<WorkerId> {
        self.heap.first().map(|&(_, w)| w)
    }

    /// Every worker, in no particular order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = WorkerId> + '_ {
        self.heap.iter().map(|&(_, w)| w)
    }

    fn position(&self, w: WorkerId) -> Option<usize> {
        self.pos.get(w.0 as usize).filter(|&&p| p != ABSENT).map(|&p| p as usize)
    }

    fn swap(&mut self, a: usize, b: usize) {
        self.heap.swap(a, b);
        self.pos[self.heap[a].1.0 as usize] = a as u32;
        self.pos[self.heap[b].1.0 as usize] = b as u32;
    }

    fn sift_up(&mut self, mut p: usize) {
        while p > 0 {
            let parent = (p - 1) / 2;
            if self.heap[parent] <= self.heap[p] {
                break;
            }
            self.swap(p, parent);
            p = parent;
        }
    }

    fn sift_down(&mut self, mut p: usize) {
        loop {
            let left = 2 * p + 1;
            if left >= self.heap.len() {
                break;
            }
            let right = left + 1;
            let child = if right < self.heap.len() && self.heap[right] < self.heap[left] { right } else { left };
            if self.heap[p] <= self.heap[child] {
                break;
            }
            self.swap(p, child);
            p = child;
        }
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
        let mut loads: Vec<Option<u64>> = vec![None; 40];
        let mut x = 12345u64;
        for _ in 0..5_000 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let w = ((x >> 33) % 40) as usize;
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
