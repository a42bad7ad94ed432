//! The scheduler's tasks: records in a slab, found by key through an index.

use std::hash::BuildHasher;

use shoal_graph::{Key, KeyBuildHasher};
use shoal_proto::{ArgMsg, ClientId, TaskId, WorkerId};
use smallvec::SmallVec;

use crate::idlist::IdList;
use crate::ids::Slot;
use crate::index::{KeyIndex, prefetch_line};
use crate::segmented::Segmented;
use crate::spill::{Marked, Spilled};
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
/// processing on and which worker holds its result (the workers, when
/// several hold it, are in a map beside it: see [`Spilled`]). A worker's
/// tasks are found by scanning it (when the worker dies, or to steal from it: rare
/// events), instead of keeping per-worker sets that every assignment,
/// completion and release would update at a random place in memory.
pub(crate) struct TaskTable {
    slots: Segmented<SlotEntry>,
    places: Vec<Place>,
    /// Results held on several workers: which ones.
    who_has: Spilled<WorkerId>,
    /// Futures held by several clients: which ones.
    holders: Spilled<ClientId>,
    /// By slot: arguments kept as submitted (see `Task::args_kept`). In
    /// segments, as the records are, so that growing it copies nothing.
    args: Segmented<Option<Box<[ArgMsg]>>>,
    /// Vacant slots, taken from the end: first those vacated lately, the
    /// most recent (still in cache) last, after `free[..sorted]`, which is
    /// in descending order, so that older ones are taken in address order.
    ///
    /// Taken in the order they were vacated, the slots of a graph forgotten
    /// all at once (in the order its cascade of forgetting walked it) would
    /// give the next graph's records scattered places: a cache miss each to
    /// write, where records filled in address order stream into memory.
    /// With the index's early sweep (see `TaskTable::insert`), this keeps
    /// the simulator's second million-task map-reduce on one scheduler at
    /// 370–420 ns a task to submit, as on a new scheduler, where taking
    /// slots in the order they were vacated costs 550.
    free: Vec<Slot>,
    sorted: usize,
    index: KeyIndex,
    /// Tasks in the table (the index also holds entries of forgotten ones).
    live: usize,
    /// Arguments of tasks just forgotten, freed in batches: a forgotten
    /// task's arguments (a separate allocation, last read when it was
    /// submitted) are a cache miss to free, and freeing them at once
    /// would stall the cascade of forgetting on each. Here their lines
    /// are asked for as the task is forgotten and freed some tasks later,
    /// when they have arrived.
    dying_args: Vec<Box<[ArgMsg]>>,
    /// By slot: the slot is vacant and the index still has the entry of
    /// its last task (under `SlotEntry::hash`).
    stale: Vec<bool>,
}

impl Default for TaskTable {
    fn default() -> TaskTable {
        TaskTable {
            slots: Segmented::default(),
            places: Vec::new(),
            who_has: Spilled::default(),
            holders: Spilled::default(),
            args: Segmented::default(),
            free: Vec::new(),
            sorted: 0,
            index: KeyIndex::default(),
            live: 0,
            stale: Vec::new(),
            dying_args: Vec::with_capacity(DYING_ARGS),
        }
    }
}

const NOWHERE: u32 = u32::MAX;

/// Index entries beyond four per task that are left until the index is
/// full (see `TaskTable::insert`): a sweep reads the whole index, so small
/// ones are not swept early.
const STALE_SLACK: usize = 1 << 16;

/// Slots vacated lately that are taken most recent first, while no more
/// than this many (half a megabyte of records: in cache still).
const RECENT_VACANT: usize = 4096;

/// How many forgotten tasks' arguments wait to be freed (see
/// `TaskTable::dying_args`): enough for their cache misses to overlap.
const DYING_ARGS: usize = 32;

/// Where a task is, by worker number (`NOWHERE`: none), in eight bytes:
/// a worker's loss scans the whole array.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Place {
    processing: u32,
    /// The worker holding its result, [`Marked::NONE`] or
    /// [`Marked::SEVERAL`] (then they are in `TaskTable::who_has`).
    holder: WorkerId,
}

const EMPTY: Place = Place { processing: NOWHERE, holder: WorkerId::NONE };

fn processing_of(task: &Task) -> u32 {
    match task.state {
        TaskState::Processing(w) => w.0,
        _ => NOWHERE,
    }
}

/// Generation and hash in front of the record's hot fields (see [`Task`]),
/// 128 bytes aligned to the cache lines they fill.
#[derive(Default)]
#[repr(C, align(64))]
struct SlotEntry {
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

    pub(crate) fn get(&self, i: Slot) -> Option<&Task> {
        self.slots.get(i.index()).and_then(|s| s.task.as_ref())
    }

    /// Starts loading task `i`'s record into the cache, without waiting
    /// for it. Handling a burst of messages, the scheduler first asks for
    /// every record it is about to read: the cache misses then overlap
    /// instead of coming one after another (a record last touched when its
    /// task was submitted is far out in memory, and each miss costs some
    /// hundreds of nanoseconds).
    pub(crate) fn prefetch(&self, i: Slot) {
        let Some(slot) = self.slots.get(i.index()) else { return };
        let start = (slot as *const SlotEntry).cast::<i8>();
        for line in (0..std::mem::size_of::<SlotEntry>()).step_by(64) {
            prefetch_line(start.wrapping_add(line));
        }
    }

    /// Starts loading the records of task `i`'s inputs (see
    /// [`TaskTable::prefetch`]), once its own is in cache.
    pub(crate) fn prefetch_deps(&self, i: Slot) {
        if let Some(t) = self.get(i) {
            t.deps.iter().for_each(|&d| self.prefetch(d));
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

    pub(crate) fn get_mut(&mut self, i: Slot) -> Option<&mut Task> {
        self.slots.get_mut(i.index()).and_then(|s| s.task.as_mut())
    }

    /// The slot of the task with this key.
    pub(crate) fn find(&self, key: &Key) -> Option<Slot> {
        let hash = hash_of(key);
        let slots = &self.slots;
        self.index.find(hash, |i| slots[i.index()].task.as_ref().is_some_and(|t| t.key == *key))
    }

    /// The slot of a task a worker names by id and key. A stale id (its
    /// task was forgotten, perhaps submitted again since) or one that does
    /// not go with the key falls back to the key.
    pub(crate) fn resolve(&self, id: TaskId, key: &Key) -> Option<Slot> {
        let current = self
            .slots
            .get(Slot::of(id).index())
            .filter(|s| s.generation == id.generation())
            .and_then(|s| s.task.as_ref())
            .is_some_and(|t| t.key == *key);
        if current { Some(Slot::of(id)) } else { self.find(key) }
    }

    /// The id of the task in a slot.
    pub(crate) fn id(&self, i: Slot) -> TaskId {
        TaskId::new(i.0, self.slots.get(i.index()).map_or(0, |s| s.generation))
    }

    /// Adds a task whose key is not in the table; returns its slot.
    pub(crate) fn insert(&mut self, task: Task) -> Slot {
        let hash = hash_of(&task.key);
        let i = match self.take_vacant() {
            Some(i) => i,
            None => {
                self.slots.push(SlotEntry { generation: 0, hash, task: None });
                self.places.push(EMPTY);
                self.args.push(None);
                self.stale.push(false);
                Slot((self.slots.len() - 1) as u32)
            }
        };
        self.places[i.index()].processing = processing_of(&task);
        let slot = &mut self.slots[i.index()];
        let reuse = std::mem::replace(&mut self.stale[i.index()], false) && slot.hash == hash;
        slot.hash = hash;
        slot.task = Some(task);
        self.live += 1;
        if !reuse {
            if self.index.len() >= 4 * (self.live + STALE_SLACK) {
                // Mostly entries of forgotten tasks (a graph forgotten
                // whole): the next graph's look-ups would probe an index
                // sized for the last one, missing the cache at each.
                self.sweep();
            } else if self.index.is_full() {
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

    /// A vacant slot: one vacated lately while they are few enough to be
    /// in cache, else the first in address order.
    fn take_vacant(&mut self) -> Option<Slot> {
        let recent = self.free.len() - self.sorted;
        if recent > RECENT_VACANT.max(self.sorted / 2) {
            // Each ordering is paid for by at least a third as many slots
            // vacated since the one before.
            self.order_vacant();
        }
        let i = self.free.pop()?;
        self.sorted = self.sorted.min(self.free.len());
        Some(i)
    }

    /// Puts every vacant slot in descending order, through a bitmap of the
    /// slots: linear, where sorting a million of them (callgrind, the
    /// simulator's second graph) costs 130 instructions per task.
    fn order_vacant(&mut self) {
        let mut vacant = vec![0u64; self.slots.len().div_ceil(64)];
        for &i in &self.free {
            vacant[i.index() / 64] |= 1 << (i.0 % 64);
        }
        self.free.clear();
        for (word, &bits) in vacant.iter().enumerate().rev() {
            let mut bits = bits;
            while bits != 0 {
                let top = 63 - bits.leading_zeros();
                self.free.push(Slot(word as u32 * 64 + top));
                bits &= !(1 << top);
            }
        }
        self.sorted = self.free.len();
    }

    /// Forgets a task, returning its dependencies; its slot goes to a later
    /// task under a new generation. Its index entry stays (see the type's
    /// notes).
    pub(crate) fn remove(&mut self, i: Slot) -> Option<IdList<Slot>> {
        let slot = self.slots.get_mut(i.index())?;
        // The arguments are freed a little later, with others (see
        // `dying_args`); the rest of the record is in cache already.
        let mut task = slot.task.take()?;
        if task.holder == ClientId::SEVERAL {
            self.holders.take(i, &mut task.holder);
        }
        let place = &mut self.places[i.index()];
        if place.holder == WorkerId::SEVERAL {
            self.who_has.take(i, &mut place.holder);
        }
        let args = if task.args_kept { self.args[i.index()].take() } else { None };
        if let Some(args) = args {
            let start = args.as_ptr().cast::<i8>();
            for line in (0..std::mem::size_of_val(&*args)).step_by(64) {
                prefetch_line(start.wrapping_add(line));
            }
            if self.dying_args.len() == DYING_ARGS {
                self.dying_args.clear();
            }
            self.dying_args.push(args);
        }
        slot.generation = slot.generation.wrapping_add(1);
        self.places[i.index()] = EMPTY;
        self.stale[i.index()] = true;
        self.live -= 1;
        self.free.push(i);
        Some(task.deps)
    }

    /// Drops the index entries that match no task: those of vacant slots,
    /// of slots taken since by a key of another hash, and repeats (a slot
    /// that got a key of its old hash back after holding another).
    fn sweep(&mut self) {
        let (slots, stale) = (&self.slots, &self.stale);
        let mut kept = vec![false; slots.len()];
        // Room for as many tasks again before the next sweep.
        self.index.rebuild(2 * self.live, |i, h| {
            // A stale slot is vacant: known without reading it, where the
            // entries (in hash order) would read the slots at random, a
            // cache miss each (a graph forgotten whole leaves an entry a
            // task: 1.0 more misses per task of the next graph in
            // callgrind).
            if stale[i.index()] {
                return false;
            }
            let s = &slots[i.index()];
            let current = s.task.is_some() && s.hash == h && !kept[i.index()];
            if current {
                kept[i.index()] = true;
            }
            current
        });
        self.stale.fill(false);
    }

    /// Changes task `i`'s state, and its place when it starts or stops
    /// processing; returns the state it had.
    pub(crate) fn set_state(&mut self, i: Slot, state: TaskState) -> Option<TaskState> {
        let t = self.slots.get_mut(i.index())?.task.as_mut()?;
        let old = std::mem::replace(&mut t.state, state);
        if matches!(old, TaskState::Processing(_)) || matches!(state, TaskState::Processing(_)) {
            self.places[i.index()].processing = processing_of(t);
        }
        Some(old)
    }

    /// Whether the array of places agrees with the record.
    pub(crate) fn place_is_current(&self, i: Slot) -> bool {
        self.get(i).is_some_and(|t| self.places[i.index()].processing == processing_of(t))
    }

    /// The workers holding task `i`'s result.
    pub(crate) fn who_has(&self, i: Slot) -> &[WorkerId] {
        match self.places.get(i.index()) {
            Some(place) => self.who_has.get(i, &place.holder),
            None => &[],
        }
    }

    pub(crate) fn add_who_has(&mut self, i: Slot, w: WorkerId) {
        if let Some(place) = self.places.get_mut(i.index()) {
            self.who_has.push(i, &mut place.holder, w);
        }
    }

    /// Keeps the holders of task `i`'s result for which `keep` is true.
    pub(crate) fn retain_who_has(&mut self, i: Slot, keep: impl FnMut(&WorkerId) -> bool) {
        if let Some(place) = self.places.get_mut(i.index()) {
            self.who_has.retain(i, &mut place.holder, keep);
        }
    }

    /// Empties the list of workers holding task `i`'s result, returning it.
    pub(crate) fn take_who_has(&mut self, i: Slot) -> SmallVec<[WorkerId; 2]> {
        match self.places.get_mut(i.index()) {
            Some(place) => self.who_has.take(i, &mut place.holder),
            None => SmallVec::new(),
        }
    }

    /// The clients holding task `i`'s future.
    pub(crate) fn holders(&self, i: Slot) -> &[ClientId] {
        match self.get(i) {
            Some(t) => self.holders.get(i, &t.holder),
            None => &[],
        }
    }

    pub(crate) fn add_holder(&mut self, i: Slot, c: ClientId) {
        if let Some((t, holders)) = self.task_and_holders(i) {
            holders.push(i, &mut t.holder, c);
        }
    }

    /// Removes one hold of `c` on task `i`; whether it had one.
    pub(crate) fn remove_holder(&mut self, i: Slot, c: ClientId) -> bool {
        self.task_and_holders(i).is_some_and(|(t, holders)| holders.remove_one(i, &mut t.holder, c))
    }

    /// Keeps the holds on task `i` for which `keep` is true.
    pub(crate) fn retain_holders(&mut self, i: Slot, keep: impl FnMut(&ClientId) -> bool) {
        if let Some((t, holders)) = self.task_and_holders(i) {
            holders.retain(i, &mut t.holder, keep);
        }
    }

    /// Task `i`'s record and the lists of several holders, borrowed
    /// together to change its holders.
    fn task_and_holders(&mut self, i: Slot) -> Option<(&mut Task, &mut Spilled<ClientId>)> {
        let t = self.slots.get_mut(i.index())?.task.as_mut()?;
        Some((t, &mut self.holders))
    }

    /// Task `i`'s arguments as submitted, if they are kept (`None`: they
    /// are its dependencies' keys, see `Task::args_kept`).
    pub(crate) fn args(&self, i: Slot) -> Option<&[ArgMsg]> {
        if !self.get(i)?.args_kept {
            return None;
        }
        self.args.get(i.index())?.as_deref()
    }

    /// Keeps task `i`'s arguments as submitted.
    pub(crate) fn keep_args(&mut self, i: Slot, args: Box<[ArgMsg]>) {
        if let Some(t) = self.get_mut(i) {
            t.args_kept = true;
            self.args[i.index()] = Some(args);
        }
    }

    /// Every processing task with its worker, in slot order.
    pub(crate) fn processing(&self) -> impl Iterator<Item = (Slot, WorkerId)> + '_ {
        self.places
            .iter()
            .enumerate()
            .filter(|(_, p)| p.processing != NOWHERE)
            .map(|(i, p)| (Slot(i as u32), WorkerId(p.processing)))
    }

    /// A worker's tasks, in slot order, in one scan: those whose result it
    /// holds, and those it is processing.
    pub(crate) fn on_worker(&self, w: WorkerId) -> (Vec<Slot>, Vec<Slot>) {
        let mut held = Vec::new();
        let mut processing = Vec::new();
        let holds = |p: &Place| (p.holder == w) | (p.holder == WorkerId::SEVERAL);
        let concerns = |p: &Place| holds(p) | (p.processing == w.0);
        // Eight places at a time without a branch (the compiler makes it a
        // few vector compares): a worker has a sliver of the tasks.
        for (c, chunk) in self.places.chunks(8).enumerate() {
            if !chunk.iter().fold(false, |any, p| any | concerns(p)) {
                continue;
            }
            for (k, p) in chunk.iter().enumerate() {
                let i = Slot((c * 8 + k) as u32);
                if holds(p) && self.who_has(i).contains(&w) {
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
    pub(crate) fn iter(&self) -> impl Iterator<Item = (Slot, &Task)> {
        self.slots.iter().enumerate().filter_map(|(i, s)| s.task.as_ref().map(|t| (Slot(i as u32), t)))
    }
}

#[cfg(test)]
mod tests {
    use shoal_graph::Token;

    use super::*;
    use crate::ids::FuncId;

    fn task(n: u64) -> Task {
        Task::new(Key::scalar("t", Token(u128::from(n))), FuncId(1), 0, n as u32)
    }

    /// Every task pays for its slot's size in memory and cache misses: a
    /// change that grows it should be a decision, not an accident.
    #[test]
    fn a_slot_is_two_cache_lines() {
        assert_eq!(std::mem::size_of::<SlotEntry>(), 128);
        assert_eq!(std::mem::align_of::<SlotEntry>(), 64);
    }

    /// Slots vacated lately are taken back most recent first; a mass of
    /// them (a graph forgotten whole, in its own order) in address order.
    #[test]
    fn vacant_slots_are_taken_recent_first_or_in_address_order() {
        let mut table = TaskTable::default();
        let slots: Vec<Slot> = (0..20_000).map(|n| table.insert(task(n))).collect();
        for i in [7, 3, 9].map(Slot) {
            table.remove(i);
        }
        let again: Vec<Slot> = (0..3).map(|n| table.insert(task(100_000 + n))).collect();
        assert_eq!(again, [9, 3, 7].map(Slot));
        // Forgotten in a scattered order, as a cascade of forgetting goes.
        let mut order: Vec<Slot> = slots.iter().copied().filter(|i| i.0 % 2 == 0).collect();
        order.sort_by_key(|&i| (i.0.wrapping_mul(2_654_435_761), i));
        for &i in &order {
            table.remove(i);
        }
        let taken: Vec<Slot> = (0..order.len() as u64).map(|n| table.insert(task(200_000 + n))).collect();
        order.sort_unstable();
        assert_eq!(taken, order);
    }

    /// An index left mostly to forgotten tasks' entries is swept at the
    /// next insert, back to the size the tasks there are need.
    #[test]
    fn an_index_of_forgotten_tasks_shrinks_when_tasks_come_again() {
        let mut table = TaskTable::default();
        let slots: Vec<Slot> = (0..300_000).map(|n| table.insert(task(n))).collect();
        let full = table.index.entries_len();
        for &i in &slots {
            table.remove(i);
        }
        assert_eq!(table.index.len(), 300_000, "forgetting leaves the entries");
        let i = table.insert(task(1_000_000));
        assert!(table.index.len() <= 1, "{} entries after the sweep", table.index.len());
        assert!(table.index.entries_len() < full / 100, "index of {} entries for one task", table.index.entries_len());
        assert_eq!(table.find(&task(1_000_000).key), Some(i));
        assert_eq!(table.find(&task(5).key), None);
    }

    /// Forgotten tasks leave their index entries behind: keys forgotten
    /// and added again, in and out of their old slots, are still found
    /// exactly, and the index stays within a small multiple of the tasks.
    #[test]
    fn keys_are_found_while_forgotten_entries_linger() {
        let mut table = TaskTable::default();
        let mut live: Vec<(u64, Slot)> = Vec::new();
        let mut x = 99u64;
        for round in 0..20_000u64 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            if live.len() > 50 && (x >> 40).is_multiple_of(2) {
                let (n, i) = live.swap_remove(((x >> 20) as usize) % live.len());
                assert!(table.remove(i).is_some());
                assert_eq!(table.find(&task(n).key), None);
            } else {
                // Half of the new tasks reuse a recently forgotten key.
                let n = if (x >> 30).is_multiple_of(2) { round % 64 } else { round };
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
