//! Room membership and admission decisions, sans-IO.
//!
//! [`Rooms`] is the relay's whole admission policy as a plain state machine: it never touches a
//! socket or the clock (time is an argument, used for the status listing), so every rule is
//! covered by scenario tests below that read like the spec.
//!
//! # How the relay drives it
//!
//! 1. A QUIC connection arrives from `ip`: call [`Rooms::on_connection`]. An `Err` is the
//!    reject to send before closing (too many connections from that address, or in total);
//!    this bounds hello floods, because a connection counts from accept to close, whether
//!    or not its hello ever arrives. The runtime closes connections whose hello does not come
//!    in time.
//! 2. The hello arrives (decoded by [`crate::codec::Decoder`]): call [`Rooms::admit`]. On
//!    `Ok`, send [`Admitted::welcome`] to the new peer and each [`Notice`] to its peer; on
//!    `Err`, send the [`Reject`] and close.
//! 3. The peer goes away: call [`Rooms::leave`] and deliver the notices, then
//!    [`Rooms::on_connection_closed`] (also for connections that were never admitted).
//!
//! # Rules, in the order they are checked
//!
//! 1. The hello itself: version, MAC, budget ([`Hello::validate`]).
//! 2. The peer's budget is the smaller of its hello's `datagram_budget` and what its connection
//!    carries (`conn_budget`); below [`MIN_DATAGRAM_BUDGET`] it is `budget_too_small`.
//! 3. A gateway must present the operator token when the relay has one (`not_allowed`).
//! 4. With [`SecretPolicy::Fixed`], the secret must be the relay's (`bad_secret`).
//! 5. An existing room: the secret must be the room's, compared in constant time
//!    (`bad_secret`). Only then is anything about the room revealed:
//!    `budget_too_small` (the peer cannot carry the room's budget); a **reconnect** (a member
//!    with the same MAC, role, name and source address, when [`Config::reconnect_takeover`]
//!    is on) replaces that member; otherwise `room_full`, `gateway_already_present`,
//!    `mac_in_use` (any member, gateway included, with the same MAC).
//! 6. A new room: the peer must be allowed to create one ([`RoomCreation`], `no_such_room`)
//!    and the relay must have room for it (`too_many_rooms`). The room keeps the creator's
//!    secret and fixes its budget for life: the smaller of the relay's cap and the creator's
//!    budget. Its `max_frame` is the relay's, lowered if needed so that a frame still fits in
//!    [`MAX_FRAGMENTS`] fragments of the room budget.
//!
//! Peer ids count up from 1 and are never reused while the relay runs.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::time::Instant;

use lanparty_datapath::Mac;
use lanparty_datapath::wire::overlay::{FRAGMENT_HEADER_LEN, MAX_FRAGMENTS};

use crate::msg::{
    DisplayName, Hello, MAX_PEERS_PER_ROOM, MIN_DATAGRAM_BUDGET, MIN_MAX_FRAME, Message,
    PROTOCOL_VERSION, PeerId, PeerInfo, PeerLeft, Reject, RejectCode, Role, RoomCode, Secret,
    Welcome,
};

/// Whose secret a room uses.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub enum SecretPolicy {
    /// The first member's secret becomes the room's; later members must present it.
    #[default]
    FirstMember,
    /// Every room uses this one relay-wide secret (a private relay).
    Fixed(Secret),
}

/// Who may open a room that does not exist yet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum RoomCreation {
    /// Any peer (a client alone can open a room and wait for others).
    #[default]
    Anyone,
    /// Only a gateway; clients get `no_such_room` until the party's gateway is in.
    GatewayOnly,
}

/// The relay's admission settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Whose secret a room uses.
    pub secret_policy: SecretPolicy,
    /// The operator token gateways must present, when set.
    pub gateway_token: Option<Secret>,
    /// Who may open a room.
    pub room_creation: RoomCreation,
    /// Most rooms at once.
    pub max_rooms: usize,
    /// Most members of one room, gateway included (at most [`MAX_PEERS_PER_ROOM`]).
    pub max_peers_per_room: usize,
    /// Most connections from one source address at once, admitted or not.
    pub max_connections_per_ip: usize,
    /// Most connections at once, admitted or not.
    pub max_connections: usize,
    /// Largest room budget the relay allows (at least [`MIN_DATAGRAM_BUDGET`]).
    pub budget_cap: u16,
    /// Largest frame a room carries (Ethernet header included, FCS excluded).
    pub max_frame: u16,
    /// Let a hello replace an existing member with the same MAC, role, display name and
    /// source address, instead of rejecting it with `mac_in_use`. A client or gateway that
    /// lost its network reconnects before the relay notices its old connection is dead (the
    /// QUIC idle timeout); without this it would be locked out of its own room until then.
    pub reconnect_takeover: bool,
}

/// 1500-byte IP packets plus a 14-byte Ethernet header and one 802.1Q tag.
pub const DEFAULT_MAX_FRAME: u16 = 1518;

impl Default for Config {
    fn default() -> Self {
        Self {
            secret_policy: SecretPolicy::FirstMember,
            gateway_token: None,
            room_creation: RoomCreation::Anyone,
            max_rooms: 1024,
            max_peers_per_room: 32,
            max_connections_per_ip: 16,
            max_connections: 4096,
            budget_cap: 1452,
            max_frame: DEFAULT_MAX_FRAME,
            reconnect_takeover: true,
        }
    }
}

/// A hello that was accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admitted {
    /// The new peer's id.
    pub peer_id: PeerId,
    /// Its room.
    pub room: RoomCode,
    /// To send to the new peer.
    pub welcome: Welcome,
    /// Notices for the room's other members: `peer_left` for the replaced peer (if any),
    /// then `peer_joined` for this one.
    pub notices: Vec<Notice>,
    /// A reconnect took over this older peer (see [`Config::reconnect_takeover`]). It has
    /// already left the room: remove it from the switch and close its connection, without
    /// calling [`Rooms::leave`] for it.
    pub replaced: Option<PeerId>,
}

/// A message the relay must send to one peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// The recipient.
    pub to: PeerId,
    /// The message.
    pub message: Message,
}

/// One member, for status and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerStatus {
    /// Id, role, MAC and name.
    pub info: PeerInfo,
    /// The connection's source address.
    pub source: IpAddr,
    /// When it was admitted.
    pub joined_at: Instant,
    /// The budget it announced (after the connection's limit), at least the room's.
    pub datagram_budget: u16,
}

/// One room, for status and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomStatus {
    /// The room code.
    pub code: RoomCode,
    /// The room's datagram budget.
    pub budget: u16,
    /// The largest frame the room carries.
    pub max_frame: u16,
    /// When its first member created it.
    pub created_at: Instant,
    /// Its members, in order of admission.
    pub peers: Vec<PeerStatus>,
}

#[derive(Debug)]
struct Room {
    secret: Secret,
    budget: u16,
    max_frame: u16,
    created_at: Instant,
    members: Vec<PeerStatus>,
}

impl Room {
    fn status(&self, code: &RoomCode) -> RoomStatus {
        RoomStatus {
            code: code.clone(),
            budget: self.budget,
            max_frame: self.max_frame,
            created_at: self.created_at,
            peers: self.members.clone(),
        }
    }
}

/// The relay's rooms and its admission policy. See the [module docs](self).
#[derive(Debug)]
pub struct Rooms {
    config: Config,
    // BTreeMap so that status listings come out sorted by room code.
    rooms: BTreeMap<RoomCode, Room>,
    peer_rooms: HashMap<PeerId, RoomCode>,
    connections: HashMap<IpAddr, usize>,
    total_connections: usize,
    next_peer_id: u64,
}

impl Rooms {
    /// Empty rooms with `config`; out-of-range settings are brought into range
    /// (`max_peers_per_room` to 1..=[`MAX_PEERS_PER_ROOM`], `budget_cap` to at least
    /// [`MIN_DATAGRAM_BUDGET`], `max_frame` to at least [`MIN_MAX_FRAME`]).
    pub fn new(mut config: Config) -> Self {
        config.max_peers_per_room = config.max_peers_per_room.clamp(1, MAX_PEERS_PER_ROOM);
        config.budget_cap = config.budget_cap.max(MIN_DATAGRAM_BUDGET);
        config.max_frame = config.max_frame.max(MIN_MAX_FRAME);
        Self {
            config,
            rooms: BTreeMap::new(),
            peer_rooms: HashMap::new(),
            connections: HashMap::new(),
            total_connections: 0,
            next_peer_id: 1,
        }
    }

    /// The settings in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Call when a connection from `ip` is accepted, before its hello.
    ///
    /// # Errors
    ///
    /// `too_many_connections` when `ip` or the relay is at its limit; the connection is not
    /// counted then, so do not call [`Rooms::on_connection_closed`] for it.
    pub fn on_connection(&mut self, ip: IpAddr) -> Result<(), Reject> {
        if self.total_connections >= self.config.max_connections {
            return Err(Reject::new(
                RejectCode::TooManyConnections,
                "the relay is at its connection limit; try again later",
            ));
        }
        let count = self.connections.entry(ip).or_insert(0);
        if *count >= self.config.max_connections_per_ip {
            let limit = self.config.max_connections_per_ip;
            return Err(Reject::new(
                RejectCode::TooManyConnections,
                format!("too many connections from {ip} (limit {limit})"),
            ));
        }
        *count += 1;
        self.total_connections += 1;
        Ok(())
    }

    /// Call when a connection that [`Rooms::on_connection`] accepted closes, admitted or not.
    pub fn on_connection_closed(&mut self, ip: IpAddr) {
        if let Some(count) = self.connections.get_mut(&ip) {
            *count -= 1;
            self.total_connections = self.total_connections.saturating_sub(1);
            if *count == 0 {
                self.connections.remove(&ip);
            }
        }
    }

    /// Decides on `hello`, received at `now` on a connection from `source` that can carry
    /// datagrams of `conn_budget` bytes (the QUIC connection's current maximum datagram size).
    ///
    /// # Errors
    ///
    /// The [`Reject`] to send; nothing changed.
    pub fn admit(
        &mut self,
        now: Instant,
        source: IpAddr,
        hello: &Hello,
        conn_budget: u16,
    ) -> Result<Admitted, Reject> {
        hello
            .validate()
            .map_err(|e| Reject::new(e.reject_code(), e.to_string()))?;
        let budget = hello.datagram_budget.min(conn_budget);
        if budget < MIN_DATAGRAM_BUDGET {
            return Err(Reject::new(
                RejectCode::BudgetTooSmall,
                format!(
                    "this connection carries {budget}-byte datagrams; rooms need at least \
                     {MIN_DATAGRAM_BUDGET}"
                ),
            ));
        }
        if hello.role == Role::Gateway
            && let Some(token) = &self.config.gateway_token
            && !hello.gateway_token.as_ref().is_some_and(|t| t.ct_eq(token))
        {
            return Err(Reject::new(
                RejectCode::NotAllowed,
                "this relay requires a valid operator token to open a gateway",
            ));
        }
        if let SecretPolicy::Fixed(fixed) = &self.config.secret_policy
            && !hello.secret.ct_eq(fixed)
        {
            return Err(bad_secret());
        }
        let replaced = match self.rooms.get(&hello.room) {
            Some(room) => self.check_join(room, hello, source, budget)?,
            None => {
                self.check_create(hello)?;
                None
            }
        };
        // A reconnecting peer's old self leaves first, so the others hear "left" then "joined"
        // and the welcome does not list the ghost.
        let mut notices = match replaced {
            Some(old) => self.remove(old, true),
            None => Vec::new(),
        };

        let peer_id = PeerId(self.next_peer_id);
        self.next_peer_id += 1;
        let info = PeerInfo {
            peer_id,
            role: hello.role,
            mac: hello.mac,
            name: hello.name.clone(),
        };
        let config = &self.config;
        let room = self.rooms.entry(hello.room.clone()).or_insert_with(|| {
            let room_budget = budget.min(config.budget_cap);
            Room {
                secret: hello.secret.clone(),
                budget: room_budget,
                max_frame: max_frame_for(config.max_frame, room_budget),
                created_at: now,
                members: Vec::new(),
            }
        });
        let welcome = Welcome {
            version: PROTOCOL_VERSION,
            peer_id,
            room_budget: room.budget,
            max_frame: room.max_frame,
            peers: room.members.iter().map(|m| m.info.clone()).collect(),
        };
        notices.extend(room.members.iter().map(|m| Notice {
            to: m.info.peer_id,
            message: Message::PeerJoined(info.clone()),
        }));
        room.members.push(PeerStatus {
            info,
            source,
            joined_at: now,
            datagram_budget: budget,
        });
        self.peer_rooms.insert(peer_id, hello.room.clone());
        Ok(Admitted {
            peer_id,
            room: hello.room.clone(),
            welcome,
            notices,
            replaced,
        })
    }

    fn check_join(
        &self,
        room: &Room,
        hello: &Hello,
        source: IpAddr,
        budget: u16,
    ) -> Result<Option<PeerId>, Reject> {
        // The secret comes first: nothing about the room is revealed to a stranger.
        if !hello.secret.ct_eq(&room.secret) {
            return Err(bad_secret());
        }
        if budget < room.budget {
            return Err(Reject::new(
                RejectCode::BudgetTooSmall,
                format!(
                    "room {} uses {}-byte datagrams and this connection carries only {budget}",
                    hello.room, room.budget
                ),
            ));
        }
        if self.config.reconnect_takeover
            && let Some(old) = room.members.iter().find(|m| {
                m.info.mac == hello.mac
                    && m.info.role == hello.role
                    && m.info.name == hello.name
                    && m.source == source
            })
        {
            return Ok(Some(old.info.peer_id));
        }
        if room.members.len() >= self.config.max_peers_per_room {
            return Err(Reject::new(
                RejectCode::RoomFull,
                format!(
                    "room {} is full ({} peers)",
                    hello.room, self.config.max_peers_per_room
                ),
            ));
        }
        if hello.role == Role::Gateway && room.members.iter().any(|m| m.info.role == Role::Gateway)
        {
            return Err(Reject::new(
                RejectCode::GatewayAlreadyPresent,
                format!("room {} already has a gateway", hello.room),
            ));
        }
        if let Some(other) = room.members.iter().find(|m| m.info.mac == hello.mac) {
            return Err(mac_in_use(hello.mac, &hello.room, &other.info.name));
        }
        Ok(None)
    }

    fn check_create(&self, hello: &Hello) -> Result<(), Reject> {
        if self.config.room_creation == RoomCreation::GatewayOnly && hello.role != Role::Gateway {
            return Err(Reject::new(
                RejectCode::NoSuchRoom,
                format!(
                    "room {} does not exist; on this relay its gateway opens it",
                    hello.room
                ),
            ));
        }
        if self.rooms.len() >= self.config.max_rooms {
            return Err(Reject::new(
                RejectCode::TooManyRooms,
                "the relay holds as many rooms as it allows; try again later",
            ));
        }
        Ok(())
    }

    /// Removes `peer` from its room and returns `peer_left` notices for the remaining members.
    /// The room goes away with its last member. Unknown ids (already gone) return nothing.
    pub fn leave(&mut self, peer: PeerId) -> Vec<Notice> {
        self.remove(peer, false)
    }

    fn remove(&mut self, peer: PeerId, keep_empty_room: bool) -> Vec<Notice> {
        let Some(code) = self.peer_rooms.remove(&peer) else {
            return Vec::new();
        };
        let Some(room) = self.rooms.get_mut(&code) else {
            return Vec::new();
        };
        room.members.retain(|m| m.info.peer_id != peer);
        if room.members.is_empty() && !keep_empty_room {
            self.rooms.remove(&code);
            return Vec::new();
        }
        room.members
            .iter()
            .map(|m| Notice {
                to: m.info.peer_id,
                message: Message::PeerLeft(PeerLeft { peer_id: peer }),
            })
            .collect()
    }

    /// Every room, sorted by code.
    pub fn rooms(&self) -> Vec<RoomStatus> {
        self.rooms.iter().map(|(code, r)| r.status(code)).collect()
    }

    /// One room.
    pub fn room(&self, code: &RoomCode) -> Option<RoomStatus> {
        self.rooms.get(code).map(|r| r.status(code))
    }

    /// The room `peer` is in.
    pub fn room_of(&self, peer: PeerId) -> Option<&RoomCode> {
        self.peer_rooms.get(&peer)
    }

    /// Ids of the members of room `code`, in order of admission.
    pub fn members(&self, code: &RoomCode) -> impl Iterator<Item = PeerId> + '_ {
        self.rooms
            .get(code)
            .into_iter()
            .flat_map(|r| r.members.iter().map(|m| m.info.peer_id))
    }

    /// Number of rooms.
    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }

    /// Number of admitted peers.
    pub fn peer_count(&self) -> usize {
        self.peer_rooms.len()
    }

    /// Number of open connections, admitted or not.
    pub fn connection_count(&self) -> usize {
        self.total_connections
    }

    /// Open connections from `ip`.
    pub fn connections_from(&self, ip: IpAddr) -> usize {
        self.connections.get(&ip).copied().unwrap_or(0)
    }
}

/// The room's largest frame: the relay's setting, lowered so that it fits in
/// [`MAX_FRAGMENTS`] fragments of `budget` bytes.
fn max_frame_for(configured: u16, budget: u16) -> u16 {
    let fits = usize::from(MAX_FRAGMENTS) * usize::from(budget).saturating_sub(FRAGMENT_HEADER_LEN);
    configured.min(u16::try_from(fits).unwrap_or(u16::MAX))
}

fn bad_secret() -> Reject {
    Reject::new(RejectCode::BadSecret, "room secret rejected")
}

fn mac_in_use(mac: Mac, room: &RoomCode, holder: &DisplayName) -> Reject {
    Reject::new(
        RejectCode::MacInUse,
        format!("MAC {mac} is already in room {room} (used by {holder})"),
    )
}

#[cfg(test)]
mod tests;
