//! Linux TUN and TAP devices.
//!
//! [`TunTap`] owns a non-persistent device: it exists while the value lives and the kernel
//! removes it when the file descriptor closes. TAP devices carry Ethernet frames (true L2, so IPX
//! works); TUN devices carry IP packets and leave Ethernet to the client's L2 emulation. Both are
//! opened with `IFF_NO_PI` (no packet-information prefix) and non-blocking, ready for a poll
//! loop. `IFF_VNET_HDR` with `TUNSETOFFLOAD` is available behind [`TunTapConfig::vnet_hdr`]; with
//! it every read and write carries a 10-byte `virtio_net_hdr` before the frame (see
//! [`crate::offload`] for what it means and for the segmentation and coalescing it asks of us).
//! A kernel that refuses some of the offload flags gets fewer (one log line says which);
//! [`TunTap::offload`] tells what it took.
//!
//! Configuration (MTU, link up, addresses, MAC) goes through ioctls on control sockets made when
//! the device is created. A device belongs to the network namespace of the thread that creates it
//! (see `netns::Netns::run_in`), and because the control sockets were created there too, every
//! later call may come from any thread.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use crate::Mac;

use super::afpacket::ifreq_for;

/// Offload flags for `TUNSETOFFLOAD` (`TUN_F_*`), for [`TunTapConfig::vnet_hdr`].
pub mod offload {
    /// The device may hand us frames with partial checksums.
    pub const CSUM: u32 = libc::TUN_F_CSUM;
    /// TCPv4 segmentation offload (needs [`CSUM`]).
    pub const TSO4: u32 = libc::TUN_F_TSO4;
    /// TCPv6 segmentation offload (needs [`CSUM`]).
    pub const TSO6: u32 = libc::TUN_F_TSO6;
    /// Checksums and TCP segmentation: what the client asks for. UDP segmentation
    /// (`TUN_F_USO4/6`) is left off: games send small datagrams, and the kernel segments the
    /// rare UDP GSO burst itself.
    pub const TCP: u32 = CSUM | TSO4 | TSO6;
}

/// Size of `struct virtio_net_hdr`, prefixed to frames when `IFF_VNET_HDR` is on.
pub const VNET_HDR_LEN: usize = crate::offload::VNET_HDR_LEN;

/// Which kind of device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TunKind {
    /// Layer 3: IP packets.
    Tun,
    /// Layer 2: Ethernet frames.
    Tap,
}

/// How to create a [`TunTap`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunTapConfig {
    /// TUN or TAP.
    pub kind: TunKind,
    /// Interface name (at most 15 bytes; may contain `%d` for the kernel to number it). `None`
    /// lets the kernel pick `tunN`/`tapN`.
    pub name: Option<String>,
    /// `Some(flags)` turns on `IFF_VNET_HDR` and calls `TUNSETOFFLOAD` with `flags` (see
    /// [`offload`]); reads and writes then carry a [`VNET_HDR_LEN`]-byte header.
    pub vnet_hdr: Option<u32>,
}

impl TunTapConfig {
    /// A TAP device named `name`, without vnet header.
    pub fn tap(name: &str) -> Self {
        Self {
            kind: TunKind::Tap,
            name: Some(name.to_owned()),
            vnet_hdr: None,
        }
    }

    /// A TUN device named `name`, without vnet header.
    pub fn tun(name: &str) -> Self {
        Self {
            kind: TunKind::Tun,
            name: Some(name.to_owned()),
            vnet_hdr: None,
        }
    }
}

/// Errors from creating or configuring a TUN/TAP device.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TunTapError {
    /// The process lacks CAP_NET_ADMIN.
    #[error(
        "creating a TUN/TAP device needs CAP_NET_ADMIN: run as root or grant it: \
         setcap cap_net_admin+ep {exe}"
    )]
    PermissionDenied {
        /// The running binary, for the `setcap` command line.
        exe: String,
    },
    /// `/dev/net/tun` is missing.
    #[error("/dev/net/tun is missing: load the tun module (`modprobe tun`)")]
    NoTunDevice,
    /// The name is unusable.
    #[error("invalid interface name {0:?}: at most 15 bytes, no NUL")]
    InvalidName(String),
    /// The name belongs to another device or a TUN/TAP in use.
    #[error("interface name {0} is taken by another device")]
    NameTaken(String),
    /// The operation needs a TAP device.
    #[error("{0} is a TUN device: only TAP devices have a MAC address")]
    NotTap(String),
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

/// An owned, non-persistent TUN or TAP device; the kernel removes it when this is dropped.
#[derive(Debug)]
pub struct TunTap {
    fd: OwnedFd,
    ctl4: OwnedFd,
    ctl6: Option<OwnedFd>,
    name: String,
    kind: TunKind,
    vnet_hdr: bool,
    offload: u32,
}

fn exe_name() -> String {
    std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "<binary>".to_owned())
}

fn dgram_socket(family: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the result is checked before being owned.
    let fd = unsafe { libc::socket(family, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Runs an interface ioctl on `fd` with `req`.
fn if_ioctl(fd: BorrowedFd<'_>, request: libc::c_ulong, req: &mut libc::ifreq) -> io::Result<()> {
    // SAFETY: `req` is a valid ifreq for the duration of the call; every request used here reads
    // or writes only the ifreq itself.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), request as _, req as *mut libc::ifreq) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn sockaddr_in(addr: Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(addr.octets()),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr have the same size; the ioctls read it as sockaddr_in.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

impl TunTap {
    /// Creates the device in the calling thread's network namespace. It starts down, with no
    /// address.
    ///
    /// # Errors
    ///
    /// [`TunTapError::PermissionDenied`] without CAP_NET_ADMIN, [`TunTapError::NoTunDevice`],
    /// [`TunTapError::InvalidName`], [`TunTapError::NameTaken`], [`TunTapError::Io`].
    pub fn create(config: &TunTapConfig) -> Result<Self, TunTapError> {
        let asked = config.name.clone().unwrap_or_default();
        let mut req = if asked.is_empty() {
            // SAFETY: ifreq is plain old data; all-zero is valid (empty name: kernel picks).
            unsafe { zeroed::<libc::ifreq>() }
        } else {
            ifreq_for(&asked).map_err(|_| TunTapError::InvalidName(asked.clone()))?
        };
        // SAFETY: the path is a NUL-terminated literal.
        let raw = unsafe {
            libc::open(
                c"/dev/net/tun".as_ptr(),
                libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
            )
        };
        if raw < 0 {
            let err = io::Error::last_os_error();
            return Err(match err.raw_os_error() {
                Some(libc::ENOENT | libc::ENODEV | libc::ENXIO) => TunTapError::NoTunDevice,
                Some(libc::EPERM | libc::EACCES) => {
                    TunTapError::PermissionDenied { exe: exe_name() }
                }
                _ => TunTapError::Io {
                    op: "open /dev/net/tun",
                    ifname: asked,
                    source: err,
                },
            });
        }
        // SAFETY: a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let mut flags = libc::IFF_NO_PI;
        flags |= match config.kind {
            TunKind::Tun => libc::IFF_TUN,
            TunKind::Tap => libc::IFF_TAP,
        };
        if config.vnet_hdr.is_some() {
            flags |= libc::IFF_VNET_HDR;
        }
        req.ifr_ifru.ifru_flags = flags as libc::c_short;
        if let Err(err) = if_ioctl(fd.as_fd(), libc::TUNSETIFF as libc::c_ulong, &mut req) {
            return Err(match err.raw_os_error() {
                Some(libc::EPERM | libc::EACCES) => {
                    TunTapError::PermissionDenied { exe: exe_name() }
                }
                Some(libc::EBUSY | libc::EINVAL | libc::EEXIST) if !asked.is_empty() => {
                    TunTapError::NameTaken(asked)
                }
                _ => TunTapError::Io {
                    op: "TUNSETIFF",
                    ifname: asked,
                    source: err,
                },
            });
        }
        // SAFETY: the kernel wrote the NUL-terminated device name into ifr_name.
        let name = unsafe { std::ffi::CStr::from_ptr(req.ifr_name.as_ptr()) }
            .to_string_lossy()
            .into_owned();
        let io_err = |op| {
            let ifname = name.clone();
            move |source| TunTapError::Io { op, ifname, source }
        };
        let mut offload = 0;
        if let Some(wanted) = config.vnet_hdr {
            #[cfg(target_endian = "big")]
            set_vnet_le(&fd).map_err(io_err("TUNSETVNETLE"))?;
            offload = set_offload(&fd, wanted).map_err(io_err("TUNSETOFFLOAD"))?;
            if offload != wanted {
                tracing::info!(
                    ifname = %name,
                    wanted = format_args!("{wanted:#x}"),
                    got = format_args!("{offload:#x}"),
                    "the kernel refused some TUN/TAP offloads; using fewer"
                );
            }
        }
        let ctl4 = dgram_socket(libc::AF_INET).map_err(io_err("socket(AF_INET)"))?;
        // IPv6 may be disabled on this host; only add_ipv6 needs it.
        let ctl6 = dgram_socket(libc::AF_INET6).ok();
        Ok(Self {
            fd,
            ctl4,
            ctl6,
            name,
            kind: config.kind,
            vnet_hdr: config.vnet_hdr.is_some(),
            offload,
        })
    }

    /// The interface name the kernel gave the device.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// TUN or TAP.
    pub fn kind(&self) -> TunKind {
        self.kind
    }

    /// Whether reads and writes carry a [`VNET_HDR_LEN`]-byte virtio-net header.
    pub fn has_vnet_hdr(&self) -> bool {
        self.vnet_hdr
    }

    /// The `TUN_F_*` flags the kernel accepted (0 without vnet header).
    pub fn offload(&self) -> u32 {
        self.offload
    }

    fn req(&self) -> libc::ifreq {
        // The name came from the kernel, so it always fits.
        ifreq_for(&self.name).unwrap_or_else(|_| {
            // SAFETY: plain old data.
            unsafe { zeroed() }
        })
    }

    fn io_err(&self, op: &'static str) -> impl FnOnce(io::Error) -> TunTapError + '_ {
        move |source| TunTapError::Io {
            op,
            ifname: self.name.clone(),
            source,
        }
    }

    /// The interface index.
    ///
    /// # Errors
    ///
    /// [`TunTapError::Io`].
    pub fn ifindex(&self) -> Result<u32, TunTapError> {
        let mut req = self.req();
        if_ioctl(self.ctl4.as_fd(), libc::SIOCGIFINDEX, &mut req)
            .map_err(self.io_err("SIOCGIFINDEX"))?;
        // SAFETY: SIOCGIFINDEX filled the index member.
        Ok(unsafe { req.ifr_ifru.ifru_ifindex } as u32)
    }

    /// Sets the MTU (`SIOCSIFMTU`).
    ///
    /// # Errors
    ///
    /// [`TunTapError::Io`] (for example `EINVAL` for an MTU out of range).
    pub fn set_mtu(&self, mtu: u32) -> Result<(), TunTapError> {
        let mut req = self.req();
        req.ifr_ifru.ifru_mtu = mtu.try_into().unwrap_or(libc::c_int::MAX);
        if_ioctl(self.ctl4.as_fd(), libc::SIOCSIFMTU, &mut req).map_err(self.io_err("SIOCSIFMTU"))
    }

    /// The current MTU (`SIOCGIFMTU`).
    ///
    /// # Errors
    ///
    /// [`TunTapError::Io`].
    pub fn mtu(&self) -> Result<u32, TunTapError> {
        let mut req = self.req();
        if_ioctl(self.ctl4.as_fd(), libc::SIOCGIFMTU, &mut req)
            .map_err(self.io_err("SIOCGIFMTU"))?;
        // SAFETY: SIOCGIFMTU filled the mtu member.
        Ok(unsafe { req.ifr_ifru.ifru_mtu } as u32)
    }

    fn update_flags(&self, set: libc::c_int, clear: libc::c_int) -> Result<(), TunTapError> {
        let mut req = self.req();
        if_ioctl(self.ctl4.as_fd(), libc::SIOCGIFFLAGS, &mut req)
            .map_err(self.io_err("SIOCGIFFLAGS"))?;
        // SAFETY: SIOCGIFFLAGS filled the flags member.
        let flags = unsafe { req.ifr_ifru.ifru_flags };
        req.ifr_ifru.ifru_flags = (flags | set as libc::c_short) & !(clear as libc::c_short);
        if_ioctl(self.ctl4.as_fd(), libc::SIOCSIFFLAGS, &mut req)
            .map_err(self.io_err("SIOCSIFFLAGS"))
    }

    /// Brings the link up.
    ///
    /// # Errors
    ///
    /// [`TunTapError::Io`].
    pub fn set_up(&self) -> Result<(), TunTapError> {
        self.update_flags(libc::IFF_UP, 0)
    }

    /// Takes the link down.
    ///
    /// # Errors
    ///
    /// [`TunTapError::Io`].
    pub fn set_down(&self) -> Result<(), TunTapError> {
        self.update_flags(0, libc::IFF_UP)
    }

    /// Sets the TAP device's MAC address (`SIOCSIFHWADDR`).
    ///
    /// # Errors
    ///
    /// [`TunTapError::NotTap`] for a TUN device, [`TunTapError::Io`].
    pub fn set_mac(&self, mac: Mac) -> Result<(), TunTapError> {
        if self.kind != TunKind::Tap {
            return Err(TunTapError::NotTap(self.name.clone()));
        }
        let mut req = self.req();
        // SAFETY: sockaddr is plain old data.
        let mut sa: libc::sockaddr = unsafe { zeroed() };
        sa.sa_family = libc::ARPHRD_ETHER;
        for (dst, src) in sa.sa_data.iter_mut().zip(mac.octets()) {
            *dst = src as libc::c_char;
        }
        req.ifr_ifru.ifru_hwaddr = sa;
        if_ioctl(self.ctl4.as_fd(), libc::SIOCSIFHWADDR, &mut req)
            .map_err(self.io_err("SIOCSIFHWADDR"))
    }

    /// The TAP device's MAC address (`SIOCGIFHWADDR`).
    ///
    /// # Errors
    ///
    /// [`TunTapError::NotTap`] for a TUN device, [`TunTapError::Io`].
    pub fn mac(&self) -> Result<Mac, TunTapError> {
        if self.kind != TunKind::Tap {
            return Err(TunTapError::NotTap(self.name.clone()));
        }
        let mut req = self.req();
        if_ioctl(self.ctl4.as_fd(), libc::SIOCGIFHWADDR, &mut req)
            .map_err(self.io_err("SIOCGIFHWADDR"))?;
        // SAFETY: SIOCGIFHWADDR filled the hwaddr member.
        let sa = unsafe { req.ifr_ifru.ifru_hwaddr };
        let mut mac = [0u8; 6];
        for (dst, src) in mac.iter_mut().zip(sa.sa_data) {
            *dst = src as u8;
        }
        Ok(Mac(mac))
    }

    /// Sets the IPv4 address and prefix (`SIOCSIFADDR` + `SIOCSIFNETMASK`). Like `ifconfig`,
    /// this replaces the interface's primary IPv4 address rather than adding another.
    ///
    /// # Errors
    ///
    /// `Io` with `InvalidInput` for a prefix above 32, [`TunTapError::Io`] from the ioctls.
    pub fn set_ipv4(&self, addr: Ipv4Addr, prefix: u8) -> Result<(), TunTapError> {
        if prefix > 32 {
            return Err(self.io_err("SIOCSIFNETMASK")(io::Error::new(
                io::ErrorKind::InvalidInput,
                "IPv4 prefix longer than 32",
            )));
        }
        let mut req = self.req();
        req.ifr_ifru.ifru_addr = sockaddr_in(addr);
        if_ioctl(self.ctl4.as_fd(), libc::SIOCSIFADDR, &mut req)
            .map_err(self.io_err("SIOCSIFADDR"))?;
        let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
        let mut req = self.req();
        req.ifr_ifru.ifru_netmask = sockaddr_in(Ipv4Addr::from(mask));
        if_ioctl(self.ctl4.as_fd(), libc::SIOCSIFNETMASK, &mut req)
            .map_err(self.io_err("SIOCSIFNETMASK"))
    }

    /// Adds an IPv6 address (`SIOCSIFADDR` with an `in6_ifreq` on an AF_INET6 socket). On TAP
    /// devices the address is tentative until duplicate address detection finishes (about a
    /// second); TUN devices skip DAD.
    ///
    /// # Errors
    ///
    /// `Io` with `Unsupported` when IPv6 is unavailable, `InvalidInput` for a prefix above 128,
    /// [`TunTapError::Io`] from the ioctl.
    pub fn add_ipv6(&self, addr: Ipv6Addr, prefix: u8) -> Result<(), TunTapError> {
        let Some(ctl6) = &self.ctl6 else {
            return Err(self.io_err("socket(AF_INET6)")(io::Error::new(
                io::ErrorKind::Unsupported,
                "IPv6 is not available on this host",
            )));
        };
        if prefix > 128 {
            return Err(self.io_err("SIOCSIFADDR (IPv6)")(io::Error::new(
                io::ErrorKind::InvalidInput,
                "IPv6 prefix longer than 128",
            )));
        }
        let mut req = libc::in6_ifreq {
            ifr6_addr: libc::in6_addr {
                s6_addr: addr.octets(),
            },
            ifr6_prefixlen: u32::from(prefix),
            ifr6_ifindex: self.ifindex()? as libc::c_int,
        };
        // SAFETY: `req` is a valid in6_ifreq for the duration of the call.
        let rc = unsafe {
            libc::ioctl(
                ctl6.as_raw_fd(),
                libc::SIOCSIFADDR as _,
                &mut req as *mut libc::in6_ifreq,
            )
        };
        if rc < 0 {
            return Err(self.io_err("SIOCSIFADDR (IPv6)")(io::Error::last_os_error()));
        }
        Ok(())
    }

    /// Reads one frame (TAP) or packet (TUN) into `buf` without blocking. Returns `None` when
    /// nothing is waiting. A frame longer than `buf` is truncated to it.
    ///
    /// # Errors
    ///
    /// The error of `read(2)` other than "would block".
    pub fn read(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        // SAFETY: `buf` is valid for writes of its length.
        let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            let err = io::Error::last_os_error();
            return match err.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(None),
                _ => Err(err),
            };
        }
        Ok(Some(n as usize))
    }

    /// Writes one frame (TAP) or packet (TUN) to the kernel without blocking. Returns `false`
    /// when the device cannot take it now.
    ///
    /// # Errors
    ///
    /// The error of `write(2)` other than "would block" (`EINVAL` for a malformed packet, `EIO`
    /// while the link is down).
    pub fn write(&self, frame: &[u8]) -> io::Result<bool> {
        // SAFETY: `frame` is valid for reads of its length.
        let n = unsafe { libc::write(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len()) };
        write_outcome(n)
    }

    /// Writes one frame made of `head` followed by `body` (a virtio-net header and a frame)
    /// with one `writev(2)`, without blocking. Returns `false` when the device cannot take it
    /// now.
    ///
    /// # Errors
    ///
    /// As [`Self::write`].
    pub fn write_parts(&self, head: &[u8], body: &[u8]) -> io::Result<bool> {
        let iov = [
            libc::iovec {
                iov_base: head.as_ptr().cast_mut().cast(),
                iov_len: head.len(),
            },
            libc::iovec {
                iov_base: body.as_ptr().cast_mut().cast(),
                iov_len: body.len(),
            },
        ];
        // SAFETY: both iovecs point at live slices of their lengths; writev only reads them.
        let n = unsafe { libc::writev(self.fd.as_raw_fd(), iov.as_ptr(), 2) };
        write_outcome(n)
    }

    /// Waits up to `timeout` for a frame to become readable. Returns whether one did.
    ///
    /// # Errors
    ///
    /// The error of `poll(2)`.
    pub fn wait_readable(&self, timeout: Duration) -> io::Result<bool> {
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: one valid pollfd.
        let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
        if rc < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                return Ok(false);
            }
            return Err(err);
        }
        Ok(rc > 0)
    }
}

/// Calls `TUNSETOFFLOAD` with `wanted`, then, while the kernel says `EINVAL`, with fewer flags:
/// the TCP set, checksums alone, none. Returns the flags it took.
fn set_offload(fd: &OwnedFd, wanted: u32) -> io::Result<u32> {
    let mut last = None;
    for flags in [wanted, wanted & offload::TCP, wanted & offload::CSUM, 0] {
        if last == Some(flags) {
            continue;
        }
        last = Some(flags);
        // SAFETY: TUNSETOFFLOAD takes the flags by value.
        let rc = unsafe {
            libc::ioctl(
                fd.as_raw_fd(),
                libc::TUNSETOFFLOAD as _,
                libc::c_ulong::from(flags),
            )
        };
        if rc == 0 {
            return Ok(flags);
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EINVAL) {
            return Err(err);
        }
    }
    Err(io::Error::from_raw_os_error(libc::EINVAL))
}

/// Makes the kernel read and write the virtio-net header little-endian, as
/// [`crate::offload`] does (the default on little-endian hosts).
#[cfg(target_endian = "big")]
fn set_vnet_le(fd: &OwnedFd) -> io::Result<()> {
    let le: libc::c_int = 1;
    // SAFETY: TUNSETVNETLE reads one int through the pointer, which is live for the call.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETVNETLE as _, &le) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl AsFd for TunTap {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for TunTap {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

// `ifreq_for` is shared with the AF_PACKET code; make sure the types it builds are what the
// tun ioctls expect.
const _: () = assert!(size_of::<libc::ifreq>() == 40);

/// What a non-blocking `write`/`writev` that returned `n` means: `Ok(false)` when the device
/// cannot take the frame now.
fn write_outcome(n: isize) -> io::Result<bool> {
    if n >= 0 {
        return Ok(true);
    }
    let err = io::Error::last_os_error();
    match err.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(false),
        _ => Err(err),
    }
}
