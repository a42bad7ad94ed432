//! Ray's spelling of tasks, on shoal's runtime: `f.remote(x)` submits,
//! [`get`] waits, [`put`] stores an object, [`wait`] returns the first that
//! are ready. A reference is a [`Future`] (an [`ObjectRef`]), so a program
//! may mix this spelling with Dask's (`client.submit`, `gather`).
//!
//! Calls go to the current client ([`Client::current`]): the latest client
//! built and still alive (a `LocalCluster`'s, or `Client::connect`'s), else
//! a thread pool of this process, as `ray.init()` starts one.
//!
//! ```
//! use shoal_client::ray::{self, Remote};
//!
//! fn increment(x: u64) -> u64 { x + 1 }
//! fn add(a: u64, b: u64) -> u64 { a + b }
//!
//! let refs: Vec<_> = (0..4u64).map(|x| increment.remote(x)).collect();
//! assert_eq!(ray::get(&refs)?, vec![1, 2, 3, 4]);
//! let sum = add.remote((&refs[0], &refs[3]));            // references are arguments
//! assert_eq!(sum.result()?, 5);
//! let big = ray::put(vec![7u8; 1000])?;
//! let (ready, _pending) = ray::wait(&refs, 2, None);
//! assert!(ready.len() >= 2);
//! # let _ = big;
//! # Ok::<(), shoal_client::Error>(())
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use serde::Serialize;
use serde::de::DeserializeOwned;
use shoal_graph::TaskFn;
use shoal_local::Notify;

use crate::args::MapInput;
use crate::client::Client;
use crate::error::Error;
use crate::future::Future;
use crate::options::TaskOptions;

/// Ray's `ObjectRef`: a reference to a result that exists, or will.
pub type ObjectRef<T> = Future<T>;

/// `.remote(args)` on any task function (Ray's `f.remote(x)`), and
/// `.options(..)` for per-call resources (Ray's `f.options(num_gpus=1)`).
/// One argument is given as itself, several as a tuple.
pub trait Remote<P>: TaskFn<P> + Sized {
    /// Runs the function on the current client; a reference to its result.
    fn remote<I: MapInput<P>>(self, args: I) -> ObjectRef<Self::Output> {
        call(&TaskOptions::default(), self, args)
    }

    /// The function with options for its calls: resources, priority,
    /// retries.
    ///
    /// ```
    /// use shoal_client::ray::{Remote, RemoteOptions};
    /// fn double(x: u64) -> u64 { 2 * x }
    /// let r = double.options(RemoteOptions::new().max_retries(2)).remote(21u64);
    /// assert_eq!(r.result()?, 42);
    /// # Ok::<(), shoal_client::Error>(())
    /// ```
    fn options(self, options: RemoteOptions) -> WithOptions<Self, P> {
        WithOptions { f: self, options: options.0, params: std::marker::PhantomData }
    }
}

impl<P, F: TaskFn<P>> Remote<P> for F {}

/// A task function with [`RemoteOptions`] for its calls.
pub struct WithOptions<F, P> {
    f: F,
    options: TaskOptions,
    params: std::marker::PhantomData<fn(P)>,
}

impl<P, F: TaskFn<P> + Clone> WithOptions<F, P> {
    /// Runs the function with these options on the current client.
    pub fn remote<I: MapInput<P>>(&self, args: I) -> ObjectRef<F::Output> {
        call(&self.options, self.f.clone(), args)
    }
}

/// Ray's per-call options, as shoal's [`TaskOptions`]: `num_cpus` and
/// `num_gpus` are the resources `cpu` and `gpu` (which workers offer as
/// they find them), `resources` any others.
#[derive(Clone, Debug, Default)]
pub struct RemoteOptions(TaskOptions);

impl RemoteOptions {
    /// No options.
    pub fn new() -> RemoteOptions {
        RemoteOptions::default()
    }

    /// CPUs the call holds while it runs (resource `cpu`).
    pub fn num_cpus(self, cpus: f64) -> RemoteOptions {
        self.resource("cpu", cpus)
    }

    /// GPUs the call holds while it runs (resource `gpu`).
    pub fn num_gpus(self, gpus: f64) -> RemoteOptions {
        self.resource("gpu", gpus)
    }

    /// Named amounts the call holds while it runs.
    pub fn resources<S: Into<String>>(self, resources: impl IntoIterator<Item = (S, f64)>) -> RemoteOptions {
        resources.into_iter().fold(self, |o, (name, amount)| o.resource(name, amount))
    }

    /// Reruns after a failure of the function (Ray's `max_retries`).
    pub fn max_retries(self, retries: u32) -> RemoteOptions {
        RemoteOptions(self.0.retries(retries))
    }

    fn resource(self, name: impl Into<String>, amount: f64) -> RemoteOptions {
        RemoteOptions(self.0.add_resource(name.into(), amount))
    }
}

fn call<P, F: TaskFn<P>, I: MapInput<P>>(options: &TaskOptions, f: F, args: I) -> Future<F::Output> {
    match Client::current().map_with(options, f, std::iter::once(args)).pop() {
        Some(future) => future,
        None => unreachable!("one input gives one future"),
    }
}

/// The results of `refs`, in order, once all exist (Ray's `ray.get`).
///
/// # Errors
/// The first failure among them.
pub fn get<T: Clone + Send + Sync + 'static>(refs: &[ObjectRef<T>]) -> Result<Vec<T>, Error> {
    crate::client::gather(refs)
}

/// Stores `value` where tasks can take it (on the current client's
/// workers, for a cluster) and returns its reference (Ray's `ray.put`).
///
/// # Errors
/// When the value cannot be encoded or no worker can hold it.
pub fn put<T>(value: T) -> Result<ObjectRef<T>, Error>
where
    T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
{
    let mut stored = Client::current().scatter([value])?;
    stored.pop().ok_or_else(|| Error::Rejected { key: "put".into(), reason: "nothing was stored".into() })
}

/// Counts the references that are done, and wakes whoever waits.
#[derive(Default)]
struct Readiness {
    done: Mutex<usize>,
    changed: Condvar,
}

impl Notify for Readiness {
    fn done(&self, _index: usize) {
        *self.done.lock() += 1;
        self.changed.notify_all();
    }
}

/// Waits until `num_returns` of `refs` are done (all, if there are fewer),
/// or `timeout` has passed; the done ones and the others, each in the
/// order given (Ray's `ray.wait`). shoal's own [`wait`](crate::wait) is
/// Dask's: it waits for all.
pub fn wait<T>(
    refs: &[ObjectRef<T>],
    num_returns: usize,
    timeout: Option<Duration>,
) -> (Vec<ObjectRef<T>>, Vec<ObjectRef<T>>) {
    let wanted = num_returns.min(refs.len());
    let readiness = Arc::new(Readiness::default());
    for (i, r) in refs.iter().enumerate() {
        r.handle().subscribe(readiness.clone(), i);
    }
    let deadline = timeout.map(|t| Instant::now() + t);
    let mut done = readiness.done.lock();
    while *done < wanted {
        match deadline {
            None => readiness.changed.wait(&mut done),
            Some(d) => {
                if readiness.changed.wait_until(&mut done, d).timed_out() {
                    break;
                }
            }
        }
    }
    drop(done);
    refs.iter().cloned().partition(|r| r.done())
}
