//! Seek points: recorded by the first full decode of a deflated member, persisted beside its
//! cache file, checked before use.

mod common;

use common::fs::{OWNER, ino, mount_with_cache, read, read_all, stats};
use common::mount::wait_until;
use common::{Entry, build_zip, compressible, seek_files};
use npzfs::bytes::Archive;
use npzfs::cache::seek_index::{Expected, SeekTable};
use npzfs::zipfile::inflate::{HISTORY, Inflater, SPAN};
use npzfs::zipfile::members::read_members;

const MIB: usize = 1 << 20;

#[test]
fn the_first_decode_records_a_checked_seek_index_that_restarts_anywhere() {
    let data = compressible(21, 9 * MIB + 4321);
    let f = mount_with_cache(
        &build_zip(b"", &[Entry::deflated("x.npy", data.clone())]),
        OWNER,
        tempfile::tempdir().unwrap(),
        1 << 30,
    );
    assert_eq!(read_all(&f.fs, ino(&f.fs, "x.npy")), data);
    let root = f.cache.path().join("c");
    assert!(wait_until(10, || !seek_files(&root).is_empty()));

    let archive = Archive::open(f._file.path()).unwrap();
    let member = &read_members(&archive).unwrap()[0];
    let start = member.data_start(&archive).unwrap();
    let mut packed = vec![0; member.compressed_size as usize];
    archive.read_exact_at(&mut packed, start).unwrap();
    let (path, len) = &seek_files(&root)[0];
    let index = SeekTable::load(
        std::fs::File::open(path).unwrap(),
        Expected {
            size: member.size,
            compressed_size: member.compressed_size,
            crc32: member.crc32,
        },
    )
    .unwrap();
    // A point at least every SPAN bytes, at the first block boundary after it.
    assert!(index.len() >= 4, "{} points", index.len());
    for i in 1..index.len() {
        let (start, end) = index.span(i - 1);
        assert!(end - start >= SPAN && end - start < 4 * SPAN, "span {i}");
    }
    // Stored histories cost (here, on very compressible data) far less than 1% of the member.
    assert!(*len * 100 < data.len() as u64, "index of {len} bytes");

    for i in 0..index.len() {
        let p = index.point(i).unwrap();
        let (start, end) = index.span(i);
        assert_eq!(start, p.out);
        let span = &data[start as usize..end as usize];
        assert_eq!(
            crc32fast::hash(span),
            index.row(i).unwrap().span_crc,
            "span {i}"
        );
        assert!(p.history[..] == data[(p.out as usize).saturating_sub(HISTORY)..p.out as usize]);
        // Restarting at the point decodes the span exactly.
        let previous = if p.input > 0 {
            packed[p.input as usize - 1]
        } else {
            0
        };
        let mut inflater = Inflater::at(&p, previous).unwrap();
        let mut out = vec![0u8; span.len()];
        let (mut pos, mut made) = (p.input as usize, 0);
        while made < out.len() {
            let step = inflater
                .inflate(&packed[pos..], &mut out[made..], false)
                .unwrap();
            (pos, made) = (pos + step.used, made + step.made);
            if step.end {
                break;
            }
        }
        assert!(out == span, "restart at point {i}");
    }
}

/// A member larger than the cache, decoded once through a window of it (which writes its
/// seek index), then a fresh mount with only that index in the cache.
fn decoded_once(data: &[u8], budget: u64) -> common::fs::Fixture {
    let f = mount_with_cache(
        &build_zip(b"", &[Entry::deflated("x.npy", data.to_vec())]),
        OWNER,
        tempfile::tempdir().unwrap(),
        budget,
    );
    assert_eq!(read_all(&f.fs, ino(&f.fs, "x.npy")), data);
    let root = f.cache.path().join("c");
    assert!(wait_until(10, || !seek_files(&root).is_empty()));
    // Counted even when the reader has let go before the decoder finished.
    let whole = || stats(&f.fs).decoded == 1;
    assert!(wait_until(10, whole), "{}", stats(&f.fs));
    assert!(f.cache_bytes() <= budget, "{:?}", f.cache_files());
    // Unmounted and mounted again: nothing but the seek index is left.
    let f = f.reopen(budget);
    assert!(f.cache_bytes() == 0, "{:?}", f.cache_files());
    f
}

#[test]
fn with_an_index_any_offset_costs_one_span_and_the_cache_stays_in_its_bound() {
    let data = compressible(22, 24 * MIB + 77);
    let budget = 4 * MIB as u64;
    let f = decoded_once(&data, budget);

    let fs = f.remount(budget);
    let x = ino(&fs, "x.npy");
    let fh = fs.open(x, false).unwrap();
    // With an index, the member is served span by span: user.npzfs.state says so.
    assert_eq!(fs.getxattr(x, b"user.npzfs.state").unwrap(), b"sparse");
    // Far ahead first: the last bytes, then the middle, then the header.
    let mut spans = 0;
    for offset in [data.len() as u64 - 100, 13 * MIB as u64 + 5, 0] {
        let got = read(&fs, fh, offset, 100).unwrap();
        assert!(
            got[..] == data[offset as usize..][..got.len()],
            "at {offset}"
        );
        spans += 1;
        let decoded = stats(&fs).span_bytes;
        assert!(
            decoded < spans * 2 * SPAN,
            "{decoded} bytes for {spans} reads"
        );
    }
    // Random reads all over, verified; the cache never holds more than its budget.
    let mut x_state = 7u64;
    for _ in 0..60 {
        x_state = x_state.wrapping_mul(6364136223846793005).wrapping_add(1);
        let offset = (x_state >> 20) % data.len() as u64;
        let got = read(&fs, fh, offset, 70_000).unwrap();
        assert!(
            got[..] == data[offset as usize..][..got.len()],
            "at {offset}"
        );
        assert!(
            f.cache_bytes() <= budget,
            "{} > {budget}: {:?} {}",
            f.cache_bytes(),
            f.cache_files(),
            stats(&fs)
        );
    }
    fs.release(fh);
    assert!(stats(&fs).evicted_spans > 0, "{}", stats(&fs));
}

#[test]
fn evicted_spans_leave_no_disk_behind_what_the_budget_counts() {
    // Spans rarely start on a block: the blocks two evicted neighbours share, and the edges
    // of present spans, are disk the budget must see too.
    let data = compressible(27, 16 * MIB + 999);
    let budget = 3 * MIB as u64;
    let f = decoded_once(&data, budget);
    let fs = f.remount(budget);
    let x = ino(&fs, "x.npy");
    for round in 0..2 {
        assert_eq!(read_all(&fs, x), data, "round {round}");
        let fh = fs.open(x, false).unwrap();
        for k in (0..40u64).rev() {
            let offset = k * (data.len() as u64 / 40);
            let got = read(&fs, fh, offset, 5000).unwrap();
            assert!(got[..] == data[offset as usize..][..5000], "at {offset}");
        }
        fs.release(fh);
        let accounted = || f.cache_bytes() <= stats(&fs).held.used.min(budget);
        assert!(
            wait_until(10, accounted),
            "round {round}: {:?} {}",
            f.cache_files(),
            stats(&fs)
        );
    }
}

#[test]
fn a_first_pass_through_a_window_leaves_no_disk_behind_it() {
    // The window moves 1 MiB at a time, rarely on a block boundary.
    let data = compressible(28, 24 * MIB + 999);
    let budget = 2 * MIB as u64;
    let f = mount_with_cache(
        &build_zip(b"", &[Entry::deflated("x.npy", data.clone())]),
        OWNER,
        tempfile::tempdir().unwrap(),
        budget,
    );
    assert_eq!(read_all(&f.fs, ino(&f.fs, "x.npy")), data);
    let whole = || stats(&f.fs).decoded == 1;
    assert!(wait_until(10, whole), "{}", stats(&f.fs));
    let accounted = || f.cache_bytes() <= stats(&f.fs).held.used;
    assert!(
        wait_until(10, accounted),
        "{:?} {}",
        f.cache_files(),
        stats(&f.fs)
    );
}

#[test]
fn spans_evicted_under_concurrent_readers_never_give_wrong_bytes() {
    let data = compressible(23, 16 * MIB);
    let budget = 3 * MIB as u64;
    let f = decoded_once(&data, budget);
    let fs = std::sync::Arc::new(f.remount(budget));
    let x = ino(&fs, "x.npy");
    std::thread::scope(|s| {
        for t in 0..6u64 {
            let (fs, data) = (fs.clone(), &data);
            s.spawn(move || {
                let fh = fs.open(x, false).unwrap();
                let mut state = t + 1;
                for _ in 0..40 {
                    state = state.wrapping_mul(6364136223846793005).wrapping_add(t);
                    let offset = (state >> 16) % data.len() as u64;
                    let got = read(&fs, fh, offset, 200_000).unwrap();
                    assert!(
                        got[..] == data[offset as usize..][..got.len()],
                        "at {offset}"
                    );
                }
                fs.release(fh);
            });
        }
    });
    assert!(
        f.cache_bytes() <= budget,
        "{} > {budget}: {:?} {}",
        f.cache_bytes(),
        f.cache_files(),
        stats(&fs)
    );
}

#[test]
fn a_remount_reads_every_span_back_and_the_member_becomes_complete() {
    let data = compressible(24, 6 * MIB + 3);
    let f = decoded_once(&data, 2 * MIB as u64);
    // A larger cache now: the member fits, so once every span is in it is complete.
    let fs = f.remount(1 << 30);
    let x = ino(&fs, "x.npy");
    assert_eq!(read_all(&fs, x), data);
    assert!(wait_until(10, || f
        .cache_files()
        .iter()
        .any(|(n, _)| n.starts_with("0-"))));
    // No passthrough without the kernel: a complete member is served from its cache file.
    let state = || fs.getxattr(x, b"user.npzfs.state").unwrap();
    assert!(wait_until(10, || state() == b"cached"), "{:?}", state());
    let third = f.remount(1 << 30);
    assert_eq!(read_all(&third, ino(&third, "x.npy")), data);
    assert!(stats(&third).reused == 1);
}

#[test]
fn a_damaged_index_is_not_trusted_and_is_rebuilt() {
    let data = compressible(25, 8 * MIB);
    let f = decoded_once(&data, 3 * MIB as u64);
    let root = f.cache.path().join("c");
    let (path, _) = seek_files(&root).remove(0);
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.len() / 3;
    bytes[at] ^= 1;
    std::fs::write(&path, &bytes).unwrap();

    let fs = f.remount(3 * MIB as u64);
    let x = ino(&fs, "x.npy");
    assert_eq!(read_all(&fs, x), data);
    // Decoded from the start: the damaged index was not used.
    let whole = || stats(&fs).decoded == 1;
    assert!(wait_until(10, whole), "{}", stats(&fs));
    // Decoded from the start again, which wrote a new, good index.
    assert!(wait_until(10, || seek_files(&root).len() == 1
        && std::fs::read(&seek_files(&root)[0].0).unwrap() != bytes));
    let again = f.remount(3 * MIB as u64);
    let y = ino(&again, "x.npy");
    let fh = again.open(y, false).unwrap();
    let got = read(&again, fh, 4 * MIB as u64, 1000).unwrap();
    assert!(got[..] == data[4 * MIB..][..1000]);
    assert!(stats(&again).span_bytes > 0);
    again.release(fh);
}

#[test]
fn an_index_whose_spans_do_not_match_the_archive_gives_eio_never_wrong_bytes() {
    let data = compressible(26, 8 * MIB);
    let f = decoded_once(&data, 3 * MIB as u64);
    let root = f.cache.path().join("c");
    let (path, _) = seek_files(&root).remove(0);
    // A well-formed index, checksum and all, whose span CRCs are wrong.
    let archive = Archive::open(f._file.path()).unwrap();
    let m = &read_members(&archive).unwrap()[0];
    let member = Expected {
        size: m.size,
        compressed_size: m.compressed_size,
        crc32: m.crc32,
    };
    let good = SeekTable::load(std::fs::File::open(&path).unwrap(), member).unwrap();
    let points: Vec<_> = (0..good.len())
        .map(|i| (good.point(i).unwrap(), good.row(i).unwrap().span_crc))
        .collect();
    let mut w = npzfs::cache::seek_index::Writer::new(std::fs::File::create(&path).unwrap());
    for (i, (point, crc)) in points.iter().enumerate() {
        w.add(point).unwrap();
        w.set_span_crc(i, crc ^ 1);
    }
    w.finish(member).unwrap();

    let fs = f.remount(3 * MIB as u64);
    let x = ino(&fs, "x.npy");
    let fh = fs.open(x, false).unwrap();
    let err = read(&fs, fh, 2 * MIB as u64, 100).unwrap_err();
    assert_eq!(err.errno(), libc::EIO, "{err}");
    fs.release(fh);
    // That index is not trusted again: the next mount decodes from the start.
    assert!(seek_files(&root).is_empty());
}

#[test]
fn a_sparse_member_no_one_holds_is_closed_once_its_last_span_is_evicted() {
    let (x_data, y_data) = (compressible(26, 12 * MIB), compressible(27, 3 * MIB));
    let budget = 3 * MIB as u64;
    let f = mount_with_cache(
        &build_zip(
            b"",
            &[
                Entry::deflated("x.npy", x_data.clone()),
                Entry::deflated("y.npy", y_data.clone()),
            ],
        ),
        OWNER,
        tempfile::tempdir().unwrap(),
        budget,
    );
    let (x, y) = (ino(&f.fs, "x.npy"), ino(&f.fs, "y.npy"));
    // Held across its first pass, so that it is sparse (not dropped) when last closed; a read
    // behind the window is answered once it is.
    let fh = f.fs.open(x, false).unwrap();
    assert_eq!(read_all(&f.fs, x), x_data);
    assert!(read(&f.fs, fh, 0, 4096).unwrap() == x_data[..4096]);
    f.fs.release(fh);
    let x_part =
        |f: &common::fs::Fixture| f.cache_files().iter().any(|(n, _)| n.starts_with(".0-"));
    assert!(
        x_part(&f),
        "closed, x keeps its last spans: {:?}",
        f.cache_files()
    );
    // y needs the whole budget: every span of x goes, and with them x's file.
    assert_eq!(read_all(&f.fs, y), y_data);
    assert!(wait_until(10, || !x_part(&f)), "{:?}", f.cache_files());
    // Opened again, x is served from its seek index as before.
    let fh = f.fs.open(x, false).unwrap();
    let at = 7 * MIB as u64;
    assert!(read(&f.fs, fh, at, 5000).unwrap() == x_data[at as usize..][..5000]);
    f.fs.release(fh);
}
