//! Same-host transfer through shared memory: what workers on one host use
//! when they may not read each other's memory (see the `cma` module), or
//! are told to ([`SameHostTransfer::File`](crate::SameHostTransfer::File)).
//!
//! Loopback TCP moves a large result at about 2 GB/s on the machines shoal
//! is measured on: every byte is copied into the kernel and out again. Two
//! workers on one host can do better: the holder writes the encoded result
//! once into a file in `/dev/shm` (memory, not disk) and sends only its
//! name; the fetcher maps the file and decodes from the mapping, and a
//! [`Blob`](shoal_graph::Blob) argument is then the mapped memory itself.
//!
//! *Same host* means: the fetcher reached the holder's data server on a
//! loopback address, or on the address its own data server listens on
//! (workers of a scheduler on the network serve on the host's address);
//! both sides check, and a holder never shares with a peer connected from
//! another address. A wrong guess costs only the fallback: a file that is
//! not there, a memory read whose identity check fails; then TCP, which is
//! always correct.
//!
//! Files are named `shoal-<pid>-<n>` after the holder's process. They are
//! written completely before their name is sent and never changed after,
//! only removed: when the holder drops the result, when it resets or ends,
//! by `LocalCluster` after killing a worker ([`remove_files_of`]), and, for
//! a worker that crashed, by the next worker that starts on the host
//! ([`ShmFiles::new`] removes the files of processes that no longer exist).
//! A fetcher's mapping stays valid after the file is removed (the memory
//! goes when the last mapping does).

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use shoal_graph::Key;
use shoal_worker::Payload;

/// The host's shared-memory directory.
const SHM_DIR: &str = "/dev/shm";

/// What a shared file's name starts with.
const PREFIX: &str = "shoal-";

/// The shared-memory directory, if this host has one.
pub(crate) fn shm_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(SHM_DIR);
    dir.is_dir().then_some(dir)
}

/// The files one worker has shared, by key.
pub(crate) struct ShmFiles {
    dir: PathBuf,
    /// `shoal-<pid>-`: this process's files.
    own: String,
    next: u64,
    files: HashMap<Key, String>,
}

impl ShmFiles {
    /// This worker's shared files (none yet), if the host has a
    /// shared-memory directory; files left by crashed processes are removed.
    pub(crate) fn new() -> Option<ShmFiles> {
        let dir = shm_dir()?;
        remove_stale(&dir);
        Some(ShmFiles { dir, own: format!("{PREFIX}{}-", std::process::id()), next: 0, files: HashMap::new() })
    }

    /// The name of the file already holding `key`'s bytes.
    pub(crate) fn get(&self, key: &Key) -> Option<&str> {
        self.files.get(key).map(String::as_str)
    }

    /// A fresh file name and where it goes.
    pub(crate) fn reserve(&mut self) -> (String, PathBuf) {
        let name = format!("{}{}", self.own, self.next);
        self.next += 1;
        let path = self.dir.join(&name);
        (name, path)
    }

    /// Records a written file as `key`'s; if another was recorded meanwhile
    /// (two fetchers at once), the new one is removed and the old one kept.
    pub(crate) fn record(&mut self, key: Key, name: String) -> String {
        if let Some(existing) = self.files.get(&key) {
            let _ = std::fs::remove_file(self.dir.join(&name));
            return existing.clone();
        }
        self.files.insert(key, name.clone());
        name
    }

    /// Removes a file written for a key no longer held.
    pub(crate) fn discard(&self, name: &str) {
        let _ = std::fs::remove_file(self.dir.join(name));
    }

    /// Removes `key`'s file, if any.
    pub(crate) fn remove(&mut self, key: &Key) {
        if let Some(name) = self.files.remove(key) {
            let _ = std::fs::remove_file(self.dir.join(name));
        }
    }

    /// Removes every file of this worker.
    pub(crate) fn clear(&mut self) {
        for (_, name) in self.files.drain() {
            let _ = std::fs::remove_file(self.dir.join(name));
        }
    }
}

impl Drop for ShmFiles {
    fn drop(&mut self) {
        self.clear();
    }
}

/// Writes `source` to a new file at `path` (on a blocking thread: a large
/// result takes tens of milliseconds).
pub(crate) fn write(path: &Path, source: Payload) -> std::io::Result<()> {
    let written = write_file(path, source);
    if written.is_err() {
        let _ = std::fs::remove_file(path);
    }
    written
}

fn write_file(path: &Path, source: Payload) -> std::io::Result<()> {
    // `create_new`: never write into a file someone else made.
    let mut file = File::options().write(true).create_new(true).open(path)?;
    match source {
        Payload::Bytes(bytes) => file.write_all(&bytes),
        Payload::Value { value, producer } => {
            // Written, not mapped: the kernel fills tmpfs pages several times
            // faster through write(2) than page faults on a fresh mapping
            // would (measured: 200 MB in ~60 ms against ~260 ms). Bulk bytes
            // pass the buffer by in one write.
            let mut out = std::io::BufWriter::with_capacity(64 * 1024, file);
            producer.encode_result_to(&value, &mut out).map_err(std::io::Error::other)?;
            out.flush()
        }
    }
}

/// Whether `name` is a file name this protocol may use: a peer's answer is
/// not trusted to name anything else (`../etc/passwd`, an absolute path).
pub(crate) fn valid_name(name: &str) -> bool {
    name.strip_prefix(PREFIX).is_some_and(|rest| {
        !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit() || b == b'-') && name.len() < 64
    })
}

/// Maps a file a peer shared, as bytes that keep the mapping alive.
///
/// # Errors
/// When the name is not a shared file's name, or the file cannot be opened
/// or mapped (it may be gone already: the holder released it).
pub(crate) fn map(dir: &Path, name: &str) -> std::io::Result<Bytes> {
    if !valid_name(name) {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("not a shared file: {name:?}")));
    }
    let file = File::open(dir.join(name))?;
    if file.metadata()?.len() == 0 {
        return Ok(Bytes::new());
    }
    // SAFETY: the holder writes a shared file completely before sending its
    // name and never writes to or truncates it afterwards, only unlinks it,
    // which leaves this mapping valid. `populate` faults the pages in at
    // once rather than one by one during decoding.
    let map = unsafe { memmap2::MmapOptions::new().populate().map(&file)? };
    Ok(Bytes::from_owner(map))
}

/// The pid in a shared file's name.
fn pid_of(name: &str) -> Option<u32> {
    name.strip_prefix(PREFIX)?.split('-').next()?.parse().ok()
}

/// Removes shared files whose process is gone (a worker that crashed).
fn remove_stale(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().filter(|n| valid_name(n)).and_then(pid_of) else { continue };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Removes every shared file of process `pid` (one that was killed and so
/// could not remove them itself).
pub fn remove_files_of(pid: u32) {
    let Some(dir) = shm_dir() else { return };
    let Ok(entries) = std::fs::read_dir(&dir) else { return };
    let prefix = format!("{PREFIX}{pid}-");
    for entry in entries.flatten() {
        if entry.file_name().to_str().is_some_and(|n| n.starts_with(&prefix) && valid_name(n)) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_shared_file_names_are_accepted() {
        assert!(valid_name("shoal-123-0"));
        for bad in ["", "shoal-", "../shoal-1-2", "shoal-1/../../etc/passwd", "/etc/passwd", "shoal-1-x", "other-1-2"] {
            assert!(!valid_name(bad), "{bad:?}");
        }
        assert_eq!(pid_of("shoal-42-7"), Some(42));
    }

    #[test]
    fn a_bad_name_is_an_error_not_a_read() {
        let err = map(Path::new("/etc"), "passwd").expect_err("refused");
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
    }
}
