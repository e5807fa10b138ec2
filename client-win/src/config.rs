//! The client's settings: command-line flags, an optional TOML file, the join link, resolved
//! into one checked [`ClientConfig`].
//!
//! Precedence, highest first: flags (and `LANPARTY_SECRET` for the secret), the TOML file given
//! with `--config`, the join link, built-in defaults. A join link may come from the command line
//! or from the file's `join_link` key; explicit `relay`, `room`, `secret` and `pin` values win
//! over the link's. Everything is validated here, so the loop never sees a bad room code, MAC or
//! address: errors are [`ConfigError`]s with messages a player can act on.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use clap::Parser;
use lanparty_control::link::{self, JoinLink};
use lanparty_control::logging::LogFormat;
use lanparty_control::msg::{DisplayName, RoomCode, Secret};
use lanparty_datapath::Mac;
use lanparty_datapath::quic::tls::{ClientTrust, Fingerprint};
use serde::Deserialize;

use crate::adapter::{AdapterKind, ParseAdapterKindError};

/// The Linux interface name used when `--name` is not given.
pub const DEFAULT_LINUX_NAME: &str = "lanparty0";
/// The Windows adapter name used when `--name` is not given (the wintun adapter's; with
/// `--adapter tap` it means "the first TAP adapter nobody has open").
pub const DEFAULT_WINDOWS_NAME: &str = crate::adapter::wintun::DEFAULT_NAME;

/// The softlan client: gives this machine a virtual adapter on a LAN-party room.
#[derive(Debug, Default, Clone, Parser)]
#[command(name = "lanparty-client", version, about, long_about = None)]
pub struct Args {
    /// Join link printed by the relay or the gateway
    /// (lanparty://HOST:PORT/ROOM?pin=...&secret=...).
    pub join_link: Option<String>,
    /// Relay address as HOST:PORT (port defaults to 4433).
    #[arg(long)]
    pub relay: Option<String>,
    /// Room code.
    #[arg(long)]
    pub room: Option<String>,
    /// Room secret (prefer the LANPARTY_SECRET environment variable: flags show in `ps`).
    #[arg(long, env = "LANPARTY_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// SHA-256 fingerprint of the relay's self-signed certificate (64 hex digits).
    #[arg(long)]
    pub pin: Option<String>,
    /// PEM file with the CA certificates that sign the relay's certificate.
    #[arg(long, value_name = "FILE")]
    pub relay_ca_cert: Option<PathBuf>,
    /// Adapter kind: tap or tun on Linux (default tap), tap or wintun on Windows (default
    /// wintun).
    #[arg(long)]
    pub adapter: Option<String>,
    /// Adapter (interface) name: lanparty0 on Linux, softlan for wintun; with tap on Windows,
    /// the first free TAP adapter unless named.
    #[arg(long)]
    pub name: Option<String>,
    /// Our MAC address; by default a random locally administered one, remembered in the state
    /// directory.
    #[arg(long)]
    pub mac: Option<String>,
    /// A static address as ADDR/PREFIX; by default the address comes from the party LAN's DHCP
    /// server.
    #[arg(long, value_name = "ADDR/PREFIX")]
    pub address: Option<String>,
    /// The name other players see.
    #[arg(long)]
    pub display_name: Option<String>,
    /// TOML file with any of these settings (flags win).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Log line format: human or json.
    #[arg(long)]
    pub log_format: Option<String>,
    /// Where the MAC and the Windows undo file are kept.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Linux: open the adapter without TCP offloads (one read per packet instead of one per
    /// 64 KB burst); for comparison and for kernels that mishandle them.
    #[arg(long)]
    pub no_offloads: bool,
}

/// The keys of the `--config` TOML file (all optional, same meaning as the flags).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct FileConfig {
    /// See [`Args::join_link`].
    pub join_link: Option<String>,
    /// See [`Args::relay`].
    pub relay: Option<String>,
    /// See [`Args::room`].
    pub room: Option<String>,
    /// See [`Args::secret`].
    pub secret: Option<String>,
    /// See [`Args::pin`].
    pub pin: Option<String>,
    /// See [`Args::relay_ca_cert`].
    pub relay_ca_cert: Option<PathBuf>,
    /// See [`Args::adapter`].
    pub adapter: Option<String>,
    /// See [`Args::name`].
    pub name: Option<String>,
    /// See [`Args::mac`].
    pub mac: Option<String>,
    /// See [`Args::address`].
    pub address: Option<String>,
    /// See [`Args::display_name`].
    pub display_name: Option<String>,
    /// See [`Args::log_format`].
    pub log_format: Option<String>,
    /// See [`Args::state_dir`].
    pub state_dir: Option<PathBuf>,
    /// `false` is [`Args::no_offloads`].
    pub offloads: Option<bool>,
}

impl FileConfig {
    /// Reads and parses a TOML file.
    ///
    /// # Errors
    ///
    /// [`ConfigError::File`] when it cannot be read or parsed.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::File {
            path: path.to_owned(),
            reason: e.to_string(),
        })
    }
}

/// How the adapter gets its IPv4 address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Addressing {
    /// From the party LAN's DHCP server, through the room.
    Dhcp,
    /// A fixed address and prefix.
    Static {
        /// Address.
        addr: Ipv4Addr,
        /// Prefix length.
        prefix: u8,
    },
}

impl std::str::FromStr for Addressing {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("dhcp") {
            return Ok(Self::Dhcp);
        }
        let bad = |why: &str| ConfigError::Invalid {
            field: "address",
            reason: format!("{s:?} {why}: write ADDR/PREFIX, for example 192.168.1.50/24"),
        };
        let (addr, prefix) = s.split_once('/').ok_or_else(|| bad("has no prefix"))?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| bad("is not an IPv4 address"))?;
        let prefix: u8 = prefix.parse().map_err(|_| bad("has a bad prefix"))?;
        if !(1..=32).contains(&prefix) || addr.is_unspecified() || addr.is_broadcast() {
            return Err(bad("is not a usable host address"));
        }
        Ok(Self::Static { addr, prefix })
    }
}

/// Why the settings are unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A required setting is missing.
    #[error("no {what} given: {hint}")]
    Missing {
        /// What is missing.
        what: &'static str,
        /// How to give it.
        hint: &'static str,
    },
    /// A setting does not parse or is out of range.
    #[error("bad {field}: {reason}")]
    Invalid {
        /// The setting.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// The join link does not parse.
    #[error("bad join link: {0}")]
    Link(#[from] link::LinkError),
    /// The config file cannot be read or parsed.
    #[error("config file {}: {reason}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// Everything the client needs, checked.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Relay host name or address.
    pub relay_host: String,
    /// Relay UDP port.
    pub relay_port: u16,
    /// The room.
    pub room: RoomCode,
    /// The room secret.
    pub secret: Secret,
    /// How the relay's certificate is checked.
    pub trust: ClientTrust,
    /// The adapter kind.
    pub adapter: AdapterKind,
    /// The adapter name.
    pub name: String,
    /// Our MAC, when given; else the state directory's.
    pub mac: Option<Mac>,
    /// DHCP or a static address.
    pub addressing: Addressing,
    /// The name other players see.
    pub display_name: DisplayName,
    /// Log line format.
    pub log_format: LogFormat,
    /// The state directory, when given; else the platform's default.
    pub state_dir: Option<PathBuf>,
    /// Linux: TUN/TAP TCP offloads (`IFF_VNET_HDR`), on unless turned off.
    pub offloads: bool,
}

impl ClientConfig {
    /// `HOST:PORT` as the player would write it (brackets around IPv6 hosts).
    pub fn relay_display(&self) -> String {
        if self.relay_host.contains(':') {
            format!("[{}]:{}", self.relay_host, self.relay_port)
        } else {
            format!("{}:{}", self.relay_host, self.relay_port)
        }
    }

    /// Reads the file named by `args.config` (if any) and resolves.
    ///
    /// # Errors
    ///
    /// See [`Self::resolve`] and [`FileConfig::load`].
    pub fn from_args(args: Args) -> Result<Self, ConfigError> {
        let file = match &args.config {
            Some(path) => FileConfig::load(path)?,
            None => FileConfig::default(),
        };
        Self::resolve(args, file)
    }

    /// Merges flags over the file over the join link over defaults, and checks everything.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming the first missing or bad setting.
    pub fn resolve(args: Args, file: FileConfig) -> Result<Self, ConfigError> {
        let link = match args.join_link.or(file.join_link) {
            Some(text) => Some(text.parse::<JoinLink>()?),
            None => None,
        };
        let (host, port) = match args.relay.or(file.relay) {
            Some(relay) => link::split_host_port(&relay)?,
            None => match &link {
                Some(l) => (l.host.clone(), l.port),
                None => {
                    return Err(ConfigError::Missing {
                        what: "relay",
                        hint: "pass a join link or --relay HOST:PORT",
                    });
                }
            },
        };
        let room = args
            .room
            .or(file.room)
            .or_else(|| link.as_ref().and_then(|l| l.room.clone()))
            .ok_or(ConfigError::Missing {
                what: "room",
                hint: "pass a join link that names the room or --room ROOM",
            })?;
        let room = RoomCode::new(&room).map_err(|e| ConfigError::Invalid {
            field: "room",
            reason: e.to_string(),
        })?;
        let secret = args
            .secret
            .or(file.secret)
            .or_else(|| link.as_ref().and_then(|l| l.secret.clone()))
            .ok_or(ConfigError::Missing {
                what: "room secret",
                hint: "set LANPARTY_SECRET or pass --secret",
            })?;
        let secret = Secret::new(&secret).map_err(|e| ConfigError::Invalid {
            field: "secret",
            reason: e.to_string(),
        })?;
        let pin = match args.pin.or(file.pin) {
            Some(text) => Some(link::parse_fingerprint(&text)?),
            None => link.as_ref().and_then(|l| l.pin),
        };
        let ca = args.relay_ca_cert.or(file.relay_ca_cert);
        let trust = match (pin, ca) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::Invalid {
                    field: "relay trust",
                    reason: "give either a certificate pin or --relay-ca-cert, not both".into(),
                });
            }
            (Some(pin), None) => ClientTrust::Pinned(Fingerprint(pin)),
            (None, Some(ca)) => ClientTrust::CaFile(ca),
            (None, None) => ClientTrust::SystemRoots,
        };
        let adapter = match args.adapter.or(file.adapter) {
            Some(text) => {
                text.parse()
                    .map_err(|e: ParseAdapterKindError| ConfigError::Invalid {
                        field: "adapter",
                        reason: e.to_string(),
                    })?
            }
            None => AdapterKind::default(),
        };
        let name = args.name.or(file.name).unwrap_or_else(|| {
            if cfg!(windows) {
                DEFAULT_WINDOWS_NAME.to_owned()
            } else {
                DEFAULT_LINUX_NAME.to_owned()
            }
        });
        if name.is_empty() || (!cfg!(windows) && name.len() > 15) || name.contains(['/', '\0']) {
            return Err(ConfigError::Invalid {
                field: "name",
                reason: format!("{name:?}: an interface name has 1 to 15 bytes and no '/'"),
            });
        }
        let mac = match args.mac.or(file.mac) {
            Some(text) => {
                let mac: Mac = text.parse().map_err(|_| ConfigError::Invalid {
                    field: "mac",
                    reason: format!("{text:?} is not a MAC address like 02:11:22:33:44:55"),
                })?;
                mac.validate_peer().map_err(|e| ConfigError::Invalid {
                    field: "mac",
                    reason: e.to_string(),
                })?;
                Some(mac)
            }
            None => None,
        };
        let addressing = match args.address.or(file.address) {
            Some(text) => text.parse()?,
            None => Addressing::Dhcp,
        };
        let display_name = match args.display_name.or(file.display_name) {
            Some(text) => DisplayName::new(&text).map_err(|e| ConfigError::Invalid {
                field: "display name",
                reason: e.to_string(),
            })?,
            None => default_display_name(),
        };
        let log_format = match args.log_format.or(file.log_format) {
            Some(text) => text.parse().map_err(|reason| ConfigError::Invalid {
                field: "log format",
                reason,
            })?,
            None => LogFormat::Human,
        };
        Ok(Self {
            relay_host: host,
            relay_port: port,
            room,
            secret,
            trust,
            adapter,
            name,
            mac,
            addressing,
            display_name,
            log_format,
            state_dir: args.state_dir.or(file.state_dir),
            offloads: !args.no_offloads && file.offloads.unwrap_or(true),
        })
    }
}

/// The machine's host name when the environment names it and it makes a valid display name,
/// else `player`.
fn default_display_name() -> DisplayName {
    ["HOSTNAME", "COMPUTERNAME", "USER", "USERNAME"]
        .iter()
        .filter_map(|k| std::env::var(k).ok())
        .chain(
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|s| s.trim().to_owned()),
        )
        .find_map(|n| DisplayName::new(&n).ok())
        .unwrap_or_else(|| DisplayName::new("player").expect("a valid constant name"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PIN: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    fn args(link: Option<&str>) -> Args {
        Args {
            join_link: link.map(str::to_owned),
            ..Args::default()
        }
    }

    #[test]
    fn a_join_link_alone_is_enough() {
        let link = format!("lanparty://relay.example:5000/party?pin={PIN}&secret=correct%20horse");
        let cfg = ClientConfig::resolve(args(Some(&link)), FileConfig::default()).unwrap();
        assert_eq!(cfg.relay_display(), "relay.example:5000");
        assert_eq!(cfg.room.as_str(), "party");
        assert_eq!(cfg.secret.expose(), "correct horse");
        assert!(matches!(cfg.trust, ClientTrust::Pinned(Fingerprint(p)) if p[1] == 0x11));
        assert_eq!(cfg.adapter, AdapterKind::default());
        assert_eq!(cfg.addressing, Addressing::Dhcp);
        assert_eq!(cfg.mac, None);
    }

    #[test]
    fn offloads_are_on_unless_the_flag_or_the_file_turns_them_off() {
        let link = format!("lanparty://relay.example/party?pin={PIN}&secret=correct%20horse");
        let on = ClientConfig::resolve(args(Some(&link)), FileConfig::default()).unwrap();
        assert!(on.offloads);
        let mut flag = args(Some(&link));
        flag.no_offloads = true;
        assert!(
            !ClientConfig::resolve(flag, FileConfig::default())
                .unwrap()
                .offloads
        );
        let file: FileConfig = toml::from_str("offloads = false").unwrap();
        assert!(
            !ClientConfig::resolve(args(Some(&link)), file)
                .unwrap()
                .offloads
        );
    }

    #[test]
    fn flags_win_over_the_file_and_the_file_over_the_link() {
        let link = format!("lanparty://relay.example/party?pin={PIN}&secret=from-the-link");
        let mut a = args(Some(&link));
        a.room = Some("flagroom".into());
        a.address = Some("198.18.7.9/24".into());
        let file = FileConfig {
            room: Some("fileroom".into()),
            secret: Some("from-the-file".into()),
            mac: Some("02:00:00:00:00:07".into()),
            ..FileConfig::default()
        };
        let cfg = ClientConfig::resolve(a, file).unwrap();
        assert_eq!(cfg.room.as_str(), "flagroom");
        assert_eq!(cfg.secret.expose(), "from-the-file");
        assert_eq!(cfg.relay_port, link::DEFAULT_PORT);
        assert_eq!(cfg.mac, Some("02:00:00:00:00:07".parse().unwrap()));
        assert_eq!(
            cfg.addressing,
            Addressing::Static {
                addr: Ipv4Addr::new(198, 18, 7, 9),
                prefix: 24
            }
        );
    }

    #[test]
    fn missing_and_bad_settings_say_what_to_do() {
        let err = ClientConfig::resolve(Args::default(), FileConfig::default()).unwrap_err();
        assert!(err.to_string().contains("--relay"), "{err}");
        let mut a = Args {
            relay: Some("127.0.0.1:4433".into()),
            room: Some("party".into()),
            ..Args::default()
        };
        let err = ClientConfig::resolve(a.clone(), FileConfig::default()).unwrap_err();
        assert!(err.to_string().contains("LANPARTY_SECRET"), "{err}");
        a.secret = Some("long enough secret".into());
        for (field, value) in [
            ("adapter", "ethernet"),
            ("address", "198.18.0.1"),
            ("mac", "01:00:5e:00:00:01"),
        ] {
            let mut bad = a.clone();
            match field {
                "adapter" => bad.adapter = Some(value.into()),
                "address" => bad.address = Some(value.into()),
                _ => bad.mac = Some(value.into()),
            }
            let err = ClientConfig::resolve(bad, FileConfig::default()).unwrap_err();
            assert!(
                matches!(&err, ConfigError::Invalid { field: f, .. } if *f == field),
                "{err}"
            );
        }
        let mut both = a;
        both.pin = Some(PIN.into());
        both.relay_ca_cert = Some("/nonexistent/ca.pem".into());
        assert!(ClientConfig::resolve(both, FileConfig::default()).is_err());
    }

    #[test]
    fn the_adapter_kind_must_exist_on_this_platform() {
        let a = Args {
            relay: Some("127.0.0.1".into()),
            room: Some("party".into()),
            secret: Some("long enough secret".into()),
            adapter: Some(if cfg!(windows) { "tun" } else { "wintun" }.into()),
            ..Args::default()
        };
        let err = ClientConfig::resolve(a, FileConfig::default()).unwrap_err();
        assert!(err.to_string().contains("is not available on"), "{err}");
    }

    #[test]
    fn toml_files_reject_unknown_keys() {
        let ok: FileConfig = toml::from_str("room = \"party\"\nadapter = \"tun\"\n").unwrap();
        assert_eq!(ok.adapter.as_deref(), Some("tun"));
        assert!(toml::from_str::<FileConfig>("rooom = \"party\"\n").is_err());
    }
}
