//! The peer side (gateway or client) of the control protocol, sans-IO.
//!
//! A [`PeerControl`] holds the hello a peer sends on every (re)connection, decodes what the
//! relay writes on the control stream and keeps the room's member list. The peer's datapath
//! loop feeds it control-stream bytes and writes the bytes it returns; it never blocks.
//!
//! Rejections are sorted into fatal ones (retrying cannot help: wrong secret, bad room code,
//! protocol version, not allowed) and transient ones (room full, a stale connection of ours
//! still holding the MAC, too many connections), so a reconnect loop knows when to stop.

use std::collections::{BTreeMap, VecDeque};

use crate::codec::{self, Decoder};
use crate::msg::{Disconnect, Hello, Message, PeerId, PeerInfo, RejectCode, Stats, Welcome};

/// What the relay told this peer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PeerEvent {
    /// The hello was accepted.
    Joined(Welcome),
    /// The hello was refused.
    Rejected {
        /// The relay's code.
        code: RejectCode,
        /// The relay's words.
        reason: String,
        /// True when retrying the same hello cannot succeed.
        fatal: bool,
    },
    /// A member joined the room.
    PeerJoined(PeerInfo),
    /// A member left the room (with what we knew of it).
    PeerLeft(PeerId, Option<PeerInfo>),
    /// Every member's path now carries DATAGRAMs of this many bytes (see
    /// [`RoomBudget`](crate::msg::RoomBudget)).
    RoomBudget(u16),
    /// The relay's counters for this peer.
    RelayStats(Stats),
    /// The relay is closing the connection.
    Disconnected {
        /// The relay's words.
        reason: String,
    },
    /// The relay sent something this peer cannot accept; the connection should be closed.
    ProtocolError(String),
}

/// Where the exchange stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerState {
    /// No connection yet (or it was lost).
    AwaitConnection,
    /// The hello was sent; waiting for welcome or reject.
    AwaitWelcome,
    /// Admitted into the room.
    Joined,
    /// The relay refused or closed; waiting for the caller to reconnect or give up.
    Ended,
}

/// True when a rejection with `code` cannot be cured by retrying the same hello.
pub fn is_fatal(code: RejectCode) -> bool {
    matches!(
        code,
        RejectCode::BadVersion
            | RejectCode::BadRoomCode
            | RejectCode::BadSecret
            | RejectCode::BadMac
            | RejectCode::NotAllowed
            | RejectCode::NoSuchRoom
            | RejectCode::BadHello
            | RejectCode::BudgetTooSmall
    )
}

/// A short description of a reject code for a status line.
pub fn describe(code: RejectCode) -> &'static str {
    match code {
        RejectCode::BadVersion => "relay speaks another protocol version",
        RejectCode::BadRoomCode => "room code not valid",
        RejectCode::BadSecret => "room secret rejected",
        RejectCode::RoomFull => "room is full",
        RejectCode::GatewayAlreadyPresent => "room already has a gateway",
        RejectCode::MacInUse => "MAC already in room",
        RejectCode::BadMac => "MAC address not usable",
        RejectCode::NotAllowed => "not allowed by the relay operator",
        RejectCode::NoSuchRoom => "no such room",
        RejectCode::TooManyRooms => "relay has too many rooms",
        RejectCode::TooManyConnections => "too many connections",
        RejectCode::BadHello => "relay could not read our hello",
        RejectCode::BudgetTooSmall => "network path too small for the room",
        RejectCode::HandshakeTimeout => "handshake timed out",
        _ => "rejected",
    }
}

/// The peer's side of the control stream.
#[derive(Debug)]
pub struct PeerControl {
    hello: Hello,
    decoder: Decoder,
    state: PeerState,
    welcome: Option<Welcome>,
    peers: BTreeMap<PeerId, PeerInfo>,
    events: VecDeque<PeerEvent>,
}

impl PeerControl {
    /// A peer that will send `hello` on every connection.
    pub fn new(hello: Hello) -> Self {
        Self {
            hello,
            decoder: Decoder::new(),
            state: PeerState::AwaitConnection,
            welcome: None,
            peers: BTreeMap::new(),
            events: VecDeque::new(),
        }
    }

    /// The hello this peer sends.
    pub fn hello(&self) -> &Hello {
        &self.hello
    }

    /// Lets the caller lower the budget it offers (the connection's datagram size) before
    /// connecting.
    pub fn set_datagram_budget(&mut self, budget: u16) {
        self.hello.datagram_budget = budget;
    }

    /// Where the exchange stands.
    pub fn state(&self) -> PeerState {
        self.state
    }

    /// The welcome of the current connection, once joined.
    pub fn welcome(&self) -> Option<&Welcome> {
        self.welcome.as_ref()
    }

    /// The other members of the room as currently known.
    pub fn peers(&self) -> impl Iterator<Item = &PeerInfo> {
        self.peers.values()
    }

    /// Call when a new QUIC connection is up: resets what the last connection learnt and
    /// returns the encoded hello to write on the control stream.
    pub fn on_connected(&mut self) -> Vec<u8> {
        self.decoder = Decoder::new();
        self.welcome = None;
        self.peers.clear();
        self.events.clear();
        self.state = PeerState::AwaitWelcome;
        // A hello built from validated parts always fits one frame.
        codec::encode(&Message::Hello(self.hello.clone())).unwrap_or_default()
    }

    /// Call when the connection is gone.
    pub fn on_connection_lost(&mut self) {
        self.state = PeerState::AwaitConnection;
        self.welcome = None;
        self.peers.clear();
    }

    /// Encodes this peer's counters for the relay.
    pub fn encode_stats(stats: &Stats) -> Vec<u8> {
        codec::encode(&Message::Stats(stats.clone())).unwrap_or_default()
    }

    /// Encodes a goodbye for the relay.
    pub fn encode_disconnect(reason: &str) -> Vec<u8> {
        let msg = Message::Disconnect(Disconnect {
            reason: reason.to_owned(),
        });
        codec::encode(&msg).unwrap_or_default()
    }

    /// Feeds bytes read from the control stream; decoded messages become events.
    pub fn handle_bytes(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() && !self.decoder.is_poisoned() {
            let taken = self.decoder.push(bytes);
            bytes = &bytes[taken..];
            loop {
                match self.decoder.poll() {
                    Ok(Some(msg)) => self.handle_message(msg),
                    Ok(None) => break,
                    Err(e) => {
                        self.fail(format!("relay sent a malformed control frame: {e}"));
                        return;
                    }
                }
            }
            if taken == 0 {
                break;
            }
        }
    }

    fn fail(&mut self, why: String) {
        self.state = PeerState::Ended;
        self.events.push_back(PeerEvent::ProtocolError(why));
    }

    fn handle_message(&mut self, msg: Message) {
        match (self.state, msg) {
            (PeerState::AwaitWelcome, Message::Welcome(w)) => {
                self.peers = w.peers.iter().map(|p| (p.peer_id, p.clone())).collect();
                self.welcome = Some(w.clone());
                self.state = PeerState::Joined;
                self.events.push_back(PeerEvent::Joined(w));
            }
            (PeerState::AwaitWelcome, Message::Reject(r)) => {
                self.state = PeerState::Ended;
                self.events.push_back(PeerEvent::Rejected {
                    code: r.code,
                    fatal: is_fatal(r.code),
                    reason: r.reason,
                });
            }
            (PeerState::Joined, Message::PeerJoined(p)) => {
                self.peers.insert(p.peer_id, p.clone());
                self.events.push_back(PeerEvent::PeerJoined(p));
            }
            (PeerState::Joined, Message::PeerLeft(l)) => {
                let info = self.peers.remove(&l.peer_id);
                self.events.push_back(PeerEvent::PeerLeft(l.peer_id, info));
            }
            (PeerState::Joined, Message::RoomBudget(b)) => {
                self.events.push_back(PeerEvent::RoomBudget(b.budget));
            }
            (PeerState::Joined, Message::Stats(s)) => {
                self.events.push_back(PeerEvent::RelayStats(s));
            }
            (_, Message::Disconnect(d)) => {
                self.state = PeerState::Ended;
                self.events
                    .push_back(PeerEvent::Disconnected { reason: d.reason });
            }
            (state, msg) => {
                self.fail(format!("relay sent {} while {state:?}", msg.type_name()));
            }
        }
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<PeerEvent> {
        self.events.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msg::{
        DisplayName, PROTOCOL_VERSION, PeerLeft, Reject, Role, RoomBudget, RoomCode, Secret,
    };

    fn hello() -> Hello {
        Hello {
            version: PROTOCOL_VERSION,
            role: Role::Client,
            room: RoomCode::new("party").unwrap(),
            mac: "02:00:00:00:00:01".parse().unwrap(),
            secret: Secret::new("correct horse").unwrap(),
            gateway_token: None,
            datagram_budget: 1162,
            name: DisplayName::new("alice").unwrap(),
        }
    }

    fn info(id: u64, mac: &str) -> PeerInfo {
        PeerInfo {
            peer_id: PeerId(id),
            role: Role::Client,
            mac: mac.parse().unwrap(),
            name: DisplayName::new("bob").unwrap(),
        }
    }

    fn frame(msg: Message) -> Vec<u8> {
        codec::encode(&msg).unwrap()
    }

    #[test]
    fn hello_then_welcome_then_membership_changes() {
        let mut p = PeerControl::new(hello());
        let sent = p.on_connected();
        let mut d = Decoder::new();
        d.push(&sent);
        assert!(matches!(d.poll(), Ok(Some(Message::Hello(h))) if h.name.as_str() == "alice"));
        assert_eq!(p.state(), PeerState::AwaitWelcome);

        let welcome = Welcome {
            version: PROTOCOL_VERSION,
            peer_id: PeerId(7),
            room_budget: 1162,
            max_frame: 1518,
            peers: vec![info(3, "02:00:00:00:00:03")],
        };
        let mut bytes = frame(Message::Welcome(welcome.clone()));
        bytes.extend(frame(Message::PeerJoined(info(9, "02:00:00:00:00:09"))));
        bytes.extend(frame(Message::PeerLeft(PeerLeft { peer_id: PeerId(3) })));
        // Byte by byte, as a QUIC stream may deliver it.
        for b in &bytes {
            p.handle_bytes(std::slice::from_ref(b));
        }
        assert_eq!(p.poll_event(), Some(PeerEvent::Joined(welcome)));
        assert!(matches!(p.poll_event(), Some(PeerEvent::PeerJoined(i)) if i.peer_id == PeerId(9)));
        assert!(matches!(
            p.poll_event(),
            Some(PeerEvent::PeerLeft(PeerId(3), Some(i))) if i.mac.to_string() == "02:00:00:00:00:03"
        ));
        assert_eq!(p.poll_event(), None);
        assert_eq!(
            p.peers().map(|i| i.peer_id).collect::<Vec<_>>(),
            vec![PeerId(9)]
        );
    }

    #[test]
    fn a_room_budget_is_an_event_once_joined_and_a_protocol_error_before() {
        let budget = |b| frame(Message::RoomBudget(RoomBudget { budget: b }));
        let mut early = PeerControl::new(hello());
        early.on_connected();
        early.handle_bytes(&budget(1434));
        assert!(matches!(
            early.poll_event(),
            Some(PeerEvent::ProtocolError(_))
        ));

        let mut p = PeerControl::new(hello());
        p.on_connected();
        let welcome = Welcome {
            version: PROTOCOL_VERSION,
            peer_id: PeerId(7),
            room_budget: 1162,
            max_frame: 1518,
            peers: vec![],
        };
        p.handle_bytes(&frame(Message::Welcome(welcome)));
        p.handle_bytes(&budget(1434));
        assert!(matches!(p.poll_event(), Some(PeerEvent::Joined(_))));
        assert_eq!(p.poll_event(), Some(PeerEvent::RoomBudget(1434)));
        // Below the protocol minimum: the decoder refuses it.
        p.handle_bytes(&budget(900));
        assert!(matches!(p.poll_event(), Some(PeerEvent::ProtocolError(_))));
    }

    #[test]
    fn rejections_are_sorted_into_fatal_and_transient() {
        for (code, fatal) in [
            (RejectCode::BadSecret, true),
            (RejectCode::BadVersion, true),
            (RejectCode::RoomFull, false),
            (RejectCode::MacInUse, false),
        ] {
            let mut p = PeerControl::new(hello());
            p.on_connected();
            p.handle_bytes(&frame(Message::Reject(Reject::new(code, "no"))));
            assert_eq!(
                p.poll_event(),
                Some(PeerEvent::Rejected {
                    code,
                    reason: "no".into(),
                    fatal
                })
            );
            assert_eq!(p.state(), PeerState::Ended);
        }
    }

    #[test]
    fn out_of_order_and_malformed_input_is_a_protocol_error() {
        let mut p = PeerControl::new(hello());
        p.on_connected();
        p.handle_bytes(&frame(Message::PeerLeft(PeerLeft { peer_id: PeerId(3) })));
        assert!(matches!(p.poll_event(), Some(PeerEvent::ProtocolError(_))));

        let mut p = PeerControl::new(hello());
        p.on_connected();
        p.handle_bytes(&[0, 0, 0, 2, b'{', b'x']);
        assert!(
            matches!(p.poll_event(), Some(PeerEvent::ProtocolError(e)) if e.contains("malformed"))
        );
        // A poisoned decoder ignores the rest without panicking.
        p.handle_bytes(&[1, 2, 3]);
        assert_eq!(p.poll_event(), None);
    }

    #[test]
    fn reconnecting_forgets_the_old_room_view() {
        let mut p = PeerControl::new(hello());
        p.on_connected();
        let welcome = Welcome {
            version: PROTOCOL_VERSION,
            peer_id: PeerId(1),
            room_budget: 1162,
            max_frame: 1518,
            peers: vec![info(2, "02:00:00:00:00:02")],
        };
        p.handle_bytes(&frame(Message::Welcome(welcome)));
        p.on_connection_lost();
        assert_eq!(p.peers().count(), 0);
        p.on_connected();
        assert_eq!(p.state(), PeerState::AwaitWelcome);
        assert!(p.welcome().is_none());
    }
}
