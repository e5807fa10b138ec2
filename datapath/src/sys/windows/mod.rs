//! Windows system code.

pub mod sched;
