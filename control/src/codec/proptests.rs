//! Property tests: round trips of arbitrary valid messages through arbitrary chunkings, and
//! arbitrary or mutated bytes that must never panic or overfill the decoder.

use lanparty_datapath::Mac;
use proptest::collection::{btree_map, btree_set, vec};
use proptest::prelude::*;

use super::*;
use crate::msg::{
    Disconnect, DisplayName, Hello, MAX_DATAGRAM_BUDGET, MIN_DATAGRAM_BUDGET, MIN_MAX_FRAME,
    PeerId, PeerInfo, PeerLeft, Role, RoomCode, Secret, Stats, Welcome,
};

fn role() -> impl Strategy<Value = Role> {
    prop_oneof![Just(Role::Client), Just(Role::Gateway)]
}

fn room() -> impl Strategy<Value = RoomCode> {
    "[A-Za-z0-9_-]{3,32}".prop_map(|s| RoomCode::new(&s).unwrap())
}

fn name() -> impl Strategy<Value = DisplayName> {
    "[^\\p{Cc}]{1,32}".prop_map(|s| DisplayName::new(&s).unwrap())
}

fn secret() -> impl Strategy<Value = Secret> {
    prop_oneof![
        "[ -~]{8,128}".prop_map(|s| Secret::new(&s).unwrap()),
        "\\PC{2,40}".prop_filter_map("secret length", |s| Secret::new(&s).ok()),
    ]
}

fn mac() -> impl Strategy<Value = Mac> {
    any::<[u8; 6]>()
        .prop_map(|mut o| {
            o[0] &= 0xfe;
            Mac(o)
        })
        .prop_filter("peer MAC", |m| m.validate_peer().is_ok())
}

fn budget() -> impl Strategy<Value = u16> {
    MIN_DATAGRAM_BUDGET..=MAX_DATAGRAM_BUDGET
}

fn reason() -> impl Strategy<Value = String> {
    "(?s).{0,64}"
}

fn peer_info(peer_id: u64) -> impl Strategy<Value = PeerInfo> {
    (role(), mac(), name()).prop_map(move |(role, mac, name)| PeerInfo {
        peer_id: PeerId(peer_id),
        role,
        mac,
        name,
    })
}

fn hello() -> impl Strategy<Value = Hello> {
    (
        role(),
        room(),
        mac(),
        secret(),
        proptest::option::of(secret()),
        budget(),
        name(),
    )
        .prop_map(
            |(role, room, mac, secret, gateway_token, datagram_budget, name)| Hello {
                version: PROTOCOL_VERSION,
                role,
                room,
                mac,
                secret,
                gateway_token,
                datagram_budget,
                name,
            },
        )
}

fn welcome() -> impl Strategy<Value = Welcome> {
    (
        btree_set(1..=u64::MAX, 1..10),
        budget(),
        MIN_MAX_FRAME..=u16::MAX,
    )
        .prop_flat_map(|(ids, room_budget, max_frame)| {
            let mut ids = ids.into_iter();
            let own = ids.next().unwrap_or(1);
            let peers: Vec<_> = ids.map(peer_info).collect();
            peers.prop_map(move |peers| Welcome {
                version: PROTOCOL_VERSION,
                peer_id: PeerId(own),
                room_budget,
                max_frame,
                peers,
            })
        })
}

fn stats() -> impl Strategy<Value = Stats> {
    (
        any::<[u64; 4]>(),
        btree_map("[a-z0-9_]{1,32}", any::<u64>(), 0..8),
    )
        .prop_map(
            |([frames_in, frames_out, bytes_in, bytes_out], drops)| Stats {
                frames_in,
                frames_out,
                bytes_in,
                bytes_out,
                drops,
            },
        )
}

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        hello().prop_map(Message::Hello),
        welcome().prop_map(Message::Welcome),
        (proptest::sample::select(RejectCode::ALL.to_vec()), reason())
            .prop_map(|(code, reason)| Message::Reject(Reject::new(code, reason))),
        (1..=u64::MAX)
            .prop_flat_map(peer_info)
            .prop_map(Message::PeerJoined),
        (1..=u64::MAX).prop_map(|id| Message::PeerLeft(PeerLeft {
            peer_id: PeerId(id)
        })),
        stats().prop_map(Message::Stats),
        reason().prop_map(|reason| Message::Disconnect(Disconnect { reason })),
    ]
}

/// Feeds `bytes` in pieces of the given sizes (cycled), polling after each push, the way the
/// runtime does. Returns the messages and the first error. Checks the buffer cap throughout.
fn feed(bytes: &[u8], sizes: &[usize]) -> (Vec<Message>, Option<DecodeError>) {
    let mut d = Decoder::new();
    let mut out = Vec::new();
    let mut rest = bytes;
    let mut sizes = sizes.iter().copied().cycle();
    while !rest.is_empty() {
        let piece = sizes.next().unwrap_or(1).clamp(1, rest.len());
        let mut chunk = &rest[..piece];
        rest = &rest[piece..];
        while !chunk.is_empty() {
            let taken = d.push(chunk);
            assert!(d.buffered() <= MAX_BUFFER);
            chunk = &chunk[taken..];
            loop {
                match d.poll() {
                    Ok(Some(m)) => out.push(m),
                    Ok(None) => break,
                    Err(e) => {
                        assert!(d.is_poisoned());
                        assert_eq!(d.push(b"x"), 0);
                        return (out, Some(e));
                    }
                }
            }
            // A full buffer always holds a complete frame or an error, so push makes progress.
            assert!(taken > 0 || chunk.is_empty(), "decoder stalled");
        }
    }
    (out, None)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn valid_messages_round_trip_through_any_chunking(
        msgs in vec(message(), 1..6),
        sizes in vec(1usize..600, 1..8),
    ) {
        let mut stream = Vec::new();
        for m in &msgs {
            prop_assert_eq!(m.validate(), Ok(()));
            encode_into(m, &mut stream).unwrap();
        }
        let (decoded, err) = feed(&stream, &sizes);
        prop_assert_eq!(err, None);
        prop_assert_eq!(decoded, msgs);
    }

    #[test]
    fn arbitrary_bytes_never_panic_or_overfill(
        bytes in vec(any::<u8>(), 0..40_000),
        sizes in vec(1usize..20_000, 1..8),
    ) {
        let _ = feed(&bytes, &sizes);
    }

    #[test]
    fn small_length_prefixes_with_arbitrary_bodies_never_panic(
        bodies in vec(vec(any::<u8>(), 0..300), 1..5),
        sizes in vec(1usize..64, 1..8),
    ) {
        let mut stream = Vec::new();
        for b in &bodies {
            stream.extend_from_slice(&(b.len() as u32).to_be_bytes());
            stream.extend_from_slice(b);
        }
        let (decoded, err) = feed(&stream, &sizes);
        // Whatever decoded is valid, and an error comes from the first bad frame.
        for m in &decoded {
            prop_assert_eq!(m.validate(), Ok(()));
        }
        prop_assert!(decoded.len() == bodies.len() || err.is_some());
    }

    #[test]
    fn mutated_valid_frames_never_panic(
        msg in message(),
        edits in vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        sizes in vec(1usize..64, 1..4),
    ) {
        let mut bytes = encode(&msg).unwrap();
        // Mutate the body only, so the frame stays complete and the JSON parser sees the edit.
        let body_len = bytes.len() - HEADER_LEN;
        for (at, byte) in edits {
            let i = HEADER_LEN + at.index(body_len);
            bytes[i] = byte;
        }
        let (decoded, err) = feed(&bytes, &sizes);
        prop_assert!(decoded.len() + usize::from(err.is_some()) == 1);
        for m in &decoded {
            prop_assert_eq!(m.validate(), Ok(()));
        }
    }

    #[test]
    fn json_shaped_text_never_panics(text in "[{}\\[\\]\":,0-9a-z_ .-]{0,200}") {
        let _ = decode_body(text.as_bytes());
    }
}
