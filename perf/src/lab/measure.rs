//! Measurements between lab namespaces: ping RTT, UDP broadcast reachability, IPv6 link-local
//! reachability, iperf3 TCP throughput and UDP packet rates.
//!
//! Every measurement is bounded in count and in time. Ping uses raw ICMP sockets created inside
//! the namespace (no `ping` binary needed, and every sample is kept, so median and p99 are exact
//! rather than the min/avg/max iputils prints). Broadcast reachability uses ordinary UDP sockets
//! created inside the namespaces with [`Netns::run_in`]. Throughput runs iperf3 (server and
//! client as [`LabProcess`]es) and parses its `-J` JSON.

use std::io::{ErrorKind, Read};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6, UdpSocket};
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use lanparty_datapath::sys::netns::Netns;

use super::LabError;
use super::process::LabProcess;

/// Per-process counter that tells concurrent measurements apart (ICMP ident, log names).
static NEXT_ID: AtomicU32 = AtomicU32::new(1);

/// What to tell a user whose machine lacks iperf3.
pub const IPERF3_INSTALL_HINT: &str = "apt-get install iperf3";

/// Whether the `iperf3` program can be started.
pub fn iperf3_installed() -> bool {
    super::program_installed("iperf3", "--version")
}

/// How many echo requests to send and how long to wait (the bounds of [`ping_stats`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PingPlan {
    /// Echo requests to send (one warm-up request that resolves ARP/ND is sent first and not
    /// counted).
    pub count: u32,
    /// Pause between a reply (or its timeout) and the next request (like `ping -i`).
    pub interval: Duration,
    /// How long to wait for each reply.
    pub reply_timeout: Duration,
    /// Hard limit for the whole run; requests not sent by then are not sent.
    pub budget: Duration,
}

impl Default for PingPlan {
    /// 50 pings, 10 ms apart, 1 s per reply, 10 s in all.
    fn default() -> Self {
        Self {
            count: 50,
            interval: Duration::from_millis(10),
            reply_timeout: Duration::from_secs(1),
            budget: Duration::from_secs(10),
        }
    }
}

/// Round-trip times of a ping run.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PingStats {
    /// Requests sent (not counting the warm-up).
    pub sent: u32,
    /// Replies received.
    pub received: u32,
    /// Median RTT in microseconds (`None` without replies).
    pub median_us: Option<f64>,
    /// 99th percentile RTT (nearest rank) in microseconds.
    pub p99_us: Option<f64>,
    /// Smallest RTT in microseconds.
    pub min_us: Option<f64>,
    /// Largest RTT in microseconds.
    pub max_us: Option<f64>,
}

impl PingStats {
    /// Builds the summary from the samples of `sent` requests.
    pub fn from_samples(sent: u32, mut samples: Vec<Duration>) -> Self {
        samples.sort_unstable();
        let us = |d: &Duration| d.as_secs_f64() * 1e6;
        let rank = |q: f64| {
            let r = ((q * samples.len() as f64).ceil() as usize).max(1);
            samples.get(r - 1).map(us)
        };
        Self {
            sent,
            received: samples.len() as u32,
            median_us: rank(0.5),
            p99_us: rank(0.99),
            min_us: samples.first().map(us),
            max_us: samples.last().map(us),
        }
    }

    /// Lost requests as a fraction of those sent.
    pub fn loss(&self) -> f64 {
        if self.sent == 0 {
            return 0.0;
        }
        f64::from(self.sent - self.received.min(self.sent)) / f64::from(self.sent)
    }
}

/// The interface index of `ifname` inside `ns` (from `ip -o link show`).
///
/// # Errors
///
/// [`LabError::Netns`] when `ip` fails, [`LabError::Failed`] when the output has no index.
pub fn ifindex(ns: &Netns, ifname: &str) -> Result<u32, LabError> {
    let out = ns.ip(&["-o", "link", "show", "dev", ifname])?;
    out.split(':')
        .next()
        .and_then(|n| n.trim().parse().ok())
        .ok_or_else(|| LabError::Failed {
            what: format!("reading the index of {ifname}"),
            detail: out.trim().to_owned(),
        })
}

/// Sends `plan.count` ICMP/ICMPv6 echo requests from `ns` to `dest`, one after another, and
/// summarises the round-trip times. `scope_if` names the outgoing interface for an IPv6
/// link-local `dest` (the `%if` of `ping fe80::1%eth0`).
///
/// # Errors
///
/// [`LabError::Netns`] when the namespace or the interface is unknown, [`LabError::Io`] for
/// socket errors. Lost replies are not errors: they show in [`PingStats::received`].
pub fn ping_stats(
    ns: &Netns,
    dest: IpAddr,
    scope_if: Option<&str>,
    plan: &PingPlan,
) -> Result<PingStats, LabError> {
    let scope = match scope_if {
        Some(ifname) => ifindex(ns, ifname)?,
        None => 0,
    };
    ns.run_in(|| ping_here(dest, scope, plan))?
}

fn ping_here(dest: IpAddr, scope: u32, plan: &PingPlan) -> Result<PingStats, LabError> {
    use socket2::{Domain, Protocol, Socket, Type};
    let err = |what: &'static str| {
        move |source| LabError::Io {
            what: format!("ping {dest}: {what}"),
            source,
        }
    };
    let (domain, proto, request, reply) = match dest {
        IpAddr::V4(_) => (Domain::IPV4, Protocol::ICMPV4, 8u8, 0u8),
        IpAddr::V6(_) => (Domain::IPV6, Protocol::ICMPV6, 128u8, 129u8),
    };
    let sock = Socket::new(domain, Type::RAW, Some(proto)).map_err(err("socket"))?;
    let to: SocketAddr = match dest {
        IpAddr::V4(v4) => (v4, 0).into(),
        IpAddr::V6(v6) => SocketAddrV6::new(v6, 0, 0, scope).into(),
    };
    // A connected raw socket only sees packets from `dest`.
    sock.connect(&to.into()).map_err(err("connect"))?;
    let ident = (std::process::id() as u16) ^ (NEXT_ID.fetch_add(1, Ordering::Relaxed) as u16);
    let start = Instant::now();
    let mut samples = Vec::with_capacity(plan.count as usize);
    let mut sent = 0;
    let mut buf = [0u8; 1500];
    // Sequence 0 is the warm-up that resolves the neighbour; it is not counted.
    for seq in 0..=plan.count {
        if start.elapsed() >= plan.budget {
            break;
        }
        let mut req = [0u8; 24];
        req[0] = request;
        req[4..6].copy_from_slice(&ident.to_be_bytes());
        req[6..8].copy_from_slice(&(seq as u16).to_be_bytes());
        req[8..24].copy_from_slice(b"softlan-lab-ping");
        if dest.is_ipv4() {
            // The kernel fills the ICMPv6 checksum itself; ICMPv4 is ours to compute.
            let ck = inet_checksum(&req);
            req[2..4].copy_from_slice(&ck.to_be_bytes());
        }
        let sent_at = Instant::now();
        sock.send(&req).map_err(err("send"))?;
        if seq > 0 {
            sent += 1;
        }
        let until = (sent_at + plan.reply_timeout).min(start + plan.budget);
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            sock.set_read_timeout(Some(left)).map_err(err("timeout"))?;
            let n = match (&sock).read(&mut buf) {
                Ok(n) => n,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(err("receive")(e)),
            };
            let data = &buf[..n];
            // Raw IPv4 sockets deliver the IP header too; raw ICMPv6 sockets do not.
            let icmp = if dest.is_ipv4() {
                let ihl = usize::from(data.first().copied().unwrap_or(0) & 0x0f) * 4;
                data.get(ihl..).unwrap_or(&[])
            } else {
                data
            };
            if icmp.len() >= 8
                && icmp[0] == reply
                && icmp[4..6] == ident.to_be_bytes()
                && icmp[6..8] == (seq as u16).to_be_bytes()
            {
                if seq > 0 {
                    samples.push(sent_at.elapsed());
                }
                break;
            }
        }
        std::thread::sleep(plan.interval);
    }
    Ok(PingStats::from_samples(sent, samples))
}

/// The Internet checksum (RFC 1071) of `data`.
fn inet_checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Addresses of `ifname` in `ns` that are usable (not tentative), from `ip -o addr show`.
///
/// # Errors
///
/// [`LabError::Netns`] when `ip` fails.
pub fn addresses(ns: &Netns, ifname: &str) -> Result<Vec<IpAddr>, LabError> {
    Ok(parse_addresses(
        &ns.ip(&["-o", "addr", "show", "dev", ifname])?,
    ))
}

fn parse_addresses(out: &str) -> Vec<IpAddr> {
    out.lines()
        .filter(|l| !l.contains("tentative"))
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            words.find(|w| *w == "inet" || *w == "inet6")?;
            words.next()?.split('/').next()?.parse().ok()
        })
        .collect()
}

/// Waits until `ifname` in `ns` has a usable address for which `wanted` holds (for example,
/// the address DHCP gave it) and returns it; polls every 20 ms until `timeout`.
///
/// # Errors
///
/// [`LabError::Timeout`], or [`LabError::Netns`] when `ip` fails.
pub fn wait_for_addr(
    ns: &Netns,
    ifname: &str,
    wanted: impl Fn(IpAddr) -> bool,
    timeout: Duration,
) -> Result<IpAddr, LabError> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(a) = addresses(ns, ifname)?.into_iter().find(|a| wanted(*a)) {
            return Ok(a);
        }
        if Instant::now() >= deadline {
            return Err(LabError::Timeout {
                what: format!("an address on {ifname} in {}", ns.name()),
                timeout,
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether `addr` is an IPv6 link-local address (fe80::/10).
pub fn is_link_local_v6(addr: IpAddr) -> bool {
    matches!(addr, IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80)
}

/// The IPv6 link-local address of `ifname` in `ns`, waiting up to `timeout` for it.
///
/// # Errors
///
/// As [`wait_for_addr`].
pub fn link_local_addr(ns: &Netns, ifname: &str, timeout: Duration) -> Result<Ipv6Addr, LabError> {
    let found = wait_for_addr(ns, ifname, is_link_local_v6, timeout)?;
    match found {
        IpAddr::V6(v6) => Ok(v6),
        IpAddr::V4(_) => Err(LabError::Failed {
            what: format!("the link-local address of {ifname}"),
            detail: format!("{found} is not IPv6"),
        }),
    }
}

/// Sends a UDP datagram from `from` (out of `from_if`) to 255.255.255.255:`port` and reports
/// whether a listener bound to 0.0.0.0:`port` in `to` receives it within `timeout`. The datagram
/// is sent up to five times, spread over `timeout`. Returns the source address the listener saw.
///
/// The sender is bound to `from_if` (`SO_BINDTODEVICE`), as a limited broadcast needs an
/// outgoing interface when the namespace has no default route.
///
/// # Errors
///
/// [`LabError::Io`] for socket errors (port in use, interface unknown), [`LabError::Netns`].
pub fn broadcast_reaches(
    from: &Netns,
    from_if: &str,
    to: &Netns,
    port: u16,
    timeout: Duration,
) -> Result<Option<SocketAddr>, LabError> {
    use socket2::{Domain, Protocol, Socket, Type};
    let err = |what: &'static str| {
        move |source| LabError::Io {
            what: format!("broadcast to port {port}: {what}"),
            source,
        }
    };
    let listener: UdpSocket = to.run_in(|| -> Result<UdpSocket, LabError> {
        let s =
            Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).map_err(err("listener"))?;
        s.set_reuse_address(true).map_err(err("listener"))?;
        s.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)).into())
            .map_err(err("listener bind"))?;
        Ok(s.into())
    })??;
    let sender: UdpSocket = from.run_in(|| -> Result<UdpSocket, LabError> {
        let s =
            Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).map_err(err("sender"))?;
        s.set_broadcast(true).map_err(err("sender"))?;
        s.bind_device(Some(from_if.as_bytes()))
            .map_err(err("sender bind to device"))?;
        s.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)).into())
            .map_err(err("sender bind"))?;
        Ok(s.into())
    })??;
    let token = format!(
        "softlan-lab-broadcast {} {}",
        std::process::id(),
        NEXT_ID.fetch_add(1, Ordering::Relaxed)
    );
    let start = Instant::now();
    let attempts = 5u32;
    let mut buf = [0u8; 1500];
    for attempt in 0..attempts {
        sender
            .send_to(token.as_bytes(), (Ipv4Addr::BROADCAST, port))
            .map_err(err("send"))?;
        let until = (start + timeout * (attempt + 1) / attempts).min(start + timeout);
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            listener
                .set_read_timeout(Some(left))
                .map_err(err("timeout"))?;
            match listener.recv_from(&mut buf) {
                Ok((n, src)) if &buf[..n] == token.as_bytes() => return Ok(Some(src)),
                Ok(_) => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(err("receive")(e)),
            }
        }
    }
    Ok(None)
}

/// Result of an iperf3 TCP run.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TcpThroughput {
    /// Goodput seen by the receiver, bits per second.
    pub received_bps: f64,
    /// Rate the sender pushed, bits per second.
    pub sent_bps: f64,
    /// TCP retransmissions on the sender.
    pub retransmits: u64,
    /// Measured duration in seconds.
    pub seconds: f64,
}

/// Result of an iperf3 UDP run at a fixed datagram size.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct UdpRate {
    /// UDP payload bytes per datagram (`-l`).
    pub payload: u32,
    /// Datagrams sent.
    pub packets: u64,
    /// Datagrams the receiver reported lost.
    pub lost: u64,
    /// Measured duration in seconds.
    pub seconds: f64,
    /// Datagrams per second that arrived.
    pub received_pps: f64,
}

fn num(v: &serde_json::Value, path: &[&str]) -> Option<f64> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_f64()
}

fn json_failed(detail: impl Into<String>) -> LabError {
    LabError::Failed {
        what: "reading iperf3's JSON".into(),
        detail: detail.into(),
    }
}

fn parse_json(json: &str) -> Result<serde_json::Value, LabError> {
    let v: serde_json::Value =
        serde_json::from_str(json).map_err(|e| json_failed(e.to_string()))?;
    if let Some(e) = v.get("error").and_then(|e| e.as_str()) {
        return Err(LabError::Failed {
            what: "iperf3".into(),
            detail: e.to_owned(),
        });
    }
    Ok(v)
}

/// Parses the `-J` output of an iperf3 TCP client.
///
/// # Errors
///
/// [`LabError::Failed`] when the JSON is malformed, carries an `error`, or lacks `end.sum_*`.
pub fn parse_iperf3_tcp(json: &str) -> Result<TcpThroughput, LabError> {
    let v = parse_json(json)?;
    let received_bps = num(&v, &["end", "sum_received", "bits_per_second"])
        .ok_or_else(|| json_failed("no end.sum_received.bits_per_second"))?;
    Ok(TcpThroughput {
        received_bps,
        sent_bps: num(&v, &["end", "sum_sent", "bits_per_second"]).unwrap_or(0.0),
        retransmits: num(&v, &["end", "sum_sent", "retransmits"]).unwrap_or(0.0) as u64,
        seconds: num(&v, &["end", "sum_received", "seconds"]).unwrap_or(0.0),
    })
}

/// Parses the `-J` output of an iperf3 UDP client (`-u -l payload`). Newer iperf3 versions
/// report the receiver's side in `end.sum_received`; 3.12 puts the receiver's loss count into
/// `end.sum`.
///
/// # Errors
///
/// As [`parse_iperf3_tcp`].
pub fn parse_iperf3_udp(json: &str, payload: u32) -> Result<UdpRate, LabError> {
    let v = parse_json(json)?;
    let sum = ["sum_received", "sum"]
        .into_iter()
        .find(|k| num(&v, &["end", k, "packets"]).is_some())
        .ok_or_else(|| json_failed("no end.sum.packets"))?;
    let packets = num(&v, &["end", sum, "packets"]).unwrap_or(0.0) as u64;
    let lost = (num(&v, &["end", sum, "lost_packets"])
        .unwrap_or(0.0)
        .max(0.0) as u64)
        .min(packets);
    let seconds = num(&v, &["end", sum, "seconds"]).unwrap_or(0.0);
    let received_pps = if seconds > 0.0 {
        (packets - lost) as f64 / seconds
    } else {
        0.0
    };
    Ok(UdpRate {
        payload,
        packets,
        lost,
        seconds,
        received_pps,
    })
}

/// Whether a TCP socket listens on `port` in the calling thread's namespace
/// (`/proc/thread-self/net/tcp*` show the thread's namespace, unlike `/proc/net`).
fn listening_here(port: u16) -> bool {
    let needle = format!(":{port:04X} ");
    ["/proc/thread-self/net/tcp", "/proc/thread-self/net/tcp6"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .any(|table| {
            table.lines().skip(1).any(|l| {
                let mut f = l.split_whitespace();
                let local = f.nth(1).unwrap_or("");
                // State is the fourth column; 0A is LISTEN.
                let state = f.nth(1).unwrap_or("");
                state == "0A" && format!("{local} ").ends_with(&needle)
            })
        })
}

/// Starts `iperf3 -s` in `ns` bound to `bind`:`port` and waits up to 5 s until it listens.
///
/// # Errors
///
/// [`LabError::Missing`] without iperf3, [`LabError::Failed`] when it exits at start,
/// [`LabError::Timeout`].
pub fn iperf3_server(
    ns: &Netns,
    bind: IpAddr,
    port: u16,
    dir: &Path,
) -> Result<LabProcess, LabError> {
    if !iperf3_installed() {
        return Err(LabError::Missing {
            program: "iperf3",
            hint: IPERF3_INSTALL_HINT,
        });
    }
    let name = format!(
        "iperf3-server-{port}-{}",
        NEXT_ID.fetch_add(1, Ordering::Relaxed)
    );
    let argv = [
        "iperf3".to_owned(),
        "-s".into(),
        "-B".into(),
        bind.to_string(),
        "-p".into(),
        port.to_string(),
    ];
    let mut server = LabProcess::spawn(ns, &name, &argv, dir)?;
    let timeout = Duration::from_secs(5);
    let deadline = Instant::now() + timeout;
    loop {
        if !server.is_running() {
            return Err(LabError::Failed {
                what: "starting the iperf3 server".into(),
                detail: server.stderr_tail(),
            });
        }
        if ns.run_in(|| listening_here(port))? {
            return Ok(server);
        }
        if Instant::now() >= deadline {
            return Err(LabError::Timeout {
                what: format!("iperf3 to listen on port {port}"),
                timeout,
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs an iperf3 client in `ns` with `args` after `-c server -p port -J`, bounded by the test
/// length plus 10 s, and returns its JSON.
fn iperf3_client(
    ns: &Netns,
    server: IpAddr,
    port: u16,
    secs: u32,
    extra: &[String],
    dir: &Path,
) -> Result<String, LabError> {
    let name = format!(
        "iperf3-client-{port}-{}",
        NEXT_ID.fetch_add(1, Ordering::Relaxed)
    );
    let mut argv = vec![
        "iperf3".to_owned(),
        "-c".into(),
        server.to_string(),
        "-p".into(),
        port.to_string(),
        "-t".into(),
        secs.to_string(),
        "-J".into(),
        "--connect-timeout".into(),
        "3000".into(),
    ];
    argv.extend_from_slice(extra);
    let mut client = LabProcess::spawn(ns, &name, &argv, dir)?;
    let limit = Duration::from_secs(u64::from(secs) + 10);
    let ok = client.wait_timeout(limit);
    let json = std::fs::read_to_string(client.stdout_path()).map_err(|source| LabError::Io {
        what: "reading iperf3's output".into(),
        source,
    })?;
    if !ok && json.trim().is_empty() {
        return Err(LabError::Failed {
            what: "iperf3 client".into(),
            detail: format!("no result within {limit:?}: {}", client.stderr_tail()),
        });
    }
    Ok(json)
}

/// Measures TCP throughput from `client` to `server_addr` in `server` with iperf3 for `secs`
/// seconds (1 to 60). The server runs only for this measurement.
///
/// # Errors
///
/// [`LabError::Missing`] without iperf3, [`LabError::Failed`] when iperf3 fails or its output
/// cannot be read, [`LabError::Timeout`].
pub fn iperf3_tcp(
    client: &Netns,
    server: &Netns,
    server_addr: IpAddr,
    secs: u32,
    dir: &Path,
) -> Result<TcpThroughput, LabError> {
    let secs = secs.clamp(1, 60);
    let port = 5201;
    let _server = iperf3_server(server, server_addr, port, dir)?;
    parse_iperf3_tcp(&iperf3_client(client, server_addr, port, secs, &[], dir)?)
}

/// Measures the UDP packet rate from `client` to `server_addr` in `server` with
/// `iperf3 -u -l payload -b rate_bps` for `secs` seconds (1 to 60); `payload` is 16 to 65_000
/// bytes (64 and 1400 are the lab's sizes).
///
/// # Errors
///
/// As [`iperf3_tcp`].
pub fn iperf3_udp(
    client: &Netns,
    server: &Netns,
    server_addr: IpAddr,
    payload: u32,
    rate_bps: u64,
    secs: u32,
    dir: &Path,
) -> Result<UdpRate, LabError> {
    let secs = secs.clamp(1, 60);
    let payload = payload.clamp(16, 65_000);
    let port = 5202;
    let _server = iperf3_server(server, server_addr, port, dir)?;
    let extra = [
        "-u".to_owned(),
        "-l".into(),
        payload.to_string(),
        "-b".into(),
        rate_bps.to_string(),
    ];
    parse_iperf3_udp(
        &iperf3_client(client, server_addr, port, secs, &extra, dir)?,
        payload,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ping_stats_take_median_and_p99_by_nearest_rank() {
        let samples = (1..=100).map(Duration::from_micros).collect();
        let s = PingStats::from_samples(104, samples);
        assert_eq!(s.received, 100);
        assert_eq!(s.median_us, Some(50.0));
        assert_eq!(s.p99_us, Some(99.0));
        assert_eq!(s.min_us, Some(1.0));
        assert_eq!(s.max_us, Some(100.0));
        assert!((s.loss() - 4.0 / 104.0).abs() < 1e-9);
    }

    #[test]
    fn ping_stats_without_replies_have_no_rtt() {
        let s = PingStats::from_samples(3, Vec::new());
        assert_eq!(s.median_us, None);
        assert_eq!(s.loss(), 1.0);
    }

    #[test]
    fn tentative_addresses_are_not_usable() {
        let out = "\
5: lan0    inet 198.18.0.150/24 brd 198.18.0.255 scope global lan0\\       valid_lft forever
5: lan0    inet6 fe80::1/64 scope link tentative \\       valid_lft forever
5: lan0    inet6 fe80::2/64 scope link \\       valid_lft forever
";
        let got = parse_addresses(out);
        assert_eq!(
            got,
            vec![
                "198.18.0.150".parse::<IpAddr>().unwrap(),
                "fe80::2".parse().unwrap()
            ]
        );
        assert!(is_link_local_v6(got[1]));
        assert!(!is_link_local_v6("fd00::1".parse().unwrap()));
    }

    #[test]
    fn iperf3_tcp_json_gives_receiver_goodput() {
        let json = r#"{"start":{},"end":{
            "sum_sent":{"seconds":1.0,"bits_per_second":9.5e9,"retransmits":3},
            "sum_received":{"seconds":1.0,"bits_per_second":9.4e9}}}"#;
        let t = parse_iperf3_tcp(json).unwrap();
        assert_eq!(t.received_bps, 9.4e9);
        assert_eq!(t.sent_bps, 9.5e9);
        assert_eq!(t.retransmits, 3);
    }

    #[test]
    fn iperf3_error_field_becomes_an_error() {
        let json = r#"{"start":{},"end":{},"error":"unable to connect to server"}"#;
        let e = parse_iperf3_tcp(json).unwrap_err();
        assert!(e.to_string().contains("unable to connect"), "{e}");
        assert!(parse_iperf3_tcp("not json").is_err());
    }

    #[test]
    fn iperf3_udp_json_counts_arrived_packets() {
        let json = r#"{"end":{"sum":{"seconds":2.0,"packets":1000,"lost_packets":100}}}"#;
        let r = parse_iperf3_udp(json, 64).unwrap();
        assert_eq!((r.packets, r.lost), (1000, 100));
        assert_eq!(r.received_pps, 450.0);
        let newer = r#"{"end":{"sum":{"packets":1000},
            "sum_received":{"seconds":1.0,"packets":1000,"lost_packets":0}}}"#;
        assert_eq!(parse_iperf3_udp(newer, 1400).unwrap().received_pps, 1000.0);
    }

    #[test]
    fn checksum_matches_rfc1071_example() {
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(inet_checksum(&data), 0x220d);
    }
}
