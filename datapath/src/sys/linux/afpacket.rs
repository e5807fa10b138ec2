//! AF_PACKET sockets with PACKET_MMAP rings (TPACKET_V2 or TPACKET_V3, RX and TX rings).
//!
//! [`PacketRing`] is the gateway's view of the party LAN: one `AF_PACKET` socket bound to the
//! NIC by interface index, with an RX ring and a TX ring in one shared mapping.
//!
//! - RX, two layouts ([`RingConfig::version`]; the kernel applies one per socket, so the TX ring
//!   uses the same):
//!   - TPACKET_V3 ([`RingVersion::V3`], the default of [`RingConfig`]): the kernel packs frames
//!     into blocks and retires a block when it is full or when the block timeout (1 ms by
//!     default) expires, and wakes the reader only then. Few wake-ups and tight packing at high
//!     rates, but on a quiet LAN every frame waits for the timeout: up to a millisecond of
//!     added latency (the lab measured 0.9 ms tunnel ping RTT against 0.07 ms direct).
//!   - TPACKET_V2 ([`RingVersion::V2`]): fixed-size slots with a status word each; a frame is
//!     readable, and the reader woken, as soon as the kernel has written it. No added latency,
//!     at the cost of one wake-up per frame when the reader keeps up, one status word per frame,
//!     and a slot per frame whatever its size (`rx_frame_size` caps the frame length read
//!     whole). The gateway uses V2 unless told otherwise; V3 suits LANs with sustained high
//!     frame rates where batching matters more than a millisecond.
//!
//!   [`PacketRing::next_block`] returns a ready block (with V2, the run of consecutive ready
//!   slots); its frames are slices of the ring (no copy) and the block goes back to the kernel
//!   when dropped.
//! - TX: [`PacketRing::send`] / [`PacketRing::send_with`] write a frame into the next free slot;
//!   [`PacketRing::flush`] kicks the kernel once per batch with `send(fd, NULL, 0, 0)`. The
//!   socket is non-blocking, so the kick never waits for the frames to leave. TX slots are
//!   fixed-size `tpacket2_hdr` or `tpacket3_hdr` frames, as the socket's version says.
//!   `PACKET_LOSS` makes the kernel skip a frame it rejects instead of stalling the ring at that
//!   slot, and frames above the interface MTU + 18 are refused (and counted) before they reach
//!   a slot. With [`RingConfig::tx_linear_copy`] each slot starts with a `virtio_net_hdr` that
//!   asks the kernel to copy the frame into its socket buffer rather than point at the ring
//!   page, which a veth would copy again into a fresh page.
//! - VLAN: Linux strips 802.1Q tags before packet sockets see a frame, whatever the NIC does,
//!   and reports the tag in the ring header; [`RxFrame::vlan`] exposes it and
//!   [`RxFrame::copy_tagged`] rebuilds the frame as it was on the wire.
//! - Checksums: a frame sent by a veth, container or VM on this host can carry an unfinished
//!   TCP/UDP checksum (`CHECKSUM_PARTIAL`, the NIC was to finish it); the kernel marks it
//!   `TP_STATUS_CSUMNOTREADY` and [`RxFrame::checksum_not_ready`] reports it, so a forwarder can
//!   complete the checksum before the frame leaves the host.
//! - Promiscuous membership (`PACKET_ADD_MEMBERSHIP`, dropped with the socket),
//!   `PACKET_IGNORE_OUTGOING` so nothing sent from this host is read back, and
//!   `PACKET_QDISC_BYPASS` so TX frames skip the qdisc layer.
//!
//! The ring walking itself lives in `ring` and is unit-tested against a fake kernel over
//! anonymous memory. [`PacketSocket`] is the baseline without rings: `recvmmsg` into a batch of
//! buffers and plain `send`. [`nic_warnings`] reports NIC settings that break bridging.
//!
//! The socket's network namespace is the one of the thread that opens it (see
//! `netns::Netns::run_in`).

mod mmap;
mod nic;
mod ring;

use std::io;
use std::mem::{size_of, zeroed};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

pub use nic::{NicWarning, is_wireless, nic_warnings};
pub use ring::{RingVersion, RxBlock, RxCounters, RxFrame, RxFrames, TxCounters, TxError, VlanTag};

use mmap::Mmap;
use ring::{RxRing, TxRing};

const ETH_P_ALL_BE: u16 = (libc::ETH_P_ALL as u16).to_be();

/// Errors from opening a packet socket.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AfPacketError {
    /// The process lacks CAP_NET_RAW.
    #[error(
        "opening an AF_PACKET socket needs CAP_NET_RAW: run as root or grant CAP_NET_RAW: \
         setcap cap_net_raw+ep {exe}"
    )]
    PermissionDenied {
        /// The path of the running binary, for the `setcap` command line.
        exe: String,
    },
    /// No interface has that name or index in this network namespace.
    #[error("no such network interface: {name} (list them with `ip link`)")]
    NoSuchInterface {
        /// The name or index asked for.
        name: String,
    },
    /// The interface exists but is administratively down.
    #[error("interface {name} is down: bring it up with `ip link set {name} up`")]
    InterfaceDown {
        /// The interface name.
        name: String,
    },
    /// The ring geometry is not acceptable.
    #[error("invalid ring configuration: {0}")]
    Config(&'static str),
    /// A system call failed.
    #[error("{op} on {ifname}: {source}")]
    Io {
        /// What we were doing.
        op: &'static str,
        /// The interface name.
        ifname: String,
        /// The error.
        source: io::Error,
    },
}

/// Geometry and options of a [`PacketRing`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RingConfig {
    /// The ring layout, for both rings (the kernel applies one version per socket).
    pub version: RingVersion,
    /// RX block size in bytes: a multiple of the page size.
    pub rx_block_size: u32,
    /// Number of RX blocks.
    pub rx_block_count: u32,
    /// RX frame size, a multiple of 16. With TPACKET_V3 only a hint (frames are packed
    /// tightly; this sizes `tp_frame_nr`). With TPACKET_V2 the slot size, which must divide the
    /// block size and caps the frames read whole: a slot holds a 32-byte header and about 34
    /// bytes of alignment before the frame, so 2048 bytes fit frames up to 1982 bytes; longer
    /// ones arrive truncated (and counted).
    pub rx_frame_size: u32,
    /// How long the kernel keeps a partly filled RX block before handing it over, in ms
    /// (TPACKET_V3 only).
    pub block_timeout_ms: u32,
    /// TX slot size in bytes (header of 48 bytes with TPACKET_V3, 32 with TPACKET_V2, + largest
    /// frame): a multiple of 16 that divides the TX block size.
    pub tx_frame_size: u32,
    /// TX block size in bytes: a multiple of the page size.
    pub tx_block_size: u32,
    /// Number of TX blocks; 0 for no TX ring.
    pub tx_block_count: u32,
    /// Join the interface in promiscuous mode.
    pub promiscuous: bool,
    /// Set PACKET_IGNORE_OUTGOING: never read frames this host sends on the interface.
    pub ignore_outgoing: bool,
    /// Set PACKET_QDISC_BYPASS: TX frames go straight to the driver.
    pub qdisc_bypass: bool,
    /// Have the kernel copy each TX frame into the linear area of its socket buffer instead
    /// of attaching the ring slot's page as a fragment (PACKET_VNET_HDR, with a
    /// `virtio_net_hdr` before each TX frame whose `hdr_len` is the frame's length).
    ///
    /// A TX ring skb points into the ring and is flagged zero-copy, so a device that hands
    /// the frame to another stack (veth, which also carries containers and lab namespaces)
    /// must copy it into freshly allocated pages (`skb_copy_ubufs`): a page per frame, even
    /// for a 64-byte one. `bench gateway` measured the TX ring without this at 1.7 µs per
    /// 1400-byte frame on a veth, no cheaper than one `send` per frame, and with it at
    /// 1.1 µs. The cost is one memcpy in the kernel, which a NIC would not need; the kernel
    /// still reads the frame from the ring, without a system call per frame.
    ///
    /// The socket option is socket-wide: RX frames then carry a `virtio_net_hdr` before the
    /// MAC header (the ring reads frames at `tp_mac`, so they look the same), a TPACKET_V2
    /// slot holds 10 bytes less of frame, and the kernel drops received GSO super-frames of
    /// types a `virtio_net_hdr` cannot describe (frames the gateway could not forward anyway).
    pub tx_linear_copy: bool,
}

impl Default for RingConfig {
    /// TPACKET_V3, 4 MiB of RX ring in 32 blocks of 128 KiB retired after 1 ms, 512 TX slots of
    /// 2 KiB, promiscuous, ignoring outgoing frames, bypassing the qdisc, TX frames attached
    /// to their socket buffers as page fragments (no [`tx_linear_copy`](Self::tx_linear_copy)).
    fn default() -> Self {
        Self {
            version: RingVersion::V3,
            rx_block_size: 128 * 1024,
            rx_block_count: 32,
            rx_frame_size: 2048,
            block_timeout_ms: 1,
            tx_frame_size: 2048,
            tx_block_size: 128 * 1024,
            tx_block_count: 8,
            promiscuous: true,
            ignore_outgoing: true,
            qdisc_bypass: true,
            tx_linear_copy: false,
        }
    }
}

impl RingConfig {
    fn validate(&self) -> Result<(), AfPacketError> {
        let page = page_size();
        let bad = |m| Err(AfPacketError::Config(m));
        if self.rx_block_size == 0 || !(self.rx_block_size as usize).is_multiple_of(page) {
            return bad("rx_block_size must be a non-zero multiple of the page size");
        }
        if self.rx_block_count == 0 {
            return bad("rx_block_count must be at least 1");
        }
        if self.rx_frame_size < 64
            || !self.rx_frame_size.is_multiple_of(16)
            || self.rx_frame_size > self.rx_block_size
        {
            return bad("rx_frame_size must be a multiple of 16 between 64 and the block size");
        }
        if self.version == RingVersion::V2 && !self.rx_block_size.is_multiple_of(self.rx_frame_size)
        {
            return bad("with TPACKET_V2, rx_frame_size must divide rx_block_size");
        }
        if self.tx_block_count > 0 {
            if self.tx_block_size == 0 || !(self.tx_block_size as usize).is_multiple_of(page) {
                return bad("tx_block_size must be a non-zero multiple of the page size");
            }
            if self.tx_frame_size <= 64
                || !self.tx_frame_size.is_multiple_of(16)
                || !self.tx_block_size.is_multiple_of(self.tx_frame_size)
            {
                return bad("tx_frame_size must be a multiple of 16 dividing tx_block_size");
            }
        }
        Ok(())
    }

    fn rx_frame_count(&self) -> u32 {
        (self.rx_block_size / self.rx_frame_size) * self.rx_block_count
    }

    fn tx_frame_count(&self) -> u32 {
        (self.tx_block_size / self.tx_frame_size) * self.tx_block_count
    }

    fn rx_len(&self) -> usize {
        self.rx_block_size as usize * self.rx_block_count as usize
    }

    fn tx_len(&self) -> usize {
        self.tx_block_size as usize * self.tx_block_count as usize
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(p).unwrap_or(4096)
}

/// All counters of a [`PacketRing`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RingCounters {
    /// RX side (frames, blocks, truncated frames).
    pub rx: RxCounters,
    /// TX side (frames, ring full, oversize).
    pub tx: TxCounters,
    /// Frames the kernel saw for this socket (PACKET_STATISTICS `tp_packets`, accumulated).
    pub kernel_packets: u64,
    /// Frames the kernel dropped because the RX ring was full (`tp_drops`, accumulated).
    pub kernel_drops: u64,
    /// Times the kernel froze the RX queue for lack of blocks (`tp_freeze_q_cnt`).
    pub kernel_freezes: u64,
}

/// Builds an `ifreq` naming `ifname`.
pub(crate) fn ifreq_for(ifname: &str) -> io::Result<libc::ifreq> {
    let bytes = ifname.as_bytes();
    if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "interface names have 1 to 15 bytes",
        ));
    }
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    Ok(req)
}

/// The index of interface `ifname` in the calling thread's network namespace.
///
/// # Errors
///
/// [`AfPacketError::NoSuchInterface`].
pub fn if_index(ifname: &str) -> Result<u32, AfPacketError> {
    let missing = || AfPacketError::NoSuchInterface {
        name: ifname.to_owned(),
    };
    let c = std::ffi::CString::new(ifname).map_err(|_| missing())?;
    // SAFETY: `c` is a valid NUL-terminated string for the duration of the call.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if index == 0 {
        Err(missing())
    } else {
        Ok(index)
    }
}

/// The name of the interface with index `ifindex`.
///
/// # Errors
///
/// [`AfPacketError::NoSuchInterface`].
pub fn if_name(ifindex: u32) -> Result<String, AfPacketError> {
    let mut buf = [0 as libc::c_char; libc::IFNAMSIZ];
    // SAFETY: `buf` has the IFNAMSIZ bytes if_indextoname requires.
    let p = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr()) };
    if p.is_null() {
        return Err(AfPacketError::NoSuchInterface {
            name: format!("index {ifindex}"),
        });
    }
    // SAFETY: on success the buffer holds a NUL-terminated name.
    let name = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) };
    Ok(name.to_string_lossy().into_owned())
}

fn exe_name() -> String {
    std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "<binary>".to_owned())
}

/// Opens a non-blocking AF_PACKET socket that receives nothing until bound.
fn packet_socket() -> Result<OwnedFd, AfPacketError> {
    // SAFETY: plain socket(2); protocol 0 so no frames queue up before `bind`.
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        let err = io::Error::last_os_error();
        return Err(match err.raw_os_error() {
            Some(libc::EPERM | libc::EACCES) => AfPacketError::PermissionDenied { exe: exe_name() },
            _ => AfPacketError::Io {
                op: "socket(AF_PACKET)",
                ifname: String::new(),
                source: err,
            },
        });
    }
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn setsockopt<T>(fd: BorrowedFd<'_>, level: i32, name: i32, value: &T) -> io::Result<()> {
    // SAFETY: `value` points at a live `T` of `size_of::<T>()` bytes for the duration of the
    // call, which is what the option expects (callers pass the matching C structure).
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (value as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Resolves and checks the interface, then binds `fd` to it for all protocols.
/// Binds to the interface after checking that it is up. `protocol` (network byte order) is
/// what the socket receives: `ETH_P_ALL_BE` for every frame, 0 for none (send-only).
fn bind_checked(
    fd: BorrowedFd<'_>,
    ifindex: u32,
    ifname: &str,
    protocol: u16,
) -> Result<(), AfPacketError> {
    let io_err = |op| {
        move |source| AfPacketError::Io {
            op,
            ifname: ifname.to_owned(),
            source,
        }
    };
    let mut req = ifreq_for(ifname).map_err(io_err("SIOCGIFFLAGS"))?;
    // SAFETY: `req` is a valid ifreq naming the interface; the kernel fills ifru_flags.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) };
    if rc < 0 {
        return Err(io_err("SIOCGIFFLAGS")(io::Error::last_os_error()));
    }
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    if flags & libc::IFF_UP as libc::c_short == 0 {
        return Err(AfPacketError::InterfaceDown {
            name: ifname.to_owned(),
        });
    }
    // SAFETY: sockaddr_ll is plain old data.
    let mut sll: libc::sockaddr_ll = unsafe { zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = protocol;
    sll.sll_ifindex = ifindex as i32;
    // SAFETY: `sll` is a valid sockaddr_ll of the stated length.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&raw const sll).cast(),
            size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::ENODEV) {
            return Err(AfPacketError::NoSuchInterface {
                name: ifname.to_owned(),
            });
        }
        return Err(io_err("bind")(err));
    }
    Ok(())
}

/// The MTU of `ifname` (`SIOCGIFMTU` on any socket of the interface's namespace).
fn if_mtu(fd: BorrowedFd<'_>, ifname: &str) -> io::Result<u32> {
    let mut req = ifreq_for(ifname)?;
    // SAFETY: `req` is a valid ifreq naming the interface; the kernel fills ifru_mtu.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCGIFMTU, &mut req) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFMTU filled the mtu member of the union.
    Ok(unsafe { req.ifr_ifru.ifru_mtu } as u32)
}

fn join_promiscuous(fd: BorrowedFd<'_>, ifindex: u32) -> io::Result<()> {
    let mreq = libc::packet_mreq {
        mr_ifindex: ifindex as i32,
        mr_type: libc::PACKET_MR_PROMISC as u16,
        mr_alen: 0,
        mr_address: [0; 8],
    };
    setsockopt(fd, libc::SOL_PACKET, libc::PACKET_ADD_MEMBERSHIP, &mreq)
}

/// Reads (and thereby resets) the kernel's PACKET_STATISTICS of a packet socket. Sockets
/// without TPACKET_V3 report no freeze count.
fn packet_statistics(fd: BorrowedFd<'_>) -> io::Result<libc::tpacket_stats_v3> {
    // SAFETY: plain old data.
    let mut st: libc::tpacket_stats_v3 = unsafe { zeroed() };
    let mut len = size_of::<libc::tpacket_stats_v3>() as libc::socklen_t;
    // SAFETY: `st` and `len` are valid for writes; the kernel writes at most `len` bytes.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_STATISTICS,
            (&raw mut st).cast(),
            &mut len,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st)
}

/// Waits until `fd` is readable (or writable with `POLLOUT`) or `timeout` passes.
fn poll_fd(fd: BorrowedFd<'_>, events: i16, timeout: Duration) -> io::Result<bool> {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events,
        revents: 0,
    };
    let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: one valid pollfd.
    let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
    match rc {
        rc if rc < 0 => {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                Ok(false)
            } else {
                Err(err)
            }
        }
        0 => Ok(false),
        _ => Ok(true),
    }
}

/// An AF_PACKET socket with an RX ring and a TX ring (TPACKET_V2 or V3), bound to one interface.
#[derive(Debug)]
pub struct PacketRing {
    // Field order: the rings hold `Arc`s of the mapping, which is unmapped before the socket
    // closes.
    rx: RxRing,
    tx: Option<TxRing>,
    fd: OwnedFd,
    ifindex: u32,
    ifname: String,
    kernel_packets: u64,
    kernel_drops: u64,
    kernel_freezes: u64,
}

impl PacketRing {
    /// Opens a ring on interface `ifname` (in the calling thread's network namespace).
    ///
    /// # Errors
    ///
    /// [`AfPacketError::PermissionDenied`] without CAP_NET_RAW,
    /// [`AfPacketError::NoSuchInterface`], [`AfPacketError::InterfaceDown`],
    /// [`AfPacketError::Config`] for bad geometry, [`AfPacketError::Io`] otherwise.
    pub fn open(ifname: &str, config: &RingConfig) -> Result<Self, AfPacketError> {
        let ifindex = if_index(ifname)?;
        Self::open_index(ifindex, config)
    }

    /// Opens a ring on the interface with index `ifindex`.
    ///
    /// # Errors
    ///
    /// As [`open`](Self::open).
    pub fn open_index(ifindex: u32, config: &RingConfig) -> Result<Self, AfPacketError> {
        config.validate()?;
        let ifname = if_name(ifindex)?;
        let fd = packet_socket()?;
        let io_err = |op| {
            let ifname = ifname.clone();
            move |source| AfPacketError::Io { op, ifname, source }
        };
        let b = fd.as_fd();
        let (version, version_op) = match config.version {
            RingVersion::V2 => (
                libc::tpacket_versions::TPACKET_V2,
                "PACKET_VERSION TPACKET_V2",
            ),
            RingVersion::V3 => (
                libc::tpacket_versions::TPACKET_V3,
                "PACKET_VERSION TPACKET_V3",
            ),
        };
        setsockopt(
            b,
            libc::SOL_PACKET,
            libc::PACKET_VERSION,
            &(version as libc::c_int),
        )
        .map_err(io_err(version_op))?;
        // A malformed TX frame is skipped instead of stalling the ring at its slot. Must precede
        // the rings (EBUSY afterwards).
        let one: libc::c_int = 1;
        setsockopt(b, libc::SOL_PACKET, libc::PACKET_LOSS, &one).map_err(io_err("PACKET_LOSS"))?;
        // Also before the rings (EBUSY afterwards).
        let vnet_hdr = config.tx_linear_copy && config.tx_block_count > 0;
        if vnet_hdr {
            setsockopt(b, libc::SOL_PACKET, libc::PACKET_VNET_HDR, &one)
                .map_err(io_err("PACKET_VNET_HDR"))?;
        }
        match config.version {
            RingVersion::V2 => {
                let rx_req = libc::tpacket_req {
                    tp_block_size: config.rx_block_size,
                    tp_block_nr: config.rx_block_count,
                    tp_frame_size: config.rx_frame_size,
                    tp_frame_nr: config.rx_frame_count(),
                };
                setsockopt(b, libc::SOL_PACKET, libc::PACKET_RX_RING, &rx_req)
                    .map_err(io_err("PACKET_RX_RING"))?;
                if config.tx_block_count > 0 {
                    let tx_req = libc::tpacket_req {
                        tp_block_size: config.tx_block_size,
                        tp_block_nr: config.tx_block_count,
                        tp_frame_size: config.tx_frame_size,
                        tp_frame_nr: config.tx_frame_count(),
                    };
                    setsockopt(b, libc::SOL_PACKET, libc::PACKET_TX_RING, &tx_req)
                        .map_err(io_err("PACKET_TX_RING"))?;
                }
            }
            RingVersion::V3 => {
                let rx_req = libc::tpacket_req3 {
                    tp_block_size: config.rx_block_size,
                    tp_block_nr: config.rx_block_count,
                    tp_frame_size: config.rx_frame_size,
                    tp_frame_nr: config.rx_frame_count(),
                    tp_retire_blk_tov: config.block_timeout_ms,
                    tp_sizeof_priv: 0,
                    tp_feature_req_word: 0,
                };
                setsockopt(b, libc::SOL_PACKET, libc::PACKET_RX_RING, &rx_req)
                    .map_err(io_err("PACKET_RX_RING"))?;
                if config.tx_block_count > 0 {
                    // TX rings take no retire timeout, private area or feature word.
                    let tx_req = libc::tpacket_req3 {
                        tp_block_size: config.tx_block_size,
                        tp_block_nr: config.tx_block_count,
                        tp_frame_size: config.tx_frame_size,
                        tp_frame_nr: config.tx_frame_count(),
                        tp_retire_blk_tov: 0,
                        tp_sizeof_priv: 0,
                        tp_feature_req_word: 0,
                    };
                    setsockopt(b, libc::SOL_PACKET, libc::PACKET_TX_RING, &tx_req)
                        .map_err(io_err("PACKET_TX_RING"))?;
                }
            }
        }
        if config.qdisc_bypass {
            setsockopt(b, libc::SOL_PACKET, libc::PACKET_QDISC_BYPASS, &one)
                .map_err(io_err("PACKET_QDISC_BYPASS"))?;
        }
        if config.ignore_outgoing {
            setsockopt(b, libc::SOL_PACKET, libc::PACKET_IGNORE_OUTGOING, &one)
                .map_err(io_err("PACKET_IGNORE_OUTGOING (Linux 4.20+)"))?;
        }
        // The kernel maps the RX ring first and the TX ring right after it.
        let mem = Arc::new(
            Mmap::map_fd(b, config.rx_len() + config.tx_len()).map_err(io_err("mmap ring"))?,
        );
        let rx = match config.version {
            RingVersion::V2 => RxRing::new_v2(
                Arc::clone(&mem),
                0,
                config.rx_frame_size as usize,
                config.rx_frame_count() as usize,
            ),
            RingVersion::V3 => RxRing::new(
                Arc::clone(&mem),
                0,
                config.rx_block_size as usize,
                config.rx_block_count as usize,
            ),
        };
        let mut tx = (config.tx_block_count > 0).then(|| {
            let new = match config.version {
                RingVersion::V2 => TxRing::new_v2,
                RingVersion::V3 => TxRing::new,
            };
            new(
                Arc::clone(&mem),
                config.rx_len(),
                config.tx_frame_size as usize,
                config.tx_frame_count() as usize,
            )
        });
        drop(mem);
        bind_checked(b, ifindex, &ifname, ETH_P_ALL_BE)?;
        if let Some(tx) = tx.as_mut() {
            if vnet_hdr {
                tx.use_vnet_hdr();
            }
            // The kernel refuses frames above MTU + Ethernet header + one VLAN tag.
            let mtu = if_mtu(b, &ifname).map_err(io_err("SIOCGIFMTU"))?;
            tx.limit_frame(mtu as usize + 14 + 4);
        }
        if config.promiscuous {
            join_promiscuous(b, ifindex).map_err(io_err("PACKET_ADD_MEMBERSHIP promiscuous"))?;
        }
        Ok(Self {
            rx,
            tx,
            fd,
            ifindex,
            ifname,
            kernel_packets: 0,
            kernel_drops: 0,
            kernel_freezes: 0,
        })
    }

    /// The interface index the socket is bound to.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// The interface name (as it was when the ring was opened).
    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// Returns the next RX block if the kernel has handed one over. Dropping the block returns
    /// it to the kernel; hold it only while processing its frames.
    pub fn next_block(&mut self) -> Option<RxBlock<'_>> {
        self.rx.next_block()
    }

    /// Hands every frame of up to `max_blocks` ready blocks to `on_frame`, returning each block
    /// to the kernel after its last frame. Returns the number of frames. Does not wait.
    pub fn drain(&mut self, max_blocks: usize, mut on_frame: impl FnMut(RxFrame<'_>)) -> usize {
        let mut frames = 0;
        for _ in 0..max_blocks {
            let Some(block) = self.rx.next_block() else {
                break;
            };
            frames += block.len();
            block.frames().for_each(&mut on_frame);
        }
        frames
    }

    /// Waits up to `timeout` for the socket to become readable (a block is ready). Returns
    /// whether it did.
    ///
    /// # Errors
    ///
    /// The error of `poll(2)`.
    pub fn wait_rx(&self, timeout: Duration) -> io::Result<bool> {
        poll_fd(self.fd.as_fd(), libc::POLLIN, timeout)
    }

    /// Waits up to `timeout` for a TX slot to become free. Returns whether one did.
    ///
    /// # Errors
    ///
    /// The error of `poll(2)`.
    pub fn wait_tx(&self, timeout: Duration) -> io::Result<bool> {
        poll_fd(self.fd.as_fd(), libc::POLLOUT, timeout)
    }

    /// Largest frame the TX ring accepts: the slot capacity, capped at the interface MTU + 18
    /// (Ethernet header and one VLAN tag) as read at open; 0 without a TX ring.
    pub fn max_tx_frame(&self) -> usize {
        self.tx.as_ref().map_or(0, TxRing::max_frame)
    }

    /// Copies `frame` into the next free TX slot. It leaves on the next [`flush`](Self::flush).
    ///
    /// # Errors
    ///
    /// [`TxError::RingFull`] (flush, then wait with [`wait_tx`](Self::wait_tx)),
    /// [`TxError::TooLarge`], [`TxError::NoRing`].
    pub fn send(&mut self, frame: &[u8]) -> Result<(), TxError> {
        self.send_with(frame.len(), |buf| buf.copy_from_slice(frame))
    }

    /// Queues a frame of `len` bytes that `fill` writes straight into the slot.
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send).
    pub fn send_with(&mut self, len: usize, fill: impl FnOnce(&mut [u8])) -> Result<(), TxError> {
        self.tx
            .as_mut()
            .ok_or(TxError::NoRing)?
            .push_with(len, fill)
    }

    /// Frames queued and not yet kicked.
    pub fn tx_pending(&self) -> usize {
        self.tx.as_ref().map_or(0, TxRing::pending)
    }

    /// Asks the kernel to transmit every queued frame: one `send(fd, NULL, 0, 0)` if anything is
    /// pending. Returns the number of frames the kernel accepted (as `send` reports bytes, this is
    /// the number of frames queued since the last successful flush).
    ///
    /// # Errors
    ///
    /// The error of `send(2)`, except `EAGAIN`/`ENOBUFS`, after which the frames stay queued and
    /// go with the next flush (`Ok(0)`).
    pub fn flush(&mut self) -> io::Result<usize> {
        let Some(tx) = self.tx.as_mut() else {
            return Ok(0);
        };
        let pending = tx.pending();
        if pending == 0 {
            return Ok(0);
        }
        // MSG_DONTWAIT: a blocking kick returns only once every frame it sent has been freed
        // (`tpacket_snd` waits on `skb_completion`), which on a real NIC means after its TX
        // completion interrupt; the datapath thread would sleep through that instead of
        // serving the room. Slots come back on their own; `ring_send` kicks again when full.
        // SAFETY: a zero-length send with no buffer is how TPACKET TX rings are kicked; the
        // kernel reads frames only from slots we marked SEND_REQUEST.
        let rc =
            unsafe { libc::send(self.fd.as_raw_fd(), std::ptr::null(), 0, libc::MSG_DONTWAIT) };
        if rc < 0 {
            let err = io::Error::last_os_error();
            return match err.raw_os_error() {
                Some(libc::EAGAIN | libc::ENOBUFS | libc::EINTR) => Ok(0),
                _ => Err(err),
            };
        }
        tx.flushed();
        Ok(pending)
    }

    /// Reads the kernel's PACKET_STATISTICS (which resets them) into the accumulated counters
    /// and returns all counters. Call it at stats intervals, not per frame.
    ///
    /// # Errors
    ///
    /// The error of `getsockopt(2)`.
    pub fn counters(&mut self) -> io::Result<RingCounters> {
        let st = packet_statistics(self.fd.as_fd())?;
        self.kernel_packets += u64::from(st.tp_packets);
        self.kernel_drops += u64::from(st.tp_drops);
        self.kernel_freezes += u64::from(st.tp_freeze_q_cnt);
        Ok(RingCounters {
            rx: self.rx.counters(),
            tx: self.tx.as_ref().map(TxRing::counters).unwrap_or_default(),
            kernel_packets: self.kernel_packets,
            kernel_drops: self.kernel_drops,
            kernel_freezes: self.kernel_freezes,
        })
    }
}

impl AsFd for PacketRing {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for PacketRing {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// A send-only packet socket for frames that lead with a `virtio_net_hdr` (`PACKET_VNET_HDR`):
/// TCP super-frames with a GSO header, which the kernel passes down as one socket buffer and
/// cuts to the MTU only where the device cannot (TSO, or software GSO just before the driver).
/// A veth or bridge carries the super-frame whole to the receiving host's TCP stack.
///
/// Frames go straight to the device (`PACKET_QDISC_BYPASS`), like the [`PacketRing`]'s, so a
/// caller that kicks the ring before each send keeps one order across both.
#[derive(Debug)]
pub struct VnetSender {
    fd: OwnedFd,
    ifname: String,
}

impl VnetSender {
    /// Opens the socket on the interface with index `ifindex`.
    ///
    /// # Errors
    ///
    /// As [`PacketRing::open`].
    pub fn open_index(ifindex: u32) -> Result<Self, AfPacketError> {
        let ifname = if_name(ifindex)?;
        let fd = packet_socket()?;
        let b = fd.as_fd();
        let one: libc::c_int = 1;
        let io_err = |op| {
            let ifname = ifname.clone();
            move |source| AfPacketError::Io { op, ifname, source }
        };
        setsockopt(b, libc::SOL_PACKET, libc::PACKET_VNET_HDR, &one)
            .map_err(io_err("PACKET_VNET_HDR"))?;
        setsockopt(b, libc::SOL_PACKET, libc::PACKET_QDISC_BYPASS, &one)
            .map_err(io_err("PACKET_QDISC_BYPASS"))?;
        bind_checked(b, ifindex, &ifname, 0)?;
        Ok(Self { fd, ifname })
    }

    /// The interface name.
    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// Sends one frame: `packet` is the 10-byte `virtio_net_hdr` followed by the frame.
    ///
    /// # Errors
    ///
    /// The error of `send(2)`: `EINVAL` for a header the kernel rejects, `EAGAIN`/`ENOBUFS`
    /// when the device queue is full.
    pub fn send(&self, packet: &[u8]) -> io::Result<()> {
        // SAFETY: `packet` is a live buffer of `packet.len()` bytes for the duration of the call.
        let rc = unsafe {
            libc::send(
                self.fd.as_raw_fd(),
                packet.as_ptr().cast(),
                packet.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }
}

/// Options of a [`PacketSocket`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketConfig {
    /// Frames per `recvmmsg` call.
    pub batch: usize,
    /// Buffer size per frame; longer frames are truncated and counted.
    pub snaplen: usize,
    /// Join the interface in promiscuous mode.
    pub promiscuous: bool,
    /// Set PACKET_IGNORE_OUTGOING.
    pub ignore_outgoing: bool,
    /// Socket receive buffer in bytes (SO_RCVBUFFORCE when permitted, else SO_RCVBUF, which
    /// the kernel caps at `net.core.rmem_max`). Each queued frame costs its buffer's truesize,
    /// so the default of 212 KiB holds only about a hundred full-size frames.
    pub recv_buffer: usize,
}

impl Default for SocketConfig {
    /// 64 frames of 2048 bytes per batch, promiscuous, ignoring outgoing frames, 4 MiB of
    /// receive buffer.
    fn default() -> Self {
        Self {
            batch: 64,
            snaplen: 2048,
            promiscuous: true,
            ignore_outgoing: true,
            recv_buffer: 4 << 20,
        }
    }
}

/// Counters of a [`PacketSocket`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SocketCounters {
    /// Frames received.
    pub rx_frames: u64,
    /// Frames longer than the snap length.
    pub rx_truncated: u64,
    /// `recvmmsg` calls that returned frames.
    pub rx_batches: u64,
    /// Frames sent.
    pub tx_frames: u64,
    /// Frames the kernel dropped because the receive buffer was full (PACKET_STATISTICS
    /// `tp_drops`, accumulated at each [`PacketSocket::counters`] call).
    pub kernel_drops: u64,
}

/// A plain AF_PACKET socket without rings: `recvmmsg` into a batch of buffers, `send` per
/// frame or `sendmmsg` per batch. The benchmark's baseline, and a simple raw sender for tests.
#[derive(Debug)]
pub struct PacketSocket {
    fd: OwnedFd,
    ifindex: u32,
    snaplen: usize,
    bufs: Vec<u8>,
    lens: Vec<usize>,
    received: usize,
    iovecs: Vec<libc::iovec>,
    msgs: Vec<libc::mmsghdr>,
    counters: SocketCounters,
}

// SAFETY: the raw pointers in `iovecs`/`msgs` point into `bufs`/`iovecs`, owned by the same
// value and rebuilt before every use; nothing is shared between threads.
unsafe impl Send for PacketSocket {}

impl PacketSocket {
    /// Opens a socket on `ifname` (in the calling thread's network namespace).
    ///
    /// # Errors
    ///
    /// As [`PacketRing::open`].
    pub fn open(ifname: &str, config: &SocketConfig) -> Result<Self, AfPacketError> {
        if config.batch == 0 || config.snaplen == 0 {
            return Err(AfPacketError::Config(
                "batch and snaplen must be at least 1",
            ));
        }
        let ifindex = if_index(ifname)?;
        let fd = packet_socket()?;
        let b = fd.as_fd();
        let io_err = |op| {
            move |source| AfPacketError::Io {
                op,
                ifname: ifname.to_owned(),
                source,
            }
        };
        if config.ignore_outgoing {
            let one: libc::c_int = 1;
            setsockopt(b, libc::SOL_PACKET, libc::PACKET_IGNORE_OUTGOING, &one)
                .map_err(io_err("PACKET_IGNORE_OUTGOING (Linux 4.20+)"))?;
        }
        let rcvbuf = libc::c_int::try_from(config.recv_buffer).unwrap_or(libc::c_int::MAX);
        if setsockopt(b, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, &rcvbuf).is_err() {
            setsockopt(b, libc::SOL_SOCKET, libc::SO_RCVBUF, &rcvbuf)
                .map_err(io_err("SO_RCVBUF"))?;
        }
        bind_checked(b, ifindex, ifname, ETH_P_ALL_BE)?;
        if config.promiscuous {
            join_promiscuous(b, ifindex).map_err(io_err("PACKET_ADD_MEMBERSHIP promiscuous"))?;
        }
        // SAFETY: iovec and mmsghdr are plain old data; pointers are filled before each use.
        let (iov, msg) = unsafe { (zeroed::<libc::iovec>(), zeroed::<libc::mmsghdr>()) };
        Ok(Self {
            fd,
            ifindex,
            snaplen: config.snaplen,
            bufs: vec![0; config.batch * config.snaplen],
            lens: vec![0; config.batch],
            received: 0,
            iovecs: vec![iov; config.batch],
            msgs: vec![msg; config.batch],
            counters: SocketCounters::default(),
        })
    }

    /// The interface index the socket is bound to.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// Receives up to one batch of frames without blocking; returns how many arrived (0 when
    /// none is waiting). Read them with [`frames`](Self::frames) before the next call.
    ///
    /// # Errors
    ///
    /// The error of `recvmmsg(2)` other than "would block".
    pub fn recv_batch(&mut self) -> io::Result<usize> {
        self.received = 0;
        let batch = self.lens.len();
        let base = self.bufs.as_mut_ptr();
        for i in 0..batch {
            // SAFETY: `i * snaplen + snaplen <= bufs.len()`.
            self.iovecs[i].iov_base = unsafe { base.add(i * self.snaplen) }.cast();
            self.iovecs[i].iov_len = self.snaplen;
            self.aim_header(i);
        }
        // SAFETY: `msgs` holds `batch` headers, each pointing at one iovec of `snaplen` bytes in
        // `bufs`; all stay alive and unmoved during the call. MSG_TRUNC makes the kernel report
        // the full length of longer frames.
        let rc = unsafe {
            libc::recvmmsg(
                self.fd.as_raw_fd(),
                self.msgs.as_mut_ptr(),
                batch as libc::c_uint,
                libc::MSG_DONTWAIT | libc::MSG_TRUNC,
                std::ptr::null_mut(),
            )
        };
        if rc < 0 {
            let err = io::Error::last_os_error();
            return match err.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(0),
                _ => Err(err),
            };
        }
        let n = rc as usize;
        for i in 0..n {
            let full = self.msgs[i].msg_len as usize;
            if full > self.snaplen || self.msgs[i].msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                self.counters.rx_truncated += 1;
            }
            self.lens[i] = full.min(self.snaplen);
        }
        self.received = n;
        if n > 0 {
            self.counters.rx_batches += 1;
            self.counters.rx_frames += n as u64;
        }
        Ok(n)
    }

    /// The frames of the last [`recv_batch`](Self::recv_batch).
    pub fn frames(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.bufs
            .chunks_exact(self.snaplen)
            .zip(&self.lens)
            .take(self.received)
            .map(|(buf, &len)| &buf[..len])
    }

    /// Sends one frame (destination MAC first) out of the bound interface.
    ///
    /// # Errors
    ///
    /// The error of `send(2)` (`WouldBlock` when the device queue is full).
    pub fn send(&mut self, frame: &[u8]) -> io::Result<()> {
        // SAFETY: `frame` is valid for reads of its length for the duration of the call.
        let rc = unsafe {
            libc::send(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        self.counters.tx_frames += 1;
        Ok(())
    }

    /// Points message header `i` at iovec `i` alone: no address, no control data.
    fn aim_header(&mut self, i: usize) {
        let iov = &raw mut self.iovecs[i];
        let msg = &mut self.msgs[i];
        msg.msg_hdr.msg_name = std::ptr::null_mut();
        msg.msg_hdr.msg_namelen = 0;
        msg.msg_hdr.msg_iov = iov;
        msg.msg_hdr.msg_iovlen = 1;
        msg.msg_hdr.msg_control = std::ptr::null_mut();
        msg.msg_hdr.msg_controllen = 0;
        msg.msg_hdr.msg_flags = 0;
        msg.msg_len = 0;
    }

    /// Sends up to one batch ([`SocketConfig::batch`]) of `frames` with a single `sendmmsg`
    /// out of the bound interface; returns how many the kernel took (the first ones, in
    /// order). The kernel copies each frame into a linear socket buffer, as [`send`](Self::send)
    /// does, but the batch pays for one system call.
    ///
    /// # Errors
    ///
    /// The error of `sendmmsg(2)` when it took no frame (`WouldBlock` when the device queue is
    /// full).
    pub fn send_batch(&mut self, frames: &[&[u8]]) -> io::Result<usize> {
        let n = frames.len().min(self.msgs.len());
        if n == 0 {
            return Ok(0);
        }
        for (i, frame) in frames[..n].iter().enumerate() {
            self.iovecs[i].iov_base = frame.as_ptr().cast_mut().cast();
            self.iovecs[i].iov_len = frame.len();
            self.aim_header(i);
        }
        // SAFETY: the first `n` headers each point at one iovec that points at a frame of
        // `frames`, which the borrow keeps alive and unchanged during the call; the kernel only
        // reads the frames (the iovec's `*mut` is the C type, not a write).
        let rc = unsafe {
            libc::sendmmsg(
                self.fd.as_raw_fd(),
                self.msgs.as_mut_ptr(),
                n as libc::c_uint,
                libc::MSG_DONTWAIT,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        let sent = rc as usize;
        self.counters.tx_frames += sent as u64;
        Ok(sent)
    }

    /// Waits up to `timeout` for a frame to arrive. Returns whether one did.
    ///
    /// # Errors
    ///
    /// The error of `poll(2)`.
    pub fn wait_rx(&self, timeout: Duration) -> io::Result<bool> {
        poll_fd(self.fd.as_fd(), libc::POLLIN, timeout)
    }

    /// The counters, after adding the kernel's drop count (one `getsockopt`; call it at stats
    /// intervals, not per frame).
    ///
    /// # Errors
    ///
    /// The error of `getsockopt(2)`.
    pub fn counters(&mut self) -> io::Result<SocketCounters> {
        let st = packet_statistics(self.fd.as_fd())?;
        self.counters.kernel_drops += u64::from(st.tp_drops);
        Ok(self.counters)
    }
}

impl AsFd for PacketSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for PacketSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permission_error_says_how_to_grant_cap_net_raw() {
        let e = AfPacketError::PermissionDenied {
            exe: "/usr/bin/lanparty-gateway".into(),
        };
        let msg = e.to_string();
        assert!(msg.contains("run as root or grant CAP_NET_RAW"), "{msg}");
        assert!(
            msg.contains("setcap cap_net_raw+ep /usr/bin/lanparty-gateway"),
            "{msg}"
        );
    }

    #[test]
    fn default_ring_config_is_valid_and_retires_blocks_after_a_millisecond() {
        let c = RingConfig::default();
        assert!(c.validate().is_ok());
        assert_eq!(c.block_timeout_ms, 1);
        assert!(c.promiscuous && c.ignore_outgoing && c.qdisc_bypass);
    }

    #[test]
    fn ring_geometry_is_checked() {
        let bad = [
            RingConfig {
                rx_block_size: 5000,
                ..RingConfig::default()
            },
            RingConfig {
                rx_block_count: 0,
                ..RingConfig::default()
            },
            RingConfig {
                rx_frame_size: 100,
                ..RingConfig::default()
            },
            RingConfig {
                tx_frame_size: 3000,
                ..RingConfig::default()
            },
            RingConfig {
                tx_block_size: 100,
                ..RingConfig::default()
            },
        ];
        for c in bad {
            assert!(
                matches!(c.validate(), Err(AfPacketError::Config(_))),
                "{c:?}"
            );
        }
        let no_tx = RingConfig {
            tx_block_count: 0,
            tx_block_size: 0,
            ..RingConfig::default()
        };
        assert!(no_tx.validate().is_ok());
    }

    #[test]
    fn interface_names_are_bounded_for_ifreq() {
        assert!(ifreq_for("lp0123456789abc").is_ok());
        assert!(ifreq_for("lp0123456789abcd").is_err());
        assert!(ifreq_for("").is_err());
        assert!(ifreq_for("a\0b").is_err());
    }
}
