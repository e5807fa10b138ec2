//! `lanparty-relay`: the public hub that admits peers into rooms and switches their Ethernet
//! frames as QUIC DATAGRAMs.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

/// The softlan relay: admits LAN-party peers into rooms over QUIC and switches their Ethernet
/// frames between them.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Args {
    /// UDP address to listen on (`0.0.0.0:4433`, `[::]:443`) or just a port (`443/udp`).
    #[arg(long, default_value = "[::]:4433")]
    listen: String,
    /// PEM certificate chain; without it a self-signed certificate is kept in --state-dir.
    #[arg(long, requires = "key")]
    cert: Option<PathBuf>,
    /// PEM private key for --cert.
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,
    /// Directory for the generated certificate and other state.
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Serve Prometheus metrics on this address.
    #[arg(long)]
    metrics: Option<SocketAddr>,
}

fn main() -> anyhow::Result<()> {
    let _args = Args::parse();
    anyhow::bail!("the relay's QUIC datapath is not built yet; nothing was started")
}
