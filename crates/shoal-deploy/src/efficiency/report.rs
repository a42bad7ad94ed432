//! The report of one job's [`Usage`]: its figures, then a verdict and
//! advice in words.

use std::fmt::Write as _;

use super::Usage;

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

/// The report of one job, as `shoal efficiency` prints it: a line naming
/// the job and how it ended, its figures (cores reserved and busy, CPU
/// efficiency, peak against reserved memory, run time against the limit,
/// involuntary context switches), then a verdict and advice in words, one
/// `  - ` line each. Every line ends in a newline.
///
/// # Examples
///
/// See the [module documentation](super).
pub fn report(job: &Usage) -> String {
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
