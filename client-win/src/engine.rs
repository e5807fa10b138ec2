//! The client's datapath loop, once for every platform: it carries frames between a virtual
//! adapter ([`Device`]) and the room ([`Uplink`]), on one thread.
//!
//! The platform modules (`crate::linux`, `crate::windows`) only open the adapter, apply
//! addresses to it and arrange for the adapter to wake the runner's wait; everything else is
//! here, so the Linux end-to-end tests exercise the code the Windows client runs. Each turn:
//!
//! ```text
//! uplink.receive(now)                 UDP -> QUIC -> control stream, session timers
//! uplink events                       joined: make the emulator (first time only)
//! uplink frames  -> adapter           L2: as they are (DHCP replies to the DHCP client)
//!                -> emulator          L3: ARP/ND answered, IP packets to the adapter
//! emulator timers                     ARP/NS retries, DHCP
//! adapter (read until empty)          L2: frames straight to the uplink (MSS clamped there)
//!                -> emulator          L3: packets get Ethernet headers, ARP resolution
//! emulator output                     frames to the uplink, packets to the adapter,
//!                                     address changes to the Device
//! adapter flush (after each batch)    writes the adapter held back to coalesce them
//! uplink.transmit(now); uplink.wait(emulator deadline)
//! ```
//!
//! An adapter with offloads (Linux TUN/TAP, see `crate::linux`) reads super-frames and hands
//! them out one budget-sized segment per [`Device::read`], and merges the segments written to
//! it until [`Device::flush`]; the engine sees frames either way.
//!
//! The emulator is made at the first welcome (a DISCOVER sent before would be lost) and lives
//! as long as the loop, so the lease, and the adapter's address, survive reconnects: games keep
//! their sockets. On an L2 adapter it runs only when [`EngineOptions::dhcp_on_l2`] asks for the
//! built-in DHCP client (see [`crate::run`] for how frames are shared with the OS stack then).

use std::io;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use lanparty_control::uplink::{Uplink, UplinkEvent};
use lanparty_datapath::Mac;
use lanparty_datapath::io::Waker;

use crate::config::Addressing;
use crate::l2emu::{self, Emulator};
use crate::run::{self, L2Route};
use crate::status::{AddressStatus, StatusLine};

/// Reads from the adapter per turn before the loop transmits and looks at the uplink again.
const READS_PER_TURN: usize = 256;
/// How long a stopping loop waits for its goodbye to leave.
const GOODBYE_GRACE: Duration = Duration::from_millis(150);

/// A virtual adapter as the engine drives it.
pub trait Device {
    /// True for Ethernet frames (TAP), false for IP packets (TUN, wintun).
    fn carries_ethernet(&self) -> bool;

    /// Reads one frame or packet without blocking; `None` when nothing waits.
    ///
    /// # Errors
    ///
    /// The operating system's error.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>>;

    /// Writes one frame or packet without blocking; `false` when the adapter is busy (a drop).
    ///
    /// # Errors
    ///
    /// The operating system's error.
    fn write(&mut self, data: &[u8]) -> io::Result<bool>;

    /// Gives the adapter `addr/prefix` (replacing any address it has from us).
    ///
    /// # Errors
    ///
    /// Why the address could not be applied, for the log.
    fn set_address(
        &mut self,
        addr: Ipv4Addr,
        prefix: u8,
        router: Option<Ipv4Addr>,
    ) -> io::Result<()>;

    /// Takes our address off the adapter.
    ///
    /// # Errors
    ///
    /// Why it could not be removed, for the log.
    fn clear_address(&mut self, addr: Ipv4Addr) -> io::Result<()>;

    /// Called after a read found nothing: the adapter may arm its wake-up now.
    fn drained(&mut self) {}

    /// Called after each batch of writes: an adapter that holds written frames to coalesce
    /// them (Linux with offloads) writes them now. `false` when the adapter was busy (a drop).
    ///
    /// # Errors
    ///
    /// The operating system's error.
    fn flush(&mut self) -> io::Result<bool> {
        Ok(true)
    }

    /// Called before the adapter is read, once joined, with the largest frame that travels
    /// whole in the room now (`Budget::max_whole_frame`): an adapter that reads super-frames
    /// (TCP segmentation offload) cuts them into frames of at most this size.
    fn set_max_frame(&mut self, _max_frame: usize) {}

    /// Called at every welcome.
    fn joined(&mut self) {}

    /// Called once when the loop ends (stopped or finished): undo what was applied.
    fn finish(&mut self) {}
}

/// What the engine needs besides the uplink and the device.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Our MAC (the one in the hello; a TAP's own).
    pub mac: Mac,
    /// DHCP or static.
    pub addressing: Addressing,
    /// Host name for DHCP option 12.
    pub hostname: Option<String>,
    /// Seed for the emulator's DHCP transaction ids and jitter.
    pub seed: u64,
    /// Run the built-in DHCP client on an L2 adapter too (Linux: there is no other; Windows
    /// runs its own DHCP client on a TAP).
    pub dhcp_on_l2: bool,
}

/// Why [`Engine::run`] returned.
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
    /// Frames (L2) or packets (L3) read from the adapter.
    pub from_adapter: u64,
    /// Frames or packets written to the adapter.
    pub to_adapter: u64,
    /// Writes the adapter refused for now (queue full).
    pub adapter_busy: u64,
    /// Reads or writes that failed (link down, malformed packet).
    pub adapter_errors: u64,
    /// Packets from an L3 adapter dropped before the first welcome (no emulator yet).
    pub dropped_before_join: u64,
    /// Address changes that could not be applied to the adapter.
    pub address_errors: u64,
}

/// Stops a running [`Engine`] from another thread (a signal thread, a test).
#[derive(Debug, Clone)]
pub struct Stopper {
    flag: Arc<AtomicBool>,
    waker: Waker,
}

impl Stopper {
    /// Asks the loop to say goodbye and return [`Exit::Stopped`].
    pub fn stop(&self) {
        self.flag.store(true, Ordering::Release);
        self.waker.wake();
    }
}

/// The datapath loop. See the [module documentation](self).
pub struct Engine<D> {
    // Field order matters: the uplink's runner may watch the device's fd, so it drops first.
    uplink: Uplink,
    dev: D,
    options: EngineOptions,
    emu: Option<Emulator>,
    status: StatusLine,
    on_status: Box<dyn FnMut(&str) + Send>,
    stop: Arc<AtomicBool>,
    buf: Vec<u8>,
    more_to_read: bool,
    counters: LoopCounters,
}

impl<D> std::fmt::Debug for Engine<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("options", &self.options)
            .field("status", &self.status.render())
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

impl<D: Device> Engine<D> {
    /// Ties the uplink and the device together. A static address is expected to be on the
    /// device already (or to come with the emulator's first event). `on_status` receives every
    /// new status line.
    pub fn new(
        uplink: Uplink,
        dev: D,
        options: EngineOptions,
        on_status: Box<dyn FnMut(&str) + Send>,
    ) -> Self {
        let address = match options.addressing {
            Addressing::Dhcp => AddressStatus::WaitingForDhcp,
            Addressing::Static { addr, prefix } => AddressStatus::Static { addr, prefix },
        };
        Self {
            uplink,
            dev,
            options,
            emu: None,
            status: StatusLine::new(address),
            on_status,
            stop: Arc::new(AtomicBool::new(false)),
            buf: vec![0u8; 64 * 1024],
            // Read once before the first wait: adapters arm their wake-up on an empty read.
            more_to_read: true,
            counters: LoopCounters::default(),
        }
    }

    /// A handle that stops [`Self::run`] from another thread.
    pub fn stopper(&self) -> Stopper {
        Stopper {
            flag: Arc::clone(&self.stop),
            waker: self.uplink.runner_ref().waker(),
        }
    }

    /// The device.
    pub fn device(&self) -> &D {
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

    /// Runs turns until stopped or the session ends for good, then lets the device undo what
    /// it applied ([`Device::finish`]).
    ///
    /// # Errors
    ///
    /// When the UDP backend fails (not for lost connections, which reconnect).
    pub fn run(&mut self) -> io::Result<Exit> {
        let result = self.run_turns();
        self.dev.finish();
        result
    }

    fn run_turns(&mut self) -> io::Result<Exit> {
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
        self.turn_until(None)
    }

    /// [`Self::turn`], sleeping no later than `deadline` (for callers that drive something else
    /// on the same thread, such as a test's scripted relay).
    ///
    /// # Errors
    ///
    /// When the UDP backend fails.
    pub fn turn_until(&mut self, deadline: Option<Instant>) -> io::Result<()> {
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
        self.drain_emulator(now);
        self.drain_adapter(now);
        self.drain_emulator(now);
        self.report_status();
        self.flush_device();
        self.uplink.transmit(now)?;
        let wake = if self.more_to_read {
            Some(now)
        } else {
            match (self.emu.as_ref().and_then(Emulator::poll_timeout), deadline) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
        };
        self.uplink.wait(wake)?;
        Ok(())
    }

    /// Says goodbye to the relay and gives the goodbye a moment to leave.
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
        let l3 = !self.dev.carries_ethernet();
        let needed = l3 || (self.options.dhcp_on_l2 && self.options.addressing == Addressing::Dhcp);
        if self.emu.is_none() && needed {
            let config = run::emulator_config(
                self.options.mac,
                self.options.addressing,
                self.options.hostname.clone(),
                self.options.seed,
            );
            self.emu = Some(Emulator::new(now, config));
        }
        self.dev.joined();
    }

    fn flush_device(&mut self) {
        match self.dev.flush() {
            Ok(true) => {}
            Ok(false) => self.counters.adapter_busy += 1,
            Err(_) => self.counters.adapter_errors += 1,
        }
    }

    fn on_room_frame(&mut self, now: Instant, frame: &[u8]) {
        if !self.dev.carries_ethernet() {
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
            write_counted(&mut self.dev, &mut self.counters, frame);
        }
    }

    fn drain_adapter(&mut self, now: Instant) {
        // What the room sent this turn goes to the adapter before we read from it.
        self.flush_device();
        // The room's budget may grow after the welcome (PMTUD); read frames follow it.
        if let Some(budget) = self.uplink.budget() {
            self.dev.set_max_frame(budget.max_whole_frame());
        }
        self.more_to_read = false;
        for _ in 0..READS_PER_TURN {
            let n = match self.dev.read(&mut self.buf) {
                Ok(Some(n)) => n,
                Ok(None) => {
                    self.dev.drained();
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "reading the adapter failed");
                    self.counters.adapter_errors += 1;
                    self.dev.drained();
                    return;
                }
            };
            self.counters.from_adapter += 1;
            if self.dev.carries_ethernet() {
                // Drops (not joined, oversize) are counted by the uplink.
                self.uplink.send_frame(now, &mut self.buf[..n]);
            } else {
                match &mut self.emu {
                    Some(emu) => {
                        run::learn_ipv6_source(emu, &self.buf[..n]);
                        emu.handle_packet(now, &self.buf[..n]);
                    }
                    None => self.counters.dropped_before_join += 1,
                }
                self.drain_emulator(now);
            }
        }
        // Stopped early: edge-reporting backends would not report the rest, so come back
        // without sleeping.
        self.more_to_read = true;
    }

    fn drain_emulator(&mut self, now: Instant) {
        let Some(emu) = &mut self.emu else { return };
        while let Some(mut frame) = emu.poll_frame() {
            self.uplink.send_frame(now, &mut frame);
            emu.recycle(frame);
        }
        let l3 = !self.dev.carries_ethernet();
        while let Some(packet) = emu.poll_packet() {
            if l3 {
                write_counted(&mut self.dev, &mut self.counters, &packet);
            }
            emu.recycle(packet);
        }
        while let Some(event) = self.emu.as_mut().and_then(Emulator::poll_event) {
            self.apply(event);
        }
    }

    fn apply(&mut self, event: l2emu::Event) {
        match event {
            l2emu::Event::AddressAcquired {
                addr,
                prefix,
                router,
                ..
            } => {
                if let Err(e) = self.dev.set_address(addr, prefix, router) {
                    tracing::warn!(error = %e, %addr, "could not set the adapter's address");
                    self.counters.address_errors += 1;
                    return;
                }
                tracing::info!(%addr, prefix, "address applied to the adapter");
                self.status.set_address(match self.options.addressing {
                    Addressing::Dhcp => AddressStatus::Leased { addr, prefix },
                    Addressing::Static { .. } => AddressStatus::Static { addr, prefix },
                });
            }
            l2emu::Event::AddressLost { addr } => {
                if let Err(e) = self.dev.clear_address(addr) {
                    tracing::warn!(error = %e, %addr, "could not remove the adapter's address");
                    self.counters.address_errors += 1;
                }
                tracing::info!(%addr, "address removed from the adapter");
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

fn write_counted(dev: &mut impl Device, counters: &mut LoopCounters, data: &[u8]) {
    match dev.write(data) {
        Ok(true) => counters.to_adapter += 1,
        Ok(false) => counters.adapter_busy += 1,
        Err(_) => counters.adapter_errors += 1,
    }
}
