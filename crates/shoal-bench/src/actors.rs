//! Benchmarks of actors and of Ray's spelling, on a LocalCluster of 2
//! worker processes.

use anyhow::Context;
use serde_json::{Map, Value, json};
use shoal::LocalCluster;
use shoal::ray::Remote;

use super::{Benchmark, Sample, param_u64, timed};

pub(super) fn benchmarks() -> Vec<Benchmark> {
    vec![
        Benchmark {
            name: "actor-roundtrip",
            about: "n increment() calls on one actor on a worker process, each awaited before the next",
            unit: "calls/s",
            params: |quick| vec![json!({"n": if quick { 1_000 } else { 10_000 }})],
            run: roundtrip,
        },
        Benchmark {
            name: "actor-throughput",
            about: "n increment() calls in flight at once, to one actor or spread over 8, then awaited",
            unit: "calls/s",
            params: |quick| {
                let n = if quick { 10_000 } else { 100_000 };
                vec![json!({"n": n, "actors": 1}), json!({"n": n, "actors": 8})]
            },
            run: throughput,
        },
        Benchmark {
            name: "ray-tasks",
            about: "increment.remote(x) for n values on a LocalCluster of 2 workers x 1 thread, then get",
            unit: "tasks/s",
            params: |quick| vec![json!({"n": if quick { 10_000 } else { 100_000 }})],
            run: ray_tasks,
        },
    ]
}

/// The tutorial's counter.
pub(crate) struct Counter {
    n: u64,
}

#[shoal::actor]
impl Counter {
    pub(crate) fn new() -> Counter {
        Counter { n: 0 }
    }

    pub(crate) fn increment(&mut self) -> u64 {
        self.n += 1;
        self.n
    }
}

#[shoal::remote]
fn increment(x: u64) -> u64 {
    x + 1
}

fn cluster() -> anyhow::Result<LocalCluster> {
    LocalCluster::builder().workers(2).threads_per_worker(1).build().context("cluster starts")
}

fn roundtrip(params: &Value) -> anyhow::Result<Sample> {
    let n = param_u64(params, "n")?;
    let cluster = cluster()?;
    let client = cluster.client().context("client connects")?;
    let counter = client.actor(Counter::new, ());
    // Made and reached before the clock starts.
    counter.increment().result()?;
    let (seconds, last) = timed(|| -> anyhow::Result<u64> {
        let mut last = 0;
        for _ in 0..n {
            last = counter.increment().result()?;
        }
        Ok(last)
    });
    anyhow::ensure!(last? == n + 1, "wrong count");
    let mut extra = Map::new();
    extra.insert("us_per_call".into(), json!((seconds / n as f64 * 1e7).round() / 10.0));
    Ok(Sample { seconds, items: Some(n as f64), extra })
}

fn throughput(params: &Value) -> anyhow::Result<Sample> {
    let n = param_u64(params, "n")?;
    let actors = param_u64(params, "actors")?.max(1);
    let cluster = cluster()?;
    let client = cluster.client().context("client connects")?;
    let counters: Vec<_> = (0..actors).map(|_| client.actor(Counter::new, ())).collect();
    shoal::gather(&counters.iter().map(|c| c.increment()).collect::<Vec<_>>())?;
    let (seconds, done) = timed(|| -> anyhow::Result<usize> {
        let calls: Vec<_> = (0..n).map(|i| counters[(i % actors) as usize].increment()).collect();
        Ok(shoal::gather(&calls)?.len())
    });
    anyhow::ensure!(done? == n as usize, "calls lost");
    Ok(Sample { seconds, items: Some(n as f64), extra: Map::new() })
}

fn ray_tasks(params: &Value) -> anyhow::Result<Sample> {
    let n = param_u64(params, "n")?;
    let cluster = cluster()?;
    let _client = cluster.client().context("client connects")?;
    let (seconds, sum) = timed(|| -> anyhow::Result<u64> {
        let refs: Vec<_> = (0..n).map(|x| increment.remote(x)).collect();
        Ok(shoal::get(&refs)?.iter().sum())
    });
    anyhow::ensure!(sum? == n * (n + 1) / 2, "wrong sum");
    Ok(Sample { seconds, items: Some(n as f64), extra: Map::new() })
}
