//! The Linux client end to end: a real TAP or TUN device in a namespace of its own, the client
//! loop, a scripted relay on loopback that bridges the room into a "party LAN" namespace, and
//! the real `dnsmasq` serving DHCP on that LAN. The LAN host 198.18.5.1 is the LAN namespace's
//! own kernel, so ARP and ping answers are real too.
//!
//! ```text
//! client ns: lpcl0 (TAP/TUN) <-fd-> ClientLoop <-QUIC/127.0.0.1-> FakeRelay <-fd-> lplan0 (TAP)
//!                                                                            LAN ns: 198.18.5.1,
//!                                                                            dnsmasq
//! ```
//!
//! These tests need root (namespaces, TUN/TAP) and dnsmasq; without them they print a skip line.
#![cfg(target_os = "linux")]

mod common;

use std::net::{IpAddr, Ipv4Addr, UdpSocket};
use std::time::{Duration, Instant};

use common::{Client, LAN_HOST, Party, RelayLog};
use lanparty_client::adapter::AdapterKind;
use lanparty_datapath::sys::netns;

/// Sends one UDP broadcast to 255.255.255.255 from the client's address.
fn broadcast_from_client(client: &Client, from: Ipv4Addr, payload: &'static [u8]) {
    client
        .ns
        .run_in(move || {
            let sock = UdpSocket::bind((from, 0)).expect("bind to the leased address");
            sock.set_broadcast(true).unwrap();
            sock.send_to(payload, (Ipv4Addr::BROADCAST, 9999)).unwrap();
        })
        .unwrap();
}

/// True once the relay saw a broadcast frame carrying `payload`.
fn relay_saw_broadcast(log: &RelayLog, payload: &[u8]) -> bool {
    log.frames_from_client()
        .iter()
        .any(|f| f[..6] == [0xff; 6] && f.windows(payload.len()).any(|w| w == payload))
}

/// Everything one adapter kind must do: DHCP address, ping across, broadcast out, frame in.
fn lan_works_through(kind: AdapterKind, test: &str) {
    let Some(party) = Party::start(test) else {
        return;
    };
    let client = party.client(kind, "02:00:5e:10:00:01");
    let addr = client.wait_for_lease(Duration::from_secs(20));
    assert!(
        (100..=150).contains(&addr.octets()[3]) && addr.octets()[..3] == [198, 18, 5],
        "{addr} is not from dnsmasq's range"
    );
    let shown = client
        .ns
        .ip(&["-4", "addr", "show", "dev", "lpcl0"])
        .unwrap();
    assert!(shown.contains(&format!("inet {addr}/24")), "{shown}");
    assert!(
        client.status_lines().iter().any(|l| l
            .contains("joined room party as MAC 02:00:5e:10:00:01 with 1 peer")
            && l.contains(&format!("got address {addr}/24 from the LAN's DHCP server"))),
        "{:?}",
        client.status_lines()
    );

    // A ping from the client namespace to the LAN host crosses the room both ways (ARP
    // included: the LAN kernel resolves the client and the client resolves the LAN host).
    netns::ping(&client.ns, IpAddr::V4(LAN_HOST), Duration::from_secs(5))
        .expect("the LAN host answers the client's ping");

    // IPv6 too: neighbour discovery both ways (on a TUN the emulator answers for the address
    // it saw the client's stack use).
    let lan_v6 = party.add_v6(&client);
    netns::ping(&client.ns, IpAddr::V6(lan_v6), Duration::from_secs(5))
        .expect("the LAN host answers the client's IPv6 ping");

    // A limited broadcast from the client reaches the relay side.
    broadcast_from_client(&client, addr, b"lanparty-broadcast");
    party
        .relay_log()
        .wait_until(Duration::from_secs(5), |l| {
            relay_saw_broadcast(l, b"lanparty-broadcast")
        })
        .expect("the broadcast reaches the relay");

    // A frame the relay side sends to the client's MAC reaches the adapter (and a socket).
    let socket = client
        .ns
        .run_in(|| UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 7777)).unwrap())
        .unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let frame = common::udp_frame(client.mac, addr, 7777, b"from-the-relay-side");
    party.inject(frame);
    let mut buf = [0u8; 64];
    let (n, from) = socket
        .recv_from(&mut buf)
        .expect("the injected frame arrives");
    assert_eq!(&buf[..n], b"from-the-relay-side");
    assert_eq!(from.ip(), IpAddr::V4(LAN_HOST));

    // Full-size 1500-byte IP packets cross both ways (fragmented over the room, whole on
    // both LANs).
    full_size_datagrams_cross(&party, &client, addr, &socket);
    client.stop_and_check_removed();
}

/// A 1472-byte UDP payload (a 1500-byte IPv4 packet) from the LAN host to the client and one
/// back.
fn full_size_datagrams_cross(party: &Party, client: &Client, addr: Ipv4Addr, socket: &UdpSocket) {
    let big: Vec<u8> = (0..1472u32).map(|i| (i % 251) as u8).collect();
    let lan_socket = party
        .lan()
        .run_in(|| UdpSocket::bind((LAN_HOST, 7778)).unwrap())
        .unwrap();
    lan_socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    lan_socket.send_to(&big, (addr, 7777)).unwrap();
    let mut buf = vec![0u8; 2048];
    let (n, _) = socket
        .recv_from(&mut buf)
        .expect("a full-size datagram arrives");
    assert_eq!(&buf[..n], &big[..]);
    let back = client
        .ns
        .run_in(|| UdpSocket::bind((addr, 0)).unwrap())
        .unwrap();
    back.send_to(&big, (LAN_HOST, 7778)).unwrap();
    let (n, from) = lan_socket
        .recv_from(&mut buf)
        .expect("a full-size datagram reaches the LAN");
    assert_eq!(&buf[..n], &big[..]);
    assert_eq!(from.ip(), IpAddr::V4(addr));
}

#[test]
fn client_tap_gets_a_dhcp_address_and_carries_ping_broadcast_and_injected_frames() {
    lan_works_through(
        AdapterKind::Tap,
        "client_tap_gets_a_dhcp_address_and_carries_ping_broadcast_and_injected_frames",
    );
}

#[test]
fn client_tun_does_the_same_through_the_emulator() {
    lan_works_through(
        AdapterKind::Tun,
        "client_tun_does_the_same_through_the_emulator",
    );
}

#[test]
fn client_tun_counts_non_ip_frames_and_points_at_tap() {
    let Some(party) = Party::start("client_tun_counts_non_ip_frames_and_points_at_tap") else {
        return;
    };
    let client = party.client(AdapterKind::Tun, "02:00:5e:10:00:03");
    client.wait_for_lease(Duration::from_secs(20));
    // An IPX frame to the client's MAC: an L3 adapter cannot carry it.
    let mut ipx = vec![0u8; 60];
    ipx[..6].copy_from_slice(&client.mac.0);
    ipx[6..12].copy_from_slice(&common::LAN_MAC.0);
    ipx[12..14].copy_from_slice(&[0x81, 0x37]);
    party.inject(ipx);
    client.wait_for_status(Duration::from_secs(5), |l| {
        l.contains("1 non-IP frames") && l.contains("--adapter tap carries them")
    });
    client.stop_and_check_removed();
}

#[test]
fn client_keeps_its_address_across_a_relay_restart() {
    let Some(mut party) = Party::start("client_keeps_its_address_across_a_relay_restart") else {
        return;
    };
    let client = party.client(AdapterKind::Tap, "02:00:5e:10:00:02");
    let addr = client.wait_for_lease(Duration::from_secs(20));
    netns::ping(&client.ns, IpAddr::V4(LAN_HOST), Duration::from_secs(5)).unwrap();

    let hellos_before = party.relay_log().hellos();
    party.restart_relay();
    client.wait_for_status(Duration::from_secs(5), |l| l.contains("retrying in"));
    let started = Instant::now();
    party
        .relay_log()
        .wait_until(Duration::from_secs(10), |l| l.hellos() > hellos_before)
        .expect("the client says hello to the restarted relay");
    client.wait_for_status(Duration::from_secs(5), |l| {
        l.starts_with("joined room party") && l.contains(&format!("got address {addr}/24"))
    });
    // Traffic resumes; the adapter kept its address the whole time.
    netns::ping(&client.ns, IpAddr::V4(LAN_HOST), Duration::from_secs(5))
        .expect("ping works again after the reconnect");
    assert!(started.elapsed() < Duration::from_secs(15));
    let shown = client
        .ns
        .ip(&["-4", "addr", "show", "dev", "lpcl0"])
        .unwrap();
    assert!(shown.contains(&format!("inet {addr}/24")), "{shown}");
    assert!(
        client
            .status_lines()
            .iter()
            .any(|l| l.contains("keeping address")),
        "{:?}",
        client.status_lines()
    );
    client.stop_and_check_removed();
}
