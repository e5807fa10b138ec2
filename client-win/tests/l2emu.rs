//! Ethernet emulation driven with crafted frames and a simulated clock.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use dhcproto::v4::{DhcpOption, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Encodable};
use etherparse::{
    ArpEthIpv4Packet, ArpOperation, EtherType, Ethernet2Header, Icmpv6Type, NetSlice,
    PacketBuilder, SlicedPacket, TransportSlice,
};
use lanparty_client::l2emu::{
    Config, DhcpState, Emulator, Event, Ipv4Config, Ipv4Mode, NeighbourConfig,
};
use lanparty_datapath::Mac;
use proptest::prelude::*;

const OUR_MAC: Mac = Mac([0x02, 0x00, 0x00, 0x00, 0x00, 0x01]);
const PEER_MAC: Mac = Mac([0x02, 0x00, 0x00, 0x00, 0x00, 0x02]);
const ROUTER_MAC: Mac = Mac([0x02, 0x00, 0x00, 0x00, 0x00, 0xfe]);
const OUR_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 10);
const PEER_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 20);
const ROUTER_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);

fn static_emulator(now: Instant) -> Emulator {
    let mut config = Config::new(OUR_MAC, 7);
    config.ipv4 = Ipv4Mode::Static(Ipv4Config {
        addr: OUR_IP,
        prefix: 24,
        router: Some(ROUTER_IP),
    });
    Emulator::new(now, config)
}

fn drain_frames(emu: &mut Emulator) -> Vec<Vec<u8>> {
    std::iter::from_fn(|| emu.poll_frame()).collect()
}

fn drain_packets(emu: &mut Emulator) -> Vec<Vec<u8>> {
    std::iter::from_fn(|| emu.poll_packet()).collect()
}

/// (destination, source, EtherType) of a frame.
fn eth(frame: &[u8]) -> (Mac, Mac, u16) {
    (
        Mac::from_bytes(&frame[0..6]),
        Mac::from_bytes(&frame[6..12]),
        u16::from_be_bytes([frame[12], frame[13]]),
    )
}

fn arp_frame(
    dst: Mac,
    op: ArpOperation,
    sender: (Mac, Ipv4Addr),
    target: (Mac, Ipv4Addr),
) -> Vec<u8> {
    let mut frame = Ethernet2Header {
        source: sender.0.0,
        destination: dst.0,
        ether_type: EtherType::ARP,
    }
    .to_bytes()
    .to_vec();
    frame.extend_from_slice(
        &ArpEthIpv4Packet {
            operation: op,
            sender_mac: sender.0.0,
            sender_ipv4: sender.1.octets(),
            target_mac: target.0.0,
            target_ipv4: target.1.octets(),
        }
        .to_bytes(),
    );
    frame
}

fn parse_arp(frame: &[u8]) -> ArpEthIpv4Packet {
    let sliced = SlicedPacket::from_ethernet(frame).expect("frame parses");
    match sliced.net {
        Some(NetSlice::Arp(arp)) => arp.to_packet().try_eth_ipv4().expect("ethernet/ipv4 arp"),
        other => panic!("not ARP: {other:?}"),
    }
}

fn udp_packet(src: Ipv4Addr, dst: Ipv4Addr, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ipv4(src.octets(), dst.octets(), 64)
        .udp(40000, 40001)
        .write(&mut out, payload)
        .unwrap();
    out
}

fn udp6_packet(src: Ipv6Addr, dst: Ipv6Addr) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ipv6(src.octets(), dst.octets(), 64)
        .udp(5353, 5353)
        .write(&mut out, b"hello")
        .unwrap();
    out
}

fn ipv4_frame(src_mac: Mac, dst_mac: Mac, src: Ipv4Addr, dst: Ipv4Addr, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2(src_mac.0, dst_mac.0)
        .ipv4(src.octets(), dst.octets(), 64)
        .udp(40000, 40001)
        .write(&mut out, payload)
        .unwrap();
    out
}

#[test]
fn arp_request_for_our_address_is_answered() {
    let now = Instant::now();
    let mut emu = static_emulator(now);
    let request = arp_frame(
        Mac::BROADCAST,
        ArpOperation::REQUEST,
        (PEER_MAC, PEER_IP),
        (Mac::ZERO, OUR_IP),
    );
    emu.handle_frame(now, &request);
    let frames = drain_frames(&mut emu);
    assert_eq!(frames.len(), 1);
    assert_eq!(eth(&frames[0]), (PEER_MAC, OUR_MAC, 0x0806));
    let reply = parse_arp(&frames[0]);
    assert_eq!(reply.operation, ArpOperation::REPLY);
    assert_eq!(reply.sender_mac, OUR_MAC.0);
    assert_eq!(reply.sender_ipv4_addr(), OUR_IP);
    assert_eq!(reply.target_mac, PEER_MAC.0);
    assert_eq!(reply.target_ipv4_addr(), PEER_IP);
    assert_eq!(emu.counters().arp_requests_answered, 1);
    // The requester was learned, so a packet to it leaves without an ARP round trip.
    assert_eq!(emu.neighbour(now, IpAddr::V4(PEER_IP)), Some(PEER_MAC));
    assert!(
        drain_packets(&mut emu).is_empty(),
        "ARP never reaches the adapter"
    );
}

#[test]
fn arp_request_for_other_address_is_ignored() {
    let now = Instant::now();
    let mut emu = static_emulator(now);
    let request = arp_frame(
        Mac::BROADCAST,
        ArpOperation::REQUEST,
        (PEER_MAC, PEER_IP),
        (Mac::ZERO, Ipv4Addr::new(198, 18, 0, 99)),
    );
    emu.handle_frame(now, &request);
    assert!(drain_frames(&mut emu).is_empty());
    assert_eq!(emu.counters().arp_requests_ignored, 1);
    assert_eq!(emu.neighbour(now, IpAddr::V4(PEER_IP)), None);
}

#[test]
fn unicast_packet_waits_for_arp_then_flows() {
    let now = Instant::now();
    let mut emu = static_emulator(now);
    let first = udp_packet(OUR_IP, PEER_IP, b"one");
    let second = udp_packet(OUR_IP, PEER_IP, b"two");
    emu.handle_packet(now, &first);
    emu.handle_packet(now, &second);
    let frames = drain_frames(&mut emu);
    assert_eq!(frames.len(), 1, "one ARP request, packets wait");
    assert_eq!(eth(&frames[0]), (Mac::BROADCAST, OUR_MAC, 0x0806));
    let request = parse_arp(&frames[0]);
    assert_eq!(request.operation, ArpOperation::REQUEST);
    assert_eq!(request.sender_ipv4_addr(), OUR_IP);
    assert_eq!(request.target_ipv4_addr(), PEER_IP);

    let later = now + Duration::from_millis(30);
    emu.handle_frame(
        later,
        &arp_frame(
            OUR_MAC,
            ArpOperation::REPLY,
            (PEER_MAC, PEER_IP),
            (OUR_MAC, OUR_IP),
        ),
    );
    let frames = drain_frames(&mut emu);
    assert_eq!(frames.len(), 2);
    for (frame, packet) in frames.iter().zip([&first, &second]) {
        assert_eq!(eth(frame), (PEER_MAC, OUR_MAC, 0x0800));
        assert_eq!(&frame[14..], &packet[..]);
    }
    // A third packet goes straight out.
    emu.handle_packet(later, &first);
    assert_eq!(drain_frames(&mut emu).len(), 1);
    assert_eq!(emu.poll_timeout(), None, "nothing left to retry");
    // After the reachable time the neighbour is resolved again.
    let stale = later + Duration::from_secs(61);
    emu.handle_packet(stale, &first);
    let frames = drain_frames(&mut emu);
    assert_eq!(frames.len(), 1);
    assert_eq!(eth(&frames[0]).2, 0x0806);
}

#[test]
fn off_link_packets_go_to_the_router() {
    let now = Instant::now();
    let mut emu = static_emulator(now);
    let packet = udp_packet(OUR_IP, Ipv4Addr::new(203, 0, 113, 5), b"x");
    emu.handle_packet(now, &packet);
    let request = parse_arp(&drain_frames(&mut emu)[0]);
    assert_eq!(request.target_ipv4_addr(), ROUTER_IP);
    emu.handle_frame(
        now,
        &arp_frame(
            OUR_MAC,
            ArpOperation::REPLY,
            (ROUTER_MAC, ROUTER_IP),
            (OUR_MAC, OUR_IP),
        ),
    );
    let frames = drain_frames(&mut emu);
    assert_eq!(eth(&frames[0]).0, ROUTER_MAC);
    assert_eq!(&frames[0][14..], &packet[..]);
}

#[test]
fn arp_resolution_gives_up_after_retries() {
    let now = Instant::now();
    let mut emu = static_emulator(now);
    for _ in 0..6 {
        emu.handle_packet(now, &udp_packet(OUR_IP, PEER_IP, b"x"));
    }
    assert_eq!(drain_frames(&mut emu).len(), 1);
    assert_eq!(emu.counters().queued_for_resolution, 4);
    assert_eq!(emu.counters().pending_queue_full_dropped, 2);
    let mut t = now;
    let mut requests = 1;
    while let Some(deadline) = emu.poll_timeout() {
        assert_eq!(deadline - t, Duration::from_secs(1), "retries 1 s apart");
        t = deadline;
        emu.handle_timeout(t);
        requests += drain_frames(&mut emu).len();
        assert!(
            t - now < Duration::from_secs(10),
            "gives up in bounded time"
        );
    }
    assert_eq!(requests, 3);
    assert_eq!(emu.counters().arp_requests_sent, 3);
    assert_eq!(emu.counters().resolutions_failed, 1);
    assert_eq!(emu.counters().resolution_failed_dropped, 4);
    // A late reply no longer releases anything.
    emu.handle_frame(
        t,
        &arp_frame(
            OUR_MAC,
            ArpOperation::REPLY,
            (PEER_MAC, PEER_IP),
            (OUR_MAC, OUR_IP),
        ),
    );
    assert!(drain_frames(&mut emu).is_empty());
}

fn ns_frame(src_mac: Mac, src: Ipv6Addr, dst: Ipv6Addr, target: Ipv6Addr, dst_mac: Mac) -> Vec<u8> {
    let mut payload = target.octets().to_vec();
    if !src.is_unspecified() {
        payload.extend_from_slice(&[1, 1]);
        payload.extend_from_slice(&src_mac.0);
    }
    let mut out = Vec::new();
    PacketBuilder::ethernet2(src_mac.0, dst_mac.0)
        .ipv6(src.octets(), dst.octets(), 255)
        .icmpv6(Icmpv6Type::NeighborSolicitation)
        .write(&mut out, &payload)
        .unwrap();
    out
}

fn link_local(mac: Mac) -> Ipv6Addr {
    let m = mac.0;
    Ipv6Addr::from([
        0xfe,
        0x80,
        0,
        0,
        0,
        0,
        0,
        0,
        m[0] ^ 2,
        m[1],
        m[2],
        0xff,
        0xfe,
        m[3],
        m[4],
        m[5],
    ])
}

/// The solicited-node group of `addr` and its MAC.
fn solicited(addr: Ipv6Addr) -> (Ipv6Addr, Mac) {
    let o = addr.octets();
    let group = Ipv6Addr::from([
        0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, o[13], o[14], o[15],
    ]);
    (group, Mac([0x33, 0x33, 0xff, o[13], o[14], o[15]]))
}

/// Parses an NA frame: (ip src, ip dst, S flag, target, target link-layer address).
fn parse_na(frame: &[u8]) -> (Ipv6Addr, Ipv6Addr, bool, Ipv6Addr, Mac) {
    let sliced = SlicedPacket::from_ethernet(frame).expect("frame parses");
    let Some(NetSlice::Ipv6(ip)) = &sliced.net else {
        panic!("not IPv6")
    };
    let (src, dst) = (ip.header().source_addr(), ip.header().destination_addr());
    assert_eq!(ip.header().hop_limit(), 255);
    let Some(TransportSlice::Icmpv6(icmp)) = &sliced.transport else {
        panic!("not ICMPv6")
    };
    assert!(
        icmp.is_checksum_valid(src.octets(), dst.octets()),
        "ICMPv6 checksum must be valid"
    );
    assert_eq!(icmp.type_u8(), 136);
    let body = icmp.slice();
    let target = Ipv6Addr::from(<[u8; 16]>::try_from(&body[8..24]).unwrap());
    assert_eq!(&body[24..26], &[2, 1], "target link-layer address option");
    (
        src,
        dst,
        body[4] & 0x40 != 0,
        target,
        Mac::from_bytes(&body[26..32]),
    )
}

#[test]
fn neighbour_solicitation_is_answered_with_valid_checksum() {
    let now = Instant::now();
    let mut emu = static_emulator(now);
    let ours = link_local(OUR_MAC);
    let peer = link_local(PEER_MAC);
    let (group, group_mac) = solicited(ours);
    emu.handle_frame(now, &ns_frame(PEER_MAC, peer, group, ours, group_mac));
    let frames = drain_frames(&mut emu);
    assert_eq!(frames.len(), 1);
    assert_eq!(eth(&frames[0]), (PEER_MAC, OUR_MAC, 0x86dd));
    assert_eq!(parse_na(&frames[0]), (ours, peer, true, ours, OUR_MAC));
    assert_eq!(emu.counters().ns_answered, 1);
    assert_eq!(emu.neighbour(now, IpAddr::V6(peer)), Some(PEER_MAC));
    assert!(drain_packets(&mut emu).is_empty());
}

#[test]
fn solicitations_for_added_addresses_and_dad_probes_are_answered() {
    let now = Instant::now();
    let mut emu = static_emulator(now);
    // Windows picks a random link-local address; the client tells the emulator about it.
    let random_ll: Ipv6Addr = "fe80::1c2d:3e4f:5a6b:7c8d".parse().unwrap();
    let (group, group_mac) = solicited(random_ll);
    let probe = ns_frame(PEER_MAC, Ipv6Addr::UNSPECIFIED, group, random_ll, group_mac);
    emu.handle_frame(now, &probe);
    assert!(drain_frames(&mut emu).is_empty());
    assert_eq!(emu.counters().ns_ignored, 1);
    emu.add_ipv6(random_ll);
    emu.handle_frame(now, &probe);
    let frames = drain_frames(&mut emu);
    assert_eq!(eth(&frames[0]).0, Mac([0x33, 0x33, 0, 0, 0, 1]));
    let (src, dst, solicited_flag, target, _) = parse_na(&frames[0]);
    assert_eq!(src, random_ll);
    assert_eq!(dst, "ff02::1".parse::<Ipv6Addr>().unwrap());
    assert!(!solicited_flag, "a DAD answer has S clear");
    assert_eq!(target, random_ll);
}

#[test]
fn solicitation_with_bad_checksum_is_dropped() {
    let now = Instant::now();
    let mut emu = static_emulator(now);
    let ours = link_local(OUR_MAC);
    let (group, group_mac) = solicited(ours);
    let mut frame = ns_frame(PEER_MAC, link_local(PEER_MAC), group, ours, group_mac);
    let last = frame.len() - 1;
    frame[last] ^= 0xff;
    emu.handle_frame(now, &frame);
    assert!(drain_frames(&mut emu).is_empty());
    assert_eq!(emu.counters().ndp_invalid, 1);
}

#[test]
fn ipv6_unicast_waits_for_neighbour_advertisement() {
    let now = Instant::now();
    let mut emu = static_emulator(now);
    let ours = link_local(OUR_MAC);
    let peer = link_local(PEER_MAC);
    let packet = udp6_packet(ours, peer);
    emu.handle_packet(now, &packet);
    let frames = drain_frames(&mut emu);
    assert_eq!(frames.len(), 1);
    let (group, group_mac) = solicited(peer);
    assert_eq!(eth(&frames[0]).0, group_mac);
    let sliced = SlicedPacket::from_ethernet(&frames[0]).unwrap();
    let Some(NetSlice::Ipv6(ip)) = &sliced.net else {
        panic!("not IPv6")
    };
    assert_eq!(ip.header().destination_addr(), group);
    let Some(TransportSlice::Icmpv6(icmp)) = &sliced.transport else {
        panic!("not ICMPv6")
    };
    assert_eq!(icmp.type_u8(), 135);
    assert!(icmp.is_checksum_valid(ours.octets(), group.octets()));

    // The peer answers with an NA carrying its link-layer address.
    let mut body = peer.octets().to_vec();
    body.extend_from_slice(&[2, 1]);
    body.extend_from_slice(&PEER_MAC.0);
    let mut na = Vec::new();
    PacketBuilder::ethernet2(PEER_MAC.0, OUR_MAC.0)
        .ipv6(peer.octets(), ours.octets(), 255)
        .icmpv6(Icmpv6Type::NeighborAdvertisement(
            etherparse::icmpv6::NeighborAdvertisementHeader {
                router: false,
                solicited: true,
                r#override: true,
            },
        ))
        .write(&mut na, &body)
        .unwrap();
    emu.handle_frame(now, &na);
    assert_eq!(emu.counters().na_learned, 1);
    let frames = drain_frames(&mut emu);
    assert_eq!(frames.len(), 1);
    assert_eq!(eth(&frames[0]), (PEER_MAC, OUR_MAC, 0x86dd));
    assert_eq!(&frames[0][14..], &packet[..]);
}

#[test]
fn ipv6_multicast_maps_to_33_33() {
    let now = Instant::now();
    let mut emu = static_emulator(now);
    let packet = udp6_packet(link_local(OUR_MAC), "ff02::1:3".parse().unwrap());
    emu.handle_packet(now, &packet);
    let frames = drain_frames(&mut emu);
    assert_eq!(frames.len(), 1);
    assert_eq!(
        eth(&frames[0]),
        (Mac([0x33, 0x33, 0, 1, 0, 3]), OUR_MAC, 0x86dd)
    );
    assert_eq!(&frames[0][14..], &packet[..]);
}

#[test]
fn ipv4_multicast_maps_to_01_00_5e() {
    let now = Instant::now();
    let mut emu = static_emulator(now);
    // 239.255.255.250 (SSDP): the high bit of the second octet is dropped.
    let packet = udp_packet(OUR_IP, Ipv4Addr::new(239, 255, 255, 250), b"M-SEARCH");
    emu.handle_packet(now, &packet);
    let frames = drain_frames(&mut emu);
    assert_eq!(
        eth(&frames[0]),
        (Mac([0x01, 0x00, 0x5e, 0x7f, 0xff, 0xfa]), OUR_MAC, 0x0800)
    );
    assert_eq!(&frames[0][14..], &packet[..]);
}

#[test]
fn limited_broadcast_goes_to_ff() {
    let now = Instant::now();
    let mut emu = static_emulator(now);
    for dst in [Ipv4Addr::BROADCAST, Ipv4Addr::new(198, 18, 0, 255)] {
        let packet = udp_packet(OUR_IP, dst, b"game lobby");
        emu.handle_packet(now, &packet);
        let frames = drain_frames(&mut emu);
        assert_eq!(frames.len(), 1, "{dst}");
        assert_eq!(eth(&frames[0]), (Mac::BROADCAST, OUR_MAC, 0x0800));
        assert_eq!(&frames[0][14..], &packet[..]);
    }
    assert_eq!(emu.counters().packets_framed, 2);
}

#[test]
fn ip_frames_for_us_reach_the_adapter_without_padding() {
    let now = Instant::now();
    let mut emu = static_emulator(now);
    let mut frame = ipv4_frame(PEER_MAC, OUR_MAC, PEER_IP, OUR_IP, b"hi");
    let packet = frame[14..].to_vec();
    frame.resize(60, 0); // Ethernet minimum-size padding
    emu.handle_frame(now, &frame);
    emu.handle_frame(
        now,
        &ipv4_frame(PEER_MAC, Mac::BROADCAST, PEER_IP, Ipv4Addr::BROADCAST, b"b"),
    );
    let packets = drain_packets(&mut emu);
    assert_eq!(packets.len(), 2);
    assert_eq!(packets[0], packet);
    assert_eq!(emu.counters().ipv4_to_adapter, 2);
}

#[test]
fn non_ip_frames_are_counted() {
    let now = Instant::now();
    let mut emu = static_emulator(now);
    assert_eq!(emu.status_hint(), None);
    // IPX in Ethernet II.
    let mut ipx = Mac::BROADCAST.0.to_vec();
    ipx.extend_from_slice(&PEER_MAC.0);
    ipx.extend_from_slice(&[0x81, 0x37, 0xff, 0xff, 0, 30]);
    ipx.resize(60, 0);
    // 802.3 with a length field and an LLC header (NetBIOS).
    let mut llc = Mac::BROADCAST.0.to_vec();
    llc.extend_from_slice(&PEER_MAC.0);
    llc.extend_from_slice(&[0x00, 0x2e, 0xf0, 0xf0, 0x03]);
    llc.resize(60, 0);
    emu.handle_frame(now, &ipx);
    emu.handle_frame(now, &llc);
    assert_eq!(emu.counters().non_ip_dropped, 2);
    assert!(drain_packets(&mut emu).is_empty());
    let hint = emu
        .status_hint()
        .expect("a hint once non-IP frames were dropped");
    assert!(hint.contains("--adapter tap"), "{hint}");
}

#[test]
fn frames_for_other_macs_are_ignored() {
    let now = Instant::now();
    let mut emu = static_emulator(now);
    emu.handle_frame(
        now,
        &ipv4_frame(PEER_MAC, ROUTER_MAC, PEER_IP, ROUTER_IP, b"x"),
    );
    emu.handle_frame(
        now,
        &arp_frame(
            ROUTER_MAC,
            ArpOperation::REQUEST,
            (PEER_MAC, PEER_IP),
            (Mac::ZERO, OUR_IP),
        ),
    );
    assert!(drain_packets(&mut emu).is_empty());
    assert!(drain_frames(&mut emu).is_empty());
    assert_eq!(emu.counters().not_for_us, 2);
}

#[test]
fn arp_claiming_our_address_is_a_conflict_not_a_neighbour() {
    let now = Instant::now();
    let mut emu = static_emulator(now);
    emu.handle_frame(
        now,
        &arp_frame(
            Mac::BROADCAST,
            ArpOperation::REPLY,
            (PEER_MAC, OUR_IP),
            (Mac::ZERO, OUR_IP),
        ),
    );
    assert_eq!(emu.counters().address_conflicts, 1);
    assert_eq!(emu.neighbour(now, IpAddr::V4(OUR_IP)), None);
}

// ---- DHCP ----

const SERVER_IP: Ipv4Addr = ROUTER_IP;
const LEASED: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 77);

fn dhcp_emulator(now: Instant, seed: u64) -> Emulator {
    Emulator::new(now, Config::new(OUR_MAC, seed))
}

/// Decodes a DHCP message the client sent: (eth dst, ip src, ip dst, message).
fn parse_dhcp(frame: &[u8]) -> (Mac, Ipv4Addr, Ipv4Addr, Message) {
    let sliced = SlicedPacket::from_ethernet(frame).expect("frame parses");
    let Some(NetSlice::Ipv4(ip)) = &sliced.net else {
        panic!("not IPv4")
    };
    let Some(TransportSlice::Udp(udp)) = &sliced.transport else {
        panic!("not UDP")
    };
    assert_eq!((udp.source_port(), udp.destination_port()), (68, 67));
    let msg = Message::from_bytes(udp.payload()).expect("DHCP decodes");
    (
        eth(frame).0,
        ip.header().source_addr(),
        ip.header().destination_addr(),
        msg,
    )
}

fn one_dhcp(emu: &mut Emulator) -> (Mac, Ipv4Addr, Ipv4Addr, Message) {
    let frames = drain_frames(emu);
    assert_eq!(frames.len(), 1, "exactly one frame expected");
    parse_dhcp(&frames[0])
}

/// A server reply to `request`, broadcast as the broadcast flag asks.
fn reply(request: &Message, kind: MessageType, lease: u32, extra: &[DhcpOption]) -> Vec<u8> {
    let yiaddr = if kind == MessageType::Nak {
        Ipv4Addr::UNSPECIFIED
    } else {
        LEASED
    };
    let mut msg = Message::new_with_id(
        request.xid(),
        Ipv4Addr::UNSPECIFIED,
        yiaddr,
        SERVER_IP,
        Ipv4Addr::UNSPECIFIED,
        &request.chaddr()[..6],
    );
    msg.set_opcode(Opcode::BootReply);
    msg.set_flags(request.flags());
    let opts = msg.opts_mut();
    opts.insert(DhcpOption::MessageType(kind));
    opts.insert(DhcpOption::ServerIdentifier(SERVER_IP));
    if kind != MessageType::Nak {
        opts.insert(DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)));
        opts.insert(DhcpOption::Router(vec![ROUTER_IP]));
        opts.insert(DhcpOption::DomainNameServer(vec![ROUTER_IP]));
        opts.insert(DhcpOption::AddressLeaseTime(lease));
    }
    for o in extra {
        opts.insert(o.clone());
    }
    let payload = msg.to_vec().unwrap();
    let mut out = Vec::new();
    PacketBuilder::ethernet2(ROUTER_MAC.0, Mac::BROADCAST.0)
        .ipv4(SERVER_IP.octets(), Ipv4Addr::BROADCAST.octets(), 64)
        .udp(67, 68)
        .write(&mut out, &payload)
        .unwrap();
    out
}

/// Runs DISCOVER -> OFFER -> REQUEST -> ACK.
fn acquire(emu: &mut Emulator, now: Instant, lease: u32) {
    let (_, _, _, discover) = one_dhcp(emu);
    emu.handle_frame(now, &reply(&discover, MessageType::Offer, lease, &[]));
    let (_, _, _, request) = one_dhcp(emu);
    emu.handle_frame(now, &reply(&request, MessageType::Ack, lease, &[]));
}

fn server_arp_reply() -> Vec<u8> {
    arp_frame(
        OUR_MAC,
        ArpOperation::REPLY,
        (ROUTER_MAC, SERVER_IP),
        (OUR_MAC, LEASED),
    )
}

#[test]
fn dhcp_discover_offer_request_ack() {
    let now = Instant::now();
    let mut emu = dhcp_emulator(now, 1);
    assert_eq!(emu.dhcp_state(), Some(DhcpState::Selecting));
    assert_eq!(
        emu.status_hint(),
        None,
        "one DISCOVER is no reason to worry"
    );
    let (dst_mac, src, dst, discover) = one_dhcp(&mut emu);
    assert_eq!(
        (dst_mac, src, dst),
        (Mac::BROADCAST, Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST)
    );
    assert_eq!(discover.opts().msg_type(), Some(MessageType::Discover));
    assert!(discover.flags().broadcast(), "broadcast flag set");
    assert_eq!(&discover.chaddr()[..6], &OUR_MAC.0);

    // An offer for another transaction is ignored.
    let mut stranger = discover.clone();
    stranger.set_xid(discover.xid().wrapping_add(1));
    emu.handle_frame(now, &reply(&stranger, MessageType::Offer, 600, &[]));
    assert!(drain_frames(&mut emu).is_empty());
    assert_eq!(emu.counters().dhcp_ignored, 1);

    emu.handle_frame(now, &reply(&discover, MessageType::Offer, 600, &[]));
    assert_eq!(emu.dhcp_state(), Some(DhcpState::Requesting));
    let (dst_mac, _, dst, request) = one_dhcp(&mut emu);
    assert_eq!((dst_mac, dst), (Mac::BROADCAST, Ipv4Addr::BROADCAST));
    assert_eq!(request.xid(), discover.xid());
    assert!(request.flags().broadcast());
    assert_eq!(request.opts().msg_type(), Some(MessageType::Request));
    assert_eq!(
        request.opts().get(OptionCode::RequestedIpAddress),
        Some(&DhcpOption::RequestedIpAddress(LEASED))
    );
    assert_eq!(
        request.opts().get(OptionCode::ServerIdentifier),
        Some(&DhcpOption::ServerIdentifier(SERVER_IP))
    );
    assert!(emu.poll_event().is_none(), "no address before the ACK");

    emu.handle_frame(now, &reply(&request, MessageType::Ack, 600, &[]));
    assert_eq!(emu.dhcp_state(), Some(DhcpState::Bound));
    assert_eq!(
        emu.poll_event(),
        Some(Event::AddressAcquired {
            addr: LEASED,
            prefix: 24,
            router: Some(ROUTER_IP),
            dns: vec![ROUTER_IP],
            lease: Some(Duration::from_secs(600)),
        })
    );
    let lease = emu.lease().unwrap();
    assert_eq!(lease.t1, Some(now + Duration::from_secs(300)));
    assert_eq!(lease.t2, Some(now + Duration::from_secs(525)));
    assert_eq!(
        emu.ipv4(),
        Some(Ipv4Config {
            addr: LEASED,
            prefix: 24,
            router: Some(ROUTER_IP)
        })
    );
    // The emulator now answers ARP for the leased address.
    emu.handle_frame(
        now,
        &arp_frame(
            Mac::BROADCAST,
            ArpOperation::REQUEST,
            (PEER_MAC, PEER_IP),
            (Mac::ZERO, LEASED),
        ),
    );
    assert_eq!(
        parse_arp(&drain_frames(&mut emu)[0]).sender_ipv4_addr(),
        LEASED
    );
    // DHCP replies never reach the adapter.
    assert!(drain_packets(&mut emu).is_empty());
}

#[test]
fn dhcp_renews_at_t1() {
    let now = Instant::now();
    let mut emu = dhcp_emulator(now, 2);
    acquire(&mut emu, now, 600);
    emu.poll_event();
    let t1 = now + Duration::from_secs(300);
    assert_eq!(emu.poll_timeout(), Some(t1));
    emu.handle_timeout(t1 - Duration::from_secs(1));
    assert!(drain_frames(&mut emu).is_empty(), "nothing before T1");
    emu.handle_timeout(t1);
    assert_eq!(emu.dhcp_state(), Some(DhcpState::Renewing));
    // Unicast to the server: it is on-link, so ARP first.
    let arp = parse_arp(&drain_frames(&mut emu)[0]);
    assert_eq!(arp.target_ipv4_addr(), SERVER_IP);
    emu.handle_frame(t1, &server_arp_reply());
    let (dst_mac, src, dst, request) = one_dhcp(&mut emu);
    assert_eq!((dst_mac, src, dst), (ROUTER_MAC, LEASED, SERVER_IP));
    assert_eq!(request.ciaddr(), LEASED);
    assert!(request.opts().get(OptionCode::ServerIdentifier).is_none());
    emu.handle_frame(t1, &reply(&request, MessageType::Ack, 600, &[]));
    assert_eq!(
        emu.poll_event(),
        Some(Event::AddressRenewed {
            addr: LEASED,
            lease: Some(Duration::from_secs(600))
        })
    );
    assert_eq!(emu.dhcp_state(), Some(DhcpState::Bound));
    assert_eq!(emu.poll_timeout(), Some(t1 + Duration::from_secs(300)));
}

#[test]
fn dhcp_rebinds_at_t2_and_gives_up_at_expiry() {
    let now = Instant::now();
    let mut emu = dhcp_emulator(now, 3);
    acquire(&mut emu, now, 200);
    emu.poll_event();
    let mut t = now;
    let mut saw_rebinding = false;
    while emu.dhcp_state() != Some(DhcpState::Selecting) {
        t = emu.poll_timeout().unwrap();
        emu.handle_timeout(t);
        let frames = drain_frames(&mut emu);
        if emu.dhcp_state() == Some(DhcpState::Rebinding) && !saw_rebinding {
            saw_rebinding = true;
            assert_eq!(t, now + Duration::from_secs(175), "T2 = 0.875 * lease");
            let (dst_mac, src, dst, msg) = parse_dhcp(frames.last().unwrap());
            assert_eq!(
                (dst_mac, src, dst),
                (Mac::BROADCAST, LEASED, Ipv4Addr::BROADCAST)
            );
            assert_eq!(msg.ciaddr(), LEASED);
        }
        assert!(t - now <= Duration::from_secs(200));
    }
    assert!(saw_rebinding);
    assert_eq!(t, now + Duration::from_secs(200));
    assert_eq!(emu.poll_event(), Some(Event::AddressLost { addr: LEASED }));
    assert_eq!(emu.ipv4(), None);
}

#[test]
fn dhcp_nak_restarts() {
    let now = Instant::now();
    let mut emu = dhcp_emulator(now, 4);
    let (_, _, _, discover) = one_dhcp(&mut emu);
    emu.handle_frame(now, &reply(&discover, MessageType::Offer, 600, &[]));
    let (_, _, _, request) = one_dhcp(&mut emu);
    emu.handle_frame(now, &reply(&request, MessageType::Nak, 0, &[]));
    assert_eq!(emu.dhcp_state(), Some(DhcpState::Selecting));
    let (_, _, _, again) = one_dhcp(&mut emu);
    assert_eq!(again.opts().msg_type(), Some(MessageType::Discover));
    assert_ne!(again.xid(), discover.xid(), "a new transaction");
    assert_eq!(emu.poll_event(), None);

    // A NAK while renewing takes the address away.
    emu.handle_frame(now, &reply(&again, MessageType::Offer, 600, &[]));
    let (_, _, _, request) = one_dhcp(&mut emu);
    emu.handle_frame(now, &reply(&request, MessageType::Ack, 600, &[]));
    assert!(matches!(
        emu.poll_event(),
        Some(Event::AddressAcquired { .. })
    ));
    let t1 = emu.poll_timeout().unwrap();
    emu.handle_timeout(t1);
    emu.handle_frame(t1, &server_arp_reply());
    let frames = drain_frames(&mut emu);
    let (_, _, _, renew) = parse_dhcp(frames.last().unwrap());
    emu.handle_frame(t1, &reply(&renew, MessageType::Nak, 0, &[]));
    assert_eq!(emu.poll_event(), Some(Event::AddressLost { addr: LEASED }));
    assert_eq!(emu.ipv4(), None);
    assert_eq!(emu.dhcp_state(), Some(DhcpState::Selecting));
}

#[test]
fn dhcp_retransmits_with_backoff() {
    let now = Instant::now();
    let mut emu = dhcp_emulator(now, 5);
    let (_, _, _, first) = one_dhcp(&mut emu);
    let mut t = now;
    let mut gaps = Vec::new();
    for _ in 0..7 {
        let next = emu.poll_timeout().unwrap();
        gaps.push(next - t);
        t = next;
        emu.handle_timeout(t);
        let (_, _, _, msg) = one_dhcp(&mut emu);
        assert_eq!(msg.opts().msg_type(), Some(MessageType::Discover));
        assert_eq!(msg.xid(), first.xid());
    }
    // RFC 2131: 4, 8, 16, 32, 64, 64, 64 s, each within +-1 s.
    for (gap, base) in gaps.iter().zip([4u64, 8, 16, 32, 64, 64, 64]) {
        let base = Duration::from_secs(base);
        assert!(
            *gap >= base - Duration::from_secs(1) && *gap <= base + Duration::from_secs(1),
            "gap {gap:?} not around {base:?}"
        );
    }
    // Same seed, same schedule; another seed, another one.
    let schedule = |seed| {
        let mut emu = dhcp_emulator(now, seed);
        drain_frames(&mut emu);
        (0..5)
            .map(|_| {
                let t = emu.poll_timeout().unwrap();
                emu.handle_timeout(t);
                drain_frames(&mut emu);
                t
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(schedule(9), schedule(9));
    assert_ne!(schedule(9), schedule(10));
    let hint = emu.status_hint().expect("a silent LAN is worth a hint");
    assert!(hint.contains("no DHCP offer"), "{hint}");
}

#[test]
fn dhcp_request_retries_fall_back_to_discover() {
    let now = Instant::now();
    let mut emu = dhcp_emulator(now, 6);
    let (_, _, _, discover) = one_dhcp(&mut emu);
    emu.handle_frame(now, &reply(&discover, MessageType::Offer, 600, &[]));
    one_dhcp(&mut emu);
    let mut kinds = Vec::new();
    for _ in 0..4 {
        let t = emu.poll_timeout().unwrap();
        emu.handle_timeout(t);
        kinds.push(one_dhcp(&mut emu).3.opts().msg_type().unwrap());
    }
    assert_eq!(
        kinds,
        [
            MessageType::Request,
            MessageType::Request,
            MessageType::Request,
            MessageType::Discover
        ]
    );
}

#[test]
fn dhcp_honours_t1_and_t2_options() {
    let now = Instant::now();
    let mut emu = dhcp_emulator(now, 8);
    let (_, _, _, discover) = one_dhcp(&mut emu);
    emu.handle_frame(now, &reply(&discover, MessageType::Offer, 1000, &[]));
    let (_, _, _, request) = one_dhcp(&mut emu);
    emu.handle_frame(
        now,
        &reply(
            &request,
            MessageType::Ack,
            1000,
            &[DhcpOption::Renewal(100), DhcpOption::Rebinding(200)],
        ),
    );
    let lease = emu.lease().unwrap();
    assert_eq!(lease.t1, Some(now + Duration::from_secs(100)));
    assert_eq!(lease.t2, Some(now + Duration::from_secs(200)));
    assert_eq!(lease.expires, Some(now + Duration::from_secs(1000)));
}

#[test]
fn static_mode_announces_its_address_and_sends_no_dhcp() {
    let now = Instant::now();
    let mut emu = static_emulator(now);
    assert!(drain_frames(&mut emu).is_empty());
    assert_eq!(emu.dhcp_state(), None);
    assert!(matches!(
        emu.poll_event(),
        Some(Event::AddressAcquired {
            addr: OUR_IP,
            prefix: 24,
            lease: None,
            ..
        })
    ));
    assert_eq!(emu.poll_timeout(), None);
}

#[test]
fn without_an_address_ipv4_unicast_has_no_route() {
    let now = Instant::now();
    let mut emu = dhcp_emulator(now, 11);
    drain_frames(&mut emu);
    emu.handle_packet(now, &udp_packet(Ipv4Addr::UNSPECIFIED, PEER_IP, b"x"));
    assert!(drain_frames(&mut emu).is_empty());
    assert_eq!(emu.counters().no_route_dropped, 1);
}

#[test]
fn neighbour_cache_is_bounded() {
    let now = Instant::now();
    let mut config = Config::new(OUR_MAC, 1);
    config.ipv4 = Ipv4Mode::Static(Ipv4Config {
        addr: OUR_IP,
        prefix: 16,
        router: None,
    });
    config.neighbours = NeighbourConfig {
        max_entries: 2,
        ..NeighbourConfig::default()
    };
    let mut emu = Emulator::new(now, config);
    for host in 1..=3u8 {
        emu.handle_packet(
            now,
            &udp_packet(OUR_IP, Ipv4Addr::new(198, 18, 1, host), b"x"),
        );
    }
    assert_eq!(emu.counters().neighbour_cache_full_dropped, 1);
    assert_eq!(emu.counters().arp_requests_sent, 2);
}

proptest! {
    #[test]
    fn arbitrary_frames_never_panic(
        frames in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..400), 1..8),
        steer in any::<[bool; 8]>(),
    ) {
        let now = Instant::now();
        let mut dhcp = dhcp_emulator(now, 3);
        let mut fixed = static_emulator(now);
        for (i, mut frame) in frames.into_iter().enumerate() {
            // Some frames are steered at our MAC with an interesting type so the parsers
            // behind the Ethernet header see arbitrary bytes.
            if steer[i % 8] && frame.len() >= 14 {
                frame[..6].copy_from_slice(&OUR_MAC.0);
                let kinds = [[0x08, 0x00], [0x86, 0xdd], [0x08, 0x06]];
                frame[12..14].copy_from_slice(&kinds[i % 3]);
            }
            dhcp.handle_frame(now, &frame);
            fixed.handle_frame(now, &frame);
            dhcp.handle_packet(now, &frame);
            fixed.handle_packet(now, frame.get(14..).unwrap_or(&[]));
        }
        dhcp.handle_timeout(now + Duration::from_secs(5));
        fixed.handle_timeout(now + Duration::from_secs(5));
        prop_assert!(dhcp.counters().frames_in >= 1);
    }

    #[test]
    fn arbitrary_dhcp_replies_never_panic(body in proptest::collection::vec(any::<u8>(), 0..600)) {
        let now = Instant::now();
        let mut emu = dhcp_emulator(now, 3);
        let (_, _, _, discover) = one_dhcp(&mut emu);
        let mut payload = body;
        // Keep op and xid right so decoding goes past the header check more often.
        if payload.len() >= 8 {
            payload[0] = 2;
            payload[4..8].copy_from_slice(&discover.xid().to_be_bytes());
        }
        let mut frame = Vec::new();
        PacketBuilder::ethernet2(ROUTER_MAC.0, Mac::BROADCAST.0)
            .ipv4(SERVER_IP.octets(), Ipv4Addr::BROADCAST.octets(), 64)
            .udp(67, 68)
            .write(&mut frame, &payload)
            .unwrap();
        emu.handle_frame(now, &frame);
        prop_assert_eq!(emu.counters().dhcp_in, 1);
    }
}

/// A router advertisement from `router` (link-local) with lifetime `lifetime` s, its
/// link-layer address and an on-link prefix 2001:db8:1::/64.
fn ra_frame(router: Ipv6Addr, lifetime: u16) -> Vec<u8> {
    let mut payload = vec![0u8; 8]; // reachable time, retrans timer
    payload.extend_from_slice(&[1, 1]);
    payload.extend_from_slice(&ROUTER_MAC.0);
    let mut prefix = vec![3, 4, 64, 0xc0];
    prefix.extend_from_slice(&3600u32.to_be_bytes());
    prefix.extend_from_slice(&1800u32.to_be_bytes());
    prefix.extend_from_slice(&[0; 4]);
    prefix.extend_from_slice(&"2001:db8:1::".parse::<Ipv6Addr>().unwrap().octets());
    payload.extend_from_slice(&prefix);
    let all_nodes: Ipv6Addr = "ff02::1".parse().unwrap();
    let mut out = Vec::new();
    PacketBuilder::ethernet2(ROUTER_MAC.0, [0x33, 0x33, 0, 0, 0, 1])
        .ipv6(router.octets(), all_nodes.octets(), 255)
        .icmpv6(Icmpv6Type::RouterAdvertisement(
            etherparse::icmpv6::RouterAdvertisementHeader {
                cur_hop_limit: 64,
                managed_address_config: false,
                other_config: false,
                router_lifetime: lifetime,
            },
        ))
        .write(&mut out, &payload)
        .unwrap();
    out
}

#[test]
fn ipv6_off_link_goes_to_the_advertised_router() {
    let now = Instant::now();
    let mut emu = static_emulator(now);
    let ours: Ipv6Addr = "2001:db8:1::10".parse().unwrap();
    emu.add_ipv6(ours);
    let router = link_local(ROUTER_MAC);
    emu.handle_frame(now, &ra_frame(router, 1800));
    assert_eq!(emu.counters().router_advertisements, 1);
    assert_eq!(
        drain_packets(&mut emu).len(),
        1,
        "the RA reaches the adapter"
    );
    // The RA's source link-layer address filled the cache, so off-link traffic leaves at once.
    let remote = udp6_packet(ours, "2001:db8:99::1".parse().unwrap());
    emu.handle_packet(now, &remote);
    let frames = drain_frames(&mut emu);
    assert_eq!(frames.len(), 1);
    assert_eq!(eth(&frames[0]), (ROUTER_MAC, OUR_MAC, 0x86dd));
    assert_eq!(&frames[0][14..], &remote[..]);
    // A destination in the advertised on-link prefix is resolved directly.
    let neighbour: Ipv6Addr = "2001:db8:1::20".parse().unwrap();
    emu.handle_packet(now, &udp6_packet(ours, neighbour));
    let frames = drain_frames(&mut emu);
    assert_eq!(eth(&frames[0]).0, solicited(neighbour).1);
    // A router lifetime of zero withdraws the router.
    emu.handle_frame(now, &ra_frame(router, 0));
    let far: Ipv6Addr = "2001:db8:77::1".parse().unwrap();
    emu.handle_packet(now, &udp6_packet(ours, far));
    let frames = drain_frames(&mut emu);
    assert_eq!(eth(&frames[0]).0, solicited(far).1);
}
