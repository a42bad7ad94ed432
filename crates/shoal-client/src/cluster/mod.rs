//! The cluster backend of a client: tasks go to a scheduler, results come
//! back from the workers that hold them.
//!
//! - `state`: the connection and what the client knows of its tasks.
//! - `ops`: submitting, scattering, running, restarting, gathering.
//! - `handle`: a future's reference to its task.

mod handle;
mod ops;
mod state;

pub(crate) use handle::ClusterHandle;
pub(crate) use ops::Outgoing;
pub(crate) use state::{ClusterState, Decoder};
