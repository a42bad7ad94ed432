//! `shoal-bench` as `shoal bench` runs it: the list, one JSON line per
//! parameter set, and cluster benchmarks whose worker processes are this
//! binary (so they know its `#[shoal::remote]` functions).

use std::process::{Command, Output};

use serde_json::Value;

fn shoal_bench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shoal-bench")).args(args).output().expect("shoal-bench runs")
}

/// The JSON lines of a successful run.
fn lines(args: &[&str]) -> Vec<Value> {
    let out = shoal_bench(args);
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?} is not JSON: {e}")))
        .collect()
}

#[test]
fn the_list_names_every_family_of_benchmarks() {
    let out = shoal_bench(&["--list"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let list = String::from_utf8_lossy(&out.stdout);
    for name in ["threads-noop", "net-rtt", "cluster-noop", "cluster-transfer", "scheduler-sim", "array-seed"] {
        assert!(list.lines().any(|l| l.starts_with(&format!("{name} "))), "{name} missing from:\n{list}");
    }
}

#[test]
fn a_benchmark_prints_one_json_line_per_parameter_set() {
    let lines = lines(&["threads-noop", "--quick", "--runs", "1"]);
    assert_eq!(lines.len(), 1, "{lines:?}");
    let line = &lines[0];
    assert_eq!(line["name"], "threads-noop");
    assert_eq!(line["params"]["n"], 100_000);
    assert_eq!(line["unit"], "tasks/s");
    assert_eq!(line["runs_s"].as_array().map(Vec::len), Some(1), "{line}");
    assert!(line["median_s"].as_f64().is_some_and(|s| s > 0.0), "{line}");
    assert!(line["peak_rss_bytes"].as_u64().is_some_and(|b| b > 0), "{line}");
}

/// The chain's tasks are remote functions run by two worker processes:
/// they are this binary again, become workers before `main`.
#[test]
fn cluster_benchmarks_run_on_workers_of_this_binary() {
    let lines = lines(&["cluster-chain", "--quick", "--runs", "1"]);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["name"], "cluster-chain");
    assert!(lines[0]["us_per_link"].as_f64().is_some_and(|us| us > 0.0), "{}", lines[0]);
}

#[test]
fn an_unknown_benchmark_is_named_with_the_known_ones() {
    let out = shoal_bench(&["no-such-bench"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no benchmark named \"no-such-bench\"; known: threads-noop"), "{err}");
}
