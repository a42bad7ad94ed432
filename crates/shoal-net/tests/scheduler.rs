//! A live scheduler over real loopback TCP, with peers written against the
//! raw protocol.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, Once};
use std::time::Duration;

use proptest::prelude::*;
use serde::Serialize;
use serde::de::DeserializeOwned;
use shoal_graph::{Key, Token};
use shoal_net::{RunningScheduler, SchedulerServerConfig, start_scheduler};
use shoal_proto::{
    ArgMsg, FinishedMsg, FrameDecoder, FromScheduler, FromWorker, Hello, HelloReply, Role, ScatteredMsg, TaskId,
    TaskMsg, ToScheduler, ToWorker, WorkerId, WorkerInfo, encode_message,
};

struct Peer {
    stream: TcpStream,
    decoder: FrameDecoder,
}

impl Peer {
    fn open(addr: SocketAddr) -> Peer {
        let stream = TcpStream::connect(addr).expect("connects");
        stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        Peer { stream, decoder: FrameDecoder::default() }
    }

    fn send<T: Serialize>(&mut self, msg: &T) {
        let mut frame = Vec::new();
        encode_message(msg, &mut frame).expect("encodes");
        self.stream.write_all(&frame).expect("writes");
    }

    fn recv<T: DeserializeOwned>(&mut self) -> T {
        let mut buf = [0u8; 65536];
        loop {
            if let Some(frame) = self.decoder.next_frame().expect("valid frames") {
                return shoal_proto::decode_message(&frame.body).expect("a message of the expected type");
            }
            let n = self.stream.read(&mut buf).expect("reads before the timeout");
            assert!(n > 0, "the scheduler closed the connection");
            self.decoder.push(&buf[..n]);
        }
    }

    fn client(addr: SocketAddr, token: Option<&str>) -> (Peer, HelloReply) {
        let mut p = Peer::open(addr);
        p.send(&Hello::new(Role::Client, "test-client", token));
        let reply = p.recv();
        (p, reply)
    }

    fn worker(addr: SocketAddr, name: &str) -> (Peer, u32) {
        let mut p = Peer::open(addr);
        p.send(&Hello::new(Role::Worker, name, None));
        p.send(&FromWorker::Register(WorkerInfo {
            id: WorkerId(0),
            name: name.into(),
            data_address: format!("tcp://127.0.0.1:9/{name}"),
            threads: 1,
            memory_limit: 0,
            memory: 0,
            resources: vec![],
        }));
        match p.recv() {
            HelloReply::Welcome { id, .. } => (p, id),
            HelloReply::Rejected { reason } => panic!("worker rejected: {reason}"),
        }
    }
}

fn scheduler(token: Option<&str>) -> RunningScheduler {
    start_scheduler(SchedulerServerConfig { token: token.map(str::to_string), ..SchedulerServerConfig::default() })
        .expect("scheduler starts")
}

fn task(i: u128) -> TaskMsg {
    TaskMsg {
        key: Key::scalar("inc", Token(i)),
        func: "inc".into(),
        args: Default::default(),
        priority: 0,
        retries: 0,
        resources: vec![],
        workers: vec![],
        held: true,
    }
}

/// One task from a client, through the scheduler, to a worker and back.
fn round_trip(addr: SocketAddr, client: &mut Peer, worker: &mut Peer, i: u128) {
    round_trip_of(addr, client, worker, task(i));
}

/// [`round_trip`] of a task that only the worker named `on` may run.
fn pinned_round_trip(addr: SocketAddr, client: &mut Peer, worker: &mut Peer, i: u128, on: &str) {
    round_trip_of(addr, client, worker, TaskMsg { workers: vec![on.into()], ..task(i) });
}

fn round_trip_of(addr: SocketAddr, client: &mut Peer, worker: &mut Peer, sent: TaskMsg) {
    let key = sent.key.clone();
    client.send(&ToScheduler::Submit(vec![sent]));
    // A worker may also be told to drop results it does not have (a
    // client's scatter can name any worker): those are not the work.
    let tasks = loop {
        match worker.recv::<ToWorker>() {
            ToWorker::Compute(tasks) => break tasks,
            ToWorker::Release(_) => {}
            other => panic!("expected work, got {other:?}"),
        }
    };
    assert_eq!(tasks[0].key, key);
    let id = tasks[0].id;
    worker.send(&FromWorker::Finished(
        vec![FinishedMsg { id, key: key.clone(), nbytes: 8, duration_us: 1, inline: None }].into(),
    ));
    let msgs: Vec<FromScheduler> = client.recv();
    assert!(
        matches!(&msgs[..], [FromScheduler::Finished { key: k, nbytes: 8, holder: Some(_), .. }] if *k == key),
        "via {addr}: {msgs:?}"
    );
}

#[test]
fn a_task_goes_from_client_to_worker_and_back_over_tcp() {
    let s = scheduler(None);
    let (mut worker, _) = Peer::worker(s.address(), "w0");
    let (mut client, reply) = Peer::client(s.address(), None);
    assert!(matches!(reply, HelloReply::Welcome { .. }));
    round_trip(s.address(), &mut client, &mut worker, 1);
    client.send(&ToScheduler::Info);
    let info: Vec<FromScheduler> = client.recv();
    let [FromScheduler::Info(workers)] = info.as_slice() else { panic!("expected info, got {info:?}") };
    assert_eq!(workers.len(), 1);
    assert_eq!(workers[0].name, "w0");
    s.stop();
}

#[test]
fn the_cluster_token_is_required_when_set() {
    let s = scheduler(Some("s3cret"));
    let (_, missing) = Peer::client(s.address(), None);
    assert!(matches!(missing, HelloReply::Rejected { ref reason } if reason.contains("missing")), "{missing:?}");
    let (_, wrong) = Peer::client(s.address(), Some("guess"));
    assert!(matches!(wrong, HelloReply::Rejected { ref reason } if reason.contains("wrong")), "{wrong:?}");
    let (_, right) = Peer::client(s.address(), Some("s3cret"));
    assert!(matches!(right, HelloReply::Welcome { .. }));
}

#[test]
fn a_lost_worker_connection_moves_its_task_to_another_worker() {
    let s = scheduler(None);
    let (mut w0, _) = Peer::worker(s.address(), "w0");
    let (mut client, _) = Peer::client(s.address(), None);
    client.send(&ToScheduler::Submit(vec![task(5)]));
    let _ = w0.recv::<ToWorker>();
    let (mut w1, _) = Peer::worker(s.address(), "w1");
    drop(w0);
    let ToWorker::Compute(tasks) = w1.recv::<ToWorker>() else { panic!("expected the task again") };
    assert_eq!(tasks[0].key, task(5).key);
}

fn garbage() -> impl Strategy<Value = Vec<u8>> {
    let good_hello = {
        let mut f = Vec::new();
        encode_message(&Hello::new(Role::Client, "x", None), &mut f).expect("encodes");
        f
    };
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..200),
        // A valid hello, then garbage.
        proptest::collection::vec(any::<u8>(), 1..200).prop_map(move |tail| [good_hello.clone(), tail].concat()),
        // A huge declared length.
        any::<[u8; 1]>().prop_map(|k| vec![0xff, 0xff, 0xff, 0x7f, k[0], 1, 2, 3]),
        // A truncated valid frame.
        (1usize..20).prop_map(|cut| {
            let mut f = Vec::new();
            encode_message(&Hello::new(Role::Worker, "truncated", None), &mut f).expect("encodes");
            f.truncate(cut.min(f.len() - 1));
            f
        }),
    ]
}

/// Held by the tests that count panics, so that one's scheduler panicking
/// is not counted against another's.
static COUNTING: Mutex<()> = Mutex::new(());

/// Panics on a scheduler's thread since the process started: tokio
/// swallows a panicking connection task, and a panicking core stops
/// answering, so a test must look for it.
fn scheduler_panics() -> usize {
    static PANICS: AtomicUsize = AtomicUsize::new(0);
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if std::thread::current().name() == Some("shoal-scheduler") {
                PANICS.fetch_add(1, Ordering::SeqCst);
            }
            previous(info);
        }));
    });
    PANICS.load(Ordering::SeqCst)
}

/// Keys of hostile traffic: a few, so that messages name each other's
/// tasks; never the keys of the well-behaved client.
fn evil_key() -> impl Strategy<Value = Key> {
    (0u128..6).prop_map(|i| Key::scalar("evil", Token(i)))
}

/// Well-formed tasks with hostile content: unknown or cyclic-looking
/// dependencies, repeated keys, resources no worker has. They may only run
/// on the hostile worker, so the well-behaved worker sees none of them.
fn evil_task() -> impl Strategy<Value = TaskMsg> {
    (evil_key(), proptest::collection::vec(evil_key(), 0..3), any::<bool>(), any::<i32>(), 0u32..3, any::<bool>())
        .prop_map(|(key, deps, held, priority, retries, gpu)| TaskMsg {
            key,
            func: "evil".into(),
            args: deps.into_iter().map(ArgMsg::Key).collect(),
            priority,
            retries,
            resources: if gpu { vec![("gpu".into(), 1.0)] } else { vec![] },
            workers: vec!["evil-worker".into()],
            held,
        })
}

/// A message from a hostile peer.
#[derive(Debug, Clone)]
enum Hostile {
    Client(ToScheduler),
    Worker(FromWorker),
}

fn hostile_message() -> impl Strategy<Value = Hostile> {
    let keys = || proptest::collection::vec(evil_key(), 0..4);
    let inline = proptest::option::of(proptest::collection::vec(any::<u8>(), 0..64));
    let finished = (0u32..40, 0u32..3, evil_key(), any::<u64>(), any::<u64>(), inline).prop_map(
        |(slot, generation, key, nbytes, duration_us, inline)| FinishedMsg {
            id: TaskId::new(slot, generation),
            key,
            nbytes,
            duration_us,
            inline,
        },
    );
    prop_oneof![
        proptest::collection::vec(evil_task(), 0..4).prop_map(|t| Hostile::Client(ToScheduler::Submit(t))),
        keys().prop_map(|k| Hostile::Client(ToScheduler::Release(k))),
        keys().prop_map(|k| Hostile::Client(ToScheduler::Cancel(k))),
        keys().prop_map(|k| Hostile::Client(ToScheduler::WhoHas(k))),
        keys().prop_map(|k| Hostile::Client(ToScheduler::FireAndForget(k))),
        Just(Hostile::Client(ToScheduler::Info)),
        proptest::collection::vec((evil_key(), 0u32..3, any::<u64>()), 0..3).prop_map(|items| {
            let items = items.into_iter().map(|(key, w, nbytes)| ScatteredMsg { key, worker: WorkerId(w), nbytes });
            Hostile::Client(ToScheduler::Scatter(items.collect()))
        }),
        proptest::collection::vec(finished, 0..4).prop_map(|f| Hostile::Worker(FromWorker::Finished(f.into()))),
        evil_key().prop_map(|key| Hostile::Worker(FromWorker::Failed { key, message: "no".into() })),
        (evil_key(), keys()).prop_map(|(key, missing)| Hostile::Worker(FromWorker::MissingData { key, missing })),
        keys().prop_map(|k| Hostile::Worker(FromWorker::Stolen(k))),
        any::<u64>().prop_map(|memory| Hostile::Worker(FromWorker::Heartbeat { memory })),
        any::<bool>().prop_map(|p| Hostile::Worker(FromWorker::Paused(p))),
    ]
}

/// A scheduler with a well-behaved worker and client that have done one
/// round trip: the bystanders of a fuzz test. It holds [`COUNTING`] while
/// it lives and remembers how many panics there were before it.
struct Bystanders {
    panics: usize,
    scheduler: RunningScheduler,
    worker: Peer,
    client: Peer,
    /// Last, so that it is released after the scheduler has stopped.
    _counting: MutexGuard<'static, ()>,
}

impl Bystanders {
    fn new() -> Bystanders {
        let counting = COUNTING.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let panics = scheduler_panics();
        let scheduler = scheduler(None);
        let (mut worker, _) = Peer::worker(scheduler.address(), "steady");
        let (mut client, _) = Peer::client(scheduler.address(), None);
        round_trip(scheduler.address(), &mut client, &mut worker, 1);
        Bystanders { panics, scheduler, worker, client, _counting: counting }
    }

    fn address(&self) -> SocketAddr {
        self.scheduler.address()
    }

    fn new_panics(&self) -> usize {
        scheduler_panics() - self.panics
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn well_formed_hostile_messages_leave_other_clients_unaffected(
        messages in proptest::collection::vec(hostile_message(), 1..24),
    ) {
        let mut b = Bystanders::new();
        let (mut evil_client, _) = Peer::client(b.address(), None);
        let (mut evil_worker, _) = Peer::worker(b.address(), "evil-worker");
        for message in &messages {
            match message {
                Hostile::Client(m) => evil_client.send(m),
                Hostile::Worker(m) => evil_worker.send(m),
            }
        }
        // Pinned: the hostile worker is a worker like any other to place on.
        let address = b.address();
        pinned_round_trip(address, &mut b.client, &mut b.worker, 2, "steady");
        // Everything hostile handled before the last look: the client's
        // messages before its answer to Info, the worker's before its leaving.
        evil_client.send(&ToScheduler::Info);
        while !evil_client.recv::<Vec<FromScheduler>>().iter().any(|m| matches!(m, FromScheduler::Info(_))) {}
        drop((evil_client, evil_worker));
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            b.client.send(&ToScheduler::Info);
            let answer: Vec<FromScheduler> = b.client.recv();
            let gone = answer.iter().any(|m| matches!(m, FromScheduler::Info(w) if w.len() == 1));
            if gone {
                break;
            }
            prop_assert!(std::time::Instant::now() < deadline, "the hostile worker is still listed");
        }
        round_trip(address, &mut b.client, &mut b.worker, 3);
        prop_assert_eq!(b.new_panics(), 0, "the scheduler's thread panicked");
    }

    #[test]
    fn garbage_closes_one_connection_and_nothing_else(inputs in proptest::collection::vec(garbage(), 1..4)) {
        let mut b = Bystanders::new();
        let address = b.address();
        for bytes in &inputs {
            let mut bad = Peer::open(address);
            let _ = bad.stream.write_all(bytes);
            let _ = bad.stream.shutdown(std::net::Shutdown::Write);
            // The scheduler answers with at most a rejection, then closes.
            let mut sink = Vec::new();
            let _ = bad.stream.read_to_end(&mut sink);
        }
        round_trip(address, &mut b.client, &mut b.worker, 2);
        let (mut late, _) = Peer::client(address, None);
        round_trip(address, &mut late, &mut b.worker, 3);
        prop_assert_eq!(b.new_panics(), 0, "the scheduler's thread panicked");
    }
}
