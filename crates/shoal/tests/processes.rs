//! A LocalCluster of real worker processes: this test binary, re-executed,
//! becomes each worker before the test harness starts.

use std::time::Duration;

use shoal::LocalCluster;

#[shoal::remote]
fn square(x: u64) -> u64 {
    x * x
}

#[shoal::remote]
fn slow_square(x: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(30));
    x * x
}

const THREAD_VARS: [&str; 3] = ["OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"];

#[shoal::remote]
fn thread_vars() -> Vec<String> {
    THREAD_VARS.iter().map(|v| std::env::var(v).unwrap_or_default()).collect()
}

fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn worker_processes_run_tasks_and_leave_nothing_behind() {
    // Once closed explicitly, once dropped.
    for close in [true, false] {
        let cluster =
            LocalCluster::builder().processes(true).workers(2).threads_per_worker(1).build().expect("cluster");
        let pids = cluster.worker_pids();
        assert_eq!(pids.len(), 2);
        assert!(pids.iter().all(|&p| alive(p) && p != std::process::id()));
        let client = cluster.client().expect("client");
        let mut names: Vec<String> = client.scheduler_info().expect("info").into_iter().map(|w| w.name).collect();
        names.sort();
        assert_eq!(names, vec!["local-0", "local-1"]);
        let values = client.gather(&client.map(square, 0..1000u64)).expect("results");
        assert_eq!(values.iter().sum::<u64>(), (0..1000u64).map(|x| x * x).sum());
        // One thread per numeric library, unless this process chose.
        let chosen: Vec<String> = THREAD_VARS.iter().map(|v| std::env::var(v).unwrap_or_else(|_| "1".into())).collect();
        assert_eq!(client.submit(thread_vars, ()).result().expect("runs"), chosen);
        drop(client);
        if close {
            cluster.close();
        } else {
            drop(cluster);
        }
        for pid in pids {
            assert!(!alive(pid), "worker process {pid} outlived its cluster (closed: {close})");
        }
    }
}

/// Sends SIGKILL to a worker process, as an operator or the kernel's
/// out-of-memory killer would.
fn kill(pid: u32) {
    let killed = std::process::Command::new("kill").args(["-9", &pid.to_string()]).status().expect("kill runs");
    assert!(killed.success(), "kill -9 {pid}");
}

#[test]
fn a_worker_killed_mid_computation_does_not_change_the_result() {
    let cluster = LocalCluster::builder().processes(true).workers(2).threads_per_worker(1).build().expect("cluster");
    let client = cluster.client().expect("client");
    let futures = client.map(slow_square, 0..40u64);
    std::thread::sleep(Duration::from_millis(150));
    let victim = cluster.worker_pids()[0];
    kill(victim);
    let values = client.gather(&futures).expect("every task still finishes");
    assert_eq!(values, (0..40u64).map(|x| x * x).collect::<Vec<_>>());
}

#[shoal::remote]
fn pid(_x: u64) -> u32 {
    std::process::id()
}

/// `x * x`, 4 096 times: too big to travel with its report, so only its
/// worker holds it.
#[shoal::remote]
fn slower_square(x: u64) -> Vec<u64> {
    std::thread::sleep(Duration::from_millis(300));
    vec![x * x; 4096]
}

#[test]
fn finished_results_lost_with_a_killed_worker_are_recomputed_when_gathered() {
    let cluster = LocalCluster::builder().processes(true).workers(2).threads_per_worker(1).build().expect("cluster");
    let client = cluster.client().expect("client");
    // Slow enough that a lost result is still being computed again when the
    // client asks for it.
    let futures = client.map(slower_square, 0..6u64);
    shoal::wait(&futures);
    let holders = client.who_has(&futures).expect("who has");
    let victim_name = holders[0][0].clone();
    let victim_holds = holders.iter().filter(|h| h.contains(&victim_name)).count();
    assert!(victim_holds > 0);
    let pids = client.run(pid, (0u64,)).expect("runs");
    kill(pids[&victim_name]);
    // Gathered at once: the scheduler may not even know yet that the worker is gone.
    let values = client.gather(&futures).expect("lost results are computed again");
    assert_eq!(values, (0..6u64).map(|x| vec![x * x; 4096]).collect::<Vec<_>>());
    let now = client.who_has(&futures).expect("who has");
    assert!(now.iter().all(|h| !h.is_empty() && !h.contains(&victim_name)), "{now:?}");
}

#[shoal::remote]
fn cube(x: u64) -> u64 {
    x * x * x
}

/// Small results come to the client with the news that they finished: once
/// reported, they are read without their worker.
#[test]
fn small_results_reported_to_the_client_outlive_their_worker() {
    let cluster = LocalCluster::builder().processes(true).workers(2).threads_per_worker(1).build().expect("cluster");
    let client = cluster.client().expect("client");
    let futures = client.map(cube, 0..6u64);
    shoal::wait(&futures);
    for pid in cluster.worker_pids() {
        kill(pid);
    }
    // Without a worker nothing could be fetched or computed again: if the
    // client went looking for them, it would wait for ever.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let one: Vec<u64> = futures.iter().map(|f| f.result().expect("read where it came")).collect();
        let all = client.gather(&futures).expect("gathered where they came");
        let _ = tx.send((one, all));
    });
    let (one, all) = rx.recv_timeout(Duration::from_secs(30)).expect("the results were read without their worker");
    let expected: Vec<u64> = (0..6u64).map(|x| x * x * x).collect();
    assert_eq!((one, all), (expected.clone(), expected));
}
