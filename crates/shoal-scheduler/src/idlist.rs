//! Short lists of ids in 16 bytes.

use std::ops::Deref;

use crate::ids::Slot;

/// A four-byte id.
pub(crate) trait Id: Copy + PartialEq {
    /// A filler for unused inline places.
    const FILL: Self;
}

impl Id for u32 {
    const FILL: u32 = 0;
}

impl Id for Slot {
    const FILL: Slot = Slot(0);
}

/// A list of ids: up to three inline, more on the heap.
///
/// A task record holds two of these (inputs and dependents), and a
/// million-task graph keeps a million records: each byte of a record is a
/// megabyte of memory, and first touches of fresh memory are the largest
/// cost of a large submission (a page fault each, measured at 3.4 ns per
/// byte on a virtual machine that hands pages out lazily). At 16 bytes
/// instead of a `SmallVec`'s 24, and with three ids inline (most tasks have
/// at most three inputs and dependents), the two lists save 16 bytes a
/// task. (Lists that hold one id nearly always are smaller still: see
/// [`crate::spill`].)
#[derive(Clone, Debug)]
pub(crate) enum IdList<T: Id> {
    Inline(u8, [T; 3]),
    // A `Vec` is 24 bytes; boxed, the list stays at 16 (the rare long lists
    // pay a second allocation).
    #[allow(clippy::box_collection)]
    Heap(Box<Vec<T>>),
}

impl<T: Id> Default for IdList<T> {
    fn default() -> IdList<T> {
        IdList::Inline(0, [T::FILL; 3])
    }
}

impl<T: Id> Deref for IdList<T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        match self {
            IdList::Inline(len, items) => &items[..*len as usize],
            IdList::Heap(items) => items,
        }
    }
}

impl<T: Id> IdList<T> {
    pub(crate) fn push(&mut self, id: T) {
        match self {
            IdList::Inline(len, items) if (*len as usize) < items.len() => {
                items[*len as usize] = id;
                *len += 1;
            }
            IdList::Inline(_, items) => {
                let mut heap = Vec::with_capacity(2 * items.len());
                heap.extend_from_slice(items);
                heap.push(id);
                *self = IdList::Heap(Box::new(heap));
            }
            IdList::Heap(items) => items.push(id),
        }
    }

    /// A copy of the ids and their number, if they are inline: sixteen
    /// bytes, where a copy of the whole list may allocate.
    pub(crate) fn inline(&self) -> Option<([T; 3], usize)> {
        match self {
            IdList::Inline(len, items) => Some((*items, *len as usize)),
            IdList::Heap(_) => None,
        }
    }

    /// Keeps the ids for which `keep` is true, in order.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&T) -> bool) {
        match self {
            IdList::Inline(len, items) => {
                let mut kept = 0;
                for i in 0..*len as usize {
                    if keep(&items[i]) {
                        items[kept] = items[i];
                        kept += 1;
                    }
                }
                *len = kept as u8;
            }
            IdList::Heap(items) => items.retain(keep),
        }
    }
}

impl<'a, T: Id> IntoIterator for &'a IdList<T> {
    type Item = &'a T;
    type IntoIter = std::slice::Iter<'a, T>;

    fn into_iter(self) -> std::slice::Iter<'a, T> {
        self.iter()
    }
}

/// The ids of a list taken by value.
pub(crate) enum IntoIter<T: Id> {
    Inline(std::iter::Take<std::array::IntoIter<T, 3>>),
    Heap(std::vec::IntoIter<T>),
}

impl<T: Id> Iterator for IntoIter<T> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        match self {
            IntoIter::Inline(ids) => ids.next(),
            IntoIter::Heap(ids) => ids.next(),
        }
    }
}

impl<T: Id> IntoIterator for IdList<T> {
    type Item = T;
    type IntoIter = IntoIter<T>;

    fn into_iter(self) -> IntoIter<T> {
        match self {
            IdList::Inline(len, items) => IntoIter::Inline(items.into_iter().take(len as usize)),
            IdList::Heap(items) => IntoIter::Heap(items.into_iter()),
        }
    }
}

impl<T: Id> FromIterator<T> for IdList<T> {
    fn from_iter<I: IntoIterator<Item = T>>(ids: I) -> IdList<T> {
        let mut list = IdList::default();
        for id in ids {
            list.push(id);
        }
        list
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn it_is_sixteen_bytes() {
        assert_eq!(std::mem::size_of::<IdList<u32>>(), 16);
    }

    #[derive(Clone, Debug)]
    enum Op {
        Push(u32),
        Retain(u32),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (0u32..8).prop_map(Op::Push),
            1 => (1u32..4).prop_map(Op::Retain),
        ]
    }

    proptest! {
        #[test]
        fn behaves_like_a_vec(ops in proptest::collection::vec(op(), 0..40)) {
            let mut list = IdList::<u32>::default();
            let mut model: Vec<u32> = Vec::new();
            for op in ops {
                match op {
                    Op::Push(x) => {
                        list.push(x);
                        model.push(x);
                    }
                    Op::Retain(m) => {
                        list.retain(|x| x % m == 0);
                        model.retain(|x| x % m == 0);
                    }
                }
                prop_assert_eq!(&*list, model.as_slice());
            }
            let collected: IdList<u32> = model.iter().copied().collect();
            prop_assert_eq!(&*collected, model.as_slice());
            prop_assert_eq!(collected.into_iter().collect::<Vec<_>>(), model);
        }
    }
}
