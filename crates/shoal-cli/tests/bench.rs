//! `shoal bench` runs the `shoal-bench` binary found beside it (or on
//! `PATH`) with its arguments as they are, and says how to build it when
//! there is none. A stand-in script plays `shoal-bench` here; the suite's
//! own tests are in crates/shoal-bench.
#![cfg(unix)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A directory of its own holding (a link to) the `shoal` binary, so that
/// what is beside it is up to the test.
fn lone_shoal(test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("bench-{test}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("test directory");
    let shoal = dir.join("shoal");
    if std::fs::hard_link(env!("CARGO_BIN_EXE_shoal"), &shoal).is_err() {
        std::fs::copy(env!("CARGO_BIN_EXE_shoal"), &shoal).expect("copies shoal");
    }
    shoal
}

/// `shoal ARGS` with nothing on `PATH` but the system's directories.
fn run(shoal: &Path, args: &[&str]) -> Output {
    Command::new(shoal).args(args).env("PATH", "/usr/bin:/bin").output().expect("shoal runs")
}

#[test]
fn the_arguments_go_to_shoal_bench_as_they_are() {
    let shoal = lone_shoal("pass-through");
    let stand_in = shoal.with_file_name("shoal-bench");
    std::fs::write(&stand_in, "#!/bin/sh\nprintf '%s\\n' \"$@\"\nexit 3\n").expect("writes the stand-in");
    std::fs::set_permissions(&stand_in, std::fs::Permissions::from_mode(0o755)).expect("makes it executable");
    let args = ["threads-noop", "--quick", "--runs", "1", "--list", "--help", "--child", "net-rtt", "{\"n\": 1}"];
    let out = run(&shoal, &[&["bench"], &args[..]].concat());
    assert_eq!(out.status.code(), Some(3), "its exit status is shoal's: {}", String::from_utf8_lossy(&out.stderr));
    let expected: String = args.iter().map(|a| format!("{a}\n")).collect();
    assert_eq!(String::from_utf8_lossy(&out.stdout), expected);
}

#[test]
fn without_shoal_bench_the_error_says_how_to_build_it() {
    let shoal = lone_shoal("missing");
    let out = run(&shoal, &["bench", "--list"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("shoal-bench") && err.contains("cargo build --release -p shoal-bench"), "{err}");
}
