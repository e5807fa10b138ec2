//! `lanparty-client`: puts this machine on a LAN party's Ethernet segment through a relay.
//!
//! The main thread resolves the settings, opens the adapter and runs the datapath loop; a small
//! tokio thread waits for Ctrl-C / SIGTERM and stops the loop through its waker, so the relay
//! gets a goodbye and the adapter is removed before the process exits.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser as _;
use lanparty_client::config::{Args, ClientConfig};
use lanparty_control::logging::{self, LogFormat};

fn main() -> ExitCode {
    let args = Args::parse();
    let config = match ClientConfig::from_args(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("lanparty-client: {e}");
            return ExitCode::from(2);
        }
    };
    logging::init(config.log_format);
    match platform::run(config) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("lanparty-client: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Prints a status line: plain on stderr, or as a log event in JSON mode.
fn status_printer(format: LogFormat) -> Box<dyn FnMut(&str) + Send> {
    match format {
        LogFormat::Json => Box::new(|line: &str| tracing::info!(status = line, "status")),
        _ => Box::new(|line: &str| eprintln!("lanparty-client: {line}")),
    }
}

/// Runs `on_signal` once when Ctrl-C (or SIGTERM on Unix) arrives, on a small thread of its
/// own.
fn on_shutdown_signal<F: FnOnce() + Send + 'static>(on_signal: F) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the signal thread")?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            runtime.block_on(async {
                #[cfg(unix)]
                {
                    use tokio::signal::unix::{SignalKind, signal};
                    let Ok(mut term) = signal(SignalKind::terminate()) else {
                        let _ = tokio::signal::ctrl_c().await;
                        return;
                    };
                    tokio::select! {
                        _ = tokio::signal::ctrl_c() => {}
                        _ = term.recv() => {}
                    }
                }
                #[cfg(not(unix))]
                {
                    let _ = tokio::signal::ctrl_c().await;
                }
            });
            on_signal();
        })
        .context("starting the signal thread")?;
    Ok(())
}

/// The uplink to the relay, over the best UDP backend this machine has.
fn open_uplink(
    config: &ClientConfig,
    mac: lanparty_datapath::Mac,
) -> anyhow::Result<(lanparty_control::uplink::Uplink, std::net::SocketAddr)> {
    use lanparty_client::run;
    use lanparty_datapath::quic::{Driver, DriverConfig};
    use lanparty_datapath::runner::Runner;

    let relay = run::resolve_relay(&config.relay_host, config.relay_port)
        .with_context(|| format!("resolving the relay {}", config.relay_display()))?;
    let uplink_config = run::uplink_config(config, mac, relay, rand::random())
        .context("setting up TLS for the relay")?;
    let backend = lanparty_datapath::io::open_best(run::bind_addr_for(relay))
        .context("opening a UDP socket")?;
    let runner = Runner::new(Driver::new(DriverConfig::default(), None), backend);
    let uplink =
        lanparty_control::uplink::Uplink::new(std::time::Instant::now(), runner, uplink_config);
    Ok((uplink, relay))
}

/// The engine's options from the settings.
fn engine_options(
    config: &ClientConfig,
    mac: lanparty_datapath::Mac,
    dhcp_on_l2: bool,
) -> lanparty_client::engine::EngineOptions {
    lanparty_client::engine::EngineOptions {
        mac,
        addressing: config.addressing,
        hostname: lanparty_client::run::dhcp_hostname(config.display_name.as_str()),
        seed: rand::random(),
        dhcp_on_l2,
    }
}

/// Runs the client loop until a signal or a fatal rejection; the exit code says which.
fn run_engine<D: lanparty_client::engine::Device>(
    mut client: lanparty_client::engine::Engine<D>,
) -> anyhow::Result<ExitCode> {
    let stopper = client.stopper();
    on_shutdown_signal(move || stopper.stop())?;
    let exit = client.run().context("the client loop failed")?;
    drop(client);
    Ok(match exit {
        lanparty_client::engine::Exit::Stopped => ExitCode::SUCCESS,
        _ => ExitCode::FAILURE,
    })
}

#[cfg(target_os = "linux")]
mod platform {
    use std::process::ExitCode;

    use anyhow::Context as _;
    use lanparty_client::config::ClientConfig;
    use lanparty_client::linux;
    use lanparty_client::state;

    pub(super) fn run(config: ClientConfig) -> anyhow::Result<ExitCode> {
        let state_dir = config.state_dir.clone().unwrap_or_else(state::default_dir);
        let mac = match config.mac {
            Some(mac) => mac,
            None => state::load_or_create_mac(&state_dir).with_context(|| {
                format!("keeping our MAC in {} (or pass --mac)", state_dir.display())
            })?,
        };
        let (uplink, relay) = super::open_uplink(&config, mac)?;
        let dev = linux::open_adapter_with(config.adapter, &config.name, mac, config.offloads)
            .with_context(|| format!("creating the {} adapter", config.adapter.word()))?;
        tracing::info!(
            device = dev.name(),
            adapter = config.adapter.word(),
            %mac,
            relay = %relay,
            "adapter up"
        );
        let options = super::engine_options(&config, mac, true);
        let client = linux::client_loop(
            uplink,
            dev,
            options,
            super::status_printer(config.log_format),
        )
        .context("starting the client loop")?;
        super::run_engine(client)
    }
}

#[cfg(windows)]
mod platform {
    use std::process::ExitCode;

    use anyhow::Context as _;
    use lanparty_client::adapter::tap::{TapAdapter, TapConfig};
    use lanparty_client::adapter::wintun::{WintunAdapter, WintunConfig};
    use lanparty_client::adapter::{AdapterKind, VirtualAdapter};
    use lanparty_client::config::ClientConfig;
    use lanparty_client::state;
    use lanparty_client::windows;
    use lanparty_client::winplan::InterfaceId;

    pub(super) fn run(config: ClientConfig) -> anyhow::Result<ExitCode> {
        let state_dir = config.state_dir.clone().unwrap_or_else(state::default_dir);
        // A client that crashed left its interface changes behind: put them back first.
        if windows::replay_leftover_undo(&state_dir)
            .with_context(|| format!("replaying the undo file in {}", state_dir.display()))?
        {
            tracing::info!("undid the interface changes of a client that did not exit cleanly");
        }
        let (adapter, interface): (Box<dyn VirtualAdapter + Send>, InterfaceId) =
            match config.adapter {
                AdapterKind::Tap => {
                    let name = (config.name != lanparty_client::config::DEFAULT_WINDOWS_NAME)
                        .then(|| config.name.clone());
                    let tap = TapAdapter::open(&TapConfig { name })?;
                    let id = InterfaceId {
                        luid: tap.luid(),
                        index: tap.index(),
                    };
                    (Box::new(tap), id)
                }
                _ => {
                    let wintun = WintunAdapter::open(&WintunConfig {
                        name: config.name.clone(),
                        ..WintunConfig::default()
                    })?;
                    let id = InterfaceId {
                        luid: wintun.luid(),
                        index: wintun.index(),
                    };
                    (Box::new(wintun), id)
                }
            };
        // A TAP has its own MAC, which its frames carry; wintun emulates ours.
        let mac = match (adapter.mac(), config.mac) {
            (Some(mac), _) => mac,
            (None, Some(mac)) => mac,
            (None, None) => state::load_or_create_mac(&state_dir).with_context(|| {
                format!("keeping our MAC in {} (or pass --mac)", state_dir.display())
            })?,
        };
        let (uplink, relay) = super::open_uplink(&config, mac)?;
        tracing::info!(
            adapter = adapter.name(),
            kind = config.adapter.word(),
            %mac,
            relay = %relay,
            "adapter open"
        );
        let options = super::engine_options(&config, mac, false);
        let client = windows::client_loop(
            uplink,
            adapter,
            interface,
            state_dir,
            options,
            super::status_printer(config.log_format),
        )
        .context("starting the client loop")?;
        super::run_engine(client)
    }
}

#[cfg(not(any(target_os = "linux", windows)))]
mod platform {
    use std::process::ExitCode;

    use lanparty_client::config::ClientConfig;

    pub(super) fn run(config: ClientConfig) -> anyhow::Result<ExitCode> {
        let _ = (
            config,
            super::status_printer,
            super::on_shutdown_signal::<fn()>,
        );
        anyhow::bail!("lanparty-client runs on Linux and Windows only")
    }
}
