//! The messages of a shoal cluster.
//!
//! Four directions, as in Dask: [`ToScheduler`] and [`FromScheduler`]
//! between clients and the scheduler, [`ToWorker`] and [`FromWorker`] between
//! the scheduler and workers; [`PeerRequest`] and [`PeerReply`] carry data
//! between workers. The scheduler only ever sees metadata: task payloads
//! (function name and encoded literal arguments) pass through it unread, and
//! results never do.
//!
//! Function names, arguments and worker addresses are shared (`Arc`) rather
//! than owned: the scheduler keeps a task's spec for as long as it may have
//! to run it again. It does not even build a [`ComputeMsg`] to hand a task
//! out: [`ComputeRef`] borrows the spec from the scheduler's records and
//! encodes to the same bytes. On the wire they are plain strings and
//! sequences.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use shoal_graph::Key;
use smallvec::SmallVec;

/// A worker, as numbered by its scheduler.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct WorkerId(pub u32);

impl std::fmt::Display for WorkerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "worker-{}", self.0)
    }
}

/// A task, as numbered by its scheduler: a slot in its task table and that
/// slot's generation, so the id of a forgotten task never names the task
/// that reuses its slot.
///
/// The scheduler sends it with each task and workers echo it in their
/// reports, so a completion is matched to its task without hashing the key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TaskId(pub u64);

impl TaskId {
    /// The id of a slot's current task.
    ///
    /// ```
    /// use shoal_proto::TaskId;
    ///
    /// let id = TaskId::new(7, 2);
    /// assert_eq!((id.slot(), id.generation()), (7, 2));
    /// assert_eq!(id.to_string(), "task-7.2");
    /// ```
    pub fn new(slot: u32, generation: u32) -> TaskId {
        TaskId((u64::from(generation) << 32) | u64::from(slot))
    }

    /// The slot in the scheduler's task table.
    pub fn slot(self) -> u32 {
        self.0 as u32
    }

    /// How many tasks had the slot before this one.
    pub fn generation(self) -> u32 {
        (self.0 >> 32) as u32
    }
}

impl std::fmt::Display for TaskId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "task-{}.{}", self.slot(), self.generation())
    }
}

/// A client, as numbered by its scheduler.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ClientId(pub u32);

impl std::fmt::Display for ClientId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "client-{}", self.0)
    }
}

/// One argument of a task on the wire.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ArgMsg {
    /// A literal value, encoded by the codec of the task's function.
    Value(Vec<u8>),
    /// The result of another task.
    Key(Key),
    /// The results of these tasks as one `Vec` argument, in order.
    List(Vec<Key>),
}

/// A task's arguments as submitted: up to three in place, so that
/// decoding a submission allocates nothing per task for them (most tasks
/// have at most three), and the scheduler, which keeps a task's arguments
/// only when they are more than its inputs' keys, frees nothing per task
/// either. A shared slice here had cost the scheduler an allocator call
/// per task, about 190 instructions (callgrind, the simulator's DAG). On
/// the wire it is a sequence, as a `Vec` is.
pub type ArgList = SmallVec<[ArgMsg; 3]>;

/// A named amount a task needs or a worker has: `("cpus", 1.0)`, `("gpu", 1.0)`.
pub type Resources = Vec<(String, f64)>;

/// The function name of a task that stands for data a client put on a
/// worker ([`ToScheduler::Scatter`]): it has no lineage, so when its last
/// copy is lost it fails instead of being recomputed.
pub const SCATTERED_FUNC: &str = "shoal::scattered";

/// Data a client stored on a worker, as the client tells the scheduler.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScatteredMsg {
    /// Its key.
    pub key: Key,
    /// The worker that holds it.
    pub worker: WorkerId,
    /// Its size in bytes.
    pub nbytes: u64,
}

/// A task as a client submits it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskMsg {
    /// Its key.
    pub key: Key,
    /// The registered name of its function.
    pub func: Arc<str>,
    /// Its arguments, in order.
    pub args: ArgList,
    /// Higher runs first among ready tasks.
    pub priority: i32,
    /// Reruns after a failure of the function.
    pub retries: u32,
    /// What it needs of a worker (none: one thread).
    pub resources: Resources,
    /// Workers (by name or address) it may run on; empty: any.
    pub workers: Vec<String>,
    /// Whether the submitting client holds a future of it.
    pub held: bool,
}

/// Client → scheduler.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ToScheduler {
    /// New tasks, dependencies before dependents.
    Submit(Vec<TaskMsg>),
    /// The client holds these keys no more.
    Release(Vec<Key>),
    /// Cancel these keys (and what depends on them).
    Cancel(Vec<Key>),
    /// Where are these keys' results?
    WhoHas(Vec<Key>),
    /// The cluster's workers and their resources.
    Info,
    /// The client stored this data on workers (with [`PeerRequest::Put`]);
    /// the scheduler records it as results in memory, held by the client.
    Scatter(Vec<ScatteredMsg>),
    /// Forget every task, and make every worker start afresh. Every client
    /// hears [`FromScheduler::Restarted`].
    Restart,
    /// Keep computing these tasks when no future holds them any more
    /// (Dask's `fire_and_forget`); each is let go once it has finished or
    /// failed.
    FireAndForget(Vec<Key>),
}

/// Why a task has no result, as the scheduler reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskErrorMsg {
    /// Its function failed or panicked.
    Failed {
        /// The message.
        message: String,
    },
    /// A dependency has no result.
    Dependency {
        /// The direct dependency.
        dependency: Key,
        /// Where the failure started.
        failed: Key,
        /// What went wrong there.
        message: String,
    },
    /// It was cancelled.
    Cancelled,
    /// Workers running it died too often (Dask's `KilledWorker`).
    WorkerLost {
        /// How many workers were lost while running it.
        attempts: u32,
    },
    /// No worker has what it needs.
    Unsatisfiable {
        /// What is missing.
        reason: String,
    },
    /// It refers to a key the scheduler does not know.
    UnknownDependency(Key),
}

/// A worker as the scheduler describes it to clients.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkerInfo {
    /// Its number.
    pub id: WorkerId,
    /// Its name.
    pub name: String,
    /// Where peers fetch data from it.
    pub data_address: String,
    /// Task slots.
    pub threads: u32,
    /// Memory limit in bytes (0: none).
    pub memory_limit: u64,
    /// Bytes of results it holds, as of its last heartbeat.
    pub memory: u64,
    /// Its resources.
    pub resources: Resources,
}

/// Scheduler → client.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum FromScheduler {
    /// A task's result exists; `nbytes` is its size.
    Finished {
        /// The task.
        key: Key,
        /// Size of the result in bytes.
        nbytes: u64,
        /// A worker that holds it now (a gather fetches from it without
        /// asking where the result is).
        holder: Option<WorkerId>,
        /// The result itself, encoded, when it is small (see
        /// [`FinishedMsg::inline`]): the client then has it without a fetch.
        inline: Option<Vec<u8>>,
    },
    /// A task will have no result.
    Erred {
        /// The task.
        key: Key,
        /// Why.
        error: TaskErrorMsg,
    },
    /// Where results are: each key with the positions in `workers` of the
    /// workers that hold it (each worker described once, not once per key).
    WhoHas {
        /// The workers named in `holders`.
        workers: Vec<WorkerInfo>,
        /// Each key asked about, with its holders.
        holders: Vec<(Key, Vec<u32>)>,
    },
    /// The cluster.
    Info(Vec<WorkerInfo>),
    /// A task is ready but no connected worker may run it (its resources or
    /// worker restrictions); it stays queued until one joins.
    NoWorker {
        /// The task (or one that waits for it, held by this client).
        key: Key,
        /// What no worker offers, in words.
        reason: String,
    },
    /// The cluster restarted: every task the scheduler knew is gone.
    Restarted,
}

/// Where a dependency's result can be fetched.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DepLocation {
    /// The dependency.
    pub key: Key,
    /// Data addresses of workers that hold it (usually one: inline, no
    /// allocation).
    pub holders: SmallVec<[Arc<str>; 1]>,
    /// Its size in bytes.
    pub nbytes: u64,
    /// The result itself, encoded, when it is small enough to travel with
    /// the completion report ([`FinishedMsg::inline`]): the worker then
    /// needs no round trip to a holder.
    pub inline: Option<Vec<u8>>,
}

/// A task a worker is to run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ComputeMsg {
    /// Its id, to send back with its result.
    pub id: TaskId,
    /// Its key.
    pub key: Key,
    /// The registered name of its function.
    pub func: Arc<str>,
    /// Its arguments.
    pub args: Arc<[ArgMsg]>,
    /// Where its key arguments are (up to two inline: most tasks have few
    /// inputs, and the scheduler builds one of these per task it assigns).
    pub deps: SmallVec<[DepLocation; 2]>,
    /// Higher runs first.
    pub priority: i32,
}

/// A [`DepLocation`] borrowed from the scheduler's records.
#[derive(Clone, Debug, Serialize)]
pub struct DepRef<'a> {
    /// The dependency.
    pub key: &'a Key,
    /// Data addresses of workers that hold it.
    pub holders: SmallVec<[&'a str; 1]>,
    /// Its size in bytes.
    pub nbytes: u64,
    /// The result itself, if the scheduler has it (see [`DepLocation::inline`]).
    pub inline: Option<&'a [u8]>,
}

/// A [`ComputeMsg`] borrowed from the scheduler's records: handing out a
/// task then copies nothing and touches no reference count (an atomic
/// operation on a cold cache line per field, measured as half of the cost
/// of an assignment). It encodes to exactly the bytes of the owned message.
///
/// ```
/// use shoal_graph::{Key, Token};
/// use shoal_proto::{ArgsRef, ComputeRef, TaskId, encode_message};
///
/// let key = Key::scalar("inc", Token(1));
/// let task = ComputeRef { id: TaskId::new(0, 1), key: &key, func: "inc", args: ArgsRef::Given(&[]), deps: Default::default(), priority: 0 };
/// let (mut borrowed, mut owned) = (Vec::new(), Vec::new());
/// encode_message(&task, &mut borrowed).unwrap();
/// encode_message(&task.to_msg(), &mut owned).unwrap();
/// assert_eq!(borrowed, owned);
/// ```
#[derive(Clone, Debug)]
pub struct ComputeRef<'a> {
    /// Its id, to send back with its result.
    pub id: TaskId,
    /// Its key.
    pub key: &'a Key,
    /// The registered name of its function.
    pub func: &'a str,
    /// Its arguments.
    pub args: ArgsRef<'a>,
    /// Where its key arguments are.
    pub deps: SmallVec<[DepRef<'a>; 2]>,
    /// Higher runs first.
    pub priority: i32,
}

impl ComputeRef<'_> {
    /// The owned message (for tests and recordings; the network sends the
    /// borrowed one).
    pub fn to_msg(&self) -> ComputeMsg {
        ComputeMsg {
            id: self.id,
            key: self.key.clone(),
            func: self.func.into(),
            args: match self.args {
                ArgsRef::Given(args) => args.into(),
                ArgsRef::Deps => self.deps.iter().map(|d| ArgMsg::Key(d.key.clone())).collect(),
            },
            deps: self
                .deps
                .iter()
                .map(|d| DepLocation {
                    key: d.key.clone(),
                    holders: d.holders.iter().map(|&h| Arc::from(h)).collect(),
                    nbytes: d.nbytes,
                    inline: d.inline.map(<[u8]>::to_vec),
                })
                .collect(),
            priority: self.priority,
        }
    }
}

impl Serialize for ComputeRef<'_> {
    /// As the derived encoding of [`ComputeMsg`], field by field (a test
    /// pins the two equal).
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut s = serializer.serialize_struct("ComputeMsg", 6)?;
        s.serialize_field("id", &self.id)?;
        s.serialize_field("key", self.key)?;
        s.serialize_field("func", self.func)?;
        match self.args {
            ArgsRef::Given(args) => s.serialize_field("args", args)?,
            ArgsRef::Deps => s.serialize_field("args", &DepKeysAsArgs(&self.deps))?,
        }
        s.serialize_field("deps", &self.deps)?;
        s.serialize_field("priority", &self.priority)?;
        s.end()
    }
}

/// The arguments of a [`ComputeRef`].
#[derive(Clone, Copy, Debug)]
pub enum ArgsRef<'a> {
    /// As submitted.
    Given(&'a [ArgMsg]),
    /// Each of [`ComputeRef::deps`] is one argument, in order: the commonest
    /// arguments of a task graph, which the scheduler does not keep a
    /// second time (it knows the dependencies already).
    Deps,
}

/// Dependencies' keys, encoded as arguments (`ArgMsg::Key` each).
struct DepKeysAsArgs<'s, 'a>(&'s [DepRef<'a>]);

impl Serialize for DepKeysAsArgs<'_, '_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = serializer.serialize_seq(Some(self.0.len()))?;
        for dep in self.0 {
            seq.serialize_element(&KeyArg(dep.key))?;
        }
        seq.end()
    }
}

/// A key encoded as `ArgMsg::Key`.
struct KeyArg<'a>(&'a Key);

impl Serialize for KeyArg<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_newtype_variant("ArgMsg", 1, "Key", self.0)
    }
}

/// Scheduler → worker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ToWorker {
    /// Run these tasks.
    Compute(Vec<ComputeMsg>),
    /// Drop these results (and forget these tasks if queued).
    Release(Vec<Key>),
    /// Give these queued tasks back if they have not started.
    Steal(Vec<Key>),
    /// Stop.
    Shutdown,
    /// Drop every result and task and start afresh: a worker process
    /// supervised by a nanny exits to be replaced by a new one, any other
    /// worker clears its state and registers again.
    Restart,
}

/// A [`ToWorker::Release`] or [`ToWorker::Steal`] message borrowed from
/// the sender's buffer: it encodes exactly as the owned message, so a
/// scheduler can send its batches and keep their memory.
///
/// ```
/// use shoal_graph::{Key, Token};
/// use shoal_proto::{encode_message, KeysRef, ToWorker};
///
/// let keys = vec![Key::scalar("inc", Token(1)), Key::scalar("add", Token(2))];
/// for message in [KeysRef::Release(&keys), KeysRef::Steal(&keys)] {
///     let (mut borrowed, mut owned) = (Vec::new(), Vec::new());
///     encode_message(&message, &mut borrowed).unwrap();
///     encode_message(&message.to_msg(), &mut owned).unwrap();
///     assert_eq!(borrowed, owned);
/// }
/// ```
#[derive(Clone, Copy, Debug)]
pub enum KeysRef<'a> {
    /// As [`ToWorker::Release`].
    Release(&'a [Key]),
    /// As [`ToWorker::Steal`].
    Steal(&'a [Key]),
}

impl KeysRef<'_> {
    /// The owned message.
    pub fn to_msg(self) -> ToWorker {
        match self {
            KeysRef::Release(keys) => ToWorker::Release(keys.to_vec()),
            KeysRef::Steal(keys) => ToWorker::Steal(keys.to_vec()),
        }
    }
}

impl Serialize for KeysRef<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // Variant indices as in `ToWorker`; a test checks they agree.
        match self {
            KeysRef::Release(keys) => serializer.serialize_newtype_variant("ToWorker", 1, "Release", keys),
            KeysRef::Steal(keys) => serializer.serialize_newtype_variant("ToWorker", 2, "Steal", keys),
        }
    }
}

/// The largest result that travels inline ([`FinishedMsg::inline`]): a
/// worker configured for more sends at most this, and a scheduler keeps no
/// larger one, whatever it is sent.
pub const INLINE_LIMIT: usize = 64 * 1024;

/// How many bytes of inline results one message from the scheduler carries
/// at most (a compute message's inputs, or a client's batch of outcomes);
/// past it, the rest name their holders only and are fetched. Far below
/// the frame cap, however many tasks read one result.
pub const INLINE_MESSAGE_BUDGET: usize = 16 * 1024 * 1024;

/// A result a worker reports.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FinishedMsg {
    /// The task's id, as its [`ComputeMsg`] gave it.
    pub id: TaskId,
    /// The task.
    pub key: Key,
    /// Size of its result in bytes.
    pub nbytes: u64,
    /// How long it ran, in microseconds.
    pub duration_us: u64,
    /// The result, encoded, if it is small (a worker's `inline_max`): the
    /// scheduler hands it to the tasks that read it along with their
    /// compute messages, and to the clients that hold the task with the
    /// news that it finished. So a chain of small tasks across workers
    /// costs one round trip per link through the scheduler instead of that
    /// plus a fetch from the holder, and a client has a small result as
    /// soon as it hears of it. The holder keeps its copy as usual.
    pub inline: Option<Vec<u8>>,
}

/// The tasks a worker reports finished at once: up to two in place, so
/// that decoding a report allocates nothing, and neither does the
/// scheduler's dropping it (a worker reports once per turn of its event
/// loop, usually one or two tasks). A `Vec` here had cost the scheduler a
/// call to free per report, about 160 instructions (callgrind, the
/// simulator's DAG). On the wire it is a sequence, as a `Vec` is.
pub type FinishedList = SmallVec<[FinishedMsg; 2]>;

/// Worker → scheduler.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum FromWorker {
    /// The first message of a worker.
    Register(WorkerInfo),
    /// Tasks that finished.
    Finished(FinishedList),
    /// A task whose function failed after its retries.
    Failed {
        /// The task.
        key: Key,
        /// The message.
        message: String,
    },
    /// Answer to [`ToWorker::Steal`]: the tasks given back.
    Stolen(Vec<Key>),
    /// A task could not start: these inputs were at none of the listed
    /// holders. The worker dropped the task.
    MissingData {
        /// The task.
        key: Key,
        /// Inputs it could not fetch.
        missing: Vec<Key>,
    },
    /// Still alive; memory in use.
    Heartbeat {
        /// Bytes of results held.
        memory: u64,
    },
    /// The worker holds more than its memory limit allows (`true`) and takes
    /// no new tasks, or is back below it (`false`).
    Paused(bool),
}

/// Worker → worker (or client → worker): a request for data.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum PeerRequest {
    /// Send these results.
    Get(Vec<Key>),
    /// Keep these values (a client's scatter): one raw frame per key follows,
    /// in order, each the value encoded with postcard.
    Put(Vec<Key>),
    /// Run a registered function here, now, outside the task queue (a
    /// client's `run`): its encoded arguments, in order.
    Run {
        /// The registered name of the function.
        func: String,
        /// Its arguments, each encoded by the function's codec.
        args: Vec<Vec<u8>>,
    },
    /// Put these results in shared memory and say where (a fetcher on the
    /// same host): answered with [`PeerReply::Shared`]. Only asked on a
    /// loopback connection.
    Share(Vec<Key>),
    /// Keep these results where they are and say where they lie in your
    /// memory, for a fetcher on the same host to read directly
    /// (`process_vm_readv`): answered with [`PeerReply::Lent`]. Only asked on
    /// a loopback connection.
    Lend(Vec<Key>),
    /// The fetcher has read these loans (or given up): their memory may go.
    /// Not answered.
    Return(Vec<u64>),
    /// Call a method of an actor this worker holds (its creating task's
    /// key): answered with [`PeerReply::Called`]. Calls on one connection
    /// run in the order they come.
    ActorCall {
        /// The actor.
        actor: Key,
        /// The method's name.
        method: String,
        /// Its arguments, each encoded.
        args: Vec<Vec<u8>>,
    },
}

/// One result lent for a direct read: its encoded bytes are `head` followed
/// by the `len` bytes at address `addr` of the holder's memory, which stay
/// there until the loan is returned (or the connection closes).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Loan {
    /// The result.
    pub key: Key,
    /// What to return when done.
    pub id: u64,
    /// The first bytes of the encoding, sent inline (a length prefix).
    pub head: Vec<u8>,
    /// Where the rest starts in the holder's address space.
    pub addr: u64,
    /// How many bytes follow `head`.
    pub len: u64,
}

/// Worker → worker: data. Each value follows as one raw frame, in order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum PeerReply {
    /// The results that follow, with their sizes; keys not held are missing.
    Data {
        /// Keys in the order their frames follow.
        keys: Vec<Key>,
        /// Keys the worker does not hold.
        missing: Vec<Key>,
    },
    /// Answer to [`PeerRequest::Share`]: each result's encoded bytes are the
    /// whole of a file in the host's shared-memory directory, named here (a
    /// plain file name, never a path). No raw frames follow.
    Shared {
        /// The keys with the names of their files.
        files: Vec<(Key, String)>,
        /// Keys the worker does not hold (or could not share).
        missing: Vec<Key>,
    },
    /// Answer to [`PeerRequest::Lend`]. `identity` lies at `identity_addr`
    /// in the holder's memory: reading it back proves that `pid` names the
    /// holder in the fetcher's view too (not another process, as it could in
    /// another PID namespace).
    Lent {
        /// The holder's process id.
        pid: u32,
        /// Where the holder keeps its identity.
        identity_addr: u64,
        /// The holder's identity, random per process.
        identity: [u64; 2],
        /// The results lent.
        loans: Vec<Loan>,
        /// Keys the worker does not hold.
        missing: Vec<Key>,
    },
    /// Answer to [`PeerRequest::Put`]: the values are kept.
    Stored(Vec<Key>),
    /// Answer to [`PeerRequest::Run`]: on success the encoded result follows
    /// as one raw frame; on failure, why.
    Ran(Result<(), String>),
    /// Answer to [`PeerRequest::ActorCall`]: the encoded result, or why the
    /// call failed (the method's failure or panic, or no such actor here).
    Called(Result<Vec<u8>, String>),
}
