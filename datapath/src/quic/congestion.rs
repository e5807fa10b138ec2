//! Cubic with its window held near the path's bandwidth-delay product.
//!
//! Cubic (quinn's default) grows its window until a packet is lost. On a path whose bottleneck
//! is a deep buffer (a home router, or on one host the 4 MiB socket buffer of a busy relay or
//! gateway) that means a standing queue of milliseconds, and every game packet, ping and ACK
//! of the player's other flows waits behind it. DATAGRAMs are never retransmitted, so a
//! tunnel gains nothing from those queued bytes except delay.
//!
//! [`BoundedCubic`] keeps Cubic's loss response and growth but never lets the window exceed
//! `gain` × the bandwidth-delay product (BBR's `cwnd_gain` bound, RFC 9002-style controllers
//! leave it open), computed from a windowed maximum of the delivery rate and a windowed
//! minimum of the round-trip time, and never less than a floor: what the path delivers in
//! `floor_time`, between [`MIN_FLOOR`] and `floor` bytes. Excess data then waits in the
//! sender, where the driver chooses what to drop (bulk first, see `SMALL_DATAGRAM`), instead
//! of in a kernel FIFO nobody can reorder.
//!
//! Every connection uses it (`TransportSettings::window_bound`), the relay's too: what the
//! relay sends a player crosses the player's downlink, whose buffer would otherwise hold the
//! queue (docs/ARCHITECTURE.md, "Later decisions").
//!
//! Only the times quinn passes in are used, so the controller runs under a simulated clock.

use std::any::Any;
use std::sync::Arc;
use std::time::{Duration, Instant};

use quinn_proto::RttEstimator;
use quinn_proto::congestion::{
    Controller, ControllerFactory, ControllerMetrics, Cubic, CubicConfig,
};

/// How the window bound is computed. See the module documentation.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct WindowBound {
    /// Multiple of the bandwidth-delay product the window may reach. 2 (BBR's `cwnd_gain`)
    /// leaves room for delayed and batched ACKs and lets the window double each round trip
    /// while the delivery rate keeps rising, so probing for more bandwidth still works.
    pub gain: f64,
    /// The most the floor can be, in bytes. On a sub-millisecond path the product is a few
    /// kilobytes, less than one GSO batch and far less than what keeps a sender busy while its
    /// receiver waits a few hundred microseconds for a CPU.
    pub floor: u64,
    /// The floor is what the path delivers in this long (at least [`MIN_FLOOR`], at most
    /// `floor`). A fixed 128 KiB would be 100 ms of queue in front of a 10 Mbit/s uplink; at
    /// 4 ms it is 5 kB there, while any path faster than 262 Mbit/s gets the whole `floor`.
    pub floor_time: Duration,
    /// How long a delivery-rate maximum is kept. Long enough to bridge the pauses of a
    /// receiver sharing its CPU; a rate that fell is forgotten after this.
    pub rate_window: Duration,
    /// How long a round-trip minimum is kept (BBR uses 10 s). When it expires the next sample
    /// replaces it, so a route that got longer is noticed.
    pub rtt_window: Duration,
}

impl Default for WindowBound {
    fn default() -> Self {
        Self {
            gain: 2.0,
            floor: 128 * 1024,
            floor_time: Duration::from_millis(4),
            rate_window: Duration::from_secs(1),
            rtt_window: Duration::from_secs(10),
        }
    }
}

/// The lowest floor: about Cubic's initial window (ten 1452-byte packets), so a slow path
/// still keeps a burst in flight.
pub const MIN_FLOOR: u64 = 16 * 1024;

/// Delivery rates are measured over at least this long, so a burst of ACKs released by a
/// receiver that just got its CPU back is averaged with the pause before it.
const MIN_RATE_INTERVAL: Duration = Duration::from_millis(1);

/// Builds a [`BoundedCubic`] for each connection.
#[derive(Debug)]
pub struct BoundedCubicConfig {
    cubic: Arc<CubicConfig>,
    bound: WindowBound,
}

impl BoundedCubicConfig {
    /// Cubic with quinn's defaults under `bound`.
    pub fn new(bound: WindowBound) -> Self {
        Self {
            cubic: Arc::new(CubicConfig::default()),
            bound,
        }
    }
}

impl ControllerFactory for BoundedCubicConfig {
    fn build(self: Arc<Self>, now: Instant, current_mtu: u16) -> Box<dyn Controller> {
        Box::new(BoundedCubic::new(
            self.cubic.clone().build(now, current_mtu),
            self.bound,
        ))
    }
}

/// A windowed extremum: the best sample seen, forgotten once it is older than the window.
/// Two slots (the best, and the best since it) so an expiring maximum falls back to a recent
/// sample instead of to nothing.
#[derive(Debug, Clone, Copy)]
struct Windowed<T> {
    best: Option<(T, Instant)>,
    next: Option<(T, Instant)>,
}

impl<T: Copy> Windowed<T> {
    const fn new() -> Self {
        Self {
            best: None,
            next: None,
        }
    }

    /// Records `sample` at `now`; `at_least(a, b)` says whether `a` is as good as `b`.
    fn update(
        &mut self,
        sample: T,
        now: Instant,
        window: Duration,
        at_least: impl Fn(T, T) -> bool,
    ) {
        let expired = |slot: Option<(T, Instant)>| {
            slot.is_some_and(|(_, at)| now.saturating_duration_since(at) > window)
        };
        if expired(self.best) {
            self.best = self.next.take();
            if expired(self.best) {
                self.best = None;
            }
        }
        match self.best {
            Some((best, _)) if !at_least(sample, best) => {
                // The fallback for when `best` expires: the best recent sample, renewed every
                // half window so it is never much older than that.
                let renew = match self.next {
                    None => true,
                    Some((next, at)) => {
                        at_least(sample, next) || now.saturating_duration_since(at) > window / 2
                    }
                };
                if renew {
                    self.next = Some((sample, now));
                }
            }
            _ => {
                self.best = Some((sample, now));
                self.next = None;
            }
        }
    }

    fn get(&self) -> Option<T> {
        self.best.map(|(v, _)| v)
    }
}

/// The path's delivery rate (windowed maximum) and round-trip time (windowed minimum), from
/// the acknowledgements alone.
#[derive(Debug, Clone)]
struct PathEstimate {
    /// Bytes per second.
    rate: Windowed<f64>,
    /// `now - sent` of acknowledged packets.
    rtt: Windowed<Duration>,
    /// Start of the current delivery-rate interval and the bytes acknowledged since.
    interval_start: Option<Instant>,
    interval_bytes: u64,
}

impl PathEstimate {
    const fn new() -> Self {
        Self {
            rate: Windowed::new(),
            rtt: Windowed::new(),
            interval_start: None,
            interval_bytes: 0,
        }
    }

    fn on_ack(&mut self, now: Instant, sent: Instant, bytes: u64, bound: &WindowBound) {
        let sample = now.saturating_duration_since(sent);
        self.rtt
            .update(sample, now, bound.rtt_window, |a, b| a <= b);
        self.interval_bytes += bytes;
    }

    /// Closes a delivery-rate interval once it is long enough. When nothing is left in flight
    /// the interval ends unmeasured and the next one starts at the next ACK: an interval that
    /// spanned an idle spell (a handshake, then silence) would report the application's pause,
    /// not the path's rate, and pin the bound to its floor.
    fn on_end_acks(&mut self, now: Instant, in_flight: u64, bound: &WindowBound) {
        match self.interval_start {
            None => {
                self.interval_start = Some(now);
                self.interval_bytes = 0;
            }
            Some(start) => {
                let elapsed = now.saturating_duration_since(start);
                if elapsed >= self.rtt.get().unwrap_or_default().max(MIN_RATE_INTERVAL) {
                    let rate = self.interval_bytes as f64 / elapsed.as_secs_f64();
                    self.rate
                        .update(rate, now, bound.rate_window, |a, b| a >= b);
                    self.interval_start = Some(now);
                    self.interval_bytes = 0;
                }
            }
        }
        if in_flight == 0 {
            self.interval_start = None;
        }
    }

    /// `gain` × rate × RTT, at least the floor; `None` before the first rate sample.
    fn bound(&self, bound: &WindowBound) -> Option<u64> {
        let rate = self.rate.get()?;
        let rtt = self.rtt.get()?;
        // `as` saturates, and rates and times are finite and non-negative.
        let bdp = (rate * rtt.as_secs_f64() * bound.gain) as u64;
        let floor = ((rate * bound.floor_time.as_secs_f64()) as u64)
            .clamp(MIN_FLOOR.min(bound.floor), bound.floor);
        Some(bdp.max(floor))
    }
}

/// Cubic under a bandwidth-delay bound. See the module documentation.
#[derive(Debug, Clone)]
pub struct BoundedCubic {
    cubic: Box<Cubic>,
    bound: WindowBound,
    path: PathEstimate,
}

impl BoundedCubic {
    fn new(cubic: Box<dyn Controller>, bound: WindowBound) -> Self {
        let cubic = cubic
            .into_any()
            .downcast::<Cubic>()
            .expect("CubicConfig builds Cubic");
        Self {
            cubic,
            bound,
            path: PathEstimate::new(),
        }
    }

    /// The current bound in bytes, or `None` before the first delivery-rate sample.
    pub fn bound(&self) -> Option<u64> {
        self.path.bound(&self.bound)
    }
}

impl Controller for BoundedCubic {
    fn on_sent(&mut self, now: Instant, bytes: u64, last_packet_number: u64) {
        self.cubic.on_sent(now, bytes, last_packet_number);
    }

    fn on_ack(
        &mut self,
        now: Instant,
        sent: Instant,
        bytes: u64,
        app_limited: bool,
        rtt: &RttEstimator,
    ) {
        self.path.on_ack(now, sent, bytes, &self.bound);
        // At the bound Cubic would keep growing a window nobody can use, and after the next
        // loss start from there; tell it the sender is limited, as it is.
        let at_bound = self.bound().is_some_and(|b| self.cubic.window() >= b);
        self.cubic
            .on_ack(now, sent, bytes, app_limited || at_bound, rtt);
    }

    fn on_end_acks(
        &mut self,
        now: Instant,
        in_flight: u64,
        app_limited: bool,
        largest_packet_num_acked: Option<u64>,
    ) {
        self.path.on_end_acks(now, in_flight, &self.bound);
        self.cubic
            .on_end_acks(now, in_flight, app_limited, largest_packet_num_acked);
    }

    fn on_congestion_event(
        &mut self,
        now: Instant,
        sent: Instant,
        is_persistent_congestion: bool,
        lost_bytes: u64,
    ) {
        self.cubic
            .on_congestion_event(now, sent, is_persistent_congestion, lost_bytes);
    }

    fn on_mtu_update(&mut self, new_mtu: u16) {
        self.cubic.on_mtu_update(new_mtu);
    }

    fn window(&self) -> u64 {
        let window = self.cubic.window();
        match self.bound() {
            Some(bound) => window.min(bound),
            None => window,
        }
    }

    fn metrics(&self) -> ControllerMetrics {
        let mut m = self.cubic.metrics();
        m.congestion_window = self.window();
        m
    }

    fn clone_box(&self) -> Box<dyn Controller> {
        Box::new(self.clone())
    }

    fn initial_window(&self) -> u64 {
        self.cubic.initial_window()
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_windowed_minimum_expires_to_the_best_recent_sample() {
        let t0 = Instant::now();
        let mut w = Windowed::new();
        let min = |a: u32, b: u32| a <= b;
        w.update(10, t0, ms(100), min);
        w.update(30, t0 + ms(10), ms(100), min);
        w.update(20, t0 + ms(20), ms(100), min);
        assert_eq!(w.get(), Some(10));
        // 10 expires; 20 is the best sample since.
        w.update(40, t0 + ms(101), ms(100), min);
        assert_eq!(w.get(), Some(20));
        // Everything expired: the new sample stands alone.
        w.update(50, t0 + ms(400), ms(100), min);
        assert_eq!(w.get(), Some(50));
        w.update(50, t0 + ms(401), ms(100), min);
        w.update(5, t0 + ms(402), ms(100), min);
        assert_eq!(w.get(), Some(5));
    }

    /// Acknowledges `rate` bytes per second in 1 ms steps for `span`, each ACK for a packet
    /// sent `rtt` earlier.
    fn feed(
        path: &mut PathEstimate,
        bound: &WindowBound,
        from: Instant,
        span: Duration,
        rate: u64,
        rtt: Duration,
    ) -> Instant {
        let mut now = from;
        while now < from + span {
            now += ms(1);
            path.on_ack(now, now - rtt, rate / 1000, bound);
            path.on_end_acks(now, 1, bound);
        }
        now
    }

    #[test]
    fn the_bound_is_twice_the_bandwidth_delay_product_and_never_below_the_floor() {
        let bound = WindowBound::default();
        let mut path = PathEstimate::new();
        let t0 = Instant::now();
        assert_eq!(path.bound(&bound), None, "no bound before a rate is known");
        // 12.5 MB/s over a 20 ms round trip: 250 kB in flight, bound 500 kB.
        let now = feed(&mut path, &bound, t0, ms(200), 12_500_000, ms(20));
        let b = path.bound(&bound).unwrap();
        assert!((490_000..=510_000).contains(&b), "bound {b}");
        // A queue building up does not raise the bound: the RTT is a minimum.
        let now = feed(&mut path, &bound, now, ms(200), 12_500_000, ms(80));
        let b = path.bound(&bound).unwrap();
        assert!((490_000..=510_000).contains(&b), "bound {b}");
        // A slow uplink: 1.25 MB/s over 20 ms is 25 kB, bound 50 kB; the floor (5 kB in
        // 4 ms, raised to the minimum) stays below it.
        let mut slow = PathEstimate::new();
        feed(&mut slow, &bound, now, ms(200), 1_250_000, ms(20));
        let b = slow.bound(&bound).unwrap();
        assert!((49_000..=51_000).contains(&b), "bound {b}");
        let mut slower = PathEstimate::new();
        feed(&mut slower, &bound, now, ms(200), 125_000, ms(20));
        assert_eq!(slower.bound(&bound), Some(MIN_FLOOR));
        // A local path: 375 MB/s over 100 µs is 75 kB, under the floor.
        let mut local = PathEstimate::new();
        feed(
            &mut local,
            &bound,
            now,
            ms(200),
            375_000_000,
            Duration::from_micros(100),
        );
        assert_eq!(local.bound(&bound), Some(bound.floor));
    }

    #[test]
    fn a_longer_route_and_a_lower_rate_are_learned_once_the_old_samples_expire() {
        let bound = WindowBound::default();
        let mut path = PathEstimate::new();
        let t0 = Instant::now();
        let now = feed(&mut path, &bound, t0, ms(500), 12_500_000, ms(20));
        // The route now takes 40 ms at half the rate: the product is the same 250 kB, but
        // until the old rate expires (1 s) the bound uses the higher rate.
        let now = feed(&mut path, &bound, now, ms(600), 6_250_000, ms(40));
        assert!(path.bound(&bound).unwrap() <= 510_000);
        let now = feed(&mut path, &bound, now, bound.rtt_window, 6_250_000, ms(40));
        let b = path.bound(&bound).unwrap();
        assert!(
            (490_000..=510_000).contains(&b),
            "bound {b} after {:?}",
            now - t0
        );
        // A fall in rate alone shrinks the bound within the rate window: 3.125 MB/s × 40 ms × 2.
        feed(&mut path, &bound, now, ms(1600), 3_125_000, ms(40));
        let b = path.bound(&bound).unwrap();
        assert!((240_000..=260_000).contains(&b), "bound {b}");
    }

    #[test]
    fn an_idle_spell_does_not_count_as_a_slow_path() {
        let bound = WindowBound::default();
        let mut path = PathEstimate::new();
        let t0 = Instant::now();
        // A handshake's ACK, then nothing in flight for 100 ms.
        path.on_ack(t0, t0 - ms(20), 1200, &bound);
        path.on_end_acks(t0, 0, &bound);
        // A burst at 12.5 MB/s over a 20 ms round trip.
        let mut now = t0 + ms(100);
        for i in 0..50 {
            now += ms(1);
            path.on_ack(now, now - ms(20), 12_500, &bound);
            path.on_end_acks(now, 100_000, &bound);
            // The silence is no rate sample: no bound (or a large one) from the first ACK on.
            let b = path.bound(&bound);
            assert!(b.is_none_or(|b| b > 400_000), "bound {b:?} after {i} ms");
        }
        let b = path.bound(&bound).unwrap();
        assert!((490_000..=510_000).contains(&b), "bound {b}");
    }
}
