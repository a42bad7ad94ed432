//! The worker state machine.
//!
//! Every entry point is an `on_*` function: it changes the state and acts
//! through a [`WorkerComm`]. The clock comes in as an argument
//! (microseconds since the worker started). A task's way through a worker:
//!
//! ```text
//!   Compute ──▶ paused? ──yes──▶ Parked ──resumed──┐
//!                  │ no                            │
//!                  ▼                               ▼
//!          inputs all here? ──no──▶ Fetching ──all came──▶ Running ──ended──▶ stored / Failed
//!                  │ yes              │ some at no holder
//!                  ▼                  ▼
//!               Running          MissingData (dropped)
//! ```
//!
//! Release drops a task wherever it is (and its result); Steal gives back
//! what is parked or has not started on a thread. After every event the
//! worker spills down to its target and pauses (or resumes) at its
//! threshold, telling the scheduler.

use std::sync::Arc;

use bytes::Bytes;
use shoal_graph::remote::{RemoteFunc, require};
use shoal_graph::{Key, KeyHashMap, Value};
use shoal_proto::{ArgMsg, ComputeMsg, DepLocation, FinishedList, FinishedMsg, FromWorker, TaskId, ToWorker};
use smallvec::SmallVec;

use crate::comm::{Runnable, WorkerComm};
use crate::config::WorkerConfig;
use crate::memory::MemoryGate;
use crate::store::{Held, Payload, Spill, Store, StoreError, Stored, spill_directory};

/// What the network shell does after a message: go on, or end the
/// connection to the scheduler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    /// The scheduler said to stop.
    Shutdown,
    /// The scheduler said to start afresh.
    Restart,
    /// The process passed its memory terminate fraction: it ends so that
    /// its nanny starts a new one.
    OverMemory,
}

/// A task on the executor.
struct Running<H> {
    handle: H,
    producer: &'static RemoteFunc,
    /// When it was handed to the executor (µs).
    queued_us: u64,
    id: TaskId,
}

/// A task and its function.
struct Prepared {
    msg: ComputeMsg,
    remote: &'static RemoteFunc,
}

/// A task waiting for inputs from peers.
struct Fetching {
    task: Prepared,
    /// What came (`None`: none of its holders had it).
    fetched: SmallVec<[(Key, Option<Bytes>); 2]>,
    outstanding: usize,
}

/// Where a task's arguments stand.
enum Resolved {
    Ready(Vec<Value>),
    /// These inputs are elsewhere.
    Need(SmallVec<[Key; 2]>),
    Failed(String),
}

/// The worker: its results, its tasks, and whether it is paused.
pub struct Worker<H> {
    name: String,
    /// Resident bytes past which the process ends (`None`: never).
    terminate_above: Option<u64>,
    inline_max: usize,
    memory_limit: u64,
    store: Store,
    gate: Arc<MemoryGate>,
    running: KeyHashMap<Running<H>>,
    /// Tasks that came while the worker was paused, by arrival number.
    parked: KeyHashMap<(u64, Prepared)>,
    arrivals: u64,
    fetching: KeyHashMap<Fetching>,
    /// Inputs being fetched, and the tasks waiting for each.
    wanted: KeyHashMap<SmallVec<[Key; 2]>>,
    paused: bool,
}

impl<H> Worker<H> {
    /// A worker with nothing yet. `pid` names its spill directory (this
    /// process's, for a real worker).
    pub fn new(config: &WorkerConfig, pid: u32) -> Worker<H> {
        let limit = config.memory_limit;
        let threshold = if limit == 0 { u64::MAX } else { (limit as f64 * config.memory_pause_fraction) as u64 };
        let spill = match config.memory_target_fraction {
            Some(fraction) if limit > 0 => {
                let base = config.local_directory.clone().unwrap_or_else(std::env::temp_dir);
                Some(Spill::new((limit as f64 * fraction) as u64, spill_directory(&base, pid, &config.name)))
            }
            _ => None,
        };
        let gate = Arc::new(MemoryGate::new(threshold));
        let terminate_above = config
            .memory_terminate_fraction
            .filter(|_| limit > 0 && config.exit_on_restart)
            .map(|fraction| (limit as f64 * fraction) as u64);
        Worker {
            name: config.name.clone(),
            terminate_above,
            inline_max: config.inline_max.min(shoal_proto::INLINE_LIMIT),
            memory_limit: limit,
            store: Store::new(gate.clone(), spill),
            gate,
            running: KeyHashMap::default(),
            parked: KeyHashMap::default(),
            arrivals: 0,
            fetching: KeyHashMap::default(),
            wanted: KeyHashMap::default(),
            paused: false,
        }
    }

    /// The gate the executor's threads pass before each task and report
    /// results to.
    pub fn memory_gate(&self) -> &Arc<MemoryGate> {
        &self.gate
    }

    /// Whether the worker is paused for memory.
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// Bytes of results held now (in memory, made results included).
    pub fn memory(&self) -> u64 {
        self.gate.held()
    }

    /// Bytes spilled to disk now.
    pub fn spilled_bytes(&self) -> u64 {
        self.store.spilled_bytes()
    }

    /// Whether `key`'s result is held here (not a use of it).
    pub fn holds(&self, key: &Key) -> bool {
        self.store.holds(key)
    }

    /// Tasks on the executor now.
    pub fn running(&self) -> usize {
        self.running.len()
    }

    /// Tasks parked while the worker is paused.
    pub fn parked(&self) -> usize {
        self.parked.len()
    }

    /// Tasks waiting for inputs from peers.
    pub fn fetching(&self) -> usize {
        self.fetching.len()
    }

    /// `key`'s result, to send it out (a use of it: it is spilled last).
    pub fn payload(&mut self, key: &Key) -> Option<Result<Payload, StoreError>> {
        self.store.get(key).map(Stored::payload)
    }

    /// The actor `key`'s task made, if this worker holds it (a use of it).
    pub fn actor(&mut self, key: &Key) -> Option<Arc<shoal_graph::actor::ActorCell>> {
        match &self.store.get(key)?.held {
            Held::Value { value, .. } => value.clone().downcast::<shoal_graph::actor::ActorCell>().ok(),
            _ => None,
        }
    }

    /// `key`'s result, encoded.
    pub fn encoded(&mut self, key: &Key) -> Option<Result<Bytes, StoreError>> {
        self.store.get(key).map(Stored::encoded)
    }

    /// The worker has joined its scheduler (again): it tells it whether it
    /// is paused.
    pub fn on_joined(&mut self, now_us: u64, comm: &mut impl WorkerComm<Handle = H>) {
        self.update_memory(now_us, comm);
    }

    /// A message from the scheduler; what the shell must do, if anything.
    pub fn on_message(
        &mut self,
        msg: ToWorker,
        now_us: u64,
        comm: &mut impl WorkerComm<Handle = H>,
    ) -> Option<Control> {
        let control = match msg {
            ToWorker::Compute(tasks) => {
                for task in tasks {
                    self.on_compute(task, now_us, comm);
                }
                None
            }
            ToWorker::Release(keys) => {
                self.on_release(keys, comm);
                None
            }
            ToWorker::Steal(keys) => {
                self.on_steal(keys, comm);
                None
            }
            ToWorker::Shutdown => Some(Control::Shutdown),
            ToWorker::Restart => Some(Control::Restart),
        };
        self.update_memory(now_us, comm);
        control
    }

    fn on_compute(&mut self, msg: ComputeMsg, now_us: u64, comm: &mut impl WorkerComm<Handle = H>) {
        let remote = match require(&msg.func) {
            Ok(r) => r,
            Err(e) => {
                comm.to_scheduler(FromWorker::Failed { key: msg.key, message: e.to_string() });
                return;
            }
        };
        let task = Prepared { msg, remote };
        if self.paused {
            // It waits before fetching anything (the scheduler may steal it).
            self.arrivals += 1;
            self.parked.insert(task.msg.key.clone(), (self.arrivals, task));
            return;
        }
        self.start(task, SmallVec::new(), now_us, comm);
    }

    /// Hands a task to the executor if all its inputs are here (or were
    /// fetched), else asks peers for the rest.
    fn start(
        &mut self,
        task: Prepared,
        fetched: SmallVec<[(Key, Option<Bytes>); 2]>,
        now_us: u64,
        comm: &mut impl WorkerComm<Handle = H>,
    ) {
        match self.resolve(&task, &fetched) {
            Resolved::Ready(values) => self.execute(task, values, now_us, comm),
            Resolved::Failed(message) => comm.to_scheduler(FromWorker::Failed { key: task.msg.key, message }),
            Resolved::Need(deps) => {
                let key = task.msg.key.clone();
                let mut waiting = Fetching { fetched, outstanding: 0, task };
                for dep in deps {
                    let Some(location) = waiting.task.msg.deps.iter().find(|d| d.key == dep) else {
                        // Nobody was said to hold it.
                        waiting.fetched.push((dep, None));
                        continue;
                    };
                    waiting.outstanding += 1;
                    let waiters = self.wanted.entry(dep).or_default();
                    if waiters.is_empty() {
                        comm.fetch(location);
                    }
                    waiters.push(key.clone());
                }
                if waiting.outstanding == 0 {
                    self.finish_fetching(waiting, now_us, comm);
                } else {
                    self.fetching.insert(key, waiting);
                }
            }
        }
    }

    /// The task's arguments, decoded, or the inputs still to fetch. Values
    /// decoded before a missing input shows up are dropped: most tasks have
    /// everything here, and they are decoded once.
    fn resolve(&mut self, task: &Prepared, fetched: &[(Key, Option<Bytes>)]) -> Resolved {
        let Prepared { msg, remote } = task;
        let fetched_bytes = |key: &Key| fetched.iter().find(|(k, _)| k == key).and_then(|(_, b)| b.as_ref()).cloned();
        let mut values = Vec::with_capacity(msg.args.len());
        let mut need: SmallVec<[Key; 2]> = SmallVec::new();
        for (position, arg) in msg.args.iter().enumerate() {
            let value = match arg {
                ArgMsg::Value(bytes) => {
                    if !need.is_empty() {
                        continue;
                    }
                    remote.decode_arg(position, bytes).map_err(StoreError::from)
                }
                ArgMsg::Key(dep) => match self.store.get(dep) {
                    Some(stored) if need.is_empty() => stored.value_for(remote, position),
                    Some(_) => continue,
                    None => match inline_input(dep, &msg.deps) {
                        // Sent along by the scheduler.
                        Some(bytes) if need.is_empty() => remote.decode_arg(position, bytes).map_err(StoreError::from),
                        Some(_) => continue,
                        None => match fetched_bytes(dep) {
                            Some(bytes) if need.is_empty() => {
                                remote.decode_arg_shared(position, &bytes).map_err(StoreError::from)
                            }
                            Some(_) => continue,
                            None => {
                                if !need.contains(dep) {
                                    need.push(dep.clone());
                                }
                                continue;
                            }
                        },
                    },
                },
                ArgMsg::List(elements) => {
                    // postcard writes a Vec<T> as its length (varint) followed
                    // by its elements: the parameter's own codec decodes it.
                    let mut bytes = match postcard::to_allocvec(&(elements.len() as u64)) {
                        Ok(b) => b,
                        Err(e) => return Resolved::Failed(e.to_string()),
                    };
                    let mut complete = true;
                    for element in elements.iter() {
                        let here = match self.store.get(element).map(Stored::encoded) {
                            Some(Ok(b)) => Some(b),
                            Some(Err(e)) => return Resolved::Failed(e.to_string()),
                            None => inline_input(element, &msg.deps)
                                .map(Bytes::copy_from_slice)
                                .or_else(|| fetched_bytes(element)),
                        };
                        match here {
                            Some(b) => bytes.extend_from_slice(&b),
                            None => {
                                complete = false;
                                if !need.contains(element) {
                                    need.push(element.clone());
                                }
                            }
                        }
                    }
                    if !complete || !need.is_empty() {
                        continue;
                    }
                    remote.decode_arg(position, &bytes).map_err(StoreError::from)
                }
            };
            match value {
                Ok(v) => values.push(v),
                Err(e) => return Resolved::Failed(e.to_string()),
            }
        }
        if need.is_empty() { Resolved::Ready(values) } else { Resolved::Need(need) }
    }

    fn execute(&mut self, task: Prepared, values: Vec<Value>, now_us: u64, comm: &mut impl WorkerComm<Handle = H>) {
        let Prepared { msg, remote } = task;
        let key = msg.key;
        let Some(handle) = comm.execute(Runnable { key: key.clone(), func: remote, values }) else { return };
        self.running.insert(key, Running { handle, producer: remote, queued_us: now_us, id: msg.id });
    }

    /// An input asked for with [`WorkerComm::fetch`] came (`None`: none of
    /// its holders had it).
    pub fn on_peer_data(
        &mut self,
        dep: &Key,
        data: Option<Bytes>,
        now_us: u64,
        comm: &mut impl WorkerComm<Handle = H>,
    ) {
        for key in self.wanted.remove(dep).unwrap_or_default() {
            let Some(waiting) = self.fetching.get_mut(&key) else { continue };
            waiting.fetched.push((dep.clone(), data.clone()));
            waiting.outstanding -= 1;
            if waiting.outstanding == 0
                && let Some(waiting) = self.fetching.remove(&key)
            {
                self.finish_fetching(waiting, now_us, comm);
            }
        }
        self.update_memory(now_us, comm);
    }

    /// Every input a task waited for came, or was found at no holder.
    fn finish_fetching(&mut self, waiting: Fetching, now_us: u64, comm: &mut impl WorkerComm<Handle = H>) {
        let missing: Vec<Key> = waiting.fetched.iter().filter(|(_, b)| b.is_none()).map(|(k, _)| k.clone()).collect();
        if !missing.is_empty() {
            comm.to_scheduler(FromWorker::MissingData { key: waiting.task.msg.key, missing });
            return;
        }
        // An input held here may have been released meanwhile: then it is
        // fetched too.
        self.start(waiting.task, waiting.fetched, now_us, comm);
    }

    fn on_release(&mut self, keys: Vec<Key>, comm: &mut impl WorkerComm<Handle = H>) {
        for k in keys {
            if self.store.remove(&k) {
                comm.forget(&k);
            }
            self.parked.remove(&k);
            self.fetching.remove(&k);
            if let Some(run) = self.running.remove(&k) {
                comm.cancel(&run.handle);
                self.gate.settle(&k);
            }
        }
    }

    fn on_steal(&mut self, keys: Vec<Key>, comm: &mut impl WorkerComm<Handle = H>) {
        let mut given = Vec::new();
        for k in keys {
            if self.parked.remove(&k).is_some() {
                given.push(k);
                continue;
            }
            if self.running.get(&k).is_some_and(|run| comm.not_started(&run.handle))
                && let Some(run) = self.running.remove(&k)
            {
                comm.cancel(&run.handle);
                given.push(k);
            }
        }
        comm.to_scheduler(FromWorker::Stolen(given));
    }

    /// Tasks the executor ended: their results go to the store, and one
    /// report of them all to the scheduler (failures each their own).
    /// Results up to the inline maximum go along encoded (see
    /// [`WorkerConfig::inline_max`]).
    pub fn on_tasks_done(
        &mut self,
        keys: impl IntoIterator<Item = Key>,
        now_us: u64,
        comm: &mut impl WorkerComm<Handle = H>,
    ) {
        let mut finished = FinishedList::new();
        for key in keys {
            let Some(run) = self.running.remove(&key) else { continue };
            match comm.outcome(&run.handle) {
                Some(Ok(value)) => {
                    let producer = run.producer;
                    let nbytes = producer.result_size(&value).unwrap_or(0);
                    let inline = if self.inline_max > 0 && nbytes <= self.inline_max as u64 {
                        producer.encode_result(&value).ok()
                    } else {
                        None
                    };
                    if self.store.keep(key.clone(), Stored::new(Held::Value { value, producer }, nbytes)) {
                        comm.forget(&key);
                    }
                    // Time on this worker, queueing included: what the
                    // scheduler should expect a task of this group to occupy
                    // a slot for.
                    let duration_us = now_us.saturating_sub(run.queued_us);
                    finished.push(FinishedMsg { id: run.id, key: key.clone(), nbytes, duration_us, inline });
                }
                Some(Err(message)) => comm.to_scheduler(FromWorker::Failed { key: key.clone(), message }),
                None => {}
            }
            // Stored now (counted once, there), or failed.
            self.gate.settle(&key);
        }
        if !finished.is_empty() {
            comm.to_scheduler(FromWorker::Finished(finished));
        }
        self.update_memory(now_us, comm);
    }

    /// Values a client put here (scatter), kept as the bytes that came.
    pub fn on_put(
        &mut self,
        values: impl IntoIterator<Item = (Key, Bytes)>,
        now_us: u64,
        comm: &mut impl WorkerComm<Handle = H>,
    ) {
        for (key, bytes) in values {
            let nbytes = bytes.len() as u64;
            if self.store.keep(key.clone(), Stored::new(Held::Bytes(bytes), nbytes)) {
                comm.forget(&key);
            }
        }
        self.update_memory(now_us, comm);
    }

    /// The process's resident memory, sampled: past the terminate fraction
    /// of the limit the process must end, for its nanny to start a new one
    /// (its tasks run again elsewhere). It is the whole process's memory,
    /// not only the results it holds: what a task allocates beyond its
    /// result counts, and so does a leak.
    pub fn on_memory_sample(&mut self, resident: u64) -> Option<Control> {
        let threshold = self.terminate_above?;
        (resident > threshold).then(|| {
            tracing::warn!(
                "worker {}: its process uses {resident} bytes, past its terminate threshold of {threshold}: \
                 ending it for a new one (its tasks run again elsewhere)",
                self.name
            );
            Control::OverMemory
        })
    }

    /// Time passes: the worker says it is alive and what it holds.
    pub fn on_tick(&mut self, now_us: u64, comm: &mut impl WorkerComm<Handle = H>) {
        comm.to_scheduler(FromWorker::Heartbeat { memory: self.gate.held() });
        self.update_memory(now_us, comm);
    }

    /// Drops everything — results, tasks wherever they are — as after a
    /// restart, or when the scheduler that knew them is gone.
    pub fn reset(&mut self, comm: &mut impl WorkerComm<Handle = H>) {
        for (_, run) in self.running.drain() {
            comm.cancel(&run.handle);
        }
        self.store.clear();
        self.parked.clear();
        self.fetching.clear();
        self.wanted.clear();
        self.paused = false;
    }

    /// Spills down to the target, then pauses or resumes as the bytes held
    /// cross the pause threshold, telling the scheduler. Tasks parked while
    /// paused start on resuming, in the order they came.
    fn update_memory(&mut self, now_us: u64, comm: &mut impl WorkerComm<Handle = H>) {
        if self.memory_limit == 0 {
            return;
        }
        let before = self.store.spilled_bytes();
        self.store.spill_to_target();
        let spilled = self.store.spilled_bytes();
        if spilled > before {
            tracing::debug!("worker {}: spilled {} bytes to disk ({spilled} there now)", self.name, spilled - before);
        }
        let over = self.gate.over();
        if self.paused == over {
            return;
        }
        let held = self.gate.held();
        if over {
            tracing::warn!(
                "worker {}: pausing, it holds {held} bytes of its {}-byte memory limit",
                self.name,
                self.memory_limit
            );
        } else {
            tracing::info!("worker {}: resuming, it holds {held} bytes", self.name);
        }
        self.paused = over;
        comm.to_scheduler(FromWorker::Paused(over));
        if !over {
            let mut parked: Vec<(u64, Prepared)> = self.parked.drain().map(|(_, p)| p).collect();
            parked.sort_by_key(|(arrival, _)| *arrival);
            for (_, task) in parked {
                self.start(task, SmallVec::new(), now_us, comm);
            }
        }
    }
}

/// The result `key` as it came inside the compute message (see
/// [`DepLocation::inline`]), if it did.
pub fn inline_input<'a>(key: &Key, deps: &'a [DepLocation]) -> Option<&'a [u8]> {
    deps.iter().find(|d| d.key == *key)?.inline.as_deref()
}
