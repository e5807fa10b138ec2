//! What travels between the datapath thread and the control thread.
//!
//! Connections are named by [`ConnKey`], not by the driver's `ConnId`: quinn reuses a handle as
//! soon as a connection drains, so a command the control thread sent for an old connection
//! could otherwise hit a new one that got the same handle. A key is never reused.

use std::net::SocketAddr;

use bytes::Bytes;
use lanparty_datapath::io::IoCounters;
use lanparty_datapath::quic::{ConnStats, DriverCounters};
use lanparty_datapath::switch::{PeerId, PeerStats, Role, RoomStats};

/// A connection, as both threads name it. Assigned by the datapath when the handshake
/// completes; never reused while the relay runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct ConnKey(pub(crate) u64);

/// Events from the datapath thread to the control thread.
#[derive(Debug)]
pub(crate) enum Up {
    /// A handshake completed.
    Connected {
        conn: ConnKey,
        remote: SocketAddr,
        /// The connection's largest DATAGRAM now, clamped to `u16` (the admission's
        /// `conn_budget`).
        max_datagram: u16,
    },
    /// Bytes arrived on a control stream.
    ControlBytes { conn: ConnKey, bytes: Bytes },
    /// The peer finished its control stream.
    ControlFinished { conn: ConnKey },
    /// A connection is gone (closed by either side, lost, or timed out).
    Closed { conn: ConnKey, reason: String },
    /// The answer to [`Down::RequestStats`].
    Stats(Box<Snapshot>),
    /// The smallest DATAGRAM size among a room's connections changed (PMTUD results).
    PathBudget { room: String, budget: u16 },
}

/// Commands from the control thread to the datapath thread.
#[derive(Debug)]
pub(crate) enum Down {
    /// Write encoded control frames to a connection's control stream.
    WriteControl { conn: ConnKey, bytes: Vec<u8> },
    /// Put an admitted peer into its room's switch.
    Admit {
        conn: ConnKey,
        peer: PeerId,
        room: String,
        role: Role,
        max_frame: u16,
    },
    /// Take a peer out of its room's switch (the connection stays open).
    Remove { peer: PeerId },
    /// Close a connection. With `linger`, the close waits a few round trips so that control
    /// bytes written just before (a reject, a disconnect) reach the peer first.
    Close {
        conn: ConnKey,
        code: u32,
        reason: String,
        linger: bool,
    },
    /// Answer with [`Up::Stats`].
    RequestStats,
    /// Close every connection with `reason` and stop the datapath thread.
    Shutdown { reason: String },
}

/// The datapath's counters at one instant.
#[derive(Debug, Clone)]
pub(crate) struct Snapshot {
    pub(crate) rooms: Vec<RoomSnapshot>,
    pub(crate) driver: DriverCounters,
    pub(crate) io: IoCounters,
    pub(crate) backend: String,
    pub(crate) connections: usize,
    /// Datagrams from connections that were not admitted into a room (yet).
    pub(crate) unadmitted_datagrams: u64,
}

/// One room's switch counters.
#[derive(Debug, Clone)]
pub(crate) struct RoomSnapshot {
    pub(crate) code: String,
    pub(crate) stats: RoomStats,
    pub(crate) mac_table_len: usize,
    pub(crate) learned_macs: usize,
    pub(crate) peers: Vec<PeerSnapshot>,
}

/// One peer's switch and QUIC counters.
#[derive(Debug, Clone)]
pub(crate) struct PeerSnapshot {
    pub(crate) peer: PeerId,
    pub(crate) stats: PeerStats,
    pub(crate) quic: Option<ConnStats>,
}
