//! What clients ask of the scheduler besides running tasks — where results
//! are, tasks kept running after their futures are dropped, data they
//! scattered, restarting the cluster — and what it tells them when a task
//! has nowhere to run; and workers pausing for memory, which leave the
//! load index until they resume.

use std::fmt::Write as _;

use rustc_hash::{FxHashMap, FxHashSet};
use shoal_graph::Key;
use shoal_proto::{
    ArgList, ClientId, FromScheduler, SCATTERED_FUNC, ScatteredMsg, TaskErrorMsg, TaskId, TaskMsg, ToWorker, WorkerId,
};

use super::{FOREVER, Outbox, Scheduler};
use crate::comm::Comm;
use crate::ids::Slot;
use crate::load::LoadIndex;
use crate::queue::ReadyQueue;
use crate::table::TaskTable;
use crate::task::{Busy, TaskState};

/// How many waiting dependents of a stuck task hear why, at most: enough
/// for the futures a user waits on, bounded for graphs of millions.
const STUCK_NOTICE_LIMIT: usize = 10_000;

/// How many workers a "no worker may run it" reason lists.
const REASON_WORKERS: usize = 8;

impl Scheduler {
    /// Whether a worker may get new tasks now (it is not paused for memory).
    pub(super) fn accepts_work(&self, w: WorkerId) -> bool {
        self.paused.is_empty() || !self.paused.contains(&w)
    }

    /// A worker went over its memory limit (`true`) or back under it. A
    /// paused worker leaves the load index, which every placement decision
    /// reads, and comes back in with the load it has when it resumes.
    pub(super) fn set_paused(&mut self, w: WorkerId, paused: bool) {
        if paused {
            if self.paused.insert(w) {
                self.loads.remove(w);
            }
        } else if self.paused.remove(&w)
            && let Some(load) = self.busy(w).map(Busy::load_key)
        {
            self.loads.insert(w, load);
        }
    }

    /// Tells one client how a decided task ended (another client's
    /// submission of it ended earlier).
    pub(super) fn tell_outcome(&mut self, i: Slot, client: ClientId) {
        let kept: Option<Box<[u8]>> = self.inline.get(i).map(Box::from);
        if let Some(msg) = self.outcome(i, 1, kept.as_deref()) {
            self.outbox.clients.to(client).push(msg);
        }
    }

    /// Where the results of these keys are: each key with the positions,
    /// in the list of workers that comes with it, of the workers holding it.
    pub(super) fn who_has_reply(&self, keys: Vec<Key>) -> FromScheduler {
        let mut positions: FxHashMap<WorkerId, u32> = FxHashMap::default();
        let mut workers = Vec::new();
        let holders = keys
            .into_iter()
            .map(|k| {
                let mut at = Vec::new();
                if let Some(i) = self.tasks.find(&k) {
                    for w in self.tasks.who_has(i) {
                        let Some(worker) = self.workers.get(w) else { continue };
                        let position = *positions.entry(*w).or_insert_with(|| {
                            workers.push(worker.info.clone());
                            workers.len() as u32 - 1
                        });
                        at.push(position);
                    }
                }
                (k, at)
            })
            .collect();
        FromScheduler::WhoHas { workers, holders }
    }

    /// Keeps these tasks wanted until they finish or fail, whatever their
    /// clients drop meanwhile.
    pub(super) fn fire_and_forget(&mut self, keys: &[Key]) {
        for key in keys {
            let Some(i) = self.tasks.find(key) else { continue };
            let settled = matches!(self.task(i).state, TaskState::Memory | TaskState::Erred);
            if !settled && !self.tasks.holders(i).contains(&FOREVER) {
                self.tasks.add_holder(i, FOREVER);
            }
        }
    }

    /// Records data a client stored on workers as results in memory.
    pub(super) fn scattered(&mut self, client: ClientId, items: Vec<ScatteredMsg>) {
        for item in items {
            if let Some(i) = self.tasks.find(&item.key) {
                // A key the cluster knows already: share it, and keep the
                // new copy if the worker is known and did not hold it.
                if !self.tasks.holders(i).contains(&client) {
                    self.tasks.add_holder(i, client);
                }
                if self.task(i).state == TaskState::Memory
                    && self.workers.contains_key(&item.worker)
                    && !self.tasks.who_has(i).contains(&item.worker)
                {
                    self.add_replica(i, item.worker);
                }
                continue;
            }
            let mut msg = TaskMsg {
                key: item.key,
                func: SCATTERED_FUNC.into(),
                args: ArgList::new(),
                priority: 0,
                retries: 0,
                resources: Vec::new(),
                workers: Vec::new(),
                held: true,
            };
            let i = self.insert_task(client, &mut msg);
            if self.workers.contains_key(&item.worker) {
                self.task_mut(i).nbytes = item.nbytes;
                self.add_replica(i, item.worker);
                self.set_state(i, TaskState::Memory);
            } else {
                // The worker died between the client's put and this message.
                let message = format!("the worker it was scattered to ({}) is gone; scatter it again", item.worker);
                self.fail(i, TaskErrorMsg::Failed { message });
            }
        }
    }

    /// Forgets every task and worker: workers are told to start afresh (and
    /// register again as new workers), clients that their tasks are gone.
    pub(super) fn restart(&mut self, comm: &mut impl Comm) {
        let mut workers: Vec<WorkerId> = self.workers.keys().copied().collect();
        workers.sort_unstable();
        for w in workers {
            comm.to_worker(w, ToWorker::Restart);
        }
        self.workers.clear();
        // Workers register again under new numbers; the old ones are gone.
        self.busy.fill(Busy::default());
        self.loads = LoadIndex::default();
        self.paused.clear();
        self.stuck.clear();
        self.stealing.clear();
        self.inline.clear();
        self.tasks = TaskTable::default();
        self.queued = ReadyQueue::default();
        // Messages about tasks that no longer exist are not sent.
        self.outbox = Outbox::default();
        let mut clients: Vec<ClientId> = self.clients.iter().copied().collect();
        clients.sort_unstable();
        for c in clients {
            comm.to_client(c, vec![FromScheduler::Restarted]);
        }
    }

    /// A queued task found no worker: if no connected worker may ever run
    /// it, it is remembered as stuck; the next tick says why to its holders
    /// and times it for `no_worker_timeout_us`.
    pub(super) fn report_if_stuck(&mut self, i: Slot) {
        let id = self.tasks.id(i);
        if !self.stuck.contains_key(&id) && self.no_worker_reason(i).is_some() {
            self.stuck.insert(id, None);
        }
    }

    /// Tells the holders of a stuck task, and of the tasks waiting for it
    /// (by then a batch's dependents are wired), why it cannot run.
    fn tell_stuck(&mut self, i: Slot, reason: &str) {
        let key = self.task(i).key.clone();
        let mut seen: FxHashSet<Slot> = FxHashSet::default();
        let mut stack = vec![i];
        while let Some(t) = stack.pop() {
            if seen.len() >= STUCK_NOTICE_LIMIT || !seen.insert(t) {
                continue;
            }
            let task = self.task(t);
            let reason =
                if t == i { reason.to_string() } else { format!("it waits for {key}, which cannot run: {reason}") };
            let notice = FromScheduler::NoWorker { key: task.key.clone(), reason };
            let holders = self.tasks.holders(t).to_vec();
            for c in holders {
                let outbox = self.outbox.clients.to(c);
                if !outbox.contains(&notice) {
                    outbox.push(notice.clone());
                }
            }
            let task = self.task(t);
            stack.extend(task.dependents.iter().copied().filter(|&d| self.task(d).state == TaskState::Waiting));
        }
    }

    /// Why no connected worker may run task `i`, or `None` if one may (or
    /// it has no placement constraints: it only waits for room).
    pub(super) fn no_worker_reason(&self, i: Slot) -> Option<String> {
        let t = self.task(i);
        let (restrictions, resources) = (t.restrictions(), t.resources());
        if restrictions.is_empty() && resources.is_empty() {
            return None;
        }
        let mut ids: Vec<WorkerId> = self.workers.keys().copied().collect();
        ids.sort_unstable();
        if ids.iter().any(|&w| self.may_run(i, w)) {
            return None;
        }
        let allowed: Vec<WorkerId> = ids
            .iter()
            .copied()
            .filter(|w| {
                let info = &self.workers[w].info;
                restrictions.is_empty() || restrictions.iter().any(|r| *r == info.name || *r == info.data_address)
            })
            .collect();
        let mut why = Vec::new();
        if allowed.is_empty() && !restrictions.is_empty() {
            why.push(format!("it may only run on {} and no such worker is connected", restrictions.join(", ")));
        } else {
            for &(r, amount) in resources {
                let name = &self.resource_names[r.index()];
                let most = allowed
                    .iter()
                    .filter_map(|w| {
                        self.workers[w]
                            .info
                            .resources
                            .iter()
                            .filter(|(n, _)| n == name)
                            .map(|(_, a)| *a)
                            .reduce(f64::max)
                    })
                    .reduce(f64::max);
                let scope = if restrictions.is_empty() { "connected worker" } else { "worker it may run on" };
                match most {
                    Some(most) if most < amount => {
                        why.push(format!("it needs {name}={amount} and no {scope} has that much (the most is {most})"))
                    }
                    None => why.push(format!("it needs {name}={amount} and no {scope} has any {name}")),
                    Some(_) => {}
                }
            }
        }
        if why.is_empty() {
            why.push("no connected worker has every resource it needs".to_string());
        }
        let mut text = why.join("; ");
        if ids.is_empty() {
            text.push_str(" (no workers are connected)");
        } else {
            text.push_str(" (connected: ");
            for (n, w) in ids.iter().take(REASON_WORKERS).enumerate() {
                let info = &self.workers[w].info;
                let _ = write!(text, "{}{}", if n > 0 { ", " } else { "" }, info.name);
                if !info.resources.is_empty() {
                    let listed: Vec<String> = info.resources.iter().map(|(n, a)| format!("{n}={a}")).collect();
                    let _ = write!(text, " [{}]", listed.join(", "));
                }
            }
            if ids.len() > REASON_WORKERS {
                let _ = write!(text, ", and {} more", ids.len() - REASON_WORKERS);
            }
            text.push(')');
        }
        Some(text)
    }

    /// Forgets stuck tasks that were placed or dropped meanwhile, and fails
    /// those stuck for longer than the no-worker timeout.
    pub(super) fn check_stuck(&mut self, now_us: u64) {
        if self.stuck.is_empty() {
            return;
        }
        let timeout = self.config.no_worker_timeout_us;
        let mut entries: Vec<(TaskId, Option<u64>)> = self.stuck.iter().map(|(&id, &s)| (id, s)).collect();
        entries.sort_unstable_by_key(|(id, _)| *id);
        for (id, since) in entries {
            let i = Slot::of(id);
            if self.tasks.id(i) != id || self.tasks.get(i).is_none_or(|t| t.state != TaskState::Queued) {
                self.stuck.remove(&id);
                continue;
            }
            let Some(since) = since else {
                match self.no_worker_reason(i) {
                    Some(reason) => {
                        self.stuck.insert(id, Some(now_us));
                        self.tell_stuck(i, &reason);
                    }
                    None => {
                        self.stuck.remove(&id);
                    }
                }
                continue;
            };
            let Some(timeout) = timeout else { continue };
            if now_us.saturating_sub(since) <= timeout {
                continue;
            }
            self.stuck.remove(&id);
            if let Some(reason) = self.no_worker_reason(i) {
                let waited = timeout as f64 / 1e6;
                let reason = format!("{reason}; no such worker joined within {waited} s");
                self.fail(i, TaskErrorMsg::Unsatisfiable { reason });
            }
        }
    }
}
