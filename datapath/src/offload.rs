//! TUN/TAP offloads, sans-IO: the virtio-net header, TCP segmentation of the super-packets a
//! device with `TUNSETOFFLOAD` hands us (GSO), and coalescing of the segments we write to it
//! (GRO).
//!
//! # Why
//!
//! Without offloads the kernel segments a local TCP sender's 64 KB burst into 45 packets before
//! the device sees them, and the client pays a `read(2)` (and a wake-up) for each. With
//! `IFF_VNET_HDR` and `TUNSETOFFLOAD(TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6)` the kernel hands the
//! whole burst to one read, prefixed by a [`VnetHdr`] saying how to cut it (`gso_size`), and
//! leaves the TCP checksum to us (`NEEDS_CSUM`). [`Segmenter`] cuts it into segments that each
//! fit the room's datagram budget. In the other direction [`Coalescer`] merges the in-order
//! segments of one TCP flow that arrive from the room within one turn into one super-packet
//! and one `write(2)`, which the kernel's stack takes whole, as it takes GRO output.
//!
//! # The header
//!
//! The 10-byte `struct virtio_net_hdr` (the legacy, default size; `TUNSETVNETHDRSZ` is never
//! called). The 12-byte v1 form adds only `num_buffers`, which means something to virtio-net
//! receive rings with mergeable buffers and nothing to a TUN/TAP device, so it would cost two
//! bytes per frame for no information. Fields are little-endian, as the kernel reads them on
//! little-endian hosts (the device code sets `TUNSETVNETLE` on big-endian ones).
//!
//! # What the kernel expects (drivers/net/tun.c, include/linux/virtio_net.h)
//!
//! - Reads: `gso_type` `TCPV4`/`TCPV6` (possibly with the `ECN` bit) with `gso_size` the payload
//!   bytes per segment, and `NEEDS_CSUM` with `csum_start` at the TCP header and
//!   `csum_offset` 16: the checksum field holds only a pseudo-header sum. `gso_type` `NONE`
//!   with `NEEDS_CSUM` is a single packet (TCP or UDP) whose checksum is to be completed:
//!   [`complete_checksum`]. UDP segmentation (`TUN_F_USO4/6`) is not enabled, so `UDP_L4`
//!   never arrives; it is refused with [`OffloadError::UnsupportedGso`].
//! - Writes: `virtio_net_hdr_to_skb` accepts a TCP super-packet with `NEEDS_CSUM`, `csum_start`
//!   at the TCP header, `csum_offset` 16 (anything else is `EINVAL` for TCP GSO) and the
//!   pseudo-header sum in the checksum field; the skb becomes `CHECKSUM_PARTIAL`, which the
//!   local stack accepts and a forwarding path completes. `DATA_VALID` is not looked at on
//!   this path by the TUN driver, so it is not used. Because `CHECKSUM_PARTIAL` skips the
//!   receiver's verification, [`Coalescer`] verifies every segment's IP and TCP checksums
//!   before merging it: a corrupt segment is written alone and dropped by the stack, as it
//!   would be without offloads.
//!
//! # Limits
//!
//! IPv4 without options and IPv6 without extension headers are merged; segmentation accepts
//! IPv4 options but not IPv6 extension headers (the kernel's TSO output has none unless a
//! socket asks for them; such a packet is refused and counted by the caller). Ethernet frames
//! may carry up to two VLAN tags.
//!
//! No call panics, whatever the input; [`Segmenter`] and [`Coalescer`] write into buffers the
//! caller owns (the coalescer's is allocated once, at [`Coalescer::new`]).

/// Bytes of `struct virtio_net_hdr` before every frame when `IFF_VNET_HDR` is on.
pub const VNET_HDR_LEN: usize = 10;

/// `virtio_net_hdr.gso_type` values (`VIRTIO_NET_HDR_GSO_*`).
pub mod gso {
    /// Not a GSO packet.
    pub const NONE: u8 = 0x00;
    /// TCP over IPv4.
    pub const TCPV4: u8 = 0x01;
    /// UDP fragmentation offload (obsolete; never enabled here).
    pub const UDP: u8 = 0x03;
    /// TCP over IPv6.
    pub const TCPV6: u8 = 0x04;
    /// UDP segmentation (USO; not enabled here).
    pub const UDP_L4: u8 = 0x05;
    /// Bit: the burst carries CWR (ECN) on its first segment.
    pub const ECN: u8 = 0x80;
}

/// `virtio_net_hdr.flags` bits (`VIRTIO_NET_HDR_F_*`).
pub mod flags {
    /// The checksum at `csum_start + csum_offset` holds only the pseudo-header sum; sum from
    /// `csum_start` to the end to complete it.
    pub const NEEDS_CSUM: u8 = 0x01;
    /// The checksum was verified (receive side of virtio; the TUN driver ignores it on writes).
    pub const DATA_VALID: u8 = 0x02;
}

/// The virtio-net header (`struct virtio_net_hdr`, 10 bytes, little-endian).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VnetHdr {
    /// [`flags`] bits.
    pub flags: u8,
    /// A [`gso`] type.
    pub gso_type: u8,
    /// Bytes of headers (link + IP + TCP) before the payload; a hint.
    pub hdr_len: u16,
    /// Payload bytes per segment.
    pub gso_size: u16,
    /// Where checksumming starts (the L4 header), from the start of the packet.
    pub csum_start: u16,
    /// Where the checksum field is, from `csum_start`.
    pub csum_offset: u16,
}

mod field {
    use core::ops::Range;
    pub(super) const FLAGS: usize = 0;
    pub(super) const GSO_TYPE: usize = 1;
    pub(super) const HDR_LEN: Range<usize> = 2..4;
    pub(super) const GSO_SIZE: Range<usize> = 4..6;
    pub(super) const CSUM_START: Range<usize> = 6..8;
    pub(super) const CSUM_OFFSET: Range<usize> = 8..10;
}

impl VnetHdr {
    /// No offload: a complete packet with a complete checksum.
    pub const EMPTY: Self = Self {
        flags: 0,
        gso_type: gso::NONE,
        hdr_len: 0,
        gso_size: 0,
        csum_start: 0,
        csum_offset: 0,
    };

    /// Reads the header from the first [`VNET_HDR_LEN`] bytes of `bytes`.
    ///
    /// # Errors
    ///
    /// [`OffloadError::Truncated`] when `bytes` is shorter.
    pub fn parse(bytes: &[u8]) -> Result<Self, OffloadError> {
        let Some(b) = bytes.get(..VNET_HDR_LEN) else {
            return Err(OffloadError::Truncated {
                need: VNET_HDR_LEN,
                have: bytes.len(),
            });
        };
        let le = |r: core::ops::Range<usize>| u16::from_le_bytes([b[r.start], b[r.start + 1]]);
        Ok(Self {
            flags: b[field::FLAGS],
            gso_type: b[field::GSO_TYPE],
            hdr_len: le(field::HDR_LEN),
            gso_size: le(field::GSO_SIZE),
            csum_start: le(field::CSUM_START),
            csum_offset: le(field::CSUM_OFFSET),
        })
    }

    /// The header's bytes.
    pub fn to_bytes(&self) -> [u8; VNET_HDR_LEN] {
        let mut b = [0u8; VNET_HDR_LEN];
        b[field::FLAGS] = self.flags;
        b[field::GSO_TYPE] = self.gso_type;
        b[field::HDR_LEN].copy_from_slice(&self.hdr_len.to_le_bytes());
        b[field::GSO_SIZE].copy_from_slice(&self.gso_size.to_le_bytes());
        b[field::CSUM_START].copy_from_slice(&self.csum_start.to_le_bytes());
        b[field::CSUM_OFFSET].copy_from_slice(&self.csum_offset.to_le_bytes());
        b
    }

    /// Whether the checksum is left to us.
    pub fn needs_csum(&self) -> bool {
        self.flags & flags::NEEDS_CSUM != 0
    }
}

/// What the packets after the virtio-net header start with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// An Ethernet header, possibly with VLAN tags (TAP).
    Ethernet,
    /// The IP header (TUN).
    Ip,
}

/// Why a packet could not be segmented, completed or read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OffloadError {
    /// The bytes end before a header does.
    #[error("truncated packet: need {need} bytes, have {have}")]
    Truncated {
        /// Bytes needed.
        need: usize,
        /// Bytes there.
        have: usize,
    },
    /// A GSO type this module does not segment.
    #[error("unsupported gso type {0:#04x}")]
    UnsupportedGso(u8),
    /// A GSO packet with `gso_size` 0.
    #[error("gso packet with a segment size of zero")]
    ZeroGsoSize,
    /// Not TCP over IPv4, or over IPv6 without extension headers.
    #[error("not a tcp segment over ipv4 or ipv6 without extension headers")]
    NotTcp,
    /// A header field is inconsistent.
    #[error("malformed packet: {0}")]
    Malformed(&'static str),
    /// The checksum range in the header lies outside the packet or off the TCP header.
    #[error("checksum start {start} and offset {offset} do not fit a {len}-byte packet")]
    ChecksumRange {
        /// `csum_start`.
        start: u16,
        /// `csum_offset`.
        offset: u16,
        /// Packet length.
        len: usize,
    },
    /// The output buffer cannot hold the segment.
    #[error("a {need}-byte segment does not fit a {have}-byte buffer")]
    BufferTooSmall {
        /// Bytes needed.
        need: usize,
        /// Bytes offered.
        have: usize,
    },
    /// The headers alone reach the segment size limit.
    #[error("{headers} bytes of headers leave no payload within {limit} bytes")]
    NoRoomForPayload {
        /// Link + IP + TCP header bytes.
        headers: usize,
        /// The limit per segment.
        limit: usize,
    },
}

// ---------------------------------------------------------------------------------------------
// Checksums

/// Sums `data` as big-endian 32-bit words (a 16-bit and an 8-bit tail padded as RFC 1071 pads
/// odd bytes). Congruent modulo 0xffff to the 16-bit one's-complement sum, since
/// 2^16 = 1 (mod 0xffff); pieces may be summed apart when all but the last have even length.
fn sum(data: &[u8]) -> u64 {
    let mut acc = 0u64;
    let mut words = data.chunks_exact(4);
    for w in &mut words {
        acc += u64::from(u32::from_be_bytes([w[0], w[1], w[2], w[3]]));
    }
    let rest = words.remainder();
    let mut pairs = rest.chunks_exact(2);
    for p in &mut pairs {
        acc += u64::from(u16::from_be_bytes([p[0], p[1]]));
    }
    if let [last] = pairs.remainder() {
        acc += u64::from(*last) << 8;
    }
    acc
}

/// Folds a sum to 16 bits (not complemented).
fn fold(mut acc: u64) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

fn be16(p: &[u8], at: usize) -> Result<u16, OffloadError> {
    match p.get(at..at + 2) {
        Some(b) => Ok(u16::from_be_bytes([b[0], b[1]])),
        None => Err(OffloadError::Truncated {
            need: at + 2,
            have: p.len(),
        }),
    }
}

fn byte(p: &[u8], at: usize) -> Result<u8, OffloadError> {
    p.get(at).copied().ok_or(OffloadError::Truncated {
        need: at + 1,
        have: p.len(),
    })
}

/// Completes the checksum the kernel left partial (`NEEDS_CSUM`, any protocol): sums the packet
/// from `csum_start` to its end, starting from the pseudo-header sum already in the field, and
/// stores the complement at `csum_start + csum_offset` (a computed 0 goes out as 0xffff, as the
/// kernel's `skb_checksum_help` does, which UDP requires and TCP does not mind).
///
/// # Errors
///
/// [`OffloadError::ChecksumRange`] when the field lies outside `packet`.
pub fn complete_checksum(hdr: &VnetHdr, packet: &mut [u8]) -> Result<(), OffloadError> {
    let start = usize::from(hdr.csum_start);
    let at = start + usize::from(hdr.csum_offset);
    if at + 2 > packet.len() {
        return Err(OffloadError::ChecksumRange {
            start: hdr.csum_start,
            offset: hdr.csum_offset,
            len: packet.len(),
        });
    }
    let value = match !fold(sum(&packet[start..])) {
        0 => 0xffff,
        v => v,
    };
    packet[at..at + 2].copy_from_slice(&value.to_be_bytes());
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// TCP packet layout

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const ETHERTYPE_VLAN: u16 = 0x8100;
const ETHERTYPE_QINQ: u16 = 0x88a8;
const IPV4_MIN_HEADER: usize = 20;
const IPV6_HEADER: usize = 40;
const TCP_MIN_HEADER: usize = 20;
const PROTO_TCP: u8 = 6;
const TCP_CSUM_OFFSET: usize = 16;
const TCP_FLAGS_OFFSET: usize = 13;
const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const PSH: u8 = 0x08;
const ACK: u8 = 0x10;
const URG: u8 = 0x20;
const CWR: u8 = 0x80;
/// The IP length fields are 16 bits: IPv4 counts its header, IPv6 does not.
const MAX_IP_LEN: usize = 65_535;

/// Where the headers of a TCP packet are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Layout {
    /// Start of the IP header.
    l3: usize,
    /// Start of the TCP header.
    l4: usize,
    /// Start of the payload (the length of all headers).
    payload: usize,
    /// End of the IP packet (Ethernet padding excluded).
    end: usize,
    v6: bool,
}

impl Layout {
    fn parse(p: &[u8], link: Link) -> Result<Self, OffloadError> {
        let (l3, ethertype) = match link {
            Link::Ip => (
                0,
                match byte(p, 0)? >> 4 {
                    4 => ETHERTYPE_IPV4,
                    6 => ETHERTYPE_IPV6,
                    _ => return Err(OffloadError::NotTcp),
                },
            ),
            Link::Ethernet => {
                let mut at = 12;
                let mut ethertype = be16(p, at)?;
                for _ in 0..2 {
                    if ethertype != ETHERTYPE_VLAN && ethertype != ETHERTYPE_QINQ {
                        break;
                    }
                    at += 4;
                    ethertype = be16(p, at)?;
                }
                (at + 2, ethertype)
            }
        };
        let (l4, end, v6) = match ethertype {
            ETHERTYPE_IPV4 => {
                let vihl = byte(p, l3)?;
                let ihl = usize::from(vihl & 0x0f) * 4;
                if vihl >> 4 != 4 || ihl < IPV4_MIN_HEADER {
                    return Err(OffloadError::Malformed("ipv4 version or header length"));
                }
                let total = usize::from(be16(p, l3 + 2)?);
                if byte(p, l3 + 9)? != PROTO_TCP {
                    return Err(OffloadError::NotTcp);
                }
                if be16(p, l3 + 6)? & 0x3fff != 0 {
                    return Err(OffloadError::Malformed("ipv4 fragment"));
                }
                if total < ihl {
                    return Err(OffloadError::Malformed("ipv4 total length below header"));
                }
                (l3 + ihl, l3 + total, false)
            }
            ETHERTYPE_IPV6 => {
                if byte(p, l3)? >> 4 != 6 {
                    return Err(OffloadError::Malformed("ipv6 version"));
                }
                let payload_len = usize::from(be16(p, l3 + 4)?);
                if byte(p, l3 + 6)? != PROTO_TCP {
                    return Err(OffloadError::NotTcp);
                }
                (l3 + IPV6_HEADER, l3 + IPV6_HEADER + payload_len, true)
            }
            _ => return Err(OffloadError::NotTcp),
        };
        if end > p.len() {
            return Err(OffloadError::Truncated {
                need: end,
                have: p.len(),
            });
        }
        let doff = usize::from(byte(p, l4 + 12)? >> 4) * 4;
        if doff < TCP_MIN_HEADER {
            return Err(OffloadError::Malformed("tcp data offset"));
        }
        let payload = l4 + doff;
        if payload > end {
            return Err(OffloadError::Truncated {
                need: payload,
                have: end,
            });
        }
        Ok(Self {
            l3,
            l4,
            payload,
            end,
            v6,
        })
    }

    /// The pseudo-header sum (RFC 9293 §3.1, RFC 8200 §8.1) for `tcp_len` bytes of TCP.
    fn pseudo_sum(&self, p: &[u8], tcp_len: usize) -> u64 {
        let addrs = if self.v6 {
            self.l3 + 8..self.l3 + 40
        } else {
            self.l3 + 12..self.l3 + 20
        };
        sum(p.get(addrs).unwrap_or_default()) + u64::from(PROTO_TCP) + tcp_len as u64
    }

    /// Rewrites the IP length (and the IPv4 header checksum) for a packet ending at `end`.
    fn set_ip_len(&self, p: &mut [u8], end: usize) {
        let l3 = self.l3;
        if self.v6 {
            let len = (end - l3 - IPV6_HEADER) as u16;
            p[l3 + 4..l3 + 6].copy_from_slice(&len.to_be_bytes());
        } else {
            p[l3 + 2..l3 + 4].copy_from_slice(&((end - l3) as u16).to_be_bytes());
            self.set_ipv4_checksum(p);
        }
    }

    fn set_ipv4_checksum(&self, p: &mut [u8]) {
        let l3 = self.l3;
        p[l3 + 10..l3 + 12].fill(0);
        let c = !fold(sum(&p[l3..self.l4]));
        p[l3 + 10..l3 + 12].copy_from_slice(&c.to_be_bytes());
    }

    /// Whether the IPv4 header checksum (if any) and the TCP checksum verify.
    fn checksums_ok(&self, p: &[u8]) -> bool {
        let ip_ok = self.v6 || fold(sum(&p[self.l3..self.l4])) == 0xffff;
        ip_ok && fold(self.pseudo_sum(p, self.end - self.l4) + sum(&p[self.l4..self.end])) == 0xffff
    }
}

fn seq(p: &[u8], l4: usize) -> u32 {
    u32::from_be_bytes([p[l4 + 4], p[l4 + 5], p[l4 + 6], p[l4 + 7]])
}

// ---------------------------------------------------------------------------------------------
// Segmentation (reads)

/// Cuts one packet read behind a [`VnetHdr`] into segments of at most a given size: a cursor
/// over the packet, which the caller keeps and passes to every
/// [`next_segment`](Self::next_segment) call.
///
/// For a TCP super-packet (`TCPV4`/`TCPV6`) every segment gets the headers of the original with
/// the IP length fixed (IPv4: identification incremented per segment and the header checksum
/// recomputed), the sequence number advanced, FIN and PSH only on the last segment, CWR only on
/// the first, and a complete TCP checksum, whatever the original's field held. A packet
/// without GSO comes out once, whole, its checksum completed when `NEEDS_CSUM` asked for it.
#[derive(Debug, Clone)]
pub struct Segmenter {
    plan: Plan,
}

#[derive(Debug, Clone)]
enum Plan {
    Whole {
        len: usize,
    },
    Tcp {
        layout: Layout,
        /// Payload bytes per segment.
        mss: usize,
        /// Offset of the next segment's payload.
        next: usize,
        index: u16,
        seq: u32,
        ip_id: u16,
        flags: u8,
    },
    Done,
}

impl Segmenter {
    /// Plans the segmentation of `packet` (the bytes after `hdr`), so that each segment is at
    /// most `max_len` bytes (link header included): the payload per segment is the smaller of
    /// `gso_size` and what `max_len` leaves after the headers. A packet without GSO is cut the
    /// same way when it is a TCP segment longer than `max_len` (the kernel sends a lone
    /// full-MSS segment without GSO); any other has its checksum completed in place
    /// (`NEEDS_CSUM`) and comes out whole, whatever its size.
    ///
    /// # Errors
    ///
    /// [`OffloadError`] for packets this cannot segment: another GSO type, headers that do not
    /// parse, a checksum range off the TCP checksum, headers that leave no room under `max_len`.
    pub fn new(
        hdr: &VnetHdr,
        packet: &mut [u8],
        link: Link,
        max_len: usize,
    ) -> Result<Self, OffloadError> {
        let kind = hdr.gso_type & !gso::ECN;
        if kind == gso::NONE {
            // A full-MSS segment that TSO had nothing to merge with comes without GSO; cut it
            // too when it does not fit.
            if packet.len() > max_len
                && let Ok(layout) = Layout::parse(packet, link)
                && layout.end > max_len
            {
                return Self::tcp(layout, packet, max_len, usize::MAX);
            }
            if hdr.needs_csum() {
                complete_checksum(hdr, packet)?;
            }
            return Ok(Self {
                plan: Plan::Whole { len: packet.len() },
            });
        }
        if kind != gso::TCPV4 && kind != gso::TCPV6 {
            return Err(OffloadError::UnsupportedGso(hdr.gso_type));
        }
        if hdr.gso_size == 0 {
            return Err(OffloadError::ZeroGsoSize);
        }
        let layout = Layout::parse(packet, link)?;
        if layout.v6 != (kind == gso::TCPV6) {
            return Err(OffloadError::Malformed(
                "gso type does not match the ip version",
            ));
        }
        if hdr.needs_csum()
            && (usize::from(hdr.csum_start) != layout.l4
                || usize::from(hdr.csum_offset) != TCP_CSUM_OFFSET)
        {
            return Err(OffloadError::ChecksumRange {
                start: hdr.csum_start,
                offset: hdr.csum_offset,
                len: packet.len(),
            });
        }
        Self::tcp(layout, packet, max_len, usize::from(hdr.gso_size))
    }

    fn tcp(
        layout: Layout,
        packet: &[u8],
        max_len: usize,
        gso_size: usize,
    ) -> Result<Self, OffloadError> {
        let room = max_len.saturating_sub(layout.payload);
        if room == 0 {
            return Err(OffloadError::NoRoomForPayload {
                headers: layout.payload,
                limit: max_len,
            });
        }
        let l3 = layout.l3;
        let l4 = layout.l4;
        Ok(Self {
            plan: Plan::Tcp {
                layout,
                mss: room.min(gso_size),
                next: layout.payload,
                index: 0,
                seq: seq(packet, l4),
                ip_id: if layout.v6 { 0 } else { be16(packet, l3 + 4)? },
                flags: packet[l4 + TCP_FLAGS_OFFSET],
            },
        })
    }

    /// Whether every segment has been produced (or an error ended the packet).
    pub fn is_done(&self) -> bool {
        matches!(self.plan, Plan::Done)
    }

    /// Writes the next segment into `out` and returns its length; `None` once all are out.
    /// `packet` must be the packet given to [`Self::new`] (another one yields garbage, never a
    /// panic).
    ///
    /// # Errors
    ///
    /// [`OffloadError::BufferTooSmall`] when `out` cannot hold the segment,
    /// [`OffloadError::Truncated`] when `packet` is shorter than planned. Either ends the
    /// packet.
    pub fn next_segment(
        &mut self,
        packet: &[u8],
        out: &mut [u8],
    ) -> Option<Result<usize, OffloadError>> {
        let result = match &mut self.plan {
            Plan::Done => return None,
            Plan::Whole { len } => {
                let len = *len;
                self.plan = Plan::Done;
                return Some(copy_whole(packet, len, out));
            }
            Plan::Tcp {
                layout,
                mss,
                next,
                index,
                seq,
                ip_id,
                flags,
            } => {
                let len = (*mss).min(layout.end.saturating_sub(*next));
                let last = *next + len >= layout.end;
                let result = emit_segment(
                    packet,
                    out,
                    layout,
                    *next..*next + len,
                    Fields {
                        seq: seq.wrapping_add((*next - layout.payload) as u32),
                        ip_id: ip_id.wrapping_add(*index),
                        flags: segment_flags(*flags, *index == 0, last),
                    },
                );
                *next += len;
                *index = index.wrapping_add(1);
                if last || result.is_err() {
                    self.plan = Plan::Done;
                }
                result
            }
        };
        Some(result)
    }
}

struct Fields {
    seq: u32,
    ip_id: u16,
    flags: u8,
}

fn segment_flags(flags: u8, first: bool, last: bool) -> u8 {
    let mut f = flags;
    if !last {
        f &= !(FIN | PSH);
    }
    if !first {
        f &= !CWR;
    }
    f
}

fn copy_whole(packet: &[u8], len: usize, out: &mut [u8]) -> Result<usize, OffloadError> {
    let src = packet.get(..len).ok_or(OffloadError::Truncated {
        need: len,
        have: packet.len(),
    })?;
    let have = out.len();
    let dst = out
        .get_mut(..len)
        .ok_or(OffloadError::BufferTooSmall { need: len, have })?;
    dst.copy_from_slice(src);
    Ok(len)
}

fn emit_segment(
    packet: &[u8],
    out: &mut [u8],
    layout: &Layout,
    payload: core::ops::Range<usize>,
    f: Fields,
) -> Result<usize, OffloadError> {
    let hl = layout.payload;
    let need = hl + payload.len();
    if out.len() < need {
        return Err(OffloadError::BufferTooSmall {
            need,
            have: out.len(),
        });
    }
    let (Some(headers), Some(data)) = (packet.get(..hl), packet.get(payload.clone())) else {
        return Err(OffloadError::Truncated {
            need: payload.end,
            have: packet.len(),
        });
    };
    out[..hl].copy_from_slice(headers);
    out[hl..need].copy_from_slice(data);
    let (l3, l4) = (layout.l3, layout.l4);
    if !layout.v6 {
        out[l3 + 4..l3 + 6].copy_from_slice(&f.ip_id.to_be_bytes());
    }
    layout.set_ip_len(out, need);
    out[l4 + 4..l4 + 8].copy_from_slice(&f.seq.to_be_bytes());
    out[l4 + TCP_FLAGS_OFFSET] = f.flags;
    out[l4 + TCP_CSUM_OFFSET..l4 + TCP_CSUM_OFFSET + 2].fill(0);
    let c = !fold(layout.pseudo_sum(out, need - l4) + sum(&out[l4..need]));
    out[l4 + TCP_CSUM_OFFSET..l4 + TCP_CSUM_OFFSET + 2].copy_from_slice(&c.to_be_bytes());
    Ok(need)
}

// ---------------------------------------------------------------------------------------------
// Coalescing (writes)

/// What [`Coalescer::push`] did with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Push {
    /// It joined the held super-packet.
    Merged,
    /// Nothing was held; it is held now, waiting for segments that follow it.
    Held,
    /// A super-packet is held and this packet does not continue it: write
    /// [`Coalescer::take`]'s bytes, then push the packet again.
    Flush,
    /// Nothing is held and this packet cannot start a super-packet: write it as it is, behind
    /// [`VnetHdr::EMPTY`].
    Pass,
}

/// Counters of a [`Coalescer`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CoalesceCounters {
    /// Packets merged into a held super-packet (each saves a write).
    pub merged: u64,
    /// Super-packets of two or more segments handed out by [`Coalescer::take`].
    pub super_packets: u64,
    /// TCP data segments not held because a checksum did not verify.
    pub bad_checksum: u64,
}

/// Merges consecutive in-order segments of one TCP flow into one super-packet with a
/// [`VnetHdr`] (GRO for the packets we write to the device).
///
/// A segment merges into the held one when it has the same link header, the same IP header
/// (addresses, TOS/traffic class and flow label, TTL/hop limit, DF), the same ports, ACK
/// number, window, flags (PSH aside) and TCP options byte for byte (only NOP and timestamps
/// are allowed, so equal bytes mean equal timestamps), its sequence number continues the held
/// payload, its payload is no larger than the first segment's, and its checksums verify. Only
/// the last segment may be shorter or carry PSH; after it nothing more merges. SYN, FIN, RST,
/// URG and CWR segments, IPv4 with options, IPv6 with extension headers and segments without
/// payload (pure ACKs) are never held. A super-packet stays within the 16-bit IP length.
///
/// Usage, per turn: [`push`](Self::push) every packet bound for the device, and follow the
/// answer; at the end of the turn [`take`](Self::take) what is held and write it.
pub struct Coalescer {
    link: Link,
    /// `[VnetHdr][packet]`; allocated once.
    buf: Vec<u8>,
    held: Option<Held>,
    counters: CoalesceCounters,
}

impl core::fmt::Debug for Coalescer {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // Not the 64 KB buffer.
        f.debug_struct("Coalescer")
            .field("link", &self.link)
            .field("held", &self.held)
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy)]
struct Held {
    layout: Layout,
    /// Packet bytes in `buf` after the header.
    len: usize,
    gso_size: usize,
    segments: u32,
    next_seq: u32,
    /// A short or PSH segment was merged: nothing may follow.
    closed: bool,
    psh: bool,
}

/// A TCP data segment that may be held or merged.
struct Candidate {
    layout: Layout,
    payload_len: usize,
    seq: u32,
    flags: u8,
}

impl Candidate {
    fn parse(p: &[u8], link: Link) -> Option<Self> {
        let layout = Layout::parse(p, link).ok()?;
        if !layout.v6 && layout.l4 - layout.l3 != IPV4_MIN_HEADER {
            return None;
        }
        let payload_len = layout.end - layout.payload;
        let flags = p[layout.l4 + TCP_FLAGS_OFFSET];
        if payload_len == 0 || flags & ACK == 0 || flags & (SYN | FIN | RST | URG | CWR) != 0 {
            return None;
        }
        if !only_timestamps(&p[layout.l4 + TCP_MIN_HEADER..layout.payload]) {
            return None;
        }
        Some(Self {
            layout,
            payload_len,
            seq: seq(p, layout.l4),
            flags,
        })
    }
}

/// Whether TCP options hold nothing but NOP, EOL padding and timestamps.
fn only_timestamps(options: &[u8]) -> bool {
    const EOL: u8 = 0;
    const NOP: u8 = 1;
    const TIMESTAMPS: u8 = 8;
    let mut i = 0;
    while let Some(&kind) = options.get(i) {
        match kind {
            EOL => return options[i..].iter().all(|&b| b == 0),
            NOP => i += 1,
            TIMESTAMPS if options.get(i + 1) == Some(&10) => i += 10,
            _ => return false,
        }
    }
    i == options.len()
}

impl Coalescer {
    /// A coalescer for packets that start with `link`; allocates its buffer.
    pub fn new(link: Link) -> Self {
        // Ethernet with two VLAN tags + the largest IPv6 packet.
        let max = VNET_HDR_LEN + 22 + IPV6_HEADER + MAX_IP_LEN;
        Self {
            link,
            buf: vec![0u8; max],
            held: None,
            counters: CoalesceCounters::default(),
        }
    }

    /// Whether a super-packet (or a single segment) is held.
    pub fn is_holding(&self) -> bool {
        self.held.is_some()
    }

    /// The counters.
    pub fn counters(&self) -> CoalesceCounters {
        self.counters
    }

    /// Offers `packet` (a frame for [`Link::Ethernet`], an IP packet for [`Link::Ip`]) bound
    /// for the device. See [`Push`] for what the caller does next.
    pub fn push(&mut self, packet: &[u8]) -> Push {
        let Some(c) = Candidate::parse(packet, self.link) else {
            return if self.held.is_some() {
                Push::Flush
            } else {
                Push::Pass
            };
        };
        match self.held {
            Some(held) if self.continues(&held, &c, packet) => {
                if !c.layout.checksums_ok(packet) {
                    // Counted when it is pushed again, alone.
                    return Push::Flush;
                }
                self.merge(held, &c, packet);
                Push::Merged
            }
            Some(_) => Push::Flush,
            None => {
                if c.flags & PSH != 0 {
                    // Nothing may follow it: holding it would only delay it.
                    return Push::Pass;
                }
                if !c.layout.checksums_ok(packet) {
                    self.counters.bad_checksum += 1;
                    return Push::Pass;
                }
                let end = c.layout.end;
                self.buf[VNET_HDR_LEN..VNET_HDR_LEN + end].copy_from_slice(&packet[..end]);
                self.held = Some(Held {
                    layout: c.layout,
                    len: end,
                    gso_size: c.payload_len,
                    segments: 1,
                    next_seq: c.seq.wrapping_add(c.payload_len as u32),
                    closed: false,
                    psh: false,
                });
                Push::Held
            }
        }
    }

    fn continues(&self, held: &Held, c: &Candidate, p: &[u8]) -> bool {
        let h = &self.buf[VNET_HDR_LEN..VNET_HDR_LEN + held.len];
        let (a, b) = (&held.layout, &c.layout);
        if held.closed
            || a.l3 != b.l3
            || a.l4 != b.l4
            || a.payload != b.payload
            || a.v6 != b.v6
            || c.seq != held.next_seq
            || c.payload_len > held.gso_size
        {
            return false;
        }
        let limit = a.l3 + if a.v6 { IPV6_HEADER } else { 0 } + MAX_IP_LEN;
        if held.len + c.payload_len > limit {
            return false;
        }
        let (l3, l4) = (a.l3, a.l4);
        let same = |r: core::ops::Range<usize>| h.get(r.clone()) == p.get(r);
        let ip_same = if a.v6 {
            // Version, traffic class, flow label; next header, hop limit; addresses.
            same(l3..l3 + 4) && same(l3 + 6..l3 + 40)
        } else {
            // TOS; DF; TTL, protocol; addresses.
            same(l3 + 1..l3 + 2)
                && (h[l3 + 6] & 0x40) == (p[l3 + 6] & 0x40)
                && same(l3 + 8..l3 + 10)
                && same(l3 + 12..l3 + 20)
        };
        // Ports; ACK number, data offset; window; options.
        same(0..l3)
            && ip_same
            && same(l4..l4 + 4)
            && same(l4 + 8..l4 + 13)
            && (h[l4 + TCP_FLAGS_OFFSET] & !PSH) == (c.flags & !PSH)
            && same(l4 + 14..l4 + 16)
            && same(l4 + TCP_MIN_HEADER..a.payload)
    }

    fn merge(&mut self, mut held: Held, c: &Candidate, p: &[u8]) {
        let at = VNET_HDR_LEN + held.len;
        let data = &p[c.layout.payload..c.layout.end];
        self.buf[at..at + data.len()].copy_from_slice(data);
        held.len += c.payload_len;
        held.segments += 1;
        held.next_seq = held.next_seq.wrapping_add(c.payload_len as u32);
        if c.flags & PSH != 0 {
            held.psh = true;
            held.closed = true;
        }
        if c.payload_len < held.gso_size {
            held.closed = true;
        }
        self.counters.merged += 1;
        self.held = Some(held);
    }

    /// Hands out what is held, virtio-net header first, ready for one write, and holds nothing
    /// afterwards; `None` when nothing was held. A single segment goes out untouched behind
    /// [`VnetHdr::EMPTY`]; a super-packet gets its IP length (and IPv4 header checksum) fixed,
    /// PSH if its last segment had it, the pseudo-header sum in its TCP checksum field and a
    /// `TCPV4`/`TCPV6` header with `NEEDS_CSUM`.
    pub fn take(&mut self) -> Option<&[u8]> {
        let held = self.held.take()?;
        let total = VNET_HDR_LEN + held.len;
        let (head, packet) = self.buf[..total].split_at_mut(VNET_HDR_LEN);
        if held.segments == 1 {
            head.copy_from_slice(&VnetHdr::EMPTY.to_bytes());
            return Some(&self.buf[..total]);
        }
        let l = held.layout;
        l.set_ip_len(packet, held.len);
        if held.psh {
            packet[l.l4 + TCP_FLAGS_OFFSET] |= PSH;
        }
        let pseudo = fold(l.pseudo_sum(packet, held.len - l.l4));
        packet[l.l4 + TCP_CSUM_OFFSET..l.l4 + TCP_CSUM_OFFSET + 2]
            .copy_from_slice(&pseudo.to_be_bytes());
        let hdr = VnetHdr {
            flags: flags::NEEDS_CSUM,
            gso_type: if l.v6 { gso::TCPV6 } else { gso::TCPV4 },
            hdr_len: l.payload as u16,
            gso_size: held.gso_size as u16,
            csum_start: l.l4 as u16,
            csum_offset: TCP_CSUM_OFFSET as u16,
        };
        head.copy_from_slice(&hdr.to_bytes());
        self.counters.super_packets += 1;
        Some(&self.buf[..total])
    }
}
