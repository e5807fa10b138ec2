//! The relay switch, specified by example: one room with a gateway `G` (LAN hosts behind it) and
//! two clients `A` and `B`.

use std::time::{Duration, Instant};

use bytes::BytesMut;
use etherparse::PacketBuilder;
use lanparty_datapath::Mac;
use lanparty_datapath::budget::Budget;
use lanparty_datapath::frag::{Fragmenter, Reassembler, ReassemblyConfig, Split};
use lanparty_datapath::switch::{
    AddPeerError, DropReason, GroupBudget, PeerId, Role, Room, RoomConfig, Verdict,
};
use lanparty_datapath::wire::overlay::{self, Header};

const G: PeerId = PeerId(1);
const A: PeerId = PeerId(2);
const B: PeerId = PeerId(3);
const STRANGER: PeerId = PeerId(99);

const MAC_A: Mac = Mac([0x02, 0, 0, 0, 0, 0x0a]);
const MAC_B: Mac = Mac([0x02, 0, 0, 0, 0, 0x0b]);
/// Hosts on the party LAN, behind the gateway.
const LAN_1: Mac = Mac([0x00, 0x1b, 0x21, 0, 0, 0x01]);
const LAN_2: Mac = Mac([0x00, 0x1b, 0x21, 0, 0, 0x02]);
const NOBODY: Mac = Mac([0x00, 0x1b, 0x21, 0, 0, 0xee]);
const MDNS: Mac = Mac([0x01, 0x00, 0x5e, 0x00, 0x00, 0xfb]);
/// IEEE 802 local experimental EtherType: neither IP nor filtered, like a game's own protocol.
const EXPERIMENTAL: u16 = 0x88b5;
const STP: Mac = Mac([0x01, 0x80, 0xc2, 0x00, 0x00, 0x00]);

struct Lab {
    room: Room,
    now: Instant,
    out: Vec<PeerId>,
}

impl Lab {
    fn new() -> Self {
        Self::with_config(RoomConfig::default())
    }

    fn with_config(config: RoomConfig) -> Self {
        let mut room = Room::new(config);
        room.add_peer(G, Role::Gateway).unwrap();
        room.add_peer(A, Role::Client { mac: MAC_A }).unwrap();
        room.add_peer(B, Role::Client { mac: MAC_B }).unwrap();
        Self {
            room,
            now: Instant::now(),
            out: Vec::new(),
        }
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
    }

    /// Sends a raw overlay datagram; returns the verdict and the egress peers, sorted.
    fn datagram(&mut self, from: PeerId, datagram: &[u8]) -> (Verdict, Vec<PeerId>) {
        let verdict = self
            .room
            .handle_datagram(self.now, from, datagram, &mut self.out);
        let mut out = self.out.clone();
        out.sort();
        (verdict, out)
    }

    /// Sends an Ethernet frame as a whole-frame datagram.
    fn send(&mut self, from: PeerId, frame: &[u8]) -> (Verdict, Vec<PeerId>) {
        self.datagram(from, &overlay::encode_whole(frame))
    }

    /// The LAN host `mac` broadcasts through the gateway (and so gets learned).
    fn announce(&mut self, mac: Mac) {
        let frame = eth(Mac::BROADCAST, mac, EXPERIMENTAL);
        assert_eq!(self.send(G, &frame).0, Verdict::Forward);
    }

    fn drops(&self, reason: DropReason) -> u64 {
        self.room.stats().drops.get(reason)
    }
}

fn forward(peers: &[PeerId]) -> (Verdict, Vec<PeerId>) {
    (Verdict::Forward, peers.to_vec())
}

fn dropped(reason: DropReason) -> (Verdict, Vec<PeerId>) {
    (Verdict::Drop(reason), Vec::new())
}

/// An Ethernet II frame with a 46-byte zero payload.
fn eth(dst: Mac, src: Mac, ethertype: u16) -> Vec<u8> {
    let mut frame = Vec::with_capacity(60);
    frame.extend_from_slice(&dst.0);
    frame.extend_from_slice(&src.0);
    frame.extend_from_slice(&ethertype.to_be_bytes());
    frame.resize(60, 0);
    frame
}

fn udp4(dst: Mac, src: Mac, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let builder = PacketBuilder::ethernet2(src.0, dst.0)
        .ipv4([198, 18, 0, 1], [255, 255, 255, 255], 64)
        .udp(sport, dport);
    let mut frame = Vec::with_capacity(builder.size(payload.len()));
    builder.write(&mut frame, payload).unwrap();
    frame
}

fn udp6(dst: Mac, src: Mac, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let builder = PacketBuilder::ethernet2(src.0, dst.0)
        .ipv6(fd00(1), fd00(2), 64)
        .udp(sport, dport);
    let mut frame = Vec::with_capacity(builder.size(payload.len()));
    builder.write(&mut frame, payload).unwrap();
    frame
}

fn icmp6(dst: Mac, src: Mac, icmp_type: u8) -> Vec<u8> {
    let builder = PacketBuilder::ethernet2(src.0, dst.0)
        .ipv6(fd00(1), fd00(2), 255)
        .icmpv6_raw(icmp_type, 0, [0; 4]);
    let mut frame = Vec::with_capacity(builder.size(16));
    builder.write(&mut frame, &[0; 16]).unwrap();
    frame
}

fn fd00(host: u8) -> [u8; 16] {
    let mut addr = [0u8; 16];
    addr[0] = 0xfd;
    addr[15] = host;
    addr
}

/// A BOOTP/DHCP message body: `op`, then zeros (enough for the filters).
fn bootp(op: u8) -> Vec<u8> {
    let mut body = vec![0u8; 240];
    body[0] = op;
    body[1] = 1; // htype Ethernet
    body[2] = 6; // hlen
    body
}

/// Splits `frame` into `count` overlay fragments of frame `id` sent by `from` (fragment 0
/// first).
fn fragments(from: PeerId, frame: &[u8], id: u16, count: u8) -> Vec<Vec<u8>> {
    let chunk = frame.len().div_ceil(usize::from(count));
    frame
        .chunks(chunk)
        .enumerate()
        .map(|(index, bytes)| fragment(from, id, index as u8, count, frame.len() as u16, bytes))
        .collect()
}

/// One overlay fragment as `from` sends it: with `from`'s origin.
fn fragment(
    from: PeerId,
    frame_id: u16,
    index: u8,
    count: u8,
    total_len: u16,
    bytes: &[u8],
) -> Vec<u8> {
    let header = Header::Fragment {
        origin: overlay::origin_of(from.0),
        frame_id,
        index,
        count,
        total_len,
    };
    let mut datagram = vec![0u8; header.len()];
    header.emit(&mut datagram);
    datagram.extend_from_slice(bytes);
    datagram
}

// ---------------------------------------------------------------------------------------------
// Switching

#[test]
fn unicast_reaches_only_its_peer() {
    let mut lab = Lab::new();
    let frame = eth(MAC_B, MAC_A, EXPERIMENTAL);
    assert_eq!(lab.send(A, &frame), forward(&[B]));
    let a = lab.room.peer_stats(A).unwrap();
    let b = lab.room.peer_stats(B).unwrap();
    let g = lab.room.peer_stats(G).unwrap();
    assert_eq!((a.datagrams_in, a.frames_in, a.bytes_in), (1, 1, 61));
    assert_eq!((b.datagrams_out, b.bytes_out), (1, 61));
    assert_eq!(g.datagrams_out, 0);
    assert_eq!(lab.room.stats().floods, 0);
}

#[test]
fn broadcast_reaches_all_but_sender() {
    let mut lab = Lab::new();
    assert_eq!(
        lab.send(A, &eth(Mac::BROADCAST, MAC_A, 0x0806)),
        forward(&[G, B])
    );
    assert_eq!(
        lab.send(G, &eth(MDNS, LAN_1, EXPERIMENTAL)),
        forward(&[A, B])
    );
    assert_eq!(lab.room.stats().floods, 2);
    assert_eq!(lab.room.stats().unknown_unicast_floods, 0);
}

#[test]
fn unknown_unicast_floods() {
    let mut lab = Lab::new();
    assert_eq!(
        lab.send(A, &eth(NOBODY, MAC_A, EXPERIMENTAL)),
        forward(&[G, B])
    );
    assert_eq!(lab.room.stats().unknown_unicast_floods, 1);
}

#[test]
fn lan_macs_are_learned_from_the_gateway() {
    let mut lab = Lab::new();
    // Before the LAN host spoke, a frame to it floods.
    assert_eq!(
        lab.send(A, &eth(LAN_1, MAC_A, EXPERIMENTAL)),
        forward(&[G, B])
    );
    assert_eq!(lab.send(G, &eth(MAC_A, LAN_1, EXPERIMENTAL)), forward(&[A]));
    assert_eq!(lab.room.mac_owner(LAN_1), Some(G));
    assert_eq!(lab.room.learned_macs(), 1);
    assert_eq!(lab.room.mac_table_len(), 3);
    assert_eq!(lab.send(A, &eth(LAN_1, MAC_A, EXPERIMENTAL)), forward(&[G]));
    assert_eq!(lab.send(B, &eth(LAN_1, MAC_B, EXPERIMENTAL)), forward(&[G]));
}

#[test]
fn group_source_macs_are_not_learned() {
    let mut lab = Lab::new();
    assert_eq!(
        lab.send(G, &eth(Mac::BROADCAST, MDNS, EXPERIMENTAL)).0,
        Verdict::Forward
    );
    assert_eq!(
        lab.send(G, &eth(Mac::BROADCAST, Mac::ZERO, EXPERIMENTAL)).0,
        Verdict::Forward
    );
    assert_eq!(lab.room.learned_macs(), 0);
}

#[test]
fn frame_to_a_mac_behind_its_own_ingress_is_not_sent_back() {
    let mut lab = Lab::new();
    lab.announce(LAN_1);
    assert_eq!(
        lab.send(G, &eth(LAN_1, LAN_2, EXPERIMENTAL)),
        dropped(DropReason::LocalDestination)
    );
}

#[test]
fn a_lone_peer_floods_to_nobody() {
    let mut room = Room::new(RoomConfig::default());
    room.add_peer(A, Role::Client { mac: MAC_A }).unwrap();
    let mut out = vec![STRANGER];
    let verdict = room.handle_datagram(
        Instant::now(),
        A,
        &overlay::encode_whole(&eth(Mac::BROADCAST, MAC_A, 0x0806)),
        &mut out,
    );
    assert_eq!(verdict, Verdict::Forward);
    assert!(out.is_empty());
}

#[test]
fn learned_lan_macs_age_out() {
    let mut lab = Lab::new();
    let start = lab.now;
    assert_eq!(lab.room.poll_timeout(), None);
    lab.announce(LAN_1);
    lab.announce(LAN_2);
    let deadline = lab.room.poll_timeout().expect("ageing is scheduled");
    assert!(deadline <= start + Duration::from_secs(300));

    // LAN_2 keeps talking; LAN_1 goes quiet.
    lab.advance(Duration::from_secs(200));
    lab.announce(LAN_2);
    lab.advance(Duration::from_secs(99));
    assert_eq!(lab.send(A, &eth(LAN_1, MAC_A, EXPERIMENTAL)), forward(&[G]));

    lab.advance(Duration::from_secs(2));
    // Stale at once, even before the sweep.
    assert_eq!(
        lab.send(A, &eth(LAN_1, MAC_A, EXPERIMENTAL)),
        forward(&[G, B])
    );
    assert!(lab.room.poll_timeout().unwrap() <= lab.now);
    lab.room.handle_timeout(lab.now);
    assert_eq!(lab.room.mac_owner(LAN_1), None);
    assert_eq!(lab.room.mac_owner(LAN_2), Some(G));
    assert_eq!(lab.room.learned_macs(), 1);
    assert_eq!(lab.room.stats().macs_aged_out, 1);
    assert_eq!(lab.send(A, &eth(LAN_2, MAC_A, EXPERIMENTAL)), forward(&[G]));

    // The next sweep is when LAN_2 expires.
    let next = lab.room.poll_timeout().unwrap();
    assert!(next > lab.now && next <= start + Duration::from_secs(500));
    lab.now = next;
    lab.room.handle_timeout(lab.now);
    assert_eq!(lab.room.learned_macs(), 0);
    assert_eq!(lab.room.poll_timeout(), None);
    // Client MACs never age.
    assert_eq!(lab.room.mac_owner(MAC_A), Some(A));
}

#[test]
fn mac_table_cap() {
    let mut lab = Lab::with_config(RoomConfig {
        max_learned_macs: 4,
        ..RoomConfig::default()
    });
    for host in 1..=6u8 {
        let src = Mac([0x00, 0x1b, 0x21, 0, 1, host]);
        assert_eq!(
            lab.send(G, &eth(Mac::BROADCAST, src, EXPERIMENTAL)).0,
            Verdict::Forward
        );
    }
    assert_eq!(lab.room.learned_macs(), 4);
    assert_eq!(lab.room.mac_table_len(), 4 + 2);
    assert_eq!(lab.room.stats().macs_learned, 4);
    assert_eq!(lab.room.stats().macs_refused, 2);
    // A host that was not learned is still reachable: frames to it flood.
    let unlearned = Mac([0x00, 0x1b, 0x21, 0, 1, 6]);
    assert_eq!(
        lab.send(A, &eth(unlearned, MAC_A, EXPERIMENTAL)),
        forward(&[G, B])
    );

    // Once the learned MACs age out there is room again.
    lab.advance(Duration::from_secs(301));
    lab.room.handle_timeout(lab.now);
    assert_eq!(lab.room.learned_macs(), 0);
    lab.announce(unlearned);
    assert_eq!(
        lab.send(A, &eth(unlearned, MAC_A, EXPERIMENTAL)),
        forward(&[G])
    );
}

#[test]
fn peer_leaving_removes_its_macs() {
    let mut lab = Lab::new();
    lab.announce(LAN_1);
    assert_eq!(lab.room.mac_owner(LAN_1), Some(G));

    // B leaves: frames to its MAC become unknown unicast and never reach B.
    let stats = lab.room.remove_peer(B).expect("B was in the room");
    assert_eq!(stats.datagrams_out, 1);
    assert_eq!(lab.room.mac_owner(MAC_B), None);
    assert_eq!(lab.send(A, &eth(MAC_B, MAC_A, EXPERIMENTAL)), forward(&[G]));
    assert_eq!(
        lab.send(B, &eth(MAC_A, MAC_B, EXPERIMENTAL)),
        dropped(DropReason::UnknownIngress)
    );

    // The gateway leaves: the LAN MACs learned behind it go with it.
    lab.room.remove_peer(G);
    assert_eq!(lab.room.mac_owner(LAN_1), None);
    assert_eq!(lab.room.learned_macs(), 0);
    assert_eq!(lab.room.mac_table_len(), 1);
    assert_eq!(lab.room.poll_timeout(), None);
    assert_eq!(lab.send(A, &eth(LAN_1, MAC_A, EXPERIMENTAL)), forward(&[]));
    assert_eq!(lab.room.remove_peer(G), None);

    // A new gateway can join and B can come back with its MAC.
    lab.room.add_peer(PeerId(7), Role::Gateway).unwrap();
    lab.room.add_peer(B, Role::Client { mac: MAC_B }).unwrap();
    assert_eq!(lab.send(A, &eth(MAC_B, MAC_A, EXPERIMENTAL)), forward(&[B]));
}

#[test]
fn peer_leaving_drops_its_pending_fragment_decisions() {
    let mut lab = Lab::new();
    let frame = eth(MAC_A, MAC_B, EXPERIMENTAL);
    let frags = fragments(B, &frame, 9, 2);
    assert_eq!(lab.datagram(B, &frags[0]), forward(&[A]));
    // Another frame, fragment 0 from A towards B.
    let other = fragments(A, &eth(MAC_B, MAC_A, EXPERIMENTAL), 3, 2);
    assert_eq!(lab.datagram(A, &other[0]), forward(&[B]));
    assert_eq!(lab.room.pending_fragment_decisions(), 2);

    lab.room.remove_peer(B);
    assert_eq!(lab.room.pending_fragment_decisions(), 0);
    // A's fragment 1 no longer has anywhere to go.
    assert_eq!(
        lab.datagram(A, &other[1]),
        dropped(DropReason::OrphanFragment)
    );
}

#[test]
fn admission_rules() {
    let mut lab = Lab::new();
    assert_eq!(
        lab.room.add_peer(A, Role::Client { mac: LAN_1 }),
        Err(AddPeerError::AlreadyPresent(A))
    );
    assert_eq!(
        lab.room.add_peer(PeerId(4), Role::Client { mac: MAC_A }),
        Err(AddPeerError::MacInUse {
            mac: MAC_A,
            owner: A
        })
    );
    assert_eq!(
        lab.room.add_peer(PeerId(4), Role::Gateway),
        Err(AddPeerError::GatewayPresent(G))
    );
    assert!(matches!(
        lab.room.add_peer(PeerId(4), Role::Client { mac: MDNS }),
        Err(AddPeerError::InvalidMac(_))
    ));
    assert!(matches!(
        lab.room
            .add_peer(PeerId(4), Role::Client { mac: Mac::ZERO }),
        Err(AddPeerError::InvalidMac(_))
    ));
    assert_eq!(lab.room.peer_count(), 3);
    assert_eq!(lab.room.gateway(), Some(G));
    assert_eq!(lab.room.role(A), Some(Role::Client { mac: MAC_A }));
    let mut clients: Vec<_> = lab.room.client_macs().collect();
    clients.sort();
    assert_eq!(clients, vec![(A, MAC_A), (B, MAC_B)]);
}

#[test]
fn a_client_mac_replaces_a_learned_lan_mac() {
    let mut lab = Lab::new();
    lab.announce(LAN_1);
    lab.room
        .add_peer(PeerId(4), Role::Client { mac: LAN_1 })
        .unwrap();
    assert_eq!(lab.room.mac_owner(LAN_1), Some(PeerId(4)));
    assert_eq!(lab.room.learned_macs(), 0);
    assert_eq!(
        lab.send(A, &eth(LAN_1, MAC_A, EXPERIMENTAL)),
        forward(&[PeerId(4)])
    );
}

// ---------------------------------------------------------------------------------------------
// Safety filters

#[test]
fn unknown_ingress_is_dropped() {
    let mut lab = Lab::new();
    assert_eq!(
        lab.send(STRANGER, &eth(Mac::BROADCAST, LAN_1, EXPERIMENTAL)),
        dropped(DropReason::UnknownIngress)
    );
    assert_eq!(lab.drops(DropReason::UnknownIngress), 1);
}

#[test]
fn malformed_datagrams_are_dropped_and_counted() {
    let mut lab = Lab::new();
    assert_eq!(lab.datagram(A, &[]), dropped(DropReason::MalformedOverlay));
    assert_eq!(
        lab.datagram(A, &[0x20, 1, 2]),
        dropped(DropReason::MalformedOverlay)
    );
    assert_eq!(
        lab.datagram(A, &[0x10]),
        dropped(DropReason::MalformedOverlay)
    );
    assert_eq!(
        lab.datagram(A, &[0x10, 0xff, 0xff, 0xff]),
        dropped(DropReason::MalformedEthernet)
    );
    let tagged_but_short = [&[0x10][..], &eth(MAC_B, MAC_A, 0x8100)[..15]].concat();
    assert_eq!(
        lab.datagram(A, &tagged_but_short),
        dropped(DropReason::MalformedEthernet)
    );
    let a = lab.room.peer_stats(A).unwrap();
    assert_eq!(a.drops.get(DropReason::MalformedOverlay), 3);
    assert_eq!(a.drops.get(DropReason::MalformedEthernet), 2);
    assert_eq!(a.datagrams_in, 5);
    assert_eq!(lab.room.stats().drops.total(), 5);
}

#[test]
fn spoofed_source_mac_is_dropped() {
    let mut lab = Lab::new();
    assert_eq!(
        lab.send(A, &eth(Mac::BROADCAST, MAC_B, EXPERIMENTAL)),
        dropped(DropReason::SpoofedSource)
    );
    assert_eq!(
        lab.send(A, &eth(MAC_B, LAN_1, EXPERIMENTAL)),
        dropped(DropReason::SpoofedSource)
    );
    assert_eq!(
        lab.room
            .peer_stats(A)
            .unwrap()
            .drops
            .get(DropReason::SpoofedSource),
        2
    );
    // A spoofed frame teaches the switch nothing.
    assert_eq!(lab.room.mac_owner(LAN_1), None);
}

#[test]
fn spoof_filter_can_be_turned_off() {
    let mut lab = Lab::with_config(RoomConfig {
        drop_spoofed_source: false,
        ..RoomConfig::default()
    });
    assert_eq!(lab.send(A, &eth(MAC_B, LAN_1, EXPERIMENTAL)), forward(&[B]));
}

#[test]
fn rogue_dhcp_offer_from_client_is_dropped() {
    let mut lab = Lab::new();
    let offer = udp4(Mac::BROADCAST, MAC_A, 67, 68, &bootp(2));
    assert_eq!(
        lab.send(A, &offer),
        dropped(DropReason::Dhcpv4ServerFromClient)
    );
    // A BOOTREPLY to the client port from an odd source port is still a server message.
    let odd = udp4(Mac::BROADCAST, MAC_A, 4000, 68, &bootp(2));
    assert_eq!(
        lab.send(A, &odd),
        dropped(DropReason::Dhcpv4ServerFromClient)
    );
    // Anything from the server port, whatever its destination.
    let any = udp4(MAC_B, MAC_A, 67, 9999, b"hello");
    assert_eq!(
        lab.send(A, &any),
        dropped(DropReason::Dhcpv4ServerFromClient)
    );
    assert_eq!(lab.drops(DropReason::Dhcpv4ServerFromClient), 3);
}

#[test]
fn dhcp_discover_from_client_passes() {
    let mut lab = Lab::new();
    let discover = udp4(Mac::BROADCAST, MAC_A, 68, 67, &bootp(1));
    assert_eq!(lab.send(A, &discover), forward(&[G, B]));
}

#[test]
fn dhcp_offer_from_gateway_passes() {
    let mut lab = Lab::new();
    let offer = udp4(MAC_A, LAN_1, 67, 68, &bootp(2));
    assert_eq!(lab.send(G, &offer), forward(&[A]));
}

#[test]
fn vlan_tagged_rogue_dhcp_offer_is_dropped() {
    let mut lab = Lab::new();
    let builder = PacketBuilder::ethernet2(MAC_A.0, Mac::BROADCAST.0)
        .single_vlan(etherparse::VlanId::try_new(100).unwrap())
        .ipv4([198, 18, 0, 1], [255, 255, 255, 255], 64)
        .udp(67, 68);
    let mut frame = Vec::new();
    builder.write(&mut frame, &bootp(2)).unwrap();
    assert_eq!(
        lab.send(A, &frame),
        dropped(DropReason::Dhcpv4ServerFromClient)
    );
}

#[test]
fn rogue_dhcpv6_messages_from_client_are_dropped() {
    let mut lab = Lab::new();
    let all_dhcp = Mac([0x33, 0x33, 0, 1, 0, 2]);
    // From the server port.
    let reply = udp6(MAC_B, MAC_A, 547, 546, &[7, 0, 0, 1]);
    assert_eq!(
        lab.send(A, &reply),
        dropped(DropReason::Dhcpv6ServerFromClient)
    );
    // ADVERTISE, REPLY, RECONFIGURE, RELAY-REPL by message type.
    for msg_type in [2u8, 7, 10, 13] {
        let frame = udp6(MAC_B, MAC_A, 40000, 546, &[msg_type, 0, 0, 1]);
        assert_eq!(
            lab.send(A, &frame),
            dropped(DropReason::Dhcpv6ServerFromClient),
            "msg-type {msg_type}"
        );
    }
    // SOLICIT (1) and REQUEST (3) from the client port are what clients send.
    let solicit = udp6(all_dhcp, MAC_A, 546, 547, &[1, 0, 0, 1]);
    assert_eq!(lab.send(A, &solicit), forward(&[G, B]));
    let request = udp6(all_dhcp, MAC_A, 546, 547, &[3, 0, 0, 1]);
    assert_eq!(lab.send(A, &request), forward(&[G, B]));
}

#[test]
fn router_advertisement_from_client_is_dropped() {
    let mut lab = Lab::new();
    let all_nodes = Mac([0x33, 0x33, 0, 0, 0, 1]);
    assert_eq!(
        lab.send(A, &icmp6(all_nodes, MAC_A, 134)),
        dropped(DropReason::RouterAdvertisementFromClient)
    );
    assert_eq!(
        lab.send(A, &icmp6(MAC_B, MAC_A, 137)),
        dropped(DropReason::RedirectFromClient)
    );
    // Router and neighbour solicitations are ordinary client traffic.
    assert_eq!(lab.send(A, &icmp6(all_nodes, MAC_A, 133)), forward(&[G, B]));
    assert_eq!(lab.send(A, &icmp6(all_nodes, MAC_A, 135)), forward(&[G, B]));
}

#[test]
fn router_advertisement_from_gateway_passes() {
    let mut lab = Lab::new();
    let all_nodes = Mac([0x33, 0x33, 0, 0, 0, 1]);
    assert_eq!(lab.send(G, &icmp6(all_nodes, LAN_1, 134)), forward(&[A, B]));
}

#[test]
fn bpdu_is_dropped() {
    let mut lab = Lab::new();
    // An 802.3 frame with LLC 42 42 03: a spanning-tree BPDU.
    let mut bpdu = eth(STP, MAC_A, 0x0026);
    bpdu[14..17].copy_from_slice(&[0x42, 0x42, 0x03]);
    assert_eq!(lab.send(A, &bpdu), dropped(DropReason::LinkLocalControl));
    bpdu[6..12].copy_from_slice(&LAN_1.0);
    assert_eq!(lab.send(G, &bpdu), dropped(DropReason::LinkLocalControl));
    // LLDP and pause frames too; 01:80:c2:00:00:10 is outside the reserved range.
    let lldp = eth(Mac([0x01, 0x80, 0xc2, 0, 0, 0x0e]), LAN_1, 0x88cc);
    assert_eq!(lab.send(G, &lldp), dropped(DropReason::LinkLocalControl));
    let not_reserved = eth(Mac([0x01, 0x80, 0xc2, 0, 0, 0x10]), LAN_1, 0x88cc);
    assert_eq!(lab.send(G, &not_reserved), forward(&[A, B]));
    assert_eq!(lab.drops(DropReason::LinkLocalControl), 3);
}

#[test]
fn ipx_frame_passes() {
    let mut lab = Lab::new();
    // An IPX packet whose bytes would read as DHCP ports if misparsed as IPv4.
    let mut ipx = eth(Mac::BROADCAST, MAC_A, 0x8137);
    ipx[14..18].copy_from_slice(&[0xff, 0xff, 0x00, 0x43]);
    assert_eq!(lab.send(A, &ipx), forward(&[G, B]));
    let mut ipx_to_b = eth(MAC_B, MAC_A, 0x8137);
    ipx_to_b[14..16].copy_from_slice(&[0xff, 0xff]);
    assert_eq!(lab.send(A, &ipx_to_b), forward(&[B]));
}

#[test]
fn ieee_802_3_frame_passes() {
    let mut lab = Lab::new();
    // 802.3 raw IPX (Novell's 0xffff checksum in place of LLC).
    let mut raw = eth(Mac::BROADCAST, MAC_A, 46);
    raw[14..16].copy_from_slice(&[0xff, 0xff]);
    assert_eq!(lab.send(A, &raw), forward(&[G, B]));
    // 802.2 LLC (DSAP/SSAP 0xe0) and LLC/SNAP carrying IPX.
    let mut llc = eth(Mac::BROADCAST, MAC_A, 46);
    llc[14..17].copy_from_slice(&[0xe0, 0xe0, 0x03]);
    assert_eq!(lab.send(A, &llc), forward(&[G, B]));
    let mut snap = eth(MAC_B, MAC_A, 46);
    snap[14..22].copy_from_slice(&[0xaa, 0xaa, 0x03, 0, 0, 0, 0x81, 0x37]);
    assert_eq!(lab.send(A, &snap), forward(&[B]));
    // A NetBIOS-over-LLC frame from the LAN as well.
    let mut netbios = eth(Mac::BROADCAST, LAN_1, 46);
    netbios[14..17].copy_from_slice(&[0xf0, 0xf0, 0x03]);
    assert_eq!(lab.send(G, &netbios), forward(&[A, B]));
}

#[test]
fn loop_guard_drops_client_mac_from_gateway() {
    let mut lab = Lab::new();
    assert_eq!(
        lab.send(G, &eth(Mac::BROADCAST, MAC_A, EXPERIMENTAL)),
        dropped(DropReason::LoopGuard)
    );
    assert_eq!(
        lab.send(G, &eth(MAC_B, MAC_A, EXPERIMENTAL)),
        dropped(DropReason::LoopGuard)
    );
    assert_eq!(lab.room.mac_owner(MAC_A), Some(A));
    assert_eq!(
        lab.room
            .peer_stats(G)
            .unwrap()
            .drops
            .get(DropReason::LoopGuard),
        2
    );
}

#[test]
fn oversize_frame_dropped() {
    let mut lab = Lab::new();
    let mut frame = eth(MAC_B, MAC_A, 0x8137);
    frame.resize(1522, 0);
    assert_eq!(lab.send(A, &frame), forward(&[B]));
    frame.push(0);
    assert_eq!(lab.send(A, &frame), dropped(DropReason::Oversize));
    // A fragment announcing a frame larger than the room allows, whatever its own size.
    let small = eth(MAC_B, MAC_A, 0x8137);
    assert_eq!(
        lab.datagram(A, &fragment(A, 1, 0, 2, 1600, &small)),
        dropped(DropReason::Oversize)
    );
    assert_eq!(
        lab.datagram(A, &fragment(A, 1, 1, 2, 1600, &[0; 8])),
        dropped(DropReason::Oversize)
    );
    assert_eq!(lab.drops(DropReason::Oversize), 3);
}

#[test]
fn oversize_limit_is_configurable() {
    let mut lab = Lab::with_config(RoomConfig {
        max_frame_len: 9018,
        ..RoomConfig::default()
    });
    let mut jumbo = eth(MAC_B, MAC_A, 0x8137);
    jumbo.resize(9000, 0);
    assert_eq!(lab.send(A, &jumbo), forward(&[B]));
}

// ---------------------------------------------------------------------------------------------
// Fragments

#[test]
fn fragments_follow_fragment_zero() {
    let mut lab = Lab::new();
    // Unicast, in three fragments.
    let mut big = eth(MAC_B, MAC_A, 0x8137);
    big.resize(1500, 0);
    let frags = fragments(A, &big, 41, 3);
    for frag in &frags {
        assert_eq!(lab.datagram(A, frag), forward(&[B]));
    }
    let b = lab.room.peer_stats(B).unwrap();
    assert_eq!(b.datagrams_out, 3);
    assert_eq!(lab.room.peer_stats(A).unwrap().frames_in, 1);
    assert_eq!(lab.room.pending_fragment_decisions(), 0);

    // A flood; the same frame id from another peer is another frame.
    let mut bcast = eth(Mac::BROADCAST, LAN_1, 0x8137);
    bcast.resize(1500, 0);
    let lan_frags = fragments(G, &bcast, 41, 2);
    let mut unicast_again = fragments(A, &big, 41, 2);
    assert_eq!(lab.datagram(G, &lan_frags[0]), forward(&[A, B]));
    assert_eq!(lab.datagram(A, &unicast_again[0]), forward(&[B]));
    assert_eq!(lab.datagram(G, &lan_frags[1]), forward(&[A, B]));
    assert_eq!(
        lab.datagram(A, &unicast_again.pop().unwrap()),
        forward(&[B])
    );

    // A dropped fragment 0 drops the rest under the same reason.
    let mut spoofed = eth(MAC_B, LAN_2, 0x8137);
    spoofed.resize(1400, 0);
    let frags = fragments(A, &spoofed, 42, 2);
    assert_eq!(
        lab.datagram(A, &frags[0]),
        dropped(DropReason::SpoofedSource)
    );
    assert_eq!(
        lab.datagram(A, &frags[1]),
        dropped(DropReason::SpoofedSource)
    );
    assert_eq!(lab.drops(DropReason::SpoofedSource), 2);
}

#[test]
fn orphan_fragment_is_dropped() {
    let mut lab = Lab::new();
    let mut big = eth(MAC_B, MAC_A, 0x8137);
    big.resize(1500, 0);
    // No fragment 0 at all.
    let frags = fragments(A, &big, 7, 2);
    assert_eq!(
        lab.datagram(A, &frags[1]),
        dropped(DropReason::OrphanFragment)
    );
    // Fragment 0 came too long ago.
    assert_eq!(lab.datagram(A, &frags[0]), forward(&[B]));
    lab.advance(Duration::from_secs(3));
    assert_eq!(
        lab.datagram(A, &frags[1]),
        dropped(DropReason::OrphanFragment)
    );
    // A fragment whose numbering disagrees with fragment 0's.
    let frags = fragments(A, &big, 8, 3);
    assert_eq!(lab.datagram(A, &frags[0]), forward(&[B]));
    let liar = fragment(A, 8, 1, 2, 1500, &big[500..]);
    assert_eq!(lab.datagram(A, &liar), dropped(DropReason::OrphanFragment));
    // Every fragment of a frame has passed: a duplicate is an orphan.
    let frags = fragments(A, &big, 9, 2);
    assert_eq!(lab.datagram(A, &frags[0]), forward(&[B]));
    assert_eq!(lab.datagram(A, &frags[1]), forward(&[B]));
    assert_eq!(
        lab.datagram(A, &frags[1]),
        dropped(DropReason::OrphanFragment)
    );
    assert_eq!(lab.drops(DropReason::OrphanFragment), 4);
}

#[test]
fn fragment_with_foreign_origin_is_dropped() {
    let mut lab = Lab::new();
    let mut big = eth(MAC_B, MAC_A, 0x8137);
    big.resize(1500, 0);
    let mut as_b = fragments(B, &big, 11, 2);
    // Fragment 0 claiming to come from B, sent by A.
    assert_eq!(
        lab.datagram(A, &as_b[0]),
        dropped(DropReason::SpoofedOrigin)
    );
    assert_eq!(lab.room.pending_fragment_decisions(), 0);

    // A later fragment is checked too: A cannot slip a fragment into the gateway's frame
    // (same frame id, the gateway's origin), even while that frame's decision is live.
    let mut bcast = eth(Mac::BROADCAST, LAN_1, 0x8137);
    bcast.resize(1500, 0);
    let lan = fragments(G, &bcast, 11, 2);
    assert_eq!(lab.datagram(G, &lan[0]), forward(&[A, B]));
    assert_eq!(
        lab.datagram(A, &as_b.pop().unwrap()),
        dropped(DropReason::SpoofedOrigin)
    );
    let forged = fragment(G, 11, 1, 2, 1500, &[0xee; 750]);
    assert_eq!(lab.datagram(A, &forged), dropped(DropReason::SpoofedOrigin));
    assert_eq!(lab.datagram(G, &lan[1]), forward(&[A, B]));

    // A's own origin, and whole frames (which carry none), pass.
    for frag in fragments(A, &big, 11, 2) {
        assert_eq!(lab.datagram(A, &frag), forward(&[B]));
    }
    assert_eq!(lab.send(A, &eth(MAC_B, MAC_A, EXPERIMENTAL)), forward(&[B]));
    assert_eq!(lab.drops(DropReason::SpoofedOrigin), 3);
    assert_eq!(
        lab.room
            .peer_stats(A)
            .unwrap()
            .drops
            .get(DropReason::SpoofedOrigin),
        3
    );
    assert_eq!(DropReason::SpoofedOrigin.name(), "spoofed_origin");
}

#[test]
fn origin_is_the_low_16_bits_of_the_peer_id() {
    let mut lab = Lab::new();
    let far = PeerId(0x5_0004);
    let far_mac = Mac([0x02, 0, 0, 0, 0, 0x0c]);
    lab.room
        .add_peer(far, Role::Client { mac: far_mac })
        .unwrap();
    let mut big = eth(MAC_B, far_mac, 0x8137);
    big.resize(1500, 0);
    let frags = fragments(far, &big, 3, 2);
    assert_eq!(&frags[0][1..3], &[0x00, 0x04]);
    for frag in &frags {
        assert_eq!(lab.datagram(far, frag), forward(&[B]));
    }
    // PeerId(4) would have the same origin, but it is not the sender.
    assert_eq!(
        lab.datagram(far, &fragment(PeerId(5), 4, 0, 2, 1500, &big[..750])),
        dropped(DropReason::SpoofedOrigin)
    );
}

#[test]
fn interleaved_fragments_of_two_senders_reassemble() {
    // A and the gateway both send B a fragmented frame with frame id 0x2a00 at the same time.
    // The relay switches fragment by fragment, so B's one relay connection carries them
    // interleaved; B's reassembler tells them apart by origin.
    let mut lab = Lab::new();
    let budget = Budget::new(600).unwrap();
    let mut from_a = eth(MAC_B, MAC_A, EXPERIMENTAL);
    from_a.truncate(14);
    from_a.extend((0..1486).map(|i| i as u8));
    let mut from_lan = eth(MAC_B, LAN_1, EXPERIMENTAL);
    from_lan.truncate(14);
    from_lan.extend((0..1486).map(|i| !(i as u8)));
    let split = |origin: PeerId, frame: &[u8]| {
        let mut f = Fragmenter::with_first_id(overlay::origin_of(origin.0), 0x2a00);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let sent = f.fragment(frame, budget, &mut buf, |d| out.push(d));
        assert_eq!(
            sent,
            Ok(Split::Fragments {
                frame_id: 0x2a00,
                count: 3
            })
        );
        out
    };
    let a = split(A, &from_a);
    let g = split(G, &from_lan);

    let mut at_b = Reassembler::new(ReassemblyConfig::default());
    let relay = 0u8; // B's one connection, to the relay
    let mut done = Vec::new();
    for (da, dg) in a.iter().zip(&g) {
        for (from, d) in [(A, da), (G, dg)] {
            assert_eq!(lab.datagram(from, d), forward(&[B]));
            done.extend(at_b.handle_fragment(lab.now, relay, d.clone()));
        }
    }
    assert_eq!(done.len(), 2, "both frames complete");
    assert_eq!(&done[0][..], &from_a[..]);
    assert_eq!(&done[1][..], &from_lan[..]);
    let counters = at_b.counters();
    assert_eq!((counters.malformed, counters.duplicates), (0, 0));
    assert_eq!(at_b.partial_frames(), 0);
}

#[test]
fn fragment_decisions_are_bounded() {
    let mut lab = Lab::with_config(RoomConfig {
        fragment_decisions: 4,
        ..RoomConfig::default()
    });
    let mut big = eth(MAC_B, MAC_A, 0x8137);
    big.resize(1500, 0);
    let frames: Vec<_> = (0..6u16).map(|id| fragments(A, &big, id, 2)).collect();
    for frags in &frames {
        assert_eq!(lab.datagram(A, &frags[0]), forward(&[B]));
    }
    assert_eq!(lab.room.pending_fragment_decisions(), 4);
    assert_eq!(lab.room.stats().fragment_decisions_evicted, 2);
    // The two oldest were evicted, the newest four still follow.
    assert_eq!(
        lab.datagram(A, &frames[0][1]),
        dropped(DropReason::OrphanFragment)
    );
    assert_eq!(
        lab.datagram(A, &frames[1][1]),
        dropped(DropReason::OrphanFragment)
    );
    for frags in &frames[2..] {
        assert_eq!(lab.datagram(A, &frags[1]), forward(&[B]));
    }
}

#[test]
fn rogue_dhcp_split_across_fragments_is_dropped() {
    let mut lab = Lab::new();
    let offer = udp4(Mac::BROADCAST, MAC_A, 67, 68, &bootp(2));
    // Fragment 0 ends right after the IPv4 header: the UDP ports ride in fragment 1.
    let split = 14 + 20;
    let total = offer.len() as u16;
    let frag0 = fragment(A, 5, 0, 2, total, &offer[..split]);
    let frag1 = fragment(A, 5, 1, 2, total, &offer[split..]);
    assert_eq!(
        lab.datagram(A, &frag0),
        dropped(DropReason::TruncatedHeaders)
    );
    assert_eq!(
        lab.datagram(A, &frag1),
        dropped(DropReason::TruncatedHeaders)
    );
    // Split after the UDP header and BOOTP op, the filter sees enough and says why.
    let frag0 = fragment(A, 6, 0, 2, total, &offer[..14 + 20 + 9]);
    assert_eq!(
        lab.datagram(A, &frag0),
        dropped(DropReason::Dhcpv4ServerFromClient)
    );
    // From the gateway the same split passes: the client filters do not apply.
    let mut from_lan = udp4(Mac::BROADCAST, LAN_1, 67, 68, &bootp(2));
    from_lan.truncate(offer.len());
    let frag0 = fragment(G, 5, 0, 2, total, &from_lan[..split]);
    assert_eq!(lab.datagram(G, &frag0), forward(&[A, B]));
}

// ---------------------------------------------------------------------------------------------
// Broadcast/multicast budget

/// One mDNS query or announcement from `src`.
fn mdns(src: Mac) -> Vec<u8> {
    udp4(MDNS, src, 5353, 5353, &[0; 40])
}

#[test]
fn broadcast_budget_allows_mdns_chatter_and_stops_a_storm() {
    let mut lab = Lab::new();
    let ssdp = Mac([0x01, 0x00, 0x5e, 0x7f, 0xff, 0xfa]);

    // A Windows PC joins: 300 group frames (MLD, mDNS probes and announcements, LLMNR,
    // NetBIOS, SSDP NOTIFY bursts) within one second...
    for i in 0..300 {
        let frame = if i % 3 == 0 {
            udp4(ssdp, MAC_A, 50000, 1900, &[0; 100])
        } else {
            mdns(MAC_A)
        };
        assert_eq!(
            lab.send(A, &frame).0,
            Verdict::Forward,
            "join burst frame {i}"
        );
        lab.advance(Duration::from_micros(3_300));
    }
    // ...then a minute of busy steady chatter with a game's server browser: 50 frames/s.
    for i in 0..3000 {
        let frame = if i % 5 == 0 {
            udp4(Mac::BROADCAST, MAC_A, 27015, 27015, &[0; 30])
        } else {
            mdns(MAC_A)
        };
        assert_eq!(lab.send(A, &frame).0, Verdict::Forward, "steady frame {i}");
        lab.advance(Duration::from_millis(20));
    }
    assert_eq!(lab.drops(DropReason::GroupBudget), 0);

    // A broadcast storm: 20 000 frames in one second.
    let mut passed = 0;
    for _ in 0..20_000 {
        if lab.send(A, &eth(Mac::BROADCAST, MAC_A, 0x0806)).0 == Verdict::Forward {
            passed += 1;
        }
        lab.advance(Duration::from_micros(50));
    }
    // At most the burst plus one second's refill gets through.
    assert!(
        (500..=701).contains(&passed),
        "{passed} storm frames passed"
    );
    assert_eq!(lab.drops(DropReason::GroupBudget), 20_000 - passed);
    // Unicast is not budgeted, and B's budget is its own.
    assert_eq!(
        lab.send(A, &eth(MAC_B, MAC_A, EXPERIMENTAL)).0,
        Verdict::Forward
    );
    assert_eq!(lab.send(B, &mdns(MAC_B)).0, Verdict::Forward);

    // After a quiet spell the bucket is full again.
    lab.advance(Duration::from_secs(3));
    for _ in 0..500 {
        assert_eq!(lab.send(A, &mdns(MAC_A)).0, Verdict::Forward);
    }
    assert_eq!(lab.send(A, &mdns(MAC_A)), dropped(DropReason::GroupBudget));
}

#[test]
fn group_budget_is_configurable_and_can_be_off() {
    let mut lab = Lab::with_config(RoomConfig {
        client_group_budget: Some(GroupBudget {
            frames_per_second: 10,
            burst: 2,
        }),
        gateway_group_budget: None,
        ..RoomConfig::default()
    });
    assert_eq!(lab.send(A, &mdns(MAC_A)).0, Verdict::Forward);
    assert_eq!(lab.send(A, &mdns(MAC_A)).0, Verdict::Forward);
    assert_eq!(lab.send(A, &mdns(MAC_A)), dropped(DropReason::GroupBudget));
    lab.advance(Duration::from_millis(100));
    assert_eq!(lab.send(A, &mdns(MAC_A)).0, Verdict::Forward);
    assert_eq!(lab.send(A, &mdns(MAC_A)), dropped(DropReason::GroupBudget));
    // The gateway is unlimited in this room.
    for _ in 0..10_000 {
        assert_eq!(lab.send(G, &mdns(LAN_1)).0, Verdict::Forward);
    }
}

// ---------------------------------------------------------------------------------------------
// Counters and steady state

#[test]
fn drops_are_counted_per_peer_and_per_room() {
    let mut lab = Lab::new();
    assert!(matches!(
        lab.send(A, &eth(Mac::BROADCAST, MAC_B, EXPERIMENTAL)).0,
        Verdict::Drop(_)
    ));
    assert!(matches!(
        lab.send(B, &eth(STP, MAC_B, 0x0026)).0,
        Verdict::Drop(_)
    ));
    assert!(matches!(
        lab.send(G, &eth(MAC_A, MAC_B, EXPERIMENTAL)).0,
        Verdict::Drop(_)
    ));
    assert!(matches!(
        lab.send(STRANGER, &eth(MAC_A, MAC_B, EXPERIMENTAL)).0,
        Verdict::Drop(_)
    ));
    let room = lab.room.stats().drops;
    assert_eq!(room.total(), 4);
    assert_eq!(room.get(DropReason::SpoofedSource), 1);
    assert_eq!(room.get(DropReason::LinkLocalControl), 1);
    assert_eq!(room.get(DropReason::LoopGuard), 1);
    assert_eq!(room.get(DropReason::UnknownIngress), 1);
    for peer in [A, B, G] {
        assert_eq!(
            lab.room.peer_stats(peer).unwrap().drops.total(),
            1,
            "{peer}"
        );
    }
    let names: Vec<_> = room
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(r, _)| r.name())
        .collect();
    assert_eq!(
        names,
        [
            "unknown_ingress",
            "spoofed_source",
            "link_local_control",
            "loop_guard"
        ]
    );
}

#[test]
fn drop_reason_names_are_unique_snake_case() {
    let mut names: Vec<_> = DropReason::ALL.iter().map(|r| r.name()).collect();
    assert!(names.iter().all(|n| {
        n.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    }));
    names.sort();
    names.dedup();
    assert_eq!(names.len(), DropReason::COUNT);
    assert_eq!(DropReason::GroupBudget.to_string(), "group_budget");
}

#[test]
fn steady_state_reuses_the_out_vector() {
    let mut lab = Lab::new();
    let bcast = overlay::encode_whole(&eth(Mac::BROADCAST, LAN_1, 0x8137));
    let mut out = Vec::with_capacity(8);
    let ptr = out.as_ptr();
    for _ in 0..1000 {
        assert_eq!(
            lab.room.handle_datagram(lab.now, G, &bcast, &mut out),
            Verdict::Forward
        );
        assert_eq!(out.len(), 2);
    }
    assert_eq!(out.as_ptr(), ptr);
}

#[test]
fn impossible_ip_header_from_client_is_dropped() {
    let mut lab = Lab::new();
    // EtherType IPv4 with a zeroed header (version 0).
    let bogus = eth(MAC_B, MAC_A, 0x0800);
    assert_eq!(lab.send(A, &bogus), dropped(DropReason::MalformedIp));
    // IPv4 header length 16 bytes.
    let mut short_ihl = udp4(MAC_B, MAC_A, 40000, 53, b"q");
    short_ihl[14] = 0x44;
    assert_eq!(lab.send(A, &short_ihl), dropped(DropReason::MalformedIp));
    // The gateway's LAN traffic is not parsed, so the same bytes pass from there.
    let mut from_lan = eth(MAC_B, LAN_1, 0x0800);
    from_lan[14] = 0;
    assert_eq!(lab.send(G, &from_lan), forward(&[B]));
}

#[test]
fn ordinary_ip_traffic_from_clients_passes() {
    let mut lab = Lab::new();
    let builder = PacketBuilder::ethernet2(MAC_A.0, MAC_B.0)
        .ipv4([198, 18, 0, 1], [198, 18, 0, 2], 64)
        .tcp(40000, 80, 1, 65535);
    let mut tcp = Vec::new();
    builder.write(&mut tcp, b"GET / HTTP/1.0\r\n\r\n").unwrap();
    assert_eq!(lab.send(A, &tcp), forward(&[B]));
    let dns = udp6(MAC_B, MAC_A, 40000, 53, b"query");
    assert_eq!(lab.send(A, &dns), forward(&[B]));
    let game = udp4(Mac::BROADCAST, MAC_A, 27015, 27015, b"server browser ping");
    assert_eq!(lab.send(A, &game), forward(&[G, B]));
}

#[test]
fn extreme_configuration_is_clamped_not_fatal() {
    let mut lab = Lab::with_config(RoomConfig {
        max_learned_macs: usize::MAX,
        expected_peers: usize::MAX,
        fragment_decisions: usize::MAX,
        mac_age: Duration::MAX,
        fragment_decision_ttl: Duration::MAX,
        client_group_budget: Some(GroupBudget {
            frames_per_second: 0,
            burst: u32::MAX,
        }),
        ..RoomConfig::default()
    });
    lab.announce(LAN_1);
    assert!(lab.room.poll_timeout().is_some());
    let frags = fragments(A, &eth(MAC_B, MAC_A, EXPERIMENTAL), 1, 2);
    assert_eq!(lab.datagram(A, &frags[0]), forward(&[B]));
    assert_eq!(lab.datagram(A, &frags[1]), forward(&[B]));
    assert_eq!(
        lab.send(A, &eth(Mac::BROADCAST, MAC_A, EXPERIMENTAL)).0,
        Verdict::Forward
    );
    assert_eq!(lab.room.config().fragment_decisions, 1 << 16);
}

#[test]
fn a_zero_burst_blocks_every_group_frame() {
    let mut lab = Lab::with_config(RoomConfig {
        client_group_budget: Some(GroupBudget {
            frames_per_second: 1000,
            burst: 0,
        }),
        ..RoomConfig::default()
    });
    assert_eq!(
        lab.send(A, &eth(Mac::BROADCAST, MAC_A, EXPERIMENTAL)),
        dropped(DropReason::GroupBudget)
    );
    assert_eq!(lab.send(A, &eth(MAC_B, MAC_A, EXPERIMENTAL)), forward(&[B]));
}
