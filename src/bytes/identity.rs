//! What identifies one version of an archive: a local file's (dev, ino, size, mtime), or a
//! remote object's URL and ETag. Cache directories are keyed by it, and an archive whose
//! identity changes is a different archive.

use std::os::unix::fs::MetadataExt;
use std::time::SystemTime;

use crate::remote::{Remote, fnv};

/// One version of an archive: same identity, same bytes (by assumption).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Identity {
    /// Device of the archive file (0 for a remote object).
    pub dev: u64,
    /// Inode of the archive file (a hash of URL and ETag for a remote object).
    pub ino: u64,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
    /// Nanoseconds part of the modification time.
    pub mtime_nsec: i64,
}

impl Identity {
    /// The identity of the file `meta` describes.
    pub fn of(meta: &std::fs::Metadata) -> Identity {
        Identity {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: meta.mtime(),
            mtime_nsec: meta.mtime_nsec(),
        }
    }

    /// The identity of the version of `remote` that was opened: its URL and ETag hashed into
    /// the inode, its size and Last-Modified as they are.
    pub fn of_remote(remote: &Remote) -> Identity {
        let version = remote.version();
        let etag = version.etag.as_deref().unwrap_or("");
        let h = fnv(format!("{}\0{etag}", remote.display()).as_bytes());
        let since = version
            .modified
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        Identity {
            dev: 0,
            ino: h,
            size: version.size,
            mtime: i64::try_from(since.as_secs()).unwrap_or(0),
            mtime_nsec: i64::from(since.subsec_nanos()),
        }
    }
}
