//! `lanparty-perf` as a library: the one-machine LAN-party lab, so that integration tests and the
//! end-to-end benchmarks can build it. The `lanparty-perf` binary wires it to its command line;
//! the benchmark code lives in the binary.

pub mod lab;
