//! `bench relay`: frames through a relay on loopback, our relay against a `quinn` baseline
//! ([`super::relay_ref`]) with the same switch, both measured in the same run.
//!
//! # What runs where
//!
//! - The relay under test runs in this process on its own threads: ours as
//!   [`lanparty_relay::start`] starts it (`relay-datapath` and `relay-control`), the baseline on
//!   one `ref-relay` thread (a tokio current-thread runtime). Relay CPU is the sum of those
//!   threads' on-CPU time from `/proc/self/task/<tid>/schedstat` (nanoseconds, read before and
//!   after the measured window), so the control thread counts too.
//! - The peers are [`Fleet`]s: one [`Runner`] (our QUIC driver on one UDP socket) holding many
//!   client connections, each joined to a room through the real control protocol. A throughput
//!   run puts the sender and every receiver into one fleet on one load thread, and gives the
//!   relay a core of its own: its threads are pinned to the last CPU, the load thread to the
//!   others, for that run only (the latency runs are placed by the scheduler, as before).
//!
//! # Throughput
//!
//! One sender sends whole frames of 64 or 1400 bytes (Ethernet header included; the overlay
//! datagram is one byte longer) as fast as its QUIC connection takes them, keeping at most about
//! 48 KiB queued in its own driver so that it does not burn CPU on frames it would drop itself.
//! Unicast goes to one receiver's MAC; broadcast goes to `ff:ff:ff:ff:ff:ff` in a room of one
//! sender and eight receivers (the rooms' broadcast budget is disabled for the run, as it would
//! otherwise cut the flood to 200 frames/s by design). After a warm-up (PMTUD climbs to
//! 1472-byte packets), the measured window counts datagrams that reached receivers ("forwarded"
//! = egress datagrams delivered) and the relay CPU spent meanwhile.
//!
//! # Latency
//!
//! Peer A pings peer B with 64-byte frames, one in flight at a time, alternating two paths
//! between the same two peers: through the relay (A→relay→B→relay→A: four one-way legs and two
//! relay passes) and over a direct QUIC connection A→B (two legs). The relay hop adds
//! `(relay RTT − direct RTT) / 2` one way: the difference is one extra leg plus one relay pass
//! per direction. Quantiles are taken of each path separately and subtracted quantile by
//! quantile. "Under load" repeats this while a second pair saturates the relay with a bulk
//! 1400-byte unicast flow in another room; the direct path then runs under the same CPU
//! contention, so the difference is what the relay's queues add.

use crate::stats::Spread;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use lanparty_control::msg::{DisplayName, Hello, PROTOCOL_VERSION, Role, RoomCode, Secret};
use lanparty_control::peer::{PeerControl, PeerEvent};
use lanparty_datapath::Mac;
use lanparty_datapath::io::PortableUdp;
use lanparty_datapath::quic::tls::{self, ClientTrust, Fingerprint, ServerIdentity};
use lanparty_datapath::quic::{ClientConfig, ConnId, Driver, DriverConfig, Event};
use lanparty_datapath::runner::Runner;
use lanparty_datapath::switch::RoomConfig;
use lanparty_datapath::wire::overlay;
use serde::Serialize;

use super::relay_ref::RefRelay;
use crate::stats;

/// Secret of every benchmark room.
pub(crate) const SECRET: &str = "lanparty-bench";
/// How long a closed-loop sender waits for progress before it writes its window off as lost.
const STALL: Duration = Duration::from_millis(5);
/// How long setting up peers may take.
const SETUP: Duration = Duration::from_secs(15);

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A fresh number for room codes and state directories.
pub(crate) fn unique() -> usize {
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// A locally administered MAC numbered `n`.
pub(crate) fn mac(n: u32) -> Mac {
    let b = n.to_be_bytes();
    Mac([0x02, 0x5e, b[0], b[1], b[2], b[3]])
}

/// The hello a benchmark client sends.
pub(crate) fn hello(room: &str, mac: Mac, name: &str) -> anyhow::Result<Hello> {
    Ok(Hello {
        version: PROTOCOL_VERSION,
        role: Role::Client,
        room: RoomCode::new(room)?,
        mac,
        secret: Secret::new(SECRET)?,
        gateway_token: None,
        datagram_budget: 1452,
        name: DisplayName::new(name)?,
    })
}

/// A whole-frame overlay datagram carrying an Ethernet frame of `len` bytes (at least 14)
/// from `src` to `dst` with an experimental EtherType.
pub(crate) fn frame(dst: Mac, src: Mac, len: usize) -> Bytes {
    let mut f = Vec::with_capacity(len.max(14));
    f.extend_from_slice(&dst.0);
    f.extend_from_slice(&src.0);
    f.extend_from_slice(&0x88b5u16.to_be_bytes());
    f.resize(len.max(14), 0xa5);
    Bytes::from(overlay::encode_whole(&f))
}

/// This process's threads whose name is one of `names`: their `/proc/self/task` entries.
fn named_threads(names: &[&str]) -> anyhow::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc/self/task").context("reading /proc/self/task")? {
        let dir = entry?.path();
        let Ok(comm) = std::fs::read_to_string(dir.join("comm")) else {
            continue;
        };
        if names.contains(&comm.trim_end()) {
            found.push(dir);
        }
    }
    if found.is_empty() {
        bail!("no thread named {names:?} in this process");
    }
    Ok(found)
}

/// Thread ids of this process's threads whose name is one of `names`.
fn thread_ids(names: &[&str]) -> anyhow::Result<Vec<libc::pid_t>> {
    named_threads(names)?
        .iter()
        .map(|dir| {
            dir.file_name()
                .and_then(|n| n.to_str()?.parse().ok())
                .with_context(|| format!("odd task entry {}", dir.display()))
        })
        .collect()
}

/// A relay on a core of its own (its threads and the load thread pinned); every CPU again for
/// all of them when dropped, so the latency runs that follow are placed by the scheduler.
struct Pinned {
    cpus: usize,
    relay: Vec<libc::pid_t>,
}

impl Drop for Pinned {
    fn drop(&mut self) {
        for &tid in &self.relay {
            let _ = crate::sys::set_affinity(tid, 0..self.cpus);
        }
        let _ = crate::sys::set_affinity(0, 0..self.cpus);
    }
}

/// On-CPU nanoseconds of this process's threads whose name is one of `names`.
pub(crate) fn threads_cpu(names: &[&str]) -> anyhow::Result<Duration> {
    let mut total = 0u64;
    for dir in named_threads(names)? {
        let Ok(sched) = std::fs::read_to_string(dir.join("schedstat")) else {
            continue;
        };
        let ns: u64 = sched
            .split_whitespace()
            .next()
            .and_then(|v| v.parse().ok())
            .context("malformed schedstat")?;
        total += ns;
    }
    Ok(Duration::from_nanos(total))
}

/// One client connection of a [`Fleet`].
#[derive(Debug)]
pub(crate) struct Member {
    pub(crate) conn: ConnId,
    pub(crate) mac: Mac,
    control: PeerControl,
    pub(crate) joined: bool,
    pub(crate) failed: Option<String>,
    pub(crate) received: u64,
    pub(crate) received_bytes: u64,
}

/// Many QUIC connections on one [`Runner`] (one UDP socket, one thread).
#[derive(Debug)]
pub(crate) struct Fleet {
    runner: Runner,
    client: ClientConfig,
    pub(crate) members: Vec<Member>,
    /// Member index by connection index.
    by_conn: Vec<Option<usize>>,
    /// Connections that are not members (direct connections), once connected.
    pub(crate) others_connected: Vec<ConnId>,
    pub(crate) joined: usize,
    pub(crate) failed: usize,
}

impl Fleet {
    /// A fleet on a fresh loopback socket trusting `pin`; with `server` it also accepts
    /// connections (a peer reachable directly).
    pub(crate) fn new(pin: Fingerprint, server: Option<ServerIdentity>) -> anyhow::Result<Self> {
        let backend = PortableUdp::bind("127.0.0.1:0".parse()?)?;
        let crypto = match server {
            Some(identity) => Some(tls::server_crypto(identity)? as _),
            None => None,
        };
        let mut config = DriverConfig::default();
        config.max_connections = 1 << 16;
        let driver = Driver::new(config, crypto);
        Ok(Self {
            runner: Runner::new(driver, Box::new(backend)),
            client: tls::client_config(&ClientTrust::Pinned(pin))?,
            members: Vec::new(),
            by_conn: Vec::new(),
            others_connected: Vec::new(),
            joined: 0,
            failed: 0,
        })
    }

    /// The fleet's UDP address.
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.runner.local_addr()
    }

    /// The driver.
    pub(crate) fn driver(&mut self) -> &mut Driver {
        self.runner.driver()
    }

    /// Starts a connection to `relay` that joins `room` with `mac`; returns the member index.
    pub(crate) fn join(
        &mut self,
        now: Instant,
        relay: SocketAddr,
        room: &str,
        mac: Mac,
    ) -> anyhow::Result<usize> {
        let idx = self.members.len();
        let hello = hello(room, mac, &format!("bench-{idx}"))?;
        let conn =
            self.runner
                .driver()
                .connect(now, relay, "lanparty-relay", self.client.clone())?;
        self.set_member(conn, idx);
        self.members.push(Member {
            conn,
            mac,
            control: PeerControl::new(hello),
            joined: false,
            failed: None,
            received: 0,
            received_bytes: 0,
        });
        Ok(idx)
    }

    /// Starts a plain connection (no control protocol) to a peer trusted by `pin`.
    pub(crate) fn connect_direct(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        pin: Fingerprint,
    ) -> anyhow::Result<ConnId> {
        let client = tls::client_config(&ClientTrust::Pinned(pin))?;
        Ok(self.runner.driver().connect(now, peer, "peer", client)?)
    }

    fn set_member(&mut self, conn: ConnId, idx: usize) {
        let i = conn.index();
        if self.by_conn.len() <= i {
            self.by_conn.resize(i + 1, None);
        }
        self.by_conn[i] = Some(idx);
    }

    fn member_of(&self, conn: ConnId) -> Option<usize> {
        self.by_conn.get(conn.index()).copied().flatten()
    }

    /// One loop turn: receive, handle events (datagrams go to `on_datagram` with the member
    /// index, `None` for a non-member connection), transmit, then, if there was no event, wait
    /// until `deadline` (`None`: do not wait).
    pub(crate) fn turn(
        &mut self,
        deadline: Option<Instant>,
        mut on_datagram: impl FnMut(&mut Driver, Option<usize>, ConnId, Bytes),
    ) -> anyhow::Result<()> {
        let now = Instant::now();
        self.runner.receive(now);
        let mut busy = false;
        while let Some(event) = self.runner.driver().poll_event() {
            busy = true;
            match event {
                Event::Datagram { conn, bytes } => {
                    let m = self.member_of(conn);
                    if let Some(m) = m {
                        let member = &mut self.members[m];
                        member.received += 1;
                        member.received_bytes += bytes.len() as u64 - 1;
                    }
                    on_datagram(self.runner.driver(), m, conn, bytes);
                }
                Event::Connected { conn, .. } => match self.member_of(conn) {
                    Some(m) => {
                        let hello = self.members[m].control.on_connected();
                        if let Err(e) = self.runner.driver().write_control(conn, &hello) {
                            self.fail(m, format!("writing the hello: {e}"));
                        }
                    }
                    None => self.others_connected.push(conn),
                },
                Event::ControlBytes { conn, bytes } => {
                    if let Some(m) = self.member_of(conn) {
                        self.members[m].control.handle_bytes(&bytes);
                        while let Some(ev) = self.members[m].control.poll_event() {
                            match ev {
                                PeerEvent::Joined(_) if !self.members[m].joined => {
                                    self.members[m].joined = true;
                                    self.joined += 1;
                                }
                                PeerEvent::Rejected { reason, .. } => self.fail(m, reason),
                                PeerEvent::ProtocolError(e) => self.fail(m, e),
                                _ => {}
                            }
                        }
                    }
                }
                Event::Closed { conn, reason, .. } => {
                    if let Some(m) = self.member_of(conn) {
                        self.fail(m, reason);
                        if let Some(slot) = self.by_conn.get_mut(conn.index()) {
                            *slot = None;
                        }
                    }
                }
                _ => {}
            }
        }
        self.runner.transmit(now)?;
        // Sleep only when this turn had nothing to do: the caller acts on what it just got
        // (a ping's echo) before the next wait, not after the next timer.
        let deadline = if busy { now } else { deadline.unwrap_or(now) };
        self.runner.wait(Some(deadline))?;
        Ok(())
    }

    fn fail(&mut self, m: usize, why: String) {
        let member = &mut self.members[m];
        if member.failed.is_none() {
            member.failed = Some(why);
            self.failed += 1;
        }
    }

    /// Pumps until every member joined (or one failed, or `timeout`).
    pub(crate) fn join_all(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        while self.joined + self.failed < self.members.len() {
            if Instant::now() >= deadline {
                bail!(
                    "only {} of {} peers joined within {timeout:?}",
                    self.joined,
                    self.members.len()
                );
            }
            self.turn(
                Some(Instant::now() + Duration::from_millis(5)),
                |_, _, _, _| {},
            )?;
        }
        if let Some(m) = self.members.iter().find(|m| m.failed.is_some()) {
            bail!(
                "a peer failed to join: {}",
                m.failed.as_deref().unwrap_or("")
            );
        }
        Ok(())
    }

    /// Pumps for `span` without sending anything of its own.
    pub(crate) fn pump_for(&mut self, span: Duration) -> anyhow::Result<()> {
        let end = Instant::now() + span;
        while Instant::now() < end {
            self.turn(
                Some(end.min(Instant::now() + Duration::from_millis(5))),
                |_, _, _, _| {},
            )?;
        }
        Ok(())
    }

    /// Closes every connection and lets the closes go out.
    pub(crate) fn close_all(&mut self) {
        let now = Instant::now();
        let conns: Vec<ConnId> = self
            .members
            .iter()
            .map(|m| m.conn)
            .chain(self.others_connected.iter().copied())
            .collect();
        for conn in conns {
            self.runner.driver().close(now, conn, 0, "bench over");
        }
        let _ = self.pump_for(Duration::from_millis(30));
    }
}

/// A relay under test.
pub(crate) enum Relay {
    /// `lanparty_relay::start` in this process.
    Ours {
        handle: lanparty_relay::RelayHandle,
        dir: PathBuf,
    },
    /// The quinn baseline.
    Quinn(RefRelay),
}

/// Which relay implementation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Kind {
    /// lanparty-relay.
    Ours,
    /// The quinn/tokio baseline.
    Quinn,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Self::Ours => "lanparty-relay",
            Self::Quinn => "quinn baseline",
        }
    }
}

/// The room settings of every benchmark room: defaults, except that broadcast is not
/// rate-limited (the budget would cap a broadcast benchmark at 200 frames/s by design).
fn bench_room_config() -> RoomConfig {
    RoomConfig {
        client_group_budget: None,
        gateway_group_budget: None,
        ..RoomConfig::default()
    }
}

/// The socket buffer both relays get: `LANPARTY_BENCH_SOCKET_BUFFER` (bytes) when set, to
/// compare sizes, else lanparty-relay's default.
pub(crate) fn socket_buffer() -> usize {
    std::env::var("LANPARTY_BENCH_SOCKET_BUFFER")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(lanparty_relay::DEFAULT_SOCKET_BUFFER)
}

impl Relay {
    pub(crate) fn start(kind: Kind) -> anyhow::Result<Self> {
        match kind {
            Kind::Ours => {
                let dir = std::env::temp_dir().join(format!(
                    "lp-bench-relay-{}-{}",
                    std::process::id(),
                    unique()
                ));
                let mut config = lanparty_relay::RelayConfig::new("127.0.0.1:0".parse()?, &dir);
                config.room = bench_room_config();
                config.admission.max_connections_per_ip = 1024;
                config.socket_buffer = socket_buffer();
                let handle = lanparty_relay::start(config)?;
                Ok(Self::Ours { handle, dir })
            }
            Kind::Quinn => Ok(Self::Quinn(RefRelay::start(bench_room_config())?)),
        }
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        match self {
            Self::Ours { handle, .. } => handle.local_addr(),
            Self::Quinn(r) => r.local_addr(),
        }
    }

    pub(crate) fn pin(&self) -> Fingerprint {
        match self {
            Self::Ours { handle, .. } => handle.fingerprint(),
            Self::Quinn(r) => r.fingerprint(),
        }
    }

    /// Names of the relay's threads.
    fn threads(&self) -> &'static [&'static str] {
        match self {
            Self::Ours { .. } => &["relay-datapath", "relay-control"],
            Self::Quinn(_) => &[super::relay_ref::THREAD],
        }
    }

    /// CPU time of the relay's threads so far.
    pub(crate) fn cpu(&self) -> anyhow::Result<Duration> {
        threads_cpu(self.threads())
    }

    /// Puts the relay's threads on the last CPU and the calling thread (the load) on the
    /// others, until the returned guard goes; `None` on a machine with one CPU.
    fn own_core(&self) -> anyhow::Result<Option<Pinned>> {
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        if cpus < 2 {
            return Ok(None);
        }
        let relay_cpu = cpus - 1;
        // A thread names itself once it runs, which may be just after the relay started.
        let deadline = Instant::now() + Duration::from_secs(2);
        let tids = loop {
            match thread_ids(self.threads()) {
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                result => break result?,
            }
        };
        // From here on the guard undoes whatever was set, also after an error.
        let pinned = Pinned { cpus, relay: tids };
        for &tid in &pinned.relay {
            crate::sys::set_affinity(tid, [relay_cpu])
                .with_context(|| format!("pinning relay thread {tid} to CPU {relay_cpu}"))?;
        }
        crate::sys::set_affinity(0, 0..relay_cpu).context("pinning the load thread")?;
        Ok(Some(pinned))
    }

    /// Datagrams the relay dropped on send because a receiver's queue was full, if known.
    fn dropped_tx(&self) -> Option<u64> {
        match self {
            Self::Ours { handle, .. } => handle.status().map(|s| s.counters.datagrams_dropped_tx),
            Self::Quinn(_) => None,
        }
    }

    pub(crate) fn stop(self) -> anyhow::Result<()> {
        match self {
            Self::Ours { handle, dir } => {
                let r = handle.shutdown("bench over");
                let _ = std::fs::remove_dir_all(dir);
                r
            }
            Self::Quinn(r) => r.stop(),
        }
    }
}

/// One throughput measurement.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct Flow {
    /// Ethernet frame size.
    pub(crate) size: usize,
    /// Receivers (1 unicast, 8 broadcast).
    pub(crate) receivers: usize,
    /// Frames the sender queued in the window.
    pub(crate) sent: u64,
    /// Datagrams delivered to receivers in the window (egress copies).
    pub(crate) forwarded: u64,
    /// Frame bytes delivered.
    pub(crate) bytes: u64,
    /// Window length, seconds.
    pub(crate) wall_s: f64,
    /// Relay CPU in the window, seconds.
    pub(crate) relay_cpu_s: f64,
}

impl Flow {
    pub(crate) fn frames_per_sec(&self) -> f64 {
        self.forwarded as f64 / self.wall_s
    }
    pub(crate) fn gbit_per_sec(&self) -> f64 {
        self.bytes as f64 * 8.0 / self.wall_s / 1e9
    }
    pub(crate) fn cpu_ns_per_frame(&self) -> f64 {
        self.relay_cpu_s * 1e9 / self.forwarded.max(1) as f64
    }
}

/// Runs one sender → relay → `receivers` flow of `size`-byte frames (unicast with one
/// receiver, broadcast otherwise) and measures a window of `duration` after `warmup`.
pub(crate) fn throughput(
    relay: &Relay,
    size: usize,
    receivers: usize,
    warmup: Duration,
    duration: Duration,
) -> anyhow::Result<Flow> {
    // The relay on a core of its own: otherwise the scheduler decides, run by run, whether
    // the relay shares a CPU with the load.
    let _pinned = relay.own_core()?;
    let mut fleet = Fleet::new(relay.pin(), None)?;
    let room = format!("tput-{}", unique());
    let now = Instant::now();
    let sender = fleet.join(now, relay.addr(), &room, mac(1))?;
    for r in 0..receivers {
        fleet.join(now, relay.addr(), &room, mac(2 + r as u32))?;
    }
    fleet.join_all(SETUP)?;
    let dst = if receivers == 1 {
        fleet.members[1].mac
    } else {
        Mac::BROADCAST
    };
    let datagram = frame(dst, fleet.members[sender].mac, size);
    let conn = fleet.members[sender].conn;
    // Wait for PMTUD to make room for the datagram.
    let deadline = Instant::now() + Duration::from_secs(10);
    while fleet.driver().max_datagram_size(conn).unwrap_or(0) < datagram.len() {
        if Instant::now() > deadline {
            bail!("the path never grew to a {}-byte datagram", datagram.len());
        }
        fleet.turn(
            Some(Instant::now() + Duration::from_millis(5)),
            |_, _, _, _| {},
        )?;
    }
    // And for the relay's PMTUD towards every receiver: probe with single frames until each
    // receiver got one whole.
    let deadline = Instant::now() + Duration::from_secs(10);
    while fleet
        .members
        .iter()
        .enumerate()
        .any(|(i, m)| i != sender && m.received == 0)
    {
        if Instant::now() > deadline {
            bail!("the relay never forwarded a {size}-byte frame to every receiver");
        }
        fleet.driver().send_datagram(conn, datagram.clone())?;
        let until = Instant::now() + Duration::from_millis(2);
        while Instant::now() < until {
            fleet.turn(Some(until), |_, _, _, _| {})?;
        }
    }
    let first_receiver = usize::from(sender == 0);
    let in_flight = (48 * 1024 / datagram.len()).clamp(16, 512) as u64;
    let mut load = Load::new(conn, datagram);
    load.sent = fleet.members[first_receiver].received;
    let (mut last_delivered, mut last_progress, mut written_off) = (0, Instant::now(), 0);
    let start = Instant::now();
    let mut window: Option<(Instant, Duration, u64, u64, u64)> = None;
    let end = start + warmup + duration;
    let result = loop {
        let now = Instant::now();
        if window.is_none() && now >= start + warmup {
            let (rx, bytes) = received(&fleet, sender);
            window = Some((now, relay.cpu()?, rx, bytes, load.sent));
        }
        if now >= end {
            let (t0, cpu0, rx0, bytes0, sent0) = window.context("no window")?;
            let cpu1 = relay.cpu()?;
            let (rx1, bytes1) = received(&fleet, sender);
            break Flow {
                size,
                receivers,
                sent: load.sent - sent0,
                forwarded: rx1 - rx0,
                bytes: bytes1 - bytes0,
                wall_s: (now - t0).as_secs_f64(),
                relay_cpu_s: (cpu1 - cpu0).as_secs_f64(),
            };
        }
        // Closed loop: at most a window of frames between the sender and the first receiver
        // (every receiver of a broadcast gets the same frames), so the relay forwards what it
        // receives instead of dropping the excess at a full egress queue.
        let delivered = fleet.members[first_receiver].received;
        if delivered != last_delivered {
            last_delivered = delivered;
            last_progress = now;
        } else if now - last_progress > STALL {
            // Frames were lost: write them off rather than stall the window.
            written_off = load.sent.saturating_sub(delivered);
            last_progress = now;
        }
        let outstanding = load.sent.saturating_sub(delivered + written_off);
        load.fill(fleet.driver(), in_flight.saturating_sub(outstanding));
        fleet.turn(None, |_, _, _, _| {})?;
    };
    fleet.close_all();
    if result.forwarded == 0 {
        bail!("no frame reached a receiver through the relay");
    }
    Ok(result)
}

fn received(fleet: &Fleet, sender: usize) -> (u64, u64) {
    fleet
        .members
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != sender)
        .fold((0, 0), |(n, b), (_, m)| {
            (n + m.received, b + m.received_bytes)
        })
}

/// A saturating sender that keeps about 48 KiB queued in its own driver.
#[derive(Debug)]
pub(crate) struct Load {
    conn: ConnId,
    datagram: Bytes,
    cap: u64,
    pub(crate) sent: u64,
}

impl Load {
    pub(crate) fn new(conn: ConnId, datagram: Bytes) -> Self {
        let cap = (48 * 1024 / datagram.len()).clamp(8, 512) as u64;
        Self {
            conn,
            datagram,
            cap,
            sent: 0,
        }
    }

    /// Queues at most `max` datagrams, and no more than the connection's queue holds `cap`.
    pub(crate) fn fill(&mut self, driver: &mut Driver, max: u64) {
        let Some(stats) = driver.stats(self.conn) else {
            return;
        };
        let gone = stats.datagrams_sent + stats.datagrams_dropped_tx;
        let queued = self.sent.saturating_sub(gone);
        for _ in queued..self.cap.min(queued.saturating_add(max)) {
            if driver
                .send_datagram(self.conn, self.datagram.clone())
                .is_err()
            {
                return;
            }
            self.sent += 1;
        }
    }
}

/// Round-trip samples of one latency run.
#[derive(Debug, Clone, Default)]
pub(crate) struct Pings {
    pub(crate) relay: Vec<Duration>,
    pub(crate) direct: Vec<Duration>,
    pub(crate) lost: u64,
    /// Rate of the bulk flow while the pings ran (0 when idle).
    pub(crate) bulk_gbit: f64,
}

/// An in-memory self-signed identity for a peer that accepts direct connections.
fn peer_identity() -> anyhow::Result<ServerIdentity> {
    let ck = rcgen::generate_simple_self_signed(vec!["peer".to_owned()])?;
    Ok(ServerIdentity {
        chain: vec![ck.cert.der().clone()],
        key: rustls::pki_types::PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()).into(),
    })
}

/// Sequence number of a ping frame (after the 14-byte Ethernet header and 1-byte overlay
/// header).
fn seq_of(datagram: &[u8]) -> Option<u64> {
    let b = datagram.get(15..23)?;
    Some(u64::from_be_bytes(b.try_into().ok()?))
}

/// Pings through the relay and directly, alternating, `count` each; with `load` a bulk flow
/// runs through the relay meanwhile.
pub(crate) fn latency(relay: &Relay, count: usize, load: bool) -> anyhow::Result<Pings> {
    let stop = Arc::new(AtomicBool::new(false));
    let room = format!("lat-{}", unique());
    let (relay_addr, pin) = (relay.addr(), relay.pin());
    // B: joins the relay, accepts a direct connection, echoes everything.
    let identity = peer_identity()?;
    let b_pin = identity.fingerprint();
    let (tx, rx) = std::sync::mpsc::channel::<anyhow::Result<SocketAddr>>();
    let b_stop = stop.clone();
    let b_room = room.clone();
    let echo = std::thread::Builder::new()
        .name("bench-echo".into())
        .spawn(move || -> anyhow::Result<()> {
            let setup = (|| {
                let mut b = Fleet::new(pin, Some(identity))?;
                b.join(Instant::now(), relay_addr, &b_room, mac(2))?;
                b.join_all(SETUP)?;
                anyhow::Ok(b)
            })();
            let mut b = match setup {
                Ok(b) => {
                    let _ = tx.send(Ok(b.local_addr()));
                    b
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return Ok(());
                }
            };
            let (a_mac, b_mac) = (mac(1), mac(2));
            let mut buf = Vec::with_capacity(128);
            while !b_stop.load(Ordering::Relaxed) {
                b.turn(
                    Some(Instant::now() + Duration::from_millis(20)),
                    |driver, member, conn, bytes| {
                        if member.is_some() {
                            // Through the relay: swap the MACs.
                            buf.clear();
                            buf.extend_from_slice(&bytes);
                            if buf.len() >= 13 {
                                buf[1..7].copy_from_slice(&a_mac.0);
                                buf[7..13].copy_from_slice(&b_mac.0);
                            }
                            let _ = driver.send_datagram(conn, Bytes::copy_from_slice(&buf));
                        } else {
                            let _ = driver.send_datagram(conn, bytes);
                        }
                    },
                )?;
            }
            b.close_all();
            Ok(())
        })?;
    let b_addr = match rx.recv_timeout(SETUP + Duration::from_secs(5)) {
        Ok(r) => r?,
        Err(_) => bail!("the echo peer did not start"),
    };
    // The bulk flow, in its own room on its own thread.
    let bulk = if load {
        let stop = stop.clone();
        let (tx, rx) = std::sync::mpsc::channel::<anyhow::Result<()>>();
        let handle = std::thread::Builder::new()
            .name("bench-bulk".into())
            .spawn(move || -> anyhow::Result<f64> {
                let run = || -> anyhow::Result<(Fleet, Load)> {
                    let mut f = Fleet::new(pin, None)?;
                    let room = format!("bulk-{}", unique());
                    let now = Instant::now();
                    f.join(now, relay_addr, &room, mac(11))?;
                    f.join(now, relay_addr, &room, mac(12))?;
                    f.join_all(SETUP)?;
                    let conn = f.members[0].conn;
                    let datagram = frame(mac(12), mac(11), 1400);
                    let deadline = Instant::now() + Duration::from_secs(10);
                    while f.driver().max_datagram_size(conn).unwrap_or(0) < datagram.len() {
                        if Instant::now() > deadline {
                            bail!("the bulk path never grew to 1400-byte frames");
                        }
                        f.turn(
                            Some(Instant::now() + Duration::from_millis(5)),
                            |_, _, _, _| {},
                        )?;
                    }
                    Ok((f, Load::new(conn, datagram)))
                };
                let (mut f, mut load) = match run() {
                    Ok(x) => {
                        let _ = tx.send(Ok(()));
                        x
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return Ok(0.0);
                    }
                };
                let (t0, rx0) = (Instant::now(), f.members[1].received_bytes);
                while !stop.load(Ordering::Relaxed) {
                    load.fill(f.driver(), u64::MAX);
                    f.turn(None, |_, _, _, _| {})?;
                }
                let gbit = (f.members[1].received_bytes - rx0) as f64 * 8.0
                    / t0.elapsed().as_secs_f64()
                    / 1e9;
                f.close_all();
                Ok(gbit)
            })?;
        match rx.recv_timeout(SETUP + Duration::from_secs(15)) {
            Ok(r) => r?,
            Err(_) => bail!("the bulk flow did not start"),
        }
        Some(handle)
    } else {
        None
    };
    let mut result = ping_loop(relay_addr, pin, &room, b_addr, b_pin, count, load);
    stop.store(true, Ordering::Relaxed);
    echo.join()
        .map_err(|_| anyhow::anyhow!("echo thread panicked"))??;
    if let Some(bulk) = bulk {
        let gbit = bulk
            .join()
            .map_err(|_| anyhow::anyhow!("bulk thread panicked"))??;
        if gbit <= 0.0 {
            bail!("the bulk flow delivered nothing");
        }
        if let Ok(p) = &mut result {
            p.bulk_gbit = gbit;
        }
    }
    result
}

fn ping_loop(
    relay_addr: SocketAddr,
    pin: Fingerprint,
    room: &str,
    b_addr: SocketAddr,
    b_pin: Fingerprint,
    count: usize,
    load: bool,
) -> anyhow::Result<Pings> {
    let mut a = Fleet::new(pin, None)?;
    a.join(Instant::now(), relay_addr, room, mac(1))?;
    let direct = a.connect_direct(Instant::now(), b_addr, b_pin)?;
    a.join_all(SETUP)?;
    let deadline = Instant::now() + SETUP;
    while !a.others_connected.contains(&direct) {
        if Instant::now() > deadline {
            bail!("the direct connection to the echo peer did not come up");
        }
        a.turn(
            Some(Instant::now() + Duration::from_millis(5)),
            |_, _, _, _| {},
        )?;
    }
    if load {
        // Let the bulk flow fill the queues first.
        a.pump_for(Duration::from_millis(300))?;
    } else {
        a.pump_for(Duration::from_millis(50))?;
    }
    let via_relay = a.members[0].conn;
    let template = frame(mac(2), mac(1), 64).to_vec();
    let mut pings = Pings::default();
    let mut got: Option<u64> = None;
    for i in 0..(2 * count) as u64 {
        let conn = if i % 2 == 0 { via_relay } else { direct };
        let mut d = template.clone();
        d[15..23].copy_from_slice(&i.to_be_bytes());
        let t0 = Instant::now();
        a.driver().send_datagram(conn, Bytes::from(d))?;
        let timeout = t0 + Duration::from_secs(1);
        got = None;
        loop {
            a.turn(Some(timeout), |_, _, _, bytes| {
                if seq_of(&bytes) == Some(i) {
                    got = Some(i);
                }
            })?;
            if got.is_some() {
                let rtt = t0.elapsed();
                if conn == via_relay {
                    pings.relay.push(rtt);
                } else {
                    pings.direct.push(rtt);
                }
                break;
            }
            if Instant::now() >= timeout {
                pings.lost += 1;
                break;
            }
        }
    }
    let _ = got;
    a.close_all();
    if pings.relay.is_empty() || pings.direct.is_empty() {
        bail!("no ping came back");
    }
    Ok(pings)
}

/// Latency quantiles of one run, microseconds.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct LatencyRun {
    pub(crate) relay_rtt_p50_us: f64,
    pub(crate) relay_rtt_p99_us: f64,
    pub(crate) direct_rtt_p50_us: f64,
    pub(crate) direct_rtt_p99_us: f64,
    /// `(relay p50 − direct p50) / 2`.
    pub(crate) added_p50_us: f64,
    /// `(relay p99 − direct p99) / 2`.
    pub(crate) added_p99_us: f64,
    pub(crate) samples: usize,
    pub(crate) lost: u64,
    /// Delivered rate of the bulk flow, Gbit/s (0 when idle).
    pub(crate) bulk_gbit: f64,
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

impl LatencyRun {
    fn from(mut p: Pings) -> Self {
        let q = |s: &mut Vec<Duration>, q| us(stats::quantile(s, q).unwrap_or_default());
        let (r50, r99) = (q(&mut p.relay, 0.5), q(&mut p.relay, 0.99));
        let (d50, d99) = (q(&mut p.direct, 0.5), q(&mut p.direct, 0.99));
        Self {
            relay_rtt_p50_us: r50,
            relay_rtt_p99_us: r99,
            direct_rtt_p50_us: d50,
            direct_rtt_p99_us: d99,
            added_p50_us: (r50 - d50) / 2.0,
            added_p99_us: (r99 - d99) / 2.0,
            samples: p.relay.len(),
            lost: p.lost,
            bulk_gbit: p.bulk_gbit,
        }
    }
}

/// Every run of every scenario, by relay.
#[derive(Debug, Default, Serialize)]
struct Report {
    command: String,
    repeat: usize,
    quick: bool,
    window_s: f64,
    ping_count: usize,
    backend: String,
    socket_buffer: usize,
    flows: BTreeMap<String, Vec<Flow>>,
    latency: BTreeMap<String, Vec<LatencyRun>>,
    dropped_tx: BTreeMap<String, Vec<u64>>,
    summary: BTreeMap<String, Spread>,
    targets: Vec<Target>,
}

/// A target, its measured value and whether it is met.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Target {
    pub(crate) what: String,
    pub(crate) target: String,
    pub(crate) measured: String,
    pub(crate) met: bool,
}

const SCENARIOS: [(usize, usize, &str); 4] = [
    (64, 1, "unicast 64 B"),
    (1400, 1, "unicast 1400 B"),
    (64, 8, "broadcast to 8, 64 B"),
    (1400, 8, "broadcast to 8, 1400 B"),
];

fn key(kind: Kind, what: &str) -> String {
    format!("{} / {what}", kind.label())
}

/// Runs `bench relay`: every scenario on both relays, `repeat` times; prints a Markdown table
/// and writes it with the JSON to the output directory (`perf/out/` by default).
pub(crate) fn run(opts: &super::RunOpts) -> anyhow::Result<()> {
    let (warmup, window, pings) = if opts.quick {
        (Duration::from_millis(300), Duration::from_millis(700), 200)
    } else {
        (Duration::from_millis(700), Duration::from_secs(3), 2000)
    };
    let mut report = Report {
        command: std::env::args().collect::<Vec<_>>().join(" "),
        repeat: opts.repeats,
        quick: opts.quick,
        window_s: window.as_secs_f64(),
        ping_count: pings,
        socket_buffer: socket_buffer(),
        ..Report::default()
    };
    for rep in 0..opts.repeats {
        for kind in [Kind::Ours, Kind::Quinn] {
            let relay = Relay::start(kind)?;
            if let Relay::Ours { handle, .. } = &relay {
                report.backend = handle.backend().to_owned();
            }
            for (size, receivers, what) in SCENARIOS {
                let flow = throughput(&relay, size, receivers, warmup, window)
                    .with_context(|| format!("{}: {what}", kind.label()))?;
                eprintln!(
                    "[{}/{}] {}: {what}: {:.0} frames/s, {:.2} Gbit/s, {:.0} relay ns/frame",
                    rep + 1,
                    opts.repeats,
                    kind.label(),
                    flow.frames_per_sec(),
                    flow.gbit_per_sec(),
                    flow.cpu_ns_per_frame()
                );
                report.flows.entry(key(kind, what)).or_default().push(flow);
            }
            for (load, what) in [(false, "latency idle"), (true, "latency under load")] {
                let p = latency(&relay, pings, load)
                    .with_context(|| format!("{}: {what}", kind.label()))?;
                let l = LatencyRun::from(p);
                eprintln!(
                    "[{}/{}] {}: {what}: relay RTT p50 {:.0} µs p99 {:.0} µs, direct p50 {:.0} µs p99 {:.0} µs, added p50 {:.0} µs p99 {:.0} µs",
                    rep + 1,
                    opts.repeats,
                    kind.label(),
                    l.relay_rtt_p50_us,
                    l.relay_rtt_p99_us,
                    l.direct_rtt_p50_us,
                    l.direct_rtt_p99_us,
                    l.added_p50_us,
                    l.added_p99_us
                );
                report.latency.entry(key(kind, what)).or_default().push(l);
            }
            if let Some(d) = relay.dropped_tx() {
                report
                    .dropped_tx
                    .entry(kind.label().into())
                    .or_default()
                    .push(d);
            }
            relay.stop()?;
        }
    }
    summarize(&mut report);
    let md = markdown(&report);
    println!("{md}");
    let out = &opts.out;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    std::fs::write(
        out.join("relay.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    std::fs::write(out.join("relay.md"), &md)?;
    eprintln!("wrote {0}/relay.json and {0}/relay.md", out.display());
    Ok(())
}

fn summarize(r: &mut Report) {
    let mut summary = BTreeMap::new();
    for (k, flows) in &r.flows {
        let col = |f: fn(&Flow) -> f64| Spread::of(flows.iter().map(f));
        summary.insert(format!("{k} / frames_per_s"), col(Flow::frames_per_sec));
        summary.insert(format!("{k} / gbit_per_s"), col(Flow::gbit_per_sec));
        summary.insert(
            format!("{k} / cpu_ns_per_frame"),
            col(Flow::cpu_ns_per_frame),
        );
    }
    for (k, runs) in &r.latency {
        let col = |f: fn(&LatencyRun) -> f64| Spread::of(runs.iter().map(f));
        summary.insert(format!("{k} / added_p50_us"), col(|l| l.added_p50_us));
        summary.insert(format!("{k} / added_p99_us"), col(|l| l.added_p99_us));
        summary.insert(
            format!("{k} / relay_rtt_p50_us"),
            col(|l| l.relay_rtt_p50_us),
        );
        summary.insert(
            format!("{k} / relay_rtt_p99_us"),
            col(|l| l.relay_rtt_p99_us),
        );
        summary.insert(
            format!("{k} / direct_rtt_p50_us"),
            col(|l| l.direct_rtt_p50_us),
        );
        summary.insert(
            format!("{k} / direct_rtt_p99_us"),
            col(|l| l.direct_rtt_p99_us),
        );
        summary.insert(format!("{k} / bulk_gbit"), col(|l| l.bulk_gbit));
    }
    let get = |s: &BTreeMap<String, Spread>, k: String| s.get(&k).map_or(f64::NAN, |x| x.median);
    let ours_cpu = get(
        &summary,
        format!("{} / cpu_ns_per_frame", key(Kind::Ours, "unicast 1400 B")),
    );
    let ref_cpu = get(
        &summary,
        format!("{} / cpu_ns_per_frame", key(Kind::Quinn, "unicast 1400 B")),
    );
    let idle = get(
        &summary,
        format!("{} / added_p50_us", key(Kind::Ours, "latency idle")),
    );
    let loaded = get(
        &summary,
        format!("{} / added_p99_us", key(Kind::Ours, "latency under load")),
    );
    r.targets = vec![
        Target {
            what: "relay CPU per forwarded 1400-byte frame (unicast)".into(),
            target: "≤ 2500 ns".into(),
            measured: format!("{ours_cpu:.0} ns ({:.2}× the target)", ours_cpu / 2500.0),
            met: ours_cpu <= 2500.0,
        },
        Target {
            what: "CPU per frame vs the quinn baseline (unicast 1400 B)".into(),
            target: "≥ 2× fewer".into(),
            measured: format!(
                "{:.2}× fewer ({ref_cpu:.0} vs {ours_cpu:.0} ns)",
                ref_cpu / ours_cpu
            ),
            met: ref_cpu / ours_cpu >= 2.0,
        },
        Target {
            what: "latency added by the relay hop, idle, median".into(),
            target: "≤ 50 µs".into(),
            measured: format!("{idle:.1} µs ({:.2}× the target)", idle / 50.0),
            met: idle <= 50.0,
        },
        Target {
            what: "latency added by the relay hop under a saturating bulk flow, p99".into(),
            target: "≤ 2000 µs".into(),
            measured: format!("{loaded:.0} µs ({:.2}× the target)", loaded / 2000.0),
            met: loaded <= 2000.0,
        },
    ];
    r.summary = summary;
}

fn markdown(r: &Report) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Runs: {} (median, min–max in parentheses); window {:.1} s per throughput scenario; {} pings per path per latency run; relay UDP backend: {}; relay socket buffers: {} bytes.\n",
        r.repeat, r.window_s, r.ping_count, r.backend, r.socket_buffer
    );
    let _ = writeln!(
        s,
        "| relay | scenario | forwarded frames/s | Gbit/s | relay CPU ns/frame |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|");
    for kind in [Kind::Ours, Kind::Quinn] {
        for (_, _, what) in SCENARIOS {
            let k = key(kind, what);
            let get = |m: &str| r.summary.get(&format!("{k} / {m}"));
            if let (Some(f), Some(g), Some(c)) = (
                get("frames_per_s"),
                get("gbit_per_s"),
                get("cpu_ns_per_frame"),
            ) {
                let _ = writeln!(
                    s,
                    "| {} | {what} | {} | {} | {} |",
                    kind.label(),
                    f.show(0),
                    g.show(2),
                    c.show(0)
                );
            }
        }
    }
    let _ = writeln!(
        s,
        "\nLatency, µs. Added = (relay RTT − direct RTT) / 2 at the same quantile.\n"
    );
    let _ = writeln!(
        s,
        "| relay | condition | added p50 | added p99 | relay RTT p50 | relay RTT p99 | direct RTT p50 | direct RTT p99 | bulk Gbit/s |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|");
    for kind in [Kind::Ours, Kind::Quinn] {
        for what in ["latency idle", "latency under load"] {
            let k = key(kind, what);
            let get = |m: &str| {
                r.summary
                    .get(&format!("{k} / {m}"))
                    .map_or_else(|| "–".to_owned(), |x| x.show(0))
            };
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                kind.label(),
                what.trim_start_matches("latency "),
                get("added_p50_us"),
                get("added_p99_us"),
                get("relay_rtt_p50_us"),
                get("relay_rtt_p99_us"),
                get("direct_rtt_p50_us"),
                get("direct_rtt_p99_us"),
                r.summary
                    .get(&format!("{k} / bulk_gbit"))
                    .map_or_else(|| "–".to_owned(), |x| x.show(2)),
            );
        }
    }
    let _ = writeln!(s, "\n| target | goal | measured | met |");
    let _ = writeln!(s, "|---|---|---|---|");
    for t in &r.targets {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} |",
            t.what,
            t.target,
            t.measured,
            if t.met { "yes" } else { "**no**" }
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pings_come_back_through_the_relay_and_directly() {
        let relay = Relay::start(Kind::Ours).unwrap();
        let mut p = latency(&relay, 30, false).unwrap();
        relay.stop().unwrap();
        assert_eq!(p.relay.len(), 30, "every ping through the relay came back");
        assert_eq!(p.direct.len(), 30, "every direct ping came back");
        let r = stats::quantile(&mut p.relay, 0.5).unwrap();
        let d = stats::quantile(&mut p.direct, 0.5).unwrap();
        eprintln!("relay rtt p50 {r:?}, direct rtt p50 {d:?}");
    }

    #[test]
    fn unicast_and_broadcast_frames_flow_through_both_relays() {
        for kind in [Kind::Ours, Kind::Quinn] {
            let relay = Relay::start(kind).unwrap();
            let ms = Duration::from_millis;
            let uni = throughput(&relay, 64, 1, ms(100), ms(200)).unwrap();
            let flood = throughput(&relay, 1400, 3, ms(100), ms(200)).unwrap();
            relay.stop().unwrap();
            for f in [uni, flood] {
                assert!(f.forwarded > 0, "{kind:?}: {f:?}");
                assert!(
                    f.relay_cpu_s > 0.0,
                    "{kind:?}: relay CPU was measured: {f:?}"
                );
                assert_eq!(
                    f.bytes,
                    f.forwarded * f.size as u64,
                    "{kind:?}: whole frames"
                );
            }
        }
    }
}
