//! A source tree on disk, read without ever following a symbolic link inside it.
//!
//! A directory source is served live: every lookup and listing asks the disk again (with a
//! short TTL), and nothing under the source root is opened by path. Each access walks from
//! the root one component at a time with `O_NOFOLLOW`, so a symlink planted anywhere in the
//! tree, even swapped in between two requests, is never followed by the daemon: it is shown
//! as a symlink, and the reader's own kernel resolves it with the reader's own permissions.
//! The root itself was resolved once, at mount.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, CWD, Dir, FileType, Mode, OFlags, Stat};

/// What a source entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Type {
    /// A directory.
    Dir,
    /// A regular file.
    File,
    /// A symbolic link.
    Symlink,
    /// A device, FIFO or socket: never shown.
    Other,
}

/// What `stat` says of a source entry, kept small.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meta {
    /// Device.
    pub dev: u64,
    /// Inode.
    pub ino: u64,
    /// What it is.
    pub kind: Type,
    /// Permission bits.
    pub perm: u16,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, seconds.
    pub mtime: i64,
    /// Nanoseconds part of the modification time.
    pub mtime_nsec: i64,
}

impl Meta {
    /// What the opened `file` is.
    pub fn of_file(file: &File) -> io::Result<Meta> {
        Ok(Meta::of(&rustix::fs::fstat(file)?))
    }

    fn of(st: &Stat) -> Meta {
        let kind = match FileType::from_raw_mode(st.st_mode) {
            FileType::Directory => Type::Dir,
            FileType::RegularFile => Type::File,
            FileType::Symlink => Type::Symlink,
            _ => Type::Other,
        };
        Meta {
            dev: st.st_dev,
            ino: st.st_ino,
            kind,
            perm: (st.st_mode & 0o7777) as u16,
            uid: st.st_uid,
            gid: st.st_gid,
            size: u64::try_from(st.st_size).unwrap_or(0),
            mtime: st.st_mtime,
            mtime_nsec: st.st_mtime_nsec as i64,
        }
    }
}

/// A directory the sources live in, resolved at mount; paths below it are relative.
#[derive(Clone, Debug)]
pub struct SourceDir {
    root: PathBuf,
}

impl SourceDir {
    /// The tree under the directory `root` (absolute, already resolved).
    pub fn new(root: PathBuf) -> SourceDir {
        SourceDir { root }
    }

    /// Where `rel` is, for messages.
    pub fn display(&self, rel: &Path) -> String {
        self.root.join(rel).display().to_string()
    }

    /// The directory holding `rel`'s last component, reached without following a symlink,
    /// and that component (None for the root itself).
    fn parent_of<'a>(&self, rel: &'a Path) -> io::Result<(OwnedFd, Option<&'a OsStr>)> {
        let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let mut dir = rustix::fs::openat(CWD, &self.root, flags, Mode::empty())?;
        let mut names = rel.components().filter_map(|c| match c {
            Component::Normal(n) => Some(n),
            _ => None,
        });
        let mut last = names.next();
        for next in names {
            if let Some(name) = last {
                dir = rustix::fs::openat(&dir, name, flags | OFlags::NOFOLLOW, Mode::empty())?;
            }
            last = Some(next);
        }
        Ok((dir, last))
    }

    /// What `rel` is (a symlink is itself, not what it points to).
    pub fn stat(&self, rel: &Path) -> io::Result<Meta> {
        let (dir, name) = self.parent_of(rel)?;
        let st = match name {
            Some(name) => rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW)?,
            None => rustix::fs::fstat(&dir)?,
        };
        Ok(Meta::of(&st))
    }

    /// What each of `names` in the directory `rel` is, if it exists: one walk to the
    /// directory, then one `fstatat` per name (a lookup asks for a name and its archive
    /// twin).
    pub fn stat_in<const N: usize>(
        &self,
        rel: &Path,
        names: [&OsStr; N],
    ) -> io::Result<[Option<Meta>; N]> {
        let (parent, last) = self.parent_of(rel)?;
        let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let dir = match last {
            Some(name) => rustix::fs::openat(&parent, name, flags, Mode::empty())?,
            None => parent,
        };
        let mut out = [None; N];
        for (slot, name) in out.iter_mut().zip(names) {
            *slot = match rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => Some(Meta::of(&st)),
                Err(rustix::io::Errno::NOENT) => None,
                Err(e) => return Err(e.into()),
            };
        }
        Ok(out)
    }

    /// The entries of directory `rel` (not `.` and `..`), each with what it is.
    pub fn list(&self, rel: &Path) -> io::Result<Vec<(Box<[u8]>, Meta)>> {
        let (parent, name) = self.parent_of(rel)?;
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let dir = match name {
            Some(name) => rustix::fs::openat(&parent, name, flags, Mode::empty())?,
            None => rustix::fs::openat(&parent, ".", flags, Mode::empty())?,
        };
        let mut out = Vec::new();
        for entry in Dir::read_from(&dir)? {
            let entry = entry?;
            let name = entry.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            // Gone between the listing and the stat: not listed.
            match rustix::fs::statat(&dir, entry.file_name(), AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => out.push((name.into(), Meta::of(&st))),
                Err(rustix::io::Errno::NOENT) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(out)
    }

    /// Opens the regular file `rel` read-only (never a symlink, and never blocking on a FIFO
    /// swapped in meanwhile).
    pub fn open_file(&self, rel: &Path) -> io::Result<File> {
        let (dir, name) = self.parent_of(rel)?;
        let name = name.ok_or_else(|| io::Error::from_raw_os_error(libc::EISDIR))?;
        let flags =
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(&dir, name, flags, Mode::empty())?;
        if Meta::of(&rustix::fs::fstat(&fd)?).kind != Type::File {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        Ok(File::from(fd))
    }

    /// The target of the symlink `rel`, as written.
    pub fn readlink(&self, rel: &Path) -> io::Result<Vec<u8>> {
        let (dir, name) = self.parent_of(rel)?;
        let name = name.ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
        Ok(rustix::fs::readlinkat(&dir, name, Vec::new())?.into_bytes())
    }
}

/// `name` as a path component.
pub fn component(name: &[u8]) -> &OsStr {
    OsStr::from_bytes(name)
}
