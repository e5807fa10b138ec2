//! A one-machine party for the gateway's end-to-end tests.
//!
//! One network namespace per test holds the party LAN: a Linux bridge `lpbr0` with three ports,
//! each the far end of a veth pair whose near end is a LAN host (`lph1`, `lph2`, played by
//! AF_PACKET sockets so frames are compared byte for byte) or the gateway's NIC (`lpgw0`). The
//! relay and the remote player's uplink live on the namespace's loopback. IPv6 is off in the
//! namespace so no router solicitation or MLD report wanders into the room.
//!
//! The relay is the real `lanparty-relay` binary (see [`relay_exe`]). The gateway is the real
//! binary, started with `ip netns exec` and logging JSON lines, which the
//! tests read for its status and counters. The player is an [`Uplink`] with role client driven
//! by the test thread.

#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use lanparty_control::msg::{DisplayName, Hello, PROTOCOL_VERSION, Role, RoomCode, Secret};
use lanparty_control::session::SessionConfig;
use lanparty_control::uplink::{Uplink, UplinkConfig, UplinkEvent};
use lanparty_datapath::Mac;
use lanparty_datapath::frag::ReassemblyConfig;
use lanparty_datapath::io::PortableUdp;
use lanparty_datapath::quic::tls::{self, ClientTrust, Fingerprint};
use lanparty_datapath::quic::{Driver, DriverConfig};
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
// The relay

/// The `lanparty-relay` binary: built by this workspace, found next to the test executable
/// (`target/<profile>/`). `cargo test -p lanparty-gateway` does not build other packages'
/// binaries, so the first call runs `cargo build -p lanparty-relay` with the same profile (a
/// no-op when it is up to date).
///
/// # Panics
///
/// When the binary is still missing, with a line that says how to build it.
pub fn relay_exe() -> PathBuf {
    static EXE: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    EXE.get_or_init(|| {
        let test_exe = std::env::current_exe().map_err(|e| e.to_string())?;
        // target/<profile>/deps/bridge-<hash> -> target/<profile>
        let dir = test_exe
            .parent()
            .and_then(Path::parent)
            .ok_or("test executable outside a target directory")?
            .to_owned();
        let exe = dir.join("lanparty-relay");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut build = Command::new(cargo);
        // Cargo sets package variables for the test process; handed on, some build scripts see
        // a changed environment and rebuild. Keep only what locates the toolchain and caches.
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy();
            let cargo_var = key.starts_with("CARGO_")
                && !matches!(key.as_ref(), "CARGO_HOME" | "CARGO_TARGET_DIR");
            if cargo_var || key == "OUT_DIR" || key.starts_with("DEP_") {
                build.env_remove(key.as_ref());
            }
        }
        build.args([
            "build",
            "-q",
            "-p",
            "lanparty-relay",
            "--bin",
            "lanparty-relay",
        ]);
        if dir.file_name().is_some_and(|n| n == "release") {
            build.arg("--release");
        }
        if let Some(target_dir) = dir.parent() {
            build.arg("--target-dir").arg(target_dir);
        }
        let built = build.status().map(|s| s.success()).unwrap_or(false);
        if exe.exists() {
            Ok(exe)
        } else {
            Err(format!(
                "lanparty-relay binary missing at {} (cargo build {}): build it with \
                 `cargo build -p lanparty-relay`",
                exe.display(),
                if built { "succeeded" } else { "failed" }
            ))
        }
    })
    .clone()
    .unwrap_or_else(|e| panic!("{e}"))
}

/// Where the relay keeps its certificate, so a restarted relay has the same pin.
pub fn relay_state_dir(lan: &Lan) -> PathBuf {
    std::env::temp_dir().join(format!("lpgw-relay-{}", lan.ns.name()))
}

/// The real relay, running inside the LAN namespace on loopback; killed (SIGKILL) on drop.
pub struct Relay {
    child: Child,
    pub addr: SocketAddr,
    pub pin: Fingerprint,
    log: Arc<Mutex<Vec<String>>>,
}

impl Relay {
    /// Starts `lanparty-relay` on `127.0.0.1:port` (0: any) and reads address and pin from its
    /// banner.
    pub fn start(lan: &Lan, port: u16) -> Self {
        Self::start_with(lan, port, &[])
    }

    /// As [`Self::start`], with extra flags.
    pub fn start_with(lan: &Lan, port: u16, extra: &[&str]) -> Self {
        let mut child = lan
            .ns
            .command(relay_exe())
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(extra)
            .arg("--state-dir")
            .arg(relay_state_dir(lan))
            .args(["--public-host", "127.0.0.1", "--log-format", "json"])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start lanparty-relay");
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&log);
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let (mut addr, mut pin) = (None, None);
        while addr.is_none() || pin.is_none() {
            let Ok(line) = rx.recv_timeout(Duration::from_secs(30)) else {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "lanparty-relay printed no banner; stderr:\n{}",
                    log.lock().unwrap().join("\n")
                );
            };
            if let Some(a) = line.strip_prefix("lanparty-relay listening on udp ") {
                addr = a.trim().parse().ok();
            } else if let Some(p) = line.strip_prefix("certificate fingerprint (sha-256): ") {
                pin = p.trim().parse().ok();
            }
        }
        Self {
            child,
            addr: addr.unwrap(),
            pin: pin.unwrap(),
            log,
        }
    }

    /// The relay's stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        // SIGKILL by the child's handle (its PID): no goodbye, like a crash.
        let _ = self.child.kill();
        let _ = self.child.wait();
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

    /// Waits up to `timeout` for the process to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
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
    pub events: Vec<UplinkEvent>,
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
            server_name: "127.0.0.1".to_owned(),
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
            events: Vec::new(),
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
        while let Some(ev) = self.uplink.poll_event() {
            self.events.push(ev);
        }
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
        assert!(
            self.uplink.send_frame(Instant::now(), &mut f),
            "player could not send"
        );
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
    pub relay: Relay,
    pub lan: Lan,
}

impl Party {
    pub fn start(tag: &str) -> Self {
        let lan = Lan::new(tag);
        let relay = Relay::start(&lan, 0);
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
