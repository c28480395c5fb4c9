//! Compressed members through the core: exact bytes, the budget, integrity, reuse.

mod common;

use std::sync::Arc;

use common::fs::{OWNER, ino, mount, mount_with_cache, read, read_all, stats};
use common::{Entry, build_zip, compressible, pattern, payload_offset};
use npzfs::tree::ROOT;

const MIB: usize = 1 << 20;

fn dir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

#[test]
fn deflated_members_are_exact_at_every_offset() {
    let big = compressible(1, 9 * MIB + 123);
    let f = mount(&[
        Entry::deflated("big.npy", big.clone()),
        Entry::deflated("noise.npy", pattern(2, 0, 300_000)),
        Entry::deflated("empty.npy", Vec::new()),
        Entry::stored("plain.npy", pattern(3, 0, 1000)),
    ]);
    let x = ino(&f.fs, "big.npy");
    assert_eq!(
        f.fs.getattr(x).unwrap().size,
        big.len() as u64,
        "size before any decoding"
    );
    let fh = f.fs.open(x, false).unwrap();
    // Far ahead of the decoder first: the read waits for its range, then is exact.
    for (offset, size) in [
        (8 * MIB as u64, 4096u32),
        (0, 100),
        (MIB as u64 - 10, 1 << 20),
    ] {
        let got = read(&f.fs, fh, offset, size).unwrap();
        let end = (offset as usize + size as usize).min(big.len());
        assert_eq!(got, big[offset as usize..end], "offset {offset}");
    }
    assert!(read(&f.fs, fh, big.len() as u64, 10).unwrap().is_empty());
    f.fs.release(fh);
    assert_eq!(read_all(&f.fs, x), big);
    assert_eq!(
        read_all(&f.fs, ino(&f.fs, "noise.npy")),
        pattern(2, 0, 300_000)
    );
    assert_eq!(read_all(&f.fs, ino(&f.fs, "empty.npy")), b"");
    assert_eq!(
        read_all(&f.fs, ino(&f.fs, "plain.npy")),
        pattern(3, 0, 1000)
    );
}

#[test]
fn concurrent_opens_share_one_decoder() {
    let data = compressible(4, 6 * MIB);
    let f = mount(&[Entry::deflated("x.npy", data.clone())]);
    let fs = Arc::new(f.fs);
    let x = ino(&fs, "x.npy");
    std::thread::scope(|s| {
        for t in 0..6u64 {
            let (fs, data) = (fs.clone(), &data);
            s.spawn(move || {
                let fh = fs.open(x, false).unwrap();
                for k in 0..20u64 {
                    let offset = (k * 300_007 + t * 77_777) % data.len() as u64;
                    let got = read(&fs, fh, offset, 65536).unwrap();
                    assert_eq!(got[..], data[offset as usize..][..got.len()]);
                }
                fs.release(fh);
            });
        }
    });
    let counted = || stats(&fs).decoded == 1;
    assert!(common::mount::wait_until(10, counted), "{}", stats(&fs));
}

#[test]
fn the_budget_holds_and_least_recently_used_members_go_first() {
    let entries: Vec<Entry> = (0..6)
        .map(|i| Entry::deflated(&format!("m{i}.npy"), compressible(i, MIB)))
        .collect();
    let budget = 3 * MIB as u64;
    let f = mount_with_cache(&build_zip(b"", &entries), OWNER, dir(), budget);
    for round in 0..2 {
        for i in 0..6u64 {
            let got = read_all(&f.fs, ino(&f.fs, &format!("m{i}.npy")));
            assert_eq!(got, compressible(i, MIB), "round {round} member {i}");
            assert!(
                f.cache_bytes() <= budget,
                "cache {} > budget",
                f.cache_bytes()
            );
        }
    }
    // The three most recently used members are the ones kept.
    assert!(settled(&f), "{:?}", f.cache_files());
    let kept: Vec<String> = f.cache_files().into_iter().map(|(n, _)| n).collect();
    assert_eq!(kept.len(), 3, "{kept:?}");
    for i in 3..6 {
        assert!(
            kept.iter().any(|n| n.starts_with(&format!("{i}-"))),
            "{kept:?}"
        );
    }
}

#[test]
fn a_member_larger_than_the_budget_is_served_within_it() {
    let data = compressible(5, 12 * MIB);
    let budget = 3 * MIB as u64;
    let f = mount_with_cache(
        &build_zip(b"", &[Entry::deflated("x.npy", data.clone())]),
        OWNER,
        dir(),
        budget,
    );
    let x = ino(&f.fs, "x.npy");
    let fh = f.fs.open(x, false).unwrap();
    // Behind the first pass's window (half the budget): waits for the seek index, then is
    // decoded from the nearest point.
    for offset in [11 * MIB as u64, 0, 5 * MIB as u64] {
        let got = read(&f.fs, fh, offset, 100).unwrap();
        assert_eq!(got, data[offset as usize..][..100], "at {offset}");
        assert!(
            f.cache_bytes() <= budget,
            "at {offset}: {:?} {}",
            f.cache_files(),
            stats(&f.fs)
        );
    }
    f.fs.release(fh);
    assert_eq!(read_all(&f.fs, x), data);
    assert!(f.cache_bytes() <= budget, "{:?}", f.cache_files());
    assert_eq!(stats(&f.fs).decoded, 1, "{}", stats(&f.fs));
}

#[test]
fn corrupt_streams_bad_crcs_and_lying_sizes_give_eio_never_wrong_bytes() {
    let good = Entry::deflated("good.npy", compressible(6, 200_000));
    let mut bad_crc = Entry::deflated("crc.npy", compressible(7, 200_000));
    bad_crc.declared_crc = Some(0x1234_5678);
    let mut too_big = Entry::deflated("big.npy", compressible(8, 128 << 10));
    too_big.declared_size = Some(0xe000_0000); // 3.5 GiB declared, 128 KiB real
    let mut too_small = Entry::deflated("small.npy", compressible(9, 300_000));
    too_small.declared_size = Some(1000);
    let corrupt = Entry::deflated("corrupt.npy", compressible(10, 200_000));
    let entries = [good, bad_crc, too_big, too_small, corrupt];
    let mut bytes = build_zip(b"", &entries);
    let at = payload_offset(&entries, 4);
    bytes[at..at + 64].iter_mut().for_each(|b| *b ^= 0x5a);
    let f = mount_with_cache(&bytes, OWNER, dir(), 1 << 30);
    for name in ["crc.npy", "big.npy", "small.npy", "corrupt.npy"] {
        let x = ino(&f.fs, name);
        let fh = f.fs.open(x, false).unwrap();
        let size = f.fs.getattr(x).unwrap().size;
        let last = read(&f.fs, fh, size.saturating_sub(10), 10);
        let err = last.map(|_| ()).expect_err(name);
        assert_eq!(err.errno(), libc::EIO, "{name}");
        f.fs.release(fh);
    }
    assert_eq!(
        read_all(&f.fs, ino(&f.fs, "good.npy")),
        compressible(6, 200_000)
    );
    // Nothing of the failed members stays in the cache.
    assert_eq!(f.cache_files().len(), 1, "{:?}", f.cache_files());
}

#[test]
fn a_complete_member_is_reused_by_the_next_mount_and_partial_ones_never_are() {
    let data = compressible(11, 3 * MIB);
    let entries = [
        Entry::deflated("x.npy", data.clone()),
        Entry::deflated("y.npy", compressible(12, MIB)),
    ];
    let f = mount_with_cache(&build_zip(b"", &entries), OWNER, dir(), 1 << 30);
    assert_eq!(read_all(&f.fs, ino(&f.fs, "x.npy")), data);
    // Readers get the last bytes once verified; the file is renamed into place after a sync.
    let complete = || f.cache_files().iter().any(|(n, _)| n.starts_with("0-"));
    assert!(
        common::mount::wait_until(10, complete),
        "{:?}",
        f.cache_files()
    );
    // A partial file left by a killed daemon (its pid is long gone).
    let sub = std::fs::read_dir(f.cache.path().join("c"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    std::fs::write(sub.join(".1-00000000-100000.999999999.0.part"), b"partial").unwrap();

    let again = f.remount(1 << 30);
    let y = ino(&again, "y.npy");
    assert_eq!(read_all(&again, ino(&again, "x.npy")), data);
    assert_eq!(read_all(&again, y), compressible(12, MIB));
    let stats = stats(&again);
    assert!(stats.decoded == 1 && stats.reused == 1, "{stats}");
    assert!(settled(&f), "{:?}", f.cache_files());
}

#[test]
fn cache_files_are_private() {
    use std::os::unix::fs::MetadataExt;
    let f = mount(&[Entry::deflated("x.npy", compressible(13, 1000))]);
    read_all(&f.fs, ino(&f.fs, "x.npy"));
    let root = f.cache.path().join("c");
    assert_eq!(std::fs::metadata(&root).unwrap().mode() & 0o777, 0o700);
    let sub = std::fs::read_dir(&root)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    assert_eq!(std::fs::metadata(&sub).unwrap().mode() & 0o777, 0o700);
    for entry in std::fs::read_dir(&sub).unwrap() {
        let mode = entry.unwrap().metadata().unwrap().mode() & 0o077;
        assert_eq!(mode, 0, "cache files are not for others");
    }
}

#[test]
fn an_archive_without_compressed_members_never_touches_the_cache_directory() {
    let f = mount(&[Entry::stored("x.npy", pattern(1, 0, 10))]);
    assert!(f.fs.cache_stats().is_none());
    assert!(!f.cache.path().join("c").exists());
    assert!(f.fs.lookup(ROOT, b"x.npy").is_ok());
}

#[test]
fn closed_mid_decode_a_member_finishes_if_it_fits_and_stops_if_not() {
    let data = compressible(14, 40 * MIB);
    let bytes = build_zip(b"", &[Entry::deflated("x.npy", data)]);
    let fits = mount_with_cache(&bytes, OWNER, dir(), 64 * MIB as u64);
    let x = ino(&fits.fs, "x.npy");
    let fh = fits.fs.open(x, false).unwrap();
    fits.fs.release(fh);
    let kept = common::mount::wait_until(30, || {
        let files = fits.cache_files();
        files.len() == 1 && !files[0].0.ends_with(".part")
    });
    assert!(kept, "{:?}", fits.cache_files());

    let too_big = mount_with_cache(&bytes, OWNER, dir(), 8 * MIB as u64);
    let fh = too_big.fs.open(x, false).unwrap();
    too_big.fs.release(fh);
    let gone = common::mount::wait_until(10, || too_big.cache_files().is_empty());
    assert!(gone, "{:?}", too_big.cache_files());
}

#[test]
fn reopening_a_member_mid_decode_joins_its_decoder() {
    let data = compressible(15, 30 * MIB);
    let f = mount(&[Entry::deflated("x.npy", data.clone())]);
    let x = ino(&f.fs, "x.npy");
    // np.load opens, reads the header and closes, then opens again for the data.
    let fh = f.fs.open(x, false).unwrap();
    f.fs.release(fh);
    assert_eq!(read_all(&f.fs, x), data);
    assert!(settled(&f), "{:?}", f.cache_files());
    assert_eq!(stats(&f.fs).decoded, 1, "one decode only: {}", stats(&f.fs));
}

#[test]
fn a_cache_directory_deleted_while_mounted_is_made_again() {
    let data = compressible(16, 2 * MIB);
    let f = mount(&[Entry::deflated("x.npy", data.clone())]);
    let x = ino(&f.fs, "x.npy");
    assert_eq!(read_all(&f.fs, x), data);
    let complete = || f.cache_files().iter().any(|(n, _)| n.starts_with("0-"));
    assert!(common::mount::wait_until(10, complete));
    std::fs::remove_dir_all(f.cache.path().join("c")).unwrap();
    assert_eq!(read_all(&f.fs, x), data);
}

/// Waits (up to 10 s) until no decode is in flight: readers get a member's last bytes once it
/// is verified, and its file is renamed from `.part` after a sync that follows.
fn settled(f: &common::fs::Fixture) -> bool {
    let idle = || !f.cache_files().iter().any(|(n, _)| n.ends_with(".part"));
    common::mount::wait_until(10, idle)
}
