//! The one error type of npzfs, its errno table and its exit-code table.
//!
//! Core code returns [`Error`] with context attached where the failure happens; the FUSE
//! adapter turns it into an errno (and logs it once), `main` turns startup failures into one
//! line on stderr and an exit code.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

/// The process exit codes, by name.
pub mod exit {
    /// Mounted (background), or unmounted cleanly (`-f`).
    pub const OK: i32 = 0;
    /// An internal error.
    pub const INTERNAL: i32 = 1;
    /// Bad usage.
    pub const USAGE: i32 = 2;
    /// The archive cannot be opened.
    pub const ARCHIVE_OPEN: i32 = 3;
    /// The archive is not a readable ZIP.
    pub const ARCHIVE_FORMAT: i32 = 4;
    /// A bad mount point.
    pub const MOUNTPOINT: i32 = 5;
    /// The mount point is mounted already, or stale.
    pub const ALREADY_MOUNTED: i32 = 6;
    /// The mount failed, or the session failed while serving.
    pub const MOUNT: i32 = 7;
    /// The cache directory cannot be used.
    pub const CACHE_DIR: i32 = 8;
    /// A remote source cannot be reached or read.
    pub const REMOTE: i32 = 9;
    /// The metrics address (`-o metrics=`) cannot be listened on.
    pub const METRICS: i32 = 10;
}

/// The exit codes and what each means: the one table `--help`, the man page and the README
/// show (a test checks the README against it).
pub const EXIT_CODES: &[(i32, &str)] = &[
    (exit::OK, "mounted (or unmounted cleanly with -f)"),
    (exit::INTERNAL, "internal error"),
    (
        exit::USAGE,
        "bad usage: an unknown or malformed option, a missing argument",
    ),
    (exit::ARCHIVE_OPEN, "the archive cannot be opened"),
    (exit::ARCHIVE_FORMAT, "the archive is not a readable ZIP"),
    (
        exit::MOUNTPOINT,
        "bad mount point: missing, not a directory, no write access",
    ),
    (
        exit::ALREADY_MOUNTED,
        "the mount point is already mounted, or a stale mount is left there",
    ),
    (
        exit::MOUNT,
        "FUSE is unavailable or refused the mount, or the FUSE session failed while serving",
    ),
    (exit::CACHE_DIR, "the cache directory cannot be used"),
    (
        exit::REMOTE,
        "a remote source cannot be read: no such bucket or object, credentials missing or \
         refused, no Range support, or no answer in time",
    ),
    (
        exit::METRICS,
        "the metrics address (-o metrics=) cannot be listened on: the port is in use, or \
         no interface here has the address",
    ),
];

/// Why a ranged read of a remote object failed, where the reader's errno says it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RemoteFailure {
    /// No answer within `remote_timeout` (retries included).
    TimedOut,
    /// The object was replaced since it was opened (its ETag no longer matches).
    Changed,
}

/// Result with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong, at startup or while serving. Clone: one failed decode is
/// every waiting reader's error.
#[derive(Clone, Debug)]
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
    /// The metrics address cannot be listened on.
    Metrics { addr: String, cause: String },
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
    /// No extended attribute of that name.
    NoAttr,
    /// A member we list but cannot serve (unknown method, encryption).
    Unsupported { what: String, cause: String },
    /// A member whose bytes are wrong or unreachable (bad local header, CRC, archive changed).
    Corrupt { what: String, cause: String },
    /// A system call failed while serving: `cannot <verb> <what>: <cause>`. ENOSPC reaches
    /// the reader as itself, anything else as EIO.
    Io {
        verb: &'static str,
        what: String,
        cause: Arc<io::Error>,
    },
    /// A system call on a source tree failed: `cannot <verb> <what>: <cause>`. EACCES,
    /// ENOENT, ENOTDIR and EMFILE reach the reader as themselves, anything else as EIO.
    SourceIo {
        verb: &'static str,
        what: String,
        cause: Arc<io::Error>,
    },
    /// A failure already logged once (an archive of a source tree that cannot be read):
    /// answered again with its errno, logged at debug only.
    Reported(Arc<Error>),
    /// A remote object cannot be read (at mount: exit 9; while serving: EIO).
    Remote { url: String, cause: String },
    /// A ranged read of a remote object failed in a way a reader's errno tells apart: it took
    /// too long (ETIMEDOUT), or the object changed since it was opened (ESTALE, as NFS says
    /// of a file replaced under an open handle). At mount: exit 9, like any remote failure.
    RemoteRead {
        url: String,
        cause: String,
        why: RemoteFailure,
    },
    /// A member's decoding was stopped (no one held it any more, or the mount went away).
    Stopped { what: String },
}

impl Error {
    /// The errno a FUSE client sees for this error.
    pub fn errno(&self) -> i32 {
        match self {
            Error::NotFound => libc::ENOENT,
            Error::NotDir => libc::ENOTDIR,
            Error::IsDir => libc::EISDIR,
            Error::ReadOnly => libc::EROFS,
            Error::NoAttr => libc::ENODATA,
            Error::Unsupported { .. } => libc::EOPNOTSUPP,
            Error::Io { cause, .. } => match cause.raw_os_error() {
                Some(libc::ENOSPC) => libc::ENOSPC,
                _ => libc::EIO,
            },
            // A source tree's own answers reach the reader as themselves.
            Error::SourceIo { cause, .. } => match cause.raw_os_error() {
                Some(e @ (libc::EACCES | libc::ENOENT | libc::ENOTDIR | libc::EMFILE)) => e,
                Some(libc::EPERM) => libc::EACCES,
                Some(libc::ELOOP) => libc::ENOENT,
                _ => libc::EIO,
            },
            Error::Usage(_) => libc::EINVAL,
            Error::Stopped { .. } | Error::Remote { .. } => libc::EIO,
            Error::RemoteRead { why, .. } => match why {
                RemoteFailure::TimedOut => libc::ETIMEDOUT,
                RemoteFailure::Changed => libc::ESTALE,
            },
            Error::Reported(e) => e.errno(),
            Error::ArchiveOpen { .. }
            | Error::ArchiveFormat { .. }
            | Error::Mountpoint { .. }
            | Error::CacheDir { .. }
            | Error::Metrics { .. }
            | Error::AlreadyMounted { .. }
            | Error::Mount { .. }
            | Error::Session { .. }
            | Error::Daemon { .. }
            | Error::Corrupt { .. } => libc::EIO,
        }
    }

    /// The process exit code for a startup failure (the table is [`EXIT_CODES`]).
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage(_) => exit::USAGE,
            Error::ArchiveOpen { .. } => exit::ARCHIVE_OPEN,
            Error::ArchiveFormat { .. } => exit::ARCHIVE_FORMAT,
            Error::Mountpoint { .. } => exit::MOUNTPOINT,
            Error::AlreadyMounted { .. } => exit::ALREADY_MOUNTED,
            Error::Mount { .. } | Error::Session { .. } => exit::MOUNT,
            Error::CacheDir { .. } => exit::CACHE_DIR,
            Error::Metrics { .. } => exit::METRICS,
            Error::Remote { .. } | Error::RemoteRead { .. } => exit::REMOTE,
            Error::Daemon { code, .. } => *code,
            _ => exit::INTERNAL,
        }
    }

    /// Whether a serving failure deserves a warning (EIO and friends) or only a debug line.
    pub fn is_expected(&self) -> bool {
        let quiet = [libc::EACCES, libc::ENOENT, libc::ENOTDIR];
        match self {
            Error::NotFound
            | Error::NotDir
            | Error::IsDir
            | Error::ReadOnly
            | Error::NoAttr
            | Error::Reported(_) => true,
            Error::SourceIo { cause, .. } => {
                cause.raw_os_error().is_some_and(|e| quiet.contains(&e))
            }
            _ => false,
        }
    }
}

impl Error {
    /// A failed system call: `cannot <verb> <what>: <cause>`.
    pub fn io(verb: &'static str, what: impl Into<String>, cause: io::Error) -> Error {
        Error::Io {
            verb,
            what: what.into(),
            cause: Arc::new(cause),
        }
    }

    /// This error as member `name`'s. A failed read of the archive keeps its kind (and so its
    /// errno and exit code) and says which member it was for; a member's bytes found wrong
    /// become `cannot read <name>: <cause>`; anything else is left as it is.
    pub fn for_member(self, name: &str) -> Error {
        match self {
            Error::Io { verb, what, cause } => Error::Io {
                verb,
                what: format!("{what} for {name}"),
                cause,
            },
            Error::Remote { url, cause } => Error::Remote {
                url,
                cause: format!("{cause} (reading {name})"),
            },
            Error::RemoteRead { url, cause, why } => Error::RemoteRead {
                url,
                cause: format!("{cause} (reading {name})"),
                why,
            },
            Error::Corrupt { cause, .. } => Error::Corrupt {
                what: name.to_string(),
                cause,
            },
            other => other,
        }
    }

    /// A failed system call on a source tree: `cannot <verb> <what>: <cause>`.
    pub fn in_source(verb: &'static str, what: impl Into<String>, cause: io::Error) -> Error {
        Error::SourceIo {
            verb,
            what: what.into(),
            cause: Arc::new(cause),
        }
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
            Error::Metrics { addr, cause } => {
                write!(f, "cannot serve metrics at {addr}: {cause}")
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
            Error::NoAttr => write!(f, "no such attribute"),
            Error::Unsupported { what, cause } => write!(f, "cannot read {what}: {cause}"),
            Error::Corrupt { what, cause } => write!(f, "cannot read {what}: {cause}"),
            Error::Io {
                verb,
                what,
                cause: err,
            }
            | Error::SourceIo {
                verb,
                what,
                cause: err,
            } => write!(f, "cannot {verb} {what}: {}", cause(err)),
            Error::Stopped { what } => write!(f, "cannot read {what}: its decoding was stopped"),
            Error::Reported(e) => write!(f, "{e}"),
            Error::Remote { url, cause } | Error::RemoteRead { url, cause, .. } => {
                write!(f, "cannot read {url}: {cause}")
            }
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
            Error::Remote {
                url: "s3://b/k".into(),
                cause: s(),
            }
            .exit_code(),
            Error::Metrics {
                addr: "127.0.0.1:9477".into(),
                cause: s(),
            }
            .exit_code(),
        ];
        let mut sorted = codes.to_vec();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), codes.len());
        assert!(!codes.contains(&0) && !codes.contains(&1));
        let table: Vec<i32> = EXIT_CODES.iter().map(|(c, _)| *c).collect();
        assert!(
            codes.iter().all(|c| table.contains(c)),
            "{codes:?} in {table:?}"
        );
        assert_eq!(
            table,
            (0..=10).collect::<Vec<_>>(),
            "one row per code, in order"
        );
    }

    #[test]
    fn cause_drops_the_os_error_suffix() {
        let e = io::Error::from_raw_os_error(libc::ENOENT);
        assert_eq!(cause(&e), "No such file or directory");
    }

    #[test]
    fn full_disk_stays_enospc() {
        let e = Error::io("write", "x", io::Error::from_raw_os_error(libc::ENOSPC));
        assert_eq!(e.errno(), libc::ENOSPC);
        assert_eq!(e.to_string(), "cannot write x: No space left on device");
        let e = Error::io("create", "x", io::Error::from_raw_os_error(libc::EACCES));
        assert_eq!(
            (e.errno(), e.to_string().as_str()),
            (libc::EIO, "cannot create x: Permission denied")
        );
    }
}
