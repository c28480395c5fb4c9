//! The filesystem core: plain Rust, no fuser types; every operation returns `Result`.
//!
//! `fuse.rs` is a thin adapter over this, so the filesystem can be tested without the kernel
//! (the mountpoint-s3 split). The members and tree are immutable and read without locks; the
//! handle table and the memo of `.npy` headers take short locks of their own, never across
//! I/O, so any number of request threads can serve at once.

use std::collections::HashMap;
use std::fs::File;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::archive::Archive;
use crate::cache::{Cache, CacheConfig, CacheStats};
use crate::error::{Error, Result};
use crate::handles::{Handles, Opened, Served};
use crate::info::{self, Facts};
use crate::members::{Member, Method, Problem};
use crate::npy;
use crate::tree::{Ino, NodeKind, Tree};

/// Preferred I/O size reported in `st_blksize`: the kernel's largest FUSE request (1 MiB), so
/// stdio-style readers ask for whole requests.
pub const BLOCK_SIZE: u32 = 1 << 20;

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

/// File or directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A directory.
    Dir,
    /// A regular file (a member).
    File,
}

/// The attributes of one node, as `stat` shows them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attr {
    /// Inode number.
    pub ino: Ino,
    /// File or directory.
    pub kind: Kind,
    /// Size in bytes (the member's uncompressed size; 0 for directories).
    pub size: u64,
    /// 512-byte blocks, as `du` counts them.
    pub blocks: u64,
    /// Permission bits.
    pub perm: u16,
    /// Link count: 1 for files, 2 + subdirectories for directories.
    pub nlink: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// The archive's modification time (members carry numpy's 1980-01-01).
    pub mtime: SystemTime,
}

/// One entry of a directory listing.
#[derive(Debug)]
pub struct DirEntry<'a> {
    /// The entry's inode.
    pub ino: Ino,
    /// The offset to resume the listing after this entry.
    pub next_offset: u64,
    /// File or directory.
    pub kind: Kind,
    /// The entry's name.
    pub name: &'a [u8],
}

/// Answers for `statfs`.
#[derive(Clone, Copy, Debug)]
pub struct FsStats {
    /// Total size of all members, in `BLOCK_SIZE` blocks.
    pub blocks: u64,
    /// Number of nodes.
    pub files: u64,
}

pub use crate::cache::slot::ReadDone;

/// The mounted archive. `B` is the adapter's passthrough backing (fuser's `BackingId`),
/// kept alive here for as long as a handle uses it; `()` where there is no passthrough.
pub struct NpzFs<B = ()> {
    archive: Arc<Archive>,
    /// The decompression cache; only when the archive has compressed members.
    cache: Option<Cache>,
    members: Vec<Member>,
    tree: Tree,
    owner: Ownership,
    mtime: SystemTime,
    stats: FsStats,
    handles: Handles<B>,
    /// `-o materialize`, while passthrough is available.
    materialize: bool,
    /// `.npy` headers read so far (for xattrs), by member number; None: not a valid `.npy`.
    headers: Mutex<HashMap<usize, Option<Arc<npy::Header>>>>,
}

impl<B> NpzFs<B> {
    /// Builds the filesystem over an opened archive and its members. The cache directory is
    /// only touched when the archive has compressed members (or any, with `materialize`).
    pub fn new(
        archive: Archive,
        members: Vec<Member>,
        owner: Ownership,
        config: &CacheConfig,
    ) -> Result<NpzFs<B>> {
        let archive = Arc::new(archive);
        let cached = members
            .iter()
            .any(|m| (m.method.is_compressed() || config.materialize) && !m.is_dir);
        let cache = match cached {
            true => Some(Cache::new(config, archive.clone(), &members)?),
            false => None,
        };
        let tree = Tree::build(&members);
        let id = archive.identity();
        let mtime = match u64::try_from(id.mtime) {
            Ok(secs) => {
                UNIX_EPOCH + Duration::new(secs, id.mtime_nsec.clamp(0, 999_999_999) as u32)
            }
            Err(_) => UNIX_EPOCH,
        };
        let bytes: u64 = members.iter().map(|m| m.size).fold(0, u64::saturating_add);
        let stats = FsStats {
            blocks: bytes.div_ceil(u64::from(BLOCK_SIZE)),
            files: tree.len() as u64,
        };
        Ok(NpzFs {
            archive,
            cache,
            members,
            tree,
            owner,
            mtime,
            stats,
            handles: Handles::default(),
            materialize: config.materialize,
            headers: Mutex::new(HashMap::new()),
        })
    }

    /// From now on, complete cache files are opened by FUSE passthrough (the kernel agreed).
    pub fn enable_passthrough(&self) {
        self.handles.enable_passthrough();
    }

    /// The kernel did not agree to passthrough (or `nopassthrough`): says once that
    /// `-o materialize` is then ignored.
    pub fn passthrough_unavailable(&self) {
        if self.materialize {
            log::info!(
                "option materialize ignored: FUSE passthrough is unavailable here (it needs \
                 root in the initial namespace and Linux 6.9+)"
            );
        }
    }

    /// The child `name` of directory `parent`.
    pub fn lookup(&self, parent: Ino, name: &[u8]) -> Result<Attr> {
        let ino = self.tree.lookup(parent, name)?;
        self.getattr(ino)
    }

    /// The attributes of `ino`; the same size everywhere (lookup, getattr, readdirplus).
    pub fn getattr(&self, ino: Ino) -> Result<Attr> {
        let node = self.tree.node(ino)?;
        let (kind, size, perm, nlink) = match &node.kind {
            NodeKind::Dir { subdirs, .. } => (Kind::Dir, 0, 0o555, 2 + subdirs),
            NodeKind::File { member } => (Kind::File, self.member(*member)?.size, 0o444, 1),
        };
        Ok(Attr {
            ino,
            kind,
            size,
            blocks: size.div_ceil(512),
            perm: perm & !self.owner.umask,
            nlink,
            uid: self.owner.uid,
            gid: self.owner.gid,
            mtime: self.mtime,
        })
    }

    /// Entries of directory `ino` from `offset` on: `.` and `..` first, then the children.
    pub fn readdir(&self, ino: Ino, offset: u64) -> Result<impl Iterator<Item = DirEntry<'_>>> {
        let children = self.tree.children(ino)?;
        let parent = self.tree.node(ino)?.parent;
        let dots = [(ino, &b"."[..]), (parent, &b".."[..])]
            .into_iter()
            .map(|(i, n)| (i, n, Kind::Dir));
        let rest = children.iter().filter_map(|&c| {
            let node = self.tree.node(c).ok()?;
            let kind = match node.kind {
                NodeKind::Dir { .. } => Kind::Dir,
                NodeKind::File { .. } => Kind::File,
            };
            Some((c, &node.name[..], kind))
        });
        let skip = usize::try_from(offset).unwrap_or(usize::MAX);
        Ok(dots
            .chain(rest)
            .enumerate()
            .skip(skip)
            .map(|(i, (ino, name, kind))| DirEntry {
                ino,
                next_offset: i as u64 + 1,
                kind,
                name,
            }))
    }

    /// The extended attributes of `ino` (ARCHITECTURE.md, `info.rs`): none on directories;
    /// on a member, its ZIP facts, its `.npy` header's where it is a valid `.npy` (only with
    /// `header`), and its bytes in the cache if it is compressed. Reading the header decodes
    /// only the member's first bytes (once; remembered), never its whole stream.
    pub fn xattrs(&self, ino: Ino, header: bool) -> Result<Vec<(&'static str, String)>> {
        let number = match self.tree.node(ino)?.kind {
            NodeKind::Dir { .. } => return Ok(Vec::new()),
            NodeKind::File { member } => member,
        };
        let member = self.member(number)?;
        let npy = match header {
            true => self.npy_header(number, member).as_deref().cloned(),
            false => None,
        };
        let facts = Facts::of(member, npy);
        let cached = member
            .method
            .is_compressed()
            .then(|| self.cache.as_ref().map_or(0, |c| c.cached_bytes(number)));
        Ok(info::xattrs(&facts, cached))
    }

    /// The value of extended attribute `name` of `ino`. A name that is not npzfs's costs
    /// nothing; only `user.npy.*` reads the member's header.
    pub fn getxattr(&self, ino: Ino, name: &[u8]) -> Result<Vec<u8>> {
        let name = std::str::from_utf8(name)
            .ok()
            .filter(|n| info::XATTR_NAMES.contains(n))
            .ok_or(Error::NoAttr)?;
        self.xattrs(ino, info::needs_header(name))?
            .into_iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.into_bytes())
            .ok_or(Error::NoAttr)
    }

    /// The names of `ino`'s extended attributes, each ending in NUL, as `listxattr` wants.
    pub fn listxattr(&self, ino: Ino) -> Result<Vec<u8>> {
        Ok(self
            .xattrs(ino, true)?
            .into_iter()
            .flat_map(|(n, _)| n.bytes().chain([0]))
            .collect())
    }

    fn npy_header(&self, number: usize, member: &Member) -> Option<Arc<npy::Header>> {
        let lock = || self.headers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(known) = lock().get(&number) {
            return known.clone();
        }
        // Read without the lock: a first read of a deflated member inflates its first KiBs.
        let header = crate::peek::npy_header(&self.archive, member, number).map(Arc::new);
        lock().insert(number, header.clone());
        header
    }

    /// Opens `ino` for reading, for callers that never pass through (tests, tools): returns
    /// the new handle.
    pub fn open(&self, ino: Ino, write: bool) -> Result<u64> {
        let unsupported = |_: &File| Err(std::io::ErrorKind::Unsupported.into());
        self.open_with(ino, write, unsupported).map(|o| o.fh)
    }

    /// Checks that `ino` can be read (a file, opened read-only, whose member is servable),
    /// pins it (compressed members start decoding) and records a handle for it. A member
    /// whose cache file is complete is served by passthrough where it can: `register` makes
    /// the file a backing the kernel reads.
    pub fn open_with(
        &self,
        ino: Ino,
        write: bool,
        register: impl FnOnce(&File) -> std::io::Result<B>,
    ) -> Result<Opened<B>> {
        if write {
            return Err(Error::ReadOnly);
        }
        let number = self.member_number(ino)?;
        let member = self.member(number)?;
        if let Some(problem) = &member.problem {
            return Err(match problem {
                Problem::Unsupported(cause) => Error::Unsupported {
                    what: member.name.clone(),
                    cause: cause.clone(),
                },
                Problem::Corrupt(cause) => Error::Corrupt {
                    what: member.name.clone(),
                    cause: cause.clone(),
                },
            });
        }
        self.archive.check_unchanged()?;
        let (served, complete) = match (member.method, &self.cache) {
            (m, Some(cache)) if m.is_compressed() => (Served::Cached, cache.open(number, member)?),
            (Method::Stored, Some(cache)) if self.materializes(member, cache) => {
                // Served from the archive until its copy is complete; then by passthrough.
                member.data_start(&self.archive)?;
                match cache.open(number, member)? {
                    Some(file) => (Served::Cached, Some(file)),
                    None => (Served::Copying, None),
                }
            }
            (Method::Stored, _) => (
                Served::Stored,
                member.data_start(&self.archive).map(|_| None)?,
            ),
            _ => {
                return Err(Error::Unsupported {
                    what: member.name.clone(),
                    cause: "unsupported compression method".into(),
                });
            }
        };
        Ok(self.handles.open(ino, number, served, complete, register))
    }

    /// Lets go of handle `fh`.
    pub fn release(&self, fh: u64) {
        let Some(handle) = self.handles.release(fh) else {
            return;
        };
        let pinned = matches!(
            handle.served,
            Served::Cached | Served::Passthrough | Served::Copying
        );
        if let (true, Some(cache)) = (pinned, &self.cache) {
            cache.release(handle.member);
        }
    }

    /// Up to `size` bytes of handle `fh` from `offset`, handed to `done`: empty at or past the
    /// end, clamped to the member's size, otherwise exactly the bytes asked for (a short read
    /// would give a mapping client SIGBUS). Stored members answer at once with a slice of the
    /// archive mapping, which must go only to the kernel; compressed ones answer once their
    /// range is decoded, possibly from the thread that decoded it.
    pub fn read(&self, fh: u64, offset: u64, size: u32, done: ReadDone) {
        let Some(handle) = self.handles.get(fh) else {
            return done(Err(Error::NotFound));
        };
        let member = match self.member(handle.member) {
            Ok(m) => m,
            Err(e) => return done(Err(e)),
        };
        if offset >= member.size {
            return done(Ok(&[]));
        }
        let end = offset + u64::from(size).min(member.size - offset);
        match (handle.served, &self.cache) {
            (Served::Cached | Served::Passthrough, Some(cache)) => {
                cache.read(handle.member, offset, end, done)
            }
            (served, cache) => {
                if let (Served::Copying, Some(cache)) = (served, cache) {
                    cache.note_read(handle.member);
                }
                done(self.read_stored(member, offset, end));
                // The kernel has copied the bytes: the daemon need not keep them mapped.
                if let Ok(start) = member.data_start(&self.archive) {
                    self.archive.unmap_pages(start + offset, end - offset);
                }
            }
        }
    }

    /// Whether stored `member` is to be copied into the cache (`-o materialize`): only where
    /// passthrough will serve the copy, and only if it fits the budget at all.
    fn materializes(&self, member: &Member, cache: &Cache) -> bool {
        self.materialize
            && self.handles.passthrough()
            && member.size > 0
            && member.size <= cache.budget()
    }

    fn read_stored(&self, member: &Member, offset: u64, end: u64) -> Result<&[u8]> {
        let start = member.data_start(&self.archive)?;
        self.archive.check_unchanged()?;
        self.archive.slice(start + offset, end - offset)
    }

    /// The mount is going away: lets go of the cache's partial files.
    pub fn close(&self) {
        if let Some(cache) = &self.cache {
            cache.close();
        }
    }

    /// The cache's counters, if there is a cache (its `Display` is the log's summary line).
    pub fn cache_stats(&self) -> Option<CacheStats> {
        self.cache.as_ref().map(Cache::stats)
    }

    /// Totals for `statfs`.
    pub fn statfs(&self) -> FsStats {
        self.stats
    }

    fn member(&self, i: usize) -> Result<&Member> {
        self.members.get(i).ok_or(Error::NotFound)
    }

    fn member_number(&self, ino: Ino) -> Result<usize> {
        match self.tree.node(ino)?.kind {
            NodeKind::File { member } => Ok(member),
            NodeKind::Dir { .. } => Err(Error::IsDir),
        }
    }
}
