//! Thread scheduling priority.

use std::io;

use windows_sys::Win32::System::Threading::{
    GetCurrentThread, SetThreadPriority, THREAD_PRIORITY_TIME_CRITICAL,
};

/// Raises the calling thread to `THREAD_PRIORITY_TIME_CRITICAL` within its process's priority
/// class, Windows' counterpart of a low real-time priority for a normal-class process. The
/// Linux priority number does not apply.
///
/// # Errors
///
/// The OS error when Windows refuses.
pub fn raise_current_thread(_priority: u8) -> io::Result<()> {
    // SAFETY: GetCurrentThread returns a pseudo-handle valid in the calling thread; no
    // pointers are passed.
    let ok = unsafe { SetThreadPriority(GetCurrentThread(), THREAD_PRIORITY_TIME_CRITICAL) };
    if ok != 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
