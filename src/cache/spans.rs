//! A sparse member's spans: which are in its cache file, which are being decoded, and the
//! reads gathering their bytes from them as they arrive.
//!
//! Plain bookkeeping, guarded by its slot's lock (`slot.rs`): no lock or thread of its own.
//! What it decides is then done by the slot, after letting go of the lock where it can
//! (answering reads) and under it where it must (copying present spans, punching holes: no
//! punch may land under a copy, or on a span that started filling again).

use std::fs::File;
use std::os::unix::fs::FileExt;

use crate::bytes::ReadDone;
use crate::error::{Error, Result};

/// The allocation unit the cache's disk accounting assumes (ext4's, XFS's and tmpfs's page).
/// Spans and windows rarely start or end on it: a span is charged for every block it touches,
/// and a punch frees a block that straddles its edge whenever the neighbour is gone too.
pub const DISK_BLOCK: u64 = 4096;

/// The disk space `[start, end)` of a cache file can occupy: every block it touches.
pub fn footprint(start: u64, end: u64) -> u64 {
    end.next_multiple_of(DISK_BLOCK) - start / DISK_BLOCK * DISK_BLOCK
}

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

/// A read waiting for spans: the bytes gathered so far and the spans still missing. It
/// collects each span as it fills, so it never needs all of them resident at once.
pub struct Gather {
    offset: u64,
    end: u64,
    done: ReadDone,
    buf: Vec<u8>,
    need: Vec<usize>,
}

impl Gather {
    /// Hands the gathered bytes to the reader.
    pub fn answer(self) {
        (self.done)(Ok(&self.buf));
    }

    /// Fails the read with `err`.
    pub fn fail(self, err: Error) {
        (self.done)(Err(err));
    }
}

/// What a read of a sparse member comes to.
pub enum ReadPlan {
    /// Answer now (every span it needs was present, or copying failed).
    Now(ReadDone, Result<Vec<u8>>),
    /// Parked until its spans fill; these are the ones the caller must start decoding.
    Parked(Vec<usize>),
}

/// Where a member's spans lie: the offset each starts at (the seek points), and the size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    starts: Vec<u64>,
    size: u64,
}

impl Layout {
    /// Spans starting at `starts` (ascending, the first 0) of a member of `size` bytes.
    pub fn new(starts: Vec<u64>, size: u64) -> Layout {
        Layout { starts, size }
    }

    /// How many spans there are.
    pub fn len(&self) -> usize {
        self.starts.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }

    /// The span holding `offset`.
    pub fn span_of(&self, offset: u64) -> usize {
        self.starts
            .partition_point(|&s| s <= offset)
            .saturating_sub(1)
    }

    /// Where span `i` starts and ends.
    pub fn span(&self, i: usize) -> (u64, u64) {
        let start = self.starts.get(i).copied().unwrap_or(self.size);
        let end = self.starts.get(i + 1).copied().unwrap_or(self.size);
        (start, end)
    }
}

/// The state of every span of one sparse member, and the reads waiting on them.
pub struct SpanBook {
    layout: Layout,
    spans: Vec<Span>,
    waiting: Vec<Gather>,
}

impl SpanBook {
    /// A member of which nothing is in the cache file yet.
    pub fn empty(layout: Layout) -> SpanBook {
        SpanBook {
            spans: vec![Span::Absent; layout.len()],
            layout,
            waiting: Vec::new(),
        }
    }

    /// A member whose bytes from `kept_from` on are in the file (the window of a first pass):
    /// the spans wholly inside are present. Returns them with their charges.
    pub fn from_window(layout: Layout, kept_from: u64) -> (SpanBook, Vec<(usize, u64)>) {
        let mut present = Vec::new();
        let spans = (0..layout.len())
            .map(|i| {
                let (start, end) = layout.span(i);
                if start >= kept_from {
                    present.push((i, footprint(start, end)));
                    Span::Present
                } else {
                    Span::Absent
                }
            })
            .collect();
        let book = SpanBook {
            layout,
            spans,
            waiting: Vec::new(),
        };
        (book, present)
    }

    /// A read of `[offset, end)` of member `name`. Spans present now are copied from `file` at
    /// once (the
    /// caller holds the slot's lock: no punch can zero them mid-copy); absent ones are marked
    /// filling, for the caller to start, and the read waits for those and any being filled.
    pub fn read(
        &mut self,
        file: &File,
        name: &str,
        (offset, end): (u64, u64),
        done: ReadDone,
    ) -> ReadPlan {
        let (first, last) = (
            self.layout.span_of(offset),
            self.layout.span_of(end.saturating_sub(1).max(offset)),
        );
        let len = usize::try_from(end.saturating_sub(offset)).unwrap_or(0);
        let mut buf = vec![0u8; len];
        let (mut need, mut start) = (Vec::new(), Vec::new());
        for i in first..=last {
            match self.spans.get_mut(i) {
                Some(Span::Present) => {
                    let (from, to) = overlap(self.layout.span(i), offset, end);
                    let dest = &mut buf[(from - offset) as usize..(to - offset) as usize];
                    if let Err(e) = file.read_exact_at(dest, from) {
                        let what = format!("the cache file of {name}");
                        return ReadPlan::Now(done, Err(Error::io("read", what, e)));
                    }
                }
                Some(span @ Span::Absent) => {
                    *span = Span::Filling;
                    start.push(i);
                    need.push(i);
                }
                _ => need.push(i),
            }
        }
        if need.is_empty() || len == 0 {
            return ReadPlan::Now(done, Ok(buf));
        }
        self.waiting.push(Gather {
            offset,
            end,
            done,
            buf,
            need,
        });
        ReadPlan::Parked(start)
    }

    /// Span `i` (`bytes`, at `start`) is verified and written: each waiting read takes its
    /// part. Returns the reads that have everything now.
    pub fn filled(&mut self, i: usize, bytes: &[u8]) -> Vec<Gather> {
        let (start, _) = self.layout.span(i);
        if let Some(span) = self.spans.get_mut(i) {
            *span = Span::Present;
        }
        for g in &mut self.waiting {
            if !g.need.contains(&i) {
                continue;
            }
            let (from, to) = overlap(self.layout.span(i), g.offset, g.end);
            let src = bytes.get((from - start) as usize..(to - start) as usize);
            let dest = g
                .buf
                .get_mut((from - g.offset) as usize..(to - g.offset) as usize);
            if let (Some(src), Some(dest)) = (src, dest) {
                dest.copy_from_slice(src);
            }
            g.need.retain(|&k| k != i);
        }
        let (ready, waiting) = std::mem::take(&mut self.waiting)
            .into_iter()
            .partition(|g| g.need.is_empty());
        self.waiting = waiting;
        ready
    }

    /// Span `i` could not be decoded: it is absent again, and the reads that need it are
    /// returned, to be failed.
    pub fn failed(&mut self, i: usize) -> Vec<Gather> {
        if let Some(span) = self.spans.get_mut(i) {
            *span = Span::Absent;
        }
        let (failed, waiting) = std::mem::take(&mut self.waiting)
            .into_iter()
            .partition(|g| g.need.contains(&i));
        self.waiting = waiting;
        failed
    }

    /// Marks span `i` absent if it is present; true if it was (its hole is to be punched).
    pub fn evict(&mut self, i: usize) -> bool {
        match self.spans.get_mut(i) {
            Some(span @ Span::Present) => {
                *span = Span::Absent;
                true
            }
            _ => false,
        }
    }

    /// The bytes to punch for evicted span `i`, or None if it is being filled again already.
    /// A block it shares with a neighbour goes too if the neighbour is absent (it cannot start
    /// filling while the caller holds the slot's lock), else it is left to the neighbour: a
    /// span's footprint is freed whole in the end.
    pub fn hole(&self, i: usize) -> Option<(u64, u64)> {
        if self.spans.get(i) != Some(&Span::Absent) {
            return None;
        }
        let (start, end) = self.layout.span(i);
        let gone = |k: Option<usize>| {
            k.and_then(|k| self.spans.get(k))
                .is_none_or(|s| *s == Span::Absent)
        };
        let from = match gone(i.checked_sub(1)) {
            true => start / DISK_BLOCK * DISK_BLOCK,
            false => start.next_multiple_of(DISK_BLOCK),
        };
        let to = match gone(Some(i + 1)) {
            true => end.next_multiple_of(DISK_BLOCK),
            false => end / DISK_BLOCK * DISK_BLOCK,
        };
        Some((from, to))
    }

    /// Nothing present or filling, and no read waiting: nothing worth keeping open.
    pub fn idle(&self) -> bool {
        self.waiting.is_empty() && self.spans.iter().all(|s| *s == Span::Absent)
    }

    /// Every span is present: the member is whole.
    pub fn full(&self) -> bool {
        self.spans.iter().all(|s| *s == Span::Present)
    }

    /// Bytes of the member in present spans.
    pub fn present_bytes(&self) -> u64 {
        let present = |(i, s): (usize, &Span)| (*s == Span::Present).then(|| self.layout.span(i));
        self.spans
            .iter()
            .enumerate()
            .filter_map(present)
            .map(|(start, end)| end - start)
            .sum()
    }

    /// How many spans there are.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Each span's state.
    #[cfg(test)]
    pub fn states(&self) -> Vec<Span> {
        self.spans.clone()
    }
}

/// Where span `(start, stop)` and `[offset, end)` overlap.
fn overlap((start, stop): (u64, u64), offset: u64, end: u64) -> (u64, u64) {
    let from = start.clamp(offset, end);
    (from, stop.clamp(from, end))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// Four spans of 10 000 bytes (none on a block), a member of 40 000.
    fn layout() -> Layout {
        Layout::new(vec![0, 10_000, 20_000, 30_000], 40_000)
    }

    /// A cache file holding byte `i % 251` at every offset `i`.
    fn file() -> File {
        let f = tempfile::tempfile().unwrap();
        let bytes: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
        f.write_all_at(&bytes, 0).unwrap();
        f
    }

    fn expect(offset: u64, end: u64) -> Vec<u8> {
        (offset..end).map(|i| (i % 251) as u8).collect()
    }

    type Answers = mpsc::Receiver<Result<Vec<u8>>>;

    fn done() -> (ReadDone, Answers) {
        let (tx, rx) = mpsc::channel();
        let done: ReadDone = Box::new(move |r| tx.send(r.map(<[u8]>::to_vec)).unwrap());
        (done, rx)
    }

    fn span_bytes(i: usize) -> Vec<u8> {
        let (s, e) = layout().span(i);
        expect(s, e)
    }

    #[test]
    fn layout_finds_spans() {
        let l = layout();
        assert_eq!(
            (l.span_of(0), l.span_of(9_999), l.span_of(10_000)),
            (0, 0, 1)
        );
        assert_eq!(l.span_of(39_999), 3);
        assert_eq!(
            (l.span(1), l.span(3), l.span(4)),
            ((10_000, 20_000), (30_000, 40_000), (40_000, 40_000))
        );
        assert_eq!(footprint(10_000, 20_000), 12_288);
    }

    #[test]
    fn a_read_marks_absent_spans_filling_and_waits_for_them_all() {
        let (mut book, f) = (SpanBook::empty(layout()), file());
        let (d, rx) = done();
        let ReadPlan::Parked(start) = book.read(&f, "x", (5_000, 25_000), d) else {
            panic!("nothing is present: it must wait")
        };
        assert_eq!(start, vec![0, 1, 2]);
        assert_eq!(book.states()[..3], [Span::Filling; 3]);
        // A second read over a span being filled waits too, and starts nothing new.
        let (d2, rx2) = done();
        let ReadPlan::Parked(again) = book.read(&f, "x", (19_000, 21_000), d2) else {
            panic!("span 2 is filling")
        };
        assert!(again.is_empty());
        assert!(book.filled(0, &span_bytes(0)).is_empty());
        assert!(
            book.filled(1, &span_bytes(1)).is_empty(),
            "the first read still needs 2"
        );
        let ready = book.filled(2, &span_bytes(2));
        assert_eq!(ready.len(), 2);
        ready.into_iter().for_each(Gather::answer);
        assert_eq!(rx.try_recv().unwrap().unwrap(), expect(5_000, 25_000));
        assert_eq!(rx2.try_recv().unwrap().unwrap(), expect(19_000, 21_000));
        assert!(!book.idle() && !book.full());
    }

    #[test]
    fn present_spans_are_read_from_the_file_at_once() {
        let (layout, f) = (layout(), file());
        let (mut book, present) = SpanBook::from_window(layout, 15_000);
        assert_eq!(present.iter().map(|p| p.0).collect::<Vec<_>>(), vec![2, 3]);
        assert_eq!(present[0].1, footprint(20_000, 30_000));
        let (d, _rx) = done();
        let ReadPlan::Now(d, Ok(bytes)) = book.read(&f, "x", (21_000, 39_000), d) else {
            panic!("spans 2 and 3 are present")
        };
        assert_eq!(bytes, expect(21_000, 39_000));
        drop(d);
    }

    #[test]
    fn a_failed_span_fails_only_the_reads_that_need_it_and_is_absent_again() {
        let (mut book, f) = (SpanBook::empty(layout()), file());
        let (d1, rx1) = done();
        let (d2, rx2) = done();
        let _ = book.read(&f, "x", (0, 100), d1);
        let _ = book.read(&f, "x", (30_000, 30_100), d2);
        let failed = book.failed(0);
        assert_eq!(failed.len(), 1);
        failed.into_iter().for_each(|g| g.fail(Error::NotFound));
        assert!(rx1.try_recv().unwrap().is_err());
        assert!(rx2.try_recv().is_err(), "the other read still waits");
        assert_eq!(book.states()[0], Span::Absent);
        // Asked again, it is filled anew.
        let (d3, _rx3) = done();
        assert!(matches!(book.read(&f, "x", (0, 10), d3), ReadPlan::Parked(s) if s == vec![0]));
    }

    #[test]
    fn evicted_spans_punch_whole_blocks_only_beside_absent_neighbours() {
        let mut book = SpanBook::empty(layout());
        for i in 0..4 {
            book.filled(i, &span_bytes(i));
        }
        assert!(book.full());
        assert_eq!(book.hole(1), None, "present: nothing to punch");
        assert!(book.evict(1));
        assert!(!book.evict(1), "evicted once");
        // Neighbours present: the blocks it shares with them stay.
        assert_eq!(book.hole(1), Some((12_288, 16_384)));
        book.evict(0);
        book.evict(2);
        // Neighbours gone: every block it touches goes.
        assert_eq!(book.hole(1), Some((8_192, 20_480)));
        book.evict(3);
        assert!(book.idle());
    }
}
