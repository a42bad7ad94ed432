//! Workers as batch jobs (dask-jobqueue's clusters) of SLURM, Grid Engine,
//! PBS or HTCondor: the scheduler runs in this process, where the user is;
//! each job a resource manager starts runs worker processes of this same
//! program that connect back to it.
//!
//! ```no_run
//! use shoal::jobqueue::{JobQueueCluster, Manager};
//!
//! #[shoal::remote]
//! fn square(x: u64) -> u64 { x * x }
//!
//! let cluster = JobQueueCluster::builder(Manager::Slurm)
//!     .cores(8)                 // per job: one worker process of 8 threads
//!     .memory(16 << 30)         // per job; the workers' memory limit
//!     .walltime("01:00:00")
//!     .queue("compute")
//!     .build()?;
//! println!("{}", cluster.job_script());  // what each job runs
//! cluster.scale(4)?;                     // four jobs
//! cluster.wait_for_workers(4, std::time::Duration::from_secs(600))?;
//! let client = cluster.client()?;
//! let squares = client.gather(&client.map(square, 0..1_000u64))?;
//! # Ok::<(), shoal::Error>(())
//! ```
//!
//! The program must be where the jobs can run it (a shared file system, as
//! on every HPC cluster), and the nodes must reach this host. The scheduler
//! listens on every interface with a fresh cluster token, which the jobs
//! read from a file in the log directory that only its owner may read
//! (removed when the cluster closes): the job scripts themselves hold no
//! secret and can be shown.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use shoal_client::{Client, Error};
use shoal_net::{RunningScheduler, SchedulerServerConfig, start_scheduler};

use crate::DeployError;
use crate::launch::Spelling;

mod manager;
mod script;

pub use manager::Manager;
pub use script::{JobSpec, job_script};

use manager::submit_description;

/// Builds a [`JobQueueCluster`]; see the module's documentation.
pub struct JobQueueClusterBuilder {
    spec: JobSpec,
    log_directory: Option<PathBuf>,
    scheduler_ip: Option<IpAddr>,
    port: u16,
    program: Option<PathBuf>,
}

impl JobQueueClusterBuilder {
    /// Cores per job (default 1), shared by its worker processes as threads.
    pub fn cores(mut self, cores: usize) -> Self {
        self.spec.cores = cores;
        self
    }

    /// Bytes of memory per job (default: none asked for); each worker
    /// process gets its share as its memory limit.
    pub fn memory(mut self, bytes: u64) -> Self {
        self.spec.memory = Some(bytes);
        self
    }

    /// Worker processes per job (default 1).
    pub fn processes(mut self, processes: usize) -> Self {
        self.spec.processes = processes;
        self
    }

    /// The jobs' time limit, as the resource manager reads it (`01:00:00`).
    pub fn walltime(mut self, walltime: impl Into<String>) -> Self {
        self.spec.walltime = Some(walltime.into());
        self
    }

    /// The queue (SLURM partition) to submit to.
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.spec.queue = Some(queue.into());
        self
    }

    /// The account (Grid Engine project) the jobs are charged to.
    pub fn account(mut self, account: impl Into<String>) -> Self {
        self.spec.account = Some(account.into());
        self
    }

    /// The jobs' name (default `shoal-worker`).
    pub fn job_name(mut self, name: impl Into<String>) -> Self {
        self.spec.name = name.into();
        self
    }

    /// Grid Engine's parallel environment for the cores (default `smp`).
    pub fn parallel_environment(mut self, pe: impl Into<String>) -> Self {
        self.spec.parallel_environment = pe.into();
        self
    }

    /// Grid Engine `-l` resources (`h_vmem=4G,h_rt=3600`), as dask-jobqueue's
    /// `resource_spec`; memory is not asked of Grid Engine otherwise, since
    /// sites name it differently (`h_vmem`, `mem_free`, `m_mem_free`).
    pub fn resource_spec(mut self, spec: impl Into<String>) -> Self {
        self.spec.resource_spec = Some(spec.into());
        self
    }

    /// More directive lines, without the prefix (`--exclusive` for SLURM,
    /// `-l gpu=1` for Grid Engine), as dask-jobqueue's `job_extra_directives`.
    pub fn job_extra(mut self, lines: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.spec.job_extra.extend(lines.into_iter().map(Into::into));
        self
    }

    /// Shell lines each job runs before its workers (`module load gcc`), as
    /// dask-jobqueue's `job_script_prologue`.
    pub fn prologue(mut self, lines: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.spec.prologue.extend(lines.into_iter().map(Into::into));
        self
    }

    /// Where workers spill results (a node-local disk, usually).
    pub fn local_directory(mut self, dir: impl Into<PathBuf>) -> Self {
        self.spec.worker.local_directory = Some(dir.into());
        self
    }

    /// Where the job scripts and the jobs' output go, and where the jobs
    /// start; on a file system the nodes share (default: `shoal-jobs` in
    /// the working directory). It is kept after the cluster closes.
    pub fn log_directory(mut self, dir: impl Into<PathBuf>) -> Self {
        self.log_directory = Some(dir.into());
        self
    }

    /// The fraction of its memory limit above which a worker pauses
    /// (default 0.8; see `LocalClusterBuilder::memory_pause`).
    pub fn memory_pause(mut self, fraction: f64) -> Self {
        self.spec.worker.memory_pause = fraction;
        self
    }

    /// The fraction of its memory limit past which a worker process's
    /// resident memory ends it, and its job starts a new one (default 0.95,
    /// as Dask's nanny; `None` never). Needs [`memory`](Self::memory).
    pub fn memory_terminate(mut self, fraction: Option<f64>) -> Self {
        self.spec.worker.memory_terminate = fraction;
        self
    }

    /// How long workers keep trying to reach a lost scheduler (default 60 s).
    pub fn death_timeout(mut self, timeout: Duration) -> Self {
        self.spec.worker.death_timeout = timeout;
        self
    }

    /// The address the jobs reach the scheduler on (default: this host's
    /// address on its default route; dask-jobqueue's `interface`).
    pub fn scheduler_ip(mut self, ip: IpAddr) -> Self {
        self.scheduler_ip = Some(ip);
        self
    }

    /// The scheduler's port (default: any free one).
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// The program the jobs run as workers (default: this one).
    pub fn program(mut self, program: impl Into<PathBuf>) -> Self {
        self.program = Some(program.into());
        self
    }

    /// Starts the scheduler; no job is submitted until [`JobQueueCluster::scale`].
    ///
    /// # Errors
    /// [`DeployError::JobOption`] for options that cannot make a job (no
    /// cores, more processes than cores), or when the scheduler cannot
    /// start.
    pub fn build(self) -> Result<JobQueueCluster, DeployError> {
        let spec = self.spec;
        if spec.cores == 0 || spec.processes == 0 || spec.processes > spec.cores {
            return Err(DeployError::JobOption(format!(
                "a job of {} cores cannot run {} worker processes: give at least one core per process",
                spec.cores, spec.processes
            )));
        }
        if spec.name.is_empty() || !spec.name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
            return Err(DeployError::JobOption(format!(
                "job name {:?}: use letters, digits, - _ and . only",
                spec.name
            )));
        }
        let program = match self.program {
            Some(p) => p,
            None => std::env::current_exe().map_err(DeployError::CurrentExe)?,
        };
        check_directives(&spec)?;
        // Checked as each job's workers get them.
        spec.worker_launch(SocketAddr::from(([127, 0, 0, 1], 0)), Path::new("token")).validate(Spelling::Code)?;
        // The jobs write their output there and start there: it must be on
        // a file system the nodes share, as the working directory usually is.
        let log_directory = match self.log_directory {
            Some(dir) => dir,
            None => std::env::current_dir()
                .map_err(|source| DeployError::Io {
                    what: "cannot find the working directory for the jobs' output",
                    source,
                })?
                .join("shoal-jobs"),
        };
        std::fs::create_dir_all(&log_directory).map_err(|source| DeployError::File {
            what: "cannot make the log directory",
            path: log_directory.clone(),
            source,
        })?;
        let ip = self.scheduler_ip.or_else(crate::default_route_ip).ok_or(DeployError::NoNetwork)?;
        let token = crate::fresh_token()?;
        // Listening where the jobs are told to connect, or everywhere when
        // that was not chosen.
        let listen_ip = self.scheduler_ip.unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let listen = SocketAddr::new(listen_ip, self.port);
        let scheduler =
            start_scheduler(SchedulerServerConfig { listen, token: Some(token.clone()), ..Default::default() })?;
        let address = SocketAddr::new(ip, scheduler.address().port());
        let token_file =
            log_directory.join(format!(".shoal-token-{}-{}", std::process::id(), scheduler.address().port()));
        write_private(&token_file, &format!("{token}\n"), 0o600).map_err(|source| DeployError::File {
            what: "cannot write the cluster token for the jobs",
            path: token_file.clone(),
            source,
        })?;
        let script = job_script(&spec, &program, address, &token_file);
        Ok(JobQueueCluster {
            spec,
            script,
            address,
            token,
            token_file,
            log_directory,
            jobs: Mutex::new(Vec::new()),
            submitted: Mutex::new(0),
            scheduler: Some(scheduler),
        })
    }
}

/// A scheduler in this process and workers started as batch jobs.
///
/// Dropping it cancels its jobs and stops the scheduler.
pub struct JobQueueCluster {
    spec: JobSpec,
    script: String,
    address: SocketAddr,
    token: String,
    /// The token, for the jobs' workers (theirs to read, no one else's).
    token_file: PathBuf,
    log_directory: PathBuf,
    jobs: Mutex<Vec<String>>,
    submitted: Mutex<usize>,
    scheduler: Option<RunningScheduler>,
}

impl JobQueueCluster {
    /// A builder for jobs of `manager`, one core, one worker process each.
    pub fn builder(manager: Manager) -> JobQueueClusterBuilder {
        JobQueueClusterBuilder {
            spec: JobSpec::new(manager),
            log_directory: None,
            scheduler_ip: None,
            port: 0,
            program: None,
        }
    }

    /// The script every job runs (dask-jobqueue's `job_script()`).
    pub fn job_script(&self) -> &str {
        &self.script
    }

    /// The scheduler's address, as the jobs reach it.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// A client of the cluster.
    ///
    /// # Errors
    /// When the scheduler cannot be reached.
    pub fn client(&self) -> Result<Client, Error> {
        Client::connect_with_token(&self.address.to_string(), Some(&self.token))
    }

    /// The ids of the jobs submitted and not cancelled.
    pub fn job_ids(&self) -> Vec<String> {
        self.jobs.lock().map_or_else(|_| Vec::new(), |j| j.clone())
    }

    /// Submits or cancels jobs so that `workers` worker processes are asked
    /// for (jobs of `processes` each, rounded up); cancels the newest first.
    ///
    /// # Errors
    /// [`DeployError`] with the resource manager's words when a command
    /// fails or cannot be found.
    pub fn scale(&self, workers: usize) -> Result<(), DeployError> {
        let wanted = workers.div_ceil(self.spec.processes);
        let mut jobs = self.jobs.lock().map_err(|_| DeployError::Poisoned("the job list"))?;
        // Jobs that ended (their time limit, a node lost) are replaced.
        jobs.retain(|id| self.spec.manager.still_queued(id));
        while let Some(id) = jobs.last().filter(|_| jobs.len() > wanted).cloned() {
            // Kept on the list (and cancelled again on close) unless this works.
            self.cancel(&id)?;
            jobs.pop();
        }
        while jobs.len() < wanted {
            jobs.push(self.submit()?);
        }
        Ok(())
    }

    /// Waits until at least `workers` workers have joined the scheduler.
    ///
    /// # Errors
    /// [`DeployError::JobsSilent`] naming how many joined and where the
    /// jobs' output is, once `timeout` has passed.
    pub fn wait_for_workers(&self, workers: usize, timeout: Duration) -> Result<(), DeployError> {
        let client = self.client()?;
        let deadline = Instant::now() + timeout;
        loop {
            let joined = client.scheduler_info()?.len();
            if joined >= workers {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(DeployError::JobsSilent {
                    joined,
                    workers,
                    timeout,
                    log_directory: self.log_directory.clone(),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn submit(&self) -> Result<String, DeployError> {
        let n = {
            let mut submitted = self.submitted.lock().map_err(|_| DeployError::Poisoned("the job counter"))?;
            *submitted += 1;
            *submitted
        };
        let path = self.log_directory.join(format!("{}-{n}.sh", self.spec.name));
        write_private(&path, &self.script, 0o700).map_err(|source| DeployError::File {
            what: "cannot write the job script",
            path: path.clone(),
            source,
        })?;
        let submitted = match self.spec.manager {
            Manager::HtCondor => {
                let description = self.log_directory.join(format!("{}-{n}.sub", self.spec.name));
                write_private(&description, &submit_description(&self.spec, &path, &self.log_directory)?, 0o600)
                    .map_err(|source| DeployError::File {
                        what: "cannot write the submit description",
                        path: description.clone(),
                        source,
                    })?;
                description
            }
            _ => path.clone(),
        };
        let (program, args) = self.spec.manager.submit_command();
        let printed = run(Command::new(program).args(args).arg(&submitted).current_dir(&self.log_directory))?;
        self.spec.manager.job_id(&printed).ok_or_else(|| DeployError::NoJobId {
            program: program.to_string(),
            script: path.clone(),
            printed: printed.clone(),
        })
    }

    /// Cancels job `id`; one that has already ended counts as cancelled.
    fn cancel(&self, id: &str) -> Result<(), DeployError> {
        match run(Command::new(self.spec.manager.cancel_command()).arg(id)) {
            Ok(_) => Ok(()),
            Err(_) if !self.spec.manager.still_queued(id) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

impl Drop for JobQueueCluster {
    fn drop(&mut self) {
        if let Ok(mut jobs) = self.jobs.lock() {
            for id in jobs.drain(..) {
                if let Err(e) = self.cancel(&id) {
                    eprintln!("shoal: job {id} may still be running: {e}");
                }
            }
        }
        self.scheduler.take();
        let _ = std::fs::remove_file(&self.token_file);
    }
}

/// Runs a resource manager's command; its output, or its complaint.
fn run(command: &mut Command) -> Result<String, DeployError> {
    let program = command.get_program().to_string_lossy().into_owned();
    let output = command.output().map_err(|source| DeployError::Command { program: program.clone(), source })?;
    if !output.status.success() {
        return Err(DeployError::CommandFailed {
            program,
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Writes `text` to a new file at `path` with `mode` (the owner's only: a
/// job script may be executable, as HTCondor runs it itself; the token
/// file is readable by its owner only).
fn write_private(path: &Path, text: &str, mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    // A new file, whatever was there (an older script, a planted link).
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    options.open(path)?.write_all(text.as_bytes())
}

/// Refuses directive values that would break out of their line (or, but
/// for free-form ones, out of their word).
fn check_directives(spec: &JobSpec) -> Result<(), DeployError> {
    let words = [
        ("queue", spec.queue.as_deref()),
        ("account", spec.account.as_deref()),
        ("walltime", spec.walltime.as_deref()),
        ("parallel_environment", Some(spec.parallel_environment.as_str())),
    ];
    for (what, value) in words {
        if let Some(v) = value.filter(|v| v.is_empty() || v.chars().any(|c| c.is_whitespace() || c.is_control())) {
            return Err(DeployError::JobOption(format!("{what} {v:?}: give one word, without spaces")));
        }
    }
    for line in spec.resource_spec.iter().chain(&spec.job_extra) {
        if line.chars().any(char::is_control) {
            return Err(DeployError::JobOption(format!("directive {line:?}: one line, without control characters")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::manager::clock_seconds;

    fn spec(manager: Manager) -> JobSpec {
        let builder = JobQueueCluster::builder(manager)
            .cores(8)
            .processes(2)
            .memory(16 << 30)
            .walltime("01:00:00")
            .queue("compute")
            .account("proj1")
            .job_extra(["--exclusive"])
            .prologue(["module load gcc"]);
        builder.spec
    }

    fn script(manager: Manager) -> String {
        let address = SocketAddr::from(([10, 0, 0, 5], 8786));
        job_script(&spec(manager), Path::new("/home/me/it's/prog"), address, Path::new("/home/me/.shoal-token"))
    }

    #[test]
    fn slurm_scripts_ask_for_the_job_and_run_its_workers() {
        let s = script(Manager::Slurm);
        for line in [
            "#SBATCH -J shoal-worker",
            "#SBATCH --cpus-per-task=8",
            "#SBATCH --mem=16384M",
            "#SBATCH -t 01:00:00",
            "#SBATCH -p compute",
            "#SBATCH -A proj1",
            "#SBATCH --exclusive",
            "module load gcc",
            "export SHOAL_WORKER_OF='10.0.0.5:8786'",
            "export SHOAL_TOKEN_FILE='/home/me/.shoal-token'",
            "export SHOAL_WORKER_THREADS='4'",
            "export SHOAL_MEMORY_LIMIT='8589934592'",
            "export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}",
            "for i in $(seq 0 1); do",
            "    export SHOAL_WORKER_NAME=\"shoal-worker-${SLURM_JOB_ID}-$i\"",
            "      '/home/me/it'\\''s/prog'",
            "      code=$?; [ \"$code\" -eq 75 ] || exit \"$code\"",
        ] {
            assert!(s.lines().any(|l| l == line), "missing {line:?} in\n{s}");
        }
        assert!(s.starts_with("#!/usr/bin/env bash\n#SBATCH"), "directives come first:\n{s}");
        assert!(!s.contains("SHOAL_TOKEN="), "no token in the script:\n{s}");
        assert!(s.lines().any(|l| l == "export SHOAL_MEMORY_TERMINATE='0.95'"), "a guard by default:\n{s}");
        let unlimited = JobSpec { memory: None, ..spec(Manager::Slurm) };
        let script = job_script(&unlimited, Path::new("/p"), SocketAddr::from(([10, 0, 0, 5], 1)), Path::new("/t"));
        assert!(!script.contains("SHOAL_MEMORY_TERMINATE"), "no guard without a limit:\n{script}");
    }

    #[test]
    fn grid_engine_and_pbs_scripts_use_their_own_directives() {
        let sge = script(Manager::Sge);
        for line in ["#$ -pe smp 8", "#$ -l h_rt=01:00:00", "#$ -q compute", "#$ -P proj1", "#$ -N shoal-worker"] {
            assert!(sge.lines().any(|l| l == line), "missing {line:?} in\n{sge}");
        }
        assert!(sge.contains("${JOB_ID}") && !sge.contains("h_vmem"), "{sge}");
        let pbs = script(Manager::Pbs);
        for line in ["#PBS -l select=1:ncpus=8:mem=16384MB", "#PBS -l walltime=01:00:00", "#PBS -q compute"] {
            assert!(pbs.lines().any(|l| l == line), "missing {line:?} in\n{pbs}");
        }
        assert!(pbs.contains("${PBS_JOBID}"), "{pbs}");
    }

    #[test]
    fn htcondor_jobs_are_a_submit_description_and_a_plain_script() {
        let spec = spec(Manager::HtCondor);
        let script = job_script(&spec, Path::new("/p"), SocketAddr::from(([10, 0, 0, 5], 1)), Path::new("/t"));
        assert!(!script.contains("#SBATCH") && !script.contains("--exclusive"), "no directives:\n{script}");
        assert!(script.contains("${SHOAL_JOB_ID}"), "{script}");
        let description =
            submit_description(&spec, Path::new("/logs/shoal-worker-1.sh"), Path::new("/logs")).expect("valid");
        for line in [
            "executable = /logs/shoal-worker-1.sh",
            "request_cpus = 8",
            "request_memory = 16384",
            "+MaxRuntime = 3600",
            "environment = \"SHOAL_JOB_ID=$(Cluster).$(Process)\"",
            "--exclusive",
            "queue 1",
        ] {
            assert!(description.lines().any(|l| l == line), "missing {line:?} in\n{description}");
        }
        let bad = JobSpec { walltime: Some("1-00:00:00".into()), ..spec };
        assert!(submit_description(&bad, Path::new("/s"), Path::new("/l")).is_err());
        assert_eq!(clock_seconds("01:00:00"), Some(3600));
        assert_eq!(clock_seconds("90"), Some(90));
    }

    #[test]
    fn job_ids_are_read_from_what_submission_prints() {
        assert_eq!(Manager::Slurm.job_id("4242\n"), Some("4242".into()));
        assert_eq!(Manager::Slurm.job_id("4242;cluster\n"), Some("4242".into()));
        assert_eq!(Manager::Sge.job_id("17\n"), Some("17".into()));
        assert_eq!(Manager::Pbs.job_id("123.pbs-server\n"), Some("123.pbs-server".into()));
        assert_eq!(Manager::Pbs.job_id(""), None);
        assert_eq!(Manager::HtCondor.job_id("77.0 - 77.0\n"), Some("77.0".into()));
        assert_eq!(Manager::Slurm.job_id("1; rm -rf /"), Some("1".into()));
        assert_eq!(Manager::Sge.job_id("1 rm"), None);
    }

    #[test]
    fn options_that_cannot_make_a_job_are_refused() {
        let err = JobQueueCluster::builder(Manager::Slurm).cores(2).processes(3).build().err().expect("refused");
        assert!(err.to_string().contains("cannot run 3 worker processes"), "{err}");
        let err = JobQueueCluster::builder(Manager::Slurm).job_name("a b").build().err().expect("refused");
        assert!(err.to_string().contains("job name \"a b\""), "{err}");
        let err = JobQueueCluster::builder(Manager::Slurm).queue("q\n#SBATCH -x").build().err().expect("refused");
        assert!(err.to_string().contains("queue"), "{err}");
        let err = JobQueueCluster::builder(Manager::Sge).job_extra(["-l a\nrm -rf /"]).build().err().expect("refused");
        assert!(err.to_string().contains("one line"), "{err}");
    }
}
