//! The scheduler state machine and real worker state machines, driven
//! together by a deterministic simulation: messages are delivered, inputs
//! fetched from the holder's store and tasks run in an order a seeded
//! generator picks, with no threads, sockets or clock. Random graphs come
//! out as a sequential evaluation says, also when a worker is lost half-way.

use std::collections::HashMap;

use shoal_graph::remote::{RemoteFunc, require};
use shoal_graph::{Key, Token};
use shoal_proto::{ArgMsg, ClientId, FromScheduler, TaskMsg, ToScheduler, WorkerId, WorkerInfo};
use shoal_scheduler::{RecordingComm as SchedulerComm, Scheduler, SchedulerConfig};
use shoal_worker::{RecordingComm, Worker, WorkerConfig};

#[shoal::remote]
fn add(a: u64, b: u64) -> u64 {
    a.wrapping_add(b)
}

#[shoal::remote]
fn total(values: Vec<u64>) -> u64 {
    values.iter().fold(0, |a, b| a.wrapping_add(*b))
}

fn func(name: &str) -> &'static RemoteFunc {
    require(&format!("{}::{name}", module_path!())).expect("registered")
}

/// xorshift64*: enough randomness for choosing, the same for a seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n.max(1)
    }
}

/// A random graph: leaves of `add` on literals, then `add`s of two earlier
/// tasks or a literal, and `total`s of a few earlier tasks. The tasks and
/// each one's value, evaluated in order.
fn random_graph(rng: &mut Rng, n: usize) -> (Vec<TaskMsg>, Vec<u64>) {
    let mut tasks = Vec::new();
    let mut values: Vec<u64> = Vec::new();
    for i in 0..n {
        let key = Key::new("sim", Token(i as u128), vec![i as u32]);
        let (f, args, value) = if i < 4 || rng.below(4) == 0 {
            let (a, b) = (rng.below(1000) as u64, rng.below(1000) as u64);
            let args = vec![ArgMsg::Value(enc("add", 0, a)), ArgMsg::Value(enc("add", 1, b))];
            ("add", args, a + b)
        } else if rng.below(3) == 0 {
            let picks: Vec<usize> = (0..1 + rng.below(4)).map(|_| rng.below(i)).collect();
            let list = ArgMsg::List(picks.iter().map(|&p| tasks_key(&tasks, p)).collect());
            ("total", vec![list], picks.iter().fold(0u64, |s, &p| s.wrapping_add(values[p])))
        } else {
            let p = rng.below(i);
            let second = if rng.below(2) == 0 {
                let q = rng.below(i);
                (ArgMsg::Key(tasks_key(&tasks, q)), values[q])
            } else {
                let b = rng.below(1000) as u64;
                (ArgMsg::Value(enc("add", 1, b)), b)
            };
            ("add", vec![ArgMsg::Key(tasks_key(&tasks, p)), second.0], values[p].wrapping_add(second.1))
        };
        tasks.push(TaskMsg {
            key,
            func: func(f).name().into(),
            args: args.into_iter().collect(),
            priority: 0,
            retries: 0,
            resources: vec![],
            workers: vec![],
            held: true,
        });
        values.push(value);
    }
    (tasks, values)
}

fn tasks_key(tasks: &[TaskMsg], i: usize) -> Key {
    tasks[i].key.clone()
}

fn enc(f: &str, position: usize, x: u64) -> Vec<u8> {
    func(f).encode_arg(position, &x).expect("encodes")
}

struct SimWorker {
    id: WorkerId,
    address: String,
    state: Worker<u64>,
    comm: RecordingComm,
}

struct Sim {
    scheduler: Scheduler,
    comm: SchedulerComm,
    client: ClientId,
    workers: Vec<SimWorker>,
    rng: Rng,
    now: u64,
    /// What the client heard of each key.
    outcomes: HashMap<Key, FromScheduler>,
}

impl Sim {
    fn new(seed: u64, workers: usize) -> Sim {
        let mut scheduler = Scheduler::new(SchedulerConfig::default());
        let mut comm = SchedulerComm::default();
        let mut sim_workers = Vec::new();
        for i in 0..workers {
            let address = format!("tcp://sim-{i}:1");
            let config = WorkerConfig { threads: 2, ..WorkerConfig::new(([127, 0, 0, 1], 1).into(), format!("w{i}")) };
            let info = WorkerInfo {
                id: WorkerId(0),
                name: config.name.clone(),
                data_address: address.clone(),
                threads: 2,
                memory_limit: 0,
                memory: 0,
                resources: vec![],
            };
            let id = scheduler.on_worker_registered(info, 0, &mut comm);
            sim_workers.push(SimWorker {
                id,
                address,
                state: Worker::new(&config, std::process::id()),
                comm: RecordingComm::default(),
            });
        }
        let client = scheduler.on_client_connected();
        Sim { scheduler, comm, client, workers: sim_workers, rng: Rng(seed | 1), now: 0, outcomes: HashMap::new() }
    }

    /// Delivers what the scheduler sent, and hands its clients' news to
    /// `outcomes`.
    fn deliver_from_scheduler(&mut self) {
        let sent = self.comm.take();
        for (worker, msg) in sent.workers {
            if let Some(w) = self.workers.iter_mut().find(|w| w.id == worker) {
                w.state.on_message(msg, self.now, &mut w.comm);
            }
        }
        for (_, msg) in sent.clients {
            match &msg {
                FromScheduler::Finished { key, .. } | FromScheduler::Erred { key, .. } => {
                    self.outcomes.insert(key.clone(), msg);
                }
                _ => {}
            }
        }
    }

    /// One step: a worker chosen at random answers its fetches, runs one
    /// task of its queue, and its messages go to the scheduler.
    fn step(&mut self) {
        self.now += 10;
        let w = self.rng.below(self.workers.len());
        for dep in self.workers[w].comm.take_fetches() {
            let data = dep.holders.iter().find_map(|h| {
                let holder = self.workers.iter_mut().find(|x| *x.address == **h)?;
                holder.state.encoded(&dep.key)?.ok()
            });
            let SimWorker { state, comm, .. } = &mut self.workers[w];
            state.on_peer_data(&dep.key, data, self.now, comm);
        }
        let queued = self.workers[w].comm.queued();
        if !queued.is_empty() {
            let key = queued[self.rng.below(queued.len())].clone();
            let SimWorker { state, comm, .. } = &mut self.workers[w];
            assert!(comm.run(&key));
            state.on_tasks_done([key], self.now, comm);
        }
        let id = self.workers[w].id;
        for msg in self.workers[w].comm.take_sent() {
            self.scheduler.on_worker_message(id, msg, self.now, &mut self.comm);
        }
        self.deliver_from_scheduler();
    }

    fn lose_worker(&mut self, index: usize) {
        let lost = self.workers.remove(index);
        self.scheduler.on_worker_lost(lost.id, &mut self.comm);
        self.deliver_from_scheduler();
    }

    /// The value the client would get for `key`.
    fn value(&mut self, key: &Key) -> u64 {
        let Some(FromScheduler::Finished { inline, holder, .. }) = self.outcomes.get(key).cloned() else {
            panic!("{key} did not finish: {:?}", self.outcomes.get(key));
        };
        let bytes = match inline {
            Some(bytes) => bytes,
            None => {
                let holder = holder.expect("a holder");
                let w = self.workers.iter_mut().find(|w| w.id == holder).expect("the holder is a live worker");
                w.state.encoded(key).expect("held").expect("encodes").to_vec()
            }
        };
        func("add").decode_result(&bytes).expect("decodes")
    }
}

fn run(seed: u64, n: usize, lose_at: Option<usize>) -> (Vec<u64>, usize) {
    let mut sim = Sim::new(seed, 3);
    let (tasks, expected) = random_graph(&mut Rng(seed), n);
    let keys: Vec<Key> = tasks.iter().map(|t| t.key.clone()).collect();
    sim.scheduler.on_client_message(sim.client, ToScheduler::Submit(tasks), &mut sim.comm);
    sim.deliver_from_scheduler();
    let mut steps = 0;
    while !keys.iter().all(|k| sim.outcomes.contains_key(k)) {
        if Some(steps) == lose_at {
            sim.lose_worker(0);
        }
        sim.step();
        steps += 1;
        assert!(steps < 200 * n, "no progress after {steps} steps");
    }
    let got = keys.iter().map(|k| sim.value(k)).collect();
    assert_eq!(got, expected, "seed {seed}");
    (got, steps)
}

#[test]
fn random_graphs_come_out_as_a_sequential_evaluation() {
    for seed in 1..=20 {
        run(seed, 60, None);
    }
}

#[test]
fn the_simulation_is_deterministic() {
    assert_eq!(run(7, 80, None), run(7, 80, None));
}

#[test]
fn a_worker_lost_half_way_costs_recomputation_not_results() {
    for seed in 1..=10 {
        run(seed, 60, Some(30));
    }
}

#[test]
fn workers_tell_the_scheduler_about_failures_and_it_tells_the_client() {
    let mut sim = Sim::new(3, 2);
    let key = Key::scalar("bad", Token(9));
    let task = TaskMsg {
        key: key.clone(),
        func: func("add").name().into(),
        // One argument of two: decoding fails on the worker.
        args: vec![ArgMsg::Value(vec![0xff; 11])].into_iter().collect(),
        priority: 0,
        retries: 0,
        resources: vec![],
        workers: vec![],
        held: true,
    };
    sim.scheduler.on_client_message(sim.client, ToScheduler::Submit(vec![task]), &mut sim.comm);
    sim.deliver_from_scheduler();
    for _ in 0..10 {
        sim.step();
    }
    assert!(matches!(sim.outcomes.get(&key), Some(FromScheduler::Erred { .. })), "{:?}", sim.outcomes.get(&key));
}
