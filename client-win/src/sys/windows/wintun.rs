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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_dll_is_an_error_not_a_crash() {
        let err = load(Path::new(r"C:\lp-no-such-dir\wintun.dll")).err();
        assert!(
            err.is_some(),
            "loading a file that does not exist must fail"
        );
    }

    #[test]
    fn luid_value_reads_the_whole_union() {
        let luid = wintun::NET_LUID_LH {
            Value: 0x0123_4567_89ab_cdef,
        };
        assert_eq!(luid_value(&luid), 0x0123_4567_89ab_cdef);
    }
}
