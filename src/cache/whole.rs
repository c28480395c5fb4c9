//! The mount's decompression cache ([`Cache`]): one budget and one LRU for every archive it
//! serves, each archive's directory (store) opened on first use, the complete files an
//! earlier mount left adopted, and what an unmount settles.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use super::archive_cache::ArchiveCache;
use super::config::CacheConfig;
use super::pool::{Pool, Shared};
use super::slot::Slot;
use super::stats::CacheStats;
use super::store::{self, FileKey, Store, Versions};
use crate::bytes::{Archive, Identity};
use crate::error::{Error, Result, cause};
use crate::zipfile::Member;

/// The mount's decompression cache: one budget and one LRU for every archive it serves.
/// Each archive gets its part ([`ArchiveCache`]), a subdirectory of the cache directory
/// keyed by the archive's identity, made the first time it is asked for.
pub struct Cache {
    pub(super) pool: Arc<Pool>,
    config: CacheConfig,
    /// The cache directory the first store was opened in (the chain is tried once).
    dir: Mutex<Option<PathBuf>>,
    versions: Versions,
}

impl Cache {
    /// The cache of a mount, with no archive in it yet (nothing on disk is touched).
    pub fn new(config: &CacheConfig) -> Cache {
        Cache {
            pool: Arc::new(Pool::new(config.size)),
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
        self.adopt_found(&store, members);
        let shared = Shared {
            pool: self.pool.clone(),
            store,
        };
        Ok(ArchiveCache::new(shared, archive.clone()))
    }

    /// The store (directory) of archive `id`, opened the first time it is asked for.
    pub(super) fn store(
        &self,
        path: &std::path::Path,
        identity: Identity,
        id: u64,
    ) -> Result<Arc<Store>> {
        if let Some(store) = self.pool.lock().store(id) {
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
        let store = self.pool.lock().add_store(id, store);
        log::debug!(
            "cache {}: budget {} bytes",
            store.dir().display(),
            self.config.size
        );
        Ok(store)
    }

    /// Files the complete member files an earlier mount left in `store` (once per store):
    /// those that still match `members` are kept for reuse, the rest deleted.
    fn adopt_found(&self, store: &Arc<Store>, members: &[Member]) {
        if self.pool.lock().is_scanned(store.id) {
            return;
        }
        let found = store.scan();
        let id = store.id;
        let victims = {
            let mut ledger = self.pool.lock();
            if !ledger.mark_scanned(id) {
                return;
            }
            for key in found {
                let matches = members
                    .get(key.number)
                    .is_some_and(|m| FileKey::of(key.number, m) == key && m.problem.is_none());
                if matches {
                    ledger.keep_found((id, key.number), key);
                } else {
                    store::remove(&store.complete_path(key));
                }
            }
            ledger.trim()
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
            for s in ledger.live_slots() {
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
        let held = self.pool.lock().held();
        self.pool.stats.read(held)
    }
}
