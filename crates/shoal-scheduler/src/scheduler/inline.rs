//! Small results that travel through the scheduler.
//!
//! A worker sends a result of at most [`INLINE_LIMIT`] bytes along with its
//! report ([`FinishedMsg::inline`]). The scheduler passes it on to the
//! clients holding the task, in the news that it finished, and keeps it for
//! the tasks that will read it, to go out with their compute messages: a
//! chain of small tasks across workers then costs one round trip per link
//! through the scheduler, not that plus a fetch from the holder. Only
//! results that some active task reads are kept, and only while it does;
//! the others name their holders and are fetched.
//!
//! [`InlineResults`] owns what is kept and the budgets that bound it, so
//! that however many tasks read one result, the scheduler's memory and its
//! messages stay bounded.
//!
//! [`FinishedMsg::inline`]: shoal_proto::FinishedMsg::inline
//! [`INLINE_LIMIT`]: shoal_proto::INLINE_LIMIT

use rustc_hash::FxHashMap;
use shoal_proto::INLINE_MESSAGE_BUDGET;

use super::Scheduler;
use crate::ids::Slot;
use crate::task::TaskState;

/// Small results kept for their readers, by slot, and the budgets they
/// are spent against.
///
/// # The budget
///
/// - **Kept, all together:** at most [`InlineResults::KEPT_TOTAL`] bytes.
///   A result that would go past it is not kept; its readers fetch it from
///   the worker that holds it.
/// - **Per compute message:** at most [`INLINE_MESSAGE_BUDGET`] bytes of
///   its inputs' results, taken in the order the inputs come
///   ([`InlineResults::for_message`]); the rest name their holders.
/// - **Per event, to clients:** the outcomes sent to clients in one event
///   carry at most [`INLINE_MESSAGE_BUDGET`] bytes of results, counted
///   once per client a result goes to ([`InlineResults::for_clients`]);
///   past it, a client is told where the result is.
///
/// A kept result is dropped when no active task reads it any more, or when
/// its task leaves memory (see [`Scheduler::drop_unread_results`]); a
/// result nobody waits for when it arrives is never kept (a client holding
/// the task gets it with the news that it finished, kept or not).
#[derive(Default)]
pub(crate) struct InlineResults {
    /// The results, by slot, of tasks in memory that active tasks read.
    kept: FxHashMap<Slot, Box<[u8]>>,
    /// Their total size, against [`InlineResults::KEPT_TOTAL`].
    bytes: usize,
    /// Bytes of results in this event's messages to clients, against
    /// [`INLINE_MESSAGE_BUDGET`].
    to_clients: usize,
}

impl InlineResults {
    /// Bytes of small results kept at most, all together; past it, new
    /// ones are fetched from their holders.
    pub(crate) const KEPT_TOTAL: usize = 256 * 1024 * 1024;

    /// Whether none is kept: most runs keep none, and then nothing else
    /// here needs looking at.
    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.kept.is_empty()
    }

    /// Task `i`'s kept result.
    pub(crate) fn get(&self, i: Slot) -> Option<&[u8]> {
        self.kept.get(&i).map(|data| &**data)
    }

    /// Task `i`'s kept result for a compute message that has `budget`
    /// bytes of inputs' results left, which it spends; `None` if none is
    /// kept or it does not fit.
    #[inline]
    pub(crate) fn for_message(&self, i: Slot, budget: &mut usize) -> Option<&[u8]> {
        // Most runs hold none: no hashing then.
        if self.kept.is_empty() {
            return None;
        }
        self.kept.get(&i).filter(|data| data.len() <= *budget).map(|data| {
            *budget -= data.len();
            &**data
        })
    }

    /// Keeps task `i`'s result for its readers, if it fits in
    /// [`InlineResults::KEPT_TOTAL`].
    pub(crate) fn keep(&mut self, i: Slot, data: Vec<u8>) {
        if self.bytes + data.len() <= Self::KEPT_TOTAL {
            self.bytes += data.len();
            self.kept.insert(i, data.into_boxed_slice());
        }
    }

    /// Drops task `i`'s kept result, if any.
    pub(crate) fn remove(&mut self, i: Slot) {
        if let Some(data) = self.kept.remove(&i) {
            self.bytes -= data.len();
        }
    }

    /// A small result for `copies` clients' messages, while this event's
    /// messages to clients are within [`INLINE_MESSAGE_BUDGET`].
    pub(crate) fn for_clients(&mut self, data: Option<&[u8]>, copies: usize) -> Option<Vec<u8>> {
        let data = data?;
        let cost = data.len() * copies;
        if self.to_clients + cost > INLINE_MESSAGE_BUDGET {
            return None;
        }
        self.to_clients += cost;
        Some(data.to_vec())
    }

    /// The event's messages are sent: the next event's to clients start
    /// a budget of their own.
    pub(crate) fn end_event(&mut self) {
        self.to_clients = 0;
    }

    /// Drops every kept result (the tasks are all forgotten).
    pub(crate) fn clear(&mut self) {
        self.kept.clear();
        self.bytes = 0;
    }

    /// The slots of the kept results, in no particular order.
    pub(crate) fn slots(&self) -> impl Iterator<Item = Slot> + '_ {
        self.kept.keys().copied()
    }
}

impl Scheduler {
    /// After task `i` left state `old`: drops the small results kept for
    /// readers that no longer need them, its own if it left memory and its
    /// inputs' if it `stopped_reading` them and they have no reader left.
    /// Kept out of [`Scheduler::set_state`], which calls it only while some
    /// are kept: most runs keep none, and then a change of state pays one
    /// emptiness check for them.
    #[cold]
    pub(super) fn drop_unread_results(&mut self, i: Slot, old: TaskState, stopped_reading: bool) {
        if old == TaskState::Memory && self.task(i).state != TaskState::Memory {
            self.inline.remove(i);
        }
        if stopped_reading {
            for k in 0..self.task(i).deps.len() {
                let d = self.task(i).deps[k];
                if self.task(d).waiters == 0 {
                    self.inline.remove(d);
                }
            }
        }
    }
}
