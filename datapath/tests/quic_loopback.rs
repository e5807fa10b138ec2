//! The QUIC driver over real sockets on 127.0.0.1 and [::1], through both UDP backends
//! (io_uring and quinn-udp) and mixed pairs: pinned handshakes, a wrong pin, 100 000 mixed-size
//! DATAGRAMs with verified contents and accounted losses, a mebibyte on the control stream,
//! GSO/GRO in use, and a burst larger than the DATAGRAM buffer through `Runner::send_datagram`.
//! Each side runs the `Runner` loop on its own thread (the burst test turns both on one);
//! everything is bounded in time. Linux only (the io_uring backend is Linux-only).
#![cfg(target_os = "linux")]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use lanparty_datapath::io::{
    BackendKind, IoCounters, PortableUdp, UdpBackend, UringConfig, UringUdp,
};
use lanparty_datapath::quic::tls::{self, ClientTrust, Fingerprint, ServerIdentity};
use lanparty_datapath::quic::{
    ClientConfig, ConnId, ConnStats, ControlError, Driver, DriverConfig, Event, PeerIdentity,
};
use lanparty_datapath::runner::Runner;
use lanparty_datapath::sys::uring;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const V4: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const V6: IpAddr = IpAddr::V6(Ipv6Addr::LOCALHOST);
const URING: BackendKind = BackendKind::Uring;
const PORTABLE: BackendKind = BackendKind::Portable;

/// Every test gives up after this long (debug builds on a shared, busy machine).
const GIVE_UP: Duration = Duration::from_secs(120);

// ---------------------------------------------------------------------------------------------
// Setup: backends, identities, drivers
// ---------------------------------------------------------------------------------------------

/// Opens a backend of `kind` on `ip`, or prints why the test skips it.
fn open(kind: BackendKind, ip: IpAddr) -> Option<Box<dyn UdpBackend>> {
    let addr = SocketAddr::new(ip, 0);
    let opened: Result<Box<dyn UdpBackend>, String> = match kind {
        BackendKind::Uring => match uring::probe() {
            Err(reason) => Err(reason.to_string()),
            Ok(()) => UringUdp::bind(addr, &UringConfig::default())
                .map(|b| Box::new(b) as Box<dyn UdpBackend>)
                .map_err(|e| e.to_string()),
        },
        BackendKind::Portable => PortableUdp::bind(addr)
            .map(|b| Box::new(b) as Box<dyn UdpBackend>)
            .map_err(|e| e.to_string()),
    };
    opened
        .map_err(|reason| println!("SKIP {kind} backend on {ip}: {reason}"))
        .ok()
}

/// A state directory removed on drop, even when the test fails.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("lp-quic-loopback-{}-{n}", std::process::id()));
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A server runner with a generated identity, its fingerprint, and a client runner.
struct Pair {
    server: Runner,
    client: Runner,
    fingerprint: Fingerprint,
    _dir: TempDir,
}

fn pair(server_kind: BackendKind, client_kind: BackendKind, ip: IpAddr) -> Option<Pair> {
    let dir = TempDir::new();
    let identity = ServerIdentity::load_or_generate(&dir.0, &["localhost".to_owned()]).unwrap();
    let fingerprint = identity.fingerprint();
    let crypto = tls::server_crypto(identity).unwrap();
    let server_io = open(server_kind, ip)?;
    let client_io = open(client_kind, ip)?;
    let server = Runner::new(
        Driver::new(DriverConfig::default(), Some(crypto)),
        server_io,
    );
    let client = Runner::new(Driver::new(DriverConfig::default(), None), client_io);
    Some(Pair {
        server,
        client,
        fingerprint,
        _dir: dir,
    })
}

fn pinned(fingerprint: Fingerprint) -> ClientConfig {
    tls::client_config(&ClientTrust::Pinned(fingerprint)).unwrap()
}

// ---------------------------------------------------------------------------------------------
// The loop each side runs on its own thread
// ---------------------------------------------------------------------------------------------

/// What one side of a test does inside the `Runner` loop.
trait App: Send + 'static {
    /// One event from the driver.
    fn event(&mut self, driver: &mut Driver, now: Instant, event: Event);
    /// Queues what the side wants to send; returns `true` to run the next turn at once.
    fn turn(&mut self, _driver: &mut Driver, _now: Instant) -> bool {
        false
    }
    /// The side has finished (its last transmit has been flushed when this is checked).
    fn done(&self) -> bool;
}

/// What a finished side hands back.
struct Finished<A> {
    app: A,
    io: IoCounters,
    kind: BackendKind,
}

/// Runs `app` on `runner` until it is done, `stop` is set, or [`GIVE_UP`] passes (a panic).
fn spawn<A: App>(
    name: &'static str,
    mut runner: Runner,
    mut app: A,
    stop: Arc<AtomicBool>,
) -> thread::JoinHandle<Finished<A>> {
    thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            let give_up = Instant::now() + GIVE_UP;
            loop {
                let now = Instant::now();
                assert!(now < give_up, "{name}: did not finish within {GIVE_UP:?}");
                runner.receive(now);
                while let Some(event) = runner.driver().poll_event() {
                    app.event(runner.driver(), now, event);
                }
                let busy = app.turn(runner.driver(), now);
                runner.transmit(now).expect("transmit");
                if app.done() || stop.load(Ordering::Acquire) {
                    break;
                }
                let deadline = if busy {
                    now
                } else {
                    now + Duration::from_millis(50)
                };
                runner.wait(Some(deadline)).expect("wait");
            }
            Finished {
                app,
                io: runner.io_counters(),
                kind: runner.backend_kind(),
            }
        })
        .unwrap()
}

/// Runs a server and a client app to completion; the server is stopped once the client is done
/// (it may never hear about a connection that failed during the handshake).
fn run<S: App, C: App>(pair: Pair, server: S, client: C) -> (Finished<S>, Finished<C>) {
    let stop = Arc::new(AtomicBool::new(false));
    let waker = pair.server.waker();
    let server = spawn("server", pair.server, server, Arc::clone(&stop));
    let client = spawn(
        "client",
        pair.client,
        client,
        Arc::new(AtomicBool::new(false)),
    );
    let client = client.join();
    // Give the server a moment to hear the close, then stop it whatever happened.
    let grace = Instant::now() + Duration::from_secs(2);
    while !server.is_finished() && Instant::now() < grace {
        thread::sleep(Duration::from_millis(5));
    }
    stop.store(true, Ordering::Release);
    waker.wake();
    let server = server.join().expect("server thread panicked");
    (server, client.expect("client thread panicked"))
}

/// Connects on the first turn.
struct Dialer {
    server: SocketAddr,
    config: Option<ClientConfig>,
    conn: Option<ConnId>,
}

impl Dialer {
    fn new(server: SocketAddr, config: ClientConfig) -> Self {
        Self {
            server,
            config: Some(config),
            conn: None,
        }
    }

    fn dial(&mut self, driver: &mut Driver, now: Instant) {
        if let Some(config) = self.config.take() {
            self.conn = Some(
                driver
                    .connect(now, self.server, "localhost", config)
                    .unwrap(),
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Handshakes
// ---------------------------------------------------------------------------------------------

/// Records what happens to the one connection of a side; the server closes once connected (a
/// client closing at once could beat its own handshake confirmation to the server).
struct Handshake {
    dialer: Option<Dialer>,
    identity: Option<PeerIdentity>,
    closed: Option<String>,
}

impl Handshake {
    fn server() -> Self {
        Self {
            dialer: None,
            identity: None,
            closed: None,
        }
    }

    fn client(server: SocketAddr, config: ClientConfig) -> Self {
        Self {
            dialer: Some(Dialer::new(server, config)),
            ..Self::server()
        }
    }
}

impl App for Handshake {
    fn event(&mut self, driver: &mut Driver, now: Instant, event: Event) {
        match event {
            Event::Connected { conn, identity, .. } => {
                self.identity = Some(identity);
                if self.dialer.is_none() {
                    driver.close(now, conn, 0, "bye");
                }
            }
            Event::Closed { reason, .. } => self.closed = Some(reason),
            _ => {}
        }
    }

    fn turn(&mut self, driver: &mut Driver, now: Instant) -> bool {
        if let Some(dialer) = &mut self.dialer {
            dialer.dial(driver, now);
        }
        false
    }

    fn done(&self) -> bool {
        self.closed.is_some()
    }
}

fn pinned_handshake(server_kind: BackendKind, client_kind: BackendKind, ip: IpAddr) {
    let Some(pair) = pair(server_kind, client_kind, ip) else {
        return;
    };
    let fingerprint = pair.fingerprint;
    let addr = pair.server.local_addr();
    let (server, client) = run(
        pair,
        Handshake::server(),
        Handshake::client(addr, pinned(fingerprint)),
    );
    assert_eq!((server.kind, client.kind), (server_kind, client_kind));
    let seen = client.app.identity.expect("client never connected");
    assert_eq!(seen.cert_fingerprint, Some(fingerprint));
    assert_eq!(seen.server_name.as_deref(), Some("localhost"));
    let server_seen = server
        .app
        .identity
        .expect("server never saw the connection");
    assert_eq!(server_seen.server_name.as_deref(), Some("localhost"));
    assert!(
        server.app.closed.unwrap().contains("bye"),
        "server closes locally"
    );
    let reason = client.app.closed.expect("client never heard the close");
    assert!(reason.contains("bye"), "client close reason: {reason}");
}

#[test]
fn pinned_handshake_succeeds_on_every_backend_pair_over_ipv4_and_ipv6() {
    for ip in [V4, V6] {
        for (s, c) in [
            (URING, URING),
            (PORTABLE, PORTABLE),
            (URING, PORTABLE),
            (PORTABLE, URING),
        ] {
            pinned_handshake(s, c, ip);
        }
    }
}

fn wrong_pin(kind: BackendKind, ip: IpAddr) {
    let Some(pair) = pair(kind, kind, ip) else {
        return;
    };
    let actual = pair.fingerprint;
    let expected = Fingerprint([0x42; 32]);
    let addr = pair.server.local_addr();
    let (server, client) = run(
        pair,
        Handshake::server(),
        Handshake::client(addr, pinned(expected)),
    );
    assert!(client.app.identity.is_none(), "client must not connect");
    assert!(server.app.identity.is_none(), "server must not connect");
    let reason = client.app.closed.expect("client saw no close");
    assert!(
        reason.contains(&expected.to_string()) && reason.contains(&actual.to_string()),
        "close reason names both fingerprints: {reason}"
    );
}

#[test]
fn handshake_with_a_wrong_pin_fails_naming_both_fingerprints() {
    wrong_pin(URING, V4);
    wrong_pin(PORTABLE, V6);
}

// ---------------------------------------------------------------------------------------------
// DATAGRAMs
// ---------------------------------------------------------------------------------------------

fn checksum(bytes: &[u8]) -> u32 {
    // FNV-1a: cheap, order-sensitive.
    bytes.iter().fold(0x811c_9dc5u32, |h, &b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// Payload size for `seq`: spread over 64..=`max`.
fn size_of_seq(seq: u32, max: usize) -> usize {
    64 + (seq as usize).wrapping_mul(7919) % (max - 64 + 1)
}

/// `[seq u32][checksum u32][filler derived from seq]`, `size` bytes.
fn payload(seq: u32, size: usize) -> Bytes {
    let mut buf = Vec::with_capacity(size);
    buf.extend_from_slice(&seq.to_le_bytes());
    buf.extend_from_slice(&[0; 4]);
    buf.extend((8..size).map(|i| (seq as usize).wrapping_mul(31).wrapping_add(i) as u8));
    let sum = checksum(&buf[8..]) ^ seq;
    buf[4..8].copy_from_slice(&sum.to_le_bytes());
    Bytes::from(buf)
}

/// The sequence number of an intact payload.
fn verify(data: &[u8]) -> Option<u32> {
    let seq = u32::from_le_bytes(data.get(..4)?.try_into().ok()?);
    let sum = u32::from_le_bytes(data.get(4..8)?.try_into().ok()?);
    let filler_ok = data[8..]
        .iter()
        .enumerate()
        .all(|(i, &b)| b == (seq as usize).wrapping_mul(31).wrapping_add(i + 8) as u8);
    (filler_ok && checksum(&data[8..]) ^ seq == sum).then_some(seq)
}

/// Sends `count` DATAGRAMs, never more than the send buffer has room for, then says "end" on
/// the control stream and waits for the receiver to close.
struct Sender {
    dialer: Dialer,
    /// Every datagram this size instead of mixed sizes.
    fixed_size: Option<usize>,
    count: u32,
    next: u32,
    end_sent: bool,
    stats: Option<ConnStats>,
    dropped_events: u64,
    closed: bool,
}

impl App for Sender {
    fn event(&mut self, _driver: &mut Driver, _now: Instant, event: Event) {
        match event {
            Event::DatagramsDropped { count, .. } => self.dropped_events += count,
            Event::Closed { .. } => self.closed = true,
            _ => {}
        }
    }

    fn turn(&mut self, driver: &mut Driver, now: Instant) -> bool {
        self.dialer.dial(driver, now);
        let Some(conn) = self.dialer.conn else {
            return false;
        };
        if let Some(stats) = driver.stats(conn) {
            self.stats = Some(stats);
        }
        let (Some(max), Some(mut space)) = (
            driver.max_datagram_size(conn),
            driver.datagram_send_space(conn),
        ) else {
            return false;
        };
        let mut queued = 0;
        // A bounded number per turn, so ACKs are read in between.
        while self.next < self.count && queued < 1024 {
            let size = self
                .fixed_size
                .map_or_else(|| size_of_seq(self.next, max), |s| s.min(max));
            if size > space {
                break;
            }
            driver
                .send_datagram(conn, payload(self.next, size))
                .unwrap();
            space = driver.datagram_send_space(conn).unwrap_or(0);
            self.next += 1;
            queued += 1;
        }
        if self.next == self.count && !self.end_sent {
            driver.write_control(conn, b"end").unwrap();
            self.end_sent = true;
        }
        queued > 0 && self.next < self.count
    }

    fn done(&self) -> bool {
        self.closed
    }
}

/// Verifies every DATAGRAM; closes once all arrived, or a second after the sender's "end".
struct Receiver {
    count: u32,
    seen: Vec<bool>,
    received: u32,
    conn: Option<ConnId>,
    end_at: Option<Instant>,
    stats: Option<ConnStats>,
    closed: bool,
}

impl Receiver {
    fn new(count: u32) -> Self {
        Self {
            count,
            seen: vec![false; count as usize],
            received: 0,
            conn: None,
            end_at: None,
            stats: None,
            closed: false,
        }
    }
}

impl App for Receiver {
    fn event(&mut self, _driver: &mut Driver, now: Instant, event: Event) {
        match event {
            Event::Connected { conn, .. } => self.conn = Some(conn),
            Event::Datagram { bytes, .. } => {
                let seq = verify(&bytes).expect("corrupt datagram");
                assert!(seq < self.count, "datagram {seq} was never sent");
                assert!(!self.seen[seq as usize], "duplicate datagram {seq}");
                self.seen[seq as usize] = true;
                self.received += 1;
            }
            Event::ControlBytes { bytes, .. } => {
                assert_eq!(&bytes[..], b"end");
                self.end_at = Some(now);
            }
            Event::Closed { .. } => self.closed = true,
            _ => {}
        }
    }

    fn turn(&mut self, driver: &mut Driver, now: Instant) -> bool {
        let Some(conn) = self.conn else {
            return false;
        };
        if let Some(stats) = driver.stats(conn) {
            self.stats = Some(stats);
        }
        let late = self
            .end_at
            .is_some_and(|t| now > t + Duration::from_secs(1));
        if !self.closed && (self.received == self.count || late) {
            driver.close(now, conn, 0, "done");
        }
        false
    }

    fn done(&self) -> bool {
        self.closed
    }
}

/// Most DATAGRAMs one lost packet can take with it: a 1452-byte packet of 64-byte frames.
const DATAGRAMS_PER_PACKET: u64 = 1452 / 64;

/// Sends `count` datagrams from a client on `client_kind` to a server on `server_kind`; checks
/// contents and that every loss is counted and bounded. Returns both sides' I/O counters.
fn datagrams(
    server_kind: BackendKind,
    client_kind: BackendKind,
    ip: IpAddr,
    count: u32,
) -> Option<(IoCounters, IoCounters)> {
    transfer(server_kind, client_kind, ip, count, None).map(|(tx, rx, _)| (tx, rx))
}

/// [`datagrams`] with an optional fixed size; also returns the receiver's connection stats.
fn transfer(
    server_kind: BackendKind,
    client_kind: BackendKind,
    ip: IpAddr,
    count: u32,
    fixed_size: Option<usize>,
) -> Option<(IoCounters, IoCounters, ConnStats)> {
    let pair = pair(server_kind, client_kind, ip)?;
    let addr = pair.server.local_addr();
    let sender = Sender {
        dialer: Dialer::new(addr, pinned(pair.fingerprint)),
        fixed_size,
        count,
        next: 0,
        end_sent: false,
        stats: None,
        dropped_events: 0,
        closed: false,
    };
    let started = Instant::now();
    let (rx, tx) = run(pair, Receiver::new(count), sender);
    let elapsed = started.elapsed();
    assert_eq!(tx.app.next, count, "sender did not send everything");
    let tx_stats = tx.app.stats.expect("sender stats");
    let rx_stats = rx.app.stats.expect("receiver stats");
    let missing = u64::from(count - rx.app.received);
    let counted_drops =
        tx_stats.datagrams_dropped_tx + rx_stats.datagrams_dropped_rx + tx.app.dropped_events;
    let accounted = counted_drops + tx_stats.lost_packets * DATAGRAMS_PER_PACKET;
    println!(
        "{client_kind} -> {server_kind} on {ip}: {} of {count} datagrams in {elapsed:?}; \
         missing {missing}, dropped tx {} rx {}, lost packets {} of {}; \
         sender io {:?}; receiver io {:?}",
        rx.app.received,
        tx_stats.datagrams_dropped_tx,
        rx_stats.datagrams_dropped_rx,
        tx_stats.lost_packets,
        tx_stats.sent_packets,
        tx.io,
        rx.io,
    );
    assert!(
        missing <= accounted,
        "{missing} datagrams vanished but only {accounted} are accounted for"
    );
    assert!(
        missing <= u64::from(count) / 100,
        "{missing} of {count} datagrams lost despite pacing"
    );
    assert_eq!(
        tx_stats.datagrams_dropped_tx, 0,
        "pacing by send space never drops"
    );
    Some((tx.io, rx.io, rx_stats))
}

#[test]
fn hundred_thousand_datagrams_through_io_uring_use_gso_and_gro() {
    let Some((tx, rx)) = datagrams(URING, URING, V4, 100_000) else {
        return;
    };
    assert!(tx.gso_batches > 0, "sender never used GSO: {tx:?}");
    assert!(tx.gso_segments > tx.gso_batches);
    assert!(rx.gro_batches > 0, "receiver never saw a GRO batch: {rx:?}");
    assert!(rx.gro_segments > rx.gro_batches);
}

#[test]
fn hundred_thousand_datagrams_through_quinn_udp() {
    let Some((tx, _rx)) = datagrams(PORTABLE, PORTABLE, V6, 100_000) else {
        return;
    };
    assert!(tx.gso_batches > 0, "sender never used GSO: {tx:?}");
}

/// A GRO batch of 64-byte DATAGRAMs holds over a thousand of them; the runner must not feed
/// the driver more than its event queue holds before the loop drains it.
#[test]
fn a_flood_of_small_datagrams_is_not_dropped_by_the_receiving_loop() {
    for kind in [URING, PORTABLE] {
        if let Some((_, rx, stats)) = transfer(kind, kind, V4, 100_000, Some(64)) {
            assert_eq!(
                stats.datagrams_dropped_rx, 0,
                "{kind}: receiver dropped datagrams"
            );
            assert!(rx.gro_batches > 0, "{kind}: no GRO batch arrived: {rx:?}");
        }
    }
}

#[test]
fn datagrams_cross_between_backends() {
    datagrams(URING, PORTABLE, V6, 10_000);
    datagrams(PORTABLE, URING, V4, 10_000);
}

// ---------------------------------------------------------------------------------------------
// The control stream
// ---------------------------------------------------------------------------------------------

const CONTROL_BYTES: usize = 1 << 20;

/// Byte `i` of the control-stream test pattern (a hash, so reordering shows).
fn pattern(i: usize) -> u8 {
    ((i as u32).wrapping_mul(2_654_435_761) >> 24) as u8
}

/// Writes [`CONTROL_BYTES`] in random chunk sizes, retrying when the send buffer is full.
struct ControlWriter {
    dialer: Dialer,
    rng: StdRng,
    written: usize,
    buffer_full: u64,
    closed: bool,
}

impl App for ControlWriter {
    fn event(&mut self, _driver: &mut Driver, _now: Instant, event: Event) {
        if let Event::Closed { .. } = event {
            self.closed = true;
        }
    }

    fn turn(&mut self, driver: &mut Driver, now: Instant) -> bool {
        self.dialer.dial(driver, now);
        let Some(conn) = self.dialer.conn else {
            return false;
        };
        if driver.max_datagram_size(conn).is_none() {
            return false; // not connected yet
        }
        while self.written < CONTROL_BYTES {
            let len = self
                .rng
                .random_range(1..=16_384)
                .min(CONTROL_BYTES - self.written);
            let chunk: Vec<u8> = (self.written..self.written + len).map(pattern).collect();
            match driver.write_control(conn, &chunk) {
                Ok(()) => self.written += len,
                Err(ControlError::BufferFull { .. }) => {
                    self.buffer_full += 1;
                    break;
                }
                Err(e) => panic!("write_control: {e}"),
            }
        }
        false
    }

    fn done(&self) -> bool {
        self.closed
    }
}

/// Checks every control byte against the pattern, in order; closes after the last.
struct ControlReader {
    read: usize,
    chunks: u64,
    closed: bool,
}

impl App for ControlReader {
    fn event(&mut self, driver: &mut Driver, now: Instant, event: Event) {
        match event {
            Event::ControlBytes { conn, bytes } => {
                for (i, &b) in bytes.iter().enumerate() {
                    assert_eq!(b, pattern(self.read + i), "control byte {}", self.read + i);
                }
                self.read += bytes.len();
                self.chunks += 1;
                assert!(
                    self.read <= CONTROL_BYTES,
                    "more control bytes than written"
                );
                if self.read == CONTROL_BYTES {
                    driver.close(now, conn, 0, "got it all");
                }
            }
            Event::Closed { .. } => self.closed = true,
            _ => {}
        }
    }

    fn done(&self) -> bool {
        self.closed
    }
}

fn control_mebibyte(server_kind: BackendKind, client_kind: BackendKind, ip: IpAddr) {
    let Some(pair) = pair(server_kind, client_kind, ip) else {
        return;
    };
    let addr = pair.server.local_addr();
    let writer = ControlWriter {
        dialer: Dialer::new(addr, pinned(pair.fingerprint)),
        rng: StdRng::seed_from_u64(7),
        written: 0,
        buffer_full: 0,
        closed: false,
    };
    let reader = ControlReader {
        read: 0,
        chunks: 0,
        closed: false,
    };
    let (reader, writer) = run(pair, reader, writer);
    assert_eq!(writer.app.written, CONTROL_BYTES);
    assert_eq!(
        reader.app.read, CONTROL_BYTES,
        "reader got everything in order"
    );
    assert!(
        writer.app.buffer_full > 0,
        "a mebibyte must overflow the 64 KiB send buffer at least once (backpressure)"
    );
    println!(
        "{client_kind} -> {server_kind}: 1 MiB in {} chunks, {} full-buffer retries",
        reader.app.chunks, writer.app.buffer_full
    );
}

#[test]
fn a_mebibyte_on_the_control_stream_arrives_in_order() {
    control_mebibyte(URING, URING, V4);
    control_mebibyte(PORTABLE, PORTABLE, V6);
    control_mebibyte(PORTABLE, URING, V4);
}

// ---------------------------------------------------------------------------------------------
// Runner::send_datagram: a burst larger than the DATAGRAM buffer is sent, not dropped
// ---------------------------------------------------------------------------------------------

/// Turns both runners once (one thread, so the test controls exactly what each turn queues).
fn turn_both(server: &mut Runner, client: &mut Runner, received: &mut u64) {
    let now = Instant::now();
    for r in [&mut *server, &mut *client] {
        r.receive(now);
        while let Some(ev) = r.driver().poll_event() {
            if let Event::Datagram { .. } = ev {
                *received += 1;
            }
        }
        r.transmit(now).unwrap();
    }
    server
        .wait(Some(Instant::now() + Duration::from_millis(1)))
        .unwrap();
}

#[test]
fn a_burst_larger_than_the_datagram_buffer_goes_out_instead_of_being_dropped() {
    let Some(mut p) = pair(PORTABLE, PORTABLE, V4) else {
        return;
    };
    let server_addr = p.server.local_addr();
    let start = Instant::now();
    let conn = p
        .client
        .driver()
        .connect(start, server_addr, "localhost", pinned(p.fingerprint))
        .unwrap();
    let mut received = 0;
    while p.client.driver().datagram_send_space(conn).is_none() {
        assert!(start.elapsed() < GIVE_UP, "no handshake");
        turn_both(&mut p.server, &mut p.client, &mut received);
    }
    // Grow the congestion window: loopback loses nothing, so slow start grows it with every
    // acknowledged packet while each turn queues more than it lets out (an application-limited
    // sender would not grow it).
    let payload = Bytes::from(vec![0x5a; 1000]);
    let buffer = DriverConfig::default().transport.datagram_send_buffer;
    for _ in 0..300 {
        for _ in 0..60 {
            p.client
                .driver()
                .send_datagram(conn, payload.clone())
                .unwrap();
        }
        turn_both(&mut p.server, &mut p.client, &mut received);
    }
    for _ in 0..50 {
        turn_both(&mut p.server, &mut p.client, &mut received);
    }
    // Three buffers' worth in one turn, first straight into the driver (which keeps only the
    // newest 64 KiB), then through the runner (which sends what congestion control allows
    // before anything is dropped).
    let burst = 3 * buffer / payload.len();
    let burst_drops = |p: &mut Pair, through_runner: bool, received: &mut u64| {
        let dropped_before = p
            .client
            .driver_ref()
            .stats(conn)
            .unwrap()
            .datagrams_dropped_tx;
        let now = Instant::now();
        for _ in 0..burst {
            if through_runner {
                p.client.send_datagram(now, conn, payload.clone()).unwrap();
            } else {
                p.client
                    .driver()
                    .send_datagram(conn, payload.clone())
                    .unwrap();
            }
        }
        let dropped = p
            .client
            .driver_ref()
            .stats(conn)
            .unwrap()
            .datagrams_dropped_tx
            - dropped_before;
        let received_before = *received;
        let expected = burst as u64 - dropped;
        let deadline = Instant::now() + Duration::from_secs(10);
        while *received - received_before < expected && Instant::now() < deadline {
            turn_both(&mut p.server, &mut p.client, received);
        }
        assert_eq!(
            *received - received_before,
            expected,
            "what was not dropped arrives"
        );
        dropped
    };
    let direct = burst_drops(&mut p, false, &mut received);
    let runner = burst_drops(&mut p, true, &mut received);
    let held = buffer / payload.len();
    assert!(
        direct as usize >= burst - held - 1,
        "direct {direct} of {burst}"
    );
    assert!(
        runner * 2 < direct,
        "the runner dropped {runner} of {burst} datagrams, the driver alone {direct}"
    );
}
