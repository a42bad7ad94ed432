//! Per-task options.

use std::sync::Arc;

/// Options for submitted or delayed tasks.
///
/// ```
/// use shoal_client::TaskOptions;
/// let opts = TaskOptions::new().retries(3).pure(false).name("load").priority(10).resources([("gpu", 1.0)]);
/// assert_eq!(opts.get_retries(), 3);
/// assert_eq!(opts.get_priority(), 10);
/// ```
#[derive(Clone, Debug, Default)]
pub struct TaskOptions {
    pub(crate) pure: Option<bool>,
    pub(crate) retries: u32,
    pub(crate) name: Option<String>,
    pub(crate) workers: Vec<String>,
    pub(crate) priority: i32,
    pub(crate) resources: Vec<(String, f64)>,
    /// The task's key instead of one made from the call (named actors).
    pub(crate) key: Option<shoal_graph::Key>,
    pub(crate) max_restarts: u32,
    pub(crate) max_task_retries: u32,
}

/// Where and in which order a task runs on a cluster: what the scheduler
/// reads of a [`TaskOptions`].
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Placement {
    pub(crate) priority: i32,
    pub(crate) resources: Vec<(String, f64)>,
    pub(crate) workers: Vec<String>,
}

impl TaskOptions {
    /// Default options: no retries; pure for `submit`/`map`, impure for `delayed`.
    pub fn new() -> TaskOptions {
        TaskOptions::default()
    }

    /// Whether equal calls share one key (and so one run and one result).
    /// `pure(false)` gives every call a fresh key: use it for functions with
    /// side effects or randomness.
    pub fn pure(mut self, pure: bool) -> TaskOptions {
        self.pure = Some(pure);
        self
    }

    /// How many times to rerun a task whose function fails or panics.
    pub fn retries(mut self, retries: u32) -> TaskOptions {
        self.retries = retries;
        self
    }

    /// For an actor: how many times it is made again, with fresh state,
    /// when its worker dies (Ray's `max_restarts`; default 0: its calls then
    /// fail with `Error::ActorLost`). Calls waiting when it died fail
    /// unless [`max_task_retries`](Self::max_task_retries) allows them
    /// again.
    pub fn max_restarts(mut self, restarts: u32) -> TaskOptions {
        self.max_restarts = restarts;
        self
    }

    /// For an actor that restarts: how many times a call that was waiting
    /// when its worker died is sent again to the new actor (Ray's
    /// `max_task_retries`; for methods that may run twice).
    pub fn max_task_retries(mut self, retries: u32) -> TaskOptions {
        self.max_task_retries = retries;
        self
    }

    /// The key prefix instead of the function's name.
    pub fn name(mut self, name: impl Into<String>) -> TaskOptions {
        self.name = Some(name.into());
        self
    }

    /// Workers (by name or data address) the task may run on; on the
    /// in-process executors, where there is one worker, it has no effect.
    ///
    /// A task restricted to workers none of which is connected waits for one
    /// to join; its future says why meanwhile ([`Future::pending_reason`](crate::Future::pending_reason)).
    pub fn workers<S: Into<String>>(mut self, workers: impl IntoIterator<Item = S>) -> TaskOptions {
        self.workers = workers.into_iter().map(Into::into).collect();
        self
    }

    /// What the task needs of a worker, by name and amount: `[("gpu", 1.0)]`,
    /// `[("mem", 4e9)]`. On a cluster it runs only on a worker that declared
    /// at least that much (`LocalCluster::builder().resources(..)`,
    /// `shoal worker --resources gpu=2`), and holds the amounts while it
    /// runs, so a worker with `gpu=2` runs two such tasks at a time. A
    /// task needing more than any connected worker has waits, and its
    /// future says why ([`Future::pending_reason`](crate::Future::pending_reason)).
    ///
    /// On the in-process executors resources have no effect. On a cluster,
    /// an empty name or an amount that is not a positive finite number fails
    /// the task at submit with [`Error::Rejected`](crate::Error::Rejected).
    ///
    /// ```
    /// use shoal_client::TaskOptions;
    /// let on_a_gpu = TaskOptions::new().resources([("gpu", 1.0), ("mem", 2e9)]);
    /// # let _ = on_a_gpu;
    /// ```
    pub fn resources<S: Into<String>>(mut self, resources: impl IntoIterator<Item = (S, f64)>) -> TaskOptions {
        self.resources = resources.into_iter().map(|(n, a)| (n.into(), a)).collect();
        self
    }

    /// Higher runs first among tasks ready at the same time (default 0;
    /// negative is allowed). On a cluster the scheduler hands out its queue
    /// in priority order; on the in-process executors tasks run in
    /// submission order and priority has no effect.
    ///
    /// ```
    /// #[shoal::remote]
    /// fn inc(x: u64) -> u64 { x + 1 }
    ///
    /// let cluster = shoal::LocalCluster::builder().workers(1).threads_per_worker(1).build()?;
    /// let client = cluster.client()?;
    /// let background = client.map(inc, 0..1000u64);
    /// let urgent = client.submit_with(&shoal::TaskOptions::new().priority(100), inc, (5000u64,));
    /// assert_eq!(urgent.result()?, 5001); // ahead of the background tasks still queued
    /// assert_eq!(client.gather(&background)?.len(), 1000);
    /// # Ok::<(), shoal::Error>(())
    /// ```
    pub fn priority(mut self, priority: i32) -> TaskOptions {
        self.priority = priority;
        self
    }

    /// The number of retries.
    pub fn get_retries(&self) -> u32 {
        self.retries
    }

    /// The priority.
    pub fn get_priority(&self) -> i32 {
        self.priority
    }

    /// The scheduler's part of these options, if any differs from the default.
    /// Adds to one resource the call holds (summing a name given twice).
    pub(crate) fn add_resource(mut self, name: String, amount: f64) -> TaskOptions {
        match self.resources.iter_mut().find(|(n, _)| *n == name) {
            Some((_, a)) => *a += amount,
            None => self.resources.push((name, amount)),
        }
        self
    }

    pub(crate) fn placement(&self) -> Option<Arc<Placement>> {
        let p = Placement { priority: self.priority, resources: self.resources.clone(), workers: self.workers.clone() };
        (p != Placement::default()).then(|| Arc::new(p))
    }
}
