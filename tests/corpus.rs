//! The hostile-archive corpus: malformed and unusual archives built here, each with its stated
//! outcome. Either the mount is refused (exit code 4 and one message naming the archive, checked
//! through the real binary too), or it mounts showing exactly the stated files: the bad members
//! fail with their errno and every other member reads exact.

mod common;

use std::collections::BTreeMap;

use common::fs::{Fixture, OWNER, entries, ino, mount_with_cache, read};
use common::mount::BIN;
use common::{Entry, build_zip, compressible, pattern};
use npzfs::bytes::Archive;
use npzfs::fs::Kind;
use npzfs::tree::ROOT;
use npzfs::zipfile::members::read_members;

/// What a case must do.
enum Expect<'a> {
    /// Not mountable: exit code 4, "cannot read archive ...".
    Refused,
    /// Mounted with exactly these files (path -> bytes, or the errno its open or read gives).
    Mounted(Vec<(&'a str, Result<Vec<u8>, i32>)>),
}

fn good_entries() -> Vec<Entry> {
    vec![
        Entry::stored("a.npy", pattern(1, 0, 3000)),
        Entry::deflated("b.npy", compressible(2, 5000)),
        Entry::stored("d/c.npy", pattern(3, 0, 700)),
    ]
}

fn good_files() -> Vec<(&'static str, Result<Vec<u8>, i32>)> {
    vec![
        ("a.npy", Ok(pattern(1, 0, 3000))),
        ("b.npy", Ok(compressible(2, 5000))),
        ("d/c.npy", Ok(pattern(3, 0, 700))),
    ]
}

/// `good_entries()` with entry `i` changed by `f`, and the outcome: that member fails with
/// `errno`, the others read exact.
fn one_bad(i: usize, errno: i32, f: impl FnOnce(&mut Entry)) -> (Vec<u8>, Expect<'static>) {
    let mut entries = good_entries();
    f(&mut entries[i]);
    let mut files = good_files();
    files[i].1 = Err(errno);
    (build_zip(b"", &entries), Expect::Mounted(files))
}

/// Checks one case against the core (`check_cli_refusal` takes refusals through the binary).
fn check(case: &str, bytes: &[u8], expect: &Expect<'_>) {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), bytes).unwrap();
    let archive = Archive::open(file.path()).unwrap();
    match (read_members(&archive), expect) {
        (Err(e), Expect::Refused) => {
            assert_eq!(e.exit_code(), 4, "{case}: {e}");
            assert!(
                e.to_string().starts_with("cannot read archive"),
                "{case}: {e}"
            );
        }
        (Ok(_), Expect::Refused) => panic!("{case}: mounted, expected a refusal"),
        (Err(e), Expect::Mounted(_)) => panic!("{case}: refused ({e}), expected a mount"),
        (Ok(_), Expect::Mounted(files)) => {
            let f = mount_with_cache(bytes, OWNER, tempfile::tempdir().unwrap(), 1 << 20);
            check_mounted(case, &f, files);
        }
    }
}

fn check_mounted(case: &str, f: &Fixture, files: &[(&str, Result<Vec<u8>, i32>)]) {
    let shown = all_files(f, ROOT, "");
    let stated: Vec<&str> = files.iter().map(|(p, _)| *p).collect();
    assert_eq!(shown.keys().map(String::as_str).collect::<Vec<_>>(), {
        let mut s = stated.clone();
        s.sort();
        s
    });
    for (path, want) in files {
        let got = read_member(f, ino(&f.fs, path));
        match (want, got) {
            (Ok(want), Ok(got)) => assert!(got == *want, "{case}: {path}: wrong bytes"),
            (Err(want), Err(got)) => assert_eq!(got, *want, "{case}: {path}: errno"),
            (want, got) => panic!(
                "{case}: {path}: expected {:?}, got {:?}",
                want.as_ref().map(Vec::len),
                got.map(|b| b.len())
            ),
        }
    }
}

/// Every file under `dir`, by path.
fn all_files(f: &Fixture, dir: u64, prefix: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let listed = entries(&f.fs, dir, 0).unwrap();
    for (name, ino, _) in listed.into_iter().skip(2) {
        let path = format!("{prefix}{name}");
        match f.fs.getattr(ino).unwrap().kind {
            Kind::Dir => out.extend(all_files(f, ino, &format!("{path}/"))),
            Kind::File => {
                out.insert(path, ino);
            }
            Kind::Symlink => panic!("an archive holds no symlinks: {path}"),
        }
    }
    out
}

/// The whole member, or the errno its open or first failing read gives.
fn read_member(f: &Fixture, ino: u64) -> Result<Vec<u8>, i32> {
    let fh = f.fs.open(ino, false).map_err(|e| e.errno())?;
    let mut out = Vec::new();
    let result = loop {
        match read(&f.fs, fh, out.len() as u64, 64 * 1024) {
            Ok(chunk) if chunk.is_empty() => break Ok(out),
            Ok(chunk) => out.extend_from_slice(&chunk),
            Err(e) => break Err(e.errno()),
        }
    };
    f.fs.release(fh);
    result
}

/// Refusals through the real binary: exit code 4 and one line naming the archive.
fn check_cli_refusal(case: &str, bytes: &[u8]) {
    let dir = tempfile::tempdir().unwrap();
    let (archive, mnt) = (dir.path().join("bad.npz"), dir.path().join("mnt"));
    std::fs::write(&archive, bytes).unwrap();
    std::fs::create_dir(&mnt).unwrap();
    let out = std::process::Command::new(BIN)
        .args([&archive, &mnt])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{case}: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "{case}: {stderr}");
    assert!(
        stderr.starts_with("npzfs: cannot read archive") && stderr.contains("bad.npz"),
        "{case}: {stderr}"
    );
}

#[test]
fn files_that_are_not_archives_are_refused() {
    let mut noise = Vec::new();
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..4096 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        noise.push(x as u8);
    }
    let good = build_zip(b"", &good_entries());
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("zero bytes", Vec::new()),
        ("text", b"hello, I am not a zip file at all\n".to_vec()),
        ("random bytes", noise),
        ("a PNG", b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec()),
        ("only an end record", good[good.len() - 22..].to_vec()),
        ("end record gone", good[..good.len() - 22].to_vec()),
    ];
    for (case, bytes) in &cases {
        check(case, bytes, &Expect::Refused);
        check_cli_refusal(case, bytes);
    }
}

#[test]
fn an_archive_truncated_anywhere_is_refused() {
    let good = build_zip(b"", &good_entries());
    // Every 7th byte, and each of the last 64 (the end record and the directory's tail).
    let points: Vec<usize> = (0..good.len())
        .step_by(7)
        .chain(good.len() - 64..good.len())
        .collect();
    for &n in &points {
        check(&format!("truncated at {n}"), &good[..n], &Expect::Refused);
    }
    check_cli_refusal("truncated at half", &good[..good.len() / 2]);
}

#[test]
fn prefixed_and_suffixed_bytes() {
    let entries = good_entries();
    let mut sfx = b"#!/bin/sh\nexit 0\n".to_vec();
    // Offsets relative to the file start, as `cat stub a.zip` and `zip -A` leave them.
    let prefixed = build_zip(&sfx, &entries);
    check(
        "prefixed, offsets from the file start",
        &prefixed,
        &Expect::Mounted(good_files()),
    );
    // Offsets relative to the archive: readers find the shift from the end record.
    sfx.extend_from_slice(&build_zip(b"", &entries));
    check(
        "prefixed, offsets from the archive",
        &sfx,
        &Expect::Mounted(good_files()),
    );
    let mut suffixed = build_zip(b"", &entries);
    suffixed.extend_from_slice(&[0xAB; 100]);
    // Trailing bytes: the end record is still found (as unzip and Python do).
    check(
        "bytes after the end record",
        &suffixed,
        &Expect::Mounted(good_files()),
    );
}

#[test]
fn directory_entries_that_lie_fail_only_their_member() {
    let eio = libc::EIO;
    let cases = [
        (
            "offset past the end",
            one_bad(0, eio, |e| e.declared_offset = Some(1 << 30)),
        ),
        (
            "offset into another member's data",
            one_bad(2, eio, |e| e.declared_offset = Some(100)),
        ),
        (
            "compressed size past the end",
            one_bad(1, eio, |e| e.declared_csize = Some(1 << 30)),
        ),
        (
            "stored size larger than its bytes",
            one_bad(0, eio, |e| e.declared_size = Some(4000)),
        ),
        (
            "deflated size larger than its stream",
            one_bad(1, eio, |e| e.declared_size = Some(9000)),
        ),
        (
            "deflated size smaller than its stream",
            one_bad(1, eio, |e| e.declared_size = Some(10)),
        ),
        (
            "wrong CRC on a deflated member",
            one_bad(1, eio, |e| e.declared_crc = Some(7)),
        ),
        (
            "local header with another method",
            one_bad(0, eio, |e| e.local_method = Some(8)),
        ),
        (
            "local header with a longer name",
            one_bad(0, eio, |e| e.local_name = Some(b"aa.npy".to_vec())),
        ),
        (
            "encrypted",
            one_bad(2, libc::EOPNOTSUPP, |e| e.encrypted = true),
        ),
        (
            "unknown method",
            one_bad(0, libc::EOPNOTSUPP, |e| e.method = 97),
        ),
    ];
    for (case, (bytes, expect)) in &cases {
        check(case, bytes, expect);
    }
}

#[test]
fn overlapping_members_are_not_served_twice() {
    // A second directory entry for an existing local header (the trick of overlap zip bombs)
    // fails: the local header names the first member. A stored member whose bytes hold a
    // whole other member's local header and data (a "quoted" overlap) serves its own bytes,
    // and so does the inner one: each is exactly the range its own header gives.
    let mut entries = good_entries();
    let mut twin = Entry::stored("twin.npy", pattern(1, 0, 3000));
    twin.declared_offset = Some(0);
    twin.local_name = Some(b"a.npy".to_vec());
    entries.push(twin);
    let mut files = good_files();
    files.push(("twin.npy", Err(libc::EIO)));
    check(
        "two entries, one local header",
        &build_zip(b"", &entries),
        &Expect::Mounted(files),
    );

    let inner_entries = [Entry::stored("inner.npy", pattern(4, 0, 500))];
    let inner = build_zip(b"", &inner_entries);
    let inner_member = inner[..common::payload_offset(&inner_entries, 0) + 500].to_vec();
    let mut outer = Entry::stored("outer.npy", inner_member.clone());
    outer.name = b"outer.npy".to_vec();
    let mut quoted = Entry::stored("inner.npy", pattern(4, 0, 500));
    quoted.declared_offset = Some(30 + 9);
    let files = vec![
        ("outer.npy", Ok(inner_member)),
        ("inner.npy", Ok(pattern(4, 0, 500))),
    ];
    check(
        "quoted overlap",
        &build_zip(b"", &[outer, quoted]),
        &Expect::Mounted(files),
    );
}

#[test]
fn names_hostile_duplicated_clashing_or_not_utf8() {
    let mut cp437 = Entry::stored("x", pattern(4, 0, 40));
    cp437.name = b"caf\x82.npy".to_vec(); // CP437 0x82 is 'e' with an acute accent
    let mut latin1 = Entry::stored("x", pattern(5, 0, 50));
    latin1.name = b"caf\xe9.npy".to_vec(); // a different byte, so a different name
    let mut bad_utf8 = Entry::stored("x", pattern(6, 0, 60));
    bad_utf8.name = b"\xff\xfe.npy".to_vec();
    bad_utf8.extra_flags = 1 << 11; // claims UTF-8
    let long = format!("{}.npy", "L".repeat(300));
    let shortened = String::from_utf8(npzfs::zipfile::members::sanitise(&long).remove(0)).unwrap();
    let entries = vec![
        Entry::stored("../../etc/passwd", pattern(1, 0, 10)),
        Entry::stored("./dot//x.npy", pattern(9, 0, 9)),
        Entry::stored("back\\slash.npy", pattern(10, 0, 10)),
        Entry::stored("nul\0byte.npy", pattern(11, 0, 11)),
        Entry::stored(&long, pattern(12, 0, 12)),
        Entry::stored("..", pattern(13, 0, 13)),
        Entry::stored("/", pattern(14, 0, 14)),
        Entry::stored("/abs/x.npy", pattern(2, 0, 20)),
        Entry::stored("dup.npy", pattern(3, 0, 30)),
        Entry::stored("dup.npy", pattern(3, 1, 31)),
        Entry::stored("clash", pattern(7, 0, 70)),
        Entry::stored("clash/inner.npy", pattern(8, 0, 80)),
        cp437,
        latin1,
        bad_utf8,
    ];
    let files = vec![
        ("etc/passwd", Ok(pattern(1, 0, 10))),
        ("dot/x.npy", Ok(pattern(9, 0, 9))),
        ("back/slash.npy", Ok(pattern(10, 0, 10))),
        ("nul_byte.npy", Ok(pattern(11, 0, 11))),
        (shortened.as_str(), Ok(pattern(12, 0, 12))),
        ("abs/x.npy", Ok(pattern(2, 0, 20))),
        ("dup.npy", Ok(pattern(3, 1, 31))),
        ("clash (1)", Ok(pattern(7, 0, 70))),
        ("clash/inner.npy", Ok(pattern(8, 0, 80))),
        ("caf\u{e9}.npy", Ok(pattern(4, 0, 40))),
        ("caf\u{398}.npy", Ok(pattern(5, 0, 50))),
        ("\u{a0}\u{25a0}.npy", Ok(pattern(6, 0, 60))),
    ];
    check("names", &build_zip(b"", &entries), &Expect::Mounted(files));
}

#[test]
fn a_zip_bomb_is_served_within_the_cache_budget() {
    // 1 GiB of zeros from about 1 MiB of deflate, with an honest size: served, and the cache
    // never holds more than its 8 MiB budget. A copy whose directory claims 4 KiB is cut off
    // at 4 KiB + 1 byte of output: EIO, not a gigabyte decoded.
    const GIB: u64 = 1 << 30;
    let stream = zeros_deflated(GIB);
    assert!(stream.len() < 2 << 20, "{} bytes", stream.len());
    let entries = [
        Entry::stored("ok.npy", pattern(1, 0, 100)),
        raw_deflated("bomb.npy", &stream, GIB),
        raw_deflated("liar.npy", &stream, 4096),
    ];
    let f = mount_with_cache(
        &build_zip(b"", &entries),
        OWNER,
        tempfile::tempdir().unwrap(),
        8 << 20,
    );
    let bomb = ino(&f.fs, "bomb.npy");
    let fh = f.fs.open(bomb, false).unwrap();
    let mut peak = 0;
    for offset in [0, 300 << 20, GIB - 4096, GIB / 2] {
        let got = read(&f.fs, fh, offset, 4096).unwrap();
        assert!(
            got.len() == 4096 && got.iter().all(|&b| b == 0),
            "at {offset}"
        );
        peak = peak.max(f.cache_bytes());
    }
    assert!(peak <= 8 << 20, "cache peaked at {peak} bytes");
    f.fs.release(fh);
    let started = std::time::Instant::now();
    assert_eq!(read_member(&f, ino(&f.fs, "liar.npy")), Err(libc::EIO));
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    assert_eq!(
        read_member(&f, ino(&f.fs, "ok.npy")),
        Ok(pattern(1, 0, 100))
    );
}

fn zeros_deflated(len: u64) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    let chunk = vec![0u8; 1 << 20];
    for _ in 0..len / chunk.len() as u64 {
        enc.write_all(&chunk).unwrap();
    }
    enc.finish().unwrap()
}

/// A deflated entry whose stream is given, not compressed here, declaring `size` bytes.
fn raw_deflated(name: &str, stream: &[u8], size: u64) -> Entry {
    let mut e = Entry::stored(name, stream.to_vec());
    e.local_method = Some(8);
    e.method = 8;
    e.raw = true;
    e.declared_size = Some(size);
    e.declared_crc = Some(zeros_crc(size));
    e
}

fn zeros_crc(len: u64) -> u32 {
    let mut h = crc32fast::Hasher::new();
    let chunk = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        h.update(&chunk[..n]);
        left -= n as u64;
    }
    h.finalize()
}

#[test]
fn a_million_members_mount() {
    let entries: Vec<Entry> = (0..1_000_000)
        .map(|i| Entry::stored(&format!("d{}/m{i}", i % 1000), vec![i as u8]))
        .collect();
    let bytes = build_zip(b"", &entries);
    let started = std::time::Instant::now();
    let f = mount_with_cache(&bytes, OWNER, tempfile::tempdir().unwrap(), 1 << 20);
    eprintln!("index + tree of 10^6 members: {:?}", started.elapsed());
    assert_eq!(f.fs.statfs().files, 1 + 1000 + 1_000_000);
    assert_eq!(
        read_member(&f, ino(&f.fs, "d999/m999999")),
        Ok(vec![(999_999 % 256) as u8])
    );
    assert_eq!(
        common::fs::entries(&f.fs, ino(&f.fs, "d0"), 0)
            .unwrap()
            .len(),
        2 + 1000
    );
}
