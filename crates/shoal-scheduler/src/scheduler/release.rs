//! Releasing and forgetting: a result nobody wants is freed on its
//! workers, a task nobody wants is not computed, and a task nothing can
//! need any more (no holder, no dependent) is forgotten with the inputs
//! that were only kept for it.

use shoal_graph::Key;
use shoal_proto::ClientId;
use smallvec::SmallVec;

use super::Scheduler;
use crate::ids::Slot;
use crate::task::TaskState;

impl Scheduler {
    /// A client lets go of its holds on these keys; what nobody wants any
    /// more is released, and forgotten once nothing can need it.
    pub(super) fn release(&mut self, client: ClientId, keys: &[Key]) {
        // As in `submit`: the index entries a few keys ahead are
        // on their way while this one is released.
        const AHEAD: usize = 8;
        keys.iter().take(AHEAD).for_each(|k| self.tasks.prefetch_key(k));
        keys.iter().take(AHEAD / 2).for_each(|k| self.tasks.prefetch_record_of(k));
        let mut released = Vec::with_capacity(keys.len());
        for (n, key) in keys.iter().enumerate() {
            if let Some(ahead) = keys.get(n + AHEAD) {
                self.tasks.prefetch_key(ahead);
            }
            if let Some(ahead) = keys.get(n + AHEAD / 2) {
                self.tasks.prefetch_record_of(ahead);
            }
            if let Some(i) = self.tasks.find(key) {
                self.tasks.remove_holder(i, client);
                released.push(i);
            }
        }
        // Newest slots first: later tasks depend on earlier ones, so
        // each cascade of forgetting finds the dependents above it
        // gone already, and the records are walked from the top
        // down (a fifth faster on a million-task release than in
        // the order the client named them).
        released.sort_unstable_by(|a, b| b.cmp(a));
        // Forgetting a task reads its inputs' records: ask for a
        // task's record a few tasks ahead, then for its inputs'.
        for (n, &i) in released.iter().enumerate() {
            if let Some(&ahead) = released.get(n + AHEAD) {
                self.tasks.prefetch(ahead);
            }
            if let Some(&ahead) = released.get(n + AHEAD / 2) {
                self.tasks.prefetch_deps(ahead);
            }
            self.consider_release(i);
        }
    }

    /// Drops every hold of a client that went away, releasing what only
    /// it wanted.
    pub(super) fn release_all_of(&mut self, client: ClientId) {
        let tasks = &self.tasks;
        let held: Vec<Slot> =
            tasks.iter().filter(|&(i, _)| tasks.holders(i).contains(&client)).map(|(i, _)| i).collect();
        for i in held {
            self.tasks.retain_holders(i, |c| *c != client);
            self.consider_release(i);
        }
    }

    /// Frees a result nobody wants any more (its spec stays while dependents
    /// might need it recomputed).
    pub(super) fn consider_release(&mut self, i: Slot) {
        if self.tasks.get(i).is_none() {
            return;
        }
        let t = self.task(i);
        if t.wanted() {
            return;
        }
        match t.state {
            TaskState::Memory => {
                for w in self.tasks.take_who_has(i) {
                    let key = self.task(i).key.clone();
                    self.outbox.release.to(w).push(key);
                }
                self.set_state(i, TaskState::Released);
                self.consider_forget(i);
            }
            TaskState::Released | TaskState::Erred => self.consider_forget(i),
            TaskState::Waiting | TaskState::Queued | TaskState::Processing(_) => self.cancel_unwanted(i),
        }
    }

    /// Stops computing a task nobody wants any more (its last holder let
    /// go and no active task needs it), and then what only it needed, as
    /// Dask does when the last future of a pending task is dropped: work
    /// nobody will read is not done, and nothing it kept stays behind.
    fn cancel_unwanted(&mut self, start: Slot) {
        let mut work: SmallVec<[Slot; 8]> = smallvec::smallvec![start];
        while let Some(i) = work.pop() {
            let Some(t) = self.tasks.get(i) else { continue };
            if t.wanted() || !t.state.is_active() {
                continue;
            }
            if let TaskState::Processing(w) = t.state {
                self.withdraw(i, w);
            }
            self.set_state(i, TaskState::Released);
            let deps = SmallVec::<[Slot; 4]>::from_slice(&self.task(i).deps);
            self.consider_forget(i);
            for d in deps {
                match self.tasks.get(d).map(|t| t.state) {
                    Some(state) if state.is_active() => work.push(d),
                    Some(_) => self.consider_release(d),
                    None => {}
                }
            }
        }
    }

    /// Forgets a task nothing refers to any more, and then its dependencies
    /// that were only kept for it.
    pub(super) fn consider_forget(&mut self, start: Slot) {
        let mut stack: SmallVec<[Slot; 8]> = smallvec::smallvec![start];
        while let Some(i) = stack.pop() {
            let Some(t) = self.tasks.get(i) else { continue };
            let forgettable =
                matches!(t.state, TaskState::Released | TaskState::Erred) && !t.held() && t.dependents.is_empty();
            if !forgettable {
                continue;
            }
            // Their records are read next, after this one's is dropped
            // (which frees its arguments): let the misses overlap.
            for &d in t.deps.iter() {
                self.tasks.prefetch(d);
            }
            let Some(deps) = self.tasks.remove(i) else { continue };
            for d in deps {
                let dep = self.task_mut(d);
                dep.dependents.retain(|x| *x != i);
                // Only a task nothing depends on can go.
                if dep.dependents.is_empty() {
                    if !dep.wanted() {
                        // It goes next, reading its own inputs' records.
                        self.tasks.prefetch_deps(d);
                    }
                    stack.push(d);
                }
                let dep = self.task(d);
                if dep.state == TaskState::Memory && !dep.wanted() {
                    self.consider_release(d);
                }
            }
        }
    }
}
