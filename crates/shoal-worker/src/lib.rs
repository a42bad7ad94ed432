//! The shoal worker as a state machine.
//!
//! [`Worker`] keeps the results this worker made (decoded, encoded only
//! when they must leave), spills the least recently used ones to disk past
//! its memory target, pauses past its threshold, and takes each task from
//! the scheduler's message to the executor: inputs found here, inline in
//! the message, or fetched from peers. Events come in through `on_*`
//! functions; what follows goes out through a [`WorkerComm`]: messages to
//! the scheduler, fetches from peers, tasks for the executor. No sockets,
//! no async, no clock inside: `shoal-net` wraps it in connections, tests
//! and simulations drive it with a [`RecordingComm`].
//!
//! [`Pool`] is the executor of a real worker (the shoal-local thread pool);
//! [`MemoryGate`] is what its threads check before each task.
//!
//! ```
//! use shoal_graph::{Key, Token};
//! use shoal_proto::{ArgMsg, ComputeMsg, FromWorker, TaskId, ToWorker};
//! use shoal_worker::{RecordingComm, Worker, WorkerConfig};
//!
//! #[shoal::remote]
//! fn double(x: u64) -> u64 { 2 * x }
//!
//! let config = WorkerConfig::new(([127, 0, 0, 1], 8786).into(), "w");
//! let mut worker = Worker::new(&config, std::process::id());
//! let mut comm = RecordingComm::default();
//! let func = shoal::remote::require(&format!("{}::double", module_path!()))?;
//! let key = Key::scalar("double", Token(1));
//! let task = ComputeMsg {
//!     id: TaskId::new(0, 0),
//!     key: key.clone(),
//!     func: func.name().into(),
//!     args: vec![ArgMsg::Value(func.encode_arg(0, &21u64)?)].into(),
//!     deps: Default::default(),
//!     priority: 0,
//! };
//! worker.on_message(ToWorker::Compute(vec![task]), 0, &mut comm);
//! assert!(comm.run(&key));                       // a thread of the executor runs it
//! worker.on_tasks_done([key.clone()], 7, &mut comm);
//! let [FromWorker::Finished(done)] = &comm.sent[..] else { panic!("{:?}", comm.sent) };
//! assert_eq!((done[0].nbytes, done[0].duration_us), (1, 7)); // 42 is one byte in postcard
//! assert!(worker.holds(&key));
//! # Ok::<(), shoal::remote::RemoteError>(())
//! ```

mod comm;
mod config;
mod memory;
mod pool;
mod state;
mod store;

pub use comm::{RecordingComm, Runnable, TaskOutcome, WorkerComm};
pub use config::{DEFAULT_INLINE_MAX, SameHostTransfer, WorkerConfig};
pub use memory::MemoryGate;
pub use pool::Pool;
pub use state::{Control, Worker, inline_input};
pub use store::{Payload, StoreError, spill_directory};
