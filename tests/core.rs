//! The filesystem core without the kernel: archives from the builder, answers from `NpzFs`.
//! Malformed archives and hostile names are in tests/corpus.rs.

mod common;

use std::path::Path;

use common::fs::{OWNER, entries, ino, mount, mount_bytes, names, read, read_all};
use common::{Entry, build_zip, pattern};
use npzfs::bytes::Archive;
use npzfs::fs::{Kind, Ownership};
use npzfs::tree::ROOT;

#[test]
fn stored_members_are_exact_at_every_offset() {
    let data = pattern(7, 0, 300_000);
    let f = mount(&[Entry::stored("x.npy", data.clone())]);
    let x = ino(&f.fs, "x.npy");
    assert_eq!(f.fs.getattr(x).unwrap().size, 300_000);
    let fh = f.fs.open(x, false).unwrap();
    for (offset, size) in [(0u64, 10u32), (12_345, 4096), (299_990, 4096), (0, 1 << 20)] {
        let got = read(&f.fs, fh, offset, size).unwrap();
        let end = (offset as usize + size as usize).min(data.len());
        assert_eq!(
            got,
            &data[offset as usize..end],
            "offset {offset} size {size}"
        );
    }
    assert!(read(&f.fs, fh, 300_000, 10).unwrap().is_empty());
    assert!(read(&f.fs, fh, u64::MAX, 10).unwrap().is_empty());
    assert!(read(&f.fs, fh, 5, 0).unwrap().is_empty());
}

#[test]
fn zip_variants_numpy_and_others_write() {
    let mut descriptor = Entry::stored("dd.npy", pattern(1, 0, 5000));
    descriptor.descriptor = true;
    let mut z64 = Entry::stored("z64.npy", pattern(2, 0, 7000));
    z64.zip64_local = true;
    let entries = [descriptor, z64, Entry::stored("empty.npy", Vec::new())];
    for prefix in [&b""[..], &b"#!/bin/sh\nexit 0\n"[..]] {
        let f = mount_bytes(&build_zip(prefix, &entries), OWNER);
        assert_eq!(read_all(&f.fs, ino(&f.fs, "dd.npy")), pattern(1, 0, 5000));
        assert_eq!(read_all(&f.fs, ino(&f.fs, "z64.npy")), pattern(2, 0, 7000));
        assert_eq!(read_all(&f.fs, ino(&f.fs, "empty.npy")), b"");
    }
}

#[test]
fn slashes_make_directories() {
    let f = mount(&[
        Entry::stored("a/b.npy", pattern(1, 0, 10)),
        Entry::stored("a/c/d.npy", pattern(2, 0, 20)),
        Entry::stored("top.npy", pattern(3, 0, 30)),
        Entry::stored("emptydir/", Vec::new()),
    ]);
    assert_eq!(names(&f.fs, ROOT), [".", "..", "a", "emptydir", "top.npy"]);
    let a = ino(&f.fs, "a");
    assert_eq!(names(&f.fs, a), [".", "..", "b.npy", "c"]);
    assert_eq!(read_all(&f.fs, ino(&f.fs, "a/c/d.npy")), pattern(2, 0, 20));
    let root = f.fs.getattr(ROOT).unwrap();
    assert_eq!((root.kind, root.nlink, root.perm), (Kind::Dir, 4, 0o555));
    let parent = entries(&f.fs, a, 1).unwrap().remove(0);
    assert_eq!((parent.0.as_str(), parent.1), ("..", ROOT));
    // Resuming a listing from an entry's offset yields exactly what follows it.
    let offsets = |from| -> Vec<u64> {
        let listed = entries(&f.fs, a, from).unwrap();
        listed.iter().map(|e| e.2).collect()
    };
    let all = offsets(0);
    let after_second = offsets(all[1]);
    assert_eq!(after_second, all[2..]);
}

#[test]
fn attributes_follow_options_and_the_archive() {
    let entries = [Entry::stored("d/x.npy", pattern(1, 0, 1000))];
    let f = mount_bytes(
        &build_zip(b"", &entries),
        Ownership {
            uid: 7,
            gid: 8,
            umask: 0o027,
        },
    );
    let x = f.fs.getattr(ino(&f.fs, "d/x.npy")).unwrap();
    assert_eq!(
        (x.kind, x.size, x.perm, x.uid, x.gid, x.nlink),
        (Kind::File, 1000, 0o440, 7, 8, 1)
    );
    assert_eq!(x.blocks, 2);
    assert_eq!(f.fs.getattr(ino(&f.fs, "d")).unwrap().perm, 0o550);
    let archive_mtime = std::fs::metadata(f._file.path())
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(x.mtime, archive_mtime);
    // The same archive mounts with the same inode numbers.
    let again = mount_bytes(&build_zip(b"", &entries), OWNER);
    assert_eq!(ino(&again.fs, "d/x.npy"), x.ino);
}

#[test]
fn wrong_kinds_and_writes_get_their_errnos() {
    let f = mount(&[Entry::stored("d/x.npy", pattern(1, 0, 10))]);
    let (d, x) = (ino(&f.fs, "d"), ino(&f.fs, "d/x.npy"));
    assert_eq!(f.fs.open(d, false).unwrap_err().errno(), libc::EISDIR);
    assert_eq!(entries(&f.fs, x, 0).unwrap_err().errno(), libc::ENOTDIR);
    assert_eq!(f.fs.open(x, true).unwrap_err().errno(), libc::EROFS);
    assert_eq!(f.fs.getattr(999).unwrap_err().errno(), libc::ENOENT);
    assert_eq!(f.fs.getattr(0).unwrap_err().errno(), libc::ENOENT);
    assert_eq!(
        f.fs.lookup(ROOT, b"nope").unwrap_err().errno(),
        libc::ENOENT
    );
    assert_eq!(f.fs.lookup(x, b"nope").unwrap_err().errno(), libc::ENOTDIR);
}

#[test]
fn an_archive_changed_in_place_gives_eio_not_wrong_bytes() {
    let f = mount(&[Entry::stored("x.npy", pattern(1, 0, 100_000))]);
    let x = ino(&f.fs, "x.npy");
    let fh = f.fs.open(x, false).unwrap();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(f._file.path())
        .unwrap();
    file.set_len(50).unwrap();
    assert_eq!(read(&f.fs, fh, 0, 4096).unwrap_err().errno(), libc::EIO);
    assert_eq!(f.fs.open(x, false).unwrap_err().errno(), libc::EIO);
}

#[test]
fn a_missing_archive_is_exit_code_3() {
    let err = Archive::open(Path::new("/nonexistent/a.npz"))
        .err()
        .unwrap();
    assert_eq!(err.exit_code(), 3);
    assert!(
        err.to_string().contains("No such file or directory"),
        "{err}"
    );
}
