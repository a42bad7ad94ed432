//! The runtime: submission, the ready queues, execution and completion.

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_deque::{Injector, Steal, Stealer, Worker};
use parking_lot::{Mutex, MutexGuard};
use shoal_graph::{Arg, Key, Task, TaskError, Value};

use crate::keymap::KeyMap;
use crate::node::{Body, Content, Failure, FailureKind, Listener, Node, Notify, Outcome, Phase, Slot, Slots, State};
use crate::sleep::Sleep;

/// How many submitted tasks are queued before idle threads are woken: large
/// enough that waking costs nothing per task, small enough that threads start
/// while a big `map` is still being submitted.
const SUBMIT_FLUSH: usize = 1024;

/// Rounds an idle thread looks for work before it sleeps, yielding its core
/// in between (to the submitting thread, on a small machine): a task that
/// arrives within some tens of microseconds starts without a futex round trip.
const IDLE_ROUNDS: u32 = 64;

/// For each key argument of a task, in order: `Some(i)` when it is the
/// result of task `i` of the same batch (counting from 0), `None` when it is
/// a key the runtime already holds.
pub type LocalDeps = smallvec::SmallVec<[Option<u32>; 4]>;

/// One task to submit.
pub struct Submission {
    /// The task.
    pub task: Task,
    /// How many times to rerun it after it fails.
    pub retries: u32,
    /// Whether to return a [`Handle`] for it.
    pub hold: bool,
    /// Told (with this index) when the task is done.
    pub notify: Option<(Arc<dyn Notify>, usize)>,
    /// Which key arguments are results of earlier tasks of this batch.
    pub local_deps: LocalDeps,
    /// How many key arguments of later tasks of this batch refer to this one.
    /// The result is kept for them even if the task finishes before they are
    /// submitted.
    pub consumers_in_batch: u32,
}

impl Submission {
    /// A task with no retries, no handle, no in-batch links.
    pub fn new(task: Task) -> Submission {
        Submission { task, retries: 0, hold: false, notify: None, local_deps: LocalDeps::new(), consumers_in_batch: 0 }
    }

    /// Returns a handle for the task.
    pub fn held(mut self) -> Submission {
        self.hold = true;
        self
    }

    /// Reruns the task up to `retries` times after it fails.
    pub fn retries(mut self, retries: u32) -> Submission {
        self.retries = retries;
        self
    }
}

/// Tasks of the batch being submitted that later tasks of it still refer
/// to, by batch position, with how many references are still to come.
#[derive(Default)]
struct BatchLinks {
    open: rustc_hash::FxHashMap<u32, (Arc<Node>, u32)>,
}

impl BatchLinks {
    fn add(&mut self, position: u32, node: &Arc<Node>, references: u32) {
        if references > 0 {
            self.open.insert(position, (node.clone(), references));
        }
    }

    /// The node at `position`, for one of its reserved references.
    fn take(&mut self, position: u32) -> Option<Arc<Node>> {
        let (node, left) = self.open.get_mut(&position)?;
        *left -= 1;
        if *left == 0 {
            return self.open.remove(&position).map(|(n, _)| n);
        }
        Some(node.clone())
    }
}

/// Where a ready task goes.
pub(crate) enum Queue<'a> {
    /// The running thread's own deque (depth-first: newest first).
    Local(&'a Worker<Arc<Node>>),
    /// The shared queue, from outside the pool.
    Injector,
    /// The single queue of the sync executor.
    Sync,
}

pub(crate) struct Shared {
    keys: KeyMap,
    injector: Injector<Arc<Node>>,
    stealers: Mutex<Vec<Stealer<Arc<Node>>>>,
    sleep: Sleep,
    /// `Some` for the sync executor: tasks run on the threads that wait.
    sync_queue: Option<Mutex<VecDeque<Arc<Node>>>>,
    shutdown: AtomicBool,
    threads: usize,
}

/// Stops the threads when the last [`Runtime`] clone is dropped.
struct Pool {
    shared: Arc<Shared>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

/// An in-process executor: `sync` (tasks run on the thread that waits for
/// them, one at a time, in a fixed order) or `threads` (a work-stealing pool).
///
/// Cloning shares the executor; the threads stop when the last clone is
/// dropped, and tasks that had not run then fail with a shutdown error.
#[derive(Clone)]
pub struct Runtime {
    shared: Arc<Shared>,
    _pool: Arc<Pool>,
}

/// Counters describing a runtime at one moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stats {
    /// Keys the runtime holds: tasks pending, running, or results still needed.
    pub known_keys: usize,
    /// Worker threads (0 for the sync executor).
    pub threads: usize,
}

impl Runtime {
    /// A work-stealing pool of `threads` threads (at least one).
    ///
    /// # Errors
    /// When the operating system refuses to start a thread.
    pub fn threads(threads: usize) -> std::io::Result<Runtime> {
        let threads = threads.max(1);
        let shared = Arc::new(Shared::new(None, threads));
        let pool = Arc::new(Pool { shared: shared.clone(), threads: Mutex::new(Vec::new()) });
        let workers: Vec<Worker<Arc<Node>>> = (0..threads).map(|_| Worker::new_lifo()).collect();
        *shared.stealers.lock() = workers.iter().map(Worker::stealer).collect();
        for (i, local) in workers.into_iter().enumerate() {
            let s = shared.clone();
            let handle =
                std::thread::Builder::new().name(format!("shoal-worker-{i}")).spawn(move || s.worker_loop(local))?;
            pool.threads.lock().push(handle);
        }
        Ok(Runtime { shared, _pool: pool })
    }

    /// The deterministic single-threaded executor: tasks run on the thread
    /// that waits for a result, in submission order, depth first.
    pub fn sync() -> Runtime {
        let shared = Arc::new(Shared::new(Some(Mutex::new(VecDeque::new())), 0));
        let pool = Arc::new(Pool { shared: shared.clone(), threads: Mutex::new(Vec::new()) });
        Runtime { shared, _pool: pool }
    }

    /// Submits tasks and returns handles for those with `hold` set, in order.
    ///
    /// A task whose key is already known is not submitted again: its handle
    /// refers to the existing task. Dependencies must come before their
    /// dependents in `batch` (and be named in [`Submission::local_deps`], with
    /// [`Submission::consumers_in_batch`] counted) or be known already; a task
    /// that refers to a key the runtime does not know fails with
    /// [`FailureKind::UnknownDependency`]. Tasks start while the batch is still
    /// being submitted.
    ///
    /// # Performance
    /// A few hundred nanoseconds and one allocation per argument per task; idle
    /// threads are woken once per batch of 1024 tasks, not per task.
    pub fn submit(&self, batch: impl IntoIterator<Item = Submission>) -> Vec<Handle> {
        self.shared.submit(batch)
    }

    /// Submits one task and returns its handle if `hold` is set; as
    /// [`Runtime::submit`] without allocating for the batch.
    pub fn submit_one(&self, submission: Submission) -> Option<Handle> {
        let hold = submission.hold;
        let mut ready = Vec::new();
        let node = self.shared.insert(submission, 0, &mut BatchLinks::default(), &mut ready);
        self.shared.push_ready_batch(&mut ready);
        hold.then(|| Handle { node, shared: self.shared.clone() })
    }

    /// A handle to the task with this key, if the runtime knows it.
    pub fn handle(&self, key: &Key) -> Option<Handle> {
        let node = self.shared.keys.get(key)?;
        let mut st = node.state.lock();
        if st.released {
            return None;
        }
        st.holders += 1;
        drop(st);
        Some(Handle { node, shared: self.shared.clone() })
    }

    /// Counters describing the runtime now.
    pub fn stats(&self) -> Stats {
        Stats { known_keys: self.shared.keys.len(), threads: self.shared.threads }
    }

    /// Whether this is the sync executor.
    pub fn is_sync(&self) -> bool {
        self.shared.sync_queue.is_some()
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        self.shared.sleep.wake_all();
        for t in self.threads.lock().drain(..) {
            // A worker thread only panics on a broken invariant; the pool is
            // going away either way.
            let _ = t.join();
        }
        while let Some(node) = pop_injector(&self.shared.injector) {
            self.shared.abandon(node);
        }
        if let Some(q) = &self.shared.sync_queue {
            let drained: Vec<_> = q.lock().drain(..).collect();
            for node in drained {
                self.shared.abandon(node);
            }
        }
    }
}

fn pop_injector(injector: &Injector<Arc<Node>>) -> Option<Arc<Node>> {
    loop {
        match injector.steal() {
            Steal::Success(n) => return Some(n),
            Steal::Empty => return None,
            Steal::Retry => {}
        }
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a non-string payload".to_string()
    }
}

impl Shared {
    fn new(sync_queue: Option<Mutex<VecDeque<Arc<Node>>>>, threads: usize) -> Shared {
        Shared {
            keys: KeyMap::new(),
            injector: Injector::new(),
            stealers: Mutex::new(Vec::new()),
            sleep: Sleep::new(),
            sync_queue,
            shutdown: AtomicBool::new(false),
            threads,
        }
    }

    fn submit(self: &Arc<Self>, batch: impl IntoIterator<Item = Submission>) -> Vec<Handle> {
        let mut handles = Vec::new();
        let mut ready: Vec<Arc<Node>> = Vec::new();
        let mut links = BatchLinks::default();
        for (position, submission) in batch.into_iter().enumerate() {
            let hold = submission.hold;
            let node = self.insert(submission, position as u32, &mut links, &mut ready);
            if hold {
                handles.push(Handle { node, shared: self.clone() });
            }
            if ready.len() >= SUBMIT_FLUSH {
                self.push_ready_batch(&mut ready);
            }
        }
        self.push_ready_batch(&mut ready);
        // References the caller announced but no task made: let them go.
        for (_, (node, left)) in links.open.drain() {
            for _ in 0..left {
                self.release_input(&node);
            }
        }
        handles
    }

    /// Adds one task, or finds the live task with its key. A held handle has
    /// been counted on the returned node.
    fn insert(
        self: &Arc<Self>,
        submission: Submission,
        position: u32,
        links: &mut BatchLinks,
        ready: &mut Vec<Arc<Node>>,
    ) -> Arc<Node> {
        let Submission { task: Task { key, func, args }, retries, hold, notify, local_deps, consumers_in_batch } =
            submission;
        // A task without key arguments is complete at once; others get their
        // dependency slots once wired.
        let has_deps = args.iter().any(|a| matches!(a, Arg::Key(_)));
        let mut args = Some(args);
        let mut notify = notify;
        let node = loop {
            let found = self.keys.shard(&key).find_or_insert(
                &key,
                |existing| !existing.state.lock().released,
                || {
                    let slots = if has_deps {
                        Slots::new()
                    } else {
                        args.take()
                            .into_iter()
                            .flatten()
                            .filter_map(|a| match a {
                                Arg::Value(v) => Some(Slot::Value(v)),
                                Arg::Key(_) => None,
                            })
                            .collect()
                    };
                    let listeners = notify.take().map(|(n, i)| vec![Listener::Notify(n, i)]).unwrap_or_default();
                    let body = Body { func: func.clone(), args: slots };
                    Arc::new(Node::new(key.clone(), body, retries, u32::from(hold), consumers_in_batch, listeners))
                },
            );
            let existing = match found {
                Ok(node) => break node,
                Err(existing) => existing,
            };
            let mut st = existing.state.lock();
            if st.released {
                // Released since it was found: look again (it is replaced).
                continue;
            }
            st.holders += u32::from(hold);
            st.consumers += consumers_in_batch;
            let call_now = match notify.take() {
                Some((n, i)) if st.phase.is_terminal() => Some((n, i)),
                Some((n, i)) => {
                    st.listeners.push(Listener::Notify(n, i));
                    None
                }
                None => None,
            };
            drop(st);
            if let Some((n, i)) = call_now {
                n.done(i);
            }
            links.add(position, &existing, consumers_in_batch);
            // The existing task already has its inputs: give back the
            // references reserved for this copy of it.
            for dep in local_deps.iter().flatten().filter_map(|&p| links.take(p)) {
                self.release_input(&dep);
            }
            return existing;
        };
        links.add(position, &node, consumers_in_batch);
        let Some(args) = args else {
            if node.deps_left.fetch_sub(1, Ordering::AcqRel) == 1 {
                ready.push(node.clone());
            }
            return node;
        };

        let mut failure: Option<FailureKind> = None;
        let mut key_args = 0;
        let slots: Slots = args
            .into_iter()
            .filter_map(|arg| match arg {
                Arg::Value(v) => Some(Slot::Value(v)),
                Arg::Key(k) => {
                    let local = local_deps.get(key_args).copied().flatten();
                    key_args += 1;
                    let wired = match local.and_then(|p| links.take(p)) {
                        Some(dep) => self.wire_dependency(&node, dep, true),
                        None => match self.keys.get(&k) {
                            Some(dep) => self.wire_dependency(&node, dep, false),
                            None => Err(FailureKind::UnknownDependency(k)),
                        },
                    };
                    match wired {
                        Ok(dep) => Some(Slot::Dep(dep)),
                        Err(kind) => {
                            failure.get_or_insert(kind);
                            None
                        }
                    }
                }
            })
            .collect();
        let mut st = node.state.lock();
        if let Content::Body(body) = &mut st.content {
            body.args = slots;
        }
        match failure {
            Some(kind) if st.phase == Phase::Pending => {
                let f = Arc::new(Failure { key: node.key.clone(), kind });
                let body = st.settle_content(Phase::Erred, Content::Failed(f));
                self.settle(&node, st, body, &self.outside_queue());
            }
            _ => drop(st),
        }
        if node.deps_left.fetch_sub(1, Ordering::AcqRel) == 1 {
            ready.push(node.clone());
        }
        node
    }

    /// Makes `node` a consumer of `dep` (and a listener, if `dep` is not
    /// done); the dependency's failure if it has one. A `reserved` reference
    /// was counted when `dep` was submitted.
    fn wire_dependency(&self, node: &Arc<Node>, dep: Arc<Node>, reserved: bool) -> Result<Arc<Node>, FailureKind> {
        let mut ds = dep.state.lock();
        if !reserved {
            if ds.released {
                drop(ds);
                return Err(FailureKind::UnknownDependency(dep.key.clone()));
            }
            ds.consumers += 1;
        }
        let failed = match ds.phase {
            Phase::Memory => None,
            Phase::Erred | Phase::Cancelled => ds.failure(),
            Phase::Pending | Phase::Running => {
                node.deps_left.fetch_add(1, Ordering::Relaxed);
                ds.listeners.push(Listener::Dependent(node.clone()));
                None
            }
        };
        drop(ds);
        match failed {
            // Still counted as a consumer: the failing node lets go of it.
            Some(f) => {
                self.release_input(&dep);
                Err(FailureKind::Dependency(f))
            }
            None => Ok(dep),
        }
    }

    fn outside_queue(&self) -> Queue<'static> {
        if self.sync_queue.is_some() { Queue::Sync } else { Queue::Injector }
    }

    fn push_ready_batch(&self, ready: &mut Vec<Arc<Node>>) {
        if ready.is_empty() {
            return;
        }
        if let Some(q) = &self.sync_queue {
            q.lock().extend(ready.drain(..));
            return;
        }
        let n = ready.len();
        for node in ready.drain(..) {
            self.injector.push(node);
        }
        self.wake(n);
    }

    fn push(&self, queue: &Queue<'_>, node: Arc<Node>) {
        match queue {
            Queue::Local(local) => {
                // Wake a sleeper only for surplus work: the first ready task is
                // the one this thread runs next.
                let surplus = !local.is_empty();
                local.push(node);
                if surplus {
                    self.wake(1);
                }
            }
            Queue::Injector => {
                self.injector.push(node);
                self.wake(1);
            }
            Queue::Sync => {
                if let Some(q) = &self.sync_queue {
                    q.lock().push_front(node);
                }
            }
        }
    }

    /// After queueing `n` tasks (see the `sleep` module for why this
    /// loses no wake-up).
    fn wake(&self, n: usize) {
        self.sleep.wake(n);
    }

    fn has_work(&self) -> bool {
        !self.injector.is_empty() || self.stealers.lock().iter().any(|s| !s.is_empty())
    }

    fn find_task(&self, local: &Worker<Arc<Node>>, stealers: &[Stealer<Arc<Node>>]) -> Option<Arc<Node>> {
        if let Some(n) = local.pop() {
            return Some(n);
        }
        loop {
            let mut retry = false;
            match self.injector.steal_batch_and_pop(local) {
                Steal::Success(n) => return Some(n),
                Steal::Retry => retry = true,
                Steal::Empty => {}
            }
            for s in stealers {
                match s.steal() {
                    Steal::Success(n) => return Some(n),
                    Steal::Retry => retry = true,
                    Steal::Empty => {}
                }
            }
            if !retry {
                return None;
            }
        }
    }

    fn worker_loop(self: Arc<Self>, local: Worker<Arc<Node>>) {
        let stealers: Vec<_> = self.stealers.lock().clone();
        let queue = Queue::Local(&local);
        'outer: loop {
            if self.shutdown.load(Ordering::Relaxed) {
                break;
            }
            if let Some(node) = self.find_task(&local, &stealers) {
                self.run(node, &queue);
                continue;
            }
            for _ in 0..IDLE_ROUNDS {
                std::thread::yield_now();
                if !self.injector.is_empty() || stealers.iter().any(|s| !s.is_empty()) {
                    continue 'outer;
                }
            }
            self.sleep.sleep_unless(|| self.shutdown.load(Ordering::SeqCst) || self.has_work());
        }
        while let Some(node) = local.pop() {
            self.abandon(node);
        }
    }

    /// Fails a queued task that will never run because the pool stopped.
    fn abandon(&self, node: Arc<Node>) {
        let mut st = node.state.lock();
        if st.phase != Phase::Pending {
            return;
        }
        let failure = Arc::new(Failure { key: node.key.clone(), kind: FailureKind::Shutdown });
        let body = st.settle_content(Phase::Erred, Content::Failed(failure));
        self.settle(&node, st, body, &Queue::Injector);
    }

    /// Runs one ready task to its next phase.
    fn run(&self, node: Arc<Node>, queue: &Queue<'_>) {
        let (body, last_attempt) = {
            let mut st = node.state.lock();
            if st.phase != Phase::Pending {
                return;
            }
            st.phase = Phase::Running;
            if st.retries_left > 0 {
                (st.body().map(Body::share), false)
            } else {
                (st.settle_content(Phase::Running, Content::Empty), true)
            }
        };
        let Some(Body { func, args }) = body else {
            return;
        };
        let mut values: Vec<Value> = Vec::with_capacity(args.len());
        let mut missing = None;
        for slot in args {
            match slot {
                Slot::Value(v) => values.push(v),
                Slot::Dep(dep) => match self.read_dependency(&dep, last_attempt) {
                    Some(v) => values.push(v),
                    None => missing = Some(dep.key.clone()),
                },
            }
        }
        let result = match missing {
            Some(k) => Err(FailureKind::UnknownDependency(k)),
            None => match catch_unwind(AssertUnwindSafe(|| func.call(values))) {
                Ok(r) => r.map_err(FailureKind::Task),
                Err(payload) => Err(FailureKind::Task(TaskError::Panicked(panic_message(payload)))),
            },
        };
        self.finish(&node, result, queue);
    }

    /// The value of a finished dependency. On the last attempt the read also
    /// consumes it: the last reader of a result nobody else holds takes it
    /// (no clone, and the memory goes with the consumer).
    fn read_dependency(&self, dep: &Arc<Node>, consume: bool) -> Option<Value> {
        let mut ds = dep.state.lock();
        if !consume {
            return ds.value();
        }
        ds.consumers -= 1;
        let value = if ds.consumers == 0 && ds.holders == 0 { ds.take_value() } else { ds.value() };
        let release = ds.try_release();
        drop(ds);
        if release {
            self.keys.remove(dep);
        }
        value
    }

    fn finish(&self, node: &Arc<Node>, result: Result<Value, FailureKind>, queue: &Queue<'_>) {
        let mut st = node.state.lock();
        let (phase, content) = if st.cancel_requested {
            let f = Arc::new(Failure { key: node.key.clone(), kind: FailureKind::Cancelled });
            (Phase::Cancelled, Content::Failed(f))
        } else {
            match result {
                Ok(v) => (Phase::Memory, Content::Value(v)),
                Err(FailureKind::Task(_)) if st.retries_left > 0 => {
                    st.retries_left -= 1;
                    st.phase = Phase::Pending;
                    drop(st);
                    self.push(queue, node.clone());
                    return;
                }
                Err(kind) => (Phase::Erred, Content::Failed(Arc::new(Failure { key: node.key.clone(), kind }))),
            }
        };
        let body = st.settle_content(phase, content);
        self.settle(node, st, body, queue);
    }

    /// After a node became terminal (`body` is what it still held to run):
    /// tells observers, wakes waiters, lets go of its inputs, makes ready the
    /// dependents it completed, and fails dependents of a failure,
    /// transitively (with a work list, so a failure at the root of a long
    /// chain does not recurse).
    fn settle(&self, node: &Arc<Node>, st: MutexGuard<'_, State>, body: Option<Body>, queue: &Queue<'_>) {
        let mut failed: Vec<(Arc<Node>, Arc<Failure>)> = Vec::new();
        self.settle_one(node, st, body, queue, &mut failed);
        while let Some((dependent, cause)) = failed.pop() {
            let mut st = dependent.state.lock();
            if st.phase != Phase::Pending {
                continue;
            }
            let failure = Arc::new(Failure { key: dependent.key.clone(), kind: FailureKind::Dependency(cause) });
            let body = st.settle_content(Phase::Erred, Content::Failed(failure));
            self.settle_one(&dependent, st, body, queue, &mut failed);
        }
    }

    fn settle_one(
        &self,
        node: &Arc<Node>,
        mut st: MutexGuard<'_, State>,
        body: Option<Body>,
        queue: &Queue<'_>,
        failed: &mut Vec<(Arc<Node>, Arc<Failure>)>,
    ) {
        let mut listeners = std::mem::take(&mut st.listeners);
        // Observers hear of the outcome before anyone waiting for it wakes, so a
        // waiter that returns sees every count up to date.
        listeners.retain(|l| match l {
            Listener::Notify(n, i) => {
                n.done(*i);
                false
            }
            Listener::Dependent(_) => true,
        });
        if st.has_waiters {
            st.has_waiters = false;
            node.done.notify_all();
        }
        let failure = st.failure();
        let release = st.try_release();
        drop(st);
        if release {
            self.keys.remove(node);
        }
        if let Some(body) = body {
            for dep in body.into_deps() {
                self.release_input(&dep);
            }
        }
        for listener in listeners {
            match listener {
                Listener::Dependent(d) => match &failure {
                    None => {
                        if d.deps_left.fetch_sub(1, Ordering::AcqRel) == 1 {
                            self.push(queue, d);
                        }
                    }
                    Some(f) => failed.push((d, f.clone())),
                },
                Listener::Notify(..) => unreachable!("observers were told above"),
            }
        }
    }

    /// A task that will not read `dep` any more stops counting as its consumer.
    fn release_input(&self, dep: &Arc<Node>) {
        let mut ds = dep.state.lock();
        ds.consumers -= 1;
        let release = ds.try_release();
        drop(ds);
        if release {
            self.keys.remove(dep);
        }
    }

    /// In the sync executor, runs queued tasks on this thread until `node` is
    /// done or nothing is left to run here.
    fn drive_until(&self, node: &Node) {
        let Some(q) = &self.sync_queue else {
            return;
        };
        loop {
            if node.state.lock().phase.is_terminal() {
                return;
            }
            let next = q.lock().pop_front();
            match next {
                Some(n) => self.run(n, &Queue::Sync),
                None => return,
            }
        }
    }
}

/// A counted reference to a task: while a handle exists, the task's result is
/// kept. Dropping the last handle of a finished task that no other task still
/// needs frees its result and forgets its key.
pub struct Handle {
    node: Arc<Node>,
    shared: Arc<Shared>,
}

impl Handle {
    /// The task's key.
    pub fn key(&self) -> &Key {
        &self.node.key
    }

    /// The task's phase now.
    pub fn phase(&self) -> Phase {
        self.node.state.lock().phase
    }

    /// The outcome if the task is done, without waiting.
    pub fn try_outcome(&self) -> Option<Outcome> {
        self.node.state.lock().outcome()
    }

    /// Waits for the task's outcome. On the sync executor, runs tasks on this
    /// thread until it is there.
    pub fn wait(&self) -> Outcome {
        self.shared.drive_until(&self.node);
        let mut st = self.node.state.lock();
        loop {
            if let Some(o) = st.outcome() {
                return o;
            }
            st.has_waiters = true;
            self.node.done.wait(&mut st);
        }
    }

    /// Waits at most `timeout`; `None` if the task is not done by then.
    pub fn wait_timeout(&self, timeout: Duration) -> Option<Outcome> {
        let deadline = Instant::now() + timeout;
        self.shared.drive_until(&self.node);
        let mut st = self.node.state.lock();
        loop {
            if let Some(o) = st.outcome() {
                return Some(o);
            }
            st.has_waiters = true;
            if self.node.done.wait_until(&mut st, deadline).timed_out() {
                return st.outcome();
            }
        }
    }

    /// Cancels the task if it has not finished: a pending task will not run,
    /// a running one has its result discarded. Tasks that depend on it fail.
    pub fn cancel(&self) {
        let mut st = self.node.state.lock();
        match st.phase {
            Phase::Pending => {
                let failure = Arc::new(Failure { key: self.node.key.clone(), kind: FailureKind::Cancelled });
                let body = st.settle_content(Phase::Cancelled, Content::Failed(failure));
                self.shared.settle(&self.node, st, body, &self.shared.outside_queue());
            }
            Phase::Running => st.cancel_requested = true,
            Phase::Memory | Phase::Erred | Phase::Cancelled => {}
        }
    }

    /// Calls `notify.done(index)` once the task is done (at once if it is).
    pub fn subscribe(&self, notify: Arc<dyn Notify>, index: usize) {
        let mut st = self.node.state.lock();
        if st.phase.is_terminal() {
            drop(st);
            notify.done(index);
        } else {
            st.listeners.push(Listener::Notify(notify, index));
        }
    }

    /// Whether the task runs on the sync executor (on the waiting thread).
    pub fn is_sync(&self) -> bool {
        self.shared.sync_queue.is_some()
    }

    /// Whether two handles refer to the same task.
    pub fn same_task(&self, other: &Handle) -> bool {
        Arc::ptr_eq(&self.node, &other.node)
    }
}

impl Clone for Handle {
    fn clone(&self) -> Handle {
        self.node.state.lock().holders += 1;
        Handle { node: self.node.clone(), shared: self.shared.clone() }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        let mut st = self.node.state.lock();
        st.holders -= 1;
        let release = st.try_release();
        drop(st);
        if release {
            self.shared.keys.remove(&self.node);
        }
    }
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Handle({}, {:?})", self.node.key, self.phase())
    }
}
