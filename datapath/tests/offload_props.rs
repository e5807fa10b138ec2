//! The TUN/TAP offload module as a spec: super-packets cut into valid segments, segments merged
//! and cut again into the same segments, checksums completed, and garbage refused without a
//! panic. Packets are checked with etherparse, an independent parser.

use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use lanparty_datapath::offload::{
    Coalescer, Link, OffloadError, Push, Segmenter, VNET_HDR_LEN, VnetHdr, complete_checksum,
    flags, gso,
};
use proptest::prelude::*;

const FIN: u8 = 0x01;
const PSH: u8 = 0x08;
const ACK: u8 = 0x10;
const CWR: u8 = 0x80;

/// How the test packet starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Ip,
    Ethernet,
    EthernetVlan,
}

impl Framing {
    fn link(self) -> Link {
        match self {
            Self::Ip => Link::Ip,
            _ => Link::Ethernet,
        }
    }
}

#[derive(Debug, Clone)]
struct Spec {
    v6: bool,
    framing: Framing,
    timestamps: bool,
    flags: u8,
    seq: u32,
    ip_id: u16,
    payload: Vec<u8>,
}

/// The 16-bit one's-complement sum, the simple way (RFC 1071).
fn sum16(data: &[u8]) -> u32 {
    data.chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum()
}

fn fold(mut s: u32) -> u16 {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

/// A TCP packet as the kernel hands a TSO burst over: lengths of the whole burst, a partial
/// (pseudo-header) checksum in the TCP field. Returns the packet and the TCP header's offset.
fn build(spec: &Spec) -> (Vec<u8>, usize) {
    let mut p = Vec::new();
    match spec.framing {
        Framing::Ip => {}
        Framing::Ethernet | Framing::EthernetVlan => {
            p.extend_from_slice(&[0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2]);
            if spec.framing == Framing::EthernetVlan {
                p.extend_from_slice(&[0x81, 0x00, 0x00, 0x05]);
            }
            p.extend_from_slice(if spec.v6 {
                &[0x86, 0xdd]
            } else {
                &[0x08, 0x00]
            });
        }
    }
    let l3 = p.len();
    let tcp_len = 20 + if spec.timestamps { 12 } else { 0 } + spec.payload.len();
    if spec.v6 {
        p.extend_from_slice(&[0x60, 0x01, 0x23, 0x45]);
        p.extend_from_slice(&(tcp_len as u16).to_be_bytes());
        p.extend_from_slice(&[6, 64]);
        p.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        p.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
    } else {
        p.extend_from_slice(&[0x45, 0x00]);
        p.extend_from_slice(&((20 + tcp_len) as u16).to_be_bytes());
        p.extend_from_slice(&spec.ip_id.to_be_bytes());
        p.extend_from_slice(&[0x40, 0x00, 64, 6, 0, 0, 198, 18, 5, 2, 198, 18, 5, 1]);
        let c = !fold(sum16(&p[l3..l3 + 20]));
        p[l3 + 10..l3 + 12].copy_from_slice(&c.to_be_bytes());
    }
    let l4 = p.len();
    p.extend_from_slice(&[0xc3, 0x50, 0x14, 0x51]);
    p.extend_from_slice(&spec.seq.to_be_bytes());
    p.extend_from_slice(&0x1234_5678u32.to_be_bytes());
    let doff = if spec.timestamps { 8u8 } else { 5 };
    p.extend_from_slice(&[doff << 4, spec.flags, 0x01, 0xf5, 0, 0, 0, 0]);
    if spec.timestamps {
        p.extend_from_slice(&[1, 1, 8, 10, 0, 0, 0, 7, 0, 0, 0, 9]);
    }
    p.extend_from_slice(&spec.payload);
    // The partial checksum: pseudo-header only, as TSO leaves it.
    let pseudo = pseudo_sum(&p, l3, spec.v6, tcp_len);
    p[l4 + 16..l4 + 18].copy_from_slice(&fold(pseudo).to_be_bytes());
    (p, l4)
}

fn pseudo_sum(p: &[u8], l3: usize, v6: bool, tcp_len: usize) -> u32 {
    let addrs = if v6 {
        &p[l3 + 8..l3 + 40]
    } else {
        &p[l3 + 12..l3 + 20]
    };
    sum16(addrs) + 6 + tcp_len as u32
}

fn header(spec: &Spec, l4: usize, gso_size: u16) -> VnetHdr {
    VnetHdr {
        flags: flags::NEEDS_CSUM,
        gso_type: if spec.v6 { gso::TCPV6 } else { gso::TCPV4 },
        hdr_len: (l4 + 20) as u16,
        gso_size,
        csum_start: l4 as u16,
        csum_offset: 16,
    }
}

fn segment_all(
    hdr: &VnetHdr,
    packet: &mut [u8],
    link: Link,
    max_len: usize,
) -> Result<Vec<Vec<u8>>, OffloadError> {
    let mut seg = Segmenter::new(hdr, packet, link, max_len)?;
    let mut out = vec![0u8; 70_000];
    let mut segments = Vec::new();
    while let Some(n) = seg.next_segment(packet, &mut out) {
        segments.push(out[..n?].to_vec());
    }
    assert!(seg.is_done());
    Ok(segments)
}

/// What etherparse reads in a segment: (payload, seq, flags, ip id) after checking every length
/// and checksum.
fn check_segment(seg: &[u8], framing: Framing) -> (Vec<u8>, u32, u8, Option<u16>) {
    let sliced = match framing {
        Framing::Ip => SlicedPacket::from_ip(seg),
        _ => SlicedPacket::from_ethernet(seg),
    }
    .expect("etherparse reads the segment");
    let Some(TransportSlice::Tcp(tcp)) = &sliced.transport else {
        panic!("no tcp in {sliced:?}");
    };
    let (want, id) = match &sliced.net {
        Some(NetSlice::Ipv4(ip)) => {
            let h = ip.header();
            assert_eq!(
                h.header_checksum(),
                h.to_header().calc_header_checksum(),
                "ipv4 header checksum"
            );
            let l3 = h.slice().as_ptr() as usize - seg.as_ptr() as usize;
            assert_eq!(
                usize::from(h.total_len()),
                seg.len() - l3,
                "ipv4 total length"
            );
            (
                tcp.calc_checksum_ipv4(h.source(), h.destination()).unwrap(),
                Some(h.identification()),
            )
        }
        Some(NetSlice::Ipv6(ip)) => {
            let h = ip.header();
            let l3 = h.slice().as_ptr() as usize - seg.as_ptr() as usize;
            assert_eq!(
                usize::from(h.payload_length()),
                seg.len() - l3 - 40,
                "ipv6 payload length"
            );
            (
                tcp.calc_checksum_ipv6(h.source(), h.destination()).unwrap(),
                None,
            )
        }
        other => panic!("not ip: {other:?}"),
    };
    assert_eq!(tcp.checksum(), want, "tcp checksum");
    let flags = seg[tcp.slice().as_ptr() as usize - seg.as_ptr() as usize + 13];
    (tcp.payload().to_vec(), tcp.sequence_number(), flags, id)
}

fn framing() -> impl Strategy<Value = Framing> {
    prop_oneof![
        Just(Framing::Ip),
        Just(Framing::Ethernet),
        Just(Framing::EthernetVlan)
    ]
}

prop_compose! {
    fn spec(max_payload: usize, extra_flags: u8)(
        v6 in any::<bool>(),
        framing in framing(),
        timestamps in any::<bool>(),
        extra in any::<u8>(),
        seq in any::<u32>(),
        ip_id in any::<u16>(),
        len in 0..max_payload,
        fill in any::<u8>(),
    ) -> Spec {
        Spec {
            v6,
            framing,
            timestamps,
            flags: ACK | (extra & extra_flags),
            seq,
            ip_id,
            payload: (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(fill)).collect(),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn segments_fit_carry_the_payload_and_verify(
        spec in spec(20_000, FIN | PSH | CWR),
        gso_size in 1u16..2000,
        max_len in 100usize..1600,
        ecn in any::<bool>(),
    ) {
        let (mut packet, l4) = build(&spec);
        let mut hdr = header(&spec, l4, gso_size);
        if ecn {
            hdr.gso_type |= gso::ECN;
        }
        let headers = l4 + 20 + if spec.timestamps { 12 } else { 0 };
        let mss = usize::from(gso_size).min(max_len - headers);
        let segments = segment_all(&hdr, &mut packet, spec.framing.link(), max_len).unwrap();
        prop_assert_eq!(segments.len(), spec.payload.len().div_ceil(mss).max(1));
        let mut joined = Vec::new();
        for (i, seg) in segments.iter().enumerate() {
            prop_assert!(seg.len() <= max_len, "segment of {} > {}", seg.len(), max_len);
            let (payload, seq, f, id) = check_segment(seg, spec.framing);
            let (first, last) = (i == 0, i + 1 == segments.len());
            if !last {
                prop_assert_eq!(payload.len(), mss);
            }
            prop_assert_eq!(seq, spec.seq.wrapping_add(joined.len() as u32));
            if let Some(id) = id {
                prop_assert_eq!(id, spec.ip_id.wrapping_add(i as u16));
            }
            let mut want = spec.flags;
            if !last { want &= !(FIN | PSH); }
            if !first { want &= !CWR; }
            prop_assert_eq!(f, want, "flags of segment {}", i);
            joined.extend_from_slice(&payload);
        }
        prop_assert_eq!(joined, spec.payload);
    }

    #[test]
    fn coalesced_segments_cut_again_are_the_same_segments(
        spec in spec(30_000, PSH),
        gso_size in 1u16..1500,
    ) {
        let (mut packet, l4) = build(&spec);
        let hdr = header(&spec, l4, gso_size);
        let link = spec.framing.link();
        let segments = segment_all(&hdr, &mut packet, link, usize::MAX).unwrap();
        let mut co = Coalescer::new(link);
        for (i, seg) in segments.iter().enumerate() {
            let got = co.push(seg);
            let lone_psh = i == 0 && segments.len() == 1 && spec.flags & PSH != 0;
            let want = if spec.payload.is_empty() || lone_psh {
                Push::Pass
            } else if i == 0 {
                Push::Held
            } else {
                Push::Merged
            };
            prop_assert_eq!(got, want, "segment {} of {}", i, segments.len());
        }
        let Some(bytes) = co.take() else {
            // Nothing to merge: a pure ACK or a lone PSH segment goes out as it is.
            prop_assert!(spec.payload.is_empty() || segments.len() == 1);
            return Ok(());
        };
        let mut bytes = bytes.to_vec();
        prop_assert!(!co.is_holding());
        let hdr = VnetHdr::parse(&bytes).unwrap();
        if segments.len() == 1 {
            prop_assert_eq!(hdr, VnetHdr::EMPTY);
            prop_assert_eq!(&bytes[VNET_HDR_LEN..], &segments[0][..]);
            return Ok(());
        }
        prop_assert_eq!(hdr.gso_size, gso_size);
        prop_assert_eq!(hdr.flags, flags::NEEDS_CSUM);
        let again = segment_all(&hdr, &mut bytes[VNET_HDR_LEN..], link, usize::MAX).unwrap();
        prop_assert_eq!(again, segments);
        prop_assert_eq!(co.counters().merged, (spec.payload.len().div_ceil(gso_size.into()) - 1) as u64);
    }

    #[test]
    fn garbage_is_refused_without_panicking(
        bytes in proptest::collection::vec(any::<u8>(), 0..400),
        raw_hdr in any::<[u8; VNET_HDR_LEN]>(),
        ip in any::<bool>(),
        max_len in 0usize..2000,
        out_len in 0usize..2000,
    ) {
        let link = if ip { Link::Ip } else { Link::Ethernet };
        let hdr = VnetHdr::parse(&raw_hdr).unwrap();
        let mut packet = bytes.clone();
        if let Ok(mut seg) = Segmenter::new(&hdr, &mut packet, link, max_len) {
            let mut out = vec![0u8; out_len];
            for _ in 0..10_000 {
                if seg.next_segment(&packet, &mut out).is_none() { break; }
            }
        }
        let mut co = Coalescer::new(link);
        let _ = co.push(&bytes);
        let _ = co.push(&bytes);
        let _ = co.take();
    }

    #[test]
    fn damaged_super_packets_are_refused_or_cut_without_panicking(
        spec in spec(3000, FIN | PSH | CWR),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in any::<prop::sample::Index>(),
        gso_size in 0u16..1600,
    ) {
        let (mut packet, l4) = build(&spec);
        let hdr = header(&spec, l4, gso_size);
        for (at, b) in flips {
            let i = at.index(packet.len());
            packet[i] ^= b;
        }
        packet.truncate(cut.index(packet.len() + 1));
        let link = spec.framing.link();
        let _ = segment_all(&hdr, &mut packet, link, 1500);
        let mut co = Coalescer::new(link);
        if co.push(&packet) == Push::Held {
            let _ = co.take();
        }
    }
}

fn spec_v4(payload: usize, flags: u8) -> Spec {
    Spec {
        v6: false,
        framing: Framing::Ethernet,
        timestamps: true,
        flags,
        seq: 1000,
        ip_id: 7,
        payload: vec![0x5a; payload],
    }
}

/// Segments of a 10 000-byte burst cut at 1000 bytes.
fn ten_segments() -> Vec<Vec<u8>> {
    let spec = spec_v4(10_000, ACK);
    let (mut packet, l4) = build(&spec);
    segment_all(&header(&spec, l4, 1000), &mut packet, Link::Ethernet, 1500).unwrap()
}

#[test]
fn the_virtio_header_reads_and_writes_little_endian() {
    // flags NEEDS_CSUM, TCPV4, hdr_len 66, gso_size 1448, csum_start 34, csum_offset 16.
    let bytes = [0x01, 0x01, 0x42, 0x00, 0xa8, 0x05, 0x22, 0x00, 0x10, 0x00];
    let hdr = VnetHdr::parse(&bytes).unwrap();
    assert_eq!(
        hdr,
        VnetHdr {
            flags: flags::NEEDS_CSUM,
            gso_type: gso::TCPV4,
            hdr_len: 66,
            gso_size: 1448,
            csum_start: 34,
            csum_offset: 16,
        }
    );
    assert_eq!(hdr.to_bytes(), bytes);
    assert_eq!(
        VnetHdr::parse(&bytes[..9]),
        Err(OffloadError::Truncated { need: 10, have: 9 })
    );
}

#[test]
fn a_partial_udp_checksum_is_completed_in_place() {
    // IPv4/UDP from 198.18.5.2:5000 to 198.18.5.1:53, 11 bytes of payload, partial checksum.
    let payload = b"hello world";
    let mut p = vec![
        0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, 17, 0, 0, 198, 18, 5, 2, 198, 18, 5, 1,
    ];
    let total = (20 + 8 + payload.len()) as u16;
    p[2..4].copy_from_slice(&total.to_be_bytes());
    p.extend_from_slice(&[0x13, 0x88, 0, 53]);
    p.extend_from_slice(&(total - 20).to_be_bytes());
    let pseudo = sum16(&p[12..20]) + 17 + u32::from(total - 20);
    p.extend_from_slice(&fold(pseudo).to_be_bytes());
    p.extend_from_slice(payload);
    let hdr = VnetHdr {
        flags: flags::NEEDS_CSUM,
        csum_start: 20,
        csum_offset: 6,
        ..VnetHdr::EMPTY
    };
    complete_checksum(&hdr, &mut p).unwrap();
    let sliced = SlicedPacket::from_ip(&p).unwrap();
    let (Some(NetSlice::Ipv4(ip)), Some(TransportSlice::Udp(udp))) =
        (&sliced.net, &sliced.transport)
    else {
        panic!("{sliced:?}")
    };
    let want = udp
        .to_header()
        .calc_checksum_ipv4_raw(ip.header().source(), ip.header().destination(), payload)
        .unwrap();
    assert_eq!(udp.checksum(), want);
    drop(sliced);
    // The same packet through the segmenter comes out once, whole.
    let mut seg = Segmenter::new(&VnetHdr::EMPTY, &mut p, Link::Ip, 100).unwrap();
    let mut out = [0u8; 100];
    assert_eq!(seg.next_segment(&p, &mut out), Some(Ok(p.len())));
    assert_eq!(&out[..p.len()], &p[..]);
    assert_eq!(seg.next_segment(&p, &mut out), None);
    let bad = VnetHdr {
        csum_start: 30,
        csum_offset: 9,
        ..hdr
    };
    assert!(matches!(
        complete_checksum(&bad, &mut p),
        Err(OffloadError::ChecksumRange { .. })
    ));
}

#[test]
fn a_tcp_super_packet_that_does_not_fit_is_cut_to_the_room_budget() {
    // gso_size 1448 (a 1500-byte MTU) but frames of at most 1161 bytes: 1161 - 14 - 20 - 32.
    let spec = spec_v4(64_000 - 66, ACK | PSH);
    let (mut packet, l4) = build(&spec);
    let segments =
        segment_all(&header(&spec, l4, 1448), &mut packet, Link::Ethernet, 1161).unwrap();
    assert_eq!(segments.len(), (64_000 - 66usize).div_ceil(1095));
    assert!(segments.iter().all(|s| s.len() <= 1161));
    assert_eq!(segments[0].len(), 1161);
}

#[test]
fn a_full_size_tcp_packet_without_gso_is_cut_too() {
    // One 1448-byte segment (a 1514-byte frame), checksum partial, no GSO.
    let spec = spec_v4(1448, ACK | PSH);
    let (mut packet, l4) = build(&spec);
    let hdr = VnetHdr {
        gso_type: gso::NONE,
        gso_size: 0,
        ..header(&spec, l4, 0)
    };
    let segments = segment_all(&hdr, &mut packet, Link::Ethernet, 1161).unwrap();
    assert_eq!(segments.len(), 2);
    let mut joined = Vec::new();
    for (i, seg) in segments.iter().enumerate() {
        assert!(seg.len() <= 1161);
        let (payload, seq, f, _) = check_segment(seg, Framing::Ethernet);
        assert_eq!(seq, 1000 + joined.len() as u32);
        assert_eq!(f, if i == 0 { ACK } else { ACK | PSH });
        joined.extend_from_slice(&payload);
    }
    assert_eq!(joined, spec.payload);
    // Within the limit it comes out whole, its checksum completed.
    let (mut packet, _) = build(&spec);
    let whole = segment_all(&hdr, &mut packet, Link::Ethernet, 1514).unwrap();
    assert_eq!(whole.len(), 1);
    assert_eq!(whole[0].len(), 1514);
    check_segment(&whole[0], Framing::Ethernet);
}

#[test]
fn unsupported_and_inconsistent_headers_are_errors() {
    let spec = spec_v4(3000, ACK);
    let (mut packet, l4) = build(&spec);
    let hdr = header(&spec, l4, 1000);
    let udp = VnetHdr {
        gso_type: gso::UDP_L4,
        ..hdr
    };
    assert_eq!(
        Segmenter::new(&udp, &mut packet, Link::Ethernet, 1500).unwrap_err(),
        OffloadError::UnsupportedGso(gso::UDP_L4)
    );
    let v6 = VnetHdr {
        gso_type: gso::TCPV6,
        ..hdr
    };
    assert!(matches!(
        Segmenter::new(&v6, &mut packet, Link::Ethernet, 1500),
        Err(OffloadError::Malformed(_))
    ));
    let zero = VnetHdr { gso_size: 0, ..hdr };
    assert_eq!(
        Segmenter::new(&zero, &mut packet, Link::Ethernet, 1500).unwrap_err(),
        OffloadError::ZeroGsoSize
    );
    let off = VnetHdr {
        csum_offset: 6,
        ..hdr
    };
    assert!(matches!(
        Segmenter::new(&off, &mut packet, Link::Ethernet, 1500),
        Err(OffloadError::ChecksumRange { .. })
    ));
    assert!(matches!(
        Segmenter::new(&hdr, &mut packet, Link::Ethernet, 66),
        Err(OffloadError::NoRoomForPayload {
            headers: 66,
            limit: 66
        })
    ));
    let mut seg = Segmenter::new(&hdr, &mut packet, Link::Ethernet, 1500).unwrap();
    let mut small = [0u8; 100];
    assert!(matches!(
        seg.next_segment(&packet, &mut small),
        Some(Err(OffloadError::BufferTooSmall {
            need: 1066,
            have: 100
        }))
    ));
    assert!(seg.is_done());
}

#[test]
fn a_segment_of_another_flow_or_out_of_order_flushes_the_held_one() {
    let segs = ten_segments();
    let mut co = Coalescer::new(Link::Ethernet);
    assert_eq!(co.push(&segs[0]), Push::Held);
    assert_eq!(co.push(&segs[1]), Push::Merged);
    // A gap in the sequence.
    assert_eq!(co.push(&segs[3]), Push::Flush);
    // Another flow (source port changed, checksum fixed up by the segmenter of its own burst).
    let mut other = spec_v4(1000, ACK);
    other.seq = 3000;
    let (mut p, l4) = build(&other);
    p[l4] ^= 1;
    let other = segment_all(
        &header(&spec_v4(0, ACK), l4, 1000),
        &mut p,
        Link::Ethernet,
        1500,
    )
    .unwrap()
    .remove(0);
    assert_eq!(co.push(&other), Push::Flush);
    // A pure ACK of the same flow.
    let ack = segment_all(
        &header(&spec_v4(0, ACK), l4, 1000),
        &mut build(&spec_v4(0, ACK)).0,
        Link::Ethernet,
        1500,
    )
    .unwrap()
    .remove(0);
    assert_eq!(co.push(&ack), Push::Flush);
    // The held pair goes out as one super-packet; then the ACK passes, the next segment is held.
    let held = co.take().unwrap().to_vec();
    assert_eq!(held.len(), VNET_HDR_LEN + segs[0].len() + 1000);
    assert_eq!(co.push(&ack), Push::Pass);
    assert_eq!(co.push(&segs[2]), Push::Held);
    assert_eq!(co.counters().super_packets, 1);
}

#[test]
fn a_segment_with_a_bad_checksum_is_never_merged() {
    let segs = ten_segments();
    let mut co = Coalescer::new(Link::Ethernet);
    assert_eq!(co.push(&segs[0]), Push::Held);
    let mut bad = segs[1].clone();
    let last = bad.len() - 1;
    bad[last] ^= 0xff;
    assert_eq!(co.push(&bad), Push::Flush);
    let one = co.take().unwrap();
    assert_eq!(VnetHdr::parse(one).unwrap(), VnetHdr::EMPTY);
    assert_eq!(&one[VNET_HDR_LEN..], &segs[0][..]);
    assert_eq!(co.push(&bad), Push::Pass);
    assert_eq!(co.counters().bad_checksum, 1);
}

#[test]
fn a_short_segment_ends_the_super_packet() {
    let spec = spec_v4(2500, ACK);
    let (mut packet, l4) = build(&spec);
    let segs = segment_all(&header(&spec, l4, 1000), &mut packet, Link::Ethernet, 1500).unwrap();
    let next = segment_all(
        &header(&spec, l4, 1000),
        &mut build(&Spec {
            seq: 1000 + 2500,
            ..spec_v4(1000, ACK)
        })
        .0,
        Link::Ethernet,
        1500,
    )
    .unwrap();
    let mut co = Coalescer::new(Link::Ethernet);
    assert_eq!(co.push(&segs[0]), Push::Held);
    assert_eq!(co.push(&segs[1]), Push::Merged);
    assert_eq!(co.push(&segs[2]), Push::Merged, "the 500-byte tail");
    assert_eq!(
        co.push(&next[0]),
        Push::Flush,
        "nothing follows a short segment"
    );
}
