//! The scheduler's own numbers: positions in its arrays, one type for each
//! array, so that a group is never taken for a function or a slot.
//!
//! Each is a `u32` in a `#[repr(transparent)]` wrapper: the same size,
//! layout and code as the bare integer (a task record holds several), with
//! a compact [`Display`](std::fmt::Display) like the protocol's ids
//! (`slot-12`). None crosses the wire: workers and clients know tasks by
//! [`TaskId`] and key.

use shoal_proto::TaskId;

/// Defines an index newtype: its doc comment, name and display prefix.
macro_rules! index {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(transparent)]
        pub(crate) struct $name(pub(crate) u32);

        impl $name {
            /// The position in the array it numbers.
            #[inline]
            pub(crate) fn index(self) -> usize {
                self.0 as usize
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, concat!($prefix, "-{}"), self.0)
            }
        }
    };
}

index! {
    /// A task's place in the task table: what the scheduler knows a task
    /// by inside, so that following an input, a dependent or a worker's
    /// report is an array access. A slot is reused once its task is
    /// forgotten; the [`TaskId`] a worker is given pairs it with the
    /// slot's generation, so a stale report names no other task.
    Slot, "slot"
}

impl Slot {
    /// The slot a task id names.
    #[inline]
    pub(crate) fn of(id: TaskId) -> Slot {
        Slot(id.slot())
    }
}

index! {
    /// A task group (tasks of one key prefix): the unit durations are
    /// learned by, numbered in the order groups first appear.
    GroupId, "group"
}

index! {
    /// A function, by name: its position in the scheduler's list of
    /// function names, so that a task record holds four bytes and no
    /// reference count.
    FuncId, "func"
}

index! {
    /// A resource (`GPU`, `MEMORY`, …), by name: its position in the
    /// scheduler's list of resource names and in each worker's amounts.
    ResourceId, "resource"
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ids cost what a bare `u32` costs, and display compactly.
    #[test]
    fn ids_are_four_bytes_and_display_compactly() {
        assert_eq!(std::mem::size_of::<Option<GroupId>>(), std::mem::size_of::<Option<u32>>());
        assert_eq!(std::mem::size_of::<FuncId>(), 4);
        assert_eq!(std::mem::size_of::<Slot>(), 4);
        assert_eq!(Slot(12).to_string(), "slot-12");
        assert_eq!(GroupId(3).to_string(), "group-3");
        assert_eq!(FuncId(0).to_string(), "func-0");
        assert_eq!(ResourceId(7).to_string(), "resource-7");
    }
}
