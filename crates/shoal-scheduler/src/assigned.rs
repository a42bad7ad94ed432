//! Tasks handed to a worker, as the network shell sees them: borrowed from
//! the scheduler's records until they are encoded.

use std::sync::Arc;

use serde::ser::{Serialize, SerializeSeq, Serializer};
use shoal_graph::Key;
use shoal_proto::{ArgsRef, ComputeMsg, ComputeRef, DepRef, INLINE_MESSAGE_BUDGET, TaskId, WorkerId};

use crate::ids::Slot;
use crate::scheduler::InlineResults;
use crate::table::TaskTable;
use crate::task::Busy;

/// The tasks of one [`ToWorker::Compute`](shoal_proto::ToWorker::Compute)
/// message, read from the scheduler's task records when encoded.
///
/// An assignment only notes the task's slot: building an owned
/// [`ComputeMsg`] per task would copy its key and dependency list and touch
/// the reference counts of its function, arguments and holders' addresses
/// (atomic operations on cold cache lines, measured as half of the cost of
/// an assignment), only for the network shell to encode and drop it. It
/// encodes to exactly the bytes of the owned message.
pub struct Assigned<'a> {
    tasks: &'a TaskTable,
    /// Function names by number.
    funcs: &'a [Arc<str>],
    busy: &'a [Busy],
    /// Small results the scheduler holds (see
    /// [`FinishedMsg::inline`](shoal_proto::FinishedMsg::inline)).
    inline: &'a InlineResults,
    /// Tasks processing on the worker (checked by the scheduler).
    slots: &'a [Slot],
}

impl<'a> Assigned<'a> {
    pub(crate) fn new(
        tasks: &'a TaskTable,
        funcs: &'a [Arc<str>],
        busy: &'a [Busy],
        inline: &'a InlineResults,
        slots: &'a [Slot],
    ) -> Assigned<'a> {
        Assigned { tasks, funcs, busy, inline, slots }
    }

    /// How many tasks.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Each task's id and key.
    pub fn ids(&self) -> impl Iterator<Item = (TaskId, &'a Key)> + '_ {
        let tasks = self.tasks;
        self.slots.iter().filter_map(move |&i| Some((tasks.id(i), &tasks.get(i)?.key)))
    }

    /// Each task's message, borrowed. Inputs' kept results come along
    /// until the message holds [`INLINE_MESSAGE_BUDGET`] bytes of them
    /// (the same ones however often it is walked).
    pub fn iter(&self) -> impl Iterator<Item = ComputeRef<'a>> + '_ {
        let mut budget = INLINE_MESSAGE_BUDGET;
        self.slots.iter().filter_map(move |&i| self.message(i, &mut budget))
    }

    /// The owned messages (for tests and recordings).
    pub fn to_msgs(&self) -> Vec<ComputeMsg> {
        self.iter().map(|m| m.to_msg()).collect()
    }

    fn message(&self, i: Slot, budget: &mut usize) -> Option<ComputeRef<'a>> {
        let (tasks, busy, inline) = (self.tasks, self.busy, self.inline);
        let t = tasks.get(i)?;
        let deps = t
            .deps
            .iter()
            .filter_map(|&d| Some((d, tasks.get(d)?)))
            .map(|(d, dep)| DepRef {
                key: &dep.key,
                holders: tasks
                    .who_has(d)
                    .iter()
                    .filter_map(|h: &WorkerId| busy.get(h.0 as usize).and_then(|b| b.address.as_deref()))
                    .collect(),
                nbytes: dep.nbytes,
                inline: inline.for_message(d, budget),
            })
            .collect();
        let func = self.funcs.get(t.func.index())?;
        let args = tasks.args(i).map_or(ArgsRef::Deps, ArgsRef::Given);
        Some(ComputeRef { id: tasks.id(i), key: &t.key, func, args, deps, priority: t.priority })
    }
}

struct Tasks<'s, 'a>(&'s Assigned<'a>);

impl Serialize for Tasks<'_, '_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.0.len()))?;
        for m in self.0.iter() {
            seq.serialize_element(&m)?;
        }
        seq.end()
    }
}

impl Serialize for Assigned<'_> {
    /// As `ToWorker::Compute(tasks)`: variant 0 of `ToWorker` (a test pins
    /// the two encodings equal).
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_newtype_variant("ToWorker", 0, "Compute", &Tasks(self))
    }
}
