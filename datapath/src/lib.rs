//! The softlan datapath: everything that touches an Ethernet frame on its way through a room.
//!
//! # Layout
//!
//! Pure modules make no system calls and never read the clock; time is always an argument:
//!
//! - [`mac`]: the [`Mac`] newtype.
//! - [`wire`]: zero-copy views and representations of Ethernet frames and overlay datagrams.
//!
//! All operating-system code lives under one `sys` module, chosen once per platform with
//! `#[cfg]` + `#[path]`, and is the only place where `unsafe` is allowed.
//!
//! This crate has no tokio and no JSON: the control plane lives in `lanparty-control`.

pub mod mac;
pub mod wire;

pub use mac::Mac;
