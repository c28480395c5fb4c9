//! The decompression cache: compressed members are decoded into files on disk, under a byte
//! budget, and served from there. ARCHITECTURE.md draws the whole path; in short:
//!
//! * [`Cache::open`] pins a member for an open handle, and decides how it will be served:
//!   joining the slot already live, reusing a complete file an earlier mount left, sparse
//!   from its seek index (`span_fill.rs`), or by a first pass from the start
//!   (`first_pass.rs`, one thread per member, single flight).
//! * [`Cache::read`] asks the member's slot (`slot.rs`), which answers at once or parks the
//!   read until the thread writing its range answers it: no request thread ever waits.
//! * The budget (`cache_size`) is kept by the ledger (`ledger.rs`): every member with a cache
//!   file counts its size, every span of a sparse member its blocks; members held open are
//!   never evicted whole. A deflated member larger than the whole budget keeps only a window
//!   of itself (half the budget) during its first pass and is sparse from then on.
//! * Complete files are verified (size, CRC-32) and renamed into place, so they survive the
//!   daemon and are reused by the next mount of the same, unchanged archive ([`store`]).
//!
//! Locks: the cache lock (`Shared::lock`, the ledger) is taken before a slot's lock, never the
//! other way round; neither is held across decoding, and the only I/O under the cache lock is
//! a rename (promotion) and a punch (a window turned sparse), each commented where it happens.

mod blocks;
mod config;
mod copy;
pub mod decoder;
mod first_pass;
pub mod inflate;
mod ledger;
pub mod seek_index;
pub mod slot;
mod span_fill;
pub mod spans;
pub mod store;

use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::archive::{Archive, Identity};
use crate::error::{Error, Result, cause};
use crate::members::{Member, Method};
pub use blocks::Blocks;
pub use config::{CacheConfig, DEFAULT_CACHE_SIZE};
use ledger::{Ledger, SlotId, Victims};
pub use slot::ReadDone;
use slot::{Slot, Sparse};
use store::{FileKey, Store, Versions};

/// What every archive's part of the cache shares: the books and the counters.
struct Pool {
    ledger: Mutex<Ledger>,
    stats: Stats,
}

impl Pool {
    /// The cache lock: the ledger.
    fn lock(&self) -> MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What one archive's part of the cache and its decoding threads share.
struct Shared {
    pool: Arc<Pool>,
    store: Arc<Store>,
}

impl Shared {
    /// The cache lock: the ledger of the whole mount.
    fn lock(&self) -> MutexGuard<'_, Ledger> {
        self.pool.lock()
    }

    /// The mount's counters.
    fn stats(&self) -> &Stats {
        &self.pool.stats
    }

    /// The ledger's id of member `number` of this archive.
    fn id(&self, number: usize) -> SlotId {
        (self.store.id, number)
    }
}

/// The counters behind [`CacheStats`], bumped without the lock.
#[derive(Default)]
struct Stats {
    decoded: AtomicU64,
    decoded_bytes: AtomicU64,
    span_fills: AtomicU64,
    span_bytes: AtomicU64,
    reused: AtomicU64,
    evicted: AtomicU64,
    evicted_spans: AtomicU64,
    evicted_bytes: AtomicU64,
}

impl Stats {
    /// A member of `size` bytes went through a whole first pass.
    fn count_decode(&self, size: u64) {
        self.decoded.fetch_add(1, Ordering::Relaxed);
        self.decoded_bytes.fetch_add(size, Ordering::Relaxed);
    }
}

/// The mount's decompression cache: one budget and one LRU for every archive it serves.
/// Each archive gets its part ([`ArchiveCache`]), a subdirectory of the cache directory
/// keyed by the archive's identity, made the first time it is asked for.
pub struct Cache {
    pool: Arc<Pool>,
    config: CacheConfig,
    /// The cache directory the first store was opened in (the chain is tried once).
    dir: Mutex<Option<PathBuf>>,
    versions: Versions,
}

impl Cache {
    /// The cache of a mount, with no archive in it yet (nothing on disk is touched).
    pub fn new(config: &CacheConfig) -> Cache {
        Cache {
            pool: Arc::new(Pool {
                ledger: Mutex::new(Ledger::new(config.size)),
                stats: Stats::default(),
            }),
            config: config.clone(),
            dir: Mutex::new(None),
            versions: Versions::default(),
        }
    }

    /// The part of the cache of `archive`, whose id in the mount is `id`: on the first call
    /// for `id`, its directory is opened and the complete files an earlier mount left are
    /// adopted (those that still match `members`).
    pub fn for_archive(
        &self,
        archive: &Arc<Archive>,
        id: u64,
        members: &[Member],
    ) -> Result<ArchiveCache> {
        let store = self.store(archive.path(), archive.identity(), id)?;
        self.adopt(&store, members);
        Ok(ArchiveCache {
            shared: Arc::new(Shared {
                pool: self.pool.clone(),
                store,
            }),
            archive: archive.clone(),
        })
    }

    /// The store (directory) of archive `id`, opened the first time it is asked for.
    fn store(&self, path: &std::path::Path, identity: Identity, id: u64) -> Result<Arc<Store>> {
        if let Some(store) = self.pool.lock().stores.get(&id) {
            return Ok(store.clone());
        }
        let open = |dir: &std::path::Path| Store::open(dir, path, identity, id, &self.versions);
        // Not held across the opening: archives opened side by side make their stores at once.
        let chosen = self.dir.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let store = match chosen {
            Some(dir) => open(&dir).map_err(|e| Error::CacheDir {
                path: dir.clone(),
                cause: cause(&e),
            })?,
            None => {
                let (store, dir) = self.config.open_store(open)?;
                *self.dir.lock().unwrap_or_else(|p| p.into_inner()) = Some(dir);
                store
            }
        };
        let store = Arc::new(store);
        let mut ledger = self.pool.lock();
        let store = ledger.stores.entry(id).or_insert(store).clone();
        log::debug!(
            "cache {}: budget {} bytes",
            store.dir().display(),
            self.config.size
        );
        Ok(store)
    }

    /// Files the complete member files an earlier mount left in `store` (once per store):
    /// those that still match `members` are kept for reuse, the rest deleted.
    fn adopt(&self, store: &Arc<Store>, members: &[Member]) {
        if self.pool.lock().scanned.contains(&store.id) {
            return;
        }
        let found = store.scan();
        let id = store.id;
        let victims = {
            let mut ledger = self.pool.lock();
            if !ledger.scanned.insert(id) {
                return;
            }
            for key in found {
                let matches = members
                    .get(key.number)
                    .is_some_and(|m| FileKey::of(key.number, m) == key && m.problem.is_none());
                if matches {
                    ledger.kept.put((id, key.number), key);
                    ledger.used += key.size;
                    ledger.adopted.insert((id, key.number));
                } else {
                    store::remove(&store.complete_path(key));
                }
            }
            ledger.evict(0, &self.pool.stats)
        };
        victims.apply();
    }

    /// At unmount: sparse cache files are of no use to a later mount (complete files and seek
    /// indexes are), so they are deleted now; first passes still running are stopped, and
    /// those verified and being synced are given a few seconds to name their file complete,
    /// so a member read to its end just before the unmount is reused by the next mount.
    pub fn close(&self) {
        let (sparse, settling): (Vec<PathBuf>, Vec<Arc<Slot>>) = {
            let ledger = self.pool.lock();
            let mut sparse = Vec::new();
            let mut settling = Vec::new();
            for s in ledger.live.values() {
                if s.is_sparse() {
                    sparse.extend(s.take_part());
                } else if s.has_part() {
                    if !s.is_complete() {
                        s.cancel();
                    }
                    settling.push(s.clone());
                }
            }
            (sparse, settling)
        };
        sparse.iter().for_each(|p| store::remove(p));
        self.close_blocks();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while settling.iter().any(|s| s.has_part()) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// The byte budget.
    pub fn budget(&self) -> u64 {
        self.config.size
    }

    /// The cache's counters now.
    pub fn stats(&self) -> CacheStats {
        let s = &self.pool.stats;
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let (used, budget) = {
            let ledger = self.pool.lock();
            (ledger.used, ledger.budget)
        };
        CacheStats {
            decoded: n(&s.decoded),
            decoded_bytes: n(&s.decoded_bytes),
            span_fills: n(&s.span_fills),
            span_bytes: n(&s.span_bytes),
            reused: n(&s.reused),
            evicted: n(&s.evicted),
            evicted_spans: n(&s.evicted_spans),
            evicted_bytes: n(&s.evicted_bytes),
            used,
            budget,
        }
    }
}

/// One archive's part of the mount's cache: what the filesystem core asks of it.
pub struct ArchiveCache {
    shared: Arc<Shared>,
    archive: Arc<Archive>,
}

/// What an open found of a member already in the cache.
enum Found {
    /// A live slot, now pinned once more.
    Joined,
    /// A complete file an earlier pass left, no longer held: to be opened again.
    Kept,
    /// Nothing: the member must be decoded.
    Nothing,
}

impl ArchiveCache {
    fn lock(&self) -> MutexGuard<'_, Ledger> {
        self.shared.lock()
    }

    fn id(&self, number: usize) -> SlotId {
        self.shared.id(number)
    }

    /// Pins member `number` for an open handle, starting its decoding if no one has. Returns
    /// a handle on the complete cache file when the member is already decoded (for
    /// passthrough).
    pub fn open(&self, number: usize, member: &Member) -> Result<Option<File>> {
        self.pin(number, member)?;
        let slot = self.lock().live.get(&self.id(number)).cloned();
        Ok(slot
            .filter(|s| s.is_complete())
            .and_then(|s| s.file().try_clone().ok()))
    }

    /// Pins the member: joins its live slot, reuses its kept file, or starts decoding it
    /// (sparse from its seek index if it has one, else a first pass).
    fn pin(&self, number: usize, member: &Member) -> Result<()> {
        let key = FileKey::of(number, member);
        let store = &self.shared.store;
        match self.find(key) {
            Found::Joined => return Ok(()),
            Found::Kept => match store.open_complete(key) {
                Ok(file) => {
                    let slot = Slot::complete((store.id, key), member.name.clone(), file);
                    return self.adopt(Arc::new(slot), false);
                }
                Err(e) => {
                    log::warn!("cache file of {} vanished: {}", member.name, cause(&e));
                    self.lock().used -= key.size;
                }
            },
            Found::Nothing => {}
        }
        let data_start = member.data_start(&self.archive)?;
        let (file, part) = store
            .create_part(key)
            .map_err(|e| Error::io("create", format!("a cache file for {}", member.name), e))?;
        match span_fill::seek_table(store, key, member) {
            Some(table) => {
                let sparse = Sparse {
                    table,
                    data_start,
                    compressed_size: member.compressed_size,
                };
                log::debug!("{}: served span by span from its seek index", member.name);
                let slot = Slot::sparse((store.id, key), member.name.clone(), file, part, sparse);
                self.adopt(Arc::new(slot), true)
            }
            None => self.start_first_pass(key, member, data_start, (file, part)),
        }
    }

    /// What the cache has of `key` already; a live slot is pinned on the spot.
    fn find(&self, key: FileKey) -> Found {
        let id = self.id(key.number);
        let mut ledger = self.lock();
        if let Some(slot) = ledger.live.get(&id) {
            slot.pins.fetch_add(1, Ordering::SeqCst);
            return Found::Joined;
        }
        if ledger.adopted.remove(&id) {
            self.shared.stats().reused.fetch_add(1, Ordering::Relaxed);
        }
        match ledger.kept.pop(&id) {
            Some(_) => Found::Kept,
            None => Found::Nothing,
        }
    }

    /// A member with no seek index: a first pass decodes it from the start, keeping a window
    /// of half the budget if the member is larger than the whole cache (it is served sparse
    /// once its seek index is saved).
    fn start_first_pass(
        &self,
        key: FileKey,
        member: &Member,
        data_start: u64,
        (file, part): (File, PathBuf),
    ) -> Result<()> {
        // Seek points pay off from two spans on; a smaller member is decoded whole anyway
        // (and an archive of 10^5 small members gets no 10^5 index files).
        let seekable = member.method == Method::Deflated && member.size > 2 * inflate::SPAN;
        let seek = seekable
            .then(|| self.shared.store.create_seek(key).ok())
            .flatten();
        let budget = self.lock().budget;
        let window = (seek.is_some() && member.size > budget).then_some(budget / 2);
        let slot = Arc::new(Slot::first_pass(
            (self.shared.store.id, key),
            member.name.clone(),
            file,
            part,
            window,
        ));
        self.adopt(slot.clone(), true)?;
        if slot.pins.load(Ordering::SeqCst) == 0 {
            // Another open won the race; ours was discarded.
            if let Some((_, part)) = seek {
                store::remove(&part);
            }
            return Ok(());
        }
        let job = decoder::Job {
            header_start: member.header_start,
            data_start,
            compressed_size: member.compressed_size,
            size: member.size,
            crc32: member.crc32,
            method: member.method,
        };
        if let Err(e) = first_pass::spawn(&self.shared, &slot, &self.archive, job, seek) {
            // No decoder will ever fill this slot: it fails (no one waits on it), and our pin
            // goes, which files it out of the cache.
            let err = first_pass::failed_to_start(&slot, e);
            self.release(key.number);
            return Err(err);
        }
        Ok(())
    }

    /// Makes `slot` live with one pin, unless another open made the same member live first
    /// (then that one is pinned and `slot` discarded). `new` slots are charged to the budget,
    /// evicting what they must.
    fn adopt(&self, slot: Arc<Slot>, new: bool) -> Result<()> {
        let id = slot.id();
        let (victims, lost) = {
            let mut ledger = self.lock();
            if let Some(existing) = ledger.live.get(&id) {
                existing.pins.fetch_add(1, Ordering::SeqCst);
                if !new {
                    ledger.used -= slot.key.size; // the reused file was charged while kept
                }
                (Victims::default(), true)
            } else {
                let charge = if new { slot.charge() } else { 0 };
                let victims = ledger.evict(charge, self.shared.stats());
                ledger.used += charge;
                slot.pins.store(1, Ordering::SeqCst);
                ledger.live.insert(id, slot.clone());
                (victims, false)
            }
        };
        victims.apply();
        if lost && let Some(part) = slot.take_part() {
            store::remove(&part);
        }
        Ok(())
    }

    /// Drops one pin of member `number`; on the last, keeps the member for reuse or lets it
    /// go.
    pub fn release(&self, number: usize) {
        let mut victims = Victims::default();
        {
            let mut ledger = self.lock();
            let Some(slot) = ledger.live.get(&self.id(number)).cloned() else {
                return;
            };
            if slot.pins.fetch_sub(1, Ordering::SeqCst) != 1 {
                return;
            }
            // A sparse member stays while it has spans, evicted one by one; the last eviction
            // lets it go (`ledger.rs`).
            if slot.is_sparse() {
                ledger.retire_if_idle(&slot, &mut victims);
                drop(ledger);
                victims.apply();
                return;
            }
            // Until its first pass settles (renames or deletes the partial file, under the
            // part lock), an unheld slot stays live, so that a new open joins its decoder;
            // the first pass files it when it settles. After that, it is ours to file.
            let too_big = slot.key.size > ledger.budget;
            if too_big && let Some(part) = slot.take_part() {
                ledger.live.remove(&slot.id());
                ledger.used -= slot.charge();
                slot.cancel();
                victims.files.push(part);
                log::debug!(
                    "{} is larger than the cache: dropped on last close",
                    slot.name
                );
            } else if !slot.has_part() {
                ledger.live.remove(&slot.id());
                let complete = slot.is_complete();
                victims = ledger.dispose(&slot, complete, self.shared.stats());
            }
        }
        victims.apply();
    }

    /// Reads `[offset, end)` of open member `number` and calls `done` with the bytes.
    pub fn read(&self, number: usize, offset: u64, end: u64, done: ReadDone) {
        let slot = self.lock().live.get(&self.id(number)).cloned();
        match slot {
            Some(slot) => {
                // A sparse member's read may need spans decoded: the slot says which.
                let spans = slot.read(offset, end, done);
                span_fill::start(&self.shared, &slot, &self.archive, spans);
            }
            None => done(Err(Error::Corrupt {
                what: format!("member {number}"),
                cause: "read without an open handle".into(),
            })),
        }
    }

    /// Decoded bytes of member `number` in the cache now (`user.npzfs.cached`).
    pub fn cached_bytes(&self, number: usize) -> u64 {
        let ledger = self.lock();
        let id = self.id(number);
        match (ledger.live.get(&id), ledger.kept.peek(&id)) {
            (Some(slot), _) => slot.bytes_present(),
            (None, Some(key)) => key.size,
            (None, None) => 0,
        }
    }

    /// A stored member being copied was read from the archive (its copy yields to readers).
    /// On the stored read path, so it never waits for the cache lock: a note missed while the
    /// lock is busy only means the copy does not yield for that one read.
    pub fn note_read(&self, number: usize) {
        let ledger = match self.shared.pool.ledger.try_lock() {
            Ok(ledger) => ledger,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return,
        };
        if let Some(slot) = ledger.live.get(&self.id(number)) {
            slot.note_read();
        }
    }

    /// The byte budget.
    pub fn budget(&self) -> u64 {
        self.lock().budget
    }
}

/// What the cache has done so far, and what it holds: the log's summary at unmount, and what
/// tests read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Members decoded whole (a first pass, windowed or not).
    pub decoded: u64,
    /// Their bytes.
    pub decoded_bytes: u64,
    /// Spans decoded from seek points.
    pub span_fills: u64,
    /// Their bytes.
    pub span_bytes: u64,
    /// Complete cache files an earlier mount left, opened again.
    pub reused: u64,
    /// Members evicted whole.
    pub evicted: u64,
    /// Spans evicted.
    pub evicted_spans: u64,
    /// Bytes evicted (members and spans).
    pub evicted_bytes: u64,
    /// Bytes the budget counts now.
    pub used: u64,
    /// The budget.
    pub budget: u64,
}

impl std::fmt::Display for CacheStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "cache: decoded {} members ({} bytes), {} spans from seek points ({} bytes), \
             reused {} from disk, evicted {} members and {} spans ({} bytes); {} of {} bytes \
             in use",
            self.decoded,
            self.decoded_bytes,
            self.span_fills,
            self.span_bytes,
            self.reused,
            self.evicted,
            self.evicted_spans,
            self.evicted_bytes,
            self.used,
            self.budget
        )
    }
}
