//! A process's resident memory, as the kernel counts it: what the nanny
//! watches from outside and a worker samples of itself.

/// The resident memory of process `pid`, in bytes, from `/proc`; `None`
/// where there is no `/proc` or the process is gone.
pub fn resident_bytes(pid: u32) -> Option<u64> {
    vm_rss(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
}

/// The `VmRSS` line of a `/proc/<pid>/status` text, in bytes.
fn vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
    let kib: u64 = line.trim().strip_suffix("kB")?.trim().parse().ok()?;
    kib.checked_mul(1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_resident_size_is_read_from_the_status_text() {
        let status = "Name:\tprog\nVmPeak:\t  9000 kB\nVmRSS:\t    1234 kB\nThreads:\t3\n";
        assert_eq!(vm_rss(status), Some(1234 * 1024));
        assert_eq!(vm_rss("Name:\tprog\n"), None);
        assert_eq!(vm_rss("VmRSS:\t  12x kB\n"), None);
        assert_eq!(vm_rss("VmRSS:\t  12 MB\n"), None);
    }
}
