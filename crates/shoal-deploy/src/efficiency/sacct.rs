//! SLURM's accounting records, as `sacct --parsable2` prints them.

use super::{EfficiencyError, Usage, parse_clock};

/// The jobs in `sacct -P --format=…` output, whose first line names the
/// columns: one record per job (its steps, such as `123.batch`, add their
/// peak memory to it).
pub(super) fn parse(text: &str) -> Result<Vec<Usage>, EfficiencyError> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<&str> = lines.next().ok_or(EfficiencyError::EmptySacct)?.split('|').map(str::trim).collect();
    let column = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .ok_or_else(|| EfficiencyError::MissingColumn { column: name.to_string() })
    };
    let at = Columns {
        id: column("JobID")?,
        name: column("JobName")?,
        state: column("State")?,
        exit: column("ExitCode")?,
        elapsed: column("Elapsed")?,
        cpu: column("TotalCPU")?,
        cores: column("AllocCPUS")?,
        nodes: column("NNodes").ok(),
        tasks: column("NTasks").ok(),
        req_mem: column("ReqMem")?,
        max_rss: column("MaxRSS")?,
        limit: column("Timelimit")?,
    };
    let mut jobs: Vec<Usage> = Vec::new();
    for line in lines {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() != header.len() {
            return Err(EfficiencyError::CellCount {
                line: line.to_string(),
                cells: cells.len(),
                columns: header.len(),
            });
        }
        let id = cells[at.id];
        let rss = non_empty(cells[at.max_rss]).map(bytes).transpose().map_err(|e| e.within(format!("{id}: MaxRSS")))?;
        match id.split_once('.') {
            Some((job, _step)) => {
                let Some(usage) = jobs.iter_mut().find(|u| u.id == job) else { continue };
                if let Some(rss) = rss {
                    usage.max_memory = Some(usage.max_memory.map_or(rss, |m| m.max(rss)));
                }
                let tasks = at.tasks.and_then(|t| cells[t].parse::<u32>().ok());
                if let Some(tasks) = tasks {
                    usage.tasks = Some(usage.tasks.map_or(tasks, |t| t.max(tasks)));
                }
            }
            None => jobs.push(job(&cells, &at, rss).map_err(|e| e.within(format!("sacct record of job {id}")))?),
        }
    }
    if jobs.is_empty() {
        return Err(EfficiencyError::NoSacctJob);
    }
    Ok(jobs)
}

struct Columns {
    id: usize,
    name: usize,
    state: usize,
    exit: usize,
    elapsed: usize,
    cpu: usize,
    cores: usize,
    nodes: Option<usize>,
    tasks: Option<usize>,
    req_mem: usize,
    max_rss: usize,
    limit: usize,
}

fn job(cells: &[&str], at: &Columns, rss: Option<f64>) -> Result<Usage, EfficiencyError> {
    let cores: f64 = cells[at.cores]
        .parse()
        .map_err(|source| EfficiencyError::BadAllocCpus { text: cells[at.cores].to_string(), source })?;
    let nodes: f64 = at.nodes.and_then(|n| cells[n].parse().ok()).unwrap_or(1.0);
    let state = cells[at.state].to_string();
    Ok(Usage {
        id: cells[at.id].to_string(),
        name: cells[at.name].to_string(),
        cores,
        wall_s: parse_clock(cells[at.elapsed]).map_err(|e| e.within("Elapsed"))?,
        cpu_s: parse_clock(cells[at.cpu]).map_err(|e| e.within("TotalCPU"))?,
        max_memory: rss,
        memory_measure: "MaxRSS (peak resident memory)",
        requested_memory: non_empty(cells[at.req_mem]).map(|m| requested(m, cores, nodes)).transpose()?,
        time_limit_s: non_empty(cells[at.limit])
            .filter(|l| l.chars().next().is_some_and(|c| c.is_ascii_digit()))
            .map(parse_clock)
            .transpose()
            .map_err(|e| e.within("Timelimit"))?,
        exit_status: exit_status(cells[at.exit]),
        failed: (!state.starts_with("COMPLETED")).then_some(state),
        switches: None,
        tasks: None,
        nodes,
    })
}

/// `ExitCode` is `code:signal`: a job ended by signal `n` counts as the
/// shell's `128 + n` (137 for SIGKILL).
fn exit_status(cell: &str) -> Option<i32> {
    let (code, signal) = cell.split_once(':').unwrap_or((cell, "0"));
    let (code, signal): (i32, i32) = (code.parse().ok()?, signal.parse().ok()?);
    Some(if signal > 0 { 128 + signal } else { code })
}

fn non_empty(cell: &str) -> Option<&str> {
    (!cell.is_empty()).then_some(cell)
}

/// `ReqMem` for the whole job: `4000Mc` (per core) and `24Gn` (per node)
/// as SLURM wrote it before 21.08; plain `24G`, the job's total, since.
fn requested(text: &str, cores: f64, nodes: f64) -> Result<f64, EfficiencyError> {
    if let Some(per_core) = text.strip_suffix('c') {
        return Ok(bytes(per_core)? * cores);
    }
    if let Some(per_node) = text.strip_suffix('n') {
        return Ok(bytes(per_node)? * nodes);
    }
    bytes(text)
}

/// `13432M`, `1.5G`, `512K`, `0`: bytes, with SLURM's binary multiples.
fn bytes(text: &str) -> Result<f64, EfficiencyError> {
    let t = text.trim();
    let (number, scale) = match t.chars().last() {
        Some('K') => (&t[..t.len() - 1], 1024.0),
        Some('M') => (&t[..t.len() - 1], 1024.0 * 1024.0),
        Some('G') => (&t[..t.len() - 1], 1024.0 * 1024.0 * 1024.0),
        Some('T') => (&t[..t.len() - 1], 1024.0 * 1024.0 * 1024.0 * 1024.0),
        _ => (t, 1.0),
    };
    let value: f64 = number.parse().map_err(|source| EfficiencyError::NotMemory { text: text.to_string(), source })?;
    Ok(value * scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_requests_per_core_and_per_node() {
        let g = 1024.0 * 1024.0 * 1024.0;
        assert_eq!(requested("3Gc", 8.0, 1.0).expect("per core"), 24.0 * g);
        assert_eq!(requested("24Gn", 8.0, 2.0).expect("per node"), 48.0 * g);
        assert_eq!(requested("24G", 8.0, 2.0).expect("plain: the job's total"), 24.0 * g);
        assert!(requested("much", 1.0, 1.0).is_err());
        assert_eq!(bytes("512K").expect("K"), 512.0 * 1024.0);
        assert_eq!(bytes("0").expect("0"), 0.0);
    }

    #[test]
    fn a_job_ended_by_a_signal_counts_as_the_shell_would() {
        assert_eq!(exit_status("0:0"), Some(0));
        assert_eq!(exit_status("2:0"), Some(2));
        assert_eq!(exit_status("0:9"), Some(137));
        assert_eq!(exit_status("bad"), None);
    }

    #[test]
    fn output_without_the_needed_columns_says_how_to_get_them() {
        let err = parse("JobID|State\n1|COMPLETED\n").expect_err("columns missing").to_string();
        assert!(err.contains("no JobName column") && err.contains("--format="), "{err}");
        let err = parse("").expect_err("empty").to_string();
        assert!(err.contains("empty"), "{err}");
    }
}
