//! A sans-IO DHCPv4 client (RFC 2131) that runs over the emulator's frames.
//!
//! States are named for what they wait on: [`DhcpState::Selecting`] (an OFFER),
//! [`DhcpState::Requesting`] (the ACK for the chosen offer), [`DhcpState::Bound`] (T1),
//! [`DhcpState::Renewing`] (an ACK from our server, unicast), [`DhcpState::Rebinding`] (an ACK
//! from any server, broadcast).
//!
//! Retransmission follows RFC 2131 section 4.1: "the delay before the first retransmission
//! SHOULD be 4 seconds randomized by the value of a uniform random number chosen from the range
//! -1 to +1 ... The delay before the next retransmission SHOULD be 8 seconds randomized ...
//! up to a maximum of 64 seconds." The random numbers come from a seeded RNG, never the clock,
//! so a test with the same seed sees the same schedule.
//!
//! Renewing and rebinding follow section 4.4.5: at T1 the client unicasts a REQUEST to the
//! server that granted the lease; at T2 it broadcasts; at lease expiry it gives the address up
//! and starts again with DISCOVER. Between retransmissions in those states the client waits
//! "one-half of the remaining time until T2 (in RENEWING state) and one-half of the remaining
//! lease time (in REBINDING state), down to a minimum of 60 seconds", capped at the next
//! deadline so a short lease still moves on time.

use std::collections::VecDeque;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use dhcproto::v4::{
    CLIENT_PORT, DhcpOption, Flags, Message, MessageType, Opcode, OptionCode, SERVER_PORT,
};
use dhcproto::{Decodable, Encodable};
use lanparty_datapath::Mac;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::Event;

/// First retransmission delay before jitter.
const INITIAL_RETRANSMIT: Duration = Duration::from_secs(4);
/// Largest retransmission delay before jitter.
const MAX_RETRANSMIT: Duration = Duration::from_secs(64);
/// REQUESTs sent for one offer before going back to DISCOVER.
const REQUEST_TRIES: u32 = 4;
/// Smallest wait between REQUESTs while renewing or rebinding (RFC 2131 section 4.4.5).
const MIN_RENEW_WAIT: Duration = Duration::from_secs(60);
/// Lease assumed when an ACK carries no lease time option.
const DEFAULT_LEASE: Duration = Duration::from_secs(3600);
/// BOOTP fixed header plus the magic cookie (RFC 2131 figure 1).
const FIXED_HEADER_LEN: usize = 240;
/// The lease time that means "infinite" (RFC 2131 section 3.3).
const INFINITE_LEASE: u32 = 0xffff_ffff;

/// What the DHCP client waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DhcpState {
    /// A DISCOVER went out; waiting for an OFFER.
    Selecting,
    /// A REQUEST for an offered address went out; waiting for the ACK.
    Requesting,
    /// Holding a lease; waiting for T1.
    Bound,
    /// Past T1; unicast REQUESTs to the granting server until T2.
    Renewing,
    /// Past T2; broadcast REQUESTs until the lease expires.
    Rebinding,
}

/// A lease the client holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// Our address.
    pub addr: Ipv4Addr,
    /// Prefix length from the subnet mask option (24 when absent or not contiguous).
    pub prefix: u8,
    /// First router option, if any.
    pub router: Option<Ipv4Addr>,
    /// Domain name servers.
    pub dns: Vec<Ipv4Addr>,
    /// The server identifier of the server that granted the lease.
    pub server: Ipv4Addr,
    /// Lease duration; `None` for an infinite lease.
    pub lease: Option<Duration>,
    /// Interface MTU option, if the server sent one.
    pub mtu: Option<u16>,
    /// When the ACK arrived.
    pub acquired: Instant,
    /// When to start renewing (T1).
    pub t1: Option<Instant>,
    /// When to start rebinding (T2).
    pub t2: Option<Instant>,
    /// When the lease expires.
    pub expires: Option<Instant>,
}

/// Where a DHCP message goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Destination {
    /// To 255.255.255.255 and ff:ff:ff:ff:ff:ff from `src` (0.0.0.0 before we hold a lease).
    Broadcast { src: Ipv4Addr },
    /// To the server's address, routed like any other packet.
    Unicast { src: Ipv4Addr, dst: Ipv4Addr },
}

/// A DHCP message to send, UDP payload only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Transmit {
    pub(crate) payload: Vec<u8>,
    pub(crate) dst: Destination,
}

/// UDP ports of DHCP (client, server).
pub(crate) const PORTS: (u16, u16) = (CLIENT_PORT, SERVER_PORT);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Offer {
    addr: Ipv4Addr,
    server: Ipv4Addr,
}

/// The DHCPv4 client state machine.
#[derive(Debug)]
pub(crate) struct DhcpClient {
    mac: Mac,
    hostname: Option<String>,
    rng: StdRng,
    state: DhcpState,
    xid: u32,
    /// Retransmissions so far in this state.
    attempt: u32,
    /// When the current exchange started (for the `secs` field).
    exchange_start: Instant,
    offer: Option<Offer>,
    lease: Option<Lease>,
    timer: Option<Instant>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    /// Replies that did not parse or did not belong to us.
    pub(crate) ignored: u64,
    /// Messages sent.
    pub(crate) sent: u64,
}

impl DhcpClient {
    /// A client that sends its first DISCOVER at once.
    pub(crate) fn new(now: Instant, mac: Mac, hostname: Option<String>, seed: u64) -> Self {
        let mut client = Self {
            mac,
            hostname,
            rng: StdRng::seed_from_u64(seed),
            state: DhcpState::Selecting,
            xid: 0,
            attempt: 0,
            exchange_start: now,
            offer: None,
            lease: None,
            timer: None,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            ignored: 0,
            sent: 0,
        };
        client.restart(now);
        client
    }

    pub(crate) fn state(&self) -> DhcpState {
        self.state
    }

    pub(crate) fn lease(&self) -> Option<&Lease> {
        self.lease.as_ref()
    }

    pub(crate) fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub(crate) fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.timer
    }

    /// Drops any lease (with an event) and sends a fresh DISCOVER.
    fn restart(&mut self, now: Instant) {
        if let Some(lease) = self.lease.take() {
            self.events
                .push_back(Event::AddressLost { addr: lease.addr });
        }
        self.state = DhcpState::Selecting;
        self.offer = None;
        self.xid = self.rng.random();
        self.attempt = 0;
        self.exchange_start = now;
        self.send_discover(now);
        self.timer = Some(now + self.retransmit_delay());
    }

    /// RFC 2131 section 4.1 backoff: 4, 8, 16, 32, 64, 64 ... seconds, each +-1 s.
    fn retransmit_delay(&mut self) -> Duration {
        let base = INITIAL_RETRANSMIT
            .saturating_mul(1 << self.attempt.min(6))
            .min(MAX_RETRANSMIT);
        let jitter_ms: i64 = self.rng.random_range(-1000..=1000);
        if jitter_ms >= 0 {
            base + Duration::from_millis(jitter_ms.unsigned_abs())
        } else {
            base - Duration::from_millis(jitter_ms.unsigned_abs())
        }
    }

    fn message(&self, now: Instant, kind: MessageType, broadcast: bool) -> Message {
        let mut msg = Message::new_with_id(
            self.xid,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            &self.mac.0,
        );
        let secs = now.saturating_duration_since(self.exchange_start).as_secs();
        msg.set_secs(u16::try_from(secs).unwrap_or(u16::MAX));
        if broadcast {
            msg.set_flags(Flags::default().set_broadcast());
        }
        let opts = msg.opts_mut();
        opts.insert(DhcpOption::MessageType(kind));
        let mut client_id = vec![1];
        client_id.extend_from_slice(&self.mac.0);
        opts.insert(DhcpOption::ClientIdentifier(client_id));
        opts.insert(DhcpOption::MaxMessageSize(1500));
        opts.insert(DhcpOption::ParameterRequestList(vec![
            OptionCode::SubnetMask,
            OptionCode::Router,
            OptionCode::DomainNameServer,
            OptionCode::InterfaceMtu,
            OptionCode::AddressLeaseTime,
            OptionCode::Renewal,
            OptionCode::Rebinding,
        ]));
        if let Some(name) = &self.hostname {
            opts.insert(DhcpOption::Hostname(name.clone()));
        }
        msg
    }

    fn push(&mut self, msg: &Message, dst: Destination) {
        // Encoding a message we built ourselves cannot fail; if it ever did, sending nothing
        // is the safe outcome and the retransmission timer tries again.
        if let Ok(payload) = msg.to_vec() {
            self.sent += 1;
            self.transmits.push_back(Transmit { payload, dst });
        }
    }

    fn send_discover(&mut self, now: Instant) {
        let msg = self.message(now, MessageType::Discover, true);
        self.push(
            &msg,
            Destination::Broadcast {
                src: Ipv4Addr::UNSPECIFIED,
            },
        );
    }

    fn send_request(&mut self, now: Instant) {
        match self.state {
            DhcpState::Requesting => {
                let Some(offer) = self.offer else { return };
                let mut msg = self.message(now, MessageType::Request, true);
                msg.opts_mut()
                    .insert(DhcpOption::RequestedIpAddress(offer.addr));
                msg.opts_mut()
                    .insert(DhcpOption::ServerIdentifier(offer.server));
                self.push(
                    &msg,
                    Destination::Broadcast {
                        src: Ipv4Addr::UNSPECIFIED,
                    },
                );
            }
            DhcpState::Renewing | DhcpState::Rebinding => {
                let Some(lease) = &self.lease else { return };
                let (addr, server) = (lease.addr, lease.server);
                // RFC 2131 table 5: in RENEWING and REBINDING, ciaddr is our address and
                // neither 'requested IP address' nor 'server identifier' is sent.
                let mut msg = self.message(now, MessageType::Request, false);
                msg.set_ciaddr(addr);
                let dst = if self.state == DhcpState::Renewing {
                    Destination::Unicast {
                        src: addr,
                        dst: server,
                    }
                } else {
                    Destination::Broadcast { src: addr }
                };
                self.push(&msg, dst);
            }
            DhcpState::Selecting | DhcpState::Bound => {}
        }
    }

    /// Call when the timer from [`Self::poll_timeout`] has passed.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        let Some(due) = self.timer else { return };
        if now < due {
            return;
        }
        match self.state {
            DhcpState::Selecting => {
                self.attempt += 1;
                self.send_discover(now);
                self.timer = Some(now + self.retransmit_delay());
            }
            DhcpState::Requesting => {
                self.attempt += 1;
                if self.attempt >= REQUEST_TRIES {
                    self.restart(now);
                } else {
                    self.send_request(now);
                    self.timer = Some(now + self.retransmit_delay());
                }
            }
            DhcpState::Bound | DhcpState::Renewing | DhcpState::Rebinding => {
                self.lease_timer(now);
            }
        }
    }

    /// Moves through Bound -> Renewing -> Rebinding -> expiry as deadlines pass.
    fn lease_timer(&mut self, now: Instant) {
        let Some(lease) = &self.lease else {
            self.restart(now);
            return;
        };
        let (t1, t2, expires) = (lease.t1, lease.t2, lease.expires);
        if expires.is_some_and(|e| now >= e) {
            self.restart(now);
            return;
        }
        if t2.is_some_and(|t| now >= t) {
            if self.state != DhcpState::Rebinding {
                self.state = DhcpState::Rebinding;
                self.xid = self.rng.random();
                self.exchange_start = now;
            }
            self.send_request(now);
            self.timer = expires.map(|e| next_retry(now, e));
        } else if t1.is_some_and(|t| now >= t) {
            if self.state != DhcpState::Renewing {
                self.state = DhcpState::Renewing;
                self.xid = self.rng.random();
                self.exchange_start = now;
            }
            self.send_request(now);
            self.timer = t2.map(|t| next_retry(now, t));
        } else {
            self.timer = t1;
        }
    }

    /// Handles the UDP payload of a packet sent to port 68.
    pub(crate) fn handle_reply(&mut self, now: Instant, payload: &[u8]) {
        // Check op, htype, hlen, xid and chaddr on the raw bytes before decoding:
        // dhcproto's `Message::chaddr` panics on a decoded `hlen` above 16, which a peer can
        // send, so this code never calls it.
        let header_ok = payload.len() >= FIXED_HEADER_LEN
            && payload[0] == 2
            && payload[1] == 1
            && payload[2] == 6
            && payload[4..8] == self.xid.to_be_bytes()
            && payload[28..34] == self.mac.0;
        if !header_ok {
            self.ignored += 1;
            return;
        }
        let Ok(msg) = Message::from_bytes(payload) else {
            self.ignored += 1;
            return;
        };
        if msg.opcode() != Opcode::BootReply || msg.xid() != self.xid {
            self.ignored += 1;
            return;
        }
        match (msg.opts().msg_type(), self.state) {
            (Some(MessageType::Offer), DhcpState::Selecting) => self.on_offer(now, &msg),
            (
                Some(MessageType::Ack),
                DhcpState::Requesting | DhcpState::Renewing | DhcpState::Rebinding,
            ) => self.on_ack(now, &msg),
            (
                Some(MessageType::Nak),
                DhcpState::Requesting | DhcpState::Renewing | DhcpState::Rebinding,
            ) => {
                if self.state == DhcpState::Requesting
                    && server_id(&msg).is_some_and(|s| Some(s) != self.offer.map(|o| o.server))
                {
                    self.ignored += 1;
                    return;
                }
                self.restart(now);
            }
            _ => self.ignored += 1,
        }
    }

    fn on_offer(&mut self, now: Instant, msg: &Message) {
        let addr = msg.yiaddr();
        let Some(server) = server_id(msg) else {
            self.ignored += 1;
            return;
        };
        if addr.is_unspecified() || addr.is_broadcast() || addr.is_multicast() {
            self.ignored += 1;
            return;
        }
        self.offer = Some(Offer { addr, server });
        self.state = DhcpState::Requesting;
        self.attempt = 0;
        self.send_request(now);
        self.timer = Some(now + self.retransmit_delay());
    }

    fn on_ack(&mut self, now: Instant, msg: &Message) {
        let addr = msg.yiaddr();
        if addr.is_unspecified() || addr.is_broadcast() || addr.is_multicast() {
            self.ignored += 1;
            return;
        }
        let server = server_id(msg)
            .or(self.offer.map(|o| o.server))
            .or(self.lease.as_ref().map(|l| l.server))
            .unwrap_or(Ipv4Addr::UNSPECIFIED);
        let opts = msg.opts();
        let prefix = match opts.get(OptionCode::SubnetMask) {
            Some(DhcpOption::SubnetMask(mask)) => mask_to_prefix(*mask).unwrap_or(24),
            _ => 24,
        };
        let router = match opts.get(OptionCode::Router) {
            Some(DhcpOption::Router(list)) => list.first().copied(),
            _ => None,
        };
        let dns = match opts.get(OptionCode::DomainNameServer) {
            Some(DhcpOption::DomainNameServer(list)) => list.clone(),
            _ => Vec::new(),
        };
        let mtu = match opts.get(OptionCode::InterfaceMtu) {
            Some(DhcpOption::InterfaceMtu(m)) => Some(*m),
            _ => None,
        };
        let secs = |code, default: Option<Duration>| match opts.get(code) {
            Some(
                DhcpOption::AddressLeaseTime(s) | DhcpOption::Renewal(s) | DhcpOption::Rebinding(s),
            ) if *s != INFINITE_LEASE => Some(Duration::from_secs(u64::from(*s))),
            Some(_) => None,
            None => default,
        };
        let lease_len = secs(OptionCode::AddressLeaseTime, Some(DEFAULT_LEASE));
        let (t1, t2, expires) = match lease_len {
            Some(len) => {
                // RFC 2131 section 4.4.5: T1 defaults to 0.5 * lease, T2 to 0.875 * lease.
                let t2 = secs(OptionCode::Rebinding, Some(len * 7 / 8))
                    .unwrap_or(len * 7 / 8)
                    .min(len);
                let t1 = secs(OptionCode::Renewal, Some(len / 2))
                    .unwrap_or(len / 2)
                    .min(t2);
                (Some(now + t1), Some(now + t2), Some(now + len))
            }
            None => (None, None, None),
        };
        let lease = Lease {
            addr,
            prefix,
            router,
            dns: dns.clone(),
            server,
            lease: lease_len,
            mtu,
            acquired: now,
            t1,
            t2,
            expires,
        };
        let previous = self.lease.replace(lease);
        match previous {
            Some(old) if old.addr == addr && old.prefix == prefix && old.router == router => {
                self.events.push_back(Event::AddressRenewed {
                    addr,
                    lease: lease_len,
                });
            }
            other => {
                if let Some(old) = other {
                    self.events.push_back(Event::AddressLost { addr: old.addr });
                }
                self.events.push_back(Event::AddressAcquired {
                    addr,
                    prefix,
                    router,
                    dns,
                    lease: lease_len,
                });
            }
        }
        self.state = DhcpState::Bound;
        self.offer = None;
        self.attempt = 0;
        self.timer = t1;
    }
}

/// Half the time left until `deadline`, at least 60 s, never past `deadline`.
fn next_retry(now: Instant, deadline: Instant) -> Instant {
    let left = deadline.saturating_duration_since(now);
    (now + (left / 2).max(MIN_RENEW_WAIT)).min(deadline)
}

fn server_id(msg: &Message) -> Option<Ipv4Addr> {
    match msg.opts().get(OptionCode::ServerIdentifier) {
        Some(DhcpOption::ServerIdentifier(s)) => Some(*s),
        _ => None,
    }
}

/// Prefix length of a contiguous netmask.
pub(crate) fn mask_to_prefix(mask: Ipv4Addr) -> Option<u8> {
    let bits = u32::from(mask);
    let ones = bits.leading_ones();
    (bits.checked_shl(ones).unwrap_or(0) == 0).then_some(ones as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_convert_to_prefixes() {
        assert_eq!(mask_to_prefix(Ipv4Addr::new(255, 255, 255, 0)), Some(24));
        assert_eq!(mask_to_prefix(Ipv4Addr::new(255, 255, 255, 255)), Some(32));
        assert_eq!(mask_to_prefix(Ipv4Addr::new(0, 0, 0, 0)), Some(0));
        assert_eq!(mask_to_prefix(Ipv4Addr::new(255, 0, 255, 0)), None);
    }

    #[test]
    fn renew_waits_half_the_remaining_time_but_at_least_a_minute() {
        let now = Instant::now();
        assert_eq!(
            next_retry(now, now + Duration::from_secs(1000)),
            now + Duration::from_secs(500)
        );
        assert_eq!(
            next_retry(now, now + Duration::from_secs(100)),
            now + Duration::from_secs(60)
        );
        assert_eq!(
            next_retry(now, now + Duration::from_secs(30)),
            now + Duration::from_secs(30)
        );
    }
}
