//! Small statistics helpers: percentiles of latency samples.

use std::time::Duration;

/// The `q`-quantile (0.0..=1.0) of `samples` by nearest rank; `None` when empty.
pub(crate) fn quantile(samples: &mut [Duration], q: f64) -> Option<Duration> {
    if samples.is_empty() {
        return None;
    }
    samples.sort_unstable();
    let rank = ((q.clamp(0.0, 1.0) * samples.len() as f64).ceil() as usize).max(1);
    Some(samples[rank - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_by_nearest_rank() {
        let mut s: Vec<Duration> = (1..=100).map(Duration::from_micros).collect();
        assert_eq!(quantile(&mut s, 0.5), Some(Duration::from_micros(50)));
        assert_eq!(quantile(&mut s, 0.99), Some(Duration::from_micros(99)));
        assert_eq!(quantile(&mut s, 1.0), Some(Duration::from_micros(100)));
        assert_eq!(quantile(&mut [], 0.5), None);
    }
}
