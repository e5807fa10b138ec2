//! Linux system code: io_uring, AF_PACKET rings, TUN/TAP devices, network namespaces.
//!
//! Every kernel resource is owned by an RAII type; every `unsafe` block carries a SAFETY
//! comment.

pub mod afpacket;
pub mod netns;
pub mod tuntap;
pub mod uring;
