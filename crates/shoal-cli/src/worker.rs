//! `shoal worker`: runs the user's program as a worker of a scheduler, and
//! starts it again when the cluster restarts (the nanny). Its flags are the
//! worker-launch contract's (`shoal_deploy::WorkerOption`).

use std::ffi::OsString;
use std::process::{ExitCode, ExitStatus};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, bail};
use clap::{Arg, ArgMatches};
use shoal_deploy::{NANNY_POLL, Restart, Spelling, Watched, WorkerLaunch, WorkerOption, WorkerProcess, WorkerProgram};
use shoal_proto::PeerAddress;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

/// Options of `shoal worker`: the scheduler, the worker's options as the
/// launch contract spells them, and the program.
pub(crate) struct WorkerArgs {
    scheduler: String,
    options: Vec<(WorkerOption, String)>,
    program: Vec<OsString>,
}

/// How long `shoal worker` keeps trying to reach a lost scheduler unless
/// told otherwise: long enough to ride out a scheduler restart.
const DEATH_TIMEOUT_SECONDS: &str = "60";

impl clap::FromArgMatches for WorkerArgs {
    fn from_arg_matches(matches: &ArgMatches) -> Result<WorkerArgs, clap::Error> {
        let options = WorkerOption::ALL
            .into_iter()
            .filter_map(|option| Some((option, matches.get_one::<String>(option.flag()?)?.clone())))
            .collect();
        Ok(WorkerArgs {
            scheduler: matches.get_one::<String>("scheduler").cloned().unwrap_or_default(),
            options,
            program: matches.get_many::<OsString>("program").map(|p| p.cloned().collect()).unwrap_or_default(),
        })
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        *self = WorkerArgs::from_arg_matches(matches)?;
        Ok(())
    }
}

impl clap::Args for WorkerArgs {
    fn augment_args(command: clap::Command) -> clap::Command {
        let mut command = command
            .arg(Arg::new("scheduler").required(true).value_name("SCHEDULER").help(WorkerOption::Scheduler.help()));
        for option in WorkerOption::ALL {
            let Some(flag) = option.flag() else { continue };
            let mut arg = Arg::new(flag).long(flag).value_name(option.value_name()).help(option.help());
            if option == WorkerOption::Token {
                arg = arg.env(option.env()).hide_env_values(true);
            }
            if option == WorkerOption::DeathTimeout {
                arg = arg.default_value(DEATH_TIMEOUT_SECONDS);
            }
            command = command.arg(arg);
        }
        command.arg(
            Arg::new("program")
                .last(true)
                .num_args(0..)
                .value_parser(clap::value_parser!(OsString))
                .value_name("PROGRAM")
                .help("The program whose #[shoal::remote] functions the worker runs, and its arguments (after --)."),
        )
    }

    fn augment_args_for_update(command: clap::Command) -> clap::Command {
        WorkerArgs::augment_args(command)
    }
}

pub(crate) fn run(args: &WorkerArgs) -> anyhow::Result<ExitCode> {
    let Some((program, program_args)) = args.program.split_first() else {
        bail!(
            "shoal worker needs the program whose functions it runs: \
             shoal worker {} [options] -- ./your-program [its arguments]",
            args.scheduler
        );
    };
    let scheduler: PeerAddress = args.scheduler.parse().context("the scheduler address")?;
    shoal_net::resolve(&scheduler).context("the scheduler address")?;
    let mut launch = WorkerLaunch { scheduler: Some(scheduler), ..WorkerLaunch::default() };
    for (option, value) in &args.options {
        launch.set(*option, value, Spelling::Flag)?;
    }
    launch.validate(Spelling::Flag)?;
    // Named once, by this command: the processes that replace the first
    // keep its name.
    let name = launch.name.get_or_insert_with(shoal_deploy::default_name).clone();
    let exe = std::path::PathBuf::from(program);
    let program = WorkerProgram { exe: exe.clone(), args: program_args.to_vec() };
    // A batch system stops a job with SIGTERM (scancel, qdel), a terminal
    // with SIGINT: the worker goes with this command, never orphaned.
    let signalled = Arc::new(AtomicUsize::new(0));
    for signal in [SIGTERM, SIGINT, SIGHUP] {
        signal_hook::flag::register_usize(signal, signalled.clone(), signal as usize)
            .context("cannot set up the signal handlers")?;
    }
    let mut worker = WorkerProcess::start(launch, program).with_context(|| {
        format!("cannot start {} as worker {name} (is it a program linked with shoal?)", exe.display())
    })?;
    loop {
        let signal = signalled.load(Ordering::Relaxed);
        if signal != 0 {
            worker.stop();
            eprintln!("shoal worker {name}: stopped by signal {signal}; its process {} is gone", worker.pid());
            // As a shell reports a command a signal ended.
            return Ok(ExitCode::from(128 + signal as u8));
        }
        match worker.watch().context("looking after the worker process")? {
            Watched::Running => std::thread::sleep(NANNY_POLL),
            Watched::Restarted(Restart::Asked) => {
                eprintln!(
                    "shoal worker {name}: the worker process ended to be replaced (a cluster restart, or past its \
                     memory terminate fraction); starting a new one"
                );
            }
            // The nanny said why.
            Watched::Restarted(Restart::OverMemory) => {}
            Watched::Exited(status) => return Ok(exit_code(&exe.display().to_string(), &status)),
        }
    }
}

/// The worker's own exit status as this command's: 0 when its scheduler is
/// gone for good, the program's code otherwise.
fn exit_code(program: &str, status: &ExitStatus) -> ExitCode {
    match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(code) => {
            eprintln!("shoal worker: {program} exited with {code}");
            ExitCode::from(u8::try_from(code).unwrap_or(1))
        }
        None => {
            eprintln!("shoal worker: {program} ended by a signal ({status})");
            ExitCode::FAILURE
        }
    }
}
