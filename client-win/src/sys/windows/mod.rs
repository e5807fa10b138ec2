//! Windows system calls behind the client's adapters: the only code in this crate allowed to
//! use `unsafe`.
//!
//! Each submodule turns raw Win32 calls into safe functions and owning types; every `unsafe`
//! block says why it is sound.
//!
//! - [`iphelper`]: IP Helper rows (`MIB_*_ROW*`) and tables, converted to portable types.
//! - [`overlapped`]: a device handle with overlapped reads and writes (tap-windows6).
//! - [`registry`]: read-only registry keys.
//! - [`wait`]: waiting on several adapters' wait handles at once.
//! - [`wintun`]: loading `wintun.dll` and the two wintun values that need `unsafe` to read.

pub(crate) mod iphelper;
pub(crate) mod overlapped;
pub(crate) mod registry;
pub(crate) mod wait;
pub(crate) mod wintun;

/// Encodes `text` as a NUL-terminated UTF-16 string for a `PCWSTR` parameter.
fn wide(text: &str) -> Vec<u16> {
    text.encode_utf16().chain(std::iter::once(0)).collect()
}
