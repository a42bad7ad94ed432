//! What a client does with a cluster's workers besides submitting tasks:
//! put data on them, run a function on each, restart them, and keep lazy
//! results there.

use std::any::type_name;
use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use shoal_graph::remote::require;
use shoal_graph::{Arg, Func, Key, Prefix, Task, TaskFn, Token, Value, short_fn_name};
use shoal_local::Submission;

use crate::args::{ArgContext, IntoArgs};
use crate::client::{Backend, Client};
use crate::cluster::Decoder;
use crate::delayed::Delayed;
use crate::error::Error;
use crate::future::{Future, FutureHandle, outcome_value};

/// How long [`Client::restart`] waits for the workers to come back.
const RESTART_TIMEOUT: Duration = Duration::from_secs(60);

fn decode_typed<T: DeserializeOwned + Send + Sync + 'static>(bytes: &[u8]) -> Result<Value, String> {
    postcard::from_bytes::<T>(bytes)
        .map(|v| Arc::new(v) as Value)
        .map_err(|e| format!("cannot decode a scattered {}: {e}", type_name::<T>()))
}

impl Client {
    /// Puts values on the workers now and returns a finished future for
    /// each (Dask's `scatter`): pass the futures to tasks instead of the
    /// values, and a large value travels once instead of with every task.
    ///
    /// On a cluster the values are encoded (serde, postcard) and sent
    /// straight to the workers, round robin, one connection per worker; the
    /// scheduler only learns where they are. A task that takes one decodes
    /// it with its own parameter type. A scattered value has no lineage: if
    /// its worker dies it is lost, and its future (and the tasks that need
    /// it) fail saying so. On the in-process executors the futures simply
    /// hold the values. Every value gets a fresh key named after its type.
    ///
    /// ```
    /// use shoal_client::Client;
    /// fn total(v: Vec<u64>) -> u64 { v.iter().sum() }
    /// let client = Client::threads()?;
    /// let [data] = <[_; 1]>::try_from(client.scatter([vec![1u64, 2, 3]])?).expect("one future per value");
    /// assert!(data.done());
    /// assert_eq!(client.submit(total, (&data,)).result()?, 6);
    /// # Ok::<(), shoal_client::Error>(())
    /// ```
    /// On a cluster of worker processes:
    /// ```
    /// #[shoal::remote]
    /// fn total(v: Vec<u64>) -> u64 { v.iter().sum() }
    ///
    /// let cluster = shoal::LocalCluster::builder().workers(2).threads_per_worker(1).build()?;
    /// let client = cluster.client()?;
    /// let parts = client.scatter((0..4u64).map(|i| vec![i; 1000]))?;
    /// let sums = client.map(total, &parts);
    /// assert_eq!(client.gather(&sums)?, vec![0, 1000, 2000, 3000]);
    /// # Ok::<(), shoal::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::Rejected`] when no worker is connected or a value cannot be
    /// encoded; [`Error::Connection`] naming the worker a value could not
    /// be sent to.
    pub fn scatter<T, I>(&self, values: I) -> Result<Vec<Future<T>>, Error>
    where
        T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
        I: IntoIterator<Item = T>,
    {
        let prefix: Prefix = short_fn_name(type_name::<T>()).into();
        match &self.inner.backend {
            Backend::Local(runtime) => {
                let submissions = values.into_iter().map(|v| {
                    let value: Value = Arc::new(v);
                    let func = Func::new("shoal::scattered", None, Box::new(move |_| Ok(value.clone())));
                    Submission::new(Task { key: Key::scalar(prefix.clone(), Token::fresh()), func, args: Vec::new() })
                        .held()
                });
                let handles = runtime.submit(submissions);
                // Done before they are returned (the sync executor runs them here).
                for h in &handles {
                    let _ = h.wait();
                }
                Ok(handles.into_iter().map(Future::from_handle).collect())
            }
            Backend::Cluster(state) => {
                let encoded = values
                    .into_iter()
                    .map(|v| {
                        let key = Key::scalar(prefix.clone(), Token::fresh());
                        match postcard::to_allocvec(&v) {
                            Ok(bytes) => Ok((key, bytes)),
                            Err(e) => {
                                Err(Error::Rejected { key: key.to_string(), reason: format!("cannot encode it: {e}") })
                            }
                        }
                    })
                    .collect::<Result<Vec<_>, Error>>()?;
                let handles = state.scatter(encoded, Decoder::Typed(decode_typed::<T>))?;
                Ok(handles.into_iter().map(Future::from_cluster).collect())
            }
        }
    }

    /// Runs `f` on `args` once on every worker, now, outside the task queue
    /// (Dask's `client.run`), and returns each worker's result by worker
    /// name: for setting up or inspecting worker processes (their process
    /// id, an environment variable, a cache to clear).
    ///
    /// On a cluster `f` must be `#[shoal::remote]` and the arguments are
    /// values (not futures); it runs on a thread of its own on each worker,
    /// all workers at once, beside any running tasks. On the in-process
    /// executors it runs once, here, under the name `"local"`.
    ///
    /// ```
    /// #[shoal::remote]
    /// fn pid_plus(offset: u32) -> u32 { std::process::id() + offset }
    ///
    /// let cluster = shoal::LocalCluster::builder().workers(2).threads_per_worker(1).build()?;
    /// let client = cluster.client()?;
    /// let pids = client.run(pid_plus, (0u32,))?;
    /// assert_eq!(pids.keys().collect::<Vec<_>>(), ["local-0", "local-1"]);
    /// let mut expected = cluster.worker_pids();
    /// expected.sort();
    /// let mut got: Vec<u32> = pids.into_values().collect();
    /// got.sort();
    /// assert_eq!(got, expected);
    /// # Ok::<(), shoal::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::RunFailed`] naming the first worker (by name) where `f`
    /// failed or panicked; [`Error::NotRemote`] when `f` is not registered;
    /// [`Error::Unsupported`] when an argument is a future or delayed value;
    /// [`Error::Connection`] naming a worker that could not be reached.
    pub fn run<P, F, A>(&self, f: F, args: A) -> Result<BTreeMap<String, F::Output>, Error>
    where
        F: TaskFn<P>,
        A: IntoArgs<P>,
        F::Output: Clone,
    {
        let func = f.into_func();
        let mut cx = ArgContext::new(None);
        let values = args
            .into_args(&mut cx)
            .into_iter()
            .map(|arg| match arg {
                Arg::Value(v) => Ok(v),
                Arg::Key(k) => Err(Error::Unsupported {
                    operation: format!("run({})", func.name()),
                    reason: format!("its arguments must be values, and {k} is a task's result; pass its value instead"),
                }),
            })
            .collect::<Result<Vec<Value>, Error>>()?;
        let failed = |worker: &str, message: String| Error::RunFailed {
            function: func.name().to_string(),
            worker: worker.to_string(),
            message,
        };
        match &self.inner.backend {
            Backend::Local(_) => {
                let value = match catch_unwind(AssertUnwindSafe(|| func.call(values))) {
                    Ok(Ok(v)) => v,
                    Ok(Err(e)) => return Err(failed("local", e.to_string())),
                    Err(_) => return Err(failed("local", "it panicked".into())),
                };
                Ok(BTreeMap::from([("local".to_string(), outcome_value(Ok(value))?)]))
            }
            Backend::Cluster(state) => {
                let not_remote = |message: String| Error::NotRemote { key: format!("run({})", func.name()), message };
                let remote = require(func.name()).map_err(|e| not_remote(e.to_string()))?;
                let encoded = values
                    .iter()
                    .enumerate()
                    .map(|(i, v)| remote.encode_value(i, v))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| not_remote(e.to_string()))?;
                let mut results = BTreeMap::new();
                for (worker, outcome) in state.run_everywhere(func.name(), &encoded)? {
                    let bytes = outcome.map_err(|m| failed(&worker, m))?;
                    let value = remote.decode_result_value(&bytes).map_err(|e| failed(&worker, e.to_string()))?;
                    results.insert(worker, outcome_value(Ok(value))?);
                }
                Ok(results)
            }
        }
    }

    /// Restarts the cluster (Dask's `client.restart`): the scheduler forgets
    /// every task, every worker drops its data and starts afresh — worker
    /// processes of a `LocalCluster` or of `shoal worker` are replaced by
    /// new processes, other workers clear their state — and this waits
    /// until as many workers as before have joined again. Every future of
    /// every client of the cluster fails with [`Error::Restarted`];
    /// submitting the same work again runs it again.
    ///
    /// ```
    /// #[shoal::remote]
    /// fn square(x: u64) -> u64 { x * x }
    ///
    /// let cluster = shoal::LocalCluster::builder().workers(2).threads_per_worker(1).build()?;
    /// let client = cluster.client()?;
    /// let before = client.submit(square, (3u64,));
    /// assert_eq!(before.result()?, 9);
    /// let old_pids = cluster.worker_pids();
    /// client.restart()?;
    /// assert!(matches!(before.result(), Err(shoal::Error::Restarted { .. })));
    /// assert!(cluster.worker_pids().iter().all(|p| !old_pids.contains(p)), "new processes");
    /// assert_eq!(client.submit(square, (3u64,)).result()?, 9);
    /// # Ok::<(), shoal::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::Connection`] when the scheduler does not confirm the
    /// restart, or fewer workers than before come back within a minute;
    /// [`Error::Unsupported`] on the in-process executors, which have no
    /// workers to restart (drop the client and build a new one instead).
    pub fn restart(&self) -> Result<(), Error> {
        match &self.inner.backend {
            Backend::Local(_) => Err(Error::Unsupported {
                operation: "restart".into(),
                reason: "the in-process executors have no workers to restart; drop the client and build a new one"
                    .into(),
            }),
            Backend::Cluster(state) => state.restart(RESTART_TIMEOUT),
        }
    }

    /// Starts computing lazy values and returns their futures at once,
    /// keeping the results on the workers while the futures live (Dask's
    /// `client.persist`). Tasks the values share run once; intermediate
    /// results are freed as soon as the values no longer need them. The
    /// futures are arguments of later tasks and delayed calls like any.
    ///
    /// ```
    /// use shoal_client::{Client, delayed};
    /// fn inc(x: u64) -> u64 { x + 1 }
    /// fn add(a: u64, b: u64) -> u64 { a + b }
    /// let client = Client::threads()?;
    /// let shared = delayed(inc, (1u64,));
    /// let values = [delayed(add, (&shared, 10u64)), delayed(add, (&shared, 20u64))];
    /// let kept = client.persist(&values)?;
    /// assert_eq!(client.gather(&kept)?, vec![12, 22]);
    /// assert_eq!(client.submit(add, (&kept[0], &kept[1])).result()?, 34);
    /// # Ok::<(), shoal_client::Error>(())
    /// ```
    ///
    /// # Errors
    /// When the graph cannot be run as built.
    pub fn persist<T: Clone + Send + Sync + 'static>(&self, values: &[Delayed<T>]) -> Result<Vec<Future<T>>, Error> {
        let roots: Vec<_> = values.iter().map(|d| d.node()).collect();
        let handles: Vec<FutureHandle> = crate::delayed::run(self, &roots)?;
        Ok(handles.into_iter().map(Future::from_future_handle).collect())
    }
}
