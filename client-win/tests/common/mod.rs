//! Test hosts for the client's end-to-end tests: a party LAN namespace with dnsmasq, a scripted
//! relay that bridges the room into it, and clients in namespaces of their own.
#![allow(
    dead_code,
    unreachable_pub,
    reason = "a helper module of test binaries, each using a different part"
)]

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use lanparty_client::adapter::AdapterKind;
use lanparty_client::config::{Addressing, Args, ClientConfig, FileConfig};
use lanparty_client::engine::{EngineOptions, Exit, Stopper};
use lanparty_client::linux::{self, ClientLoop};
use lanparty_client::run;
use lanparty_client::status::AddressStatus;
use lanparty_control::codec::{self, Decoder};
use lanparty_control::link;
use lanparty_control::msg::{
    DisplayName, Message, PROTOCOL_VERSION, PeerId, PeerInfo, Role, Welcome,
};
use lanparty_control::uplink::Uplink;
use lanparty_datapath::Mac;
use lanparty_datapath::budget::Budget;
use lanparty_datapath::frag::{Fragmenter, Reassembler, ReassemblyConfig};
use lanparty_datapath::io::{PortableUdp, open_best};
use lanparty_datapath::quic::tls::{self, Fingerprint, ServerIdentity};
use lanparty_datapath::quic::{ConnId, Driver, DriverConfig, Event};
use lanparty_datapath::runner::Runner;
use lanparty_datapath::sys::netns::{self, Netns};
use lanparty_datapath::sys::tuntap::{TunTap, TunTapConfig};

/// The LAN host: the LAN namespace's own address on its TAP.
pub const LAN_HOST: Ipv4Addr = Ipv4Addr::new(198, 18, 5, 1);
/// The LAN host's MAC.
pub const LAN_MAC: Mac = Mac([0x02, 0x00, 0x5e, 0x00, 0x00, 0xfe]);
/// The room secret every test uses.
pub const SECRET: &str = "correct horse battery";
/// The room's datagram budget in the scripted welcome.
const ROOM_BUDGET: u16 = 1162;

/// What the scripted relay saw.
#[derive(Debug, Default)]
pub struct RelayLog {
    inner: Mutex<LogInner>,
}

#[derive(Debug, Default)]
struct LogInner {
    frames: Vec<Vec<u8>>,
    hellos: usize,
}

impl RelayLog {
    /// Frames that came from clients, whole.
    pub fn frames_from_client(&self) -> Vec<Vec<u8>> {
        self.inner.lock().unwrap().frames.clone()
    }

    /// Hellos answered.
    pub fn hellos(&self) -> usize {
        self.inner.lock().unwrap().hellos
    }

    /// Polls `done` every 10 ms until it holds or `timeout` passes.
    ///
    /// # Errors
    ///
    /// A message when it timed out.
    pub fn wait_until(
        &self,
        timeout: Duration,
        done: impl Fn(&Self) -> bool,
    ) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        while !done(self) {
            if Instant::now() > deadline {
                return Err(format!(
                    "timed out after {timeout:?}; {} frames, {} hellos",
                    self.inner.lock().unwrap().frames.len(),
                    self.hellos()
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }
}

enum Cmd {
    Inject(Vec<u8>),
    Stop,
}

/// A relay stand-in: welcomes every hello into room `party` (with a gateway as the one other
/// member), writes the clients' frames to the LAN TAP and sends the LAN's frames to the client.
struct FakeRelay {
    runner: Runner,
    decoder: Decoder,
    conn: Option<ConnId>,
    joined: bool,
    reassembler: Reassembler<()>,
    fragmenter: Fragmenter,
    frag_buf: BytesMut,
    tap: TunTap,
    log: Arc<RelayLog>,
    buf: Vec<u8>,
}

impl FakeRelay {
    fn run(mut self, commands: Receiver<Cmd>) -> TunTap {
        loop {
            let now = Instant::now();
            self.runner.receive(now);
            while let Some(event) = self.runner.driver().poll_event() {
                self.on_event(now, event);
            }
            while let Ok(Some(n)) = self.tap.read(&mut self.buf) {
                let frame = self.buf[..n].to_vec();
                self.send_to_client(&frame);
            }
            match commands.try_recv() {
                Ok(Cmd::Inject(frame)) => self.send_to_client(&frame),
                Ok(Cmd::Stop) | Err(TryRecvError::Disconnected) => {
                    if let Some(conn) = self.conn {
                        self.runner.driver().close(now, conn, 0, "relay restarting");
                    }
                    let _ = self.runner.transmit(now);
                    return self.tap;
                }
                Err(TryRecvError::Empty) => {}
            }
            self.runner.transmit(now).unwrap();
            self.runner
                .wait(Some(Instant::now() + Duration::from_millis(2)))
                .unwrap();
        }
    }

    fn on_event(&mut self, now: Instant, event: Event) {
        match event {
            Event::Connected { conn, .. } => {
                self.conn = Some(conn);
                self.joined = false;
                self.decoder = Decoder::new();
            }
            Event::ControlBytes { conn, bytes } => {
                self.decoder.push(&bytes);
                while let Ok(Some(msg)) = self.decoder.poll() {
                    if let Message::Hello(_) = msg {
                        self.log.inner.lock().unwrap().hellos += 1;
                        let reply = codec::encode(&welcome()).unwrap();
                        self.runner.driver().write_control(conn, &reply).unwrap();
                        self.joined = true;
                    }
                }
            }
            Event::Datagram { bytes, .. } => {
                if let Some(frame) = self.reassembler.handle_fragment(now, (), bytes) {
                    let _ = self.tap.write(&frame);
                    self.log.inner.lock().unwrap().frames.push(frame.to_vec());
                }
            }
            Event::Closed { conn, .. } if Some(conn) == self.conn => {
                self.conn = None;
                self.joined = false;
            }
            _ => {}
        }
    }

    fn send_to_client(&mut self, frame: &[u8]) {
        let (Some(conn), true) = (self.conn, self.joined) else {
            return;
        };
        let budget = Budget::new(usize::from(ROOM_BUDGET)).unwrap();
        let driver = self.runner.driver();
        let _ = self
            .fragmenter
            .fragment(frame, budget, &mut self.frag_buf, |d: Bytes| {
                let _ = driver.send_datagram(conn, d);
            });
    }
}

fn welcome() -> Message {
    Message::Welcome(Welcome {
        version: PROTOCOL_VERSION,
        peer_id: PeerId(7),
        room_budget: ROOM_BUDGET,
        max_frame: 1518,
        peers: vec![PeerInfo {
            peer_id: PeerId(1),
            role: Role::Gateway,
            mac: LAN_MAC,
            name: DisplayName::new("party gateway").unwrap(),
        }],
    })
}

struct RelayHandle {
    commands: Sender<Cmd>,
    thread: Option<JoinHandle<TunTap>>,
}

impl RelayHandle {
    fn start(
        addr: SocketAddr,
        identity_dir: &std::path::Path,
        tap: TunTap,
        log: Arc<RelayLog>,
    ) -> (Self, SocketAddr) {
        let identity =
            ServerIdentity::load_or_generate(identity_dir, &["relay.test".to_owned()]).unwrap();
        let server = Driver::new(
            DriverConfig::default(),
            Some(tls::server_crypto(identity).unwrap()),
        );
        let udp = PortableUdp::bind(addr).unwrap();
        let runner = Runner::new(server, Box::new(udp));
        let bound = runner.local_addr();
        let relay = FakeRelay {
            runner,
            decoder: Decoder::new(),
            conn: None,
            joined: false,
            reassembler: Reassembler::new(ReassemblyConfig::default()),
            // The relay sends the LAN's frames as the gateway member (peer id 1) would.
            fragmenter: Fragmenter::new(1),
            frag_buf: BytesMut::with_capacity(64 * 1024),
            tap,
            log,
            buf: vec![0u8; 65536],
        };
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::spawn(move || relay.run(rx));
        (
            Self {
                commands: tx,
                thread: Some(thread),
            },
            bound,
        )
    }

    fn stop(&mut self) -> Option<TunTap> {
        let _ = self.commands.send(Cmd::Stop);
        self.thread.take().and_then(|t| t.join().ok())
    }
}

impl Drop for RelayHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Kills a child process (by its PID) when dropped.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The party: LAN namespace with dnsmasq, the scripted relay, a temp dir.
pub struct Party {
    relay: Option<RelayHandle>,
    relay_addr: SocketAddr,
    pin: Fingerprint,
    log: Arc<RelayLog>,
    _dnsmasq: ChildGuard,
    lan: Netns,
    dir: PathBuf,
}

/// True when `program` runs (`--version`).
pub fn have_program(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl Party {
    /// Builds the party, or prints why the test skips and returns `None`.
    pub fn start(test: &str) -> Option<Self> {
        if !netns::require_root(test) {
            return None;
        }
        if !have_program("dnsmasq") {
            eprintln!(
                "SKIP {test}: dnsmasq is not installed (it plays the party LAN's DHCP server)"
            );
            return None;
        }
        let dir = std::env::temp_dir().join(format!(
            "lp-client-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let lan = Netns::create("lan").unwrap();
        let tap = lan
            .run_in(|| {
                let tap = TunTap::create(&TunTapConfig::tap("lplan0")).unwrap();
                tap.set_mtu(1500).unwrap();
                tap.set_mac(LAN_MAC).unwrap();
                tap.set_up().unwrap();
                tap.set_ipv4(LAN_HOST, 24).unwrap();
                tap
            })
            .unwrap();
        let log_file = std::fs::File::create(dir.join("dnsmasq.log")).unwrap();
        let mut cmd = lan.command("dnsmasq");
        cmd.args([
            "--no-daemon",
            "--conf-file=/dev/null",
            "--port=0",
            "--interface=lplan0",
            "--bind-interfaces",
            "--dhcp-range=198.18.5.100,198.18.5.150,255.255.255.0,10m",
            "--no-ping",
            "--user=root",
            "--group=root",
            "--log-facility=-",
            "--log-dhcp",
        ])
        .arg(format!("--dhcp-leasefile={}", dir.join("leases").display()))
        .arg(format!("--pid-file={}", dir.join("dnsmasq.pid").display()))
        .stdout(Stdio::null())
        .stderr(log_file);
        let dnsmasq = ChildGuard(cmd.spawn().expect("dnsmasq starts"));
        // Give dnsmasq a moment to bind; a DISCOVER it misses is retransmitted anyway.
        std::thread::sleep(Duration::from_millis(300));
        let log = Arc::new(RelayLog::default());
        let identity_dir = dir.join("relay");
        let (relay, relay_addr) = RelayHandle::start(
            "127.0.0.1:0".parse().unwrap(),
            &identity_dir,
            tap,
            Arc::clone(&log),
        );
        let pin = ServerIdentity::load_or_generate(&identity_dir, &[])
            .unwrap()
            .fingerprint();
        Some(Self {
            relay: Some(relay),
            relay_addr,
            pin,
            log,
            _dnsmasq: dnsmasq,
            lan,
            dir,
        })
    }

    /// The relay's address.
    pub fn relay_addr(&self) -> SocketAddr {
        self.relay_addr
    }

    /// The relay certificate's fingerprint.
    pub fn pin(&self) -> Fingerprint {
        self.pin
    }

    /// The temp dir of this party.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// The LAN namespace.
    pub fn lan(&self) -> &Netns {
        &self.lan
    }

    /// Gives the LAN host and `client` unique local IPv6 addresses on one /64 and returns the
    /// LAN host's.
    pub fn add_v6(&self, client: &Client) -> Ipv6Addr {
        let lan_v6 = netns::test_v6(5, 1);
        self.lan
            .ip(&[
                "addr",
                "add",
                &format!("{lan_v6}/64"),
                "dev",
                "lplan0",
                "nodad",
            ])
            .unwrap();
        let client_v6 = format!("{}/64", netns::test_v6(5, 2));
        client
            .ns
            .ip(&["addr", "add", &client_v6, "dev", "lpcl0", "nodad"])
            .unwrap();
        lan_v6
    }

    /// What the relay saw.
    pub fn relay_log(&self) -> &RelayLog {
        &self.log
    }

    /// Sends a frame from the relay side to the client.
    pub fn inject(&self, frame: Vec<u8>) {
        let relay = self.relay.as_ref().unwrap();
        relay.commands.send(Cmd::Inject(frame)).unwrap();
    }

    /// Closes the client's connection, drops the relay's QUIC state and starts a fresh relay
    /// on the same port with the same certificate.
    pub fn restart_relay(&mut self) {
        let tap = self
            .relay
            .take()
            .unwrap()
            .stop()
            .expect("the relay thread ends");
        let (relay, addr) = RelayHandle::start(
            self.relay_addr,
            &self.dir.join("relay"),
            tap,
            Arc::clone(&self.log),
        );
        assert_eq!(addr, self.relay_addr);
        self.relay = Some(relay);
    }

    /// A client in a namespace of its own, running its loop on a thread.
    pub fn client(&self, kind: AdapterKind, mac: &str) -> Client {
        ClientSpec::new(kind, mac, self.relay_addr, self.pin).spawn()
    }
}

/// How to build a library client for a test.
pub struct ClientSpec<'a> {
    /// Adapter kind.
    pub kind: AdapterKind,
    /// Our MAC.
    pub mac: Mac,
    /// The relay.
    pub relay: SocketAddr,
    /// The relay's certificate.
    pub pin: Fingerprint,
    /// DHCP or static.
    pub addressing: Addressing,
    /// Where the UDP socket lives (`None`: the test's namespace).
    pub socket_ns: Option<&'a Netns>,
    /// The adapter's interface name.
    pub ifname: &'static str,
    /// Open the adapter with TCP offloads (vnet header, TSO).
    pub offloads: bool,
}

impl<'a> ClientSpec<'a> {
    /// DHCP, socket in the test's namespace, interface `lpcl0`.
    pub fn new(kind: AdapterKind, mac: &str, relay: SocketAddr, pin: Fingerprint) -> Self {
        Self {
            kind,
            mac: mac.parse().unwrap(),
            relay,
            pin,
            addressing: Addressing::Dhcp,
            socket_ns: None,
            ifname: "lpcl0",
            offloads: true,
        }
    }

    /// Creates the client's namespace and adapter and runs the loop on a thread.
    pub fn spawn(self) -> Client {
        let ns = Netns::create("cl").unwrap();
        let (kind, mac, ifname, offloads) = (self.kind, self.mac, self.ifname, self.offloads);
        let dev = ns
            .run_in(|| linux::open_adapter_with(kind, ifname, mac, offloads))
            .unwrap()
            .expect("the adapter opens");
        let args = Args {
            relay: Some(self.relay.to_string()),
            room: Some("party".into()),
            secret: Some(SECRET.into()),
            pin: Some(link::fingerprint_hex(&self.pin.0)),
            adapter: Some(kind.word().into()),
            mac: Some(mac.to_string()),
            display_name: Some("tester".into()),
            ..Args::default()
        };
        let config = ClientConfig::resolve(args, FileConfig::default()).unwrap();
        let uplink_config = run::uplink_config(&config, mac, self.relay, 1).unwrap();
        let open = || open_best("127.0.0.1:0".parse().unwrap()).unwrap();
        let backend = match self.socket_ns {
            Some(sns) => sns.run_in(open).unwrap(),
            None => open(),
        };
        let runner = Runner::new(Driver::new(DriverConfig::default(), None), backend);
        let uplink = Uplink::new(Instant::now(), runner, uplink_config);
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        let options = EngineOptions {
            mac,
            addressing: self.addressing,
            hostname: Some("tester".into()),
            seed: 2,
            dhcp_on_l2: true,
        };
        let mut client = linux::client_loop(
            uplink,
            dev,
            options,
            Box::new(move |line: &str| sink.lock().unwrap().push(line.to_owned())),
        )
        .unwrap();
        let stopper = client.stopper();
        let thread = std::thread::spawn(move || {
            let exit = client.run();
            (client, exit)
        });
        Client {
            stopper,
            thread: Some(thread),
            lines,
            mac,
            ifname,
            ns,
        }
    }
}

impl Drop for Party {
    fn drop(&mut self) {
        if let Some(mut relay) = self.relay.take() {
            relay.stop();
        }
        if std::thread::panicking()
            && let Ok(log) = std::fs::read_to_string(self.dir.join("dnsmasq.log"))
        {
            eprintln!("dnsmasq said:\n{log}");
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

type LoopThread = JoinHandle<(ClientLoop, std::io::Result<Exit>)>;

/// A client loop on its thread, in its namespace.
pub struct Client {
    stopper: Stopper,
    thread: Option<LoopThread>,
    lines: Arc<Mutex<Vec<String>>>,
    /// Our MAC.
    pub mac: Mac,
    /// The adapter's interface name.
    pub ifname: &'static str,
    /// The client's namespace (dropped last).
    pub ns: Netns,
}

impl Client {
    /// Every status line so far.
    pub fn status_lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Waits until a status line satisfies `done`.
    pub fn wait_for_status(&self, timeout: Duration, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self.status_lines().into_iter().rev().find(|l| done(l)) {
                return line;
            }
            assert!(
                Instant::now() < deadline,
                "no matching status line within {timeout:?}: {:?}",
                self.status_lines()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for the DHCP lease and returns the address.
    pub fn wait_for_lease(&self, timeout: Duration) -> Ipv4Addr {
        let line = self.wait_for_status(timeout, |l| l.contains("got address "));
        let rest = line.split("got address ").nth(1).unwrap();
        rest.split('/').next().unwrap().parse().unwrap()
    }

    /// Stops the loop and returns it (the device still exists until it is dropped).
    pub fn stop(&mut self) -> ClientLoop {
        self.stopper.stop();
        let started = Instant::now();
        let (client, exit) = self.thread.take().unwrap().join().unwrap();
        assert_eq!(exit.unwrap(), Exit::Stopped);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        client
    }

    /// Stops the loop, drops it and checks that the device is gone.
    pub fn stop_and_check_removed(mut self) {
        let client = self.stop();
        assert!(matches!(
            client.address(),
            AddressStatus::Leased { .. } | AddressStatus::Static { .. }
        ));
        let dropped = Instant::now();
        drop(client);
        // The kernel removes the device once the last reference to its fd is gone; io_uring
        // tears its ring down asynchronously, so allow it a moment.
        while self.ns.ip(&["link", "show", self.ifname]).is_ok() {
            assert!(
                dropped.elapsed() < Duration::from_secs(1),
                "the adapter outlived the client by a second"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        eprintln!(
            "adapter removed {:?} after the loop was dropped",
            dropped.elapsed()
        );
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            self.stopper.stop();
            let _ = thread.join();
        }
    }
}

/// An Ethernet/IPv4/UDP frame from the LAN host (port 5555) to `dst`.
pub fn udp_frame(dst_mac: Mac, dst: Ipv4Addr, port: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(42 + payload.len());
    f.extend_from_slice(&dst_mac.0);
    f.extend_from_slice(&LAN_MAC.0);
    f.extend_from_slice(&[0x08, 0x00]);
    let total = u16::try_from(20 + 8 + payload.len()).unwrap();
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&LAN_HOST.octets());
    ip[16..20].copy_from_slice(&dst.octets());
    let ck = checksum(&ip);
    ip[10..12].copy_from_slice(&ck.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&5555u16.to_be_bytes());
    f.extend_from_slice(&port.to_be_bytes());
    f.extend_from_slice(&(total - 20).to_be_bytes());
    f.extend_from_slice(&[0, 0]); // no UDP checksum (allowed over IPv4)
    f.extend_from_slice(payload);
    f
}

fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}
