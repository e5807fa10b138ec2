//! Both UDP backends on loopback: bulk transfer with verified contents, GSO, GRO, the waker,
//! deadlines and extra fds. Linux only (the io_uring backend and fd watching are Linux-only).
#![cfg(target_os = "linux")]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use lanparty_datapath::io::{
    BackendKind, Interest, PortableUdp, TransmitMeta, UdpBackend, UringConfig, UringUdp, open_best,
};
use lanparty_datapath::sys::uring;

const V4: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const V6: IpAddr = IpAddr::V6(Ipv6Addr::LOCALHOST);

/// Opens a backend of `kind` on `ip`, or prints why the test skips it.
fn open(kind: BackendKind, ip: IpAddr) -> Option<Box<dyn UdpBackend>> {
    let addr = SocketAddr::new(ip, 0);
    match kind {
        BackendKind::Uring => {
            if let Err(reason) = uring::probe() {
                println!("SKIP io_uring backend: {reason}");
                return None;
            }
            match UringUdp::bind(addr, &UringConfig::default()) {
                Ok(b) => Some(Box::new(b)),
                Err(e) => {
                    println!("SKIP io_uring backend on {ip}: {e}");
                    None
                }
            }
        }
        BackendKind::Portable => match PortableUdp::bind(addr) {
            Ok(b) => Some(Box::new(b)),
            Err(e) => {
                println!("SKIP portable backend on {ip}: {e}");
                None
            }
        },
    }
}

const KINDS: [BackendKind; 2] = [BackendKind::Uring, BackendKind::Portable];

/// Payload size for sequence number `seq`: 64..=1400 bytes, spread.
fn size_of_seq(seq: u32) -> usize {
    64 + (seq as usize).wrapping_mul(7919) % (1400 - 64 + 1)
}

fn checksum(bytes: &[u8]) -> u32 {
    // FNV-1a: cheap, order-sensitive.
    bytes.iter().fold(0x811c_9dc5u32, |h, &b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// `[seq u32][checksum u32][filler derived from seq]`, `size` bytes.
fn write_payload(buf: &mut Vec<u8>, seq: u32, size: usize) {
    buf.clear();
    buf.extend_from_slice(&seq.to_le_bytes());
    buf.extend_from_slice(&[0; 4]);
    buf.extend((8..size).map(|i| (seq as usize).wrapping_mul(31).wrapping_add(i) as u8));
    let sum = checksum(&buf[8..]) ^ seq;
    buf[4..8].copy_from_slice(&sum.to_le_bytes());
}

/// The sequence number of a well-formed payload.
fn verify_payload(data: &[u8]) -> Option<u32> {
    let seq = u32::from_le_bytes(data.get(..4)?.try_into().ok()?);
    let sum = u32::from_le_bytes(data.get(4..8)?.try_into().ok()?);
    (checksum(&data[8..]) ^ seq == sum && data.len() == size_of_seq(seq)).then_some(seq)
}

/// The kernel's UDP receive-buffer overflow counter (all sockets).
fn rcvbuf_errors() -> u64 {
    let snmp = std::fs::read_to_string("/proc/net/snmp").unwrap_or_default();
    let mut lines = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (Some(names), Some(values)) = (lines.next(), lines.next()) else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "RcvbufErrors")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

/// Sends `count` mixed-size datagrams from `tx` to `rx` with at most `window` in flight and
/// checks every one that arrives. Returns (received, lost).
fn transfer(tx: &mut dyn UdpBackend, rx: &mut dyn UdpBackend, count: u32) -> (u32, u32) {
    let to = rx.local_addr();
    let window = 256u32;
    let mut seen = vec![false; count as usize];
    let (mut sent, mut received, mut lost) = (0u32, 0u32, 0u32);
    let mut ready = Vec::new();
    let mut last_progress = Instant::now();
    let give_up = Instant::now() + Duration::from_secs(120);
    while received + lost < count {
        assert!(Instant::now() < give_up, "transfer took too long");
        while sent < count && sent - received - lost < window {
            let mut buf = tx.send_buffer();
            let size = size_of_seq(sent);
            write_payload(&mut buf, sent, size);
            let meta = TransmitMeta {
                destination: to,
                src_ip: None,
                ecn: None,
                segment_size: None,
                len: size,
            };
            tx.queue_send(meta, buf);
            sent += 1;
        }
        tx.flush().unwrap();
        // Reap send completions without sleeping.
        tx.wait(Some(Instant::now()), &mut ready).unwrap();
        rx.wait(Some(Instant::now() + Duration::from_millis(20)), &mut ready)
            .unwrap();
        let before = received;
        while let Some((meta, data)) = rx.poll_recv() {
            assert_eq!(meta.len, data.len());
            assert_eq!(meta.source.port(), tx.local_addr().port());
            assert!(meta.source.ip().is_loopback(), "source {}", meta.source);
            if let Some(dst) = meta.dst_ip {
                assert!(dst.is_loopback(), "dst_ip {dst}");
            }
            for datagram in data.chunks(meta.stride) {
                let seq = verify_payload(datagram).expect("corrupt datagram");
                assert!(!seen[seq as usize], "duplicate datagram {seq}");
                seen[seq as usize] = true;
                received += 1;
            }
        }
        if received > before {
            last_progress = Instant::now();
        } else if last_progress.elapsed() > Duration::from_millis(500) {
            // Whatever is still in flight is gone.
            lost += sent - received - lost;
            last_progress = Instant::now();
        }
    }
    (received, lost)
}

fn run_bulk(tx_kind: BackendKind, rx_kind: BackendKind, ip: IpAddr, count: u32) {
    let (Some(mut tx), Some(mut rx)) = (open(tx_kind, ip), open(rx_kind, ip)) else {
        return;
    };
    let overflows_before = rcvbuf_errors();
    let (received, lost) = transfer(tx.as_mut(), rx.as_mut(), count);
    let overflows = rcvbuf_errors() - overflows_before;
    println!(
        "{tx_kind} -> {rx_kind} on {ip}: {received} received, {lost} lost, \
         kernel rcvbuf overflows {overflows}"
    );
    if lost > 0 {
        assert!(
            overflows > 0,
            "{lost} datagrams lost without a buffer overflow"
        );
        assert!(lost <= count / 100, "{lost} of {count} lost");
    }
    // Let the sender see its last completions.
    let mut ready = Vec::new();
    for _ in 0..10 {
        tx.wait(Some(Instant::now()), &mut ready).unwrap();
    }
    let tc = tx.counters();
    let rc = rx.counters();
    assert_eq!(tc.datagrams_sent, u64::from(count), "{tc:?}");
    assert_eq!(tc.send_errors, 0);
    assert_eq!(rc.datagrams_received, u64::from(received), "{rc:?}");
    assert_eq!(rc.recv_errors, 0);
    assert_eq!(rc.truncated, 0);
    let bytes: u64 = (0..count).map(|s| size_of_seq(s) as u64).sum();
    assert_eq!(tc.bytes_sent, bytes);
}

#[test]
fn io_uring_carries_100k_mixed_datagrams_intact() {
    run_bulk(BackendKind::Uring, BackendKind::Uring, V4, 100_000);
}

#[test]
fn portable_carries_100k_mixed_datagrams_intact() {
    run_bulk(BackendKind::Portable, BackendKind::Portable, V4, 100_000);
}

#[test]
fn backends_interoperate_both_ways() {
    run_bulk(BackendKind::Uring, BackendKind::Portable, V4, 20_000);
    run_bulk(BackendKind::Portable, BackendKind::Uring, V4, 20_000);
}

#[test]
fn both_backends_work_over_ipv6_loopback() {
    if UdpSocket::bind((V6, 0)).is_err() {
        println!("SKIP ipv6: no [::1] here");
        return;
    }
    for kind in KINDS {
        run_bulk(kind, kind, V6, 5_000);
    }
}

/// Ten equal segments, each tagged with its index.
fn gso_batch(buf: &mut Vec<u8>, segment: usize, segments: usize) {
    buf.clear();
    for i in 0..segments {
        buf.extend((0..segment).map(|j| (i * 37 + j) as u8));
        let at = buf.len() - segment;
        buf[at] = i as u8;
    }
}

#[test]
fn gso_batch_of_ten_leaves_as_ten_datagrams() {
    for kind in KINDS {
        let Some(mut tx) = open(kind, V4) else {
            continue;
        };
        if tx.max_gso_segments() < 10 {
            println!(
                "SKIP GSO on {kind}: max_gso_segments = {}",
                tx.max_gso_segments()
            );
            continue;
        }
        // A plain socket without GRO sees the datagrams as the wire carries them.
        let plain = UdpSocket::bind((V4, 0)).unwrap();
        plain
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let mut buf = tx.send_buffer();
        gso_batch(&mut buf, 1200, 10);
        let expected = buf.clone();
        tx.queue_send(
            TransmitMeta {
                destination: plain.local_addr().unwrap(),
                src_ip: None,
                ecn: None,
                segment_size: Some(1200),
                len: 12_000,
            },
            buf,
        );
        tx.flush().unwrap();
        let mut got = Vec::new();
        let mut one = [0u8; 2048];
        for _ in 0..10 {
            let (n, from) = plain.recv_from(&mut one).expect("datagram missing");
            assert_eq!(from, tx.local_addr());
            assert_eq!(n, 1200, "{kind}: segment size on the wire");
            got.extend_from_slice(&one[..n]);
        }
        assert_eq!(got, expected, "{kind}: segments arrive in order, intact");
        let mut ready = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(1);
        while tx.counters().gso_batches == 0 && Instant::now() < deadline {
            tx.wait(Some(Instant::now() + Duration::from_millis(10)), &mut ready)
                .unwrap();
        }
        let c = tx.counters();
        assert_eq!(
            (c.gso_batches, c.gso_segments, c.datagrams_sent),
            (1, 10, 10),
            "{kind}"
        );
    }
}

#[test]
fn gro_coalesces_gso_batches_on_receive() {
    for (tx_kind, kind) in KINDS.into_iter().flat_map(|t| KINDS.map(|r| (t, r))) {
        let (Some(mut tx), Some(mut rx)) = (open(tx_kind, V4), open(kind, V4)) else {
            continue;
        };
        if rx.gro_segments() < 2 || tx.max_gso_segments() < 10 {
            println!("SKIP GRO on {kind}: no GRO or no GSO here");
            continue;
        }
        let batches = 20;
        let mut expected = Vec::new();
        for _ in 0..batches {
            let mut buf = tx.send_buffer();
            gso_batch(&mut buf, 1000, 10);
            expected.extend_from_slice(&buf);
            tx.queue_send(
                TransmitMeta {
                    destination: rx.local_addr(),
                    src_ip: None,
                    ecn: Some(0b10),
                    segment_size: Some(1000),
                    len: 10_000,
                },
                buf,
            );
        }
        tx.flush().unwrap();
        let mut got = Vec::new();
        let mut ready = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(2);
        while got.len() < expected.len() && Instant::now() < deadline {
            rx.wait(Some(Instant::now() + Duration::from_millis(50)), &mut ready)
                .unwrap();
            while let Some((meta, data)) = rx.poll_recv() {
                assert_eq!(meta.stride, 1000, "{kind}: stride is the GSO segment size");
                assert_eq!(meta.ecn, Some(0b10), "{kind}: ECT(0) survives");
                for datagram in data.chunks(meta.stride) {
                    assert_eq!(datagram.len(), 1000);
                    got.extend_from_slice(datagram);
                }
            }
        }
        assert_eq!(got, expected, "{kind}: every segment, in order");
        let c = rx.counters();
        println!("{tx_kind} -> {kind} GRO: {c:?}");
        assert!(c.gro_batches > 0, "{kind}: no multi-segment batch: {c:?}");
        assert_eq!(c.datagrams_received, 200);
        assert_eq!(c.gro_segments % 10, 0, "whole batches coalesce on loopback");
    }
}

#[test]
fn waker_ends_a_sleeping_wait_from_another_thread() {
    for kind in KINDS {
        let (waker_tx, waker_rx) = mpsc::channel();
        let sleeper = std::thread::spawn(move || {
            // Built on the thread that uses it: io_uring binds to its first user.
            let Some(mut io) = open(kind, V4) else {
                waker_tx.send(None).unwrap();
                return None;
            };
            waker_tx.send(Some(io.waker())).unwrap();
            let mut ready = Vec::new();
            let outcome = io
                .wait(Some(Instant::now() + Duration::from_secs(10)), &mut ready)
                .unwrap();
            Some((outcome, Instant::now()))
        });
        let Some(waker) = waker_rx.recv().unwrap() else {
            continue;
        };
        std::thread::sleep(Duration::from_millis(50));
        let woke_at = Instant::now();
        waker.wake();
        waker.wake(); // coalesces
        let (outcome, returned_at) = sleeper.join().unwrap().unwrap();
        assert!(outcome.woken, "{kind}: {outcome:?}");
        assert!(!outcome.timed_out);
        let latency = returned_at.saturating_duration_since(woke_at);
        println!("{kind}: waker latency {latency:?}");
        // Generous for a loaded CI machine; a broken waker sleeps the full 10 s.
        assert!(latency < Duration::from_millis(500), "{kind}: {latency:?}");
    }
}

#[test]
fn wait_returns_at_the_deadline() {
    for kind in KINDS {
        let Some(mut io) = open(kind, V4) else {
            continue;
        };
        let mut ready = Vec::new();
        let start = Instant::now();
        let outcome = io
            .wait(Some(start + Duration::from_millis(50)), &mut ready)
            .unwrap();
        let took = start.elapsed();
        assert!(outcome.timed_out, "{kind}: {outcome:?}");
        assert!(!outcome.received && !outcome.woken);
        assert!(took >= Duration::from_millis(50), "{kind}: early, {took:?}");
        assert!(took < Duration::from_millis(1000), "{kind}: late, {took:?}");
        // A deadline in the past returns at once.
        let start = Instant::now();
        assert!(io.wait(Some(start), &mut ready).unwrap().timed_out);
        assert!(start.elapsed() < Duration::from_millis(50));
        assert!(ready.is_empty());
    }
}

#[test]
fn watched_fd_is_reported_with_its_token() {
    for kind in KINDS {
        let Some(mut io) = open(kind, V4) else {
            continue;
        };
        let (a, b) = UnixDatagram::pair().unwrap();
        io.watch_fd(a.as_raw_fd(), 7, Interest::Readable).unwrap();
        assert!(io.watch_fd(a.as_raw_fd(), 7, Interest::Readable).is_err());
        let mut ready = Vec::new();
        let outcome = io
            .wait(Some(Instant::now() + Duration::from_millis(30)), &mut ready)
            .unwrap();
        assert!(
            ready.is_empty() && outcome.timed_out,
            "{kind}: idle fd reported"
        );

        b.send(b"frame").unwrap();
        let start = Instant::now();
        io.wait(Some(Instant::now() + Duration::from_secs(2)), &mut ready)
            .unwrap();
        assert_eq!(ready, [7], "{kind}");
        assert!(start.elapsed() < Duration::from_millis(500));
        let mut drained = [0u8; 16];
        assert_eq!(a.recv(&mut drained).unwrap(), 5);

        ready.clear();
        io.unwatch_fd(7).unwrap();
        assert!(io.unwatch_fd(7).is_err());
        b.send(b"again").unwrap();
        io.wait(Some(Instant::now() + Duration::from_millis(30)), &mut ready)
            .unwrap();
        assert!(ready.is_empty(), "{kind}: unwatched fd reported");
    }
}

#[test]
fn io_uring_probe_result_and_backend_selection() {
    let probe = uring::probe();
    match &probe {
        Ok(()) => println!("io_uring probe: supported"),
        Err(reason) => println!("io_uring probe: unsupported: {reason}"),
    }
    let best = open_best(SocketAddr::new(V4, 0)).unwrap();
    let expected = if probe.is_ok() {
        BackendKind::Uring
    } else {
        BackendKind::Portable
    };
    assert_eq!(best.kind(), expected);
    if probe.is_ok() {
        let b = UringUdp::bind(SocketAddr::new(V4, 0), &UringConfig::default()).unwrap();
        println!("io_uring ring mode: {}", b.mode());
    }
}

#[test]
fn io_uring_backend_moves_to_its_thread_before_first_use() {
    let Some(mut io) = open(BackendKind::Uring, V4) else {
        return;
    };
    let to = io.local_addr();
    let handle = std::thread::spawn(move || {
        let mut buf = io.send_buffer();
        buf.extend_from_slice(b"hello self");
        io.queue_send(
            TransmitMeta {
                destination: to,
                src_ip: None,
                ecn: None,
                segment_size: None,
                len: buf.len(),
            },
            buf,
        );
        io.flush().unwrap();
        let mut ready = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            io.wait(Some(deadline), &mut ready).unwrap();
            if let Some((_, data)) = io.poll_recv() {
                return data;
            }
            assert!(Instant::now() < deadline, "own datagram never arrived");
        }
    });
    assert_eq!(&handle.join().unwrap()[..], b"hello self");
}

#[test]
fn io_uring_rearms_the_receive_when_its_buffers_run_out() {
    if let Err(reason) = uring::probe() {
        println!("SKIP io_uring: {reason}");
        return;
    }
    let config = UringConfig {
        recv_buffers: 2,
        ..UringConfig::default()
    };
    let mut rx = UringUdp::bind(SocketAddr::new(V4, 0), &config).unwrap();
    let mut ready = Vec::new();
    // Arm the receive, then let 50 datagrams pile up: the two buffers run out after two, the
    // multishot ends with ENOBUFS, and the rest must still arrive after the re-arm.
    rx.wait(Some(Instant::now()), &mut ready).unwrap();
    let plain = UdpSocket::bind((V4, 0)).unwrap();
    for seq in 0..50u32 {
        let mut buf = Vec::new();
        write_payload(&mut buf, seq, size_of_seq(seq));
        plain.send_to(&buf, rx.local_addr()).unwrap();
    }
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(2);
    while got.len() < 50 && Instant::now() < deadline {
        rx.wait(Some(Instant::now() + Duration::from_millis(20)), &mut ready)
            .unwrap();
        while let Some((_, data)) = rx.poll_recv() {
            got.push(verify_payload(&data).expect("corrupt datagram"));
        }
    }
    assert_eq!(got, (0..50).collect::<Vec<_>>(), "all datagrams, in order");
    assert_eq!(rx.counters().recv_errors, 0);
    println!("multishot receive armed {} times", rx.receive_arms());
    assert!(
        rx.receive_arms() > 1,
        "the buffers never ran out: the test proved nothing"
    );
}

#[test]
fn source_address_and_dst_ip_pass_through() {
    for kind in KINDS {
        let (Some(mut tx), Some(mut rx)) = (open(kind, V4), open(kind, V4)) else {
            continue;
        };
        let mut buf = tx.send_buffer();
        buf.extend_from_slice(b"pinned source");
        tx.queue_send(
            TransmitMeta {
                destination: rx.local_addr(),
                src_ip: Some(V4),
                ecn: Some(0b01),
                segment_size: None,
                len: buf.len(),
            },
            buf,
        );
        tx.flush().unwrap();
        let mut ready = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(2);
        let (meta, data) = loop {
            rx.wait(Some(Instant::now() + Duration::from_millis(20)), &mut ready)
                .unwrap();
            if let Some(got) = rx.poll_recv() {
                break got;
            }
            assert!(Instant::now() < deadline, "{kind}: nothing arrived");
        };
        assert_eq!(&data[..], b"pinned source");
        assert_eq!(meta.source, tx.local_addr(), "{kind}");
        assert_eq!(meta.dst_ip, Some(V4), "{kind}");
        assert_eq!(meta.ecn, Some(0b01), "{kind}: ECT(1)");
        assert_eq!((meta.len, meta.stride), (13, 13));
    }
}

/// Receives one batch within two seconds.
fn recv_one(io: &mut dyn UdpBackend) -> (lanparty_datapath::io::RecvMeta, Vec<u8>) {
    let mut ready = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        io.wait(Some(Instant::now() + Duration::from_millis(20)), &mut ready)
            .unwrap();
        if let Some((meta, data)) = io.poll_recv() {
            return (meta, data.to_vec());
        }
        assert!(Instant::now() < deadline, "{}: nothing arrived", io.kind());
    }
}

fn send_one(io: &mut dyn UdpBackend, to: SocketAddr, ecn: u8, payload: &[u8]) {
    let mut buf = io.send_buffer();
    buf.extend_from_slice(payload);
    let meta = TransmitMeta {
        destination: to,
        src_ip: None,
        ecn: Some(ecn),
        segment_size: None,
        len: buf.len(),
    };
    io.queue_send(meta, buf);
    io.flush().unwrap();
}

#[test]
fn dual_stack_socket_speaks_plain_ipv4_with_ecn() {
    if UdpSocket::bind((Ipv6Addr::UNSPECIFIED, 0)).is_err() {
        println!("SKIP dual stack: no IPv6 here");
        return;
    }
    for kind in KINDS {
        let (Some(mut server), Some(mut peer)) = (
            open(kind, IpAddr::V6(Ipv6Addr::UNSPECIFIED)),
            open(kind, V4),
        ) else {
            continue;
        };
        let server_v4 = SocketAddr::new(V4, server.local_addr().port());
        send_one(peer.as_mut(), server_v4, 0b10, b"hello over v4");
        let (meta, data) = recv_one(server.as_mut());
        assert_eq!(data, b"hello over v4");
        assert_eq!(
            meta.source,
            peer.local_addr(),
            "{kind}: v4 source, not v4-mapped"
        );
        assert_eq!(meta.dst_ip, Some(V4), "{kind}");
        assert_eq!(meta.ecn, Some(0b10), "{kind}");

        send_one(server.as_mut(), meta.source, 0b01, b"reply");
        let (meta, data) = recv_one(peer.as_mut());
        assert_eq!(data, b"reply");
        assert_eq!(meta.source, server_v4, "{kind}");
        assert_eq!(meta.ecn, Some(0b01), "{kind}: ECN on a v4-mapped send");
    }
}

#[test]
fn send_errors_are_counted_not_returned() {
    for kind in KINDS {
        let Some(mut io) = open(kind, V4) else {
            continue;
        };
        // An IPv4 socket cannot reach an IPv6 address: the kernel rejects the send.
        send_one(io.as_mut(), SocketAddr::new(V6, 9), 0, b"nowhere");
        let mut ready = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(1);
        while io.counters().send_errors == 0 && Instant::now() < deadline {
            io.wait(Some(Instant::now() + Duration::from_millis(10)), &mut ready)
                .unwrap();
        }
        let c = io.counters();
        assert_eq!((c.send_errors, c.datagrams_sent), (1, 0), "{kind}: {c:?}");
        // The loop carries on: a good send still works.
        let plain = UdpSocket::bind((V4, 0)).unwrap();
        plain
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        send_one(io.as_mut(), plain.local_addr().unwrap(), 0, b"fine");
        let mut got = [0u8; 8];
        assert_eq!(plain.recv(&mut got).unwrap(), 4, "{kind}");
    }
}

/// `net.core.rmem_max` / `wmem_max`: the most `SO_RCVBUF` / `SO_SNDBUF` may grant.
fn sysctl_bytes(name: &str) -> usize {
    std::fs::read_to_string(format!("/proc/sys/net/core/{name}"))
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(usize::MAX)
}

#[test]
fn backends_apply_the_configured_socket_buffer_size() {
    let (rmem_max, wmem_max) = (sysctl_bytes("rmem_max"), sysctl_bytes("wmem_max"));
    let uring_ok = match uring::probe() {
        Ok(()) => true,
        Err(reason) => {
            println!("SKIP io_uring part: {reason}");
            false
        }
    };
    for asked in [64usize << 10, 256 << 10, 1 << 20, 4 << 20] {
        let mut checks: Vec<(&str, Box<dyn std::os::fd::AsFd>)> = vec![(
            "portable",
            Box::new(PortableUdp::bind_with(SocketAddr::new(V4, 0), asked).unwrap()),
        )];
        if uring_ok {
            let config = UringConfig {
                socket_buffer: asked,
                ..UringConfig::default()
            };
            checks.push((
                "io_uring",
                Box::new(UringUdp::bind(SocketAddr::new(V4, 0), &config).unwrap()),
            ));
        }
        for (name, backend) in &checks {
            let fd = backend.as_fd();
            let sock = socket2::SockRef::from(&fd);
            let rcv = sock.recv_buffer_size().unwrap();
            let snd = sock.send_buffer_size().unwrap();
            // Linux grants min(asked, cap) and reports twice that (bookkeeping included).
            assert!(
                rcv >= asked.min(rmem_max),
                "{name}: SO_RCVBUF {rcv} for {asked} asked (rmem_max {rmem_max})"
            );
            assert!(
                rcv <= 2 * asked,
                "{name}: SO_RCVBUF {rcv} is more than {asked} asked allows"
            );
            assert!(
                snd >= asked.min(wmem_max),
                "{name}: SO_SNDBUF {snd} for {asked} asked (wmem_max {wmem_max})"
            );
            assert!(
                snd <= 2 * asked,
                "{name}: SO_SNDBUF {snd} is more than {asked} asked allows"
            );
        }
    }
    // The default is the documented constant.
    let best = lanparty_datapath::io::open_best_with(SocketAddr::new(V4, 0), 128 << 10).unwrap();
    assert_eq!(best.local_addr().ip(), V4);
    let default = PortableUdp::bind(SocketAddr::new(V4, 0)).unwrap();
    let rcv = socket2::SockRef::from(&default).recv_buffer_size().unwrap();
    let asked = lanparty_datapath::io::SOCKET_BUFFER_BYTES;
    assert!(
        rcv >= asked.min(rmem_max) && rcv <= 2 * asked,
        "default SO_RCVBUF {rcv}"
    );
}
