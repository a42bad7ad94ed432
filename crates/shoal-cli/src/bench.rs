//! `shoal bench`: runs the benchmark suite, which is a binary of its own.
//!
//! The benchmarks live in `crates/shoal-bench`. Its `shoal-bench` binary
//! registers their `#[shoal::remote]` functions and is the worker process
//! of their clusters, so this production binary carries none of them.
//! `shoal bench ARGS` finds `shoal-bench` beside this executable (as cargo
//! builds both into `target/release`), else on `PATH`, and runs it in this
//! process's place with the same arguments: its output, exit status and
//! `--help` are the suite's own.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::Context;

/// The benchmark suite's binary.
const BENCH_BINARY: &str = "shoal-bench";

/// Options of `shoal bench`: all of them are the suite's.
#[derive(clap::Args)]
#[command(disable_help_flag = true)]
pub(crate) struct BenchArgs {
    /// Benchmark names and options (--quick, --runs N, --list; see
    /// shoal bench --help), passed to shoal-bench as they are.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, value_name = "ARGS")]
    args: Vec<OsString>,
}

pub(crate) fn run(args: &BenchArgs) -> anyhow::Result<ExitCode> {
    let exe = find_bench_binary()?;
    let mut command = Command::new(&exe);
    command.args(&args.args);
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        // `exec` returns only if it failed.
        let failed = command.exec();
        Err(failed).with_context(|| format!("cannot run {}", exe.display()))
    }
    #[cfg(not(unix))]
    {
        let status = command.status().with_context(|| format!("cannot run {}", exe.display()))?;
        Ok(status.code().and_then(|c| u8::try_from(c).ok()).map_or(ExitCode::FAILURE, ExitCode::from))
    }
}

/// `shoal-bench` beside this executable, else the first on `PATH`.
fn find_bench_binary() -> anyhow::Result<PathBuf> {
    let name = format!("{BENCH_BINARY}{}", std::env::consts::EXE_SUFFIX);
    let this = std::env::current_exe().ok();
    let beside = this.as_deref().and_then(Path::parent).map(|dir| dir.join(&name));
    let on_path: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).map(|dir| dir.join(&name)).collect())
        .unwrap_or_default();
    if let Some(found) = beside.into_iter().chain(on_path).find(|p| is_executable(p)) {
        return Ok(found);
    }
    let here =
        this.as_deref().and_then(Path::parent).map_or_else(String::new, |dir| format!("in {} nor ", dir.display()));
    anyhow::bail!(
        "the benchmarks are in the {BENCH_BINARY} binary, which is neither {here}on PATH: build it with \
         `cargo build --release -p {BENCH_BINARY}` (then `target/release/shoal bench` finds it), or run \
         the suite with `cargo run --release -p {BENCH_BINARY} -- ARGS`"
    )
}

fn is_executable(path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        path.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    }
    #[cfg(not(unix))]
    {
        path.is_file()
    }
}
