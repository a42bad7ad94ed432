//! The client of a cluster: tasks go to a scheduler, results come back from
//! the workers that hold them.

use std::net::SocketAddr;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use shoal_graph::remote::{RemoteFunc, require};
use shoal_graph::{Arg, Key, KeyHashMap, Task, Value};
use shoal_local::Notify;
use shoal_net::ClientConnection;
use shoal_proto::{ArgMsg, FromScheduler, TaskErrorMsg, TaskMsg, ToScheduler, WorkerInfo};

use crate::error::Error;
use crate::future::Status;

enum RemoteStatus {
    Pending,
    Finished,
    Erred(Error),
}

struct Entry {
    status: RemoteStatus,
    holders: u32,
    producer: Option<&'static RemoteFunc>,
    listeners: Vec<(Arc<dyn Notify>, usize)>,
}

#[derive(Default)]
struct Inner {
    keys: KeyHashMap<Entry>,
    /// The latest WhoHas answers, until read.
    who_has: KeyHashMap<Vec<WorkerInfo>>,
    info: Option<Vec<WorkerInfo>>,
    closed: bool,
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
                        FromScheduler::Finished { key, .. } => {
                            if let Some(e) = inner.keys.get_mut(&key) {
                                e.status = RemoteStatus::Finished;
                                told.append(&mut e.listeners);
                            }
                        }
                        FromScheduler::Erred { key, error } => {
                            if let Some(e) = inner.keys.get_mut(&key) {
                                e.status = RemoteStatus::Erred(map_error(&key, error));
                                told.append(&mut e.listeners);
                            }
                        }
                        FromScheduler::WhoHas(answers) => inner.who_has.extend(answers),
                        FromScheduler::Info(workers) => inner.info = Some(workers),
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
    pub(crate) fn ask_who_has(&self, keys: &[Key]) -> Result<Vec<Vec<WorkerInfo>>, Error> {
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
    pub(crate) fn submit(self: &Arc<Self>, tasks: Vec<(Task, u32, bool)>) -> Vec<RemoteHandle> {
        self.submit_restricted(tasks, &[])
    }

    /// [`RemoteState::submit`], every task restricted to `workers` (if any).
    pub(crate) fn submit_restricted(
        self: &Arc<Self>,
        tasks: Vec<(Task, u32, bool)>,
        workers: &[String],
    ) -> Vec<RemoteHandle> {
        let mut msgs = Vec::with_capacity(tasks.len());
        let mut handles = Vec::new();
        let mut unsendable: KeyHashMap<Error> = KeyHashMap::default();
        let mut lists: KeyHashMap<Vec<Key>> = KeyHashMap::default();
        let mut inner = self.lock();
        for (task, retries, held) in tasks {
            let key = task.key.clone();
            if task.func.name().starts_with(crate::list::LIST_FUNC_PREFIX) && !held {
                // Sent inline, as a `List` argument of the task that reads it.
                lists.insert(key, task.dependencies().cloned().collect());
                continue;
            }
            let blocked = task.dependencies().find_map(|d| unsendable.get(d).cloned());
            let encoded = match blocked {
                Some(cause) => Err(Error::NotRemote { key: key.to_string(), message: cause.to_string() }),
                None => encode(&task, retries, held, &lists).map(|(mut msg, f)| {
                    msg.workers = workers.to_vec();
                    (msg, f)
                }),
            };
            if let Err(e) = &encoded {
                unsendable.insert(key.clone(), e.clone());
            }
            if held {
                let (status, producer) = match &encoded {
                    Ok((_, producer)) => (RemoteStatus::Pending, Some(*producer)),
                    Err(e) => (RemoteStatus::Erred(e.clone()), None),
                };
                let entry = inner.keys.entry(key.clone()).or_insert(Entry {
                    status,
                    holders: 0,
                    producer,
                    listeners: Vec::new(),
                });
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
        handles
    }
}

/// The wire form of a task, with the registered function that decodes its result.
fn encode(
    task: &Task,
    retries: u32,
    held: bool,
    lists: &KeyHashMap<Vec<Key>>,
) -> Result<(TaskMsg, &'static RemoteFunc), Error> {
    let key = task.key.to_string();
    let producer =
        require(task.func.name()).map_err(|e| Error::NotRemote { key: key.clone(), message: e.to_string() })?;
    let args = task
        .args
        .iter()
        .enumerate()
        .map(|(position, arg)| match arg {
            Arg::Value(v) => producer
                .encode_value(position, v)
                .map(ArgMsg::Value)
                .map_err(|e| Error::NotRemote { key: key.clone(), message: e.to_string() }),
            Arg::Key(k) => Ok(match lists.get(k) {
                Some(elements) => ArgMsg::List(elements.clone()),
                None => ArgMsg::Key(k.clone()),
            }),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let msg = TaskMsg {
        key: task.key.clone(),
        func: task.func.name().into(),
        args: args.into(),
        priority: 0,
        retries,
        resources: vec![],
        workers: vec![],
        held,
    };
    Ok((msg, producer))
}

impl RemoteState {
    /// The results of many tasks: one location query, then one request per
    /// worker for all it holds of them.
    pub(crate) fn values(&self, handles: &[&RemoteHandle]) -> Vec<Result<Value, Error>> {
        let outcomes: Vec<Result<&'static RemoteFunc, Error>> = handles
            .iter()
            .map(|h| h.wait_done(None).unwrap_or_else(|| Err(Error::Shutdown { key: h.key.to_string() })))
            .collect();
        let finished: Vec<Key> =
            handles.iter().zip(&outcomes).filter(|(_, o)| o.is_ok()).map(|(h, _)| h.key.clone()).collect();
        let located = if finished.is_empty() { Vec::new() } else { self.ask_who_has(&finished).unwrap_or_default() };
        let mut by_worker: std::collections::BTreeMap<String, Vec<Key>> = Default::default();
        for (k, holders) in finished.iter().zip(&located) {
            if let Some(first) = holders.first() {
                by_worker.entry(first.data_address.clone()).or_default().push(k.clone());
            }
        }
        let mut bytes: KeyHashMap<Vec<u8>> = KeyHashMap::default();
        if let Some(conn) = self.conn.get() {
            for (address, keys) in by_worker {
                if let Ok(got) = conn.fetch_many(&address, &keys) {
                    for (k, b) in keys.into_iter().zip(got) {
                        if let Some(b) = b {
                            bytes.insert(k, b);
                        }
                    }
                }
            }
        }
        handles
            .iter()
            .zip(outcomes)
            .map(|(h, outcome)| {
                let producer = outcome?;
                match bytes.remove(&h.key) {
                    Some(b) => producer
                        .decode_result_value(&b)
                        .map_err(|e| Error::TaskFailed { key: h.key.to_string(), message: e.to_string() }),
                    // Moved or lost meanwhile: fetch it on its own.
                    None => h.fetch(producer),
                }
            })
            .collect()
    }
}

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
    fn wait_done(&self, deadline: Option<Instant>) -> Option<Result<&'static RemoteFunc, Error>> {
        let mut inner = self.state.lock();
        loop {
            let entry = inner.keys.get(&self.key)?;
            match &entry.status {
                RemoteStatus::Finished => return entry.producer.map(Ok),
                RemoteStatus::Erred(e) => return Some(Err(e.clone())),
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

    /// The result, fetched from a worker that holds it and decoded.
    pub(crate) fn value(&self, timeout: Option<Duration>) -> Option<Result<Value, Error>> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let producer = match self.wait_done(deadline)? {
            Ok(p) => p,
            Err(e) => return Some(Err(e)),
        };
        Some(self.fetch(producer))
    }

    fn fetch(&self, producer: &'static RemoteFunc) -> Result<Value, Error> {
        let key = self.key.to_string();
        let lost = |message: String| Error::TaskFailed { key: key.clone(), message };
        let holders = self.state.ask_who_has(std::slice::from_ref(&self.key))?.pop().unwrap_or_default();
        let conn = self.state.conn.get().ok_or_else(|| Error::Shutdown { key: key.clone() })?;
        let mut last = String::from("no worker holds it");
        for worker in holders {
            match conn.fetch(&worker.data_address, &self.key) {
                Ok(Some(bytes)) => return producer.decode_result_value(&bytes).map_err(|e| lost(e.to_string())),
                Ok(None) => {}
                Err(e) => last = e.to_string(),
            }
        }
        Err(lost(format!("the result could not be fetched: {last}")))
    }
}

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
        let last = match inner.keys.get_mut(&self.key) {
            Some(e) => {
                e.holders -= 1;
                e.holders == 0
            }
            None => false,
        };
        if last {
            inner.keys.remove(&self.key);
            drop(inner);
            self.state.send(&ToScheduler::Release(vec![self.key.clone()]));
        }
    }
}
