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

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;
use shoal_graph::{Key, KeyBuildHasher, KeyHashMap, Token};
use shoal_proto::{
    ArgMsg, ClientId, ComputeMsg, FinishedMsg, FromScheduler, FromWorker, TaskMsg, ToScheduler, ToWorker, WorkerId,
    WorkerInfo,
};

use crate::comm::RecordingComm;
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
}

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
    /// Virtual time at the end (microseconds).
    pub virtual_us: u64,
    /// Wall time spent inside the scheduler's `on_*` functions.
    pub scheduler_time: Duration,
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
}

/// Random DAG shapes for simulations.
pub mod graphs {
    use super::*;

    fn task(key: Key, deps: Vec<Key>, held: bool) -> TaskMsg {
        TaskMsg {
            key,
            func: "sim".into(),
            args: deps.into_iter().map(ArgMsg::Key).collect(),
            priority: 0,
            retries: 0,
            resources: vec![],
            workers: vec![],
            held,
        }
    }

    fn key(prefix: &str, i: u64) -> Key {
        Key::scalar(prefix, Token(u128::from(i) + 1))
    }

    /// A random layered DAG of `n` tasks: each depends on up to three of
    /// the `window` tasks before it. Tasks nothing depends on are held.
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
        deps.into_iter()
            .enumerate()
            .map(|(i, d)| task(key("dag", i as u64), d.into_iter().map(|j| key("dag", j)).collect(), !has_dependent[i]))
            .collect()
    }

    /// `n` independent map tasks reduced by a tree of `fanin`-way sums; the
    /// root is held.
    pub fn map_reduce(n: u64, fanin: usize) -> Vec<TaskMsg> {
        let mut out: Vec<TaskMsg> = (0..n).map(|i| task(key("map", i), vec![], false)).collect();
        let mut level: Vec<Key> = out.iter().map(|t| t.key.clone()).collect();
        let mut next_id = 0;
        while level.len() > 1 {
            let mut up = Vec::new();
            for chunk in level.chunks(fanin.max(2)) {
                let k = key("reduce", next_id);
                next_id += 1;
                out.push(task(k.clone(), chunk.to_vec(), false));
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

#[derive(PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    /// A worker finished a task (if it is still the same incarnation).
    Done { worker: WorkerId, key: Key },
    /// A message reaches the scheduler.
    ToScheduler { worker: WorkerId, msg: SimFromWorker },
    /// A message reaches a worker (sent in this loss epoch).
    ToWorker { worker: WorkerId, msg: SimToWorker, epoch: u32 },
    /// A worker sends the completions it gathered.
    Report { worker: WorkerId },
    /// Kill a random worker.
    Kill,
    /// The scheduler's periodic tick.
    Tick,
}

/// Wire messages wrapped so events can be ordered (by arrival only).
struct SimFromWorker(FromWorker);
struct SimToWorker(ToWorker);

macro_rules! ordered_by_arrival {
    ($t:ty) => {
        impl PartialEq for $t {
            fn eq(&self, _: &$t) -> bool {
                true
            }
        }
        impl Eq for $t {}
        impl PartialOrd for $t {
            fn partial_cmp(&self, other: &$t) -> Option<std::cmp::Ordering> {
                Some(self.cmp(other))
            }
        }
        impl Ord for $t {
            fn cmp(&self, _: &$t) -> std::cmp::Ordering {
                std::cmp::Ordering::Equal
            }
        }
    };
}
ordered_by_arrival!(SimFromWorker);
ordered_by_arrival!(SimToWorker);

type KeySet = std::collections::HashSet<Key, KeyBuildHasher>;

struct SimWorker {
    threads: u32,
    /// Running tasks, with the loss epoch they were assigned in.
    running: KeyHashMap<u32>,
    queue: VecDeque<(ComputeMsg, u32)>,
    data: KeySet,
}

/// A simulated cluster around one real scheduler.
pub struct Simulation {
    config: SimConfig,
    scheduler: Scheduler,
    comm: RecordingComm,
    now: u64,
    seq: u64,
    events: BinaryHeap<Reverse<(u64, u64, Event)>>,
    workers: FxHashMap<WorkerId, SimWorker>,
    rng: Rng,
    client: ClientId,
    deps: KeyHashMap<Vec<Key>>,
    outputs: KeyHashMap<Option<Result<(), String>>>,
    epoch: u32,
    /// For each result, the assignment epoch of its last computation.
    computed: KeyHashMap<u32>,
    /// How many live workers hold each result: the ground truth.
    copies: KeyHashMap<u32>,
    /// Completions each worker has not reported yet (workers report in
    /// batches, as real ones do once per event-loop turn).
    unreported: FxHashMap<WorkerId, Vec<FinishedMsg>>,
    report: SimReport,
}

impl Simulation {
    /// A cluster of `config.workers` idle workers and one client.
    pub fn new(config: SimConfig) -> Simulation {
        let mut sim = Simulation {
            scheduler: Scheduler::new(SchedulerConfig::default()),
            comm: RecordingComm::default(),
            now: 0,
            seq: 0,
            events: BinaryHeap::new(),
            workers: FxHashMap::default(),
            rng: Rng(config.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1),
            client: ClientId(0),
            deps: KeyHashMap::default(),
            outputs: KeyHashMap::default(),
            epoch: 0,
            computed: KeyHashMap::default(),
            copies: KeyHashMap::default(),
            unreported: FxHashMap::default(),
            report: SimReport::default(),
            config,
        };
        sim.client = sim.timed(|s| s.scheduler.on_client_connected());
        for _ in 0..sim.config.workers {
            sim.add_worker();
        }
        if let Some(every) = sim.config.loss_every_us {
            let at = sim.rng.below(2 * every) + 1;
            sim.push(at, Event::Kill);
        }
        sim.push(1_000_000, Event::Tick);
        sim
    }

    /// Submits tasks (dependencies first), runs until every held task is
    /// done, releases them, and reports.
    pub fn run(mut self, tasks: Vec<TaskMsg>) -> SimReport {
        self.report.tasks = tasks.len();
        for t in &tasks {
            let deps = t
                .args
                .iter()
                .flat_map(|a| match a {
                    ArgMsg::Key(k) => vec![k.clone()],
                    ArgMsg::List(ks) => ks.clone(),
                    ArgMsg::Value(_) => vec![],
                })
                .collect();
            self.deps.insert(t.key.clone(), deps);
            if t.held {
                self.outputs.insert(t.key.clone(), None);
            }
        }
        // One batch per 10 000 tasks, as a client streams a large graph.
        let mut tasks = tasks;
        while !tasks.is_empty() {
            let rest = tasks.split_off(tasks.len().min(10_000));
            let batch = std::mem::replace(&mut tasks, rest);
            let client = self.client;
            self.timed(|s| s.scheduler.on_client_message(client, ToScheduler::Submit(batch), &mut s.comm));
            self.dispatch();
        }
        while self.outputs.values().any(Option::is_none) {
            let Some(Reverse((at, _, event))) = self.events.pop() else {
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

    fn finish(mut self) -> SimReport {
        for (key, outcome) in &self.outputs {
            match outcome {
                Some(Ok(())) => self.report.finished += 1,
                Some(Err(e)) => self.report.failed.push((key.clone(), e.clone())),
                None => {}
            }
        }
        let keys: Vec<Key> = self.outputs.keys().cloned().collect();
        let client = self.client;
        self.timed(|s| s.scheduler.on_client_message(client, ToScheduler::Release(keys), &mut s.comm));
        self.dispatch();
        // Let the releases reach the workers.
        while let Some(Reverse((at, _, event))) = self.events.pop() {
            self.now = at;
            if matches!(event, Event::ToWorker { .. }) {
                self.handle(event);
            }
        }
        self.scheduler.check_invariants();
        self.report.leaked_tasks = self.scheduler.stats().tasks;
        self.report.leaked_results = self.workers.values().map(|w| w.data.len()).sum();
        self.report.virtual_us = self.now;
        self.report
    }

    fn timed<T>(&mut self, f: impl FnOnce(&mut Simulation) -> T) -> T {
        let start = Instant::now();
        let out = f(self);
        self.report.scheduler_time += start.elapsed();
        out
    }

    fn push(&mut self, at: u64, event: Event) {
        self.seq += 1;
        self.events.push(Reverse((at, self.seq, event)));
    }

    fn add_worker(&mut self) {
        let info = WorkerInfo {
            id: WorkerId(0),
            name: format!("sim-{}", self.workers.len()),
            data_address: String::new(),
            threads: self.config.threads,
            memory_limit: 0,
            resources: vec![],
        };
        let now = self.now;
        let id = self.timed(|s| s.scheduler.on_worker_registered(info, now, &mut s.comm));
        self.workers.insert(
            id,
            SimWorker {
                threads: self.config.threads,
                running: KeyHashMap::default(),
                queue: VecDeque::new(),
                data: KeySet::default(),
            },
        );
        self.dispatch();
    }

    /// Delivers what the scheduler said, after the network delay.
    fn dispatch(&mut self) {
        let out = self.comm.take();
        let at = self.now + self.config.latency_us;
        for (worker, msg) in out.workers {
            self.push(at, Event::ToWorker { worker, msg: SimToWorker(msg), epoch: self.epoch });
        }
        for (_, msg) in out.clients {
            match msg {
                FromScheduler::Finished { key, .. } => {
                    if let Some(o) = self.outputs.get_mut(&key) {
                        *o = Some(Ok(()));
                    }
                }
                FromScheduler::Erred { key, error } => {
                    if let Some(o) = self.outputs.get_mut(&key) {
                        *o = Some(Err(format!("{error:?}")));
                    }
                }
                // The simulated client neither asks, restarts nor restricts.
                FromScheduler::WhoHas(_)
                | FromScheduler::Info(_)
                | FromScheduler::NoWorker { .. }
                | FromScheduler::Restarted => {}
            }
        }
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::ToWorker { worker, msg, epoch } => self.worker_receives(worker, msg.0, epoch),
            Event::ToScheduler { worker, msg } => {
                if self.workers.contains_key(&worker) {
                    let now = self.now;
                    self.timed(|s| s.scheduler.on_worker_message(worker, msg.0, now, &mut s.comm));
                    self.dispatch();
                }
            }
            Event::Done { worker, key } => self.task_done(worker, key),
            Event::Report { worker } => {
                if let Some(done) = self.unreported.remove(&worker) {
                    if self.workers.contains_key(&worker) {
                        let now = self.now;
                        self.timed(|s| {
                            s.scheduler.on_worker_message(worker, FromWorker::Finished(done), now, &mut s.comm)
                        });
                        self.dispatch();
                    }
                }
            }
            Event::Kill => self.kill(),
            Event::Tick => {
                // Heartbeats are implied: a live simulated worker is never silent.
                let now = self.now;
                for w in self.workers.keys().copied().collect::<Vec<_>>() {
                    self.timed(|s| {
                        s.scheduler.on_worker_message(w, FromWorker::Heartbeat { memory: 0 }, now, &mut s.comm)
                    });
                }
                self.timed(|s| s.scheduler.on_tick(now, &mut s.comm));
                self.dispatch();
                let next = self.now + 1_000_000;
                self.push(next, Event::Tick);
            }
        }
    }

    fn worker_receives(&mut self, id: WorkerId, msg: ToWorker, epoch: u32) {
        let Some(w) = self.workers.get_mut(&id) else { return };
        match msg {
            ToWorker::Compute(tasks) => w.queue.extend(tasks.into_iter().map(|t| (t, epoch))),
            ToWorker::Release(keys) => {
                for k in keys {
                    if w.data.remove(&k) {
                        if let Some(c) = self.copies.get_mut(&k) {
                            *c -= 1;
                        }
                    }
                    w.queue.retain(|(t, _)| t.key != k);
                    // A running task's result is dropped when it finishes.
                    w.running.remove(&k);
                }
            }
            ToWorker::Steal(keys) => {
                let wanted: KeySet = keys.into_iter().collect();
                let mut given = Vec::new();
                w.queue.retain(|(t, _)| {
                    if wanted.contains(&t.key) {
                        given.push(t.key.clone());
                        false
                    } else {
                        true
                    }
                });
                let at = self.now + self.config.latency_us;
                self.push(at, Event::ToScheduler { worker: id, msg: SimFromWorker(FromWorker::Stolen(given)) });
            }
            ToWorker::Shutdown | ToWorker::Restart => {}
        }
        self.start_tasks(id);
    }

    fn start_tasks(&mut self, id: WorkerId) {
        loop {
            let Some(w) = self.workers.get_mut(&id) else { return };
            if w.running.len() >= w.threads as usize {
                return;
            }
            let Some((task, epoch)) = w.queue.pop_front() else { return };
            let deps = self.deps.get(&task.key).map(Vec::as_slice).unwrap_or_default();
            let missing: Vec<Key> =
                deps.iter().filter(|d| self.copies.get(*d).copied().unwrap_or(0) == 0).cloned().collect();
            if !missing.is_empty() {
                self.report.missing_data += 1;
                let msg = FromWorker::MissingData { key: task.key, missing };
                let at = self.now + self.config.latency_us;
                self.push(at, Event::ToScheduler { worker: id, msg: SimFromWorker(msg) });
                continue;
            }
            if let Some(w) = self.workers.get_mut(&id) {
                w.running.insert(task.key.clone(), epoch);
            }
            let at = self.now + self.config.task_us;
            self.push(at, Event::Done { worker: id, key: task.key });
        }
    }

    fn task_done(&mut self, id: WorkerId, key: Key) {
        let Some(w) = self.workers.get_mut(&id) else { return };
        let Some(epoch) = w.running.remove(&key) else {
            // Released while running: the result is dropped.
            self.start_tasks(id);
            return;
        };
        if w.data.insert(key.clone()) {
            *self.copies.entry(key.clone()).or_insert(0) += 1;
        }
        self.report.runs += 1;
        if self.computed.insert(key.clone(), epoch) == Some(epoch) {
            self.report.violations.push(format!("{key} computed twice from assignments of loss epoch {epoch}"));
        }
        let batch = self.unreported.entry(id).or_default();
        batch.push(FinishedMsg { key, nbytes: 8, duration_us: self.config.task_us });
        if batch.len() == 1 {
            let at = self.now + self.config.latency_us;
            self.push(at, Event::Report { worker: id });
        }
        self.start_tasks(id);
    }

    fn kill(&mut self) {
        if self.workers.len() > 1 {
            let mut ids: Vec<WorkerId> = self.workers.keys().copied().collect();
            ids.sort_unstable();
            let victim = ids[self.rng.below(ids.len() as u64) as usize];
            if let Some(dead) = self.workers.remove(&victim) {
                for k in dead.data {
                    if let Some(c) = self.copies.get_mut(&k) {
                        *c -= 1;
                    }
                }
            }
            self.report.losses += 1;
            self.epoch += 1;
            self.timed(|s| s.scheduler.on_worker_lost(victim, &mut s.comm));
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
