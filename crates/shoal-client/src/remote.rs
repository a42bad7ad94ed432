//! The client of a cluster: tasks go to a scheduler, results come back from
//! the workers that hold them.

use std::net::SocketAddr;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;
use shoal_graph::remote::{RemoteFunc, require};
use shoal_graph::{Arg, Key, KeyHashMap, Task, Value};
use shoal_local::Notify;
use shoal_net::ClientConnection;
use shoal_proto::{
    ArgList, ArgMsg, FromScheduler, ScatteredMsg, TaskErrorMsg, TaskMsg, ToScheduler, WorkerId, WorkerInfo,
};

use crate::error::Error;
use crate::future::Status;
use crate::options::Placement;

enum RemoteStatus {
    Pending,
    Finished,
    Erred(Error),
}

/// How a result's bytes become a value again on this side.
#[derive(Clone, Copy)]
pub(crate) enum Decoder {
    /// With the codec of the registered function that made it.
    Func(&'static RemoteFunc),
    /// With the codec of the type a client scattered.
    Typed(fn(&[u8]) -> Result<Value, String>),
}

impl Decoder {
    fn decode(&self, bytes: &[u8]) -> Result<Value, String> {
        match self {
            Decoder::Func(f) => f.decode_result_value(bytes).map_err(|e| e.to_string()),
            Decoder::Typed(decode) => decode(bytes),
        }
    }
}

struct Entry {
    status: RemoteStatus,
    holders: u32,
    producer: Option<Decoder>,
    listeners: Vec<(Arc<dyn Notify>, usize)>,
    /// Why the scheduler cannot run it yet, as it last said.
    pending_reason: Option<String>,
    /// How many outcomes the scheduler has reported for it: a result lost
    /// with its worker is reported again when it is recomputed.
    version: u64,
    /// A worker that held the result when the scheduler reported it.
    holder: Option<WorkerId>,
    /// The result itself, when it was small enough to come with the report
    /// (see [`FinishedMsg::inline`](shoal_proto::FinishedMsg::inline)):
    /// reading it needs no fetch.
    inline: Option<Arc<[u8]>>,
}

#[derive(Default)]
struct Inner {
    keys: KeyHashMap<Entry>,
    /// The latest WhoHas answers, until read.
    who_has: KeyHashMap<Vec<Arc<WorkerInfo>>>,
    info: Option<Vec<WorkerInfo>>,
    closed: bool,
    /// How many restarts the scheduler has announced.
    restarts: u64,
}

/// What running a function on one worker gave: its encoded result, or its
/// failure's message.
pub(crate) type RunOutcome = Result<Vec<u8>, String>;

/// One task to send to the scheduler.
pub(crate) struct Outgoing {
    pub(crate) task: Task,
    pub(crate) retries: u32,
    pub(crate) held: bool,
    pub(crate) placement: Option<Arc<Placement>>,
}

/// What a cluster client knows: its tasks' statuses and who waits for them.
pub(crate) struct RemoteState {
    conn: OnceLock<ClientConnection>,
    inner: Mutex<Inner>,
    changed: Condvar,
}

fn map_error(key: &Key, error: TaskErrorMsg) -> Error {
    let key = key.to_string();
    match error {
        TaskErrorMsg::Failed { message } => Error::TaskFailed { key, message },
        TaskErrorMsg::Dependency { dependency, failed, message } => {
            Error::DependencyFailed { key, dependency: dependency.to_string(), failed: failed.to_string(), message }
        }
        TaskErrorMsg::Cancelled => Error::Cancelled { key },
        TaskErrorMsg::WorkerLost { attempts } => Error::WorkerLost { key, attempts },
        TaskErrorMsg::Unsatisfiable { reason } => Error::Rejected { key, reason },
        TaskErrorMsg::UnknownDependency(dep) => Error::UnknownDependency { key, dependency: dep.to_string() },
    }
}

impl RemoteState {
    /// Connects to the scheduler at `address`.
    pub(crate) fn connect(address: SocketAddr, token: Option<&str>) -> Result<Arc<RemoteState>, Error> {
        let state = Arc::new(RemoteState { conn: OnceLock::new(), inner: Mutex::default(), changed: Condvar::new() });
        let weak = Arc::downgrade(&state);
        let on_messages = Arc::new(move |batch: Option<Vec<FromScheduler>>| {
            if let Some(state) = weak.upgrade() {
                state.hear(batch);
            }
        });
        let conn = ClientConnection::connect(address, token, on_messages).map_err(|e| Error::Start(e.to_string()))?;
        let _ = state.conn.set(conn);
        Ok(state)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn send(&self, msg: &ToScheduler) {
        if let Some(conn) = self.conn.get() {
            conn.send(msg);
        }
    }

    fn hear(&self, batch: Option<Vec<FromScheduler>>) {
        let mut told: Vec<(Arc<dyn Notify>, usize)> = Vec::new();
        let mut inner = self.lock();
        match batch {
            None => {
                inner.closed = true;
                for (key, entry) in inner.keys.iter_mut() {
                    if matches!(entry.status, RemoteStatus::Pending) {
                        entry.status = RemoteStatus::Erred(Error::Shutdown { key: key.to_string() });
                        told.append(&mut entry.listeners);
                    }
                }
            }
            Some(msgs) => {
                for msg in msgs {
                    match msg {
                        FromScheduler::Finished { key, holder, inline, .. } => {
                            if let Some(e) = inner.keys.get_mut(&key) {
                                e.status = RemoteStatus::Finished;
                                e.holder = holder;
                                e.inline = inline.map(Arc::from);
                                e.pending_reason = None;
                                e.version += 1;
                                told.append(&mut e.listeners);
                            }
                        }
                        FromScheduler::Erred { key, error } => {
                            if let Some(e) = inner.keys.get_mut(&key) {
                                e.status = RemoteStatus::Erred(map_error(&key, error));
                                e.pending_reason = None;
                                e.version += 1;
                                told.append(&mut e.listeners);
                            }
                        }
                        FromScheduler::WhoHas { workers, holders } => {
                            let workers: Vec<Arc<WorkerInfo>> = workers.into_iter().map(Arc::new).collect();
                            for (key, at) in holders {
                                let holding = at.iter().filter_map(|&p| workers.get(p as usize).cloned()).collect();
                                inner.who_has.insert(key, holding);
                            }
                        }
                        FromScheduler::Info(workers) => inner.info = Some(workers),
                        FromScheduler::NoWorker { key, reason } => {
                            if let Some(e) = inner.keys.get_mut(&key)
                                && matches!(e.status, RemoteStatus::Pending)
                            {
                                tracing::warn!("task {key} cannot run yet: {reason}");
                                e.pending_reason = Some(reason);
                            }
                        }
                        FromScheduler::Restarted => {
                            inner.restarts += 1;
                            for (key, e) in inner.keys.iter_mut() {
                                e.status = RemoteStatus::Erred(Error::Restarted { key: key.to_string() });
                                e.pending_reason = None;
                                e.version += 1;
                                told.append(&mut e.listeners);
                            }
                        }
                    }
                }
            }
        }
        drop(inner);
        self.changed.notify_all();
        for (n, i) in told {
            n.done(i);
        }
    }

    /// The cluster's workers, asked of the scheduler.
    pub(crate) fn info(&self) -> Result<Vec<WorkerInfo>, Error> {
        self.lock().info = None;
        self.send(&ToScheduler::Info);
        let mut inner = self.lock();
        loop {
            if let Some(info) = inner.info.take() {
                return Ok(info);
            }
            if inner.closed {
                return Err(Error::Shutdown { key: "scheduler-info".into() });
            }
            inner = self.changed.wait(inner).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Asks the scheduler which workers hold each key's result, in order.
    pub(crate) fn ask_who_has(&self, keys: &[Key]) -> Result<Vec<Vec<Arc<WorkerInfo>>>, Error> {
        {
            let mut inner = self.lock();
            for k in keys {
                inner.who_has.remove(k);
            }
        }
        self.send(&ToScheduler::WhoHas(keys.to_vec()));
        let mut inner = self.lock();
        while !keys.iter().all(|k| inner.who_has.contains_key(k)) {
            if inner.closed {
                return Err(Error::Shutdown { key: keys.first().map(ToString::to_string).unwrap_or_default() });
            }
            inner = self.changed.wait(inner).unwrap_or_else(|p| p.into_inner());
        }
        Ok(keys.iter().map(|k| inner.who_has.remove(k).unwrap_or_default()).collect())
    }

    /// Keys this client holds futures of.
    pub(crate) fn held_keys(&self) -> usize {
        self.lock().keys.len()
    }

    /// Submits tasks (dependencies first); returns handles for those marked
    /// held, in order. Functions must be registered with `#[shoal::remote]`;
    /// a task that cannot be encoded fails at once, and so do the tasks of
    /// this batch that need it.
    pub(crate) fn submit(self: &Arc<Self>, tasks: impl IntoIterator<Item = Outgoing>) -> Vec<RemoteHandle> {
        let mut tasks = tasks.into_iter();
        let mut handles = Vec::new();
        let mut unsendable: KeyHashMap<Error> = KeyHashMap::default();
        let mut lists: KeyHashMap<Vec<Key>> = KeyHashMap::default();
        loop {
            // Made (tokenised, encoded) outside the lock, which the tasks'
            // arguments may need, and sent a batch at a time: the scheduler
            // and the workers start on the first tasks of a large `map`
            // while the rest are still being made.
            let batch: Vec<Outgoing> = tasks.by_ref().take(SUBMIT_BATCH).collect();
            if batch.is_empty() {
                break;
            }
            let mut msgs = Vec::with_capacity(batch.len());
            let mut inner = self.lock();
            for Outgoing { task, retries, held, placement } in batch {
                let key = task.key.clone();
                if crate::list::is_list(&task) && !held {
                    // Sent inline, as a `List` argument of the task that reads it.
                    lists.insert(key, task.dependencies().cloned().collect());
                    continue;
                }
                let blocked = task.dependencies().find_map(|d| unsendable.get(d).cloned());
                let encoded = match blocked {
                    Some(cause) => Err(Error::NotRemote { key: key.to_string(), message: cause.to_string() }),
                    None => encode(&task, retries, held, &lists, placement.as_deref()),
                };
                if let Err(e) = &encoded {
                    unsendable.insert(key.clone(), e.clone());
                }
                if held {
                    let (status, producer) = match &encoded {
                        Ok((_, producer)) => (RemoteStatus::Pending, Some(Decoder::Func(producer))),
                        Err(e) => (RemoteStatus::Erred(e.clone()), None),
                    };
                    let entry = inner.keys.entry(key.clone()).or_insert_with(|| Entry {
                        status: RemoteStatus::Pending,
                        holders: 0,
                        producer,
                        listeners: Vec::new(),
                        pending_reason: None,
                        version: 0,
                        holder: None,
                        inline: None,
                    });
                    if entry.holders == 0 || matches!(entry.status, RemoteStatus::Erred(Error::Restarted { .. })) {
                        // New, or submitted again after a restart dropped it.
                        entry.status = status;
                        entry.producer = producer;
                    }
                    entry.holders += 1;
                    handles.push(RemoteHandle { key, state: self.clone() });
                }
                if let Ok((msg, _)) = encoded {
                    msgs.push(msg);
                }
            }
            drop(inner);
            if !msgs.is_empty() {
                self.send(&ToScheduler::Submit(msgs));
            }
        }
        handles
    }

    /// Puts encoded values on the cluster's workers (round robin, one
    /// connection per worker), then tells the scheduler where they are.
    /// The handles hold finished futures.
    pub(crate) fn scatter(
        self: &Arc<Self>,
        values: Vec<(Key, Vec<u8>)>,
        decoder: Decoder,
    ) -> Result<Vec<RemoteHandle>, Error> {
        if values.is_empty() {
            return Ok(Vec::new());
        }
        let mut workers = self.info()?;
        workers.sort_by_key(|w| w.id);
        if workers.is_empty() {
            return Err(Error::Rejected {
                key: values[0].0.to_string(),
                reason: "no workers are connected to hold scattered data; start some first".into(),
            });
        }
        let conn = self.conn.get().ok_or_else(|| Error::Shutdown { key: values[0].0.to_string() })?;
        let mut per_worker: Vec<Vec<(Key, Vec<u8>)>> = vec![Vec::new(); workers.len()];
        let keys: Vec<Key> = values.iter().map(|(k, _)| k.clone()).collect();
        let mut placed = Vec::with_capacity(values.len());
        for (n, (key, bytes)) in values.into_iter().enumerate() {
            let w = n % workers.len();
            placed.push(ScatteredMsg { key: key.clone(), worker: workers[w].id, nbytes: bytes.len() as u64 });
            per_worker[w].push((key, bytes));
        }
        // One result per worker, in worker order (empty puts succeed).
        let results: Vec<Result<(), Error>> = std::thread::scope(|scope| {
            let jobs: Vec<_> = workers
                .iter()
                .zip(&per_worker)
                .map(|(w, vals)| {
                    scope.spawn(move || {
                        if vals.is_empty() {
                            return Ok(());
                        }
                        conn.put(&w.data_address, vals).map_err(|e| Error::Connection {
                            peer: format!("worker {}", w.name),
                            message: e.to_string(),
                        })
                    })
                })
                .collect();
            jobs.into_iter()
                .map(|j| {
                    j.join().unwrap_or_else(|_| {
                        Err(Error::Connection {
                            peer: "a worker".into(),
                            message: "the sending thread panicked".into(),
                        })
                    })
                })
                .collect()
        });
        let reached: Vec<shoal_proto::WorkerId> =
            workers.iter().zip(&results).filter(|(_, r)| r.is_ok()).map(|(w, _)| w.id).collect();
        placed.retain(|p| reached.contains(&p.worker));
        let mut inner = self.lock();
        let mut handles = Vec::with_capacity(keys.len());
        for key in &keys {
            let entry = inner.keys.entry(key.clone()).or_insert_with(|| Entry {
                status: RemoteStatus::Finished,
                holders: 0,
                producer: Some(decoder),
                listeners: Vec::new(),
                pending_reason: None,
                version: 0,
                holder: None,
                inline: None,
            });
            entry.holders += 1;
            handles.push(RemoteHandle { key: key.clone(), state: self.clone() });
        }
        drop(inner);
        // What reached a worker is the scheduler's to track (and to release
        // when the handles go, as they do below if another worker failed).
        if !placed.is_empty() {
            self.send(&ToScheduler::Scatter(placed));
        }
        results.into_iter().collect::<Result<(), Error>>()?;
        Ok(handles)
    }

    /// Runs a registered function with encoded arguments on every worker,
    /// all at once; each worker's name with its encoded result or failure.
    pub(crate) fn run_everywhere(&self, func: &str, args: &[Vec<u8>]) -> Result<Vec<(String, RunOutcome)>, Error> {
        let workers = self.info()?;
        let conn = self.conn.get().ok_or_else(|| Error::Shutdown { key: format!("run {func}") })?;
        std::thread::scope(|scope| {
            let jobs: Vec<_> = workers
                .iter()
                .map(|w| {
                    let ran = scope.spawn(move || conn.run_on(&w.data_address, func, args.to_vec()));
                    (w, ran)
                })
                .collect();
            jobs.into_iter()
                .map(|(w, ran)| {
                    let connection =
                        |message: String| Error::Connection { peer: format!("worker {}", w.name), message };
                    let outcome = ran
                        .join()
                        .map_err(|_| connection("the calling thread panicked".into()))?
                        .map_err(|e| connection(e.to_string()))?;
                    Ok((w.name.clone(), outcome))
                })
                .collect()
        })
    }

    /// Asks the scheduler to restart the cluster and waits until it has, and
    /// until as many workers as before have registered again.
    pub(crate) fn restart(&self, timeout: Duration) -> Result<(), Error> {
        let before = self.info()?.len();
        let seen = self.lock().restarts;
        self.send(&ToScheduler::Restart);
        let deadline = Instant::now() + timeout;
        let scheduler = |message: String| Error::Connection { peer: "the scheduler".into(), message };
        let mut inner = self.lock();
        while inner.restarts == seen {
            if inner.closed {
                return Err(scheduler("the connection closed during the restart".into()));
            }
            let left = deadline
                .checked_duration_since(Instant::now())
                .ok_or_else(|| scheduler(format!("no restart within {timeout:?}")))?;
            inner = self.changed.wait_timeout(inner, left).unwrap_or_else(|p| p.into_inner()).0;
        }
        drop(inner);
        loop {
            let now = self.info()?.len();
            if now >= before {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(scheduler(format!(
                    "only {now} of {before} workers came back within {timeout:?} after the restart"
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Why the scheduler cannot run this key yet, if it said.
    pub(crate) fn pending_reason(&self, key: &Key) -> Option<String> {
        self.lock().keys.get(key).and_then(|e| e.pending_reason.clone())
    }
}

/// The wire form of a task, with the registered function that decodes its result.
fn encode(
    task: &Task,
    retries: u32,
    held: bool,
    lists: &KeyHashMap<Vec<Key>>,
    placement: Option<&Placement>,
) -> Result<(TaskMsg, &'static RemoteFunc), Error> {
    // Named only in errors: formatting every key would cost more than encoding it.
    let key = || task.key.to_string();
    let placement = placement.cloned().unwrap_or_default();
    if let Some((name, amount)) =
        placement.resources.iter().find(|(name, amount)| name.is_empty() || !amount.is_finite() || *amount <= 0.0)
    {
        return Err(Error::Rejected {
            key: key(),
            reason: format!("resource {name:?}={amount}: names must not be empty and amounts must be positive numbers"),
        });
    }
    let producer = require(task.func.name()).map_err(|e| Error::NotRemote { key: key(), message: e.to_string() })?;
    let args = task
        .args
        .iter()
        .enumerate()
        .map(|(position, arg)| match arg {
            Arg::Value(v) => producer
                .encode_value(position, v)
                .map(ArgMsg::Value)
                .map_err(|e| Error::NotRemote { key: key(), message: e.to_string() }),
            Arg::Key(k) => Ok(match lists.get(k) {
                Some(elements) => ArgMsg::List(elements.clone()),
                None => ArgMsg::Key(k.clone()),
            }),
        })
        .collect::<Result<ArgList, _>>()?;
    let msg = TaskMsg {
        key: task.key.clone(),
        func: task.func.name().into(),
        args,
        priority: placement.priority,
        retries,
        resources: placement.resources,
        workers: placement.workers,
        held,
    };
    Ok((msg, producer))
}

impl RemoteState {
    /// The results of many tasks: one location query, then one request per
    /// worker for all it holds of them.
    pub(crate) fn values(&self, handles: &[&RemoteHandle]) -> Vec<Result<Value, Error>> {
        let waited: Vec<Located> = handles
            .iter()
            .map(|h| {
                h.wait_located(None).unwrap_or_else(|| Located {
                    outcome: Err(Error::Shutdown { key: h.key.to_string() }),
                    holder: None,
                    inline: None,
                })
            })
            .collect();
        // Where the scheduler said each result was; the scheduler is asked
        // only about results whose holder is not (or no longer) a worker.
        // Results that came with their reports need neither.
        let to_fetch = |l: &Located| l.outcome.is_ok() && l.inline.is_none();
        let workers = if waited.iter().any(to_fetch) { self.info().unwrap_or_default() } else { Vec::new() };
        let address_of: FxHashMap<WorkerId, &str> = workers.iter().map(|w| (w.id, w.data_address.as_str())).collect();
        // Positions, not keys: a hash lookup per result costs a cache miss
        // each once there are many.
        let mut by_worker: std::collections::BTreeMap<&str, Vec<usize>> = Default::default();
        let mut unplaced = Vec::new();
        for (i, located) in waited.iter().enumerate() {
            if !to_fetch(located) {
                continue;
            }
            match located.holder.and_then(|w| address_of.get(&w)) {
                Some(address) => by_worker.entry(address).or_default().push(i),
                None => unplaced.push(i),
            }
        }
        let keys: Vec<Key> = unplaced.iter().map(|&i| handles[i].key.clone()).collect();
        let located = if keys.is_empty() { Vec::new() } else { self.ask_who_has(&keys).unwrap_or_default() };
        for (&i, holders) in unplaced.iter().zip(&located) {
            if let Some(first) = holders.first() {
                by_worker.entry(first.data_address.as_str()).or_default().push(i);
            }
        }
        let mut bytes: Vec<Option<Vec<u8>>> = vec![None; handles.len()];
        if let Some(conn) = self.conn.get() {
            for (address, positions) in by_worker {
                let wanted: Vec<Key> = positions.iter().map(|&i| handles[i].key.clone()).collect();
                if let Ok(got) = conn.fetch_many(address, &wanted) {
                    for (&i, b) in positions.iter().zip(got) {
                        bytes[i] = b;
                    }
                }
            }
        }
        handles
            .iter()
            .zip(waited)
            .zip(bytes)
            .map(|((h, located), fetched)| {
                let producer = located.outcome?;
                let decode = |b: &[u8]| {
                    producer.decode(b).map_err(|message| Error::TaskFailed { key: h.key.to_string(), message })
                };
                match (located.inline, fetched) {
                    (Some(b), _) => decode(&b),
                    (None, Some(b)) => decode(&b),
                    // Moved or lost meanwhile: fetch it on its own.
                    (None, None) => h.fetch(producer),
                }
            })
            .collect()
    }
}

/// Tasks per submit message: big enough that a message's cost is spread
/// thin, small enough that work starts soon.
const SUBMIT_BATCH: usize = 2048;

/// A counted reference to a task on a cluster.
pub(crate) struct RemoteHandle {
    key: Key,
    state: Arc<RemoteState>,
}

impl RemoteHandle {
    pub(crate) fn key(&self) -> &Key {
        &self.key
    }

    pub(crate) fn state(&self) -> &RemoteState {
        &self.state
    }

    pub(crate) fn same_cluster(&self, other: &RemoteHandle) -> bool {
        Arc::ptr_eq(&self.state, &other.state)
    }

    pub(crate) fn status(&self) -> Status {
        match self.state.lock().keys.get(&self.key).map(|e| &e.status) {
            Some(RemoteStatus::Pending) | None => Status::Pending,
            Some(RemoteStatus::Finished) => Status::Finished,
            Some(RemoteStatus::Erred(Error::Cancelled { .. })) => Status::Cancelled,
            Some(RemoteStatus::Erred(_)) => Status::Error,
        }
    }

    pub(crate) fn cancel(&self) {
        self.state.send(&ToScheduler::Cancel(vec![self.key.clone()]));
    }

    /// Asks each handle's scheduler to keep its task running: one message
    /// per cluster, however many futures.
    pub(crate) fn fire_and_forget(handles: &[&RemoteHandle]) {
        let mut left = handles.to_vec();
        while let Some(&first) = left.first() {
            let (same, other): (Vec<&RemoteHandle>, Vec<&RemoteHandle>) =
                left.into_iter().partition(|h| h.same_cluster(first));
            first.state.send(&ToScheduler::FireAndForget(same.iter().map(|h| h.key.clone()).collect()));
            left = other;
        }
    }

    pub(crate) fn subscribe(&self, notify: Arc<dyn Notify>, index: usize) {
        let mut inner = self.state.lock();
        match inner.keys.get_mut(&self.key) {
            Some(e) if matches!(e.status, RemoteStatus::Pending) => e.listeners.push((notify, index)),
            _ => {
                drop(inner);
                notify.done(index);
            }
        }
    }

    /// Waits until the task is done, at most until `deadline`; `None` on timeout.
    fn wait_done(&self, deadline: Option<Instant>) -> Option<Result<Decoder, Error>> {
        self.wait_located(deadline).map(|l| l.outcome)
    }

    /// [`RemoteHandle::wait_done`], with where the result is.
    fn wait_located(&self, deadline: Option<Instant>) -> Option<Located> {
        let mut inner = self.state.lock();
        loop {
            let entry = inner.keys.get(&self.key)?;
            match &entry.status {
                RemoteStatus::Finished => {
                    return entry.producer.map(|p| Located {
                        outcome: Ok(p),
                        holder: entry.holder,
                        inline: entry.inline.clone(),
                    });
                }
                RemoteStatus::Erred(e) => return Some(Located { outcome: Err(e.clone()), holder: None, inline: None }),
                RemoteStatus::Pending => {}
            }
            inner = match deadline {
                None => self.state.changed.wait(inner).unwrap_or_else(|p| p.into_inner()),
                Some(d) => {
                    let left = d.checked_duration_since(Instant::now())?;
                    self.state.changed.wait_timeout(inner, left).unwrap_or_else(|p| p.into_inner()).0
                }
            };
        }
    }

    pub(crate) fn wait(&self) {
        let _ = self.wait_done(None);
    }

    /// The result, decoded: as it came with the report if it was small,
    /// else fetched from a worker that holds it.
    pub(crate) fn value(&self, timeout: Option<Duration>) -> Option<Result<Value, Error>> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let located = self.wait_located(deadline)?;
        let producer = match located.outcome {
            Ok(p) => p,
            Err(e) => return Some(Err(e)),
        };
        Some(match located.inline {
            Some(bytes) => {
                producer.decode(&bytes).map_err(|message| Error::TaskFailed { key: self.key.to_string(), message })
            }
            None => self.fetch(producer),
        })
    }

    /// Fetches the result from a worker that holds it. When none does —
    /// its worker died and the scheduler is recomputing it, or will report
    /// it lost — this waits for the scheduler's next word on it and tries
    /// again.
    fn fetch(&self, mut producer: Decoder) -> Result<Value, Error> {
        let key = self.key.to_string();
        let lost = |message: String| Error::TaskFailed { key: key.clone(), message };
        let conn = self.state.conn.get().ok_or_else(|| Error::Shutdown { key: key.clone() })?;
        let mut fruitless = 0;
        loop {
            let seen = self.state.lock().keys.get(&self.key).map_or(0, |e| e.version);
            let holders = self.state.ask_who_has(std::slice::from_ref(&self.key))?.pop().unwrap_or_default();
            let listed = !holders.is_empty();
            let mut last = String::from("no worker holds it");
            for worker in holders {
                match conn.fetch(&worker.data_address, &self.key) {
                    Ok(Some(bytes)) => return producer.decode(&bytes).map_err(lost),
                    Ok(None) => last = format!("worker {} no longer holds it", worker.name),
                    Err(e) => last = e.to_string(),
                }
            }
            // Workers listed as holders that do not have it, round after
            // round with no news from the scheduler, are not going to.
            fruitless += usize::from(listed);
            if fruitless >= FETCH_ROUNDS {
                return Err(lost(format!("the result could not be fetched: {last}")));
            }
            match self.wait_news(seen, NEWS_WAIT) {
                Some(Ok(p)) => producer = p,
                Some(Err(e)) => return Err(e),
                None => {}
            }
        }
    }

    /// Waits at most `timeout` for an outcome newer than `seen`: the
    /// decoder of a new result, the error, or `None` on timeout.
    fn wait_news(&self, seen: u64, timeout: Duration) -> Option<Result<Decoder, Error>> {
        let deadline = Instant::now() + timeout;
        let mut inner = self.state.lock();
        loop {
            if inner.closed {
                return Some(Err(Error::Shutdown { key: self.key.to_string() }));
            }
            let entry = inner.keys.get(&self.key)?;
            if entry.version != seen {
                match &entry.status {
                    RemoteStatus::Finished => return entry.producer.map(Ok),
                    RemoteStatus::Erred(e) => return Some(Err(e.clone())),
                    RemoteStatus::Pending => {}
                }
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            inner = self.state.changed.wait_timeout(inner, left).unwrap_or_else(|p| p.into_inner()).0;
        }
    }
}

/// A finished task's outcome and where its result is.
struct Located {
    outcome: Result<Decoder, Error>,
    /// A worker that held it when the scheduler reported it.
    holder: Option<WorkerId>,
    /// The result itself, if it came with the report.
    inline: Option<Arc<[u8]>>,
}

/// Rounds of asking holders that turn out not to have a result before a
/// fetch gives up.
const FETCH_ROUNDS: usize = 3;

/// How long a fetch that found no copy waits for news before it asks again.
const NEWS_WAIT: Duration = Duration::from_secs(5);

impl Clone for RemoteHandle {
    fn clone(&self) -> RemoteHandle {
        if let Some(e) = self.state.lock().keys.get_mut(&self.key) {
            e.holders += 1;
        }
        RemoteHandle { key: self.key.clone(), state: self.state.clone() }
    }
}

impl Drop for RemoteHandle {
    fn drop(&mut self) {
        let mut inner = self.state.lock();
        // One lookup: with many keys, each is a cache miss.
        let last = match inner.keys.entry(self.key.clone()) {
            std::collections::hash_map::Entry::Occupied(mut e) => {
                e.get_mut().holders -= 1;
                if e.get().holders == 0 {
                    e.remove();
                    true
                } else {
                    false
                }
            }
            std::collections::hash_map::Entry::Vacant(_) => false,
        };
        if last {
            drop(inner);
            if let Some(conn) = self.state.conn.get() {
                conn.release(self.key.clone());
            }
        }
    }
}
