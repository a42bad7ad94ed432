//! `shoal efficiency`: how well a finished batch job used what it reserved
//! (cores, memory, time), in numbers and in words, from the resource
//! manager's accounting (`sacct` on SLURM, `qacct` on Grid Engine), as the
//! seed tutorial's exercises 6 and 7 ask of a `qacct` record.

mod qacct;
mod sacct;

use std::fmt::Write as _;
use std::io::Read;
use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, bail};

#[derive(clap::Args)]
#[command(after_help = "Examples:\n  \
    shoal efficiency 3524046                  # runs sacct, or qacct where there is no sacct\n  \
    qacct -j 3524046 | shoal efficiency --qacct -\n  \
    sacct -P -j 123 --format=JobID,JobName,State,ExitCode,Elapsed,TotalCPU,AllocCPUS,NNodes,ReqMem,MaxRSS,Timelimit \
    > job.txt; shoal efficiency --sacct job.txt")]
pub(crate) struct EfficiencyArgs {
    /// The job's id: its record is read with sacct (SLURM) or, where
    /// there is no sacct, qacct -j (Grid Engine).
    job: Option<String>,
    /// Read `qacct -j JOB` output from this file (- for standard input).
    #[arg(long, conflicts_with_all = ["job", "sacct"])]
    qacct: Option<PathBuf>,
    /// Read `sacct -P --format=…` output (with its header line) from this
    /// file (- for standard input).
    #[arg(long, conflicts_with_all = ["job", "qacct"])]
    sacct: Option<PathBuf>,
}

/// What a job reserved and used.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Usage {
    pub(crate) id: String,
    pub(crate) name: String,
    /// Cores (slots) reserved.
    pub(crate) cores: f64,
    pub(crate) wall_s: f64,
    /// User and system CPU time of all its processes.
    pub(crate) cpu_s: f64,
    /// Peak memory, by `memory_measure`.
    pub(crate) max_memory: Option<f64>,
    pub(crate) memory_measure: &'static str,
    /// Memory reserved for the whole job.
    pub(crate) requested_memory: Option<f64>,
    pub(crate) time_limit_s: Option<f64>,
    pub(crate) exit_status: Option<i32>,
    /// The resource manager's word for a job that did not end normally.
    pub(crate) failed: Option<String>,
    /// Voluntary and involuntary context switches (Grid Engine).
    pub(crate) switches: Option<(u64, u64)>,
    /// The most tasks of one step (SLURM): above one, the peak memory is
    /// one task's, not the job's.
    pub(crate) tasks: Option<u32>,
    pub(crate) nodes: f64,
}

pub(crate) fn run(args: &EfficiencyArgs) -> anyhow::Result<()> {
    let jobs = match (&args.job, &args.qacct, &args.sacct) {
        (_, Some(file), _) => qacct::parse(&read_input(file)?)?,
        (_, _, Some(file)) => sacct::parse(&read_input(file)?)?,
        (Some(job), None, None) => from_accounting(job)?,
        (None, None, None) => bail!("give a job id, or saved accounting output with --qacct FILE or --sacct FILE"),
    };
    for (k, job) in jobs.iter().enumerate() {
        if k > 0 {
            println!();
        }
        print!("{}", report(job));
    }
    Ok(())
}

fn read_input(path: &PathBuf) -> anyhow::Result<String> {
    if path.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).context("cannot read standard input")?;
        return Ok(text);
    }
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

/// Reads one resource manager's accounting output.
type Parser = fn(&str) -> anyhow::Result<Vec<Usage>>;

/// Asks the resource manager of this machine for the job's record.
fn from_accounting(job: &str) -> anyhow::Result<Vec<Usage>> {
    if !job.chars().all(|c| c.is_ascii_alphanumeric() || "._-[]".contains(c)) {
        bail!("{job:?} is not a job id");
    }
    let run = |program: &str, args: &[&str]| -> anyhow::Result<Option<String>> {
        let output = match Command::new(program).args(args).output() {
            Ok(output) => output,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("cannot run {program}")),
        };
        if !output.status.success() {
            bail!("{program} {} failed: {}", args.join(" "), String::from_utf8_lossy(&output.stderr).trim());
        }
        Ok(Some(String::from_utf8_lossy(&output.stdout).into_owned()))
    };
    let format = format!("--format={}", sacct::FORMAT);
    // A machine may have both tools, or one installed without its daemons:
    // the first that knows the job answers, and every refusal is told.
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
                    Err(e) => refusals.push(format!("{program}: {e:#}")),
                }
            }
            Ok(None) => {}
            Err(e) => {
                found_a_tool = true;
                refusals.push(format!("{e:#}"));
            }
        }
    }
    if !found_a_tool {
        bail!(
            "neither sacct (SLURM) nor qacct (Grid Engine) is on this machine's PATH: run one where the job ran, \
             and pass its output with --sacct FILE or --qacct FILE"
        );
    }
    bail!("no accounting record of job {job}: {}", refusals.join("; "))
}

/// `600`, `02:06`, `00:02:06`, `1-00:00:00`, `02:11.792`, `2:00:00`:
/// seconds (the clock formats of SLURM and of Grid Engine's `h_rt`).
pub(crate) fn parse_clock(text: &str) -> anyhow::Result<f64> {
    let t = text.trim();
    let bad = || format!("{text:?} is not a duration ([days-]hours:minutes:seconds, or seconds)");
    let (days, clock) = match t.split_once('-') {
        Some((d, rest)) => (d.parse::<f64>().with_context(bad)?, rest),
        None => (0.0, t),
    };
    let parts: Vec<&str> = clock.split(':').collect();
    if parts.len() > 3 || parts.iter().any(|p| p.is_empty()) {
        bail!(bad());
    }
    let mut seconds = 0.0;
    for part in &parts {
        let value: f64 = part.parse().ok().filter(|v: &f64| v.is_finite() && *v >= 0.0).with_context(bad)?;
        seconds = seconds * 60.0 + value;
    }
    // With days, SLURM writes hours:minutes:seconds, and hours alone as `1-02`.
    if days > 0.0 && parts.len() == 1 {
        seconds *= 3600.0;
    }
    Ok(days * 86_400.0 + seconds)
}

fn gib(bytes: f64) -> String {
    let g = bytes / (1u64 << 30) as f64;
    if g >= 10.0 {
        format!("{g:.0} GiB")
    } else if g >= 1.0 {
        format!("{g:.1} GiB")
    } else {
        format!("{:.0} MiB", bytes / (1u64 << 20) as f64)
    }
}

fn duration(seconds: f64) -> String {
    if seconds < 120.0 {
        format!("{seconds:.0} s")
    } else if seconds < 7200.0 {
        format!("{:.1} min", seconds / 60.0)
    } else {
        format!("{:.1} h", seconds / 3600.0)
    }
}

fn percent(fraction: f64) -> String {
    format!("{:.0} %", fraction * 100.0)
}

/// The report of one job: figures, then a verdict and advice in words.
pub(crate) fn report(job: &Usage) -> String {
    let mut out = String::new();
    let name = if job.name.is_empty() { String::new() } else { format!(" ({})", job.name) };
    let ending = match (job.exit_status, &job.failed) {
        (Some(code), Some(failed)) => format!("exit status {code}, {failed}"),
        (Some(code), None) => format!("exit status {code}"),
        (None, Some(failed)) => failed.clone(),
        (None, None) => "ended".into(),
    };
    let _ = writeln!(out, "job {}{name}: {ending}", job.id);
    let mut advice: Vec<String> = Vec::new();

    let efficiency = (job.wall_s > 0.0 && job.cores > 0.0).then(|| job.cpu_s / (job.wall_s * job.cores));
    let busy = if job.wall_s > 0.0 { job.cpu_s / job.wall_s } else { 0.0 };
    match efficiency {
        Some(e) => {
            let _ = writeln!(
                out,
                "  cores:   {} reserved, {busy:.1} busy on average: {} CPU efficiency ({} of CPU time in {} of wall time)",
                job.cores,
                percent(e),
                duration(job.cpu_s),
                duration(job.wall_s)
            );
            // A tenth of a core over a whole number is noise, not a need.
            let needed = (busy - 0.1).ceil().max(1.0);
            if e > 1.05 {
                advice.push(format!(
                    "The job's processes used {busy:.1} cores while it reserved {}: more threads ran than it asked \
                     for, slowing whatever shares the node. Limit them (OMP_NUM_THREADS, MKL_NUM_THREADS, \
                     OPENBLAS_NUM_THREADS = 1 per worker process; shoal's workers set these) or reserve more cores.",
                    job.cores
                ));
            } else if e >= 0.75 {
                let cores =
                    if job.cores == 1.0 { "its core was".to_string() } else { format!("its {} cores were", job.cores) };
                advice.push(format!("Good use of the cores: {cores} busy {} of the time.", percent(e)));
            } else if job.cores > 1.0 {
                let how = if e < 0.4 { "Poor" } else { "Fair" };
                let what = if busy < 1.5 {
                    "so most of the time the work did not run in parallel"
                } else {
                    "so the work ran on fewer cores than it reserved for much of the time"
                };
                let fewer = if needed < job.cores {
                    format!(", or reserve {needed} core{} instead", if needed == 1.0 { "" } else { "s" })
                } else {
                    String::new()
                };
                advice.push(format!(
                    "{how} use of the cores: about {busy:.1} of the {} reserved were busy, {what}. Check that \
                     the work is parallel (a LocalCluster or `shoal worker` per core, enough tasks to keep them \
                     busy, no single task that everything waits for){fewer}.",
                    job.cores
                ));
            } else {
                advice.push(format!(
                    "The one core was busy {} of the time: the job mostly waited (for input and output, the \
                     network, or other jobs).",
                    percent(e)
                ));
            }
        }
        None => {
            let _ = writeln!(out, "  cores:   {} reserved; no wall time recorded", job.cores);
        }
    }

    let killed_for = |word: &str| job.failed.as_deref().is_some_and(|f| f.contains(word));
    // Reserving less is advice for a job that ran to its end.
    let succeeded = job.exit_status == Some(0) && job.failed.is_none();
    if let Some(max) = job.max_memory {
        let per_task = job.tasks.is_some_and(|t| t > 1) || job.nodes > 1.0;
        let measure = if per_task {
            format!("{}, of its largest task", job.memory_measure)
        } else {
            job.memory_measure.to_string()
        };
        match job.requested_memory.filter(|r| *r > 0.0) {
            Some(requested) => {
                let used = max / requested;
                let _ = writeln!(
                    out,
                    "  memory:  {} at most ({measure}) of {} reserved: {}",
                    gib(max),
                    gib(requested),
                    percent(used)
                );
                if killed_for("OUT_OF_MEMORY") {
                    advice.push(format!(
                        "It was killed for going past the memory it reserved, so it needed more than its recorded \
                         peak of {}: reserve more, or give its workers a memory limit under the reservation so \
                         that they spill results to disk instead.",
                        gib(max)
                    ));
                } else if used > 1.0 {
                    advice.push(format!(
                        "Its peak memory passed the reservation ({}): reserve more, or it may be killed next time.",
                        percent(used)
                    ));
                } else if used > 0.9 {
                    advice.push(format!(
                        "Its peak memory came within {} of the reservation: a larger input would have it killed; \
                         reserve more, or give workers a memory limit so that they spill to disk first.",
                        percent(1.0 - used)
                    ));
                } else if used < 0.25 && succeeded && !per_task {
                    advice.push(format!(
                        "It used {} of the memory it reserved: reserving about {} (its peak and a quarter more) \
                         leaves the rest to other jobs and may start it sooner.",
                        percent(used),
                        gib(max * 1.25)
                    ));
                }
            }
            None => {
                let _ = writeln!(out, "  memory:  {} at most ({measure}); no reservation recorded", gib(max));
            }
        }
    }

    if let Some(limit) = job.time_limit_s.filter(|l| *l > 0.0) {
        let used = job.wall_s / limit;
        let _ =
            writeln!(out, "  time:    {} of the {} limit: {}", duration(job.wall_s), duration(limit), percent(used));
        let suggested = (job.wall_s * 2.0).max(600.0);
        if killed_for("TIMEOUT") {
            advice.push(format!(
                "It ran out of time at {}: reserve more time, or split the work into jobs that each finish \
                 within it.",
                duration(limit)
            ));
        } else if used < 0.25 && suggested < limit * 0.75 && succeeded {
            advice.push(format!(
                "It ran for {} of its {} time limit: a limit nearer its run time (say {}) helps the resource \
                 manager start it sooner.",
                percent(used),
                duration(limit),
                duration(suggested)
            ));
        }
    }

    if let Some((voluntary, involuntary)) = job.switches {
        let total = voluntary + involuntary;
        if total > 0 {
            let share = involuntary as f64 / total as f64;
            let _ = writeln!(out, "  context switches: {involuntary} involuntary of {total} ({})", percent(share));
            // A busy machine preempts any job now and then: only a high rate
            // of involuntary switches, not their share alone, means the
            // job's own threads fought over its cores.
            let per_cpu_second = if job.cpu_s > 0.0 { involuntary as f64 / job.cpu_s } else { 0.0 };
            if share > 0.3 && per_cpu_second > 100.0 && efficiency.is_some_and(|e| e < 0.75) {
                advice.push(format!(
                    "{} of its context switches were involuntary: its threads were taken off the cores to let \
                     others run, so more threads wanted the cores than there were (several processes each \
                     starting a thread per core, BLAS threads inside parallel workers). One thread per reserved \
                     core, OMP_NUM_THREADS=1 inside worker processes, fixes that.",
                    percent(share)
                ));
            }
        }
    }

    if job.exit_status == Some(137) {
        advice.push(
            "Exit status 137 is a kill (SIGKILL). A worker job that its scheduler stops once the work is done \
             (Dask's and shoal's workers) ends this way as expected; any other job was killed for going past \
             its memory or time limit, or by hand."
                .into(),
        );
    } else if let Some(code) = job.exit_status.filter(|c| *c != 0) {
        advice.push(format!("It exited with status {code}: look at its error output first."));
    }

    for line in advice {
        let _ = writeln!(out, "  - {line}");
    }
    out
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
        let jobs = qacct::parse(text).expect("a qacct record");
        assert_eq!(jobs.len(), 1);
        let report = report(&jobs[0]);
        (jobs.into_iter().next().expect("one"), report)
    }

    /// The seed tutorial's exercise 6: eight slots, busy most of the time.
    #[test]
    fn exercise_6_used_its_cores_well_and_reserved_too_much_memory() {
        let (job, report) = qacct_report(include_str!("../tests/data/qacct-exercise6.txt"));
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
        let (job, report) = qacct_report(include_str!("../tests/data/qacct-exercise7.txt"));
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
        let (job, report) = qacct_report(include_str!("../tests/data/qacct-dask-worker.txt"));
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
        let jobs = sacct::parse(include_str!("../tests/data/sacct-slurm-22.05.txt")).expect("sacct records");
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
        let (job, report) = qacct_report(include_str!("../tests/data/qacct-gridengine-8.1.9.txt"));
        assert_eq!((job.cores, job.wall_s, job.cpu_s), (2.0, 6.0, 5.297));
        assert!(report.contains("44 % CPU efficiency") && report.contains("reserve 1 core instead"), "{report}");
        assert!(report.contains("217 MiB at most") && report.contains("of 2.0 GiB reserved: 11 %"), "{report}");
        assert!(!report.contains("were involuntary"), "{report}");
    }

    /// Hand-written in SLURM's layout, for what a test job cannot easily
    /// show: memory reserved per core, and a job killed for memory.
    #[test]
    fn sacct_jobs_take_their_peak_memory_from_their_steps() {
        let jobs = sacct::parse(include_str!("../tests/data/sacct-example.txt")).expect("sacct records");
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

    fn usage(cores: f64, wall_s: f64, cpu_s: f64) -> Usage {
        Usage {
            id: "9".into(),
            name: String::new(),
            cores,
            wall_s,
            cpu_s,
            max_memory: None,
            memory_measure: "MaxRSS",
            requested_memory: None,
            time_limit_s: None,
            exit_status: Some(0),
            failed: None,
            switches: None,
            tasks: None,
            nodes: 1.0,
        }
    }

    #[test]
    fn advice_follows_the_figures() {
        // Eight cores, 4.8 busy: parallel, but not on all of them.
        let report = report(&usage(8.0, 100.0, 480.0));
        assert!(
            report.contains("ran on fewer cores than it reserved") && report.contains("reserve 5 cores"),
            "{report}"
        );
        // Two cores, 1.5 busy: no advice to reserve the two it has.
        let report = super::report(&usage(2.0, 100.0, 150.0));
        assert!(!report.contains("reserve 2 cores"), "{report}");
        // Killed for memory with a low sampled peak: never told to reserve less.
        let gib = (1u64 << 30) as f64;
        let oom = Usage {
            max_memory: Some(gib),
            requested_memory: Some(8.0 * gib),
            exit_status: Some(0),
            failed: Some("OUT_OF_MEMORY".into()),
            time_limit_s: Some(36_000.0),
            ..usage(1.0, 100.0, 99.0)
        };
        let report = super::report(&oom);
        assert!(report.contains("killed for going past the memory"), "{report}");
        assert!(!report.contains("reserving about") && !report.contains("a limit nearer"), "{report}");
        // Over the reservation: said plainly.
        let over = Usage { max_memory: Some(1.2 * gib), requested_memory: Some(gib), ..usage(1.0, 10.0, 9.0) };
        assert!(super::report(&over).contains("passed the reservation (120 %)"));
        // Several tasks: the peak is one task's, so no advice to reserve less.
        let tasks = Usage {
            max_memory: Some(gib),
            requested_memory: Some(16.0 * gib),
            tasks: Some(8),
            ..usage(8.0, 10.0, 79.0)
        };
        let report = super::report(&tasks);
        assert!(report.contains("of its largest task") && !report.contains("reserving about"), "{report}");
    }

    #[test]
    fn a_job_with_more_cpu_time_than_cores_is_told_it_oversubscribed() {
        let job = usage(2.0, 100.0, 390.0);
        let report = report(&job);
        assert!(report.contains("195 % CPU efficiency") && report.contains("more threads ran"), "{report}");
    }
}
