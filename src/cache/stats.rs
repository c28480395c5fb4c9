//! The cache's counters: bumped without a lock, read as [`CacheStats`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::slot::Found;

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
    /// Reads of compressed members answered from bytes already decoded.
    pub hits: AtomicU64,
    /// Reads that waited for their bytes to be decoded.
    pub misses: AtomicU64,
    /// Time spent decoding (first passes and spans), in nanoseconds.
    pub decode_ns: AtomicU64,
    /// Stored members copied for passthrough (`-o materialize`).
    pub copied: AtomicU64,
    /// Their bytes.
    pub copied_bytes: AtomicU64,
    /// Time spent copying them, in nanoseconds.
    pub copy_ns: AtomicU64,
}

impl Stats {
    /// A member of `size` bytes went through a whole first pass.
    pub fn count_decode(&self, size: u64) {
        self.decoded.fetch_add(1, Ordering::Relaxed);
        self.decoded_bytes.fetch_add(size, Ordering::Relaxed);
    }

    /// A read found what `found` says: a hit or a miss.
    pub fn count_read(&self, found: &Found) {
        match found {
            Found::Present => self.hits.fetch_add(1, Ordering::Relaxed),
            Found::Waits(_) => self.misses.fetch_add(1, Ordering::Relaxed),
            Found::Failed => 0,
        };
    }

    /// Decoding took `took` (a first pass or a span).
    pub fn count_decode_time(&self, took: Duration) {
        self.decode_ns.fetch_add(nanos(took), Ordering::Relaxed);
    }

    /// A copy of `size` bytes for passthrough took `took`.
    pub fn count_copy(&self, size: u64, took: Duration) {
        self.copied.fetch_add(1, Ordering::Relaxed);
        self.copied_bytes.fetch_add(size, Ordering::Relaxed);
        self.copy_ns.fetch_add(nanos(took), Ordering::Relaxed);
    }

    /// The counters now, with the books' figures.
    pub fn read(&self, held: Held) -> CacheStats {
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let secs = |c: &AtomicU64| n(c) as f64 / 1e9;
        CacheStats {
            decoded: n(&self.decoded),
            decoded_bytes: n(&self.decoded_bytes),
            span_fills: n(&self.span_fills),
            span_bytes: n(&self.span_bytes),
            reused: n(&self.reused),
            evicted: n(&self.evicted),
            evicted_spans: n(&self.evicted_spans),
            evicted_bytes: n(&self.evicted_bytes),
            hits: n(&self.hits),
            misses: n(&self.misses),
            decode_seconds: secs(&self.decode_ns),
            copied: n(&self.copied),
            copied_bytes: n(&self.copied_bytes),
            copy_seconds: secs(&self.copy_ns),
            held,
        }
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// What the books hold now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Held {
    /// The budget.
    pub budget: u64,
    /// Bytes the budget counts now.
    pub used: u64,
    /// Members with an open cache file (held open, or decoding).
    pub live: u64,
    /// Of those, members held open by a handle.
    pub pinned: u64,
    /// Complete files no one holds, kept for reuse.
    pub kept: u64,
    /// Spans of sparse members present.
    pub spans: u64,
    /// Blocks of remote archives present.
    pub blocks: u64,
}

/// What the cache has done so far, and what it holds: the log's summary at unmount, the
/// metrics, and what tests read.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
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
    /// Bytes evicted (members, spans and blocks).
    pub evicted_bytes: u64,
    /// Reads of compressed members answered from bytes already decoded.
    pub hits: u64,
    /// Reads that waited for their bytes to be decoded.
    pub misses: u64,
    /// Seconds spent decoding (first passes and spans).
    pub decode_seconds: f64,
    /// Stored members copied for passthrough (`-o materialize`).
    pub copied: u64,
    /// Their bytes.
    pub copied_bytes: u64,
    /// Seconds spent copying them.
    pub copy_seconds: f64,
    /// What the books hold now.
    pub held: Held,
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
            self.held.used,
            self.held.budget
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_decodes_and_copies_are_counted() {
        let s = Stats::default();
        s.count_read(&Found::Present);
        s.count_read(&Found::Present);
        s.count_read(&Found::Waits(vec![3]));
        s.count_read(&Found::Failed);
        s.count_decode(1000);
        s.count_decode_time(Duration::from_millis(1500));
        s.count_copy(4096, Duration::from_millis(250));
        let held = Held {
            budget: 10,
            used: 4,
            ..Held::default()
        };
        let got = s.read(held);
        assert_eq!((got.hits, got.misses), (2, 1));
        assert_eq!((got.decoded, got.decoded_bytes), (1, 1000));
        assert_eq!((got.copied, got.copied_bytes), (1, 4096));
        assert!((got.decode_seconds - 1.5).abs() < 1e-9);
        assert!((got.copy_seconds - 0.25).abs() < 1e-9);
        assert_eq!(got.held, held);
        assert!(got.to_string().ends_with("4 of 10 bytes in use"), "{got}");
    }
}
