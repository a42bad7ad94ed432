//! A task's life: submitted and wired to its inputs, queued once they are
//! in memory, finished or failed on a worker, and computed again from its
//! lineage when its result is lost with a worker.
//!
//! The state diagram is [`TaskState`]'s. Every change of state goes
//! through [`Scheduler::set_state`], which keeps the inputs' counts of
//! active readers.

use std::sync::Arc;

use shoal_graph::{Key, Prefix, Token};
use shoal_proto::{
    ArgList, ArgMsg, ClientId, FinishedMsg, FromScheduler, FromWorker, INLINE_LIMIT, TaskErrorMsg, TaskMsg, WorkerId,
};
use smallvec::SmallVec;

use super::{FOREVER, SCATTERED, Scheduler};
use crate::idlist::IdList;
use crate::ids::{FuncId, GroupId, ResourceId, Slot};
use crate::spill::Marked;
use crate::table::TaskTable;
use crate::task::{Extra, Task, TaskState};

/// The slots of a burst's finished tasks, in the order they are handled,
/// and how far handling has got: each completion asks for the records the
/// ones a few places later will read, so that their cache misses (the
/// records were last touched when the tasks were sent, long before)
/// overlap with the work, a bounded distance ahead. Prefetching the whole
/// burst up front instead lets a large burst's first records leave the
/// cache before they are read.
#[derive(Default)]
pub(super) struct Lookahead {
    slots: Vec<Slot>,
    next: usize,
}

impl Lookahead {
    /// Records are asked for this many completions ahead, their inputs'
    /// and dependents' half as many (by then the record has arrived), and
    /// the inputs of the dependents that the completion makes ready half as
    /// many again (they are read to place those dependents).
    const RECORDS: usize = 16;
    const DEPENDENTS: usize = 8;
    const SIBLINGS: usize = 4;

    /// The lookahead over a burst's completions, with the first ones'
    /// records and dependents asked for already.
    pub(super) fn new(msgs: &[(WorkerId, FromWorker)], tasks: &TaskTable) -> Lookahead {
        let finished = msgs.iter().flat_map(|(_, m)| match m {
            FromWorker::Finished(done) => done.as_slice(),
            _ => &[],
        });
        let slots: Vec<Slot> = finished.map(|f| Slot::of(f.id)).collect();
        slots.iter().take(Self::RECORDS).for_each(|&i| tasks.prefetch(i));
        slots.iter().take(Self::DEPENDENTS).for_each(|&i| Self::prefetch_neighbours(tasks, i));
        slots.iter().take(Self::SIBLINGS).for_each(|&i| Self::prefetch_siblings(tasks, i));
        Lookahead { slots, next: 0 }
    }

    /// Before the next completion is handled.
    pub(super) fn step(&mut self, tasks: &TaskTable) {
        let n = self.next;
        self.next += 1;
        if let Some(&i) = self.slots.get(n + Self::RECORDS) {
            tasks.prefetch(i);
        }
        if let Some(&i) = self.slots.get(n + Self::DEPENDENTS) {
            Self::prefetch_neighbours(tasks, i);
        }
        if let Some(&i) = self.slots.get(n + Self::SIBLINGS) {
            Self::prefetch_siblings(tasks, i);
        }
    }

    /// The records of task `i`'s inputs and dependents.
    fn prefetch_neighbours(tasks: &TaskTable, i: Slot) {
        if let Some(t) = tasks.get(i) {
            t.deps.iter().chain(t.dependents.iter()).for_each(|&d| tasks.prefetch(d));
        }
    }

    /// The inputs of the dependents that task `i` is the last input of.
    fn prefetch_siblings(tasks: &TaskTable, i: Slot) {
        let Some(t) = tasks.get(i) else { return };
        for d in t.dependents.iter().filter_map(|&d| tasks.get(d)) {
            if d.state == TaskState::Waiting && d.missing == 1 {
                d.deps.iter().for_each(|&s| tasks.prefetch(s));
            }
        }
    }
}

/// Calls `f` with each key a task's arguments name, in order, repeats
/// included. A plain loop: a `flat_map` iterator costs 70 more
/// instructions per task on the submission path.
fn for_each_input_key<'a>(args: &'a [ArgMsg], mut f: impl FnMut(&'a Key)) {
    for arg in args {
        match arg {
            ArgMsg::Key(k) => f(k),
            ArgMsg::List(ks) => ks.iter().for_each(&mut f),
            ArgMsg::Value(_) => {}
        }
    }
}

impl Scheduler {
    pub(super) fn submit(&mut self, client: ClientId, mut msgs: Vec<TaskMsg>) {
        // The index entries of a task's key and inputs are cache misses
        // (a million tasks' index is 16 MB): ask for those of the task a
        // few places ahead while this one is handled, so they overlap.
        const AHEAD: usize = 8;
        for ahead in msgs.iter().take(AHEAD) {
            self.prefetch_msg(ahead);
        }
        for ahead in msgs.iter().take(AHEAD / 2) {
            self.prefetch_inputs(ahead);
        }
        // Each message is read where it lies, what the record keeps taken
        // out of it: moving a message (240 bytes) out whole copies it
        // twice, 58 instructions a task.
        for k in 0..msgs.len() {
            if let Some(ahead) = msgs.get(k + AHEAD) {
                self.prefetch_msg(ahead);
            }
            if let Some(ahead) = msgs.get(k + AHEAD / 2) {
                self.prefetch_inputs(ahead);
            }
            let msg = &mut msgs[k];
            if let Some(i) = self.tasks.find(&msg.key) {
                // A key the cluster knows: share it, and bring it back if its
                // result was released.
                if msg.held && !self.tasks.holders(i).contains(&client) {
                    self.tasks.add_holder(i, client);
                }
                if self.task(i).state == TaskState::Released {
                    self.ensure_computed(i);
                } else if msg.held && matches!(self.task(i).state, TaskState::Erred | TaskState::Memory) {
                    // Decided before this client asked: it has not heard.
                    self.tell_outcome(i, client);
                }
                continue;
            }
            let i = self.insert_task(client, msg);
            self.wire(i, &mut msg.args);
        }
    }

    /// The records of a task's inputs, for `wire` to find them (their
    /// index entries were asked for by [`Scheduler::prefetch_msg`] a few
    /// tasks earlier).
    fn prefetch_inputs(&self, msg: &TaskMsg) {
        for_each_input_key(&msg.args, |k| self.tasks.prefetch_record_of(k));
    }

    fn prefetch_msg(&self, msg: &TaskMsg) {
        self.tasks.prefetch_key(&msg.key);
        for_each_input_key(&msg.args, |k| self.tasks.prefetch_key(k));
    }

    /// Adds a task's record, taking what it keeps out of the message;
    /// returns its slot.
    pub(super) fn insert_task(&mut self, client: ClientId, msg: &mut TaskMsg) -> Slot {
        let group = self.group_index(msg.key.shared_prefix());
        let extra = if msg.resources.is_empty() && msg.workers.is_empty() && msg.retries == 0 {
            None
        } else {
            let resources = std::mem::take(&mut msg.resources)
                .into_iter()
                .map(|(name, amount)| (self.resource_index(&name), amount))
                .collect();
            let workers = std::mem::take(&mut msg.workers);
            Some(Box::new(Extra { resources, workers, retries_left: msg.retries, ..Extra::default() }))
        };
        let seq = self.next_seq;
        self.next_seq = seq.wrapping_add(1);
        let func = self.func_number(&msg.func);
        // Taken, not cloned: an indexed key (an array chunk's) would
        // allocate. What is left is a key of the same prefix, dropped with
        // the message.
        let blank = Key::scalar(msg.key.shared_prefix().clone(), Token(0));
        let key = std::mem::replace(&mut msg.key, blank);
        self.tasks.insert(Task {
            extra,
            holder: if msg.held { client } else { ClientId::NONE },
            group,
            ..Task::new(key, func, msg.priority, seq)
        })
    }

    /// Links a new task to its dependencies and starts it on its way.
    /// Its arguments are taken if the record keeps them.
    fn wire(&mut self, i: Slot, args: &mut ArgList) {
        let mut deps: IdList<Slot> = IdList::default();
        let mut unknown = None;
        // Whether each argument is one dependency's key, each once.
        let mut deps_only = true;
        // Inputs not in memory, and whether each is in memory or on its
        // way there (none released or failed).
        let mut missing = 0;
        let mut settled = true;
        for arg in args.iter() {
            let keys = match arg {
                ArgMsg::Key(k) => std::slice::from_ref(k),
                ArgMsg::List(ks) => {
                    deps_only = false;
                    ks.as_slice()
                }
                ArgMsg::Value(_) => {
                    deps_only = false;
                    &[]
                }
            };
            for k in keys {
                match self.tasks.find(k) {
                    Some(d) if !deps.contains(&d) => {
                        deps.push(d);
                        // Its record is in cache, read to compare keys.
                        let dep = self.task_mut(d);
                        dep.dependents.push(i);
                        match dep.state {
                            TaskState::Memory => {}
                            TaskState::Released | TaskState::Erred => settled = false,
                            _ => missing += 1,
                        }
                    }
                    Some(_) => deps_only = false,
                    None => unknown = Some(k.clone()),
                }
            }
        }
        if !deps_only || unknown.is_some() {
            self.tasks.keep_args(i, std::mem::take(args).into_vec().into_boxed_slice());
        }
        self.task_mut(i).deps = deps;
        if let Some(k) = unknown {
            self.fail(i, TaskErrorMsg::UnknownDependency(k));
        } else if settled && self.task(i).func != SCATTERED {
            // Every input computed or being computed: counted above,
            // without `ensure_computed`'s second look at each.
            self.start(i, missing);
        } else {
            self.ensure_computed(i);
        }
    }

    /// Queues a task whose inputs are all in memory, else makes it wait
    /// for the `missing` others.
    fn start(&mut self, i: Slot, missing: u32) {
        self.task_mut(i).missing = missing;
        if missing == 0 {
            self.set_state(i, TaskState::Queued);
            self.place(i);
        } else {
            self.set_state(i, TaskState::Waiting);
        }
    }

    /// Makes a released task run again, with whatever of its inputs is
    /// missing (recursively, from the lineage).
    fn ensure_computed(&mut self, start: Slot) {
        let mut stack: SmallVec<[Slot; 8]> = smallvec::smallvec![start];
        while let Some(i) = stack.pop() {
            if self.task(i).state != TaskState::Released {
                continue;
            }
            if self.task(i).func == SCATTERED {
                // Data a client put on a worker has no function to rerun.
                let message = "its data was scattered to a worker that is gone; scatter it again".to_string();
                self.fail(i, TaskErrorMsg::Failed { message });
                continue;
            }
            // One look at each input: failed, missing, or to be computed again.
            let mut missing = 0;
            let mut released: SmallVec<[Slot; 4]> = SmallVec::new();
            let mut failed = None;
            for &d in &self.task(i).deps {
                match self.task(d).state {
                    TaskState::Memory => {}
                    TaskState::Erred => {
                        failed = Some(d);
                        break;
                    }
                    TaskState::Released => {
                        missing += 1;
                        released.push(d);
                    }
                    _ => missing += 1,
                }
            }
            if let Some(failed) = failed {
                let error = self.dependency_error(failed);
                self.fail(i, error);
                continue;
            }
            self.start(i, missing);
            stack.extend(released);
        }
    }

    pub(super) fn finished(&mut self, worker: WorkerId, f: &mut FinishedMsg) {
        let Some(i) = self.tasks.resolve(f.id, &f.key) else {
            // Forgotten meanwhile: the worker may drop it.
            self.outbox.release.to(worker).push(f.key.clone());
            return;
        };
        if self.task(i).state != TaskState::Processing(worker) {
            if self.task(i).state == TaskState::Memory && !self.tasks.who_has(i).contains(&worker) {
                // A stolen task ran on both: keep the extra copy.
                self.add_replica(i, worker);
            } else if !self.tasks.who_has(i).contains(&worker) {
                self.outbox.release.to(worker).push(f.key.clone());
            }
            return;
        }
        let group = self.task(i).group.index();
        let (total, count) = &mut self.durations[group];
        // Saturating: a worker's report must not be able to overflow the
        // scheduler's bookkeeping (a fuzz test sends `u64::MAX`).
        *total = total.saturating_add(f.duration_us);
        *count += 1;
        self.unassign(i, worker);
        self.task_mut(i).nbytes = f.nbytes;
        self.add_replica(i, worker);
        self.set_state(i, TaskState::Memory);
        let inline = f.inline.take().filter(|data| data.len() <= INLINE_LIMIT);
        self.notify_holders(i, inline.as_deref());
        // Kept on only for the tasks that will read it.
        if let Some(data) = inline
            && self.task(i).waiters > 0
        {
            self.inline.keep(i, data);
        }
        // Placing a dependent never changes this task's dependents.
        self.for_each_linked(i, |t| &t.dependents, Scheduler::input_ready);
        self.consider_release(i);
        if self.tasks.get(i).is_some() {
            // Releasing an input never changes this task's inputs (it
            // depends on them, so they stay).
            self.for_each_linked(i, |t| &t.deps, Scheduler::consider_release);
        }
    }

    /// Calls `f` with each task in one of task `i`'s lists (`list`: its
    /// inputs or its dependents), which `f` must leave as it is. Over a
    /// copy of the ids when they are inline, else by position: by position
    /// each id costs two more look-ups of the record, and a `SmallVec` copy
    /// more still. Always inlined: left to the compiler, the calls cost
    /// 20 more instructions a task.
    #[inline(always)]
    fn for_each_linked(
        &mut self,
        i: Slot,
        list: impl Fn(&Task) -> &IdList<Slot>,
        mut f: impl FnMut(&mut Scheduler, Slot),
    ) {
        match list(self.task(i)).inline() {
            Some((ids, len)) => ids[..len].iter().for_each(|&d| f(self, d)),
            None => {
                for k in 0..list(self.task(i)).len() {
                    let d = list(self.task(i))[k];
                    f(self, d);
                }
            }
        }
    }

    /// One more of task `d`'s inputs is in memory.
    fn input_ready(&mut self, d: Slot) {
        if self.task(d).state == TaskState::Waiting {
            let t = self.task_mut(d);
            t.missing -= 1;
            if t.missing == 0 {
                self.set_state(d, TaskState::Queued);
                self.place(d);
            }
        }
    }

    pub(super) fn add_replica(&mut self, i: Slot, worker: WorkerId) {
        self.tasks.add_who_has(i, worker);
    }

    /// A worker could not run a task: it runs again while it has retries
    /// left, else it fails.
    pub(super) fn task_failed(&mut self, worker: WorkerId, key: &Key, message: &mut String) {
        if let Some(i) = self.tasks.find(key)
            && self.task(i).state == TaskState::Processing(worker)
        {
            self.unassign(i, worker);
            // Off the worker's books before anything else: it has
            // dropped the task already.
            self.set_state(i, TaskState::Queued);
            if self.task(i).retries_left() > 0 {
                self.task_mut(i).extra_mut().retries_left -= 1;
                self.place(i);
            } else {
                self.fail(i, TaskErrorMsg::Failed { message: std::mem::take(message) });
            }
        }
    }

    /// A worker could not fetch a task's inputs: the ones it names exist
    /// nowhere it looked.
    pub(super) fn missing_data(&mut self, worker: WorkerId, key: &Key, missing: &[Key]) {
        // The scheduler's map of who holds what is stale: believe the
        // worker, and run the task again once its inputs exist.
        for m in missing {
            let Some(d) = self.tasks.find(m) else { continue };
            self.tasks.retain_who_has(d, |x| *x == worker);
            if self.task(d).state == TaskState::Memory && self.tasks.who_has(d).is_empty() {
                self.data_lost(d);
            }
        }
        if let Some(i) = self.tasks.find(key)
            && self.task(i).state == TaskState::Processing(worker)
        {
            self.unassign(i, worker);
            self.set_state(i, TaskState::Queued);
            let missing = self.task(i).deps.iter().filter(|&&d| self.task(d).state != TaskState::Memory).count();
            if missing > 0 {
                self.task_mut(i).missing = missing as u32;
                self.set_state(i, TaskState::Waiting);
            } else {
                self.place(i);
            }
        }
    }

    /// The only copies of a result are gone.
    fn data_lost(&mut self, i: Slot) {
        self.set_state(i, TaskState::Released);
        let dependents = SmallVec::<[Slot; 4]>::from_slice(&self.task(i).dependents);
        for d in dependents {
            match self.task(d).state {
                TaskState::Queued => {
                    self.task_mut(d).missing = 1;
                    self.set_state(d, TaskState::Waiting);
                }
                TaskState::Processing(w) => {
                    // It would fetch an input that no longer exists.
                    self.withdraw(d, w);
                    self.task_mut(d).missing = 1;
                    self.set_state(d, TaskState::Waiting);
                }
                TaskState::Waiting => self.task_mut(d).missing += 1,
                _ => {}
            }
        }
        if self.task(i).wanted() {
            self.ensure_computed(i);
        } else {
            self.consider_forget(i);
        }
    }

    /// Tasks a worker was running or holding results of, after it is gone:
    /// results only it held are recomputed if anything still needs them,
    /// and its running tasks run elsewhere (or fail, once too many workers
    /// died running them).
    pub(super) fn tasks_lost_with(&mut self, worker: WorkerId) {
        // Lost results first: a task put back in the queue below must not be
        // placed as if an input that died with this worker still existed.
        let (held, processing) = self.tasks.on_worker(worker);
        for i in held {
            if self.tasks.get(i).is_none() {
                continue;
            }
            self.tasks.retain_who_has(i, |h| *h != worker);
            if self.task(i).state == TaskState::Memory && self.tasks.who_has(i).is_empty() {
                self.data_lost(i);
            }
        }
        for i in processing {
            self.stealing.remove(&i);
            if self.tasks.get(i).is_none() || self.task(i).state != TaskState::Processing(worker) {
                continue;
            }
            let attempts = {
                let extra = self.task_mut(i).extra_mut();
                extra.lost += 1;
                extra.lost
            };
            if attempts > self.config.allowed_failures {
                self.set_state(i, TaskState::Queued);
                self.fail(i, TaskErrorMsg::WorkerLost { attempts });
            } else {
                self.set_state(i, TaskState::Queued);
                self.place(i);
            }
        }
    }

    /// Fails a task and, transitively, everything that depends on it.
    pub(super) fn fail(&mut self, start: Slot, error: TaskErrorMsg) {
        let mut work = vec![(start, error)];
        while let Some((i, error)) = work.pop() {
            // Failing one dependent can cancel and forget another that is
            // still on the list (nothing wants it any more).
            let Some(state) = self.tasks.get(i).map(|t| t.state) else { continue };
            if state == TaskState::Erred || state == TaskState::Memory {
                continue;
            }
            if let TaskState::Processing(w) = state {
                self.withdraw(i, w);
            }
            self.task_mut(i).extra_mut().error = Some(error);
            self.set_state(i, TaskState::Erred);
            self.notify_holders(i, None);
            let dependents = SmallVec::<[Slot; 4]>::from_slice(&self.task(i).dependents);
            for d in dependents {
                if self.task(d).state.is_active() || self.task(d).state == TaskState::Released {
                    work.push((d, self.dependency_error(i)));
                }
            }
            let deps = SmallVec::<[Slot; 4]>::from_slice(&self.task(i).deps);
            for d in deps {
                self.consider_release(d);
            }
            self.consider_forget(i);
        }
    }

    /// A client cancels tasks: they fail, and so does what depends on them.
    pub(super) fn cancel(&mut self, keys: &[Key]) {
        for key in keys {
            if let Some(i) = self.tasks.find(key) {
                self.fail(i, TaskErrorMsg::Cancelled);
            }
        }
    }

    fn dependency_error(&self, failed_dep: Slot) -> TaskErrorMsg {
        let dep = self.task(failed_dep);
        match dep.error() {
            Some(TaskErrorMsg::Dependency { failed, message, .. }) => TaskErrorMsg::Dependency {
                dependency: dep.key.clone(),
                failed: failed.clone(),
                message: message.clone(),
            },
            Some(TaskErrorMsg::Failed { message }) => TaskErrorMsg::Dependency {
                dependency: dep.key.clone(),
                failed: dep.key.clone(),
                message: message.clone(),
            },
            Some(TaskErrorMsg::Cancelled) => TaskErrorMsg::Cancelled,
            Some(other) => TaskErrorMsg::Dependency {
                dependency: dep.key.clone(),
                failed: dep.key.clone(),
                message: format!("{other:?}"),
            },
            None => TaskErrorMsg::Dependency {
                dependency: dep.key.clone(),
                failed: dep.key.clone(),
                message: "unknown failure".into(),
            },
        }
    }

    /// What a holder of a decided task hears: finished (with its small
    /// result `inline`, within this event's budget) or erred; `None` while
    /// it is undecided.
    /// `copies`: how many clients it goes to.
    pub(super) fn outcome(&mut self, i: Slot, copies: usize, inline: Option<&[u8]>) -> Option<FromScheduler> {
        let inline = self.inline.for_clients(inline, copies);
        let t = self.task(i);
        Some(match t.state {
            TaskState::Memory => FromScheduler::Finished {
                key: t.key.clone(),
                nbytes: t.nbytes,
                holder: self.tasks.who_has(i).first().copied(),
                inline,
            },
            TaskState::Erred => FromScheduler::Erred {
                key: t.key.clone(),
                error: t.error().cloned().unwrap_or(TaskErrorMsg::Cancelled),
            },
            _ => return None,
        })
    }

    /// Tells the task's holders its outcome (with its small result, if the
    /// worker sent one); a fire-and-forget hold ends here (the caller then
    /// releases what nobody else wants).
    fn notify_holders(&mut self, i: Slot, inline: Option<&[u8]>) {
        if !self.task(i).held() {
            return;
        }
        let copies = self.tasks.holders(i).iter().filter(|&&c| c != FOREVER).count();
        let Some(msg) = self.outcome(i, copies, inline) else { return };
        self.tasks.remove_holder(i, FOREVER);
        let mut holders = SmallVec::<[ClientId; 2]>::from_slice(self.tasks.holders(i));
        // The last holder (usually the only one) gets the message itself.
        let Some(last) = holders.pop() else { return };
        for c in holders {
            self.outbox.clients.to(c).push(msg.clone());
        }
        self.outbox.clients.to(last).push(msg);
    }

    /// Changes a task's state, keeping its inputs' count of active readers.
    pub(super) fn set_state(&mut self, i: Slot, state: TaskState) {
        let Some(old) = self.tasks.set_state(i, state) else {
            panic!("scheduler invariant: the task in {i} is referenced but forgotten");
        };
        let before = old.is_active();
        let after = state.is_active();
        if before != after {
            // Counting changes no edge.
            self.for_each_linked(
                i,
                |t| &t.deps,
                |s, d| {
                    let dep = s.task_mut(d);
                    if after {
                        dep.waiters += 1;
                    } else {
                        dep.waiters -= 1;
                    }
                },
            );
        }
        if !self.inline.is_empty() {
            self.drop_unread_results(i, old, before && !after);
        }
    }

    pub(super) fn resource_index(&mut self, name: &str) -> ResourceId {
        if let Some(i) = self.resource_names.iter().position(|n| n == name) {
            return ResourceId(i as u32);
        }
        self.resource_names.push(name.to_string());
        ResourceId((self.resource_names.len() - 1) as u32)
    }

    fn func_number(&mut self, func: &Arc<str>) -> FuncId {
        // Tasks come in runs of one function: the last one first.
        let last = FuncId(self.funcs.len() as u32 - 1);
        if *self.funcs[last.index()] == **func {
            return last;
        }
        if let Some(&n) = self.func_numbers.get(func) {
            return n;
        }
        let n = FuncId(self.funcs.len() as u32);
        self.funcs.push(func.clone());
        self.func_numbers.insert(func.clone(), n);
        n
    }

    fn group_index(&mut self, prefix: &Prefix) -> GroupId {
        if let Some((last, g)) = &self.last_group
            && last == prefix
        {
            return *g;
        }
        let g = match self.groups.get(prefix) {
            Some(&g) => g,
            None => {
                let g = GroupId(self.durations.len() as u32);
                self.groups.insert(prefix.clone(), g);
                self.durations.push((0, 0));
                g
            }
        };
        self.last_group = Some((prefix.clone(), g));
        g
    }
}
