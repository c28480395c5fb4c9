//! The cache's books, under the cache lock: which members (of every archive of the mount) are
//! live (held, or still being decoded), which complete files are kept for reuse, which spans of
//! sparse members and which blocks of remote archives are present, and what all of it costs
//! against the byte budget; and what to evict when room is needed.
//!
//! Every byte is charged, refunded and evicted here and nowhere else: the fields are private,
//! and each change of the books is one method. Bytes charged for what is not filed yet (a span
//! or blocks being written, a kept file being opened again) are *pending*; at any moment
//! `used` is the sum of what is filed plus what is pending ([`Ledger::counted`]), which debug
//! builds check after every change.
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

use super::slot::{Slot, SlotId};
use super::stats::{Held, Stats};
use super::store::{self, FileKey, Store, remove};
use crate::bytes::{Blocks, SetId};

/// The books of one mount's cache, every archive of the mount in one budget and one LRU.
pub struct Ledger {
    /// The byte budget (`cache_size`).
    budget: u64,
    /// Bytes of every member in `live` and `kept`, every span in `spans`, every block in
    /// `blocks`, and `pending`.
    used: u64,
    /// Bytes charged for what is not filed yet.
    pending: u64,
    /// Members with an open cache file: held open, or still decoding (then possibly unheld).
    live: HashMap<SlotId, Arc<Slot>>,
    /// Complete files on disk that no one holds, least recently used first out.
    kept: LruCache<SlotId, FileKey>,
    /// Spans of sparse members in their cache files, least recently filled first out:
    /// (member, span) -> bytes charged.
    spans: LruCache<(SlotId, usize), u64>,
    /// Members whose complete file an earlier mount left, not yet opened (for the stats).
    adopted: HashSet<SlotId>,
    /// Each archive's directory in the cache, by archive id: where kept files are deleted.
    stores: HashMap<u64, Arc<Store>>,
    /// Blocks of remote archives on disk, least recently fetched first out:
    /// (block set, block) -> bytes charged.
    blocks: LruCache<(SetId, u64), u64>,
    /// The block set of each remote archive (or object) in use, by archive id.
    block_sets: HashMap<u64, (SetId, Weak<Blocks>)>,
    /// Archives whose store was scanned for an earlier mount's complete files.
    scanned: HashSet<u64>,
    stats: Arc<Stats>,
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
    /// Empty books for `budget` bytes, counting evictions in `stats`.
    pub fn new(budget: u64, stats: Arc<Stats>) -> Ledger {
        Ledger {
            budget,
            used: 0,
            pending: 0,
            live: HashMap::new(),
            kept: LruCache::unbounded(),
            spans: LruCache::unbounded(),
            adopted: HashSet::new(),
            stores: HashMap::new(),
            blocks: LruCache::unbounded(),
            block_sets: HashMap::new(),
            scanned: HashSet::new(),
            stats,
        }
    }

    /// The byte budget.
    pub fn budget(&self) -> u64 {
        self.budget
    }

    /// Bytes charged now.
    #[cfg(test)]
    pub fn used(&self) -> u64 {
        self.used
    }

    /// What the books hold now, for the metrics.
    pub fn held(&self) -> Held {
        let count = |n: usize| n as u64;
        Held {
            budget: self.budget,
            used: self.used,
            live: count(self.live.len()),
            pinned: count(
                self.live
                    .values()
                    .filter(|s| s.pins.load(Ordering::Relaxed) > 0)
                    .count(),
            ),
            kept: count(self.kept.len()),
            spans: count(self.spans.len()),
            blocks: count(self.blocks.len()),
        }
    }

    // Charging and refunding.

    /// Makes room for `len` bytes about to be written (evicting what must go) and charges
    /// them as pending, until they are filed ([`Ledger::file_span`], [`Ledger::file_blocks`])
    /// or refunded.
    pub fn charge(&mut self, len: u64) -> Victims {
        let victims = self.evict(len);
        self.used += len;
        self.pending += len;
        self.check();
        victims
    }

    /// Gives back `len` pending bytes that will not be filed.
    pub fn refund(&mut self, len: u64) {
        self.take_pending(len);
        self.used -= len;
        self.check();
    }

    /// Evicts until the books are within the budget again (after something was filed).
    pub fn trim(&mut self) -> Victims {
        let victims = self.evict(0);
        self.check();
        victims
    }

    fn take_pending(&mut self, len: u64) {
        debug_assert!(self.pending >= len, "{len} filed, {} pending", self.pending);
        self.pending -= len.min(self.pending);
    }

    // Members.

    /// The live slot of member `id`.
    pub fn live(&self, id: &SlotId) -> Option<&Arc<Slot>> {
        self.live.get(id)
    }

    /// Every live slot.
    pub fn live_slots(&self) -> impl Iterator<Item = &Arc<Slot>> {
        self.live.values()
    }

    /// Whether `slot` is the live one of its member (not one an eviction or a release has
    /// let go of meanwhile).
    pub fn is_live(&self, slot: &Arc<Slot>) -> bool {
        self.live
            .get(&slot.id())
            .is_some_and(|s| Arc::ptr_eq(s, slot))
    }

    /// Makes `slot` live. A `new` one is charged (evicting what must go); otherwise it is a
    /// kept file opened again, whose charge is pending since [`Ledger::take_kept`].
    pub fn go_live(&mut self, slot: Arc<Slot>, new: bool) -> Victims {
        let charge = slot.charge();
        let victims = match new {
            true => {
                let victims = self.evict(charge);
                self.used += charge;
                victims
            }
            false => {
                self.take_pending(charge);
                Victims::default()
            }
        };
        self.live.insert(slot.id(), slot);
        self.check();
        victims
    }

    /// Takes `slot` out of the live ones and out of the budget (its file goes elsewhere: it
    /// is deleted, or was never more than partial).
    pub fn drop_live(&mut self, slot: &Slot) {
        if self.live.remove(&slot.id()).is_some() {
            self.used -= slot.charge();
        }
        self.check();
    }

    /// Files live `slot`, no one holding it any more and its decoding settled: a complete one
    /// that fits is kept for reuse, anything else leaves the budget.
    pub fn dispose(&mut self, slot: &Slot, complete: bool) -> Victims {
        if self.live.remove(&slot.id()).is_none() {
            return Victims::default();
        }
        let victims = match complete {
            true if slot.key.size <= self.budget => {
                self.kept.put(slot.id(), slot.key);
                self.evict(0)
            }
            true => {
                self.used -= slot.key.size;
                log::debug!(
                    "{} is larger than the cache: deleted on last close",
                    slot.name
                );
                Victims {
                    files: self
                        .complete_path(slot.id().0, slot.key)
                        .into_iter()
                        .collect(),
                    ..Victims::default()
                }
            }
            false => {
                self.used -= slot.charge();
                Victims::default()
            }
        };
        self.check();
        victims
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
        self.check();
    }

    // Complete files kept for reuse.

    /// Keeps a complete file an earlier mount left, charged, for reuse.
    pub fn keep_found(&mut self, id: SlotId, key: FileKey) {
        self.kept.put(id, key);
        self.used += key.size;
        self.adopted.insert(id);
        self.check();
    }

    /// A complete file made outside any slot (a stored member copied by `npzfs extract
    /// --into-cache`, which holds a flock on it): kept, charged, and room made for it.
    pub fn keep_made(&mut self, id: SlotId, key: FileKey) -> Victims {
        self.kept.put(id, key);
        self.used += key.size;
        let victims = self.evict(0);
        self.check();
        victims
    }

    /// Takes member `id`'s kept file out of the LRU to be opened again (its charge pending
    /// until [`Ledger::go_live`], or a [`Ledger::refund`] if it cannot be opened).
    pub fn take_kept(&mut self, id: SlotId) -> Option<FileKey> {
        if self.adopted.remove(&id) {
            self.stats.reused.fetch_add(1, Ordering::Relaxed);
        }
        let key = self.kept.pop(&id)?;
        self.pending += key.size;
        self.check();
        Some(key)
    }

    /// The size of member `id`'s kept file, if it has one.
    pub fn kept_size(&self, id: SlotId) -> Option<u64> {
        self.kept.peek(&id).map(|k| k.size)
    }

    // Spans of sparse members.

    /// Files span `i` of `id`, charged by [`Ledger::charge`], as present and evictable.
    pub fn file_span(&mut self, id: SlotId, i: usize, len: u64) -> Victims {
        self.take_pending(len);
        self.spans.put((id, i), len);
        self.trim()
    }

    /// A windowed first pass became sparse: its window's charge goes, the spans it left
    /// present are charged and filed instead.
    pub fn window_to_spans(
        &mut self,
        id: SlotId,
        window: u64,
        present: &[(usize, u64)],
    ) -> Victims {
        self.used -= window;
        for &(i, len) in present {
            self.used += len;
            self.spans.put((id, i), len);
        }
        self.trim()
    }

    /// Sparse member `slot`, whose `spans` are all present, became complete: its spans'
    /// charges make way for its whole size.
    pub fn promote(&mut self, slot: &Slot, spans: usize) {
        for i in 0..spans {
            if let Some(len) = self.spans.pop(&(slot.id(), i)) {
                self.used -= len;
            }
        }
        self.used += slot.key.size;
        self.check();
    }

    // Blocks of remote archives.

    /// The block set in use for archive `archive`, if there is one still alive.
    pub fn block_set(&self, archive: u64) -> Option<Weak<Blocks>> {
        self.block_sets.get(&archive).map(|(_, w)| w.clone())
    }

    /// Every block set filed.
    pub fn block_sets(&self) -> Vec<Weak<Blocks>> {
        self.block_sets.values().map(|(_, w)| w.clone()).collect()
    }

    /// Files a new block set of `set.archive_id`, with the `present` blocks (block, bytes) an
    /// earlier mount left, charged.
    pub fn add_block_set(
        &mut self,
        set: SetId,
        blocks: Weak<Blocks>,
        present: &[(u64, u64)],
    ) -> Victims {
        self.block_sets.insert(set.archive_id, (set, blocks));
        for &(k, len) in present {
            self.used += len;
            self.blocks.put((set, k), len);
        }
        self.trim()
    }

    /// Blocks charged by [`Ledger::charge`] landed: `filed` (block, bytes) are present,
    /// `refund` bytes were for blocks not kept.
    pub fn file_blocks(&mut self, set: SetId, filed: &[(u64, u64)], refund: u64) -> Victims {
        self.refund(refund);
        for &(k, len) in filed {
            self.take_pending(len);
            self.blocks.put((set, k), len);
        }
        self.trim()
    }

    /// Block set `set` is going: its `present` blocks leave the books, and the set its place
    /// (unless a set made since for the same archive took it).
    pub fn forget_blocks(&mut self, set: SetId, present: &[u64]) {
        for &k in present {
            if let Some(len) = self.blocks.pop(&(set, k)) {
                self.used -= len;
            }
        }
        if self
            .block_sets
            .get(&set.archive_id)
            .is_some_and(|(s, _)| *s == set)
        {
            self.block_sets.remove(&set.archive_id);
        }
        self.check();
    }

    // Stores.

    /// Archive `id`'s store, if it was opened.
    pub fn store(&self, id: u64) -> Option<&Arc<Store>> {
        self.stores.get(&id)
    }

    /// Files archive `id`'s store, unless another was filed first: returns the one filed.
    pub fn add_store(&mut self, id: u64, store: Arc<Store>) -> Arc<Store> {
        self.stores.entry(id).or_insert(store).clone()
    }

    /// Whether archive `id`'s store was scanned for an earlier mount's files.
    pub fn is_scanned(&self, id: u64) -> bool {
        self.scanned.contains(&id)
    }

    /// Marks archive `id`'s store scanned; false if it already was.
    pub fn mark_scanned(&mut self, id: u64) -> bool {
        self.scanned.insert(id)
    }

    // Eviction.

    /// Evicts until `incoming` more bytes fit, as far as anything can go (see the module
    /// docs for the order).
    fn evict(&mut self, incoming: u64) -> Victims {
        let mut victims = Victims::default();
        while self.used + incoming > self.budget {
            let evicted = self.evict_kept(&mut victims)
                || self.evict_span(&mut victims)
                || self.evict_block(&mut victims)
                || self.evict_unheld(&mut victims);
            if !evicted {
                break;
            }
        }
        victims
    }

    /// The least recently used kept file that no process has mapped: a file some process
    /// maps holds a shared flock for the map's life (`npzfs extract --into-cache`'s users),
    /// and eviction goes on past it.
    fn evict_kept(&mut self, victims: &mut Victims) -> bool {
        let free = self.kept.iter().rev().find_map(|(id, key)| {
            let path = self.complete_path(id.0, *key);
            (!path.as_deref().is_some_and(store::is_mapped)).then_some(*id)
        });
        let Some((id, key)) = free.and_then(|id| self.kept.pop_entry(&id)) else {
            return false;
        };
        self.adopted.remove(&id);
        victims.files.extend(self.complete_path(id.0, key));
        self.count_member(id.1, key.size);
        true
    }

    fn evict_span(&mut self, victims: &mut Victims) -> bool {
        let Some(((id, i), len)) = self.spans.pop_lru() else {
            return false;
        };
        self.used -= len;
        if let Some(slot) = self.live.get(&id).cloned()
            && slot.evict_span(i)
        {
            victims.holes.push((slot.clone(), i));
            if slot.pins.load(Ordering::SeqCst) == 0 {
                self.retire_if_idle(&slot, victims);
            }
        }
        self.stats.evicted_spans.fetch_add(1, Ordering::Relaxed);
        self.stats.evicted_bytes.fetch_add(len, Ordering::Relaxed);
        log::trace!("evicting span {i} of member {} ({len} bytes)", id.1);
        true
    }

    fn evict_block(&mut self, victims: &mut Victims) -> bool {
        let Some(((set, k), len)) = self.blocks.pop_lru() else {
            return false;
        };
        self.used -= len;
        // Punched only out of the set it was charged to (not one made since). Not upgraded
        // otherwise: a set dropped under this lock would deadlock on it.
        let filed = self
            .block_sets
            .get(&set.archive_id)
            .filter(|(s, _)| *s == set);
        if let Some(blocks) = filed.and_then(|(_, w)| w.upgrade()) {
            victims.blocks.push((blocks, k));
        }
        self.stats.evicted_bytes.fetch_add(len, Ordering::Relaxed);
        log::trace!(
            "evicting block {k} of archive {} ({len} bytes)",
            set.archive_id
        );
        true
    }

    fn evict_unheld(&mut self, victims: &mut Victims) -> bool {
        // A live member no open handle holds (its decoder is still running or syncing);
        // sparse members are evicted span by span instead.
        let unheld = self
            .live
            .values()
            .find(|s| s.pins.load(Ordering::SeqCst) == 0 && !s.is_sparse())
            .cloned();
        let Some(slot) = unheld else {
            return false;
        };
        self.live.remove(&slot.id());
        let charged = slot.charge();
        slot.cancel();
        // Whoever takes the partial file settles it: if the decoder got there first, the file
        // already has its complete name.
        match slot.take_part() {
            Some(part) => victims.files.push(part),
            None if slot.is_complete() => {
                victims
                    .files
                    .extend(self.complete_path(slot.id().0, slot.key));
            }
            None => {}
        }
        self.count_member(slot.key.number, charged);
        true
    }

    /// Member `number`, `charged` bytes, was evicted whole.
    fn count_member(&mut self, number: usize, charged: u64) {
        self.used -= charged;
        self.stats.evicted.fetch_add(1, Ordering::Relaxed);
        self.stats
            .evicted_bytes
            .fetch_add(charged, Ordering::Relaxed);
        log::debug!("evicting member {number} ({charged} bytes)");
    }

    /// Where the complete file of `key` in archive `archive` lives.
    pub fn complete_path(&self, archive: u64, key: FileKey) -> Option<PathBuf> {
        self.stores.get(&archive).map(|s| s.complete_path(key))
    }

    // The books' balance.

    /// What the books count, filed and pending: always equal to [`Ledger::used`].
    pub fn counted(&self) -> u64 {
        let live: u64 = self.live.values().map(|s| s.charge()).sum();
        let kept: u64 = self.kept.iter().map(|(_, k)| k.size).sum();
        let spans: u64 = self.spans.iter().map(|(_, len)| len).sum();
        let blocks: u64 = self.blocks.iter().map(|(_, len)| len).sum();
        live + kept + spans + blocks + self.pending
    }

    /// In debug builds (every test), that the books balance after each change.
    fn check(&self) {
        debug_assert_eq!(
            self.used,
            self.counted(),
            "the cache's books do not balance"
        );
    }
}

#[cfg(test)]
mod tests;
