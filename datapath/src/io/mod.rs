//! UDP I/O backends behind one small trait: io_uring on Linux (in `sys`) and quinn-udp everywhere.
//!
//! # Shape of a datapath loop
//!
//! ```text
//! let mut io = open_best(addr)?;             // io_uring if the kernel has it, else quinn-udp
//! let waker = io.waker();                    // hand clones to the control thread
//! loop {
//!     io.wait(driver.poll_timeout(), &mut ready)?;   // completion, waker, fd or deadline
//!     while let Some((meta, data)) = io.poll_recv() { driver.handle_datagram(now, meta, data) }
//!     for token in ready.drain(..) { /* AF_PACKET ring, TAP fd, ... */ }
//!     loop {
//!         let mut buf = io.send_buffer();    // pooled, empty, capacity >= 64 KiB
//!         let Some(meta) = driver.poll_transmit(now, &mut buf) else { break };
//!         io.queue_send(meta, buf);          // ownership moves; no copy
//!     }
//!     io.flush()?;                           // one submission for every queued send
//! }
//! ```
//!
//! # Contracts shared by both backends
//!
//! - A [`TransmitMeta`] describes one GSO batch: `len` bytes at the start of the caller-filled
//!   buffer, cut into `segment_size` datagrams (the last may be shorter). The caller keeps
//!   `segment_size * max_gso_segments()` within 64 KiB and never sends more segments than
//!   [`UdpBackend::max_gso_segments`] (which drops to 1 if the kernel rejects GSO).
//! - A [`RecvMeta`] describes one GRO batch: `len` bytes of datagrams of `stride` bytes each,
//!   except maybe the last. Zero-length datagrams are dropped (QUIC never sends them).
//! - Copies: a send makes no copy in user space (io_uring keeps the `Vec` until the completion;
//!   quinn-udp sends from it synchronously). A receive makes exactly one copy, from the kernel's
//!   receive buffer (the provided-buffer ring, or quinn-udp's batch buffers) into a `BytesMut`
//!   carved from a shared arena, so the kernel buffer goes back to the kernel at once and the
//!   `BytesMut` may live as long as the caller likes. The arena allocates in
//!   [`RX_ARENA_CHUNK`]-sized blocks, so the steady state does not allocate per datagram.
//! - Send errors never fail the loop: they are counted in [`IoCounters::send_errors`] and the
//!   buffer is recycled (UDP is unreliable; QUIC retransmits).
//! - Both backends are single-threaded objects: one datapath thread owns one backend. Other
//!   threads talk to the loop through channels plus a [`Waker`].
//! - [`UdpBackend::wait`] sleeps until something the caller must look at: received datagrams,
//!   the waker, a watched fd (Linux), or the deadline. It may return early (spurious wakeups are
//!   allowed); callers re-check their own timers.
//!
//! # Socket buffers
//!
//! Both backends ask for the same send and receive buffer size, [`SOCKET_BUFFER_BYTES`]
//! (4 MiB) unless the caller passes another ([`open_best_with`], [`PortableUdp::bind_with`],
//! `UringConfig::socket_buffer`). The size trades burst tolerance against latency. A big buffer
//! holds a burst while the loop is busy (4 MiB is about 2 900 full-size datagrams, 13 ms at
//! 2.5 Gbit/s): an endpoint (gateway, client) receiving a flood of small datagrams loses them
//! with 256 KiB (the `quic_loopback` flood test loses 2 % on the quinn-udp backend), so 4 MiB
//! stays the default. But when the loop's CPU is the bottleneck, a bulk sender keeps a big
//! buffer full and every other datagram (a game's ping) waits behind all of it: a relay with
//! 4 MiB queued ~1 800 datagrams in front of each ping (p99 added latency up to 9.9 ms), so the
//! relay asks for 256 KiB by default (`--socket-buffer`; perf/RESULTS.md, "Relay"). The kernel
//! caps the request at `net.core.rmem_max`/`wmem_max`; the cap is logged once at open with the
//! sysctl to raise.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use bytes::BytesMut;

pub mod portable;

pub use portable::PortableUdp;

#[cfg(target_os = "linux")]
pub use crate::sys::uring::{Unsupported as UringUnsupported, UringConfig, UringUdp};

/// One outgoing GSO batch, produced by the QUIC driver's `poll_transmit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransmitMeta {
    /// Where the datagrams go.
    pub destination: SocketAddr,
    /// Source address to send from (IP_PKTINFO / IPV6_PKTINFO), for multi-homed hosts.
    pub src_ip: Option<IpAddr>,
    /// ECN codepoint (the two low bits of the TOS / traffic class byte).
    pub ecn: Option<u8>,
    /// Size of each datagram when the batch holds more than one; `None` for one datagram.
    pub segment_size: Option<usize>,
    /// Bytes of the batch at the start of the buffer.
    pub len: usize,
}

impl TransmitMeta {
    /// How many datagrams the batch puts on the wire.
    pub fn segments(&self) -> usize {
        match self.segment_size {
            Some(size) if size > 0 && size < self.len => self.len.div_ceil(size),
            _ => usize::from(self.len > 0),
        }
    }
}

/// One received GRO batch, consumed by the QUIC driver's `handle_datagram`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecvMeta {
    /// Who sent the datagrams.
    pub source: SocketAddr,
    /// The local address they were sent to (IP_PKTINFO / IPV6_PKTINFO), when known.
    pub dst_ip: Option<IpAddr>,
    /// ECN codepoint of the datagrams (the two low bits of TOS / traffic class).
    pub ecn: Option<u8>,
    /// Bytes in the batch.
    pub len: usize,
    /// Size of each datagram in the batch; the last one may be shorter.
    pub stride: usize,
}

impl RecvMeta {
    /// How many datagrams the batch holds.
    pub fn segments(&self) -> usize {
        if self.stride == 0 {
            usize::from(self.len > 0)
        } else {
            self.len.div_ceil(self.stride)
        }
    }
}

/// Plain counters owned by the backend; read them with [`UdpBackend::counters`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct IoCounters {
    /// Datagrams the kernel accepted (a GSO batch of 10 counts 10).
    pub datagrams_sent: u64,
    /// Payload bytes the kernel accepted.
    pub bytes_sent: u64,
    /// Sends that carried more than one segment (UDP_SEGMENT / USO).
    pub gso_batches: u64,
    /// Datagrams that went out inside GSO batches.
    pub gso_segments: u64,
    /// Datagrams handed to the caller (a GRO batch of 10 counts 10).
    pub datagrams_received: u64,
    /// Payload bytes handed to the caller.
    pub bytes_received: u64,
    /// Received batches that held more than one datagram (UDP_GRO / URO).
    pub gro_batches: u64,
    /// Datagrams that arrived inside GRO batches.
    pub gro_segments: u64,
    /// Sends the kernel rejected, or that could not be queued; the datagrams are lost.
    pub send_errors: u64,
    /// Receive operations that failed (not counting "nothing to read").
    pub recv_errors: u64,
    /// Datagrams or batches dropped because they did not fit the receive buffer.
    pub truncated: u64,
}

/// What a watched fd should be reported for (Linux only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interest {
    /// `POLLIN`.
    Readable,
    /// `POLLOUT`.
    Writable,
    /// `POLLIN | POLLOUT`.
    Both,
}

impl Interest {
    /// The `poll(2)` event bits.
    #[cfg(target_os = "linux")]
    pub(crate) fn poll_events(self) -> i16 {
        match self {
            Self::Readable => libc::POLLIN,
            Self::Writable => libc::POLLOUT,
            Self::Both => libc::POLLIN | libc::POLLOUT,
        }
    }
}

/// Why [`UdpBackend::wait`] returned. Several fields may be set; none set is a spurious wakeup.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WaitOutcome {
    /// [`UdpBackend::poll_recv`] has batches to hand out.
    pub received: bool,
    /// A [`Waker`] was woken since the last wait.
    pub woken: bool,
    /// The deadline passed.
    pub timed_out: bool,
}

impl WaitOutcome {
    /// Whether anything at all happened (tokens are reported separately).
    pub fn is_empty(&self) -> bool {
        !(self.received || self.woken || self.timed_out)
    }
}

/// Which implementation a [`UdpBackend`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// io_uring with multishot RECVMSG, a provided-buffer ring, GRO and GSO (Linux).
    Uring,
    /// quinn-udp: recvmmsg + GRO / sendmsg + GSO on Linux, URO/USO on Windows.
    Portable,
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Uring => "io_uring",
            Self::Portable => "quinn-udp",
        })
    }
}

/// A UDP socket plus the loop's sleep: what the relay, gateway and client loops drive.
///
/// Methods are called from the one thread that owns the backend. See the module docs for the
/// loop shape and the copy contract.
pub trait UdpBackend: Send + fmt::Debug {
    /// Which implementation this is.
    fn kind(&self) -> BackendKind;

    /// The bound address (with the port the kernel chose, if 0 was asked).
    fn local_addr(&self) -> SocketAddr;

    /// Most segments one [`TransmitMeta`] may carry; 1 without GSO. May drop to 1 at run time
    /// if the kernel rejects a GSO send (for example a NIC without checksum offload).
    fn max_gso_segments(&self) -> usize;

    /// How many datagrams one received batch may hold; 1 without GRO.
    fn gro_segments(&self) -> usize;

    /// An empty buffer from the send pool (capacity at least 64 KiB) for `poll_transmit`.
    fn send_buffer(&mut self) -> Vec<u8>;

    /// Queues one GSO batch: `meta.len` bytes at the start of `buf`. Takes ownership of `buf`
    /// and returns it to the pool once the kernel is done with it. Nothing reaches the wire
    /// before [`flush`](Self::flush) (the io_uring backend may submit early when its queue
    /// fills). Failures are counted in [`IoCounters::send_errors`], never returned.
    fn queue_send(&mut self, meta: TransmitMeta, buf: Vec<u8>);

    /// Hands every queued send to the kernel, in one submission where possible.
    ///
    /// # Errors
    ///
    /// Only when the ring or socket itself is broken; per-datagram failures are counted.
    fn flush(&mut self) -> io::Result<()>;

    /// The next received batch, or `None` when nothing is ready without blocking.
    ///
    /// Call in a loop after [`wait`](Self::wait) until it returns `None`.
    fn poll_recv(&mut self) -> Option<(RecvMeta, BytesMut)>;

    /// Sleeps until a batch is received, the [`Waker`] is woken, a watched fd is ready (its
    /// token is pushed to `ready`), or `deadline` passes (`None`: no deadline). Returns at once
    /// if something is already pending. Also submits anything queued.
    ///
    /// # Errors
    ///
    /// Only when the ring or poll call itself fails.
    fn wait(&mut self, deadline: Option<Instant>, ready: &mut Vec<u64>) -> io::Result<WaitOutcome>;

    /// A handle other threads use to end a [`wait`](Self::wait).
    fn waker(&self) -> Waker;

    /// Reports `fd` with `token` from [`wait`](Self::wait) when it becomes ready for
    /// `interest`. The fd must stay open until [`unwatch_fd`](Self::unwatch_fd) or until the
    /// backend is dropped. After a report, drain the fd until `EAGAIN`: the io_uring backend
    /// reports edges (each new readiness), the portable backend reports levels.
    ///
    /// # Errors
    ///
    /// When the token is already in use.
    #[cfg(target_os = "linux")]
    fn watch_fd(
        &mut self,
        fd: std::os::fd::RawFd,
        token: u64,
        interest: Interest,
    ) -> io::Result<()>;

    /// Stops reporting the fd registered with `token`.
    ///
    /// # Errors
    ///
    /// When no fd is registered with `token`.
    #[cfg(target_os = "linux")]
    fn unwatch_fd(&mut self, token: u64) -> io::Result<()>;

    /// A snapshot of the counters.
    fn counters(&self) -> IoCounters;
}

/// Opens the best backend for `addr`: io_uring when the kernel supports everything it needs,
/// otherwise quinn-udp, with one `info` line saying why.
///
/// # Errors
///
/// When the socket cannot be opened or bound (for example the address is in use).
pub fn open_best(addr: SocketAddr) -> io::Result<Box<dyn UdpBackend>> {
    open_best_with(addr, SOCKET_BUFFER_BYTES)
}

/// [`open_best`] with `socket_buffer` bytes of kernel send and receive buffer instead of
/// [`SOCKET_BUFFER_BYTES`] (see the module docs for the trade).
///
/// # Errors
///
/// When the socket cannot be opened or bound (for example the address is in use).
pub fn open_best_with(addr: SocketAddr, socket_buffer: usize) -> io::Result<Box<dyn UdpBackend>> {
    #[cfg(target_os = "linux")]
    {
        let config = UringConfig {
            socket_buffer,
            ..UringConfig::default()
        };
        match crate::sys::uring::probe() {
            Ok(()) => match UringUdp::bind(addr, &config) {
                Ok(backend) => return Ok(Box::new(backend)),
                Err(crate::sys::uring::OpenError::Io(e)) => return Err(e),
                Err(crate::sys::uring::OpenError::Unsupported(reason)) => {
                    tracing::info!(%reason, "io_uring unavailable, using the quinn-udp backend");
                }
            },
            Err(reason) => {
                tracing::info!(%reason, "io_uring unavailable, using the quinn-udp backend");
            }
        }
    }
    Ok(Box::new(PortableUdp::bind_with(addr, socket_buffer)?))
}

/// Default send and receive buffer size both backends ask the kernel for (see the module
/// docs for the trade; the relay asks for less).
pub const SOCKET_BUFFER_BYTES: usize = 4 << 20;

/// Capacity of the buffers [`UdpBackend::send_buffer`] hands out: the largest GSO batch.
pub const SEND_BUFFER_CAPACITY: usize = 64 << 10;

/// Size of the blocks the receive arena copies datagrams into.
pub const RX_ARENA_CHUNK: usize = 512 << 10;

/// Sets a socket's buffers to `bytes` and logs when the kernel caps them.
pub(crate) fn raise_socket_buffers(socket: &socket2::Socket, bytes: usize) {
    if let Err(e) = socket.set_recv_buffer_size(bytes) {
        tracing::info!(error = %e, "could not raise the UDP receive buffer");
    }
    if let Err(e) = socket.set_send_buffer_size(bytes) {
        tracing::info!(error = %e, "could not raise the UDP send buffer");
    }
    // Linux reports twice what it grants (the other half is bookkeeping), Windows the
    // granted size; either way less than asked means a cap.
    if let Ok(got) = socket.recv_buffer_size()
        && got < bytes
    {
        tracing::info!(
            asked = bytes,
            got,
            "UDP receive buffer capped by the kernel; raise net.core.rmem_max to absorb bursts"
        );
    }
    if let Ok(got) = socket.send_buffer_size()
        && got < bytes
    {
        tracing::info!(
            asked = bytes,
            got,
            "UDP send buffer capped by the kernel; raise net.core.wmem_max"
        );
    }
}

/// Opens a UDP socket bound to `addr` with `buffer_bytes` of send and receive buffer,
/// non-blocking.
pub(crate) fn bind_socket(
    addr: SocketAddr,
    buffer_bytes: usize,
) -> io::Result<std::net::UdpSocket> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    raise_socket_buffers(&socket, buffer_bytes);
    // `[::]:port` means both families (what a relay wants), whatever the host's
    // `net.ipv6.bindv6only` default says.
    if addr.is_ipv6() {
        socket.set_only_v6(false)?;
    }
    socket.bind(&addr.into())?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// Copies received datagrams into `BytesMut`s carved from big blocks.
///
/// `split_to` shares the block, so handing out a datagram costs no allocation; when a block
/// is used up, `reserve` either reclaims it (every datagram dropped) or allocates a new one.
#[derive(Debug)]
pub(crate) struct RxArena {
    block: BytesMut,
}

impl RxArena {
    pub(crate) fn new() -> Self {
        Self {
            block: BytesMut::with_capacity(RX_ARENA_CHUNK),
        }
    }

    /// One copy of `data` into the arena.
    pub(crate) fn copy(&mut self, data: &[u8]) -> BytesMut {
        if self.block.capacity() < data.len() {
            self.block.reserve(RX_ARENA_CHUNK.max(data.len()));
        }
        self.block.extend_from_slice(data);
        self.block.split_to(data.len())
    }
}

/// Wakes a sleeping [`UdpBackend::wait`] from any thread. Cheap to clone.
///
/// Repeated wakes before the loop notices coalesce into one system call. On Linux the signal
/// is an eventfd; elsewhere it is an empty datagram from a loopback socket to the backend's
/// own socket, which the backend recognises and swallows.
#[derive(Debug, Clone)]
pub struct Waker {
    inner: Arc<WakerInner>,
}

#[derive(Debug)]
struct WakerInner {
    pending: AtomicBool,
    signal: WakeSignal,
}

#[cfg(target_os = "linux")]
#[derive(Debug)]
struct WakeSignal(crate::sys::uring::EventFd);

#[cfg(not(target_os = "linux"))]
#[derive(Debug)]
struct WakeSignal {
    socket: std::net::UdpSocket,
    target: SocketAddr,
}

impl Waker {
    /// Makes the loop's current or next [`UdpBackend::wait`] return with `woken` set.
    pub fn wake(&self) {
        if !self.inner.pending.swap(true, Ordering::AcqRel) {
            self.inner.signal.raise();
        }
    }

    /// Clears the pending flag (acquiring whatever the wakers published before waking) and
    /// drains the signal. Returns whether a wake was pending.
    pub(crate) fn acknowledge(&self) -> bool {
        let was = self.inner.pending.swap(false, Ordering::AcqRel);
        self.inner.signal.drain();
        was
    }

    fn with_signal(signal: WakeSignal) -> Self {
        Self {
            inner: Arc::new(WakerInner {
                pending: AtomicBool::new(false),
                signal,
            }),
        }
    }
}

#[cfg(target_os = "linux")]
impl Waker {
    /// A waker over a fresh eventfd.
    pub(crate) fn new_eventfd() -> io::Result<Self> {
        Ok(Self::with_signal(WakeSignal(
            crate::sys::uring::EventFd::new()?,
        )))
    }

    /// The eventfd the loop watches.
    pub(crate) fn raw_fd(&self) -> std::os::fd::RawFd {
        self.inner.signal.0.raw_fd()
    }
}

#[cfg(target_os = "linux")]
impl WakeSignal {
    fn raise(&self) {
        self.0.signal();
    }

    fn drain(&self) {
        self.0.drain();
    }
}

#[cfg(not(target_os = "linux"))]
impl Waker {
    /// A waker that sends empty datagrams to `target` (the backend's own socket).
    pub(crate) fn new_datagram(target: SocketAddr) -> io::Result<Self> {
        let loopback: IpAddr = match target {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        };
        let target = if target.ip().is_unspecified() {
            SocketAddr::new(loopback, target.port())
        } else {
            target
        };
        let socket = std::net::UdpSocket::bind(SocketAddr::new(loopback, 0))?;
        socket.set_nonblocking(true)?;
        Ok(Self::with_signal(WakeSignal { socket, target }))
    }

    /// The address the wake datagrams come from.
    pub(crate) fn source(&self) -> Option<SocketAddr> {
        self.inner.signal.socket.local_addr().ok()
    }
}

#[cfg(not(target_os = "linux"))]
impl WakeSignal {
    fn raise(&self) {
        // A lost wake datagram only delays the loop to its next deadline; the pending flag is
        // cleared by every wait, so the next wake sends again.
        let _ = self.socket.send_to(&[], self.target);
    }

    fn drain(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn addr() -> SocketAddr {
        SocketAddr::new(Ipv4Addr::LOCALHOST.into(), 1)
    }

    #[test]
    fn transmit_segments_count_the_short_tail() {
        let meta = |segment_size, len| TransmitMeta {
            destination: addr(),
            src_ip: None,
            ecn: None,
            segment_size,
            len,
        };
        assert_eq!(meta(None, 1200).segments(), 1);
        assert_eq!(meta(Some(1200), 1200).segments(), 1);
        assert_eq!(meta(Some(1200), 12_000).segments(), 10);
        assert_eq!(meta(Some(1200), 11_000).segments(), 10);
        assert_eq!(meta(Some(1200), 0).segments(), 0);
    }

    #[test]
    fn recv_segments_count_the_short_tail() {
        let meta = |len, stride| RecvMeta {
            source: addr(),
            dst_ip: None,
            ecn: None,
            len,
            stride,
        };
        assert_eq!(meta(1400, 1400).segments(), 1);
        assert_eq!(meta(14_000, 1400).segments(), 10);
        assert_eq!(meta(13_999, 1400).segments(), 10);
        assert_eq!(meta(0, 0).segments(), 0);
    }

    #[test]
    fn arena_hands_out_independent_copies_from_one_block() {
        let mut arena = RxArena::new();
        let a = arena.copy(b"first");
        let b = arena.copy(b"second");
        assert_eq!(&a[..], b"first");
        assert_eq!(&b[..], b"second");
        // Both live in the same block: b starts where a ends.
        assert_eq!(a.as_ptr().wrapping_add(a.len()), b.as_ptr());
        let big = arena.copy(&vec![7u8; RX_ARENA_CHUNK + 1]);
        assert_eq!(big.len(), RX_ARENA_CHUNK + 1);
    }
}
