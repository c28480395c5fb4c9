//! The mount's figures through real mounts: every counter moved by exactly what was done
//! (bytes by path, opens, hits and misses, FUSE requests and their errors), read back the
//! three ways a user reads them (the root's `user.npzfs.stats`, `npzfs --stats [--json]`, and
//! the Prometheus text at `-o metrics=`), and a failure that repeats on every read logged at
//! its 1st and 10th time only. (A real Prometheus server scraping a mount:
//! tests/python/test_prometheus.py.)

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use common::mount::{Mounted, fuse_or_skip, getxattr, npzfs};
use common::{Entry, compressible, pattern, write_zip};
use serde_json::Value;

const MIB: usize = 1 << 20;

/// The mount's figures, from its root.
fn figures(mnt: &Path) -> Value {
    serde_json::from_slice(&getxattr(mnt, "user.npzfs.stats", 1 << 16).unwrap()).unwrap()
}

fn n(v: &Value, path: &[&str]) -> u64 {
    path.iter()
        .fold(v, |v, k| &v[k])
        .as_u64()
        .unwrap_or_else(|| panic!("no number at {path:?} in {v}"))
}

/// Drops `path`'s pages from the page cache, so that its next read reaches the daemon.
fn drop_pages(path: &Path) {
    let f = std::fs::File::open(path).unwrap();
    // SAFETY: fadvise on a descriptor we own.
    let r = unsafe {
        libc::posix_fadvise(
            std::os::fd::AsRawFd::as_raw_fd(&f),
            0,
            0,
            libc::POSIX_FADV_DONTNEED,
        )
    };
    assert_eq!(r, 0);
}

#[test]
fn every_counter_moves_by_what_was_read() {
    if !fuse_or_skip("every_counter_moves_by_what_was_read") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("a.npz");
    let (stored, deflated) = (pattern(3, 0, 3 * MIB + 5), compressible(4, 32 * MIB + 7));
    write_zip(
        &archive,
        b"",
        &[
            Entry::stored("s.npy", stored.clone()),
            Entry::deflated("d.npy", deflated.clone()),
        ],
    );
    let cache = format!("cache_dir={}", dir.path().join("cache").display());
    let m = Mounted::background(&archive, &["-o", &cache, "-o", "nopassthrough"]);
    let before = figures(&m.mnt);
    assert_eq!(n(&before, &["read", "archive", "bytes"]), 0);
    assert_eq!(std::fs::read(m.path("s.npy")).unwrap(), stored);
    assert_eq!(std::fs::read(m.path("d.npy")).unwrap(), deflated);
    let first = figures(&m.mnt);
    // The kernel reads each file once, whole: bytes by path are the files' sizes.
    assert_eq!(
        n(&first, &["read", "archive", "bytes"]),
        stored.len() as u64
    );
    assert_eq!(
        n(&first, &["read", "cache", "bytes"]),
        deflated.len() as u64
    );
    assert_eq!(n(&first, &["read", "archive", "opens"]), 1);
    assert_eq!(n(&first, &["read", "cache", "opens"]), 1);
    assert_eq!(
        n(&first, &["cache", "decoded_bytes"]),
        deflated.len() as u64
    );
    assert_eq!(n(&first, &["cache", "used_bytes"]), deflated.len() as u64);
    // Whether a read found its range decoded (a hit) or waited for it (a miss) is a race
    // with the decoder; together they count every read of the decoded member.
    let cache_reads = n(&first, &["cache", "hits"]) + n(&first, &["cache", "misses"]);
    assert!(cache_reads > 0, "{first}");
    assert!(n(&first, &["fuse", "read", "requests"]) > cache_reads);
    // Read again with its pages dropped: every read of the decoded member is a hit.
    drop_pages(&m.path("d.npy"));
    assert_eq!(std::fs::read(m.path("d.npy")).unwrap(), deflated);
    let second = figures(&m.mnt);
    let reads =
        n(&second, &["fuse", "read", "requests"]) - n(&first, &["fuse", "read", "requests"]);
    assert!(reads > 0);
    assert_eq!(
        n(&second, &["cache", "hits"]) - n(&first, &["cache", "hits"]),
        reads,
        "{second}"
    );
    assert_eq!(
        n(&second, &["cache", "misses"]),
        n(&first, &["cache", "misses"])
    );
    assert_eq!(
        n(&second, &["read", "cache", "bytes"]),
        2 * deflated.len() as u64
    );
    // A name that is not there: one lookup answered ENOENT, counted.
    assert!(std::fs::metadata(m.path("nothing.npy")).is_err());
    let third = figures(&m.mnt);
    assert_eq!(n(&third, &["fuse", "lookup", "errors", "ENOENT"]), 1);
    assert!(n(&third, &["fuse", "read", "seconds", "count"]) >= reads);
}

#[test]
fn stats_prints_a_table_or_json_from_the_mount_itself() {
    if !fuse_or_skip("stats_prints_a_table_or_json_from_the_mount_itself") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("a.npz");
    let data = pattern(5, 0, MIB);
    write_zip(&archive, b"", &[Entry::stored("s.npy", data.clone())]);
    let m = Mounted::background(&archive, &[]);
    assert_eq!(std::fs::read(m.path("s.npy")).unwrap(), data);
    let mnt = m.mnt.to_str().unwrap();
    let table = npzfs(&["--stats", mnt]);
    assert!(table.status.success());
    let text = String::from_utf8(table.stdout).unwrap();
    assert!(text.starts_with("npzfs "), "{text}");
    assert!(text.contains("archive 1.0 MiB (1 opens)"), "{text}");
    assert!(text.lines().count() < 12, "a short table:\n{text}");
    let json = npzfs(&["--stats", "--json", mnt]);
    assert!(json.status.success());
    let v: Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(n(&v, &["read", "archive", "bytes"]), MIB as u64);
    // The root lists it among its attributes; a member does not.
    let listed = getxattr(&m.mnt, "user.npzfs.stats", 0).unwrap();
    assert!(!listed.is_empty());
    assert_eq!(
        getxattr(&m.path("s.npy"), "user.npzfs.stats", 64),
        Err(libc::ENODATA)
    );
    // Anything but an npzfs mount: one line, the mount point's exit code.
    let elsewhere = npzfs(&["--stats", dir.path().to_str().unwrap()]);
    assert_eq!(elsewhere.status.code(), Some(5));
    let err = String::from_utf8_lossy(&elsewhere.stderr);
    assert!(err.contains("not an npzfs mount"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

/// `GET path` from `addr`: the status line and the body.
fn http_get(addr: &str, path: &str) -> (String, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_string(), body.to_string())
}

/// A free port on the loopback address (free when asked; the mount binds it next).
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[test]
fn metrics_serves_prometheus_text_and_a_taken_port_fails_the_mount() {
    if !fuse_or_skip("metrics_serves_prometheus_text") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("a.npz");
    let data = pattern(6, 0, 2 * MIB);
    write_zip(&archive, b"", &[Entry::stored("s.npy", data.clone())]);
    let addr = format!("127.0.0.1:{}", free_port());
    let m = Mounted::background(&archive, &["-o", &format!("metrics={addr}")]);
    assert_eq!(std::fs::read(m.path("s.npy")).unwrap(), data);
    let (status, body) = http_get(&addr, "/metrics");
    assert!(status.contains("200"), "{status}");
    let line = format!("npzfs_read_bytes_total{{path=\"archive\"}} {}", 2 * MIB);
    assert!(body.lines().any(|l| l == line), "no {line:?} in\n{body}");
    assert!(body.contains("npzfs_build_info{version=\""), "{body}");
    assert!(body.contains("# TYPE npzfs_fuse_request_duration_seconds histogram"));
    assert!(body.contains("npzfs_fuse_request_duration_seconds_bucket{le=\"+Inf\",op=\"read\"}"));
    assert!(body.trim_end().ends_with("# EOF"), "{body}");
    assert!(http_get(&addr, "/nothing").0.contains("404"));
    // The same address again: the second mount fails at once, with one line and exit 10.
    let other = dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    let taken = npzfs(&[
        archive.to_str().unwrap(),
        other.to_str().unwrap(),
        "-o",
        &format!("metrics={addr}"),
    ]);
    assert_eq!(taken.status.code(), Some(10));
    let err = String::from_utf8_lossy(&taken.stderr);
    assert!(
        err.contains(&format!("cannot serve metrics at {addr}")),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(!common::mount::is_mounted(&other));
}

#[test]
fn a_failure_on_every_read_is_logged_at_its_first_and_tenth_time() {
    if !fuse_or_skip("a_failure_on_every_read_is_logged_once") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("a.npz");
    let mut bad = Entry::deflated("bad.npy", compressible(8, 300_000));
    bad.declared_crc = Some(0x1234_5678);
    write_zip(&archive, b"", &[bad]);
    let cache = format!("cache_dir={}", dir.path().join("cache").display());
    let mut m = Mounted::foreground(&archive, &["-o", &cache]);
    let f = std::fs::File::open(m.path("bad.npy")).unwrap();
    let mut buf = vec![0u8; 4096];
    for i in 0..12u64 {
        let e = f.read_at(&mut buf, i * 8192).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EIO));
    }
    // The kernel's own readahead of failed pages fails too: at least the reads asked for.
    let failed = n(&figures(&m.mnt), &["fuse", "read", "errors", "EIO"]);
    assert!((12..100).contains(&failed), "{failed}");
    drop(f);
    common::mount::unmount(&m.mnt);
    let (_, log) = m.exit_log();
    let warned: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("read ino") && l.contains("EIO"))
        .collect();
    assert_eq!(warned.len(), 2, "{log}");
    assert!(warned[1].ends_with("(10 times so far)"), "{log}");
}
