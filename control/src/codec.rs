//! Length-prefixed framing of control messages.
