//! The background decoder: one thread per member decodes its bytes into the cache file at
//! the member's own offsets, a chunk at a time, and lets waiting reads go as it advances.
//!
//! zlib-rs driven directly over `pread` buffers of the archive was the fastest pure-Rust
//! inflate measured here (ARCHITECTURE.md); deflate members go through its zlib API
//! ([`crate::zipfile::inflate`]), stopping at block boundaries to record seek points on the way, at no
//! measurable cost (195-200 MB/s against 196-207 for flate2 on the same member). The
//! archive's bytes are read with `pread`, never through the mapping: a truncated archive is an
//! I/O error here, not SIGBUS.

use std::os::unix::fs::FileExt;
use std::time::Instant;

use std::io::Read;
use std::sync::mpsc::{Receiver, Sender, SyncSender, channel, sync_channel};

use super::job::{Job, Stop};
use super::seek_index::Writer;
use super::slot::Slot;
use crate::bytes::Archive;
use crate::error::Error;
use crate::zipfile::inflate::{History, Inflater, Point, SPAN, span_after};
use crate::zipfile::members::Method;
use crate::zipfile::methods::{read_error, zip_error};
use crate::zipfile::zip_crate_member;

/// Decoded bytes written (and announced to readers) at a time.
pub const CHUNK: usize = 1 << 20;
/// Compressed bytes read from the archive at a time.
const INPUT: usize = 256 << 10;

/// The member's bytes are wrong: `cannot read <member>: <cause>`.
fn corrupt(member: &str, cause: impl Into<String>) -> Stop {
    Stop::Failed(Error::Corrupt {
        what: member.to_string(),
        cause: cause.into(),
    })
}

/// A system call on the member's cache file failed (ENOSPC reaches readers as itself).
fn io_failed(verb: &'static str, member: &str, e: std::io::Error) -> Stop {
    Stop::Failed(Error::io(verb, format!("the cache file of {member}"), e))
}

/// Decodes `job` into `slot`'s file, announcing progress to waiting readers; `Ok` once every
/// byte is written and the size and CRC-32 match. `seek`, for a deflate member, receives its
/// seek points and comes back complete but for its footer. The caller settles the slot.
pub fn run(
    slot: &Slot,
    archive: &Archive,
    job: &Job,
    seek: Option<Writer>,
) -> Result<Option<Writer>, Stop> {
    let started = Instant::now();
    let result = decode(slot, archive, job, seek);
    match &result {
        Ok(index) => log::debug!(
            "decoded {} ({} bytes) in {:.3} s, {} seek points",
            slot.name,
            job.size,
            started.elapsed().as_secs_f64(),
            index.as_ref().map_or(0, Writer::points)
        ),
        Err(Stop::Cancelled) => log::debug!("stopped decoding {}: no one holds it", slot.name),
        Err(Stop::Failed(e)) => log::warn!("{e}"),
    }
    result
}

/// Where decoded chunks go: the cache file, the running CRCs, and the readers. Runs on its own
/// thread beside the decoder: writing into the page cache of a new file cost a third of the
/// decode time of a 1 GiB member here (5.8 s without the writes, 8.0 s with them), and on its
/// own core it overlaps with decoding instead.
struct Output<'a> {
    slot: &'a Slot,
    job: &'a Job,
    written: u64,
    crc: crc32fast::Hasher,
    /// The seek index being written (points as they come, a CRC-32 per span between them).
    seek: Option<Writer>,
    closed_spans: usize,
    span_crc: crc32fast::Hasher,
}

/// One decoded chunk on its way to the [`Output`].
struct Chunk {
    buf: Vec<u8>,
    len: usize,
    last: bool,
    /// Seek points recorded at or before the chunk's end.
    points: Vec<Point>,
}

impl Output<'_> {
    /// Writes `chunk` and, unless it is the `last`, lets readers have it. The last chunk is
    /// announced only once size and CRC-32 check out, so a member that fails them never
    /// reaches a reader whole.
    fn push(&mut self, chunk: &[u8], last: bool) -> Result<(), Stop> {
        if !chunk.is_empty() {
            if !last && self.written + chunk.len() as u64 <= self.job.size {
                self.slot.answer_from(self.written, chunk);
            }
            let start = self.written;
            self.written = write_chunk(self.slot, chunk, self.written, self.job.size)?;
            self.crc.update(chunk);
            self.hash_spans(start, chunk);
            if !last {
                self.slot.advance(self.written);
            }
            // A member larger than the cache keeps only its window: the rest is freed as
            // soon as the reads waiting for it are answered (by `advance`, above).
            if let Some(window) = self.slot.window
                && let Err(e) = self.slot.trim(self.written.saturating_sub(window))
            {
                log::debug!("cannot free behind the window of {}: {e}", self.slot.name);
            }
        }
        Ok(())
    }

    /// Adds `chunk` (at `start`) to the span CRCs, closing a span at every point inside it.
    fn hash_spans(&mut self, start: u64, chunk: &[u8]) {
        let Some(seek) = &mut self.seek else {
            return;
        };
        let end = start + chunk.len() as u64;
        let mut at = 0usize;
        while let Some(out) = seek.boundary(self.closed_spans).filter(|&o| o <= end) {
            let cut = (out - start) as usize;
            self.span_crc.update(chunk.get(at..cut).unwrap_or_default());
            let crc = std::mem::take(&mut self.span_crc).finalize();
            seek.set_span_crc(self.closed_spans, crc);
            self.closed_spans += 1;
            at = cut;
        }
        self.span_crc.update(chunk.get(at..).unwrap_or_default());
    }

    /// Hands new seek points to the index writer; if it cannot write, the index is given up
    /// (the member is still served, just without seek points).
    fn record(&mut self, points: &[Point]) {
        if let Some(seek) = &mut self.seek
            && let Err(e) = points.iter().try_for_each(|p| seek.add(p))
        {
            log::warn!(
                "cannot write the seek index of {}: {}",
                self.slot.name,
                crate::error::cause(&e)
            );
            self.seek = None;
        }
    }

    fn verify(mut self) -> Result<Option<Writer>, Stop> {
        if self.written != self.job.size {
            let declared = self.job.size;
            return Err(corrupt(
                &self.slot.name,
                format!(
                    "decoded {} bytes, the archive declares {declared}",
                    self.written
                ),
            ));
        }
        if self.crc.finalize() != self.job.crc32 {
            return Err(corrupt(&self.slot.name, "CRC-32 mismatch"));
        }
        if let Some(seek) = &mut self.seek {
            seek.set_span_crc(self.closed_spans, self.span_crc.finalize());
        }
        Ok(self.seek)
    }

    /// Takes chunks until the last one (then verifies) or until the decoder gives up.
    fn drain(
        mut self,
        chunks: Receiver<Chunk>,
        spent: Sender<Vec<u8>>,
    ) -> Result<Option<Writer>, Stop> {
        for chunk in chunks {
            self.record(&chunk.points);
            self.push(&chunk.buf[..chunk.len], chunk.last)?;
            let _ = spent.send(chunk.buf);
            if chunk.last {
                return self.verify();
            }
        }
        Err(Stop::Cancelled) // the decoder stopped early and says why
    }
}

/// The decoder's end of the pipeline to the [`Output`].
struct Pipe<'a> {
    chunks: SyncSender<Chunk>,
    spent: Receiver<Vec<u8>>,
    member: &'a str,
}

impl Pipe<'_> {
    /// Hands `buf[..len]` over (with the points recorded since the last chunk) and returns a
    /// buffer to fill next.
    fn send(
        &self,
        buf: Vec<u8>,
        len: usize,
        last: bool,
        points: Vec<Point>,
    ) -> Result<Vec<u8>, Stop> {
        self.chunks
            .send(Chunk {
                buf,
                len,
                last,
                points,
            })
            .map_err(|_| corrupt(self.member, "the cache writer stopped"))?;
        Ok(self.spent.try_recv().unwrap_or_else(|_| vec![0u8; CHUNK]))
    }
}

fn decode(
    slot: &Slot,
    archive: &Archive,
    job: &Job,
    seek: Option<Writer>,
) -> Result<Option<Writer>, Stop> {
    if job.method == Method::Stored {
        return super::copy::run(slot, archive, job).map(|()| None);
    }
    let deflate = job.method == Method::Deflated;
    let output = Output {
        slot,
        job,
        written: 0,
        crc: crc32fast::Hasher::new(),
        seek: seek.filter(|_| deflate),
        closed_spans: 0,
        span_crc: crc32fast::Hasher::new(),
    };
    let (chunks_tx, chunks_rx) = sync_channel(2);
    let (spent_tx, spent_rx) = channel();
    std::thread::scope(|s| {
        let writer = std::thread::Builder::new()
            .name("npzfs-write".into())
            .spawn_scoped(s, move || output.drain(chunks_rx, spent_tx))
            .map_err(|e| {
                Stop::Failed(Error::io(
                    "start",
                    format!("a cache writer for {}", slot.name),
                    e,
                ))
            })?;
        let pipe = Pipe {
            chunks: chunks_tx,
            spent: spent_rx,
            member: &slot.name,
        };
        let produced = if deflate {
            inflate(pipe, slot, job, archive)
        } else {
            unzip(pipe, slot, job, archive)
        };
        let written = writer
            .join()
            .unwrap_or_else(|_| Err(corrupt(&slot.name, "the cache writer panicked")));
        match (produced, written) {
            (Err(Stop::Cancelled), _) => Err(Stop::Cancelled),
            (Err(p), _) => Err(p),
            (Ok(()), Err(w)) => Err(w),
            (Ok(()), Ok(seek)) => Ok(seek),
        }
    })
}

/// Deflate, driven directly over `pread` buffers: the fast path for what numpy writes. Stops
/// at block boundaries to record a seek point every span of output ([`span_after`]).
fn inflate(pipe: Pipe, slot: &Slot, job: &Job, archive: &Archive) -> Result<(), Stop> {
    let name = slot.name.as_str();
    let failed = |e: Error| Stop::Failed(e.for_member(name));
    let mut inflater = Inflater::new().map_err(failed)?;
    let mut input = vec![0u8; INPUT];
    let (mut in_pos, mut in_len, mut consumed_total) = (0usize, 0usize, 0u64);
    let mut out = vec![0u8; CHUNK];
    let (mut out_len, mut out_total) = (0usize, 0u64);
    let mut history = History::default();
    let mut points = vec![Point::start()];
    let (mut last_point, mut last_input, mut next_span) = (0u64, 0u64, SPAN);
    loop {
        if slot.is_cancelled() {
            return Err(Stop::Cancelled);
        }
        if in_pos == in_len && consumed_total < job.compressed_size {
            let n = (job.compressed_size - consumed_total).min(INPUT as u64) as usize;
            archive
                .read_exact_at(&mut input[..n], job.data_start + consumed_total)
                .map_err(failed)?;
            (in_pos, in_len) = (0, n);
            consumed_total += n as u64;
        }
        let step = inflater
            .inflate(&input[in_pos..in_len], &mut out[out_len..], true)
            .map_err(failed)?;
        in_pos += step.used;
        out_len += step.made;
        out_total += step.made as u64;
        if let Some(bits) = step.boundary
            && out_total - last_point >= next_span
        {
            let input = consumed_total - (in_len - in_pos) as u64;
            points.push(Point {
                out: out_total,
                input,
                bits,
                history: history.ending(&out[..out_len]),
            });
            next_span = span_after(input - last_input, out_total - last_point);
            (last_point, last_input) = (out_total, input);
        }
        if out_len == out.len() || step.end {
            history.push(&out[..out_len]);
            out = pipe.send(out, out_len, step.end, std::mem::take(&mut points))?;
            out_len = 0;
        }
        if step.end {
            return Ok(());
        }
        let starved = in_pos == in_len && consumed_total == job.compressed_size;
        if step.used == 0 && step.made == 0 && starved {
            return Err(corrupt(
                name,
                "the deflate stream ends before its end marker",
            ));
        }
    }
}

/// Every other method the zip crate decodes (deflate64, bzip2, lzma, xz, zstd), through its
/// reader ([`zip_crate_member`]).
fn unzip(pipe: Pipe, slot: &Slot, job: &Job, archive: &Archive) -> Result<(), Stop> {
    let name = slot.name.as_str();
    let (mut zip, found) =
        zip_crate_member(archive, name, slot.key.number, job.header_start).map_err(Stop::Failed)?;
    let mut reader = zip
        .by_index(found)
        .map_err(|e| Stop::Failed(zip_error(name, "cannot start decoding", e)))?;
    let mut out = vec![0u8; CHUNK];
    loop {
        if slot.is_cancelled() {
            return Err(Stop::Cancelled);
        }
        let mut len = 0;
        while len < out.len() {
            match reader.read(&mut out[len..]) {
                Ok(0) => break,
                Ok(n) => len += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let e = read_error(name, "corrupt compressed stream", &e);
                    return Err(Stop::Failed(e));
                }
            }
        }
        let end = len < out.len();
        out = pipe.send(out, len, end, Vec::new())?;
        if end {
            return Ok(());
        }
    }
}

/// Writes one decoded chunk at `offset`, space reserved first so that a full disk is a clean
/// ENOSPC here rather than a hole a reader could see.
pub(super) fn write_chunk(slot: &Slot, chunk: &[u8], offset: u64, size: u64) -> Result<u64, Stop> {
    let end = offset + chunk.len() as u64;
    if end > size {
        return Err(corrupt(
            &slot.name,
            format!("the stream holds more than the declared {size} bytes"),
        ));
    }
    let file = slot.file();
    if let (Ok(off), Ok(len)) = (i64::try_from(offset), i64::try_from(chunk.len())) {
        use std::os::fd::AsRawFd;
        // SAFETY: plain syscall on an open descriptor we own.
        let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), off, len) };
        if rc != 0 && rc != libc::EOPNOTSUPP {
            let e = std::io::Error::from_raw_os_error(rc);
            return Err(io_failed("reserve space for", &slot.name, e));
        }
    }
    file.write_all_at(chunk, offset)
        .map_err(|e| io_failed("write", &slot.name, e))?;
    Ok(end)
}
