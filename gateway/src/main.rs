//! `lanparty-gateway`: bridges a party LAN's NIC into a softlan room through AF_PACKET rings.
//!
//! ```text
//! lanparty-gateway 'lanparty://relay.example:4433/party?pin=…' --interface eth0
//! LANPARTY_SECRET=… lanparty-gateway --relay relay.example:4433 --room party --interface eth0
//! ```
//!
//! Errors that stop the gateway from starting are printed as one line on stderr and the exit
//! status is 1. Once running, the gateway never gives up on the relay by itself: it reconnects
//! with backoff until SIGINT or SIGTERM, or until the relay rejects it for good (bad secret,
//! bad room code, incompatible version), which exits with status 2.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use lanparty_control::logging;
use lanparty_gateway::{Cli, FileConfig, GatewayConfig, sys};

/// How long the goodbye to the relay may take on shutdown.
const CLOSE_GRACE: Duration = Duration::from_millis(300);

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(code) => code,
        Err(e) => {
            // Every error here carries its cause in its own message: print one line.
            eprintln!("lanparty-gateway: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: &Cli) -> anyhow::Result<ExitCode> {
    let file = match &cli.config {
        Some(path) => FileConfig::load(path)?,
        None => FileConfig::default(),
    };
    let config = GatewayConfig::resolve(cli, &file)?;
    logging::init(config.log_format);
    sys::install_signal_handlers()
        .map_err(|e| anyhow::anyhow!("installing signal handlers: {e}"))?;

    let mut bridge = lanparty_gateway::start(&config, Instant::now())?;
    while !sys::shutdown_requested() {
        bridge.turn(Duration::MAX)?;
        if bridge.uplink().is_finished() {
            // A fatal rejection: the status line already said why.
            bridge.log_counters();
            return Ok(ExitCode::from(2));
        }
    }
    tracing::info!("shutting down");
    bridge.close("gateway shutting down")?;
    // A few short turns so the goodbye and the CONNECTION_CLOSE leave the socket.
    let until = Instant::now() + CLOSE_GRACE;
    while Instant::now() < until {
        bridge.turn(Duration::from_millis(50))?;
    }
    bridge.log_counters();
    Ok(ExitCode::SUCCESS)
}
