//! The distributed path: a LocalCluster (scheduler and workers over loopback
//! TCP) behind the same Client API. Its own test binary: a cluster client
//! becomes the process's current client, which local tests must not meet.

use shoal::{Client, Delayed, Error, LocalCluster, delayed};

mod api;
mod memory;
mod placement;
mod sharing;
mod transfer;

#[shoal::remote]
fn square(x: u64) -> u64 {
    x * x
}

#[shoal::remote]
fn add(a: u64, b: u64) -> u64 {
    a + b
}

#[shoal::remote]
fn checked_half(x: u64) -> Result<u64, String> {
    if x % 2 == 1 { Err(format!("{x} is odd")) } else { Ok(x / 2) }
}

fn cluster() -> LocalCluster {
    LocalCluster::builder().workers(2).threads_per_worker(1).build().expect("cluster starts")
}

#[test]
fn map_and_gather_on_a_cluster() {
    let cluster = cluster();
    let client = cluster.client().expect("client");
    let futures = client.map(square, 0..100u64);
    let values = client.gather(&futures).expect("all succeed");
    assert_eq!(values, (0..100u64).map(|x| x * x).collect::<Vec<_>>());
}

#[test]
fn futures_as_arguments_run_across_workers() {
    let cluster = cluster();
    let client = cluster.client().expect("client");
    let parts = client.map(square, 1..=20u64);
    let mut total = client.submit(add, (&parts[0], &parts[1]));
    for p in &parts[2..] {
        total = client.submit(add, (&total, p));
    }
    assert_eq!(total.result(), Ok((1..=20u64).map(|x| x * x).sum()));
}

#[test]
fn delayed_graphs_compute_on_a_cluster() {
    let cluster = cluster();
    let client = cluster.client().expect("client");
    // 16 383 tasks: more than one submit message carries, so tasks in later
    // messages depend on tasks in earlier ones.
    let n = 1u64 << 13;
    let leaves: Vec<Delayed<u64>> = (0..n).map(|i| delayed(square, (i,))).collect();
    let mut level = leaves;
    while level.len() > 1 {
        level = level.chunks(2).map(|p| delayed(add, (&p[0], &p[1]))).collect();
    }
    assert_eq!(level[0].compute_with(&client), Ok((0..n).map(|x| x * x).sum()));
}

#[test]
fn errors_on_a_cluster_name_the_task_and_the_fix() {
    let cluster = cluster();
    let client = cluster.client().expect("client");
    let bad = client.submit(checked_half, (7u64,));
    assert_eq!(bad.result(), Err(Error::TaskFailed { key: bad.key().to_string(), message: "7 is odd".into() }));
    let after = client.submit(square, (&bad,));
    assert!(
        matches!(after.result(), Err(Error::DependencyFailed { ref failed, .. }) if *failed == bad.key().to_string())
    );

    let closure = client.submit(|x: u64| x + 1, (1u64,));
    let err = closure.result().expect_err("closures cannot leave the process");
    assert!(matches!(err, Error::NotRemote { .. }), "{err}");
    assert!(err.to_string().contains("#[shoal::remote]"), "{err}");
    assert_eq!(client.submit(square, (9u64,)).result(), Ok(81), "the cluster keeps working");
}

#[test]
fn two_clients_share_a_cluster_and_scale_changes_the_workers() {
    let cluster = cluster();
    let one = cluster.client().expect("client");
    let two = cluster.client().expect("second client");
    let a = one.submit(square, (12u64,));
    let b = two.submit(square, (12u64,));
    assert_eq!(a.key(), b.key());
    assert_eq!((a.result(), b.result()), (Ok(144), Ok(144)));
    cluster.scale(3).expect("scales up");
    assert_eq!(cluster.worker_count(), 3);
    // Results spread over three workers, held through the scale-down.
    let held = one.map(square, 100..130u64);
    shoal::wait(&held);
    let mut holders: Vec<String> = one.who_has(&held).expect("who has").into_iter().flatten().collect();
    holders.sort();
    holders.dedup();
    assert!(holders.len() > 1, "the results should be spread over the workers: {holders:?}");
    cluster.scale(1).expect("scales down");
    assert_eq!(cluster.worker_count(), 1);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while one.scheduler_info().expect("info").len() != 1 {
        assert!(std::time::Instant::now() < deadline, "the scheduler still lists stopped workers");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let again = one.gather(&held).expect("results of stopped workers are computed again");
    assert_eq!(again, (100..130u64).map(|x| x * x).collect::<Vec<_>>());
    let values = one.gather(&one.map(square, 0..10u64)).expect("still works with one worker");
    assert_eq!(values.iter().sum::<u64>(), 285);
}

#[test]
fn connecting_to_nothing_is_a_clear_error() {
    let err = Client::connect("127.0.0.1:1").expect_err("nothing listens there");
    assert!(err.to_string().contains("127.0.0.1:1"), "{err}");
    let err = Client::connect("not an address").expect_err("not an address");
    assert!(err.to_string().contains("not an address"), "{err}");
}

#[shoal::remote]
fn total(values: Vec<u64>) -> u64 {
    values.iter().sum()
}

#[test]
fn a_list_of_futures_or_delayed_values_is_one_argument_on_a_cluster() {
    let cluster = cluster();
    let client = cluster.client().expect("client");
    let parts = client.map(square, 1..=30u64);
    let sum = client.submit(total, (&parts,));
    assert_eq!(sum.result(), Ok((1..=30u64).map(|x| x * x).sum()));

    let lazy: Vec<Delayed<u64>> = (1..=10u64).map(|i| delayed(square, (i,))).collect();
    let lazy_sum = delayed(total, (&lazy,));
    assert_eq!(lazy_sum.compute_with(&client), Ok(385));
}

#[shoal::remote]
fn where_am_i(_x: u64) -> String {
    std::env::var("SHOAL_WORKER_NAME").unwrap_or_else(|_| "this process".into())
}

#[test]
fn restrictions_choose_the_worker() {
    let cluster = LocalCluster::builder().workers(2).threads_per_worker(1).processes(true).build().expect("cluster");
    let client = cluster.client().expect("client");
    for name in ["local-0", "local-1"] {
        let opts = shoal::TaskOptions::new().workers([name]).pure(false);
        let places: Vec<String> = client.gather(&client.map_with(&opts, where_am_i, 0..6u64)).expect("runs");
        assert!(places.iter().all(|p| p == name), "asked for {name}, ran on {places:?}");
        let one = client.submit_with(&opts, where_am_i, (99u64,));
        assert_eq!(one.result().as_deref(), Ok(name), "submit_with honours the restriction too");
    }
}

#[test]
fn who_has_names_the_workers_holding_results() {
    let cluster = cluster();
    let client = cluster.client().expect("client");
    let on_one = client.submit_with(&shoal::TaskOptions::new().workers(["local-1"]), square, (5u64,));
    assert_eq!(on_one.result(), Ok(25));
    assert_eq!(client.who_has(std::slice::from_ref(&on_one)).expect("answer"), vec![vec!["local-1".to_string()]]);
}
