//! The scheduler's client operations beyond submit, through a recording
//! Comm: scattered data, restart, paused workers, and tasks that no worker
//! may run.

mod support;

use shoal_proto::{FromScheduler, FromWorker, ScatteredMsg, TaskErrorMsg, ToScheduler, ToWorker, WorkerId};
use shoal_scheduler::{SchedulerConfig, TaskState};
use support::{Env, key, task};

#[test]
fn scattered_data_is_in_memory_where_it_was_put_and_released_there() {
    let mut e = Env::with(SchedulerConfig::default());
    let _a = e.worker_with("a", &[]);
    let b = e.worker_with("b", &[]);
    e.send(ToScheduler::Scatter(vec![ScatteredMsg { key: key("data"), worker: b, nbytes: 40_000_000 }]));
    assert_eq!(e.s.task_state(&key("data")), Some(TaskState::Memory));
    assert_eq!(e.s.who_has(&key("data")), vec![b]);
    assert!(e.client_msgs().is_empty(), "the client knows its data is there");

    e.send(ToScheduler::Submit(vec![task("use", &["data"])]));
    assert_eq!(e.computed(), vec![(b, vec!["use".to_string()])], "40 MB input: run where it was put");

    e.send(ToScheduler::Release(vec![key("data")]));
    assert_eq!(e.s.task_state(&key("data")), Some(TaskState::Memory), "a running task still needs it");
    e.worker_says(b, FromWorker::Finished(vec![e.done("use", 8)].into()));
    assert_eq!(e.s.task_state(&key("data")), Some(TaskState::Released), "released once nothing needs it");
    assert!(e.comm.workers.contains(&(b, ToWorker::Release(vec![key("data")]))), "{:?}", e.comm.workers);
}

#[test]
fn scattered_data_lost_with_its_worker_fails_instead_of_recomputing() {
    let mut e = Env::with(SchedulerConfig::default());
    let a = e.worker_with("a", &[]);
    e.send(ToScheduler::Scatter(vec![ScatteredMsg { key: key("data"), worker: a, nbytes: 8 }]));
    let mut pinned = task("use", &["data"]);
    pinned.workers = vec!["nowhere".into()];
    e.send(ToScheduler::Submit(vec![pinned]));
    e.client_msgs();
    e.s.on_worker_lost(a, &mut e.comm);
    e.s.check_invariants();
    let msgs = e.client_msgs();
    let lost = msgs.iter().find_map(|m| match m {
        FromScheduler::Erred { key: k, error: TaskErrorMsg::Failed { message } } if *k == key("data") => Some(message),
        _ => None,
    });
    assert!(lost.is_some_and(|m| m.contains("scatter it again")), "{msgs:?}");
    assert!(
        msgs.iter().any(|m| matches!(m, FromScheduler::Erred { key: k, error: TaskErrorMsg::Dependency { .. } }
            if *k == key("use"))),
        "{msgs:?}"
    );
    assert!(e.computed().is_empty(), "nothing to recompute scattered data with");
}

#[test]
fn scatter_to_a_worker_that_is_gone_fails_at_once() {
    let mut e = Env::with(SchedulerConfig::default());
    e.worker_with("a", &[]);
    e.send(ToScheduler::Scatter(vec![ScatteredMsg { key: key("data"), worker: WorkerId(42), nbytes: 8 }]));
    let msgs = e.client_msgs();
    assert!(
        matches!(&msgs[..], [FromScheduler::Erred { key: k, error: TaskErrorMsg::Failed { message } }]
            if *k == key("data") && message.contains("worker-42")),
        "{msgs:?}"
    );
}

#[test]
fn restart_forgets_everything_and_tells_every_worker_and_client() {
    let mut e = Env::with(SchedulerConfig::default());
    let a = e.worker_with("a", &[]);
    let b = e.worker_with("b", &[]);
    let other = e.s.on_client_connected();
    e.send(ToScheduler::Submit(vec![task("x", &[]), task("y", &["x"])]));
    assert!(!e.computed().is_empty());
    e.send(ToScheduler::Restart);
    assert_eq!(e.comm.workers, vec![(a, ToWorker::Restart), (b, ToWorker::Restart)]);
    assert_eq!(e.comm.clients, vec![(e.client, FromScheduler::Restarted), (other, FromScheduler::Restarted)]);
    assert_eq!(e.s.stats().tasks, 0);
    assert!(e.s.workers().is_empty(), "workers register again after restarting");
    assert_eq!(e.s.task_state(&key("x")), None);
    e.comm.take();

    // Late reports of the old workers are ignored; new workers get new work.
    e.worker_says(a, FromWorker::Finished(vec![e.done("x", 8)].into()));
    assert!(e.comm.workers.is_empty() && e.comm.clients.is_empty());
    let fresh = e.worker_with("a", &[]);
    assert_ne!(fresh, a, "a restarted worker is a new worker");
    e.send(ToScheduler::Submit(vec![task("x", &[])]));
    assert_eq!(e.computed(), vec![(fresh, vec!["x".to_string()])]);
}

#[test]
fn a_paused_worker_gets_no_new_tasks_until_it_resumes() {
    let mut e = Env::with(SchedulerConfig::default());
    let a = e.worker_with("a", &[]);
    e.worker_says(a, FromWorker::Paused(true));
    e.send(ToScheduler::Submit(vec![task("x", &[])]));
    assert!(e.computed().is_empty(), "paused: nothing sent");
    assert_eq!(e.s.task_state(&key("x")), Some(TaskState::Queued));
    let b = e.worker_with("b", &[]);
    assert_eq!(e.computed(), vec![(b, vec!["x".to_string()])], "another worker takes it");
    e.worker_says(b, FromWorker::Paused(true));
    e.send(ToScheduler::Submit(vec![task("y", &[])]));
    assert!(e.computed().is_empty());
    e.worker_says(a, FromWorker::Paused(false));
    assert_eq!(e.computed(), vec![(a, vec!["y".to_string()])], "resumed: queued work goes out");
}

#[test]
fn a_task_needing_a_resource_no_worker_has_waits_and_says_why() {
    let mut e = Env::with(SchedulerConfig::default());
    e.worker_with("cpu-only", &[]);
    e.worker_with("small-gpu", &[("gpu", 1.0)]);
    let mut big = task("big", &[]);
    big.resources = vec![("gpu".into(), 2.0)];
    e.send(ToScheduler::Submit(vec![big, task("after", &["big"])]));
    assert!(e.computed().is_empty());
    assert_eq!(e.s.task_state(&key("big")), Some(TaskState::Queued));
    assert!(e.client_msgs().is_empty(), "the next tick tells");
    e.s.on_tick(10, &mut e.comm);
    let msgs = e.client_msgs();
    assert_eq!(msgs.len(), 2, "the task's holder and its dependent's hear why: {msgs:?}");
    let FromScheduler::NoWorker { key: k, reason } = &msgs[0] else { panic!("{msgs:?}") };
    assert_eq!(*k, key("big"));
    assert!(reason.contains("gpu=2") && reason.contains("the most is 1"), "{reason}");
    assert!(reason.contains("cpu-only") && reason.contains("small-gpu [gpu=1]"), "{reason}");
    let FromScheduler::NoWorker { key: k, reason: why } = &msgs[1] else { panic!("{msgs:?}") };
    assert_eq!(*k, key("after"));
    assert!(why.starts_with(&format!("it waits for {}, which cannot run: it needs gpu=2", key("big"))), "{why}");

    e.s.on_tick(1_000_000_000, &mut e.comm);
    assert_eq!(e.s.task_state(&key("big")), Some(TaskState::Queued), "no timeout configured: waits");
    let big_gpu = e.worker_with("big-gpu", &[("gpu", 4.0)]);
    assert_eq!(e.computed(), vec![(big_gpu, vec!["big".to_string()])], "runs once a worker can");
}

#[test]
fn a_task_no_worker_may_run_fails_after_the_no_worker_timeout() {
    let config = SchedulerConfig { no_worker_timeout_us: Some(2_000_000), ..SchedulerConfig::default() };
    let mut e = Env::with(config);
    e.worker_with("a", &[]);
    let mut pinned = task("pinned", &[]);
    pinned.workers = vec!["gpu-node".into()];
    e.send(ToScheduler::Submit(vec![pinned]));
    e.s.on_tick(1_000_000, &mut e.comm);
    let msgs = e.client_msgs();
    assert!(
        matches!(&msgs[..], [FromScheduler::NoWorker { reason, .. }]
            if reason.contains("may only run on gpu-node") && reason.contains("connected: a")),
        "{msgs:?}"
    );
    e.s.on_tick(2_500_000, &mut e.comm);
    assert!(e.client_msgs().is_empty(), "not yet");
    e.s.on_tick(3_500_000, &mut e.comm);
    e.s.check_invariants();
    let msgs = e.client_msgs();
    assert!(
        matches!(&msgs[..], [FromScheduler::Erred { error: TaskErrorMsg::Unsatisfiable { reason }, .. }]
            if reason.contains("gpu-node") && reason.contains("within 2 s")),
        "{msgs:?}"
    );
}

#[test]
fn a_task_waiting_only_for_room_is_not_reported_stuck() {
    let mut e = Env::with(SchedulerConfig::default());
    let g = e.worker_with("g", &[("gpu", 1.0)]);
    let mut one = task("one", &[]);
    one.resources = vec![("gpu".into(), 1.0)];
    let mut two = task("two", &[]);
    two.resources = vec![("gpu".into(), 1.0)];
    e.send(ToScheduler::Submit(vec![one, two]));
    assert_eq!(e.computed(), vec![(g, vec!["one".to_string()])]);
    e.s.on_tick(10, &mut e.comm);
    assert!(e.client_msgs().is_empty(), "the GPU is busy, not missing");
}

#[test]
fn a_client_submitting_a_key_already_computed_hears_at_once() {
    let mut e = Env::with(SchedulerConfig::default());
    let w = e.worker_with("a", &[]);
    e.send(ToScheduler::Submit(vec![task("x", &[])]));
    assert_eq!(e.computed(), vec![(w, vec!["x".to_string()])]);
    e.worker_says(w, FromWorker::Finished(vec![e.done("x", 8)].into()));
    e.client_msgs();
    let late = e.s.on_client_connected();
    e.s.on_client_message(late, ToScheduler::Submit(vec![task("x", &[])]), &mut e.comm);
    assert_eq!(
        e.comm.clients,
        vec![(late, FromScheduler::Finished { key: key("x"), nbytes: 8, holder: Some(w), inline: None })],
        "only the newcomer"
    );
    assert!(e.computed().is_empty(), "not run again");
}
