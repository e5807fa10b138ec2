//! Benchmarks. Every scenario measures its baseline in the same run and reports ratios,
//! because the machines they run on are shared and noisy.

use std::path::PathBuf;
use std::time::Duration;

pub(crate) mod e2e;
pub(crate) mod gateway;
pub(crate) mod plot;
pub(crate) mod quic;
pub(crate) mod quinn_ref;
pub(crate) mod relay;
mod relay_ref;
pub(crate) mod scale;
pub(crate) mod udp_ref;
pub(crate) mod vpn;

/// Options every scenario takes.
#[derive(Debug, Clone)]
pub(crate) struct RunOpts {
    /// Small counts and short runs: checks that traffic flows and results are written.
    pub(crate) quick: bool,
    /// How often each measurement is repeated.
    pub(crate) repeats: usize,
    /// Where the scenario's Markdown and JSON go.
    pub(crate) out: PathBuf,
}

impl RunOpts {
    /// Defaults: full run, 3 repeats (1 when quick), `perf/out/`.
    pub(crate) fn new(quick: bool, repeats: Option<usize>, out: Option<PathBuf>) -> Self {
        Self {
            quick,
            repeats: repeats.unwrap_or(if quick { 1 } else { 3 }).max(1),
            out: out.unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("out")),
        }
    }
}

/// DATAGRAM send/receive buffer used by every QUIC stack under test (our driver's default).
pub(crate) const DATAGRAM_BUFFER: usize = 64 * 1024;

/// What a throughput run sends.
#[derive(Debug, Clone)]
pub(crate) struct Workload {
    /// Datagram payload sizes, sent round-robin.
    pub(crate) sizes: Vec<usize>,
    /// How long the sender sends.
    pub(crate) duration: Duration,
}

/// What a throughput run measured.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Throughput {
    pub(crate) sent: u64,
    pub(crate) received: u64,
    pub(crate) bytes: u64,
    pub(crate) wall: Duration,
    pub(crate) send_cpu: Duration,
    pub(crate) recv_cpu: Duration,
    /// Time each side was runnable but waited for a CPU (the machine was busy elsewhere).
    pub(crate) send_starved: Duration,
    pub(crate) recv_starved: Duration,
}

impl Throughput {
    /// Datagrams received per wall-clock second.
    pub(crate) fn datagrams_per_sec(&self) -> f64 {
        self.received as f64 / self.wall.as_secs_f64()
    }

    /// Payload Gbit/s received.
    pub(crate) fn gbit_per_sec(&self) -> f64 {
        self.bytes as f64 * 8.0 / self.wall.as_secs_f64() / 1e9
    }

    /// Sender CPU ns per received datagram.
    pub(crate) fn send_ns_per_datagram(&self) -> f64 {
        self.send_cpu.as_nanos() as f64 / self.received.max(1) as f64
    }

    /// Receiver CPU ns per received datagram.
    pub(crate) fn recv_ns_per_datagram(&self) -> f64 {
        self.recv_cpu.as_nanos() as f64 / self.received.max(1) as f64
    }

    /// Share of the sending time the sender spent waiting for a CPU, in percent.
    pub(crate) fn send_starved_pct(&self) -> f64 {
        100.0 * self.send_starved.as_secs_f64() / self.wall.as_secs_f64().max(1e-9)
    }

    /// Share of the sending time the receiver spent waiting for a CPU, in percent.
    pub(crate) fn recv_starved_pct(&self) -> f64 {
        100.0 * self.recv_starved.as_secs_f64() / self.wall.as_secs_f64().max(1e-9)
    }

    /// Received datagrams per CPU-second of both sides together.
    pub(crate) fn datagrams_per_cpu_sec(&self) -> f64 {
        self.received as f64 / (self.send_cpu + self.recv_cpu).as_secs_f64().max(1e-9)
    }
}

/// How long the calling thread has been runnable but waiting for a CPU (`/proc/thread-self/
/// schedstat`, second field); zero where the kernel does not report it.
pub(crate) fn thread_run_delay() -> Duration {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse().ok())
        .map_or(Duration::ZERO, Duration::from_nanos)
}
