//! The cache's books, under the cache lock: which members (of every archive of the mount) are live (held, or still being
//! decoded), which complete files are kept for reuse, which spans of sparse members are
//! present, and what all of it costs against the byte budget; and what to evict when room
//! is needed.
//!
//! Eviction order: complete members no one holds (least recently used first), then spans of
//! sparse members (least recently filled first), then blocks of remote archives (least
//! recently fetched first), then members still decoding after their last close (their
//! decoders are cancelled). Members held open are never evicted whole;
//! sparse ones lose spans whether held or not, which is what keeps a member larger than the
//! cache within it. Evicting only decides: files are deleted and holes punched by
//! [`Victims::apply`], after the lock is let go.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use lru::LruCache;

use super::Stats;
use super::blocks::Blocks;
use super::slot::Slot;
use super::store::{FileKey, Store, remove};

/// A member of the mount: (its archive's id in the mount, its member number).
pub type SlotId = (u64, usize);

/// The books of one mount's cache, every archive of the mount in one budget and one LRU.
pub struct Ledger {
    /// The byte budget (`cache_size`).
    pub budget: u64,
    /// Members with an open cache file: held open, or still decoding (then possibly unheld).
    pub live: HashMap<SlotId, Arc<Slot>>,
    /// Complete files on disk that no one holds, least recently used first out.
    pub kept: LruCache<SlotId, FileKey>,
    /// Spans of sparse members in their cache files, least recently filled first out:
    /// (member, span) -> bytes charged.
    pub spans: LruCache<(SlotId, usize), u64>,
    /// Bytes of every member in `live` and `kept`, and of every span in `spans`.
    pub used: u64,
    /// Members whose complete file an earlier mount left, not yet opened (for the stats).
    pub adopted: HashSet<SlotId>,
    /// Each archive's directory in the cache, by archive id: where kept files are deleted.
    pub stores: HashMap<u64, Arc<Store>>,
    /// Blocks of remote archives on disk, least recently fetched first out:
    /// (archive id, block set's serial, block) -> bytes charged.
    pub blocks: LruCache<(u64, u64, u64), u64>,
    /// The block set of each remote archive (or object) in use, by archive id: its serial,
    /// and itself.
    pub block_sets: HashMap<u64, (u64, Weak<Blocks>)>,
    /// Archives whose store was scanned for an earlier mount's complete files.
    pub scanned: HashSet<u64>,
}

/// What an eviction took: files to delete and spans whose holes to punch, once the cache
/// lock is let go.
#[derive(Default)]
#[must_use]
pub struct Victims {
    /// Files to delete.
    pub files: Vec<PathBuf>,
    /// Spans to punch out of their cache files.
    pub holes: Vec<(Arc<Slot>, usize)>,
    /// Blocks of remote archives to punch out of their files.
    pub blocks: Vec<(Arc<Blocks>, u64)>,
}

impl Victims {
    /// Deletes the files and punches the holes, outside the cache lock.
    pub fn apply(self) {
        self.files.iter().for_each(|p| remove(p));
        for (slot, i) in self.holes {
            if let Err(e) = slot.punch(i) {
                // The span is already marked absent; only its disk space stays in use.
                log::debug!("cannot punch span {i} of {}: {e}", slot.name);
            }
        }
        for (blocks, k) in self.blocks {
            blocks.evict(k);
        }
    }
}

impl Ledger {
    /// Empty books for `budget` bytes.
    pub fn new(budget: u64) -> Ledger {
        Ledger {
            budget,
            live: HashMap::new(),
            kept: LruCache::unbounded(),
            spans: LruCache::unbounded(),
            used: 0,
            adopted: HashSet::new(),
            stores: HashMap::new(),
            blocks: LruCache::unbounded(),
            block_sets: HashMap::new(),
            scanned: HashSet::new(),
        }
    }

    /// Whether `slot` is the live one of its member (not one an eviction or a release has
    /// let go of meanwhile).
    pub fn is_live(&self, slot: &Arc<Slot>) -> bool {
        self.live
            .get(&slot.id())
            .is_some_and(|s| Arc::ptr_eq(s, slot))
    }

    /// Evicts until `incoming` more bytes fit, as far as anything can go (see the module
    /// docs for the order).
    pub fn evict(&mut self, incoming: u64, stats: &Stats) -> Victims {
        let mut victims = Victims::default();
        while self.used + incoming > self.budget {
            let (number, charged) = if let Some((id, key)) = self.kept.pop_lru() {
                self.adopted.remove(&id);
                victims.files.extend(self.complete_path(id.0, key));
                (id.1, key.size)
            } else if let Some(((id, i), len)) = self.spans.pop_lru() {
                let number = id.1;
                self.used -= len;
                if let Some(slot) = self.live.get(&id).cloned()
                    && slot.evict_span(i)
                {
                    victims.holes.push((slot.clone(), i));
                    if slot.pins.load(Ordering::SeqCst) == 0 {
                        self.retire_if_idle(&slot, &mut victims);
                    }
                }
                stats.evicted_spans.fetch_add(1, Ordering::Relaxed);
                stats.evicted_bytes.fetch_add(len, Ordering::Relaxed);
                log::trace!("evicting span {i} of member {number} ({len} bytes)");
                continue;
            } else if let Some(((archive, serial, k), len)) = self.blocks.pop_lru() {
                self.used -= len;
                // Punched only out of the set it was charged to (not one made since). Not
                // upgraded otherwise: a set dropped under this lock would deadlock on it.
                let set = self.block_sets.get(&archive).filter(|(s, _)| *s == serial);
                if let Some(blocks) = set.and_then(|(_, w)| w.upgrade()) {
                    victims.blocks.push((blocks, k));
                }
                stats.evicted_bytes.fetch_add(len, Ordering::Relaxed);
                log::trace!("evicting block {k} of archive {archive} ({len} bytes)");
                continue;
            } else if let Some(slot) = self.unheld() {
                self.live.remove(&slot.id());
                let charged = slot.charge();
                slot.cancel();
                // Whoever takes the partial file settles it: if the decoder got there first,
                // the file already has its complete name.
                match slot.take_part() {
                    Some(part) => victims.files.push(part),
                    None if slot.is_complete() => {
                        victims
                            .files
                            .extend(self.complete_path(slot.archive, slot.key));
                    }
                    None => {}
                }
                (slot.key.number, charged)
            } else {
                break;
            };
            self.used -= charged;
            stats.evicted.fetch_add(1, Ordering::Relaxed);
            stats.evicted_bytes.fetch_add(charged, Ordering::Relaxed);
            log::debug!("evicting member {number} ({charged} bytes)");
        }
        victims
    }

    /// Where the complete file of `key` in archive `archive` lives.
    pub fn complete_path(&self, archive: u64, key: FileKey) -> Option<PathBuf> {
        self.stores.get(&archive).map(|s| s.complete_path(key))
    }

    /// A live member no open handle holds (its decoder is still running or syncing); sparse
    /// members are evicted span by span instead.
    fn unheld(&self) -> Option<Arc<Slot>> {
        self.live
            .values()
            .find(|s| s.pins.load(Ordering::SeqCst) == 0 && !s.is_sparse())
            .cloned()
    }

    /// Lets go of a sparse member no one holds once nothing of it is left (its last span
    /// evicted, none filling, no read waiting): its cache file is deleted and its descriptors
    /// closed. A later open starts a new sparse slot from the seek index, which stays.
    pub fn retire_if_idle(&mut self, slot: &Arc<Slot>, victims: &mut Victims) {
        if !slot.idle() {
            return;
        }
        self.live.remove(&slot.id());
        victims.files.extend(slot.take_part());
        log::debug!("{}: no span left, closed", slot.name);
    }

    /// Files a member no one holds any more, whose decoding has settled: a complete one that
    /// fits is kept for reuse, anything else leaves the budget.
    pub fn dispose(&mut self, slot: &Slot, complete: bool, stats: &Stats) -> Victims {
        match complete {
            true if slot.key.size <= self.budget => {
                self.kept.put(slot.id(), slot.key);
                self.evict(0, stats)
            }
            true => {
                self.used -= slot.key.size;
                log::debug!(
                    "{} is larger than the cache: deleted on last close",
                    slot.name
                );
                Victims {
                    files: self
                        .complete_path(slot.archive, slot.key)
                        .into_iter()
                        .collect(),
                    ..Victims::default()
                }
            }
            false => {
                self.used -= slot.charge();
                Victims::default()
            }
        }
    }
}
