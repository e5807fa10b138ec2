//! The Linux client loop: one datapath thread that carries frames between a TAP or TUN device
//! and the room.
//!
//! [`ClientLoop`] owns the [`Uplink`] (QUIC to the relay), the device, and an [`Emulator`]
//! when one is needed. The device's fd is watched by the uplink's runner, so one `wait` sleeps
//! on UDP, the device, the waker and every timer at once. Each turn:
//!
//! ```text
//! uplink.receive(now)                 UDP -> QUIC -> control stream, session timers
//! uplink events                       joined: create the emulator (first time only)
//! uplink frames  -> device            TAP: as they are (DHCP replies to the DHCP client)
//!                -> emulator          TUN: ARP/ND answered, IP packets to the device
//! emulator timers                     ARP/NS retries, DHCP
//! device (drained until empty)        TAP: frames straight to the uplink (MSS clamped there)
//!                -> emulator          TUN: packets get Ethernet headers, ARP resolution
//! emulator output                     frames to the uplink, packets to the device,
//!                                     address changes applied to the device
//! uplink.transmit(now); uplink.wait(emulator deadline)
//! ```
//!
//! Addressing: the DHCP client is the emulator's in both modes (see [`crate::run`] for how a
//! TAP shares frames between it and the kernel); the lease is applied with `SIOCSIFADDR`. No
//! route is installed for the lease's router: the party LAN must never take over this
//! machine's default route. The device and its address stay up while the uplink reconnects, so
//! games keep their sockets; the emulator is made at the first welcome (its first DISCOVER
//! would be lost before) and lives as long as the loop.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use lanparty_control::uplink::{Uplink, UplinkEvent};
use lanparty_datapath::Mac;
use lanparty_datapath::io::{Interest, Waker};
use lanparty_datapath::sys::tuntap::{TunTap, TunTapConfig, TunTapError};

use crate::adapter::AdapterKind;
use crate::config::Addressing;
use crate::l2emu::{self, Emulator};
use crate::run::{self, L2Route};
use crate::status::{AddressStatus, StatusLine};

/// The token of the device fd in the runner's wait.
const DEVICE_TOKEN: u64 = 0x7a9;
/// The MTU of the device: the room carries 1500-byte IP packets, always.
pub const ADAPTER_MTU: u32 = 1500;
/// Reads from the device per turn before the loop transmits and looks at the uplink again.
const READS_PER_TURN: usize = 256;
/// How long a stopping loop waits for its goodbye to leave.
const GOODBYE_GRACE: Duration = Duration::from_millis(150);

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

/// What the loop needs besides the uplink and the device.
#[derive(Debug, Clone)]
pub struct LoopOptions {
    /// TAP or TUN (must match the device).
    pub adapter: AdapterKind,
    /// DHCP or static.
    pub addressing: Addressing,
    /// Our MAC (the one in the hello and on the TAP).
    pub mac: Mac,
    /// Host name for DHCP option 12.
    pub hostname: Option<String>,
    /// Seed for the emulator's DHCP transaction ids and jitter.
    pub seed: u64,
}

/// Why [`ClientLoop::run`] returned.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Exit {
    /// Stopped through a [`Stopper`]; the relay got a goodbye.
    Stopped,
    /// The session ended for good (a fatal rejection); the last status line says why.
    Finished(String),
}

/// Counters of the loop, beyond the uplink's and the emulator's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LoopCounters {
    /// Frames (TAP) or packets (TUN) read from the device.
    pub from_adapter: u64,
    /// Frames or packets written to the device.
    pub to_adapter: u64,
    /// Writes the device refused for now (queue full).
    pub adapter_busy: u64,
    /// Writes that failed (link down, malformed packet).
    pub adapter_errors: u64,
    /// Packets from a TUN dropped before the first welcome (no emulator yet).
    pub dropped_before_join: u64,
    /// Address changes that could not be applied to the device.
    pub address_errors: u64,
}

/// Stops a running [`ClientLoop`] from another thread (a signal handler thread, a test).
#[derive(Debug, Clone)]
pub struct Stopper {
    flag: Arc<AtomicBool>,
    waker: Waker,
}

impl Stopper {
    /// Asks the loop to say goodbye, remove the device and return [`Exit::Stopped`].
    pub fn stop(&self) {
        self.flag.store(true, Ordering::Release);
        self.waker.wake();
    }
}

/// The client's datapath loop on Linux. See the [module documentation](self).
pub struct ClientLoop {
    // Field order matters: the uplink's runner watches the device fd, so it drops first.
    uplink: Uplink,
    dev: TunTap,
    options: LoopOptions,
    emu: Option<Emulator>,
    status: StatusLine,
    on_status: Box<dyn FnMut(&str) + Send>,
    stop: Arc<AtomicBool>,
    buf: Vec<u8>,
    more_to_read: bool,
    counters: LoopCounters,
}

impl std::fmt::Debug for ClientLoop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientLoop")
            .field("device", &self.dev.name())
            .field("options", &self.options)
            .field("status", &self.status.render())
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

impl ClientLoop {
    /// Ties the uplink and the device together. A static address is applied to the device at
    /// once. `on_status` receives every new status line.
    ///
    /// # Errors
    ///
    /// When the runner cannot watch the device fd, or a static address cannot be applied.
    pub fn new(
        mut uplink: Uplink,
        dev: TunTap,
        options: LoopOptions,
        on_status: Box<dyn FnMut(&str) + Send>,
    ) -> io::Result<Self> {
        uplink
            .runner()
            .io()
            .watch_fd(dev.as_raw_fd(), DEVICE_TOKEN, Interest::Readable)?;
        let address = match options.addressing {
            Addressing::Dhcp => AddressStatus::WaitingForDhcp,
            Addressing::Static { addr, prefix } => {
                dev.set_ipv4(addr, prefix).map_err(io::Error::other)?;
                AddressStatus::Static { addr, prefix }
            }
        };
        Ok(Self {
            uplink,
            dev,
            options,
            emu: None,
            status: StatusLine::new(address),
            on_status,
            stop: Arc::new(AtomicBool::new(false)),
            buf: vec![0u8; 64 * 1024],
            more_to_read: false,
            counters: LoopCounters::default(),
        })
    }

    /// A handle that stops [`Self::run`] from another thread.
    pub fn stopper(&self) -> Stopper {
        Stopper {
            flag: Arc::clone(&self.stop),
            waker: self.uplink.runner_ref().waker(),
        }
    }

    /// The device.
    pub fn device(&self) -> &TunTap {
        &self.dev
    }

    /// The uplink.
    pub fn uplink(&self) -> &Uplink {
        &self.uplink
    }

    /// The emulator, once made.
    pub fn emulator(&self) -> Option<&Emulator> {
        self.emu.as_ref()
    }

    /// The loop's counters.
    pub fn counters(&self) -> LoopCounters {
        self.counters
    }

    /// The current status line.
    pub fn status(&self) -> String {
        self.status.render()
    }

    /// The address state.
    pub fn address(&self) -> AddressStatus {
        self.status.address()
    }

    /// Runs turns until stopped or the session ends for good.
    ///
    /// # Errors
    ///
    /// When the UDP backend fails (not for lost connections, which reconnect).
    pub fn run(&mut self) -> io::Result<Exit> {
        loop {
            if self.stop.load(Ordering::Acquire) {
                self.say_goodbye();
                return Ok(Exit::Stopped);
            }
            self.turn()?;
            if self.uplink.is_finished() {
                return Ok(Exit::Finished(self.status.render()));
            }
        }
    }

    /// One turn of the loop (see the module documentation); sleeps at its end until something
    /// happens.
    ///
    /// # Errors
    ///
    /// When the UDP backend fails.
    pub fn turn(&mut self) -> io::Result<()> {
        let now = Instant::now();
        self.uplink.receive(now);
        while let Some(event) = self.uplink.poll_event() {
            if let UplinkEvent::Joined(_) = event {
                self.on_joined(now);
            }
        }
        while let Some(frame) = self.uplink.poll_frame() {
            self.on_room_frame(now, &frame);
        }
        if let Some(emu) = &mut self.emu
            && emu.poll_timeout().is_some_and(|t| t <= now)
        {
            emu.handle_timeout(now);
        }
        self.drain_emulator();
        self.drain_adapter(now);
        self.drain_emulator();
        self.report_status();
        self.uplink.transmit(now)?;
        let deadline = if self.more_to_read {
            Some(now)
        } else {
            self.emu.as_ref().and_then(Emulator::poll_timeout)
        };
        self.uplink.wait(deadline)?;
        Ok(())
    }

    /// Says goodbye to the relay and gives the goodbye a moment to leave. The device goes when
    /// the loop is dropped.
    pub fn say_goodbye(&mut self) {
        let now = Instant::now();
        self.uplink.close(now, "client exiting");
        let until = now + GOODBYE_GRACE;
        loop {
            let now = Instant::now();
            self.uplink.receive(now);
            if self.uplink.transmit(now).is_err() || now >= until {
                break;
            }
            if self.uplink.wait(Some(until)).is_err() {
                break;
            }
        }
        self.status.set_session("disconnected", false);
        self.report_status();
    }

    fn on_joined(&mut self, now: Instant) {
        let needed =
            !self.options.adapter.carries_ethernet() || self.options.addressing == Addressing::Dhcp;
        if self.emu.is_none() && needed {
            let config = run::emulator_config(
                self.options.mac,
                self.options.addressing,
                self.options.hostname.clone(),
                self.options.seed,
            );
            self.emu = Some(Emulator::new(now, config));
        }
    }

    fn on_room_frame(&mut self, now: Instant, frame: &[u8]) {
        if !self.options.adapter.carries_ethernet() {
            if let Some(emu) = &mut self.emu {
                emu.handle_frame(now, frame);
            }
            return;
        }
        let route = match &self.emu {
            Some(_) => run::l2_route(frame),
            None => L2Route::Adapter,
        };
        if let (L2Route::DhcpClient | L2Route::Both, Some(emu)) = (route, &mut self.emu) {
            emu.handle_frame(now, frame);
        }
        if route != L2Route::DhcpClient {
            self.write_adapter(frame);
        }
    }

    fn write_adapter(&mut self, data: &[u8]) {
        match self.dev.write(data) {
            Ok(true) => self.counters.to_adapter += 1,
            Ok(false) => self.counters.adapter_busy += 1,
            Err(_) => self.counters.adapter_errors += 1,
        }
    }

    fn drain_adapter(&mut self, now: Instant) {
        self.more_to_read = false;
        for _ in 0..READS_PER_TURN {
            let n = match self.dev.read(&mut self.buf) {
                Ok(Some(n)) => n,
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "reading the adapter failed");
                    self.counters.adapter_errors += 1;
                    return;
                }
            };
            self.counters.from_adapter += 1;
            if !self.options.adapter.carries_ethernet() {
                match &mut self.emu {
                    Some(emu) => {
                        run::learn_ipv6_source(emu, &self.buf[..n]);
                        emu.handle_packet(now, &self.buf[..n]);
                    }
                    None => self.counters.dropped_before_join += 1,
                }
                self.drain_emulator();
            } else {
                // Drops (not joined, oversize) are counted by the uplink.
                self.uplink.send_frame(&mut self.buf[..n]);
            }
        }
        // Stopped early: the io_uring backend reports edges, so come back without sleeping.
        self.more_to_read = true;
    }

    fn drain_emulator(&mut self) {
        let Some(emu) = &mut self.emu else { return };
        while let Some(mut frame) = emu.poll_frame() {
            self.uplink.send_frame(&mut frame);
            emu.recycle(frame);
        }
        while let Some(packet) = emu.poll_packet() {
            if !self.options.adapter.carries_ethernet() {
                match self.dev.write(&packet) {
                    Ok(true) => self.counters.to_adapter += 1,
                    Ok(false) => self.counters.adapter_busy += 1,
                    Err(_) => self.counters.adapter_errors += 1,
                }
            }
            emu.recycle(packet);
        }
        while let Some(event) = self.emu.as_mut().and_then(Emulator::poll_event) {
            self.apply(event);
        }
    }

    fn apply(&mut self, event: l2emu::Event) {
        match event {
            l2emu::Event::AddressAcquired { addr, prefix, .. } => {
                if let Err(e) = self.dev.set_ipv4(addr, prefix) {
                    tracing::warn!(error = %e, %addr, "could not set the adapter's address");
                    self.counters.address_errors += 1;
                    return;
                }
                tracing::info!(%addr, prefix, device = self.dev.name(), "address applied");
                self.status.set_address(match self.options.addressing {
                    Addressing::Dhcp => AddressStatus::Leased { addr, prefix },
                    Addressing::Static { .. } => AddressStatus::Static { addr, prefix },
                });
            }
            l2emu::Event::AddressLost { addr } => {
                // SIOCSIFADDR with 0.0.0.0 removes the address; the netmask step that follows
                // then fails because nothing is left to mask, which is expected.
                let _ = self.dev.set_ipv4(Ipv4Addr::UNSPECIFIED, 0);
                tracing::info!(%addr, device = self.dev.name(), "address removed");
                self.status.set_address(AddressStatus::Lost { addr });
            }
            _ => {}
        }
    }

    fn report_status(&mut self) {
        if !self.uplink.status().is_empty() {
            self.status
                .set_session(self.uplink.status(), self.uplink.is_joined());
        }
        self.status
            .set_hint(self.emu.as_ref().and_then(Emulator::status_hint));
        if let Some(line) = self.status.take_changed() {
            (self.on_status)(&line);
        }
    }
}
