//! The client's session with the relay: connect, join, reconnect with backoff, sans-IO.
//!
//! [`Session`] decides *when* to connect and what to tell the player; the I/O layer does the
//! connecting and reports back with [`Input`]s (it maps the control protocol's messages onto
//! them). States are named for what they wait on:
//!
//! - [`State::Connecting`]: a QUIC connection to the relay is being set up.
//! - [`State::AwaitWelcome`]: connected; the hello went out, waiting for the welcome.
//! - [`State::Joined`]: in the room; frames flow.
//! - [`State::Backoff`]: waiting before the next attempt.
//! - [`State::Rejected`] and [`State::Closed`]: final; no more attempts.
//!
//! Reconnects back off exponentially from [`SessionConfig::backoff_initial`] (1 s) to
//! [`SessionConfig::backoff_max`] (30 s), each delay scaled by a random factor in 0.8..1.2
//! from a seeded RNG (never the clock) so that a room full of clients does not reconnect in
//! lockstep after a relay restart. The attempt count resets only when a session that stayed
//! joined for [`SessionConfig::stable_after`] (60 s) ends: a relay that welcomes and drops at
//! once keeps backing off.
//!
//! A rejection marked fatal (bad secret, bad room code, incompatible version) ends the session:
//! retrying cannot help and would hammer the relay. Transient ones (room full, relay busy) and
//! lost connections retry. Connecting and waiting for the welcome each time out after
//! [`SessionConfig::handshake_timeout`].

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use lanparty_datapath::Mac;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Session settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    /// The relay as the player wrote it (`relay.example:4433`), for status lines.
    pub relay: String,
    /// Room code, for status lines.
    pub room: String,
    /// Our MAC, for status lines.
    pub mac: Mac,
    /// First reconnect delay (default 1 s).
    pub backoff_initial: Duration,
    /// Largest reconnect delay (default 30 s).
    pub backoff_max: Duration,
    /// A session joined this long resets the backoff (default 60 s).
    pub stable_after: Duration,
    /// Longest wait for the connection and then for the welcome (default 10 s).
    pub handshake_timeout: Duration,
    /// Seed for the backoff jitter.
    pub seed: u64,
}

impl SessionConfig {
    /// Settings with the defaults above.
    pub fn new(relay: impl Into<String>, room: impl Into<String>, mac: Mac, seed: u64) -> Self {
        Self {
            relay: relay.into(),
            room: room.into(),
            mac,
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(30),
            stable_after: Duration::from_secs(60),
            handshake_timeout: Duration::from_secs(10),
            seed,
        }
    }
}

/// What the I/O layer reports.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Input {
    /// The connection to the relay is up; the hello was sent.
    Connected,
    /// The relay admitted us into the room.
    Welcome {
        /// Other peers in the room.
        peers: usize,
    },
    /// The number of other peers changed.
    PeersChanged {
        /// Other peers in the room.
        peers: usize,
    },
    /// The relay refused us.
    Rejected {
        /// Machine-readable code from the relay.
        code: String,
        /// Human-readable reason ("room secret rejected", "room full").
        reason: String,
        /// True when retrying cannot help.
        fatal: bool,
    },
    /// The connection failed or ended.
    ConnectionLost {
        /// Why, for the player ("relay unreachable", "connection timed out").
        reason: String,
    },
}

/// What the I/O layer must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Action {
    /// Open a connection to the relay and send the hello.
    Connect,
    /// Close the current connection.
    Close,
}

/// What the session waits on.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum State {
    /// Waiting for the connection to come up.
    Connecting {
        /// When the attempt started.
        since: Instant,
    },
    /// Waiting for the relay's welcome.
    AwaitWelcome {
        /// When the connection came up.
        since: Instant,
    },
    /// In the room.
    Joined {
        /// When the welcome arrived.
        since: Instant,
        /// Other peers in the room.
        peers: usize,
    },
    /// Waiting to try again.
    Backoff {
        /// When the next attempt starts.
        until: Instant,
        /// The delay chosen.
        delay: Duration,
        /// What went wrong.
        reason: String,
    },
    /// Refused for good.
    Rejected {
        /// The relay's code.
        code: String,
        /// The relay's reason.
        reason: String,
    },
    /// Stopped by the player.
    Closed,
}

/// The session state machine. See the [module documentation](self).
#[derive(Debug)]
pub struct Session {
    config: SessionConfig,
    state: State,
    /// Consecutive failed attempts since the last stable session.
    failures: u32,
    rng: StdRng,
    actions: VecDeque<Action>,
}

impl Session {
    /// Starts a session: the first [`Action::Connect`] is queued at once.
    pub fn new(now: Instant, config: SessionConfig) -> Self {
        let rng = StdRng::seed_from_u64(config.seed);
        Self {
            config,
            state: State::Connecting { since: now },
            failures: 0,
            rng,
            actions: VecDeque::from([Action::Connect]),
        }
    }

    /// The current state.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// True while in the room.
    pub fn is_joined(&self) -> bool {
        matches!(self.state, State::Joined { .. })
    }

    /// True once the session will never connect again.
    pub fn is_finished(&self) -> bool {
        matches!(self.state, State::Rejected { .. } | State::Closed)
    }

    /// Consecutive failed attempts since the last stable session.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// The next thing for the I/O layer to do. Call after every `handle_*` until `None`.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When [`Self::handle_timeout`] wants to run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.state {
            State::Connecting { since } | State::AwaitWelcome { since } => {
                Some(*since + self.config.handshake_timeout)
            }
            State::Backoff { until, .. } => Some(*until),
            State::Joined { .. } | State::Rejected { .. } | State::Closed => None,
        }
    }

    /// Starts the next attempt after a backoff, or gives up on a handshake that took too long.
    pub fn handle_timeout(&mut self, now: Instant) {
        match &self.state {
            State::Backoff { until, .. } if now >= *until => {
                self.state = State::Connecting { since: now };
                self.actions.push_back(Action::Connect);
            }
            State::Connecting { since } | State::AwaitWelcome { since }
                if now >= *since + self.config.handshake_timeout =>
            {
                let waited = self.config.handshake_timeout.as_secs();
                let reason = if matches!(self.state, State::Connecting { .. }) {
                    format!("relay did not answer within {waited} s")
                } else {
                    format!("relay did not welcome us within {waited} s")
                };
                self.actions.push_back(Action::Close);
                self.back_off(now, reason);
            }
            _ => {}
        }
    }

    /// Handles a report from the I/O layer.
    pub fn handle_input(&mut self, now: Instant, input: Input) {
        if self.is_finished() {
            return;
        }
        match input {
            Input::Connected => {
                if matches!(self.state, State::Connecting { .. }) {
                    self.state = State::AwaitWelcome { since: now };
                }
            }
            Input::Welcome { peers } => {
                if matches!(
                    self.state,
                    State::Connecting { .. } | State::AwaitWelcome { .. }
                ) {
                    self.state = State::Joined { since: now, peers };
                }
            }
            Input::PeersChanged { peers } => {
                if let State::Joined { peers: p, .. } = &mut self.state {
                    *p = peers;
                }
            }
            Input::Rejected {
                code,
                reason,
                fatal,
            } => {
                if matches!(self.state, State::Backoff { .. }) {
                    return;
                }
                self.actions.push_back(Action::Close);
                if fatal {
                    self.state = State::Rejected { code, reason };
                } else {
                    self.note_session_end(now);
                    self.back_off(now, reason);
                }
            }
            Input::ConnectionLost { reason } => {
                if matches!(self.state, State::Backoff { .. }) {
                    return;
                }
                self.note_session_end(now);
                self.back_off(now, reason);
            }
        }
    }

    /// Stops for good (the player quit).
    pub fn close(&mut self) {
        if !matches!(self.state, State::Backoff { .. }) && !self.is_finished() {
            self.actions.push_back(Action::Close);
        }
        self.state = State::Closed;
    }

    /// Resets the failure count when a joined session lasted long enough.
    fn note_session_end(&mut self, now: Instant) {
        if let State::Joined { since, .. } = self.state
            && now.saturating_duration_since(since) >= self.config.stable_after
        {
            self.failures = 0;
        }
    }

    fn back_off(&mut self, now: Instant, reason: String) {
        let delay = self.next_delay();
        self.failures = self.failures.saturating_add(1);
        self.state = State::Backoff {
            until: now + delay,
            delay,
            reason,
        };
    }

    /// `initial * 2^failures`, capped, times a factor in 0.8..1.2, capped again.
    fn next_delay(&mut self) -> Duration {
        let base = self
            .config
            .backoff_initial
            .saturating_mul(1 << self.failures.min(20))
            .min(self.config.backoff_max);
        let factor: f64 = self.rng.random_range(0.8..1.2);
        base.mul_f64(factor).min(self.config.backoff_max)
    }

    /// One line for the player.
    pub fn status(&self) -> String {
        let c = &self.config;
        match &self.state {
            State::Connecting { .. } => format!("connecting to {}", c.relay),
            State::AwaitWelcome { .. } => {
                format!("connected to {}, joining room {}", c.relay, c.room)
            }
            State::Joined { peers, .. } => format!(
                "joined room {} as MAC {} with {} {}",
                c.room,
                c.mac,
                peers,
                if *peers == 1 { "peer" } else { "peers" }
            ),
            State::Backoff { delay, reason, .. } => {
                // Round up so a 3.4 s wait never reads "retrying in 3 s" after it passed.
                let secs = delay.as_millis().div_ceil(1000).max(1);
                format!("{reason}, retrying in {secs} s")
            }
            State::Rejected { reason, .. } => format!("rejected: {reason}"),
            State::Closed => "disconnected".to_owned(),
        }
    }
}
