//! The softlan datapath: everything that touches an Ethernet frame on its way through a room.
//!
//! # Layout
//!
//! Pure modules make no system calls and never read the clock; time is always an argument:
//!
//! - [`mac`]: the [`Mac`] newtype.
//! - [`wire`]: zero-copy views and representations of Ethernet frames and overlay datagrams.
//! - [`frag`]: splitting frames into overlay fragments and reassembling them.
//! - [`budget`]: datagram budgets and the TCP MSS clamp.
//! - [`offload`]: the virtio-net header of TUN/TAP offloads, TCP segmentation of the
//!   super-packets a device reads and coalescing of the segments written to it.
//! - [`switch`]: the relay's per-room MAC switch and L2 safety filters.
//! - [`quic`]: the sans-IO QUIC driver around `quinn_proto` and its TLS configuration.
//! - [`io`]: the UDP backend trait and the portable (quinn-udp) backend.
//! - [`runner`]: the I/O shell that moves datagrams between a backend and the QUIC driver.
//!
//! All operating-system code lives under one `sys` module, chosen once per platform with
//! `#[cfg]` + `#[path]`, and is the only place where `unsafe` is allowed.
//!
//! This crate has no tokio and no JSON: the control plane lives in `lanparty-control`.

pub mod budget;
pub mod frag;
pub mod io;
pub mod mac;
pub mod offload;
pub mod quic;
pub mod runner;
pub mod switch;
pub mod wire;

#[cfg(target_os = "linux")]
#[path = "sys/linux/mod.rs"]
#[allow(unsafe_code)]
pub mod sys;

#[cfg(windows)]
#[path = "sys/windows/mod.rs"]
#[allow(unsafe_code)]
pub mod sys;

pub use mac::Mac;
