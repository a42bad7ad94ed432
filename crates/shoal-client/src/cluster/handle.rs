//! A counted reference to a task on a cluster: its status, its result
//! (inline, or fetched from a worker that holds it), and its release when
//! the last reference goes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal_graph::{Key, Value};
use shoal_local::Notify;
use shoal_proto::{ToScheduler, WorkerId};

use super::state::{ClusterState, Decoder, TaskStatus};
use crate::error::Error;
use crate::status::Status;

/// A counted reference to a task on a cluster.
pub(crate) struct ClusterHandle {
    pub(super) key: Key,
    pub(super) state: Arc<ClusterState>,
}

impl ClusterHandle {
    pub(crate) fn key(&self) -> &Key {
        &self.key
    }

    pub(crate) fn state(&self) -> &ClusterState {
        &self.state
    }

    pub(crate) fn same_cluster(&self, other: &ClusterHandle) -> bool {
        Arc::ptr_eq(&self.state, &other.state)
    }

    pub(crate) fn status(&self) -> Status {
        match self.state.lock().keys.get(&self.key).map(|e| &e.status) {
            Some(TaskStatus::Pending) | None => Status::Pending,
            Some(TaskStatus::Finished) => Status::Finished,
            Some(TaskStatus::Erred(Error::Cancelled { .. })) => Status::Cancelled,
            Some(TaskStatus::Erred(_)) => Status::Error,
        }
    }

    pub(crate) fn cancel(&self) {
        self.state.send(&ToScheduler::Cancel(vec![self.key.clone()]));
    }

    /// Asks each handle's scheduler to keep its task running: one message
    /// per cluster, however many futures.
    pub(crate) fn fire_and_forget(handles: &[&ClusterHandle]) {
        let mut left = handles.to_vec();
        while let Some(&first) = left.first() {
            let (same, other): (Vec<&ClusterHandle>, Vec<&ClusterHandle>) =
                left.into_iter().partition(|h| h.same_cluster(first));
            first.state.send(&ToScheduler::FireAndForget(same.iter().map(|h| h.key.clone()).collect()));
            left = other;
        }
    }

    pub(crate) fn subscribe(&self, notify: Arc<dyn Notify>, index: usize) {
        let mut inner = self.state.lock();
        match inner.keys.get_mut(&self.key) {
            Some(e) if matches!(e.status, TaskStatus::Pending) => e.listeners.push((notify, index)),
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

    /// [`ClusterHandle::wait_done`], with where the result is.
    pub(super) fn wait_located(&self, deadline: Option<Instant>) -> Option<Located> {
        let mut inner = self.state.lock();
        loop {
            let entry = inner.keys.get(&self.key)?;
            match &entry.status {
                TaskStatus::Finished => {
                    return entry.producer.map(|p| Located {
                        outcome: Ok(p),
                        holder: entry.holder,
                        inline: entry.inline.clone(),
                    });
                }
                TaskStatus::Erred(e) => return Some(Located { outcome: Err(e.clone()), holder: None, inline: None }),
                TaskStatus::Pending => {}
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
    pub(super) fn fetch(&self, mut producer: Decoder) -> Result<Value, Error> {
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
                    TaskStatus::Finished => return entry.producer.map(Ok),
                    TaskStatus::Erred(e) => return Some(Err(e.clone())),
                    TaskStatus::Pending => {}
                }
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            inner = self.state.changed.wait_timeout(inner, left).unwrap_or_else(|p| p.into_inner()).0;
        }
    }
}

/// A finished task's outcome and where its result is.
pub(super) struct Located {
    pub(super) outcome: Result<Decoder, Error>,
    /// A worker that held it when the scheduler reported it.
    pub(super) holder: Option<WorkerId>,
    /// The result itself, if it came with the report.
    pub(super) inline: Option<Arc<[u8]>>,
}

/// Rounds of asking holders that turn out not to have a result before a
/// fetch gives up.
const FETCH_ROUNDS: usize = 3;

/// How long a fetch that found no copy waits for news before it asks again.
const NEWS_WAIT: Duration = Duration::from_secs(5);

impl Clone for ClusterHandle {
    fn clone(&self) -> ClusterHandle {
        if let Some(e) = self.state.lock().keys.get_mut(&self.key) {
            e.holders += 1;
        }
        ClusterHandle { key: self.key.clone(), state: self.state.clone() }
    }
}

impl Drop for ClusterHandle {
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
