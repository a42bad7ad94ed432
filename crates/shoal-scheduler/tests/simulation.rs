//! Simulations: the real scheduler with thousands of virtual workers.

use shoal_scheduler::sim::{SimConfig, SimReport, Simulation, graphs};

fn assert_clean(report: &SimReport) {
    assert!(report.violations.is_empty(), "violations: {:#?}", &report.violations[..report.violations.len().min(5)]);
    assert!(report.failed.is_empty(), "failed outputs: {:?}", &report.failed[..report.failed.len().min(5)]);
    assert_eq!(report.leaked_tasks, 0, "the scheduler kept tasks after everything was released");
    assert_eq!(report.leaked_results, 0, "workers kept results after everything was released");
}

#[test]
fn a_thousand_workers_run_a_million_task_dag_while_workers_die() {
    let config = SimConfig { workers: 1000, threads: 2, seed: 7, loss_every_us: Some(20_000), ..SimConfig::default() };
    let report = Simulation::new(config).run(graphs::random_dag(1_000_000, 2_000, 7));
    assert_clean(&report);
    assert!(report.losses > 0, "no worker was lost: the test tests nothing");
    assert!(report.runs >= 1_000_000);
    eprintln!(
        "1M-task DAG on 1000 workers: {} losses, {} runs, {:.2?} in the scheduler ({:.0} ns per task)",
        report.losses,
        report.runs,
        report.scheduler_time,
        report.scheduler_time.as_nanos() as f64 / report.tasks as f64
    );
}

#[test]
fn a_thousand_workers_run_a_million_task_map_reduce_while_workers_die() {
    let config = SimConfig { workers: 1000, threads: 2, seed: 11, loss_every_us: Some(20_000), ..SimConfig::default() };
    let report = Simulation::new(config).run(graphs::map_reduce(1_000_000, 8, 0));
    assert_clean(&report);
    assert!(report.losses > 0);
    assert_eq!(report.finished, 1);
}

#[test]
fn futures_dropped_while_a_million_task_dag_runs_leave_nothing_behind() {
    let config = SimConfig {
        workers: 1000,
        threads: 2,
        seed: 5,
        loss_every_us: Some(20_000),
        drop_outputs_every: Some(4),
        ..SimConfig::default()
    };
    let report = Simulation::new(config).run(graphs::random_dag(1_000_000, 2_000, 5));
    assert_clean(&report);
    assert!(report.dropped_outputs > 10_000, "only {} outputs dropped: the test tests little", report.dropped_outputs);
    assert!(report.losses > 0);
    assert!(report.finished > 0);
}

#[test]
fn without_losses_every_task_runs_exactly_once() {
    for seed in 1..=5 {
        let config = SimConfig { workers: 50, threads: 4, seed, ..SimConfig::default() };
        let report = Simulation::new(config).run(graphs::random_dag(20_000, 500, seed));
        assert_clean(&report);
        assert_eq!(report.runs, 20_000, "seed {seed}: a loss-free run computes each task once");
        assert_eq!(report.missing_data, 0, "seed {seed}: a task was sent to run before its inputs existed");
    }
}

#[test]
fn simulations_are_deterministic() {
    let run = || {
        let config = SimConfig { workers: 20, threads: 2, seed: 3, loss_every_us: Some(5_000), ..SimConfig::default() };
        let r = Simulation::new(config).run(graphs::random_dag(5_000, 100, 3));
        (r.runs, r.losses, r.virtual_us)
    };
    assert_eq!(run(), run());
}

/// Results that travel through the scheduler reach exactly the tasks that
/// read them, with their own bytes, while workers die and results are
/// recomputed; nothing of them stays behind.
#[test]
fn small_results_passed_on_by_the_scheduler_stay_right_while_workers_die() {
    let config = SimConfig {
        workers: 200,
        threads: 2,
        seed: 5,
        loss_every_us: Some(10_000),
        inline_results: true,
        ..SimConfig::default()
    };
    let report = Simulation::new(config).run(graphs::random_dag(100_000, 500, 5));
    assert_clean(&report);
    assert!(report.losses > 0, "no worker was lost: the test tests nothing");
    assert!(report.inline_inputs > 50_000, "only {} inputs came with their data", report.inline_inputs);
}

/// A long-running scheduler: graph after graph on the same scheduler and
/// workers (while workers die), including one that
/// brings back an earlier graph's keys after they were all forgotten. Each
/// graph ends clean, and the memory of forgotten tasks is reused: the
/// scheduler holds nothing between graphs.
#[test]
fn graph_after_graph_on_one_scheduler_each_ends_clean() {
    let config = SimConfig { workers: 200, threads: 2, seed: 9, loss_every_us: Some(10_000), ..SimConfig::default() };
    let mut sim = Simulation::new(config);
    let graphs = [
        graphs::random_dag(50_000, 500, 1),
        graphs::map_reduce(50_000, 8, 2),
        graphs::random_dag(50_000, 500, 3),
        graphs::random_dag(50_000, 500, 1),
    ];
    for (n, graph) in graphs.into_iter().enumerate() {
        let tasks = graph.len();
        let report = sim.run_graph(graph);
        assert_clean(&report);
        assert_eq!(report.tasks, tasks, "graph {n}");
        assert!(report.runs >= tasks as u64, "graph {n}: {} runs for {tasks} tasks", report.runs);
        assert!(report.finished > 0, "graph {n}: no output finished");
    }
}
