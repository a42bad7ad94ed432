//! `shoal worker`: runs the user's program as a worker of a scheduler, and
//! starts it again when the cluster restarts (the nanny).

use std::net::ToSocketAddrs;
use std::path::Path;
use std::process::{Child, Command, ExitCode, ExitStatus};
use std::time::Duration;

use anyhow::{Context, bail};
use shoal::deploy::env;

/// Options of `shoal worker`.
#[derive(clap::Args)]
pub(crate) struct WorkerArgs {
    /// The scheduler: tcp://host:port (or host:port).
    scheduler: String,
    /// Task slots (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// Resources this worker offers: name=amount, comma-separated
    /// (gpu=2,mem=4e9). GPUs are detected from CUDA_VISIBLE_DEVICES or
    /// `nvidia-smi -L` unless gpu is given (gpu=0 offers none).
    #[arg(long)]
    resources: Option<String>,
    /// The worker's name, which task restrictions refer to (default:
    /// host-pid).
    #[arg(long)]
    name: Option<String>,
    /// Bytes of results the worker may hold in memory (4e9, 4GB, 4GiB); past
    /// the memory target it spills to disk, past 80 % it pauses until it
    /// holds less.
    #[arg(long)]
    memory_limit: Option<String>,
    /// The fraction of the memory limit above which results spill to disk
    /// (default 0.6; "none" never spills).
    #[arg(long)]
    memory_target: Option<String>,
    /// The fraction of the memory limit past which the worker's resident
    /// memory (the whole process's) makes this command kill it and start a
    /// new one, as Dask's nanny does at 0.95 (default: never).
    #[arg(long)]
    memory_terminate: Option<f64>,
    /// Where spilled results go (default: the temporary directory).
    #[arg(long)]
    local_directory: Option<std::path::PathBuf>,
    /// Seconds the worker keeps trying to reach its scheduler, at start and
    /// after losing it, before it exits.
    #[arg(long, default_value_t = 60.0)]
    death_timeout: f64,
    /// How results of 1 MiB or more move between workers on this host:
    /// read (straight from the other worker's memory), file (through
    /// /dev/shm) or tcp.
    #[arg(long, default_value = "read")]
    same_host_transfer: shoal::SameHostTransfer,
    /// Results up to this many bytes (1024, 64KiB) also travel with their
    /// report through the scheduler to the tasks and clients that read them,
    /// sparing a fetch from this worker; 0 sends none, at most 64KiB.
    #[arg(long, default_value = "1024")]
    inline_max: String,
    /// The address this worker serves its peers on (default: the address
    /// on the route to the scheduler, or loopback for a scheduler on
    /// loopback); give the node's own address where its name resolves to a
    /// loopback one.
    #[arg(long)]
    listen: Option<std::net::IpAddr>,
    /// Cluster token.
    #[arg(long, env = "SHOAL_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The program whose #[shoal::remote] functions the worker runs, and its
    /// arguments (after --).
    #[arg(last = true)]
    program: Vec<String>,
}

/// This machine's name, for default worker names.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "worker".into())
}

pub(crate) fn run(args: &WorkerArgs) -> anyhow::Result<ExitCode> {
    let Some((program, program_args)) = args.program.split_first() else {
        bail!(
            "shoal worker needs the program whose functions it runs: \
             shoal worker {} [options] -- ./your-program [its arguments]",
            args.scheduler
        );
    };
    let address = args.scheduler.trim_start_matches("tcp://");
    address.to_socket_addrs().ok().and_then(|mut a| a.next()).with_context(|| {
        format!("scheduler address {:?} is not host:port (for example tcp://node1:8786)", args.scheduler)
    })?;
    if args.threads == Some(0) {
        bail!("--threads 0: a worker needs at least one thread");
    }
    if !args.death_timeout.is_finite() || args.death_timeout < 0.0 {
        bail!("--death-timeout {}: give a number of seconds of at least 0", args.death_timeout);
    }
    let resources =
        shoal::deploy::worker_resources(args.resources.as_deref()).context("--resources: cannot read the resources")?;
    let memory_limit = match &args.memory_limit {
        Some(text) => shoal::deploy::parse_bytes(text).context("--memory-limit")?,
        None => 0,
    };
    if let Some(t) = &args.memory_target {
        let valid = t == "none" || t.parse::<f64>().is_ok_and(|f| f > 0.0 && f <= 1.0);
        if !valid {
            bail!("--memory-target {t}: give a fraction above 0 and at most 1, or none");
        }
    }
    if let Some(fraction) = args.memory_terminate {
        shoal::deploy::check_terminate_fraction("--memory-terminate", fraction).map_err(anyhow::Error::msg)?;
        if memory_limit == 0 {
            bail!("--memory-terminate {fraction} needs --memory-limit: it is a fraction of that limit");
        }
    }
    let inline_max = shoal::deploy::parse_bytes(&args.inline_max).context("--inline-max")?;
    let name = args.name.clone().unwrap_or_else(|| format!("{}-{}", host_name(), std::process::id()));
    let mut command = Command::new(program);
    command
        .args(program_args)
        .env(env::WORKER_OF, address)
        .env(env::WORKER_NAME, &name)
        .env(env::WORKER_RESOURCES, shoal::deploy::format_resources(&resources))
        .env(env::MEMORY_LIMIT, memory_limit.to_string())
        .env(env::DEATH_TIMEOUT, args.death_timeout.to_string())
        .env(env::SAME_HOST_TRANSFER, args.same_host_transfer.name())
        .env(env::INLINE_MAX, inline_max.to_string())
        .env(env::NANNY, "1");
    if let Some(threads) = args.threads {
        command.env(env::WORKER_THREADS, threads.to_string());
    }
    if let Some(token) = &args.token {
        command.env(env::TOKEN, token);
    }
    if let Some(ip) = args.listen {
        command.env(env::LISTEN, ip.to_string());
    }
    if let Some(target) = &args.memory_target {
        command.env(env::MEMORY_TARGET, target);
    }
    if let Some(dir) = &args.local_directory {
        command.env(env::LOCAL_DIRECTORY, dir);
    }
    shoal::deploy::tune_worker_environment(&mut command);
    loop {
        let child = command.spawn().with_context(|| {
            format!("cannot start {program:?} as worker {name} (is it a program linked with shoal?)")
        })?;
        let terminate = args.memory_terminate.map(|fraction| (memory_limit, fraction));
        let status = match watch(child, &name, terminate, args.local_directory.as_deref())? {
            Watched::Exited(status) => status,
            Watched::OverMemory => continue,
        };
        if status.code() == Some(shoal::RESTART_EXIT_CODE) {
            eprintln!("shoal worker {name}: the cluster restarted; starting a new process");
            continue;
        }
        return Ok(exit_code(program, &status));
    }
}

/// How a worker process ended.
enum Watched {
    Exited(ExitStatus),
    /// Killed for passing its memory limit: a new one takes its place.
    OverMemory,
}

/// How often the nanny looks at its worker's memory.
const MEMORY_POLL: Duration = Duration::from_millis(20);

/// Waits for the worker process to end; with a terminate fraction of a
/// memory limit, kills it once its resident memory passes that.
fn watch(
    mut child: Child,
    name: &str,
    terminate: Option<(u64, f64)>,
    local_directory: Option<&Path>,
) -> anyhow::Result<Watched> {
    let Some((memory_limit, fraction)) = terminate else {
        return Ok(Watched::Exited(child.wait().context("waiting for the worker process")?));
    };
    let started = std::time::Instant::now();
    loop {
        let exited = match child.try_wait() {
            Ok(exited) => exited,
            Err(e) => {
                // Not left running without its nanny.
                shoal::deploy::stop_worker(&mut child, name, local_directory);
                return Err(e).context("waiting for the worker process");
            }
        };
        if let Some(status) = exited {
            return Ok(Watched::Exited(status));
        }
        if let Some(why) = shoal::deploy::past_memory_terminate(name, child.id(), memory_limit, fraction) {
            std::thread::sleep(shoal::deploy::stop_over_memory(&mut child, name, &why, local_directory, started));
            return Ok(Watched::OverMemory);
        }
        std::thread::sleep(MEMORY_POLL);
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
