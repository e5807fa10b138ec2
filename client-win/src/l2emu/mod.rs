//! Ethernet emulation for L3 adapters: ARP, IPv6 neighbour discovery, multicast mapping, DHCP
//! client.
//!
//! Linux TUN and Windows wintun carry IP packets, but the room carries Ethernet frames. The
//! [`Emulator`] sits between them and plays the part of an Ethernet NIC plus the link layer of
//! an IP stack, once for both platforms:
//!
//! - It owns the client's MAC and its addresses (IPv4 from DHCP or static configuration; IPv6
//!   link-local from EUI-64 by default plus any the caller adds, such as the random link-local
//!   Windows picks).
//! - Frames from the room ([`Emulator::handle_frame`]): IPv4/IPv6 frames sent to our MAC, to
//!   broadcast or to any multicast group lose their Ethernet header and go to the adapter
//!   ([`Emulator::poll_packet`]). Group filtering is left to the adapter's IP stack, which
//!   knows which groups it joined. ARP and neighbour discovery are answered here and never reach
//!   the adapter; DHCP replies go to the built-in client. Non-IP frames (IPX, 802.3/LLC) cannot
//!   cross an L3 adapter: they are counted ([`Counters::non_ip_dropped`]) and
//!   [`Emulator::status_hint`] tells the player that `--adapter tap` carries them.
//! - Packets from the adapter ([`Emulator::handle_packet`]) get an Ethernet header: broadcast
//!   for 255.255.255.255 and the subnet-directed broadcast, 01:00:5e + low 23 bits for IPv4
//!   multicast (RFC 1112), 33:33 + low 32 bits for IPv6 multicast (RFC 2464), and for unicast
//!   the neighbour's MAC (on-link) or the router's (off-link, IPv4 only), resolved with ARP or
//!   a neighbour solicitation when unknown. For IPv6 the router and the on-link prefixes come
//!   from router advertisements, which also reach the adapter; link-local destinations, and
//!   every destination while no router is known, are resolved on-link.
//! - Timers ([`Emulator::poll_timeout`], [`Emulator::handle_timeout`]) drive ARP/NS retries and
//!   the DHCP client.
//!
//! The emulator is sans-IO: it never reads the clock and never touches a socket. Every drop and
//! every path bumps a counter in [`Counters`].
//!
//! Buffers: frames and packets are `Vec<u8>`s; a caller that hands them back with
//! [`Emulator::recycle`] lets the emulator reuse their allocations.

mod dhcp;
mod neighbour;
mod wire;

pub use wire::eui64_link_local;

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use lanparty_datapath::Mac;
use lanparty_datapath::wire::ethernet::{self, Frame, ethertype};

pub use dhcp::{DhcpState, Lease};
pub use neighbour::NeighbourConfig;

use dhcp::{Destination, DhcpClient};
use neighbour::{Lookup, NeighbourCache};
use wire::{Arp, Ipv4Info};

/// DISCOVERs without an offer before [`Emulator::status_hint`] mentions it.
pub const DHCP_SILENT_HINT_AFTER: u64 = 3;
/// On-link IPv6 prefixes remembered from router advertisements.
const MAX_ON_LINK_PREFIXES: usize = 8;
/// Buffers kept for reuse by [`Emulator::recycle`].
const POOL_LIMIT: usize = 64;
/// Capacity of a fresh buffer: a full 1500-byte packet plus an Ethernet header.
const BUFFER_CAPACITY: usize = 1514;

/// An IPv4 address with its prefix and router.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Config {
    /// Our address.
    pub addr: Ipv4Addr,
    /// Prefix length of the room's subnet (0..=32).
    pub prefix: u8,
    /// The router for off-link destinations, if any.
    pub router: Option<Ipv4Addr>,
}

impl Ipv4Config {
    fn mask(&self) -> u32 {
        u32::MAX
            .checked_shl(32 - u32::from(self.prefix.min(32)))
            .unwrap_or(0)
    }

    /// True when `ip` is in our subnet.
    pub fn is_on_link(&self, ip: Ipv4Addr) -> bool {
        (u32::from(ip) ^ u32::from(self.addr)) & self.mask() == 0
    }

    /// The subnet-directed broadcast address, or `None` for /31 and /32 (RFC 3021).
    pub fn broadcast(&self) -> Option<Ipv4Addr> {
        (self.prefix < 31).then(|| Ipv4Addr::from(u32::from(self.addr) | !self.mask()))
    }
}

/// How the emulator gets its IPv4 address.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Ipv4Mode {
    /// Run the DHCP client over the room; `hostname` goes in option 12 when set.
    Dhcp {
        /// Host name to announce.
        hostname: Option<String>,
    },
    /// A fixed address; no DHCP.
    Static(Ipv4Config),
    /// No IPv4 address (IPv6 only); IPv4 unicast from the adapter is dropped.
    Disabled,
}

/// Emulator configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The client's MAC (the one the relay admitted).
    pub mac: Mac,
    /// IPv4 addressing.
    pub ipv4: Ipv4Mode,
    /// Our IPv6 link-local address; `None` derives the modified EUI-64 one from `mac`.
    pub ipv6_link_local: Option<Ipv6Addr>,
    /// Neighbour cache limits and timers.
    pub neighbours: NeighbourConfig,
    /// Seed for DHCP transaction ids and retransmission jitter. Use a random seed outside
    /// tests (`rand::random()`): clients with equal seeds pick equal transaction ids.
    pub seed: u64,
}

impl Config {
    /// DHCP, EUI-64 link-local, default neighbour settings.
    pub fn new(mac: Mac, seed: u64) -> Self {
        Self {
            mac,
            ipv4: Ipv4Mode::Dhcp { hostname: None },
            ipv6_link_local: None,
            neighbours: NeighbourConfig::default(),
            seed,
        }
    }
}

/// Address changes the caller applies to the adapter.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A new address: configure the adapter with it.
    AddressAcquired {
        /// Our address.
        addr: Ipv4Addr,
        /// Prefix length.
        prefix: u8,
        /// Router, if any.
        router: Option<Ipv4Addr>,
        /// DNS servers from DHCP.
        dns: Vec<Ipv4Addr>,
        /// Lease length; `None` for static or infinite leases.
        lease: Option<Duration>,
    },
    /// The same address was renewed.
    AddressRenewed {
        /// Our address.
        addr: Ipv4Addr,
        /// New lease length; `None` for infinite.
        lease: Option<Duration>,
    },
    /// The address is gone (lease expired or NAK): remove it from the adapter.
    AddressLost {
        /// The address that went away.
        addr: Ipv4Addr,
    },
}

/// What happened to frames and packets, one counter per path and per drop reason.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Counters {
    /// Frames given to [`Emulator::handle_frame`].
    pub frames_in: u64,
    /// Frames shorter than an Ethernet header.
    pub malformed_frames: u64,
    /// Unicast frames for another MAC, and 802.1D control frames.
    pub not_for_us: u64,
    /// Frames with our own source MAC.
    pub looped_back: u64,
    /// 802.1Q-tagged frames (an adapter has no VLANs).
    pub vlan_dropped: u64,
    /// Non-IP frames (IPX, 802.3/LLC, anything but IPv4, IPv6 and ARP).
    pub non_ip_dropped: u64,
    /// IP or ARP payloads that did not parse.
    pub malformed_ip: u64,
    /// IPv4 packets queued for the adapter.
    pub ipv4_to_adapter: u64,
    /// IPv6 packets queued for the adapter.
    pub ipv6_to_adapter: u64,
    /// ARP requests for our address that we answered.
    pub arp_requests_answered: u64,
    /// ARP requests for other addresses.
    pub arp_requests_ignored: u64,
    /// ARP replies and requests that updated the neighbour cache.
    pub arp_learned: u64,
    /// ARP or NA from another MAC claiming one of our addresses.
    pub address_conflicts: u64,
    /// Neighbour solicitations for our addresses that we answered.
    pub ns_answered: u64,
    /// Neighbour solicitations for other addresses.
    pub ns_ignored: u64,
    /// Neighbour advertisements that updated the cache.
    pub na_learned: u64,
    /// NS/NA/RA with a bad checksum, hop limit, source or length.
    pub ndp_invalid: u64,
    /// Router advertisements learned from (they also go to the adapter).
    pub router_advertisements: u64,
    /// UDP/68 packets given to the DHCP client.
    pub dhcp_in: u64,
    /// DHCP messages the client ignored (wrong xid, wrong state, undecodable).
    pub dhcp_ignored: u64,
    /// DHCP messages sent.
    pub dhcp_out: u64,
    /// Packets given to [`Emulator::handle_packet`].
    pub packets_in: u64,
    /// Frames queued for the room from adapter packets.
    pub packets_framed: u64,
    /// Packets that are not IPv4 or IPv6, or whose header is inconsistent.
    pub malformed_packets: u64,
    /// IPv4 unicast with no address, or off-link with no router.
    pub no_route_dropped: u64,
    /// Packets that waited for a neighbour to answer.
    pub queued_for_resolution: u64,
    /// Packets dropped because their neighbour's queue was full.
    pub pending_queue_full_dropped: u64,
    /// Packets dropped because the neighbour cache was full.
    pub neighbour_cache_full_dropped: u64,
    /// Packets dropped when a resolution gave up.
    pub resolution_failed_dropped: u64,
    /// Resolutions that gave up after the last retry.
    pub resolutions_failed: u64,
    /// ARP requests sent.
    pub arp_requests_sent: u64,
    /// Neighbour solicitations sent.
    pub ns_sent: u64,
}

/// Ethernet emulation for one L3 adapter. See the [module documentation](self).
#[derive(Debug)]
pub struct Emulator {
    mac: Mac,
    ipv4: Option<Ipv4Config>,
    ipv6: Vec<Ipv6Addr>,
    /// The default router from the last router advertisement, until its lifetime ends.
    ipv6_router: Option<(Ipv6Addr, Instant)>,
    /// On-link prefixes from router advertisements, until their valid lifetime ends.
    ipv6_on_link: Vec<(Ipv6Addr, u8, Instant)>,
    dhcp: Option<DhcpClient>,
    neighbours: NeighbourCache,
    frames: VecDeque<Vec<u8>>,
    packets: VecDeque<Vec<u8>>,
    events: VecDeque<Event>,
    pool: Vec<Vec<u8>>,
    counters: Counters,
}

impl Emulator {
    /// Creates the emulator. In DHCP mode the first DISCOVER is queued at once (read it with
    /// [`Self::poll_frame`]); in static mode an [`Event::AddressAcquired`] is queued.
    pub fn new(now: Instant, config: Config) -> Self {
        let link_local = config
            .ipv6_link_local
            .unwrap_or_else(|| eui64_link_local(config.mac));
        let mut emu = Self {
            mac: config.mac,
            ipv4: None,
            ipv6: vec![link_local],
            ipv6_router: None,
            ipv6_on_link: Vec::new(),
            dhcp: None,
            neighbours: NeighbourCache::new(config.neighbours),
            frames: VecDeque::new(),
            packets: VecDeque::new(),
            events: VecDeque::new(),
            pool: Vec::new(),
            counters: Counters::default(),
        };
        match config.ipv4 {
            Ipv4Mode::Dhcp { hostname } => {
                emu.dhcp = Some(DhcpClient::new(now, config.mac, hostname, config.seed));
                emu.after_dhcp(now);
            }
            Ipv4Mode::Static(cfg) => {
                emu.ipv4 = Some(cfg);
                emu.events.push_back(Event::AddressAcquired {
                    addr: cfg.addr,
                    prefix: cfg.prefix,
                    router: cfg.router,
                    dns: Vec::new(),
                    lease: None,
                });
            }
            Ipv4Mode::Disabled => {}
        }
        emu
    }

    /// Our MAC.
    pub fn mac(&self) -> Mac {
        self.mac
    }

    /// The IPv4 address in use, if any.
    pub fn ipv4(&self) -> Option<Ipv4Config> {
        self.ipv4
    }

    /// Our IPv6 addresses (the link-local one first).
    pub fn ipv6_addrs(&self) -> &[Ipv6Addr] {
        &self.ipv6
    }

    /// Adds an IPv6 address we answer neighbour solicitations for (for example the
    /// link-local or temporary address the adapter's stack chose).
    pub fn add_ipv6(&mut self, addr: Ipv6Addr) {
        if !self.ipv6.contains(&addr) {
            self.ipv6.push(addr);
        }
    }

    /// Removes an IPv6 address.
    pub fn remove_ipv6(&mut self, addr: Ipv6Addr) {
        self.ipv6.retain(|a| *a != addr);
    }

    /// The DHCP client's state; `None` in static or disabled mode.
    pub fn dhcp_state(&self) -> Option<DhcpState> {
        self.dhcp.as_ref().map(DhcpClient::state)
    }

    /// The DHCP lease, if one is held.
    pub fn lease(&self) -> Option<&Lease> {
        self.dhcp.as_ref().and_then(DhcpClient::lease)
    }

    /// The MAC the neighbour cache holds for `ip`, if it is reachable at `now`.
    pub fn neighbour(&self, now: Instant, ip: IpAddr) -> Option<Mac> {
        self.neighbours.get(now, ip)
    }

    /// The counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// A one-line hint for the status display, when something the player can fix is wrong.
    ///
    /// A DHCP client still selecting after [`DHCP_SILENT_HINT_AFTER`] DISCOVERs asks whether the
    /// party LAN has a DHCP server; otherwise dropped non-IP frames point at `--adapter tap`.
    pub fn status_hint(&self) -> Option<String> {
        if self.dhcp_state() == Some(DhcpState::Selecting)
            && self.counters.dhcp_out >= DHCP_SILENT_HINT_AFTER
        {
            return Some(format!(
                "no DHCP offer after {} requests: is a DHCP server running on the party LAN \
                 (or set a static address)?",
                self.counters.dhcp_out
            ));
        }
        (self.counters.non_ip_dropped > 0).then(|| {
            format!(
                "{} non-IP frames (IPX, NetBIOS/802.3) dropped: this adapter carries IP only; \
                 --adapter tap carries them",
                self.counters.non_ip_dropped
            )
        })
    }

    /// The next frame for the room. Call after every `handle_*` until it returns `None`.
    pub fn poll_frame(&mut self) -> Option<Vec<u8>> {
        self.frames.pop_front()
    }

    /// The next IP packet for the adapter. Call after every `handle_*` until it returns
    /// `None`.
    pub fn poll_packet(&mut self) -> Option<Vec<u8>> {
        self.packets.pop_front()
    }

    /// The next address change for the adapter.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Self::handle_timeout`] wants to run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let dhcp = self.dhcp.as_ref().and_then(DhcpClient::poll_timeout);
        match (dhcp, self.neighbours.poll_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Gives back a buffer from [`Self::poll_frame`] or [`Self::poll_packet`] for reuse.
    pub fn recycle(&mut self, mut buf: Vec<u8>) {
        if self.pool.len() < POOL_LIMIT {
            buf.clear();
            self.pool.push(buf);
        }
    }

    fn buffer(&mut self) -> Vec<u8> {
        self.pool
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(BUFFER_CAPACITY))
    }

    /// Runs timers: ARP/NS retries, resolution give-ups and the DHCP client. Call when the
    /// instant from [`Self::poll_timeout`] has passed (calling early does nothing harmful).
    pub fn handle_timeout(&mut self, now: Instant) {
        let expired = self.neighbours.handle_timeout(now);
        self.counters.resolutions_failed += expired.failed;
        self.counters.resolution_failed_dropped += expired.dropped;
        for ip in expired.resolicit {
            self.solicit(ip);
        }
        if let Some(dhcp) = &mut self.dhcp {
            dhcp.handle_timeout(now);
            self.after_dhcp(now);
        }
    }

    /// Handles an Ethernet frame from the room.
    pub fn handle_frame(&mut self, now: Instant, frame: &[u8]) {
        self.counters.frames_in += 1;
        let Ok(eth) = Frame::new_checked(frame) else {
            self.counters.malformed_frames += 1;
            return;
        };
        let dst = eth.dst();
        if (dst != self.mac && dst.is_unicast()) || dst.is_link_local_control() {
            self.counters.not_for_us += 1;
            return;
        }
        let src = eth.src();
        if src == self.mac {
            self.counters.looped_back += 1;
            return;
        }
        if eth.vlan_id().is_some() {
            self.counters.vlan_dropped += 1;
            return;
        }
        let payload = eth.payload();
        match eth.ethertype() {
            Some(ethertype::IPV4) => self.frame_ipv4(now, payload),
            Some(ethertype::IPV6) => self.frame_ipv6(now, src, payload),
            Some(ethertype::ARP) => self.frame_arp(now, payload),
            _ => self.counters.non_ip_dropped += 1,
        }
    }

    fn frame_ipv4(&mut self, now: Instant, payload: &[u8]) {
        let Some(info) = wire::ipv4_info(payload) else {
            self.counters.malformed_ip += 1;
            return;
        };
        let packet = &payload[..info.total_len];
        if let Some(udp) = self.dhcp_payload(&info, packet) {
            self.counters.dhcp_in += 1;
            if let Some(dhcp) = &mut self.dhcp {
                dhcp.handle_reply(now, udp);
            }
            self.after_dhcp(now);
            return;
        }
        self.counters.ipv4_to_adapter += 1;
        self.queue_for_adapter(packet);
    }

    /// The UDP payload when `packet` is for the DHCP client (UDP to port 68 while DHCP runs).
    fn dhcp_payload<'a>(&self, info: &Ipv4Info, packet: &'a [u8]) -> Option<&'a [u8]> {
        if self.dhcp.is_none() || info.protocol != wire::PROTO_UDP || !info.first_fragment {
            return None;
        }
        let udp = packet.get(info.header_len..)?;
        let dst_port = u16::from_be_bytes([*udp.get(2)?, *udp.get(3)?]);
        if dst_port != dhcp::PORTS.0 {
            return None;
        }
        let len = usize::from(u16::from_be_bytes([*udp.get(4)?, *udp.get(5)?]));
        udp.get(8..len.max(8).min(udp.len()))
    }

    fn queue_for_adapter(&mut self, packet: &[u8]) {
        let mut buf = self.buffer();
        buf.extend_from_slice(packet);
        self.packets.push_back(buf);
    }

    fn frame_ipv6(&mut self, now: Instant, src_mac: Mac, payload: &[u8]) {
        let Some(info) = wire::ipv6_info(payload) else {
            self.counters.malformed_ip += 1;
            return;
        };
        let packet = &payload[..info.total_len];
        let body = &packet[wire::IPV6_HEADER_LEN..];
        if info.next_header == wire::PROTO_ICMPV6
            && matches!(body.first(), Some(&wire::ICMPV6_NS | &wire::ICMPV6_NA))
        {
            self.ndp(now, src_mac, &info, body);
            return;
        }
        if info.next_header == wire::PROTO_ICMPV6 && body.first() == Some(&wire::ICMPV6_RA) {
            // The adapter's stack sees the advertisement too (for SLAAC); the emulator keeps
            // the router and the on-link prefixes for choosing next hops.
            self.router_advertisement(now, src_mac, &info, body);
        }
        self.counters.ipv6_to_adapter += 1;
        self.queue_for_adapter(packet);
    }

    /// Learns the default router and on-link prefixes from a router advertisement
    /// (RFC 4861 sections 4.2, 4.6.2 and 6.3.4).
    fn router_advertisement(
        &mut self,
        now: Instant,
        src_mac: Mac,
        ip: &wire::Ipv6Info,
        icmp: &[u8],
    ) {
        // RFC 4861 6.1.2: link-local source, hop limit 255, code 0, length >= 16.
        let link_local_source = ip.src.segments()[0] & 0xffc0 == 0xfe80;
        if !link_local_source
            || ip.hop_limit != 255
            || icmp.len() < 16
            || icmp[1] != 0
            || wire::icmpv6_checksum(ip.src, ip.dst, icmp) != 0
        {
            self.counters.ndp_invalid += 1;
            return;
        }
        self.counters.router_advertisements += 1;
        let lifetime = Duration::from_secs(u64::from(u16::from_be_bytes([icmp[6], icmp[7]])));
        self.ipv6_router = (!lifetime.is_zero()).then_some((ip.src, now + lifetime));
        let options = &icmp[16..];
        let mac = wire::ndp_lladdr(options, wire::NDP_OPT_SLLA).unwrap_or(src_mac);
        self.learn(now, IpAddr::V6(ip.src), mac, true);
        for (prefix, len, valid) in wire::ndp_on_link_prefixes(options) {
            self.ipv6_on_link
                .retain(|(p, l, _)| (*p, *l) != (prefix, len));
            if valid > 0 && self.ipv6_on_link.len() < MAX_ON_LINK_PREFIXES {
                let until = now + Duration::from_secs(u64::from(valid));
                self.ipv6_on_link.push((prefix, len, until));
            }
        }
    }

    /// The next hop for an IPv6 unicast destination: the destination itself when it is
    /// link-local or in an advertised on-link prefix, else the advertised router, else the
    /// destination (no router known: try it on-link).
    fn ipv6_next_hop(&self, now: Instant, dst: Ipv6Addr) -> Ipv6Addr {
        if dst.segments()[0] & 0xffc0 == 0xfe80 {
            return dst;
        }
        let on_link = self
            .ipv6_on_link
            .iter()
            .any(|(p, l, until)| now < *until && wire::ipv6_prefix_match(dst, *p, *l));
        match self.ipv6_router {
            Some((router, until)) if !on_link && now < until => router,
            _ => dst,
        }
    }

    /// Handles a neighbour solicitation or advertisement (RFC 4861 sections 7.1 and 7.2).
    fn ndp(&mut self, now: Instant, src_mac: Mac, ip: &wire::Ipv6Info, icmp: &[u8]) {
        // RFC 4861 7.1.1/7.1.2: hop limit 255, code 0, length >= 24, valid checksum.
        if ip.hop_limit != 255
            || icmp.len() < 24
            || icmp[1] != 0
            || wire::icmpv6_checksum(ip.src, ip.dst, icmp) != 0
        {
            self.counters.ndp_invalid += 1;
            return;
        }
        let Some(target) = wire::ipv6_at(icmp, 8) else {
            self.counters.ndp_invalid += 1;
            return;
        };
        let options = &icmp[24..];
        if icmp[0] == wire::ICMPV6_NS {
            if !self.ipv6.contains(&target) {
                self.counters.ns_ignored += 1;
                return;
            }
            let slla = wire::ndp_lladdr(options, wire::NDP_OPT_SLLA);
            let dad = ip.src.is_unspecified();
            if !dad && let Some(mac) = slla {
                self.learn(now, IpAddr::V6(ip.src), mac, true);
            }
            self.counters.ns_answered += 1;
            // RFC 4861 7.2.4: answer a DAD probe (unspecified source) to all-nodes with S
            // clear, anything else to its source with S set.
            let (dst_ip, dst_mac, solicited) = if dad {
                let all_nodes = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
                (all_nodes, wire::ipv6_multicast_mac(all_nodes), false)
            } else {
                (ip.src, slla.unwrap_or(src_mac), true)
            };
            let flags = if solicited { 0x60 } else { 0x20 };
            let mut msg = [0u8; 32];
            msg[0] = wire::ICMPV6_NA;
            msg[4] = flags;
            msg[8..24].copy_from_slice(&target.octets());
            msg[24] = wire::NDP_OPT_TLLA;
            msg[25] = 1;
            msg[26..32].copy_from_slice(&self.mac.0);
            let mut buf = self.ethernet(dst_mac, ethertype::IPV6);
            wire::emit_icmpv6(&mut buf, target, dst_ip, &mut msg);
            self.frames.push_back(buf);
        } else {
            if self.ipv6.contains(&target) {
                self.counters.address_conflicts += 1;
                return;
            }
            let mac = wire::ndp_lladdr(options, wire::NDP_OPT_TLLA).unwrap_or(src_mac);
            self.counters.na_learned += 1;
            self.learn(now, IpAddr::V6(target), mac, true);
        }
    }

    fn frame_arp(&mut self, now: Instant, payload: &[u8]) {
        let Some(arp) = Arp::parse(payload) else {
            self.counters.malformed_ip += 1;
            return;
        };
        let ours = self.ipv4.map(|c| c.addr);
        if Some(arp.sender_ip) == ours {
            self.counters.address_conflicts += 1;
            return;
        }
        let sender_known = !arp.sender_ip.is_unspecified();
        match arp.op {
            wire::ARP_REQUEST if Some(arp.target_ip) == ours => {
                // RFC 826: the target of a request merges the sender into its table.
                if sender_known {
                    self.counters.arp_learned += 1;
                    self.learn(now, IpAddr::V4(arp.sender_ip), arp.sender_mac, true);
                }
                self.counters.arp_requests_answered += 1;
                let reply = Arp {
                    op: wire::ARP_REPLY,
                    sender_mac: self.mac,
                    sender_ip: arp.target_ip,
                    target_mac: arp.sender_mac,
                    target_ip: arp.sender_ip,
                };
                let mut buf = self.ethernet(arp.sender_mac, ethertype::ARP);
                reply.emit(&mut buf);
                self.frames.push_back(buf);
            }
            wire::ARP_REQUEST => {
                self.counters.arp_requests_ignored += 1;
                // Gratuitous ARP refreshes an entry we already have, never creates one.
                if sender_known && arp.sender_ip == arp.target_ip {
                    self.learn(now, IpAddr::V4(arp.sender_ip), arp.sender_mac, false);
                }
            }
            wire::ARP_REPLY if sender_known => {
                self.counters.arp_learned += 1;
                self.learn(now, IpAddr::V4(arp.sender_ip), arp.sender_mac, true);
            }
            _ => self.counters.malformed_ip += 1,
        }
    }

    /// Updates the cache and sends what waited for this neighbour.
    fn learn(&mut self, now: Instant, ip: IpAddr, mac: Mac, create: bool) {
        let Some(queue) = self.neighbours.learn(now, ip, mac, create) else {
            return;
        };
        for packet in queue {
            self.emit_packet(mac, &packet);
            self.recycle(packet);
        }
    }

    /// A buffer holding an Ethernet header from us to `dst`.
    fn ethernet(&mut self, dst: Mac, kind: u16) -> Vec<u8> {
        let mut buf = self.buffer();
        buf.resize(ethernet::HEADER_LEN, 0);
        ethernet::Repr {
            dst,
            src: self.mac,
            type_or_length: kind,
        }
        .emit(&mut buf);
        buf
    }

    fn emit_packet(&mut self, dst: Mac, packet: &[u8]) {
        let kind = if packet[0] >> 4 == 6 {
            ethertype::IPV6
        } else {
            ethertype::IPV4
        };
        let mut buf = self.ethernet(dst, kind);
        buf.extend_from_slice(packet);
        self.counters.packets_framed += 1;
        self.frames.push_back(buf);
    }

    /// Handles an IP packet from the adapter: frames it for the room, or queues it behind a
    /// neighbour resolution, or drops and counts it.
    pub fn handle_packet(&mut self, now: Instant, packet: &[u8]) {
        self.counters.packets_in += 1;
        match packet.first().map(|b| b >> 4) {
            Some(4) => {
                let Some(info) = wire::ipv4_info(packet) else {
                    self.counters.malformed_packets += 1;
                    return;
                };
                self.route_ipv4(now, info.dst, &packet[..info.total_len]);
            }
            Some(6) => {
                let Some(info) = wire::ipv6_info(packet) else {
                    self.counters.malformed_packets += 1;
                    return;
                };
                let packet = &packet[..info.total_len];
                if info.dst.is_multicast() {
                    self.emit_packet(wire::ipv6_multicast_mac(info.dst), packet);
                } else {
                    let hop = self.ipv6_next_hop(now, info.dst);
                    self.resolve(now, IpAddr::V6(hop), packet);
                }
            }
            _ => self.counters.malformed_packets += 1,
        }
    }

    fn route_ipv4(&mut self, now: Instant, dst: Ipv4Addr, packet: &[u8]) {
        if dst.is_broadcast() || self.ipv4.and_then(|c| c.broadcast()) == Some(dst) {
            self.emit_packet(Mac::BROADCAST, packet);
            return;
        }
        if dst.is_multicast() {
            self.emit_packet(wire::ipv4_multicast_mac(dst), packet);
            return;
        }
        let next_hop = match self.ipv4 {
            Some(cfg) if cfg.is_on_link(dst) => Some(dst),
            Some(cfg) => cfg.router,
            None => None,
        };
        match next_hop {
            Some(hop) => self.resolve(now, IpAddr::V4(hop), packet),
            None => self.counters.no_route_dropped += 1,
        }
    }

    fn resolve(&mut self, now: Instant, next_hop: IpAddr, packet: &[u8]) {
        match self.neighbours.lookup_or_queue(now, next_hop, packet) {
            Lookup::Hit(mac) => self.emit_packet(mac, packet),
            Lookup::Queued { solicit } => {
                self.counters.queued_for_resolution += 1;
                if solicit {
                    self.solicit(next_hop);
                }
            }
            Lookup::QueueFull => self.counters.pending_queue_full_dropped += 1,
            Lookup::CacheFull => self.counters.neighbour_cache_full_dropped += 1,
        }
    }

    /// Sends an ARP request or a neighbour solicitation for `ip`.
    fn solicit(&mut self, ip: IpAddr) {
        match ip {
            IpAddr::V4(target_ip) => {
                self.counters.arp_requests_sent += 1;
                let request = Arp {
                    op: wire::ARP_REQUEST,
                    sender_mac: self.mac,
                    sender_ip: self.ipv4.map_or(Ipv4Addr::UNSPECIFIED, |c| c.addr),
                    target_mac: Mac::ZERO,
                    target_ip,
                };
                let mut buf = self.ethernet(Mac::BROADCAST, ethertype::ARP);
                request.emit(&mut buf);
                self.frames.push_back(buf);
            }
            IpAddr::V6(target) => {
                self.counters.ns_sent += 1;
                let group = wire::solicited_node(target);
                let src = self.ipv6[0];
                let mut msg = [0u8; 32];
                msg[0] = wire::ICMPV6_NS;
                msg[8..24].copy_from_slice(&target.octets());
                msg[24] = wire::NDP_OPT_SLLA;
                msg[25] = 1;
                msg[26..32].copy_from_slice(&self.mac.0);
                let mut buf = self.ethernet(wire::ipv6_multicast_mac(group), ethertype::IPV6);
                wire::emit_icmpv6(&mut buf, src, group, &mut msg);
                self.frames.push_back(buf);
            }
        }
    }

    /// Sends what the DHCP client queued and applies its address changes.
    fn after_dhcp(&mut self, now: Instant) {
        let Some(dhcp) = &mut self.dhcp else { return };
        let mut transmits = Vec::new();
        while let Some(t) = dhcp.poll_transmit() {
            transmits.push(t);
        }
        let mut events = Vec::new();
        while let Some(e) = dhcp.poll_event() {
            events.push(e);
        }
        self.counters.dhcp_out = dhcp.sent;
        self.counters.dhcp_ignored = dhcp.ignored;
        let lease = dhcp.lease().map(|l| Ipv4Config {
            addr: l.addr,
            prefix: l.prefix,
            router: l.router,
        });
        if lease != self.ipv4 {
            // A new subnet makes old neighbours meaningless.
            self.neighbours.clear();
            self.ipv4 = lease;
        }
        self.events.extend(events);
        let (client_port, server_port) = dhcp::PORTS;
        for t in transmits {
            let (src, dst) = match t.dst {
                Destination::Broadcast { src } => (src, Ipv4Addr::BROADCAST),
                Destination::Unicast { src, dst } => (src, dst),
            };
            let mut packet = self.buffer();
            wire::emit_ipv4_header(
                &mut packet,
                src,
                dst,
                wire::PROTO_UDP,
                64,
                8 + t.payload.len(),
            );
            wire::emit_udp(&mut packet, client_port, server_port, &t.payload);
            self.route_ipv4(now, dst, &packet);
            self.recycle(packet);
        }
    }
}
