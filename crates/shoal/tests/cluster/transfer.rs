//! Large results moved between worker processes of one host, byte for
//! byte: read from the holder's memory, through shared-memory files (with
//! no file left behind), or over TCP.

use std::time::{Duration, Instant};

use shoal::{Blob, Client, Future, LocalCluster, SameHostTransfer, TaskOptions};

const MB: usize = 1 << 20;

/// Bytes that differ from position to position and from seed to seed.
fn pattern(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[shoal::remote]
fn make_blob(n: u64, seed: u64) -> Blob {
    Blob::from(pattern(n as usize, seed))
}

#[shoal::remote]
fn reversed(blob: Blob) -> Blob {
    Blob::from(blob.iter().rev().copied().collect::<Vec<u8>>())
}

#[shoal::remote]
fn make_floats(n: u64) -> Vec<f64> {
    (0..n).map(|i| i as f64 * 0.5 - 1e6).collect()
}

#[shoal::remote]
fn float_digest(values: Vec<f64>) -> (u64, u64) {
    let digest = values.iter().enumerate().fold(0u64, |h, (i, v)| h.rotate_left(5) ^ v.to_bits() ^ i as u64);
    (values.len() as u64, digest)
}

/// This host's shared files made by process `pid`.
fn shared_files_of(pid: u32) -> Vec<String> {
    let prefix = format!("shoal-{pid}-");
    std::fs::read_dir("/dev/shm")
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&prefix))
                .collect()
        })
        .unwrap_or_default()
}

fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn on(i: usize) -> TaskOptions {
    TaskOptions::new().workers([format!("local-{i}")])
}

/// Moves a 64 MiB blob from worker 0 to worker 1, checks what arrives, and
/// returns both futures (their results stay held).
fn move_blob(client: &Client) -> (Future<Blob>, Future<Blob>) {
    let n = 64 * MB;
    let made = client.submit_with(&on(0), make_blob, (n as u64, 7u64));
    let moved = client.submit_with(&on(1), reversed, (&made,));
    let got = moved.result().expect("the blob crossed workers");
    let mut expected = pattern(n, 7);
    expected.reverse();
    assert!(got[..] == expected[..], "the bytes changed on the way");
    (made, moved)
}

/// Moves a blob and 64 MiB of floats from worker 0 to worker 1 and checks
/// what arrives.
fn move_blob_and_floats(client: &Client) {
    drop(move_blob(client));
    // Vectors of numbers take the bulk path too.
    let floats = client.submit_with(&on(0), make_floats, (8 * MB as u64,));
    let digest = client.submit_with(&on(1), float_digest, (&floats,)).result().expect("floats crossed workers");
    let local: Vec<f64> = (0..8 * MB as u64).map(|i| i as f64 * 0.5 - 1e6).collect();
    let want = local.iter().enumerate().fold(0u64, |h, (i, v)| h.rotate_left(5) ^ v.to_bits() ^ i as u64);
    assert_eq!(digest, (8 * MB as u64, want));
}

/// Whether this kernel lets a process read a sibling's memory (Yama's
/// `ptrace_scope` 0 or no Yama): where it does not, reads fall back to files.
fn siblings_may_read_each_other() -> bool {
    std::fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope").map_or(true, |s| s.trim() == "0")
}

#[test]
fn large_results_are_read_from_the_holders_memory_or_sent_over_tcp() {
    for how in [SameHostTransfer::Read, SameHostTransfer::Tcp] {
        let cluster = LocalCluster::builder()
            .processes(true)
            .workers(2)
            .threads_per_worker(1)
            .same_host_transfer(how)
            .build()
            .expect("cluster");
        let pids = cluster.worker_pids();
        let client = cluster.client().expect("client");
        move_blob_and_floats(&client);
        if how == SameHostTransfer::Tcp || siblings_may_read_each_other() {
            for &pid in &pids {
                assert!(shared_files_of(pid).is_empty(), "{how}: worker {pid} went through a shared file");
            }
        }
    }
}

#[test]
fn large_results_move_between_worker_processes_through_shared_memory_and_leave_no_file() {
    if !std::path::Path::new("/dev/shm").is_dir() {
        eprintln!("no /dev/shm on this host: the shared-memory path is not exercised");
        return;
    }
    // A file left by a crashed worker (no process has this pid) is removed
    // by the next worker that starts.
    let stale = std::path::Path::new("/dev/shm/shoal-999999999-0");
    std::fs::write(stale, b"left by a crash").expect("can write to /dev/shm");

    let cluster = LocalCluster::builder()
        .processes(true)
        .workers(2)
        .threads_per_worker(1)
        .same_host_transfer(SameHostTransfer::File)
        .build()
        .expect("cluster");
    assert!(!stale.exists(), "a stale shared file survived a worker's start");
    let pids = cluster.worker_pids();
    let client = cluster.client().expect("client");

    let (made, moved) = move_blob(&client);
    assert!(
        pids.iter().any(|&p| !shared_files_of(p).is_empty()),
        "the transfer between workers of one host did not go through shared memory"
    );
    move_blob_and_floats(&client);

    // Released results take their files with them.
    drop((made, moved));
    eventually("the shared files of released results were not removed", || {
        pids.iter().all(|&p| shared_files_of(p).is_empty())
    });

    // And a cluster that ends (its workers killed) leaves none either.
    let again = client.submit_with(&on(0), make_blob, (MB as u64, 1u64));
    let _len = client.submit_with(&on(1), reversed, (&again,)).result().expect("moved");
    drop(client);
    drop(cluster);
    for pid in pids {
        assert!(shared_files_of(pid).is_empty(), "worker {pid} left shared files behind");
    }
}
