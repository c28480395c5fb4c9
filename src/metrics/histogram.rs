//! A latency histogram that costs two atomic adds per observation: fixed bucket bounds, no
//! lock, no allocation. What a scrape reads is a snapshot, cumulative as Prometheus wants it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the buckets, in seconds: from 50 µs (a read of cached bytes) to 10 s (a
/// remote request at its timeout); `+Inf` is implied.
pub const BOUNDS: [f64; 16] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 10.0,
];

/// The same bounds in nanoseconds, compared against each observation.
const BOUNDS_NS: [u64; 16] = {
    let mut ns = [0u64; 16];
    let mut i = 0;
    while i < ns.len() {
        ns[i] = (BOUNDS[i] * 1e9) as u64;
        i += 1;
    }
    ns
};

/// Observations by bucket (not cumulative: each lands in one), with their count and sum.
pub struct Histogram {
    /// One per bound, then `+Inf`.
    buckets: [AtomicU64; BOUNDS.len() + 1],
    sum_ns: AtomicU64,
}

/// A histogram as read at one moment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HistogramSnapshot {
    /// Observations.
    pub count: u64,
    /// Their sum, in seconds.
    pub sum: f64,
    /// (upper bound in seconds, observations in that bucket alone), the last bound infinite:
    /// what the exposition encoder accumulates.
    pub buckets: Vec<(f64, u64)>,
}

impl Histogram {
    /// An empty histogram (usable in a `static`).
    pub const fn new() -> Histogram {
        Histogram {
            buckets: [const { AtomicU64::new(0) }; BOUNDS.len() + 1],
            sum_ns: AtomicU64::new(0),
        }
    }

    /// Counts one observation of `took`.
    pub fn observe(&self, took: Duration) {
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        let at = BOUNDS_NS.partition_point(|&b| b < ns);
        self.buckets[at].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// The histogram now.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let buckets: Vec<(f64, u64)> = BOUNDS
            .iter()
            .chain([&f64::INFINITY])
            .zip(&self.buckets)
            .map(|(bound, n)| (*bound, n.load(Ordering::Relaxed)))
            .collect();
        HistogramSnapshot {
            count: buckets.iter().map(|(_, n)| n).sum(),
            sum: self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9,
            buckets,
        }
    }
}

impl Default for Histogram {
    fn default() -> Histogram {
        Histogram::new()
    }
}

impl HistogramSnapshot {
    /// The smallest bucket bound below which at least `q` (0..=1) of the observations lie;
    /// None without observations, infinity when they lie past the last bound.
    pub fn quantile_bound(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let wanted = (q * self.count as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        self.buckets.iter().find_map(|(bound, n)| {
            seen += n;
            (seen >= wanted).then_some(*bound)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_their_bucket_and_read_cumulative() {
        let h = Histogram::new();
        h.observe(Duration::from_micros(40)); // <= 50 µs
        h.observe(Duration::from_micros(50)); // on the bound: <= 50 µs
        h.observe(Duration::from_millis(3)); // <= 5 ms
        h.observe(Duration::from_secs(60)); // +Inf
        let s = h.snapshot();
        assert_eq!(s.count, 4);
        assert_eq!(h.count(), 4);
        assert_eq!(s.buckets[0], (0.00005, 2));
        assert_eq!(s.buckets[5], (0.0025, 0));
        assert_eq!(s.buckets[6], (0.005, 1));
        assert_eq!(s.buckets[15], (10.0, 0));
        assert_eq!(s.buckets[16], (f64::INFINITY, 1));
        assert!((s.sum - 60.00309).abs() < 1e-9, "{}", s.sum);
    }

    #[test]
    fn quantiles_are_bucket_bounds() {
        let h = Histogram::new();
        assert_eq!(h.snapshot().quantile_bound(0.5), None);
        for _ in 0..9 {
            h.observe(Duration::from_micros(800));
        }
        h.observe(Duration::from_secs(3));
        let s = h.snapshot();
        assert_eq!(s.quantile_bound(0.5), Some(0.001));
        assert_eq!(s.quantile_bound(0.9), Some(0.001));
        assert_eq!(s.quantile_bound(0.99), Some(10.0));
        h.observe(Duration::from_secs(30));
        assert_eq!(h.snapshot().quantile_bound(1.0), Some(f64::INFINITY));
    }
}
