//! Helpers shared by the integration tests.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use shoal::{Client, Executor};

/// Both in-process executors, for tests that must hold on each.
pub(crate) fn clients() -> Vec<Client> {
    vec![
        Client::builder().executor(Executor::Sync).build().expect("sync client"),
        Client::builder().threads(3).build().expect("thread client"),
    ]
}

/// A gate that tasks wait on until the test opens it.
#[derive(Clone, Default)]
pub(crate) struct Gate(Arc<(Mutex<bool>, Condvar)>);

impl Gate {
    pub(crate) fn open(&self) {
        let (lock, cv) = &*self.0;
        *lock.lock().expect("gate lock") = true;
        cv.notify_all();
    }

    pub(crate) fn wait(&self) {
        let (lock, cv) = &*self.0;
        let mut open = lock.lock().expect("gate lock");
        while !*open {
            let (guard, timeout) = cv.wait_timeout(open, Duration::from_secs(30)).expect("gate lock");
            open = guard;
            assert!(!timeout.timed_out() || *open, "a test gate was never opened");
        }
    }
}

/// A flag a task sets when it starts.
#[derive(Clone, Default)]
pub(crate) struct Started(Arc<AtomicBool>);

impl Started {
    pub(crate) fn set(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub(crate) fn wait(&self) {
        for _ in 0..30_000 {
            if self.0.load(Ordering::SeqCst) {
                return;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        panic!("the task never started");
    }
}

/// Counts live instances, to check that results are freed.
#[derive(Default)]
pub(crate) struct LiveCounter {
    live: AtomicUsize,
    peak: AtomicUsize,
}

impl LiveCounter {
    pub(crate) fn live(&self) -> usize {
        self.live.load(Ordering::SeqCst)
    }

    pub(crate) fn peak(&self) -> usize {
        self.peak.load(Ordering::SeqCst)
    }
}

/// A value whose live instances are counted.
pub(crate) struct Tracked {
    pub(crate) value: u64,
    counter: Arc<LiveCounter>,
}

impl Tracked {
    pub(crate) fn new(value: u64, counter: &Arc<LiveCounter>) -> Tracked {
        let n = counter.live.fetch_add(1, Ordering::SeqCst) + 1;
        counter.peak.fetch_max(n, Ordering::SeqCst);
        Tracked { value, counter: counter.clone() }
    }
}

impl Clone for Tracked {
    fn clone(&self) -> Tracked {
        Tracked::new(self.value, &self.counter)
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.counter.live.fetch_sub(1, Ordering::SeqCst);
    }
}

shoal::task_output!(Tracked);
