//! What a worker offers, written down: resources (`gpu=2,mem=4e9`), byte
//! sizes (`4GB`, `512MiB`, `4e9`), and the GPUs this machine shows.

/// Why a worker specification could not be read. Each names the text that
/// was wrong and what would be right.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum SpecError {
    /// A resource list entry is not `name=amount`.
    #[error("resource {entry:?} is not name=amount (for example gpu=2)")]
    NotNameAmount {
        /// The entry.
        entry: String,
    },
    /// An amount is not a finite number of at least zero.
    #[error("resource {name}: amount {amount:?} is not a number of at least 0")]
    BadAmount {
        /// The resource.
        name: String,
        /// The amount as written.
        amount: String,
    },
    /// A resource is named twice.
    #[error("resource {name} is given twice")]
    Duplicate {
        /// The resource.
        name: String,
    },
    /// A byte size could not be read.
    #[error("{text:?} is not a size in bytes (write 4000000000, 4e9, 4GB or 4GiB)")]
    BadBytes {
        /// The text.
        text: String,
    },
}

/// Reads a resource list: `"gpu=2,mem=4e9"` (commas or spaces between
/// entries; amounts may be byte sizes like `4GB`). An empty text is no
/// resources.
///
/// ```
/// use shoal_deploy::parse_resources;
/// assert_eq!(parse_resources("gpu=2, mem=4GB")?, vec![("gpu".to_string(), 2.0), ("mem".to_string(), 4e9)]);
/// assert!(parse_resources("gpu").is_err());
/// # Ok::<(), shoal_deploy::SpecError>(())
/// ```
///
/// # Errors
/// [`SpecError`] naming the first entry that is not `name=amount` with an
/// amount of at least zero, or a name given twice.
pub fn parse_resources(text: &str) -> Result<Vec<(String, f64)>, SpecError> {
    let mut out: Vec<(String, f64)> = Vec::new();
    for entry in text.split([',', ' ']).map(str::trim).filter(|e| !e.is_empty()) {
        let (name, amount) =
            entry.split_once('=').ok_or_else(|| SpecError::NotNameAmount { entry: entry.to_string() })?;
        let (name, amount) = (name.trim(), amount.trim());
        if name.is_empty() {
            return Err(SpecError::NotNameAmount { entry: entry.to_string() });
        }
        let bad = || SpecError::BadAmount { name: name.to_string(), amount: amount.to_string() };
        let value = match amount.parse::<f64>() {
            Ok(v) => v,
            Err(_) => parse_bytes(amount).map_err(|_| bad())? as f64,
        };
        if !value.is_finite() || value < 0.0 {
            return Err(bad());
        }
        if out.iter().any(|(n, _)| n == name) {
            return Err(SpecError::Duplicate { name: name.to_string() });
        }
        out.push((name.to_string(), value));
    }
    Ok(out)
}

/// Writes resources as [`parse_resources`] reads them.
///
/// ```
/// use shoal_deploy::format_resources;
/// assert_eq!(format_resources(&[("gpu".into(), 2.0), ("mem".into(), 4e9)]), "gpu=2,mem=4000000000");
/// ```
pub fn format_resources(resources: &[(String, f64)]) -> String {
    resources.iter().map(|(n, a)| format!("{n}={a}")).collect::<Vec<_>>().join(",")
}

/// Reads a byte size: a plain or scientific number (`4000000000`, `4e9`)
/// or a number with a unit, decimal (`kB`, `MB`, `GB`, `TB`; `k`, `M`, `G`,
/// `T` alike) or binary (`KiB`, `MiB`, `GiB`, `TiB`), case-insensitive, as
/// Dask's `memory_limit` accepts them.
///
/// ```
/// use shoal_deploy::parse_bytes;
/// assert_eq!(parse_bytes("4GB")?, 4_000_000_000);
/// assert_eq!(parse_bytes("1.5 GiB")?, 1_610_612_736);
/// assert_eq!(parse_bytes("4e9")?, 4_000_000_000);
/// assert!(parse_bytes("lots").is_err());
/// # Ok::<(), shoal_deploy::SpecError>(())
/// ```
///
/// # Errors
/// [`SpecError::BadBytes`] when the text is none of these, or negative.
pub fn parse_bytes(text: &str) -> Result<u64, SpecError> {
    let bad = || SpecError::BadBytes { text: text.to_string() };
    let trimmed = text.trim();
    let split = trimmed.find(|c: char| c.is_ascii_alphabetic() && c != 'e' && c != 'E').unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let number: f64 = number.trim().parse().map_err(|_| bad())?;
    let scale: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "t" | "tb" => 1e12,
        "ki" | "kib" => 1024.0,
        "mi" | "mib" => 1024.0 * 1024.0,
        "gi" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "ti" | "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return Err(bad()),
    };
    let bytes = number * scale;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(bad());
    }
    Ok(bytes.round() as u64)
}

/// How many GPUs are visible, from the value of `CUDA_VISIBLE_DEVICES` if
/// it is set (a comma-separated list; empty, `-1` or `NoDevFiles` mean
/// none), else from the output of `nvidia-smi -L` (one `GPU n: ...` line
/// each); `None` when neither says anything.
///
/// ```
/// use shoal_deploy::gpus_from;
/// assert_eq!(gpus_from(Some("0,1"), None), Some(2));
/// assert_eq!(gpus_from(Some("-1"), Some("GPU 0: A100")), Some(0), "the variable wins");
/// assert_eq!(gpus_from(None, Some("GPU 0: A100 (UUID: x)\nGPU 1: A100 (UUID: y)\n")), Some(2));
/// assert_eq!(gpus_from(None, None), None);
/// ```
pub fn gpus_from(cuda_visible_devices: Option<&str>, nvidia_smi_list: Option<&str>) -> Option<u32> {
    if let Some(visible) = cuda_visible_devices {
        let visible = visible.trim();
        if visible.is_empty() || visible == "NoDevFiles" || visible.starts_with('-') {
            return Some(0);
        }
        return Some(visible.split(',').filter(|d| !d.trim().is_empty()).count() as u32);
    }
    let listed = nvidia_smi_list?.lines().filter(|l| l.trim_start().starts_with("GPU ")).count();
    Some(listed as u32)
}

/// The GPUs of this machine as a worker sees them: `CUDA_VISIBLE_DEVICES`,
/// else `nvidia-smi -L` if that program runs; 0 when neither is there.
///
/// ```
/// let gpus = shoal_deploy::detect_gpus();
/// println!("this machine shows {gpus} GPUs");
/// ```
pub fn detect_gpus() -> u32 {
    let visible = std::env::var("CUDA_VISIBLE_DEVICES").ok();
    let listed = if visible.is_none() {
        std::process::Command::new("nvidia-smi")
            .arg("-L")
            .stderr(std::process::Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok())
    } else {
        None
    };
    gpus_from(visible.as_deref(), listed.as_deref()).unwrap_or(0)
}

/// The CPUs a batch system granted this job (or task), from the variables
/// it sets, looked up in `var`: SLURM's `SLURM_CPUS_PER_TASK`, Grid
/// Engine's `NSLOTS`, PBS's `NCPUS`, LSF's `LSB_DJOB_NUMPROC`; `None` when
/// none is set to a positive number.
///
/// ```
/// use shoal_deploy::cpus_granted;
/// let env = |name: &str| (name == "NSLOTS").then(|| "8".to_string());
/// assert_eq!(cpus_granted(env), Some(8));
/// assert_eq!(cpus_granted(|_| None), None);
/// ```
pub fn cpus_granted(var: impl Fn(&str) -> Option<String>) -> Option<usize> {
    ["SLURM_CPUS_PER_TASK", "NSLOTS", "NCPUS", "LSB_DJOB_NUMPROC"]
        .into_iter()
        .find_map(|name| var(name)?.trim().parse::<usize>().ok().filter(|&n| n > 0))
}

/// The CPUs a worker here may use: what the batch system granted, else
/// what this process may run on (its CPU affinity and its cgroup's quota,
/// as the standard library counts them), at least 1.
///
/// ```
/// assert!(shoal_deploy::detect_cpus() >= 1);
/// ```
pub fn detect_cpus() -> usize {
    cpus_granted(|name| std::env::var(name).ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get))
}

/// A worker's resources: those declared (a resource list, if any), plus
/// `gpu=<n>` for the GPUs detected here unless `gpu` is declared. Entries
/// of amount zero are dropped (`gpu=0` declines detected GPUs).
///
/// ```
/// use shoal_deploy::worker_resources;
/// assert_eq!(worker_resources(Some("gpu=0,mem=4GB"))?, vec![("mem".to_string(), 4e9)]);
/// let here = worker_resources(None)?; // the GPUs this machine shows, if any
/// assert!(here.iter().all(|(name, _)| name == "gpu"));
/// # Ok::<(), shoal_deploy::SpecError>(())
/// ```
///
/// # Errors
/// As [`parse_resources`].
pub fn worker_resources(declared: Option<&str>) -> Result<Vec<(String, f64)>, SpecError> {
    let mut resources = match declared {
        Some(text) => parse_resources(text)?,
        None => Vec::new(),
    };
    if !resources.iter().any(|(n, _)| n == "gpu") {
        let gpus = detect_gpus();
        if gpus > 0 {
            resources.push(("gpu".to_string(), f64::from(gpus)));
        }
    }
    resources.retain(|(_, a)| *a > 0.0);
    Ok(resources)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_lists_read_and_write_back() {
        let r = parse_resources("gpu=2,mem=4e9 fpga=0.5").expect("valid");
        assert_eq!(r, vec![("gpu".into(), 2.0), ("mem".into(), 4e9), ("fpga".into(), 0.5)]);
        assert_eq!(parse_resources(&format_resources(&r)), Ok(r));
        assert_eq!(parse_resources(""), Ok(vec![]));
    }

    #[test]
    fn bad_resource_lists_name_the_entry() {
        assert_eq!(parse_resources("gpu=2,mem"), Err(SpecError::NotNameAmount { entry: "mem".into() }));
        assert_eq!(parse_resources("=2"), Err(SpecError::NotNameAmount { entry: "=2".into() }));
        let err = parse_resources("gpu=-1").expect_err("negative");
        assert_eq!(err.to_string(), "resource gpu: amount \"-1\" is not a number of at least 0");
        assert!(parse_resources("gpu=lots").is_err());
        assert!(parse_resources("gpu=NaN").is_err());
        assert_eq!(parse_resources("gpu=1,gpu=2"), Err(SpecError::Duplicate { name: "gpu".into() }));
    }

    #[test]
    fn byte_sizes() {
        assert_eq!(parse_bytes("512"), Ok(512));
        assert_eq!(parse_bytes("2kB"), Ok(2000));
        assert_eq!(parse_bytes("2 KiB"), Ok(2048));
        assert_eq!(parse_bytes("3M"), Ok(3_000_000));
        assert_eq!(parse_bytes("1e3 MB"), Ok(1_000_000_000));
        assert!(parse_bytes("-5GB").is_err());
        assert!(parse_bytes("5XB").is_err());
        assert!(parse_bytes("").is_err());
    }

    #[test]
    fn gpu_counts() {
        assert_eq!(gpus_from(Some(""), None), Some(0));
        assert_eq!(gpus_from(Some("NoDevFiles"), None), Some(0));
        assert_eq!(gpus_from(Some("GPU-5b8f,GPU-1a2b,GPU-9c9c"), None), Some(3));
        assert_eq!(gpus_from(None, Some("No devices found.\n")), Some(0));
    }
}
