//! `mpirun` mode on real launchers: `examples/mpi_array.rs` started with 4
//! ranks by Open MPI's `mpirun`, MPICH's `mpiexec` and SLURM's `srun`, its
//! result checked against the same computation in this process; a worker
//! rank killed mid-run ends the whole run with an error naming it.
//!
//! `.ci/run` installs Open MPI and MPICH and sets `SHOAL_TEST_MPI` (and
//! starts SLURM, setting `SHOAL_TEST_SLURM`); elsewhere these tests say so
//! and pass. The example is built by `cargo test` with the tests.

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use shoal::Client;
use shoal::array::{self, RandomState};

const SHAPE: &str = "600,400,10";
const CHUNKS: &str = "200,200,5";

fn enabled(variable: &str) -> bool {
    let on = std::env::var_os(variable).is_some();
    if !on {
        eprintln!("{variable} is not set: no launcher to test against (.ci/run installs them)");
    }
    on
}

/// The example's binary, built beside this test's.
fn example() -> PathBuf {
    let exe = std::env::current_exe().expect("this test's path");
    let dir = exe.parent().and_then(|deps| deps.parent()).expect("target/<profile>/deps");
    let example = dir.join("examples").join("mpi_array");
    assert!(
        example.exists(),
        "{} is missing: build it with cargo build -p shoal --example mpi_array",
        example.display()
    );
    example
}

/// The launcher's command for `ranks` ranks of the example.
fn launch(launcher: &str, ranks: usize) -> Command {
    let ranks = ranks.to_string();
    let mut command = match launcher {
        "openmpi" => {
            let mut c = Command::new("mpirun.openmpi");
            c.args(["--allow-run-as-root", "--oversubscribe", "-np", &ranks]);
            c
        }
        "mpich" => {
            let mut c = Command::new("mpiexec.mpich");
            c.args(["-n", &ranks]);
            c
        }
        "srun" => {
            let mut c = Command::new("srun");
            c.args(["--overcommit", "-n", &ranks]);
            c
        }
        other => panic!("no launcher {other}"),
    };
    command.arg(example()).current_dir(std::env::temp_dir());
    command
}

/// Runs to the end, with a bound so that a hang fails the test.
fn finish(mut child: Child, within: Duration) -> Output {
    let started = Instant::now();
    while child.try_wait().expect("the launcher").is_none() {
        if started.elapsed() > within {
            let _ = child.kill();
            panic!("the run did not end within {within:?}: {:?}", child.wait_with_output());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().expect("its output")
}

/// The first values of `z`, computed in this process.
fn expected() -> Vec<f64> {
    let parse = |text: &str| -> Vec<usize> { text.split(',').map(|s| s.parse().expect("a size")).collect() };
    let (shape, chunks) = (parse(SHAPE), parse(CHUNKS));
    let rng = RandomState::new(0);
    let x = rng.random(&shape, chunks.clone());
    let y = rng.random(&shape, chunks);
    let z = (array::arcsin(&x) + array::arccos(&y)).sum([1, 2]);
    z.compute_with(&Client::sync()).expect("computes here").iter().take(5).copied().collect()
}

/// Runs the example with 4 ranks and checks its result and every rank's exit.
fn runs_right(launcher: &str) {
    let child = launch(launcher, 4)
        .args([SHAPE, CHUNKS])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the launcher starts");
    let output = finish(child, Duration::from_secs(120));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{launcher}: {:?}\n{stdout}\n{stderr}", output.status);
    assert!(stdout.contains("2 workers: "), "{stdout}");
    let line = stdout.lines().find_map(|l| l.strip_prefix("z[..5] = ")).unwrap_or_else(|| panic!("{stdout}"));
    let got: Vec<f64> = line.trim_matches(['[', ']']).split(", ").map(|v| v.parse().expect("a number")).collect();
    let want = expected();
    assert_eq!(got.len(), want.len(), "{stdout}");
    for (g, w) in got.iter().zip(&want) {
        assert!((g - w).abs() <= 1e-9 * w.abs(), "{launcher}: {got:?} against {want:?}");
    }
}

/// The pid of the example's rank `rank` of the run marked `run`, as the
/// launcher's variable shows.
fn rank_pid(variable: &str, rank: usize, run: &str) -> Option<u32> {
    let wanted = format!("{variable}={rank}");
    let marked = format!("SHOAL_TEST_RUN={run}");
    let example = example();
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|entry| {
        let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
        let exe = std::fs::read_link(entry.path().join("exe")).ok()?;
        if exe != example {
            return None;
        }
        let environ = std::fs::read(entry.path().join("environ")).ok()?;
        let mut vars = environ.split(|&b| b == 0);
        (vars.clone().any(|v| v == wanted.as_bytes()) && vars.any(|v| v == marked.as_bytes())).then_some(pid)
    })
}

/// Kills worker rank 2 in the middle of a long computation: the run must
/// end, non-zero, naming the rank, well before the computation could.
fn a_killed_worker_ends_the_run(launcher: &str, variable: &str) {
    let run = format!("kill-{launcher}-{}", std::process::id());
    let child = launch(launcher, 4)
        .args(["40000,40000,10", "1000,1000,5"])
        .env("SHOAL_TEST_RUN", &run)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the launcher starts");
    let started = Instant::now();
    let pid = loop {
        if let Some(pid) = rank_pid(variable, 2, &run) {
            break pid;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "rank 2 never started");
        std::thread::sleep(Duration::from_millis(50));
    };
    // Joined and computing by now (the computation takes far longer).
    std::thread::sleep(Duration::from_secs(2));
    let killed = Command::new("kill").args(["-9", &pid.to_string()]).status().expect("kill runs");
    assert!(killed.success());
    let output = finish(child, Duration::from_secs(30));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{launcher}: the run ended well after a rank died: {stderr}");
    assert!(stderr.contains("worker rank-2 died") || stderr.contains("rank 2"), "{launcher}: {stderr}");
    assert!(!String::from_utf8_lossy(&output.stdout).contains("z[..5]"), "the computation finished regardless");
}

#[test]
fn open_mpi_runs_the_example() {
    if enabled("SHOAL_TEST_MPI") {
        runs_right("openmpi");
    }
}

#[test]
fn mpich_runs_the_example() {
    if enabled("SHOAL_TEST_MPI") {
        runs_right("mpich");
    }
}

#[test]
fn srun_runs_the_example() {
    if enabled("SHOAL_TEST_SLURM") {
        runs_right("srun");
    }
}

#[test]
fn a_killed_worker_rank_ends_an_open_mpi_run() {
    if enabled("SHOAL_TEST_MPI") {
        a_killed_worker_ends_the_run("openmpi", "OMPI_COMM_WORLD_RANK");
    }
}

#[test]
fn a_killed_worker_rank_ends_an_srun_run() {
    // srun, unlike mpirun, lets the other tasks run on: shoal ends them.
    if enabled("SHOAL_TEST_SLURM") {
        a_killed_worker_ends_the_run("srun", "SLURM_PROCID");
    }
}

#[test]
fn two_ranks_are_refused_with_the_reason() {
    if !enabled("SHOAL_TEST_MPI") {
        return;
    }
    let child = launch("mpich", 2).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("starts");
    let output = finish(child, Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("shoal's mpirun mode needs at least 3 ranks"), "{stderr}");
}

#[test]
fn the_example_alone_says_how_to_start_it() {
    let output = Command::new(example()).env_remove("SHOAL_MPI").output().expect("starts");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("start it with mpirun -np N, mpiexec -n N or srun -n N"), "{stderr}");
}
