//! Windows system code.
