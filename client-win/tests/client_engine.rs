//! The shared engine over an in-memory device and a scripted relay on loopback: no root, no
//! kernel devices. These cover the shapes only Windows runs in production (a TAP whose OS
//! runs its own DHCP client, the device hooks) and the L3 emulation's answers.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use lanparty_client::config::Addressing;
use lanparty_client::engine::{Device, Engine, EngineOptions, Exit};
use lanparty_client::run;
use lanparty_control::codec::{self, Decoder};
use lanparty_control::msg::{Message, PROTOCOL_VERSION, PeerId, RoomCode, Secret, Welcome};
use lanparty_control::uplink::Uplink;
use lanparty_datapath::Mac;
use lanparty_datapath::frag::{Reassembler, ReassemblyConfig};
use lanparty_datapath::io::PortableUdp;
use lanparty_datapath::quic::tls::{self, ClientTrust, ServerIdentity};
use lanparty_datapath::quic::{ConnId, Driver, DriverConfig, Event};
use lanparty_datapath::runner::Runner;
use lanparty_datapath::wire::overlay;

/// What the engine did to the device, shared with the test.
#[derive(Debug, Default)]
struct Seen {
    written: Vec<Vec<u8>>,
    to_read: Vec<Vec<u8>>,
    addresses: Vec<(Ipv4Addr, u8)>,
    joined: usize,
    drained: usize,
    finished: bool,
    /// How many frames had been written at the last flush.
    flushed_at: usize,
    /// The last largest-frame size the engine gave.
    max_frame: Option<usize>,
}

struct FakeDevice {
    ethernet: bool,
    seen: Arc<Mutex<Seen>>,
}

impl Device for FakeDevice {
    fn carries_ethernet(&self) -> bool {
        self.ethernet
    }

    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<Option<usize>> {
        let mut seen = self.seen.lock().unwrap();
        if seen.to_read.is_empty() {
            return Ok(None);
        }
        let data = seen.to_read.remove(0);
        buf[..data.len()].copy_from_slice(&data);
        Ok(Some(data.len()))
    }

    fn write(&mut self, data: &[u8]) -> std::io::Result<bool> {
        self.seen.lock().unwrap().written.push(data.to_vec());
        Ok(true)
    }

    fn set_address(
        &mut self,
        addr: Ipv4Addr,
        prefix: u8,
        _router: Option<Ipv4Addr>,
    ) -> std::io::Result<()> {
        self.seen.lock().unwrap().addresses.push((addr, prefix));
        Ok(())
    }

    fn clear_address(&mut self, _addr: Ipv4Addr) -> std::io::Result<()> {
        Ok(())
    }

    fn drained(&mut self) {
        self.seen.lock().unwrap().drained += 1;
    }

    fn joined(&mut self) {
        self.seen.lock().unwrap().joined += 1;
    }

    fn flush(&mut self) -> std::io::Result<bool> {
        let mut seen = self.seen.lock().unwrap();
        seen.flushed_at = seen.written.len();
        Ok(true)
    }

    fn set_max_frame(&mut self, max_frame: usize) {
        self.seen.lock().unwrap().max_frame = Some(max_frame);
    }

    fn finish(&mut self) {
        self.seen.lock().unwrap().finished = true;
    }
}

/// Welcomes every hello, records whole frames, sends what it is told to.
struct Relay {
    runner: Runner,
    decoder: Decoder,
    conn: Option<ConnId>,
    reassembler: Reassembler<()>,
    frames: Vec<Bytes>,
}

impl Relay {
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
                    while let Ok(Some(Message::Hello(_))) = self.decoder.poll() {
                        let welcome = Message::Welcome(Welcome {
                            version: PROTOCOL_VERSION,
                            peer_id: PeerId(5),
                            room_budget: 1162,
                            max_frame: 1518,
                            peers: vec![],
                        });
                        let reply = codec::encode(&welcome).unwrap();
                        self.runner.driver().write_control(conn, &reply).unwrap();
                    }
                }
                Event::Datagram { bytes, .. } => {
                    if let Some(f) = self.reassembler.handle_fragment(now, (), bytes) {
                        self.frames.push(f);
                    }
                }
                _ => {}
            }
        }
        self.runner.transmit(now).unwrap();
    }

    fn send(&mut self, frame: &[u8]) {
        let conn = self.conn.unwrap();
        self.runner
            .driver()
            .send_datagram(conn, Bytes::from(overlay::encode_whole(frame)))
            .unwrap();
    }
}

const MAC: &str = "02:00:5e:40:00:01";

fn setup(ethernet: bool, options: EngineOptions) -> (Relay, Engine<FakeDevice>, Arc<Mutex<Seen>>) {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("lp-engine-{}-{n}", std::process::id()));
    let identity = ServerIdentity::load_or_generate(&dir, &["relay.test".to_owned()]).unwrap();
    let pin = identity.fingerprint();
    let server = Driver::new(
        DriverConfig::default(),
        Some(tls::server_crypto(identity).unwrap()),
    );
    let udp = PortableUdp::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let relay = Relay {
        runner: Runner::new(server, Box::new(udp)),
        decoder: Decoder::new(),
        conn: None,
        reassembler: Reassembler::new(ReassemblyConfig::default()),
        frames: vec![],
    };
    let relay_addr: SocketAddr = relay.runner.local_addr();
    let args = lanparty_client::config::Args {
        relay: Some(relay_addr.to_string()),
        room: Some("party".into()),
        secret: Some("correct horse battery".into()),
        pin: Some(lanparty_control::link::fingerprint_hex(&pin.0)),
        mac: Some(MAC.into()),
        ..Default::default()
    };
    let cfg = lanparty_client::config::ClientConfig::resolve(args, Default::default()).unwrap();
    assert_eq!(cfg.room, RoomCode::new("party").unwrap());
    assert!(
        Secret::new("correct horse battery")
            .unwrap()
            .ct_eq(&cfg.secret)
    );
    assert!(matches!(cfg.trust, ClientTrust::Pinned(_)));
    let uplink_config = run::uplink_config(&cfg, options.mac, relay_addr, 3).unwrap();
    let udp = PortableUdp::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let runner = Runner::new(Driver::new(DriverConfig::default(), None), Box::new(udp));
    let uplink = Uplink::new(Instant::now(), runner, uplink_config);
    let seen = Arc::new(Mutex::new(Seen::default()));
    let dev = FakeDevice {
        ethernet,
        seen: Arc::clone(&seen),
    };
    let engine = Engine::new(uplink, dev, options, Box::new(|_| {}));
    let _ = std::fs::remove_dir_all(&dir);
    (relay, engine, seen)
}

fn options(addressing: Addressing, dhcp_on_l2: bool) -> EngineOptions {
    EngineOptions {
        mac: MAC.parse().unwrap(),
        addressing,
        hostname: None,
        seed: 4,
        dhcp_on_l2,
    }
}

/// Turns both sides until `done` holds or five seconds pass.
fn pump(
    relay: &mut Relay,
    engine: &mut Engine<FakeDevice>,
    mut done: impl FnMut(&Relay, &Engine<FakeDevice>) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !done(relay, engine) {
        assert!(Instant::now() < deadline, "timed out: {}", engine.status());
        relay.turn(Instant::now());
        engine
            .turn_until(Some(Instant::now() + Duration::from_millis(1)))
            .unwrap();
    }
}

/// A DHCP reply (UDP 67 -> 68) to our MAC, enough for the L2 router to recognise it.
fn dhcp_reply_frame() -> Vec<u8> {
    let mac: Mac = MAC.parse().unwrap();
    let mut f = vec![0u8; 14 + 20 + 8 + 8];
    f[..6].copy_from_slice(&mac.0);
    f[6..12].copy_from_slice(&[0x02, 0, 0x5e, 0, 0, 0xfe]);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    f[14] = 0x45;
    f[16..18].copy_from_slice(&36u16.to_be_bytes());
    f[23] = 17;
    f[34..36].copy_from_slice(&67u16.to_be_bytes());
    f[36..38].copy_from_slice(&68u16.to_be_bytes());
    f
}

#[test]
fn an_l2_device_whose_os_runs_dhcp_gets_every_frame_and_the_hooks() {
    let (mut relay, mut engine, seen) = setup(true, options(Addressing::Dhcp, false));
    pump(&mut relay, &mut engine, |_, e| e.uplink().is_joined());
    assert_eq!(seen.lock().unwrap().joined, 1);
    assert!(
        seen.lock().unwrap().drained >= 1,
        "empty reads arm the adapter"
    );
    assert!(
        engine.emulator().is_none(),
        "the OS does DHCP on this adapter"
    );

    // A DHCP reply goes to the adapter (the OS's DHCP client), not to a built-in one.
    let reply = dhcp_reply_frame();
    relay.send(&reply);
    pump(&mut relay, &mut engine, |_, _| {
        seen.lock().unwrap().written.contains(&reply)
    });
    {
        let seen = seen.lock().unwrap();
        assert_eq!(
            seen.flushed_at,
            seen.written.len(),
            "the turn that wrote a frame flushed the adapter after it"
        );
        assert_eq!(
            seen.max_frame,
            Some(1161),
            "an adapter that cuts super-frames learns the room's largest whole frame"
        );
    }

    // A frame the adapter gives goes to the room as it is.
    let mut ipx = vec![0xffu8; 6];
    ipx.extend_from_slice(&MAC.parse::<Mac>().unwrap().0);
    ipx.extend_from_slice(&[0x81, 0x37]);
    ipx.extend_from_slice(&[9; 46]);
    seen.lock().unwrap().to_read.push(ipx.clone());
    pump(&mut relay, &mut engine, |r, _| {
        r.frames.iter().any(|f| f[..] == ipx[..])
    });

    let stopper = engine.stopper();
    stopper.stop();
    assert_eq!(engine.run().unwrap(), Exit::Stopped);
    assert!(
        seen.lock().unwrap().finished,
        "the device undoes its changes"
    );
}

#[test]
fn an_l3_device_gets_its_static_address_and_the_emulator_answers_arp() {
    let addr = Ipv4Addr::new(198, 18, 8, 2);
    let (mut relay, mut engine, seen) = setup(
        false,
        options(Addressing::Static { addr, prefix: 24 }, false),
    );
    pump(&mut relay, &mut engine, |_, e| e.uplink().is_joined());
    pump(&mut relay, &mut engine, |_, _| {
        !seen.lock().unwrap().addresses.is_empty()
    });
    assert_eq!(seen.lock().unwrap().addresses, vec![(addr, 24)]);
    assert!(
        engine
            .status()
            .contains("using static address 198.18.8.2/24")
    );

    // Who has 198.18.8.2? The emulator answers; the adapter never sees ARP.
    let asker = [0x02, 0, 0x5e, 0, 0, 0xfe];
    let mut arp = vec![0xffu8; 6];
    arp.extend_from_slice(&asker);
    arp.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
    arp.extend_from_slice(&asker);
    arp.extend_from_slice(&[198, 18, 8, 1]);
    arp.extend_from_slice(&[0; 6]);
    arp.extend_from_slice(&addr.octets());
    relay.send(&arp);
    pump(&mut relay, &mut engine, |r, _| {
        r.frames
            .iter()
            .any(|f| f[..6] == asker && f[12..14] == [0x08, 0x06] && f[20..22] == [0, 2])
    });
    assert!(seen.lock().unwrap().written.is_empty());
}
