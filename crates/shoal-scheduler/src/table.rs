//! The scheduler's tasks: records in a slab, found by key through an index.

use std::hash::BuildHasher;
use std::sync::Arc;

use shoal_graph::{Key, KeyBuildHasher};
use shoal_proto::{ArgMsg, TaskId, WorkerId};

use crate::idlist::IdList;
use crate::index::{KeyIndex, prefetch_line};
use crate::segmented::Segmented;
use crate::task::{Task, TaskState};

/// Tasks by slot, and slots by key.
///
/// Inside the scheduler a task is its slot number: following a dependency,
/// a dependent or a worker's report is an array access. Keys are hashed only
/// where they come in from outside: a submission, a client's request, a
/// worker's message about a task whose id went stale.
///
/// The key index holds `(slot, hash)` pairs, 8 bytes each, not copies of
/// the keys: at a million tasks it is a fifth of the size of a map from keys
/// (so more of it stays in cache), and growing it reads no task record.
///
/// Forgetting a task leaves its index entry in place: removing it would
/// cost a cache miss at a random place in the index per task (and, with
/// linear probing, moving its neighbours back), and a graph's tasks are
/// forgotten in a cascade of millions. An entry whose slot is vacant, or holds a task of another
/// hash, matches no key. A slot taken again by a key of the same hash (the
/// same key resubmitted, usually) takes its old entry back; the others are
/// swept out when the index would otherwise grow.
///
/// Beside the records, a dense array says which worker each task is
/// processing on and which worker holds its result. A worker's tasks are
/// found by scanning it (when the worker dies, or to steal from it: rare
/// events), instead of keeping per-worker sets that every assignment,
/// completion and release would update at a random place in memory.
pub(crate) struct TaskTable {
    slots: Segmented<Slot>,
    places: Vec<Place>,
    /// Vacant slots, the most recently vacated (still in cache) last.
    free: Vec<u32>,
    index: KeyIndex,
    /// Tasks in the table (the index also holds entries of forgotten ones).
    live: usize,
    /// Arguments of tasks just forgotten, freed in batches: a forgotten
    /// task's arguments (a separate allocation, last read when it was
    /// submitted) are a cache miss to free, and freeing them at once
    /// would stall the cascade of forgetting on each. Here their lines
    /// are asked for as the task is forgotten and freed some tasks later,
    /// when they have arrived.
    dying_args: Vec<Arc<[ArgMsg]>>,
    /// By slot: the slot is vacant and the index still has the entry of
    /// its last task (under `Slot::hash`).
    stale: Vec<bool>,
}

impl Default for TaskTable {
    fn default() -> TaskTable {
        TaskTable {
            slots: Segmented::default(),
            places: Vec::new(),
            free: Vec::new(),
            index: KeyIndex::default(),
            live: 0,
            stale: Vec::new(),
            dying_args: Vec::with_capacity(DYING_ARGS),
        }
    }
}

const NOWHERE: u32 = u32::MAX;

/// How many forgotten tasks' arguments wait to be freed (see
/// `TaskTable::dying_args`): enough for their cache misses to overlap.
const DYING_ARGS: usize = 32;

/// Where a task is, by worker number (`NOWHERE`: none), in eight bytes:
/// a worker's loss scans the whole array.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Place {
    processing: u32,
    /// The worker in `who_has`, or `SEVERAL` when it has more than one.
    holder: u32,
}

/// The holder of a result kept on several workers: which ones, the record
/// says.
const SEVERAL: u32 = u32::MAX - 1;

const EMPTY: Place = Place { processing: NOWHERE, holder: NOWHERE };

impl Place {
    fn of(task: &Task) -> Place {
        Place {
            processing: match task.state {
                TaskState::Processing(w) => w.0,
                _ => NOWHERE,
            },
            holder: match *task.who_has {
                [] => NOWHERE,
                [w] => w.0,
                _ => SEVERAL,
            },
        }
    }
}

/// Generation and hash in front of the record's hot fields (see [`Task`]).
#[derive(Default)]
#[repr(C)]
struct Slot {
    /// Bumped each time the slot is vacated, so old ids stop matching.
    generation: u32,
    /// The index's hash of the slot's key, or of its last one while vacant.
    hash: u32,
    task: Option<Task>,
}

fn hash_of(key: &Key) -> u32 {
    KeyBuildHasher::default().hash_one(key) as u32
}

impl TaskTable {
    /// Tasks in the table.
    pub(crate) fn len(&self) -> usize {
        self.live
    }

    pub(crate) fn get(&self, i: u32) -> Option<&Task> {
        self.slots.get(i as usize).and_then(|s| s.task.as_ref())
    }

    /// Starts loading task `i`'s record into the cache, without waiting
    /// for it. Handling a burst of messages, the scheduler first asks for
    /// every record it is about to read: the cache misses then overlap
    /// instead of coming one after another (a record last touched when its
    /// task was submitted is far out in memory, and each miss costs some
    /// hundreds of nanoseconds).
    pub(crate) fn prefetch(&self, i: u32) {
        let Some(slot) = self.slots.get(i as usize) else { return };
        let start = (slot as *const Slot).cast::<i8>();
        for line in (0..std::mem::size_of::<Slot>()).step_by(64) {
            prefetch_line(start.wrapping_add(line));
        }
    }

    /// Starts loading the index entry where `key` would be (see
    /// [`TaskTable::prefetch`]).
    pub(crate) fn prefetch_key(&self, key: &Key) {
        self.index.prefetch(hash_of(key));
    }

    /// Starts loading the record of the task with this key, once its
    /// index entry is in cache (asked for with [`TaskTable::prefetch_key`]
    /// a little earlier): the look-up then finds both without waiting.
    pub(crate) fn prefetch_record_of(&self, key: &Key) {
        // The first slot under the key's hash, unchecked: where the
        // look-up will most likely end.
        if let Some(i) = self.index.find(hash_of(key), |_| true) {
            self.prefetch(i);
        }
    }

    pub(crate) fn get_mut(&mut self, i: u32) -> Option<&mut Task> {
        self.slots.get_mut(i as usize).and_then(|s| s.task.as_mut())
    }

    /// The slot of the task with this key.
    pub(crate) fn find(&self, key: &Key) -> Option<u32> {
        let hash = hash_of(key);
        let slots = &self.slots;
        self.index.find(hash, |i| slots[i as usize].task.as_ref().is_some_and(|t| t.key == *key))
    }

    /// The slot of a task a worker names by id and key. A stale id (its
    /// task was forgotten, perhaps submitted again since) or one that does
    /// not go with the key falls back to the key.
    pub(crate) fn resolve(&self, id: TaskId, key: &Key) -> Option<u32> {
        let current = self
            .slots
            .get(id.slot() as usize)
            .filter(|s| s.generation == id.generation())
            .and_then(|s| s.task.as_ref())
            .is_some_and(|t| t.key == *key);
        if current { Some(id.slot()) } else { self.find(key) }
    }

    /// The id of the task in a slot.
    pub(crate) fn id(&self, i: u32) -> TaskId {
        TaskId::new(i, self.slots.get(i as usize).map_or(0, |s| s.generation))
    }

    /// Adds a task whose key is not in the table; returns its slot.
    pub(crate) fn insert(&mut self, task: Task) -> u32 {
        let hash = hash_of(&task.key);
        let i = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(Slot { generation: 0, hash, task: None });
                self.places.push(EMPTY);
                self.stale.push(false);
                (self.slots.len() - 1) as u32
            }
        };
        let slot = &mut self.slots[i as usize];
        let reuse = std::mem::replace(&mut self.stale[i as usize], false) && slot.hash == hash;
        slot.hash = hash;
        slot.task = Some(task);
        self.live += 1;
        self.update_place(i);
        if !reuse {
            if self.index.is_full() {
                // Entries of forgotten tasks: every other task has one.
                let stale = self.index.len() + 1 - self.live;
                if stale >= self.live / 4 {
                    self.sweep();
                } else {
                    self.index.rebuild(self.index.len() + 1, |_, _| true);
                }
            }
            self.index.insert(i, hash);
        }
        i
    }

    /// Forgets a task, returning its dependencies; its slot goes to a later
    /// task under a new generation. Its index entry stays (see the type's
    /// notes).
    pub(crate) fn remove(&mut self, i: u32) -> Option<IdList<u32>> {
        let slot = self.slots.get_mut(i as usize)?;
        // The arguments are freed a little later, with others (see
        // `dying_args`); the rest of the record is in cache already.
        let Task { deps, args, .. } = slot.task.take()?;
        if let Some(args) = args {
            let start = Arc::as_ptr(&args).cast::<i8>();
            // The arguments and the reference count in front of them.
            for line in (0..16 + std::mem::size_of_val(&*args)).step_by(64) {
                prefetch_line(start.wrapping_sub(16).wrapping_add(line));
            }
            if self.dying_args.len() == DYING_ARGS {
                self.dying_args.clear();
            }
            self.dying_args.push(args);
        }
        slot.generation = slot.generation.wrapping_add(1);
        self.places[i as usize] = EMPTY;
        self.stale[i as usize] = true;
        self.live -= 1;
        self.free.push(i);
        Some(deps)
    }

    /// Drops the index entries that match no task: those of vacant slots,
    /// of slots taken since by a key of another hash, and repeats (a slot
    /// that got a key of its old hash back after holding another).
    fn sweep(&mut self) {
        let slots = &self.slots;
        let mut kept = vec![false; slots.len()];
        // Room for as many tasks again before the next sweep.
        self.index.rebuild(2 * self.live, |i, h| {
            let s = &slots[i as usize];
            let current = s.task.is_some() && s.hash == h && !kept[i as usize];
            if current {
                kept[i as usize] = true;
            }
            current
        });
        self.stale.fill(false);
    }

    /// Records a change of a task's state or of its `who_has` in the array
    /// of places.
    pub(crate) fn update_place(&mut self, i: u32) {
        if let Some(t) = self.get(i) {
            self.places[i as usize] = Place::of(t);
        }
    }

    /// Whether the array of places agrees with the record.
    pub(crate) fn place_is_current(&self, i: u32) -> bool {
        self.get(i).is_some_and(|t| self.places[i as usize] == Place::of(t))
    }

    /// Every processing task with its worker, in slot order.
    pub(crate) fn processing(&self) -> impl Iterator<Item = (u32, WorkerId)> + '_ {
        self.places
            .iter()
            .enumerate()
            .filter(|(_, p)| p.processing != NOWHERE)
            .map(|(i, p)| (i as u32, WorkerId(p.processing)))
    }

    /// A worker's tasks, in slot order, in one scan: those whose result it
    /// holds, and those it is processing.
    pub(crate) fn on_worker(&self, w: WorkerId) -> (Vec<u32>, Vec<u32>) {
        let mut held = Vec::new();
        let mut processing = Vec::new();
        let holds = |p: &Place| (p.holder == w.0) | (p.holder == SEVERAL);
        let concerns = |p: &Place| holds(p) | (p.processing == w.0);
        // Eight places at a time without a branch (the compiler makes it a
        // few vector compares): a worker has a sliver of the tasks.
        for (c, chunk) in self.places.chunks(8).enumerate() {
            if !chunk.iter().fold(false, |any, p| any | concerns(p)) {
                continue;
            }
            for (k, p) in chunk.iter().enumerate() {
                let i = (c * 8 + k) as u32;
                if holds(p) && self.get(i).is_some_and(|t| t.who_has.contains(&w)) {
                    held.push(i);
                }
                if p.processing == w.0 {
                    processing.push(i);
                }
            }
        }
        (held, processing)
    }

    /// Every task with its slot, in slot order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u32, &Task)> {
        self.slots.iter().enumerate().filter_map(|(i, s)| s.task.as_ref().map(|t| (i as u32, t)))
    }
}

#[cfg(test)]
mod tests {
    use shoal_graph::Token;

    use super::*;

    fn task(n: u64) -> Task {
        Task::new(Key::scalar("t", Token(u128::from(n))), 1, Vec::new().into(), 0, n as u32)
    }

    /// Every task pays for its slot's size in memory and cache misses: a
    /// change that grows it should be a decision, not an accident.
    #[test]
    fn a_slot_takes_168_bytes() {
        assert_eq!(std::mem::size_of::<Slot>(), 168);
    }

    /// Forgotten tasks leave their index entries behind: keys forgotten
    /// and added again, in and out of their old slots, are still found
    /// exactly, and the index stays within a small multiple of the tasks.
    #[test]
    fn keys_are_found_while_forgotten_entries_linger() {
        let mut table = TaskTable::default();
        let mut live: Vec<(u64, u32)> = Vec::new();
        let mut x = 99u64;
        for round in 0..20_000u64 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            if live.len() > 50 && (x >> 40) % 2 == 0 {
                let (n, i) = live.swap_remove(((x >> 20) as usize) % live.len());
                assert!(table.remove(i).is_some());
                assert_eq!(table.find(&task(n).key), None);
            } else {
                // Half of the new tasks reuse a recently forgotten key.
                let n = if (x >> 30) % 2 == 0 { round % 64 } else { round };
                if live.iter().any(|(m, _)| *m == n) {
                    continue;
                }
                live.push((n, table.insert(task(n))));
            }
            assert_eq!(table.len(), live.len());
            assert!(table.index.len() <= 8 * live.len() + 128, "index of {} for {}", table.index.len(), live.len());
        }
        for (n, i) in live {
            assert_eq!(table.find(&task(n).key), Some(i));
        }
    }
}
