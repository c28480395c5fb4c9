//! `-o materialize`: stored members copied into the cache, then served by FUSE passthrough,
//! through real mounts as root (passthrough needs it): the copy's life (served from the
//! archive meanwhile, checked, named complete, then passthrough), eviction under a small
//! budget while readers map copies, a copy killed mid-way and resumed by the next mount, an
//! archive truncated mid-copy, and an ordinary user for whom the option is ignored.

mod common;

use std::fs;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use common::mount::{BIN, Mounted, Need, getxattr, require, test_user, wait_until};
use common::{Entry, cache_files, pattern, write_zip};

const MIB: usize = 1 << 20;

fn opts(cache: &Path, size: &str) -> String {
    format!(
        "materialize,cache_dir={},cache_size={size}",
        cache.display()
    )
}

/// Names of the complete copies (`<n>-<crc>-<size>`) and partial ones in `cache`.
fn copies(cache: &Path) -> (Vec<String>, Vec<String>) {
    let names: Vec<String> = cache_files(cache).into_iter().map(|(n, _)| n).collect();
    names.into_iter().partition(|n| !n.ends_with(".part"))
}

#[test]
fn a_stored_member_is_copied_checked_and_then_served_by_passthrough() {
    if !require("materialize_then_passthrough", &[Need::Fuse, Need::Root]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (archive, cache) = (dir.path().join("a.npz"), dir.path().join("cache"));
    let data = pattern(1, 0, 24 * MIB);
    write_zip(&archive, b"", &[Entry::stored("x.npy", data.clone())]);
    let m = Mounted::foreground(&archive, &["-o", &opts(&cache, "1G")]);
    let x = m.path("x.npy");
    let state = || getxattr(&x, "user.npzfs.state", 64).map(|v| String::from_utf8(v).unwrap());
    assert_eq!(state(), Ok("archive".into()), "before its first open");
    // The first open starts the copy and is served from the archive meanwhile.
    assert!(fs::read(&x).unwrap() == data);
    assert!(
        wait_until(30, || copies(&cache).0.len() == 1),
        "{:?}",
        copies(&cache)
    );
    // Complete: the attributes say so, and the next open passes through.
    assert_eq!(state(), Ok("passthrough".into()));
    let cached = getxattr(&x, "user.npzfs.cached", 64).unwrap();
    assert_eq!(cached, (24 * MIB).to_string().as_bytes());
    let by_passthrough = |m: &Mounted| passthrough_read(m, 24 * MIB).as_deref() == Some(&data[..]);
    assert!(
        by_passthrough(&m),
        "the read needed the daemon: not passthrough"
    );
    drop(m);
    // A remount of the unchanged archive serves the same copy by passthrough at once.
    let m = Mounted::foreground(&archive, &["-o", &opts(&cache, "1G")]);
    assert!(by_passthrough(&m), "a remount's read needed the daemon");
    assert_eq!(copies(&cache).0.len(), 1, "reused, not copied again");
    drop(m);
    // The archive changed: its copies go, and a new one is made for the new version.
    let changed = pattern(2, 0, 24 * MIB);
    write_zip(&archive, b"", &[Entry::stored("x.npy", changed.clone())]);
    let m = Mounted::foreground(&archive, &["-o", &opts(&cache, "1G")]);
    assert!(fs::read(m.path("x.npy")).unwrap() == changed);
    let renewed = || copies(&cache).0 == vec![complete_name(&changed)];
    assert!(wait_until(30, renewed), "{:?}", copies(&cache));
}

/// The first `len` bytes of x.npy read with the daemon stopped: only passthrough can answer
/// (the kernel reads the copy itself); None if the read needed the daemon.
fn passthrough_read(m: &Mounted, len: usize) -> Option<Vec<u8>> {
    let file = fs::File::open(m.path("x.npy")).unwrap();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(m.pid(), libc::SIGSTOP) };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; len];
        let _ = tx.send(file.read_exact_at(&mut buf, 0).map(|()| buf));
    });
    let got = rx.recv_timeout(std::time::Duration::from_secs(10));
    // SAFETY: as above.
    unsafe { libc::kill(m.pid(), libc::SIGCONT) };
    got.ok().and_then(Result::ok)
}

#[test]
fn copies_are_evicted_under_a_small_budget_but_never_while_mapped() {
    if !require("materialize_eviction", &[Need::Fuse, Need::Root]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (archive, cache) = (dir.path().join("a.npz"), dir.path().join("cache"));
    let members: Vec<Vec<u8>> = (0..4).map(|i| pattern(10 + i, 0, 4 * MIB)).collect();
    let entries: Vec<Entry> = (0..4)
        .map(|i| Entry::stored(&format!("m{i}.npy"), members[i].clone()))
        .collect();
    write_zip(&archive, b"", &entries);
    // Room for two copies and a half.
    let m = Mounted::foreground(&archive, &["-o", &opts(&cache, "10M")]);
    let mapped = fs::File::open(m.path("m0.npy")).unwrap();
    // SAFETY: a read-only shared mapping of a file on our own mount, dropped before unmount.
    let map = unsafe { memmap2::Mmap::map(&mapped).unwrap() };
    for round in 0..2 {
        for (i, want) in members.iter().enumerate() {
            assert!(
                fs::read(m.path(&format!("m{i}.npy"))).unwrap() == *want,
                "{round} {i}"
            );
            let held = 4 * MIB as u64; // m0, mapped, stays whatever the budget
            let on_disk: u64 = cache_files(&cache).iter().map(|(_, b)| b).sum();
            assert!(on_disk <= 10 * MIB as u64 + held, "{round} {i}: {on_disk}");
        }
    }
    assert!(map[..] == members[0][..], "the mapped copy stayed readable");
    // The mapped member's copy is never evicted; it is named complete once the copy (which
    // yields to readers for up to 5 s) is checked and synced.
    let kept = || copies(&cache).0.iter().any(|n| n.starts_with("0-"));
    assert!(wait_until(30, kept), "{:?}", copies(&cache));
    drop(map);
}

#[test]
fn a_copy_killed_midway_is_resumed_by_the_next_mount() {
    if !require("materialize_killed", &[Need::Fuse, Need::Root]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (archive, cache) = (dir.path().join("a.npz"), dir.path().join("cache"));
    let data = pattern(3, 0, 256 * MIB);
    write_zip(&archive, b"", &[Entry::stored("x.npy", data.clone())]);
    let mut m = Mounted::foreground(&archive, &["-o", &opts(&cache, "1G")]);
    let _reader = fs::File::open(m.path("x.npy")).unwrap();
    assert!(
        wait_until(10, || !copies(&cache).1.is_empty()),
        "no copy started"
    );
    let mut daemon = m.daemon.take().unwrap();
    daemon.kill().unwrap();
    daemon.wait().unwrap();
    let (complete, partial) = copies(&cache);
    assert!(
        complete.is_empty() && partial.len() == 1,
        "killed mid-copy: {complete:?} {partial:?}"
    );
    drop(_reader);
    drop(m);
    let m = Mounted::foreground(&archive, &["-o", &opts(&cache, "1G")]);
    let f = fs::File::open(m.path("x.npy")).unwrap();
    let mut head = vec![0u8; MIB];
    f.read_exact_at(&mut head, 0).unwrap();
    assert!(head[..] == data[..MIB]);
    assert!(wait_until(30, || copies(&cache)
        == (vec![complete_name(&data)], vec![])));
}

/// The cache name of member 0 holding `data`.
fn complete_name(data: &[u8]) -> String {
    format!("0-{:08x}-{:x}", crc32fast::hash(data), data.len())
}

#[test]
fn an_archive_truncated_mid_copy_gives_eio_and_no_complete_copy() {
    if !require("materialize_truncated", &[Need::Fuse, Need::Root]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (archive, cache) = (dir.path().join("a.npz"), dir.path().join("cache"));
    let data = pattern(4, 0, 256 * MIB);
    write_zip(&archive, b"", &[Entry::stored("x.npy", data)]);
    let m = Mounted::foreground(&archive, &["-o", &opts(&cache, "1G")]);
    let f = fs::File::open(m.path("x.npy")).unwrap();
    // The copy runs in the background; the archive loses its second half under it.
    fs::OpenOptions::new()
        .write(true)
        .open(&archive)
        .unwrap()
        .set_len(128 * MIB as u64)
        .unwrap();
    assert!(
        wait_until(30, || copies(&cache) == (vec![], vec![])),
        "{:?}",
        copies(&cache)
    );
    let mut buf = vec![0u8; 4096];
    let err = f.read_exact_at(&mut buf, 200 * MIB as u64).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO));
}

#[test]
fn an_ordinary_user_mounts_and_the_option_is_ignored_with_one_line() {
    let needs = [Need::Fuse, Need::Root, Need::FuseForUsers];
    if !require("materialize_ordinary_user", &needs) {
        return;
    }
    let user = test_user();
    let dir = tempfile::tempdir().unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let (archive, mnt) = (dir.path().join("a.npz"), dir.path().join("mnt"));
    write_zip(
        &archive,
        b"",
        &[Entry::stored("x.npy", pattern(5, 0, 1000))],
    );
    fs::set_permissions(&archive, fs::Permissions::from_mode(0o644)).unwrap();
    fs::create_dir(&mnt).unwrap();
    assert!(
        Command::new("chown")
            .arg(&user)
            .arg(&mnt)
            .status()
            .unwrap()
            .success()
    );
    let out = Command::new("runuser")
        .args(["-u", &user, "--", BIN])
        .arg(&archive)
        .arg(&mnt)
        .args(["-o", "materialize"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    common::mount::unmount(&mnt);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        stderr,
        "npzfs: info: option materialize ignored: FUSE passthrough is unavailable here (it \
         needs root in the initial user namespace and Linux 6.9+, and not nopassthrough)\n"
    );
}
