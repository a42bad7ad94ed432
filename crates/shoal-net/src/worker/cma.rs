//! Same-host transfer by reading the holder's memory directly
//! ("cross-memory attach", `process_vm_readv`), as MPI libraries do for
//! large messages between ranks on one node.
//!
//! Why it comes before the shared-memory file: measured on the 2-core VM
//! shoal is tuned on, a 200 MB result written into a fresh `/dev/shm` file
//! costs 90–150 ms (the kernel allocates and fills 50 000 small pages) and
//! mapping it another 25 ms, while one `process_vm_readv` from the
//! holder's memory into a fresh buffer backed by transparent huge pages
//! takes about 50 ms (35 ms split between two threads; but the kernel
//! is sometimes slow to hand out that much fresh memory on a VM, up to
//! several hundred ms, which is why a worker keeps its large buffers for
//! reuse: see the `recycle` module). The holder lends the value in place:
//! a `Blob` or a vector of numbers is its own encoding (after a short
//! length prefix), so the one copy is the kernel's.
//!
//! The protocol ([`PeerRequest::Lend`](shoal_proto::PeerRequest::Lend)):
//! - the holder pins each lent value until the fetcher returns the loan or
//!   the connection closes, so the memory it named stays valid and
//!   unchanged (results are immutable);
//! - the fetcher first reads back the holder's random identity from the
//!   address given: a process id that names some other process (the
//!   fetcher may see another PID namespace) fails this check;
//! - the fetcher writes only into its own buffer, of the announced length,
//!   which is capped like a frame.
//!
//! Where the kernel refuses (Yama's `ptrace_scope` ≥ 1 when workers are
//! not parent and child, seccomp, another user), the fetcher remembers that
//! and uses the shared-memory file from then on.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use shoal_graph::Value;
use shoal_graph::remote::RemoteError;

use crate::recycle::{self, Buffer};
use shoal_worker::Payload;

/// Set when the kernel refused a read: not tried again by this process.
static DENIED: AtomicBool = AtomicBool::new(false);

/// Whether direct reads are known not to work here.
pub(crate) fn denied() -> bool {
    !cfg!(target_os = "linux") || DENIED.load(Ordering::Relaxed)
}

/// This process's identity: random, at a fixed address for its lifetime.
pub(crate) fn identity() -> &'static [u64; 2] {
    static IDENTITY: OnceLock<[u64; 2]> = OnceLock::new();
    IDENTITY.get_or_init(|| {
        use std::hash::BuildHasher;
        // `RandomState` is seeded from the OS's randomness per process.
        let random = std::collections::hash_map::RandomState::new();
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        [random.hash_one((std::process::id(), now)), random.hash_one(now.as_nanos())]
    })
}

/// A lent result's memory, kept alive (only held, never read) while the
/// loan is out.
pub(crate) enum Pinned {
    /// A value lent in place (its memory is the body of its encoding).
    Value { _held: Value },
    /// Encoded bytes.
    Bytes { _held: Bytes },
}

/// What a loan offers: the head of the encoding, the pinned memory, and
/// where the body lies (address and length).
pub(crate) struct Lendable {
    pub(crate) head: Vec<u8>,
    pub(crate) pinned: Pinned,
    pub(crate) addr: u64,
    pub(crate) len: u64,
}

/// Makes a result lendable: in place when its type allows (see
/// [`RemoteFunc::borrow_result`](shoal_graph::remote::RemoteFunc::borrow_result)),
/// else encoded once into a buffer that is lent instead.
pub(crate) fn lendable(source: Payload) -> Result<Lendable, RemoteError> {
    if let Payload::Value { value, producer } = &source
        && let Some((head, body)) = producer.borrow_result(value)
    {
        let (addr, len) = span(body);
        return Ok(Lendable { head, pinned: Pinned::Value { _held: value.clone() }, addr, len });
    }
    let bytes = source.encode()?;
    let (addr, len) = span(&bytes);
    Ok(Lendable { head: Vec::new(), pinned: Pinned::Bytes { _held: bytes }, addr, len })
}

fn span(body: &[u8]) -> (u64, u64) {
    (body.as_ptr() as u64, body.len() as u64)
}

/// Why a direct read did not happen.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    #[error("the kernel does not allow reading process {pid}'s memory: {source}")]
    Denied { pid: u32, source: std::io::Error },
    #[error("process {pid} is not the worker that lent the result")]
    WrongProcess { pid: u32 },
    #[error("a loan of {len} bytes is larger than the {max}-byte limit")]
    TooLarge { len: u64, max: usize },
    #[error("reading process {pid}'s memory failed: {source}")]
    Io { pid: u32, source: std::io::Error },
    #[error("a thread reading process {pid}'s memory panicked")]
    Panicked { pid: u32 },
}

/// What the holder said about itself and one loan.
pub(crate) struct Offer<'a> {
    pub(crate) pid: u32,
    pub(crate) identity_addr: u64,
    pub(crate) identity: [u64; 2],
    pub(crate) head: &'a [u8],
    pub(crate) addr: u64,
    pub(crate) len: u64,
}

/// Reads a lent result: its head, then its body straight from the holder's
/// memory, into one buffer (at most `max` bytes in all).
///
/// # Errors
/// See [`ReadError`]; a refusal by the kernel also makes [`denied`] true.
pub(crate) fn read(offer: &Offer<'_>, max: usize) -> Result<Bytes, ReadError> {
    let pid = offer.pid;
    let total = usize::try_from(offer.len)
        .ok()
        .and_then(|len| len.checked_add(offer.head.len()))
        .filter(|&total| total <= max)
        .ok_or(ReadError::TooLarge { len: offer.len, max })?;
    let mut identity = [0u8; 16];
    read_remote(pid, offer.identity_addr, &mut identity)?;
    let expected: Vec<u8> = offer.identity.iter().flat_map(|w| w.to_ne_bytes()).collect();
    if identity[..] != expected[..] {
        return Err(ReadError::WrongProcess { pid });
    }
    if total < recycle::LARGE {
        let mut out = vec![0; total];
        out[..offer.head.len()].copy_from_slice(offer.head);
        read_remote(pid, offer.addr, &mut out[offer.head.len()..])?;
        return Ok(Bytes::from(out));
    }
    let mut out = Buffer::new(total).map_err(|source| ReadError::Io { pid, source })?;
    let out_bytes = out.as_mut();
    out_bytes[..offer.head.len()].copy_from_slice(offer.head);
    read_parallel(pid, offer.addr, &mut out_bytes[offer.head.len()..])?;
    Ok(out.freeze())
}

/// The size of a transparent huge page on x86-64 and most aarch64 kernels.
const HUGE_PAGE: usize = 2 << 20;

/// Bytes each thread of a parallel read takes at least.
const PER_THREAD: usize = 16 << 20;

/// Fills `out` from `addr` in process `pid`, a part per core: most of the
/// time goes to the kernel clearing the fresh pages it maps in and to the
/// copy, and both scale with cores (Ray copies large objects with several
/// threads for the same reason).
fn read_parallel(pid: u32, addr: u64, out: &mut [u8]) -> Result<(), ReadError> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()).min(4);
    let threads = (out.len() / PER_THREAD).clamp(1, cores);
    if threads == 1 {
        return read_remote(pid, addr, out);
    }
    // Parts are whole huge pages long, so the threads share at most the
    // one huge page at each boundary.
    let part = out.len().div_ceil(threads).next_multiple_of(HUGE_PAGE);
    std::thread::scope(|scope| {
        let reads: Vec<_> = out
            .chunks_mut(part)
            .enumerate()
            .map(|(i, chunk)| scope.spawn(move || read_remote(pid, addr + (i * part) as u64, chunk)))
            .collect();
        reads.into_iter().try_for_each(|r| r.join().unwrap_or(Err(ReadError::Panicked { pid })))
    })
}

/// Fills `out` from `addr` in process `pid`.
#[cfg(target_os = "linux")]
fn read_remote(pid: u32, addr: u64, out: &mut [u8]) -> Result<(), ReadError> {
    let mut done = 0;
    while done < out.len() {
        let rest = &mut out[done..];
        let local = libc::iovec { iov_base: rest.as_mut_ptr().cast(), iov_len: rest.len() };
        let remote = libc::iovec { iov_base: (addr as usize + done) as *mut libc::c_void, iov_len: rest.len() };
        // SAFETY: `local` is this process's own buffer, valid for writes of
        // its length; `remote` is only read by the kernel, which checks it
        // against the other process's mappings (a bad address is EFAULT).
        let n = unsafe { libc::process_vm_readv(pid as libc::pid_t, &local, 1, &remote, 1, 0) };
        if n <= 0 {
            let source = if n == 0 {
                std::io::Error::from(std::io::ErrorKind::UnexpectedEof)
            } else {
                std::io::Error::last_os_error()
            };
            if matches!(source.raw_os_error(), Some(libc::EPERM | libc::ENOSYS)) {
                if !DENIED.swap(true, Ordering::Relaxed) {
                    tracing::info!(
                        "this worker may not read other workers' memory ({source}; Yama's ptrace_scope?): \
                         large results from workers on this host come through /dev/shm files instead"
                    );
                }
                return Err(ReadError::Denied { pid, source });
            }
            return Err(ReadError::Io { pid, source });
        }
        done += n as usize;
    }
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn read_remote(pid: u32, _addr: u64, _out: &mut [u8]) -> Result<(), ReadError> {
    Err(ReadError::Denied { pid, source: std::io::Error::from(std::io::ErrorKind::Unsupported) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer_of<'a>(head: &'a [u8], body: &[u8]) -> Offer<'a> {
        let identity = identity();
        Offer {
            pid: std::process::id(),
            identity_addr: identity.as_ptr() as u64,
            identity: *identity,
            head,
            addr: body.as_ptr() as u64,
            len: body.len() as u64,
        }
    }

    #[test]
    fn reads_head_and_body_small_and_large() {
        // Empty, small, one thread, and split between threads.
        for n in [0usize, 10, 3 << 20, 40 << 20] {
            let body: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
            let got = read(&offer_of(&[1, 2], &body), usize::MAX).expect("reads its own memory");
            assert_eq!(&got[..2], &[1, 2]);
            assert_eq!(&got[2..], &body[..]);
        }
    }

    #[test]
    fn a_wrong_identity_is_caught_before_the_body_is_read() {
        let body = vec![7u8; 100];
        let mut offer = offer_of(&[], &body);
        offer.identity[0] ^= 1;
        assert!(matches!(read(&offer, usize::MAX), Err(ReadError::WrongProcess { .. })));
    }

    #[test]
    fn an_oversized_or_unmapped_loan_is_an_error() {
        let body = vec![7u8; 100];
        let offer = offer_of(&[], &body);
        assert!(matches!(read(&offer, 50), Err(ReadError::TooLarge { len: 100, max: 50 })));
        let mut offer = offer_of(&[], &body);
        offer.addr = 8;
        assert!(matches!(read(&offer, usize::MAX), Err(ReadError::Io { .. })));
    }
}
