//! Real-kernel tests of AF_PACKET rings over a veth pair between two namespaces this test
//! creates. They need root and skip with a clear line otherwise.
//!
//! Hosts chatter on their own (IPv6 router solicitations, MLD), so every check looks only at
//! frames from the test's source MAC addresses.
#![cfg(target_os = "linux")]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use lanparty_datapath::Mac;
use lanparty_datapath::sys::afpacket::{
    AfPacketError, NicWarning, PacketRing, PacketSocket, RingConfig, RingVersion, SocketConfig,
    TxError, nic_warnings,
};
use lanparty_datapath::sys::netns::{self, Netns, Veth};

const SENDER: [u8; 6] = [0x02, 0x4c, 0x50, 0x00, 0x00, 0xaa];
const OTHER_SENDER: [u8; 6] = [0x02, 0x4c, 0x50, 0x00, 0x00, 0xbb];

/// The default ring configuration with layout `v`. Every ring test runs once per layout.
fn cfg(v: RingVersion) -> RingConfig {
    RingConfig {
        version: v,
        ..RingConfig::default()
    }
}

/// Namespaces A and B joined by veth `lpa` (in A) <-> `lpb` (in B), both up.
struct Pair {
    // Field order matters for drop: the veth goes before the namespaces.
    _veth: Veth,
    a: Netns,
    b: Netns,
}

fn pair(tag: &str) -> Pair {
    let a = Netns::create(tag).unwrap();
    let b = Netns::create(tag).unwrap();
    let veth = Veth::create(Some(&a), "lpa", Some(&b), "lpb").unwrap();
    a.set_mac("lpa", Mac([0x02, 0x4c, 0x50, 0, 0, 0x0a]))
        .unwrap();
    b.set_mac("lpb", Mac([0x02, 0x4c, 0x50, 0, 0, 0x0b]))
        .unwrap();
    a.set_link_up("lpa").unwrap();
    b.set_link_up("lpb").unwrap();
    Pair { _veth: veth, a, b }
}

fn ring_in(ns: &Netns, ifname: &str, config: &RingConfig) -> PacketRing {
    ns.run_in(|| PacketRing::open(ifname, config))
        .unwrap()
        .unwrap()
}

fn socket_in(ns: &Netns, ifname: &str) -> PacketSocket {
    ns.run_in(|| PacketSocket::open(ifname, &SocketConfig::default()))
        .unwrap()
        .unwrap()
}

/// Ethernet II frame from `src` with `ethertype` and `payload`.
fn eth2(src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An IPX (Ethernet II, EtherType 0x8137) broadcast as old LAN games send it.
fn ipx_frame() -> Vec<u8> {
    let mut ipx = vec![
        0xff, 0xff, // checksum: none
        0x00, 0x30, // length 48
        0x00, // transport control
        0x04, // packet type: PEP
        0, 0, 0, 0, // destination network
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // destination node: broadcast
        0x86, 0x9c, // destination socket (a game's)
        0, 0, 0, 0, // source network
    ];
    ipx.extend_from_slice(&SENDER);
    ipx.extend_from_slice(&[0x86, 0x9c]);
    ipx.extend_from_slice(&[0x5a; 18]);
    eth2(SENDER, 0x8137, &ipx)
}

/// An IEEE 802.3 frame: the type field is a length, followed by an LLC header (IPX over 802.2).
fn ieee8023_frame() -> Vec<u8> {
    let mut payload = vec![0xe0, 0xe0, 0x03];
    payload.extend((0..43).map(|i| i as u8));
    eth2(SENDER, payload.len() as u16, &payload)
}

/// A full-size frame: 14 bytes of header and 1500 of payload, with a local EtherType.
fn full_size_frame() -> Vec<u8> {
    let payload: Vec<u8> = (0..1500u32).map(|i| (i * 7 + 3) as u8).collect();
    let f = eth2(SENDER, 0x88b5, &payload);
    assert_eq!(f.len(), 1514);
    f
}

/// A numbered test frame of `len` bytes from `src`.
fn numbered(src: [u8; 6], seq: u64, len: usize) -> Vec<u8> {
    let mut payload = seq.to_be_bytes().to_vec();
    payload.resize(len - 14, (seq % 251) as u8);
    eth2(src, 0x88b5, &payload)
}

/// Compares frame lists and reports the first difference briefly (frames are long).
fn assert_same_frames(got: &[Vec<u8>], sent: &[Vec<u8>]) {
    for (i, (g, s)) in got.iter().zip(sent).enumerate() {
        assert!(
            g == s,
            "frame {i} differs: got {} bytes {:02x?}.., sent {} bytes {:02x?}..",
            g.len(),
            &g[..g.len().min(24)],
            s.len(),
            &s[..s.len().min(24)]
        );
    }
    assert_eq!(got.len(), sent.len(), "frame count");
}

fn seq_of(frame: &[u8]) -> u64 {
    u64::from_be_bytes(frame[14..22].try_into().unwrap())
}

/// Drains `ring` until `want` frames from `src` have arrived or `timeout` passes.
fn collect_from(
    ring: &mut PacketRing,
    src: [u8; 6],
    want: usize,
    timeout: Duration,
) -> Vec<Vec<u8>> {
    let deadline = Instant::now() + timeout;
    let mut got = Vec::new();
    while got.len() < want && Instant::now() < deadline {
        ring.wait_rx(Duration::from_millis(20)).unwrap();
        while let Some(block) = ring.next_block() {
            got.extend(
                block
                    .frames()
                    .filter(|f| f.data().get(6..12) == Some(&src[..]))
                    .map(|f| f.data().to_vec()),
            );
        }
    }
    got
}

/// Like [`collect_from`] for a plain socket.
fn socket_collect_from(
    sock: &mut PacketSocket,
    src: [u8; 6],
    want: usize,
    timeout: Duration,
) -> Vec<Vec<u8>> {
    let deadline = Instant::now() + timeout;
    let mut got = Vec::new();
    while got.len() < want && Instant::now() < deadline {
        sock.wait_rx(Duration::from_millis(20)).unwrap();
        while sock.recv_batch().unwrap() > 0 {
            got.extend(
                sock.frames()
                    .filter(|f| f.get(6..12) == Some(&src[..]))
                    .map(<[u8]>::to_vec),
            );
        }
    }
    got
}

#[test]
fn ring_receives_ipx_8023_and_full_size_frames_byte_for_byte_v2() {
    ring_receives_ipx_8023_and_full_size_frames_byte_for_byte(RingVersion::V2);
}

#[test]
fn ring_receives_ipx_8023_and_full_size_frames_byte_for_byte_v3() {
    ring_receives_ipx_8023_and_full_size_frames_byte_for_byte(RingVersion::V3);
}

/// With the TX linear copy (PACKET_VNET_HDR) on, received frames carry a virtio header in
/// front of the MAC header; the ring must hand over the same frames.
#[test]
fn ring_with_tx_linear_copy_receives_frames_byte_for_byte_v2() {
    ring_receives_byte_for_byte(linear(RingVersion::V2), "linear");
}

#[test]
fn ring_with_tx_linear_copy_receives_frames_byte_for_byte_v3() {
    ring_receives_byte_for_byte(linear(RingVersion::V3), "linear");
}

/// [`cfg`] with [`RingConfig::tx_linear_copy`].
fn linear(v: RingVersion) -> RingConfig {
    RingConfig {
        tx_linear_copy: true,
        ..cfg(v)
    }
}

fn ring_receives_ipx_8023_and_full_size_frames_byte_for_byte(v: RingVersion) {
    ring_receives_byte_for_byte(cfg(v), "plain");
}

fn ring_receives_byte_for_byte(config: RingConfig, what: &str) {
    let v = config.version;
    if !netns::require_root(&format!(
        "ring_receives_ipx_8023_and_full_size_frames_byte_for_byte ({v:?}, {what})"
    )) {
        return;
    }
    let p = pair("rxring");
    let mut ring = ring_in(&p.b, "lpb", &config);
    let mut sender = socket_in(&p.a, "lpa");
    let sent = vec![
        ipx_frame(),
        ieee8023_frame(),
        full_size_frame(),
        numbered(SENDER, 7, 60),
    ];
    for f in &sent {
        sender.send(f).unwrap();
    }
    let got = collect_from(&mut ring, SENDER, sent.len(), Duration::from_secs(5));
    assert_same_frames(&got, &sent);
    let c = ring.counters().unwrap();
    assert!(c.rx.frames >= 4);
    assert_eq!(c.rx.truncated, 0);
    assert_eq!(c.kernel_drops, 0);
}

#[test]
fn tx_ring_frames_arrive_at_the_peer_v2() {
    tx_ring_frames_arrive_at_the_peer(RingVersion::V2);
}

#[test]
fn tx_ring_frames_arrive_at_the_peer_v3() {
    tx_ring_frames_arrive_at_the_peer(RingVersion::V3);
}

#[test]
fn tx_ring_frames_with_linear_copy_arrive_at_the_peer_v2() {
    tx_ring_frames_arrive(linear(RingVersion::V2), "linear");
}

#[test]
fn tx_ring_frames_with_linear_copy_arrive_at_the_peer_v3() {
    tx_ring_frames_arrive(linear(RingVersion::V3), "linear");
}

fn tx_ring_frames_arrive_at_the_peer(v: RingVersion) {
    tx_ring_frames_arrive(cfg(v), "plain");
}

fn tx_ring_frames_arrive(config: RingConfig, what: &str) {
    let v = config.version;
    if !netns::require_root(&format!(
        "tx_ring_frames_arrive_at_the_peer ({v:?}, {what})"
    )) {
        return;
    }
    let p = pair("txring");
    let mut ring = ring_in(&p.a, "lpa", &config);
    let mut peer = socket_in(&p.b, "lpb");
    let mut sent = vec![ipx_frame(), ieee8023_frame(), full_size_frame()];
    sent.extend((0..200).map(|i| numbered(SENDER, i, 60 + (i as usize * 7) % 1400)));
    for f in &sent {
        ring.send(f).unwrap();
    }
    assert_eq!(ring.tx_pending(), sent.len());
    assert_eq!(ring.flush().unwrap(), sent.len());
    assert_eq!(ring.tx_pending(), 0);
    let got = socket_collect_from(&mut peer, SENDER, sent.len(), Duration::from_secs(5));
    assert_same_frames(&got, &sent);
    assert_eq!(ring.counters().unwrap().tx.frames, sent.len() as u64);
}

#[test]
fn socket_send_batch_frames_arrive_at_the_peer_in_order() {
    if !netns::require_root("socket_send_batch_frames_arrive_at_the_peer_in_order") {
        return;
    }
    let p = pair("sendmm");
    let mut sock = socket_in(&p.a, "lpa");
    let mut peer = socket_in(&p.b, "lpb");
    let mut sent = vec![ipx_frame(), ieee8023_frame(), full_size_frame()];
    sent.extend((0..200).map(|i| numbered(SENDER, i, 60 + (i as usize * 7) % 1400)));
    let mut rest: Vec<&[u8]> = sent.iter().map(Vec::as_slice).collect();
    let mut calls = 0;
    while !rest.is_empty() {
        let n = sock.send_batch(&rest).unwrap();
        // One call takes at most one batch (64 frames by default).
        assert!(n > 0 && n <= SocketConfig::default().batch, "{n}");
        rest.drain(..n);
        calls += 1;
    }
    assert!(calls >= sent.len().div_ceil(SocketConfig::default().batch));
    assert_eq!(sock.send_batch(&[]).unwrap(), 0);
    let got = socket_collect_from(&mut peer, SENDER, sent.len(), Duration::from_secs(5));
    assert_same_frames(&got, &sent);
    assert_eq!(sock.counters().unwrap().tx_frames, sent.len() as u64);
}

#[test]
fn tx_ring_refuses_oversized_frames_and_reports_a_full_ring_v2() {
    tx_ring_refuses_oversized_frames_and_reports_a_full_ring(RingVersion::V2);
}

#[test]
fn tx_ring_refuses_oversized_frames_and_reports_a_full_ring_v3() {
    tx_ring_refuses_oversized_frames_and_reports_a_full_ring(RingVersion::V3);
}

fn tx_ring_refuses_oversized_frames_and_reports_a_full_ring(v: RingVersion) {
    if !netns::require_root(&format!(
        "tx_ring_refuses_oversized_frames_and_reports_a_full_ring ({v:?})"
    )) {
        return;
    }
    let p = pair("txfull");
    let config = RingConfig {
        tx_block_size: 4096,
        tx_block_count: 1,
        ..cfg(v)
    };
    let mut ring = ring_in(&p.a, "lpa", &config);
    // 2 KiB slots hold 2000 bytes, but the veth's MTU of 1500 allows 1514 + a VLAN tag.
    assert_eq!(ring.max_tx_frame(), 1518);
    let err = ring.send(&vec![0; 1519]).unwrap_err();
    assert_eq!(
        err,
        TxError::TooLarge {
            len: 1519,
            max: 1518
        }
    );
    // Two slots of 2 KiB; without a flush nothing frees them.
    ring.send(&numbered(SENDER, 0, 60)).unwrap();
    ring.send(&numbered(SENDER, 1, 60)).unwrap();
    assert_eq!(ring.send(&numbered(SENDER, 2, 60)), Err(TxError::RingFull));
    ring.flush().unwrap();
    assert!(ring.wait_tx(Duration::from_secs(2)).unwrap());
    let deadline = Instant::now() + Duration::from_secs(2);
    while ring.send(&numbered(SENDER, 2, 60)).is_err() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    let c = ring.counters().unwrap();
    assert_eq!(c.tx.frames, 3, "a slot came back after the flush");
    assert!(c.tx.ring_full >= 1);
    assert_eq!(c.tx.too_large, 1);
}

#[test]
fn ignore_outgoing_keeps_this_hosts_frames_out_of_rx_v2() {
    ignore_outgoing_keeps_this_hosts_frames_out_of_rx(RingVersion::V2);
}

#[test]
fn ignore_outgoing_keeps_this_hosts_frames_out_of_rx_v3() {
    ignore_outgoing_keeps_this_hosts_frames_out_of_rx(RingVersion::V3);
}

fn ignore_outgoing_keeps_this_hosts_frames_out_of_rx(v: RingVersion) {
    if !netns::require_root(&format!(
        "ignore_outgoing_keeps_this_hosts_frames_out_of_rx ({v:?})"
    )) {
        return;
    }
    let p = pair("ignout");
    // Without the qdisc bypass, sent frames pass the taps where other sockets could see them.
    let ignoring = RingConfig {
        qdisc_bypass: false,
        ..cfg(v)
    };
    let seeing = RingConfig {
        ignore_outgoing: false,
        qdisc_bypass: false,
        ..cfg(v)
    };
    let mut ring = ring_in(&p.a, "lpa", &ignoring);
    let mut control = ring_in(&p.a, "lpa", &seeing);
    let mut local =
        p.a.run_in(|| {
            PacketSocket::open(
                "lpa",
                &SocketConfig {
                    ignore_outgoing: false,
                    ..SocketConfig::default()
                },
            )
        })
        .unwrap()
        .unwrap();
    let mut peer = socket_in(&p.b, "lpb");

    // Our own TX ring, another local sender, and the peer all send.
    ring.send(&numbered(SENDER, 1, 64)).unwrap();
    ring.flush().unwrap();
    local.send(&numbered(SENDER, 2, 64)).unwrap();
    peer.send(&numbered(OTHER_SENDER, 3, 64)).unwrap();

    let from_peer = collect_from(&mut ring, OTHER_SENDER, 1, Duration::from_secs(5));
    assert_eq!(from_peer, vec![numbered(OTHER_SENDER, 3, 64)]);
    // The control socket proves the local frames were visible to anyone who looked.
    let seen = collect_from(&mut control, SENDER, 2, Duration::from_secs(5));
    assert_eq!(seen.len(), 2, "control socket saw the outgoing frames");
    // Give stragglers a moment, then check that none of ours reached the ignoring ring.
    std::thread::sleep(Duration::from_millis(50));
    let ours = collect_from(&mut ring, SENDER, 1, Duration::from_millis(100));
    assert!(
        ours.is_empty(),
        "outgoing frames leaked into rx: {}",
        ours.len()
    );
}

#[test]
fn ring_wraps_around_under_a_burst_of_100k_frames_v2() {
    ring_wraps_around_under_a_burst_of_100k_frames(RingVersion::V2);
}

#[test]
fn ring_wraps_around_under_a_burst_of_100k_frames_v3() {
    ring_wraps_around_under_a_burst_of_100k_frames(RingVersion::V3);
}

fn ring_wraps_around_under_a_burst_of_100k_frames(v: RingVersion) {
    if !netns::require_root(&format!(
        "ring_wraps_around_under_a_burst_of_100k_frames ({v:?})"
    )) {
        return;
    }
    const FRAMES: u64 = 100_000;
    // Window of frames in flight: well under both the ring's capacity (~3000 frames of this
    // size) and the kernel's per-CPU backlog (1000), so no loss is expected.
    const WINDOW: u64 = 400;
    let time_limit = Duration::from_secs(30);
    let p = pair("burst");
    // 256-byte frame slots (TPACKET_V2) hold these 100-byte frames: 2048 slots.
    let config = RingConfig {
        rx_block_size: 64 * 1024,
        rx_block_count: 8,
        rx_frame_size: 256,
        ..cfg(v)
    };
    let mut ring = ring_in(&p.b, "lpb", &config);
    let mut sender = socket_in(&p.a, "lpa");
    let received = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let start = Instant::now();

    let (in_order, counters) = std::thread::scope(|s| {
        let rx = s.spawn(|| {
            let mut next = 0u64;
            let mut in_order = true;
            while next < FRAMES && start.elapsed() < time_limit && !stop.load(Ordering::Relaxed) {
                ring.wait_rx(Duration::from_millis(10)).unwrap();
                while let Some(block) = ring.next_block() {
                    for f in block.frames() {
                        if f.data().get(6..12) != Some(&SENDER[..]) {
                            continue;
                        }
                        in_order &= seq_of(f.data()) == next && f.data().len() == 100;
                        next += 1;
                    }
                    received.store(next, Ordering::Release);
                }
            }
            (in_order, ring.counters().unwrap())
        });
        let mut frame = numbered(SENDER, 0, 100);
        let mut seq = 0;
        while seq < FRAMES && start.elapsed() < time_limit {
            if seq - received.load(Ordering::Acquire) >= WINDOW {
                std::thread::sleep(Duration::from_micros(50));
                continue;
            }
            frame[14..22].copy_from_slice(&seq.to_be_bytes());
            match sender.send(&frame) {
                Ok(()) => seq += 1,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_micros(50));
                }
                Err(e) => panic!("send: {e}"),
            }
        }
        if seq < FRAMES {
            stop.store(true, Ordering::Relaxed);
        }
        rx.join().unwrap()
    });
    let elapsed = start.elapsed();
    println!(
        "burst: {} frames in {elapsed:?}, {} blocks, kernel drops {}",
        counters.rx.frames, counters.rx.blocks, counters.kernel_drops
    );
    assert_eq!(
        received.load(Ordering::Acquire),
        FRAMES,
        "frames in == frames out"
    );
    assert!(in_order, "frames arrived in order and intact");
    assert_eq!(counters.kernel_drops, 0);
    let (walked, ring_len) = match v {
        RingVersion::V2 => (counters.rx.frames, 64 * 1024 / 256 * 8),
        _ => (counters.rx.blocks, u64::from(config.rx_block_count)),
    };
    assert!(
        walked > ring_len * 4,
        "the ring wrapped around several times ({walked} blocks or slots of {ring_len})"
    );
}

#[test]
fn opening_a_missing_or_down_interface_says_what_to_do_v2() {
    opening_a_missing_or_down_interface_says_what_to_do(RingVersion::V2);
}

#[test]
fn opening_a_missing_or_down_interface_says_what_to_do_v3() {
    opening_a_missing_or_down_interface_says_what_to_do(RingVersion::V3);
}

fn opening_a_missing_or_down_interface_says_what_to_do(v: RingVersion) {
    if !netns::require_root(&format!(
        "opening_a_missing_or_down_interface_says_what_to_do ({v:?})"
    )) {
        return;
    }
    let a = Netns::create("errs").unwrap();
    let b = Netns::create("errs").unwrap();
    let _veth = Veth::create(Some(&a), "lpdown", Some(&b), "lppeer").unwrap();
    let missing = a
        .run_in(|| PacketRing::open("lpnothere", &cfg(v)))
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(missing, AfPacketError::NoSuchInterface { .. }),
        "{missing}"
    );
    let down = a
        .run_in(|| PacketRing::open("lpdown", &cfg(v)))
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(down, AfPacketError::InterfaceDown { .. }),
        "{down}"
    );
    assert!(down.to_string().contains("ip link set lpdown up"), "{down}");
    let bad = RingConfig {
        rx_block_size: 1000,
        ..cfg(v)
    };
    a.set_link_up("lpdown").unwrap();
    let err = a
        .run_in(|| PacketRing::open("lpdown", &bad))
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, AfPacketError::Config(_)), "{err}");
}

#[test]
fn plain_socket_receives_batches_from_the_peer() {
    if !netns::require_root("plain_socket_receives_batches_from_the_peer") {
        return;
    }
    let p = pair("mmsg");
    let mut rx = socket_in(&p.b, "lpb");
    let mut tx = socket_in(&p.a, "lpa");
    let sent: Vec<Vec<u8>> = (0..150)
        .map(|i| numbered(SENDER, i, 64 + i as usize))
        .collect();
    for f in &sent {
        tx.send(f).unwrap();
    }
    let got = socket_collect_from(&mut rx, SENDER, sent.len(), Duration::from_secs(5));
    assert_same_frames(&got, &sent);
    let c = rx.counters().unwrap();
    assert!(c.rx_batches < c.rx_frames, "frames came in batches");
    assert_eq!(c.kernel_drops, 0);
}

#[test]
fn gro_and_vlan_offload_on_a_nic_are_reported() {
    if !netns::require_root("gro_and_vlan_offload_on_a_nic_are_reported") {
        return;
    }
    if std::process::Command::new("ethtool")
        .arg("--version")
        .output()
        .is_err()
    {
        let line = "gro_and_vlan_offload_on_a_nic_are_reported: skipped: needs ethtool\n";
        let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
        return;
    }
    let p = pair("nic");
    let set = |state: &str| {
        let out = p.a.exec(&["ethtool", "-K", "lpa", "gro", state]).unwrap();
        assert!(out.status.success(), "{out:?}");
    };
    let gro = |w: &Vec<NicWarning>| w.iter().any(|w| matches!(w, NicWarning::Gro { .. }));
    set("on");
    let on = p.a.run_in(|| nic_warnings("lpa")).unwrap();
    assert!(gro(&on), "{on:?}");
    assert!(on.iter().all(|w| !matches!(w, NicWarning::Wireless { .. })));
    set("off");
    let off = p.a.run_in(|| nic_warnings("lpa")).unwrap();
    assert!(!gro(&off), "{off:?}");
    assert!(on[0].to_string().contains("ethtool -K lpa gro off"));

    let vlan = |w: &Vec<NicWarning>| {
        w.iter()
            .any(|w| matches!(w, NicWarning::RxVlanOffload { .. }))
    };
    let rxvlan = |state: &str| {
        let out =
            p.a.exec(&["ethtool", "-K", "lpa", "rxvlan", state])
                .unwrap();
        assert!(out.status.success(), "{out:?}");
        p.a.run_in(|| nic_warnings("lpa")).unwrap()
    };
    assert!(vlan(&rxvlan("on")));
    assert!(!vlan(&rxvlan("off")));
}

#[test]
fn a_full_rx_ring_reports_kernel_drops_v2() {
    a_full_rx_ring_reports_kernel_drops(RingVersion::V2);
}

#[test]
fn a_full_rx_ring_reports_kernel_drops_v3() {
    a_full_rx_ring_reports_kernel_drops(RingVersion::V3);
}

fn a_full_rx_ring_reports_kernel_drops(v: RingVersion) {
    if !netns::require_root(&format!("a_full_rx_ring_reports_kernel_drops ({v:?})")) {
        return;
    }
    const SENT: u64 = 300;
    let p = pair("drops");
    // Two 4 KiB blocks hold a few dozen 100-byte frames; nobody reads while we send.
    let config = RingConfig {
        rx_block_size: 4096,
        rx_block_count: 2,
        rx_frame_size: 2048,
        ..cfg(v)
    };
    let mut ring = ring_in(&p.b, "lpb", &config);
    let mut sender = socket_in(&p.a, "lpa");
    for seq in 0..SENT {
        sender.send(&numbered(SENDER, seq, 100)).unwrap();
    }
    std::thread::sleep(Duration::from_millis(50));
    let got = collect_from(&mut ring, SENDER, SENT as usize, Duration::from_millis(300));
    let c = ring.counters().unwrap();
    assert!(
        !got.is_empty() && (got.len() as u64) < SENT,
        "got {}",
        got.len()
    );
    assert!(c.kernel_drops > 0);
    assert!(got.len() as u64 + c.kernel_drops >= SENT, "{c:?}");
    // What did arrive is intact and in order.
    let seqs: Vec<u64> = got.iter().map(|f| seq_of(f)).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
}

#[test]
fn vlan_tags_stripped_by_the_kernel_are_reported_and_restorable_v2() {
    vlan_tags_stripped_by_the_kernel_are_reported_and_restorable(RingVersion::V2);
}

#[test]
fn vlan_tags_stripped_by_the_kernel_are_reported_and_restorable_v3() {
    vlan_tags_stripped_by_the_kernel_are_reported_and_restorable(RingVersion::V3);
}

fn vlan_tags_stripped_by_the_kernel_are_reported_and_restorable(v: RingVersion) {
    if !netns::require_root(&format!(
        "vlan_tags_stripped_by_the_kernel_are_reported_and_restorable ({v:?})"
    )) {
        return;
    }
    let p = pair("vlan");
    let mut ring = ring_in(&p.b, "lpb", &cfg(v));
    let mut sender = socket_in(&p.a, "lpa");
    // 802.1Q tag: priority 3, VLAN 100; inner EtherType 0x88b5.
    let mut tagged = vec![0xff; 6];
    tagged.extend_from_slice(&SENDER);
    tagged.extend_from_slice(&[0x81, 0x00, 0x60, 0x64, 0x88, 0xb5]);
    tagged.extend((0..60).map(|i| i as u8));
    sender.send(&tagged).unwrap();

    let deadline = Instant::now() + Duration::from_secs(5);
    let mut seen = None;
    while seen.is_none() && Instant::now() < deadline {
        ring.wait_rx(Duration::from_millis(20)).unwrap();
        ring.drain(usize::MAX, |f| {
            if f.data().get(6..12) == Some(&SENDER[..]) {
                let mut out = vec![0; f.tagged_len()];
                f.copy_tagged(&mut out).unwrap();
                seen = Some((f.vlan(), f.data().to_vec(), out));
            }
        });
    }
    let (vlan, data, restored) = seen.expect("tagged frame received");
    let vlan = vlan.expect("kernel reported the stripped tag");
    assert_eq!((vlan.tpid, vlan.tci), (0x8100, 0x6064));
    assert_eq!(data[12..14], [0x88, 0xb5], "ring data is untagged");
    assert_eq!(restored, tagged, "copy_tagged restores the wire frame");
}

#[test]
fn a_v2_frame_is_readable_at_once_while_v3_waits_for_the_block_timeout() {
    if !netns::require_root("a_v2_frame_is_readable_at_once_while_v3_waits_for_the_block_timeout") {
        return;
    }
    let p = pair("v2lat");
    // A long retire timeout makes the V3 delay unmistakable; V2 has no blocks to retire.
    let slow = |v| RingConfig {
        block_timeout_ms: 2000,
        ..cfg(v)
    };
    let mut v2 = ring_in(&p.b, "lpb", &slow(RingVersion::V2));
    let mut v3 = ring_in(&p.b, "lpb", &slow(RingVersion::V3));
    let mut sender = socket_in(&p.a, "lpa");
    let frame = numbered(SENDER, 1, 60);
    let start = Instant::now();
    sender.send(&frame).unwrap();
    let got = collect_from(&mut v2, SENDER, 1, Duration::from_secs(1));
    let v2_delay = start.elapsed();
    assert_eq!(got, vec![frame.clone()]);
    assert!(v2_delay < Duration::from_millis(500), "{v2_delay:?}");
    assert!(
        collect_from(&mut v3, SENDER, 1, Duration::from_millis(300)).is_empty(),
        "the V3 block is still open"
    );
    assert_eq!(
        collect_from(&mut v3, SENDER, 1, Duration::from_secs(3)),
        vec![frame],
        "the V3 block retires after its timeout"
    );
}
