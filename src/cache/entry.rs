//! One member's cache file and its fill state: how far the decoder has come, and the reads
//! waiting for it. A read never blocks a request thread: if its range is not decoded yet it is
//! parked here, and the decoder's writer thread answers it once the range is written.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};

use super::seek_file::SeekTable;
use super::store::FileKey;
use crate::error::{Error, Result};

/// A read's continuation: called once, with the bytes or the reason there are none.
pub type ReadDone = Box<dyn for<'a> FnOnce(Result<&'a [u8]>) + Send>;

/// Where a member's decoding stands.
#[derive(Clone, Debug)]
pub enum Fill {
    /// Bytes `[0, decoded)` are in the cache file.
    Decoding { decoded: u64 },
    /// The whole member is in the cache file and its CRC-32 matched.
    Complete,
    /// Decoding failed; every read fails with this cause.
    Failed { cause: String, errno: i32 },
    /// Served span by span from a seek index: each span is decoded from its point when a
    /// read needs it, and may be evicted on its own.
    Sparse,
}

/// A read that waited behind a first pass's window: `(offset, end, done)`, asked again once
/// the member is sparse.
pub type LateRead = (u64, u64, ReadDone);

/// Where one span of a sparse member stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Span {
    /// Not in the cache file.
    Absent,
    /// Being decoded.
    Filling,
    /// In the cache file, verified against its CRC-32.
    Present,
}

/// What a sparse member is decoded from.
pub struct Sparse {
    /// The member's seek points.
    pub table: SeekTable,
    /// Where the member's compressed bytes start in the archive.
    pub data_start: u64,
    /// How many compressed bytes there are.
    pub compressed_size: u64,
}

struct Waiter {
    offset: u64,
    end: u64,
    done: ReadDone,
    /// Sparse members: the bytes gathered so far and the spans still missing. A read
    /// collects each span as it fills, so it never needs all of them resident at once.
    partial: Option<Partial>,
}

struct Partial {
    buf: Vec<u8>,
    need: Vec<usize>,
}

struct State {
    fill: Fill,
    waiters: Vec<Waiter>,
    /// Sparse members: each span's state.
    spans: Vec<Span>,
    /// A first pass keeping a window: bytes before this were written and punched out again.
    kept_from: u64,
}

/// A member being served from the cache.
pub struct Entry {
    /// Which member, for names and accounting.
    pub key: FileKey,
    /// The member's name, for messages.
    pub name: String,
    file: File,
    /// The partial file's path while decoding; taken when the file is renamed into place.
    part: Mutex<Option<PathBuf>>,
    state: Mutex<State>,
    /// Open handles on this member; the entry is never evicted while this is non-zero.
    pub pins: AtomicUsize,
    cancelled: AtomicBool,
    /// Sparse members: where their spans are decoded from (set once, when the member
    /// becomes sparse).
    sparse: OnceLock<Sparse>,
    /// A first pass of a member larger than the cache keeps only its last this many bytes
    /// in the file; reads behind them wait for the seek index (then the member is sparse).
    pub window: Option<u64>,
}

impl Entry {
    /// An entry whose decoder is about to start, writing `file` (at `part`).
    pub fn decoding(
        key: FileKey,
        name: String,
        file: File,
        part: PathBuf,
        window: Option<u64>,
    ) -> Entry {
        let mut entry = Entry::new(key, name, file, Some(part), Fill::Decoding { decoded: 0 });
        entry.window = window;
        entry
    }

    /// An entry for a complete, verified file from an earlier decode.
    pub fn complete(key: FileKey, name: String, file: File) -> Entry {
        Entry::new(key, name, file, None, Fill::Complete)
    }

    /// A member served span by span from `sparse`, its (empty, sparse) cache file `file` at
    /// `part`.
    pub fn new_sparse(
        key: FileKey,
        name: String,
        file: File,
        part: PathBuf,
        sparse: Sparse,
    ) -> Entry {
        let spans = sparse.table.len();
        let entry = Entry::new(key, name, file, Some(part), Fill::Sparse);
        let _ = entry.sparse.set(sparse);
        entry.lock().spans = vec![Span::Absent; spans];
        entry
    }

    fn new(key: FileKey, name: String, file: File, part: Option<PathBuf>, fill: Fill) -> Entry {
        Entry {
            key,
            name,
            file,
            part: Mutex::new(part),
            state: Mutex::new(State {
                fill,
                waiters: Vec::new(),
                spans: Vec::new(),
                kept_from: 0,
            }),
            pins: AtomicUsize::new(0),
            cancelled: AtomicBool::new(false),
            sparse: OnceLock::new(),
            window: None,
        }
    }

    /// Where a sparse member's spans are decoded from.
    pub fn sparse(&self) -> Option<&Sparse> {
        self.sparse.get()
    }

    /// The bytes this member is charged to the budget while it is live: its size, its window
    /// during a windowed first pass, nothing as a sparse member (its spans are charged).
    pub fn charge(&self) -> u64 {
        if self.is_sparse() {
            0
        } else {
            self.window.unwrap_or(self.key.size).min(self.key.size)
        }
    }

    /// The windowed first pass wrote everything up to `decoded`: frees `[kept_from, to)`.
    /// Under the entry's lock, as reads of a windowed member copy under it: a punch never
    /// lands under a read.
    pub fn trim(&self, to: u64) -> std::io::Result<()> {
        let mut state = self.lock();
        if to <= state.kept_from {
            return Ok(());
        }
        let from = std::mem::replace(&mut state.kept_from, to);
        punch_hole(&self.file, from, to)
    }

    /// The windowed first pass is done and its seek index saved: the member becomes sparse,
    /// with the spans still in its window present. Returns the reads still waiting (those
    /// behind the window), to be asked again, and the present spans with their sizes.
    pub fn become_sparse(&self, sparse: Sparse) -> (Vec<LateRead>, Vec<(usize, u64)>) {
        let mut state = self.lock();
        let n = sparse.table.len();
        let mut present = Vec::new();
        state.spans = (0..n)
            .map(|i| {
                let (start, end) = sparse.table.span(i);
                if start >= state.kept_from {
                    present.push((i, end - start));
                    Span::Present
                } else {
                    Span::Absent
                }
            })
            .collect();
        // The window's first span is only partly there: free that part, which no span
        // accounts for.
        let first_present = present
            .first()
            .map_or(self.key.size, |&(i, _)| sparse.table.span(i).0);
        if state.kept_from < first_present
            && let Err(e) = punch_hole(&self.file, state.kept_from, first_present)
        {
            log::debug!("cannot free the head of the window of {}: {e}", self.name);
        }
        let _ = self.sparse.set(sparse);
        state.fill = Fill::Sparse;
        let late = std::mem::take(&mut state.waiters)
            .into_iter()
            .map(|w| (w.offset, w.end, w.done))
            .collect();
        (late, present)
    }

    /// Whether the member is served span by span (until every span is in).
    pub fn is_sparse(&self) -> bool {
        matches!(self.lock().fill, Fill::Sparse)
    }

    /// If every span is present, the member is complete: it becomes an ordinary complete
    /// member. Returns the span count if it did.
    pub fn promote_if_full(&self) -> Option<usize> {
        let mut state = self.lock();
        let full =
            matches!(state.fill, Fill::Sparse) && state.spans.iter().all(|s| *s == Span::Present);
        if !full {
            return None;
        }
        state.fill = Fill::Complete;
        Some(std::mem::take(&mut state.spans).len())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means a panic elsewhere; the state itself is always consistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cache file.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// The current fill state.
    pub fn fill(&self) -> Fill {
        self.lock().fill.clone()
    }

    /// The partial file's path, if the member is still being decoded into it.
    pub fn take_part(&self) -> Option<PathBuf> {
        self.part.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// Whether the decoder has yet to settle the entry.
    pub fn has_part(&self) -> bool {
        self.part
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    /// Every byte is written and verified: answer all reads, before the file is settled.
    pub fn publish(&self) {
        let waiting = self.set_final(Fill::Complete);
        self.answer(waiting);
    }

    /// Settles the final state: `f` gets the partial file's path (if `release` has not taken
    /// it) and returns the fill; both happen under the part lock.
    pub fn settle(&self, f: impl FnOnce(Option<PathBuf>) -> Fill) -> Fill {
        let mut part = self.part.lock().unwrap_or_else(|p| p.into_inner());
        let fill = f(part.take());
        let waiting = self.set_final(fill.clone());
        drop(part);
        self.answer(waiting);
        fill
    }

    /// Asks the decoder to stop (the last holder went away).
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::Relaxed);
    }

    /// Whether the decoder should stop.
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
    }

    /// Reads `[offset, end)` now if decoded, else once the decoder gets there. For a sparse
    /// member, returns the spans the caller must start decoding for it.
    #[must_use]
    pub fn read(&self, offset: u64, end: u64, done: ReadDone) -> Vec<usize> {
        let mut state = self.lock();
        let ready = match &state.fill {
            Fill::Complete => Ok(()),
            Fill::Decoding { decoded } if *decoded >= end && offset >= state.kept_from => {
                if self.window.is_some() {
                    // Under the lock: `trim` cannot punch under this read.
                    let bytes = self.pread(offset, end);
                    drop(state);
                    reply(done, bytes);
                    return Vec::new();
                }
                Ok(())
            }
            Fill::Decoding { .. } => {
                state.waiters.push(Waiter {
                    offset,
                    end,
                    done,
                    partial: None,
                });
                return Vec::new();
            }
            Fill::Failed { cause, errno } => Err((cause.clone(), *errno)),
            Fill::Sparse => return self.read_sparse(state, offset, end, done),
        };
        drop(state);
        match ready {
            Ok(()) => reply(done, self.pread(offset, end)),
            Err((cause, errno)) => done(Err(self.failure(cause, errno))),
        }
        Vec::new()
    }

    /// The spans `[first, last]` that `[offset, end)` touches.
    fn spans_of(&self, offset: u64, end: u64) -> (usize, usize) {
        match self.sparse.get() {
            Some(s) => (
                s.table.span_of(offset),
                s.table.span_of(end.saturating_sub(1).max(offset)),
            ),
            None => (0, 0),
        }
    }

    /// A read of a sparse member. Spans present now are copied at once, under the entry's
    /// lock: holes are punched under it too, so no eviction can zero bytes mid-copy. The read
    /// waits for the rest, which it collects as they fill.
    fn read_sparse(
        &self,
        mut state: MutexGuard<'_, State>,
        offset: u64,
        end: u64,
        done: ReadDone,
    ) -> Vec<usize> {
        let (first, last) = self.spans_of(offset, end);
        let len = usize::try_from(end.saturating_sub(offset)).unwrap_or(0);
        let mut partial = Partial {
            buf: vec![0u8; len],
            need: Vec::new(),
        };
        let mut start = Vec::new();
        for i in first..=last {
            match state.spans.get_mut(i) {
                Some(Span::Present) => {
                    if let Err(e) = self.copy_span(i, offset, end, &mut partial.buf) {
                        drop(state);
                        done(Err(e));
                        return Vec::new();
                    }
                }
                Some(span @ Span::Absent) => {
                    *span = Span::Filling;
                    start.push(i);
                    partial.need.push(i);
                }
                _ => partial.need.push(i),
            }
        }
        if partial.need.is_empty() || len == 0 {
            drop(state);
            done(Ok(&partial.buf));
            return Vec::new();
        }
        state.waiters.push(Waiter {
            offset,
            end,
            done,
            partial: Some(partial),
        });
        start
    }

    /// Copies the part of span `i` inside `[offset, end)` from the cache file into `buf`.
    fn copy_span(&self, i: usize, offset: u64, end: u64, buf: &mut [u8]) -> Result<()> {
        let (from, to) = self.overlap(i, offset, end);
        let range = (from - offset) as usize..(to - offset) as usize;
        let dest = buf.get_mut(range).unwrap_or_default();
        self.file.read_exact_at(dest, from).map_err(|e| Error::Io {
            what: format!("cache file of {}", self.name),
            cause: e,
        })
    }

    /// Where span `i` and `[offset, end)` overlap.
    fn overlap(&self, i: usize, offset: u64, end: u64) -> (u64, u64) {
        let (start, stop) = self.sparse.get().map_or((0, 0), |s| s.table.span(i));
        let from = start.clamp(offset, end);
        (from, stop.clamp(from, end))
    }

    /// Span `i` (`bytes`, at `start`) is verified and written: hands each waiting read its
    /// part, and answers those that have everything now.
    pub fn span_filled(&self, i: usize, start: u64, bytes: &[u8]) {
        let ready: Vec<Waiter> = {
            let mut state = self.lock();
            if let Some(span) = state.spans.get_mut(i) {
                *span = Span::Present;
            }
            for w in &mut state.waiters {
                let Some(p) = &mut w.partial else { continue };
                if !p.need.contains(&i) {
                    continue;
                }
                let (from, to) = self.overlap(i, w.offset, w.end);
                let src = bytes.get((from - start) as usize..(to - start) as usize);
                let dest = p
                    .buf
                    .get_mut((from - w.offset) as usize..(to - w.offset) as usize);
                if let (Some(src), Some(dest)) = (src, dest) {
                    dest.copy_from_slice(src);
                }
                p.need.retain(|&k| k != i);
            }
            let waiters = std::mem::take(&mut state.waiters);
            let (ready, waiting) = waiters
                .into_iter()
                .partition(|w| w.partial.as_ref().is_some_and(|p| p.need.is_empty()));
            state.waiters = waiting;
            ready
        };
        for w in ready {
            let buf = w.partial.map(|p| p.buf).unwrap_or_default();
            (w.done)(Ok(&buf));
        }
    }

    /// Span `i` (`[start, end)`) could not be decoded: the reads that need it fail.
    pub fn span_failed(&self, i: usize, start: u64, end: u64, cause: &str, errno: i32) {
        let failed: Vec<Waiter> = {
            let mut state = self.lock();
            if let Some(span) = state.spans.get_mut(i) {
                *span = Span::Absent;
            }
            let waiters = std::mem::take(&mut state.waiters);
            let (failed, waiting) = waiters.into_iter().partition(|w| match &w.partial {
                Some(p) => p.need.contains(&i),
                None => w.offset < end && w.end > start,
            });
            state.waiters = waiting;
            failed
        };
        for w in failed {
            (w.done)(Err(self.failure(cause.to_string(), errno)));
        }
    }

    /// Marks span `i` absent if it is present; true if it was (the caller punches its hole).
    pub fn evict_span(&self, i: usize) -> bool {
        let mut state = self.lock();
        match state.spans.get_mut(i) {
            Some(span @ Span::Present) => {
                *span = Span::Absent;
                true
            }
            _ => false,
        }
    }

    /// Frees the disk space of evicted span `i` (`[start, end)`), unless it is being filled
    /// again already. Under the entry's lock, so that a new fill (which must mark the span
    /// filling under it first) never writes before the hole is punched: else the punch could
    /// land on fresh bytes and a reader would get zeros.
    pub fn punch(&self, i: usize, start: u64, end: u64) -> std::io::Result<()> {
        let state = self.lock();
        if state.spans.get(i) != Some(&Span::Absent) {
            return Ok(());
        }
        let punched = punch_hole(&self.file, start, end);
        drop(state);
        punched
    }

    /// Spans `i` with their state (for tests and the summary).
    pub fn spans(&self) -> Vec<Span> {
        self.lock().spans.clone()
    }

    /// The writer holds the decoded bytes `chunk` of `[offset, offset + len)` and is about
    /// to write them: answer the waiting reads that lie inside it straight from the chunk.
    /// They get their bytes a write earlier, and without a copy through the cache file.
    pub fn answer_from(&self, offset: u64, chunk: &[u8]) {
        let end = offset + chunk.len() as u64;
        let ready: Vec<Waiter> = {
            let mut state = self.lock();
            let (ready, waiting) = state
                .waiters
                .drain(..)
                .partition(|w| w.offset >= offset && w.end <= end);
            state.waiters = waiting;
            ready
        };
        for w in ready {
            let range = (w.offset - offset) as usize..(w.end - offset) as usize;
            match chunk.get(range) {
                Some(bytes) => (w.done)(Ok(bytes)),
                None => reply(w.done, self.pread(w.offset, w.end)),
            }
        }
    }

    /// The decoder has written `[0, decoded)`: answer the reads that fit.
    pub fn advance(&self, decoded: u64) {
        let ready = {
            let mut state = self.lock();
            state.fill = Fill::Decoding { decoded };
            let kept_from = state.kept_from;
            let (ready, waiting) = state
                .waiters
                .drain(..)
                .partition(|w| w.end <= decoded && w.offset >= kept_from);
            state.waiters = waiting;
            ready
        };
        self.answer(ready);
    }

    /// Records the final fill and hands back every waiting read, to be answered unlocked.
    fn set_final(&self, fill: Fill) -> Vec<Waiter> {
        let mut state = self.lock();
        state.fill = fill;
        std::mem::take(&mut state.waiters)
    }

    fn answer(&self, waiters: Vec<Waiter>) {
        let fill = self.fill();
        for w in waiters {
            let result = match &fill {
                Fill::Failed { cause, errno } => Err(self.failure(cause.clone(), *errno)),
                _ => self.pread(w.offset, w.end),
            };
            reply(w.done, result);
        }
    }

    fn failure(&self, cause: String, errno: i32) -> Error {
        if errno == libc::ENOSPC {
            Error::Io {
                what: self.name.clone(),
                cause: std::io::Error::from_raw_os_error(errno),
            }
        } else {
            Error::Corrupt {
                what: self.name.clone(),
                cause,
            }
        }
    }

    fn pread(&self, offset: u64, end: u64) -> Result<Vec<u8>> {
        // Members are always read in full ranges the decoder has written, so a short read
        // means the cache file was damaged under us (deleted cache directory, full disk).
        let len = usize::try_from(end.saturating_sub(offset)).unwrap_or(0);
        let mut buf = vec![0u8; len];
        self.file
            .read_exact_at(&mut buf, offset)
            .map_err(|e| Error::Io {
                what: format!("cache file of {}", self.name),
                cause: e,
            })?;
        Ok(buf)
    }
}

/// Frees `[start, end)` of `file` (the size stays).
fn punch_hole(file: &File, start: u64, end: u64) -> std::io::Result<()> {
    let (Ok(off), Ok(len)) = (i64::try_from(start), i64::try_from(end - start)) else {
        return Ok(());
    };
    use std::os::fd::AsRawFd;
    // SAFETY: plain syscall on an open descriptor.
    let rc = unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            off,
            len,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn reply(done: ReadDone, bytes: Result<Vec<u8>>) {
    match bytes {
        Ok(v) => done(Ok(&v)),
        Err(e) => done(Err(e)),
    }
}
