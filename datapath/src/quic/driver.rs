//! The [`Driver`]: a quinn-proto endpoint and its connections, sans IO.

use std::collections::VecDeque;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use quinn_proto::crypto::rustls::HandshakeData;
use quinn_proto::{
    Connection, ConnectionError, ConnectionHandle, DatagramEvent, Dir, EcnCodepoint, Endpoint,
    EndpointConfig, FrameStats, Incoming, ReadError, SendDatagramError, ServerConfig, StreamEvent,
    StreamId, Transmit, VarInt, WriteError,
};
use rustls::pki_types::CertificateDer;

use super::config::{DriverConfig, Role};
use super::tls::Fingerprint;
use super::{RecvMeta, TransmitMeta};

/// Application close code the driver uses when a handshake did not finish in time.
pub const CLOSE_HANDSHAKE_TIMEOUT: u32 = 0x4c50_0001;
/// Stream error code (STOP_SENDING/RESET_STREAM) for streams other than the control stream.
pub const STREAM_REFUSED: u32 = 0x4c50_0002;

/// A connection of a [`Driver`]: a newtype around quinn's `ConnectionHandle`.
///
/// Handles are reused after a connection is drained (after its [`Event::Closed`]), so drop a
/// `ConnId` when its connection closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub ConnectionHandle);

impl ConnId {
    /// A small dense index (quinn's slab key), handy for per-connection tables.
    pub fn index(self) -> usize {
        self.0.0
    }
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "conn#{}", self.0.0)
    }
}

/// Who the peer turned out to be once the handshake completed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    /// Client side: the name we connected to. Server side: the SNI the client sent, if any.
    pub server_name: Option<String>,
    /// SHA-256 of the peer's end-entity certificate (the server's, seen from a client; clients
    /// present none).
    pub cert_fingerprint: Option<Fingerprint>,
}

/// Why a connection closed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseCause {
    /// [`Driver::close`] was called.
    Local,
    /// The handshake did not finish within [`DriverConfig::handshake_timeout`].
    HandshakeTimedOut,
    /// The peer closed, the path died or the handshake failed (quinn's reason).
    Lost(ConnectionError),
}

/// What happened, for the caller to act on. Drain with [`Driver::poll_event`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Event {
    /// The handshake completed; DATAGRAMs and control bytes can flow.
    Connected {
        /// The connection.
        conn: ConnId,
        /// The peer's address.
        remote: SocketAddr,
        /// What TLS told us about the peer.
        identity: PeerIdentity,
    },
    /// Bytes arrived on the control stream, in order.
    ControlBytes {
        /// The connection.
        conn: ConnId,
        /// The bytes (a slice of the decrypted packet).
        bytes: Bytes,
    },
    /// The peer finished or reset its side of the control stream: no more control bytes.
    ControlFinished {
        /// The connection.
        conn: ConnId,
    },
    /// A DATAGRAM arrived.
    Datagram {
        /// The connection.
        conn: ConnId,
        /// The payload: a slice of the decrypted packet, no copy.
        bytes: Bytes,
    },
    /// Queued outgoing DATAGRAMs were dropped (oldest first) to make room for newer ones since
    /// the last such event for this connection.
    DatagramsDropped {
        /// The connection.
        conn: ConnId,
        /// How many were dropped.
        count: u64,
    },
    /// The connection is closed; its `ConnId` is void from now on (no further events).
    Closed {
        /// The connection.
        conn: ConnId,
        /// Why, in words a person can read (includes TLS errors such as a pin mismatch).
        reason: String,
        /// Why, as a value.
        cause: CloseCause,
    },
}

/// Endpoint-wide counters, plain integers. Read with [`Driver::counters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DriverCounters {
    /// UDP datagrams handed to the driver (after splitting GRO batches).
    pub datagrams_received: u64,
    /// Datagrams no connection could use: undecodable header, unknown connection ID,
    /// unsupported version, or a non-Initial for nobody.
    pub unroutable_datagrams: u64,
    /// Datagrams routed to a connection that yielded no authenticated frame: corrupted,
    /// truncated or replayed packets.
    pub rejected_datagrams: u64,
    /// Stateless responses queued (version negotiation, stateless reset, refusals).
    pub stateless_responses: u64,
    /// Stateless responses dropped because their queue was full.
    pub responses_dropped: u64,
    /// Incoming connections accepted.
    pub connections_accepted: u64,
    /// Incoming connections refused because `max_connections` were open.
    pub connections_refused: u64,
    /// Incoming connections quinn could not accept (bad Initial, bad token).
    pub accept_failures: u64,
    /// Retry packets sent to make a source prove its address under handshake pressure.
    pub retries_sent: u64,
    /// Handshakes closed by the driver's handshake timeout.
    pub handshakes_timed_out: u64,
    /// Connections that completed their handshake.
    pub handshakes_completed: u64,
    /// Peer-opened streams refused (anything but the first bidirectional stream).
    pub streams_refused: u64,
    /// Outgoing DATAGRAMs dropped oldest-first because a send buffer was full.
    pub datagrams_dropped_tx: u64,
    /// Received DATAGRAMs dropped because the event queue was full.
    pub datagrams_dropped_rx: u64,
    /// `send_datagram_to_many` targets that could not take the datagram (closed, too large).
    pub datagrams_unsendable: u64,
    /// Connections `poll_transmit` asked for a packet, including those that had none. Only
    /// connections touched since they last had nothing to send are asked, so this follows the
    /// traffic, not the number of connections times the number of turns.
    pub transmit_polls: u64,
}

/// Per-connection statistics. Read with [`Driver::stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnStats {
    /// Smoothed round-trip time.
    pub rtt: Duration,
    /// Congestion window in bytes.
    pub cwnd: u64,
    /// Current path MTU (UDP payload bytes).
    pub mtu: u16,
    /// Packets sent.
    pub sent_packets: u64,
    /// Packets declared lost.
    pub lost_packets: u64,
    /// DATAGRAM frames sent.
    pub datagrams_sent: u64,
    /// DATAGRAM frames received.
    pub datagrams_received: u64,
    /// Outgoing DATAGRAMs dropped oldest-first because the send buffer was full.
    pub datagrams_dropped_tx: u64,
    /// Received DATAGRAMs dropped because the driver's event queue was full.
    pub datagrams_dropped_rx: u64,
}

/// Errors of [`Driver::connect`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// `max_connections` connections are open.
    #[error("too many connections ({max})")]
    TooManyConnections {
        /// The configured limit.
        max: usize,
    },
    /// quinn refused the parameters (bad address, bad server name, ...).
    #[error("{0}")]
    Quinn(#[from] quinn_proto::ConnectError),
}

/// Errors of [`Driver::send_datagram`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DatagramError {
    /// No such connection.
    #[error("unknown connection")]
    UnknownConnection,
    /// The handshake has not completed yet.
    #[error("connection not established yet")]
    NotConnected,
    /// The connection is closed or closing.
    #[error("connection closed")]
    Closed,
    /// The peer did not enable DATAGRAM frames.
    #[error("peer does not accept datagrams")]
    UnsupportedByPeer,
    /// Larger than the connection can carry right now.
    #[error("datagram of {size} bytes exceeds the limit of {max}")]
    TooLarge {
        /// The datagram's size.
        size: usize,
        /// The current limit ([`Driver::max_datagram_size`]).
        max: usize,
    },
}

/// Errors of [`Driver::write_control`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// No such connection.
    #[error("unknown connection")]
    UnknownConnection,
    /// The connection is closed or closing.
    #[error("connection closed")]
    Closed,
    /// The peer stopped reading the control stream.
    #[error("peer stopped the control stream (code {code})")]
    Stopped {
        /// The peer's error code.
        code: u64,
    },
    /// The bytes do not fit the control send buffer; nothing was written.
    #[error("control send buffer full: {queued} of {capacity} bytes queued, {wanted} more wanted")]
    BufferFull {
        /// Bytes already waiting.
        queued: usize,
        /// The configured capacity ([`DriverConfig::control_send_buffer`]).
        capacity: usize,
        /// Bytes of this write.
        wanted: usize,
    },
}

/// quinn's per-datagram bookkeeping overhead, which counts against the send buffer.
const DATAGRAM_OVERHEAD: usize = size_of::<quinn_proto::Datagram>();

/// Datagrams up to this size may push older ones out of a full send buffer; larger ones are
/// dropped themselves ([`Driver::send_datagram`]). 512 bytes holds game state updates, TCP
/// ACKs, DNS, ICMP echo and VoIP frames; bulk TCP and file transfers send full-size frames.
pub const SMALL_DATAGRAM: usize = 512;

/// Counts `n` outgoing DATAGRAMs dropped on `conn` and queues one drop report for it.
fn count_tx_drops(
    state: &mut Conn,
    counters: &mut DriverCounters,
    reports: &mut VecDeque<ConnId>,
    conn: ConnId,
    n: u64,
) {
    state.dropped_tx += n;
    counters.datagrams_dropped_tx += n;
    if state.drops_unreported == 0 {
        reports.push_back(conn);
    }
    state.drops_unreported += n;
}

/// A mirror of quinn's outgoing DATAGRAM FIFO, holding only lengths, so that drop-oldest can be
/// counted: quinn-proto 0.11 drops silently. Pops happen where quinn pops: on transmission
/// (tracked through `frame_tx.datagram`) and in `send` with `drop = true`.
#[derive(Debug, Default)]
struct DatagramShadow {
    lens: VecDeque<usize>,
    /// Bytes quinn counts against the send buffer: payload plus overhead per datagram.
    memory: usize,
    /// `frame_tx.datagram` when last synchronised.
    sent_seen: u64,
}

impl DatagramShadow {
    fn on_sent(&mut self, sent_total: u64) {
        let newly = sent_total.saturating_sub(self.sent_seen);
        self.sent_seen = sent_total;
        for _ in 0..newly {
            self.pop();
        }
    }

    fn pop(&mut self) -> bool {
        match self.lens.pop_front() {
            Some(len) => {
                self.memory -= len + DATAGRAM_OVERHEAD;
                true
            }
            None => false,
        }
    }

    /// Pops entries quinn no longer holds (it drops oversized datagrams when the MTU shrinks),
    /// judged by the free space quinn reports.
    fn resync(&mut self, capacity: usize, quinn_space: usize) {
        while capacity
            .saturating_sub(self.memory)
            .saturating_sub(DATAGRAM_OVERHEAD)
            < quinn_space
            && self.pop()
        {}
    }

    /// Records a datagram quinn accepted; returns how many older ones quinn dropped for it.
    fn push(&mut self, len: usize, capacity: usize) -> u64 {
        let mut dropped = 0;
        while self.memory + len + DATAGRAM_OVERHEAD > capacity && self.pop() {
            dropped += 1;
        }
        self.lens.push_back(len);
        self.memory += len + DATAGRAM_OVERHEAD;
        dropped
    }
}

/// Driver state of one connection.
struct Conn {
    conn: Connection,
    role: Role,
    /// Distinguishes this connection from a later one reusing its handle.
    generation: u64,
    /// Client side: the name we connected to.
    server_name: Option<String>,
    /// Until the handshake completes.
    handshake_deadline: Option<Instant>,
    connected: bool,
    /// `Closed` was emitted; nothing more is reported for this connection.
    closed: bool,
    control: Option<StreamId>,
    /// Control bytes accepted by `write_control` that the stream has not taken yet.
    control_out: Vec<u8>,
    control_stopped: Option<u64>,
    /// Control bytes sitting in the event queue.
    control_queued: usize,
    control_paused: bool,
    control_finished: bool,
    shadow: DatagramShadow,
    dropped_tx: u64,
    dropped_rx: u64,
    /// Drops not yet reported in an `Event::DatagramsDropped`.
    drops_unreported: u64,
    /// In `Driver::transmit_queue`: the connection may have something to send.
    queued_tx: bool,
    /// In `Driver::timer_dirty`: its entry in `Driver::timeouts` may be stale.
    timer_dirty: bool,
}

impl Conn {
    fn new(
        conn: Connection,
        role: Role,
        generation: u64,
        server_name: Option<String>,
        deadline: Option<Instant>,
    ) -> Self {
        Self {
            conn,
            role,
            generation,
            server_name,
            handshake_deadline: deadline,
            connected: false,
            closed: false,
            control: None,
            control_out: Vec::new(),
            control_stopped: None,
            control_queued: 0,
            control_paused: false,
            control_finished: false,
            shadow: DatagramShadow::default(),
            dropped_tx: 0,
            dropped_rx: 0,
            drops_unreported: 0,
            queued_tx: false,
            timer_dirty: false,
        }
    }
}

/// The sans-IO QUIC driver. See the [module documentation](super).
pub struct Driver {
    endpoint: Endpoint,
    config: DriverConfig,
    server_v4: Option<Arc<ServerConfig>>,
    server_v6: Option<Arc<ServerConfig>>,
    /// Indexed by quinn's connection handle.
    conns: Vec<Option<Conn>>,
    live: usize,
    next_generation: u64,
    /// Connections that may have something to send, in round-robin order. quinn only has new
    /// packets after an input (a received packet, a timer, a datagram or stream write, a
    /// close), so `poll_transmit` asks only the connections touched since they last returned
    /// nothing, instead of sweeping every connection each turn: with hundreds of idle peers
    /// the sweep cost more than the forwarding itself.
    transmit_queue: VecDeque<usize>,
    /// Next timer of each connection (quinn's and the handshake deadline), indexed like
    /// `conns`; a dense copy so `poll_timeout` scans a small vector instead of asking every
    /// connection.
    timeouts: Vec<Option<Instant>>,
    /// Connections whose `timeouts` entry must be recomputed before it is read.
    timer_dirty: Vec<usize>,
    /// The earliest of `timeouts` (`Some(None)`: no timer at all), or `None` when it must be
    /// found again by a scan: a busy turn then reads one value instead of scanning.
    earliest: Option<Option<Instant>>,
    /// Events with the generation of the connection they belong to.
    events: VecDeque<(u64, Event)>,
    queued_datagrams: usize,
    /// Connections with unreported datagram drops.
    drop_reports: VecDeque<ConnId>,
    responses: VecDeque<(Vec<u8>, Transmit)>,
    spare_buffers: Vec<Vec<u8>>,
    counters: DriverCounters,
}

impl fmt::Debug for Driver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Driver")
            .field("connections", &self.live)
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

impl Driver {
    /// A driver for a client (`server_crypto` is `None`) or a server that also accepts
    /// incoming connections with `server_crypto` (see [`super::tls::server_crypto`]).
    pub fn new(
        config: DriverConfig,
        server_crypto: Option<Arc<dyn quinn_proto::crypto::ServerConfig>>,
    ) -> Self {
        let mut endpoint_config = match config.reset_key {
            Some(key) => {
                let mut c = EndpointConfig::new(Arc::new(ring::hmac::Key::new(
                    ring::hmac::HMAC_SHA256,
                    &key,
                )));
                // The connection-id generator checks a keyed hash inside every id and drops
                // packets whose id fails it; a restarted server must recognise its old ids too,
                // or it drops them instead of answering with a stateless reset.
                let mut cid_key = [0u8; 8];
                cid_key.copy_from_slice(&key[..8]);
                let cid_key = u64::from_le_bytes(cid_key);
                c.cid_generator(move || {
                    Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key))
                });
                c
            }
            None => EndpointConfig::default(),
        };
        endpoint_config.rng_seed(config.rng_seed);
        let server_for = |probe: SocketAddr| {
            server_crypto.as_ref().map(|crypto| {
                let mut server = ServerConfig::with_crypto(crypto.clone());
                server.transport_config(config.transport.build(Role::Server, probe));
                Arc::new(server)
            })
        };
        let server_v4 = server_for(SocketAddr::from(([192, 0, 2, 1], 1)));
        let server_v6 = server_for(SocketAddr::from(([0x2001, 0xdb8, 0, 0, 0, 0, 0, 1], 1)));
        // `allow_mtud`: the io backends set IP_DONTFRAG / IPV6_DONTFRAG.
        let endpoint = Endpoint::new(Arc::new(endpoint_config), server_v4.clone(), true, None);
        Self {
            endpoint,
            config,
            server_v4,
            server_v6,
            conns: Vec::new(),
            live: 0,
            next_generation: 1,
            transmit_queue: VecDeque::new(),
            timeouts: Vec::new(),
            timer_dirty: Vec::new(),
            earliest: Some(None),
            events: VecDeque::new(),
            queued_datagrams: 0,
            drop_reports: VecDeque::new(),
            responses: VecDeque::new(),
            spare_buffers: Vec::new(),
            counters: DriverCounters::default(),
        }
    }

    /// The configuration this driver runs with.
    pub fn config(&self) -> &DriverConfig {
        &self.config
    }

    /// Caps the datagrams of one GSO batch, for a backend that cannot send more at once.
    pub fn set_max_transmit_datagrams(&mut self, max: usize) {
        self.config.max_transmit_datagrams = self.config.max_transmit_datagrams.min(max).max(1);
    }

    /// Endpoint-wide counters.
    pub fn counters(&self) -> DriverCounters {
        self.counters
    }

    /// Connections in any state (handshaking, established, draining).
    pub fn connection_count(&self) -> usize {
        self.live
    }

    /// Received DATAGRAMs waiting in the event queue for [`poll_event`](Self::poll_event). At
    /// [`DriverConfig::max_queued_datagrams`] further ones are dropped, so a loop stops feeding
    /// received batches well before that and drains events first.
    pub fn queued_datagram_events(&self) -> usize {
        self.queued_datagrams
    }

    /// Starts a connection to `server_addr`, verifying the server as `server_name`.
    ///
    /// The driver replaces the transport configuration of `client` with its own tuning for
    /// `server_addr`'s address family. Progress and the outcome arrive as events.
    ///
    /// # Errors
    ///
    /// [`ConnectError::TooManyConnections`] at the limit, or quinn's refusal (unspecified
    /// address, invalid server name).
    pub fn connect(
        &mut self,
        now: Instant,
        server_addr: SocketAddr,
        server_name: &str,
        mut client: quinn_proto::ClientConfig,
    ) -> Result<ConnId, ConnectError> {
        if self.live >= self.config.max_connections {
            return Err(ConnectError::TooManyConnections {
                max: self.config.max_connections,
            });
        }
        client.transport_config(self.config.transport.build(Role::Client, server_addr));
        let (handle, conn) = self
            .endpoint
            .connect(now, client, server_addr, server_name)?;
        self.insert(
            now,
            handle,
            conn,
            Role::Client,
            Some(server_name.to_owned()),
        );
        Ok(ConnId(handle))
    }

    fn insert(
        &mut self,
        now: Instant,
        handle: ConnectionHandle,
        conn: Connection,
        role: Role,
        server_name: Option<String>,
    ) {
        let idx = handle.0;
        if self.conns.len() <= idx {
            self.conns.resize_with(idx + 1, || None);
            self.timeouts.resize(idx + 1, None);
        }
        let generation = self.next_generation;
        self.next_generation += 1;
        // A timeout too large to add to `now` means no deadline rather than a panic.
        let deadline = now.checked_add(self.config.handshake_timeout);
        self.conns[idx] = Some(Conn::new(conn, role, generation, server_name, deadline));
        self.live += 1;
        self.drive(idx);
    }

    /// Handles one received UDP payload, or a GRO batch of datagrams `meta.stride` bytes each.
    ///
    /// Call for every receive completion, then drain [`poll_event`](Self::poll_event) and
    /// [`poll_transmit`](Self::poll_transmit). Never fails: unusable input is counted.
    pub fn handle_datagram(&mut self, now: Instant, meta: RecvMeta, mut data: BytesMut) {
        data.truncate(meta.len);
        let stride = if meta.stride == 0 {
            data.len()
        } else {
            meta.stride
        };
        let ecn = meta.ecn.and_then(EcnCodepoint::from_bits);
        while !data.is_empty() {
            let datagram = if data.len() > stride {
                data.split_to(stride)
            } else {
                data.split()
            };
            self.handle_one(now, meta.source, meta.dst_ip, ecn, datagram);
        }
    }

    fn handle_one(
        &mut self,
        now: Instant,
        source: SocketAddr,
        dst_ip: Option<IpAddr>,
        ecn: Option<EcnCodepoint>,
        datagram: BytesMut,
    ) {
        self.counters.datagrams_received += 1;
        let mut buf = self.spare_buffers.pop().unwrap_or_default();
        buf.clear();
        match self
            .endpoint
            .handle(now, source, dst_ip, ecn, datagram, &mut buf)
        {
            Some(DatagramEvent::ConnectionEvent(handle, event)) => {
                self.spare_buffers.push(buf);
                let idx = handle.0;
                let Some(state) = self.conns.get_mut(idx).and_then(Option::as_mut) else {
                    self.counters.unroutable_datagrams += 1;
                    return;
                };
                let before = frames_total(&state.conn.stats().frame_rx);
                state.conn.handle_event(event);
                if frames_total(&state.conn.stats().frame_rx) == before {
                    self.counters.rejected_datagrams += 1;
                }
                self.drive(idx);
            }
            Some(DatagramEvent::NewConnection(incoming)) => self.on_incoming(now, incoming, buf),
            Some(DatagramEvent::Response(transmit)) => self.queue_response(buf, transmit),
            None => {
                self.spare_buffers.push(buf);
                self.counters.unroutable_datagrams += 1;
            }
        }
    }

    fn on_incoming(&mut self, now: Instant, incoming: Incoming, mut buf: Vec<u8>) {
        let remote = incoming.remote_address();
        let server =
            if super::config::max_udp_payload_for(remote) == super::config::MAX_UDP_PAYLOAD_V4 {
                self.server_v4.clone()
            } else {
                self.server_v6.clone()
            };
        if self.live >= self.config.max_connections || server.is_none() {
            self.counters.connections_refused += 1;
            let transmit = self.endpoint.refuse(incoming, &mut buf);
            self.queue_response(buf, transmit);
            return;
        }
        // Under handshake pressure, make unproven sources echo a Retry token first (RFC 9000
        // §8.1.2): spoofed Initials then cost one stateless packet instead of a connection slot.
        let incoming = if !incoming.remote_address_validated()
            && incoming.may_retry()
            && self.handshaking() >= self.config.retry_above_handshakes
        {
            match self.endpoint.retry(incoming, &mut buf) {
                Ok(transmit) => {
                    self.counters.retries_sent += 1;
                    self.queue_response(buf, transmit);
                    return;
                }
                Err(err) => err.into_incoming(),
            }
        } else {
            incoming
        };
        match self.endpoint.accept(incoming, now, &mut buf, server) {
            Ok((handle, conn)) => {
                self.spare_buffers.push(buf);
                self.counters.connections_accepted += 1;
                self.insert(now, handle, conn, Role::Server, None);
            }
            Err(err) => {
                self.counters.accept_failures += 1;
                match err.response {
                    Some(transmit) => self.queue_response(buf, transmit),
                    None => self.spare_buffers.push(buf),
                }
            }
        }
    }

    /// Connections whose handshake is still running.
    fn handshaking(&self) -> usize {
        self.conns
            .iter()
            .flatten()
            .filter(|c| !c.connected && !c.closed)
            .count()
    }

    fn queue_response(&mut self, buf: Vec<u8>, transmit: Transmit) {
        if self.responses.len() >= self.config.max_queued_responses {
            self.counters.responses_dropped += 1;
            self.spare_buffers.push(buf);
            return;
        }
        self.counters.stateless_responses += 1;
        self.responses.push_back((buf, transmit));
    }

    /// Fills `buf` (cleared first) with the next batch to send: one datagram or a GSO batch of
    /// up to [`DriverConfig::max_transmit_datagrams`] from one connection. Connections take
    /// turns (round robin); stateless responses go first.
    ///
    /// Call until it returns `None` after every `handle_*` call and command. The caller owns
    /// `buf` and may keep it until the send completes, passing another buffer next time.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<TransmitMeta> {
        buf.clear();
        if let Some((response, transmit)) = self.responses.pop_front() {
            buf.extend_from_slice(&response[..transmit.size.min(response.len())]);
            if self.spare_buffers.len() < self.config.max_queued_responses {
                self.spare_buffers.push(response);
            }
            return Some(transmit_meta(&transmit, buf.len()));
        }
        let max_datagrams = self.config.max_transmit_datagrams.max(1);
        while let Some(idx) = self.transmit_queue.pop_front() {
            // An entry of a connection that drained meanwhile, or a duplicate left by a
            // connection that reused the index: skip it.
            let Some(state) = self.conns.get_mut(idx).and_then(Option::as_mut) else {
                continue;
            };
            if !state.queued_tx {
                continue;
            }
            // Sending arms loss-detection timers; finding nothing to send may arm pacing.
            mark_timer(&mut self.timer_dirty, state, idx);
            self.counters.transmit_polls += 1;
            let Some(transmit) = state.conn.poll_transmit(now, max_datagrams, buf) else {
                state.queued_tx = false;
                continue;
            };
            state.shadow.on_sent(state.conn.stats().frame_tx.datagram);
            // It may have more: back of the line, so connections take turns.
            self.transmit_queue.push_back(idx);
            self.drive(idx);
            return Some(transmit_meta(&transmit, buf.len()));
        }
        None
    }

    /// The next time [`handle_timeout`](Self::handle_timeout) must be called, if any.
    ///
    /// Call after every `handle_*`, `poll_transmit` and command; the answer may change.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        self.refresh_timeouts();
        match self.earliest {
            Some(earliest) => earliest,
            None => {
                let earliest = self.timeouts.iter().flatten().min().copied();
                self.earliest = Some(earliest);
                earliest
            }
        }
    }

    /// Recomputes the `timeouts` entries of the connections touched since the last call.
    fn refresh_timeouts(&mut self) {
        for idx in self.timer_dirty.drain(..) {
            let Some(state) = self.conns.get_mut(idx).and_then(Option::as_mut) else {
                continue;
            };
            state.timer_dirty = false;
            let quinn = state.conn.poll_timeout();
            let new = match (quinn, state.handshake_deadline) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let old = std::mem::replace(&mut self.timeouts[idx], new);
            if let Some(earliest) = self.earliest {
                if new.is_some_and(|n| earliest.is_none_or(|e| n < e)) {
                    // Earlier than every other timer.
                    self.earliest = Some(new);
                } else if old.is_some() && old == earliest && new != old {
                    // This connection held the earliest timer and moved it: scan again.
                    self.earliest = None;
                }
            }
        }
    }

    /// Runs the timers due at `now`: loss detection, keep-alives, idle and handshake timeouts.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.poll_timeout().is_none_or(|t| t > now) {
            return;
        }
        for idx in 0..self.timeouts.len() {
            if self.timeouts[idx].is_none_or(|t| t > now) {
                continue;
            }
            let Some(state) = self.conns[idx].as_mut() else {
                continue;
            };
            let mut due = false;
            if state.handshake_deadline.is_some_and(|d| d <= now) {
                state.handshake_deadline = None;
                due = true;
                if !state.closed {
                    state.closed = true;
                    state.conn.close(
                        now,
                        VarInt::from_u32(CLOSE_HANDSHAKE_TIMEOUT),
                        Bytes::from_static(b"handshake timeout"),
                    );
                    self.counters.handshakes_timed_out += 1;
                    let reason = format!(
                        "handshake did not finish within {} s",
                        self.config.handshake_timeout.as_secs_f32()
                    );
                    let generation = state.generation;
                    self.events.push_back((
                        generation,
                        Event::Closed {
                            conn: ConnId(ConnectionHandle(idx)),
                            reason,
                            cause: CloseCause::HandshakeTimedOut,
                        },
                    ));
                }
            }
            if state.conn.poll_timeout().is_some_and(|t| t <= now) {
                state.conn.handle_timeout(now);
                due = true;
            }
            if due {
                self.drive(idx);
            } else {
                // Nothing was due after all: recompute rather than report a past time forever.
                mark_timer(&mut self.timer_dirty, state, idx);
            }
        }
    }

    /// The next event, if any. Drain after every `handle_*` call and command.
    pub fn poll_event(&mut self) -> Option<Event> {
        while let Some(conn) = self.drop_reports.pop_front() {
            if let Some(state) = self.conns.get_mut(conn.index()).and_then(Option::as_mut) {
                let count = std::mem::take(&mut state.drops_unreported);
                if count > 0 && !state.closed {
                    return Some(Event::DatagramsDropped { conn, count });
                }
            }
        }
        let (generation, event) = self.events.pop_front()?;
        match &event {
            Event::Datagram { .. } => self.queued_datagrams -= 1,
            Event::ControlBytes { conn, bytes } => {
                let idx = conn.index();
                if let Some(state) = self.conns.get_mut(idx).and_then(Option::as_mut)
                    && state.generation == generation
                {
                    state.control_queued = state.control_queued.saturating_sub(bytes.len());
                    if state.control_paused
                        && state.control_queued < self.config.max_queued_control_bytes
                    {
                        state.control_paused = false;
                        read_control(
                            ConnId(ConnectionHandle(idx)),
                            state,
                            &mut self.events,
                            &self.config,
                        );
                        // Reading may have opened the flow-control window: MAX_STREAM_DATA.
                        mark_transmit(&mut self.transmit_queue, state, idx);
                        mark_timer(&mut self.timer_dirty, state, idx);
                    }
                }
            }
            _ => {}
        }
        Some(event)
    }

    /// Queues a DATAGRAM on `conn`. When the send buffer is full (congestion control holds
    /// back what is queued) something is dropped, counted in
    /// [`ConnStats::datagrams_dropped_tx`] and reported by [`Event::DatagramsDropped`]: a
    /// datagram larger than [`SMALL_DATAGRAM`] (bulk) is dropped itself, a small one (a game
    /// packet, a TCP ACK, a ping) pushes out the oldest queued datagrams instead. A bulk flow
    /// that fills the buffer then loses its own newest frames, and the small frames of
    /// everyone else still get through.
    ///
    /// # Errors
    ///
    /// See [`DatagramError`]; nothing is queued on error.
    pub fn send_datagram(&mut self, conn: ConnId, data: Bytes) -> Result<(), DatagramError> {
        let capacity = self.config.transport.datagram_send_buffer;
        let state = self
            .conns
            .get_mut(conn.index())
            .and_then(Option::as_mut)
            .ok_or(DatagramError::UnknownConnection)?;
        if state.closed || state.conn.is_closed() {
            return Err(DatagramError::Closed);
        }
        if !state.connected {
            return Err(DatagramError::NotConnected);
        }
        let len = data.len();
        let space = state.conn.datagrams().send_buffer_space();
        state.shadow.resync(capacity, space);
        if len > SMALL_DATAGRAM && space < len && len <= capacity {
            count_tx_drops(state, &mut self.counters, &mut self.drop_reports, conn, 1);
            return Ok(());
        }
        match state.conn.datagrams().send(data, true) {
            Ok(()) => {
                mark_transmit(&mut self.transmit_queue, state, conn.index());
                let dropped = state.shadow.push(len, capacity);
                if dropped > 0 {
                    let reports = &mut self.drop_reports;
                    count_tx_drops(state, &mut self.counters, reports, conn, dropped);
                }
                Ok(())
            }
            Err(SendDatagramError::TooLarge) => Err(DatagramError::TooLarge {
                size: len,
                max: state.conn.datagrams().max_size().unwrap_or(0),
            }),
            Err(SendDatagramError::UnsupportedByPeer | SendDatagramError::Disabled) => {
                Err(DatagramError::UnsupportedByPeer)
            }
            // Unreachable with `drop = true`; nothing was queued either way.
            Err(SendDatagramError::Blocked(_)) => Err(DatagramError::TooLarge {
                size: len,
                max: capacity,
            }),
        }
    }

    /// Queues the same DATAGRAM on every connection in `conns` (refcount clones, no copies).
    /// Returns how many took it; the others are counted in
    /// [`DriverCounters::datagrams_unsendable`].
    pub fn send_datagram_to_many(&mut self, conns: &[ConnId], data: Bytes) -> usize {
        let mut sent = 0;
        for &conn in conns {
            if self.send_datagram(conn, data.clone()).is_ok() {
                sent += 1;
            } else {
                self.counters.datagrams_unsendable += 1;
            }
        }
        sent
    }

    /// Writes `bytes` to the control stream of `conn`, all or nothing.
    ///
    /// Bytes are buffered (up to [`DriverConfig::control_send_buffer`]) until the stream exists
    /// and flow control lets them go: a client's stream opens when the handshake completes, a
    /// server's when the client's first control bytes arrive.
    ///
    /// # Errors
    ///
    /// [`ControlError::BufferFull`] when the bytes do not fit (nothing is written), or the
    /// connection is unknown, closed or its control stream stopped by the peer.
    pub fn write_control(&mut self, conn: ConnId, bytes: &[u8]) -> Result<(), ControlError> {
        let capacity = self.config.control_send_buffer;
        let state = self
            .conns
            .get_mut(conn.index())
            .and_then(Option::as_mut)
            .ok_or(ControlError::UnknownConnection)?;
        if state.closed || state.conn.is_closed() {
            return Err(ControlError::Closed);
        }
        if let Some(code) = state.control_stopped {
            return Err(ControlError::Stopped { code });
        }
        if state.control_out.len() + bytes.len() > capacity {
            return Err(ControlError::BufferFull {
                queued: state.control_out.len(),
                capacity,
                wanted: bytes.len(),
            });
        }
        state.control_out.extend_from_slice(bytes);
        flush_control(state);
        mark_transmit(&mut self.transmit_queue, state, conn.index());
        mark_timer(&mut self.timer_dirty, state, conn.index());
        Ok(())
    }

    /// Closes `conn` with an application error `code` and `reason` sent to the peer.
    /// Emits [`Event::Closed`] right away; the connection drains in the background.
    /// Returns `false` if the connection was unknown or already closed.
    pub fn close(&mut self, now: Instant, conn: ConnId, code: u32, reason: &str) -> bool {
        let Some(state) = self.conns.get_mut(conn.index()).and_then(Option::as_mut) else {
            return false;
        };
        if state.closed {
            return false;
        }
        state.closed = true;
        state.handshake_deadline = None;
        state.conn.close(
            now,
            VarInt::from_u32(code),
            Bytes::copy_from_slice(reason.as_bytes()),
        );
        let generation = state.generation;
        self.events.push_back((
            generation,
            Event::Closed {
                conn,
                reason: format!("closed locally: {reason} (code {code})"),
                cause: CloseCause::Local,
            },
        ));
        self.drive(conn.index());
        true
    }

    /// The largest DATAGRAM `conn` can send now (grows as PMTUD finds a larger MTU), or `None`
    /// before the handshake completes or for an unknown connection.
    pub fn max_datagram_size(&mut self, conn: ConnId) -> Option<usize> {
        let state = self.conns.get_mut(conn.index())?.as_mut()?;
        if !state.connected {
            return None;
        }
        state.conn.datagrams().max_size()
    }

    /// Bytes of DATAGRAM payload `conn` can queue right now without dropping an older queued
    /// one, or `None` before the handshake completes or for an unknown connection. A sender that
    /// must not lose its own datagrams paces itself by this instead of relying on drop-oldest.
    pub fn datagram_send_space(&mut self, conn: ConnId) -> Option<usize> {
        let state = self.conns.get_mut(conn.index())?.as_mut()?;
        if !state.connected || state.closed {
            return None;
        }
        Some(state.conn.datagrams().send_buffer_space())
    }

    /// Statistics of `conn`, or `None` if unknown.
    pub fn stats(&self, conn: ConnId) -> Option<ConnStats> {
        let state = self.conns.get(conn.index())?.as_ref()?;
        let stats = state.conn.stats();
        Some(ConnStats {
            rtt: stats.path.rtt,
            cwnd: stats.path.cwnd,
            mtu: stats.path.current_mtu,
            sent_packets: stats.path.sent_packets,
            lost_packets: stats.path.lost_packets,
            datagrams_sent: stats.frame_tx.datagram,
            datagrams_received: stats.frame_rx.datagram,
            datagrams_dropped_tx: state.dropped_tx,
            datagrams_dropped_rx: state.dropped_rx,
        })
    }

    /// The peer address of `conn`, or `None` if unknown.
    pub fn remote_address(&self, conn: ConnId) -> Option<SocketAddr> {
        Some(
            self.conns
                .get(conn.index())?
                .as_ref()?
                .conn
                .remote_address(),
        )
    }

    /// Processes everything a connection has to tell after quinn got input: endpoint events
    /// (CIDs, drained) and application events.
    ///
    /// Every caller just gave the connection input (or sent from it), so this also queues it
    /// for `poll_transmit` and marks its timer for `poll_timeout`.
    fn drive(&mut self, idx: usize) {
        let conn_id = ConnId(ConnectionHandle(idx));
        if let Some(state) = self.conns.get_mut(idx).and_then(Option::as_mut) {
            mark_transmit(&mut self.transmit_queue, state, idx);
            mark_timer(&mut self.timer_dirty, state, idx);
        }
        loop {
            let Self {
                conns,
                endpoint,
                events,
                counters,
                config,
                queued_datagrams,
                live,
                timeouts,
                ..
            } = self;
            let Some(state) = conns.get_mut(idx).and_then(Option::as_mut) else {
                return;
            };
            app_events(conn_id, state, events, counters, config, queued_datagrams);
            let Some(event) = state.conn.poll_endpoint_events() else {
                return;
            };
            let drained = event.is_drained();
            if let Some(reply) = endpoint.handle_event(conn_id.0, event) {
                state.conn.handle_event(reply);
            }
            if drained {
                app_events(conn_id, state, events, counters, config, queued_datagrams);
                if !state.closed {
                    // Drained without a ConnectionLost (should not happen): still report it.
                    events.push_back((
                        state.generation,
                        Event::Closed {
                            conn: conn_id,
                            reason: "connection drained".to_owned(),
                            cause: CloseCause::Lost(ConnectionError::LocallyClosed),
                        },
                    ));
                }
                conns[idx] = None;
                if timeouts[idx].take().is_some() {
                    // It may have held the earliest timer.
                    self.earliest = None;
                }
                *live -= 1;
                return;
            }
        }
    }
}

/// Queues connection `idx` for `poll_transmit` unless it is queued already.
fn mark_transmit(queue: &mut VecDeque<usize>, state: &mut Conn, idx: usize) {
    if !state.queued_tx {
        state.queued_tx = true;
        queue.push_back(idx);
    }
}

/// Marks the `timeouts` entry of connection `idx` stale.
fn mark_timer(dirty: &mut Vec<usize>, state: &mut Conn, idx: usize) {
    if !state.timer_dirty {
        state.timer_dirty = true;
        dirty.push(idx);
    }
}

fn transmit_meta(transmit: &Transmit, len: usize) -> TransmitMeta {
    TransmitMeta {
        destination: transmit.destination,
        src_ip: transmit.src_ip,
        ecn: transmit.ecn.map(|e| e as u8),
        segment_size: transmit.segment_size,
        len,
    }
}

/// Frames of every type but PADDING; a packet that authenticates carries at least one.
fn frames_total(f: &FrameStats) -> u64 {
    f.acks
        + f.ack_frequency
        + f.crypto
        + f.connection_close
        + f.data_blocked
        + f.datagram
        + u64::from(f.handshake_done)
        + f.immediate_ack
        + f.max_data
        + f.max_stream_data
        + f.max_streams_bidi
        + f.max_streams_uni
        + f.new_connection_id
        + f.new_token
        + f.path_challenge
        + f.path_response
        + f.ping
        + f.reset_stream
        + f.retire_connection_id
        + f.stream_data_blocked
        + f.streams_blocked_bidi
        + f.streams_blocked_uni
        + f.stop_sending
        + f.stream
}

/// A readable reason for a lost connection.
fn describe(err: &ConnectionError) -> String {
    match err {
        ConnectionError::TimedOut => "peer stopped responding (idle timeout)".to_owned(),
        ConnectionError::Reset => "reset by peer (it probably restarted)".to_owned(),
        ConnectionError::ApplicationClosed(close) => format!("closed by peer: {close}"),
        ConnectionError::TransportError(e) => tidy(format!("connection failed: {e}")),
        ConnectionError::ConnectionClosed(close) => tidy(format!("aborted by peer: {close}")),
        other => other.to_string(),
    }
}

/// rustls shows a custom certificate error with `Debug` (`Other(OtherError(..))`); keep only
/// the inner message, which carries the pin mismatch with both fingerprints.
fn tidy(reason: String) -> String {
    const WRAPPER: &str = "Other(OtherError(";
    match reason.find(WRAPPER) {
        Some(start) => {
            let inner = &reason[start + WRAPPER.len()..];
            let inner = inner.strip_suffix("))").unwrap_or(inner);
            format!("{}{inner}", &reason[..start])
        }
        None => reason,
    }
}

fn app_events(
    conn_id: ConnId,
    state: &mut Conn,
    events: &mut VecDeque<(u64, Event)>,
    counters: &mut DriverCounters,
    config: &DriverConfig,
    queued_datagrams: &mut usize,
) {
    while let Some(event) = state.conn.poll() {
        match event {
            quinn_proto::Event::Connected => {
                state.connected = true;
                state.handshake_deadline = None;
                counters.handshakes_completed += 1;
                if state.closed {
                    continue;
                }
                let identity = peer_identity(state);
                events.push_back((
                    state.generation,
                    Event::Connected {
                        conn: conn_id,
                        remote: state.conn.remote_address(),
                        identity,
                    },
                ));
                if state.role == Role::Client {
                    open_control(state);
                }
            }
            quinn_proto::Event::ConnectionLost { reason } => {
                state.handshake_deadline = None;
                if !state.closed {
                    state.closed = true;
                    events.push_back((
                        state.generation,
                        Event::Closed {
                            conn: conn_id,
                            reason: describe(&reason),
                            cause: CloseCause::Lost(reason),
                        },
                    ));
                }
            }
            quinn_proto::Event::Stream(StreamEvent::Opened { dir }) => {
                accept_streams(conn_id, state, dir, events, counters, config);
            }
            quinn_proto::Event::Stream(StreamEvent::Readable { id }) => {
                if state.control == Some(id) {
                    read_control(conn_id, state, events, config);
                }
            }
            quinn_proto::Event::Stream(StreamEvent::Writable { id }) => {
                if state.control == Some(id) {
                    flush_control(state);
                }
            }
            quinn_proto::Event::Stream(StreamEvent::Available { dir: Dir::Bi }) => {
                if state.role == Role::Client && state.connected {
                    open_control(state);
                }
            }
            quinn_proto::Event::Stream(StreamEvent::Stopped { id, error_code }) => {
                if state.control == Some(id) {
                    state.control_stopped = Some(error_code.into_inner());
                    state.control_out.clear();
                }
                // The peer will not read: reset our half so quinn frees the stream (it waits
                // for the application to do so).
                let _ = state.conn.send_stream(id).reset(error_code);
            }
            quinn_proto::Event::DatagramReceived => {
                while let Some(bytes) = state.conn.datagrams().recv() {
                    if *queued_datagrams >= config.max_queued_datagrams || state.closed {
                        state.dropped_rx += 1;
                        counters.datagrams_dropped_rx += 1;
                        continue;
                    }
                    *queued_datagrams += 1;
                    events.push_back((
                        state.generation,
                        Event::Datagram {
                            conn: conn_id,
                            bytes,
                        },
                    ));
                }
            }
            quinn_proto::Event::Stream(_)
            | quinn_proto::Event::HandshakeDataReady
            | quinn_proto::Event::DatagramsUnblocked => {}
        }
    }
}

fn peer_identity(state: &Conn) -> PeerIdentity {
    let session = state.conn.crypto_session();
    let cert_fingerprint = session
        .peer_identity()
        .and_then(|any| any.downcast::<Vec<CertificateDer<'static>>>().ok())
        .and_then(|certs| certs.first().map(|c| Fingerprint::of(c.as_ref())));
    let server_name = match state.role {
        Role::Client => state.server_name.clone(),
        Role::Server => session
            .handshake_data()
            .and_then(|any| any.downcast::<HandshakeData>().ok())
            .and_then(|data| data.server_name),
    };
    PeerIdentity {
        server_name,
        cert_fingerprint,
    }
}

fn open_control(state: &mut Conn) {
    if state.control.is_none()
        && let Some(id) = state.conn.streams().open(Dir::Bi)
    {
        state.control = Some(id);
        flush_control(state);
    }
}

/// Accepts the peer's first bidirectional stream as the control stream (server side) and
/// refuses every other stream.
fn accept_streams(
    conn_id: ConnId,
    state: &mut Conn,
    dir: Dir,
    events: &mut VecDeque<(u64, Event)>,
    counters: &mut DriverCounters,
    config: &DriverConfig,
) {
    while let Some(id) = state.conn.streams().accept(dir) {
        if dir == Dir::Bi && state.role == Role::Server && state.control.is_none() {
            state.control = Some(id);
            flush_control(state);
            read_control(conn_id, state, events, config);
            continue;
        }
        counters.streams_refused += 1;
        let code = VarInt::from_u32(STREAM_REFUSED);
        // Both calls only fail on a stream that is already closed, which is what we want.
        let _ = state.conn.recv_stream(id).stop(code);
        if dir == Dir::Bi {
            let _ = state.conn.send_stream(id).reset(code);
        }
    }
}

/// Moves control bytes from the stream to the event queue, up to the per-connection limit.
fn read_control(
    conn_id: ConnId,
    state: &mut Conn,
    events: &mut VecDeque<(u64, Event)>,
    config: &DriverConfig,
) {
    let Some(id) = state.control else {
        return;
    };
    if state.control_finished {
        return;
    }
    let generation = state.generation;
    let mut recv = state.conn.recv_stream(id);
    let Ok(mut chunks) = recv.read(true) else {
        return;
    };
    loop {
        let room = config
            .max_queued_control_bytes
            .saturating_sub(state.control_queued);
        if room == 0 {
            state.control_paused = true;
            break;
        }
        match chunks.next(room) {
            Ok(Some(chunk)) => {
                state.control_queued += chunk.bytes.len();
                events.push_back((
                    generation,
                    Event::ControlBytes {
                        conn: conn_id,
                        bytes: chunk.bytes,
                    },
                ));
            }
            Ok(None) | Err(ReadError::Reset(_)) => {
                state.control_finished = true;
                events.push_back((generation, Event::ControlFinished { conn: conn_id }));
                break;
            }
            Err(ReadError::Blocked) => break,
        }
    }
    // Whether a flow-control update must go out is picked up by the next poll_transmit.
    let _ = chunks.finalize();
}

/// Hands buffered control bytes to the stream as far as flow control allows.
fn flush_control(state: &mut Conn) {
    let Some(id) = state.control else {
        return;
    };
    while !state.control_out.is_empty() {
        match state.conn.send_stream(id).write(&state.control_out) {
            Ok(0) | Err(WriteError::Blocked) => break,
            Ok(n) => {
                state.control_out.drain(..n);
            }
            Err(WriteError::Stopped(code)) => {
                state.control_stopped = Some(code.into_inner());
                state.control_out.clear();
            }
            Err(WriteError::ClosedStream) => {
                state.control_out.clear();
            }
        }
    }
}
