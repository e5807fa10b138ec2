//! The peer's uplink against a scripted relay on loopback: join, frames both ways (one of
//! them fragmented), losing the relay, reconnecting, and a fatal rejection.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use lanparty_control::codec::{self, Decoder};
use lanparty_control::msg::{
    DisplayName, Hello, Message, PROTOCOL_VERSION, PeerId, Reject, RejectCode, Role, RoomBudget,
    RoomCode, Secret, Welcome,
};
use lanparty_control::session::SessionConfig;
use lanparty_control::uplink::{Uplink, UplinkConfig, UplinkEvent};
use lanparty_datapath::Mac;
use lanparty_datapath::frag::{Reassembler, ReassemblyConfig};
use lanparty_datapath::io::PortableUdp;
use lanparty_datapath::quic::tls::{self, ClientTrust, ServerIdentity};
use lanparty_datapath::quic::{ConnId, Driver, DriverConfig, Event};
use lanparty_datapath::runner::Runner;
use lanparty_datapath::wire::overlay;

/// A relay stand-in that answers hellos according to `answer`.
struct FakeRelay {
    runner: Runner,
    decoder: Decoder,
    hellos: Vec<Hello>,
    datagrams: Vec<Bytes>,
    conn: Option<ConnId>,
    answer: Message,
}

impl FakeRelay {
    fn turn(&mut self, now: Instant) {
        self.runner.receive(now);
        while let Some(ev) = self.runner.driver().poll_event() {
            match ev {
                Event::Connected { conn, .. } => {
                    self.conn = Some(conn);
                    self.decoder = Decoder::new();
                }
                Event::ControlBytes { conn, bytes } => {
                    self.decoder.push(&bytes);
                    while let Ok(Some(Message::Hello(h))) = self.decoder.poll() {
                        self.hellos.push(h);
                        let reply = codec::encode(&self.answer).unwrap();
                        self.runner.driver().write_control(conn, &reply).unwrap();
                    }
                }
                Event::Datagram { bytes, .. } => self.datagrams.push(bytes),
                _ => {}
            }
        }
        self.runner.transmit(now).unwrap();
    }
}

fn hello(mac: Mac) -> Hello {
    Hello {
        version: PROTOCOL_VERSION,
        role: Role::Client,
        room: RoomCode::new("party").unwrap(),
        mac,
        secret: Secret::new("correct horse").unwrap(),
        gateway_token: None,
        datagram_budget: 1200,
        name: DisplayName::new("alice").unwrap(),
    }
}

fn welcome() -> Message {
    Message::Welcome(Welcome {
        version: PROTOCOL_VERSION,
        peer_id: PeerId(5),
        room_budget: 1162,
        max_frame: 1518,
        peers: vec![],
    })
}

/// Turns both sides until `done` says so or five seconds pass.
fn pump(
    relay: &mut FakeRelay,
    uplink: &mut Uplink,
    events: &mut Vec<UplinkEvent>,
    frames: &mut Vec<Bytes>,
    mut done: impl FnMut(&FakeRelay, &Uplink, &[UplinkEvent], &[Bytes]) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !done(relay, uplink, events, frames) {
        assert!(
            Instant::now() < deadline,
            "timed out; events so far: {events:?}"
        );
        let now = Instant::now();
        uplink.receive(now);
        events.extend(std::iter::from_fn(|| uplink.poll_event()));
        frames.extend(std::iter::from_fn(|| uplink.poll_frame()));
        uplink.transmit(now).unwrap();
        relay.turn(now);
        uplink
            .wait(Some(Instant::now() + Duration::from_millis(1)))
            .unwrap();
    }
}

#[test]
fn joins_carries_frames_reconnects_and_stops_on_a_fatal_reject() {
    let dir = std::env::temp_dir().join(format!("lp-uplink-{}", std::process::id()));
    let identity = ServerIdentity::load_or_generate(&dir, &["relay.test".to_owned()]).unwrap();
    let pin = identity.fingerprint();
    let server = Driver::new(
        DriverConfig::default(),
        Some(tls::server_crypto(identity).unwrap()),
    );
    let udp = PortableUdp::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let mut relay = FakeRelay {
        runner: Runner::new(server, Box::new(udp)),
        decoder: Decoder::new(),
        hellos: vec![],
        datagrams: vec![],
        conn: None,
        answer: welcome(),
    };
    let relay_addr: SocketAddr = relay.runner.local_addr();

    let mac: Mac = "02:00:00:00:00:01".parse().unwrap();
    let client_udp = PortableUdp::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let mut session = SessionConfig::new(relay_addr.to_string(), "party", mac, 7);
    session.backoff_initial = Duration::from_millis(200);
    let config = UplinkConfig {
        relay: relay_addr,
        server_name: "relay.test".to_owned(),
        client: tls::client_config(&ClientTrust::Pinned(pin)).unwrap(),
        hello: hello(mac),
        session,
        reassembly: ReassemblyConfig::default(),
        clamp_mss: true,
    };
    let runner = Runner::new(
        Driver::new(DriverConfig::default(), None),
        Box::new(client_udp),
    );
    let mut uplink = Uplink::new(Instant::now(), runner, config);
    let (mut events, mut frames) = (Vec::new(), Vec::new());

    // Join.
    pump(
        &mut relay,
        &mut uplink,
        &mut events,
        &mut frames,
        |_, u, _, _| u.is_joined(),
    );
    assert_eq!(relay.hellos.len(), 1);
    assert_eq!(relay.hellos[0].mac, mac);
    assert!(
        relay.hellos[0].datagram_budget >= 1100,
        "{:?}",
        relay.hellos[0]
    );
    assert!(events.iter().any(|e| matches!(e, UplinkEvent::Joined(_))));
    assert!(
        uplink
            .status()
            .starts_with("joined room party as MAC 02:00:00:00:00:01")
    );

    // A full-size frame crosses as fragments that reassemble to the same bytes.
    let mut big = vec![0u8; 1514];
    big[..6].copy_from_slice(&[0xff; 6]);
    big[6..12].copy_from_slice(&mac.0);
    big[12..14].copy_from_slice(&[0x81, 0x37]);
    for (i, b) in big.iter_mut().enumerate().skip(14) {
        *b = i as u8;
    }
    let sent = big.clone();
    assert!(uplink.send_frame(Instant::now(), &mut big));
    pump(
        &mut relay,
        &mut uplink,
        &mut events,
        &mut frames,
        |r, _, _, _| r.datagrams.len() >= 2,
    );
    let mut reassembler = Reassembler::new(ReassemblyConfig::default());
    let now = Instant::now();
    let whole: Vec<Bytes> = relay
        .datagrams
        .drain(..)
        .filter_map(|d| reassembler.handle_fragment(now, 1u8, d))
        .collect();
    assert_eq!(whole, vec![Bytes::from(sent)]);

    // The relay announces a larger room budget (PMTUD on every member's path): frames up to
    // it go whole, and the uplink never cuts above what its own connection carries.
    let announce = |relay: &mut FakeRelay, budget: u16| {
        let conn = relay.conn.unwrap();
        let bytes = codec::encode(&Message::RoomBudget(RoomBudget { budget })).unwrap();
        relay.runner.driver().write_control(conn, &bytes).unwrap();
    };
    announce(&mut relay, 1300);
    pump(
        &mut relay,
        &mut uplink,
        &mut events,
        &mut frames,
        |_, u, _, _| u.budget().is_some_and(|b| b.bytes() == 1300),
    );
    let mut mid = big[..1299].to_vec();
    assert!(uplink.send_frame(Instant::now(), &mut mid));
    pump(
        &mut relay,
        &mut uplink,
        &mut events,
        &mut frames,
        |r, _, _, _| !r.datagrams.is_empty(),
    );
    let one = relay.datagrams.remove(0);
    assert_eq!(one.len(), 1300, "a 1299-byte frame goes as one datagram");
    assert_eq!(&one[1..], &big[..1299]);
    announce(&mut relay, 60_000);
    pump(
        &mut relay,
        &mut uplink,
        &mut events,
        &mut frames,
        |_, u, _, _| u.budget().is_some_and(|b| b.bytes() > 1300),
    );
    let own = uplink.budget().unwrap().bytes();
    assert!(
        own <= 1472 - 20,
        "budget {own} exceeds what a 1500-byte path carries"
    );

    // A frame from the relay reaches the uplink.
    let frame = [
        &[0x02, 0, 0, 0, 0, 1][..],
        &[0x02, 0, 0, 0, 0, 9],
        &[0x08, 0x06],
        &[7; 46],
    ]
    .concat();
    let conn = relay.conn.unwrap();
    relay
        .runner
        .driver()
        .send_datagram(conn, Bytes::from(overlay::encode_whole(&frame)))
        .unwrap();
    pump(
        &mut relay,
        &mut uplink,
        &mut events,
        &mut frames,
        |_, _, _, f| !f.is_empty(),
    );
    assert_eq!(frames[0].as_ref(), &frame[..]);

    // The relay drops the connection: the uplink says so and comes back by itself.
    relay
        .runner
        .driver()
        .close(Instant::now(), conn, 0, "restart");
    pump(
        &mut relay,
        &mut uplink,
        &mut events,
        &mut frames,
        |_, _, e, _| e.iter().any(|e| matches!(e, UplinkEvent::Left)),
    );
    assert!(!uplink.is_joined());
    assert!(
        events
            .iter()
            .any(|e| matches!(e, UplinkEvent::Status(s) if s.contains("retrying in"))),
        "{events:?}"
    );
    // The next hello gets a fatal rejection: the uplink stops for good.
    relay.answer = Message::Reject(Reject::new(RejectCode::BadSecret, "wrong secret"));
    pump(
        &mut relay,
        &mut uplink,
        &mut events,
        &mut frames,
        |_, u, _, _| u.is_finished(),
    );
    assert_eq!(relay.hellos.len(), 2);
    assert!(
        uplink
            .status()
            .starts_with("rejected: room secret rejected"),
        "{}",
        uplink.status()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
