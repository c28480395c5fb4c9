//! Sparse members: reads that need spans not in the cache file start one thread per span,
//! which decodes it from its own seek point, checks it, makes room for it and writes it.
//!
//! A span costs one restart (the history read from the index file, `inflatePrime`,
//! `inflateSetDictionary`) and the decoding of one span ([`span_after`](crate::zipfile::inflate::span_after):
//! 1 to 3.75 MiB). It is checked against the CRC-32 the first full decode recorded before
//! anyone reads it, so a damaged index or a changed archive gives EIO, never wrong bytes.
//! Spans are charged to the budget one by one, so a member larger than the whole cache is
//! served within it. A member whose every span is in is promoted to an ordinary complete one.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::decoder;
use super::job::Stop;
use super::pool::Shared;
use super::seek_index::{Expected, SeekTable};
use super::slot::{Slot, Sparse};
use super::spans::footprint;
use super::store::{FileKey, Store};
use crate::bytes::Archive;
use crate::error::{Error, Result, cause};
use crate::metrics::{METRICS, Warning, often};
use crate::zipfile::inflate::inflate_at;
use crate::zipfile::members::Member;

/// The checked seek index of `key`, if one was saved; a damaged or stale one is deleted (the
/// next full decode writes it again).
pub fn seek_table(store: &Store, key: FileKey, member: &Member) -> Option<SeekTable> {
    let file = store.open_seek(key)?;
    let expected = Expected {
        size: member.size,
        compressed_size: member.compressed_size,
        crc32: member.crc32,
    };
    match SeekTable::load(file, expected) {
        Ok(table) => Some(table),
        Err(e) => {
            log::warn!("{e}; decoding {} from the start instead", member.name);
            store.drop_seek(key);
            None
        }
    }
}

/// Starts one thread per span in `spans` (those a read of `slot` found absent), each of
/// which decodes its span and answers the reads waiting for it.
pub fn start(shared: &Arc<Shared>, slot: &Arc<Slot>, archive: &Arc<Archive>, spans: Vec<usize>) {
    for i in spans {
        let (shared2, slot2, archive2) = (shared.clone(), slot.clone(), archive.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("npzfs-span-{i}"))
            .spawn(move || fill(&shared2, &slot2, &archive2, i));
        if let Err(e) = spawned {
            let what = format!("a decoder for span {i} of {}", slot.name);
            slot.span_failed(i, &Error::io("start", what, e));
        }
    }
}

/// Decodes span `i` of `slot`, checks it, makes room for it, writes it, answers reads.
fn fill(shared: &Arc<Shared>, slot: &Arc<Slot>, archive: &Arc<Archive>, i: usize) {
    let (start, end) = slot.span(i);
    let Some(sparse) = slot.source() else {
        return;
    };
    let began = std::time::Instant::now();
    let decoded = decode(sparse, archive, &slot.name, i, end - start);
    shared.stats().count_decode_time(began.elapsed());
    let bytes = match decoded {
        Ok(bytes) => bytes,
        Err(e) => return fail(slot, i, start, e),
    };
    if sparse
        .table
        .row(i)
        .is_none_or(|r| crc32fast::hash(&bytes) != r.span_crc)
    {
        // Not trusted again: the next mount decodes from the start and rebuilds it.
        shared.store.drop_seek(slot.key);
        let e = Error::Corrupt {
            what: slot.name.clone(),
            cause: "CRC-32 mismatch in a span (the seek index or the archive changed)".into(),
        };
        return fail(slot, i, start, e);
    }
    let len = bytes.len() as u64;
    // Charged (every block it touches) before it is written, evictable once present (an
    // eviction must only ever find spans it can take).
    let charge = footprint(start, end);
    let victims = shared.lock().charge(charge);
    victims.apply();
    if let Err(stop) = decoder::write_chunk(slot, &bytes, start, slot.key.size) {
        shared.lock().refund(charge);
        let e = match stop {
            Stop::Failed(e) => e,
            Stop::Cancelled => Error::Stopped {
                what: slot.name.clone(),
            },
        };
        return fail(slot, i, start, e);
    }
    shared.stats().span_fills.fetch_add(1, Ordering::Relaxed);
    shared.stats().span_bytes.fetch_add(len, Ordering::Relaxed);
    log::trace!("{}: span {i} ({len} bytes at {start}) decoded", slot.name);
    // Fills running side by side may each have found nothing to evict but each other: with
    // this span evictable now, the bound is restored before any read it completes is answered.
    slot.span_filled(i, &bytes, || {
        let victims = shared.lock().file_span(slot.id(), i, charge);
        victims.apply();
    });
    promote(shared, slot);
}

fn fail(slot: &Slot, i: usize, start: u64, e: Error) {
    // A damaged span fails every read of it: one warning per power of ten, with the count.
    let n = METRICS.warned(Warning::SpanFailed, 1);
    match often(n) {
        true => log::warn!("{e} (span {i} at {start}; {n} spans failed so far)"),
        false => log::debug!("{e} (span {i} at {start})"),
    }
    slot.span_failed(i, &e);
}

/// A sparse member whose every span is in is complete (each span was checked against the
/// CRC-32 of a verified full decode): it becomes an ordinary member, charged whole, and its
/// file gets its complete name, so that later mounts reuse it and passthrough serves it.
fn promote(shared: &Shared, slot: &Slot) {
    let renamed = {
        let mut ledger = shared.lock();
        let Some(spans) = slot.promote_if_full() else {
            return;
        };
        ledger.promote(slot, spans);
        // Renamed under the cache lock: an eviction that finds this member kept looks for its
        // complete name, which must exist by then. A rename within one directory is a
        // metadata operation of microseconds.
        slot.take_part()
            .map(|part| std::fs::rename(&part, shared.store.complete_path(slot.key)))
    };
    match renamed {
        Some(Err(e)) => log::warn!(
            "cannot name the cache file of {} complete: {}",
            slot.name,
            cause(&e)
        ),
        _ => log::debug!("{}: every span decoded, now complete", slot.name),
    }
}

/// Decodes span `i` (`len` bytes) of member `name` from its seek point.
fn decode(sparse: &Sparse, archive: &Archive, name: &str, i: usize, len: u64) -> Result<Vec<u8>> {
    let corrupt = |cause: String| Error::Corrupt {
        what: name.to_string(),
        cause,
    };
    // A damaged index is a corrupt span of this member, a failed read of it the read's error.
    let point = sparse.table.point(i).map_err(|e| e.for_member(name))?;
    let len = usize::try_from(len).map_err(|_| corrupt("span too large".into()))?;
    let data_start = sparse.start.resolve(archive)?;
    let range = (data_start, sparse.start.compressed_size());
    inflate_at(archive, range, &point, len, name)
}
