//! How idle pool threads sleep, and how work wakes them without a lost
//! wake-up.
//!
//! # The protocol
//!
//! A thread that found no work (after some rounds of yielding) goes to
//! sleep; a thread that queues work wakes a sleeper, but only if there is
//! one, because queueing is the hot path and a lock per push would cost
//! more than the task:
//!
//! ```text
//!   sleeper                              waker
//!   lock                                 push the task (a Release store)
//!   idle += 1            (SeqCst)        fence              (SeqCst)
//!   fence                (SeqCst)        if idle == 0: done (SeqCst load)
//!   if no work: wait (unlocks)           lock; notify; unlock
//!   idle -= 1
//! ```
//!
//! # Why no wake-up is lost
//!
//! The danger is the sleeper deciding there is no work while the waker
//! decides there is no sleeper. That needs the sleeper's check to miss the
//! push *and* the waker's load to miss the increment. Both sides store,
//! fence (SeqCst) and then load what the other stored: the two fences are
//! ordered in the single total order of SeqCst operations, and whichever
//! comes second sees the store that came before the first. So either the
//! waker sees `idle > 0`, or the sleeper's check sees the task (the
//! store-buffering pattern; neither side may skip its fence, since the
//! loads after a SeqCst read-modify-write are not ordered by it alone in
//! the memory model, even where the hardware happens to order them).
//!
//! When the waker sees a sleeper it takes the lock. The sleeper holds the
//! lock from before its increment until `wait` releases it, so the notify
//! comes either before the increment (then the sleeper's check, after the
//! fence, sees the task) or while it waits (then it wakes). A wake-up may
//! find a thread that is not asleep yet, or wake one for work another
//! thread takes first: the worker loop looks for work again after every
//! wake-up, so a spurious wake-up costs a look, never a task.
//!
//! The tests at the end of this file check this under `loom`, which explores every
//! interleaving and every reordering the memory model allows:
//! `RUSTFLAGS="--cfg loom" cargo test -p shoal-local --release --lib sleep`.

#[cfg(loom)]
use loom::sync::atomic::{AtomicUsize, Ordering, fence};
#[cfg(loom)]
use loom::sync::{Condvar, Mutex};
#[cfg(not(loom))]
use std::sync::atomic::{AtomicUsize, Ordering, fence};
#[cfg(not(loom))]
use std::sync::{Condvar, Mutex};

/// Where idle threads of a pool sleep.
pub(crate) struct Sleep {
    idle: AtomicUsize,
    lock: Mutex<()>,
    wake: Condvar,
}

impl Sleep {
    pub(crate) fn new() -> Sleep {
        Sleep { idle: AtomicUsize::new(0), lock: Mutex::new(()), wake: Condvar::new() }
    }

    /// Sleeps until woken, unless `keep_awake` (called once the sleep is
    /// announced) says there is work, or the pool is stopping. May return
    /// without a reason: the caller looks for work again either way.
    pub(crate) fn sleep_unless(&self, keep_awake: impl FnOnce() -> bool) {
        let guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        self.idle.fetch_add(1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        let guard = if keep_awake() { guard } else { self.wake.wait(guard).unwrap_or_else(|p| p.into_inner()) };
        self.idle.fetch_sub(1, Ordering::SeqCst);
        drop(guard);
    }

    /// After queueing `n` tasks: wakes a sleeper for one, all for more.
    pub(crate) fn wake(&self, n: usize) {
        fence(Ordering::SeqCst);
        if self.idle.load(Ordering::SeqCst) == 0 {
            return;
        }
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        if n == 1 {
            self.wake.notify_one();
        } else {
            self.wake.notify_all();
        }
    }

    /// Wakes every sleeper (the pool is stopping: its flag is set first).
    pub(crate) fn wake_all(&self) {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        self.wake.notify_all();
    }
}

#[cfg(all(test, loom))]
mod tests {
    use loom::sync::Arc;
    use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use super::Sleep;

    /// A worker thread's loop, cut to its synchronisation: take a task if
    /// one is queued, else sleep unless one is; done once it took one (or
    /// the pool stops).
    fn worker(sleep: &Sleep, queue: &AtomicUsize, stop: &AtomicBool) {
        loop {
            if stop.load(Ordering::SeqCst) {
                return;
            }
            let queued = queue.load(Ordering::Acquire);
            if queued > 0 && queue.compare_exchange(queued, queued - 1, Ordering::AcqRel, Ordering::Acquire).is_ok() {
                return;
            }
            sleep.sleep_unless(|| stop.load(Ordering::SeqCst) || queue.load(Ordering::Acquire) > 0);
        }
    }

    /// A lost wake-up leaves the worker asleep for ever: loom reports it
    /// as a deadlock.
    #[test]
    fn a_queued_task_always_reaches_a_sleeping_worker() {
        loom::model(|| {
            let sleep = Arc::new(Sleep::new());
            let queue = Arc::new(AtomicUsize::new(0));
            let stop = Arc::new(AtomicBool::new(false));
            let (s, q, st) = (sleep.clone(), queue.clone(), stop.clone());
            let thread = loom::thread::spawn(move || worker(&s, &q, &st));
            queue.fetch_add(1, Ordering::Release);
            sleep.wake(1);
            thread.join().expect("the worker ends");
        });
    }

    /// Two workers and a waker make many more interleavings: four
    /// preemptions cover every order of each sleep against the wake-up
    /// (the unbounded search takes minutes).
    #[test]
    fn two_tasks_reach_two_sleeping_workers() {
        let mut model = loom::model::Builder::new();
        model.preemption_bound = Some(4);
        model.check(|| {
            let sleep = Arc::new(Sleep::new());
            let queue = Arc::new(AtomicUsize::new(0));
            let stop = Arc::new(AtomicBool::new(false));
            let threads: Vec<_> = (0..2)
                .map(|_| {
                    let (s, q, st) = (sleep.clone(), queue.clone(), stop.clone());
                    loom::thread::spawn(move || worker(&s, &q, &st))
                })
                .collect();
            queue.fetch_add(2, Ordering::Release);
            sleep.wake(2);
            for t in threads {
                t.join().expect("each worker takes a task");
            }
        });
    }

    #[test]
    fn stopping_wakes_every_sleeper() {
        loom::model(|| {
            let sleep = Arc::new(Sleep::new());
            let queue = Arc::new(AtomicUsize::new(0));
            let stop = Arc::new(AtomicBool::new(false));
            let (s, q, st) = (sleep.clone(), queue.clone(), stop.clone());
            let thread = loom::thread::spawn(move || worker(&s, &q, &st));
            stop.store(true, Ordering::SeqCst);
            sleep.wake_all();
            thread.join().expect("the worker stops");
        });
    }
}
