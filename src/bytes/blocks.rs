//! A remote archive's bytes on local disk: fetched by range in blocks, kept in one sparse file
//! at their own offsets, charged to the mount's budget and evicted in its LRU like everything
//! else in the cache.
//!
//! A read asks for the blocks its range touches. Blocks present are served at once: a FUSE
//! reply is a slice of the file's mapping, which the kernel copies from the page cache to
//! the reader (the daemon's own reads, for parsing and decoding, use `pread`). Absent ones
//! are marked *fetching* and fetched, contiguous ones in one ranged request, and the read
//! waits (parked, as reads behind a decoder do) until every block it needs has landed. A
//! response is written to the file piece by piece as it arrives, and each block serves its
//! readers as soon as it is whole, not when the request ends. A read that finds a block
//! already fetching waits for that fetch: overlapping concurrent reads cost one request. An
//! object of at most [`SMALL`] bytes is fetched whole by its first read: a shard's first open
//! (end record, central directory) and its members' reads then cost one round trip. A reader
//! that has read 2 MiB in a row is sequential: the blocks after its read are kept fetched
//! ([`super::readahead`]).
//! No request thread ever waits for the network: fetches run on the remote client's I/O
//! threads, which answer the parked reads.
//!
//! Every block added or dropped is reported to the mount's books ([`Books`], kept by the
//! cache), which may ask for blocks back ([`Blocks::evict`]). The file survives an unmount
//! that synced it: the blocks present then are listed ([`Blocks::close`]), and the next mount of the same version (ETag) of the object serves them
//! without a request. A daemon that died leaves no list, and its blocks are discarded.

use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::books::{Books, SetId};
use super::disk::{punch_hole, unmap_pages};
use super::readahead::{PART, Readahead};
use super::reply::{ReadDone, answer};
use crate::error::{Error, Result};
use crate::remote::Fetch;
use crate::remote::Remote;

/// Bytes per block: a random 4 KiB read of an uncached region costs one request of this.
pub const BLOCK: u64 = 1 << 20;
/// Blocks one request asks for at most: a readahead window goes out in parts side by side,
/// which servers answer faster than one long request.
const PER_REQUEST: usize = PART as usize;
/// An object this small is fetched whole by its first read, in one request.
pub const SMALL: u64 = 2 * BLOCK;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Have {
    Absent,
    Fetching,
    Present,
}

/// A read waiting for blocks.
struct Waiting {
    offset: u64,
    end: u64,
    done: ReadDone,
    /// Whether `done` only hands the bytes to the kernel (a FUSE reply), which may then
    /// take them from the mapping; bytes the daemon reads itself come by `pread`.
    to_kernel: bool,
}

struct BlockTable {
    have: Vec<Have>,
    waiting: Vec<Waiting>,
    readahead: Readahead,
    /// Unmounting: the present blocks are listed, so none may be punched or added any more.
    closed: bool,
}

/// The local blocks of one remote archive (or plain object of a bucket source).
pub struct Blocks {
    /// Which set this is, in the books.
    pub id: SetId,
    remote: Arc<Remote>,
    file: File,
    /// The file mapped whole (it is as long as the object, sparse): present blocks are replied
    /// from it, and the kernel copies them straight from the page cache to the reader.
    map: Option<memmap2::Mmap>,
    path: PathBuf,
    size: u64,
    books: Arc<dyn Books>,
    state: Mutex<BlockTable>,
}

impl Blocks {
    /// The blocks of `remote` (archive `archive` of the mount) in `file` (at `path`, for
    /// messages), which is made as long as the object. `listed` names the blocks a clean
    /// earlier mount of the same version left there (one number a line): they are present,
    /// and the caller charges them ([`Blocks::present`]).
    pub fn open(
        remote: Arc<Remote>,
        archive: u64,
        (file, path): (File, PathBuf),
        listed: Option<String>,
        books: Arc<dyn Books>,
    ) -> io::Result<Arc<Blocks>> {
        let size = remote.size();
        file.set_len(size)?;
        let map = match size {
            0 => None,
            // SAFETY: the file is the daemon's own (0600, in its cache directory), read-only
            // here; its bytes are only handed to the kernel as replies, under the lock that
            // evictions punch under, and it is emptied only when this set is dropped.
            _ => Some(unsafe { memmap2::Mmap::map(&file) }?),
        };
        let count = size.div_ceil(BLOCK) as usize;
        let mut have = vec![Have::Absent; count];
        for k in listed.iter().flat_map(|l| l.split_whitespace()) {
            if let Some(h) = k.parse::<usize>().ok().and_then(|k| have.get_mut(k)) {
                *h = Have::Present;
            }
        }
        let cap = Readahead::cap_for(books.budget(), BLOCK);
        static SERIAL: AtomicU64 = AtomicU64::new(0);
        let serial = SERIAL.fetch_add(1, Ordering::Relaxed);
        Ok(Arc::new(Blocks {
            id: SetId {
                archive_id: archive,
                serial,
            },
            remote,
            file,
            map,
            path,
            size,
            books,
            state: Mutex::new(BlockTable {
                have,
                waiting: Vec::new(),
                readahead: Readahead::new(cap),
                closed: false,
            }),
        }))
    }

    /// How many blocks are on their way now.
    #[cfg(test)]
    pub fn fetching(&self) -> usize {
        self.lock()
            .have
            .iter()
            .filter(|&&h| h == Have::Fetching)
            .count()
    }

    /// The blocks present now, with their lengths.
    pub fn present(&self) -> Vec<(u64, u64)> {
        let st = self.lock();
        (0..st.have.len() as u64)
            .filter(|&k| st.have[k as usize] == Have::Present)
            .map(|k| (k, self.len_of(k)))
            .collect()
    }

    /// The object these are blocks of.
    pub fn remote(&self) -> &Remote {
        &self.remote
    }

    fn lock(&self) -> MutexGuard<'_, BlockTable> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn len_of(&self, k: u64) -> u64 {
        BLOCK.min(self.size - k * BLOCK)
    }

    /// Bytes `[offset, end)` of the object (clamped to it), to `done`, which must only hand
    /// them to the kernel (a FUSE reply: they may be a slice of the block file's mapping): at
    /// once when every block is here, else from the I/O thread that fetched the last one
    /// missing.
    pub fn read(self: &Arc<Self>, offset: u64, end: u64, done: ReadDone) {
        self.read_for(offset, end, done, true);
    }

    /// Bytes `[offset, end)` of the object (clamped to it), copied for the daemon itself
    /// (parsing), to `done`, which is never called under the blocks' lock: it may read again.
    pub fn read_own(self: &Arc<Self>, offset: u64, end: u64, done: ReadDone) {
        self.read_for(offset, end, done, false);
    }

    fn read_for(self: &Arc<Self>, offset: u64, end: u64, done: ReadDone, to_kernel: bool) {
        let end = end.min(self.size);
        if offset >= end {
            return done(Ok(&[]));
        }
        let (first, last) = (offset / BLOCK, (end - 1) / BLOCK);
        let mut st = self.lock();
        // A small object's first read brings all of it: an archive's first open (its end and
        // central directory) then costs one round trip, and its members' reads none.
        let whole = self.size <= SMALL && st.have.iter().all(|&h| h == Have::Absent);
        let fetch = match whole {
            true => 0..=st.have.len() as u64 - 1,
            false => first..=last,
        };
        let wanted = claim(&mut st.have, fetch);
        let BlockTable {
            have, readahead, ..
        } = &mut *st;
        let count = have.len() as u64;
        let ahead = readahead.plan((offset, end), (BLOCK, count), |k| {
            have[k as usize] == Have::Absent
        });
        for &k in &ahead {
            have[k as usize] = Have::Fetching;
        }
        if (first..=last).all(|k| st.have[k as usize] == Have::Present) {
            // Read under the lock: an eviction punches under it too, never under a read. The
            // readahead it asked for is started once the lock is let go.
            if to_kernel {
                self.reply(offset, end, done);
                drop(st);
                return self.start(&ahead, Fetch::Ahead);
            }
            let bytes = self.pread(offset, end);
            drop(st);
            self.start(&ahead, Fetch::Ahead);
            return answer(done, bytes);
        }
        st.waiting.push(Waiting {
            offset,
            end,
            done,
            to_kernel,
        });
        drop(st);
        self.start(&wanted, Fetch::Wanted);
        self.start(&ahead, Fetch::Ahead);
    }

    /// Starts fetching the blocks of `[offset, end)` that are neither here nor on their way,
    /// without a read waiting for them and without counting as a read (the readahead does not
    /// see it): a read that will need them finds them on their way. Nothing for an object of
    /// at most [`SMALL`] bytes, which its first read fetches whole.
    pub fn prefetch(self: &Arc<Self>, offset: u64, end: u64) {
        let end = end.min(self.size);
        if offset >= end || self.size <= SMALL {
            return;
        }
        let wanted = claim(&mut self.lock().have, offset / BLOCK..=(end - 1) / BLOCK);
        self.start(&wanted, Fetch::Wanted);
    }

    /// Reads exactly `buf.len()` bytes at `offset`, waiting for them (never call this on the
    /// remote client's I/O threads): for parsing and decoding, which run on threads of their
    /// own.
    pub fn read_exact_at(self: &Arc<Self>, buf: &mut [u8], offset: u64) -> Result<()> {
        let end = offset + buf.len() as u64;
        if end > self.size {
            return Err(Error::Corrupt {
                what: self.remote.display().to_string(),
                cause: format!("range {offset}..{end} is past the end of the object"),
            });
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let done: ReadDone = Box::new(move |r| {
            let _ = tx.send(r.map(<[u8]>::to_vec));
        });
        self.read_own(offset, end, done);
        let bytes = rx.recv().map_err(|_| Error::Remote {
            url: self.remote.display().to_string(),
            cause: "the read was never answered".into(),
        })??;
        buf.copy_from_slice(&bytes);
        Ok(())
    }

    /// Hands bytes `[offset, end)` (present blocks, under the state lock) to `done`, a reply
    /// to the kernel: a slice of the mapping, which it copies to the reader (then unmapped
    /// again). The daemon's own reads get a copy made with `pread` instead: a load from a
    /// mapping of a file cut short by someone else would be SIGBUS.
    fn reply(&self, offset: u64, end: u64, done: ReadDone) {
        match &self.map {
            Some(map) => {
                done(Ok(&map[offset as usize..end as usize]));
                unmap_pages(map, offset, end - offset);
            }
            None => answer(done, self.pread(offset, end)),
        }
    }

    /// Bytes `[offset, end)` of the file (present blocks only), into a buffer that is never
    /// zeroed first: a read's bytes are copied once here, and clearing them before would cost
    /// as much again.
    fn pread(&self, offset: u64, end: u64) -> Result<Vec<u8>> {
        let len = (end - offset) as usize;
        let mut buf = Vec::with_capacity(len);
        while buf.len() < len {
            let (done, at) = (buf.len(), offset + buf.len() as u64);
            let spare = &mut buf.spare_capacity_mut()[..len - done];
            let n = match rustix::io::pread(&self.file, spare, at) {
                Ok((read, _)) if !read.is_empty() => read.len(),
                Ok(_) => {
                    let e = std::io::Error::from(std::io::ErrorKind::UnexpectedEof);
                    return Err(Error::io("read", self.path.display().to_string(), e));
                }
                Err(rustix::io::Errno::INTR) => 0,
                Err(e) => return Err(Error::io("read", self.path.display().to_string(), e.into())),
            };
            // SAFETY: pread initialised the `n` bytes after the first `done`, within `len`,
            // which is within the capacity.
            unsafe { buf.set_len(done + n) };
        }
        Ok(buf)
    }

    /// Fetches the blocks `ks` (sorted): one request per contiguous run of at most
    /// [`PER_REQUEST`] blocks, all at once. Each block is written as its bytes arrive and
    /// serves its readers as soon as it is whole.
    fn start(self: &Arc<Self>, ks: &[u64], how: Fetch) {
        let mut i = 0;
        while i < ks.len() {
            let mut j = i + 1;
            while j < ks.len() && ks[j] == ks[j - 1] + 1 && j - i < PER_REQUEST {
                j += 1;
            }
            let blocks: Range<u64> = ks[i]..ks[j - 1] + 1;
            let range = blocks.start * BLOCK..(blocks.end * BLOCK).min(self.size);
            let (me, also) = (self.clone(), self.clone());
            // The first block of the request not yet whole: where a failure starts. Blocks
            // before it landed, and may since have been evicted and be on their way again by
            // another request, or be all that a waiting read needed from this one.
            let next = Arc::new(AtomicU64::new(blocks.start));
            let failed_from = next.clone();
            let land = move |at: u64, bytes: &[u8]| {
                me.file
                    .write_all_at(bytes, at)
                    .map_err(|e| Error::io("write", me.path.display().to_string(), e))?;
                let end = at + bytes.len() as u64;
                let whole = match end == me.size {
                    true => blocks.end,
                    false => end / BLOCK,
                };
                // Land and done run one after the other, on the request's task.
                let from = next.load(Ordering::Relaxed);
                if whole > from {
                    me.landed(from..whole, Ok(()));
                    next.store(whole, Ordering::Relaxed);
                }
                Ok(())
            };
            let done = move |result: Result<()>| {
                if let Err(e) = result {
                    // Blocks already whole were answered; the rest failed.
                    let from = failed_from.load(Ordering::Relaxed);
                    also.landed(from..blocks.end, Err(e));
                }
            };
            self.remote.fetch(range, how, land, done);
            i = j;
        }
    }

    /// Blocks `blocks` are whole in the file (charged, then every read they complete answered),
    /// or could not be fetched (every read waiting on one of them fails; those already present
    /// stay).
    fn landed(self: &Arc<Self>, blocks: Range<u64>, result: Result<()>) {
        if result.is_ok() {
            self.books
                .charge(blocks.clone().map(|k| self.len_of(k)).sum());
        }
        let mut answers: Vec<(ReadDone, Error)> = Vec::new();
        let mut ready = Vec::new();
        let mut copies = Vec::new();
        let mut added = Vec::new();
        let mut again = Vec::new();
        {
            let mut st = self.lock();
            let closed = st.closed;
            for k in blocks.clone() {
                let have = &mut st.have[k as usize];
                match (&result, *have) {
                    (_, Have::Present) => {}
                    (Ok(()), _) if !closed => {
                        *have = Have::Present;
                        added.push(k);
                    }
                    _ => *have = Have::Absent,
                }
            }
            let waiting = std::mem::take(&mut st.waiting);
            for w in waiting {
                let ks = w.offset / BLOCK..=(w.end - 1) / BLOCK;
                let touched = ks.clone().any(|k| blocks.contains(&k));
                match &result {
                    Err(e)
                        if touched && ks.clone().any(|k| st.have[k as usize] != Have::Present) =>
                    {
                        answers.push((w.done, e.clone()))
                    }
                    _ if ks.clone().all(|k| st.have[k as usize] == Have::Present) => {
                        match w.to_kernel {
                            true => ready.push(w),
                            false => copies.push((w.done, self.pread(w.offset, w.end))),
                        }
                    }
                    _ => st.waiting.push(w),
                }
            }
            for w in ready {
                self.reply(w.offset, w.end, w.done);
            }
            // A block a read still waits for may have been evicted since it landed (the
            // budget is small, or readahead filled it): no fetch would ever bring it back.
            let BlockTable { have, waiting, .. } = &mut *st;
            for w in waiting.iter() {
                for k in w.offset / BLOCK..=(w.end - 1) / BLOCK {
                    if !closed && have[k as usize] == Have::Absent {
                        have[k as usize] = Have::Fetching;
                        again.push(k);
                    }
                }
            }
        }
        again.sort_unstable();
        again.dedup();
        self.start(&again, Fetch::Wanted);
        if result.is_ok() {
            // Charged above for every block; those not added (closed, or there already)
            // give theirs back.
            let refund = blocks.clone().filter(|k| !added.contains(k));
            let filed: Vec<(u64, u64)> = added.iter().map(|&k| (k, self.len_of(k))).collect();
            self.books
                .settle(self.id, &filed, refund.map(|k| self.len_of(k)).sum());
        }
        for (done, e) in answers {
            done(Err(e));
        }
        for (done, bytes) in copies {
            answer(done, bytes);
        }
    }

    /// Evicted: block `k` goes from the file (if it is still here).
    pub fn evict(&self, k: u64) {
        let mut st = self.lock();
        if !st.closed && st.have.get(k as usize) == Some(&Have::Present) {
            st.have[k as usize] = Have::Absent;
            if let Err(e) = punch_hole(&self.file, k * BLOCK, k * BLOCK + self.len_of(k)) {
                log::debug!("cannot punch block {k} of {}: {e}", self.path.display());
            }
        }
    }

    /// At unmount: the file synced, then its present blocks listed (one number a line), for
    /// the caller to keep beside the file so that the next mount of this version reuses
    /// exactly those; None if the file cannot be synced. From the listing on, no block is
    /// punched or added (a fetch landing late, an eviction), and one being written as the
    /// daemon exits is not in the list: only whole, synced blocks are ever reused.
    pub fn close(&self) -> Option<String> {
        self.file.sync_data().ok()?;
        let mut st = self.lock();
        st.closed = true;
        let listed = (0..st.have.len())
            .filter(|&k| st.have[k] == Have::Present)
            .map(|k| format!("{k}\n"))
            .collect();
        Some(listed)
    }
}

/// The blocks of `ks` that are absent, marked fetching: the caller fetches them.
fn claim(have: &mut [Have], ks: std::ops::RangeInclusive<u64>) -> Vec<u64> {
    ks.filter(|&k| {
        let absent = have[k as usize] == Have::Absent;
        if absent {
            have[k as usize] = Have::Fetching;
        }
        absent
    })
    .collect()
}

impl Drop for Blocks {
    /// The last reader of the object is gone before the unmount (its archive closed as least
    /// recently used): its blocks leave the books and the disk. Those of a set listed at
    /// unmount stay, for the next mount.
    fn drop(&mut self) {
        let st = self.state.get_mut().unwrap_or_else(|p| p.into_inner());
        if st.closed {
            return;
        }
        let present: Vec<u64> = (0..st.have.len() as u64)
            .filter(|&k| st.have[k as usize] == Have::Present)
            .collect();
        self.books.forget(self.id, &present);
        let _ = self.file.set_len(0);
    }
}

#[cfg(test)]
mod fixture;
#[cfg(test)]
mod tests;
