//! Join links: one line that carries everything a gateway or client needs to reach a relay.
//!
//! ```text
//! lanparty://HOST:PORT[/ROOM]?pin=SHA256[&secret=SECRET]
//! ```
//!
//! `HOST` is a DNS name, an IPv4 address or a bracketed IPv6 address; `PORT` defaults to 4433.
//! `pin` is the SHA-256 fingerprint of the relay's certificate as 64 hex digits (colons allowed),
//! present when the relay uses a self-signed certificate. `ROOM` and `secret` are optional: a
//! relay prints a link without them, a gateway prints one with its room for the players. Query
//! values are percent-decoded; unknown query keys are ignored so later versions can add some.

use std::fmt;
use std::str::FromStr;

/// The scheme of a join link.
pub const SCHEME: &str = "lanparty://";
/// The relay's default UDP port.
pub const DEFAULT_PORT: u16 = 4433;

/// A parsed join link.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinLink {
    /// Relay host name or address (IPv6 without brackets).
    pub host: String,
    /// Relay UDP port.
    pub port: u16,
    /// Room code, when the link names one.
    pub room: Option<String>,
    /// SHA-256 of the relay's certificate (32 bytes), when pinned.
    pub pin: Option<[u8; 32]>,
    /// Room secret, when the link carries one.
    pub secret: Option<String>,
}

impl fmt::Debug for JoinLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinLink")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("room", &self.room)
            .field("pin", &self.pin.map(|p| fingerprint_hex(&p)))
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Why a join link does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LinkError {
    /// It does not start with `lanparty://`.
    #[error("a join link starts with {SCHEME}")]
    Scheme,
    /// Host or port is missing or malformed.
    #[error("bad relay address in join link: {0}")]
    Address(String),
    /// The pin is not 64 hex digits.
    #[error("bad certificate pin in join link: expected 64 hex digits")]
    Pin,
    /// A query value is not valid percent-encoding.
    #[error("bad percent-encoding in join link")]
    Encoding,
}

/// Formats a SHA-256 fingerprint as colon-separated upper-case hex pairs.
pub fn fingerprint_hex(fp: &[u8]) -> String {
    let mut out = String::with_capacity(fp.len() * 3);
    for (i, b) in fp.iter().enumerate() {
        if i > 0 {
            out.push(':');
        }
        out.push_str(&format!("{b:02X}"));
    }
    out
}

/// Parses a fingerprint written as 64 hex digits, with or without colons.
///
/// # Errors
///
/// [`LinkError::Pin`] for anything else.
pub fn parse_fingerprint(text: &str) -> Result<[u8; 32], LinkError> {
    let digits: String = text.chars().filter(|c| *c != ':').collect();
    let digits = digits.strip_prefix("sha256/").unwrap_or(&digits);
    if digits.len() != 64 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(LinkError::Pin);
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&digits[2 * i..2 * i + 2], 16).map_err(|_| LinkError::Pin)?;
    }
    Ok(out)
}

fn percent_decode(text: &str) -> Result<String, LinkError> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).ok_or(LinkError::Encoding)?;
                let hex = std::str::from_utf8(hex).map_err(|_| LinkError::Encoding)?;
                out.push(u8::from_str_radix(hex, 16).map_err(|_| LinkError::Encoding)?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| LinkError::Encoding)
}

fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl FromStr for JoinLink {
    type Err = LinkError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let rest = text.trim().strip_prefix(SCHEME).ok_or(LinkError::Scheme)?;
        let (before_query, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (authority, path) = before_query.split_once('/').unwrap_or((before_query, ""));
        let (host, port) = split_host_port(authority)?;
        let room = match path.trim_end_matches('/') {
            "" => None,
            room => Some(percent_decode(room)?),
        };
        let mut link = Self {
            host,
            port,
            room,
            pin: None,
            secret: None,
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "pin" => link.pin = Some(parse_fingerprint(&percent_decode(value)?)?),
                "secret" => link.secret = Some(percent_decode(value)?),
                _ => {}
            }
        }
        Ok(link)
    }
}

/// Splits `host:port`, `[v6]:port`, `host` or `[v6]`; the port defaults to [`DEFAULT_PORT`].
///
/// # Errors
///
/// [`LinkError::Address`] when the host is empty or the port is not a number.
pub fn split_host_port(authority: &str) -> Result<(String, u16), LinkError> {
    let bad = || LinkError::Address(authority.to_owned());
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or_else(bad)?;
        match after {
            "" => (host, None),
            p => (host, Some(p.strip_prefix(':').ok_or_else(bad)?)),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, _)) if h.contains(':') => return Err(bad()),
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty()
        || host
            .chars()
            .any(|c| c.is_whitespace() || c == '/' || c == '@')
    {
        return Err(bad());
    }
    let port = match port {
        Some(p) => p.parse().map_err(|_| bad())?,
        None => DEFAULT_PORT,
    };
    Ok((host.to_owned(), port))
}

impl fmt::Display for JoinLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(SCHEME)?;
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)?;
        } else {
            write!(f, "{}:{}", self.host, self.port)?;
        }
        if let Some(room) = &self.room {
            write!(f, "/{}", percent_encode(room))?;
        }
        let mut sep = '?';
        if let Some(pin) = &self.pin {
            write!(f, "{sep}pin={}", hex_lower(pin))?;
            sep = '&';
        }
        if let Some(secret) = &self.secret {
            write!(f, "{sep}secret={}", percent_encode(secret))?;
        }
        Ok(())
    }
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PIN: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    #[test]
    fn full_link_round_trips() {
        let text = format!("lanparty://relay.example:443/party-42?pin={PIN}&secret=s3cret%20x");
        let link: JoinLink = text.parse().unwrap();
        assert_eq!(link.host, "relay.example");
        assert_eq!(link.port, 443);
        assert_eq!(link.room.as_deref(), Some("party-42"));
        assert_eq!(link.secret.as_deref(), Some("s3cret x"));
        assert_eq!(link.pin.unwrap()[1], 0x11);
        assert_eq!(link.to_string().parse::<JoinLink>().unwrap(), link);
        assert!(!format!("{link:?}").contains("s3cret"));
    }

    #[test]
    fn ipv6_hosts_and_default_port() {
        let link: JoinLink = "lanparty://[fd00::1]".parse().unwrap();
        assert_eq!((link.host.as_str(), link.port), ("fd00::1", DEFAULT_PORT));
        assert_eq!(link.to_string(), "lanparty://[fd00::1]:4433");
        let link: JoinLink = "lanparty://[fd00::1]:9000/r1?x=y".parse().unwrap();
        assert_eq!((link.port, link.room.as_deref()), (9000, Some("r1")));
    }

    #[test]
    fn malformed_links_are_errors() {
        assert_eq!("http://x".parse::<JoinLink>(), Err(LinkError::Scheme));
        assert!(matches!(
            "lanparty://".parse::<JoinLink>(),
            Err(LinkError::Address(_))
        ));
        assert!(matches!(
            "lanparty://h:99999".parse::<JoinLink>(),
            Err(LinkError::Address(_))
        ));
        assert!(matches!(
            "lanparty://fd00::1:5".parse::<JoinLink>(),
            Err(LinkError::Address(_))
        ));
        assert_eq!(
            "lanparty://h?pin=abc".parse::<JoinLink>(),
            Err(LinkError::Pin)
        );
        assert_eq!(
            "lanparty://h/%zz".parse::<JoinLink>(),
            Err(LinkError::Encoding)
        );
    }

    #[test]
    fn fingerprints_accept_colons() {
        let fp = parse_fingerprint(PIN).unwrap();
        assert_eq!(parse_fingerprint(&fingerprint_hex(&fp)), Ok(fp));
        assert!(fingerprint_hex(&fp).starts_with("00:11:22"));
    }
}
