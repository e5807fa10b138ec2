//! Control messages (hello, welcome, reject, peer joined/left, stats, disconnect) and their
//! validation.
//!
//! # Representation
//!
//! Every message is one JSON object, internally tagged by `"type"`:
//! `{"type":"hello","version":1,...}`. The field names and the tag values are the
//! `snake_case` names of the Rust fields and variants. docs/PROTOCOL.md carries one example of
//! every message; `tests/protocol_examples.rs` decodes, validates and re-encodes each of them.
//!
//! # Rules a receiver applies
//!
//! - **Unknown message types are an error** ([`ValidationError`] never sees them; the decoder
//!   reports [`crate::codec::DecodeError::UnknownType`]).
//! - **Unknown fields are ignored.** No struct uses `#[serde(deny_unknown_fields)]`, on purpose:
//!   a later minor revision may add optional fields (a feature list, a client version string)
//!   without a version bump, and an older relay keeps admitting newer clients. Anything that
//!   changes the meaning of an existing field bumps [`PROTOCOL_VERSION`] instead.
//! - **Unknown versions are rejected.** A hello whose `version` is not [`PROTOCOL_VERSION`]
//!   gets a [`Reject`] with code [`RejectCode::BadVersion`] and a reason that names both
//!   versions ([`ValidationError::Version`]).
//! - **Unknown reject codes** from a newer relay decode as [`RejectCode::Unknown`], so a client
//!   still shows the human-readable reason.
//!
//! # Invariants carried by types
//!
//! [`RoomCode`], [`DisplayName`], [`Secret`] and [`PeerId`] can only hold valid values: their
//! constructors (and their `Deserialize` impls) check the rules. Checks that involve more than
//! one field or the role (a peer's MAC, budgets, list sizes, reason lengths) live in
//! [`Message::validate`]; the decoder runs it on every message, so a decoded message is a valid
//! message.
//!
//! Room codes are **case-insensitive**: [`RoomCode::new`] folds ASCII letters to lowercase, so
//! `LAN-Party` and `lan-party` name the same room and the relay prints the lowercase form.

use std::collections::BTreeMap;
use std::fmt;

use lanparty_datapath::Mac;
use lanparty_datapath::mac::MacError;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use subtle::ConstantTimeEq;

/// The control protocol version this code speaks.
pub const PROTOCOL_VERSION: u16 = 1;
/// Smallest overlay datagram budget a peer may announce, in bytes.
///
/// QUIC guarantees 1200-byte UDP payloads; after the short header (up to a 20-byte connection
/// id and a 4-byte packet number), the AEAD tag and the DATAGRAM frame header about 1150 bytes
/// remain. 1100 leaves a margin and still lets a 1500-byte frame travel in two fragments.
pub const MIN_DATAGRAM_BUDGET: u16 = 1100;
/// Largest overlay datagram budget (the field is a `u16`).
pub const MAX_DATAGRAM_BUDGET: u16 = u16::MAX;
/// Smallest `max_frame` a welcome may announce: a minimum-size Ethernet frame without FCS.
pub const MIN_MAX_FRAME: u16 = 60;
/// Most peers a room may hold; a welcome listing every other member stays well below
/// [`crate::codec::MAX_FRAME_LEN`] even with 32-character names.
pub const MAX_PEERS_PER_ROOM: usize = 64;
/// Longest `reason` in a reject or disconnect, in bytes.
pub const MAX_REASON_LEN: usize = 256;
/// Most drop reasons in one stats message.
pub const MAX_DROP_REASONS: usize = 32;
/// Longest drop reason name, in bytes (`[a-z0-9_]`).
pub const MAX_DROP_REASON_LEN: usize = 32;

/// Shortest room code, in characters.
pub const MIN_ROOM_CODE_LEN: usize = 3;
/// Longest room code, in characters.
pub const MAX_ROOM_CODE_LEN: usize = 32;
/// Longest display name, in characters (Unicode scalar values).
pub const MAX_NAME_LEN: usize = 32;
/// Shortest secret, in bytes.
pub const MIN_SECRET_LEN: usize = 8;
/// Longest secret, in bytes.
pub const MAX_SECRET_LEN: usize = 128;

// ---------------------------------------------------------------------------------------------
// Newtypes

/// Why a string is not a room code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RoomCodeError {
    /// Too short or too long.
    #[error("room code must be 3 to 32 characters long, got {len}")]
    Length {
        /// Length in characters.
        len: usize,
    },
    /// A character outside `A-Z a-z 0-9 - _`.
    #[error("room code may only hold letters, digits, '-' and '_', got {ch:?}")]
    Char {
        /// The first offending character.
        ch: char,
    },
}

/// A room code: 3 to 32 characters from `A-Z a-z 0-9 - _`, case-insensitive (stored
/// lowercase).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomCode(String);

impl RoomCode {
    /// Checks `text` and folds it to lowercase.
    ///
    /// # Errors
    ///
    /// [`RoomCodeError`] when the length or a character breaks the rule.
    pub fn new(text: &str) -> Result<Self, RoomCodeError> {
        if let Some(ch) = text
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
        {
            return Err(RoomCodeError::Char { ch });
        }
        // All characters are ASCII now, so bytes == characters.
        if !(MIN_ROOM_CODE_LEN..=MAX_ROOM_CODE_LEN).contains(&text.len()) {
            return Err(RoomCodeError::Length { len: text.len() });
        }
        Ok(Self(text.to_ascii_lowercase()))
    }

    /// The canonical (lowercase) form.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RoomCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RoomCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RoomCode({})", self.0)
    }
}

impl std::str::FromStr for RoomCode {
    type Err = RoomCodeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

/// Why a string is not a display name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NameError {
    /// Empty or longer than 32 characters.
    #[error("display name must be 1 to 32 characters long, got {len}")]
    Length {
        /// Length in characters.
        len: usize,
    },
    /// Holds a control character (newline, escape, ...).
    #[error("display name may not hold control characters")]
    ControlChar,
}

/// A display name: 1 to 32 characters (Unicode scalar values), no control characters.
/// Whitespace is kept as given.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DisplayName(String);

impl DisplayName {
    /// Checks `text`.
    ///
    /// # Errors
    ///
    /// [`NameError`] when the length or a character breaks the rule.
    pub fn new(text: &str) -> Result<Self, NameError> {
        let len = text.chars().count();
        if !(1..=MAX_NAME_LEN).contains(&len) {
            return Err(NameError::Length { len });
        }
        if text.chars().any(char::is_control) {
            return Err(NameError::ControlChar);
        }
        Ok(Self(text.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DisplayName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for DisplayName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DisplayName({:?})", self.0)
    }
}

/// Why a string is not a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    /// Shorter than 8 or longer than 128 bytes.
    #[error("secret must be 8 to 128 bytes long, got {len}")]
    Length {
        /// Length in bytes.
        len: usize,
    },
}

/// A room secret or gateway token: 8 to 128 bytes of UTF-8.
///
/// `Debug` and `Display` print `<redacted>`, so a secret never reaches a log by accident.
/// Equality is constant-time: see [`Secret::ct_eq`]. Only serialization (the hello on the wire)
/// and [`Secret::expose`] reveal it.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// Checks the length of `text`.
    ///
    /// # Errors
    ///
    /// [`SecretError::Length`].
    pub fn new(text: &str) -> Result<Self, SecretError> {
        if !(MIN_SECRET_LEN..=MAX_SECRET_LEN).contains(&text.len()) {
            return Err(SecretError::Length { len: text.len() });
        }
        Ok(Self(text.to_owned()))
    }

    /// The secret itself, for the one place that must send it (the hello). Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Constant-time comparison: the time taken depends on neither the contents nor the
    /// lengths of the two secrets. Both are zero-padded to [`MAX_SECRET_LEN`] and compared in
    /// full, and the lengths are compared with `subtle` too.
    pub fn ct_eq(&self, other: &Self) -> bool {
        let pad = |s: &str| {
            let mut buf = [0u8; MAX_SECRET_LEN];
            let bytes = s.as_bytes();
            // Secrets are at most MAX_SECRET_LEN bytes by construction.
            let n = bytes.len().min(MAX_SECRET_LEN);
            buf[..n].copy_from_slice(&bytes[..n]);
            buf
        };
        let (a, b) = (pad(&self.0), pad(&other.0));
        let same_len = (self.0.len() as u64).ct_eq(&(other.0.len() as u64));
        bool::from(a[..].ct_eq(&b[..]) & same_len)
    }
}

impl PartialEq for Secret {
    /// Constant-time, see [`Secret::ct_eq`].
    fn eq(&self, other: &Self) -> bool {
        self.ct_eq(other)
    }
}

impl Eq for Secret {}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A peer's id within the relay, assigned at admission. Never 0.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct PeerId(pub u64);

impl PeerId {
    /// Checks that `id` is not 0 (0 is reserved as "no peer").
    ///
    /// # Errors
    ///
    /// [`ValidationError::ZeroPeerId`].
    pub fn new(id: u64) -> Result<Self, ValidationError> {
        if id == 0 {
            Err(ValidationError::ZeroPeerId)
        } else {
            Ok(Self(id))
        }
    }
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

macro_rules! string_serde {
    ($ty:ident, $get:ident) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.$get())
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = std::borrow::Cow::<'de, str>::deserialize(d)?;
                Self::new(&text).map_err(serde::de::Error::custom)
            }
        }
    };
}

string_serde!(RoomCode, as_str);
string_serde!(DisplayName, as_str);
string_serde!(Secret, expose);

impl Serialize for PeerId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

impl<'de> Deserialize<'de> for PeerId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Self::new(u64::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

fn serialize_mac<S: Serializer>(mac: &Mac, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(mac)
}

// ---------------------------------------------------------------------------------------------
// Messages

/// A peer's role in a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// A player's PC with one virtual adapter and one MAC.
    Client,
    /// The box that bridges the party LAN into the room; at most one per room.
    Gateway,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Client => "client",
            Self::Gateway => "gateway",
        })
    }
}

/// Peer → relay, first message on the control stream: asks to join a room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Hello {
    /// The protocol version the peer speaks ([`PROTOCOL_VERSION`]).
    pub version: u16,
    /// Client or gateway.
    pub role: Role,
    /// The room to join; the first member creates it.
    pub room: RoomCode,
    /// The peer's MAC: a client's adapter MAC, or the gateway's own NIC MAC. Must be a valid
    /// peer identity ([`Mac::validate_peer`]).
    #[serde(serialize_with = "serialize_mac")]
    pub mac: Mac,
    /// The room secret.
    pub secret: Secret,
    /// The operator token a relay may require from gateways.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway_token: Option<Secret>,
    /// The overlay datagram size this peer can carry, in bytes (at least
    /// [`MIN_DATAGRAM_BUDGET`]).
    pub datagram_budget: u16,
    /// The name other peers and the relay's status show.
    pub name: DisplayName,
}

/// One member of a room, as other members see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PeerInfo {
    /// The member's id.
    pub peer_id: PeerId,
    /// Client or gateway.
    pub role: Role,
    /// The MAC the member was admitted with.
    #[serde(serialize_with = "serialize_mac")]
    pub mac: Mac,
    /// The member's display name.
    pub name: DisplayName,
}

/// Relay → peer: the hello was accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Welcome {
    /// The protocol version the relay speaks ([`PROTOCOL_VERSION`]).
    pub version: u16,
    /// The id the relay gave this peer.
    pub peer_id: PeerId,
    /// The overlay datagram size every member of the room uses, fixed when the room was
    /// created, before any frame flows.
    pub room_budget: u16,
    /// The largest Ethernet frame (header included, FCS excluded) the room carries.
    pub max_frame: u16,
    /// The other members of the room at admission time (not this peer).
    pub peers: Vec<PeerInfo>,
}

/// Why a hello was refused, machine-readable. Serialized as its `snake_case` name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RejectCode {
    /// The hello's protocol version is not the relay's.
    BadVersion,
    /// The room code breaks the room code rule.
    BadRoomCode,
    /// The room exists and the secret does not match, or the secret is malformed.
    BadSecret,
    /// The room already holds the most peers the relay allows.
    RoomFull,
    /// The room already has its gateway.
    GatewayAlreadyPresent,
    /// Another member of the room uses this MAC.
    MacInUse,
    /// The MAC cannot identify a peer (zero, broadcast or multicast) or is malformed.
    BadMac,
    /// The relay does not allow this (a gateway without the right operator token, a client
    /// opening a room on a relay where only gateways open rooms).
    NotAllowed,
    /// The room does not exist and this peer may not create it.
    NoSuchRoom,
    /// The relay holds the most rooms it allows.
    TooManyRooms,
    /// Too many connections from this address, or in total.
    TooManyConnections,
    /// The hello is malformed (not JSON, missing fields, bad name, ...).
    BadHello,
    /// The peer's datagram budget is below the protocol minimum or the room's budget.
    BudgetTooSmall,
    /// The handshake did not finish in time.
    HandshakeTimeout,
    /// A code this version does not know (sent by a newer relay). Encodes as `"unknown"`.
    Unknown,
}

impl RejectCode {
    /// Every code, in documentation order.
    pub const ALL: [Self; 15] = [
        Self::BadVersion,
        Self::BadRoomCode,
        Self::BadSecret,
        Self::RoomFull,
        Self::GatewayAlreadyPresent,
        Self::MacInUse,
        Self::BadMac,
        Self::NotAllowed,
        Self::NoSuchRoom,
        Self::TooManyRooms,
        Self::TooManyConnections,
        Self::BadHello,
        Self::BudgetTooSmall,
        Self::HandshakeTimeout,
        Self::Unknown,
    ];

    /// The wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::BadVersion => "bad_version",
            Self::BadRoomCode => "bad_room_code",
            Self::BadSecret => "bad_secret",
            Self::RoomFull => "room_full",
            Self::GatewayAlreadyPresent => "gateway_already_present",
            Self::MacInUse => "mac_in_use",
            Self::BadMac => "bad_mac",
            Self::NotAllowed => "not_allowed",
            Self::NoSuchRoom => "no_such_room",
            Self::TooManyRooms => "too_many_rooms",
            Self::TooManyConnections => "too_many_connections",
            Self::BadHello => "bad_hello",
            Self::BudgetTooSmall => "budget_too_small",
            Self::HandshakeTimeout => "handshake_timeout",
            Self::Unknown => "unknown",
        }
    }

    /// The code for a wire name; [`RejectCode::Unknown`] for names this version does not know.
    pub fn from_wire(name: &str) -> Self {
        Self::ALL
            .into_iter()
            .find(|c| c.as_str() == name)
            .unwrap_or(Self::Unknown)
    }
}

impl fmt::Display for RejectCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for RejectCode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for RejectCode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = std::borrow::Cow::<'de, str>::deserialize(d)?;
        Ok(Self::from_wire(&name))
    }
}

/// Relay → peer: the hello was refused. The relay closes the stream after sending it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reject {
    /// What went wrong, for programs.
    pub code: RejectCode,
    /// What went wrong, for people (at most [`MAX_REASON_LEN`] bytes).
    pub reason: String,
}

impl Reject {
    /// A reject with `code` and `reason`, the reason cut to [`MAX_REASON_LEN`] bytes on a
    /// character boundary.
    pub fn new(code: RejectCode, reason: impl Into<String>) -> Self {
        let mut reason = reason.into();
        truncate_on_char_boundary(&mut reason, MAX_REASON_LEN);
        Self { code, reason }
    }
}

impl fmt::Display for Reject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.reason)
    }
}

impl std::error::Error for Reject {}

fn truncate_on_char_boundary(s: &mut String, max: usize) {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
}

/// Relay → peer: a member left the room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PeerLeft {
    /// The member that left.
    pub peer_id: PeerId,
}

/// Relay → peer: every member's path now carries DATAGRAMs of `budget` bytes.
///
/// The welcome's `room_budget` is fixed before frames flow, usually at the size a path carries
/// before path MTU discovery (about 1162 bytes), so a full 1514-byte frame takes two fragments
/// and TCP's MSS is clamped to fit that size. When PMTUD has raised the DATAGRAM size of every
/// member's connection, the relay sends the smallest of them here, and again whenever it
/// changes (a member joins with a smaller path, or a path shrinks). A peer fragments and clamps
/// to this size, never to less than the welcome's `room_budget` and never to more than its own
/// connection carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomBudget {
    /// Bytes of DATAGRAM payload every member can receive (at least [`MIN_DATAGRAM_BUDGET`]).
    pub budget: u16,
}

/// Counters of one connection. From a peer: its own view (in = received from the relay).
/// From the relay: the relay's view of this peer's connection (in = received from the peer).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Frames received.
    pub frames_in: u64,
    /// Frames sent.
    pub frames_out: u64,
    /// Frame bytes received.
    pub bytes_in: u64,
    /// Frame bytes sent.
    pub bytes_out: u64,
    /// Frames dropped, by reason (`[a-z0-9_]`, at most [`MAX_DROP_REASONS`] entries).
    #[serde(default)]
    pub drops: BTreeMap<String, u64>,
}

/// Either side: the sender is closing the connection, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disconnect {
    /// Why, for people (at most [`MAX_REASON_LEN`] bytes).
    pub reason: String,
}

/// One control message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Message {
    /// Peer → relay.
    Hello(Hello),
    /// Relay → peer.
    Welcome(Welcome),
    /// Relay → peer.
    Reject(Reject),
    /// Relay → peer: a new member joined the room.
    PeerJoined(PeerInfo),
    /// Relay → peer.
    PeerLeft(PeerLeft),
    /// Relay → peer: the DATAGRAM size every member's path carries now.
    RoomBudget(RoomBudget),
    /// Either direction.
    Stats(Stats),
    /// Either direction.
    Disconnect(Disconnect),
}

impl Message {
    /// Every `"type"` tag, in documentation order.
    pub const TYPES: [&'static str; 8] = [
        "hello",
        "welcome",
        "reject",
        "peer_joined",
        "peer_left",
        "room_budget",
        "stats",
        "disconnect",
    ];

    /// This message's `"type"` tag.
    pub const fn type_name(&self) -> &'static str {
        match self {
            Self::Hello(_) => "hello",
            Self::Welcome(_) => "welcome",
            Self::Reject(_) => "reject",
            Self::PeerJoined(_) => "peer_joined",
            Self::PeerLeft(_) => "peer_left",
            Self::RoomBudget(_) => "room_budget",
            Self::Stats(_) => "stats",
            Self::Disconnect(_) => "disconnect",
        }
    }

    /// True for messages a peer may send to the relay (hello, stats, disconnect).
    pub const fn is_from_peer(&self) -> bool {
        matches!(self, Self::Hello(_) | Self::Stats(_) | Self::Disconnect(_))
    }

    /// True for messages the relay may send to a peer (all but hello).
    pub const fn is_from_relay(&self) -> bool {
        !matches!(self, Self::Hello(_))
    }

    /// Checks the rules that the field types alone do not carry. The decoder runs this on every
    /// message it returns.
    ///
    /// # Errors
    ///
    /// The first [`ValidationError`] found.
    pub fn validate(&self) -> Result<(), ValidationError> {
        match self {
            Self::Hello(h) => h.validate(),
            Self::Welcome(w) => w.validate(),
            Self::Reject(r) => check_reason(&r.reason),
            Self::PeerJoined(p) => p.validate(),
            Self::PeerLeft(_) => Ok(()),
            Self::RoomBudget(b) => check_budget(b.budget),
            Self::Stats(s) => s.validate(),
            Self::Disconnect(d) => check_reason(&d.reason),
        }
    }
}

impl From<Hello> for Message {
    fn from(m: Hello) -> Self {
        Self::Hello(m)
    }
}
impl From<Welcome> for Message {
    fn from(m: Welcome) -> Self {
        Self::Welcome(m)
    }
}
impl From<Reject> for Message {
    fn from(m: Reject) -> Self {
        Self::Reject(m)
    }
}
impl From<RoomBudget> for Message {
    fn from(m: RoomBudget) -> Self {
        Self::RoomBudget(m)
    }
}
impl From<Stats> for Message {
    fn from(m: Stats) -> Self {
        Self::Stats(m)
    }
}
impl From<Disconnect> for Message {
    fn from(m: Disconnect) -> Self {
        Self::Disconnect(m)
    }
}

// ---------------------------------------------------------------------------------------------
// Validation

/// A message, or one of its fields, breaks a protocol rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ValidationError {
    /// The message's protocol version is not ours.
    #[error("protocol version {theirs} is not supported: this side speaks version {ours}")]
    Version {
        /// [`PROTOCOL_VERSION`].
        ours: u16,
        /// The message's version.
        theirs: u64,
    },
    /// Bad room code.
    #[error(transparent)]
    RoomCode(#[from] RoomCodeError),
    /// Bad display name.
    #[error(transparent)]
    Name(#[from] NameError),
    /// Bad room secret.
    #[error("bad room secret: {0}")]
    Secret(SecretError),
    /// Bad gateway token.
    #[error("bad gateway token: {0}")]
    GatewayToken(SecretError),
    /// The MAC is malformed or cannot identify a peer of this role.
    #[error("{role} MAC: {source}")]
    Mac {
        /// The role the MAC was meant to identify.
        role: Role,
        /// What is wrong with it.
        source: MacError,
    },
    /// Peer id 0.
    #[error("peer id 0 is reserved")]
    ZeroPeerId,
    /// A datagram budget below the protocol minimum.
    #[error("datagram budget {budget} is below the minimum of {min} bytes")]
    BudgetTooSmall {
        /// The budget given.
        budget: u16,
        /// [`MIN_DATAGRAM_BUDGET`].
        min: u16,
    },
    /// A welcome's `max_frame` below [`MIN_MAX_FRAME`].
    #[error("max frame {max_frame} is below the minimum of {min} bytes")]
    MaxFrameTooSmall {
        /// The value given.
        max_frame: u16,
        /// [`MIN_MAX_FRAME`].
        min: u16,
    },
    /// A welcome lists more peers than a room may hold.
    #[error("welcome lists {count} peers, more than {max}")]
    TooManyPeers {
        /// Peers listed.
        count: usize,
        /// [`MAX_PEERS_PER_ROOM`].
        max: usize,
    },
    /// A welcome lists the same peer id twice, or lists the receiver itself.
    #[error("peer {0} is listed twice")]
    DuplicatePeer(PeerId),
    /// A reason longer than [`MAX_REASON_LEN`].
    #[error("reason is {len} bytes, more than {max}")]
    ReasonTooLong {
        /// Its length in bytes.
        len: usize,
        /// [`MAX_REASON_LEN`].
        max: usize,
    },
    /// A stats message with too many drop reasons or a malformed reason name.
    #[error("bad drop reasons in stats: {0}")]
    DropReasons(&'static str),
}

impl ValidationError {
    /// The reject code the relay answers a hello with when it fails this way.
    pub const fn reject_code(&self) -> RejectCode {
        match self {
            Self::Version { .. } => RejectCode::BadVersion,
            Self::RoomCode(_) => RejectCode::BadRoomCode,
            Self::Secret(_) => RejectCode::BadSecret,
            Self::GatewayToken(_) => RejectCode::NotAllowed,
            Self::Mac { .. } => RejectCode::BadMac,
            Self::BudgetTooSmall { .. } => RejectCode::BudgetTooSmall,
            _ => RejectCode::BadHello,
        }
    }
}

fn check_version(version: u16) -> Result<(), ValidationError> {
    if version == PROTOCOL_VERSION {
        Ok(())
    } else {
        Err(ValidationError::Version {
            ours: PROTOCOL_VERSION,
            theirs: version.into(),
        })
    }
}

fn check_budget(budget: u16) -> Result<(), ValidationError> {
    if budget < MIN_DATAGRAM_BUDGET {
        Err(ValidationError::BudgetTooSmall {
            budget,
            min: MIN_DATAGRAM_BUDGET,
        })
    } else {
        Ok(())
    }
}

fn check_mac(role: Role, mac: Mac) -> Result<(), ValidationError> {
    // Both roles need a unicast, non-zero MAC: a client's is its adapter's address, a
    // gateway's is its NIC's, and the switch keys both in its table.
    mac.validate_peer()
        .map_err(|source| ValidationError::Mac { role, source })
}

fn check_reason(reason: &str) -> Result<(), ValidationError> {
    if reason.len() > MAX_REASON_LEN {
        Err(ValidationError::ReasonTooLong {
            len: reason.len(),
            max: MAX_REASON_LEN,
        })
    } else {
        Ok(())
    }
}

impl Hello {
    /// Checks version, MAC and budget.
    ///
    /// # Errors
    ///
    /// [`ValidationError::Version`], [`ValidationError::Mac`] or
    /// [`ValidationError::BudgetTooSmall`].
    pub fn validate(&self) -> Result<(), ValidationError> {
        check_version(self.version)?;
        check_mac(self.role, self.mac)?;
        check_budget(self.datagram_budget)
    }
}

impl PeerInfo {
    /// Checks the MAC.
    ///
    /// # Errors
    ///
    /// [`ValidationError::Mac`].
    pub fn validate(&self) -> Result<(), ValidationError> {
        check_mac(self.role, self.mac)
    }
}

impl Welcome {
    /// Checks version, budget, `max_frame` and the peer list.
    ///
    /// # Errors
    ///
    /// The first [`ValidationError`] found.
    pub fn validate(&self) -> Result<(), ValidationError> {
        check_version(self.version)?;
        check_budget(self.room_budget)?;
        if self.max_frame < MIN_MAX_FRAME {
            return Err(ValidationError::MaxFrameTooSmall {
                max_frame: self.max_frame,
                min: MIN_MAX_FRAME,
            });
        }
        if self.peers.len() > MAX_PEERS_PER_ROOM {
            return Err(ValidationError::TooManyPeers {
                count: self.peers.len(),
                max: MAX_PEERS_PER_ROOM,
            });
        }
        let mut seen = vec![self.peer_id];
        for peer in &self.peers {
            peer.validate()?;
            if seen.contains(&peer.peer_id) {
                return Err(ValidationError::DuplicatePeer(peer.peer_id));
            }
            seen.push(peer.peer_id);
        }
        Ok(())
    }
}

impl Stats {
    /// Checks the drop reasons: at most [`MAX_DROP_REASONS`], each 1 to
    /// [`MAX_DROP_REASON_LEN`] bytes of `[a-z0-9_]`.
    ///
    /// # Errors
    ///
    /// [`ValidationError::DropReasons`].
    pub fn validate(&self) -> Result<(), ValidationError> {
        if self.drops.len() > MAX_DROP_REASONS {
            return Err(ValidationError::DropReasons("too many drop reasons"));
        }
        for reason in self.drops.keys() {
            if reason.is_empty() || reason.len() > MAX_DROP_REASON_LEN {
                return Err(ValidationError::DropReasons(
                    "a drop reason must be 1 to 32 bytes",
                ));
            }
            if !reason
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            {
                return Err(ValidationError::DropReasons(
                    "a drop reason may only hold a-z, 0-9 and '_'",
                ));
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Deserialization: a raw mirror with plain strings, then typed conversion, so that the decoder
// reports bad field values as a typed `ValidationError` rather than a serde message.

pub(crate) mod raw {
    use super::*;

    #[derive(Deserialize)]
    #[serde(tag = "type", rename_all = "snake_case")]
    pub(crate) enum RawMessage {
        Hello(RawHello),
        Welcome(RawWelcome),
        Reject(Reject),
        PeerJoined(RawPeerInfo),
        PeerLeft(RawPeerLeft),
        RoomBudget(RoomBudget),
        Stats(Stats),
        Disconnect(Disconnect),
    }

    #[derive(Deserialize)]
    pub(crate) struct RawHello {
        pub(crate) version: u16,
        role: Role,
        room: String,
        mac: String,
        secret: String,
        #[serde(default)]
        gateway_token: Option<String>,
        datagram_budget: u16,
        name: String,
    }

    #[derive(Deserialize)]
    pub(crate) struct RawPeerInfo {
        peer_id: u64,
        role: Role,
        mac: String,
        name: String,
    }

    #[derive(Deserialize)]
    pub(crate) struct RawWelcome {
        pub(crate) version: u16,
        peer_id: u64,
        room_budget: u16,
        max_frame: u16,
        peers: Vec<RawPeerInfo>,
    }

    #[derive(Deserialize)]
    pub(crate) struct RawPeerLeft {
        peer_id: u64,
    }

    fn mac(role: Role, text: &str) -> Result<Mac, ValidationError> {
        text.parse()
            .map_err(|source| ValidationError::Mac { role, source })
    }

    impl TryFrom<RawPeerInfo> for PeerInfo {
        type Error = ValidationError;
        fn try_from(r: RawPeerInfo) -> Result<Self, ValidationError> {
            Ok(Self {
                peer_id: PeerId::new(r.peer_id)?,
                role: r.role,
                mac: mac(r.role, &r.mac)?,
                name: DisplayName::new(&r.name)?,
            })
        }
    }

    impl TryFrom<RawMessage> for Message {
        type Error = ValidationError;
        fn try_from(raw: RawMessage) -> Result<Self, ValidationError> {
            Ok(match raw {
                RawMessage::Hello(h) => Self::Hello(Hello {
                    version: h.version,
                    role: h.role,
                    room: RoomCode::new(&h.room)?,
                    mac: mac(h.role, &h.mac)?,
                    secret: Secret::new(&h.secret).map_err(ValidationError::Secret)?,
                    gateway_token: h
                        .gateway_token
                        .as_deref()
                        .map(Secret::new)
                        .transpose()
                        .map_err(ValidationError::GatewayToken)?,
                    datagram_budget: h.datagram_budget,
                    name: DisplayName::new(&h.name)?,
                }),
                RawMessage::Welcome(w) => Self::Welcome(Welcome {
                    version: w.version,
                    peer_id: PeerId::new(w.peer_id)?,
                    room_budget: w.room_budget,
                    max_frame: w.max_frame,
                    peers: w
                        .peers
                        .into_iter()
                        .map(PeerInfo::try_from)
                        .collect::<Result<_, _>>()?,
                }),
                RawMessage::Reject(r) => Self::Reject(r),
                RawMessage::PeerJoined(p) => Self::PeerJoined(p.try_into()?),
                RawMessage::PeerLeft(p) => Self::PeerLeft(PeerLeft {
                    peer_id: PeerId::new(p.peer_id)?,
                }),
                RawMessage::RoomBudget(b) => Self::RoomBudget(b),
                RawMessage::Stats(s) => Self::Stats(s),
                RawMessage::Disconnect(d) => Self::Disconnect(d),
            })
        }
    }
}

impl<'de> Deserialize<'de> for Message {
    /// Deserializes and converts field values; does not run [`Message::validate`].
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = raw::RawMessage::deserialize(d)?;
        Self::try_from(raw).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_codes_fold_case_and_check_charset_and_length() {
        assert_eq!(
            RoomCode::new("LAN-Party_1").unwrap().as_str(),
            "lan-party_1"
        );
        assert_eq!(RoomCode::new("abc").unwrap(), RoomCode::new("ABC").unwrap());
        assert_eq!(RoomCode::new("ab"), Err(RoomCodeError::Length { len: 2 }));
        assert!(RoomCode::new(&"a".repeat(32)).is_ok());
        assert_eq!(
            RoomCode::new(&"a".repeat(33)),
            Err(RoomCodeError::Length { len: 33 })
        );
        assert_eq!(
            RoomCode::new("lan party"),
            Err(RoomCodeError::Char { ch: ' ' })
        );
        assert_eq!(RoomCode::new("räum"), Err(RoomCodeError::Char { ch: 'ä' }));
    }

    #[test]
    fn display_names_count_characters_and_refuse_control_characters() {
        assert!(DisplayName::new("Ünïcødé 🎮").is_ok());
        assert!(DisplayName::new(&"é".repeat(32)).is_ok());
        assert_eq!(
            DisplayName::new(&"é".repeat(33)),
            Err(NameError::Length { len: 33 })
        );
        assert_eq!(DisplayName::new(""), Err(NameError::Length { len: 0 }));
        assert_eq!(DisplayName::new("a\nb"), Err(NameError::ControlChar));
        assert_eq!(DisplayName::new("a\u{1b}[31m"), Err(NameError::ControlChar));
    }

    #[test]
    fn secrets_are_redacted_and_length_checked() {
        let s = Secret::new("hunter2hunter2").unwrap();
        assert_eq!(format!("{s}"), "<redacted>");
        assert_eq!(format!("{s:?}"), "<redacted>");
        assert!(!format!("{:?}", Some(&s)).contains("hunter"));
        assert_eq!(
            Secret::new("short").err(),
            Some(SecretError::Length { len: 5 })
        );
        assert!(Secret::new(&"x".repeat(128)).is_ok());
        assert!(Secret::new(&"x".repeat(129)).is_err());
    }

    #[test]
    fn secret_equality_compares_content_and_length() {
        let a = Secret::new("abcdefgh").unwrap();
        assert!(a.ct_eq(&Secret::new("abcdefgh").unwrap()));
        assert!(!a.ct_eq(&Secret::new("abcdefgi").unwrap()));
        // A prefix padded with zeros must not equal the longer secret.
        assert!(!a.ct_eq(&Secret::new("abcdefgh\0").unwrap()));
        assert_ne!(a, Secret::new("abcdefghi").unwrap());
    }

    #[test]
    fn hello_debug_does_not_leak_the_secret() {
        let hello = Hello {
            version: 1,
            role: Role::Gateway,
            room: RoomCode::new("abc").unwrap(),
            mac: "02:00:00:00:00:01".parse().unwrap(),
            secret: Secret::new("topsecret-room").unwrap(),
            gateway_token: Some(Secret::new("topsecret-token").unwrap()),
            datagram_budget: 1200,
            name: DisplayName::new("gw").unwrap(),
        };
        let text = format!("{hello:?}");
        assert!(!text.contains("topsecret"), "{text}");
    }

    #[test]
    fn unknown_reject_codes_decode_as_unknown() {
        let r: Reject = serde_json::from_str(r#"{"code":"meteor_strike","reason":"x"}"#).unwrap();
        assert_eq!(r.code, RejectCode::Unknown);
        for code in RejectCode::ALL {
            assert_eq!(RejectCode::from_wire(code.as_str()), code);
        }
    }

    #[test]
    fn reject_reasons_are_cut_on_a_character_boundary() {
        let r = Reject::new(RejectCode::BadHello, "é".repeat(200));
        assert!(r.reason.len() <= MAX_REASON_LEN);
        assert_eq!(r.reason.chars().count(), MAX_REASON_LEN / 2);
        assert!(Message::Reject(r).validate().is_ok());
    }

    #[test]
    fn bad_version_error_names_both_versions() {
        let e = check_version(7).unwrap_err();
        let text = e.to_string();
        assert!(text.contains('7') && text.contains('1'), "{text}");
        assert_eq!(e.reject_code(), RejectCode::BadVersion);
    }
}
