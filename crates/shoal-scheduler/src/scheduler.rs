//! The scheduler state machine.
//!
//! Every entry point is an `on_*` function: it changes the state and sends
//! what follows through a [`Comm`], batched per peer at the end of the event.
//! The clock comes in as an argument (microseconds). Nothing here touches a
//! socket, a thread or the system clock, so the same code runs under the
//! network shell, in unit tests and in the simulator.

use std::sync::Arc;

use rustc_hash::{FxHashMap, FxHashSet};
use shoal_graph::{Key, Prefix, Token};
use shoal_proto::{
    ArgList, ArgMsg, ClientId, FinishedMsg, FromScheduler, FromWorker, INLINE_LIMIT, INLINE_MESSAGE_BUDGET, KeysRef,
    SCATTERED_FUNC, TaskErrorMsg, TaskId, TaskMsg, ToScheduler, WorkerId, WorkerInfo,
};
use smallvec::SmallVec;

use crate::assigned::Assigned;
use crate::comm::Comm;
use crate::idlist::IdList;
use crate::load::LoadIndex;
use crate::outbox::Batches;
use crate::queue::ReadyQueue;
use crate::spill::Marked;
use crate::table::TaskTable;
use crate::task::{Busy, Extra, Task, TaskState, Worker};

// Client operations beyond submit (scatter, restart, paused workers, tasks
// no worker may run), kept apart from the placement core.
mod ops;
mod placement;
mod release;

/// Tunables of a scheduler.
#[derive(Clone, Debug)]
pub struct SchedulerConfig {
    /// A worker not heard from for this long is lost (microseconds).
    pub worker_timeout_us: u64,
    /// Workers that may die running one task before it fails (Dask's
    /// `allowed-failures`).
    pub allowed_failures: u32,
    /// Estimated duration of a task of an unseen group (microseconds).
    pub unknown_duration_us: u64,
    /// How much estimated work a worker gets queued per thread
    /// (microseconds): enough to hide a round trip, little enough to balance.
    pub target_queue_us: u64,
    /// Bytes per microsecond assumed between workers, to weigh transfers.
    pub bandwidth_bytes_per_us: u64,
    /// A task that no connected worker may run (resources, restrictions)
    /// fails after waiting this long for one to join (microseconds); `None`
    /// waits for ever, as Dask does by default. Either way its holders hear
    /// why at once ([`FromScheduler::NoWorker`]).
    pub no_worker_timeout_us: Option<u64>,
}

impl Default for SchedulerConfig {
    fn default() -> SchedulerConfig {
        SchedulerConfig {
            worker_timeout_us: 10_000_000,
            allowed_failures: 3,
            unknown_duration_us: 500,
            target_queue_us: 20_000,
            bandwidth_bytes_per_us: 1_000,
            no_worker_timeout_us: None,
        }
    }
}

#[derive(Default)]
struct Outbox {
    /// Tasks assigned, by slot: their messages are borrowed from the
    /// records when sent.
    compute: Batches<WorkerId, u32>,
    release: Batches<WorkerId, Key>,
    steal: Batches<WorkerId, Key>,
    clients: Batches<ClientId, FromScheduler>,
}

/// The slots of a burst's finished tasks, in the order they are handled,
/// and how far handling has got: each completion asks for the records the
/// ones a few places later will read, so that their cache misses (the
/// records were last touched when the tasks were sent, long before)
/// overlap with the work, a bounded distance ahead. Prefetching the whole
/// burst up front instead lets a large burst's first records leave the
/// cache before they are read.
#[derive(Default)]
struct Lookahead {
    slots: Vec<u32>,
    next: usize,
}

impl Lookahead {
    /// Records are asked for this many completions ahead, their inputs'
    /// and dependents' half as many (by then the record has arrived), and
    /// the inputs of the dependents that the completion makes ready half as
    /// many again (they are read to place those dependents).
    const RECORDS: usize = 16;
    const DEPENDENTS: usize = 8;
    const SIBLINGS: usize = 4;

    /// The lookahead over a burst's completions, with the first ones'
    /// records and dependents asked for already.
    fn new(msgs: &[(WorkerId, FromWorker)], tasks: &TaskTable) -> Lookahead {
        let finished = msgs.iter().flat_map(|(_, m)| match m {
            FromWorker::Finished(done) => done.as_slice(),
            _ => &[],
        });
        let slots: Vec<u32> = finished.map(|f| f.id.slot()).collect();
        slots.iter().take(Self::RECORDS).for_each(|&i| tasks.prefetch(i));
        slots.iter().take(Self::DEPENDENTS).for_each(|&i| Self::prefetch_neighbours(tasks, i));
        slots.iter().take(Self::SIBLINGS).for_each(|&i| Self::prefetch_siblings(tasks, i));
        Lookahead { slots, next: 0 }
    }

    /// Before the next completion is handled.
    fn step(&mut self, tasks: &TaskTable) {
        let n = self.next;
        self.next += 1;
        if let Some(&i) = self.slots.get(n + Self::RECORDS) {
            tasks.prefetch(i);
        }
        if let Some(&i) = self.slots.get(n + Self::DEPENDENTS) {
            Self::prefetch_neighbours(tasks, i);
        }
        if let Some(&i) = self.slots.get(n + Self::SIBLINGS) {
            Self::prefetch_siblings(tasks, i);
        }
    }

    /// The records of task `i`'s inputs and dependents.
    fn prefetch_neighbours(tasks: &TaskTable, i: u32) {
        if let Some(t) = tasks.get(i) {
            t.deps.iter().chain(t.dependents.iter()).for_each(|&d| tasks.prefetch(d));
        }
    }

    /// The inputs of the dependents that task `i` is the last input of.
    fn prefetch_siblings(tasks: &TaskTable, i: u32) {
        let Some(t) = tasks.get(i) else { return };
        for d in t.dependents.iter().filter_map(|&d| tasks.get(d)) {
            if d.state == TaskState::Waiting && d.missing == 1 {
                d.deps.iter().for_each(|&s| tasks.prefetch(s));
            }
        }
    }
}

/// Calls `f` with each key a task's arguments name, in order, repeats
/// included. A plain loop: as a `flat_map` iterator it cost 70 more
/// instructions per task on the submission path.
fn for_each_input_key<'a>(args: &'a [ArgMsg], mut f: impl FnMut(&'a Key)) {
    for arg in args {
        match arg {
            ArgMsg::Key(k) => f(k),
            ArgMsg::List(ks) => ks.iter().for_each(&mut f),
            ArgMsg::Value(_) => {}
        }
    }
}

/// The number of [`SCATTERED_FUNC`].
const SCATTERED: u32 = 0;

/// The holder a fire-and-forget task gets in place of a client: it keeps
/// the task wanted until it has finished or failed. Clients are numbered
/// from 0 and never reach it.
const FOREVER: ClientId = ClientId(u32::MAX);

/// Counters describing the scheduler now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SchedulerStats {
    /// Tasks known (not forgotten).
    pub tasks: usize,
    /// Tasks in memory somewhere.
    pub in_memory: usize,
    /// Tasks queued or processing.
    pub active: usize,
    /// Connected workers.
    pub workers: usize,
    /// Tasks given to workers since start.
    pub assigned: u64,
}

/// Bytes of small results the scheduler keeps at most, all together (see
/// [`Scheduler::inline`]); past it, new ones are fetched from their holders.
const INLINE_KEPT_TOTAL: usize = 256 * 1024 * 1024;

/// The scheduler: tasks, workers, clients, and the rules between them.
pub struct Scheduler {
    config: SchedulerConfig,
    tasks: TaskTable,
    workers: FxHashMap<WorkerId, Worker>,
    /// By worker number; one entry per worker ever registered.
    busy: Vec<Busy>,
    loads: LoadIndex,
    /// Tasks asked back from the worker processing them, not answered for.
    stealing: FxHashSet<u32>,
    clients: FxHashSet<ClientId>,
    next_worker: u32,
    next_client: u32,
    next_seq: u32,
    queued: ReadyQueue,
    resource_names: Vec<String>,
    groups: FxHashMap<Prefix, u32>,
    /// Function names by number: a task record holds four bytes instead of
    /// a shared string, and forgetting it touches no reference count.
    /// Entry 0 is [`SCATTERED_FUNC`]. Few programs have more than a few
    /// hundred functions, so the names are kept for good.
    funcs: Vec<Arc<str>>,
    func_numbers: FxHashMap<Arc<str>, u32>,
    /// The group found last: tasks come in runs of one prefix, and
    /// comparing prefixes is comparing pointers, where `groups` hashes
    /// their text.
    last_group: Option<(Prefix, u32)>,
    durations: Vec<(u64, u64)>,
    outbox: Outbox,
    assigned: u64,
    /// Workers over their memory limit: they get no new tasks (they are out
    /// of the load index meanwhile, so placement never considers them).
    paused: FxHashSet<WorkerId>,
    /// Queued tasks no connected worker may run, with the tick time they
    /// were first seen stuck (`None` until the next tick), by id so that
    /// a slot reused meanwhile is not taken for the stuck task.
    stuck: FxHashMap<TaskId, Option<u64>>,
    /// Small results, by slot, of tasks in memory that other tasks were
    /// waiting for when they finished: they go out with those tasks'
    /// compute messages (see [`FinishedMsg::inline`]), and are dropped
    /// when no active task reads them any more or the task leaves memory.
    /// (A client holding the task gets it with the news that it finished,
    /// kept or not.)
    /// Each message carries at most [`INLINE_MESSAGE_BUDGET`] bytes of them,
    /// and all together they are at most [`INLINE_KEPT_TOTAL`].
    inline: FxHashMap<u32, Box<[u8]>>,
    /// Their total size.
    inline_bytes: usize,
    /// Bytes of inline results in this event's messages to clients, against
    /// [`INLINE_MESSAGE_BUDGET`].
    inline_to_clients: usize,
}

impl Scheduler {
    /// An empty scheduler.
    pub fn new(config: SchedulerConfig) -> Scheduler {
        Scheduler {
            config,
            tasks: TaskTable::default(),
            workers: FxHashMap::default(),
            busy: Vec::new(),
            loads: LoadIndex::default(),
            stealing: FxHashSet::default(),
            clients: FxHashSet::default(),
            next_worker: 0,
            next_client: 0,
            next_seq: 0,
            queued: ReadyQueue::default(),
            resource_names: Vec::new(),
            groups: FxHashMap::default(),
            funcs: vec![SCATTERED_FUNC.into()],
            func_numbers: std::iter::once((SCATTERED_FUNC.into(), SCATTERED)).collect(),
            last_group: None,
            durations: Vec::new(),
            outbox: Outbox::default(),
            assigned: 0,
            paused: FxHashSet::default(),
            stuck: FxHashMap::default(),
            inline: FxHashMap::default(),
            inline_bytes: 0,
            inline_to_clients: 0,
        }
    }

    // ----- events ---------------------------------------------------------

    /// A client connected; returns its id.
    pub fn on_client_connected(&mut self) -> ClientId {
        let id = ClientId(self.next_client);
        self.next_client += 1;
        self.clients.insert(id);
        id
    }

    /// A client went away: everything it held is released.
    pub fn on_client_disconnected(&mut self, client: ClientId, comm: &mut impl Comm) {
        if !self.clients.remove(&client) {
            return;
        }
        self.release_all_of(client);
        self.outbox.clients.discard(client);
        self.flush(comm);
    }

    /// A message from a client.
    pub fn on_client_message(&mut self, client: ClientId, msg: ToScheduler, comm: &mut impl Comm) {
        match msg {
            ToScheduler::Submit(tasks) => self.submit(client, tasks),
            ToScheduler::Release(keys) => self.release(client, &keys),
            ToScheduler::Cancel(keys) => {
                for key in keys {
                    if let Some(i) = self.tasks.find(&key) {
                        self.fail(i, TaskErrorMsg::Cancelled);
                    }
                }
            }
            ToScheduler::WhoHas(keys) => {
                let mut positions: FxHashMap<WorkerId, u32> = FxHashMap::default();
                let mut workers = Vec::new();
                let holders = keys
                    .into_iter()
                    .map(|k| {
                        let mut at = Vec::new();
                        if let Some(i) = self.tasks.find(&k) {
                            for w in self.tasks.who_has(i) {
                                let Some(worker) = self.workers.get(w) else { continue };
                                let position = *positions.entry(*w).or_insert_with(|| {
                                    workers.push(worker.info.clone());
                                    workers.len() as u32 - 1
                                });
                                at.push(position);
                            }
                        }
                        (k, at)
                    })
                    .collect();
                self.outbox.clients.to(client).push(FromScheduler::WhoHas { workers, holders });
            }
            ToScheduler::Info => {
                let info = self.workers.values().map(|w| w.info.clone()).collect();
                self.outbox.clients.to(client).push(FromScheduler::Info(info));
            }
            ToScheduler::Scatter(items) => self.scattered(client, items),
            ToScheduler::Restart => {
                self.restart(comm);
                return;
            }
            ToScheduler::FireAndForget(keys) => {
                for key in keys {
                    let Some(i) = self.tasks.find(&key) else { continue };
                    let settled = matches!(self.task(i).state, TaskState::Memory | TaskState::Erred);
                    if !settled && !self.tasks.holders(i).contains(&FOREVER) {
                        self.tasks.add_holder(i, FOREVER);
                    }
                }
            }
        }
        self.flush(comm);
    }

    /// The id the next registered worker gets (so a shell can route the
    /// messages sent during registration).
    pub fn next_worker_id(&self) -> WorkerId {
        WorkerId(self.next_worker)
    }

    /// A worker registered; returns the id it is known by from now on.
    pub fn on_worker_registered(&mut self, mut info: WorkerInfo, now_us: u64, comm: &mut impl Comm) -> WorkerId {
        let id = WorkerId(self.next_worker);
        self.next_worker += 1;
        info.id = id;
        let mut available = vec![0.0; self.resource_names.len()];
        for (name, amount) in &info.resources {
            let r = self.resource_index(name);
            if available.len() <= r as usize {
                available.resize(r as usize + 1, 0.0);
            }
            available[r as usize] += amount;
        }
        if self.busy.len() <= id.0 as usize {
            self.busy.resize(id.0 as usize + 1, Busy::default());
        }
        self.busy[id.0 as usize] = Busy {
            occupancy_us: 0,
            processing: 0,
            threads: u64::from(info.threads.max(1)),
            address: Some(info.data_address.as_str().into()),
            last_seen_us: now_us,
        };
        let worker = Worker { info, available };
        self.loads.insert(id, 0);
        self.workers.insert(id, worker);
        self.flush(comm);
        id
    }

    /// A message from a worker.
    pub fn on_worker_message(&mut self, worker: WorkerId, mut msg: FromWorker, now_us: u64, comm: &mut impl Comm) {
        self.worker_message(worker, &mut msg, now_us, &mut Lookahead::default());
        self.flush(comm);
    }

    /// Messages from workers that arrived together, in order, answered with
    /// one batch per peer: the end-of-event work (handing queued tasks out,
    /// sending) is done once for the burst instead of once per message, and
    /// workers get their new tasks in fewer, larger messages.
    pub fn on_worker_messages(&mut self, mut msgs: Vec<(WorkerId, FromWorker)>, now_us: u64, comm: &mut impl Comm) {
        let mut lookahead = Lookahead::new(&msgs, &self.tasks);
        // Read where they lie, what is kept taken out: moved out whole,
        // each message and each completion in it was copied (76
        // instructions a task in all).
        for (worker, msg) in &mut msgs {
            self.worker_message(*worker, msg, now_us, &mut lookahead);
        }
        self.flush(comm);
    }

    fn worker_message(&mut self, worker: WorkerId, msg: &mut FromWorker, now_us: u64, lookahead: &mut Lookahead) {
        let Some(b) = Busy::of_mut(&mut self.busy, worker) else {
            return;
        };
        b.last_seen_us = now_us;
        match msg {
            FromWorker::Register(_) => {}
            FromWorker::Heartbeat { memory } => {
                if let Some(w) = self.workers.get_mut(&worker) {
                    w.info.memory = *memory;
                }
            }
            FromWorker::Paused(paused) => self.set_paused(worker, *paused),
            FromWorker::Finished(done) => {
                for f in done.iter_mut() {
                    lookahead.step(&self.tasks);
                    self.finished(worker, f);
                }
            }
            FromWorker::Failed { key, message } => {
                if let Some(i) = self.tasks.find(key)
                    && self.task(i).state == TaskState::Processing(worker)
                {
                    self.unassign(i, worker);
                    // Off the worker's books before anything else: it has
                    // dropped the task already.
                    self.set_state(i, TaskState::Queued);
                    if self.task(i).retries_left() > 0 {
                        self.task_mut(i).extra_mut().retries_left -= 1;
                        self.place(i);
                    } else {
                        self.fail(i, TaskErrorMsg::Failed { message: std::mem::take(message) });
                    }
                }
            }
            FromWorker::MissingData { key, missing } => {
                // The scheduler's map of who holds what was stale: believe the
                // worker, and run the task again once its inputs exist.
                for m in missing {
                    let Some(d) = self.tasks.find(m) else { continue };
                    self.tasks.retain_who_has(d, |x| *x == worker);
                    if self.task(d).state == TaskState::Memory && self.tasks.who_has(d).is_empty() {
                        self.data_lost(d);
                    }
                }
                if let Some(i) = self.tasks.find(key)
                    && self.task(i).state == TaskState::Processing(worker)
                {
                    self.unassign(i, worker);
                    self.set_state(i, TaskState::Queued);
                    let missing =
                        self.task(i).deps.iter().filter(|&&d| self.task(d).state != TaskState::Memory).count();
                    if missing > 0 {
                        self.task_mut(i).missing = missing as u32;
                        self.set_state(i, TaskState::Waiting);
                    } else {
                        self.place(i);
                    }
                }
            }
            FromWorker::Stolen(keys) => self.stolen(worker, keys),
        }
    }

    /// A worker is gone (its connection closed, or it stopped answering).
    /// Its running tasks run elsewhere; results only it held are recomputed
    /// if anything still needs them.
    pub fn on_worker_lost(&mut self, worker: WorkerId, comm: &mut impl Comm) {
        if self.workers.remove(&worker).is_none() {
            return;
        }
        if let Some(b) = self.busy.get_mut(worker.0 as usize) {
            *b = Busy::default();
        }
        self.loads.remove(worker);
        self.paused.remove(&worker);
        self.outbox.compute.discard(worker);
        self.outbox.release.discard(worker);
        self.outbox.steal.discard(worker);
        // Lost results first: a task put back in the queue below must not be
        // placed as if an input that died with this worker still existed.
        let (held, processing) = self.tasks.on_worker(worker);
        for i in held {
            if self.tasks.get(i).is_none() {
                continue;
            }
            self.tasks.retain_who_has(i, |h| *h != worker);
            if self.task(i).state == TaskState::Memory && self.tasks.who_has(i).is_empty() {
                self.data_lost(i);
            }
        }
        for i in processing {
            self.stealing.remove(&i);
            if self.tasks.get(i).is_none() || self.task(i).state != TaskState::Processing(worker) {
                continue;
            }
            let attempts = {
                let extra = self.task_mut(i).extra_mut();
                extra.lost += 1;
                extra.lost
            };
            if attempts > self.config.allowed_failures {
                self.set_state(i, TaskState::Queued);
                self.fail(i, TaskErrorMsg::WorkerLost { attempts });
            } else {
                self.set_state(i, TaskState::Queued);
                self.place(i);
            }
        }
        self.flush(comm);
    }

    /// Time passes: workers silent for too long are lost, idle workers steal.
    pub fn on_tick(&mut self, now_us: u64, comm: &mut impl Comm) {
        let timeout = self.config.worker_timeout_us;
        let mut silent: Vec<WorkerId> = self
            .workers
            .keys()
            .copied()
            .filter(|w| self.busy(*w).is_some_and(|b| now_us.saturating_sub(b.last_seen_us) > timeout))
            .collect();
        silent.sort_unstable();
        for w in silent {
            self.on_worker_lost(w, comm);
        }
        self.check_stuck(now_us);
        self.balance();
        self.flush(comm);
    }

    // ----- queries --------------------------------------------------------

    /// The state of a task, if the scheduler knows its key.
    pub fn task_state(&self, key: &Key) -> Option<TaskState> {
        self.tasks.find(key).map(|i| self.task(i).state)
    }

    /// Workers holding a task's result.
    pub fn who_has(&self, key: &Key) -> Vec<WorkerId> {
        self.tasks.find(key).map_or_else(Vec::new, |i| self.tasks.who_has(i).to_vec())
    }

    /// The connected workers.
    pub fn workers(&self) -> Vec<WorkerInfo> {
        let mut w: Vec<WorkerInfo> = self.workers.values().map(|w| w.info.clone()).collect();
        w.sort_by_key(|w| w.id);
        w
    }

    /// Counters.
    pub fn stats(&self) -> SchedulerStats {
        let mut s = SchedulerStats {
            tasks: self.tasks.len(),
            workers: self.workers.len(),
            assigned: self.assigned,
            ..Default::default()
        };
        for (_, t) in self.tasks.iter() {
            if t.state == TaskState::Memory {
                s.in_memory += 1;
            }
            if t.state.is_active() {
                s.active += 1;
            }
        }
        s
    }

    /// Checks the scheduler's internal bookkeeping; panics naming the first
    /// broken invariant. For tests and the simulator.
    ///
    /// # Panics
    /// When an invariant does not hold.
    pub fn check_invariants(&self) {
        for (i, t) in self.tasks.iter() {
            assert_eq!(self.tasks.find(&t.key), Some(i), "{}: key index", t.key);
            let missing = t.deps.iter().filter(|&&d| self.task(d).state != TaskState::Memory).count() as u32;
            let waiters = t.dependents.iter().filter(|&&d| self.task(d).state.is_active()).count() as u32;
            assert_eq!(t.waiters, waiters, "{}: waiters", t.key);
            for &d in &t.deps {
                assert!(self.task(d).dependents.contains(&i), "{}: dependent link from {}", t.key, self.task(d).key);
            }
            match t.state {
                TaskState::Waiting => assert!(missing > 0 && t.missing == missing, "{}: waiting on {missing}", t.key),
                TaskState::Queued | TaskState::Processing(_) => {
                    assert_eq!(missing, 0, "{}: runs before its inputs exist", t.key)
                }
                TaskState::Memory => assert!(!self.tasks.who_has(i).is_empty(), "{}: in memory nowhere", t.key),
                TaskState::Released | TaskState::Erred => {
                    assert!(self.tasks.who_has(i).is_empty(), "{}: data kept", t.key)
                }
            }
            if let TaskState::Processing(w) = t.state {
                assert!(self.workers.contains_key(&w), "{}: processing on {w}, which is gone", t.key);
            }
            for w in self.tasks.who_has(i) {
                assert!(self.workers.contains_key(w), "{}: held by {w}, which is gone", t.key);
            }
            assert!(self.tasks.place_is_current(i), "{}: place", t.key);
            if t.state == TaskState::Released && !t.wanted() {
                assert!(!t.dependents.is_empty(), "{}: released, unwanted and unneeded yet not forgotten", t.key);
            }
        }
        for &i in self.inline.keys() {
            let t = self.tasks.get(i).expect("a small result kept for a forgotten task");
            assert!(t.state == TaskState::Memory && t.waiters > 0, "{}: small result kept with no reader", t.key);
        }
        let mut processing: FxHashMap<WorkerId, usize> = FxHashMap::default();
        for (_, t) in self.tasks.iter() {
            if let TaskState::Processing(w) = t.state {
                *processing.entry(w).or_default() += 1;
            }
        }
        for w in self.workers.keys() {
            let counted = processing.get(w).copied().unwrap_or(0);
            assert_eq!(self.busy[w.0 as usize].processing, counted, "{w}: tasks processing");
            assert_eq!(self.loads.load(*w).is_some(), !self.paused.contains(w), "{w}: in the load index unless paused");
        }
    }

    // ----- transitions ----------------------------------------------------

    fn submit(&mut self, client: ClientId, mut msgs: Vec<TaskMsg>) {
        // The index entries of a task's key and inputs are cache misses
        // (a million tasks' index is 16 MB): ask for those of the task a
        // few places ahead while this one is handled, so they overlap.
        const AHEAD: usize = 8;
        for ahead in msgs.iter().take(AHEAD) {
            self.prefetch_msg(ahead);
        }
        for ahead in msgs.iter().take(AHEAD / 2) {
            self.prefetch_inputs(ahead);
        }
        // Each message is read where it lies, what the record keeps taken
        // out of it: moved out whole, a message (240 bytes) was copied
        // twice, 58 instructions a task.
        for k in 0..msgs.len() {
            if let Some(ahead) = msgs.get(k + AHEAD) {
                self.prefetch_msg(ahead);
            }
            if let Some(ahead) = msgs.get(k + AHEAD / 2) {
                self.prefetch_inputs(ahead);
            }
            let msg = &mut msgs[k];
            if let Some(i) = self.tasks.find(&msg.key) {
                // A key the cluster knows: share it, and bring it back if its
                // result was released.
                if msg.held && !self.tasks.holders(i).contains(&client) {
                    self.tasks.add_holder(i, client);
                }
                if self.task(i).state == TaskState::Released {
                    self.ensure_computed(i);
                } else if msg.held && matches!(self.task(i).state, TaskState::Erred | TaskState::Memory) {
                    // Decided before this client asked: it has not heard.
                    self.tell_outcome(i, client);
                }
                continue;
            }
            let i = self.insert_task(client, msg);
            self.wire(i, &mut msg.args);
        }
    }

    /// The records of a task's inputs, for `wire` to find them (their
    /// index entries were asked for by [`Scheduler::prefetch_msg`] a few
    /// tasks earlier).
    fn prefetch_inputs(&self, msg: &TaskMsg) {
        for_each_input_key(&msg.args, |k| self.tasks.prefetch_record_of(k));
    }

    fn prefetch_msg(&self, msg: &TaskMsg) {
        self.tasks.prefetch_key(&msg.key);
        for_each_input_key(&msg.args, |k| self.tasks.prefetch_key(k));
    }

    /// Adds a task's record, taking what it keeps out of the message;
    /// returns its slot.
    fn insert_task(&mut self, client: ClientId, msg: &mut TaskMsg) -> u32 {
        let group = self.group_index(msg.key.shared_prefix());
        let extra = if msg.resources.is_empty() && msg.workers.is_empty() && msg.retries == 0 {
            None
        } else {
            let resources = std::mem::take(&mut msg.resources)
                .into_iter()
                .map(|(name, amount)| (self.resource_index(&name), amount))
                .collect();
            let workers = std::mem::take(&mut msg.workers);
            Some(Box::new(Extra { resources, workers, retries_left: msg.retries, ..Extra::default() }))
        };
        let seq = self.next_seq;
        self.next_seq = seq.wrapping_add(1);
        let func = self.func_number(&msg.func);
        // Taken, not cloned: an indexed key (an array chunk's) would
        // allocate. What is left is a key of the same prefix, dropped with
        // the message.
        let blank = Key::scalar(msg.key.shared_prefix().clone(), Token(0));
        let key = std::mem::replace(&mut msg.key, blank);
        self.tasks.insert(Task {
            extra,
            holder: if msg.held { client } else { ClientId::NONE },
            group,
            ..Task::new(key, func, msg.priority, seq)
        })
    }

    /// Links a new task to its dependencies and starts it on its way.
    /// Its arguments are taken if the record keeps them.
    fn wire(&mut self, i: u32, args: &mut ArgList) {
        let mut deps: IdList<u32> = IdList::default();
        let mut unknown = None;
        // Whether each argument is one dependency's key, each once.
        let mut deps_only = true;
        // Inputs not in memory, and whether each is in memory or on its
        // way there (none released or failed).
        let mut missing = 0;
        let mut settled = true;
        for arg in args.iter() {
            let keys = match arg {
                ArgMsg::Key(k) => std::slice::from_ref(k),
                ArgMsg::List(ks) => {
                    deps_only = false;
                    ks.as_slice()
                }
                ArgMsg::Value(_) => {
                    deps_only = false;
                    &[]
                }
            };
            for k in keys {
                match self.tasks.find(k) {
                    Some(d) if !deps.contains(&d) => {
                        deps.push(d);
                        // Its record is in cache, read to compare keys.
                        let dep = self.task_mut(d);
                        dep.dependents.push(i);
                        match dep.state {
                            TaskState::Memory => {}
                            TaskState::Released | TaskState::Erred => settled = false,
                            _ => missing += 1,
                        }
                    }
                    Some(_) => deps_only = false,
                    None => unknown = Some(k.clone()),
                }
            }
        }
        if !deps_only || unknown.is_some() {
            self.tasks.keep_args(i, std::mem::take(args).into_vec().into_boxed_slice());
        }
        self.task_mut(i).deps = deps;
        if let Some(k) = unknown {
            self.fail(i, TaskErrorMsg::UnknownDependency(k));
        } else if settled && self.task(i).func != SCATTERED {
            // Every input computed or being computed: counted above,
            // without `ensure_computed`'s second look at each.
            self.start(i, missing);
        } else {
            self.ensure_computed(i);
        }
    }

    /// Queues a task whose inputs are all in memory, else makes it wait
    /// for the `missing` others.
    fn start(&mut self, i: u32, missing: u32) {
        self.task_mut(i).missing = missing;
        if missing == 0 {
            self.set_state(i, TaskState::Queued);
            self.place(i);
        } else {
            self.set_state(i, TaskState::Waiting);
        }
    }

    /// Makes a released task run again, with whatever of its inputs is
    /// missing (recursively, from the lineage).
    fn ensure_computed(&mut self, start: u32) {
        let mut stack: SmallVec<[u32; 8]> = smallvec::smallvec![start];
        while let Some(i) = stack.pop() {
            if self.task(i).state != TaskState::Released {
                continue;
            }
            if self.task(i).func == SCATTERED {
                // Data a client put on a worker has no function to rerun.
                let message = "its data was scattered to a worker that is gone; scatter it again".to_string();
                self.fail(i, TaskErrorMsg::Failed { message });
                continue;
            }
            // One look at each input: failed, missing, or to be computed again.
            let mut missing = 0;
            let mut released: SmallVec<[u32; 4]> = SmallVec::new();
            let mut failed = None;
            for &d in &self.task(i).deps {
                match self.task(d).state {
                    TaskState::Memory => {}
                    TaskState::Erred => {
                        failed = Some(d);
                        break;
                    }
                    TaskState::Released => {
                        missing += 1;
                        released.push(d);
                    }
                    _ => missing += 1,
                }
            }
            if let Some(failed) = failed {
                let error = self.dependency_error(failed);
                self.fail(i, error);
                continue;
            }
            self.start(i, missing);
            stack.extend(released);
        }
    }

    fn finished(&mut self, worker: WorkerId, f: &mut FinishedMsg) {
        let Some(i) = self.tasks.resolve(f.id, &f.key) else {
            // Forgotten meanwhile: the worker may drop it.
            self.outbox.release.to(worker).push(f.key.clone());
            return;
        };
        if self.task(i).state != TaskState::Processing(worker) {
            if self.task(i).state == TaskState::Memory && !self.tasks.who_has(i).contains(&worker) {
                // A stolen task ran on both: keep the extra copy.
                self.add_replica(i, worker);
            } else if !self.tasks.who_has(i).contains(&worker) {
                self.outbox.release.to(worker).push(f.key.clone());
            }
            return;
        }
        let group = self.task(i).group as usize;
        let (total, count) = &mut self.durations[group];
        // Saturating: a worker's report must not be able to overflow the
        // scheduler's bookkeeping (a fuzz test sends `u64::MAX`).
        *total = total.saturating_add(f.duration_us);
        *count += 1;
        self.unassign(i, worker);
        self.task_mut(i).nbytes = f.nbytes;
        self.add_replica(i, worker);
        self.set_state(i, TaskState::Memory);
        let inline = f.inline.take().filter(|data| data.len() <= INLINE_LIMIT);
        self.notify_holders(i, inline.as_deref());
        // Kept on only for the tasks that will read it.
        if let Some(data) =
            inline.filter(|data| self.task(i).waiters > 0 && self.inline_bytes + data.len() <= INLINE_KEPT_TOTAL)
        {
            self.inline_bytes += data.len();
            self.inline.insert(i, data.into_boxed_slice());
        }
        // Placing a dependent never changes this task's dependents.
        self.for_each_linked(i, |t| &t.dependents, Scheduler::input_ready);
        self.consider_release(i);
        if self.tasks.get(i).is_some() {
            // Releasing an input never changes this task's inputs (it
            // depends on them, so they stay).
            self.for_each_linked(i, |t| &t.deps, Scheduler::consider_release);
        }
    }

    /// Calls `f` with each task in one of task `i`'s lists (`list`: its
    /// inputs or its dependents), which `f` must leave as it is. Over a
    /// copy of the ids when they are inline, else by position: by position
    /// each id cost two more look-ups of the record, and a `SmallVec` copy
    /// more still. Always inlined: left to the compiler, the calls cost
    /// 20 more instructions a task.
    #[inline(always)]
    fn for_each_linked(
        &mut self,
        i: u32,
        list: impl Fn(&Task) -> &IdList<u32>,
        mut f: impl FnMut(&mut Scheduler, u32),
    ) {
        match list(self.task(i)).inline() {
            Some((ids, len)) => ids[..len].iter().for_each(|&d| f(self, d)),
            None => {
                for k in 0..list(self.task(i)).len() {
                    let d = list(self.task(i))[k];
                    f(self, d);
                }
            }
        }
    }

    /// One more of task `d`'s inputs is in memory.
    fn input_ready(&mut self, d: u32) {
        if self.task(d).state == TaskState::Waiting {
            let t = self.task_mut(d);
            t.missing -= 1;
            if t.missing == 0 {
                self.set_state(d, TaskState::Queued);
                self.place(d);
            }
        }
    }

    fn add_replica(&mut self, i: u32, worker: WorkerId) {
        self.tasks.add_who_has(i, worker);
    }

    /// The only copies of a result are gone.
    fn data_lost(&mut self, i: u32) {
        self.set_state(i, TaskState::Released);
        let dependents = SmallVec::<[u32; 4]>::from_slice(&self.task(i).dependents);
        for d in dependents {
            match self.task(d).state {
                TaskState::Queued => {
                    self.task_mut(d).missing = 1;
                    self.set_state(d, TaskState::Waiting);
                }
                TaskState::Processing(w) => {
                    // It would fetch an input that no longer exists.
                    self.withdraw(d, w);
                    self.task_mut(d).missing = 1;
                    self.set_state(d, TaskState::Waiting);
                }
                TaskState::Waiting => self.task_mut(d).missing += 1,
                _ => {}
            }
        }
        if self.task(i).wanted() {
            self.ensure_computed(i);
        } else {
            self.consider_forget(i);
        }
    }

    /// Fails a task and, transitively, everything that depends on it.
    fn fail(&mut self, start: u32, error: TaskErrorMsg) {
        let mut work = vec![(start, error)];
        while let Some((i, error)) = work.pop() {
            // Failing one dependent can cancel and forget another that is
            // still on the list (nothing wants it any more).
            let Some(state) = self.tasks.get(i).map(|t| t.state) else { continue };
            if state == TaskState::Erred || state == TaskState::Memory {
                continue;
            }
            if let TaskState::Processing(w) = state {
                self.withdraw(i, w);
            }
            self.task_mut(i).extra_mut().error = Some(error);
            self.set_state(i, TaskState::Erred);
            self.notify_holders(i, None);
            let dependents = SmallVec::<[u32; 4]>::from_slice(&self.task(i).dependents);
            for d in dependents {
                if self.task(d).state.is_active() || self.task(d).state == TaskState::Released {
                    work.push((d, self.dependency_error(i)));
                }
            }
            let deps = SmallVec::<[u32; 4]>::from_slice(&self.task(i).deps);
            for d in deps {
                self.consider_release(d);
            }
            self.consider_forget(i);
        }
    }

    fn dependency_error(&self, failed_dep: u32) -> TaskErrorMsg {
        let dep = self.task(failed_dep);
        match dep.error() {
            Some(TaskErrorMsg::Dependency { failed, message, .. }) => TaskErrorMsg::Dependency {
                dependency: dep.key.clone(),
                failed: failed.clone(),
                message: message.clone(),
            },
            Some(TaskErrorMsg::Failed { message }) => TaskErrorMsg::Dependency {
                dependency: dep.key.clone(),
                failed: dep.key.clone(),
                message: message.clone(),
            },
            Some(TaskErrorMsg::Cancelled) => TaskErrorMsg::Cancelled,
            Some(other) => TaskErrorMsg::Dependency {
                dependency: dep.key.clone(),
                failed: dep.key.clone(),
                message: format!("{other:?}"),
            },
            None => TaskErrorMsg::Dependency {
                dependency: dep.key.clone(),
                failed: dep.key.clone(),
                message: "unknown failure".into(),
            },
        }
    }

    /// What a holder of a decided task hears: finished (with its small
    /// result `inline`, within this event's budget) or erred; `None` while
    /// it is undecided.
    /// `copies`: how many clients it goes to.
    fn outcome(&mut self, i: u32, copies: usize, inline: Option<&[u8]>) -> Option<FromScheduler> {
        let inline = self.inline_for_clients(inline, copies);
        let t = self.task(i);
        Some(match t.state {
            TaskState::Memory => FromScheduler::Finished {
                key: t.key.clone(),
                nbytes: t.nbytes,
                holder: self.tasks.who_has(i).first().copied(),
                inline,
            },
            TaskState::Erred => FromScheduler::Erred {
                key: t.key.clone(),
                error: t.error().cloned().unwrap_or(TaskErrorMsg::Cancelled),
            },
            _ => return None,
        })
    }

    /// A small result for `copies` clients' messages, while this event's
    /// messages to clients are within [`INLINE_MESSAGE_BUDGET`].
    fn inline_for_clients(&mut self, data: Option<&[u8]>, copies: usize) -> Option<Vec<u8>> {
        let data = data?;
        let cost = data.len() * copies;
        if self.inline_to_clients + cost > INLINE_MESSAGE_BUDGET {
            return None;
        }
        self.inline_to_clients += cost;
        Some(data.to_vec())
    }

    /// Tells the task's holders its outcome (with its small result, if the
    /// worker sent one); a fire-and-forget hold ends here (the caller then
    /// releases what nobody else wants).
    fn notify_holders(&mut self, i: u32, inline: Option<&[u8]>) {
        if !self.task(i).held() {
            return;
        }
        let copies = self.tasks.holders(i).iter().filter(|&&c| c != FOREVER).count();
        let Some(msg) = self.outcome(i, copies, inline) else { return };
        self.tasks.remove_holder(i, FOREVER);
        let mut holders = SmallVec::<[ClientId; 2]>::from_slice(self.tasks.holders(i));
        // The last holder (usually the only one) gets the message itself.
        let Some(last) = holders.pop() else { return };
        for c in holders {
            self.outbox.clients.to(c).push(msg.clone());
        }
        self.outbox.clients.to(last).push(msg);
    }

    /// Changes a task's state, keeping its inputs' count of active readers.
    fn set_state(&mut self, i: u32, state: TaskState) {
        let Some(old) = self.tasks.set_state(i, state) else {
            panic!("scheduler invariant: task {i} is referenced but forgotten");
        };
        let before = old.is_active();
        let after = state.is_active();
        if before != after {
            // Counting changes no edge.
            self.for_each_linked(
                i,
                |t| &t.deps,
                |s, d| {
                    let dep = s.task_mut(d);
                    if after {
                        dep.waiters += 1;
                    } else {
                        dep.waiters -= 1;
                    }
                },
            );
        }
        if !self.inline.is_empty() {
            self.drop_unread_results(i, old, before && !after);
        }
    }

    /// After task `i` left state `old`: drops the small results kept for
    /// readers that no longer need them, its own if it left memory and its
    /// inputs' if it `stopped_reading` them and they have no reader left.
    /// Apart from [`Scheduler::set_state`], which calls it only while some
    /// are kept: most runs keep none, and the hot path stays as it was.
    #[cold]
    fn drop_unread_results(&mut self, i: u32, old: TaskState, stopped_reading: bool) {
        if old == TaskState::Memory && self.task(i).state != TaskState::Memory {
            self.drop_inline(i);
        }
        if stopped_reading {
            for k in 0..self.task(i).deps.len() {
                let d = self.task(i).deps[k];
                if self.task(d).waiters == 0 {
                    self.drop_inline(d);
                }
            }
        }
    }

    fn drop_inline(&mut self, i: u32) {
        if let Some(data) = self.inline.remove(&i) {
            self.inline_bytes -= data.len();
        }
    }

    // ----- plumbing -------------------------------------------------------

    /// Ends an event: queued tasks go to workers with room, then every
    /// message is sent, one batch per peer.
    fn flush(&mut self, comm: &mut impl Comm) {
        self.fill_workers();
        self.outbox.release.send_each(|w, keys| comm.keys(w, KeysRef::Release(keys)));
        let (tasks, funcs, busy, inline) = (&self.tasks, &self.funcs, &self.busy, &self.inline);
        self.outbox.compute.send_each(|w, slots| {
            slots.retain(|&i| tasks.get(i).is_some_and(|t| t.state == TaskState::Processing(w)));
            if !slots.is_empty() {
                comm.compute(w, &Assigned::new(tasks, funcs, busy, inline, slots));
            }
        });
        self.outbox.steal.send_each(|w, keys| comm.keys(w, KeysRef::Steal(keys)));
        self.outbox.clients.send(|c, msgs| comm.to_client(c, msgs));
        self.inline_to_clients = 0;
    }

    fn resource_index(&mut self, name: &str) -> u32 {
        if let Some(i) = self.resource_names.iter().position(|n| n == name) {
            return i as u32;
        }
        self.resource_names.push(name.to_string());
        (self.resource_names.len() - 1) as u32
    }

    fn func_number(&mut self, func: &Arc<str>) -> u32 {
        // Tasks come in runs of one function: the last one first.
        let last = self.funcs.len() as u32 - 1;
        if *self.funcs[last as usize] == **func {
            return last;
        }
        if let Some(&n) = self.func_numbers.get(func) {
            return n;
        }
        let n = self.funcs.len() as u32;
        self.funcs.push(func.clone());
        self.func_numbers.insert(func.clone(), n);
        n
    }

    fn group_index(&mut self, prefix: &Prefix) -> u32 {
        if let Some((last, g)) = &self.last_group
            && last == prefix
        {
            return *g;
        }
        let g = match self.groups.get(prefix) {
            Some(&g) => g,
            None => {
                let g = self.durations.len() as u32;
                self.groups.insert(prefix.clone(), g);
                self.durations.push((0, 0));
                g
            }
        };
        self.last_group = Some((prefix.clone(), g));
        g
    }

    fn task(&self, i: u32) -> &Task {
        self.tasks.get(i).unwrap_or_else(|| panic!("scheduler invariant: task {i} is referenced but forgotten"))
    }

    fn task_mut(&mut self, i: u32) -> &mut Task {
        self.tasks.get_mut(i).unwrap_or_else(|| panic!("scheduler invariant: task {i} is referenced but forgotten"))
    }
}
