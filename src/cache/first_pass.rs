//! The first pass: the life of the one thread that decodes a member from its start, from
//! spawn to settled file.
//!
//! It runs the decoder (`decoder.rs`), which writes the cache file and answers parked reads
//! as it goes. Then, by outcome:
//! * verified: counted, every read answered (`publish`), the seek index kept, the file
//!   synced and renamed to its complete name (so later mounts reuse it);
//! * verified, but through a window (a member larger than the cache): the file has holes, so
//!   it is never named complete; the member becomes sparse, served from its seek index;
//! * failed or cancelled: the file is deleted and every waiting read gets the error.
//!
//! Settling happens under the slot's part lock, so that exactly one of the first pass, an
//! eviction or a last release deletes or renames the partial file. A member its last holder
//! left while it decoded is filed here (kept for reuse, or let go).

use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::copy;
use super::decoder;
use super::job::{Job, Start, Stop};
use super::pool::Shared;
use super::seek_index::{self, SeekTable};
use super::slot::{Slot, Sparse};
use super::span_fill;
use super::store::remove;
use crate::bytes::Archive;
use crate::error::{Error, Result, cause};
use crate::zipfile::members::Method;

/// Starts the first pass of `slot` on its own thread, which first resolves where the
/// member's bytes start (`start`); `seek` is where its seek index goes.
pub fn spawn(
    shared: &Arc<Shared>,
    slot: &Arc<Slot>,
    archive: &Arc<Archive>,
    start: Start,
    seek: Option<(File, PathBuf)>,
) -> std::io::Result<()> {
    let (shared, slot, archive) = (shared.clone(), slot.clone(), archive.clone());
    std::thread::Builder::new()
        .name(format!("npzfs-decode-{}", slot.key.number))
        .spawn(move || run(&shared, &slot, &archive, &start, seek))
        .map(drop)
}

fn run(
    shared: &Arc<Shared>,
    slot: &Arc<Slot>,
    archive: &Arc<Archive>,
    start: &Start,
    seek: Option<(File, PathBuf)>,
) {
    let (seek_file, seek_part) = seek.unzip();
    let writer = seek_file.map(seek_index::Writer::new);
    let job = start.resolve(archive).map(|at| start.job(at));
    let decoded = match &job {
        Ok(job) => {
            let began = Instant::now();
            let decoded = decoder::run(slot, archive, job, writer);
            match job.method {
                Method::Stored if decoded.is_ok() => {
                    shared.stats().count_copy(slot.key.size, began.elapsed())
                }
                Method::Stored => {}
                _ => shared.stats().count_decode_time(began.elapsed()),
            }
            decoded
        }
        Err(e) => {
            log::warn!("{e}");
            Err(Stop::Failed(e.clone()))
        }
    };
    let (mut result, writer) = match decoded {
        Ok(writer) => (Ok(()), writer),
        Err(stop) => (Err(stop), None),
    };
    if let (Ok(()), Ok(job)) = (&result, &job)
        && slot.window.is_some()
    {
        // Its file has holes: never published as complete. Sparse from now on.
        if keep_seek(shared, slot, job, writer, seek_part)
            && make_sparse(shared, slot, archive, start, job)
        {
            return;
        }
        result = Err(Stop::Failed(Error::Corrupt {
            what: slot.name.clone(),
            cause: "cannot keep the seek index of a member larger than the cache".into(),
        }));
    } else if let (Ok(()), Ok(job)) = (&result, &job) {
        // Verified: counted, then readers may have the rest (so a reader that has every byte
        // sees the count). The sync that makes the file safe to adopt after a power loss is
        // the slow part (~1 s per GiB here), so it comes after.
        shared.stats().count_decode(slot.key.size);
        slot.publish();
        keep_seek(shared, slot, job, writer, seek_part);
        if let Err(e) = slot.file().sync_data() {
            log::warn!("cannot sync the cache file of {}: {}", slot.name, cause(&e));
        } else if job.method == Method::Stored {
            // The pages copy_file_range and the CRC read-back leave map slowly (small folios,
            // most likely); read again by readahead they do not: 20,000 random elements of
            // 1 GiB took 52-59 ms through passthrough before, 11 ms after (ext4).
            copy::drop_pages(slot.file(), 0, slot.key.size);
        }
    } else if let Some(part) = seek_part {
        remove(&part);
    }
    let complete = slot.settle(|part| finish_file(shared, slot, result, part));
    let victims = {
        let mut ledger = shared.lock();
        if ledger.is_live(slot) && slot.pins.load(Ordering::SeqCst) == 0 {
            ledger.dispose(slot, complete)
        } else {
            Default::default()
        }
    };
    victims.apply();
}

/// Renames a verified partial file to its complete name, or deletes a failed one; says how
/// the member ended.
fn finish_file(
    shared: &Shared,
    slot: &Slot,
    result: std::result::Result<(), Stop>,
    part: Option<PathBuf>,
) -> Result<()> {
    let stopped = || Error::Stopped {
        what: slot.name.clone(),
    };
    match (result, part) {
        (Ok(()), Some(part)) => std::fs::rename(&part, shared.store.complete_path(slot.key))
            .map_err(|e| {
                remove(&part);
                Error::io(
                    "rename",
                    format!("the cache file of {} into place", slot.name),
                    e,
                )
            }),
        // Someone took the file (an eviction, the last release): it is theirs, and gone.
        (Ok(()), None) | (Err(Stop::Cancelled), None) => Err(stopped()),
        (Err(Stop::Cancelled), Some(part)) => {
            // Whoever cancelled usually took the file; if not (unmount), it goes here.
            remove(&part);
            Err(stopped())
        }
        (Err(Stop::Failed(e)), part) => {
            part.iter().for_each(|p| remove(p));
            Err(e)
        }
    }
}

/// Finishes and names the seek index `writer` wrote into `part`, or deletes it. True if it
/// is kept.
fn keep_seek(
    shared: &Shared,
    slot: &Slot,
    job: &Job,
    writer: Option<seek_index::Writer>,
    part: Option<PathBuf>,
) -> bool {
    let Some(part) = part else {
        return false;
    };
    let kept = match writer {
        Some(w) => w
            .finish(job.expected())
            .and_then(|_| shared.store.keep_seek(&part, slot.key))
            .map_err(|e| log::warn!("cannot save the seek index of {}: {e}", slot.name))
            .is_ok(),
        None => false,
    };
    if !kept {
        remove(&part);
    }
    kept
}

/// A windowed first pass is done: the member becomes sparse, charged for the spans its
/// window still holds, and the reads that waited behind the window are asked again.
fn make_sparse(
    shared: &Arc<Shared>,
    slot: &Arc<Slot>,
    archive: &Arc<Archive>,
    start: &Start,
    job: &Job,
) -> bool {
    let table = shared
        .store
        .open_seek(slot.key)
        .ok_or_else(|| {
            let missing = std::io::Error::from_raw_os_error(libc::ENOENT);
            Error::io("open", "the seek index", missing)
        })
        .and_then(|file| SeekTable::load(file, job.expected()));
    let table = match table {
        Ok(table) => table,
        Err(e) => {
            log::warn!("{e} (just written for {})", slot.name);
            return false;
        }
    };
    // The whole member went through the decoder, whether or not anyone still holds it.
    shared.stats().count_decode(slot.key.size);
    let sparse = Sparse {
        table,
        start: start.clone(),
    };
    let (victims, late) = {
        let mut ledger = shared.lock();
        if !ledger.is_live(slot) {
            // Its last holder left (and took its file): the index is all that stays.
            return true;
        }
        // The switch of charges (window out, present spans in) and the slot's new state
        // happen together under the cache lock, so no eviction sees one without the other.
        // `become_sparse` punches the window's head under the slot's lock (taken after the
        // cache lock, the order everywhere): one fallocate on a local file, microseconds, and
        // it must not race a span starting to fill there.
        let window = slot.charge();
        let (late, present) = slot.become_sparse(sparse);
        (ledger.window_to_spans(slot.id(), window, &present), late)
    };
    victims.apply();
    log::debug!(
        "{}: decoded once through a window; served span by span now",
        slot.name
    );
    for (offset, end, done) in late {
        // Counted as misses when they first came.
        let spans = slot.read(offset, end, done).spans();
        span_fill::start(shared, slot, archive, spans);
    }
    true
}

/// A first pass that could not be started: its slot fails, so no one waits on it.
pub fn failed_to_start(slot: &Slot, e: std::io::Error) -> Error {
    let err = Error::io("start", format!("a decoder for {}", slot.name), e);
    slot.settle(|part| {
        part.iter().for_each(|p| remove(p));
        Err(err.clone())
    });
    err
}
