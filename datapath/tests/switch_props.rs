//! Property tests: no datagram from any peer, in any order, with peers coming and going, makes
//! the switch panic, send a frame back to its ingress, or send it outside the room.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use lanparty_datapath::Mac;
use lanparty_datapath::switch::{
    DropReason, GroupBudget, LanFilter, LanVerdict, PeerId, Role, Room, RoomConfig, Verdict,
};
use lanparty_datapath::wire::overlay::{self, Header};
use proptest::prelude::*;

/// A small pool so that random frames hit client MACs, learned MACs and group addresses.
fn mac_pool() -> impl Strategy<Value = Mac> {
    prop_oneof![
        (0u8..6).prop_map(|i| Mac([0x02, 0, 0, 0, 0, i])),
        (0u8..6).prop_map(|i| Mac([0x00, 0x1b, 0x21, 0, 0, i])),
        Just(Mac::BROADCAST),
        Just(Mac([0x01, 0x00, 0x5e, 0, 0, 0xfb])),
        Just(Mac([0x01, 0x80, 0xc2, 0, 0, 0])),
        any::<[u8; 6]>().prop_map(Mac),
    ]
}

/// Overlay datagrams: mostly well-formed headers over frames with interesting EtherTypes,
/// sometimes pure noise.
fn datagram() -> impl Strategy<Value = Vec<u8>> {
    let frame = (
        mac_pool(),
        mac_pool(),
        prop_oneof![
            Just(0x0800u16),
            Just(0x86dd),
            Just(0x8100),
            Just(0x8137),
            Just(0x0806),
            0u16..0x600,
            any::<u16>(),
        ],
        proptest::collection::vec(any::<u8>(), 0..80),
    )
        .prop_map(|(dst, src, ethertype, payload)| {
            let mut frame = Vec::new();
            frame.extend_from_slice(&dst.0);
            frame.extend_from_slice(&src.0);
            frame.extend_from_slice(&ethertype.to_be_bytes());
            frame.extend_from_slice(&payload);
            frame
        });
    let header = prop_oneof![
        Just(Header::Whole),
        (
            prop_oneof![0u16..8, any::<u16>()],
            0u16..4,
            0u8..4,
            2u8..5,
            prop_oneof![Just(100u16), any::<u16>()]
        )
            .prop_map(
                |(origin, frame_id, index, count, total_len)| Header::Fragment {
                    origin,
                    frame_id,
                    index: index.min(count - 1),
                    count,
                    total_len,
                }
            ),
    ];
    prop_oneof![
        8 => (header, frame, 0usize..20).prop_map(|(header, frame, cut)| {
            let mut datagram = vec![0u8; header.len()];
            header.emit(&mut datagram);
            datagram.extend_from_slice(&frame[..frame.len().saturating_sub(cut)]);
            datagram
        }),
        1 => proptest::collection::vec(any::<u8>(), 0..64),
    ]
}

#[derive(Debug, Clone)]
enum Op {
    Datagram {
        from: u64,
        bytes: Vec<u8>,
        honest: bool,
    },
    Join {
        peer: u64,
        gateway: bool,
        mac: u8,
    },
    Leave {
        peer: u64,
    },
    Wait {
        millis: u64,
    },
    Timeout,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        20 => (0u64..8, datagram(), any::<bool>())
            .prop_map(|(from, bytes, honest)| Op::Datagram { from, bytes, honest }),
        2 => (0u64..8, any::<bool>(), 0u8..6)
            .prop_map(|(peer, gateway, mac)| Op::Join { peer, gateway, mac }),
        1 => (0u64..8).prop_map(|peer| Op::Leave { peer }),
        2 => (0u64..400_000).prop_map(|millis| Op::Wait { millis }),
        1 => Just(Op::Timeout),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_datagrams_never_leave_the_room_or_go_back(
        ops in proptest::collection::vec(op(), 1..120),
        max_learned in 1usize..8,
        decisions in 1usize..8,
    ) {
        let mut room = Room::new(RoomConfig {
            max_learned_macs: max_learned,
            fragment_decisions: decisions,
            client_group_budget: Some(GroupBudget { frames_per_second: 5, burst: 3 }),
            ..RoomConfig::default()
        });
        // Start with a gateway and two clients so that most datagrams meet a populated room.
        let mut members: HashSet<PeerId> = HashSet::new();
        for (peer, role) in [
            (PeerId(1), Role::Gateway),
            (PeerId(2), Role::Client { mac: Mac([0x02, 0, 0, 0, 0, 2]) }),
            (PeerId(3), Role::Client { mac: Mac([0x02, 0, 0, 0, 0, 3]) }),
        ] {
            room.add_peer(peer, role).unwrap();
            members.insert(peer);
        }
        let mut now = Instant::now();
        let mut out = Vec::new();
        let mut drops = 0u64;
        for op in ops {
            match op {
                Op::Datagram { from, mut bytes, honest } => {
                    let ingress = PeerId(from);
                    if honest && bytes.first() == Some(&0x11) {
                        // Most fragments carry their sender's origin.
                        if let Some(origin) = bytes.get_mut(1..3) {
                            origin.copy_from_slice(&overlay::origin_of(from).to_be_bytes());
                        }
                    }
                    if let (true, Some(Role::Client { mac })) = (honest, room.role(ingress)) {
                        // Most client traffic carries the client's own source MAC.
                        let start = match bytes.first() {
                            Some(0x10) => overlay::WHOLE_HEADER_LEN,
                            Some(0x11) => overlay::FRAGMENT_HEADER_LEN,
                            _ => 0,
                        };
                        if let Some(src) = bytes.get_mut(start + 6..start + 12) {
                            src.copy_from_slice(&mac.0);
                        }
                    }
                    let verdict = room.handle_datagram(now, ingress, &bytes, &mut out);
                    match verdict {
                        Verdict::Forward => {
                            prop_assert!(members.contains(&ingress));
                            // Every fragment forwarded carries its ingress's origin.
                            if let Ok(d) = overlay::Datagram::new_checked(&bytes[..])
                                && let Header::Fragment { origin, .. } = d.header()
                            {
                                prop_assert_eq!(origin, overlay::origin_of(from));
                            }
                            prop_assert!(!out.contains(&ingress));
                            let unique: HashSet<_> = out.iter().copied().collect();
                            prop_assert_eq!(unique.len(), out.len());
                            prop_assert!(unique.is_subset(&members));
                        }
                        Verdict::Drop(reason) => {
                            drops += 1;
                            prop_assert!(out.is_empty());
                            prop_assert_eq!(
                                reason == DropReason::UnknownIngress,
                                !members.contains(&ingress)
                            );
                        }
                    }
                }
                Op::Join { peer, gateway, mac } => {
                    let role = if gateway {
                        Role::Gateway
                    } else {
                        Role::Client { mac: Mac([0x02, 0, 0, 0, 0, mac]) }
                    };
                    if room.add_peer(PeerId(peer), role).is_ok() {
                        prop_assert!(members.insert(PeerId(peer)));
                    }
                }
                Op::Leave { peer } => {
                    let removed = room.remove_peer(PeerId(peer)).is_some();
                    prop_assert_eq!(removed, members.remove(&PeerId(peer)));
                    // Nothing in the table points at a departed peer.
                    for i in 0..6 {
                        for mac in [Mac([0x02, 0, 0, 0, 0, i]), Mac([0x00, 0x1b, 0x21, 0, 0, i])] {
                            if let Some(owner) = room.mac_owner(mac) {
                                prop_assert!(members.contains(&owner));
                            }
                        }
                    }
                }
                Op::Wait { millis } => now += Duration::from_millis(millis),
                Op::Timeout => room.handle_timeout(now),
            }
            prop_assert!(room.learned_macs() <= max_learned);
            prop_assert!(room.pending_fragment_decisions() <= decisions);
            prop_assert_eq!(room.peer_count(), members.len());
            if let Some(at) = room.poll_timeout() {
                prop_assert!(room.learned_macs() > 0);
                // Handling an overdue timeout always makes progress.
                if at <= now {
                    room.handle_timeout(now);
                    prop_assert!(room.poll_timeout().is_none_or(|next| next > now));
                }
            }
        }
        prop_assert_eq!(room.stats().drops.total(), drops);
    }

    #[test]
    fn arbitrary_lan_frames_never_panic_and_are_counted(
        frames in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..50),
    ) {
        let mut filter = LanFilter::new();
        filter.set_remotes([Mac([0x02, 0, 0, 0, 0, 1])]);
        let mut forwarded = 0;
        for frame in &frames {
            if filter.decide(frame) == LanVerdict::Forward {
                forwarded += 1;
            }
        }
        prop_assert_eq!(filter.forwarded(), forwarded);
        prop_assert_eq!(filter.drops().total() + forwarded, frames.len() as u64);
    }
}
