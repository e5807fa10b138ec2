//! Blocking on several wait handles at once (`WaitForMultipleObjects`).

use std::io;
use std::time::Duration;

use windows_sys::Win32::Foundation::{HANDLE, WAIT_FAILED, WAIT_OBJECT_0, WAIT_TIMEOUT};
use windows_sys::Win32::System::Threading::{INFINITE, WaitForMultipleObjects};

use crate::adapter::WaitHandle;

/// `MAXIMUM_WAIT_OBJECTS`.
const MAX_HANDLES: usize = 64;

/// Milliseconds for a Win32 wait: `INFINITE` for `None`, rounded up so that a short positive
/// timeout does not turn into a busy poll, and capped below `INFINITE`.
pub(crate) fn timeout_millis(timeout: Option<Duration>) -> u32 {
    let Some(timeout) = timeout else {
        return INFINITE;
    };
    let millis = timeout.as_nanos().div_ceil(1_000_000);
    u32::try_from(millis).map_or(INFINITE - 1, |ms| ms.min(INFINITE - 1))
}

/// Waits until one of `handles` is signalled or `timeout` passes.
pub(crate) fn wait_any(
    handles: &[WaitHandle],
    timeout: Option<Duration>,
) -> io::Result<Option<usize>> {
    if handles.is_empty() || handles.len() > MAX_HANDLES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "wait_any takes 1 to 64 handles",
        ));
    }
    let mut raw: [HANDLE; MAX_HANDLES] = [std::ptr::null_mut(); MAX_HANDLES];
    for (slot, handle) in raw.iter_mut().zip(handles) {
        *slot = handle.raw_handle();
    }
    // SAFETY: `raw` holds `handles.len()` (1..=64) handles, which the callers' adapters keep
    // open for the call; the array outlives the call.
    let result = unsafe {
        WaitForMultipleObjects(
            handles.len() as u32,
            raw.as_ptr(),
            0,
            timeout_millis(timeout),
        )
    };
    match result {
        WAIT_TIMEOUT => Ok(None),
        WAIT_FAILED => Err(io::Error::last_os_error()),
        n if (n - WAIT_OBJECT_0) < handles.len() as u32 => Ok(Some((n - WAIT_OBJECT_0) as usize)),
        // WAIT_ABANDONED_0 + n: only mutexes are abandoned, and adapters hand out events.
        other => Err(io::Error::other(format!(
            "unexpected wait result {other:#x}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use std::os::windows::io::{AsRawHandle, FromRawHandle, OwnedHandle};

    use windows_sys::Win32::System::Threading::{CreateEventW, SetEvent};

    use super::*;

    #[test]
    fn timeouts_round_up_and_none_is_infinite() {
        assert_eq!(timeout_millis(None), INFINITE);
        assert_eq!(timeout_millis(Some(Duration::ZERO)), 0);
        assert_eq!(timeout_millis(Some(Duration::from_micros(1))), 1);
        assert_eq!(timeout_millis(Some(Duration::from_millis(250))), 250);
        assert_eq!(
            timeout_millis(Some(Duration::from_secs(u64::MAX))),
            INFINITE - 1
        );
    }

    #[test]
    fn reports_which_handle_fired_or_the_timeout() {
        let events: Vec<_> = (0..3)
            .map(|_| {
                // SAFETY: null attributes and name are allowed; checked below.
                let event = unsafe { CreateEventW(std::ptr::null(), 1, 0, std::ptr::null()) };
                assert!(!event.is_null());
                // SAFETY: a new handle owned by nothing else.
                unsafe { OwnedHandle::from_raw_handle(event) }
            })
            .collect();
        let handles: Vec<_> = events
            .iter()
            .map(|event| WaitHandle::from_raw_handle(event.as_raw_handle()))
            .collect();
        assert_eq!(
            wait_any(&handles, Some(Duration::from_millis(10))).unwrap(),
            None
        );
        // SAFETY: a valid event handle.
        assert_ne!(unsafe { SetEvent(events[2].as_raw_handle()) }, 0);
        assert_eq!(
            wait_any(&handles, Some(Duration::from_secs(5))).unwrap(),
            Some(2)
        );
        assert_eq!(
            wait_any(&[], None).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
    }
}
