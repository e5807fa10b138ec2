//! The gateway binary bridging a LAN in a network namespace into a room, end to end: real
//! AF_PACKET rings, a real Linux bridge, QUIC on loopback. See `common` for the set-up.
//!
//! These tests need root (namespaces, AF_PACKET); without it they print a skip line and pass.

mod common;

use std::time::{Duration, Instant};

use common::*;
use lanparty_control::msg::Role;
use lanparty_control::uplink::UplinkEvent;
use lanparty_datapath::Mac;
use lanparty_datapath::sys::netns::{Netns, Veth, require_root};

const WAIT: Duration = Duration::from_secs(5);

#[test]
fn lan_frames_to_a_client_mac_reach_the_client_whole_and_fragmented() {
    if !require_root("lan_frames_to_a_client_mac_reach_the_client_whole_and_fragmented") {
        return;
    }
    let mut party = Party::start("gwuni");
    let mut h1 = party.lan.host("lph1");
    let small = frame(CLIENT, H1, 0x88b5, &payload(b"to-client", 46));
    let full = frame(CLIENT, H1, 0x88b5, &payload(b"full-size", 1500));
    assert_eq!(full.len(), 1514);
    h1.send(&small).unwrap();
    h1.send(&full).unwrap();
    party
        .player
        .pump_until("both frames at the player", WAIT, |p| {
            p.received(&small) && p.received(&full)
        });
    // No room budget exceeds 1452 bytes, so the 1514-byte frame crossed as fragments that
    // the relay switched and the player reassembled.
}

#[test]
fn a_lan_broadcast_reaches_the_client() {
    if !require_root("a_lan_broadcast_reaches_the_client") {
        return;
    }
    let mut party = Party::start("gwbcast");
    let mut h2 = party.lan.host("lph2");
    let bcast = frame(Mac::BROADCAST, H2, 0x0806, &payload(b"who-has", 46));
    h2.send(&bcast).unwrap();
    party
        .player
        .pump_until("the broadcast at the player", WAIT, |p| p.received(&bcast));
}

#[test]
fn unicast_between_lan_hosts_never_reaches_the_relay() {
    if !require_root("unicast_between_lan_hosts_never_reaches_the_relay") {
        return;
    }
    let mut party = Party::start("gwlocal");
    let mut h1 = party.lan.host("lph1");
    let mut h2 = party.lan.host("lph2");
    const N: usize = 20;
    let frames: Vec<Vec<u8>> = (0..N)
        .map(|i| frame(H2, H1, 0x88b5, &payload(&[b'L', i as u8], 60)))
        .collect();
    // First a frame the bridge has not learned H2 for: it floods to the gateway's port too.
    for f in &frames {
        h1.send(f).unwrap();
    }
    let got = host_collect(&mut h2, Duration::from_millis(500), |f| {
        f.len() == 74 && f[14] == b'L'
    });
    assert_eq!(got.len(), N, "the LAN itself delivers every frame");
    party.player.pump_for(Duration::from_millis(300));
    assert!(
        !party
            .player
            .frames
            .iter()
            .any(|f| f.len() == 74 && f[14] == b'L'),
        "a LAN-to-LAN frame reached the player"
    );
    // The gateway's own counters say it saw them and kept them on the LAN.
    let status = party.gateway.terminate(Duration::from_secs(2));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    let counters = party
        .gateway
        .last_counters()
        .expect("a counters line at exit");
    let drops = counters["drops"].as_str().unwrap();
    let local: u64 = drops
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix("lan_local_unicast="))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    // The bridge floods until it has learned H2 (H2 never sent), so all N reach the gateway.
    assert!(local >= N as u64, "{counters}");
}

#[test]
fn client_frames_reach_the_lan_byte_for_byte() {
    if !require_root("client_frames_reach_the_lan_byte_for_byte") {
        return;
    }
    let mut party = Party::start("gwtolan");
    let mut h1 = party.lan.host("lph1");
    let small = frame(H1, CLIENT, 0x88b5, &payload(b"small", 46));
    let full = frame(H1, CLIENT, 0x88b5, &payload(b"full-size", 1500));
    // IPX (Ethernet II, 0x8137), as DOS-era games send it: to the broadcast address.
    let ipx = frame(
        Mac::BROADCAST,
        CLIENT,
        0x8137,
        &[
            &[0xff, 0xff, 0x00, 0x1e, 0x00, 0x04][..],
            &payload(b"ipx", 24),
        ]
        .concat(),
    );
    // IEEE 802.3 with a length field and an 802.2 LLC header (IPX over 802.2: DSAP/SSAP 0xe0).
    let llc_body = [&[0xe0, 0xe0, 0x03][..], &payload(b"llc", 43)].concat();
    let raw8023 = frame(H1, CLIENT, llc_body.len() as u16, &llc_body);
    assert!(
        raw8023[12..14] < [0x06, 0x00][..],
        "a length, not an ethertype"
    );
    for f in [&small, &full, &ipx, &raw8023] {
        party.player.send(f);
        party.player.pump_for(Duration::from_millis(20));
    }
    let seen = host_receives_all(&mut h1, &[&small, &full, &ipx, &raw8023], WAIT);
    assert_eq!(
        seen, [true; 4],
        "small, 1514-byte, IPX and 802.3 frames must reach the LAN host unchanged"
    );
}

#[test]
fn the_gateway_bridges_again_after_the_relay_restarts() {
    if !require_root("the_gateway_bridges_again_after_the_relay_restarts") {
        return;
    }
    let Party {
        mut gateway,
        mut player,
        relay,
        lan,
    } = Party::start("gwrestrt");
    let addr = relay.addr;
    // Killed: no goodbye, the socket just goes away. Both peers notice by the idle timeout.
    drop(relay);
    let mark = gateway.mark();
    player.pump_until("the player notices", Duration::from_secs(15), |p| {
        !p.uplink.is_joined()
    });
    gateway.wait_for_after(mark, "the gateway notices", Duration::from_secs(15), |m| {
        m.contains("retrying in")
    });
    let relay = Relay::start(&lan, addr.port());
    player.pump_until("the player rejoins", Duration::from_secs(15), |p| {
        p.uplink.is_joined()
    });
    gateway.wait_for_after(mark, "the gateway rejoins", Duration::from_secs(30), |m| {
        m.starts_with("connected, 1 client ")
    });
    let mut h1 = lan.host("lph1");
    let bcast = frame(Mac::BROADCAST, H1, 0x8137, &payload(b"after-restart", 46));
    let down = frame(H1, CLIENT, 0x8137, &payload(b"down-again", 46));
    // The gateway may learn of the player a moment after the player's welcome; repeat.
    let deadline = Instant::now() + WAIT;
    while !player.received(&bcast) {
        assert!(Instant::now() < deadline, "no LAN frame after the restart");
        h1.send(&bcast).unwrap();
        player.pump_for(Duration::from_millis(100));
    }
    player.send(&down);
    assert!(
        host_receives(&mut h1, &down, WAIT),
        "no room frame after the restart"
    );
    drop((gateway, player, relay));
}

#[test]
fn sigterm_says_goodbye_and_exits_promptly() {
    if !require_root("sigterm_says_goodbye_and_exits_promptly") {
        return;
    }
    let mut party = Party::start("gwterm");
    let started = Instant::now();
    let status = party.gateway.terminate(Duration::from_secs(2));
    assert!(
        status.is_some_and(|s| s.success()),
        "gateway did not exit cleanly within 2 s: {status:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    // The relay learns at once, well inside its 30 s idle timeout, and tells the player.
    let is_gateway_leaving = |e: &UplinkEvent| matches!(e, UplinkEvent::PeerLeft(p) if p.mac == GW);
    party
        .player
        .pump_until("the gateway leaves the room", Duration::from_secs(1), |p| {
            p.events.iter().any(is_gateway_leaving)
        });
    // It had joined as the room's gateway, with its NIC's MAC and its name.
    let welcome = party.player.events.iter().find_map(|e| match e {
        UplinkEvent::Joined(w) => Some(w),
        _ => None,
    });
    let gw = welcome
        .and_then(|w| w.peers.iter().find(|p| p.mac == GW))
        .expect("the player's welcome lists the gateway");
    assert_eq!(gw.role, Role::Gateway);
    assert_eq!(gw.name.as_str(), "lan gateway");
}

#[test]
fn a_client_that_leaves_is_forgotten_and_its_mac_stays_on_the_lan() {
    if !require_root("a_client_that_leaves_is_forgotten_and_its_mac_stays_on_the_lan") {
        return;
    }
    let Party {
        mut gateway,
        mut player,
        relay,
        lan,
    } = Party::start("gwleave");
    let mark = gateway.mark();
    player.uplink.close(Instant::now(), "bye");
    player.uplink.transmit(Instant::now()).unwrap();
    gateway.wait_for_after(mark, "the gateway forgets the player", WAIT, |m| {
        m.starts_with("connected, 0 clients")
    });
    let mut h1 = lan.host("lph1");
    const N: u64 = 5;
    for i in 0..N {
        let f = frame(CLIENT, H1, 0x88b5, &payload(&[b'G', i as u8], 46));
        h1.send(&f).unwrap();
    }
    std::thread::sleep(Duration::from_millis(200));
    let status = gateway.terminate(Duration::from_secs(2));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    let counters = gateway.last_counters().expect("a counters line at exit");
    let drops = counters["drops"].as_str().unwrap();
    let local: u64 = drops
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix("lan_local_unicast="))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(local >= N, "{counters}");
    drop(relay);
}

#[test]
fn a_relay_that_refuses_the_gateway_ends_it_with_the_reason() {
    if !require_root("a_relay_that_refuses_the_gateway_ends_it_with_the_reason") {
        return;
    }
    let lan = Lan::new("gwtoken");
    let relay = Relay::start_with(&lan, 0, &["--gateway-token", "operator-only-token"]);
    let mut gateway = Gateway::start(&lan, relay.addr, relay.pin);
    let status = gateway.wait_exit(Duration::from_secs(10));
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(2),
        "{}",
        gateway.lines().join("\n")
    );
    assert!(
        gateway
            .messages()
            .iter()
            .any(|m| m.starts_with("rejected: not allowed by the relay operator")),
        "{}",
        gateway.lines().join("\n")
    );
}

#[test]
fn without_cap_net_raw_the_error_says_how_to_grant_it() {
    // Root without CAP_NET_RAW in its bounding set: what an unprivileged user sees too.
    let Ok(out) = std::process::Command::new("setpriv")
        .args(["--bounding-set", "-net_raw", "--inh-caps", "-net_raw", "--"])
        .arg(gateway_exe())
        .args([
            "--relay",
            "198.18.0.1:4433",
            "--room",
            ROOM,
            "--interface",
            "lo",
        ])
        .env("LANPARTY_SECRET", SECRET)
        .output()
    else {
        eprintln!("without_cap_net_raw_the_error_says_how_to_grant_it: skipped: no setpriv");
        return;
    };
    let err = String::from_utf8(out.stderr).unwrap();
    if err.contains("setpriv:") {
        eprintln!("without_cap_net_raw_the_error_says_how_to_grant_it: skipped: {err}");
        return;
    }
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("needs CAP_NET_RAW") && err.contains("setcap cap_net_raw+ep"),
        "{err}"
    );
}

#[test]
fn gro_on_the_nic_is_a_warning_and_the_gateway_still_bridges() {
    if !require_root("gro_on_the_nic_is_a_warning_and_the_gateway_still_bridges") {
        return;
    }
    let lan = Lan::new("gwgro");
    let ethtool = lan.ns.exec(&["ethtool", "-K", "lpgw0", "gro", "on"]);
    if !ethtool.as_ref().is_ok_and(|o| o.status.success()) {
        eprintln!(
            "gro_on_the_nic_is_a_warning_and_the_gateway_still_bridges: skipped: cannot turn \
             GRO on with ethtool: {ethtool:?}"
        );
        return;
    }
    let relay = Relay::start(&lan, 0);
    let mut gateway = Gateway::start(&lan, relay.addr, relay.pin);
    gateway.wait_for("the gateway joins", WAIT, |m| {
        m.starts_with("connected, 0 clients")
    });
    let warned = gateway
        .messages()
        .iter()
        .any(|m| m.starts_with("GRO is on for lpgw0") && m.contains("ethtool -K lpgw0 gro off"));
    assert!(warned, "{}", gateway.lines().join("\n"));
}

#[test]
fn a_missing_interface_is_a_one_line_error() {
    // No root needed: the interface is looked up before any socket is opened.
    let out = run_gateway(
        None,
        &[
            "--relay",
            "198.18.0.1:4433",
            "--room",
            ROOM,
            "--interface",
            "lpgw-missing0",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("no such network interface: lpgw-missing0") && err.contains("ip link"),
        "{err}"
    );
}

#[test]
fn an_interface_that_is_down_is_a_one_line_error() {
    if !require_root("an_interface_that_is_down_is_a_one_line_error") {
        return;
    }
    let ns = Netns::create("gwifdown").unwrap();
    let _veth = Veth::create(Some(&ns), "lpdown0", Some(&ns), "lpdown1").unwrap();
    let out = run_gateway(
        Some(&ns),
        &[
            "--relay",
            "127.0.0.1:4433",
            "--room",
            ROOM,
            "--interface",
            "lpdown0",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("ip link set lpdown0 up"), "{err}");
}

/// Whether `frame` is IPv4 UDP to `port` (or a TCP SYN to `port`) whose checksum is the one
/// etherparse computes for it; `None` when it is not such a frame.
fn l4_checksum_valid(frame: &[u8], port: u16) -> Option<bool> {
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};
    let p = SlicedPacket::from_ethernet(frame).ok()?;
    let Some(NetSlice::Ipv4(ip)) = p.net.as_ref() else {
        return None;
    };
    let (src, dst) = (ip.header().source(), ip.header().destination());
    match p.transport.as_ref()? {
        TransportSlice::Udp(u) if u.destination_port() == port => {
            let h = u.to_header();
            Some(h.checksum == h.calc_checksum_ipv4_raw(src, dst, u.payload()).ok()?)
        }
        TransportSlice::Tcp(t) if t.destination_port() == port && t.syn() => {
            let h = t.to_header();
            Some(h.checksum == h.calc_checksum_ipv4_raw(src, dst, t.payload()).ok()?)
        }
        _ => None,
    }
}

#[test]
fn udp_and_tcp_from_a_host_with_checksum_offload_reach_the_client_with_valid_checksums() {
    if !require_root(
        "udp_and_tcp_from_a_host_with_checksum_offload_reach_the_client_with_valid_checksums",
    ) {
        return;
    }
    let mut party = Party::start("gwcsum");
    let ns = &party.lan.ns;
    // lph1 is a veth with tx checksum offload on (the default): its kernel sockets leave the
    // TCP/UDP checksum to "hardware", and the gateway's ring sees the frames unfinished.
    let offload = ns.exec(&["ethtool", "-k", "lph1"]).expect("ethtool -k");
    let offload = String::from_utf8_lossy(&offload.stdout).into_owned();
    assert!(
        offload.contains("tx-checksum-ip-generic: on") || offload.is_empty(),
        "veth checksum offload expected on: {offload}"
    );
    ns.ip(&["addr", "add", "198.18.0.11/24", "dev", "lph1"])
        .unwrap();
    // The player's MAC stands for a remote address, so the gateway forwards to it.
    ns.ip(&[
        "neigh",
        "replace",
        "198.18.0.50",
        "lladdr",
        &CLIENT.to_string(),
        "dev",
        "lph1",
    ])
    .unwrap();
    const UDP_PORT: u16 = 27015;
    const TCP_PORT: u16 = 27016;
    ns.run_in(|| {
        let udp = std::net::UdpSocket::bind("198.18.0.11:0").unwrap();
        for len in [1, 20, 333, 1400] {
            udp.send_to(
                &payload(b"csum", len.max(4))[..len],
                ("198.18.0.50", UDP_PORT),
            )
            .unwrap();
        }
        // Nobody answers: the SYN leaves and the connect times out.
        let _ = std::net::TcpStream::connect_timeout(
            &"198.18.0.50:27016".parse().unwrap(),
            Duration::from_millis(200),
        );
    })
    .unwrap();
    party
        .player
        .pump_until("the UDP datagrams and the SYN at the player", WAIT, |p| {
            let udp = p
                .frames
                .iter()
                .filter(|f| l4_checksum_valid(f, UDP_PORT).is_some())
                .count();
            let tcp = p
                .frames
                .iter()
                .any(|f| l4_checksum_valid(f, TCP_PORT).is_some());
            udp == 4 && tcp
        });
    for f in &party.player.frames {
        for port in [UDP_PORT, TCP_PORT] {
            if let Some(valid) = l4_checksum_valid(f, port) {
                assert!(valid, "bad L4 checksum in {:02x?}", &f[..]);
            }
        }
    }
}

/// An IPv4 TCP segment of a bulk flow from the player (198.18.0.50:40000) to H1
/// (198.18.0.11:5201), ACK set, checksums valid.
fn tcp_segment(seq: u32, data: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    etherparse::PacketBuilder::ethernet2(CLIENT.0, H1.0)
        .ipv4([198, 18, 0, 50], [198, 18, 0, 11], 64)
        .tcp(40000, 5201, seq, 64240)
        .ack(1)
        .write(&mut f, data)
        .unwrap();
    f
}

#[test]
fn in_order_tcp_segments_reach_the_lan_as_super_frames_in_order() {
    if !require_root("in_order_tcp_segments_reach_the_lan_as_super_frames_in_order") {
        return;
    }
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};
    let mut party = Party::start("gwgso");
    let mut h1 = party
        .lan
        .ns
        .run_in(|| {
            let config = lanparty_datapath::sys::afpacket::SocketConfig {
                snaplen: 65536 + 64,
                batch: 16,
                ..Default::default()
            };
            lanparty_datapath::sys::afpacket::PacketSocket::open("lph1", &config)
        })
        .unwrap()
        .unwrap();
    // Two runs of 12 segments of one flow with a UDP datagram between them, sent at once: the
    // gateway merges each run and must keep the datagram between the two.
    const SEGMENT: usize = 1000;
    let data = payload(b"bulk", 24 * SEGMENT);
    let seq0 = 7_000_000u32;
    let mut udp_frame = Vec::new();
    etherparse::PacketBuilder::ethernet2(CLIENT.0, H1.0)
        .ipv4([198, 18, 0, 50], [198, 18, 0, 11], 64)
        .udp(40001, 27015)
        .write(&mut udp_frame, b"between the runs")
        .unwrap();
    for (i, chunk) in data.chunks(SEGMENT).enumerate() {
        if i == 12 {
            party.player.send(&udp_frame);
        }
        party
            .player
            .send(&tcp_segment(seq0 + (i * SEGMENT) as u32, chunk));
    }
    party.player.pump_for(Duration::from_millis(20));

    // What H1 receives, in order: TCP payload by sequence number, where the UDP datagram came,
    // and the largest frame.
    let mut got = vec![0u8; data.len()];
    let mut covered = 0;
    let mut order = Vec::new();
    let mut largest = 0;
    let deadline = Instant::now() + WAIT;
    while covered < data.len() && Instant::now() < deadline {
        party.player.pump_for(Duration::from_millis(10));
        while h1.recv_batch().unwrap() > 0 {
            for f in h1.frames() {
                let Ok(p) = SlicedPacket::from_ethernet(f) else {
                    continue;
                };
                let Some(NetSlice::Ipv4(ip)) = p.net.as_ref() else {
                    continue;
                };
                if ip.header().source() != [198, 18, 0, 50] {
                    continue;
                }
                assert_eq!(
                    ip.header().header_checksum(),
                    ip.header().to_header().calc_header_checksum(),
                    "IPv4 header checksum"
                );
                match p.transport.as_ref() {
                    Some(TransportSlice::Tcp(t)) => {
                        let at = t.sequence_number().wrapping_sub(seq0) as usize;
                        got[at..at + t.payload().len()].copy_from_slice(t.payload());
                        covered += t.payload().len();
                        largest = largest.max(f.len());
                        order.push(at + t.payload().len());
                    }
                    Some(TransportSlice::Udp(_)) => order.push(usize::MAX),
                    _ => {}
                }
            }
        }
    }
    assert_eq!(covered, data.len(), "every byte once");
    assert!(got == data, "the bytes arrive unchanged");
    assert!(
        largest > 1514,
        "segments were merged into GSO super-frames (largest frame {largest} bytes)"
    );
    // The datagram left after everything of the first run and before anything of the second.
    let udp_at = order
        .iter()
        .position(|&o| o == usize::MAX)
        .expect("the UDP datagram");
    assert!(
        order[..udp_at].iter().all(|&end| end <= 12 * SEGMENT)
            && order[udp_at + 1..].iter().all(|&end| end > 12 * SEGMENT),
        "order of arrival (end offsets, MAX = UDP): {order:?}"
    );
}
