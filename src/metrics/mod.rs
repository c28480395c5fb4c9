//! The daemon's counters, at the bottom of the layers so that every layer can count: plain
//! atomics and lock-free histograms in one process-wide static ([`METRICS`]). Reading them
//! (a snapshot, the Prometheus text, `npzfs --stats`) is `stats/`'s.
//!
//! * [`histogram`]: a latency histogram of fixed buckets, two atomic adds per observation.
//! * [`registry`]: [`METRICS`] and the small fixed label sets (operations, errnos, paths,
//!   request kinds and outcomes, warnings).

pub mod histogram;
pub mod registry;

pub use histogram::{BOUNDS, Histogram, HistogramSnapshot};
pub use registry::{ERRNOS, Kind, METRICS, Metrics, Op, Path, Status, Warning, errno_name, often};
