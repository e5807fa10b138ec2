//! Wire formats, as zero-copy views over byte buffers (`Frame<T: AsRef<[u8]>>`) with
//! `new_checked` for untrusted input, plus owned representations with `parse`/`emit`.
//!
//! No call on a view made by `new_checked` panics; `new_unchecked` views may panic on access
//! when the buffer is shorter than the header.

pub mod checksum;
pub mod ethernet;
pub mod overlay;
