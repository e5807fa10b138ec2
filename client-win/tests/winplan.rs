//! Planning Windows interface changes and undoing them, against a model of the interfaces.

use std::net::Ipv4Addr;

use lanparty_client::winplan::{
    AddressConfig, Change, InterfaceId, InterfaceSnapshot, Ipv4Net, NetModel, PlanError,
    PlanOptions, ROOM_METRIC, Route, Snapshot, Undo, plan,
};
use proptest::prelude::*;

const ROOM: InterfaceId = InterfaceId {
    luid: 0x0006_0000_0100_0000,
    index: 42,
};
const ETHERNET: InterfaceId = InterfaceId {
    luid: 0x0006_0000_0200_0000,
    index: 7,
};
const WIFI: InterfaceId = InterfaceId {
    luid: 0x0047_0000_0300_0000,
    index: 12,
};

fn interface(id: InterfaceId, name: &str, metric: u32, automatic: bool) -> InterfaceSnapshot {
    InterfaceSnapshot {
        id,
        name: name.to_owned(),
        metric,
        automatic_metric: automatic,
        mtu: 1500,
        addresses: Vec::new(),
    }
}

fn snapshot() -> Snapshot {
    let mut room = interface(ROOM, "softlan", 25, true);
    room.mtu = 1420;
    Snapshot {
        interfaces: vec![
            interface(ETHERNET, "Ethernet", 25, true),
            interface(WIFI, "Wi-Fi", 35, true),
            room,
        ],
        routes: vec![Route {
            interface: ETHERNET,
            destination: net(Ipv4Addr::new(192, 168, 1, 0), 24),
            next_hop: Ipv4Addr::UNSPECIFIED,
        }],
    }
}

fn net(addr: Ipv4Addr, prefix: u8) -> Ipv4Net {
    Ipv4Net { addr, prefix }
}

fn config() -> AddressConfig {
    AddressConfig::new(
        Ipv4Addr::new(198, 18, 0, 77),
        24,
        Some(Ipv4Addr::new(198, 18, 0, 1)),
    )
}

fn on_link(prefix: Ipv4Net) -> Route {
    Route {
        interface: ROOM,
        destination: prefix,
        next_hop: Ipv4Addr::UNSPECIFIED,
    }
}

#[test]
fn plan_sets_address_mtu_routes_and_lowest_metric() {
    let plan = plan(&snapshot(), ROOM, &config(), PlanOptions::default()).unwrap();
    assert_eq!(
        plan.changes,
        vec![
            Change::SetMtu {
                interface: ROOM,
                mtu: 1500
            },
            Change::AddAddress {
                interface: ROOM,
                address: config().address
            },
            Change::AddRoute(on_link(net(Ipv4Addr::new(198, 18, 0, 0), 24))),
            Change::AddRoute(on_link(net(Ipv4Addr::BROADCAST, 32))),
            Change::SetMetric {
                interface: ROOM,
                automatic: false,
                metric: ROOM_METRIC
            },
        ]
    );
    assert_eq!(plan.metric_tie, None);
}

#[test]
fn undo_restores_previous_metric_and_automatic_flag_in_reverse_order() {
    let plan = plan(&snapshot(), ROOM, &config(), PlanOptions::default()).unwrap();
    assert_eq!(
        plan.undo.changes,
        vec![
            Change::SetMetric {
                interface: ROOM,
                automatic: true,
                metric: 25
            },
            Change::RemoveRoute(on_link(net(Ipv4Addr::BROADCAST, 32))),
            Change::RemoveRoute(on_link(net(Ipv4Addr::new(198, 18, 0, 0), 24))),
            Change::RemoveAddress {
                interface: ROOM,
                address: config().address
            },
            Change::SetMtu {
                interface: ROOM,
                mtu: 1420
            },
        ]
    );
}

#[test]
fn adapter_metric_is_below_every_other_interface_after_apply() {
    let snap = snapshot();
    let plan = plan(&snap, ROOM, &config(), PlanOptions::default()).unwrap();
    let mut model = NetModel::from_snapshot(&snap);
    model.apply_all(&plan.changes);
    let room = &model.interfaces[&ROOM.luid];
    assert!(!room.automatic_metric);
    for (luid, other) in &model.interfaces {
        if *luid != ROOM.luid {
            assert!(room.metric < other.metric, "{luid:#x}");
        }
    }
}

#[test]
fn apply_twice_changes_nothing_more() {
    let snap = snapshot();
    let plan = plan(&snap, ROOM, &config(), PlanOptions::default()).unwrap();
    let mut model = NetModel::from_snapshot(&snap);
    model.apply_all(&plan.changes);
    let once = model.clone();
    assert_ne!(
        once,
        NetModel::from_snapshot(&snap),
        "the plan changes something"
    );
    model.apply_all(&plan.changes);
    assert_eq!(model, once);
}

#[test]
fn undo_restores_the_original_state_and_twice_is_the_same() {
    let snap = snapshot();
    let plan = plan(&snap, ROOM, &config(), PlanOptions::default()).unwrap();
    let original = NetModel::from_snapshot(&snap);
    let mut model = original.clone();
    model.apply_all(&plan.changes);
    model.apply_all(&plan.undo.changes);
    assert_eq!(model, original);
    model.apply_all(&plan.undo.changes);
    assert_eq!(model, original);
}

#[test]
fn a_plan_from_the_applied_state_is_empty() {
    let snap = snapshot();
    let first = plan(&snap, ROOM, &config(), PlanOptions::default()).unwrap();
    let mut model = NetModel::from_snapshot(&snap);
    model.apply_all(&first.changes);
    let again = plan(
        &snapshot_of(&snap, &model),
        ROOM,
        &config(),
        PlanOptions::default(),
    )
    .unwrap();
    assert!(again.changes.is_empty(), "{:?}", again.changes);
    assert!(again.undo.changes.is_empty());
}

/// The snapshot a real system would report in the model's state.
fn snapshot_of(names: &Snapshot, model: &NetModel) -> Snapshot {
    Snapshot {
        interfaces: names
            .interfaces
            .iter()
            .map(|i| {
                let m = &model.interfaces[&i.id.luid];
                InterfaceSnapshot {
                    id: i.id,
                    name: i.name.clone(),
                    metric: m.metric,
                    automatic_metric: m.automatic_metric,
                    mtu: m.mtu,
                    addresses: m.addresses.iter().copied().collect(),
                }
            })
            .collect(),
        routes: model.routes.iter().copied().collect(),
    }
}

#[test]
fn existing_address_and_routes_are_neither_added_nor_removed() {
    let mut snap = snapshot();
    snap.interfaces[2].addresses.push(config().address);
    snap.routes
        .push(on_link(net(Ipv4Addr::new(198, 18, 0, 0), 24)));
    let plan = plan(&snap, ROOM, &config(), PlanOptions::default()).unwrap();
    assert!(
        !plan
            .changes
            .iter()
            .any(|c| matches!(c, Change::AddAddress { .. })),
        "{:?}",
        plan.changes
    );
    assert!(!plan.undo.changes.iter().any(|c| matches!(
        c,
        Change::RemoveAddress { .. }
            | Change::RemoveRoute(Route {
                destination: Ipv4Net { prefix: 24, .. },
                ..
            })
    )));
    // Undo leaves the pre-existing address in place.
    let mut model = NetModel::from_snapshot(&snap);
    model.apply_all(&plan.changes);
    model.apply_all(&plan.undo.changes);
    assert!(
        model.interfaces[&ROOM.luid]
            .addresses
            .contains(&config().address)
    );
}

#[test]
fn broadcast_route_can_be_left_out() {
    let plan = plan(
        &snapshot(),
        ROOM,
        &config(),
        PlanOptions {
            broadcast_route: false,
        },
    )
    .unwrap();
    assert!(!plan.changes.iter().any(|c| matches!(
        c,
        Change::AddRoute(r) if r.destination.addr == Ipv4Addr::BROADCAST
    )));
}

#[test]
fn another_interface_at_metric_one_is_reported_as_a_tie() {
    let mut snap = snapshot();
    snap.interfaces[1].metric = 1;
    snap.interfaces[1].automatic_metric = false;
    let plan = plan(&snap, ROOM, &config(), PlanOptions::default()).unwrap();
    assert_eq!(plan.metric_tie.as_deref(), Some("Wi-Fi"));
}

#[test]
fn invalid_inputs_are_errors() {
    let snap = snapshot();
    let missing = InterfaceId {
        luid: 99,
        index: 99,
    };
    assert_eq!(
        plan(&snap, missing, &config(), PlanOptions::default()),
        Err(PlanError::AdapterNotFound { luid: 99 })
    );
    let mut bad = config();
    bad.address.prefix = 33;
    assert_eq!(
        plan(&snap, ROOM, &bad, PlanOptions::default()),
        Err(PlanError::InvalidPrefix(33))
    );
    let mut bad = config();
    bad.mtu = 500;
    assert_eq!(
        plan(&snap, ROOM, &bad, PlanOptions::default()),
        Err(PlanError::InvalidMtu(500))
    );
    let mut bad = config();
    bad.address.addr = Ipv4Addr::new(224, 0, 0, 1);
    assert!(matches!(
        plan(&snap, ROOM, &bad, PlanOptions::default()),
        Err(PlanError::InvalidAddress(_))
    ));
}

#[test]
fn undo_survives_the_state_file() {
    let plan = plan(&snapshot(), ROOM, &config(), PlanOptions::default()).unwrap();
    let text = plan.undo.to_json().unwrap();
    assert!(text.contains("\"op\": \"set_metric\""), "{text}");
    assert_eq!(Undo::from_json(&text).unwrap(), plan.undo);
    let whole = serde_json::to_string(&plan).unwrap();
    assert_eq!(
        serde_json::from_str::<lanparty_client::winplan::Plan>(&whole).unwrap(),
        plan
    );
    assert!(Undo::from_json("{\"changes\": [{\"op\": \"format_disk\"}]}").is_err());
}

#[test]
fn replaying_undo_after_a_crash_midway_restores_the_original() {
    let snap = snapshot();
    let plan = plan(&snap, ROOM, &config(), PlanOptions::default()).unwrap();
    let original = NetModel::from_snapshot(&snap);
    for applied in 0..=plan.changes.len() {
        let mut model = original.clone();
        model.apply_all(&plan.changes[..applied]);
        let undo = Undo::from_json(&plan.undo.to_json().unwrap()).unwrap();
        model.apply_all(&undo.changes);
        assert_eq!(model, original, "crash after {applied} changes");
    }
}

prop_compose! {
    fn arb_snapshot()(
        metrics in proptest::collection::vec((1u32..10_000, any::<bool>()), 1..5),
        room_metric in 1u32..10_000,
        room_auto in any::<bool>(),
        room_mtu in 576u32..9000,
        has_addr in any::<bool>(),
        has_route in any::<bool>(),
    ) -> Snapshot {
        let mut interfaces: Vec<_> = metrics
            .iter()
            .enumerate()
            .map(|(i, (metric, auto))| {
                let id = InterfaceId { luid: 1000 + i as u64, index: 100 + i as u32 };
                interface(id, &format!("if{i}"), *metric, *auto)
            })
            .collect();
        let mut room = interface(ROOM, "softlan", room_metric, room_auto);
        room.mtu = room_mtu;
        if has_addr {
            room.addresses.push(config().address);
        }
        interfaces.push(room);
        let routes = if has_route {
            vec![on_link(net(Ipv4Addr::BROADCAST, 32))]
        } else {
            Vec::new()
        };
        Snapshot { interfaces, routes }
    }
}

proptest! {
    #[test]
    fn apply_is_idempotent_and_undo_restores(snap in arb_snapshot(), prefix in 8u8..31) {
        let mut cfg = config();
        cfg.address.prefix = prefix;
        let plan = plan(&snap, ROOM, &cfg, PlanOptions::default()).unwrap();
        let original = NetModel::from_snapshot(&snap);
        let mut model = original.clone();
        model.apply_all(&plan.changes);
        let applied = model.clone();
        model.apply_all(&plan.changes);
        prop_assert_eq!(&model, &applied);
        let room = &applied.interfaces[&ROOM.luid];
        prop_assert_eq!(room.metric, ROOM_METRIC);
        prop_assert!(!room.automatic_metric);
        prop_assert!(room.addresses.contains(&cfg.address));
        model.apply_all(&plan.undo.changes);
        prop_assert_eq!(&model, &original);
        model.apply_all(&plan.undo.changes);
        prop_assert_eq!(&model, &original);
    }
}
