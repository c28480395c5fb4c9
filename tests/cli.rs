//! The command line: help, usage errors and startup failures, each one line on stderr with
//! its documented exit code, and no mount left behind.

mod common;

use std::path::Path;

use common::mount::{Mounted, fuse_or_skip, is_mounted, npzfs, wait_until};
use common::{Entry, pattern, write_zip};

/// Runs npzfs and returns (exit code, stderr).
fn run(args: &[&str]) -> (i32, String) {
    let out = npzfs(args);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Asserts a startup failure: `code`, exactly one line naming `path` and containing `words`.
fn assert_fails(args: &[&str], code: i32, path: &str, words: &str) {
    let (got, stderr) = run(args);
    assert_eq!(got, code, "{args:?}: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line, got: {stderr:?}");
    assert!(stderr.starts_with("npzfs: "), "{stderr}");
    assert!(
        stderr.contains(path) && stderr.contains(words),
        "{args:?}: {stderr}"
    );
}

struct Dir {
    dir: tempfile::TempDir,
}

impl Dir {
    fn new() -> Dir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("mnt")).unwrap();
        write_zip(
            &dir.path().join("ok.npz"),
            b"",
            &[Entry::stored("x.npy", pattern(1, 0, 100))],
        );
        Dir { dir }
    }

    fn p(&self, name: &str) -> String {
        self.dir.path().join(name).to_str().unwrap().to_string()
    }
}

#[test]
fn help_and_version() {
    let out = npzfs(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for word in [
        "ARCHIVE",
        "MOUNTPOINT",
        "allow_other",
        "umask=",
        "threads=",
        "Exit codes",
    ] {
        assert!(help.contains(word), "--help lacks {word}");
    }
    let out = npzfs(&["--version"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("npzfs "));
}

#[test]
fn usage_errors_exit_2_and_name_the_option() {
    let d = Dir::new();
    let (ok, mnt) = (d.p("ok.npz"), d.p("mnt"));
    assert_fails(&[&ok, &mnt, "-o", "ro,bogus"], 2, "bogus", "unknown");
    assert_fails(&[&ok, &mnt, "-o", "uid=me"], 2, "uid=me", "number");
    assert_fails(
        &[&ok, &mnt, "-o", "auto_unmount"],
        2,
        "auto_unmount",
        "allow_other",
    );
    let (code, stderr) = run(&[&ok]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("MOUNTPOINT"), "{stderr}");
    assert!(!is_mounted(Path::new(&mnt)));
}

#[test]
fn bad_archives_exit_3_or_4() {
    let d = Dir::new();
    let mnt = d.p("mnt");
    std::fs::write(d.p("empty.npz"), b"").unwrap();
    std::fs::write(d.p("text.npz"), b"not a zip\n").unwrap();
    let good = std::fs::read(d.p("ok.npz")).unwrap();
    std::fs::write(d.p("cut.npz"), &good[..good.len() - 10]).unwrap();
    assert_fails(
        &[&d.p("missing.npz"), &mnt],
        3,
        "missing.npz",
        "No such file or directory",
    );
    // A mount point inside a directory source would hold itself.
    std::fs::create_dir(d.p("tree")).unwrap();
    std::fs::create_dir(d.p("tree/mnt")).unwrap();
    let inner = d.p("tree/mnt");
    assert_fails(
        &[&d.p("tree"), &inner],
        5,
        "inside the source",
        "hold the mount itself",
    );
    // A directory is a source of its own (a tree of archives); a device is neither.
    assert_fails(&["/dev/null", &mnt], 3, "/dev/null", "not a regular file");
    assert_fails(&[&d.p("empty.npz"), &mnt], 4, "empty.npz", "empty");
    assert_fails(&[&d.p("text.npz"), &mnt], 4, "text.npz", "not a ZIP");
    assert_fails(&[&d.p("cut.npz"), &mnt], 4, "cut.npz", "not a ZIP");
    assert!(!is_mounted(Path::new(&mnt)));
}

#[test]
fn bad_mountpoints_exit_5() {
    let d = Dir::new();
    let ok = d.p("ok.npz");
    assert_fails(&[&ok, &d.p("nope")], 5, "nope", "does not exist");
    assert_fails(&[&ok, &ok], 5, "ok.npz", "not a directory");
}

#[test]
fn an_occupied_mountpoint_exits_6() {
    if !fuse_or_skip("an_occupied_mountpoint_exits_6") {
        return;
    }
    let d = Dir::new();
    let first = Mounted::background(Path::new(&d.p("ok.npz")), &[]);
    let mnt = first.mnt.to_str().unwrap();
    assert_fails(&[&d.p("ok.npz"), mnt], 6, mnt, "already mounted");
}

#[test]
fn a_stale_mount_is_detected_and_the_message_says_how_to_clear_it() {
    if !fuse_or_skip("a_stale_mount_is_detected") {
        return;
    }
    let d = Dir::new();
    let mut m = Mounted::foreground(Path::new(&d.p("ok.npz")), &[]);
    // SAFETY: signalling our own child.
    unsafe { libc::kill(m.pid(), libc::SIGKILL) };
    m.daemon.as_mut().unwrap().wait().unwrap();
    let mnt = m.mnt.to_str().unwrap().to_string();
    let stale = || npzfs::mountpoint::statfs(Path::new(&mnt)).is_err();
    assert!(wait_until(10, stale), "mount did not go stale");
    assert_fails(&[&d.p("ok.npz"), &mnt], 6, &mnt, "fusermount3 -u");
    // Following the advice clears it, and the next mount works.
    let status = std::process::Command::new("fusermount3")
        .arg("-u")
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(status.success());
    let out = npzfs(&[&d.p("ok.npz"), &mnt]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read(m.path("x.npy")).unwrap(), pattern(1, 0, 100));
}

#[test]
fn an_unusable_cache_directory_exits_8() {
    let d = Dir::new();
    let archive = d.p("c.npz");
    let deflated = Entry::deflated("x.npy", pattern(1, 0, 100));
    write_zip(Path::new(&archive), b"", &[deflated]);
    let blocker = d.p("file");
    std::fs::write(&blocker, b"not a directory").unwrap();
    let opt = format!("cache_dir={blocker}/cache");
    assert_fails(
        &[&archive, &d.p("mnt"), "-o", &opt],
        8,
        &blocker,
        "cannot use cache directory",
    );
    assert!(!is_mounted(Path::new(&d.p("mnt"))));
}
