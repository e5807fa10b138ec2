//! A one-machine party for the gateway's end-to-end tests.
//!
//! One network namespace per test holds the party LAN: a Linux bridge `lpbr0` with three ports,
//! each the far end of a veth pair whose near end is a LAN host (`lph1`, `lph2`, played by
//! AF_PACKET sockets so frames are compared byte for byte) or the gateway's NIC (`lpgw0`). The
//! relay and the remote player's uplink live on the namespace's loopback. IPv6 is off in the
//! namespace so no router solicitation or MLD report wanders into the room.
//!
//! The relay is a scripted hub (it admits everyone, announces members to each other and forwards
//! every datagram to every other member, fragments untouched), run on its own thread. The
//! gateway is the real binary, started with `ip netns exec` and logging JSON lines, which the
//! tests read for its status and counters. The player is an [`Uplink`] with role client driven
//! by the test thread.

#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use lanparty_control::codec::{self, Decoder};
use lanparty_control::msg::{
    DisplayName, Hello, Message, PROTOCOL_VERSION, PeerId, PeerInfo, PeerLeft, Role, RoomCode,
    Secret, Welcome,
};
use lanparty_control::session::SessionConfig;
use lanparty_control::uplink::{Uplink, UplinkConfig};
use lanparty_datapath::Mac;
use lanparty_datapath::frag::ReassemblyConfig;
use lanparty_datapath::io::PortableUdp;
use lanparty_datapath::quic::tls::{self, ClientTrust, Fingerprint, ServerIdentity};
use lanparty_datapath::quic::{ConnId, Driver, DriverConfig, Event};
use lanparty_datapath::runner::Runner;
use lanparty_datapath::sys::afpacket::{PacketSocket, SocketConfig};
use lanparty_datapath::sys::netns::{Bridge, Netns, Veth};

pub const ROOM: &str = "party";
pub const SECRET: &str = "correct horse battery";
pub const H1: Mac = Mac([0x02, 0, 0, 0, 0xa0, 0x01]);
pub const H2: Mac = Mac([0x02, 0, 0, 0, 0xa0, 0x02]);
pub const GW: Mac = Mac([0x02, 0, 0, 0, 0xa0, 0xfe]);
pub const CLIENT: Mac = Mac([0x02, 0, 0, 0, 0xc1, 0x01]);
/// Seconds of silence after which gateway and client give up on a relay (short for the tests).
pub const IDLE_TIMEOUT_SECS: u64 = 3;

/// The party LAN namespace with its bridge and veth pairs.
pub struct Lan {
    // Drop order: veths and bridge before the namespace.
    _veths: Vec<Veth>,
    _bridge: Bridge,
    pub ns: Netns,
}

impl Lan {
    pub fn new(tag: &str) -> Self {
        let ns = Netns::create(tag).expect("create namespace");
        for key in [
            "net.ipv6.conf.all.disable_ipv6",
            "net.ipv6.conf.default.disable_ipv6",
        ] {
            ns.set_sysctl(key, "1").expect("disable IPv6");
        }
        let bridge = Bridge::create(&ns, "lpbr0").expect("create bridge");
        let mut veths = Vec::new();
        for (near, far, mac) in [
            ("lph1", "lph1p", H1),
            ("lph2", "lph2p", H2),
            ("lpgw0", "lpgw0p", GW),
        ] {
            veths.push(Veth::create(Some(&ns), near, Some(&ns), far).expect("create veth"));
            ns.set_mac(near, mac).expect("set mac");
            ns.set_link_up(near).expect("link up");
            bridge.add_port(far).expect("bridge port");
        }
        Self {
            _veths: veths,
            _bridge: bridge,
            ns,
        }
    }

    /// A raw socket on a LAN host's interface.
    pub fn host(&self, ifname: &str) -> PacketSocket {
        let ifname = ifname.to_owned();
        self.ns
            .run_in(move || PacketSocket::open(&ifname, &SocketConfig::default()))
            .expect("enter namespace")
            .expect("open packet socket")
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(relay_state_dir(self));
    }
}

/// Waits until `host` received a frame equal to `want`, or `timeout` passes.
pub fn host_receives(host: &mut PacketSocket, want: &[u8], timeout: Duration) -> bool {
    host_receives_all(host, &[want], timeout)[0]
}

/// Waits until `host` received a frame equal to each of `wants`, or `timeout` passes; says
/// which arrived.
pub fn host_receives_all(host: &mut PacketSocket, wants: &[&[u8]], timeout: Duration) -> Vec<bool> {
    let deadline = Instant::now() + timeout;
    let mut seen = vec![false; wants.len()];
    while Instant::now() < deadline && seen.contains(&false) {
        host.wait_rx(Duration::from_millis(20)).unwrap();
        while host.recv_batch().unwrap() > 0 {
            for f in host.frames() {
                for (s, w) in seen.iter_mut().zip(wants) {
                    *s |= f == *w;
                }
            }
        }
    }
    seen
}

/// Frames `host` receives within `window` that satisfy `pred`.
pub fn host_collect(
    host: &mut PacketSocket,
    window: Duration,
    pred: impl Fn(&[u8]) -> bool,
) -> Vec<Vec<u8>> {
    let deadline = Instant::now() + window;
    let mut out = Vec::new();
    while Instant::now() < deadline {
        host.wait_rx(Duration::from_millis(20)).unwrap();
        while host.recv_batch().unwrap() > 0 {
            out.extend(host.frames().filter(|f| pred(f)).map(<[u8]>::to_vec));
        }
    }
    out
}

/// An Ethernet frame: `dst`, `src`, `ethertype` (or 802.3 length), then `payload`.
pub fn frame(dst: Mac, src: Mac, ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + payload.len());
    f.extend_from_slice(&dst.0);
    f.extend_from_slice(&src.0);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// A payload of `len` bytes that starts with `tag` and counts up after it.
pub fn payload(tag: &[u8], len: usize) -> Vec<u8> {
    let mut p: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
    p[..tag.len()].copy_from_slice(tag);
    p
}

// ---------------------------------------------------------------------------------------------
// The scripted relay

/// What the hub saw, readable from the test thread.
#[derive(Default)]
pub struct HubLog {
    /// DATAGRAMs received from the gateway.
    pub gateway_datagrams: AtomicU64,
    /// Every DATAGRAM received from the gateway (whole frames or fragments, overlay header
    /// included).
    pub gateway_payloads: Mutex<Vec<Bytes>>,
    /// DATAGRAMs received from clients.
    pub client_datagrams: AtomicU64,
    /// Hellos received, by role.
    pub hellos: Mutex<Vec<Hello>>,
    /// Disconnect messages received (the goodbye).
    pub goodbyes: Mutex<Vec<String>>,
    /// Why each gateway connection closed, as the hub's QUIC driver reported it.
    pub gateway_closes: Mutex<Vec<String>>,
    /// Stats messages received from the gateway.
    pub gateway_stats: AtomicU64,
}

struct Member {
    decoder: Decoder,
    info: Option<PeerInfo>,
}

struct Hub {
    runner: Runner,
    members: HashMap<ConnId, Member>,
    next_id: u64,
    log: Arc<HubLog>,
}

impl Hub {
    fn joined(&self, except: ConnId) -> impl Iterator<Item = (ConnId, &PeerInfo)> + '_ {
        self.members
            .iter()
            .filter(move |(c, _)| **c != except)
            .filter_map(|(c, m)| m.info.as_ref().map(|i| (*c, i)))
    }

    fn send(&mut self, conn: ConnId, msg: &Message) {
        let bytes = codec::encode(msg).unwrap();
        let _ = self.runner.driver().write_control(conn, &bytes);
    }

    fn on_message(&mut self, conn: ConnId, msg: Message) {
        match msg {
            Message::Hello(h) => {
                self.next_id += 1;
                let info = PeerInfo {
                    peer_id: PeerId(self.next_id),
                    role: h.role,
                    mac: h.mac,
                    name: h.name.clone(),
                };
                self.log.hellos.lock().unwrap().push(h);
                let peers: Vec<PeerInfo> = self.joined(conn).map(|(_, i)| i.clone()).collect();
                let others: Vec<ConnId> = self.joined(conn).map(|(c, _)| c).collect();
                self.send(
                    conn,
                    &Message::Welcome(Welcome {
                        version: PROTOCOL_VERSION,
                        peer_id: info.peer_id,
                        room_budget: 1162,
                        max_frame: 1518,
                        peers,
                    }),
                );
                for other in others {
                    self.send(other, &Message::PeerJoined(info.clone()));
                }
                if let Some(m) = self.members.get_mut(&conn) {
                    m.info = Some(info);
                }
            }
            Message::Disconnect(d) => self.log.goodbyes.lock().unwrap().push(d.reason),
            Message::Stats(_) => {
                self.log.gateway_stats.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }

    fn turn(&mut self) {
        let now = Instant::now();
        self.runner.receive(now);
        while let Some(ev) = self.runner.driver().poll_event() {
            match ev {
                Event::Connected { conn, .. } => {
                    self.members.insert(
                        conn,
                        Member {
                            decoder: Decoder::new(),
                            info: None,
                        },
                    );
                }
                Event::ControlBytes { conn, bytes } => {
                    let mut msgs = Vec::new();
                    if let Some(m) = self.members.get_mut(&conn) {
                        m.decoder.push(&bytes);
                        while let Ok(Some(msg)) = m.decoder.poll() {
                            msgs.push(msg);
                        }
                    }
                    for msg in msgs {
                        self.on_message(conn, msg);
                    }
                }
                Event::Datagram { conn, bytes } => {
                    let Some(role) = self
                        .members
                        .get(&conn)
                        .and_then(|m| m.info.as_ref())
                        .map(|i| i.role)
                    else {
                        continue;
                    };
                    let counter = match role {
                        Role::Gateway => &self.log.gateway_datagrams,
                        Role::Client => &self.log.client_datagrams,
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                    if role == Role::Gateway {
                        self.log
                            .gateway_payloads
                            .lock()
                            .unwrap()
                            .push(bytes.clone());
                    }
                    let others: Vec<ConnId> = self.joined(conn).map(|(c, _)| c).collect();
                    for other in others {
                        let _ = self.runner.driver().send_datagram(other, bytes.clone());
                    }
                }
                Event::Closed { conn, reason, .. } => {
                    let left = self.members.remove(&conn).and_then(|m| m.info);
                    if let Some(info) = left {
                        if info.role == Role::Gateway {
                            self.log.gateway_closes.lock().unwrap().push(reason);
                        }
                        let others: Vec<ConnId> = self.joined(conn).map(|(c, _)| c).collect();
                        for other in others {
                            self.send(
                                other,
                                &Message::PeerLeft(PeerLeft {
                                    peer_id: info.peer_id,
                                }),
                            );
                        }
                    }
                }
                _ => {}
            }
        }
        self.runner.transmit(now).unwrap();
        self.runner
            .wait(Some(Instant::now() + Duration::from_millis(5)))
            .unwrap();
    }
}

/// The scripted relay running on its own thread; stops (like a killed process: no goodbye,
/// socket closed) on drop.
pub struct ScriptedRelay {
    pub addr: SocketAddr,
    pub pin: Fingerprint,
    pub log: Arc<HubLog>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// Where the relay keeps its certificate, so a restarted relay has the same pin.
pub fn relay_state_dir(lan: &Lan) -> PathBuf {
    std::env::temp_dir().join(format!("lpgw-relay-{}", lan.ns.name()))
}

impl ScriptedRelay {
    /// Starts the hub on `port` (0: any) of the namespace's loopback.
    pub fn start(lan: &Lan, port: u16) -> Self {
        let identity =
            ServerIdentity::load_or_generate(&relay_state_dir(lan), &["relay.test".to_owned()])
                .unwrap();
        let pin = identity.fingerprint();
        let server = Driver::new(
            DriverConfig::default(),
            Some(tls::server_crypto(identity).unwrap()),
        );
        let bind: SocketAddr = ([127, 0, 0, 1], port).into();
        let udp = lan
            .ns
            .run_in(move || PortableUdp::bind(bind))
            .unwrap()
            .expect("bind relay socket");
        let runner = Runner::new(server, Box::new(udp));
        let addr = runner.local_addr();
        let log = Arc::new(HubLog::default());
        let stop = Arc::new(AtomicBool::new(false));
        let mut hub = Hub {
            runner,
            members: HashMap::new(),
            next_id: 0,
            log: Arc::clone(&log),
        };
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                hub.turn();
            }
        });
        Self {
            addr,
            pin,
            log,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for ScriptedRelay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The gateway process

/// The `lanparty-gateway` binary running inside the LAN namespace; killed on drop.
pub struct Gateway {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    reader: Option<JoinHandle<()>>,
}

pub fn gateway_exe() -> &'static str {
    env!("CARGO_BIN_EXE_lanparty-gateway")
}

impl Gateway {
    /// Starts the gateway on `lpgw0` against `relay`.
    pub fn start(lan: &Lan, relay: SocketAddr, pin: Fingerprint) -> Self {
        let mut cmd = lan.ns.command(gateway_exe());
        cmd.args(["--relay", &relay.to_string()])
            .args([
                "--room",
                ROOM,
                "--interface",
                "lpgw0",
                "--name",
                "lan gateway",
            ])
            .args(["--pin", &pin.to_string(), "--log-format", "json"])
            .args(["--idle-timeout", &IDLE_TIMEOUT_SECS.to_string()])
            .env("LANPARTY_SECRET", SECRET)
            .env("RUST_LOG", "info");
        Self::spawn(cmd)
    }

    fn spawn(mut cmd: Command) -> Self {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start lanparty-gateway");
        let stderr = child.stderr.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Self {
            child,
            lines,
            reader: Some(reader),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Every stderr line so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// The `message` of every JSON log line so far.
    pub fn messages(&self) -> Vec<String> {
        self.lines()
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|v| v["fields"]["message"].as_str().map(str::to_owned))
            .collect()
    }

    /// The fields of the last `counters` log line.
    pub fn last_counters(&self) -> Option<serde_json::Value> {
        self.lines()
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["fields"]["message"] == "counters")
            .map(|v| v["fields"].clone())
            .next_back()
    }

    /// Waits until a log message satisfies `pred`.
    pub fn wait_for(&mut self, what: &str, timeout: Duration, pred: impl Fn(&str) -> bool) {
        self.wait_for_after(0, what, timeout, pred);
    }

    /// How many log messages there are so far, for [`Self::wait_for_after`].
    pub fn mark(&self) -> usize {
        self.messages().len()
    }

    /// Waits until a log message after the first `mark` ones satisfies `pred`.
    pub fn wait_for_after(
        &mut self,
        mark: usize,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) {
        let deadline = Instant::now() + timeout;
        loop {
            if self.messages().iter().skip(mark).any(|m| pred(m)) {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "gateway exited ({status}) while waiting for {what}; stderr:\n{}",
                    self.lines().join("\n")
                );
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; gateway stderr:\n{}",
                self.lines().join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGTERM (through kill(1), by PID) and waits up to `timeout` for the exit.
    pub fn terminate(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let ok = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill -TERM failed");
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                if let Some(r) = self.reader.take() {
                    let _ = r.join();
                }
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

/// Runs the gateway binary with `args` to completion (for start-up errors).
pub fn run_gateway(ns: Option<&Netns>, args: &[&str]) -> std::process::Output {
    let mut cmd = match ns {
        Some(ns) => ns.command(gateway_exe()),
        None => Command::new(gateway_exe()),
    };
    cmd.args(args)
        .env("LANPARTY_SECRET", SECRET)
        .stdin(Stdio::null())
        .output()
        .expect("run lanparty-gateway")
}

// ---------------------------------------------------------------------------------------------
// The remote player

/// A remote player's uplink (role client) on the namespace's loopback.
pub struct Player {
    pub uplink: Uplink,
    pub frames: Vec<Bytes>,
}

impl Player {
    pub fn join(lan: &Lan, relay: SocketAddr, pin: Fingerprint) -> Self {
        let udp = lan
            .ns
            .run_in(|| PortableUdp::bind("127.0.0.1:0".parse().unwrap()))
            .unwrap()
            .expect("bind client socket");
        let mut driver = DriverConfig::default();
        driver.transport.idle_timeout = Duration::from_secs(IDLE_TIMEOUT_SECS);
        driver.transport.keep_alive = Duration::from_millis(500);
        let runner = Runner::new(Driver::new(driver, None), Box::new(udp));
        let mut session = SessionConfig::new(relay.to_string(), ROOM, CLIENT, 7);
        session.backoff_initial = Duration::from_millis(200);
        session.backoff_max = Duration::from_secs(1);
        let config = UplinkConfig {
            relay,
            server_name: "relay.test".to_owned(),
            client: tls::client_config(&ClientTrust::Pinned(pin)).unwrap(),
            hello: Hello {
                version: PROTOCOL_VERSION,
                role: Role::Client,
                room: RoomCode::new(ROOM).unwrap(),
                mac: CLIENT,
                secret: Secret::new(SECRET).unwrap(),
                gateway_token: None,
                datagram_budget: 1200,
                name: DisplayName::new("alice").unwrap(),
            },
            session,
            reassembly: ReassemblyConfig::default(),
            clamp_mss: true,
        };
        let mut player = Self {
            uplink: Uplink::new(Instant::now(), runner, config),
            frames: Vec::new(),
        };
        player.pump_until("the player joins", Duration::from_secs(10), |p| {
            p.uplink.is_joined()
        });
        player
    }

    /// One turn of the player's loop.
    pub fn turn(&mut self) {
        let now = Instant::now();
        self.uplink.receive(now);
        while self.uplink.poll_event().is_some() {}
        while let Some(f) = self.uplink.poll_frame() {
            self.frames.push(f);
        }
        self.uplink.transmit(now).unwrap();
        self.uplink
            .wait(Some(Instant::now() + Duration::from_millis(5)))
            .unwrap();
    }

    /// Turns until `done`, panicking after `timeout`.
    pub fn pump_until(&mut self, what: &str, timeout: Duration, done: impl Fn(&Self) -> bool) {
        let deadline = Instant::now() + timeout;
        while !done(self) {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; player status: {}",
                self.uplink.status()
            );
            self.turn();
        }
    }

    /// Turns for `window`.
    pub fn pump_for(&mut self, window: Duration) {
        let deadline = Instant::now() + window;
        while Instant::now() < deadline {
            self.turn();
        }
    }

    /// Sends one frame into the room and pushes it out.
    pub fn send(&mut self, frame: &[u8]) {
        let mut f = frame.to_vec();
        assert!(self.uplink.send_frame(&mut f), "player could not send");
        self.uplink.transmit(Instant::now()).unwrap();
    }

    pub fn received(&self, want: &[u8]) -> bool {
        self.frames.iter().any(|f| f.as_ref() == want)
    }
}

/// Everything a bridging test needs: the LAN, the relay, the gateway (connected, seeing the
/// player) and the player.
pub struct Party {
    // Drop order matters: the gateway and player before the relay, the LAN last.
    pub gateway: Gateway,
    pub player: Player,
    pub relay: ScriptedRelay,
    pub lan: Lan,
}

impl Party {
    pub fn start(tag: &str) -> Self {
        let lan = Lan::new(tag);
        let relay = ScriptedRelay::start(&lan, 0);
        let mut gateway = Gateway::start(&lan, relay.addr, relay.pin);
        gateway.wait_for("the gateway joins", Duration::from_secs(10), |m| {
            m.starts_with("connected, 0 clients")
        });
        let player = Player::join(&lan, relay.addr, relay.pin);
        gateway.wait_for(
            "the gateway sees the player",
            Duration::from_secs(10),
            |m| m.starts_with("connected, 1 client "),
        );
        Self {
            gateway,
            player,
            relay,
            lan,
        }
    }
}
