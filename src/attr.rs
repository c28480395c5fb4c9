//! What the filesystem core answers with: node attributes, directory entries, totals, and
//! who owns what it shows.

use std::borrow::Cow;
use std::time::{Duration, SystemTime};

use crate::tree::Ino;

/// Preferred I/O size reported in `st_blksize`: the kernel's largest FUSE request (1 MiB), so
/// stdio-style readers ask for whole requests.
pub const BLOCK_SIZE: u32 = 1 << 20;

/// How long the kernel may keep a name or attributes of what never changes (inside an
/// archive: an archive is immutable while it is served).
pub const FOREVER: Duration = Duration::from_secs(365 * 24 * 3600);

/// How long the kernel may keep a name or attributes of a source tree, which may change
/// while mounted: a shard added or removed shows within this.
pub const LIVE: Duration = Duration::from_secs(1);

/// Who owns the mounted files and which permission bits they show.
#[derive(Clone, Copy, Debug)]
pub struct Ownership {
    /// Owner of every node.
    pub uid: u32,
    /// Group of every node.
    pub gid: u32,
    /// Bits removed from 0444 (files) and 0555 (directories).
    pub umask: u16,
}

/// What one archive's nodes show: owner, group and permission bits of files and directories.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shown {
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Permission bits of files.
    pub file_perm: u16,
    /// Permission bits of directories.
    pub dir_perm: u16,
}

impl Shown {
    /// A single archive's nodes: owned by `uid`/`gid` (the mounting user's unless
    /// overridden), 0444 and 0555 less the umask.
    pub fn of(owner: Ownership) -> Shown {
        Shown {
            uid: owner.uid,
            gid: owner.gid,
            file_perm: 0o444 & !owner.umask,
            dir_perm: 0o555 & !owner.umask,
        }
    }
}

/// What a node is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A directory.
    Dir,
    /// A regular file (a member, or a file of a source tree).
    File,
    /// A symbolic link of a source tree (shown, never followed by the daemon).
    Symlink,
}

/// The attributes of one node, as `stat` shows them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attr {
    /// Inode number.
    pub ino: Ino,
    /// What it is.
    pub kind: Kind,
    /// Size in bytes (the member's uncompressed size; 0 for directories).
    pub size: u64,
    /// 512-byte blocks, as `du` counts them.
    pub blocks: u64,
    /// Permission bits.
    pub perm: u16,
    /// Link count: 1 for files, 2 + subdirectories for directories of an archive, 1 for
    /// directories of a source tree (unknown, as on btrfs: `find` then counts nothing).
    pub nlink: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// The archive's modification time (members carry numpy's 1980-01-01), or the source
    /// file's.
    pub mtime: SystemTime,
    /// How long the kernel may keep these attributes (and the name that led here).
    pub ttl: Duration,
}

/// One entry of a directory listing.
#[derive(Debug)]
pub struct DirEntry<'a> {
    /// The entry's inode.
    pub ino: Ino,
    /// The offset to resume the listing after this entry.
    pub next_offset: u64,
    /// What it is.
    pub kind: Kind,
    /// The entry's name.
    pub name: Cow<'a, [u8]>,
    /// Its attributes, when the listing has them already (entries of source directories).
    pub attr: Option<Attr>,
}

/// Answers for `statfs`.
#[derive(Clone, Copy, Debug)]
pub struct FsStats {
    /// Total size of all members, in `BLOCK_SIZE` blocks.
    pub blocks: u64,
    /// Number of nodes.
    pub files: u64,
}
