//! Faults around a live mount: the archive overwritten in place, a reader killed mid-read, the
//! cache directory deleted. (The daemon killed mid-decode and a full cache disk are in
//! mount_cache.rs, a stale mount in cli.rs, a truncated or renamed archive in mount.rs.)
//! In every case the daemon stays up, other members serve exactly, and no client hangs.
//! Below the mount: a failed read of the archive stays that read's error, never "corrupt".

mod common;

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::mount::{Mounted, fuse_or_skip, is_mounted, wait_until};
use common::{Entry, compressible, pattern, write_zip};

const MIB: usize = 1 << 20;

/// Open descriptors of process `pid`.
fn fds(pid: i32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

fn open_files(pid: i32) -> String {
    let files: Vec<_> = fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .map(|e| fs::read_link(e.unwrap().path()).unwrap_or_default())
        .collect();
    format!("{} open: {files:?}", files.len())
}

/// Reads `path` at `offset` on a thread, failing the test if it takes longer than `secs`.
fn read_within(path: &Path, offset: u64, len: usize, secs: u64) -> std::io::Result<Vec<u8>> {
    let path = path.to_path_buf();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let result = fs::File::open(&path).and_then(|f| {
            let mut buf = vec![0u8; len];
            let n = f.read_at(&mut buf, offset)?;
            buf.truncate(n);
            Ok(buf)
        });
        let _ = tx.send(result);
    });
    rx.recv_timeout(Duration::from_secs(secs))
        .expect("a read hung")
}

#[test]
fn an_archive_overwritten_in_place_gives_eio_never_old_or_new_bytes() {
    if !fuse_or_skip("an_archive_overwritten_in_place") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("a.npz");
    let entries = [
        Entry::stored("s.npy", pattern(1, 0, 4 * MIB)),
        Entry::deflated("d.npy", compressible(2, 4 * MIB)),
    ];
    write_zip(&archive, b"", &entries);
    let cache = dir.path().join("cache");
    let m = Mounted::foreground(&archive, &["-o", &format!("cache_dir={}", cache.display())]);
    assert_eq!(
        read_within(&m.path("s.npy"), 0, 4096, 10).unwrap(),
        pattern(1, 0, 4096)
    );
    // Same size, other bytes in both members' data, written through the same inode (as
    // `cp new old` does).
    let file = fs::OpenOptions::new().write(true).open(&archive).unwrap();
    for (i, len) in [(0, 4 * MIB), (1, 1000)] {
        let at = common::payload_offset(&entries, i) as u64;
        let mut bytes = vec![0u8; len];
        fs::File::open(&archive)
            .unwrap()
            .read_exact_at(&mut bytes, at)
            .unwrap();
        bytes.iter_mut().for_each(|b| *b = !*b);
        file.write_all_at(&bytes, at).unwrap();
    }
    for (name, offset) in [
        ("s.npy", 3 * MIB as u64),
        ("d.npy", 0),
        ("d.npy", 3 * MIB as u64),
    ] {
        let err = read_within(&m.path(name), offset, 4096, 10).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EIO), "{name} at {offset}");
    }
    assert!(is_mounted(&m.mnt));
    assert_eq!(
        fs::metadata(m.path("s.npy")).unwrap().len(),
        4 * MIB as u64,
        "metadata still serves"
    );
}

#[test]
fn readers_killed_mid_read_leave_the_daemon_serving_and_leak_nothing() {
    if !fuse_or_skip("readers_killed_mid_read") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("a.npz");
    let big = 192 * MIB;
    write_zip(
        &archive,
        b"",
        &[
            Entry::deflated("big.npy", compressible(3, big)),
            Entry::stored("plain.npy", pattern(4, 0, big)),
            Entry::deflated("small.npy", compressible(5, 100_000)),
        ],
    );
    let cache = dir.path().join("cache");
    // A budget smaller than the big member: once its readers are gone its decode stops (it
    // is not finished for nobody), and what it left must stay within the budget.
    let opts = format!("cache_dir={},cache_size=64M", cache.display());
    let m = Mounted::foreground(&archive, &["-o", &opts]);
    let pid = m.pid();
    assert_eq!(
        fs::read(m.path("small.npy")).unwrap(),
        compressible(5, 100_000)
    );
    let baseline = fds(pid);
    for round in 0..3u64 {
        // Readers and mappers of both kinds, killed while their reads are in flight.
        let mut readers = Vec::new();
        for name in ["big.npy", "plain.npy"] {
            let path = m.path(name);
            readers.push(
                Command::new("dd")
                    .arg(format!("if={}", path.display()))
                    .args(["of=/dev/null", "bs=1M", "iflag=direct"])
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap(),
            );
            let script = "import mmap,sys\nf=open(sys.argv[1],'rb')\nm=mmap.mmap(f.fileno(),0,prot=mmap.PROT_READ)\nsum(m[i] for i in range(0,len(m),4096))";
            readers.push(
                Command::new("python3")
                    .args(["-c", script])
                    .arg(&path)
                    .spawn()
                    .unwrap(),
            );
        }
        // Once each is inside its file (dd has read some, python has mapped it), killed.
        let inside = |r: &std::process::Child| {
            let proc_ = format!("/proc/{}", r.id());
            let rchar = fs::read_to_string(format!("{proc_}/io"))
                .ok()
                .and_then(|io| {
                    io.lines()
                        .find_map(|l| l.strip_prefix("rchar: ")?.parse().ok())
                })
                .unwrap_or(0u64);
            let maps = fs::read_to_string(format!("{proc_}/maps")).unwrap_or_default();
            rchar > 1 << 20 || maps.contains(".npy")
        };
        assert!(
            wait_until(20, || readers.iter().all(inside)),
            "readers never started"
        );
        for r in &mut readers {
            let _ = r.kill();
            r.wait().unwrap();
        }
        assert_eq!(
            read_within(&m.path("small.npy"), 1000, 5000, 10).unwrap(),
            compressible(5, 100_000)[1000..6000]
        );
        let off = (7 * MIB + 13) as u64;
        assert_eq!(
            read_within(&m.path("plain.npy"), off, 4096, 10).unwrap(),
            pattern(4, off, 4096)
        );
        // Flat: what the daemon holds after the kills is at most the big member, kept
        // sparse with the spans its window left (its cache file and seek index), every round.
        let settled = || fds(pid) <= baseline + 2;
        assert!(
            wait_until(20, settled),
            "round {round}: {}",
            open_files(pid)
        );
    }
    // What the killed readers started stays within the 64 MiB budget once it settles.
    let used = || {
        common::cache_files(&cache)
            .iter()
            .map(|(_, b)| b)
            .sum::<u64>()
    };
    assert!(
        wait_until(30, || used() <= 64 << 20),
        "{:?}",
        common::cache_files(&cache)
    );
    let off = (100 * MIB) as u64;
    assert_eq!(
        read_within(&m.path("big.npy"), off, 4096, 60).unwrap(),
        compressible(3, big)[off as usize..off as usize + 4096]
    );
}

#[test]
fn a_cache_directory_deleted_while_mounted_is_made_again() {
    if !fuse_or_skip("a_cache_directory_deleted_while_mounted") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("a.npz");
    let (x, y) = (compressible(6, 3 * MIB), compressible(7, 3 * MIB));
    write_zip(
        &archive,
        b"",
        &[
            Entry::deflated("x.npy", x.clone()),
            Entry::deflated("y.npy", y.clone()),
        ],
    );
    let cache = dir.path().join("cache");
    let m = Mounted::foreground(&archive, &["-o", &format!("cache_dir={}", cache.display())]);
    assert_eq!(fs::read(m.path("x.npy")).unwrap(), x);
    assert!(wait_until(10, || common::cache_files(&cache).len() == 1));
    fs::remove_dir_all(&cache).unwrap();
    // Dropped from the kernel's page cache, so the next reads reach the daemon.
    Command::new("sh")
        .args(["-c", "echo 1 > /proc/sys/vm/drop_caches"])
        .status()
        .ok();
    assert_eq!(fs::read(m.path("y.npy")).unwrap(), y);
    assert_eq!(fs::read(m.path("x.npy")).unwrap(), x);
    assert!(cache.is_dir(), "the cache directory is made again");
    assert!(is_mounted(&m.mnt));
}

/// An archive of a stored and a deflated member, opened and listed, then cut to nothing on
/// disk: every later read of it fails, as a local disk's EIO would, where the archive says
/// there are bytes. `b.npy`'s start is resolved before the cut.
fn cut_after_listing() -> (
    tempfile::NamedTempFile,
    npzfs::bytes::Archive,
    Vec<npzfs::zipfile::Member>,
) {
    let file = tempfile::NamedTempFile::new().unwrap();
    let entries = [
        Entry::stored("a.npy", pattern(1, 0, 3000)),
        Entry::deflated("b.npy", compressible(2, 200_000)),
    ];
    write_zip(file.path(), b"", &entries);
    let archive = npzfs::bytes::Archive::open(file.path()).unwrap();
    let members = npzfs::zipfile::members::read_members(&archive).unwrap();
    members[1].data_start(&archive).unwrap();
    file.as_file().set_len(0).unwrap();
    (file, archive, members)
}

/// The failed read's own error, naming the member, never "corrupt".
fn assert_read_failure(e: &npzfs::error::Error, member: &str) {
    assert!(matches!(e, npzfs::error::Error::Io { .. }), "{e:?}");
    assert_eq!(e.errno(), libc::EIO);
    let text = e.to_string();
    assert!(
        text.starts_with("cannot read ") && text.contains("at offset "),
        "{text}"
    );
    assert!(text.contains(&format!("for {member}")), "{text}");
}

#[test]
fn a_failed_read_of_the_archive_is_the_reads_error_not_a_corrupt_member() {
    let (_file, archive, members) = cut_after_listing();
    // A local header, a deflate stream, the zip crate's reader: each keeps the read's error.
    let e = members[0].data_start(&archive).unwrap_err();
    assert_read_failure(&e, "a.npy");
    let b = &members[1];
    let range = (b.data_start(&archive).unwrap(), b.compressed_size);
    let point = npzfs::zipfile::inflate::Point::start();
    let e = npzfs::zipfile::inflate::inflate_at(&archive, range, &point, 100, "b.npy").unwrap_err();
    assert_read_failure(&e, "b.npy");
    let e = npzfs::zipfile::zip_crate_member(&archive, "b.npy", 1, b.header_start)
        .err()
        .unwrap();
    assert_read_failure(&e, "b.npy");
    // At mount, an archive that cannot be read is one that cannot be opened (exit 3), not a
    // damaged one (exit 4).
    let e = npzfs::zipfile::members::read_members(&archive).unwrap_err();
    assert_eq!(e.exit_code(), 3, "{e}");
    assert!(e.to_string().contains("at offset"), "{e}");
}

#[test]
fn a_damaged_local_header_is_still_a_corrupt_member() {
    let file = tempfile::NamedTempFile::new().unwrap();
    let mut bytes = common::build_zip(b"", &[Entry::stored("a.npy", pattern(1, 0, 3000))]);
    bytes[0] ^= 0xff;
    fs::write(file.path(), &bytes).unwrap();
    let archive = npzfs::bytes::Archive::open(file.path()).unwrap();
    let members = npzfs::zipfile::members::read_members(&archive).unwrap();
    let e = members[0].data_start(&archive).unwrap_err();
    assert!(matches!(e, npzfs::error::Error::Corrupt { .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        "cannot read a.npy: no local header at offset 0"
    );
    // An archive cut short on disk before it is opened is damaged: exit 4.
    fs::write(file.path(), &bytes[..bytes.len() - 30]).unwrap();
    let archive = npzfs::bytes::Archive::open(file.path()).unwrap();
    let e = npzfs::zipfile::members::read_members(&archive).unwrap_err();
    assert_eq!(e.exit_code(), 4, "{e}");
}
