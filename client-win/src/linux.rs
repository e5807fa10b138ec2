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

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;

use lanparty_control::uplink::Uplink;
use lanparty_datapath::Mac;
use lanparty_datapath::io::Interest;
use lanparty_datapath::sys::tuntap::{TunKind, TunTap, TunTapConfig, TunTapError};

use crate::adapter::AdapterKind;
use crate::config::Addressing;
use crate::engine::{Device, Engine, EngineOptions};
use crate::run;

/// The token of the device fd in the runner's wait.
const DEVICE_TOKEN: u64 = 0x7a9;
/// The MTU of the device: the room carries 1500-byte IP packets, always.
pub const ADAPTER_MTU: u32 = 1500;

/// Creates the device for `kind` in the calling thread's network namespace and brings it up:
/// MTU 1500; on a TAP our MAC; on a TUN the EUI-64 link-local address of our MAC.
///
/// # Errors
///
/// [`TunTapError`] from creating or configuring the device (not root, name taken, ...).
pub fn open_adapter(kind: AdapterKind, name: &str, mac: Mac) -> Result<TunTap, TunTapError> {
    let config = match kind {
        AdapterKind::Tun => TunTapConfig::tun(name),
        _ => TunTapConfig::tap(name),
    };
    let dev = TunTap::create(&config)?;
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

/// A TAP or TUN device as the engine drives it.
#[derive(Debug)]
pub struct LinuxDevice {
    dev: TunTap,
}

impl LinuxDevice {
    /// The device.
    pub fn tuntap(&self) -> &TunTap {
        &self.dev
    }
}

impl Device for LinuxDevice {
    fn carries_ethernet(&self) -> bool {
        self.dev.kind() == TunKind::Tap
    }

    fn read(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        self.dev.read(buf)
    }

    fn write(&mut self, data: &[u8]) -> io::Result<bool> {
        self.dev.write(data)
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
    Ok(Engine::new(uplink, LinuxDevice { dev }, options, on_status))
}
