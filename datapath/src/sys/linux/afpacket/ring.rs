//! The user-space side of the TPACKET_V2 and TPACKET_V3 ring protocols, independent of any
//! socket.
//!
//! TPACKET_V3 ([`RingVersion::V3`]): the RX ring is a sequence of blocks. The kernel fills a block with packets (each a
//! `tpacket3_hdr` followed by the frame at `tp_mac`, chained by `tp_next_offset`) and hands it
//! over by setting `TP_STATUS_USER` in the block's `block_status`; we read every packet and hand
//! the block back by writing `TP_STATUS_KERNEL`. Both sides walk the blocks in order and wrap
//! around at the end.
//!
//! TPACKET_V2 ([`RingVersion::V2`]): the RX ring is a sequence of fixed-size frame slots, each a
//! `tpacket2_hdr` with its own `tp_status`; the kernel hands a slot over by setting
//! `TP_STATUS_USER` as soon as it has written the frame, and we hand it back by writing
//! `TP_STATUS_KERNEL`. To keep one API for both, [`RxRing::next_block`] returns a run of
//! consecutive ready slots as an [`RxBlock`], and dropping it hands back every slot of the run.
//!
//! The TX ring is a sequence of fixed-size slots (`tpacket2_hdr` or `tpacket3_hdr` frames; for
//! V3 `tp_next_offset` must be 0). A slot is ours while its `tp_status` is `TP_STATUS_AVAILABLE`; we
//! write the frame after the header, set `tp_len` and mark it `TP_STATUS_SEND_REQUEST`; the
//! kernel sends it on the next `send()` and sets it available again once the frame has left.
//!
//! Status words are read with acquire and written with release ordering, which pairs with the
//! kernel's `smp_rmb`/`smp_wmb` around them. Everything here works on any [`Mmap`], so the unit
//! tests run the same code against a fake kernel over anonymous memory.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use super::mmap::Mmap;

/// Byte layout of `struct tpacket_block_desc` (version, offset_to_priv, then `tpacket_hdr_v1`).
mod block {
    pub(super) const BLOCK_STATUS: usize = 8;
    pub(super) const NUM_PKTS: usize = 12;
    pub(super) const OFFSET_TO_FIRST_PKT: usize = 16;
    pub(super) const BLK_LEN: usize = 20;
    pub(super) const SEQ_NUM: usize = 24;
    /// `sizeof(struct tpacket_block_desc)`.
    pub(super) const LEN: usize = 48;
}

/// Byte layout of `struct tpacket3_hdr`.
mod pkt {
    pub(super) const NEXT_OFFSET: usize = 0;
    pub(super) const SEC: usize = 4;
    pub(super) const NSEC: usize = 8;
    pub(super) const SNAPLEN: usize = 12;
    pub(super) const LEN: usize = 16;
    pub(super) const STATUS: usize = 20;
    pub(super) const MAC: usize = 24;
    pub(super) const NET: usize = 26;
    pub(super) const VLAN_TCI: usize = 32;
    pub(super) const VLAN_TPID: usize = 36;
    /// `TPACKET_ALIGN(sizeof(struct tpacket3_hdr))`: where TX frame data starts in a slot.
    pub(super) const HDR_LEN: usize = 48;
}

/// Byte layout of `struct tpacket2_hdr`.
mod pkt2 {
    pub(super) const STATUS: usize = 0;
    pub(super) const LEN: usize = 4;
    pub(super) const SNAPLEN: usize = 8;
    pub(super) const MAC: usize = 12;
    pub(super) const SEC: usize = 16;
    pub(super) const NSEC: usize = 20;
    pub(super) const VLAN_TCI: usize = 24;
    pub(super) const VLAN_TPID: usize = 26;
    /// `TPACKET_ALIGN(sizeof(struct tpacket2_hdr))`: where TX frame data starts in a slot.
    pub(super) const HDR_LEN: usize = 32;
}

// The offsets above must match the C structures as libc declares them.
const _: () = {
    use std::mem::{offset_of, size_of};
    assert!(offset_of!(libc::tpacket2_hdr, tp_status) == pkt2::STATUS);
    assert!(offset_of!(libc::tpacket2_hdr, tp_len) == pkt2::LEN);
    assert!(offset_of!(libc::tpacket2_hdr, tp_snaplen) == pkt2::SNAPLEN);
    assert!(offset_of!(libc::tpacket2_hdr, tp_mac) == pkt2::MAC);
    assert!(offset_of!(libc::tpacket2_hdr, tp_sec) == pkt2::SEC);
    assert!(offset_of!(libc::tpacket2_hdr, tp_nsec) == pkt2::NSEC);
    assert!(offset_of!(libc::tpacket2_hdr, tp_vlan_tci) == pkt2::VLAN_TCI);
    assert!(offset_of!(libc::tpacket2_hdr, tp_vlan_tpid) == pkt2::VLAN_TPID);
    assert!(size_of::<libc::tpacket2_hdr>() == pkt2::HDR_LEN);
};

const _: () = {
    use std::mem::{offset_of, size_of};
    assert!(size_of::<libc::tpacket_block_desc>() == block::LEN);
    assert!(offset_of!(libc::tpacket_block_desc, hdr) == block::BLOCK_STATUS);
    assert!(offset_of!(libc::tpacket_hdr_v1, num_pkts) + 8 == block::NUM_PKTS);
    assert!(
        offset_of!(libc::tpacket_hdr_v1, offset_to_first_pkt) + 8 == block::OFFSET_TO_FIRST_PKT
    );
    assert!(offset_of!(libc::tpacket_hdr_v1, blk_len) + 8 == block::BLK_LEN);
    assert!(offset_of!(libc::tpacket_hdr_v1, seq_num) + 8 == block::SEQ_NUM);
    assert!(offset_of!(libc::tpacket3_hdr, tp_next_offset) == pkt::NEXT_OFFSET);
    assert!(offset_of!(libc::tpacket3_hdr, tp_sec) == pkt::SEC);
    assert!(offset_of!(libc::tpacket3_hdr, tp_nsec) == pkt::NSEC);
    assert!(offset_of!(libc::tpacket3_hdr, tp_snaplen) == pkt::SNAPLEN);
    assert!(offset_of!(libc::tpacket3_hdr, tp_len) == pkt::LEN);
    assert!(offset_of!(libc::tpacket3_hdr, tp_status) == pkt::STATUS);
    assert!(offset_of!(libc::tpacket3_hdr, tp_mac) == pkt::MAC);
    assert!(offset_of!(libc::tpacket3_hdr, tp_net) == pkt::NET);
    assert!(offset_of!(libc::tpacket3_hdr, hv1) + 4 == pkt::VLAN_TCI);
    assert!(offset_of!(libc::tpacket3_hdr, hv1) + 8 == pkt::VLAN_TPID);
    assert!(size_of::<libc::tpacket3_hdr>() == pkt::HDR_LEN);
};

/// `TP_STATUS_KERNEL` / `TP_STATUS_AVAILABLE`.
const STATUS_KERNEL: u32 = libc::TP_STATUS_KERNEL;
const STATUS_USER: u32 = libc::TP_STATUS_USER;
const STATUS_COPY: u32 = libc::TP_STATUS_COPY;
const STATUS_VLAN_VALID: u32 = libc::TP_STATUS_VLAN_VALID;
const STATUS_VLAN_TPID_VALID: u32 = libc::TP_STATUS_VLAN_TPID_VALID;
const STATUS_AVAILABLE: u32 = libc::TP_STATUS_AVAILABLE;
const STATUS_SEND_REQUEST: u32 = libc::TP_STATUS_SEND_REQUEST;
const STATUS_WRONG_FORMAT: u32 = libc::TP_STATUS_WRONG_FORMAT;
const STATUS_CSUMNOTREADY: u32 = libc::TP_STATUS_CSUMNOTREADY;

/// Reads a native-endian `u32` at `p`.
///
/// # Safety
///
/// `p..p + 4` must lie inside a live mapping.
unsafe fn read_u32(p: *const u8) -> u32 {
    // SAFETY: in bounds per the caller; unaligned read because nothing guarantees alignment.
    unsafe { p.cast::<u32>().read_unaligned() }
}

/// Reads a native-endian `u16` at `p`.
///
/// # Safety
///
/// `p..p + 2` must lie inside a live mapping.
unsafe fn read_u16(p: *const u8) -> u16 {
    // SAFETY: in bounds per the caller.
    unsafe { p.cast::<u16>().read_unaligned() }
}

/// The status word at `p`, shared with the kernel.
///
/// # Safety
///
/// `p` must be 4-byte aligned and point at a `u32` inside a live mapping that is only accessed
/// atomically (or by the kernel with its barriers) while the returned reference lives.
unsafe fn status_word<'a>(p: *mut u8) -> &'a AtomicU32 {
    // SAFETY: alignment and lifetime per the caller.
    unsafe { AtomicU32::from_ptr(p.cast::<u32>()) }
}

/// The ring layout of a packet socket (`PACKET_VERSION`); the kernel applies one per socket, to
/// both rings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum RingVersion {
    /// TPACKET_V2: fixed-size RX slots with a status each; a frame is readable as soon as the
    /// kernel has written it (lowest latency, one status word per frame).
    V2,
    /// TPACKET_V3: RX blocks packed with frames, handed over when full or after the block
    /// timeout (fewer wake-ups and better packing at high rates, up to the timeout of delay).
    #[default]
    V3,
}

/// A VLAN tag the kernel removed from a received frame and reported beside it.
///
/// Linux strips 802.1Q tags on receive before packet sockets see the frame, whatever the NIC
/// offloads, and reports them in the ring header instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VlanTag {
    /// Tag protocol identifier (0x8100 or 0x88a8); 0x8100 when the kernel did not say.
    pub tpid: u16,
    /// Tag control information (priority, DEI, VLAN id).
    pub tci: u16,
}

/// Counters of the RX walker, owned by the thread that reads the ring.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RxCounters {
    /// Blocks handed to us by the kernel (with TPACKET_V2: runs of ready frame slots read at
    /// once).
    pub blocks: u64,
    /// Frames in those blocks.
    pub frames: u64,
    /// Frames cut short (snap length below wire length, or copied by the kernel because the
    /// ring was short of room).
    pub truncated: u64,
    /// Packet headers that pointed outside their block (never seen from a real kernel); the
    /// rest of such a block is skipped.
    pub malformed: u64,
}

/// The RX half: walks TPACKET_V3 blocks or TPACKET_V2 frame slots in a mapping.
#[derive(Debug)]
pub(crate) struct RxRing {
    mem: Arc<Mmap>,
    offset: usize,
    version: RingVersion,
    /// V3: block size; V2: slot size.
    block_size: usize,
    /// V3: number of blocks; V2: number of slots.
    block_count: usize,
    next: usize,
    counters: RxCounters,
}

impl RxRing {
    /// A walker over `block_count` blocks of `block_size` bytes starting at `offset` in `mem`.
    ///
    /// # Panics
    ///
    /// When the ring does not fit in `mem`, a block is smaller than its descriptor, or blocks are
    /// not 8-byte aligned (programming errors: the sizes come from our own configuration).
    pub(crate) fn new(
        mem: Arc<Mmap>,
        offset: usize,
        block_size: usize,
        block_count: usize,
    ) -> Self {
        assert!(
            block_size >= block::LEN && block_size.is_multiple_of(8) && offset.is_multiple_of(8)
        );
        assert!(block_count > 0);
        let end = block_size
            .checked_mul(block_count)
            .and_then(|l| l.checked_add(offset))
            .expect("ring size overflows");
        assert!(end <= mem.len(), "rx ring outside its mapping");
        Self {
            mem,
            offset,
            version: RingVersion::V3,
            block_size,
            block_count,
            next: 0,
            counters: RxCounters::default(),
        }
    }

    /// A TPACKET_V2 walker over `frame_count` slots of `frame_size` bytes starting at `offset`
    /// in `mem` (the kernel's blocks must hold whole slots, so the slots are contiguous).
    ///
    /// # Panics
    ///
    /// When the ring does not fit in `mem`, a slot is smaller than its header, or slots are not
    /// 16-byte aligned (programming errors: the sizes come from our own configuration).
    pub(crate) fn new_v2(
        mem: Arc<Mmap>,
        offset: usize,
        frame_size: usize,
        frame_count: usize,
    ) -> Self {
        assert!(
            frame_size > pkt2::HDR_LEN
                && frame_size.is_multiple_of(16)
                && offset.is_multiple_of(16)
        );
        let mut ring = Self::new(mem, offset, frame_size, frame_count);
        ring.version = RingVersion::V2;
        ring
    }

    pub(crate) fn counters(&self) -> RxCounters {
        self.counters
    }

    fn block_ptr(&self, index: usize) -> *mut u8 {
        // SAFETY: `index < block_count`, and `new` checked that all blocks lie in the mapping.
        unsafe { self.mem.as_ptr().add(self.offset + index * self.block_size) }
    }

    /// Returns the next block if the kernel has handed it to us, in ring order.
    ///
    /// The block goes back to the kernel when the returned value is dropped.
    pub(crate) fn next_block(&mut self) -> Option<RxBlock<'_>> {
        match self.version {
            RingVersion::V2 => self.next_run_v2(),
            RingVersion::V3 => self.next_block_v3(),
        }
    }

    /// The run of consecutive slots, from `next` on, that the kernel has handed over.
    fn next_run_v2(&mut self) -> Option<RxBlock<'_>> {
        let mut slots = 0;
        let mut valid = 0u32;
        while slots < self.block_count {
            let slot = self.block_ptr((self.next + slots) % self.block_count);
            // SAFETY: slot starts are 16-aligned inside the live mapping (checked in `new_v2`);
            // the status word is only touched atomically by us and with barriers by the kernel.
            let status = unsafe { status_word(slot.add(pkt2::STATUS)) }.load(Ordering::Acquire);
            if status & STATUS_USER == 0 {
                break;
            }
            slots += 1;
            match self.packet_at_v2(slot) {
                Some(meta) => {
                    valid += 1;
                    if meta.truncated {
                        self.counters.truncated += 1;
                    }
                }
                None => self.counters.malformed += 1,
            }
        }
        if slots == 0 {
            return None;
        }
        self.counters.blocks += 1;
        self.counters.frames += u64::from(valid);
        Some(RxBlock {
            base: self.block_ptr(self.next),
            first: self.next,
            num_pkts: valid,
            slots,
            ring: self,
        })
    }

    /// Reads and bounds-checks the TPACKET_V2 header of the slot at `slot`.
    fn packet_at_v2(&self, slot: *mut u8) -> Option<PacketMeta> {
        // SAFETY: the header lies inside the slot (`frame_size > HDR_LEN`, checked in `new_v2`).
        let (snaplen, len, status, mac, tci, tpid, sec, nsec) = unsafe {
            (
                read_u32(slot.add(pkt2::SNAPLEN)),
                read_u32(slot.add(pkt2::LEN)),
                read_u32(slot.add(pkt2::STATUS)),
                read_u16(slot.add(pkt2::MAC)),
                read_u16(slot.add(pkt2::VLAN_TCI)),
                read_u16(slot.add(pkt2::VLAN_TPID)),
                read_u32(slot.add(pkt2::SEC)),
                read_u32(slot.add(pkt2::NSEC)),
            )
        };
        let data_start = usize::from(mac);
        let data_end = data_start.checked_add(snaplen as usize)?;
        if data_start < pkt2::HDR_LEN || data_end > self.block_size {
            return None;
        }
        Some(PacketMeta::new(
            0,
            data_start,
            snaplen,
            len,
            status,
            (tci, tpid),
            (sec, nsec),
        ))
    }

    /// The TPACKET_V3 block at `next` if the kernel has retired it.
    fn next_block_v3(&mut self) -> Option<RxBlock<'_>> {
        let base = self.block_ptr(self.next);
        // SAFETY: block starts are 8-aligned inside the live mapping (checked in `new`); the
        // status word is only touched atomically by us and with barriers by the kernel.
        let status = unsafe { status_word(base.add(block::BLOCK_STATUS)) }.load(Ordering::Acquire);
        if status & STATUS_USER == 0 {
            return None;
        }
        // The kernel no longer writes this block: the acquire load above orders these reads
        // after its last write. Walk the chain once to validate every header and count.
        // SAFETY: the descriptor lies inside the block (block_size >= block::LEN).
        let (num_pkts, first) = unsafe {
            (
                read_u32(base.add(block::NUM_PKTS)),
                read_u32(base.add(block::OFFSET_TO_FIRST_PKT)) as usize,
            )
        };
        let mut valid = 0u32;
        let mut off = first;
        let mut truncated = 0u64;
        while valid < num_pkts {
            let Some(meta) = self.packet_at(base, off) else {
                self.counters.malformed += 1;
                break;
            };
            if meta.truncated {
                truncated += 1;
            }
            valid += 1;
            if valid < num_pkts {
                if meta.next_offset == 0 {
                    self.counters.malformed += 1;
                    break;
                }
                off += meta.next_offset as usize;
            }
        }
        self.counters.blocks += 1;
        self.counters.frames += u64::from(valid);
        self.counters.truncated += truncated;
        Some(RxBlock {
            ring: self,
            base,
            first,
            num_pkts: valid,
            slots: 0,
        })
    }

    /// Reads and bounds-checks the packet header at `off` in the block at `base`.
    fn packet_at(&self, base: *mut u8, off: usize) -> Option<PacketMeta> {
        if off < block::LEN || off.checked_add(pkt::HDR_LEN)? > self.block_size {
            return None;
        }
        // SAFETY: `off + HDR_LEN <= block_size`, so the whole header is inside the block.
        let (next_offset, snaplen, len, status, mac, tci, tpid, sec, nsec) = unsafe {
            let h = base.add(off);
            (
                read_u32(h.add(pkt::NEXT_OFFSET)),
                read_u32(h.add(pkt::SNAPLEN)),
                read_u32(h.add(pkt::LEN)),
                read_u32(h.add(pkt::STATUS)),
                read_u16(h.add(pkt::MAC)),
                read_u32(h.add(pkt::VLAN_TCI)),
                read_u16(h.add(pkt::VLAN_TPID)),
                read_u32(h.add(pkt::SEC)),
                read_u32(h.add(pkt::NSEC)),
            )
        };
        let data_start = off.checked_add(usize::from(mac))?;
        let data_end = data_start.checked_add(snaplen as usize)?;
        if data_end > self.block_size {
            return None;
        }
        Some(PacketMeta::new(
            next_offset,
            data_start,
            snaplen,
            len,
            status,
            (tci as u16, tpid),
            (sec, nsec),
        ))
    }
}

struct PacketMeta {
    next_offset: u32,
    data_start: usize,
    data_len: usize,
    wire_len: u32,
    truncated: bool,
    csum_not_ready: bool,
    vlan: Option<VlanTag>,
    sec: u32,
    nsec: u32,
}

impl PacketMeta {
    fn new(
        next_offset: u32,
        data_start: usize,
        snaplen: u32,
        len: u32,
        status: u32,
        (tci, tpid): (u16, u16),
        (sec, nsec): (u32, u32),
    ) -> Self {
        let vlan = (status & STATUS_VLAN_VALID != 0).then_some(VlanTag {
            tpid: if status & STATUS_VLAN_TPID_VALID != 0 {
                tpid
            } else {
                0x8100
            },
            tci,
        });
        Self {
            next_offset,
            data_start,
            data_len: snaplen as usize,
            wire_len: len,
            truncated: snaplen < len || status & STATUS_COPY != 0,
            csum_not_ready: status & STATUS_CSUMNOTREADY != 0,
            vlan,
            sec,
            nsec,
        }
    }
}

/// A block of received frames that the kernel has handed to us (with TPACKET_V2, a run of ready
/// frame slots); dropping it hands it back.
///
/// Frames borrow the block, so none can outlive its return to the kernel.
#[derive(Debug)]
pub struct RxBlock<'r> {
    ring: &'r mut RxRing,
    /// V3: the block; V2: the first slot of the run.
    base: *mut u8,
    /// V3: offset of the first packet in the block; V2: index of the first slot.
    first: usize,
    num_pkts: u32,
    /// V2: slots in the run (malformed ones included); 0 for V3.
    slots: usize,
}

impl RxBlock<'_> {
    /// The number of frames in the block.
    pub fn len(&self) -> usize {
        self.num_pkts as usize
    }

    /// Whether the block holds no frames (a V3 block retired by the timeout while empty).
    pub fn is_empty(&self) -> bool {
        self.num_pkts == 0
    }

    /// The frames of the block, in arrival order, as slices of the ring (no copy).
    pub fn frames(&self) -> RxFrames<'_> {
        RxFrames {
            ring: self.ring,
            base: self.base,
            off: self.first,
            left: self.num_pkts,
            slots_left: self.slots,
        }
    }
}

impl Drop for RxBlock<'_> {
    fn drop(&mut self) {
        let ring = &mut *self.ring;
        if ring.version == RingVersion::V2 {
            for i in 0..self.slots {
                let slot = ring.block_ptr((self.first + i) % ring.block_count);
                // SAFETY: slot starts are 16-aligned inside the live mapping; no frame slice of
                // this run is alive (they borrow `self`). Release orders our reads before the
                // hand-back.
                unsafe { status_word(slot.add(pkt2::STATUS)) }
                    .store(STATUS_KERNEL, Ordering::Release);
            }
            ring.next = (self.first + self.slots) % ring.block_count;
            return;
        }
        // SAFETY: the block start is 8-aligned inside the live mapping; no frame slice of this
        // block is alive (they borrow `self`). Release orders our reads before the hand-back.
        unsafe { status_word(self.base.add(block::BLOCK_STATUS)) }
            .store(STATUS_KERNEL, Ordering::Release);
        ring.next = (ring.next + 1) % ring.block_count;
    }
}

/// Iterator over the frames of an [`RxBlock`].
#[derive(Debug)]
pub struct RxFrames<'b> {
    ring: &'b RxRing,
    base: *mut u8,
    /// V3: offset of the next packet in the block; V2: index of the next slot.
    off: usize,
    left: u32,
    /// V2: slots of the run not yet visited.
    slots_left: usize,
}

impl<'b> Iterator for RxFrames<'b> {
    type Item = RxFrame<'b>;

    fn next(&mut self) -> Option<RxFrame<'b>> {
        if self.left == 0 {
            return None;
        }
        let (base, meta) = if self.ring.version == RingVersion::V2 {
            // Skip the malformed slots `next_run_v2` counted; `left` valid ones remain.
            loop {
                if self.slots_left == 0 {
                    return None;
                }
                let slot = self.ring.block_ptr(self.off % self.ring.block_count);
                self.off += 1;
                self.slots_left -= 1;
                if let Some(meta) = self.ring.packet_at_v2(slot) {
                    break (slot, meta);
                }
            }
        } else {
            // `next_block` validated the first `num_pkts` headers of the chain.
            let meta = self.ring.packet_at(self.base, self.off)?;
            self.off += meta.next_offset as usize;
            (self.base, meta)
        };
        self.left -= 1;
        // SAFETY: `packet_at`/`packet_at_v2` checked that the data lies inside the block, the block belongs to
        // user space until the `RxBlock` (which this iterator borrows) is dropped, and the
        // mapping outlives the block.
        let data = unsafe {
            std::slice::from_raw_parts(base.add(meta.data_start).cast_const(), meta.data_len)
        };
        Some(RxFrame {
            data,
            wire_len: meta.wire_len,
            truncated: meta.truncated,
            csum_not_ready: meta.csum_not_ready,
            vlan: meta.vlan,
            sec: meta.sec,
            nsec: meta.nsec,
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.left as usize))
    }
}

/// One received frame, borrowed from the ring.
#[derive(Debug, Clone, Copy)]
pub struct RxFrame<'b> {
    data: &'b [u8],
    wire_len: u32,
    truncated: bool,
    csum_not_ready: bool,
    vlan: Option<VlanTag>,
    sec: u32,
    nsec: u32,
}

impl<'b> RxFrame<'b> {
    /// The frame bytes from the destination MAC on (without a stripped VLAN tag, see
    /// [`vlan`](Self::vlan)).
    pub fn data(&self) -> &'b [u8] {
        self.data
    }

    /// The length of the frame on the wire (larger than `data().len()` when truncated).
    pub fn wire_len(&self) -> u32 {
        self.wire_len
    }

    /// Whether the frame was cut short.
    pub fn is_truncated(&self) -> bool {
        self.truncated
    }

    /// Whether the sender left the TCP/UDP checksum to "hardware" (`TP_STATUS_CSUMNOTREADY`):
    /// the frame comes from this host (a veth, container or VM behind a bridge) and its L4
    /// checksum field holds only the pseudo-header sum. Forwarding such a frame off this host
    /// needs the checksum completed first, or the receiver drops it.
    pub fn checksum_not_ready(&self) -> bool {
        self.csum_not_ready
    }

    /// The VLAN tag the kernel stripped, if any.
    pub fn vlan(&self) -> Option<VlanTag> {
        self.vlan
    }

    /// The kernel's receive timestamp (seconds, nanoseconds; realtime clock).
    pub fn timestamp(&self) -> (u32, u32) {
        (self.sec, self.nsec)
    }

    /// The length of the frame as it was on the wire, counting a stripped VLAN tag: what
    /// [`copy_tagged`](Self::copy_tagged) writes.
    pub fn tagged_len(&self) -> usize {
        self.data.len() + if self.vlan.is_some() { 4 } else { 0 }
    }

    /// Copies the frame into `out` with the stripped VLAN tag (if any) put back after the source
    /// MAC, restoring the frame as it was on the wire. Returns the bytes written, or `None` when
    /// `out` is shorter than [`tagged_len`](Self::tagged_len) or the frame has no MAC header.
    pub fn copy_tagged(&self, out: &mut [u8]) -> Option<usize> {
        let len = self.tagged_len();
        let out = out.get_mut(..len)?;
        match self.vlan {
            None => out.copy_from_slice(self.data),
            Some(tag) => {
                let (macs, rest) = (self.data.get(..12)?, &self.data[12..]);
                out[..12].copy_from_slice(macs);
                out[12..14].copy_from_slice(&tag.tpid.to_be_bytes());
                out[14..16].copy_from_slice(&tag.tci.to_be_bytes());
                out[16..].copy_from_slice(rest);
            }
        }
        Some(len)
    }
}

/// Why a frame could not be queued on the TX ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TxError {
    /// Every slot is waiting for the kernel; flush and wait for `POLLOUT`.
    #[error("tx ring full")]
    RingFull,
    /// The frame does not fit in a slot.
    #[error("frame of {len} bytes exceeds the tx slot capacity of {max} bytes")]
    TooLarge {
        /// Frame length.
        len: usize,
        /// Largest frame a slot holds.
        max: usize,
    },
    /// The socket has no TX ring.
    #[error("no tx ring configured")]
    NoRing,
}

/// Counters of the TX writer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TxCounters {
    /// Frames queued on the ring.
    pub frames: u64,
    /// Frames refused because every slot was busy.
    pub ring_full: u64,
    /// Frames refused for their size.
    pub too_large: u64,
    /// Slots the kernel rejected as malformed (`TP_STATUS_WRONG_FORMAT`).
    pub wrong_format: u64,
}

/// Bytes of the `struct virtio_net_hdr` that leads every TX slot's data when the socket has
/// `PACKET_VNET_HDR` set.
pub(crate) const VNET_HDR_LEN: usize = 10;
/// Offset of `hdr_len` (little-endian `u16`) in `struct virtio_net_hdr`.
const VNET_HDR_HDR_LEN: usize = 2;

/// The TX half: fills fixed-size TPACKET_V2 or TPACKET_V3 slots in a mapping.
#[derive(Debug)]
pub(crate) struct TxRing {
    mem: Arc<Mmap>,
    offset: usize,
    version: RingVersion,
    frame_size: usize,
    frame_count: usize,
    /// Largest frame accepted; at most the slot capacity.
    limit: usize,
    next: usize,
    pending: usize,
    counters: TxCounters,
    /// Each frame is preceded by a `virtio_net_hdr` whose `hdr_len` covers the whole frame.
    vnet_hdr: bool,
}

impl TxRing {
    /// A writer over `frame_count` slots of `frame_size` bytes starting at `offset` in `mem`.
    ///
    /// # Panics
    ///
    /// When the ring does not fit in `mem`, or slots are too small or not 16-byte aligned
    /// (programming errors: the sizes come from our own configuration).
    pub(crate) fn new(
        mem: Arc<Mmap>,
        offset: usize,
        frame_size: usize,
        frame_count: usize,
    ) -> Self {
        assert!(
            frame_size > pkt::HDR_LEN && frame_size.is_multiple_of(16) && offset.is_multiple_of(16)
        );
        assert!(frame_count > 0);
        let end = frame_size
            .checked_mul(frame_count)
            .and_then(|l| l.checked_add(offset))
            .expect("ring size overflows");
        assert!(end <= mem.len(), "tx ring outside its mapping");
        Self {
            mem,
            offset,
            version: RingVersion::V3,
            frame_size,
            frame_count,
            limit: frame_size - pkt::HDR_LEN,
            next: 0,
            pending: 0,
            counters: TxCounters::default(),
            vnet_hdr: false,
        }
    }

    /// A writer over TPACKET_V2 slots (`tpacket2_hdr`, data at offset 32); otherwise as
    /// [`new`](Self::new).
    pub(crate) fn new_v2(
        mem: Arc<Mmap>,
        offset: usize,
        frame_size: usize,
        frame_count: usize,
    ) -> Self {
        let mut ring = Self::new(mem, offset, frame_size, frame_count);
        ring.version = RingVersion::V2;
        ring.limit = frame_size - pkt2::HDR_LEN;
        ring
    }

    /// Puts a `virtio_net_hdr` before every frame from now on, with `hdr_len` set to the
    /// frame's length, so the kernel copies the whole frame into the socket buffer's linear
    /// area instead of attaching the slot's page as a fragment. For a socket with
    /// `PACKET_VNET_HDR` set (before the rings).
    pub(crate) fn use_vnet_hdr(&mut self) {
        self.vnet_hdr = true;
        self.limit = self.limit.min(self.frame_size - self.data_offset());
    }

    /// Where the slot's payload (the `virtio_net_hdr`, if any, then the frame) starts.
    fn payload_offset(&self) -> usize {
        match self.version {
            RingVersion::V2 => pkt2::HDR_LEN,
            RingVersion::V3 => pkt::HDR_LEN,
        }
    }

    /// Where frame data starts in a slot.
    fn data_offset(&self) -> usize {
        self.payload_offset() + if self.vnet_hdr { VNET_HDR_LEN } else { 0 }
    }

    /// Largest frame accepted.
    pub(crate) fn max_frame(&self) -> usize {
        self.limit
    }

    /// Lowers the largest accepted frame to `limit` (never above the slot capacity): the kernel
    /// rejects frames longer than the device MTU allows, and a rejected slot must not reach it.
    pub(crate) fn limit_frame(&mut self, limit: usize) {
        self.limit = limit.min(self.frame_size - self.data_offset());
    }

    pub(crate) fn counters(&self) -> TxCounters {
        self.counters
    }

    /// Frames queued since the last [`flushed`](Self::flushed).
    pub(crate) fn pending(&self) -> usize {
        self.pending
    }

    /// Records that the kernel has been kicked for all pending frames.
    pub(crate) fn flushed(&mut self) {
        self.pending = 0;
    }

    fn slot_ptr(&self, index: usize) -> *mut u8 {
        // SAFETY: `index < frame_count`; `new` checked that all slots lie in the mapping.
        unsafe { self.mem.as_ptr().add(self.offset + index * self.frame_size) }
    }

    /// Queues a frame of `len` bytes written by `fill` straight into the next free slot.
    ///
    /// # Errors
    ///
    /// [`TxError::TooLarge`] or [`TxError::RingFull`]; both are counted.
    pub(crate) fn push_with(
        &mut self,
        len: usize,
        fill: impl FnOnce(&mut [u8]),
    ) -> Result<(), TxError> {
        if len > self.max_frame() {
            self.counters.too_large += 1;
            return Err(TxError::TooLarge {
                len,
                max: self.max_frame(),
            });
        }
        let slot = self.slot_ptr(self.next);
        let (status_at, len_at, snaplen_at) = match self.version {
            RingVersion::V2 => (pkt2::STATUS, pkt2::LEN, pkt2::SNAPLEN),
            RingVersion::V3 => (pkt::STATUS, pkt::LEN, pkt::SNAPLEN),
        };
        // SAFETY: slot starts are 16-aligned inside the live mapping; the status word is shared
        // with the kernel and only accessed atomically here.
        let status = unsafe { status_word(slot.add(status_at)) };
        match status.load(Ordering::Acquire) {
            STATUS_AVAILABLE => {}
            STATUS_WRONG_FORMAT => self.counters.wrong_format += 1,
            _ => {
                self.counters.ring_full += 1;
                return Err(TxError::RingFull);
            }
        }
        // SAFETY: the slot is ours (status available); header, virtio header and
        // `len <= max_frame` data bytes lie inside it (`max_frame` leaves room for both). The
        // kernel reads none of them until the release store below.
        unsafe {
            let mut tp_len = len;
            if self.vnet_hdr {
                // flags 0, no GSO, no checksum offload; hdr_len = the whole frame, which
                // tpacket_snd copies into the linear area (at most the MTU + 18 < u16::MAX).
                let vnet =
                    std::slice::from_raw_parts_mut(slot.add(self.payload_offset()), VNET_HDR_LEN);
                vnet.fill(0);
                vnet[VNET_HDR_HDR_LEN..VNET_HDR_HDR_LEN + 2]
                    .copy_from_slice(&(len as u16).to_le_bytes());
                tp_len += VNET_HDR_LEN;
            }
            let data = std::slice::from_raw_parts_mut(slot.add(self.data_offset()), len);
            fill(data);
            let len32 = tp_len as u32;
            slot.add(len_at).cast::<u32>().write_unaligned(len32);
            slot.add(snaplen_at).cast::<u32>().write_unaligned(len32);
            if self.version == RingVersion::V3 {
                slot.add(pkt::NEXT_OFFSET).cast::<u32>().write_unaligned(0);
            }
        }
        status.store(STATUS_SEND_REQUEST, Ordering::Release);
        self.next = (self.next + 1) % self.frame_count;
        self.pending += 1;
        self.counters.frames += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    //! A fake kernel over anonymous memory drives the ring code through the same status
    //! protocol the real kernel uses.

    use super::*;

    const BLOCK: usize = 4096;

    /// Plays the kernel's side of an RX ring.
    struct FakeRxKernel {
        mem: Arc<Mmap>,
        block_count: usize,
        next: usize,
        seq: u64,
        /// Frames that found no free block, like the kernel's `tp_drops`.
        drops: u64,
    }

    impl FakeRxKernel {
        fn new(block_count: usize) -> (Self, RxRing) {
            let mem = Arc::new(Mmap::anonymous(BLOCK * block_count).unwrap());
            let ring = RxRing::new(Arc::clone(&mem), 0, BLOCK, block_count);
            let kernel = Self {
                mem,
                block_count,
                next: 0,
                seq: 0,
                drops: 0,
            };
            (kernel, ring)
        }

        fn block(&self, index: usize) -> *mut u8 {
            // SAFETY: index < block_count, inside the mapping.
            unsafe { self.mem.as_ptr().add(index * BLOCK) }
        }

        /// Fills the next block with `frames` (each `(bytes, wire_len, status)`) and retires it,
        /// or counts them as drops when user space still holds that block.
        fn retire(&mut self, frames: &[(&[u8], u32, u32)]) -> bool {
            let base = self.block(self.next);
            // SAFETY: aligned status word inside the mapping.
            let status = unsafe { status_word(base.add(block::BLOCK_STATUS)) };
            if status.load(Ordering::Acquire) != STATUS_KERNEL {
                self.drops += frames.len() as u64;
                return false;
            }
            let mut off = block::LEN;
            let mut prev: Option<usize> = None;
            for (data, wire_len, pstatus) in frames {
                // Like the kernel: header, then the frame at an aligned tp_mac.
                let mac = 2 + pkt::HDR_LEN.next_multiple_of(16);
                let total = (mac + data.len()).next_multiple_of(16);
                assert!(off + total <= BLOCK, "test frames overflow the block");
                // SAFETY: everything written lies inside this block of the mapping.
                unsafe {
                    let h = base.add(off);
                    h.add(pkt::SNAPLEN)
                        .cast::<u32>()
                        .write_unaligned(data.len() as u32);
                    h.add(pkt::LEN).cast::<u32>().write_unaligned(*wire_len);
                    h.add(pkt::STATUS).cast::<u32>().write_unaligned(*pstatus);
                    h.add(pkt::MAC).cast::<u16>().write_unaligned(mac as u16);
                    h.add(pkt::VLAN_TCI).cast::<u32>().write_unaligned(42);
                    h.add(pkt::NEXT_OFFSET).cast::<u32>().write_unaligned(0);
                    std::ptr::copy_nonoverlapping(data.as_ptr(), h.add(mac), data.len());
                    if let Some(p) = prev {
                        base.add(p)
                            .add(pkt::NEXT_OFFSET)
                            .cast::<u32>()
                            .write_unaligned((off - p) as u32);
                    }
                }
                prev = Some(off);
                off += total;
            }
            self.seq += 1;
            // SAFETY: descriptor fields inside the block.
            unsafe {
                base.add(block::NUM_PKTS)
                    .cast::<u32>()
                    .write_unaligned(frames.len() as u32);
                base.add(block::OFFSET_TO_FIRST_PKT)
                    .cast::<u32>()
                    .write_unaligned(block::LEN as u32);
                base.add(block::BLK_LEN)
                    .cast::<u32>()
                    .write_unaligned(off as u32);
                base.add(block::SEQ_NUM)
                    .cast::<u64>()
                    .write_unaligned(self.seq);
            }
            status.store(STATUS_USER, Ordering::Release);
            self.next = (self.next + 1) % self.block_count;
            true
        }

        fn corrupt_first_offset(&self, index: usize, value: u32) {
            // SAFETY: descriptor field inside the block.
            unsafe {
                self.block(index)
                    .add(block::OFFSET_TO_FIRST_PKT)
                    .cast::<u32>()
                    .write_unaligned(value);
            }
        }
    }

    fn collect(ring: &mut RxRing) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(b) = ring.next_block() {
            out.extend(b.frames().map(|f| f.data().to_vec()));
        }
        out
    }

    #[test]
    fn empty_ring_yields_nothing() {
        let (_kernel, mut ring) = FakeRxKernel::new(4);
        assert!(ring.next_block().is_none());
        assert_eq!(ring.counters(), RxCounters::default());
    }

    #[test]
    fn frames_of_a_block_come_out_in_order_and_byte_for_byte() {
        let (mut kernel, mut ring) = FakeRxKernel::new(4);
        let a = [0xaa; 60];
        let b: Vec<u8> = (0..=255).cycle().take(1514).collect();
        let c = [1, 2, 3];
        assert!(kernel.retire(&[(&a, 60, 0), (&b, 1514, 0), (&c, 3, 0)]));
        let blk = ring.next_block().expect("block ready");
        assert_eq!(blk.len(), 3);
        let got: Vec<&[u8]> = blk.frames().map(|f| f.data()).collect();
        assert_eq!(got, vec![&a[..], &b[..], &c[..]]);
        drop(blk);
        assert!(ring.next_block().is_none());
        assert_eq!(ring.counters().frames, 3);
        assert_eq!(ring.counters().blocks, 1);
    }

    #[test]
    fn a_block_goes_back_to_the_kernel_only_when_dropped() {
        let (mut kernel, mut ring) = FakeRxKernel::new(2);
        assert!(kernel.retire(&[(&[1], 1, 0)]));
        assert!(kernel.retire(&[(&[2], 1, 0)]));
        // Both blocks are with user space: the kernel must drop.
        assert!(!kernel.retire(&[(&[3], 1, 0)]));
        assert_eq!(kernel.drops, 1);
        let blk = ring.next_block().unwrap();
        assert!(!kernel.retire(&[(&[3], 1, 0)]), "block still held");
        drop(blk);
        assert!(kernel.retire(&[(&[3], 1, 0)]), "block returned on drop");
        assert_eq!(collect(&mut ring), vec![vec![2], vec![3]]);
    }

    #[test]
    fn walking_wraps_around_many_times() {
        let (mut kernel, mut ring) = FakeRxKernel::new(3);
        let mut expected = Vec::new();
        let mut got = Vec::new();
        for round in 0u32..50 {
            let n = (round % 4) as usize + 1;
            let frames: Vec<Vec<u8>> = (0..n)
                .map(|i| (round * 10 + i as u32).to_be_bytes().to_vec())
                .collect();
            let refs: Vec<(&[u8], u32, u32)> = frames.iter().map(|f| (&f[..], 4, 0)).collect();
            assert!(kernel.retire(&refs));
            expected.extend(frames);
            if round % 2 == 1 {
                got.extend(collect(&mut ring));
            }
        }
        got.extend(collect(&mut ring));
        assert_eq!(got, expected);
        assert_eq!(kernel.drops, 0);
        assert_eq!(ring.counters().blocks, 50);
    }

    #[test]
    fn truncation_vlan_and_unfinished_checksums_are_reported() {
        let (mut kernel, mut ring) = FakeRxKernel::new(2);
        assert!(kernel.retire(&[
            (&[9; 100], 3000, 0),
            (&[8; 64], 64, STATUS_VLAN_VALID),
            (&[7; 64], 64, STATUS_COPY),
            (&[6; 64], 64, STATUS_CSUMNOTREADY),
        ]));
        let blk = ring.next_block().unwrap();
        let frames: Vec<RxFrame<'_>> = blk.frames().collect();
        assert!(frames[0].is_truncated());
        assert_eq!(frames[0].wire_len(), 3000);
        assert_eq!(frames[0].data().len(), 100);
        assert_eq!(
            frames[1].vlan(),
            Some(VlanTag {
                tpid: 0x8100,
                tci: 42
            })
        );
        assert!(!frames[1].is_truncated());
        assert!(frames[2].is_truncated());
        assert!(frames[3].checksum_not_ready());
        assert!(!frames[2].checksum_not_ready() && !frames[0].checksum_not_ready());
        drop(frames);
        drop(blk);
        assert_eq!(ring.counters().truncated, 2);
    }

    #[test]
    fn a_stripped_vlan_tag_is_put_back_after_the_source_mac() {
        let (mut kernel, mut ring) = FakeRxKernel::new(2);
        let untagged: Vec<u8> = (0..64).collect();
        assert!(kernel.retire(&[(&untagged, 64, STATUS_VLAN_VALID), (&untagged, 64, 0)]));
        let blk = ring.next_block().unwrap();
        let mut frames = blk.frames();
        let tagged = frames.next().unwrap();
        assert_eq!(tagged.tagged_len(), 68);
        let mut out = [0u8; 100];
        assert_eq!(tagged.copy_tagged(&mut out[..67]), None);
        assert_eq!(tagged.copy_tagged(&mut out), Some(68));
        assert_eq!(out[..12], untagged[..12]);
        // The fake kernel reports TCI 42 and no TPID, which means 802.1Q.
        assert_eq!(out[12..16], [0x81, 0x00, 0x00, 42]);
        assert_eq!(out[16..68], untagged[12..]);
        let plain = frames.next().unwrap();
        assert_eq!(plain.copy_tagged(&mut out), Some(64));
        assert_eq!(out[..64], untagged[..]);
    }

    #[test]
    fn headers_pointing_outside_the_block_are_counted_not_followed() {
        let (mut kernel, mut ring) = FakeRxKernel::new(2);
        assert!(kernel.retire(&[(&[1; 10], 10, 0)]));
        kernel.corrupt_first_offset(0, (BLOCK - 8) as u32);
        let blk = ring.next_block().unwrap();
        assert!(blk.is_empty());
        assert_eq!(blk.frames().count(), 0);
        drop(blk);
        assert_eq!(ring.counters().malformed, 1);
        // The ring moves on normally afterwards.
        assert!(kernel.retire(&[(&[2], 1, 0)]));
        assert_eq!(collect(&mut ring), vec![vec![2]]);
    }

    /// Plays the kernel's side of a TX ring: takes every requested slot in order.
    struct FakeTxKernel {
        mem: Arc<Mmap>,
        version: RingVersion,
        frame_size: usize,
        frame_count: usize,
        next: usize,
        /// The `virtio_net_hdr` of each frame taken (with PACKET_VNET_HDR).
        vnet: Vec<[u8; VNET_HDR_LEN]>,
        vnet_hdr: bool,
    }

    const VERSIONS: [RingVersion; 2] = [RingVersion::V2, RingVersion::V3];

    impl FakeTxKernel {
        fn new(version: RingVersion, frame_size: usize, frame_count: usize) -> (Self, TxRing) {
            let mem = Arc::new(Mmap::anonymous(frame_size * frame_count).unwrap());
            let ring = match version {
                RingVersion::V2 => TxRing::new_v2(Arc::clone(&mem), 0, frame_size, frame_count),
                RingVersion::V3 => TxRing::new(Arc::clone(&mem), 0, frame_size, frame_count),
            };
            let k = Self {
                mem,
                version,
                frame_size,
                frame_count,
                next: 0,
                vnet: Vec::new(),
                vnet_hdr: false,
            };
            (k, ring)
        }

        fn status_at(&self) -> usize {
            match self.version {
                RingVersion::V2 => pkt2::STATUS,
                RingVersion::V3 => pkt::STATUS,
            }
        }

        /// Sends up to `max` requested frames, like `tpacket_snd`, marking slots available.
        fn send(&mut self, max: usize) -> Vec<Vec<u8>> {
            let mut out = Vec::new();
            while out.len() < max {
                // SAFETY: slot inside the mapping, aligned status word.
                let slot = unsafe { self.mem.as_ptr().add(self.next * self.frame_size) };
                // SAFETY: as above.
                let status = unsafe { status_word(slot.add(self.status_at())) };
                if status.load(Ordering::Acquire) != STATUS_SEND_REQUEST {
                    break;
                }
                // SAFETY: the header and `len` data bytes lie inside the slot.
                let mut frame = unsafe {
                    match self.version {
                        RingVersion::V2 => {
                            // Like the kernel without PACKET_TX_HAS_OFF: data right after the
                            // aligned header.
                            let len = read_u32(slot.add(pkt2::LEN)) as usize;
                            std::slice::from_raw_parts(slot.add(pkt2::HDR_LEN), len).to_vec()
                        }
                        RingVersion::V3 => {
                            let len = read_u32(slot.add(pkt::LEN)) as usize;
                            assert_eq!(read_u32(slot.add(pkt::NEXT_OFFSET)), 0);
                            std::slice::from_raw_parts(slot.add(pkt::HDR_LEN), len).to_vec()
                        }
                    }
                };
                if self.vnet_hdr {
                    // Like tpacket_snd with a vnet header size: the header leads tp_len.
                    let rest = frame.split_off(VNET_HDR_LEN);
                    self.vnet.push(frame.try_into().unwrap());
                    frame = rest;
                }
                out.push(frame);
                status.store(STATUS_AVAILABLE, Ordering::Release);
                self.next = (self.next + 1) % self.frame_count;
            }
            out
        }

        fn reject_next(&self) {
            // SAFETY: slot inside the mapping, aligned status word.
            let slot = unsafe { self.mem.as_ptr().add(self.next * self.frame_size) };
            // SAFETY: as above.
            unsafe { status_word(slot.add(self.status_at())) }
                .store(STATUS_WRONG_FORMAT, Ordering::Release);
        }
    }

    fn push(ring: &mut TxRing, frame: &[u8]) -> Result<(), TxError> {
        ring.push_with(frame.len(), |buf| buf.copy_from_slice(frame))
    }

    #[test]
    fn tx_frames_reach_the_kernel_in_order() {
        for v in VERSIONS {
            let (mut kernel, mut ring) = FakeTxKernel::new(v, 256, 4);
            push(&mut ring, b"first").unwrap();
            push(&mut ring, &[0x55; 208]).unwrap();
            assert_eq!(ring.pending(), 2);
            assert_eq!(
                kernel.send(16),
                vec![b"first".to_vec(), vec![0x55; 208]],
                "{v:?}"
            );
        }
    }

    #[test]
    fn with_a_vnet_header_every_frame_asks_for_a_linear_copy_of_itself() {
        for v in VERSIONS {
            let (mut kernel, mut ring) = FakeTxKernel::new(v, 256, 4);
            let whole = ring.max_frame();
            ring.use_vnet_hdr();
            kernel.vnet_hdr = true;
            assert_eq!(ring.max_frame(), whole - VNET_HDR_LEN, "{v:?}");
            let max = ring.max_frame();
            push(&mut ring, b"first").unwrap();
            push(&mut ring, &vec![0x55; max]).unwrap();
            assert!(matches!(
                push(&mut ring, &vec![0; max + 1]),
                Err(TxError::TooLarge { .. })
            ));
            let sent = kernel.send(16);
            assert_eq!(
                sent,
                vec![b"first".to_vec(), vec![0x55; whole - 10]],
                "{v:?}"
            );
            // hdr_len = the frame's length; flags, GSO and checksum fields zero.
            let mut first = [0u8; VNET_HDR_LEN];
            first[2] = 5;
            assert_eq!(kernel.vnet[0], first);
            assert_eq!(
                u16::from_le_bytes([kernel.vnet[1][2], kernel.vnet[1][3]]) as usize,
                whole - VNET_HDR_LEN
            );
            assert!(
                kernel.vnet[1]
                    .iter()
                    .enumerate()
                    .all(|(i, b)| *b == 0 || i == 2 || i == 3)
            );
        }
    }

    #[test]
    fn tx_ring_full_until_kernel_frees_slots_then_wraps() {
        for v in VERSIONS {
            let (mut kernel, mut ring) = FakeTxKernel::new(v, 256, 3);
            for i in 0..3u8 {
                push(&mut ring, &[i]).unwrap();
            }
            assert_eq!(push(&mut ring, &[9]), Err(TxError::RingFull));
            assert_eq!(ring.counters().ring_full, 1);
            assert_eq!(kernel.send(2), vec![vec![0], vec![1]]);
            push(&mut ring, &[3]).unwrap();
            push(&mut ring, &[4]).unwrap();
            assert_eq!(push(&mut ring, &[5]), Err(TxError::RingFull));
            assert_eq!(kernel.send(16), vec![vec![2], vec![3], vec![4]]);
            let mut sent = Vec::new();
            for i in 0..100u8 {
                push(&mut ring, &[i]).unwrap();
                sent.extend(kernel.send(1));
            }
            assert_eq!(sent, (0..100u8).map(|i| vec![i]).collect::<Vec<_>>());
            assert_eq!(ring.counters().frames, 105, "{v:?}");
        }
    }

    #[test]
    fn oversized_tx_frames_are_refused() {
        for (v, max) in [(RingVersion::V2, 256 - 32), (RingVersion::V3, 256 - 48)] {
            let (_kernel, mut ring) = FakeTxKernel::new(v, 256, 2);
            assert_eq!(ring.max_frame(), max);
            assert_eq!(
                push(&mut ring, &[0; 300][..max + 1]),
                Err(TxError::TooLarge { len: max + 1, max })
            );
            assert_eq!(ring.counters().too_large, 1);
            assert_eq!(ring.pending(), 0);
            ring.limit_frame(100);
            assert_eq!(
                push(&mut ring, &[0; 101]),
                Err(TxError::TooLarge { len: 101, max: 100 })
            );
            push(&mut ring, &[0; 100]).unwrap();
            ring.limit_frame(10_000);
            assert_eq!(ring.max_frame(), max, "never above the slot capacity");
        }
    }

    #[test]
    fn slots_the_kernel_rejected_are_reused_and_counted() {
        for v in VERSIONS {
            let (kernel, mut ring) = FakeTxKernel::new(v, 256, 2);
            kernel.reject_next();
            push(&mut ring, &[1]).unwrap();
            assert_eq!(ring.counters().wrong_format, 1);
        }
    }

    /// Plays the kernel's side of a TPACKET_V2 RX ring: one frame per slot, handed over at once.
    struct FakeRxKernelV2 {
        mem: Arc<Mmap>,
        slot_count: usize,
        next: usize,
        drops: u64,
    }

    const SLOT: usize = 2048;

    impl FakeRxKernelV2 {
        fn new(slot_count: usize) -> (Self, RxRing) {
            let mem = Arc::new(Mmap::anonymous(SLOT * slot_count).unwrap());
            let ring = RxRing::new_v2(Arc::clone(&mem), 0, SLOT, slot_count);
            let kernel = Self {
                mem,
                slot_count,
                next: 0,
                drops: 0,
            };
            (kernel, ring)
        }

        fn slot(&self, index: usize) -> *mut u8 {
            // SAFETY: index < slot_count, inside the mapping.
            unsafe { self.mem.as_ptr().add(index * SLOT) }
        }

        /// Writes `data` into the next slot and hands it over at once, or counts a drop when
        /// user space still holds that slot (like `tpacket_rcv`).
        fn deliver(&mut self, data: &[u8], wire_len: u32, extra_status: u32) -> bool {
            self.deliver_at_mac(data, wire_len, extra_status, 66)
        }

        fn deliver_at_mac(&mut self, data: &[u8], wire_len: u32, extra: u32, mac: usize) -> bool {
            let h = self.slot(self.next);
            // SAFETY: aligned status word inside the mapping.
            let status = unsafe { status_word(h.add(pkt2::STATUS)) };
            if status.load(Ordering::Acquire) != STATUS_KERNEL {
                self.drops += 1;
                return false;
            }
            let copy = data.len().min(SLOT.saturating_sub(mac));
            // SAFETY: everything written lies inside this slot of the mapping.
            unsafe {
                h.add(pkt2::SNAPLEN)
                    .cast::<u32>()
                    .write_unaligned(data.len() as u32);
                h.add(pkt2::LEN).cast::<u32>().write_unaligned(wire_len);
                h.add(pkt2::MAC).cast::<u16>().write_unaligned(mac as u16);
                h.add(pkt2::VLAN_TCI).cast::<u16>().write_unaligned(42);
                h.add(pkt2::VLAN_TPID).cast::<u16>().write_unaligned(0);
                std::ptr::copy_nonoverlapping(data.as_ptr(), h.add(mac.min(SLOT)), copy);
            }
            status.store(STATUS_USER | extra, Ordering::Release);
            self.next = (self.next + 1) % self.slot_count;
            true
        }
    }

    #[test]
    fn v2_empty_ring_yields_nothing() {
        let (_kernel, mut ring) = FakeRxKernelV2::new(4);
        assert!(ring.next_block().is_none());
        assert_eq!(ring.counters(), RxCounters::default());
    }

    #[test]
    fn v2_each_frame_is_readable_as_soon_as_it_is_written() {
        let (mut kernel, mut ring) = FakeRxKernelV2::new(4);
        let a = [0xaa; 60];
        let b: Vec<u8> = (0..=255).cycle().take(1514).collect();
        assert!(kernel.deliver(&a, 60, 0));
        // No block to fill, no timeout: the first frame is there before the second arrives.
        assert_eq!(collect(&mut ring), vec![a.to_vec()]);
        assert!(kernel.deliver(&b, 1514, 0));
        assert!(kernel.deliver(&[1, 2, 3], 3, 0));
        let run = ring.next_block().expect("ready slots");
        assert_eq!(run.len(), 2);
        let got: Vec<&[u8]> = run.frames().map(|f| f.data()).collect();
        assert_eq!(got, vec![&b[..], &[1, 2, 3][..]]);
        drop(run);
        assert!(ring.next_block().is_none());
        assert_eq!(ring.counters().frames, 3);
        assert_eq!(ring.counters().blocks, 2);
    }

    #[test]
    fn v2_slots_go_back_to_the_kernel_only_when_dropped() {
        let (mut kernel, mut ring) = FakeRxKernelV2::new(2);
        assert!(kernel.deliver(&[1], 1, 0));
        assert!(kernel.deliver(&[2], 1, 0));
        assert!(!kernel.deliver(&[3], 1, 0), "both slots with user space");
        assert_eq!(kernel.drops, 1);
        let run = ring.next_block().unwrap();
        assert_eq!(run.len(), 2);
        assert!(!kernel.deliver(&[3], 1, 0), "slots still held");
        drop(run);
        assert!(kernel.deliver(&[3], 1, 0), "slots returned on drop");
        assert!(kernel.deliver(&[4], 1, 0));
        assert_eq!(collect(&mut ring), vec![vec![3], vec![4]]);
    }

    #[test]
    fn v2_walking_wraps_around_many_times() {
        let (mut kernel, mut ring) = FakeRxKernelV2::new(5);
        let mut expected = Vec::new();
        let mut got = Vec::new();
        for i in 0u32..500 {
            let f = i.to_be_bytes().to_vec();
            assert!(kernel.deliver(&f, 4, 0));
            expected.push(f);
            if i % 3 == 2 {
                got.extend(collect(&mut ring));
            }
        }
        got.extend(collect(&mut ring));
        assert_eq!(got, expected);
        assert_eq!(kernel.drops, 0);
        assert_eq!(ring.counters().frames, 500);
    }

    #[test]
    fn v2_truncation_vlan_and_unfinished_checksums_are_reported() {
        let (mut kernel, mut ring) = FakeRxKernelV2::new(4);
        assert!(kernel.deliver(&[9; 100], 3000, 0));
        assert!(kernel.deliver(&[8; 64], 64, STATUS_VLAN_VALID));
        assert!(kernel.deliver(&[7; 64], 64, STATUS_CSUMNOTREADY));
        let run = ring.next_block().unwrap();
        let frames: Vec<RxFrame<'_>> = run.frames().collect();
        assert!(frames[0].is_truncated());
        assert_eq!(frames[0].wire_len(), 3000);
        assert_eq!(
            frames[1].vlan(),
            Some(VlanTag {
                tpid: 0x8100,
                tci: 42
            })
        );
        assert!(!frames[1].checksum_not_ready());
        assert!(frames[2].checksum_not_ready());
        drop(frames);
        drop(run);
        assert_eq!(ring.counters().truncated, 1);
    }

    #[test]
    fn v2_slots_pointing_outside_themselves_are_counted_skipped_and_returned() {
        let (mut kernel, mut ring) = FakeRxKernelV2::new(3);
        assert!(kernel.deliver(&[1], 1, 0));
        assert!(kernel.deliver_at_mac(&[2; 10], 10, 0, SLOT - 4));
        assert!(kernel.deliver(&[3], 1, 0));
        let run = ring.next_block().unwrap();
        assert_eq!(run.len(), 2);
        let got: Vec<Vec<u8>> = run.frames().map(|f| f.data().to_vec()).collect();
        assert_eq!(got, vec![vec![1], vec![3]]);
        drop(run);
        assert_eq!(ring.counters().malformed, 1);
        // All three slots went back, the bad one included.
        for i in 4..7u8 {
            assert!(kernel.deliver(&[i], 1, 0));
        }
        assert_eq!(collect(&mut ring), vec![vec![4], vec![5], vec![6]]);
    }
}
