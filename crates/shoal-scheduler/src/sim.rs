//! A deterministic simulator: the real [`Scheduler`] driving thousands of
//! virtual workers on a virtual clock, with no sockets and no threads.
//!
//! Virtual workers run what they are given (each task takes its simulated
//! duration), keep results, read inputs from wherever they exist (a task
//! whose input exists nowhere is dropped and reported as missing data, as a
//! real worker does when a fetch fails), answer steals and releases, and can
//! be killed at random. The simulator checks against its own ground truth,
//! not the scheduler's view: no task runs without its inputs, and no task is
//! computed twice from assignments made in one loss-free epoch.

use std::collections::{BTreeMap, VecDeque};
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustc_hash::{FxHashMap, FxHashSet};
use shoal_graph::{Key, KeyHashMap, Token};
use shoal_proto::{
    ArgMsg, ClientId, FinishedList, FinishedMsg, FromScheduler, FromWorker, KeysRef, TaskId, TaskMsg, ToScheduler,
    ToWorker, WorkerId, WorkerInfo,
};

use crate::assigned::Assigned;
use crate::comm::Comm;
use crate::scheduler::{Scheduler, SchedulerConfig};

/// How to run a simulation.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Virtual workers at the start.
    pub workers: u32,
    /// Threads per worker.
    pub threads: u32,
    /// Seed of every random choice.
    pub seed: u64,
    /// Mean virtual time between worker losses (microseconds); `None`: no loss.
    pub loss_every_us: Option<u64>,
    /// A lost worker is replaced by a new one.
    pub replace_lost: bool,
    /// Virtual duration of each task (microseconds).
    pub task_us: u64,
    /// Virtual network delay of each message (microseconds).
    pub latency_us: u64,
    /// When `Some(n)`: [`DROP_AT_US`] of virtual time into a graph, while
    /// it runs, the client drops every `n`-th of its outputs (by submission
    /// order) that is still pending, as a program dropping futures.
    pub drop_outputs_every: Option<u32>,
    /// Virtual workers send every result along with its report (its key's
    /// token, 16 bytes), as real workers send small ones; every compute
    /// message is then checked to carry only the right bytes for its
    /// inputs. Off in benchmarks: the check is not the scheduler's cost.
    pub inline_results: bool,
}

/// When the client drops outputs (see [`SimConfig::drop_outputs_every`]).
pub const DROP_AT_US: u64 = 1_000;

impl Default for SimConfig {
    fn default() -> SimConfig {
        SimConfig {
            workers: 100,
            threads: 2,
            seed: 1,
            loss_every_us: None,
            replace_lost: true,
            task_us: 100,
            latency_us: 50,
            drop_outputs_every: None,
            inline_results: false,
        }
    }
}

/// What a simulation found.
#[derive(Clone, Debug, Default)]
pub struct SimReport {
    /// Tasks submitted.
    pub tasks: usize,
    /// Task runs completed by virtual workers (more than `tasks` after losses).
    pub runs: u64,
    /// Workers killed.
    pub losses: u32,
    /// Virtual time the graph took (microseconds).
    pub virtual_us: u64,
    /// Wall time spent inside the scheduler's `on_*` functions.
    pub scheduler_time: Duration,
    /// `scheduler_time` split by the kind of call, indexed by [`Call`].
    pub scheduler_time_by_call: [Duration; Call::ALL.len()],
    /// How many calls of each kind the scheduler took, indexed by [`Call`].
    pub scheduler_calls: [u64; Call::ALL.len()],
    /// Outputs that finished.
    pub finished: usize,
    /// Outputs that failed, with the reason.
    pub failed: Vec<(Key, String)>,
    /// Broken rules, in the order found (empty when all is well).
    pub violations: Vec<String>,
    /// Tasks the scheduler still knew after the client released everything.
    pub leaked_tasks: usize,
    /// Results virtual workers still held after the client released everything.
    pub leaked_results: usize,
    /// Tasks a worker dropped because an input existed nowhere.
    pub missing_data: u64,
    /// Outputs the client dropped before they finished.
    pub dropped_outputs: usize,
    /// Inputs of compute messages that came with their data (see
    /// [`SimConfig::inline_results`]).
    pub inline_inputs: u64,
}

/// The kinds of scheduler call the simulator times separately.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Call {
    /// A client's batch of new tasks.
    Submit,
    /// Bursts of worker messages: finished tasks, mostly.
    Workers,
    /// The client releasing its results at the end.
    Release,
    /// Heartbeats and the periodic tick.
    Tick,
    /// Everything else: worker arrivals and losses.
    Other,
}

impl Call {
    /// Every kind, in index order.
    pub const ALL: [Call; 5] = [Call::Submit, Call::Workers, Call::Release, Call::Tick, Call::Other];

    /// The kind's name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Call::Submit => "submit",
            Call::Workers => "workers",
            Call::Release => "release",
            Call::Tick => "tick",
            Call::Other => "other",
        }
    }
}

/// Random DAG shapes for simulations.
pub mod graphs {
    use super::*;

    fn task(key: Key, deps: Vec<Key>, held: bool, func: &Arc<str>) -> TaskMsg {
        TaskMsg {
            key,
            func: func.clone(),
            args: deps.into_iter().map(ArgMsg::Key).collect(),
            priority: 0,
            retries: 0,
            resources: vec![],
            workers: vec![],
            held,
        }
    }

    /// The key of task `i` of graph number `graph`.
    fn key(prefix: &str, graph: u64, i: u64) -> Key {
        Key::scalar(prefix, Token((u128::from(graph) << 64) + u128::from(i) + 1))
    }

    /// A random layered DAG of `n` tasks: each depends on up to three of
    /// the `window` tasks before it. Tasks nothing depends on are held.
    /// Keys carry the seed: graphs of different seeds share none.
    pub fn random_dag(n: u64, window: u64, seed: u64) -> Vec<TaskMsg> {
        let mut rng = Rng(seed | 1);
        let mut deps: Vec<Vec<u64>> = Vec::with_capacity(n as usize);
        let mut has_dependent = vec![false; n as usize];
        for i in 0..n {
            let mut d = Vec::new();
            if i > 0 {
                for _ in 0..rng.below(4) {
                    let j = i - 1 - rng.below(window.min(i));
                    if !d.contains(&j) {
                        d.push(j);
                        has_dependent[j as usize] = true;
                    }
                }
            }
            deps.push(d);
        }
        let func: Arc<str> = "sim".into();
        deps.into_iter()
            .enumerate()
            .map(|(i, d)| {
                let deps = d.into_iter().map(|j| key("dag", seed, j)).collect();
                task(key("dag", seed, i as u64), deps, !has_dependent[i], &func)
            })
            .collect()
    }

    /// `n` independent map tasks reduced by a tree of `fanin`-way sums; the
    /// root is held. Graphs of different numbers `graph` share no key.
    pub fn map_reduce(n: u64, fanin: usize, graph: u64) -> Vec<TaskMsg> {
        let func: Arc<str> = "sim".into();
        let mut out: Vec<TaskMsg> = (0..n).map(|i| task(key("map", graph, i), vec![], false, &func)).collect();
        let mut level: Vec<Key> = out.iter().map(|t| t.key.clone()).collect();
        // Numbered on from the maps: task n has the token n + 1 (in its graph).
        let mut next_id = n;
        while level.len() > 1 {
            let mut up = Vec::new();
            for chunk in level.chunks(fanin.max(2)) {
                let k = key("reduce", graph, next_id);
                next_id += 1;
                out.push(task(k.clone(), chunk.to_vec(), false, &func));
                up.push(k);
            }
            level = up;
        }
        if let Some(root) = out.last_mut() {
            root.held = true;
        }
        out
    }
}

/// A task as the scheduler gets it from a network shell: decoded from its
/// frame just before, into memory allocated then (its arguments, which
/// spill to the heap past three, above all), not built with the rest of a
/// million-task graph long before and long gone from the caches. Without
/// this the simulator would charge the scheduler with cache misses on its
/// input that a shell's scheduler does not have.
fn decoded(task: TaskMsg) -> TaskMsg {
    TaskMsg { args: task.args.iter().cloned().collect(), ..task }
}

/// xorshift64*: small, fast, and the same everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
}

enum Event {
    /// A worker finished a task (if it is still the same incarnation).
    Done { worker: WorkerId, task: u32, id: TaskId },
    /// A message reaches the scheduler.
    ToScheduler { worker: WorkerId, msg: FromWorker },
    /// A message reaches a worker (sent in this loss epoch).
    ToWorker { worker: WorkerId, msg: SimToWorker, epoch: u32 },
    /// A worker sends the completions it gathered.
    Report { worker: WorkerId },
    /// Kill a random worker.
    Kill,
    /// The scheduler's periodic tick.
    Tick,
    /// The client drops some of its pending outputs.
    DropOutputs,
}

/// Events by virtual time, each moment's in the order they were pushed.
///
/// Events happen at few distinct moments (durations and delays are
/// fixed), so a map of moments to queues is small and each push or pop
/// touches one queue's end. A binary heap of every pending event would
/// sift through memory at each pop (a sixth of the simulation's time),
/// evicting the scheduler's data between its calls.
#[derive(Default)]
struct Events {
    at: BTreeMap<u64, VecDeque<Event>>,
}

impl Events {
    fn push(&mut self, at: u64, event: Event) {
        self.at.entry(at).or_default().push_back(event);
    }

    fn pop(&mut self) -> Option<(u64, Event)> {
        let mut first = self.at.first_entry()?;
        let at = *first.key();
        let event = first.get_mut().pop_front();
        if first.get().is_empty() {
            first.remove();
        }
        event.map(|e| (at, e))
    }

    fn peek(&self) -> Option<(u64, &Event)> {
        let (&at, queue) = self.at.first_key_value()?;
        queue.front().map(|e| (at, e))
    }
}

/// A message to a virtual worker, as the simulator records it from the
/// scheduler ([`SimOut`]) and as it delivers it ([`SimToWorker`]).
enum WorkerMsg<T, K> {
    Compute(T),
    Release(K),
    Steal(K),
    Shutdown,
    Restart,
}

/// What the scheduler sent: a task is its id and key, copied out of the
/// borrowed message (no reference counts, no allocation per task: about
/// what a network shell's encoding reads).
type SimOut = WorkerMsg<Range<usize>, Range<usize>>;

/// In the simulator's terms, tasks by number. The scheduler's message is
/// converted and dropped as soon as it is sent, as a network shell encodes
/// and drops what it sends: keeping thousands of them in flight would make
/// the scheduler's allocations look slower than they are.
type SimToWorker = WorkerMsg<Vec<(u32, TaskId)>, Vec<u32>>;

#[derive(Default)]
struct SimComm {
    workers: Vec<(WorkerId, SimOut)>,
    clients: Vec<(ClientId, FromScheduler)>,
    /// The tasks of compute messages and the keys of release and steal
    /// messages, which name their ranges here: copied into buffers that
    /// are kept, as a network shell encodes into buffers it keeps.
    tasks: Vec<(TaskId, Key)>,
    keys: Vec<Key>,
    /// Whether to check the data that inputs come with (see
    /// [`SimConfig::inline_results`]), and what the checks found.
    check_inline: bool,
    inline_inputs: u64,
    wrong_inline: Vec<String>,
}

impl SimComm {
    fn keys_range(&mut self, keys: &[Key]) -> Range<usize> {
        let start = self.keys.len();
        self.keys.extend_from_slice(keys);
        start..self.keys.len()
    }
}

impl Comm for SimComm {
    fn to_worker(&mut self, worker: WorkerId, msg: ToWorker) {
        let msg = match msg {
            ToWorker::Compute(tasks) => {
                let start = self.tasks.len();
                self.tasks.extend(tasks.into_iter().map(|t| (t.id, t.key)));
                SimOut::Compute(start..self.tasks.len())
            }
            ToWorker::Release(keys) => return self.keys(worker, KeysRef::Release(&keys)),
            ToWorker::Steal(keys) => return self.keys(worker, KeysRef::Steal(&keys)),
            ToWorker::Shutdown => SimOut::Shutdown,
            ToWorker::Restart => SimOut::Restart,
        };
        self.workers.push((worker, msg));
    }

    fn compute(&mut self, worker: WorkerId, tasks: &Assigned<'_>) {
        if self.check_inline {
            for task in tasks.iter() {
                for dep in task.deps.iter() {
                    let Some(data) = dep.inline else { continue };
                    self.inline_inputs += 1;
                    if data != dep.key.token().0.to_le_bytes() {
                        self.wrong_inline.push(format!("{} came with the data of another task", dep.key));
                    }
                }
            }
        }
        let start = self.tasks.len();
        self.tasks.extend(tasks.ids().map(|(id, key)| (id, key.clone())));
        self.workers.push((worker, SimOut::Compute(start..self.tasks.len())));
    }

    fn keys(&mut self, worker: WorkerId, msg: KeysRef<'_>) {
        let msg = match msg {
            KeysRef::Release(keys) => SimOut::Release(self.keys_range(keys)),
            KeysRef::Steal(keys) => SimOut::Steal(self.keys_range(keys)),
        };
        self.workers.push((worker, msg));
    }

    fn to_client(&mut self, client: ClientId, msgs: Vec<FromScheduler>) {
        self.clients.extend(msgs.into_iter().map(|m| (client, m)));
    }
}

/// A queued task on a virtual worker: its number in the simulation, its
/// scheduler id, and the loss epoch it was assigned in.
#[derive(Clone, Copy)]
struct Queued {
    task: u32,
    id: TaskId,
    epoch: u32,
}

struct SimWorker {
    threads: u32,
    /// Running tasks, with the loss epoch they were assigned in.
    running: FxHashMap<u32, u32>,
    queue: VecDeque<Queued>,
    /// How many times each task is in `queue`, so that releasing a result
    /// (the common case) does not scan the queue.
    queued: FxHashMap<u32, u32>,
    data: FxHashSet<u32>,
}

impl SimWorker {
    fn dequeue(&mut self, task: u32) {
        if let Some(n) = self.queued.get_mut(&task) {
            *n -= 1;
            if *n == 0 {
                self.queued.remove(&task);
            }
        }
    }
}

/// A simulated cluster around one real scheduler.
///
/// The simulator's own bookkeeping is by dense task number (one key lookup
/// where a message names a task, none per dependency), and the reported
/// scheduler time covers only the calls into the scheduler; the simulator is
/// kept cheap all the same, so its memory traffic disturbs the scheduler's
/// caches as little as a network shell would.
pub struct Simulation {
    config: SimConfig,
    scheduler: Scheduler,
    comm: SimComm,
    now: u64,
    events: Events,
    workers: FxHashMap<WorkerId, SimWorker>,
    rng: Rng,
    client: ClientId,
    /// Task numbers by key, and keys by number (submission order).
    numbers: KeyHashMap<u32>,
    keys: Vec<Key>,
    /// Task numbers by the scheduler's slot, with the id they were seen
    /// under: a compute message's task is found by an array access, not
    /// by hashing its key into a map of a million (whose cache misses
    /// would evict the scheduler's data between its calls).
    by_slot: Vec<(TaskId, u32)>,
    /// Each task's dependencies: `deps[dep_start[t]..dep_start[t + 1]]`.
    dep_start: Vec<u32>,
    deps: Vec<u32>,
    /// The outcome of each held task, once known.
    outputs: FxHashMap<u32, Option<Result<(), String>>>,
    /// Outputs the client dropped before they finished.
    dropped: FxHashSet<u32>,
    pending_outputs: usize,
    epoch: u32,
    /// For each result, one more than the assignment epoch of its last
    /// computation (0: never computed).
    computed: Vec<u32>,
    /// How many live workers hold each result: the ground truth.
    copies: Vec<u32>,
    /// Completions each worker has not reported yet (workers report in
    /// batches, as real ones do once per event-loop turn).
    unreported: FxHashMap<WorkerId, FinishedList>,
    /// Graphs run so far on this scheduler.
    graphs: u32,
    /// Virtual time the current graph started at.
    graph_start_us: u64,
    report: SimReport,
}

impl Simulation {
    /// A cluster of `config.workers` idle workers and one client.
    pub fn new(config: SimConfig) -> Simulation {
        let mut sim = Simulation {
            scheduler: Scheduler::new(SchedulerConfig::default()),
            comm: SimComm { check_inline: config.inline_results, ..SimComm::default() },
            now: 0,
            events: Events::default(),
            workers: FxHashMap::default(),
            rng: Rng(config.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1),
            client: ClientId(0),
            numbers: KeyHashMap::default(),
            by_slot: Vec::new(),
            keys: Vec::new(),
            dep_start: vec![0],
            deps: Vec::new(),
            outputs: FxHashMap::default(),
            dropped: FxHashSet::default(),
            pending_outputs: 0,
            epoch: 0,
            computed: Vec::new(),
            copies: Vec::new(),
            unreported: FxHashMap::default(),
            graphs: 0,
            graph_start_us: 0,
            report: SimReport::default(),
            config,
        };
        sim.client = sim.timed(Call::Other, |s| s.scheduler.on_client_connected());
        for _ in 0..sim.config.workers {
            sim.add_worker();
        }
        sim
    }

    /// Submits tasks (dependencies first), runs until every held task is
    /// done, releases them, and reports.
    pub fn run(mut self, tasks: Vec<TaskMsg>) -> SimReport {
        self.run_graph(tasks)
    }

    /// Runs a graph as [`Simulation::run`] does, on the scheduler and
    /// workers that ran the graphs before: a long-running scheduler's
    /// steady state, which reuses the memory of the tasks it forgot
    /// instead of asking the kernel for more. A graph's keys must not be
    /// those of an earlier graph's outputs (every task is forgotten by the
    /// end of a run, so any other key is new again).
    pub fn run_graph(&mut self, tasks: Vec<TaskMsg>) -> SimReport {
        self.start_graph();
        self.report.tasks = tasks.len();
        self.numbers.reserve(tasks.len());
        for t in &tasks {
            let n = self.keys.len() as u32;
            self.numbers.insert(t.key.clone(), n);
            self.keys.push(t.key.clone());
            for a in t.args.iter() {
                let keys = match a {
                    ArgMsg::Key(k) => std::slice::from_ref(k),
                    ArgMsg::List(ks) => ks.as_slice(),
                    ArgMsg::Value(_) => &[],
                };
                self.deps.extend(keys.iter().filter_map(|k| self.numbers.get(k).copied()));
            }
            self.dep_start.push(self.deps.len() as u32);
            if t.held {
                self.outputs.insert(n, None);
            }
        }
        self.pending_outputs = self.outputs.len();
        self.computed = vec![0; tasks.len()];
        self.copies = vec![0; tasks.len()];
        // One batch per 10 000 tasks, as a client streams a large graph.
        let mut tasks = tasks.into_iter();
        loop {
            let batch: Vec<TaskMsg> = tasks.by_ref().take(10_000).map(decoded).collect();
            if batch.is_empty() {
                break;
            }
            let client = self.client;
            self.timed(Call::Submit, |s| {
                s.scheduler.on_client_message(client, ToScheduler::Submit(batch), &mut s.comm)
            });
            self.dispatch();
        }
        while self.pending_outputs > 0 {
            let Some((at, event)) = self.events.pop() else {
                self.report.violations.push("the simulation stalled: outputs pending, nothing left to happen".into());
                break;
            };
            self.now = at;
            self.handle(event);
            if self.report.violations.len() > 20 {
                break;
            }
        }
        self.finish()
    }

    /// Clears what the last graph left (its events ended with it) and
    /// starts this graph's clock-driven events, in virtual time from now.
    fn start_graph(&mut self) {
        if self.graphs > 0 {
            self.report = SimReport::default();
            self.numbers.clear();
            self.keys.clear();
            self.by_slot.clear();
            self.dep_start = vec![0];
            self.deps.clear();
            self.outputs.clear();
            self.dropped.clear();
            self.events = Events::default();
        }
        self.graphs += 1;
        let now = self.now;
        self.graph_start_us = now;
        if let Some(every) = self.config.loss_every_us {
            let at = now + self.rng.below(2 * every) + 1;
            self.push(at, Event::Kill);
        }
        self.push(now + 1_000_000, Event::Tick);
        if self.config.drop_outputs_every.is_some() {
            self.push(now + DROP_AT_US, Event::DropOutputs);
        }
    }

    fn finish(&mut self) -> SimReport {
        let mut outputs: Vec<(u32, Option<Result<(), String>>)> = self.outputs.drain().collect();
        outputs.sort_unstable_by_key(|(t, _)| *t);
        for (t, outcome) in &outputs {
            match outcome {
                Some(Ok(())) => self.report.finished += 1,
                Some(Err(e)) => self.report.failed.push((self.keys[*t as usize].clone(), e.clone())),
                None => {}
            }
        }
        let keys: Vec<Key> = outputs.iter().map(|(t, _)| self.keys[*t as usize].clone()).collect();
        let client = self.client;
        self.timed(Call::Release, |s| s.scheduler.on_client_message(client, ToScheduler::Release(keys), &mut s.comm));
        self.dispatch();
        // Let the releases reach the workers.
        while let Some((at, event)) = self.events.pop() {
            self.now = at;
            if matches!(event, Event::ToWorker { .. }) {
                self.handle(event);
            }
        }
        self.scheduler.check_invariants();
        self.report.inline_inputs = self.comm.inline_inputs;
        self.report.violations.append(&mut self.comm.wrong_inline);
        self.report.leaked_tasks = self.scheduler.stats().tasks;
        self.report.leaked_results = self.workers.values().map(|w| w.data.len()).sum();
        self.report.virtual_us = self.now - self.graph_start_us;
        std::mem::take(&mut self.report)
    }

    fn timed<T>(&mut self, call: Call, f: impl FnOnce(&mut Simulation) -> T) -> T {
        let start = Instant::now();
        let out = f(self);
        let spent = start.elapsed();
        self.report.scheduler_time += spent;
        self.report.scheduler_time_by_call[call as usize] += spent;
        self.report.scheduler_calls[call as usize] += 1;
        out
    }

    fn push(&mut self, at: u64, event: Event) {
        self.events.push(at, event);
    }

    fn number_of_task(&mut self, id: TaskId, key: &Key) -> Option<u32> {
        let slot = id.slot() as usize;
        if let Some(&(seen, n)) = self.by_slot.get(slot)
            && seen == id
        {
            return Some(n);
        }
        let n = self.number(key)?;
        if self.by_slot.len() <= slot {
            self.by_slot.resize(slot + 1, (TaskId(u64::MAX), 0));
        }
        self.by_slot[slot] = (id, n);
        Some(n)
    }

    fn number(&self, key: &Key) -> Option<u32> {
        // The graphs of [`graphs`] give task n the token n + 1: one look
        // into the keys, where hashing into a map of a million would cost
        // cache misses that evict the scheduler's data between its calls.
        let guess = key.token().0.wrapping_sub(1);
        match usize::try_from(guess).ok().and_then(|n| self.keys.get(n)) {
            Some(k) if k == key => Some(guess as u32),
            _ => self.numbers.get(key).copied(),
        }
    }

    fn numbers_of(&self, keys: Range<usize>) -> Vec<u32> {
        self.comm.keys[keys].iter().filter_map(|k| self.number(k)).collect()
    }

    fn deps_of(&self, task: u32) -> &[u32] {
        let t = task as usize;
        &self.deps[self.dep_start[t] as usize..self.dep_start[t + 1] as usize]
    }

    fn add_worker(&mut self) {
        let info = WorkerInfo {
            id: WorkerId(0),
            name: format!("sim-{}", self.workers.len()),
            data_address: String::new(),
            threads: self.config.threads,
            memory_limit: 0,
            memory: 0,
            resources: vec![],
        };
        let now = self.now;
        let id = self.timed(Call::Other, |s| s.scheduler.on_worker_registered(info, now, &mut s.comm));
        self.workers.insert(
            id,
            SimWorker {
                threads: self.config.threads,
                running: FxHashMap::default(),
                queue: VecDeque::new(),
                queued: FxHashMap::default(),
                data: FxHashSet::default(),
            },
        );
        self.dispatch();
    }

    /// Delivers what the scheduler said, after the network delay. The
    /// recording's buffers are kept, so that the scheduler's sends do not
    /// allocate (a network shell writes into buffers it keeps, too).
    fn dispatch(&mut self) {
        let at = self.now + self.config.latency_us;
        let mut workers = std::mem::take(&mut self.comm.workers);
        let mut assigned = std::mem::take(&mut self.comm.tasks);
        for (worker, msg) in workers.drain(..) {
            let msg = match msg {
                SimOut::Compute(range) => SimToWorker::Compute(
                    assigned[range]
                        .iter()
                        .filter_map(|(id, key)| match self.number_of_task(*id, key) {
                            Some(n) => Some((n, *id)),
                            None => {
                                self.report.violations.push(format!("{key} was never submitted"));
                                None
                            }
                        })
                        .collect(),
                ),
                SimOut::Release(keys) => SimToWorker::Release(self.numbers_of(keys)),
                SimOut::Steal(keys) => SimToWorker::Steal(self.numbers_of(keys)),
                SimOut::Shutdown => SimToWorker::Shutdown,
                SimOut::Restart => SimToWorker::Restart,
            };
            self.push(at, Event::ToWorker { worker, msg, epoch: self.epoch });
        }
        self.comm.workers = workers;
        self.comm.keys.clear();
        assigned.clear();
        self.comm.tasks = assigned;
        let mut clients = std::mem::take(&mut self.comm.clients);
        for (_, msg) in clients.drain(..) {
            let (key, outcome) = match msg {
                FromScheduler::Finished { key, .. } => (key, Ok(())),
                FromScheduler::Erred { key, error } => (key, Err(format!("{error:?}"))),
                // The simulated client neither asks, restarts nor restricts.
                FromScheduler::WhoHas { .. }
                | FromScheduler::Info(_)
                | FromScheduler::NoWorker { .. }
                | FromScheduler::Restarted => continue,
            };
            let Some(t) = self.number(&key) else { continue };
            if self.dropped.contains(&t) {
                self.report.violations.push(format!("the client was told about {key}, which it had dropped"));
            }
            if let Some(o) = self.outputs.get_mut(&t) {
                if o.is_none() {
                    self.pending_outputs -= 1;
                }
                *o = Some(outcome);
            }
        }
        self.comm.clients = clients;
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::ToWorker { worker, msg, epoch } => self.worker_receives(worker, msg, epoch),
            event @ (Event::ToScheduler { .. } | Event::Report { .. }) => self.deliver_to_scheduler(event),
            Event::Done { worker, task, id } => self.task_done(worker, task, id),
            Event::Kill => self.kill(),
            Event::DropOutputs => self.drop_outputs(),
            Event::Tick => {
                // Heartbeats are implied: a live simulated worker is never silent.
                let now = self.now;
                let beats: Vec<(WorkerId, FromWorker)> =
                    self.workers.keys().map(|&w| (w, FromWorker::Heartbeat { memory: 0 })).collect();
                self.timed(Call::Tick, |s| s.scheduler.on_worker_messages(beats, now, &mut s.comm));
                self.timed(Call::Tick, |s| s.scheduler.on_tick(now, &mut s.comm));
                self.dispatch();
                let next = self.now + 1_000_000;
                self.push(next, Event::Tick);
            }
        }
    }

    /// Hands the scheduler a message from a worker, with every other one
    /// that reaches it at the same moment: a network shell reads what all
    /// its connections have ready before the scheduler answers.
    fn deliver_to_scheduler(&mut self, first: Event) {
        let mut burst = Vec::new();
        let mut next = Some(first);
        while let Some(event) = next.take() {
            match event {
                Event::ToScheduler { worker, msg } if self.workers.contains_key(&worker) => burst.push((worker, msg)),
                Event::Report { worker } => {
                    if let Some(done) = self.unreported.remove(&worker)
                        && self.workers.contains_key(&worker)
                    {
                        burst.push((worker, FromWorker::Finished(done)));
                    }
                }
                _ => {}
            }
            let same_moment = self
                .events
                .peek()
                .is_some_and(|(at, e)| at == self.now && matches!(e, Event::ToScheduler { .. } | Event::Report { .. }));
            if same_moment {
                next = self.events.pop().map(|(_, e)| e);
            }
        }
        if burst.is_empty() {
            return;
        }
        let now = self.now;
        self.timed(Call::Workers, |s| s.scheduler.on_worker_messages(burst, now, &mut s.comm));
        self.dispatch();
    }

    fn worker_receives(&mut self, id: WorkerId, msg: SimToWorker, epoch: u32) {
        if !self.workers.contains_key(&id) {
            return;
        }
        match msg {
            SimToWorker::Compute(tasks) => {
                if let Some(w) = self.workers.get_mut(&id) {
                    for (task, id) in tasks {
                        w.queue.push_back(Queued { task, id, epoch });
                        *w.queued.entry(task).or_insert(0) += 1;
                    }
                }
            }
            SimToWorker::Release(tasks) => {
                for t in tasks {
                    let Some(w) = self.workers.get_mut(&id) else { return };
                    if w.data.remove(&t) {
                        self.copies[t as usize] -= 1;
                    }
                    if w.queued.remove(&t).is_some() {
                        w.queue.retain(|q| q.task != t);
                    }
                    // A running task's result is dropped when it finishes.
                    w.running.remove(&t);
                }
            }
            SimToWorker::Steal(tasks) => {
                let wanted: FxHashSet<u32> = tasks.into_iter().collect();
                let mut given = Vec::new();
                if let Some(w) = self.workers.get_mut(&id) {
                    let mut kept = VecDeque::with_capacity(w.queue.len());
                    for q in w.queue.drain(..) {
                        if wanted.contains(&q.task) {
                            given.push(q.task);
                        } else {
                            kept.push_back(q);
                        }
                    }
                    w.queue = kept;
                    for &t in &given {
                        w.dequeue(t);
                    }
                }
                let given = given.into_iter().map(|t| self.keys[t as usize].clone()).collect();
                let at = self.now + self.config.latency_us;
                self.push(at, Event::ToScheduler { worker: id, msg: FromWorker::Stolen(given) });
            }
            SimToWorker::Shutdown | SimToWorker::Restart => {}
        }
        self.start_tasks(id);
    }

    fn start_tasks(&mut self, id: WorkerId) {
        loop {
            let Some(w) = self.workers.get_mut(&id) else { return };
            if w.running.len() >= w.threads as usize {
                return;
            }
            let Some(q) = w.queue.pop_front() else { return };
            w.dequeue(q.task);
            let missing: Vec<Key> = self
                .deps_of(q.task)
                .iter()
                .filter(|&&d| self.copies[d as usize] == 0)
                .map(|&d| self.keys[d as usize].clone())
                .collect();
            if !missing.is_empty() {
                self.report.missing_data += 1;
                let msg = FromWorker::MissingData { key: self.keys[q.task as usize].clone(), missing };
                let at = self.now + self.config.latency_us;
                self.push(at, Event::ToScheduler { worker: id, msg });
                continue;
            }
            if let Some(w) = self.workers.get_mut(&id) {
                w.running.insert(q.task, q.epoch);
            }
            let at = self.now + self.config.task_us;
            self.push(at, Event::Done { worker: id, task: q.task, id: q.id });
        }
    }

    fn task_done(&mut self, worker: WorkerId, task: u32, id: TaskId) {
        let Some(w) = self.workers.get_mut(&worker) else { return };
        let Some(epoch) = w.running.remove(&task) else {
            // Released while running: the result is dropped.
            self.start_tasks(worker);
            return;
        };
        if w.data.insert(task) {
            self.copies[task as usize] += 1;
        }
        self.report.runs += 1;
        let key = self.keys[task as usize].clone();
        if std::mem::replace(&mut self.computed[task as usize], epoch + 1) == epoch + 1 {
            self.report.violations.push(format!("{key} computed twice from assignments of loss epoch {epoch}"));
        }
        let batch = self.unreported.entry(worker).or_default();
        let inline = self.config.inline_results.then(|| key.token().0.to_le_bytes().to_vec());
        batch.push(FinishedMsg { id, key, nbytes: 8, duration_us: self.config.task_us, inline });
        if batch.len() == 1 {
            let at = self.now + self.config.latency_us;
            self.push(at, Event::Report { worker });
        }
        self.start_tasks(worker);
    }

    /// Releases every `n`-th pending output: the scheduler must forget
    /// what only they needed, tell nobody about them again, and leak
    /// nothing (checked at the end).
    fn drop_outputs(&mut self) {
        let Some(every) = self.config.drop_outputs_every else { return };
        let mut pending: Vec<u32> = self.outputs.iter().filter(|(_, o)| o.is_none()).map(|(&t, _)| t).collect();
        pending.sort_unstable();
        let dropped: Vec<u32> = pending.into_iter().step_by(every.max(1) as usize).collect();
        for t in &dropped {
            self.outputs.remove(t);
            self.dropped.insert(*t);
        }
        self.pending_outputs -= dropped.len();
        self.report.dropped_outputs = dropped.len();
        let keys = dropped.iter().map(|&t| self.keys[t as usize].clone()).collect();
        let client = self.client;
        self.timed(Call::Release, |s| s.scheduler.on_client_message(client, ToScheduler::Release(keys), &mut s.comm));
        self.dispatch();
    }

    fn kill(&mut self) {
        if self.workers.len() > 1 {
            let mut ids: Vec<WorkerId> = self.workers.keys().copied().collect();
            ids.sort_unstable();
            let victim = ids[self.rng.below(ids.len() as u64) as usize];
            if let Some(dead) = self.workers.remove(&victim) {
                for t in dead.data {
                    self.copies[t as usize] -= 1;
                }
            }
            self.report.losses += 1;
            self.epoch += 1;
            self.timed(Call::Other, |s| s.scheduler.on_worker_lost(victim, &mut s.comm));
            self.dispatch();
            if self.config.replace_lost {
                self.add_worker();
            }
        }
        if let Some(every) = self.config.loss_every_us {
            let at = self.now + self.rng.below(2 * every) + 1;
            self.push(at, Event::Kill);
        }
    }
}
