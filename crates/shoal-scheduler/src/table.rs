//! The scheduler's tasks: records in a slab, found by key through an index.

use std::hash::BuildHasher;

use hashbrown::HashTable;
use shoal_graph::{Key, KeyBuildHasher};
use shoal_proto::{TaskId, WorkerId};
use smallvec::SmallVec;

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
/// (so more of it stays in cache), growing it reads no task record, and
/// removing a task compares slot numbers, not keys.
///
/// Beside the records, a dense array says which worker each task is
/// processing on and which worker holds its result. A worker's tasks are
/// found by scanning it (when the worker dies, or to steal from it: rare
/// events), instead of keeping per-worker sets that every assignment,
/// completion and release would update at a random place in memory.
#[derive(Default)]
pub(crate) struct TaskTable {
    slots: Vec<Slot>,
    places: Vec<Place>,
    /// Vacant slots, the most recently vacated (still in cache) last.
    free: Vec<u32>,
    index: HashTable<(u32, u32)>,
}

const NOWHERE: u32 = u32::MAX;

/// Where a task is, by worker number (`NOWHERE`: none).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Place {
    processing: u32,
    /// The first worker in `who_has`.
    holder: u32,
    /// `who_has` has more workers than the first.
    replicated: bool,
}

const EMPTY: Place = Place { processing: NOWHERE, holder: NOWHERE, replicated: false };

impl Place {
    fn of(task: &Task) -> Place {
        Place {
            processing: match task.state {
                TaskState::Processing(w) => w.0,
                _ => NOWHERE,
            },
            holder: task.who_has.first().map_or(NOWHERE, |w| w.0),
            replicated: task.who_has.len() > 1,
        }
    }
}

struct Slot {
    /// Bumped each time the slot is vacated, so old ids stop matching.
    generation: u32,
    task: Option<Task>,
}

fn hash_of(key: &Key) -> u32 {
    KeyBuildHasher::default().hash_one(key) as u32
}

/// The index's hash of a stored one: hashbrown takes bucket numbers from the
/// low bits and tags from the top seven, and both come from the 32 stored.
fn spread(hash: u32) -> u64 {
    u64::from(hash) | (u64::from(hash) << 32)
}

impl TaskTable {
    /// Tasks in the table.
    pub(crate) fn len(&self) -> usize {
        self.index.len()
    }

    pub(crate) fn get(&self, i: u32) -> Option<&Task> {
        self.slots.get(i as usize).and_then(|s| s.task.as_ref())
    }

    pub(crate) fn get_mut(&mut self, i: u32) -> Option<&mut Task> {
        self.slots.get_mut(i as usize).and_then(|s| s.task.as_mut())
    }

    /// The slot of the task with this key.
    pub(crate) fn find(&self, key: &Key) -> Option<u32> {
        let hash = hash_of(key);
        let slots = &self.slots;
        self.index
            .find(spread(hash), |&(i, h)| h == hash && slots[i as usize].task.as_ref().is_some_and(|t| t.key == *key))
            .map(|&(i, _)| i)
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
            Some(i) => {
                self.slots[i as usize].task = Some(task);
                i
            }
            None => {
                self.slots.push(Slot { generation: 0, task: Some(task) });
                self.places.push(EMPTY);
                (self.slots.len() - 1) as u32
            }
        };
        self.update_place(i);
        self.index.insert_unique(spread(hash), (i, hash), |&(_, h)| spread(h));
        i
    }

    /// Forgets a task, returning its dependencies; its slot goes to a later
    /// task under a new generation. The record is dropped where it is, not
    /// moved out.
    pub(crate) fn remove(&mut self, i: u32) -> Option<SmallVec<[u32; 4]>> {
        let slot = self.slots.get_mut(i as usize)?;
        let task = slot.task.as_mut()?;
        let deps = std::mem::take(&mut task.deps);
        let hash = hash_of(&task.key);
        slot.task = None;
        slot.generation = slot.generation.wrapping_add(1);
        self.places[i as usize] = EMPTY;
        if let Ok(entry) = self.index.find_entry(spread(hash), |&(s, _)| s == i) {
            entry.remove();
        }
        self.free.push(i);
        Some(deps)
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
        for (i, p) in self.places.iter().enumerate() {
            let i = i as u32;
            if (p.holder == w.0 || p.replicated) && self.get(i).is_some_and(|t| t.who_has.contains(&w)) {
                held.push(i);
            }
            if p.processing == w.0 {
                processing.push(i);
            }
        }
        (held, processing)
    }

    /// Every task with its slot, in slot order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u32, &Task)> {
        self.slots.iter().enumerate().filter_map(|(i, s)| s.task.as_ref().map(|t| (i as u32, t)))
    }
}
