//! One archive's part of the mount's cache ([`ArchiveCache`]): what the filesystem core asks
//! of it. Opening a compressed member pins it (joining its live slot, reusing its kept file,
//! or starting its decoding); reads go to its slot; the last release files it.

use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, MutexGuard};

use super::job::Start;
use super::ledger::{Ledger, Victims};
use super::pool::Shared;
use super::slot::{Phase, Slot, SlotId, Sparse};
use super::store::{self, FileKey};
use super::{first_pass, span_fill};
use crate::bytes::Archive;
use crate::bytes::ReadDone;
use crate::error::{Error, Result, cause};
use crate::zipfile::inflate;
use crate::zipfile::{Member, Method};

/// One archive's part of the mount's cache: what the filesystem core asks of it.
pub struct ArchiveCache {
    shared: Arc<Shared>,
    archive: Arc<Archive>,
}

impl ArchiveCache {
    /// The part of the cache `shared` describes, of `archive`.
    pub(super) fn new(shared: Shared, archive: Arc<Archive>) -> ArchiveCache {
        ArchiveCache {
            shared: Arc::new(shared),
            archive,
        }
    }
}

/// What an open found of a member already in the cache.
enum InCache {
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
        let slot = self.lock().live(&self.id(number)).cloned();
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
            InCache::Joined => return Ok(()),
            InCache::Kept => match store.open_complete(key) {
                Ok(file) => {
                    let slot = Slot::complete((store.id, key), member.name.clone(), file);
                    return self.go_live(Arc::new(slot), false);
                }
                Err(e) => {
                    log::warn!("cache file of {} vanished: {}", member.name, cause(&e));
                    self.lock().refund(key.size);
                }
            },
            InCache::Nothing => {}
        }
        // Where its bytes start: read now from a local archive (a damaged local header fails
        // the open), by the decoding thread from one whose reads may wait on the network.
        if !self.archive.reads_wait() {
            member.data_start(&self.archive)?;
        }
        let start = Start::of(member);
        let (file, part) = store
            .create_part(key)
            .map_err(|e| Error::io("create", format!("a cache file for {}", member.name), e))?;
        match span_fill::seek_table(store, key, member) {
            Some(table) => {
                let sparse = Sparse { table, start };
                log::debug!("{}: served span by span from its seek index", member.name);
                let slot = Slot::sparse((store.id, key), member.name.clone(), file, part, sparse);
                self.go_live(Arc::new(slot), true)
            }
            None => self.start_first_pass(key, member, start, (file, part)),
        }
    }

    /// What the cache has of `key` already; a live slot is pinned on the spot.
    fn find(&self, key: FileKey) -> InCache {
        let id = self.id(key.number);
        let mut ledger = self.lock();
        if let Some(slot) = ledger.live(&id) {
            slot.pins.fetch_add(1, Ordering::SeqCst);
            return InCache::Joined;
        }
        match ledger.take_kept(id) {
            Some(_) => InCache::Kept,
            None => InCache::Nothing,
        }
    }

    /// A member with no seek index: a first pass decodes it from the start, keeping a window
    /// of half the budget if the member is larger than the whole cache (it is served sparse
    /// once its seek index is saved).
    fn start_first_pass(
        &self,
        key: FileKey,
        member: &Member,
        start: Start,
        (file, part): (File, PathBuf),
    ) -> Result<()> {
        // Seek points pay off from two spans on; a smaller member is decoded whole anyway
        // (and an archive of 10^5 small members gets no 10^5 index files).
        let seekable = member.method == Method::Deflated && member.size > 2 * inflate::SPAN;
        let seek = seekable
            .then(|| self.shared.store.create_seek(key).ok())
            .flatten();
        let budget = self.lock().budget();
        let window = (seek.is_some() && member.size > budget).then_some(budget / 2);
        let slot = Arc::new(Slot::first_pass(
            (self.shared.store.id, key),
            member.name.clone(),
            file,
            part,
            window,
        ));
        self.go_live(slot.clone(), true)?;
        if slot.pins.load(Ordering::SeqCst) == 0 {
            // Another open won the race; ours was discarded.
            if let Some((_, part)) = seek {
                store::remove(&part);
            }
            return Ok(());
        }
        if let Err(e) = first_pass::spawn(&self.shared, &slot, &self.archive, start, seek) {
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
    fn go_live(&self, slot: Arc<Slot>, new: bool) -> Result<()> {
        let id = slot.id();
        let (victims, lost) = {
            let mut ledger = self.lock();
            if let Some(existing) = ledger.live(&id) {
                existing.pins.fetch_add(1, Ordering::SeqCst);
                if !new {
                    // The reused file was charged while kept, and pending since.
                    ledger.refund(slot.key.size);
                }
                (Victims::default(), true)
            } else {
                slot.pins.store(1, Ordering::SeqCst);
                (ledger.go_live(slot.clone(), new), false)
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
            let Some(slot) = ledger.live(&self.id(number)).cloned() else {
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
            let too_big = slot.key.size > ledger.budget();
            if too_big && let Some(part) = slot.take_part() {
                ledger.drop_live(&slot);
                slot.cancel();
                victims.files.push(part);
                log::debug!(
                    "{} is larger than the cache: dropped on last close",
                    slot.name
                );
            } else if !slot.has_part() {
                let complete = slot.is_complete();
                victims = ledger.dispose(&slot, complete);
            }
        }
        victims.apply();
    }

    /// Reads `[offset, end)` of open member `number` and calls `done` with the bytes.
    pub fn read(&self, number: usize, offset: u64, end: u64, done: ReadDone) {
        let slot = self.lock().live(&self.id(number)).cloned();
        match slot {
            Some(slot) => {
                // A sparse member's read may need spans decoded: the slot says which.
                let found = slot.read(offset, end, done);
                self.shared.stats().count_read(&found);
                span_fill::start(&self.shared, &slot, &self.archive, found.spans());
            }
            None => done(Err(Error::Corrupt {
                what: format!("member {number}"),
                cause: "read without an open handle".into(),
            })),
        }
    }

    /// How far member `number` is in the cache now (`user.npzfs.state`).
    pub fn phase(&self, number: usize) -> Phase {
        let ledger = self.lock();
        let id = self.id(number);
        match (ledger.live(&id), ledger.kept_size(id)) {
            (Some(slot), _) => slot.phase(),
            (None, Some(_)) => Phase::Complete,
            (None, None) => Phase::Absent,
        }
    }

    /// The complete, verified cache file of member `number` (`member`), when it has one now:
    /// once its own first pass has renamed it complete (another process may have put a file
    /// of the same name there before: ours replaces it).
    pub fn complete_file(&self, number: usize, member: &Member) -> Option<PathBuf> {
        let path = self.shared.store.complete_path(FileKey::of(number, member));
        let renamed = {
            let ledger = self.lock();
            match ledger.live(&self.id(number)) {
                Some(slot) => slot.phase() == Phase::Complete && !slot.has_part(),
                None => ledger.kept_size(self.id(number)).is_some(),
            }
        };
        (renamed && path.exists()).then_some(path)
    }

    /// Stored member `number` (`member`) copied into the cache by `write` (which fills the
    /// file it is given, checked), outside any slot: synced, locked (a shared flock, so that
    /// no evictor takes it from whoever maps it), named complete and kept. An earlier copy is
    /// taken as it is.
    pub fn copy_in(
        &self,
        number: usize,
        member: &Member,
        write: impl FnOnce(&File) -> Result<()>,
    ) -> Result<(PathBuf, File)> {
        let key = FileKey::of(number, member);
        let path = self.shared.store.complete_path(key);
        let locked = |file: File| -> Result<File> {
            rustix::fs::flock(&file, rustix::fs::FlockOperation::LockShared)
                .map_err(|e| Error::io("lock", path.display().to_string(), e.into()))?;
            Ok(file)
        };
        if self.lock().kept_size(self.id(number)).is_some()
            && let Ok(file) = File::open(&path)
        {
            return Ok((path.clone(), locked(file)?));
        }
        let io = |verb, e| Error::io(verb, format!("the copy of {}", member.name), e);
        let (file, part) = self
            .shared
            .store
            .create_part(key)
            .map_err(|e| io("create", e))?;
        let made = write(&file)
            .and_then(|()| file.sync_data().map_err(|e| io("sync", e)))
            .and_then(|()| locked(file))
            .and_then(|file| {
                std::fs::rename(&part, &path).map_err(|e| io("name", e))?;
                Ok(file)
            });
        let file = match made {
            Ok(file) => file,
            Err(e) => {
                store::remove(&part);
                return Err(e);
            }
        };
        let victims = self.lock().keep_made(self.id(number), key);
        victims.apply();
        Ok((path, file))
    }

    /// Decoded bytes of member `number` in the cache now (`user.npzfs.cached`).
    pub fn cached_bytes(&self, number: usize) -> u64 {
        let ledger = self.lock();
        let id = self.id(number);
        match (ledger.live(&id), ledger.kept_size(id)) {
            (Some(slot), _) => slot.bytes_present(),
            (None, Some(size)) => size,
            (None, None) => 0,
        }
    }

    /// A stored member being copied was read from the archive (its copy yields to readers).
    /// On the stored read path, so it never waits for the cache lock: a note missed while the
    /// lock is busy only means the copy does not yield for that one read.
    pub fn note_read(&self, number: usize) {
        let Some(ledger) = self.shared.pool.try_lock() else {
            return;
        };
        if let Some(slot) = ledger.live(&self.id(number)) {
            slot.note_read();
        }
    }

    /// The byte budget.
    pub fn budget(&self) -> u64 {
        self.lock().budget()
    }
}
