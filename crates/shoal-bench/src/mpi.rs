//! `mpirun` mode's start: from the launcher's command to the first task's
//! result, with this binary as every rank.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, bail};
use serde_json::{Map, Value, json};

use super::{Benchmark, Sample, param_u64};

/// The line rank 1 prints with the first result, which the clock waits for.
const FIRST_RESULT: &str = "first result ";

pub(super) fn benchmarks() -> Vec<Benchmark> {
    vec![Benchmark {
        name: "mpi-startup",
        about: "mpirun -np ranks of this binary: time from the launcher's start to the first task's result \
                (and to every rank's exit)",
        unit: "runs/s",
        params: |_| vec![json!({"ranks": 8})],
        run: startup,
    }]
}

#[shoal::remote]
fn mpi_ready(x: u64) -> u64 {
    x + 1
}

/// Rank 1 of the run (`shoal-bench --mpi-rank`): one task, its result printed.
pub(super) fn rank_main() -> anyhow::Result<()> {
    let client = shoal::init_mpi();
    let result = client.submit(mpi_ready, (41u64,)).result()?;
    println!("{FIRST_RESULT}{result}");
    Ok(())
}

fn startup(params: &Value) -> anyhow::Result<Sample> {
    let ranks = param_u64(params, "ranks")?;
    let exe = std::env::current_exe().context("cannot find this executable")?;
    let started = Instant::now();
    // Root may run Open MPI only when told so, and oversubscribing 2 cores
    // with 8 ranks must be allowed; MPICH ignores these variables.
    let mut child = Command::new("mpirun")
        .args(["-np", &ranks.to_string()])
        .arg(&exe)
        .arg("--mpi-rank")
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env("OMPI_MCA_rmaps_base_oversubscribe", "1")
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot start mpirun (install Open MPI or MPICH)")?;
    let stdout = child.stdout.take().context("mpirun's output")?;
    let mut first = None;
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        if let Some(value) = line.strip_prefix(FIRST_RESULT) {
            anyhow::ensure!(value == "42", "the first task returned {value}, not 42");
            first = Some(started.elapsed().as_secs_f64());
        }
    }
    let status = child.wait()?;
    let all_exited = started.elapsed().as_secs_f64();
    if !status.success() {
        bail!("mpirun ended with {status}");
    }
    let seconds = first.context("rank 1 printed no first result")?;
    let mut extra = Map::new();
    extra.insert("all_exited_s".into(), json!(all_exited));
    Ok(Sample { seconds, items: Some(1.0), extra })
}
