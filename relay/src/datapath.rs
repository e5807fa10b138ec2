//! The datapath thread: the [`Runner`] (QUIC driver + UDP backend) and one switch [`Room`] per
//! room. It never blocks on the control thread: events go up with `try_send` (and wait in a
//! bounded local queue when the channel is full), commands come down with `try_recv`, and the
//! control thread wakes the loop through the backend's waker.
//!
//! Per datagram the loop does a slot lookup by connection index, one `Room::handle_datagram`
//! and one `send_datagram_to_many` with refcount clones of the received `Bytes`; the peer and
//! connection vectors are reused, so steady-state switching allocates nothing and logs nothing.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use lanparty_control::runtime::{DatapathSide, SendError};
use lanparty_datapath::quic::{ConnId, Event};
use lanparty_datapath::runner::Runner;
use lanparty_datapath::switch::{PeerId, Room, RoomConfig, Verdict};

use crate::bridge::{ConnKey, Down, PeerSnapshot, RoomSnapshot, Snapshot, Up};
use crate::close;

/// Most events waiting locally while the up-channel is full. Past this the connection whose
/// control bytes do not fit is closed: a peer cannot make the relay buffer without bound.
const MAX_PENDING_UP: usize = 4096;
/// How long a lingering close waits at least (control bytes leave in this turn's transmit; the
/// wait lets them be acknowledged or retransmitted once).
const MIN_LINGER: Duration = Duration::from_millis(50);
/// How long a lingering close waits at most.
const MAX_LINGER: Duration = Duration::from_millis(500);
/// How long shutdown waits after the disconnect messages before closing every connection.
const SHUTDOWN_LINGER: Duration = Duration::from_millis(150);
/// How long shutdown keeps the loop running after the closes, for them to be sent.
const SHUTDOWN_DRAIN: Duration = Duration::from_millis(300);

/// A connection whose handshake completed.
#[derive(Debug)]
struct Slot {
    key: ConnKey,
    /// The peer and its room's index in `rooms`, once admitted.
    peer: Option<(PeerId, usize)>,
}

#[derive(Debug)]
struct RoomSlot {
    code: String,
    room: Room,
    conns: HashMap<PeerId, ConnId>,
    /// The smallest DATAGRAM size among `conns`, as last reported to the control thread.
    path_budget: Option<u16>,
}

#[derive(Debug)]
struct Linger {
    at: Instant,
    conn: ConnId,
    key: ConnKey,
    code: u32,
    reason: String,
}

/// The datapath thread's state.
#[derive(Debug)]
pub(crate) struct Datapath {
    runner: Runner,
    channel: DatapathSide<Up, Down>,
    room_config: RoomConfig,
    /// Indexed by `ConnId::index()`.
    slots: Vec<Option<Slot>>,
    keys: HashMap<ConnKey, ConnId>,
    next_key: u64,
    rooms: Vec<Option<RoomSlot>>,
    room_index: HashMap<String, usize>,
    peers: HashMap<PeerId, (usize, ConnId)>,
    pending_up: VecDeque<Up>,
    lingering: Vec<Linger>,
    out_peers: Vec<PeerId>,
    out_conns: Vec<ConnId>,
    unadmitted_datagrams: u64,
    /// Set by `Shutdown`: when to close everything, then when to stop.
    shutdown: Option<(Instant, String)>,
    stop_at: Option<Instant>,
    /// When the rooms' path budgets are next compared with their connections' PMTUD results.
    next_path_check: Instant,
    /// Until when they are compared every [`PATH_SETTLE_INTERVAL`]: PMTUD climbs in the first
    /// round trips after a join, and until the room hears of it every full-size frame goes
    /// out in two fragments.
    path_settle_until: Instant,
}

/// How often rooms compare their members' DATAGRAM sizes once PMTUD has settled (it moves
/// them rarely then).
const PATH_CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// How often they are compared in the [`PATH_SETTLE_TIME`] after a join.
const PATH_SETTLE_INTERVAL: Duration = Duration::from_millis(20);
/// Long enough for quinn's PMTUD search (a handful of probes, one round trip each) on a path
/// of a few hundred milliseconds.
const PATH_SETTLE_TIME: Duration = Duration::from_secs(3);

impl Datapath {
    pub(crate) fn new(
        runner: Runner,
        channel: DatapathSide<Up, Down>,
        room_config: RoomConfig,
    ) -> Self {
        Self {
            runner,
            channel,
            room_config,
            slots: Vec::new(),
            keys: HashMap::new(),
            next_key: 1,
            rooms: Vec::new(),
            room_index: HashMap::new(),
            peers: HashMap::new(),
            pending_up: VecDeque::new(),
            lingering: Vec::new(),
            out_peers: Vec::with_capacity(64),
            out_conns: Vec::with_capacity(64),
            unadmitted_datagrams: 0,
            shutdown: None,
            stop_at: None,
            next_path_check: Instant::now(),
            path_settle_until: Instant::now(),
        }
    }

    /// Runs the loop until a shutdown has closed every connection (or the control thread
    /// went away).
    ///
    /// # Errors
    ///
    /// When the UDP backend fails as a whole.
    pub(crate) fn run(mut self) -> std::io::Result<()> {
        loop {
            let now = Instant::now();
            self.runner.receive(now);
            self.drain_events(now);
            self.handle_commands(now);
            self.handle_timers(now);
            // Commands and timers may have closed connections: report those in this turn,
            // not after the next sleep.
            self.drain_events(now);
            self.flush_up();
            self.runner.transmit(now)?;
            if self.stop_at.is_some_and(|t| t <= now)
                || (self.stop_at.is_some() && self.runner.driver_ref().connection_count() == 0)
            {
                return Ok(());
            }
            let deadline = self.next_deadline();
            self.runner.wait(deadline)?;
        }
    }

    fn drain_events(&mut self, now: Instant) {
        while let Some(event) = self.runner.driver().poll_event() {
            self.handle_event(now, event);
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let mut next = self.stop_at;
        let mut take = |t: Instant| next = Some(next.map_or(t, |n: Instant| n.min(t)));
        if let Some((t, _)) = &self.shutdown {
            take(*t);
        }
        for l in &self.lingering {
            take(l.at);
        }
        for slot in self.rooms.iter().flatten() {
            if let Some(t) = slot.room.poll_timeout() {
                take(t);
            }
        }
        if self.rooms.iter().any(Option::is_some) {
            take(self.next_path_check);
        }
        if !self.pending_up.is_empty() {
            // The control thread does not wake us when it drains the channel; retry soon.
            take(Instant::now() + Duration::from_millis(5));
        }
        next
    }

    fn up(&mut self, event: Up) {
        if !self.pending_up.is_empty() {
            self.pending_up.push_back(event);
            return;
        }
        // Otherwise sent, or the control thread is gone (shutdown follows in handle_commands).
        if let Err(SendError::Full(event)) = self.channel.try_send(event) {
            self.pending_up.push_back(event);
        }
    }

    fn flush_up(&mut self) {
        while let Some(event) = self.pending_up.pop_front() {
            match self.channel.try_send(event) {
                Ok(()) => {}
                Err(SendError::Full(event)) => {
                    self.pending_up.push_front(event);
                    break;
                }
                Err(_) => {
                    self.pending_up.clear();
                    break;
                }
            }
        }
    }

    fn handle_event(&mut self, now: Instant, event: Event) {
        match event {
            Event::Connected { conn, remote, .. } => {
                let key = ConnKey(self.next_key);
                self.next_key += 1;
                let idx = conn.index();
                if self.slots.len() <= idx {
                    self.slots.resize_with(idx + 1, || None);
                }
                self.slots[idx] = Some(Slot { key, peer: None });
                self.keys.insert(key, conn);
                let max = self.runner.driver().max_datagram_size(conn).unwrap_or(0);
                let max_datagram = u16::try_from(max).unwrap_or(u16::MAX);
                self.up(Up::Connected {
                    conn: key,
                    remote: remote_canonical(remote),
                    max_datagram,
                });
            }
            Event::ControlBytes { conn, bytes } => {
                if let Some(key) = self.key_of(conn) {
                    if self.pending_up.len() >= MAX_PENDING_UP {
                        self.close_now(now, conn, close::OVERLOADED, "relay control overloaded");
                        return;
                    }
                    self.up(Up::ControlBytes { conn: key, bytes });
                }
            }
            Event::ControlFinished { conn } => {
                if let Some(key) = self.key_of(conn) {
                    self.up(Up::ControlFinished { conn: key });
                }
            }
            Event::Datagram { conn, bytes } => {
                let peer = self
                    .slots
                    .get(conn.index())
                    .and_then(Option::as_ref)
                    .and_then(|s| s.peer);
                let Some((peer, room_idx)) = peer else {
                    self.unadmitted_datagrams += 1;
                    return;
                };
                let Some(slot) = self.rooms.get_mut(room_idx).and_then(Option::as_mut) else {
                    self.unadmitted_datagrams += 1;
                    return;
                };
                if slot
                    .room
                    .handle_datagram(now, peer, &bytes, &mut self.out_peers)
                    == Verdict::Forward
                {
                    self.out_conns.clear();
                    self.out_conns.extend(
                        self.out_peers
                            .iter()
                            .filter_map(|p| slot.conns.get(p).copied()),
                    );
                    self.runner
                        .send_datagram_to_many(now, &self.out_conns, bytes);
                }
            }
            Event::Closed { conn, reason, .. } => {
                self.lingering.retain(|l| l.conn != conn);
                let Some(slot) = self.slots.get_mut(conn.index()).and_then(Option::take) else {
                    return;
                };
                self.keys.remove(&slot.key);
                if let Some((peer, _)) = slot.peer {
                    self.remove_peer(peer);
                }
                self.up(Up::Closed {
                    conn: slot.key,
                    reason,
                });
            }
            // Counted in the connection's stats; nothing to do per event.
            Event::DatagramsDropped { .. } => {}
            _ => {}
        }
    }

    fn key_of(&self, conn: ConnId) -> Option<ConnKey> {
        self.slots
            .get(conn.index())
            .and_then(Option::as_ref)
            .map(|s| s.key)
    }

    fn handle_commands(&mut self, now: Instant) {
        loop {
            match self.channel.try_recv() {
                Ok(Some(cmd)) => self.handle_command(now, cmd),
                Ok(None) => break,
                Err(()) => {
                    if self.shutdown.is_none() && self.stop_at.is_none() {
                        self.shutdown = Some((now, "relay stopping".to_owned()));
                    }
                    break;
                }
            }
        }
    }

    fn handle_command(&mut self, now: Instant, cmd: Down) {
        match cmd {
            Down::WriteControl { conn, bytes } => {
                let Some(&id) = self.keys.get(&conn) else {
                    return;
                };
                if let Err(e) = self.runner.driver().write_control(id, &bytes) {
                    let reason = format!("control stream: {e}");
                    self.close_now(now, id, close::OVERLOADED, &reason);
                }
            }
            Down::Admit {
                conn,
                peer,
                room,
                role,
                max_frame,
            } => self.admit(now, conn, peer, room, role, max_frame),
            Down::Remove { peer } => self.remove_peer(peer),
            Down::Close {
                conn,
                code,
                reason,
                linger,
            } => {
                let Some(&id) = self.keys.get(&conn) else {
                    return;
                };
                if linger {
                    let rtt = self
                        .runner
                        .driver_ref()
                        .stats(id)
                        .map_or(Duration::ZERO, |s| s.rtt);
                    let wait = (rtt * 3).clamp(MIN_LINGER, MAX_LINGER);
                    self.lingering.push(Linger {
                        at: now + wait,
                        conn: id,
                        key: conn,
                        code,
                        reason,
                    });
                } else {
                    self.close_now(now, id, code, &reason);
                }
            }
            Down::RequestStats => {
                let snapshot = self.snapshot();
                self.up(Up::Stats(Box::new(snapshot)));
            }
            Down::Shutdown { reason } => {
                if self.shutdown.is_none() && self.stop_at.is_none() {
                    self.shutdown = Some((now + SHUTDOWN_LINGER, reason));
                }
            }
        }
    }

    fn admit(
        &mut self,
        now: Instant,
        conn: ConnKey,
        peer: PeerId,
        code: String,
        role: lanparty_datapath::switch::Role,
        max_frame: u16,
    ) {
        let Some(&id) = self.keys.get(&conn) else {
            return;
        };
        let idx = match self.room_index.get(&code) {
            Some(&idx) => idx,
            None => {
                let config = RoomConfig {
                    max_frame_len: usize::from(max_frame),
                    ..self.room_config.clone()
                };
                let slot = RoomSlot {
                    code: code.clone(),
                    room: Room::new(config),
                    conns: HashMap::new(),
                    path_budget: None,
                };
                let idx = match self.rooms.iter().position(Option::is_none) {
                    Some(free) => {
                        self.rooms[free] = Some(slot);
                        free
                    }
                    None => {
                        self.rooms.push(Some(slot));
                        self.rooms.len() - 1
                    }
                };
                self.room_index.insert(code, idx);
                idx
            }
        };
        let Some(slot) = self.rooms[idx].as_mut() else {
            return;
        };
        if let Err(e) = slot.room.add_peer(peer, role) {
            // Admission checks the same rules first, so this means the two views disagree.
            tracing::warn!(%peer, error = %e, "switch refused an admitted peer");
            let reason = format!("switch refused the peer: {e}");
            self.drop_room_if_empty(idx);
            self.close_now(now, id, close::INTERNAL, &reason);
            return;
        }
        slot.conns.insert(peer, id);
        self.peers.insert(peer, (idx, id));
        // A newcomer's path may be smaller than what the room was told: compare at once, then
        // often while its PMTUD climbs.
        self.next_path_check = now;
        self.path_settle_until = now + PATH_SETTLE_TIME;
        if let Some(s) = self.slots.get_mut(id.index()).and_then(Option::as_mut) {
            s.peer = Some((peer, idx));
        }
    }

    /// Reports each room whose smallest member DATAGRAM size changed: the control thread
    /// turns it into a `room_budget` message, so frames grow with PMTUD (fewer fragments,
    /// larger TCP segments) while every member can still receive them.
    fn check_path_budgets(&mut self) {
        let driver = self.runner.driver();
        let mut changed = Vec::new();
        for slot in self.rooms.iter_mut().flatten() {
            let smallest = slot
                .conns
                .values()
                .filter_map(|&c| driver.max_datagram_size(c))
                .min()
                .map(|s| u16::try_from(s).unwrap_or(u16::MAX));
            if smallest.is_some() && smallest != slot.path_budget {
                slot.path_budget = smallest;
                changed.extend(smallest.map(|budget| Up::PathBudget {
                    room: slot.code.clone(),
                    budget,
                }));
            }
        }
        for up in changed {
            self.up(up);
        }
    }

    fn remove_peer(&mut self, peer: PeerId) {
        let Some((idx, conn)) = self.peers.remove(&peer) else {
            return;
        };
        if let Some(s) = self.slots.get_mut(conn.index()).and_then(Option::as_mut)
            && s.peer.is_some_and(|(p, _)| p == peer)
        {
            s.peer = None;
        }
        if let Some(slot) = self.rooms.get_mut(idx).and_then(Option::as_mut) {
            slot.room.remove_peer(peer);
            slot.conns.remove(&peer);
        }
        self.drop_room_if_empty(idx);
    }

    fn drop_room_if_empty(&mut self, idx: usize) {
        if let Some(slot) = self.rooms.get(idx).and_then(Option::as_ref)
            && slot.room.peer_count() == 0
        {
            self.room_index.remove(&slot.code);
            self.rooms[idx] = None;
        }
    }

    fn close_now(&mut self, now: Instant, conn: ConnId, code: u32, reason: &str) {
        self.runner.driver().close(now, conn, code, reason);
    }

    fn handle_timers(&mut self, now: Instant) {
        for slot in self.rooms.iter_mut().flatten() {
            if slot.room.poll_timeout().is_some_and(|t| t <= now) {
                slot.room.handle_timeout(now);
            }
        }
        if self.next_path_check <= now {
            let interval = if now < self.path_settle_until {
                PATH_SETTLE_INTERVAL
            } else {
                PATH_CHECK_INTERVAL
            };
            self.next_path_check = now + interval;
            self.check_path_budgets();
        }
        if self.lingering.iter().any(|l| l.at <= now) {
            let due: Vec<Linger> = {
                let (due, keep) = std::mem::take(&mut self.lingering)
                    .into_iter()
                    .partition(|l| l.at <= now);
                self.lingering = keep;
                due
            };
            for l in due {
                if self.keys.get(&l.key) == Some(&l.conn) {
                    self.close_now(now, l.conn, l.code, &l.reason);
                }
            }
        }
        if let Some((at, _)) = &self.shutdown
            && *at <= now
        {
            let Some((_, reason)) = self.shutdown.take() else {
                return;
            };
            let conns: Vec<ConnId> = self.keys.values().copied().collect();
            for conn in conns {
                self.close_now(now, conn, close::SHUTDOWN, &reason);
            }
            self.lingering.clear();
            self.stop_at = Some(now + SHUTDOWN_DRAIN);
        }
    }

    fn snapshot(&mut self) -> Snapshot {
        let driver = self.runner.driver_ref();
        let rooms = self
            .rooms
            .iter()
            .flatten()
            .map(|slot| RoomSnapshot {
                code: slot.code.clone(),
                stats: *slot.room.stats(),
                mac_table_len: slot.room.mac_table_len(),
                learned_macs: slot.room.learned_macs(),
                peers: slot
                    .room
                    .peers()
                    .map(|(peer, _)| PeerSnapshot {
                        peer,
                        stats: slot.room.peer_stats(peer).copied().unwrap_or_default(),
                        quic: slot.conns.get(&peer).and_then(|&c| driver.stats(c)),
                    })
                    .collect(),
            })
            .collect();
        Snapshot {
            rooms,
            driver: driver.counters(),
            io: self.runner.io_counters(),
            backend: self.runner.backend_kind().to_string(),
            connections: driver.connection_count(),
            unadmitted_datagrams: self.unadmitted_datagrams,
        }
    }
}

/// An IPv4 peer on a dual-stack socket shows up as `::ffff:a.b.c.d`; admission limits and the
/// status should see the IPv4 address.
fn remote_canonical(addr: std::net::SocketAddr) -> std::net::SocketAddr {
    std::net::SocketAddr::new(addr.ip().to_canonical(), addr.port())
}
