//! Tasks and workers as the scheduler sees them: metadata only.

use std::sync::Arc;

use shoal_graph::Key;
use shoal_proto::{ClientId, TaskErrorMsg, WorkerId, WorkerInfo};

use crate::idlist::IdList;
use crate::ids::{FuncId, GroupId, ResourceId, Slot};
use crate::spill::Marked;

/// Where a task is.
///
/// ```text
///  submit ──▶ Waiting ──deps in memory──▶ Queued ──▶ Processing(w) ──▶ Memory
///               ▲                                       │  │             │ not wanted
///               │ needed again / data lost ◀────────────┘  │ failed      ▼
///               └──────────────────────────────────── Released       Erred
/// ```
/// Released tasks keep their spec (the lineage to recompute them); a task is
/// forgotten when no client holds it and no remaining task depends on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskState {
    /// Some dependency is not in memory yet.
    Waiting,
    /// Ready, not yet given to a worker.
    Queued,
    /// Given to this worker.
    Processing(WorkerId),
    /// The result is on one or more workers.
    Memory,
    /// Not wanted now; no result anywhere, spec kept.
    Released,
    /// Failed; will not run again.
    Erred,
}

impl TaskState {
    /// Whether the task is on its way to a result (and so needs its inputs).
    pub fn is_active(self) -> bool {
        matches!(self, TaskState::Waiting | TaskState::Queued | TaskState::Processing(_))
    }
}

/// A task's record. What few tasks have (placement constraints, retries, an
/// error, worker losses) is boxed apart: every task pays for the size of its
/// record in cache misses, and in page faults when a large graph comes in.
/// With the slot's generation and hash it is 128 bytes, two cache lines,
/// and slots are aligned to them: a record read whole touches two lines,
/// where a record with all of the below inline (168 bytes) touches three
/// or four.
///
/// To fit, what is usually short or absent lives apart:
/// - the workers holding the result are in the table's array of places
///   (one inline, several in a map beside it, see [`crate::spill`]);
/// - the clients holding it are one inline here, several in a map;
/// - arguments kept as submitted are in an array beside the records,
///   flagged by `args_kept` (most tasks' arguments are just their inputs'
///   keys, and those are not kept at all).
///
/// Lists of inputs and dependents hold up to three entries inline, which
/// covers most tasks without an allocation, and functions are numbers.
///
/// The fields are laid out by hand (`repr(C)`), in the order the hot paths
/// read them: after the slot's generation and hash (see `table::SlotEntry`), the
/// first line has what every look-up and completion reads (state, counters,
/// key, duration group, function), the second the sizes and the graph's
/// edges.
#[repr(C)]
pub(crate) struct Task {
    pub(crate) state: TaskState,
    /// Dependencies not in memory, while waiting.
    pub(crate) missing: u32,
    /// Active dependents: they will read this result.
    pub(crate) waiters: u32,
    pub(crate) key: Key,
    pub(crate) group: GroupId,
    /// Its function, by number (see `Scheduler::func_number`).
    pub(crate) func: FuncId,
    pub(crate) priority: i32,
    /// Submission number, wrapping: it orders equal priorities first come,
    /// first served, and tells a stale ready-queue entry from a live one
    /// (entries leave the queue long before four billion more tasks come).
    pub(crate) seq: u32,
    pub(crate) nbytes: u64,
    /// Tasks (not forgotten) that depend on this one.
    pub(crate) dependents: IdList<Slot>,
    /// Dependencies, each once.
    pub(crate) deps: IdList<Slot>,
    /// The client holding its future, [`Marked::NONE`] or
    /// [`Marked::SEVERAL`] (see `TaskTable::holders`).
    pub(crate) holder: ClientId,
    /// Whether its arguments are kept beside the record (see
    /// `TaskTable::args`): not when they are its dependencies' keys, one
    /// argument each, in order (the usual shape of a task graph), which
    /// `deps` says already. The array says it too, but reading it for
    /// every compute message costs 0.28 more cache misses per task
    /// (callgrind, the simulator's DAG and map-reduce).
    pub(crate) args_kept: bool,
    pub(crate) extra: Option<Box<Extra>>,
}

/// The rarely used part of a task's record.
#[derive(Default)]
pub(crate) struct Extra {
    /// Resource amounts it needs, by resource index.
    pub(crate) resources: Vec<(ResourceId, f64)>,
    /// Worker names or addresses it may run on (empty: any).
    pub(crate) workers: Vec<String>,
    pub(crate) retries_left: u32,
    /// Workers lost while running it.
    pub(crate) lost: u32,
    pub(crate) error: Option<TaskErrorMsg>,
}

impl Task {
    /// A task just submitted: released, linked to nothing, held by nobody.
    pub(crate) fn new(key: Key, func: FuncId, priority: i32, seq: u32) -> Task {
        Task {
            key,
            func,
            deps: IdList::default(),
            dependents: IdList::default(),
            state: TaskState::Released,
            missing: 0,
            waiters: 0,
            nbytes: 0,
            priority,
            seq,
            holder: ClientId::NONE,
            args_kept: false,
            group: GroupId(0),
            extra: None,
        }
    }

    /// A root task has no dependencies and no placement constraints: it is
    /// queued and handed out as workers have room, so a million of them do
    /// not all land on the first worker.
    pub(crate) fn is_root(&self) -> bool {
        self.deps.is_empty() && !self.constrained()
    }

    /// Whether it needs resources or particular workers.
    pub(crate) fn constrained(&self) -> bool {
        self.extra.as_ref().is_some_and(|e| !e.resources.is_empty() || !e.workers.is_empty())
    }

    pub(crate) fn wanted(&self) -> bool {
        self.held() || self.waiters > 0
    }

    /// Whether some client holds its future.
    pub(crate) fn held(&self) -> bool {
        self.holder != ClientId::NONE
    }

    pub(crate) fn resources(&self) -> &[(ResourceId, f64)] {
        self.extra.as_ref().map_or(&[], |e| &e.resources)
    }

    pub(crate) fn restrictions(&self) -> &[String] {
        self.extra.as_ref().map_or(&[], |e| &e.workers)
    }

    pub(crate) fn retries_left(&self) -> u32 {
        self.extra.as_ref().map_or(0, |e| e.retries_left)
    }

    pub(crate) fn error(&self) -> Option<&TaskErrorMsg> {
        self.extra.as_ref().and_then(|e| e.error.as_ref())
    }

    pub(crate) fn extra_mut(&mut self) -> &mut Extra {
        self.extra.get_or_insert_with(Box::default)
    }
}

pub(crate) struct Worker {
    pub(crate) info: WorkerInfo,
    /// Resources not used by its processing tasks, by resource index.
    pub(crate) available: Vec<f64>,
}

/// How busy a worker is and where peers reach it: what every assignment
/// and completion reads or changes, kept apart from the rest of the
/// worker's record in a dense array by worker number, so that a thousand
/// workers' worth stays in cache.
#[derive(Clone, Default)]
pub(crate) struct Busy {
    /// Estimated microseconds of work given to it and not finished.
    pub(crate) occupancy_us: u64,
    /// How many tasks it is processing (the tasks are found in the task
    /// table's places).
    pub(crate) processing: usize,
    pub(crate) threads: u64,
    /// Its data address, shared by the compute messages that name it;
    /// `None` once the worker is gone.
    pub(crate) address: Option<Arc<str>>,
    /// When it was last heard from: set by every message, so kept here
    /// rather than in the map of workers (a look-up there per message is a
    /// cache miss on a large entry).
    pub(crate) last_seen_us: u64,
}

impl Busy {
    /// Connected worker `w`'s entry (a departed worker's has no address).
    pub(crate) fn of_mut(busy: &mut [Busy], w: WorkerId) -> Option<&mut Busy> {
        busy.get_mut(w.0 as usize).filter(|b| b.address.is_some())
    }

    /// Queued work per thread, the key of the load index.
    pub(crate) fn load_key(&self) -> u64 {
        self.occupancy_us / self.threads.max(1)
    }
}
