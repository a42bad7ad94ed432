//! The scheduler's own cost, measured in the simulator.
//!
//! The figure is the wall time spent inside the scheduler's `on_*` calls
//! only (the simulator times each call); the simulator's own bookkeeping —
//! virtual workers, the event queue, its ground truth — is excluded, and it
//! is kept cheap besides so that it disturbs the scheduler's caches little.
//! The whole run, simulator included, is reported as `simulation_s`.
//!
//! The figure is the scheduler's steady state: a second graph of the same
//! size and shape (other keys) on the scheduler and workers that ran the
//! first, as a long-running scheduler serves graph after graph, reusing
//! the memory of the tasks it forgot. Two more figures go beside it:
//! - `fresh_ns_per_task`: the graph on a new scheduler in the same, warm
//!   process, whose task table asks the kernel for fresh memory again
//!   (zeroed pages, faulted in inside the scheduler's calls);
//! - `cold_ns_per_task`: the first graph of the process, which also pays
//!   for the kernel handing it a few hundred megabytes for the first time
//!   (on a virtual machine, up to a third more on top of the scheduler's
//!   own cost).
//!
//! Most of that cost is waiting for memory, and on a shared host that wait
//! varies with the other tenants' load (the same build measured 0.94 µs per
//! DAG task on a quiet day and 1.3–1.8 µs on a loaded one). So each sample
//! also reports `memory_latency_ns`, a random read from memory timed in the
//! same run, as `net-rtt` is the floor reported beside the cluster figures.

use anyhow::Context;
use serde_json::{Map, Value, json};
use shoal_scheduler::sim::{Call, SimConfig, SimReport, Simulation, graphs};

use super::{Benchmark, Sample, param_u64};

/// Mean virtual time between worker losses in the runs with losses: a few
/// workers die during a million-task run, as in the simulation tests.
const LOSS_EVERY_US: u64 = 20_000;

pub(super) fn benchmarks() -> Vec<Benchmark> {
    vec![Benchmark {
        name: "scheduler-sim",
        about: "scheduler decisions per second: n tasks on 1000 simulated workers, with and without worker losses",
        unit: "tasks/s",
        params: |quick| {
            let n = if quick { 100_000 } else { 1_000_000 };
            vec![
                json!({"shape": "dag", "n": n, "workers": 1000}),
                json!({"shape": "map-reduce", "n": n, "workers": 1000}),
                json!({"shape": "dag", "n": n, "workers": 1000, "loss_every_us": LOSS_EVERY_US}),
                json!({"shape": "map-reduce", "n": n, "workers": 1000, "loss_every_us": LOSS_EVERY_US}),
            ]
        },
        run,
    }]
}

fn run(params: &Value) -> anyhow::Result<Sample> {
    let n = param_u64(params, "n")?;
    let workers = param_u64(params, "workers")? as u32;
    let loss_every_us = params.get("loss_every_us").map(|_| param_u64(params, "loss_every_us")).transpose()?;
    let shape = params.get("shape").and_then(Value::as_str).context("parameter shape missing")?;
    let config = SimConfig { workers, threads: 2, seed: 7, loss_every_us, ..SimConfig::default() };
    // Graph `number` of the shape: the same shape and size, other keys.
    let graph = |number: u64| match shape {
        "dag" => Ok(graphs::random_dag(n, 2_000, 7 + number)),
        "map-reduce" => Ok(graphs::map_reduce(n, 8, number)),
        other => anyhow::bail!("unknown shape {other:?}: dag or map-reduce"),
    };
    let simulate = |sim: &mut Simulation, number: u64| -> anyhow::Result<(usize, SimReport, f64)> {
        let tasks = graph(number)?;
        let count = tasks.len();
        let started = std::time::Instant::now();
        let report = sim.run_graph(tasks);
        let wall = started.elapsed().as_secs_f64();
        anyhow::ensure!(report.violations.is_empty(), "simulation violations: {:?}", report.violations.first());
        anyhow::ensure!(report.failed.is_empty(), "outputs failed: {:?}", report.failed.first());
        anyhow::ensure!(report.leaked_tasks == 0, "{} tasks left in the scheduler", report.leaked_tasks);
        Ok((count, report, wall))
    };
    let mut sim = Simulation::new(config.clone());
    let (_, cold, _) = simulate(&mut sim, 0)?;
    let (count, report, wall) = simulate(&mut sim, 1)?;
    drop(sim);
    let (_, fresh, _) = simulate(&mut Simulation::new(config.clone()), 0)?;
    let scheduler_s = report.scheduler_time.as_secs_f64();
    let per_task_ns = |r: &SimReport| (r.scheduler_time.as_secs_f64() / count as f64 * 1e9).round();
    let mut extra = Map::new();
    extra.insert("cold_ns_per_task".into(), json!(per_task_ns(&cold)));
    extra.insert("fresh_ns_per_task".into(), json!(per_task_ns(&fresh)));
    extra.insert("tasks".into(), json!(count));
    extra.insert("runs".into(), json!(report.runs));
    extra.insert("losses".into(), json!(report.losses));
    extra.insert("simulation_s".into(), json!(wall));
    extra.insert("ns_per_task".into(), json!(per_task_ns(&report)));
    extra.insert("memory_latency_ns".into(), json!((memory_latency_ns() * 10.0).round() / 10.0));
    let by_call: Map<String, Value> = Call::ALL
        .iter()
        .map(|&call| {
            let ns = report.scheduler_time_by_call[call as usize].as_secs_f64() / count as f64 * 1e9;
            (call.name().to_string(), json!(ns.round()))
        })
        .collect();
    extra.insert("ns_per_task_by_call".into(), Value::Object(by_call));
    let calls: Map<String, Value> =
        Call::ALL.iter().map(|&call| (call.name().to_string(), json!(report.scheduler_calls[call as usize]))).collect();
    extra.insert("calls".into(), Value::Object(calls));
    Ok(Sample { seconds: scheduler_s, items: Some(count as f64), extra })
}

/// Elements in the buffer `memory_latency_ns` reads: 128 MiB, far more
/// than any cache, as the scheduler's records of a million tasks are.
const LATENCY_BUFFER: usize = 32 << 20;

/// Reads that `memory_latency_ns` times.
const LATENCY_READS: usize = 2_000_000;

/// Nanoseconds per read from memory when each read's address depends on
/// the one before (a walk of one random cycle through a large buffer, so
/// that neither the caches nor the prefetchers help).
fn memory_latency_ns() -> f64 {
    let next = random_cycle(LATENCY_BUFFER);
    let started = std::time::Instant::now();
    let mut at = 0u32;
    for _ in 0..LATENCY_READS {
        at = next[at as usize];
    }
    let elapsed = started.elapsed();
    std::hint::black_box(at);
    elapsed.as_secs_f64() * 1e9 / LATENCY_READS as f64
}

/// `next[i]` for a single cycle through `0..n` in random order (shuffled
/// with a fixed xorshift generator: the same walk every run).
fn random_cycle(n: usize) -> Vec<u32> {
    let mut order: Vec<u32> = (0..n as u32).collect();
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for i in (1..n).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        order.swap(i, (x % (i as u64 + 1)) as usize);
    }
    let mut next = vec![0u32; n];
    for pair in order.windows(2) {
        next[pair[0] as usize] = pair[1];
    }
    if let (Some(&last), Some(&first)) = (order.last(), order.first()) {
        next[last as usize] = first;
    }
    next
}

#[cfg(test)]
mod tests {
    use super::random_cycle;

    /// The walk visits every element once before it comes back: no short
    /// loop that would stay in cache.
    #[test]
    fn the_walk_is_one_cycle_through_every_element() {
        let n = 10_007;
        let next = random_cycle(n);
        let mut seen = vec![false; n];
        let mut at = 0usize;
        for _ in 0..n {
            assert!(!seen[at], "{at} visited twice");
            seen[at] = true;
            at = next[at] as usize;
        }
        assert_eq!(at, 0);
        assert!(seen.iter().all(|&s| s));
    }
}
