//! `npzfs --list [--json] ARCHIVE`: what is in an archive, without mounting it.
//!
//! Per member: name, dtype, shape, compression method, size, compressed size and ratio, as a
//! table for people (sizes in binary units) or as JSON for scripts. A member that is not a
//! valid `.npy` is listed with what is known. Each `.npy` header is read as the mount reads it
//! for xattrs: a deflated member is inflated only for its first bytes.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use serde_json::{Value, json};

use crate::bytes::Archive;
use crate::cache::{Cache, CacheConfig, DEFAULT_CACHE_SIZE};
use crate::error::{Error, Result};
use crate::info::Facts;
use crate::peek;
use crate::remote::{self, Found};
use crate::zipfile::members;

/// Lists the archive at `path` (or a remote one's URL) on `out`.
pub fn run(path: &Path, json: bool, out: &mut dyn Write) -> Result<()> {
    // A remote archive's blocks go to the default cache, where a later mount reuses them.
    let cache = Cache::new(&CacheConfig::with_default_dirs(DEFAULT_CACHE_SIZE));
    let archive = match remote::is_remote(path) {
        true => {
            let url = path.to_string_lossy();
            match remote::find(&url, remote::DEFAULT_TIMEOUT)? {
                Found::Object { object, .. } => {
                    Archive::remote(cache.blocks(Arc::new(object), 0)?)?
                }
                Found::Prefix(at) => {
                    return Err(Error::Remote {
                        url: at.display,
                        cause: "a prefix (a directory of objects), not an .npz object: \
                                --list reads one archive"
                            .into(),
                    });
                }
            }
        }
        false => Archive::open(path)?,
    };
    let listed = list(&archive, json, out);
    cache.close();
    listed
}

fn list(archive: &Archive, json: bool, out: &mut dyn Write) -> Result<()> {
    let members = members::read_members(archive)?;
    let facts: Vec<Facts> = members
        .iter()
        .enumerate()
        .filter(|(_, m)| !m.is_dir)
        .map(|(number, m)| Facts::of(m, peek::npy_header(archive, m, number)))
        .collect();
    let text = if json { to_json(&facts) } else { table(&facts) };
    out.write_all(text.as_bytes())
        .map_err(|e| Error::io("write", "the listing", e))
}

/// One JSON array of objects, one per member.
pub fn to_json(facts: &[Facts]) -> String {
    let rows: Vec<Value> = facts
        .iter()
        .map(|f| {
            let h = f.npy.as_ref();
            json!({
                "name": f.name,
                "dtype": h.map(|h| h.descr.clone()),
                "shape": h.map(|h| h.shape.clone()),
                "fortran_order": h.map(|h| h.fortran_order),
                "method": f.method,
                "size": f.size,
                "compressed_size": f.compressed_size,
                "crc32": format!("{:08x}", f.crc32),
            })
        })
        .collect();
    let mut text = Value::Array(rows).to_string();
    text.push('\n');
    text
}

/// The table for people: a header line and a line per member, columns aligned.
pub fn table(facts: &[Facts]) -> String {
    let header = [
        "name",
        "dtype",
        "shape",
        "method",
        "size",
        "compressed",
        "ratio",
    ];
    let mut rows: Vec<[String; 7]> = vec![header.map(String::from)];
    for f in facts {
        let (dtype, shape) = match &f.npy {
            Some(h) => (h.descr.clone(), h.shape_json()),
            None => ("-".into(), "-".into()),
        };
        let ratio = match f.size {
            0 => "-".to_string(),
            size => format!("{:.0}%", 100.0 * f.compressed_size as f64 / size as f64),
        };
        rows.push([
            f.name.clone(),
            dtype,
            shape,
            f.method.clone(),
            human(f.size),
            human(f.compressed_size),
            ratio,
        ]);
    }
    let widths: Vec<usize> = (0..7)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in &rows {
        let cells: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(c, cell)| match c {
                // Sizes and ratios align right, text left.
                4..=6 => format!("{cell:>w$}", w = widths[c]),
                _ => format!("{cell:<w$}", w = widths[c]),
            })
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// Bytes in binary units: `512 B`, `8.1 KiB`, `1.0 GiB`.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    match unit {
        0 => format!("{bytes} B"),
        _ => format!("{value:.1} {}", UNITS[unit]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_in_binary_units() {
        assert_eq!(human(0), "0 B");
        assert_eq!(human(1023), "1023 B");
        assert_eq!(human(8320), "8.1 KiB");
        assert_eq!(human(1 << 30), "1.0 GiB");
    }

    #[test]
    fn a_member_without_a_header_is_listed_with_what_is_known() {
        let f = Facts {
            name: "notes \"x\".txt".into(),
            method: "stored".into(),
            size: 0,
            compressed_size: 0,
            crc32: 0xab,
            npy: None,
        };
        let json: Value = serde_json::from_str(&to_json(std::slice::from_ref(&f))).unwrap();
        assert_eq!(json[0]["name"], "notes \"x\".txt");
        assert!(json[0]["dtype"].is_null() && json[0]["shape"].is_null());
        assert_eq!(json[0]["crc32"], "000000ab");
        let t = table(&[f]);
        assert!(
            t.lines()
                .nth(1)
                .unwrap()
                .contains("notes \"x\".txt  -      -"),
            "{t}"
        );
    }
}
