//! `lanparty-client`: puts this machine on a LAN party's Ethernet segment through a relay.

use clap::Parser;

/// The softlan client: gives this machine a virtual adapter on a LAN-party room.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Args {
    /// Join link printed by the relay (carries host, port, room and certificate pin).
    join_link: Option<String>,
    /// Relay address as HOST:PORT.
    #[arg(long)]
    relay: Option<String>,
    /// Room code.
    #[arg(long)]
    room: Option<String>,
    /// Room secret (prefer the LANPARTY_SECRET environment variable).
    #[arg(long, env = "LANPARTY_SECRET", hide_env_values = true)]
    secret: Option<String>,
    /// Adapter kind: tap or tun on Linux, tap or wintun on Windows.
    #[arg(long)]
    adapter: Option<String>,
}

fn main() -> anyhow::Result<()> {
    let _args = Args::parse();
    anyhow::bail!("the client's adapter datapath is not built yet; nothing was started")
}
