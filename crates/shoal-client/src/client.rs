//! The Client: one API over shoal's executors.

use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use shoal_graph::{Key, Prefix, Task, TaskFn, Token, call_tokenizer};

use crate::args::{ArgContext, IntoArgs, MapInput};
use shoal_local::{Notify, Runtime, Submission};

use crate::cluster::ClusterState;
use crate::error::Error;
use crate::future::Future;
use crate::options::TaskOptions;
pub use shoal_proto::WorkerInfo;

/// Which executor a [`Client`] runs tasks on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Executor {
    /// One thread, deterministic: tasks run on the thread that waits for a
    /// result. For debugging and tests.
    Sync,
    /// A work-stealing pool of this many threads in this process.
    Threads(usize),
    /// A cluster, through the scheduler at this address.
    Cluster(std::net::SocketAddr),
}

/// Where a client's tasks run.
pub(crate) enum Backend {
    /// On an executor in this process.
    Local(Runtime),
    /// On a cluster, through its scheduler.
    Cluster(Arc<ClusterState>),
}

pub(crate) struct ClientInner {
    pub(crate) backend: Backend,
    executor: Executor,
}

/// The entry point: submits work and gets results.
///
/// Cloning is cheap and shares the executor, which stops when the last clone
/// is dropped.
///
/// ```
/// use shoal_client::Client;
/// fn double(x: i64) -> i64 { x * 2 }
/// let client = Client::threads().unwrap();
/// let future = client.submit(double, (10,));
/// assert_eq!(future.result().unwrap(), 20);
/// let futures = client.map(double, 0..4i64);
/// assert_eq!(client.gather(&futures).unwrap(), vec![0, 2, 4, 6]);
/// ```
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<ClientInner>,
}

impl std::fmt::Debug for Client {
    /// `Client { executor: Threads(2) }`: where its tasks run.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("executor", &self.inner.executor).finish()
    }
}

static CURRENT: Mutex<Option<Weak<ClientInner>>> = Mutex::new(None);
static FALLBACK: std::sync::OnceLock<Client> = std::sync::OnceLock::new();

/// Builds a [`Client`].
#[derive(Clone, Debug)]
pub struct ClientBuilder {
    executor: Executor,
}

impl ClientBuilder {
    /// The executor to run on.
    pub fn executor(mut self, executor: Executor) -> ClientBuilder {
        self.executor = executor;
        self
    }

    /// Threads in the pool (the `Threads` executor).
    pub fn threads(mut self, n: usize) -> ClientBuilder {
        self.executor = Executor::Threads(n);
        self
    }

    /// Starts the executor. The new client becomes the current one, used by
    /// `Delayed::compute`.
    ///
    /// # Errors
    /// [`Error::Start`] when threads cannot be started.
    pub fn build(self) -> Result<Client, Error> {
        let runtime = match self.executor {
            Executor::Sync => Runtime::sync(),
            Executor::Threads(n) => Runtime::threads(n).map_err(|e| Error::Start(e.to_string()))?,
            Executor::Cluster(address) => return Client::connect(&address.to_string()),
        };
        let inner = Arc::new(ClientInner { backend: Backend::Local(runtime), executor: self.executor });
        *CURRENT.lock() = Some(Arc::downgrade(&inner));
        Ok(Client { inner })
    }
}

fn default_threads() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

impl Client {
    /// A builder; the default executor is a thread pool with one thread per core.
    pub fn builder() -> ClientBuilder {
        ClientBuilder { executor: Executor::Threads(default_threads()) }
    }

    /// A client on a thread pool with one thread per core.
    ///
    /// # Errors
    /// [`Error::Start`] when threads cannot be started.
    pub fn threads() -> Result<Client, Error> {
        Client::builder().build()
    }

    /// A client on the deterministic single-threaded executor.
    pub fn sync() -> Client {
        let inner = Arc::new(ClientInner { backend: Backend::Local(Runtime::sync()), executor: Executor::Sync });
        *CURRENT.lock() = Some(Arc::downgrade(&inner));
        Client { inner }
    }

    /// The most recently built client that is still alive, else a shared
    /// thread-pool client started on first use (as Dask's default scheduler).
    ///
    /// # Panics
    /// If no client is alive and the fallback pool's threads cannot be started.
    pub fn current() -> Client {
        if let Some(inner) = CURRENT.lock().as_ref().and_then(Weak::upgrade) {
            return Client { inner };
        }
        FALLBACK
            .get_or_init(|| {
                let runtime = Runtime::threads(default_threads())
                    .unwrap_or_else(|e| panic!("cannot start shoal's default thread pool: {e}"));
                let backend = Backend::Local(runtime);
                Client { inner: Arc::new(ClientInner { backend, executor: Executor::Threads(default_threads()) }) }
            })
            .clone()
    }

    /// A client of the cluster whose scheduler listens at `address`
    /// (`"127.0.0.1:8786"`, `"tcp://host:8786"`). Tasks must use functions
    /// marked `#[shoal::remote]`.
    ///
    /// # Errors
    /// [`Error::Start`] when the address is invalid or the scheduler cannot
    /// be reached or refuses the client.
    pub fn connect(address: &str) -> Result<Client, Error> {
        Client::connect_with_token(address, None)
    }

    /// [`Client::connect`] with a cluster token.
    ///
    /// # Errors
    /// As [`Client::connect`].
    pub fn connect_with_token(address: &str, token: Option<&str>) -> Result<Client, Error> {
        let peer: shoal_proto::PeerAddress =
            address.parse().map_err(|e| Error::Start(format!("{e}: give the scheduler's address")))?;
        let socket = shoal_net::resolve(&peer).map_err(|e| Error::Start(e.to_string()))?;
        let state = ClusterState::connect(socket, token)?;
        let inner = Arc::new(ClientInner { backend: Backend::Cluster(state), executor: Executor::Cluster(socket) });
        *CURRENT.lock() = Some(Arc::downgrade(&inner));
        Ok(Client { inner })
    }

    /// The executor this client runs on.
    pub fn executor(&self) -> Executor {
        self.inner.executor
    }

    /// Whether this client can still reach its scheduler: false once the
    /// connection has closed for good (its pending futures have failed by
    /// then). Always true on this process's executors.
    pub fn is_connected(&self) -> bool {
        match &self.inner.backend {
            Backend::Local(_) => true,
            Backend::Cluster(state) => state.is_connected(),
        }
    }

    /// Runs `f` on `args` as a task and returns its future at once.
    ///
    /// `args` is a tuple: `(10,)` for one argument. Each argument is a value or
    /// a future (or `&Future`) of the right type; futures make this task depend
    /// on theirs. The call is pure by default: the same function with equal
    /// arguments gets the same key, and runs once while its result is held.
    ///
    /// # Performance
    /// About half a microsecond per call; use [`Client::map`] for many calls.
    pub fn submit<P, F, A>(&self, f: F, args: A) -> Future<F::Output>
    where
        F: TaskFn<P>,
        A: IntoArgs<P>,
    {
        self.submit_with(&TaskOptions::default(), f, args)
    }

    /// [`Client::submit`] with options: retries, purity, name, and on a
    /// cluster priority, resources and worker restrictions.
    pub fn submit_with<P, F, A>(&self, opts: &TaskOptions, f: F, args: A) -> Future<F::Output>
    where
        F: TaskFn<P>,
        A: IntoArgs<P>,
    {
        let (task, cx) = build_call(f, args, opts, Lazy::No);
        let runtime = match &self.inner.backend {
            Backend::Local(runtime) => runtime,
            Backend::Cluster(state) => {
                let batch = with_lists(cx.pre_tasks, cx.local, 0, task, opts.retries);
                let placement = opts.placement();
                return state
                    .submit(batch.map(|s| outgoing(s, &placement)))
                    .pop()
                    .map_or_else(|| unreachable!("a held submission returns its handle"), Future::from_cluster);
            }
        };
        let handle = if cx.pre_tasks.is_empty() {
            runtime.submit_one(Submission::new(task).held().retries(opts.retries))
        } else {
            runtime.submit(with_lists(cx.pre_tasks, cx.local, 0, task, opts.retries)).pop()
        };
        match handle {
            Some(handle) => Future::from_handle(handle),
            None => unreachable!("a held submission returns its handle"),
        }
    }

    /// Runs `f` on each input, one task per input; returns the futures in
    /// input order. An input is the arguments of one call: a value (or a
    /// future) for a function of one parameter, a tuple for a function of
    /// several — zip several iterables for Dask's `map(f, xs, ys)` (see
    /// [`MapInput`](crate::MapInput)).
    ///
    /// ```
    /// fn scale(x: f64, by: f64) -> f64 { x * by }
    ///
    /// let client = shoal_client::Client::threads()?;
    /// let scaled = client.map(scale, [1.0, 2.0].into_iter().zip([10.0, 100.0]));
    /// assert_eq!(client.gather(&scaled)?, vec![10.0, 200.0]);
    /// # Ok::<(), shoal_client::Error>(())
    /// ```
    ///
    /// # Performance
    /// All tasks go to the executor as one batch; on two cores a million
    /// no-op tasks are submitted, run and gathered in under a second.
    pub fn map<P, F, I>(&self, f: F, inputs: I) -> Vec<Future<F::Output>>
    where
        F: TaskFn<P>,
        I: IntoIterator,
        I::Item: MapInput<P>,
    {
        self.map_with(&TaskOptions::default(), f, inputs)
    }

    /// [`Client::map`] with options.
    pub fn map_with<P, F, I>(&self, opts: &TaskOptions, f: F, inputs: I) -> Vec<Future<F::Output>>
    where
        F: TaskFn<P>,
        I: IntoIterator,
        I::Item: MapInput<P>,
    {
        let func = f.into_func();
        let pure = opts.pure.unwrap_or(true);
        let prefix = prefix_for(&func, opts);
        let retries = opts.retries;
        let mut position = 0u32;
        // Futures given by value stay alive until their tasks are submitted.
        let held = std::cell::RefCell::new(Vec::new());
        let held_ref = &held;
        let tasks = inputs.into_iter().flat_map(move |input| {
            let mut cx = ArgContext::new(call_tokenizer(&func, pure));
            let args = input.into_call_args(&mut cx);
            held_ref.borrow_mut().append(&mut cx.keep_alive);
            let token = cx.token.as_ref().map_or_else(Token::fresh, |t| t.finish());
            let task = Task { key: Key::scalar(prefix.clone(), token), func: func.clone(), args };
            let base = position;
            position += cx.pre_tasks.len() as u32 + 1;
            with_lists(cx.pre_tasks, cx.local, base, task, retries)
        });
        match &self.inner.backend {
            Backend::Local(runtime) => runtime.submit(tasks).into_iter().map(Future::from_handle).collect(),
            Backend::Cluster(state) => {
                let placement = opts.placement();
                state.submit(tasks.map(|s| outgoing(s, &placement))).into_iter().map(Future::from_cluster).collect()
            }
        }
    }

    /// Waits for all futures and returns their results in order.
    ///
    /// # Errors
    /// The first failure among them, in order.
    pub fn gather<T: Clone + Send + Sync + 'static>(&self, futures: &[Future<T>]) -> Result<Vec<T>, Error> {
        gather(futures)
    }

    /// The future of a key this client holds, if any.
    ///
    /// The caller states the result type; it must be the type the key's
    /// function returns, or [`Future::result`] panics.
    pub fn future_of<T>(&self, key: &Key) -> Option<Future<T>> {
        match &self.inner.backend {
            Backend::Local(runtime) => runtime.handle(key).map(Future::from_handle),
            Backend::Cluster(_) => None,
        }
    }

    /// The workers that run this client's tasks: the cluster's, or this
    /// process's pool as one worker.
    ///
    /// # Errors
    /// When the scheduler connection is gone.
    pub fn scheduler_info(&self) -> Result<Vec<WorkerInfo>, Error> {
        match &self.inner.backend {
            Backend::Cluster(state) => state.info(),
            Backend::Local(runtime) => Ok(vec![WorkerInfo {
                id: shoal_proto::WorkerId(0),
                name: "local".into(),
                data_address: String::new(),
                threads: runtime.stats().threads.max(1) as u32,
                memory_limit: 0,
                memory: 0,
                resources: vec![],
            }]),
        }
    }

    /// The names of the workers that hold each future's result (Dask's
    /// `who_has`); on the in-process executors, `"local"` for every finished
    /// result.
    ///
    /// # Errors
    /// When the scheduler connection is gone.
    pub fn who_has<T>(&self, futures: &[Future<T>]) -> Result<Vec<Vec<String>>, Error> {
        match &self.inner.backend {
            Backend::Cluster(state) => {
                let keys: Vec<Key> = futures.iter().map(|f| f.key().clone()).collect();
                let holders = state.ask_who_has(&keys)?;
                Ok(holders.into_iter().map(|ws| ws.iter().map(|w| w.name.clone()).collect()).collect())
            }
            Backend::Local(_) => Ok(futures
                .iter()
                .map(|f| if f.status() == crate::Status::Finished { vec!["local".to_string()] } else { Vec::new() })
                .collect()),
        }
    }

    /// How many keys the executor holds now (pending tasks and kept results).
    pub fn known_keys(&self) -> usize {
        match &self.inner.backend {
            Backend::Local(runtime) => runtime.stats().known_keys,
            Backend::Cluster(state) => state.held_keys(),
        }
    }
}

/// A submission as it goes to a cluster.
fn outgoing(s: Submission, placement: &Option<Arc<crate::options::Placement>>) -> crate::cluster::Outgoing {
    crate::cluster::Outgoing { task: s.task, retries: s.retries, held: s.hold, placement: placement.clone() }
}

/// The submissions for one call: the list tasks its arguments need, then the
/// call itself, linked by batch position (`base` is the first list's).
fn with_lists(
    lists: Vec<Task>,
    local: shoal_local::LocalDeps,
    base: u32,
    task: Task,
    retries: u32,
) -> impl Iterator<Item = Submission> {
    let lists = lists.into_iter().map(|t| Submission { consumers_in_batch: 1, ..Submission::new(t) });
    let local_deps = local.into_iter().map(|l| l.map(|i| base + i)).collect();
    lists.chain([Submission { local_deps, ..Submission::new(task).held().retries(retries) }])
}

fn prefix_for(func: &shoal_graph::Func, opts: &TaskOptions) -> Prefix {
    match &opts.name {
        Some(n) => n.as_str().into(),
        None => func.short_name().clone(),
    }
}

/// Whether a call is lazy (`delayed`: impure by default, keeps the tasks it
/// refers to alive) or submitted now (pure by default).
pub(crate) enum Lazy {
    Yes,
    No,
}

/// The task of one call of `f` on `args`, and what building its arguments
/// collected.
pub(crate) fn build_call<P, F: TaskFn<P>, A: IntoArgs<P>>(
    f: F,
    args: A,
    opts: &TaskOptions,
    lazy: Lazy,
) -> (Task, ArgContext) {
    let func = f.into_func();
    let mut cx = match lazy {
        Lazy::Yes => ArgContext::keeping(call_tokenizer(&func, opts.pure.unwrap_or(false))),
        Lazy::No => ArgContext::new(call_tokenizer(&func, opts.pure.unwrap_or(true))),
    };
    let args = args.into_args(&mut cx);
    let key = match &opts.key {
        Some(key) => key.clone(),
        None => Key::scalar(prefix_for(&func, opts), cx.token.as_ref().map_or_else(Token::fresh, |t| t.finish())),
    };
    (Task { key, func, args }, cx)
}

/// Waits for all futures and returns their results in order.
///
/// # Errors
/// The first failure among them, in order.
pub fn gather<T: Clone + Send + Sync + 'static>(futures: &[Future<T>]) -> Result<Vec<T>, Error> {
    let remote: Option<Vec<&crate::cluster::ClusterHandle>> = futures
        .iter()
        .map(|f| match f.handle() {
            crate::future::FutureHandle::Cluster(h) => Some(h),
            crate::future::FutureHandle::Local(_) | crate::future::FutureHandle::Call(_) => None,
        })
        .collect();
    match remote {
        // Futures of one cluster: fetched together, one request per worker.
        Some(handles) if !handles.is_empty() && handles.iter().all(|h| h.same_cluster(handles[0])) => {
            handles[0].state().values(&handles).into_iter().map(crate::future::outcome_value).collect()
        }
        _ => futures.iter().map(|f| f.result()).collect(),
    }
}

/// Waits until every future is done (finished, failed or cancelled).
pub fn wait<T>(futures: &[Future<T>]) {
    for f in futures {
        f.wait();
    }
}

/// Keeps the futures' tasks running after the futures are dropped (Dask's
/// `fire_and_forget`), for work done for its side effects. On a cluster,
/// dropping the last future of a task that has not finished cancels it;
/// after this, each task runs to its end and its result is then let go.
/// On the in-process executors a submitted task always runs to its end, so
/// this changes nothing there.
///
/// ```
/// use shoal_client::{Client, fire_and_forget};
/// fn log_line(line: String) -> usize { line.len() }
/// let client = Client::threads()?;
/// fire_and_forget(&[client.submit(log_line, ("written".to_string(),))]);
/// # Ok::<(), shoal_client::Error>(())
/// ```
pub fn fire_and_forget<T>(futures: &[Future<T>]) {
    let remote: Vec<&crate::cluster::ClusterHandle> = futures
        .iter()
        .filter_map(|f| match f.handle() {
            crate::future::FutureHandle::Cluster(h) => Some(h),
            crate::future::FutureHandle::Local(_) | crate::future::FutureHandle::Call(_) => None,
        })
        .collect();
    crate::cluster::ClusterHandle::fire_and_forget(&remote);
}

/// Waits until every future is done or `timeout` has passed.
///
/// # Errors
/// [`Error::Timeout`] naming the first future not done in time.
pub fn wait_timeout<T>(futures: &[Future<T>], timeout: Duration) -> Result<(), Error> {
    let deadline = std::time::Instant::now() + timeout;
    for f in futures {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if f.handle().value(Some(left)).is_none() {
            return Err(Error::Timeout { key: f.key().to_string(), after: timeout });
        }
    }
    Ok(())
}

/// Yields futures in the order they finish.
///
/// ```
/// use shoal_client::{Client, as_completed};
/// fn square(x: u64) -> u64 { x * x }
/// let client = Client::threads().unwrap();
/// let futures = client.map(square, 0..10u64);
/// let mut total = 0;
/// for done in as_completed(futures) {
///     total += done.result().unwrap();
/// }
/// assert_eq!(total, 285);
/// ```
pub struct AsCompleted<T> {
    futures: Vec<Option<Future<T>>>,
    done: Arc<CompletionQueue>,
    remaining: usize,
    sync: bool,
}

struct CompletionQueue {
    order: Mutex<std::collections::VecDeque<usize>>,
    ready: parking_lot::Condvar,
}

impl Notify for CompletionQueue {
    fn done(&self, index: usize) {
        self.order.lock().push_back(index);
        self.ready.notify_one();
    }
}

/// The futures in the order they finish; see [`AsCompleted`].
pub fn as_completed<T>(futures: impl IntoIterator<Item = Future<T>>) -> AsCompleted<T> {
    let futures: Vec<Option<Future<T>>> = futures.into_iter().map(Some).collect();
    let done = Arc::new(CompletionQueue { order: Mutex::new(Default::default()), ready: Default::default() });
    for (i, f) in futures.iter().enumerate() {
        if let Some(f) = f {
            f.handle().subscribe(done.clone(), i);
        }
    }
    let sync = futures.iter().flatten().any(|f| f.handle().is_sync());
    AsCompleted { remaining: futures.len(), futures, done, sync }
}

impl<T> Iterator for AsCompleted<T> {
    type Item = Future<T>;

    fn next(&mut self) -> Option<Future<T>> {
        if self.remaining == 0 {
            return None;
        }
        let mut order = self.done.order.lock();
        loop {
            if let Some(i) = order.pop_front() {
                self.remaining -= 1;
                return self.futures[i].take();
            }
            if self.sync {
                // The sync executor runs tasks on the waiting thread: run the
                // first future still pending.
                drop(order);
                if let Some(f) = self.futures.iter().flatten().find(|f| !f.done()) {
                    f.wait();
                }
                order = self.done.order.lock();
                continue;
            }
            self.done.ready.wait(&mut order);
        }
    }
}

impl<T> AsCompleted<T> {
    /// How many futures have not been yielded yet.
    pub fn remaining(&self) -> usize {
        self.remaining
    }
}
