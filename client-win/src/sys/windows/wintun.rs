//! Loading `wintun.dll`, and reading the values of the wintun crate that need `unsafe`.

use std::path::Path;

use crate::adapter::WaitHandle;

/// Loads `wintun.dll` from `path` (a bare file name uses the system's DLL search path).
///
/// # Errors
///
/// The loader's error, for example when the file is missing or built for another CPU.
pub(crate) fn load(path: &Path) -> Result<wintun::Wintun, wintun::Error> {
    // SAFETY: loading a library runs its DllMain; wintun.dll is WireGuard's signed library,
    // whose initialisation only sets up its own state, and `load_from_path` resolves every
    // function the crate calls (failing cleanly when one is missing) before handing it out.
    unsafe { wintun::load_from_path(path) }
}

/// `NET_LUID.Value` of a LUID the wintun crate returned.
pub(crate) fn luid_value(luid: &wintun::NET_LUID_LH) -> u64 {
    // SAFETY: NET_LUID_LH is a union of a u64 and a bitfield struct of the same size; every
    // bit pattern is a valid u64, so reading `Value` is always defined.
    unsafe { luid.Value }
}

/// The wait handle for a session's read-wait event (a `HANDLE` of the wintun crate's
/// `windows-sys` version, which is an integer there).
pub(crate) fn wait_handle(event: wintun::HANDLE) -> WaitHandle {
    // The conversion itself needs no `unsafe`; it lives here beside the other wintun FFI
    // values because its source type depends on the wintun crate's windows-sys version.
    WaitHandle::from_raw_handle(event as std::os::windows::io::RawHandle)
}
