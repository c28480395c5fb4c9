//! Sparse members: with a seek index, a member is decoded span by span, each from its own
//! seek point, when a read needs it, and its spans are evicted one by one.
//!
//! A span costs one restart (the window read from the index file, `inflatePrime`,
//! `inflateSetDictionary`) and the decoding of one span ([`span_after`](super::seek::span_after):
//! 1 to 3.75 MiB). It is checked against the CRC-32 the first full decode recorded before
//! anyone reads it, so a damaged index or a changed archive gives EIO, never wrong bytes.
//! Spans are charged to the budget one by one, so a member larger than the whole cache is
//! served within it. Also here: the seek index's life around the cache (loaded and checked at
//! open, kept after a first pass, and a windowed first pass turned sparse).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::decoder;
use super::entry::{Entry, ReadDone, Sparse};
use super::seek::Inflater;
use super::store::FileKey;
use super::{Cache, Shared, Victims, entry, seek_file, store};
use crate::archive::Archive;
use crate::index::Member;

/// Compressed bytes read from the archive at a time while decoding a span.
const INPUT: usize = 64 << 10;

impl Cache {
    /// The checked seek index of `key`, if one was saved; a damaged or stale one is deleted
    /// (the next full decode writes it again).
    pub(super) fn seek_table(&self, key: FileKey, member: &Member) -> Option<seek_file::SeekTable> {
        let file = self.shared.store.open_seek(key)?;
        let expected = seek_file::Member {
            size: member.size,
            compressed_size: member.compressed_size,
            crc32: member.crc32,
        };
        match seek_file::SeekTable::load(file, expected) {
            Ok(table) => Some(table),
            Err(e) => {
                log::warn!(
                    "seek index of {} cannot be used ({e}): decoding from the start",
                    member.name
                );
                self.shared.store.drop_seek(key);
                None
            }
        }
    }
}

impl Shared {
    /// Finishes and names the seek index `writer` wrote into `part`, or deletes it. True if
    /// it is kept.
    pub(super) fn keep_seek(
        &self,
        entry: &Entry,
        job: &decoder::Job,
        writer: Option<seek_file::Writer>,
        part: Option<PathBuf>,
    ) -> bool {
        let Some(part) = part else {
            return false;
        };
        let kept = match writer {
            Some(w) => w
                .finish(job.seek_member())
                .and_then(|_| self.store.keep_seek(&part, entry.key))
                .map_err(|e| log::warn!("cannot save the seek index of {}: {e}", entry.name))
                .is_ok(),
            None => false,
        };
        if !kept {
            store::remove(&part);
        }
        kept
    }

    /// A windowed first pass is done: the member becomes sparse, charged for the spans its
    /// window still holds, and the reads that waited behind the window are asked again.
    pub(super) fn make_sparse(
        self: &Arc<Self>,
        entry: &Arc<Entry>,
        archive: &Arc<Archive>,
        job: &decoder::Job,
    ) -> bool {
        let table = self
            .store
            .open_seek(entry.key)
            .ok_or_else(|| "missing".to_string())
            .and_then(|file| seek_file::SeekTable::load(file, job.seek_member()));
        let table = match table {
            Ok(table) => table,
            Err(e) => {
                log::warn!("cannot read back the seek index of {}: {e}", entry.name);
                return false;
            }
        };
        // The whole member went through the decoder, whether or not anyone still holds it.
        self.stats.decoded.fetch_add(1, Ordering::Relaxed);
        self.stats
            .decoded_bytes
            .fetch_add(entry.key.size, Ordering::Relaxed);
        let sparse = entry::Sparse {
            table,
            data_start: job.data_start,
            compressed_size: job.compressed_size,
        };
        let (victims, late) = {
            let mut st = self.lock();
            let ours = st
                .live
                .get(&entry.key.index)
                .is_some_and(|e| Arc::ptr_eq(e, entry));
            if !ours {
                // Its last holder left (and took its file): the index is all that stays.
                return true;
            }
            let window = entry.charge();
            let (late, present) = entry.become_sparse(sparse);
            st.used -= window;
            for (i, len) in present {
                st.used += len;
                st.spans.put((entry.key.index, i), len);
            }
            (self.evict(&mut st, 0), late)
        };
        victims.apply();
        log::debug!(
            "{}: decoded once through a window; served span by span now",
            entry.name
        );
        for (offset, end, done) in late {
            self.serve_sparse(entry, archive, offset, end, done);
        }
        true
    }

    /// A read of a sparse member: answered now, or parked while the spans it needs decode.
    pub(super) fn serve_sparse(
        self: &Arc<Self>,
        entry: &Arc<Entry>,
        archive: &Arc<Archive>,
        offset: u64,
        end: u64,
        done: ReadDone,
    ) {
        let spans = entry.read(offset, end, done);
        self.fill_spans(entry, archive, spans);
    }

    /// Starts one decoding thread per span in `spans`.
    fn fill_spans(self: &Arc<Self>, entry: &Arc<Entry>, archive: &Arc<Archive>, spans: Vec<usize>) {
        for i in spans {
            let (shared, entry2, archive) = (self.clone(), entry.clone(), archive.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("npzfs-span-{i}"))
                .spawn(move || shared.fill_span(&entry2, &archive, i));
            if let Err(e) = spawned {
                let (start, end) = span_range(entry, i);
                let cause = format!("cannot start a decoder: {}", crate::error::cause(&e));
                entry.span_failed(i, start, end, &cause, libc::EIO);
            }
        }
    }

    /// Decodes span `i` of `entry`, checks it, makes room for it, writes it, answers reads.
    fn fill_span(self: &Arc<Self>, entry: &Arc<Entry>, archive: &Arc<Archive>, i: usize) {
        let (start, end) = span_range(entry, i);
        let Some(sparse) = entry.sparse() else {
            return;
        };
        let bytes = match decode_span(sparse, archive, i, end - start) {
            Ok(bytes) => bytes,
            Err(SpanError { cause, stale }) => {
                log::warn!("cannot read {}: span {i} at {start}: {cause}", entry.name);
                if stale {
                    // Not trusted again: the next mount decodes from the start and rebuilds it.
                    self.store.drop_seek(entry.key);
                }
                entry.span_failed(i, start, end, &cause, libc::EIO);
                return;
            }
        };
        let len = bytes.len() as u64;
        // Charged (every block it touches) before it is written, evictable once present (an
        // eviction must only ever find spans it can take).
        let charge = entry::footprint(start, end);
        let victims = {
            let mut st = self.lock();
            let victims = self.evict(&mut st, charge);
            st.used += charge;
            victims
        };
        victims.apply();
        if let Err(stop) = decoder::write_chunk(entry, &bytes, start, entry.key.size) {
            self.lock().used -= charge;
            let (cause, errno) = match stop {
                decoder::Stop::Failed { cause, errno } => (cause, errno),
                decoder::Stop::Cancelled => ("cancelled".to_string(), libc::EIO),
            };
            log::warn!("cannot read {}: span {i}: {cause}", entry.name);
            entry.span_failed(i, start, end, &cause, errno);
            return;
        }
        self.stats.span_fills.fetch_add(1, Ordering::Relaxed);
        self.stats.span_bytes.fetch_add(len, Ordering::Relaxed);
        log::trace!("{}: span {i} ({len} bytes at {start}) decoded", entry.name);
        // Fills running side by side may each have found nothing to evict but each other:
        // with this span evictable now, the bound is restored before any read it completes is
        // answered.
        entry.span_filled(i, start, &bytes, || {
            let victims = {
                let mut st = self.lock();
                st.spans.put((entry.key.index, i), charge);
                self.evict(&mut st, 0)
            };
            victims.apply();
        });
        self.promote(entry);
    }

    /// A sparse member whose every span is in is complete (each span was checked against the
    /// CRC-32 of a verified full decode): it becomes an ordinary member, charged whole, and its
    /// file gets its complete name, so that later mounts reuse it and passthrough serves it.
    fn promote(&self, entry: &Entry) {
        let renamed = {
            let mut st = self.lock();
            let Some(spans) = entry.promote_if_full() else {
                return;
            };
            for i in 0..spans {
                if let Some(len) = st.spans.pop(&(entry.key.index, i)) {
                    st.used -= len;
                }
            }
            st.used += entry.key.size;
            entry
                .take_part()
                .map(|part| std::fs::rename(&part, self.store.complete_path(entry.key)))
        };
        match renamed {
            Some(Err(e)) => log::warn!(
                "cannot name the cache file of {} complete: {}",
                entry.name,
                crate::error::cause(&e)
            ),
            _ => log::debug!("{}: every span decoded, now complete", entry.name),
        }
    }
}

impl Victims {
    /// Punches the holes of evicted spans (files are deleted by [`Victims::apply`]).
    pub(super) fn punch(holes: Vec<(Arc<Entry>, usize)>) {
        for (entry, i) in holes {
            let (start, end) = span_range(&entry, i);
            if let Err(e) = entry.punch(i, start, end) {
                // The span is already marked absent; only its disk space stays in use.
                log::debug!("cannot punch span {i} of {}: {e}", entry.name);
            }
        }
    }
}

/// Where span `i` of a sparse entry lies in the member.
fn span_range(entry: &Entry, i: usize) -> (u64, u64) {
    entry.sparse().map_or((0, 0), |s| s.table.span(i))
}

/// Why a span could not be decoded; `stale` when the index itself is at fault.
struct SpanError {
    cause: String,
    stale: bool,
}

impl From<String> for SpanError {
    fn from(cause: String) -> SpanError {
        SpanError {
            cause,
            stale: false,
        }
    }
}

impl From<&str> for SpanError {
    fn from(cause: &str) -> SpanError {
        SpanError::from(cause.to_string())
    }
}

/// Decodes span `i` (`len` bytes) from its seek point and checks its CRC-32.
fn decode_span(
    sparse: &Sparse,
    archive: &Archive,
    i: usize,
    len: u64,
) -> Result<Vec<u8>, SpanError> {
    let point = sparse.table.point(i)?;
    let row = sparse.table.row(i).ok_or("no such span")?;
    let changed = |_| "the archive cannot be read (changed while mounted?)".to_string();
    let mut previous = [0u8; 1];
    if point.bits > 0 && point.input > 0 {
        archive
            .read_exact_at(&mut previous, sparse.data_start + point.input - 1)
            .map_err(changed)?;
    }
    let mut inflater = Inflater::at(&point, previous[0])?;
    let len = usize::try_from(len).map_err(|_| "span too large")?;
    let mut out = vec![0u8; len];
    let mut input = vec![0u8; INPUT];
    let (mut made, mut consumed) = (0usize, point.input);
    while made < len {
        let n = (sparse.compressed_size - consumed).min(INPUT as u64) as usize;
        if n == 0 {
            return Err("the deflate stream ends early".into());
        }
        archive
            .read_exact_at(&mut input[..n], sparse.data_start + consumed)
            .map_err(changed)?;
        let mut pos = 0;
        while pos < n && made < len {
            let step = inflater.inflate(&input[pos..n], &mut out[made..], false)?;
            pos += step.used;
            made += step.made;
            if step.end || (step.used == 0 && step.made == 0) {
                break;
            }
        }
        consumed += pos as u64;
        if made < len && pos < n {
            return Err("the deflate stream ends early".into());
        }
    }
    if crc32fast::hash(&out) != row.span_crc {
        return Err(SpanError {
            cause: "CRC-32 mismatch (the seek index or the archive changed)".into(),
            stale: true,
        });
    }
    Ok(out)
}
