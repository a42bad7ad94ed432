//! The scheduler state machine driven through a recording Comm: exact
//! messages for each event.

mod support;

use std::collections::HashMap;

use shoal_graph::Key;
use shoal_proto::{
    ArgMsg, ClientId, ComputeMsg, FinishedMsg, FromScheduler, FromWorker, TaskErrorMsg, TaskId, TaskMsg, ToScheduler,
    ToWorker, WorkerId,
};
use shoal_scheduler::TaskState;
use support::{Env, key, task, worker_info};

#[test]
fn a_task_runs_reports_and_is_forgotten_when_released() {
    let mut e = Env::new();
    let w = e.worker("a", 1);
    e.submit(vec![task("x", &[])]);
    assert_eq!(e.computed(), vec![(w, vec!["x".to_string()])]);
    e.finish(w, "x", 8);
    assert_eq!(
        e.client_msgs(),
        vec![FromScheduler::Finished { key: key("x"), nbytes: 8, holder: Some(w), inline: None }]
    );
    let c = e.client;
    e.s.on_client_message(c, ToScheduler::Release(vec![key("x")]), &mut e.comm);
    assert_eq!(e.comm.workers, vec![(w, ToWorker::Release(vec![key("x")]))]);
    assert_eq!(e.s.task_state(&key("x")), None);
    assert_eq!(e.s.stats().tasks, 0);
}

#[test]
fn dropping_the_last_future_of_pending_work_cancels_it() {
    let mut e = Env::new();
    let w = e.worker("a", 1);
    let mut x = task("x", &[]);
    x.held = false;
    e.submit(vec![x, task("y", &["x"])]);
    assert_eq!(e.computed(), vec![(w, vec!["x".to_string()])]);
    // y waits on x, which runs; nobody wants either once y is released.
    e.send(ToScheduler::Release(vec![key("y")]));
    assert_eq!(e.comm.workers, vec![(w, ToWorker::Release(vec![key("x")]))], "the worker drops x");
    assert_eq!(e.s.stats().tasks, 0, "both forgotten");
    // x's late report is answered with a release, and changes nothing.
    e.comm.take();
    e.finish(w, "x", 8);
    e.s.check_invariants();
    assert_eq!(e.comm.workers, vec![(w, ToWorker::Release(vec![key("x")]))]);
    assert_eq!(e.s.stats().tasks, 0);
    assert!(e.client_msgs().is_empty(), "nobody is told about work they dropped");
}

#[test]
fn fire_and_forget_keeps_dropped_work_running_until_it_is_done() {
    let mut e = Env::new();
    let w = e.worker("a", 1);
    e.submit(vec![task("x", &[])]);
    assert_eq!(e.computed(), vec![(w, vec!["x".to_string()])]);
    e.send(ToScheduler::FireAndForget(vec![key("x")]));
    e.send(ToScheduler::Release(vec![key("x")]));
    assert!(e.comm.take().workers.is_empty(), "x keeps running");
    assert_eq!(e.s.task_state(&key("x")), Some(TaskState::Processing(w)));
    e.finish(w, "x", 8);
    e.s.check_invariants();
    assert_eq!(e.comm.workers, vec![(w, ToWorker::Release(vec![key("x")]))], "done: its result is let go");
    assert_eq!(e.s.stats().tasks, 0);
    assert!(e.client_msgs().is_empty(), "the client that let go hears nothing");
}

#[test]
fn a_failure_that_cancels_part_of_what_it_fails_leaves_a_consistent_scheduler() {
    let mut e = Env::new();
    let w = e.worker("a", 1);
    // a runs; b needs a; c needs a and b; nothing holds b or c.
    let unheld = |name: &str, deps: &[&str]| TaskMsg { held: false, ..task(name, deps) };
    e.submit(vec![task("a", &[]), unheld("b", &["a"]), unheld("c", &["a", "b"])]);
    assert_eq!(e.computed(), vec![(w, vec!["a".to_string()])]);
    // Failing a fails c, which leaves b wanted by nobody: b is cancelled
    // and forgotten while it still waits to be failed.
    e.send(ToScheduler::Cancel(vec![key("a")]));
    assert_eq!(e.s.task_state(&key("a")), Some(TaskState::Erred));
    assert_eq!((e.s.task_state(&key("b")), e.s.task_state(&key("c"))), (None, None));
}

#[test]
fn a_dependent_goes_where_its_input_is_and_learns_where_to_fetch() {
    let mut e = Env::new();
    let a = e.worker("a", 1);
    let b = e.worker("b", 1);
    e.submit(vec![task("x", &[])]);
    let first = e.computed();
    let (holder, _) = first[0].clone();
    e.finish(holder, "x", 50_000_000);
    e.submit(vec![task("y", &["x"])]);
    let compute = e.comm.take().workers;
    let (target, ToWorker::Compute(tasks)) = &compute[0] else { panic!("expected a compute message") };
    assert_eq!(*target, holder, "50 MB input: run where it is");
    let ComputeMsg { deps, .. } = &tasks[0];
    assert_eq!(deps[0].key, key("x"));
    assert_eq!(deps[0].nbytes, 50_000_000);
    let address = if holder == a { "tcp://a:1" } else { "tcp://b:1" };
    assert_eq!(deps[0].holders.as_slice(), [address.into()]);
    let _ = b;
}

#[test]
fn root_tasks_spread_over_workers() {
    let mut e = Env::new();
    let a = e.worker("a", 1);
    let b = e.worker("b", 1);
    e.submit((0..40).map(|i| task(&format!("t{i}"), &[])).collect());
    let per_worker = e.computed();
    let count = |w: WorkerId| per_worker.iter().filter(|(x, _)| *x == w).map(|(_, t)| t.len()).sum::<usize>();
    assert_eq!(count(a) + count(b), 40);
    assert!(count(a) >= 10 && count(b) >= 10, "a got {}, b got {}", count(a), count(b));
}

#[test]
fn failures_propagate_with_the_failed_key() {
    let mut e = Env::new();
    let w = e.worker("a", 1);
    e.submit(vec![task("x", &[]), task("y", &["x"]), task("z", &["y"])]);
    e.computed();
    e.s.on_worker_message(w, FromWorker::Failed { key: key("x"), message: "boom".into() }, 1, &mut e.comm);
    e.s.check_invariants();
    let msgs = e.client_msgs();
    assert!(
        msgs.contains(&FromScheduler::Erred { key: key("x"), error: TaskErrorMsg::Failed { message: "boom".into() } })
    );
    assert!(msgs.contains(&FromScheduler::Erred {
        key: key("z"),
        error: TaskErrorMsg::Dependency { dependency: key("y"), failed: key("x"), message: "boom".into() }
    }));
}

#[test]
fn retries_run_a_failed_task_again() {
    let mut e = Env::new();
    let w = e.worker("a", 1);
    let mut t = task("x", &[]);
    t.retries = 1;
    e.submit(vec![t]);
    e.computed();
    e.s.on_worker_message(w, FromWorker::Failed { key: key("x"), message: "flaky".into() }, 1, &mut e.comm);
    assert_eq!(e.computed(), vec![(w, vec!["x".to_string()])]);
    assert!(e.client_msgs().is_empty());
}

#[test]
fn a_lost_worker_s_tasks_run_elsewhere_and_lost_results_are_recomputed() {
    let mut e = Env::new();
    let a = e.worker("a", 1);
    e.submit(vec![task("x", &[])]);
    e.computed();
    e.finish(a, "x", 8);
    let mut y = task("y", &["x"]);
    y.held = true;
    e.submit(vec![y]);
    e.computed();
    let b = e.worker("b", 1);
    e.s.on_worker_lost(a, &mut e.comm);
    e.s.check_invariants();
    assert_eq!(e.computed(), vec![(b, vec!["x".to_string()])], "x is recomputed first, on b");
    assert_eq!(e.s.task_state(&key("y")), Some(TaskState::Waiting));
    e.finish(b, "x", 8);
    assert_eq!(e.computed(), vec![(b, vec!["y".to_string()])]);
}

#[test]
fn a_worker_dying_too_often_fails_the_task() {
    let mut e = Env::new();
    e.submit(vec![task("x", &[])]);
    for i in 0..4 {
        let w = e.worker(&format!("w{i}"), 1);
        e.computed();
        e.s.on_worker_lost(w, &mut e.comm);
        e.s.check_invariants();
    }
    assert!(
        e.client_msgs()
            .contains(&FromScheduler::Erred { key: key("x"), error: TaskErrorMsg::WorkerLost { attempts: 4 } })
    );
}

#[test]
fn resources_and_restrictions_are_honoured() {
    let mut e = Env::new();
    let cpu = e.worker("cpu", 4);
    let gpu = e.s.on_worker_registered(worker_info("gpu", 4, &[("gpus", 1.0)]), 0, &mut e.comm);
    let mut g1 = task("g1", &[]);
    g1.resources = vec![("gpus".into(), 1.0)];
    let mut g2 = task("g2", &[]);
    g2.resources = vec![("gpus".into(), 1.0)];
    let mut pinned = task("pinned", &[]);
    pinned.workers = vec!["cpu".into()];
    e.submit(vec![g1, g2, pinned]);
    let sent = e.computed();
    assert!(sent.contains(&(gpu, vec!["g1".to_string()])), "{sent:?}");
    assert!(sent.contains(&(cpu, vec!["pinned".to_string()])), "{sent:?}");
    assert_eq!(e.s.task_state(&key("g2")), Some(TaskState::Queued), "one GPU: the second GPU task waits");
    e.finish(gpu, "g1", 8);
    assert_eq!(e.computed(), vec![(gpu, vec!["g2".to_string()])]);
}

#[test]
fn equal_keys_from_two_clients_run_once_and_both_hear() {
    let mut e = Env::new();
    let w = e.worker("a", 1);
    let other = e.s.on_client_connected();
    e.submit(vec![task("x", &[])]);
    e.s.on_client_message(other, ToScheduler::Submit(vec![task("x", &[])]), &mut e.comm);
    assert_eq!(e.computed(), vec![(w, vec!["x".to_string()])]);
    e.finish(w, "x", 1);
    let heard: Vec<ClientId> = e.comm.clients.iter().map(|(c, _)| *c).collect();
    assert_eq!(heard, vec![e.client, other]);
    e.s.on_client_disconnected(other, &mut e.comm);
    assert_eq!(e.s.task_state(&key("x")), Some(TaskState::Memory), "the first client still holds it");
}

#[test]
fn an_unknown_dependency_fails_at_submit() {
    let mut e = Env::new();
    e.worker("a", 1);
    e.submit(vec![task("y", &["nowhere"])]);
    assert_eq!(
        e.client_msgs(),
        vec![FromScheduler::Erred { key: key("y"), error: TaskErrorMsg::UnknownDependency(key("nowhere")) }]
    );
}

#[test]
fn a_silent_worker_is_lost_on_tick() {
    let mut e = Env::new();
    let a = e.worker("a", 1);
    e.submit(vec![task("x", &[])]);
    e.computed();
    e.s.on_tick(5_000_000, &mut e.comm);
    assert_eq!(e.s.workers().len(), 1);
    e.s.on_tick(20_000_000, &mut e.comm);
    assert!(e.s.workers().is_empty());
    assert_eq!(e.s.task_state(&key("x")), Some(TaskState::Queued), "waits for a worker");
    let _ = a;
    let b = e.worker("b", 1);
    assert_eq!(e.computed(), vec![(b, vec!["x".to_string()])]);
}

#[test]
fn an_idle_worker_gets_work_stolen_for_it() {
    let mut e = Env::new();
    let a = e.worker("a", 1);
    // Dependent tasks go eagerly to where their input is: all to `a`.
    e.submit(vec![task("x", &[])]);
    e.computed();
    e.finish(a, "x", 1);
    e.submit((0..20).map(|i| task(&format!("d{i}"), &["x"])).collect());
    e.computed();
    let b = e.worker("b", 1);
    e.s.on_tick(2, &mut e.comm);
    let steal = e.comm.take().workers;
    let Some((victim, ToWorker::Steal(keys))) = steal.first() else { panic!("expected a steal, got {steal:?}") };
    assert_eq!(*victim, a);
    assert!(!keys.is_empty());
    e.s.on_worker_message(a, FromWorker::Stolen(keys.clone()), 3, &mut e.comm);
    e.s.check_invariants();
    let moved = e.computed();
    assert!(moved.iter().any(|(w, _)| *w == b), "stolen tasks run on the idle worker: {moved:?}");
}

#[test]
fn a_report_is_matched_by_the_id_it_was_sent_with_or_else_by_key() {
    let mut e = Env::new();
    let w = e.worker("a", 2);
    e.submit(vec![task("x", &[]), task("y", &[])]);
    e.computed();
    assert_ne!(e.ids["x"], e.ids["y"]);
    e.finish(w, "x", 8);
    assert_eq!(e.s.task_state(&key("x")), Some(TaskState::Memory));
    // An id the scheduler never gave (a stale one, after the task was
    // forgotten and submitted again) falls back to the key.
    let stale = FinishedMsg { id: TaskId(u64::MAX), key: key("y"), nbytes: 8, duration_us: 10, inline: None };
    e.s.on_worker_message(w, FromWorker::Finished(vec![stale].into()), 1, &mut e.comm);
    e.s.check_invariants();
    assert_eq!(e.s.task_state(&key("y")), Some(TaskState::Memory));
    // Another task's id with this key is not taken for that task.
    let crossed = FinishedMsg { id: e.ids["x"], key: key("z"), nbytes: 8, duration_us: 10, inline: None };
    e.s.on_worker_message(w, FromWorker::Finished(vec![crossed].into()), 1, &mut e.comm);
    e.s.check_invariants();
    assert_eq!(e.s.task_state(&key("z")), None);
    assert_eq!(e.comm.take().workers, vec![(w, ToWorker::Release(vec![key("z")]))], "an unknown result is dropped");
}

#[test]
fn a_forgotten_task_s_slot_goes_to_the_next_under_a_new_id() {
    let mut e = Env::new();
    let w = e.worker("a", 1);
    e.submit(vec![task("x", &[])]);
    e.computed();
    let first = e.ids["x"];
    e.finish(w, "x", 8);
    let c = e.client;
    e.s.on_client_message(c, ToScheduler::Release(vec![key("x")]), &mut e.comm);
    e.submit(vec![task("y", &[])]);
    e.computed();
    let second = e.ids["y"];
    assert_eq!(first.slot(), second.slot(), "the slot is reused");
    assert_ne!(first, second, "under a new generation");
    // A late duplicate report of x names a slot that now holds y.
    let late = FinishedMsg { id: first, key: key("x"), nbytes: 8, duration_us: 10, inline: None };
    e.s.on_worker_message(w, FromWorker::Finished(vec![late].into()), 1, &mut e.comm);
    e.s.check_invariants();
    assert!(matches!(e.s.task_state(&key("y")), Some(TaskState::Processing(_))), "y is not taken for done");
}

/// Encodes every compute message both ways: borrowed, as the network shell
/// sends it, and owned.
#[derive(Default)]
struct EncodingComm {
    batches: usize,
}

impl shoal_scheduler::Comm for EncodingComm {
    fn to_worker(&mut self, _: WorkerId, _: ToWorker) {}

    fn compute(&mut self, _: WorkerId, tasks: &shoal_scheduler::Assigned<'_>) {
        let (mut borrowed, mut owned) = (Vec::new(), Vec::new());
        shoal_proto::encode_message(tasks, &mut borrowed).expect("encodes");
        shoal_proto::encode_message(&ToWorker::Compute(tasks.to_msgs()), &mut owned).expect("encodes");
        assert_eq!(borrowed, owned);
        assert_eq!(tasks.len(), tasks.to_msgs().len());
        self.batches += 1;
    }

    fn to_client(&mut self, _: ClientId, _: Vec<FromScheduler>) {}
}

#[test]
fn assigned_tasks_encode_as_an_owned_compute_message() {
    let mut e = Env::new();
    let a = e.worker("a", 1);
    e.worker("b", 1);
    let mut comm = EncodingComm::default();
    let c = e.client;
    e.s.on_client_message(c, ToScheduler::Submit(vec![task("x", &[]), task("y", &[])]), &mut comm);
    for (k, nbytes) in [("x", 8), ("y", 16)] {
        let Some(TaskState::Processing(w)) = e.s.task_state(&key(k)) else { panic!("{k} is not processing") };
        let done = FinishedMsg { id: TaskId(u64::MAX), key: key(k), nbytes, duration_us: 10, inline: None };
        e.s.on_worker_message(w, FromWorker::Finished(vec![done].into()), 1, &mut comm);
    }
    e.s.on_client_message(c, ToScheduler::Submit(vec![task("z", &["x", "y"])]), &mut comm);
    assert!(matches!(e.s.task_state(&key("z")), Some(TaskState::Processing(_))));
    assert_eq!(comm.batches, 3, "x and y, then z");
    let _ = a;
}

#[test]
fn a_burst_of_reports_is_answered_with_one_message_per_worker() {
    let mut e = Env::new();
    let w = e.worker("a", 4);
    e.submit(vec![task("x", &[]), task("y", &[]), task("p", &["x"]), task("q", &["y"])]);
    assert_eq!(e.computed(), vec![(w, vec!["x".to_string(), "y".to_string()])]);
    let burst = vec![
        (w, FromWorker::Finished(vec![e.report("x", 8, 10)].into())),
        (w, FromWorker::Heartbeat { memory: 16 }),
        (w, FromWorker::Finished(vec![e.report("y", 8, 10)].into())),
    ];
    e.s.on_worker_messages(burst, 1, &mut e.comm);
    e.s.check_invariants();
    assert_eq!(e.computed(), vec![(w, vec!["p".to_string(), "q".to_string()])], "both dependents in one message");
    assert_eq!(e.s.workers()[0].memory, 16);
}

/// A worker gets each task's arguments exactly as submitted, whatever
/// their shape: the scheduler keeps no copy of arguments that are just the
/// dependencies' keys, and rebuilds those from the dependencies.
#[test]
fn compute_messages_carry_the_arguments_as_submitted() {
    let mut e = Env::new();
    let w = e.worker("a", 8);
    e.submit(vec![task("a", &[]), task("b", &[])]);
    compute_msgs(&mut e);
    e.finish(w, "a", 8);
    e.finish(w, "b", 8);
    let with_args = |name: &str, args: Vec<ArgMsg>| TaskMsg { args: args.into(), ..task(name, &[]) };
    let shapes = vec![
        with_args("keys", vec![ArgMsg::Key(key("b")), ArgMsg::Key(key("a"))]),
        with_args("twice", vec![ArgMsg::Key(key("a")), ArgMsg::Key(key("a"))]),
        with_args("mixed", vec![ArgMsg::Value(vec![7]), ArgMsg::Key(key("a"))]),
        with_args("list", vec![ArgMsg::List(vec![key("a"), key("b")])]),
        with_args("none", vec![]),
    ];
    let submitted: HashMap<Key, Vec<ArgMsg>> = shapes.iter().map(|t| (t.key.clone(), t.args.to_vec())).collect();
    e.submit(shapes);
    let sent = compute_msgs(&mut e);
    assert_eq!(sent.len(), submitted.len());
    for (_, t) in sent {
        assert_eq!(t.args.to_vec(), submitted[&t.key], "{}", t.key);
    }
    e.s.check_invariants();
}

/// The compute messages sent since the last look, with each task's id
/// noted as a worker keeps it.
fn compute_msgs(e: &mut Env) -> Vec<(WorkerId, ComputeMsg)> {
    let mut sent = Vec::new();
    for (w, m) in std::mem::take(&mut e.comm.workers) {
        if let ToWorker::Compute(tasks) = m {
            for t in tasks {
                e.ids.insert(t.key.prefix().to_string(), t.id);
                sent.push((w, t));
            }
        }
    }
    sent
}

/// `name` reading `deps`, to run on worker `on` only.
fn task_on(name: &str, deps: &[&str], on: &str) -> TaskMsg {
    TaskMsg { workers: vec![on.into()], ..task(name, deps) }
}

/// A small result that a waiting task reads goes to that task's worker with
/// its compute message (no fetch from the holder); the scheduler lets go of
/// it once no active task reads it, and never keeps an oversized one.
#[test]
fn small_results_travel_with_the_tasks_that_read_them() {
    let mut e = Env::new();
    let a = e.worker("a", 1);
    let b = e.worker("b", 1);
    e.submit(vec![task_on("x", &[], "a"), task_on("y", &["x"], "b")]);
    compute_msgs(&mut e);
    let done = FinishedMsg { inline: Some(vec![1, 2, 3]), ..e.report("x", 3, 10) };
    e.worker_says(a, FromWorker::Finished(vec![done].into()));
    let sent = compute_msgs(&mut e);
    let [(to, y)] = sent.as_slice() else { panic!("expected y's compute message, got {sent:?}") };
    assert_eq!((*to, y.key.prefix()), (b, "y"));
    assert_eq!(y.deps[0].inline.as_deref(), Some(&[1u8, 2, 3][..]));
    assert_eq!(&*y.deps[0].holders[0], "tcp://a:1", "the holder is named too");

    e.finish(b, "y", 8);
    e.submit(vec![task_on("z", &["x"], "b")]);
    let sent = compute_msgs(&mut e);
    let [(_, z)] = sent.as_slice() else { panic!("expected z's compute message, got {sent:?}") };
    assert_eq!(z.deps[0].inline, None, "nothing was waiting for x once y was done");
    assert_eq!(&*z.deps[0].holders[0], "tcp://a:1");

    e.submit(vec![task_on("big", &[], "a"), task_on("reader", &["big"], "b")]);
    compute_msgs(&mut e);
    let done = FinishedMsg { inline: Some(vec![0; 70_000]), ..e.report("big", 70_000, 10) };
    e.worker_says(a, FromWorker::Finished(vec![done].into()));
    let sent = compute_msgs(&mut e);
    let [(_, reader)] = sent.as_slice() else { panic!("expected the reader's compute message, got {sent:?}") };
    assert_eq!(reader.deps[0].inline, None, "a result past the scheduler's limit is fetched");
}

/// A kept small result goes when its worker does: the recomputed one, with
/// its own bytes, is what the reader gets next, never the old bytes.
#[test]
fn a_small_result_lost_with_its_worker_is_passed_on_anew_when_recomputed() {
    let mut e = Env::new();
    let a = e.worker("a", 1);
    e.worker("b", 1);
    e.submit(vec![task_on("x", &[], "a"), task_on("y", &["x"], "b")]);
    compute_msgs(&mut e);
    let done = FinishedMsg { inline: Some(vec![1, 2, 3]), ..e.report("x", 3, 10) };
    e.worker_says(a, FromWorker::Finished(vec![done].into()));
    compute_msgs(&mut e);
    // The holder dies before y is done: y must wait for x again.
    e.s.on_worker_lost(a, &mut e.comm);
    e.s.check_invariants();
    assert_eq!(e.s.task_state(&key("x")), Some(TaskState::Queued), "x waits for a worker named a");
    let a2 = e.worker("a", 1);
    let sent = compute_msgs(&mut e);
    assert!(sent.iter().any(|(w, t)| *w == a2 && t.key == key("x")), "{sent:?}");
    let done = FinishedMsg { inline: Some(vec![7]), ..e.report("x", 1, 10) };
    e.worker_says(a2, FromWorker::Finished(vec![done].into()));
    let sent = compute_msgs(&mut e);
    let [(_, y)] = sent.as_slice() else { panic!("expected y's compute message, got {sent:?}") };
    assert_eq!((y.key.prefix(), y.deps[0].inline.as_deref()), ("y", Some(&[7u8][..])));
}

/// However many tasks on one worker read one kept result, their compute
/// message carries at most its budget of inline bytes; the rest fetch.
#[test]
fn a_compute_message_carries_a_bounded_amount_of_inline_results() {
    let mut e = Env::new();
    let a = e.worker("a", 1);
    e.worker("b", 1000);
    let readers: Vec<String> = (0..300).map(|n| format!("r{n}")).collect();
    let mut tasks = vec![task_on("x", &[], "a")];
    tasks.extend(readers.iter().map(|r| task_on(r, &["x"], "b")));
    e.submit(tasks);
    compute_msgs(&mut e);
    let data = vec![5u8; shoal_proto::INLINE_LIMIT];
    let done = FinishedMsg { inline: Some(data), ..e.report("x", shoal_proto::INLINE_LIMIT as u64, 10) };
    e.worker_says(a, FromWorker::Finished(vec![done].into()));
    let sent = compute_msgs(&mut e);
    assert_eq!(sent.len(), 300);
    let carried: usize = sent.iter().filter_map(|(_, t)| t.deps[0].inline.as_ref()).map(Vec::len).sum();
    let with = sent.iter().filter(|(_, t)| t.deps[0].inline.is_some()).count();
    assert!(carried <= shoal_proto::INLINE_MESSAGE_BUDGET, "{carried} bytes inline in one message");
    assert!(with > 0 && with < 300, "{with} of 300 readers got the data inline");
    assert!(sent.iter().all(|(_, t)| &*t.deps[0].holders[0] == "tcp://a:1"), "the others are told where it is");
}

/// The outcomes sent to clients in one event carry a bounded amount of
/// inline results; the rest are fetched.
#[test]
fn outcomes_to_clients_carry_a_bounded_amount_of_inline_results() {
    let mut e = Env::new();
    let a = e.worker("a", 1000);
    let names: Vec<String> = (0..300).map(|n| format!("t{n}")).collect();
    e.submit(names.iter().map(|n| task(n, &[])).collect());
    compute_msgs(&mut e);
    let reports = names
        .iter()
        .map(|n| FinishedMsg { inline: Some(vec![1; shoal_proto::INLINE_LIMIT]), ..e.done(n, 65_536) })
        .collect();
    e.worker_says(a, FromWorker::Finished(reports));
    let told = e.client_msgs();
    assert_eq!(told.len(), 300);
    let carried: usize = told
        .iter()
        .filter_map(|m| match m {
            FromScheduler::Finished { inline: Some(data), .. } => Some(data.len()),
            _ => None,
        })
        .sum();
    assert!(carried > 0 && carried <= shoal_proto::INLINE_MESSAGE_BUDGET, "{carried} bytes inline to the client");
}
