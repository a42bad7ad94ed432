//! Futures: handles to submitted tasks and their results.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use shoal_graph::{Arg, Key, Value};
use shoal_local::{Handle, Notify, Phase};

use crate::actor::CallSlot;
use crate::args::{ArgContext, IntoArg};
use crate::cluster::ClusterHandle;
use crate::error::Error;
use crate::status::Status;

/// A future's task, on this process's executor or on a cluster.
pub(crate) enum FutureHandle {
    Local(Handle),
    Cluster(ClusterHandle),
    /// A call of an actor method.
    Call(Arc<CallSlot>),
}

impl FutureHandle {
    pub(crate) fn key(&self) -> &Key {
        match self {
            FutureHandle::Local(h) => h.key(),
            FutureHandle::Cluster(h) => h.key(),
            FutureHandle::Call(c) => c.key(),
        }
    }

    pub(crate) fn status(&self) -> Status {
        match self {
            FutureHandle::Local(h) => match h.phase() {
                Phase::Pending | Phase::Running => Status::Pending,
                Phase::Memory => Status::Finished,
                Phase::Erred => Status::Error,
                Phase::Cancelled => Status::Cancelled,
            },
            FutureHandle::Cluster(h) => h.status(),
            FutureHandle::Call(c) => c.status(),
        }
    }

    pub(crate) fn cancel(&self) {
        match self {
            FutureHandle::Local(h) => h.cancel(),
            FutureHandle::Cluster(h) => h.cancel(),
            // A call sent runs; its result can only be ignored.
            FutureHandle::Call(_) => {}
        }
    }

    pub(crate) fn wait(&self) {
        match self {
            FutureHandle::Local(h) => {
                let _ = h.wait();
            }
            FutureHandle::Cluster(h) => h.wait(),
            FutureHandle::Call(c) => {
                let _ = c.value(None);
            }
        }
    }

    /// The result value, waiting at most `timeout`; `None` on timeout.
    pub(crate) fn value(&self, timeout: Option<Duration>) -> Option<Result<Value, Error>> {
        match self {
            FutureHandle::Local(h) => {
                let outcome = match timeout {
                    None => Some(h.wait()),
                    Some(t) => h.wait_timeout(t),
                };
                outcome.map(|o| o.map_err(|f| Error::from_failure(&f)))
            }
            FutureHandle::Cluster(h) => h.value(timeout),
            FutureHandle::Call(c) => c.value(timeout),
        }
    }

    pub(crate) fn subscribe(&self, notify: Arc<dyn Notify>, index: usize) {
        match self {
            FutureHandle::Local(h) => h.subscribe(notify, index),
            FutureHandle::Cluster(h) => h.subscribe(notify, index),
            FutureHandle::Call(c) => c.subscribe(notify, index),
        }
    }

    pub(crate) fn is_sync(&self) -> bool {
        matches!(self, FutureHandle::Local(h) if h.is_sync())
    }
}

impl Clone for FutureHandle {
    fn clone(&self) -> FutureHandle {
        match self {
            FutureHandle::Local(h) => FutureHandle::Local(h.clone()),
            FutureHandle::Cluster(h) => FutureHandle::Cluster(h.clone()),
            FutureHandle::Call(c) => FutureHandle::Call(c.clone()),
        }
    }
}

/// A task that was submitted, and eventually its result of type `T`.
///
/// Futures can be passed as arguments to later submits: the task then depends
/// on this one, without waiting here. The result is kept while any clone of the
/// future exists (or a task still needs it) and freed after.
pub struct Future<T> {
    pub(crate) handle: FutureHandle,
    _result: PhantomData<fn() -> T>,
}

impl<T> Future<T> {
    pub(crate) fn from_handle(handle: Handle) -> Future<T> {
        Future { handle: FutureHandle::Local(handle), _result: PhantomData }
    }

    pub(crate) fn from_future_handle(handle: FutureHandle) -> Future<T> {
        Future { handle, _result: PhantomData }
    }

    pub(crate) fn from_cluster(handle: ClusterHandle) -> Future<T> {
        Future { handle: FutureHandle::Cluster(handle), _result: PhantomData }
    }

    /// The task's key.
    pub fn key(&self) -> &Key {
        self.handle.key()
    }

    /// The task's status now.
    pub fn status(&self) -> Status {
        self.handle.status()
    }

    /// Whether the task is done (finished, failed or cancelled).
    pub fn done(&self) -> bool {
        self.status() != Status::Pending
    }

    /// Cancels the task if it is not done; tasks that need it are cancelled too.
    pub fn cancel(&self) {
        self.handle.cancel();
    }

    /// Waits until the task is done, whatever its outcome.
    pub fn wait(&self) {
        self.handle.wait();
    }

    /// Why the task cannot run yet, when its scheduler has said: on a
    /// cluster, a task (or one it waits for) that needs resources or workers
    /// no connected worker offers stays pending, and this names what is
    /// missing and which workers are there. `None` while it is simply
    /// waiting its turn, once it is done, and on the in-process executors.
    ///
    /// ```
    /// use shoal_client::{Client, TaskOptions};
    /// fn inc(x: u64) -> u64 { x + 1 }
    /// let client = Client::threads()?;
    /// // Resources only matter on a cluster (see the `shoal` crate's examples).
    /// let f = client.submit_with(&TaskOptions::new().resources([("gpu", 1.0)]), inc, (1u64,));
    /// assert_eq!(f.result()?, 2);
    /// assert_eq!(f.pending_reason(), None);
    /// # Ok::<(), shoal_client::Error>(())
    /// ```
    pub fn pending_reason(&self) -> Option<String> {
        match &self.handle {
            FutureHandle::Local(_) | FutureHandle::Call(_) => None,
            FutureHandle::Cluster(h) => h.state().pending_reason(h.key()),
        }
    }

    pub(crate) fn handle(&self) -> &FutureHandle {
        &self.handle
    }

    /// Ray's spelling: `counter.increment().remote()`. The call was sent
    /// when it was made; this returns its reference, the future itself.
    pub fn remote(self) -> Future<T> {
        self
    }
}

impl<T: Clone + Send + Sync + 'static> Future<T> {
    /// Waits for the result and returns a copy of it.
    ///
    /// # Errors
    /// The task's failure, a failure of a task it needs, or its cancellation.
    pub fn result(&self) -> Result<T, Error> {
        match self.handle.value(None) {
            Some(v) => outcome_value(v),
            None => unreachable!("waiting without a timeout always ends with an outcome"),
        }
    }

    /// Waits at most `timeout` for the result.
    ///
    /// # Errors
    /// [`Error::Timeout`] when it is not done by then, else as [`Future::result`].
    pub fn result_timeout(&self, timeout: Duration) -> Result<T, Error> {
        match self.handle.value(Some(timeout)) {
            Some(o) => outcome_value(o),
            None => Err(Error::Timeout { key: self.key().to_string(), after: timeout }),
        }
    }

    /// Waits for the result and returns it shared, without copying.
    ///
    /// # Errors
    /// As [`Future::result`].
    pub fn result_shared(&self) -> Result<Arc<T>, Error> {
        let value = match self.handle.value(None) {
            Some(v) => v?,
            None => unreachable!("waiting without a timeout always ends with an outcome"),
        };
        match value.downcast::<T>() {
            Ok(arc) => Ok(arc),
            Err(_) => unreachable!("a Future<T> is only made for a task whose function returns T"),
        }
    }
}

pub(crate) fn outcome_value<T: Clone + Send + Sync + 'static>(outcome: Result<Value, Error>) -> Result<T, Error> {
    let value = outcome?;
    match value.downcast::<T>() {
        Ok(arc) => Ok(Arc::try_unwrap(arc).unwrap_or_else(|shared| (*shared).clone())),
        Err(_) => unreachable!("a Future<T> is only made for a task whose function returns T"),
    }
}

impl<T> Clone for Future<T> {
    fn clone(&self) -> Future<T> {
        Future { handle: self.handle.clone(), _result: PhantomData }
    }
}

impl<T> fmt::Display for Future<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "<Future: {} status: {}, type: {}, key: {}>",
            self.key().prefix(),
            self.status(),
            std::any::type_name::<T>(),
            self.key()
        )
    }
}

impl<T> fmt::Debug for Future<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// An actor call's future as an argument: its result, once there (the
/// executor knows no task by its key).
fn call_arg(call: &CallSlot, cx: &mut ArgContext) -> Arg {
    // Not content-addressed: the value has no token of its own here.
    cx.token = None;
    cx.local.push(None);
    match call.value(None) {
        Some(Ok(value)) => Arg::Value(value),
        Some(Err(e)) => {
            // A task of its own that fails with the call's error: its
            // dependent fails naming it.
            let message = e.to_string();
            let key = call.key().clone();
            let func = shoal_graph::Func::new(
                "shoal::actor_call",
                None,
                Box::new(move |_| Err(shoal_graph::TaskError::Failed(message.clone()))),
            );
            cx.local.pop();
            cx.local.push(Some(cx.pre_tasks.len() as u32));
            cx.pre_tasks.push(shoal_graph::Task { key: key.clone(), func, args: Vec::new() });
            Arg::Key(key)
        }
        None => unreachable!("waiting without a timeout always ends with an outcome"),
    }
}

impl<T: 'static> IntoArg<T> for &Future<T> {
    fn into_arg(self, cx: &mut ArgContext) -> Arg {
        if let FutureHandle::Call(call) = &self.handle {
            return call_arg(call, cx);
        }
        if let Some(t) = &mut cx.token {
            t.add_key(self.key());
        }
        if cx.keep {
            cx.keep_alive.push(Arc::new(self.clone()));
        }
        cx.local.push(None);
        Arg::Key(self.key().clone())
    }
}

impl<T: 'static> IntoArg<T> for Future<T> {
    fn into_arg(self, cx: &mut ArgContext) -> Arg {
        if let FutureHandle::Call(call) = &self.handle {
            return call_arg(call, cx);
        }
        if let Some(t) = &mut cx.token {
            t.add_key(self.key());
        }
        let key = self.key().clone();
        // Held until the call is submitted (or, lazily, as long as the
        // call): dropping it here would let the executor forget a finished
        // result before the task that reads it arrives.
        cx.keep_alive.push(Arc::new(self));
        cx.local.push(None);
        Arg::Key(key)
    }
}
