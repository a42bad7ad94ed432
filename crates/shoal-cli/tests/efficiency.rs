//! `shoal efficiency` as users run it: saved accounting output from a file
//! or a pipe, and clear errors for what it cannot read.

use std::io::Write;
use std::process::{Command, Stdio};

fn shoal() -> Command {
    Command::new(env!("CARGO_BIN_EXE_shoal"))
}

/// Saved accounting output, kept beside the parsers in shoal-deploy.
fn data(name: &str) -> String {
    format!("{}/../shoal-deploy/tests/data/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn a_saved_qacct_record_is_reported_from_a_file_or_a_pipe() {
    let from_file = shoal().args(["efficiency", "--qacct", &data("qacct-exercise7.txt")]).output().expect("runs");
    assert!(from_file.status.success(), "{}", String::from_utf8_lossy(&from_file.stderr));
    let report = String::from_utf8_lossy(&from_file.stdout).into_owned();
    assert!(report.starts_with("job 3524046 (example_bodo_mpi_sge.bash): exit status 0"), "{report}");
    assert!(report.contains("13 % CPU efficiency"), "{report}");

    let mut child = shoal()
        .args(["efficiency", "--qacct", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("runs");
    let text = std::fs::read(data("qacct-exercise7.txt")).expect("test data");
    child.stdin.take().expect("stdin").write_all(&text).expect("writes");
    let piped = child.wait_with_output().expect("ends");
    assert_eq!(String::from_utf8_lossy(&piped.stdout), report, "the same report either way");
}

#[test]
fn sacct_output_reports_every_job() {
    let out = shoal().args(["efficiency", "--sacct", &data("sacct-example.txt")]).output().expect("runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(report.contains("job 4211 (tutorial)") && report.contains("job 4212 (tutorial)"), "{report}");
}

fn fails(args: &[&str]) -> String {
    let out = shoal().args(args).output().expect("runs");
    assert!(!out.status.success(), "{args:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn what_cannot_be_read_is_named() {
    let err = fails(&["efficiency"]);
    assert!(err.contains("give a job id"), "{err}");
    let err = fails(&["efficiency", "--qacct", "/no/such/file"]);
    assert!(err.contains("cannot read /no/such/file"), "{err}");
    let err = fails(&["efficiency", "--sacct", &data("qacct-exercise6.txt")]);
    assert!(err.contains("no JobID column") && err.contains("--format="), "{err}");
    let err = fails(&["efficiency", "--qacct", &data("sacct-example.txt")]);
    assert!(err.contains("no \"jobnumber\" line"), "{err}");
    let err = fails(&["efficiency", "12; rm -rf /"]);
    assert!(err.contains("is not a job id"), "{err}");
    let err = fails(&["efficiency", "1", "--qacct", "-"]);
    assert!(err.contains("cannot be used with"), "{err}");
}
