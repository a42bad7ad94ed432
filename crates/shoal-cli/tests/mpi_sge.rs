//! The tutorial's dask-mpi batch job, the shoal way, on the real Grid
//! Engine of the test command: `examples/hpc/mpi_array_sge.sh` (`-pe smp
//! N`, `mpirun -np N+2`) runs as a `qsub` job, and `shoal efficiency` reads
//! that job's real `qacct` record; and the `shoal` command itself stays
//! out of mpirun mode.
//!
//! `.ci/run` starts Grid Engine and installs Open MPI, setting
//! `SHOAL_TEST_SGE` and `SHOAL_TEST_MPI`; elsewhere this test says so and
//! passes. The example is built by `cargo test` with the tests.

use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn the_tutorial_batch_script_runs_under_qsub_and_its_record_is_read() {
    if std::env::var_os("SHOAL_TEST_SGE").is_none() || std::env::var_os("SHOAL_TEST_MPI").is_none() {
        eprintln!("SHOAL_TEST_SGE or SHOAL_TEST_MPI is not set: no Grid Engine and MPI (.ci/run starts them)");
        return;
    }
    let exe = std::env::current_exe().expect("this test's path");
    let example = exe.parent().and_then(|d| d.parent()).expect("target/<profile>/deps").join("examples/mpi_array");
    assert!(example.exists(), "{} is missing: cargo build -p shoal --example mpi_array", example.display());
    let script = format!("{}/../../examples/hpc/mpi_array_sge.sh", env!("CARGO_MANIFEST_DIR"));
    let dir = std::env::temp_dir().join(format!("shoal-mpi-sge-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a job directory");
    let (out, err) = (dir.join("out"), dir.join("err"));

    // Two slots here (the test machine's), so 4 ranks: 2 workers. Root runs
    // Open MPI only when told so; the script's -V carries that to the job.
    let qsub = Command::new("qsub")
        .args(["-terse", "-sync", "y", "-pe", "smp", "2", "-N", "shoal_mpi_array", "-o"])
        .arg(&out)
        .arg("-e")
        .arg(&err)
        .args([&script, "600,400,10", "200,200,5"])
        .current_dir(&dir)
        .env("PROGRAM", &example)
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .output()
        .expect("qsub runs");
    let said = String::from_utf8_lossy(&qsub.stdout).into_owned();
    let job_output = std::fs::read_to_string(&out).unwrap_or_default();
    let job_errors = std::fs::read_to_string(&err).unwrap_or_default();
    assert!(qsub.status.success(), "qsub: {said}{}\n{job_output}\n{job_errors}", String::from_utf8_lossy(&qsub.stderr));
    assert!(job_output.contains("2 workers: "), "{job_output}\n{job_errors}");
    assert!(job_output.contains("z[..5] = ["), "{job_output}\n{job_errors}");
    let job = said.lines().next().expect("the job id").trim().to_string();

    // qacct has the record a moment after the job ends.
    let started = Instant::now();
    let report = loop {
        let run = Command::new(env!("CARGO_BIN_EXE_shoal")).args(["efficiency", &job]).output().expect("runs");
        if run.status.success() {
            break String::from_utf8_lossy(&run.stdout).into_owned();
        }
        assert!(started.elapsed() < Duration::from_secs(60), "{}", String::from_utf8_lossy(&run.stderr));
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(report.starts_with(&format!("job {job} (shoal_mpi_array): exit status 0")), "{report}");
    assert!(report.contains("2 reserved"), "{report}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `srun -n 4 shoal worker …` must start four workers: the command keeps
/// out of mpirun mode, so each copy runs as itself.
#[test]
fn the_shoal_command_runs_as_independent_copies_under_mpirun() {
    if std::env::var_os("SHOAL_TEST_MPI").is_none() {
        eprintln!("SHOAL_TEST_MPI is not set: no MPI (.ci/run installs it)");
        return;
    }
    let run = Command::new("mpirun.openmpi")
        .args(["--allow-run-as-root", "--oversubscribe", "-np", "3", env!("CARGO_BIN_EXE_shoal"), "--version"])
        .output()
        .expect("mpirun runs");
    let said = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{said}{}", String::from_utf8_lossy(&run.stderr));
    assert_eq!(said.lines().filter(|l| l.starts_with("shoal ")).count(), 3, "{said}");
}
