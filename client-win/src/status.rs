//! The one status line the player reads: the session's words (from the uplink), then the
//! adapter's address, then a hint when something the player can fix is wrong.
//!
//! ```text
//! connecting to relay.example:4433
//! joined room party as MAC 02:4c:..:01 with 3 peers; waiting for an address from the LAN's DHCP server
//! joined room party as MAC 02:4c:..:01 with 3 peers; got address 192.168.1.57/24 from the LAN's DHCP server
//! relay unreachable (timed out), retrying in 4 s; keeping address 192.168.1.57/24
//! rejected: room secret rejected (wrong secret)
//! ```
//!
//! [`StatusLine`] is pure: the loop feeds it and prints [`StatusLine::take_changed`].

use std::net::Ipv4Addr;

/// Where the adapter's IPv4 address stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AddressStatus {
    /// No address yet; the DHCP client is asking.
    WaitingForDhcp,
    /// The LAN's DHCP server granted this address.
    Leased {
        /// Address.
        addr: Ipv4Addr,
        /// Prefix length.
        prefix: u8,
    },
    /// A static address from the settings.
    Static {
        /// Address.
        addr: Ipv4Addr,
        /// Prefix length.
        prefix: u8,
    },
    /// The lease ran out or was refused; asking again.
    Lost {
        /// The address that went away.
        addr: Ipv4Addr,
    },
}

/// Composes the status line and tells when it changed.
#[derive(Debug, Clone)]
pub struct StatusLine {
    session: String,
    joined: bool,
    address: AddressStatus,
    hint: Option<String>,
    printed: String,
}

impl StatusLine {
    /// A line with nothing said yet.
    pub fn new(address: AddressStatus) -> Self {
        Self {
            session: String::new(),
            joined: false,
            address,
            hint: None,
            printed: String::new(),
        }
    }

    /// The session's words and whether it is in the room.
    pub fn set_session(&mut self, words: &str, joined: bool) {
        if self.session != words {
            self.session.clear();
            self.session.push_str(words);
        }
        self.joined = joined;
    }

    /// The address state.
    pub fn set_address(&mut self, address: AddressStatus) {
        self.address = address;
    }

    /// The address state.
    pub fn address(&self) -> AddressStatus {
        self.address
    }

    /// A hint for the player, or none.
    pub fn set_hint(&mut self, hint: Option<String>) {
        self.hint = hint;
    }

    /// The line as it reads now.
    pub fn render(&self) -> String {
        let mut line = self.session.clone();
        let address = match self.address {
            AddressStatus::WaitingForDhcp if self.joined => {
                Some("waiting for an address from the LAN's DHCP server".to_owned())
            }
            AddressStatus::WaitingForDhcp => None,
            AddressStatus::Leased { addr, prefix } if self.joined => Some(format!(
                "got address {addr}/{prefix} from the LAN's DHCP server"
            )),
            AddressStatus::Static { addr, prefix } => {
                Some(format!("using static address {addr}/{prefix}"))
            }
            AddressStatus::Leased { addr, prefix } => {
                Some(format!("keeping address {addr}/{prefix}"))
            }
            AddressStatus::Lost { addr } => Some(format!(
                "lost address {addr}, asking the LAN's DHCP server again"
            )),
        };
        for part in [address, self.hint.clone()].into_iter().flatten() {
            if !line.is_empty() {
                line.push_str("; ");
            }
            line.push_str(&part);
        }
        line
    }

    /// The line when it differs from the last one taken, else `None`.
    pub fn take_changed(&mut self) -> Option<String> {
        let line = self.render();
        if line == self.printed || line.is_empty() {
            return None;
        }
        self.printed.clone_from(&line);
        Some(line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_follows_the_session_and_the_address() {
        let mut s = StatusLine::new(AddressStatus::WaitingForDhcp);
        s.set_session("connecting to relay:4433", false);
        assert_eq!(s.take_changed().unwrap(), "connecting to relay:4433");
        assert_eq!(s.take_changed(), None);
        s.set_session(
            "joined room party as MAC 02:00:00:00:00:01 with 1 peer",
            true,
        );
        assert_eq!(
            s.take_changed().unwrap(),
            "joined room party as MAC 02:00:00:00:00:01 with 1 peer; \
             waiting for an address from the LAN's DHCP server"
        );
        s.set_address(AddressStatus::Leased {
            addr: Ipv4Addr::new(198, 18, 5, 100),
            prefix: 24,
        });
        assert!(
            s.take_changed()
                .unwrap()
                .ends_with("got address 198.18.5.100/24 from the LAN's DHCP server")
        );
        s.set_session("relay unreachable (timed out), retrying in 2 s", false);
        assert_eq!(
            s.take_changed().unwrap(),
            "relay unreachable (timed out), retrying in 2 s; keeping address 198.18.5.100/24"
        );
        s.set_hint(Some("3 non-IP frames dropped".into()));
        assert!(
            s.take_changed()
                .unwrap()
                .ends_with("; 3 non-IP frames dropped")
        );
    }
}
