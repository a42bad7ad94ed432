//! Workers over real loopback TCP: registered functions run where the
//! scheduler puts them, inputs travel peer to peer, results are fetched from
//! the worker that holds them.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use shoal_graph::{Key, Token};
use shoal_net::{SchedulerServerConfig, start_scheduler, start_worker};
use shoal_proto::{
    ArgMsg, FinishedMsg, FrameDecoder, FrameKind, FromScheduler, FromWorker, Hello, HelloReply, PeerReply, PeerRequest,
    Role, TaskErrorMsg, TaskMsg, ToScheduler, ToWorker, WorkerId, WorkerInfo, encode_message,
};
use shoal_worker::WorkerConfig;

#[shoal::remote]
fn inc(x: i64) -> i64 {
    x + 1
}

#[shoal::remote]
fn double(x: i64) -> i64 {
    2 * x
}

#[shoal::remote]
fn explode(x: i64) -> i64 {
    panic!("exploded on {x}")
}

fn name(f: &str) -> String {
    format!("{}::{f}", module_path!())
}

struct Peer {
    stream: TcpStream,
    decoder: FrameDecoder,
}

impl Peer {
    fn open(addr: &str, role: Role) -> Peer {
        let stream = TcpStream::connect(addr).expect("connects");
        stream.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
        let mut p = Peer { stream, decoder: FrameDecoder::default() };
        p.send(&Hello::new(role, "test", None));
        assert!(matches!(p.recv::<HelloReply>(), HelloReply::Welcome { .. }));
        p
    }

    fn send<T: Serialize>(&mut self, msg: &T) {
        let mut frame = Vec::new();
        encode_message(msg, &mut frame).expect("encodes");
        self.stream.write_all(&frame).expect("writes");
    }

    fn frame(&mut self) -> shoal_proto::Frame {
        let mut buf = [0u8; 65536];
        loop {
            if let Some(frame) = self.decoder.next_frame().expect("valid frames") {
                return frame;
            }
            let n = self.stream.read(&mut buf).expect("reads before the timeout");
            assert!(n > 0, "connection closed");
            self.decoder.push(&buf[..n]);
        }
    }

    fn recv<T: DeserializeOwned>(&mut self) -> T {
        shoal_proto::decode_message(&self.frame().body).expect("expected message")
    }

    /// Client messages until every key has an outcome.
    fn outcomes(&mut self, keys: &[Key]) -> Vec<FromScheduler> {
        let mut seen: Vec<FromScheduler> = Vec::new();
        while !keys.iter().all(|k| {
            seen.iter().any(
                |m| matches!(m, FromScheduler::Finished { key, .. } | FromScheduler::Erred { key, .. } if key == k),
            )
        }) {
            seen.extend(self.recv::<Vec<FromScheduler>>());
        }
        seen
    }
}

fn task(key: &Key, func: &str, args: Vec<ArgMsg>, worker: &str) -> TaskMsg {
    TaskMsg {
        key: key.clone(),
        func: name(func).into(),
        args: args.into(),
        priority: 0,
        retries: 0,
        resources: vec![],
        workers: if worker.is_empty() { vec![] } else { vec![worker.to_string()] },
        held: true,
    }
}

fn value(x: i64) -> ArgMsg {
    ArgMsg::Value(postcard::to_allocvec(&x).expect("encodes"))
}

fn fetch(address: &str, key: &Key) -> i64 {
    let mut peer = Peer::open(address, Role::Peer);
    peer.send(&PeerRequest::Get(vec![key.clone()]));
    let PeerReply::Data { keys, missing } = peer.recv() else { panic!("expected data") };
    assert_eq!((keys, missing), (vec![key.clone()], vec![]));
    let frame = peer.frame();
    assert_eq!(frame.kind, FrameKind::Raw);
    postcard::from_bytes(&frame.body).expect("an i64")
}

fn cluster() -> (shoal_net::RunningScheduler, Vec<shoal_net::RunningWorker>, SocketAddr) {
    cluster_with(shoal_worker::DEFAULT_INLINE_MAX)
}

/// A scheduler and workers `w0` and `w1` whose results up to `inline_max`
/// bytes travel through the scheduler.
fn cluster_with(inline_max: usize) -> (shoal_net::RunningScheduler, Vec<shoal_net::RunningWorker>, SocketAddr) {
    let scheduler = start_scheduler(SchedulerServerConfig::default()).expect("scheduler");
    let address = scheduler.address();
    let workers = ["w0", "w1"]
        .into_iter()
        .map(|n| {
            start_worker(WorkerConfig { threads: 1, inline_max, ..WorkerConfig::new(address, n) }).expect("worker")
        })
        .collect();
    (scheduler, workers, address)
}

#[test]
fn a_dependency_crosses_workers_peer_to_peer() {
    // No result goes through the scheduler: w1 fetches from w0.
    let (_scheduler, workers, address) = cluster_with(0);
    let mut client = Peer::open(&address.to_string(), Role::Client);
    let (a, b) = submit_inc_then_double(&mut client, 1);
    let outcomes = client.outcomes(&[a.clone(), b.clone()]);
    assert!(
        outcomes
            .iter()
            .any(|m| matches!(m, FromScheduler::Finished { key, nbytes: 1, holder: Some(_), .. } if *key == b)),
        "{outcomes:?}"
    );
    client.send(&ToScheduler::WhoHas(vec![b.clone()]));
    let answer: Vec<FromScheduler> = client.recv();
    let [FromScheduler::WhoHas { workers: holding, holders }] = answer.as_slice() else {
        panic!("expected who_has, got {answer:?}")
    };
    let holder = &holding[holders[0].1[0] as usize];
    assert_eq!(holder.name, "w1");
    assert_eq!(holder.data_address, workers[1].data_address().to_string());
    assert_eq!(fetch(&holder.data_address, &b), 4, "double(inc(1)), computed on w1 from w0's result");
}

/// A small result goes to the scheduler with its worker's report, and on to
/// the worker of the task that reads it inside that task's compute message,
/// and to the client holding it with the news that it finished.
#[test]
fn a_small_result_travels_with_the_task_that_reads_it() {
    let scheduler = start_scheduler(SchedulerServerConfig::default()).expect("scheduler");
    let address = scheduler.address();
    let _w0 = start_worker(WorkerConfig { threads: 1, ..WorkerConfig::new(address, "w0") }).expect("worker");
    // A stand-in for the second worker, to see what it is sent.
    let mut w1 = stand_in_worker(address, "w1");
    let mut client = Peer::open(&address.to_string(), Role::Client);
    let (a, b) = submit_inc_then_double(&mut client, 1);
    let tasks = next_compute(&mut w1);
    assert_eq!(tasks[0].key, b);
    assert_eq!(tasks[0].deps[0].key, a);
    let two = postcard::to_allocvec(&2i64).expect("encodes");
    assert_eq!(tasks[0].deps[0].inline.as_ref(), Some(&two), "inc(1), encoded");
    // The client holding `a` has the result with the news, without a fetch.
    let outcomes = client.outcomes(std::slice::from_ref(&a));
    assert!(
        outcomes
            .iter()
            .any(|m| matches!(m, FromScheduler::Finished { key, inline: Some(data), .. } if *key == a && *data == two)),
        "{outcomes:?}"
    );
}

/// Submits `a` = inc(`x`) on w0 and `b` = double(`a`) on w1.
fn submit_inc_then_double(client: &mut Peer, x: i64) -> (Key, Key) {
    let a = Key::scalar("inc", Token(1));
    let b = Key::scalar("double", Token(2));
    client.send(&ToScheduler::Submit(vec![
        task(&a, "inc", vec![value(x)], "w0"),
        task(&b, "double", vec![ArgMsg::Key(a.clone())], "w1"),
    ]));
    (a, b)
}

/// The tasks of the next compute message a stand-in worker gets.
fn next_compute(worker: &mut Peer) -> Vec<shoal_proto::ComputeMsg> {
    loop {
        if let ToWorker::Compute(tasks) = worker.recv::<ToWorker>() {
            return tasks;
        }
    }
}

/// A stand-in worker registered with `scheduler` under `name`, whose data
/// address nobody listens on.
fn stand_in_worker(scheduler: SocketAddr, name: &str) -> Peer {
    let stream = TcpStream::connect(scheduler).expect("connects");
    stream.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
    let mut worker = Peer { stream, decoder: FrameDecoder::default() };
    worker.send(&Hello::new(Role::Worker, name, None));
    worker.send(&FromWorker::Register(WorkerInfo {
        id: WorkerId(0),
        name: name.into(),
        data_address: "tcp://127.0.0.1:9".into(),
        threads: 1,
        memory_limit: 0,
        memory: 0,
        resources: vec![],
    }));
    assert!(matches!(worker.recv::<HelloReply>(), HelloReply::Welcome { .. }));
    worker
}

/// A real worker reads an input that came with its compute message: its
/// holder cannot be reached, so a fetch would fail.
#[test]
fn an_input_that_came_inline_needs_no_holder() {
    let scheduler = start_scheduler(SchedulerServerConfig::default()).expect("scheduler");
    let address = scheduler.address();
    let mut w0 = stand_in_worker(address, "w0");
    let w1 = start_worker(WorkerConfig { threads: 1, ..WorkerConfig::new(address, "w1") }).expect("worker");
    let mut client = Peer::open(&address.to_string(), Role::Client);
    let (a, b) = submit_inc_then_double(&mut client, 4);
    let tasks = next_compute(&mut w0);
    let inline = Some(postcard::to_allocvec(&5i64).expect("encodes"));
    w0.send(&FromWorker::Finished(
        vec![FinishedMsg { id: tasks[0].id, key: a.clone(), nbytes: 1, duration_us: 1, inline }].into(),
    ));
    let outcomes = client.outcomes(std::slice::from_ref(&b));
    assert!(outcomes.iter().any(|m| matches!(m, FromScheduler::Finished { key, .. } if *key == b)), "{outcomes:?}");
    assert_eq!(fetch(&w1.data_address().to_string(), &b), 10, "double(5), with 5 from the compute message");
}

/// A chain across two workers whose links all travel through the scheduler
/// comes out right.
#[test]
fn a_chain_of_small_results_across_workers_comes_out_right() {
    let (_scheduler, _workers, address) = cluster();
    let mut client = Peer::open(&address.to_string(), Role::Client);
    let keys: Vec<Key> = (0..20).map(|i| Key::scalar("inc", Token(100 + i))).collect();
    let mut tasks = vec![task(&keys[0], "inc", vec![value(0)], "w0")];
    for i in 1..keys.len() {
        tasks.push(task(&keys[i], "inc", vec![ArgMsg::Key(keys[i - 1].clone())], if i % 2 == 0 { "w0" } else { "w1" }));
    }
    client.send(&ToScheduler::Submit(tasks));
    let last = keys.last().expect("a chain").clone();
    let outcomes = client.outcomes(std::slice::from_ref(&last));
    let holder = outcomes
        .iter()
        .find_map(|m| match m {
            FromScheduler::Finished { key, holder: Some(w), .. } if *key == last => Some(*w),
            _ => None,
        })
        .expect("the last link finished");
    client.send(&ToScheduler::WhoHas(vec![last.clone()]));
    let answer: Vec<FromScheduler> = client.recv();
    let [FromScheduler::WhoHas { workers, .. }] = answer.as_slice() else { panic!("expected who_has, got {answer:?}") };
    let address = &workers.iter().find(|w| w.id == holder).expect("the holder is known").data_address;
    assert_eq!(fetch(address, &last), 20, "20 increments of 0");
}

#[test]
fn failures_come_back_with_the_reason_and_the_worker_lives_on() {
    let (_scheduler, _workers, address) = cluster();
    let mut client = Peer::open(&address.to_string(), Role::Client);
    let unknown = Key::scalar("nowhere", Token(3));
    let mut t = task(&unknown, "inc", vec![value(1)], "");
    t.func = "somewhere_else::not_registered".into();
    let boom = Key::scalar("explode", Token(4));
    client.send(&ToScheduler::Submit(vec![t, task(&boom, "explode", vec![value(7)], "")]));
    let outcomes = client.outcomes(&[unknown.clone(), boom.clone()]);
    let reason = |k: &Key| {
        outcomes.iter().find_map(|m| match m {
            FromScheduler::Erred { key, error: TaskErrorMsg::Failed { message } } if key == k => Some(message.clone()),
            _ => None,
        })
    };
    assert!(reason(&unknown).is_some_and(|m| m.contains("#[shoal::remote]")), "{outcomes:?}");
    assert_eq!(reason(&boom).as_deref(), Some("panicked: exploded on 7"));
    let after = Key::scalar("inc", Token(5));
    client.send(&ToScheduler::Submit(vec![task(&after, "inc", vec![value(41)], "")]));
    assert!(matches!(client.outcomes(std::slice::from_ref(&after))[..], [FromScheduler::Finished { .. }]));
}

#[test]
fn releases_of_many_futures_go_out_in_batches_and_before_later_messages() {
    let (_scheduler, _workers, address) = cluster();
    let (tx, rx) = std::sync::mpsc::channel::<FromScheduler>();
    let tx = std::sync::Mutex::new(tx);
    let on_messages: shoal_net::OnMessages = std::sync::Arc::new(move |batch: Option<Vec<FromScheduler>>| {
        let tx = tx.lock().expect("not poisoned");
        for msg in batch.into_iter().flatten() {
            let _ = tx.send(msg);
        }
    });
    let client = shoal_net::ClientConnection::connect(address, None, on_messages).expect("connects");
    let keys: Vec<Key> = (0..1000).map(|i| Key::scalar("inc", Token(1000 + i))).collect();
    client.send(&ToScheduler::Submit(keys.iter().map(|k| task(k, "inc", vec![value(1)], "")).collect()));
    let mut finished = 0;
    while finished < keys.len() {
        match rx.recv_timeout(Duration::from_secs(20)).expect("outcomes arrive") {
            FromScheduler::Finished { .. } => finished += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    for k in &keys {
        client.release(k.clone());
    }
    // Sent after the releases, so answered after they took effect: the
    // results are gone.
    client.send(&ToScheduler::WhoHas(keys.clone()));
    let FromScheduler::WhoHas { holders, .. } = rx.recv_timeout(Duration::from_secs(20)).expect("an answer") else {
        panic!("expected who_has")
    };
    assert_eq!(holders.len(), keys.len());
    assert!(holders.iter().all(|(_, at)| at.is_empty()), "released results are forgotten");
}

/// Panics on the fuzzed worker's service thread since the process started
/// (tokio swallows a panicking connection task, so the test must look).
fn fuzzed_worker_panics() -> usize {
    static PANICS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if std::thread::current().name() == Some("shoal-worker-fuzzed") {
                PANICS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            previous(info);
        }));
    });
    PANICS.load(std::sync::atomic::Ordering::SeqCst)
}

/// What a broken or hostile peer sends to a worker's data port: bytes,
/// then well-formed requests with nonsense in them, or cut short.
fn peer_garbage() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
    use proptest::prelude::*;
    fn hello() -> Vec<u8> {
        let mut f = Vec::new();
        encode_message(&Hello::new(Role::Peer, "fuzz", None), &mut f).expect("encodes");
        f
    }
    fn request(r: PeerRequest) -> Vec<u8> {
        let mut f = hello();
        encode_message(&r, &mut f).expect("encodes");
        f
    }
    let keys = proptest::collection::vec((0u128..4).prop_map(|i| Key::scalar("inc", Token(i))), 0..3);
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..200),
        proptest::collection::vec(any::<u8>(), 1..200).prop_map(|tail| [hello(), tail].concat()),
        keys.clone().prop_map(|k| request(PeerRequest::Get(k))),
        // Values announced, then missing or garbled.
        (keys, proptest::collection::vec(any::<u8>(), 0..40)).prop_map(|(k, tail)| [
            request(PeerRequest::Put(k)),
            tail
        ]
        .concat()),
        ("[a-z:]{0,12}", proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..8), 0..3))
            .prop_map(|(func, args)| request(PeerRequest::Run { func, args })),
        (any::<bool>(), proptest::collection::vec(any::<u8>(), 0..8)).prop_map(|(real, args)| {
            let func = if real { name("inc") } else { "nowhere::at_all".into() };
            request(PeerRequest::Run { func, args: vec![args] })
        }),
        (1usize..30).prop_map(|cut| {
            let mut f = request(PeerRequest::Get(vec![Key::scalar("inc", Token(1))]));
            f.truncate(cut.min(f.len() - 1));
            f
        }),
    ]
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 32, ..proptest::prelude::ProptestConfig::default() })]

    /// Garbage at a worker's data port closes that connection and nothing
    /// else: the worker goes on computing and serving its results.
    #[test]
    fn garbage_at_the_data_port_closes_one_connection(inputs in proptest::collection::vec(peer_garbage(), 1..4)) {
        let panics = fuzzed_worker_panics();
        let scheduler = start_scheduler(SchedulerServerConfig::default()).expect("scheduler");
        let address = scheduler.address();
        let worker = start_worker(WorkerConfig { threads: 1, ..WorkerConfig::new(address, "fuzzed") }).expect("worker");
        let data = worker.data_address().to_string();
        let mut client = Peer::open(&address.to_string(), Role::Client);
        let before = Key::scalar("inc", Token(100));
        client.send(&ToScheduler::Submit(vec![task(&before, "inc", vec![value(1)], "fuzzed")]));
        client.outcomes(std::slice::from_ref(&before));
        for bytes in &inputs {
            let mut bad = TcpStream::connect(data.trim_start_matches("tcp://")).expect("connects");
            bad.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
            let _ = bad.write_all(bytes);
            let _ = bad.shutdown(std::net::Shutdown::Write);
            let mut sink = Vec::new();
            let _ = bad.read_to_end(&mut sink);
        }
        let after = Key::scalar("inc", Token(101));
        client.send(&ToScheduler::Submit(vec![task(&after, "inc", vec![value(41)], "fuzzed")]));
        let outcome = client.outcomes(std::slice::from_ref(&after));
        proptest::prop_assert!(matches!(outcome[..], [FromScheduler::Finished { .. }]), "{outcome:?}");
        proptest::prop_assert_eq!(fetch(&data, &before), 2);
        proptest::prop_assert_eq!(fetch(&data, &after), 42);
        proptest::prop_assert_eq!(fuzzed_worker_panics(), panics, "the worker's service thread panicked");
    }
}

#[shoal::remote]
fn bulk(n: u64) -> Vec<u8> {
    (0..n).map(|i| (i % 253) as u8).collect()
}

#[shoal::remote]
fn checksum(bytes: Vec<u8>) -> u64 {
    bytes.iter().map(|&b| u64::from(b)).sum()
}

/// This host's address on its default route, if it has one besides
/// loopback (connecting a UDP socket sends nothing).
fn non_loopback_ip() -> Option<std::net::IpAddr> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect("198.51.100.1:9").ok()?;
    Some(socket.local_addr().ok()?.ip()).filter(|ip| !ip.is_loopback() && !ip.is_unspecified())
}

/// A scheduler listening on every address, workers of it that reach it on
/// this host's network address `ip`, and a client.
fn network_cluster(
    ip: std::net::IpAddr,
    names: &[&str],
    same_host: shoal_worker::SameHostTransfer,
    token: Option<&str>,
) -> (shoal_net::RunningScheduler, Vec<shoal_net::RunningWorker>, shoal::Client) {
    let token = token.map(str::to_string);
    let listen = SocketAddr::from(([0, 0, 0, 0], 0));
    let scheduler = start_scheduler(SchedulerServerConfig { listen, token: token.clone(), ..Default::default() })
        .expect("scheduler");
    let address = SocketAddr::new(ip, scheduler.address().port());
    let workers = names
        .iter()
        .map(|n| {
            let config =
                WorkerConfig { token: token.clone(), same_host_transfer: same_host, ..WorkerConfig::new(address, *n) };
            start_worker(config).expect("worker")
        })
        .collect();
    let client = shoal::Client::connect_with_token(&address.to_string(), token.as_deref()).expect("client");
    (scheduler, workers, client)
}

/// Makes `n` bytes on worker `from` and sums them on worker `to`; returns
/// the bytes' future, which keeps them held.
fn move_bulk(client: &shoal::Client, from: &str, to: &str, n: u64) -> shoal::Future<Vec<u8>> {
    let on = |w: &str| shoal::TaskOptions::new().workers([w.to_string()]);
    let made = client.submit_with(&on(from), bulk, (n,));
    let sum = client.submit_with(&on(to), checksum, (&made,)).result().expect("crossed workers");
    assert_eq!(sum, (0..n).map(|i| i % 253).sum::<u64>());
    made
}

/// Workers of a scheduler on another address than loopback (as on a
/// cluster's nodes) listen for their peers where the route to the scheduler
/// goes, not on loopback, which other hosts cannot reach; results of any
/// size then cross between them.
#[test]
fn workers_of_a_scheduler_on_the_network_serve_their_peers_on_it() {
    let Some(ip) = non_loopback_ip() else {
        eprintln!("this host has no address besides loopback: nothing to check");
        return;
    };
    let (_scheduler, workers, client) =
        network_cluster(ip, &["near", "far"], shoal_worker::SameHostTransfer::Tcp, Some("t"));
    for w in &workers {
        assert_eq!(w.data_address().ip(), ip, "the data server is reachable from other hosts");
    }
    let info = client.scheduler_info().expect("info");
    assert!(info.iter().all(|w| w.data_address.starts_with(&ip.to_string())), "{info:?}");
    drop(move_bulk(&client, "near", "far", 3 << 20));
}

/// Without a cluster token a worker keeps its data server on loopback: it
/// runs functions and hands out results to whoever it welcomes.
#[test]
fn a_worker_without_a_token_serves_on_loopback_only() {
    let Some(ip) = non_loopback_ip() else {
        eprintln!("this host has no address besides loopback: nothing to check");
        return;
    };
    let (_scheduler, workers, _client) = network_cluster(ip, &["open"], shoal_worker::SameHostTransfer::Tcp, None);
    assert!(workers[0].data_address().ip().is_loopback(), "{}", workers[0].data_address());
}

/// The shared-memory files of this process (`/dev/shm/shoal-<pid>-<n>`).
fn own_shared_files() -> usize {
    let prefix = format!("shoal-{}-", std::process::id());
    std::fs::read_dir("/dev/shm")
        .map_or(0, |entries| entries.flatten().filter(|e| e.file_name().to_string_lossy().starts_with(&prefix)).count())
}

/// Two workers serving on the host's network address know each other as
/// neighbours (each sees the other on its own address) and move a large
/// result through shared memory, not through TCP.
#[test]
fn workers_serving_on_the_same_network_address_share_memory() {
    let Some(ip) = non_loopback_ip() else {
        eprintln!("this host has no address besides loopback: nothing to check");
        return;
    };
    if !std::path::Path::new("/dev/shm").is_dir() {
        eprintln!("no /dev/shm on this host: nothing to check");
        return;
    }
    let (_scheduler, _workers, client) =
        network_cluster(ip, &["left", "right"], shoal_worker::SameHostTransfer::File, Some("t"));
    let before = own_shared_files();
    let held = move_bulk(&client, "left", "right", 3 << 20);
    assert!(own_shared_files() > before, "the result went through a shared file");
    drop(held);
}
