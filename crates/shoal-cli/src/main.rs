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

/// `srun -n 4 shoal worker …` starts four workers, not an `mpirun` run:
/// this command has no `main` of a user's to run as rank 1.
#[ctor::ctor]
fn independent_copies_under_a_launcher() {
    shoal::refuse_mpi_mode();
}

fn main() -> ExitCode {
    // A shoal program like any other: started as a worker (its tests run it
    // so, as a program without their functions), it becomes one here.
    shoal::init();
    shoal_deploy::restart_with_huge_page_malloc();
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
