//! What the byte layer does to mappings and files beside reading them: letting go of pages
//! served from a mapping, and punching holes where evicted bytes were.

use std::fs::File;

use memmap2::Mmap;

/// How far around a reply the kernel may have mapped pages into the daemon: fault-around maps
/// the neighbours of a faulting page (64 KiB windows), and a page-cache folio (ext4 makes large
/// ones, up to 2 MiB, naturally aligned) is mapped whole. Every such mapping lies within the
/// 2 MiB-aligned region around the reply.
const MAPPED_AROUND: usize = 2 << 20;

/// Drops this process's page-table entries around `len` bytes of `map` from `start`, once the
/// kernel has copied a reply out of them: the pages stay in the page cache, and the daemon's
/// resident set does not grow with every page it has served. The range is widened to
/// [`MAPPED_AROUND`]: with 64 KiB, a daemon serving the two members of each of 200 shards kept
/// 16.5 MiB of block-file pages (the large folios' ends), with 4 KiB pages 21 MiB; now none.
/// Pages of another reply in flight in the same region may go too: a later access maps them
/// again from the page cache (stored reads of 256 MiB measured no slower).
pub fn unmap_pages(map: &Mmap, start: u64, len: u64) {
    let base = map.as_ptr() as usize;
    let (Ok(start), Ok(len)) = (usize::try_from(start), usize::try_from(len)) else {
        return;
    };
    let from = ((base + start) & !(MAPPED_AROUND - 1)).max(base);
    let to = (base + start)
        .saturating_add(len)
        .next_multiple_of(MAPPED_AROUND)
        .min(base + map.len());
    if to <= from {
        return;
    }
    // SAFETY: the range lies within the mapping (`from` is page-aligned: the mapping's base
    // is, and so is a multiple of MAPPED_AROUND), which is read-only and file-backed:
    // MADV_DONTNEED only unmaps its pages, and a later access faults them back in from the
    // page cache with the same bytes.
    unsafe {
        libc::madvise(from as *mut libc::c_void, to - from, libc::MADV_DONTNEED);
    }
}

/// Frees `[start, end)` of `file` (the size stays).
pub fn punch_hole(file: &File, start: u64, end: u64) -> std::io::Result<()> {
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
