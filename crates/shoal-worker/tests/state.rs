//! The worker state machine, driven event by event through a recording
//! port: exactly what it sends, fetches, runs, spills and parks. No
//! threads, sockets or sleeps.

use bytes::Bytes;
use shoal_graph::remote::{RemoteFunc, require};
use shoal_graph::{Key, Token};
use shoal_proto::{ArgMsg, ComputeMsg, DepLocation, FinishedMsg, FromWorker, TaskId, ToWorker};
use shoal_worker::{RecordingComm, Worker, WorkerConfig};

#[shoal::remote]
fn inc(x: u64) -> u64 {
    x + 1
}

#[shoal::remote]
fn add(a: u64, b: u64) -> u64 {
    a + b
}

#[shoal::remote]
fn total(values: Vec<u64>) -> u64 {
    values.iter().sum()
}

#[shoal::remote]
fn block(n: u64) -> Vec<u8> {
    vec![n as u8; n as usize]
}

#[shoal::remote]
fn length(bytes: Vec<u8>) -> u64 {
    bytes.len() as u64
}

fn func(name: &str) -> &'static RemoteFunc {
    require(&format!("{}::{name}", module_path!())).expect("registered")
}

fn key(name: &str) -> Key {
    Key::scalar("t", Token::of_bytes(name.as_bytes()))
}

/// A task of `f` with these arguments (already encoded) and inputs.
fn task(name: &str, f: &str, args: Vec<ArgMsg>, deps: Vec<DepLocation>) -> ToWorker {
    let id = TaskId::new(name.bytes().map(u32::from).sum(), 0);
    ToWorker::Compute(vec![ComputeMsg {
        id,
        key: key(name),
        func: func(f).name().into(),
        args: args.into(),
        deps: deps.into_iter().collect(),
        priority: 0,
    }])
}

fn value(f: &str, position: usize, x: u64) -> ArgMsg {
    ArgMsg::Value(func(f).encode_arg(position, &x).expect("encodes"))
}

fn held_at(name: &str, holder: &str, nbytes: u64) -> DepLocation {
    DepLocation { key: key(name), holders: [holder.into()].into_iter().collect(), nbytes, inline: None }
}

fn worker_with(config: WorkerConfig) -> (Worker<u64>, RecordingComm) {
    (Worker::new(&config, std::process::id()), RecordingComm::default())
}

fn worker() -> (Worker<u64>, RecordingComm) {
    worker_with(WorkerConfig::new(([127, 0, 0, 1], 1).into(), "w"))
}

/// Runs `name` on the recording executor and reports it done at `now`.
fn finish(worker: &mut Worker<u64>, comm: &mut RecordingComm, name: &str, now: u64) {
    assert!(comm.run(&key(name)), "{name} was handed to the executor");
    worker.on_tasks_done([key(name)], now, comm);
}

fn finished(comm: &mut RecordingComm) -> Vec<FinishedMsg> {
    comm.take_sent()
        .into_iter()
        .flat_map(|m| match m {
            FromWorker::Finished(done) => done.into_vec(),
            other => panic!("expected only completions, got {other:?}"),
        })
        .collect()
}

fn decoded(worker: &mut Worker<u64>, name: &str, f: &str) -> u64 {
    let bytes = worker.encoded(&key(name)).expect("held").expect("encodes");
    func(f).decode_result(&bytes).expect("decodes")
}

#[test]
fn a_task_with_its_inputs_here_runs_and_its_small_result_goes_along() {
    let (mut w, mut comm) = worker();
    w.on_message(task("a", "inc", vec![value("inc", 0, 41)], vec![]), 100, &mut comm);
    assert_eq!(comm.executed, vec![key("a")]);
    assert!(comm.sent.is_empty(), "nothing to say before it ends");
    finish(&mut w, &mut comm, "a", 350);
    let done = finished(&mut comm);
    assert_eq!(done.len(), 1);
    assert_eq!((done[0].key.clone(), done[0].nbytes, done[0].duration_us), (key("a"), 1, 250));
    assert_eq!(done[0].inline.as_deref(), Some(&[42u8][..]), "a one-byte result travels with its report");
    assert_eq!(decoded(&mut w, "a", "inc"), 42);
}

#[test]
fn tasks_that_end_together_are_reported_in_one_message() {
    let (mut w, mut comm) = worker();
    for (name, x) in [("a", 1), ("b", 2), ("c", 3)] {
        w.on_message(task(name, "inc", vec![value("inc", 0, x)], vec![]), 0, &mut comm);
        assert!(comm.run(&key(name)));
    }
    w.on_tasks_done([key("a"), key("b"), key("c")], 10, &mut comm);
    let [FromWorker::Finished(done)] = &comm.sent[..] else { panic!("one report: {:?}", comm.sent) };
    assert_eq!(done.iter().map(|f| f.key.clone()).collect::<Vec<_>>(), vec![key("a"), key("b"), key("c")]);
}

#[test]
fn results_larger_than_the_inline_maximum_stay_here() {
    let (mut w, mut comm) =
        worker_with(WorkerConfig { inline_max: 16, ..WorkerConfig::new(([127, 0, 0, 1], 1).into(), "w") });
    w.on_message(task("big", "block", vec![value("block", 0, 100)], vec![]), 0, &mut comm);
    finish(&mut w, &mut comm, "big", 5);
    let done = finished(&mut comm);
    assert_eq!((done[0].nbytes, done[0].inline.is_none()), (101, true));
    assert!(w.holds(&key("big")));
}

#[test]
fn a_failure_is_reported_with_its_message_and_nothing_is_stored() {
    let (mut w, mut comm) = worker();
    w.on_message(task("a", "inc", vec![value("inc", 0, 1)], vec![]), 0, &mut comm);
    comm.end(&key("a"), Err("it broke".into()));
    w.on_tasks_done([key("a")], 1, &mut comm);
    assert_eq!(comm.sent, vec![FromWorker::Failed { key: key("a"), message: "it broke".into() }]);
    assert!(!w.holds(&key("a")));
}

#[test]
fn an_unregistered_function_fails_before_the_executor() {
    let (mut w, mut comm) = worker();
    let ToWorker::Compute(mut tasks) = task("a", "inc", vec![], vec![]) else { unreachable!() };
    tasks[0].func = "nowhere::missing".into();
    w.on_message(ToWorker::Compute(tasks), 0, &mut comm);
    assert!(comm.executed.is_empty());
    let [FromWorker::Failed { key: k, message }] = &comm.sent[..] else { panic!("{:?}", comm.sent) };
    assert_eq!(k, &key("a"));
    assert!(message.contains("nowhere::missing"), "{message}");
}

#[test]
fn an_argument_that_does_not_decode_fails_its_task() {
    let (mut w, mut comm) = worker();
    w.on_message(task("a", "inc", vec![ArgMsg::Value(vec![0xff; 12])], vec![]), 0, &mut comm);
    assert!(comm.executed.is_empty());
    assert!(matches!(&comm.sent[..], [FromWorker::Failed { .. }]), "{:?}", comm.sent);
}

#[test]
fn an_input_held_here_is_used_without_a_fetch() {
    let (mut w, mut comm) = worker();
    w.on_message(task("a", "inc", vec![value("inc", 0, 1)], vec![]), 0, &mut comm);
    finish(&mut w, &mut comm, "a", 1);
    comm.take_sent();
    w.on_message(
        task("b", "inc", vec![ArgMsg::Key(key("a"))], vec![held_at("a", "tcp://127.0.0.1:9", 1)]),
        2,
        &mut comm,
    );
    assert!(comm.fetches.is_empty());
    finish(&mut w, &mut comm, "b", 3);
    assert_eq!(decoded(&mut w, "b", "inc"), 3);
}

#[test]
fn an_input_sent_inline_needs_no_fetch() {
    let (mut w, mut comm) = worker();
    let mut dep = held_at("a", "tcp://127.0.0.1:9", 1);
    dep.inline = Some(func("inc").encode_arg(0, &10u64).expect("encodes"));
    w.on_message(task("b", "inc", vec![ArgMsg::Key(key("a"))], vec![dep]), 0, &mut comm);
    assert!(comm.fetches.is_empty());
    finish(&mut w, &mut comm, "b", 1);
    assert_eq!(decoded(&mut w, "b", "inc"), 11);
}

#[test]
fn an_input_elsewhere_is_fetched_once_for_every_task_that_waits_for_it() {
    let (mut w, mut comm) = worker();
    let dep = held_at("a", "tcp://127.0.0.1:9", 1);
    w.on_message(task("b", "inc", vec![ArgMsg::Key(key("a"))], vec![dep.clone()]), 0, &mut comm);
    w.on_message(task("c", "add", vec![ArgMsg::Key(key("a")), value("add", 1, 100)], vec![dep.clone()]), 0, &mut comm);
    assert_eq!(comm.take_fetches(), vec![dep]);
    assert!(comm.executed.is_empty(), "both wait for their input");
    assert_eq!(w.fetching(), 2);
    let bytes = Bytes::from(func("inc").encode_arg(0, &5u64).expect("encodes"));
    w.on_peer_data(&key("a"), Some(bytes), 7, &mut comm);
    assert_eq!(comm.executed, vec![key("b"), key("c")]);
    finish(&mut w, &mut comm, "b", 8);
    finish(&mut w, &mut comm, "c", 9);
    assert_eq!((decoded(&mut w, "b", "inc"), decoded(&mut w, "c", "add")), (6, 105));
    // A fetched input is the task's, not a result of this worker's.
    assert!(!w.holds(&key("a")));
}

#[test]
fn inputs_found_at_no_holder_are_reported_missing_and_the_task_dropped() {
    let (mut w, mut comm) = worker();
    let deps = vec![held_at("a", "tcp://127.0.0.1:9", 1), held_at("b", "tcp://127.0.0.1:9", 1)];
    w.on_message(task("c", "add", vec![ArgMsg::Key(key("a")), ArgMsg::Key(key("b"))], deps), 0, &mut comm);
    assert_eq!(comm.take_fetches().len(), 2);
    w.on_peer_data(&key("a"), None, 1, &mut comm);
    assert!(comm.sent.is_empty(), "it waits for its other input first");
    let bytes = Bytes::from(func("add").encode_arg(1, &1u64).expect("encodes"));
    w.on_peer_data(&key("b"), Some(bytes), 2, &mut comm);
    assert_eq!(comm.sent, vec![FromWorker::MissingData { key: key("c"), missing: vec![key("a")] }]);
    assert!(comm.executed.is_empty());
    assert_eq!(w.fetching(), 0);
}

#[test]
fn an_input_nobody_holds_is_missing_at_once() {
    let (mut w, mut comm) = worker();
    w.on_message(task("b", "inc", vec![ArgMsg::Key(key("a"))], vec![]), 0, &mut comm);
    assert!(comm.fetches.is_empty());
    assert_eq!(comm.sent, vec![FromWorker::MissingData { key: key("b"), missing: vec![key("a")] }]);
}

#[test]
fn a_list_of_inputs_comes_from_the_store_the_message_and_peers() {
    let (mut w, mut comm) = worker();
    w.on_message(task("here", "inc", vec![value("inc", 0, 1)], vec![]), 0, &mut comm);
    finish(&mut w, &mut comm, "here", 1);
    comm.take_sent();
    let mut inline = held_at("inline", "tcp://127.0.0.1:9", 1);
    inline.inline = Some(func("inc").encode_arg(0, &20u64).expect("encodes"));
    let far = held_at("far", "tcp://127.0.0.1:9", 1);
    let list = ArgMsg::List(vec![key("here"), key("inline"), key("far")]);
    w.on_message(task("sum", "total", vec![list], vec![inline, far.clone()]), 2, &mut comm);
    assert_eq!(comm.take_fetches(), vec![far]);
    let bytes = Bytes::from(func("inc").encode_arg(0, &300u64).expect("encodes"));
    w.on_peer_data(&key("far"), Some(bytes), 3, &mut comm);
    finish(&mut w, &mut comm, "sum", 4);
    assert_eq!(decoded(&mut w, "sum", "total"), 2 + 20 + 300);
}

#[test]
fn a_released_task_is_dropped_wherever_it_is() {
    let (mut w, mut comm) = worker();
    w.on_message(task("run", "inc", vec![value("inc", 0, 1)], vec![]), 0, &mut comm);
    let dep = held_at("a", "tcp://127.0.0.1:9", 1);
    w.on_message(task("wait", "inc", vec![ArgMsg::Key(key("a"))], vec![dep]), 0, &mut comm);
    w.on_message(ToWorker::Release(vec![key("run"), key("wait")]), 1, &mut comm);
    assert!(comm.cancelled(&key("run")));
    assert_eq!((w.running(), w.fetching()), (0, 0));
    // What comes for a released task starts nothing.
    let bytes = Bytes::from(func("inc").encode_arg(0, &5u64).expect("encodes"));
    w.on_peer_data(&key("a"), Some(bytes), 2, &mut comm);
    assert_eq!(comm.executed, vec![key("run")]);
    assert!(comm.sent.is_empty());
}

#[test]
fn releasing_a_result_drops_it_and_its_shared_copies() {
    let (mut w, mut comm) = worker();
    w.on_message(task("a", "inc", vec![value("inc", 0, 1)], vec![]), 0, &mut comm);
    finish(&mut w, &mut comm, "a", 1);
    w.on_message(ToWorker::Release(vec![key("a")]), 2, &mut comm);
    assert!(!w.holds(&key("a")));
    assert_eq!(comm.forgotten, vec![key("a")]);
    assert_eq!(w.memory(), 0);
}

#[test]
fn steal_gives_back_tasks_no_thread_has_taken() {
    let (mut w, mut comm) = worker();
    for name in ["queued", "started"] {
        w.on_message(task(name, "inc", vec![value("inc", 0, 1)], vec![]), 0, &mut comm);
    }
    comm.start(&key("started"));
    w.on_message(ToWorker::Steal(vec![key("queued"), key("started"), key("unknown")]), 1, &mut comm);
    assert_eq!(comm.sent, vec![FromWorker::Stolen(vec![key("queued")])]);
    assert!(comm.cancelled(&key("queued")) && !comm.cancelled(&key("started")));
    assert_eq!(w.running(), 1);
}

#[test]
fn the_heartbeat_says_what_is_held() {
    let (mut w, mut comm) = worker();
    w.on_message(task("a", "block", vec![value("block", 0, 300)], vec![]), 0, &mut comm);
    finish(&mut w, &mut comm, "a", 1);
    comm.take_sent();
    w.on_tick(2, &mut comm);
    assert_eq!(comm.sent, vec![FromWorker::Heartbeat { memory: 302 }]);
}

/// A worker of a 1000-byte limit: it pauses past 800 bytes.
fn limited(target: Option<f64>, dir: &std::path::Path) -> (Worker<u64>, RecordingComm) {
    worker_with(WorkerConfig {
        memory_limit: 1000,
        memory_target_fraction: target,
        local_directory: Some(dir.to_path_buf()),
        ..WorkerConfig::new(([127, 0, 0, 1], 1).into(), "limited")
    })
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("shoal-worker-test-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temporary directory");
    dir
}

/// Makes `name`, a block of `n` bytes (n + 2 encoded, for n < 16384).
fn make_block(w: &mut Worker<u64>, comm: &mut RecordingComm, name: &str, n: u64) {
    w.on_message(task(name, "block", vec![value("block", 0, n)], vec![]), 0, comm);
    finish(w, comm, name, 1);
}

#[test]
fn past_its_pause_threshold_a_worker_parks_new_tasks_until_it_holds_less() {
    let dir = temp_dir("pause");
    let (mut w, mut comm) = limited(None, &dir);
    make_block(&mut w, &mut comm, "b1", 398);
    make_block(&mut w, &mut comm, "b2", 398);
    assert!(!w.is_paused(), "800 bytes is at the threshold, not past it");
    make_block(&mut w, &mut comm, "b3", 98);
    assert!(w.is_paused());
    assert_eq!(comm.sent.last(), Some(&FromWorker::Paused(true)));
    comm.take_sent();

    w.on_message(task("p1", "inc", vec![value("inc", 0, 1)], vec![]), 2, &mut comm);
    w.on_message(task("p2", "inc", vec![value("inc", 0, 2)], vec![]), 2, &mut comm);
    assert_eq!(comm.executed.len(), 3, "parked, not started");
    assert_eq!(w.parked(), 2);

    w.on_message(ToWorker::Release(vec![key("b1")]), 3, &mut comm);
    assert!(!w.is_paused());
    assert_eq!(comm.sent, vec![FromWorker::Paused(false)]);
    assert_eq!(&comm.executed[3..], &[key("p1"), key("p2")], "resumed in the order they came");
    finish(&mut w, &mut comm, "p1", 10);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn parked_tasks_can_be_stolen() {
    let dir = temp_dir("steal");
    let (mut w, mut comm) = limited(None, &dir);
    make_block(&mut w, &mut comm, "big", 900);
    assert!(w.is_paused());
    w.on_message(task("p", "inc", vec![value("inc", 0, 1)], vec![]), 2, &mut comm);
    comm.take_sent();
    w.on_message(ToWorker::Steal(vec![key("p")]), 3, &mut comm);
    assert_eq!(comm.sent, vec![FromWorker::Stolen(vec![key("p")])]);
    assert_eq!(w.parked(), 0);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn past_its_target_a_worker_spills_the_least_recently_used_and_reads_them_back() {
    let dir = temp_dir("spill");
    let (mut w, mut comm) = limited(Some(0.5), &dir);
    make_block(&mut w, &mut comm, "b1", 298);
    make_block(&mut w, &mut comm, "b2", 298);
    assert_eq!((w.memory(), w.spilled_bytes()), (300, 300), "b1 went to disk");
    // b2 is now the only one in memory, so b3's arrival spills it.
    make_block(&mut w, &mut comm, "b3", 298);
    assert_eq!((w.memory(), w.spilled_bytes()), (300, 600));
    assert!(!w.is_paused(), "spilling keeps it under its pause threshold");
    assert_eq!(std::fs::read_dir(&dir).expect("spill directory").count(), 1, "one directory of its own");

    // A task reads b1 back from disk.
    w.on_message(task("len", "length", vec![ArgMsg::Key(key("b1"))], vec![]), 2, &mut comm);
    finish(&mut w, &mut comm, "len", 3);
    assert_eq!(decoded(&mut w, "len", "length"), 298);

    // Releasing a spilled result removes its file.
    w.on_message(ToWorker::Release(vec![key("b1"), key("b2")]), 4, &mut comm);
    assert_eq!(w.spilled_bytes(), 0);
    drop(w);
    assert_eq!(std::fs::read_dir(&dir).expect("directory").count(), 0, "the worker's directory goes with it");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_result_used_lately_is_spilled_after_older_ones() {
    let dir = temp_dir("lru");
    let (mut w, mut comm) = limited(Some(0.7), &dir);
    make_block(&mut w, &mut comm, "old", 298);
    make_block(&mut w, &mut comm, "new", 298);
    // Reading "old" makes "new" the least recently used.
    assert!(w.encoded(&key("old")).is_some());
    make_block(&mut w, &mut comm, "third", 298);
    assert_eq!(w.spilled_bytes(), 300);
    // "new" was spilled: its bytes come from disk, "old" and "third" from memory.
    let on_disk = std::fs::read_dir(&dir)
        .expect("dir")
        .flat_map(|d| std::fs::read_dir(d.expect("entry").path()).expect("files"))
        .count();
    assert_eq!(on_disk, 1);
    assert_eq!(w.encoded(&key("new")).expect("held").expect("read back").len(), 300);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_disk_that_refuses_to_take_spills_leaves_the_worker_pausing_instead() {
    let file = temp_dir("refusing").join("not-a-directory");
    std::fs::write(&file, b"x").expect("a file where the directory would go");
    let (mut w, mut comm) = limited(Some(0.5), &file);
    make_block(&mut w, &mut comm, "b1", 398);
    make_block(&mut w, &mut comm, "b2", 398);
    make_block(&mut w, &mut comm, "b3", 98);
    assert_eq!(w.spilled_bytes(), 0);
    assert!(w.is_paused());
    let _ = std::fs::remove_dir_all(file.parent().expect("parent"));
}

#[test]
fn scattered_values_count_against_the_limit() {
    let dir = temp_dir("put");
    let (mut w, mut comm) = limited(None, &dir);
    let bytes = Bytes::from(func("length").encode_arg(0, &vec![1u8; 898]).expect("encodes"));
    w.on_put([(key("scattered"), bytes)], 0, &mut comm);
    assert_eq!(w.memory(), 900);
    assert_eq!(comm.sent, vec![FromWorker::Paused(true)]);
    w.on_message(task("len", "length", vec![ArgMsg::Key(key("scattered"))], vec![]), 1, &mut comm);
    assert_eq!(w.parked(), 1);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_reset_drops_results_and_tasks_and_ends_a_pause() {
    let dir = temp_dir("reset");
    let (mut w, mut comm) = limited(None, &dir);
    make_block(&mut w, &mut comm, "big", 900);
    w.on_message(task("p", "inc", vec![value("inc", 0, 1)], vec![]), 2, &mut comm);
    w.on_message(ToWorker::Release(vec![]), 2, &mut comm);
    assert!(w.is_paused());
    w.reset(&mut comm);
    assert!(!w.is_paused());
    assert_eq!((w.memory(), w.parked(), w.running(), w.holds(&key("big"))), (0, 0, 0, false));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_lower_pause_fraction_pauses_sooner() {
    let dir = temp_dir("pause-fraction");
    let (mut w, mut comm) = worker_with(WorkerConfig {
        memory_limit: 1000,
        memory_target_fraction: None,
        memory_pause_fraction: 0.5,
        local_directory: Some(dir.clone()),
        ..WorkerConfig::new(([127, 0, 0, 1], 1).into(), "early")
    });
    make_block(&mut w, &mut comm, "b1", 498);
    assert!(!w.is_paused(), "500 bytes is at the threshold");
    make_block(&mut w, &mut comm, "b2", 98);
    assert!(w.is_paused(), "600 of 1000 bytes is past half");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn past_its_terminate_fraction_a_supervised_worker_says_to_end_the_process() {
    let supervised = WorkerConfig {
        memory_limit: 1000,
        memory_terminate_fraction: Some(0.95),
        exit_on_restart: true,
        ..WorkerConfig::new(([127, 0, 0, 1], 1).into(), "guarded")
    };
    let (mut w, _) = worker_with(supervised.clone());
    assert_eq!(w.on_memory_sample(950), None, "at the threshold");
    assert_eq!(w.on_memory_sample(951), Some(shoal_worker::Control::OverMemory));
    // Without a nanny to start a new process, or without a limit, it never does.
    let (mut alone, _) = worker_with(WorkerConfig { exit_on_restart: false, ..supervised.clone() });
    assert_eq!(alone.on_memory_sample(u64::MAX), None);
    let (mut unlimited, _) = worker_with(WorkerConfig { memory_limit: 0, ..supervised });
    assert_eq!(unlimited.on_memory_sample(u64::MAX), None);
}
