//! One archive as a filesystem: its tree of members, their attributes, and how each member is
//! opened and read (straight from the archive, or through the mount's cache).
//!
//! Built once per archive (at mount for a single archive, on first use for an archive of a
//! source tree) and immutable after that: members and tree are read without locks. The memo
//! of `.npy` headers takes a short lock of its own, never across I/O. Inode numbers are the
//! tree's plus `base` (0 for a single archive; the archive's place in a source tree
//! otherwise), so the same archive always shows the same numbers.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fs::File;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::attr::{Attr, BLOCK_SIZE, DirEntry, FOREVER, FsStats, Kind, Shown};
use crate::bytes::Archive;
use crate::bytes::ReadDone;
use crate::cache::{ArchiveCache, Cache, Phase};
use crate::error::{Error, Result};
use crate::handles::Served;
use crate::info::{self, Facts};
use crate::metrics::{METRICS, Warning};
use crate::npy;
use crate::tree::{self, Ino, NodeKind, Tree};
use crate::zipfile::members::{Member, Method, Problem};

/// Where an archive sits in the mount.
#[derive(Clone, Copy, Debug)]
pub struct Placement {
    /// Its id in the mount: names its part of the cache.
    pub id: u64,
    /// Added to the tree's inode numbers (whose root is 1).
    pub base: Ino,
    /// The parent of the archive's root (the root itself for a single archive).
    pub parent: Ino,
}

/// Bytes past a first read's likely end fetched with it: a local header's extra field of up
/// to this length (numpy's zip64 extra is 20 bytes) still finds the read's bytes on their way.
const LIKELY_EXTRA: u64 = 4096;

/// What an operation asks about an inode, for the question whether answering it may wait on
/// the network (the adapter then answers it off the request threads).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Asks<'a> {
    /// The entry of this name in a directory.
    Lookup(&'a [u8]),
    /// A directory's entries: opendir, readdir.
    Entries,
    /// Its attributes.
    Attr,
    /// A directory's entries with their attributes (readdirplus), its parent's (`..`) too.
    EntriesPlus,
    /// To open it.
    Open,
    /// An extended attribute: a member's `.npy` header, which is in the member's bytes.
    Xattr,
}

/// One archive, served.
pub struct ArchiveFs {
    archive: Arc<Archive>,
    members: Vec<Member>,
    tree: Tree,
    place: Placement,
    shown: Shown,
    mtime: SystemTime,
    stats: FsStats,
    /// The mount's cache, where this archive has members to cache.
    cache: Option<Arc<Cache>>,
    /// This archive's part of it, made on first use.
    part: OnceLock<ArchiveCache>,
    /// `-o materialize`.
    materialize: bool,
    /// `.npy` headers read so far (for xattrs), by member number; None: not a valid `.npy`.
    headers: Mutex<HashMap<usize, Option<Arc<npy::Header>>>>,
}

impl ArchiveFs {
    /// Serves `archive` with its `members` at `place`, showing `shown`. `cache` is the mount's
    /// cache; it is only touched when a member needs it (compressed ones, or any with
    /// `materialize`).
    pub fn new(
        archive: Arc<Archive>,
        members: Vec<Member>,
        place: Placement,
        shown: Shown,
        cache: &Arc<Cache>,
        materialize: bool,
    ) -> ArchiveFs {
        let cached = members
            .iter()
            .any(|m| (m.method.is_compressed() || materialize) && !m.is_dir);
        let (tree, oddities) = Tree::build(&members);
        if let Some(line) = oddities.summary() {
            METRICS.warned(Warning::OddNames, oddities.count());
            log::warn!("{}: {line}", archive.path().display());
        }
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
        ArchiveFs {
            archive,
            members,
            tree,
            place,
            shown,
            mtime,
            stats,
            cache: cached.then(|| cache.clone()),
            part: OnceLock::new(),
            materialize,
            headers: Mutex::new(HashMap::new()),
        }
    }

    /// Whether answering `asks` about `ino` may wait on the network. The tree and the
    /// attributes are in memory, and a stored member finds its start with its first read (it
    /// opens at once); a compressed member's cache entry and a header read the archive's
    /// bytes, which for a remote archive may not be here yet.
    pub fn may_wait(&self, ino: Ino, asks: Asks<'_>) -> bool {
        if !self.archive.reads_wait() {
            return false;
        }
        match asks {
            Asks::Lookup(_) | Asks::Entries | Asks::Attr | Asks::EntriesPlus => false,
            Asks::Open => !matches!(
                self.tree.node(self.local(ino)).map(|n| &n.kind),
                Ok(NodeKind::File { member }) if self.members.get(*member)
                    .is_some_and(|m| m.method == Method::Stored && !self.materialize)
            ),
            Asks::Xattr => true,
        }
    }

    /// This archive's part of the mount's cache, opened on first use (its directory made,
    /// complete files an earlier mount left adopted). None: the archive caches nothing.
    pub fn cache(&self) -> Result<Option<&ArchiveCache>> {
        let Some(cache) = &self.cache else {
            return Ok(None);
        };
        if let Some(part) = self.part.get() {
            return Ok(Some(part));
        }
        let part = cache.for_archive(&self.archive, self.place.id, &self.members)?;
        Ok(Some(self.part.get_or_init(|| part)))
    }

    /// The opened archive.
    pub fn archive(&self) -> &Arc<Archive> {
        &self.archive
    }

    /// Number of nodes of the tree, the root included.
    pub fn nodes(&self) -> usize {
        self.tree.len()
    }

    /// Totals for `statfs`.
    pub fn statfs(&self) -> FsStats {
        self.stats
    }

    /// The archive's root directory.
    pub fn root(&self) -> Ino {
        self.global(tree::ROOT)
    }

    fn local(&self, ino: Ino) -> Ino {
        ino.wrapping_sub(self.place.base)
    }

    fn global(&self, local: Ino) -> Ino {
        self.place.base + local
    }

    /// The child `name` of directory `parent`.
    pub fn lookup(&self, parent: Ino, name: &[u8]) -> Result<Attr> {
        let ino = self.tree.lookup(self.local(parent), name)?;
        self.getattr(self.global(ino))
    }

    /// The attributes of `ino`; the same size everywhere (lookup, getattr, readdirplus).
    pub fn getattr(&self, ino: Ino) -> Result<Attr> {
        let node = self.tree.node(self.local(ino))?;
        let s = &self.shown;
        let (kind, size, perm, nlink) = match &node.kind {
            NodeKind::Dir { subdirs, .. } => (Kind::Dir, 0, s.dir_perm, 2 + subdirs),
            NodeKind::File { member } => (Kind::File, self.member(*member)?.size, s.file_perm, 1),
        };
        Ok(Attr {
            ino,
            kind,
            size,
            blocks: size.div_ceil(512),
            perm,
            nlink,
            uid: s.uid,
            gid: s.gid,
            mtime: self.mtime,
            ttl: FOREVER,
        })
    }

    /// Entries of directory `ino` from `offset` on: `.` and `..` first, then the children.
    pub fn readdir(&self, ino: Ino, offset: u64) -> Result<impl Iterator<Item = DirEntry<'_>>> {
        let local = self.local(ino);
        let children = self.tree.children(local)?;
        let parent = match local {
            tree::ROOT => self.place.parent,
            _ => self.global(self.tree.node(local)?.parent),
        };
        let dots = [(ino, &b"."[..]), (parent, &b".."[..])]
            .into_iter()
            .map(|(i, n)| (i, n, Kind::Dir));
        let rest = children.iter().filter_map(|&c| {
            let node = self.tree.node(c).ok()?;
            let kind = match node.kind {
                NodeKind::Dir { .. } => Kind::Dir,
                NodeKind::File { .. } => Kind::File,
            };
            Some((self.global(c), &node.name[..], kind))
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
                name: Cow::Borrowed(name),
                attr: None,
            }))
    }

    /// Entries of directory `ino` from `offset`, handed to `add` until it says it is full.
    pub fn readdir_into(
        &self,
        ino: Ino,
        offset: u64,
        add: &mut dyn FnMut(DirEntry<'_>) -> bool,
    ) -> Result<()> {
        for entry in self.readdir(ino, offset)? {
            if add(entry) {
                break;
            }
        }
        Ok(())
    }

    /// The extended attributes of `ino` (ARCHITECTURE.md, `info.rs`): none on directories;
    /// on a member, its ZIP facts, its `.npy` header's where it is a valid `.npy` (only with
    /// `header`), where it is served from now, and its bytes in the cache where the cache holds it
    /// (compressed, or copied by `-o materialize`). Reading the header decodes
    /// only the member's first bytes (once; remembered), never its whole stream.
    pub fn xattrs(
        &self,
        ino: Ino,
        header: bool,
        passthrough: bool,
    ) -> Result<Vec<(&'static str, String)>> {
        let number = match self.tree.node(self.local(ino))?.kind {
            NodeKind::Dir { .. } => return Ok(Vec::new()),
            NodeKind::File { member } => member,
        };
        let member = self.member(number)?;
        let npy = match header {
            true => self.npy_header(number, member).as_deref().cloned(),
            false => None,
        };
        let facts = Facts::of(member, npy);
        let cache = self.part.get();
        let copied = member.method == Method::Stored
            && cache.is_some_and(|c| self.materializes(member, c, passthrough));
        let cached = (member.method.is_compressed() || copied)
            .then(|| cache.map_or(0, |c: &ArchiveCache| c.cached_bytes(number)));
        let state = match cache.map_or(Phase::Absent, |c| c.phase(number)) {
            Phase::Absent => "archive",
            Phase::Filling if member.method.is_compressed() => "decoding",
            Phase::Filling => "copying",
            Phase::Sparse => "sparse",
            Phase::Complete if passthrough => "passthrough",
            Phase::Complete => "cached",
        };
        Ok(info::xattrs(&facts, cached, state))
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

    /// Checks that `ino` can be read (a file whose member is servable) and pins it
    /// (compressed members start decoding): its member number, how it is to be served
    /// (`passthrough`: whether the kernel serves complete cache files itself), and its
    /// complete cache file when there is one.
    pub fn open(&self, ino: Ino, passthrough: bool) -> Result<(usize, Served, Option<File>)> {
        let number = match self.tree.node(self.local(ino))?.kind {
            NodeKind::File { member } => member,
            NodeKind::Dir { .. } => return Err(Error::IsDir),
        };
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
        let (served, complete) = match (member.method, self.cache()?) {
            (m, Some(cache)) if m.is_compressed() => (Served::Cached, cache.open(number, member)?),
            (Method::Stored, Some(cache)) if self.materializes(member, cache, passthrough) => {
                // Served from the archive until its copy is complete; then by passthrough.
                member.data_start(&self.archive)?;
                match cache.open(number, member)? {
                    Some(file) => (Served::Cached, Some(file)),
                    None => (Served::Copying, None),
                }
            }
            // Where a read may wait on the network, a member finds its start with its first
            // read, never on this request thread.
            (Method::Stored, _) if self.archive.reads_wait() => (Served::Stored, None),
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
        Ok((number, served, complete))
    }

    /// Stored member `ino` copied into the cache by `write` ([`ArchiveCache::copy_in`]).
    pub fn copy_in(
        &self,
        ino: Ino,
        write: impl FnOnce(&File) -> Result<()>,
    ) -> Result<(std::path::PathBuf, File)> {
        let number = match self.tree.node(self.local(ino))?.kind {
            NodeKind::File { member } => member,
            NodeKind::Dir { .. } => return Err(Error::IsDir),
        };
        let member = self.member(number)?;
        match self.cache()? {
            Some(cache) if member.method == Method::Stored => cache.copy_in(number, member, write),
            _ => Err(Error::Unsupported {
                what: member.name.clone(),
                cause: "only a stored member is copied into the cache".into(),
            }),
        }
    }

    /// The complete, verified cache file of the member at `ino`, when it has one now.
    pub fn cache_file(&self, ino: Ino) -> Option<std::path::PathBuf> {
        let NodeKind::File { member: number } = self.tree.node(self.local(ino)).ok()?.kind else {
            return None;
        };
        self.part
            .get()?
            .complete_file(number, self.member(number).ok()?)
    }

    /// Lets go of one open of member `number`, served as `served`.
    pub fn release(&self, number: usize, served: Served) {
        let pinned = matches!(
            served,
            Served::Cached | Served::Passthrough | Served::Copying
        );
        if let (true, Some(cache)) = (pinned, self.part.get()) {
            cache.release(number);
        }
    }

    /// Bytes `[offset, offset + size)` of open member `number` (clamped to the member), to
    /// `done`: stored members at once, as a slice of the archive mapping that must go only
    /// to the kernel; compressed ones once their range is decoded.
    pub fn read(
        self: &Arc<Self>,
        number: usize,
        served: Served,
        offset: u64,
        size: u32,
        done: ReadDone,
    ) {
        let member = match self.member(number) {
            Ok(m) => m,
            Err(e) => return done(Err(e)),
        };
        if offset >= member.size {
            return done(Ok(&[]));
        }
        let end = offset + u64::from(size).min(member.size - offset);
        match (served, self.part.get()) {
            (Served::Cached | Served::Passthrough, Some(cache)) => {
                cache.read(number, offset, end, done)
            }
            (served, cache) => {
                if let (Served::Copying, Some(cache)) = (served, cache) {
                    cache.note_read(number);
                }
                self.read_stored(number, offset, end, done)
            }
        }
    }

    /// Stored member `number`: bytes of the archive, handed to the kernel as they come. Its
    /// first read in an archive whose reads may wait resolves where it starts from its local
    /// header, read like any other bytes (the callback below): no request thread waits for it.
    /// The bytes that read most likely wants are fetched beside the header, not after it: a
    /// remote member's first read costs one round trip, not two.
    fn read_stored(self: &Arc<Self>, number: usize, offset: u64, end: u64, done: ReadDone) {
        let member = match self.member(number) {
            Ok(member) => member,
            Err(e) => return done(Err(e)),
        };
        if let Some(start) = member.known_start() {
            return self.archive.reply(start + offset, start + end, done);
        }
        let likely = member.likely_start();
        self.archive
            .prefetch(likely + offset, likely + end + LIKELY_EXTRA);
        let span = member.header_span(self.archive.size());
        let me = self.clone();
        let resolved: ReadDone = Box::new(move |header| {
            let size = me.archive.size();
            let start = match (header, me.member(number)) {
                (Ok(bytes), Ok(member)) => member.start_from(bytes, size),
                (Err(e), _) | (_, Err(e)) => Err(e),
            };
            match start {
                Ok(start) => me.archive.reply(start + offset, start + end, done),
                Err(e) => done(Err(e)),
            }
        });
        self.archive.read_own(span.start, span.end, resolved);
    }

    /// Whether stored `member` is to be copied into the cache (`-o materialize`): only where
    /// passthrough will serve the copy, and only if it fits the budget at all.
    fn materializes(&self, member: &Member, cache: &ArchiveCache, passthrough: bool) -> bool {
        let copyable = self.archive.copy_source().is_some();
        self.materialize
            && copyable
            && passthrough
            && member.size > 0
            && member.size <= cache.budget()
    }

    fn member(&self, i: usize) -> Result<&Member> {
        self.members.get(i).ok_or(Error::NotFound)
    }
}
