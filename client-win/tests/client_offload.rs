//! The Linux adapter's offloads end to end: real TCP transfers of a few MB between the client's
//! namespace and the party LAN's host, through a TAP or TUN opened with `IFF_VNET_HDR` and
//! `TUNSETOFFLOAD`. The data must arrive intact both ways, the adapter must have read
//! super-frames (fewer reads than segments), every frame the room saw must fit the room's
//! datagram budget whole, and frames from the room must have been coalesced into fewer writes.
//!
//! See `client_linux.rs` for the party (scripted relay, LAN namespace, dnsmasq). These tests
//! need root and dnsmasq; without them they print a skip line.
#![cfg(target_os = "linux")]

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, Shutdown, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use common::{LAN_HOST, Party};
use lanparty_client::adapter::AdapterKind;

/// Bytes each way.
const TRANSFER: usize = 4 * 1024 * 1024;
/// The scripted relay's budget (1162) less the 1-byte whole-frame header.
const MAX_WHOLE_FRAME: usize = 1161;
const IO_TIMEOUT: Duration = Duration::from_secs(30);

fn pattern(len: usize, salt: u8) -> Vec<u8> {
    (0..len)
        .map(|i| ((i * 131 + i / 977) as u8).wrapping_add(salt))
        .collect()
}

/// Sends `data` on `stream` in 64 KB writes and half-closes it.
fn send_all(mut stream: TcpStream, data: &[u8]) {
    stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    for chunk in data.chunks(64 * 1024) {
        stream.write_all(chunk).expect("the transfer keeps going");
    }
    stream.shutdown(Shutdown::Write).unwrap();
}

/// Reads `stream` to its end (bounded in time and size).
fn receive_all(mut stream: TcpStream) -> Vec<u8> {
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut got = Vec::with_capacity(TRANSFER);
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = stream.read(&mut buf).expect("the transfer keeps going");
        if n == 0 || got.len() > 2 * TRANSFER {
            return got;
        }
        got.extend_from_slice(&buf[..n]);
    }
}

/// Uploads then downloads `len` bytes between the client's namespace and the LAN host at
/// `host:port`, checking every byte; returns the two durations.
fn transfer_both_ways(
    party: &Party,
    client: &common::Client,
    host: IpAddr,
    port: u16,
    len: usize,
) -> (Duration, Duration) {
    let listener = party
        .lan()
        .run_in(move || TcpListener::bind((host, port)).unwrap())
        .unwrap();

    // Upload: the client's kernel hands the adapter super-frames.
    let up = pattern(len, 1);
    let started = Instant::now();
    let receiver = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        (receive_all(stream), listener)
    });
    let stream = client
        .ns
        .run_in(move || TcpStream::connect((host, port)).unwrap())
        .unwrap();
    send_all(stream, &up);
    let (got, listener) = receiver.join().unwrap();
    assert!(
        got == up,
        "upload to {host} corrupted: {} of {} bytes",
        got.len(),
        up.len()
    );
    let upload_time = started.elapsed();

    // Download: the room's segments are written to the adapter coalesced.
    let down = pattern(len, 7);
    let to_send = down.clone();
    let started = Instant::now();
    let sender = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        send_all(stream, &to_send);
    });
    let stream = client
        .ns
        .run_in(move || TcpStream::connect((host, port)).unwrap())
        .unwrap();
    let got = receive_all(stream);
    sender.join().unwrap();
    assert!(
        got == down,
        "download from {host} corrupted: {} of {} bytes",
        got.len(),
        down.len()
    );
    (upload_time, started.elapsed())
}

fn offloads_carry_tcp_both_ways(kind: AdapterKind, test: &str, port: u16) {
    let Some(party) = Party::start(test) else {
        return;
    };
    let mut client = party.client(kind, "02:00:5e:10:00:21");
    let addr = client.wait_for_lease(Duration::from_secs(20));
    let (upload_time, download_time) =
        transfer_both_ways(&party, &client, IpAddr::V4(LAN_HOST), port, TRANSFER);

    // IPv6 too (TSO6 reads, TCPV6 coalesced writes), on unique local addresses.
    let lan_v6 = party.add_v6(&client);
    let (up6, down6) = transfer_both_ways(&party, &client, IpAddr::V6(lan_v6), port, TRANSFER / 4);
    eprintln!("{test}: IPv6 up {up6:?}, down {down6:?}");

    let frames = party.relay_log().frames_from_client();
    let largest = frames.iter().map(Vec::len).max().unwrap_or(0);
    let engine = client.stop();
    let dev = engine.device();
    let c = dev.offload_counters();
    let loop_counters = engine.counters();
    eprintln!(
        "{test}: {addr}, up {upload_time:?}, down {download_time:?}; {c:?}; {loop_counters:?}; \
         largest frame into the room {largest}"
    );
    assert!(dev.has_offloads(), "the adapter opened with a vnet header");
    assert!(c.super_reads > 0, "no super-frame was read: {c:?}");
    assert!(
        c.reads * 2 < c.segments,
        "reads were not cut into many segments: {c:?}"
    );
    assert_eq!(c.dropped, 0, "{c:?}");
    assert_eq!(c.bad_checksum, 0, "{c:?}");
    assert!(
        largest <= MAX_WHOLE_FRAME,
        "a {largest}-byte frame went into the room: segments must fit its budget"
    );
    assert!(
        c.merged > 0 && c.writes + c.merged == loop_counters.to_adapter,
        "writes were not coalesced: {c:?}, {loop_counters:?}"
    );
    let uplink = engine.uplink().counters();
    assert_eq!(uplink.dropped_oversize, 0, "{uplink:?}");
    drop(engine);
}

#[test]
fn client_tap_offloads_cut_super_frames_to_the_budget_and_coalesce_writes() {
    offloads_carry_tcp_both_ways(
        AdapterKind::Tap,
        "client_tap_offloads_cut_super_frames_to_the_budget_and_coalesce_writes",
        5201,
    );
}

#[test]
fn client_tun_offloads_do_the_same_through_the_emulator() {
    offloads_carry_tcp_both_ways(
        AdapterKind::Tun,
        "client_tun_offloads_do_the_same_through_the_emulator",
        5202,
    );
}

#[test]
fn without_offloads_every_packet_costs_a_read() {
    let test = "without_offloads_every_packet_costs_a_read";
    let Some(party) = Party::start(test) else {
        return;
    };
    let mut spec = common::ClientSpec::new(
        AdapterKind::Tap,
        "02:00:5e:10:00:22",
        party.relay_addr(),
        party.pin(),
    );
    spec.offloads = false;
    let mut client = spec.spawn();
    client.wait_for_lease(Duration::from_secs(20));
    let listener = party
        .lan()
        .run_in(|| TcpListener::bind((LAN_HOST, 5203)).unwrap())
        .unwrap();
    let receiver = std::thread::spawn(move || receive_all(listener.accept().unwrap().0));
    let stream = client
        .ns
        .run_in(|| TcpStream::connect((LAN_HOST, 5203)).unwrap())
        .unwrap();
    let data = pattern(TRANSFER / 4, 3);
    send_all(stream, &data);
    assert!(receiver.join().unwrap() == data);
    let engine = client.stop();
    let c = engine.device().offload_counters();
    assert!(!engine.device().has_offloads());
    assert_eq!(c.super_reads, 0);
    assert_eq!(c.reads, c.segments, "{c:?}");
    assert_eq!(c.merged, 0);
}
