//! Switching through the real relay: unicast, broadcast, the client filters, IPX,
//! fragmentation, leaving, room isolation and shutdown.

mod common;

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use common::*;
use lanparty_control::msg::{Message, Role};
use lanparty_datapath::Mac;
use lanparty_datapath::budget::Budget;
use lanparty_datapath::frag::{Fragmenter, Reassembler, ReassemblyConfig, Split};

const QUIET: Duration = Duration::from_millis(300);

/// Three clients in one room, each having seen the others join.
fn room_of_three(relay: &TestRelay, room: &str) -> Vec<TestPeer> {
    let (mut a, _) = relay.join(room, mac(1), "Ann");
    let (mut b, _) = relay.join(room, mac(2), "Bob");
    let (c, _) = relay.join(room, mac(3), "Cat");
    assert!(matches!(a.next_notice(WAIT), Some(Message::PeerJoined(_))));
    assert!(matches!(a.next_notice(WAIT), Some(Message::PeerJoined(_))));
    assert!(matches!(b.next_notice(WAIT), Some(Message::PeerJoined(_))));
    vec![a, b, c]
}

fn tags(datagrams: &[Bytes]) -> Vec<u32> {
    datagrams
        .iter()
        .map(|d| {
            let f = frame_of(d);
            u32::from_be_bytes([f[14], f[15], f[16], f[17]])
        })
        .collect()
}

/// Waits until the relay's status satisfies `check`.
fn status_until(relay: &TestRelay, check: impl Fn(&lanparty_relay::StatusReport) -> bool) {
    let deadline = Instant::now() + WAIT;
    loop {
        let status = relay.status();
        if check(&status) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "status never matched: {status:#?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn unicast_reaches_the_addressed_peer_only() {
    let relay = TestRelay::start();
    let mut p = room_of_three(&relay, "lan-party");
    p[0].send_frame(&tagged(mac(2), mac(1), 7));
    assert_eq!(tags(&p[1].collect(1, WAIT)), vec![7]);
    assert!(p[2].collect_for(QUIET).is_empty());
    assert!(p[0].collect_for(Duration::ZERO).is_empty());
}

#[test]
fn broadcast_reaches_everyone_but_the_sender() {
    let relay = TestRelay::start();
    let mut p = room_of_three(&relay, "lan-party");
    p[1].send_frame(&tagged(Mac::BROADCAST, mac(2), 42));
    assert_eq!(tags(&p[0].collect(1, WAIT)), vec![42]);
    assert_eq!(tags(&p[2].collect(1, WAIT)), vec![42]);
    assert!(p[1].collect_for(QUIET).is_empty());
}

#[test]
fn spoofed_and_rogue_frames_from_a_client_are_dropped_and_counted() {
    let relay = TestRelay::start();
    let mut p = room_of_three(&relay, "lan-party");
    let ann_id = relay.status().room("lan-party").unwrap().peers[0].peer_id;
    p[0].send_frame(&tagged(Mac::BROADCAST, mac(0x99), 1)); // spoofed source
    p[0].send_frame(&dhcp_offer(mac(1)));
    p[0].send_frame(&router_advertisement(mac(1)));
    p[0].send_frame(&bpdu(mac(1)));
    assert!(p[1].collect_for(QUIET).is_empty());
    assert!(p[2].collect_for(Duration::ZERO).is_empty());
    status_until(&relay, |s| {
        s.peer(ann_id).is_some_and(|a| a.datagrams_in == 4)
    });
    let status = relay.status();
    let ann = status.peer(ann_id).unwrap();
    for reason in [
        "spoofed_source",
        "dhcpv4_server_from_client",
        "router_advertisement_from_client",
        "link_local_control",
    ] {
        assert_eq!(ann.drops.get(reason), Some(&1), "{reason}: {:?}", ann.drops);
    }
    assert_eq!(
        status
            .room("lan-party")
            .unwrap()
            .drops
            .values()
            .sum::<u64>(),
        4
    );
}

#[test]
fn an_ipx_frame_passes() {
    let relay = TestRelay::start();
    let mut p = room_of_three(&relay, "lan-party");
    let frame = ipx(mac(3));
    p[2].send_frame(&frame);
    assert_eq!(frame_of(&p[0].collect(1, WAIT)[0]), &frame[..]);
    assert_eq!(frame_of(&p[1].collect(1, WAIT)[0]), &frame[..]);
}

#[test]
fn a_full_size_frame_crosses_as_fragments_and_reassembles() {
    let relay = TestRelay::start();
    let (mut a, welcome) = relay.join("lan-party", mac(1), "Ann");
    let (mut b, _) = relay.join("lan-party", mac(2), "Bob");
    let budget = Budget::new(usize::from(welcome.room_budget)).unwrap();
    let mut payload = vec![0u8; 1500];
    for (i, byte) in payload.iter_mut().enumerate() {
        *byte = (i % 251) as u8;
    }
    let frame = ether(mac(2), mac(1), 0x88b5, &payload);
    assert_eq!(frame.len(), 1514);
    let mut fragments = Vec::new();
    let origin = lanparty_datapath::wire::overlay::origin_of(welcome.peer_id.0);
    let split = Fragmenter::new(origin)
        .fragment(&frame, budget, &mut BytesMut::new(), |d| fragments.push(d))
        .unwrap();
    assert!(
        matches!(split, Split::Fragments { count, .. } if count >= 2),
        "{split:?}"
    );
    for f in &fragments {
        a.send_datagram(f.clone());
    }
    let got = b.collect(fragments.len(), WAIT);
    assert_eq!(got.len(), fragments.len());
    let mut reassembler = Reassembler::new(ReassemblyConfig::default());
    let mut whole = None;
    for d in got {
        if let Some(f) = reassembler.handle_fragment(Instant::now(), 1u8, d) {
            whole = Some(f);
        }
    }
    assert_eq!(whole.as_deref(), Some(&frame[..]));
}

#[test]
fn a_leaving_peer_takes_its_mac_and_the_others_hear_peer_left() {
    let relay = TestRelay::start();
    let mut p = room_of_three(&relay, "lan-party");
    status_until(&relay, |s| {
        s.room("lan-party").is_some_and(|r| r.mac_table == 3)
    });
    let bob_id = relay.status().room("lan-party").unwrap().peers[1].peer_id;
    let mut bob = p.remove(1);
    bob.send(&Message::Disconnect(lanparty_control::msg::Disconnect {
        reason: "going home".into(),
    }));
    for peer in &mut p {
        match peer.next_notice(WAIT) {
            Some(Message::PeerLeft(left)) => assert_eq!(left.peer_id.0, bob_id),
            other => panic!("expected peer_left, got {other:?}"),
        }
    }
    status_until(&relay, |s| {
        s.room("lan-party")
            .is_some_and(|r| r.mac_table == 2 && r.peers.len() == 2)
    });
    // Bob's MAC is unknown now: a frame to it floods to the one other peer.
    p[0].send_frame(&tagged(mac(2), mac(1), 5));
    assert_eq!(tags(&p[1].collect(1, WAIT)), vec![5]);
}

#[test]
fn two_rooms_never_see_each_others_frames() {
    let relay = TestRelay::start();
    let mut red = room_of_three(&relay, "red");
    let (mut blue, _) = relay.join("blue", mac(1), "Ann2");
    let (mut blue2, _) = relay.join("blue", mac(4), "Dan");
    red[0].send_frame(&tagged(Mac::BROADCAST, mac(1), 1));
    red[0].send_frame(&tagged(mac(4), mac(1), 2));
    blue2.send_frame(&tagged(Mac::BROADCAST, mac(4), 3));
    assert_eq!(tags(&red[1].collect(2, WAIT)), vec![1, 2]);
    assert_eq!(tags(&blue.collect(1, WAIT)), vec![3]);
    assert!(blue.collect_for(QUIET).is_empty());
    assert!(blue2.collect_for(Duration::ZERO).is_empty());
    assert!(red[1].collect_for(Duration::ZERO).is_empty());
}

#[test]
fn frames_before_admission_are_dropped_and_counted() {
    let relay = TestRelay::start();
    let (mut ann, _) = relay.join("lan-party", mac(1), "Ann");
    let mut stranger = relay.connect();
    stranger.send_frame(&tagged(Mac::BROADCAST, mac(7), 1));
    assert!(ann.collect_for(QUIET).is_empty());
    status_until(&relay, |s| s.counters.unadmitted_datagrams == 1);
}

#[test]
fn shutdown_sends_every_peer_a_disconnect_and_a_close() {
    let mut relay = TestRelay::start();
    let (mut a, _) = relay.join("lan-party", mac(1), "Ann");
    let (mut gw, _) = {
        let mut gw = relay.connect();
        gw.send(&Message::Hello(hello(
            Role::Gateway,
            "lan-party",
            mac(0x10),
            "gw",
        )));
        let w = gw.expect_welcome();
        (gw, w)
    };
    let started = Instant::now();
    let handle = relay.handle.take().unwrap();
    let stopper = std::thread::spawn(move || handle.shutdown("relay shutting down"));
    for peer in [&mut a, &mut gw] {
        let disconnect = loop {
            match peer.next_notice(WAIT) {
                Some(Message::Disconnect(d)) => break d,
                Some(Message::PeerJoined(_)) => continue,
                other => panic!("expected a disconnect, got {other:?}"),
            }
        };
        assert_eq!(disconnect.reason, "relay shutting down");
        let reason = peer.wait_closed(WAIT).expect("closed");
        assert!(reason.contains("relay shutting down"), "{reason}");
    }
    stopper.join().unwrap().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    relay.shutdown();
}

#[test]
fn peers_get_periodic_stats_with_their_own_counters() {
    let relay = TestRelay::start_with(|c| c.stats_interval = Duration::from_millis(200));
    let (mut a, _) = relay.join("lan-party", mac(1), "Ann");
    let (mut b, _) = relay.join("lan-party", mac(2), "Bob");
    a.send_frame(&tagged(mac(2), mac(1), 1));
    a.send_frame(&tagged(mac(0x77), mac(0x78), 2)); // spoofed
    b.collect(1, WAIT);
    let deadline = Instant::now() + WAIT;
    loop {
        match a.next_message(WAIT) {
            Some(Message::Stats(s)) if s.frames_in == 2 => {
                assert_eq!(s.drops.get("spoofed_source"), Some(&1));
                break;
            }
            Some(_) => assert!(Instant::now() < deadline, "no stats with both frames"),
            None => panic!("no stats message"),
        }
    }
}

#[test]
fn a_relay_on_the_ipv6_wildcard_serves_ipv4_and_ipv6_peers() {
    if std::net::UdpSocket::bind("[::1]:0").is_err() {
        eprintln!("skipped: no IPv6 loopback on this host");
        return;
    }
    let relay = TestRelay::start_with(|c| c.listen = "[::]:0".parse().unwrap());
    let port = relay.addr().port();
    let v4: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let v6: std::net::SocketAddr = format!("[::1]:{port}").parse().unwrap();
    let mut ann = TestPeer::connect(v4, relay.fingerprint());
    ann.send(&Message::Hello(hello(
        Role::Client,
        "lan-party",
        mac(1),
        "Ann",
    )));
    ann.expect_welcome();
    let mut bob = TestPeer::connect_from("[::1]:0".parse().unwrap(), v6, relay.fingerprint());
    bob.send(&Message::Hello(hello(
        Role::Client,
        "lan-party",
        mac(2),
        "Bob",
    )));
    bob.expect_welcome();
    ann.send_frame(&tagged(mac(2), mac(1), 9));
    assert_eq!(tags(&bob.collect(1, WAIT)), vec![9]);
    let status = relay.status();
    let sources: Vec<&str> = status
        .room("lan-party")
        .unwrap()
        .peers
        .iter()
        .map(|p| p.source.as_str())
        .collect();
    // The IPv4 peer shows as IPv4, not as an IPv4-mapped IPv6 address.
    assert_eq!(sources, vec!["127.0.0.1", "::1"]);
}

#[test]
fn the_room_budget_reaches_a_newcomer_soon_after_its_pmtud() {
    // Until the room hears that a newcomer's path carries full-size frames, every such frame
    // goes out in two fragments; quinn's search takes a few loopback round trips, so the news
    // must not wait for the relay's once-a-second comparison.
    let relay = TestRelay::start();
    let (mut a, _) = relay.join("lan-party", mac(1), "Ann");
    let (mut b, welcome) = relay.join("lan-party", mac(2), "Bob");
    let joined = Instant::now();
    let mut best: Option<(u16, Duration)> = None;
    while joined.elapsed() < Duration::from_millis(2500) {
        // Both peers answer the relay's PMTUD probes; Bob records what he is told.
        while a.next_message(Duration::from_millis(2)).is_some() {}
        if let Some(Message::RoomBudget(r)) = b.next_message(Duration::from_millis(5))
            && best.is_none_or(|(b, _)| r.budget > b)
        {
            best = Some((r.budget, joined.elapsed()));
        }
    }
    let (budget, after) = best.expect("Bob heard no room_budget");
    assert!(
        budget > welcome.room_budget,
        "announced {budget}, welcome {}",
        welcome.room_budget
    );
    assert!(
        after < Duration::from_millis(700),
        "the largest budget ({budget}) came {after:?} after Bob joined"
    );
}

#[test]
fn the_room_budget_follows_the_members_paths_after_pmtud() {
    // Loopback carries far more than 1500 bytes, so PMTUD raises every connection to the
    // configured ceiling (1472-byte UDP payloads) within a few round trips.
    let relay = TestRelay::start();
    let (mut a, welcome) = relay.join("lan-party", mac(1), "Ann");
    let (mut b, _) = relay.join("lan-party", mac(2), "Bob");
    // Both peers keep listening until they have heard the same budget and it has not moved
    // for a while (PMTUD may still climb while the relay compares paths).
    let mut heard: [Option<u16>; 2] = [None, None];
    let mut settled_since = None;
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        for (p, last) in [&mut a, &mut b].into_iter().zip(heard.iter_mut()) {
            while let Some(m) = p.next_message(Duration::from_millis(20)) {
                if let Message::RoomBudget(r) = m {
                    *last = Some(r.budget);
                    settled_since = None;
                }
            }
        }
        if heard[0].is_some() && heard[0] == heard[1] {
            let since = *settled_since.get_or_insert_with(Instant::now);
            if since.elapsed() > Duration::from_millis(2500) {
                break;
            }
        }
    }
    let for_a = heard[0].expect("Ann heard no room_budget");
    let for_b = heard[1].expect("Bob heard no room_budget");
    assert!(
        for_a > welcome.room_budget,
        "announced {for_a}, welcome {}",
        welcome.room_budget
    );
    assert_eq!(for_a, for_b);
    // A frame of the announced size crosses whole (once Ann's own path carries it too).
    a.pump_until(WAIT, |p| {
        p.max_datagram_size()
            .is_some_and(|m| m >= usize::from(for_a))
    });
    let payload = vec![7u8; usize::from(for_a) - 1 - 14];
    let frame = ether(mac(2), mac(1), 0x88b5, &payload);
    let datagram = lanparty_datapath::wire::overlay::encode_whole(&frame);
    assert_eq!(datagram.len(), usize::from(for_a));
    a.send_datagram(Bytes::from(datagram.clone()));
    let got = b.collect(1, WAIT);
    assert_eq!(got.first().map(|d| &d[..]), Some(&datagram[..]));
}
