//! Failures stay with their task: errors, panics and their propagation.

use shoal::{Client, Error, TaskOptions};

use super::support::clients;

fn checked_div(a: i64, b: i64) -> Result<i64, String> {
    if b == 0 { Err(format!("cannot divide {a} by zero")) } else { Ok(a / b) }
}

fn explode(x: i64) -> i64 {
    if x == 3 {
        panic!("boom at {x}");
    }
    x
}

fn inc(x: i64) -> i64 {
    x + 1
}

#[test]
fn an_error_fails_only_its_own_future() {
    for client in clients() {
        let bad = client.submit(checked_div, (1, 0));
        let good = client.submit(checked_div, (10, 2));
        assert_eq!(
            bad.result(),
            Err(Error::TaskFailed { key: bad.key().to_string(), message: "cannot divide 1 by zero".into() })
        );
        assert_eq!(good.result(), Ok(5));
    }
}

#[test]
fn a_panic_is_an_error_on_that_future_and_the_pool_survives() {
    for client in clients() {
        let futures = client.map(explode, 0..6i64);
        for (i, f) in futures.iter().enumerate() {
            match f.result() {
                Ok(v) => assert_eq!(v, i as i64),
                Err(Error::TaskFailed { key, message }) => {
                    assert_eq!(i, 3);
                    assert_eq!(key, f.key().to_string());
                    assert_eq!(message, "panicked: boom at 3");
                }
                Err(other) => panic!("unexpected error {other}"),
            }
        }
        let after: Vec<i64> = client.gather(&client.map(inc, 0..1000i64)).expect("pool healthy");
        assert_eq!(after.len(), 1000);
    }
}

#[test]
fn dependents_fail_naming_the_failed_dependency() {
    for client in clients() {
        let bad = client.submit(checked_div, (1, 0));
        let middle = client.submit(inc, (&bad,));
        let last = client.submit(inc, (&middle,));
        let Err(Error::DependencyFailed { key, dependency, failed, message }) = last.result() else {
            panic!("expected a dependency failure");
        };
        assert_eq!(key, last.key().to_string());
        assert_eq!(dependency, middle.key().to_string());
        assert_eq!(failed, bad.key().to_string());
        assert_eq!(message, "cannot divide 1 by zero");
        let text = last.result().expect_err("failed").to_string();
        assert!(text.contains(&bad.key().to_string()) && text.contains("cannot divide"), "{text}");
    }
}

#[test]
fn a_task_after_a_failed_dependency_was_submitted_fails_at_once() {
    let client = Client::threads().expect("client");
    let bad = client.submit(checked_div, (1, 0));
    assert!(bad.result().is_err());
    let late = client.submit(inc, (&bad,));
    assert!(matches!(late.result(), Err(Error::DependencyFailed { .. })));
}

#[test]
fn delayed_failures_propagate_too() {
    let client = Client::threads().expect("client");
    let bad = shoal::delayed(checked_div, (4, 0));
    let total = shoal::delayed(inc, (&bad,));
    let err = total.compute_with(&client).expect_err("fails");
    assert!(matches!(err, Error::DependencyFailed { ref failed, .. } if *failed == bad.key().to_string()), "{err}");
    let retried = shoal::delayed_with(&TaskOptions::new().retries(2), checked_div, (4, 2));
    assert_eq!(retried.compute_with(&client), Ok(2));
}

#[test]
fn connecting_where_nothing_listens_names_the_address_and_what_to_do() {
    // A port that was free a moment ago: nothing listens on it now.
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("a port").local_addr().expect("address").port();
    let err = Client::connect(&format!("127.0.0.1:{port}")).expect_err("nothing listens").to_string();
    assert!(err.contains(&format!("no scheduler answers at tcp://127.0.0.1:{port}")), "{err}");
    assert!(err.contains("shoal scheduler"), "says how to start one: {err}");
}

#[test]
fn an_unknown_host_is_a_failed_name_lookup() {
    let err = Client::connect("tcp://no-such-host.invalid:8786").expect_err("no such host").to_string();
    assert!(err.contains("cannot look up the host \"no-such-host.invalid\""), "{err}");
}

#[test]
fn an_address_without_a_port_says_what_an_address_is() {
    let err = Client::connect("node1").expect_err("no port").to_string();
    assert!(err.contains("\"node1\" is not host:port") && err.contains("tcp://node1:8786"), "{err}");
}
