//! Directory and several-archive sources, through the core without a kernel: the tree and its
//! names, laziness, the open-archive bound, one cache, stable inode numbers, and bad input
//! staying local. Real mounts of the same are in `mount_sources.rs`.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::fs::{read, read_all};
use common::{Entry, compressible, pattern, write_zip};
use npzfs::cache::CacheConfig;
use npzfs::forest::Overrides;
use npzfs::fs::{Kind, NpzFs, Sources};
use npzfs::tree::ROOT;

const HOW: Sources = Sources {
    overrides: Overrides {
        uid: None,
        gid: None,
        umask: 0,
        mounted_by: (1234, 5678),
    },
    max_archives: 64,
    remote_timeout: npzfs::remote::DEFAULT_TIMEOUT,
};

struct Tree {
    dir: tempfile::TempDir,
    cache: tempfile::TempDir,
}

impl Tree {
    fn new() -> Tree {
        Tree {
            dir: tempfile::tempdir().unwrap(),
            cache: tempfile::tempdir().unwrap(),
        }
    }

    fn p(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Writes shard `rel` holding x.npy = pattern(seed) (stored) and y.npy (deflated).
    fn shard(&self, rel: &str, seed: u64) {
        let path = self.p(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        let entries = [
            Entry::stored("x.npy", pattern(seed, 0, 1000)),
            Entry::deflated("y.npy", compressible(seed, 50_000)),
        ];
        write_zip(&path, b"", &entries);
    }

    fn mount(&self, paths: &[&Path], how: Sources, size: u64) -> NpzFs {
        let config = CacheConfig::at(self.cache.path().join("c"), size);
        let paths: Vec<PathBuf> = paths.iter().map(|p| p.to_path_buf()).collect();
        NpzFs::sources(&paths, how, &config).unwrap()
    }

    fn mount_dir(&self) -> NpzFs {
        self.mount(&[self.dir.path()], HOW, 1 << 30)
    }
}

/// The inode at `path`, walking lookups from the root.
fn ino(fs: &NpzFs, path: &str) -> u64 {
    path.split('/').fold(ROOT, |dir, name| {
        fs.lookup(dir, name.as_bytes())
            .unwrap_or_else(|e| panic!("{path}: {e}"))
            .ino
    })
}

fn names(fs: &NpzFs, dir: &str) -> Vec<String> {
    let ino = if dir.is_empty() { ROOT } else { ino(fs, dir) };
    let listed = fs.list(ino).unwrap();
    listed
        .into_iter()
        .map(|(n, _)| String::from_utf8(n).unwrap())
        .collect()
}

fn errno(fs: &NpzFs, dir: u64, name: &str) -> i32 {
    fs.lookup(dir, name.as_bytes()).unwrap_err().errno()
}

#[test]
fn a_directory_is_mirrored_with_archives_as_folders() {
    let t = Tree::new();
    t.shard("train/shard_0000.npz", 0);
    t.shard("train/shard_0001.npz", 1);
    t.shard("train/deep/more.npz", 2);
    fs::write(t.p("README.txt"), b"hello\n").unwrap();
    std::os::unix::fs::symlink("/etc/passwd", t.p("link")).unwrap();
    let fs = t.mount_dir();
    assert_eq!(names(&fs, ""), ["README.txt", "link", "train"]);
    assert_eq!(names(&fs, "train"), ["deep", "shard_0000", "shard_0001"]);
    assert_eq!(names(&fs, "train/shard_0001"), ["x.npy", "y.npy"]);
    let x = ino(&fs, "train/shard_0001/x.npy");
    assert_eq!(read_all(&fs, x), pattern(1, 0, 1000));
    let y = ino(&fs, "train/deep/more/y.npy");
    assert_eq!(read_all(&fs, y), compressible(2, 50_000));
    assert_eq!(read_all(&fs, ino(&fs, "README.txt")), b"hello\n");
    let link = ino(&fs, "link");
    assert_eq!(fs.getattr(link).unwrap().kind, Kind::Symlink);
    assert_eq!(fs.readlink(link).unwrap(), b"/etc/passwd");
    // The archive's file name is not a second name for it.
    let train = ino(&fs, "train");
    assert_eq!(errno(&fs, train, "shard_0000.npz"), libc::ENOENT);
    assert_eq!(errno(&fs, train, "nothing"), libc::ENOENT);
}

#[test]
fn clashes_follow_the_documented_rule() {
    let t = Tree::new();
    t.shard("x.npz", 0);
    fs::create_dir(t.p("x")).unwrap();
    t.shard("y.npz", 1);
    fs::write(t.p("y"), b"a file called y").unwrap();
    t.shard("z.npz.npz", 2);
    let fs = t.mount_dir();
    // The literal name wins; the archive keeps its suffix. z.npz.npz loses one suffix only.
    assert_eq!(names(&fs, ""), ["x", "x.npz", "y", "y.npz", "z.npz"]);
    assert_eq!(names(&fs, "x.npz"), ["x.npy", "y.npy"]);
    assert_eq!(fs.getattr(ino(&fs, "x")).unwrap().kind, Kind::Dir);
    assert_eq!(read_all(&fs, ino(&fs, "y")), b"a file called y");
    assert_eq!(read_all(&fs, ino(&fs, "z.npz/x.npy")), pattern(2, 0, 1000));

    // Several sources: each under its base name, a taken one numbered in command-line order.
    let other = Tree::new();
    other.shard("x.npz", 7);
    fs::create_dir(other.p("data")).unwrap();
    let paths = [t.p("x.npz"), other.p("x.npz"), other.p("data")];
    let refs: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
    let fs = t.mount(&refs, HOW, 1 << 30);
    assert_eq!(names(&fs, ""), ["data", "x", "x (1)"]);
    assert_eq!(read_all(&fs, ino(&fs, "x (1)/x.npy")), pattern(7, 0, 1000));
    assert_eq!(read_all(&fs, ino(&fs, "x/x.npy")), pattern(0, 0, 1000));
}

#[test]
fn archives_are_opened_only_when_asked_into_and_at_most_max_archives_at_once() {
    let t = Tree::new();
    for i in 0..40 {
        t.shard(&format!("s/{i:03}.npz"), i);
    }
    let how = Sources {
        max_archives: 8,
        ..HOW
    };
    let fs = t.mount(&[t.dir.path()], how, 1 << 30);
    assert_eq!(fs.open_archives(), 0);
    // Listing the directory and stat-ing every shard opens none of them.
    let listed = fs.list(ino(&fs, "s")).unwrap();
    assert_eq!(listed.len(), 40);
    for (_, attr) in &listed {
        assert_eq!(fs.getattr(attr.ino).unwrap().kind, Kind::Dir);
        // What `ls -l` and `getfattr` ask of each entry.
        assert_eq!(fs.listxattr(attr.ino).unwrap(), b"");
        assert!(fs.getxattr(attr.ino, b"user.zip.method").is_err());
    }
    assert_eq!(fs.open_archives(), 0);
    assert_eq!(names(&fs, "s/005"), ["x.npy", "y.npy"]);
    assert_eq!(fs.open_archives(), 1);
    // Reading every shard keeps at most 8 open; closed ones reopen on demand.
    for round in 0..2 {
        for i in 0..40 {
            let x = ino(&fs, &format!("s/{i:03}/x.npy"));
            assert_eq!(read_all(&fs, x), pattern(i, 0, 1000), "round {round}");
            assert!(fs.open_archives() <= 8);
        }
    }
    // An open handle keeps its archive readable after the daemon closed it.
    let x0 = ino(&fs, "s/000/x.npy");
    let fh = fs.open(x0, false).unwrap();
    for i in 1..40 {
        ino(&fs, &format!("s/{i:03}/x.npy"));
    }
    assert_eq!(read(&fs, fh, 0, 1000).unwrap(), pattern(0, 0, 1000));
    fs.release(fh);
}

#[test]
fn every_archive_shares_one_cache_budget() {
    let t = Tree::new();
    for i in 0..6 {
        t.shard(&format!("{i}.npz"), i);
    }
    // Room for two decoded y.npy (50,000 bytes each) and a bit.
    let fs = t.mount(&[t.dir.path()], HOW, 120_000);
    for i in 0..6 {
        let y = ino(&fs, &format!("{i}/y.npy"));
        assert_eq!(read_all(&fs, y), compressible(i, 50_000));
        let stats = fs.cache_stats().unwrap();
        assert!(stats.held.used <= 120_000, "{stats}");
    }
    let stats = fs.cache_stats().unwrap();
    assert_eq!(stats.decoded, 6, "{stats}");
    assert!(stats.evicted >= 4, "{stats}");
    // As at unmount: a file still being synced is named complete before the mount goes.
    fs.close();
    drop(fs);
    // A remount reuses what is still there.
    let fs = t.mount(&[t.dir.path()], HOW, 120_000);
    assert_eq!(read_all(&fs, ino(&fs, "5/y.npy")), compressible(5, 50_000));
    assert_eq!(fs.cache_stats().unwrap().reused, 1);
}

#[test]
fn inode_numbers_are_unique_and_stable_across_mounts() {
    let t = Tree::new();
    for i in 0..20 {
        t.shard(&format!("d{}/s{i}.npz", i % 3), i);
    }
    let walk = |fs: &NpzFs| {
        let mut seen = std::collections::BTreeMap::new();
        for d in 0..3 {
            let dir = format!("d{d}");
            seen.insert(dir.clone(), ino(fs, &dir));
            for name in names(fs, &dir) {
                for member in ["x.npy", "y.npy"] {
                    let path = format!("{dir}/{name}/{member}");
                    seen.insert(path.clone(), ino(fs, &path));
                }
                let path = format!("{dir}/{name}");
                seen.insert(path.clone(), ino(fs, &path));
            }
        }
        seen
    };
    let first = walk(&t.mount_dir());
    let again = walk(&t.mount_dir());
    assert_eq!(first, again);
    let unique: std::collections::HashSet<_> = first.values().collect();
    assert_eq!(unique.len(), first.len());
}

#[test]
fn a_bad_archive_stays_local_and_a_replaced_one_is_never_mixed() {
    let t = Tree::new();
    t.shard("good.npz", 1);
    fs::write(t.p("text.npz"), b"not a zip at all").unwrap();
    fs::write(t.p("empty.npz"), b"").unwrap();
    let good = fs::read(t.p("good.npz")).unwrap();
    fs::write(t.p("cut.npz"), &good[..good.len() - 30]).unwrap();
    let fs = t.mount_dir();
    assert_eq!(names(&fs, ""), ["cut", "empty", "good", "text"]);
    for bad in ["cut", "empty", "text"] {
        let dir = ino(&fs, bad);
        assert_eq!(fs.getattr(dir).unwrap().kind, Kind::Dir);
        assert_eq!(fs.list(dir).unwrap_err().errno(), libc::EIO, "{bad}");
        assert_eq!(errno(&fs, dir, "x.npy"), libc::EIO);
    }
    assert_eq!(read_all(&fs, ino(&fs, "good/x.npy")), pattern(1, 0, 1000));

    // Replaced by rename: an open handle keeps the old bytes; a new lookup finds the new
    // archive under new inode numbers.
    let old_dir = ino(&fs, "good");
    let old_x = ino(&fs, "good/x.npy");
    let fh = fs.open(old_x, false).unwrap();
    t.shard("next.npz", 2);
    fs::rename(t.p("next.npz"), t.p("good.npz")).unwrap();
    assert_eq!(read(&fs, fh, 0, 1000).unwrap(), pattern(1, 0, 1000));
    fs.release(fh);
    let new_dir = ino(&fs, "good");
    assert_ne!(new_dir, old_dir);
    assert_eq!(read_all(&fs, ino(&fs, "good/x.npy")), pattern(2, 0, 1000));
    assert_eq!(fs.getattr(old_dir).unwrap_err().errno(), libc::ENOENT);

    // Removed: ENOENT, and the root still answers with its source gone.
    fs::remove_file(t.p("good.npz")).unwrap();
    assert_eq!(errno(&fs, ROOT, "good"), libc::ENOENT);
    fs::remove_dir_all(t.dir.path()).unwrap();
    assert_eq!(fs.getattr(ROOT).unwrap().kind, Kind::Dir);
    assert_eq!(fs.list(ROOT).unwrap_err().errno(), libc::ENOENT);
    assert_eq!(errno(&fs, ROOT, "text"), libc::ENOENT);
}

#[test]
fn permissions_follow_the_source_without_write_bits() {
    use std::os::unix::fs::PermissionsExt;
    let t = Tree::new();
    t.shard("open.npz", 1);
    t.shard("private.npz", 2);
    fs::set_permissions(t.p("private.npz"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::create_dir(t.p("d")).unwrap();
    fs::set_permissions(t.p("d"), fs::Permissions::from_mode(0o750)).unwrap();
    fs::write(t.p("f"), b"f").unwrap();
    fs::set_permissions(t.p("f"), fs::Permissions::from_mode(0o664)).unwrap();
    let fs = t.mount_dir();
    let perm = |path: &str| fs.getattr(ino(&fs, path)).unwrap().perm;
    assert_eq!(perm("private"), 0o500);
    assert_eq!(perm("private/x.npy"), 0o400);
    assert_eq!(perm("open"), 0o555);
    assert_eq!(perm("open/x.npy"), 0o444);
    assert_eq!(perm("d"), 0o550);
    assert_eq!(perm("f"), 0o444);
    let me = unsafe { libc::getuid() };
    assert_eq!(fs.getattr(ino(&fs, "private/x.npy")).unwrap().uid, me);
    // uid=, gid= and umask= override.
    let how = Sources {
        overrides: Overrides {
            uid: Some(42),
            gid: Some(43),
            umask: 0o077,
            mounted_by: (1, 1),
        },
        ..HOW
    };
    let fs = t.mount(&[t.dir.path()], how, 1 << 30);
    let a = fs.getattr(ino(&fs, "open/x.npy")).unwrap();
    assert_eq!((a.uid, a.gid, a.perm), (42, 43, 0o400));
}

#[test]
fn an_archive_replaced_while_mounted_leaves_one_cache_directory() {
    let t = Tree::new();
    t.shard("s.npz", 1);
    let fs = t.mount_dir();
    assert_eq!(read_all(&fs, ino(&fs, "s/y.npy")), compressible(1, 50_000));
    let stores = || fs::read_dir(t.cache.path().join("c")).unwrap().count();
    assert_eq!(stores(), 1);
    t.shard("next.npz", 2);
    fs::rename(t.p("next.npz"), t.p("s.npz")).unwrap();
    assert_eq!(read_all(&fs, ino(&fs, "s/y.npy")), compressible(2, 50_000));
    // The old version's directory went when the new one's was made.
    assert_eq!(stores(), 1);
    fs.close();
}
