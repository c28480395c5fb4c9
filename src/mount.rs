//! Mounting and unmounting the FUSE session.
//!
//! With the privilege to call mount(2) (root), npzfs mounts itself, as libfuse does, with the
//! type `fuse.npzfs`: that is what `findmnt -t fuse.npzfs`, fstab and systemd's mount units
//! name. fuser's own privileged mount passes the bare type `fuse`, so it is used only where
//! fusermount3 does the mounting (unprivileged users, `auto_unmount`), which sets the subtype
//! itself.

use std::ffi::CString;
use std::fs::OpenOptions;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use fuser::{Config, Session, SessionACL, SessionUnmounter};

use crate::fuse::Fuse;

/// The file system type shown in /proc/mounts, after `fuse.`.
pub const SUBTYPE: &str = "npzfs";

/// How the mount is taken down again.
pub enum Unmounter {
    /// We called mount(2): umount2(2) undoes it.
    Kernel,
    /// fusermount3 mounted it: fuser calls it again to unmount.
    Fusermount(SessionUnmounter),
}

/// What the mount needs beyond fuser's `Config`.
pub struct Request<'a> {
    /// Source shown in /proc/mounts.
    pub fsname: &'a str,
    /// Who may use the mount.
    pub acl: SessionACL,
    /// Use fusermount3 even when mount(2) would work (`auto_unmount` is fusermount3's).
    pub fusermount: bool,
}

/// Mounts `fs` on `mountpoint` and performs the FUSE handshake.
pub fn mount(
    fs: Fuse,
    mountpoint: &Path,
    config: &Config,
    req: &Request,
) -> io::Result<(Session<Fuse>, Unmounter)> {
    if !req.fusermount {
        match mount_syscall(mountpoint, req) {
            Ok(fd) => {
                let session = Session::from_fd(fs, fd, req.acl, config.clone());
                if session.is_err() {
                    // The mount exists but will never be served: do not leave it stale.
                    unmount(mountpoint, true).ok();
                }
                return Ok((session?, Unmounter::Kernel));
            }
            // Not privileged (or in a user namespace that may not mount FUSE): fusermount3.
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {}
            Err(e) => return Err(e),
        }
    }
    let mut session = Session::new(fs, mountpoint, config)?;
    let unmounter = session.unmount_callable();
    Ok((session, Unmounter::Fusermount(unmounter)))
}

impl Unmounter {
    /// Unmounts; fails with EBUSY while the mount is in use.
    pub fn unmount(&mut self, mountpoint: &Path) -> io::Result<()> {
        match self {
            Unmounter::Kernel => unmount(mountpoint, false),
            Unmounter::Fusermount(u) => u.unmount(),
        }
    }
}

/// Opens /dev/fuse and mounts it on `mountpoint` with type `fuse.npzfs`, read-only, nodev,
/// nosuid, with the kernel checking permissions (`default_permissions`).
fn mount_syscall(mountpoint: &Path, req: &Request) -> io::Result<OwnedFd> {
    let dev = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open("/dev/fuse")?;
    let fd = OwnedFd::from(dev);
    // SAFETY: getuid/getgid have no preconditions.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    use std::os::fd::AsRawFd;
    let mut data = format!(
        "fd={},rootmode={:o},user_id={uid},group_id={gid},default_permissions",
        fd.as_raw_fd(),
        libc::S_IFDIR
    );
    // The kernel knows only allow_other; fuser's session turns away users that allow_root
    // does not admit.
    if req.acl != SessionACL::Owner {
        data.push_str(",allow_other");
    }
    let target = c_path(mountpoint)?;
    let source = CString::new(req.fsname.replace('\0', "_"))
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let fstype = CString::new(format!("fuse.{SUBTYPE}"))
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let data = CString::new(data).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let flags = libc::MS_RDONLY | libc::MS_NODEV | libc::MS_NOSUID;
    // SAFETY: every pointer is a valid NUL-terminated string that outlives the call.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            flags,
            data.as_ptr().cast(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

/// umount2(2) on `mountpoint`; `lazy` detaches it even while in use.
pub fn unmount(mountpoint: &Path, lazy: bool) -> io::Result<()> {
    let target = c_path(mountpoint)?;
    let flags = if lazy { libc::MNT_DETACH } else { 0 };
    // SAFETY: `target` is a valid NUL-terminated path.
    if unsafe { libc::umount2(target.as_ptr(), flags) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}
