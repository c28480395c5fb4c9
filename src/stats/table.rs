//! `npzfs --stats [--json] MOUNTPOINT`: the mount's figures, read from the mount itself (the
//! root's `user.npzfs.stats`, JSON), printed as a short table or passed on as JSON. No port,
//! no daemon socket: whoever can see the mount can ask it.

use std::io::Write;
use std::path::Path;

use serde_json::Value;

use super::snapshot::XATTR;
use crate::error::{Error, Result, cause};
use crate::list::human;

/// Prints the figures of the mount at `mountpoint` to `out`: as JSON, or as a table.
pub fn run(mountpoint: &Path, json: bool, out: &mut impl Write) -> Result<()> {
    let figures = read(mountpoint)?;
    let text = match json {
        true => format!("{figures:#}\n"),
        false => table(&figures),
    };
    out.write_all(text.as_bytes())
        .map_err(|e| Error::io("write", "the figures", e))
}

/// The figures of the mount at `mountpoint`.
pub fn read(mountpoint: &Path) -> Result<Value> {
    let not_ours = |cause: String| Error::Mountpoint {
        path: mountpoint.to_path_buf(),
        cause,
    };
    // 64 KiB: the most an extended attribute may hold.
    let mut buf = vec![0u8; 1 << 16];
    let n = match rustix::fs::getxattr(mountpoint, XATTR, &mut buf) {
        Ok(n) => n,
        Err(rustix::io::Errno::NODATA | rustix::io::Errno::NOTSUP) => {
            return Err(not_ours("not an npzfs mount".into()));
        }
        Err(e) => return Err(not_ours(cause(&std::io::Error::from(e)))),
    };
    serde_json::from_slice(&buf[..n]).map_err(|e| not_ours(format!("unreadable figures: {e}")))
}

/// The figures in a few lines: the cache, bytes by path, remote requests, FUSE requests.
pub fn table(v: &Value) -> String {
    let u = |v: &Value| v.as_u64().unwrap_or(0);
    let mut lines = vec![format!(
        "npzfs {}",
        v["version"].as_str().unwrap_or("(unknown version)")
    )];
    let mut row = |label: &str, text: String| lines.push(format!("{label:<9}{text}"));
    let c = &v["cache"];
    if c.is_object() {
        let (used, budget) = (u(&c["used_bytes"]), u(&c["budget_bytes"]));
        row(
            "cache",
            format!(
                "{} of {} used ({}); members {} live ({} open), {} kept; {} spans, {} blocks",
                human(used),
                human(budget),
                percent(used, budget),
                u(&c["members_live"]),
                u(&c["members_pinned"]),
                u(&c["members_kept"]),
                u(&c["spans"]),
                u(&c["blocks"]),
            ),
        );
        let (hits, misses) = (u(&c["hits"]), u(&c["misses"]));
        row(
            "",
            format!(
                "reads {} hit, {} missed ({} hit); decoded {} in {:.1} s, {} spans from seek \
                 points; evicted {} members, {} spans ({})",
                hits,
                misses,
                percent(hits, hits + misses),
                human(u(&c["decoded_bytes"]) + u(&c["span_bytes"])),
                c["decode_seconds"].as_f64().unwrap_or(0.0),
                u(&c["span_fills"]),
                u(&c["evicted_members"]),
                u(&c["evicted_spans"]),
                human(u(&c["evicted_bytes"])),
            ),
        );
    }
    let read: Vec<String> = ["archive", "cache", "passthrough", "source"]
        .iter()
        .filter(|p| u(&v["read"][p]["opens"]) > 0)
        .map(|p| {
            let r = &v["read"][p];
            match *p {
                "passthrough" => format!("{p} {} opens", u(&r["opens"])),
                _ => format!("{p} {} ({} opens)", human(u(&r["bytes"])), u(&r["opens"])),
            }
        })
        .collect();
    row("read", nothing_or(read.join(", ")));
    let r = &v["remote"];
    let by_kind = r["requests"].as_object().cloned().unwrap_or_default();
    if !by_kind.is_empty() {
        let total: u64 = by_kind
            .values()
            .flat_map(|k| k.as_object().into_iter().flat_map(|m| m.values()))
            .map(u)
            .sum();
        let kinds: Vec<String> = by_kind
            .iter()
            .map(|(kind, statuses)| {
                let s: Vec<String> = statuses
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(st, n)| format!("{} {st}", u(n)))
                    .collect();
                format!("{kind}: {}", s.join(", "))
            })
            .collect();
        row(
            "remote",
            format!(
                "{total} requests ({}), {} received, {} retried, {} in flight",
                kinds.join("; "),
                human(u(&r["bytes"])),
                u(&r["retries"]),
                u(&r["in_flight"]),
            ),
        );
        if let Some(get) = r["first_byte_seconds"]["get"].as_object() {
            row(
                "",
                format!(
                    "GET first byte {}, whole request {}",
                    quantiles(&Value::Object(get.clone())),
                    quantiles(&r["request_seconds"]["get"])
                ),
            );
        }
    }
    let fuse = v["fuse"].as_object().cloned().unwrap_or_default();
    let ops: Vec<String> = fuse
        .iter()
        .map(|(op, f)| format!("{op} {}", u(&f["requests"])))
        .collect();
    row("fuse", nothing_or(ops.join(", ")));
    if let Some(read) = fuse.get("read") {
        row("", format!("read {}", quantiles(&read["seconds"])));
    }
    let errors: Vec<String> = fuse
        .iter()
        .flat_map(|(op, f)| {
            f["errors"]
                .as_object()
                .into_iter()
                .flatten()
                .map(move |(e, n)| format!("{op} {e} {}", u(n)))
        })
        .collect();
    if !errors.is_empty() {
        row("errors", errors.join(", "));
    }
    let s = &v["sources"];
    if u(&s["archives_opened"]) > 0 {
        row(
            "archives",
            format!(
                "{} open; {} opened, {} closed by the LRU",
                u(&s["archives_open"]),
                u(&s["archives_opened"]),
                u(&s["archives_closed"])
            ),
        );
    }
    let mut text = lines.join("\n");
    text.push('\n');
    text
}

fn nothing_or(s: String) -> String {
    match s.is_empty() {
        true => "nothing yet".into(),
        false => s,
    }
}

fn percent(part: u64, whole: u64) -> String {
    match whole {
        0 => "-".into(),
        _ => format!("{:.1}%", part as f64 * 100.0 / whole as f64),
    }
}

/// `p50 <= 1 ms, p99 <= 25 ms` from a latency's bucket bounds.
fn quantiles(l: &Value) -> String {
    let bound = |q: &str| match l[q].as_f64() {
        Some(s) if s < 1.0 => format!("<= {} ms", s * 1000.0),
        Some(s) => format!("<= {s} s"),
        None => "> 10 s".into(),
    };
    match l["count"].as_u64() {
        Some(n) if n > 0 => format!("p50 {}, p99 {} ({n})", bound("p50"), bound("p99")),
        _ => "-".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::CacheStats;
    use crate::stats::Snapshot;

    #[test]
    fn a_snapshot_reads_as_a_table() {
        let mut cache = CacheStats {
            hits: 3,
            misses: 1,
            ..CacheStats::default()
        };
        cache.held.budget = 1 << 30;
        cache.held.used = 1 << 28;
        let json = Snapshot::take(Some(cache), 1).to_json();
        let text = table(&json);
        assert!(text.starts_with("npzfs "), "{text}");
        assert!(text.contains("256.0 MiB of 1.0 GiB used (25.0%)"), "{text}");
        assert!(text.contains("reads 3 hit, 1 missed (75.0% hit)"), "{text}");
        assert!(text.len() < 2000, "{text}");
    }

    #[test]
    fn quantiles_read_in_milliseconds() {
        let l = serde_json::json!({"count": 4, "p50": 0.001, "p99": 2.5});
        assert_eq!(quantiles(&l), "p50 <= 1 ms, p99 <= 2.5 s (4)");
        let none = serde_json::json!({"count": 0});
        assert_eq!(quantiles(&none), "-");
    }
}
