//! Every figure of a mount at one moment: the process's counters (`metrics`), the cache's, and
//! what is open. One model for all three views: the Prometheus text (`openmetrics.rs`), the
//! JSON of the root's `user.npzfs.stats` (here) and `npzfs --stats` (`table.rs`).

use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Map, Value, json};

use crate::cache::CacheStats;
use crate::metrics::{ERRNOS, HistogramSnapshot, Kind, METRICS, Op, Path, Status, Warning};

/// The root's extended attribute that holds the figures as JSON.
pub const XATTR: &str = "user.npzfs.stats";

/// One FUSE operation's figures.
#[derive(Clone, Debug)]
pub struct OpFigures {
    pub op: Op,
    pub requests: u64,
    /// (errno name, count), nonzero only.
    pub errors: Vec<(&'static str, u64)>,
    pub latency: HistogramSnapshot,
}

/// One request kind's figures at the object store.
#[derive(Clone, Debug)]
pub struct KindFigures {
    pub kind: Kind,
    /// (status, count), nonzero only.
    pub requests: Vec<(Status, u64)>,
    pub first_byte: HistogramSnapshot,
    pub duration: HistogramSnapshot,
}

/// Every figure, read at one moment.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// Every operation, in label order.
    pub fuse: Vec<OpFigures>,
    /// (path, opens, bytes read), every path.
    pub served: Vec<(Path, u64, u64)>,
    /// None when nothing mounted can use the cache.
    pub cache: Option<CacheStats>,
    /// Every request kind, in label order.
    pub remote: Vec<KindFigures>,
    pub remote_bytes: u64,
    pub remote_retries: u64,
    pub remote_in_flight: i64,
    pub archives_open: u64,
    pub archives_opened: u64,
    pub archives_closed: u64,
    /// (cause, count), every cause.
    pub warnings: Vec<(Warning, u64)>,
}

fn n(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

impl Snapshot {
    /// The figures now: the process's counters with the cache's and the open archives.
    pub fn take(cache: Option<CacheStats>, archives_open: u64) -> Snapshot {
        let m = &METRICS;
        let fuse = Op::ALL
            .iter()
            .map(|&op| {
                let i = op as usize;
                let names = ERRNOS.iter().map(|(_, name)| *name).chain(["other"]);
                OpFigures {
                    op,
                    requests: n(&m.fuse.requests[i]),
                    errors: names
                        .zip(&m.fuse.errors[i])
                        .map(|(name, c)| (name, n(c)))
                        .filter(|(_, c)| *c > 0)
                        .collect(),
                    latency: m.fuse.latency[i].snapshot(),
                }
            })
            .collect();
        let served = Path::ALL
            .iter()
            .map(|&p| {
                let i = p as usize;
                (p, n(&m.served.opens[i]), n(&m.served.bytes[i]))
            })
            .collect();
        let remote = Kind::ALL
            .iter()
            .map(|&kind| {
                let i = kind as usize;
                KindFigures {
                    kind,
                    requests: Status::ALL
                        .iter()
                        .zip(&m.remote.requests[i])
                        .map(|(s, c)| (*s, n(c)))
                        .filter(|(_, c)| *c > 0)
                        .collect(),
                    first_byte: m.remote.first_byte[i].snapshot(),
                    duration: m.remote.duration[i].snapshot(),
                }
            })
            .collect();
        Snapshot {
            fuse,
            served,
            cache,
            remote,
            remote_bytes: n(&m.remote.bytes),
            remote_retries: n(&m.remote.retries),
            remote_in_flight: m.remote.in_flight.load(Ordering::Relaxed),
            archives_open,
            archives_opened: n(&m.sources.archives_opened),
            archives_closed: n(&m.sources.archives_closed),
            warnings: Warning::ALL
                .iter()
                .map(|&w| (w, n(&m.warnings[w as usize])))
                .collect(),
        }
    }

    /// The figures as JSON (the value of the root's `user.npzfs.stats`): what was used only,
    /// latencies as count, sum and bucket bounds of the median, p90 and p99, so that it stays
    /// far below the 64 KiB an extended attribute may hold.
    pub fn to_json(&self) -> Value {
        let fuse: Map<String, Value> = self
            .fuse
            .iter()
            .filter(|f| f.requests > 0)
            .map(|f| {
                let errors: Map<String, Value> = f
                    .errors
                    .iter()
                    .map(|(e, c)| (e.to_string(), json!(c)))
                    .collect();
                let figures = json!({
                    "requests": f.requests,
                    "errors": errors,
                    "seconds": latency(&f.latency),
                });
                (f.op.name().to_string(), figures)
            })
            .collect();
        let served: Map<String, Value> = self
            .served
            .iter()
            .map(|(p, opens, bytes)| (p.name().into(), json!({"opens": opens, "bytes": bytes})))
            .collect();
        let used: Vec<&KindFigures> = self
            .remote
            .iter()
            .filter(|k| !k.requests.is_empty())
            .collect();
        let requests: Map<String, Value> = used
            .iter()
            .map(|k| {
                let by: Map<String, Value> = k
                    .requests
                    .iter()
                    .map(|(s, c)| (s.name().into(), json!(c)))
                    .collect();
                (k.kind.name().into(), Value::Object(by))
            })
            .collect();
        let seconds = |pick: fn(&KindFigures) -> &HistogramSnapshot| -> Map<String, Value> {
            used.iter()
                .map(|k| (k.kind.name().into(), latency(pick(k))))
                .collect()
        };
        let warnings: Map<String, Value> = self
            .warnings
            .iter()
            .map(|(w, c)| (w.name().into(), json!(c)))
            .collect();
        json!({
            "version": env!("CARGO_PKG_VERSION"),
            "fuse": fuse,
            "read": served,
            "cache": self.cache.as_ref().map(cache_json),
            "remote": {
                "requests": requests,
                "bytes": self.remote_bytes,
                "retries": self.remote_retries,
                "in_flight": self.remote_in_flight,
                "first_byte_seconds": seconds(|k| &k.first_byte),
                "request_seconds": seconds(|k| &k.duration),
            },
            "sources": {
                "archives_open": self.archives_open,
                "archives_opened": self.archives_opened,
                "archives_closed": self.archives_closed,
            },
            "warnings": warnings,
        })
    }
}

/// A latency histogram in a few numbers: quantiles are the bucket bounds they fall under
/// (null past the last bound).
fn latency(h: &HistogramSnapshot) -> Value {
    let q = |q: f64| h.quantile_bound(q).filter(|b| b.is_finite());
    json!({
        "count": h.count,
        "sum": h.sum,
        "p50": q(0.5),
        "p90": q(0.9),
        "p99": q(0.99),
    })
}

fn cache_json(c: &CacheStats) -> Value {
    let h = &c.held;
    json!({
        "budget_bytes": h.budget,
        "used_bytes": h.used,
        "members_live": h.live,
        "members_pinned": h.pinned,
        "members_kept": h.kept,
        "spans": h.spans,
        "blocks": h.blocks,
        "hits": c.hits,
        "misses": c.misses,
        "decoded_members": c.decoded,
        "decoded_bytes": c.decoded_bytes,
        "span_fills": c.span_fills,
        "span_bytes": c.span_bytes,
        "decode_seconds": c.decode_seconds,
        "copied_members": c.copied,
        "copied_bytes": c.copied_bytes,
        "copy_seconds": c.copy_seconds,
        "reused": c.reused,
        "evicted_members": c.evicted,
        "evicted_spans": c.evicted_spans,
        "evicted_bytes": c.evicted_bytes,
    })
}
