//! Sparse members and windowed first passes: per-span state, reads that collect spans as
//! they fill, and holes punched under the entry's lock.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::MutexGuard;

use super::{Entry, Fill, LateRead, Partial, ReadDone, Span, Sparse, State, Waiter};
use crate::error::{Error, Result};

/// The allocation unit the cache's disk accounting assumes (ext4's, XFS's and tmpfs's page).
/// Spans and windows rarely start or end on it: a span is charged for every block it touches,
/// and a punch frees a block that straddles its edge whenever the neighbour is gone too.
pub const BLOCK: u64 = 4096;

/// The disk space `[start, end)` of a cache file can occupy: every block it touches.
pub fn footprint(start: u64, end: u64) -> u64 {
    end.next_multiple_of(BLOCK) - start / BLOCK * BLOCK
}

impl Entry {
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
        // Everything before `kept_from` is gone already: the block it starts in goes whole.
        let from = std::mem::replace(&mut state.kept_from, to);
        punch_hole(&self.file, from / BLOCK * BLOCK, to)
    }

    /// The windowed first pass is done and its seek index saved: the member becomes sparse,
    /// with the spans still in its window present. Returns the reads still waiting (those
    /// behind the window), to be asked again, and the present spans with their charges.
    pub fn become_sparse(&self, sparse: Sparse) -> (Vec<LateRead>, Vec<(usize, u64)>) {
        let mut state = self.lock();
        let n = sparse.table.len();
        let mut present = Vec::new();
        state.spans = (0..n)
            .map(|i| {
                let (start, end) = sparse.table.span(i);
                if start >= state.kept_from {
                    present.push((i, footprint(start, end)));
                    Span::Present
                } else {
                    Span::Absent
                }
            })
            .collect();
        // The window's first span is only partly there: free that part, which no span accounts
        // for (in whole blocks: the block the first present span starts in is that span's).
        let head_end = present
            .first()
            .map_or(self.key.size.next_multiple_of(BLOCK), |&(i, _)| {
                sparse.table.span(i).0 / BLOCK * BLOCK
            });
        if let Err(e) = punch_hole(&self.file, state.kept_from / BLOCK * BLOCK, head_end) {
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
    pub(super) fn read_sparse(
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
    /// part, runs `settle` (which makes room in the budget: the reads answered next see the
    /// cache within it), then answers the reads that have everything now. Those reads hold
    /// their bytes already, so `settle` may even evict span `i`.
    pub fn span_filled(&self, i: usize, start: u64, bytes: &[u8], settle: impl FnOnce()) {
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
        settle();
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
    /// land on fresh bytes and a reader would get zeros. A block the span shares with a
    /// neighbour is freed too if the neighbour is absent (under the same lock, it cannot start
    /// filling meanwhile), else left to it: a span's footprint is freed whole in the end.
    pub fn punch(&self, i: usize, start: u64, end: u64) -> std::io::Result<()> {
        let state = self.lock();
        if state.spans.get(i) != Some(&Span::Absent) {
            return Ok(());
        }
        let gone = |k: Option<usize>| {
            k.and_then(|k| state.spans.get(k))
                .is_none_or(|s| *s == Span::Absent)
        };
        let from = match gone(i.checked_sub(1)) {
            true => start / BLOCK * BLOCK,
            false => start.next_multiple_of(BLOCK),
        };
        let to = match gone(Some(i + 1)) {
            true => end.next_multiple_of(BLOCK),
            false => end / BLOCK * BLOCK,
        };
        let punched = punch_hole(&self.file, from, to);
        drop(state);
        punched
    }

    /// A sparse member with no span present or being filled and no read waiting: nothing of
    /// it is worth keeping open.
    pub fn idle(&self) -> bool {
        let state = self.lock();
        state.waiters.is_empty() && state.spans.iter().all(|s| *s == Span::Absent)
    }

    /// Spans `i` with their state (for tests and the summary).
    pub fn spans(&self) -> Vec<Span> {
        self.lock().spans.clone()
    }
}

/// Frees `[start, end)` of `file` (the size stays).
fn punch_hole(file: &File, start: u64, end: u64) -> std::io::Result<()> {
    if end <= start {
        return Ok(());
    }
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
