//! The cache's counters: bumped without a lock, read as [`CacheStats`].

use std::sync::atomic::{AtomicU64, Ordering};

/// The counters behind [`CacheStats`], bumped without the lock.
#[derive(Default)]
pub struct Stats {
    /// Members decoded whole.
    pub decoded: AtomicU64,
    /// Their bytes.
    pub decoded_bytes: AtomicU64,
    /// Spans decoded from seek points.
    pub span_fills: AtomicU64,
    /// Their bytes.
    pub span_bytes: AtomicU64,
    /// Complete files of an earlier mount opened again.
    pub reused: AtomicU64,
    /// Members evicted whole.
    pub evicted: AtomicU64,
    /// Spans evicted.
    pub evicted_spans: AtomicU64,
    /// Bytes evicted (members, spans and blocks).
    pub evicted_bytes: AtomicU64,
}

impl Stats {
    /// A member of `size` bytes went through a whole first pass.
    pub fn count_decode(&self, size: u64) {
        self.decoded.fetch_add(1, Ordering::Relaxed);
        self.decoded_bytes.fetch_add(size, Ordering::Relaxed);
    }

    /// The counters now, with the books' `used` and `budget`.
    pub fn read(&self, used: u64, budget: u64) -> CacheStats {
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CacheStats {
            decoded: n(&self.decoded),
            decoded_bytes: n(&self.decoded_bytes),
            span_fills: n(&self.span_fills),
            span_bytes: n(&self.span_bytes),
            reused: n(&self.reused),
            evicted: n(&self.evicted),
            evicted_spans: n(&self.evicted_spans),
            evicted_bytes: n(&self.evicted_bytes),
            used,
            budget,
        }
    }
}

/// What the cache has done so far, and what it holds: the log's summary at unmount, and what
/// tests read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Members decoded whole (a first pass, windowed or not).
    pub decoded: u64,
    /// Their bytes.
    pub decoded_bytes: u64,
    /// Spans decoded from seek points.
    pub span_fills: u64,
    /// Their bytes.
    pub span_bytes: u64,
    /// Complete cache files an earlier mount left, opened again.
    pub reused: u64,
    /// Members evicted whole.
    pub evicted: u64,
    /// Spans evicted.
    pub evicted_spans: u64,
    /// Bytes evicted (members and spans).
    pub evicted_bytes: u64,
    /// Bytes the budget counts now.
    pub used: u64,
    /// The budget.
    pub budget: u64,
}

impl std::fmt::Display for CacheStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "cache: decoded {} members ({} bytes), {} spans from seek points ({} bytes), \
             reused {} from disk, evicted {} members and {} spans ({} bytes); {} of {} bytes \
             in use",
            self.decoded,
            self.decoded_bytes,
            self.span_fills,
            self.span_bytes,
            self.reused,
            self.evicted,
            self.evicted_spans,
            self.evicted_bytes,
            self.used,
            self.budget
        )
    }
}
