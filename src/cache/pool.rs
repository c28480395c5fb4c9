//! What the parts of the mount's cache share: the books under the cache lock and the counters
//! ([`Pool`]), and what one archive's part and its decoding threads share ([`Shared`]).

use std::sync::{Arc, Mutex, MutexGuard};

use super::ledger::Ledger;
use super::slot::SlotId;
use super::stats::Stats;
use super::store::Store;

/// What every archive's part of the cache shares: the books and the counters.
pub struct Pool {
    ledger: Mutex<Ledger>,
    /// The mount's counters, bumped without the lock.
    pub stats: Arc<Stats>,
}

impl Pool {
    /// Empty books for `budget` bytes.
    pub fn new(budget: u64) -> Pool {
        let stats = Arc::new(Stats::default());
        Pool {
            ledger: Mutex::new(Ledger::new(budget, stats.clone())),
            stats,
        }
    }

    /// The cache lock: the ledger.
    pub fn lock(&self) -> MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The ledger if the lock is free now (for the stored read path, which must never wait).
    pub fn try_lock(&self) -> Option<MutexGuard<'_, Ledger>> {
        match self.ledger.try_lock() {
            Ok(ledger) => Some(ledger),
            Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    }
}

/// What one archive's part of the cache and its decoding threads share.
pub struct Shared {
    /// The mount's books and counters.
    pub pool: Arc<Pool>,
    /// The archive's directory in the cache.
    pub store: Arc<Store>,
}

impl Shared {
    /// The cache lock: the ledger of the whole mount.
    pub fn lock(&self) -> MutexGuard<'_, Ledger> {
        self.pool.lock()
    }

    /// The mount's counters.
    pub fn stats(&self) -> &Stats {
        &self.pool.stats
    }

    /// The ledger's id of member `number` of this archive.
    pub fn id(&self, number: usize) -> SlotId {
        (self.store.id, number)
    }
}
