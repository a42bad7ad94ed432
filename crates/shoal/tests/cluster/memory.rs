//! Memory limits: reported, and a worker over its limit takes no new tasks
//! until it holds less again.

use std::time::Duration;

use shoal::{LocalCluster, Status, TaskOptions};

#[shoal::remote]
fn blob(kb: u64) -> Vec<u8> {
    vec![7; kb as usize * 1000]
}

#[shoal::remote]
fn plus_one(x: u64) -> u64 {
    x + 1
}

#[test]
fn a_worker_over_its_memory_limit_pauses_until_results_are_released() {
    let cluster = LocalCluster::builder()
        .processes(true)
        .workers(1)
        .threads_per_worker(1)
        .memory_limit(1_000_000)
        .build()
        .expect("cluster");
    let client = cluster.client().expect("client");
    assert_eq!(client.scheduler_info().expect("info")[0].memory_limit, 1_000_000, "reported");

    // 900 kB held: over 80 % of 1 MB.
    let blobs = client.map_with(&TaskOptions::new().pure(false), blob, [300u64, 300, 300]);
    assert_eq!(client.gather(&blobs).expect("made").iter().map(Vec::len).sum::<usize>(), 900_000);
    let waiting = client.map(plus_one, 0..5u64);
    std::thread::sleep(Duration::from_millis(700));
    assert!(waiting.iter().all(|f| f.status() == Status::Pending), "a paused worker starts nothing");

    // Releasing two results brings it to 300 kB: it resumes.
    drop(blobs[1..].to_vec());
    let kept = blobs[0].clone();
    drop(blobs);
    assert_eq!(client.gather(&waiting), Ok((1..=5u64).collect::<Vec<_>>()));
    assert_eq!(kept.result().map(|b| b.len()), Ok(300_000), "what it kept is intact");
}

#[test]
fn workers_without_a_limit_never_pause() {
    let cluster = LocalCluster::builder().processes(false).workers(1).threads_per_worker(1).build().expect("cluster");
    let client = cluster.client().expect("client");
    assert_eq!(client.scheduler_info().expect("info")[0].memory_limit, 0);
    let blobs = client.map_with(&TaskOptions::new().pure(false), blob, [2000u64; 4]);
    shoal::wait(&blobs);
    assert_eq!(client.submit(plus_one, (1u64,)).result_timeout(Duration::from_secs(10)), Ok(2));
}
