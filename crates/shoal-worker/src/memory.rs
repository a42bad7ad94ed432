//! The bytes a worker holds, as its task threads see them.
//!
//! The state machine decides when the worker pauses, but the pool runs
//! tasks it was handed earlier on its own threads: a burst of queued tasks
//! could run past the limit before the next event reaches the state
//! machine. So the gate is shared with the threads: a task about to start
//! waits here while the worker is over its pause threshold, and a result
//! counts the moment its thread makes it, before it is stored.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

use shoal_graph::{Key, KeyHashMap};

/// Stored results plus results made but not stored yet, against the pause
/// threshold.
pub struct MemoryGate {
    /// Pause above this many bytes (`u64::MAX`: no limit).
    threshold: u64,
    inner: Mutex<Held>,
    below: Condvar,
}

#[derive(Default)]
struct Held {
    stored: u64,
    made: KeyHashMap<u64>,
    made_total: u64,
}

/// A waiting task looks again this often, in case a wake-up was missed.
const RECHECK: Duration = Duration::from_millis(50);

impl MemoryGate {
    /// A gate that closes above `threshold` bytes (`u64::MAX`: never).
    pub fn new(threshold: u64) -> MemoryGate {
        MemoryGate { threshold, inner: Mutex::default(), below: Condvar::new() }
    }

    fn lock(&self) -> MutexGuard<'_, Held> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the gate can ever close: a thread that needs no gate skips
    /// it altogether.
    pub fn is_limited(&self) -> bool {
        self.threshold != u64::MAX
    }

    /// Bytes of stored results in memory (spilled ones not counted).
    pub(crate) fn stored(&self) -> u64 {
        self.lock().stored
    }

    /// Bytes held now, made results included.
    pub fn held(&self) -> u64 {
        let m = self.lock();
        m.stored + m.made_total
    }

    /// Whether the worker is over its pause threshold.
    pub fn over(&self) -> bool {
        self.held() > self.threshold
    }

    /// Waits (on a task's thread) until the worker is below its threshold.
    pub fn pass(&self) {
        let mut m = self.lock();
        while m.stored + m.made_total > self.threshold {
            m = self.below.wait_timeout(m, RECHECK).unwrap_or_else(|p| p.into_inner()).0;
        }
    }

    /// A task's thread made this result; the state machine stores it soon.
    pub fn made(&self, key: &Key, bytes: u64) {
        let mut m = self.lock();
        m.made_total += bytes;
        if let Some(old) = m.made.insert(key.clone(), bytes) {
            m.made_total = m.made_total.saturating_sub(old);
        }
    }

    /// A made result was stored or dropped.
    pub(crate) fn settle(&self, key: &Key) {
        let mut m = self.lock();
        if let Some(bytes) = m.made.remove(key) {
            m.made_total = m.made_total.saturating_sub(bytes);
            self.below.notify_all();
        }
    }

    pub(crate) fn add_stored(&self, bytes: u64) {
        self.lock().stored += bytes;
    }

    pub(crate) fn sub_stored(&self, bytes: u64) {
        let mut m = self.lock();
        m.stored = m.stored.saturating_sub(bytes);
        self.below.notify_all();
    }

    /// Nothing is held any more: waiting threads go on.
    pub(crate) fn clear(&self) {
        *self.lock() = Held::default();
        self.below.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_graph::Token;

    #[test]
    fn made_results_count_until_they_settle() {
        let gate = MemoryGate::new(100);
        let key = Key::scalar("made", Token(1));
        gate.add_stored(60);
        gate.made(&key, 50);
        assert_eq!(gate.held(), 110);
        assert!(gate.over());
        // The same result reported twice counts once.
        gate.made(&key, 50);
        assert_eq!(gate.held(), 110);
        gate.settle(&key);
        assert_eq!(gate.held(), 60);
        assert!(!gate.over());
        gate.pass();
    }

    #[test]
    fn an_unlimited_gate_never_closes() {
        let gate = MemoryGate::new(u64::MAX);
        assert!(!gate.is_limited());
        gate.add_stored(u64::MAX / 2);
        assert!(!gate.over());
    }
}
