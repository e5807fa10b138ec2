//! Splitting frames into overlay fragments and reassembling them.
//!
//! A QUIC DATAGRAM cannot span packets, so an Ethernet frame larger than the room's datagram
//! budget travels as 2 to 15 fragments (format in [`crate::wire::overlay`] and
//! docs/PROTOCOL.md). The relay switches fragments without reassembling them; only the
//! receiving endpoint reassembles.
//!
//! # Fragment sizes
//!
//! docs/PROTOCOL.md: "All fragments of a frame except the last carry the same number of frame
//! bytes, the *stride*, at least 14; the last carries the rest, 1 to stride bytes. Fragment `i`
//! holds the frame bytes `i * stride .. min((i + 1) * stride, total length)`." So the receiver
//! knows where every fragment goes the moment it arrives, in any order, and copies it once into
//! a buffer of the frame's total length. The [`Fragmenter`] fills every fragment but the last
//! to the budget.
//!
//! # Sender: [`Fragmenter`]
//!
//! One per sender (per connection). It numbers fragmented frames with a wrapping 16-bit frame
//! id and stamps every fragment with the sender's *origin*, the low 16 bits of the peer id the
//! relay assigned in its welcome ([`overlay::origin_of`]); whole frames use neither. A peer
//! builds its fragmenter (or calls [`Fragmenter::set_origin`]) when the welcome arrives: no
//! frame is sent before the welcome, so no fragment ever carries a made-up origin. The relay
//! drops fragments whose origin is not their sender's.
//!
//! Datagrams are written into a caller-owned [`BytesMut`] and split off as [`Bytes`], so in
//! steady state a frame costs no allocation once the buffer's earlier datagrams have been
//! released.
//!
//! # Receiver: [`Reassembler`]
//!
//! Sans-IO, keyed by (source, origin, frame id). The source is whatever the caller uses to
//! name the connection a datagram came in on; the origin is the one in the fragment header.
//! A peer behind the relay receives every other member's fragments, interleaved, on its one
//! relay connection, and two members may use the same frame id at the same time: the origin
//! keeps their frames apart. A (source, origin) pair is a *sender*.
//!
//! Memory is bounded per sender and globally. The per-sender cap is per origin, not per
//! source, because at a peer every member's fragments share the one relay connection: a cap
//! per connection would let one member's stream of unfinished frames evict everyone else's.
//! A partial frame costs its total length plus [`PARTIAL_OVERHEAD`] from its first fragment
//! on. When a new partial frame would exceed a cap, the oldest partial frames (of that sender,
//! then of anyone) are evicted and counted in [`Counters::dropped_memory`]. A partial frame
//! that is not complete [`ReassemblyConfig::timeout`] after its first fragment is dropped by
//! [`Reassembler::handle_timeout`] and counted in [`Counters::timed_out`].
//!
//! A frame id reused before the previous frame with that id and origin completed or timed out
//! (the sender wrapped 65 536 fragmented frames within one timeout, or two members' origins
//! collide because their peer ids differ by a multiple of 65 536) can mix two frames; the
//! consistency checks catch most such mixes and the inner protocols' checksums catch the rest.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::Hash;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};

use crate::budget::Budget;
use crate::wire::ethernet;
use crate::wire::overlay::{self, Datagram, FRAGMENT_HEADER_LEN, Header, MAX_FRAGMENTS};

/// Fewest frame bytes a fragment other than the last may carry: fragment 0 must hold a whole
/// untagged Ethernet header so the relay can switch every fragment by fragment 0.
pub const MIN_STRIDE: usize = ethernet::HEADER_LEN;

/// Memory charged to a partial frame on top of its total length: an estimate of the
/// bookkeeping (map entries, buffer header) so that floods of tiny partial frames are bounded
/// too.
pub const PARTIAL_OVERHEAD: usize = 128;

/// Why a frame cannot be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FragmentError {
    /// The frame is empty.
    #[error("frame is empty")]
    Empty,
    /// The frame needs more fragments than the format allows at this budget.
    #[error("frame of {len} bytes needs {needed} fragments at a budget of {budget} (most 15)")]
    TooManyFragments {
        /// Frame length.
        len: usize,
        /// The budget.
        budget: usize,
        /// Fragments it would need.
        needed: usize,
    },
}

/// How a frame was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// As one whole-frame datagram.
    Whole,
    /// As `count` fragments of frame `frame_id`.
    Fragments {
        /// The frame id used.
        frame_id: u16,
        /// Number of fragment datagrams.
        count: u8,
    },
}

/// How many datagrams a frame of `frame_len` bytes takes at `budget`: 1 when it travels whole,
/// otherwise its fragment count (2 to 15).
///
/// # Errors
///
/// [`FragmentError`] when the frame is empty or needs more than 15 fragments.
pub fn datagram_count(frame_len: usize, budget: Budget) -> Result<u8, FragmentError> {
    if frame_len == 0 {
        return Err(FragmentError::Empty);
    }
    if frame_len <= budget.max_whole_frame() {
        return Ok(1);
    }
    let stride = budget.fragment_payload();
    let needed = frame_len.div_ceil(stride);
    if needed > usize::from(MAX_FRAGMENTS) || frame_len > usize::from(u16::MAX) {
        return Err(FragmentError::TooManyFragments {
            len: frame_len,
            budget: budget.bytes(),
            needed,
        });
    }
    // needed <= 15 was checked above.
    Ok(needed as u8)
}

/// The sender side: turns frames into overlay datagrams.
#[derive(Debug, Clone)]
pub struct Fragmenter {
    origin: u16,
    next_frame_id: u16,
}

impl Fragmenter {
    /// A fragmenter for the peer whose origin is `origin` (`overlay::origin_of(peer_id)` with
    /// the `peer_id` of the welcome), whose first fragmented frame gets id 0.
    pub const fn new(origin: u16) -> Self {
        Self::with_first_id(origin, 0)
    }

    /// A fragmenter for `origin` whose first fragmented frame gets `frame_id` (a random start
    /// makes ids of a reconnected sender unlikely to meet its old partial frames).
    pub const fn with_first_id(origin: u16, frame_id: u16) -> Self {
        Self {
            origin,
            next_frame_id: frame_id,
        }
    }

    /// The origin written into every fragment.
    pub const fn origin(&self) -> u16 {
        self.origin
    }

    /// Changes the origin, for a peer that got a new welcome (and so a new peer id) on a new
    /// connection; frame ids keep counting.
    pub const fn set_origin(&mut self, origin: u16) {
        self.origin = origin;
    }

    /// The id the next fragmented frame will get.
    pub const fn next_frame_id(&self) -> u16 {
        self.next_frame_id
    }

    /// Encodes `frame` as one whole-frame datagram when it fits `budget`, otherwise as
    /// fragments, and hands each datagram to `emit` in index order.
    ///
    /// The datagrams are written into `buf` and split off, so they share its allocation;
    /// reusing one `buf` per sender avoids an allocation per frame once earlier datagrams
    /// have been dropped. Only fragmented frames consume a frame id.
    ///
    /// # Errors
    ///
    /// [`FragmentError`] when the frame is empty or needs more than 15 fragments; nothing is
    /// emitted then.
    pub fn fragment(
        &mut self,
        frame: &[u8],
        budget: Budget,
        buf: &mut BytesMut,
        mut emit: impl FnMut(Bytes),
    ) -> Result<Split, FragmentError> {
        match datagram_count(frame.len(), budget)? {
            1 => {
                let mut head = [0u8; overlay::WHOLE_HEADER_LEN];
                Header::Whole.emit(&mut head);
                buf.clear();
                buf.reserve(head.len() + frame.len());
                buf.put_slice(&head);
                buf.put_slice(frame);
                emit(buf.split().freeze());
                Ok(Split::Whole)
            }
            count => {
                let frame_id = self.next_frame_id;
                self.next_frame_id = frame_id.wrapping_add(1);
                let stride = budget.fragment_payload();
                buf.clear();
                buf.reserve(usize::from(count) * FRAGMENT_HEADER_LEN + frame.len());
                for (index, chunk) in frame.chunks(stride).enumerate() {
                    let header = Header::Fragment {
                        origin: self.origin,
                        frame_id,
                        // index < count <= 15.
                        index: index as u8,
                        count,
                        // plan() checked frame.len() <= u16::MAX.
                        total_len: frame.len() as u16,
                    };
                    let mut head = [0u8; FRAGMENT_HEADER_LEN];
                    header.emit(&mut head);
                    buf.put_slice(&head);
                    buf.put_slice(chunk);
                    emit(buf.split().freeze());
                }
                Ok(Split::Fragments { frame_id, count })
            }
        }
    }
}

/// Limits of a [`Reassembler`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReassemblyConfig {
    /// How long a partial frame may wait for its missing fragments after its first one.
    pub timeout: Duration,
    /// Most memory the partial frames of one sender (one origin on one source) may hold.
    pub per_sender_bytes: usize,
    /// Most memory all partial frames may hold.
    pub total_bytes: usize,
    /// Largest total length accepted; fragments announcing more are malformed.
    pub max_frame_len: usize,
}

impl Default for ReassemblyConfig {
    /// 500 ms (fragments of a frame leave back to back, so only reordering delays them),
    /// 64 KiB per sender (dozens of full-size partial frames), 1 MiB in all, frames up to
    /// 9216 bytes (the common jumbo-frame limit).
    fn default() -> Self {
        Self {
            timeout: Duration::from_millis(500),
            per_sender_bytes: 64 * 1024,
            total_bytes: 1024 * 1024,
            max_frame_len: 9216,
        }
    }
}

/// What happened to datagrams given to a [`Reassembler`]. Plain integers, owned by the thread
/// that drives it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Fragmented frames reassembled.
    pub completed: u64,
    /// Partial frames dropped because they did not complete in time.
    pub timed_out: u64,
    /// Partial frames evicted, and fragments refused, to stay under the memory caps.
    pub dropped_memory: u64,
    /// Datagrams that are not valid overlay datagrams or contradict the other fragments of
    /// their frame.
    pub malformed: u64,
    /// Fragments received again for a partial frame that already had them.
    pub duplicates: u64,
}

#[derive(Debug)]
struct Partial {
    seq: u64,
    started: Instant,
    count: u8,
    total_len: u16,
    /// Bit `i` set once fragment `i` is in `buf`.
    received: u16,
    /// Bytes of every fragment but the last, once one of them has arrived.
    stride: Option<u16>,
    /// Bytes of the last fragment, once it has arrived.
    last_len: Option<u16>,
    buf: BytesMut,
}

impl Partial {
    const fn charge(&self) -> usize {
        self.total_len as usize + PARTIAL_OVERHEAD
    }

    const fn is_complete(&self) -> bool {
        self.received == (1u16 << self.count) - 1
    }

    /// Where fragment `index` of `len` bytes goes, or `None` when it contradicts the frame.
    fn place(&mut self, index: u8, len: usize) -> Option<usize> {
        let total = usize::from(self.total_len);
        let others = usize::from(self.count) - 1;
        if index == self.count - 1 {
            // The last fragment: 1..=stride bytes at the end.
            // The others share the rest evenly, each at least MIN_STRIDE and len bytes.
            let rest = total.checked_sub(len)?;
            if rest % others != 0 || rest / others < MIN_STRIDE.max(len) {
                return None;
            }
            if let Some(stride) = self.stride
                && others * usize::from(stride) + len != total
            {
                return None;
            }
            self.last_len = Some(len as u16);
            Some(total - len)
        } else {
            match self.stride {
                Some(stride) if usize::from(stride) != len => None,
                Some(_) => Some(usize::from(index) * len),
                None => {
                    // stride * (count - 1) < total <= stride * count
                    if len < MIN_STRIDE || others * len >= total || others * len + len < total {
                        return None;
                    }
                    if let Some(last) = self.last_len
                        && others * len + usize::from(last) != total
                    {
                        return None;
                    }
                    self.stride = Some(len as u16);
                    Some(usize::from(index) * len)
                }
            }
        }
    }
}

/// The partial frame of a sender, (source, origin), with a frame id.
type Key<K> = ((K, u16), u16);

#[derive(Debug, Default)]
struct Sender {
    bytes: usize,
    /// Frame ids of this sender's partial frames, oldest first.
    frames: VecDeque<u16>,
}

/// The receiver side: reassembles fragmented frames from overlay datagrams (sans-IO).
///
/// Call [`Self::handle_fragment`] for every overlay datagram received, and
/// [`Self::handle_timeout`] when [`Self::poll_timeout`] says so.
#[derive(Debug)]
pub struct Reassembler<K: Hash + Eq + Copy> {
    config: ReassemblyConfig,
    partials: HashMap<Key<K>, Partial>,
    /// Partial frames in creation order (seq), for timeouts and global eviction.
    order: BTreeMap<u64, Key<K>>,
    senders: HashMap<(K, u16), Sender>,
    next_seq: u64,
    memory: usize,
    counters: Counters,
}

impl<K: Hash + Eq + Copy> Reassembler<K> {
    /// An empty reassembler.
    pub fn new(config: ReassemblyConfig) -> Self {
        Self {
            config,
            partials: HashMap::new(),
            order: BTreeMap::new(),
            senders: HashMap::new(),
            next_seq: 0,
            memory: 0,
            counters: Counters::default(),
        }
    }

    /// The limits in force.
    pub const fn config(&self) -> &ReassemblyConfig {
        &self.config
    }

    /// What has happened so far.
    pub const fn counters(&self) -> Counters {
        self.counters
    }

    /// Memory charged to partial frames now (always at most `config.total_bytes`).
    pub const fn memory(&self) -> usize {
        self.memory
    }

    /// Memory charged now to partial frames of fragments from `origin` that came in on
    /// `source`.
    pub fn sender_memory(&self, source: K, origin: u16) -> usize {
        self.senders.get(&(source, origin)).map_or(0, |s| s.bytes)
    }

    /// Partial frames waiting for fragments.
    pub fn partial_frames(&self) -> usize {
        self.partials.len()
    }

    /// Handles one overlay datagram from `source`, received at `now`.
    ///
    /// Returns the whole frame when `datagram` is a whole-frame datagram (a slice of it, no
    /// copy) or the fragment that completes a frame. Malformed datagrams, duplicates and
    /// fragments that do not fit in memory are counted and return `None`.
    pub fn handle_fragment(&mut self, now: Instant, source: K, datagram: Bytes) -> Option<Bytes> {
        let header = match Datagram::new_checked(&datagram[..]) {
            Ok(d) => d.header(),
            Err(_) => {
                self.counters.malformed += 1;
                return None;
            }
        };
        let Header::Fragment {
            origin,
            frame_id,
            index,
            count,
            total_len,
        } = header
        else {
            return Some(datagram.slice(overlay::WHOLE_HEADER_LEN..));
        };
        let payload = &datagram[FRAGMENT_HEADER_LEN..];
        let key = ((source, origin), frame_id);

        let Some(partial) = self.partials.get_mut(&key) else {
            self.start_frame(now, key, index, count, total_len, payload);
            return None;
        };
        if partial.count != count || partial.total_len != total_len {
            self.counters.malformed += 1;
            return None;
        }
        if partial.received & (1 << index) != 0 {
            self.counters.duplicates += 1;
            return None;
        }
        let Some(offset) = partial.place(index, payload.len()) else {
            self.counters.malformed += 1;
            return None;
        };
        partial.buf[offset..offset + payload.len()].copy_from_slice(payload);
        partial.received |= 1 << index;
        if !partial.is_complete() {
            return None;
        }
        let done = self.remove(key)?;
        self.counters.completed += 1;
        Some(done.buf.freeze())
    }

    /// Makes a partial frame for the first fragment of `key`, after checking that the fragment
    /// can belong to a frame and evicting older partial frames to fit the caps. A frame has
    /// at least two fragments, so the first never completes it.
    fn start_frame(
        &mut self,
        now: Instant,
        key: Key<K>,
        index: u8,
        count: u8,
        total_len: u16,
        payload: &[u8],
    ) {
        let total = usize::from(total_len);
        let mut partial = Partial {
            seq: self.next_seq,
            started: now,
            count,
            total_len,
            received: 1 << index,
            stride: None,
            last_len: None,
            buf: BytesMut::new(),
        };
        let offset = if total <= self.config.max_frame_len {
            partial.place(index, payload.len())
        } else {
            None
        };
        let Some(offset) = offset else {
            self.counters.malformed += 1;
            return;
        };
        let charge = partial.charge();
        if charge > self.config.per_sender_bytes || charge > self.config.total_bytes {
            self.counters.dropped_memory += 1;
            return;
        }
        self.make_room(key.0, charge);
        partial.buf = BytesMut::zeroed(total);
        partial.buf[offset..offset + payload.len()].copy_from_slice(payload);
        self.next_seq += 1;
        self.order.insert(partial.seq, key);
        self.partials.insert(key, partial);
        let src = self.senders.entry(key.0).or_default();
        src.bytes += charge;
        src.frames.push_back(key.1);
        self.memory += charge;
    }

    /// When [`Self::handle_timeout`] should next be called: the deadline of the oldest partial
    /// frame, or `None` when there is none.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let (_, key) = self.order.first_key_value()?;
        let partial = self.partials.get(key)?;
        Some(partial.started + self.config.timeout)
    }

    /// Drops the partial frames whose deadline is at or before `now`. Call it when the instant
    /// from [`Self::poll_timeout`] has come.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(deadline) = self.poll_timeout() {
            if deadline > now {
                break;
            }
            let Some((_, key)) = self.order.first_key_value() else {
                break;
            };
            let key = *key;
            self.remove(key);
            self.counters.timed_out += 1;
        }
    }

    /// Forgets every partial frame that came in on `source`, from any origin (for instance
    /// when that connection closes), without counting them. Walks every partial frame: meant
    /// for rare events, not per packet.
    pub fn remove_source(&mut self, source: K) {
        let keys: Vec<Key<K>> = self
            .partials
            .keys()
            .filter(|((s, _), _)| *s == source)
            .copied()
            .collect();
        for key in keys {
            self.remove(key);
        }
    }

    /// Forgets every partial frame from `origin` on `source` (for instance when the relay
    /// announces that the peer with that origin left), without counting them.
    pub fn remove_sender(&mut self, source: K, origin: u16) {
        let sender = (source, origin);
        let Some(s) = self.senders.get(&sender) else {
            return;
        };
        let ids: Vec<u16> = s.frames.iter().copied().collect();
        for id in ids {
            self.remove((sender, id));
        }
    }

    /// Evicts oldest partial frames until a new one of `charge` bytes fits both caps.
    fn make_room(&mut self, sender: (K, u16), charge: usize) {
        loop {
            let src = self.senders.get(&sender);
            let over_sender = src.is_some_and(|s| s.bytes + charge > self.config.per_sender_bytes);
            let key = if over_sender {
                src.and_then(|s| s.frames.front()).map(|&id| (sender, id))
            } else if self.memory + charge > self.config.total_bytes {
                self.order.first_key_value().map(|(_, &key)| key)
            } else {
                return;
            };
            let Some(key) = key else {
                return;
            };
            self.remove(key);
            self.counters.dropped_memory += 1;
        }
    }

    fn remove(&mut self, key: Key<K>) -> Option<Partial> {
        let partial = self.partials.remove(&key)?;
        self.order.remove(&partial.seq);
        let charge = partial.charge();
        self.memory -= charge;
        if let Entry::Occupied(mut src) = self.senders.entry(key.0) {
            let s = src.get_mut();
            s.bytes -= charge;
            if let Some(pos) = s.frames.iter().position(|&id| id == key.1) {
                s.frames.remove(pos);
            }
            if s.frames.is_empty() {
                src.remove();
            }
        }
        Some(partial)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frame(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + 3) as u8).collect()
    }

    fn split(f: &mut Fragmenter, frame: &[u8], b: Budget) -> Vec<Bytes> {
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        f.fragment(frame, b, &mut buf, |d| out.push(d)).unwrap();
        out
    }

    fn config() -> ReassemblyConfig {
        ReassemblyConfig::default()
    }

    #[test]
    fn frame_that_fits_travels_whole() {
        let mut f = Fragmenter::new(7);
        let fr = frame(1161);
        let out = split(&mut f, &fr, Budget::INITIAL_QUIC);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0][0], 0x10);
        assert_eq!(&out[0][1..], &fr[..]);
        assert_eq!(f.next_frame_id(), 0, "whole frames use no frame id");
    }

    #[test]
    fn large_frame_is_fragmented_with_full_strides() {
        let mut f = Fragmenter::with_first_id(0x0102, 0xffff);
        let fr = frame(1518);
        let out = split(&mut f, &fr, Budget::INITIAL_QUIC);
        assert_eq!(out.len(), 2);
        assert_eq!(
            &out[0][..8],
            &[0x11, 0x01, 0x02, 0xff, 0xff, 0x02, 0x05, 0xee]
        );
        assert_eq!(out[0].len(), 1162);
        assert_eq!(
            &out[1][..8],
            &[0x11, 0x01, 0x02, 0xff, 0xff, 0x12, 0x05, 0xee]
        );
        assert_eq!(out[1].len(), 8 + 1518 - 1154);
        assert_eq!(f.next_frame_id(), 0, "frame id wraps");
        f.set_origin(0x0a0b);
        assert_eq!(f.origin(), 0x0a0b);
        let out = split(&mut f, &fr, Budget::INITIAL_QUIC);
        assert_eq!(&out[0][1..5], &[0x0a, 0x0b, 0, 0]);
    }

    #[test]
    fn too_many_fragments_is_an_error() {
        let mut f = Fragmenter::new(7);
        let mut buf = BytesMut::new();
        let mut emitted = 0;
        let err = f.fragment(&frame(15 * 102 + 1), Budget::MIN, &mut buf, |_| {
            emitted += 1
        });
        assert_eq!(
            err,
            Err(FragmentError::TooManyFragments {
                len: 1531,
                budget: 110,
                needed: 16
            })
        );
        assert_eq!(emitted, 0);
        assert_eq!(datagram_count(15 * 102, Budget::MIN), Ok(15));
        assert_eq!(datagram_count(0, Budget::MIN), Err(FragmentError::Empty));
    }

    #[test]
    fn fragments_in_reverse_order_reassemble() {
        let mut f = Fragmenter::new(7);
        let fr = frame(1518);
        let mut r = Reassembler::new(config());
        let now = Instant::now();
        let out = split(&mut f, &fr, Budget::MIN);
        assert_eq!(out.len(), 15);
        let (last, rest) = out.split_first().unwrap();
        for d in rest.iter().rev() {
            assert_eq!(r.handle_fragment(now, 1u8, d.clone()), None);
        }
        assert_eq!(
            r.handle_fragment(now, 1u8, last.clone()).as_deref(),
            Some(&fr[..])
        );
        assert_eq!(r.counters().completed, 1);
        assert_eq!(r.memory(), 0);
        assert_eq!(r.partial_frames(), 0);
    }

    #[test]
    fn whole_datagram_is_returned_without_reassembly() {
        let mut r = Reassembler::new(config());
        let d = Bytes::from_static(&[0x10, 1, 2, 3]);
        assert_eq!(
            r.handle_fragment(Instant::now(), 0u32, d).as_deref(),
            Some(&[1u8, 2, 3][..])
        );
        assert_eq!(r.counters(), Counters::default());
    }

    #[test]
    fn duplicates_are_ignored_and_counted() {
        let mut f = Fragmenter::new(7);
        let mut r = Reassembler::new(config());
        let now = Instant::now();
        let out = split(&mut f, &frame(300), Budget::MIN);
        assert_eq!(r.handle_fragment(now, 0u8, out[0].clone()), None);
        assert_eq!(r.handle_fragment(now, 0u8, out[0].clone()), None);
        assert_eq!(r.counters().duplicates, 1);
        assert_eq!(r.handle_fragment(now, 0u8, out[1].clone()), None);
        assert!(r.handle_fragment(now, 0u8, out[2].clone()).is_some());
        // A late duplicate of a completed frame starts a new partial frame that times out.
        assert_eq!(r.handle_fragment(now, 0u8, out[1].clone()), None);
        r.handle_timeout(now + Duration::from_secs(1));
        assert_eq!(r.counters().timed_out, 1);
    }

    #[test]
    fn sources_do_not_mix() {
        let mut f = Fragmenter::new(7);
        let mut r = Reassembler::new(config());
        let now = Instant::now();
        let a = split(&mut f, &frame(200), Budget::MIN);
        let mut g = Fragmenter::new(7);
        let b = split(&mut g, &[9u8; 200], Budget::MIN);
        assert_eq!(r.handle_fragment(now, 'a', a[0].clone()), None);
        assert_eq!(r.handle_fragment(now, 'b', b[1].clone()), None);
        assert_eq!(
            r.handle_fragment(now, 'a', a[1].clone()).as_deref(),
            Some(&frame(200)[..])
        );
        assert_eq!(
            r.handle_fragment(now, 'b', b[0].clone()).as_deref(),
            Some(&[9u8; 200][..])
        );
    }

    #[test]
    fn one_frame_id_from_two_origins_on_one_source_does_not_mix() {
        let now = Instant::now();
        let mut r = Reassembler::new(config());
        let mut a = Fragmenter::with_first_id(1, 0x2a00);
        let mut b = Fragmenter::with_first_id(2, 0x2a00);
        let fa = frame(300);
        let fb = vec![0xbbu8; 300];
        let da = split(&mut a, &fa, Budget::MIN);
        let db = split(&mut b, &fb, Budget::MIN);
        assert_eq!(da.len(), 3);
        assert_eq!(db.len(), 3);
        let mut done = Vec::new();
        for (x, y) in da.iter().zip(&db) {
            done.extend(r.handle_fragment(now, 'r', x.clone()));
            done.extend(r.handle_fragment(now, 'r', y.clone()));
        }
        assert_eq!(done, vec![Bytes::from(fa), Bytes::from(fb)]);
        assert_eq!(r.counters().malformed, 0);
        assert_eq!(r.counters().completed, 2);
    }

    #[test]
    fn removing_a_source_forgets_all_its_origins() {
        let now = Instant::now();
        let mut r = Reassembler::new(config());
        r.handle_fragment(now, 1u8, frag_from(1, 0, 0, 2, 100, &[0; 60]));
        r.handle_fragment(now, 1u8, frag_from(2, 0, 0, 2, 100, &[0; 60]));
        r.handle_fragment(now, 2u8, frag_from(1, 0, 0, 2, 100, &[0; 60]));
        assert_eq!(r.partial_frames(), 3);
        r.remove_source(1);
        assert_eq!(r.partial_frames(), 1);
        assert_eq!(r.memory(), 100 + PARTIAL_OVERHEAD);
        assert_eq!(r.sender_memory(2, 1), 100 + PARTIAL_OVERHEAD);
    }

    #[test]
    fn removing_a_sender_keeps_the_other_origins_of_its_source() {
        let now = Instant::now();
        let mut r = Reassembler::new(config());
        r.handle_fragment(now, 0u8, frag_from(1, 5, 0, 2, 100, &[0; 60]));
        r.handle_fragment(now, 0u8, frag_from(2, 5, 0, 2, 100, &[0; 60]));
        r.remove_sender(0, 1);
        assert_eq!(r.sender_memory(0, 1), 0);
        assert_eq!(r.partial_frames(), 1);
        assert!(
            r.handle_fragment(now, 0u8, frag_from(2, 5, 1, 2, 100, &[0; 40]))
                .is_some()
        );
        assert_eq!(
            r.handle_fragment(now, 0u8, frag_from(1, 5, 1, 2, 100, &[0; 40])),
            None
        );
        assert_eq!(r.counters().completed, 1);
    }

    #[test]
    fn one_origin_cannot_evict_another_on_the_same_source() {
        // At a peer, every member's fragments come in on the relay connection.
        let now = Instant::now();
        let cost = 100 + PARTIAL_OVERHEAD;
        let mut r = Reassembler::new(ReassemblyConfig {
            per_sender_bytes: 2 * cost,
            ..config()
        });
        r.handle_fragment(now, 0u8, frag_from(1, 0, 0, 2, 100, &[0; 60]));
        for id in 0..10 {
            r.handle_fragment(now, 0u8, frag_from(2, id, 0, 2, 100, &[0; 60]));
        }
        assert_eq!(r.counters().dropped_memory, 8);
        assert_eq!(r.sender_memory(0, 2), 2 * cost);
        assert!(
            r.handle_fragment(now, 0u8, frag_from(1, 0, 1, 2, 100, &[0; 40]))
                .is_some()
        );
    }

    fn frag(frame_id: u16, index: u8, count: u8, total_len: u16, payload: &[u8]) -> Bytes {
        frag_from(7, frame_id, index, count, total_len, payload)
    }

    fn frag_from(
        origin: u16,
        frame_id: u16,
        index: u8,
        count: u8,
        total_len: u16,
        payload: &[u8],
    ) -> Bytes {
        let mut d = vec![0; FRAGMENT_HEADER_LEN];
        Header::Fragment {
            origin,
            frame_id,
            index,
            count,
            total_len,
        }
        .emit(&mut d);
        d.extend_from_slice(payload);
        d.into()
    }

    #[test]
    fn inconsistent_fragments_are_malformed() {
        let now = Instant::now();
        let mut r = Reassembler::new(config());
        assert_eq!(
            r.handle_fragment(now, 0u8, frag(1, 0, 3, 100, &[0; 40])),
            None
        );
        // Another count or total length for the same frame id.
        assert_eq!(
            r.handle_fragment(now, 0u8, frag(1, 1, 4, 100, &[0; 40])),
            None
        );
        assert_eq!(
            r.handle_fragment(now, 0u8, frag(1, 1, 3, 101, &[0; 40])),
            None
        );
        // Another stride.
        assert_eq!(
            r.handle_fragment(now, 0u8, frag(1, 1, 3, 100, &[0; 41])),
            None
        );
        // A last fragment that does not end the frame at the stride.
        assert_eq!(
            r.handle_fragment(now, 0u8, frag(1, 2, 3, 100, &[0; 19])),
            None
        );
        assert_eq!(r.counters().malformed, 4);
        // The right ones still complete it.
        assert_eq!(
            r.handle_fragment(now, 0u8, frag(1, 2, 3, 100, &[0; 20])),
            None
        );
        assert!(
            r.handle_fragment(now, 0u8, frag(1, 1, 3, 100, &[0; 40]))
                .is_some()
        );

        // A lone fragment that cannot belong to any frame leaves nothing behind.
        let cases = [
            frag(2, 0, 2, 100, &[0; 10]),      // stride below the Ethernet header
            frag(3, 0, 2, 100, &[0; 100]),     // stride * (count - 1) must be < total
            frag(4, 0, 2, 100, &[0; 49]),      // total must be <= stride * count
            frag(5, 1, 3, 100, &[0; 101]),     // longer than the frame
            frag(6, 2, 3, 100, &[0; 41]),      // last longer than the stride
            frag(7, 2, 3, 100, &[0; 1]),       // the other two cannot share 99 bytes evenly
            frag(8, 0, 2, 10_000, &[0; 5000]), // beyond max_frame_len
            Bytes::from_static(&[0x21, 0]),
        ];
        for d in cases {
            assert_eq!(r.handle_fragment(now, 0u8, d.clone()), None, "{d:02x?}");
        }
        assert_eq!(r.counters().malformed, 4 + 8);
        assert_eq!(r.partial_frames(), 0);
        assert_eq!(r.memory(), 0);
    }

    #[test]
    fn partial_frames_time_out() {
        let now = Instant::now();
        let mut r = Reassembler::new(config());
        assert_eq!(r.poll_timeout(), None);
        r.handle_fragment(now, 0u8, frag(1, 0, 2, 100, &[0; 60]));
        let later = now + Duration::from_millis(100);
        r.handle_fragment(later, 0u8, frag(2, 0, 2, 100, &[0; 60]));
        assert_eq!(r.poll_timeout(), Some(now + Duration::from_millis(500)));
        r.handle_timeout(now + Duration::from_millis(499));
        assert_eq!(r.partial_frames(), 2);
        r.handle_timeout(now + Duration::from_millis(500));
        assert_eq!(r.partial_frames(), 1);
        assert_eq!(r.poll_timeout(), Some(later + Duration::from_millis(500)));
        r.handle_timeout(later + Duration::from_secs(5));
        assert_eq!(r.counters().timed_out, 2);
        assert_eq!(r.poll_timeout(), None);
        assert_eq!(r.memory(), 0);
        // The missing fragment arriving late starts over rather than completing.
        assert_eq!(
            r.handle_fragment(later, 0u8, frag(1, 1, 2, 100, &[0; 40])),
            None
        );
    }

    #[test]
    fn per_sender_cap_evicts_that_senders_oldest() {
        let now = Instant::now();
        let cost = 100 + PARTIAL_OVERHEAD;
        let mut r = Reassembler::new(ReassemblyConfig {
            per_sender_bytes: 3 * cost,
            ..config()
        });
        r.handle_fragment(now, 'b', frag(9, 0, 2, 100, &[0; 60]));
        for id in 0..4 {
            r.handle_fragment(now, 'a', frag(id, 0, 2, 100, &[0; 60]));
        }
        assert_eq!(r.counters().dropped_memory, 1);
        assert_eq!(r.sender_memory('a', 7), 3 * cost);
        assert_eq!(r.sender_memory('b', 7), cost);
        // Frame 0 of 'a' was the one evicted; frame 1 still completes.
        assert!(
            r.handle_fragment(now, 'a', frag(1, 1, 2, 100, &[0; 40]))
                .is_some()
        );
        assert_eq!(
            r.handle_fragment(now, 'a', frag(0, 1, 2, 100, &[0; 40])),
            None
        );
        assert!(
            r.handle_fragment(now, 'b', frag(9, 1, 2, 100, &[0; 40]))
                .is_some()
        );
    }

    #[test]
    fn global_cap_evicts_the_oldest_of_anyone() {
        let now = Instant::now();
        let cost = 100 + PARTIAL_OVERHEAD;
        let mut r = Reassembler::new(ReassemblyConfig {
            total_bytes: 2 * cost,
            ..config()
        });
        r.handle_fragment(now, 1u8, frag(0, 0, 2, 100, &[0; 60]));
        r.handle_fragment(now, 2u8, frag(0, 0, 2, 100, &[0; 60]));
        r.handle_fragment(now, 3u8, frag(0, 0, 2, 100, &[0; 60]));
        assert_eq!(r.counters().dropped_memory, 1);
        assert_eq!(r.memory(), 2 * cost);
        assert_eq!(r.sender_memory(1, 7), 0);
        // A frame bigger than a cap is refused outright.
        r.handle_fragment(now, 4u8, frag(0, 0, 2, 1000, &[0; 600]));
        assert_eq!(r.counters().dropped_memory, 2);
        assert_eq!(r.partial_frames(), 2);
        // A first fragment that cannot belong to a frame evicts nobody.
        r.handle_fragment(now, 5u8, frag(0, 0, 2, 100, &[0; 10]));
        assert_eq!(r.counters().dropped_memory, 2);
        assert_eq!(r.counters().malformed, 1);
        assert_eq!(r.memory(), 2 * cost);
    }

    #[test]
    fn removing_a_source_frees_its_memory() {
        let now = Instant::now();
        let mut r = Reassembler::new(config());
        r.handle_fragment(now, 1u8, frag(0, 0, 2, 100, &[0; 60]));
        r.handle_fragment(now, 1u8, frag(1, 0, 2, 100, &[0; 60]));
        r.handle_fragment(now, 2u8, frag(0, 0, 2, 100, &[0; 60]));
        r.remove_source(1);
        assert_eq!(r.partial_frames(), 1);
        assert_eq!(r.memory(), 100 + PARTIAL_OVERHEAD);
    }

    proptest! {
        #[test]
        fn fragments_in_any_order_round_trip(
            len in 1usize..=1522,
            budget in MIN_ROOM_BUDGET_FOR_TESTS..=1600usize,
            origin in any::<u16>(),
            first_id in any::<u16>(),
            order in Just(()).prop_perturb(|_, mut rng| rng.random::<u64>()),
            dup in any::<bool>(),
        ) {
            let fr: Vec<u8> = (0..len).map(|i| (i * 31 + len) as u8).collect();
            let mut f = Fragmenter::with_first_id(origin, first_id);
            let mut out = split(&mut f, &fr, Budget::new(budget).unwrap());
            // Shuffle by a seed (Fisher-Yates with a simple LCG).
            let mut seed = order;
            for i in (1..out.len()).rev() {
                seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                out.swap(i, (seed >> 33) as usize % (i + 1));
            }
            if dup && out.len() > 1 {
                let first = out[0].clone();
                out.insert(out.len().min(1), first);
            }
            let mut r = Reassembler::new(ReassemblyConfig::default());
            let now = Instant::now();
            let mut done = Vec::new();
            for d in out {
                done.extend(r.handle_fragment(now, 0u8, d));
            }
            prop_assert_eq!(done.len(), 1);
            prop_assert_eq!(&done[0][..], &fr[..]);
            prop_assert_eq!(r.memory(), 0);
            prop_assert_eq!(r.counters().malformed, 0);
        }

        #[test]
        fn arbitrary_datagrams_never_panic_and_stay_under_the_caps(
            datagrams in proptest::collection::vec(
                (
                    0u8..4,
                    0u64..2000,
                    // Mostly plausible fragment headers, some raw bytes.
                    prop_oneof![
                        3 => (0u8..2, 0u8..3, any::<u8>(), 0u16..1600, 1usize..200).prop_map(
                            |(origin, id, index_count, total, len)| {
                                let mut d = vec![0x11, 0, origin, 0, id, index_count];
                                d.extend_from_slice(&total.to_be_bytes());
                                d.extend((0..len).map(|i| i as u8));
                                d
                            }
                        ),
                        1 => proptest::collection::vec(any::<u8>(), 0..200),
                    ],
                ),
                0..300,
            ),
        ) {
            let cfg = ReassemblyConfig {
                per_sender_bytes: 1500,
                total_bytes: 4000,
                ..ReassemblyConfig::default()
            };
            let mut r = Reassembler::new(cfg);
            let start = Instant::now();
            let mut now = start;
            for (source, ms, d) in datagrams {
                now += Duration::from_millis(ms % 50);
                if r.poll_timeout().is_some_and(|t| t <= now) {
                    r.handle_timeout(now);
                }
                let origin = match Datagram::new_checked(&d[..]).map(|d| d.header()) {
                    Ok(Header::Fragment { origin, .. }) => Some(origin),
                    _ => None,
                };
                let _ = r.handle_fragment(now, source, Bytes::from(d));
                prop_assert!(r.memory() <= cfg.total_bytes);
                if let Some(origin) = origin {
                    prop_assert!(r.sender_memory(source, origin) <= cfg.per_sender_bytes);
                }
                for s in 0..4 {
                    for o in 0..2 {
                        prop_assert!(r.sender_memory(s, o) <= cfg.per_sender_bytes);
                    }
                }
            }
            r.handle_timeout(now + cfg.timeout);
            prop_assert_eq!(r.memory(), 0);
            prop_assert_eq!(r.partial_frames(), 0);
        }
    }

    const MIN_ROOM_BUDGET_FOR_TESTS: usize = crate::budget::MIN_ROOM_BUDGET;
}
