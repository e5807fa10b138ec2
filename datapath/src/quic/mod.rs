//! The sans-IO QUIC driver around `quinn_proto` and its TLS configuration.
