//! What the byte layer does to mappings and files beside reading them: letting go of pages
//! served from a mapping, and punching holes where evicted bytes were.

use std::fs::File;

use memmap2::Mmap;

/// Drops this process's page-table entries for `len` bytes of `map` from `start` (widened to
/// whole pages), once the kernel has copied a reply out of them: the pages stay in the page
/// cache, and the daemon's resident set does not grow with every page it has served.
pub fn unmap_pages(map: &Mmap, start: u64, len: u64) {
    // SAFETY: sysconf has no preconditions.
    let page = u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
    let from = start / page * page;
    let to = start.saturating_add(len).div_ceil(page) * page;
    let to = to.min(map.len() as u64);
    if to <= from {
        return;
    }
    // SAFETY: the range lies within the mapping, which is read-only and file-backed:
    // MADV_DONTNEED only unmaps its pages, and a later access faults them back in from the
    // page cache with the same bytes.
    unsafe {
        libc::madvise(
            map.as_ptr().add(from as usize) as *mut libc::c_void,
            (to - from) as usize,
            libc::MADV_DONTNEED,
        );
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
