//! The I/O shell around the sans-IO [`Driver`]: it moves datagrams between a [`UdpBackend`] and
//! the driver, runs the driver's timers and sleeps until something happens.
//!
//! The relay, the gateway and the client each run the same turn on their datapath thread:
//!
//! ```text
//! loop {
//!     let now = Instant::now();
//!     runner.receive(now);                       // UDP -> driver, due timers
//!     while let Some(ev) = runner.driver().poll_event() { /* application */ }
//!     /* commands from the control thread, frames from a ring or adapter */
//!     runner.transmit(now)?;                     // driver -> UDP, one flush
//!     runner.wait(app_deadline)?;                // sleep: completion, waker, fd or deadline
//! }
//! ```
//!
//! This is the only place in the datapath that reads the clock on the QUIC path; everything it
//! drives takes `now` as an argument.

use std::io;
use std::time::Instant;

use bytes::Bytes;

use crate::io::{BackendKind, IoCounters, UdpBackend, WaitOutcome, Waker};
use crate::quic::{ConnId, DatagramError, Driver};

/// A driver and the UDP backend it talks through.
#[derive(Debug)]
pub struct Runner {
    driver: Driver,
    io: Box<dyn UdpBackend>,
    /// A pooled send buffer that the last `poll_transmit` did not fill, kept for the next turn
    /// so an idle turn allocates nothing.
    spare: Option<Vec<u8>>,
    ready: Vec<u64>,
    /// A submit failure met while making room mid-turn, returned by the next
    /// [`Self::transmit`].
    deferred: Option<io::Error>,
    /// Making room this turn already found nothing the driver could send (congestion control
    /// or pacing holds it back), so further attempts would be empty submits.
    stalled: bool,
}

impl Runner {
    /// Wraps a driver and a backend. Each GSO batch is capped at what the backend can send.
    pub fn new(mut driver: Driver, io: Box<dyn UdpBackend>) -> Self {
        driver.set_max_transmit_datagrams(io.max_gso_segments().max(1));
        Self {
            driver,
            io,
            spare: None,
            ready: Vec::with_capacity(8),
            deferred: None,
            stalled: false,
        }
    }

    /// The driver, for events and commands.
    pub fn driver(&mut self) -> &mut Driver {
        &mut self.driver
    }

    /// The driver, read-only.
    pub fn driver_ref(&self) -> &Driver {
        &self.driver
    }

    /// The backend, for watching extra fds.
    pub fn io(&mut self) -> &mut dyn UdpBackend {
        self.io.as_mut()
    }

    /// Which backend carries the datagrams.
    pub fn backend_kind(&self) -> BackendKind {
        self.io.kind()
    }

    /// The backend's counters.
    pub fn io_counters(&self) -> IoCounters {
        self.io.counters()
    }

    /// A handle other threads use to wake [`Self::wait`].
    pub fn waker(&self) -> Waker {
        self.io.waker()
    }

    /// Local UDP address.
    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.io.local_addr()
    }

    /// Feeds received batches to the driver and runs its timers if they are due. Call at the
    /// start of each turn; returns the number of batches handled.
    ///
    /// Stops early once half of the driver's DATAGRAM event queue is waiting
    /// ([`Driver::queued_datagram_events`]): one GRO batch of small DATAGRAMs (64 segments of
    /// about 20 frames each) can add over a thousand events, and feeding a whole socket's worth
    /// before the caller drains them made the driver drop twice as many DATAGRAMs as it
    /// delivered in the 64-byte benchmark. What is left stays in the backend, whose `wait`
    /// returns at once while it holds received batches, so the next turn picks it up.
    pub fn receive(&mut self, now: Instant) -> usize {
        self.stalled = false;
        let mut batches = 0;
        // At least one batch per turn, whatever the configured queue size.
        let limit = (self.driver.config().max_queued_datagrams / 2).max(1);
        while self.driver.queued_datagram_events() < limit {
            let Some((meta, data)) = self.io.poll_recv() else {
                break;
            };
            self.driver.handle_datagram(now, meta, data);
            batches += 1;
        }
        if self.driver.poll_timeout().is_some_and(|t| t <= now) {
            self.driver.handle_timeout(now);
        }
        batches
    }

    /// Hands every transmit the driver has to the backend and submits them in one flush. Call at
    /// the end of each turn, after the application queued its datagrams.
    ///
    /// # Errors
    ///
    /// When the backend's submit call fails; individual send failures are counted instead.
    pub fn transmit(&mut self, now: Instant) -> io::Result<usize> {
        if let Some(e) = self.deferred.take() {
            return Err(e);
        }
        let batches = self.queue_transmits(now);
        self.io.flush()?;
        Ok(batches)
    }

    /// Queues a DATAGRAM on `conn` like [`Driver::send_datagram`], but first sends what the
    /// driver has ready when `data` would push an older datagram out of the connection's
    /// queue.
    ///
    /// A turn can queue far more than one connection's DATAGRAM buffer (64 KiB): a relay feeds
    /// up to thousands of received datagrams to its egress connections, an adapter read loop
    /// hundreds of frames. Without this, everything beyond the buffer was dropped before it
    /// reached the socket although congestion control would have let it go; TCP through the
    /// tunnel saw those drops as loss. What congestion control or pacing really holds back is
    /// still dropped oldest-first and counted.
    ///
    /// # Errors
    ///
    /// See [`Driver::send_datagram`]. A submit failure while making room is returned by the
    /// next [`Self::transmit`].
    pub fn send_datagram(
        &mut self,
        now: Instant,
        conn: ConnId,
        data: Bytes,
    ) -> Result<(), DatagramError> {
        self.make_room(now, conn, data.len());
        self.driver.send_datagram(conn, data)
    }

    /// [`Self::send_datagram`] to each of `conns` (refcount clones of `data`); returns how many
    /// took it. Refusals are counted in the driver's counters.
    pub fn send_datagram_to_many(&mut self, now: Instant, conns: &[ConnId], data: Bytes) -> usize {
        for &conn in conns {
            self.make_room(now, conn, data.len());
        }
        self.driver.send_datagram_to_many(conns, data)
    }

    fn make_room(&mut self, now: Instant, conn: ConnId, len: usize) {
        if self.stalled
            || self
                .driver
                .datagram_send_space(conn)
                .is_none_or(|s| s >= len)
        {
            return;
        }
        if self.queue_transmits(now) == 0 {
            self.stalled = true;
        } else if let Err(e) = self.io.flush() {
            self.stalled = true;
            self.deferred.get_or_insert(e);
        }
    }

    /// Moves every transmit the driver has into the backend's queue, without submitting.
    fn queue_transmits(&mut self, now: Instant) -> usize {
        let mut batches = 0;
        loop {
            let mut buf = self.spare.take().unwrap_or_else(|| self.io.send_buffer());
            match self.driver.poll_transmit(now, &mut buf) {
                Some(meta) => {
                    self.io.queue_send(meta, buf);
                    batches += 1;
                }
                None => {
                    self.spare = Some(buf);
                    return batches;
                }
            }
        }
    }

    /// Sleeps until a datagram arrives, the waker fires, a watched fd becomes ready, the
    /// driver's next timer or `deadline` (the application's own timer) passes. Returns the
    /// outcome and the tokens of the watched fds that became ready.
    ///
    /// # Errors
    ///
    /// When the backend's wait call fails.
    pub fn wait(&mut self, deadline: Option<Instant>) -> io::Result<(WaitOutcome, &[u64])> {
        let next = match (self.driver.poll_timeout(), deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.ready.clear();
        let outcome = self.io.wait(next, &mut self.ready)?;
        Ok((outcome, &self.ready))
    }
}
