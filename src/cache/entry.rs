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

mod sparse;

pub use sparse::footprint;

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

    /// Whether the member is served span by span (until every span is in).
    pub fn is_sparse(&self) -> bool {
        matches!(self.lock().fill, Fill::Sparse)
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

fn reply(done: ReadDone, bytes: Result<Vec<u8>>) {
    match bytes {
        Ok(v) => done(Ok(&v)),
        Err(e) => done(Err(e)),
    }
}
