//! Lists of ids that hold one id nearly always: the one inline, in a
//! four-byte field, and the rare longer lists in a map beside it.

use std::hash::Hash;

use rustc_hash::FxHashMap;
use shoal_proto::{ClientId, WorkerId};
use smallvec::SmallVec;

use crate::ids::Slot;

/// An id type with two values set apart to mark an inline field.
pub(crate) trait Marked: Copy + Eq + Hash {
    /// The list is empty.
    const NONE: Self;
    /// The list is in the map.
    const SEVERAL: Self;
}

impl Marked for WorkerId {
    const NONE: WorkerId = WorkerId(u32::MAX);
    const SEVERAL: WorkerId = WorkerId(u32::MAX - 1);
}

/// `ClientId(u32::MAX)` stands for a fire-and-forget hold (see the
/// scheduler's `FOREVER`), so the marks are the two below it.
impl Marked for ClientId {
    const NONE: ClientId = ClientId(u32::MAX - 1);
    const SEVERAL: ClientId = ClientId(u32::MAX - 2);
}

/// The lists of more than one id, by task slot.
///
/// A result is usually on one worker and a future usually held by one
/// client: an inline `IdList` of 16 bytes for each, in every record of a
/// million, would be cache lines read for nothing. The inline field holds the
/// one id, [`Marked::NONE`] or [`Marked::SEVERAL`]; with `SEVERAL` the ids
/// are here, never fewer than two.
pub(crate) struct Spilled<T> {
    lists: FxHashMap<Slot, Vec<T>>,
}

impl<T> Default for Spilled<T> {
    fn default() -> Spilled<T> {
        Spilled { lists: FxHashMap::default() }
    }
}

impl<T: Marked> Spilled<T> {
    /// The list of the task in `slot`, whose inline field is `inline`.
    pub(crate) fn get<'a>(&'a self, slot: Slot, inline: &'a T) -> &'a [T] {
        if *inline == T::NONE {
            &[]
        } else if *inline == T::SEVERAL {
            self.lists.get(&slot).map_or(&[], Vec::as_slice)
        } else {
            std::slice::from_ref(inline)
        }
    }

    pub(crate) fn push(&mut self, slot: Slot, inline: &mut T, id: T) {
        if *inline == T::NONE {
            *inline = id;
        } else if *inline == T::SEVERAL {
            self.lists.entry(slot).or_default().push(id);
        } else {
            self.lists.insert(slot, vec![*inline, id]);
            *inline = T::SEVERAL;
        }
    }

    /// Keeps the ids for which `keep` is true, in order.
    pub(crate) fn retain(&mut self, slot: Slot, inline: &mut T, mut keep: impl FnMut(&T) -> bool) {
        if *inline == T::SEVERAL {
            let Some(list) = self.lists.get_mut(&slot) else {
                *inline = T::NONE;
                return;
            };
            list.retain(|id| keep(id));
            match **list {
                [] => *inline = T::NONE,
                [one] => *inline = one,
                _ => return,
            }
            self.lists.remove(&slot);
        } else if *inline != T::NONE && !keep(inline) {
            *inline = T::NONE;
        }
    }

    /// Removes the first occurrence of `id`; whether there was one.
    pub(crate) fn remove_one(&mut self, slot: Slot, inline: &mut T, id: T) -> bool {
        let mut found = false;
        self.retain(slot, inline, |x| {
            let drop = !found && *x == id;
            found |= drop;
            !drop
        });
        found
    }

    /// Empties the list, returning its ids.
    pub(crate) fn take(&mut self, slot: Slot, inline: &mut T) -> SmallVec<[T; 2]> {
        let ids = if *inline == T::SEVERAL {
            self.lists.remove(&slot).map_or_else(SmallVec::new, SmallVec::from_vec)
        } else {
            SmallVec::from_slice(self.get(slot, inline))
        };
        *inline = T::NONE;
        ids
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[derive(Clone, Debug)]
    enum Op {
        Push(u8, u32),
        Retain(u8, u32),
        RemoveOne(u8, u32),
        Take(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u8..3, 0u32..6).prop_map(|(s, x)| Op::Push(s, x)),
            1 => (0u8..3, 1u32..4).prop_map(|(s, m)| Op::Retain(s, m)),
            2 => (0u8..3, 0u32..6).prop_map(|(s, x)| Op::RemoveOne(s, x)),
            1 => (0u8..3).prop_map(Op::Take),
        ]
    }

    proptest! {
        /// Three lists side by side behave like three `Vec`s, and the map
        /// holds exactly the lists of two or more.
        #[test]
        fn behaves_like_vecs(ops in proptest::collection::vec(op(), 0..60)) {
            let mut spilled = Spilled::<WorkerId>::default();
            let mut inline = [WorkerId::NONE; 3];
            let mut model: [Vec<WorkerId>; 3] = Default::default();
            for op in ops {
                match op {
                    Op::Push(s, x) => {
                        spilled.push(Slot(u32::from(s)), &mut inline[s as usize], WorkerId(x));
                        model[s as usize].push(WorkerId(x));
                    }
                    Op::Retain(s, m) => {
                        spilled.retain(Slot(u32::from(s)), &mut inline[s as usize], |w| w.0 % m == 0);
                        model[s as usize].retain(|w| w.0 % m == 0);
                    }
                    Op::RemoveOne(s, x) => {
                        let list = &mut model[s as usize];
                        let found = list.iter().position(|w| w.0 == x).map(|p| list.remove(p)).is_some();
                        prop_assert_eq!(spilled.remove_one(Slot(u32::from(s)), &mut inline[s as usize], WorkerId(x)), found);
                    }
                    Op::Take(s) => {
                        let taken = spilled.take(Slot(u32::from(s)), &mut inline[s as usize]);
                        prop_assert_eq!(taken.to_vec(), std::mem::take(&mut model[s as usize]));
                    }
                }
                for s in 0..3 {
                    prop_assert_eq!(spilled.get(Slot(s), &inline[s as usize]), model[s as usize].as_slice());
                }
                prop_assert_eq!(spilled.lists.len(), model.iter().filter(|l| l.len() > 1).count());
            }
        }
    }
}
