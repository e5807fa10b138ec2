//! The plan of interface changes (address, mask, MTU, routes, metric) and their undo, as pure
//! data.
//!
//! The Windows layer takes a [`Snapshot`] of the interfaces (metrics, automatic-metric flags,
//! MTUs, IPv4 addresses) and of the IPv4 routes through the room adapter, and asks [`plan`]
//! what to change for an [`AddressConfig`]. The answer is a [`Plan`]: the [`Change`]s to apply,
//! in order, and the [`Undo`] that puts everything back. The client writes the undo to its state
//! file *before* applying anything, so that after a crash the next start replays it.
//!
//! The plan is a diff: it holds only what differs from the snapshot, and the undo holds only the
//! inverse of those changes (an address or route that was already there is neither added nor
//! removed later).
//!
//! Metric rule: the room adapter must be preferred for 255.255.255.255 broadcasts, which
//! Windows sends through the interface with the lowest interface metric. The plan turns the
//! adapter's automatic metric off and sets its metric to [`ROOM_METRIC`] (1). Windows' automatic
//! metrics start at 5 (links faster than 2 Gb/s) and a manual metric of 1 elsewhere is rare;
//! when another interface already has metric 1 or lower the adapter cannot be strictly first
//! and [`Plan::metric_tie`] names that interface so the status can say so.
//!
//! Every change is idempotent by definition: adding an address or route that exists and
//! removing one that does not are successes, so the applier must treat Windows'
//! `ERROR_OBJECT_ALREADY_EXISTS` and `ERROR_NOT_FOUND` as success. [`NetModel`] models the
//! interface state as data with exactly those semantics; tests apply plans and undos to it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

/// The metric the room adapter gets.
pub const ROOM_METRIC: u32 = 1;
/// The MTU the room adapter gets unless the address configuration says otherwise.
pub const DEFAULT_MTU: u32 = 1500;
/// The smallest MTU an IPv4 interface may have (RFC 791: every host accepts 576-byte
/// datagrams; Windows refuses less).
pub const MIN_MTU: u32 = 576;

/// An interface, by the numbers Windows uses for it (opaque here).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct InterfaceId {
    /// `NET_LUID` value.
    pub luid: u64,
    /// Interface index.
    pub index: u32,
}

/// One IPv4 address with its prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Ipv4Net {
    /// Address.
    pub addr: Ipv4Addr,
    /// Prefix length (0..=32).
    pub prefix: u8,
}

impl Ipv4Net {
    /// The network address (host bits cleared).
    pub fn network(&self) -> Ipv4Addr {
        let mask = u32::MAX
            .checked_shl(32 - u32::from(self.prefix.min(32)))
            .unwrap_or(0);
        Ipv4Addr::from(u32::from(self.addr) & mask)
    }
}

/// An IPv4 route through an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Route {
    /// The interface the route goes out of.
    pub interface: InterfaceId,
    /// Destination prefix.
    pub destination: Ipv4Net,
    /// Next hop; 0.0.0.0 for on-link.
    pub next_hop: Ipv4Addr,
}

/// What the planner needs to know about one interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterfaceSnapshot {
    /// Identity.
    pub id: InterfaceId,
    /// Friendly name, for messages.
    pub name: String,
    /// IPv4 interface metric.
    pub metric: u32,
    /// True when Windows chooses the metric from the link speed.
    pub automatic_metric: bool,
    /// IPv4 MTU.
    pub mtu: u32,
    /// IPv4 unicast addresses.
    pub addresses: Vec<Ipv4Net>,
}

/// The state the planner starts from.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Snapshot {
    /// Every IPv4 interface, the room adapter included.
    pub interfaces: Vec<InterfaceSnapshot>,
    /// IPv4 routes (at least those through the room adapter).
    pub routes: Vec<Route>,
}

/// The address the room adapter should carry (from DHCP or static configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddressConfig {
    /// Address and prefix.
    pub address: Ipv4Net,
    /// Router of the room's LAN, if any. The plan adds no default route through it: the room
    /// carries LAN traffic, not the player's Internet.
    pub router: Option<Ipv4Addr>,
    /// MTU, normally [`DEFAULT_MTU`].
    pub mtu: u32,
}

impl AddressConfig {
    /// An address with the default MTU, as DHCP ([`crate::l2emu::Event::AddressAcquired`]) or
    /// static configuration gives it.
    pub fn new(addr: Ipv4Addr, prefix: u8, router: Option<Ipv4Addr>) -> Self {
        Self {
            address: Ipv4Net { addr, prefix },
            router,
            mtu: DEFAULT_MTU,
        }
    }
}

/// Options of the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanOptions {
    /// Add a 255.255.255.255/32 on-link route through the adapter when the snapshot has none.
    pub broadcast_route: bool,
}

impl Default for PlanOptions {
    fn default() -> Self {
        Self {
            broadcast_route: true,
        }
    }
}

/// One idempotent change to the interface state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Change {
    /// Add a unicast address (success if present).
    AddAddress {
        /// Interface.
        interface: InterfaceId,
        /// Address and prefix (the mask).
        address: Ipv4Net,
    },
    /// Remove a unicast address (success if absent).
    RemoveAddress {
        /// Interface.
        interface: InterfaceId,
        /// Address and prefix.
        address: Ipv4Net,
    },
    /// Set the IPv4 MTU.
    SetMtu {
        /// Interface.
        interface: InterfaceId,
        /// MTU in bytes.
        mtu: u32,
    },
    /// Set the automatic-metric flag and the metric. With `automatic` true Windows picks the
    /// metric again and `metric` is what it was before the plan, for the record.
    SetMetric {
        /// Interface.
        interface: InterfaceId,
        /// Automatic-metric flag.
        automatic: bool,
        /// Metric.
        metric: u32,
    },
    /// Add a route (success if present).
    AddRoute(Route),
    /// Remove a route (success if absent).
    RemoveRoute(Route),
}

/// The changes that reverse a plan, in order. Serialise it to the state file before applying
/// the plan.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Undo {
    /// Changes to apply, in order.
    pub changes: Vec<Change>,
}

impl Undo {
    /// JSON for the state file.
    ///
    /// # Errors
    ///
    /// Never in practice: every field serialises.
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string_pretty(self)
    }

    /// Reads an undo back from the state file.
    ///
    /// # Errors
    ///
    /// When the text is not an undo record.
    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }
}

/// What to change and how to put it back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// Changes to apply, in order.
    pub changes: Vec<Change>,
    /// The inverse, in order.
    pub undo: Undo,
    /// Another interface whose metric is already [`ROOM_METRIC`] or lower: broadcasts may
    /// leave through it instead (its name).
    pub metric_tie: Option<String>,
}

/// Why no plan could be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// The room adapter is not in the snapshot.
    #[error("room adapter (luid {luid:#x}) not found among the interfaces")]
    AdapterNotFound {
        /// The adapter's LUID.
        luid: u64,
    },
    /// A prefix longer than 32.
    #[error("invalid IPv4 prefix length {0}")]
    InvalidPrefix(u8),
    /// An MTU below 576 or above 65535.
    #[error("invalid MTU {0}: expected 576..=65535")]
    InvalidMtu(u32),
    /// The address is not a usable unicast address.
    #[error("{0} cannot be an interface address")]
    InvalidAddress(Ipv4Addr),
}

/// Plans the changes that give `adapter` the address `config` and the lowest metric.
///
/// Order: MTU, address, on-link subnet route, broadcast route, metric. The undo reverses it:
/// metric (flag and value), routes, address, MTU.
///
/// # Errors
///
/// [`PlanError`] when the adapter is missing from the snapshot or the configuration is invalid.
pub fn plan(
    snapshot: &Snapshot,
    adapter: InterfaceId,
    config: &AddressConfig,
    options: PlanOptions,
) -> Result<Plan, PlanError> {
    let addr = config.address.addr;
    if config.address.prefix > 32 {
        return Err(PlanError::InvalidPrefix(config.address.prefix));
    }
    if !(MIN_MTU..=65_535).contains(&config.mtu) {
        return Err(PlanError::InvalidMtu(config.mtu));
    }
    if addr.is_unspecified() || addr.is_broadcast() || addr.is_multicast() || addr.is_loopback() {
        return Err(PlanError::InvalidAddress(addr));
    }
    let current = snapshot
        .interfaces
        .iter()
        .find(|i| i.id.luid == adapter.luid)
        .ok_or(PlanError::AdapterNotFound { luid: adapter.luid })?;
    let mut changes = Vec::new();
    let mut undo = Vec::new();

    if current.mtu != config.mtu {
        changes.push(Change::SetMtu {
            interface: adapter,
            mtu: config.mtu,
        });
        undo.push(Change::SetMtu {
            interface: adapter,
            mtu: current.mtu,
        });
    }
    if !current.addresses.contains(&config.address) {
        changes.push(Change::AddAddress {
            interface: adapter,
            address: config.address,
        });
        undo.push(Change::RemoveAddress {
            interface: adapter,
            address: config.address,
        });
    }
    let mut routes = vec![Route {
        interface: adapter,
        destination: Ipv4Net {
            addr: config.address.network(),
            prefix: config.address.prefix,
        },
        next_hop: Ipv4Addr::UNSPECIFIED,
    }];
    if options.broadcast_route {
        routes.push(Route {
            interface: adapter,
            destination: Ipv4Net {
                addr: Ipv4Addr::BROADCAST,
                prefix: 32,
            },
            next_hop: Ipv4Addr::UNSPECIFIED,
        });
    }
    for route in routes {
        if !snapshot.routes.contains(&route) {
            changes.push(Change::AddRoute(route));
            undo.push(Change::RemoveRoute(route));
        }
    }
    if current.automatic_metric || current.metric != ROOM_METRIC {
        changes.push(Change::SetMetric {
            interface: adapter,
            automatic: false,
            metric: ROOM_METRIC,
        });
        undo.push(Change::SetMetric {
            interface: adapter,
            automatic: current.automatic_metric,
            metric: current.metric,
        });
    }
    undo.reverse();
    let metric_tie = snapshot
        .interfaces
        .iter()
        .filter(|i| i.id.luid != adapter.luid && i.metric <= ROOM_METRIC)
        .min_by_key(|i| i.metric)
        .map(|i| i.name.clone());
    Ok(Plan {
        changes,
        undo: Undo { changes: undo },
        metric_tie,
    })
}

/// The interface state as data, with the semantics the applier must give each [`Change`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NetModel {
    /// Interfaces by LUID.
    pub interfaces: BTreeMap<u64, ModelInterface>,
    /// Routes.
    pub routes: BTreeSet<Route>,
}

/// One interface of a [`NetModel`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelInterface {
    /// Metric.
    pub metric: u32,
    /// Automatic-metric flag.
    pub automatic_metric: bool,
    /// MTU.
    pub mtu: u32,
    /// Addresses.
    pub addresses: BTreeSet<Ipv4Net>,
}

impl NetModel {
    /// The model of a snapshot.
    pub fn from_snapshot(snapshot: &Snapshot) -> Self {
        Self {
            interfaces: snapshot
                .interfaces
                .iter()
                .map(|i| {
                    (
                        i.id.luid,
                        ModelInterface {
                            metric: i.metric,
                            automatic_metric: i.automatic_metric,
                            mtu: i.mtu,
                            addresses: i.addresses.iter().copied().collect(),
                        },
                    )
                })
                .collect(),
            routes: snapshot.routes.iter().copied().collect(),
        }
    }

    /// Applies one change. A change for an interface the model does not know does nothing,
    /// like Windows' `ERROR_NOT_FOUND` that the applier ignores.
    pub fn apply(&mut self, change: &Change) {
        match change {
            Change::AddRoute(route) => {
                self.routes.insert(*route);
            }
            Change::RemoveRoute(route) => {
                self.routes.remove(route);
            }
            Change::AddAddress { interface, address } => {
                if let Some(i) = self.interfaces.get_mut(&interface.luid) {
                    i.addresses.insert(*address);
                }
            }
            Change::RemoveAddress { interface, address } => {
                if let Some(i) = self.interfaces.get_mut(&interface.luid) {
                    i.addresses.remove(address);
                }
            }
            Change::SetMtu { interface, mtu } => {
                if let Some(i) = self.interfaces.get_mut(&interface.luid) {
                    i.mtu = *mtu;
                }
            }
            Change::SetMetric {
                interface,
                automatic,
                metric,
            } => {
                if let Some(i) = self.interfaces.get_mut(&interface.luid) {
                    i.automatic_metric = *automatic;
                    i.metric = *metric;
                }
            }
        }
    }

    /// Applies changes in order.
    pub fn apply_all<'a>(&mut self, changes: impl IntoIterator<Item = &'a Change>) {
        for change in changes {
            self.apply(change);
        }
    }
}
