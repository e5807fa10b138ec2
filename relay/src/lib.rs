//! `lanparty-relay`: the public hub that admits LAN-party peers into rooms over QUIC and
//! switches their Ethernet frames, carried as QUIC DATAGRAMs, between the members of a room.
//!
//! # Threads
//!
//! - The **datapath thread** owns the [`Runner`] (the sans-IO QUIC driver plus the UDP
//!   backend, io_uring when the kernel has it) and one switch [`Room`](lanparty_datapath::switch::Room) per room.
//!   It forwards every DATAGRAM of an admitted peer by its room's verdict, sending the very
//!   same `Bytes` to every egress connection; datagrams from connections not admitted yet are
//!   dropped and counted.
//! - The **control thread** (a tokio current-thread runtime started with
//!   [`runtime::spawn`]) owns the admission policy
//!   ([`Rooms`](lanparty_control::admission::Rooms)), a control-stream decoder per connection,
//!   the hello timer, periodic stats to peers, signals, and the metrics/status HTTP server.
//! - Between them, bounded channels: events up (connected, control bytes, closed, stats
//!   snapshots) and commands down (write control bytes, admit into a room, remove, close,
//!   request stats, shut down); every command wakes the datapath through the backend's waker.
//!
//! # Embedding
//!
//! [`start`] runs a relay on its two threads and returns a [`RelayHandle`] (address,
//! fingerprint, join link, status, shutdown). The binary is a thin shell around it
//! ([`cli::main`]); tests and the lab start relays on `127.0.0.1:0` the same way.

mod bridge;
pub mod cli;
mod config;
mod control;
mod datapath;
mod metrics;
pub mod status;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context as _;
use lanparty_control::admission;
use lanparty_control::link::JoinLink;
use lanparty_control::runtime::{self, Capacity, ControlThread};
use lanparty_datapath::io::open_best_with;
use lanparty_datapath::quic::tls::{self, Fingerprint, ServerIdentity};
use lanparty_datapath::quic::{Driver, DriverConfig};
use lanparty_datapath::runner::Runner;
use lanparty_datapath::switch::RoomConfig;
use tokio::sync::{mpsc, oneshot};

pub use status::StatusReport;

/// QUIC application close codes the relay uses (the reason text says more).
pub mod close {
    /// The hello was rejected; the reason is the reject's `code: reason`.
    pub const REJECTED: u32 = 0x4c50_0010;
    /// The peer broke the control protocol (bad frame, unexpected message).
    pub const PROTOCOL: u32 = 0x4c50_0011;
    /// The relay is shutting down.
    pub const SHUTDOWN: u32 = 0x4c50_0012;
    /// A reconnect of the same peer replaced this connection.
    pub const REPLACED: u32 = 0x4c50_0013;
    /// The peer left (disconnect message or finished control stream).
    pub const LEFT: u32 = 0x4c50_0014;
    /// The relay could not keep up with this connection's control traffic.
    pub const OVERLOADED: u32 = 0x4c50_0015;
    /// The relay's own views disagreed (a bug); the peer may reconnect.
    pub const INTERNAL: u32 = 0x4c50_0016;
}

/// Where the relay's certificate comes from.
#[derive(Debug, Clone)]
pub enum Identity {
    /// A PEM chain and key (production, verified by name by peers).
    PemFiles {
        /// Certificate chain, end-entity first.
        cert: PathBuf,
        /// Private key.
        key: PathBuf,
    },
    /// A self-signed certificate generated once and kept in this directory (peers pin it).
    StateDir(PathBuf),
}

/// Everything a relay runs with.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// UDP address to listen on.
    pub listen: SocketAddr,
    /// The certificate.
    pub identity: Identity,
    /// Host name for the join link (and the generated certificate); default: the listen
    /// address, or the machine's host name when that is unspecified.
    pub public_host: Option<String>,
    /// Admission limits and the gateway token.
    pub admission: admission::Config,
    /// Switch settings of every room (`max_frame_len` comes from admission per room).
    pub room: RoomConfig,
    /// Serve `/metrics` and `/status` over HTTP on this address.
    pub metrics: Option<SocketAddr>,
    /// How long a connection may take to send its hello (5 s).
    pub hello_timeout: Duration,
    /// How often each peer gets a stats message with its counters (5 s).
    pub stats_interval: Duration,
    /// Shut down on SIGINT/SIGTERM (the binary sets this; embedded relays leave it off).
    pub handle_signals: bool,
    /// Kernel send and receive buffer of the UDP socket, in bytes ([`DEFAULT_SOCKET_BUFFER`]).
    /// Bigger absorbs longer bursts; smaller keeps a bulk flow from queueing milliseconds in
    /// front of everyone's latency-sensitive packets when the relay's CPU is the bottleneck.
    pub socket_buffer: usize,
}

/// The relay's default UDP socket buffer (256 KiB, chosen by `lanparty-perf bench relay`: the
/// smallest of 256 KiB, 1 MiB and 4 MiB meets the 2 ms p99 added-latency target under a
/// saturating bulk flow, and it also carries the most bulk throughput; see perf/RESULTS.md).
pub const DEFAULT_SOCKET_BUFFER: usize = 256 << 10;

/// The smallest `socket_buffer` accepted: one full GSO/GRO batch.
pub const MIN_SOCKET_BUFFER: usize = 64 << 10;

impl RelayConfig {
    /// A relay on `listen` with a self-signed certificate kept in `state_dir` and default
    /// limits.
    pub fn new(listen: SocketAddr, state_dir: impl Into<PathBuf>) -> Self {
        Self {
            listen,
            identity: Identity::StateDir(state_dir.into()),
            public_host: None,
            admission: admission::Config::default(),
            room: RoomConfig::default(),
            metrics: None,
            hello_timeout: Duration::from_secs(5),
            stats_interval: Duration::from_secs(5),
            handle_signals: false,
            socket_buffer: DEFAULT_SOCKET_BUFFER,
        }
    }
}

/// A running relay. Dropping it does not stop the relay; call [`RelayHandle::shutdown`].
#[derive(Debug)]
pub struct RelayHandle {
    local_addr: SocketAddr,
    fingerprint: Fingerprint,
    join_link: String,
    metrics_addr: Option<SocketAddr>,
    backend: String,
    requests: mpsc::Sender<control::Request>,
    datapath: JoinHandle<std::io::Result<()>>,
    control: ControlThread<()>,
}

impl RelayHandle {
    /// The UDP address the relay listens on (the real port when started on port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// SHA-256 fingerprint of the relay's certificate.
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    /// The join link a gateway or client can paste (`lanparty://HOST:PORT?pin=…`).
    pub fn join_link(&self) -> &str {
        &self.join_link
    }

    /// Where `/metrics` and `/status` are served, when enabled.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// The UDP backend in use.
    pub fn backend(&self) -> &str {
        &self.backend
    }

    /// A fresh status report (blocks until the datapath answered); `None` once the relay has
    /// stopped. Call from outside any async runtime.
    pub fn status(&self) -> Option<StatusReport> {
        let (tx, rx) = oneshot::channel();
        self.requests
            .blocking_send(control::Request::Status(tx))
            .ok()?;
        rx.blocking_recv().ok()
    }

    /// True while both threads run.
    pub fn is_running(&self) -> bool {
        !self.datapath.is_finished() && !self.control.is_finished()
    }

    /// Asks the relay to stop: every peer gets a disconnect message with `reason` and a QUIC
    /// close. Returns at once; [`Self::wait`] joins the threads.
    pub fn request_shutdown(&self, reason: &str) {
        let _ = self
            .requests
            .try_send(control::Request::Shutdown(reason.to_owned()));
    }

    /// Stops the relay (see [`Self::request_shutdown`]) and waits for both threads.
    ///
    /// # Errors
    ///
    /// When a thread failed or panicked.
    pub fn shutdown(self, reason: &str) -> anyhow::Result<()> {
        self.request_shutdown(reason);
        self.wait()
    }

    /// Waits until the relay stops (after a shutdown request or a signal).
    ///
    /// # Errors
    ///
    /// When a thread failed or panicked.
    pub fn wait(self) -> anyhow::Result<()> {
        drop(self.requests);
        let datapath = self
            .datapath
            .join()
            .map_err(|_| anyhow::anyhow!("the datapath thread panicked"))?;
        let control = self
            .control
            .join()
            .map_err(|_| anyhow::anyhow!("the control thread panicked"))?;
        datapath.context("datapath thread")?;
        control.context("control thread")?;
        Ok(())
    }
}

/// Loads the certificate, binds the UDP socket (and the metrics socket), and starts the
/// datapath and control threads.
///
/// # Errors
///
/// A one-line reason naming the file or address at fault: unreadable or mismatched
/// certificate/key, a state directory that cannot be written, an address in use.
pub fn start(config: RelayConfig) -> anyhow::Result<RelayHandle> {
    let public_host = config
        .public_host
        .clone()
        .unwrap_or_else(|| default_host(config.listen.ip()));
    let identity = match &config.identity {
        // TlsError names the file and carries its cause in its text; one line, no chain.
        Identity::PemFiles { cert, key } => {
            ServerIdentity::from_pem_files(cert, key).map_err(|e| anyhow::anyhow!("{e}"))?
        }
        Identity::StateDir(dir) => {
            let mut names = vec![public_host.clone(), "lanparty-relay".to_owned()];
            names.dedup();
            ServerIdentity::load_or_generate(dir, &names).map_err(|e| anyhow::anyhow!("{e}"))?
        }
    };
    let fingerprint = identity.fingerprint();
    let reset_key = identity.reset_key();
    let crypto = tls::server_crypto(identity).map_err(|e| match &config.identity {
        Identity::PemFiles { cert, key } => anyhow::anyhow!(
            "{} / {}: certificate and key do not fit together: {e}",
            cert.display(),
            key.display()
        ),
        Identity::StateDir(dir) => anyhow::anyhow!("{}: {e}", dir.display()),
    })?;
    let backend = open_best_with(config.listen, config.socket_buffer)
        .with_context(|| format!("listening on UDP {}", config.listen))?;
    let mut driver_config = DriverConfig::default();
    driver_config.max_connections = config.admission.max_connections.max(1);
    // Same key after a restart: peers of the old process get a stateless reset and reconnect
    // at once instead of waiting out their idle timeout.
    driver_config.reset_key = Some(reset_key);
    // The relay keeps the default window bound (`TransportSettings::window_bound`): towards a
    // player behind a slow downlink, Cubic alone would fill the ISP's buffer in front of the
    // player's game traffic (docs/ARCHITECTURE.md, "Later decisions").
    let driver = Driver::new(driver_config, Some(crypto));
    let runner = Runner::new(driver, backend);
    let local_addr = runner.local_addr();
    let backend_name = runner.backend_kind().to_string();
    let metrics_listener = match config.metrics {
        Some(addr) => {
            let listener = std::net::TcpListener::bind(addr)
                .with_context(|| format!("--metrics {addr}: cannot listen"))?;
            listener.set_nonblocking(true)?;
            Some(listener)
        }
        None => None,
    };
    let metrics_addr = match &metrics_listener {
        Some(l) => Some(l.local_addr()?),
        None => None,
    };
    let link = JoinLink {
        host: public_host,
        port: local_addr.port(),
        room: None,
        pin: Some(fingerprint.0),
        secret: None,
    };
    let settings = control::Settings {
        admission: config.admission.clone(),
        hello_timeout: config.hello_timeout,
        stats_interval: config.stats_interval,
        handle_signals: config.handle_signals,
        listen: local_addr.to_string(),
        fingerprint: fingerprint.to_string(),
    };
    let (request_tx, request_rx) = mpsc::channel(64);
    let waker = runner.waker();
    let task_tx = request_tx.clone();
    let (side, control) = runtime::spawn(
        "relay-control",
        Capacity::default(),
        move || waker.wake(),
        move |side| control::run(side, request_rx, task_tx, settings, metrics_listener),
    )
    .context("starting the control thread")?;
    let room_config = config.room.clone();
    let datapath = std::thread::Builder::new()
        .name("relay-datapath".to_owned())
        .spawn(move || datapath::Datapath::new(runner, side, room_config).run())
        .context("starting the datapath thread")?;
    Ok(RelayHandle {
        local_addr,
        fingerprint,
        join_link: link.to_string(),
        metrics_addr,
        backend: backend_name,
        requests: request_tx,
        datapath,
        control,
    })
}

/// The host a join link names when `--public-host` is not given.
fn default_host(ip: IpAddr) -> String {
    if !ip.is_unspecified() {
        return ip.to_canonical().to_string();
    }
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}
