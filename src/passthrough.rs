//! FUSE passthrough for members whose cache file is complete: the kernel then reads and maps
//! the cache file itself, at local-disk speed (about 2x the normal FUSE path here; DESIGN.md).
//!
//! Needs Linux 6.9+ and CAP_SYS_ADMIN; without them every open silently takes the normal path.
//! The kernel wants one backing id per inode shared by all its passthrough opens, and refuses
//! passthrough for an inode that has normal (page-cached) opens, so those are counted too.

use std::collections::HashMap;
use std::fs::File;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use fuser::{BackingId, FileHandle, FopenFlags, ReplyOpen};

#[derive(Default)]
struct State {
    /// Passthrough handles and the backing id each keeps alive.
    by_fh: HashMap<u64, Arc<BackingId>>,
    /// The shared backing id of each inode with passthrough opens.
    by_ino: HashMap<u64, Weak<BackingId>>,
    /// Normal opens per inode.
    cached: HashMap<u64, usize>,
}

/// Open handles, and which of them the kernel serves by passthrough.
#[derive(Default)]
pub struct Handles {
    enabled: AtomicBool,
    next_fh: AtomicU64,
    state: Mutex<State>,
}

impl Handles {
    /// Called from `init` once the kernel agreed to passthrough.
    pub fn enable(&self) {
        self.enabled.store(true, Ordering::Relaxed);
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Replies to an open of `ino`: by passthrough to `complete` (a complete cache file) when
    /// possible, else as a normal open that keeps the page cache across opens.
    pub fn open(&self, ino: u64, complete: Option<File>, reply: ReplyOpen) {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed) + 1;
        if let Some(file) = complete.filter(|_| self.enabled.load(Ordering::Relaxed))
            && let Some(id) = self.backing_id(ino, &file, &reply)
        {
            let mut st = self.lock();
            st.by_ino.insert(ino, Arc::downgrade(&id));
            st.by_fh.insert(fh, id.clone());
            drop(st);
            log::debug!("open ino {ino}: passthrough to its cache file");
            return reply.opened_passthrough(FileHandle(fh), FopenFlags::empty(), &id);
        }
        *self.lock().cached.entry(ino).or_default() += 1;
        reply.opened(FileHandle(fh), FopenFlags::FOPEN_KEEP_CACHE);
    }

    /// The inode's backing id, registering `file` if it has none; `None` when the inode has
    /// normal opens or the kernel refuses (then passthrough is off for good).
    fn backing_id(&self, ino: u64, file: &File, reply: &ReplyOpen) -> Option<Arc<BackingId>> {
        {
            let st = self.lock();
            if st.cached.get(&ino).is_some_and(|&n| n > 0) {
                return None;
            }
            if let Some(id) = st.by_ino.get(&ino).and_then(Weak::upgrade) {
                return Some(id);
            }
        }
        match reply.open_backing(file) {
            Ok(id) => Some(Arc::new(id)),
            Err(e) => {
                log::info!("passthrough unavailable ({e}); serving through the normal path");
                self.enabled.store(false, Ordering::Relaxed);
                None
            }
        }
    }

    /// Forgets handle `fh` of `ino`; a passthrough handle's backing id goes with its last one.
    pub fn release(&self, ino: u64, fh: u64) {
        let mut st = self.lock();
        if st.by_fh.remove(&fh).is_some() {
            if st.by_ino.get(&ino).is_some_and(|w| w.strong_count() == 0) {
                st.by_ino.remove(&ino);
            }
        } else if let Some(n) = st.cached.get_mut(&ino) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                st.cached.remove(&ino);
            }
        }
    }

    /// Whether passthrough is in use.
    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }
}
