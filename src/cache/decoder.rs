//! The background decoder: one thread per member inflates its bytes into the cache file at
//! the member's own offsets, a chunk at a time, and lets waiting reads go as it advances.
//!
//! flate2's `Decompress` (zlib-rs backend) driven directly over `pread` buffers of the archive
//! was the fastest pure-Rust inflate measured here (DESIGN.md, issue 3). The archive's bytes
//! are read with `pread`, never through the mapping: a truncated archive is an I/O error here,
//! not SIGBUS.

use std::os::unix::fs::FileExt;
use std::time::Instant;

use flate2::{Decompress, FlushDecompress, Status};

use super::entry::Entry;
use crate::archive::Archive;

/// Decoded bytes written (and announced to readers) at a time.
pub const CHUNK: usize = 1 << 20;
/// Compressed bytes read from the archive at a time.
const INPUT: usize = 256 << 10;

/// What the decoder needs to know about its member.
#[derive(Clone, Debug)]
pub struct Job {
    /// Where the compressed bytes start in the archive.
    pub data_start: u64,
    /// How many compressed bytes there are.
    pub compressed_size: u64,
    /// The declared uncompressed size (trusted only as an upper bound).
    pub size: u64,
    /// The declared CRC-32.
    pub crc32: u32,
}

/// Why a decode stopped early.
#[derive(Debug)]
pub enum Stop {
    /// The last holder went away.
    Cancelled,
    /// The stream, the archive or the cache disk failed; `errno` is what readers get.
    Failed {
        /// What went wrong, for the log line and the readers' error.
        cause: String,
        /// EIO, or ENOSPC for a full cache disk.
        errno: i32,
    },
}

fn failed(cause: impl Into<String>) -> Stop {
    Stop::Failed {
        cause: cause.into(),
        errno: libc::EIO,
    }
}

fn io_failed(what: &str, e: &std::io::Error) -> Stop {
    Stop::Failed {
        cause: format!("{what}: {}", crate::error::cause(e)),
        errno: e
            .raw_os_error()
            .filter(|&n| n == libc::ENOSPC)
            .unwrap_or(libc::EIO),
    }
}

/// Decodes `job` into `entry`'s file, announcing progress to waiting readers; `Ok` once every
/// byte is written and the size and CRC-32 match. The caller settles the entry's final state.
pub fn run(entry: &Entry, archive: &Archive, job: &Job) -> Result<(), Stop> {
    let started = Instant::now();
    let result = inflate(entry, archive, job);
    match &result {
        Ok(()) => log::debug!(
            "decoded {} ({} bytes) in {:.3} s",
            entry.name,
            job.size,
            started.elapsed().as_secs_f64()
        ),
        Err(Stop::Cancelled) => log::debug!("stopped decoding {}: no one holds it", entry.name),
        Err(Stop::Failed { cause, .. }) => log::warn!("cannot read {}: {cause}", entry.name),
    }
    result
}

fn inflate(entry: &Entry, archive: &Archive, job: &Job) -> Result<(), Stop> {
    let mut inflater = Decompress::new(false);
    let mut input = vec![0u8; INPUT];
    let (mut in_pos, mut in_len, mut consumed_total) = (0usize, 0usize, 0u64);
    let mut out = vec![0u8; CHUNK];
    let mut out_len = 0usize;
    let mut written = 0u64;
    let mut crc = crc32fast::Hasher::new();
    loop {
        if entry.is_cancelled() {
            return Err(Stop::Cancelled);
        }
        if in_pos == in_len && consumed_total < job.compressed_size {
            let n = (job.compressed_size - consumed_total).min(INPUT as u64) as usize;
            archive
                .read_exact_at(&mut input[..n], job.data_start + consumed_total)
                .map_err(|_| failed("the archive cannot be read (changed while mounted?)"))?;
            (in_pos, in_len) = (0, n);
            consumed_total += n as u64;
        }
        let (before_in, before_out) = (inflater.total_in(), inflater.total_out());
        let status = inflater
            .decompress(
                &input[in_pos..in_len],
                &mut out[out_len..],
                FlushDecompress::None,
            )
            .map_err(|e| failed(format!("corrupt deflate stream ({e})")))?;
        let used = (inflater.total_in() - before_in) as usize;
        let made = (inflater.total_out() - before_out) as usize;
        in_pos += used;
        out_len += made;
        let end = status == Status::StreamEnd;
        if out_len == out.len() || (end && out_len > 0) {
            written = flush(entry, &out[..out_len], written, job.size)?;
            crc.update(&out[..out_len]);
            out_len = 0;
            // The last chunk is announced only once the size and CRC-32 check out, so a
            // member that fails them never reaches a reader whole.
            if !end {
                entry.advance(written);
            }
        }
        if end {
            break;
        }
        let starved = in_pos == in_len && consumed_total == job.compressed_size;
        if used == 0 && made == 0 && starved {
            return Err(failed("the deflate stream ends before its end marker"));
        }
    }
    if written != job.size {
        return Err(failed(format!(
            "decoded {written} bytes, the archive declares {}",
            job.size
        )));
    }
    if crc.finalize() != job.crc32 {
        return Err(failed("CRC-32 mismatch"));
    }
    Ok(())
}

/// Writes one decoded chunk at `offset`, space reserved first so that a full disk is a clean
/// ENOSPC here rather than a hole a reader could see.
fn flush(entry: &Entry, chunk: &[u8], offset: u64, size: u64) -> Result<u64, Stop> {
    let end = offset + chunk.len() as u64;
    if end > size {
        return Err(failed(format!(
            "the stream holds more than the declared {size} bytes"
        )));
    }
    let file = entry.file();
    if let (Ok(off), Ok(len)) = (i64::try_from(offset), i64::try_from(chunk.len())) {
        use std::os::fd::AsRawFd;
        // SAFETY: plain syscall on an open descriptor we own.
        let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), off, len) };
        if rc != 0 && rc != libc::EOPNOTSUPP {
            return Err(io_failed(
                "cannot reserve cache space",
                &std::io::Error::from_raw_os_error(rc),
            ));
        }
    }
    file.write_all_at(chunk, offset)
        .map_err(|e| io_failed("cannot write the cache file", &e))?;
    Ok(end)
}
