//! A provided-buffer ring (`IORING_REGISTER_PBUF_RING`) over one anonymous mapping.
//!
//! Layout: `entries` ring slots of 16 bytes (`io_uring_buf`) at the page-aligned start of the
//! mapping, then `entries` buffers of `buf_size` bytes. The kernel takes buffers from the
//! ring's head; we give them back by writing a slot at our tail and publishing the tail (the
//! `resv` field of slot 0) with a release store. The kernel only reads slots between its head
//! and our published tail, and only writes a buffer between taking it and posting the
//! completion that names it, so the two sides never touch the same bytes at once.

use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;

/// The kernel's `struct io_uring_buf`; slot 0's `resv` is the ring tail.
#[repr(C)]
struct RawSlot {
    addr: u64,
    len: u32,
    bid: u16,
    resv: u16,
}

const _: () = assert!(size_of::<RawSlot>() == size_of::<BufRingEntry>());

/// An anonymous private mapping, unmapped on drop.
#[derive(Debug)]
pub(crate) struct Mmap {
    ptr: NonNull<u8>,
    len: usize,
}

impl Mmap {
    pub(crate) fn anonymous(len: usize) -> io::Result<Self> {
        // SAFETY: a fresh anonymous mapping aliases nothing; the result is checked.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(ptr.cast::<u8>()).ok_or_else(io::Error::last_os_error)?;
        Ok(Self { ptr, len })
    }

    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }
}

impl Drop for Mmap {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping `anonymous` created; nothing borrows it any more
        // (every borrow is tied to `&self`).
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

// SAFETY: the mapping is plain memory owned by this value; no thread-affine state.
unsafe impl Send for Mmap {}

const PAGE: usize = 4096;
const SLOT: usize = size_of::<RawSlot>();

/// The ring and its buffers.
#[derive(Debug)]
pub(crate) struct BufRing {
    map: Mmap,
    entries: u16,
    buf_size: usize,
    buffers_at: usize,
    tail: u16,
}

impl BufRing {
    /// Maps a ring of `entries` (a power of two, at most 32 768) buffers of `buf_size` bytes,
    /// with every buffer already in the ring (published).
    pub(crate) fn new(entries: u16, buf_size: usize) -> io::Result<Self> {
        if !entries.is_power_of_two() || entries > 32_768 || buf_size == 0 {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        }
        let buffers_at = (usize::from(entries) * SLOT).next_multiple_of(PAGE);
        let len = buffers_at + usize::from(entries) * buf_size;
        let mut ring = Self {
            map: Mmap::anonymous(len)?,
            entries,
            buf_size,
            buffers_at,
            tail: 0,
        };
        for bid in 0..entries {
            ring.push(bid);
        }
        ring.publish();
        Ok(ring)
    }

    /// Address of slot 0, for `register_buf_ring`.
    pub(crate) fn ring_addr(&self) -> u64 {
        self.map.as_ptr() as u64
    }

    pub(crate) fn entries(&self) -> u16 {
        self.entries
    }

    /// The first `len` bytes of buffer `bid`, which the kernel handed us in a completion.
    /// `None` if `bid` or `len` is out of range (never trust a completion blindly).
    pub(crate) fn buffer(&self, bid: u16, len: usize) -> Option<&[u8]> {
        if bid >= self.entries || len > self.buf_size {
            return None;
        }
        let offset = self.buffers_at + usize::from(bid) * self.buf_size;
        // SAFETY: the range lies inside the mapping (checked above). The kernel wrote this
        // buffer before posting the completion that named it and will not touch it again until
        // we `push` it back, which needs `&mut self` and so ends this borrow first.
        Some(unsafe { std::slice::from_raw_parts(self.map.as_ptr().add(offset), len) })
    }

    /// Puts buffer `bid` back at the tail; the kernel sees it after [`publish`](Self::publish).
    pub(crate) fn push(&mut self, bid: u16) {
        if bid >= self.entries {
            return;
        }
        let slot = usize::from(self.tail & (self.entries - 1));
        let addr =
            self.map.as_ptr() as u64 + (self.buffers_at + usize::from(bid) * self.buf_size) as u64;
        // SAFETY: `slot` < entries, so the slot lies inside the ring part of the mapping (which
        // is page-aligned, so aligned for the slot). It is past the published tail, so the
        // kernel does not read it now. We write the three fields through raw pointers, never
        // forming a reference, and leave `resv` alone: slot 0's `resv` is the live tail.
        unsafe {
            let entry = self.map.as_ptr().add(slot * SLOT).cast::<RawSlot>();
            (&raw mut (*entry).addr).write(addr);
            (&raw mut (*entry).len).write(self.buf_size as u32);
            (&raw mut (*entry).bid).write(bid);
        }
        self.tail = self.tail.wrapping_add(1);
    }

    /// Makes every pushed buffer visible to the kernel.
    pub(crate) fn publish(&self) {
        self.tail_atomic().store(self.tail, Ordering::Release);
    }

    fn tail_atomic(&self) -> &AtomicU16 {
        // SAFETY: slot 0 is inside the mapping; its `resv` field is the ring tail, 2-byte
        // aligned, and only ever accessed atomically by both sides (the kernel reads it with
        // smp_load_acquire). The borrow lives no longer than the mapping.
        unsafe { AtomicU16::from_ptr(&raw mut (*self.map.as_ptr().cast::<RawSlot>()).resv) }
    }

    /// The published tail, as the kernel would read it (for tests).
    #[cfg(test)]
    fn published_tail(&self) -> u16 {
        self.tail_atomic().load(Ordering::Acquire)
    }

    /// Slot `i` as the kernel would read it: (addr, len, bid) (for tests).
    #[cfg(test)]
    fn slot(&self, i: u16) -> (u64, u32, u16) {
        // SAFETY: `i & mask` < entries, so the slot is inside the mapping; slots are
        // initialised by `new`; no kernel shares this mapping in the test.
        unsafe {
            let entry = self
                .map
                .as_ptr()
                .add(usize::from(i & (self.entries - 1)) * SLOT)
                .cast::<RawSlot>();
            ((*entry).addr, (*entry).len, (*entry).bid)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Plays the kernel: consumes slots from a head, checks they name distinct buffers inside
    /// the mapping, and returns them in a different order.
    #[test]
    fn fake_kernel_sees_every_buffer_once_and_returns_recycle_them() {
        let mut ring = BufRing::new(8, 256).unwrap();
        assert_eq!(ring.published_tail(), 8);
        let base = ring.ring_addr();
        let mut head: u16 = 0;
        let mut taken = Vec::new();
        while head != ring.published_tail() {
            let (addr, len, bid) = ring.slot(head);
            assert_eq!(len, 256);
            assert_eq!(addr, base + 4096 + u64::from(bid) * 256);
            taken.push(bid);
            head = head.wrapping_add(1);
        }
        taken.sort_unstable();
        assert_eq!(taken, (0..8).collect::<Vec<_>>());
        // The "kernel" fills buffer 5; user space reads it and gives it back.
        assert_eq!(ring.buffer(5, 256).unwrap().len(), 256);
        assert!(ring.buffer(8, 1).is_none(), "bid out of range");
        assert!(ring.buffer(0, 257).is_none(), "len out of range");
        ring.push(5);
        ring.push(2);
        assert_eq!(ring.published_tail(), 8, "not visible before publish");
        ring.publish();
        assert_eq!(ring.published_tail(), 10);
        assert_eq!(ring.slot(8).2, 5);
        assert_eq!(ring.slot(9).2, 2);
    }

    #[test]
    fn rejects_bad_sizes() {
        assert!(BufRing::new(6, 256).is_err());
        assert!(BufRing::new(8, 0).is_err());
    }
}
