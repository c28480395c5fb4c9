//! One member's slot in the cache: its cache file, who owns the partial file, the open
//! handles pinning it, and where its bytes stand (its fill).
//!
//! The states, and who moves a slot between them:
//!
//! ```text
//!   first pass ──publish──▶ complete ◀──────promote── sparse
//!       │  └─────window done, seek index kept (become_sparse)──▶ ┘
//!       └──settle with an error──▶ failed
//! ```
//!
//! A read never blocks a request thread: a range not decoded yet is parked here, and the
//! thread that writes it (the first pass's writer, or a span's decoder) answers it. Sparse
//! bookkeeping (which spans are in, reads gathering them) lives in `spans.rs`; this file
//! owns the lock that guards it and every write or punch that must not race a read.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};

use super::job::Start;
use super::seek_index::SeekTable;
use super::spans::{DISK_BLOCK, Gather, ReadPlan, SpanBook};
use super::store::FileKey;
use crate::bytes::disk::punch_hole;

/// Which member a slot holds: its archive's id in the mount and its file key.
pub type SlotKey = (u64, FileKey);

/// A member of the mount: (its archive's id in the mount, its member number).
pub type SlotId = (u64, usize);
use crate::bytes::{ReadDone, answer};
use crate::error::{Error, Result};

/// A read parked behind a first pass: `[offset, end)` and who waits for it.
pub type Parked = (u64, u64, ReadDone);

/// Where a member's bytes stand.
enum Fill {
    /// The first pass is decoding it from the start: `[kept_from, decoded)` is in the file.
    FirstPass {
        decoded: u64,
        /// A first pass keeping a window: bytes before this were written and punched again.
        kept_from: u64,
        parked: Vec<Parked>,
    },
    /// The whole member is in the file, verified.
    Complete,
    /// Decoding failed: every read gets this.
    Failed(Error),
    /// Served span by span from its seek index.
    Sparse(SpanBook),
}

/// How far a member is in the cache (`user.npzfs.state`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Not there (or its first pass failed).
    Absent,
    /// Its first pass runs: decoding, or copying a stored member (`-o materialize`).
    Filling,
    /// Served span by span from seek points, some spans absent.
    Sparse,
    /// Whole and verified.
    Complete,
}

/// What a sparse member is decoded from.
pub struct Sparse {
    /// The member's seek points.
    pub table: SeekTable,
    /// Where the member's compressed bytes start in the archive (resolved by the first span
    /// fill that needs it), and how many there are.
    pub start: Start,
}

/// What a read found in a slot.
#[derive(Debug, PartialEq, Eq)]
pub enum Found {
    /// Its bytes were there: answered now (a hit).
    Present,
    /// It waits for them (a miss); these spans of a sparse member must be started for it.
    Waits(Vec<usize>),
    /// The member failed: answered with the error.
    Failed,
}

impl Found {
    /// The spans to start decoding.
    pub fn spans(self) -> Vec<usize> {
        match self {
            Found::Waits(spans) => spans,
            _ => Vec::new(),
        }
    }
}

/// A member in the cache.
pub struct Slot {
    /// The id in the mount of the archive the member belongs to.
    pub archive_id: u64,
    /// Which member, for names and accounting.
    pub key: FileKey,
    /// The member's name, for messages.
    pub name: String,
    file: File,
    /// The partial file's path until it is settled: renamed complete, or deleted. Whoever
    /// takes it settles it (the first pass, an eviction, the last release of a member too
    /// large to keep).
    part: Mutex<Option<PathBuf>>,
    fill: Mutex<Fill>,
    /// Open handles on this member; it is never evicted whole while this is non-zero.
    pub pins: AtomicUsize,
    cancelled: AtomicBool,
    /// Sparse members: where their spans are decoded from (set once, when the member
    /// becomes sparse; read without the lock).
    sparse: OnceLock<Sparse>,
    /// A first pass of a member larger than the cache keeps only its last this many bytes
    /// in the file; reads behind them wait until it is sparse.
    pub window: Option<u64>,
    /// A stored member being copied (`-o materialize`): when a reader last read it from the
    /// archive, in milliseconds since the slot was made (0: never).
    last_read: AtomicU64,
    made: std::time::Instant,
}

impl Slot {
    /// A member whose first pass is about to start, writing `file` (at `part`).
    pub fn first_pass(
        (archive, key): SlotKey,
        name: String,
        file: File,
        part: PathBuf,
        window: Option<u64>,
    ) -> Slot {
        let fill = Fill::FirstPass {
            decoded: 0,
            kept_from: 0,
            parked: Vec::new(),
        };
        let mut slot = Slot::new((archive, key), name, file, Some(part), fill);
        slot.window = window;
        slot
    }

    /// A complete, verified file from an earlier decode.
    pub fn complete(key: SlotKey, name: String, file: File) -> Slot {
        Slot::new(key, name, file, None, Fill::Complete)
    }

    /// A member served span by span from `sparse`, its (empty) cache file `file` at `part`.
    pub fn sparse(key: SlotKey, name: String, file: File, part: PathBuf, sparse: Sparse) -> Slot {
        let book = SpanBook::empty(sparse.table.layout());
        let slot = Slot::new(key, name, file, Some(part), Fill::Sparse(book));
        let _ = slot.sparse.set(sparse);
        slot
    }

    fn new(
        (archive, key): SlotKey,
        name: String,
        file: File,
        part: Option<PathBuf>,
        fill: Fill,
    ) -> Slot {
        Slot {
            archive_id: archive,
            key,
            name,
            file,
            part: Mutex::new(part),
            fill: Mutex::new(fill),
            pins: AtomicUsize::new(0),
            cancelled: AtomicBool::new(false),
            sparse: OnceLock::new(),
            window: None,
            last_read: AtomicU64::new(0),
            made: std::time::Instant::now(),
        }
    }

    /// The member's id in the mount's ledger.
    pub fn id(&self) -> SlotId {
        (self.archive_id, self.key.number)
    }

    /// A reader read the member meanwhile (from the archive, while it is copied).
    pub fn note_read(&self) {
        let ms = self.made.elapsed().as_millis().max(1);
        self.last_read
            .store(u64::try_from(ms).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// Whether a reader read the member within the last `ms` milliseconds.
    pub fn read_within(&self, ms: u64) -> bool {
        let last = self.last_read.load(Ordering::Relaxed);
        let now = u64::try_from(self.made.elapsed().as_millis()).unwrap_or(u64::MAX);
        last != 0 && now.saturating_sub(last) < ms
    }

    fn lock(&self) -> MutexGuard<'_, Fill> {
        // A poisoned lock only means a panic elsewhere; the state itself is always consistent.
        self.fill.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn part(&self) -> MutexGuard<'_, Option<PathBuf>> {
        self.part.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cache file.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Where a sparse member's spans are decoded from.
    pub fn source(&self) -> Option<&Sparse> {
        self.sparse.get()
    }

    /// Where span `i` lies in the member (sparse members).
    pub fn span(&self, i: usize) -> (u64, u64) {
        self.sparse.get().map_or((0, 0), |s| s.table.span(i))
    }

    /// Whether the whole member is in the file, verified.
    pub fn is_complete(&self) -> bool {
        matches!(*self.lock(), Fill::Complete)
    }

    /// How far the member is in its cache file now.
    pub fn phase(&self) -> Phase {
        match &*self.lock() {
            Fill::FirstPass { .. } => Phase::Filling,
            Fill::Sparse(_) => Phase::Sparse,
            Fill::Complete => Phase::Complete,
            Fill::Failed(_) => Phase::Absent,
        }
    }

    /// Whether the member is served span by span (until every span is in).
    pub fn is_sparse(&self) -> bool {
        matches!(*self.lock(), Fill::Sparse(_))
    }

    /// Bytes of the member in its cache file now, verified or about to be (a first pass's
    /// decoded range, a sparse member's present spans).
    pub fn bytes_present(&self) -> u64 {
        match &*self.lock() {
            Fill::Complete => self.key.size,
            Fill::FirstPass {
                decoded, kept_from, ..
            } => decoded.saturating_sub(*kept_from),
            Fill::Failed(_) => 0,
            Fill::Sparse(book) => book.present_bytes(),
        }
    }

    /// The bytes the budget charges for this member while it is live: its size, its window
    /// during a windowed first pass, nothing as a sparse member (its spans are charged).
    pub fn charge(&self) -> u64 {
        if self.is_sparse() {
            0
        } else if self.is_complete() {
            self.key.size
        } else {
            self.window.unwrap_or(self.key.size).min(self.key.size)
        }
    }

    /// Takes the partial file's path: whoever gets it settles the file.
    pub fn take_part(&self) -> Option<PathBuf> {
        self.part().take()
    }

    /// Whether the partial file is still unsettled.
    pub fn has_part(&self) -> bool {
        self.part().is_some()
    }

    /// Asks the decoder to stop (the last holder went away).
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::Relaxed);
    }

    /// Whether the decoder should stop.
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
    }

    /// Reads `[offset, end)`: now if its bytes are in the file, else once they are. Says
    /// which (a hit or a miss), and for a sparse member the spans the caller must start
    /// decoding for it.
    #[must_use]
    pub fn read(&self, offset: u64, end: u64, done: ReadDone) -> Found {
        let mut fill = self.lock();
        let now = match &mut *fill {
            Fill::Complete => Ok(()),
            Fill::FirstPass {
                decoded,
                kept_from,
                parked,
            } => {
                if *decoded < end || offset < *kept_from {
                    parked.push((offset, end, done));
                    return Found::Waits(Vec::new());
                }
                if self.window.is_some() {
                    // Copied under the lock: `trim` cannot punch under this read.
                    let bytes = self.pread(offset, end);
                    drop(fill);
                    answer(done, bytes);
                    return Found::Present;
                }
                Ok(())
            }
            Fill::Failed(e) => Err(e.clone()),
            Fill::Sparse(book) => {
                return match book.read(&self.file, &self.name, (offset, end), done) {
                    ReadPlan::Parked(start) => Found::Waits(start),
                    ReadPlan::Now(done, bytes) => {
                        drop(fill);
                        answer(done, bytes);
                        Found::Present
                    }
                };
            }
        };
        drop(fill);
        match now {
            Ok(()) => {
                answer(done, self.pread(offset, end));
                Found::Present
            }
            Err(e) => {
                done(Err(e));
                Found::Failed
            }
        }
    }

    // The first pass.

    /// The writer holds the decoded bytes `chunk` of `[offset, offset + len)` and is about
    /// to write them: answer the parked reads that lie inside it straight from the chunk.
    /// They get their bytes a write earlier, and without a copy through the cache file.
    pub fn answer_from(&self, offset: u64, chunk: &[u8]) {
        let end = offset + chunk.len() as u64;
        let ready = self.unpark(|o, e| o >= offset && e <= end);
        for (o, e, done) in ready {
            match chunk.get((o - offset) as usize..(e - offset) as usize) {
                Some(bytes) => done(Ok(bytes)),
                None => answer(done, self.pread(o, e)),
            }
        }
    }

    /// The first pass has written `[0, decoded)`: answer the parked reads that fit.
    pub fn advance(&self, to: u64) {
        let ready = {
            let mut fill = self.lock();
            let Fill::FirstPass {
                decoded,
                kept_from,
                parked,
            } = &mut *fill
            else {
                return;
            };
            *decoded = to;
            let kept = *kept_from;
            take_where(parked, |o, e| e <= to && o >= kept)
        };
        for (o, e, done) in ready {
            answer(done, self.pread(o, e));
        }
    }

    fn unpark(&self, which: impl Fn(u64, u64) -> bool) -> Vec<Parked> {
        match &mut *self.lock() {
            Fill::FirstPass { parked, .. } => take_where(parked, which),
            _ => Vec::new(),
        }
    }

    /// A windowed first pass wrote everything up to `to` it need keep: frees what lies
    /// before. Under the slot's lock, as reads of a windowed member copy under it: a punch
    /// never lands under a read.
    pub fn trim(&self, to: u64) -> std::io::Result<()> {
        let mut fill = self.lock();
        let Fill::FirstPass { kept_from, .. } = &mut *fill else {
            return Ok(());
        };
        if to <= *kept_from {
            return Ok(());
        }
        // Everything before `kept_from` is gone already: the block it starts in goes whole.
        let from = std::mem::replace(kept_from, to);
        punch_hole(&self.file, from / DISK_BLOCK * DISK_BLOCK, to)
    }

    /// Every byte is written and verified: the member is complete and every parked read is
    /// answered, before the file is settled (synced and renamed).
    pub fn publish(&self) {
        self.finish(Fill::Complete);
    }

    /// Settles the partial file: `f` gets its path (unless someone else took it) and says how
    /// the member ended, both under the part lock. Returns true if complete.
    pub fn settle(&self, f: impl FnOnce(Option<PathBuf>) -> Result<()>) -> bool {
        let mut part = self.part();
        let outcome = f(part.take());
        let complete = outcome.is_ok();
        self.finish(match outcome {
            Ok(()) => Fill::Complete,
            Err(e) => Fill::Failed(e),
        });
        drop(part);
        complete
    }

    /// Ends the first pass in `end` (complete, or failed), answering every parked read. A
    /// member that went sparse meanwhile stays sparse.
    fn finish(&self, end: Fill) {
        let (parked, failed) = {
            let mut fill = self.lock();
            if matches!(*fill, Fill::Sparse(_)) {
                return;
            }
            let failed = match &end {
                Fill::Failed(e) => Some(e.clone()),
                _ => None,
            };
            match std::mem::replace(&mut *fill, end) {
                Fill::FirstPass { parked, .. } => (parked, failed),
                _ => (Vec::new(), failed),
            }
        };
        for (o, e, done) in parked {
            match &failed {
                Some(err) => done(Err(err.clone())),
                None => answer(done, self.pread(o, e)),
            }
        }
    }

    /// A windowed first pass is done and its seek index saved: the member becomes sparse,
    /// the spans its window still holds present. Returns the reads still parked (those behind
    /// the window), to be asked again, and the present spans with their charges. The head of
    /// the window (part of a span no one accounts for) is punched under the lock: no span can
    /// start filling into it meanwhile.
    pub fn become_sparse(&self, sparse: Sparse) -> (Vec<Parked>, Vec<(usize, u64)>) {
        let layout = sparse.table.layout();
        let mut fill = self.lock();
        let Fill::FirstPass {
            kept_from, parked, ..
        } = &mut *fill
        else {
            return (Vec::new(), Vec::new());
        };
        let kept = *kept_from;
        let late = std::mem::take(parked);
        let (book, present) = SpanBook::from_window(layout.clone(), kept);
        let head_end = present
            .first()
            .map_or(self.key.size.next_multiple_of(DISK_BLOCK), |&(i, _)| {
                layout.span(i).0 / DISK_BLOCK * DISK_BLOCK
            });
        if let Err(e) = punch_hole(&self.file, kept / DISK_BLOCK * DISK_BLOCK, head_end) {
            log::debug!("cannot free the head of the window of {}: {e}", self.name);
        }
        let _ = self.sparse.set(sparse);
        *fill = Fill::Sparse(book);
        (late, present)
    }

    // Sparse members.

    /// Span `i` (`bytes`) is verified and written: hands each gathering read its part, runs
    /// `settle` (which makes room in the budget, so the reads answered next see the cache
    /// within it), then answers the reads that have everything now. They hold their bytes
    /// already, so `settle` may even evict span `i`.
    pub fn span_filled(&self, i: usize, bytes: &[u8], settle: impl FnOnce()) {
        let ready = match &mut *self.lock() {
            Fill::Sparse(book) => book.filled(i, bytes),
            _ => Vec::new(),
        };
        settle();
        ready.into_iter().for_each(Gather::answer);
    }

    /// Span `i` could not be decoded: the reads that need it fail with `err`.
    pub fn span_failed(&self, i: usize, err: &Error) {
        let failed = match &mut *self.lock() {
            Fill::Sparse(book) => book.failed(i),
            _ => Vec::new(),
        };
        failed.into_iter().for_each(|g| g.fail(err.clone()));
    }

    /// Marks span `i` absent if it is present; true if it was (its hole is to be punched).
    pub fn evict_span(&self, i: usize) -> bool {
        match &mut *self.lock() {
            Fill::Sparse(book) => book.evict(i),
            _ => false,
        }
    }

    /// Frees the disk space of evicted span `i`, unless it is being filled again already.
    /// Under the slot's lock, so that a new fill (which marks the span filling under it
    /// first) never writes before the hole is punched: else the punch could land on fresh
    /// bytes and a reader would get zeros.
    pub fn punch(&self, i: usize) -> std::io::Result<()> {
        let fill = self.lock();
        let hole = match &*fill {
            Fill::Sparse(book) => book.hole(i),
            _ => None,
        };
        match hole {
            Some((from, to)) => punch_hole(&self.file, from, to),
            None => Ok(()),
        }
    }

    /// A sparse member with nothing present or filling and no read waiting.
    pub fn idle(&self) -> bool {
        match &*self.lock() {
            Fill::Sparse(book) => book.idle(),
            _ => false,
        }
    }

    /// If every span is present, the member is complete: it becomes an ordinary complete
    /// member. Returns the span count if it did.
    pub fn promote_if_full(&self) -> Option<usize> {
        let mut fill = self.lock();
        let spans = match &*fill {
            Fill::Sparse(book) if book.full() => book.len(),
            _ => return None,
        };
        *fill = Fill::Complete;
        Some(spans)
    }

    fn pread(&self, offset: u64, end: u64) -> Result<Vec<u8>> {
        // Members are always read in full ranges that are written, so a short read means the
        // cache file was damaged under us (deleted cache directory, full disk).
        let len = usize::try_from(end.saturating_sub(offset)).unwrap_or(0);
        let mut buf = vec![0u8; len];
        self.file
            .read_exact_at(&mut buf, offset)
            .map_err(|e| Error::io("read", format!("the cache file of {}", self.name), e))?;
        Ok(buf)
    }
}

/// Takes the parked reads `which` accepts out of `parked`.
fn take_where(parked: &mut Vec<Parked>, which: impl Fn(u64, u64) -> bool) -> Vec<Parked> {
    let (ready, waiting) = std::mem::take(parked)
        .into_iter()
        .partition(|(o, e, _)| which(*o, *e));
    *parked = waiting;
    ready
}

#[cfg(test)]
mod tests;
