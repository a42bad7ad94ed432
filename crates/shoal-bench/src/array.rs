//! Benchmarks of chunked arrays: the tutorial's example and exercise 5.

use anyhow::{Context, ensure};
use serde_json::{Map, Value, json};
use shoal::array::{self, RandomState};
use shoal::{Client, LocalCluster};

use super::{Benchmark, Sample, param_u64, timed};

pub(super) fn benchmarks() -> Vec<Benchmark> {
    vec![
        Benchmark {
            name: "array-seed",
            about: "the tutorial's (arcsin(x) + arccos(y)).sum(axis=(1, 2)) over two random n x 10000 x 10 arrays",
            unit: "elements/s",
            params: |quick| {
                let n = if quick { 1_000 } else { 10_000 };
                vec![json!({"n": n, "executor": "threads"}), json!({"n": n, "executor": "cluster"})]
            },
            run: seed,
        },
        Benchmark {
            name: "array-chunks",
            about: "sum of 10^7 uniform numbers in chunks of 1000, of 100000, or as one plain array",
            unit: "elements/s",
            params: |_| vec![json!({"chunk": 1000}), json!({"chunk": 100_000}), json!({"chunk": "plain"})],
            run: chunks,
        },
        Benchmark {
            name: "array-elementwise",
            about: "arcsin(x) + arccos(y) summed over 10^8 random elements in one chunk, fused or a scalar std loop",
            unit: "elements/s",
            params: |quick| {
                let n = if quick { 10_000_000 } else { 100_000_000 };
                vec![json!({"n": n, "kernel": "fused"}), json!({"n": n, "kernel": "scalar"})]
            },
            run: elementwise,
        },
    ]
}

/// The client for `executor`: this process's threads, or a LocalCluster of
/// two worker processes of one thread each (kept alive by the returned guard).
fn client_for(executor: &str) -> anyhow::Result<(Client, Option<LocalCluster>)> {
    match executor {
        "threads" => Ok((Client::threads().context("cannot start the thread pool")?, None)),
        "cluster" => {
            let cluster =
                LocalCluster::builder().workers(2).threads_per_worker(1).build().context("the cluster starts")?;
            Ok((cluster.client().context("the client connects")?, Some(cluster)))
        }
        other => anyhow::bail!("executor {other:?} is neither \"threads\" nor \"cluster\""),
    }
}

fn seed(params: &Value) -> anyhow::Result<Sample> {
    let n = param_u64(params, "n")? as usize;
    let executor = params.get("executor").and_then(Value::as_str).unwrap_or("threads");
    let (client, _cluster) = client_for(executor)?;
    let rng = RandomState::new(0);
    let shape = [n, 10_000, 10];
    let chunks = [1_000, 1_000, 5];
    let (seconds, z) = timed(|| -> anyhow::Result<_> {
        let x = rng.random(&shape, chunks);
        let y = rng.random(&shape, chunks);
        let z = (array::arcsin(&x) + array::arccos(&y)).sum([1, 2]);
        Ok(z.compute_with(&client)?)
    });
    let z = z?;
    let mean = z.mean().unwrap_or(f64::NAN) / 100_000.0;
    ensure!((mean - std::f64::consts::FRAC_PI_2).abs() < 1e-3, "z.mean() / 100000 = {mean}, not near pi/2");
    let mut extra = Map::new();
    extra.insert("mean_over_1e5".into(), json!(mean));
    Ok(Sample { seconds, items: Some(2.0 * (n * 100_000) as f64), extra })
}

fn chunks(params: &Value) -> anyhow::Result<Sample> {
    const N: usize = 10_000_000;
    let client = Client::threads().context("cannot start the thread pool")?;
    let rng = RandomState::new(0);
    let (seconds, total) = match params.get("chunk") {
        Some(Value::String(s)) if s == "plain" => timed(|| -> anyhow::Result<f64> {
            // One in-memory array, made by one task, then summed here.
            let data = rng.random(&[N], N).compute_with(&client)?;
            Ok(data.sum())
        }),
        Some(Value::Number(c)) => {
            let chunk = c.as_u64().context("chunk is a positive integer")? as usize;
            timed(|| -> anyhow::Result<f64> { Ok(rng.random(&[N], chunk).sum(..).compute_with(&client)?.sum()) })
        }
        other => anyhow::bail!("chunk {other:?} is neither a number nor \"plain\""),
    };
    let total = total?;
    ensure!((total / N as f64 - 0.5).abs() < 1e-3, "the mean of uniform numbers came out as {}", total / N as f64);
    Ok(Sample { seconds, items: Some(N as f64), extra: Map::new() })
}

/// splitmix64: the scalar baseline's random numbers.
fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn elementwise(params: &Value) -> anyhow::Result<Sample> {
    let n = param_u64(params, "n")? as usize;
    let kernel = params.get("kernel").and_then(Value::as_str).unwrap_or("fused");
    let (seconds, total) = match kernel {
        "fused" => {
            // One worker thread: the figure is per element of one core.
            let client = Client::builder().threads(1).build().context("cannot start the thread pool")?;
            let rng = RandomState::new(0);
            let x = rng.random(&[n], n);
            let y = rng.random(&[n], n);
            let z = (array::arcsin(&x) + array::arccos(&y)).sum(..);
            timed(|| -> anyhow::Result<f64> { Ok(z.compute_with(&client)?.sum()) })
        }
        "scalar" => timed(|| -> anyhow::Result<f64> {
            let unit = |bits: u64| f64::from_bits(0x3FF0_0000_0000_0000 | (bits >> 12)) - 1.0;
            let mut total = 0.0;
            for i in 0..n as u64 {
                total += unit(splitmix(2 * i)).asin() + unit(splitmix(2 * i + 1)).acos();
            }
            Ok(total)
        }),
        other => anyhow::bail!("kernel {other:?} is neither \"fused\" nor \"scalar\""),
    };
    let mean = total? / n as f64;
    ensure!((mean - std::f64::consts::FRAC_PI_2).abs() < 1e-2, "mean {mean} is not near pi/2");
    let mut extra = Map::new();
    extra.insert("ns_per_element".into(), json!(seconds * 1e9 / n as f64));
    Ok(Sample { seconds, items: Some(n as f64), extra })
}
