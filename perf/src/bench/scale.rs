//! `bench scale`: many clients join one relay; handshake rate and the relay's memory per
//! connection.
//!
//! The relay runs as a child process (the `lanparty-relay` binary next to this one), so that
//! its resident set (`VmRSS` in `/proc/<pid>/status`) is its own: read once the relay listens
//! and again when every client has its welcome and the connections sit idle. Clients are
//! [`Fleet`]s: a few threads, each with one [`Runner`](lanparty_datapath::runner::Runner)
//! holding hundreds of connections, at most [`INFLIGHT`] joining at once per thread; ten
//! clients per room by default. A join is counted when its welcome arrives (QUIC handshake +
//! hello + welcome), and the rate is joins over the time from the first connect to the last
//! welcome.

use std::io::BufRead as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use lanparty_datapath::quic::tls::Fingerprint;
use serde::Serialize;

use super::relay::{Fleet, mac, unique};

/// Most connections of one client thread that are joining at once.
const INFLIGHT: usize = 64;
/// Client threads.
const THREADS: usize = 2;
/// Target memory per idle connection.
const TARGET_KIB: f64 = 64.0;

/// Options of `bench scale`.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub(crate) clients: usize,
    pub(crate) per_room: usize,
    pub(crate) quick: bool,
    pub(crate) time_limit: Duration,
    /// Where `scale.md` and `scale.json` go.
    pub(crate) out: PathBuf,
}

/// What a scale run measured.
#[derive(Debug, Serialize)]
struct Report {
    command: String,
    clients: usize,
    rooms: usize,
    client_threads: usize,
    joined: usize,
    failed: usize,
    first_failure: Option<String>,
    join_s: f64,
    joins_per_s: f64,
    relay_connections: usize,
    relay_admitted: u64,
    rss_before_kib: u64,
    rss_after_kib: u64,
    rss_per_connection_kib: f64,
    target_kib: f64,
    met: bool,
}

/// The relay child; killed (by its PID) and reaped on drop.
struct RelayChild {
    child: Child,
    dir: PathBuf,
}

impl Drop for RelayChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS line")
}

/// Starts the relay binary and reads its banner: (child, UDP address, fingerprint, metrics).
fn spawn_relay(
    opts: &Options,
) -> anyhow::Result<(RelayChild, SocketAddr, Fingerprint, SocketAddr)> {
    let exe = std::env::current_exe()?;
    let bin = exe
        .parent()
        .context("the perf binary has no directory")?
        .join("lanparty-relay");
    if !bin.is_file() {
        bail!(
            "{} not found: `bench scale` runs the relay binary next to lanparty-perf; build it \
             first with `cargo build --release -p lanparty-relay` (same profile as this run)",
            bin.display()
        );
    }
    let dir = std::env::temp_dir().join(format!(
        "lp-bench-scale-{}-{}",
        std::process::id(),
        unique()
    ));
    let rooms = opts.clients.div_ceil(opts.per_room.max(1));
    let child = Command::new(&bin)
        .args(["--listen", "127.0.0.1:0", "--metrics", "127.0.0.1:0"])
        .arg("--state-dir")
        .arg(&dir)
        .args(["--max-connections-per-ip", &(opts.clients + 16).to_string()])
        .args(["--max-rooms", &(rooms + 16).to_string()])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let mut child = RelayChild { child, dir };
    let stdout = child.child.stdout.take().context("no stdout")?;
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let (mut addr, mut pin, mut metrics) = (None, None, None);
    let deadline = Instant::now() + Duration::from_secs(15);
    while addr.is_none() || pin.is_none() || metrics.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .context("the relay did not print its banner within 15 s")?;
        if let Some(a) = line.strip_prefix("lanparty-relay listening on udp ") {
            addr = Some(a.trim().parse::<SocketAddr>()?);
        } else if let Some(f) = line.strip_prefix("certificate fingerprint (sha-256): ") {
            pin = Some(
                f.trim()
                    .parse::<Fingerprint>()
                    .map_err(|_| anyhow::anyhow!("bad fingerprint {f:?}"))?,
            );
        } else if let Some(m) = line.strip_prefix("metrics: http://") {
            let m = m.split('/').next().unwrap_or("");
            metrics = Some(m.parse::<SocketAddr>()?);
        }
    }
    match (addr, pin, metrics) {
        (Some(a), Some(p), Some(m)) => Ok((child, a, p, m)),
        _ => bail!("incomplete relay banner"),
    }
}

/// One client thread: joins `range` and keeps the connections alive until `stop`.
#[expect(
    clippy::too_many_arguments,
    reason = "one call site, each argument distinct"
)]
fn client_thread(
    relay: SocketAddr,
    pin: Fingerprint,
    range: std::ops::Range<usize>,
    per_room: usize,
    joined: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    deadline: Instant,
) -> anyhow::Result<Option<String>> {
    let mut fleet = Fleet::new(pin, None)?;
    let mut next = range.start;
    let (mut seen_joined, mut seen_failed) = (0, 0);
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        let now = Instant::now();
        while next < range.end && fleet.members.len() - fleet.joined - fleet.failed < INFLIGHT {
            let room = format!("scale-{}", next / per_room.max(1));
            fleet.join(now, relay, &room, mac(next as u32 + 1))?;
            next += 1;
        }
        fleet.turn(Some(now + Duration::from_millis(10)), |_, _, _, _| {})?;
        if fleet.joined > seen_joined {
            joined.fetch_add(fleet.joined - seen_joined, Ordering::Relaxed);
            seen_joined = fleet.joined;
        }
        if fleet.failed > seen_failed {
            failed.fetch_add(fleet.failed - seen_failed, Ordering::Relaxed);
            seen_failed = fleet.failed;
        }
    }
    let first = fleet.members.iter().find_map(|m| m.failed.clone());
    fleet.close_all();
    Ok(first)
}

/// Runs `bench scale`.
pub(crate) fn run(opts: &Options) -> anyhow::Result<()> {
    let mut opts = opts.clone();
    if opts.quick {
        opts.clients = opts.clients.min(100);
    }
    let started = Instant::now();
    let deadline = started + opts.time_limit;
    let (relay, addr, pin, metrics) = spawn_relay(&opts)?;
    let pid = relay.child.id();
    std::thread::sleep(Duration::from_millis(300));
    let rss_before = rss_kib(pid)?;
    let joined = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let threads = THREADS.min(opts.clients.max(1));
    let per_thread = opts.clients.div_ceil(threads);
    let t0 = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let range = (t * per_thread)..((t + 1) * per_thread).min(opts.clients);
            let (joined, failed, stop) = (joined.clone(), failed.clone(), stop.clone());
            let per_room = opts.per_room;
            std::thread::Builder::new()
                .name(format!("scale-client-{t}"))
                .spawn(move || {
                    client_thread(addr, pin, range, per_room, joined, failed, stop, deadline)
                })
        })
        .collect::<Result<_, _>>()?;
    let mut last_report = Instant::now();
    while joined.load(Ordering::Relaxed) + failed.load(Ordering::Relaxed) < opts.clients
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(2));
        if last_report.elapsed() > Duration::from_secs(5) {
            eprintln!(
                "{} of {} joined, {} failed",
                joined.load(Ordering::Relaxed),
                opts.clients,
                failed.load(Ordering::Relaxed)
            );
            last_report = Instant::now();
        }
    }
    let join_time = t0.elapsed();
    let n_joined = joined.load(Ordering::Relaxed);
    // Idle a moment (keep-alives flow), then measure.
    std::thread::sleep(Duration::from_secs(if opts.quick { 1 } else { 2 }));
    let rss_after = rss_kib(pid)?;
    let status = lanparty_relay::cli::fetch_status(metrics)?;
    stop.store(true, Ordering::Relaxed);
    let mut first_failure = None;
    for h in handles {
        let r = h
            .join()
            .map_err(|_| anyhow::anyhow!("a client thread panicked"))??;
        first_failure = first_failure.or(r);
    }
    drop(relay);
    let per_conn = (rss_after.saturating_sub(rss_before)) as f64 / n_joined.max(1) as f64;
    let report = Report {
        command: std::env::args().collect::<Vec<_>>().join(" "),
        clients: opts.clients,
        rooms: opts.clients.div_ceil(opts.per_room.max(1)),
        client_threads: threads,
        joined: n_joined,
        failed: failed.load(Ordering::Relaxed),
        first_failure,
        join_s: join_time.as_secs_f64(),
        joins_per_s: n_joined as f64 / join_time.as_secs_f64(),
        relay_connections: status.connections,
        relay_admitted: status.counters.admitted,
        rss_before_kib: rss_before,
        rss_after_kib: rss_after,
        rss_per_connection_kib: per_conn,
        target_kib: TARGET_KIB,
        met: per_conn <= TARGET_KIB && n_joined == opts.clients,
    };
    let md = markdown(&report);
    println!("{md}");
    let out = &opts.out;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    std::fs::write(
        out.join("scale.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    std::fs::write(out.join("scale.md"), &md)?;
    eprintln!("wrote {0}/scale.json and {0}/scale.md", out.display());
    if n_joined < opts.clients {
        bail!(
            "only {n_joined} of {} clients got a welcome within {:?} (first failure: {})",
            opts.clients,
            opts.time_limit,
            report.first_failure.as_deref().unwrap_or("none, timed out")
        );
    }
    Ok(())
}

fn markdown(r: &Report) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(s, "| metric | value |");
    let _ = writeln!(s, "|---|---|");
    let rows = [
        (
            "clients (rooms × per room)",
            format!("{} ({} rooms)", r.clients, r.rooms),
        ),
        ("client threads", r.client_threads.to_string()),
        (
            "clients welcomed",
            format!("{} of {} ({} failed)", r.joined, r.clients, r.failed),
        ),
        ("time to welcome all", format!("{:.2} s", r.join_s)),
        (
            "joins per second (handshake + hello/welcome)",
            format!("{:.0}", r.joins_per_s),
        ),
        (
            "relay connections / admitted (from /status)",
            format!("{} / {}", r.relay_connections, r.relay_admitted),
        ),
        ("relay RSS before", format!("{} KiB", r.rss_before_kib)),
        (
            "relay RSS with all clients idle",
            format!("{} KiB", r.rss_after_kib),
        ),
        (
            "relay RSS per connection",
            format!(
                "{:.1} KiB (target ≤ {:.0} KiB: {:.2}× the target, {})",
                r.rss_per_connection_kib,
                r.target_kib,
                r.rss_per_connection_kib / r.target_kib,
                if r.met { "met" } else { "**not met**" }
            ),
        ),
    ];
    for (k, v) in rows {
        let _ = writeln!(s, "| {k} | {v} |");
    }
    s
}
