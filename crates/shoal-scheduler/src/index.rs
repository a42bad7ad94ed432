//! Task slots by the hash of their key.

use crate::ids::Slot;

/// An entry: the hash of a key in the high half, one more than its task's
/// slot in the low half; 0 is a vacant entry, so that a new index is
/// zeroed memory the allocator gets from the kernel already cleared.
/// (Slot `u32::MAX` is never used: a table would need four billion tasks.)
type Entry = u64;

fn entry(slot: Slot, hash: u32) -> Entry {
    (u64::from(hash) << 32) | u64::from(slot.0.wrapping_add(1))
}

fn hash_of(e: Entry) -> u32 {
    (e >> 32) as u32
}

fn slot_of(e: Entry) -> Slot {
    Slot((e as u32).wrapping_sub(1))
}

const VACANT: Entry = 0;

/// Slots by key hash: open addressing with linear probing over 8-byte
/// entries, at most half full.
///
/// Hand-written rather than hashbrown's `HashTable`: hashbrown keeps its
/// control bytes in an array apart from the entries, so a look-up in the
/// index of a million tasks misses the cache twice, first on the control
/// group and then on the entry; here the hash is in the entry, and a
/// look-up usually reads one cache line. Submitting a task looks up its key
/// and each of its inputs', so this is on the submission path.
///
/// Entries are never removed one by one (see `TaskTable`): the index is
/// rebuilt when it fills up, keeping the entries its owner says are current.
#[derive(Default)]
pub(crate) struct KeyIndex {
    /// A power of two long, or empty.
    entries: Vec<Entry>,
    len: usize,
}

impl KeyIndex {
    /// Entries, current or not.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Places for entries, vacant or not.
    #[cfg(test)]
    pub(crate) fn entries_len(&self) -> usize {
        self.entries.len()
    }

    /// Whether one more entry needs a rebuild first.
    pub(crate) fn is_full(&self) -> bool {
        2 * (self.len + 1) > self.entries.len()
    }

    /// The first slot under `hash` that `is` accepts.
    pub(crate) fn find(&self, hash: u32, mut is: impl FnMut(Slot) -> bool) -> Option<Slot> {
        if self.entries.is_empty() {
            return None;
        }
        let mask = self.entries.len() - 1;
        let mut p = hash as usize & mask;
        // Ends: the index is at most half full, so a vacant entry comes.
        loop {
            let e = self.entries[p];
            if e == VACANT {
                return None;
            }
            if hash_of(e) == hash && is(slot_of(e)) {
                return Some(slot_of(e));
            }
            p = (p + 1) & mask;
        }
    }

    /// Starts loading the entry where a look-up of `hash` begins.
    pub(crate) fn prefetch(&self, hash: u32) {
        if let Some(e) = self.entries.get(hash as usize & self.entries.len().wrapping_sub(1)) {
            prefetch_line((e as *const Entry).cast());
        }
    }

    /// Adds an entry; the caller has made room (the index is not full).
    pub(crate) fn insert(&mut self, slot: Slot, hash: u32) {
        place(&mut self.entries, entry(slot, hash));
        self.len += 1;
    }

    /// Rebuilds the index with room for `room` entries, keeping those that
    /// `keep` accepts (by slot and hash).
    pub(crate) fn rebuild(&mut self, room: usize, mut keep: impl FnMut(Slot, u32) -> bool) {
        let size = (2 * (room + 1)).next_power_of_two().max(64);
        let old = std::mem::replace(&mut self.entries, vec![VACANT; size]);
        self.len = 0;
        for e in old {
            if e != VACANT && keep(slot_of(e), hash_of(e)) {
                place(&mut self.entries, e);
                self.len += 1;
            }
        }
    }
}

fn place(entries: &mut [Entry], e: Entry) {
    let mask = entries.len() - 1;
    let mut p = hash_of(e) as usize & mask;
    while entries[p] != VACANT {
        p = (p + 1) & mask;
    }
    entries[p] = e;
}

/// Asks the memory system for the cache line at `p`, without waiting.
#[cfg(target_arch = "x86_64")]
pub(crate) fn prefetch_line(p: *const i8) {
    use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
    // SAFETY: SSE is part of every x86_64 CPU, and a prefetch is a hint that
    // never faults and reads nothing the program sees, whatever the address.
    unsafe { _mm_prefetch::<_MM_HINT_T0>(p) };
}

/// Elsewhere a no-op.
#[cfg(not(target_arch = "x86_64"))]
pub(crate) fn prefetch_line(_: *const i8) {}
