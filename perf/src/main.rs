//! `lanparty-perf`: the one-machine LAN-party lab and the benchmark harness.

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
    Lab,
    /// Run benchmarks, each against a baseline in the same run.
    Bench,
}

fn main() -> anyhow::Result<()> {
    match Args::parse().command {
        Command::Lab => anyhow::bail!("the lab is not built yet"),
        Command::Bench => anyhow::bail!("no benchmark is built yet"),
    }
}
