//! Seek points: recorded by the first full decode of a deflated member, persisted beside its
//! cache file, checked before use.

mod common;

use common::fs::{OWNER, ino, mount_with_cache, read_all};
use common::mount::wait_until;
use common::{Entry, build_zip, compressible, seek_files};
use npzfs::archive::Archive;
use npzfs::cache::seek::{Inflater, SPAN, WINDOW};
use npzfs::cache::seek_file::{self, Member};
use npzfs::index::read_index;

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
    let member = &read_index(&archive).unwrap()[0];
    let start = member.data_start(&archive).unwrap();
    let packed = archive.slice(start, member.compressed_size).unwrap();
    let (path, len) = &seek_files(&root)[0];
    let index = seek_file::decode(
        &std::fs::read(path).unwrap(),
        Member {
            size: member.size,
            compressed_size: member.compressed_size,
            crc32: member.crc32,
        },
    )
    .unwrap();
    // A point at least every SPAN bytes, at the first block boundary after it.
    assert!(index.points.len() >= 4, "{} points", index.points.len());
    for pair in index.points.windows(2) {
        assert!(pair[1].out - pair[0].out >= SPAN);
        assert!(pair[1].out - pair[0].out < 2 * SPAN);
    }
    // Stored windows cost (here, on very compressible data) far less than 1% of the member.
    assert!(*len * 100 < data.len() as u64, "index of {len} bytes");

    for (i, p) in index.points.iter().enumerate() {
        let end = index.span_end(i, member.size) as usize;
        let span = &data[p.out as usize..end];
        assert_eq!(crc32fast::hash(span), index.span_crcs[i], "span {i}");
        assert!(p.window[..] == data[(p.out as usize).saturating_sub(WINDOW)..p.out as usize]);
        // Restarting at the point decodes the span exactly.
        let previous = if p.input > 0 {
            packed[p.input as usize - 1]
        } else {
            0
        };
        let mut inflater = Inflater::at(p, previous).unwrap();
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
