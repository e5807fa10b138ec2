//! The metrics/status HTTP endpoint of an in-process relay.

mod common;

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::Duration;

use common::*;
use lanparty_control::msg::{Message, Role};
use lanparty_datapath::Mac;
use lanparty_relay::cli::{fetch_status, http_get};

fn metrics_relay() -> TestRelay {
    TestRelay::start_with(|c| c.metrics = Some("127.0.0.1:0".parse().unwrap()))
}

#[test]
fn status_json_lists_rooms_peers_and_learned_macs() {
    let relay = metrics_relay();
    let addr = relay.handle().metrics_addr().unwrap();
    let mut gw = relay.connect();
    gw.send(&Message::Hello(hello(
        Role::Gateway,
        "lan-party",
        mac(0x10),
        "gw",
    )));
    gw.expect_welcome();
    let (mut ann, _) = relay.join("lan-party", mac(1), "Ann");
    // A LAN host behind the gateway speaks; the relay learns its MAC and unicast to it goes to
    // the gateway only.
    let lan_host = Mac([0x00, 0x1b, 0x21, 0, 0, 0x42]);
    gw.send_frame(&tagged(Mac::BROADCAST, lan_host, 1));
    assert_eq!(ann.collect(1, WAIT).len(), 1);
    ann.send_frame(&tagged(lan_host, mac(1), 2));
    assert_eq!(gw.collect(1, WAIT).len(), 1);

    let status = fetch_status(addr).unwrap();
    let room = status.room("lan-party").expect("room listed");
    assert_eq!(room.learned_macs, 1);
    assert_eq!(room.mac_table, 2);
    assert_eq!(room.peers.len(), 2);
    assert_eq!(room.peers[0].role, "gateway");
    assert_eq!(room.peers[1].name, "Ann");
    assert_eq!(room.peers[1].datagrams_in, 1);
    assert!(room.peers[1].rtt_ms > 0.0);
    assert_eq!(status.counters.admitted, 2);
    assert_eq!(status.fingerprint, relay.fingerprint().to_string());
}

#[test]
fn unknown_paths_and_oversize_requests_get_short_answers() {
    let relay = metrics_relay();
    let addr = relay.handle().metrics_addr().unwrap();
    let err = http_get(addr, "/nope").unwrap_err().to_string();
    assert!(err.contains("404"), "{err}");

    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let junk = vec![b'x'; 64 * 1024];
    let _ = stream.write_all(b"GET /metrics HTTP/1.1\r\nX-Junk: ");
    let _ = stream.write_all(&junk);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    // Whatever it answers, the server stopped reading at its limit and closed the connection;
    // it still serves the next client.
    assert!(answer.len() < 1 << 20);
    assert!(
        http_get(addr, "/metrics")
            .unwrap()
            .contains("lanparty_relay_connections")
    );
}
