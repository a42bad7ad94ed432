//! `shoal worker` with real processes: the CLI starts this test binary as a
//! worker of a scheduler, restarts it when the cluster restarts, and it
//! outlives its scheduler for the death timeout, no longer.

use std::net::SocketAddr;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use shoal::Client;
use shoal_net::{RunningScheduler, SchedulerServerConfig, start_scheduler};

#[shoal::remote]
fn who(_x: u64) -> (String, u32, String) {
    let name = std::env::var("SHOAL_WORKER_NAME").unwrap_or_default();
    let vars: Vec<String> = ["OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "GLIBC_TUNABLES"]
        .iter()
        .map(|v| std::env::var(v).unwrap_or_default())
        .collect();
    (name, std::process::id(), vars.join(" "))
}

fn scheduler_at(listen: SocketAddr) -> RunningScheduler {
    start_scheduler(SchedulerServerConfig { listen, ..SchedulerServerConfig::default() }).expect("scheduler starts")
}

fn shoal() -> Command {
    Command::new(env!("CARGO_BIN_EXE_shoal"))
}

fn this_program() -> String {
    std::env::current_exe().expect("test binary").to_string_lossy().into_owned()
}

/// Waits until the scheduler knows a worker of this name.
fn joined(client: &Client, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let info = client.scheduler_info().expect("info");
        if info.iter().any(|w| w.name == name) {
            return;
        }
        assert!(Instant::now() < deadline, "worker {name} did not join: {info:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `shoal worker tcp://address EXTRA… -- <this test program>`.
fn worker_command(address: SocketAddr, extra: &[&str]) -> Command {
    let mut command = shoal();
    command
        .arg("worker")
        .arg(format!("tcp://{address}"))
        .args(extra)
        .arg("--")
        .arg(this_program())
        .stdin(Stdio::null());
    command
}

fn start_worker(address: SocketAddr, extra: &[&str]) -> Child {
    worker_command(address, extra).spawn().expect("shoal worker starts")
}

fn wait_exit(child: &mut Child, within: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

#[test]
fn shoal_worker_runs_the_program_as_a_worker_restarts_it_and_outlives_its_scheduler_for_the_death_timeout() {
    let scheduler = scheduler_at(SocketAddr::from(([127, 0, 0, 1], 0)));
    let address = scheduler.address();
    // The user chose MKL's threads; the other two are shoal's to set.
    let mut worker = worker_command(
        address,
        &["--name", "cli-w", "--threads", "2", "--resources", "gpu=1, mem=2GB", "--death-timeout", "3"],
    )
    .env("MKL_NUM_THREADS", "3")
    .env_remove("OMP_NUM_THREADS")
    .env_remove("OPENBLAS_NUM_THREADS")
    .spawn()
    .expect("shoal worker starts");

    let client = Client::connect(&address.to_string()).expect("client");
    joined(&client, "cli-w");
    let info = client.scheduler_info().expect("info");
    let w = info.iter().find(|w| w.name == "cli-w").expect("listed");
    assert_eq!(w.threads, 2);
    let offered = vec![("gpu".to_string(), 1.0), ("mem".to_string(), 2e9), ("cpu".to_string(), 2.0)];
    assert_eq!(w.resources, offered, "its two threads are its CPUs");
    let on_gpu = shoal::TaskOptions::new().resources([("gpu", 1.0)]).pure(false);
    let (name, first_pid, omp) = client.submit_with(&on_gpu, who, (1u64,)).result().expect("runs");
    let tunables = std::env::var("GLIBC_TUNABLES").unwrap_or_else(|_| "glibc.malloc.hugetlb=1".into());
    assert_eq!(
        (name.as_str(), omp),
        ("cli-w", format!("1 3 1 {tunables}")),
        "named, one thread per numeric library unless the user chose, and huge pages for malloc unless set otherwise"
    );
    assert_ne!(first_pid, worker.id(), "the program runs as a child of shoal worker");

    // A restart: the program exits and shoal worker starts a new process.
    client.restart().expect("restarts");
    let (_, second_pid, _) = client.submit_with(&on_gpu, who, (2u64,)).result().expect("runs after restart");
    assert_ne!(second_pid, first_pid, "a new process");
    assert!(!std::path::Path::new(&format!("/proc/{first_pid}")).exists());
    drop(client);

    // The scheduler goes away and comes back on the same address within the
    // death timeout: the worker joins it again.
    scheduler.stop();
    std::thread::sleep(Duration::from_millis(1500));
    assert!(worker.try_wait().expect("try_wait").is_none(), "the worker waits for its scheduler");
    let scheduler = scheduler_at(address);
    let client = Client::connect(&address.to_string()).expect("client of the new scheduler");
    joined(&client, "cli-w");
    let (_, third_pid, _) = client.submit(who, (3u64,)).result().expect("runs on the new scheduler");
    assert_eq!(third_pid, second_pid, "the same process reconnected");
    drop(client);

    // Gone for good: the worker exits after the death timeout, not before.
    scheduler.stop();
    let gone = Instant::now();
    let status = wait_exit(&mut worker, Duration::from_secs(15)).expect("the worker exits");
    let waited = gone.elapsed();
    assert!(status.success(), "{status}");
    assert!(waited >= Duration::from_millis(2500) && waited < Duration::from_secs(8), "exited after {waited:?}");
    assert!(!std::path::Path::new(&format!("/proc/{second_pid}")).exists(), "the program is gone too");
}

#[test]
fn a_worker_started_before_its_scheduler_waits_for_it() {
    // A free port, then nothing listening on it for a while.
    let address = scheduler_at(SocketAddr::from(([127, 0, 0, 1], 0))).address();
    let mut worker = start_worker(address, &["--name", "early", "--death-timeout", "3"]);
    std::thread::sleep(Duration::from_millis(800));
    assert!(worker.try_wait().expect("try_wait").is_none(), "still trying to reach the scheduler");
    let scheduler = scheduler_at(address);
    let client = Client::connect(&address.to_string()).expect("client");
    joined(&client, "early");
    assert_eq!(client.submit(who, (1u64,)).result().expect("runs").0, "early");
    drop(client);
    drop(scheduler);
    assert!(wait_exit(&mut worker, Duration::from_secs(15)).is_some_and(|s| s.success()));
}

#[test]
fn gpus_are_detected_unless_declared() {
    let scheduler = scheduler_at(SocketAddr::from(([127, 0, 0, 1], 0)));
    let address = scheduler.address();
    let mut detected =
        worker_command(address, &["--name", "two-gpus", "--resources", "mem=1e9", "--death-timeout", "0"])
            .env("CUDA_VISIBLE_DEVICES", "0,1")
            .spawn()
            .expect("starts");
    let mut declined = worker_command(address, &["--name", "no-gpu", "--resources", "gpu=0", "--death-timeout", "0"])
        .env("CUDA_VISIBLE_DEVICES", "0,1")
        .spawn()
        .expect("starts");
    let client = Client::connect(&address.to_string()).expect("client");
    joined(&client, "two-gpus");
    joined(&client, "no-gpu");
    let info = client.scheduler_info().expect("info");
    let resources = |name: &str| info.iter().find(|w| w.name == name).map(|w| w.resources.clone());
    // Each also offers its task slots as CPUs.
    let cpus = ("cpu".to_string(), shoal_deploy::detect_cpus() as f64);
    assert_eq!(resources("two-gpus"), Some(vec![("mem".to_string(), 1e9), ("gpu".to_string(), 2.0), cpus.clone()]));
    assert_eq!(resources("no-gpu"), Some(vec![cpus]));
    drop(client);
    drop(scheduler);
    for child in [&mut detected, &mut declined] {
        assert!(wait_exit(child, Duration::from_secs(10)).is_some_and(|s| s.success()), "no death timeout: exits");
    }
}

fn fails(args: &[&str]) -> String {
    let Output { status, stderr, .. } = shoal().args(args).output().expect("runs");
    assert!(!status.success(), "{args:?} should fail");
    String::from_utf8_lossy(&stderr).into_owned()
}

#[test]
fn bad_worker_options_are_clear_errors() {
    let err = fails(&["worker", "tcp://nowhere-at-all", "--", "/bin/true"]);
    assert!(err.contains("\"tcp://nowhere-at-all\" is not host:port"), "{err}");
    let err = fails(&["worker", "127.0.0.1:1", "--resources", "gpu", "--", "/bin/true"]);
    assert!(err.contains("--resources") && err.contains("\"gpu\" is not name=amount"), "{err}");
    let err = fails(&["worker", "127.0.0.1:1", "--memory-limit", "lots", "--", "/bin/true"]);
    assert!(err.contains("--memory-limit") && err.contains("\"lots\""), "{err}");
    let err = fails(&["worker", "127.0.0.1:1", "--death-timeout=-1", "--", "/bin/true"]);
    assert!(err.contains("--death-timeout"), "{err}");
    let err = fails(&["worker", "127.0.0.1:1", "--memory-target", "2", "--", "/bin/true"]);
    assert!(err.contains("--memory-target 2"), "{err}");
    let err = fails(&["worker", "127.0.0.1:1", "--memory-pause", "0", "--", "/bin/true"]);
    assert!(err.contains("--memory-pause 0"), "{err}");
    let err = fails(&["worker", "127.0.0.1:1", "--memory-limit", "1GB", "--memory-terminate", "0", "--", "/bin/true"]);
    assert!(err.contains("--memory-terminate 0"), "{err}");
    let err = fails(&["worker", "127.0.0.1:1", "--memory-terminate", "0.95", "--", "/bin/true"]);
    assert!(err.contains("needs --memory-limit"), "{err}");
    let err = fails(&["worker", "127.0.0.1:1", "--inline-max", "small", "--", "/bin/true"]);
    assert!(err.contains("--inline-max") && err.contains("\"small\""), "{err}");
    let err = fails(&["worker", "127.0.0.1:1"]);
    assert!(err.contains("needs the program"), "{err}");
    let err = fails(&["worker", "127.0.0.1:1", "--", "/no/such/program"]);
    assert!(err.contains("/no/such/program"), "{err}");
}

#[shoal::remote]
fn pid() -> u32 {
    std::process::id()
}

#[shoal::remote]
fn named(x: u64) -> (String, u64) {
    (std::env::var("SHOAL_WORKER_NAME").unwrap_or_default(), x)
}

/// A worker whose process is stopped keeps its connection open but sends
/// no heartbeats: the scheduler declares it lost after its timeout, and the
/// tasks it was given run on the other worker.
#[test]
fn a_worker_that_stops_answering_is_declared_lost_and_its_tasks_run_elsewhere() {
    let config = SchedulerServerConfig {
        // Heartbeats come every 0.5 s: a loaded machine must not lose the live worker too.
        scheduler: shoal_scheduler::SchedulerConfig { worker_timeout_us: 3_000_000, ..Default::default() },
        ..SchedulerServerConfig::default()
    };
    let scheduler = start_scheduler(config).expect("scheduler starts");
    let address = scheduler.address();
    let mut workers: Vec<Child> = ["hb-a", "hb-b"].iter().map(|n| start_worker(address, &["--name", n])).collect();
    let client = Client::connect(&address.to_string()).expect("client");
    joined(&client, "hb-a");
    joined(&client, "hb-b");
    let pids = client.run(pid, ()).expect("runs on every worker");
    let stopped = pids["hb-a"].to_string();
    let signal = |sig: &str| Command::new("kill").args([sig, &stopped]).status().expect("kill runs");
    assert!(signal("-STOP").success());
    let futures = client.map(named, 0..40u64);
    let done = shoal::wait_timeout(&futures, Duration::from_secs(60));
    let results = client.gather(&futures);
    let names: Vec<String> = client.scheduler_info().expect("info").into_iter().map(|w| w.name).collect();
    signal("-CONT");
    for w in &mut workers {
        let _ = w.kill();
        let _ = w.wait();
    }
    let _ = Command::new("kill").args(["-KILL", &stopped]).status();
    done.expect("every task finished although a worker stopped answering");
    assert!(results.expect("results").iter().all(|(name, _)| name == "hb-b"), "only the answering worker ran them");
    assert_eq!(names, vec!["hb-b".to_string()], "the silent worker is gone from the cluster");
}

/// The documented pair: `shoal scheduler` in one process, `shoal worker
/// tcp://… -- ./prog` in another, and a client of the program attached.
#[test]
fn shoal_scheduler_serves_workers_and_clients_started_apart() {
    use std::io::BufRead;
    let mut scheduler =
        shoal().args(["scheduler", "--port", "0"]).stdout(Stdio::piped()).spawn().expect("shoal scheduler starts");
    let mut line = String::new();
    let stdout = scheduler.stdout.take().expect("piped");
    std::io::BufReader::new(stdout).read_line(&mut line).expect("prints its address");
    let address: SocketAddr = line
        .trim()
        .strip_prefix("shoal scheduler at tcp://")
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    let mut worker = start_worker(address, &["--name", "apart", "--death-timeout", "2"]);
    let client = Client::connect(&format!("tcp://{address}")).expect("client");
    joined(&client, "apart");
    let (name, _) = client.submit(named, (7u64,)).result().expect("runs");
    assert_eq!(name, "apart");
    drop(client);
    let _ = scheduler.kill();
    let _ = scheduler.wait();
    let exited = wait_exit(&mut worker, Duration::from_secs(30));
    if exited.is_none() {
        let _ = worker.kill();
    }
    assert!(exited.is_some(), "the worker outlived its scheduler past the death timeout");
}

/// A worker running another program than the client's does not have the
/// client's functions: the task fails with an error that names the
/// function and the fix, and the worker lives on.
#[test]
fn a_function_the_worker_program_lacks_fails_the_task_with_a_clear_error() {
    let scheduler = scheduler_at(SocketAddr::from(([127, 0, 0, 1], 0)));
    let address = scheduler.address();
    // The `shoal` binary itself as the worker program: it links shoal, so
    // it can be a worker, but none of this test's functions.
    let mut worker = shoal()
        .args(["worker", &format!("tcp://{address}"), "--name", "other-program", "--"])
        .arg(env!("CARGO_BIN_EXE_shoal"))
        .stdin(Stdio::null())
        .spawn()
        .expect("shoal worker starts");
    let client = Client::connect(&address.to_string()).expect("client");
    joined(&client, "other-program");
    let outcome = client.submit(named, (1u64,)).result();
    let again = client.submit(named, (2u64,)).result();
    let _ = worker.kill();
    let _ = worker.wait();
    let message = outcome.expect_err("the worker cannot run it").to_string();
    assert!(message.contains("named") && message.contains("#[shoal::remote]"), "{message}");
    assert!(again.is_err(), "still a clear error, from a worker still alive");
}

/// Allocates and touches `mb` MiB, holds it a while, and returns a sum.
#[shoal::remote]
fn hog(mb: u64) -> u64 {
    let held = vec![1u8; (mb as usize) << 20];
    std::thread::sleep(Duration::from_secs(5));
    held.iter().step_by(4096).map(|&b| u64::from(b)).sum()
}

#[test]
fn a_worker_past_its_memory_terminate_fraction_is_killed_and_started_again() {
    let scheduler = scheduler_at("127.0.0.1:0".parse().expect("address"));
    let address = scheduler.address();
    let mut worker = start_worker(
        address,
        &[
            "--name",
            "frugal",
            "--threads",
            "1",
            "--memory-limit",
            "150MiB",
            "--memory-terminate",
            "0.95",
            "--death-timeout",
            "0",
        ],
    );
    let client = Client::connect(&address.to_string()).expect("client connects");
    joined(&client, "frugal");
    let first = client.submit(pid, ()).result().expect("a pid");
    let err = client.submit(hog, (300u64,)).result().expect_err("no worker holds 300 MiB in 150");
    assert!(matches!(err, shoal::Error::WorkerLost { attempts: 4, .. }), "{err}");
    // The command started a new process each time, and the last one works.
    joined(&client, "frugal");
    let last = client.submit(pid, ()).result().expect("a pid after the restarts");
    assert_ne!(first, last, "a new process");
    assert!(worker.try_wait().expect("status").is_none(), "shoal worker itself keeps running");
    let _ = worker.kill();
    let _ = worker.wait();
}

/// What `scancel`, `qdel` and Ctrl-C send: `shoal worker` stops its worker
/// process (and removes its files) before it exits, leaving nothing behind
/// in the cluster.
#[test]
fn a_signal_to_shoal_worker_stops_its_worker_process_too() {
    let scheduler = scheduler_at(SocketAddr::from(([127, 0, 0, 1], 0)));
    let address = scheduler.address();
    for (signal, code) in [("-TERM", 143), ("-INT", 130)] {
        let name = format!("signalled{signal}");
        let mut worker = start_worker(address, &["--name", &name, "--death-timeout", "30"]);
        let client = Client::connect(&address.to_string()).expect("client");
        joined(&client, &name);
        let child = client.submit_with(&shoal::TaskOptions::new().pure(false), pid, ()).result().expect("runs");
        assert!(std::path::Path::new(&format!("/proc/{child}")).exists());
        let sent = Command::new("kill").arg(signal).arg(worker.id().to_string()).status().expect("kill runs");
        assert!(sent.success());
        let status = wait_exit(&mut worker, Duration::from_secs(10)).expect("shoal worker exits");
        assert_eq!(status.code(), Some(code), "{signal}: exits as a shell reports the signal");
        let gone = |pid: u32| std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| s.contains(") Z "));
        assert!(gone(child), "{signal}: the worker process {child} is gone with it");
        // The scheduler sees the worker leave.
        let deadline = Instant::now() + Duration::from_secs(10);
        while client.scheduler_info().expect("info").iter().any(|w| w.name == name) {
            assert!(Instant::now() < deadline, "{signal}: the worker is still in the cluster");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
