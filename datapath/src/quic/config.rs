//! Driver limits and the QUIC transport tuning, each number with the reason it has that value.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::congestion::{BoundedCubicConfig, WindowBound};
use quinn_proto::{AckFrequencyConfig, IdleTimeout, MtuDiscoveryConfig, TransportConfig, VarInt};

/// Largest UDP payload on a 1500-byte IPv4 path: 1500 - 20 (IPv4) - 8 (UDP).
pub const MAX_UDP_PAYLOAD_V4: u16 = 1472;
/// Largest UDP payload on a 1500-byte IPv6 path: 1500 - 40 (IPv6) - 8 (UDP).
pub const MAX_UDP_PAYLOAD_V6: u16 = 1452;
/// The UDP payload every QUIC path must carry (RFC 9000 §14: "a minimum IP packet size of 1280
/// bytes"... "UDP datagrams ... of at least 1200 bytes").
pub const MIN_UDP_PAYLOAD: u16 = 1200;

/// Limits and tuning of a [`Driver`](super::Driver).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DriverConfig {
    /// Most datagrams in one [`poll_transmit`](super::Driver::poll_transmit) batch (GSO
    /// segments). Linux accepts up to 64 segments per `UDP_SEGMENT` send; 32 keeps one batch
    /// (about 46 KiB) from hogging the socket while other connections wait their turn.
    pub max_transmit_datagrams: usize,
    /// Most connections (handshaking, established and draining) at once; further Initials are
    /// refused with CONNECTION_REFUSED. Bounds memory against connection floods.
    pub max_connections: usize,
    /// A connection that has not completed its handshake this long after it started is closed
    /// and counted. Shorter than the idle timeout so half-open peers free their slot quickly.
    pub handshake_timeout: Duration,
    /// Handshakes in progress above which new sources must first echo a Retry token, proving
    /// their address: a flood of spoofed Initials then costs a stateless packet each instead of
    /// a connection slot. Legitimate clients pay one extra round trip only while under pressure.
    pub retry_above_handshakes: usize,
    /// Most received DATAGRAM payloads waiting in the event queue for the caller; further ones
    /// are dropped and counted. The caller is expected to drain events every loop turn.
    pub max_queued_datagrams: usize,
    /// Most control-stream bytes waiting in the event queue per connection; past this the
    /// driver stops reading the stream, so QUIC flow control pushes back on the peer.
    pub max_queued_control_bytes: usize,
    /// Most control bytes buffered per connection by `write_control` before the stream takes
    /// them; past this `write_control` fails with `ControlError::BufferFull`.
    pub control_send_buffer: usize,
    /// Most stateless responses (refusals, version negotiation, stateless resets) waiting for
    /// `poll_transmit`; further ones are dropped and counted.
    pub max_queued_responses: usize,
    /// Seed for the endpoint's random numbers; `None` seeds from the operating system. Tests
    /// set it for reproducible runs.
    pub rng_seed: Option<[u8; 32]>,
    /// Key for stateless reset tokens; `None` picks a random one. A server that keeps it
    /// across restarts (see [`super::tls::ServerIdentity::reset_key`]) answers packets of
    /// connections it lost in a restart with a stateless reset (RFC 9000 section 10.3), so
    /// peers reconnect at once instead of after their idle timeout.
    pub reset_key: Option<[u8; 32]>,
    /// QUIC transport parameters shared by every connection.
    pub transport: TransportSettings,
}

impl Default for DriverConfig {
    fn default() -> Self {
        Self {
            max_transmit_datagrams: 32,
            max_connections: 4096,
            handshake_timeout: Duration::from_secs(10),
            retry_above_handshakes: 256,
            max_queued_datagrams: 4096,
            max_queued_control_bytes: 64 * 1024,
            control_send_buffer: 64 * 1024,
            max_queued_responses: 64,
            rng_seed: None,
            reset_key: None,
            transport: TransportSettings::default(),
        }
    }
}

/// QUIC transport tuning for softlan: Ethernet frames as DATAGRAMs plus one small control stream.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TransportSettings {
    /// Bytes of DATAGRAM payload quinn may queue per connection before dropping the oldest.
    /// quinn's default is 1 MiB, which at 10 Mbit/s is 800 ms of queue: frames that old are
    /// useless to a game and only delay the fresh ones (bufferbloat). 64 KiB is about 45
    /// full-size frames, enough to absorb a burst while the congestion window opens.
    pub datagram_send_buffer: usize,
    /// Bytes of received DATAGRAM payload quinn holds before the driver moves them to its event
    /// queue. The driver drains after every packet, so this only needs a few packets' worth;
    /// quinn also advertises it (capped at 64 KiB) as the largest DATAGRAM frame it accepts.
    pub datagram_receive_buffer: usize,
    /// Idle timeout: a peer silent this long is gone. 30 s rides out a Wi-Fi roam or a short
    /// outage without keeping dead peers in a room for minutes.
    pub idle_timeout: Duration,
    /// Keep-alive interval. Home NATs drop UDP mappings after as little as 30 s of silence, and
    /// a quiet player (menu, loading screen) must stay reachable; 5 s is cheap (one PING).
    pub keep_alive: Duration,
    /// Receive window of the control stream. It carries small JSON frames only, so a small
    /// window bounds what a hostile peer can make us buffer.
    pub stream_receive_window: u32,
    /// Connection-wide receive window (all streams); one control stream, so twice its window.
    pub receive_window: u32,
    /// Bytes of unacknowledged stream data we keep per connection.
    pub send_window: u64,
    /// Probe for larger MTUs (DPLPMTUD, RFC 8899) up to the 1500-byte-path limit of the
    /// address family. Larger packets mean fewer fragmented Ethernet frames.
    pub mtu_discovery: bool,
    /// Initial RTT estimate before any sample (quinn's default is 333 ms, meant for the open
    /// Internet; relays are usually closer, so handshake retransmits come sooner).
    pub initial_rtt: Duration,
    /// ACK frequency asked of the peer (draft-ietf-quic-ack-frequency, which quinn implements
    /// and advertises with `min_ack_delay`): `None` leaves QUIC's default of an ACK every
    /// second ack-eliciting packet. See [`AckFrequency`].
    ///
    /// Off by default: in `lanparty-perf bench relay` (loopback, GSO/GRO batches) a driver
    /// already sends one ACK per received batch, about one per 20 packets, so the request cut
    /// the relay's ACK packets only from 0.055 to 0.035 per forwarded frame, while the relay's
    /// CPU per 1400-byte frame rose by about 10 % (2158–2255 ns off, 2458–2523 ns with an ACK
    /// per 10 packets and 2 ms delay): the sparser feedback held the senders' congestion
    /// windows back, so batches were smaller and the relay woke more often per frame.
    pub ack_frequency: Option<AckFrequency>,
    /// Bound on the congestion window (see [`super::congestion`]); `None` leaves quinn's Cubic
    /// unbounded. On by default, for every peer and the relay.
    pub window_bound: Option<WindowBound>,
}

/// How often the peer should acknowledge our packets, sent to it in an ACK_FREQUENCY frame when
/// it supports the extension (quinn does; others ignore it and keep their default).
///
/// Every ACK costs a packet: sealed, sent, received and opened at both ends. A relay forwarding
/// a stream of DATAGRAMs receives ACKs from each egress peer and sends ACKs to each ingress
/// peer. DATAGRAMs are never retransmitted, so ACKs only feed congestion control and RTT
/// estimates, which need a few per round trip, not one per two packets. Where packets arrive
/// one by one (a paced sender on a real path, no GRO batches) the default below cuts the
/// receiver's ACK packets from one per two packets to one per ten
/// (`peers_ask_each_other_to_acknowledge_every_tenth_packet` in `tests/quic_scenarios.rs`).
///
/// The cost: a sender whose congestion window holds fewer packets than the threshold waits up
/// to `max_ack_delay` for each ACK, which on a sub-millisecond path is a stall; hence the short
/// 2 ms default rather than quinn's 25 ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct AckFrequency {
    /// Ack-eliciting packets the peer may receive without acknowledging them at once (the
    /// draft's "Ack-Eliciting Threshold"; QUIC's default behaviour is 1). Default 9: an ACK
    /// per ten packets.
    pub ack_eliciting_threshold: u32,
    /// The longest the peer may delay an ACK. quinn clamps the request to at least the peer's
    /// `min_ack_delay` (1 ms for quinn) and at most the greater of the RTT and 25 ms.
    pub max_ack_delay: Duration,
}

impl Default for AckFrequency {
    fn default() -> Self {
        Self {
            ack_eliciting_threshold: 9,
            max_ack_delay: Duration::from_millis(2),
        }
    }
}

impl Default for TransportSettings {
    fn default() -> Self {
        Self {
            datagram_send_buffer: 64 * 1024,
            datagram_receive_buffer: 128 * 1024,
            idle_timeout: Duration::from_secs(30),
            keep_alive: Duration::from_secs(5),
            stream_receive_window: 64 * 1024,
            receive_window: 128 * 1024,
            send_window: 256 * 1024,
            mtu_discovery: true,
            initial_rtt: Duration::from_millis(100),
            ack_frequency: None,
            window_bound: Some(WindowBound::default()),
        }
    }
}

/// Which end of a connection a transport configuration is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Client,
    Server,
}

impl TransportSettings {
    /// The quinn transport configuration for one connection to or from `remote`.
    pub(crate) fn build(&self, role: Role, remote: SocketAddr) -> Arc<TransportConfig> {
        let mut t = TransportConfig::default();
        // Streams the *peer* may open. A client opens exactly one bidirectional stream, the
        // control stream; a server opens none. Nobody uses unidirectional streams.
        let peer_bidi = match role {
            Role::Server => 1u32,
            Role::Client => 0,
        };
        t.max_concurrent_bidi_streams(VarInt::from_u32(peer_bidi))
            .max_concurrent_uni_streams(VarInt::from_u32(0))
            .stream_receive_window(VarInt::from_u32(self.stream_receive_window))
            .receive_window(VarInt::from_u32(self.receive_window))
            .send_window(self.send_window)
            .datagram_send_buffer_size(self.datagram_send_buffer)
            .datagram_receive_buffer_size(Some(self.datagram_receive_buffer))
            .keep_alive_interval(Some(self.keep_alive))
            .initial_rtt(self.initial_rtt)
            // Every path carries 1200 bytes; start there and let PMTUD climb.
            .initial_mtu(MIN_UDP_PAYLOAD)
            .min_mtu(MIN_UDP_PAYLOAD)
            .enable_segmentation_offload(true);
        if let Some(bound) = self.window_bound {
            t.congestion_controller_factory(Arc::new(BoundedCubicConfig::new(bound)));
        }
        // An idle timeout above the varint limit cannot be configured; fall back to quinn's.
        if let Ok(idle) = IdleTimeout::try_from(self.idle_timeout) {
            t.max_idle_timeout(Some(idle));
        }
        if let Some(ack) = self.ack_frequency {
            let mut c = AckFrequencyConfig::default();
            c.ack_eliciting_threshold(VarInt::from_u32(ack.ack_eliciting_threshold))
                .max_ack_delay(Some(ack.max_ack_delay));
            t.ack_frequency_config(Some(c));
        }
        if self.mtu_discovery {
            let mut mtud = MtuDiscoveryConfig::default();
            mtud.upper_bound(max_udp_payload_for(remote));
            t.mtu_discovery_config(Some(mtud));
        } else {
            t.mtu_discovery_config(None);
        }
        Arc::new(t)
    }
}

/// The largest UDP payload on a 1500-byte path to `remote`. An IPv4-mapped IPv6 address (a
/// dual-stack socket talking to an IPv4 peer) travels as IPv4.
pub fn max_udp_payload_for(remote: SocketAddr) -> u16 {
    match remote {
        SocketAddr::V4(_) => MAX_UDP_PAYLOAD_V4,
        SocketAddr::V6(v6) if v6.ip().to_ipv4_mapped().is_some() => MAX_UDP_PAYLOAD_V4,
        SocketAddr::V6(_) => MAX_UDP_PAYLOAD_V6,
    }
}
