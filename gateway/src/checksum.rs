//! Completing TCP/UDP checksums that the sender left to "hardware".
//!
//! A frame that a veth, container or VM on the gateway box sends is handed on with
//! `CHECKSUM_PARTIAL`: its TCP or UDP checksum field holds only the pseudo-header sum, and the
//! NIC that would finish it is never reached. The packet ring marks such frames
//! ([`RxFrame::checksum_not_ready`](lanparty_datapath::sys::afpacket::RxFrame::checksum_not_ready)),
//! and [`complete_l4_checksum`] recomputes the whole checksum (pseudo-header + segment) before
//! the frame leaves for the room, whatever partial value the field held. Recomputing everything
//! needs no virtio-net metadata (`PACKET_VNET_HDR`) and cannot be misled by a stale field.

use etherparse::{IpNumber, NetSlice, SlicedPacket};
use lanparty_datapath::wire::checksum::{add, finish};

/// What [`complete_l4_checksum`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completion {
    /// The TCP or UDP checksum was written.
    Completed,
    /// The frame carries no TCP/UDP segment whose checksum we can compute (not IP, another
    /// protocol, a fragment, or headers that do not parse); it is left as it is.
    NotApplicable,
}

/// Recomputes the TCP or UDP checksum of the Ethernet frame `frame` (802.1Q/802.1ad tags,
/// IPv4 or IPv6 with extension headers) in place.
pub fn complete_l4_checksum(frame: &mut [u8]) -> Completion {
    let Some((offset, len, field, sum)) = locate(frame) else {
        return Completion::NotApplicable;
    };
    let segment = &mut frame[offset..offset + len];
    segment[field..field + 2].fill(0);
    let mut value = finish(add(sum, segment));
    if value == 0 && field == UDP_FIELD {
        // UDP sends a computed zero as all ones; zero means "no checksum".
        value = 0xffff;
    }
    segment[field..field + 2].copy_from_slice(&value.to_be_bytes());
    Completion::Completed
}

const TCP_FIELD: usize = 16;
const UDP_FIELD: usize = 6;

/// Where the L4 segment is (offset in `frame`, length), where its checksum field is inside it,
/// and the pseudo-header sum.
fn locate(frame: &[u8]) -> Option<(usize, usize, usize, u32)> {
    let packet = SlicedPacket::from_ethernet(frame).ok()?;
    let net = packet.net.as_ref()?;
    let payload = net.ip_payload_ref()?;
    if payload.fragmented {
        return None;
    }
    let field = match payload.ip_number {
        IpNumber::TCP => TCP_FIELD,
        IpNumber::UDP => UDP_FIELD,
        _ => return None,
    };
    let segment = payload.payload;
    if segment.len() < field + 2 {
        return None;
    }
    let len = u32::try_from(segment.len()).ok()?;
    let mut sum = add(0, &[0, payload.ip_number.0]);
    sum = match net {
        NetSlice::Ipv4(ip) => {
            let h = ip.header();
            add(add(sum, &h.source()), &h.destination())
        }
        NetSlice::Ipv6(ip) => {
            let h = ip.header();
            add(add(sum, &h.source()), &h.destination())
        }
        NetSlice::Arp(_) => return None,
    };
    sum = add(sum, &len.to_be_bytes());
    // The payload borrows `frame`, so its start is inside it.
    let offset = segment.as_ptr() as usize - frame.as_ptr() as usize;
    Some((offset, segment.len(), field, sum))
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{IpHeaders, PacketBuilder, PacketBuilderStep, VlanId};

    const SRC: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const DST: [u8; 6] = [2, 0, 0, 0, 0, 2];
    const V6_SRC: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    const V6_DST: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

    /// Frames built by etherparse, which computes their checksums itself.
    fn valid_frames() -> Vec<(&'static str, Vec<u8>)> {
        let payload: Vec<u8> = (0..=200).collect();
        let mut out = Vec::new();
        let mut push = |name, b: PacketBuilderStep<IpHeaders>, tcp: bool| {
            let mut v = Vec::new();
            if tcp {
                b.tcp(40000, 80, 7, 64240).syn().write(&mut v, &[]).unwrap();
            } else {
                b.udp(5353, 27015).write(&mut v, &payload).unwrap();
            }
            out.push((name, v));
        };
        push(
            "udp4",
            PacketBuilder::ethernet2(SRC, DST).ipv4([198, 18, 0, 1], [198, 18, 0, 2], 64),
            false,
        );
        push(
            "tcp4",
            PacketBuilder::ethernet2(SRC, DST).ipv4([198, 18, 0, 1], [198, 18, 0, 2], 64),
            true,
        );
        push(
            "udp6",
            PacketBuilder::ethernet2(SRC, DST).ipv6(V6_SRC, V6_DST, 64),
            false,
        );
        push(
            "tcp6",
            PacketBuilder::ethernet2(SRC, DST).ipv6(V6_SRC, V6_DST, 64),
            true,
        );
        let vid = VlanId::try_new(5).unwrap();
        push(
            "udp4 vlan",
            PacketBuilder::ethernet2(SRC, DST).single_vlan(vid).ipv4(
                [198, 18, 0, 1],
                [198, 18, 0, 2],
                64,
            ),
            false,
        );
        push(
            "tcp6 vlan",
            PacketBuilder::ethernet2(SRC, DST)
                .single_vlan(vid)
                .ipv6(V6_SRC, V6_DST, 64),
            true,
        );
        out
    }

    /// Overwrites the L4 checksum with `value`, as a sender leaving it to hardware does.
    fn spoil(frame: &mut [u8], value: u16) {
        let (offset, _, field, _) = locate(frame).expect("tcp or udp");
        frame[offset + field..offset + field + 2].copy_from_slice(&value.to_be_bytes());
    }

    #[test]
    fn unfinished_checksums_are_completed_to_what_etherparse_computes() {
        for (name, valid) in valid_frames() {
            for partial in [0, 0x1234, 0xffff] {
                let mut frame = valid.clone();
                spoil(&mut frame, partial);
                assert_eq!(
                    complete_l4_checksum(&mut frame),
                    Completion::Completed,
                    "{name}"
                );
                assert_eq!(frame, valid, "{name} from {partial:#x}");
            }
        }
    }

    #[test]
    fn a_valid_checksum_stays_valid() {
        for (name, valid) in valid_frames() {
            let mut frame = valid.clone();
            assert_eq!(complete_l4_checksum(&mut frame), Completion::Completed);
            assert_eq!(frame, valid, "{name}");
        }
    }

    #[test]
    fn ethernet_padding_is_not_summed() {
        let (_, mut frame) = valid_frames().remove(1);
        let valid_len = frame.len();
        let valid = frame.clone();
        frame.extend_from_slice(&[0xab; 20]);
        spoil(&mut frame, 0);
        assert_eq!(complete_l4_checksum(&mut frame), Completion::Completed);
        assert_eq!(frame[..valid_len], valid[..]);
    }

    #[test]
    fn other_frames_are_left_alone() {
        let mut arp = vec![0xff; 12];
        arp.extend_from_slice(&[0x08, 0x06]);
        arp.extend_from_slice(&[0; 28]);
        let mut icmp = Vec::new();
        PacketBuilder::ethernet2(SRC, DST)
            .ipv4([198, 18, 0, 1], [198, 18, 0, 2], 64)
            .icmpv4_echo_request(1, 1)
            .write(&mut icmp, b"ping")
            .unwrap();
        let (_, udp) = valid_frames().remove(0);
        let cut = udp[..14 + 20 + 4].to_vec();
        for original in [arp, icmp, cut, vec![], vec![0; 13]] {
            let mut frame = original.clone();
            assert_eq!(complete_l4_checksum(&mut frame), Completion::NotApplicable);
            assert_eq!(frame, original);
        }
    }
}
