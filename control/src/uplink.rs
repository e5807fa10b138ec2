//! A peer's link to its relay: one QUIC connection that joins a room, carries Ethernet frames
//! and comes back by itself after the relay goes away. The gateway and the client both run one.
//!
//! [`Uplink`] owns the [`Runner`] (QUIC driver + UDP backend) of the peer's datapath thread and
//! ties together the pieces that decide things: [`Session`] (when to connect, backoff, status
//! lines), [`PeerControl`] (hello, welcome, membership), the [`Fragmenter`] and the
//! [`Reassembler`]. Its owner calls, on every turn of its loop:
//!
//! ```text
//! uplink.receive(now);                                    // UDP, QUIC, control stream
//! while let Some(ev) = uplink.poll_event() { .. }         // joined, peers, status lines
//! while let Some(frame) = uplink.poll_frame() { .. }      // frames from the room
//! uplink.send_frame(now, &mut frame);                     // frames into the room
//! uplink.transmit(now)?;
//! uplink.wait(own_deadline)?;
//! ```
//!
//! Peers decode their few control messages on the datapath thread instead of a tokio control
//! thread: a peer has one connection and a handful of messages per minute, so a thread hop
//! would only add latency and code (see docs/ARCHITECTURE.md).

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use lanparty_datapath::budget::{self, Budget};
use lanparty_datapath::frag::{Fragmenter, Reassembler, ReassemblyConfig};
use lanparty_datapath::quic::{ClientConfig, ConnId, Event};
use lanparty_datapath::runner::Runner;
use lanparty_datapath::wire::overlay;

use crate::msg::{Hello, PeerInfo, Stats, Welcome};
use crate::peer::{self, PeerControl, PeerEvent};
use crate::session::{Action, Input, Session, SessionConfig, State};

/// How to reach the relay and what to tell it.
#[derive(Debug, Clone)]
pub struct UplinkConfig {
    /// The relay's UDP address.
    pub relay: SocketAddr,
    /// The name the relay's certificate is checked against (ignored with a pinned fingerprint).
    pub server_name: String,
    /// TLS trust for the relay (pin, CA file or system roots).
    pub client: ClientConfig,
    /// The hello sent on every connection.
    pub hello: Hello,
    /// Reconnect and status settings.
    pub session: SessionConfig,
    /// Limits of the fragment reassembler.
    pub reassembly: ReassemblyConfig,
    /// Rewrite the MSS of TCP SYNs so bulk TCP fits one datagram.
    pub clamp_mss: bool,
}

/// What happened on the link.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum UplinkEvent {
    /// The status line changed.
    Status(String),
    /// Admitted into the room; frames flow from now on.
    Joined(Welcome),
    /// A member joined.
    PeerJoined(PeerInfo),
    /// A member left.
    PeerLeft(PeerInfo),
    /// The link is down (it will reconnect unless [`Uplink::is_finished`]); every member is
    /// gone from this peer's point of view.
    Left,
    /// The relay's counters for this peer.
    RelayStats(Stats),
}

/// Counters of the link, beyond the driver's and the reassembler's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct UplinkCounters {
    /// Frames handed to [`Uplink::send_frame`] and sent.
    pub frames_out: u64,
    /// Bytes of those frames.
    pub bytes_out: u64,
    /// Frames received whole or reassembled.
    pub frames_in: u64,
    /// Bytes of those frames.
    pub bytes_in: u64,
    /// Frames dropped because the link was not joined.
    pub dropped_not_joined: u64,
    /// Frames dropped because they exceed the room's largest frame.
    pub dropped_oversize: u64,
    /// Datagrams the driver refused (too large, connection closing).
    pub dropped_send_error: u64,
    /// TCP SYNs whose MSS was lowered.
    pub mss_clamped: u64,
    /// Connections attempted.
    pub connects: u64,
}

/// A peer's link to its relay. See the [module documentation](self).
#[derive(Debug)]
pub struct Uplink {
    runner: Runner,
    config: UplinkConfig,
    session: Session,
    control: PeerControl,
    conn: Option<ConnId>,
    /// The budget frames are cut to now and the room's largest frame, once joined.
    joined: Option<(Budget, usize)>,
    /// The welcome's fixed budget and the relay's latest [`RoomBudget`](crate::msg::RoomBudget).
    room_budget: Option<(Budget, Option<u16>)>,
    fragmenter: Fragmenter,
    frag_buf: BytesMut,
    reassembler: Reassembler<()>,
    frames: VecDeque<Bytes>,
    events: VecDeque<UplinkEvent>,
    status: String,
    /// The session state `status` was formatted from.
    status_of: Option<State>,
    counters: UplinkCounters,
}

impl Uplink {
    /// A link that starts connecting on the first [`Self::receive`].
    pub fn new(now: Instant, runner: Runner, config: UplinkConfig) -> Self {
        let session = Session::new(now, config.session.clone());
        Self {
            runner,
            control: PeerControl::new(config.hello.clone()),
            reassembler: Reassembler::new(config.reassembly),
            session,
            config,
            conn: None,
            joined: None,
            room_budget: None,
            // The origin is set from the welcome; nothing is sent before it.
            fragmenter: Fragmenter::new(0),
            frag_buf: BytesMut::with_capacity(64 * 1024),
            frames: VecDeque::new(),
            events: VecDeque::new(),
            status: String::new(),
            status_of: None,
            counters: UplinkCounters::default(),
        }
    }

    /// The runner, to watch extra fds or read io counters.
    pub fn runner(&mut self) -> &mut Runner {
        &mut self.runner
    }

    /// The runner, read-only.
    pub fn runner_ref(&self) -> &Runner {
        &self.runner
    }

    /// True while admitted into the room.
    pub fn is_joined(&self) -> bool {
        self.joined.is_some()
    }

    /// True once the session ended for good (fatal rejection or [`Self::close`]).
    pub fn is_finished(&self) -> bool {
        self.session.is_finished()
    }

    /// The session's state.
    pub fn state(&self) -> &State {
        self.session.state()
    }

    /// The current status line.
    pub fn status(&self) -> &str {
        &self.status
    }

    /// The other members of the room as currently known.
    pub fn peers(&self) -> impl Iterator<Item = &PeerInfo> {
        self.control.peers()
    }

    /// The room's datagram budget, once joined.
    pub fn budget(&self) -> Option<Budget> {
        self.joined.map(|(b, _)| b)
    }

    /// Link counters.
    pub fn counters(&self) -> UplinkCounters {
        self.counters
    }

    /// The reassembler's counters.
    pub fn reassembly_counters(&self) -> lanparty_datapath::frag::Counters {
        self.reassembler.counters()
    }

    /// Receives everything pending, runs timers, handles the control stream and carries out
    /// the session's decisions. Call first on every turn.
    pub fn receive(&mut self, now: Instant) {
        self.runner.receive(now);
        if self.session.poll_timeout().is_some_and(|t| t <= now) {
            self.session.handle_timeout(now);
        }
        if self.reassembler.poll_timeout().is_some_and(|t| t <= now) {
            self.reassembler.handle_timeout(now);
        }
        while let Some(event) = self.runner.driver().poll_event() {
            self.handle_driver_event(now, event);
        }
        self.run_actions(now);
        self.refresh_budget();
        // The status line is a function of the session's state: format it only when that
        // changed, not on every turn of the datapath loop.
        if self.status_of.as_ref() != Some(self.session.state()) {
            self.status_of = Some(self.session.state().clone());
            let status = self.session.status();
            if status != self.status {
                self.status.clone_from(&status);
                self.events.push_back(UplinkEvent::Status(status));
            }
        }
    }

    fn handle_driver_event(&mut self, now: Instant, event: Event) {
        match event {
            Event::Connected { conn, .. } if Some(conn) == self.conn => {
                // Offer what this path carries today; the room's budget comes back fixed.
                let size = self.runner.driver().max_datagram_size(conn).unwrap_or(0);
                let offer = u16::try_from(size).unwrap_or(u16::MAX);
                self.control
                    .set_datagram_budget(offer.max(crate::msg::MIN_DATAGRAM_BUDGET));
                let hello = self.control.on_connected();
                if let Err(e) = self.runner.driver().write_control(conn, &hello) {
                    self.lose(now, format!("could not send hello: {e}"));
                    return;
                }
                self.session.handle_input(now, Input::Connected);
            }
            Event::ControlBytes { conn, bytes } if Some(conn) == self.conn => {
                self.control.handle_bytes(&bytes);
                while let Some(ev) = self.control.poll_event() {
                    self.handle_peer_event(now, ev);
                }
            }
            Event::Datagram { conn, bytes } if Some(conn) == self.conn => {
                if self.joined.is_none() {
                    return;
                }
                if let Some(frame) = self.reassembler.handle_fragment(now, (), bytes) {
                    self.counters.frames_in += 1;
                    self.counters.bytes_in += frame.len() as u64;
                    self.frames.push_back(frame);
                }
            }
            Event::Closed { conn, reason, .. } if Some(conn) == self.conn => {
                self.conn = None;
                let reason = if self.session.is_joined() || self.control.welcome().is_some() {
                    format!("connection to relay lost ({reason})")
                } else {
                    format!("relay unreachable ({reason})")
                };
                self.lose(now, reason);
            }
            _ => {}
        }
    }

    fn handle_peer_event(&mut self, now: Instant, event: PeerEvent) {
        match event {
            PeerEvent::Joined(welcome) => {
                let Ok(budget) = Budget::new(usize::from(welcome.room_budget)) else {
                    self.close_conn(now, "room budget too small");
                    self.lose(now, "relay offered an unusable room budget".to_owned());
                    return;
                };
                self.joined = Some((budget, usize::from(welcome.max_frame)));
                self.room_budget = Some((budget, None));
                self.fragmenter
                    .set_origin(overlay::origin_of(welcome.peer_id.0));
                self.session.handle_input(
                    now,
                    Input::Welcome {
                        peers: welcome.peers.len(),
                    },
                );
                self.events.push_back(UplinkEvent::Joined(welcome));
            }
            PeerEvent::Rejected {
                code,
                reason,
                fatal,
            } => {
                let words = format!("{} ({reason})", peer::describe(code));
                self.close_conn(now, "rejected");
                self.session.handle_input(
                    now,
                    Input::Rejected {
                        code: code.to_string(),
                        reason: words,
                        fatal,
                    },
                );
                self.forget();
            }
            PeerEvent::PeerJoined(info) => {
                self.session.handle_input(
                    now,
                    Input::PeersChanged {
                        peers: self.peer_count(),
                    },
                );
                self.events.push_back(UplinkEvent::PeerJoined(info));
            }
            PeerEvent::PeerLeft(peer, info) => {
                self.reassembler
                    .remove_sender((), overlay::origin_of(peer.0));
                self.session.handle_input(
                    now,
                    Input::PeersChanged {
                        peers: self.peer_count(),
                    },
                );
                if let Some(info) = info {
                    self.events.push_back(UplinkEvent::PeerLeft(info));
                }
            }
            PeerEvent::RoomBudget(announced) => {
                if let Some((_, latest)) = &mut self.room_budget {
                    *latest = Some(announced);
                }
            }
            PeerEvent::RelayStats(stats) => self.events.push_back(UplinkEvent::RelayStats(stats)),
            PeerEvent::Disconnected { reason } => {
                self.close_conn(now, "relay said goodbye");
                self.lose(now, format!("relay closed the connection: {reason}"));
            }
            PeerEvent::ProtocolError(why) => {
                self.close_conn(now, "protocol error");
                self.lose(now, why);
            }
        }
    }

    fn peer_count(&self) -> usize {
        self.control.peers().count()
    }

    fn close_conn(&mut self, now: Instant, reason: &str) {
        if let Some(conn) = self.conn.take() {
            self.runner.driver().close(now, conn, 0, reason);
        }
    }

    /// Forgets the room after the connection ended.
    fn forget(&mut self) {
        let was_joined = self.joined.take().is_some();
        self.room_budget = None;
        self.control.on_connection_lost();
        self.reassembler.remove_source(());
        if was_joined {
            self.events.push_back(UplinkEvent::Left);
        }
    }

    fn lose(&mut self, now: Instant, reason: String) {
        self.forget();
        self.session
            .handle_input(now, Input::ConnectionLost { reason });
    }

    fn run_actions(&mut self, now: Instant) {
        while let Some(action) = self.session.poll_action() {
            match action {
                Action::Connect => {
                    self.close_conn(now, "reconnecting");
                    self.counters.connects += 1;
                    let cfg = &self.config;
                    let result = self.runner.driver().connect(
                        now,
                        cfg.relay,
                        &cfg.server_name,
                        cfg.client.clone(),
                    );
                    match result {
                        Ok(conn) => self.conn = Some(conn),
                        Err(e) => self.lose(now, format!("cannot connect: {e}")),
                    }
                }
                Action::Close => {
                    self.close_conn(now, "closing");
                    self.forget();
                }
            }
        }
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<UplinkEvent> {
        self.events.pop_front()
    }

    /// The next frame from the room, if any.
    pub fn poll_frame(&mut self) -> Option<Bytes> {
        self.frames.pop_front()
    }

    /// Cuts frames to the relay's announced room budget, bounded by what this connection
    /// carries now (PMTUD can also lower it) and never below the welcome's fixed budget.
    fn refresh_budget(&mut self) {
        let (Some(conn), Some((fixed, announced)), Some((current, _))) =
            (self.conn, self.room_budget, &mut self.joined)
        else {
            return;
        };
        let own = self.runner.driver().max_datagram_size(conn).unwrap_or(0);
        let size = announced
            .map_or(0, |a| usize::from(a).min(own))
            .max(fixed.bytes());
        if size != current.bytes()
            && let Ok(budget) = Budget::new(size)
        {
            *current = budget;
        }
    }

    /// Sends one Ethernet frame into the room: clamps the MSS of TCP SYNs (when configured),
    /// fragments it when it does not fit one datagram. Returns false when it was dropped
    /// (counted): not joined, larger than the room allows, or refused by QUIC.
    pub fn send_frame(&mut self, now: Instant, frame: &mut [u8]) -> bool {
        let (Some(conn), Some((budget, max_frame))) = (self.conn, self.joined) else {
            self.counters.dropped_not_joined += 1;
            return false;
        };
        if frame.len() > max_frame {
            self.counters.dropped_oversize += 1;
            return false;
        }
        if self.config.clamp_mss
            && matches!(
                budget::clamp_mss(frame, budget),
                budget::ClampOutcome::Clamped { .. }
            )
        {
            self.counters.mss_clamped += 1;
        }
        let runner = &mut self.runner;
        let mut refused = false;
        let split = self
            .fragmenter
            .fragment(frame, budget, &mut self.frag_buf, |d| {
                refused |= runner.send_datagram(now, conn, d).is_err();
            });
        if split.is_err() {
            self.counters.dropped_oversize += 1;
            return false;
        }
        if refused {
            self.counters.dropped_send_error += 1;
            return false;
        }
        self.counters.frames_out += 1;
        self.counters.bytes_out += frame.len() as u64;
        true
    }

    /// The budget frames are cut to now (the room's, as PMTUD raised it), or `None` when not
    /// joined. Frames up to its [`Budget::max_whole_frame`] travel in one datagram.
    pub fn frame_budget(&self) -> Option<Budget> {
        self.joined.map(|(budget, _)| budget)
    }

    /// Bytes of DATAGRAM payload the room connection can queue now without dropping anything,
    /// or `None` when not joined. A sender with more frames than the path carries (a benchmark,
    /// a file copy) waits for room instead of making frames only to have them dropped.
    pub fn send_space(&mut self) -> Option<usize> {
        let conn = self.conn.filter(|_| self.joined.is_some())?;
        self.runner.driver().datagram_send_space(conn)
    }

    /// Sends this peer's counters to the relay (when joined).
    pub fn send_stats(&mut self, stats: &Stats) {
        if let (Some(conn), true) = (self.conn, self.joined.is_some()) {
            let bytes = PeerControl::encode_stats(stats);
            // A full control buffer only delays the next report; nothing to do.
            let _ = self.runner.driver().write_control(conn, &bytes);
        }
    }

    /// Says goodbye to the relay and stops reconnecting.
    pub fn close(&mut self, now: Instant, reason: &str) {
        if let Some(conn) = self.conn {
            let _ = self
                .runner
                .driver()
                .write_control(conn, &PeerControl::encode_disconnect(reason));
        }
        // QUIC discards unsent stream data on close, so the reason also rides in the
        // CONNECTION_CLOSE frame, which the relay does see.
        self.close_conn(now, reason);
        self.session.close();
        self.run_actions(now);
        self.forget();
    }

    /// Hands pending datagrams to the UDP backend. Call last on every turn.
    ///
    /// # Errors
    ///
    /// When the backend's submit fails.
    pub fn transmit(&mut self, now: Instant) -> io::Result<usize> {
        self.runner.transmit(now)
    }

    /// The link's next timer (session, reassembly); the driver's own timers are added by
    /// [`Self::wait`].
    pub fn poll_timeout(&self) -> Option<Instant> {
        match (self.session.poll_timeout(), self.reassembler.poll_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Sleeps until something happens or `deadline` (the owner's own timer) passes; returns the
    /// tokens of watched fds that became ready.
    ///
    /// # Errors
    ///
    /// When the backend's wait fails.
    pub fn wait(&mut self, deadline: Option<Instant>) -> io::Result<&[u64]> {
        let next = match (self.poll_timeout(), deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let (_, ready) = self.runner.wait(next)?;
        Ok(ready)
    }
}
