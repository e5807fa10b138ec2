//! The `lanparty-relay` command line: flags merged over an optional TOML file, the state
//! directory rules, the startup banner, and the `status` subcommand.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use lanparty_control::admission;
use lanparty_control::logging;
use lanparty_control::msg::Secret;

use crate::config::{FileConfig, LogFormat, check_socket_buffer, parse_listen};
use crate::status::StatusReport;
use crate::{Identity, RelayConfig};

/// Where `lanparty-relay status` looks when `--metrics` is not given.
pub const DEFAULT_METRICS: &str = "127.0.0.1:9464";

/// The softlan relay: admits LAN-party peers into rooms over QUIC and switches their Ethernet
/// frames between them.
#[derive(Debug, Parser)]
#[command(name = "lanparty-relay", version, about, long_about = None)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// TOML file with any of the settings below (flags win over the file).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// UDP address to listen on (`0.0.0.0:4433`, `[::]:443`) or just a port (`443/udp`)
    /// [default: [::]:4433, dual stack].
    #[arg(long)]
    listen: Option<String>,
    /// PEM certificate chain; without it a self-signed certificate is kept in --state-dir.
    #[arg(long, requires = "key")]
    cert: Option<PathBuf>,
    /// PEM private key for --cert.
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,
    /// Directory for the generated certificate [default: $STATE_DIRECTORY, else
    /// /var/lib/lanparty-relay as root, else $XDG_STATE_HOME/lanparty-relay or
    /// ~/.local/state/lanparty-relay].
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Host name or address printed in the join link (and put in a generated certificate).
    #[arg(long)]
    public_host: Option<String>,
    /// Serve Prometheus metrics (/metrics) and a JSON status (/status) on this TCP address.
    #[arg(long)]
    metrics: Option<SocketAddr>,
    /// Operator token a gateway must present to open a gateway (8 to 128 bytes).
    #[arg(long, env = "LANPARTY_GATEWAY_TOKEN", hide_env_values = true)]
    gateway_token: Option<String>,
    /// Most rooms at once [default: 1024].
    #[arg(long)]
    max_rooms: Option<usize>,
    /// Most members of one room, gateway included [default: 32, at most 64].
    #[arg(long)]
    max_peers_per_room: Option<usize>,
    /// Most connections from one source address [default: 16].
    #[arg(long)]
    max_connections_per_ip: Option<usize>,
    /// Kernel send and receive buffer of the UDP socket in bytes [default: 262144]. Smaller
    /// keeps a bulk flow from queueing latency in front of everyone else's packets when the
    /// relay's CPU is saturated; larger absorbs longer bursts (docs/OPERATIONS.md).
    #[arg(long, value_name = "BYTES")]
    socket_buffer: Option<usize>,
    /// Log line format.
    #[arg(long, value_enum)]
    log_format: Option<LogFormat>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the rooms and peers of a running relay (from its --metrics endpoint).
    Status {
        /// The relay's --metrics address.
        #[arg(long, default_value = DEFAULT_METRICS)]
        metrics: SocketAddr,
        /// Print the raw JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// Runs the program; the binary's `main` calls this.
pub fn main() -> ExitCode {
    let args = Args::parse();
    let result = match args.command {
        Some(Command::Status { metrics, json }) => status_command(metrics, json),
        None => serve(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lanparty-relay: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(args: Args) -> anyhow::Result<()> {
    let file = match &args.config {
        Some(path) => FileConfig::load(path)?,
        None => FileConfig::default(),
    };
    let log_format = args.log_format.or(file.log_format).unwrap_or_default();
    logging::init(match log_format {
        LogFormat::Human => logging::LogFormat::Human,
        LogFormat::Json => logging::LogFormat::Json,
    });
    let config = merge(args, file)?;
    let handle = crate::start(config)?;
    // The banner goes to stdout so that scripts can pick the link up; logs go to stderr.
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "lanparty-relay listening on udp {}",
        handle.local_addr()
    )?;
    writeln!(
        out,
        "certificate fingerprint (sha-256): {}",
        handle.fingerprint()
    )?;
    writeln!(out, "join link: {}", handle.join_link())?;
    if let Some(addr) = handle.metrics_addr() {
        writeln!(
            out,
            "metrics: http://{addr}/metrics  status: http://{addr}/status"
        )?;
    }
    out.flush()?;
    drop(out);
    tracing::info!(
        listen = %handle.local_addr(),
        backend = handle.backend(),
        link = handle.join_link(),
        "relay started"
    );
    handle.wait()?;
    tracing::info!("relay stopped");
    Ok(())
}

/// Flags over file over defaults.
fn merge(args: Args, file: FileConfig) -> anyhow::Result<RelayConfig> {
    let listen = match args.listen.as_deref().or(file.listen.as_deref()) {
        Some(text) => parse_listen(text)?,
        None => parse_listen(&format!("[::]:{}", crate::config::DEFAULT_PORT))?,
    };
    let identity = match (args.cert.or(file.cert), args.key.or(file.key)) {
        (Some(cert), Some(key)) => Identity::PemFiles { cert, key },
        (Some(_), None) => bail!("--cert needs --key"),
        (None, Some(_)) => bail!("--key needs --cert"),
        (None, None) => Identity::StateDir(
            args.state_dir
                .or(file.state_dir)
                .map_or_else(default_state_dir, Ok)?,
        ),
    };
    let mut config = RelayConfig::new(listen, PathBuf::new());
    config.identity = identity;
    config.public_host = args.public_host.or(file.public_host);
    config.metrics = args.metrics.or(file.metrics);
    config.handle_signals = true;
    if let Some(bytes) = args.socket_buffer.or(file.socket_buffer) {
        config.socket_buffer = check_socket_buffer(bytes)?;
    }
    let adm = &mut config.admission;
    if let Some(token) = args.gateway_token.or(file.gateway_token) {
        // The error names the rule, never the token.
        let token = Secret::new(&token).map_err(|e| anyhow::anyhow!("--gateway-token: {e}"))?;
        adm.gateway_token = Some(token);
    }
    if let Some(n) = args.max_rooms.or(file.max_rooms) {
        adm.max_rooms = n;
    }
    if let Some(n) = args.max_peers_per_room.or(file.max_peers_per_room) {
        adm.max_peers_per_room = n;
    }
    if let Some(n) = args.max_connections_per_ip.or(file.max_connections_per_ip) {
        adm.max_connections_per_ip = n;
    }
    let _: &admission::Config = adm;
    Ok(config)
}

/// The state directory when `--state-dir` is not given: systemd's `$STATE_DIRECTORY` (the
/// first entry), `/var/lib/lanparty-relay` as root, else the XDG state directory.
fn default_state_dir() -> anyhow::Result<PathBuf> {
    state_dir_from(|name| std::env::var_os(name), is_root())
}

fn state_dir_from(
    env: impl Fn(&str) -> Option<std::ffi::OsString>,
    root: bool,
) -> anyhow::Result<PathBuf> {
    let var = |name: &str| env(name).filter(|v| !v.is_empty());
    if let Some(dir) = var("STATE_DIRECTORY") {
        let dir = dir
            .to_string_lossy()
            .split(':')
            .next()
            .unwrap_or("")
            .to_owned();
        if !dir.is_empty() {
            return Ok(PathBuf::from(dir));
        }
    }
    if root {
        return Ok(PathBuf::from("/var/lib/lanparty-relay"));
    }
    if let Some(dir) = var("XDG_STATE_HOME") {
        return Ok(PathBuf::from(dir).join("lanparty-relay"));
    }
    match var("HOME") {
        Some(home) => Ok(PathBuf::from(home).join(".local/state/lanparty-relay")),
        None => bail!("no state directory: set --state-dir, $STATE_DIRECTORY or $HOME"),
    }
}

/// True when the process runs as root: `/proc/self` belongs to the effective user.
fn is_root() -> bool {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::MetadataExt as _;
        std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
    }
    #[cfg(not(target_os = "linux"))]
    {
        false
    }
}

/// Fetches `/status` from a relay's metrics address.
///
/// # Errors
///
/// When the relay cannot be reached or answers with something other than a status report.
pub fn fetch_status(addr: SocketAddr) -> anyhow::Result<StatusReport> {
    let body = http_get(addr, "/status")?;
    serde_json::from_str(&body).with_context(|| format!("http://{addr}/status: not a status"))
}

/// A minimal blocking `GET` (the relay's own server closes after one response).
///
/// # Errors
///
/// When the connection fails, times out or the answer is not `200 OK`.
pub fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    let timeout = Duration::from_secs(5);
    let mut stream = TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("connecting to the relay's metrics endpoint {addr}"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream
        .take(16 << 20)
        .read_to_string(&mut response)
        .with_context(|| format!("reading http://{addr}{path}"))?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .with_context(|| format!("http://{addr}{path}: malformed response"))?;
    let status = head.lines().next().unwrap_or("");
    if !status.contains(" 200 ") {
        bail!("http://{addr}{path}: {status}");
    }
    Ok(body.to_owned())
}

fn status_command(addr: SocketAddr, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", http_get(addr, "/status")?);
    } else {
        print!("{}", fetch_status(addr)?.to_table());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<std::ffi::OsString> + 'a {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| std::ffi::OsString::from(v))
        }
    }

    #[test]
    fn the_state_directory_follows_systemd_then_root_then_xdg_then_home() {
        let all = [
            ("STATE_DIRECTORY", "/var/lib/private/lanparty-relay:/other"),
            ("XDG_STATE_HOME", "/home/ann/.state"),
            ("HOME", "/home/ann"),
        ];
        let dir = |vars: &[(&str, &str)], root| state_dir_from(env(vars), root).unwrap();
        assert_eq!(
            dir(&all, true),
            PathBuf::from("/var/lib/private/lanparty-relay")
        );
        assert_eq!(
            dir(&all[1..], true),
            PathBuf::from("/var/lib/lanparty-relay")
        );
        assert_eq!(
            dir(&all[1..], false),
            PathBuf::from("/home/ann/.state/lanparty-relay")
        );
        assert_eq!(
            dir(&all[2..], false),
            PathBuf::from("/home/ann/.local/state/lanparty-relay")
        );
        assert!(state_dir_from(env(&[("HOME", "")]), false).is_err());
    }

    #[test]
    fn flags_win_over_the_file_and_the_token_is_checked() {
        let args = Args::parse_from([
            "lanparty-relay",
            "--listen",
            "443/udp",
            "--state-dir",
            "/tmp/lp",
            "--max-rooms",
            "3",
        ]);
        let file: FileConfig =
            toml::from_str("listen = \"0.0.0.0:1\"\nmax_rooms = 9\nmax_peers_per_room = 4\n")
                .unwrap();
        let config = merge(args, file).unwrap();
        assert_eq!(config.listen, "[::]:443".parse().unwrap());
        assert_eq!(config.admission.max_rooms, 3);
        assert_eq!(config.admission.max_peers_per_room, 4);
        assert!(config.handle_signals);

        let args = Args::parse_from(["lanparty-relay", "--gateway-token", "short"]);
        let err = merge(args, FileConfig::default()).unwrap_err().to_string();
        assert!(
            err.contains("--gateway-token") && !err.contains("short"),
            "{err}"
        );
    }

    #[test]
    fn socket_buffer_comes_from_the_flag_then_the_file_then_the_default() {
        let base = ["lanparty-relay", "--state-dir", "/tmp/lp"];
        let config = merge(Args::parse_from(base), FileConfig::default()).unwrap();
        assert_eq!(config.socket_buffer, crate::DEFAULT_SOCKET_BUFFER);

        let file = || toml::from_str::<FileConfig>("socket_buffer = 1048576\n").unwrap();
        let config = merge(Args::parse_from(base), file()).unwrap();
        assert_eq!(config.socket_buffer, 1 << 20);

        let flag = Args::parse_from(base.into_iter().chain(["--socket-buffer", "4194304"]));
        assert_eq!(merge(flag, file()).unwrap().socket_buffer, 4 << 20);

        let tiny = Args::parse_from(base.into_iter().chain(["--socket-buffer", "100"]));
        let err = merge(tiny, FileConfig::default()).unwrap_err().to_string();
        assert!(err.contains("--socket-buffer"), "{err}");
        assert!(Args::try_parse_from(base.into_iter().chain(["--socket-buffer", "1M"])).is_err());
    }
}
