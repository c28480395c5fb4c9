//! Open handles, owned by the core: for each `fh`, the member it reads and how it is served
//! (straight from the archive, from the decompression cache, or by FUSE passthrough from a
//! complete cache file, which the kernel then reads without us).
//!
//! Passthrough (Linux 6.9+, CAP_SYS_ADMIN in the initial namespace) reads and maps a complete
//! cache file at local-disk speed, about twice the normal FUSE path here (ARCHITECTURE.md).
//! The kernel wants one backing per inode shared by all its passthrough opens, and keeps an
//! inode in one mode at a time: it fails (EIO) a normal open while the inode has passthrough
//! opens, and a passthrough open while it has normal ones. So the choice of mode and its
//! count are made under this table's one lock, and once an inode has a passthrough open every
//! further open joins it, even one whose caller found the member not complete (a race with
//! the decoder finishing, seen under load as opens failing with EIO).
//!
//! The backing is the adapter's (`B`: fuser's `BackingId`); the core only keeps it alive for
//! as long as a handle uses it. The cache's own pins count opens per member for eviction;
//! this table counts normal opens per inode for the kernel's mode rule: the two answer
//! different questions under different locks.

use std::collections::HashMap;
use std::fs::File;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};

use crate::metrics::{METRICS, Path};
use crate::tree::Ino;

/// How a handle is served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Served {
    /// A stored member: slices of the archive mapping.
    Stored,
    /// A compressed member, through the decompression cache.
    Cached,
    /// A compressed member whose complete cache file the kernel reads itself.
    Passthrough,
    /// A stored member served from the archive while its copy into the cache runs
    /// (`-o materialize`); the handle pins the copy.
    Copying,
    /// A regular file of a source tree, read from it.
    Source,
}

impl Served {
    /// Where its bytes come from, as the metrics count them.
    pub fn path(self) -> Path {
        match self {
            Served::Stored | Served::Copying => Path::Archive,
            Served::Cached => Path::Cache,
            Served::Passthrough => Path::Passthrough,
            Served::Source => Path::Source,
        }
    }
}

/// One open handle; `T` says what it reads (for the core: a member of an archive, or a file
/// of a source tree).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Handle<T> {
    /// The inode it was opened on.
    pub ino: Ino,
    /// What it reads.
    pub target: T,
    /// How it is served.
    pub served: Served,
}

/// An open the table recorded: its handle, and the backing the kernel reads for a
/// passthrough one.
pub struct Opened<B> {
    /// The new handle.
    pub fh: u64,
    /// How it is served.
    pub served: Served,
    /// The backing to reply with, for [`Served::Passthrough`].
    pub backing: Option<Arc<B>>,
}

struct State<B, T> {
    by_fh: HashMap<u64, (Handle<T>, Option<Arc<B>>)>,
    /// The shared backing of each inode with passthrough opens.
    backing: HashMap<Ino, Weak<B>>,
    /// Normal opens per inode of a compressed member.
    normal: HashMap<Ino, usize>,
}

/// Every open handle of the mount.
pub struct Handles<B, T> {
    passthrough: AtomicBool,
    next_fh: AtomicU64,
    /// Every read looks its handle up (shared); opens and releases change the table.
    state: RwLock<State<B, T>>,
}

impl<B, T> Default for Handles<B, T> {
    fn default() -> Handles<B, T> {
        Handles {
            passthrough: AtomicBool::new(false),
            next_fh: AtomicU64::new(0),
            state: RwLock::new(State {
                by_fh: HashMap::new(),
                backing: HashMap::new(),
                normal: HashMap::new(),
            }),
        }
    }
}

impl<B, T: Clone> Handles<B, T> {
    /// From now on, complete cache files are served by passthrough (the kernel agreed).
    pub fn enable_passthrough(&self) {
        self.passthrough.store(true, Ordering::Relaxed);
    }

    /// Whether passthrough is in use.
    pub fn passthrough(&self) -> bool {
        self.passthrough.load(Ordering::Relaxed)
    }

    fn lock(&self) -> RwLockWriteGuard<'_, State<B, T>> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    fn read(&self) -> RwLockReadGuard<'_, State<B, T>> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Records an open of `ino` reading `target`, served as `served` (stored or cached). A
    /// cached one goes by passthrough where it can: to `complete` (its complete cache file),
    /// made a backing by `register` under the lock, or joining the inode's backing.
    pub fn open(
        &self,
        ino: Ino,
        target: T,
        served: Served,
        complete: Option<File>,
        register: impl FnOnce(&File) -> std::io::Result<B>,
    ) -> Opened<B> {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed) + 1;
        let mut st = self.lock();
        let backing = match served {
            Served::Cached if self.passthrough() => self.backing(&mut st, ino, complete, register),
            _ => None,
        };
        let served = match backing {
            Some(_) => Served::Passthrough,
            None => {
                // Every page-cached open counts: a stored member may go passthrough later
                // (`-o materialize`), and the kernel refuses that while it has normal opens.
                *st.normal.entry(ino).or_default() += 1;
                served
            }
        };
        let handle = Handle {
            ino,
            target,
            served,
        };
        st.by_fh.insert(fh, (handle, backing.clone()));
        METRICS.opened(served.path());
        Opened {
            fh,
            served,
            backing,
        }
    }

    /// The inode's backing if it has one, else a new one for `complete` if the inode has no
    /// normal opens; None where passthrough cannot be had (which turns it off for good).
    fn backing(
        &self,
        st: &mut State<B, T>,
        ino: Ino,
        complete: Option<File>,
        register: impl FnOnce(&File) -> std::io::Result<B>,
    ) -> Option<Arc<B>> {
        if let Some(id) = st.backing.get(&ino).and_then(Weak::upgrade) {
            return Some(id);
        }
        if st.normal.get(&ino).is_some_and(|&n| n > 0) {
            return None;
        }
        // Under the lock: an ioctl, quick, and it must not race another open's choice.
        match register(&complete?) {
            Ok(id) => {
                let id = Arc::new(id);
                st.backing.insert(ino, Arc::downgrade(&id));
                Some(id)
            }
            Err(e) => {
                log::info!("passthrough unavailable ({e}); serving through the normal path");
                self.passthrough.store(false, Ordering::Relaxed);
                None
            }
        }
    }

    /// The handle `fh`, if it is open.
    pub fn get(&self, fh: u64) -> Option<Handle<T>> {
        self.read().by_fh.get(&fh).map(|(h, _)| h.clone())
    }

    /// Forgets handle `fh`; a passthrough backing goes with its inode's last handle.
    pub fn release(&self, fh: u64) -> Option<Handle<T>> {
        let mut st = self.lock();
        let (handle, backing) = st.by_fh.remove(&fh)?;
        match handle.served {
            Served::Passthrough => {
                drop(backing);
                if st
                    .backing
                    .get(&handle.ino)
                    .is_some_and(|w| w.strong_count() == 0)
                {
                    st.backing.remove(&handle.ino);
                }
            }
            Served::Cached | Served::Stored | Served::Copying | Served::Source => {
                if let Some(n) = st.normal.get_mut(&handle.ino) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        st.normal.remove(&handle.ino);
                    }
                }
            }
        }
        Some(handle)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file() -> File {
        tempfile::tempfile().unwrap()
    }

    #[test]
    fn without_passthrough_handles_are_what_they_were_opened_as() {
        let h: Handles<u32, usize> = Handles::default();
        let a = h.open(5, 0, Served::Stored, None, |_| Ok(1));
        let b = h.open(6, 1, Served::Cached, Some(file()), |_| Ok(1));
        assert_ne!(a.fh, b.fh);
        assert_eq!((a.served, b.served), (Served::Stored, Served::Cached));
        assert!(b.backing.is_none());
        assert_eq!(h.get(b.fh).map(|x| (x.ino, x.target)), Some((6, 1)));
        assert_eq!(h.release(a.fh).map(|x| x.served), Some(Served::Stored));
        assert!(h.get(a.fh).is_none() && h.release(a.fh).is_none());
    }

    #[test]
    fn an_inode_stays_in_one_mode() {
        let h: Handles<u32, usize> = Handles::default();
        h.enable_passthrough();
        // A normal open first (not complete yet): a later complete open must not pass through.
        let normal = h.open(7, 0, Served::Cached, None, |_| Ok(1));
        let later = h.open(7, 0, Served::Cached, Some(file()), |_| {
            panic!("not registered")
        });
        assert_eq!(
            (normal.served, later.served),
            (Served::Cached, Served::Cached)
        );
        h.release(normal.fh);
        h.release(later.fh);
        // No normal opens left: the next complete open registers a backing, and every
        // further open joins it, complete file or not.
        let first = h.open(7, 0, Served::Cached, Some(file()), |_| Ok(42));
        let joined = h.open(7, 0, Served::Cached, None, |_| panic!("shared"));
        assert_eq!(first.served, Served::Passthrough);
        assert_eq!(joined.served, Served::Passthrough);
        assert!(Arc::ptr_eq(
            first.backing.as_ref().unwrap(),
            joined.backing.as_ref().unwrap()
        ));
        h.release(first.fh);
        h.release(joined.fh);
        drop((first, joined)); // the adapter lets go of its copies once it has replied
        // The backing went with the last handle: a normal open is allowed again.
        assert_eq!(
            h.open(7, 0, Served::Cached, None, |_| Ok(1)).served,
            Served::Cached
        );
    }

    #[test]
    fn a_refused_backing_turns_passthrough_off() {
        let h: Handles<u32, usize> = Handles::default();
        h.enable_passthrough();
        let o = h.open(3, 0, Served::Cached, Some(file()), |_| {
            Err(std::io::Error::from_raw_os_error(libc::EPERM))
        });
        assert_eq!(o.served, Served::Cached);
        assert!(!h.passthrough());
    }
}
