//! How well a finished batch job used what it reserved — cores, memory and
//! time — in figures and in words, from the resource manager's accounting:
//! `sacct` on SLURM, `qacct` on Grid Engine. `shoal efficiency` prints these
//! reports; a program that ran its workers as batch jobs (see
//! [`jobqueue`](crate::jobqueue)) can report on its own jobs the same way.
//!
//! - [`from_accounting`] asks this machine's resource manager for a job's
//!   records (`sacct`, then `qacct`);
//! - [`parse_sacct`] and [`parse_qacct`] read saved output of
//!   `sacct -P --format=`[`SACCT_FORMAT`] and of `qacct -j`;
//! - each record is a [`Usage`], and [`report`] writes one as text: the
//!   figures, then a verdict and advice;
//! - [`EfficiencyError`] says what could not be read or run, and why.
//!
//! ```
//! use shoal_deploy::efficiency::{parse_qacct, report};
//!
//! // The lines of `qacct -j 3524046` that the report reads.
//! let record = "\
//! jobname      analysis
//! jobnumber    3524046
//! slots        8
//! ru_wallclock 126s
//! cpu          131.792s
//! maxvmem      2.5G
//! category     -l h_rt=600,h_vmem=4G -pe smp 8
//! failed       0
//! exit_status  0
//! ";
//! let jobs = parse_qacct(record)?;
//! let text = report(&jobs[0]);
//! print!("{text}");
//! assert!(text.starts_with("job 3524046 (analysis): exit status 0"));
//! assert!(text.contains("13 % CPU efficiency"));
//! assert!(text.contains("2.5 GiB at most"));
//! # Ok::<(), shoal_deploy::efficiency::EfficiencyError>(())
//! ```
#![deny(missing_docs)]

use std::fmt::Write as _;
use std::num::ParseFloatError;
use std::process::Command;

mod qacct;
mod report;
mod sacct;

pub use report::report;

/// The columns [`from_accounting`] asks of `sacct`, in order; saved output
/// for [`parse_sacct`] needs at least these (others are ignored):
/// `sacct -P -j JOB --format=` followed by this.
pub const SACCT_FORMAT: &str = "JobID,JobName,State,ExitCode,Elapsed,TotalCPU,AllocCPUS,NNodes,ReqMem,MaxRSS,Timelimit";

/// What a job reserved and used: one record of the resource manager's
/// accounting (a job, or one task of an array job).
#[derive(Debug, Clone, PartialEq)]
pub struct Usage {
    /// The job's id (`3524046`; `3524046.2` for task 2 of an array job on
    /// Grid Engine).
    pub id: String,
    /// The job's name (empty when the record has none).
    pub name: String,
    /// Cores (slots) reserved.
    pub cores: f64,
    /// Wall-clock seconds from the job's start to its end.
    pub wall_s: f64,
    /// User and system CPU seconds of all its processes.
    pub cpu_s: f64,
    /// Peak memory in bytes, by [`memory_measure`](Self::memory_measure).
    pub max_memory: Option<f64>,
    /// What [`max_memory`](Self::max_memory) measures, in words: SLURM's
    /// peak resident memory (MaxRSS) or Grid Engine's peak virtual memory
    /// (maxvmem).
    pub memory_measure: &'static str,
    /// Bytes of memory reserved for the whole job.
    pub requested_memory: Option<f64>,
    /// The job's time limit in seconds (`None`: no limit recorded).
    pub time_limit_s: Option<f64>,
    /// Its exit status; a job ended by signal `n` counts as the shell's
    /// `128 + n` (137 for SIGKILL).
    pub exit_status: Option<i32>,
    /// The resource manager's word for a job that did not end normally
    /// (SLURM's state, such as `OUT_OF_MEMORY` or `TIMEOUT`; Grid Engine's
    /// `failed` line).
    pub failed: Option<String>,
    /// Voluntary and involuntary context switches (Grid Engine).
    pub switches: Option<(u64, u64)>,
    /// The most tasks of one step (SLURM): above one, the peak memory is
    /// one task's, not the job's.
    pub tasks: Option<u32>,
    /// Nodes the job ran on.
    pub nodes: f64,
}

/// Why a job's accounting could not be had or read.
///
/// Each error's message says what it is about, and its cause is its
/// [`source`](std::error::Error::source): print the whole chain (as
/// `anyhow`'s `{:#}` does) for the full story, such as
/// `sacct record of job 4211: Elapsed: "soon" is not a duration ([days-]hours:minutes:seconds, or seconds)`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EfficiencyError {
    /// The job id has characters that no resource manager's ids have
    /// (they are letters, digits and `._-[]`), so it is passed to no
    /// command.
    #[error("{job:?} is not a job id")]
    NotAJobId {
        /// The text given as a job id.
        job: String,
    },
    /// Neither `sacct` nor `qacct` is on this machine's `PATH`.
    #[error(
        "neither sacct (SLURM) nor qacct (Grid Engine) is on this machine's PATH: run one where the job ran, \
         and pass its output with --sacct FILE or --qacct FILE"
    )]
    NoAccountingTool,
    /// Every accounting command on this machine was asked, and none gave a
    /// record of the job.
    #[error("no accounting record of job {job}: {}", chains(refusals))]
    NoRecord {
        /// The job asked for.
        job: String,
        /// Each command's refusal, in the order they were asked:
        /// [`CannotRun`](Self::CannotRun),
        /// [`CommandFailed`](Self::CommandFailed), or an
        /// [`In`](Self::In) naming the command whose output could not be
        /// read.
        refusals: Vec<EfficiencyError>,
    },
    /// An accounting command was found but could not be started.
    #[error("cannot run {program}")]
    CannotRun {
        /// The command.
        program: String,
        /// Why it could not be started.
        source: std::io::Error,
    },
    /// An accounting command ran and failed (for a job it does not know,
    /// or without its daemons).
    #[error("{command} failed: {stderr}")]
    CommandFailed {
        /// The command line.
        command: String,
        /// What it wrote to its error output.
        stderr: String,
    },
    /// An error in one part of the accounting output: a field, a job's
    /// record, or the output of one command.
    #[error("{place}")]
    In {
        /// The part (`Elapsed`, `sacct record of job 4211`, `qacct`).
        place: String,
        /// What is wrong with it.
        source: Box<EfficiencyError>,
    },
    /// The `sacct` output has no lines.
    #[error("the sacct output is empty")]
    EmptySacct,
    /// The `sacct` output lacks a column the report needs.
    #[error("the sacct output has no {column} column: run sacct -P -j JOB --format={SACCT_FORMAT}")]
    MissingColumn {
        /// The column's name.
        column: String,
    },
    /// A line of the `sacct` output has more or fewer cells than its
    /// header has columns.
    #[error("sacct line {line:?} has {cells} cells for {columns} columns")]
    CellCount {
        /// The line.
        line: String,
        /// Its cells.
        cells: usize,
        /// The header's columns.
        columns: usize,
    },
    /// The `sacct` output has a header but no job (no lines, or only
    /// lines of job steps).
    #[error("no job in the sacct output (only a header, or only steps)")]
    NoSacctJob,
    /// `AllocCPUS` of a `sacct` record is not a number.
    #[error("AllocCPUS {text:?}")]
    BadAllocCpus {
        /// The cell.
        text: String,
        /// Why it is not a number.
        source: ParseFloatError,
    },
    /// The `qacct` output has no record.
    #[error("no accounting record in the qacct output (expected lines such as \"jobnumber 3524073\")")]
    NoQacctRecord,
    /// A `qacct` record lacks a line the report needs.
    #[error("the qacct record has no {key:?} line")]
    MissingLine {
        /// The line's key (`jobnumber`, `slots`, `ru_wallclock`, `cpu`).
        key: String,
    },
    /// The `slots` of a `qacct` record are not a number.
    #[error("slots Some({text:?}) is not a number")]
    BadSlots {
        /// The value.
        text: String,
        /// Why it is not a number.
        source: ParseFloatError,
    },
    /// A number of seconds (`766s`, `0.040s`) that is not one.
    #[error("{text:?} is not a number of seconds")]
    NotSeconds {
        /// The text.
        text: String,
        /// Why it is not a number.
        source: ParseFloatError,
    },
    /// A duration (`02:11.792`, `1-00:00:00`, `600`) that is not one.
    #[error("{text:?} is not a duration ([days-]hours:minutes:seconds, or seconds)")]
    NotDuration {
        /// The text.
        text: String,
        /// Why, when its days are not a number.
        source: Option<ParseFloatError>,
    },
    /// An amount of memory (`13432M`, `12.973GB`) whose number is not one.
    #[error("{text:?} is not an amount of memory")]
    NotMemory {
        /// The text.
        text: String,
        /// Why its number is not one.
        source: ParseFloatError,
    },
    /// An amount of memory in a unit that Grid Engine does not write.
    #[error("{text:?}: unknown unit {unit:?} (expected B, K, M, G or T)")]
    UnknownUnit {
        /// The text.
        text: String,
        /// Its unit.
        unit: String,
    },
}

impl EfficiencyError {
    /// This error, as one in `place` of the accounting output.
    fn within(self, place: impl Into<String>) -> Self {
        Self::In { place: place.into(), source: Box::new(self) }
    }
}

/// Each error with its sources (`error: source: its source`, as `anyhow`
/// prints a chain with `{:#}`), separated by `; `.
fn chains(errors: &[EfficiencyError]) -> String {
    let chain = |error: &EfficiencyError| {
        let mut text = error.to_string();
        let mut source = std::error::Error::source(error);
        while let Some(cause) = source {
            let _ = write!(text, ": {cause}");
            source = cause.source();
        }
        text
    };
    errors.iter().map(chain).collect::<Vec<_>>().join("; ")
}

/// The jobs in `sacct -P --format=…` output, whose first line names the
/// columns (at least those of [`SACCT_FORMAT`]): one [`Usage`] per job, in
/// the order of the output. The lines of a job's steps (`4211.batch`) add
/// their peak memory and task count to the job's record.
///
/// # Examples
///
/// ```
/// use shoal_deploy::efficiency::parse_sacct;
///
/// let output = "\
/// JobID|JobName|State|ExitCode|Elapsed|TotalCPU|AllocCPUS|NNodes|ReqMem|MaxRSS|Timelimit
/// 4211|tutorial|COMPLETED|0:0|00:02:06|02:11.792|8|1|3Gc||00:10:00
/// 4211.batch|batch|COMPLETED|0:0|00:02:06|02:11.790|8|1||1406496K|
/// ";
/// let jobs = parse_sacct(output)?;
/// assert_eq!((jobs[0].id.as_str(), jobs[0].cores, jobs[0].wall_s), ("4211", 8.0, 126.0));
/// assert_eq!(jobs[0].requested_memory, Some(24.0 * (1u64 << 30) as f64)); // 3 GiB per core
/// # Ok::<(), shoal_deploy::efficiency::EfficiencyError>(())
/// ```
///
/// # Errors
///
/// [`EfficiencyError::EmptySacct`], [`MissingColumn`](EfficiencyError::MissingColumn)
/// (saying how to run `sacct`), [`CellCount`](EfficiencyError::CellCount),
/// [`NoSacctJob`](EfficiencyError::NoSacctJob), or an
/// [`In`](EfficiencyError::In) naming the job and the field that could not
/// be read.
pub fn parse_sacct(text: &str) -> Result<Vec<Usage>, EfficiencyError> {
    sacct::parse(text)
}

/// The records in `qacct -j JOB` output: one [`Usage`] per job or task of
/// an array job (records are separated by lines of `=`).
///
/// The reserved memory is `h_vmem` of the record's `category` line times
/// its slots, and the time limit its `h_rt`; `INFINITY` is no reservation.
///
/// # Examples
///
/// ```
/// use shoal_deploy::efficiency::parse_qacct;
///
/// let jobs = parse_qacct("jobnumber 5\nslots 2\nru_wallclock 10s\ncpu 9s\ncategory -l h_rt=600\n")?;
/// assert_eq!((jobs[0].cores, jobs[0].cpu_s, jobs[0].time_limit_s), (2.0, 9.0, Some(600.0)));
/// # Ok::<(), shoal_deploy::efficiency::EfficiencyError>(())
/// ```
///
/// # Errors
///
/// [`EfficiencyError::NoQacctRecord`], [`MissingLine`](EfficiencyError::MissingLine)
/// for a record without its `jobnumber`, `slots`, `ru_wallclock` or `cpu`,
/// [`BadSlots`](EfficiencyError::BadSlots), or an
/// [`In`](EfficiencyError::In) naming the line that could not be read.
pub fn parse_qacct(text: &str) -> Result<Vec<Usage>, EfficiencyError> {
    qacct::parse(text)
}

/// Reads one resource manager's accounting output.
type Parser = fn(&str) -> Result<Vec<Usage>, EfficiencyError>;

/// Asks this machine's resource manager for the records of job `job`:
/// `sacct -P -j JOB --format=`[`SACCT_FORMAT`] (SLURM), then `qacct -j JOB`
/// (Grid Engine). A machine may have both commands, or one installed
/// without its daemons: the first whose answer can be read gives the
/// records.
///
/// # Errors
///
/// [`EfficiencyError::NotAJobId`] for an id with other characters than
/// letters, digits and `._-[]` (no command is run);
/// [`NoAccountingTool`](EfficiencyError::NoAccountingTool) when neither
/// command is on `PATH`; [`NoRecord`](EfficiencyError::NoRecord), with
/// every command's refusal, when none knows the job.
pub fn from_accounting(job: &str) -> Result<Vec<Usage>, EfficiencyError> {
    if !job.chars().all(|c| c.is_ascii_alphanumeric() || "._-[]".contains(c)) {
        return Err(EfficiencyError::NotAJobId { job: job.to_string() });
    }
    let format = format!("--format={SACCT_FORMAT}");
    // Every refusal is told, in the order asked.
    let mut refusals = Vec::new();
    let mut found_a_tool = false;
    let attempts: [(&str, Vec<&str>, Parser); 2] =
        [("sacct", vec!["-P", "-j", job, &format], sacct::parse), ("qacct", vec!["-j", job], qacct::parse)];
    for (program, args, parse) in attempts {
        match run(program, &args) {
            Ok(Some(text)) => {
                found_a_tool = true;
                match parse(&text) {
                    Ok(jobs) => return Ok(jobs),
                    Err(e) => refusals.push(e.within(program)),
                }
            }
            Ok(None) => {}
            Err(e) => {
                found_a_tool = true;
                refusals.push(e);
            }
        }
    }
    if !found_a_tool {
        return Err(EfficiencyError::NoAccountingTool);
    }
    Err(EfficiencyError::NoRecord { job: job.to_string(), refusals })
}

/// The standard output of `program args`, or `None` when there is no
/// such program.
fn run(program: &str, args: &[&str]) -> Result<Option<String>, EfficiencyError> {
    let output = match Command::new(program).args(args).output() {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(EfficiencyError::CannotRun { program: program.to_string(), source }),
    };
    if !output.status.success() {
        return Err(EfficiencyError::CommandFailed {
            command: format!("{program} {}", args.join(" ")),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    Ok(Some(String::from_utf8_lossy(&output.stdout).into_owned()))
}

/// `600`, `02:06`, `00:02:06`, `1-00:00:00`, `02:11.792`, `2:00:00`:
/// seconds (the clock formats of SLURM and of Grid Engine's `h_rt`).
fn parse_clock(text: &str) -> Result<f64, EfficiencyError> {
    let t = text.trim();
    let bad = |source: Option<ParseFloatError>| EfficiencyError::NotDuration { text: text.to_string(), source };
    let (days, clock) = match t.split_once('-') {
        Some((d, rest)) => (d.parse::<f64>().map_err(|e| bad(Some(e)))?, rest),
        None => (0.0, t),
    };
    let parts: Vec<&str> = clock.split(':').collect();
    if parts.len() > 3 || parts.iter().any(|p| p.is_empty()) {
        return Err(bad(None));
    }
    let mut seconds = 0.0;
    for part in &parts {
        let value: f64 = part.parse().ok().filter(|v: &f64| v.is_finite() && *v >= 0.0).ok_or_else(|| bad(None))?;
        seconds = seconds * 60.0 + value;
    }
    // With days, SLURM writes hours:minutes:seconds, and hours alone as `1-02`.
    if days > 0.0 && parts.len() == 1 {
        seconds *= 3600.0;
    }
    Ok(days * 86_400.0 + seconds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clocks_in_every_format_the_managers_write() {
        for (text, seconds) in [
            ("600", 600.0),
            ("02:06", 126.0),
            ("00:02:06", 126.0),
            ("02:11.792", 131.792),
            ("1-00:00:00", 86_400.0),
            ("2-03", 2.0 * 86_400.0 + 3.0 * 3600.0),
            ("1:00:00", 3600.0),
        ] {
            assert!((parse_clock(text).expect(text) - seconds).abs() < 1e-9, "{text}");
        }
        for bad in ["", "soon", "1:2:3:4", "1::2", "x-01:00:00", "INFINITY", "inf", "-5"] {
            assert!(parse_clock(bad).is_err(), "{bad:?}");
        }
    }

    fn qacct_report(text: &str) -> (Usage, String) {
        let jobs = parse_qacct(text).expect("a qacct record");
        assert_eq!(jobs.len(), 1);
        let report = report(&jobs[0]);
        (jobs.into_iter().next().expect("one"), report)
    }

    /// The seed tutorial's exercise 6: eight slots, busy most of the time.
    #[test]
    fn exercise_6_used_its_cores_well_and_reserved_too_much_memory() {
        let (job, report) = qacct_report(include_str!("../../tests/data/qacct-exercise6.txt"));
        assert_eq!((job.id.as_str(), job.cores, job.wall_s, job.cpu_s), ("3524073", 8.0, 21.0, 146.665));
        assert_eq!(job.requested_memory, Some(8.0 * 24.0 * (1u64 << 30) as f64), "h_vmem is per slot");
        assert_eq!(job.time_limit_s, Some(600.0));
        assert!(report.contains("87 % CPU efficiency"), "{report}");
        assert!(report.contains("Good use of the cores"), "{report}");
        assert!(report.contains("13 GiB at most") && report.contains("of 192 GiB reserved: 7 %"), "{report}");
        assert!(!report.contains("involuntary:"), "{report}");
    }

    /// Exercise 7: the same job, six times slower, one core busy of eight,
    /// and its threads fighting over the cores.
    #[test]
    fn exercise_7_ran_one_core_busy_and_oversubscribed() {
        let (job, report) = qacct_report(include_str!("../../tests/data/qacct-exercise7.txt"));
        assert_eq!((job.wall_s, job.cpu_s), (126.0, 131.792));
        assert_eq!(job.switches, Some((35_039, 30_366)));
        assert!(report.contains("13 % CPU efficiency"), "{report}");
        assert!(report.contains("Poor use of the cores") && report.contains("reserve 1 core instead"), "{report}");
        assert!(report.contains("46 % of its context switches were involuntary"), "{report}");
        assert!(report.contains("OMP_NUM_THREADS=1"), "{report}");
    }

    /// The tutorial's Dask worker job, killed by its scheduler at the end.
    #[test]
    fn a_worker_job_killed_at_the_end_is_explained() {
        let (job, report) = qacct_report(include_str!("../../tests/data/qacct-dask-worker.txt"));
        assert_eq!(job.exit_status, Some(137));
        assert_eq!(job.failed.as_deref(), Some("100 : assumedly after job"));
        assert!(
            report.starts_with("job 3526684 (dask-worker): exit status 137, 100 : assumedly after job"),
            "{report}"
        );
        assert!(report.contains("95 % CPU efficiency"), "{report}");
        assert!(report.contains("Exit status 137 is a kill"), "{report}");
        assert!(!report.contains("a limit nearer"), "no advice to cut what a killed job reserved: {report}");
    }

    /// Recorded from a real single-node SLURM 22.05 with slurmdbd: a job
    /// of two cores that kept one busy for 6 s and touched 200 MiB.
    #[test]
    fn a_real_sacct_record_of_a_half_busy_job() {
        let jobs = parse_sacct(include_str!("../../tests/data/sacct-slurm-22.05.txt")).expect("sacct records");
        assert_eq!(jobs.len(), 1);
        assert_eq!((jobs[0].cores, jobs[0].wall_s, jobs[0].cpu_s), (2.0, 6.0, 6.243));
        assert_eq!(jobs[0].max_memory, Some(221_056.0 * 1024.0));
        let report = report(&jobs[0]);
        assert!(report.contains("52 % CPU efficiency") && report.contains("reserve 1 core instead"), "{report}");
        assert!(report.contains("216 MiB at most") && report.contains("of 1.0 GiB reserved: 21 %"), "{report}");
    }

    /// Recorded from a real single-node Grid Engine 8.1.9: two slots, one
    /// busy for 5 s, 200 MiB touched, on a host that other work shared (so
    /// a few hundred involuntary switches, which are no verdict).
    #[test]
    fn a_real_qacct_record_of_a_half_busy_job() {
        let (job, report) = qacct_report(include_str!("../../tests/data/qacct-gridengine-8.1.9.txt"));
        assert_eq!((job.cores, job.wall_s, job.cpu_s), (2.0, 6.0, 5.297));
        assert!(report.contains("44 % CPU efficiency") && report.contains("reserve 1 core instead"), "{report}");
        assert!(report.contains("217 MiB at most") && report.contains("of 2.0 GiB reserved: 11 %"), "{report}");
        assert!(!report.contains("were involuntary"), "{report}");
    }

    /// Hand-written in SLURM's layout, for what a test job cannot easily
    /// show: memory reserved per core, and a job killed for memory.
    #[test]
    fn sacct_jobs_take_their_peak_memory_from_their_steps() {
        let jobs = parse_sacct(include_str!("../../tests/data/sacct-example.txt")).expect("sacct records");
        assert_eq!(jobs.len(), 2);
        let gib = (1u64 << 30) as f64;
        assert_eq!(jobs[0].id, "4211");
        assert_eq!(jobs[0].max_memory, Some(1_406_496.0 * 1024.0), "the largest step");
        assert_eq!(jobs[0].requested_memory, Some(24.0 * gib), "3 GiB per core");
        assert_eq!((jobs[0].wall_s, jobs[0].cpu_s, jobs[0].time_limit_s), (126.0, 131.792, Some(600.0)));
        assert!(report(&jobs[0]).contains("Poor use of the cores"));
        let oom = report(&jobs[1]);
        assert!(oom.contains("OUT_OF_MEMORY") && oom.contains("killed for going past the memory"), "{oom}");
    }

    /// Each error says its own part and keeps the rest as its source, so
    /// that the chain reads as one sentence (`shoal efficiency` prints it).
    #[test]
    fn errors_read_as_a_chain_of_causes() {
        let header = format!("{}\n", SACCT_FORMAT.replace(',', "|"));
        let err = parse_sacct(&format!("{header}7|x|COMPLETED|0:0|soon|00:01|1|1|1G||\n")).expect_err("Elapsed");
        assert_eq!(
            chains(&[err]),
            "sacct record of job 7: Elapsed: \"soon\" is not a duration ([days-]hours:minutes:seconds, or seconds)"
        );
        let err = parse_sacct(&format!("{header}7|x|COMPLETED|0:0|x-01:00:00|00:01|1|1|1G||\n")).expect_err("no days");
        let chain = chains(&[err]);
        assert!(chain.ends_with("or seconds): invalid float literal"), "{chain}");
        let err = parse_qacct("jobnumber 5\nslots 1\nru_wallclock 10s\ncpu 9s\nmaxvmem 12XB\n").expect_err("unit");
        assert_eq!(chains(&[err]), "maxvmem: \"12XB\": unknown unit \"X\" (expected B, K, M, G or T)");
        let err = parse_qacct("jobnumber 5\nslots 8x\n").expect_err("slots");
        assert_eq!(chains(&[err]), "slots Some(\"8x\") is not a number: invalid float literal");
        let refusals = vec![
            EfficiencyError::CommandFailed { command: "sacct -P -j 7".into(), stderr: "no such job".into() },
            EfficiencyError::MissingLine { key: "slots".into() }.within("qacct"),
        ];
        let err = EfficiencyError::NoRecord { job: "7".into(), refusals };
        assert_eq!(
            err.to_string(),
            "no accounting record of job 7: sacct -P -j 7 failed: no such job; qacct: the qacct record has no \"slots\" line"
        );
        assert!(std::error::Error::source(&err).is_none(), "the refusals are in the message, not again as a source");
        let err = from_accounting("12; rm -rf /").expect_err("not an id");
        assert_eq!(err.to_string(), "\"12; rm -rf /\" is not a job id");
    }
}
