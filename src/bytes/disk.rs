//! What the byte layer does to mappings and files beside reading them: letting go of pages
//! served from a mapping, and punching holes where evicted bytes were.

use std::fs::File;

use memmap2::Mmap;

/// How far around a faulting address the kernel maps pages already in the page cache
/// (`fault_around_bytes`, 64 KiB by default), in windows aligned to it.
const FAULT_AROUND: usize = 64 << 10;

/// Drops this process's page-table entries for `len` bytes of `map` from `start`, once the
/// kernel has copied a reply out of them: the pages stay in the page cache, and the daemon's
/// resident set does not grow with every page it has served. The range is widened to the
/// kernel's fault-around windows: copying the reply mapped their neighbours too, and a daemon
/// serving small replies from many files (a shard's members) kept them, ~100 KiB a shard.
pub fn unmap_pages(map: &Mmap, start: u64, len: u64) {
    let base = map.as_ptr() as usize;
    let (Ok(start), Ok(len)) = (usize::try_from(start), usize::try_from(len)) else {
        return;
    };
    let from = ((base + start) & !(FAULT_AROUND - 1)).max(base);
    let to = (base + start)
        .saturating_add(len)
        .next_multiple_of(FAULT_AROUND)
        .min(base + map.len());
    if to <= from {
        return;
    }
    // SAFETY: the range lies within the mapping (`from` is page-aligned: the mapping's base
    // is, and so is a multiple of FAULT_AROUND), which is read-only and file-backed:
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
