//! Scenario tests of the sans-IO QUIC driver: drivers (and a raw quinn-proto peer for hostile
//! behaviour) on an in-memory network with a simulated clock, latency, loss, reordering and a
//! hook that alters datagrams in flight. No sockets, no wall clock.

use std::collections::{BTreeSet, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use lanparty_datapath::quic::tls::{self, ClientTrust, Fingerprint, ServerIdentity};
use lanparty_datapath::quic::{
    AckFrequency, CloseCause, ConnId, Driver, DriverConfig, Event, RecvMeta, TransmitMeta,
    TransportSettings, WindowBound,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

// ---------------------------------------------------------------------------------------------
// The in-memory network
// ---------------------------------------------------------------------------------------------

const SERVER: SocketAddr = addr(1, 4433);
const CLIENT: SocketAddr = addr(2, 50_001);
const CLIENT2: SocketAddr = addr(3, 50_002);
const HOSTILE: SocketAddr = addr(4, 50_003);

const fn addr(host: u8, port: u16) -> SocketAddr {
    SocketAddr::new(
        std::net::IpAddr::V4(std::net::Ipv4Addr::new(198, 18, 0, host)),
        port,
    )
}

/// What the hook returns for one datagram in flight: the payloads to deliver instead (empty
/// drops it, one copy passes it, more inject extra datagrams).
type Hook = Box<dyn FnMut(SocketAddr, SocketAddr, Vec<u8>) -> Vec<Vec<u8>>>;

struct InFlight {
    at: Instant,
    seq: u64,
    from: SocketAddr,
    to: SocketAddr,
    data: Vec<u8>,
    /// GRO stride when delivered as one batch.
    stride: usize,
    ecn: Option<u8>,
}

/// A hostile or unusual peer built directly on quinn-proto.
struct RawPeer {
    endpoint: quinn_proto::Endpoint,
    handle: quinn_proto::ConnectionHandle,
    conn: quinn_proto::Connection,
    connected: bool,
    lost: Option<quinn_proto::ConnectionError>,
}

enum Node {
    Driver {
        driver: Box<Driver>,
        events: Vec<Event>,
    },
    Raw(Box<RawPeer>),
}

struct Net {
    now: Instant,
    start: Instant,
    nodes: Vec<(SocketAddr, Node)>,
    latency: Duration,
    /// Extra random delay in `[0, jitter]`; reorders datagrams when larger than their spacing.
    jitter: Duration,
    loss: f64,
    /// Deliver GSO batches whole, as GRO batches with a stride (only without loss or hook).
    gro: bool,
    rng: StdRng,
    hook: Option<Hook>,
    in_flight: Vec<InFlight>,
    seq: u64,
    lost: u64,
    /// A rate-limited link with a FIFO buffer in front of every packet (no GRO batches).
    bottleneck: Option<Bottleneck>,
}

/// One FIFO link shared by all packets: each leaves after those queued before it, at `rate`;
/// a packet that finds `buffer` bytes queued is dropped, as a router's tail drop does.
struct Bottleneck {
    /// Only packets to this address take the link.
    to: SocketAddr,
    rate: f64,
    buffer: usize,
    /// When the last queued packet will have left.
    free_at: Instant,
    drops: u64,
    /// The longest wait any packet had in the queue since this was last reset.
    max_wait: Duration,
}

impl Bottleneck {
    fn new(to: SocketAddr, bits_per_second: f64, buffer: usize, now: Instant) -> Self {
        Self {
            to,
            rate: bits_per_second / 8.0,
            buffer,
            free_at: now,
            drops: 0,
            max_wait: Duration::ZERO,
        }
    }

    /// When a packet of `len` bytes sent at `now` has crossed the link, or `None` if dropped.
    fn pass(&mut self, now: Instant, len: usize) -> Option<Instant> {
        let wait = self.free_at.saturating_duration_since(now);
        if wait.as_secs_f64() * self.rate + len as f64 > self.buffer as f64 {
            self.drops += 1;
            return None;
        }
        self.max_wait = self.max_wait.max(wait);
        self.free_at = now.max(self.free_at) + Duration::from_secs_f64(len as f64 / self.rate);
        Some(self.free_at)
    }
}

impl Net {
    fn new(seed: u64) -> Self {
        let now = Instant::now();
        Self {
            now,
            start: now,
            nodes: Vec::new(),
            latency: Duration::from_millis(10),
            jitter: Duration::ZERO,
            loss: 0.0,
            gro: false,
            rng: StdRng::seed_from_u64(seed),
            hook: None,
            in_flight: Vec::new(),
            seq: 0,
            lost: 0,
            bottleneck: None,
        }
    }

    fn add_driver(&mut self, at: SocketAddr, driver: Driver) {
        self.nodes.push((
            at,
            Node::Driver {
                driver: Box::new(driver),
                events: Vec::new(),
            },
        ));
    }

    fn driver(&mut self, at: SocketAddr) -> &mut Driver {
        match self.node(at) {
            Node::Driver { driver, .. } => driver,
            Node::Raw(_) => panic!("{at} is a raw peer"),
        }
    }

    fn events(&mut self, at: SocketAddr) -> &mut Vec<Event> {
        match self.node(at) {
            Node::Driver { events, .. } => events,
            Node::Raw(_) => panic!("{at} is a raw peer"),
        }
    }

    fn raw(&mut self, at: SocketAddr) -> &mut RawPeer {
        match self.node(at) {
            Node::Raw(raw) => raw,
            Node::Driver { .. } => panic!("{at} is a driver"),
        }
    }

    fn node(&mut self, at: SocketAddr) -> &mut Node {
        &mut self
            .nodes
            .iter_mut()
            .find(|(a, _)| *a == at)
            .expect("no such node")
            .1
    }

    /// Puts a datagram on the wire as if `from` had sent it.
    fn inject(&mut self, from: SocketAddr, to: SocketAddr, data: Vec<u8>) {
        self.seq += 1;
        let stride = data.len();
        self.in_flight.push(InFlight {
            at: self.now + self.latency,
            seq: self.seq,
            from,
            to,
            data,
            stride,
            ecn: None,
        });
    }

    fn send_batch(&mut self, from: SocketAddr, meta: TransmitMeta, buf: &[u8]) {
        assert_eq!(meta.len, buf.len());
        let segment = meta.segment_size.unwrap_or(buf.len()).max(1);
        if self.gro && self.hook.is_none() && self.loss == 0.0 && self.bottleneck.is_none() {
            self.seq += 1;
            self.in_flight.push(InFlight {
                at: self.now + self.latency,
                seq: self.seq,
                from,
                to: meta.destination,
                data: buf.to_vec(),
                stride: segment,
                ecn: meta.ecn,
            });
            return;
        }
        for chunk in buf.chunks(segment) {
            if self.loss > 0.0 && self.rng.random::<f64>() < self.loss {
                self.lost += 1;
                continue;
            }
            let payloads = match self.hook.as_mut() {
                Some(hook) => hook(from, meta.destination, chunk.to_vec()),
                None => vec![chunk.to_vec()],
            };
            for data in payloads {
                let extra = if self.jitter.is_zero() {
                    Duration::ZERO
                } else {
                    self.jitter.mul_f64(self.rng.random::<f64>())
                };
                let sent = match self.bottleneck.as_mut() {
                    Some(link) if link.to == meta.destination => {
                        match link.pass(self.now, data.len()) {
                            Some(left) => left,
                            None => continue,
                        }
                    }
                    _ => self.now,
                };
                self.seq += 1;
                let stride = data.len();
                self.in_flight.push(InFlight {
                    at: sent + self.latency + extra,
                    seq: self.seq,
                    from,
                    to: meta.destination,
                    data,
                    stride,
                    ecn: meta.ecn,
                });
            }
        }
    }

    /// Runs everything due at `now` until nothing more happens at this instant.
    fn settle(&mut self) {
        let mut buf = Vec::new();
        for _ in 0..10_000 {
            let mut busy = false;
            // Timers.
            let now = self.now;
            for (_, node) in &mut self.nodes {
                match node {
                    Node::Driver { driver, .. } => {
                        if driver.poll_timeout().is_some_and(|t| t <= now) {
                            driver.handle_timeout(now);
                            busy = true;
                        }
                    }
                    Node::Raw(raw) => {
                        if raw.conn.poll_timeout().is_some_and(|t| t <= now) {
                            raw.conn.handle_timeout(now);
                            raw.pump();
                            busy = true;
                        }
                    }
                }
            }
            // Deliveries due now, in order of arrival.
            self.in_flight.sort_by_key(|p| (p.at, p.seq));
            let due = self.in_flight.partition_point(|p| p.at <= now);
            let arrivals: Vec<InFlight> = self.in_flight.drain(..due).collect();
            for packet in arrivals {
                busy = true;
                let Some((_, node)) = self.nodes.iter_mut().find(|(a, _)| *a == packet.to) else {
                    continue; // nobody lives there
                };
                match node {
                    Node::Driver { driver, .. } => {
                        let meta = RecvMeta {
                            source: packet.from,
                            dst_ip: None,
                            ecn: packet.ecn,
                            len: packet.data.len(),
                            stride: packet.stride,
                        };
                        driver.handle_datagram(now, meta, BytesMut::from(&packet.data[..]));
                    }
                    Node::Raw(raw) => raw.handle(now, packet.from, &packet.data),
                }
            }
            // Transmissions.
            for i in 0..self.nodes.len() {
                let from = self.nodes[i].0;
                loop {
                    let sent = match &mut self.nodes[i].1 {
                        Node::Driver { driver, .. } => driver.poll_transmit(now, &mut buf),
                        Node::Raw(raw) => raw.poll_transmit(now, &mut buf),
                    };
                    let Some(meta) = sent else { break };
                    busy = true;
                    let data = std::mem::take(&mut buf);
                    self.send_batch(from, meta, &data);
                    buf = data;
                }
            }
            // Events.
            for (_, node) in &mut self.nodes {
                if let Node::Driver { driver, events } = node {
                    while let Some(event) = driver.poll_event() {
                        events.push(event);
                        busy = true;
                    }
                }
            }
            if !busy {
                return;
            }
        }
        panic!("network did not settle at one instant (livelock)");
    }

    /// Moves the clock to the next delivery or timer. Returns false if nothing is pending.
    fn advance(&mut self) -> bool {
        let mut next = self.in_flight.iter().map(|p| p.at).min();
        for (_, node) in &mut self.nodes {
            let t = match node {
                Node::Driver { driver, .. } => driver.poll_timeout(),
                Node::Raw(raw) => raw.conn.poll_timeout(),
            };
            if let Some(t) = t {
                next = Some(next.map_or(t, |n: Instant| n.min(t)));
            }
        }
        match next {
            Some(t) => {
                self.now = self.now.max(t);
                true
            }
            None => false,
        }
    }

    /// Runs until `done` holds or `limit` of simulated time passes. Returns whether it held.
    fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&mut Self) -> bool) -> bool {
        let deadline = self.now + limit;
        loop {
            self.settle();
            if done(self) {
                return true;
            }
            if !self.advance() || self.now > deadline {
                return false;
            }
        }
    }

    /// Runs for `span` of simulated time.
    fn run_for(&mut self, span: Duration) {
        let end = self.now + span;
        self.run_until(span, |net| net.now >= end);
        self.now = self.now.max(end);
        self.settle();
    }

    fn elapsed(&self) -> Duration {
        self.now - self.start
    }
}

impl RawPeer {
    fn connect(now: Instant, server: SocketAddr, trust: &ClientTrust) -> Self {
        let mut endpoint = quinn_proto::Endpoint::new(
            Arc::new(quinn_proto::EndpointConfig::default()),
            None,
            true,
            Some([9; 32]),
        );
        let client = tls::client_config(trust).unwrap();
        let (handle, conn) = endpoint.connect(now, client, server, "relay.test").unwrap();
        Self {
            endpoint,
            handle,
            conn,
            connected: false,
            lost: None,
        }
    }

    fn handle(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        let mut buf = Vec::new();
        if let Some(quinn_proto::DatagramEvent::ConnectionEvent(_, event)) =
            self.endpoint
                .handle(now, from, None, None, BytesMut::from(data), &mut buf)
        {
            self.conn.handle_event(event);
        }
        self.pump();
    }

    fn pump(&mut self) {
        while let Some(event) = self.conn.poll_endpoint_events() {
            if let Some(reply) = self.endpoint.handle_event(self.handle, event) {
                self.conn.handle_event(reply);
            }
        }
        while let Some(event) = self.conn.poll() {
            match event {
                quinn_proto::Event::Connected => self.connected = true,
                quinn_proto::Event::ConnectionLost { reason } => self.lost = Some(reason),
                _ => {}
            }
        }
    }

    fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<TransmitMeta> {
        buf.clear();
        let t = self.conn.poll_transmit(now, 1, buf)?;
        self.pump();
        Some(TransmitMeta {
            destination: t.destination,
            src_ip: None,
            ecn: t.ecn.map(|e| e as u8),
            segment_size: t.segment_size,
            len: t.size,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------

fn identity() -> ServerIdentity {
    let generated = rcgen::generate_simple_self_signed(vec!["relay.test".to_owned()]).unwrap();
    ServerIdentity {
        chain: vec![CertificateDer::from(generated.cert.der().to_vec())],
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            generated.signing_key.serialize_der(),
        )),
    }
}

fn config(seed: u8) -> DriverConfig {
    let mut config = DriverConfig::default();
    config.rng_seed = Some([seed; 32]);
    config
}

/// A server driver and its certificate fingerprint.
fn server(config: DriverConfig) -> (Driver, Fingerprint) {
    let identity = identity();
    let fingerprint = identity.fingerprint();
    let crypto = tls::server_crypto(identity).unwrap();
    (Driver::new(config, Some(crypto)), fingerprint)
}

/// A network with a server at `SERVER` and a client at `CLIENT` that has started connecting
/// with the server's pinned fingerprint. Returns the client's connection.
fn pair(seed: u64) -> (Net, ConnId, Fingerprint) {
    let mut net = Net::new(seed);
    let (server, fingerprint) = server(config(1));
    net.add_driver(SERVER, server);
    let client = connect_client(&mut net, CLIENT, ClientTrust::Pinned(fingerprint), 2);
    (net, client, fingerprint)
}

fn connect_client(net: &mut Net, at: SocketAddr, trust: ClientTrust, seed: u8) -> ConnId {
    let mut driver = Driver::new(config(seed), None);
    let conn = driver
        .connect(
            net.now,
            SERVER,
            "relay.test",
            tls::client_config(&trust).unwrap(),
        )
        .unwrap();
    net.add_driver(at, driver);
    conn
}

fn is_connected(events: &[Event], conn: Option<ConnId>) -> bool {
    events
        .iter()
        .any(|e| matches!(e, Event::Connected { conn: c, .. } if conn.is_none_or(|x| x == *c)))
}

fn closed_reason(events: &[Event]) -> Option<(String, CloseCause)> {
    events.iter().find_map(|e| match e {
        Event::Closed { reason, cause, .. } => Some((reason.clone(), cause.clone())),
        _ => None,
    })
}

/// The server-side connection id of the first connection that completed its handshake.
fn server_conn(net: &mut Net, remote: SocketAddr) -> ConnId {
    net.events(SERVER)
        .iter()
        .find_map(|e| match e {
            Event::Connected {
                conn, remote: r, ..
            } if *r == remote => Some(*conn),
            _ => None,
        })
        .expect("server saw no connection from that address")
}

fn handshake(net: &mut Net, client_at: SocketAddr) {
    let ok = net.run_until(Duration::from_secs(5), |net| {
        is_connected(net.events(client_at), None)
            && net
                .events(SERVER)
                .iter()
                .any(|e| matches!(e, Event::Connected { remote, .. } if *remote == client_at))
    });
    assert!(
        ok,
        "handshake did not complete: {:?}",
        net.events(client_at)
    );
}

fn take_datagrams(events: &mut Vec<Event>) -> Vec<Bytes> {
    let mut out = Vec::new();
    events.retain(|e| match e {
        Event::Datagram { bytes, .. } => {
            out.push(bytes.clone());
            false
        }
        _ => true,
    });
    out
}

fn control_bytes(events: &[Event]) -> Vec<u8> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::ControlBytes { bytes, .. } => Some(&bytes[..]),
            _ => None,
        })
        .flatten()
        .copied()
        .collect()
}

/// Payload for datagram `seq` of `len` bytes: the sequence number, then bytes derived from it.
fn payload(seq: u32, len: usize) -> Bytes {
    let mut v = Vec::with_capacity(len);
    v.extend_from_slice(&seq.to_be_bytes());
    v.extend((4..len).map(|i| (seq as usize).wrapping_mul(31).wrapping_add(i) as u8));
    Bytes::from(v)
}

fn check_payload(bytes: &[u8]) -> u32 {
    let seq = u32::from_be_bytes(bytes[..4].try_into().unwrap());
    assert_eq!(
        &payload(seq, bytes.len())[..],
        bytes,
        "datagram {seq} corrupted"
    );
    seq
}

// ---------------------------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------------------------

#[test]
fn handshake_with_pinned_fingerprint_succeeds() {
    let (mut net, client, fingerprint) = pair(1);
    net.gro = true;
    handshake(&mut net, CLIENT);
    let identity = net
        .events(CLIENT)
        .iter()
        .find_map(|e| match e {
            Event::Connected {
                conn,
                remote,
                identity,
            } if *conn == client => Some((*remote, identity.clone())),
            _ => None,
        })
        .unwrap();
    assert_eq!(identity.0, SERVER);
    assert_eq!(identity.1.cert_fingerprint, Some(fingerprint));
    assert_eq!(identity.1.server_name.as_deref(), Some("relay.test"));
    let server_side = net
        .events(SERVER)
        .iter()
        .find_map(|e| match e {
            Event::Connected { identity, .. } => Some(identity.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(server_side.server_name.as_deref(), Some("relay.test"));
    assert!(net.driver(CLIENT).max_datagram_size(client).unwrap() >= 1100);
    assert_eq!(net.driver(SERVER).counters().connections_accepted, 1);
    assert_eq!(net.driver(SERVER).counters().handshakes_completed, 1);
}

#[test]
fn wrong_pin_fails_with_both_fingerprints_in_the_reason() {
    let mut net = Net::new(2);
    let (server, actual) = server(config(1));
    net.add_driver(SERVER, server);
    let pinned = Fingerprint([0xab; 32]);
    connect_client(&mut net, CLIENT, ClientTrust::Pinned(pinned), 2);
    let closed = net.run_until(Duration::from_secs(5), |net| {
        closed_reason(net.events(CLIENT)).is_some()
    });
    assert!(closed, "client never gave up");
    let (reason, cause) = closed_reason(net.events(CLIENT)).unwrap();
    assert!(reason.contains(&pinned.to_string()), "{reason}");
    assert!(reason.contains(&actual.to_string()), "{reason}");
    assert!(
        reason.contains("certificate fingerprint mismatch"),
        "{reason}"
    );
    assert!(!reason.contains("OtherError"), "debug noise in {reason}");
    assert!(matches!(cause, CloseCause::Lost(_)), "{cause:?}");
    assert!(!is_connected(net.events(CLIENT), None));
    // The server learns the handshake failed too and keeps nothing.
    net.run_for(Duration::from_secs(5));
    assert!(closed_reason(net.events(SERVER)).is_some());
    assert_eq!(net.driver(SERVER).connection_count(), 0);
}

#[test]
fn control_bytes_arrive_in_order_under_loss_and_reordering() {
    let (mut net, client, _) = pair(3);
    net.loss = 0.1;
    net.jitter = Duration::from_millis(15);
    handshake(&mut net, CLIENT);
    let server = server_conn(&mut net, CLIENT);

    let message: Vec<u8> = (0..40_000u32).map(|i| (i * 7 % 251) as u8).collect();
    for piece in message.chunks(1000) {
        net.driver(CLIENT).write_control(client, piece).unwrap();
    }
    let reply: Vec<u8> = (0..5_000u32).map(|i| (i % 13) as u8).collect();
    let delivered = net.run_until(Duration::from_secs(30), |net| {
        control_bytes(net.events(SERVER)).len() >= message.len()
    });
    assert!(
        delivered,
        "only {} bytes",
        control_bytes(net.events(SERVER)).len()
    );
    assert_eq!(control_bytes(net.events(SERVER)), message);

    net.driver(SERVER).write_control(server, &reply).unwrap();
    let delivered = net.run_until(Duration::from_secs(30), |net| {
        control_bytes(net.events(CLIENT)).len() >= reply.len()
    });
    assert!(delivered);
    assert_eq!(control_bytes(net.events(CLIENT)), reply);
    assert!(net.lost > 0, "the link was supposed to lose packets");
    assert!(net.driver(CLIENT).stats(client).unwrap().lost_packets > 0);
}

#[test]
fn control_writes_beyond_the_buffer_fail_whole_and_clearly() {
    let (mut net, client, _) = pair(4);
    // Before the handshake the stream does not exist: bytes wait in the bounded buffer.
    let capacity = net.driver(CLIENT).config().control_send_buffer;
    net.driver(CLIENT)
        .write_control(client, &vec![1; capacity - 10])
        .unwrap();
    let err = net
        .driver(CLIENT)
        .write_control(client, &[2; 11])
        .unwrap_err();
    assert_eq!(
        err,
        lanparty_datapath::quic::ControlError::BufferFull {
            queued: capacity - 10,
            capacity,
            wanted: 11
        }
    );
    assert!(err.to_string().contains("control send buffer full"));
    net.driver(CLIENT).write_control(client, &[3; 10]).unwrap();
    handshake(&mut net, CLIENT);
    let delivered = net.run_until(Duration::from_secs(10), |net| {
        control_bytes(net.events(SERVER)).len() >= capacity
    });
    assert!(delivered);
    let got = control_bytes(net.events(SERVER));
    assert_eq!(&got[..capacity - 10], &vec![1; capacity - 10][..]);
    assert_eq!(&got[capacity - 10..], &[3; 10]);
}

#[test]
fn ten_thousand_datagrams_of_mixed_sizes_arrive_intact_and_losses_are_counted() {
    let (mut net, client, _) = pair(5);
    // Loss without jitter: reordering inside a burst makes QUIC declare packets lost that were
    // not (RFC 9002's packet threshold), which the control-stream test exercises; here the
    // point is real loss and its accounting.
    net.loss = 0.01;
    handshake(&mut net, CLIENT);
    let server = server_conn(&mut net, CLIENT);
    let max = net.driver(CLIENT).max_datagram_size(client).unwrap();
    let sizes = [4, 60, 200, 576, 1000, max];

    let total = 10_000u32;
    let (mut sent_up, mut sent_down) = (0u32, 0u32);
    let mut seen_up = HashSet::new();
    let mut seen_down = HashSet::new();
    while sent_up + sent_down < total {
        // 4 datagrams each way per millisecond: about 2 MB/s, which the lossy link carries.
        for _ in 0..4 {
            let len = sizes[sent_up as usize % sizes.len()];
            net.driver(CLIENT)
                .send_datagram(client, payload(sent_up, len))
                .unwrap();
            sent_up += 1;
            let len = sizes[sent_down as usize % sizes.len()]
                .min(net.driver(SERVER).max_datagram_size(server).unwrap());
            net.driver(SERVER)
                .send_datagram(server, payload(sent_down, len))
                .unwrap();
            sent_down += 1;
        }
        net.run_for(Duration::from_millis(1));
        for bytes in take_datagrams(net.events(SERVER)) {
            assert!(seen_up.insert(check_payload(&bytes)), "duplicate datagram");
        }
        for bytes in take_datagrams(net.events(CLIENT)) {
            assert!(
                seen_down.insert(check_payload(&bytes)),
                "duplicate datagram"
            );
        }
    }
    net.run_for(Duration::from_secs(1));
    for bytes in take_datagrams(net.events(SERVER)) {
        assert!(seen_up.insert(check_payload(&bytes)), "duplicate datagram");
    }
    for bytes in take_datagrams(net.events(CLIENT)) {
        assert!(
            seen_down.insert(check_payload(&bytes)),
            "duplicate datagram"
        );
    }

    let up = net.driver(CLIENT).stats(client).unwrap();
    let down = net.driver(SERVER).stats(server).unwrap();
    // Every datagram was either put on the wire or dropped from the send buffer, counted.
    assert_eq!(
        up.datagrams_sent + up.datagrams_dropped_tx,
        u64::from(sent_up)
    );
    assert_eq!(
        down.datagrams_sent + down.datagrams_dropped_tx,
        u64::from(sent_down)
    );
    // What the receivers counted is what the test saw.
    assert_eq!(down.datagrams_received, seen_up.len() as u64);
    assert_eq!(up.datagrams_received, seen_down.len() as u64);
    // Losses happened and were noticed, and most datagrams still made it.
    assert!(net.lost > 0);
    assert!(up.lost_packets > 0 && down.lost_packets > 0);
    assert!(
        up.datagrams_sent > seen_up.len() as u64,
        "lost datagrams must show"
    );
    assert!(
        seen_up.len() > 9 * (sent_up as usize) / 10,
        "{} arrived",
        seen_up.len()
    );
    assert!(
        seen_down.len() > 9 * (sent_down as usize) / 10,
        "{} arrived",
        seen_down.len()
    );
    assert!(closed_reason(net.events(CLIENT)).is_none());
}

#[test]
fn a_full_send_buffer_drops_new_bulk_datagrams_and_lets_small_ones_in() {
    let (mut net, client, _) = pair(6);
    // Batches travel whole and are split again by the receiver (GSO out, GRO in).
    net.gro = true;
    handshake(&mut net, CLIENT);
    // 200 bulk datagrams of 1000 bytes, far more than the 64 KiB send buffer, then 20 small
    // ones (a game's packets behind a download), all queued at one instant.
    for seq in 0..200 {
        net.driver(CLIENT)
            .send_datagram(client, payload(seq, 1000))
            .unwrap();
    }
    for seq in 1000..1020 {
        net.driver(CLIENT)
            .send_datagram(client, payload(seq, 100))
            .unwrap();
    }
    net.run_for(Duration::from_secs(1));
    let received: BTreeSet<u32> = take_datagrams(net.events(SERVER))
        .iter()
        .map(|b| check_payload(b))
        .collect();
    let stats = net.driver(CLIENT).stats(client).unwrap();
    let dropped = stats.datagrams_dropped_tx;
    assert!(dropped > 100, "only {dropped} dropped");
    assert_eq!(received.len() as u64 + dropped, 220, "the link is lossless");
    // Every small one got in; of the bulk, the ones queued first that the small ones did not
    // push out: a run of consecutive sequence numbers, the newest bulk dropped.
    assert!(
        (1000..1020).all(|seq| received.contains(&seq)),
        "{received:?}"
    );
    let bulk: Vec<u32> = received.iter().copied().filter(|&s| s < 200).collect();
    assert!(!bulk.is_empty() && bulk.len() < 100, "{bulk:?}");
    let first = bulk[0];
    assert_eq!(bulk, (first..first + bulk.len() as u32).collect::<Vec<_>>());
    assert!(
        first + (bulk.len() as u32) < 150,
        "the newest bulk was dropped: {bulk:?}"
    );
    let reported: u64 = net
        .events(CLIENT)
        .iter()
        .filter_map(|e| match e {
            Event::DatagramsDropped { count, .. } => Some(*count),
            _ => None,
        })
        .sum();
    assert_eq!(reported, dropped);
    assert_eq!(net.driver(CLIENT).counters().datagrams_dropped_tx, dropped);
}

#[test]
fn garbage_truncated_and_replayed_packets_are_counted_without_disturbing_the_connection() {
    let (mut net, client, _) = pair(7);
    handshake(&mut net, CLIENT);
    let server = server_conn(&mut net, CLIENT);
    let before = net.driver(SERVER).counters();

    // Every client->server packet arrives with a truncated copy and a replay of itself.
    net.hook = Some(Box::new(|from, _to, data| {
        if from != CLIENT || data.len() < 40 {
            return vec![data];
        }
        let truncated = data[..data.len() / 2].to_vec();
        let mut flipped = data.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0x55;
        vec![data.clone(), truncated, flipped, data]
    }));
    let mut garbage_rng = StdRng::seed_from_u64(99);
    for seq in 0..300u32 {
        // Garbage from strangers and from the client's own address.
        let len = garbage_rng.random_range(1..1400);
        let junk: Vec<u8> = (0..len).map(|_| garbage_rng.random()).collect();
        let from = if seq % 2 == 0 { CLIENT } else { addr(77, 9999) };
        net.inject(from, SERVER, junk);
        net.driver(CLIENT)
            .send_datagram(client, payload(seq, 300))
            .unwrap();
        if seq % 50 == 0 {
            net.driver(CLIENT).write_control(client, b"ping!").unwrap();
        }
        net.run_for(Duration::from_millis(2));
    }
    net.run_for(Duration::from_secs(1));
    let received: Vec<u32> = take_datagrams(net.events(SERVER))
        .iter()
        .map(|b| check_payload(b))
        .collect();
    assert_eq!(received.len(), 300, "every datagram still arrives, once");
    assert_eq!(control_bytes(net.events(SERVER)), b"ping!".repeat(6));
    assert!(closed_reason(net.events(SERVER)).is_none());
    assert!(closed_reason(net.events(CLIENT)).is_none());

    let after = net.driver(SERVER).counters();
    assert!(after.unroutable_datagrams > before.unroutable_datagrams);
    // Truncated, corrupted and replayed copies reach the connection and are rejected.
    assert!(
        after.rejected_datagrams - before.rejected_datagrams >= 3 * 300,
        "{after:?}"
    );
    assert!(net.driver(SERVER).stats(server).is_some());
    assert_eq!(net.driver(SERVER).connection_count(), 1);
}

#[test]
fn a_handshake_that_never_finishes_times_out_and_others_carry_on() {
    let (mut net, good, _) = pair(8);
    handshake(&mut net, CLIENT);
    let good_on_server = server_conn(&mut net, CLIENT);
    // A second client whose packets reach the server but never hear back.
    net.hook = Some(Box::new(
        |_from, to, data| {
            if to == CLIENT2 { vec![] } else { vec![data] }
        },
    ));
    let fingerprint = net
        .events(CLIENT)
        .iter()
        .find_map(|e| match e {
            Event::Connected { identity, .. } => identity.cert_fingerprint,
            _ => None,
        })
        .unwrap();
    connect_client(&mut net, CLIENT2, ClientTrust::Pinned(fingerprint), 3);
    let started = net.elapsed();
    let timed_out = net.run_until(Duration::from_secs(20), |net| {
        net.driver(SERVER).counters().handshakes_timed_out == 1
    });
    assert!(timed_out, "{:?}", net.driver(SERVER).counters());
    let took = net.elapsed() - started;
    assert!(
        took >= Duration::from_secs(10) && took < Duration::from_secs(11),
        "{took:?}"
    );
    let server_closed = net.events(SERVER).iter().any(|e| {
        matches!(
            e,
            Event::Closed { cause: CloseCause::HandshakeTimedOut, reason, .. }
                if reason.contains("handshake")
        )
    });
    assert!(server_closed);
    // The stalled client gives up on its own too.
    net.run_for(Duration::from_secs(1));
    assert!(matches!(
        closed_reason(net.events(CLIENT2)),
        Some((_, CloseCause::HandshakeTimedOut))
    ));
    // The established connection never noticed.
    net.driver(CLIENT)
        .send_datagram(good, payload(1, 500))
        .unwrap();
    net.driver(SERVER)
        .send_datagram(good_on_server, payload(2, 500))
        .unwrap();
    net.run_for(Duration::from_millis(100));
    assert_eq!(take_datagrams(net.events(SERVER)).len(), 1);
    assert_eq!(take_datagrams(net.events(CLIENT)).len(), 1);
    assert!(closed_reason(net.events(CLIENT)).is_none());
    net.run_for(Duration::from_secs(5));
    assert_eq!(net.driver(SERVER).connection_count(), 1);
}

#[test]
fn a_client_opening_200_streams_is_refused_without_disturbing_others() {
    let (mut net, good, fingerprint) = pair(9);
    handshake(&mut net, CLIENT);
    let good_on_server = server_conn(&mut net, CLIENT);
    net.driver(CLIENT).write_control(good, b"hello").unwrap();
    let hostile = RawPeer::connect(net.now, SERVER, &ClientTrust::Pinned(fingerprint));
    net.nodes.push((HOSTILE, Node::Raw(Box::new(hostile))));
    assert!(net.run_until(Duration::from_secs(5), |net| net.raw(HOSTILE).connected));
    assert!(
        net.raw(HOSTILE)
            .conn
            .streams()
            .open(quinn_proto::Dir::Uni)
            .is_none(),
        "no unidirectional streams are allowed"
    );

    let mut opened = 0;
    let mut at_once = 0;
    let give_up = net.now + Duration::from_secs(60);
    while opened < 200 && net.now < give_up {
        let raw = net.raw(HOSTILE);
        let mut this_round = 0;
        while let Some(id) = raw.conn.streams().open(quinn_proto::Dir::Bi) {
            let mut send = raw.conn.send_stream(id);
            send.write(b"let me in").unwrap();
            send.finish().unwrap();
            // Walk away from the server's half too, so the server frees the stream and grants
            // credit for the next one: a churning flood rather than a stuck one.
            raw.conn
                .recv_stream(id)
                .stop(quinn_proto::VarInt::from_u32(0))
                .unwrap();
            opened += 1;
            this_round += 1;
        }
        at_once = at_once.max(this_round);
        net.driver(CLIENT)
            .send_datagram(good, payload(opened, 100))
            .unwrap();
        net.run_for(Duration::from_millis(20));
    }
    assert_eq!(opened, 200, "the hostile client got stuck");
    assert_eq!(at_once, 1, "the peer may only ever have one stream open");
    net.run_for(Duration::from_secs(1));
    // The first stream became the control stream; every other one was refused.
    assert_eq!(net.driver(SERVER).counters().streams_refused, 199);
    assert!(net.raw(HOSTILE).lost.is_none());
    // The honest client saw nothing of it.
    let arrived = take_datagrams(net.events(SERVER)).len();
    assert!(arrived > 100, "{arrived}");
    net.driver(SERVER)
        .write_control(good_on_server, b"still here")
        .unwrap();
    net.run_for(Duration::from_millis(100));
    assert!(closed_reason(net.events(CLIENT)).is_none());
    assert_eq!(control_bytes(net.events(CLIENT)), b"still here");
}

#[test]
fn connections_beyond_the_limit_are_refused() {
    let mut net = Net::new(10);
    let mut limited = config(1);
    limited.max_connections = 1;
    let (server, fingerprint) = server(limited);
    net.add_driver(SERVER, server);
    connect_client(&mut net, CLIENT, ClientTrust::Pinned(fingerprint), 2);
    handshake(&mut net, CLIENT);
    connect_client(&mut net, CLIENT2, ClientTrust::Pinned(fingerprint), 3);
    let refused = net.run_until(Duration::from_secs(5), |net| {
        closed_reason(net.events(CLIENT2)).is_some()
    });
    assert!(refused);
    let (reason, _) = closed_reason(net.events(CLIENT2)).unwrap();
    assert!(reason.to_lowercase().contains("refused"), "{reason}");
    assert_eq!(net.driver(SERVER).counters().connections_refused, 1);
    assert!(closed_reason(net.events(CLIENT)).is_none());
}

#[test]
fn idle_connections_stay_up_on_keep_alives_and_closing_reaches_the_peer() {
    let (mut net, client, _) = pair(11);
    handshake(&mut net, CLIENT);
    net.run_for(Duration::from_secs(90));
    assert!(closed_reason(net.events(CLIENT)).is_none());
    assert!(closed_reason(net.events(SERVER)).is_none());
    let now = net.now;
    assert!(net.driver(CLIENT).close(now, client, 7, "player left"));
    assert!(!net.driver(CLIENT).close(now, client, 7, "twice"));
    net.run_for(Duration::from_secs(2));
    let (reason, _) = closed_reason(net.events(SERVER)).unwrap();
    assert!(reason.contains("player left"), "{reason}");
    net.run_for(Duration::from_secs(5));
    assert_eq!(net.driver(SERVER).connection_count(), 0);
    assert_eq!(net.driver(CLIENT).connection_count(), 0);
}

#[test]
fn under_handshake_pressure_new_clients_must_echo_a_retry_token() {
    let mut net = Net::new(12);
    let mut pressured = config(1);
    pressured.retry_above_handshakes = 0;
    let (server, fingerprint) = server(pressured);
    net.add_driver(SERVER, server);
    let client = connect_client(&mut net, CLIENT, ClientTrust::Pinned(fingerprint), 2);
    handshake(&mut net, CLIENT);
    assert_eq!(net.driver(SERVER).counters().retries_sent, 1);
    assert_eq!(net.driver(SERVER).counters().connections_accepted, 1);
    net.driver(CLIENT)
        .send_datagram(client, payload(5, 900))
        .unwrap();
    net.run_for(Duration::from_millis(100));
    let got = take_datagrams(net.events(SERVER));
    assert_eq!(got.len(), 1);
    assert_eq!(check_payload(&got[0]), 5);
}

#[test]
fn the_driver_can_move_to_the_datapath_thread() {
    fn assert_send<T: Send>() {}
    assert_send::<Driver>();
    assert_send::<Event>();
}

proptest::proptest! {
    #![proptest_config(proptest::test_runner::Config::with_cases(64))]

    /// Arbitrary bytes with arbitrary receive metadata (strides, lengths, ECN bits) are counted,
    /// never a panic, whether or not they look like a QUIC long header.
    #[test]
    fn arbitrary_datagrams_and_metadata_never_panic(
        data in proptest::collection::vec(proptest::num::u8::ANY, 0..3000),
        long_header in proptest::bool::ANY,
        stride in 0usize..2000,
        len_slack in 0usize..100,
        ecn in proptest::option::of(proptest::num::u8::ANY),
    ) {
        let (mut driver, _) = server(config(1));
        let mut data = data;
        if long_header && data.len() > 6 {
            // An Initial of QUIC v1 with random everything else.
            data[0] = 0xc0 | (data[0] & 0x0f);
            data[1..5].copy_from_slice(&1u32.to_be_bytes());
        }
        let meta = RecvMeta {
            source: HOSTILE,
            dst_ip: None,
            ecn,
            len: data.len() + len_slack,
            stride,
        };
        let now = Instant::now();
        driver.handle_datagram(now, meta, BytesMut::from(&data[..]));
        let mut buf = Vec::new();
        while driver.poll_transmit(now, &mut buf).is_some() {}
        while driver.poll_event().is_some() {}
        driver.handle_timeout(now + Duration::from_secs(11));
        let counters = driver.counters();
        proptest::prop_assert!(data.is_empty() || counters.datagrams_received >= 1);
        proptest::prop_assert!(driver.connection_count() <= 1);
    }
}

/// A CA certificate in a PEM file and a server identity for `names` signed by it.
fn ca_and_server(dir: &std::path::Path, names: &[&str]) -> (std::path::PathBuf, ServerIdentity) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let leaf = CertificateParams::new(names)
        .unwrap()
        .signed_by(&leaf_key, &ca)
        .unwrap();
    std::fs::create_dir_all(dir).unwrap();
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let identity = ServerIdentity {
        chain: vec![leaf.der().clone(), ca.der().clone()],
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
    };
    (ca_file, identity)
}

#[test]
fn a_ca_file_verifies_the_server_by_name() {
    let dir = std::env::temp_dir().join(format!("lp-quic-ca-{}", std::process::id()));
    for (server_names, expect_ok) in [(&["relay.test"][..], true), (&["other.test"][..], false)] {
        let (ca_file, identity) = ca_and_server(&dir, server_names);
        let mut net = Net::new(13);
        net.add_driver(
            SERVER,
            Driver::new(config(1), Some(tls::server_crypto(identity).unwrap())),
        );
        connect_client(&mut net, CLIENT, ClientTrust::CaFile(ca_file), 2);
        let settled = net.run_until(Duration::from_secs(5), |net| {
            is_connected(net.events(CLIENT), None) || closed_reason(net.events(CLIENT)).is_some()
        });
        assert!(settled);
        assert_eq!(
            is_connected(net.events(CLIENT), None),
            expect_ok,
            "{server_names:?}"
        );
        if !expect_ok {
            let (reason, _) = closed_reason(net.events(CLIENT)).unwrap();
            assert!(reason.contains("not valid for name"), "{reason}");
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn one_datagram_goes_to_many_connections() {
    let (mut net, _, fingerprint) = pair(14);
    connect_client(&mut net, CLIENT2, ClientTrust::Pinned(fingerprint), 3);
    handshake(&mut net, CLIENT);
    handshake(&mut net, CLIENT2);
    let targets = [
        server_conn(&mut net, CLIENT),
        server_conn(&mut net, CLIENT2),
    ];
    let frame = payload(42, 1000);
    let unknown = ConnId(quinn_proto::ConnectionHandle(999));
    let sent = net
        .driver(SERVER)
        .send_datagram_to_many(&[targets[0], unknown, targets[1]], frame.clone());
    assert_eq!(sent, 2);
    assert_eq!(net.driver(SERVER).counters().datagrams_unsendable, 1);
    net.run_for(Duration::from_millis(50));
    for at in [CLIENT, CLIENT2] {
        let got = take_datagrams(net.events(at));
        assert_eq!(got, vec![frame.clone()], "{at}");
    }
}

#[test]
fn idle_connections_cost_nothing_per_turn() {
    let (mut net, _, fingerprint) = pair(15);
    let idle: Vec<SocketAddr> = (0..40)
        .map(|i| addr(10 + i, 50_100 + u16::from(i)))
        .collect();
    for (i, &at) in idle.iter().enumerate() {
        connect_client(&mut net, at, ClientTrust::Pinned(fingerprint), 10 + i as u8);
    }
    let all_connected = net.run_until(Duration::from_secs(5), |net| {
        let connected = |net: &mut Net, at| is_connected(net.events(at), None);
        connected(net, CLIENT) && idle.iter().all(|&at| connected(net, at))
    });
    assert!(all_connected, "handshakes did not complete");
    net.run_for(Duration::from_millis(500));
    let active = server_conn(&mut net, CLIENT);
    take_datagrams(net.events(CLIENT));

    // 200 turns of one datagram to one peer while 40 others sit idle.
    let before = net.driver(SERVER).counters().transmit_polls;
    for seq in 0..200 {
        net.driver(SERVER)
            .send_datagram(active, payload(seq, 1000))
            .unwrap();
        net.now += Duration::from_millis(1);
        net.settle();
    }
    net.run_for(Duration::from_millis(20));
    let polls = net.driver(SERVER).counters().transmit_polls - before;
    assert_eq!(take_datagrams(net.events(CLIENT)).len(), 200);
    // Each turn asks the active connection a few times (its datagram, the ACKs it gets, a
    // last "nothing more"); sweeping all 41 connections would be over 8000 asks.
    assert!(polls <= 200 * 5, "{polls} connection polls for 200 turns");
}

/// A server at `SERVER` and a client at `CLIENT`, both with `tune` applied to their transport
/// settings, connected (handshake done). Returns the client's connection.
fn tuned_pair(net: &mut Net, tune: impl Fn(&mut TransportSettings)) -> ConnId {
    let mut server_config = config(1);
    tune(&mut server_config.transport);
    let (server, fingerprint) = server(server_config);
    net.add_driver(SERVER, server);
    let mut client_config = config(2);
    tune(&mut client_config.transport);
    let mut driver = Driver::new(client_config, None);
    let client = driver
        .connect(
            net.now,
            SERVER,
            "relay.test",
            tls::client_config(&ClientTrust::Pinned(fingerprint)).unwrap(),
        )
        .unwrap();
    net.add_driver(CLIENT, driver);
    handshake(net, CLIENT);
    client
}

/// Sends `count` datagrams of 1000 bytes from client to server over a 10 ms round trip, one
/// packet every 200 µs (the link delivers each on its own, as a paced sender on a real path
/// does, no GRO batches), with both drivers on `ack_frequency`. Returns the packets the server
/// sent meanwhile (ACK-only: it sends no data), the datagrams that arrived, and the client's
/// statistics.
fn paced_flow(
    ack_frequency: Option<AckFrequency>,
    loss: f64,
    count: u32,
) -> (u64, BTreeSet<u32>, lanparty_datapath::quic::ConnStats) {
    let mut net = Net::new(21);
    net.latency = Duration::from_millis(5);
    net.loss = loss;
    let client = tuned_pair(&mut net, |t| t.ack_frequency = ack_frequency);
    let server_side = server_conn(&mut net, CLIENT);
    net.run_for(Duration::from_millis(100));
    // The first `WARMUP` datagrams open the congestion window (slow start would otherwise drop
    // some from the send buffer); only the following `count` are measured.
    const WARMUP: u32 = 500;
    let mut before = 0;
    let mut received = BTreeSet::new();
    for seq in 0..WARMUP + count {
        if seq == WARMUP {
            before = net.driver(SERVER).stats(server_side).unwrap().sent_packets;
        }
        net.driver(CLIENT)
            .send_datagram(client, payload(seq, 1000))
            .unwrap();
        // Step the clock by exactly 200 µs (`run_for` jumps to the next event, which may be a
        // timer further out), running what is due at each step.
        net.now += Duration::from_micros(200);
        net.settle();
        received.extend(
            take_datagrams(net.events(SERVER))
                .iter()
                .map(|b| check_payload(b)),
        );
    }
    // The last datagram is in flight for one link latency.
    net.run_for(Duration::from_millis(6));
    received.extend(
        take_datagrams(net.events(SERVER))
            .iter()
            .map(|b| check_payload(b)),
    );
    let acks = net.driver(SERVER).stats(server_side).unwrap().sent_packets - before;
    let received = received.split_off(&WARMUP);
    let stats = net.driver(CLIENT).stats(client).unwrap();
    assert!(closed_reason(net.events(CLIENT)).is_none());
    (acks, received, stats)
}

#[test]
fn peers_ask_each_other_to_acknowledge_every_tenth_packet() {
    let count = 2000;
    // QUIC's default: an ACK for every second packet.
    let (default_acks, received, _) = paced_flow(None, 0.0, count);
    assert_eq!(received.len() as u32, count);
    assert!(
        default_acks >= u64::from(count) * 4 / 10,
        "{default_acks} ACK packets for {count} packets"
    );
    // Ours: the threshold asks for one ACK per ten packets.
    let (acks, received, stats) = paced_flow(Some(AckFrequency::default()), 0.0, count);
    assert_eq!(
        received.len() as u32,
        count,
        "every datagram arrives on time"
    );
    assert!(
        acks <= u64::from(count) / 8,
        "{acks} ACK packets for {count} packets"
    );
    // The RTT estimate stays true to the 10 ms round trip (quinn subtracts the ACK delay).
    assert!(
        stats.rtt >= Duration::from_micros(9_500) && stats.rtt <= Duration::from_micros(12_500),
        "rtt {:?}",
        stats.rtt
    );
}

#[test]
fn losses_are_still_detected_when_acks_are_sparse() {
    let count = 2000;
    let (_, default_received, default_stats) = paced_flow(None, 0.02, count);
    let (_, received, stats) = paced_flow(Some(AckFrequency::default()), 0.02, count);
    // Lost packets are declared lost (the congestion controller hears of them) about as often
    // as with an ACK every second packet, and delivery does not suffer.
    assert!(stats.lost_packets > 0, "no loss detected");
    assert!(
        stats.lost_packets * 2 >= default_stats.lost_packets
            && stats.lost_packets <= default_stats.lost_packets * 2,
        "{} lost with sparse ACKs, {} with QUIC's default",
        stats.lost_packets,
        default_stats.lost_packets
    );
    assert!(
        received.len() * 100 >= default_received.len() * 98,
        "{} of {count} arrived with sparse ACKs, {} with QUIC's default",
        received.len(),
        default_received.len()
    );
}

/// A client sends 1200-byte datagrams at 25 MB/s into a bottleneck with a 2 MB buffer and a
/// 20 ms round trip, for 4 s: `first` bit/s for 2 s, then 100 Mbit/s. Returns the longest wait
/// in the bottleneck's queue and the goodput (bytes per second), both over the last 2 s.
fn bulk_over_bottleneck(bound: Option<WindowBound>, first: f64) -> (Duration, f64) {
    let mut net = Net::new(31);
    net.latency = Duration::from_millis(10);
    let client = tuned_pair(&mut net, |t| t.window_bound = bound);
    net.bottleneck = Some(Bottleneck::new(SERVER, first, 2_000_000, net.now));
    let mut received = 0usize;
    let step = Duration::from_millis(1);
    for ms in 0..4000u32 {
        if ms == 2000 {
            received = 0;
            let link = net.bottleneck.as_mut().unwrap();
            link.max_wait = Duration::ZERO;
            link.rate = 100e6 / 8.0;
        }
        // 25 MB/s offered; what the send buffer cannot hold is dropped there.
        for i in 0..21 {
            let _ = net
                .driver(CLIENT)
                .send_datagram(client, payload(ms * 32 + i, 1200));
        }
        let end = net.now + step;
        while net.now < end {
            net.settle();
            if !net.advance() {
                break;
            }
            net.now = net.now.min(end);
        }
        net.now = end;
        net.settle();
        received += take_datagrams(net.events(SERVER))
            .iter()
            .map(|d| d.len())
            .sum::<usize>();
    }
    assert!(closed_reason(net.events(CLIENT)).is_none());
    let link = net.bottleneck.as_ref().unwrap();
    (link.max_wait, received as f64 / 2.0)
}

#[test]
fn the_window_bound_keeps_a_bottleneck_queue_short_at_full_rate() {
    let link = 100e6 / 8.0;
    // Cubic alone fills the router's buffer: every packet behind it waits.
    let (cubic_wait, cubic_rate) = bulk_over_bottleneck(None, 100e6);
    assert!(
        cubic_wait > Duration::from_millis(60),
        "Cubic's longest queue wait {cubic_wait:?}"
    );
    // Under the bound the queue holds at most about one bandwidth-delay product (20 ms), and
    // the link stays as busy.
    let (wait, rate) = bulk_over_bottleneck(Some(WindowBound::default()), 100e6);
    assert!(
        wait <= Duration::from_millis(30),
        "longest queue wait {wait:?}"
    );
    assert!(
        rate >= link * 0.9 && rate >= cubic_rate * 0.95,
        "goodput {rate:.0} B/s, Cubic alone {cubic_rate:.0} B/s, link {link:.0} B/s"
    );
}

#[test]
fn the_window_bound_follows_a_link_that_gets_faster() {
    // 2 s at 10 Mbit/s hold the bound near 50 kB (2 × 1.25 MB/s × 20 ms; the floor, what the
    // path delivers in 4 ms, is lower), so the queue stays near one bandwidth-delay product;
    // when the link speeds up to 100 Mbit/s the delivery rate climbs and the bound with it.
    let (wait, rate) = bulk_over_bottleneck(Some(WindowBound::default()), 10e6);
    let link = 100e6 / 8.0;
    assert!(
        rate >= link * 0.85,
        "goodput {rate:.0} B/s in the 2 s after the link became {link:.0} B/s"
    );
    assert!(
        wait <= Duration::from_millis(30),
        "longest queue wait {wait:?}"
    );
}
