//! Real FUSE mounts for tests: mount through the real binary, unmount in a guard.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The npzfs binary Cargo built for these tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_npzfs");

/// Whether this machine can mount FUSE; without it a mount test is skipped, unless
/// `NPZFS_REQUIRE_FUSE=1` (CI), where a skip is a failure.
pub fn fuse_or_skip(test: &str) -> bool {
    let ok = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .is_ok();
    if !ok {
        assert!(
            std::env::var("NPZFS_REQUIRE_FUSE").as_deref() != Ok("1"),
            "{test}: /dev/fuse is unusable and NPZFS_REQUIRE_FUSE=1"
        );
        eprintln!("{test}: skipped, /dev/fuse is unusable");
    }
    ok
}

/// Polls `cond` every few ms until it holds or `secs` pass.
pub fn wait_until(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    cond()
}

/// Whether something is mounted exactly at `path`.
pub fn is_mounted(path: &Path) -> bool {
    let canon = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    npzfs::mountpoint::mounted_fstype(&canon).is_some()
}

/// Runs `npzfs ARGS` to completion.
pub fn npzfs(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// A live mount; unmounted (and its foreground daemon reaped) on drop.
pub struct Mounted {
    pub mnt: PathBuf,
    pub daemon: Option<Child>,
    _dir: tempfile::TempDir,
}

impl Mounted {
    /// Mounts `archive` in the background, as a user would; panics with stderr on failure.
    pub fn background(archive: &Path, extra: &[&str]) -> Mounted {
        let dir = tempfile::tempdir().unwrap();
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        let mut args = vec![archive.to_str().unwrap(), mnt.to_str().unwrap()];
        args.extend_from_slice(extra);
        let out = npzfs(&args);
        assert!(
            out.status.success(),
            "mount failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(is_mounted(&mnt), "npzfs returned before the mount was live");
        Mounted {
            mnt,
            daemon: None,
            _dir: dir,
        }
    }

    /// Mounts `archive` with `-f`, keeping the daemon as a child; waits until it answers.
    pub fn foreground(archive: &Path, extra: &[&str]) -> Mounted {
        let dir = tempfile::tempdir().unwrap();
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        let mut cmd = Command::new(BIN);
        cmd.arg("-f")
            .arg(archive)
            .arg(&mnt)
            .args(extra)
            .stdin(Stdio::null());
        let mut child = cmd.stderr(Stdio::piped()).spawn().unwrap();
        let live = wait_until(20, || {
            is_mounted(&mnt) || child.try_wait().unwrap().is_some()
        });
        assert!(live && is_mounted(&mnt), "foreground mount did not come up");
        Mounted {
            mnt,
            daemon: Some(child),
            _dir: dir,
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.mnt.join(rel)
    }

    /// The daemon's pid (foreground mounts only).
    pub fn pid(&self) -> i32 {
        self.daemon.as_ref().unwrap().id() as i32
    }
}

/// Unmounts `mnt` without waiting for its users (a test guard must never hang).
pub fn unmount(mnt: &Path) {
    if is_mounted(mnt) {
        let _ = Command::new("fusermount3")
            .arg("-u")
            .arg("-z")
            .arg(mnt)
            .status();
    }
    if is_mounted(mnt) {
        let _ = Command::new("umount").arg("-l").arg(mnt).status();
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        unmount(&self.mnt);
        if let Some(child) = &mut self.daemon
            && !wait_until(10, || child.try_wait().unwrap().is_some())
        {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A throwaway unprivileged user for the tests that need one (created when root).
pub fn test_user() -> Option<String> {
    const USER: &str = "npzfs-test";
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let exists = Command::new("id")
        .arg(USER)
        .output()
        .is_ok_and(|o| o.status.success());
    if !exists {
        let made = Command::new("useradd")
            .args(["--system", "--no-create-home", USER])
            .status();
        assert!(made.is_ok_and(|s| s.success()), "useradd {USER} failed");
    }
    Some(USER.to_string())
}

pub fn as_user(user: &str, args: &[&str]) -> std::process::Output {
    Command::new("runuser")
        .args(["-u", user, "--"])
        .args(args)
        .output()
        .unwrap()
}
