//! Admission through the real relay: every reject code a real hello can produce, the hello
//! timer, bad control frames, and hello floods.

mod common;

use std::time::Duration;

use common::*;
use lanparty_control::msg::{Message, RejectCode, Role, Secret};

fn rejected(relay: &TestRelay, hello: &lanparty_control::msg::Hello) -> (RejectCode, String) {
    let mut peer = relay.connect();
    peer.send(&Message::Hello(hello.clone()));
    peer.expect_reject()
}

fn raw_frame(json: &str) -> Vec<u8> {
    let mut out = (json.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(json.as_bytes());
    out
}

#[test]
fn a_hello_from_another_protocol_version_is_rejected_with_bad_version() {
    let relay = TestRelay::start();
    let mut h = hello(Role::Client, "lan-party", mac(1), "Ann");
    h.version = 2;
    let (code, reason) = rejected(&relay, &h);
    assert_eq!(code, RejectCode::BadVersion);
    assert!(reason.contains('2') && reason.contains('1'), "{reason}");
}

#[test]
fn a_malformed_room_code_is_rejected_with_bad_room_code() {
    let relay = TestRelay::start();
    let mut peer = relay.connect();
    peer.send_raw_control(&raw_frame(
        r#"{"type":"hello","version":1,"role":"client","room":"no spaces!","mac":"02:5e:10:00:00:01","secret":"correct horse","datagram_budget":1400,"name":"Ann"}"#,
    ));
    assert_eq!(peer.expect_reject().0, RejectCode::BadRoomCode);
}

#[test]
fn a_wrong_room_secret_is_rejected_and_never_echoed() {
    let relay = TestRelay::start();
    let (_ann, _) = relay.join("lan-party", mac(1), "Ann");
    let mut h = hello(Role::Client, "lan-party", mac(2), "Bob");
    h.secret = Secret::new("wrong secret 123").unwrap();
    let (code, reason) = rejected(&relay, &h);
    assert_eq!(code, RejectCode::BadSecret);
    assert!(!reason.contains("wrong secret"), "{reason}");
}

#[test]
fn a_full_room_rejects_the_next_peer() {
    let relay = TestRelay::start_with(|c| c.admission.max_peers_per_room = 2);
    let (_a, _) = relay.join("lan-party", mac(1), "Ann");
    let (_b, _) = relay.join("lan-party", mac(2), "Bob");
    let (code, _) = rejected(&relay, &hello(Role::Client, "lan-party", mac(3), "Cat"));
    assert_eq!(code, RejectCode::RoomFull);
}

#[test]
fn a_second_gateway_is_rejected() {
    let relay = TestRelay::start();
    let mut gw = relay.connect();
    gw.send(&Message::Hello(hello(
        Role::Gateway,
        "lan-party",
        mac(0x10),
        "gw1",
    )));
    gw.expect_welcome();
    let (code, _) = rejected(&relay, &hello(Role::Gateway, "lan-party", mac(0x11), "gw2"));
    assert_eq!(code, RejectCode::GatewayAlreadyPresent);
}

#[test]
fn a_mac_already_in_the_room_is_rejected() {
    let relay = TestRelay::start();
    let (_a, _) = relay.join("lan-party", mac(1), "Ann");
    let (code, reason) = rejected(
        &relay,
        &hello(Role::Client, "lan-party", mac(1), "Impostor"),
    );
    assert_eq!(code, RejectCode::MacInUse);
    assert!(reason.contains("02:5e:10:00:00:01"), "{reason}");
}

#[test]
fn a_gateway_without_the_operator_token_is_not_allowed() {
    let relay = TestRelay::start_with(|c| {
        c.admission.gateway_token = Some(Secret::new("operator-token-1").unwrap());
    });
    let (code, _) = rejected(&relay, &hello(Role::Gateway, "lan-party", mac(0x10), "gw"));
    assert_eq!(code, RejectCode::NotAllowed);
    // With the token it gets in.
    let mut gw = relay.connect();
    let mut h = hello(Role::Gateway, "lan-party", mac(0x10), "gw");
    h.gateway_token = Some(Secret::new("operator-token-1").unwrap());
    gw.send(&Message::Hello(h));
    gw.expect_welcome();
}

#[test]
fn a_budget_below_the_minimum_is_rejected() {
    let relay = TestRelay::start();
    let mut h = hello(Role::Client, "lan-party", mac(1), "Ann");
    h.datagram_budget = 1000;
    assert_eq!(rejected(&relay, &h).0, RejectCode::BudgetTooSmall);
}

#[test]
fn too_many_connections_from_one_address_are_rejected() {
    let relay = TestRelay::start_with(|c| c.admission.max_connections_per_ip = 2);
    let _a = relay.connect();
    let _b = relay.connect();
    let (code, reason) = rejected(&relay, &hello(Role::Client, "lan-party", mac(3), "Cat"));
    assert_eq!(code, RejectCode::TooManyConnections);
    assert!(reason.contains("127.0.0.1"), "{reason}");
}

#[test]
fn a_peer_that_never_says_hello_is_closed_with_handshake_timeout() {
    let relay = TestRelay::start_with(|c| c.hello_timeout = Duration::from_millis(400));
    let mut peer = relay.connect();
    let reason = peer.wait_closed(WAIT).expect("closed by the relay");
    assert!(reason.contains("handshake_timeout"), "{reason}");
    assert_eq!(
        relay.status().counters.rejects.get("handshake_timeout"),
        Some(&1)
    );
}

#[test]
fn an_oversize_control_frame_closes_with_a_reason() {
    let relay = TestRelay::start();
    let mut peer = relay.connect();
    peer.send_raw_control(&(1u32 << 20).to_be_bytes());
    let (code, reason) = peer.expect_reject();
    assert_eq!(code, RejectCode::BadHello);
    assert!(reason.contains("exceeds"), "{reason}");
    assert!(peer.closed.is_some());
}

#[test]
fn a_garbage_control_frame_closes_with_a_reason() {
    let relay = TestRelay::start();
    let mut peer = relay.connect();
    peer.send_raw_control(&raw_frame("}{ not json"));
    let (code, reason) = peer.expect_reject();
    assert_eq!(code, RejectCode::BadHello);
    assert!(reason.contains("JSON"), "{reason}");
}

#[test]
fn garbage_after_the_welcome_closes_with_a_disconnect() {
    let relay = TestRelay::start();
    let (mut ann, _) = relay.join("lan-party", mac(1), "Ann");
    ann.send_raw_control(&raw_frame("[1,2,3]"));
    match ann.next_notice(WAIT) {
        Some(Message::Disconnect(d)) => assert!(d.reason.contains("bad control frame"), "{d:?}"),
        other => panic!("expected a disconnect, got {other:?}"),
    }
    let reason = ann.wait_closed(WAIT).expect("closed");
    assert!(reason.contains("bad control frame"), "{reason}");
}

#[test]
fn a_hello_flood_from_one_address_does_not_keep_others_out() {
    let relay = TestRelay::start_with(|c| {
        c.admission.max_connections_per_ip = 4;
        c.hello_timeout = Duration::from_secs(2);
    });
    // Twelve connections from one address that never finish their hello.
    let mut flood: Vec<TestPeer> = (0..12)
        .map(|_| TestPeer::connect_nowait(relay.addr(), relay.fingerprint()))
        .collect();
    for _ in 0..20 {
        for p in &mut flood {
            p.turn(Duration::from_millis(1));
        }
    }
    for p in &mut flood {
        p.send_raw_control(&[0, 0]);
    }
    // Someone on another address joins at once.
    let mut other = TestPeer::connect_from(
        "127.0.0.2:0".parse().unwrap(),
        relay.addr(),
        relay.fingerprint(),
    );
    other.send(&Message::Hello(hello(
        Role::Client,
        "lan-party",
        mac(9),
        "Dan",
    )));
    let welcome = other.expect_welcome();
    assert!(welcome.peers.is_empty());
    // The eight connections over the per-address limit were refused when they spoke.
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let refused = relay
            .status()
            .counters
            .rejects
            .get("too_many_connections")
            .copied();
        if refused == Some(8) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "refused: {refused:?}");
        for p in &mut flood {
            p.turn(Duration::from_millis(1));
        }
    }
}

#[test]
fn a_reconnect_replaces_the_old_connection_and_the_room_hears_left_then_joined() {
    let relay = TestRelay::start();
    let (mut ann, _) = relay.join("lan-party", mac(1), "Ann");
    let (mut bob, first) = relay.join("lan-party", mac(2), "Bob");
    assert!(matches!(
        ann.next_notice(WAIT),
        Some(Message::PeerJoined(_))
    ));
    // Bob's network blipped: same MAC, name and address, new connection.
    let (mut bob_again, second) = relay.join("lan-party", mac(2), "Bob");
    assert_ne!(first.peer_id, second.peer_id);
    match ann.next_notice(WAIT) {
        Some(Message::PeerLeft(left)) => assert_eq!(left.peer_id, first.peer_id),
        other => panic!("expected peer_left, got {other:?}"),
    }
    match ann.next_notice(WAIT) {
        Some(Message::PeerJoined(joined)) => assert_eq!(joined.peer_id, second.peer_id),
        other => panic!("expected peer_joined, got {other:?}"),
    }
    assert!(matches!(
        bob.next_notice(WAIT),
        Some(Message::Disconnect(_))
    ));
    assert!(bob.wait_closed(WAIT).unwrap().contains("replaced"));
    // Frames to Bob's MAC reach the new connection.
    ann.send_frame(&tagged(mac(2), mac(1), 3));
    assert_eq!(bob_again.collect(1, WAIT).len(), 1);
}

#[test]
fn a_new_room_beyond_the_room_limit_is_rejected() {
    let relay = TestRelay::start_with(|c| c.admission.max_rooms = 1);
    let (_a, _) = relay.join("red", mac(1), "Ann");
    let (code, _) = rejected(&relay, &hello(Role::Client, "blue", mac(2), "Bob"));
    assert_eq!(code, RejectCode::TooManyRooms);
}

#[test]
fn on_a_gateway_first_relay_a_client_cannot_open_a_room() {
    let relay = TestRelay::start_with(|c| {
        c.admission.room_creation = lanparty_control::admission::RoomCreation::GatewayOnly;
    });
    let (code, _) = rejected(&relay, &hello(Role::Client, "lan-party", mac(1), "Ann"));
    assert_eq!(code, RejectCode::NoSuchRoom);
    let mut gw = relay.connect();
    gw.send(&Message::Hello(hello(
        Role::Gateway,
        "lan-party",
        mac(0x10),
        "gw",
    )));
    gw.expect_welcome();
    let (_ann, welcome) = relay.join("lan-party", mac(1), "Ann");
    assert_eq!(welcome.peers.len(), 1);
}
