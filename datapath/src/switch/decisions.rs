//! The fragment decision cache: what the switch decided for fragment 0 of a frame, so that
//! fragments 1.. of the same `(ingress, frame id)` follow it without reassembly.
//!
//! A fixed ring of slots plus an index map, both sized once: inserting takes the slot under the
//! cursor (evicting its entry, first in first out) and never allocates. An entry lives until all
//! of its later fragments have passed, until it expires (`ttl` after fragment 0), or until the
//! ring comes round to its slot again. A later fragment with no live entry is an orphan: the
//! switch drops and counts it (the receiver's reassembler would time it out anyway).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::{DropReason, PeerId};

/// What fragment 0 of a frame was decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Decision {
    /// Send to this one peer.
    Unicast(PeerId),
    /// Send to every peer of the room except the ingress.
    Flood,
    /// Drop, counted under this reason.
    Drop(DropReason),
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    key: (PeerId, u16),
    decision: Decision,
    count: u8,
    total_len: u16,
    /// Later fragments not yet seen.
    remaining: u8,
    expires: Instant,
}

/// Outcome of looking up a later fragment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Lookup {
    /// Follow this decision.
    Follow(Decision),
    /// No live decision.
    Orphan,
}

#[derive(Debug)]
pub(super) struct DecisionCache {
    slots: Vec<Option<Entry>>,
    index: HashMap<(PeerId, u16), usize>,
    cursor: usize,
    ttl: Duration,
}

impl DecisionCache {
    pub(super) fn new(capacity: usize, ttl: Duration) -> Self {
        let capacity = capacity.max(1);
        Self {
            slots: vec![None; capacity],
            index: HashMap::with_capacity(capacity),
            cursor: 0,
            ttl,
        }
    }

    /// Records the decision for fragment 0 of `count` fragments. Returns true when a live
    /// entry of another frame had to be evicted to make room.
    pub(super) fn insert(
        &mut self,
        now: Instant,
        key: (PeerId, u16),
        decision: Decision,
        count: u8,
        total_len: u16,
    ) -> bool {
        let entry = Entry {
            key,
            decision,
            count,
            total_len,
            remaining: count.saturating_sub(1),
            expires: now + self.ttl,
        };
        if let Some(&slot) = self.index.get(&key) {
            // The sender reused a frame id (wrap-around or a resent fragment 0): replace.
            self.slots[slot] = Some(entry);
            return false;
        }
        let slot = self.cursor;
        self.cursor = (self.cursor + 1) % self.slots.len();
        let mut evicted = false;
        if let Some(old) = self.slots[slot].take() {
            self.index.remove(&old.key);
            evicted = old.remaining > 0 && old.expires > now;
        }
        self.slots[slot] = Some(entry);
        self.index.insert(key, slot);
        evicted
    }

    /// Looks up the decision for fragment `index` (>= 1) of `count`.
    pub(super) fn follow(
        &mut self,
        now: Instant,
        key: (PeerId, u16),
        count: u8,
        total_len: u16,
    ) -> Lookup {
        let Some(&slot) = self.index.get(&key) else {
            return Lookup::Orphan;
        };
        let Some(entry) = self.slots[slot].as_mut() else {
            // Unreachable: the index only names occupied slots. Treat as orphan.
            self.index.remove(&key);
            return Lookup::Orphan;
        };
        if entry.expires <= now || entry.count != count || entry.total_len != total_len {
            self.index.remove(&key);
            self.slots[slot] = None;
            return Lookup::Orphan;
        }
        let decision = entry.decision;
        entry.remaining = entry.remaining.saturating_sub(1);
        if entry.remaining == 0 {
            self.index.remove(&key);
            self.slots[slot] = None;
        }
        Lookup::Follow(decision)
    }

    /// Forgets every decision made for frames from `peer` and every unicast decision towards
    /// it.
    pub(super) fn remove_peer(&mut self, peer: PeerId) {
        for slot in &mut self.slots {
            let gone =
                slot.is_some_and(|e| e.key.0 == peer || e.decision == Decision::Unicast(peer));
            if gone && let Some(e) = slot.take() {
                self.index.remove(&e.key);
            }
        }
    }

    /// Live entries (for tests and stats).
    pub(super) fn len(&self) -> usize {
        self.index.len()
    }
}
