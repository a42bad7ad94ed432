//! scatter, run, restart and persist on a LocalCluster of worker processes.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use shoal::{Error, LocalCluster, Status, delayed};

use super::{add, square};

fn processes(workers: usize) -> LocalCluster {
    LocalCluster::builder().processes(true).workers(workers).threads_per_worker(1).build().expect("cluster starts")
}

fn worker_name() -> String {
    std::env::var("SHOAL_WORKER_NAME").unwrap_or_else(|_| "not a worker".into())
}

#[shoal::remote]
fn located_len(data: Vec<u8>) -> (String, usize) {
    (worker_name(), data.len())
}

#[shoal::remote]
fn total_len(parts: Vec<Vec<u8>>) -> usize {
    parts.iter().map(Vec::len).sum()
}

#[shoal::remote]
fn pid_of(tag: String) -> (String, String, u32) {
    (tag, worker_name(), std::process::id())
}

#[test]
fn scattered_data_lives_on_the_workers_and_tasks_run_where_it_is() {
    let cluster = processes(2);
    let client = cluster.client().expect("client");
    // 4 MB each: the scheduler would rather run a task where its input is
    // than move it.
    let blobs: Vec<Vec<u8>> = (0..4u8).map(|i| vec![i; 4_000_000]).collect();
    let futures = client.scatter(blobs.clone()).expect("scatters");
    assert!(futures.iter().all(|f| f.status() == Status::Finished), "finished as soon as scatter returns");
    assert!(futures.iter().all(|f| f.key().prefix() == "Vec"), "keys named after the type: {:?}", futures[0].key());

    let holders = client.who_has(&futures).expect("who has");
    assert!(holders.iter().all(|h| h.len() == 1), "{holders:?}");
    let mut used: Vec<&str> = holders.iter().map(|h| h[0].as_str()).collect();
    used.sort();
    used.dedup();
    assert_eq!(used, ["local-0", "local-1"], "spread over the workers");

    let ran = client.gather(&client.map(located_len, &futures)).expect("tasks read scattered data");
    for ((place, len), holder) in ran.iter().zip(&holders) {
        assert_eq!(*len, 4_000_000);
        assert_eq!(place, &holder[0], "ran where the data was put");
    }
    assert_eq!(client.submit(total_len, (&futures,)).result(), Ok(16_000_000), "as a list argument too");
    assert_eq!(client.gather(&futures).expect("gathers"), blobs, "and back out unchanged");

    drop(futures);
    assert_eq!(client.known_keys(), 0, "dropped futures are released");
}

#[test]
fn scattered_data_lost_with_its_worker_fails_with_a_clear_error() {
    let cluster = processes(2);
    let client = cluster.client().expect("client");
    let futures = client.scatter([10u64, 20u64]).expect("scatters");
    let holders = client.who_has(&futures).expect("who has");
    let pids: BTreeMap<String, u32> =
        client.run(pid_of, ("x".to_string(),)).expect("runs").into_iter().map(|(w, (_, _, pid))| (w, pid)).collect();
    let victim = &holders[0][0];
    let killed = std::process::Command::new("kill").args(["-9", &pids[victim].to_string()]).status().expect("kill");
    assert!(killed.success());
    let err = futures[0].result().expect_err("its only copy is gone");
    assert!(matches!(&err, Error::TaskFailed { message, .. } if message.contains("scatter it again")), "{err}");
    assert_eq!(futures[1].result(), Ok(20), "the other worker's data is intact");
}

#[shoal::remote]
fn fails_on(worker: String) -> Result<u32, String> {
    if worker_name() == worker { Err(format!("refused on {worker}")) } else { Ok(1) }
}

#[shoal::remote]
fn sleepy(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

#[test]
fn run_calls_a_function_on_every_worker_at_once_beside_busy_tasks() {
    let cluster = processes(2);
    let client = cluster.client().expect("client");
    // Both single-threaded workers busy for two seconds.
    let busy = client.map(sleepy, [2000u64, 2001]);
    std::thread::sleep(Duration::from_millis(100));

    let started = Instant::now();
    let ran = client.run(pid_of, ("tag".to_string(),)).expect("runs everywhere");
    assert!(started.elapsed() < Duration::from_millis(1500), "outside the task queue: {:?}", started.elapsed());
    assert_eq!(ran.keys().map(String::as_str).collect::<Vec<_>>(), ["local-0", "local-1"]);
    let mut pids: Vec<u32> = ran.values().map(|(_, _, pid)| *pid).collect();
    pids.sort();
    let mut expected = cluster.worker_pids();
    expected.sort();
    assert_eq!(pids, expected, "ran in the worker processes");
    for (name, (tag, seen_name, _)) in &ran {
        assert_eq!((tag.as_str(), seen_name), ("tag", name));
    }

    let err = client.run(fails_on, ("local-1".to_string(),)).expect_err("fails on one worker");
    assert_eq!(
        err,
        Error::RunFailed {
            function: format!("{}::fails_on", module_path!()),
            worker: "local-1".into(),
            message: "refused on local-1".into()
        }
    );
    let err = client.run(|x: u64| x, (1u64,)).expect_err("closures cannot leave the process");
    assert!(matches!(err, Error::NotRemote { .. }) && err.to_string().contains("#[shoal::remote]"), "{err}");
    let err = client.run(sleepy, (&busy[0],)).expect_err("arguments are values");
    assert!(matches!(err, Error::Unsupported { .. }), "{err}");
    assert_eq!(client.gather(&busy), Ok(vec![2000, 2001]));
}

static CALLS: AtomicU64 = AtomicU64::new(0);

#[shoal::remote]
fn count_calls(_x: u64) -> u64 {
    CALLS.fetch_add(1, Ordering::SeqCst) + 1
}

#[test]
fn restart_replaces_worker_processes_and_drops_every_future() {
    let cluster = processes(2);
    let client = cluster.client().expect("client");
    let other = cluster.client().expect("a second client");
    let done = client.submit(pid_of, ("before".to_string(),));
    assert!(done.result().is_ok());
    let pending = client.submit(sleepy, (60_000u64,));
    let theirs = other.scatter([7u64]).expect("scatters");
    let calls = client.run(count_calls, (0u64,)).expect("runs");
    assert!(calls.values().all(|&n| n == 1));
    let old_pids = cluster.worker_pids();

    let started = Instant::now();
    client.restart().expect("restarts");
    assert!(started.elapsed() < Duration::from_secs(10), "a long task does not hold up a restart");

    assert_eq!(done.result().map(|_| ()), Err(Error::Restarted { key: done.key().to_string() }));
    assert_eq!(pending.result(), Err(Error::Restarted { key: pending.key().to_string() }));
    assert!(matches!(theirs[0].result(), Err(Error::Restarted { .. })), "every client's futures");
    let new_pids = cluster.worker_pids();
    assert_eq!(new_pids.len(), 2);
    assert!(new_pids.iter().all(|p| !old_pids.contains(p)), "new processes: {old_pids:?} -> {new_pids:?}");
    for pid in old_pids {
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists(), "old worker {pid} still runs");
    }
    let mut names: Vec<String> = client.scheduler_info().expect("info").into_iter().map(|w| w.name).collect();
    names.sort();
    assert_eq!(names, ["local-0", "local-1"], "the same workers, new processes");
    let calls = client.run(count_calls, (0u64,)).expect("runs");
    assert!(calls.values().all(|&n| n == 1), "fresh process state: {calls:?}");
    let again = client.submit(pid_of, ("before".to_string(),));
    assert_eq!(again.key(), done.key(), "the same pure call");
    assert!(again.result().is_ok(), "runs again after the restart");
    assert_eq!(other.gather(&other.scatter([8u64]).expect("scatters")), Ok(vec![8]));
}

#[test]
fn restart_of_thread_workers_clears_them_in_place() {
    let cluster = LocalCluster::builder().processes(false).workers(2).threads_per_worker(1).build().expect("cluster");
    let client = cluster.client().expect("client");
    let kept = client.scatter([1u64, 2]).expect("scatters");
    client.restart().expect("restarts");
    assert!(matches!(kept[0].result(), Err(Error::Restarted { .. })));
    assert_eq!(client.scheduler_info().expect("info").len(), 2);
    assert_eq!(client.gather(&client.map(sleepy, [1u64, 2, 3])), Ok(vec![1, 2, 3]));
}

#[test]
fn restart_needs_a_cluster() {
    let client = shoal::Client::sync();
    let err = client.restart().expect_err("nothing to restart");
    assert!(matches!(err, Error::Unsupported { .. }) && err.to_string().contains("restart"), "{err}");
}

#[test]
fn persisted_delayed_values_stay_on_the_cluster_and_feed_later_work() {
    let cluster = processes(2);
    let client = cluster.client().expect("client");
    let squares: Vec<_> = (1..=6u64).map(|i| delayed(square, (i,))).collect();
    let pairs: Vec<_> = squares.chunks(2).map(|p| delayed(add, (&p[0], &p[1]))).collect();
    let kept = client.persist(&pairs).expect("persists");
    drop((squares, pairs));
    shoal::wait(&kept);
    assert!(kept.iter().all(|f| f.status() == Status::Finished), "computed without being asked for");
    let holders = client.who_has(&kept).expect("who has");
    assert!(holders.iter().all(|h| !h.is_empty()), "kept on workers: {holders:?}");
    assert_eq!(client.known_keys(), 3, "only the persisted values are held");

    assert_eq!(client.submit(add, (&kept[0], &kept[1])).result(), Ok(5 + 25), "futures feed submits");
    let lazy = delayed(add, (&kept[2], 1000u64));
    assert_eq!(lazy.compute_with(&client), Ok(61 + 1000), "and delayed calls");
    assert_eq!(client.gather(&kept), Ok(vec![5, 25, 61]));
    drop(kept);
    assert_eq!(client.known_keys(), 1, "the delayed call still refers to one of them");
    drop(lazy);
    assert_eq!(client.known_keys(), 0);
}

#[shoal::remote]
fn sleep_ms(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

#[shoal::remote]
fn touch(path: String) -> bool {
    std::fs::write(path, b"done").is_ok()
}

/// Dropping the last future of a task that has not started cancels it;
/// `fire_and_forget` keeps one running to its end.
#[test]
fn dropped_futures_cancel_queued_work_unless_fired_and_forgotten() {
    let cluster = processes(1);
    let client = cluster.client().expect("client");
    let dir = std::env::temp_dir().join(format!("shoal-fire-and-forget-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = |name: &str| dir.join(name).to_string_lossy().into_owned();
    // The only worker thread is busy, so both side effects wait in line.
    let blocker = client.submit(sleep_ms, (800u64,));
    let dropped = client.submit(touch, (path("dropped"),));
    let fired = client.submit(touch, (path("fired"),));
    shoal::fire_and_forget(std::slice::from_ref(&fired));
    drop((dropped, fired));
    assert_eq!(blocker.result(), Ok(800));
    let deadline = Instant::now() + Duration::from_secs(20);
    while !std::path::Path::new(&path("fired")).exists() {
        assert!(Instant::now() < deadline, "the fire-and-forget task never ran");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The worker ran its queue in order: the cancelled task's turn is past.
    let after = client.submit(sleep_ms, (1u64,)).result();
    let cancelled_ran = std::path::Path::new(&path("dropped")).exists();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(after, Ok(1));
    assert!(!cancelled_ran, "a task whose futures were all dropped before it started still ran");
}

/// `progress` of futures on a cluster draws its last line before it
/// returns, so what the program prints next starts a line of its own; a
/// ProgressBar around a computation on a cluster says, once, that it
/// cannot count it. Run in a child process whose standard output and error
/// go to one file, in the order they were written (not a terminal: the bar
/// draws its summary line).
#[test]
fn progress_on_a_cluster_ends_its_line_before_it_returns() {
    const CHILD: &str = "SHOAL_TEST_PROGRESS_CHILD";
    if std::env::var_os(CHILD).is_some() {
        let cluster = processes(2);
        let client = cluster.client().expect("client");
        for round in 0..4 {
            let futures = client.map_with(&shoal::TaskOptions::new().pure(false), square, 0..200u64);
            assert_eq!(shoal::progress(&futures), 200);
            println!("after progress {round}");
        }
        let bar = shoal::ProgressBar::enable();
        for _ in 0..2 {
            assert_eq!(delayed(square, (3u64,)).compute_with(&client), Ok(9));
        }
        assert_eq!(bar.last_counts(), None, "nothing counted on a cluster");
        println!("after compute");
        return;
    }
    let path = std::env::temp_dir().join(format!("shoal-progress-{}.txt", std::process::id()));
    let file = std::fs::File::create(&path).expect("output file");
    let status = std::process::Command::new(std::env::current_exe().expect("this test binary"))
        .args(["--exact", "api::progress_on_a_cluster_ends_its_line_before_it_returns", "--nocapture"])
        .env(CHILD, "1")
        .stdout(file.try_clone().expect("a second handle"))
        .stderr(file)
        .status()
        .expect("the child runs");
    let out = std::fs::read_to_string(&path).expect("output");
    let _ = std::fs::remove_file(&path);
    assert!(status.success(), "{out}");
    let mut rest = out.as_str();
    for round in 0..4 {
        let bar = rest.find("100% Completed | 200 tasks").unwrap_or_else(|| panic!("no bar in round {round}:\n{out}"));
        let after = rest.find(&format!("after progress {round}")).unwrap_or_else(|| panic!("round {round}:\n{out}"));
        assert!(bar < after, "round {round}: the bar ends before what is printed next:\n{out}");
        rest = &rest[after..];
    }
    assert_eq!(out.matches("a ProgressBar counts computations on this process's executor").count(), 1, "{out}");
    assert!(out.contains("shoal::progress(&client.persist(&values)?)") && out.contains("after compute"), "{out}");
}

#[shoal::remote]
fn ray_increment(x: u64) -> u64 {
    x + 1
}

#[shoal::remote]
fn on_a_gpu_worker(x: u64) -> (String, u64) {
    (worker_name(), x)
}

/// Ray's spelling on a cluster of worker processes: `.remote`, per-call
/// resources, `get`, `put` and Ray's `wait`, mixed with Dask's.
#[test]
fn the_ray_spelling_runs_on_a_cluster() {
    use shoal::ray::{self, Remote, RemoteOptions};
    let cluster = LocalCluster::builder()
        .workers(2)
        .threads_per_worker(1)
        .worker_resources(1, [("gpu", 1.0)])
        .build()
        .expect("cluster");
    let client = cluster.client().expect("client");
    let refs: Vec<_> = (0..100u64).map(|x| ray_increment.remote(x)).collect();
    assert_eq!(shoal::get(&refs).expect("results"), (1..=100).collect::<Vec<u64>>());
    let gpu = RemoteOptions::new().num_gpus(1.0);
    let placed = shoal::get(&(0..4u64).map(|x| on_a_gpu_worker.options(gpu.clone()).remote(x)).collect::<Vec<_>>())
        .expect("runs where the GPU is");
    assert!(placed.iter().all(|(w, _)| w == "local-1"), "{placed:?}");
    let stored = shoal::put(41u64).expect("stored on a worker");
    assert_eq!(ray_increment.remote(&stored).result(), Ok(42));
    let (ready, rest) = ray::wait(&refs, 100, Some(Duration::from_secs(10)));
    assert_eq!((ready.len(), rest.len()), (100, 0));
    // Mixed with Dask's spelling: the same futures.
    assert_eq!(client.gather(&refs[..2]).expect("gathered"), vec![1, 2]);
}

/// Workers offer their task slots as CPUs: a call asking for more CPUs
/// than any worker has waits, saying why (Ray's `num_cpus`).
#[test]
fn workers_offer_their_threads_as_cpus() {
    use shoal::ray::{Remote, RemoteOptions};
    let cluster = LocalCluster::builder().workers(2).threads_per_worker(1).build().expect("cluster");
    let client = cluster.client().expect("client");
    assert!(client.scheduler_info().expect("info").iter().all(|w| w.resources == vec![("cpu".to_string(), 1.0)]));
    let one = ray_increment.options(RemoteOptions::new().num_cpus(1.0)).remote(1u64);
    assert_eq!(one.result(), Ok(2));
    let two = ray_increment.options(RemoteOptions::new().num_cpus(2.0)).remote(2u64);
    let deadline = Instant::now() + Duration::from_secs(10);
    let reason = loop {
        if let Some(reason) = two.pending_reason() {
            break reason;
        }
        assert!(
            Instant::now() < deadline,
            "no reason given: {:?} {:?}",
            two.status(),
            two.result_timeout(Duration::from_millis(1))
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(reason.contains("cpu=2"), "{reason}");
}
