//! The futures API: submit, map, gather, keys, cancellation, retries,
//! as_completed, lists.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use shoal::{Client, Error, Status, TaskOptions, as_completed, wait, wait_timeout};

use super::support::{Gate, Started, clients};

fn double(x: i64) -> i64 {
    x * 2
}

fn add(a: i64, b: i64) -> i64 {
    a + b
}

fn total(values: Vec<i64>) -> i64 {
    values.iter().sum()
}

#[test]
fn submit_map_and_gather_on_every_executor() {
    for client in clients() {
        let f = client.submit(double, (21,));
        assert_eq!(f.result(), Ok(42));
        assert_eq!(f.status(), Status::Finished);
        let futures = client.map(double, 0..100i64);
        let values = client.gather(&futures).expect("all succeed");
        assert_eq!(values, (0..100).map(|x| x * 2).collect::<Vec<_>>());
    }
}

#[test]
fn futures_are_arguments_of_later_tasks() {
    for client in clients() {
        let a = client.submit(double, (1,));
        let b = client.submit(double, (2,));
        let c = client.submit(add, (&a, &b));
        let d = client.submit(add, (c, 100));
        assert_eq!(d.result(), Ok(106));
    }
}

#[test]
fn a_list_of_futures_is_one_argument() {
    for client in clients() {
        let parts = client.map(double, 1..=10i64);
        let sum = client.submit(total, (&parts,));
        assert_eq!(sum.result(), Ok(110));
        let again = client.submit(total, (parts,));
        assert_eq!(again.result(), Ok(110));
        // An empty list is a plain value, not a task that gathers nothing.
        let nothing = client.submit(total, (Vec::<shoal::Future<i64>>::new(),));
        assert_eq!(nothing.result(), Ok(0));
        let lazy = shoal::delayed(total, (Vec::<shoal::Delayed<i64>>::new(),));
        assert_eq!(lazy.graph().len(), 1, "only the call itself");
        assert_eq!(lazy.compute_with(&client), Ok(0));
    }
}

#[test]
fn identical_pure_calls_share_one_key_and_one_run() {
    let client = Client::threads().expect("client");
    static RUNS: AtomicUsize = AtomicUsize::new(0);
    fn counted(x: u64) -> u64 {
        RUNS.fetch_add(1, Ordering::SeqCst);
        x + 1
    }
    let a = client.submit(counted, (7u64,));
    let b = client.submit(counted, (7u64,));
    assert_eq!(a.key(), b.key());
    assert_eq!(a.result(), Ok(8));
    assert_eq!(b.result(), Ok(8));
    assert_eq!(RUNS.load(Ordering::SeqCst), 1, "an equal pure call must not run twice");

    let c = client.submit(counted, (8u64,));
    assert_ne!(a.key(), c.key(), "different arguments, different keys");
    assert!(a.key().to_string().starts_with("counted-"));

    let impure = TaskOptions::new().pure(false);
    let d = client.submit_with(&impure, counted, (7u64,));
    let e = client.submit_with(&impure, counted, (7u64,));
    assert_ne!(d.key(), e.key(), "pure(false) gives fresh keys");
    assert_ne!(d.key(), a.key());
}

#[test]
fn keys_are_stable_across_clients_and_depend_on_the_function() {
    let one = Client::sync();
    let two = Client::threads().expect("client");
    assert_eq!(one.submit(double, (5,)).key(), two.submit(double, (5,)).key());
    assert_ne!(one.submit(double, (5,)).key().token(), one.submit(add, (5, 0)).key().token());
    let offset = 3;
    let capturing = move |x: i64| x + offset;
    assert_ne!(
        one.submit(capturing, (1,)).key(),
        one.submit(capturing, (1,)).key(),
        "a closure with captured state cannot be content-addressed"
    );
}

#[test]
fn as_completed_yields_in_completion_order() {
    let client = Client::builder().threads(3).build().expect("client");
    let gates: Vec<Gate> = (0..3).map(|_| Gate::default()).collect();
    let futures: Vec<_> = gates
        .iter()
        .enumerate()
        .map(|(i, gate)| {
            let gate = gate.clone();
            client.submit(
                move || {
                    gate.wait();
                    i
                },
                (),
            )
        })
        .collect();
    let mut completed = as_completed(futures);
    for i in [2usize, 0, 1] {
        gates[i].open();
        let next = completed.next().expect("a future");
        assert_eq!(next.result(), Ok(i));
    }
    assert!(completed.next().is_none());
}

#[test]
fn cancelling_a_pending_task_cancels_its_dependents() {
    let client = Client::builder().threads(2).build().expect("client");
    let gate = Gate::default();
    let g = gate.clone();
    let blocker = client.submit(
        move || {
            g.wait();
            1i64
        },
        (),
    );
    let pending = client.submit(double, (&blocker,));
    let dependent = client.submit(double, (&pending,));
    pending.cancel();
    assert_eq!(pending.status(), Status::Cancelled);
    assert_eq!(pending.result(), Err(Error::Cancelled { key: pending.key().to_string() }));
    assert_eq!(dependent.result(), Err(Error::Cancelled { key: dependent.key().to_string() }));
    gate.open();
    assert_eq!(blocker.result(), Ok(1), "cancelling a dependent leaves its input alone");
}

#[test]
fn cancelling_a_running_task_discards_its_result() {
    let client = Client::builder().threads(2).build().expect("client");
    let gate = Gate::default();
    let started = Started::default();
    let (g, s) = (gate.clone(), started.clone());
    let running = client.submit(
        move || {
            s.set();
            g.wait();
            5i64
        },
        (),
    );
    started.wait();
    running.cancel();
    gate.open();
    assert!(matches!(running.result(), Err(Error::Cancelled { .. })));
    assert_eq!(client.submit(double, (4,)).result(), Ok(8), "the pool keeps working");
}

#[test]
fn retries_rerun_a_failing_task() {
    let client = Client::threads().expect("client");
    let attempts = Arc::new(AtomicUsize::new(0));
    let a = attempts.clone();
    let flaky = move |x: i64| -> Result<i64, String> {
        if a.fetch_add(1, Ordering::SeqCst) < 2 { Err("not yet".into()) } else { Ok(x) }
    };
    let ok = client.submit_with(&TaskOptions::new().retries(2), flaky.clone(), (9,));
    assert_eq!(ok.result(), Ok(9));
    assert_eq!(attempts.load(Ordering::SeqCst), 3);

    attempts.store(0, Ordering::SeqCst);
    let failed = client.submit_with(&TaskOptions::new().retries(1), flaky, (9,));
    assert_eq!(failed.result(), Err(Error::TaskFailed { key: failed.key().to_string(), message: "not yet".into() }));
    assert_eq!(attempts.load(Ordering::SeqCst), 2);
}

#[test]
fn wait_and_timeouts() {
    let client = Client::threads().expect("client");
    let gate = Gate::default();
    let g = gate.clone();
    let slow = client.submit(
        move || {
            g.wait();
            0u8
        },
        (),
    );
    let err = slow.result_timeout(Duration::from_millis(20)).expect_err("not done yet");
    assert!(matches!(err, Error::Timeout { .. }));
    assert!(err.is_retryable());
    assert!(wait_timeout(std::slice::from_ref(&slow), Duration::from_millis(10)).is_err());
    gate.open();
    wait(std::slice::from_ref(&slow));
    assert!(slow.done());
    assert_eq!(slow.result_timeout(Duration::from_secs(5)), Ok(0));
}

#[test]
fn results_are_freed_when_no_future_holds_them() {
    for client in clients() {
        let futures = client.map(double, 0..1000i64);
        let chained = client.submit(total, (&futures,));
        assert_eq!(chained.result(), Ok(999_000));
        assert!(client.known_keys() >= 1000);
        drop(futures);
        drop(chained);
        assert_eq!(client.known_keys(), 0, "every key is forgotten once nothing holds it");
    }
}

#[test]
fn future_display_looks_like_dask() {
    let client = Client::sync();
    let f = client.submit(double, (10,));
    let shown = f.to_string();
    assert!(shown.starts_with("<Future: double status: pending, type: i64, key: double-"), "{shown}");
    f.wait();
    assert!(f.to_string().contains("status: finished"));
}
