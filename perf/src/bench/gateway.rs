//! `lanparty-perf bench gateway`: the gateway's datapath, LAN packet ring ⇄ QUIC, against a
//! plain `recvmmsg` AF_PACKET socket doing the same work, in one run (needs root).
//!
//! # Topology
//!
//! Two network namespaces made for the run: `snd` holds the LAN host that blasts frames
//! (`lpgbs0`), `nic` holds the gateway's NIC (`lpgbn0`, the veth peer), an in-process relay
//! ([`lanparty_relay::start`]) on its loopback, and the remote player's [`Uplink`] (role
//! client). IPv6 is off in both so no router solicitation or MLD report adds frames.
//!
//! # What runs
//!
//! - **ring**: [`lanparty_gateway::start`] on `lpgbn0`, its [`Bridge::turn`] driven by one
//!   thread: RX ring → [`LanFilter`] → copy → [`Uplink::send_frame`] (QUIC), and
//!   [`Uplink::poll_frame`] → TX ring. Both ring layouts are measured, each with the geometry
//!   the gateway gives it ([`lanparty_gateway::ring_config`]): TPACKET_V2, the gateway's
//!   default (the targets' verdict is on it), and TPACKET_V3 (`--rx-ring v3`) for comparison.
//! - **socket (baseline)**: the same loop with a [`PacketSocket`] (one `recvmmsg` per batch of
//!   64, one `send` per frame, no rings): filter decision, one copy, the same
//!   `Uplink::send_frame` into the same kind of QUIC connection, `transmit` every 32 frames,
//!   sleep in the uplink's backend on the socket fd. So both sides do the same per-frame work
//!   including QUIC; only the way frames cross the kernel boundary differs.
//!
//! Each gateway joins its own room with its own player, so the runs do not disturb each other.
//! Measuring starts once the sending side's budget carries the frame size whole (PMTUD climbs
//! for a few round trips after the join), so 1400-byte frames are measured as one datagram.
//! The gateway thread is named after its path (`gw-ring-v2`, `gw-socket`, ...), so
//! `perf record -a -g` over a run can be split with `perf report --comm`.
//!
//! # What is measured
//!
//! CPU time is the gateway datapath thread's own (`CLOCK_THREAD_CPUTIME_ID`), read on the
//! thread that turns the loop, over the measurement window only (after the join).
//!
//! - **LAN → room**: the LAN host sends frames to the player's MAC through a TX ring of its
//!   own (batched kicks, qdisc bypass: a pktgen-like loop), as fast as it can for the run's
//!   time, bounded in count. Frames per second = frames the gateway handed to QUIC per
//!   wall-clock second; CPU ns per frame and frames per CPU-second from the gateway thread.
//! - **room → LAN**: the player sends frames to the LAN host's MAC as fast as QUIC lets it
//!   (while its DATAGRAM queue has room; when full it sleeps until an ACK opens the window);
//!   the gateway writes them onto the LAN (TX ring, or one `send` per frame for the baseline).
//!   Loss there is counted from the frames the gateway received from the room: the relay drops
//!   what the relay → gateway connection cannot carry, which is not the gateway's loss (the
//!   e2e column shows it).
//! - **sendmmsg socket (TX alternative)**: room → LAN only, the baseline's loop with the
//!   turn's room frames leaving in `sendmmsg` batches of 64 instead of one `send` each: the
//!   other way of writing frames without a TX ring, measured next to it.
//! - **send only**: the room → LAN send half alone, no QUIC and no player: the gateway thread
//!   hands batches of 64 copies of one frame to a bare TX ring (one kick per batch, with the
//!   gateway's ring settings), a bare socket (`send` per frame, the baseline) or a bare
//!   socket with `sendmmsg`, as fast as it can. Like the receive-only rows, this is the TX
//!   path's own cost, undiluted by QUIC. The kernel runs the LAN host's receive of each
//!   frame (softirq after the veth hand-over) on the sending thread, so that work is in the
//!   gateway's CPU time in every room → LAN row; on a physical NIC it would be another
//!   machine's. To keep it small the LAN host reads no room → LAN frame: they are counted
//!   from its interface's counters and the stack drops them (no handler for the ethertype),
//!   where copying each into a packet ring took about a tenth of the gateway's time.
//! - **receive + filter only**: the LAN → room receive half alone, a bare [`PacketRing`]
//!   (`wait_rx`, every ready block, filter, `copy_tagged`) against a bare [`PacketSocket`]
//!   (`wait_rx`, `recvmmsg` until empty, filter, copy), no QUIC: the difference the rings make
//!   without the QUIC cost, which is the same on both sides, diluting it.
//! - **loss at 80 %**: after the blast, the LAN host sends paced at 80 % of each ring path's
//!   measured LAN → room rate; loss = frames sent − frames the gateway handed to QUIC. The
//!   "RX full" column is the part of it the kernel dropped for a full RX ring (or socket
//!   buffer), from PACKET_STATISTICS. Frames the player received are reported too (end to
//!   end, through the relay).
//!
//! "offered/s" is what the source managed to send per second; a paced run whose offered rate
//! is below its pace was limited by the sender. In the room → LAN direction the player (QUIC
//! through the relay) is usually the bottleneck, so the gateway idles between frames and its
//! CPU per frame includes the idle turns: compare the two paths there, not absolute figures.
//!
//! The machine has two cores for the sender, the gateway, the relay and the player: the rates
//! are the whole party's, the CPU figures are the gateway thread's alone. Every measurement is
//! repeated (`--repeats`); tables show the median and the spread. Results go to `gateway.md`
//! and `gateway.json`.

use crate::stats::Spread;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use lanparty_control::logging::LogFormat;
use lanparty_control::msg::{DisplayName, Hello, PROTOCOL_VERSION, Role, RoomCode, Secret};
use lanparty_control::session::SessionConfig;
use lanparty_control::uplink::{Uplink, UplinkConfig, UplinkEvent};
use lanparty_datapath::Mac;
use lanparty_datapath::budget::Budget;
use lanparty_datapath::frag::ReassemblyConfig;
use lanparty_datapath::io::{self, Interest};
use lanparty_datapath::quic::tls::{self, ClientTrust, Fingerprint};
use lanparty_datapath::quic::{Driver, DriverConfig};
use lanparty_datapath::runner::Runner;
use lanparty_datapath::switch::{LanFilter, LanVerdict};
use lanparty_datapath::sys::afpacket::{
    PacketRing, PacketSocket, RingConfig, SocketConfig, TxError,
};
use lanparty_datapath::sys::netns::{self, Netns, Veth};
use lanparty_gateway::{Bridge, GatewayConfig, RxRingMode};
use serde::Serialize;

use super::quic::Target;
use super::{RunOpts, thread_run_delay};
use crate::sys::thread_cpu_time;

/// The LAN host's MAC (sender end of the veth).
const HOST: Mac = Mac([0x02, 0, 0, 0, 0xb0, 0x01]);
/// The gateway NIC's MAC.
const GW: Mac = Mac([0x02, 0, 0, 0, 0xb0, 0xfe]);
/// The remote player's MAC.
const CLIENT: Mac = Mac([0x02, 0, 0, 0, 0xc1, 0x01]);
const SECRET: &str = "bench gateway secret";
const HOST_IF: &str = "lpgbs0";
const NIC_IF: &str = "lpgbn0";
/// Local experimental ethertype: nobody on the namespaces' stacks answers it.
const ETHERTYPE: u16 = 0x88b5;
/// Frame sizes (whole Ethernet frames, header included).
const SIZES: [usize; 2] = [64, 1400];
/// Upper bound on frames one blast sends (the time bound usually ends it first).
const MAX_FRAMES: u64 = 20_000_000;
/// Share of the measured maximum rate the loss run sends at.
const LOSS_RATE_SHARE: f64 = 0.8;
/// The RX ring layout the gateway uses unless told otherwise: the targets are judged on it.
const DEFAULT_RING: RxRingMode = RxRingMode::V2;
/// The other layout (`--rx-ring v3`), measured alongside for comparison.
const OTHER_RING: RxRingMode = RxRingMode::V3;

/// Which receive path the gateway uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Path {
    /// `lanparty_gateway::Bridge` on RX + TX rings of this layout (the gateway's default is
    /// [`RxRingMode::V2`]).
    Ring(RxRingMode),
    /// `PacketSocket`: recvmmsg, one send per frame (baseline).
    Socket,
    /// `PacketSocket` as [`Path::Socket`], but the room's frames of a turn leave with one
    /// `sendmmsg` per 64 (room → LAN only): the TX alternative without a ring.
    SocketMmsg,
    /// A bare RX ring of this layout: wait, filter, copy; no QUIC (LAN → room only).
    RingRx(RxRingMode),
    /// A bare `PacketSocket`: wait, recvmmsg, filter, copy; no QUIC (LAN → room only).
    SocketRx,
    /// The room → LAN send half alone, no QUIC: frames from memory into a bare TX ring of
    /// this layout, one kick per 64 (room → LAN only).
    RingTx(RxRingMode),
    /// As [`Path::RingTx`] without [`RingConfig::tx_linear_copy`]: each frame goes to the
    /// kernel as a fragment pointing at its ring slot (the gateway before it set that option).
    RingTxPaged(RxRingMode),
    /// As [`Path::RingTx`] with a bare `PacketSocket`, one `send` per frame (baseline).
    SocketTx,
    /// As [`Path::RingTx`] with a bare `PacketSocket`, one `sendmmsg` per 64 frames.
    SocketMmsgTx,
}

impl Path {
    fn name(self) -> &'static str {
        match self {
            Self::Ring(RxRingMode::V2) => "ring V2 (Bridge, default)",
            Self::Ring(RxRingMode::V3) => "ring V3 (Bridge, --rx-ring v3)",
            Self::Socket => "recvmmsg socket (baseline)",
            Self::SocketMmsg => "sendmmsg socket (TX alternative)",
            Self::RingRx(RxRingMode::V2) => "ring V2, receive + filter only",
            Self::RingRx(RxRingMode::V3) => "ring V3, receive + filter only",
            Self::SocketRx => "recvmmsg socket, receive + filter only (baseline)",
            Self::RingTx(RxRingMode::V2) => "ring V2, send only",
            Self::RingTx(RxRingMode::V3) => "ring V3, send only",
            Self::RingTxPaged(RxRingMode::V2) => "ring V2, send only, page fragments",
            Self::RingTxPaged(RxRingMode::V3) => "ring V3, send only, page fragments",
            Self::SocketTx => "send socket, send only (baseline)",
            Self::SocketMmsgTx => "sendmmsg socket, send only",
        }
    }

    /// A short id: the JSON value and, prefixed with `gw-`, the gateway thread's name (so
    /// `perf report --comm gw-ring-v2` shows one path).
    fn id(self) -> &'static str {
        match self {
            Self::Ring(RxRingMode::V2) => "ring-v2",
            Self::Ring(RxRingMode::V3) => "ring-v3",
            Self::Socket => "socket",
            Self::SocketMmsg => "socket-mmsg",
            Self::RingRx(RxRingMode::V2) => "ringrx-v2",
            Self::RingRx(RxRingMode::V3) => "ringrx-v3",
            Self::SocketRx => "socketrx",
            Self::RingTx(RxRingMode::V2) => "ringtx-v2",
            Self::RingTx(RxRingMode::V3) => "ringtx-v3",
            Self::RingTxPaged(RxRingMode::V2) => "ringtx-paged-v2",
            Self::RingTxPaged(RxRingMode::V3) => "ringtx-paged-v3",
            Self::SocketTx => "sockettx",
            Self::SocketMmsgTx => "socket-mmsgtx",
        }
    }

    fn is_rx_only(self) -> bool {
        matches!(self, Self::RingRx(_) | Self::SocketRx)
    }

    fn is_tx_only(self) -> bool {
        matches!(
            self,
            Self::RingTx(_) | Self::RingTxPaged(_) | Self::SocketTx | Self::SocketMmsgTx
        )
    }
}

impl Serialize for Path {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.id())
    }
}

/// Which way frames flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
enum Dir {
    LanToRoom,
    RoomToLan,
}

impl Dir {
    fn name(self) -> &'static str {
        match self {
            Self::LanToRoom => "LAN → room",
            Self::RoomToLan => "room → LAN",
        }
    }
}

/// What one run measured.
#[derive(Debug, Clone, Copy, Default, Serialize)]
struct Sample {
    /// Frames the source sent (LAN host or player).
    sent: u64,
    /// Frames that reached the gateway: the LAN host's frames (LAN → room), or the frames
    /// the gateway received from the room (room → LAN; the relay drops what the
    /// relay → gateway connection cannot carry, which is not the gateway's loss).
    reached: u64,
    /// Frames the gateway moved in the measured direction (into QUIC, or onto the LAN).
    moved: u64,
    /// Frames that arrived at the far end (player, or LAN host).
    delivered: u64,
    wall_secs: f64,
    gw_cpu_secs: f64,
    /// Time the gateway thread was runnable but waited for a CPU.
    gw_starved_secs: f64,
    /// Frames the kernel dropped because the gateway's RX ring (or socket buffer) was full.
    rx_full: u64,
    /// Turns of the gateway loop in the measured window.
    turns: u64,
}

impl Sample {
    fn frames_per_sec(&self) -> f64 {
        self.moved as f64 / self.wall_secs.max(1e-9)
    }
    fn offered_per_sec(&self) -> f64 {
        self.sent as f64 / self.wall_secs.max(1e-9)
    }
    fn ns_per_frame(&self) -> f64 {
        self.gw_cpu_secs * 1e9 / self.moved.max(1) as f64
    }
    fn frames_per_cpu_sec(&self) -> f64 {
        self.moved as f64 / self.gw_cpu_secs.max(1e-9)
    }
    fn loss_pct(&self) -> f64 {
        100.0 * self.reached.saturating_sub(self.moved) as f64 / self.reached.max(1) as f64
    }
    fn rx_full_pct(&self) -> f64 {
        100.0 * self.rx_full as f64 / self.reached.max(1) as f64
    }
    fn gw_starved_pct(&self) -> f64 {
        100.0 * self.gw_starved_secs / self.wall_secs.max(1e-9)
    }
    fn e2e_loss_pct(&self) -> f64 {
        100.0 * self.sent.saturating_sub(self.delivered) as f64 / self.sent.max(1) as f64
    }
    fn frames_per_turn(&self) -> f64 {
        self.moved as f64 / self.turns.max(1) as f64
    }
}

/// One path, direction and size over all repeats.
#[derive(Debug, Clone, Serialize)]
struct Row {
    path: Path,
    dir: Dir,
    size: usize,
    /// Paced at this many frames per second (`None`: as fast as possible).
    paced_fps: Option<f64>,
    /// Frames the source managed to send per second.
    offered_per_sec: Spread,
    frames_per_sec: Spread,
    ns_per_frame: Spread,
    frames_per_cpu_sec: Spread,
    /// Sent but not moved by the gateway, percent.
    loss_pct: Spread,
    /// Of the frames that reached the gateway, dropped by the kernel for a full RX ring or
    /// socket buffer, percent (part of `loss_pct`).
    rx_full_pct: Spread,
    /// Sent but not delivered at the far end, percent.
    e2e_loss_pct: Spread,
    /// Share of the run the gateway thread waited for a CPU, percent.
    gw_starved_pct: Spread,
    /// Frames moved per turn of the gateway loop: what one wake-up, one kick and one ACK are
    /// shared by, and so how much the TX ring's one kick per turn saves over a `send` each.
    frames_per_turn: Spread,
    sent: u64,
    moved: u64,
    delivered: u64,
}

impl Row {
    fn new(path: Path, dir: Dir, size: usize, paced_fps: Option<f64>, runs: &[Sample]) -> Self {
        let s = |f: fn(&Sample) -> f64| Spread::of(runs.iter().map(f));
        Self {
            path,
            dir,
            size,
            paced_fps,
            offered_per_sec: s(Sample::offered_per_sec),
            frames_per_sec: s(Sample::frames_per_sec),
            ns_per_frame: s(Sample::ns_per_frame),
            frames_per_cpu_sec: s(Sample::frames_per_cpu_sec),
            loss_pct: s(Sample::loss_pct),
            rx_full_pct: s(Sample::rx_full_pct),
            e2e_loss_pct: s(Sample::e2e_loss_pct),
            gw_starved_pct: s(Sample::gw_starved_pct),
            frames_per_turn: s(Sample::frames_per_turn),
            sent: runs.iter().map(|r| r.sent).sum(),
            moved: runs.iter().map(|r| r.moved).sum(),
            delivered: runs.iter().map(|r| r.delivered).sum(),
        }
    }
}

/// Everything one `bench gateway` run measured.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct GatewayReport {
    quick: bool,
    repeats: usize,
    seconds_per_run: f64,
    cpus: usize,
    rows: Vec<Row>,
    targets: Vec<Target>,
    /// Ring vs socket ratios of the half paths (no QUIC): they show where the cost sits; the
    /// issue's targets are on the whole path, ring into QUIC and back.
    half_paths: Vec<Target>,
    /// Where the Markdown and JSON were written.
    #[serde(skip)]
    pub(crate) files: Vec<PathBuf>,
}

/// Runs the whole benchmark, writes `gateway.md` and `gateway.json`, prints the table. Without
/// root it prints a skip line and returns `None`.
pub(crate) fn run_gateway(opts: &RunOpts) -> anyhow::Result<Option<GatewayReport>> {
    if !netns::is_root() {
        println!("bench gateway: skipped: needs root (network namespaces, AF_PACKET)");
        return Ok(None);
    }
    let duration = if opts.quick {
        Duration::from_millis(250)
    } else {
        Duration::from_secs(2)
    };
    let lab = Lab::new()?;
    let mut rows = Vec::new();
    let mut room_seq = 0u32;
    let mut room = || {
        room_seq += 1;
        format!("bench{room_seq}")
    };
    for &size in &SIZES {
        for (dir, path) in [
            (Dir::LanToRoom, Path::Ring(DEFAULT_RING)),
            (Dir::LanToRoom, Path::Ring(OTHER_RING)),
            (Dir::LanToRoom, Path::Socket),
            (Dir::LanToRoom, Path::RingRx(DEFAULT_RING)),
            (Dir::LanToRoom, Path::RingRx(OTHER_RING)),
            (Dir::LanToRoom, Path::SocketRx),
            (Dir::RoomToLan, Path::Ring(DEFAULT_RING)),
            (Dir::RoomToLan, Path::Ring(OTHER_RING)),
            (Dir::RoomToLan, Path::Socket),
            (Dir::RoomToLan, Path::SocketMmsg),
            (Dir::RoomToLan, Path::RingTx(DEFAULT_RING)),
            (Dir::RoomToLan, Path::RingTx(OTHER_RING)),
            (Dir::RoomToLan, Path::RingTxPaged(DEFAULT_RING)),
            (Dir::RoomToLan, Path::SocketTx),
            (Dir::RoomToLan, Path::SocketMmsgTx),
        ] {
            let mut runs = Vec::new();
            for _ in 0..opts.repeats {
                runs.push(lab.measure(&room(), path, dir, size, duration, None)?);
            }
            let r = Row::new(path, dir, size, None, &runs);
            eprintln!(
                "{} {} {size} B: {:.0} frames/s, {:.0} ns/frame",
                path.name(),
                dir.name(),
                r.frames_per_sec.median,
                r.ns_per_frame.median
            );
            rows.push(r);
        }
        // Loss at 80 % of each ring's measured maximum rate into the room.
        for mode in [DEFAULT_RING, OTHER_RING] {
            let path = Path::Ring(mode);
            let max = rows
                .iter()
                .find(|r| r.path == path && r.dir == Dir::LanToRoom && r.size == size)
                .map_or(0.0, |r| r.frames_per_sec.median);
            let rate = (max * LOSS_RATE_SHARE).max(1000.0);
            let mut runs = Vec::new();
            for _ in 0..opts.repeats {
                runs.push(lab.measure(
                    &room(),
                    path,
                    Dir::LanToRoom,
                    size,
                    duration,
                    Some(rate),
                )?);
            }
            let r = Row::new(path, Dir::LanToRoom, size, Some(rate), &runs);
            eprintln!(
                "{} {} {size} B paced {rate:.0}/s: loss {:.2} % (worst {:.2} %)",
                path.name(),
                Dir::LanToRoom.name(),
                r.loss_pct.median,
                r.loss_pct.max
            );
            rows.push(r);
        }
    }
    drop(lab);

    for r in &rows {
        ensure!(
            r.moved > 0,
            "no frames flowed: {} {} {} B",
            r.path.name(),
            r.dir.name(),
            r.size
        );
    }
    let (targets, half_paths) = targets(&rows)?;
    let mut report = GatewayReport {
        quick: opts.quick,
        repeats: opts.repeats,
        seconds_per_run: duration.as_secs_f64(),
        cpus: thread::available_parallelism().map_or(1, usize::from),
        rows,
        targets,
        half_paths,
        files: Vec::new(),
    };
    let markdown = markdown(&report);
    print!("{markdown}");
    std::fs::create_dir_all(&opts.out)
        .with_context(|| format!("creating {}", opts.out.display()))?;
    let md_path = opts.out.join("gateway.md");
    let json_path = opts.out.join("gateway.json");
    std::fs::write(&md_path, &markdown).with_context(|| md_path.display().to_string())?;
    std::fs::write(&json_path, serde_json::to_string_pretty(&report)?)
        .with_context(|| json_path.display().to_string())?;
    // The files must read back: a quick run is the CI check that results are written.
    let back: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json_path)?)?;
    ensure!(
        back["rows"].as_array().is_some_and(|a| !a.is_empty()),
        "{} has no rows",
        json_path.display()
    );
    report.files = vec![md_path, json_path];
    Ok(Some(report))
}

/// The targets (whole paths with QUIC, and loss) and the half-path ratios shown beside them.
fn targets(rows: &[Row]) -> anyhow::Result<(Vec<Target>, Vec<Target>)> {
    let find = |path: Path, dir: Dir, size: usize, paced: bool| {
        rows.iter()
            .find(|r| {
                r.path == path && r.dir == dir && r.size == size && r.paced_fps.is_some() == paced
            })
            .with_context(|| format!("missing row {} {} {size} B", path.name(), dir.name()))
    };
    let mut targets = Vec::new();
    let mut half_paths = Vec::new();
    for mode in [DEFAULT_RING, OTHER_RING] {
        let version = match mode {
            RxRingMode::V2 => "V2 (default)",
            RxRingMode::V3 => "V3",
        };
        for &size in &SIZES {
            for (dir, ring, base, what) in [
                (Dir::LanToRoom, Path::Ring(mode), Path::Socket, "with QUIC"),
                (
                    Dir::LanToRoom,
                    Path::RingRx(mode),
                    Path::SocketRx,
                    "receive + filter only",
                ),
                (Dir::RoomToLan, Path::Ring(mode), Path::Socket, "with QUIC"),
                (
                    Dir::RoomToLan,
                    Path::RingTx(mode),
                    Path::SocketTx,
                    "send only",
                ),
            ] {
                let ring = find(ring, dir, size, false)?;
                let base = find(base, dir, size, false)?;
                let ratio =
                    ring.frames_per_cpu_sec.median / base.frames_per_cpu_sec.median.max(1e-9);
                let list = if what == "with QUIC" {
                    &mut targets
                } else {
                    &mut half_paths
                };
                list.push(Target {
                    name: format!(
                        "ring {version} frames per CPU-second vs socket, {} {size} B, {what} \
                         (ratio)",
                        dir.name()
                    ),
                    measured: ratio,
                    required: 1.3,
                    at_most: false,
                    met: ratio >= 1.3,
                });
            }
            let paced = find(Path::Ring(mode), Dir::LanToRoom, size, true)?;
            let loss = paced.loss_pct.max;
            targets.push(Target {
                name: format!(
                    "ring {version} LAN → room loss at 80 % of max rate ({:.0} frames/s), \
                     {size} B (%, worst run)",
                    paced.paced_fps.unwrap_or(0.0)
                ),
                measured: loss,
                required: 0.0,
                at_most: true,
                met: loss <= 0.0,
            });
        }
    }
    Ok((targets, half_paths))
}

fn markdown(r: &GatewayReport) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "## Gateway: LAN packet ring ⇄ QUIC vs recvmmsg AF_PACKET socket\n\n\
         {} repeat(s) of {:.2} s per cell, {} CPU(s){}. Median (min–max). CPU = the gateway \
         datapath thread only. \"moved\" = frames the gateway handed to QUIC (LAN → room) or \
         wrote onto the LAN (room → LAN); loss = frames that reached the gateway (sent by the LAN \
         host, or received from the room) − moved; e2e loss = sent − received at \
         the far end (player through the relay, or the LAN host).\n",
        r.repeats,
        r.seconds_per_run,
        r.cpus,
        if r.quick { ", --quick" } else { "" }
    );
    let _ = writeln!(
        s,
        "| path | direction | frame | sending | offered/s | frames/s | CPU ns/frame | frames/CPU-s | loss % | of it RX full % | e2e loss % | gw waited for CPU % | frames/turn |"
    );
    let _ = writeln!(
        s,
        "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for row in &r.rows {
        let _ = writeln!(
            s,
            "| {} | {} | {} B | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            row.path.name(),
            row.dir.name(),
            row.size,
            row.paced_fps
                .map_or_else(|| "max".to_owned(), |f| format!("paced {f:.0}/s")),
            row.offered_per_sec.show(0),
            row.frames_per_sec.show(0),
            row.ns_per_frame.show(0),
            row.frames_per_cpu_sec.show(0),
            row.loss_pct.show(2),
            row.rx_full_pct.show(2),
            if row.path.is_rx_only() {
                "–".to_owned()
            } else {
                row.e2e_loss_pct.show(2)
            },
            row.gw_starved_pct.show(0),
            row.frames_per_turn.show(1),
        );
    }
    let _ = writeln!(s, "\n| target | measured | required | met |");
    let _ = writeln!(s, "|---|---:|---:|---|");
    for t in &r.targets {
        let _ = writeln!(
            s,
            "| {} | {:.2} | {} {:.2} | {} |",
            t.name,
            t.measured,
            if t.at_most { "≤" } else { "≥" },
            t.required,
            if t.met { "yes" } else { "**no**" }
        );
    }
    let _ = writeln!(
        s,
        "\nHalf paths, no QUIC (no target; they show where the cost sits):\n\n\
         | half path | ring / socket |\n|---|---:|"
    );
    for t in &r.half_paths {
        let _ = writeln!(s, "| {} | {:.2} |", t.name, t.measured);
    }
    s
}

// ---------------------------------------------------------------------------------------------
// The namespaces, the relay, the players

/// The two namespaces, the veth between them and the relay; all removed on drop.
struct Lab {
    relay: Option<lanparty_relay::RelayHandle>,
    relay_addr: SocketAddr,
    pin: Fingerprint,
    state_dir: PathBuf,
    // Drop order: the veth before the namespaces.
    _veth: Veth,
    snd: Netns,
    nic: Netns,
}

impl Lab {
    fn new() -> anyhow::Result<Self> {
        let snd = Netns::create("gwbsnd").context("creating the sender namespace")?;
        let nic = Netns::create("gwbnic").context("creating the gateway namespace")?;
        for ns in [&snd, &nic] {
            for key in [
                "net.ipv6.conf.all.disable_ipv6",
                "net.ipv6.conf.default.disable_ipv6",
            ] {
                ns.set_sysctl(key, "1")?;
            }
        }
        let veth = Veth::create(Some(&snd), HOST_IF, Some(&nic), NIC_IF)?;
        snd.set_mac(HOST_IF, HOST)?;
        nic.set_mac(NIC_IF, GW)?;
        snd.set_link_up(HOST_IF)?;
        nic.set_link_up(NIC_IF)?;
        let state_dir = std::env::temp_dir().join(format!("lpgwbench-relay-{}", nic.name()));
        let mut config = lanparty_relay::RelayConfig::new(
            "127.0.0.1:0".parse().expect("literal address"),
            state_dir.clone(),
        );
        // Every run joins two fresh peers from 127.0.0.1.
        config.admission.max_connections_per_ip = 1024;
        let relay = nic
            .run_in(move || lanparty_relay::start(config))?
            .context("starting the in-process relay")?;
        Ok(Self {
            relay_addr: relay.local_addr(),
            pin: relay.fingerprint(),
            relay: Some(relay),
            state_dir,
            _veth: veth,
            snd,
            nic,
        })
    }

    /// One run: a gateway on `path` and a player join `room`, frames flow in `dir` for
    /// `duration` (paced at `rate` frames/s when given), everything is torn down.
    fn measure(
        &self,
        room: &str,
        path: Path,
        dir: Dir,
        size: usize,
        duration: Duration,
        rate: Option<f64>,
    ) -> anyhow::Result<Sample> {
        let mut gw = self.gateway(room, path, size)?;
        let mut player = self.player(room)?;
        // Join: both sides turn until the gateway sees the player as a remote client.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !(player.uplink.is_joined() && gw.remotes() > 0) {
            if Instant::now() > deadline {
                bail!(
                    "{}: the gateway and the player did not meet in room {room} (player: {})",
                    path.name(),
                    player.uplink.status()
                );
            }
            gw.turn()?;
            player.turn(Duration::from_millis(1))?;
        }
        // Steady state: the sender's frames travel whole once PMTUD has raised the room's
        // budget (a few round trips after the join); before that every frame would be two.
        let budget = |gw: &Gw, player: &Player| match dir {
            Dir::LanToRoom => gw.frame_budget(),
            Dir::RoomToLan if path.is_tx_only() => None,
            Dir::RoomToLan => player.uplink.frame_budget(),
        };
        let settle_end = Instant::now() + Duration::from_secs(3);
        while budget(&gw, &player).is_some_and(|b| b.max_whole_frame() < size) {
            if Instant::now() > settle_end {
                eprintln!(
                    "{}: frames of {size} B still travel in fragments (budget {:?})",
                    path.name(),
                    budget(&gw, &player)
                );
                break;
            }
            gw.turn()?;
            player.turn(Duration::from_millis(1))?;
        }

        let stop = Arc::new(AtomicBool::new(false));
        let go = Arc::new(AtomicBool::new(false));
        let gw_thread = {
            let (stop, go) = (Arc::clone(&stop), Arc::clone(&go));
            thread::Builder::new()
                .name(format!("gw-{}", path.id()))
                .spawn(
                    move || -> anyhow::Result<(Gw, Counts, Counts, Duration, Duration, u64)> {
                        while !go.load(Ordering::Acquire) {
                            gw.turn()?;
                        }
                        gw.begin();
                        let (before, cpu0, delay0) =
                            (gw.counts(), thread_cpu_time(), thread_run_delay());
                        let mut turns = 0u64;
                        while !stop.load(Ordering::Acquire) {
                            gw.turn()?;
                            turns += 1;
                        }
                        let cpu = thread_cpu_time() - cpu0;
                        let starved = thread_run_delay().saturating_sub(delay0);
                        gw.end();
                        let after = gw.counts();
                        Ok((gw, before, after, cpu, starved, turns))
                    },
                )?
        };
        let result = match dir {
            Dir::LanToRoom => lan_to_room(self.lan_host()?, &mut player, size, duration, rate, &go),
            Dir::RoomToLan => room_to_lan(
                || self.host_rx_packets(),
                &mut player,
                size,
                duration,
                !path.is_tx_only(),
                &go,
                &stop,
            ),
        };
        stop.store(true, Ordering::Release);
        let joined = gw_thread
            .join()
            .map_err(|_| anyhow::anyhow!("the gateway thread panicked"))?;
        let (sent, delivered, wall) = result?;
        let (mut gw, before, after, cpu, starved, turns) = joined?;
        // Say goodbye so the relay frees both connections now.
        gw.close()?;
        player.uplink.close(Instant::now(), "benchmark run done");
        player.uplink.transmit(Instant::now())?;
        let moved = match dir {
            Dir::LanToRoom => after.lan_forwarded - before.lan_forwarded,
            Dir::RoomToLan => after.room_to_lan - before.room_to_lan,
        };
        let reached = match dir {
            Dir::LanToRoom => sent,
            Dir::RoomToLan => after.room_frames - before.room_frames,
        };
        // Without QUIC the gateway itself is the source.
        let sent = if path.is_tx_only() { reached } else { sent };
        Ok(Sample {
            sent,
            reached,
            moved,
            delivered,
            wall_secs: wall.as_secs_f64(),
            gw_cpu_secs: cpu.as_secs_f64(),
            gw_starved_secs: starved.as_secs_f64(),
            rx_full: after.rx_full - before.rx_full,
            turns,
        })
    }

    fn gateway(&self, room: &str, path: Path, size: usize) -> anyhow::Result<Gw> {
        let room_code = RoomCode::new(room)?;
        match path {
            Path::Ring(rx_ring) => {
                let config = GatewayConfig {
                    interface: NIC_IF.to_owned(),
                    relay_host: self.relay_addr.ip().to_string(),
                    relay_port: self.relay_addr.port(),
                    room: room_code,
                    secret: Secret::new(SECRET)?,
                    trust: ClientTrust::Pinned(self.pin),
                    gateway_token: None,
                    name: DisplayName::new("bench gateway")?,
                    log_format: LogFormat::Human,
                    idle_timeout: Duration::from_secs(30),
                    rx_ring,
                };
                let bridge = self
                    .nic
                    .run_in(move || lanparty_gateway::start(&config, Instant::now()))??;
                Ok(Gw::Ring(Box::new(bridge)))
            }
            Path::RingRx(mode) => {
                // The gateway's own geometry for that layout.
                let config = lanparty_gateway::ring_config(mode);
                let ring = self
                    .nic
                    .run_in(move || PacketRing::open(NIC_IF, &config))??;
                Ok(Gw::RingRx(Box::new(RxOnly::new(ring))))
            }
            Path::RingTx(mode) | Path::RingTxPaged(mode) => {
                let config = RingConfig {
                    tx_linear_copy: matches!(path, Path::RingTx(_)),
                    ..lanparty_gateway::ring_config(mode)
                };
                let ring = self
                    .nic
                    .run_in(move || PacketRing::open(NIC_IF, &config))??;
                Ok(Gw::RingTx(Box::new(TxOnly::new(ring, size))))
            }
            Path::SocketTx | Path::SocketMmsgTx => {
                let sock = self
                    .nic
                    .run_in(|| PacketSocket::open(NIC_IF, &SocketConfig::default()))??;
                let mut tx = TxOnly::new(sock, size);
                tx.batch = path == Path::SocketMmsgTx;
                Ok(Gw::SocketTx(Box::new(tx)))
            }
            Path::SocketRx => {
                let sock = self
                    .nic
                    .run_in(|| PacketSocket::open(NIC_IF, &SocketConfig::default()))??;
                Ok(Gw::SocketRx(Box::new(RxOnly::new(sock))))
            }
            Path::Socket | Path::SocketMmsg => {
                let sock = self
                    .nic
                    .run_in(|| PacketSocket::open(NIC_IF, &SocketConfig::default()))??;
                let mut uplink = self.uplink(room, Role::Gateway, GW, "bench gateway")?;
                uplink.runner().io().watch_fd(
                    sock.as_raw_fd(),
                    SOCKET_TOKEN,
                    Interest::Readable,
                )?;
                Ok(Gw::Socket(Box::new(SocketGateway {
                    uplink,
                    sock,
                    filter: LanFilter::new(),
                    buf: vec![0; 9220],
                    counts: Counts::default(),
                    batch_tx: path == Path::SocketMmsg,
                    tx_batch: Vec::with_capacity(TX_BATCH),
                })))
            }
        }
    }

    fn player(&self, room: &str) -> anyhow::Result<Player> {
        Ok(Player {
            uplink: self.uplink(room, Role::Client, CLIENT, "bench player")?,
            received: 0,
        })
    }

    /// An uplink in the gateway's namespace to the relay.
    fn uplink(&self, room: &str, role: Role, mac: Mac, name: &str) -> anyhow::Result<Uplink> {
        let udp = self
            .nic
            .run_in(|| io::open_best("127.0.0.1:0".parse().expect("literal address")))??;
        let runner = Runner::new(Driver::new(DriverConfig::default(), None), udp);
        let config = UplinkConfig {
            relay: self.relay_addr,
            server_name: self.relay_addr.ip().to_string(),
            client: tls::client_config(&ClientTrust::Pinned(self.pin))?,
            hello: Hello {
                version: PROTOCOL_VERSION,
                role,
                room: RoomCode::new(room)?,
                mac,
                secret: Secret::new(SECRET)?,
                gateway_token: None,
                datagram_budget: 1200,
                name: DisplayName::new(name)?,
            },
            session: SessionConfig::new(self.relay_addr.to_string(), room, mac, 7),
            reassembly: ReassemblyConfig::default(),
            clamp_mss: true,
        };
        Ok(Uplink::new(Instant::now(), runner, config))
    }

    /// Frames the LAN host's interface received, from its counters. Room → LAN frames are
    /// counted there rather than read from a packet socket: the veth runs the LAN host's
    /// receive on the gateway's thread, and copying every frame into a ring would put the LAN
    /// host's work in the gateway's CPU time (on a physical NIC it is another machine's).
    fn host_rx_packets(&self) -> anyhow::Result<u64> {
        let dev = self
            .snd
            .run_in(|| std::fs::read_to_string("/proc/thread-self/net/dev"))??;
        rx_packets(&dev, HOST_IF).with_context(|| format!("no {HOST_IF} in /proc/net/dev"))
    }

    /// The LAN host's TX/RX ring on the sender end of the veth.
    fn lan_host(&self) -> anyhow::Result<PacketRing> {
        let config = RingConfig {
            rx_block_count: 8,
            ..RingConfig::default()
        };
        Ok(self
            .snd
            .run_in(move || PacketRing::open(HOST_IF, &config))??)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(relay) = self.relay.take() {
            let _ = relay.shutdown("benchmark done");
        }
        let _ = std::fs::remove_dir_all(&self.state_dir);
    }
}

/// The token the baseline's socket fd is watched with.
const SOCKET_TOKEN: u64 = 0x736f_636b;

/// The gateway counters a run reads.
#[derive(Debug, Clone, Copy, Default)]
struct Counts {
    lan_forwarded: u64,
    room_to_lan: u64,
    room_frames: u64,
    /// Frames the kernel dropped because the RX ring (or the socket's receive buffer) was full.
    rx_full: u64,
}

/// A gateway under test.
enum Gw {
    Ring(Box<Bridge>),
    Socket(Box<SocketGateway>),
    RingRx(Box<RxOnly<PacketRing>>),
    SocketRx(Box<RxOnly<PacketSocket>>),
    RingTx(Box<TxOnly<PacketRing>>),
    SocketTx(Box<TxOnly<PacketSocket>>),
}

impl Gw {
    fn turn(&mut self) -> anyhow::Result<()> {
        match self {
            Self::Ring(b) => b.turn(Duration::from_millis(1))?,
            Self::Socket(s) => s.turn()?,
            Self::RingRx(r) => r.turn_ring()?,
            Self::SocketRx(r) => r.turn_socket()?,
            Self::RingTx(t) => t.turn_ring()?,
            Self::SocketTx(t) => t.turn_socket()?,
        }
        Ok(())
    }

    /// The measurement starts: a send-only gateway starts sending.
    fn begin(&mut self) {
        match self {
            Self::RingTx(t) => t.active = true,
            Self::SocketTx(t) => t.active = true,
            _ => {}
        }
    }

    /// The measurement ended: a send-only gateway stops sending.
    fn end(&mut self) {
        match self {
            Self::RingTx(t) => t.active = false,
            Self::SocketTx(t) => t.active = false,
            _ => {}
        }
    }

    fn close(&mut self) -> anyhow::Result<()> {
        match self {
            Self::Ring(b) => b.close("benchmark run done")?,
            Self::Socket(s) => {
                s.uplink.close(Instant::now(), "benchmark run done");
                s.uplink.transmit(Instant::now())?;
            }
            Self::RingRx(_) | Self::SocketRx(_) | Self::RingTx(_) | Self::SocketTx(_) => {}
        }
        Ok(())
    }

    fn remotes(&self) -> usize {
        match self {
            Self::Ring(b) => b.filter().remote_count(),
            Self::Socket(s) => s.filter.remote_count(),
            Self::RingRx(r) => r.filter.remote_count(),
            Self::SocketRx(r) => r.filter.remote_count(),
            Self::RingTx(t) => t.filter.remote_count(),
            Self::SocketTx(t) => t.filter.remote_count(),
        }
    }

    /// The budget the gateway cuts LAN frames to, for paths that send into QUIC.
    fn frame_budget(&self) -> Option<Budget> {
        match self {
            Self::Ring(b) => b.uplink().frame_budget(),
            Self::Socket(s) => s.uplink.frame_budget(),
            Self::RingRx(_) | Self::SocketRx(_) | Self::RingTx(_) | Self::SocketTx(_) => None,
        }
    }

    /// The counters; reads the kernel's drop count (a `getsockopt`, not for every turn).
    fn counts(&mut self) -> Counts {
        match self {
            Self::Ring(b) => {
                let c = b.counters();
                Counts {
                    lan_forwarded: c.lan_forwarded,
                    room_to_lan: c.room_to_lan,
                    room_frames: c.room_frames,
                    rx_full: b
                        .stats()
                        .drops
                        .get("lan_rx_ring_full")
                        .copied()
                        .unwrap_or(0),
                }
            }
            Self::Socket(s) => Counts {
                rx_full: s.sock.counters().map_or(0, |c| c.kernel_drops),
                ..s.counts
            },
            Self::RingRx(r) => Counts {
                rx_full: r.io.counters().map_or(0, |c| c.kernel_drops),
                ..r.counts
            },
            Self::SocketRx(r) => Counts {
                rx_full: r.io.counters().map_or(0, |c| c.kernel_drops),
                ..r.counts
            },
            Self::RingTx(t) => t.counts,
            Self::SocketTx(t) => t.counts,
        }
    }
}

/// The receive half alone: wait for the fd, read every frame, filter, copy the forwarded
/// ones; nothing goes to QUIC. The player's MAC is set as the filter's remote by hand.
struct RxOnly<T> {
    io: T,
    filter: LanFilter,
    buf: Vec<u8>,
    counts: Counts,
}

impl<T> RxOnly<T> {
    fn new(io: T) -> Self {
        let mut filter = LanFilter::new();
        filter.add_remote(CLIENT);
        Self {
            io,
            filter,
            buf: vec![0; 9220],
            counts: Counts::default(),
        }
    }
}

impl RxOnly<PacketRing> {
    fn turn_ring(&mut self) -> std::io::Result<()> {
        self.io.wait_rx(Duration::from_millis(1))?;
        while let Some(block) = self.io.next_block() {
            for frame in block.frames() {
                if self.filter.decide(frame.data()) != LanVerdict::Forward {
                    continue;
                }
                if let Some(len) = frame.copy_tagged(&mut self.buf) {
                    std::hint::black_box(&self.buf[..len]);
                    self.counts.lan_forwarded += 1;
                }
            }
        }
        Ok(())
    }
}

impl RxOnly<PacketSocket> {
    fn turn_socket(&mut self) -> std::io::Result<()> {
        self.io.wait_rx(Duration::from_millis(1))?;
        while self.io.recv_batch()? > 0 {
            for frame in self.io.frames() {
                if self.filter.decide(frame) != LanVerdict::Forward {
                    continue;
                }
                if let Some(buf) = self.buf.get_mut(..frame.len()) {
                    buf.copy_from_slice(frame);
                    std::hint::black_box(&*buf);
                    self.counts.lan_forwarded += 1;
                }
            }
        }
        Ok(())
    }
}

/// Room frames per `sendmmsg` of [`Path::SocketMmsg`] (the socket's batch size).
const TX_BATCH: usize = 64;

/// The room → LAN send half alone: between [`Gw::begin`] and [`Gw::end`], every turn hands
/// [`TX_BATCH`] copies of one frame (the player's, to the LAN host) to the kernel, as the
/// bridge does with the room's frames, without QUIC and without waiting. The player's MAC is
/// set as the filter's remote by hand (only so the run's join check passes).
struct TxOnly<T> {
    io: T,
    filter: LanFilter,
    frame: bytes::Bytes,
    /// `sendmmsg` batches instead of one `send` per frame (sockets only).
    batch: bool,
    active: bool,
    counts: Counts,
}

impl<T> TxOnly<T> {
    fn new(io: T, size: usize) -> Self {
        let mut filter = LanFilter::new();
        filter.add_remote(CLIENT);
        Self {
            io,
            filter,
            frame: frame(HOST, CLIENT, size).into(),
            batch: false,
            active: false,
            counts: Counts::default(),
        }
    }
}

impl TxOnly<PacketRing> {
    fn turn_ring(&mut self) -> std::io::Result<()> {
        if !self.active {
            return Ok(());
        }
        for _ in 0..TX_BATCH {
            self.counts.room_frames += 1;
            let mut result = self.io.send(&self.frame);
            if result == Err(TxError::RingFull) {
                // What the bridge does: kick, try once more.
                self.io.flush()?;
                result = self.io.send(&self.frame);
            }
            if result.is_ok() {
                self.counts.room_to_lan += 1;
            }
        }
        self.io.flush()?;
        Ok(())
    }
}

impl TxOnly<PacketSocket> {
    fn turn_socket(&mut self) -> std::io::Result<()> {
        if !self.active {
            return Ok(());
        }
        self.counts.room_frames += TX_BATCH as u64;
        if self.batch {
            let refs: [&[u8]; TX_BATCH] = [&self.frame; TX_BATCH];
            let mut rest = &refs[..];
            while let Ok(n @ 1..) = self.io.send_batch(rest) {
                self.counts.room_to_lan += n as u64;
                rest = &rest[n..];
            }
        } else {
            for _ in 0..TX_BATCH {
                if self.io.send(&self.frame).is_ok() {
                    self.counts.room_to_lan += 1;
                }
            }
        }
        Ok(())
    }
}

/// The baseline: the bridge's loop with a plain AF_PACKET socket instead of the rings.
struct SocketGateway {
    uplink: Uplink,
    sock: PacketSocket,
    filter: LanFilter,
    buf: Vec<u8>,
    counts: Counts,
    /// Room → LAN with `sendmmsg` batches instead of one `send` per frame.
    batch_tx: bool,
    /// The room frames of the current batch.
    tx_batch: Vec<bytes::Bytes>,
}

impl SocketGateway {
    fn turn(&mut self) -> std::io::Result<()> {
        let now = Instant::now();
        self.uplink.receive(now);
        while let Some(event) = self.uplink.poll_event() {
            let is_client = |p: &lanparty_control::msg::PeerInfo| p.role == Role::Client;
            match event {
                UplinkEvent::Joined(w) => self
                    .filter
                    .set_remotes(w.peers.iter().filter(|p| is_client(p)).map(|p| p.mac)),
                UplinkEvent::PeerJoined(p) if is_client(&p) => {
                    self.filter.add_remote(p.mac);
                }
                UplinkEvent::PeerLeft(p) if is_client(&p) => {
                    self.filter.remove_remote(p.mac);
                }
                UplinkEvent::Left => self.filter.set_remotes([]),
                _ => {}
            }
        }
        // LAN → room: drain the socket completely (the readiness report may be edge-triggered).
        let mut since_transmit = 0;
        while self.sock.recv_batch()? > 0 {
            for frame in self.sock.frames() {
                if self.filter.decide(frame) != LanVerdict::Forward {
                    continue;
                }
                let Some(buf) = self.buf.get_mut(..frame.len()) else {
                    continue;
                };
                buf.copy_from_slice(frame);
                if self.uplink.send_frame(now, buf) {
                    self.counts.lan_forwarded += 1;
                    since_transmit += 1;
                    if since_transmit == lanparty_gateway::bridge::TRANSMIT_EVERY {
                        since_transmit = 0;
                        self.uplink.transmit(now)?;
                    }
                }
            }
        }
        if self.batch_tx {
            // Room → LAN: one sendmmsg per batch; a batch the device refuses is dropped.
            loop {
                self.tx_batch.clear();
                while self.tx_batch.len() < TX_BATCH {
                    let Some(frame) = self.uplink.poll_frame() else {
                        break;
                    };
                    self.tx_batch.push(frame);
                }
                if self.tx_batch.is_empty() {
                    break;
                }
                self.counts.room_frames += self.tx_batch.len() as u64;
                let mut refs: [&[u8]; TX_BATCH] = [&[]; TX_BATCH];
                for (r, f) in refs.iter_mut().zip(&self.tx_batch) {
                    *r = f;
                }
                let mut rest = &refs[..self.tx_batch.len()];
                while let Ok(n @ 1..) = self.sock.send_batch(rest) {
                    self.counts.room_to_lan += n as u64;
                    rest = &rest[n..];
                }
            }
        } else {
            // Room → LAN: one send per frame.
            while let Some(frame) = self.uplink.poll_frame() {
                self.counts.room_frames += 1;
                if self.sock.send(&frame).is_ok() {
                    self.counts.room_to_lan += 1;
                }
            }
        }
        self.uplink.transmit(now)?;
        self.uplink.wait(Some(now + Duration::from_millis(1)))?;
        Ok(())
    }
}

/// The remote player.
struct Player {
    uplink: Uplink,
    received: u64,
}

impl Player {
    fn turn(&mut self, max_wait: Duration) -> std::io::Result<()> {
        let now = Instant::now();
        self.uplink.receive(now);
        while self.uplink.poll_event().is_some() {}
        while self.uplink.poll_frame().is_some() {
            self.received += 1;
        }
        self.uplink.transmit(now)?;
        self.uplink.wait(Some(Instant::now() + max_wait))?;
        Ok(())
    }
}

/// The received-packets counter of `ifname` in the text of `/proc/net/dev`.
fn rx_packets(dev: &str, ifname: &str) -> Option<u64> {
    dev.lines().find_map(|line| {
        let (name, counters) = line.split_once(':')?;
        // Receive: bytes, packets, ...
        (name.trim() == ifname).then(|| counters.split_whitespace().nth(1)?.parse().ok())?
    })
}

/// An Ethernet frame of `size` bytes from `src` to `dst`.
fn frame(dst: Mac, src: Mac, size: usize) -> Vec<u8> {
    let mut f = vec![0u8; size.max(14)];
    f[..6].copy_from_slice(&dst.0);
    f[6..12].copy_from_slice(&src.0);
    f[12..14].copy_from_slice(&ETHERTYPE.to_be_bytes());
    for (i, b) in f[14..].iter_mut().enumerate() {
        *b = (i * 7 + 3) as u8;
    }
    f
}

/// LAN → room: the LAN host sends from its TX ring (as fast as it can, or paced at `rate`)
/// for `duration`, on a thread of its own; this thread turns the player meanwhile. Returns
/// frames sent, frames the player received, and the sending time.
fn lan_to_room(
    mut host: PacketRing,
    player: &mut Player,
    size: usize,
    duration: Duration,
    rate: Option<f64>,
    go: &AtomicBool,
) -> anyhow::Result<(u64, u64, Duration)> {
    let f = frame(CLIENT, HOST, size);
    let sent = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    go.store(true, Ordering::Release);
    let sender = {
        let (sent, done) = (Arc::clone(&sent), Arc::clone(&done));
        thread::Builder::new().name("bench-lan-host".into()).spawn(
            move || -> anyhow::Result<Duration> {
                let start = Instant::now();
                let end = start + duration;
                let mut n = 0u64;
                loop {
                    let now = Instant::now();
                    if now >= end || n >= MAX_FRAMES {
                        break;
                    }
                    let due =
                        rate.map_or(MAX_FRAMES, |r| ((now - start).as_secs_f64() * r) as u64 + 1);
                    if n >= due {
                        thread::sleep(Duration::from_micros(50));
                        continue;
                    }
                    let mut queued = 0;
                    while n < due && queued < 256 && host.send(&f).is_ok() {
                        n += 1;
                        queued += 1;
                    }
                    if queued == 0 {
                        // TX ring full: wait for the kernel to take slots.
                        host.wait_tx(Duration::from_millis(1))?;
                    }
                    host.flush()?;
                }
                // Let the last kicks leave.
                while host.tx_pending() > 0 && Instant::now() < end + Duration::from_millis(100) {
                    host.flush()?;
                    host.wait_tx(Duration::from_millis(1))?;
                }
                sent.store(n, Ordering::Release);
                done.store(true, Ordering::Release);
                Ok(start.elapsed())
            },
        )?
    };
    while !done.load(Ordering::Acquire) && start.elapsed() < duration + Duration::from_secs(5) {
        player.turn(Duration::from_millis(1))?;
    }
    // Let what is in flight arrive (the gateway keeps turning).
    let drain_end = Instant::now() + Duration::from_millis(300);
    while Instant::now() < drain_end {
        player.turn(Duration::from_millis(1))?;
    }
    let wall = sender
        .join()
        .map_err(|_| anyhow::anyhow!("the LAN host thread panicked"))??;
    Ok((sent.load(Ordering::Acquire), player.received, wall))
}

/// Room → LAN: the player sends bursts into the room for `duration` (unless `player_sends` is
/// false: then the send-only gateway is the source, and `stop` ends it when the time is up);
/// `host_rx` reads the LAN host's received-frames counter before and after. Returns frames the
/// player sent, frames the LAN host received, and the sending time.
fn room_to_lan(
    host_rx: impl Fn() -> anyhow::Result<u64>,
    player: &mut Player,
    size: usize,
    duration: Duration,
    player_sends: bool,
    go: &AtomicBool,
    stop: &AtomicBool,
) -> anyhow::Result<(u64, u64, Duration)> {
    let f = frame(HOST, CLIENT, size);
    let received_before = host_rx()?;
    go.store(true, Ordering::Release);
    let start = Instant::now();
    let end = start + duration;
    let mut sent = 0u64;
    let mut buf = f.clone();
    while Instant::now() < end {
        if !player_sends {
            player.turn(Duration::from_millis(1))?;
            continue;
        }
        let now = Instant::now();
        player.uplink.receive(now);
        while player.uplink.poll_event().is_some() {}
        while player.uplink.poll_frame().is_some() {}
        // As fast as QUIC takes them: frames that would only be dropped from a full DATAGRAM
        // queue are not made, so the player leaves the CPUs to the relay and the gateway.
        // A frame and the overlay headers of two fragments, in case the budget splits it.
        const OVERHEAD: usize = 2 * lanparty_datapath::wire::overlay::FRAGMENT_HEADER_LEN;
        let mut queued = 0;
        while queued < 32 && player.uplink.send_space().unwrap_or(0) >= f.len() + OVERHEAD {
            buf.copy_from_slice(&f);
            if player.uplink.send_frame(now, &mut buf) {
                sent += 1;
            }
            queued += 1;
        }
        player.uplink.transmit(now)?;
        // A full queue waits for an ACK to open the window (or 1 ms), otherwise poll.
        let wake = if queued == 0 {
            Instant::now() + Duration::from_millis(1)
        } else {
            Instant::now()
        };
        player.uplink.wait(Some(wake))?;
    }
    if !player_sends {
        stop.store(true, Ordering::Release);
    }
    let wall = start.elapsed();
    let drain_end = Instant::now() + Duration::from_millis(300);
    while Instant::now() < drain_end {
        player.turn(Duration::from_millis(1))?;
    }
    let received = host_rx()?.saturating_sub(received_before);
    Ok((sent, received, wall))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_is_median_and_range() {
        let s = Spread::of([3.0, 1.0, 2.0]);
        assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
        assert_eq!(Spread::of([1.0, 4.0]).median, 2.5);
        assert_eq!(s.show(0), "2 (1–3)");
        assert_eq!(Spread::of([5.0]).show(1), "5.0");
    }

    #[test]
    fn sample_rates_and_losses() {
        let s = Sample {
            sent: 1000,
            reached: 1000,
            moved: 900,
            delivered: 800,
            wall_secs: 0.5,
            gw_cpu_secs: 0.09,
            gw_starved_secs: 0.05,
            rx_full: 50,
            turns: 30,
        };
        assert_eq!(s.frames_per_sec(), 1800.0);
        assert_eq!(s.offered_per_sec(), 2000.0);
        assert!((s.ns_per_frame() - 100_000.0).abs() < 1e-6);
        assert!((s.frames_per_cpu_sec() - 10_000.0).abs() < 1e-6);
        assert!((s.loss_pct() - 10.0).abs() < 1e-9);
        assert!((s.rx_full_pct() - 5.0).abs() < 1e-9);
        assert!((s.e2e_loss_pct() - 20.0).abs() < 1e-9);
        assert!((s.gw_starved_pct() - 10.0).abs() < 1e-9);
        assert_eq!(s.frames_per_turn(), 30.0);
    }

    #[test]
    fn the_targets_are_judged_on_the_gateways_default_ring() {
        assert_eq!(DEFAULT_RING, RxRingMode::default());
        assert_ne!(OTHER_RING, DEFAULT_RING);
    }

    #[test]
    fn rx_packets_reads_the_named_interface() {
        let dev = "Inter-|   Receive                            |  Transmit\n \
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets\n    \
 lo:       0       0    0    0    0     0          0         0        0       0\n\
lpgbs0: 2800000    2000    0    0    0     0          0         0      140       2\n";
        assert_eq!(rx_packets(dev, "lpgbs0"), Some(2000));
        assert_eq!(rx_packets(dev, "lo"), Some(0));
        assert_eq!(rx_packets(dev, "lpgbs"), None);
        assert_eq!(rx_packets("garbage", "lpgbs0"), None);
    }

    #[test]
    fn frames_carry_the_macs_and_size() {
        let f = frame(CLIENT, HOST, 64);
        assert_eq!(f.len(), 64);
        assert_eq!(&f[..6], &CLIENT.0);
        assert_eq!(&f[6..12], &HOST.0);
        assert_eq!(&f[12..14], &ETHERTYPE.to_be_bytes());
        let mut filter = LanFilter::new();
        filter.add_remote(CLIENT);
        assert_eq!(filter.decide(&f), LanVerdict::Forward);
    }

    /// The CI smoke run: `bench gateway --quick` makes frames flow on every path and writes
    /// its results (the run itself fails when a row moved no frame).
    #[test]
    fn quick_run_moves_frames_and_writes_results() {
        if !netns::require_root("quick_run_moves_frames_and_writes_results") {
            return;
        }
        let out = std::env::temp_dir().join(format!("lpgwbench-out-{}", std::process::id()));
        let opts = RunOpts::new(true, Some(1), Some(out.clone()));
        let report = run_gateway(&opts)
            .unwrap()
            .expect("root runs the benchmark");
        assert!(report.rows.iter().all(|r| r.moved > 0));
        for file in &report.files {
            assert!(std::fs::metadata(file).unwrap().len() > 0);
        }
        let _ = std::fs::remove_dir_all(out);
    }
}
