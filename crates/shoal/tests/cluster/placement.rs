//! Resources, restrictions and priorities from the client to the scheduler,
//! on LocalClusters of worker processes.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use shoal::{Error, LocalCluster, Status, TaskOptions, delayed_with};

fn worker_name() -> String {
    std::env::var("SHOAL_WORKER_NAME").unwrap_or_else(|_| "not a worker".into())
}

fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

/// Where it ran, and when it started and ended (microseconds).
#[shoal::remote]
fn timed(ms: u64) -> (String, u64, u64) {
    let start = now_us();
    std::thread::sleep(Duration::from_millis(ms));
    (worker_name(), start, now_us())
}

#[shoal::remote]
fn double(x: u64) -> u64 {
    2 * x
}

#[test]
fn a_task_needing_a_resource_only_one_worker_has_runs_only_there_one_at_a_time() {
    // Two threads each: without resource accounting two GPU tasks would overlap.
    let cluster = LocalCluster::builder()
        .workers(2)
        .threads_per_worker(2)
        .worker_resources(1, [("gpu", 1.0)])
        .build()
        .expect("cluster");
    let client = cluster.client().expect("client");
    let mut info = client.scheduler_info().expect("info");
    info.sort_by(|a, b| a.name.cmp(&b.name));
    // Each offers its two task slots as CPUs, and the second its GPU.
    assert_eq!(info[0].resources, vec![("cpu".to_string(), 2.0)]);
    assert_eq!(info[1].resources, vec![("gpu".to_string(), 1.0), ("cpu".to_string(), 2.0)]);

    let gpu = TaskOptions::new().resources([("gpu", 1.0)]).pure(false);
    let runs = client.gather(&client.map_with(&gpu, timed, [50u64; 6])).expect("runs");
    assert!(runs.iter().all(|(w, ..)| w == "local-1"), "{runs:?}");
    let mut spans: Vec<(u64, u64)> = runs.iter().map(|(_, s, e)| (*s, *e)).collect();
    spans.sort();
    assert!(spans.windows(2).all(|p| p[0].1 <= p[1].0), "one GPU: one task at a time: {spans:?}");

    let plain = client.gather(&client.map_with(&TaskOptions::new().pure(false), timed, [0u64; 40])).expect("runs");
    assert!(plain.iter().any(|(w, ..)| w == "local-0"), "tasks without needs go anywhere");

    let lazy = delayed_with(&gpu, timed, (1u64,));
    assert_eq!(lazy.compute_with(&client).expect("runs").0, "local-1", "delayed calls carry resources too");
}

#[test]
fn restrictions_to_a_named_worker_are_honoured_for_delayed_calls_too() {
    let cluster = LocalCluster::builder().workers(2).threads_per_worker(1).build().expect("cluster");
    let client = cluster.client().expect("client");
    for name in ["local-0", "local-1"] {
        let opts = TaskOptions::new().workers([name]).pure(false);
        let lazy: Vec<_> = (0..4u64).map(|ms| delayed_with(&opts, timed, (ms,))).collect();
        let placed = shoal::Computable::compute_on(&lazy, &client).expect("runs");
        assert!(placed.iter().all(|(w, ..)| w == name), "asked for {name}: {placed:?}");
    }
}

fn wait_for_reason<T>(f: &shoal::Future<T>) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(reason) = f.pending_reason() {
            return reason;
        }
        assert!(Instant::now() < deadline, "no reason given for {f}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_task_needing_what_no_worker_has_waits_saying_why_until_a_worker_can() {
    let cluster = LocalCluster::builder()
        .workers(2)
        .threads_per_worker(1)
        .worker_resources(1, [("gpu", 1.0)])
        .worker_resources(2, [("gpu", 4.0)])
        .build()
        .expect("cluster");
    let client = cluster.client().expect("client");
    let big = client.submit_with(&TaskOptions::new().resources([("gpu", 4.0)]), double, (21u64,));
    let after = client.submit(double, (&big,));
    let reason = wait_for_reason(&big);
    assert!(reason.contains("gpu=4") && reason.contains("the most is 1"), "{reason}");
    assert!(reason.contains("local-0") && reason.contains("local-1 [gpu=1"), "names the workers: {reason}");
    let waiting = wait_for_reason(&after);
    assert!(waiting.contains(&big.key().to_string()) && waiting.contains("gpu=4"), "{waiting}");
    assert_eq!(big.status(), Status::Pending);
    assert!(matches!(big.result_timeout(Duration::from_millis(200)), Err(Error::Timeout { .. })));

    cluster.scale(3).expect("a bigger worker joins");
    assert_eq!(after.result(), Ok(84), "runs once a worker can");
    assert_eq!(big.pending_reason(), None);
    assert_eq!(client.who_has(std::slice::from_ref(&big)).expect("who has"), vec![vec!["local-2".to_string()]]);
}

#[test]
fn a_task_no_worker_may_run_fails_after_the_no_worker_timeout() {
    let cluster = LocalCluster::builder()
        .workers(1)
        .threads_per_worker(1)
        .no_worker_timeout(Duration::from_millis(500))
        .build()
        .expect("cluster");
    let client = cluster.client().expect("client");
    let pinned = client.submit_with(&TaskOptions::new().workers(["gpu-node-7"]), double, (1u64,));
    let started = Instant::now();
    let err = pinned.result().expect_err("no such worker");
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    assert!(
        matches!(&err, Error::Rejected { reason, .. } if reason.contains("gpu-node-7") && reason.contains("within 0.5 s")),
        "{err}"
    );
}

#[test]
fn invalid_resource_amounts_are_rejected_at_submit() {
    let cluster = LocalCluster::builder().workers(1).threads_per_worker(1).build().expect("cluster");
    let client = cluster.client().expect("client");
    for (name, amount) in [("gpu", -1.0), ("gpu", f64::NAN), ("", 1.0)] {
        let f = client.submit_with(&TaskOptions::new().resources([(name, amount)]), double, (1u64,));
        let err = f.result().expect_err("rejected");
        assert!(matches!(&err, Error::Rejected { reason, .. } if reason.contains("resource")), "{err}");
    }
    let err = LocalCluster::builder().resources([("gpu", -2.0)]).build().err().expect("a bad worker resource");
    assert!(err.to_string().contains("\"gpu\"=-2"), "{err}");
}

#[test]
fn higher_priority_tasks_jump_the_scheduler_s_queue() {
    let cluster = LocalCluster::builder().workers(2).threads_per_worker(1).build().expect("cluster");
    let client = cluster.client().expect("client");
    // The scheduler learns how long these tasks take: then it keeps only
    // about one queued per worker and holds the rest in its own queue.
    let warm = TaskOptions::new().pure(false);
    client.gather(&client.map_with(&warm, timed, [40u64; 4])).expect("warm up");

    let low = client.map_with(&warm, timed, [40u64; 30]);
    let urgent = client.submit_with(&TaskOptions::new().priority(10).pure(false), timed, (40u64,));
    let (_, _, urgent_end) = urgent.result().expect("runs");
    let low_done = client.gather(&low).expect("run");
    let finished_before = low_done.iter().filter(|(_, _, end)| *end < urgent_end).count();
    assert!(finished_before <= 8, "{finished_before} of 30 earlier low-priority tasks finished first");
}
