//! The io_uring UDP backend and the eventfd waker.
//!
//! # Design
//!
//! - **Receive**: one multishot `RECVMSG` on a provided-buffer ring (`bufring`). Each
//!   completion names a buffer holding `io_uring_recvmsg_out`, the source address, the control
//!   messages (UDP_GRO segment size, IP_PKTINFO / IPV6_PKTINFO, IP_TOS / IPV6_TCLASS) and the
//!   payload. The payload is copied once into the receive arena and the buffer goes straight
//!   back to the ring, so the kernel only runs out of buffers if more than
//!   [`UringConfig::recv_buffers`] completions pile up between two reaps. When it does, the
//!   multishot ends (`ENOBUFS`, no `MORE` flag); the datagrams wait in the socket buffer and
//!   the receive is re-armed at the end of the reap that returned the buffers.
//! - **Send**: a slab of `SendSlot`s, each a boxed `msghdr` + `iovec` + address + control
//!   buffer + the caller's `Vec<u8>`. `queue_send` fills a free slot and pushes one `SENDMSG`
//!   (with UDP_SEGMENT for GSO); `flush` submits them all in one `io_uring_enter`. The slot
//!   keeps everything alive until its completion, which recycles the `Vec` into the pool.
//! - **Wake-ups**: the [`Waker`]'s eventfd and any caller fd ([`UdpBackend::watch_fd`]) are
//!   watched with multishot `POLL_ADD`; a poll that ends is re-armed.
//! - **Sleeping**: `io_uring_enter` with `IORING_ENTER_EXT_ARG` and a relative timespec
//!   (`submit_with_args`), so a deadline costs no timeout SQE.
//! - **Ring setup**: `COOP_TASKRUN | TASKRUN_FLAG` (5.19+), else `SINGLE_ISSUER |
//!   DEFER_TASKRUN | TASKRUN_FLAG`, else plain. DEFER_TASKRUN was tried first and measured
//!   worse on loopback (`lanparty-perf bench quic`, kernel 6.18): single-datagram round trips
//!   were bimodal, 16.6 µs on some connections but 40 µs median with a 3 ms p99 on others,
//!   against a steady 17.7–18.0 µs with COOP_TASKRUN; and deferred receive completions run
//!   only when the loop sleeps, so a busy sender reads its ACKs late. The ring starts disabled
//!   (`R_DISABLED`) and is enabled by the first call that submits (with SINGLE_ISSUER that
//!   thread becomes the only issuer): build the backend anywhere, then use and drop it on the
//!   datapath thread.
//! - **Drop**: cancels every request and waits (bounded) for their completions before the
//!   memory they point into is freed; if that fails (wrong thread, broken ring) the buffer
//!   ring and send slots are leaked rather than risk the kernel writing into freed memory.
//!
//! All `unsafe` for io_uring lives in this module and its children, one `push` per operation
//! kind, each saying what keeps its memory alive.

mod bufring;
mod fd;
mod msg;

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::mem::ManuallyDrop;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use io_uring::{IoUring, cqueue, opcode, types};

pub use fd::EventFd;
pub(crate) use fd::{int_opt, poll, set_int_opt};

use self::bufring::BufRing;
use self::msg::{ControlBuf, SockAddrBuf};
use crate::io::{
    BackendKind, Interest, IoCounters, RecvMeta, RxArena, SEND_BUFFER_CAPACITY, TransmitMeta,
    UdpBackend, WaitOutcome, Waker,
};

/// Why the kernel cannot run the io_uring backend.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Unsupported {
    /// `io_uring_setup` failed (old kernel, seccomp, `kernel.io_uring_disabled`).
    #[error("io_uring ring setup failed: {0}")]
    RingSetup(io::Error),
    /// The kernel lacks `IORING_FEAT_EXT_ARG` (needs 5.11).
    #[error("io_uring lacks timeouts in the enter arguments (kernel < 5.11)")]
    NoExtArg,
    /// The opcode probe failed or an operation is missing.
    #[error("io_uring lacks the {0} operation")]
    Opcode(&'static str),
    /// Provided-buffer rings are missing (needs 5.19).
    #[error("io_uring provided-buffer ring registration failed: {0}")]
    BufRing(io::Error),
    /// Multishot RECVMSG is missing (needs 6.0).
    #[error("io_uring multishot recvmsg failed its self-test: {0}")]
    MultishotRecv(io::Error),
}

/// Why [`UringUdp::bind`] failed: the kernel lacks a feature (fall back) or the socket failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// Fall back to the portable backend.
    #[error(transparent)]
    Unsupported(#[from] Unsupported),
    /// Opening or binding the socket failed; another backend would fail the same way.
    #[error("opening the udp socket failed: {0}")]
    Io(#[from] io::Error),
}

/// Sizes of the io_uring backend.
#[derive(Debug, Clone)]
pub struct UringConfig {
    /// Submission queue entries (a power of two). The completion queue gets four times more.
    pub sq_entries: u32,
    /// Sends that may be in flight at once; `queue_send` waits for a completion beyond this.
    pub send_slots: usize,
    /// Provided receive buffers (a power of two): how many receive completions may pile up
    /// between two reaps before the multishot receive pauses.
    pub recv_buffers: u16,
    /// Payload bytes per receive buffer: 64 KiB holds the largest GRO batch.
    pub recv_payload: usize,
    /// Kernel send and receive buffer (`SO_SNDBUF`/`SO_RCVBUF`) to ask for, in bytes
    /// ([`crate::io::SOCKET_BUFFER_BYTES`] by default; see the `io` module docs).
    pub socket_buffer: usize,
}

impl Default for UringConfig {
    fn default() -> Self {
        Self {
            sq_entries: 256,
            send_slots: 256,
            recv_buffers: 64,
            recv_payload: 64 << 10,
            socket_buffer: crate::io::SOCKET_BUFFER_BYTES,
        }
    }
}

/// Segments the kernel accepts in one UDP_SEGMENT send (`UDP_MAX_SEGMENTS`).
const MAX_GSO_SEGMENTS: usize = 64;
/// Segments one GRO batch may hold (bounded by the 64 KiB skb).
const GRO_SEGMENTS: usize = 64;
/// Buffer group id of our provided-buffer ring.
const BGID: u16 = 0;
/// `sizeof(struct io_uring_recvmsg_out)`.
const RECVMSG_OUT_LEN: usize = 16;
/// How long `queue_send` waits for a free send slot before dropping the send.
const SLOT_WAIT: Duration = Duration::from_secs(1);
/// How long drop waits for cancelled requests to complete.
const DROP_WAIT: Duration = Duration::from_secs(1);

// user_data: kind in the top byte, index or id below.
const KIND_SHIFT: u32 = 56;
const KIND_RECV: u64 = 1;
const KIND_SEND: u64 = 2;
const KIND_WAKER: u64 = 3;
const KIND_WATCH: u64 = 4;
const KIND_CANCEL: u64 = 5;

const fn user_data(kind: u64, index: u64) -> u64 {
    (kind << KIND_SHIFT) | (index & ((1 << KIND_SHIFT) - 1))
}

const fn split_user_data(data: u64) -> (u64, u64) {
    (data >> KIND_SHIFT, data & ((1 << KIND_SHIFT) - 1))
}

/// A name and the builder calls of one flag set to try.
type RingFlags = (&'static str, fn(&mut io_uring::Builder));

/// Builds a ring with the best flags the kernel accepts; returns it and whether it starts
/// disabled (then [`IoUring::submitter`]`.register_enable_rings` must run first).
fn build_ring(sq_entries: u32) -> io::Result<(IoUring, &'static str)> {
    let cq_entries = sq_entries.saturating_mul(4);
    let attempts: [RingFlags; 3] = [
        ("coop-taskrun", |b| {
            b.setup_coop_taskrun()
                .setup_taskrun_flag()
                .setup_r_disabled();
        }),
        ("single-issuer+defer-taskrun", |b| {
            b.setup_single_issuer()
                .setup_defer_taskrun()
                .setup_taskrun_flag()
                .setup_r_disabled();
        }),
        ("plain", |b| {
            b.setup_r_disabled();
        }),
    ];
    let mut last = io::Error::from(io::ErrorKind::Unsupported);
    for (name, apply) in attempts {
        let mut builder = IoUring::builder();
        builder.setup_cqsize(cq_entries).setup_clamp();
        apply(&mut builder);
        match builder.build(sq_entries) {
            Ok(ring) => return Ok((ring, name)),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Checks that this kernel runs everything the backend needs: ring setup, enter timeouts,
/// the operations, a provided-buffer ring and a multishot RECVMSG (tried on a Unix datagram
/// socket pair, so no network is needed).
///
/// # Errors
///
/// The first missing feature, as a reason to log before falling back.
pub fn probe() -> Result<(), Unsupported> {
    let (ring, _) = build_ring(8).map_err(Unsupported::RingSetup)?;
    if !ring.params().is_feature_ext_arg() {
        return Err(Unsupported::NoExtArg);
    }
    let mut probe = io_uring::Probe::new();
    ring.submitter()
        .register_probe(&mut probe)
        .map_err(|_| Unsupported::Opcode("probe"))?;
    for (code, name) in [
        (opcode::SendMsg::CODE, "SENDMSG"),
        (opcode::RecvMsgMulti::CODE, "RECVMSG"),
        (opcode::PollAdd::CODE, "POLL_ADD"),
        (opcode::PollRemove::CODE, "POLL_REMOVE"),
        (opcode::AsyncCancel::CODE, "ASYNC_CANCEL"),
    ] {
        if !probe.is_supported(code) {
            return Err(Unsupported::Opcode(name));
        }
    }
    self_test(ring).map_err(Unsupported::MultishotRecv)
}

/// Arms a multishot RECVMSG on one end of a Unix datagram pair, writes to the other end and
/// expects a completion that carries a buffer and the `MORE` flag.
fn self_test(mut ring: IoUring) -> io::Result<()> {
    ring.submitter().register_enable_rings()?;
    let bufs = BufRing::new(2, 256)?;
    // SAFETY: `bufs` maps `entries` initialised slots. It outlives the registration: the
    // request is cancelled and its last completion awaited below before `bufs` drops, or
    // `bufs` is leaked; the ring (a parameter) is dropped after every local.
    unsafe {
        ring.submitter()
            .register_buf_ring_with_flags(bufs.ring_addr(), bufs.entries(), BGID, 0)?;
    }
    let (a, b) = fd::dgram_pair()?;
    let hdr = recv_msghdr();
    let entry = opcode::RecvMsgMulti::new(types::Fd(a.as_raw_fd()), &raw const *hdr, BGID)
        .build()
        .user_data(user_data(KIND_RECV, 0));
    // SAFETY: the request reads `hdr` and writes into `bufs`; both stay alive until its last
    // completion is seen below (or are leaked if it never comes).
    unsafe { ring.submission().push(&entry) }.map_err(|_| sq_full())?;
    ring.submit()?;
    // SAFETY: writes 4 bytes from a live array to a socket we own.
    let n = unsafe { libc::write(b.as_raw_fd(), b"ping".as_ptr().cast(), 4) };
    if n != 4 {
        return Err(io::Error::last_os_error());
    }
    let mut result = Err(io::Error::from(io::ErrorKind::TimedOut));
    let mut armed = true;
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut cancelled = false;
    while armed && Instant::now() < deadline {
        let ts = types::Timespec::from(Duration::from_millis(100));
        let args = types::SubmitArgs::new().timespec(&ts);
        match ring.submitter().submit_with_args(1, &args) {
            Ok(_) => {}
            Err(e) if matches!(e.raw_os_error(), Some(libc::ETIME | libc::EINTR)) => {}
            Err(e) => return Err(e),
        }
        let cqes: Vec<cqueue::Entry> = ring.completion().collect();
        for c in cqes {
            if split_user_data(c.user_data()).0 != KIND_RECV {
                continue;
            }
            let more = cqueue::more(c.flags());
            armed &= more;
            if cancelled {
                continue;
            }
            result = if c.result() < 0 {
                Err(io::Error::from_raw_os_error(-c.result()))
            } else if cqueue::buffer_select(c.flags()).is_none() || !more {
                Err(io::Error::other(
                    "completion without a buffer or the MORE flag",
                ))
            } else {
                Ok(())
            };
        }
        if armed
            && !cancelled
            && (result.is_ok() || Instant::now() + Duration::from_millis(500) > deadline)
        {
            let cancel = opcode::AsyncCancel::new(user_data(KIND_RECV, 0))
                .build()
                .user_data(user_data(KIND_CANCEL, 0));
            // SAFETY: a cancel request points at no user memory.
            unsafe { ring.submission().push(&cancel) }.map_err(|_| sq_full())?;
            cancelled = true;
        }
    }
    if armed {
        // The kernel may still own the request: leak its memory rather than free it.
        std::mem::forget(hdr);
        std::mem::forget(bufs);
        return Err(io::Error::from(io::ErrorKind::TimedOut));
    }
    let _ = ring.submitter().unregister_buf_ring(BGID);
    result
}

/// The msghdr template for multishot RECVMSG: only the name and control lengths matter.
fn recv_msghdr() -> Box<libc::msghdr> {
    // SAFETY: msghdr is plain data; all-zero is valid (null pointers, zero lengths).
    let mut hdr: Box<libc::msghdr> = Box::new(unsafe { std::mem::zeroed() });
    hdr.msg_namelen = msg::SOCKADDR_LEN as libc::socklen_t;
    hdr.msg_controllen = msg::CONTROL_LEN as _;
    hdr
}

/// One send in flight: everything the kernel reads, kept at a stable heap address.
struct SendSlot {
    hdr: libc::msghdr,
    iov: libc::iovec,
    name: SockAddrBuf,
    control: ControlBuf,
    buf: Vec<u8>,
    segments: usize,
    len: usize,
    gso: bool,
}

impl SendSlot {
    fn new() -> Box<Self> {
        Box::new(Self {
            // SAFETY: msghdr is plain data; all-zero is valid (null pointers, zero lengths).
            hdr: unsafe { std::mem::zeroed() },
            iov: libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0,
            },
            name: SockAddrBuf([0; msg::SOCKADDR_LEN]),
            control: ControlBuf([0; msg::CONTROL_LEN]),
            buf: Vec::new(),
            segments: 0,
            len: 0,
            gso: false,
        })
    }

    /// Fills the slot for one transmit; the self-pointers are valid while the box lives.
    fn fill(&mut self, meta: &TransmitMeta, buf: Vec<u8>, len: usize, v6_socket: bool) {
        self.buf = buf;
        self.len = len;
        self.segments = meta.segments().max(1);
        let segment = meta
            .segment_size
            .filter(|&s| s > 0 && s < len)
            .and_then(|s| u16::try_from(s).ok());
        self.gso = segment.is_some();
        let destination = map_destination(meta.destination, v6_socket);
        let v4_destination = match destination {
            SocketAddr::V4(_) => true,
            SocketAddr::V6(v6) => v6.ip().to_ipv4_mapped().is_some(),
        };
        let name_len = msg::encode_sockaddr(destination, &mut self.name);
        let control_len = msg::encode_send_control(
            &mut self.control,
            segment,
            meta.ecn,
            meta.src_ip,
            v4_destination,
        );
        self.iov = libc::iovec {
            iov_base: self.buf.as_mut_ptr().cast(),
            iov_len: len,
        };
        self.hdr.msg_name = (&raw mut self.name).cast();
        self.hdr.msg_namelen = name_len as libc::socklen_t;
        self.hdr.msg_iov = &raw mut self.iov;
        self.hdr.msg_iovlen = 1;
        self.hdr.msg_control = if control_len == 0 {
            std::ptr::null_mut()
        } else {
            (&raw mut self.control).cast()
        };
        self.hdr.msg_controllen = control_len as _;
        self.hdr.msg_flags = 0;
    }
}

/// IPv4 destinations go out v4-mapped on an IPv6 socket; the kernel rejects the rest.
fn map_destination(destination: SocketAddr, v6_socket: bool) -> SocketAddr {
    match destination {
        SocketAddr::V4(v4) if v6_socket => {
            SocketAddr::new(v4.ip().to_ipv6_mapped().into(), v4.port())
        }
        SocketAddr::V6(v6) if !v6_socket => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), v6.port()),
            None => destination,
        },
        other => other,
    }
}

struct Watch {
    id: u64,
    fd: RawFd,
    token: u64,
    interest: Interest,
    armed: bool,
}

/// The io_uring UDP backend. See the module docs for the design.
pub struct UringUdp {
    // Field order is drop order: the ring (whose close cancels what `Drop` could not) goes
    // before the memory requests point into.
    ring: IoUring,
    socket: UdpSocket,
    recv_hdr: Box<libc::msghdr>,
    bufs: ManuallyDrop<BufRing>,
    #[expect(
        clippy::vec_box,
        reason = "the kernel holds pointers into each slot: boxes keep them put when the Vec moves"
    )]
    slots: Vec<Box<SendSlot>>,
    free_slots: Vec<usize>,
    pool: Vec<Vec<u8>>,
    rx: VecDeque<(RecvMeta, BytesMut)>,
    arena: RxArena,
    cqes: Vec<cqueue::Entry>,
    waker: Waker,
    watches: Vec<Watch>,
    next_watch_id: u64,
    ready: Vec<u64>,
    woken: bool,
    started: bool,
    recv_armed: bool,
    recv_rearms: u64,
    waker_armed: bool,
    sends_in_flight: usize,
    local_addr: SocketAddr,
    v6_socket: bool,
    max_gso_segments: usize,
    gro_segments: usize,
    counters: IoCounters,
    mode: &'static str,
}

// SAFETY: the raw pointers inside (the slots' msghdr and iovec, the receive msghdr) point only
// into heap memory this value owns, never into thread-local data, so moving the value to
// another thread keeps them valid. The ring itself is Send. The kernel's single-issuer rule is
// enforced by the kernel (EEXIST), not by memory safety.
unsafe impl Send for UringUdp {}

impl fmt::Debug for UringUdp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UringUdp")
            .field("local_addr", &self.local_addr)
            .field("mode", &self.mode)
            .field("sends_in_flight", &self.sends_in_flight)
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

impl UringUdp {
    /// Opens a UDP socket on `addr` (`config.socket_buffer` buffers, GRO, PKTINFO, TOS, no fragmentation) and
    /// a ring around it. Nothing is submitted until the first call that uses the ring; that
    /// thread becomes the ring's single issuer.
    ///
    /// # Errors
    ///
    /// [`OpenError::Unsupported`] when the kernel lacks a feature (fall back to
    /// [`PortableUdp`](crate::io::PortableUdp)); [`OpenError::Io`] when the socket fails.
    pub fn bind(addr: SocketAddr, config: &UringConfig) -> Result<Self, OpenError> {
        let socket = crate::io::bind_socket(addr, config.socket_buffer)?;
        // io_uring always tries sends and receives without blocking and, on EAGAIN, arms a
        // poll and retries. On an O_NONBLOCK socket some kernels hand the EAGAIN back
        // instead, which would turn a full send buffer into dropped datagrams.
        socket.set_nonblocking(false)?;
        let local_addr = socket.local_addr()?;
        let v6_socket = local_addr.is_ipv6();
        let fd = socket.as_raw_fd();
        let gro_segments = configure_socket(fd, v6_socket);
        let max_gso_segments = if int_opt(fd, libc::SOL_UDP, libc::UDP_SEGMENT).is_ok() {
            MAX_GSO_SEGMENTS
        } else {
            1
        };

        let (ring, mode) = build_ring(config.sq_entries).map_err(Unsupported::RingSetup)?;
        if !ring.params().is_feature_ext_arg() {
            return Err(Unsupported::NoExtArg.into());
        }
        let buf_size =
            (RECVMSG_OUT_LEN + msg::SOCKADDR_LEN + msg::CONTROL_LEN + config.recv_payload)
                .next_multiple_of(64);
        let bufs = BufRing::new(config.recv_buffers, buf_size)?;
        // SAFETY: `bufs` maps `entries` initialised slots and is a field of the returned value,
        // dropped after `ring` (field order), so it outlives the registration.
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(bufs.ring_addr(), bufs.entries(), BGID, 0)
                .map_err(Unsupported::BufRing)?;
        }
        let slots: Vec<Box<SendSlot>> = (0..config.send_slots.max(1))
            .map(|_| SendSlot::new())
            .collect();
        let free_slots = (0..slots.len()).rev().collect();
        tracing::debug!(%local_addr, mode, gro_segments, max_gso_segments, "io_uring udp backend");
        Ok(Self {
            ring,
            socket,
            recv_hdr: recv_msghdr(),
            bufs: ManuallyDrop::new(bufs),
            free_slots,
            pool: Vec::with_capacity(slots.len()),
            slots,
            rx: VecDeque::with_capacity(usize::from(config.recv_buffers) * 2),
            arena: RxArena::new(),
            cqes: Vec::with_capacity(config.sq_entries as usize * 4),
            waker: Waker::new_eventfd()?,
            watches: Vec::new(),
            next_watch_id: 0,
            ready: Vec::new(),
            woken: false,
            started: false,
            recv_armed: false,
            recv_rearms: 0,
            waker_armed: false,
            sends_in_flight: 0,
            local_addr,
            v6_socket,
            max_gso_segments,
            gro_segments,
            counters: IoCounters::default(),
            mode,
        })
    }

    /// Which ring flags the kernel accepted: `coop-taskrun`, `single-issuer+defer-taskrun` or
    /// `plain`.
    pub fn mode(&self) -> &'static str {
        self.mode
    }

    /// How many times the multishot receive was armed: 1 plus one per time the kernel ended it
    /// (normally because every provided buffer was in use).
    pub fn receive_arms(&self) -> u64 {
        self.recv_rearms
    }

    /// Enables the ring on the calling thread and arms the standing requests.
    fn ensure_started(&mut self) -> io::Result<()> {
        if self.started {
            return Ok(());
        }
        self.ring.submitter().register_enable_rings()?;
        self.started = true;
        self.rearm()?;
        self.ring.submit()?;
        Ok(())
    }

    /// Pushes whatever standing request ended: the receive, the waker poll, fd polls.
    fn rearm(&mut self) -> io::Result<()> {
        if !self.started {
            return Ok(());
        }
        if !self.recv_armed {
            self.push_recv()?;
            self.recv_armed = true;
            self.recv_rearms += 1;
        }
        if !self.waker_armed {
            let fd = self.waker.raw_fd();
            self.push_poll(fd, libc::POLLIN, user_data(KIND_WAKER, 0))?;
            self.waker_armed = true;
        }
        for i in 0..self.watches.len() {
            if !self.watches[i].armed {
                let w = &self.watches[i];
                let (fd, events, data) = (w.fd, w.interest.poll_events(), w.id);
                self.push_poll(fd, events, user_data(KIND_WATCH, data))?;
                self.watches[i].armed = true;
            }
        }
        Ok(())
    }

    /// Submits if the submission queue is full, so one more entry fits.
    fn make_room(&mut self) -> io::Result<()> {
        while self.ring.submission().is_full() {
            match self.ring.submit() {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => self.reap(),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Pushes the multishot RECVMSG.
    fn push_recv(&mut self) -> io::Result<()> {
        self.make_room()?;
        let entry = opcode::RecvMsgMulti::new(
            types::Fd(self.socket.as_raw_fd()),
            &raw const *self.recv_hdr,
            BGID,
        )
        .build()
        .user_data(user_data(KIND_RECV, 0));
        // SAFETY: the request reads `self.recv_hdr` (a Box field, stable address) and writes
        // into buffers of `self.bufs` (a mapping registered as group BGID). Both are fields of
        // `self` that `Drop` keeps alive until the request is cancelled and its final
        // completion seen (or leaks if it cannot see it). The socket fd is a field too.
        unsafe { self.ring.submission().push(&entry) }.map_err(|_| sq_full())
    }

    /// Pushes a multishot POLL_ADD on `fd`.
    fn push_poll(&mut self, fd: RawFd, events: i16, data: u64) -> io::Result<()> {
        self.make_room()?;
        let entry = opcode::PollAdd::new(types::Fd(fd), events as u32)
            .multi(true)
            .build()
            .user_data(data);
        // SAFETY: a poll request points at no user memory. The fd is the waker's eventfd (an
        // Arc the backend holds) or a caller fd the caller promised to keep open; the kernel
        // holds its own file reference while the poll is armed in any case.
        unsafe { self.ring.submission().push(&entry) }.map_err(|_| sq_full())
    }

    /// Pushes a cancellation of the request(s) tagged `target`.
    fn push_cancel(&mut self, target: u64) -> io::Result<()> {
        self.make_room()?;
        let entry = opcode::AsyncCancel::new(target)
            .build()
            .user_data(user_data(KIND_CANCEL, 0));
        // SAFETY: a cancel request points at no user memory.
        unsafe { self.ring.submission().push(&entry) }.map_err(|_| sq_full())
    }

    /// Pushes the SENDMSG of slot `index`, already filled.
    fn push_send(&mut self, index: usize) -> io::Result<()> {
        self.make_room()?;
        let entry = opcode::SendMsg::new(
            types::Fd(self.socket.as_raw_fd()),
            &raw const self.slots[index].hdr,
        )
        .build()
        .user_data(user_data(KIND_SEND, index as u64));
        // SAFETY: the request reads slot `index`: its msghdr, which points at the slot's own
        // iovec, address and control buffers and at the slot's `buf` Vec. The slot is a Box
        // (stable address) in `self.slots`, which never shrinks; the slot is off the free list
        // until this request's completion puts it back (`on_send`), so nothing refills or
        // frees it meanwhile; `Drop` waits for the completion or leaks the slots.
        unsafe { self.ring.submission().push(&entry) }.map_err(|_| sq_full())
    }

    /// Moves every completion out of the completion queue and handles it. No system call.
    fn reap(&mut self) {
        let mut cqes = std::mem::take(&mut self.cqes);
        cqes.extend(self.ring.completion());
        let mut returned = false;
        for cqe in cqes.drain(..) {
            let (kind, index) = split_user_data(cqe.user_data());
            match kind {
                KIND_RECV => returned |= self.on_recv(cqe.result(), cqe.flags()),
                KIND_SEND => self.on_send(index as usize, cqe.result()),
                KIND_WAKER => {
                    if !cqueue::more(cqe.flags()) {
                        self.waker_armed = false;
                    }
                    if cqe.result() >= 0 {
                        self.waker.acknowledge();
                        self.woken = true;
                    }
                }
                KIND_WATCH => self.on_watch(index, cqe.result(), cqe.flags()),
                _ => {}
            }
        }
        self.cqes = cqes;
        if returned {
            self.bufs.publish();
        }
        if let Err(e) = self.rearm() {
            tracing::debug!(error = %e, "io_uring re-arm deferred");
        }
    }

    /// Handles one receive completion; returns whether a buffer went back to the ring.
    fn on_recv(&mut self, result: i32, flags: u32) -> bool {
        if !cqueue::more(flags) {
            self.recv_armed = false;
        }
        if result < 0 {
            // ENOBUFS: the ring ran dry and the multishot ended; the data waits in the socket.
            if result != -libc::ENOBUFS && result != -libc::ECANCELED {
                self.counters.recv_errors += 1;
            }
            return false;
        }
        let Some(bid) = cqueue::buffer_select(flags) else {
            self.counters.recv_errors += 1;
            return false;
        };
        self.deliver(bid, result as usize);
        self.bufs.push(bid);
        true
    }

    /// Parses buffer `bid` and queues its payload (one copy) for `poll_recv`.
    fn deliver(&mut self, bid: u16, len: usize) {
        let Some(data) = self.bufs.buffer(bid, len) else {
            self.counters.recv_errors += 1;
            return;
        };
        let Ok(out) = types::RecvMsgOut::parse(data, &self.recv_hdr) else {
            self.counters.recv_errors += 1;
            return;
        };
        if out.is_payload_truncated() {
            self.counters.truncated += 1;
            return;
        }
        let Some(source) = msg::decode_sockaddr(out.name_data()) else {
            self.counters.recv_errors += 1;
            return;
        };
        let payload = out.payload_data();
        if payload.is_empty() {
            return;
        }
        let control = msg::decode_recv_control(out.control_data());
        let stride = control
            .gro_size
            .filter(|&s| s < payload.len())
            .unwrap_or(payload.len());
        let meta = RecvMeta {
            source: unmap_source(source, self.v6_socket),
            dst_ip: control.dst_ip,
            ecn: control.ecn,
            len: payload.len(),
            stride,
        };
        let bytes = self.arena.copy(payload);
        let segments = meta.segments() as u64;
        self.counters.datagrams_received += segments;
        self.counters.bytes_received += meta.len as u64;
        if segments > 1 {
            self.counters.gro_batches += 1;
            self.counters.gro_segments += segments;
        }
        self.rx.push_back((meta, bytes));
    }

    fn on_send(&mut self, index: usize, result: i32) {
        let Some(slot) = self.slots.get_mut(index) else {
            return;
        };
        if result >= 0 {
            self.counters.datagrams_sent += slot.segments as u64;
            self.counters.bytes_sent += slot.len as u64;
            if slot.gso {
                self.counters.gso_batches += 1;
                self.counters.gso_segments += slot.segments as u64;
            }
        } else {
            self.counters.send_errors += 1;
            if slot.gso && result == -libc::EIO && self.max_gso_segments > 1 {
                // Same policy as quinn-udp: a device without checksum offload rejects GSO with
                // EIO. (EINVAL means a malformed batch, the caller's bug, not the device's.)
                tracing::info!(
                    errno = -result,
                    "UDP GSO send failed; disabling GSO on this socket"
                );
                self.max_gso_segments = 1;
            }
        }
        let mut buf = std::mem::take(&mut slot.buf);
        slot.iov.iov_base = std::ptr::null_mut();
        buf.clear();
        if self.pool.len() < self.slots.len() {
            self.pool.push(buf);
        }
        self.free_slots.push(index);
        self.sends_in_flight -= 1;
    }

    fn on_watch(&mut self, id: u64, result: i32, flags: u32) {
        let Some(watch) = self.watches.iter_mut().find(|w| w.id == id) else {
            return; // unwatched meanwhile
        };
        if !cqueue::more(flags) {
            watch.armed = false;
        }
        if result == -libc::ECANCELED {
            return;
        }
        // Errors (EBADF, POLLERR) are reported as readiness too: the caller's read shows them.
        if !self.ready.contains(&watch.token) {
            self.ready.push(watch.token);
        }
    }

    /// Blocks until at least one completion or `timeout`; submits what is queued.
    fn enter(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        let result = match timeout {
            Some(t) => {
                let ts = types::Timespec::from(t);
                let args = types::SubmitArgs::new().timespec(&ts);
                self.ring.submitter().submit_with_args(1, &args)
            }
            None => self.ring.submit_and_wait(1),
        };
        match result {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME | libc::EINTR | libc::EBUSY | libc::EAGAIN)
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Runs deferred completions without blocking.
    fn enter_nonblocking(&mut self) -> io::Result<()> {
        let args = types::SubmitArgs::new();
        let zero = types::Timespec::new();
        let args = args.timespec(&zero);
        // want = 1 with a zero timeout sets GETEVENTS (runs deferred task work) and returns
        // ETIME at once if nothing completed.
        match self.ring.submitter().submit_with_args(1, &args) {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME | libc::EINTR | libc::EBUSY | libc::EAGAIN)
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// What `wait` reports now, moving ready tokens to `ready`.
    fn take_outcome(&mut self, ready: &mut Vec<u64>) -> (WaitOutcome, bool) {
        let had_tokens = !self.ready.is_empty();
        ready.append(&mut self.ready);
        let outcome = WaitOutcome {
            received: !self.rx.is_empty(),
            woken: std::mem::take(&mut self.woken),
            timed_out: false,
        };
        (outcome, had_tokens)
    }

    /// Cancels every standing request and waits for their last completions. Returns whether
    /// the kernel is provably done with our memory.
    fn shutdown(&mut self) -> bool {
        if !self.started {
            return true; // nothing was ever submitted
        }
        let mut targets = vec![user_data(KIND_RECV, 0), user_data(KIND_WAKER, 0)];
        targets.extend(self.watches.iter().map(|w| user_data(KIND_WATCH, w.id)));
        self.watches.clear();
        for target in targets {
            if self.push_cancel(target).is_err() {
                return false;
            }
        }
        let deadline = Instant::now() + DROP_WAIT;
        // Stop `reap` from re-arming.
        self.started = false;
        loop {
            if self.enter(Some(Duration::from_millis(50))).is_err() {
                return false;
            }
            self.reap();
            if !self.recv_armed && self.sends_in_flight == 0 {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
        }
    }
}

impl Drop for UringUdp {
    fn drop(&mut self) {
        if self.shutdown() {
            let _ = self.ring.submitter().unregister_buf_ring(BGID);
            // SAFETY: every request that could write into the buffers has delivered its last
            // completion (`shutdown` returned true), the group is unregistered, and `bufs` is
            // never touched again.
            unsafe { ManuallyDrop::drop(&mut self.bufs) };
        } else {
            // The kernel may still own requests that point into the slots, the receive
            // msghdr and the buffer ring (wrong thread, broken ring): leak them rather than
            // free memory the kernel may write. `bufs` is simply never dropped.
            tracing::debug!("io_uring requests outlived drop; leaking their buffers");
            std::mem::forget(std::mem::take(&mut self.slots));
            std::mem::forget(std::mem::replace(&mut self.recv_hdr, recv_msghdr()));
        }
    }
}

fn sq_full() -> io::Error {
    io::Error::other("io_uring submission queue full")
}

/// IPv4 peers show up v4-mapped on a dual-stack socket; hand them out as plain IPv4 so the
/// caller sees one address per peer whichever socket received it.
fn unmap_source(source: SocketAddr, v6_socket: bool) -> SocketAddr {
    match source {
        SocketAddr::V6(v6) if v6_socket => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), v6.port()),
            None => source,
        },
        other => other,
    }
}

/// Socket options for the io_uring backend; returns the GRO segment count (1 without GRO).
fn configure_socket(fd: RawFd, v6_socket: bool) -> usize {
    // QUIC does its own PMTUD: never let the kernel fragment.
    let _ = set_int_opt(
        fd,
        libc::IPPROTO_IP,
        libc::IP_MTU_DISCOVER,
        libc::IP_PMTUDISC_PROBE,
    );
    let _ = set_int_opt(fd, libc::IPPROTO_IP, libc::IP_PKTINFO, 1);
    let _ = set_int_opt(fd, libc::IPPROTO_IP, libc::IP_RECVTOS, 1);
    if v6_socket {
        let _ = set_int_opt(
            fd,
            libc::IPPROTO_IPV6,
            libc::IPV6_MTU_DISCOVER,
            libc::IPV6_PMTUDISC_PROBE,
        );
        let _ = set_int_opt(fd, libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO, 1);
        let _ = set_int_opt(fd, libc::IPPROTO_IPV6, libc::IPV6_RECVTCLASS, 1);
    }
    match set_int_opt(fd, libc::SOL_UDP, libc::UDP_GRO, 1) {
        Ok(()) => GRO_SEGMENTS,
        Err(_) => 1,
    }
}

/// The socket, for `getsockopt` (tests check the buffer sizes) and tools; do not read from it.
impl std::os::fd::AsFd for UringUdp {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

impl UdpBackend for UringUdp {
    fn kind(&self) -> BackendKind {
        BackendKind::Uring
    }

    fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    fn max_gso_segments(&self) -> usize {
        self.max_gso_segments
    }

    fn gro_segments(&self) -> usize {
        self.gro_segments
    }

    fn send_buffer(&mut self) -> Vec<u8> {
        self.pool
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(SEND_BUFFER_CAPACITY))
    }

    fn queue_send(&mut self, meta: TransmitMeta, mut buf: Vec<u8>) {
        let len = meta.len.min(buf.len());
        if len == 0 || self.ensure_started().is_err() {
            if len > 0 {
                self.counters.send_errors += 1;
            }
            buf.clear();
            self.pool.push(buf);
            return;
        }
        if self.free_slots.is_empty() {
            // Every slot is in flight: submit and wait for completions to free one.
            let deadline = Instant::now() + SLOT_WAIT;
            while self.free_slots.is_empty() && Instant::now() < deadline {
                if self.enter(Some(Duration::from_millis(10))).is_err() {
                    break;
                }
                self.reap();
            }
        }
        let Some(index) = self.free_slots.pop() else {
            self.counters.send_errors += 1;
            buf.clear();
            self.pool.push(buf);
            return;
        };
        self.slots[index].fill(&meta, buf, len, self.v6_socket);
        self.sends_in_flight += 1;
        if self.push_send(index).is_err() {
            // The slot never reached the kernel: complete it here as a failure.
            self.on_send(index, -libc::EAGAIN);
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.ensure_started()?;
        if self.ring.submission().is_empty() {
            return Ok(()); // no system call when there is nothing to submit
        }
        loop {
            match self.ring.submit() {
                Ok(_) => return Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => self.reap(),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    fn poll_recv(&mut self) -> Option<(RecvMeta, BytesMut)> {
        if self.rx.is_empty() && self.started {
            self.reap();
        }
        self.rx.pop_front()
    }

    fn wait(&mut self, deadline: Option<Instant>, ready: &mut Vec<u64>) -> io::Result<WaitOutcome> {
        self.ensure_started()?;
        loop {
            self.reap();
            let (outcome, had_tokens) = self.take_outcome(ready);
            if !outcome.is_empty() || had_tokens {
                return Ok(outcome);
            }
            let now = Instant::now();
            let timeout = match deadline {
                Some(d) if d <= now => {
                    self.enter_nonblocking()?;
                    self.reap();
                    let (mut outcome, _) = self.take_outcome(ready);
                    outcome.timed_out = true;
                    return Ok(outcome);
                }
                Some(d) => Some(d - now),
                None => None,
            };
            self.enter(timeout)?;
        }
    }

    fn waker(&self) -> Waker {
        self.waker.clone()
    }

    fn watch_fd(&mut self, fd: RawFd, token: u64, interest: Interest) -> io::Result<()> {
        if self.watches.iter().any(|w| w.token == token) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "token already watched",
            ));
        }
        self.next_watch_id += 1;
        self.watches.push(Watch {
            id: self.next_watch_id,
            fd,
            token,
            interest,
            armed: false,
        });
        self.rearm()
    }

    fn unwatch_fd(&mut self, token: u64) -> io::Result<()> {
        let Some(at) = self.watches.iter().position(|w| w.token == token) else {
            return Err(io::Error::new(io::ErrorKind::NotFound, "token not watched"));
        };
        let watch = self.watches.remove(at);
        self.ready.retain(|&t| t != token);
        if watch.armed {
            self.push_cancel(user_data(KIND_WATCH, watch.id))?;
        }
        Ok(())
    }

    fn counters(&self) -> IoCounters {
        self.counters
    }
}
