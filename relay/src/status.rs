//! The relay's status report: what `/status` serves as JSON, what
//! [`RelayHandle::status`](crate::RelayHandle::status) returns and what `lanparty-relay status`
//! prints as a table.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// Everything the relay knows about itself at one instant.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    /// The UDP address the relay listens on.
    pub listen: String,
    /// SHA-256 fingerprint of the relay's certificate.
    pub fingerprint: String,
    /// The UDP backend in use (`io_uring` or `quinn-udp`).
    pub backend: String,
    /// QUIC connections in any state.
    pub connections: usize,
    /// Relay-wide counters.
    pub counters: RelayCounters,
    /// Every room, sorted by code.
    pub rooms: Vec<RoomReport>,
}

/// Relay-wide counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayCounters {
    /// UDP datagrams the QUIC endpoint received.
    pub udp_datagrams_received: u64,
    /// UDP datagrams sent.
    pub udp_datagrams_sent: u64,
    /// UDP datagrams no connection could use.
    pub unroutable_datagrams: u64,
    /// Packets a connection could not authenticate.
    pub rejected_datagrams: u64,
    /// Connections accepted by the QUIC endpoint.
    pub connections_accepted: u64,
    /// Connections refused by the QUIC endpoint (connection limit).
    pub connections_refused: u64,
    /// QUIC handshakes that did not finish in time.
    pub handshakes_timed_out: u64,
    /// Overlay datagrams from connections not admitted into a room.
    pub unadmitted_datagrams: u64,
    /// Outgoing DATAGRAMs dropped because a peer's send queue was full.
    pub datagrams_dropped_tx: u64,
    /// Incoming DATAGRAMs dropped because the relay fell behind.
    pub datagrams_dropped_rx: u64,
    /// Hellos admitted.
    pub admitted: u64,
    /// Hellos rejected, by reject code.
    pub rejects: BTreeMap<String, u64>,
}

/// One room.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RoomReport {
    /// The room code.
    pub code: String,
    /// The room's datagram budget.
    pub budget: u16,
    /// The largest frame the room carries.
    pub max_frame: u16,
    /// Entries in the room's MAC table (clients plus learned).
    pub mac_table: usize,
    /// MACs learned behind the gateway.
    pub learned_macs: usize,
    /// Frames flooded (broadcast, multicast, unknown unicast).
    pub floods: u64,
    /// Datagrams dropped, by reason (non-zero reasons only).
    pub drops: BTreeMap<String, u64>,
    /// The room's members, in order of admission.
    pub peers: Vec<PeerReport>,
}

/// One member of a room.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PeerReport {
    /// The peer id.
    pub peer_id: u64,
    /// `client` or `gateway`.
    pub role: String,
    /// The MAC it was admitted with.
    pub mac: String,
    /// Its display name.
    pub name: String,
    /// Its source address.
    pub source: String,
    /// Ethernet frames received from it.
    pub frames_in: u64,
    /// Overlay datagrams received from it.
    pub datagrams_in: u64,
    /// Bytes received from it.
    pub bytes_in: u64,
    /// Overlay datagrams forwarded to it.
    pub datagrams_out: u64,
    /// Bytes forwarded to it.
    pub bytes_out: u64,
    /// Datagrams from it that were dropped, by reason (non-zero reasons only).
    pub drops: BTreeMap<String, u64>,
    /// Smoothed QUIC round-trip time, milliseconds.
    pub rtt_ms: f64,
    /// QUIC packets sent to it.
    pub sent_packets: u64,
    /// QUIC packets to it that were lost.
    pub lost_packets: u64,
    /// Current path MTU (UDP payload).
    pub mtu: u16,
}

impl StatusReport {
    /// The room with `code`, if any.
    pub fn room(&self, code: &str) -> Option<&RoomReport> {
        self.rooms.iter().find(|r| r.code == code)
    }

    /// The peer with `peer_id`, in whatever room.
    pub fn peer(&self, peer_id: u64) -> Option<&PeerReport> {
        self.rooms
            .iter()
            .flat_map(|r| r.peers.iter())
            .find(|p| p.peer_id == peer_id)
    }

    /// Renders rooms and peers as a plain-text table.
    pub fn to_table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "relay {}  backend {}  connections {}  rooms {}",
            self.listen,
            self.backend,
            self.connections,
            self.rooms.len()
        );
        if self.rooms.is_empty() {
            out.push_str("no rooms\n");
            return out;
        }
        for room in &self.rooms {
            let drops: u64 = room.drops.values().sum();
            let _ = writeln!(
                out,
                "\nroom {}  budget {}  max_frame {}  macs {}  floods {}  drops {}",
                room.code, room.budget, room.max_frame, room.mac_table, room.floods, drops
            );
            let _ = writeln!(
                out,
                "  {:>5}  {:<8} {:<17} {:<16} {:<22} {:>9} {:>9} {:>12} {:>12} {:>7} {:>8} {:>6}",
                "peer",
                "role",
                "mac",
                "name",
                "source",
                "dgram_in",
                "dgram_out",
                "bytes_in",
                "bytes_out",
                "drops",
                "rtt_ms",
                "lost"
            );
            for p in &room.peers {
                let drops: u64 = p.drops.values().sum();
                let _ = writeln!(
                    out,
                    "  {:>5}  {:<8} {:<17} {:<16} {:<22} {:>9} {:>9} {:>12} {:>12} {:>7} {:>8.1} {:>6}",
                    p.peer_id,
                    p.role,
                    p.mac,
                    p.name,
                    p.source,
                    p.datagrams_in,
                    p.datagrams_out,
                    p.bytes_in,
                    p.bytes_out,
                    drops,
                    p.rtt_ms,
                    p.lost_packets
                );
            }
        }
        out
    }
}
