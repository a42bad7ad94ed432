//! Messages gathered during an event, sent at its end as one batch per peer.

use shoal_proto::{ClientId, WorkerId};

/// A peer numbered densely by its scheduler.
pub(crate) trait Peer: Copy + Ord {
    fn number(self) -> usize;
}

impl Peer for WorkerId {
    fn number(self) -> usize {
        self.0 as usize
    }
}

impl Peer for ClientId {
    fn number(self) -> usize {
        self.0 as usize
    }
}

const NONE: u32 = u32::MAX;

/// Messages a handed-over batch's replacement has room for at most: an
/// idle scheduler keeps, per peer its busiest event wrote to, room for
/// this many messages at most, not the room of that event.
const ROOM: usize = 1024;

/// Batches of messages by peer.
///
/// A peer's batch is found by its number, with no hashing, and sending
/// visits only the peers that have one (an event usually talks to a few of
/// a thousand workers).
pub(crate) struct Batches<P, M> {
    open: Vec<(P, Vec<M>)>,
    /// Emptied batches kept for reuse (see [`Batches::send_each`]).
    spare: Vec<Vec<M>>,
    /// Position in `open` by peer number (`NONE`: no batch). Four bytes per
    /// peer ever seen.
    at: Vec<u32>,
}

impl<P, M> Default for Batches<P, M> {
    fn default() -> Batches<P, M> {
        Batches { open: Vec::new(), spare: Vec::new(), at: Vec::new() }
    }
}

impl<P: Peer, M> Batches<P, M> {
    /// The batch for a peer, started if need be.
    pub(crate) fn to(&mut self, peer: P) -> &mut Vec<M> {
        let n = peer.number();
        if self.at.len() <= n {
            self.at.resize(n + 1, NONE);
        }
        if self.at[n] == NONE {
            self.at[n] = self.open.len() as u32;
            self.open.push((peer, self.spare.pop().unwrap_or_default()));
        }
        &mut self.open[self.at[n] as usize].1
    }

    pub(crate) fn get_mut(&mut self, peer: P) -> Option<&mut Vec<M>> {
        let at = *self.at.get(peer.number()).filter(|&&at| at != NONE)?;
        Some(&mut self.open[at as usize].1)
    }

    /// Shows every non-empty batch, in peer order, and keeps the emptied
    /// batches for reuse: for messages the sender encodes from a borrow,
    /// so that a busy scheduler allocates no batch per event.
    pub(crate) fn send_each(&mut self, mut send: impl FnMut(P, &mut Vec<M>)) {
        if self.open.is_empty() {
            return;
        }
        // Peer order from the table of positions when many peers have a
        // batch: a walk of four-byte entries, where sorting the batches
        // (a busy burst talks to most of a thousand workers) costs more than
        // everything else in sending.
        if self.open.len() * 16 >= self.at.len() {
            for n in 0..self.at.len() {
                let at = std::mem::replace(&mut self.at[n], NONE);
                if at != NONE {
                    let (peer, batch) = &mut self.open[at as usize];
                    if !batch.is_empty() {
                        send(*peer, batch);
                    }
                }
            }
        } else {
            self.open.sort_unstable_by_key(|(peer, _)| *peer);
            for (peer, batch) in &mut self.open {
                self.at[peer.number()] = NONE;
                if !batch.is_empty() {
                    send(*peer, batch);
                }
            }
        }
        for (_, mut batch) in self.open.drain(..) {
            batch.clear();
            self.spare.push(batch);
        }
    }

    /// Drops a peer's batch (the peer is gone).
    pub(crate) fn discard(&mut self, peer: P) {
        if let Some(batch) = self.get_mut(peer) {
            *batch = Vec::new();
        }
    }

    /// Hands over every non-empty batch, in peer order so that runs are
    /// reproducible (the simulator relies on it). The batch that replaces
    /// it starts with room for as many messages (up to [`ROOM`]): one
    /// allocation, where growing from empty takes a dozen copies in a busy
    /// event.
    pub(crate) fn send(&mut self, mut send: impl FnMut(P, Vec<M>)) {
        self.send_each(|peer, batch| {
            let room = Vec::with_capacity(batch.len().min(ROOM));
            send(peer, std::mem::replace(batch, room));
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Batches go out in peer order whether few of many peers have one
    /// (sorted) or most do (walked by number), and batches are reused.
    #[test]
    fn batches_go_out_in_peer_order_and_come_back_empty() {
        let mut batches: Batches<WorkerId, u32> = Batches::default();
        for peers in [vec![900u32, 3, 450], (0..1000).rev().collect(), vec![7], vec![]] {
            for &p in &peers {
                batches.to(WorkerId(p)).push(p);
                batches.to(WorkerId(p)).push(p + 1);
            }
            let mut sent = Vec::new();
            batches.send_each(|w, batch| {
                assert_eq!(*batch, [w.0, w.0 + 1]);
                sent.push(w.0);
            });
            let mut expected = peers.clone();
            expected.sort_unstable();
            assert_eq!(sent, expected);
            assert!(batches.open.is_empty() && batches.at.iter().all(|&a| a == NONE));
            assert!(batches.spare.iter().all(Vec::is_empty));
        }
    }
}
