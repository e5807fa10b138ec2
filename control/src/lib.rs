//! The softlan control plane: the JSON hello/welcome protocol spoken on the first
//! bidirectional QUIC stream of every connection, its validation rules and framing.
//!
//! - [`msg`]: the messages and their validation.
//! - [`codec`]: length-prefixed framing with an incremental decoder.
//! - [`admission`]: the relay's room and admission policy, sans-IO.
//! - [`link`]: join links (`lanparty://host:port/room?pin=…`).
//! - [`logging`]: log output for the binaries.
//! - [`peer`]: the gateway's and client's side of the control protocol, sans-IO.
//! - [`runtime`]: the tokio control thread and its channels to the datapath thread.
//! - [`session`]: the peer's connection state machine: reconnect with backoff and jitter,
//!   status lines.
//! - [`uplink`]: a peer's link to its relay: join, carry frames, reconnect.
//!
//! This crate sits above `lanparty-datapath` and below the binaries.

pub mod admission;
pub mod codec;
pub mod link;
pub mod logging;
pub mod msg;
pub mod peer;
pub mod runtime;
pub mod session;
pub mod uplink;
