//! The Linux adapters: a TAP or TUN device driven by the shared [`Engine`].
//!
//! The device's fd is watched by the uplink's runner, so one `wait` sleeps on UDP, the device,
//! the waker and every timer at once (the io_uring backend reports edges; the engine reads
//! until the device is empty every turn).
//!
//! Addressing: the DHCP client is the emulator's for TAP and TUN alike (Linux has no other on
//! the device; see [`crate::run`] for how a TAP shares frames between it and the kernel); the
//! lease is applied with `SIOCSIFADDR`. No route is installed for the lease's router: the party
//! LAN must never take over this machine's default route. The kernel removes the device when
//! the engine (and with it the fd) is dropped.
//!
//! Offloads: the device is opened with `IFF_VNET_HDR` and `TUNSETOFFLOAD(CSUM | TSO4 | TSO6)`
//! (falling back to none, with a log line, when the kernel refuses), so the kernel hands a
//! local TCP sender's burst of up to 64 KB to one read. [`LinuxDevice`] keeps that
//! super-packet and gives the engine one segment per [`Device::read`], each cut to the room's
//! largest whole frame ([`Device::set_max_frame`]; on a TUN 14 bytes less, for the Ethernet
//! header the emulator adds), so every segment travels as one datagram. Writes go through a
//! [`Coalescer`]: in-order segments of one TCP flow that the room delivers within a turn
//! become one super-packet and one write, the rest is written as it comes, and
//! [`Device::flush`] writes what is held at the end of each batch. The pure work is in
//! [`lanparty_datapath::offload`]; [`LinuxDevice::offload_counters`] shows reads, segments,
//! writes and merges. `lanparty-client --no-offloads` opens the device without them (for
//! measurements and as an escape hatch).

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;

use lanparty_control::uplink::Uplink;
use lanparty_datapath::Mac;
use lanparty_datapath::io::Interest;
use lanparty_datapath::offload::{
    self, Coalescer, Link, OffloadError, Push, Segmenter, VNET_HDR_LEN, VnetHdr,
};
use lanparty_datapath::sys::tuntap::{self, TunKind, TunTap, TunTapConfig, TunTapError};

use crate::adapter::AdapterKind;
use crate::config::Addressing;
use crate::engine::{Device, Engine, EngineOptions};
use crate::run;

/// The token of the device fd in the runner's wait.
const DEVICE_TOKEN: u64 = 0x7a9;
/// The MTU of the device: the room carries 1500-byte IP packets, always.
pub const ADAPTER_MTU: u32 = 1500;

/// Creates the device for `kind` in the calling thread's network namespace and brings it up:
/// MTU 1500; on a TAP our MAC; on a TUN the EUI-64 link-local address of our MAC; TCP offloads
/// on (see [`open_adapter_with`]).
///
/// # Errors
///
/// [`TunTapError`] from creating or configuring the device (not root, name taken, ...).
pub fn open_adapter(kind: AdapterKind, name: &str, mac: Mac) -> Result<TunTap, TunTapError> {
    open_adapter_with(kind, name, mac, true)
}

/// [`open_adapter`], with TCP offloads (`IFF_VNET_HDR` + `TUNSETOFFLOAD`) on or off. When the
/// kernel refuses the vnet header altogether the device is opened without, with a log line.
///
/// # Errors
///
/// [`TunTapError`] from creating or configuring the device (not root, name taken, ...).
pub fn open_adapter_with(
    kind: AdapterKind,
    name: &str,
    mac: Mac,
    offloads: bool,
) -> Result<TunTap, TunTapError> {
    let mut config = match kind {
        AdapterKind::Tun => TunTapConfig::tun(name),
        _ => TunTapConfig::tap(name),
    };
    let dev = if offloads {
        config.vnet_hdr = Some(tuntap::offload::TCP);
        match TunTap::create(&config) {
            Err(TunTapError::Io { op, source, .. }) => {
                tracing::warn!(%op, error = %source, "no TUN/TAP offloads; one read per packet");
                config.vnet_hdr = None;
                TunTap::create(&config)?
            }
            other => other?,
        }
    } else {
        TunTap::create(&config)?
    };
    dev.set_mtu(ADAPTER_MTU)?;
    if kind == AdapterKind::Tap {
        dev.set_mac(mac)?;
    }
    dev.set_up()?;
    if kind == AdapterKind::Tun
        && let Err(e) = dev.add_ipv6(run::eui64_link_local(mac), 64)
    {
        tracing::warn!(error = %e, "no IPv6 link-local address on the adapter");
    }
    Ok(dev)
}

/// Counters of a [`LinuxDevice`]: system calls and what the offloads made of them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct OffloadCounters {
    /// `read(2)`s that returned a packet.
    pub reads: u64,
    /// Of those, TCP super-packets (GSO) that were cut into segments.
    pub super_reads: u64,
    /// Packets handed to the engine (segments and packets read whole).
    pub segments: u64,
    /// Packets read that could not be cut (dropped).
    pub dropped: u64,
    /// `write(2)`s made.
    pub writes: u64,
    /// Packets the engine wrote that were merged into another packet's write.
    pub merged: u64,
    /// Writes of coalesced packets that failed or found the device busy (their packets are
    /// lost).
    pub deferred_failures: u64,
    /// TCP segments from the room written alone because their checksum did not verify.
    pub bad_checksum: u64,
}

/// The state of the offload path: the super-packet being cut, the coalescer.
struct Offload {
    link: Link,
    /// `[VnetHdr][packet]` as read.
    rx: Vec<u8>,
    /// Bytes of `rx` the segmenter works on.
    rx_len: usize,
    seg: Option<Segmenter>,
    /// The longest segment to hand out (as read: no Ethernet header on a TUN).
    max_len: usize,
    co: Coalescer,
    warned: bool,
}

impl std::fmt::Debug for Offload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the 80 KB receive buffer.
        f.debug_struct("Offload")
            .field("link", &self.link)
            .field("seg", &self.seg)
            .field("max_len", &self.max_len)
            .field("co", &self.co)
            .finish_non_exhaustive()
    }
}

/// Room for the largest GSO packet the kernel hands a TUN/TAP (64 KB of IP by default) with
/// its link header and the vnet header; a read that fills it all was truncated.
const RX_BUF: usize = VNET_HDR_LEN + 80 * 1024;

/// A TAP or TUN device as the engine drives it, with or without offloads (see the module
/// documentation).
#[derive(Debug)]
pub struct LinuxDevice {
    dev: TunTap,
    offload: Option<Box<Offload>>,
    counters: OffloadCounters,
}

impl LinuxDevice {
    /// Drives `dev`; the offload path is on when the device was opened with a vnet header.
    pub fn new(dev: TunTap) -> Self {
        let link = match dev.kind() {
            TunKind::Tap => Link::Ethernet,
            TunKind::Tun => Link::Ip,
        };
        let offload = dev.has_vnet_hdr().then(|| {
            Box::new(Offload {
                link,
                rx: vec![0u8; RX_BUF],
                rx_len: 0,
                seg: None,
                max_len: usize::MAX,
                co: Coalescer::new(link),
                warned: false,
            })
        });
        Self {
            dev,
            offload,
            counters: OffloadCounters::default(),
        }
    }

    /// The device.
    pub fn tuntap(&self) -> &TunTap {
        &self.dev
    }

    /// Whether reads and writes go through the offload path.
    pub fn has_offloads(&self) -> bool {
        self.offload.is_some()
    }

    /// The counters.
    pub fn offload_counters(&self) -> OffloadCounters {
        let mut counters = self.counters;
        if let Some(off) = &self.offload {
            counters.bad_checksum = off.co.counters().bad_checksum;
        }
        counters
    }

    fn read_offloaded(
        dev: &TunTap,
        off: &mut Offload,
        counters: &mut OffloadCounters,
        buf: &mut [u8],
    ) -> io::Result<Option<usize>> {
        loop {
            if let Some(seg) = &mut off.seg {
                match seg.next_segment(&off.rx[VNET_HDR_LEN..off.rx_len], buf) {
                    Some(Ok(n)) => {
                        counters.segments += 1;
                        return Ok(Some(n));
                    }
                    Some(Err(e)) => {
                        counters.dropped += 1;
                        warn_once(&mut off.warned, &e);
                    }
                    None => {}
                }
                if seg.is_done() {
                    off.seg = None;
                }
                continue;
            }
            let Some(n) = dev.read(&mut off.rx)? else {
                return Ok(None);
            };
            counters.reads += 1;
            if n <= VNET_HDR_LEN || n == off.rx.len() {
                counters.dropped += 1;
                continue;
            }
            let planned = VnetHdr::parse(&off.rx).and_then(|hdr| {
                let seg =
                    Segmenter::new(&hdr, &mut off.rx[VNET_HDR_LEN..n], off.link, off.max_len)?;
                Ok((hdr, seg))
            });
            match planned {
                Ok((hdr, seg)) => {
                    if hdr.gso_type != offload::gso::NONE {
                        counters.super_reads += 1;
                    }
                    off.rx_len = n;
                    off.seg = Some(seg);
                }
                Err(e) => {
                    counters.dropped += 1;
                    warn_once(&mut off.warned, &e);
                }
            }
        }
    }

    /// Writes what the coalescer holds.
    fn write_held(
        dev: &TunTap,
        off: &mut Offload,
        counters: &mut OffloadCounters,
    ) -> io::Result<bool> {
        let Some(bytes) = off.co.take() else {
            return Ok(true);
        };
        counters.writes += 1;
        dev.write(bytes)
    }
}

fn warn_once(warned: &mut bool, e: &OffloadError) {
    if !*warned {
        *warned = true;
        tracing::warn!(error = %e, "dropped a packet the adapter's offloads could not cut (counted; said once)");
    }
}

impl Device for LinuxDevice {
    fn carries_ethernet(&self) -> bool {
        self.dev.kind() == TunKind::Tap
    }

    fn read(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        match &mut self.offload {
            Some(off) => Self::read_offloaded(&self.dev, off, &mut self.counters, buf),
            None => {
                let n = self.dev.read(buf)?;
                if n.is_some() {
                    self.counters.reads += 1;
                    self.counters.segments += 1;
                }
                Ok(n)
            }
        }
    }

    fn write(&mut self, data: &[u8]) -> io::Result<bool> {
        let Some(off) = &mut self.offload else {
            self.counters.writes += 1;
            return self.dev.write(data);
        };
        let mut push = off.co.push(data);
        if push == Push::Flush {
            if !matches!(
                Self::write_held(&self.dev, off, &mut self.counters),
                Ok(true)
            ) {
                self.counters.deferred_failures += 1;
            }
            push = off.co.push(data);
        }
        match push {
            Push::Merged => {
                self.counters.merged += 1;
                Ok(true)
            }
            Push::Held => Ok(true),
            // After a flush nothing is held, so `Flush` cannot come twice; write it anyway.
            Push::Pass | Push::Flush => {
                self.counters.writes += 1;
                self.dev.write_parts(&VnetHdr::EMPTY.to_bytes(), data)
            }
        }
    }

    fn flush(&mut self) -> io::Result<bool> {
        match &mut self.offload {
            Some(off) => Self::write_held(&self.dev, off, &mut self.counters),
            None => Ok(true),
        }
    }

    fn set_max_frame(&mut self, max_frame: usize) {
        if let Some(off) = &mut self.offload {
            let link_added = match off.link {
                // The emulator puts a 14-byte Ethernet header in front of every packet.
                Link::Ip => 14,
                Link::Ethernet => 0,
            };
            off.max_len = max_frame.saturating_sub(link_added);
        }
    }

    fn set_address(
        &mut self,
        addr: Ipv4Addr,
        prefix: u8,
        _router: Option<Ipv4Addr>,
    ) -> io::Result<()> {
        self.dev.set_ipv4(addr, prefix).map_err(io::Error::other)
    }

    fn clear_address(&mut self, _addr: Ipv4Addr) -> io::Result<()> {
        // SIOCSIFADDR with 0.0.0.0 removes the address; the netmask step that follows then
        // fails because nothing is left to mask, which is expected.
        let _ = self.dev.set_ipv4(Ipv4Addr::UNSPECIFIED, 0);
        Ok(())
    }
}

/// The client loop over a Linux device.
pub type ClientLoop = Engine<LinuxDevice>;

/// Builds the loop: the runner watches the device's fd, a static address goes on the device at
/// once, and the built-in DHCP client serves TAP and TUN alike.
///
/// # Errors
///
/// When the runner cannot watch the fd or the static address cannot be applied.
pub fn client_loop(
    mut uplink: Uplink,
    dev: TunTap,
    mut options: EngineOptions,
    on_status: Box<dyn FnMut(&str) + Send>,
) -> io::Result<ClientLoop> {
    uplink
        .runner()
        .io()
        .watch_fd(dev.as_raw_fd(), DEVICE_TOKEN, Interest::Readable)?;
    if let Addressing::Static { addr, prefix } = options.addressing {
        dev.set_ipv4(addr, prefix).map_err(io::Error::other)?;
    }
    options.dhcp_on_l2 = true;
    Ok(Engine::new(
        uplink,
        LinuxDevice::new(dev),
        options,
        on_status,
    ))
}
