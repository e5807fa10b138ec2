//! `lanparty-perf bench e2e`: the whole path a remote player's traffic takes — player (`c1`) →
//! relay → gateway → party LAN host (`host1`) — against the same workload on the direct veth
//! path (the lab's [`Variant::Direct`](lanparty_perf::lab::Variant::Direct)) and, when
//! installed, OpenVPN in TAP mode, tinc 1.0 in switch mode and a null tunnel of `socat`
//! processes (what three user-space hops cost without any work) set up in the same places (see
//! [`vpn`](super::vpn)).
//!
//! Each path gets its own lab (built once, measured `--repeats` times). softlan is measured
//! twice in its one lab: from the TAP player `c1` ("softlan") and then from the TUN player `c2`
//! ("softlan TUN", Ethernet emulated by the client; see
//! [`CLIENT_ADAPTERS`](lanparty_perf::lab::CLIENT_ADAPTERS)), one after the other, so the two
//! never share the link. The other paths run from `c1`. Per repeat, from the player to
//! `host1`'s address on the party LAN:
//!
//! - iperf3 TCP, 1 and 4 streams (`-P 4`);
//! - iperf3 UDP at 64, 512 and 1400-byte payloads, unlimited offered rate (`-b 0`): what the
//!   receiver got, in packets and bits per second;
//! - ICMP echo RTTs, idle and while a bulk iperf3 TCP flow runs the same way (own pinger that
//!   keeps every sample, for the CDF plot);
//! - the CPU seconds the tunnel's processes used during each workload (utime + stime from
//!   `/proc/PID/stat` before and after; the direct path has no such processes). For softlan
//!   that is the relay, the gateway and both clients (the idle one included).
//!
//! Results: `e2e.md`, `e2e.json` and the plots `e2e-throughput.svg` (UDP throughput by frame
//! size) and `e2e-latency.svg` (RTT CDF idle and under load) in the output directory. Targets
//! are ratios against the baselines measured in the same run. Paths that cannot run (tunnel
//! programs not built, OpenVPN or tinc not installed) are listed as skipped with the reason.

use crate::stats::Spread;
use std::fmt::Write as _;
use std::io::{ErrorKind, Read as _};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use lanparty_datapath::sys::netns::{self, Netns};
use lanparty_perf::lab::{
    IPERF3_INSTALL_HINT, Lab, LabConfig, LabError, LabProcess, TcpThroughput, TunnelBinaries,
    TunnelSettings, UdpRate, iperf3_installed, iperf3_server, parse_iperf3_tcp, parse_iperf3_udp,
};
use serde::Serialize;

use super::{RunOpts, plot, vpn};

/// The paths compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PathKind {
    Direct,
    /// softlan from the TAP player `c1`.
    Ours,
    /// softlan from the TUN player `c2` (same lab as [`Self::Ours`]).
    OursTun,
    /// Three `socat` processes copying frames unchanged: what three user-space hops cost
    /// before a tunnel does any work of its own.
    Null,
    OpenVpn,
    Tinc,
}

impl PathKind {
    /// One lab each, in this order; [`Self::OursTun`] is measured in [`Self::Ours`]' lab.
    const LABS: [Self; 5] = [
        Self::Direct,
        Self::Ours,
        Self::Null,
        Self::OpenVpn,
        Self::Tinc,
    ];

    /// The paths measured in `self`'s lab, with the player each is measured from.
    fn measured_from(self) -> &'static [(Self, &'static str)] {
        match self {
            Self::Direct => &[(Self::Direct, "c1")],
            Self::Ours | Self::OursTun => &[(Self::Ours, "c1"), (Self::OursTun, "c2")],
            Self::Null => &[(Self::Null, "c1")],
            Self::OpenVpn => &[(Self::OpenVpn, "c1")],
            Self::Tinc => &[(Self::Tinc, "c1")],
        }
    }

    fn is_ours(self) -> bool {
        matches!(self, Self::Ours | Self::OursTun)
    }

    fn name(self) -> &'static str {
        match self {
            Self::Direct => "direct veth",
            Self::Ours => "softlan",
            Self::OursTun => "softlan TUN",
            Self::Null => "null tunnel (socat)",
            Self::OpenVpn => "OpenVPN TAP",
            Self::Tinc => "tinc switch",
        }
    }
}

/// UDP payload sizes measured (the "frame size" axis of the throughput plot).
const UDP_SIZES: [u32; 3] = [64, 512, 1400];
/// iperf3 port for the measured runs, and for the bulk flow under the loaded pings.
const IPERF_PORT: u16 = 5301;
const LOAD_PORT: u16 = 5302;
/// `/proc/PID/stat` counts CPU time in USER_HZ ticks, which is 100 on Linux.
const TICKS_PER_SEC: f64 = 100.0;

/// Lengths of one repeat's runs.
#[derive(Debug, Clone, Copy, Serialize)]
struct Plan {
    iperf_secs: u32,
    load_secs: u32,
    ping_count: u32,
    ping_interval_ms: u64,
}

impl Plan {
    fn new(quick: bool) -> Self {
        if quick {
            Self {
                iperf_secs: 1,
                load_secs: 3,
                ping_count: 30,
                ping_interval_ms: 10,
            }
        } else {
            Self {
                iperf_secs: 3,
                load_secs: 5,
                ping_count: 300,
                ping_interval_ms: 10,
            }
        }
    }
}

/// One workload on one path, over the repeats.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct WorkloadRow {
    /// `TCP 1 stream`, `TCP 4 streams`, `UDP 64 B`, ...
    pub(crate) workload: String,
    /// UDP payload size, for UDP rows.
    pub(crate) udp_payload: Option<u32>,
    /// Received goodput (TCP) or payload bit rate (UDP), Gbit/s.
    pub(crate) gbit_per_sec: Spread,
    /// UDP packets received per second.
    pub(crate) packets_per_sec: Option<Spread>,
    /// UDP packets lost, percent of those sent.
    pub(crate) lost_pct: Option<Spread>,
    /// CPU seconds of the tunnel's processes during the run (`None` on the direct path).
    pub(crate) cpu_secs: Option<Spread>,
}

/// Ping RTTs of one path in one condition, over the repeats.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct PingSummary {
    pub(crate) median_us: Spread,
    pub(crate) p99_us: Spread,
    pub(crate) sent: u32,
    pub(crate) received: u32,
    /// Every RTT of every repeat, microseconds (for the CDF).
    pub(crate) samples_us: Vec<f64>,
}

/// Everything measured on one path.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct PathResult {
    pub(crate) path: String,
    /// Why the path was not measured.
    pub(crate) skipped: Option<String>,
    pub(crate) rows: Vec<WorkloadRow>,
    pub(crate) ping_idle: Option<PingSummary>,
    pub(crate) ping_load: Option<PingSummary>,
    /// Goodput of the bulk flow during the loaded pings, Gbit/s.
    pub(crate) load_gbit_per_sec: Option<Spread>,
}

impl PathResult {
    fn skipped(kind: PathKind, why: String) -> Self {
        eprintln!("e2e: {}: skipped: {why}", kind.name());
        Self {
            path: kind.name().to_owned(),
            skipped: Some(why),
            rows: Vec::new(),
            ping_idle: None,
            ping_load: None,
            load_gbit_per_sec: None,
        }
    }

    fn row(&self, workload: &str) -> Option<&WorkloadRow> {
        self.rows.iter().find(|r| r.workload == workload)
    }
}

/// One target with what was measured (`None`: a path it needs was not measured).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Target {
    pub(crate) name: String,
    pub(crate) measured: Option<f64>,
    pub(crate) required: f64,
    pub(crate) at_most: bool,
    pub(crate) met: Option<bool>,
}

/// Everything one `bench e2e` run measured.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct E2eReport {
    pub(crate) quick: bool,
    pub(crate) repeats: usize,
    plan: Plan,
    pub(crate) paths: Vec<PathResult>,
    pub(crate) targets: Vec<Target>,
    #[serde(skip)]
    pub(crate) files: Vec<PathBuf>,
}

/// Runs the benchmark. Without root or iperf3 it prints why and returns `Ok(None)`.
pub(crate) fn run_e2e(opts: &RunOpts) -> anyhow::Result<Option<E2eReport>> {
    if !netns::is_root() {
        eprintln!("e2e: SKIP: needs root (network namespaces); run it with sudo");
        return Ok(None);
    }
    if !iperf3_installed() {
        eprintln!("e2e: SKIP: iperf3 is not installed ({IPERF3_INSTALL_HINT})");
        return Ok(None);
    }
    let plan = Plan::new(opts.quick);
    let stop = AtomicBool::new(false);
    let mut paths = Vec::new();
    for lab_kind in PathKind::LABS {
        if let Some(why) = unavailable(lab_kind) {
            for (kind, _) in lab_kind.measured_from() {
                paths.push(PathResult::skipped(*kind, why.clone()));
            }
            continue;
        }
        eprintln!("e2e: {}: building the lab", lab_kind.name());
        let results = match measure_path(lab_kind, &plan, opts.repeats, &stop) {
            Ok(results) => results,
            // The lab itself failed: every path measured in it failed the same way.
            // The first path gets the error itself (it decides whether the run fails).
            Err(e) => {
                let why = format!("failed: {e:#}");
                let mut results = vec![(lab_kind, Err(e))];
                for (kind, _) in &lab_kind.measured_from()[1..] {
                    results.push((*kind, Ok(PathResult::skipped(*kind, why.clone()))));
                }
                results
            }
        };
        for (kind, result) in results {
            match result {
                Ok(r) => paths.push(r),
                Err(e) if kind == PathKind::Direct => {
                    return Err(e.context("measuring the direct path"));
                }
                // Our tunnel failing (TAP or TUN) is a failed smoke run (unless it is not wired
                // into the lab); in a full run the table shows the failure next to the
                // baselines.
                Err(e)
                    if kind.is_ours()
                        && opts.quick
                        && !e.chain().any(|c| {
                            matches!(c.downcast_ref(), Some(LabError::TunnelNotWired))
                        }) =>
                {
                    return Err(e.context(format!("measuring {}", kind.name())));
                }
                Err(e) => paths.push(PathResult::skipped(kind, format!("failed: {e:#}"))),
            }
        }
    }
    if opts.quick {
        check_traffic(&paths)?;
    }
    let targets = targets(&paths);
    let mut report = E2eReport {
        quick: opts.quick,
        repeats: opts.repeats,
        plan,
        paths,
        targets,
        files: Vec::new(),
    };
    write_results(&mut report, &opts.out)?;
    Ok(Some(report))
}

/// The `--quick` check: both softlan players were measured or neither, and every path that
/// ran carried traffic.
fn check_traffic(paths: &[PathResult]) -> anyhow::Result<()> {
    // Both softlan players are measured or neither (not built, not wired).
    let ran = |kind: PathKind| path(paths, kind).is_some();
    ensure!(
        ran(PathKind::Ours) == ran(PathKind::OursTun),
        "softlan was measured from only one of its players (TAP {}, TUN {})",
        ran(PathKind::Ours),
        ran(PathKind::OursTun)
    );
    // Everything that ran must have carried traffic.
    for p in paths.iter().filter(|p| p.skipped.is_none()) {
        for r in &p.rows {
            ensure!(
                r.gbit_per_sec.min > 0.0,
                "{}: no traffic in {}",
                p.path,
                r.workload
            );
        }
        // Pings under load may all be lost on a congested path; the flow itself must run.
        ensure!(
            p.ping_idle.as_ref().is_some_and(|s| s.received > 0),
            "{}: no ping replies",
            p.path
        );
        ensure!(
            p.load_gbit_per_sec.is_some_and(|g| g.min > 0.0),
            "{}: no bulk flow under the loaded pings",
            p.path
        );
    }
    Ok(())
}

fn write_results(report: &mut E2eReport, out: &Path) -> anyhow::Result<()> {
    let markdown = markdown(report);
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let md_path = out.join("e2e.md");
    let json_path = out.join("e2e.json");
    std::fs::write(&md_path, &markdown).with_context(|| md_path.display().to_string())?;
    std::fs::write(&json_path, serde_json::to_string_pretty(&report)?)
        .with_context(|| json_path.display().to_string())?;
    let throughput_svg = out.join("e2e-throughput.svg");
    let latency_svg = out.join("e2e-latency.svg");
    plot::throughput_by_size(&throughput_svg, &throughput_series(&report.paths))?;
    let (idle, load) = latency_series(&report.paths);
    plot::latency_cdf(&latency_svg, &idle, &load)?;
    // Read back: a run that wrote nothing useful must not pass.
    let back: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json_path)?)?;
    ensure!(
        back["paths"].as_array().map_or(0, Vec::len) == report.paths.len()
            && std::fs::read_to_string(&md_path)? == markdown
            && [&throughput_svg, &latency_svg]
                .iter()
                .all(|p| std::fs::read_to_string(p).is_ok_and(|s| s.contains("<svg"))),
        "results were not written completely"
    );
    println!("{markdown}");
    report.files = vec![md_path, json_path, throughput_svg, latency_svg];
    Ok(())
}

/// Why `kind` cannot run on this machine, if it cannot.
fn unavailable(kind: PathKind) -> Option<String> {
    match kind {
        PathKind::Direct => None,
        PathKind::Ours | PathKind::OursTun => {
            let bins = TunnelBinaries::next_to_current_exe();
            let missing: Vec<String> = bins
                .missing()
                .iter()
                .map(|p| p.display().to_string())
                .collect();
            (!missing.is_empty()).then(|| {
                format!(
                    "not built: {} (cargo build --release -p lanparty-relay -p lanparty-gateway \
                     -p lanparty-client-win)",
                    missing.join(", ")
                )
            })
        }
        PathKind::Null => (!vpn::socat_installed())
            .then(|| format!("socat not installed ({})", vpn::SOCAT_INSTALL_HINT)),
        PathKind::OpenVpn => (!vpn::openvpn_installed()).then(|| {
            format!(
                "openvpn (and openssl) not installed ({})",
                vpn::VPN_INSTALL_HINT
            )
        }),
        PathKind::Tinc => (!vpn::tinc_installed())
            .then(|| format!("tinc not installed ({})", vpn::VPN_INSTALL_HINT)),
    }
}

/// What runs the path inside the lab: nothing (direct), our programs (kept by the lab; their
/// PIDs), or a baseline.
enum Tunnel {
    None,
    Ours(Vec<u32>),
    Vpn(vpn::Baseline),
}

/// Builds `kind`'s lab, starts its tunnel and measures every path of that lab (see
/// [`PathKind::measured_from`]), each from its player in turn. An error here is the lab's or
/// the tunnel's; each path's own measurement has its own result.
fn measure_path(
    kind: PathKind,
    plan: &Plan,
    repeats: usize,
    stop: &AtomicBool,
) -> anyhow::Result<Vec<(PathKind, anyhow::Result<PathResult>)>> {
    let config = if kind == PathKind::Direct {
        LabConfig::direct()
    } else {
        LabConfig::tunnel()
    };
    let mut progress = |line: &str| eprintln!("e2e:   lab: {line}");
    let mut lab = Lab::build(&config, &mut progress, stop).context("building the lab")?;
    let tunnel = match kind {
        PathKind::Direct => Tunnel::None,
        PathKind::Ours | PathKind::OursTun => Tunnel::Ours(start_ours(&mut lab)?),
        PathKind::Null => Tunnel::Vpn(vpn::start_null(&mut lab)?),
        PathKind::OpenVpn => Tunnel::Vpn(vpn::start_openvpn(&mut lab)?),
        PathKind::Tinc => Tunnel::Vpn(vpn::start_tinc(&mut lab)?),
    };
    let pids = match &tunnel {
        Tunnel::None => Vec::new(),
        Tunnel::Vpn(b) => b.pids(),
        Tunnel::Ours(pids) => pids.clone(),
    };
    let results = kind
        .measured_from()
        .iter()
        .map(|&(path, player)| {
            eprintln!("e2e: {}: measuring from {player}", path.name());
            (path, measure_lab(path, player, &lab, &pids, plan, repeats))
        })
        .collect();
    // Baseline processes die before the lab's namespaces go.
    drop(tunnel);
    drop(lab);
    Ok(results)
}

/// Starts our relay, gateway and clients in the lab (the lab waits until the player has its
/// address from the party's DHCP server through the tunnel) and returns their PIDs.
fn start_ours(lab: &mut Lab) -> anyhow::Result<Vec<u32>> {
    let bins = TunnelBinaries::next_to_current_exe();
    let mut progress = |line: &str| eprintln!("e2e:   tunnel: {line}");
    match lab.start_tunnel_with(&bins, &TunnelSettings::default(), &mut progress) {
        Ok(()) => {}
        Err(e @ LabError::TunnelNotWired) => return Err(e.into()),
        Err(e) => return Err(e).context("starting relay, gateway and clients"),
    }
    let pids = lab.tunnel().map(|t| t.pids()).unwrap_or_default();
    ensure!(!pids.is_empty(), "the tunnel started no process");
    Ok(pids)
}

/// CPU time (user + system) of `pids` so far, seconds.
fn cpu_secs(pids: &[u32]) -> f64 {
    pids.iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
        .filter_map(|stat| {
            // Fields after the parenthesised name: state is field 3, utime 14, stime 15.
            let rest = stat.rsplit_once(") ")?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            let utime: f64 = f.get(11)?.parse().ok()?;
            let stime: f64 = f.get(12)?.parse().ok()?;
            Some((utime + stime) / TICKS_PER_SEC)
        })
        .sum()
}

/// One workload run of one repeat.
struct Run {
    workload: String,
    payload: Option<u32>,
    gbit: f64,
    pps: Option<f64>,
    lost_pct: Option<f64>,
    cpu: f64,
}

/// One repeat on one path.
struct Repeat {
    runs: Vec<Run>,
    idle: (u32, Vec<f64>),
    load: (u32, Vec<f64>),
    load_gbit: f64,
}

/// Measures `kind` from the player `player` (`c1`, `c2`) to `host1`, `repeats` times.
fn measure_lab(
    kind: PathKind,
    player: &str,
    lab: &Lab,
    pids: &[u32],
    plan: &Plan,
    repeats: usize,
) -> anyhow::Result<PathResult> {
    let c1 = lab.node(player)?;
    let host = lab.node("host1")?;
    let dest = host.lan_addr.context("host1 has no LAN address")?;
    let dir = lab.dir().to_path_buf();
    let _server = iperf3_server(&host.ns, IpAddr::V4(dest), IPERF_PORT, &dir)?;
    let _load_server = iperf3_server(&host.ns, IpAddr::V4(dest), LOAD_PORT, &dir)?;
    // The first frames through a fresh tunnel resolve neighbours and learn MAC addresses.
    let (_, warm) = ping(&c1.ns, dest, 5, Duration::from_millis(20))?;
    ensure!(
        !warm.is_empty(),
        "{}: {dest} does not answer ping from {player}",
        kind.name()
    );
    let mut all = Vec::new();
    for rep in 0..repeats {
        let r = measure_once(&c1.ns, dest, pids, plan, &dir)
            .with_context(|| format!("{} repeat {}", kind.name(), rep + 1))?;
        eprintln!(
            "e2e: {}: repeat {}: {}; ping idle median {:.3} ms, under load p99 {:.3} ms",
            kind.name(),
            rep + 1,
            r.runs
                .iter()
                .map(|run| format!("{} {:.2} Gbit/s", run.workload, run.gbit))
                .collect::<Vec<_>>()
                .join(", "),
            quantile(&r.idle.1, 0.5) / 1e3,
            quantile(&r.load.1, 0.99) / 1e3,
        );
        all.push(r);
    }
    let with_cpu = !pids.is_empty();
    let rows = all[0]
        .runs
        .iter()
        .enumerate()
        .map(|(i, run)| {
            let over = |f: &dyn Fn(&Repeat) -> Option<f64>| {
                let v: Vec<f64> = all.iter().filter_map(f).collect();
                (!v.is_empty()).then(|| Spread::of(v))
            };
            WorkloadRow {
                workload: run.workload.clone(),
                udp_payload: run.payload,
                gbit_per_sec: over(&|r| Some(r.runs[i].gbit)).unwrap_or_default(),
                packets_per_sec: over(&|r| r.runs[i].pps),
                lost_pct: over(&|r| r.runs[i].lost_pct),
                cpu_secs: if with_cpu {
                    over(&|r| Some(r.runs[i].cpu))
                } else {
                    None
                },
            }
        })
        .collect();
    let summary = |pick: fn(&Repeat) -> &(u32, Vec<f64>)| PingSummary {
        median_us: Spread::of(all.iter().map(|r| quantile(&pick(r).1, 0.5))),
        p99_us: Spread::of(all.iter().map(|r| quantile(&pick(r).1, 0.99))),
        sent: all.iter().map(|r| pick(r).0).sum(),
        received: all.iter().map(|r| pick(r).1.len() as u32).sum(),
        samples_us: all.iter().flat_map(|r| pick(r).1.iter().copied()).collect(),
    };
    Ok(PathResult {
        path: kind.name().to_owned(),
        skipped: None,
        rows,
        ping_idle: Some(summary(|r| &r.idle)),
        ping_load: Some(summary(|r| &r.load)),
        load_gbit_per_sec: Some(Spread::of(all.iter().map(|r| r.load_gbit))),
    })
}

fn measure_once(
    c1: &Netns,
    dest: Ipv4Addr,
    pids: &[u32],
    plan: &Plan,
    dir: &Path,
) -> anyhow::Result<Repeat> {
    let secs = plan.iperf_secs.to_string();
    let mut runs = Vec::new();
    for streams in [1u32, 4] {
        let label = if streams == 1 {
            "TCP 1 stream".to_owned()
        } else {
            format!("TCP {streams} streams")
        };
        let before = cpu_secs(pids);
        let json = iperf_client(
            c1,
            dest,
            IPERF_PORT,
            &["-t", &secs, "-P", &streams.to_string()],
            plan.iperf_secs,
            dir,
        )?;
        let cpu = cpu_secs(pids) - before;
        let t: TcpThroughput = parse_iperf3_tcp(&json).context(label.clone())?;
        runs.push(Run {
            workload: label,
            payload: None,
            gbit: t.received_bps / 1e9,
            pps: None,
            lost_pct: None,
            cpu,
        });
    }
    for size in UDP_SIZES {
        let label = format!("UDP {size} B");
        let before = cpu_secs(pids);
        let json = iperf_client(
            c1,
            dest,
            IPERF_PORT,
            &["-t", &secs, "-u", "-l", &size.to_string(), "-b", "0"],
            plan.iperf_secs,
            dir,
        )?;
        let cpu = cpu_secs(pids) - before;
        let u: UdpRate = parse_iperf3_udp(&json, size).context(label.clone())?;
        let gbit = u.received_pps * f64::from(size) * 8.0 / 1e9;
        let lost = 100.0 * u.lost as f64 / (u.packets.max(1)) as f64;
        runs.push(Run {
            workload: label,
            payload: Some(size),
            gbit,
            pps: Some(u.received_pps),
            lost_pct: Some(lost),
            cpu,
        });
    }
    let interval = Duration::from_millis(plan.ping_interval_ms);
    let idle = ping(c1, dest, plan.ping_count, interval)?;
    // Ping while a bulk TCP flow runs the same way.
    let load_secs = plan.load_secs.to_string();
    let mut flow = LabProcess::spawn(
        c1,
        &format!("iperf3-load-{}", next_id()),
        &[
            "iperf3",
            "-c",
            &dest.to_string(),
            "-p",
            &LOAD_PORT.to_string(),
            "-t",
            &load_secs,
            "-J",
            "--connect-timeout",
            "3000",
        ],
        dir,
    )?;
    std::thread::sleep(Duration::from_millis(500));
    let budget = Duration::from_secs(u64::from(plan.load_secs)) - Duration::from_millis(1000);
    let load = ping_within(c1, dest, plan.ping_count, interval, budget)?;
    flow.wait_timeout(Duration::from_secs(u64::from(plan.load_secs) + 10));
    let json = std::fs::read_to_string(flow.stdout_path()).unwrap_or_default();
    let load_gbit = parse_iperf3_tcp(&json)
        .context("the bulk flow under the loaded pings")?
        .received_bps
        / 1e9;
    Ok(Repeat {
        runs,
        idle,
        load,
        load_gbit,
    })
}

fn next_id() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Runs `iperf3 -c dest -p port -J <args>` in `ns`, bounded by `secs` + 10 s; returns the JSON.
fn iperf_client(
    ns: &Netns,
    dest: Ipv4Addr,
    port: u16,
    args: &[&str],
    secs: u32,
    dir: &Path,
) -> anyhow::Result<String> {
    let mut argv = vec![
        "iperf3".to_owned(),
        "-c".into(),
        dest.to_string(),
        "-p".into(),
        port.to_string(),
        "-J".into(),
        "--connect-timeout".into(),
        "3000".into(),
    ];
    argv.extend(args.iter().map(|s| (*s).to_owned()));
    let mut client = LabProcess::spawn(ns, &format!("iperf3-e2e-{}", next_id()), &argv, dir)?;
    let limit = Duration::from_secs(u64::from(secs) + 10);
    let ok = client.wait_timeout(limit);
    let json = std::fs::read_to_string(client.stdout_path()).context("reading iperf3's output")?;
    if !ok && json.trim().is_empty() {
        bail!(
            "iperf3 gave no result within {limit:?}: {}",
            client.stderr_tail()
        );
    }
    Ok(json)
}

/// The `q`-quantile of `samples` (nearest rank); 0 when empty.
fn quantile(samples: &[f64], q: f64) -> f64 {
    let mut v = samples.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((q * v.len() as f64).ceil() as usize).max(1);
    v.get(rank - 1).copied().unwrap_or(0.0)
}

/// `count` echo requests, one at a time, `interval` apart; at most 10 s in all.
fn ping(
    ns: &Netns,
    dest: Ipv4Addr,
    count: u32,
    interval: Duration,
) -> anyhow::Result<(u32, Vec<f64>)> {
    ping_within(ns, dest, count, interval, Duration::from_secs(10))
}

/// ICMP echo from inside `ns` to `dest`: up to `count` requests within `budget`, each waiting
/// up to 1 s for its reply. Returns the number sent and every RTT in microseconds. (The lab's
/// `ping_stats` summarises; the CDF needs every sample.)
fn ping_within(
    ns: &Netns,
    dest: Ipv4Addr,
    count: u32,
    interval: Duration,
    budget: Duration,
) -> anyhow::Result<(u32, Vec<f64>)> {
    ns.run_in(|| ping_here(dest, count, interval, budget))?
}

fn ping_here(
    dest: Ipv4Addr,
    count: u32,
    interval: Duration,
    budget: Duration,
) -> anyhow::Result<(u32, Vec<f64>)> {
    use socket2::{Domain, Protocol, Socket, Type};
    let sock = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4))?;
    sock.connect(&SocketAddr::from((dest, 0)).into())?;
    let ident = (std::process::id() as u16) ^ (next_id() as u16).wrapping_mul(7919);
    let start = Instant::now();
    let mut samples = Vec::with_capacity(count as usize);
    let mut sent = 0;
    let mut buf = [0u8; 1500];
    for seq in 0..count {
        if start.elapsed() >= budget {
            break;
        }
        let mut req = [0u8; 24];
        req[0] = 8;
        req[4..6].copy_from_slice(&ident.to_be_bytes());
        req[6..8].copy_from_slice(&(seq as u16).to_be_bytes());
        req[8..24].copy_from_slice(b"softlan-e2e-ping");
        let ck = inet_checksum(&req);
        req[2..4].copy_from_slice(&ck.to_be_bytes());
        let sent_at = Instant::now();
        sock.send(&req)?;
        sent += 1;
        let until = sent_at + Duration::from_secs(1);
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            sock.set_read_timeout(Some(left))?;
            let n = match (&sock).read(&mut buf) {
                Ok(n) => n,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            };
            // Raw IPv4 sockets deliver the IP header too.
            let data = &buf[..n];
            let ihl = usize::from(data.first().copied().unwrap_or(0) & 0x0f) * 4;
            let icmp = data.get(ihl..).unwrap_or(&[]);
            if icmp.len() >= 8
                && icmp[0] == 0
                && icmp[4..6] == ident.to_be_bytes()
                && icmp[6..8] == (seq as u16).to_be_bytes()
            {
                samples.push(sent_at.elapsed().as_secs_f64() * 1e6);
                break;
            }
        }
        std::thread::sleep(interval);
    }
    Ok((sent, samples))
}

/// The Internet checksum (RFC 1071) of `data`.
fn inet_checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn path(paths: &[PathResult], kind: PathKind) -> Option<&PathResult> {
    paths
        .iter()
        .find(|p| p.path == kind.name() && p.skipped.is_none())
}

/// The median of `workload`'s figure on `kind` (Gbit/s, or packets/s with `pps`).
fn figure(paths: &[PathResult], kind: PathKind, workload: &str, pps: bool) -> Option<f64> {
    let r = path(paths, kind)?.row(workload)?;
    if pps {
        r.packets_per_sec.map(|s| s.median)
    } else {
        Some(r.gbit_per_sec.median)
    }
}

fn ratio(paths: &[PathResult], base: PathKind, workload: &str, pps: bool) -> Option<f64> {
    ratio_of(paths, PathKind::Ours, base, workload, pps)
}

/// `ours`' figure over `base`'s for `workload`.
fn ratio_of(
    paths: &[PathResult],
    ours: PathKind,
    base: PathKind,
    workload: &str,
    pps: bool,
) -> Option<f64> {
    let ours = figure(paths, ours, workload, pps)?;
    let theirs = figure(paths, base, workload, pps)?;
    Some(ours / theirs.max(1e-12))
}

fn targets(paths: &[PathResult]) -> Vec<Target> {
    let at_least = |name: String, measured: Option<f64>, required: f64| Target {
        name,
        measured,
        required,
        at_most: false,
        met: measured.map(|m| m >= required),
    };
    let at_most = |name: String, measured: Option<f64>, required: f64| Target {
        name,
        measured,
        required,
        at_most: true,
        met: measured.map(|m| m <= required),
    };
    let mut t = Vec::new();
    for w in ["TCP 1 stream", "TCP 4 streams"] {
        t.push(at_least(
            format!("{w} throughput: softlan / OpenVPN TAP (ratio)"),
            ratio(paths, PathKind::OpenVpn, w, false),
            4.0,
        ));
        t.push(at_least(
            format!("{w} throughput: softlan / tinc switch (ratio)"),
            ratio(paths, PathKind::Tinc, w, false),
            5.0,
        ));
    }
    t.push(at_least(
        "UDP 64 B packets received per second: softlan / OpenVPN TAP (ratio)".into(),
        ratio(paths, PathKind::OpenVpn, "UDP 64 B", true),
        3.0,
    ));
    // The same figures as the latency table: the median over the repeats of each repeat's
    // median or p99.
    let ping = |kind: PathKind, load: bool, p99: bool| {
        let p = path(paths, kind)?;
        let s = if load { &p.ping_load } else { &p.ping_idle };
        s.as_ref().map(|s| {
            if p99 {
                s.p99_us.median / 1e3
            } else {
                s.median_us.median / 1e3
            }
        })
    };
    let added = ping(PathKind::Ours, false, false)
        .zip(ping(PathKind::Direct, false, false))
        .map(|(o, d)| o - d);
    t.push(at_most(
        "idle ping median added over the direct path (ms)".into(),
        added,
        0.1,
    ));
    t.push(at_most(
        "ping p99 under a bulk TCP flow (ms)".into(),
        ping(PathKind::Ours, true, true),
        2.0,
    ));
    t
}

/// Each tunnel path's idle ping median minus the direct path's, ms (the medians over the
/// repeats, as in the latency table). The null tunnel's row, three user-space hops that
/// do no work, is the reference the others' rows compare against.
fn added_idle(paths: &[PathResult]) -> Vec<(&str, f64)> {
    let idle = |p: &PathResult| p.ping_idle.as_ref().map(|s| s.median_us.median / 1e3);
    let Some(direct) = path(paths, PathKind::Direct).and_then(idle) else {
        return Vec::new();
    };
    paths
        .iter()
        .filter(|p| p.skipped.is_none() && p.path != PathKind::Direct.name())
        .filter_map(|p| Some((p.path.as_str(), idle(p)? - direct)))
        .collect()
}

fn workloads() -> Vec<String> {
    let mut w = vec!["TCP 1 stream".to_owned(), "TCP 4 streams".to_owned()];
    w.extend(UDP_SIZES.iter().map(|s| format!("UDP {s} B")));
    w
}

fn markdown(r: &E2eReport) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "### End to end: player → relay → gateway → LAN host ({} repeat(s), {} s per iperf3 run, \
         {} pings idle and under load{})\n",
        r.repeats,
        r.plan.iperf_secs,
        r.plan.ping_count,
        if r.quick { ", quick" } else { "" }
    );
    let _ = writeln!(
        s,
        "Median (min–max) over the repeats, from the player to `host1` on the party LAN: `c1` \
         (TAP adapter) on every path, `c2` (TUN adapter, Ethernet emulated by the client) for \
         softlan TUN, in the same lab as softlan. UDP runs offer unlimited load (`iperf3 -b \
         0`); Gbit/s is received payload. CPU s is user + system time of the tunnel's \
         processes during the run (hub, gateway side, players; softlan counts both clients).\n"
    );
    let _ = writeln!(
        s,
        "| path | workload | Gbit/s | packets/s | lost % | CPU s |"
    );
    let _ = writeln!(s, "|---|---|---:|---:|---:|---:|");
    for p in &r.paths {
        if let Some(why) = &p.skipped {
            let _ = writeln!(s, "| {} | skipped: {why} | | | | |", p.path);
            continue;
        }
        for row in &p.rows {
            let opt = |x: &Option<Spread>, d| x.as_ref().map_or("–".to_owned(), |v| v.show(d));
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} |",
                p.path,
                row.workload,
                row.gbit_per_sec.show(3),
                opt(&row.packets_per_sec, 0),
                opt(&row.lost_pct, 1),
                opt(&row.cpu_secs, 2),
            );
        }
    }
    let _ = writeln!(
        s,
        "\n| path | idle ping median ms | idle p99 ms | under load median ms | under load p99 ms | bulk flow Gbit/s | replies |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|");
    for p in r.paths.iter().filter(|p| p.skipped.is_none()) {
        let (Some(i), Some(l)) = (&p.ping_idle, &p.ping_load) else {
            continue;
        };
        let ms = |x: &Spread| {
            Spread {
                median: x.median / 1e3,
                min: x.min / 1e3,
                max: x.max / 1e3,
            }
            .show(3)
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {}/{} idle, {}/{} loaded |",
            p.path,
            ms(&i.median_us),
            ms(&i.p99_us),
            ms(&l.median_us),
            ms(&l.p99_us),
            p.load_gbit_per_sec.map_or("–".into(), |g| g.show(3)),
            i.received,
            i.sent,
            l.received,
            l.sent,
        );
    }
    let added = added_idle(&r.paths);
    if !added.is_empty() {
        let _ = writeln!(
            s,
            "\n| path | idle ping median added over the direct path ms |\n|---|---:|"
        );
        for (name, ms) in added {
            let _ = writeln!(s, "| {name} | {ms:.3} |");
        }
    }
    let _ = writeln!(
        s,
        "\n| workload | softlan / direct | softlan / OpenVPN TAP | softlan / tinc switch | \
         softlan TUN / direct | softlan TUN / OpenVPN TAP | softlan TUN / softlan |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|");
    for w in workloads() {
        let pps = w.starts_with("UDP");
        let cell = |ours, base| {
            ratio_of(&r.paths, ours, base, &w, pps).map_or("–".into(), |x| format!("{x:.2}"))
        };
        let _ = writeln!(
            s,
            "| {w}{} | {} | {} | {} | {} | {} | {} |",
            if pps { " (packets/s)" } else { " (Gbit/s)" },
            cell(PathKind::Ours, PathKind::Direct),
            cell(PathKind::Ours, PathKind::OpenVpn),
            cell(PathKind::Ours, PathKind::Tinc),
            cell(PathKind::OursTun, PathKind::Direct),
            cell(PathKind::OursTun, PathKind::OpenVpn),
            cell(PathKind::OursTun, PathKind::Ours),
        );
    }
    let _ = writeln!(s, "\n| target | measured | required | met |");
    let _ = writeln!(s, "|---|---:|---:|---|");
    for t in &r.targets {
        let _ = writeln!(
            s,
            "| {} | {} | {} {} | {} |",
            t.name,
            t.measured
                .map_or("not measured".into(), |m| format!("{m:.2}")),
            if t.at_most { "≤" } else { "≥" },
            t.required,
            match t.met {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "–",
            }
        );
    }
    s
}

fn throughput_series(paths: &[PathResult]) -> Vec<plot::Series> {
    paths
        .iter()
        .filter(|p| p.skipped.is_none())
        .map(|p| plot::Series {
            name: p.path.clone(),
            points: p
                .rows
                .iter()
                .filter_map(|r| Some((f64::from(r.udp_payload?), r.gbit_per_sec.median * 1e3)))
                .collect(),
        })
        .collect()
}

fn latency_series(paths: &[PathResult]) -> (Vec<plot::Series>, Vec<plot::Series>) {
    let cdf = |p: &PathResult, s: &Option<PingSummary>| plot::Series {
        name: p.path.clone(),
        points: s.as_ref().map_or_else(Vec::new, |s| {
            let mut v: Vec<f64> = s.samples_us.iter().map(|us| us / 1e3).collect();
            v.sort_by(f64::total_cmp);
            let n = v.len() as f64;
            v.iter()
                .enumerate()
                .map(|(i, ms)| (*ms, (i + 1) as f64 / n))
                .collect()
        }),
    };
    let ran = || paths.iter().filter(|p| p.skipped.is_none());
    (
        ran().map(|p| cdf(p, &p.ping_idle)).collect(),
        ran().map(|p| cdf(p, &p.ping_load)).collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path_with(kind: PathKind, tcp1: f64, pps64: f64, idle_us: &[f64]) -> PathResult {
        let summary = PingSummary {
            median_us: Spread::of([quantile(idle_us, 0.5)]),
            p99_us: Spread::of([quantile(idle_us, 0.99)]),
            sent: idle_us.len() as u32,
            received: idle_us.len() as u32,
            samples_us: idle_us.to_vec(),
        };
        PathResult {
            path: kind.name().to_owned(),
            skipped: None,
            rows: vec![
                WorkloadRow {
                    workload: "TCP 1 stream".into(),
                    udp_payload: None,
                    gbit_per_sec: Spread::of([tcp1]),
                    packets_per_sec: None,
                    lost_pct: None,
                    cpu_secs: None,
                },
                WorkloadRow {
                    workload: "UDP 64 B".into(),
                    udp_payload: Some(64),
                    gbit_per_sec: Spread::of([pps64 * 512.0 / 1e9]),
                    packets_per_sec: Some(Spread::of([pps64])),
                    lost_pct: None,
                    cpu_secs: None,
                },
            ],
            ping_idle: Some(summary.clone()),
            ping_load: Some(summary),
            load_gbit_per_sec: None,
        }
    }

    #[test]
    fn added_idle_latency_is_each_tunnels_median_over_the_direct_one() {
        let paths = vec![
            path_with(PathKind::Direct, 20.0, 500_000.0, &[50.0, 60.0, 70.0]),
            path_with(PathKind::Ours, 2.0, 300_000.0, &[400.0, 460.0, 900.0]),
            path_with(PathKind::Null, 1.0, 100_000.0, &[300.0]),
            PathResult::skipped(PathKind::Tinc, "not installed".into()),
        ];
        let added = added_idle(&paths);
        let names: Vec<&str> = added.iter().map(|a| a.0).collect();
        assert_eq!(names, ["softlan", "null tunnel (socat)"]);
        assert!((added[0].1 - 0.4).abs() < 1e-9, "{added:?}");
        assert!((added[1].1 - 0.24).abs() < 1e-9, "{added:?}");
        // Without a direct path there is nothing to add to.
        assert!(added_idle(&paths[1..]).is_empty());
    }

    #[test]
    fn targets_are_ratios_against_baselines_of_the_same_run() {
        let paths = vec![
            path_with(PathKind::Direct, 20.0, 500_000.0, &[40.0, 50.0, 60.0]),
            path_with(PathKind::Ours, 2.0, 300_000.0, &[100.0, 120.0, 3000.0]),
            path_with(PathKind::OpenVpn, 0.4, 50_000.0, &[300.0]),
            PathResult::skipped(PathKind::Tinc, "not installed".into()),
        ];
        let t = targets(&paths);
        let find = |n: &str| t.iter().find(|t| t.name.starts_with(n)).unwrap();
        let ovpn = find("TCP 1 stream throughput: softlan / OpenVPN");
        assert_eq!(ovpn.measured, Some(5.0));
        assert_eq!(ovpn.met, Some(true));
        let tinc = find("TCP 1 stream throughput: softlan / tinc");
        assert_eq!((tinc.measured, tinc.met), (None, None));
        let udp = find("UDP 64 B");
        assert_eq!((udp.measured, udp.met), (Some(6.0), Some(true)));
        let idle = find("idle ping median added");
        // Medians 0.120 ms and 0.050 ms: 0.07 ms added, within 0.1 ms.
        assert!((idle.measured.unwrap() - 0.07).abs() < 1e-9);
        assert_eq!(idle.met, Some(true));
        let p99 = find("ping p99 under");
        assert_eq!((p99.measured, p99.met), (Some(3.0), Some(false)));
        // Four-stream rows are absent from these paths: not measured rather than failed.
        assert_eq!(
            find("TCP 4 streams throughput: softlan / OpenVPN").met,
            None
        );
    }

    #[test]
    fn softlan_is_measured_from_the_tap_and_the_tun_player_in_one_lab() {
        assert_eq!(
            PathKind::Ours.measured_from(),
            &[(PathKind::Ours, "c1"), (PathKind::OursTun, "c2")]
        );
        assert!(!PathKind::LABS.contains(&PathKind::OursTun));
        assert_eq!(PathKind::Tinc.measured_from(), &[(PathKind::Tinc, "c1")]);
    }

    #[test]
    fn quick_check_needs_traffic_on_the_tun_path_too() {
        let carried = |kind| {
            let mut p = path_with(kind, 2.0, 300_000.0, &[100.0]);
            p.load_gbit_per_sec = Some(Spread::of([1.0]));
            p
        };
        let tap_only = vec![
            carried(PathKind::Ours),
            PathResult::skipped(PathKind::OursTun, "failed: no address".into()),
        ];
        assert!(check_traffic(&tap_only).is_err());
        let mut silent_tun = carried(PathKind::OursTun);
        silent_tun.rows[0].gbit_per_sec = Spread::of([0.0]);
        let err = check_traffic(&[carried(PathKind::Ours), silent_tun]).unwrap_err();
        assert!(err.to_string().contains("softlan TUN: no traffic"), "{err}");
        assert!(check_traffic(&[carried(PathKind::Ours), carried(PathKind::OursTun)]).is_ok());
        // Neither player measured (programs not built) is a skip, not a failure.
        let neither = vec![
            PathResult::skipped(PathKind::Ours, "not built".into()),
            PathResult::skipped(PathKind::OursTun, "not built".into()),
        ];
        assert!(check_traffic(&neither).is_ok());
    }

    #[test]
    fn tun_rows_and_ratios_are_in_the_table() {
        let paths = vec![
            path_with(PathKind::Direct, 20.0, 500_000.0, &[50.0]),
            path_with(PathKind::Ours, 2.0, 300_000.0, &[100.0]),
            path_with(PathKind::OursTun, 1.0, 150_000.0, &[110.0]),
        ];
        let report = E2eReport {
            quick: true,
            repeats: 1,
            plan: Plan::new(true),
            targets: targets(&paths),
            paths,
            files: Vec::new(),
        };
        let md = markdown(&report);
        assert!(
            md.contains("| softlan TUN | TCP 1 stream | 1.000 |"),
            "{md}"
        );
        // TCP 1 stream: TUN / direct 0.05, TUN / OpenVPN not measured, TUN / TAP 0.5.
        assert!(
            md.contains("| TCP 1 stream (Gbit/s) | 0.10 | – | – | 0.05 | – | 0.50 |"),
            "{md}"
        );
        let (idle, _) = latency_series(&report.paths);
        assert!(idle.iter().any(|s| s.name == "softlan TUN"));
        assert!(
            throughput_series(&report.paths)
                .iter()
                .any(|s| s.name == "softlan TUN"
                    && s.points.len() == 1
                    && s.points[0].0 == 64.0
                    && (s.points[0].1 - 150_000.0 * 512.0 / 1e6).abs() < 1e-6)
        );
    }

    #[test]
    fn cpu_time_of_this_process_is_read_from_proc() {
        let start = Instant::now();
        let mut x = 0u64;
        while start.elapsed() < Duration::from_millis(100) {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        assert!(x > 0);
        assert!(cpu_secs(&[std::process::id()]) > 0.0);
        assert_eq!(cpu_secs(&[u32::MAX]), 0.0);
    }

    #[test]
    fn spread_shows_median_and_range() {
        let s = Spread::of([3.0, 1.0, 2.0]);
        assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
        assert_eq!(s.show(1), "2.0 (1.0–3.0)");
        assert_eq!(Spread::of([1.5]).show(2), "1.50");
    }

    #[test]
    fn checksum_matches_rfc1071_example() {
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(inet_checksum(&data), 0x220d);
    }
}
