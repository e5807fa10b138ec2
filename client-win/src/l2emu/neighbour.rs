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

#[derive(Debug)]
enum Entry {
    Reachable {
        mac: Mac,
        expires: Instant,
    },
    Pending {
        tries: u32,
        next_try: Instant,
        queue: Vec<Vec<u8>>,
    },
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

#[derive(Debug)]
pub(crate) struct NeighbourCache {
    config: NeighbourConfig,
    entries: HashMap<IpAddr, Entry>,
}

impl NeighbourCache {
    pub(crate) fn new(config: NeighbourConfig) -> Self {
        Self {
            config,
            entries: HashMap::new(),
        }
    }

    /// The MAC for `ip`, if reachable now.
    pub(crate) fn get(&self, now: Instant, ip: IpAddr) -> Option<Mac> {
        match self.entries.get(&ip) {
            Some(Entry::Reachable { mac, expires }) if now < *expires => Some(*mac),
            _ => None,
        }
    }

    /// Finds the MAC for `ip` or queues `packet` until it is known.
    pub(crate) fn lookup_or_queue(&mut self, now: Instant, ip: IpAddr, packet: &[u8]) -> Lookup {
        if !self.entries.contains_key(&ip) && !self.make_room(now) {
            return Lookup::CacheFull;
        }
        let entry = self.entries.entry(ip).or_insert(Entry::Pending {
            tries: 0,
            next_try: now,
            queue: Vec::new(),
        });
        match entry {
            Entry::Reachable { mac, expires } if now < *expires => Lookup::Hit(*mac),
            Entry::Reachable { .. } => {
                *entry = Entry::Pending {
                    tries: 1,
                    next_try: now + self.config.retry_interval,
                    queue: vec![packet.to_vec()],
                };
                Lookup::Queued { solicit: true }
            }
            Entry::Pending {
                tries,
                next_try,
                queue,
            } => {
                if queue.len() >= self.config.max_queued {
                    return Lookup::QueueFull;
                }
                queue.push(packet.to_vec());
                if *tries == 0 {
                    *tries = 1;
                    *next_try = now + self.config.retry_interval;
                    Lookup::Queued { solicit: true }
                } else {
                    Lookup::Queued { solicit: false }
                }
            }
        }
    }

    /// Evicts expired entries when the cache is full; false when there is still no room.
    fn make_room(&mut self, now: Instant) -> bool {
        if self.entries.len() < self.config.max_entries {
            return true;
        }
        self.entries
            .retain(|_, e| !matches!(e, Entry::Reachable { expires, .. } if now >= *expires));
        self.entries.len() < self.config.max_entries
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
        if !self.entries.contains_key(&ip) && (!create || !self.make_room(now)) {
            return None;
        }
        let new = Entry::Reachable {
            mac,
            expires: now + self.config.reachable,
        };
        match self.entries.insert(ip, new) {
            Some(Entry::Pending { queue, .. }) if !queue.is_empty() => Some(queue),
            _ => None,
        }
    }

    /// Forgets every entry.
    pub(crate) fn clear(&mut self) {
        self.entries.clear();
    }

    /// The next retry deadline of a pending resolution.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.entries
            .values()
            .filter_map(|e| match e {
                Entry::Pending {
                    tries, next_try, ..
                } if *tries > 0 => Some(*next_try),
                _ => None,
            })
            .min()
    }

    /// Retries or gives up on pending resolutions whose deadline has passed.
    pub(crate) fn handle_timeout(&mut self, now: Instant) -> Expired {
        let mut out = Expired::default();
        let config = &self.config;
        self.entries.retain(|ip, e| match e {
            Entry::Pending {
                tries,
                next_try,
                queue,
            } if *tries > 0 && now >= *next_try => {
                if *tries >= config.max_tries {
                    out.failed += 1;
                    out.dropped += queue.len() as u64;
                    false
                } else {
                    *tries += 1;
                    *next_try = now + config.retry_interval;
                    out.resolicit.push(*ip);
                    true
                }
            }
            _ => true,
        });
        out
    }
}
