//! An owned memory mapping: shared with the kernel for PACKET_MMAP rings, or anonymous for the
//! fake rings of the unit tests.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::ptr::NonNull;

/// A memory mapping unmapped on drop.
///
/// The memory may be written by the kernel at any time, so it is only ever accessed through raw
/// pointers by the ring code, never through long-lived Rust references except for the regions
/// the ring protocol hands to user space.
#[derive(Debug)]
pub(crate) struct Mmap {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain memory with no thread affinity; the ring types that access it
// coordinate with the kernel through the status words, and `&Mmap` exposes only raw pointers.
unsafe impl Send for Mmap {}
// SAFETY: as above; shared access only yields raw pointers.
unsafe impl Sync for Mmap {}

impl Mmap {
    /// Maps `len` bytes of `fd` (a packet socket with rings set up) shared and readable/writable.
    pub(crate) fn map_fd(fd: BorrowedFd<'_>, len: usize) -> io::Result<Self> {
        // SAFETY: a fresh mapping at an address of the kernel's choice; `fd` is a valid open
        // descriptor for the duration of the call. MAP_POPULATE faults the pages in now rather
        // than on the first packet.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd.as_raw_fd(),
                0,
            )
        };
        Self::from_raw(ptr, len)
    }

    /// Maps `len` zeroed anonymous bytes (page aligned), the stand-in for a kernel ring in tests.
    #[cfg_attr(
        not(test),
        expect(dead_code, reason = "only fake rings in tests use it")
    )]
    pub(crate) fn anonymous(len: usize) -> io::Result<Self> {
        // SAFETY: a fresh private anonymous mapping; no existing memory is affected.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        Self::from_raw(ptr, len)
    }

    fn from_raw(ptr: *mut libc::c_void, len: usize) -> io::Result<Self> {
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(ptr.cast::<u8>())
            .ok_or_else(|| io::Error::other("mmap returned a null mapping"))?;
        Ok(Self { ptr, len })
    }

    /// The first byte of the mapping.
    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// The length of the mapping in bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

impl Drop for Mmap {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` describe a mapping this value created and nobody else unmaps; the
        // ring types that point into it hold an `Arc<Mmap>`, so none of them is alive any more.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}
