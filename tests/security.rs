//! What npzfs promises about access (SECURITY.md), through real mounts and a real second uid:
//! nobody else gets in without allow_other, everyone is read-only, the cache is private, and no
//! member name or planted symlink makes the daemon touch anything outside its directories.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use common::mount::{Mounted, Need, as_user, require, test_user, wait_until};
use common::{Entry, compressible, pattern, write_zip};

/// A root mount and a second user, or None (skipped) when not root or FUSE is unusable.
fn setup(test: &str) -> Option<(String, tempfile::TempDir)> {
    if !require(test, &[Need::Fuse, Need::Root]) {
        return None;
    }
    let user = test_user();
    let dir = tempfile::tempdir().unwrap();
    // Reachable by the other user, so that only the mount's own rules can stop them.
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    Some((user, dir))
}

fn mount(archive: &Path, opts: &[&str]) -> Mounted {
    let m = Mounted::background(archive, opts);
    let parent = m.mnt.parent().unwrap();
    fs::set_permissions(parent, fs::Permissions::from_mode(0o755)).unwrap();
    m
}

fn fails(out: &std::process::Output, why: &str) -> bool {
    !out.status.success() && String::from_utf8_lossy(&out.stderr).contains(why)
}

#[test]
fn without_allow_other_another_user_can_neither_list_nor_read() {
    let Some((user, dir)) = setup("without_allow_other") else {
        return;
    };
    let archive = dir.path().join("a.npz");
    write_zip(
        &archive,
        b"",
        &[Entry::stored("x.npy", pattern(1, 0, 1000))],
    );
    fs::set_permissions(&archive, fs::Permissions::from_mode(0o644)).unwrap();
    let m = mount(&archive, &[]);
    let (mnt, x) = (m.mnt.to_str().unwrap(), m.path("x.npy"));
    let x = x.to_str().unwrap();
    assert_eq!(fs::read(x).unwrap(), pattern(1, 0, 1000), "the owner reads");
    for args in [
        &["ls", mnt][..],
        &["cat", x],
        &["stat", x],
        &["ls", "-d", mnt],
    ] {
        let out = as_user(&user, args);
        assert!(fails(&out, "Permission denied"), "{args:?}: {out:?}");
    }
}

#[test]
fn with_allow_other_everyone_reads_and_nobody_writes() {
    let Some((user, dir)) = setup("with_allow_other") else {
        return;
    };
    let archive = dir.path().join("a.npz");
    write_zip(
        &archive,
        b"",
        &[
            Entry::stored("x.npy", pattern(1, 0, 1000)),
            Entry::deflated("d/z.npy", compressible(2, 5000)),
        ],
    );
    let cache = dir.path().join("cache");
    let opts = format!("allow_other,cache_dir={}", cache.display());
    let m = mount(&archive, &["-o", &opts]);
    let p = |rel: &str| m.path(rel).to_str().unwrap().to_string();
    let out = as_user(&user, &["cat", &p("x.npy")]);
    assert_eq!(out.stdout, pattern(1, 0, 1000), "{out:?}");
    let out = as_user(&user, &["cat", &p("d/z.npy")]);
    assert_eq!(out.stdout, compressible(2, 5000), "{out:?}");
    for rel in ["x.npy", "d/z.npy", "d", ""] {
        let mode = fs::metadata(m.path(rel)).unwrap().mode();
        assert_eq!(mode & 0o222, 0, "{rel}: mode {mode:o} has write bits");
    }
    let writes: [&[&str]; 7] = [
        &["touch", &p("new.npy")],
        &["sh", "-c", &format!("echo x >> {}", p("x.npy"))],
        &["rm", "-f", &p("x.npy")],
        &["mkdir", &p("newdir")],
        &["mv", &p("x.npy"), &p("y.npy")],
        &["chmod", "666", &p("x.npy")],
        &["truncate", "-s", "0", &p("x.npy")],
    ];
    for args in writes {
        for who in [Some(user.as_str()), None] {
            let out = match who {
                Some(u) => as_user(u, args),
                None => std::process::Command::new(args[0])
                    .args(&args[1..])
                    .output()
                    .unwrap(),
            };
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                !out.status.success()
                    && [
                        "Read-only file system",
                        "Permission denied",
                        "Operation not permitted"
                    ]
                    .iter()
                    .any(|w| stderr.contains(w)),
                "{who:?} {args:?}: {out:?}"
            );
        }
    }
    assert_eq!(fs::read(m.path("x.npy")).unwrap(), pattern(1, 0, 1000));
}

#[test]
fn the_cache_is_private_to_the_daemons_user() {
    let Some((user, dir)) = setup("the_cache_is_private") else {
        return;
    };
    let archive = dir.path().join("a.npz");
    write_zip(
        &archive,
        b"",
        &[Entry::deflated("z.npy", compressible(3, 3 << 20))],
    );
    let cache = dir.path().join("cache");
    let m = mount(&archive, &["-o", &format!("cache_dir={}", cache.display())]);
    assert_eq!(fs::read(m.path("z.npy")).unwrap(), compressible(3, 3 << 20));
    assert!(wait_until(10, || !common::seek_files(&cache).is_empty()));
    let files = tree(&cache);
    assert!(files.len() >= 4, "{files:?}");
    for (path, (kind, mode)) in &files {
        if path == &cache {
            continue;
        }
        let want = if *kind == 'd' { 0o700 } else { 0o600 };
        assert_eq!(*mode, want, "{}: {mode:o}", path.display());
        let out = as_user(&user, &["cat", path.to_str().unwrap()]);
        assert!(
            fails(&out, "Permission denied"),
            "{}: {out:?}",
            path.display()
        );
    }
}

/// Every path under `root` (itself included): kind ('d', 'f', 'l') and permission bits.
fn tree(root: &Path) -> BTreeMap<PathBuf, (char, u32)> {
    let mut out = BTreeMap::new();
    let meta = fs::symlink_metadata(root).unwrap();
    let kind = match meta.file_type() {
        t if t.is_symlink() => 'l',
        t if t.is_dir() => 'd',
        _ => 'f',
    };
    out.insert(root.to_path_buf(), (kind, meta.mode() & 0o7777));
    if kind == 'd' {
        for e in fs::read_dir(root).unwrap() {
            out.extend(tree(&e.unwrap().path()));
        }
    }
    out
}

#[test]
fn member_names_reach_nothing_outside_the_mount_or_the_cache() {
    let Some((_user, dir)) = setup("member_names_reach_nothing_outside") else {
        return;
    };
    // The archive and cache sit deep, so that a name climbing out would land in `dir`.
    let deep = dir.path().join("a/b/c");
    fs::create_dir_all(&deep).unwrap();
    let archive = deep.join("evil.npz");
    let names = [
        "../../escape1.npy",
        "/tmp/npzfs-escape2.npy",
        "a/../../../escape3.npy",
        "..\\..\\escape4.npy",
        "../../../../../../../../tmp/npzfs-escape5.npy",
    ];
    let entries: Vec<Entry> = names
        .iter()
        .enumerate()
        .map(|(i, n)| match i % 2 {
            0 => Entry::deflated(n, compressible(i as u64, 100_000)),
            _ => Entry::stored(n, pattern(i as u64, 0, 1000)),
        })
        .collect();
    write_zip(&archive, b"", &entries);
    let cache = deep.join("cache");
    let before = tree(dir.path());
    let m = mount(&archive, &["-o", &format!("cache_dir={}", cache.display())]);
    let shown = [
        "escape1.npy",
        "tmp/npzfs-escape2.npy",
        "a/escape3.npy",
        "escape4.npy",
        "tmp/npzfs-escape5.npy",
    ];
    for (i, rel) in shown.iter().enumerate() {
        let want = match i % 2 {
            0 => compressible(i as u64, 100_000),
            _ => pattern(i as u64, 0, 1000),
        };
        assert_eq!(fs::read(m.path(rel)).unwrap(), want, "{rel}");
    }
    drop(m);
    for p in ["/tmp/npzfs-escape2.npy", "/tmp/npzfs-escape5.npy"] {
        assert!(!Path::new(p).exists(), "{p}");
    }
    // Outside the cache directory nothing changed; inside it, only the store's own names.
    let after = tree(dir.path());
    let outside = |t: &BTreeMap<PathBuf, (char, u32)>| -> Vec<PathBuf> {
        t.keys()
            .filter(|p| !p.starts_with(&cache))
            .cloned()
            .collect()
    };
    assert_eq!(outside(&before), outside(&after));
    for path in after.keys().filter(|p| p.starts_with(&cache)) {
        let name = path.file_name().unwrap().to_str().unwrap();
        let depth = path.strip_prefix(&cache).unwrap().components().count();
        // Member files, seek indexes and partial files (a decode the unmount stopped under
        // load leaves one, which the next mount deletes): hex and decimal fields only.
        let field = |p: &str| {
            p.is_empty() || p == "seek" || p == "part" || p.chars().all(|c| c.is_ascii_hexdigit())
        };
        let ours = depth <= 1 || name == "archive" || name.split(['-', '.']).all(field);
        assert!(ours && depth <= 2, "{}", path.display());
    }
}

#[test]
fn symlinks_planted_in_the_cache_directory_are_never_followed() {
    let Some((_user, dir)) = setup("symlinks_planted_in_the_cache") else {
        return;
    };
    let archive = dir.path().join("a.npz");
    let data = compressible(5, 3 << 20);
    write_zip(&archive, b"", &[Entry::deflated("z.npy", data.clone())]);
    let cache = dir.path().join("cache");
    let opts = format!("cache_dir={}", cache.display());
    {
        let m = mount(&archive, &["-o", &opts]);
        assert_eq!(fs::read(m.path("z.npy")).unwrap(), data);
        assert!(wait_until(10, || common::cache_files(&cache).len() == 1
            && common::seek_files(&cache).len() == 1));
    }
    // Every file the daemon made (its data, seek index, owner note) becomes a symlink to a
    // victim file of the same length but other bytes.
    let victims = dir.path().join("victims");
    fs::create_dir(&victims).unwrap();
    let mut planted = Vec::new();
    for (path, (kind, _)) in tree(&cache) {
        if kind != 'f' {
            continue;
        }
        let len = fs::metadata(&path).unwrap().len() as usize;
        let victim = victims.join(path.file_name().unwrap());
        fs::write(&victim, vec![0x5a; len]).unwrap();
        fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink(&victim, &path).unwrap();
        planted.push(victim);
    }
    assert_eq!(planted.len(), 3, "{planted:?}");
    let before = tree(&victims);
    let m = mount(&archive, &["-o", &opts]);
    assert_eq!(fs::read(m.path("z.npy")).unwrap(), data);
    drop(m);
    assert_eq!(tree(&victims), before);
    for v in &planted {
        let bytes = fs::read(v).unwrap();
        assert!(bytes.iter().all(|&b| b == 0x5a), "{} changed", v.display());
    }
}

#[test]
fn a_cache_directory_of_another_user_is_refused() {
    let Some((user, dir)) = setup("a_cache_directory_of_another_user") else {
        return;
    };
    let archive = dir.path().join("a.npz");
    write_zip(
        &archive,
        b"",
        &[Entry::deflated("z.npy", compressible(6, 1000))],
    );
    // As a /var/tmp/npzfs-<uid> made first by someone else would be.
    let cache = dir.path().join("theirs");
    fs::create_dir(&cache).unwrap();
    let chown = std::process::Command::new("chown")
        .arg(&user)
        .arg(&cache)
        .status()
        .unwrap();
    assert!(chown.success());
    let mnt = dir.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let opts = format!("cache_dir={}", cache.display());
    let out = common::mount::npzfs(&[
        archive.to_str().unwrap(),
        mnt.to_str().unwrap(),
        "-o",
        &opts,
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(8), "{stderr}");
    assert!(stderr.contains("belongs to another user"), "{stderr}");
    assert_eq!(fs::read_dir(&cache).unwrap().count(), 0);
}
