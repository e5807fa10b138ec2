//! Ethernet MAC addresses.

use std::fmt;
use std::str::FromStr;

/// A 48-bit IEEE 802 MAC address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Mac(pub [u8; 6]);

/// Why a string is not a MAC address, or why a MAC cannot identify a peer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MacError {
    /// The text is not six hex octets separated by `:` or `-`.
    #[error("invalid MAC address {text:?}: expected six hex octets like aa:bb:cc:dd:ee:ff")]
    Syntax {
        /// The text that failed to parse (truncated to 64 characters).
        text: String,
    },
    /// 00:00:00:00:00:00 cannot identify a peer.
    #[error("MAC address 00:00:00:00:00:00 cannot identify a peer")]
    Zero,
    /// A group (broadcast or multicast) address cannot identify a peer.
    #[error("MAC address {0} is a group address and cannot identify a peer")]
    Group(Mac),
}

impl Mac {
    /// ff:ff:ff:ff:ff:ff.
    pub const BROADCAST: Self = Self([0xff; 6]);
    /// 00:00:00:00:00:00.
    pub const ZERO: Self = Self([0; 6]);

    /// Builds a MAC from the first six bytes of `bytes`.
    ///
    /// # Panics
    ///
    /// When `bytes` is shorter than six bytes.
    pub fn from_bytes(bytes: &[u8]) -> Self {
        let mut octets = [0; 6];
        octets.copy_from_slice(&bytes[..6]);
        Self(octets)
    }

    /// The six octets.
    pub const fn octets(&self) -> [u8; 6] {
        self.0
    }

    /// True for ff:ff:ff:ff:ff:ff.
    pub fn is_broadcast(&self) -> bool {
        *self == Self::BROADCAST
    }

    /// True for group addresses (the I/G bit is set), which includes broadcast.
    pub const fn is_multicast(&self) -> bool {
        self.0[0] & 0x01 != 0
    }

    /// True for individual (unicast) addresses.
    pub const fn is_unicast(&self) -> bool {
        !self.is_multicast()
    }

    /// True when the U/L bit says the address was assigned locally, not by a vendor.
    pub const fn is_locally_administered(&self) -> bool {
        self.0[0] & 0x02 != 0
    }

    /// True for 00:00:00:00:00:00.
    pub fn is_zero(&self) -> bool {
        *self == Self::ZERO
    }

    /// True for the IEEE 802.1D reserved range 01:80:c2:00:00:00..=0f (STP, LACP, LLDP,
    /// pause frames), which bridges never forward.
    pub fn is_link_local_control(&self) -> bool {
        self.0[..5] == [0x01, 0x80, 0xc2, 0x00, 0x00] && self.0[5] <= 0x0f
    }

    /// Checks that the address can identify one peer of a room: not zero and not a group.
    ///
    /// # Errors
    ///
    /// [`MacError::Zero`] or [`MacError::Group`].
    pub fn validate_peer(&self) -> Result<(), MacError> {
        if self.is_zero() {
            Err(MacError::Zero)
        } else if self.is_multicast() {
            Err(MacError::Group(*self))
        } else {
            Ok(())
        }
    }

    /// A random unicast, locally administered address from `rng`.
    pub fn random_local(rng: &mut impl rand::RngCore) -> Self {
        let mut octets = [0u8; 6];
        rng.fill_bytes(&mut octets);
        octets[0] = (octets[0] & 0xfc) | 0x02;
        let mac = Self(octets);
        if mac.is_zero() {
            // Unreachable: the locally administered bit is set.
            return Self([0x02, 0, 0, 0, 0, 1]);
        }
        mac
    }
}

impl FromStr for Mac {
    type Err = MacError;

    /// Parses `aa:bb:cc:dd:ee:ff` or `aa-bb-cc-dd-ee-ff` (either case, one separator kind).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let syntax = || MacError::Syntax {
            text: s.chars().take(64).collect(),
        };
        let sep = if s.contains(':') { ':' } else { '-' };
        let mut octets = [0u8; 6];
        let mut parts = s.split(sep);
        for octet in &mut octets {
            let part = parts.next().ok_or_else(syntax)?;
            if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(syntax());
            }
            *octet = u8::from_str_radix(part, 16).map_err(|_| syntax())?;
        }
        if parts.next().is_some() {
            return Err(syntax());
        }
        Ok(Self(octets))
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl fmt::Debug for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Mac({self})")
    }
}

impl From<[u8; 6]> for Mac {
    fn from(octets: [u8; 6]) -> Self {
        Self(octets)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_colon_and_dash_forms() {
        let want = Mac([0xaa, 0xbb, 0xcc, 0x01, 0x02, 0x0f]);
        assert_eq!("aa:bb:cc:01:02:0f".parse::<Mac>(), Ok(want));
        assert_eq!("AA-BB-CC-01-02-0F".parse::<Mac>(), Ok(want));
        assert_eq!(want.to_string(), "aa:bb:cc:01:02:0f");
    }

    #[test]
    fn rejects_malformed_text() {
        for bad in [
            "",
            "aa:bb:cc:dd:ee",
            "aa:bb:cc:dd:ee:ff:00",
            "aa:bb:cc:dd:ee:f",
            "aa:bb:cc-dd:ee:ff",
            "aa:bb:cc:dd:ee:gg",
            "aabb.ccdd.eeff",
            "+a:bb:cc:dd:ee:ff",
        ] {
            assert!(
                matches!(bad.parse::<Mac>(), Err(MacError::Syntax { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn predicates() {
        assert!(Mac::BROADCAST.is_broadcast() && Mac::BROADCAST.is_multicast());
        let mdns: Mac = "01:00:5e:00:00:fb".parse().unwrap();
        assert!(mdns.is_multicast() && !mdns.is_broadcast());
        let stp: Mac = "01:80:c2:00:00:00".parse().unwrap();
        assert!(stp.is_link_local_control());
        assert!(
            !"01:80:c2:00:00:10"
                .parse::<Mac>()
                .unwrap()
                .is_link_local_control()
        );
        let local: Mac = "02:00:00:00:00:01".parse().unwrap();
        assert!(local.is_locally_administered() && local.is_unicast());
        assert!(
            !"00:1b:21:00:00:01"
                .parse::<Mac>()
                .unwrap()
                .is_locally_administered()
        );
    }

    #[test]
    fn peer_identity_rules() {
        assert_eq!(Mac::ZERO.validate_peer(), Err(MacError::Zero));
        assert_eq!(
            Mac::BROADCAST.validate_peer(),
            Err(MacError::Group(Mac::BROADCAST))
        );
        assert_eq!(
            "02:11:22:33:44:55".parse::<Mac>().unwrap().validate_peer(),
            Ok(())
        );
    }

    #[test]
    fn random_local_is_a_valid_local_peer_identity() {
        let mut rng = rand::rng();
        for _ in 0..1000 {
            let mac = Mac::random_local(&mut rng);
            assert!(mac.is_locally_administered());
            assert_eq!(mac.validate_peer(), Ok(()));
        }
    }

    proptest! {
        #[test]
        fn display_parse_round_trip(octets in any::<[u8; 6]>()) {
            let mac = Mac(octets);
            prop_assert_eq!(mac.to_string().parse::<Mac>(), Ok(mac));
            prop_assert_eq!(mac.to_string().replace(':', "-").parse::<Mac>(), Ok(mac));
        }

        #[test]
        fn arbitrary_text_never_panics(text in ".{0,40}") {
            let _ = text.parse::<Mac>();
        }
    }
}
