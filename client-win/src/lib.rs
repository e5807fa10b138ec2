//! The softlan client: a virtual network adapter on a LAN-party room.
//!
//! Decisions (addresses, routes, interface metrics, L2 emulation for L3 adapters) live in
//! portable, tested code; the platform layers that apply them stay thin.
//!
//! - [`config`]: flags, TOML file and join link resolved into one checked configuration.
//! - [`state`]: the state directory (our remembered MAC, the Windows undo file).
//! - [`status`]: the one status line the player reads.
//! - [`run`]: portable pieces of the loop (uplink and emulator settings, frame routing on L2
//!   adapters).
//! - [`engine`]: the datapath loop between a virtual adapter and the room, for every platform.
//! - `linux` (Linux only): TAP and TUN devices under the engine.
//! - `windows` (Windows only): wintun and tap-windows6 under the engine, with [`winplan`]
//!   applied through the IP Helper API.
//! - [`l2emu`]: Ethernet emulation for L3 adapters (TUN, wintun): ARP, neighbour discovery,
//!   broadcast mapping and a DHCP client, sans-IO.
//! - [`winplan`]: the plan of interface changes (address, routes, metric) and their undo.
//! - [`adapter`]: the portable adapter kinds and trait; the Windows devices and IP Helper
//!   calls behind it live in `sys` (Windows only).

pub mod adapter;
pub mod config;
pub mod engine;
pub mod l2emu;
#[cfg(target_os = "linux")]
pub mod linux;
pub mod run;
pub mod state;
pub mod status;
#[cfg(windows)]
pub mod windows;
pub mod winplan;

// Windows system calls (adapter devices, registry, IP Helper): the only place `unsafe` is allowed.
#[cfg(windows)]
#[path = "sys/windows/mod.rs"]
#[allow(unsafe_code)]
mod sys;
