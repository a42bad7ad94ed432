//! Memory limits: reported; a worker over its target spills to disk, and
//! one over its pause threshold takes no new tasks until it holds less.

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

/// One worker process of one thread, limited to 1 MB and never spilling.
fn one_worker_of_one_megabyte_without_spilling() -> LocalCluster {
    LocalCluster::builder()
        .processes(true)
        .workers(1)
        .threads_per_worker(1)
        .memory_limit(1_000_000)
        .memory_target(None)
        .build()
        .expect("cluster")
}

#[test]
fn a_worker_over_its_memory_limit_pauses_until_results_are_released() {
    let cluster = one_worker_of_one_megabyte_without_spilling();
    let client = cluster.client().expect("client");
    assert_eq!(client.scheduler_info().expect("info")[0].memory_limit, 1_000_000, "reported");

    // 900 kB held: over 80 % of 1 MB.
    let blobs = client.map_with(&TaskOptions::new().pure(false), blob, [300u64, 300, 300]);
    assert_eq!(client.gather(&blobs).expect("made").iter().map(Vec::len).sum::<usize>(), 900_000);
    let waiting = client.map(plus_one, 0..5u64);
    std::thread::sleep(Duration::from_millis(700));
    assert!(waiting.iter().all(|f| f.status() == Status::Pending), "a paused worker starts nothing");
    // What it holds reaches the scheduler with its heartbeats (every 0.5 s).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while client.scheduler_info().expect("info")[0].memory < 900_000 {
        assert!(std::time::Instant::now() < deadline, "the memory held was never reported");
        std::thread::sleep(Duration::from_millis(100));
    }

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

#[test]
fn tasks_queued_on_a_worker_before_it_paused_wait_too() {
    let cluster = one_worker_of_one_megabyte_without_spilling();
    let client = cluster.client().expect("client");
    // All five go to the worker at once; it pauses once it holds over 800 kB
    // (after the third, or the fourth if a thread took it first).
    let blobs = client.map_with(&TaskOptions::new().pure(false), blob, [300u64; 5]);
    std::thread::sleep(Duration::from_millis(1000));
    let done = blobs.iter().filter(|f| f.done()).count();
    assert!((3..=4).contains(&done), "{done} of 5 ran");
    let (finished, waiting): (Vec<_>, Vec<_>) = blobs.into_iter().partition(|f| f.done());
    drop(finished);
    assert!(shoal::wait_timeout(&waiting, Duration::from_secs(20)).is_ok(), "resumed once results were released");
}

fn files_under(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries.flatten().map(|e| if e.path().is_dir() { files_under(&e.path()) } else { 1 }).sum::<usize>()
        })
        .unwrap_or(0)
}

#[shoal::remote]
fn total_len(parts: Vec<Vec<u8>>) -> usize {
    parts.iter().map(Vec::len).sum()
}

#[test]
fn a_worker_over_its_target_spills_to_disk_and_reads_back() {
    let dir = std::env::temp_dir().join(format!("shoal-spill-test-{}", std::process::id()));
    let cluster = LocalCluster::builder()
        .processes(true)
        .workers(1)
        .threads_per_worker(1)
        .memory_limit(1_000_000)
        .local_directory(&dir)
        .build()
        .expect("cluster");
    let client = cluster.client().expect("client");
    // 3 MB of results on a worker that keeps 600 kB in memory.
    let blobs = client.map_with(&TaskOptions::new().pure(false), blob, [300u64; 10]);
    assert!(shoal::wait_timeout(&blobs, Duration::from_secs(20)).is_ok(), "no pause: spilling makes room");
    let on_disk = files_under(&dir);
    assert!((8..=10).contains(&on_disk), "{on_disk} results spilled");

    assert_eq!(client.submit(total_len, (&blobs,)).result(), Ok(3_000_000), "tasks read spilled inputs");
    let back = client.gather(&blobs).expect("gathers from disk");
    assert!(back.iter().all(|b| b.len() == 300_000 && b.iter().all(|&x| x == 7)));

    drop(blobs);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while files_under(&dir) > 0 {
        assert!(std::time::Instant::now() < deadline, "released results leave the disk too");
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(client);
    drop(cluster);
    let left: Vec<_> = std::fs::read_dir(&dir).map(|e| e.flatten().map(|e| e.path()).collect()).unwrap_or_default();
    assert!(left.is_empty(), "the cluster removes its workers' spill directories: {left:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Allocates and touches `mb` MiB, holds it for `hold_ms`, and returns a sum.
#[shoal::remote]
fn hog(mb: u64, hold_ms: u64) -> u64 {
    let held = vec![1u8; (mb as usize) << 20];
    std::thread::sleep(Duration::from_millis(hold_ms));
    held.iter().step_by(4096).map(|&b| u64::from(b)).sum()
}

#[test]
fn a_worker_past_its_memory_terminate_fraction_is_replaced_and_the_hungry_task_fails() {
    let cluster = LocalCluster::builder()
        .processes(true)
        .workers(2)
        .threads_per_worker(1)
        .memory_limit(150 << 20)
        .memory_terminate(Some(0.95))
        .build()
        .expect("cluster");
    let client = cluster.client().expect("client");
    let before = cluster.worker_pids();
    let err = client.submit(hog, (300u64, 5_000u64)).result().expect_err("no worker holds 300 MiB in 150");
    assert!(matches!(err, shoal::Error::WorkerLost { attempts: 4, .. }), "{err}");
    // Four processes were killed and replaced; the cluster is whole and works.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while client.scheduler_info().expect("info").len() < 2 {
        assert!(std::time::Instant::now() < deadline, "the replacements never joined");
        std::thread::sleep(Duration::from_millis(20));
    }
    let after = cluster.worker_pids();
    assert_eq!(after.len(), 2);
    assert!(after.iter().any(|p| !before.contains(p)), "new processes: {before:?} -> {after:?}");
    assert_eq!(client.gather(&client.map(plus_one, 0..4u64)).expect("still works"), vec![1, 2, 3, 4]);
    // Light tasks are not affected by the guard.
    let small = client.submit(hog, (10u64, 0u64)).result().expect("10 MiB fits");
    assert_eq!(small, 10 << 8);
}

#[test]
fn a_terminate_fraction_needs_a_limit_and_a_positive_number() {
    let err = LocalCluster::builder().memory_terminate(Some(0.95)).build().err().expect("no limit");
    assert!(err.to_string().contains("needs a memory_limit"), "{err}");
    let err = LocalCluster::builder().memory_limit(1 << 30).memory_terminate(Some(-1.0)).build().err().expect("bad");
    assert!(err.to_string().contains("memory_terminate -1"), "{err}");
}

/// Without a nanny watching it (as in a job script, whose shell loop only
/// restarts what exits to restart), a worker process past its memory
/// terminate fraction ends itself, with the restart exit code.
#[test]
fn a_worker_past_its_terminate_fraction_ends_itself_for_a_new_one() {
    let scheduler = shoal_net::start_scheduler(shoal_net::SchedulerServerConfig::default()).expect("scheduler starts");
    let launch = shoal::deploy::WorkerLaunch {
        scheduler: Some(scheduler.address().into()),
        name: Some("self-guarded".into()),
        threads: Some(1),
        memory_limit: 200 << 20,
        memory_terminate: Some(0.9),
        nanny: true,
        ..Default::default()
    };
    let mut command = std::process::Command::new(std::env::current_exe().expect("this test binary"));
    launch.apply(&mut command);
    let mut worker = command.stdin(std::process::Stdio::null()).spawn().expect("the worker starts");
    let client = shoal::Client::connect(&scheduler.address().to_string()).expect("client");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while client.scheduler_info().expect("info").is_empty() {
        assert!(std::time::Instant::now() < deadline, "the worker never joined");
        std::thread::sleep(Duration::from_millis(20));
    }
    let _hungry = client.submit(hog, (400u64, 5_000u64));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = worker.try_wait().expect("status") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = worker.kill();
            panic!("the worker never ended past 90 % of its limit");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(shoal::RESTART_EXIT_CODE), "it asks its nanny for a new process");
}
