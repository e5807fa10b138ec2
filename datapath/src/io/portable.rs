//! The portable UDP backend on quinn-udp: recvmmsg + GRO / sendmsg + GSO on Linux, URO/USO on
//! Windows.
//!
//! - **Receive**: one `UdpSocketState::recv` fills up to `quinn_udp::BATCH_SIZE` 64 KiB
//!   buffers (32 on Linux, one on Windows); each batch is copied once into the receive arena
//!   and queued for `poll_recv`. The 64 KiB buffers are reused, never handed out.
//! - **Send**: queued transmits wait in a queue until `flush`, which sends them from the
//!   caller's buffers (no copy) with `try_send`. If the socket buffer is full (`WouldBlock`)
//!   the rest stays queued and `wait` also waits for the socket to become writable, so a burst
//!   is delayed rather than dropped.
//! - **Wait**: Linux: one `ppoll` over the socket, the waker's eventfd and the watched fds,
//!   nanosecond timeout. Windows (kept thin): the socket is switched to blocking for one
//!   `peek_from` with a read timeout, and the [`Waker`] sends an empty datagram from a loopback
//!   socket to this socket; `poll_recv` swallows it. While sends are queued the Windows wait
//!   sleeps at most 1 ms at a time to retry them.

use std::collections::VecDeque;
use std::io::{self, IoSliceMut};
use std::net::{SocketAddr, UdpSocket};
use std::time::Instant;

use bytes::BytesMut;
use quinn_udp::{BATCH_SIZE, EcnCodepoint, Transmit, UdpSocketState};

use super::{
    BackendKind, IoCounters, RecvMeta, RxArena, SEND_BUFFER_CAPACITY, TransmitMeta, UdpBackend,
    WaitOutcome, Waker,
};

/// Receive buffer per batch slot: the largest GRO batch or UDP datagram.
const RECV_SLICE: usize = 64 << 10;

/// The quinn-udp backend. See the module docs.
#[derive(Debug)]
pub struct PortableUdp {
    socket: UdpSocket,
    state: UdpSocketState,
    recv_buf: Box<[u8]>,
    metas: [quinn_udp::RecvMeta; BATCH_SIZE],
    rx: VecDeque<(RecvMeta, BytesMut)>,
    arena: RxArena,
    tx: VecDeque<(TransmitMeta, Vec<u8>)>,
    pool: Vec<Vec<u8>>,
    waker: Waker,
    woken: bool,
    local_addr: SocketAddr,
    counters: IoCounters,
    /// `[socket, waker eventfd, watched fds...]`, reused by every wait.
    #[cfg(target_os = "linux")]
    pollfds: Vec<libc::pollfd>,
    /// Tokens of `pollfds[2..]`.
    #[cfg(target_os = "linux")]
    tokens: Vec<u64>,
    /// Where wake datagrams come from.
    #[cfg(not(target_os = "linux"))]
    waker_source: Option<SocketAddr>,
}

/// Most sends kept queued while the socket is not writable; beyond this they are dropped and
/// counted, so a stuck socket cannot grow memory without bound.
const MAX_QUEUED_SENDS: usize = 1024;

impl PortableUdp {
    /// Opens a non-blocking UDP socket on `addr` with [`super::SOCKET_BUFFER_BYTES`] buffers
    /// and quinn-udp's options (GRO, PKTINFO, TOS, no fragmentation).
    ///
    /// # Errors
    ///
    /// When the socket cannot be opened, bound or configured.
    pub fn bind(addr: SocketAddr) -> io::Result<Self> {
        Self::bind_with(addr, super::SOCKET_BUFFER_BYTES)
    }

    /// [`PortableUdp::bind`] with `socket_buffer` bytes of kernel send and receive buffer.
    ///
    /// # Errors
    ///
    /// When the socket cannot be opened, bound or configured.
    pub fn bind_with(addr: SocketAddr, socket_buffer: usize) -> io::Result<Self> {
        let socket = super::bind_socket(addr, socket_buffer)?;
        let state = UdpSocketState::new((&socket).into())?;
        // quinn-udp turns on SO_TIMESTAMPNS, and its 96-byte control buffer cannot hold GRO +
        // timestamp + PKTINFO + TOS: the TOS message (ECN) comes last and is truncated. We do
        // not use receive timestamps, so turn them off and keep ECN.
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            if let Err(e) = crate::sys::uring::set_int_opt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_TIMESTAMPNS,
                0,
            ) {
                tracing::debug!(error = %e, "could not turn off SO_TIMESTAMPNS");
            }
        }
        let local_addr = socket.local_addr()?;
        #[cfg(target_os = "linux")]
        let waker = Waker::new_eventfd()?;
        #[cfg(not(target_os = "linux"))]
        let waker = Waker::new_datagram(local_addr)?;
        #[cfg(target_os = "linux")]
        let pollfds = {
            use std::os::fd::AsRawFd;
            vec![
                libc::pollfd {
                    fd: socket.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: waker.raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
            ]
        };
        Ok(Self {
            #[cfg(not(target_os = "linux"))]
            waker_source: waker.source(),
            socket,
            state,
            recv_buf: vec![0u8; RECV_SLICE * BATCH_SIZE].into_boxed_slice(),
            metas: [quinn_udp::RecvMeta::default(); BATCH_SIZE],
            rx: VecDeque::with_capacity(BATCH_SIZE * 2),
            arena: RxArena::new(),
            tx: VecDeque::with_capacity(64),
            pool: Vec::new(),
            waker,
            woken: false,
            local_addr,
            counters: IoCounters::default(),
            #[cfg(target_os = "linux")]
            pollfds,
            #[cfg(target_os = "linux")]
            tokens: Vec::new(),
        })
    }

    /// One `recv` call; queues what it got. Returns whether it got anything.
    fn fill_rx(&mut self) -> bool {
        let mut rest: &mut [u8] = &mut self.recv_buf;
        let mut iovs: [IoSliceMut<'_>; BATCH_SIZE] = std::array::from_fn(|_| {
            let (head, tail) = std::mem::take(&mut rest).split_at_mut(RECV_SLICE);
            rest = tail;
            IoSliceMut::new(head)
        });
        let n = match self
            .state
            .recv((&self.socket).into(), &mut iovs, &mut self.metas)
        {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
            Err(_) => {
                self.counters.recv_errors += 1;
                return false;
            }
        };
        let mut got = false;
        for (meta, iov) in self.metas.iter().zip(iovs.iter()).take(n) {
            #[cfg(not(target_os = "linux"))]
            if meta.len == 0 && Some(meta.addr) == self.waker_source {
                self.woken = true;
                continue;
            }
            if meta.len == 0 {
                continue;
            }
            let Some(payload) = iov.get(..meta.len) else {
                self.counters.truncated += 1;
                continue;
            };
            let stride = if meta.stride == 0 || meta.stride > meta.len {
                meta.len
            } else {
                meta.stride
            };
            let out = RecvMeta {
                source: unmap(meta.addr),
                dst_ip: meta.dst_ip.map(|ip| ip.to_canonical()),
                ecn: meta.ecn.map(|e| e as u8),
                len: meta.len,
                stride,
            };
            let segments = out.segments() as u64;
            self.counters.datagrams_received += segments;
            self.counters.bytes_received += out.len as u64;
            if segments > 1 {
                self.counters.gro_batches += 1;
                self.counters.gro_segments += segments;
            }
            let bytes = self.arena.copy(payload);
            self.rx.push_back((out, bytes));
            got = true;
        }
        got
    }

    fn recycle(&mut self, mut buf: Vec<u8>) {
        buf.clear();
        if self.pool.len() < MAX_QUEUED_SENDS {
            self.pool.push(buf);
        }
    }

    fn outcome(&mut self, timed_out: bool) -> WaitOutcome {
        WaitOutcome {
            received: !self.rx.is_empty(),
            woken: std::mem::take(&mut self.woken),
            timed_out,
        }
    }
}

/// IPv4 peers show up v4-mapped on a dual-stack socket; hand them out as plain IPv4.
fn unmap(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), v6.port()),
            None => addr,
        },
        v4 => v4,
    }
}

/// quinn-udp wants the destination in the socket's family.
fn map_destination(destination: SocketAddr, v6_socket: bool) -> SocketAddr {
    match destination {
        SocketAddr::V4(v4) if v6_socket => {
            SocketAddr::new(v4.ip().to_ipv6_mapped().into(), v4.port())
        }
        other => other,
    }
}

/// The socket, for `getsockopt` (tests check the buffer sizes) and tools; do not read from it.
#[cfg(unix)]
impl std::os::fd::AsFd for PortableUdp {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

impl UdpBackend for PortableUdp {
    fn kind(&self) -> BackendKind {
        BackendKind::Portable
    }

    fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    fn max_gso_segments(&self) -> usize {
        self.state.max_gso_segments()
    }

    fn gro_segments(&self) -> usize {
        self.state.gro_segments()
    }

    fn send_buffer(&mut self) -> Vec<u8> {
        self.pool
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(SEND_BUFFER_CAPACITY))
    }

    fn queue_send(&mut self, mut meta: TransmitMeta, buf: Vec<u8>) {
        meta.len = meta.len.min(buf.len());
        if meta.len == 0 {
            self.recycle(buf);
            return;
        }
        if self.tx.len() >= MAX_QUEUED_SENDS {
            self.counters.send_errors += 1;
            self.recycle(buf);
            return;
        }
        self.tx.push_back((meta, buf));
    }

    fn flush(&mut self) -> io::Result<()> {
        let v6_socket = self.local_addr.is_ipv6();
        while let Some((meta, buf)) = self.tx.front() {
            let transmit = Transmit {
                destination: map_destination(meta.destination, v6_socket),
                ecn: meta.ecn.and_then(EcnCodepoint::from_bits),
                contents: &buf[..meta.len],
                segment_size: meta.segment_size.filter(|&s| s > 0 && s < meta.len),
                src_ip: meta.src_ip,
            };
            match self.state.try_send((&self.socket).into(), &transmit) {
                Ok(()) => {
                    let segments = meta.segments() as u64;
                    self.counters.datagrams_sent += segments;
                    self.counters.bytes_sent += meta.len as u64;
                    if transmit.segment_size.is_some() {
                        self.counters.gso_batches += 1;
                        self.counters.gso_segments += segments;
                    }
                }
                // Stays queued; `wait` waits for the socket to drain.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => self.counters.send_errors += 1,
            }
            if let Some((_, buf)) = self.tx.pop_front() {
                self.recycle(buf);
            }
        }
        Ok(())
    }

    fn poll_recv(&mut self) -> Option<(RecvMeta, BytesMut)> {
        if self.rx.is_empty() {
            self.fill_rx();
        }
        self.rx.pop_front()
    }

    #[cfg(target_os = "linux")]
    fn wait(&mut self, deadline: Option<Instant>, ready: &mut Vec<u64>) -> io::Result<WaitOutcome> {
        if !self.tx.is_empty() {
            self.flush()?;
        }
        loop {
            if !self.rx.is_empty() || self.woken {
                return Ok(self.outcome(false));
            }
            let now = Instant::now();
            let timeout = deadline.map(|d| d.saturating_duration_since(now));
            let timed_out = timeout.is_some_and(|t| t.is_zero());
            self.pollfds[0].events = if self.tx.is_empty() {
                libc::POLLIN
            } else {
                libc::POLLIN | libc::POLLOUT
            };
            for pfd in &mut self.pollfds {
                pfd.revents = 0;
            }
            crate::sys::uring::poll(&mut self.pollfds, timeout)?;
            if self.pollfds[1].revents != 0 {
                self.waker.acknowledge();
                self.woken = true;
            }
            let start = ready.len();
            for (pfd, &token) in self.pollfds[2..].iter().zip(&self.tokens) {
                if pfd.revents != 0 {
                    ready.push(token);
                }
            }
            let socket = self.pollfds[0].revents;
            if socket & libc::POLLOUT != 0 {
                self.flush()?;
            }
            if socket & !libc::POLLOUT != 0 {
                self.fill_rx();
            }
            let outcome = self.outcome(timed_out);
            if !outcome.is_empty() || ready.len() > start {
                return Ok(outcome);
            }
        }
    }

    #[cfg(not(target_os = "linux"))]
    fn wait(
        &mut self,
        deadline: Option<Instant>,
        _ready: &mut Vec<u64>,
    ) -> io::Result<WaitOutcome> {
        use std::time::Duration;
        if !self.tx.is_empty() {
            self.flush()?;
        }
        if self.rx.is_empty() && !self.woken {
            let mut timeout = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if !self.tx.is_empty() {
                let retry = Duration::from_millis(1);
                timeout = Some(timeout.map_or(retry, |t| t.min(retry)));
            }
            if timeout != Some(Duration::ZERO) {
                self.socket.set_nonblocking(false)?;
                self.socket.set_read_timeout(timeout)?;
                let peeked = self.socket.peek_from(&mut [0u8; 1]);
                self.socket.set_nonblocking(true)?;
                let readable = match peeked {
                    Ok(_) => true,
                    Err(e) => !matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ),
                };
                if readable {
                    self.fill_rx();
                }
            } else {
                self.fill_rx();
            }
        }
        // Clear the pending flag on every return so a lost wake datagram cannot mute wakes.
        self.waker.acknowledge();
        let timed_out = deadline.is_some_and(|d| d <= Instant::now());
        Ok(self.outcome(timed_out))
    }

    fn waker(&self) -> Waker {
        self.waker.clone()
    }

    #[cfg(target_os = "linux")]
    fn watch_fd(
        &mut self,
        fd: std::os::fd::RawFd,
        token: u64,
        interest: super::Interest,
    ) -> io::Result<()> {
        if self.tokens.contains(&token) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "token already watched",
            ));
        }
        self.pollfds.push(libc::pollfd {
            fd,
            events: interest.poll_events(),
            revents: 0,
        });
        self.tokens.push(token);
        Ok(())
    }

    #[cfg(target_os = "linux")]
    fn unwatch_fd(&mut self, token: u64) -> io::Result<()> {
        let Some(at) = self.tokens.iter().position(|&t| t == token) else {
            return Err(io::Error::new(io::ErrorKind::NotFound, "token not watched"));
        };
        self.tokens.remove(at);
        self.pollfds.remove(at + 2);
        Ok(())
    }

    fn counters(&self) -> IoCounters {
        self.counters
    }
}
