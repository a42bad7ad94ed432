//! The `shoal` command.

mod bench;
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
    Bench(bench::BenchArgs),
    /// Run a standalone scheduler that clients and workers connect to.
    Scheduler(scheduler::SchedulerArgs),
    /// Run a program as a worker of a scheduler (and again after restarts):
    /// shoal worker tcp://host:port [options] -- ./program [arguments].
    Worker(worker::WorkerArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Bench(args) => bench::run(&args).map(|()| ExitCode::SUCCESS),
        Command::Scheduler(args) => scheduler::run(&args).map(|()| ExitCode::SUCCESS),
        Command::Worker(args) => worker::run(&args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("shoal: {e:#}");
            ExitCode::FAILURE
        }
    }
}
