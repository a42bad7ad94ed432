//! How the worker state machine acts on the world: one small port to its
//! scheduler, its peers and its executor, and a recording implementation
//! for tests and simulations.

use std::collections::HashMap;

use shoal_graph::remote::RemoteFunc;
use shoal_graph::{Key, Value};
use shoal_proto::{DepLocation, FromWorker};

/// A task whose inputs are all here, for the executor.
pub struct Runnable {
    /// Its key.
    pub key: Key,
    /// Its function.
    pub func: &'static RemoteFunc,
    /// Its arguments, decoded.
    pub values: Vec<Value>,
}

/// A finished task's result, or the message of its failure.
pub type TaskOutcome = Result<Value, String>;

/// Where the worker's messages and tasks go. The network shell sends and
/// runs them; tests record them.
pub trait WorkerComm {
    /// The executor's handle of a task handed to it.
    type Handle;

    /// Sends a message to the scheduler.
    fn to_scheduler(&mut self, msg: FromWorker);

    /// Fetches an input from the peers that hold it; the answer comes back
    /// as [`Worker::on_peer_data`](crate::Worker::on_peer_data).
    fn fetch(&mut self, dep: &DepLocation);

    /// A result is no longer held here (copies made for peers may go).
    fn forget(&mut self, _key: &Key) {}

    /// Hands a task to the executor; `None` if it cannot take it (shut
    /// down). Its end comes back as
    /// [`Worker::on_tasks_done`](crate::Worker::on_tasks_done).
    fn execute(&mut self, task: Runnable) -> Option<Self::Handle>;

    /// Cancels a task handed to the executor: it does not start, or its
    /// result is dropped.
    fn cancel(&mut self, handle: &Self::Handle);

    /// Whether a task handed to the executor has not started yet (it may be
    /// given to another worker).
    fn not_started(&self, handle: &Self::Handle) -> bool;

    /// The outcome of a task that ended; `None` while it has not.
    fn outcome(&mut self, handle: &Self::Handle) -> Option<TaskOutcome>;
}

/// A task a [`RecordingComm`] was handed.
enum Recorded {
    Queued(Runnable),
    Started(Runnable),
    Ended(TaskOutcome),
    Cancelled,
}

/// A [`WorkerComm`] that keeps every message and runs tasks only when told
/// to: deterministic, for tests and simulations.
#[derive(Default)]
pub struct RecordingComm {
    /// Messages to the scheduler, in order.
    pub sent: Vec<FromWorker>,
    /// Inputs asked of peers, in order.
    pub fetches: Vec<DepLocation>,
    /// Keys whose results were dropped, in order.
    pub forgotten: Vec<Key>,
    /// Keys of the tasks handed to the executor, in order.
    pub executed: Vec<Key>,
    tasks: HashMap<u64, Recorded>,
    by_key: HashMap<Key, u64>,
    next: u64,
}

impl RecordingComm {
    /// Takes the messages sent so far.
    pub fn take_sent(&mut self) -> Vec<FromWorker> {
        std::mem::take(&mut self.sent)
    }

    /// Takes the fetches asked for so far.
    pub fn take_fetches(&mut self) -> Vec<DepLocation> {
        std::mem::take(&mut self.fetches)
    }

    /// Marks task `key` as taken by a thread (it can no longer be stolen).
    pub fn start(&mut self, key: &Key) {
        let Some(id) = self.by_key.get(key) else { return };
        if let Some(Recorded::Queued(task)) = self.tasks.remove(id) {
            self.tasks.insert(*id, Recorded::Started(task));
        }
    }

    /// Runs task `key` to its end now, as a thread of the pool would;
    /// whether it was there to run.
    pub fn run(&mut self, key: &Key) -> bool {
        let Some(&id) = self.by_key.get(key) else { return false };
        match self.tasks.remove(&id) {
            Some(Recorded::Queued(task) | Recorded::Started(task)) => {
                let outcome = task.func.func().call(task.values).map_err(|e| e.to_string());
                self.tasks.insert(id, Recorded::Ended(outcome));
                true
            }
            Some(other) => {
                self.tasks.insert(id, other);
                false
            }
            None => false,
        }
    }

    /// Ends task `key` with this outcome, as if its function had returned it.
    pub fn end(&mut self, key: &Key, outcome: TaskOutcome) {
        if let Some(&id) = self.by_key.get(key) {
            self.tasks.insert(id, Recorded::Ended(outcome));
        }
    }

    /// Keys of the tasks handed over that have neither ended nor been
    /// cancelled, in the order they were handed over.
    pub fn queued(&self) -> Vec<Key> {
        let mut open: Vec<(u64, Key)> = self
            .by_key
            .iter()
            .filter(|(_, id)| matches!(self.tasks.get(id), Some(Recorded::Queued(_) | Recorded::Started(_))))
            .map(|(k, &id)| (id, k.clone()))
            .collect();
        open.sort_by_key(|(id, _)| *id);
        open.into_iter().map(|(_, k)| k).collect()
    }

    /// Whether task `key` was cancelled.
    pub fn cancelled(&self, key: &Key) -> bool {
        self.by_key.get(key).is_some_and(|id| matches!(self.tasks.get(id), Some(Recorded::Cancelled)))
    }
}

impl WorkerComm for RecordingComm {
    type Handle = u64;

    fn to_scheduler(&mut self, msg: FromWorker) {
        self.sent.push(msg);
    }

    fn fetch(&mut self, dep: &DepLocation) {
        self.fetches.push(dep.clone());
    }

    fn forget(&mut self, key: &Key) {
        self.forgotten.push(key.clone());
    }

    fn execute(&mut self, task: Runnable) -> Option<u64> {
        let id = self.next;
        self.next += 1;
        self.executed.push(task.key.clone());
        self.by_key.insert(task.key.clone(), id);
        self.tasks.insert(id, Recorded::Queued(task));
        Some(id)
    }

    fn cancel(&mut self, handle: &u64) {
        if matches!(self.tasks.get(handle), Some(Recorded::Queued(_) | Recorded::Started(_))) {
            self.tasks.insert(*handle, Recorded::Cancelled);
        }
    }

    fn not_started(&self, handle: &u64) -> bool {
        matches!(self.tasks.get(handle), Some(Recorded::Queued(_)))
    }

    fn outcome(&mut self, handle: &u64) -> Option<TaskOutcome> {
        match self.tasks.remove(handle)? {
            Recorded::Ended(outcome) => Some(outcome),
            other => {
                self.tasks.insert(*handle, other);
                None
            }
        }
    }
}
