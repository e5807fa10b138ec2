//! The Windows client loop: the same shape as the Linux one (see `crate::linux`) over the
//! adapter layer ([`crate::adapter`]): wintun with the Ethernet emulator, or tap-windows6
//! carrying frames directly.
//!
//! Waiting: the runner's wait sleeps on the UDP socket and its waker. The adapter's wait
//! handle cannot join that wait, so a small helper thread blocks on it instead and wakes the
//! runner when it fires. The adapter arms its handle only when a read finds nothing, so the
//! helper waits only after the loop says it drained the adapter (a one-slot "re-arm" channel);
//! a manual-reset handle can then never make the helper spin.
//!
//! Addresses: with wintun the emulator's DHCP client (or the static address) gives the
//! address, and [`crate::winplan`] plans address, MTU, on-link and broadcast routes and the
//! lowest metric. The undo is written to the state directory *before* anything is applied and
//! replayed at exit; a leftover undo (after a crash) is replayed by [`replay_leftover_undo`] at
//! the next start. With tap-windows6 Windows' own DHCP client configures the adapter from the
//! frames it sees; the loop only sets the lowest metric (with its undo) once joined, or applies
//! a static address through the same plan.

use std::io;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender};
use std::time::{Duration, Instant};

use lanparty_control::uplink::{Uplink, UplinkEvent};
use lanparty_datapath::Mac;
use lanparty_datapath::io::Waker;

use crate::adapter::iphelper::{self, IpHelperError};
use crate::adapter::{self, AdapterKind, VirtualAdapter, WaitHandle};
use crate::config::Addressing;
use crate::l2emu::{self, Emulator};
use crate::run;
use crate::state;
use crate::status::{AddressStatus, StatusLine};
use crate::winplan::{
    self, AddressConfig, Change, InterfaceId, InterfaceSnapshot, Ipv4Net, PlanOptions, Route,
    Snapshot, Undo,
};

/// Reads from the adapter per turn before the loop looks at the uplink again.
const READS_PER_TURN: usize = 256;
/// How long a stopping loop waits for its goodbye to leave.
const GOODBYE_GRACE: Duration = Duration::from_millis(150);
/// How often the helper thread looks at the stop flag.
const HELPER_TICK: Duration = Duration::from_millis(250);

/// What the loop needs besides the uplink and the adapter.
#[derive(Debug, Clone)]
pub struct LoopOptions {
    /// Our MAC (the adapter's own on tap-windows6).
    pub mac: Mac,
    /// DHCP or static.
    pub addressing: Addressing,
    /// Host name for DHCP option 12.
    pub hostname: Option<String>,
    /// Seed for the emulator.
    pub seed: u64,
    /// Where the undo file lives.
    pub state_dir: PathBuf,
    /// The adapter's interface.
    pub interface: InterfaceId,
}

/// Why [`ClientLoop::run`] returned.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Exit {
    /// Stopped through a [`Stopper`].
    Stopped,
    /// The session ended for good; the last status line says why.
    Finished(String),
}

/// Stops a running [`ClientLoop`] from another thread.
#[derive(Debug, Clone)]
pub struct Stopper {
    flag: Arc<AtomicBool>,
    waker: Waker,
}

impl Stopper {
    /// Asks the loop to say goodbye, undo its interface changes and return.
    pub fn stop(&self) {
        self.flag.store(true, Ordering::Release);
        self.waker.wake();
    }
}

/// Replays an undo left in `state_dir` by a client that did not exit cleanly, then removes it.
///
/// # Errors
///
/// When the file exists but cannot be read or parsed (it is left in place for the player).
pub fn replay_leftover_undo(state_dir: &std::path::Path) -> io::Result<bool> {
    let path = state_dir.join(state::UNDO_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    let undo = Undo::from_json(&text).map_err(io::Error::other)?;
    for change in &undo.changes {
        if let Err(e) = apply_change(change) {
            tracing::warn!(error = %e, ?change, "could not undo a leftover interface change");
        }
    }
    std::fs::remove_file(&path)?;
    Ok(true)
}

/// Applies one change; "already there" and "already gone" count as done.
fn apply_change(change: &Change) -> Result<(), IpHelperError> {
    let result = match change {
        Change::AddAddress { interface, address } => {
            iphelper::add_ipv4_address(interface.luid, address.addr, address.prefix)
        }
        Change::RemoveAddress { interface, address } => {
            iphelper::remove_ipv4_address(interface.luid, address.addr, address.prefix)
        }
        Change::SetMtu { interface, mtu } => iphelper::set_ipv4_mtu(interface.luid, *mtu),
        Change::SetMetric {
            interface,
            automatic,
            metric,
        } => iphelper::set_ipv4_metric(interface.luid, *automatic, *metric),
        Change::AddRoute(r) => iphelper::add_ipv4_route(
            r.interface.luid,
            r.destination.addr,
            r.destination.prefix,
            r.next_hop,
            0,
        ),
        Change::RemoveRoute(r) => iphelper::remove_ipv4_route(
            r.interface.luid,
            r.destination.addr,
            r.destination.prefix,
            r.next_hop,
        ),
    };
    match result {
        Err(e) if e.is_already_exists() || e.is_not_found() => Ok(()),
        other => other,
    }
}

/// The interfaces, their addresses and the routes through `adapter`, as the planner sees them.
fn snapshot(adapter: InterfaceId) -> Result<Snapshot, IpHelperError> {
    let addresses = iphelper::ipv4_addresses()?;
    let interfaces = iphelper::ipv4_interfaces()?
        .into_iter()
        .map(|i| InterfaceSnapshot {
            id: InterfaceId {
                luid: i.luid,
                index: i.index,
            },
            name: iphelper::interface_alias(i.luid).unwrap_or_default(),
            metric: i.metric,
            automatic_metric: i.automatic_metric,
            mtu: i.mtu,
            addresses: addresses
                .iter()
                .filter(|a| a.luid == i.luid)
                .map(|a| Ipv4Net {
                    addr: a.address,
                    prefix: a.prefix,
                })
                .collect(),
        })
        .collect();
    let routes = iphelper::ipv4_routes()?
        .into_iter()
        .filter(|r| r.luid == adapter.luid)
        .map(|r| Route {
            interface: InterfaceId {
                luid: r.luid,
                index: r.index,
            },
            destination: Ipv4Net {
                addr: r.destination,
                prefix: r.prefix,
            },
            next_hop: r.next_hop,
        })
        .collect();
    Ok(Snapshot { interfaces, routes })
}

/// The helper thread that turns the adapter's wait handle into runner wakes.
struct WakeHelper {
    rearm: SyncSender<()>,
    thread: Option<std::thread::JoinHandle<()>>,
    stop: Arc<AtomicBool>,
}

impl WakeHelper {
    fn start(handle: WaitHandle, waker: Waker, stop: Arc<AtomicBool>) -> io::Result<Self> {
        let (rearm, armed) = mpsc::sync_channel::<()>(1);
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("adapter-wake".into())
            .spawn(move || {
                while !flag.load(Ordering::Acquire) {
                    match armed.recv_timeout(HELPER_TICK) {
                        Ok(()) => {}
                        Err(RecvTimeoutError::Timeout) => continue,
                        Err(RecvTimeoutError::Disconnected) => return,
                    }
                    loop {
                        if flag.load(Ordering::Acquire) {
                            return;
                        }
                        match adapter::wait_any(&[handle], Some(HELPER_TICK)) {
                            Ok(Some(_)) => {
                                waker.wake();
                                break;
                            }
                            Ok(None) => {}
                            Err(e) => {
                                tracing::warn!(error = %e, "waiting on the adapter failed");
                                std::thread::sleep(HELPER_TICK);
                            }
                        }
                    }
                }
            })?;
        Ok(Self {
            rearm,
            thread: Some(thread),
            stop,
        })
    }

    /// The loop drained the adapter: wait for its handle again.
    fn rearm(&self) {
        // A full slot means the helper is already armed.
        let _ = self.rearm.try_send(());
    }
}

impl Drop for WakeHelper {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The client's datapath loop on Windows. See the [module documentation](self).
pub struct ClientLoop {
    helper: WakeHelper,
    uplink: Uplink,
    adapter: Box<dyn VirtualAdapter + Send>,
    options: LoopOptions,
    emu: Option<Emulator>,
    applied: Option<Undo>,
    status: StatusLine,
    on_status: Box<dyn FnMut(&str) + Send>,
    stop: Arc<AtomicBool>,
    buf: Vec<u8>,
    more_to_read: bool,
}

impl std::fmt::Debug for ClientLoop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientLoop")
            .field("adapter", &self.adapter.name())
            .field("options", &self.options)
            .field("status", &self.status.render())
            .finish_non_exhaustive()
    }
}

impl ClientLoop {
    /// Ties the uplink and the adapter together and starts the wake helper.
    ///
    /// # Errors
    ///
    /// When the helper thread cannot start.
    pub fn new(
        uplink: Uplink,
        adapter: Box<dyn VirtualAdapter + Send>,
        options: LoopOptions,
        on_status: Box<dyn FnMut(&str) + Send>,
    ) -> io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let helper_stop = Arc::new(AtomicBool::new(false));
        let helper = WakeHelper::start(
            adapter.wait_handle(),
            uplink.runner_ref().waker(),
            helper_stop,
        )?;
        let address = match options.addressing {
            Addressing::Dhcp => AddressStatus::WaitingForDhcp,
            Addressing::Static { addr, prefix } => AddressStatus::Static { addr, prefix },
        };
        Ok(Self {
            helper,
            uplink,
            adapter,
            options,
            emu: None,
            applied: None,
            status: StatusLine::new(address),
            on_status,
            stop,
            buf: vec![0u8; 64 * 1024],
            more_to_read: true,
        })
    }

    /// A handle that stops [`Self::run`] from another thread.
    pub fn stopper(&self) -> Stopper {
        Stopper {
            flag: Arc::clone(&self.stop),
            waker: self.uplink.runner_ref().waker(),
        }
    }

    /// Runs turns until stopped or the session ends for good; undoes the interface changes
    /// either way.
    ///
    /// # Errors
    ///
    /// When the UDP backend fails.
    pub fn run(&mut self) -> io::Result<Exit> {
        let result = self.run_inner();
        self.undo_all();
        result
    }

    fn run_inner(&mut self) -> io::Result<Exit> {
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

    fn kind(&self) -> AdapterKind {
        self.adapter.kind()
    }

    fn turn(&mut self) -> io::Result<()> {
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

    fn say_goodbye(&mut self) {
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
        let l3 = !self.kind().carries_ethernet();
        if l3 && self.emu.is_none() {
            let config = run::emulator_config(
                self.options.mac,
                self.options.addressing,
                self.options.hostname.clone(),
                self.options.seed,
            );
            self.emu = Some(Emulator::new(now, config));
        }
        if !l3 && self.applied.is_none() {
            match self.options.addressing {
                Addressing::Static { addr, prefix } => self.apply_address(addr, prefix, None),
                // Windows' DHCP client configures the TAP; only the metric is ours to set.
                Addressing::Dhcp => self.apply_metric_only(),
            }
        }
    }

    fn on_room_frame(&mut self, now: Instant, frame: &[u8]) {
        if self.kind().carries_ethernet() {
            self.write_adapter(frame);
        } else if let Some(emu) = &mut self.emu {
            emu.handle_frame(now, frame);
        }
    }

    fn write_adapter(&mut self, data: &[u8]) {
        // A full queue or a refused frame is a drop, as on any NIC.
        if let Err(e) = self.adapter.write(data)
            && e.kind() != io::ErrorKind::WouldBlock
        {
            tracing::debug!(error = %e, "adapter refused a frame");
        }
    }

    fn drain_adapter(&mut self, now: Instant) {
        self.more_to_read = false;
        for _ in 0..READS_PER_TURN {
            let n = match self.adapter.read(&mut self.buf) {
                Ok(Some(n)) => n,
                Ok(None) => {
                    self.helper.rearm();
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "reading the adapter failed");
                    self.helper.rearm();
                    return;
                }
            };
            if self.kind().carries_ethernet() {
                self.uplink.send_frame(&mut self.buf[..n]);
            } else if let Some(emu) = &mut self.emu {
                run::learn_ipv6_source(emu, &self.buf[..n]);
                emu.handle_packet(now, &self.buf[..n]);
                self.drain_emulator();
            }
        }
        self.more_to_read = true;
    }

    fn drain_emulator(&mut self) {
        let Some(emu) = &mut self.emu else { return };
        while let Some(mut frame) = emu.poll_frame() {
            self.uplink.send_frame(&mut frame);
            emu.recycle(frame);
        }
        while let Some(packet) = emu.poll_packet() {
            if let Err(e) = self.adapter.write(&packet)
                && e.kind() != io::ErrorKind::WouldBlock
            {
                tracing::debug!(error = %e, "adapter refused a packet");
            }
            emu.recycle(packet);
        }
        while let Some(event) = self.emu.as_mut().and_then(Emulator::poll_event) {
            match event {
                l2emu::Event::AddressAcquired {
                    addr,
                    prefix,
                    router,
                    ..
                } => self.apply_address(addr, prefix, router),
                l2emu::Event::AddressLost { addr } => {
                    self.undo_all();
                    self.status.set_address(AddressStatus::Lost { addr });
                }
                _ => {}
            }
        }
    }

    /// Plans and applies `addr/prefix`, writing the undo first.
    fn apply_address(&mut self, addr: Ipv4Addr, prefix: u8, router: Option<Ipv4Addr>) {
        self.undo_all();
        let interface = self.options.interface;
        let plan = snapshot(interface)
            .map_err(|e| e.to_string())
            .and_then(|snap| {
                winplan::plan(
                    &snap,
                    interface,
                    &AddressConfig::new(addr, prefix, router),
                    PlanOptions::default(),
                )
                .map_err(|e| e.to_string())
            });
        let plan = match plan {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, %addr, "could not plan the adapter's address");
                return;
            }
        };
        if let Some(other) = &plan.metric_tie {
            tracing::warn!(
                interface = %other,
                "another interface has metric 1 too: broadcasts may leave through it"
            );
        }
        if !self.record_undo(&plan.undo) {
            return;
        }
        self.applied = Some(plan.undo);
        for change in &plan.changes {
            if let Err(e) = apply_change(change) {
                tracing::warn!(error = %e, ?change, "could not change the adapter");
            }
        }
        self.status.set_address(match self.options.addressing {
            Addressing::Dhcp => AddressStatus::Leased { addr, prefix },
            Addressing::Static { .. } => AddressStatus::Static { addr, prefix },
        });
    }

    /// Gives a TAP adapter configured by Windows' DHCP client the lowest metric.
    fn apply_metric_only(&mut self) {
        let interface = self.options.interface;
        let current = match iphelper::ipv4_interface(interface.luid) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "could not read the adapter's metric");
                return;
            }
        };
        let undo = Undo {
            changes: vec![Change::SetMetric {
                interface,
                automatic: current.automatic_metric,
                metric: current.metric,
            }],
        };
        if !self.record_undo(&undo) {
            return;
        }
        self.applied = Some(undo);
        let change = Change::SetMetric {
            interface,
            automatic: false,
            metric: winplan::ROOM_METRIC,
        };
        if let Err(e) = apply_change(&change) {
            tracing::warn!(error = %e, "could not set the adapter's metric");
        }
    }

    /// Writes `undo` to the state directory; false (and nothing applied) when that fails.
    fn record_undo(&self, undo: &Undo) -> bool {
        let written = undo
            .to_json()
            .map_err(io::Error::other)
            .and_then(|json| state::write_atomic(&self.options.state_dir, state::UNDO_FILE, &json));
        if let Err(e) = written {
            tracing::warn!(
                error = %e,
                dir = %self.options.state_dir.display(),
                "cannot record how to undo the adapter changes, so none are made"
            );
            return false;
        }
        true
    }

    /// Reverses what was applied and removes the undo file.
    fn undo_all(&mut self) {
        let Some(undo) = self.applied.take() else {
            return;
        };
        for change in &undo.changes {
            if let Err(e) = apply_change(change) {
                tracing::warn!(error = %e, ?change, "could not undo an adapter change");
            }
        }
        let _ = std::fs::remove_file(self.options.state_dir.join(state::UNDO_FILE));
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
