//! A vector in fixed-size segments: it grows without moving what it holds.

use std::ops::{Index, IndexMut};

const SEGMENT_BITS: u32 = 14;
/// Elements per segment: a few megabytes of task records.
const SEGMENT: usize = 1 << SEGMENT_BITS;
const OFFSET_MASK: usize = SEGMENT - 1;

/// A growable array that never moves its elements.
///
/// A `Vec` of a million task records doubles twenty times on its way there,
/// each time copying everything into freshly allocated memory: in a fresh
/// process every copied page is first zeroed by the kernel, and in profiles
/// of a million-task submission that copying and faulting is a third of the
/// scheduler's time. Segments are allocated once and never copied: each
/// page is faulted in once, a segment at a time. An element costs one more
/// load to reach (the segment table is small and stays in cache).
///
/// Segments are whole arrays, filled with `T::default()` when allocated:
/// their length is a constant, so reaching an element checks the index
/// once, against the number of segments. Indices past the pushed elements,
/// up to the end of the last segment, hold `T::default()` (for the task
/// table: a vacant slot, which is what those slots are).
pub(crate) struct Segmented<T> {
    segments: Vec<Box<[T; SEGMENT]>>,
    len: usize,
}

impl<T> Default for Segmented<T> {
    fn default() -> Segmented<T> {
        Segmented { segments: Vec::new(), len: 0 }
    }
}

impl<T: Default> Segmented<T> {
    pub(crate) fn push(&mut self, value: T) {
        if self.len & OFFSET_MASK == 0 {
            let fresh: Box<[T]> = (0..SEGMENT).map(|_| T::default()).collect();
            let Ok(segment) = fresh.try_into() else { unreachable!("a segment has SEGMENT elements") };
            self.segments.push(segment);
        }
        let len = self.len;
        self.segments[len >> SEGMENT_BITS][len & OFFSET_MASK] = value;
        self.len += 1;
    }
}

impl<T> Segmented<T> {
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    #[inline]
    pub(crate) fn get(&self, i: usize) -> Option<&T> {
        self.segments.get(i >> SEGMENT_BITS).map(|s| &s[i & OFFSET_MASK])
    }

    #[inline]
    pub(crate) fn get_mut(&mut self, i: usize) -> Option<&mut T> {
        self.segments.get_mut(i >> SEGMENT_BITS).map(|s| &mut s[i & OFFSET_MASK])
    }

    /// Every element, in order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> {
        self.segments.iter().flat_map(|s| s.iter()).take(self.len)
    }
}

impl<T> Index<usize> for Segmented<T> {
    type Output = T;

    #[inline]
    fn index(&self, i: usize) -> &T {
        self.get(i).unwrap_or_else(|| panic!("index {i} past the last segment ({} elements)", self.len))
    }
}

impl<T> IndexMut<usize> for Segmented<T> {
    #[inline]
    fn index_mut(&mut self, i: usize) -> &mut T {
        let len = self.len;
        self.get_mut(i).unwrap_or_else(|| panic!("index {i} past the last segment ({len} elements)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Across several segments, every element is where it was pushed, and
    /// nothing past the last segment is found.
    #[test]
    fn elements_stay_at_their_index_across_segments() {
        let mut v = Segmented::default();
        let n = 2 * SEGMENT + 17;
        for i in 0..n {
            v.push(i);
        }
        assert_eq!(v.len(), n);
        for i in (0..n).step_by(997).chain([SEGMENT - 1, SEGMENT, n - 1]) {
            assert_eq!(v.get(i), Some(&i));
            assert_eq!(v[i], i);
        }
        assert_eq!(v.get(n), Some(&0), "the rest of the last segment holds defaults");
        assert_eq!(v.get(3 * SEGMENT), None);
        assert_eq!(v.get(usize::MAX), None);
        v[SEGMENT] = 7;
        *v.get_mut(SEGMENT + 1).expect("pushed") = 8;
        assert_eq!((v[SEGMENT], v[SEGMENT + 1]), (7, 8));
        assert!(v.iter().copied().eq((0..n).map(|i| match i {
            _ if i == SEGMENT => 7,
            _ if i == SEGMENT + 1 => 8,
            _ => i,
        })));
    }
}
