//! Grid Engine's accounting records, as `qacct -j JOB` prints them.

use super::{EfficiencyError, Usage, parse_clock};

/// The records in `qacct -j` output (one per job or array task; records
/// are separated by lines of `=`).
pub(super) fn parse(text: &str) -> Result<Vec<Usage>, EfficiencyError> {
    let mut records = Vec::new();
    let mut fields: Vec<(&str, &str)> = Vec::new();
    for line in text.lines() {
        if line.trim_start().starts_with("==") {
            if !fields.is_empty() {
                records.push(record(&fields)?);
                fields.clear();
            }
            continue;
        }
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let (key, value) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        fields.push((key, value.trim()));
    }
    if !fields.is_empty() {
        records.push(record(&fields)?);
    }
    if records.is_empty() {
        return Err(EfficiencyError::NoQacctRecord);
    }
    Ok(records)
}

fn record(fields: &[(&str, &str)]) -> Result<Usage, EfficiencyError> {
    let get = |key: &str| fields.iter().find(|(k, _)| *k == key).map(|(_, v)| *v);
    let need = |key: &str| get(key).ok_or_else(|| EfficiencyError::MissingLine { key: key.to_string() });
    let id = need("jobnumber")?.to_string();
    let task = get("taskid").filter(|t| *t != "undefined");
    let slots = need("slots")?;
    let cores: f64 = slots.parse().map_err(|source| EfficiencyError::BadSlots { text: slots.to_string(), source })?;
    let wall_s = seconds(need("ru_wallclock")?).map_err(|e| e.within("ru_wallclock"))?;
    let cpu_s = seconds(need("cpu")?).map_err(|e| e.within("cpu"))?;
    let category = get("category").unwrap_or("");
    let requests = resource_requests(category);
    // INFINITY (no limit) and anything else that is not an amount: no request.
    let request = |key: &str| requests.iter().find(|(k, _)| *k == key).map(|(_, v)| *v);
    let per_slot_memory = request("h_vmem").and_then(|v| bytes(v).ok());
    let time_limit_s = request("h_rt").and_then(|v| parse_clock(v).ok());
    let exit_status: Option<i32> =
        get("exit_status").and_then(|s| s.split_whitespace().next()).and_then(|s| s.parse().ok());
    let failed = get("failed").map(|f| f.split_whitespace().collect::<Vec<_>>().join(" "));
    Ok(Usage {
        id: task.map_or_else(|| id.clone(), |t| format!("{id}.{t}")),
        name: get("jobname").unwrap_or("").to_string(),
        cores,
        wall_s,
        cpu_s,
        max_memory: get("maxvmem").map(bytes).transpose().map_err(|e| e.within("maxvmem"))?,
        memory_measure: "maxvmem (peak virtual memory)",
        requested_memory: per_slot_memory.map(|m| m * cores),
        time_limit_s,
        exit_status,
        failed: failed.filter(|f| !f.starts_with('0')),
        switches: match (get("ru_nvcsw"), get("ru_nivcsw")) {
            (Some(v), Some(i)) => v.parse().ok().zip(i.parse().ok()),
            _ => None,
        },
        tasks: None,
        nodes: 1.0,
    })
}

/// `-l` requests in a `category` line (`-l h_rt=600,h_vmem=24G -pe smp 8`).
fn resource_requests(category: &str) -> Vec<(&str, &str)> {
    let words: Vec<&str> = category.split_whitespace().collect();
    words
        .windows(2)
        .filter(|w| w[0] == "-l")
        .flat_map(|w| w[1].split(','))
        .filter_map(|kv| kv.split_once('='))
        .collect()
}

/// `766s`, `0.040s`, `21`: seconds.
fn seconds(text: &str) -> Result<f64, EfficiencyError> {
    let number = text.trim().trim_end_matches('s');
    number.parse().map_err(|source| EfficiencyError::NotSeconds { text: text.to_string(), source })
}

/// `12.973GB`, `4.879KB`, `24G`, `24g`, `0.000B`: bytes. As Grid Engine
/// reads them (sge_types), capital multiples are binary (K = 1024) and
/// small ones decimal (k = 1000).
fn bytes(text: &str) -> Result<f64, EfficiencyError> {
    let t = text.trim();
    let split = t.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let value: f64 = number.parse().map_err(|source| EfficiencyError::NotMemory { text: text.to_string(), source })?;
    let unit = if unit.len() > 1 { unit.trim_end_matches('B') } else { unit };
    let scale: f64 = match unit {
        "" | "B" => 1.0,
        "K" => 1024.0,
        "M" => 1024.0f64.powi(2),
        "G" => 1024.0f64.powi(3),
        "T" => 1024.0f64.powi(4),
        "k" => 1e3,
        "m" => 1e6,
        "g" => 1e9,
        "t" => 1e12,
        _ => return Err(EfficiencyError::UnknownUnit { text: text.to_string(), unit: unit.to_string() }),
    };
    Ok(value * scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_and_durations_read_as_grid_engine_writes_them() {
        assert_eq!(bytes("24G").expect("24G"), 24.0 * (1u64 << 30) as f64);
        assert_eq!(bytes("24g").expect("24g"), 24e9);
        assert_eq!(bytes("4.879KB").expect("KB"), 4.879 * 1024.0);
        assert_eq!(bytes("0.000B").expect("B"), 0.0);
        assert!(bytes("12XB").is_err() && bytes("lots").is_err());
        assert_eq!(seconds("766s").expect("766s"), 766.0);
        assert_eq!(seconds("0.040s").expect("0.040s"), 0.04);
        assert!(seconds("soon").is_err());
    }

    #[test]
    fn requests_come_from_the_category_line() {
        let r = resource_requests("-U a,b -l disk=48G,h_rt=3600,h_vmem=48G -pe smp 1");
        assert_eq!(r, [("disk", "48G"), ("h_rt", "3600"), ("h_vmem", "48G")]);
        assert!(resource_requests("").is_empty());
    }

    #[test]
    fn unlimited_requests_are_no_requests() {
        let record = "jobnumber 5\nslots 1\nru_wallclock 10s\ncpu 9s\ncategory -l h_rt=INFINITY,h_vmem=INFINITY\n";
        let jobs = parse(record).expect("a record");
        assert_eq!((jobs[0].time_limit_s, jobs[0].requested_memory), (None, None));
    }

    #[test]
    fn a_record_without_its_key_lines_is_an_error_naming_them() {
        let err = parse("jobnumber 1\nslots 2\n").expect_err("no ru_wallclock").to_string();
        assert!(err.contains("ru_wallclock"), "{err}");
        let err = parse("\n\n").expect_err("nothing").to_string();
        assert!(err.contains("no accounting record"), "{err}");
    }
}
