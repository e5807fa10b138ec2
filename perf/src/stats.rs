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

/// Median and spread of one figure over repeated runs.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub(crate) struct Spread {
    pub(crate) median: f64,
    pub(crate) min: f64,
    pub(crate) max: f64,
}

impl Spread {
    /// The median, smallest and largest of `values`, NaN left out (all zero when none remain).
    pub(crate) fn of(values: impl IntoIterator<Item = f64>) -> Self {
        // A run that measured nothing reports NaN; it does not count.
        let mut v: Vec<f64> = values.into_iter().filter(|x| !x.is_nan()).collect();
        v.sort_by(f64::total_cmp);
        let median = if v.is_empty() {
            0.0
        } else if v.len() % 2 == 1 {
            v[v.len() / 2]
        } else {
            (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
        };
        Self {
            median,
            min: v.first().copied().unwrap_or(0.0),
            max: v.last().copied().unwrap_or(0.0),
        }
    }

    /// `median (min–max)` with `decimals` decimals; just the median when all runs agree.
    pub(crate) fn show(&self, decimals: usize) -> String {
        if self.min == self.max {
            format!("{:.*}", decimals, self.median)
        } else {
            format!(
                "{:.*} ({:.*}–{:.*})",
                decimals, self.median, decimals, self.min, decimals, self.max
            )
        }
    }
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

    #[test]
    fn spread_is_median_min_max_without_nan() {
        let s = Spread::of([3.0, 1.0, 2.0, f64::NAN]);
        assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
        assert_eq!(Spread::of([1.0, 4.0]).median, 2.5);
        assert_eq!(Spread::of([1.0, 4.0]).show(1), "2.5 (1.0–4.0)");
        assert_eq!(Spread::of([2.0, 2.0]).show(0), "2");
    }
}
