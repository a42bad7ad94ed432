//! Two clients of one cluster: each keeps what it holds.

use shoal::LocalCluster;

#[shoal::remote]
fn cube(x: u64) -> u64 {
    x * x * x
}

#[shoal::remote]
fn sum(values: Vec<u64>) -> u64 {
    values.iter().sum()
}

#[test]
fn a_second_client_shares_the_cluster_and_keeps_its_results_when_the_first_lets_go() {
    let cluster = LocalCluster::builder().processes(true).workers(2).threads_per_worker(1).build().expect("cluster");
    let one = cluster.client().expect("first client");
    let two = shoal::Client::connect(&cluster.address().to_string()).expect("second client, by address");

    // Both submit: some work of their own, some the same pure calls.
    let mine = one.map(cube, 0..50u64);
    let theirs = two.map(cube, 25..75u64);
    let shared_one = one.submit(sum, (&mine,));
    let shared_two = two.submit(cube, (30u64,));
    assert_eq!(mine[30].key(), shared_two.key(), "one key, computed once, held by both");
    let expected_mine: Vec<u64> = (0..50u64).map(|x| x * x * x).collect();
    let expected_theirs: Vec<u64> = (25..75u64).map(|x| x * x * x).collect();
    assert_eq!(one.gather(&mine), Ok(expected_mine.clone()));
    assert_eq!(two.gather(&theirs), Ok(expected_theirs.clone()));
    assert_eq!(shared_one.result(), Ok(expected_mine.iter().sum()));

    // The first client drops every future, then goes away altogether.
    drop((mine, shared_one));
    assert_eq!(one.known_keys(), 0);
    // A round trip on the first client's connection: its releases, sent
    // before, have been handled when the answer comes.
    one.scheduler_info().expect("info");
    assert_eq!(two.gather(&theirs), Ok(expected_theirs.clone()), "results both held survive");
    drop(one);
    // The disconnection reaches the scheduler on its own connection; give it
    // time to be handled before looking.
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(shared_two.result(), Ok(27_000));
    assert_eq!(two.gather(&theirs), Ok(expected_theirs.clone()), "still there after the first disconnects");
    let total = two.submit(sum, (&theirs,));
    assert_eq!(total.result(), Ok(expected_theirs.iter().sum()), "and usable as arguments");
    let holders = two.who_has(&theirs).expect("who has");
    assert!(holders.iter().all(|h| !h.is_empty()), "{holders:?}");
}
