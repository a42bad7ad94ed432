//! The I/O shells of shoal: sockets and timers around the pure state
//! machines.
//!
//! [`start_scheduler`] runs the [`shoal_scheduler::Scheduler`] behind a TCP
//! listener, [`start_worker`] the [`shoal_worker::Worker`] behind its
//! scheduler connection and its data server: every connection starts with
//! the handshake of `shoal_proto` (protocol version and cluster token), then
//! carries length-delimited frames. Messages to one peer produced by one
//! event go out as one frame, and frames queued for a peer go out in one
//! write. [`ClientConnection`] is a client's end.

mod address;
mod client;
mod conn;
mod memory;
mod recycle;
mod scheduler;
mod worker;

pub use address::{ResolveError, resolve};
pub use client::{ActorCallMsg, ActorConnection, ClientConnection, ClientError, OnMessages, process_token};
pub use memory::resident_bytes;
pub use scheduler::{
    Membership, RunningScheduler, SHUTDOWN_GRACE, SchedulerServerConfig, ServerError, start_scheduler,
};
pub use worker::{RunningWorker, WorkerError, WorkerExit, remove_shared_files_of, route_to, start_worker};
