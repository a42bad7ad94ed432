//! How the scheduler speaks: a small trait the I/O shell implements, and a
//! recording implementation for tests and the simulator.

use shoal_proto::{ClientId, FromScheduler, KeysRef, ToWorker, WorkerId};

use crate::assigned::Assigned;

/// Where the scheduler's messages go. The network shell sends them; tests
/// record them.
pub trait Comm {
    /// Sends a message to a worker.
    fn to_worker(&mut self, worker: WorkerId, msg: ToWorker);
    /// Sends tasks to a worker: a [`ToWorker::Compute`] message, borrowed
    /// from the scheduler's records ([`Assigned`] encodes as one).
    fn compute(&mut self, worker: WorkerId, tasks: &Assigned<'_>);
    /// Sends a [`ToWorker::Release`] or [`ToWorker::Steal`] message,
    /// borrowed from the scheduler's batch (which it keeps for the next
    /// event).
    fn keys(&mut self, worker: WorkerId, msg: KeysRef<'_>) {
        self.to_worker(worker, msg.to_msg());
    }
    /// Sends messages to a client (one batch per event).
    fn to_client(&mut self, client: ClientId, msgs: Vec<FromScheduler>);
}

/// A [`Comm`] that keeps every message, in order.
#[derive(Default, Debug)]
pub struct RecordingComm {
    /// Messages to workers.
    pub workers: Vec<(WorkerId, ToWorker)>,
    /// Messages to clients.
    pub clients: Vec<(ClientId, FromScheduler)>,
}

impl Comm for RecordingComm {
    fn to_worker(&mut self, worker: WorkerId, msg: ToWorker) {
        self.workers.push((worker, msg));
    }

    fn compute(&mut self, worker: WorkerId, tasks: &Assigned<'_>) {
        self.workers.push((worker, ToWorker::Compute(tasks.to_msgs())));
    }

    fn to_client(&mut self, client: ClientId, msgs: Vec<FromScheduler>) {
        self.clients.extend(msgs.into_iter().map(|m| (client, m)));
    }
}

impl RecordingComm {
    /// Takes everything recorded so far.
    pub fn take(&mut self) -> RecordingComm {
        std::mem::take(self)
    }
}
