//! Every way FUSE can be unavailable that this machine can produce for real, each named in
//! one exact line with its fix and exit code 7; and the cache directory's fallback for a user
//! without a home. The situations are made in private mount namespaces (a file bound over
//! fusermount3 or /etc/fuse.conf, a /dev without fuse) or undone in a guard (the mode of
//! /dev/fuse), so the machine is left as it was.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard};

use common::mount::{BIN, Need, is_mounted, require, test_user, unmount, wait_until};
use common::{Entry, compressible, pattern, write_zip};

/// Tests that change /dev/fuse, or need it usable by the test user, take turns.
static DEV_FUSE: Mutex<()> = Mutex::new(());

/// A directory the test user can reach: an archive with a stored and a deflated member, and
/// a mount point the user owns.
struct Setup {
    user: String,
    dir: tempfile::TempDir,
    _turn: MutexGuard<'static, ()>,
}

impl Setup {
    /// None (skipped) when not root or without FUSE; a failure instead with
    /// NPZFS_REQUIRE_FUSE=1.
    fn new(test: &str) -> Option<Setup> {
        let turn = DEV_FUSE.lock().unwrap_or_else(|e| e.into_inner());
        if !require(test, &[Need::Fuse, Need::Root]) {
            return None;
        }
        let user = test_user();
        let dir = tempfile::tempdir().unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let archive = dir.path().join("a.npz");
        write_zip(
            &archive,
            b"",
            &[
                Entry::stored("x.npy", pattern(1, 0, 1000)),
                Entry::deflated("z.npy", compressible(2, 50_000)),
            ],
        );
        fs::set_permissions(&archive, fs::Permissions::from_mode(0o644)).unwrap();
        let mnt = dir.path().join("mnt");
        fs::create_dir(&mnt).unwrap();
        let chown = Command::new("chown").arg(&user).arg(&mnt).status().unwrap();
        assert!(chown.success());
        Some(Setup {
            user,
            dir,
            _turn: turn,
        })
    }

    fn archive(&self) -> String {
        self.path("a.npz")
    }

    fn mnt(&self) -> String {
        self.path("mnt")
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_str().unwrap().to_string()
    }

    /// Runs `shell` as root in a private mount namespace, then `npzfs ARGS` there as the test
    /// user (the namespace's binds are undone when it ends).
    fn npzfs_as_user_after(&self, shell: &str, args: &[&str]) -> Output {
        let script = format!("{shell}\nexec runuser -u {} -- \"$@\"", self.user);
        let out = Command::new("unshare")
            .args([
                "-m",
                "--propagation",
                "private",
                "sh",
                "-euc",
                &script,
                "sh",
                BIN,
            ])
            .args(args)
            .output()
            .unwrap();
        unmount(Path::new(&self.mnt()));
        out
    }

    fn npzfs_as_user(&self, args: &[&str]) -> Output {
        self.npzfs_as_user_after("", args)
    }
}

/// Asserts exit code 7 and exactly `line` on stderr.
fn assert_refused(out: &Output, line: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(7), "{stderr}");
    assert_eq!(stderr, format!("npzfs: {line}\n"));
}

/// Sets the mode of /dev/fuse, and puts it back on drop.
struct DevFuseMode(u32);

impl DevFuseMode {
    fn set(mode: u32) -> DevFuseMode {
        let old = fs::metadata("/dev/fuse").unwrap().permissions().mode() & 0o7777;
        fs::set_permissions("/dev/fuse", fs::Permissions::from_mode(mode)).unwrap();
        DevFuseMode(old)
    }
}

impl Drop for DevFuseMode {
    fn drop(&mut self) {
        fs::set_permissions("/dev/fuse", fs::Permissions::from_mode(self.0)).unwrap();
    }
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

#[test]
fn dev_fuse_not_accessible_names_its_mode_and_the_fix() {
    let Some(s) = Setup::new("dev_fuse_not_accessible") else {
        return;
    };
    let _mode = DevFuseMode::set(0o600);
    let out = s.npzfs_as_user(&[&s.archive(), &s.mnt()]);
    assert_refused(
        &out,
        &format!(
            "cannot mount on {}: /dev/fuse is not accessible to user {} (mode 0600, owner root, \
             group root); as root, make it usable by everyone as distributions ship it: chmod \
             0666 /dev/fuse",
            s.mnt(),
            s.user
        ),
    );
    assert!(!is_mounted(Path::new(&s.mnt())));
}

#[test]
fn no_dev_fuse_in_a_container_names_the_device_option() {
    let Some(s) = Setup::new("no_dev_fuse") else {
        return;
    };
    // A /dev with no fuse in it, as a container started without --device /dev/fuse has.
    let out = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-euc"])
        .arg("mount -t tmpfs none /dev && mknod -m 0666 /dev/null c 1 3 && exec \"$@\"")
        .args(["sh", BIN, &s.archive(), &s.mnt()])
        .output()
        .unwrap();
    assert_refused(
        &out,
        &format!(
            "cannot mount on {}: /dev/fuse does not exist (a container started without the \
             FUSE device?); start the container with --device /dev/fuse, or create it as root: \
             mknod -m 0666 /dev/fuse c 10 229",
            s.mnt()
        ),
    );
}

#[test]
fn no_fusermount3_names_the_package() {
    let Some(s) = Setup::new("no_fusermount3") else {
        return;
    };
    // Hidden wherever fuser would look for it (a bind over the file hides every path to it).
    let mut hide = String::new();
    for name in ["fusermount3", "fusermount"] {
        if let Some(p) = which(name) {
            hide.push_str(&format!("mount --bind /dev/null {}\n", p.display()));
        }
    }
    let out = s.npzfs_as_user_after(&hide, &[&s.archive(), &s.mnt()]);
    assert_refused(
        &out,
        &format!(
            "cannot mount on {}: fusermount3 is not installed, and ordinary users mount \
             through it; install the fuse3 package (apt-get install fuse3, or dnf install fuse3)",
            s.mnt()
        ),
    );
}

#[test]
fn a_fusermount3_without_setuid_names_the_chmod() {
    let Some(s) = Setup::new("fusermount3_without_setuid") else {
        return;
    };
    let copy = s.dir.path().join("bin");
    fs::create_dir(&copy).unwrap();
    let plain = copy.join("fusermount3");
    fs::copy(which("fusermount3").unwrap(), &plain).unwrap();
    fs::set_permissions(&plain, fs::Permissions::from_mode(0o755)).unwrap();
    // runuser itself is in sbin.
    let path = format!("PATH={}:/usr/sbin:/usr/bin:/sbin:/bin", copy.display());
    let out = s.npzfs_as_user_after(&format!("export {path}"), &[&s.archive(), &s.mnt()]);
    let plain = plain.display();
    assert_refused(
        &out,
        &format!(
            "cannot mount on {}: {plain} is not setuid root, so it cannot mount for an \
             ordinary user; as root: chown root {plain} && chmod u+s {plain} (or reinstall \
             fuse3)",
            s.mnt()
        ),
    );
}

#[test]
fn allow_other_without_user_allow_other_names_fuse_conf() {
    let Some(s) = Setup::new("allow_other_without_user_allow_other") else {
        return;
    };
    let conf = s.dir.path().join("fuse.conf");
    fs::write(&conf, "# mount_max = 1000\n#user_allow_other\n").unwrap();
    let bind = if Path::new("/etc/fuse.conf").exists() {
        format!("mount --bind {} /etc/fuse.conf", conf.display())
    } else {
        String::new()
    };
    let out = s.npzfs_as_user_after(&bind, &[&s.archive(), &s.mnt(), "-o", "allow_other"]);
    assert_refused(
        &out,
        &format!(
            "cannot mount on {}: option allow_other (or allow_root) needs user_allow_other in \
             /etc/fuse.conf when not root; add that line to /etc/fuse.conf as root, or mount \
             without it",
            s.mnt()
        ),
    );
}

#[test]
fn a_namespace_that_may_not_mount_is_named_once() {
    let Some(s) = Setup::new("namespace_that_may_not_mount") else {
        return;
    };
    // A user namespace without a mount namespace of its own: mount(2) is refused, and so is
    // fusermount3. The failure comes from the background daemon after its fork: printed once.
    let out = Command::new("runuser")
        .args([
            "-u",
            &s.user,
            "--",
            "unshare",
            "-Ur",
            BIN,
            &s.archive(),
            &s.mnt(),
        ])
        .args(["-o", &format!("cache_dir={}", s.path("mnt/cache"))])
        .output()
        .unwrap();
    assert_refused(
        &out,
        &format!(
            "cannot mount on {}: mounting is not permitted in this namespace or container \
             (fusermount3: mount failed: Operation not permitted); give the container the FUSE \
             device and the right to mount (docker run --device /dev/fuse --cap-add \
             SYS_ADMIN), or mount in a user namespace of your own (unshare -Urm)",
            s.mnt()
        ),
    );
}

#[test]
fn an_ordinary_user_mounts_in_a_user_namespace_without_passthrough() {
    let Some(s) = Setup::new("user_namespace") else {
        return;
    };
    // Inside, npzfs is "root" and calls mount(2) itself; passthrough needs the initial
    // namespace, so complete cache files are served through the daemon.
    let script = format!(
        "{BIN} -o cache_dir={0}/cache {1} {2}; trap 'umount {2}' EXIT; cmp {2}/z.npy {0}/z.want; \
         cmp {2}/x.npy {0}/x.want; cmp {2}/z.npy {0}/z.want",
        s.path("ns"),
        s.archive(),
        s.mnt()
    );
    fs::create_dir(s.path("ns")).unwrap();
    fs::write(s.path("ns/z.want"), compressible(2, 50_000)).unwrap();
    fs::write(s.path("ns/x.want"), pattern(1, 0, 1000)).unwrap();
    let chown = Command::new("chown")
        .args(["-R", &s.user, &s.path("ns")])
        .status()
        .unwrap();
    assert!(chown.success());
    let out = Command::new("runuser")
        .args(["-u", &s.user, "--", "unshare", "-Urm", "sh", "-ec", &script])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(!is_mounted(Path::new(&s.mnt())));
}

#[test]
fn a_user_without_a_home_gets_the_next_cache_directory_and_one_line() {
    let Some(s) = Setup::new("user_without_home") else {
        return;
    };
    let home = format!("/nonexistent-home-{}", std::process::id());
    let out = Command::new("runuser")
        .args([
            "-u",
            &s.user,
            "--",
            "env",
            "-u",
            "XDG_CACHE_HOME",
            "-u",
            "CACHE_DIRECTORY",
        ])
        .args([&format!("HOME={home}"), BIN, &s.archive(), &s.mnt()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let uid = String::from_utf8(
        Command::new("id")
            .args(["-u", &s.user])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let fallback = format!("/var/tmp/npzfs-{}", uid.trim());
    assert_eq!(
        stderr,
        format!(
            "npzfs: info: using cache directory {fallback}: cannot use \
             {home}/.cache/npzfs: Permission denied\n"
        )
    );
    let z = Path::new(&s.mnt()).join("z.npy");
    let read = Command::new("runuser")
        .args(["-u", &s.user, "--", "cat"])
        .arg(&z)
        .output()
        .unwrap();
    assert_eq!(
        read.stdout,
        compressible(2, 50_000),
        "served from {fallback}"
    );
    unmount(Path::new(&s.mnt()));
    assert!(wait_until(10, || !is_mounted(Path::new(&s.mnt()))));
}

#[test]
fn an_explicit_cache_dir_that_cannot_be_used_is_an_error_not_a_fallback() {
    let Some(s) = Setup::new("explicit_cache_dir") else {
        return;
    };
    let out = s.npzfs_as_user(&[&s.archive(), &s.mnt(), "-o", "cache_dir=/root/npzfs-cache"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(8), "{stderr}");
    assert_eq!(
        stderr,
        "npzfs: cannot use cache directory /root/npzfs-cache: Permission denied\n"
    );
}
