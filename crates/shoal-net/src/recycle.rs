//! Receive buffers of large results (read from a peer's memory or from a
//! connection), kept for the next large fetch once nothing reads them any
//! more.
//!
//! Why: on the virtual machines shoal is measured on, faulting in fresh
//! memory costs up to ten times the copy into it. Measured on the 2-core VM,
//! a 200 MB read from a peer's memory took 18–25 ms into memory the process
//! had used before and 220 ms into fresh memory (the hypervisor backs the
//! pages one by one); on bare metal the kernel still clears every fresh page
//! first. A worker that moved one large result usually moves more of about
//! that size (iterations, shuffles, blocked linear algebra), so it keeps the
//! last buffers, as Ray's object store keeps its memory and MPI libraries
//! keep their large-message buffers.
//!
//! What is kept is bounded: at most [`KEPT_MAX`] bytes (a sixteenth of the
//! worker's memory limit, if that is less: its nanny restarts it past 95 %
//! of the limit), and no buffer longer than
//! [`KEPT_FOR`] unused ([`trim`] runs on every heartbeat). Kept buffers are
//! not results, so they do not count toward the memory limit.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use memmap2::MmapMut;

/// Bytes kept at most (unless a memory limit says less).
const KEPT_MAX: usize = 512 << 20;

/// How long an unused buffer is kept.
const KEPT_FOR: Duration = Duration::from_secs(10);

/// Fresh buffers are rounded up to this, so results a few bytes apart in
/// size fit the same buffer.
const GRAIN: usize = 64 << 10;

/// Results at least this large are read into a [`Buffer`]; smaller ones
/// into the heap, whose allocator reuses memory well at those sizes.
pub(crate) const LARGE: usize = 2 << 20;

/// The buffers this process keeps.
static POOL: Pool = Pool::new();

/// Kept buffers, oldest first, and how many bytes they may take.
struct Pool {
    kept: Mutex<Vec<Kept>>,
    limit: AtomicUsize,
}

struct Kept {
    map: MmapMut,
    since: Instant,
}

/// Lowers what is kept to a sixteenth of a worker's memory limit (workers
/// sharing a process share their buffers, so the lowest limit counts).
pub(crate) fn limit_to_memory(memory_limit: u64) {
    POOL.limit_to_memory(memory_limit);
}

/// Drops the buffers unused for longer than [`KEPT_FOR`].
pub(crate) fn trim() {
    POOL.trim_at(Instant::now());
}

impl Pool {
    const fn new() -> Pool {
        Pool { kept: Mutex::new(Vec::new()), limit: AtomicUsize::new(KEPT_MAX) }
    }

    fn limit_to_memory(&self, memory_limit: u64) {
        let share = usize::try_from(memory_limit / 16).unwrap_or(usize::MAX);
        self.limit.fetch_min(share, Ordering::Relaxed);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Kept>> {
        // A panic elsewhere while holding it leaves a valid list.
        self.kept.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn trim_at(&self, now: Instant) {
        let expired: Vec<Kept> = {
            let mut kept = self.lock();
            let fresh = kept.iter().position(|k| now.duration_since(k.since) < KEPT_FOR).unwrap_or(kept.len());
            kept.drain(..fresh).collect()
        };
        // Unmapped outside the lock: that takes milliseconds for large buffers.
        drop(expired);
    }

    /// A kept buffer for `len` bytes (at most an eighth larger than a fresh
    /// one would be), else fresh
    /// memory advised to use huge pages.
    fn take(&self, len: usize) -> std::io::Result<MmapMut> {
        let reused = {
            let mut kept = self.lock();
            let mapped = mapped_len(len);
            // A result held in a larger buffer takes more memory than the
            // worker counts for it: an eighth more at most.
            let fits = |k: &Kept| k.map.len() >= len && k.map.len() <= mapped + mapped / 8;
            let best = kept.iter().enumerate().filter(|(_, k)| fits(k)).min_by_key(|(_, k)| k.map.len());
            best.map(|(i, _)| i).map(|i| kept.remove(i).map)
        };
        if let Some(map) = reused {
            return Ok(map);
        }
        let map = MmapMut::map_anon(mapped_len(len))?;
        // Advice only: where huge pages are off, faulting is slower.
        #[cfg(target_os = "linux")]
        let _ = map.advise(memmap2::Advice::HugePage);
        Ok(map)
    }

    /// Keeps a buffer nothing reads any more, the oldest going first when
    /// they would take more than the limit.
    fn keep(&self, map: MmapMut) {
        let limit = self.limit.load(Ordering::Relaxed);
        if map.len() > limit {
            return;
        }
        let evicted: Vec<Kept> = {
            let mut kept = self.lock();
            kept.push(Kept { map, since: Instant::now() });
            let mut total: usize = kept.iter().map(|k| k.map.len()).sum();
            let mut oldest = 0;
            while total > limit {
                total -= kept[oldest].map.len();
                oldest += 1;
            }
            kept.drain(..oldest).collect()
        };
        drop(evicted);
    }
}

/// What a fresh buffer for `len` bytes maps.
fn mapped_len(len: usize) -> usize {
    len.next_multiple_of(GRAIN).max(GRAIN)
}

/// A buffer to read a large result into (see the module's documentation).
pub(crate) struct Buffer {
    map: Option<MmapMut>,
    len: usize,
    pool: &'static Pool,
}

impl Buffer {
    /// A buffer of `len` bytes; what it holds before it is written is
    /// unspecified (an earlier result's bytes, or zeros).
    ///
    /// # Errors
    /// The kernel refused to map fresh memory.
    pub(crate) fn new(len: usize) -> std::io::Result<Buffer> {
        Buffer::from_pool(&POOL, len)
    }

    fn from_pool(pool: &'static Pool, len: usize) -> std::io::Result<Buffer> {
        Ok(Buffer { map: Some(pool.take(len)?), len, pool })
    }

    /// The bytes that make the buffer, frozen: when the last clone is
    /// dropped, the memory is kept for the next buffer.
    pub(crate) fn freeze(self) -> Bytes {
        Bytes::from_owner(self)
    }
}

impl AsRef<[u8]> for Buffer {
    fn as_ref(&self) -> &[u8] {
        self.map.as_ref().map_or(&[], |m| &m[..self.len])
    }
}

impl AsMut<[u8]> for Buffer {
    fn as_mut(&mut self) -> &mut [u8] {
        self.map.as_mut().map_or(&mut [], |m| &mut m[..self.len])
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        if let Some(map) = self.map.take() {
            self.pool.keep(map);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool() -> &'static Pool {
        Box::leak(Box::new(Pool::new()))
    }

    fn kept(pool: &Pool) -> Vec<*const u8> {
        pool.lock().iter().map(|k| k.map.as_ptr()).collect()
    }

    #[test]
    fn a_dropped_buffer_is_reused_by_a_result_of_about_its_size() {
        let pool = pool();
        let len = 6 << 20;
        let mut first = Buffer::from_pool(pool, len).expect("maps");
        first.as_mut().fill(7);
        let frozen = first.freeze();
        let addr = frozen.as_ptr();
        assert_eq!(frozen.len(), len);
        assert!(frozen.iter().all(|&b| b == 7));
        let clone = frozen.clone();
        drop(frozen);
        assert!(kept(pool).is_empty(), "kept only when the last clone goes");
        drop(clone);
        assert_eq!(kept(pool), vec![addr]);

        let small = Buffer::from_pool(pool, 1 << 20).expect("maps");
        assert_ne!(small.as_ref().as_ptr(), addr, "a much smaller result maps its own");
        let again = Buffer::from_pool(pool, len - 1000).expect("maps");
        assert_eq!(again.as_ref().as_ptr(), addr, "the kept buffer is reused");
        assert!(kept(pool).is_empty(), "and is not kept twice");
        assert_eq!(again.as_ref().len(), len - 1000);
    }

    #[test]
    fn unused_buffers_expire() {
        let pool = pool();
        drop(Buffer::from_pool(pool, 3 << 20).expect("maps"));
        pool.trim_at(Instant::now());
        assert_eq!(kept(pool).len(), 1);
        pool.trim_at(Instant::now() + KEPT_FOR);
        assert!(kept(pool).is_empty());
    }

    #[test]
    fn past_the_limit_the_oldest_go_first() {
        let pool = pool();
        pool.limit_to_memory(16 * (9 << 20));
        let a = Buffer::from_pool(pool, 6 << 20).expect("maps");
        let b = Buffer::from_pool(pool, 6 << 20).expect("maps");
        let b_addr = b.as_ref().as_ptr();
        drop(a);
        drop(b);
        assert_eq!(kept(pool), vec![b_addr], "only the newest fits in 9 MiB");
        drop(Buffer::from_pool(pool, 10 << 20).expect("maps"));
        assert_eq!(kept(pool), vec![b_addr], "a buffer over the limit is not kept");
    }
}
