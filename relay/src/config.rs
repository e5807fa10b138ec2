//! Relay configuration: command-line flags merged over an optional TOML file.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::Deserialize;

/// The default UDP port.
pub(crate) const DEFAULT_PORT: u16 = 4433;

/// Everything a config file may hold; every field is optional and flags win.
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileConfig {
    pub(crate) listen: Option<String>,
    pub(crate) cert: Option<PathBuf>,
    pub(crate) key: Option<PathBuf>,
    pub(crate) state_dir: Option<PathBuf>,
    pub(crate) metrics: Option<SocketAddr>,
    pub(crate) public_host: Option<String>,
    pub(crate) gateway_token: Option<String>,
    pub(crate) max_rooms: Option<usize>,
    pub(crate) max_peers_per_room: Option<usize>,
    pub(crate) max_connections_per_ip: Option<usize>,
    pub(crate) socket_buffer: Option<usize>,
    pub(crate) log_format: Option<LogFormat>,
}

/// Log output format.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub(crate) enum LogFormat {
    /// Human-readable lines.
    #[default]
    Human,
    /// One JSON object per line.
    Json,
}

impl FileConfig {
    /// Reads and parses a TOML config file.
    pub(crate) fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("parsing config file {}", path.display()))
    }
}

/// Parses `--listen`: a socket address (`0.0.0.0:4433`, `[::]:443`), a bare port (`443`) or a
/// port with the transport spelled out (`443/udp`). A bare port listens on all addresses.
pub(crate) fn parse_listen(text: &str) -> anyhow::Result<SocketAddr> {
    let text = text.trim();
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let port_text = match text.split_once('/') {
        Some((port, "udp")) => port,
        Some((_, proto)) => bail!("--listen {text:?}: softlan listens on UDP, not {proto:?}"),
        None => text,
    };
    let port: u16 = port_text.parse().with_context(|| {
        format!("--listen {text:?}: expected ADDRESS:PORT, [IPv6]:PORT, PORT or PORT/udp")
    })?;
    Ok(SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port))
}

/// Checks `--socket-buffer` / `socket_buffer`: at least one GSO batch
/// ([`crate::MIN_SOCKET_BUFFER`]), at most 1 GiB.
pub(crate) fn check_socket_buffer(bytes: usize) -> anyhow::Result<usize> {
    if !(crate::MIN_SOCKET_BUFFER..=1 << 30).contains(&bytes) {
        bail!(
            "--socket-buffer {bytes}: expected between {} and {} bytes",
            crate::MIN_SOCKET_BUFFER,
            1 << 30
        );
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_forms() {
        assert_eq!(
            parse_listen("0.0.0.0:4433").unwrap(),
            "0.0.0.0:4433".parse().unwrap()
        );
        assert_eq!(
            parse_listen("[::]:443").unwrap(),
            "[::]:443".parse().unwrap()
        );
        assert_eq!(
            parse_listen("443/udp").unwrap(),
            "[::]:443".parse().unwrap()
        );
        assert_eq!(parse_listen("8443").unwrap(), "[::]:8443".parse().unwrap());
        assert!(
            parse_listen("443/tcp")
                .unwrap_err()
                .to_string()
                .contains("UDP")
        );
        assert!(parse_listen("nonsense").is_err());
        assert!(parse_listen("70000/udp").is_err());
    }

    #[test]
    fn config_file_rejects_unknown_keys() {
        let err = toml::from_str::<FileConfig>("listen = \"443/udp\"\nlisten_port = 1\n");
        assert!(err.unwrap_err().to_string().contains("listen_port"));
        let cfg: FileConfig = toml::from_str("listen = \"443/udp\"\nmax_rooms = 5\n").unwrap();
        assert_eq!(cfg.max_rooms, Some(5));
    }

    #[test]
    fn config_file_sets_the_socket_buffer() {
        let cfg: FileConfig = toml::from_str("socket_buffer = 1048576\n").unwrap();
        assert_eq!(cfg.socket_buffer, Some(1 << 20));
        assert!(toml::from_str::<FileConfig>("socket_buffer = -1\n").is_err());
    }

    #[test]
    fn socket_buffer_bounds() {
        assert_eq!(check_socket_buffer(262_144).unwrap(), 262_144);
        assert!(
            check_socket_buffer(1000)
                .unwrap_err()
                .to_string()
                .contains("--socket-buffer")
        );
        assert!(check_socket_buffer(2 << 30).is_err());
    }
}
