//! What the fuzz targets check, as plain functions: the libFuzzer targets in `fuzz_targets/`
//! call them, and `tests/fuzz_regressions.rs` replays every kept input through them in CI.
//!
//! Both expect the including crate root to have `zip` (tests/common/zip.rs) and `fs`
//! (tests/common/fs.rs) as modules. A violated property panics; libFuzzer keeps the input.

#![allow(dead_code)]

use std::collections::HashSet;
use std::sync::mpsc;
use std::time::Duration;

use npzfs::fs::{Kind, NpzFs};
use npzfs::tree::ROOT;
use npzfs::zipfile::members::sanitise;

use crate::fs::{OWNER, mount_with_cache};
use crate::zip::{Entry, build_zip, compressible, pattern};

/// No single read may take longer than this, whatever the input.
const READ_DEADLINE: Duration = Duration::from_secs(20);
/// Bytes read from each member of a fuzzed archive (a lying size can claim GiBs).
const READ_CAP: u64 = 256 * 1024;

/// Arbitrary bytes as an archive: refused with exit code 4, or mounted with a tree whose every
/// name is a safe single component, and whose members open and read with a clean errno or
/// bytes, never a panic or a hang. Also the input as a member name through `sanitise`.
pub fn archive(data: &[u8]) {
    let threads = thread_count();
    check_name(&String::from_utf8_lossy(data));
    let file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(file.path(), data).expect("write the input");
    let archive = npzfs::bytes::Archive::open(file.path()).expect("a regular file opens");
    let members = match npzfs::zipfile::members::read_members(&archive) {
        Ok(members) => members,
        Err(e) => {
            assert_eq!(e.exit_code(), 4, "{e}");
            assert!(e.to_string().starts_with("cannot read archive"), "{e}");
            return;
        }
    };
    for m in &members {
        check_name(&m.name);
    }
    let cache = tempfile::tempdir().expect("temp dir");
    let config = npzfs::cache::CacheConfig::at(cache.path().join("c"), 1 << 20);
    let fs = NpzFs::new(archive, members, OWNER, &config).expect("the cache directory is usable");
    let mut seen = HashSet::new();
    walk(&fs, ROOT, 0, &mut seen);
    assert_eq!(
        seen.len() as u64 + 1,
        fs.statfs().files,
        "every node is reachable once"
    );
    fs.close();
    drop(fs);
    settle(threads);
}

fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(0, |d| d.count())
}

/// Every thread the mount started ends soon after it is gone (decoders are detached threads:
/// one left running would hold its buffers and its cache file forever).
fn settle(threads: usize) {
    let deadline = std::time::Instant::now() + READ_DEADLINE;
    while thread_count() > threads {
        assert!(
            std::time::Instant::now() < deadline,
            "a decoder thread outlived its mount"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn check_name(name: &str) {
    for c in sanitise(name) {
        assert!(!c.is_empty() && c.len() <= 255, "{c:?}");
        assert!(c != b"." && c != b"..", "{c:?}");
        assert!(!c.contains(&b'/') && !c.contains(&0), "{c:?}");
    }
}

/// Lists `dir`, looks every name up, and reads the start of every file.
fn walk(fs: &NpzFs, dir: u64, depth: usize, seen: &mut HashSet<u64>) {
    assert!(depth < 10_000, "the tree has a cycle");
    let mut entries: Vec<(Vec<u8>, u64)> = Vec::new();
    fs.readdir(dir, 0, 0, &mut |e| {
        entries.push((e.name.to_vec(), e.ino));
        false
    })
    .expect("a directory lists");
    let mut names = HashSet::new();
    for (name, ino) in entries.into_iter().skip(2) {
        assert!(names.insert(name.clone()), "{name:?} listed twice");
        assert!(seen.insert(ino), "inode {ino} reachable twice");
        assert!(!name.is_empty() && name.len() <= 255 && !name.contains(&b'/'));
        assert!(name != b"." && name != b"..");
        let attr = fs.lookup(dir, &name).expect("a listed name looks up");
        assert_eq!(attr.ino, ino);
        match attr.kind {
            Kind::Dir => walk(fs, ino, depth + 1, seen),
            Kind::File => read_start(fs, ino, attr.size),
            Kind::Symlink => panic!("an archive holds no symlinks"),
        }
    }
}

fn read_start(fs: &NpzFs, ino: u64, size: u64) {
    let fh = match fs.open(ino, false) {
        Ok(fh) => fh,
        Err(e) => {
            assert!(
                matches!(e.errno(), libc::EIO | libc::EOPNOTSUPP),
                "open: {e}"
            );
            return;
        }
    };
    let mut offset = 0;
    while offset < size.min(READ_CAP) {
        match read(fs, fh, offset, 64 * 1024) {
            Ok(bytes) if bytes.is_empty() => panic!("a short member: {offset} of {size}"),
            Ok(bytes) => offset += bytes.len() as u64,
            Err(errno) => {
                assert!(matches!(errno, libc::EIO | libc::EOPNOTSUPP | libc::ENOSPC));
                break;
            }
        }
    }
    fs.release(fh);
}

/// A read through the core's continuation, waited for with a deadline.
fn read(fs: &NpzFs, fh: u64, offset: u64, size: u32) -> Result<Vec<u8>, i32> {
    let (tx, rx) = mpsc::channel();
    fs.read(fh, offset, size, reply(tx, 0));
    rx.recv_timeout(READ_DEADLINE)
        .expect("a read was never answered")
        .1
}

type Answer = (usize, Result<Vec<u8>, i32>);

fn reply(tx: mpsc::Sender<Answer>, i: usize) -> npzfs::fs::ReadDone {
    Box::new(move |r| {
        let _ = tx.send((i, r.map(<[u8]>::to_vec).map_err(|e| e.errno())));
    })
}

/// Consumes the input from the front, with zeros once it runs out.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn bytes<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        let n = N.min(self.0.len());
        out[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        out
    }
    fn u8(&mut self) -> u8 {
        self.bytes::<1>()[0]
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.bytes())
    }
}

/// The read path over a well-formed archive: a stored member, a deflated one (larger than the
/// cache when the input says so, past the seek-index threshold when it says so) and an empty
/// one, read at arbitrary offsets and sizes, a batch at a time without waiting in between. Every
/// answer must be exactly the member's bytes at that range.
pub fn read_path(data: &[u8]) {
    let threads = thread_count();
    let mut input = Input(data);
    let shape = input.u8();
    let seed = u64::from(input.u8());
    let stored_len = (input.u32() % (256 * 1024)) as usize;
    let mut deflated_len = (input.u32() % (512 * 1024)) as usize;
    if shape & 1 != 0 {
        deflated_len += 2 << 20; // gets a seek index and, with a small budget, sparse spans
    }
    let budget = [4 << 10, 64 << 10, 1 << 20, 1 << 30][usize::from(shape >> 1) & 3];
    let built = built(seed, stored_len, deflated_len);
    let (bytes, members) = (&built.0, &built.1);
    let f = mount_with_cache(bytes, OWNER, tempfile::tempdir().expect("dir"), budget);
    let inos: Vec<u64> = ["s.npy", "d.npy", "e.npy"]
        .iter()
        .map(|n| f.fs.lookup(ROOT, n.as_bytes()).expect("lookup").ino)
        .collect();
    let fhs: Vec<u64> = inos
        .iter()
        .map(|&ino| f.fs.open(ino, false).expect("open"))
        .collect();
    while !input.0.is_empty() {
        // A batch of up to 8 reads in flight at once.
        let batch = usize::from(input.u8() % 8) + 1;
        let (tx, rx) = mpsc::channel();
        let mut asked = Vec::new();
        for i in 0..batch {
            let which = usize::from(input.u8() % 3);
            let len = members[which].len() as u64;
            let raw = u64::from(input.u32());
            // Mostly inside the member, sometimes at or past its end.
            let offset = if raw & 0xf == 0xf {
                len + raw % 4096
            } else {
                raw % (len + 1)
            };
            let size = (input.u32() % (2 << 20)).max(1);
            asked.push((which, offset, size));
            f.fs.read(fhs[which], offset, size, reply(tx.clone(), i));
        }
        for _ in 0..batch {
            let (i, got) = rx
                .recv_timeout(READ_DEADLINE)
                .expect("a read was never answered");
            let (which, offset, size) = asked[i];
            let got = got.unwrap_or_else(|e| panic!("read {asked:?}[{i}] failed: errno {e}"));
            let member = &members[which];
            let start = (offset as usize).min(member.len());
            let end = (start + size as usize).min(member.len());
            // Exactly the asked range clamped to the member: a short read inside a member
            // would reach a mapping client as SIGBUS.
            assert!(
                got == member[start..end],
                "read {asked:?}[{i}]: wrong bytes"
            );
        }
    }
    for &fh in &fhs {
        f.fs.release(fh);
    }
    f.fs.close();
    drop(f);
    settle(threads);
}

type Built = std::rc::Rc<(Vec<u8>, [Vec<u8>; 3])>;

/// The archive for these parameters and its members' bytes. Compressing megabytes costs more
/// than the reads, and the fuzzer mostly mutates the reads: recent archives are kept.
fn built(seed: u64, stored_len: usize, deflated_len: usize) -> Built {
    thread_local! {
        static RECENT: std::cell::RefCell<std::collections::HashMap<(u64, usize, usize), Built>> =
            Default::default();
    }
    RECENT.with_borrow_mut(|recent| {
        if recent.len() >= 16 {
            recent.clear();
        }
        recent
            .entry((seed, stored_len, deflated_len))
            .or_insert_with(|| {
                let members = [
                    pattern(seed, 0, stored_len),
                    compressible(seed, deflated_len),
                    Vec::new(),
                ];
                let bytes = build_zip(
                    b"",
                    &[
                        Entry::stored("s.npy", members[0].clone()),
                        Entry::deflated("d.npy", members[1].clone()),
                        Entry::deflated("e.npy", Vec::new()),
                    ],
                );
                std::rc::Rc::new((bytes, members))
            })
            .clone()
    })
}
