//! A snapshot in the Prometheus (OpenMetrics) text format, through the `prometheus-client`
//! crate's encoder: the names follow Prometheus's conventions (`npzfs_` prefix, `_total`
//! counters, `_bytes` and `_seconds` units, labels of small fixed sets). The counters live in
//! plain atomics (`metrics`), so the crate's registry only encodes: one collector that writes
//! the snapshot taken for this scrape.

use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, NoLabelSet, text};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use super::snapshot::Snapshot;
use crate::metrics::HistogramSnapshot;

/// The content type of [`encode`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// `snapshot` as OpenMetrics text, `# EOF` last.
pub fn encode(snapshot: Snapshot) -> String {
    let mut registry = Registry::with_prefix("npzfs");
    registry.register_collector(Box::new(Collector(snapshot)));
    let mut out = String::new();
    // Writing to a String does not fail; an encoder error would be a bug of ours (a name).
    if let Err(e) = text::encode(&mut out, &registry) {
        log::error!("cannot encode the metrics: {e}");
        out.clear();
    }
    out
}

#[derive(Debug)]
struct Collector(Snapshot);

type Fmt = Result<(), std::fmt::Error>;

/// One family: its name, help, unit and type, then each (labels, value).
struct Family<'a, 'e> {
    encoder: &'a mut DescriptorEncoder<'e>,
}

impl Family<'_, '_> {
    fn counter<L: EncodeLabelSet>(
        &mut self,
        (name, help, unit): (&str, &str, Option<Unit>),
        values: impl IntoIterator<Item = (L, u64)>,
    ) -> Fmt {
        let mut m =
            self.encoder
                .encode_descriptor(name, help, unit.as_ref(), MetricType::Counter)?;
        for (labels, v) in values {
            m.encode_family(&labels)?
                .encode_counter::<NoLabelSet, _, u64>(&v, None)?;
        }
        Ok(())
    }

    fn seconds_total(&mut self, name: &str, help: &str, v: f64) -> Fmt {
        let mut m = self.encoder.encode_descriptor(
            name,
            help,
            Some(&Unit::Seconds),
            MetricType::Counter,
        )?;
        m.encode_counter::<NoLabelSet, _, u64>(&v, None)
    }

    fn gauge<L: EncodeLabelSet>(
        &mut self,
        (name, help, unit): (&str, &str, Option<Unit>),
        values: impl IntoIterator<Item = (L, i64)>,
    ) -> Fmt {
        let mut m = self
            .encoder
            .encode_descriptor(name, help, unit.as_ref(), MetricType::Gauge)?;
        for (labels, v) in values {
            m.encode_family(&labels)?.encode_gauge(&v)?;
        }
        Ok(())
    }

    fn histograms<'h, L: EncodeLabelSet>(
        &mut self,
        name: &str,
        help: &str,
        values: impl IntoIterator<Item = (L, &'h HistogramSnapshot)>,
    ) -> Fmt {
        let mut m = self.encoder.encode_descriptor(
            name,
            help,
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        for (labels, h) in values {
            m.encode_family(&labels)?
                .encode_histogram::<NoLabelSet>(h.sum, h.count, &h.buckets, None)?;
        }
        Ok(())
    }
}

/// No labels.
const ONE: [(&str, &str); 0] = [];

fn gauge(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl prometheus_client::collector::Collector for Collector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Fmt {
        let s = &self.0;
        let mut f = Family {
            encoder: &mut encoder,
        };
        {
            let mut m = f.encoder.encode_descriptor(
                "build",
                "The npzfs that serves this mount.",
                None,
                MetricType::Info,
            )?;
            m.encode_info(&[("version", env!("CARGO_PKG_VERSION"))])?;
        }
        // FUSE requests.
        f.counter(
            (
                "fuse_requests",
                "FUSE requests answered, by operation.",
                None,
            ),
            s.fuse.iter().map(|o| ([("op", o.op.name())], o.requests)),
        )?;
        f.counter(
            (
                "fuse_errors",
                "FUSE requests answered with an error, by operation and errno.",
                None,
            ),
            s.fuse.iter().flat_map(|o| {
                o.errors
                    .iter()
                    .map(|(e, c)| ([("op", o.op.name()), ("errno", *e)], *c))
            }),
        )?;
        f.histograms(
            "fuse_request_duration",
            "From a FUSE request's arrival to its answer, by operation (used ones).",
            s.fuse
                .iter()
                .filter(|o| o.requests > 0)
                .map(|o| ([("op", o.op.name())], &o.latency)),
        )?;
        // What serves the bytes.
        f.counter(
            ("opens", "Files opened, by the path that serves them.", None),
            s.served
                .iter()
                .map(|(p, opens, _)| ([("path", p.name())], *opens)),
        )?;
        f.counter(
            (
                "read",
                "Bytes answered to reads, by the path that serves them (passthrough reads \
                 never reach the daemon).",
                Some(Unit::Bytes),
            ),
            s.served
                .iter()
                .filter(|(p, _, _)| *p != crate::metrics::Path::Passthrough)
                .map(|(p, _, bytes)| ([("path", p.name())], *bytes)),
        )?;
        // The cache.
        if let Some(c) = &s.cache {
            let h = &c.held;
            f.gauge(
                (
                    "cache_budget",
                    "The cache's budget (cache_size).",
                    Some(Unit::Bytes),
                ),
                [(ONE, gauge(h.budget))],
            )?;
            f.gauge(
                (
                    "cache_used",
                    "Bytes the cache's budget counts now.",
                    Some(Unit::Bytes),
                ),
                [(ONE, gauge(h.used))],
            )?;
            f.gauge(
                (
                    "cache_members",
                    "Members in the cache: live (an open cache file), pinned (of those, held \
                     open), kept (complete, no one holds them).",
                    None,
                ),
                [
                    ([("state", "live")], gauge(h.live)),
                    ([("state", "pinned")], gauge(h.pinned)),
                    ([("state", "kept")], gauge(h.kept)),
                ],
            )?;
            f.gauge(
                ("cache_spans", "Spans of sparse members in the cache.", None),
                [(ONE, gauge(h.spans))],
            )?;
            f.gauge(
                (
                    "cache_blocks",
                    "1 MiB blocks of remote archives on local disk.",
                    None,
                ),
                [(ONE, gauge(h.blocks))],
            )?;
            f.counter(
                (
                    "cache_hits",
                    "Reads of compressed members answered from decoded bytes.",
                    None,
                ),
                [(ONE, c.hits)],
            )?;
            f.counter(
                (
                    "cache_misses",
                    "Reads that waited for their bytes to be decoded.",
                    None,
                ),
                [(ONE, c.misses)],
            )?;
            f.counter(
                ("cache_evictions", "Members and spans evicted.", None),
                [
                    ([("what", "member")], c.evicted),
                    ([("what", "span")], c.evicted_spans),
                ],
            )?;
            f.counter(
                (
                    "cache_evicted",
                    "Bytes evicted (members, spans and blocks).",
                    Some(Unit::Bytes),
                ),
                [(ONE, c.evicted_bytes)],
            )?;
            f.counter(
                (
                    "cache_decoded",
                    "Bytes decoded: whole members, and spans.",
                    Some(Unit::Bytes),
                ),
                [
                    ([("how", "whole")], c.decoded_bytes),
                    ([("how", "span")], c.span_bytes),
                ],
            )?;
            f.counter(
                (
                    "cache_seek_restarts",
                    "Spans decoded from a seek point.",
                    None,
                ),
                [(ONE, c.span_fills)],
            )?;
            f.counter(
                (
                    "cache_reused",
                    "Complete cache files of an earlier mount opened again.",
                    None,
                ),
                [(ONE, c.reused)],
            )?;
            f.seconds_total("cache_decode", "Time spent decoding.", c.decode_seconds)?;
            f.counter(
                (
                    "cache_copied",
                    "Bytes of stored members copied for passthrough.",
                    Some(Unit::Bytes),
                ),
                [(ONE, c.copied_bytes)],
            )?;
            f.seconds_total(
                "cache_copy",
                "Time spent copying stored members.",
                c.copy_seconds,
            )?;
        }
        // Object stores.
        f.counter(
            (
                "remote_requests",
                "HTTP requests to object stores (each attempt), by kind and outcome.",
                None,
            ),
            s.remote.iter().flat_map(|k| {
                k.requests
                    .iter()
                    .map(|(st, c)| ([("kind", k.kind.name()), ("status", st.name())], *c))
            }),
        )?;
        f.counter(
            (
                "remote_received",
                "Body bytes received from object stores.",
                Some(Unit::Bytes),
            ),
            [(ONE, s.remote_bytes)],
        )?;
        f.counter(
            (
                "remote_retries",
                "Requests that failed in a way the client retries (503, cut, timeout).",
                None,
            ),
            [(ONE, s.remote_retries)],
        )?;
        f.gauge(
            (
                "remote_requests_in_flight",
                "Requests sent whose body is not in yet.",
                None,
            ),
            [(ONE, s.remote_in_flight)],
        )?;
        let used = || s.remote.iter().filter(|k| !k.requests.is_empty());
        f.histograms(
            "remote_first_byte",
            "From sending a request to its answer's headers, by kind.",
            used().map(|k| ([("kind", k.kind.name())], &k.first_byte)),
        )?;
        f.histograms(
            "remote_request_duration",
            "From sending a request to the end of its body, by kind.",
            used().map(|k| ([("kind", k.kind.name())], &k.duration)),
        )?;
        // Directory sources and warnings.
        f.gauge(
            ("archives_open", "Archives open now.", None),
            [(ONE, gauge(s.archives_open))],
        )?;
        f.counter(
            ("archives_opened", "Archives of source trees opened.", None),
            [(ONE, s.archives_opened)],
        )?;
        f.counter(
            (
                "archives_closed",
                "Archives of source trees closed by the LRU (max_archives).",
                None,
            ),
            [(ONE, s.archives_closed)],
        )?;
        f.counter(
            (
                "warnings",
                "Warnings that can repeat, by cause (each logged once per power of ten).",
                None,
            ),
            s.warnings.iter().map(|(w, c)| ([("cause", w.name())], *c)),
        )
    }
}
