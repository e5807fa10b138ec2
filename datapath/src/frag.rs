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
//! id; whole frames use no id. Datagrams are written into a caller-owned [`BytesMut`] and split
//! off as [`Bytes`], so in steady state a frame costs no allocation once the buffer's earlier
//! datagrams have been released.
//!
//! # Receiver: [`Reassembler`]
//!
//! Sans-IO, keyed by (source, frame id) where the source key is whatever the caller uses to
//! name the origin of a frame. Memory is bounded per source and globally; a partial frame costs
//! its total length plus [`PARTIAL_OVERHEAD`] from its first fragment on. When a new partial
//! frame would exceed a cap, the oldest partial frames (of that source, then of anyone) are
//! evicted and counted in [`Counters::dropped_memory`]. A partial frame that is not complete
//! [`ReassemblyConfig::timeout`] after its first fragment is dropped by
//! [`Reassembler::handle_timeout`] and counted in [`Counters::timed_out`].
//!
//! A frame id reused before the previous frame with that id completed or timed out (the
//! sender wrapped 65 536 fragmented frames within one timeout) can mix two frames; the
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
#[derive(Debug, Clone, Default)]
pub struct Fragmenter {
    next_frame_id: u16,
}

impl Fragmenter {
    /// A fragmenter whose first fragmented frame gets id 0.
    pub const fn new() -> Self {
        Self::with_first_id(0)
    }

    /// A fragmenter whose first fragmented frame gets `frame_id` (a random start makes ids of
    /// a reconnected sender unlikely to meet its old partial frames).
    pub const fn with_first_id(frame_id: u16) -> Self {
        Self {
            next_frame_id: frame_id,
        }
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
    /// Most memory the partial frames of one source may hold.
    pub per_source_bytes: usize,
    /// Most memory all partial frames may hold.
    pub total_bytes: usize,
    /// Largest total length accepted; fragments announcing more are malformed.
    pub max_frame_len: usize,
}

impl Default for ReassemblyConfig {
    /// 500 ms (fragments of a frame leave back to back, so only reordering delays them),
    /// 64 KiB per source (dozens of full-size partial frames), 1 MiB in all, frames up to
    /// 9216 bytes (the common jumbo-frame limit).
    fn default() -> Self {
        Self {
            timeout: Duration::from_millis(500),
            per_source_bytes: 64 * 1024,
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
            if let Some(stride) = self.stride {
                if others * usize::from(stride) + len != total {
                    return None;
                }
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
                    if let Some(last) = self.last_len {
                        if others * len + usize::from(last) != total {
                            return None;
                        }
                    }
                    self.stride = Some(len as u16);
                    Some(usize::from(index) * len)
                }
            }
        }
    }
}

#[derive(Debug, Default)]
struct Source {
    bytes: usize,
    /// Frame ids of this source's partial frames, oldest first.
    frames: VecDeque<u16>,
}

/// The receiver side: reassembles fragmented frames from overlay datagrams (sans-IO).
///
/// Call [`Self::handle_fragment`] for every overlay datagram received, and
/// [`Self::handle_timeout`] when [`Self::poll_timeout`] says so.
#[derive(Debug)]
pub struct Reassembler<K: Hash + Eq + Copy> {
    config: ReassemblyConfig,
    partials: HashMap<(K, u16), Partial>,
    /// Partial frames in creation order (seq), for timeouts and global eviction.
    order: BTreeMap<u64, (K, u16)>,
    sources: HashMap<K, Source>,
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
            sources: HashMap::new(),
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

    /// Memory charged to partial frames of `source` now.
    pub fn source_memory(&self, source: K) -> usize {
        self.sources.get(&source).map_or(0, |s| s.bytes)
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
            frame_id,
            index,
            count,
            total_len,
        } = header
        else {
            return Some(datagram.slice(overlay::WHOLE_HEADER_LEN..));
        };
        let payload = &datagram[FRAGMENT_HEADER_LEN..];
        let key = (source, frame_id);

        if !self.partials.contains_key(&key) {
            let total = usize::from(total_len);
            if total > self.config.max_frame_len || total < usize::from(count) {
                self.counters.malformed += 1;
                return None;
            }
            let charge = total + PARTIAL_OVERHEAD;
            if charge > self.config.per_source_bytes || charge > self.config.total_bytes {
                self.counters.dropped_memory += 1;
                return None;
            }
            self.make_room(source, charge);
            let seq = self.next_seq;
            self.next_seq += 1;
            self.partials.insert(
                key,
                Partial {
                    seq,
                    started: now,
                    count,
                    total_len,
                    received: 0,
                    stride: None,
                    last_len: None,
                    buf: BytesMut::zeroed(total),
                },
            );
            self.order.insert(seq, key);
            let src = self.sources.entry(source).or_default();
            src.bytes += charge;
            src.frames.push_back(frame_id);
            self.memory += charge;
        }

        let partial = self.partials.get_mut(&key)?;
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
            if partial.received == 0 {
                // A partial frame made for this fragment alone would only wait for its timeout.
                self.remove(key);
            }
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

    /// Forgets every partial frame of `source` (for instance when that peer leaves), without
    /// counting them.
    pub fn remove_source(&mut self, source: K) {
        let Some(src) = self.sources.get(&source) else {
            return;
        };
        let ids: Vec<u16> = src.frames.iter().copied().collect();
        for id in ids {
            self.remove((source, id));
        }
    }

    /// Evicts oldest partial frames until a new one of `charge` bytes fits both caps.
    fn make_room(&mut self, source: K, charge: usize) {
        loop {
            let src = self.sources.get(&source);
            let over_source = src.is_some_and(|s| s.bytes + charge > self.config.per_source_bytes);
            let key = if over_source {
                src.and_then(|s| s.frames.front()).map(|&id| (source, id))
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

    fn remove(&mut self, key: (K, u16)) -> Option<Partial> {
        let partial = self.partials.remove(&key)?;
        self.order.remove(&partial.seq);
        let charge = partial.charge();
        self.memory -= charge;
        if let Entry::Occupied(mut src) = self.sources.entry(key.0) {
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
