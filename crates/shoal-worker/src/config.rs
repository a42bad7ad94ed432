//! What a worker runs with: every option of a worker, whichever launcher
//! set it (see `shoal_deploy::WorkerLaunch` for how launchers pass them).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use shoal_proto::Resources;

/// How to run a worker.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// The scheduler to join.
    pub scheduler: SocketAddr,
    /// This worker's name (restrictions refer to it).
    pub name: String,
    /// Task slots (threads of the pool).
    pub threads: usize,
    /// The cluster token.
    pub token: Option<String>,
    /// Address the data server listens on (any free port); the default,
    /// loopback, becomes the address on the route to the scheduler when
    /// the scheduler is on another address and the worker has a token
    /// (see `shoal_net::start_worker`).
    pub listen: IpAddr,
    /// The largest frame accepted.
    pub max_frame: usize,
    /// Named amounts this worker offers (`("gpu", 2.0)`): a task that needs
    /// some runs only on a worker that has them, and uses them up while it
    /// runs.
    pub resources: Resources,
    /// Bytes of results this worker may hold (0: no limit). Past
    /// `memory_pause_fraction` of it, it pauses.
    pub memory_limit: u64,
    /// The fraction of `memory_limit` above which the worker starts no new
    /// tasks until it holds less (Dask's 80 % by default).
    pub memory_pause_fraction: f64,
    /// The fraction of `memory_limit` past which the worker process's
    /// resident memory (the whole process's, as sampled by its shell) ends
    /// the process so that its nanny starts a new one (Dask's nanny
    /// `terminate`); `None` never. Only a worker that ends on restart
    /// (`exit_on_restart`) acts on it.
    pub memory_terminate_fraction: Option<f64>,
    /// The fraction of `memory_limit` above which the least recently used
    /// results are spilled to disk (Dask's 60 % by default); `None` never
    /// spills. Spilled results are read back when a task or a peer needs
    /// them.
    pub memory_target_fraction: Option<f64>,
    /// Where spilled results go: a directory of this worker's own is made
    /// in it and removed when the worker ends (default: the system's
    /// temporary directory).
    pub local_directory: Option<std::path::PathBuf>,
    /// How long the worker keeps trying to reach its scheduler, when it
    /// starts and after losing it, before it gives up; zero makes one try.
    pub death_timeout: Duration,
    /// Whether a restart ends the worker (a nanny then starts a new process
    /// in its place) instead of clearing its state and registering again.
    pub exit_on_restart: bool,
    /// How results of 1 MiB or more move between this worker and others on
    /// its host, both ways.
    pub same_host_transfer: SameHostTransfer,
    /// Results up to this many bytes (encoded) also go to the scheduler
    /// with the completion report, which hands them to the tasks waiting
    /// for them along with their compute messages: those tasks start
    /// without a round trip to this worker, so a chain of small tasks
    /// across workers runs about twice as fast. 0 sends none; more than
    /// [`INLINE_LIMIT`](shoal_proto::INLINE_LIMIT) (64 KiB) counts as that.
    /// The default, [`DEFAULT_INLINE_MAX`], covers numbers, short strings
    /// and small structs; bulk data always moves worker to worker.
    pub inline_max: usize,
}

/// The default [`WorkerConfig::inline_max`]: 1 KiB.
pub const DEFAULT_INLINE_MAX: usize = 1024;

/// How large results (1 MiB or more) move between workers on one host
/// (peers reached on a loopback address). Whatever is chosen, a transfer
/// that cannot take that way falls back to the next: reading, then a
/// shared file, then TCP. Workers on other hosts always use TCP.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SameHostTransfer {
    /// The fetcher copies the result straight out of the holder's memory
    /// (`process_vm_readv`, Linux): one copy, the fastest. Where the
    /// kernel does not allow it (Yama `ptrace_scope` ≥ 1), a shared file.
    #[default]
    Read,
    /// The holder writes the result into a file in `/dev/shm` that the
    /// fetcher maps: no access to each other's memory.
    File,
    /// Through the data connection, as between hosts.
    Tcp,
}

impl SameHostTransfer {
    /// The name [`FromStr`](std::str::FromStr) reads: `read`, `file` or `tcp`.
    pub fn name(self) -> &'static str {
        match self {
            SameHostTransfer::Read => "read",
            SameHostTransfer::File => "file",
            SameHostTransfer::Tcp => "tcp",
        }
    }
}

impl std::fmt::Display for SameHostTransfer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for SameHostTransfer {
    type Err = String;

    /// ```
    /// use shoal_worker::SameHostTransfer;
    /// assert_eq!("file".parse::<SameHostTransfer>(), Ok(SameHostTransfer::File));
    /// assert!("shm".parse::<SameHostTransfer>().unwrap_err().contains("read, file or tcp"));
    /// ```
    fn from_str(text: &str) -> Result<SameHostTransfer, String> {
        [SameHostTransfer::Read, SameHostTransfer::File, SameHostTransfer::Tcp]
            .into_iter()
            .find(|t| t.name() == text)
            .ok_or_else(|| format!("{text:?} is not a same-host transfer: give read, file or tcp"))
    }
}

impl WorkerConfig {
    /// A worker joining `scheduler` with one thread per core, no resources,
    /// no memory limit, and one try to reach the scheduler.
    pub fn new(scheduler: SocketAddr, name: impl Into<String>) -> WorkerConfig {
        WorkerConfig {
            scheduler,
            name: name.into(),
            threads: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            token: None,
            listen: IpAddr::from([127, 0, 0, 1]),
            max_frame: shoal_proto::DEFAULT_MAX_FRAME,
            resources: Vec::new(),
            memory_limit: 0,
            memory_pause_fraction: 0.8,
            memory_terminate_fraction: None,
            memory_target_fraction: Some(0.6),
            local_directory: None,
            death_timeout: Duration::ZERO,
            exit_on_restart: false,
            same_host_transfer: SameHostTransfer::Read,
            inline_max: DEFAULT_INLINE_MAX,
        }
    }
}
