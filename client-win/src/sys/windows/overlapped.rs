//! A device opened for overlapped I/O (tap-windows6), with one read and a pool of writes in
//! flight.
//!
//! Overlapped I/O lends the kernel an `OVERLAPPED` and a buffer until the operation completes,
//! so both live in heap blocks that this module allocates, never moves, and frees only after
//! the kernel is done with them: [`OverlappedDevice`]'s `Drop` cancels what is in flight and
//! waits for every cancellation before the blocks are freed (and leaks a block rather than
//! free it when it cannot be sure).
//!
//! Each slot has its own manual-reset event, which `ReadFile`/`WriteFile` reset when an
//! operation starts and the kernel sets when it completes; the read slot's event is what the
//! client's loop waits on.

use std::io;
use std::os::windows::io::{AsRawHandle, FromRawHandle, OwnedHandle, RawHandle};
use std::ptr::{self, NonNull};

use windows_sys::Win32::Foundation::{
    ERROR_IO_INCOMPLETE, ERROR_IO_PENDING, ERROR_OPERATION_ABORTED, GENERIC_READ, GENERIC_WRITE,
    GetLastError, HANDLE, INVALID_HANDLE_VALUE,
};
use windows_sys::Win32::Storage::FileSystem::{
    CreateFileW, FILE_ATTRIBUTE_SYSTEM, FILE_FLAG_OVERLAPPED, OPEN_EXISTING, ReadFile, WriteFile,
};
use windows_sys::Win32::System::IO::{
    CancelIoEx, DeviceIoControl, GetOverlappedResult, OVERLAPPED,
};
use windows_sys::Win32::System::Threading::CreateEventW;

use super::wide;

fn last_error() -> u32 {
    // SAFETY: GetLastError only reads the calling thread's last-error value.
    unsafe { GetLastError() }
}

fn win32(code: u32) -> io::Error {
    io::Error::from_raw_os_error(code as i32)
}

/// A manual-reset event, initially not signalled.
fn new_event() -> io::Result<OwnedHandle> {
    // SAFETY: null security attributes and name are allowed; the result is checked below.
    let event = unsafe { CreateEventW(ptr::null(), 1, 0, ptr::null()) };
    if event.is_null() {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: CreateEventW returned a new handle that nothing else owns.
    Ok(unsafe { OwnedHandle::from_raw_handle(event) })
}

/// An `OVERLAPPED` and its buffer on the heap, lent to the kernel while `pending`.
#[derive(Debug)]
struct IoSlot {
    overlapped: NonNull<OVERLAPPED>,
    buf: NonNull<u8>,
    capacity: usize,
    event: OwnedHandle,
    pending: bool,
}

impl IoSlot {
    fn new(capacity: usize) -> io::Result<Self> {
        let event = new_event()?;
        let overlapped = OVERLAPPED {
            hEvent: event.as_raw_handle(),
            ..OVERLAPPED::default()
        };
        let overlapped = NonNull::from(Box::leak(Box::new(overlapped)));
        let buf = Box::leak(vec![0_u8; capacity.max(1)].into_boxed_slice());
        let buf = NonNull::new(buf.as_mut_ptr()).unwrap_or(NonNull::dangling());
        Ok(Self {
            overlapped,
            buf,
            capacity: capacity.max(1),
            event,
            pending: false,
        })
    }

    /// Prepares the `OVERLAPPED` for a new operation: everything zero but the event.
    fn reset(&mut self) -> *mut OVERLAPPED {
        debug_assert!(!self.pending);
        let overlapped = self.overlapped.as_ptr();
        // SAFETY: no operation is in flight (`pending` is false), so we have the only access
        // to the block, which came from Box::leak and is valid for writes.
        unsafe {
            overlapped.write(OVERLAPPED {
                hEvent: self.event.as_raw_handle(),
                ..OVERLAPPED::default()
            })
        };
        overlapped
    }

    /// Whether the in-flight operation finished, and how: `None` while it runs.
    fn poll(&mut self, device: HANDLE, wait: bool) -> Option<Result<usize, u32>> {
        debug_assert!(self.pending);
        let mut transferred = 0_u32;
        // SAFETY: `device` is the handle the operation was started on and `overlapped` the
        // block it was started with, still allocated; GetOverlappedResult only reads it.
        let ok = unsafe {
            GetOverlappedResult(
                device,
                self.overlapped.as_ptr(),
                &mut transferred,
                i32::from(wait),
            )
        };
        if ok != 0 {
            self.pending = false;
            return Some(Ok(transferred as usize));
        }
        match last_error() {
            ERROR_IO_INCOMPLETE => None,
            code => {
                self.pending = false;
                Some(Err(code))
            }
        }
    }
}

impl Drop for IoSlot {
    fn drop(&mut self) {
        if self.pending {
            // The kernel may still write here: leaking is the only sound choice. The owning
            // device's Drop waits for completion first, so this is not expected to happen.
            return;
        }
        // SAFETY: both blocks came from Box::leak with these types and lengths, no operation
        // uses them (`pending` is false), and they are freed once, here.
        unsafe {
            drop(Box::from_raw(self.overlapped.as_ptr()));
            drop(Box::from_raw(ptr::slice_from_raw_parts_mut(
                self.buf.as_ptr(),
                self.capacity,
            )));
        }
    }
}

/// A device handle for overlapped I/O: one read kept in flight, up to N writes.
#[derive(Debug)]
pub(crate) struct OverlappedDevice {
    // Declared first so that it is closed before the slots are freed (all I/O has completed by
    // then, see Drop).
    handle: OwnedHandle,
    read: IoSlot,
    writes: Vec<IoSlot>,
    failed_writes: u64,
}

// SAFETY: the slots' heap blocks are owned by this value alone; the handle and events may be
// used from any thread. A read in flight belongs to the thread that started it and Windows
// cancels it if that thread exits; `read` then sees ERROR_OPERATION_ABORTED and starts over.
unsafe impl Send for OverlappedDevice {}

impl OverlappedDevice {
    /// Opens `path` (`\\.\Global\{GUID}.tap`) for overlapped reads and writes, with a read
    /// buffer of `read_capacity` bytes and no write slots yet (see [`Self::set_write_slots`]).
    pub(crate) fn open(path: &str, read_capacity: usize) -> io::Result<Self> {
        let path = wide(path);
        // SAFETY: `path` is NUL-terminated and outlives the call; null security attributes and
        // template are allowed; the result is checked below.
        let handle = unsafe {
            CreateFileW(
                path.as_ptr(),
                GENERIC_READ | GENERIC_WRITE,
                0,
                ptr::null(),
                OPEN_EXISTING,
                FILE_ATTRIBUTE_SYSTEM | FILE_FLAG_OVERLAPPED,
                ptr::null_mut(),
            )
        };
        if handle == INVALID_HANDLE_VALUE {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: CreateFileW returned a new handle that nothing else owns.
        let handle = unsafe { OwnedHandle::from_raw_handle(handle) };
        Ok(Self {
            read: IoSlot::new(read_capacity)?,
            handle,
            writes: Vec::new(),
            failed_writes: 0,
        })
    }

    fn raw(&self) -> HANDLE {
        self.handle.as_raw_handle()
    }

    /// Allocates `count` write slots of `capacity` bytes each (call before the first write).
    pub(crate) fn set_write_slots(&mut self, count: usize, capacity: usize) -> io::Result<()> {
        // Slots with a write in flight must not be dropped: keep them and add the rest.
        let busy = self.writes.iter().filter(|slot| slot.pending).count();
        self.writes.retain(|slot| slot.pending);
        for _ in busy..count.max(1) {
            self.writes.push(IoSlot::new(capacity)?);
        }
        Ok(())
    }

    /// Sends `code` with `input`, waits for it, and returns the bytes written to `output`.
    pub(crate) fn ioctl(
        &mut self,
        code: u32,
        input: &[u8],
        output: &mut [u8],
    ) -> io::Result<usize> {
        let event = new_event()?;
        let mut overlapped = OVERLAPPED {
            hEvent: event.as_raw_handle(),
            ..OVERLAPPED::default()
        };
        let mut returned = 0_u32;
        let input_ptr = if input.is_empty() {
            ptr::null()
        } else {
            input.as_ptr().cast()
        };
        let output_ptr = if output.is_empty() {
            ptr::null_mut()
        } else {
            output.as_mut_ptr().cast()
        };
        // SAFETY: the buffers and `overlapped` live on this stack frame until the operation has
        // completed: a pending ioctl is waited for below before returning.
        let ok = unsafe {
            DeviceIoControl(
                self.raw(),
                code,
                input_ptr,
                input.len() as u32,
                output_ptr,
                output.len() as u32,
                &mut returned,
                &mut overlapped,
            )
        };
        if ok != 0 {
            return Ok(returned as usize);
        }
        match last_error() {
            ERROR_IO_PENDING => {
                // SAFETY: same handle and OVERLAPPED as the pending call; waiting (bWait = TRUE)
                // returns only once the kernel is done with the buffers and `overlapped`.
                let ok = unsafe { GetOverlappedResult(self.raw(), &overlapped, &mut returned, 1) };
                if ok != 0 {
                    Ok(returned as usize)
                } else {
                    Err(io::Error::last_os_error())
                }
            }
            code => Err(win32(code)),
        }
    }

    /// Starts a read into the read slot; it may complete at once or stay pending.
    fn start_read(&mut self) -> io::Result<()> {
        let overlapped = self.read.reset();
        let len = self.read.capacity as u32;
        // SAFETY: the buffer and OVERLAPPED are heap blocks owned by the slot, which is marked
        // pending below and so neither reused nor freed until the kernel has completed it.
        let ok = unsafe {
            ReadFile(
                self.raw(),
                self.read.buf.as_ptr(),
                len,
                ptr::null_mut(),
                overlapped,
            )
        };
        if ok != 0 {
            self.read.pending = true;
            return Ok(());
        }
        match last_error() {
            ERROR_IO_PENDING => {
                self.read.pending = true;
                Ok(())
            }
            code => Err(win32(code)),
        }
    }

    /// Copies one received frame into `out` (truncating it to `out`), or `None` when no frame
    /// has arrived; the read slot's event is then armed.
    pub(crate) fn read(&mut self, out: &mut [u8]) -> io::Result<Option<usize>> {
        // A read cancelled by its thread's exit is restarted once; a second abort is an error.
        for _ in 0..2 {
            if !self.read.pending {
                self.start_read()?;
            }
            let device = self.raw();
            match self.read.poll(device, false) {
                None => return Ok(None),
                Some(Ok(len)) => {
                    let len = len.min(out.len()).min(self.read.capacity);
                    // SAFETY: the read completed, so the kernel no longer writes the buffer,
                    // which holds `capacity` initialised bytes.
                    let frame = unsafe { std::slice::from_raw_parts(self.read.buf.as_ptr(), len) };
                    out[..len].copy_from_slice(frame);
                    // The next read starts on the next call, which the loop makes before it
                    // waits (the adapter contract), so the event is armed before any wait.
                    return Ok(Some(len));
                }
                Some(Err(ERROR_OPERATION_ABORTED)) => {}
                Some(Err(code)) => return Err(win32(code)),
            }
        }
        Err(win32(ERROR_OPERATION_ABORTED))
    }

    /// Starts writing `data` as one frame; `WouldBlock` when every write slot is busy.
    pub(crate) fn write(&mut self, data: &[u8]) -> io::Result<()> {
        let device = self.raw();
        let mut free = None;
        for (i, slot) in self.writes.iter_mut().enumerate() {
            if slot.pending {
                match slot.poll(device, false) {
                    None => continue,
                    Some(Ok(_)) => {}
                    Some(Err(_)) => self.failed_writes += 1,
                }
            }
            free = Some(i);
            break;
        }
        let Some(i) = free else {
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                "all TAP write slots are busy",
            ));
        };
        let slot = &mut self.writes[i];
        if data.is_empty() || data.len() > slot.capacity {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "frame of {} bytes does not fit the adapter (1 to {})",
                    data.len(),
                    slot.capacity
                ),
            ));
        }
        // SAFETY: the slot is not pending, so the kernel does not use its buffer, which holds
        // `capacity` >= `data.len()` bytes and does not overlap `data`.
        unsafe { ptr::copy_nonoverlapping(data.as_ptr(), slot.buf.as_ptr(), data.len()) };
        let overlapped = slot.reset();
        // SAFETY: buffer and OVERLAPPED are the slot's heap blocks; the slot is marked pending
        // when the write is in flight, so they stay allocated and untouched until it completes.
        let ok = unsafe {
            WriteFile(
                device,
                slot.buf.as_ptr(),
                data.len() as u32,
                ptr::null_mut(),
                overlapped,
            )
        };
        if ok != 0 {
            // Completed at once: the kernel is done with the slot.
            return Ok(());
        }
        match last_error() {
            ERROR_IO_PENDING => {
                slot.pending = true;
                Ok(())
            }
            code => Err(win32(code)),
        }
    }

    /// The read slot's event: signalled when a read may make progress.
    pub(crate) fn read_event(&self) -> RawHandle {
        self.read.event.as_raw_handle()
    }

    /// Writes that completed with an error after `write` returned.
    pub(crate) fn failed_writes(&self) -> u64 {
        self.failed_writes
    }
}

impl Drop for OverlappedDevice {
    fn drop(&mut self) {
        let device = self.raw();
        let any_pending = self.read.pending || self.writes.iter().any(|slot| slot.pending);
        if !any_pending {
            return;
        }
        // SAFETY: cancelling every operation of our own handle (null OVERLAPPED) touches no
        // memory of ours.
        unsafe { CancelIoEx(device, ptr::null()) };
        for slot in std::iter::once(&mut self.read).chain(self.writes.iter_mut()) {
            if slot.pending {
                // Waits until the kernel has finished with the slot (cancelled or completed);
                // if even that fails, the slot stays pending and its Drop leaks it.
                let _ = slot.poll(device, true);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! A message-mode named pipe plays the TAP driver: each message is one frame, and the pipe
    //! completes reads and writes asynchronously like the driver does.

    use std::fs::File;
    use std::io::{Read, Write};
    use std::os::windows::io::{AsRawHandle, FromRawHandle, RawHandle};

    use windows_sys::Win32::Foundation::WAIT_OBJECT_0;
    use windows_sys::Win32::Storage::FileSystem::PIPE_ACCESS_DUPLEX;
    use windows_sys::Win32::System::Pipes::{
        ConnectNamedPipe, CreateNamedPipeW, PIPE_READMODE_MESSAGE, PIPE_TYPE_MESSAGE, PIPE_WAIT,
        SetNamedPipeHandleState,
    };
    use windows_sys::Win32::System::Threading::WaitForSingleObject;

    use super::*;

    /// The driver's end (a synchronous pipe server) and our device on the client end.
    fn pipe_pair(tag: &str, pipe_buffer: u32) -> (File, OverlappedDevice) {
        let name = format!(r"\\.\pipe\lp-{tag}-{}", std::process::id());
        let wide_name = wide(&name);
        // SAFETY: the name is NUL-terminated and outlives the call; null security attributes
        // are allowed; the result is checked below.
        let server = unsafe {
            CreateNamedPipeW(
                wide_name.as_ptr(),
                PIPE_ACCESS_DUPLEX,
                PIPE_TYPE_MESSAGE | PIPE_READMODE_MESSAGE | PIPE_WAIT,
                1,
                pipe_buffer,
                pipe_buffer,
                0,
                ptr::null(),
            )
        };
        assert_ne!(
            server,
            INVALID_HANDLE_VALUE,
            "{}",
            io::Error::last_os_error()
        );
        // SAFETY: CreateNamedPipeW returned a new handle that nothing else owns.
        let server = unsafe { File::from_raw_handle(server) };
        let device = OverlappedDevice::open(&name, 2048).expect("opening the pipe's client end");
        // The client end reads bytes unless told otherwise; the driver hands out whole frames.
        let mode = PIPE_READMODE_MESSAGE;
        // SAFETY: a valid pipe handle; `mode` outlives the call; the other parameters are
        // optional and null.
        let ok = unsafe { SetNamedPipeHandleState(device.raw(), &mode, ptr::null(), ptr::null()) };
        assert_ne!(ok, 0, "{}", io::Error::last_os_error());
        // SAFETY: a valid synchronous pipe handle; a null OVERLAPPED is right for it. The client
        // is already connected, so this returns at once (ERROR_PIPE_CONNECTED, a success).
        unsafe { ConnectNamedPipe(server.as_raw_handle(), ptr::null_mut()) };
        (server, device)
    }

    fn signalled(event: RawHandle, timeout_ms: u32) -> bool {
        // SAFETY: the event belongs to a device that outlives the call.
        unsafe { WaitForSingleObject(event, timeout_ms) == WAIT_OBJECT_0 }
    }

    #[test]
    fn read_finds_nothing_then_wakes_and_returns_the_frame() {
        let (mut driver, mut device) = pipe_pair("read", 65_536);
        let mut buf = [0_u8; 2048];
        assert_eq!(device.read(&mut buf).unwrap(), None);
        assert!(!signalled(device.read_event(), 0), "nothing arrived yet");
        driver.write_all(b"frame one").unwrap();
        assert!(
            signalled(device.read_event(), 5_000),
            "the read event must fire"
        );
        assert_eq!(device.read(&mut buf).unwrap(), Some(9));
        assert_eq!(&buf[..9], b"frame one");
        assert_eq!(device.read(&mut buf).unwrap(), None);
    }

    #[test]
    fn frames_keep_their_boundaries() {
        let (mut driver, mut device) = pipe_pair("bounds", 65_536);
        driver.write_all(b"first").unwrap();
        driver.write_all(b"second!").unwrap();
        let mut buf = [0_u8; 2048];
        let mut frames = Vec::new();
        for _ in 0..100 {
            match device.read(&mut buf).unwrap() {
                Some(len) => frames.push(buf[..len].to_vec()),
                None if frames.len() == 2 => break,
                None => assert!(signalled(device.read_event(), 5_000)),
            }
        }
        assert_eq!(frames, [b"first".to_vec(), b"second!".to_vec()]);
    }

    #[test]
    fn a_frame_longer_than_the_callers_buffer_is_truncated() {
        let (mut driver, mut device) = pipe_pair("trunc", 65_536);
        driver.write_all(b"0123456789").unwrap();
        let mut small = [0_u8; 4];
        let mut got = device.read(&mut small).unwrap();
        if got.is_none() {
            assert!(signalled(device.read_event(), 5_000));
            got = device.read(&mut small).unwrap();
        }
        assert_eq!(got, Some(4));
        assert_eq!(&small, b"0123");
    }

    #[test]
    fn writes_arrive_as_whole_frames() {
        let (mut driver, mut device) = pipe_pair("write", 65_536);
        device.set_write_slots(4, 64).unwrap();
        device.write(b"to the lan").unwrap();
        device.write(b"again").unwrap();
        let mut buf = [0_u8; 256];
        assert_eq!(driver.read(&mut buf).unwrap(), 10);
        assert_eq!(&buf[..10], b"to the lan");
        assert_eq!(driver.read(&mut buf).unwrap(), 5);
        assert_eq!(&buf[..5], b"again");
    }

    #[test]
    fn writes_would_block_when_every_slot_is_in_flight_and_resume_after() {
        // A pipe with a tiny buffer stalls writes until the driver end reads.
        let (mut driver, mut device) = pipe_pair("full", 1);
        device.set_write_slots(2, 512).unwrap();
        let frame = [0x5a_u8; 512];
        let mut accepted = 0;
        let blocked = (0..1_000).any(|_| match device.write(&frame) {
            Ok(()) => {
                accepted += 1;
                false
            }
            Err(err) => {
                assert_eq!(err.kind(), io::ErrorKind::WouldBlock, "{err}");
                true
            }
        });
        assert!(blocked, "{accepted} writes were accepted without blocking");
        let mut buf = [0_u8; 512];
        for _ in 0..accepted {
            assert_eq!(driver.read(&mut buf).unwrap(), 512);
        }
        assert_eq!(buf, frame);
        device.write(&frame).unwrap();
        assert_eq!(device.failed_writes(), 0);
    }

    #[test]
    fn empty_and_oversized_frames_are_refused() {
        let (_driver, mut device) = pipe_pair("sizes", 65_536);
        device.set_write_slots(1, 16).unwrap();
        let err = device.write(&[0; 17]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert_eq!(
            device.write(&[]).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        device.write(&[0; 16]).unwrap();
    }

    #[test]
    fn dropping_with_a_read_in_flight_cancels_it() {
        let (_driver, mut device) = pipe_pair("drop", 65_536);
        let mut buf = [0_u8; 64];
        assert_eq!(device.read(&mut buf).unwrap(), None);
        // Drop cancels the pending read and waits for it; returning at all is the test.
        drop(device);
    }

    #[test]
    fn ioctl_errors_carry_the_win32_code() {
        let (_driver, mut device) = pipe_pair("ioctl", 65_536);
        let mut mac = [0_u8; 6];
        let err = device
            .ioctl(crate::adapter::tap::IOCTL_GET_MAC, &[], &mut mac)
            .unwrap_err();
        assert!(err.raw_os_error().is_some(), "{err}");
    }
}
