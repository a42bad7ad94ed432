//! `shoal-bench`: the benchmark suite, which `shoal bench` runs.
//!
//! Each run of each parameter set is a fresh child process (this same
//! executable), so its peak RSS is its own and no allocator state leaks from
//! one measurement into the next. Every parameter set prints one JSON line.
//!
//! The suite is a binary of its own so that the production `shoal` binary
//! registers none of its `#[shoal::remote]` functions. This binary links
//! `shoal`, so the worker processes of its cluster benchmarks are this
//! binary again: started with `SHOAL_WORKER_OF` set, it becomes a worker
//! before `main` runs.

mod actors;
mod array;
mod bag;
mod cluster;
mod mpi;
mod net;
mod sim;
mod threads;

use std::process::{Command, ExitCode};

/// mimalloc, for the suite and its worker processes (the same binary):
/// bag steps allocate a string per word, which glibc's allocator makes
/// the largest cost of a word count; the single-threaded reference runs
/// under it too.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Parser;
use serde_json::{Map, Value, json};

/// Run benchmarks; each prints one JSON line per parameter set.
#[derive(Parser)]
#[command(name = "shoal-bench", version)]
struct BenchArgs {
    /// Benchmarks to run; all when none are named.
    names: Vec<String>,
    /// Smaller sizes, for a quick look.
    #[arg(long)]
    quick: bool,
    /// Repetitions per parameter set; the median is reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// List the benchmarks and exit.
    #[arg(long)]
    list: bool,
    /// Internal: run one parameter set in this process.
    #[arg(long, hide = true, value_names = ["NAME", "PARAMS"], num_args = 2)]
    child: Option<Vec<String>>,
    /// Internal: rank 1 of `mpi-startup`'s run.
    #[arg(long, hide = true)]
    mpi_rank: bool,
    /// Internal: echo bytes on a loopback port (the far end of `net-rtt`).
    #[arg(long, hide = true)]
    echo_server: bool,
    /// Internal: swallow bytes on a loopback port (the far end of the TCP
    /// reference of `cluster-transfer`).
    #[arg(long, hide = true)]
    sink_server: bool,
}

/// One measured run.
pub(crate) struct Sample {
    /// Wall-clock seconds of the measured part.
    pub(crate) seconds: f64,
    /// Items processed, for the throughput (`None` when no rate applies).
    pub(crate) items: Option<f64>,
    /// Benchmark-specific figures.
    pub(crate) extra: Map<String, Value>,
}

pub(crate) struct Benchmark {
    pub(crate) name: &'static str,
    pub(crate) about: &'static str,
    pub(crate) unit: &'static str,
    pub(crate) params: fn(quick: bool) -> Vec<Value>,
    pub(crate) run: fn(params: &Value) -> anyhow::Result<Sample>,
}

fn all() -> Vec<Benchmark> {
    let mut all = threads::benchmarks();
    all.extend(net::benchmarks());
    all.extend(cluster::benchmarks());
    all.extend(sim::benchmarks());
    all.extend(array::benchmarks());
    all.extend(actors::benchmarks());
    all.extend(bag::benchmarks());
    all.extend(mpi::benchmarks());
    all
}

fn main() -> ExitCode {
    shoal_deploy::restart_with_huge_page_malloc();
    let args = BenchArgs::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shoal bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let benches = all();
    if args.mpi_rank {
        return mpi::rank_main();
    }
    if args.echo_server {
        return net::echo_server();
    }
    if args.sink_server {
        return net::sink_server();
    }
    if let Some(child) = &args.child {
        let [name, params] = child.as_slice() else { bail!("--child takes NAME PARAMS") };
        let bench = benches.iter().find(|b| b.name == name).with_context(|| format!("no benchmark named {name}"))?;
        let params: Value = serde_json::from_str(params).context("--child PARAMS is not JSON")?;
        return run_child(bench, &params);
    }
    if args.list {
        for b in &benches {
            println!("{:<24} {}", b.name, b.about);
        }
        return Ok(());
    }
    for name in &args.names {
        if !benches.iter().any(|b| b.name == name) {
            let known: Vec<&str> = benches.iter().map(|b| b.name).collect();
            bail!("no benchmark named {name:?}; known: {}", known.join(", "));
        }
    }
    let exe = std::env::current_exe().context("cannot find the shoal-bench executable to run benchmarks in")?;
    let mut failed = Vec::new();
    for bench in benches.iter().filter(|b| args.names.is_empty() || args.names.iter().any(|n| n == b.name)) {
        for params in (bench.params)(args.quick) {
            match measure(&exe, bench, &params, args.runs.max(1)) {
                Ok(line) => println!("{line}"),
                Err(e) => {
                    eprintln!("shoal bench: {} {params} failed: {e:#}", bench.name);
                    failed.push(format!("{} {params}", bench.name));
                }
            }
        }
    }
    if !failed.is_empty() {
        bail!("{} benchmark(s) failed: {}", failed.len(), failed.join("; "));
    }
    Ok(())
}

/// Runs one parameter set `runs` times, each in a fresh process, and builds
/// its JSON line.
fn measure(exe: &std::path::Path, bench: &Benchmark, params: &Value, runs: usize) -> anyhow::Result<Value> {
    let mut samples: Vec<Map<String, Value>> = Vec::with_capacity(runs);
    for _ in 0..runs {
        let output = Command::new(exe)
            .args(["--child", bench.name, &params.to_string()])
            .stderr(std::process::Stdio::inherit())
            .output()
            .with_context(|| format!("cannot start {}", exe.display()))?;
        if !output.status.success() {
            bail!("the benchmark process ended with {}", output.status);
        }
        let sample: Value = serde_json::from_slice(&output.stdout).context("the benchmark process printed no JSON")?;
        match sample {
            Value::Object(m) => samples.push(m),
            other => bail!("the benchmark process printed {other} instead of an object"),
        }
    }
    let seconds = |s: &Map<String, Value>| s.get("seconds").and_then(Value::as_f64).unwrap_or(f64::NAN);
    samples.sort_by(|a, b| seconds(a).total_cmp(&seconds(b)));
    let median = &samples[samples.len() / 2];
    let median_s = seconds(median);
    let mut line = Map::new();
    line.insert("name".into(), json!(bench.name));
    line.insert("params".into(), params.clone());
    line.insert("median_s".into(), json!(median_s));
    line.insert("runs_s".into(), json!(samples.iter().map(seconds).collect::<Vec<_>>()));
    if let Some(items) = median.get("items").and_then(Value::as_f64) {
        line.insert("throughput".into(), json!((items / median_s * 10.0).round() / 10.0));
        line.insert("unit".into(), json!(bench.unit));
    }
    if let Some(Value::Object(extra)) = median.get("extra") {
        line.extend(extra.clone());
    }
    let peak = samples.iter().filter_map(|s| s.get("peak_rss_bytes").and_then(Value::as_u64)).max();
    line.insert("peak_rss_bytes".into(), json!(peak));
    Ok(Value::Object(line))
}

/// Runs one measurement in this process and prints it as JSON.
fn run_child(bench: &Benchmark, params: &Value) -> anyhow::Result<()> {
    let sample = (bench.run)(params)?;
    let out = json!({
        "seconds": sample.seconds,
        "items": sample.items,
        "extra": Value::Object(sample.extra),
        "peak_rss_bytes": peak_rss_bytes(),
    });
    println!("{out}");
    Ok(())
}

/// Peak resident memory of this process (VmHWM), in bytes.
pub(crate) fn peak_rss_bytes() -> u64 {
    proc_status_kib("VmHWM:") * 1024
}

/// Resident memory of this process now (VmRSS), in bytes.
pub(crate) fn rss_bytes() -> u64 {
    proc_status_kib("VmRSS:") * 1024
}

fn proc_status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Times `f`.
pub(crate) fn timed<T>(f: impl FnOnce() -> T) -> (f64, T) {
    let start = Instant::now();
    let out = f();
    (start.elapsed().as_secs_f64(), out)
}

pub(crate) fn param_u64(params: &Value, name: &str) -> anyhow::Result<u64> {
    params.get(name).and_then(Value::as_u64).with_context(|| format!("parameter {name} missing or not an integer"))
}
