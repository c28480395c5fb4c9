//! The filesystem core without the kernel: archives from the builder, answers from `NpzFs`.

mod common;

use std::path::Path;

use common::fs::{OWNER, ino, mount, mount_bytes, names, read, read_all};
use common::{Entry, build_zip, pattern};
use npzfs::archive::Archive;
use npzfs::fs::{Kind, Ownership};
use npzfs::index::read_index;
use npzfs::tree::ROOT;

#[test]
fn stored_members_are_exact_at_every_offset() {
    let data = pattern(7, 0, 300_000);
    let f = mount(&[Entry::stored("x.npy", data.clone())]);
    let x = ino(&f.fs, "x.npy");
    assert_eq!(f.fs.getattr(x).unwrap().size, 300_000);
    f.fs.open(x, false).unwrap();
    for (offset, size) in [(0u64, 10u32), (12_345, 4096), (299_990, 4096), (0, 1 << 20)] {
        let got = read(&f.fs, x, offset, size).unwrap();
        let end = (offset as usize + size as usize).min(data.len());
        assert_eq!(
            got,
            &data[offset as usize..end],
            "offset {offset} size {size}"
        );
    }
    assert!(read(&f.fs, x, 300_000, 10).unwrap().is_empty());
    assert!(read(&f.fs, x, u64::MAX, 10).unwrap().is_empty());
    assert!(read(&f.fs, x, 5, 0).unwrap().is_empty());
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
    let parent = f.fs.readdir(a, 1).unwrap().next().unwrap();
    assert_eq!((parent.name, parent.ino), (&b".."[..], ROOT));
    // Resuming a listing from an entry's offset yields exactly what follows it.
    let all: Vec<_> = f.fs.readdir(a, 0).unwrap().map(|e| e.next_offset).collect();
    let after_second: Vec<_> =
        f.fs.readdir(a, all[1])
            .unwrap()
            .map(|e| e.next_offset)
            .collect();
    assert_eq!(after_second, all[2..]);
}

#[test]
fn hostile_names_stay_inside_the_mount() {
    let long = "L".repeat(300);
    let f = mount(&[
        Entry::stored("../../etc/passwd", pattern(1, 0, 1)),
        Entry::stored("/abs/x.npy", pattern(2, 0, 2)),
        Entry::stored("./dot//x.npy", pattern(3, 0, 3)),
        Entry::stored("back\\slash.npy", pattern(4, 0, 4)),
        Entry::stored("nul\0byte.npy", pattern(5, 0, 5)),
        Entry::stored(&format!("{long}.npy"), pattern(6, 0, 6)),
        Entry::stored("..", pattern(7, 0, 7)),
    ]);
    assert_eq!(read_all(&f.fs, ino(&f.fs, "etc/passwd")), pattern(1, 0, 1));
    assert_eq!(read_all(&f.fs, ino(&f.fs, "abs/x.npy")), pattern(2, 0, 2));
    assert_eq!(read_all(&f.fs, ino(&f.fs, "dot/x.npy")), pattern(3, 0, 3));
    assert_eq!(
        read_all(&f.fs, ino(&f.fs, "back/slash.npy")),
        pattern(4, 0, 4)
    );
    assert_eq!(
        read_all(&f.fs, ino(&f.fs, "nul_byte.npy")),
        pattern(5, 0, 5)
    );
    let root = names(&f.fs, ROOT);
    assert_eq!(root.len(), 2 + 6, "{root:?}");
    let shortened = root.iter().find(|n| n.starts_with("LLL")).unwrap();
    assert!(shortened.len() <= 255);
    assert_eq!(read_all(&f.fs, ino(&f.fs, shortened)), pattern(6, 0, 6));
    for name in &root {
        assert!(
            !name.contains('/') && !name.contains('\0') && name != "...",
            "{name:?}"
        );
    }
    assert!(f.fs.lookup(ROOT, b"..").is_err());
}

#[test]
fn duplicates_last_wins_and_file_dir_clashes_keep_both() {
    let f = mount(&[
        Entry::stored("dup.npy", pattern(1, 0, 10)),
        Entry::stored("dup.npy", pattern(2, 0, 20)),
        Entry::stored("x", pattern(3, 0, 30)),
        Entry::stored("x/inner.npy", pattern(4, 0, 40)),
        Entry::stored("y/inner.npy", pattern(5, 0, 50)),
        Entry::stored("y", pattern(6, 0, 60)),
    ]);
    assert_eq!(read_all(&f.fs, ino(&f.fs, "dup.npy")), pattern(2, 0, 20));
    assert_eq!(
        read_all(&f.fs, ino(&f.fs, "x/inner.npy")),
        pattern(4, 0, 40)
    );
    assert_eq!(read_all(&f.fs, ino(&f.fs, "x (1)")), pattern(3, 0, 30));
    assert_eq!(
        read_all(&f.fs, ino(&f.fs, "y/inner.npy")),
        pattern(5, 0, 50)
    );
    assert_eq!(read_all(&f.fs, ino(&f.fs, "y (1)")), pattern(6, 0, 60));
    assert_eq!(
        names(&f.fs, ROOT),
        [".", "..", "dup.npy", "x", "x (1)", "y", "y (1)"]
    );
}

#[test]
fn unreadable_members_are_listed_and_fail_cleanly_while_the_rest_serves() {
    let mut encrypted = Entry::stored("enc.npy", pattern(1, 0, 10));
    encrypted.encrypted = true;
    let mut bzip2 = Entry::stored("bz.npy", pattern(2, 0, 10));
    bzip2.method = 97; // WavPack: no decoder
    let mut liar = Entry::stored("liar.npy", pattern(3, 0, 10));
    liar.declared_size = Some(1 << 30);
    let mut disagree = Entry::stored("disagree.npy", pattern(4, 0, 10));
    disagree.local_method = Some(8);
    let f = mount(&[
        encrypted,
        bzip2,
        liar,
        disagree,
        Entry::stored("ok.npy", pattern(5, 0, 10)),
    ]);
    for (name, errno) in [
        ("enc.npy", libc::EOPNOTSUPP),
        ("bz.npy", libc::EOPNOTSUPP),
        ("liar.npy", libc::EIO),
        ("disagree.npy", libc::EIO),
    ] {
        let err = f.fs.open(ino(&f.fs, name), false).unwrap_err();
        assert_eq!(err.errno(), errno, "{name}: {err}");
        assert!(
            err.to_string().contains(name),
            "the message names the member: {err}"
        );
    }
    assert_eq!(read_all(&f.fs, ino(&f.fs, "ok.npy")), pattern(5, 0, 10));
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
    assert_eq!(f.fs.readdir(x, 0).err().unwrap().errno(), libc::ENOTDIR);
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
    f.fs.open(x, false).unwrap();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(f._file.path())
        .unwrap();
    file.set_len(50).unwrap();
    assert_eq!(read(&f.fs, x, 0, 4096).unwrap_err().errno(), libc::EIO);
    assert_eq!(f.fs.open(x, false).unwrap_err().errno(), libc::EIO);
}

fn open_err(bytes: &[u8]) -> npzfs::error::Error {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), bytes).unwrap();
    let archive = Archive::open(file.path()).unwrap();
    read_index(&archive).unwrap_err()
}

#[test]
fn files_that_are_not_zips_are_refused_with_exit_code_4() {
    let good = build_zip(b"", &[Entry::stored("x.npy", pattern(1, 0, 1000))]);
    for (what, bytes) in [
        ("empty", Vec::new()),
        ("text", b"hello, I am not a zip file at all\n".to_vec()),
        ("truncated", good[..good.len() / 2].to_vec()),
        ("no end record", good[..good.len() - 22].to_vec()),
    ] {
        let err = open_err(&bytes);
        assert_eq!(err.exit_code(), 4, "{what}: {err}");
        assert!(
            err.to_string().starts_with("cannot read archive"),
            "{what}: {err}"
        );
    }
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

#[test]
fn a_hundred_thousand_members() {
    let entries: Vec<Entry> = (0..100_000)
        .map(|i| Entry::stored(&format!("d{}/m{i}.npy", i % 100), vec![i as u8]))
        .collect();
    let bytes = build_zip(b"", &entries);
    let started = std::time::Instant::now();
    let f = mount_bytes(&bytes, OWNER);
    eprintln!("index + tree of 100000 members: {:?}", started.elapsed());
    assert_eq!(f.fs.statfs().files, 1 + 100 + 100_000);
    assert_eq!(
        read_all(&f.fs, ino(&f.fs, "d42/m99942.npy")),
        vec![(99_942u32 % 256) as u8]
    );
    assert_eq!(names(&f.fs, ino(&f.fs, "d7")).len(), 2 + 1000);
}
