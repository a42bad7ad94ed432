//! Actors: a stateful object made by a task and kept where it was made,
//! its methods called from the client (or from other tasks) with futures
//! for their results — Dask's `actor=True`, Ray's `@ray.remote` classes.
//!
//! `#[shoal::actor]` on a type's `impl` block makes it an [`Actor`] and
//! writes its handle type (`CounterHandle` for `Counter`), whose methods
//! mirror the type's public methods and return [`Future`]s.
//! [`Client::actor`] creates one from a constructor:
//!
//! - Calls on one actor run one at a time, in the order they were sent;
//!   calls on different actors run in parallel.
//! - On a cluster the actor lives on the worker that ran its constructor
//!   (chosen as for any task: resources and worker restrictions hold), and
//!   calls go straight to that worker, not through the scheduler.
//! - A method that panics fails that call only.
//! - When the actor's worker dies, every call still waiting and every
//!   later one fails with [`Error::ActorLost`], naming the actor and the
//!   worker.
//! - The actor goes when the last handle made by its client goes.
//!
//! Each handle's calls go through a thread of their own, which sends all
//! calls waiting at once and reads the answers in order: many calls in
//! flight cost one round trip for the lot.

use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use shoal_graph::actor::ActorCell;
pub use shoal_graph::actor::{ActorClass, check_arity, decode_arg, encode};
use shoal_graph::{Key, TaskFn, TaskOutput, Token, Value};
use shoal_local::Notify;

use crate::args::IntoArgs;
use crate::client::{Backend, Client};
use crate::cluster::ClusterState;
use crate::error::Error;
use crate::future::{Future, FutureHandle};
use crate::options::TaskOptions;
use crate::status::Status;

/// A type whose objects are actors: written by `#[shoal::actor]`.
pub trait Actor: ActorClass {
    /// Its handle, with a method per public method of the type.
    type Handle: From<ActorRef> + Clone;
}

/// A constructor of an actor: a function (or associated function) that
/// returns an [`Actor`] type.
pub trait ActorConstructor<P>: TaskFn<P, Output = ActorCell> {
    /// The actor type it makes.
    type Class: Actor;
}

macro_rules! constructors {
    ($($A:ident),*) => {
        impl<F, R, $($A),*> ActorConstructor<($($A,)*)> for F
        where
            F: Fn($($A),*) -> R + Send + Sync + 'static,
            R: Actor + TaskOutput<Ok = ActorCell>,
            $($A: Clone + Send + Sync + 'static),*
        {
            type Class = R;
        }
    };
}

constructors!();
constructors!(A);
constructors!(A, B);
constructors!(A, B, C);
constructors!(A, B, C, D);
constructors!(A, B, C, D, E);
constructors!(A, B, C, D, E, G);

impl Client {
    /// Creates an actor with `constructor(args…)` and returns its handle
    /// (Dask's `client.submit(Counter, actor=True)`, Ray's
    /// `Counter.remote()`).
    ///
    /// ```
    /// pub struct Counter { n: u64 }
    ///
    /// #[shoal::actor]
    /// impl Counter {
    ///     pub fn new(start: u64) -> Counter { Counter { n: start } }
    ///     pub fn increment(&mut self) -> u64 { self.n += 1; self.n }
    ///     pub fn read(&self) -> u64 { self.n }
    /// }
    ///
    /// let client = shoal::Client::threads()?;
    /// let counter = client.actor(Counter::new, (10,));
    /// let calls: Vec<_> = (0..3).map(|_| counter.increment()).collect();
    /// assert_eq!(shoal::gather(&calls)?, vec![11, 12, 13]); // in the order sent
    /// assert_eq!(counter.read().result()?, 13);
    /// # Ok::<(), shoal::Error>(())
    /// ```
    pub fn actor<P, F, A>(&self, constructor: F, args: A) -> <F::Class as Actor>::Handle
    where
        F: ActorConstructor<P>,
        A: IntoArgs<P>,
    {
        self.actor_with(&TaskOptions::default(), constructor, args)
    }

    /// [`Client::actor`] with options: the resources its worker must offer
    /// (and that it then holds for its life) and worker restrictions.
    pub fn actor_with<P, F, A>(&self, opts: &TaskOptions, constructor: F, args: A) -> <F::Class as Actor>::Handle
    where
        F: ActorConstructor<P>,
        A: IntoArgs<P>,
    {
        self.create_actor(opts, constructor, args).into()
    }

    fn create_actor<P, F, A>(&self, opts: &TaskOptions, constructor: F, args: A) -> ActorRef
    where
        F: ActorConstructor<P>,
        A: IntoArgs<P>,
    {
        // Every actor is its own: never the same key as another's; keys are
        // named after the class, as Dask's (`Counter-…`).
        let mut opts = opts.clone().pure(false);
        if opts.name.is_none() {
            opts = opts.name(shoal_graph::short_fn_name(<F::Class as ActorClass>::CLASS));
        }
        let creation: Future<ActorCell> = self.submit_with(&opts, constructor, args);
        let cluster = match &self.inner.backend {
            Backend::Local(_) => None,
            Backend::Cluster(state) => Some(state.clone()),
        };
        let key = creation.key().clone();
        let policy = Restarts { restarts: opts.max_restarts, call_retries: opts.max_task_retries };
        ActorRef::start(<F::Class as ActorClass>::CLASS, key, Target::Created { creation, cluster, policy })
    }

    /// [`Client::actor`] under a name that every client of the cluster can
    /// look the actor up by ([`Client::get_actor`]). A second creation of
    /// the same class under the same name, by any client, gets the actor
    /// that exists (Ray's `get_if_exists`).
    ///
    /// ```
    /// pub struct Store { items: Vec<String> }
    ///
    /// #[shoal::actor]
    /// impl Store {
    ///     pub fn new() -> Store { Store { items: Vec::new() } }
    ///     pub fn push(&mut self, item: String) -> usize { self.items.push(item); self.items.len() }
    /// }
    ///
    /// let client = shoal::Client::threads()?;
    /// let store = client.actor_named("shared-store", Store::new, ());
    /// store.push("a".into()).result()?;
    /// let found = client.get_actor::<Store>("shared-store")?;
    /// assert_eq!(found.push("b".into()).result()?, 2);
    /// assert!(client.get_actor::<Store>("no-such-store").is_err());
    /// # Ok::<(), shoal::Error>(())
    /// ```
    pub fn actor_named<P, F, A>(&self, name: &str, constructor: F, args: A) -> <F::Class as Actor>::Handle
    where
        F: ActorConstructor<P>,
        A: IntoArgs<P>,
    {
        self.actor_named_with(&TaskOptions::default(), name, constructor, args)
    }

    /// [`Client::actor_named`] with options.
    pub fn actor_named_with<P, F, A>(
        &self,
        opts: &TaskOptions,
        name: &str,
        constructor: F,
        args: A,
    ) -> <F::Class as Actor>::Handle
    where
        F: ActorConstructor<P>,
        A: IntoArgs<P>,
    {
        let class = <F::Class as ActorClass>::CLASS;
        if let Backend::Local(_) = &self.inner.backend
            && let Some(existing) = named_here(self, class, name)
        {
            return existing.into();
        }
        let mut opts = opts.clone();
        opts.key = Some(named_key(class, name));
        let actor = self.create_actor(&opts, constructor, args);
        if let Backend::Local(_) = &self.inner.backend {
            let mut named = lock(&NAMED);
            let map = named.get_or_insert_with(Default::default);
            map.insert((client_id(self), class.to_string(), name.to_string()), Arc::downgrade(&actor.inner));
        }
        actor.into()
    }

    /// The actor of class `C` named `name` ([`Client::actor_named`]), made
    /// by this client or, on a cluster, by any. A handle found this way
    /// calls the actor but does not keep it: it lives as long as the
    /// handles of the client that made it.
    ///
    /// # Errors
    /// [`Error::Rejected`] when there is no such actor.
    pub fn get_actor<C: Actor>(&self, name: &str) -> Result<C::Handle, Error> {
        let missing = || Error::Rejected {
            key: format!("actor {name}"),
            reason: format!("no {} actor is named {name:?}", C::CLASS),
        };
        match &self.inner.backend {
            Backend::Local(_) => named_here(self, C::CLASS, name).map(Into::into).ok_or_else(missing),
            Backend::Cluster(state) => {
                let key = named_key(C::CLASS, name);
                let holders = state.ask_who_has(std::slice::from_ref(&key))?.pop().unwrap_or_default();
                let worker = holders.first().ok_or_else(missing)?;
                let target = Target::At { address: worker.data_address.clone(), token: state.token() };
                Ok(ActorRef::start(C::CLASS, key, target).into())
            }
        }
    }
}

/// The key of the actor of `class` named `name`: the same on every client.
fn named_key(class: &str, name: &str) -> Key {
    let mut token = shoal_graph::Tokenizer::new(b"named actor");
    token.add_bytes(class.as_bytes());
    token.add_bytes(&[0]);
    token.add_bytes(name.as_bytes());
    Key::scalar("actor", token.finish())
}

/// Named actors of the in-process executors, by client, class and name.
type NamedActors = std::collections::HashMap<(usize, String, String), std::sync::Weak<ActorInner>>;

static NAMED: Mutex<Option<NamedActors>> = Mutex::new(None);

fn client_id(client: &Client) -> usize {
    Arc::as_ptr(&client.inner) as usize
}

fn named_here(client: &Client, class: &str, name: &str) -> Option<ActorRef> {
    let mut named = lock(&NAMED);
    let map = named.get_or_insert_with(Default::default);
    map.retain(|_, actor| actor.strong_count() > 0);
    let inner = map.get(&(client_id(client), class.to_string(), name.to_string()))?.upgrade()?;
    Some(ActorRef { inner })
}

/// What an actor does when its worker dies.
#[derive(Clone, Copy, Debug, Default)]
struct Restarts {
    /// Times it may be made again.
    restarts: u32,
    /// Times a call waiting when it died is sent again.
    call_retries: u32,
}

/// Where a handle's calls go.
enum Target {
    /// An actor this client created: in this process, or on the cluster
    /// `cluster`, once its creation has finished.
    Created { creation: Future<ActorCell>, cluster: Option<Arc<ClusterState>>, policy: Restarts },
    /// An actor on the worker at this address (a handle passed to a task,
    /// or found by name), reached with this token.
    At { address: String, token: Option<String> },
    /// A handle of an actor in another process's memory, which cannot be
    /// called from here.
    Unreachable,
}

/// One call waiting to be sent.
struct Job {
    method: String,
    args: Vec<Vec<u8>>,
    slot: Arc<CallSlot>,
    decode: fn(&[u8]) -> Result<Value, String>,
}

/// An untyped handle of an actor: what every generated handle wraps.
/// Clones share one actor (and one sender of calls).
#[derive(Clone)]
pub struct ActorRef {
    inner: Arc<ActorInner>,
}

struct ActorInner {
    class: String,
    key: Key,
    jobs: Mutex<mpsc::Sender<Job>>,
    /// The actor's creation, which holds it alive (on this client's side).
    creation: Option<Future<ActorCell>>,
    /// Where it lives, once known (`tcp://…` of its worker), for handles
    /// passed to tasks.
    address: Arc<Mutex<Option<String>>>,
}

impl ActorRef {
    fn start(class: &str, key: Key, target: Target) -> ActorRef {
        let (tx, rx) = mpsc::channel::<Job>();
        let creation = match &target {
            Target::Created { creation, .. } => Some(creation.clone()),
            _ => None,
        };
        let address = Arc::new(Mutex::new(match &target {
            Target::At { address, .. } => Some(address.clone()),
            _ => None,
        }));
        let inner = Arc::new(ActorInner {
            class: class.to_string(),
            key: key.clone(),
            jobs: Mutex::new(tx),
            creation,
            address: address.clone(),
        });
        let caller = Caller { class: class.to_string(), key, address };
        let spawned =
            std::thread::Builder::new().name(format!("shoal-actor-{class}")).spawn(move || caller.run(target, rx));
        if let Err(e) = spawned {
            tracing::error!("cannot start the calling thread of actor {class}: {e}");
        }
        ActorRef { inner }
    }

    /// The key of the task that made the actor (on a cluster, the scheduler
    /// knows the actor's worker by it).
    pub fn key(&self) -> &Key {
        &self.inner.key
    }

    /// The actor type's name.
    pub fn class(&self) -> &str {
        &self.inner.class
    }

    /// Calls a method by name with its encoded arguments (each `Err` an
    /// argument that did not encode); the generated handles' methods call
    /// this.
    pub fn call<R>(&self, method: &str, args: Vec<Result<Vec<u8>, String>>) -> Future<R>
    where
        R: DeserializeOwned + Clone + Send + Sync + 'static,
    {
        let slot = CallSlot::new(&self.inner.class, method);
        let future = Future::from_future_handle(FutureHandle::Call(slot.clone()));
        let args = match args.into_iter().collect::<Result<Vec<_>, String>>() {
            Ok(args) => args,
            Err(message) => {
                slot.fulfil(Err(self.failed(method, message)));
                return future;
            }
        };
        let job = Job { method: method.to_string(), args, slot: slot.clone(), decode: decode_as::<R> };
        let sent = lock(&self.inner.jobs).send(job);
        if sent.is_err() {
            slot.fulfil(Err(self.failed(method, "its calling thread has ended".into())));
        }
        future
    }

    fn failed(&self, method: &str, message: String) -> Error {
        Error::TaskFailed { key: format!("{}.{method}", self.inner.class), message }
    }

    /// The address of the actor's worker, waiting for its creation if need
    /// be; `None` for an actor in this process's memory.
    fn address(&self) -> Option<String> {
        if let Some(a) = lock(&self.inner.address).clone() {
            return Some(a);
        }
        let creation = self.inner.creation.as_ref()?;
        let FutureHandle::Cluster(handle) = creation.handle() else { return None };
        let found = locate(handle.state(), creation, None).ok().map(|(address, _)| address);
        lock(&self.inner.address).clone_from(&found);
        found
    }
}

impl std::fmt::Display for ActorRef {
    /// As Dask shows an actor: `<Actor: Counter, key=…>`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<Actor: {}, key={}>", shoal_graph::short_fn_name(&self.inner.class), self.inner.key)
    }
}

impl std::fmt::Debug for ActorRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ActorRef({} {})", self.inner.class, self.inner.key)
    }
}

/// What a handle passed to a task carries: enough to call the actor from
/// the task's worker.
#[derive(Serialize, Deserialize)]
struct ActorRefMsg {
    class: String,
    key: Key,
    address: Option<String>,
}

impl Serialize for ActorRef {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        ActorRefMsg { class: self.inner.class.clone(), key: self.inner.key.clone(), address: self.address() }
            .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for ActorRef {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<ActorRef, D::Error> {
        let msg = ActorRefMsg::deserialize(deserializer)?;
        let target = match msg.address {
            Some(address) => Target::At { address, token: shoal_net::process_token() },
            None => Target::Unreachable,
        };
        Ok(ActorRef::start(&msg.class, msg.key, target))
    }
}

fn decode_as<R: DeserializeOwned + Send + Sync + 'static>(bytes: &[u8]) -> Result<Value, String> {
    postcard::from_bytes::<R>(bytes)
        .map(|r| Arc::new(r) as Value)
        .map_err(|e| format!("cannot decode the result as {}: {e}", std::any::type_name::<R>()))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Calls sent at once, at most: enough to fill a round trip, few enough
/// that the first answers come back soon.
const BATCH: usize = 1024;

/// The thread that sends a handle's calls, in order.
struct Caller {
    class: String,
    key: Key,
    address: Arc<Mutex<Option<String>>>,
}

impl Caller {
    fn run(self, target: Target, jobs: mpsc::Receiver<Job>) {
        match target {
            Target::Created { creation, cluster: None, .. } => self.run_here(&creation, &jobs),
            Target::Created { creation, cluster: Some(state), policy } => match locate(&state, &creation, None) {
                Ok((address, worker)) => {
                    *lock(&self.address) = Some(address.clone());
                    let restart = Restart { state: &state, creation: &creation, policy };
                    self.run_remote(&address, &worker, state.token().as_deref(), &jobs, Some(restart));
                }
                Err(e) => self.fail_all(&jobs, &e),
            },
            Target::At { address, token } => {
                self.run_remote(&address, &address.clone(), token.as_deref(), &jobs, None);
            }
            Target::Unreachable => self.fail_all(
                &jobs,
                &Error::Unsupported {
                    operation: format!("calling actor {}", self.class),
                    reason: "it lives in another process's memory (a threads executor's actor): pass the handle \
                             to tasks of that executor"
                        .into(),
                },
            ),
        }
    }

    /// An actor in this process: calls run on this thread, one at a time.
    fn run_here(&self, creation: &Future<ActorCell>, jobs: &mpsc::Receiver<Job>) {
        let cell = match creation.handle().value(None) {
            Some(Ok(value)) => match value.downcast::<ActorCell>() {
                Ok(cell) => cell,
                Err(_) => return self.fail_all(jobs, &self.creation_failed("its constructor made no actor")),
            },
            Some(Err(e)) => return self.fail_all(jobs, &self.creation_failed(&e.to_string())),
            None => return self.fail_all(jobs, &self.creation_failed("its client shut down")),
        };
        for job in jobs {
            let outcome = cell.call(&job.method, &job.args).and_then(|bytes| (job.decode)(&bytes));
            let key = format!("{}.{}", self.class, job.method);
            job.slot.fulfil(outcome.map_err(|message| Error::TaskFailed { key, message }));
        }
    }

    /// An actor on a worker: calls go to its data server, all waiting ones
    /// at once, the answers read in order. When the worker dies, an actor
    /// with restarts left is found again where the scheduler made it anew,
    /// and the calls that were waiting are sent again as far as their
    /// retries allow.
    fn run_remote(
        &self,
        address: &str,
        worker: &str,
        token: Option<&str>,
        jobs: &mpsc::Receiver<Job>,
        mut restart: Option<Restart<'_>>,
    ) {
        let (mut address, mut worker) = (address.to_string(), worker.to_string());
        let mut conn = shoal_net::ActorConnection::open(&address, token);
        let mut pending: Vec<(Job, u32)> = Vec::new();
        loop {
            if pending.is_empty() {
                match next_job(jobs) {
                    Some(job) => pending.push((job, 0)),
                    None => return,
                }
            }
            while pending.len() < BATCH {
                match jobs.try_recv() {
                    Ok(job) => pending.push((job, 0)),
                    Err(_) => break,
                }
            }
            let answered = match &mut conn {
                Ok(c) => {
                    let calls =
                        pending.iter().map(|(j, _)| (self.key.clone(), j.method.clone(), j.args.clone())).collect();
                    c.call_many(calls).map_err(|e| e.to_string())
                }
                Err(e) => Err(e.to_string()),
            };
            match answered {
                Ok(answers) => {
                    for ((job, _), answer) in pending.drain(..).zip(answers) {
                        let key = format!("{}.{}", self.class, job.method);
                        let outcome = answer.and_then(|bytes| (job.decode)(&bytes));
                        job.slot.fulfil(outcome.map_err(|message| Error::TaskFailed { key, message }));
                    }
                }
                Err(reason) => {
                    let error = self.lost(&worker, &reason);
                    let again = restart.as_mut().and_then(|r| r.again(&address));
                    let Some((new_address, new_worker, retries)) = again else {
                        for (job, _) in pending.drain(..) {
                            job.slot.fulfil(Err(error.clone()));
                        }
                        return self.fail_all(jobs, &error);
                    };
                    tracing::warn!("actor {} restarted on {new_worker} after {error}", self.class);
                    // What may not run twice fails; the rest goes again.
                    let mut kept = Vec::new();
                    for (job, tries) in pending.drain(..) {
                        if tries < retries {
                            kept.push((job, tries + 1));
                        } else {
                            job.slot.fulfil(Err(error.clone()));
                        }
                    }
                    pending = kept;
                    (address, worker) = (new_address, new_worker);
                    *lock(&self.address) = Some(address.clone());
                    conn = shoal_net::ActorConnection::open(&address, token);
                }
            }
        }
    }

    fn lost(&self, worker: &str, reason: &str) -> Error {
        Error::ActorLost {
            actor: format!("{} ({})", self.class, self.key),
            worker: worker.to_string(),
            reason: reason.to_string(),
        }
    }

    fn creation_failed(&self, reason: &str) -> Error {
        Error::TaskFailed {
            key: format!("{} ({})", self.class, self.key),
            message: format!("the actor was not created: {reason}"),
        }
    }

    /// Fails every call sent now and later with `error`.
    fn fail_all(&self, jobs: &mpsc::Receiver<Job>, error: &Error) {
        for job in jobs {
            job.slot.fulfil(Err(error.clone()));
        }
    }
}

/// An actor's way back after its worker died.
struct Restart<'a> {
    state: &'a ClusterState,
    creation: &'a Future<ActorCell>,
    policy: Restarts,
}

/// How long a restarting actor waits for the scheduler to make it anew.
const RESTART_WAIT: Duration = Duration::from_secs(60);

impl Restart<'_> {
    /// Uses up a restart and finds the actor made again (the scheduler
    /// remakes what its clients hold when its worker dies): its address,
    /// its worker and how often waiting calls may go again; `None` when no
    /// restart is left or it did not come back.
    fn again(&mut self, lost_at: &str) -> Option<(String, String, u32)> {
        if self.policy.restarts == 0 {
            return None;
        }
        self.policy.restarts -= 1;
        let (address, worker) = locate(self.state, self.creation, Some(lost_at)).ok()?;
        Some((address, worker, self.policy.call_retries))
    }
}

/// Where an actor made on a cluster lives: its worker's data address and
/// name, once its creation has finished; not at `not_at` (a worker that
/// died), waiting for the scheduler to make it elsewhere.
fn locate(state: &ClusterState, creation: &Future<ActorCell>, not_at: Option<&str>) -> Result<(String, String), Error> {
    if let Some(dead) = not_at {
        let deadline = Instant::now() + RESTART_WAIT;
        loop {
            let holders = state.ask_who_has(std::slice::from_ref(creation.key()))?.pop().unwrap_or_default();
            if let Some(w) = holders.iter().find(|w| w.data_address != dead) {
                return Ok((w.data_address.clone(), w.name.clone()));
            }
            if Instant::now() > deadline {
                return Err(Error::ActorLost {
                    actor: creation.key().to_string(),
                    worker: dead.to_string(),
                    reason: format!("it was not made again within {RESTART_WAIT:?}"),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    creation.handle().wait();
    if creation.status() != Status::Finished {
        // Its error, as its constructor's future has it.
        return match creation.handle().value(Some(Duration::ZERO)) {
            Some(Err(e)) => Err(e),
            _ => Err(Error::Shutdown { key: creation.key().to_string() }),
        };
    }
    let holders = state.ask_who_has(std::slice::from_ref(creation.key()))?.pop().unwrap_or_default();
    match holders.first() {
        Some(worker) => Ok((worker.data_address.clone(), worker.name.clone())),
        None => Err(Error::ActorLost {
            actor: creation.key().to_string(),
            worker: "none".into(),
            reason: "no worker holds it any more".into(),
        }),
    }
}

/// How long a waiting thread looks again for what it waits for, yielding
/// its core in between, before it sleeps: about a loopback round trip, the
/// usual wait for an actor's answer (and between one awaited call and the
/// next). A thread woken from sleep costs some microseconds more.
const LOOK_AGAIN: Duration = Duration::from_micros(100);

/// The next call to send: looked for again for a while, then waited for;
/// `None` once every handle is gone.
fn next_job(jobs: &mpsc::Receiver<Job>) -> Option<Job> {
    let looked = Instant::now();
    while looked.elapsed() < LOOK_AGAIN {
        match jobs.try_recv() {
            Ok(job) => return Some(job),
            Err(mpsc::TryRecvError::Disconnected) => return None,
            Err(mpsc::TryRecvError::Empty) => std::thread::yield_now(),
        }
    }
    jobs.recv().ok()
}

/// The outcome of one actor call, as a future sees it.
pub(crate) struct CallSlot {
    key: Key,
    state: Mutex<SlotState>,
    changed: Condvar,
}

#[derive(Default)]
struct SlotState {
    outcome: Option<Result<Value, Error>>,
    listeners: Vec<(Arc<dyn Notify>, usize)>,
}

impl CallSlot {
    fn new(class: &str, method: &str) -> Arc<CallSlot> {
        let name = format!("{}.{method}", shoal_graph::short_fn_name(class));
        Arc::new(CallSlot { key: Key::scalar(name, Token::fresh()), state: Mutex::default(), changed: Condvar::new() })
    }

    fn fulfil(&self, outcome: Result<Value, Error>) {
        let listeners = {
            let mut state = lock(&self.state);
            state.outcome = Some(outcome);
            std::mem::take(&mut state.listeners)
        };
        self.changed.notify_all();
        for (n, i) in listeners {
            n.done(i);
        }
    }

    pub(crate) fn key(&self) -> &Key {
        &self.key
    }

    pub(crate) fn status(&self) -> Status {
        match &lock(&self.state).outcome {
            None => Status::Pending,
            Some(Ok(_)) => Status::Finished,
            Some(Err(_)) => Status::Error,
        }
    }

    /// The outcome, waiting at most `timeout`; `None` on timeout.
    pub(crate) fn value(&self, timeout: Option<Duration>) -> Option<Result<Value, Error>> {
        let deadline = timeout.map(|t| Instant::now() + t);
        // An answer often comes within a round trip: looking again for that
        // long, yielding the core, spares the wake-up of a sleeping thread.
        let looked = Instant::now();
        while looked.elapsed() < LOOK_AGAIN {
            if let Some(outcome) = &lock(&self.state).outcome {
                return Some(outcome.clone());
            }
            std::thread::yield_now();
        }
        let mut state = lock(&self.state);
        loop {
            if let Some(outcome) = &state.outcome {
                return Some(outcome.clone());
            }
            state = match deadline {
                None => self.changed.wait(state).unwrap_or_else(|p| p.into_inner()),
                Some(d) => {
                    let left = d.checked_duration_since(Instant::now())?;
                    self.changed.wait_timeout(state, left).unwrap_or_else(|p| p.into_inner()).0
                }
            };
        }
    }

    pub(crate) fn subscribe(&self, notify: Arc<dyn Notify>, index: usize) {
        let mut state = lock(&self.state);
        if state.outcome.is_some() {
            drop(state);
            notify.done(index);
        } else {
            state.listeners.push((notify, index));
        }
    }
}
