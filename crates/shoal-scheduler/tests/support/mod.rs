//! The harness the scheduler's integration tests share: the scheduler
//! driven through a recording `Comm`, with names for keys and workers.
//!
//! Each test file is its own crate and uses only part of this, hence the
//! `dead_code` allowance.
#![allow(dead_code)]

use std::collections::HashMap;

use shoal_graph::{Key, Token};
use shoal_proto::{
    ArgMsg, ClientId, FinishedMsg, FromScheduler, FromWorker, TaskId, TaskMsg, ToScheduler, ToWorker, WorkerId,
    WorkerInfo,
};
use shoal_scheduler::{RecordingComm, Scheduler, SchedulerConfig};

/// The key named `name` (its token derived from the name).
pub(crate) fn key(name: &str) -> Key {
    Key::scalar(name, Token(name.bytes().fold(7u128, |a, b| a * 31 + u128::from(b))))
}

/// A held task `name` of function `f` whose arguments are the keys `deps`.
pub(crate) fn task(name: &str, deps: &[&str]) -> TaskMsg {
    TaskMsg {
        key: key(name),
        func: "f".into(),
        args: deps.iter().map(|d| ArgMsg::Key(key(d))).collect(),
        priority: 0,
        retries: 0,
        resources: vec![],
        workers: vec![],
        held: true,
    }
}

/// A worker as it registers (the scheduler assigns the real id).
pub(crate) fn worker_info(name: &str, threads: u32, resources: &[(&str, f64)]) -> WorkerInfo {
    WorkerInfo {
        id: WorkerId(99),
        name: name.into(),
        data_address: format!("tcp://{name}:1"),
        threads,
        memory_limit: 0,
        memory: 0,
        resources: resources.iter().map(|(n, a)| (n.to_string(), *a)).collect(),
    }
}

/// A scheduler with one client, checked after every event.
pub(crate) struct Env {
    pub(crate) s: Scheduler,
    pub(crate) comm: RecordingComm,
    pub(crate) client: ClientId,
    /// The id each task was last sent to a worker with, as a worker keeps it.
    pub(crate) ids: HashMap<String, TaskId>,
}

impl Env {
    pub(crate) fn new() -> Env {
        Env::with(SchedulerConfig::default())
    }

    pub(crate) fn with(config: SchedulerConfig) -> Env {
        let mut s = Scheduler::new(config);
        let client = s.on_client_connected();
        Env { s, comm: RecordingComm::default(), client, ids: HashMap::new() }
    }

    /// A worker with `threads` slots and no resources.
    pub(crate) fn worker(&mut self, name: &str, threads: u32) -> WorkerId {
        self.s.on_worker_registered(worker_info(name, threads, &[]), 0, &mut self.comm)
    }

    /// A one-thread worker offering `resources`.
    pub(crate) fn worker_with(&mut self, name: &str, resources: &[(&str, f64)]) -> WorkerId {
        self.s.on_worker_registered(worker_info(name, 1, resources), 0, &mut self.comm)
    }

    pub(crate) fn send(&mut self, msg: ToScheduler) {
        let c = self.client;
        self.s.on_client_message(c, msg, &mut self.comm);
        self.s.check_invariants();
    }

    pub(crate) fn submit(&mut self, tasks: Vec<TaskMsg>) {
        self.send(ToScheduler::Submit(tasks));
    }

    pub(crate) fn worker_says(&mut self, w: WorkerId, msg: FromWorker) {
        self.s.on_worker_message(w, msg, 1, &mut self.comm);
        self.s.check_invariants();
    }

    /// A worker's report that a task it was sent is done, after `duration_us`.
    pub(crate) fn report(&self, name: &str, nbytes: u64, duration_us: u64) -> FinishedMsg {
        FinishedMsg { id: self.ids[name], key: key(name), nbytes, duration_us, inline: None }
    }

    /// The same report, taking 1 µs.
    pub(crate) fn done(&self, name: &str, nbytes: u64) -> FinishedMsg {
        self.report(name, nbytes, 1)
    }

    /// Worker `w` finishes `name` after 10 µs.
    pub(crate) fn finish(&mut self, w: WorkerId, name: &str, nbytes: u64) {
        let msg = FromWorker::Finished(vec![self.report(name, nbytes, 10)].into());
        self.worker_says(w, msg);
    }

    /// Keys sent to each worker to compute since the last call (other
    /// messages to workers are dropped; messages to clients stay).
    pub(crate) fn computed(&mut self) -> Vec<(WorkerId, Vec<String>)> {
        std::mem::take(&mut self.comm.workers)
            .into_iter()
            .filter_map(|(w, m)| match m {
                ToWorker::Compute(tasks) => {
                    for t in &tasks {
                        self.ids.insert(t.key.prefix().to_string(), t.id);
                    }
                    Some((w, tasks.iter().map(|t| t.key.prefix().to_string()).collect()))
                }
                _ => None,
            })
            .collect()
    }

    pub(crate) fn client_msgs(&mut self) -> Vec<FromScheduler> {
        std::mem::take(&mut self.comm.clients).into_iter().map(|(_, m)| m).collect()
    }
}
