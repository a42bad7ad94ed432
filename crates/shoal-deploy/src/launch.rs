//! The worker-launch contract: every option a worker process takes, how it
//! is spelled as an environment variable and as a `shoal worker` flag, how
//! its text is read and checked, and its default — in this one file.
//!
//! A launcher fills a [`WorkerLaunch`] (in code, or from flags with
//! [`WorkerLaunch::set`]) and passes it on: [`WorkerLaunch::apply`] for a
//! process it starts, [`WorkerLaunch::exports`] for a job script. The
//! worker process reads it back with [`WorkerLaunch::from_env`] and turns it
//! into its [`WorkerConfig`] with [`WorkerLaunch::config`]. An option is
//! added here (a variant of [`WorkerOption`], a field, its reading and its
//! writing) and every launcher carries it.
//!
//! ```
//! use shoal_deploy::{Spelling, WorkerLaunch, WorkerOption};
//!
//! let mut launch = WorkerLaunch::default();
//! launch.set(WorkerOption::Scheduler, "tcp://127.0.0.1:8786", Spelling::Flag)?;
//! launch.set(WorkerOption::MemoryLimit, "4GB", Spelling::Flag)?;
//! launch.set(WorkerOption::Threads, "2", Spelling::Flag)?;
//! let exports = launch.exports();
//! assert!(exports.contains(&("SHOAL_MEMORY_LIMIT", "4000000000".to_string())));
//! let config = launch.config(Spelling::Flag)?;
//! assert_eq!((config.threads, config.memory_limit), (2, 4_000_000_000));
//!
//! let err = launch.set(WorkerOption::MemoryTarget, "2", Spelling::Env).unwrap_err();
//! assert_eq!(err.to_string(), "SHOAL_MEMORY_TARGET=\"2\": give a fraction above 0 and at most 1, or none");
//! # Ok::<(), shoal_deploy::LaunchError>(())
//! ```

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use shoal_proto::PeerAddress;
use shoal_worker::{DEFAULT_INLINE_MAX, SameHostTransfer, WorkerConfig};

use crate::spec::{format_resources, parse_bytes, parse_resources, worker_resources};

/// How an option was written, for errors that name it as the user did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Spelling {
    /// As an environment variable (`SHOAL_MEMORY_LIMIT`).
    Env,
    /// As a flag of `shoal worker` (`--memory-limit`).
    Flag,
    /// As a builder's method in code (`memory_limit`).
    Code,
}

/// One option of a worker process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkerOption {
    /// The scheduler to join (`tcp://host:port`); its presence in a
    /// process's environment makes the process a worker.
    Scheduler,
    /// The worker's name, which task restrictions refer to.
    Name,
    /// Task slots.
    Threads,
    /// Named amounts the worker offers.
    Resources,
    /// Bytes of results the worker may hold.
    MemoryLimit,
    /// The fraction of the limit past which results spill to disk.
    MemoryTarget,
    /// The fraction of the limit past which the worker pauses.
    MemoryPause,
    /// The fraction of the limit past which its nanny restarts the process.
    MemoryTerminate,
    /// Where spilled results go.
    LocalDirectory,
    /// How long the worker tries to reach a scheduler that is gone.
    DeathTimeout,
    /// How large results move between workers of one host.
    SameHostTransfer,
    /// Results up to this size travel with their report.
    InlineMax,
    /// The address the worker serves its peers on.
    Listen,
    /// The cluster token.
    Token,
    /// A file holding the cluster token (readable by its owner only), so
    /// that scripts and command lines never show the token itself.
    TokenFile,
    /// Set by a nanny: a restart ends the process so that the nanny starts
    /// a new one.
    Nanny,
}

impl WorkerOption {
    /// Every option, in the order `shoal worker --help` lists them.
    pub const ALL: [WorkerOption; 16] = [
        WorkerOption::Scheduler,
        WorkerOption::Name,
        WorkerOption::Threads,
        WorkerOption::Resources,
        WorkerOption::MemoryLimit,
        WorkerOption::MemoryTarget,
        WorkerOption::MemoryPause,
        WorkerOption::MemoryTerminate,
        WorkerOption::LocalDirectory,
        WorkerOption::DeathTimeout,
        WorkerOption::SameHostTransfer,
        WorkerOption::InlineMax,
        WorkerOption::Listen,
        WorkerOption::Token,
        WorkerOption::TokenFile,
        WorkerOption::Nanny,
    ];

    /// Its environment variable.
    pub const fn env(self) -> &'static str {
        match self {
            WorkerOption::Scheduler => "SHOAL_WORKER_OF",
            WorkerOption::Name => "SHOAL_WORKER_NAME",
            WorkerOption::Threads => "SHOAL_WORKER_THREADS",
            WorkerOption::Resources => "SHOAL_WORKER_RESOURCES",
            WorkerOption::MemoryLimit => "SHOAL_MEMORY_LIMIT",
            WorkerOption::MemoryTarget => "SHOAL_MEMORY_TARGET",
            WorkerOption::MemoryPause => "SHOAL_MEMORY_PAUSE",
            WorkerOption::MemoryTerminate => "SHOAL_MEMORY_TERMINATE",
            WorkerOption::LocalDirectory => "SHOAL_LOCAL_DIRECTORY",
            WorkerOption::DeathTimeout => "SHOAL_DEATH_TIMEOUT",
            WorkerOption::SameHostTransfer => "SHOAL_SAME_HOST_TRANSFER",
            WorkerOption::InlineMax => "SHOAL_INLINE_MAX",
            WorkerOption::Listen => "SHOAL_WORKER_LISTEN",
            WorkerOption::Token => "SHOAL_TOKEN",
            WorkerOption::TokenFile => "SHOAL_TOKEN_FILE",
            WorkerOption::Nanny => "SHOAL_NANNY",
        }
    }

    /// Its flag of `shoal worker`, without the dashes; `None` for the
    /// scheduler (the command's first argument) and the nanny mark (the
    /// command sets it).
    pub fn flag(self) -> Option<&'static str> {
        Some(match self {
            WorkerOption::Scheduler | WorkerOption::Nanny => return None,
            WorkerOption::Name => "name",
            WorkerOption::Threads => "threads",
            WorkerOption::Resources => "resources",
            WorkerOption::MemoryLimit => "memory-limit",
            WorkerOption::MemoryTarget => "memory-target",
            WorkerOption::MemoryPause => "memory-pause",
            WorkerOption::MemoryTerminate => "memory-terminate",
            WorkerOption::LocalDirectory => "local-directory",
            WorkerOption::DeathTimeout => "death-timeout",
            WorkerOption::SameHostTransfer => "same-host-transfer",
            WorkerOption::InlineMax => "inline-max",
            WorkerOption::Listen => "listen",
            WorkerOption::Token => "token",
            WorkerOption::TokenFile => "token-file",
        })
    }

    /// What its value is, for help texts.
    pub fn value_name(self) -> &'static str {
        match self {
            WorkerOption::Scheduler => "ADDRESS",
            WorkerOption::Name => "NAME",
            WorkerOption::Threads => "N",
            WorkerOption::Resources => "NAME=AMOUNT,...",
            WorkerOption::MemoryLimit | WorkerOption::InlineMax => "BYTES",
            WorkerOption::MemoryTarget | WorkerOption::MemoryPause | WorkerOption::MemoryTerminate => "FRACTION",
            WorkerOption::LocalDirectory => "DIR",
            WorkerOption::TokenFile => "FILE",
            WorkerOption::DeathTimeout => "SECONDS",
            WorkerOption::SameHostTransfer => "read|file|tcp",
            WorkerOption::Listen => "IP",
            WorkerOption::Token => "TOKEN",
            WorkerOption::Nanny => "1",
        }
    }

    /// What it does and its default, for help texts.
    pub fn help(self) -> &'static str {
        match self {
            WorkerOption::Scheduler => "The scheduler to join: tcp://host:port (or host:port).",
            WorkerOption::Name => {
                "The worker's name, which task restrictions refer to (default: host-pid, this machine's name and \
                 the worker process's id)."
            }
            WorkerOption::Threads => {
                "Task slots (default: the CPUs a batch job was granted, SLURM_CPUS_PER_TASK, NSLOTS, NCPUS or \
                 LSB_DJOB_NUMPROC, else those this process may use); the worker offers them as the resource cpu."
            }
            WorkerOption::Resources => {
                "Resources this worker offers: name=amount, comma-separated (gpu=2,mem=4e9). GPUs are detected from \
                 CUDA_VISIBLE_DEVICES or `nvidia-smi -L` unless gpu is given (gpu=0 offers none)."
            }
            WorkerOption::MemoryLimit => {
                "Bytes of results the worker may hold in memory (4e9, 4GB, 4GiB; default: no limit); past the \
                 memory target it spills to disk, past the pause fraction it takes no new tasks until it holds less."
            }
            WorkerOption::MemoryTarget => {
                "The fraction of the memory limit above which results spill to disk (default 0.6; none never spills)."
            }
            WorkerOption::MemoryPause => {
                "The fraction of the memory limit above which the worker starts no new tasks until it holds less \
                 (default 0.8)."
            }
            WorkerOption::MemoryTerminate => {
                "The fraction of the memory limit past which the worker's resident memory (the whole process's) \
                 makes its nanny kill it and start a new one, as Dask's nanny does at 0.95 (default: never)."
            }
            WorkerOption::LocalDirectory => "Where spilled results go (default: the temporary directory).",
            WorkerOption::DeathTimeout => {
                "Seconds the worker keeps trying to reach its scheduler, at start and after losing it, before it \
                 exits."
            }
            WorkerOption::SameHostTransfer => {
                "How results of 1 MiB or more move between workers on this host: read (straight from the other \
                 worker's memory), file (through /dev/shm) or tcp."
            }
            WorkerOption::InlineMax => {
                "Results up to this many bytes (1024, 64KiB) also travel with their report through the scheduler to \
                 the tasks and clients that read them, sparing a fetch from this worker; 0 sends none, at most 64KiB."
            }
            WorkerOption::Listen => {
                "The address this worker serves its peers on (default: the address on the route to the scheduler, \
                 or loopback for a scheduler on loopback); give the node's own address where its name resolves to a \
                 loopback one."
            }
            WorkerOption::Token => "The cluster token (also read from SHOAL_TOKEN).",
            WorkerOption::TokenFile => {
                "A file holding the cluster token, readable by its owner only (chmod 600): the token is then in \
                 no command line or script."
            }
            WorkerOption::Nanny => "Set by a nanny: a restart ends the process, and the nanny starts a new one.",
        }
    }

    /// The option as the user wrote it: `--memory-limit`,
    /// `SHOAL_MEMORY_LIMIT` or `memory_limit`.
    pub fn spelled(self, spelling: Spelling) -> String {
        match (spelling, self.flag()) {
            (Spelling::Flag, Some(flag)) => format!("--{flag}"),
            (Spelling::Code, Some(flag)) => flag.replace('-', "_"),
            (Spelling::Code, None) => format!("{self:?}").to_lowercase(),
            (_, _) => self.env().to_string(),
        }
    }
}

/// Why a worker's options cannot make a worker; each names the option as
/// the user wrote it.
#[derive(Clone, Debug, PartialEq)]
pub enum LaunchError {
    /// A value could not be read.
    Invalid {
        /// The option, as spelled.
        option: String,
        /// What was given.
        value: String,
        /// What is wrong, and what would be right.
        reason: String,
    },
    /// Options that do not go together, or one that is missing.
    Conflict(String),
}

impl std::fmt::Display for LaunchError {
    /// `VARIABLE="value": reason`, or `--flag value: reason` (and
    /// `method value: reason` for a builder's method).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LaunchError::Invalid { option, value, reason } if option.starts_with("SHOAL_") => {
                write!(f, "{option}={value:?}: {reason}")
            }
            LaunchError::Invalid { option, value, reason } => write!(f, "{option} {value}: {reason}"),
            LaunchError::Conflict(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for LaunchError {}

/// Every option of a worker process, with its default where the launcher
/// gives none. `None` fields are decided where the worker runs (its own
/// host, cores and GPUs).
#[derive(Clone, Debug, PartialEq)]
pub struct WorkerLaunch {
    /// The scheduler to join.
    pub scheduler: Option<PeerAddress>,
    /// The worker's name (default `host-pid`).
    pub name: Option<String>,
    /// Task slots (default: the CPUs granted to the job, else those of the
    /// worker's machine it may use), offered as the resource `cpu` too.
    pub threads: Option<usize>,
    /// Resources offered (default: the GPUs the worker's machine shows).
    pub resources: Option<Vec<(String, f64)>>,
    /// Bytes of results held in memory at most (0: no limit).
    pub memory_limit: u64,
    /// Spill past this fraction of the limit (`None`: never spill).
    pub memory_target: Option<f64>,
    /// Pause past this fraction of the limit.
    pub memory_pause: f64,
    /// The nanny restarts the process past this fraction of the limit in
    /// resident memory (`None`: never).
    pub memory_terminate: Option<f64>,
    /// Where spilled results go (default: the temporary directory).
    pub local_directory: Option<PathBuf>,
    /// How long to keep trying to reach the scheduler.
    pub death_timeout: Duration,
    /// How large results move between workers of one host.
    pub same_host_transfer: SameHostTransfer,
    /// Results up to this many bytes go along with their report.
    pub inline_max: usize,
    /// Where the data server listens (default: see [`WorkerConfig::listen`]).
    pub listen: Option<IpAddr>,
    /// The cluster token.
    pub token: Option<String>,
    /// A file holding the cluster token (used when `token` is not given).
    pub token_file: Option<PathBuf>,
    /// Whether a nanny supervises the process.
    pub nanny: bool,
}

impl Default for WorkerLaunch {
    fn default() -> WorkerLaunch {
        WorkerLaunch {
            scheduler: None,
            name: None,
            threads: None,
            resources: None,
            memory_limit: 0,
            memory_target: Some(0.6),
            memory_pause: 0.8,
            memory_terminate: None,
            local_directory: None,
            death_timeout: Duration::ZERO,
            same_host_transfer: SameHostTransfer::Read,
            inline_max: DEFAULT_INLINE_MAX,
            listen: None,
            token: None,
            token_file: None,
            nanny: false,
        }
    }
}

/// A number, as written.
fn number(text: &str) -> Option<f64> {
    text.trim().parse::<f64>().ok()
}

impl WorkerLaunch {
    /// Reads one option from its text (a flag's or a variable's value);
    /// `spelling` is how errors name it.
    ///
    /// # Errors
    /// [`LaunchError::Invalid`] naming the option, the value and what would
    /// be right.
    pub fn set(&mut self, option: WorkerOption, text: &str, spelling: Spelling) -> Result<(), LaunchError> {
        let invalid =
            |reason: String| LaunchError::Invalid { option: option.spelled(spelling), value: text.to_string(), reason };
        match option {
            WorkerOption::Scheduler => {
                self.scheduler = Some(text.parse().map_err(|e: shoal_proto::AddressError| invalid(e.to_string()))?)
            }
            WorkerOption::Name => self.name = Some(text.to_string()),
            WorkerOption::Threads => {
                let n = text.trim().parse::<usize>().ok();
                self.threads = Some(n.ok_or_else(|| invalid("a worker needs at least one thread".into()))?);
            }
            WorkerOption::Resources => {
                self.resources = Some(match spelling {
                    // A launcher decided: exactly these.
                    Spelling::Env | Spelling::Code => {
                        let mut r = parse_resources(text).map_err(|e| invalid(e.to_string()))?;
                        r.retain(|(_, a)| *a > 0.0);
                        r
                    }
                    // The user, on the worker's machine: these, and its GPUs
                    // unless gpu is named.
                    Spelling::Flag => worker_resources(Some(text)).map_err(|e| invalid(e.to_string()))?,
                });
            }
            WorkerOption::MemoryLimit => self.memory_limit = parse_bytes(text).map_err(|e| invalid(e.to_string()))?,
            WorkerOption::MemoryTarget => {
                self.memory_target = match text.trim() {
                    "none" | "false" => None,
                    t => Some(
                        number(t).ok_or_else(|| invalid("give a fraction above 0 and at most 1, or none".into()))?,
                    ),
                }
            }
            WorkerOption::MemoryPause => {
                self.memory_pause = number(text)
                    .ok_or_else(|| invalid("give a fraction of the memory limit above 0 and at most 1".into()))?
            }
            WorkerOption::MemoryTerminate => {
                self.memory_terminate = match text.trim() {
                    "none" | "false" => None,
                    t => Some(number(t).ok_or_else(|| {
                        invalid("give a fraction of the memory limit above 0 (Dask's is 0.95)".into())
                    })?),
                }
            }
            WorkerOption::LocalDirectory => {
                if text.is_empty() {
                    return Err(invalid("give a directory".into()));
                }
                self.local_directory = Some(PathBuf::from(text));
            }
            WorkerOption::DeathTimeout => {
                let seconds = text.trim().parse::<f64>().ok().filter(|s| s.is_finite() && *s >= 0.0);
                self.death_timeout = Duration::from_secs_f64(
                    seconds.ok_or_else(|| invalid("give a number of seconds of at least 0".into()))?,
                );
            }
            WorkerOption::SameHostTransfer => self.same_host_transfer = text.parse().map_err(invalid)?,
            WorkerOption::InlineMax => {
                let bytes = parse_bytes(text).map_err(|e| invalid(e.to_string()))?;
                self.inline_max = usize::try_from(bytes).map_err(|_| invalid("too large".into()))?;
            }
            WorkerOption::Listen => {
                self.listen = Some(text.trim().parse().map_err(|_| invalid("not an IP address".into()))?)
            }
            WorkerOption::Token => self.token = Some(text.to_string()),
            WorkerOption::TokenFile => {
                if text.is_empty() {
                    return Err(invalid("give a file".into()));
                }
                self.token_file = Some(PathBuf::from(text));
            }
            WorkerOption::Nanny => self.nanny = !text.is_empty(),
        }
        self.check(option, spelling)
    }

    /// Checks one option's value as set (in code, or read by
    /// [`WorkerLaunch::set`]).
    ///
    /// # Errors
    /// [`LaunchError::Invalid`] naming the option and what would be right.
    pub fn check(&self, option: WorkerOption, spelling: Spelling) -> Result<(), LaunchError> {
        let invalid = |value: String, reason: &str| {
            Err(LaunchError::Invalid { option: option.spelled(spelling), value, reason: reason.to_string() })
        };
        let is_fraction = |f: f64, at_most_one: bool| f.is_finite() && f > 0.0 && (!at_most_one || f <= 1.0);
        match option {
            WorkerOption::Threads => match self.threads {
                Some(0) => invalid("0".into(), "a worker needs at least one thread"),
                _ => Ok(()),
            },
            WorkerOption::Resources => {
                let bad = self.resources.iter().flatten().find(|(n, a)| n.is_empty() || !a.is_finite() || *a < 0.0);
                match bad {
                    Some((name, amount)) => invalid(
                        format!("{name:?}={amount}"),
                        "names must not be empty and amounts must be numbers of at least 0",
                    ),
                    None => Ok(()),
                }
            }
            WorkerOption::MemoryTarget => match self.memory_target {
                Some(f) if !is_fraction(f, true) => {
                    invalid(f.to_string(), "give a fraction above 0 and at most 1, or none")
                }
                _ => Ok(()),
            },
            WorkerOption::MemoryPause if !is_fraction(self.memory_pause, true) => {
                invalid(self.memory_pause.to_string(), "give a fraction of the memory limit above 0 and at most 1")
            }
            WorkerOption::MemoryTerminate => match self.memory_terminate {
                Some(f) if !is_fraction(f, false) => {
                    invalid(f.to_string(), "give a fraction of the memory limit above 0 (Dask's is 0.95)")
                }
                _ => Ok(()),
            },
            WorkerOption::Name => match &self.name {
                Some(n) if n.trim().is_empty() => invalid(n.clone(), "a worker's name cannot be empty"),
                _ => Ok(()),
            },
            _ => Ok(()),
        }
    }

    /// The options of this process's environment, as a launcher set them
    /// (`None` when this process is not a worker: no `SHOAL_WORKER_OF`).
    ///
    /// # Errors
    /// [`LaunchError`] naming the first variable that cannot be read.
    pub fn from_env() -> Result<Option<WorkerLaunch>, LaunchError> {
        WorkerLaunch::from_vars(|var| std::env::var(var).ok())
    }

    /// [`WorkerLaunch::from_env`] over any source of variables.
    ///
    /// # Errors
    /// As [`WorkerLaunch::from_env`].
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Option<WorkerLaunch>, LaunchError> {
        if var(WorkerOption::Scheduler.env()).is_none() {
            return Ok(None);
        }
        let mut launch = WorkerLaunch::default();
        for option in WorkerOption::ALL {
            if let Some(text) = var(option.env()) {
                launch.set(option, &text, Spelling::Env)?;
            }
        }
        Ok(Some(launch))
    }

    /// The options as `(variable, value)` pairs, for a job script's
    /// `export` lines; unset options are left to the worker's machine.
    pub fn exports(&self) -> Vec<(&'static str, String)> {
        WorkerOption::ALL.into_iter().filter_map(|o| Some((o.env(), self.value(o)?))).collect()
    }

    /// The text of one option as [`WorkerLaunch::set`] reads it back, if set.
    pub fn value(&self, option: WorkerOption) -> Option<String> {
        match option {
            WorkerOption::Scheduler => self.scheduler.as_ref().map(PeerAddress::host_port),
            WorkerOption::Name => self.name.clone(),
            WorkerOption::Threads => self.threads.map(|t| t.to_string()),
            WorkerOption::Resources => self.resources.as_ref().map(|r| format_resources(r)),
            WorkerOption::MemoryLimit => Some(self.memory_limit.to_string()),
            WorkerOption::MemoryTarget => Some(self.memory_target.map_or_else(|| "none".into(), |f| f.to_string())),
            WorkerOption::MemoryPause => Some(self.memory_pause.to_string()),
            WorkerOption::MemoryTerminate => self.memory_terminate.map(|f| f.to_string()),
            WorkerOption::LocalDirectory => self.local_directory.as_ref().map(|d| d.display().to_string()),
            WorkerOption::DeathTimeout => Some(self.death_timeout.as_secs_f64().to_string()),
            WorkerOption::SameHostTransfer => Some(self.same_host_transfer.name().to_string()),
            WorkerOption::InlineMax => Some(self.inline_max.to_string()),
            WorkerOption::Listen => self.listen.map(|ip| ip.to_string()),
            WorkerOption::Token => self.token.clone(),
            WorkerOption::TokenFile => self.token_file.as_ref().map(|f| f.display().to_string()),
            WorkerOption::Nanny => self.nanny.then(|| "1".to_string()),
        }
    }

    /// Sets a worker process's environment from the options, plus what
    /// every worker process should run with where the user has not set it
    /// (see [`tune_environment`]).
    pub fn apply(&self, command: &mut Command) {
        for option in WorkerOption::ALL {
            match self.value(option) {
                Some(value) => command.env(option.env(), value),
                // Not inherited from this process either.
                None => command.env_remove(option.env()),
            };
        }
        tune_environment(command);
    }

    /// Checks that the options make a worker together.
    ///
    /// # Errors
    /// [`LaunchError::Conflict`] naming the options in `spelling`.
    pub fn validate(&self, spelling: Spelling) -> Result<(), LaunchError> {
        for option in WorkerOption::ALL {
            self.check(option, spelling)?;
        }
        if let Some(fraction) = self.memory_terminate
            && self.memory_limit == 0
        {
            let (terminate, limit) =
                (WorkerOption::MemoryTerminate.spelled(spelling), WorkerOption::MemoryLimit.spelled(spelling));
            let needs = match spelling {
                Spelling::Flag => format!("{terminate} {fraction} needs {limit}"),
                Spelling::Env => format!("{terminate}={fraction} needs {limit}"),
                Spelling::Code => format!("{terminate}(Some({fraction})) needs a {limit}"),
            };
            return Err(LaunchError::Conflict(format!("{needs}: it is a fraction of that limit")));
        }
        Ok(())
    }

    /// The worker's configuration: the scheduler's address looked up, and
    /// what was left to the worker's machine decided (its name, cores and
    /// GPUs).
    ///
    /// # Errors
    /// What [`WorkerLaunch::validate`] finds, and a scheduler whose host
    /// name cannot be looked up.
    pub fn config(&self, spelling: Spelling) -> Result<WorkerConfig, LaunchError> {
        self.validate(spelling)?;
        let Some(address) = &self.scheduler else {
            return Err(LaunchError::Conflict(format!(
                "a worker needs its scheduler: {}",
                WorkerOption::Scheduler.spelled(spelling)
            )));
        };
        let scheduler = shoal_net::resolve(address).map_err(|e| LaunchError::Invalid {
            option: WorkerOption::Scheduler.spelled(spelling),
            value: address.to_string(),
            reason: e.to_string(),
        })?;
        let name = self.name.clone().unwrap_or_else(default_name);
        let resources = match &self.resources {
            Some(r) => r.clone(),
            None => worker_resources(None).map_err(|e| LaunchError::Conflict(e.to_string()))?,
        };
        let mut config = WorkerConfig::new(scheduler, name);
        config.threads = self.threads.unwrap_or_else(crate::spec::detect_cpus);
        config.resources = with_cpus(resources, config.threads);
        config.memory_limit = self.memory_limit;
        config.memory_target_fraction = self.memory_target;
        config.memory_pause_fraction = self.memory_pause;
        config.memory_terminate_fraction = self.memory_terminate;
        config.local_directory = self.local_directory.clone();
        config.death_timeout = self.death_timeout;
        config.same_host_transfer = self.same_host_transfer;
        config.inline_max = self.inline_max;
        if let Some(ip) = self.listen {
            config.listen = ip;
        }
        config.token = match (&self.token, &self.token_file) {
            (Some(token), _) => Some(token.clone()),
            (None, Some(file)) => Some(read_token_file(file).map_err(|reason| LaunchError::Invalid {
                option: WorkerOption::TokenFile.spelled(spelling),
                value: file.display().to_string(),
                reason,
            })?),
            (None, None) => None,
        };
        config.exit_on_restart = self.nanny;
        Ok(config)
    }
}

/// A worker's resources with its CPUs among them (`cpu`, one per task slot,
/// for tasks that ask for CPUs: Ray's `num_cpus`), unless `cpu` is declared.
fn with_cpus(mut resources: Vec<(String, f64)>, threads: usize) -> Vec<(String, f64)> {
    if !resources.iter().any(|(name, _)| name == "cpu") {
        resources.push(("cpu".to_string(), threads as f64));
    }
    resources.retain(|(_, amount)| *amount > 0.0);
    resources
}

/// The token in a token file: its first line, which must not be empty;
/// the file must be readable by its owner only, as ssh asks of its keys.
fn read_token_file(file: &std::path::Path) -> Result<String, String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("cannot read it: {e}"))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(file).map_err(|e| format!("cannot read it: {e}"))?.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(format!("others may read it (mode {:o}): chmod 600 it", mode & 0o777));
        }
    }
    let token = text.lines().next().unwrap_or("").trim();
    if token.is_empty() {
        return Err("it holds no token".into());
    }
    Ok(token.to_string())
}

/// The default name of a worker: `host-pid`.
pub fn default_name() -> String {
    format!("{}-{}", host_name(), std::process::id())
}

/// This machine's name.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "worker".into())
}

/// What every worker process should run with, where the user has not set
/// it already:
/// - `OMP_NUM_THREADS`, `MKL_NUM_THREADS` and `OPENBLAS_NUM_THREADS` = 1:
///   each worker thread runs one task, so numeric libraries must not start
///   a thread per core each (thread oversubscription);
/// - `GLIBC_TUNABLES=glibc.malloc.hugetlb=1`: glibc's `malloc` then asks for
///   transparent huge pages. A worker keeps hundreds of thousands of small
///   records (its store, its queues) and walks them in random order; on
///   virtual machines every TLB miss costs a two-level page walk, and with
///   huge pages `cluster-noop` measured about 12 % faster. Ignored by other
///   C libraries and where huge pages are off.
pub const TUNED_ENVIRONMENT: [(&str, &str); 4] = [
    ("OMP_NUM_THREADS", "1"),
    ("MKL_NUM_THREADS", "1"),
    ("OPENBLAS_NUM_THREADS", "1"),
    ("GLIBC_TUNABLES", crate::HUGE_PAGE_MALLOC),
];

/// Sets [`TUNED_ENVIRONMENT`] on a command, where neither it nor this
/// process has the variable.
pub fn tune_environment(command: &mut Command) {
    for (var, value) in TUNED_ENVIRONMENT {
        let set_for_child = command.get_envs().any(|(k, v)| k == var && v.is_some());
        if std::env::var_os(var).is_none() && !set_for_child {
            command.env(var, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |var| pairs.iter().find(|(k, _)| k == var).map(|(_, v)| v.clone())
    }

    #[test]
    fn a_process_without_a_scheduler_is_no_worker() {
        assert_eq!(WorkerLaunch::from_vars(vars(&[("SHOAL_MEMORY_LIMIT", "1GB")])), Ok(None));
    }

    #[test]
    fn what_a_launcher_writes_a_worker_reads_back() {
        let launch = WorkerLaunch {
            scheduler: Some("127.0.0.1:8786".parse().expect("address")),
            name: Some("w 1".into()),
            threads: Some(3),
            resources: Some(vec![("gpu".into(), 2.0)]),
            memory_limit: 5_000_000,
            memory_target: None,
            memory_pause: 0.7,
            memory_terminate: Some(0.95),
            local_directory: Some("/scratch/me".into()),
            death_timeout: Duration::from_millis(2500),
            same_host_transfer: SameHostTransfer::File,
            inline_max: 0,
            listen: Some([10, 0, 0, 5].into()),
            token: Some("secret".into()),
            token_file: Some("/home/me/.shoal-token".into()),
            nanny: true,
        };
        let exports = launch.exports();
        assert_eq!(exports.len(), WorkerOption::ALL.len(), "every option is written");
        let read = WorkerLaunch::from_vars(move |var| exports.iter().find(|(k, _)| *k == var).map(|(_, v)| v.clone()))
            .expect("reads")
            .expect("a worker");
        assert_eq!(read, launch);
        let config = read.config(Spelling::Env).expect("a config");
        assert_eq!(
            (config.name.as_str(), config.threads, config.memory_pause_fraction, config.exit_on_restart),
            ("w 1", 3, 0.7, true)
        );
    }

    #[test]
    fn unset_options_are_left_to_the_worker_and_not_inherited() {
        let launch = WorkerLaunch { scheduler: Some("127.0.0.1:1".parse().expect("address")), ..Default::default() };
        let mut command = Command::new("true");
        launch.apply(&mut command);
        let envs: Vec<_> = command.get_envs().collect();
        for option in [WorkerOption::Name, WorkerOption::Threads, WorkerOption::Resources, WorkerOption::Token] {
            assert!(
                envs.iter().any(|(k, v)| *k == option.env() && v.is_none()),
                "{} is removed, not inherited",
                option.env()
            );
        }
        assert!(envs.iter().any(|(k, v)| *k == "SHOAL_WORKER_OF" && *v == Some("127.0.0.1:1".as_ref())));
    }

    #[test]
    fn every_bad_value_names_its_option_as_written() {
        let cases = [
            (WorkerOption::Scheduler, "nowhere", "is not host:port"),
            (WorkerOption::Threads, "0", "at least one thread"),
            (WorkerOption::Resources, "gpu", "\"gpu\" is not name=amount"),
            (WorkerOption::MemoryLimit, "lots", "\"lots\" is not a size in bytes"),
            (WorkerOption::MemoryTarget, "2", "at most 1, or none"),
            (WorkerOption::MemoryPause, "0", "above 0 and at most 1"),
            (WorkerOption::MemoryTerminate, "-1", "Dask's is 0.95"),
            (WorkerOption::DeathTimeout, "-1", "at least 0"),
            (WorkerOption::SameHostTransfer, "shm", "read, file or tcp"),
            (WorkerOption::InlineMax, "small", "\"small\" is not a size"),
            (WorkerOption::Listen, "here", "not an IP address"),
            (WorkerOption::Name, " ", "cannot be empty"),
        ];
        for (option, text, why) in cases {
            let mut launch = WorkerLaunch::default();
            let flag = launch.set(option, text, Spelling::Flag).expect_err(text).to_string();
            let env = launch.set(option, text, Spelling::Env).expect_err(text).to_string();
            assert!(flag.contains(why) && env.contains(why), "{option:?}: {flag} / {env}");
            if let Some(f) = option.flag() {
                assert!(flag.starts_with(&format!("--{f} {text}:")), "{flag}");
            }
            assert!(env.starts_with(&format!("{}={text:?}:", option.env())), "{env}");
        }
    }

    #[test]
    fn options_that_do_not_go_together_are_refused() {
        let mut launch = WorkerLaunch::default();
        launch.set(WorkerOption::Scheduler, "127.0.0.1:1", Spelling::Flag).expect("address");
        launch.set(WorkerOption::MemoryTerminate, "0.95", Spelling::Flag).expect("fraction");
        let err = launch.config(Spelling::Flag).expect_err("no limit");
        assert!(err.to_string().contains("--memory-terminate 0.95 needs --memory-limit"), "{err}");
        let err = WorkerLaunch::default().config(Spelling::Env).expect_err("no scheduler");
        assert!(err.to_string().contains("SHOAL_WORKER_OF"), "{err}");
    }

    #[test]
    fn a_scheduler_name_that_cannot_be_looked_up_says_so() {
        let mut launch = WorkerLaunch::default();
        launch.set(WorkerOption::Scheduler, "no-such-host.invalid:8786", Spelling::Env).expect("an address");
        let err = launch.config(Spelling::Env).expect_err("no such host").to_string();
        assert!(err.contains("SHOAL_WORKER_OF") && err.contains("look up"), "{err}");
    }

    #[test]
    fn every_option_has_its_own_variable_and_flag() {
        let mut envs: Vec<&str> = WorkerOption::ALL.iter().map(|o| o.env()).collect();
        let mut flags: Vec<&str> = WorkerOption::ALL.iter().filter_map(|o| o.flag()).collect();
        let (n_env, n_flag) = (envs.len(), flags.len());
        envs.sort_unstable();
        envs.dedup();
        flags.sort_unstable();
        flags.dedup();
        assert_eq!((envs.len(), flags.len()), (n_env, n_flag));
        assert!(WorkerOption::ALL.iter().all(|o| !o.help().is_empty()));
    }
}

#[cfg(test)]
mod token_file_tests {
    use super::*;

    fn with_token_file(text: &str, mode: u32) -> (WorkerLaunch, PathBuf) {
        use std::os::unix::fs::PermissionsExt;
        let path =
            std::env::temp_dir().join(format!("shoal-token-test-{}-{mode:o}-{}", std::process::id(), text.len()));
        std::fs::write(&path, text).expect("token file");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("mode");
        let mut launch = WorkerLaunch::default();
        launch.set(WorkerOption::Scheduler, "127.0.0.1:1", Spelling::Env).expect("address");
        launch.set(WorkerOption::TokenFile, &path.display().to_string(), Spelling::Env).expect("a file");
        (launch, path)
    }

    #[test]
    fn a_token_file_gives_the_worker_its_token_and_shows_only_its_path() {
        let (launch, path) = with_token_file("s3cret\n", 0o600);
        assert_eq!(launch.config(Spelling::Env).expect("config").token.as_deref(), Some("s3cret"));
        assert!(launch.exports().iter().all(|(_, v)| !v.contains("s3cret")), "the token is in no export");
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn a_token_file_others_can_read_or_an_empty_one_is_refused() {
        let (launch, path) = with_token_file("s3cret\n", 0o644);
        let err = launch.config(Spelling::Env).expect_err("readable by others").to_string();
        assert!(err.starts_with("SHOAL_TOKEN_FILE=") && err.contains("chmod 600"), "{err}");
        let _ = std::fs::remove_file(path);
        let (launch, path) = with_token_file("\n", 0o600);
        assert!(launch.config(Spelling::Env).expect_err("empty").to_string().contains("holds no token"));
        let _ = std::fs::remove_file(path);
        let mut missing = WorkerLaunch::default();
        missing.set(WorkerOption::Scheduler, "127.0.0.1:1", Spelling::Flag).expect("address");
        missing.set(WorkerOption::TokenFile, "/no/such/token", Spelling::Flag).expect("a path");
        let err = missing.config(Spelling::Flag).expect_err("no file").to_string();
        assert!(err.starts_with("--token-file /no/such/token: cannot read it"), "{err}");
    }
}
