//! Ethernet II / IEEE 802.3 frame view.
//!
//! ```text
//!  0                   6                  12        14 (16, 18 with an 802.1Q tag)
//! +-------------------+-------------------+---------+------------------
//! | destination MAC   | source MAC        | type or | payload ...
//! |                   |                   | length  |
//! +-------------------+-------------------+---------+------------------
//! ```
//!
//! The two bytes after the source are an EtherType when they are >= 0x0600 and an 802.3
//! length field when they are <= 0x05dc (1500). With TPID 0x8100 an 802.1Q tag (TCI) and the
//! inner type/length follow. The frame check sequence is never part of the buffer.
//!
//! [`Frame::new_checked`] accepts any buffer of at least [`HEADER_LEN`] bytes and never makes
//! a later accessor panic; [`Frame::new_unchecked`] leaves that check to the caller.

use crate::Mac;

/// Length of an untagged Ethernet header.
pub const HEADER_LEN: usize = 14;
/// Length of an 802.1Q tag (TPID + TCI).
pub const VLAN_TAG_LEN: usize = 4;
/// TPID of an 802.1Q tag.
pub const TPID_8021Q: u16 = 0x8100;

mod field {
    use std::ops::Range;

    pub(super) const DESTINATION: Range<usize> = 0..6;
    pub(super) const SOURCE: Range<usize> = 6..12;
    pub(super) const TYPE: Range<usize> = 12..14;
    pub(super) const TCI: Range<usize> = 14..16;
    pub(super) const INNER_TYPE: Range<usize> = 16..18;
}

/// Well-known EtherTypes.
pub mod ethertype {
    /// Internet Protocol version 4.
    pub const IPV4: u16 = 0x0800;
    /// Address Resolution Protocol.
    pub const ARP: u16 = 0x0806;
    /// Internet Protocol version 6.
    pub const IPV6: u16 = 0x86dd;
    /// Novell IPX (Ethernet II framing).
    pub const IPX: u16 = 0x8137;
    /// 802.1Q VLAN tag.
    pub const VLAN: u16 = 0x8100;
}

/// Why a buffer is not an Ethernet frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The buffer is shorter than the header it claims.
    #[error("ethernet frame truncated: need {need} bytes, have {have}")]
    Truncated {
        /// Bytes the header needs.
        need: usize,
        /// Bytes present.
        have: usize,
    },
}

/// What the two bytes after the source address (or after the VLAN tag) mean.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TypeOrLength {
    /// An Ethernet II EtherType (>= 0x0600).
    EtherType(u16),
    /// An IEEE 802.3 length field (<= 1500); an LLC header follows.
    Length(u16),
    /// 0x05dd..=0x05ff: neither, by IEEE 802.3 clause 3.2.6.
    Invalid(u16),
}

impl TypeOrLength {
    /// Classifies a raw type/length value.
    pub const fn from_raw(raw: u16) -> Self {
        match raw {
            0..=0x05dc => Self::Length(raw),
            0x0600.. => Self::EtherType(raw),
            _ => Self::Invalid(raw),
        }
    }
}

/// A zero-copy view of an Ethernet frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Frame<T> {
    /// Wraps a buffer without checking its length.
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps a buffer after checking that it holds a whole header (including a VLAN tag when
    /// the TPID announces one).
    ///
    /// # Errors
    ///
    /// [`Error::Truncated`] when the buffer is shorter than the header.
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let frame = Self::new_unchecked(buffer);
        frame.check_len()?;
        Ok(frame)
    }

    /// Checks that the buffer holds the whole header.
    ///
    /// # Errors
    ///
    /// [`Error::Truncated`] when it does not.
    pub fn check_len(&self) -> Result<(), Error> {
        let have = self.buffer.as_ref().len();
        if have < HEADER_LEN {
            return Err(Error::Truncated {
                need: HEADER_LEN,
                have,
            });
        }
        let need = self.header_len();
        if have < need {
            return Err(Error::Truncated { need, have });
        }
        Ok(())
    }

    /// Unwraps the buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The whole frame.
    pub fn as_bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    /// Destination address.
    pub fn dst(&self) -> Mac {
        Mac::from_bytes(&self.buffer.as_ref()[field::DESTINATION])
    }

    /// Source address.
    pub fn src(&self) -> Mac {
        Mac::from_bytes(&self.buffer.as_ref()[field::SOURCE])
    }

    fn raw_outer_type(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::TYPE];
        u16::from_be_bytes([b[0], b[1]])
    }

    /// True when an 802.1Q tag follows the source address.
    pub fn has_vlan_tag(&self) -> bool {
        self.raw_outer_type() == TPID_8021Q
    }

    /// The 802.1Q tag control information (PCP, DEI, VID), when tagged.
    pub fn vlan_tci(&self) -> Option<u16> {
        self.has_vlan_tag().then(|| {
            let b = &self.buffer.as_ref()[field::TCI];
            u16::from_be_bytes([b[0], b[1]])
        })
    }

    /// The VLAN id (low 12 bits of the TCI), when tagged.
    pub fn vlan_id(&self) -> Option<u16> {
        self.vlan_tci().map(|tci| tci & 0x0fff)
    }

    /// The raw type/length field after the tag, if any.
    pub fn raw_type_or_length(&self) -> u16 {
        if self.has_vlan_tag() {
            let b = &self.buffer.as_ref()[field::INNER_TYPE];
            u16::from_be_bytes([b[0], b[1]])
        } else {
            self.raw_outer_type()
        }
    }

    /// The type/length field after the tag, classified.
    pub fn type_or_length(&self) -> TypeOrLength {
        TypeOrLength::from_raw(self.raw_type_or_length())
    }

    /// The EtherType, or `None` for 802.3 length-field frames.
    pub fn ethertype(&self) -> Option<u16> {
        match self.type_or_length() {
            TypeOrLength::EtherType(t) => Some(t),
            _ => None,
        }
    }

    /// Header length: 14, or 18 with an 802.1Q tag.
    pub fn header_len(&self) -> usize {
        if self.has_vlan_tag() {
            HEADER_LEN + VLAN_TAG_LEN
        } else {
            HEADER_LEN
        }
    }

    /// Everything after the header (for 802.3 frames, the LLC header and what follows, which
    /// may include padding beyond the length field).
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Frame<T> {
    /// Sets the destination address.
    pub fn set_dst(&mut self, mac: Mac) {
        self.buffer.as_mut()[field::DESTINATION].copy_from_slice(&mac.0);
    }

    /// Sets the source address.
    pub fn set_src(&mut self, mac: Mac) {
        self.buffer.as_mut()[field::SOURCE].copy_from_slice(&mac.0);
    }

    /// The payload, writable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let start = self.header_len();
        &mut self.buffer.as_mut()[start..]
    }
}

/// An untagged Ethernet header, owned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    /// Destination address.
    pub dst: Mac,
    /// Source address.
    pub src: Mac,
    /// EtherType or 802.3 length.
    pub type_or_length: u16,
}

impl Repr {
    /// Reads the header of a checked frame (the inner type for tagged frames).
    pub fn parse<T: AsRef<[u8]>>(frame: &Frame<T>) -> Self {
        Self {
            dst: frame.dst(),
            src: frame.src(),
            type_or_length: frame.raw_type_or_length(),
        }
    }

    /// Bytes [`Self::emit`] writes.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the header into the first [`HEADER_LEN`] bytes of `buf`.
    ///
    /// # Panics
    ///
    /// When `buf` is shorter than [`HEADER_LEN`].
    pub fn emit(&self, buf: &mut [u8]) {
        buf[field::DESTINATION].copy_from_slice(&self.dst.0);
        buf[field::SOURCE].copy_from_slice(&self.src.0);
        buf[field::TYPE].copy_from_slice(&self.type_or_length.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frame(hex_text: &str) -> Vec<u8> {
        hex::decode(hex_text.replace(' ', "")).unwrap()
    }

    #[test]
    fn short_buffers_are_errors() {
        for len in 0..HEADER_LEN {
            assert_eq!(
                Frame::new_checked(vec![0u8; len]).unwrap_err(),
                Error::Truncated {
                    need: HEADER_LEN,
                    have: len
                }
            );
        }
        // A VLAN TPID without room for the tag.
        let tagged = frame("ffffffffffff 020000000001 8100 0064");
        assert_eq!(
            Frame::new_checked(&tagged[..]).unwrap_err(),
            Error::Truncated { need: 18, have: 16 }
        );
    }

    #[test]
    fn ethernet_ii_ipv4() {
        let bytes = frame("ffffffffffff 020000000001 0800 4500");
        let f = Frame::new_checked(&bytes[..]).unwrap();
        assert!(f.dst().is_broadcast());
        assert_eq!(f.src().to_string(), "02:00:00:00:00:01");
        assert_eq!(f.ethertype(), Some(ethertype::IPV4));
        assert_eq!(f.vlan_id(), None);
        assert_eq!(f.payload(), &[0x45, 0x00]);
    }

    #[test]
    fn vlan_tagged_frame() {
        let bytes = frame("ffffffffffff 020000000001 8100 a064 8137 ffff");
        let f = Frame::new_checked(&bytes[..]).unwrap();
        assert_eq!(f.vlan_tci(), Some(0xa064));
        assert_eq!(f.vlan_id(), Some(100));
        assert_eq!(f.ethertype(), Some(ethertype::IPX));
        assert_eq!(f.header_len(), 18);
        assert_eq!(f.payload(), &[0xff, 0xff]);
    }

    #[test]
    fn ieee_802_3_length_frame() {
        // 802.3 + LLC carrying Novell raw IPX (DSAP/SSAP 0xe0).
        let bytes = frame("ffffffffffff 020000000001 0003 e0e003");
        let f = Frame::new_checked(&bytes[..]).unwrap();
        assert_eq!(f.type_or_length(), TypeOrLength::Length(3));
        assert_eq!(f.ethertype(), None);
        assert_eq!(
            TypeOrLength::from_raw(0x05dd),
            TypeOrLength::Invalid(0x05dd)
        );
    }

    #[test]
    fn repr_emit_parse_and_setters() {
        let repr = Repr {
            dst: "01:00:5e:00:00:fb".parse().unwrap(),
            src: "02:00:00:00:00:02".parse().unwrap(),
            type_or_length: ethertype::IPV6,
        };
        let mut buf = vec![0u8; repr.buffer_len() + 4];
        repr.emit(&mut buf);
        let mut f = Frame::new_checked(&mut buf[..]).unwrap();
        assert_eq!(Repr::parse(&f), repr);
        f.set_src(Mac([2, 9, 9, 9, 9, 9]));
        f.set_dst(Mac::BROADCAST);
        f.payload_mut().copy_from_slice(&[1, 2, 3, 4]);
        assert_eq!(f.src(), Mac([2, 9, 9, 9, 9, 9]));
        assert!(f.dst().is_broadcast());
        assert_eq!(f.payload(), &[1, 2, 3, 4]);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(f) = Frame::new_checked(&bytes[..]) {
                let _ = (f.dst(), f.src(), f.type_or_length(), f.vlan_id(), f.payload().len());
                prop_assert!(f.header_len() <= bytes.len());
            }
        }
    }
}
