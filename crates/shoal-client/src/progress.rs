//! A terminal progress bar, switched on by the user (like Dask's
//! `ProgressBar`): while a [`ProgressBar`] guard lives, every `compute` on
//! this process's executor draws one; [`progress`] draws one for a set of
//! futures, on any executor, clusters included.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Instant;

use parking_lot::Mutex;
use shoal_local::Notify;

use crate::future::Future;

static ACTIVE: Mutex<Vec<Weak<BarConfig>>> = Mutex::new(Vec::new());

struct BarConfig {
    draw: bool,
    last: Mutex<Option<Arc<Tracker>>>,
}

/// Switches progress bars on for `compute` calls while it lives.
///
/// It counts the tasks of computations on the threads or sync executor,
/// as Dask's `ProgressBar` does its local schedulers'. A cluster tells a
/// client only of the tasks it holds, so there a computation prints once
/// that it cannot be counted, and says what can: [`progress`] of the
/// futures of `persist` (which works on every executor).
///
/// ```
/// use shoal_client::{delayed, Client, ProgressBar};
/// fn inc(x: i64) -> i64 { x + 1 }
/// let client = Client::threads().unwrap();
/// let bar = ProgressBar::enable();
/// let y = delayed(inc, (delayed(inc, (1,)),));
/// assert_eq!(y.compute_with(&client).unwrap(), 3);
/// assert_eq!(bar.last_counts(), Some((2, 2)));
/// ```
pub struct ProgressBar {
    config: Arc<BarConfig>,
}

impl ProgressBar {
    /// Bars on standard error: an animated bar on a terminal, one summary
    /// line per computation otherwise (logs of batch jobs).
    pub fn enable() -> ProgressBar {
        ProgressBar::register(true)
    }

    /// Counts progress without drawing anything (for tests and custom views).
    pub fn hidden() -> ProgressBar {
        ProgressBar::register(false)
    }

    fn register(draw: bool) -> ProgressBar {
        let config = Arc::new(BarConfig { draw, last: Mutex::new(None) });
        let mut active = ACTIVE.lock();
        active.retain(|w| w.strong_count() > 0);
        active.push(Arc::downgrade(&config));
        ProgressBar { config }
    }

    /// `(done, total)` tasks of the latest computation this bar watched.
    pub fn last_counts(&self) -> Option<(u64, u64)> {
        self.config.last.lock().as_ref().map(|t| (t.done.load(Ordering::Acquire), t.total))
    }
}

/// Counts finished tasks of one computation and draws them.
pub(crate) struct Tracker {
    total: u64,
    done: AtomicU64,
    bar: Option<indicatif::ProgressBar>,
    line: bool,
    started: Instant,
    /// Whether the bar has drawn its last line; drawing happens under this
    /// lock, so nothing draws after the last line, from whichever thread.
    finished: Mutex<bool>,
}

impl Notify for Tracker {
    fn done(&self, _index: usize) {
        let n = self.done.fetch_add(1, Ordering::AcqRel) + 1;
        let mut finished = self.finished.lock();
        if *finished {
            return;
        }
        if let Some(bar) = &self.bar {
            bar.set_position(n);
        }
        if n >= self.total {
            self.draw_last(&mut finished);
        }
    }
}

impl Tracker {
    /// Draws the last line, unless it is drawn already.
    fn finish(&self) {
        let mut finished = self.finished.lock();
        if !*finished {
            self.draw_last(&mut finished);
        }
    }

    fn draw_last(&self, finished: &mut bool) {
        *finished = true;
        if let Some(bar) = &self.bar {
            bar.set_position(self.total);
            bar.finish();
        } else if self.line {
            eprintln!("[{}] | 100% Completed | {} tasks in {:.2?}", "#".repeat(40), self.total, self.started.elapsed());
        }
    }
}

/// Whether a [`ProgressBar`] is switched on.
pub(crate) fn enabled() -> bool {
    ACTIVE.lock().iter().any(|w| w.strong_count() > 0)
}

/// Says once per process that a computation on a cluster is not counted,
/// and what is.
pub(crate) fn cannot_count_on_a_cluster() {
    static SAID: std::sync::Once = std::sync::Once::new();
    SAID.call_once(|| {
        eprintln!(
            "shoal: a ProgressBar counts computations on this process's executor; a cluster reports only the \
             tasks a client holds, so this computation is not drawn. Draw one with \
             shoal::progress(&client.persist(&values)?) instead"
        );
    });
}

/// A tracker for a computation of `total` tasks if any bar is switched on.
pub(crate) fn start(total: usize) -> Option<Arc<Tracker>> {
    let configs: Vec<Arc<BarConfig>> = ACTIVE.lock().iter().filter_map(Weak::upgrade).collect();
    if configs.is_empty() {
        return None;
    }
    let draw = configs.iter().any(|c| c.draw);
    let tracker = Arc::new(new_tracker(total as u64, draw));
    for c in &configs {
        *c.last.lock() = Some(tracker.clone());
    }
    if total == 0 {
        tracker.finish();
    }
    Some(tracker)
}

fn new_tracker(total: u64, draw: bool) -> Tracker {
    let terminal = draw && std::io::stderr().is_terminal();
    let bar = terminal.then(|| {
        let bar = indicatif::ProgressBar::new(total);
        let style =
            indicatif::ProgressStyle::with_template("[{bar:40}] {percent:>3}% | {pos}/{len} tasks | {elapsed_precise}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("#>-");
        bar.set_style(style);
        bar
    });
    Tracker {
        total,
        done: AtomicU64::new(0),
        bar,
        line: draw && !terminal,
        started: Instant::now(),
        finished: Mutex::new(false),
    }
}

/// Draws a progress bar on standard error until all `futures` are done
/// (Dask's `progress(futures)`), then returns how many finished without
/// error. The bar has drawn its last line when it returns, so what is
/// printed next starts on a line of its own. Futures of any executor,
/// clusters included.
///
/// ```
/// fn square(x: u64) -> u64 { x * x }
/// let client = shoal_client::Client::threads()?;
/// let futures = client.map(square, 0..100u64);
/// assert_eq!(shoal_client::progress(&futures), 100);
/// # Ok::<(), shoal_client::Error>(())
/// ```
pub fn progress<T>(futures: &[Future<T>]) -> usize {
    let tracker = Arc::new(new_tracker(futures.len() as u64, true));
    if futures.is_empty() {
        tracker.finish();
    }
    for (i, f) in futures.iter().enumerate() {
        f.handle().subscribe(tracker.clone(), i);
    }
    let finished = futures
        .iter()
        .filter(|f| {
            f.wait();
            f.status() == crate::Status::Finished
        })
        .count();
    // A cluster wakes the waiters before it tells the bar of the last one.
    tracker.finish();
    finished
}
