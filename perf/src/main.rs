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
        /// How often each measurement is repeated (default 3, 1 with --quick).
        #[arg(long)]
        repeats: Option<usize>,
        /// Output directory for the Markdown and JSON results (default perf/out/).
        #[arg(long)]
        out: Option<std::path::PathBuf>,
        /// Clients of `scale`.
        #[arg(long, default_value_t = 1000)]
        clients: usize,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Scenario {
    /// One QUIC connection on loopback: our driver on both backends vs. the quinn crate.
    Quic,
    /// Frames through lanparty-relay vs. a quinn relay: throughput, CPU/frame, added latency.
    Relay,
    /// Many clients joining one relay process: handshakes/s, relay RSS per connection.
    Scale,
    /// Frames between a LAN interface and the room: AF_PACKET rings vs. plain recvmmsg.
    Gateway,
    /// Player → relay → gateway → LAN host against the direct path, OpenVPN and tinc (root).
    E2e,
    /// Every scenario, one after another (quic, relay, scale, gateway, e2e).
    All,
}

fn main() -> anyhow::Result<()> {
    match Args::parse().command {
        Command::Lab(args) => lanparty_perf::lab::run_command(&args),
        Command::Bench {
            scenario,
            quick,
            repeats,
            out,
            clients,
        } => {
            let all = matches!(scenario, Scenario::All);
            let opts = bench::RunOpts::new(quick, repeats, out);
            if all || matches!(scenario, Scenario::Quic) {
                bench::quic::run_quic(&opts)?;
            }
            if all || matches!(scenario, Scenario::Relay) {
                bench::relay::run(&opts)?;
            }
            if all || matches!(scenario, Scenario::Scale) {
                bench::scale::run(&bench::scale::Options {
                    clients,
                    per_room: 10,
                    quick,
                    time_limit: Duration::from_secs(120),
                    out: opts.out.clone(),
                })?;
            }
            if all || matches!(scenario, Scenario::Gateway) {
                bench::gateway::run_gateway(&opts)?;
            }
            if all || matches!(scenario, Scenario::E2e) {
                bench::e2e::run_e2e(&opts)?;
            }
            Ok(())
        }
    }
}
