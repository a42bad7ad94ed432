//! What a cluster client does through the scheduler and the workers:
//! submitting tasks, scattering data, running functions everywhere,
//! restarting, and gathering many results at once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;
use shoal_graph::remote::{RemoteFunc, require};
use shoal_graph::{Arg, Key, KeyHashMap, Task, Value};
use shoal_proto::{ArgList, ArgMsg, ScatteredMsg, TaskMsg, ToScheduler, WorkerId};

use super::handle::{ClusterHandle, Located};
use super::state::{ClusterState, Decoder, Entry, TaskStatus};
use crate::error::Error;
use crate::options::Placement;

/// What running a function on one worker gave: its encoded result, or its
/// failure's message.
pub(crate) type RunOutcome = Result<Vec<u8>, String>;

/// One task to send to the scheduler.
pub(crate) struct Outgoing {
    pub(crate) task: Task,
    pub(crate) retries: u32,
    pub(crate) held: bool,
    pub(crate) placement: Option<Arc<Placement>>,
}

impl ClusterState {
    /// Submits tasks (dependencies first); returns handles for those marked
    /// held, in order. Functions must be registered with `#[shoal::remote]`;
    /// a task that cannot be encoded fails at once, and so do the tasks of
    /// this batch that need it.
    pub(crate) fn submit(self: &Arc<Self>, tasks: impl IntoIterator<Item = Outgoing>) -> Vec<ClusterHandle> {
        let mut tasks = tasks.into_iter();
        let mut handles = Vec::new();
        let mut unsendable: KeyHashMap<Error> = KeyHashMap::default();
        let mut lists: KeyHashMap<Vec<Key>> = KeyHashMap::default();
        loop {
            // Made (tokenised, encoded) outside the lock, which the tasks'
            // arguments may need, and sent a batch at a time: the scheduler
            // and the workers start on the first tasks of a large `map`
            // while the rest are still being made.
            let batch: Vec<Outgoing> = tasks.by_ref().take(SUBMIT_BATCH).collect();
            if batch.is_empty() {
                break;
            }
            let mut msgs = Vec::with_capacity(batch.len());
            let mut inner = self.lock();
            for Outgoing { task, retries, held, placement } in batch {
                let key = task.key.clone();
                if crate::list_task::is_list(&task) && !held {
                    // Sent inline, as a `List` argument of the task that reads it.
                    lists.insert(key, task.dependencies().cloned().collect());
                    continue;
                }
                let blocked = task.dependencies().find_map(|d| unsendable.get(d).cloned());
                let encoded = match blocked {
                    Some(cause) => Err(Error::NotRemote { key: key.to_string(), message: cause.to_string() }),
                    None => encode(&task, retries, held, &lists, placement.as_deref()),
                };
                if let Err(e) = &encoded {
                    unsendable.insert(key.clone(), e.clone());
                }
                if held {
                    let (status, producer) = match &encoded {
                        Ok((_, producer)) => (TaskStatus::Pending, Some(Decoder::Func(producer))),
                        Err(e) => (TaskStatus::Erred(e.clone()), None),
                    };
                    let entry = inner.keys.entry(key.clone()).or_insert_with(|| Entry {
                        status: TaskStatus::Pending,
                        holders: 0,
                        producer,
                        listeners: Vec::new(),
                        pending_reason: None,
                        version: 0,
                        holder: None,
                        inline: None,
                    });
                    if entry.holders == 0 || matches!(entry.status, TaskStatus::Erred(Error::Restarted { .. })) {
                        // New, or submitted again after a restart dropped it.
                        entry.status = status;
                        entry.producer = producer;
                    }
                    entry.holders += 1;
                    handles.push(ClusterHandle { key, state: self.clone() });
                }
                if let Ok((msg, _)) = encoded {
                    msgs.push(msg);
                }
            }
            drop(inner);
            if !msgs.is_empty() {
                self.send(&ToScheduler::Submit(msgs));
            }
        }
        handles
    }

    /// Puts encoded values on the cluster's workers (round robin, one
    /// connection per worker), then tells the scheduler where they are.
    /// The handles hold finished futures.
    pub(crate) fn scatter(
        self: &Arc<Self>,
        values: Vec<(Key, Vec<u8>)>,
        decoder: Decoder,
    ) -> Result<Vec<ClusterHandle>, Error> {
        if values.is_empty() {
            return Ok(Vec::new());
        }
        let mut workers = self.info()?;
        workers.sort_by_key(|w| w.id);
        if workers.is_empty() {
            return Err(Error::Rejected {
                key: values[0].0.to_string(),
                reason: "no workers are connected to hold scattered data; start some first".into(),
            });
        }
        let conn = self.conn.get().ok_or_else(|| Error::Shutdown { key: values[0].0.to_string() })?;
        let mut per_worker: Vec<Vec<(Key, Vec<u8>)>> = vec![Vec::new(); workers.len()];
        let keys: Vec<Key> = values.iter().map(|(k, _)| k.clone()).collect();
        let mut placed = Vec::with_capacity(values.len());
        for (n, (key, bytes)) in values.into_iter().enumerate() {
            let w = n % workers.len();
            placed.push(ScatteredMsg { key: key.clone(), worker: workers[w].id, nbytes: bytes.len() as u64 });
            per_worker[w].push((key, bytes));
        }
        // One result per worker, in worker order (empty puts succeed).
        let results: Vec<Result<(), Error>> = std::thread::scope(|scope| {
            let jobs: Vec<_> = workers
                .iter()
                .zip(&per_worker)
                .map(|(w, vals)| {
                    scope.spawn(move || {
                        if vals.is_empty() {
                            return Ok(());
                        }
                        conn.put(&w.data_address, vals).map_err(|e| Error::Connection {
                            peer: format!("worker {}", w.name),
                            message: e.to_string(),
                        })
                    })
                })
                .collect();
            jobs.into_iter()
                .map(|j| {
                    j.join().unwrap_or_else(|_| {
                        Err(Error::Connection {
                            peer: "a worker".into(),
                            message: "the sending thread panicked".into(),
                        })
                    })
                })
                .collect()
        });
        let reached: Vec<shoal_proto::WorkerId> =
            workers.iter().zip(&results).filter(|(_, r)| r.is_ok()).map(|(w, _)| w.id).collect();
        placed.retain(|p| reached.contains(&p.worker));
        let mut inner = self.lock();
        let mut handles = Vec::with_capacity(keys.len());
        for key in &keys {
            let entry = inner.keys.entry(key.clone()).or_insert_with(|| Entry {
                status: TaskStatus::Finished,
                holders: 0,
                producer: Some(decoder),
                listeners: Vec::new(),
                pending_reason: None,
                version: 0,
                holder: None,
                inline: None,
            });
            entry.holders += 1;
            handles.push(ClusterHandle { key: key.clone(), state: self.clone() });
        }
        drop(inner);
        // What reached a worker is the scheduler's to track (and to release
        // when the handles go, as they do below if another worker failed).
        if !placed.is_empty() {
            self.send(&ToScheduler::Scatter(placed));
        }
        results.into_iter().collect::<Result<(), Error>>()?;
        Ok(handles)
    }

    /// Runs a registered function with encoded arguments on every worker,
    /// all at once; each worker's name with its encoded result or failure.
    pub(crate) fn run_everywhere(&self, func: &str, args: &[Vec<u8>]) -> Result<Vec<(String, RunOutcome)>, Error> {
        let workers = self.info()?;
        let conn = self.conn.get().ok_or_else(|| Error::Shutdown { key: format!("run {func}") })?;
        std::thread::scope(|scope| {
            let jobs: Vec<_> = workers
                .iter()
                .map(|w| {
                    let ran = scope.spawn(move || conn.run_on(&w.data_address, func, args.to_vec()));
                    (w, ran)
                })
                .collect();
            jobs.into_iter()
                .map(|(w, ran)| {
                    let connection =
                        |message: String| Error::Connection { peer: format!("worker {}", w.name), message };
                    let outcome = ran
                        .join()
                        .map_err(|_| connection("the calling thread panicked".into()))?
                        .map_err(|e| connection(e.to_string()))?;
                    Ok((w.name.clone(), outcome))
                })
                .collect()
        })
    }

    /// Asks the scheduler to restart the cluster and waits until it has, and
    /// until as many workers as before have registered again.
    pub(crate) fn restart(&self, timeout: Duration) -> Result<(), Error> {
        let before = self.info()?.len();
        let seen = self.lock().restarts;
        self.send(&ToScheduler::Restart);
        let deadline = Instant::now() + timeout;
        let scheduler = |message: String| Error::Connection { peer: "the scheduler".into(), message };
        let mut inner = self.lock();
        while inner.restarts == seen {
            if inner.closed {
                return Err(scheduler("the connection closed during the restart".into()));
            }
            let left = deadline
                .checked_duration_since(Instant::now())
                .ok_or_else(|| scheduler(format!("no restart within {timeout:?}")))?;
            inner = self.changed.wait_timeout(inner, left).unwrap_or_else(|p| p.into_inner()).0;
        }
        drop(inner);
        loop {
            let now = self.info()?.len();
            if now >= before {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(scheduler(format!(
                    "only {now} of {before} workers came back within {timeout:?} after the restart"
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The wire form of a task, with the registered function that decodes its result.
fn encode(
    task: &Task,
    retries: u32,
    held: bool,
    lists: &KeyHashMap<Vec<Key>>,
    placement: Option<&Placement>,
) -> Result<(TaskMsg, &'static RemoteFunc), Error> {
    // Named only in errors: formatting every key would cost more than encoding it.
    let key = || task.key.to_string();
    let placement = placement.cloned().unwrap_or_default();
    if let Some((name, amount)) =
        placement.resources.iter().find(|(name, amount)| name.is_empty() || !amount.is_finite() || *amount <= 0.0)
    {
        return Err(Error::Rejected {
            key: key(),
            reason: format!("resource {name:?}={amount}: names must not be empty and amounts must be positive numbers"),
        });
    }
    let producer = require(task.func.name()).map_err(|e| Error::NotRemote { key: key(), message: e.to_string() })?;
    let args = task
        .args
        .iter()
        .enumerate()
        .map(|(position, arg)| match arg {
            Arg::Value(v) => producer
                .encode_value(position, v)
                .map(ArgMsg::Value)
                .map_err(|e| Error::NotRemote { key: key(), message: e.to_string() }),
            Arg::Key(k) => Ok(match lists.get(k) {
                Some(elements) => ArgMsg::List(elements.clone()),
                None => ArgMsg::Key(k.clone()),
            }),
        })
        .collect::<Result<ArgList, _>>()?;
    let msg = TaskMsg {
        key: task.key.clone(),
        func: task.func.name().into(),
        args,
        priority: placement.priority,
        retries,
        resources: placement.resources,
        workers: placement.workers,
        held,
    };
    Ok((msg, producer))
}

impl ClusterState {
    /// The results of many tasks: one location query, then one request per
    /// worker for all it holds of them.
    pub(crate) fn values(&self, handles: &[&ClusterHandle]) -> Vec<Result<Value, Error>> {
        let waited: Vec<Located> = handles
            .iter()
            .map(|h| {
                h.wait_located(None).unwrap_or_else(|| Located {
                    outcome: Err(Error::Shutdown { key: h.key.to_string() }),
                    holder: None,
                    inline: None,
                })
            })
            .collect();
        // Where the scheduler said each result was; the scheduler is asked
        // only about results whose holder is not (or no longer) a worker.
        // Results that came with their reports need neither.
        let to_fetch = |l: &Located| l.outcome.is_ok() && l.inline.is_none();
        let workers = if waited.iter().any(to_fetch) { self.info().unwrap_or_default() } else { Vec::new() };
        let address_of: FxHashMap<WorkerId, &str> = workers.iter().map(|w| (w.id, w.data_address.as_str())).collect();
        // Positions, not keys: a hash lookup per result costs a cache miss
        // each once there are many.
        let mut by_worker: std::collections::BTreeMap<&str, Vec<usize>> = Default::default();
        let mut unplaced = Vec::new();
        for (i, located) in waited.iter().enumerate() {
            if !to_fetch(located) {
                continue;
            }
            match located.holder.and_then(|w| address_of.get(&w)) {
                Some(address) => by_worker.entry(address).or_default().push(i),
                None => unplaced.push(i),
            }
        }
        let keys: Vec<Key> = unplaced.iter().map(|&i| handles[i].key.clone()).collect();
        let located = if keys.is_empty() { Vec::new() } else { self.ask_who_has(&keys).unwrap_or_default() };
        for (&i, holders) in unplaced.iter().zip(&located) {
            if let Some(first) = holders.first() {
                by_worker.entry(first.data_address.as_str()).or_default().push(i);
            }
        }
        let mut bytes: Vec<Option<Vec<u8>>> = vec![None; handles.len()];
        if let Some(conn) = self.conn.get() {
            for (address, positions) in by_worker {
                let wanted: Vec<Key> = positions.iter().map(|&i| handles[i].key.clone()).collect();
                if let Ok(got) = conn.fetch_many(address, &wanted) {
                    for (&i, b) in positions.iter().zip(got) {
                        bytes[i] = b;
                    }
                }
            }
        }
        handles
            .iter()
            .zip(waited)
            .zip(bytes)
            .map(|((h, located), fetched)| {
                let producer = located.outcome?;
                let decode = |b: &[u8]| {
                    producer.decode(b).map_err(|message| Error::TaskFailed { key: h.key.to_string(), message })
                };
                match (located.inline, fetched) {
                    (Some(b), _) => decode(&b),
                    (None, Some(b)) => decode(&b),
                    // Moved or lost meanwhile: fetch it on its own.
                    (None, None) => h.fetch(producer),
                }
            })
            .collect()
    }
}

/// Tasks per submit message: big enough that a message's cost is spread
/// thin, small enough that work starts soon.
const SUBMIT_BATCH: usize = 2048;
