//! What one job asks for, and the script it runs: pure text, from the
//! options alone.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use shoal_proto::PeerAddress;

use super::manager::{Manager, directives};
use crate::RESTART_EXIT_CODE;
use crate::launch::{TUNED_ENVIRONMENT, WorkerLaunch, WorkerOption};

/// How each job is asked for and what it runs (dask-jobqueue's cluster
/// options). [`JobQueueClusterBuilder`](super::JobQueueClusterBuilder) sets
/// them; [`job_script`] writes them out.
#[derive(Clone, Debug, PartialEq)]
pub struct JobSpec {
    /// The resource manager.
    pub manager: Manager,
    /// The jobs' name (default `shoal-worker`).
    pub name: String,
    /// Cores per job, shared by its worker processes as threads.
    pub cores: usize,
    /// Bytes of memory per job; each worker process gets its share as its
    /// memory limit.
    pub memory: Option<u64>,
    /// Worker processes per job.
    pub processes: usize,
    /// The jobs' time limit, as the resource manager reads it.
    pub walltime: Option<String>,
    /// The queue (SLURM partition).
    pub queue: Option<String>,
    /// The account (Grid Engine project).
    pub account: Option<String>,
    /// Grid Engine's parallel environment for the cores.
    pub parallel_environment: String,
    /// Grid Engine `-l` resources.
    pub resource_spec: Option<String>,
    /// More directive lines, without their prefix.
    pub job_extra: Vec<String>,
    /// Shell lines run before the workers.
    pub prologue: Vec<String>,
    /// What every worker process of the jobs is launched with (its
    /// scheduler, token, threads and memory limit are set per job from the
    /// fields above).
    pub worker: WorkerLaunch,
}

impl JobSpec {
    /// Jobs of one core and one worker process, for `manager`.
    pub fn new(manager: Manager) -> JobSpec {
        JobSpec {
            manager,
            name: "shoal-worker".into(),
            cores: 1,
            memory: None,
            processes: 1,
            walltime: None,
            queue: None,
            account: None,
            parallel_environment: "smp".into(),
            resource_spec: None,
            job_extra: Vec::new(),
            prologue: Vec::new(),
            worker: WorkerLaunch {
                // Long enough to ride out a scheduler restart.
                death_timeout: Duration::from_secs(60),
                // A ballooning worker ends itself and its job's loop starts
                // a new one, before the batch system kills the whole job at
                // its limit (Dask's nanny restarts at 95 %).
                memory_terminate: Some(0.95),
                ..WorkerLaunch::default()
            },
        }
    }

    /// What each worker process of a job is launched with: its share of
    /// the cores and the memory, under the shell loop that restarts it, and
    /// the cluster token read from `token_file`.
    pub fn worker_launch(&self, scheduler: SocketAddr, token_file: &Path) -> WorkerLaunch {
        let processes = self.processes.max(1);
        WorkerLaunch {
            scheduler: Some(PeerAddress::from_socket(scheduler)),
            token: None,
            token_file: Some(token_file.to_path_buf()),
            threads: Some((self.cores / processes).max(1)),
            memory_limit: self.memory.map_or(0, |m| m / processes as u64),
            // A fraction of nothing: without memory per job there is no limit.
            memory_terminate: self.worker.memory_terminate.filter(|_| self.memory.is_some()),
            nanny: true,
            ..self.worker.clone()
        }
    }
}

/// The script each job runs: directives, the prologue, then `processes`
/// workers of `program`, each restarted when its cluster restarts (exit
/// code 75) and the job ending when they all have ended
/// (dask-jobqueue's `job_script()`). The cluster token is not in it: the
/// workers read it from `token_file`, which only its owner may read, so
/// the script can be shown, logged and kept.
///
/// ```
/// use shoal_deploy::jobqueue::{JobSpec, Manager, job_script};
///
/// let spec = JobSpec { cores: 8, walltime: Some("01:00:00".into()), ..JobSpec::new(Manager::Slurm) };
/// let script =
///     job_script(&spec, "/home/me/prog".as_ref(), ([10, 0, 0, 5], 8786).into(), "/home/me/.token".as_ref());
/// assert!(script.lines().any(|l| l == "#SBATCH --cpus-per-task=8"));
/// assert!(script.lines().any(|l| l == "export SHOAL_WORKER_OF='10.0.0.5:8786'"));
/// assert!(script.lines().any(|l| l == "export SHOAL_TOKEN_FILE='/home/me/.token'"));
/// ```
pub fn job_script(spec: &JobSpec, program: &Path, scheduler: SocketAddr, token_file: &Path) -> String {
    let mut s = String::from("#!/usr/bin/env bash\n");
    let prefix = match spec.manager {
        Manager::Slurm => "#SBATCH",
        Manager::Sge => "#$",
        Manager::Pbs => "#PBS",
        // HTCondor reads its requests from the submit description.
        Manager::HtCondor => "",
    };
    for line in directives(spec) {
        let _ = writeln!(s, "{prefix} {line}");
    }
    for line in &spec.prologue {
        let _ = writeln!(s, "{line}");
    }
    // What every worker process gets, where the job's environment has not
    // set it.
    for (var, value) in TUNED_ENVIRONMENT {
        let _ = writeln!(s, "export {var}=${{{var}:-{value}}}");
    }
    for (var, value) in spec.worker_launch(scheduler, token_file).exports() {
        let _ = writeln!(s, "export {var}={}", quoted(&value));
    }
    let job = spec.manager.job_id_variable();
    let _ = writeln!(s, "pids=()");
    let _ = writeln!(s, "for i in $(seq 0 {}); do", spec.processes.max(1) - 1);
    let _ = writeln!(s, "  (");
    let _ = writeln!(s, "    export {}=\"{}-${{{job}}}-$i\"", WorkerOption::Name.env(), spec.name);
    let _ = writeln!(s, "    while :; do");
    let _ = writeln!(s, "      {}", quoted(&program.display().to_string()));
    let _ = writeln!(s, "      code=$?; [ \"$code\" -eq {RESTART_EXIT_CODE} ] || exit \"$code\"");
    let _ = writeln!(s, "      sleep 1");
    let _ = writeln!(s, "    done");
    let _ = writeln!(s, "  ) &");
    let _ = writeln!(s, "  pids+=($!)");
    let _ = writeln!(s, "done");
    // The job fails if a worker did.
    let _ = writeln!(s, "status=0");
    let _ = writeln!(s, "for pid in \"${{pids[@]}}\"; do wait \"$pid\" || status=$?; done");
    let _ = writeln!(s, "exit \"$status\"");
    s
}

/// Single-quoted for the shell.
fn quoted(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}
