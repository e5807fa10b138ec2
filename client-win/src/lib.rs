//! The softlan client: a virtual network adapter on a LAN-party room.
//!
//! Decisions (addresses, routes, interface metrics, L2 emulation for L3 adapters) live in
//! portable, tested code; the Windows-only layer that applies them stays thin.
