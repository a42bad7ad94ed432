//! Ready tasks waiting for a worker with room.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};

use crate::ids::Slot;

/// A queued task: its submission number and its slot. The number also tells
/// a stale entry (the task left the queue, its slot went to another task)
/// from a live one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Ready {
    pub(crate) seq: u32,
    pub(crate) task: Slot,
}

/// Ready tasks in the order they are handed out: higher priority first,
/// then submission order.
///
/// Most tasks are queued in submission order (root tasks, the bulk of any
/// large queue, are queued as they are submitted), so each priority has a
/// FIFO that takes a task in O(1) when it comes after the last one queued,
/// and a heap for the few that do not (tasks queued again after a loss, a
/// steal or a retry). One binary heap of a million tasks would instead cost
/// a cache miss per level on every pop.
#[derive(Default)]
pub(crate) struct ReadyQueue {
    /// Never holds an empty lane.
    lanes: BTreeMap<Reverse<i32>, Lane>,
    /// The last lane emptied, kept for the next new one: a queue that
    /// empties and fills again at every burst would otherwise grow a fresh
    /// FIFO each time. Kept only while its FIFO and its heap each have room
    /// for at most [`SPARE_ROOM`] entries, so that an idle scheduler does
    /// not hold the room of its longest queue.
    spare: Option<Lane>,
}

const SPARE_ROOM: usize = 1 << 16;

#[derive(Default)]
struct Lane {
    in_order: VecDeque<Ready>,
    late: BinaryHeap<Reverse<Ready>>,
}

impl Lane {
    fn first(&self) -> Option<Ready> {
        match (self.in_order.front(), self.late.peek()) {
            (Some(a), Some(Reverse(b))) => Some(*a.min(b)),
            (a, b) => a.copied().or(b.map(|r| r.0)),
        }
    }

    fn take_first(&mut self) -> Option<Ready> {
        let late_first = match (self.in_order.front(), self.late.peek()) {
            (Some(a), Some(Reverse(b))) => b < a,
            (None, _) => true,
            (Some(_), None) => false,
        };
        if late_first { self.late.pop().map(|r| r.0) } else { self.in_order.pop_front() }
    }

    fn is_empty(&self) -> bool {
        self.in_order.is_empty() && self.late.is_empty()
    }
}

impl ReadyQueue {
    pub(crate) fn push(&mut self, priority: i32, ready: Ready) {
        let lane = self.lanes.entry(Reverse(priority)).or_insert_with(|| self.spare.take().unwrap_or_default());
        if lane.in_order.back().is_none_or(|last| *last < ready) {
            lane.in_order.push_back(ready);
        } else {
            lane.late.push(Reverse(ready));
        }
    }

    /// The next task out.
    pub(crate) fn peek(&self) -> Option<Ready> {
        self.lanes.values().next().and_then(Lane::first)
    }

    /// Takes the next task out, with its priority.
    pub(crate) fn pop(&mut self) -> Option<(i32, Ready)> {
        let mut lane = self.lanes.first_entry()?;
        let priority = lane.key().0;
        let ready = lane.get_mut().take_first();
        if lane.get().is_empty() {
            let lane = lane.remove();
            if lane.in_order.capacity() <= SPARE_ROOM && lane.late.capacity() <= SPARE_ROOM {
                self.spare = Some(lane);
            }
        }
        ready.map(|r| (priority, r))
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.lanes.is_empty()
    }

    /// The `n`th task after the next in the first lane's submission order,
    /// if there is one: the scheduler prefetches its record.
    pub(crate) fn ahead(&self, n: usize) -> Option<Ready> {
        self.lanes.values().next().and_then(|lane| lane.in_order.get(n).copied())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priority_first_then_submission_order_whatever_the_arrival_order() {
        let mut q = ReadyQueue::default();
        for (priority, seq) in [(0, 5), (0, 7), (1, 9), (0, 2), (0, 8), (-1, 1), (1, 3), (0, 6)] {
            q.push(priority, Ready { seq, task: Slot(seq) });
        }
        let mut out = Vec::new();
        while let Some(next) = q.peek() {
            let (priority, ready) = q.pop().expect("peeked");
            assert_eq!(ready, next);
            out.push((priority, ready.seq));
        }
        assert_eq!(out, vec![(1, 3), (1, 9), (0, 2), (0, 5), (0, 6), (0, 7), (0, 8), (-1, 1)]);
        assert!(q.is_empty());
    }

    /// An emptied lane is kept for the next one only while it is small:
    /// neither a long FIFO nor a long heap of tasks queued again stays
    /// behind in an idle scheduler.
    #[test]
    fn only_a_small_emptied_lane_is_kept() {
        let drain = |q: &mut ReadyQueue| while q.pop().is_some() {};
        let mut q = ReadyQueue::default();
        for seq in 0..10 {
            q.push(0, Ready { seq, task: Slot(seq) });
        }
        drain(&mut q);
        assert!(q.spare.is_some(), "a small lane is kept");
        let n = 2 * SPARE_ROOM as u32;
        // Out of order after the first: all but one go to the heap.
        q.push(0, Ready { seq: n, task: Slot(n) });
        for seq in 0..n {
            q.push(0, Ready { seq, task: Slot(seq) });
        }
        drain(&mut q);
        assert!(q.spare.is_none(), "a lane with a long heap is dropped");
        for seq in 0..n {
            q.push(0, Ready { seq, task: Slot(seq) });
        }
        drain(&mut q);
        assert!(q.spare.is_none(), "a lane with a long FIFO is dropped");
    }
}
