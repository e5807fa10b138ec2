//! Real-kernel tests of TUN and TAP devices, each inside a namespace the test creates. They need
//! root and skip with a clear line otherwise.
#![cfg(target_os = "linux")]

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use lanparty_datapath::Mac;
use lanparty_datapath::offload::VnetHdr;
use lanparty_datapath::sys::afpacket::{PacketSocket, SocketConfig};
use lanparty_datapath::sys::netns::{self, Netns, test_v4, test_v6};
use lanparty_datapath::sys::tuntap::{
    TunKind, TunTap, TunTapConfig, TunTapError, VNET_HDR_LEN, offload,
};

const TAP_MAC: Mac = Mac([0x02, 0x4c, 0x50, 0x00, 0x06, 0x01]);
const HOST_MAC: [u8; 6] = [0x02, 0x4c, 0x50, 0x00, 0x06, 0x02];

fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An IPv4 ICMP echo request.
fn echo_request(src: Ipv4Addr, dst: Ipv4Addr, ident: u16, payload: &[u8]) -> Vec<u8> {
    let mut icmp = vec![8, 0, 0, 0];
    icmp.extend_from_slice(&ident.to_be_bytes());
    icmp.extend_from_slice(&1u16.to_be_bytes());
    icmp.extend_from_slice(payload);
    let ck = checksum(&icmp);
    icmp[2..4].copy_from_slice(&ck.to_be_bytes());
    let total = (20 + icmp.len()) as u16;
    let mut ip = vec![0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, 1, 0, 0];
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    let ck = checksum(&ip);
    ip[10..12].copy_from_slice(&ck.to_be_bytes());
    ip.extend_from_slice(&icmp);
    ip
}

/// Whether `ip` is an echo reply from `from` to `to` carrying `ident` and `payload`.
fn is_echo_reply(ip: &[u8], from: Ipv4Addr, to: Ipv4Addr, ident: u16, payload: &[u8]) -> bool {
    ip.len() >= 28
        && ip[0] >> 4 == 4
        && ip[9] == 1
        && ip[12..16] == from.octets()
        && ip[16..20] == to.octets()
        && ip[20] == 0
        && ip[24..26] == ident.to_be_bytes()
        && ip.get(28..) == Some(payload)
}

/// An Ethernet ARP request from HOST_MAC/`sender_ip` for `target_ip`.
fn arp_request(sender_ip: Ipv4Addr, target_ip: Ipv4Addr) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&HOST_MAC);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4, 0, 1]);
    f.extend_from_slice(&HOST_MAC);
    f.extend_from_slice(&sender_ip.octets());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&target_ip.octets());
    f
}

/// Whether `f` is an ARP reply saying `ip` is at `mac`, addressed to HOST_MAC.
fn is_arp_reply(f: &[u8], mac: Mac, ip: Ipv4Addr) -> bool {
    f.len() >= 42
        && f[0..6] == HOST_MAC
        && f[12..14] == [0x08, 0x06]
        && f[20..22] == [0, 2]
        && f[22..28] == mac.octets()
        && f[28..32] == ip.octets()
}

/// Reads from `dev` until `want` matches or `timeout` passes.
fn read_until(dev: &TunTap, timeout: Duration, want: impl Fn(&[u8]) -> bool) -> Option<Vec<u8>> {
    let deadline = Instant::now() + timeout;
    let mut buf = vec![0u8; 65_536];
    while Instant::now() < deadline {
        dev.wait_readable(Duration::from_millis(20)).unwrap();
        while let Some(n) = dev.read(&mut buf).unwrap() {
            if want(&buf[..n]) {
                return Some(buf[..n].to_vec());
            }
        }
    }
    None
}

fn create_in(ns: &Netns, config: &TunTapConfig) -> TunTap {
    ns.run_in(|| TunTap::create(config)).unwrap().unwrap()
}

fn up_tap(ns: &Netns, config: &TunTapConfig) -> TunTap {
    let tap = create_in(ns, config);
    tap.set_mac(TAP_MAC).unwrap();
    tap.set_ipv4(test_v4(6, 1), 24).unwrap();
    tap.set_up().unwrap();
    tap
}

#[test]
fn tun_packet_written_reaches_the_kernel_and_the_ping_reply_comes_back() {
    if !netns::require_root("tun_packet_written_reaches_the_kernel_and_the_ping_reply_comes_back") {
        return;
    }
    let ns = Netns::create("tun").unwrap();
    let tun = create_in(&ns, &TunTapConfig::tun("lptun0"));
    assert_eq!(tun.name(), "lptun0");
    assert_eq!(tun.kind(), TunKind::Tun);
    tun.set_ipv4(test_v4(5, 1), 24).unwrap();
    tun.set_mtu(1400).unwrap();
    tun.set_up().unwrap();
    assert_eq!(tun.mtu().unwrap(), 1400);
    let shown = ns.ip(&["addr", "show", "dev", "lptun0"]).unwrap();
    assert!(shown.contains("198.18.5.1/24"), "{shown}");
    assert!(
        shown.contains("mtu 1400") && shown.contains("UP"),
        "{shown}"
    );

    let (me, kernel) = (test_v4(5, 2), test_v4(5, 1));
    let payload = b"softlan tun echo";
    assert!(
        tun.write(&echo_request(me, kernel, 0x4c50, payload))
            .unwrap()
    );
    let reply = read_until(&tun, Duration::from_secs(5), |p| {
        is_echo_reply(p, kernel, me, 0x4c50, payload)
    });
    assert!(
        reply.is_some(),
        "no echo reply read back from the TUN device"
    );
    assert!(matches!(tun.set_mac(TAP_MAC), Err(TunTapError::NotTap(_))));
}

#[test]
fn tap_frames_reach_the_kernel_which_answers_arp_and_ping() {
    if !netns::require_root("tap_frames_reach_the_kernel_which_answers_arp_and_ping") {
        return;
    }
    let ns = Netns::create("tap").unwrap();
    let tap = up_tap(&ns, &TunTapConfig::tap("lptap0"));
    assert_eq!(tap.mac().unwrap(), TAP_MAC);
    let (me, kernel) = (test_v4(6, 2), test_v4(6, 1));

    assert!(tap.write(&arp_request(me, kernel)).unwrap());
    let reply = read_until(&tap, Duration::from_secs(5), |f| {
        is_arp_reply(f, TAP_MAC, kernel)
    });
    assert!(
        reply.is_some(),
        "no ARP reply read back from the TAP device"
    );

    // The kernel learned our MAC from the request, so it answers a ping straight away.
    let payload = b"softlan tap echo";
    let mut frame = TAP_MAC.octets().to_vec();
    frame.extend_from_slice(&HOST_MAC);
    frame.extend_from_slice(&[0x08, 0x00]);
    frame.extend_from_slice(&echo_request(me, kernel, 0x1234, payload));
    assert!(tap.write(&frame).unwrap());
    let reply = read_until(&tap, Duration::from_secs(5), |f| {
        f.len() > 14
            && f[0..6] == HOST_MAC
            && f[6..12] == TAP_MAC.octets()
            && is_echo_reply(&f[14..], kernel, me, 0x1234, payload)
    });
    assert!(
        reply.is_some(),
        "no echo reply read back from the TAP device"
    );
}

#[test]
fn tap_and_a_packet_socket_on_it_exchange_ipx_frames_both_ways() {
    if !netns::require_root("tap_and_a_packet_socket_on_it_exchange_ipx_frames_both_ways") {
        return;
    }
    let ns = Netns::create("tapsock").unwrap();
    let tap = up_tap(&ns, &TunTapConfig::tap("lptap1"));
    let config = SocketConfig {
        ignore_outgoing: false,
        ..SocketConfig::default()
    };
    let mut sock = ns
        .run_in(|| PacketSocket::open("lptap1", &config))
        .unwrap()
        .unwrap();
    let ipx = |tag: u8| {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&HOST_MAC);
        f.extend_from_slice(&[0x81, 0x37]);
        f.extend_from_slice(&[0xff, 0xff, 0x00, 0x1e, 0, 4]);
        f.extend_from_slice(&[tag; 24]);
        f
    };

    // Written to the TAP: the kernel receives it, the packet socket sees it.
    let inbound = ipx(1);
    assert!(tap.write(&inbound).unwrap());
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut seen = false;
    while !seen && Instant::now() < deadline {
        sock.wait_rx(Duration::from_millis(20)).unwrap();
        while sock.recv_batch().unwrap() > 0 {
            seen |= sock.frames().any(|f| f == inbound.as_slice());
        }
    }
    assert!(
        seen,
        "frame written to the TAP did not reach the kernel side"
    );

    // Sent by the kernel side: it comes out of the TAP.
    let outbound = ipx(2);
    sock.send(&outbound).unwrap();
    let got = read_until(&tap, Duration::from_secs(5), |f| f == outbound.as_slice());
    assert!(
        got.is_some(),
        "frame sent on the interface did not come out of the TAP"
    );
}

#[test]
fn tap_gets_ipv6_address_and_disappears_on_drop() {
    if !netns::require_root("tap_gets_ipv6_address_and_disappears_on_drop") {
        return;
    }
    let ns = Netns::create("tapv6").unwrap();
    let tap = up_tap(&ns, &TunTapConfig::tap("lptap2"));
    tap.add_ipv6(test_v6(6, 1), 64).unwrap();
    let shown = ns.ip(&["-6", "addr", "show", "dev", "lptap2"]).unwrap();
    assert!(shown.contains("fd00::6:1/64"), "{shown}");
    let index = tap.ifindex().unwrap();
    assert!(index > 0);
    drop(tap);
    // A process forked by a concurrent test may hold the descriptor until its exec closes it,
    // so the removal can lag the drop by a moment.
    let deadline = Instant::now() + Duration::from_secs(2);
    while ns.ip(&["link", "show", "lptap2"]).is_ok() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        ns.ip(&["link", "show", "lptap2"]).is_err(),
        "device removed on drop"
    );
}

#[test]
fn tap_with_vnet_header_prefixes_every_frame() {
    if !netns::require_root("tap_with_vnet_header_prefixes_every_frame") {
        return;
    }
    let ns = Netns::create("vnet").unwrap();
    let config = TunTapConfig {
        vnet_hdr: Some(0),
        ..TunTapConfig::tap("lptap3")
    };
    let tap = up_tap(&ns, &config);
    assert!(tap.has_vnet_hdr());
    assert_eq!(tap.offload(), 0);
    let (me, kernel) = (test_v4(6, 2), test_v4(6, 1));
    let mut frame = vec![0u8; VNET_HDR_LEN];
    frame.extend_from_slice(&arp_request(me, kernel));
    assert!(tap.write(&frame).unwrap());
    let reply = read_until(&tap, Duration::from_secs(5), |f| {
        f.len() > VNET_HDR_LEN && is_arp_reply(&f[VNET_HDR_LEN..], TAP_MAC, kernel)
    });
    assert!(reply.is_some(), "no ARP reply behind a vnet header");
}

#[test]
fn tap_takes_the_tcp_offloads_and_frames_written_in_two_parts() {
    if !netns::require_root("tap_takes_the_tcp_offloads_and_frames_written_in_two_parts") {
        return;
    }
    let ns = Netns::create("tso").unwrap();
    let config = TunTapConfig {
        vnet_hdr: Some(offload::TCP),
        ..TunTapConfig::tap("lptap4")
    };
    let tap = up_tap(&ns, &config);
    assert!(tap.has_vnet_hdr());
    assert_eq!(
        tap.offload(),
        offload::TCP,
        "this kernel takes CSUM | TSO4 | TSO6"
    );
    let features = ns
        .command("ethtool")
        .args(["-k", "lptap4"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    if let Some(features) = features {
        assert!(
            features.contains("tcp-segmentation-offload: on"),
            "{features}"
        );
    } else {
        eprintln!("ethtool is missing: the device's TSO feature is not checked");
    }
    // The header and the frame as two iovecs of one writev.
    let (me, kernel) = (test_v4(6, 2), test_v4(6, 1));
    assert!(
        tap.write_parts(&VnetHdr::EMPTY.to_bytes(), &arp_request(me, kernel))
            .unwrap()
    );
    let reply = read_until(&tap, Duration::from_secs(5), |f| {
        f.len() > VNET_HDR_LEN && is_arp_reply(&f[VNET_HDR_LEN..], TAP_MAC, kernel)
    });
    assert!(
        reply.is_some(),
        "no ARP reply to a frame written in two parts"
    );
}

#[test]
fn taken_names_and_bad_names_are_reported() {
    if !netns::require_root("taken_names_and_bad_names_are_reported") {
        return;
    }
    let ns = Netns::create("names").unwrap();
    let err = ns
        .run_in(|| TunTap::create(&TunTapConfig::tap("lp-this-name-is-too-long")))
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, TunTapError::InvalidName(_)), "{err}");
    // "lo" exists and is no TUN/TAP device.
    let err = ns
        .run_in(|| TunTap::create(&TunTapConfig::tap("lo")))
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, TunTapError::NameTaken(_)), "{err}");
    // Without a name the kernel picks one.
    let auto = ns
        .run_in(|| {
            TunTap::create(&TunTapConfig {
                kind: TunKind::Tap,
                name: None,
                vnet_hdr: None,
            })
        })
        .unwrap()
        .unwrap();
    assert!(auto.name().starts_with("tap"), "{}", auto.name());
}
