//! The gateway's LAN-side filter: only frames a remote peer needs leave the party LAN.

use lanparty_datapath::Mac;
use lanparty_datapath::switch::{LanDropReason, LanFilter, LanVerdict};

const REMOTE_A: Mac = Mac([0x02, 0, 0, 0, 0, 0x0a]);
const REMOTE_B: Mac = Mac([0x02, 0, 0, 0, 0, 0x0b]);
const LAN_1: Mac = Mac([0x00, 0x1b, 0x21, 0, 0, 0x01]);
const LAN_2: Mac = Mac([0x00, 0x1b, 0x21, 0, 0, 0x02]);

fn eth(dst: Mac, src: Mac, ethertype: u16) -> Vec<u8> {
    let mut frame = Vec::with_capacity(60);
    frame.extend_from_slice(&dst.0);
    frame.extend_from_slice(&src.0);
    frame.extend_from_slice(&ethertype.to_be_bytes());
    frame.resize(60, 0);
    frame
}

fn filter() -> LanFilter {
    let mut filter = LanFilter::new();
    filter.set_remotes([REMOTE_A, REMOTE_B]);
    filter
}

#[test]
fn lan_frames_to_unknown_macs_stay_on_the_lan() {
    let mut filter = filter();
    assert_eq!(
        filter.decide(&eth(LAN_2, LAN_1, 0x0800)),
        LanVerdict::Drop(LanDropReason::LocalUnicast)
    );
    assert_eq!(
        filter.decide(&eth(LAN_1, LAN_2, 0x8137)),
        LanVerdict::Drop(LanDropReason::LocalUnicast)
    );
    assert_eq!(filter.drops().get(LanDropReason::LocalUnicast), 2);
    assert_eq!(filter.forwarded(), 0);
}

#[test]
fn lan_frames_to_remote_clients_cross() {
    let mut filter = filter();
    assert_eq!(
        filter.decide(&eth(REMOTE_A, LAN_1, 0x0800)),
        LanVerdict::Forward
    );
    assert_eq!(
        filter.decide(&eth(REMOTE_B, LAN_2, 0x8137)),
        LanVerdict::Forward
    );
    assert_eq!(filter.forwarded(), 2);
}

#[test]
fn lan_broadcast_and_multicast_cross() {
    let mut filter = LanFilter::new();
    let mdns = Mac([0x01, 0x00, 0x5e, 0, 0, 0xfb]);
    let ipv6_all_nodes = Mac([0x33, 0x33, 0, 0, 0, 1]);
    for dst in [Mac::BROADCAST, mdns, ipv6_all_nodes] {
        assert_eq!(
            filter.decide(&eth(dst, LAN_1, 0x0800)),
            LanVerdict::Forward,
            "{dst}"
        );
    }
}

#[test]
fn lan_loop_guard_drops_frames_from_remote_client_macs() {
    let mut filter = filter();
    // The gateway wrote a remote client's frame onto the LAN; it must not come back.
    for dst in [Mac::BROADCAST, REMOTE_B, LAN_1] {
        assert_eq!(
            filter.decide(&eth(dst, REMOTE_A, 0x0800)),
            LanVerdict::Drop(LanDropReason::LoopGuard),
            "{dst}"
        );
    }
    assert_eq!(filter.drops().get(LanDropReason::LoopGuard), 3);
}

#[test]
fn lan_switch_control_frames_stay_on_the_lan() {
    let mut filter = filter();
    for last in [0x00, 0x02, 0x0e, 0x0f] {
        let dst = Mac([0x01, 0x80, 0xc2, 0, 0, last]);
        assert_eq!(
            filter.decide(&eth(dst, LAN_1, 0x0026)),
            LanVerdict::Drop(LanDropReason::LinkLocalControl)
        );
    }
    let beyond = Mac([0x01, 0x80, 0xc2, 0, 0, 0x10]);
    assert_eq!(
        filter.decide(&eth(beyond, LAN_1, 0x0026)),
        LanVerdict::Forward
    );
}

#[test]
fn lan_malformed_frames_are_counted() {
    let mut filter = filter();
    assert_eq!(
        filter.decide(&[]),
        LanVerdict::Drop(LanDropReason::Malformed)
    );
    assert_eq!(
        filter.decide(&eth(REMOTE_A, LAN_1, 0x0800)[..13]),
        LanVerdict::Drop(LanDropReason::Malformed)
    );
    assert_eq!(filter.drops().get(LanDropReason::Malformed), 2);
    assert_eq!(filter.drops().total(), 2);
}

#[test]
fn remote_set_follows_peers_joining_and_leaving() {
    let mut filter = LanFilter::new();
    assert_eq!(
        filter.decide(&eth(REMOTE_A, LAN_1, 0x0800)),
        LanVerdict::Drop(LanDropReason::LocalUnicast)
    );
    assert!(filter.add_remote(REMOTE_A));
    assert!(!filter.add_remote(REMOTE_A));
    assert!(filter.is_remote(REMOTE_A));
    assert_eq!(
        filter.decide(&eth(REMOTE_A, LAN_1, 0x0800)),
        LanVerdict::Forward
    );
    assert!(filter.remove_remote(REMOTE_A));
    assert!(!filter.remove_remote(REMOTE_A));
    assert_eq!(
        filter.decide(&eth(REMOTE_A, LAN_1, 0x0800)),
        LanVerdict::Drop(LanDropReason::LocalUnicast)
    );
    filter.set_remotes([REMOTE_B]);
    assert_eq!(filter.remote_count(), 1);
    assert_eq!(
        filter.decide(&eth(REMOTE_B, LAN_1, 0x0800)),
        LanVerdict::Forward
    );
}

#[test]
fn lan_drop_reason_names_are_stable() {
    let names: Vec<_> = LanDropReason::ALL.iter().map(|r| r.name()).collect();
    assert_eq!(
        names,
        [
            "malformed",
            "local_unicast",
            "loop_guard",
            "link_local_control"
        ]
    );
}
