//! Benchmarks of the distributed path (scheduler, workers, loopback TCP).

use anyhow::Context;
use serde_json::{Map, Value, json};
use shoal::{Blob, LocalCluster, SameHostTransfer, TaskOptions};

use super::{Benchmark, Sample, param_u64, timed};

pub(super) fn benchmarks() -> Vec<Benchmark> {
    vec![
        Benchmark {
            name: "cluster-noop",
            about: "n no-op tasks via map on a LocalCluster of 2 workers x 1 thread (processes or threads), gathered",
            unit: "tasks/s",
            params: |quick| {
                let n = if quick { 10_000 } else { 100_000 };
                vec![
                    json!({"n": n, "workers": 2, "threads": 1, "processes": true}),
                    json!({"n": n, "workers": 2, "threads": 1, "processes": false}),
                ]
            },
            run: noop,
        },
        Benchmark {
            name: "cluster-chain",
            about: "a chain of n tasks, each on the other worker than the one before",
            unit: "tasks/s",
            params: |quick| vec![json!({"n": if quick { 200 } else { 2_000 }, "workers": 2})],
            run: chain,
        },
        Benchmark {
            name: "cluster-transfer",
            about: "a result of mb megabytes made on worker 0, taken as an argument by a task on worker 1 \
                    (via: read from the holder's memory, as workers on one host do, or tcp, as between hosts)",
            unit: "bytes/s",
            params: |quick| {
                let mb = if quick { 50 } else { 200 };
                vec![json!({"mb": mb, "workers": 2, "via": "read"}), json!({"mb": mb, "workers": 2, "via": "tcp"})]
            },
            run: transfer,
        },
        Benchmark {
            name: "cluster-startup",
            about: "a LocalCluster of 2 worker processes started, ready, and closed",
            unit: "clusters/s",
            params: |_| vec![json!({"workers": 2, "processes": true})],
            run: startup,
        },
    ]
}

#[shoal::remote]
fn cluster_inc(x: u64) -> u64 {
    x + 1
}

fn chain(params: &Value) -> anyhow::Result<Sample> {
    let n = param_u64(params, "n")?;
    let workers = param_u64(params, "workers")? as usize;
    let cluster = LocalCluster::builder().workers(workers).threads_per_worker(1).build().context("cluster starts")?;
    let client = cluster.client().context("client connects")?;
    let on = |i: u64| TaskOptions::new().workers([format!("local-{}", i as usize % workers)]);
    let (seconds, last) = timed(|| -> anyhow::Result<u64> {
        let mut f = client.submit_with(&on(0), cluster_inc, (0u64,));
        for i in 1..n {
            f = client.submit_with(&on(i), cluster_inc, (&f,));
        }
        Ok(f.result()?)
    });
    anyhow::ensure!(last? == n, "wrong chain result");
    let mut extra = Map::new();
    extra.insert("us_per_link".into(), json!((seconds / n as f64 * 1e7).round() / 10.0));
    Ok(Sample { seconds, items: Some(n as f64), extra })
}

fn startup(params: &Value) -> anyhow::Result<Sample> {
    let workers = param_u64(params, "workers")? as usize;
    let processes = params.get("processes").and_then(Value::as_bool).unwrap_or(true);
    let (seconds, result) = timed(|| -> anyhow::Result<()> {
        let cluster = LocalCluster::builder().workers(workers).threads_per_worker(1).processes(processes).build()?;
        anyhow::ensure!(cluster.client()?.scheduler_info()?.len() == workers, "not every worker joined");
        drop(cluster);
        Ok(())
    });
    result?;
    Ok(Sample { seconds, items: Some(1.0), extra: Map::new() })
}

#[shoal::remote]
fn cluster_noop(x: u64) -> u64 {
    x
}

fn noop(params: &Value) -> anyhow::Result<Sample> {
    let n = param_u64(params, "n")?;
    let workers = param_u64(params, "workers")? as usize;
    let threads = param_u64(params, "threads")? as usize;
    let processes = params.get("processes").and_then(Value::as_bool).unwrap_or(true);
    let cluster = LocalCluster::builder()
        .workers(workers)
        .threads_per_worker(threads)
        .processes(processes)
        .build()
        .context("cluster starts")?;
    let client = cluster.client().context("client connects")?;
    let (seconds, sum) = timed(|| -> anyhow::Result<u64> {
        let futures = client.map(cluster_noop, 0..n);
        Ok(client.gather(&futures)?.iter().sum())
    });
    anyhow::ensure!(sum? == n * (n - 1) / 2, "wrong results");
    Ok(Sample { seconds, items: Some(n as f64), extra: Map::new() })
}

/// The bulk result of `cluster-transfer`: `n` bytes, not all alike (a page
/// of zeros could be shared or compressed by accident).
#[shoal::remote]
fn cluster_make_bytes(n: u64) -> Blob {
    Blob::from((0..n).map(|i| (i % 251) as u8).collect::<Vec<u8>>())
}

/// What the consumer of `cluster-transfer` returns: the length and a sum
/// over a sample of the bytes (cheap, but it touches the data).
#[shoal::remote]
fn cluster_take_bytes(bytes: Blob) -> (u64, u64) {
    let sample: u64 = bytes.iter().step_by(4096).map(|&b| u64::from(b)).sum();
    (bytes.len() as u64, sample)
}

fn transfer(params: &Value) -> anyhow::Result<Sample> {
    let n = param_u64(params, "mb")? * 1_000_000;
    let workers = param_u64(params, "workers")? as usize;
    anyhow::ensure!(workers >= 2, "cluster-transfer needs two workers");
    let via = params.get("via").and_then(Value::as_str).unwrap_or("read");
    let how: SameHostTransfer = via.parse().map_err(|e| anyhow::anyhow!("parameter via: {e}"))?;
    let cluster = LocalCluster::builder()
        .workers(workers)
        .threads_per_worker(1)
        .same_host_transfer(how)
        .build()
        .context("cluster starts")?;
    let client = cluster.client().context("client connects")?;
    // The first move finds the receiver without memory of that size; the
    // timed one is the second, as in a workload that moves large results
    // again and again (the receiver reuses its buffers). Both are reported.
    let first = move_once(&client, n)?;
    let seconds = move_once(&client, n)?;
    let gb_per_s = |seconds: f64| json!((n as f64 / seconds / 1e7).round() / 100.0);
    let mut extra = Map::new();
    extra.insert("gb_per_s".into(), gb_per_s(seconds));
    extra.insert("first_gb_per_s".into(), gb_per_s(first));
    extra.insert("tcp_gb_per_s".into(), json!(super::net::tcp_throughput(n as usize)?));
    Ok(Sample { seconds, items: Some(n as f64), extra })
}

/// Makes `n` bytes on worker 0 (not timed), and times a task on worker 1
/// that takes them as its argument. Every future is dropped on return, so
/// both workers let the bytes go.
fn move_once(client: &shoal::Client, n: u64) -> anyhow::Result<f64> {
    let on = |i: usize| TaskOptions::new().workers([format!("local-{i}")]);
    let made = client.submit_with(&on(0), cluster_make_bytes, (n,));
    made.wait();
    anyhow::ensure!(made.done(), "the bulk result was not made: {:?}", made.status());
    let expected: u64 = (0..n).step_by(4096).map(|i| i % 251).sum();
    let (seconds, got) = timed(|| client.submit_with(&on(1), cluster_take_bytes, (&made,)).result());
    anyhow::ensure!(got? == (n, expected), "the bytes arrived changed");
    Ok(seconds)
}
