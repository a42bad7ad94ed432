//! The executor of a real worker: the shoal-local thread pool, with the
//! memory gate in front of every task of a worker that has a limit.

use std::sync::Arc;

use shoal_graph::{Arg, Func, Key, Task};
use shoal_local::{FailureKind, Handle, Notify, Phase, Runtime, Submission};

use crate::comm::{Runnable, TaskOutcome};
use crate::memory::MemoryGate;

/// Tells the shell that a task ended.
struct Done {
    key: Key,
    done: Arc<dyn Fn(Key) + Send + Sync>,
}

impl Notify for Done {
    fn done(&self, _index: usize) {
        (self.done)(self.key.clone());
    }
}

/// A worker's thread pool.
pub struct Pool {
    runtime: Runtime,
    gate: Arc<MemoryGate>,
    done: Arc<dyn Fn(Key) + Send + Sync>,
}

impl Pool {
    /// A pool of `threads` threads; `done` is called (on the thread that
    /// ran it, quickly) with the key of each task that ends.
    ///
    /// # Errors
    /// When the threads cannot start.
    pub fn new(
        threads: usize,
        gate: Arc<MemoryGate>,
        done: impl Fn(Key) + Send + Sync + 'static,
    ) -> std::io::Result<Pool> {
        Ok(Pool { runtime: Runtime::threads(threads)?, gate, done: Arc::new(done) })
    }

    /// Queues a task; `None` if the pool has shut down.
    pub fn execute(&self, task: Runnable) -> Option<Handle> {
        let Runnable { key, func: remote, values } = task;
        let func = if self.gate.is_limited() {
            // Checked when a thread takes the task, not only when it
            // arrives; its result counts as soon as it exists.
            let (gate, inner, made) = (self.gate.clone(), remote.func().clone(), key.clone());
            let (name, identity) = (inner.name().to_string(), inner.identity());
            Func::new(
                &name,
                identity,
                Box::new(move |args| {
                    gate.pass();
                    let value = inner.call(args)?;
                    gate.made(&made, remote.result_size(&value).unwrap_or(0));
                    Ok(value)
                }),
            )
        } else {
            remote.func().clone()
        };
        let task = Task { key: key.clone(), func, args: values.into_iter().map(Arg::Value).collect() };
        let handle = self.runtime.submit_one(Submission::new(task).held())?;
        handle.subscribe(Arc::new(Done { key, done: self.done.clone() }), 0);
        Some(handle)
    }

    /// Cancels a task: it does not start, or its result is dropped.
    pub fn cancel(&self, handle: &Handle) {
        handle.cancel();
    }

    /// Whether no thread has taken the task yet.
    pub fn not_started(&self, handle: &Handle) -> bool {
        handle.phase() == Phase::Pending
    }

    /// The task's outcome, once it ended: the function's own error message
    /// for a failure.
    pub fn outcome(&self, handle: &Handle) -> Option<TaskOutcome> {
        Some(handle.try_outcome()?.map_err(|failure| match &failure.root().kind {
            FailureKind::Task(e) => e.to_string(),
            _ => failure.to_string(),
        }))
    }
}
