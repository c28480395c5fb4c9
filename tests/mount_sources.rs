//! Directory sources through real mounts: a dataset that changes while a reader walks it,
//! another user against private archives and planted symlinks, fewer file descriptors than
//! shards, and bad shards among good ones. The tree's rules without a kernel are in
//! `sources.rs`.

mod common;

use std::fs;
use std::io::Read;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use common::mount::{Mounted, Need, as_user, is_mounted, require, test_user, wait_until};
use common::{Entry, compressible, pattern, write_zip};

fn shard(path: &Path, seed: u64) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    let entries = [
        Entry::stored("x.npy", pattern(seed, 0, 4096)),
        Entry::deflated("y.npy", compressible(seed, 100_000)),
    ];
    write_zip(path, b"", &entries);
}

fn dataset(n: u64) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    for i in 0..n {
        shard(&dir.path().join(format!("train/shard_{i:04}.npz")), i);
    }
    dir
}

fn cache_opt(cache: &tempfile::TempDir) -> String {
    format!("cache_dir={}", cache.path().join("c").display())
}

fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[test]
fn shards_added_removed_and_replaced_show_within_a_second() {
    if !require("shards_added_removed", &[Need::Fuse]) {
        return;
    }
    let data = dataset(3);
    let cache = tempfile::tempdir().unwrap();
    let m = Mounted::background(data.path(), &["-o", &cache_opt(&cache)]);
    let train = m.path("train");
    assert_eq!(listing(&train), ["shard_0000", "shard_0001", "shard_0002"]);
    let x = |name: &str| fs::read(train.join(name).join("x.npy"));
    assert_eq!(x("shard_0001").unwrap(), pattern(1, 0, 4096));

    // Added while mounted: visible (listing and lookup) within about a second.
    let started = Instant::now();
    shard(&data.path().join("train/shard_0003.npz"), 3);
    assert!(wait_until(5, || x("shard_0003").is_ok()));
    assert!(listing(&train).contains(&"shard_0003".to_string()));
    eprintln!("added shard visible after {:?}", started.elapsed());

    // Removed and renamed.
    fs::remove_file(data.path().join("train/shard_0000.npz")).unwrap();
    let from = data.path().join("train/shard_0002.npz");
    fs::rename(&from, data.path().join("train/renamed.npz")).unwrap();
    assert!(wait_until(5, || x("shard_0000").is_err() && x("shard_0002").is_err()));
    assert_eq!(x("renamed").unwrap(), pattern(2, 0, 4096));
    assert_eq!(listing(&train), ["renamed", "shard_0001", "shard_0003"]);

    // Replaced by rename while a reader holds it open: the reader keeps the old version
    // (stored and deflated members alike), new opens get the new one, never a mix.
    let old_x = fs::File::open(train.join("shard_0001/x.npy")).unwrap();
    let old_y = fs::File::open(train.join("shard_0001/y.npy")).unwrap();
    let next = data.path().join("train/next.npz");
    shard(&next, 100);
    fs::rename(&next, data.path().join("train/shard_0001.npz")).unwrap();
    assert!(wait_until(5, || x("shard_0001")
        .is_ok_and(|b| b == pattern(100, 0, 4096))));
    let y_new = fs::read(train.join("shard_0001/y.npy")).unwrap();
    assert_eq!(y_new, compressible(100, 100_000));
    let mut buf = vec![0; 4096];
    old_x.read_exact_at(&mut buf, 0).unwrap();
    assert_eq!(buf, pattern(1, 0, 4096));
    let mut old = Vec::new();
    (&old_y).read_to_end(&mut old).unwrap();
    assert_eq!(old, compressible(1, 100_000));
    let (a, b) = (
        old_x.metadata().unwrap(),
        fs::metadata(train.join("shard_0001/x.npy")),
    );
    assert_ne!(a.ino(), b.unwrap().ino(), "two versions share an inode");

    // The whole source directory removed: ENOENT below the root, and the daemon lives on.
    fs::remove_dir_all(data.path().join("train")).unwrap();
    assert!(wait_until(5, || fs::metadata(&train).is_err()));
    assert!(fs::read_dir(&m.mnt).unwrap().next().is_none());
    assert!(is_mounted(&m.mnt));
}

#[test]
fn another_user_reads_only_what_the_source_lets_them() {
    if !require("another_user_reads", &[Need::Fuse, Need::Root]) {
        return;
    }
    let user = test_user();
    let data = dataset(1);
    let d = data.path();
    shard(&d.join("private.npz"), 7);
    fs::set_permissions(d.join("private.npz"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::create_dir(d.join("closed")).unwrap();
    shard(&d.join("closed/inner.npz"), 8);
    fs::set_permissions(d.join("closed"), fs::Permissions::from_mode(0o700)).unwrap();
    // Planted symlinks: to a root-only file outside, to the private archive inside, and a
    // directory link out of the source.
    let outside = tempfile::tempdir().unwrap();
    fs::set_permissions(outside.path(), fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(outside.path().join("secret"), b"root only").unwrap();
    fs::set_permissions(
        outside.path().join("secret"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    std::os::unix::fs::symlink(outside.path().join("secret"), d.join("escape")).unwrap();
    std::os::unix::fs::symlink("private", d.join("alias")).unwrap();
    std::os::unix::fs::symlink(outside.path(), d.join("outdir")).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let m = Mounted::background(d, &["-o", &format!("allow_other,{}", cache_opt(&cache))]);
    fs::set_permissions(m.mnt.parent().unwrap(), fs::Permissions::from_mode(0o755)).unwrap();
    let run = |args: &[&str]| as_user(&user, args);
    let p = |rel: &str| m.path(rel).display().to_string();
    let ok = |out: std::process::Output| {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    let denied = |out: std::process::Output| {
        assert!(
            !out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(err.contains("Permission denied"), "{err}");
    };
    // Readable archives are readable; private ones and closed directories are not.
    assert_eq!(
        ok(run(&["cat", &p("train/shard_0000/x.npy")])),
        pattern(0, 0, 4096)
    );
    denied(run(&["ls", &p("private")]));
    denied(run(&["cat", &p("private/x.npy")]));
    denied(run(&["ls", &p("closed")]));
    denied(run(&["cat", &p("closed/inner/x.npy")]));
    // Root reads them all through the same mount.
    assert_eq!(
        fs::read(m.path("private/x.npy")).unwrap(),
        pattern(7, 0, 4096)
    );
    assert_eq!(
        fs::read(m.path("closed/inner/x.npy")).unwrap(),
        pattern(8, 0, 4096)
    );
    // Symlinks are shown as symlinks, resolved by the reader's kernel with the reader's rights.
    let link = fs::symlink_metadata(m.path("escape")).unwrap();
    assert!(link.file_type().is_symlink());
    denied(run(&["cat", &p("escape")]));
    assert_eq!(
        fs::read_link(m.path("alias")).unwrap(),
        PathBuf::from("private")
    );
    denied(run(&["cat", &p("alias/x.npy")]));
    assert_eq!(
        fs::read(m.path("alias/x.npy")).unwrap(),
        pattern(7, 0, 4096)
    );
    // A link out of the source reaches what the reader could reach anyway, and no more.
    let direct = run(&["ls", &outside.path().display().to_string()]);
    assert_eq!(ok(run(&["ls", &p("outdir/")])), ok(direct));
    denied(run(&["cat", &p("outdir/secret")]));
    // Nothing is writable, to anyone.
    let touch = run(&["touch", &p("train/new")]);
    assert!(!touch.status.success());
}

#[test]
fn fewer_descriptors_than_shards() {
    if !require("fewer_descriptors", &[Need::Fuse]) {
        return;
    }
    let data = dataset(120);
    let cache = tempfile::tempdir().unwrap();
    let opts = cache_opt(&cache);
    let m = Mounted::foreground_with(data.path(), &["-o", &opts], |cmd| {
        // SAFETY: setrlimit is async-signal-safe and touches only this child.
        unsafe {
            cmd.pre_exec(|| {
                let lim = libc::rlimit {
                    rlim_cur: 48,
                    rlim_max: 48,
                };
                match libc::setrlimit(libc::RLIMIT_NOFILE, &lim) {
                    0 => Ok(()),
                    _ => Err(std::io::Error::last_os_error()),
                }
            });
        }
    });
    let fds = || {
        fs::read_dir(format!("/proc/{}/fd", m.pid()))
            .unwrap()
            .count()
    };
    for round in 0..2 {
        for i in 0..120 {
            let dir = m.path(&format!("train/shard_{i:04}"));
            assert_eq!(
                fs::read(dir.join("x.npy")).unwrap(),
                pattern(i, 0, 4096),
                "{round}"
            );
            if i % 10 == 0 {
                let y = fs::read(dir.join("y.npy")).unwrap();
                assert_eq!(y, compressible(i, 100_000));
            }
        }
        assert!(fds() <= 48, "{} descriptors", fds());
    }
    eprintln!("daemon descriptors after 240 shard reads: {}", fds());
}

#[test]
fn bad_shards_among_good_ones_log_once_and_the_rest_is_served() {
    if !require("bad_shards_among_good", &[Need::Fuse]) {
        return;
    }
    let data = dataset(2);
    let d = data.path().join("train");
    fs::write(d.join("text.npz"), b"not a zip").unwrap();
    let good = fs::read(d.join("shard_0000.npz")).unwrap();
    fs::write(d.join("cut.npz"), &good[..good.len() / 2]).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let mut m = Mounted::foreground(data.path(), &["-o", &cache_opt(&cache)]);
    let train = m.path("train");
    assert_eq!(listing(&train), ["cut", "shard_0000", "shard_0001", "text"]);
    for _ in 0..3 {
        for bad in ["cut", "text"] {
            let err = fs::read_dir(train.join(bad)).unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::EIO), "{bad}");
        }
        assert_eq!(
            fs::read(train.join("shard_0001/x.npy")).unwrap(),
            pattern(1, 0, 4096)
        );
    }
    common::mount::unmount(&m.mnt);
    let mut child = m.daemon.take().unwrap();
    assert!(wait_until(10, || child.try_wait().unwrap().is_some()));
    let mut log = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    for bad in ["cut.npz", "text.npz"] {
        let lines = log
            .lines()
            .filter(|l| l.contains(bad) && l.contains("warning"))
            .count();
        assert_eq!(lines, 1, "{bad}:\n{log}");
    }
}

/// Every file under `dir` by path, with its inode (symlinks not followed).
fn inodes(dir: &Path, prefix: &str, out: &mut std::collections::BTreeMap<String, u64>) {
    for entry in fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let name = format!("{prefix}{}", entry.file_name().to_string_lossy());
        let meta = fs::symlink_metadata(entry.path()).unwrap();
        out.insert(name.clone(), meta.ino());
        if meta.is_dir() {
            inodes(&entry.path(), &format!("{name}/"), out);
        }
    }
}

#[test]
fn nested_trees_clashes_and_several_sources_through_the_kernel() {
    if !require("nested_trees_clashes", &[Need::Fuse]) {
        return;
    }
    let data = dataset(2);
    let d = data.path();
    shard(&d.join("a/b/c/deep.npz"), 5);
    shard(&d.join("x.npz"), 6);
    fs::create_dir(d.join("x")).unwrap();
    fs::write(d.join("x/note.txt"), b"a directory called x").unwrap();
    std::os::unix::fs::symlink("train/shard_0001", d.join("latest")).unwrap();
    let other = tempfile::tempdir().unwrap();
    shard(&other.path().join("train.npz"), 9);
    let cache = tempfile::tempdir().unwrap();
    let opts = ["-o", &cache_opt(&cache)];
    let m = Mounted::background(d, &opts);
    assert_eq!(listing(&m.mnt), ["a", "latest", "train", "x", "x.npz"]);
    assert_eq!(
        fs::read(m.path("a/b/c/deep/x.npy")).unwrap(),
        pattern(5, 0, 4096)
    );
    assert_eq!(
        fs::read(m.path("x.npz/x.npy")).unwrap(),
        pattern(6, 0, 4096)
    );
    assert_eq!(
        fs::read(m.path("x/note.txt")).unwrap(),
        b"a directory called x"
    );
    // A relative symlink resolves inside the mount.
    assert_eq!(
        fs::read(m.path("latest/x.npy")).unwrap(),
        pattern(1, 0, 4096)
    );
    let meta = fs::metadata(m.path("train/shard_0000/y.npy")).unwrap();
    assert_eq!(meta.len(), 100_000);
    assert_eq!(meta.mode() & 0o222, 0, "read-only");
    let mut first = Default::default();
    inodes(&m.mnt, "", &mut first);
    let unique: std::collections::HashSet<_> = first.values().collect();
    assert_eq!(unique.len(), first.len(), "inode numbers repeat: {first:?}");
    drop(m);
    // The same tree mounted again shows the same inode numbers.
    let m = Mounted::background(d, &opts);
    let mut again = Default::default();
    inodes(&m.mnt, "", &mut again);
    assert_eq!(first, again);
    drop(m);
    // Several sources side by side: a clash of names is numbered in command-line order.
    let sources = [
        d.join("train"),
        other.path().join("train.npz"),
        d.join("x.npz"),
    ];
    let refs: Vec<&Path> = sources.iter().map(PathBuf::as_path).collect();
    let m = Mounted::background_all(&refs, &opts);
    assert_eq!(listing(&m.mnt), ["train", "train (1)", "x"]);
    assert_eq!(
        fs::read(m.path("train (1)/x.npy")).unwrap(),
        pattern(9, 0, 4096)
    );
    assert_eq!(
        fs::read(m.path("train/shard_0001/x.npy")).unwrap(),
        pattern(1, 0, 4096)
    );
    assert_eq!(
        fs::read(m.path("x/y.npy")).unwrap(),
        compressible(6, 100_000)
    );
}

#[test]
fn a_reader_walking_while_shards_change_never_sees_a_mix() {
    if !require("a_reader_walking", &[Need::Fuse]) {
        return;
    }
    let data = dataset(8);
    let cache = tempfile::tempdir().unwrap();
    let m = Mounted::background(data.path(), &["-o", &cache_opt(&cache)]);
    let train = m.path("train");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Shard i is written with seed i, later replaced with seed 1000 + i: every read of x.npy
    // is one of the two, whole.
    let walker = {
        let (stop, train) = (stop.clone(), train.clone());
        std::thread::spawn(move || {
            let mut reads = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for entry in fs::read_dir(&train).into_iter().flatten().flatten() {
                    let name = entry.file_name().into_string().unwrap();
                    let Some(i) = name.strip_prefix("shard_").and_then(|n| n.parse().ok()) else {
                        continue;
                    };
                    match fs::read(entry.path().join("x.npy")) {
                        Ok(bytes) => {
                            let i: u64 = i;
                            let ok = [i, 1000 + i].iter().any(|&s| bytes == pattern(s, 0, 4096));
                            assert!(ok, "{name}: bytes of neither version");
                            reads += 1;
                        }
                        // Removed or replaced between the listing and the read.
                        Err(e) => assert_eq!(e.raw_os_error(), Some(libc::ENOENT), "{name}: {e}"),
                    }
                }
            }
            reads
        })
    };
    let d = data.path().join("train");
    for round in 0..3 {
        for i in 0..8u64 {
            let next = d.join(format!("next_{i}.tmp"));
            shard(&next, if round % 2 == 0 { 1000 + i } else { i });
            fs::rename(&next, d.join(format!("shard_{i:04}.npz"))).unwrap();
        }
        fs::remove_file(d.join("shard_0007.npz")).unwrap();
        shard(&d.join("shard_0008.npz"), 8);
        fs::remove_file(d.join("shard_0008.npz")).unwrap();
        shard(&d.join("shard_0007.npz"), 7);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let reads = walker.join().expect("the walker saw wrong bytes");
    assert!(reads > 0);
    assert!(wait_until(5, || listing(&train).len() == 8));
}
