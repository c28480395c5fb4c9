//! Can this process mount FUSE at all? Each way it cannot gets its own cause and its fix.
//!
//! The kernel and fusermount3 say little when they refuse ("Permission denied"), and the same
//! word has half a dozen causes: no FUSE device in a container, a device only root may open,
//! fusermount3 missing or without its setuid bit, `allow_other` without `user_allow_other`,
//! a namespace or container that forbids mounting. [`check`] tells them apart before
//! mounting, from what the system shows; [`explain`] names the cause of a mount that failed
//! anyway. Every message is one line: the cause, then `;` and what to do about it.

use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result, cause};

/// What the mount about to be made needs.
#[derive(Clone, Copy, Debug)]
pub struct Needs {
    /// `allow_other` (or `allow_root`): an ordinary user needs `user_allow_other`.
    pub allow_other: bool,
    /// `auto_unmount`: only fusermount3 does it, even for root.
    pub auto_unmount: bool,
}

/// The FUSE device.
const DEV_FUSE: &str = "/dev/fuse";
/// fusermount3's configuration, where `user_allow_other` is set.
const FUSE_CONF: &str = "/etc/fuse.conf";

/// Checks the FUSE device, fusermount3 and its configuration, as far as this mount needs
/// them. Fails with [`Error::Mount`] (exit 7) naming the missing piece and its fix.
pub fn check(mountpoint: &Path, needs: Needs) -> Result<()> {
    check_device(mountpoint)?;
    // Without CAP_SYS_ADMIN mount(2) is refused, and fusermount3 (setuid root) mounts for us.
    if !can_mount_directly() || needs.auto_unmount {
        check_fusermount(mountpoint)?;
    }
    // SAFETY: getuid has no preconditions.
    if needs.allow_other && unsafe { libc::getuid() } != 0 && !user_allow_other() {
        return Err(refused(
            mountpoint,
            format!(
                "option allow_other (or allow_root) needs user_allow_other in {FUSE_CONF} when \
             not root; add that line to {FUSE_CONF} as root, or mount without it"
            ),
        ));
    }
    Ok(())
}

/// The error for a mount that was refused after [`check`] passed.
pub fn explain(mountpoint: &Path, err: &io::Error) -> Error {
    let text = match err.raw_os_error() {
        Some(_) => cause(err),
        // fusermount3's own words (fuser passes its stderr on as the error).
        None => one_line(&err.to_string()),
    };
    let refused =
        err.raw_os_error() == Some(libc::EPERM) || text.contains("Operation not permitted");
    let why = if refused {
        format!(
            "mounting is not permitted in this namespace or container ({text}); give the \
             container the FUSE device and the right to mount (docker run --device /dev/fuse \
             --cap-add SYS_ADMIN), or mount in a user namespace of your own (unshare -Urm)"
        )
    } else {
        text
    };
    Error::Mount {
        path: mountpoint.to_path_buf(),
        cause: why,
    }
}

/// The mount on `mountpoint` cannot be made, for `why` (exit 7).
fn refused(mountpoint: &Path, why: String) -> Error {
    Error::Mount {
        path: mountpoint.to_path_buf(),
        cause: why,
    }
}

fn check_device(mountpoint: &Path) -> Result<()> {
    let opened = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(DEV_FUSE);
    let err = match opened {
        Ok(_) => return Ok(()),
        Err(e) => e,
    };
    let why = match err.raw_os_error() {
        Some(libc::ENOENT) if fuse_in_kernel() => format!(
            "{DEV_FUSE} does not exist (a container started without the FUSE device?); start \
             the container with --device /dev/fuse, or create it as root: mknod -m 0666 \
             {DEV_FUSE} c 10 229"
        ),
        Some(libc::ENOENT) => format!(
            "{DEV_FUSE} does not exist and this kernel has no FUSE loaded; load it as root: \
             modprobe fuse"
        ),
        Some(libc::EACCES) => {
            let shown = fs::metadata(DEV_FUSE)
                .map(|m| {
                    format!(
                        "mode {:04o}, owner {}, group {}",
                        m.permissions().mode() & 0o7777,
                        user_name(m.uid()),
                        group_name(m.gid())
                    )
                })
                .unwrap_or_default();
            format!(
                "{DEV_FUSE} is not accessible to user {} ({shown}); as root, make it usable by \
                 everyone as distributions ship it: chmod 0666 {DEV_FUSE}",
                // SAFETY: getuid has no preconditions.
                user_name(unsafe { libc::getuid() })
            )
        }
        Some(libc::EPERM) => format!(
            "opening {DEV_FUSE} is not permitted (this container's device policy denies it); \
             start the container with --device /dev/fuse"
        ),
        _ => format!("cannot open {DEV_FUSE}: {}", cause(&err)),
    };
    Err(refused(mountpoint, why))
}

/// Whether the kernel knows the `fuse` file system type (built in or loaded).
fn fuse_in_kernel() -> bool {
    fs::read_to_string("/proc/filesystems").is_ok_and(|t| {
        t.lines()
            .any(|l| l.split_whitespace().last() == Some("fuse"))
    })
}

/// Whether this process may call mount(2) itself: CAP_SYS_ADMIN in its effective set (root,
/// or any user inside a user namespace of its own).
pub fn can_mount_directly() -> bool {
    const CAP_SYS_ADMIN: u32 = 21;
    let Ok(status) = fs::read_to_string("/proc/self/status") else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << CAP_SYS_ADMIN) != 0)
}

/// Whether FUSE passthrough can be had: it needs CAP_SYS_ADMIN in the initial user namespace
/// (inside `unshare -Ur` the capability is the namespace's, and the kernel refuses).
pub fn passthrough_possible() -> bool {
    let initial = fs::read_to_string("/proc/self/uid_map")
        .is_ok_and(|m| m.split_whitespace().collect::<Vec<_>>() == ["0", "0", "4294967295"]);
    initial && can_mount_directly()
}

fn check_fusermount(mountpoint: &Path) -> Result<()> {
    let fail = |why: String| refused(mountpoint, why);
    let Some(path) = find_fusermount() else {
        return Err(fail(
            "fusermount3 is not installed, and ordinary users mount through it; install the \
             fuse3 package (apt-get install fuse3, or dnf install fuse3)"
                .into(),
        ));
    };
    let meta = fs::metadata(&path)
        .map_err(|e| fail(format!("cannot use {}: {}", path.display(), cause(&e))))?;
    let setuid_root = meta.uid() == 0 && meta.mode() & libc::S_ISUID != 0;
    // SAFETY: geteuid has no preconditions.
    if !setuid_root && unsafe { libc::geteuid() } != 0 {
        return Err(fail(format!(
            "{0} is not setuid root, so it cannot mount for an ordinary user; as root: \
             chown root {0} && chmod u+s {0} (or reinstall fuse3)",
            path.display()
        )));
    }
    Ok(())
}

/// The fusermount fuser will run: `$FUSERMOUNT_PATH`, else `fusermount3` or `fusermount`
/// on `PATH`, else in /sbin or /bin (fuser's own order).
fn find_fusermount() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("FUSERMOUNT_PATH") {
        return Some(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    ["fusermount3", "fusermount"]
        .iter()
        .flat_map(|name| dirs.iter().map(move |d| d.join(name)))
        .chain(
            [
                "/sbin/fusermount3",
                "/sbin/fusermount",
                "/bin/fusermount3",
                "/bin/fusermount",
            ]
            .map(PathBuf::from),
        )
        .find(|p| is_executable(p))
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.mode() & 0o111 != 0)
}

/// Whether fusermount3's configuration allows ordinary users `allow_other`.
fn user_allow_other() -> bool {
    fs::read_to_string(FUSE_CONF).is_ok_and(|text| {
        text.lines().any(|l| {
            l.split('#')
                .next()
                .is_some_and(|l| l.trim() == "user_allow_other")
        })
    })
}

/// A multi-line tool message as one line.
fn one_line(text: &str) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    lines.join("; ")
}

fn user_name(uid: u32) -> String {
    name_from("/etc/passwd", uid).unwrap_or_else(|| format!("uid {uid}"))
}

fn group_name(gid: u32) -> String {
    name_from("/etc/group", gid).unwrap_or_else(|| format!("gid {gid}"))
}

/// The name of `id` in a passwd-format file (name:x:id:...).
fn name_from(file: &str, id: u32) -> Option<String> {
    let text = fs::read_to_string(file).ok()?;
    text.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        (fields.nth(1)?.parse() == Ok(id)).then(|| name.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fusermount_messages_become_one_line() {
        assert_eq!(one_line("fusermount3: a\n\n  b\n"), "fusermount3: a; b");
    }

    #[test]
    fn a_refused_mount_names_the_namespace() {
        let e = io::Error::other("fusermount3: mount failed: Operation not permitted\n");
        let msg = explain(Path::new("/m"), &e).to_string();
        assert!(
            msg.starts_with("cannot mount on /m: mounting is not permitted"),
            "{msg}"
        );
        assert!(
            msg.contains("(fusermount3: mount failed: Operation not permitted)"),
            "{msg}"
        );
        let e = io::Error::other("fusermount3: bad mount point /m: No such file\n");
        let msg = explain(Path::new("/m"), &e).to_string();
        assert_eq!(
            msg,
            "cannot mount on /m: fusermount3: bad mount point /m: No such file"
        );
    }

    #[test]
    fn root_has_a_name() {
        assert_eq!(user_name(0), "root");
        assert_eq!(name_from("/nonexistent", 0), None);
    }
}
