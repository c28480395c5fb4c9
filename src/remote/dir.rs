//! A prefix of a bucket as a directory source: `s3://bucket/datasets/` is listed like a
//! directory tree (`/` in keys separates its levels), each object a file and each `.npz` an
//! archive, exactly as the forest serves a local directory.
//!
//! An object store has no `stat` and no `readdir`: one listing request (1,000 keys per page)
//! answers for a whole level. Listings are kept [`KEEP`] for lookups and attributes, and a
//! name a listing lacks is looked for again in one at most [`KEEP_MISSING`] old, so a shard
//! uploaded while mounted shows within a second of being asked for; `opendir` (`ls`) always
//! lists anew. What the daemon remembers of an object is its version (ETag, size,
//! Last-Modified): an object replaced under the same key is a new entry with new inode
//! numbers, and reads of the old one fail (If-Match) rather than mix versions.
//!
//! A source that names one object (`s3://bucket/x.npz` beside other sources, or an HTTP URL)
//! is never listed: its object is asked for by HEAD.

use std::collections::HashSet;
use std::num::NonZeroUsize;
use std::path::{Component, Path};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lru::LruCache;
use object_store::path::Path as StorePath;

use super::location::Location;
use super::names::fnv;
use super::object::{Remote, Version};
use super::runtime::block_on;
use crate::error::{Error, Result};
use crate::source::{Meta, Type};

/// How long a listing answers lookups and attributes.
pub const KEEP: Duration = Duration::from_secs(10);
/// How old a listing may be to say a name is not there.
pub const KEEP_MISSING: Duration = Duration::from_secs(1);
/// Listings kept at most (levels of the tree).
const LISTINGS: NonZeroUsize = NonZeroUsize::new(256).unwrap();

/// What a listing says of a name.
#[derive(Clone, Debug)]
enum Entry {
    /// A common prefix: a directory.
    Prefix,
    /// An object.
    Object(Version),
}

/// One level of the tree, as listed.
struct Listing {
    at: Instant,
    entries: Vec<(Box<[u8]>, Entry)>,
}

impl Listing {
    fn get(&self, name: &[u8]) -> Option<&Entry> {
        let i = self
            .entries
            .binary_search_by(|(n, _)| (**n).cmp(name))
            .ok()?;
        Some(&self.entries[i].1)
    }
}

/// A prefix of a bucket (or the place of one object), served as a directory source.
pub struct RemoteDir {
    at: Location,
    /// The device number its entries show: one per source.
    dev: u64,
    /// Who the entries belong to (an object store has no owners): the mounting user.
    owner: (u32, u32),
    /// When it was mounted: the time its prefixes (which have none) show.
    made: SystemTime,
    listings: Mutex<LruCache<Box<Path>, Arc<Listing>>>,
    /// The levels being listed now: request threads that find the same listing stale wait
    /// for that one request instead of each making their own (other levels go on).
    busy: Mutex<HashSet<Box<Path>>>,
    listed: Condvar,
}

/// A level marked as being listed, unmarked (and the waiters woken) however the listing ends.
struct BeingListed<'a> {
    dir: &'a RemoteDir,
    rel: &'a Path,
}

impl Drop for BeingListed<'_> {
    fn drop(&mut self) {
        self.dir.busy().remove(self.rel);
        self.dir.listed.notify_all();
    }
}

impl RemoteDir {
    /// The source at `at`, its entries shown as `owner`'s.
    pub fn new(at: Location, owner: (u32, u32)) -> RemoteDir {
        let dev = fnv(at.display.as_bytes()) | 1 << 63;
        RemoteDir {
            at,
            dev,
            owner,
            made: SystemTime::now(),
            listings: Mutex::new(LruCache::new(LISTINGS)),
            busy: Mutex::new(HashSet::new()),
            listed: Condvar::new(),
        }
    }

    /// Where `rel` is, for messages (a URL without credentials).
    pub fn display(&self, rel: &Path) -> String {
        let mut out = self.at.display.clone();
        if !rel.as_os_str().is_empty() && !out.ends_with('/') {
            out.push('/');
        }
        out.push_str(&rel.to_string_lossy());
        out
    }

    /// The key (or prefix) of `rel`.
    fn key(&self, rel: &Path) -> Result<StorePath> {
        let mut key = self.at.path.as_ref().to_string();
        for c in rel.components() {
            let Component::Normal(name) = c else { continue };
            let name = name.to_str().ok_or(Error::NotFound)?;
            if !key.is_empty() {
                key.push('/');
            }
            key.push_str(name);
        }
        StorePath::parse(key).map_err(|_| Error::NotFound)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LruCache<Box<Path>, Arc<Listing>>> {
        self.listings.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn busy(&self) -> std::sync::MutexGuard<'_, HashSet<Box<Path>>> {
        self.busy.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The listing of level `rel`, at most `age` old (one request per 1,000 entries if it is
    /// older). NotFound when nothing is below it any more.
    fn listing(&self, rel: &Path, age: Duration) -> Result<Arc<Listing>> {
        let fresh = |asked: Instant| {
            let mut listings = self.lock();
            let l = listings.get(rel)?;
            (l.at.elapsed() <= age || l.at >= asked).then(|| l.clone())
        };
        let asked = Instant::now();
        if let Some(l) = fresh(asked) {
            return Ok(l);
        }
        let mut busy = self.busy();
        while busy.contains(rel) {
            busy = self.listed.wait(busy).unwrap_or_else(|p| p.into_inner());
        }
        // Listed by another thread since this one asked: that answer is new enough.
        if let Some(l) = fresh(asked) {
            return Ok(l);
        }
        busy.insert(rel.into());
        drop(busy);
        let _marked = BeingListed { dir: self, rel };
        let key = self.key(rel)?;
        let prefix = (!key.as_ref().is_empty()).then_some(&key);
        let found =
            block_on(self.at.store.list_with_delimiter(prefix))?.map_err(|e| self.at.failed(&e))?;
        let named = |p: &StorePath| p.filename().map(|n| Box::<[u8]>::from(n.as_bytes()));
        let mut entries: Vec<(Box<[u8]>, Entry)> = Vec::new();
        for p in &found.common_prefixes {
            entries.extend(named(p).map(|n| (n, Entry::Prefix)));
        }
        for o in found.objects.iter().filter(|o| o.location != key) {
            entries.extend(named(&o.location).map(|n| (n, Entry::Object(Version::of(o)))));
        }
        // A key and a prefix of one name (`x` and `x/...`): the prefix, a directory, wins.
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        entries.dedup_by(|later, first| later.0 == first.0);
        if entries.is_empty() && !rel.as_os_str().is_empty() {
            self.lock().pop(rel);
            return Err(Error::NotFound);
        }
        let listing = Arc::new(Listing {
            at: Instant::now(),
            entries,
        });
        self.lock().put(rel.into(), listing.clone());
        Ok(listing)
    }

    /// What the listing of `rel`'s level says of it: a name a listing lacks is looked for
    /// again in a fresh one.
    fn entry(&self, rel: &Path) -> Result<Entry> {
        let (Some(dir), Some(name)) = (rel.parent(), rel.file_name()) else {
            return Ok(Entry::Prefix);
        };
        if !self.at.lists {
            return match self.at.head(&self.key(rel)?)? {
                Some(meta) => Ok(Entry::Object(Version::of(&meta))),
                None => Err(Error::NotFound),
            };
        }
        let name = name.as_encoded_bytes();
        for age in [KEEP, KEEP_MISSING] {
            if let Some(e) = self.listing(dir, age)?.get(name) {
                return Ok(e.clone());
            }
        }
        Err(Error::NotFound)
    }

    /// What `rel` is (the source's root is a directory).
    pub fn stat(&self, rel: &Path) -> Result<Meta> {
        let entry = self.entry(rel)?;
        Ok(self.meta(rel, &entry))
    }

    /// Whether [`RemoteDir::stat_in`] of `names` in the level `rel` would be answered now, from
    /// a listing kept, without a request.
    pub fn answers_now(&self, rel: &Path, names: &[&[u8]]) -> bool {
        self.lock().peek(rel).is_some_and(|l| {
            let age = l.at.elapsed();
            age <= KEEP_MISSING || age <= KEEP && names.iter().any(|n| l.get(n).is_some())
        })
    }

    /// What each of `names` in the level `rel` is, if it is there.
    pub fn stat_in<const N: usize>(
        &self,
        rel: &Path,
        names: [&[u8]; N],
    ) -> Result<[Option<Meta>; N]> {
        let mut out = [const { None }; N];
        for age in [KEEP, KEEP_MISSING] {
            let listing = self.listing(rel, age)?;
            for (slot, name) in out.iter_mut().zip(names) {
                let child = rel.join(crate::source::component(name));
                *slot = listing.get(name).map(|e| self.meta(&child, e));
            }
            if out.iter().any(Option::is_some) {
                break;
            }
        }
        Ok(out)
    }

    /// The entries of level `rel`, listed now.
    pub fn list(&self, rel: &Path) -> Result<Vec<(Box<[u8]>, Meta)>> {
        let listing = self.listing(rel, Duration::ZERO)?;
        let entries = listing.entries.iter().map(|(name, e)| {
            let child = rel.join(crate::source::component(name));
            (name.clone(), self.meta(&child, e))
        });
        Ok(entries.collect())
    }

    /// The object at `rel`, to be read by range, and what it is.
    pub fn open(&self, rel: &Path) -> Result<(Remote, Meta)> {
        let entry = self.entry(rel)?;
        let meta = self.meta(rel, &entry);
        match entry {
            Entry::Prefix => Err(Error::IsDir),
            Entry::Object(version) => {
                let remote = self.at.object(self.key(rel)?, version, self.display(rel));
                Ok((remote, meta))
            }
        }
    }

    /// What the forest is told of `rel`: a prefix is a directory whose identity is its
    /// name; an object's identity is its name and its version.
    fn meta(&self, rel: &Path, entry: &Entry) -> Meta {
        let name = rel.as_os_str().as_encoded_bytes();
        let (kind, perm, ino, size, modified) = match entry {
            Entry::Prefix => (Type::Dir, 0o555, fnv(name), 0, self.made),
            Entry::Object(v) => {
                let etag = v.etag.as_deref().unwrap_or_default();
                let secs = v.modified.duration_since(UNIX_EPOCH).unwrap_or_default();
                let version = format!("\0{etag}\0{}\0{}", v.size, secs.as_nanos());
                let ino = fnv(&[name, version.as_bytes()].concat());
                (Type::File, 0o444, ino, v.size, v.modified)
            }
        };
        let since = modified.duration_since(UNIX_EPOCH).unwrap_or_default();
        Meta {
            dev: self.dev,
            ino,
            kind,
            perm,
            uid: self.owner.0,
            gid: self.owner.1,
            size,
            mtime: i64::try_from(since.as_secs()).unwrap_or(0),
            mtime_nsec: i64::from(since.subsec_nanos()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::{Duration, Instant};

    use object_store::memory::InMemory;
    use object_store::path::Path as StorePath;
    use object_store::{ObjectStoreExt, PutPayload};

    use super::*;

    /// A bucket in memory, `keys` in it, served from `prefix`.
    fn bucket(keys: &[(&str, &[u8])], prefix: &str) -> (Arc<InMemory>, RemoteDir) {
        let store = Arc::new(InMemory::new());
        for (key, body) in keys {
            put(&store, key, body);
        }
        let at = Location {
            store: store.clone(),
            path: StorePath::from(prefix),
            display: format!("s3://b/{prefix}/"),
            lists: true,
            pages: None,
        };
        (store, RemoteDir::new(at, (7, 8)))
    }

    fn put(store: &InMemory, key: &str, body: &[u8]) {
        let payload = PutPayload::from(body.to_vec());
        block_on(store.put(&StorePath::from(key), payload))
            .unwrap()
            .unwrap();
    }

    fn names(dir: &RemoteDir, rel: &str) -> Vec<(String, Type)> {
        let listed = dir.list(Path::new(rel)).unwrap().into_iter();
        listed
            .map(|(n, m)| (String::from_utf8(n.into()).unwrap(), m.kind))
            .collect()
    }

    #[test]
    fn a_prefix_lists_as_a_tree_of_prefixes_and_objects() {
        let (_, dir) = bucket(
            &[
                ("ds/a/x.npz", b"xx"),
                ("ds/a/sub/z.npz", b"z"),
                ("ds/a/y.bin", b"yyy"),
                ("ds/top.txt", b"t"),
                ("other/q.npz", b"q"),
            ],
            "ds",
        );
        assert_eq!(
            names(&dir, ""),
            [("a".into(), Type::Dir), ("top.txt".into(), Type::File)]
        );
        assert_eq!(
            names(&dir, "a"),
            [
                ("sub".into(), Type::Dir),
                ("x.npz".into(), Type::File),
                ("y.bin".into(), Type::File)
            ]
        );
        let meta = dir.stat(Path::new("a/y.bin")).unwrap();
        assert_eq!((meta.size, meta.perm, meta.uid, meta.gid), (3, 0o444, 7, 8));
        assert_eq!(dir.stat(Path::new("a")).unwrap().perm, 0o555);
        let [plain, archive, gone] = dir
            .stat_in(Path::new("a"), [b"x", b"x.npz", b"nothing"])
            .unwrap();
        assert!(plain.is_none() && gone.is_none());
        assert_eq!(archive.unwrap().size, 2);
        assert!(matches!(
            dir.stat(Path::new("a/nothing")),
            Err(Error::NotFound)
        ));
        assert!(matches!(
            dir.list(Path::new("nothing")),
            Err(Error::NotFound)
        ));
        let (object, meta) = dir.open(Path::new("a/x.npz")).unwrap();
        assert_eq!((object.size(), meta.size), (2, 2));
        assert_eq!(object.display(), "s3://b/ds/a/x.npz");
        assert!(matches!(dir.open(Path::new("a/sub")), Err(Error::IsDir)));
    }

    #[test]
    fn request_threads_listing_at_once_all_get_their_level() {
        let (_, dir) = bucket(&[("ds/a/x.npz", b"x"), ("ds/b/y.npz", b"y")], "ds");
        std::thread::scope(|s| {
            for i in 0..8 {
                let dir = &dir;
                s.spawn(move || {
                    let (rel, want) = [("a", "x.npz"), ("b", "y.npz"), ("", "a")][i % 3];
                    for _ in 0..20 {
                        assert_eq!(names(dir, rel)[0].0, want);
                        assert!(dir.stat(Path::new(rel)).is_ok());
                    }
                });
            }
        });
    }

    #[test]
    fn a_replaced_object_is_a_new_entry_and_a_new_one_is_found_within_a_second() {
        let (store, dir) = bucket(&[("ds/x.npz", b"one")], "ds");
        let before = dir.stat(Path::new("x.npz")).unwrap();
        put(&store, "ds/x.npz", b"second");
        // Within its lifetime the listing still answers; a fresh one (ls) sees the new version.
        assert_eq!(dir.stat(Path::new("x.npz")).unwrap(), before);
        dir.list(Path::new("")).unwrap();
        let after = dir.stat(Path::new("x.npz")).unwrap();
        assert_ne!(after.ino, before.ino);
        assert_eq!((after.dev, after.size), (before.dev, 6));
        // A name never seen is looked for again in a listing at most a second old.
        put(&store, "ds/new.npz", b"n");
        let deadline = Instant::now() + Duration::from_secs(5);
        let found = loop {
            match dir.stat_in(Path::new(""), [b"new.npz"]).unwrap() {
                [Some(m)] => break Some(m),
                _ if Instant::now() > deadline => break None,
                _ => std::thread::sleep(Duration::from_millis(20)),
            }
        };
        assert_eq!(found.map(|m| m.size), Some(1));
        block_on(store.delete(&StorePath::from("ds/x.npz")))
            .unwrap()
            .unwrap();
        assert!(!names(&dir, "").iter().any(|(n, _)| n == "x.npz"));
    }

    #[test]
    fn a_kept_listing_answers_now_what_stat_in_would_answer_from_it() {
        let (_, dir) = bucket(&[("ds/a.npz", b"a")], "ds");
        let (root, a, b): (&Path, &[u8], &[u8]) = (Path::new(""), b"a.npz", b"b.npz");
        assert!(!dir.answers_now(root, &[a]), "nothing is listed yet");
        dir.stat_in(root, [a]).unwrap();
        assert!(dir.answers_now(root, &[a]));
        // A name the listing lacks is absent while the listing is at most a second old.
        assert!(dir.answers_now(root, &[b]));
        assert!(dir.answers_now(root, &[b, a]));
        assert!(!dir.answers_now(Path::new("sub"), &[a]), "another level");
        let age = |secs| {
            let mut listings = dir.lock();
            let l = listings.get(root).unwrap().clone();
            let at = Instant::now()
                .checked_sub(Duration::from_secs(secs))
                .unwrap();
            let entries = l.entries.clone();
            listings.put(root.into(), Arc::new(Listing { at, entries }));
        };
        age(2);
        assert!(dir.answers_now(root, &[a]));
        assert!(
            !dir.answers_now(root, &[b]),
            "a missing name is looked for again"
        );
        age(KEEP.as_secs() + 1);
        assert!(
            !dir.answers_now(root, &[a]),
            "a listing past KEEP is asked again"
        );
    }
}
