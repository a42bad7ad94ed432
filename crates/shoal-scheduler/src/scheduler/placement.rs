//! Placement: which worker runs a task, and when; workers' loads; and
//! stealing back queued work for idle workers.
//!
//! # The formula
//!
//! A task goes where it would finish first, as far as the scheduler can
//! tell from two things it knows cheaply: how much work each worker has
//! queued, and where the task's inputs are. For worker `w`:
//!
//! ```text
//! finish(w) = load(w) + (input bytes − input bytes already on w) / bandwidth
//!
//! load(w)   = Σ estimate(t) over the tasks processing on w  /  threads(w)
//! estimate  = mean duration of the task's group so far
//!             (SchedulerConfig::unknown_duration_us until one has finished)
//! bandwidth = SchedulerConfig::bandwidth_bytes_per_us
//! ```
//!
//! all in microseconds; the smallest `finish(w)` wins, ties going to the
//! lower worker number. Durations are learned per task group (tasks of one
//! key prefix, the same function on other data), from every completion's
//! reported duration, so a group's first tasks are placed on a guess and
//! the rest on what the first ones took. The load index keeps `load(w)` of
//! every worker that accepts work (a worker paused for memory is out of
//! it), least loaded first, updated at each assignment and completion.
//!
//! Which workers are weighed depends on the task:
//!
//! - **A task with inputs** is placed as soon as its last input is in
//!   memory. The candidates are the workers holding some of its inputs and
//!   the least loaded worker: a worker holding none of them is never
//!   better than the least loaded one, so no other worker needs looking
//!   at, and a placement costs a pass over the task's inputs, not over the
//!   workers. Such tasks are not held back for room: their inputs decide
//!   where they go, and waiting would lose that.
//! - **A root task** (no inputs, no constraints) has nothing to weigh but
//!   load. It waits in the ready queue (higher priority first, then
//!   submission order) and goes to the least loaded worker while that
//!   worker has room: fewer tasks processing than
//!   `threads + threads × target_queue_us / estimate`, at most 4096 a
//!   thread ([`Scheduler::capacity`]). That is enough queued work to hide
//!   a round trip and little enough to leave the rest for workers that
//!   join or go idle; a million root tasks never all land on the first
//!   worker. While queued work has one estimate, the least loaded worker
//!   has room if any does, so it is the only one looked at.
//! - **A constrained task** (resources, or workers it may run on) weighs
//!   every worker that may run it and has the resources free now, by the
//!   same `finish(w)`. If none has, it waits in the ready queue; if no
//!   connected worker ever could, its holders hear why (see `ops`).
//!
//! Queued tasks are offered again at the end of every event
//! ([`Scheduler::fill_workers`]).
//!
//! # Stealing
//!
//! Placement is decided once, with the estimates of the moment, so work
//! can pile up behind slow tasks. At each tick, while some worker is idle
//! and nothing is queued, the workers with more than two tasks a thread
//! processing are asked to give back half of their surplus over that,
//! newest submissions first ([`Scheduler::balance`]); what they give back
//! is placed again ([`Scheduler::stolen`]).

use rustc_hash::FxHashMap;
use shoal_graph::Key;
use shoal_proto::WorkerId;
use smallvec::SmallVec;

use super::Scheduler;
use crate::ids::Slot;
use crate::queue::Ready;
use crate::task::{Busy, Task, TaskState, Worker};

impl Scheduler {
    /// Gives a queued task to the best worker now, or leaves it queued.
    pub(super) fn place(&mut self, i: Slot) {
        if !self.task(i).is_root()
            && let Some(w) = self.best_worker(i)
        {
            self.assign(i, w);
            return;
        }
        let t = self.task(i);
        // Only a task with placement constraints can have nowhere to run.
        let constrained = t.constrained();
        self.queued.push(t.priority, Ready { seq: t.seq, task: i });
        if constrained {
            self.report_if_stuck(i);
        }
    }

    /// The worker where the task would finish first: its load, plus the
    /// time to fetch the inputs it does not hold (`finish(w)` in the
    /// module's notes). Candidates are the workers holding inputs and the
    /// least loaded one, or, for a constrained task, every worker that may
    /// run it and has its resources free.
    fn best_worker(&self, i: Slot) -> Option<WorkerId> {
        let t = self.task(i);
        if t.constrained() {
            return self
                .loads
                .iter()
                .filter(|w| self.may_run(i, *w))
                .filter(|w| self.workers.get(w).is_some_and(|wk| self.resources_available(i, wk)))
                .min_by_key(|w| (self.finish_estimate(i, *w), *w));
        }
        // One pass over the inputs: their total size, and how much of it
        // each holder has already.
        let mut total: u64 = 0;
        let mut held: SmallVec<[(WorkerId, u64); 8]> = SmallVec::new();
        for &d in &t.deps {
            let dep = self.task(d);
            total = total.saturating_add(dep.nbytes);
            for &w in self.tasks.who_has(d) {
                match held.iter_mut().find(|(h, _)| *h == w) {
                    Some((_, bytes)) => *bytes = bytes.saturating_add(dep.nbytes),
                    None => held.push((w, dep.nbytes)),
                }
            }
        }
        let bandwidth = self.config.bandwidth_bytes_per_us.max(1);
        // The least loaded worker too, unless it holds inputs already.
        if let Some(w) = self.loads.least()
            && !held.iter().any(|(h, _)| *h == w)
        {
            held.push((w, 0));
        }
        // A plain loop: a chain of iterators costs 70 more instructions a
        // placement.
        let mut best: Option<(u64, WorkerId)> = None;
        for &(w, local) in &held {
            let Some(load) = self.loads.load(w) else { continue };
            let finish = (load.saturating_add(total.saturating_sub(local) / bandwidth), w);
            if best.is_none_or(|b| finish < b) {
                best = Some(finish);
            }
        }
        best.map(|(_, w)| w)
    }

    /// Where a root task goes now: the least loaded worker, if it has room.
    /// While queued work has one duration estimate, a worker has room
    /// exactly when its load is under a bound, so the least loaded worker
    /// has room if any does; looking at it alone keeps a long queue from
    /// scanning every worker at every event.
    fn root_target(&self, i: Slot) -> Option<WorkerId> {
        let w = self.loads.least()?;
        let b = self.busy(w)?;
        (b.processing < self.capacity(b.threads, self.estimate_us(i))).then_some(w)
    }

    /// How busy a connected worker is.
    pub(super) fn busy(&self, w: WorkerId) -> Option<&Busy> {
        self.busy.get(w.0 as usize).filter(|b| b.address.is_some())
    }

    /// Whether worker `w` may ever run task `i`: it is one the task names
    /// (if it names any), and it has every resource in the amount needed.
    pub(super) fn may_run(&self, i: Slot, w: WorkerId) -> bool {
        let t = self.task(i);
        let Some(worker) = self.workers.get(&w) else { return false };
        let restrictions = t.restrictions();
        let allowed = restrictions.is_empty()
            || restrictions.iter().any(|r| *r == worker.info.name || *r == worker.info.data_address);
        let capable = t.resources().iter().all(|&(r, amount)| {
            worker
                .info
                .resources
                .iter()
                .any(|(name, total)| *name == self.resource_names[r.index()] && *total >= amount)
        });
        allowed && capable
    }

    /// Whether `worker` has task `i`'s resources free now.
    fn resources_available(&self, i: Slot, worker: &Worker) -> bool {
        self.task(i)
            .resources()
            .iter()
            .all(|&(r, amount)| worker.available.get(r.index()).is_some_and(|a| *a >= amount))
    }

    /// `finish(w)` of the module's notes for a constrained task, which
    /// weighs each worker in turn.
    fn finish_estimate(&self, i: Slot, w: WorkerId) -> u64 {
        let Some(b) = self.busy(w) else { return u64::MAX };
        let t = self.task(i);
        let missing_bytes: u64 = t
            .deps
            .iter()
            .filter(|&&d| !self.tasks.who_has(d).contains(&w))
            .fold(0, |sum, &d| sum.saturating_add(self.task(d).nbytes));
        b.load_key().saturating_add(missing_bytes / self.config.bandwidth_bytes_per_us.max(1))
    }

    /// How long task `i` is expected to run: its group's mean duration so
    /// far, or the configured guess for a group none of whose tasks has
    /// finished.
    fn estimate_us(&self, i: Slot) -> u64 {
        let (total, count) = self.durations[self.task(i).group.index()];
        total.checked_div(count).unwrap_or(self.config.unknown_duration_us)
    }

    /// How many tasks a worker may hold: one a thread, plus enough queued
    /// work to hide a round trip (`target_queue_us` a thread: a few
    /// thousand one-microsecond tasks, none more of one-second ones), at
    /// most 4096 a thread.
    fn capacity(&self, threads: u64, estimate_us: u64) -> usize {
        let queue = threads * self.config.target_queue_us / estimate_us.max(1);
        (threads + queue).min(threads * 4096) as usize
    }

    /// Gives task `i` to worker `w`: its compute message goes out at the
    /// end of the event, and its estimate counts in `w`'s load until it is
    /// unassigned.
    fn assign(&mut self, i: Slot, w: WorkerId) {
        let estimate = self.estimate_us(i);
        self.outbox.compute.to(w).push(i);
        self.set_state(i, TaskState::Processing(w));
        self.assigned += 1;
        if let Some(b) = Busy::of_mut(&mut self.busy, w) {
            b.processing += 1;
            b.occupancy_us = b.occupancy_us.saturating_add(estimate);
            self.loads.update(w, b.load_key());
        }
        self.book_resources(i, w, -1.0);
    }

    /// Gives back (`sign` 1) or takes (`sign` −1) the resources task `i`
    /// needs from worker `w`'s available amounts.
    fn book_resources(&mut self, i: Slot, w: WorkerId, sign: f64) {
        let resources = self.tasks.get(i).map_or(&[][..], Task::resources);
        if resources.is_empty() {
            return;
        }
        if let Some(worker) = self.workers.get_mut(&w) {
            for &(r, amount) in resources {
                if let Some(a) = worker.available.get_mut(r.index()) {
                    *a += sign * amount;
                }
            }
        }
    }

    /// Takes a task back from a worker that has not finished it: a compute
    /// message not yet sent is withdrawn, else the worker is told to drop it.
    pub(super) fn withdraw(&mut self, i: Slot, w: WorkerId) {
        self.unassign(i, w);
        if let Some(pending) = self.outbox.compute.get_mut(w)
            && let Some(pos) = pending.iter().position(|&slot| slot == i)
        {
            pending.remove(pos);
            return;
        }
        if self.workers.contains_key(&w) {
            let key = self.task(i).key.clone();
            self.outbox.release.to(w).push(key);
        }
    }

    /// Takes a task off a worker's books (finished, failed, stolen, lost).
    pub(super) fn unassign(&mut self, i: Slot, w: WorkerId) {
        let estimate = self.estimate_us(i);
        if !self.stealing.is_empty() {
            self.stealing.remove(&i);
        }
        if let Some(b) = Busy::of_mut(&mut self.busy, w) {
            b.processing -= 1;
            b.occupancy_us = b.occupancy_us.saturating_sub(estimate);
            self.loads.update(w, b.load_key());
        }
        self.book_resources(i, w, 1.0);
    }

    /// Hands queued tasks to workers with room.
    pub(super) fn fill_workers(&mut self) {
        let mut deferred: SmallVec<[(i32, Ready); 4]> = SmallVec::new();
        // Queued records were last touched when their tasks came in: ask
        // for those a few places ahead (see `TaskTable::prefetch`).
        const AHEAD: usize = 8;
        while let Some(ready) = self.queued.peek() {
            if let Some(ahead) = self.queued.ahead(AHEAD) {
                self.tasks.prefetch(ahead.task);
            }
            let i = ready.task;
            if self.tasks.get(i).is_none_or(|t| t.state != TaskState::Queued || t.seq != ready.seq) {
                // Placed or forgotten since it was queued.
                self.queued.pop();
                continue;
            }
            let root = self.task(i).is_root();
            let target = if root { self.root_target(i) } else { self.best_worker(i) };
            match target {
                Some(w) => {
                    self.queued.pop();
                    self.assign(i, w);
                }
                // Nobody has room: the rest of the queue waits too.
                None if root => break,
                None => deferred.extend(self.queued.pop()),
            }
        }
        for (priority, ready) in deferred {
            self.queued.push(priority, ready);
        }
    }

    /// Asks busy workers to give back queued tasks when others are idle.
    pub(super) fn balance(&mut self) {
        let idle = self
            .workers
            .keys()
            .filter(|w| self.accepts_work(**w) && self.busy(**w).is_some_and(|b| b.processing == 0))
            .count();
        if idle == 0 || !self.queued.is_empty() {
            return;
        }
        let mut asked: FxHashMap<WorkerId, usize> = FxHashMap::default();
        for &i in &self.stealing {
            if let Some(TaskState::Processing(w)) = self.tasks.get(i).map(|t| t.state) {
                *asked.entry(w).or_default() += 1;
            }
        }
        let mut victims: Vec<(usize, WorkerId)> = self
            .workers
            .keys()
            .filter_map(|&w| self.busy(w).map(|b| (w, b)))
            .filter(|(_, b)| b.processing > 2 * b.threads as usize)
            .map(|(w, b)| (b.processing - asked.get(&w).copied().unwrap_or(0), w))
            .collect();
        victims.sort_unstable_by(|a, b| b.cmp(a));
        victims.truncate(idle);
        if victims.is_empty() {
            return;
        }
        // One scan of the task table for all the victims' tasks.
        let mut candidates: FxHashMap<WorkerId, Vec<Slot>> = victims.iter().map(|&(_, v)| (v, Vec::new())).collect();
        for (i, w) in self.tasks.processing() {
            if let Some(list) = candidates.get_mut(&w)
                && !self.stealing.contains(&i)
            {
                list.push(i);
            }
        }
        for (_, v) in victims {
            let Some(b) = self.busy(v) else { continue };
            let spare = b.processing.saturating_sub(2 * b.threads as usize) / 2;
            let mut picked = candidates.remove(&v).unwrap_or_default();
            picked.sort_unstable_by_key(|&i| std::cmp::Reverse(self.task(i).seq));
            picked.truncate(spare);
            let keys: Vec<Key> = picked.iter().map(|&i| self.task(i).key.clone()).collect();
            self.stealing.extend(picked);
            if !keys.is_empty() {
                self.outbox.steal.to(v).extend(keys);
            }
        }
    }

    /// A worker gave back tasks it was asked to steal: each one still
    /// processing there is placed again.
    pub(super) fn stolen(&mut self, worker: WorkerId, keys: &[Key]) {
        for key in keys {
            let Some(i) = self.tasks.find(key) else { continue };
            self.stealing.remove(&i);
            if self.task(i).state == TaskState::Processing(worker) {
                self.unassign(i, worker);
                self.set_state(i, TaskState::Queued);
                self.place(i);
            }
        }
    }
}
