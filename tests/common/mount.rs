//! Real FUSE mounts for tests: mount through the real binary, unmount in a guard.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The npzfs binary Cargo built for these tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_npzfs");

/// What a test needs of the machine it runs on.
#[derive(Clone, Copy, Debug)]
pub enum Need {
    /// A usable /dev/fuse.
    Fuse,
    /// Root (for a second user, mount(2), passthrough, /sys, the service tests).
    Root,
    /// /dev/fuse usable by every user (mode 0666, as distributions ship it).
    FuseForUsers,
}

impl Need {
    /// Why the machine does not give this, if it does not.
    fn missing(self) -> Option<&'static str> {
        match self {
            Need::Fuse => {
                let ok = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open("/dev/fuse")
                    .is_ok();
                (!ok).then_some("/dev/fuse is unusable")
            }
            // SAFETY: geteuid has no preconditions.
            Need::Root => (unsafe { libc::geteuid() } != 0).then_some("needs root"),
            Need::FuseForUsers => {
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::metadata("/dev/fuse").map_or(0, |m| m.permissions().mode());
                (mode & 0o006 != 0o006).then_some("/dev/fuse is not 0666 as distributions ship it")
            }
        }
    }
}

/// The one place that decides "run, skip or fail" for every test that needs the machine:
/// true if it gives `test` all of `needs`; otherwise the test is skipped (false, with a line
/// on stderr), or fails when `NPZFS_REQUIRE_FUSE=1` (CI), so that CI never passes by skipping.
pub fn require(test: &str, needs: &[Need]) -> bool {
    let Some(why) = needs.iter().find_map(|n| n.missing()) else {
        return true;
    };
    assert!(
        std::env::var("NPZFS_REQUIRE_FUSE").as_deref() != Ok("1"),
        "{test}: {why}, and NPZFS_REQUIRE_FUSE=1"
    );
    eprintln!("{test}: skipped, {why}");
    false
}

/// [`require`] of FUSE alone, for mount tests.
pub fn fuse_or_skip(test: &str) -> bool {
    require(test, &[Need::Fuse])
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
        Mounted::background_all(&[archive], extra)
    }

    /// Mounts `sources` (archives and directories) in the background; panics with stderr on
    /// failure.
    pub fn background_all(sources: &[&Path], extra: &[&str]) -> Mounted {
        let dir = tempfile::tempdir().unwrap();
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        let mut args: Vec<&str> = sources.iter().map(|p| p.to_str().unwrap()).collect();
        args.push(mnt.to_str().unwrap());
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
        Mounted::foreground_with(archive, extra, |_| {})
    }

    /// As [`Mounted::foreground`], with the daemon's command adjusted by `adjust` first.
    pub fn foreground_with(
        archive: &Path,
        extra: &[&str],
        adjust: impl FnOnce(&mut Command),
    ) -> Mounted {
        let dir = tempfile::tempdir().unwrap();
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        let mut cmd = Command::new(BIN);
        cmd.arg("-f")
            .arg(archive)
            .arg(&mnt)
            .args(extra)
            .stdin(Stdio::null());
        adjust(&mut cmd);
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

    /// Waits up to 10 s for a foreground daemon to exit (panics if it does not): its exit code
    /// and everything it logged.
    pub fn exit_log(&mut self) -> (Option<i32>, String) {
        let child = self.daemon.as_mut().unwrap();
        assert!(
            wait_until(10, || child.try_wait().unwrap().is_some()),
            "the daemon did not exit"
        );
        let code = child.wait().unwrap().code();
        let mut log = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut log).unwrap();
        (code, log)
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

/// A throwaway unprivileged user, created when missing; the test must have [`require`]d
/// [`Need::Root`].
pub fn test_user() -> String {
    const USER: &str = "npzfs-test";
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
    USER.to_string()
}

pub fn as_user(user: &str, args: &[&str]) -> std::process::Output {
    Command::new("runuser")
        .args(["-u", user, "--"])
        .args(args)
        .output()
        .unwrap()
}

/// getxattr(2) with a buffer of `size` bytes: Ok(value) or Err(errno); size 0 probes.
pub fn getxattr(path: &Path, name: &str, size: usize) -> Result<Vec<u8>, i32> {
    let p =
        std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str())).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    let mut buf = vec![0u8; size];
    // SAFETY: valid C strings; the buffer is `size` bytes (null with size 0 is allowed).
    let rc = unsafe {
        let ptr = if size == 0 {
            std::ptr::null_mut()
        } else {
            buf.as_mut_ptr().cast()
        };
        libc::getxattr(p.as_ptr(), n.as_ptr(), ptr, size)
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0));
    }
    buf.truncate(rc as usize);
    Ok(if size == 0 { vec![0; rc as usize] } else { buf })
}
