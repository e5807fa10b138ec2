//! `lanparty-gateway`: bridges a party LAN's NIC into a softlan room through AF_PACKET rings.

use clap::Parser;

/// The softlan gateway: bridges the party LAN's network interface into a relay room.
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
    /// The party LAN interface to bridge, e.g. eth0.
    #[arg(long)]
    interface: Option<String>,
}

fn main() -> anyhow::Result<()> {
    let _args = Args::parse();
    anyhow::bail!("the gateway's bridge datapath is not built yet; nothing was started")
}
