//! The softlan client: a virtual network adapter on a LAN-party room.
//!
//! Decisions (addresses, routes, interface metrics, L2 emulation for L3 adapters) live in
//! portable, tested code; the Windows-only layer that applies them stays thin.
//!
//! - [`l2emu`]: Ethernet emulation for L3 adapters (TUN, wintun): ARP, neighbour discovery,
//!   broadcast mapping and a DHCP client, sans-IO.
//! - [`winplan`]: the plan of interface changes (address, routes, metric) and their undo.

pub mod adapter;
pub mod l2emu;
pub mod winplan;

// Windows system calls (adapter devices, registry, IP Helper): the only place `unsafe` is allowed.
#[cfg(windows)]
#[path = "sys/windows/mod.rs"]
#[allow(unsafe_code)]
mod sys;
