//! The gateway's settings: command-line flags, an optional TOML file, a join link, and how they
//! combine into one [`GatewayConfig`].
//!
//! Precedence, first match wins, field by field: an explicit flag (or its environment variable),
//! the join link given on the command line, an explicit key in the config file, the join link in
//! the config file. Certificate trust is taken as a whole from the first source that names one
//! (`--pin` or `--relay-ca-cert`); without any, the relay's certificate is verified by name
//! against the system roots.
//!
//! The config file uses the flags' names as keys, in snake_case like the relay's file:
//!
//! ```toml
//! join_link = "lanparty://relay.example:4433/party?pin=…"
//! interface = "eth0"
//! secret = "correct horse battery"
//! name = "lan gateway"
//! log_format = "json"
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use lanparty_control::link::{self, JoinLink};
use lanparty_control::logging::LogFormat;
use lanparty_control::msg::{DisplayName, RoomCode, Secret};
use lanparty_datapath::quic::tls::{ClientTrust, Fingerprint};
use serde::Deserialize;

/// How long a silent relay takes to be declared gone unless configured otherwise: the QUIC idle
/// timeout. Keep-alives go out every 5 s, so only a dead relay or path is ever this silent.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// How the gateway reads the party LAN: which AF_PACKET RX ring layout.
///
/// `v2` (the default) hands every frame over as soon as the kernel has written it: the lowest
/// latency, one wake-up per frame at low rates. `v3` packs frames into blocks that the kernel
/// hands over when full or after 1 ms: fewer wake-ups and system calls on a busy LAN (tens of
/// thousands of frames per second), at the price of up to a millisecond of extra delay on every
/// LAN-to-room frame when the LAN is quiet. `v2` slots are 2 KiB, so it reads frames of up to
/// 1982 bytes whole (longer ones are counted as truncated and dropped): use `v3` on a LAN with
/// jumbo frames.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RxRingMode {
    /// TPACKET_V2: per-frame hand-over, lowest latency.
    #[default]
    V2,
    /// TPACKET_V3: block batching for high-rate LANs.
    V3,
}

/// The softlan gateway: bridges the party LAN's network interface into a relay room.
///
/// Give either a join link or `--relay`, `--room` and a secret, plus `--interface`.
#[derive(Debug, Default, Clone, Parser)]
#[command(name = "lanparty-gateway", version, about, long_about = None)]
pub struct Cli {
    /// Join link printed by the relay (`lanparty://HOST:PORT/ROOM?pin=…&secret=…`).
    #[arg(value_name = "JOIN-LINK")]
    pub join_link: Option<String>,
    /// Relay address as HOST:PORT (port 4433 when left out).
    #[arg(long, value_name = "HOST:PORT")]
    pub relay: Option<String>,
    /// Room code.
    #[arg(long)]
    pub room: Option<String>,
    /// Room secret (prefer the LANPARTY_SECRET environment variable).
    #[arg(long, env = "LANPARTY_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// The party LAN interface to bridge, e.g. eth0.
    #[arg(long, value_name = "IFNAME")]
    pub interface: Option<String>,
    /// Trust only the relay certificate with this SHA-256 fingerprint (64 hex digits).
    #[arg(long, value_name = "SHA256", conflicts_with = "relay_ca_cert")]
    pub pin: Option<String>,
    /// Verify the relay's certificate by name against the CA certificates in this PEM file.
    #[arg(long, value_name = "FILE")]
    pub relay_ca_cert: Option<PathBuf>,
    /// Operator token the relay may require before it admits a gateway.
    #[arg(long, env = "LANPARTY_GATEWAY_TOKEN", hide_env_values = true)]
    pub gateway_token: Option<String>,
    /// Name shown to players and in the relay's status (default: the host name).
    #[arg(long)]
    pub name: Option<String>,
    /// TOML file holding any of these settings; flags win over it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Log line format: human or json.
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Seconds of silence after which the relay is considered gone and the gateway reconnects
    /// (default 30).
    #[arg(long, value_name = "SECONDS")]
    pub idle_timeout: Option<u64>,
    /// LAN receive ring: v2 hands each frame over at once (lowest latency, the default), v3
    /// batches frames in blocks retired after 1 ms (fewer wake-ups on a high-rate LAN).
    #[arg(long, value_name = "MODE")]
    pub rx_ring: Option<RxRingMode>,
}

/// The config file: the flags' settings under the flags' names in snake_case.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// As the `JOIN-LINK` argument.
    pub join_link: Option<String>,
    /// As `--relay`.
    pub relay: Option<String>,
    /// As `--room`.
    pub room: Option<String>,
    /// As `--secret`.
    pub secret: Option<String>,
    /// As `--interface`.
    pub interface: Option<String>,
    /// As `--pin`.
    pub pin: Option<String>,
    /// As `--relay-ca-cert`.
    pub relay_ca_cert: Option<PathBuf>,
    /// As `--gateway-token`.
    pub gateway_token: Option<String>,
    /// As `--name`.
    pub name: Option<String>,
    /// As `--log-format`.
    pub log_format: Option<LogFormat>,
    /// As `--idle-timeout`.
    pub idle_timeout: Option<u64>,
    /// As `--rx-ring` (`"v2"` or `"v3"`).
    pub rx_ring: Option<RxRingMode>,
}

impl FileConfig {
    /// Reads and parses a config file.
    ///
    /// # Errors
    ///
    /// [`ConfigError::File`] when it cannot be read or parsed.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let file_err = |reason: String| ConfigError::File {
            path: path.to_owned(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| file_err(e.to_string()))?;
        toml::from_str(&text).map_err(|e| file_err(e.message().to_owned()))
    }
}

/// Why the settings do not make a usable gateway. Every message says what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// No relay address anywhere.
    #[error("no relay given: pass a join link (lanparty://…) or --relay HOST:PORT")]
    NoRelay,
    /// No room code anywhere.
    #[error("no room given: pass --room ROOM or a join link that names a room")]
    NoRoom,
    /// No secret anywhere.
    #[error(
        "no room secret given: set LANPARTY_SECRET, pass --secret, or use a join link with a secret"
    )]
    NoSecret,
    /// No interface anywhere.
    #[error(
        "no interface given: pass --interface IFNAME, the NIC on the party LAN (list them with \
         `ip link`)"
    )]
    NoInterface,
    /// A value does not parse or breaks a rule.
    #[error("bad {what}: {reason}")]
    Invalid {
        /// Which setting.
        what: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The config file cannot be read or parsed.
    #[error("config file {}: {reason}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
}

/// Everything the gateway needs, checked.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// The party LAN interface.
    pub interface: String,
    /// Relay host (name or address, IPv6 without brackets).
    pub relay_host: String,
    /// Relay UDP port.
    pub relay_port: u16,
    /// Room to join.
    pub room: RoomCode,
    /// Room secret.
    pub secret: Secret,
    /// How to trust the relay's certificate.
    pub trust: ClientTrust,
    /// Operator token for relays that require one from gateways.
    pub gateway_token: Option<Secret>,
    /// Name shown to the room.
    pub name: DisplayName,
    /// Log line format.
    pub log_format: LogFormat,
    /// QUIC idle timeout: how long a silent relay takes to be declared gone.
    pub idle_timeout: Duration,
    /// The LAN receive ring layout.
    pub rx_ring: RxRingMode,
}

/// One source of settings, after parsing its join link.
#[derive(Debug, Default)]
struct Layer {
    relay: Option<(String, u16)>,
    room: Option<String>,
    secret: Option<String>,
    interface: Option<String>,
    trust: Option<ClientTrust>,
    gateway_token: Option<String>,
    name: Option<String>,
    log_format: Option<LogFormat>,
    idle_timeout: Option<u64>,
    rx_ring: Option<RxRingMode>,
}

fn invalid(what: &'static str) -> impl Fn(String) -> ConfigError {
    move |reason| ConfigError::Invalid { what, reason }
}

fn parse_link(text: &str) -> Result<Layer, ConfigError> {
    let link: JoinLink = text
        .parse()
        .map_err(|e: link::LinkError| invalid("join link")(e.to_string()))?;
    Ok(Layer {
        relay: Some((link.host, link.port)),
        room: link.room,
        secret: link.secret,
        trust: link.pin.map(|p| ClientTrust::Pinned(Fingerprint(p))),
        ..Layer::default()
    })
}

fn parse_relay(text: &str) -> Result<(String, u16), ConfigError> {
    link::split_host_port(text).map_err(|e| invalid("--relay")(e.to_string()))
}

fn parse_trust(pin: Option<&str>, ca: Option<&Path>) -> Result<Option<ClientTrust>, ConfigError> {
    match (pin, ca) {
        (Some(_), Some(_)) => Err(invalid("certificate trust")(
            "give either a pin or a relay CA certificate, not both".to_owned(),
        )),
        (Some(pin), None) => pin
            .parse::<Fingerprint>()
            .map(|f| Some(ClientTrust::Pinned(f)))
            .map_err(|e| invalid("--pin")(e.to_string())),
        (None, Some(ca)) => Ok(Some(ClientTrust::CaFile(ca.to_owned()))),
        (None, None) => Ok(None),
    }
}

impl GatewayConfig {
    /// Combines the command line and the config file (see the [module docs](self) for the
    /// precedence) and checks every value.
    ///
    /// # Errors
    ///
    /// The first [`ConfigError`] found.
    pub fn resolve(cli: &Cli, file: &FileConfig) -> Result<Self, ConfigError> {
        let cli_flags = Layer {
            relay: cli.relay.as_deref().map(parse_relay).transpose()?,
            room: cli.room.clone(),
            secret: cli.secret.clone(),
            interface: cli.interface.clone(),
            trust: parse_trust(cli.pin.as_deref(), cli.relay_ca_cert.as_deref())?,
            gateway_token: cli.gateway_token.clone(),
            name: cli.name.clone(),
            log_format: cli.log_format,
            idle_timeout: cli.idle_timeout,
            rx_ring: cli.rx_ring,
        };
        let cli_link = cli.join_link.as_deref().map(parse_link).transpose()?;
        let file_flags = Layer {
            relay: file.relay.as_deref().map(parse_relay).transpose()?,
            room: file.room.clone(),
            secret: file.secret.clone(),
            interface: file.interface.clone(),
            trust: parse_trust(file.pin.as_deref(), file.relay_ca_cert.as_deref())?,
            gateway_token: file.gateway_token.clone(),
            name: file.name.clone(),
            log_format: file.log_format,
            idle_timeout: file.idle_timeout,
            rx_ring: file.rx_ring,
        };
        let file_link = file.join_link.as_deref().map(parse_link).transpose()?;
        let layers: Vec<Layer> = [Some(cli_flags), cli_link, Some(file_flags), file_link]
            .into_iter()
            .flatten()
            .collect();
        macro_rules! first {
            ($field:ident) => {
                layers.iter().find_map(|l| l.$field.clone())
            };
        }

        let (relay_host, relay_port) = first!(relay).ok_or(ConfigError::NoRelay)?;
        let room = first!(room).ok_or(ConfigError::NoRoom)?;
        let room = RoomCode::new(&room).map_err(|e| invalid("room code")(e.to_string()))?;
        let secret = first!(secret).ok_or(ConfigError::NoSecret)?;
        let secret = Secret::new(&secret).map_err(|e| invalid("room secret")(e.to_string()))?;
        let interface = first!(interface).ok_or(ConfigError::NoInterface)?;
        if interface.is_empty() || interface.len() > 15 || interface.contains(['/', ' ', '\0']) {
            return Err(invalid("--interface")(format!(
                "{interface:?} is not an interface name (1 to 15 bytes, see `ip link`)"
            )));
        }
        let gateway_token = first!(gateway_token)
            .map(|t| Secret::new(&t))
            .transpose()
            .map_err(|e| invalid("gateway token")(e.to_string()))?;
        let name = match first!(name) {
            Some(name) => DisplayName::new(&name).map_err(|e| invalid("--name")(e.to_string()))?,
            None => default_name(),
        };
        let idle_secs = first!(idle_timeout).unwrap_or(DEFAULT_IDLE_TIMEOUT.as_secs());
        if !(1..=600).contains(&idle_secs) {
            return Err(invalid("--idle-timeout")("use 1 to 600 seconds".to_owned()));
        }
        Ok(Self {
            interface,
            relay_host,
            relay_port,
            room,
            secret,
            trust: first!(trust).unwrap_or(ClientTrust::SystemRoots),
            gateway_token,
            name,
            log_format: first!(log_format).unwrap_or_default(),
            idle_timeout: Duration::from_secs(idle_secs),
            rx_ring: first!(rx_ring).unwrap_or_default(),
        })
    }

    /// The relay as `host:port` (IPv6 in brackets), for status lines and name resolution.
    pub fn relay_display(&self) -> String {
        if self.relay_host.contains(':') {
            format!("[{}]:{}", self.relay_host, self.relay_port)
        } else {
            format!("{}:{}", self.relay_host, self.relay_port)
        }
    }
}

/// The host name when it makes a valid display name, else "gateway".
fn default_name() -> DisplayName {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .and_then(|h| DisplayName::new(h.trim()).ok())
        .unwrap_or_else(|| DisplayName::new("gateway").expect("a valid name"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PIN: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    fn cli(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("lanparty-gateway").chain(args.iter().copied()))
            .unwrap()
    }

    #[test]
    fn a_join_link_and_an_interface_are_enough() {
        let link = format!("lanparty://relay.example:4500/party?pin={PIN}&secret=s3cret-long");
        let c = cli(&[&link, "--interface", "eth0"]);
        let g = GatewayConfig::resolve(&c, &FileConfig::default()).unwrap();
        assert_eq!(
            (g.relay_host.as_str(), g.relay_port),
            ("relay.example", 4500)
        );
        assert_eq!(g.room.as_str(), "party");
        assert_eq!(g.secret.expose(), "s3cret-long");
        assert_eq!(g.interface, "eth0");
        assert!(matches!(g.trust, ClientTrust::Pinned(Fingerprint(f)) if f[1] == 0x11));
        assert_eq!(g.idle_timeout, DEFAULT_IDLE_TIMEOUT);
        assert_eq!(g.rx_ring, RxRingMode::V2, "lowest latency by default");
    }

    #[test]
    fn the_rx_ring_mode_comes_from_the_flag_or_the_file() {
        let link = format!("lanparty://relay.example/party?pin={PIN}&secret=s3cret-long");
        let file = FileConfig {
            interface: Some("eth0".into()),
            rx_ring: Some(RxRingMode::V3),
            ..FileConfig::default()
        };
        let g = GatewayConfig::resolve(&cli(&[&link]), &file).unwrap();
        assert_eq!(g.rx_ring, RxRingMode::V3);
        let g = GatewayConfig::resolve(&cli(&[&link, "--rx-ring", "v2"]), &file).unwrap();
        assert_eq!(g.rx_ring, RxRingMode::V2);
        assert!(Cli::try_parse_from(["lanparty-gateway", "--rx-ring", "v4"]).is_err());
        let parsed: FileConfig = toml::from_str("rx_ring = \"v3\"").unwrap();
        assert_eq!(parsed.rx_ring, Some(RxRingMode::V3));
    }

    #[test]
    fn flags_win_over_the_link_and_the_link_over_the_file() {
        let link = format!("lanparty://relay.example/party?pin={PIN}&secret=link-secret");
        let c = cli(&[&link, "--room", "other", "--relay-ca-cert", "/ca.pem"]);
        let file = FileConfig {
            interface: Some("eth1".into()),
            secret: Some("file-secret".into()),
            room: Some("fileroom".into()),
            name: Some("lan box".into()),
            ..FileConfig::default()
        };
        let g = GatewayConfig::resolve(&c, &file).unwrap();
        assert_eq!(g.room.as_str(), "other");
        assert_eq!(g.secret.expose(), "link-secret");
        assert_eq!(g.interface, "eth1");
        assert_eq!(g.name.as_str(), "lan box");
        assert!(matches!(g.trust, ClientTrust::CaFile(ref p) if p == Path::new("/ca.pem")));
        assert_eq!(g.relay_port, link::DEFAULT_PORT);
    }

    #[test]
    fn without_pin_or_ca_the_system_roots_verify_by_name() {
        let c = cli(&[
            "--relay",
            "relay.example:443",
            "--room",
            "party",
            "--secret",
            "long enough",
            "--interface",
            "eth0",
        ]);
        let g = GatewayConfig::resolve(&c, &FileConfig::default()).unwrap();
        assert!(matches!(g.trust, ClientTrust::SystemRoots));
        assert_eq!(g.relay_display(), "relay.example:443");
    }

    #[test]
    fn missing_pieces_say_what_to_pass() {
        let none = FileConfig::default();
        let err = |args: &[&str]| GatewayConfig::resolve(&cli(args), &none).unwrap_err();
        assert_eq!(err(&[]), ConfigError::NoRelay);
        assert_eq!(err(&["--relay", "r:1"]), ConfigError::NoRoom);
        assert_eq!(
            err(&["--relay", "r:1", "--room", "party"]),
            ConfigError::NoSecret
        );
        let e = err(&[
            "--relay",
            "r:1",
            "--room",
            "party",
            "--secret",
            "long enough",
        ]);
        assert_eq!(e, ConfigError::NoInterface);
        assert!(e.to_string().contains("--interface"));
        let e = err(&["lanparty://h?pin=abc"]);
        assert!(e.to_string().starts_with("bad join link"), "{e}");
        let e = err(&["--relay", "r:1", "--room", "x", "--secret", "long enough"]);
        assert!(e.to_string().starts_with("bad room code"), "{e}");
    }

    #[test]
    fn the_config_file_uses_the_flag_names_and_refuses_unknown_keys() {
        let dir = std::env::temp_dir().join(format!("lpgw-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("gateway.toml");
        std::fs::write(
            &path,
            format!(
                "join_link = \"lanparty://198.18.0.1:4433/party?pin={PIN}\"\n\
                 interface = \"eth0\"\nsecret = \"from the file\"\nlog_format = \"json\"\n\
                 idle_timeout = 5\n"
            ),
        )
        .unwrap();
        let file = FileConfig::load(&path).unwrap();
        let g = GatewayConfig::resolve(&Cli::default(), &file).unwrap();
        assert_eq!(g.relay_host, "198.18.0.1");
        assert_eq!(g.secret.expose(), "from the file");
        assert_eq!(g.log_format, LogFormat::Json);
        assert_eq!(g.idle_timeout, Duration::from_secs(5));

        std::fs::write(&path, "interfce = \"eth0\"\n").unwrap();
        let e = FileConfig::load(&path).unwrap_err();
        assert!(e.to_string().contains("interfce"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
