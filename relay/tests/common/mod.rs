//! A test relay started in-process on 127.0.0.1:0 and a small test peer: a QUIC client with
//! its own [`Runner`] that pins the relay's fingerprint, speaks the control protocol and sends
//! and receives overlay datagrams.

#![allow(dead_code, unreachable_pub, missing_docs)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use lanparty_control::codec::{self, Decoder};
use lanparty_control::msg::{
    DisplayName, Hello, Message, PROTOCOL_VERSION, RejectCode, Role, RoomCode, Secret, Welcome,
};
use lanparty_datapath::Mac;
use lanparty_datapath::io::PortableUdp;
use lanparty_datapath::quic::tls::{self, ClientTrust, Fingerprint};
use lanparty_datapath::quic::{ConnId, Driver, DriverConfig, Event};
use lanparty_datapath::runner::Runner;
use lanparty_datapath::wire::overlay;
use lanparty_relay::{RelayConfig, RelayHandle, StatusReport};

pub const WAIT: Duration = Duration::from_secs(5);

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A relay on its threads, stopped and its state directory removed on drop.
pub struct TestRelay {
    pub handle: Option<RelayHandle>,
    pub dir: PathBuf,
}

pub fn state_dir() -> PathBuf {
    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    std::env::temp_dir().join(format!("lp-relay-test-{}-{n}", std::process::id()))
}

impl TestRelay {
    pub fn start() -> Self {
        Self::start_with(|_| {})
    }

    pub fn start_with(tweak: impl FnOnce(&mut RelayConfig)) -> Self {
        let dir = state_dir();
        let mut config = RelayConfig::new("127.0.0.1:0".parse().unwrap(), &dir);
        tweak(&mut config);
        let handle = lanparty_relay::start(config).expect("relay starts");
        Self {
            handle: Some(handle),
            dir,
        }
    }

    pub fn handle(&self) -> &RelayHandle {
        self.handle.as_ref().unwrap()
    }

    pub fn addr(&self) -> SocketAddr {
        self.handle().local_addr()
    }

    pub fn fingerprint(&self) -> Fingerprint {
        self.handle().fingerprint()
    }

    pub fn status(&self) -> StatusReport {
        self.handle().status().expect("relay answers status")
    }

    pub fn connect(&self) -> TestPeer {
        TestPeer::connect(self.addr(), self.fingerprint())
    }

    /// Connects and joins `room` as a client with `mac`; panics unless welcomed.
    pub fn join(&self, room: &str, mac: Mac, name: &str) -> (TestPeer, Welcome) {
        let mut peer = self.connect();
        peer.send(&Message::Hello(hello(Role::Client, room, mac, name)));
        let welcome = peer.expect_welcome();
        (peer, welcome)
    }

    pub fn shutdown(&mut self) {
        if let Some(handle) = self.handle.take() {
            handle.shutdown("test over").expect("relay stops cleanly");
        }
    }
}

impl Drop for TestRelay {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            let _ = handle.shutdown("test over");
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub const SECRET: &str = "correct horse";

pub fn mac(last: u8) -> Mac {
    Mac([0x02, 0x5e, 0x10, 0x00, 0x00, last])
}

pub fn hello(role: Role, room: &str, mac: Mac, name: &str) -> Hello {
    Hello {
        version: PROTOCOL_VERSION,
        role,
        room: RoomCode::new(room).unwrap(),
        mac,
        secret: Secret::new(SECRET).unwrap(),
        gateway_token: None,
        datagram_budget: 1452,
        name: DisplayName::new(name).unwrap(),
    }
}

/// A QUIC client speaking to the relay.
pub struct TestPeer {
    runner: Runner,
    pub conn: ConnId,
    decoder: Decoder,
    pub messages: VecDeque<Message>,
    pub datagrams: VecDeque<Bytes>,
    pub connected: bool,
    pub closed: Option<String>,
    pub decode_error: Option<String>,
}

impl TestPeer {
    /// Connects and waits for the handshake.
    pub fn connect(relay: SocketAddr, pin: Fingerprint) -> Self {
        let mut peer = Self::connect_nowait(relay, pin);
        assert!(
            peer.pump_until(WAIT, |p| p.connected || p.closed.is_some()),
            "handshake with the relay did not finish"
        );
        assert!(peer.connected, "handshake failed: {:?}", peer.closed);
        peer
    }

    pub fn connect_nowait(relay: SocketAddr, pin: Fingerprint) -> Self {
        Self::connect_from("127.0.0.1:0".parse().unwrap(), relay, pin)
    }

    /// Starts a connection from a socket bound to `local` (another loopback address stands for
    /// another host).
    pub fn connect_from(local: SocketAddr, relay: SocketAddr, pin: Fingerprint) -> Self {
        let backend = PortableUdp::bind(local).expect("bind");
        let mut driver = Driver::new(DriverConfig::default(), None);
        let client = tls::client_config(&ClientTrust::Pinned(pin)).unwrap();
        let conn = driver
            .connect(Instant::now(), relay, "lanparty-relay", client)
            .expect("connect");
        Self {
            runner: Runner::new(driver, Box::new(backend)),
            conn,
            decoder: Decoder::new(),
            messages: VecDeque::new(),
            datagrams: VecDeque::new(),
            connected: false,
            closed: None,
            decode_error: None,
        }
    }

    /// One loop turn, sleeping at most `max_wait`.
    pub fn turn(&mut self, max_wait: Duration) {
        let now = Instant::now();
        self.runner.receive(now);
        while let Some(ev) = self.runner.driver().poll_event() {
            match ev {
                Event::Connected { .. } => self.connected = true,
                Event::ControlBytes { bytes, .. } => {
                    let mut rest = &bytes[..];
                    while !rest.is_empty() {
                        let took = self.decoder.push(rest);
                        rest = &rest[took..];
                        loop {
                            match self.decoder.poll() {
                                Ok(Some(m)) => self.messages.push_back(m),
                                Ok(None) => break,
                                Err(e) => {
                                    self.decode_error = Some(e.to_string());
                                    rest = &[];
                                    break;
                                }
                            }
                        }
                        if took == 0 {
                            break;
                        }
                    }
                }
                Event::Datagram { bytes, .. } => self.datagrams.push_back(bytes),
                Event::Closed { reason, .. } => self.closed = Some(reason),
                _ => {}
            }
        }
        self.runner.transmit(now).expect("transmit");
        let _ = self.runner.wait(Some(Instant::now() + max_wait));
    }

    /// Runs turns until `done` holds or `timeout` passes; returns whether `done` held.
    pub fn pump_until(
        &mut self,
        timeout: Duration,
        mut done: impl FnMut(&mut Self) -> bool,
    ) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if done(self) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            self.turn((deadline - now).min(Duration::from_millis(20)));
        }
    }

    /// Runs turns for `span`.
    pub fn pump_for(&mut self, span: Duration) {
        self.pump_until(span, |_| false);
    }

    pub fn send(&mut self, msg: &Message) {
        let bytes = codec::encode(msg).unwrap();
        self.send_raw_control(&bytes);
    }

    pub fn send_raw_control(&mut self, bytes: &[u8]) {
        self.runner
            .driver()
            .write_control(self.conn, bytes)
            .expect("write control");
        self.turn(Duration::ZERO);
    }

    /// The next control message within `timeout`.
    pub fn next_message(&mut self, timeout: Duration) -> Option<Message> {
        self.pump_until(timeout, |p| !p.messages.is_empty() || p.closed.is_some());
        self.messages.pop_front()
    }

    /// The next message that is not periodic stats or a room budget (which follows PMTUD in
    /// the background).
    pub fn next_notice(&mut self, timeout: Duration) -> Option<Message> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_message(left)? {
                Message::Stats(_) | Message::RoomBudget(_) => continue,
                m => return Some(m),
            }
        }
    }

    pub fn expect_welcome(&mut self) -> Welcome {
        match self.next_notice(WAIT) {
            Some(Message::Welcome(w)) => w,
            other => panic!(
                "expected a welcome, got {other:?} (closed: {:?})",
                self.closed
            ),
        }
    }

    /// Waits for a reject: from the control stream, or, when the stream never opened, from the
    /// close reason. Returns the code and the reason text; also waits for the close.
    pub fn expect_reject(&mut self) -> (RejectCode, String) {
        let msg = self.next_notice(WAIT);
        let closed = self.wait_closed(WAIT);
        match msg {
            Some(Message::Reject(r)) => (r.code, r.reason),
            None => {
                let reason = closed.expect("connection closed with a reason");
                let code = RejectCode::ALL
                    .into_iter()
                    .find(|c| reason.contains(&format!("{c}:")))
                    .unwrap_or_else(|| panic!("no reject code in close reason {reason:?}"));
                (code, reason)
            }
            other => panic!("expected a reject, got {other:?}"),
        }
    }

    /// Waits until the connection is closed; returns the reason.
    pub fn wait_closed(&mut self, timeout: Duration) -> Option<String> {
        self.pump_until(timeout, |p| p.closed.is_some());
        self.closed.clone()
    }

    /// Sends one Ethernet frame whole.
    pub fn send_frame(&mut self, frame: &[u8]) {
        self.send_datagram(Bytes::from(overlay::encode_whole(frame)));
    }

    pub fn send_datagram(&mut self, datagram: Bytes) {
        self.runner
            .driver()
            .send_datagram(self.conn, datagram)
            .expect("send datagram");
        self.turn(Duration::ZERO);
    }

    /// Collects datagrams for `span`.
    pub fn collect_for(&mut self, span: Duration) -> Vec<Bytes> {
        self.pump_for(span);
        self.datagrams.drain(..).collect()
    }

    /// Waits for `n` datagrams (or `timeout`) and returns those received.
    pub fn collect(&mut self, n: usize, timeout: Duration) -> Vec<Bytes> {
        self.pump_until(timeout, |p| p.datagrams.len() >= n);
        self.datagrams.drain(..).collect()
    }

    pub fn max_datagram_size(&mut self) -> Option<usize> {
        self.runner.driver().max_datagram_size(self.conn)
    }
}

/// An Ethernet frame `dst`, `src`, `ethertype`, `payload`.
pub fn ether(dst: Mac, src: Mac, ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + payload.len());
    f.extend_from_slice(&dst.0);
    f.extend_from_slice(&src.0);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// A frame carrying a sequence tag, so receivers can tell frames apart.
pub fn tagged(dst: Mac, src: Mac, tag: u32) -> Vec<u8> {
    let mut payload = vec![0u8; 46];
    payload[..4].copy_from_slice(&tag.to_be_bytes());
    // An experimental EtherType (IEEE 802 local experimental 1): no filter looks at it.
    ether(dst, src, 0x88b5, &payload)
}

/// The Ethernet frame inside a whole-frame overlay datagram.
pub fn frame_of(datagram: &[u8]) -> &[u8] {
    assert_eq!(datagram[0], 0x10, "a whole-frame datagram");
    &datagram[1..]
}

/// A DHCPv4 offer (UDP 67 -> 68, BOOTREPLY) from `src` to broadcast.
pub fn dhcp_offer(src: Mac) -> Vec<u8> {
    let mut ip = vec![
        0x45, 0, 0, 0, 0, 0, 0, 0, 64, 17, 0, 0, 198, 18, 0, 1, 255, 255, 255, 255,
    ];
    let mut udp = vec![0, 67, 0, 68, 0, 0, 0, 0];
    let mut bootp = vec![0u8; 240];
    bootp[0] = 2; // BOOTREPLY
    let udp_len = (udp.len() + bootp.len()) as u16;
    udp[4..6].copy_from_slice(&udp_len.to_be_bytes());
    let total = (20 + udp_len) as u16;
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip.extend_from_slice(&udp);
    ip.extend_from_slice(&bootp);
    ether(Mac::BROADCAST, src, 0x0800, &ip)
}

/// An ICMPv6 router advertisement from `src` to all-nodes.
pub fn router_advertisement(src: Mac) -> Vec<u8> {
    let icmp = [134u8, 0, 0, 0, 64, 0, 0x07, 0x08, 0, 0, 0, 0, 0, 0, 0, 0];
    let mut ip = vec![0x60, 0, 0, 0, 0, icmp.len() as u8, 58, 255];
    ip.extend_from_slice(&[0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    ip.extend_from_slice(&[0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    ip.extend_from_slice(&icmp);
    ether(Mac([0x33, 0x33, 0, 0, 0, 1]), src, 0x86dd, &ip)
}

/// An STP BPDU (802.3 length field, LLC 42/42) from `src`.
pub fn bpdu(src: Mac) -> Vec<u8> {
    let mut payload = vec![0x42, 0x42, 0x03];
    payload.extend_from_slice(&[0u8; 35]);
    let len = payload.len() as u16;
    ether(Mac([0x01, 0x80, 0xc2, 0, 0, 0]), src, len, &payload)
}

/// An IPX frame (Ethernet II, EtherType 0x8137) broadcast from `src`.
pub fn ipx(src: Mac) -> Vec<u8> {
    let mut payload = vec![0xff, 0xff, 0, 30, 0, 0x04];
    payload.extend_from_slice(&[0u8; 24]);
    ether(Mac::BROADCAST, src, 0x8137, &payload)
}
