//! The decompression cache: compressed members are decoded into files on disk, under a byte
//! budget, and served from there.
//!
//! * One decoder per member (single flight): the first open starts it, later opens share it.
//!   It decodes from the start and, for deflate, records a seek point every
//!   [`seek::SPAN`] bytes into the member's seek index ([`seek_file`]).
//! * A read waits only for its own range, and never in a request thread ([`entry`]).
//! * With a seek index, a member whose file is gone is *sparse* (`spans.rs`): each span is
//!   decoded from its own seek point when a read needs it and evicted on its own; one no one
//!   holds is closed once its last span is gone.
//! * The budget (`cache_size`) counts every member with a cache file by its size, and every
//!   span of a sparse member by its own. Eviction order and rules are in `budget.rs`: members
//!   held open are never evicted whole, so the budget can be exceeded by what open handles
//!   pin. A deflated member larger than the whole budget keeps only a window of itself (half
//!   the budget) during its first decode and is sparse from then on, within the budget; one of
//!   another method is decoded for its holders and deleted on its last close. Any other member
//!   closed mid-decode finishes decoding in the background (so a reopen joins it).
//! * Complete files are verified (size, CRC-32) and renamed into place, so they survive the
//!   daemon and are reused by the next mount of the same, unchanged archive ([`store`]).

mod budget;
pub mod decoder;
pub mod entry;
pub mod seek;
pub mod seek_file;
mod spans;
pub mod store;

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use lru::LruCache;

use crate::archive::Archive;
use crate::error::{Error, Result, cause};
use crate::index::Member;
use budget::Victims;
use entry::{Entry, Fill, ReadDone};
use store::{FileKey, Store};

/// The default budget when `cache_size=` is not given.
pub const DEFAULT_CACHE_SIZE: u64 = 4 << 30;

/// Where the cache lives and how much of it this mount may use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheConfig {
    /// The cache directory (the archive gets a subdirectory of it).
    pub dir: PathBuf,
    /// Directories tried in turn when `dir` cannot be used: the rest of the default chain
    /// (none for a `cache_dir=` the user chose).
    pub fallbacks: Vec<PathBuf>,
    /// The byte budget.
    pub size: u64,
}

impl CacheConfig {
    /// The default chain with `size`: `$CACHE_DIRECTORY` (systemd's `CacheDirectory=`),
    /// `$XDG_CACHE_HOME/npzfs`, `$HOME/.cache/npzfs` (those whose variable is set), then
    /// `/var/tmp/npzfs-<uid>`. The first that can be used is used.
    pub fn with_default_dirs(size: u64) -> CacheConfig {
        let var = |name| {
            std::env::var_os(name)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        let mut chain = Vec::new();
        if let Some(dir) = var("CACHE_DIRECTORY") {
            // systemd may pass several, separated by ':'; the first is ours.
            let first = dir.to_string_lossy().split(':').next().map(PathBuf::from);
            chain.extend(first);
        }
        chain.extend(var("XDG_CACHE_HOME").map(|d| d.join("npzfs")));
        chain.extend(var("HOME").map(|d| d.join(".cache").join("npzfs")));
        chain.push(PathBuf::from(format!("/var/tmp/npzfs-{}", outside_uid())));
        chain.dedup();
        let dir = chain.remove(0);
        CacheConfig {
            dir,
            fallbacks: chain,
            size,
        }
    }

    /// `dir` and nothing else, with `size`: if `dir` cannot be used, that is an error.
    pub fn at(dir: PathBuf, size: u64) -> CacheConfig {
        CacheConfig {
            dir,
            fallbacks: Vec::new(),
            size,
        }
    }

    /// Uses `dir` and nothing else (`cache_dir=`): if it cannot be used, that is an error.
    pub fn set_dir(&mut self, dir: PathBuf) {
        self.dir = dir;
        self.fallbacks.clear();
    }

    /// Opens the store in the first directory of the chain that can be used; one log line
    /// says so when that is not the first. Fails with the first directory's cause.
    fn open_store(&self, archive: &Archive) -> Result<Store> {
        let open = |dir: &PathBuf| Store::open(dir, archive.path(), archive.identity());
        let first = match open(&self.dir) {
            Ok(store) => return Ok(store),
            Err(e) => e,
        };
        let mut why = cause(&first);
        for dir in &self.fallbacks {
            match open(dir) {
                Ok(store) => {
                    log::info!(
                        "using cache directory {}: cannot use {}: {why}",
                        dir.display(),
                        self.dir.display(),
                    );
                    return Ok(store);
                }
                Err(e) => why.push_str(&format!("; nor {}: {}", dir.display(), cause(&e))),
            }
        }
        Err(Error::CacheDir {
            path: self.dir.clone(),
            cause: why,
        })
    }
}

/// Our uid as the rest of the machine sees it: inside a user namespace (`unshare -Ur`) we
/// are 0, and /var/tmp/npzfs-0 would be root's. From /proc/self/uid_map ("inside outside
/// count" ranges).
fn outside_uid() -> u32 {
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    let map = std::fs::read_to_string("/proc/self/uid_map").unwrap_or_default();
    map.lines()
        .find_map(|line| {
            let f: Vec<u32> = line
                .split_whitespace()
                .filter_map(|n| n.parse().ok())
                .collect();
            let (inside, outside, count) = (*f.first()?, *f.get(1)?, *f.get(2)?);
            (uid >= inside && uid - inside < count).then(|| outside + (uid - inside))
        })
        .unwrap_or(uid)
}

#[derive(Default)]
struct Stats {
    decoded: AtomicU64,
    decoded_bytes: AtomicU64,
    reused: AtomicU64,
    evicted: AtomicU64,
    evicted_bytes: AtomicU64,
    span_fills: AtomicU64,
    span_bytes: AtomicU64,
    evicted_spans: AtomicU64,
}

struct State {
    /// Members with an open cache file: held open, or still decoding (then possibly unheld).
    live: HashMap<usize, Arc<Entry>>,
    /// Complete files on disk that no one holds, least recently used first out.
    done: LruCache<usize, FileKey>,
    /// Spans of sparse members in their cache files, least recently filled first out:
    /// (member, span) -> bytes.
    spans: LruCache<(usize, usize), u64>,
    /// Bytes of every member in `live` and `done`, and of every span in `spans`.
    used: u64,
    /// Members whose complete file an earlier mount left, not yet opened (for the summary).
    adopted: HashSet<usize>,
}

/// What the cache and its decoder threads share.
struct Shared {
    store: Store,
    budget: u64,
    state: Mutex<State>,
    stats: Stats,
}

/// The decompression cache of one mounted archive.
pub struct Cache {
    shared: Arc<Shared>,
    archive: Arc<Archive>,
}

impl Cache {
    /// Opens the cache for `archive`, adopting complete files an earlier mount left.
    pub fn new(config: &CacheConfig, archive: Arc<Archive>, members: &[Member]) -> Result<Cache> {
        let store = config.open_store(&archive)?;
        let mut state = State {
            live: HashMap::new(),
            done: LruCache::unbounded(),
            spans: LruCache::unbounded(),
            used: 0,
            adopted: HashSet::new(),
        };
        for key in store.scan() {
            let matches = members
                .get(key.index)
                .is_some_and(|m| m.crc32 == key.crc32 && m.size == key.size && m.problem.is_none());
            if matches {
                state.done.put(key.index, key);
                state.used += key.size;
                state.adopted.insert(key.index);
            } else {
                store::remove(&store.complete_path(key));
            }
        }
        let shared = Shared {
            store,
            budget: config.size,
            state: Mutex::new(state),
            stats: Stats::default(),
        };
        let victims = shared.evict(&mut shared.lock(), 0);
        victims.apply();
        log::debug!(
            "cache {}: {} members reusable, budget {} bytes",
            shared.store.dir().display(),
            shared.lock().done.len(),
            shared.budget
        );
        Ok(Cache {
            shared: Arc::new(shared),
            archive,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.shared.lock()
    }

    /// Pins member `index` for an open handle, starting its decoder if no one has. Returns a
    /// handle on the complete cache file when the member is already decoded (for passthrough).
    pub fn open(&self, index: usize, member: &Member) -> Result<Option<File>> {
        self.pin(index, member)?;
        let entry = self.lock().live.get(&index).cloned();
        Ok(entry
            .filter(|e| matches!(e.fill(), Fill::Complete))
            .and_then(|e| e.file().try_clone().ok()))
    }

    fn pin(&self, index: usize, member: &Member) -> Result<()> {
        let key = FileKey {
            index,
            crc32: member.crc32,
            size: member.size,
        };
        let reusable = {
            let mut st = self.lock();
            if let Some(entry) = st.live.get(&index) {
                entry.pins.fetch_add(1, Ordering::SeqCst);
                return Ok(());
            }
            if st.adopted.remove(&index) {
                self.shared.stats.reused.fetch_add(1, Ordering::Relaxed);
            }
            st.done.pop(&index).is_some()
        };
        if reusable {
            match self.shared.store.open_complete(key) {
                Ok(file) => {
                    let entry = Entry::complete(key, member.name.clone(), file);
                    return self.adopt(Arc::new(entry), false);
                }
                Err(e) => {
                    log::warn!("cache file of {} vanished: {}", member.name, cause(&e));
                    self.lock().used -= key.size;
                }
            }
        }
        let data_start = member.data_start(&self.archive)?;
        let (file, part) = self.shared.store.create_part(key).map_err(|e| Error::Io {
            what: format!("a cache file for {}", member.name),
            cause: e,
        })?;
        if let Some(table) = self.seek_table(key, member) {
            let sparse = entry::Sparse {
                table,
                data_start,
                compressed_size: member.compressed_size,
            };
            let entry = Entry::new_sparse(key, member.name.clone(), file, part, sparse);
            log::debug!("{}: served span by span from its seek index", member.name);
            return self.adopt(Arc::new(entry), true);
        }
        // Seek points pay off from two spans on; a smaller member is decoded whole anyway
        // (and an archive of 10^5 small members gets no 10^5 index files).
        let seekable =
            member.method == crate::index::Method::Deflated && member.size > 2 * seek::SPAN;
        let seek = seekable
            .then(|| self.shared.store.create_seek(key).ok())
            .flatten();
        // A member larger than the whole cache keeps only a window of itself (half the budget)
        // during its first pass, and is served sparse once its seek index is saved.
        let budget = self.shared.budget;
        let window = (seek.is_some() && member.size > budget).then_some(budget / 2);
        let entry = Arc::new(Entry::decoding(
            key,
            member.name.clone(),
            file,
            part,
            window,
        ));
        let job = decoder::Job {
            header_start: member.header_start,
            data_start,
            compressed_size: member.compressed_size,
            size: member.size,
            crc32: member.crc32,
            method: member.method,
        };
        self.adopt(entry.clone(), true)?;
        if entry.pins.load(Ordering::SeqCst) == 0 {
            // Another open won the race; ours was discarded.
            if let Some((_, part)) = seek {
                store::remove(&part);
            }
            return Ok(());
        }
        let (archive, shared, failed_entry) =
            (self.archive.clone(), self.shared.clone(), entry.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("npzfs-decode-{index}"))
            .spawn(move || shared.decode(&entry, &archive, &job, seek));
        if let Err(e) = spawned {
            // No decoder will ever fill this entry: fail it, so no one waits on it, and drop
            // our pin, which files it out of the cache.
            failed_entry.settle(|part| {
                part.iter().for_each(|p| store::remove(p));
                Fill::Failed {
                    cause: format!("cannot start a decoder: {}", cause(&e)),
                    errno: libc::EIO,
                }
            });
            self.release(index);
            return Err(Error::Io {
                what: member.name.clone(),
                cause: e,
            });
        }
        Ok(())
    }

    /// Makes `entry` live with one pin, unless another open made the same member live first
    /// (then that one is pinned and `entry` discarded). `new` entries are charged to the
    /// budget, evicting what they must.
    fn adopt(&self, entry: Arc<Entry>, new: bool) -> Result<()> {
        let index = entry.key.index;
        let (victims, lost) = {
            let mut st = self.lock();
            if let Some(existing) = st.live.get(&index) {
                existing.pins.fetch_add(1, Ordering::SeqCst);
                if !new {
                    st.used -= entry.key.size; // the reused file was charged while in `done`
                }
                (Victims::default(), true)
            } else {
                let charge = if new { entry.charge() } else { 0 };
                let victims = self.shared.evict(&mut st, charge);
                st.used += charge;
                entry.pins.store(1, Ordering::SeqCst);
                st.live.insert(index, entry.clone());
                (victims, false)
            }
        };
        victims.apply();
        if lost && let Some(part) = entry.take_part() {
            store::remove(&part);
        }
        Ok(())
    }

    /// Drops one pin of member `index`; on the last, keeps the member for reuse or lets it go.
    pub fn release(&self, index: usize) {
        let mut remove = Victims::default();
        {
            let mut st = self.lock();
            let Some(entry) = st.live.get(&index).cloned() else {
                return;
            };
            if entry.pins.fetch_sub(1, Ordering::SeqCst) != 1 {
                return;
            }
            // A sparse member stays while it has spans, evicted one by one; the last eviction
            // lets it go (`budget.rs`).
            if entry.is_sparse() {
                self.shared.retire_if_idle(&mut st, &entry, &mut remove);
                drop(st);
                remove.apply();
                return;
            }
            // Until the decoder settles (renames or deletes the partial file, under the part
            // lock), an unheld entry stays live, so that a new open joins its decoder; the
            // decoder files it when it settles. After that, it is ours to file.
            let too_big = entry.key.size > self.shared.budget;
            if too_big && let Some(part) = entry.take_part() {
                st.live.remove(&index);
                st.used -= entry.charge();
                entry.cancel();
                remove.files.push(part);
                log::debug!(
                    "{} is larger than the cache: dropped on last close",
                    entry.name
                );
            } else if !entry.has_part() {
                st.live.remove(&index);
                remove = self.shared.dispose(&mut st, &entry, &entry.fill());
            }
        }
        remove.apply();
    }

    /// Reads `[offset, end)` of open member `index` and calls `done` with the bytes.
    pub fn read(&self, index: usize, offset: u64, end: u64, done: ReadDone) {
        let entry = self.lock().live.get(&index).cloned();
        match entry {
            Some(entry) if entry.is_sparse() => {
                self.shared
                    .serve_sparse(&entry, &self.archive, offset, end, done);
            }
            // Only sparse members ask for spans.
            Some(entry) => drop(entry.read(offset, end, done)),
            None => done(Err(Error::Corrupt {
                what: format!("member {index}"),
                cause: "read without an open handle".into(),
            })),
        }
    }

    /// At unmount: sparse cache files are of no use to a later mount (complete files and seek
    /// indexes are), so they are deleted now; decoders still running are stopped, and those
    /// verified and being synced are given a few seconds to name their file complete, so a
    /// member read to its end just before the unmount is reused by the next mount.
    pub fn close(&self) {
        let (sparse, settling): (Vec<PathBuf>, Vec<Arc<Entry>>) = {
            let st = self.lock();
            let mut sparse = Vec::new();
            let mut settling = Vec::new();
            for e in st.live.values() {
                if e.is_sparse() {
                    sparse.extend(e.take_part());
                } else if e.has_part() {
                    if !matches!(e.fill(), Fill::Complete) {
                        e.cancel();
                    }
                    settling.push(e.clone());
                }
            }
            (sparse, settling)
        };
        sparse.iter().for_each(|p| store::remove(p));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while settling.iter().any(|e| e.has_part()) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// Bytes the cache accounts for now (held, decoding and kept members).
    pub fn used(&self) -> u64 {
        self.lock().used
    }

    /// One line for the log at unmount.
    pub fn summary(&self) -> String {
        let s = &self.shared.stats;
        format!(
            "cache: decoded {} members ({} bytes), {} spans from seek points ({} bytes), \
             reused {} from disk, evicted {} members and {} spans ({} bytes); {} of {} bytes \
             in use",
            s.decoded.load(Ordering::Relaxed),
            s.decoded_bytes.load(Ordering::Relaxed),
            s.span_fills.load(Ordering::Relaxed),
            s.span_bytes.load(Ordering::Relaxed),
            s.reused.load(Ordering::Relaxed),
            s.evicted.load(Ordering::Relaxed),
            s.evicted_spans.load(Ordering::Relaxed),
            s.evicted_bytes.load(Ordering::Relaxed),
            self.used(),
            self.shared.budget
        )
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The decoder thread: decode, then settle the entry. A verified file is synced and
    /// renamed to its complete name; a failed or cancelled one is deleted; both under the
    /// entry's part lock. An entry its last holder left while decoding is then filed here.
    fn decode(
        self: &Arc<Self>,
        entry: &Arc<Entry>,
        archive: &Arc<Archive>,
        job: &decoder::Job,
        seek: Option<(File, PathBuf)>,
    ) {
        let (seek_file, seek_part) = seek.unzip();
        let writer = seek_file.map(seek_file::Writer::new);
        let (mut result, writer) = match decoder::run(entry, archive, job, writer) {
            Ok(writer) => (Ok(()), writer),
            Err(stop) => (Err(stop), None),
        };
        if result.is_ok() && entry.window.is_some() {
            // Its file has holes: never published as complete. Sparse from now on.
            if self.keep_seek(entry, job, writer, seek_part)
                && self.make_sparse(entry, archive, job)
            {
                return;
            }
            result = Err(decoder::Stop::Failed {
                cause: "cannot keep the seek index of a member larger than the cache".into(),
                errno: libc::EIO,
            });
        } else if result.is_ok() {
            // Verified: counted, then readers may have the rest (so a reader that has every
            // byte sees the count). The sync that makes the file safe to adopt after a power
            // loss is the slow part (~1 s per GiB here), so it comes after.
            self.stats.decoded.fetch_add(1, Ordering::Relaxed);
            self.stats
                .decoded_bytes
                .fetch_add(entry.key.size, Ordering::Relaxed);
            entry.publish();
            self.keep_seek(entry, job, writer, seek_part);
            if let Err(e) = entry.file().sync_data() {
                log::warn!(
                    "cannot sync the cache file of {}: {}",
                    entry.name,
                    cause(&e)
                );
            }
        } else if let Some(part) = seek_part {
            store::remove(&part);
        }
        let fill = entry.settle(|part| self.finish_file(entry, result, part));
        let remove = {
            let mut st = self.lock();
            let ours = st
                .live
                .get(&entry.key.index)
                .is_some_and(|e| Arc::ptr_eq(e, entry));
            if ours && entry.pins.load(Ordering::SeqCst) == 0 {
                st.live.remove(&entry.key.index);
                self.dispose(&mut st, entry, &fill)
            } else {
                Victims::default()
            }
        };
        remove.apply();
    }

    fn finish_file(
        &self,
        entry: &Entry,
        result: Result<(), decoder::Stop>,
        part: Option<PathBuf>,
    ) -> Fill {
        match (result, part) {
            (Ok(()), Some(part)) => {
                match std::fs::rename(&part, self.store.complete_path(entry.key)) {
                    Ok(()) => Fill::Complete,
                    Err(e) => {
                        store::remove(&part);
                        let cause = format!("cannot finish the cache file: {}", cause(&e));
                        Fill::Failed {
                            cause,
                            errno: libc::EIO,
                        }
                    }
                }
            }
            (Ok(()), None) | (Err(decoder::Stop::Cancelled), None) => Fill::Failed {
                cause: "decoding was cancelled".into(),
                errno: libc::EIO,
            },
            (Err(decoder::Stop::Cancelled), Some(part)) => {
                // Whoever cancelled usually took the file; if not (unmount), it goes here.
                store::remove(&part);
                Fill::Failed {
                    cause: "decoding was cancelled".into(),
                    errno: libc::EIO,
                }
            }
            (Err(decoder::Stop::Failed { cause, errno }), part) => {
                part.iter().for_each(|p| store::remove(p));
                Fill::Failed { cause, errno }
            }
        }
    }
}
