//! The one error type of npzfs, its errno table and its exit-code table.
//!
//! Core code returns [`Error`] with context attached where the failure happens; the FUSE
//! adapter turns it into an errno (and logs it once), `main` turns startup failures into one
//! line on stderr and an exit code.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// Result with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong, at startup or while serving.
#[derive(Debug)]
pub enum Error {
    /// A bad command line or `-o` option.
    Usage(String),
    /// The archive cannot be opened (missing, a directory, no permission).
    ArchiveOpen { path: PathBuf, cause: String },
    /// The archive is not a ZIP we can read (empty, truncated, not a ZIP at all).
    ArchiveFormat { path: PathBuf, cause: String },
    /// The mount point is missing, not a directory or not writable by us.
    Mountpoint { path: PathBuf, cause: String },
    /// Something is already mounted on the mount point, or a dead daemon left it behind.
    AlreadyMounted { path: PathBuf, cause: String },
    /// The kernel or fusermount3 refused the mount.
    Mount { path: PathBuf, cause: String },
    /// The FUSE session failed while serving a mount.
    Session { path: PathBuf, cause: String },
    /// The cache directory cannot be created or used.
    CacheDir { path: PathBuf, cause: String },
    /// A startup failure the background daemon reported to the waiting parent.
    Daemon { code: i32, message: String },
    /// No such node (lookup of a missing name, an unknown inode).
    NotFound,
    /// A directory operation on a file.
    NotDir,
    /// A file operation on a directory.
    IsDir,
    /// Any attempt to modify the read-only mount.
    ReadOnly,
    /// A member we list but cannot serve (unknown method, encryption).
    Unsupported { what: String, cause: String },
    /// A member whose bytes are wrong or unreachable (bad local header, CRC, archive changed).
    Corrupt { what: String, cause: String },
    /// An I/O failure while serving a member.
    Io { what: String, cause: io::Error },
}

impl Error {
    /// The errno a FUSE client sees for this error.
    pub fn errno(&self) -> i32 {
        match self {
            Error::NotFound => libc::ENOENT,
            Error::NotDir => libc::ENOTDIR,
            Error::IsDir => libc::EISDIR,
            Error::ReadOnly => libc::EROFS,
            Error::Unsupported { .. } => libc::EOPNOTSUPP,
            Error::Io { cause, .. } => match cause.raw_os_error() {
                Some(libc::ENOSPC) => libc::ENOSPC,
                _ => libc::EIO,
            },
            Error::Usage(_) => libc::EINVAL,
            Error::ArchiveOpen { .. }
            | Error::ArchiveFormat { .. }
            | Error::Mountpoint { .. }
            | Error::CacheDir { .. }
            | Error::AlreadyMounted { .. }
            | Error::Mount { .. }
            | Error::Session { .. }
            | Error::Daemon { .. }
            | Error::Corrupt { .. } => libc::EIO,
        }
    }

    /// The process exit code for a startup failure (documented in README "Exit codes").
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage(_) => 2,
            Error::ArchiveOpen { .. } => 3,
            Error::ArchiveFormat { .. } => 4,
            Error::Mountpoint { .. } => 5,
            Error::AlreadyMounted { .. } => 6,
            Error::Mount { .. } | Error::Session { .. } => 7,
            Error::CacheDir { .. } => 8,
            Error::Daemon { code, .. } => *code,
            _ => 1,
        }
    }

    /// Whether a serving failure deserves a warning (EIO and friends) or only a debug line.
    pub fn is_expected(&self) -> bool {
        matches!(
            self,
            Error::NotFound | Error::NotDir | Error::IsDir | Error::ReadOnly
        )
    }
}

/// One cause from an `io::Error`, without Rust's "(os error N)" suffix.
pub fn cause(err: &io::Error) -> String {
    match err.raw_os_error() {
        // std's Display appends " (os error N)"; a message for a person wants the cause alone.
        Some(code) => io::Error::from_raw_os_error(code)
            .to_string()
            .split(" (os error")
            .next()
            .unwrap_or_default()
            .to_string(),
        None => err.to_string(),
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Usage(msg) => write!(f, "{msg}"),
            Error::ArchiveOpen { path, cause } => {
                write!(f, "cannot open archive {}: {cause}", path.display())
            }
            Error::ArchiveFormat { path, cause } => {
                write!(f, "cannot read archive {}: {cause}", path.display())
            }
            Error::CacheDir { path, cause } => {
                write!(f, "cannot use cache directory {}: {cause}", path.display())
            }
            Error::Mountpoint { path, cause } => {
                write!(f, "cannot use mount point {}: {cause}", path.display())
            }
            Error::AlreadyMounted { path, cause } => {
                write!(f, "cannot mount on {}: {cause}", path.display())
            }
            Error::Mount { path, cause } => {
                write!(f, "cannot mount on {}: {cause}", path.display())
            }
            Error::Session { path, cause } => {
                write!(f, "serving {} failed: {cause}", path.display())
            }
            Error::Daemon { message, .. } => write!(f, "{message}"),
            Error::NotFound => write!(f, "no such file or directory"),
            Error::NotDir => write!(f, "not a directory"),
            Error::IsDir => write!(f, "is a directory"),
            Error::ReadOnly => write!(f, "read-only file system"),
            Error::Unsupported { what, cause } => write!(f, "cannot read {what}: {cause}"),
            Error::Corrupt { what, cause } => write!(f, "cannot read {what}: {cause}"),
            Error::Io { what, cause: err } => write!(f, "cannot read {what}: {}", cause(err)),
        }
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_startup_error_has_its_own_exit_code() {
        let p = PathBuf::from("x");
        let s = String::new;
        let codes = [
            Error::Usage(s()).exit_code(),
            Error::ArchiveOpen {
                path: p.clone(),
                cause: s(),
            }
            .exit_code(),
            Error::ArchiveFormat {
                path: p.clone(),
                cause: s(),
            }
            .exit_code(),
            Error::Mountpoint {
                path: p.clone(),
                cause: s(),
            }
            .exit_code(),
            Error::AlreadyMounted {
                path: p.clone(),
                cause: s(),
            }
            .exit_code(),
            Error::Mount {
                path: p.clone(),
                cause: s(),
            }
            .exit_code(),
            Error::CacheDir {
                path: p,
                cause: s(),
            }
            .exit_code(),
        ];
        let mut sorted = codes.to_vec();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), codes.len());
        assert!(!codes.contains(&0) && !codes.contains(&1));
    }

    #[test]
    fn cause_drops_the_os_error_suffix() {
        let e = io::Error::from_raw_os_error(libc::ENOENT);
        assert_eq!(cause(&e), "No such file or directory");
    }

    #[test]
    fn full_disk_stays_enospc() {
        let e = Error::Io {
            what: "x".into(),
            cause: io::Error::from_raw_os_error(libc::ENOSPC),
        };
        assert_eq!(e.errno(), libc::ENOSPC);
    }
}
