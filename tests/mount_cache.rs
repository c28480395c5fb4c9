//! Compressed members through a real mount: exact bytes, the budget under concurrent readers,
//! a daemon killed mid-decode, a full cache disk.

mod common;

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::mount::{Mounted, Need, fuse_or_skip, is_mounted, npzfs, require, unmount, wait_until};
use common::{Entry, compressible, pattern, payload_offset, write_zip};

const MIB: usize = 1 << 20;

/// Bytes the cache directory's member files occupy on disk.
fn cache_bytes(cache: &Path) -> u64 {
    common::cache_files(cache).iter().map(|(_, b)| b).sum()
}

fn cache_names(cache: &Path) -> Vec<String> {
    common::cache_files(cache)
        .into_iter()
        .map(|(n, _)| n)
        .collect()
}

fn opt(cache: &Path, size: &str) -> String {
    format!("cache_dir={},cache_size={size}", cache.display())
}

#[test]
fn compressed_members_read_and_map_exactly() {
    if !fuse_or_skip("compressed_members_read_and_map_exactly") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (archive, cache) = (dir.path().join("c.npz"), dir.path().join("cache"));
    let big = compressible(1, 20 * MIB + 5);
    write_zip(
        &archive,
        b"",
        &[
            Entry::deflated("big.npy", big.clone()),
            Entry::stored("plain.npy", pattern(2, 0, 5000)),
        ],
    );
    let m = Mounted::background(&archive, &["-o", &opt(&cache, "1G")]);
    assert_eq!(
        fs::metadata(m.path("big.npy")).unwrap().len(),
        big.len() as u64
    );
    let file = fs::File::open(m.path("big.npy")).unwrap();
    // SAFETY: read-only mapping of a read-only mount that outlives it.
    let map = unsafe { memmap2::Mmap::map(&file) }.unwrap();
    for offset in [19 * MIB, 0, 4095, 10 * MIB + 1, big.len() - 1] {
        assert_eq!(map[offset], big[offset], "mmap at {offset}");
    }
    assert_eq!(&map[..], &big[..]);
    assert_eq!(fs::read(m.path("big.npy")).unwrap(), big);
    assert_eq!(fs::read(m.path("plain.npy")).unwrap(), pattern(2, 0, 5000));
}

#[test]
fn many_readers_with_a_cache_smaller_than_the_working_set() {
    if !fuse_or_skip("many_readers_with_a_small_cache") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (archive, cache) = (dir.path().join("c.npz"), dir.path().join("cache"));
    let members: Vec<Vec<u8>> = (0..6).map(|i| compressible(10 + i, 4 * MIB)).collect();
    let entries: Vec<Entry> = members
        .iter()
        .enumerate()
        .map(|(i, d)| Entry::deflated(&format!("m{i}.npy"), d.clone()))
        .collect();
    write_zip(&archive, b"", &entries);
    let budget = 8 * MIB as u64;
    let m = Mounted::background(
        &archive,
        &["-o", &format!("{},threads=4", opt(&cache, "8M"))],
    );
    let readers = 3u64;
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let (done, cache, members, m) = (&done, &cache, &members, &m);
        // At most one member per reader is held open at a time: the bound plus that.
        s.spawn(move || {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let used = cache_bytes(cache);
                assert!(
                    used <= budget + readers * 4 * MIB as u64,
                    "cache {used} bytes"
                );
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
        });
        let handles: Vec<_> = (0..readers)
            .map(|t| {
                s.spawn(move || {
                    for round in 0..4u64 {
                        let i = ((t * 2 + round * 5) % 6) as usize;
                        let got = fs::read(m.path(&format!("m{i}.npy"))).unwrap();
                        assert!(got == members[i], "reader {t} member {i}");
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    assert!(
        wait_until(10, || cache_bytes(&cache) <= budget),
        "{}",
        cache_bytes(&cache)
    );
}

#[test]
fn killed_mid_decode_the_next_mount_never_serves_a_partial_file() {
    if !fuse_or_skip("killed_mid_decode") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (archive, cache) = (dir.path().join("c.npz"), dir.path().join("cache"));
    let big = compressible(3, 256 * MIB);
    write_zip(&archive, b"", &[Entry::deflated("big.npy", big.clone())]);
    let o = opt(&cache, "1G");
    let mut m = Mounted::foreground(&archive, &["-o", &o]);
    let file = fs::File::open(m.path("big.npy")).unwrap();
    let mut head = [0u8; 128];
    file.read_exact_at(&mut head, 0).unwrap();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(m.pid(), libc::SIGKILL) };
    m.daemon.as_mut().unwrap().wait().unwrap();
    drop(file);
    let names = cache_names(&cache);
    assert!(
        names.iter().all(|n| n.ends_with(".part")),
        "only partial files after a kill mid-decode: {names:?}"
    );
    unmount(&m.mnt);
    let out = npzfs(&[archive.to_str().unwrap(), m.mnt.to_str().unwrap(), "-o", &o]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(fs::read(m.path("big.npy")).unwrap() == big);
    let settled = || !cache_names(&cache).iter().any(|n| n.ends_with(".part"));
    assert!(wait_until(30, settled), "{:?}", cache_names(&cache));
}

#[test]
fn corrupt_members_give_eio_and_the_rest_serves() {
    if !fuse_or_skip("corrupt_members_give_eio") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (archive, cache) = (dir.path().join("c.npz"), dir.path().join("cache"));
    let mut crc = Entry::deflated("crc.npy", compressible(4, 300_000));
    crc.declared_crc = Some(1);
    let entries = [
        crc,
        Entry::deflated("bad.npy", compressible(5, 300_000)),
        Entry::deflated("ok.npy", compressible(6, 1000)),
    ];
    let mut bytes = common::build_zip(b"", &entries);
    let at = payload_offset(&entries, 1);
    bytes[at..at + 100].iter_mut().for_each(|b| *b = !*b);
    fs::write(&archive, bytes).unwrap();
    let m = Mounted::background(&archive, &["-o", &opt(&cache, "1G")]);
    for name in ["crc.npy", "bad.npy"] {
        let err = fs::read(m.path(name)).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EIO), "{name}");
    }
    assert_eq!(fs::read(m.path("ok.npy")).unwrap(), compressible(6, 1000));
}

/// A tmpfs of `mib` MiB at a fresh directory, unmounted on drop.
struct Tmpfs(PathBuf, #[allow(dead_code)] tempfile::TempDir);

impl Tmpfs {
    fn new(mib: usize) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t");
        fs::create_dir(&path).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(&path)
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Tmpfs(path, dir))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_cache_disk_gives_clean_errors_and_the_daemon_serves_on() {
    if !require("a_full_cache_disk", &[Need::Fuse, Need::Root]) {
        return;
    }
    let Some(tmpfs) = Tmpfs::new(4) else {
        panic!("cannot mount a tmpfs as root")
    };
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("c.npz");
    write_zip(
        &archive,
        b"",
        &[
            Entry::deflated("big.npy", compressible(7, 16 * MIB)),
            Entry::deflated("small.npy", compressible(8, 100_000)),
            Entry::stored("plain.npy", pattern(9, 0, 1000)),
        ],
    );
    let m = Mounted::background(&archive, &["-o", &opt(&tmpfs.0.join("cache"), "1G")]);
    let err = fs::read(m.path("big.npy")).unwrap_err();
    assert!(
        matches!(err.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EIO)),
        "{err}"
    );
    assert_eq!(
        fs::read(m.path("small.npy")).unwrap(),
        compressible(8, 100_000)
    );
    assert_eq!(fs::read(m.path("plain.npy")).unwrap(), pattern(9, 0, 1000));
    assert!(is_mounted(&m.mnt));
}

#[test]
fn a_complete_member_is_served_by_passthrough_when_root() {
    if !require("passthrough", &[Need::Fuse, Need::Root]) {
        return;
    }
    for passthrough in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let (archive, cache) = (dir.path().join("c.npz"), dir.path().join("cache"));
        let data = compressible(20, 8 * MIB);
        write_zip(&archive, b"", &[Entry::deflated("x.npy", data.clone())]);
        let mut o = opt(&cache, "1G");
        if !passthrough {
            o.push_str(",nopassthrough");
        }
        let m = Mounted::foreground(&archive, &["-o", &o]);
        // Open and close without reading: the member decodes in the background and is kept,
        // and no page of it enters the mount's page cache.
        drop(fs::File::open(m.path("x.npy")).unwrap());
        let complete = || cache_names(&cache).iter().any(|n| n.starts_with("0-"));
        assert!(wait_until(30, complete), "{:?}", cache_names(&cache));
        let file = fs::File::open(m.path("x.npy")).unwrap();
        // With the daemon stopped, only passthrough can answer: the kernel reads the cache
        // file. Without it, the read waits for the daemon to run again.
        // SAFETY: signalling our own child.
        unsafe { libc::kill(m.pid(), libc::SIGSTOP) };
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 8 * MIB];
            let _ = tx.send(file.read_exact_at(&mut buf, 0).map(|()| buf));
        });
        let timeout = std::time::Duration::from_secs(if passthrough { 10 } else { 2 });
        let got = rx.recv_timeout(timeout);
        // SAFETY: as above.
        unsafe { libc::kill(m.pid(), libc::SIGCONT) };
        let bytes = match (passthrough, got) {
            (true, got) => got.expect("the read needed the daemon: not passthrough"),
            (false, Ok(_)) => panic!("nopassthrough: answered while the daemon was stopped"),
            (false, Err(_)) => rx.recv_timeout(std::time::Duration::from_secs(30)).unwrap(),
        };
        assert!(bytes.unwrap() == data);
    }
}

#[test]
fn a_relative_cache_dir_is_relative_to_where_npzfs_was_started() {
    if !fuse_or_skip("a_relative_cache_dir") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = compressible(21, 100_000);
    write_zip(
        &dir.path().join("c.npz"),
        b"",
        &[Entry::deflated("x.npy", data.clone())],
    );
    fs::create_dir(dir.path().join("mnt")).unwrap();
    let out = Command::new(common::mount::BIN)
        .current_dir(dir.path())
        .args(["c.npz", "mnt", "-o", "cache_dir=rel/cache"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mnt = dir.path().join("mnt");
    let read = fs::read(mnt.join("x.npy"));
    unmount(&mnt);
    assert!(read.unwrap() == data);
    assert!(!cache_names(&dir.path().join("rel/cache")).is_empty());
}
