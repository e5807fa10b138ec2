//! Overlay datagram: how one Ethernet frame, or a fragment of one, rides in a QUIC DATAGRAM.
//!
//! ```text
//! whole frame (1 byte of header):
//!  0
//! +--------+--------------------------------------
//! | 0x10   | Ethernet frame (destination MAC first)
//! +--------+--------------------------------------
//!
//! fragment (8 bytes of header):
//!  0        1        3        5        6        8
//! +--------+--------+--------+--------+--------+--------------------
//! | 0x11   | origin | frame  | index  | total  | fragment bytes
//! |        |        | id     | count  | length |
//! +--------+--------+--------+--------+--------+--------------------
//! ```
//!
//! Byte 0 holds the format version in its high nibble (1) and the kind in its low nibble
//! (0 whole frame, 1 fragment). A receiver drops (and counts) datagrams with another version or
//! an unknown kind. `origin` is the low 16 bits of the sending peer's id, which the relay
//! assigns in the welcome; `frame id` is a counter chosen by that sender; both big-endian.
//! `index` (high nibble) and `count` (low nibble) number the fragments of one frame, 0-based,
//! with `index < count` and `2 <= count <= 15`; `total length` is the length of the whole frame,
//! big-endian. Fragment 0 starts with the Ethernet header, so a switch can forward every fragment
//! of a frame by the decision it made for fragment 0, without reassembling.
//!
//! # Why fragments carry their origin
//!
//! The relay switches fragments one by one, so a receiver gets the fragments of several
//! senders interleaved on its one relay connection. Frame ids are per sender: two senders may
//! use the same id at the same time. The origin tells their fragments apart, so a receiver keys
//! partial frames by (origin, frame id). The relay drops a fragment whose origin is not its
//! sender's (`spoofed_origin`), so a peer cannot inject fragments into another's frames. Peer
//! ids are unique within a room and never reused by a relay, so two members' origins only
//! collide after 65 536 admissions, and then only if both are still present. Whole frames need
//! no origin and keep their 1-byte header.
//!
//! The format's byte layouts and test vectors are in docs/PROTOCOL.md.

/// The overlay format version this code speaks.
pub const VERSION: u8 = 1;
/// Header length of a whole-frame datagram.
pub const WHOLE_HEADER_LEN: usize = 1;
/// Header length of a fragment datagram.
pub const FRAGMENT_HEADER_LEN: usize = 8;
/// Most fragments one frame may be split into (the count is a nibble).
pub const MAX_FRAGMENTS: u8 = 15;

const KIND_WHOLE: u8 = 0x0;
const KIND_FRAGMENT: u8 = 0x1;

mod field {
    use std::ops::Range;

    pub(super) const TAG: usize = 0;
    pub(super) const ORIGIN: Range<usize> = 1..3;
    pub(super) const FRAME_ID: Range<usize> = 3..5;
    pub(super) const INDEX_COUNT: usize = 5;
    pub(super) const TOTAL_LEN: Range<usize> = 6..8;
}

/// Why a datagram is not a valid overlay datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The datagram is shorter than its header.
    #[error("overlay datagram truncated: need {need} bytes, have {have}")]
    Truncated {
        /// Bytes the header needs.
        need: usize,
        /// Bytes present.
        have: usize,
    },
    /// The version nibble is not ours.
    #[error("overlay version {theirs} is not supported (we speak {ours})")]
    VersionMismatch {
        /// [`VERSION`].
        ours: u8,
        /// The datagram's version.
        theirs: u8,
    },
    /// The kind nibble is unknown.
    #[error("unknown overlay datagram kind {0:#x}")]
    UnknownKind(u8),
    /// Fragment numbering is impossible (count < 2, index >= count).
    #[error("bad fragment numbering: index {index} of {count}")]
    BadFragment {
        /// Fragment index.
        index: u8,
        /// Fragment count.
        count: u8,
    },
    /// The datagram carries no frame bytes.
    #[error("overlay datagram carries no frame bytes")]
    Empty,
}

/// The header of an overlay datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Header {
    /// The payload is one whole Ethernet frame.
    Whole,
    /// The payload is fragment `index` of `count` of frame `frame_id` from peer `origin`.
    Fragment {
        /// The low 16 bits of the sending peer's id (see [`origin_of`]).
        origin: u16,
        /// Frame identifier chosen by the sender.
        frame_id: u16,
        /// 0-based fragment index.
        index: u8,
        /// Number of fragments of the frame.
        count: u8,
        /// Length of the whole frame.
        total_len: u16,
    },
}

impl Header {
    /// Bytes this header takes on the wire.
    pub const fn len(&self) -> usize {
        match self {
            Self::Whole => WHOLE_HEADER_LEN,
            Self::Fragment { .. } => FRAGMENT_HEADER_LEN,
        }
    }

    /// Always false: a header has at least one byte. Present for symmetry with `len`.
    pub const fn is_empty(&self) -> bool {
        false
    }

    /// Writes the header into the start of `buf` and returns its length.
    ///
    /// # Panics
    ///
    /// When `buf` is shorter than [`Self::len`].
    pub fn emit(&self, buf: &mut [u8]) -> usize {
        match *self {
            Self::Whole => buf[field::TAG] = (VERSION << 4) | KIND_WHOLE,
            Self::Fragment {
                origin,
                frame_id,
                index,
                count,
                total_len,
            } => {
                buf[field::TAG] = (VERSION << 4) | KIND_FRAGMENT;
                buf[field::ORIGIN].copy_from_slice(&origin.to_be_bytes());
                buf[field::FRAME_ID].copy_from_slice(&frame_id.to_be_bytes());
                buf[field::INDEX_COUNT] = (index << 4) | (count & 0x0f);
                buf[field::TOTAL_LEN].copy_from_slice(&total_len.to_be_bytes());
            }
        }
        self.len()
    }
}

/// A zero-copy view of an overlay datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Datagram<T: AsRef<[u8]>> {
    buffer: T,
    header: Header,
}

impl<T: AsRef<[u8]>> Datagram<T> {
    /// Parses and checks the header of an untrusted datagram.
    ///
    /// # Errors
    ///
    /// Any [`Error`]; no input panics.
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let bytes = buffer.as_ref();
        let Some(&tag) = bytes.first() else {
            return Err(Error::Truncated {
                need: WHOLE_HEADER_LEN,
                have: 0,
            });
        };
        let theirs = tag >> 4;
        if theirs != VERSION {
            return Err(Error::VersionMismatch {
                ours: VERSION,
                theirs,
            });
        }
        let header = match tag & 0x0f {
            KIND_WHOLE => Header::Whole,
            KIND_FRAGMENT => {
                if bytes.len() < FRAGMENT_HEADER_LEN {
                    return Err(Error::Truncated {
                        need: FRAGMENT_HEADER_LEN,
                        have: bytes.len(),
                    });
                }
                let index = bytes[field::INDEX_COUNT] >> 4;
                let count = bytes[field::INDEX_COUNT] & 0x0f;
                if count < 2 || index >= count {
                    return Err(Error::BadFragment { index, count });
                }
                let origin = &bytes[field::ORIGIN];
                let id = &bytes[field::FRAME_ID];
                let len = &bytes[field::TOTAL_LEN];
                Header::Fragment {
                    origin: u16::from_be_bytes([origin[0], origin[1]]),
                    frame_id: u16::from_be_bytes([id[0], id[1]]),
                    index,
                    count,
                    total_len: u16::from_be_bytes([len[0], len[1]]),
                }
            }
            kind => return Err(Error::UnknownKind(kind)),
        };
        if bytes.len() == header.len() {
            return Err(Error::Empty);
        }
        Ok(Self { buffer, header })
    }

    /// The parsed header.
    pub const fn header(&self) -> Header {
        self.header
    }

    /// The frame bytes (a whole frame, or one fragment of it).
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header.len()..]
    }

    /// The Ethernet header bytes this datagram starts with, when it is a whole frame or
    /// fragment 0; `None` for later fragments.
    pub fn leading_frame_bytes(&self) -> Option<&[u8]> {
        match self.header {
            Header::Whole | Header::Fragment { index: 0, .. } => Some(self.payload()),
            Header::Fragment { .. } => None,
        }
    }

    /// Unwraps the buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }
}

/// The origin a peer with id `peer_id` (the `peer_id` of its welcome) writes into its
/// fragments: the id's low 16 bits.
pub const fn origin_of(peer_id: u64) -> u16 {
    // Truncation is the definition.
    peer_id as u16
}

/// Writes a whole-frame datagram for `frame` into a new vector.
pub fn encode_whole(frame: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(WHOLE_HEADER_LEN + frame.len());
    out.push((VERSION << 4) | KIND_WHOLE);
    out.extend_from_slice(frame);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn whole_frame_round_trip() {
        let frame = [0xffu8; 14];
        let dgram = encode_whole(&frame);
        assert_eq!(dgram[0], 0x10);
        let d = Datagram::new_checked(&dgram[..]).unwrap();
        assert_eq!(d.header(), Header::Whole);
        assert_eq!(d.payload(), &frame);
        assert_eq!(d.leading_frame_bytes(), Some(&frame[..]));
    }

    #[test]
    fn fragment_header_round_trip() {
        let h = Header::Fragment {
            origin: 0xa0b1,
            frame_id: 0x0102,
            index: 1,
            count: 2,
            total_len: 1514,
        };
        let mut buf = [0u8; 10];
        assert_eq!(h.emit(&mut buf), FRAGMENT_HEADER_LEN);
        assert_eq!(&buf[..8], &[0x11, 0xa0, 0xb1, 0x01, 0x02, 0x12, 0x05, 0xea]);
        let d = Datagram::new_checked(&buf[..]).unwrap();
        assert_eq!(d.header(), h);
        assert_eq!(d.payload().len(), 2);
        assert_eq!(d.leading_frame_bytes(), None);
    }

    #[test]
    fn malformed_datagrams_are_errors() {
        let cases: &[(&[u8], Error)] = &[
            (&[], Error::Truncated { need: 1, have: 0 }),
            (&[0x10], Error::Empty),
            (&[0x20, 0], Error::VersionMismatch { ours: 1, theirs: 2 }),
            (&[0x17, 0], Error::UnknownKind(7)),
            (
                &[0x11, 0, 1, 0, 0, 0x12],
                Error::Truncated { need: 8, have: 6 },
            ),
            (
                &[0x11, 0, 1, 0, 0, 0x11, 0, 9, 0],
                Error::BadFragment { index: 1, count: 1 },
            ),
            (
                &[0x11, 0, 1, 0, 0, 0x22, 0, 9, 0],
                Error::BadFragment { index: 2, count: 2 },
            ),
            (&[0x11, 0, 1, 0, 0, 0x02, 0, 9], Error::Empty),
        ];
        for (bytes, want) in cases {
            assert_eq!(
                Datagram::new_checked(*bytes).unwrap_err(),
                *want,
                "{bytes:02x?}"
            );
        }
    }

    #[test]
    fn origin_is_the_low_16_bits_of_the_peer_id() {
        assert_eq!(origin_of(7), 7);
        assert_eq!(origin_of(0x1_0007), 7);
        assert_eq!(origin_of(u64::MAX), 0xffff);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..32)) {
            if let Ok(d) = Datagram::new_checked(&bytes[..]) {
                prop_assert!(!d.payload().is_empty());
                prop_assert_eq!(d.payload().len() + d.header().len(), bytes.len());
            }
        }
    }
}
