//! The gateway's LAN-side filter: which frames captured on the party LAN cross into the room.
//!
//! The party LAN's own switch already delivers unicast between LAN hosts; sending those frames
//! to the relay too would waste the uplink and flood them to every remote player as unknown
//! unicast. So only frames a remote peer needs cross: frames to a remote client's MAC, and
//! broadcast/multicast. Frames whose source is a remote client's MAC are frames the gateway itself
//! put on the LAN (or that came back around a loop) and are dropped; so are frames to the IEEE
//! 802.1D reserved range 01:80:c2:00:00:00..=0f (STP, LACP, LLDP, pause), which bridges never
//! forward.

use std::collections::HashSet;
use std::fmt;

use crate::Mac;
use crate::wire::ethernet::Frame;

/// Why the LAN filter kept a frame on the LAN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum LanDropReason {
    /// Shorter than an Ethernet header.
    Malformed,
    /// Unicast to a MAC that is not a remote client: LAN-to-LAN traffic stays on the LAN.
    LocalUnicast,
    /// The source is a remote client's MAC: the frame came back from the LAN.
    LoopGuard,
    /// To 01:80:c2:00:00:00..=0f.
    LinkLocalControl,
}

impl LanDropReason {
    /// Number of reasons.
    pub const COUNT: usize = 4;

    /// Every reason, in declaration order.
    pub const ALL: [Self; Self::COUNT] = [
        Self::Malformed,
        Self::LocalUnicast,
        Self::LoopGuard,
        Self::LinkLocalControl,
    ];

    /// Stable snake_case label for metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::LocalUnicast => "local_unicast",
            Self::LoopGuard => "loop_guard",
            Self::LinkLocalControl => "link_local_control",
        }
    }
}

impl fmt::Display for LanDropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Drop counters of a [`LanFilter`], one per [`LanDropReason`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LanDropCounts([u64; LanDropReason::COUNT]);

impl LanDropCounts {
    /// Frames dropped for `reason`.
    pub const fn get(&self, reason: LanDropReason) -> u64 {
        self.0[reason as usize]
    }

    /// Frames dropped for any reason.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// `(reason, count)` for every reason, in declaration order.
    pub fn iter(&self) -> impl Iterator<Item = (LanDropReason, u64)> + '_ {
        LanDropReason::ALL.iter().map(|&r| (r, self.get(r)))
    }
}

/// What to do with a frame captured on the LAN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum LanVerdict {
    /// Send it to the room.
    Forward,
    /// Keep it on the LAN; counted under this reason.
    Drop(LanDropReason),
}

/// The gateway's LAN → room filter. Holds the set of remote client MACs the relay announced.
#[derive(Debug, Clone, Default)]
pub struct LanFilter {
    remotes: HashSet<Mac>,
    forwarded: u64,
    drops: LanDropCounts,
}

impl LanFilter {
    /// A filter that knows no remote client yet (only group frames cross).
    pub fn new() -> Self {
        Self::with_capacity(64)
    }

    /// A filter sized for `clients` remote clients (at most 65 536 up front).
    pub fn with_capacity(clients: usize) -> Self {
        Self {
            remotes: HashSet::with_capacity(clients.min(1 << 16)),
            ..Self::default()
        }
    }

    /// Adds a remote client MAC (a peer joined). Returns false if it was already known.
    pub fn add_remote(&mut self, mac: Mac) -> bool {
        self.remotes.insert(mac)
    }

    /// Removes a remote client MAC (a peer left). Returns false if it was not known.
    pub fn remove_remote(&mut self, mac: Mac) -> bool {
        self.remotes.remove(&mac)
    }

    /// Replaces the whole set (a welcome or a resynchronisation).
    pub fn set_remotes(&mut self, macs: impl IntoIterator<Item = Mac>) {
        self.remotes.clear();
        self.remotes.extend(macs);
    }

    /// True when `mac` is a known remote client.
    pub fn is_remote(&self, mac: Mac) -> bool {
        self.remotes.contains(&mac)
    }

    /// Number of known remote clients.
    pub fn remote_count(&self) -> usize {
        self.remotes.len()
    }

    /// Decides whether one frame captured on the LAN crosses into the room, and counts it.
    pub fn decide(&mut self, frame: &[u8]) -> LanVerdict {
        match self.classify(frame) {
            Ok(()) => {
                self.forwarded += 1;
                LanVerdict::Forward
            }
            Err(reason) => {
                self.drops.0[reason as usize] += 1;
                LanVerdict::Drop(reason)
            }
        }
    }

    fn classify(&self, frame: &[u8]) -> Result<(), LanDropReason> {
        let frame = Frame::new_checked(frame).map_err(|_| LanDropReason::Malformed)?;
        let (dst, src) = (frame.dst(), frame.src());
        if dst.is_link_local_control() {
            return Err(LanDropReason::LinkLocalControl);
        }
        if self.remotes.contains(&src) {
            return Err(LanDropReason::LoopGuard);
        }
        if dst.is_multicast() || self.remotes.contains(&dst) {
            Ok(())
        } else {
            Err(LanDropReason::LocalUnicast)
        }
    }

    /// Frames sent to the room.
    pub const fn forwarded(&self) -> u64 {
        self.forwarded
    }

    /// Frames kept on the LAN, by reason.
    pub const fn drops(&self) -> &LanDropCounts {
        &self.drops
    }
}
