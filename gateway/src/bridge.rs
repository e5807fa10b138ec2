//! The gateway's datapath: one thread, one loop, the party LAN's packet ring on one side and the
//! relay [`Uplink`] on the other.
//!
//! Every turn of [`Bridge::turn`]:
//!
//! 1. `uplink.receive`: UDP, QUIC, the control stream, reconnect timers.
//! 2. Uplink events keep the [`LanFilter`]'s set of remote client MACs in step with the room
//!    (the welcome's peers, joins, leaves; cleared when the link drops) and change the status
//!    line.
//! 3. LAN → room: every ready RX block (with the default TPACKET_V2 ring, every run of ready
//!    frame slots) is walked; each frame goes through
//!    [`LanFilter::decide`], and a forwarded frame is copied once, VLAN tag restored, into a
//!    reusable buffer (where a TCP/UDP checksum the sender left to hardware is completed, see
//!    [`checksum`](crate::checksum)) and handed to [`Uplink::send_frame`] (MSS clamp, fragmentation). The ring
//!    is drained completely on every turn, so the io_uring backend's edge-triggered readiness
//!    report for the ring fd can never be missed; sends are pushed to the UDP backend every
//!    [`TRANSMIT_EVERY`] frames so a burst does not overflow QUIC's datagram queue.
//! 4. Room → LAN: every frame from [`Uplink::poll_frame`] goes through a [`Coalescer`]:
//!    in-order TCP segments of one flow that arrive back to back become one GSO super-frame,
//!    sent through a [`VnetSender`] (the kernel hands it to the LAN as one socket buffer and
//!    cuts it only where the NIC cannot); everything else goes into a TX ring slot. The ring is
//!    kicked before each super-frame, so frames leave in the order they came, and once more at
//!    the end of the turn for the whole batch.
//! 5. Every [`STATS_INTERVAL`] the counters go to the relay as a stats message; every
//!    [`LOG_INTERVAL`] they are logged at info level.
//! 6. `uplink.transmit`, then sleep until a datagram, the ring fd, a timer, or at most
//!    [`MAX_WAIT`] (so a shutdown flag set by a signal handler is seen quickly without a waker).
//!
//! Nothing here allocates per frame: the LAN copy buffer is reused, received frames are the
//! uplink's `Bytes`, counters are plain integers owned by the loop.
//!
//! # Benchmark hook
//!
//! `lanparty-perf bench gateway` can measure frames per second from the LAN ring into QUIC with
//! this type alone: open a [`PacketRing`] on one end of a veth pair, build an [`Uplink`] to a
//! relay (or a sink), wrap both with [`Bridge::new`], blast frames into the other veth end and
//! call [`Bridge::turn`] until [`BridgeCounters::lan_forwarded`] reaches the target; divide by
//! the elapsed time.

use std::collections::BTreeMap;
use std::io;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use lanparty_control::msg::{PeerInfo, Role, Stats};
use lanparty_control::uplink::{Uplink, UplinkEvent};
use lanparty_datapath::io::Interest;
use lanparty_datapath::offload::{Coalescer, Link, Push, VNET_HDR_LEN, VnetHdr};
use lanparty_datapath::switch::{LanFilter, LanVerdict};
use lanparty_datapath::sys::afpacket::{PacketRing, TxError, VnetSender};

use crate::checksum::{Completion, complete_l4_checksum};

/// The token the ring fd is watched with.
pub const RING_TOKEN: u64 = 0x6761_7465;
/// How often the counters go to the relay.
pub const STATS_INTERVAL: Duration = Duration::from_secs(5);
/// How often the counters are logged.
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);
/// The longest sleep of one turn: how late a shutdown request may be noticed.
pub const MAX_WAIT: Duration = Duration::from_millis(200);
/// Frames forwarded into the room between two pushes to the UDP backend.
pub const TRANSMIT_EVERY: u32 = 32;
/// Size of the LAN copy buffer: a jumbo frame with a VLAN tag. Larger frames (GRO super-frames)
/// are dropped and counted.
const COPY_BUFFER: usize = 9216 + 4;

/// Counters of the bridge itself; the filter, ring and uplink keep their own.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BridgeCounters {
    /// Frames read from the LAN ring.
    pub lan_frames: u64,
    /// LAN frames the uplink accepted for the room.
    pub lan_forwarded: u64,
    /// Bytes of those frames.
    pub lan_forwarded_bytes: u64,
    /// LAN frames the filter passed but the uplink refused (not joined, too large, QUIC).
    pub lan_refused: u64,
    /// LAN frames cut short by the ring or larger than the copy buffer.
    pub lan_truncated: u64,
    /// LAN frames whose TCP/UDP checksum the sender left to hardware and the bridge completed
    /// before sending them into the room.
    pub lan_checksums_completed: u64,
    /// Frames received from the room.
    pub room_frames: u64,
    /// Room frames sent to the LAN (on the TX ring or inside a super-frame).
    pub room_to_lan: u64,
    /// Room frames merged into a super-frame behind the first segment (each saves a send).
    pub room_merged: u64,
    /// GSO super-frames sent.
    pub room_super_frames: u64,
    /// Super-frames the kernel refused (their segments are lost).
    pub room_super_frame_errors: u64,
    /// Room frames dropped because the TX ring stayed full.
    pub tx_ring_full: u64,
    /// Room frames dropped because they exceed the interface MTU.
    pub tx_too_large: u64,
    /// Failed TX ring kicks (the frames stay queued for the next one).
    pub tx_kick_errors: u64,
}

/// The gateway's datapath loop state. See the [module documentation](self).
#[derive(Debug)]
pub struct Bridge {
    uplink: Uplink,
    ring: PacketRing,
    filter: LanFilter,
    buf: Vec<u8>,
    /// Merges room frames into super-frames; only used with `gso`.
    co: Coalescer,
    /// Sends super-frames; `None` when it could not be opened (every frame takes the ring).
    gso: Option<VnetSender>,
    counters: BridgeCounters,
    room: String,
    status: String,
    next_stats: Instant,
    next_log: Instant,
    kernel_drops: u64,
}

impl Bridge {
    /// Ties the ring and the uplink together and asks the uplink's backend to report the ring's
    /// fd. `room` is only used in status lines.
    ///
    /// # Errors
    ///
    /// When the backend cannot watch the ring's fd.
    pub fn new(now: Instant, ring: PacketRing, mut uplink: Uplink, room: &str) -> io::Result<Self> {
        uplink
            .runner()
            .io()
            .watch_fd(ring.as_raw_fd(), RING_TOKEN, Interest::Readable)?;
        let gso = match VnetSender::open_index(ring.ifindex()) {
            Ok(gso) => Some(gso),
            Err(e) => {
                tracing::warn!(interface = ring.ifname(), error = %e, "no GSO super-frames to the LAN; every frame takes the ring");
                None
            }
        };
        Ok(Self {
            uplink,
            ring,
            filter: LanFilter::new(),
            buf: vec![0; COPY_BUFFER],
            co: Coalescer::new(Link::Ethernet),
            gso,
            counters: BridgeCounters::default(),
            room: room.to_owned(),
            status: String::new(),
            next_stats: now + STATS_INTERVAL,
            next_log: now + LOG_INTERVAL,
            kernel_drops: 0,
        })
    }

    /// The uplink.
    pub fn uplink(&self) -> &Uplink {
        &self.uplink
    }

    /// The LAN filter (remote client MACs, forward and drop counts).
    pub fn filter(&self) -> &LanFilter {
        &self.filter
    }

    /// The bridge's own counters.
    pub fn counters(&self) -> BridgeCounters {
        self.counters
    }

    /// The current status line.
    pub fn status(&self) -> &str {
        &self.status
    }

    /// One turn of the loop: everything that is ready, then a sleep of at most `max_wait` (and
    /// never longer than [`MAX_WAIT`]).
    ///
    /// # Errors
    ///
    /// When the UDP backend fails (its submit or wait); the caller should exit.
    pub fn turn(&mut self, max_wait: Duration) -> io::Result<()> {
        let now = Instant::now();
        self.step(now)?;
        let deadline = (now + max_wait.min(MAX_WAIT))
            .min(self.next_stats)
            .min(self.next_log);
        // Every turn drains the ring, so which tokens were reported does not matter.
        self.uplink.wait(Some(deadline))?;
        Ok(())
    }

    /// Everything but the sleep: receive, events, both directions, timers, transmit.
    ///
    /// # Errors
    ///
    /// When the UDP backend's submit fails.
    pub fn step(&mut self, now: Instant) -> io::Result<()> {
        self.uplink.receive(now);
        // Every change the status line shows (session state, room members) arrives as an
        // event, so the line is rebuilt only on turns that had some.
        let mut changed = false;
        while let Some(event) = self.uplink.poll_event() {
            self.handle_event(event);
            changed = true;
        }
        if changed {
            self.update_status();
        }
        self.lan_to_room(now)?;
        self.room_to_lan();
        if now >= self.next_stats {
            self.next_stats = now + STATS_INTERVAL;
            let stats = self.stats();
            self.uplink.send_stats(&stats);
        }
        if now >= self.next_log {
            self.next_log = now + LOG_INTERVAL;
            self.log_counters();
        }
        self.uplink.transmit(now)?;
        Ok(())
    }

    fn handle_event(&mut self, event: UplinkEvent) {
        let is_client = |p: &PeerInfo| p.role == Role::Client;
        match event {
            UplinkEvent::Joined(welcome) => {
                self.filter
                    .set_remotes(welcome.peers.iter().filter(|p| is_client(p)).map(|p| p.mac));
            }
            UplinkEvent::PeerJoined(peer) if is_client(&peer) => {
                tracing::info!(name = %peer.name, mac = %peer.mac, "client joined");
                self.filter.add_remote(peer.mac);
            }
            UplinkEvent::PeerLeft(peer) if is_client(&peer) => {
                tracing::info!(name = %peer.name, mac = %peer.mac, "client left");
                self.filter.remove_remote(peer.mac);
            }
            UplinkEvent::Left => self.filter.set_remotes([]),
            UplinkEvent::RelayStats(stats) => tracing::debug!(?stats, "relay counters"),
            // Status changes are read from the uplink in `update_status`.
            _ => {}
        }
    }

    fn update_status(&mut self) {
        let status = if self.uplink.is_joined() {
            let n = self.filter.remote_count();
            format!(
                "connected, {n} {} in room {}, bridging {}",
                if n == 1 { "client" } else { "clients" },
                self.room,
                self.ring.ifname()
            )
        } else {
            self.uplink.status().to_owned()
        };
        if status != self.status {
            tracing::info!(target: "lanparty_gateway::status", "{status}");
            self.status = status;
        }
    }

    fn lan_to_room(&mut self, now: Instant) -> io::Result<()> {
        let mut since_transmit = 0;
        while let Some(block) = self.ring.next_block() {
            for frame in block.frames() {
                self.counters.lan_frames += 1;
                if self.filter.decide(frame.data()) != LanVerdict::Forward {
                    continue;
                }
                if frame.is_truncated() {
                    self.counters.lan_truncated += 1;
                    continue;
                }
                let Some(len) = frame.copy_tagged(&mut self.buf) else {
                    self.counters.lan_truncated += 1;
                    continue;
                };
                if frame.checksum_not_ready()
                    && complete_l4_checksum(&mut self.buf[..len]) == Completion::Completed
                {
                    self.counters.lan_checksums_completed += 1;
                }
                if self.uplink.send_frame(now, &mut self.buf[..len]) {
                    self.counters.lan_forwarded += 1;
                    self.counters.lan_forwarded_bytes += len as u64;
                    since_transmit += 1;
                    if since_transmit == TRANSMIT_EVERY {
                        since_transmit = 0;
                        self.uplink.transmit(now)?;
                    }
                } else {
                    self.counters.lan_refused += 1;
                }
            }
        }
        Ok(())
    }

    fn room_to_lan(&mut self) {
        while let Some(frame) = self.uplink.poll_frame() {
            self.counters.room_frames += 1;
            if self.gso.is_none() || frame.len() > self.ring.max_tx_frame() {
                ring_send(&mut self.ring, &mut self.counters, &frame);
                continue;
            }
            let mut push = self.co.push(&frame);
            if push == Push::Flush {
                self.send_held();
                push = self.co.push(&frame);
            }
            match push {
                Push::Merged => {
                    self.counters.room_merged += 1;
                    self.counters.room_to_lan += 1;
                }
                // Counted when it is sent.
                Push::Held => {}
                // After a flush nothing is held, so `Flush` cannot come twice.
                Push::Pass | Push::Flush => ring_send(&mut self.ring, &mut self.counters, &frame),
            }
        }
        self.send_held();
        self.kick();
    }

    /// Sends what the coalescer holds: a lone segment on the TX ring (batched with the rest),
    /// a super-frame through the GSO socket after the ring's queued frames.
    fn send_held(&mut self) {
        let Some(bytes) = self.co.take() else {
            return;
        };
        let (hdr, frame) = bytes.split_at(VNET_HDR_LEN);
        if hdr == VnetHdr::EMPTY.to_bytes() {
            ring_send(&mut self.ring, &mut self.counters, frame);
            return;
        }
        if let Err(e) = self.ring.flush() {
            note_kick_error(&mut self.counters, self.ring.ifname(), &e);
        }
        let Some(gso) = &self.gso else { return };
        match gso.send(bytes) {
            Ok(()) => {
                // The first segment; the merged ones were counted as they merged.
                self.counters.room_to_lan += 1;
                self.counters.room_super_frames += 1;
            }
            Err(e) => {
                if self.counters.room_super_frame_errors == 0 {
                    tracing::warn!(interface = gso.ifname(), error = %e, "a GSO super-frame was refused (counted; said once)");
                }
                self.counters.room_super_frame_errors += 1;
            }
        }
    }

    fn kick(&mut self) {
        if let Err(e) = self.ring.flush() {
            note_kick_error(&mut self.counters, self.ring.ifname(), &e);
        }
    }

    /// Drops by reason, for the relay's stats and the log.
    fn drops(&mut self) -> BTreeMap<String, u64> {
        let mut drops = BTreeMap::new();
        for (reason, n) in self.filter.drops().iter() {
            drops.insert(format!("lan_{}", reason.name()), n);
        }
        if let Ok(rc) = self.ring.counters() {
            self.kernel_drops = rc.kernel_drops;
        }
        let u = self.uplink.counters();
        let c = self.counters;
        for (name, n) in [
            ("lan_truncated", c.lan_truncated),
            ("lan_rx_ring_full", self.kernel_drops),
            ("lan_not_joined", u.dropped_not_joined),
            ("lan_oversize", u.dropped_oversize),
            ("lan_send_error", u.dropped_send_error),
            ("room_tx_ring_full", c.tx_ring_full),
            ("room_tx_too_large", c.tx_too_large),
            ("room_super_frame_refused", c.room_super_frame_errors),
            ("room_reassembly", {
                let r = self.uplink.reassembly_counters();
                r.timed_out + r.dropped_memory + r.malformed
            }),
        ] {
            drops.insert(name.to_owned(), n);
        }
        drops
    }

    /// This gateway's counters as a stats message (in = from the relay).
    pub fn stats(&mut self) -> Stats {
        let u = self.uplink.counters();
        Stats {
            frames_in: u.frames_in,
            frames_out: u.frames_out,
            bytes_in: u.bytes_in,
            bytes_out: u.bytes_out,
            drops: self.drops(),
        }
    }

    /// Logs the counters at info level.
    pub fn log_counters(&mut self) {
        let drops = self.drops();
        let c = self.counters;
        let drops: Vec<String> = drops
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(k, n)| format!("{k}={n}"))
            .collect();
        tracing::info!(
            lan_frames = c.lan_frames,
            lan_to_room = c.lan_forwarded,
            lan_to_room_bytes = c.lan_forwarded_bytes,
            lan_checksums_completed = c.lan_checksums_completed,
            room_to_lan = c.room_to_lan,
            room_super_frames = c.room_super_frames,
            room_merged = c.room_merged,
            clients = self.filter.remote_count(),
            drops = %drops.join(" "),
            "counters"
        );
    }

    /// Says goodbye to the relay and pushes the goodbye out; the bridge stops forwarding.
    ///
    /// # Errors
    ///
    /// When the UDP backend's submit fails.
    pub fn close(&mut self, reason: &str) -> io::Result<()> {
        let now = Instant::now();
        self.uplink.close(now, reason);
        self.filter.set_remotes([]);
        self.uplink.transmit(now)?;
        Ok(())
    }
}

fn note_kick_error(counters: &mut BridgeCounters, ifname: &str, e: &io::Error) {
    if counters.tx_kick_errors == 0 {
        tracing::warn!(interface = ifname, error = %e, "tx ring kick failed");
    }
    counters.tx_kick_errors += 1;
}

/// Queues `frame` on the TX ring, kicking the ring once if it is full.
fn ring_send(ring: &mut PacketRing, counters: &mut BridgeCounters, frame: &[u8]) {
    let mut result = ring.send(frame);
    if result == Err(TxError::RingFull) {
        // Kick what is queued and try once more; the kick does not wait.
        if let Err(e) = ring.flush() {
            note_kick_error(counters, ring.ifname(), &e);
        }
        result = ring.send(frame);
    }
    match result {
        Ok(()) => counters.room_to_lan += 1,
        Err(TxError::TooLarge { .. }) => counters.tx_too_large += 1,
        Err(_) => counters.tx_ring_full += 1,
    }
}
