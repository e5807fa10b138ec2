//! Splitting frames into overlay fragments and reassembling them.
