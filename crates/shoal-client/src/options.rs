//! Per-task options.

/// Options for submitted or delayed tasks.
///
/// ```
/// use shoal_client::TaskOptions;
/// let opts = TaskOptions::new().retries(3).pure(false).name("load");
/// assert_eq!(opts.get_retries(), 3);
/// ```
#[derive(Clone, Debug, Default)]
pub struct TaskOptions {
    pub(crate) pure: Option<bool>,
    pub(crate) retries: u32,
    pub(crate) name: Option<String>,
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

    /// The key prefix instead of the function's name.
    pub fn name(mut self, name: impl Into<String>) -> TaskOptions {
        self.name = Some(name.into());
        self
    }

    /// Workers (by name or data address) the task may run on; on the
    /// in-process executors, where there is one worker, it has no effect.
    pub fn workers<S: Into<String>>(mut self, workers: impl IntoIterator<Item = S>) -> TaskOptions {
        self.workers = workers.into_iter().map(Into::into).collect();
        self
    }

    /// The number of retries.
    pub fn get_retries(&self) -> u32 {
        self.retries
    }
}
