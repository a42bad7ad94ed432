//! What a cluster client knows and hears: its connection to the
//! scheduler, each held task's status and who waits for it, and the
//! scheduler's answers as they come.

use std::net::SocketAddr;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};

use shoal_graph::remote::RemoteFunc;
use shoal_graph::{Key, KeyHashMap, Value};
use shoal_local::Notify;
use shoal_net::ClientConnection;
use shoal_proto::{FromScheduler, TaskErrorMsg, ToScheduler, WorkerId, WorkerInfo};

use crate::error::Error;

/// Where a held task stands, as the scheduler last said.
pub(super) enum TaskStatus {
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
    pub(super) fn decode(&self, bytes: &[u8]) -> Result<Value, String> {
        match self {
            Decoder::Func(f) => f.decode_result_value(bytes).map_err(|e| e.to_string()),
            Decoder::Typed(decode) => decode(bytes),
        }
    }
}

pub(super) struct Entry {
    pub(super) status: TaskStatus,
    pub(super) holders: u32,
    pub(super) producer: Option<Decoder>,
    pub(super) listeners: Vec<(Arc<dyn Notify>, usize)>,
    /// Why the scheduler cannot run it yet, as it last said.
    pub(super) pending_reason: Option<String>,
    /// How many outcomes the scheduler has reported for it: a result lost
    /// with its worker is reported again when it is recomputed.
    pub(super) version: u64,
    /// A worker that held the result when the scheduler reported it.
    pub(super) holder: Option<WorkerId>,
    /// The result itself, when it was small enough to come with the report
    /// (see [`FinishedMsg::inline`](shoal_proto::FinishedMsg::inline)):
    /// reading it needs no fetch.
    pub(super) inline: Option<Arc<[u8]>>,
}

#[derive(Default)]
pub(super) struct Inner {
    pub(super) keys: KeyHashMap<Entry>,
    /// The latest WhoHas answers, until read.
    pub(super) who_has: KeyHashMap<Vec<Arc<WorkerInfo>>>,
    pub(super) info: Option<Vec<WorkerInfo>>,
    pub(super) closed: bool,
    /// How many restarts the scheduler has announced.
    pub(super) restarts: u64,
}

/// What a cluster client knows: its tasks' statuses and who waits for them.
pub(crate) struct ClusterState {
    /// The cluster token, for connections to workers (actor calls).
    token: Option<String>,
    pub(super) conn: OnceLock<ClientConnection>,
    pub(super) inner: Mutex<Inner>,
    pub(super) changed: Condvar,
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

impl ClusterState {
    /// Connects to the scheduler at `address`.
    pub(crate) fn connect(address: SocketAddr, token: Option<&str>) -> Result<Arc<ClusterState>, Error> {
        let state = Arc::new(ClusterState {
            token: token.map(str::to_string),
            conn: OnceLock::new(),
            inner: Mutex::default(),
            changed: Condvar::new(),
        });
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

    pub(super) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(super) fn send(&self, msg: &ToScheduler) {
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
                    if matches!(entry.status, TaskStatus::Pending) {
                        entry.status = TaskStatus::Erred(Error::Shutdown { key: key.to_string() });
                        told.append(&mut entry.listeners);
                    }
                }
            }
            Some(msgs) => {
                for msg in msgs {
                    match msg {
                        FromScheduler::Finished { key, holder, inline, .. } => {
                            if let Some(e) = inner.keys.get_mut(&key) {
                                e.status = TaskStatus::Finished;
                                e.holder = holder;
                                e.inline = inline.map(Arc::from);
                                e.pending_reason = None;
                                e.version += 1;
                                told.append(&mut e.listeners);
                            }
                        }
                        FromScheduler::Erred { key, error } => {
                            if let Some(e) = inner.keys.get_mut(&key) {
                                e.status = TaskStatus::Erred(map_error(&key, error));
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
                                && matches!(e.status, TaskStatus::Pending)
                            {
                                tracing::warn!("task {key} cannot run yet: {reason}");
                                e.pending_reason = Some(reason);
                            }
                        }
                        FromScheduler::Restarted => {
                            inner.restarts += 1;
                            for (key, e) in inner.keys.iter_mut() {
                                e.status = TaskStatus::Erred(Error::Restarted { key: key.to_string() });
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

    /// Whether the connection to the scheduler is still open.
    pub(crate) fn is_connected(&self) -> bool {
        !self.lock().closed
    }

    /// The cluster token this client connected with.
    pub(crate) fn token(&self) -> Option<String> {
        self.token.clone()
    }

    /// Keys this client holds futures of.
    pub(crate) fn held_keys(&self) -> usize {
        self.lock().keys.len()
    }

    /// Why the scheduler cannot run this key yet, if it said.
    pub(crate) fn pending_reason(&self, key: &Key) -> Option<String> {
        self.lock().keys.get(key).and_then(|e| e.pending_reason.clone())
    }
}
