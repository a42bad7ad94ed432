//! The `shoal` command.

mod bench;
mod efficiency;
mod scheduler;
mod worker;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// shoal: parallel and distributed task graphs for Rust programs.
#[derive(Parser)]
#[command(name = "shoal", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run benchmarks; each prints one JSON line per parameter set.
    ///
    /// The benchmarks are the shoal-bench binary, which this runs with the
    /// same arguments (build it with `cargo build --release -p
    /// shoal-bench`); shoal bench --help lists its options.
    Bench(bench::BenchArgs),
    /// Run a standalone scheduler that clients and workers connect to.
    Scheduler(scheduler::SchedulerArgs),
    /// Run a program as a worker of a scheduler (and again after restarts):
    /// shoal worker tcp://host:port [options] -- ./program [arguments].
    Worker(Box<worker::WorkerArgs>),
    /// How well a finished batch job used the cores, memory and time it
    /// reserved, from sacct (SLURM) or qacct (Grid Engine).
    Efficiency(efficiency::EfficiencyArgs),
}

/// glibc's `malloc` uses transparent huge pages only when told so at
/// start-up, through `GLIBC_TUNABLES`. The scheduler keeps hundreds of
/// thousands of small records and visits them in random order, and on
/// virtual machines each TLB miss costs a two-level page walk: with huge
/// pages `cluster-noop` measured about 20 % faster. So this binary starts
/// itself again, once, with the tunable set, unless the user set
/// `GLIBC_TUNABLES` (to anything); `shoal-bench`, which `shoal bench` runs,
/// inherits it (and does the same when started by itself). Other C
/// libraries ignore the variable.
#[cfg(target_os = "linux")]
fn restart_with_huge_page_malloc() {
    use std::os::unix::process::CommandExt;
    if std::env::var_os("GLIBC_TUNABLES").is_some() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else { return };
    // `exec` returns only if it failed; then this process just goes on.
    let _failed = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env("GLIBC_TUNABLES", shoal_deploy::HUGE_PAGE_MALLOC)
        .exec();
}

fn main() -> ExitCode {
    #[cfg(target_os = "linux")]
    restart_with_huge_page_malloc();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Bench(args) => bench::run(&args),
        Command::Scheduler(args) => scheduler::run(&args).map(|()| ExitCode::SUCCESS),
        Command::Worker(args) => worker::run(&args),
        Command::Efficiency(args) => efficiency::run(&args).map(|()| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("shoal: {e:#}");
            ExitCode::FAILURE
        }
    }
}
