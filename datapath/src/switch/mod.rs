//! The relay switch: per-room MAC table, flooding and L2 safety filters, plus the gateway's
//! LAN-side filter ([`LanFilter`]).
//!
//! Everything here is sans-IO: no sockets, no clock (time is an argument), no allocation per
//! frame once a room is built (maps and caches are sized from [`RoomConfig`]; the caller's
//! `out` vector is reused), no logging, no locks. Counters are plain integers.
//!
//! # What a [`Room`] does with a datagram
//!
//! [`Room::handle_datagram`] takes one overlay datagram (see [`crate::wire::overlay`]) from an
//! ingress peer and either writes the peers to send it to into `out` ([`Verdict::Forward`]) or
//! drops it ([`Verdict::Drop`]) and counts the [`DropReason`] for the room and the peer. The relay
//! then sends the very same bytes to every peer in `out`; the switch never rewrites a datagram.
//!
//! Whole frames and fragment 0 (which starts with the Ethernet header) are decided from their
//! leading bytes, in this order:
//!
//! 1. the ingress must be a peer of the room (`unknown_ingress`);
//! 2. the overlay header must parse (`malformed_overlay`); a fragment's origin must be the low
//!    16 bits of the ingress peer id (`spoofed_origin`, checked for every fragment, not only
//!    fragment 0, so that a peer cannot slip fragments into another peer's frames at the
//!    receivers, who key partial frames by origin); the frame length (a whole frame's
//!    length, or a fragment's `total_len`) must not exceed [`RoomConfig::max_frame_len`]
//!    (`oversize`); the Ethernet header must be there (`malformed_ethernet`);
//! 3. frames to 01:80:c2:00:00:00..=0f are dropped from anyone (`link_local_control`);
//! 4. from a client: the source MAC must be its admitted MAC (`spoofed_source`), and the L3
//!    filters run (`dhcpv4_server_from_client`, `dhcpv6_server_from_client`,
//!    `router_advertisement_from_client`, `redirect_from_client`, `malformed_ip`, `truncated_headers`); they
//!    look through VLAN tags and leave non-IP frames (IPX, 802.3/LLC/SNAP, ARP) alone;
//! 5. from the gateway: a source MAC that belongs to a client of the room means a loop
//!    (`loop_guard`);
//! 6. broadcast and multicast frames spend one token of the ingress peer's budget
//!    (`group_budget`);
//! 7. the gateway's source MAC is learned (if unicast and not zero);
//! 8. forwarding: a group destination floods; a known unicast destination goes to its one peer
//!    (or is dropped as `local_destination` when that peer is the ingress); an unknown unicast
//!    destination floods. A flood goes to every peer of the room except the ingress.
//!
//! Fragments 1.. of the same `(ingress, frame id)` follow the decision made for fragment 0
//! (forward to the same peer, flood, or drop under the same reason); every fragment that gets
//! this far carries its ingress's origin, so the ingress stands for the origin. Decisions sit
//! in a bounded cache ([`RoomConfig::fragment_decisions`] entries, first in first out) and
//! expire [`RoomConfig::fragment_decision_ttl`] after fragment 0. A later fragment with no live
//! decision (fragment 0 lost, reordered after it, expired, evicted, or numbered differently) is
//! dropped as `orphan_fragment`: the receiver could not reassemble the frame without fragment 0
//! anyway. A flood decision is applied to the peers present when each fragment arrives; a peer
//! that joins between fragments receives a few orphan fragments, which its reassembler discards.
//!
//! # MAC table
//!
//! A client's MAC is fixed when it is added. MACs seen as source behind the gateway are learned,
//! refreshed by every accepted frame, and forgotten [`RoomConfig::mac_age`] after they were last
//! seen (lookups ignore stale entries at once; [`Room::handle_timeout`] removes them, at most
//! one sweep per second). At most [`RoomConfig::max_learned_macs`] MACs are learned; beyond that
//! new MACs are not learned (counted in [`RoomStats::macs_refused`]) and frames to them flood.
//! A room has at most one gateway, so learned MACs never move between peers.
//!
//! # Broadcast/multicast budget
//!
//! Each peer gets a token bucket for frames to group addresses, implemented as GCRA (a
//! theoretical arrival time per peer, integer time arithmetic only). The default for clients is
//! 200 frames/s sustained with a burst of 500. A busy Windows PC is chatty: at boot or when it
//! joins a network it sends MLD reports for every group, mDNS probes and announcements (each
//! repeated two or three times), LLMNR and NetBIOS name registrations, SSDP NOTIFY and M-SEARCH
//! bursts (one per device and service type, each repeated), WS-Discovery probes, ARP and
//! neighbour solicitations, which add up to a few hundred frames within a second or two; in
//! steady state it sends a few to a few tens of frames per second, and a game's server browser
//! adds one broadcast per port per second or so. The burst of 500 absorbs a join-time burst
//! and 200/s leaves ten times headroom over steady chatter, while a broadcast storm or a flood
//! tool (tens of thousands of frames per second, each multiplied by the room's fan-out) is cut to
//! 200 frames/s. SoftEther's default of 32/s tripped on plain mDNS. The gateway carries a whole
//! LAN's chatter, so its default budget is ten times larger (2000/s, burst 5000).
//!
//! Unknown unicast floods are not budgeted, as on a hardware switch: a LAN host that only
//! receives (say, a UDP stream sink) stays unknown, and throttling its traffic to 200 frames/s
//! would break it. A client could reach the same fan-out by sending unicast to every peer.

mod decisions;
mod filter;
mod lan;
mod stats;

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, Instant};

use decisions::{Decision, DecisionCache, Lookup};
use filter::ClientFilters;
pub use lan::{LanDropCounts, LanDropReason, LanFilter, LanVerdict};
pub use stats::{DropCounts, DropReason, PeerStats, RoomStats};

use crate::Mac;
use crate::mac::MacError;
use crate::wire::ethernet::Frame;
use crate::wire::overlay::{self, Datagram, Header};

/// Least time between two sweeps of the MAC table.
const SWEEP_GRANULARITY: Duration = Duration::from_secs(1);
/// Most entries any table is sized for up front, whatever the configuration says.
const MAX_PRESIZE: usize = 1 << 16;
/// Longest duration a room uses (so that `now + duration` cannot overflow).
const MAX_DURATION: Duration = Duration::from_secs(24 * 60 * 60);

/// The relay's identifier for a connection admitted into a room (the control plane uses the
/// same numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(pub u64);

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "peer {}", self.0)
    }
}

/// What a peer is in its room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// A player's PC with one fixed MAC.
    Client {
        /// The MAC the client was admitted with; its only valid source address.
        mac: Mac,
    },
    /// The bridge to the party LAN; MACs behind it are learned.
    Gateway,
}

/// A broadcast/multicast budget: a token bucket of `burst` frames refilled at
/// `frames_per_second`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupBudget {
    /// Sustained rate; 0 is treated as 1.
    pub frames_per_second: u32,
    /// Bucket size: frames that may be sent back to back after a quiet period. 0 blocks every
    /// group frame.
    pub burst: u32,
}

impl GroupBudget {
    /// The default client budget: 200 frames/s, burst 500 (see the module documentation).
    pub const CLIENT_DEFAULT: Self = Self {
        frames_per_second: 200,
        burst: 500,
    };
    /// The default gateway budget: 2000 frames/s, burst 5000.
    pub const GATEWAY_DEFAULT: Self = Self {
        frames_per_second: 2000,
        burst: 5000,
    };
}

/// Every knob of a room's switch. [`Default`] gives the safe production settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomConfig {
    /// Largest Ethernet frame (without FCS) the room carries: 1522 fits a 1500-byte payload
    /// with two VLAN tags.
    pub max_frame_len: usize,
    /// How long a learned MAC lives after it was last seen as a source (300 s, like 802.1D; at
    /// most one day).
    pub mac_age: Duration,
    /// Most MACs learned behind the gateway (4096).
    pub max_learned_macs: usize,
    /// Peers the room's maps are sized for up front (64); more still work.
    pub expected_peers: usize,
    /// Broadcast/multicast budget of each client; `None` disables it.
    pub client_group_budget: Option<GroupBudget>,
    /// Broadcast/multicast budget of the gateway; `None` disables it.
    pub gateway_group_budget: Option<GroupBudget>,
    /// Fragment decisions remembered at once (1024; clamped to 1..=65 536).
    pub fragment_decisions: usize,
    /// How long fragments 1.. may follow fragment 0 (2 s; at most one day).
    pub fragment_decision_ttl: Duration,
    /// Drop client frames whose source is not the client's MAC.
    pub drop_spoofed_source: bool,
    /// Drop DHCPv4 server messages from clients.
    pub drop_dhcpv4_server_from_clients: bool,
    /// Drop DHCPv6 server messages from clients.
    pub drop_dhcpv6_server_from_clients: bool,
    /// Drop ICMPv6 router advertisements from clients.
    pub drop_router_advertisements_from_clients: bool,
    /// Drop ICMPv6 redirects from clients.
    pub drop_redirects_from_clients: bool,
    /// Drop frames to 01:80:c2:00:00:00..=0f from anyone.
    pub drop_link_local_control: bool,
    /// Drop gateway frames whose source is a client's MAC.
    pub loop_guard: bool,
}

impl Default for RoomConfig {
    fn default() -> Self {
        Self {
            max_frame_len: 1522,
            mac_age: Duration::from_secs(300),
            max_learned_macs: 4096,
            expected_peers: 64,
            client_group_budget: Some(GroupBudget::CLIENT_DEFAULT),
            gateway_group_budget: Some(GroupBudget::GATEWAY_DEFAULT),
            fragment_decisions: 1024,
            fragment_decision_ttl: Duration::from_secs(2),
            drop_spoofed_source: true,
            drop_dhcpv4_server_from_clients: true,
            drop_dhcpv6_server_from_clients: true,
            drop_router_advertisements_from_clients: true,
            drop_redirects_from_clients: true,
            drop_link_local_control: true,
            loop_guard: true,
        }
    }
}

impl RoomConfig {
    const fn client_filters(&self) -> ClientFilters {
        ClientFilters {
            dhcpv4: self.drop_dhcpv4_server_from_clients,
            dhcpv6: self.drop_dhcpv6_server_from_clients,
            router_advertisement: self.drop_router_advertisements_from_clients,
            redirect: self.drop_redirects_from_clients,
        }
    }
}

/// What to do with a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Verdict {
    /// Send the datagram, unchanged, to every peer written into `out` (possibly none, when the
    /// ingress is alone in the room).
    Forward,
    /// Drop the datagram; it has been counted under this reason.
    Drop(DropReason),
}

/// Why a peer cannot be added to a room.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AddPeerError {
    /// The peer id is already in the room.
    #[error("{0} is already in the room")]
    AlreadyPresent(PeerId),
    /// Another client of the room has this MAC.
    #[error("mac {mac} is already used by {owner}")]
    MacInUse {
        /// The contested MAC.
        mac: Mac,
        /// The client that has it.
        owner: PeerId,
    },
    /// The room already has a gateway.
    #[error("the room already has a gateway ({0})")]
    GatewayPresent(PeerId),
    /// The client MAC is zero or a group address.
    #[error(transparent)]
    InvalidMac(#[from] MacError),
}

/// Token bucket as GCRA: `tat` is the theoretical arrival time of the next conforming frame.
#[derive(Debug, Clone, Copy)]
struct Gcra {
    interval: Duration,
    tolerance: Duration,
    blocked: bool,
    tat: Option<Instant>,
}

impl Gcra {
    fn new(budget: GroupBudget) -> Self {
        let interval = Duration::from_secs(1) / budget.frames_per_second.max(1);
        Self {
            interval,
            tolerance: interval.saturating_mul(budget.burst.saturating_sub(1)),
            blocked: budget.burst == 0,
            tat: None,
        }
    }

    /// Spends one token if there is one.
    fn take(&mut self, now: Instant) -> bool {
        if self.blocked {
            return false;
        }
        let tat = self.tat.map_or(now, |tat| tat.max(now));
        if tat.saturating_duration_since(now) > self.tolerance {
            return false;
        }
        self.tat = Some(tat.checked_add(self.interval).unwrap_or(tat));
        true
    }
}

#[derive(Debug)]
struct Peer {
    role: Role,
    budget: Option<Gcra>,
    stats: PeerStats,
}

#[derive(Debug, Clone, Copy)]
enum MacEntry {
    Client(PeerId),
    Learned { peer: PeerId, last_seen: Instant },
}

impl MacEntry {
    const fn peer(self) -> PeerId {
        match self {
            Self::Client(peer) | Self::Learned { peer, .. } => peer,
        }
    }
}

/// One relay room's switch. See the module documentation for what it does.
#[derive(Debug)]
pub struct Room {
    config: RoomConfig,
    peers: HashMap<PeerId, Peer>,
    gateway: Option<PeerId>,
    macs: HashMap<Mac, MacEntry>,
    learned: usize,
    next_sweep: Option<Instant>,
    decisions: DecisionCache,
    stats: RoomStats,
}

impl Room {
    /// An empty room with `config`, its tables sized up front.
    ///
    /// Out-of-range knobs are clamped rather than rejected: `fragment_decisions` to
    /// 1..=65 536, `mac_age` and `fragment_decision_ttl` to at most one day; tables are
    /// pre-sized for at most 65 536 entries (a larger `max_learned_macs` still works, but the
    /// MAC table then grows, and allocates, as it fills).
    pub fn new(mut config: RoomConfig) -> Self {
        config.fragment_decisions = config.fragment_decisions.clamp(1, MAX_PRESIZE);
        config.mac_age = config.mac_age.min(MAX_DURATION);
        config.fragment_decision_ttl = config.fragment_decision_ttl.min(MAX_DURATION);
        let decisions = DecisionCache::new(config.fragment_decisions, config.fragment_decision_ttl);
        Self {
            peers: HashMap::with_capacity(config.expected_peers.min(MAX_PRESIZE)),
            macs: HashMap::with_capacity(
                config
                    .max_learned_macs
                    .saturating_add(config.expected_peers)
                    .min(MAX_PRESIZE),
            ),
            gateway: None,
            learned: 0,
            next_sweep: None,
            decisions,
            stats: RoomStats::default(),
            config,
        }
    }

    /// The room's configuration.
    pub const fn config(&self) -> &RoomConfig {
        &self.config
    }

    /// Adds a peer admitted by the control plane. A client's MAC becomes fixed in the MAC table
    /// (replacing a MAC learned behind the gateway, if any).
    ///
    /// # Errors
    ///
    /// [`AddPeerError`] when the id is already present, the MAC is invalid or taken by another
    /// client, or a second gateway would join. The room is unchanged then.
    pub fn add_peer(&mut self, peer: PeerId, role: Role) -> Result<(), AddPeerError> {
        if self.peers.contains_key(&peer) {
            return Err(AddPeerError::AlreadyPresent(peer));
        }
        let budget = match role {
            Role::Client { mac } => {
                mac.validate_peer()?;
                match self.macs.get(&mac) {
                    Some(MacEntry::Client(owner)) => {
                        return Err(AddPeerError::MacInUse { mac, owner: *owner });
                    }
                    Some(MacEntry::Learned { .. }) => {
                        self.learned -= 1;
                        if self.learned == 0 {
                            self.next_sweep = None;
                        }
                    }
                    None => {}
                }
                self.macs.insert(mac, MacEntry::Client(peer));
                self.config.client_group_budget
            }
            Role::Gateway => {
                if let Some(gateway) = self.gateway {
                    return Err(AddPeerError::GatewayPresent(gateway));
                }
                self.gateway = Some(peer);
                self.config.gateway_group_budget
            }
        };
        self.peers.insert(
            peer,
            Peer {
                role,
                budget: budget.map(Gcra::new),
                stats: PeerStats::default(),
            },
        );
        Ok(())
    }

    /// Removes a peer: its MACs (fixed and learned) and the fragment decisions for its frames
    /// disappear at once. Returns the peer's final counters, or `None` if it was not present.
    pub fn remove_peer(&mut self, peer: PeerId) -> Option<PeerStats> {
        let removed = self.peers.remove(&peer)?;
        if self.gateway == Some(peer) {
            self.gateway = None;
        }
        let mut learned_removed = 0;
        self.macs.retain(|_, entry| {
            let keep = entry.peer() != peer;
            if !keep && matches!(entry, MacEntry::Learned { .. }) {
                learned_removed += 1;
            }
            keep
        });
        self.learned -= learned_removed;
        if self.learned == 0 {
            self.next_sweep = None;
        }
        self.decisions.remove_peer(peer);
        Some(removed.stats)
    }

    /// Decides what to do with one overlay datagram received from `ingress` at `now`.
    ///
    /// Clears `out` and, on [`Verdict::Forward`], writes into it the peers to send the datagram
    /// to: never `ingress`, never a peer outside the room, each at most once. Call it for every
    /// datagram a peer of the room sends; reuse `out` between calls.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        ingress: PeerId,
        datagram: &[u8],
        out: &mut Vec<PeerId>,
    ) -> Verdict {
        out.clear();
        let Some(peer) = self.peers.get_mut(&ingress) else {
            self.stats.drops.bump(DropReason::UnknownIngress);
            return Verdict::Drop(DropReason::UnknownIngress);
        };
        let len = datagram.len() as u64;
        peer.stats.datagrams_in += 1;
        peer.stats.bytes_in += len;
        let decision = self.decide(now, ingress, datagram);
        match decision {
            Decision::Drop(reason) => {
                self.count_drop(ingress, reason);
                Verdict::Drop(reason)
            }
            Decision::Unicast(egress) => match self.peers.get_mut(&egress) {
                Some(peer) if egress != ingress => {
                    peer.stats.datagrams_out += 1;
                    peer.stats.bytes_out += len;
                    out.push(egress);
                    Verdict::Forward
                }
                _ => {
                    // Unreachable: MAC entries and decisions of a departed peer are removed
                    // with it, and local destinations are dropped earlier.
                    self.count_drop(ingress, DropReason::OrphanFragment);
                    Verdict::Drop(DropReason::OrphanFragment)
                }
            },
            Decision::Flood => {
                for (&id, peer) in &mut self.peers {
                    if id != ingress {
                        peer.stats.datagrams_out += 1;
                        peer.stats.bytes_out += len;
                        out.push(id);
                    }
                }
                Verdict::Forward
            }
        }
    }

    fn count_drop(&mut self, ingress: PeerId, reason: DropReason) {
        self.stats.drops.bump(reason);
        if let Some(peer) = self.peers.get_mut(&ingress) {
            peer.stats.drops.bump(reason);
        }
    }

    /// The decision for one datagram from a peer known to be in the room.
    fn decide(&mut self, now: Instant, ingress: PeerId, datagram: &[u8]) -> Decision {
        let Ok(datagram) = Datagram::new_checked(datagram) else {
            return Decision::Drop(DropReason::MalformedOverlay);
        };
        match datagram.header() {
            Header::Whole => {
                self.count_frame_in(ingress);
                let frame = datagram.payload();
                if frame.len() > self.config.max_frame_len {
                    return Decision::Drop(DropReason::Oversize);
                }
                self.decide_frame(now, ingress, frame)
            }
            Header::Fragment {
                origin,
                frame_id,
                index,
                count,
                total_len,
            } => {
                if index == 0 {
                    self.count_frame_in(ingress);
                }
                if origin != overlay::origin_of(ingress.0) {
                    return Decision::Drop(DropReason::SpoofedOrigin);
                }
                if usize::from(total_len) > self.config.max_frame_len {
                    return Decision::Drop(DropReason::Oversize);
                }
                let key = (ingress, frame_id);
                if index != 0 {
                    return match self.decisions.follow(now, key, count, total_len) {
                        Lookup::Follow(decision) => decision,
                        Lookup::Orphan => Decision::Drop(DropReason::OrphanFragment),
                    };
                }
                let decision = self.decide_frame(now, ingress, datagram.payload());
                if self.decisions.insert(now, key, decision, count, total_len) {
                    self.stats.fragment_decisions_evicted += 1;
                }
                decision
            }
        }
    }

    fn count_frame_in(&mut self, ingress: PeerId) {
        if let Some(peer) = self.peers.get_mut(&ingress) {
            peer.stats.frames_in += 1;
        }
    }

    /// Filters and switches a whole frame or fragment 0 from its leading bytes.
    fn decide_frame(&mut self, now: Instant, ingress: PeerId, bytes: &[u8]) -> Decision {
        let Ok(frame) = Frame::new_checked(bytes) else {
            return Decision::Drop(DropReason::MalformedEthernet);
        };
        let (dst, src) = (frame.dst(), frame.src());
        if self.config.drop_link_local_control && dst.is_link_local_control() {
            return Decision::Drop(DropReason::LinkLocalControl);
        }
        let Some(peer) = self.peers.get(&ingress) else {
            return Decision::Drop(DropReason::UnknownIngress);
        };
        let role = peer.role;
        match role {
            Role::Client { mac } => {
                if self.config.drop_spoofed_source && src != mac {
                    return Decision::Drop(DropReason::SpoofedSource);
                }
                if let Err(reason) = filter::check_client_frame(bytes, self.config.client_filters())
                {
                    return Decision::Drop(reason);
                }
            }
            Role::Gateway => {
                if self.config.loop_guard
                    && matches!(self.macs.get(&src), Some(MacEntry::Client(_)))
                {
                    return Decision::Drop(DropReason::LoopGuard);
                }
            }
        }
        if dst.is_multicast() {
            let within_budget = self
                .peers
                .get_mut(&ingress)
                .and_then(|peer| peer.budget.as_mut())
                .is_none_or(|budget| budget.take(now));
            if !within_budget {
                return Decision::Drop(DropReason::GroupBudget);
            }
        }
        if role == Role::Gateway {
            self.learn(now, ingress, src);
        }
        if dst.is_multicast() {
            self.stats.floods += 1;
            return Decision::Flood;
        }
        match self.owner_at(now, dst) {
            Some(egress) if egress == ingress => Decision::Drop(DropReason::LocalDestination),
            Some(egress) => Decision::Unicast(egress),
            None => {
                self.stats.floods += 1;
                self.stats.unknown_unicast_floods += 1;
                Decision::Flood
            }
        }
    }

    fn learn(&mut self, now: Instant, peer: PeerId, src: Mac) {
        if src.is_multicast() || src.is_zero() {
            return;
        }
        match self.macs.get_mut(&src) {
            Some(MacEntry::Learned {
                peer: owner,
                last_seen,
            }) => {
                *owner = peer;
                *last_seen = now;
            }
            // Only reachable with the loop guard off: a client's MAC stays the client's.
            Some(MacEntry::Client(_)) => {}
            None if self.learned >= self.config.max_learned_macs => {
                self.stats.macs_refused += 1;
            }
            None => {
                self.macs.insert(
                    src,
                    MacEntry::Learned {
                        peer,
                        last_seen: now,
                    },
                );
                self.learned += 1;
                self.stats.macs_learned += 1;
                if self.next_sweep.is_none() {
                    self.next_sweep = Some(now + self.config.mac_age);
                }
            }
        }
    }

    /// The peer a unicast MAC lives behind, ignoring learned entries older than the age limit.
    fn owner_at(&self, now: Instant, mac: Mac) -> Option<PeerId> {
        match *self.macs.get(&mac)? {
            MacEntry::Client(peer) => Some(peer),
            MacEntry::Learned { peer, last_seen } => {
                (now.saturating_duration_since(last_seen) < self.config.mac_age).then_some(peer)
            }
        }
    }

    /// When [`Self::handle_timeout`] next has work to do (ageing learned MACs), if ever.
    pub const fn poll_timeout(&self) -> Option<Instant> {
        self.next_sweep
    }

    /// Removes learned MACs not seen for [`RoomConfig::mac_age`]. Call it when the instant from
    /// [`Self::poll_timeout`] has passed; calling it earlier or more often is harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.next_sweep {
            Some(at) if at <= now => {}
            _ => return,
        }
        let age = self.config.mac_age;
        let mut oldest: Option<Instant> = None;
        let mut aged_out = 0;
        self.macs.retain(|_, entry| match *entry {
            MacEntry::Client(_) => true,
            MacEntry::Learned { last_seen, .. } => {
                let keep = now.saturating_duration_since(last_seen) < age;
                if keep {
                    oldest = Some(oldest.map_or(last_seen, |o| o.min(last_seen)));
                } else {
                    aged_out += 1;
                }
                keep
            }
        });
        self.learned -= aged_out;
        self.stats.macs_aged_out += aged_out as u64;
        self.next_sweep = oldest.map(|oldest| (oldest + age).max(now + SWEEP_GRANULARITY));
    }

    /// Counters of one peer, or `None` if it is not in the room.
    pub fn peer_stats(&self, peer: PeerId) -> Option<&PeerStats> {
        self.peers.get(&peer).map(|p| &p.stats)
    }

    /// Room-wide counters.
    pub const fn stats(&self) -> &RoomStats {
        &self.stats
    }

    /// Entries in the MAC table: client MACs plus learned MACs (stale ones included until the
    /// next sweep).
    pub fn mac_table_len(&self) -> usize {
        self.macs.len()
    }

    /// Learned MACs in the table (stale ones included until the next sweep).
    pub const fn learned_macs(&self) -> usize {
        self.learned
    }

    /// Fragment decisions currently remembered.
    pub fn pending_fragment_decisions(&self) -> usize {
        self.decisions.len()
    }

    /// The peer the MAC table maps `mac` to, stale learned entries included until the next
    /// sweep.
    pub fn mac_owner(&self, mac: Mac) -> Option<PeerId> {
        self.macs.get(&mac).map(|entry| entry.peer())
    }

    /// Number of peers in the room.
    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    /// True when `peer` is in the room.
    pub fn contains_peer(&self, peer: PeerId) -> bool {
        self.peers.contains_key(&peer)
    }

    /// The role of `peer`, if it is in the room.
    pub fn role(&self, peer: PeerId) -> Option<Role> {
        self.peers.get(&peer).map(|p| p.role)
    }

    /// The room's gateway, if one is present.
    pub const fn gateway(&self) -> Option<PeerId> {
        self.gateway
    }

    /// Every peer with its role, in no particular order.
    pub fn peers(&self) -> impl Iterator<Item = (PeerId, Role)> + '_ {
        self.peers.iter().map(|(&id, p)| (id, p.role))
    }

    /// The MACs of the room's clients (what the gateway's [`LanFilter`] needs), in no particular
    /// order.
    pub fn client_macs(&self) -> impl Iterator<Item = (PeerId, Mac)> + '_ {
        self.peers.iter().filter_map(|(&id, p)| match p.role {
            Role::Client { mac } => Some((id, mac)),
            Role::Gateway => None,
        })
    }
}
