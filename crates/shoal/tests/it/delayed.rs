//! Lazy graphs: compute, sharing, culling, pictures, progress.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use shoal::{Client, Delayed, ProgressBar, TaskOptions, VisualizeError, compute, delayed, delayed_with};

use super::support::{LiveCounter, Tracked, clients};

fn inc(x: i64) -> i64 {
    x + 1
}

fn add(a: i64, b: i64) -> i64 {
    a + b
}

fn sum(values: Vec<i64>) -> i64 {
    values.iter().sum()
}

#[test]
fn compute_runs_a_lazy_graph() {
    for client in clients() {
        let x = delayed(inc, (1,));
        let y = delayed(inc, (2,));
        let z = delayed(add, (&x, &y));
        assert_eq!(z.compute_with(&client), Ok(5));
        assert_eq!(z.compute_with(&client), Ok(5), "computing twice gives the same");
        assert_eq!(client.known_keys(), 0, "compute keeps nothing once the result is out");
    }
}

#[test]
fn compute_of_several_values_shares_common_work() {
    let client = Client::threads().expect("client");
    let runs = Arc::new(AtomicUsize::new(0));
    let r = runs.clone();
    let counted = move |x: i64| {
        r.fetch_add(1, Ordering::SeqCst);
        x * 10
    };
    let shared = delayed(counted, (1,));
    let a = delayed(inc, (&shared,));
    let b = delayed(add, (&shared, 5));
    let (va, vb) = shoal::Computable::compute_on(&(&a, &b), &client).expect("computes");
    assert_eq!((va, vb), (11, 15));
    assert_eq!(runs.load(Ordering::SeqCst), 1, "the shared task runs once");
    assert_eq!(compute(&vec![a, b]).expect("computes"), vec![11, 15]);
}

#[test]
fn a_list_of_delayed_values_is_one_argument() {
    for client in clients() {
        let parts: Vec<Delayed<i64>> = (0..50).map(|i| delayed(inc, (i,))).collect();
        let total = delayed(sum, (&parts,));
        assert_eq!(total.compute_with(&client), Ok((1..=50).sum()));
        let graph = total.graph();
        assert_eq!(graph.len(), 52, "50 parts, the list, the sum");
    }
}

#[test]
fn pure_delayed_calls_are_content_addressed() {
    let pure = TaskOptions::new().pure(true);
    let a = delayed_with(&pure, inc, (1,));
    let b = delayed_with(&pure, inc, (1,));
    assert_eq!(a.key(), b.key());
    assert_ne!(delayed(inc, (1,)).key(), delayed(inc, (1,)).key(), "delayed is impure by default, as in Dask");
    let named = delayed_with(&TaskOptions::new().name("load"), inc, (1,));
    assert!(named.key().to_string().starts_with("load-"));
}

#[test]
fn the_graph_holds_only_what_the_value_needs() {
    let x = delayed(inc, (1,));
    let unused = delayed(inc, (&x,));
    let y = delayed(add, (&x, 2));
    let graph = y.graph();
    assert_eq!(graph.len(), 2);
    assert!(graph.contains(y.key()) && graph.contains(x.key()));
    assert!(!graph.contains(unused.key()));
    let culled = graph.cull(std::slice::from_ref(x.key()));
    assert_eq!(culled.len(), 1);
}

#[test]
fn visualize_writes_dot_and_svg() {
    let dir = std::env::temp_dir().join(format!("shoal-viz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let x = delayed(inc, (1,));
    let y = delayed(add, (&x, delayed(inc, (2,))));
    let dot_path = dir.join("graph.dot");
    y.visualize(&dot_path).expect("writes DOT");
    let dot = std::fs::read_to_string(&dot_path).expect("reads DOT");
    assert!(dot.starts_with("digraph shoal {"));
    assert_eq!(dot.matches("shape=circle").count(), 3);
    assert_eq!(dot.matches(" -> f").count(), 2, "two data edges into add");

    let svg_path = dir.join("graph.svg");
    let dot_installed = std::process::Command::new("dot").arg("-V").output().is_ok();
    match y.visualize(&svg_path) {
        Ok(()) => {
            assert!(dot_installed);
            let svg = std::fs::read_to_string(&svg_path).expect("reads SVG");
            assert!(svg.contains("<svg") && svg.contains("inc"), "an SVG picture of the graph");
        }
        Err(VisualizeError::DotMissing { path, .. }) => {
            assert!(!dot_installed, "dot is installed but was reported missing");
            assert!(path.ends_with("graph.svg"));
        }
        Err(other) => panic!("unexpected error: {other}"),
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_chain_of_a_hundred_thousand_delayed_values_computes_and_drops() {
    let client = Client::threads().expect("client");
    let mut x = delayed(inc, (0,));
    for _ in 1..100_000 {
        x = delayed(inc, (&x,));
    }
    assert_eq!(x.compute_with(&client), Ok(100_000));
    drop(x);
}

#[test]
fn a_chain_keeps_a_constant_number_of_results_alive() {
    for client in clients() {
        let counter = Arc::new(LiveCounter::default());
        let c = counter.clone();
        let start = move || Tracked::new(0, &c);
        let step = |t: Tracked| {
            let mut next = t;
            next.value += 1;
            next
        };
        let mut x = delayed(start, ());
        for _ in 0..5_000 {
            x = delayed(step, (&x,));
        }
        let out = x.compute_with(&client).expect("computes");
        assert_eq!(out.value, 5_000);
        assert!(counter.peak() <= 4, "peak live results on a chain: {}", counter.peak());
        drop(out);
        assert_eq!(counter.live(), 0, "nothing is kept after compute");
    }
}

#[test]
fn progress_bar_counts_every_task() {
    let client = Client::threads().expect("client");
    let bar = ProgressBar::hidden();
    let parts: Vec<Delayed<i64>> = (0..20).map(|i| delayed(inc, (i,))).collect();
    let total = delayed(sum, (&parts,));
    assert_eq!(total.compute_with(&client), Ok(210));
    assert_eq!(bar.last_counts(), Some((22, 22)));
    let futures = client.map(inc, 0..10i64);
    assert_eq!(shoal::progress(&futures), 10);
}

#[test]
fn a_result_needed_late_in_a_large_graph_is_kept_until_then() {
    // `early` is submitted first and finishes while thousands of other tasks
    // are still being submitted; its consumer comes last.
    for client in clients() {
        for _ in 0..5 {
            let early = delayed(inc, (1,));
            let parts: Vec<Delayed<i64>> = (0..5000).map(|i| delayed(inc, (i,))).collect();
            let total = delayed(add, (&early, delayed(sum, (&parts,))));
            assert_eq!(total.compute_with(&client), Ok(2 + (1..=5000).sum::<i64>()));
        }
    }
}
