//! Admission scenarios, one or more per reject code.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use super::*;
use crate::codec::{Decoder, encode};
use crate::msg::MAX_DATAGRAM_BUDGET;

const ROOM_SECRET: &str = "correct horse battery";
const TOKEN: &str = "operator-token-1";

fn ip(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(198, 18, 0, last))
}

fn mac(last: u8) -> Mac {
    Mac([0x02, 0, 0, 0, 0, last])
}

fn hello(role: Role, room: &str, mac_last: u8, name: &str) -> Hello {
    Hello {
        version: PROTOCOL_VERSION,
        role,
        room: RoomCode::new(room).unwrap(),
        mac: mac(mac_last),
        secret: Secret::new(ROOM_SECRET).unwrap(),
        gateway_token: None,
        datagram_budget: 1400,
        name: DisplayName::new(name).unwrap(),
    }
}

fn client(mac_last: u8, name: &str) -> Hello {
    hello(Role::Client, "lan-party", mac_last, name)
}

fn gateway(mac_last: u8) -> Hello {
    hello(Role::Gateway, "lan-party", mac_last, "party gateway")
}

struct Relay {
    rooms: Rooms,
    now: Instant,
}

impl Relay {
    fn new(config: Config) -> Self {
        Self {
            rooms: Rooms::new(config),
            now: Instant::now(),
        }
    }

    fn admit(&mut self, hello: &Hello) -> Result<Admitted, Reject> {
        self.now += Duration::from_millis(10);
        self.rooms
            .admit(self.now, ip(1), hello, MAX_DATAGRAM_BUDGET)
    }

    fn reject_code(&mut self, hello: &Hello) -> RejectCode {
        match self.admit(hello) {
            Ok(a) => panic!("expected a reject, admitted as {}", a.peer_id),
            Err(r) => r.code,
        }
    }
}

fn relay() -> Relay {
    Relay::new(Config::default())
}

/// Decodes a hello body as the relay would and returns the reject it would send.
fn decoder_reject(json: &str) -> Reject {
    let mut bytes = (json.len() as u32).to_be_bytes().to_vec();
    bytes.extend_from_slice(json.as_bytes());
    let mut d = Decoder::new();
    d.push(&bytes);
    d.poll().unwrap_err().to_reject()
}

fn hello_json(field: &str, value: &str) -> String {
    let mut v = serde_json::to_value(Message::Hello(client(1, "ann"))).unwrap();
    v[field] = serde_json::from_str(value).unwrap();
    v.to_string()
}

#[test]
fn first_member_creates_the_room_and_gets_an_empty_welcome() {
    let mut r = relay();
    let a = r.admit(&client(1, "ann")).unwrap();
    assert_eq!(a.room.as_str(), "lan-party");
    assert_eq!(a.welcome.version, PROTOCOL_VERSION);
    assert_eq!(a.welcome.peer_id, a.peer_id);
    assert!(a.welcome.peers.is_empty());
    assert!(a.notices.is_empty());
    assert_eq!(r.rooms.room_count(), 1);
    assert!(Message::Welcome(a.welcome).validate().is_ok());
}

#[test]
fn later_members_see_existing_peers_and_existing_peers_hear_of_them() {
    let mut r = relay();
    let gw = r.admit(&gateway(1)).unwrap();
    let ann = r.admit(&client(2, "ann")).unwrap();
    let bob = r.admit(&client(3, "bob")).unwrap();
    let listed: Vec<_> = bob.welcome.peers.iter().map(|p| p.peer_id).collect();
    assert_eq!(listed, [gw.peer_id, ann.peer_id]);
    assert_eq!(bob.welcome.peers[0].role, Role::Gateway);
    assert_eq!(bob.notices.len(), 2);
    for (notice, to) in bob.notices.iter().zip([gw.peer_id, ann.peer_id]) {
        assert_eq!(notice.to, to);
        let Message::PeerJoined(info) = &notice.message else {
            panic!("expected peer_joined, got {:?}", notice.message);
        };
        assert_eq!(info.peer_id, bob.peer_id);
        assert_eq!(info.mac, mac(3));
        assert_eq!(info.name.as_str(), "bob");
    }
}

#[test]
fn room_codes_are_case_insensitive() {
    let mut r = relay();
    let a = r
        .admit(&hello(Role::Client, "LAN-Party", 1, "ann"))
        .unwrap();
    let b = r
        .admit(&hello(Role::Client, "lan-party", 2, "bob"))
        .unwrap();
    assert_eq!(a.room, b.room);
    assert_eq!(r.rooms.room_count(), 1);
}

#[test]
fn peer_ids_are_unique_and_not_reused() {
    let mut r = relay();
    let a = r.admit(&client(1, "ann")).unwrap().peer_id;
    r.rooms.leave(a);
    let b = r.admit(&client(1, "ann")).unwrap().peer_id;
    assert_ne!(a, b);
    assert_ne!(a.0, 0);
}

#[test]
fn bad_version_is_rejected_with_both_versions_named() {
    let mut r = relay();
    let mut h = client(1, "ann");
    h.version = 2;
    let reject = r.admit(&h).unwrap_err();
    assert_eq!(reject.code, RejectCode::BadVersion);
    assert!(reject.reason.contains("version 2"), "{}", reject.reason);
    assert!(reject.reason.contains("version 1"), "{}", reject.reason);
    // The same hello off the wire gets the same answer from the decoder.
    let wire = hello_json("version", "2");
    assert_eq!(decoder_reject(&wire).code, RejectCode::BadVersion);
}

#[test]
fn bad_room_code_is_rejected_by_the_decoder() {
    let reject = decoder_reject(&hello_json("room", r#""no spaces allowed""#));
    assert_eq!(reject.code, RejectCode::BadRoomCode);
    assert!(reject.reason.contains("room code"), "{}", reject.reason);
}

#[test]
fn wrong_secret_is_rejected() {
    let mut r = relay();
    r.admit(&client(1, "ann")).unwrap();
    let mut intruder = client(2, "eve");
    intruder.secret = Secret::new("not the secret").unwrap();
    let reject = r.admit(&intruder).unwrap_err();
    assert_eq!(reject.code, RejectCode::BadSecret);
    assert!(!reject.reason.contains(ROOM_SECRET));
    assert_eq!(r.rooms.peer_count(), 1);
}

#[test]
fn wrong_secret_learns_nothing_about_a_full_room() {
    let mut r = Relay::new(Config {
        max_peers_per_room: 1,
        ..Config::default()
    });
    r.admit(&client(1, "ann")).unwrap();
    let mut intruder = client(1, "eve");
    intruder.secret = Secret::new("not the secret").unwrap();
    assert_eq!(r.reject_code(&intruder), RejectCode::BadSecret);
}

#[test]
fn fixed_secret_policy_rejects_other_secrets_even_for_new_rooms() {
    let mut r = Relay::new(Config {
        secret_policy: SecretPolicy::Fixed(Secret::new("relay-wide-secret").unwrap()),
        ..Config::default()
    });
    assert_eq!(r.reject_code(&client(1, "ann")), RejectCode::BadSecret);
    let mut h = client(1, "ann");
    h.secret = Secret::new("relay-wide-secret").unwrap();
    r.admit(&h).unwrap();
}

#[test]
fn malformed_secret_is_rejected_by_the_decoder() {
    let reject = decoder_reject(&hello_json("secret", r#""short""#));
    assert_eq!(reject.code, RejectCode::BadSecret);
}

#[test]
fn full_room_is_rejected() {
    let mut r = Relay::new(Config {
        max_peers_per_room: 2,
        ..Config::default()
    });
    r.admit(&client(1, "ann")).unwrap();
    r.admit(&client(2, "bob")).unwrap();
    assert_eq!(r.reject_code(&client(3, "cat")), RejectCode::RoomFull);
    // Another room is unaffected.
    r.admit(&hello(Role::Client, "other-room", 3, "cat"))
        .unwrap();
}

#[test]
fn second_gateway_is_rejected() {
    let mut r = relay();
    r.admit(&gateway(1)).unwrap();
    r.admit(&client(2, "ann")).unwrap();
    let reject = r.admit(&gateway(3)).unwrap_err();
    assert_eq!(reject.code, RejectCode::GatewayAlreadyPresent);
    assert!(reject.reason.contains("lan-party"));
}

#[test]
fn gateway_may_return_after_the_first_leaves() {
    let mut r = relay();
    let gw = r.admit(&gateway(1)).unwrap().peer_id;
    r.admit(&client(2, "ann")).unwrap();
    r.rooms.leave(gw);
    r.admit(&gateway(3)).unwrap();
}

#[test]
fn duplicate_mac_is_rejected() {
    let mut r = relay();
    r.admit(&client(1, "ann")).unwrap();
    let reject = r.admit(&client(1, "bob")).unwrap_err();
    assert_eq!(reject.code, RejectCode::MacInUse);
    assert!(
        reject.reason.contains("02:00:00:00:00:01"),
        "{}",
        reject.reason
    );
    // The gateway's MAC counts too.
    r.admit(&gateway(9)).unwrap();
    assert_eq!(r.reject_code(&client(9, "cat")), RejectCode::MacInUse);
    // The same MAC in another room is fine.
    r.admit(&hello(Role::Client, "other-room", 1, "bob"))
        .unwrap();
}

#[test]
fn group_or_zero_mac_is_rejected() {
    let mut r = relay();
    for bad in [Mac::ZERO, Mac::BROADCAST, Mac([0x01, 0, 0x5e, 0, 0, 0xfb])] {
        for role in [Role::Client, Role::Gateway] {
            let mut h = hello(role, "lan-party", 1, "ann");
            h.mac = bad;
            assert_eq!(r.reject_code(&h), RejectCode::BadMac, "{bad} as {role}");
        }
    }
    assert_eq!(
        decoder_reject(&hello_json("mac", r#""not-a-mac""#)).code,
        RejectCode::BadMac
    );
}

#[test]
fn gateway_without_operator_token_is_not_allowed() {
    let mut r = Relay::new(Config {
        gateway_token: Some(Secret::new(TOKEN).unwrap()),
        ..Config::default()
    });
    assert_eq!(r.reject_code(&gateway(1)), RejectCode::NotAllowed);
    let mut wrong = gateway(1);
    wrong.gateway_token = Some(Secret::new("operator-token-2").unwrap());
    assert_eq!(r.reject_code(&wrong), RejectCode::NotAllowed);
    let mut right = gateway(1);
    right.gateway_token = Some(Secret::new(TOKEN).unwrap());
    r.admit(&right).unwrap();
    // Clients never need the token.
    r.admit(&client(2, "ann")).unwrap();
}

#[test]
fn client_cannot_open_a_room_when_only_gateways_may() {
    let mut r = Relay::new(Config {
        room_creation: RoomCreation::GatewayOnly,
        ..Config::default()
    });
    assert_eq!(r.reject_code(&client(1, "ann")), RejectCode::NoSuchRoom);
    assert_eq!(r.rooms.room_count(), 0);
    r.admit(&gateway(2)).unwrap();
    r.admit(&client(1, "ann")).unwrap();
}

#[test]
fn too_many_rooms_is_rejected() {
    let mut r = Relay::new(Config {
        max_rooms: 2,
        ..Config::default()
    });
    r.admit(&hello(Role::Client, "room-1", 1, "a")).unwrap();
    r.admit(&hello(Role::Client, "room-2", 1, "b")).unwrap();
    assert_eq!(
        r.reject_code(&hello(Role::Client, "room-3", 1, "c")),
        RejectCode::TooManyRooms
    );
    // Joining an existing room still works.
    r.admit(&hello(Role::Client, "room-1", 2, "d")).unwrap();
}

#[test]
fn too_many_connections_from_one_address_are_rejected() {
    let mut rooms = Rooms::new(Config {
        max_connections_per_ip: 2,
        ..Config::default()
    });
    rooms.on_connection(ip(1)).unwrap();
    rooms.on_connection(ip(1)).unwrap();
    let reject = rooms.on_connection(ip(1)).unwrap_err();
    assert_eq!(reject.code, RejectCode::TooManyConnections);
    assert!(reject.reason.contains("198.18.0.1"));
    // Other addresses are unaffected; closing one frees a slot.
    rooms.on_connection(ip(2)).unwrap();
    rooms.on_connection_closed(ip(1));
    rooms.on_connection(ip(1)).unwrap();
    assert_eq!(rooms.connections_from(ip(1)), 2);
    assert_eq!(rooms.connection_count(), 3);
}

#[test]
fn too_many_connections_in_total_are_rejected() {
    let mut rooms = Rooms::new(Config {
        max_connections: 3,
        ..Config::default()
    });
    for last in 1..=3 {
        rooms.on_connection(ip(last)).unwrap();
    }
    assert_eq!(
        rooms.on_connection(ip(4)).unwrap_err().code,
        RejectCode::TooManyConnections
    );
    rooms.on_connection_closed(ip(2));
    rooms.on_connection(ip(4)).unwrap();
    // Closing an address that never connected changes nothing.
    rooms.on_connection_closed(ip(99));
    assert_eq!(rooms.connection_count(), 3);
}

#[test]
fn hello_flood_from_one_address_is_bounded() {
    let mut rooms = Rooms::new(Config {
        max_connections_per_ip: 8,
        ..Config::default()
    });
    let accepted = (0..10_000)
        .filter(|_| rooms.on_connection(ip(7)).is_ok())
        .count();
    assert_eq!(accepted, 8);
    assert_eq!(rooms.connection_count(), 8);
}

#[test]
fn malformed_hello_is_bad_hello() {
    assert_eq!(
        decoder_reject(&hello_json("name", r#""""#)).code,
        RejectCode::BadHello
    );
    assert_eq!(
        decoder_reject(r#"{"type":"hello","version":1}"#).code,
        RejectCode::BadHello
    );
    assert_eq!(decoder_reject("{not json").code, RejectCode::BadHello);
}

#[test]
fn budget_below_the_protocol_minimum_is_too_small() {
    let mut r = relay();
    let mut h = client(1, "ann");
    h.datagram_budget = MIN_DATAGRAM_BUDGET - 1;
    assert_eq!(r.reject_code(&h), RejectCode::BudgetTooSmall);
    // A connection that cannot carry the minimum is refused even if the hello claims more.
    let reject = r
        .rooms
        .admit(r.now, ip(1), &client(1, "ann"), MIN_DATAGRAM_BUDGET - 1)
        .unwrap_err();
    assert_eq!(reject.code, RejectCode::BudgetTooSmall);
}

#[test]
fn room_budget_is_fixed_by_its_creator_and_later_smaller_peers_are_rejected() {
    let mut r = Relay::new(Config {
        budget_cap: 1350,
        ..Config::default()
    });
    // Creator offers 1400; the relay caps the room at 1350.
    let a = r.admit(&client(1, "ann")).unwrap();
    assert_eq!(a.welcome.room_budget, 1350);
    // A later peer with more keeps the room's budget.
    let mut big = client(2, "bob");
    big.datagram_budget = 9000;
    assert_eq!(r.admit(&big).unwrap().welcome.room_budget, 1350);
    // A later peer with less is rejected.
    let mut small = client(3, "cat");
    small.datagram_budget = 1349;
    let reject = r.admit(&small).unwrap_err();
    assert_eq!(reject.code, RejectCode::BudgetTooSmall);
    assert!(reject.reason.contains("1350"), "{}", reject.reason);
    // A small creator fixes a small room.
    let mut tiny = hello(Role::Client, "small-room", 1, "dan");
    tiny.datagram_budget = 1200;
    let room = r.admit(&tiny).unwrap();
    assert_eq!(room.welcome.room_budget, 1200);
}

#[test]
fn connection_budget_limits_the_creators_budget() {
    let mut r = relay();
    let a = r
        .rooms
        .admit(r.now, ip(1), &client(1, "ann"), 1162)
        .unwrap();
    assert_eq!(a.welcome.room_budget, 1162);
}

#[test]
fn max_frame_fits_in_the_fragments_of_the_room_budget() {
    let mut r = Relay::new(Config {
        max_frame: 9000,
        ..Config::default()
    });
    assert_eq!(r.admit(&client(1, "ann")).unwrap().welcome.max_frame, 9000);
    let mut r = Relay::new(Config {
        max_frame: u16::MAX,
        ..Config::default()
    });
    let mut h = client(1, "ann");
    h.datagram_budget = MIN_DATAGRAM_BUDGET;
    let w = r.admit(&h).unwrap().welcome;
    let limit =
        usize::from(MAX_FRAGMENTS) * (usize::from(MIN_DATAGRAM_BUDGET) - FRAGMENT_HEADER_LEN);
    assert_eq!(usize::from(w.max_frame), limit);
    assert_eq!(
        relay().admit(&client(1, "a")).unwrap().welcome.max_frame,
        DEFAULT_MAX_FRAME
    );
}

#[test]
fn leaving_notifies_the_others() {
    let mut r = relay();
    let ann = r.admit(&client(1, "ann")).unwrap().peer_id;
    let bob = r.admit(&client(2, "bob")).unwrap().peer_id;
    let cat = r.admit(&client(3, "cat")).unwrap().peer_id;
    let notices = r.rooms.leave(bob);
    assert_eq!(
        notices,
        [ann, cat].map(|to| Notice {
            to,
            message: Message::PeerLeft(PeerLeft { peer_id: bob }),
        })
    );
    assert_eq!(
        r.rooms
            .members(&RoomCode::new("lan-party").unwrap())
            .collect::<Vec<_>>(),
        [ann, cat]
    );
    assert!(r.rooms.leave(bob).is_empty(), "leaving twice does nothing");
    // bob's MAC is free again.
    r.admit(&client(2, "bob")).unwrap();
}

#[test]
fn room_is_removed_when_last_peer_leaves() {
    let mut r = relay();
    let ann = r.admit(&client(1, "ann")).unwrap().peer_id;
    let bob = r.admit(&client(2, "bob")).unwrap().peer_id;
    r.rooms.leave(ann);
    assert_eq!(r.rooms.room_count(), 1);
    assert!(r.rooms.leave(bob).is_empty());
    assert_eq!(r.rooms.room_count(), 0);
    assert_eq!(r.rooms.peer_count(), 0);
    // The next member recreates it with a new secret.
    let mut h = client(3, "cat");
    h.secret = Secret::new("a brand new secret").unwrap();
    r.admit(&h).unwrap();
    assert_eq!(r.reject_code(&client(4, "dan")), RejectCode::BadSecret);
}

#[test]
fn status_lists_rooms_and_peers() {
    let mut r = relay();
    let start = r.now;
    let gw = r.admit(&gateway(1)).unwrap().peer_id;
    let ann = r.admit(&client(2, "ann")).unwrap().peer_id;
    r.admit(&hello(Role::Client, "another", 3, "bob")).unwrap();
    let rooms = r.rooms.rooms();
    let codes: Vec<_> = rooms.iter().map(|s| s.code.as_str()).collect();
    assert_eq!(codes, ["another", "lan-party"]);
    let party = &rooms[1];
    assert_eq!(party.budget, 1400);
    assert!(party.created_at > start);
    let ids: Vec<_> = party.peers.iter().map(|p| p.info.peer_id).collect();
    assert_eq!(ids, [gw, ann]);
    assert_eq!(party.peers[1].source, ip(1));
    assert!(party.peers[1].joined_at > party.peers[0].joined_at);
    assert_eq!(r.rooms.room_of(ann), Some(&party.code));
    assert_eq!(r.rooms.room(&party.code).as_ref(), Some(party));
    assert_eq!(r.rooms.peer_count(), 3);
}

#[test]
fn a_full_room_welcome_fits_in_one_control_frame() {
    let mut r = Relay::new(Config {
        max_peers_per_room: usize::MAX,
        ..Config::default()
    });
    // Worst-case names: 32 four-byte characters.
    let name = "🎮".repeat(32);
    let mut last = None;
    for i in 0..MAX_PEERS_PER_ROOM {
        let mut h = client(0, &name);
        h.mac = Mac([0x02, 0, 0, 0, (i >> 8) as u8, i as u8 + 1]);
        last = Some(r.admit(&h).unwrap());
    }
    let last = last.unwrap();
    assert_eq!(last.welcome.peers.len(), MAX_PEERS_PER_ROOM - 1);
    assert_eq!(r.reject_code(&client(200, "x")), RejectCode::RoomFull);
    encode(&Message::Welcome(last.welcome)).unwrap();
}

#[test]
fn every_reject_code_but_timeout_and_unknown_is_produced_above() {
    // A guard that this file keeps one scenario per code: the list must match RejectCode::ALL.
    let covered = [
        RejectCode::BadVersion,
        RejectCode::BadRoomCode,
        RejectCode::BadSecret,
        RejectCode::RoomFull,
        RejectCode::GatewayAlreadyPresent,
        RejectCode::MacInUse,
        RejectCode::BadMac,
        RejectCode::NotAllowed,
        RejectCode::NoSuchRoom,
        RejectCode::TooManyRooms,
        RejectCode::TooManyConnections,
        RejectCode::BadHello,
        RejectCode::BudgetTooSmall,
    ];
    let rest: Vec<_> = RejectCode::ALL
        .into_iter()
        .filter(|c| !covered.contains(c))
        .collect();
    // handshake_timeout is sent by the runtime's timer; unknown only decodes.
    assert_eq!(rest, [RejectCode::HandshakeTimeout, RejectCode::Unknown]);
}

#[test]
fn reconnecting_peer_replaces_its_old_self() {
    let mut r = relay();
    let gw = r.admit(&gateway(1)).unwrap().peer_id;
    let old = r.admit(&client(2, "ann")).unwrap().peer_id;
    // ann's network blips; her new connection says hello before the old one times out.
    let again = r.admit(&client(2, "ann")).unwrap();
    assert_eq!(again.replaced, Some(old));
    assert_ne!(again.peer_id, old);
    let listed: Vec<_> = again.welcome.peers.iter().map(|p| p.peer_id).collect();
    assert_eq!(listed, [gw], "the welcome does not list the ghost");
    assert_eq!(
        again
            .notices
            .iter()
            .map(|n| (n.to, n.message.type_name()))
            .collect::<Vec<_>>(),
        [(gw, "peer_left"), (gw, "peer_joined")]
    );
    assert_eq!(r.rooms.peer_count(), 2);
    assert_eq!(r.rooms.room_of(old), None);
    // The relay closes the old connection later; its leave is a no-op.
    assert!(r.rooms.leave(old).is_empty());
    // The gateway can reconnect the same way, which is not a second gateway.
    let gw_again = r.admit(&gateway(1)).unwrap();
    assert_eq!(gw_again.replaced, Some(gw));
}

#[test]
fn reconnect_of_a_lone_member_keeps_the_room() {
    let mut r = relay();
    let first = r.admit(&client(1, "ann")).unwrap();
    let created = r.rooms.rooms()[0].created_at;
    let mut h = client(1, "ann");
    h.datagram_budget = 9000;
    let again = r.admit(&h).unwrap();
    assert_eq!(again.replaced, Some(first.peer_id));
    assert!(again.notices.is_empty());
    assert_eq!(again.welcome.room_budget, first.welcome.room_budget);
    assert_eq!(r.rooms.rooms()[0].created_at, created);
}

#[test]
fn same_mac_from_someone_else_is_not_a_reconnect() {
    let mut r = relay();
    r.admit(&client(1, "ann")).unwrap();
    // Another name, or another address: mac_in_use.
    assert_eq!(r.reject_code(&client(1, "mallory")), RejectCode::MacInUse);
    let reject = r
        .rooms
        .admit(r.now, ip(66), &client(1, "ann"), MAX_DATAGRAM_BUDGET)
        .unwrap_err();
    assert_eq!(reject.code, RejectCode::MacInUse);
    // And with takeover off, even the same peer waits for its old connection to go.
    let mut strict = Relay::new(Config {
        reconnect_takeover: false,
        ..Config::default()
    });
    strict.admit(&client(1, "ann")).unwrap();
    assert_eq!(strict.reject_code(&client(1, "ann")), RejectCode::MacInUse);
}
