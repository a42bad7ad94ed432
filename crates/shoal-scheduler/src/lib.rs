//! The shoal scheduler as a pure state machine.
//!
//! [`Scheduler`] holds metadata only — which tasks exist, what they need,
//! where results are and how big they are — and decides where each task runs.
//! Events come in through `on_*` functions; messages go out through a
//! [`Comm`]. No sockets, threads or clocks inside: the network shell, the unit
//! tests and the [`sim`] simulator drive the same code.
//!
//! Placement follows principle 3 of the design: a task goes where most of its
//! input bytes already are, weighed against how much work each worker has
//! queued (durations learned per task group). Root tasks (no inputs) are
//! queued and handed out as workers have room, so workers are never flooded;
//! idle workers get work back from busy ones by stealing.
//!
//! # Costs
//!
//! A task costs the scheduler a few microseconds over its whole life, most
//! of it in cache misses on a million task records. So: inside, a task is a
//! slot number, and keys are hashed only where they come in (a key index of
//! 8-byte entries); workers report completions under the [`TaskId`] they
//! were sent (slot and generation), so a report finds its record directly.
//! Which worker runs or holds what is a dense array beside the records,
//! scanned when a worker dies rather than kept in per-worker sets; loads are
//! a tournament tree; ready tasks wait in FIFOs per priority; messages are
//! batched per peer without hashing; and no step allocates per task but the
//! messages themselves. `shoal bench scheduler-sim` measures it.
//!
//! [`TaskId`]: shoal_proto::TaskId
//!
//! ```
//! use shoal_graph::{Key, Token};
//! use shoal_proto::{FromScheduler, FromWorker, FinishedMsg, TaskMsg, ToScheduler, ToWorker, WorkerId, WorkerInfo};
//! use shoal_scheduler::{RecordingComm, Scheduler, SchedulerConfig, TaskState};
//!
//! let mut s = Scheduler::new(SchedulerConfig::default());
//! let mut comm = RecordingComm::default();
//! let info = WorkerInfo { id: WorkerId(0), name: "w".into(), data_address: "tcp://127.0.0.1:1".into(),
//!                         threads: 1, memory_limit: 0, memory: 0, resources: vec![] };
//! let w = s.on_worker_registered(info, 0, &mut comm);
//! let client = s.on_client_connected();
//! let key = Key::scalar("inc", Token(1));
//! let task = TaskMsg { key: key.clone(), func: "inc".into(), args: Default::default(), priority: 0, retries: 0,
//!                      resources: vec![], workers: vec![], held: true };
//! s.on_client_message(client, ToScheduler::Submit(vec![task]), &mut comm);
//! let ToWorker::Compute(sent) = &comm.workers[0].1 else { panic!("expected a compute message") };
//! // The worker reports the task under the id it was sent with.
//! let done = FinishedMsg { id: sent[0].id, key: key.clone(), nbytes: 8, duration_us: 3, inline: None };
//! s.on_worker_message(w, FromWorker::Finished(vec![done].into()), 1, &mut comm);
//! assert_eq!(s.task_state(&key), Some(TaskState::Memory));
//! assert_eq!(comm.clients[0].1, FromScheduler::Finished { key, nbytes: 8, holder: Some(w), inline: None });
//! ```

mod assigned;
mod comm;
mod idlist;
mod ids;
mod index;
mod load;
mod outbox;
mod queue;
mod scheduler;
mod segmented;
pub mod sim;
mod spill;
mod table;
mod task;

pub use assigned::Assigned;
pub use comm::{Comm, RecordingComm};
pub use scheduler::{Scheduler, SchedulerConfig, SchedulerStats};
pub use task::TaskState;
