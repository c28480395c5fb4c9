//! The filesystem core: plain Rust, no fuser types; every operation returns `Result`.
//!
//! `fuse.rs` is a thin adapter over this, so the filesystem can be tested without the kernel
//! (the mountpoint-s3 split). The core routes each inode to what serves it: the one archive
//! of a single-archive mount ([`ArchiveFs`]), or the source trees of a mount of directories
//! and several archives ([`Forest`], which opens its archives as they are asked for). It owns
//! the open handles; members, trees and archives are immutable and read without locks.

use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;

pub use crate::archive_fs::Asks;
use crate::archive_fs::{ArchiveFs, Placement};
use crate::attr::Shown;
pub use crate::attr::{Attr, BLOCK_SIZE, DirEntry, FsStats, Kind, Ownership};
use crate::bytes::Archive;
use crate::bytes::Plain;
pub use crate::bytes::ReadDone;
use crate::cache::{Cache, CacheConfig, CacheStats};
use crate::error::{Error, Result};
use crate::forest::{Forest, Overrides};
use crate::handles::{Handles, Opened, Served};
use crate::info;
use crate::metrics::METRICS;
use crate::remote::Remote;
use crate::stats::{self, Snapshot};
use crate::tree::{self, Ino};
use crate::zipfile::members::Member;

/// What a mount serves.
enum Mount {
    /// One archive, its root the mount's root (inode numbers are the tree's).
    Archive(Arc<ArchiveFs>),
    /// Directory trees and archives, side by side.
    Forest(Box<Forest>),
}

/// What an open handle reads.
#[derive(Clone)]
pub enum Target {
    /// Member `.1` of archive `.0`.
    Member(Arc<ArchiveFs>, usize),
    /// A plain file of a source tree: on disk, or an object of a bucket.
    Plain(Arc<Plain>),
}

/// How a mount of sources is to be served (beyond the cache).
#[derive(Clone, Copy, Debug)]
pub struct Sources {
    /// Owners and permissions, and their overrides.
    pub overrides: Overrides,
    /// At most this many archives open (descriptor + mapping) at once.
    pub max_archives: usize,
    /// How long a remote request may take (`remote_timeout=`).
    pub remote_timeout: std::time::Duration,
}

/// The mounted filesystem. `B` is the adapter's passthrough backing (fuser's `BackingId`),
/// kept alive here for as long as a handle uses it; `()` where there is no passthrough.
pub struct NpzFs<B = ()> {
    mount: Mount,
    cache: Arc<Cache>,
    handles: Handles<B, Target>,
    /// `-o materialize`, while passthrough is available.
    materialize: bool,
}

impl<B> NpzFs<B> {
    /// One archive, opened, with its members: its root is the mount's root, as it always
    /// was. The cache directory is only touched when the archive has compressed members
    /// (or any, with `materialize`), and then at once, so that a bad one fails the mount.
    pub fn new(
        archive: Archive,
        members: Vec<Member>,
        owner: Ownership,
        config: &CacheConfig,
    ) -> Result<NpzFs<B>> {
        NpzFs::single(
            archive,
            members,
            owner,
            Arc::new(Cache::new(config)),
            config,
        )
    }

    /// The remote archive `object` (`s3://` or `http(s)://`), read by range into the cache's
    /// blocks; its root is the mount's root, as for a local archive. Opening it costs the
    /// reads of its end record and central directory.
    pub fn remote(object: Remote, owner: Ownership, config: &CacheConfig) -> Result<NpzFs<B>> {
        let cache = Arc::new(Cache::new(config));
        let archive = Archive::remote(cache.blocks(Arc::new(object), 0)?)?;
        let members = crate::zipfile::members::read_members(&archive)?;
        NpzFs::single(archive, members, owner, cache, config)
    }

    fn single(
        archive: Archive,
        members: Vec<Member>,
        owner: Ownership,
        cache: Arc<Cache>,
        config: &CacheConfig,
    ) -> Result<NpzFs<B>> {
        let place = Placement {
            id: 0,
            base: 0,
            parent: tree::ROOT,
        };
        let fs = ArchiveFs::new(
            Arc::new(archive),
            members,
            place,
            Shown::of(owner),
            &cache,
            config.materialize,
        );
        fs.cache()?;
        Ok(NpzFs::with(Mount::Archive(Arc::new(fs)), cache, config))
    }

    /// Directory trees and archives at `paths`, side by side (one directory: its tree is the
    /// root). Nothing below the sources is opened until it is asked for.
    pub fn sources(paths: &[PathBuf], how: Sources, config: &CacheConfig) -> Result<NpzFs<B>> {
        let cache = Arc::new(Cache::new(config));
        let forest = Forest::new(
            paths,
            how.overrides,
            cache.clone(),
            how.max_archives,
            config.materialize,
            how.remote_timeout,
        )?;
        Ok(NpzFs::with(Mount::Forest(Box::new(forest)), cache, config))
    }

    fn with(mount: Mount, cache: Arc<Cache>, config: &CacheConfig) -> NpzFs<B> {
        NpzFs {
            mount,
            cache,
            handles: Handles::default(),
            materialize: config.materialize,
        }
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

    /// The archive `ino` is in, if any.
    fn archive_of(&self, ino: Ino) -> Result<Option<Arc<ArchiveFs>>> {
        match &self.mount {
            Mount::Archive(fs) => Ok(Some(fs.clone())),
            Mount::Forest(f) => f.archive_of(ino),
        }
    }

    /// Whether answering `asks` about `ino` may wait on the network (it is in a remote source,
    /// and the answer is not in memory): the adapter then answers it off the request threads.
    /// Reads never wait.
    pub fn may_wait(&self, ino: Ino, asks: Asks<'_>) -> bool {
        match &self.mount {
            Mount::Archive(fs) => fs.may_wait(ino, asks),
            Mount::Forest(f) => f.may_wait(ino, asks),
        }
    }

    /// The child `name` of directory `parent`.
    pub fn lookup(&self, parent: Ino, name: &[u8]) -> Result<Attr> {
        match &self.mount {
            Mount::Archive(fs) => fs.lookup(parent, name),
            Mount::Forest(f) => f.lookup(parent, name),
        }
    }

    /// The attributes of `ino`; the same size everywhere (lookup, getattr, readdirplus).
    pub fn getattr(&self, ino: Ino) -> Result<Attr> {
        match &self.mount {
            Mount::Archive(fs) => fs.getattr(ino),
            Mount::Forest(f) => f.getattr(ino),
        }
    }

    /// Opens directory `ino`: its handle, and whether its listing never changes (the kernel
    /// may then keep it). A source directory is listed now, for this handle.
    pub fn opendir(&self, ino: Ino) -> Result<(u64, bool)> {
        match &self.mount {
            Mount::Archive(fs) => fs.readdir(ino, 0).map(|_| (0, true)),
            Mount::Forest(f) => Ok(f.opendir(ino)?.map_or((0, true), |fh| (fh, false))),
        }
    }

    /// Entries of directory `ino` (opened as `fh`) from `offset` on, `.` and `..` first,
    /// handed to `add` until it says it is full.
    pub fn readdir(
        &self,
        ino: Ino,
        fh: u64,
        offset: u64,
        add: &mut dyn FnMut(DirEntry<'_>) -> bool,
    ) -> Result<()> {
        match &self.mount {
            Mount::Archive(fs) => fs.readdir_into(ino, offset, add),
            Mount::Forest(f) => f.readdir(ino, fh, offset, add),
        }
    }

    /// Every entry of directory `ino`, for callers without the kernel (tests, tools).
    pub fn list(&self, ino: Ino) -> Result<Vec<(Vec<u8>, Attr)>> {
        let (fh, _) = self.opendir(ino)?;
        let mut names = Vec::new();
        let listed = self.readdir(ino, fh, 0, &mut |e| {
            names.push((e.name.into_owned(), e.ino, e.attr));
            false
        });
        self.releasedir(fh);
        listed?;
        names
            .into_iter()
            .filter(|(n, _, _)| n != b"." && n != b"..")
            .map(|(n, ino, attr)| Ok((n, attr.map_or_else(|| self.getattr(ino), Ok)?)))
            .collect()
    }

    /// Lets go of directory handle `fh`.
    pub fn releasedir(&self, fh: u64) {
        if let (Mount::Forest(f), true) = (&self.mount, fh != 0) {
            f.releasedir(fh);
        }
    }

    /// The target of symlink `ino`.
    pub fn readlink(&self, ino: Ino) -> Result<Vec<u8>> {
        match &self.mount {
            Mount::Archive(_) => Err(Error::Usage("not a symlink".into())),
            Mount::Forest(f) => f.readlink(ino),
        }
    }

    /// The extended attributes of `ino` (`info.rs`): a member's facts; none elsewhere. An
    /// archive of a source tree is not opened to say its own directory has none (`ls -l`
    /// asks every entry).
    pub fn xattrs(&self, ino: Ino, header: bool) -> Result<Vec<(&'static str, String)>> {
        let in_archive = match &self.mount {
            Mount::Forest(f) if f.is_entry(ino) => None,
            _ => self.archive_of(ino)?,
        };
        match in_archive {
            Some(fs) => fs.xattrs(ino, header, self.handles.passthrough()),
            None => Ok(Vec::new()),
        }
    }

    /// The value of extended attribute `name` of `ino`. A name that is not npzfs's costs
    /// nothing; only `user.npy.*` reads the member's header.
    pub fn getxattr(&self, ino: Ino, name: &[u8]) -> Result<Vec<u8>> {
        if ino == tree::ROOT && name == stats::XATTR.as_bytes() {
            return Ok(self.snapshot().to_json().to_string().into_bytes());
        }
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
        let root = (ino == tree::ROOT).then_some(stats::XATTR);
        Ok(self
            .xattrs(ino, true)?
            .into_iter()
            .map(|(n, _)| n)
            .chain(root)
            .flat_map(|n| n.bytes().chain([0]))
            .collect())
    }

    /// Every figure of the mount now (`user.npzfs.stats` of the root, `-o metrics=`).
    pub fn snapshot(&self) -> Snapshot {
        Snapshot::take(self.cache_stats(), self.open_archives() as u64)
    }

    /// Opens `ino` for reading, for callers that never pass through (tests, tools): returns
    /// the new handle.
    pub fn open(&self, ino: Ino, write: bool) -> Result<u64> {
        let unsupported = |_: &File| Err(std::io::ErrorKind::Unsupported.into());
        self.open_with(ino, write, unsupported).map(|o| o.fh)
    }

    /// Checks that `ino` can be read (a file, opened read-only: a member that is servable, or
    /// a regular file of a source), pins it (compressed members start decoding) and records
    /// a handle for it. A member whose cache file is complete is served by passthrough where
    /// it can: `register` makes the file a backing the kernel reads.
    pub fn open_with(
        &self,
        ino: Ino,
        write: bool,
        register: impl FnOnce(&File) -> std::io::Result<B>,
    ) -> Result<Opened<B>> {
        if write {
            return Err(Error::ReadOnly);
        }
        let Some(fs) = self.archive_of(ino)? else {
            let Mount::Forest(f) = &self.mount else {
                return Err(Error::NotFound);
            };
            let target = Target::Plain(Arc::new(f.open_file(ino)?));
            return Ok(self
                .handles
                .open(ino, target, Served::Source, None, register));
        };
        let (number, served, complete) = fs.open(ino, self.handles.passthrough())?;
        let target = Target::Member(fs, number);
        Ok(self.handles.open(ino, target, served, complete, register))
    }

    /// The complete, verified cache file of member `ino`, when it has one now (`npzfs
    /// extract --into-cache` hands it to a process that maps it).
    pub fn cache_file(&self, ino: Ino) -> Result<Option<PathBuf>> {
        Ok(self.archive_of(ino)?.and_then(|fs| fs.cache_file(ino)))
    }

    /// Stored member `ino` copied into the cache by `write` (`npzfs extract --into-cache`):
    /// its complete file, and that file held with a shared flock.
    pub fn copy_into_cache(
        &self,
        ino: Ino,
        write: impl FnOnce(&File) -> Result<()>,
    ) -> Result<(PathBuf, File)> {
        match self.archive_of(ino)? {
            Some(fs) => fs.copy_in(ino, write),
            None => Err(Error::NotFound),
        }
    }

    /// Lets go of handle `fh`.
    pub fn release(&self, fh: u64) {
        if let Some(handle) = self.handles.release(fh)
            && let Target::Member(fs, number) = &handle.target
        {
            fs.release(*number, handle.served);
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
        let path = handle.served.path();
        let done: ReadDone = Box::new(move |bytes| {
            if let Ok(b) = &bytes {
                METRICS.read(path, b.len());
            }
            done(bytes)
        });
        match &handle.target {
            Target::Member(fs, number) => fs.read(*number, handle.served, offset, size, done),
            Target::Plain(plain) => plain.read(offset, size, done),
        }
    }

    /// The mount is going away: lets go of the cache's partial files.
    pub fn close(&self) {
        self.cache.close();
    }

    /// The cache's counters (its `Display` is the log's summary line); None when nothing
    /// mounted can use the cache.
    pub fn cache_stats(&self) -> Option<CacheStats> {
        match &self.mount {
            Mount::Archive(fs) => fs.cache().ok().flatten().map(|_| self.cache.stats()),
            Mount::Forest(_) => Some(self.cache.stats()),
        }
    }

    /// Totals for `statfs` (a single archive's; a tree of sources has no fixed totals).
    pub fn statfs(&self) -> FsStats {
        match &self.mount {
            Mount::Archive(fs) => fs.statfs(),
            Mount::Forest(_) => FsStats {
                blocks: 0,
                files: 0,
            },
        }
    }

    /// How many archives are open now (a tree of sources opens them as they are used).
    pub fn open_archives(&self) -> usize {
        match &self.mount {
            Mount::Archive(_) => 1,
            Mount::Forest(f) => f.open_archives(),
        }
    }
}
