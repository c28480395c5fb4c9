//! The byte budget: what is evicted, in which order, when room is needed.
//!
//! Order: complete members no one holds (least recently used first), then spans of sparse
//! members (least recently filled first), then members still decoding after their last close
//! (their decoders are cancelled). Members held open are never evicted whole; sparse ones
//! lose spans whether held or not, which is what keeps a member larger than the cache within
//! it.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::entry::{Entry, Fill};
use super::{Shared, State, store};

/// What an eviction took: files to delete and spans whose holes to punch, once the cache
/// lock is released.
#[derive(Default)]
#[must_use]
pub(super) struct Victims {
    pub(super) files: Vec<PathBuf>,
    pub(super) holes: Vec<(Arc<Entry>, usize)>,
}

impl Victims {
    /// Deletes the files and punches the holes, outside the cache lock.
    pub(super) fn apply(self) {
        self.files.iter().for_each(|p| store::remove(p));
        Victims::punch(self.holes);
    }
}

impl Shared {
    /// Evicts members no one holds until `incoming` more bytes fit; returns their files.
    /// Complete ones go first, least recently used first; then, if that is not enough, those
    /// still decoding or syncing after their last close (their decoders are cancelled).
    pub(super) fn evict(&self, st: &mut State, incoming: u64) -> Victims {
        let mut victims = Victims::default();
        while st.used + incoming > self.budget {
            let (key, charged) = if let Some((_, key)) = st.done.pop_lru() {
                st.adopted.remove(&key.index);
                victims.files.push(self.store.complete_path(key));
                (key, key.size)
            } else if let Some(((index, i), len)) = st.spans.pop_lru() {
                st.used -= len;
                if let Some(entry) = st.live.get(&index).cloned()
                    && entry.evict_span(i)
                {
                    victims.holes.push((entry.clone(), i));
                    if entry.pins.load(Ordering::SeqCst) == 0 {
                        self.retire_if_idle(st, &entry, &mut victims);
                    }
                }
                self.stats.evicted_spans.fetch_add(1, Ordering::Relaxed);
                self.stats.evicted_bytes.fetch_add(len, Ordering::Relaxed);
                log::trace!("evicting span {i} of member {index} ({len} bytes)");
                continue;
            } else if let Some(entry) = self.unheld(st) {
                st.live.remove(&entry.key.index);
                let charged = entry.charge();
                entry.cancel();
                // Whoever takes the partial file settles it: if the decoder got there first,
                // the file already has its complete name.
                match entry.take_part() {
                    Some(part) => victims.files.push(part),
                    None if matches!(entry.fill(), Fill::Complete) => {
                        victims.files.push(self.store.complete_path(entry.key));
                    }
                    None => {}
                }
                (entry.key, charged)
            } else {
                break;
            };
            st.used -= charged;
            self.stats.evicted.fetch_add(1, Ordering::Relaxed);
            self.stats
                .evicted_bytes
                .fetch_add(charged, Ordering::Relaxed);
            log::debug!("evicting member {} ({charged} bytes)", key.index);
        }
        victims
    }

    /// A live entry no open handle holds (its decoder is still running or syncing); sparse
    /// members are evicted span by span instead.
    fn unheld(&self, st: &State) -> Option<Arc<Entry>> {
        st.live
            .values()
            .find(|e| e.pins.load(Ordering::SeqCst) == 0 && !e.is_sparse())
            .cloned()
    }

    /// Lets go of a sparse member no one holds once nothing of it is left (its last span
    /// evicted, none filling, no read waiting): its cache file is deleted and its descriptors
    /// closed. A later open starts a new sparse entry from the seek index, which stays.
    pub(super) fn retire_if_idle(&self, st: &mut State, entry: &Arc<Entry>, victims: &mut Victims) {
        if !entry.idle() {
            return;
        }
        st.live.remove(&entry.key.index);
        victims.files.extend(entry.take_part());
        log::debug!("{}: no span left, closed", entry.name);
    }

    /// Files a member no one holds any more, whose decoding has settled: a complete one that
    /// fits is kept for reuse, anything else leaves the budget. Returns files to delete.
    pub(super) fn dispose(&self, st: &mut State, entry: &Entry, fill: &Fill) -> Victims {
        match fill {
            Fill::Complete if entry.key.size <= self.budget => {
                st.done.put(entry.key.index, entry.key);
                self.evict(st, 0)
            }
            Fill::Complete => {
                st.used -= entry.key.size;
                log::debug!(
                    "{} is larger than the cache: deleted on last close",
                    entry.name
                );
                Victims {
                    files: vec![self.store.complete_path(entry.key)],
                    holes: Vec::new(),
                }
            }
            _ => {
                st.used -= entry.charge();
                Victims::default()
            }
        }
    }
}
