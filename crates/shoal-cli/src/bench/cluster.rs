//! Benchmarks of the distributed path (scheduler, workers, loopback TCP).

use anyhow::Context;
use serde_json::{Map, Value, json};
use shoal::LocalCluster;

use super::{Benchmark, Sample, param_u64, timed};

pub(super) fn benchmarks() -> Vec<Benchmark> {
    vec![Benchmark {
        name: "cluster-noop",
        about: "n no-op tasks via map on a LocalCluster of 2 workers x 1 thread, gathered",
        unit: "tasks/s",
        params: |quick| vec![json!({"n": if quick { 10_000 } else { 100_000 }, "workers": 2, "threads": 1})],
        run: noop,
    }]
}

#[shoal::remote]
fn cluster_noop(x: u64) -> u64 {
    x
}

fn noop(params: &Value) -> anyhow::Result<Sample> {
    let n = param_u64(params, "n")?;
    let workers = param_u64(params, "workers")? as usize;
    let threads = param_u64(params, "threads")? as usize;
    let cluster =
        LocalCluster::builder().workers(workers).threads_per_worker(threads).build().context("cluster starts")?;
    let client = cluster.client().context("client connects")?;
    let (seconds, sum) = timed(|| -> anyhow::Result<u64> {
        let futures = client.map(cluster_noop, 0..n);
        Ok(client.gather(&futures)?.iter().sum())
    });
    anyhow::ensure!(sum? == n * (n - 1) / 2, "wrong results");
    let mut extra = Map::new();
    extra.insert("workers_in_process".into(), json!(true));
    Ok(Sample { seconds, items: Some(n as f64), extra })
}
