//! The neighbour cache shared by ARP and IPv6 neighbour discovery.
//!
//! An entry is either reachable (a MAC that expires after [`NeighbourConfig::reachable`]) or
//! pending (a resolution in progress with a few queued packets). There is no STALE state: an
//! expired entry is resolved again before the next packet leaves, which costs one round trip
//! a minute and keeps the code small.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use lanparty_datapath::Mac;

/// Neighbour cache limits and timers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NeighbourConfig {
    /// How long a learned MAC stays usable (default 60 s).
    pub reachable: Duration,
    /// Time between ARP requests or neighbour solicitations for one address (default 1 s).
    pub retry_interval: Duration,
    /// Requests sent before giving up and dropping the queued packets (default 3).
    pub max_tries: u32,
    /// Packets kept per unresolved neighbour; more are dropped (default 4).
    pub max_queued: usize,
    /// Entries in the cache; new neighbours beyond it are dropped (default 1024).
    pub max_entries: usize,
}

impl Default for NeighbourConfig {
    fn default() -> Self {
        Self {
            reachable: Duration::from_secs(60),
            retry_interval: Duration::from_secs(1),
            max_tries: 3,
            max_queued: 4,
            max_entries: 1024,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Reachable {
    mac: Mac,
    expires: Instant,
}

#[derive(Debug)]
struct Pending {
    tries: u32,
    next_try: Instant,
    queue: Vec<Vec<u8>>,
}

/// What a lookup decided.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Lookup {
    /// Send to this MAC now.
    Hit(Mac),
    /// The packet waits; `solicit` says whether to send a request now.
    Queued { solicit: bool },
    /// The neighbour's queue is full.
    QueueFull,
    /// The cache is full.
    CacheFull,
}

/// What a timeout decided.
#[derive(Debug, Default)]
pub(crate) struct Expired {
    /// Addresses to solicit again.
    pub(crate) resolicit: Vec<IpAddr>,
    /// Resolutions that gave up.
    pub(crate) failed: u64,
    /// Packets dropped with them.
    pub(crate) dropped: u64,
}

/// Reachable and pending entries live in separate maps so that the timer scan touches only
/// the (few) pending ones.
#[derive(Debug)]
pub(crate) struct NeighbourCache {
    config: NeighbourConfig,
    reachable: HashMap<IpAddr, Reachable>,
    pending: HashMap<IpAddr, Pending>,
}

impl NeighbourCache {
    pub(crate) fn new(config: NeighbourConfig) -> Self {
        Self {
            config,
            reachable: HashMap::new(),
            pending: HashMap::new(),
        }
    }

    fn len(&self) -> usize {
        self.reachable.len() + self.pending.len()
    }

    /// The MAC for `ip`, if reachable now.
    pub(crate) fn get(&self, now: Instant, ip: IpAddr) -> Option<Mac> {
        self.reachable
            .get(&ip)
            .filter(|r| now < r.expires)
            .map(|r| r.mac)
    }

    /// Finds the MAC for `ip` or queues `packet` until it is known.
    pub(crate) fn lookup_or_queue(&mut self, now: Instant, ip: IpAddr, packet: &[u8]) -> Lookup {
        if let Some(mac) = self.get(now, ip) {
            return Lookup::Hit(mac);
        }
        if let Some(pending) = self.pending.get_mut(&ip) {
            if pending.queue.len() >= self.config.max_queued {
                return Lookup::QueueFull;
            }
            pending.queue.push(packet.to_vec());
            return Lookup::Queued { solicit: false };
        }
        // An expired entry turns into a pending one; a new neighbour needs room.
        let expired = self.reachable.remove(&ip).is_some();
        if !expired && !self.make_room(now) {
            return Lookup::CacheFull;
        }
        self.pending.insert(
            ip,
            Pending {
                tries: 1,
                next_try: now + self.config.retry_interval,
                queue: vec![packet.to_vec()],
            },
        );
        Lookup::Queued { solicit: true }
    }

    /// Evicts expired entries when the cache is full; false when there is still no room.
    fn make_room(&mut self, now: Instant) -> bool {
        if self.len() < self.config.max_entries {
            return true;
        }
        self.reachable.retain(|_, r| now < r.expires);
        self.len() < self.config.max_entries
    }

    /// Records that `ip` is at `mac`; returns the packets that waited for it.
    ///
    /// With `create` false only existing entries change (for gratuitous announcements).
    pub(crate) fn learn(
        &mut self,
        now: Instant,
        ip: IpAddr,
        mac: Mac,
        create: bool,
    ) -> Option<Vec<Vec<u8>>> {
        let known = self.reachable.contains_key(&ip) || self.pending.contains_key(&ip);
        if !known && (!create || !self.make_room(now)) {
            return None;
        }
        self.reachable.insert(
            ip,
            Reachable {
                mac,
                expires: now + self.config.reachable,
            },
        );
        self.pending
            .remove(&ip)
            .map(|p| p.queue)
            .filter(|q| !q.is_empty())
    }

    /// Forgets every entry.
    pub(crate) fn clear(&mut self) {
        self.reachable.clear();
        self.pending.clear();
    }

    /// The next retry deadline of a pending resolution.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.pending.values().map(|p| p.next_try).min()
    }

    /// Retries or gives up on pending resolutions whose deadline has passed.
    pub(crate) fn handle_timeout(&mut self, now: Instant) -> Expired {
        let mut out = Expired::default();
        let config = &self.config;
        self.pending.retain(|ip, p| {
            if now < p.next_try {
                true
            } else if p.tries >= config.max_tries {
                out.failed += 1;
                out.dropped += p.queue.len() as u64;
                false
            } else {
                p.tries += 1;
                p.next_try = now + config.retry_interval;
                out.resolicit.push(*ip);
                true
            }
        });
        out
    }
}
