//! The scheduler state machine.
//!
//! Every entry point is an `on_*` function: it changes the state and sends
//! what follows through a [`Comm`], batched per peer at the end of the event.
//! The clock comes in as an argument (microseconds). Nothing here touches a
//! socket, a thread or the system clock, so the same code runs under the
//! network shell, in unit tests and in the simulator.
//!
//! This file holds the scheduler's state and its entry points, which only
//! dispatch; what they do is in the modules beside it:
//!
//! - `lifecycle`: a task's transitions, from submission to a result in
//!   memory or a failure, and its recomputation when a result is lost;
//! - `placement`: which worker runs a task (the cost formula is documented
//!   there), workers' loads, and stealing;
//! - `release`: releasing results nobody wants and forgetting tasks
//!   nothing can need;
//! - `inline`: small results passed on through the scheduler, within
//!   their budgets;
//! - `ops`: client operations beyond running tasks (who has what, scatter,
//!   fire-and-forget, restart), workers paused for memory, and tasks no
//!   worker may run.

use std::sync::Arc;

use rustc_hash::{FxHashMap, FxHashSet};
use shoal_graph::{Key, Prefix};
use shoal_proto::{
    ClientId, FromScheduler, FromWorker, KeysRef, SCATTERED_FUNC, TaskId, ToScheduler, WorkerId, WorkerInfo,
};

use crate::assigned::Assigned;
use crate::comm::Comm;
use crate::ids::{FuncId, GroupId, Slot};
use crate::load::LoadIndex;
use crate::outbox::Batches;
use crate::queue::ReadyQueue;
use crate::table::TaskTable;
use crate::task::{Busy, Task, TaskState, Worker};

pub(crate) use inline::InlineResults;
use lifecycle::Lookahead;

mod inline;
mod lifecycle;
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
    compute: Batches<WorkerId, Slot>,
    release: Batches<WorkerId, Key>,
    steal: Batches<WorkerId, Key>,
    clients: Batches<ClientId, FromScheduler>,
}

/// The number of [`SCATTERED_FUNC`].
const SCATTERED: FuncId = FuncId(0);

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

/// The scheduler: tasks, workers, clients, and the rules between them.
pub struct Scheduler {
    config: SchedulerConfig,
    tasks: TaskTable,
    workers: FxHashMap<WorkerId, Worker>,
    /// By worker number; one entry per worker ever registered.
    busy: Vec<Busy>,
    loads: LoadIndex,
    /// Tasks asked back from the worker processing them, not answered for.
    stealing: FxHashSet<Slot>,
    clients: FxHashSet<ClientId>,
    next_worker: u32,
    next_client: u32,
    next_seq: u32,
    queued: ReadyQueue,
    resource_names: Vec<String>,
    groups: FxHashMap<Prefix, GroupId>,
    /// Function names by number: a task record holds four bytes instead of
    /// a shared string, and forgetting it touches no reference count.
    /// Entry 0 is [`SCATTERED_FUNC`]. Few programs have more than a few
    /// hundred functions, so the names are kept for good.
    funcs: Vec<Arc<str>>,
    func_numbers: FxHashMap<Arc<str>, FuncId>,
    /// The group found last: tasks come in runs of one prefix, and
    /// comparing prefixes is comparing pointers, where `groups` hashes
    /// their text.
    last_group: Option<(Prefix, GroupId)>,
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
    /// Small results kept for the tasks that read them, within their
    /// budgets.
    inline: InlineResults,
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
            inline: InlineResults::default(),
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
            ToScheduler::Cancel(keys) => self.cancel(&keys),
            ToScheduler::WhoHas(keys) => {
                let reply = self.who_has_reply(keys);
                self.outbox.clients.to(client).push(reply);
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
            ToScheduler::FireAndForget(keys) => self.fire_and_forget(&keys),
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
            if available.len() <= r.index() {
                available.resize(r.index() + 1, 0.0);
            }
            available[r.index()] += amount;
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
        // Read where they lie, what is kept taken out: moving them out
        // whole copies each message and each completion in it (76
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
            FromWorker::Failed { key, message } => self.task_failed(worker, key, message),
            FromWorker::MissingData { key, missing } => self.missing_data(worker, key, missing),
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
        self.tasks_lost_with(worker);
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
        for i in self.inline.slots() {
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
        self.inline.end_event();
    }

    fn task(&self, i: Slot) -> &Task {
        self.tasks.get(i).unwrap_or_else(|| panic!("scheduler invariant: the task in {i} is referenced but forgotten"))
    }

    fn task_mut(&mut self, i: Slot) -> &mut Task {
        self.tasks
            .get_mut(i)
            .unwrap_or_else(|| panic!("scheduler invariant: the task in {i} is referenced but forgotten"))
    }
}
