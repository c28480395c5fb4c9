//! Many archives as one tree: directory sources mirrored live, each `*.npz` in them a
//! directory of its members, several sources side by side at the top. A source's tree is a
//! directory on disk or a prefix of a bucket (`origin.rs`): both answer the same questions.
//!
//! The tree of the sources is never held in memory whole. Every lookup and listing of a
//! source directory asks the disk (`source.rs`, which never follows a symlink), and the
//! kernel keeps the answers for `attr::LIVE` only, so a shard added, removed or renamed shows
//! within a second. What the daemon keeps of each entry it has been asked about is an
//! `Entity` (`entity.rs`): where it is, what it was (its identity) and its parent: about 700 bytes resident per entry
//! listed, as `bench/shards.py` measures it. An
//! archive is opened only when something inside it is asked for (`archives.rs`); from then
//! on it is immutable and served like a single archive ([`ArchiveFs`]).
//!
//! Attributes follow the source: owner, group and permission bits of each file, directory
//! and archive (write bits removed; an archive's read bits give its directory search bits),
//! and members inherit their archive's. With `default_permissions` the kernel checks them
//! for every reader, so `allow_other` never lets a user read through the mount what they
//! could not read in the source. `uid=`, `gid=` and `umask=` override them.

mod archives;
mod entity;
pub mod ino;
pub mod names;
mod origin;
mod perms;

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::SystemTime;

use crate::archive_fs::{ArchiveFs, Asks};
use crate::attr::{Attr, DirEntry, Kind};
use crate::bytes::Plain;
use crate::cache::Cache;
use crate::error::{Error, Result};
use crate::remote::{self, Found, dir::RemoteDir};
use crate::source::{Meta, SourceDir, Type, component};
use crate::tree::Ino;
use archives::Archives;
use entity::{Entity, Is, plain};
use ino::Key;
use names::Shows;
use origin::{Origin, SourceFile};
pub use perms::Overrides;
use perms::{attr_of, key_of, shown, top_attr};

/// One source of the command line.
struct Source {
    /// The directory it is in (for an archive source, its parent), on disk or in a bucket.
    dir: Origin,
    /// Itself below `dir`: empty for a directory source.
    rel: PathBuf,
    /// Its name at the top level (several sources only).
    name: Vec<u8>,
}

/// One entry of a listing, taken when the directory was opened.
struct Listed {
    ino: Ino,
    name: Box<[u8]>,
    kind: Kind,
    attr: Option<Attr>,
}

/// The mounted sources.
pub struct Forest {
    sources: Vec<Source>,
    entities: RwLock<HashMap<u64, Arc<Entity>>>,
    archives: Archives,
    overrides: Overrides,
    /// Listings of open directory handles, by fh.
    listings: Mutex<HashMap<u64, Arc<Vec<Listed>>>>,
    next_fh: AtomicU64,
    mounted_at: SystemTime,
}

/// A node of the mount, found.
enum Located {
    /// Inside an archive (its root included).
    Archive(Arc<ArchiveFs>),
    /// An entry of the sources.
    Entity(u64, Arc<Entity>),
}

impl Forest {
    /// The sources at `paths` (resolved now: a remote one costs a request or two, each
    /// given up after `timeout`), at most `max_archives` archives open at once, sharing
    /// `cache`. Fails with the first source that cannot be used.
    pub fn new(
        paths: &[PathBuf],
        overrides: Overrides,
        cache: Arc<Cache>,
        max_archives: usize,
        materialize: bool,
        timeout: std::time::Duration,
    ) -> Result<Forest> {
        let mut sources = Vec::new();
        let mut base_names = Vec::new();
        for path in paths {
            let (source, name) = match remote::is_remote(path) {
                true => remote_source(&path.to_string_lossy(), timeout, overrides.mounted_by)?,
                false => resolve_source(path)?,
            };
            sources.push(source);
            base_names.push(name);
        }
        for (source, name) in sources.iter_mut().zip(names::top_level(&base_names)) {
            source.name = name;
        }
        let top = !(sources.len() == 1 && sources[0].rel.as_os_str().is_empty());
        let forest = Forest {
            sources,
            entities: RwLock::new(HashMap::new()),
            archives: Archives::new(max_archives, cache, materialize),
            overrides,
            listings: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            mounted_at: SystemTime::now(),
        };
        let root = Entity {
            is: if top { Is::Top } else { Is::Dir },
            parent: 1,
            source: 0,
            rel: PathBuf::new(),
            key: Key::new(0, 0, None),
            failed: OnceLock::new(),
        };
        forest.write().insert(0, Arc::new(root));
        Ok(forest)
    }

    /// How many archives are open now.
    pub fn open_archives(&self) -> usize {
        self.archives.count()
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<u64, Arc<Entity>>> {
        self.entities.write().unwrap_or_else(|p| p.into_inner())
    }

    fn entity(&self, id: u64) -> Result<Arc<Entity>> {
        let entities = self.entities.read().unwrap_or_else(|p| p.into_inner());
        entities.get(&id).cloned().ok_or(Error::NotFound)
    }

    fn node(&self, ino: Ino) -> Result<Located> {
        let (id, local) = ino::split(ino);
        let e = self.entity(id)?;
        match e.is {
            Is::Archive => Ok(Located::Archive(self.archive(id, &e)?)),
            _ if local == 1 => Ok(Located::Entity(id, e)),
            _ => Err(Error::NotFound),
        }
    }

    fn archive(&self, id: u64, e: &Entity) -> Result<Arc<ArchiveFs>> {
        let dir = &self.sources[e.source].dir;
        let shown = || shown(&self.overrides, self.stat(id, e).ok().as_ref());
        self.archives.get(id, e, dir, shown)
    }

    /// The archive `ino` is in, if it is in one (for opens and xattrs).
    pub fn archive_of(&self, ino: Ino) -> Result<Option<Arc<ArchiveFs>>> {
        match self.node(ino)? {
            Located::Archive(fs) => Ok(Some(fs)),
            Located::Entity(..) => Ok(None),
        }
    }

    /// Whether answering `asks` about `ino` may wait on the network: it is in a remote source
    /// (or is the top of several sources, one of them remote), and not in an archive open now
    /// that has the answer in memory ([`ArchiveFs::may_wait`]), nor a lookup that a listing
    /// kept answers. An archive's own attributes, and its parent's (the `..` of its listing),
    /// are the source's, never in memory. An archive closed between this answer and the
    /// operation is opened again by the operation, where it runs: rare (the least recently
    /// used archive goes), and only slower.
    pub fn may_wait(&self, ino: Ino, asks: Asks<'_>) -> bool {
        let (id, local) = ino::split(ino);
        let Ok(e) = self.entity(id) else {
            return false;
        };
        let dir = &self.sources[e.source].dir;
        let in_memory = || match (e.is, asks) {
            (Is::Dir, Asks::Lookup(name)) => {
                let (full, stem) = names::looked_for(name);
                dir.answers_now(&e.rel, &[name, &full, stem])
            }
            (Is::Archive, Asks::Attr | Asks::EntriesPlus) if local == 1 => false,
            (Is::Archive, _) => self
                .archives
                .open_now(id)
                .is_some_and(|fs| !fs.may_wait(ino, asks)),
            _ => false,
        };
        match e.is {
            Is::Top => self.sources.iter().any(|s| s.dir.is_remote()),
            _ => dir.is_remote() && !in_memory(),
        }
    }

    /// Whether `ino` is an entry of the sources itself (an archive's own directory included),
    /// not a node inside an archive.
    pub fn is_entry(&self, ino: Ino) -> bool {
        ino::split(ino).1 == 1
    }

    /// The child `name` of directory `parent`.
    pub fn lookup(&self, parent: Ino, name: &[u8]) -> Result<Attr> {
        match self.node(parent)? {
            Located::Archive(fs) => fs.lookup(parent, name),
            Located::Entity(id, e) => self.lookup_in(id, &e, name),
        }
    }

    /// The attributes of `ino`. An archive's own directory is answered from the source,
    /// without opening the archive.
    pub fn getattr(&self, ino: Ino) -> Result<Attr> {
        let (id, local) = ino::split(ino);
        let e = self.entity(id)?;
        match (e.is, local) {
            (_, 1) => self.entity_attr(id, &e),
            (Is::Archive, _) => self.archive(id, &e)?.getattr(ino),
            _ => Err(Error::NotFound),
        }
    }

    /// Opens directory `ino`: a source directory is listed now (the listing the handle
    /// reads, so offsets stay valid while the directory changes): its handle. None for a
    /// directory of an archive, whose listing never changes.
    pub fn opendir(&self, ino: Ino) -> Result<Option<u64>> {
        match self.node(ino)? {
            Located::Archive(fs) => fs.readdir(ino, 0).map(|_| None),
            Located::Entity(id, e) => {
                let listing = Arc::new(self.list(id, &e)?);
                let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
                self.lock_listings().insert(fh, listing);
                Ok(Some(fh))
            }
        }
    }

    fn lock_listings(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Vec<Listed>>>> {
        self.listings.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Entries of directory `ino` from `offset`, handed to `add` until it says it is full.
    pub fn readdir(
        &self,
        ino: Ino,
        fh: u64,
        offset: u64,
        add: &mut dyn FnMut(DirEntry<'_>) -> bool,
    ) -> Result<()> {
        let listing = self.lock_listings().get(&fh).cloned();
        let Some(listing) = listing else {
            let Located::Archive(fs) = self.node(ino)? else {
                return Err(Error::NotFound);
            };
            return fs.readdir_into(ino, offset, add);
        };
        let skip = usize::try_from(offset).unwrap_or(usize::MAX);
        for (i, l) in listing.iter().enumerate().skip(skip) {
            let entry = DirEntry {
                ino: l.ino,
                next_offset: i as u64 + 1,
                kind: l.kind,
                name: Cow::Borrowed(&l.name),
                attr: l.attr,
            };
            if add(entry) {
                break;
            }
        }
        Ok(())
    }

    /// Lets go of the listing of directory handle `fh`.
    pub fn releasedir(&self, fh: u64) {
        self.lock_listings().remove(&fh);
    }

    /// The target of symlink `ino`, as written in the source.
    pub fn readlink(&self, ino: Ino) -> Result<Vec<u8>> {
        match self.node(ino)? {
            Located::Entity(id, e) if e.is == Is::Symlink => {
                self.stat(id, &e)?;
                self.sources[e.source].dir.readlink(&e.rel)
            }
            _ => Err(Error::Usage("not a symlink".into())),
        }
    }

    /// Opens regular file `ino` of a source tree, checked to be the file that was found.
    pub fn open_file(&self, ino: Ino) -> Result<Plain> {
        let (id, e) = match self.node(ino)? {
            Located::Entity(id, e) if e.is == Is::File => (id, e),
            Located::Entity(..) => return Err(Error::IsDir),
            Located::Archive(_) => return Err(Error::NotFound),
        };
        let (opened, meta) = self.sources[e.source].dir.open(&e.rel)?;
        if key_of(&meta, false) != e.key {
            return Err(Error::NotFound);
        }
        match opened {
            SourceFile::File(file) => Ok(Plain::File(file)),
            SourceFile::Object(object) => Ok(Plain::Object(
                self.archives.cache().blocks(Arc::new(object), id)?,
            )),
        }
    }

    /// What the source says of `e` now; NotFound once it is no longer the entry that was
    /// found (removed, replaced, rewritten).
    fn stat(&self, id: u64, e: &Entity) -> Result<Meta> {
        if e.is == Is::Top {
            return Err(Error::NotFound);
        }
        let meta = self.sources[e.source].dir.stat(&e.rel)?;
        // The root is whatever directory is at the source's path now.
        if id != 0 && key_of(&meta, e.is == Is::Archive) != e.key {
            return Err(Error::NotFound);
        }
        Ok(meta)
    }

    fn entity_attr(&self, id: u64, e: &Entity) -> Result<Attr> {
        let ino = ino::ino(id, 1);
        match (e.is, self.stat(id, e)) {
            (_, Ok(meta)) => Ok(attr_of(&self.overrides, ino, e.is, &meta)),
            // The root answers even with its source gone: a mount whose root fails is
            // unusable, and listing it says what is wrong.
            (Is::Top, _) | (_, Err(_)) if id == 0 => Ok(top_attr(&self.overrides, self.mounted_at)),
            (_, Err(err)) => Err(err),
        }
    }

    /// Records the entry at `rel` of source `source`, found as `is` with `meta` in the
    /// directory `parent`: its id (the same entry always gets the same id).
    fn register(&self, is: Is, meta: &Meta, parent: Ino, source: usize, rel: PathBuf) -> u64 {
        let key = key_of(meta, is == Is::Archive);
        let fits = |e: &Entity| e.key == key && e.is == is;
        let same = |e: &Entity| fits(e) && e.parent == parent && e.source == source && e.rel == rel;
        let mut id = ino::home(&key);
        {
            let entities = self.entities.read().unwrap_or_else(|p| p.into_inner());
            while let Some(e) = entities.get(&id) {
                if same(e) {
                    return id;
                }
                if fits(e) {
                    break;
                }
                id = ino::next(id);
            }
        }
        let mut entities = self.write();
        // Moved (a rename), or new: (re)recorded where it is now.
        while let Some(e) = entities.get(&id) {
            if fits(e) {
                break;
            }
            id = ino::next(id);
        }
        entities.insert(
            id,
            Arc::new(Entity {
                is,
                parent,
                source,
                rel,
                key,
                failed: OnceLock::new(),
            }),
        );
        id
    }

    /// Source `i` as a child of the top.
    fn top_entry(&self, i: usize) -> Result<(Ino, Attr)> {
        let s = &self.sources[i];
        let meta = s.dir.stat(&s.rel)?;
        let is = match meta.kind {
            Type::Dir if s.rel.as_os_str().is_empty() => Is::Dir,
            Type::File if !s.rel.as_os_str().is_empty() => Is::Archive,
            _ => return Err(Error::NotFound),
        };
        let id = self.register(is, &meta, 1, i, s.rel.clone());
        let ino = ino::ino(id, 1);
        Ok((ino, attr_of(&self.overrides, ino, is, &meta)))
    }

    fn lookup_in(&self, id: u64, e: &Entity, name: &[u8]) -> Result<Attr> {
        match e.is {
            Is::Top => {
                let i = self.sources.iter().position(|s| s.name == name);
                self.top_entry(i.ok_or(Error::NotFound)?).map(|(_, a)| a)
            }
            Is::Dir => {
                let dir = &self.sources[e.source].dir;
                let (full, stem) = names::looked_for(name);
                let [literal, archive, short] = dir.stat_in(&e.rel, [name, &full, stem])?;
                let (found, meta, is) = match (literal, archive) {
                    (Some(meta), _) => match names::shows(name, &meta) {
                        Shows::Hidden => return Err(Error::NotFound),
                        Shows::Plain => (name.to_vec(), meta, plain(&meta)),
                        // Shown under its short name, unless that is taken.
                        Shows::Archive if short.is_none() => return Err(Error::NotFound),
                        Shows::Archive => (name.to_vec(), meta, Is::Archive),
                    },
                    (None, Some(m)) if names::shows(&full, &m) == Shows::Archive => {
                        (full, m, Is::Archive)
                    }
                    (None, _) => return Err(Error::NotFound),
                };
                let rel = e.rel.join(component(&found));
                let child = self.register(is, &meta, ino::ino(id, 1), e.source, rel);
                Ok(attr_of(&self.overrides, ino::ino(child, 1), is, &meta))
            }
            Is::File | Is::Symlink => Err(Error::NotDir),
            Is::Archive => Err(Error::NotFound),
        }
    }

    /// The listing of source directory (or top) `e`: `.`, `..`, then its entries by name.
    fn list(&self, id: u64, e: &Entity) -> Result<Vec<Listed>> {
        let here = ino::ino(id, 1);
        let mut out = Vec::new();
        match e.is {
            Is::Top => {
                for (i, s) in self.sources.iter().enumerate() {
                    if let Ok((ino, attr)) = self.top_entry(i) {
                        let (name, kind) = (s.name.clone().into(), attr.kind);
                        out.push(Listed {
                            ino,
                            name,
                            kind,
                            attr: Some(attr),
                        });
                    }
                }
            }
            Is::Dir => {
                let entries = self.sources[e.source].dir.list(&e.rel)?;
                let literal: HashSet<&[u8]> = entries.iter().map(|(n, _)| &n[..]).collect();
                let shows: Vec<_> = entries
                    .iter()
                    .map(|(n, m)| (&n[..], names::shows(n, m)))
                    .collect();
                let shown = names::shown(&shows, &literal);
                for (((name, meta), (_, how)), shown) in entries.iter().zip(&shows).zip(shown) {
                    let Some(shown) = shown else { continue };
                    let is = match how {
                        Shows::Archive => Is::Archive,
                        _ => plain(meta),
                    };
                    let rel = e.rel.join(component(name));
                    let child = ino::ino(self.register(is, meta, here, e.source, rel), 1);
                    let attr = attr_of(&self.overrides, child, is, meta);
                    out.push(Listed {
                        ino: child,
                        name: shown.into(),
                        kind: attr.kind,
                        attr: Some(attr),
                    });
                }
            }
            _ => return Err(Error::NotDir),
        }
        out.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        let dots = [(here, &b"."[..]), (e.parent, &b".."[..])].map(|(ino, name)| Listed {
            ino,
            name: name.into(),
            kind: Kind::Dir,
            attr: None,
        });
        Ok(dots.into_iter().chain(out).collect())
    }
}

/// A remote source: a prefix of a bucket (a directory) or one object (an archive, in a
/// place that is never listed); its base name.
fn remote_source(
    url: &str,
    timeout: std::time::Duration,
    owner: (u32, u32),
) -> Result<(Source, Vec<u8>)> {
    let (dir, rel) = match remote::find(url, timeout)? {
        Found::Prefix(at) => (at, String::new()),
        Found::Object { at, .. } => at.parent(),
    };
    let base = match rel.is_empty() {
        true => dir.path.filename(),
        false => Some(rel.as_str()),
    };
    let base = base.map_or_else(
        || bucket_of(url).as_bytes().to_vec(),
        |b| b.as_bytes().to_vec(),
    );
    let short = names::stem(&base).map_or(base.clone(), <[u8]>::to_vec);
    let source = Source {
        dir: Origin::Remote(Box::new(RemoteDir::new(dir, owner))),
        rel: PathBuf::from(rel),
        name: Vec::new(),
    };
    Ok((source, short))
}

/// The bucket (or host) of `url`, the base name of a source that is a whole bucket.
fn bucket_of(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split('/').next().unwrap_or(rest)
}

/// A command-line source: resolved once, now; its directory and its base name.
fn resolve_source(path: &Path) -> Result<(Source, Vec<u8>)> {
    let open_err = |cause: String| Error::ArchiveOpen {
        path: path.to_path_buf(),
        cause,
    };
    let real = path
        .canonicalize()
        .map_err(|e| open_err(crate::error::cause(&e)))?;
    let meta = std::fs::metadata(&real).map_err(|e| open_err(crate::error::cause(&e)))?;
    let name = real
        .file_name()
        .map(|n| n.as_encoded_bytes().to_vec())
        .unwrap_or_else(|| b"root".to_vec());
    if meta.is_dir() {
        let source = Source {
            dir: Origin::Local(SourceDir::new(real)),
            rel: PathBuf::new(),
            name: Vec::new(),
        };
        return Ok((source, name));
    }
    if !meta.is_file() {
        return Err(open_err("not a directory or a regular file".into()));
    }
    let parent = real.parent().map(Path::to_path_buf).unwrap_or_default();
    let short = names::stem(&name).map_or(name.clone(), <[u8]>::to_vec);
    let source = Source {
        dir: Origin::Local(SourceDir::new(parent)),
        rel: PathBuf::from(component(&name)),
        name: Vec::new(),
    };
    Ok((source, short))
}
