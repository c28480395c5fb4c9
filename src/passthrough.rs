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
    ///
    /// The kernel keeps an inode in one mode at a time: it fails (EIO) a normal open while the
    /// inode has passthrough opens, and a passthrough open while it has normal ones. So the
    /// choice and its count are made under one lock, and once an inode has a passthrough
    /// open every further open joins it, even one whose caller found the member not complete
    /// (a race with the decoder finishing, seen under load: opens failing with EIO).
    pub fn open(&self, ino: u64, complete: Option<File>, reply: ReplyOpen) {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed) + 1;
        let mut st = self.lock();
        let passthrough = if !self.enabled.load(Ordering::Relaxed) {
            None
        } else if let Some(id) = st.by_ino.get(&ino).and_then(Weak::upgrade) {
            Some(id)
        } else if st.cached.get(&ino).is_some_and(|&n| n > 0) {
            None
        } else if let Some(file) = complete {
            // Under the lock: an ioctl, quick, and it must not race another open's choice.
            match reply.open_backing(&file) {
                Ok(id) => Some(Arc::new(id)),
                Err(e) => {
                    log::info!("passthrough unavailable ({e}); serving through the normal path");
                    self.enabled.store(false, Ordering::Relaxed);
                    None
                }
            }
        } else {
            None
        };
        match passthrough {
            Some(id) => {
                st.by_ino.insert(ino, Arc::downgrade(&id));
                st.by_fh.insert(fh, id.clone());
                drop(st);
                log::debug!("open ino {ino}: passthrough to its cache file");
                reply.opened_passthrough(FileHandle(fh), FopenFlags::empty(), &id);
            }
            None => {
                *st.cached.entry(ino).or_default() += 1;
                drop(st);
                reply.opened(FileHandle(fh), FopenFlags::FOPEN_KEEP_CACHE);
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
