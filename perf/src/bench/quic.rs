//! `lanparty-perf bench quic`: our QUIC datapath (driver + runner) on each UDP backend against
//! the `quinn` crate and plain UDP, on loopback, in one run.
//!
//! Throughput: one connection, the sender and the receiver each on its own thread running the
//! `Runner` loop; the sender keeps the DATAGRAM send buffer full for a fixed time (it never
//! overfills it, so nothing is dropped on purpose) and says "end" on the control stream. Each
//! side measures its own thread CPU time, so "CPU ns per datagram" is what one datagram costs
//! the sender and the receiver, and "datagrams per CPU-second" is the efficiency figure the
//! targets compare. Workloads: 64, 512 and 1400-byte datagrams and a mixed-size run, each
//! started once path MTU discovery has made room for the largest size (on every stack).
//!
//! Latency: one datagram in flight, echoed by the peer, timed on the client; compared with a
//! plain UDP ping-pong over the same loopback, the floor any stack can reach.
//!
//! Every measurement is repeated (`--repeats`, default 3); the table shows the median and the
//! spread (min–max). Results go to `quic.md` and `quic.json` in the output directory.

use crate::stats::Spread;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use bytes::Bytes;
use lanparty_datapath::io::{BackendKind, PortableUdp, UdpBackend, UringConfig, UringUdp};
use lanparty_datapath::quic::tls::{self, ClientTrust, ServerIdentity};
use lanparty_datapath::quic::{ConnId, Driver, DriverConfig, Event};
use lanparty_datapath::runner::Runner;
use serde::Serialize;

use super::{RunOpts, Throughput, Workload, quinn_ref, thread_run_delay, udp_ref};
use crate::stats::quantile;
use crate::sys::thread_cpu_time;

/// One stack on one workload, over all repeats.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ThroughputRow {
    pub(crate) stack: String,
    pub(crate) workload: String,
    pub(crate) datagrams_per_sec: Spread,
    pub(crate) gbit_per_sec: Spread,
    pub(crate) send_ns_per_datagram: Spread,
    pub(crate) recv_ns_per_datagram: Spread,
    pub(crate) datagrams_per_cpu_sec: Spread,
    /// Percent of the run the sender / receiver was runnable but waited for a CPU.
    pub(crate) send_starved_pct: Spread,
    pub(crate) recv_starved_pct: Spread,
    /// Datagrams sent and received, summed over the repeats.
    pub(crate) sent: u64,
    pub(crate) received: u64,
}

/// Single-datagram round trips of one stack.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct PingRow {
    pub(crate) stack: String,
    pub(crate) size: usize,
    pub(crate) median_us: Spread,
    pub(crate) p99_us: Spread,
    pub(crate) samples: usize,
}

/// One target of the QUIC datapath, with what was measured.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Target {
    pub(crate) name: String,
    /// The measured ratio or value.
    pub(crate) measured: f64,
    /// What it must reach (at least, or at most when `at_most`).
    pub(crate) required: f64,
    pub(crate) at_most: bool,
    pub(crate) met: bool,
}

/// Everything one `bench quic` run measured.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct QuicReport {
    pub(crate) quick: bool,
    pub(crate) repeats: usize,
    pub(crate) seconds_per_run: f64,
    pub(crate) ping_count: usize,
    pub(crate) cpus: usize,
    pub(crate) throughput: Vec<ThroughputRow>,
    pub(crate) ping: Vec<PingRow>,
    pub(crate) targets: Vec<Target>,
    /// Where the Markdown and JSON were written.
    #[serde(skip)]
    pub(crate) files: Vec<PathBuf>,
}

/// The stacks under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stack {
    Ours(BackendKind),
    Quinn,
}

impl Stack {
    fn name(self) -> String {
        match self {
            Self::Ours(kind) => format!("driver/{kind}"),
            Self::Quinn => "quinn (ref)".to_owned(),
        }
    }
}

const STACKS: [Stack; 3] = [
    Stack::Ours(BackendKind::Uring),
    Stack::Ours(BackendKind::Portable),
    Stack::Quinn,
];

/// The sizes of the mixed workload, sent round-robin.
const MIXED: [usize; 8] = [64, 128, 256, 512, 768, 1024, 1200, 1400];
/// One latency measurement: round-trip times of a run.
type Pinger = Box<dyn Fn() -> anyhow::Result<Vec<Duration>>>;

/// Payload size of the latency runs.
const PING_SIZE: usize = 64;

/// Runs the whole benchmark, writes `quic.md` and `quic.json`, prints the table.
pub(crate) fn run_quic(opts: &RunOpts) -> anyhow::Result<QuicReport> {
    let duration = if opts.quick {
        Duration::from_millis(250)
    } else {
        Duration::from_secs(3)
    };
    let ping_count = if opts.quick { 200 } else { 3000 };
    let workloads: [(&str, Vec<usize>); 4] = [
        ("64 B", vec![64]),
        ("512 B", vec![512]),
        ("1400 B", vec![1400]),
        ("mixed 64–1400 B", MIXED.to_vec()),
    ];
    let mut throughput = Vec::new();
    for (label, sizes) in &workloads {
        let workload = Workload {
            sizes: sizes.clone(),
            duration,
        };
        for stack in STACKS {
            let mut runs = Vec::with_capacity(opts.repeats);
            for _ in 0..opts.repeats {
                let run = || match stack {
                    Stack::Ours(kind) => ours_throughput(kind, &workload),
                    Stack::Quinn => quinn_ref::throughput(&workload),
                };
                // A connection can time out on a machine starved by other jobs; one retry
                // tells a fluke from a broken stack, and the retry is reported.
                let t = run()
                    .or_else(|e| {
                        eprintln!(
                            "  {} on {label} failed ({e:#}); retrying once",
                            stack.name()
                        );
                        run()
                    })
                    .with_context(|| format!("{} on {label}", stack.name()))?;
                ensure!(t.received > 0, "{}: no datagram arrived", stack.name());
                eprintln!(
                    "  {:<18} {label:<16} {:>9.0} dgram/s {:>6.2} Gbit/s",
                    stack.name(),
                    t.datagrams_per_sec(),
                    t.gbit_per_sec()
                );
                runs.push(t);
            }
            throughput.push(row(stack.name(), label, &runs));
        }
    }
    let mut ping = Vec::new();
    let pingers: [(&str, Pinger); 4] = [
        (
            "driver/io_uring",
            Box::new(move || ours_ping(BackendKind::Uring, ping_count, PING_SIZE)),
        ),
        (
            "driver/quinn-udp",
            Box::new(move || ours_ping(BackendKind::Portable, ping_count, PING_SIZE)),
        ),
        (
            "quinn (ref)",
            Box::new(move || quinn_ref::ping(ping_count, PING_SIZE)),
        ),
        (
            "plain UDP",
            Box::new(move || udp_ref::ping(ping_count, PING_SIZE)),
        ),
    ];
    for (name, pinger) in &pingers {
        let mut medians = Vec::new();
        let mut p99s = Vec::new();
        let mut samples = 0;
        for _ in 0..opts.repeats {
            let mut rtts = pinger().with_context(|| format!("{name} ping"))?;
            ensure!(rtts.len() == ping_count, "{name}: lost pings");
            samples += rtts.len();
            let us = |d: Option<Duration>| d.unwrap_or_default().as_secs_f64() * 1e6;
            medians.push(us(quantile(&mut rtts, 0.5)));
            p99s.push(us(quantile(&mut rtts, 0.99)));
        }
        eprintln!(
            "  {name:<18} ping median {:.1} µs",
            Spread::of(medians.clone()).median
        );
        ping.push(PingRow {
            stack: (*name).to_owned(),
            size: PING_SIZE,
            median_us: Spread::of(medians),
            p99_us: Spread::of(p99s),
            samples,
        });
    }
    let targets = targets(&throughput, &ping)?;
    let mut report = QuicReport {
        quick: opts.quick,
        repeats: opts.repeats,
        seconds_per_run: duration.as_secs_f64(),
        ping_count,
        cpus: thread::available_parallelism().map_or(1, usize::from),
        throughput,
        ping,
        targets,
        files: Vec::new(),
    };
    let markdown = markdown(&report);
    std::fs::create_dir_all(&opts.out)
        .with_context(|| format!("creating {}", opts.out.display()))?;
    let md_path = opts.out.join("quic.md");
    let json_path = opts.out.join("quic.json");
    std::fs::write(&md_path, &markdown).with_context(|| md_path.display().to_string())?;
    std::fs::write(&json_path, serde_json::to_string_pretty(&report)?)
        .with_context(|| json_path.display().to_string())?;
    // Read back: a run that wrote nothing useful must not pass.
    let back: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json_path)?)?;
    ensure!(
        back["throughput"].as_array().map_or(0, Vec::len) == report.throughput.len()
            && std::fs::read_to_string(&md_path)? == markdown,
        "results were not written completely"
    );
    println!("{markdown}");
    report.files = vec![md_path, json_path];
    Ok(report)
}

fn row(stack: String, workload: &str, runs: &[Throughput]) -> ThroughputRow {
    let spread = |f: fn(&Throughput) -> f64| Spread::of(runs.iter().map(f));
    ThroughputRow {
        stack,
        workload: workload.to_owned(),
        datagrams_per_sec: spread(Throughput::datagrams_per_sec),
        gbit_per_sec: spread(Throughput::gbit_per_sec),
        send_ns_per_datagram: spread(Throughput::send_ns_per_datagram),
        recv_ns_per_datagram: spread(Throughput::recv_ns_per_datagram),
        datagrams_per_cpu_sec: spread(Throughput::datagrams_per_cpu_sec),
        send_starved_pct: spread(Throughput::send_starved_pct),
        recv_starved_pct: spread(Throughput::recv_starved_pct),
        sent: runs.iter().map(|t| t.sent).sum(),
        received: runs.iter().map(|t| t.received).sum(),
    }
}

fn targets(throughput: &[ThroughputRow], ping: &[PingRow]) -> anyhow::Result<Vec<Target>> {
    let at_1400 = |stack: Stack| {
        throughput
            .iter()
            .find(|r| r.stack == stack.name() && r.workload == "1400 B")
            .context("missing 1400 B row")
    };
    let uring = at_1400(Stack::Ours(BackendKind::Uring))?;
    let portable = at_1400(Stack::Ours(BackendKind::Portable))?;
    let quinn = at_1400(Stack::Quinn)?;
    let rtt = |name: &str| {
        ping.iter()
            .find(|r| r.stack == name)
            .map(|r| r.median_us.median)
            .context("missing ping row")
    };
    let at_least = |name: &str, measured: f64, required: f64| Target {
        name: name.to_owned(),
        measured,
        required,
        at_most: false,
        met: measured >= required,
    };
    let cpu = |r: &ThroughputRow| r.datagrams_per_cpu_sec.median;
    let ratio = rtt("driver/io_uring")? / rtt("plain UDP")?.max(1e-9);
    Ok(vec![
        at_least(
            "io_uring datagrams per CPU-second at 1400 B vs quinn (ratio)",
            cpu(uring) / cpu(quinn).max(1e-9),
            1.5,
        ),
        at_least(
            "io_uring datagrams per CPU-second at 1400 B vs quinn-udp backend (ratio)",
            cpu(uring) / cpu(portable).max(1e-9),
            1.1,
        ),
        at_least(
            "io_uring payload Gbit/s at 1400 B",
            uring.gbit_per_sec.median,
            4.0,
        ),
        Target {
            name: "io_uring single-datagram RTT median vs plain UDP ping-pong (ratio)".to_owned(),
            measured: ratio,
            required: 1.3,
            at_most: true,
            met: ratio <= 1.3,
        },
    ])
}

fn markdown(r: &QuicReport) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "### QUIC datapath on loopback ({} repeat(s), {} s per throughput run, {} pings, {} CPUs{})\n",
        r.repeats,
        r.seconds_per_run,
        r.ping_count,
        r.cpus,
        if r.quick { ", quick" } else { "" }
    );
    let _ = writeln!(
        s,
        "Median (min–max) over the repeats. CPU ns are thread CPU time per received datagram; \
         \"waited for CPU\" is the share of the run each side was runnable but not running \
         (the machine was busy elsewhere), from /proc/thread-self/schedstat.\n"
    );
    let _ = writeln!(
        s,
        "| stack | workload | datagrams/s | Gbit/s payload | send CPU ns/dgram | recv CPU ns/dgram | dgrams per CPU-s | waited for CPU % send / recv |"
    );
    let _ = writeln!(s, "|---|---|---:|---:|---:|---:|---:|---:|");
    for t in &r.throughput {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {:.0} / {:.0} |",
            t.stack,
            t.workload,
            t.datagrams_per_sec.show(0),
            t.gbit_per_sec.show(2),
            t.send_ns_per_datagram.show(0),
            t.recv_ns_per_datagram.show(0),
            t.datagrams_per_cpu_sec.show(0),
            t.send_starved_pct.median,
            t.recv_starved_pct.median,
        );
    }
    let _ = writeln!(
        s,
        "\n| stack | RTT of one {PING_SIZE} B datagram, median µs | p99 µs |"
    );
    let _ = writeln!(s, "|---|---:|---:|");
    for p in &r.ping {
        let _ = writeln!(
            s,
            "| {} | {} | {} |",
            p.stack,
            p.median_us.show(1),
            p.p99_us.show(1)
        );
    }
    let _ = writeln!(s, "\n| target | measured | required | met |");
    let _ = writeln!(s, "|---|---:|---:|---|");
    for t in &r.targets {
        let _ = writeln!(
            s,
            "| {} | {:.2} | {} {} | {} |",
            t.name,
            t.measured,
            if t.at_most { "≤" } else { "≥" },
            t.required,
            if t.met { "yes" } else { "**no**" }
        );
    }
    s
}

// ---------------------------------------------------------------------------------------------
// Our datapath
// ---------------------------------------------------------------------------------------------

/// Nothing in this benchmark waits longer than this for the peer.
const GIVE_UP: Duration = Duration::from_secs(30);

fn open(kind: BackendKind) -> anyhow::Result<Box<dyn UdpBackend>> {
    let addr: SocketAddr = "127.0.0.1:0".parse()?;
    Ok(match kind {
        BackendKind::Uring => Box::new(UringUdp::bind(addr, &UringConfig::default())?),
        BackendKind::Portable => Box::new(PortableUdp::bind(addr)?),
    })
}

/// A server runner with a fresh self-signed identity, and a client config pinning it.
fn endpoints(
    kind: BackendKind,
) -> anyhow::Result<(Runner, Runner, lanparty_datapath::quic::ClientConfig)> {
    let dir = std::env::temp_dir().join(format!(
        "lp-bench-quic-{}-{:?}",
        std::process::id(),
        thread::current().id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let identity = ServerIdentity::load_or_generate(&dir, &["localhost".to_owned()]);
    let _ = std::fs::remove_dir_all(&dir);
    let identity = identity?;
    let client = tls::client_config(&ClientTrust::Pinned(identity.fingerprint()))?;
    let server = Runner::new(
        Driver::new(DriverConfig::default(), Some(tls::server_crypto(identity)?)),
        open(kind)?,
    );
    let client_runner = Runner::new(Driver::new(DriverConfig::default(), None), open(kind)?);
    Ok((server, client_runner, client))
}

/// One turn of the loop: receive, hand every event to `on_event`, transmit.
fn turn(
    runner: &mut Runner,
    now: Instant,
    mut on_event: impl FnMut(&mut Driver, Event),
) -> anyhow::Result<()> {
    runner.receive(now);
    while let Some(event) = runner.driver().poll_event() {
        on_event(runner.driver(), event);
    }
    runner.transmit(now)?;
    Ok(())
}

/// Connects and drives the client until the handshake completes and PMTUD allows `size`.
fn connect(
    runner: &mut Runner,
    server: SocketAddr,
    config: lanparty_datapath::quic::ClientConfig,
    size: usize,
) -> anyhow::Result<(ConnId, usize)> {
    let start = Instant::now();
    let conn = runner
        .driver()
        .connect(start, server, "localhost", config)?;
    let mut connected = false;
    let mut closed = None;
    loop {
        let now = Instant::now();
        turn(runner, now, |_, ev| match ev {
            Event::Connected { .. } => connected = true,
            Event::Closed { reason, .. } => closed = Some(reason),
            _ => {}
        })?;
        if let Some(reason) = closed {
            bail!("connection failed: {reason}");
        }
        let max = runner.driver().max_datagram_size(conn);
        // Wait up to 2 s for the path MTU to grow; then use what there is.
        if connected
            && let Some(max) = max
            && (max >= size || now - start > Duration::from_secs(2))
        {
            return Ok((conn, max));
        }
        ensure!(now - start < GIVE_UP, "handshake timed out");
        runner.wait(Some(now + Duration::from_millis(5)))?;
    }
}

/// Our driver on `kind`: see the module docs.
fn ours_throughput(kind: BackendKind, workload: &Workload) -> anyhow::Result<Throughput> {
    let (mut server, mut client, config) = endpoints(kind)?;
    let server_addr = server.local_addr();
    let receiver = thread::spawn(move || -> anyhow::Result<(u64, u64, Duration, Duration)> {
        let start = Instant::now();
        let (mut n, mut bytes) = (0u64, 0u64);
        let mut cpu0 = None;
        let mut delay0 = Duration::ZERO;
        let mut close_at = None;
        let mut closed = false;
        while !closed {
            let now = Instant::now();
            ensure!(now - start < GIVE_UP, "receiver gave up");
            turn(&mut server, now, |_, ev| match ev {
                Event::Connected { .. } => {
                    cpu0 = Some(thread_cpu_time());
                    delay0 = thread_run_delay();
                }
                Event::Datagram { bytes: b, .. } => {
                    n += 1;
                    bytes += b.len() as u64;
                }
                // "end": the sender has queued its last datagram; give stragglers 50 ms.
                Event::ControlBytes { conn, .. } => {
                    close_at = Some((conn, now + Duration::from_millis(50)));
                }
                Event::Closed { .. } => closed = true,
                _ => {}
            })?;
            if let Some((conn, at)) = close_at
                && now >= at
            {
                server.driver().close(now, conn, 0, "done");
                server.transmit(now)?;
                close_at = None;
            }
            let deadline = close_at.map_or(now + Duration::from_millis(100), |(_, at)| at);
            server.wait(Some(deadline))?;
        }
        let cpu = thread_cpu_time() - cpu0.context("never connected")?;
        Ok((n, bytes, cpu, thread_run_delay() - delay0))
    });
    let sizes = workload.sizes.clone();
    let duration = workload.duration;
    let sender = thread::spawn(
        move || -> anyhow::Result<(u64, Duration, Duration, Duration)> {
            let largest = sizes.iter().copied().max().unwrap_or(64);
            let (conn, max) = connect(&mut client, server_addr, config, largest)?;
            let payloads: Vec<Bytes> = sizes
                .iter()
                .map(|&s| Bytes::from(vec![0xa5u8; s.min(max)]))
                .collect();
            let cpu0 = thread_cpu_time();
            let delay0 = thread_run_delay();
            let start = Instant::now();
            let mut sent = 0u64;
            let mut next = 0;
            loop {
                let now = Instant::now();
                if now - start >= duration {
                    break;
                }
                client.receive(now);
                while let Some(ev) = client.driver().poll_event() {
                    if let Event::Closed { reason, .. } = ev {
                        bail!("connection lost while sending: {reason}");
                    }
                }
                let driver = client.driver();
                let mut space = driver.datagram_send_space(conn).unwrap_or(0);
                let mut queued = 0;
                while queued < 512 {
                    let p = &payloads[next];
                    if p.len() > space {
                        break;
                    }
                    driver.send_datagram(conn, p.clone())?;
                    space = driver.datagram_send_space(conn).unwrap_or(0);
                    next = (next + 1) % payloads.len();
                    queued += 1;
                }
                sent += queued;
                client.transmit(now)?;
                if queued == 0 {
                    // The send buffer is full and the congestion window closed: wait for ACKs.
                    client.wait(Some(now + Duration::from_millis(5)))?;
                }
            }
            let wall = start.elapsed();
            client.driver().write_control(conn, b"end")?;
            let mut closed = false;
            while !closed {
                let now = Instant::now();
                ensure!(now - start < duration + GIVE_UP, "receiver never closed");
                turn(&mut client, now, |_, ev| {
                    if let Event::Closed { .. } = ev {
                        closed = true;
                    }
                })?;
                client.wait(Some(now + Duration::from_millis(50)))?;
            }
            Ok((
                sent,
                thread_cpu_time() - cpu0,
                wall,
                thread_run_delay() - delay0,
            ))
        },
    );
    let (sent, send_cpu, wall, send_starved) = sender
        .join()
        .map_err(|_| anyhow::anyhow!("sender panicked"))??;
    let (received, bytes, recv_cpu, recv_starved) = receiver
        .join()
        .map_err(|_| anyhow::anyhow!("receiver panicked"))??;
    Ok(Throughput {
        sent,
        received,
        bytes,
        wall,
        send_cpu,
        recv_cpu,
        send_starved,
        recv_starved,
    })
}

/// Round trips of single datagrams through our driver on `kind`, echoed by the server.
fn ours_ping(kind: BackendKind, count: usize, size: usize) -> anyhow::Result<Vec<Duration>> {
    let (mut server, mut client, config) = endpoints(kind)?;
    let server_addr = server.local_addr();
    let echo = thread::spawn(move || -> anyhow::Result<()> {
        let start = Instant::now();
        let mut closed = false;
        while !closed {
            let now = Instant::now();
            ensure!(now - start < GIVE_UP, "echo gave up");
            turn(&mut server, now, |driver, ev| match ev {
                Event::Datagram { conn, bytes } => {
                    // A full buffer only drops the oldest echo; the client then times out.
                    let _ = driver.send_datagram(conn, bytes);
                }
                Event::Closed { .. } => closed = true,
                _ => {}
            })?;
            server.wait(Some(now + Duration::from_millis(100)))?;
        }
        Ok(())
    });
    let (conn, _) = connect(&mut client, server_addr, config, size)?;
    let payload = Bytes::from(vec![0x5au8; size]);
    let mut rtts = Vec::with_capacity(count);
    for _ in 0..count {
        let t0 = Instant::now();
        client.driver().send_datagram(conn, payload.clone())?;
        client.transmit(t0)?;
        let mut echoed = false;
        while !echoed {
            let now = Instant::now();
            ensure!(now - t0 < Duration::from_secs(2), "echo did not come back");
            client.receive(now);
            while let Some(ev) = client.driver().poll_event() {
                match ev {
                    Event::Datagram { .. } => echoed = true,
                    Event::Closed { reason, .. } => bail!("connection lost: {reason}"),
                    _ => {}
                }
            }
            if !echoed {
                client.transmit(now)?;
                client.wait(Some(t0 + Duration::from_secs(2)))?;
            }
        }
        rtts.push(t0.elapsed());
        // ACKs and the like go out after the sample, not inside it.
        client.transmit(Instant::now())?;
    }
    let now = Instant::now();
    client.driver().close(now, conn, 0, "done");
    client.transmit(now)?;
    echo.join()
        .map_err(|_| anyhow::anyhow!("echo panicked"))??;
    Ok(rtts)
}
