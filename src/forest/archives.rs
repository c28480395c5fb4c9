//! The archives of the source trees that are open now: at most `max_archives` of them (a file
//! descriptor and a mapping each, plus their members and tree), least recently used closed
//! first, reopened on demand with their identity checked.
//!
//! An archive is opened on the first lookup or listing inside it, never at mount: a tree of
//! 10^4 shards costs one small entry per shard seen until then. Open handles keep their own
//! archive, so closing one here never breaks a reader; it only lets go of the daemon's copy.
//! An archive that cannot be read (not a ZIP, truncated) is logged once and answers EIO on
//! every access from then on; the rest of the tree is served as before.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use lru::LruCache;

use super::entity::Entity;
use super::ino::{self, MAX_LOCAL};
use super::origin::{Origin, SourceFile};
use super::perms::key_of;
use crate::archive_fs::{ArchiveFs, Placement};
use crate::attr::Shown;
use crate::bytes::Archive;
use crate::cache::Cache;
use crate::error::{Error, Result};
use crate::metrics::METRICS;
use crate::zipfile::members;

/// The open archives, by id.
pub struct Archives {
    open: Mutex<LruCache<u64, Arc<ArchiveFs>>>,
    cache: Arc<Cache>,
    materialize: bool,
}

impl Archives {
    /// At most `max` archives open at once, sharing `cache`.
    pub fn new(max: usize, cache: Arc<Cache>, materialize: bool) -> Archives {
        let max = NonZeroUsize::new(max).unwrap_or(NonZeroUsize::MIN);
        Archives {
            open: Mutex::new(LruCache::new(max)),
            cache,
            materialize,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LruCache<u64, Arc<ArchiveFs>>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The mount's cache.
    pub fn cache(&self) -> &Arc<Cache> {
        &self.cache
    }

    /// How many archives are open now.
    pub fn count(&self) -> usize {
        self.lock().len()
    }

    /// Archive `id` if it is open now (not made more recent, not opened).
    pub fn open_now(&self, id: u64) -> Option<Arc<ArchiveFs>> {
        self.lock().peek(&id).cloned()
    }

    /// Archive `id` (`entity`, in `dir`), opened if it is not, showing `shown`.
    pub fn get(
        &self,
        id: u64,
        entity: &Entity,
        dir: &Origin,
        shown: impl Fn() -> Shown,
    ) -> Result<Arc<ArchiveFs>> {
        if let Some(fs) = self.lock().get(&id) {
            return Ok(fs.clone());
        }
        if let Some(e) = entity.failed.get() {
            return Err(Error::Reported(e.clone()));
        }
        let opened = match self.open(id, entity, dir, shown()) {
            // Out of descriptors: close half of what is open and try once more.
            Err(e) if out_of_files(&e) => {
                let mut open = self.lock();
                let half = open.len() / 2;
                (0..half).for_each(|_| drop(open.pop_lru()));
                drop(open);
                METRICS.archives_closed(half as u64);
                log::info!("out of file descriptors: closed {half} archives");
                self.open(id, entity, dir, shown())
            }
            other => other,
        };
        match opened {
            Ok(fs) => {
                let mut open = self.lock();
                if let Some(raced) = open.get(&id) {
                    return Ok(raced.clone());
                }
                let fs = Arc::new(fs);
                METRICS.archive_opened();
                if open.push(id, fs.clone()).is_some_and(|(old, _)| old != id) {
                    METRICS.archives_closed(1);
                }
                Ok(fs)
            }
            Err(e) if e.is_expected() => Err(e),
            Err(e) => {
                // The first answer is logged where every failure is (one line); later ones
                // answer the same at debug.
                let _ = entity.failed.set(Arc::new(e.clone()));
                Err(e)
            }
        }
    }

    fn open(&self, id: u64, entity: &Entity, dir: &Origin, shown: Shown) -> Result<ArchiveFs> {
        let path = std::path::PathBuf::from(dir.display(&entity.rel));
        let (opened, meta) = dir.open(&entity.rel)?;
        if key_of(&meta, true) != entity.key {
            // Replaced or rewritten since it was looked up: that version is gone; the new
            // one has its own inode numbers (a fresh lookup finds it).
            return Err(Error::NotFound);
        }
        let archive = match opened {
            SourceFile::File(file) => Archive::from_file(file, &path)?,
            SourceFile::Object(object) => {
                Archive::remote(self.cache.blocks(Arc::new(object), id)?)?
            }
        };
        let members = members::read_members(&archive)?;
        let place = Placement {
            id,
            base: ino::ino(id, 0),
            parent: entity.parent,
        };
        let fs = ArchiveFs::new(
            Arc::new(archive),
            members,
            place,
            shown,
            &self.cache,
            self.materialize,
        );
        if fs.nodes() as u64 > MAX_LOCAL {
            return Err(Error::Unsupported {
                what: path.display().to_string(),
                cause: format!(
                    "{} nodes: an archive in a source tree holds at most {MAX_LOCAL} (mount it \
                     on its own)",
                    fs.nodes()
                ),
            });
        }
        log::debug!("opened {} ({} nodes)", path.display(), fs.nodes());
        Ok(fs)
    }
}

fn out_of_files(e: &Error) -> bool {
    matches!(e, Error::SourceIo { cause, .. } if matches!(cause.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)))
}
