//! Datagram budgets: from the QUIC datagram size to the largest frame that travels whole, and
//! the TCP MSS clamp.
//!
//! # The budget
//!
//! A room's *budget* is the largest overlay datagram (header included) its members may send:
//! what `quinn::Connection::max_datagram_size()` reports, fixed for the room before frames flow.
//! A frame of up to `budget - 1` bytes travels whole ([`Budget::max_whole_frame`]); a larger one
//! is split into fragments of `budget - 8` frame bytes ([`Budget::fragment_payload`]), at most 15.
//!
//! # Where the numbers come from
//!
//! quinn-proto 0.11 computes `max_datagram_size()` as
//! `current_mtu - (1 + dst_cid_len + 4 + tag_len) - 9`: the UDP payload size the path carries,
//! minus a 1-RTT short header (1 flags byte, the peer's connection id, the largest packet
//! number encoding, a 16-byte AEAD tag) minus the DATAGRAM frame's type byte and length
//! varint bound (`Datagram::SIZE_BOUND`). With quinn's default 8-byte connection ids the
//! overhead is 29 + 9 = 38 bytes, so:
//!
//! | UDP payload                                   | budget |
//! |-----------------------------------------------|--------|
//! | 1200 (RFC 9000 §14: every QUIC path carries it; quinn's initial MTU) | 1162 |
//! | 1452 (1500-byte IPv6 path: 1500 - 40 - 8)     | 1414   |
//! | 1472 (1500-byte IPv4 path: 1500 - 20 - 8)     | 1434   |
//!
//! The test `quinn_reports_the_initial_budget` handshakes a real quinn-proto client and server
//! in memory and checks the first row.
//!
//! A LAN frame is at most 1518 bytes (1500 of IP, a 14-byte Ethernet header, one 4-byte 802.1Q
//! tag; the FCS never travels), so even the initial budget fragments full-size frames (in 2),
//! and a budget of 1434 still does (1518 > 1433): the [TCP MSS clamp](clamp_mss) keeps bulk TCP
//! under [`Budget::max_whole_frame`] so that only odd traffic pays for fragmentation.
//!
//! The smallest budget a room may have, [`MIN_ROOM_BUDGET`], is the one at which a 1518-byte
//! frame still fits in 15 fragments: `8 + ceil(1518 / 15) = 110`.

use etherparse::{NetSlice, SlicedPacket, TransportSlice};

use crate::wire::ethernet::{self, ethertype};
use crate::wire::overlay::{FRAGMENT_HEADER_LEN, MAX_FRAGMENTS, WHOLE_HEADER_LEN};

/// UDP payload every QUIC path must carry (RFC 9000 §14: "QUIC MUST NOT be used if the network
/// path cannot support a maximum datagram size of at least 1200 bytes"); quinn starts there.
pub const QUIC_MIN_UDP_PAYLOAD: usize = 1200;

/// Bytes of a QUIC 1-RTT packet around its frames, as quinn-proto bounds it with 8-byte
/// connection ids: 1 flags byte + 8 connection id + 4 packet number + 16 AEAD tag.
pub const QUIC_SHORT_HEADER_OVERHEAD: usize = 1 + 8 + 4 + 16;

/// Bytes a DATAGRAM frame adds to its payload, as quinn-proto bounds it: 1 type byte + an
/// 8-byte length varint bound.
pub const QUIC_DATAGRAM_FRAME_OVERHEAD: usize = 1 + 8;

/// The budget quinn reports before path MTU discovery raises it: 1200 - 29 - 9 = 1162.
pub const INITIAL_QUIC_BUDGET: usize =
    QUIC_MIN_UDP_PAYLOAD - QUIC_SHORT_HEADER_OVERHEAD - QUIC_DATAGRAM_FRAME_OVERHEAD;

/// The budget on a path with a 1500-byte IPv4 MTU: 1500 - 20 (IPv4) - 8 (UDP) - 38 = 1434.
pub const ETHERNET_IPV4_QUIC_BUDGET: usize =
    1500 - 20 - 8 - QUIC_SHORT_HEADER_OVERHEAD - QUIC_DATAGRAM_FRAME_OVERHEAD;

/// The budget on a path with a 1500-byte IPv6 MTU: 1500 - 40 (IPv6) - 8 (UDP) - 38 = 1414.
pub const ETHERNET_IPV6_QUIC_BUDGET: usize =
    1500 - 40 - 8 - QUIC_SHORT_HEADER_OVERHEAD - QUIC_DATAGRAM_FRAME_OVERHEAD;

/// The largest frame a LAN host sends: 1500 bytes of IP + 14 Ethernet header + 4 802.1Q tag
/// (the FCS is not carried).
pub const MAX_LAN_FRAME: usize = 1500 + ethernet::HEADER_LEN + ethernet::VLAN_TAG_LEN;

/// The smallest budget a room may have: a [`MAX_LAN_FRAME`] still fits in 15 fragments.
pub const MIN_ROOM_BUDGET: usize =
    FRAGMENT_HEADER_LEN + MAX_LAN_FRAME.div_ceil(MAX_FRAGMENTS as usize);

const IPV4_HEADER_LEN: usize = 20;
const IPV6_HEADER_LEN: usize = 40;
const TCP_HEADER_LEN: usize = 20;
const TCP_CHECKSUM_OFFSET: usize = 16;
const TCP_OPTION_END: u8 = 0;
const TCP_OPTION_NOP: u8 = 1;
const TCP_OPTION_MSS: u8 = 2;

/// Why a datagram size cannot be a room's budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BudgetError {
    /// The peer does not accept QUIC DATAGRAM frames (`max_datagram_size()` is `None`).
    #[error("the peer does not support quic datagrams")]
    DatagramsUnsupported,
    /// The size is below [`MIN_ROOM_BUDGET`].
    #[error("datagram budget {budget} is below the minimum of {min} bytes")]
    TooSmall {
        /// The size offered.
        budget: usize,
        /// [`MIN_ROOM_BUDGET`].
        min: usize,
    },
}

/// A room's datagram budget: the largest overlay datagram, header included, at least
/// [`MIN_ROOM_BUDGET`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Budget(usize);

impl Budget {
    /// [`MIN_ROOM_BUDGET`].
    pub const MIN: Self = Self(MIN_ROOM_BUDGET);
    /// [`INITIAL_QUIC_BUDGET`], what every QUIC connection offers before PMTUD.
    pub const INITIAL_QUIC: Self = Self(INITIAL_QUIC_BUDGET);

    /// A budget of `bytes`.
    ///
    /// # Errors
    ///
    /// [`BudgetError::TooSmall`] below [`MIN_ROOM_BUDGET`].
    pub const fn new(bytes: usize) -> Result<Self, BudgetError> {
        if bytes < MIN_ROOM_BUDGET {
            return Err(BudgetError::TooSmall {
                budget: bytes,
                min: MIN_ROOM_BUDGET,
            });
        }
        Ok(Self(bytes))
    }

    /// The budget from quinn's `Connection::max_datagram_size()`.
    ///
    /// # Errors
    ///
    /// [`BudgetError::DatagramsUnsupported`] for `None`, [`BudgetError::TooSmall`] below
    /// [`MIN_ROOM_BUDGET`].
    pub const fn from_max_datagram_size(size: Option<usize>) -> Result<Self, BudgetError> {
        match size {
            Some(bytes) => Self::new(bytes),
            None => Err(BudgetError::DatagramsUnsupported),
        }
    }

    /// The budget in bytes.
    pub const fn bytes(self) -> usize {
        self.0
    }

    /// The largest Ethernet frame that travels whole: the budget minus the 1-byte header.
    pub const fn max_whole_frame(self) -> usize {
        self.0 - WHOLE_HEADER_LEN
    }

    /// Frame bytes per fragment (all but the last): the budget minus the 8-byte header.
    pub const fn fragment_payload(self) -> usize {
        self.0 - FRAGMENT_HEADER_LEN
    }

    /// The largest frame that can be sent at all: 15 fragments, or one whole datagram when
    /// that is larger (at least [`MAX_LAN_FRAME`]).
    pub const fn max_frame(self) -> usize {
        let fragmented = self.fragment_payload() * MAX_FRAGMENTS as usize;
        let fragmented = if fragmented > u16::MAX as usize {
            u16::MAX as usize
        } else {
            fragmented
        };
        if fragmented > self.max_whole_frame() {
            fragmented
        } else {
            self.max_whole_frame()
        }
    }

    /// The largest TCP MSS whose segments travel whole over IPv4 behind a link header of
    /// `link_header_len` bytes (14, or 18 with an 802.1Q tag): MSS counts neither the IP nor
    /// the TCP header (RFC 9293 §3.7.1), and options are the sender's to subtract.
    pub const fn max_mss_ipv4(self, link_header_len: usize) -> u16 {
        mss_for(self.max_whole_frame(), link_header_len + IPV4_HEADER_LEN)
    }

    /// [`Self::max_mss_ipv4`] for IPv6 (a 40-byte fixed header).
    pub const fn max_mss_ipv6(self, link_header_len: usize) -> u16 {
        mss_for(self.max_whole_frame(), link_header_len + IPV6_HEADER_LEN)
    }
}

const fn mss_for(max_frame: usize, below_tcp: usize) -> u16 {
    let mss = max_frame.saturating_sub(below_tcp + TCP_HEADER_LEN);
    if mss > u16::MAX as usize {
        u16::MAX
    } else {
        mss as u16
    }
}

/// What [`clamp_mss`] did with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClampOutcome {
    /// A TCP SYN whose MSS option was lowered from `from` to `to`; the checksum was fixed.
    Clamped {
        /// The MSS the frame carried.
        from: u16,
        /// The MSS it carries now.
        to: u16,
    },
    /// A TCP SYN whose MSS already fits; untouched.
    AlreadyFits {
        /// The MSS it carries.
        mss: u16,
    },
    /// A TCP SYN without an MSS option (the peer assumes 536 or 1220 bytes); untouched.
    NoMssOption,
    /// A TCP segment without the SYN flag; untouched.
    NotSyn,
    /// Not TCP over IPv4 or IPv6; untouched.
    NotTcp,
    /// An IP fragment; untouched.
    IpFragment,
    /// Truncated or malformed headers; untouched.
    Malformed,
}

/// Lowers the MSS option of a TCP SYN or SYN-ACK in an Ethernet frame (802.1Q tags allowed)
/// to the largest value whose segments travel as one datagram at `budget`, fixing the TCP
/// checksum incrementally (RFC 1624). Anything else is left untouched and reported. Never
/// panics.
///
/// Clamping at the tunnel edges makes both ends of a TCP connection pick segments that fit
/// [`Budget::max_whole_frame`], so bulk TCP never pays for fragmentation.
pub fn clamp_mss(frame: &mut [u8], budget: Budget) -> ClampOutcome {
    let found = match find_mss(frame, budget) {
        Ok(found) => found,
        Err(outcome) => return outcome,
    };
    let from = u16::from_be_bytes([frame[found.mss_at], frame[found.mss_at + 1]]);
    if from <= found.limit {
        return ClampOutcome::AlreadyFits { mss: from };
    }
    let to = found.limit;
    frame[found.mss_at..found.mss_at + 2].copy_from_slice(&to.to_be_bytes());
    let sum_at = found.tcp_at + TCP_CHECKSUM_OFFSET;
    let checksum = u16::from_be_bytes([frame[sum_at], frame[sum_at + 1]]);
    // A 16-bit value at an odd offset of the segment adds its bytes swapped to the
    // one's-complement sum (RFC 1071 §2(B)).
    let (old, new) = if (found.mss_at - found.tcp_at) % 2 == 0 {
        (from, to)
    } else {
        (from.swap_bytes(), to.swap_bytes())
    };
    let checksum = checksum_update(checksum, old, new);
    frame[sum_at..sum_at + 2].copy_from_slice(&checksum.to_be_bytes());
    ClampOutcome::Clamped { from, to }
}

/// RFC 1624 eqn. 3: `HC' = ~(~HC + ~m + m')`.
fn checksum_update(checksum: u16, old: u16, new: u16) -> u16 {
    let mut sum = u32::from(!checksum) + u32::from(!old) + u32::from(new);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

struct MssLocation {
    /// Offset of the TCP header in the frame.
    tcp_at: usize,
    /// Offset of the MSS value in the frame.
    mss_at: usize,
    /// The largest MSS that travels whole.
    limit: u16,
}

fn find_mss(frame: &[u8], budget: Budget) -> Result<MssLocation, ClampOutcome> {
    if !may_be_tcp(frame) {
        return Err(ClampOutcome::NotTcp);
    }
    let packet = SlicedPacket::from_ethernet(frame).map_err(|_| ClampOutcome::Malformed)?;
    let (ip_start, ipv6) = match &packet.net {
        Some(NetSlice::Ipv4(ip)) => (ip.header().slice().as_ptr(), false),
        Some(NetSlice::Ipv6(ip)) => (ip.header().slice().as_ptr(), true),
        _ => return Err(ClampOutcome::NotTcp),
    };
    if packet.is_ip_payload_fragmented() {
        return Err(ClampOutcome::IpFragment);
    }
    let Some(TransportSlice::Tcp(tcp)) = &packet.transport else {
        return Err(ClampOutcome::NotTcp);
    };
    if !tcp.syn() {
        return Err(ClampOutcome::NotSyn);
    }
    // The slices borrow `frame`, so their offsets are address differences.
    let base = frame.as_ptr() as usize;
    let link_len = ip_start as usize - base;
    let tcp_at = tcp.header_slice().as_ptr() as usize - base;
    let limit = if ipv6 {
        budget.max_mss_ipv6(link_len)
    } else {
        budget.max_mss_ipv4(link_len)
    };
    let options = tcp.options();
    let mut i = 0;
    while let Some(&kind) = options.get(i) {
        match kind {
            TCP_OPTION_END => break,
            TCP_OPTION_NOP => i += 1,
            _ => {
                let len = usize::from(*options.get(i + 1).ok_or(ClampOutcome::Malformed)?);
                if len < 2 || i + len > options.len() {
                    return Err(ClampOutcome::Malformed);
                }
                if kind == TCP_OPTION_MSS {
                    if len != 4 {
                        return Err(ClampOutcome::Malformed);
                    }
                    return Ok(MssLocation {
                        tcp_at,
                        mss_at: tcp_at + TCP_HEADER_LEN + i + 2,
                        limit,
                    });
                }
                i += len;
            }
        }
    }
    Err(ClampOutcome::NoMssOption)
}

/// A cheap look at the EtherType (past 802.1Q/802.1ad tags) and the IPv4 protocol so the
/// common non-TCP frame skips the full parse.
fn may_be_tcp(frame: &[u8]) -> bool {
    const TPID_8021AD: u16 = 0x88a8;
    const IPV4_PROTOCOL_OFFSET: usize = 9;
    const IPV6_NEXT_HEADER_OFFSET: usize = 6;
    const IP_PROTOCOL_TCP: u8 = 6;
    const IP_PROTOCOL_UDP: u8 = 17;
    const IP_PROTOCOL_ICMPV6: u8 = 58;
    let mut at = 12;
    loop {
        let Some(&[hi, lo]) = frame.get(at..at + 2).and_then(|b| b.first_chunk::<2>()) else {
            return false;
        };
        match u16::from_be_bytes([hi, lo]) {
            ethertype::VLAN | TPID_8021AD => at += ethernet::VLAN_TAG_LEN,
            ethertype::IPV4 => {
                return frame.get(at + 2 + IPV4_PROTOCOL_OFFSET) == Some(&IP_PROTOCOL_TCP);
            }
            ethertype::IPV6 => {
                // Extension headers may come before TCP; only rule out the common direct ones.
                return !matches!(
                    frame.get(at + 2 + IPV6_NEXT_HEADER_OFFSET),
                    Some(&(IP_PROTOCOL_UDP | IP_PROTOCOL_ICMPV6)) | None
                );
            }
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{PacketBuilder, TcpOptionElement, VlanId};
    use proptest::prelude::*;

    const SRC4: [u8; 4] = [198, 18, 0, 1];
    const DST4: [u8; 4] = [198, 18, 0, 2];
    const SRC6: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    const DST6: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
    const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0, 1];
    const MAC_B: [u8; 6] = [0x02, 0, 0, 0, 0, 2];

    #[derive(Clone, Copy)]
    enum Ip {
        V4,
        V6,
    }

    fn syn(ip: Ip, vlan: bool, syn: bool, ack: bool, options: &[u8], payload: &[u8]) -> Vec<u8> {
        let eth = PacketBuilder::ethernet2(MAC_A, MAC_B);
        let mut out = Vec::new();
        macro_rules! finish {
            ($step:expr) => {{
                let mut step = $step.tcp(40_000, 80, 1000, 64_240);
                if syn {
                    step = step.syn();
                }
                if ack {
                    step = step.ack(7);
                }
                step.options_raw(options)
                    .unwrap()
                    .write(&mut out, payload)
                    .unwrap();
            }};
        }
        match (ip, vlan) {
            (Ip::V4, false) => finish!(eth.ipv4(SRC4, DST4, 64)),
            (Ip::V6, false) => finish!(eth.ipv6(SRC6, DST6, 64)),
            (Ip::V4, true) => {
                finish!(
                    eth.single_vlan(VlanId::try_new(7).unwrap())
                        .ipv4(SRC4, DST4, 64)
                )
            }
            (Ip::V6, true) => {
                finish!(
                    eth.single_vlan(VlanId::try_new(7).unwrap())
                        .ipv6(SRC6, DST6, 64)
                )
            }
        }
        out
    }

    fn mss_option(mss: u16) -> Vec<u8> {
        let mut o = vec![TCP_OPTION_MSS, 4];
        o.extend_from_slice(&mss.to_be_bytes());
        o
    }

    /// The MSS etherparse reads back, after checking the TCP checksum.
    fn parsed_mss(frame: &[u8]) -> Option<u16> {
        let packet = SlicedPacket::from_ethernet(frame).unwrap();
        let Some(TransportSlice::Tcp(tcp)) = &packet.transport else {
            panic!("not tcp");
        };
        let want = match &packet.net {
            Some(NetSlice::Ipv4(ip)) => tcp
                .calc_checksum_ipv4(ip.header().source(), ip.header().destination())
                .unwrap(),
            Some(NetSlice::Ipv6(ip)) => tcp
                .calc_checksum_ipv6(ip.header().source(), ip.header().destination())
                .unwrap(),
            _ => panic!("not ip"),
        };
        assert_eq!(tcp.checksum(), want, "tcp checksum");
        tcp.options_iterator().find_map(|o| match o {
            Ok(TcpOptionElement::MaximumSegmentSize(mss)) => Some(mss),
            _ => None,
        })
    }

    #[test]
    fn constants_follow_from_the_arithmetic() {
        assert_eq!(INITIAL_QUIC_BUDGET, 1162);
        assert_eq!(ETHERNET_IPV4_QUIC_BUDGET, 1434);
        assert_eq!(ETHERNET_IPV6_QUIC_BUDGET, 1414);
        assert_eq!(MAX_LAN_FRAME, 1518);
        assert_eq!(MIN_ROOM_BUDGET, 110);
        // 110 is the smallest: one byte less and a full LAN frame needs 16 fragments.
        assert!(MAX_LAN_FRAME.div_ceil(MIN_ROOM_BUDGET - FRAGMENT_HEADER_LEN) <= 15);
        assert!(MAX_LAN_FRAME.div_ceil(MIN_ROOM_BUDGET - 1 - FRAGMENT_HEADER_LEN) > 15);
    }

    /// A real quinn-proto client and server, handshaking in memory with path MTU discovery
    /// off, agree with the arithmetic: the client's first `max_size()` is
    /// [`INITIAL_QUIC_BUDGET`].
    #[test]
    fn quinn_reports_the_initial_budget() {
        use quinn_proto::crypto::rustls::{QuicClientConfig, QuicServerConfig};
        use quinn_proto::{
            ClientConfig, DatagramEvent, Endpoint, EndpointConfig, Event, ServerConfig,
            TransportConfig,
        };
        use std::net::SocketAddr;
        use std::sync::Arc;
        use std::time::Instant;

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let cert = certified.cert.der().clone();
        let key =
            rustls_pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
        let server_tls = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], key)
            .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert).unwrap();
        let client_tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut transport = TransportConfig::default();
        transport.mtu_discovery_config(None);
        let transport = Arc::new(transport);
        let mut server_config =
            ServerConfig::with_crypto(Arc::new(QuicServerConfig::try_from(server_tls).unwrap()));
        server_config.transport_config(transport.clone());
        let server_config = Arc::new(server_config);
        let mut client_config =
            ClientConfig::new(Arc::new(QuicClientConfig::try_from(client_tls).unwrap()));
        client_config.transport_config(transport);

        let client_addr: SocketAddr = "127.0.0.1:40001".parse().unwrap();
        let server_addr: SocketAddr = "127.0.0.1:40002".parse().unwrap();
        let endpoint_config = Arc::new(EndpointConfig::default());
        let mut client_ep = Endpoint::new(endpoint_config.clone(), None, false, Some([1; 32]));
        let mut server_ep =
            Endpoint::new(endpoint_config, Some(server_config), false, Some([2; 32]));
        let now = Instant::now();
        let (client_handle, mut client) = client_ep
            .connect(now, client_config, server_addr, "localhost")
            .unwrap();
        let mut server: Option<(quinn_proto::ConnectionHandle, quinn_proto::Connection)> = None;
        let mut buf = Vec::new();
        for _ in 0..50 {
            // Client to server.
            while let Some(t) = client.poll_transmit(now, 1, &mut buf) {
                let data = bytes::BytesMut::from(&buf[..t.size]);
                buf.clear();
                let mut response = Vec::new();
                match server_ep.handle(now, client_addr, None, None, data, &mut response) {
                    Some(DatagramEvent::NewConnection(incoming)) => {
                        server = Some(
                            server_ep
                                .accept(incoming, now, &mut response, None)
                                .unwrap(),
                        );
                    }
                    Some(DatagramEvent::ConnectionEvent(_, event)) => {
                        if let Some((_, s)) = server.as_mut() {
                            s.handle_event(event);
                        }
                    }
                    Some(DatagramEvent::Response(_)) | None => {}
                }
            }
            // Server to client.
            if let Some((server_handle, s)) = server.as_mut() {
                while let Some(event) = s.poll_endpoint_events() {
                    if let Some(event) = server_ep.handle_event(*server_handle, event) {
                        s.handle_event(event);
                    }
                }
                while let Some(t) = s.poll_transmit(now, 1, &mut buf) {
                    let data = bytes::BytesMut::from(&buf[..t.size]);
                    buf.clear();
                    let mut response = Vec::new();
                    if let Some(DatagramEvent::ConnectionEvent(_, event)) =
                        client_ep.handle(now, server_addr, None, None, data, &mut response)
                    {
                        client.handle_event(event);
                    }
                }
            }
            while let Some(event) = client.poll_endpoint_events() {
                if let Some(event) = client_ep.handle_event(client_handle, event) {
                    client.handle_event(event);
                }
            }
            while let Some(event) = client.poll() {
                if matches!(event, Event::Connected) {
                    assert_eq!(client.datagrams().max_size(), Some(INITIAL_QUIC_BUDGET));
                    let budget = Budget::from_max_datagram_size(client.datagrams().max_size());
                    assert_eq!(budget, Ok(Budget::INITIAL_QUIC));
                    return;
                }
            }
        }
        panic!("the in-memory handshake did not complete");
    }

    #[test]
    fn budget_from_quinn() {
        assert_eq!(
            Budget::from_max_datagram_size(None),
            Err(BudgetError::DatagramsUnsupported)
        );
        assert_eq!(
            Budget::from_max_datagram_size(Some(100)),
            Err(BudgetError::TooSmall {
                budget: 100,
                min: 110
            })
        );
        let b = Budget::from_max_datagram_size(Some(1162)).unwrap();
        assert_eq!(b, Budget::INITIAL_QUIC);
        assert_eq!(b.max_whole_frame(), 1161);
        assert_eq!(b.fragment_payload(), 1154);
        assert_eq!(b.max_frame(), 15 * 1154);
        assert_eq!(Budget::MIN.max_frame(), 15 * 102);
        assert_eq!(Budget::new(100_000).unwrap().max_frame(), 99_999);
        // 1161 - 14 - 20 - 20 and 1161 - 18 - 40 - 20.
        assert_eq!(b.max_mss_ipv4(14), 1107);
        assert_eq!(b.max_mss_ipv6(18), 1083);
    }

    #[test]
    fn ipv4_syn_is_clamped_and_checksum_stays_valid() {
        let mut f = syn(Ip::V4, false, true, false, &mss_option(1460), &[]);
        assert_eq!(parsed_mss(&f), Some(1460));
        let out = clamp_mss(&mut f, Budget::INITIAL_QUIC);
        assert_eq!(
            out,
            ClampOutcome::Clamped {
                from: 1460,
                to: 1107
            }
        );
        assert_eq!(parsed_mss(&f), Some(1107));
        // The clamped SYN, with the largest segment it announces, travels whole.
        assert_eq!(14 + 20 + 20 + 1107, Budget::INITIAL_QUIC.max_whole_frame());
    }

    #[test]
    fn ipv6_syn_ack_with_vlan_tag_is_clamped() {
        let opts = [
            &[TCP_OPTION_NOP][..],
            &mss_option(1440),
            &[TCP_OPTION_NOP; 3],
        ]
        .concat();
        let mut f = syn(Ip::V6, true, true, true, &opts, &[]);
        let out = clamp_mss(&mut f, Budget::INITIAL_QUIC);
        // 1161 - 18 - 40 - 20; the MSS sits at an odd offset of the segment.
        assert_eq!(
            out,
            ClampOutcome::Clamped {
                from: 1440,
                to: 1083
            }
        );
        assert_eq!(parsed_mss(&f), Some(1083));
    }

    #[test]
    fn odd_and_even_option_offsets_both_keep_the_checksum() {
        for nops in 0..4 {
            for ip in [Ip::V4, Ip::V6] {
                let opts = [&vec![TCP_OPTION_NOP; nops][..], &mss_option(9000)].concat();
                let mut f = syn(ip, nops % 2 == 0, true, false, &opts, b"data");
                assert!(matches!(
                    clamp_mss(&mut f, Budget::new(1434).unwrap()),
                    ClampOutcome::Clamped { from: 9000, .. }
                ));
                assert!(parsed_mss(&f).unwrap() < 1400);
            }
        }
    }

    #[test]
    fn smaller_mss_stays() {
        let mut f = syn(Ip::V4, false, true, false, &mss_option(536), &[]);
        let before = f.clone();
        assert_eq!(
            clamp_mss(&mut f, Budget::INITIAL_QUIC),
            ClampOutcome::AlreadyFits { mss: 536 }
        );
        assert_eq!(f, before);
    }

    #[test]
    fn non_syn_and_non_tcp_are_untouched() {
        let mut f = syn(Ip::V4, false, false, true, &mss_option(1460), &[]);
        let before = f.clone();
        assert_eq!(clamp_mss(&mut f, Budget::MIN), ClampOutcome::NotSyn);
        assert_eq!(f, before);

        let mut f = syn(Ip::V6, false, true, false, &[], &[]);
        assert_eq!(clamp_mss(&mut f, Budget::MIN), ClampOutcome::NoMssOption);

        let mut udp = Vec::new();
        PacketBuilder::ethernet2(MAC_A, MAC_B)
            .ipv4(SRC4, DST4, 64)
            .udp(1, 2)
            .write(&mut udp, &[0; 40])
            .unwrap();
        assert_eq!(clamp_mss(&mut udp, Budget::MIN), ClampOutcome::NotTcp);
        let mut udp6 = Vec::new();
        PacketBuilder::ethernet2(MAC_A, MAC_B)
            .ipv6(SRC6, DST6, 64)
            .udp(1, 2)
            .write(&mut udp6, &[0; 40])
            .unwrap();
        assert_eq!(clamp_mss(&mut udp6, Budget::MIN), ClampOutcome::NotTcp);

        let mut ipx = vec![0xff; 60];
        ipx[12..14].copy_from_slice(&ethertype::IPX.to_be_bytes());
        assert_eq!(clamp_mss(&mut ipx, Budget::MIN), ClampOutcome::NotTcp);
    }

    #[test]
    fn ip_fragments_are_untouched() {
        let mut f = syn(Ip::V4, false, true, false, &mss_option(1460), &[]);
        // The more-fragments flag of the IPv4 header (flags and offset at 14 + 6); etherparse
        // does not check the header checksum, so it may stay stale.
        f[14 + 6] |= 0x20;
        let before = f.clone();
        assert_eq!(
            clamp_mss(&mut f, Budget::INITIAL_QUIC),
            ClampOutcome::IpFragment
        );
        assert_eq!(f, before);
    }

    #[test]
    fn truncated_and_malformed_are_untouched() {
        let f = syn(Ip::V4, false, true, false, &mss_option(1460), &[]);
        for len in 0..f.len() {
            let mut cut = f[..len].to_vec();
            let out = clamp_mss(&mut cut, Budget::INITIAL_QUIC);
            assert!(
                matches!(out, ClampOutcome::Malformed | ClampOutcome::NotTcp),
                "{len}: {out:?}"
            );
            assert_eq!(cut, f[..len]);
        }
        // An option whose length runs past the header.
        let mut bad = syn(Ip::V4, false, true, false, &[3, 9, 0, 0], &[]);
        assert_eq!(
            clamp_mss(&mut bad, Budget::INITIAL_QUIC),
            ClampOutcome::Malformed
        );
    }

    proptest! {
        #[test]
        fn arbitrary_frames_never_panic(mut bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            // Make the cheap filter pass often.
            if bytes.len() > 14 {
                bytes[12] = 0x08;
                bytes[13] = 0x00;
            }
            let before = bytes.clone();
            match clamp_mss(&mut bytes, Budget::MIN) {
                ClampOutcome::Clamped { .. } => prop_assert_ne!(&bytes, &before),
                _ => prop_assert_eq!(&bytes, &before),
            }
        }

        #[test]
        fn clamping_keeps_the_checksum(
            mss in any::<u16>(),
            budget in MIN_ROOM_BUDGET..2000usize,
            nops in 0usize..4,
            v6 in any::<bool>(),
            vlan in any::<bool>(),
        ) {
            let opts = [&vec![TCP_OPTION_NOP; nops][..], &mss_option(mss)].concat();
            let ip = if v6 { Ip::V6 } else { Ip::V4 };
            let mut f = syn(ip, vlan, true, false, &opts, &[]);
            let budget = Budget::new(budget).unwrap();
            let out = clamp_mss(&mut f, budget);
            let now = parsed_mss(&f).unwrap();
            let link = if vlan { 18 } else { 14 };
            let limit = if v6 { budget.max_mss_ipv6(link) } else { budget.max_mss_ipv4(link) };
            prop_assert_eq!(now, mss.min(limit));
            match out {
                ClampOutcome::Clamped { from, to } => prop_assert!(from == mss && to == limit),
                ClampOutcome::AlreadyFits { mss: m } => prop_assert!(m == mss && mss <= limit),
                other => prop_assert!(false, "{:?}", other),
            }
        }
    }
}
