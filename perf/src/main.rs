//! `lanparty-perf`: the one-machine LAN-party lab and the benchmark harness.

mod bench;
mod stats;
#[allow(unsafe_code)]
mod sys;

use std::time::Duration;

use clap::{Parser, Subcommand};

/// softlan lab and benchmarks.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Build a whole LAN party on this machine from network namespaces (needs root).
    Lab(lanparty_perf::lab::LabArgs),
    /// Run benchmarks, each against a baseline in the same run.
    Bench {
        /// Which scenario.
        #[arg(value_enum, default_value = "quic")]
        scenario: Scenario,
        /// Small counts and short runs (for CI).
        #[arg(long)]
        quick: bool,
        /// How many times each `relay` scenario runs (median and spread are reported).
        #[arg(long, default_value_t = 3)]
        repeat: usize,
        /// Clients of `scale`.
        #[arg(long, default_value_t = 1000)]
        clients: usize,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Scenario {
    Quic,
    /// Frames through lanparty-relay vs. a quinn relay: throughput, CPU/frame, added latency.
    Relay,
    /// Many clients joining one relay process: handshakes/s, relay RSS per connection.
    Scale,
}

fn main() -> anyhow::Result<()> {
    match Args::parse().command {
        Command::Lab(args) => lanparty_perf::lab::run_command(&args),
        Command::Bench {
            scenario: Scenario::Relay,
            quick,
            repeat,
            ..
        } => bench::relay::run(&bench::relay::Options {
            quick,
            repeat: if quick { 1 } else { repeat.max(1) },
        }),
        Command::Bench {
            scenario: Scenario::Scale,
            quick,
            clients,
            ..
        } => bench::scale::run(&bench::scale::Options {
            clients,
            per_room: 10,
            quick,
            time_limit: Duration::from_secs(120),
        }),
        Command::Bench {
            scenario: Scenario::Quic,
            quick,
            ..
        } => {
            let secs = if quick { 1 } else { 5 };
            let workload = bench::Workload {
                sizes: vec![1400],
                duration: Duration::from_secs(secs),
            };
            let t = bench::quinn_ref::throughput(&workload)?;
            println!(
                "quinn reference, 1400 B: {:.0} datagrams/s, {:.2} Gbit/s, send {:.0} ns/dgram, recv {:.0} ns/dgram, {:.0} dgrams per CPU-second, {} sent",
                t.datagrams_per_sec(),
                t.gbit_per_sec(),
                t.send_ns_per_datagram(),
                t.recv_ns_per_datagram(),
                t.datagrams_per_cpu_sec(),
                t.sent,
            );
            let count = if quick { 200 } else { 2000 };
            let mut q = bench::quinn_ref::ping(count, 64)?;
            let mut u = bench::udp_ref::ping(count, 64)?;
            println!(
                "ping 64 B median/p99: quinn {:?}/{:?}, plain UDP {:?}/{:?}",
                stats::quantile(&mut q, 0.5).unwrap_or_default(),
                stats::quantile(&mut q, 0.99).unwrap_or_default(),
                stats::quantile(&mut u, 0.5).unwrap_or_default(),
                stats::quantile(&mut u, 0.99).unwrap_or_default(),
            );
            anyhow::bail!("our own QUIC datapath is not in the benchmark yet")
        }
    }
}
