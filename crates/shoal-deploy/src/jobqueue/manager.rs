//! The resource managers: how each is asked for a job, how it names and
//! cancels jobs, and the directives and submit descriptions it reads.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use super::JobSpec;
use crate::DeployError;

/// The resource manager that runs the jobs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Manager {
    /// SLURM: `sbatch`, `scancel`.
    Slurm,
    /// (Son of) Grid Engine: `qsub`, `qdel`, with a parallel environment
    /// for the cores.
    Sge,
    /// PBS Pro / OpenPBS: `qsub`, `qdel` (Torque's `-l nodes=` is not
    /// written).
    Pbs,
    /// HTCondor: `condor_submit` of a submit description beside the job
    /// script, `condor_rm`.
    HtCondor,
}

impl Manager {
    pub(super) fn submit_command(self) -> (&'static str, &'static [&'static str]) {
        match self {
            Manager::Slurm => ("sbatch", &["--parsable"]),
            Manager::Sge => ("qsub", &["-terse"]),
            Manager::Pbs => ("qsub", &[]),
            Manager::HtCondor => ("condor_submit", &["-terse"]),
        }
    }

    pub(super) fn cancel_command(self) -> &'static str {
        match self {
            Manager::Slurm => "scancel",
            Manager::Sge | Manager::Pbs => "qdel",
            Manager::HtCondor => "condor_rm",
        }
    }

    /// Whether job `id` is still queued or running, as the manager says.
    pub(super) fn still_queued(self, id: &str) -> bool {
        let output = match self {
            Manager::Slurm => Command::new("squeue").args(["-h", "-o", "%i", "-j", id]).output(),
            Manager::Sge => Command::new("qstat").args(["-j", id]).output(),
            Manager::Pbs => Command::new("qstat").arg(id).output(),
            Manager::HtCondor => Command::new("condor_q").args([id, "-af:j", "JobStatus"]).output(),
        };
        // Finished jobs: SLURM lists nothing, the others fail.
        output.is_ok_and(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).contains(id))
    }

    /// The variable a job's environment holds its id in.
    pub(super) fn job_id_variable(self) -> &'static str {
        match self {
            Manager::Slurm => "SLURM_JOB_ID",
            Manager::Sge => "JOB_ID",
            Manager::Pbs => "PBS_JOBID",
            // Set by the submit description (HTCondor has no such variable).
            Manager::HtCondor => "SHOAL_JOB_ID",
        }
    }

    /// The job id in what the submit command printed: `123` or
    /// `123;cluster` (SLURM), `123` (Grid Engine), `123.server` (PBS),
    /// `123.0 - 123.0` (HTCondor: the first job of the range).
    pub(super) fn job_id(self, printed: &str) -> Option<String> {
        let line = printed.lines().map(str::trim).find(|l| !l.is_empty())?;
        let id = match self {
            Manager::Slurm => line.split(';').next()?,
            Manager::Sge | Manager::Pbs => line,
            Manager::HtCondor => line.split_whitespace().next()?,
        };
        let valid = !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric() || "._-[]".contains(c));
        valid.then(|| id.to_string())
    }
}

/// The directive lines (without their prefix) that ask for one job; none
/// for HTCondor, whose requests are in its submit description.
pub(super) fn directives(spec: &JobSpec) -> Vec<String> {
    let name = &spec.name;
    let (mut lines, time, queue, account) = match spec.manager {
        Manager::Slurm => {
            let mut lines = vec![format!("-J {name}"), "-n 1".into(), format!("--cpus-per-task={}", spec.cores)];
            lines.extend(spec.memory.map(|m| format!("--mem={}M", mebibytes(m))));
            (lines, "-t ", "-p ", "-A ")
        }
        Manager::Sge => {
            let mut lines = vec![
                "-S /bin/bash".into(),
                format!("-N {name}"),
                format!("-pe {} {}", spec.parallel_environment, spec.cores),
            ];
            lines.extend(spec.resource_spec.as_ref().map(|r| format!("-l {r}")));
            (lines, "-l h_rt=", "-q ", "-P ")
        }
        Manager::Pbs => {
            let memory = spec.memory.map(|m| format!(":mem={}MB", mebibytes(m))).unwrap_or_default();
            (
                vec![format!("-N {name}"), format!("-l select=1:ncpus={}{memory}", spec.cores)],
                "-l walltime=",
                "-q ",
                "-A ",
            )
        }
        Manager::HtCondor => return Vec::new(),
    };
    for (flag, value) in [(time, &spec.walltime), (queue, &spec.queue), (account, &spec.account)] {
        lines.extend(value.as_ref().map(|v| format!("{flag}{v}")));
    }
    // Where the output goes: relative to the log directory, where the job
    // was submitted from (SLURM, PBS) or starts (Grid Engine's -cwd).
    let output: &[&str] = match spec.manager {
        Manager::Slurm => &["-o %x-%j.out"],
        Manager::Sge => &["-cwd", "-j y"],
        _ => &["-j oe"],
    };
    lines.extend(output.iter().map(|l| l.to_string()));
    lines.extend(spec.job_extra.iter().cloned());
    lines
}

/// What HTCondor submits: the job script as the executable, the job's
/// requests, and its id for the script (`SHOAL_JOB_ID`).
pub(super) fn submit_description(spec: &JobSpec, script: &Path, log_directory: &Path) -> Result<String, DeployError> {
    let mut s = String::new();
    let _ = writeln!(s, "universe = vanilla");
    let _ = writeln!(s, "executable = {}", script.display());
    let _ = writeln!(s, "initialdir = {}", log_directory.display());
    let _ = writeln!(s, "request_cpus = {}", spec.cores);
    if let Some(m) = spec.memory {
        let _ = writeln!(s, "request_memory = {}", mebibytes(m));
    }
    if let Some(t) = &spec.walltime {
        let seconds = clock_seconds(t).ok_or_else(|| {
            DeployError::JobOption(format!("walltime {t:?}: give hours:minutes:seconds for HTCondor"))
        })?;
        let _ = writeln!(s, "+MaxRuntime = {seconds}");
    }
    let _ = writeln!(s, "environment = \"SHOAL_JOB_ID=$(Cluster).$(Process)\"");
    let _ = writeln!(s, "output = {}-$(Cluster).$(Process).out", spec.name);
    let _ = writeln!(s, "error = {}-$(Cluster).$(Process).err", spec.name);
    let _ = writeln!(s, "log = {}-$(Cluster).log", spec.name);
    for line in &spec.job_extra {
        let _ = writeln!(s, "{line}");
    }
    let _ = writeln!(s, "queue 1");
    Ok(s)
}

/// `[[hours:]minutes:]seconds` in seconds.
pub(super) fn clock_seconds(text: &str) -> Option<u64> {
    let parts: Vec<&str> = text.split(':').collect();
    if parts.len() > 3 {
        return None;
    }
    parts.iter().try_fold(0u64, |total, part| Some(total * 60 + part.parse::<u64>().ok()?))
}

/// MiB, rounded up, at least 1.
pub(super) fn mebibytes(bytes: u64) -> u64 {
    bytes.div_ceil(1 << 20).max(1)
}
