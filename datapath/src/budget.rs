//! Datagram budgets: from the QUIC datagram size to the largest frame that travels whole, and the TCP MSS clamp.
