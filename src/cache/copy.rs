//! `-o materialize`: a stored member copied into its cache file, so that FUSE passthrough can
//! serve it once the copy is complete and checked (passthrough maps file offsets 1:1, and a
//! member starts in the middle of its archive).
//!
//! The kernel copies: a reflink (`FICLONERANGE`, free) where the file system can and the
//! member's offset is block-aligned, else `copy_file_range` (in-kernel, no round trip through
//! userspace buffers), else `pread`/`pwrite` (a cache on another kind of file system). Each
//! chunk is read back from the copy's pages for the CRC-32 (a stored member finally gets its
//! CRC checked), and the archive's pages for that range are dropped: the same bytes are not
//! kept in memory twice.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use super::job::{Job, Stop};
use super::slot::Slot;
use crate::bytes::Archive;
use crate::error::Error;

/// Bytes copied (and checked) at a time.
const COPY_CHUNK: u64 = 8 << 20;
/// The copy waits while the member is being read (the reader comes first: on 2 cores a copy
/// beside a first sequential read made it 0.84x), but never longer than this in all, so that
/// a reader that never stops still gets its passthrough.
const YIELD_AT_MOST: Duration = Duration::from_secs(5);
/// "Being read": a read within this many milliseconds.
const RECENT_MS: u64 = 50;

/// Copies member `job` into `slot`'s file and checks it; the caller settles the slot.
pub fn run(slot: &Slot, archive: &Archive, job: &Job) -> Result<(), Stop> {
    // The reader that started the copy is served from the archive meanwhile: it comes first.
    // On Linux the nice value is per thread, and `who` 0 is the calling thread (setpriority(2),
    // NOTES). Not gettid(): glibc has it only from 2.30, and the wheel targets 2.28.
    // SAFETY: setpriority on the calling thread.
    unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 19) };
    let yield_until = Instant::now() + YIELD_AT_MOST;
    // Only local archives are copied (a remote one is already on local disk, in blocks).
    let Some(src) = archive.copy_source() else {
        return Err(Stop::Failed(Error::Unsupported {
            what: slot.name.clone(),
            cause: "a remote archive is not materialized".into(),
        }));
    };
    let dst = slot.file();
    let cloned = reflink(src, job.data_start, dst, job.size);
    let mut crc = crc32fast::Hasher::new();
    let mut buf = vec![0u8; COPY_CHUNK.min(job.size) as usize];
    let mut done = 0u64;
    while done < job.size {
        while slot.read_within(RECENT_MS) && Instant::now() < yield_until {
            if slot.is_cancelled() {
                return Err(Stop::Cancelled);
            }
            std::thread::sleep(Duration::from_millis(RECENT_MS / 2));
        }
        if slot.is_cancelled() {
            return Err(Stop::Cancelled);
        }
        let len = COPY_CHUNK.min(job.size - done);
        if !cloned {
            copy_range(src, job.data_start + done, dst, done, len, &mut buf).map_err(|e| {
                let what = format!("{} into the cache", slot.name);
                Stop::Failed(Error::io("copy", what, e))
            })?;
        }
        let chunk = &mut buf[..len as usize];
        dst.read_exact_at(chunk, done).map_err(|e| {
            Stop::Failed(Error::io("read", format!("the copy of {}", slot.name), e))
        })?;
        crc.update(chunk);
        done += len;
        slot.advance(done);
    }
    // The archive's pages of the member are of no more use once the copy serves it (readers
    // that started before it keep reading the archive, and fault back what they need).
    drop_pages(src, job.data_start, job.size);
    if crc.finalize() != job.crc32 {
        return Err(Stop::Failed(Error::Corrupt {
            what: slot.name.clone(),
            cause: "CRC-32 mismatch (the archive is damaged, or changed while mounted)".into(),
        }));
    }
    Ok(())
}

/// A reflink of the whole member, where the file system can and the offset allows; false
/// otherwise (the caller then copies).
fn reflink(src: &File, offset: u64, dst: &File, len: u64) -> bool {
    if !offset.is_multiple_of(4096) || len == 0 {
        return false;
    }
    let range = libc::file_clone_range {
        src_fd: i64::from(src.as_raw_fd()),
        src_offset: offset,
        src_length: len,
        dest_offset: 0,
    };
    // SAFETY: an ioctl on our own descriptor with a valid, initialised argument.
    let rc = unsafe { libc::ioctl(dst.as_raw_fd(), libc::FICLONERANGE, &range) };
    rc == 0
}

/// Copies `len` bytes at `from` in `src` to `to` in `dst`: by `copy_file_range`, or through
/// `buf` where the kernel cannot (across file systems). An archive that ends early (truncated
/// under the mount) is an error.
fn copy_range(
    src: &File,
    from: u64,
    dst: &File,
    to: u64,
    len: u64,
    buf: &mut [u8],
) -> std::io::Result<()> {
    let ends_early = || std::io::Error::from_raw_os_error(libc::EIO);
    let (mut off_in, mut off_out) = (to_off(from)?, to_off(to)?);
    let mut left = len;
    while left > 0 {
        let want = usize::try_from(left).unwrap_or(usize::MAX);
        // SAFETY: two open descriptors and valid offset pointers.
        let n = unsafe {
            libc::copy_file_range(
                src.as_raw_fd(),
                &mut off_in,
                dst.as_raw_fd(),
                &mut off_out,
                want,
                0,
            )
        };
        match n {
            0 => return Err(ends_early()),
            n if n > 0 => left -= n as u64,
            _ => {
                let e = std::io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EXDEV | libc::ENOSYS | libc::EOPNOTSUPP | libc::EINVAL) => {}
                    _ => return Err(e),
                }
                // The kernel cannot copy between these two: through userspace instead.
                let done = len - left;
                let chunk = &mut buf[..left as usize];
                src.read_exact_at(chunk, from + done).map_err(|e| {
                    if e.kind() == std::io::ErrorKind::UnexpectedEof {
                        ends_early()
                    } else {
                        e
                    }
                })?;
                return dst.write_all_at(chunk, to + done);
            }
        }
    }
    Ok(())
}

fn to_off(n: u64) -> std::io::Result<i64> {
    i64::try_from(n).map_err(|_| std::io::Error::from_raw_os_error(libc::EOVERFLOW))
}

/// Lets the kernel drop the pages of `[offset, offset + len)` of `file` (clean ones only).
pub fn drop_pages(file: &File, offset: u64, len: u64) {
    if let (Ok(off), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) {
        // SAFETY: advice on our own descriptor; it cannot fail in a way that matters.
        unsafe { libc::posix_fadvise(file.as_raw_fd(), off, len, libc::POSIX_FADV_DONTNEED) };
    }
}
