//! The Windows adapters under the shared [`Engine`]: wintun with the Ethernet emulator, or
//! tap-windows6 carrying frames directly ([`crate::adapter`] opens them).
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
use std::time::Duration;

use lanparty_control::uplink::Uplink;
use lanparty_datapath::io::Waker;

use crate::adapter::iphelper::{self, IpHelperError};
use crate::adapter::{self, VirtualAdapter, WaitHandle};
use crate::config::Addressing;
use crate::engine::{Device, Engine, EngineOptions};
use crate::state;
use crate::winplan::{
    self, AddressConfig, Change, InterfaceId, InterfaceSnapshot, Ipv4Net, PlanOptions, Route,
    Snapshot, Undo,
};

/// How often the helper thread looks at the stop flag.
const HELPER_TICK: Duration = Duration::from_millis(250);

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

/// A wintun or tap-windows6 adapter as the engine drives it, with the interface changes
/// applied to it and their undo.
pub struct WindowsDevice {
    // The helper waits on the adapter's handle, so it stops before the adapter closes.
    helper: WakeHelper,
    adapter: Box<dyn VirtualAdapter + Send>,
    interface: InterfaceId,
    state_dir: PathBuf,
    addressing: Addressing,
    applied: Option<Undo>,
}

impl std::fmt::Debug for WindowsDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WindowsDevice")
            .field("adapter", &self.adapter.name())
            .field("interface", &self.interface)
            .finish_non_exhaustive()
    }
}

impl WindowsDevice {
    /// Plans and applies `addr/prefix`, writing the undo first.
    fn apply_plan(
        &mut self,
        addr: Ipv4Addr,
        prefix: u8,
        router: Option<Ipv4Addr>,
    ) -> io::Result<()> {
        self.undo_all();
        let interface = self.interface;
        let snap = snapshot(interface).map_err(io::Error::from)?;
        let plan = winplan::plan(
            &snap,
            interface,
            &AddressConfig::new(addr, prefix, router),
            PlanOptions::default(),
        )
        .map_err(io::Error::other)?;
        if let Some(other) = &plan.metric_tie {
            tracing::warn!(
                interface = %other,
                "another interface has metric 1 too: broadcasts may leave through it"
            );
        }
        self.record_undo(&plan.undo)?;
        self.applied = Some(plan.undo);
        for change in &plan.changes {
            if let Err(e) = apply_change(change) {
                tracing::warn!(error = %e, ?change, "could not change the adapter");
            }
        }
        Ok(())
    }

    /// Gives a TAP adapter configured by Windows' DHCP client the lowest metric.
    fn apply_metric_only(&mut self) -> io::Result<()> {
        let interface = self.interface;
        let current = iphelper::ipv4_interface(interface.luid).map_err(io::Error::from)?;
        let undo = Undo {
            changes: vec![Change::SetMetric {
                interface,
                automatic: current.automatic_metric,
                metric: current.metric,
            }],
        };
        self.record_undo(&undo)?;
        self.applied = Some(undo);
        apply_change(&Change::SetMetric {
            interface,
            automatic: false,
            metric: winplan::ROOM_METRIC,
        })
        .map_err(io::Error::from)
    }

    /// Writes `undo` to the state directory; nothing may be applied when this fails.
    fn record_undo(&self, undo: &Undo) -> io::Result<()> {
        let json = undo.to_json().map_err(io::Error::other)?;
        state::write_atomic(&self.state_dir, state::UNDO_FILE, &json)
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
        let _ = std::fs::remove_file(self.state_dir.join(state::UNDO_FILE));
    }
}

impl Device for WindowsDevice {
    fn carries_ethernet(&self) -> bool {
        self.adapter.kind().carries_ethernet()
    }

    fn read(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        self.adapter.read(buf)
    }

    fn write(&mut self, data: &[u8]) -> io::Result<bool> {
        match self.adapter.write(data) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn set_address(
        &mut self,
        addr: Ipv4Addr,
        prefix: u8,
        router: Option<Ipv4Addr>,
    ) -> io::Result<()> {
        self.apply_plan(addr, prefix, router)
    }

    fn clear_address(&mut self, _addr: Ipv4Addr) -> io::Result<()> {
        self.undo_all();
        Ok(())
    }

    fn drained(&mut self) {
        self.helper.rearm();
    }

    fn joined(&mut self) {
        // wintun gets its address from the emulator's events; a TAP's is ours only when
        // static (Windows' DHCP client configures it otherwise).
        if !self.carries_ethernet() || self.applied.is_some() {
            return;
        }
        let result = match self.addressing {
            Addressing::Static { addr, prefix } => self.apply_plan(addr, prefix, None),
            Addressing::Dhcp => self.apply_metric_only(),
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "could not configure the TAP adapter");
        }
    }

    fn finish(&mut self) {
        self.undo_all();
    }
}

/// The client loop over a Windows adapter.
pub type ClientLoop = Engine<WindowsDevice>;

/// Builds the loop: starts the wake helper on the adapter's handle. On a TAP, Windows' own
/// DHCP client gets the address.
///
/// # Errors
///
/// When the helper thread cannot start.
pub fn client_loop(
    uplink: Uplink,
    adapter: Box<dyn VirtualAdapter + Send>,
    interface: InterfaceId,
    state_dir: PathBuf,
    mut options: EngineOptions,
    on_status: Box<dyn FnMut(&str) + Send>,
) -> io::Result<ClientLoop> {
    let helper = WakeHelper::start(
        adapter.wait_handle(),
        uplink.runner_ref().waker(),
        Arc::new(AtomicBool::new(false)),
    )?;
    options.dhcp_on_l2 = false;
    let device = WindowsDevice {
        helper,
        adapter,
        interface,
        state_dir,
        addressing: options.addressing,
        applied: None,
    };
    Ok(Engine::new(uplink, device, options, on_status))
}
