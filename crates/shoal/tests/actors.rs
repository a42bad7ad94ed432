//! Actors on the threads executor and on a LocalCluster of worker
//! processes: state across calls, order, parallel actors, calls from
//! inside tasks, panics, release, and an actor's worker killed.

use std::time::{Duration, Instant};

use shoal::{Client, Error, LocalCluster, TaskOptions};

struct Counter {
    n: u64,
    /// A file written when the actor goes, for the release tests.
    gone: Option<String>,
}

#[shoal::actor]
impl Counter {
    pub(crate) fn new() -> Counter {
        Counter { n: 0, gone: None }
    }

    pub(crate) fn starting_at(n: u64, gone: Option<String>) -> Counter {
        Counter { n, gone }
    }

    pub(crate) fn increment(&mut self) -> u64 {
        self.n += 1;
        self.n
    }

    pub(crate) fn add(&mut self, k: u64) -> u64 {
        self.n += k;
        self.n
    }

    pub(crate) fn read(&self) -> u64 {
        self.n
    }

    /// Appends to a list: the order calls ran in.
    pub(crate) fn slow_add(&mut self, k: u64, ms: u64) -> u64 {
        std::thread::sleep(Duration::from_millis(ms));
        self.n = self.n * 10 + k;
        self.n
    }

    pub(crate) fn explode(&mut self) -> u64 {
        panic!("exploded at {}", self.n)
    }

    pub(crate) fn where_am_i(&self) -> (String, u32) {
        (std::env::var("SHOAL_WORKER_NAME").unwrap_or_else(|_| "this process".into()), std::process::id())
    }
}

impl Drop for Counter {
    fn drop(&mut self) {
        if let Some(path) = &self.gone {
            let _ = std::fs::write(path, self.n.to_string());
        }
    }
}

/// A task that calls the actor it is given.
#[shoal::remote]
fn bump_twice(counter: CounterHandle) -> u64 {
    counter.increment().result().expect("the first call");
    counter.increment().result().expect("the second call")
}

fn cluster(workers: usize) -> LocalCluster {
    LocalCluster::builder().workers(workers).threads_per_worker(1).build().expect("cluster starts")
}

/// Every check, on one client: the same code on threads and on a cluster.
fn the_basics(client: &Client) {
    // State across calls, in the order sent.
    let counter = client.actor(Counter::new, ());
    let calls: Vec<_> = (0..50).map(|_| counter.increment()).collect();
    assert_eq!(shoal::gather(&calls).expect("calls"), (1..=50).collect::<Vec<u64>>());
    assert_eq!(counter.add(50).result(), Ok(100));
    // Order even when an earlier call takes longer.
    let ordered = client.actor(Counter::starting_at, (0, None));
    let a = ordered.slow_add(1, 50);
    let b = ordered.slow_add(2, 0);
    let c = ordered.slow_add(3, 0);
    assert_eq!((a.result(), b.result(), c.result()), (Ok(1), Ok(12), Ok(123)));
    // The tutorial's four counters.
    let counters: Vec<_> = (0..4).map(|_| client.actor(Counter::new, ())).collect();
    let first: Vec<_> = counters.iter().map(|c| c.increment()).collect();
    assert_eq!(shoal::gather(&first).expect("calls"), vec![1, 1, 1, 1]);
    // A panicking method fails its call only.
    let err = counter.explode().result().expect_err("it panics");
    assert!(err.to_string().contains("Counter::explode panicked: exploded at 100"), "{err}");
    assert_eq!(counter.read().result(), Ok(100), "the actor lives on");
    // Called from inside tasks, with the handle as an argument.
    let bumped = client.submit_with(&TaskOptions::new().pure(false), bump_twice, (counter.clone(),));
    assert_eq!(bumped.result(), Ok(102));
    assert_eq!(counter.read().result(), Ok(102));
    // A call's future is an argument of a task (its result is).
    let plus_one = client.submit(add_one, (&counter.read(),));
    assert_eq!(plus_one.result(), Ok(103));
}

#[shoal::remote]
fn add_one(x: u64) -> u64 {
    x + 1
}

#[test]
fn actors_on_threads() {
    the_basics(&Client::threads().expect("threads"));
}

#[test]
fn actors_on_a_cluster_of_worker_processes() {
    let cluster = cluster(2);
    the_basics(&cluster.client().expect("client"));
}

#[test]
fn actors_run_in_parallel_and_go_where_their_resources_are() {
    let cluster = LocalCluster::builder()
        .workers(2)
        .threads_per_worker(2)
        .worker_resources(1, [("gpu", 1.0)])
        .build()
        .expect("cluster");
    let client = cluster.client().expect("client");
    let on_gpu = client.actor_with(&TaskOptions::new().resources([("gpu", 1.0)]), Counter::new, ());
    assert_eq!(on_gpu.where_am_i().result().expect("answers").0, "local-1");
    // Two actors sleeping 300 ms each at once: about 300 ms, not 600.
    let slow: Vec<_> = (0..2).map(|_| client.actor(Counter::new, ())).collect();
    let warm: Vec<_> = slow.iter().map(|c| c.read()).collect();
    shoal::gather(&warm).expect("created");
    let started = Instant::now();
    let calls: Vec<_> = slow.iter().map(|c| c.slow_add(1, 300)).collect();
    shoal::gather(&calls).expect("calls");
    let took = started.elapsed();
    assert!(took < Duration::from_millis(580), "actors ran one after the other: {took:?}");
}

#[test]
fn an_actor_goes_when_its_last_handle_does() {
    for client in [Client::threads().expect("threads")] {
        let path = std::env::temp_dir().join(format!("shoal-actor-gone-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let counter = client.actor(Counter::starting_at, (5, Some(path.display().to_string())));
        let copy = counter.clone();
        assert_eq!(copy.increment().result(), Ok(6));
        drop(counter);
        assert_eq!(copy.read().result(), Ok(6), "a clone keeps it");
        drop(copy);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !path.exists() {
            assert!(Instant::now() < deadline, "the actor was never dropped");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(std::fs::read_to_string(&path).expect("written"), "6");
        let _ = std::fs::remove_file(&path);
    }
}

#[test]
fn an_actor_on_a_cluster_goes_when_its_last_handle_does() {
    let cluster = cluster(1);
    let client = cluster.client().expect("client");
    let path = std::env::temp_dir().join(format!("shoal-actor-gone-cluster-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let counter = client.actor(Counter::starting_at, (7, Some(path.display().to_string())));
    assert_eq!(counter.increment().result(), Ok(8));
    drop(counter);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !path.exists() {
        assert!(Instant::now() < deadline, "the worker never dropped the actor");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(std::fs::read_to_string(&path).expect("written"), "8");
    let _ = std::fs::remove_file(&path);
}

#[test]
fn calls_on_an_actor_whose_worker_is_killed_fail_naming_both() {
    let cluster = cluster(2);
    let client = cluster.client().expect("client");
    let counter = client.actor_with(&TaskOptions::new().workers(["local-0"]), Counter::new, ());
    let (worker, pid) = counter.where_am_i().result().expect("answers");
    assert_eq!(worker, "local-0");
    assert_eq!(counter.increment().result(), Ok(1));
    let killed = std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status().expect("kill runs");
    assert!(killed.success());
    let err = counter.increment().result().expect_err("its worker is gone");
    assert!(matches!(err, Error::ActorLost { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains("Counter") && text.contains("local-0"), "names the actor and the worker: {text}");
    let later = counter.read().result().expect_err("and every later call");
    assert!(matches!(later, Error::ActorLost { .. }), "{later}");
}

#[test]
fn named_actors_are_found_by_any_client_of_the_cluster() {
    let cluster = cluster(2);
    let (first, second) = (cluster.client().expect("client"), cluster.client().expect("client"));
    let made = first.actor_named("tally", Counter::new, ());
    assert_eq!(made.add(5).result(), Ok(5));
    let found = second.get_actor::<Counter>("tally").expect("found by name");
    assert_eq!(found.add(1).result(), Ok(6), "the same actor");
    // Made again under the same name: the one that exists.
    let again = second.actor_named("tally", Counter::new, ());
    assert_eq!(again.read().result(), Ok(6));
    let err = second.get_actor::<Counter>("no-such-tally").expect_err("no such actor");
    assert!(err.to_string().contains("no-such-tally"), "{err}");
}

#[test]
fn an_actor_with_restarts_comes_back_with_fresh_state_when_its_worker_dies() {
    let cluster = cluster(2);
    let client = cluster.client().expect("client");
    let opts = TaskOptions::new().workers(["local-0", "local-1"]).max_restarts(1);
    let counter = client.actor_with(&opts, Counter::starting_at, (100, None));
    assert_eq!(counter.increment().result(), Ok(101));
    let (worker, pid) = counter.where_am_i().result().expect("answers");
    let killed = std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status().expect("kill runs");
    assert!(killed.success());
    // The call sent as its worker died may fail; the actor comes back.
    let _ = counter.increment().result();
    let deadline = Instant::now() + Duration::from_secs(30);
    let (moved_to, _) = loop {
        match counter.where_am_i().result() {
            Ok(place) => break place,
            Err(e) => {
                assert!(Instant::now() < deadline, "never came back: {e}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    };
    assert_ne!(moved_to, worker, "made again on the other worker");
    let n = counter.read().result().expect("answers");
    assert!(n <= 101, "fresh state, made again from its constructor: {n}");
}
