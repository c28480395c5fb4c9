//! Real FUSE mounts through the real binary: what any client sees through the kernel.

mod common;

use std::fs;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::mount::{
    BIN, Mounted, Need, as_user, fuse_or_skip, is_mounted, require, test_user, wait_until,
};
use common::{Entry, pattern, write_zip};

const BIG: usize = 3 << 20;

/// An archive of stored members: "big.npy" (3 MiB), "a/b.npy", "a/c/d.npy", "empty.npy".
fn sample(dir: &Path) -> PathBuf {
    let path = dir.join("sample.npz");
    write_zip(
        &path,
        b"",
        &[
            Entry::stored("big.npy", pattern(1, 0, BIG)),
            Entry::stored("a/b.npy", pattern(2, 0, 1000)),
            Entry::stored("a/c/d.npy", pattern(3, 0, 70_000)),
            Entry::stored("empty.npy", Vec::new()),
        ],
    );
    path
}

fn setup(test: &str) -> Option<(tempfile::TempDir, PathBuf)> {
    if !fuse_or_skip(test) {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let archive = sample(dir.path());
    Some((dir, archive))
}

fn errno(err: std::io::Error) -> i32 {
    err.raw_os_error().unwrap_or(0)
}

#[test]
fn reads_stats_listings_and_mmap_agree_with_the_archive() {
    let Some((_dir, archive)) = setup("reads_stats_listings_and_mmap") else {
        return;
    };
    let m = Mounted::background(&archive, &[]);
    let expect = [
        ("big.npy", 1, BIG),
        ("a/b.npy", 2, 1000),
        ("a/c/d.npy", 3, 70_000),
    ];
    for (name, seed, len) in expect {
        assert_eq!(
            fs::read(m.path(name)).unwrap(),
            pattern(seed, 0, len),
            "{name}"
        );
        let meta = fs::metadata(m.path(name)).unwrap();
        assert_eq!(meta.len(), len as u64);
        assert_eq!(meta.mode() & 0o7777, 0o444);
    }
    assert_eq!(fs::read(m.path("empty.npy")).unwrap(), b"");
    // Sizes in a listing (readdirplus) are the sizes of stat.
    for entry in fs::read_dir(m.path("a")).unwrap() {
        let entry = entry.unwrap();
        assert_eq!(
            entry.metadata().unwrap().len(),
            fs::metadata(entry.path()).unwrap().len()
        );
    }
    let dir_meta = fs::metadata(m.path("a")).unwrap();
    assert_eq!(dir_meta.mode() & 0o7777, 0o555);
    assert_eq!(dir_meta.mtime(), fs::metadata(&archive).unwrap().mtime());
    // A shared mapping of the mounted file (what np.load(mmap_mode='r') does).
    let file = fs::File::open(m.path("big.npy")).unwrap();
    // SAFETY: the mount is read-only and stays mounted while the map lives.
    let map = unsafe { memmap2::Mmap::map(&file) }.unwrap();
    assert_eq!(map.len(), BIG);
    for offset in [0usize, 4095, 1 << 20, BIG - 1] {
        assert_eq!(
            map[offset],
            common::byte_at(1, offset as u64),
            "mmap at {offset}"
        );
    }
    let mut buf = vec![0u8; 10_000];
    file.read_exact_at(&mut buf, 1_234_567).unwrap();
    assert_eq!(buf, pattern(1, 1_234_567, 10_000));
    npzfs::mountpoint::statfs(&m.mnt).unwrap();
}

#[test]
fn every_kind_of_write_fails_with_erofs() {
    let Some((_dir, archive)) = setup("every_kind_of_write_fails_with_erofs") else {
        return;
    };
    let m = Mounted::background(&archive, &[]);
    let erofs = libc::EROFS;
    assert_eq!(
        errno(fs::File::create(m.path("new.npy")).unwrap_err()),
        erofs
    );
    let write = fs::OpenOptions::new().write(true).open(m.path("a/b.npy"));
    assert_eq!(errno(write.unwrap_err()), erofs);
    assert_eq!(errno(fs::create_dir(m.path("d")).unwrap_err()), erofs);
    assert_eq!(
        errno(fs::remove_file(m.path("a/b.npy")).unwrap_err()),
        erofs
    );
    assert_eq!(
        errno(fs::rename(m.path("a/b.npy"), m.path("z.npy")).unwrap_err()),
        erofs
    );
    let perms = fs::Permissions::from_mode(0o644);
    assert_eq!(
        errno(fs::set_permissions(m.path("a/b.npy"), perms).unwrap_err()),
        erofs
    );
    assert_eq!(fs::read(m.path("a/b.npy")).unwrap(), pattern(2, 0, 1000));
}

#[test]
fn sigterm_and_sigint_unmount_cleanly_and_exit_0() {
    let Some((_dir, archive)) = setup("sigterm_and_sigint_unmount_cleanly") else {
        return;
    };
    for signal in [libc::SIGTERM, libc::SIGINT] {
        let mut m = Mounted::foreground(&archive, &[]);
        assert_eq!(fs::read(m.path("a/b.npy")).unwrap(), pattern(2, 0, 1000));
        // SAFETY: signalling our own child.
        unsafe { libc::kill(m.pid(), signal) };
        let child = m.daemon.as_mut().unwrap();
        assert!(
            wait_until(10, || child.try_wait().unwrap().is_some()),
            "daemon did not exit"
        );
        assert_eq!(child.wait().unwrap().code(), Some(0), "signal {signal}");
        assert!(!is_mounted(&m.mnt));
    }
}

#[test]
fn a_busy_mount_is_detached_on_sigterm_and_its_users_keep_reading() {
    let Some((_dir, archive)) = setup("a_busy_mount_is_detached") else {
        return;
    };
    let mut m = Mounted::foreground(&archive, &[]);
    let file = fs::File::open(m.path("big.npy")).unwrap();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(m.pid(), libc::SIGTERM) };
    assert!(
        wait_until(10, || !is_mounted(&m.mnt)),
        "mount point not detached"
    );
    let mut buf = vec![0u8; 4096];
    file.read_exact_at(&mut buf, 2 << 20).unwrap();
    assert_eq!(buf, pattern(1, 2 << 20, 4096));
    drop(file);
    // The daemon does not outlive its users.
    let (code, log) = m.exit_log();
    assert_eq!(code, Some(0), "{log}");
}

#[test]
fn ownership_and_umask_options() {
    let Some((_dir, archive)) = setup("ownership_and_umask_options") else {
        return;
    };
    let m = Mounted::background(&archive, &["-o", "uid=4321,gid=8765,umask=0227"]);
    let meta = fs::metadata(m.path("a/b.npy")).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o777),
        (4321, 8765, 0o440)
    );
    assert_eq!(fs::metadata(m.path("a")).unwrap().mode() & 0o777, 0o550);
}

#[test]
fn an_archive_truncated_in_place_gives_eio_and_the_daemon_lives() {
    let Some((_dir, archive)) = setup("an_archive_truncated_in_place") else {
        return;
    };
    let m = Mounted::background(&archive, &[]);
    fs::OpenOptions::new()
        .write(true)
        .open(&archive)
        .unwrap()
        .set_len(1000)
        .unwrap();
    let err = fs::read(m.path("a/c/d.npy")).unwrap_err();
    assert_eq!(errno(err), libc::EIO);
    let err = fs::read(m.path("big.npy")).unwrap_err();
    assert_eq!(errno(err), libc::EIO);
    // Still serving: metadata and listings come from the index, which stays valid.
    assert_eq!(fs::metadata(m.path("big.npy")).unwrap().len(), BIG as u64);
    npzfs::mountpoint::statfs(&m.mnt).unwrap();
}

#[test]
fn an_archive_replaced_by_rename_keeps_serving_the_old_content() {
    let Some((dir, archive)) = setup("an_archive_replaced_by_rename") else {
        return;
    };
    let m = Mounted::background(&archive, &[]);
    let other = dir.path().join("other.npz");
    write_zip(
        &other,
        b"",
        &[Entry::stored("a/b.npy", pattern(9, 0, 1000))],
    );
    fs::rename(&other, &archive).unwrap();
    assert_eq!(fs::read(m.path("a/b.npy")).unwrap(), pattern(2, 0, 1000));
    assert_eq!(fs::read(m.path("big.npy")).unwrap(), pattern(1, 0, BIG));
}

#[test]
fn unsupported_members_fail_with_eopnotsupp_and_the_rest_serves() {
    if !fuse_or_skip("unsupported_members") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("mixed.npz");
    let mut bz = Entry::stored("bz.npy", pattern(1, 0, 100));
    bz.method = 97; // WavPack: no decoder
    write_zip(
        &archive,
        b"",
        &[bz, Entry::stored("ok.npy", pattern(2, 0, 100))],
    );
    let m = Mounted::background(&archive, &[]);
    assert_eq!(fs::metadata(m.path("bz.npy")).unwrap().len(), 100);
    assert_eq!(
        errno(fs::read(m.path("bz.npy")).unwrap_err()),
        libc::EOPNOTSUPP
    );
    assert_eq!(fs::read(m.path("ok.npy")).unwrap(), pattern(2, 0, 100));
}

#[test]
fn concurrent_readers_and_mappers_see_the_same_bytes() {
    let Some((_dir, archive)) = setup("concurrent_readers") else {
        return;
    };
    let m = Mounted::background(&archive, &["-o", "threads=4"]);
    std::thread::scope(|s| {
        for t in 0..8u64 {
            let path = m.path(if t % 2 == 0 { "big.npy" } else { "a/c/d.npy" });
            s.spawn(move || {
                let file = fs::File::open(&path).unwrap();
                let len = file.metadata().unwrap().len();
                let seed = if t % 2 == 0 { 1 } else { 3 };
                // SAFETY: read-only mapping of a read-only mount that outlives the scope.
                let map = unsafe { memmap2::Mmap::map(&file) }.unwrap();
                for k in 0..200u64 {
                    let offset = (k * 7919 + t * 104_729) % len;
                    assert_eq!(map[offset as usize], common::byte_at(seed, offset));
                    let mut b = [0u8; 64];
                    let n = file.read_at(&mut b, offset).unwrap();
                    assert_eq!(&b[..n], &pattern(seed, offset, n)[..]);
                }
            });
        }
    });
}

#[test]
fn readahead_is_raised_on_the_mount_when_root() {
    if !require("readahead_is_raised", &[Need::Root]) {
        return;
    }
    let Some((_dir, archive)) = setup("readahead_is_raised") else {
        return;
    };
    for (opts, want) in [(&[][..], "1024"), (&["-o", "read_ahead_kb=512"][..], "512")] {
        let m = Mounted::background(&archive, opts);
        let dev = fs::metadata(&m.mnt).unwrap().dev();
        let path = format!(
            "/sys/class/bdi/{}:{}/read_ahead_kb",
            libc::major(dev),
            libc::minor(dev)
        );
        assert_eq!(fs::read_to_string(path).unwrap().trim(), want);
    }
}

#[test]
fn an_ordinary_user_mounts_reads_and_unmounts() {
    let needs = [Need::Fuse, Need::Root, Need::FuseForUsers];
    if !require("an_ordinary_user_mounts", &needs) {
        return;
    }
    let user = test_user();
    let dir = tempfile::tempdir().unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let archive = sample(dir.path());
    fs::set_permissions(&archive, fs::Permissions::from_mode(0o644)).unwrap();
    let (mnt, root_owned) = (dir.path().join("mnt"), dir.path().join("rootdir"));
    fs::create_dir(&mnt).unwrap();
    fs::create_dir(&root_owned).unwrap();
    let chown = Command::new("chown").arg(&user).arg(&mnt).status().unwrap();
    assert!(chown.success());
    let (a, mp) = (archive.to_str().unwrap(), mnt.to_str().unwrap());

    // No write access to the mount point: refused up front, exit 5.
    let out = as_user(&user, &[BIN, a, root_owned.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("permission denied"));

    let out = as_user(&user, &[BIN, a, mp]);
    assert!(
        out.status.success(),
        "user mount: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let guard = scopeguard(&mnt);
    let out = as_user(&user, &["cat", &format!("{mp}/a/b.npy")]);
    assert_eq!(out.stdout, pattern(2, 0, 1000));
    // Without allow_other even root is kept out.
    assert_eq!(
        errno(fs::read(mnt.join("a/b.npy")).unwrap_err()),
        libc::EACCES
    );
    let out = as_user(&user, &["fusermount3", "-u", mp]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!is_mounted(&mnt));
    drop(guard);
}

/// Unmounts `mnt` on drop, whatever the test did.
fn scopeguard(mnt: &Path) -> impl Drop + '_ {
    struct Guard<'a>(&'a Path);
    impl Drop for Guard<'_> {
        fn drop(&mut self) {
            common::mount::unmount(self.0);
        }
    }
    Guard(mnt)
}

#[test]
fn serving_a_large_stored_member_does_not_grow_the_daemon() {
    if !fuse_or_skip("serving_a_large_stored_member") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("big.npz");
    let len = 96 << 20;
    write_zip(&archive, b"", &[Entry::stored("x.npy", vec![7u8; len])]);
    let m = Mounted::foreground(&archive, &[]);
    let rss = || {
        let status = fs::read_to_string(format!("/proc/{}/status", m.pid())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace()
            .nth(1)
            .unwrap()
            .parse::<u64>()
            .unwrap()
            * 1024
    };
    let before = rss();
    let got = fs::read(m.path("x.npy")).unwrap();
    assert!(got.len() == len && got.iter().all(|&b| b == 7));
    // Replies come from the archive's mapping; its pages are let go once copied.
    let grown = rss().saturating_sub(before);
    assert!(
        grown < 16 << 20,
        "the daemon grew by {grown} bytes serving {len}"
    );
}

#[test]
fn an_archive_of_hostile_names_logs_one_line_for_all_of_them() {
    if !fuse_or_skip("an_archive_of_hostile_names_logs_one_line") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("hostile.npz");
    let mut entries: Vec<Entry> = (1..=200)
        .map(|k| Entry::stored(&"/".repeat(k), pattern(k as u64, 0, 10)))
        .collect();
    entries.push(Entry::stored("dup.npy", pattern(1, 0, 10)));
    entries.push(Entry::stored("dup.npy", pattern(2, 0, 20)));
    entries.push(Entry::stored("ok.npy", pattern(3, 0, 30)));
    write_zip(&archive, b"", &entries);
    let mut m = Mounted::foreground(&archive, &[]);
    assert_eq!(fs::read(m.path("ok.npy")).unwrap(), pattern(3, 0, 30));
    common::mount::unmount(&m.mnt);
    let (_, log) = m.exit_log();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("hostile.npz")).collect();
    assert_eq!(lines.len(), 1, "{log}");
    assert!(
        lines[0].contains("201 member names not shown as given: 200 without a usable name"),
        "{log}"
    );
    assert!(!log.contains("has no usable name"), "{log}");
}
