//! Benchmarks of the in-process thread-pool executor.

use std::sync::Arc;

use anyhow::Context;
use serde_json::{Map, Value, json};
use shoal::{Client, Delayed, delayed};

use super::{Benchmark, Sample, param_u64, rss_bytes, timed};

pub(super) fn benchmarks() -> Vec<Benchmark> {
    vec![
        Benchmark {
            name: "threads-noop",
            about: "n independent no-op tasks submitted with map and gathered",
            unit: "tasks/s",
            params: |quick| {
                if quick { vec![json!({"n": 100_000})] } else { vec![json!({"n": 100_000}), json!({"n": 1_000_000})] }
            },
            run: noop,
        },
        Benchmark {
            name: "threads-chain",
            about: "a chain of n tasks, each depending on the previous one",
            unit: "tasks/s",
            params: |quick| vec![json!({"n": if quick { 10_000 } else { 100_000 }})],
            run: chain,
        },
        Benchmark {
            name: "threads-tree",
            about: "a binary tree reduction over n leaves built with delayed",
            unit: "tasks/s",
            params: |quick| vec![json!({"n": if quick { 100_000 } else { 1_000_000 }})],
            run: tree,
        },
        Benchmark {
            name: "threads-pending-memory",
            about: "memory held per pending task (n tasks waiting on one gate)",
            unit: "tasks/s",
            params: |quick| vec![json!({"n": if quick { 100_000 } else { 1_000_000 }})],
            run: pending_memory,
        },
    ]
}

fn client() -> anyhow::Result<Client> {
    Client::threads().context("cannot start the thread pool")
}

fn noop_task(x: u64) -> u64 {
    x
}

fn noop(params: &Value) -> anyhow::Result<Sample> {
    let n = param_u64(params, "n")?;
    let client = client()?;
    let mut phases = [0.0; 3];
    let (seconds, sum) = timed(|| -> anyhow::Result<u64> {
        let (submit_s, futures) = timed(|| client.map(noop_task, 0..n));
        let (gather_s, values) = timed(|| client.gather(&futures));
        let (release_s, ()) = timed(|| drop(futures));
        phases = [submit_s, gather_s, release_s];
        Ok(values?.iter().sum())
    });
    anyhow::ensure!(sum? == n * (n.saturating_sub(1)) / 2, "wrong sum of no-op results");
    let mut extra = Map::new();
    extra.insert("submit_s".into(), json!(phases[0]));
    extra.insert("gather_s".into(), json!(phases[1]));
    extra.insert("release_s".into(), json!(phases[2]));
    Ok(Sample { seconds, items: Some(n as f64), extra })
}

fn inc(x: u64) -> u64 {
    x + 1
}

fn chain(params: &Value) -> anyhow::Result<Sample> {
    let n = param_u64(params, "n")?;
    let client = client()?;
    let (seconds, last) = timed(|| -> anyhow::Result<u64> {
        let mut f = client.submit(inc, (0u64,));
        for _ in 1..n {
            f = client.submit(inc, (&f,));
        }
        Ok(f.result()?)
    });
    anyhow::ensure!(last? == n, "wrong chain result");
    let mut extra = Map::new();
    extra.insert("us_per_link".into(), json!((seconds / n as f64 * 1e6 * 1000.0).round() / 1000.0));
    Ok(Sample { seconds, items: Some(n as f64), extra })
}

fn leaf(i: u64) -> u64 {
    i
}

fn add(a: u64, b: u64) -> u64 {
    a + b
}

fn tree(params: &Value) -> anyhow::Result<Sample> {
    let n = param_u64(params, "n")?;
    let client = client()?;
    let mut build_s = 0.0;
    let (seconds, total) = timed(|| -> anyhow::Result<u64> {
        let (b, root) = timed(|| {
            let mut level: Vec<Delayed<u64>> = (0..n).map(|i| delayed(leaf, (i,))).collect();
            while level.len() > 1 {
                level = level
                    .chunks(2)
                    .map(|pair| match pair {
                        [a, b] => delayed(add, (a, b)),
                        [a] => a.clone(),
                        _ => unreachable!("chunks(2)"),
                    })
                    .collect();
            }
            level.pop()
        });
        build_s = b;
        Ok(root.context("empty tree")?.compute_with(&client)?)
    });
    anyhow::ensure!(total? == n * (n - 1) / 2, "wrong tree sum");
    let mut extra = Map::new();
    extra.insert("build_s".into(), json!(build_s));
    extra.insert("tasks".into(), json!(2 * n - 1));
    Ok(Sample { seconds, items: Some((2 * n - 1) as f64), extra })
}

fn pending_memory(params: &Value) -> anyhow::Result<Sample> {
    let n = param_u64(params, "n")?;
    let client = client()?;
    let gate = Arc::new((std::sync::Mutex::new(false), std::sync::Condvar::new()));
    let g = gate.clone();
    let opened = client.submit(
        move || {
            let (lock, cv) = &*g;
            let mut open = lock.lock().unwrap_or_else(|e| e.into_inner());
            while !*open {
                open = cv.wait(open).unwrap_or_else(|e| e.into_inner());
            }
            0u64
        },
        (),
    );
    let before = rss_bytes();
    let (seconds, futures) = timed(|| (0..n).map(|i| client.submit(add, (&opened, i))).collect::<Vec<_>>());
    let after = rss_bytes();
    {
        let (lock, cv) = &*gate;
        *lock.lock().unwrap_or_else(|e| e.into_inner()) = true;
        cv.notify_all();
    }
    let values = client.gather(&futures)?;
    anyhow::ensure!(values.iter().sum::<u64>() == n * (n - 1) / 2, "wrong results");
    let mut extra = Map::new();
    extra.insert("bytes_per_pending_task".into(), json!((after.saturating_sub(before)) as f64 / n as f64));
    Ok(Sample { seconds, items: Some(n as f64), extra })
}
