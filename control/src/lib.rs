//! The softlan control plane: the JSON hello/welcome protocol spoken on the first
//! bidirectional QUIC stream of every connection, its validation rules and framing.
//!
//! This crate sits above `lanparty-datapath` and below the binaries.
