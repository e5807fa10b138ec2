//! Drop reasons and counters: plain integers owned by the datapath thread, read through
//! accessors by metrics and stats messages.

use std::fmt;

/// Why the relay switch dropped a datagram.
///
/// Every drop is counted under exactly one reason, per room and per ingress peer (except
/// [`DropReason::UnknownIngress`], which has no peer). [`DropReason::name`] is a stable
/// snake_case label for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum DropReason {
    /// The ingress connection is not a peer of this room.
    UnknownIngress,
    /// The datagram is not a valid overlay datagram (version, kind, fragment numbering, empty).
    MalformedOverlay,
    /// A whole frame or fragment 0 is shorter than its Ethernet header.
    MalformedEthernet,
    /// An IPv4/IPv6 frame from a client whose IP, UDP or ICMPv6 header fields the filters need
    /// are not in the leading bytes: truncated, split across fragments (RFC 7112 requires the
    /// whole header chain in the first fragment), or an IPv6 extension-header chain too long
    /// to walk.
    TruncatedHeaders,
    /// An IPv4/IPv6 frame from a client whose IP header is impossible (wrong version, IPv4
    /// header length below 20 bytes).
    MalformedIp,
    /// The frame (or the `total_len` of a fragment) is larger than the room's maximum frame.
    Oversize,
    /// A client sent a frame whose source MAC is not the MAC it was admitted with.
    SpoofedSource,
    /// A client sent a DHCPv4/BOOTP server message (UDP source port 67, or BOOTREPLY to 68).
    Dhcpv4ServerFromClient,
    /// A client sent a DHCPv6 server message (UDP source port 547, or ADVERTISE, REPLY,
    /// RECONFIGURE or RELAY-REPL).
    Dhcpv6ServerFromClient,
    /// A client sent an ICMPv6 router advertisement (type 134).
    RouterAdvertisementFromClient,
    /// A client sent an ICMPv6 redirect (type 137).
    RedirectFromClient,
    /// The destination is in the IEEE 802.1D reserved range 01:80:c2:00:00:00..=0f (STP,
    /// LACP, LLDP, pause), which bridges never forward.
    LinkLocalControl,
    /// The gateway sent a frame whose source MAC belongs to a client of the room: the frame
    /// came back around a loop.
    LoopGuard,
    /// The ingress peer exceeded its broadcast/multicast budget.
    GroupBudget,
    /// A unicast frame to a MAC that lives behind the ingress peer itself (a switch filters
    /// these; sending them back would be a hairpin).
    LocalDestination,
    /// A fragment with index > 0 for which no live decision exists: fragment 0 was never seen,
    /// the decision expired or was evicted, its numbering disagrees with fragment 0's, or the
    /// destination peer left.
    OrphanFragment,
    /// A fragment whose origin field is not the low 16 bits of its sender's peer id: a peer
    /// tried to pass its fragments off as another's (or has not taken its id from the
    /// welcome).
    SpoofedOrigin,
}

impl DropReason {
    /// Number of reasons; the length of [`DropCounts`]' array.
    pub const COUNT: usize = 17;

    /// Every reason, in declaration order.
    pub const ALL: [Self; Self::COUNT] = [
        Self::UnknownIngress,
        Self::MalformedOverlay,
        Self::MalformedEthernet,
        Self::TruncatedHeaders,
        Self::MalformedIp,
        Self::Oversize,
        Self::SpoofedSource,
        Self::Dhcpv4ServerFromClient,
        Self::Dhcpv6ServerFromClient,
        Self::RouterAdvertisementFromClient,
        Self::RedirectFromClient,
        Self::LinkLocalControl,
        Self::LoopGuard,
        Self::GroupBudget,
        Self::LocalDestination,
        Self::OrphanFragment,
        Self::SpoofedOrigin,
    ];

    /// Stable snake_case label for metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Self::UnknownIngress => "unknown_ingress",
            Self::MalformedOverlay => "malformed_overlay",
            Self::MalformedEthernet => "malformed_ethernet",
            Self::TruncatedHeaders => "truncated_headers",
            Self::MalformedIp => "malformed_ip",
            Self::Oversize => "oversize",
            Self::SpoofedSource => "spoofed_source",
            Self::Dhcpv4ServerFromClient => "dhcpv4_server_from_client",
            Self::Dhcpv6ServerFromClient => "dhcpv6_server_from_client",
            Self::RouterAdvertisementFromClient => "router_advertisement_from_client",
            Self::RedirectFromClient => "redirect_from_client",
            Self::LinkLocalControl => "link_local_control",
            Self::LoopGuard => "loop_guard",
            Self::GroupBudget => "group_budget",
            Self::LocalDestination => "local_destination",
            Self::OrphanFragment => "orphan_fragment",
            Self::SpoofedOrigin => "spoofed_origin",
        }
    }

    const fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Drop counters, one per [`DropReason`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DropCounts([u64; DropReason::COUNT]);

impl DropCounts {
    /// Datagrams dropped for `reason`.
    pub const fn get(&self, reason: DropReason) -> u64 {
        self.0[reason.index()]
    }

    /// Datagrams dropped for any reason.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// `(reason, count)` for every reason, zeros included, in declaration order.
    pub fn iter(&self) -> impl Iterator<Item = (DropReason, u64)> + '_ {
        DropReason::ALL.iter().map(|&r| (r, self.get(r)))
    }

    pub(super) fn bump(&mut self, reason: DropReason) {
        self.0[reason.index()] += 1;
    }
}

/// Counters of one peer of a room.
///
/// `datagrams_*` count overlay datagrams (a fragmented frame counts once per fragment);
/// `frames_in` counts whole frames and fragment 0s, i.e. Ethernet frames; `bytes_*` count
/// overlay datagram bytes, headers included. `*_out` count what the switch asked the relay to
/// send to this peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PeerStats {
    /// Datagrams received from this peer, accepted or not.
    pub datagrams_in: u64,
    /// Ethernet frames (whole frames and fragment 0s) received from this peer.
    pub frames_in: u64,
    /// Bytes received from this peer.
    pub bytes_in: u64,
    /// Datagrams forwarded to this peer.
    pub datagrams_out: u64,
    /// Bytes forwarded to this peer.
    pub bytes_out: u64,
    /// Datagrams from this peer that were dropped, by reason.
    pub drops: DropCounts,
}

/// Counters of one room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RoomStats {
    /// Datagrams dropped, by reason (every peer, plus unknown ingress).
    pub drops: DropCounts,
    /// Frames (whole frames and fragment 0s) flooded: broadcast, multicast, unknown unicast.
    pub floods: u64,
    /// Of [`Self::floods`], unicast frames whose destination was unknown.
    pub unknown_unicast_floods: u64,
    /// MACs learned behind the gateway (new entries, not refreshes).
    pub macs_learned: u64,
    /// MACs not learned because the room's learned-MAC cap was reached.
    pub macs_refused: u64,
    /// Learned MACs removed by ageing.
    pub macs_aged_out: u64,
    /// Fragment decisions evicted from the full cache before their fragments all arrived.
    pub fragment_decisions_evicted: u64,
}
