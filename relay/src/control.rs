//! The control thread: decodes control streams, runs admission ([`Rooms`]), the hello timer,
//! periodic stats to peers, signals, status requests and the metrics HTTP server.
//!
//! It owns every piece of control state; the datapath thread only learns what the switch
//! needs (admit, remove) and what to write or close. Nothing here is shared through a lock:
//! status and metrics come from a [`Snapshot`] the datapath sends up on request.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use lanparty_control::admission::{self, Rooms};
use lanparty_control::codec::{self, Decoder};
use lanparty_control::msg::{
    self, Disconnect, Message, PeerId, Reject, RejectCode, RoomBudget, RoomCode,
};
use lanparty_control::runtime::ControlSide;
use lanparty_datapath::switch;
use tokio::sync::{mpsc, oneshot};

use crate::bridge::{ConnKey, Down, Snapshot, Up};
use crate::close;
use crate::metrics;
use crate::status::{PeerReport, RelayCounters, RoomReport, StatusReport};

/// Requests from outside the control loop: the embedding program and the HTTP server.
#[derive(Debug)]
pub(crate) enum Request {
    Status(oneshot::Sender<StatusReport>),
    Metrics(oneshot::Sender<String>),
    Shutdown(String),
}

/// What the control thread needs to know.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) admission: admission::Config,
    pub(crate) hello_timeout: Duration,
    pub(crate) stats_interval: Duration,
    pub(crate) handle_signals: bool,
    pub(crate) listen: String,
    pub(crate) fingerprint: String,
}

#[derive(Debug)]
enum State {
    /// Waiting for the hello until the deadline.
    AwaitHello { deadline: Instant },
    /// Refused at accept (too many connections); the reject goes out when the peer speaks.
    Doomed { reject: Reject, deadline: Instant },
    /// Admitted.
    Joined { peer: PeerId },
    /// Being closed; only its `Closed` event is awaited.
    Closing,
}

#[derive(Debug)]
struct Conn {
    remote: SocketAddr,
    budget: u16,
    decoder: Decoder,
    state: State,
    /// Counted by `Rooms::on_connection` (so `on_connection_closed` is due).
    counted: bool,
}

enum Waiter {
    Status(oneshot::Sender<StatusReport>),
    Metrics(oneshot::Sender<String>),
}

struct Control {
    side: ControlSide<Up, Down>,
    settings: Settings,
    rooms: Rooms,
    conns: HashMap<ConnKey, Conn>,
    peers: HashMap<PeerId, ConnKey>,
    deadlines: BTreeSet<(Instant, ConnKey)>,
    waiters: Vec<Waiter>,
    /// A stats request is out; its answer goes to waiters and (when set) to every peer.
    stats_requested: bool,
    broadcast_stats: bool,
    admitted: u64,
    rejects: BTreeMap<&'static str, u64>,
    shutting_down: bool,
    /// Per room: the budget last announced with `room_budget`, when above the welcome's.
    announced: HashMap<RoomCode, u16>,
}

/// What woke the loop.
enum Wake {
    Up(Option<Up>),
    Request(Option<Request>),
    HelloTimer,
    StatsTick,
    Signal(&'static str),
}

/// Runs the control loop until the datapath thread has stopped.
pub(crate) async fn run(
    side: ControlSide<Up, Down>,
    mut requests: mpsc::Receiver<Request>,
    request_tx: mpsc::Sender<Request>,
    settings: Settings,
    metrics_listener: Option<std::net::TcpListener>,
) {
    if let Some(listener) = metrics_listener {
        match tokio::net::TcpListener::from_std(listener) {
            Ok(listener) => {
                tokio::spawn(metrics::serve(listener, request_tx.clone()));
            }
            Err(e) => tracing::error!(error = %e, "cannot serve metrics"),
        }
    }
    drop(request_tx);
    let mut signals = Signals::new(settings.handle_signals);
    let mut stats_tick = tokio::time::interval(settings.stats_interval);
    stats_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    stats_tick.tick().await;
    let mut control = Control {
        side,
        rooms: Rooms::new(settings.admission.clone()),
        settings,
        conns: HashMap::new(),
        peers: HashMap::new(),
        deadlines: BTreeSet::new(),
        waiters: Vec::new(),
        stats_requested: false,
        broadcast_stats: false,
        admitted: 0,
        rejects: BTreeMap::new(),
        announced: HashMap::new(),
        shutting_down: false,
    };
    let mut requests_open = true;
    loop {
        let next_hello = control.deadlines.first().map(|(t, _)| *t);
        let wake = tokio::select! {
            up = control.side.recv() => Wake::Up(up),
            req = requests.recv(), if requests_open => Wake::Request(req),
            () = sleep_until(next_hello) => Wake::HelloTimer,
            _ = stats_tick.tick() => Wake::StatsTick,
            name = signals.next() => Wake::Signal(name),
        };
        match wake {
            Wake::Up(None) => break,
            Wake::Up(Some(up)) => control.on_up(up).await,
            Wake::Request(None) => requests_open = false,
            Wake::Request(Some(req)) => control.on_request(req).await,
            Wake::HelloTimer => control.on_hello_timers().await,
            Wake::StatsTick => {
                if !control.peers.is_empty() {
                    control.broadcast_stats = true;
                    control.request_stats().await;
                }
            }
            Wake::Signal(name) => {
                tracing::info!(signal = name, "shutting down");
                control.shutdown("relay shutting down").await;
            }
        }
    }
    // The datapath is gone: anyone still waiting gets nothing.
    control.waiters.clear();
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// SIGINT and SIGTERM, when the relay owns the process.
struct Signals {
    #[cfg(unix)]
    inner: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl Signals {
    fn new(enabled: bool) -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let inner = if enabled {
                match (
                    signal(SignalKind::interrupt()),
                    signal(SignalKind::terminate()),
                ) {
                    (Ok(int), Ok(term)) => Some((int, term)),
                    (Err(e), _) | (_, Err(e)) => {
                        tracing::warn!(error = %e, "cannot install signal handlers");
                        None
                    }
                }
            } else {
                None
            };
            Self { inner }
        }
        #[cfg(not(unix))]
        {
            let _ = enabled;
            Self {}
        }
    }

    async fn next(&mut self) -> &'static str {
        #[cfg(unix)]
        if let Some((int, term)) = &mut self.inner {
            return tokio::select! {
                _ = int.recv() => "SIGINT",
                _ = term.recv() => "SIGTERM",
            };
        }
        std::future::pending().await
    }
}

impl Control {
    async fn send(&self, cmd: Down) {
        // Fails only when the datapath has stopped, and then the loop ends on its own.
        let _ = self.side.send(cmd).await;
    }

    async fn write(&self, conn: ConnKey, msg: &Message) {
        match codec::encode(msg) {
            Ok(bytes) => self.send(Down::WriteControl { conn, bytes }).await,
            Err(e) => tracing::error!(error = %e, "cannot encode a control message"),
        }
    }

    async fn close(&mut self, conn: ConnKey, code: u32, reason: String, linger: bool) {
        if let Some(c) = self.conns.get_mut(&conn) {
            if let State::AwaitHello { deadline } | State::Doomed { deadline, .. } = c.state {
                self.deadlines.remove(&(deadline, conn));
            }
            c.state = State::Closing;
        }
        self.send(Down::Close {
            conn,
            code,
            reason,
            linger,
        })
        .await;
    }

    async fn reject(&mut self, conn: ConnKey, reject: Reject) {
        *self.rejects.entry(reject.code.as_str()).or_insert(0) += 1;
        if let Some(c) = self.conns.get(&conn) {
            // Connections over the per-address limit are what a flood looks like: keep them
            // out of the default log.
            if reject.code == RejectCode::TooManyConnections {
                tracing::debug!(remote = %c.remote, reason = %reject.reason, "connection refused");
            } else {
                tracing::info!(
                    remote = %c.remote,
                    code = %reject.code,
                    reason = %reject.reason,
                    "hello rejected"
                );
            }
        }
        let reason = reject.to_string();
        self.write(conn, &Message::Reject(reject)).await;
        self.close(conn, close::REJECTED, reason, true).await;
    }

    async fn on_up(&mut self, up: Up) {
        match up {
            Up::Connected {
                conn,
                remote,
                max_datagram,
            } => self.on_connected(conn, remote, max_datagram).await,
            Up::ControlBytes { conn, bytes } => self.on_control_bytes(conn, &bytes).await,
            Up::ControlFinished { conn } => {
                if let Some(State::Joined { peer }) = self.conns.get(&conn).map(|c| &c.state) {
                    let peer = *peer;
                    self.leave(peer).await;
                }
                if self.conns.contains_key(&conn) {
                    self.close(
                        conn,
                        close::LEFT,
                        "control stream finished".to_owned(),
                        false,
                    )
                    .await;
                }
            }
            Up::Closed { conn, reason } => self.on_closed(conn, &reason).await,
            Up::Stats(snapshot) => self.on_stats(*snapshot).await,
            Up::PathBudget { room, budget } => self.on_path_budget(&room, budget).await,
        }
    }

    /// Tells every member of `room` the DATAGRAM size all their paths carry now, when that
    /// differs from what they were last told (never less than the welcome's fixed budget).
    async fn on_path_budget(&mut self, room: &str, path: u16) {
        let Ok(code) = RoomCode::new(room) else {
            return;
        };
        let Some(status) = self.rooms.room(&code) else {
            self.announced.remove(&code);
            return;
        };
        let budget = path.max(status.budget);
        let told = self.announced.get(&code).copied().unwrap_or(status.budget);
        if budget == told {
            return;
        }
        if budget == status.budget {
            self.announced.remove(&code);
        } else {
            self.announced.insert(code.clone(), budget);
        }
        tracing::debug!(room = %code, budget, "room budget follows the members' paths");
        let msg = Message::RoomBudget(RoomBudget { budget });
        let conns: Vec<ConnKey> = self
            .rooms
            .members(&code)
            .filter_map(|p| self.peers.get(&p).copied())
            .collect();
        for conn in conns {
            self.write(conn, &msg).await;
        }
    }

    async fn on_connected(&mut self, conn: ConnKey, remote: SocketAddr, max_datagram: u16) {
        let deadline = Instant::now() + self.settings.hello_timeout;
        let (state, counted) = if self.shutting_down {
            let reject = Reject::new(RejectCode::TooManyConnections, "relay shutting down");
            (State::Doomed { reject, deadline }, false)
        } else {
            match self.rooms.on_connection(remote.ip()) {
                Ok(()) => (State::AwaitHello { deadline }, true),
                Err(reject) => (State::Doomed { reject, deadline }, false),
            }
        };
        tracing::debug!(%remote, max_datagram, "connection up");
        self.deadlines.insert((deadline, conn));
        self.conns.insert(
            conn,
            Conn {
                remote,
                budget: max_datagram,
                decoder: Decoder::new(),
                state,
                counted,
            },
        );
    }

    async fn on_control_bytes(&mut self, conn: ConnKey, mut bytes: &[u8]) {
        loop {
            let Some(c) = self.conns.get_mut(&conn) else {
                return;
            };
            if let State::Doomed { reject, .. } = &c.state {
                let reject = reject.clone();
                self.reject(conn, reject).await;
                return;
            }
            if matches!(c.state, State::Closing) {
                return;
            }
            let took = c.decoder.push(bytes);
            bytes = &bytes[took..];
            let mut progressed = false;
            loop {
                let Some(c) = self.conns.get_mut(&conn) else {
                    return;
                };
                if matches!(c.state, State::Closing) {
                    return;
                }
                match c.decoder.poll() {
                    Ok(Some(msg)) => {
                        progressed = true;
                        self.on_message(conn, msg).await;
                    }
                    Ok(None) => break,
                    Err(e) => {
                        self.on_decode_error(conn, &e).await;
                        return;
                    }
                }
            }
            if bytes.is_empty() || (took == 0 && !progressed) {
                return;
            }
        }
    }

    async fn on_decode_error(&mut self, conn: ConnKey, e: &codec::DecodeError) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        match c.state {
            State::AwaitHello { .. } => self.reject(conn, e.to_reject()).await,
            State::Joined { peer } => {
                tracing::info!(%peer, error = %e, "bad control frame; closing");
                let reason = format!("bad control frame: {e}");
                self.write(
                    conn,
                    &Message::Disconnect(Disconnect {
                        reason: truncate(&reason),
                    }),
                )
                .await;
                self.leave(peer).await;
                self.close(conn, close::PROTOCOL, reason, true).await;
            }
            State::Doomed { .. } | State::Closing => {}
        }
    }

    async fn on_message(&mut self, conn: ConnKey, msg: Message) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        match (&c.state, msg) {
            (State::AwaitHello { .. }, Message::Hello(hello)) => {
                self.on_hello(conn, &hello).await;
            }
            (State::AwaitHello { .. }, other) => {
                let reject = Reject::new(
                    RejectCode::BadHello,
                    format!("expected a hello first, got {}", other.type_name()),
                );
                self.reject(conn, reject).await;
            }
            (State::Joined { peer }, Message::Disconnect(d)) => {
                let peer = *peer;
                tracing::info!(%peer, reason = %d.reason, "peer disconnected");
                self.leave(peer).await;
                self.close(conn, close::LEFT, "peer disconnected".to_owned(), false)
                    .await;
            }
            // A peer's own counters: informational only.
            (State::Joined { .. }, Message::Stats(_)) => {}
            (State::Joined { peer }, other) => {
                let peer = *peer;
                let reason = format!("unexpected {} message", other.type_name());
                self.write(
                    conn,
                    &Message::Disconnect(Disconnect {
                        reason: reason.clone(),
                    }),
                )
                .await;
                self.leave(peer).await;
                self.close(conn, close::PROTOCOL, reason, true).await;
            }
            (State::Doomed { .. } | State::Closing, _) => {}
        }
    }

    async fn on_hello(&mut self, conn: ConnKey, hello: &msg::Hello) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        let (remote, budget) = (c.remote, c.budget);
        let admitted = match self.rooms.admit(Instant::now(), remote.ip(), hello, budget) {
            Ok(admitted) => admitted,
            Err(reject) => {
                self.reject(conn, reject).await;
                return;
            }
        };
        self.admitted += 1;
        if let Some(c) = self.conns.get_mut(&conn)
            && let State::AwaitHello { deadline } = c.state
        {
            self.deadlines.remove(&(deadline, conn));
            c.state = State::Joined {
                peer: admitted.peer_id,
            };
        }
        if let Some(old) = admitted.replaced
            && let Some(old_conn) = self.peers.remove(&old)
        {
            tracing::info!(peer = %old, "replaced by a reconnect");
            self.send(Down::Remove {
                peer: switch::PeerId(old.0),
            })
            .await;
            self.write(
                old_conn,
                &Message::Disconnect(Disconnect {
                    reason: "replaced by a new connection from the same peer".to_owned(),
                }),
            )
            .await;
            self.close(
                old_conn,
                close::REPLACED,
                "replaced by a new connection".to_owned(),
                true,
            )
            .await;
        }
        let role = match hello.role {
            msg::Role::Client => switch::Role::Client { mac: hello.mac },
            msg::Role::Gateway => switch::Role::Gateway,
        };
        // The switch learns the peer before the welcome leaves, so its first frame is admitted.
        self.send(Down::Admit {
            conn,
            peer: switch::PeerId(admitted.peer_id.0),
            room: admitted.room.as_str().to_owned(),
            role,
            max_frame: admitted.welcome.max_frame,
        })
        .await;
        self.peers.insert(admitted.peer_id, conn);
        tracing::info!(
            peer = %admitted.peer_id,
            room = %admitted.room,
            role = %hello.role,
            mac = %hello.mac,
            name = %hello.name.as_str(),
            remote = %remote,
            budget = admitted.welcome.room_budget,
            "peer admitted"
        );
        self.write(conn, &Message::Welcome(admitted.welcome)).await;
        if let Some(&budget) = self.announced.get(&admitted.room) {
            self.write(conn, &Message::RoomBudget(RoomBudget { budget }))
                .await;
        }
        self.deliver(admitted.notices).await;
    }

    async fn deliver(&self, notices: Vec<admission::Notice>) {
        for notice in notices {
            if let Some(&conn) = self.peers.get(&notice.to) {
                self.write(conn, &notice.message).await;
            }
        }
    }

    /// Takes `peer` out of its room and tells the others.
    async fn leave(&mut self, peer: PeerId) {
        if self.peers.remove(&peer).is_none() {
            return;
        }
        let room = self.rooms.room_of(peer).cloned();
        let notices = self.rooms.leave(peer);
        // A room that emptied forgets its announced budget; one created later under the same
        // code starts from its own welcome.
        if let Some(code) = room
            && self.rooms.room(&code).is_none()
        {
            self.announced.remove(&code);
        }
        self.send(Down::Remove {
            peer: switch::PeerId(peer.0),
        })
        .await;
        tracing::info!(%peer, "peer left");
        self.deliver(notices).await;
    }

    async fn on_closed(&mut self, conn: ConnKey, reason: &str) {
        let Some(c) = self.conns.remove(&conn) else {
            return;
        };
        match c.state {
            State::AwaitHello { deadline } | State::Doomed { deadline, .. } => {
                self.deadlines.remove(&(deadline, conn));
            }
            State::Joined { peer } => {
                tracing::info!(%peer, %reason, "connection closed");
                self.leave(peer).await;
            }
            State::Closing => {}
        }
        if c.counted {
            self.rooms.on_connection_closed(c.remote.ip());
        }
    }

    async fn on_hello_timers(&mut self) {
        let now = Instant::now();
        while let Some(&(at, conn)) = self.deadlines.first() {
            if at > now {
                break;
            }
            self.deadlines.remove(&(at, conn));
            let Some(c) = self.conns.get(&conn) else {
                continue;
            };
            let reject = match &c.state {
                State::AwaitHello { .. } => Reject::new(
                    RejectCode::HandshakeTimeout,
                    format!(
                        "no hello within {} s",
                        self.settings.hello_timeout.as_secs_f32()
                    ),
                ),
                State::Doomed { reject, .. } => reject.clone(),
                _ => continue,
            };
            // The peer never opened its control stream, so the reject can only travel as the
            // close reason.
            *self.rejects.entry(reject.code.as_str()).or_insert(0) += 1;
            self.close(conn, close::REJECTED, reject.to_string(), false)
                .await;
        }
    }

    async fn on_request(&mut self, req: Request) {
        match req {
            Request::Status(tx) => {
                self.waiters.push(Waiter::Status(tx));
                self.request_stats().await;
            }
            Request::Metrics(tx) => {
                self.waiters.push(Waiter::Metrics(tx));
                self.request_stats().await;
            }
            Request::Shutdown(reason) => self.shutdown(&reason).await,
        }
    }

    async fn request_stats(&mut self) {
        if !self.stats_requested {
            self.stats_requested = true;
            self.send(Down::RequestStats).await;
        }
    }

    async fn shutdown(&mut self, reason: &str) {
        if self.shutting_down {
            return;
        }
        self.shutting_down = true;
        let joined: Vec<ConnKey> = self
            .conns
            .iter()
            .filter(|(_, c)| matches!(c.state, State::Joined { .. }))
            .map(|(k, _)| *k)
            .collect();
        let msg = Message::Disconnect(Disconnect {
            reason: truncate(reason),
        });
        for conn in joined {
            self.write(conn, &msg).await;
        }
        self.send(Down::Shutdown {
            reason: reason.to_owned(),
        })
        .await;
    }

    async fn on_stats(&mut self, snapshot: Snapshot) {
        self.stats_requested = false;
        if std::mem::take(&mut self.broadcast_stats) {
            for room in &snapshot.rooms {
                for p in &room.peers {
                    let Some(&conn) = self.peers.get(&PeerId(p.peer.0)) else {
                        continue;
                    };
                    let stats = msg::Stats {
                        frames_in: p.stats.frames_in,
                        frames_out: p.stats.datagrams_out,
                        bytes_in: p.stats.bytes_in,
                        bytes_out: p.stats.bytes_out,
                        drops: nonzero_drops(&p.stats.drops),
                    };
                    self.write(conn, &Message::Stats(stats)).await;
                }
            }
        }
        if self.waiters.is_empty() {
            return;
        }
        let report = self.report(&snapshot);
        for waiter in std::mem::take(&mut self.waiters) {
            match waiter {
                Waiter::Status(tx) => {
                    let _ = tx.send(report.clone());
                }
                Waiter::Metrics(tx) => {
                    let _ = tx.send(metrics::render(&report));
                }
            }
        }
    }

    fn report(&self, snapshot: &Snapshot) -> StatusReport {
        let by_code: HashMap<&str, &crate::bridge::RoomSnapshot> = snapshot
            .rooms
            .iter()
            .map(|r| (r.code.as_str(), r))
            .collect();
        let rooms = self
            .rooms
            .rooms()
            .into_iter()
            .map(|room| {
                let snap = by_code.get(room.code.as_str());
                let peer_snap =
                    |id: PeerId| snap.and_then(|s| s.peers.iter().find(|p| p.peer.0 == id.0));
                RoomReport {
                    code: room.code.as_str().to_owned(),
                    budget: room.budget,
                    max_frame: room.max_frame,
                    mac_table: snap.map_or(0, |s| s.mac_table_len),
                    learned_macs: snap.map_or(0, |s| s.learned_macs),
                    floods: snap.map_or(0, |s| s.stats.floods),
                    drops: snap.map_or_else(BTreeMap::new, |s| nonzero_drops(&s.stats.drops)),
                    peers: room
                        .peers
                        .iter()
                        .map(|m| {
                            let p = peer_snap(m.info.peer_id);
                            let stats = p.map(|p| p.stats).unwrap_or_default();
                            let quic = p.and_then(|p| p.quic);
                            PeerReport {
                                peer_id: m.info.peer_id.0,
                                role: m.info.role.to_string(),
                                mac: m.info.mac.to_string(),
                                name: m.info.name.as_str().to_owned(),
                                source: m.source.to_string(),
                                frames_in: stats.frames_in,
                                datagrams_in: stats.datagrams_in,
                                bytes_in: stats.bytes_in,
                                datagrams_out: stats.datagrams_out,
                                bytes_out: stats.bytes_out,
                                drops: nonzero_drops(&stats.drops),
                                rtt_ms: quic.map_or(0.0, |q| q.rtt.as_secs_f64() * 1000.0),
                                sent_packets: quic.map_or(0, |q| q.sent_packets),
                                lost_packets: quic.map_or(0, |q| q.lost_packets),
                                mtu: quic.map_or(0, |q| q.mtu),
                            }
                        })
                        .collect(),
                }
            })
            .collect();
        let d = &snapshot.driver;
        StatusReport {
            listen: self.settings.listen.clone(),
            fingerprint: self.settings.fingerprint.clone(),
            backend: snapshot.backend.clone(),
            connections: snapshot.connections,
            counters: RelayCounters {
                udp_datagrams_received: d.datagrams_received,
                udp_datagrams_sent: snapshot.io.datagrams_sent,
                unroutable_datagrams: d.unroutable_datagrams,
                rejected_datagrams: d.rejected_datagrams,
                connections_accepted: d.connections_accepted,
                connections_refused: d.connections_refused,
                handshakes_timed_out: d.handshakes_timed_out,
                unadmitted_datagrams: snapshot.unadmitted_datagrams,
                datagrams_dropped_tx: d.datagrams_dropped_tx,
                datagrams_dropped_rx: d.datagrams_dropped_rx,
                admitted: self.admitted,
                rejects: self
                    .rejects
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), *v))
                    .collect(),
            },
            rooms,
        }
    }
}

fn nonzero_drops(drops: &switch::DropCounts) -> BTreeMap<String, u64> {
    drops
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(r, n)| (r.name().to_owned(), n))
        .collect()
}

fn truncate(reason: &str) -> String {
    let mut s = reason.to_owned();
    if s.len() > msg::MAX_REASON_LEN {
        let mut cut = msg::MAX_REASON_LEN;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}
