//! The cache's side of remote archives' blocks (`bytes/blocks.rs`): one block set per object
//! version, handed out live; its bytes charged in the mount's books through [`Books`]; its
//! present blocks listed beside it at unmount for the next mount.

use std::sync::{Arc, Weak};

use super::pool::Pool;
use super::whole::Cache;
use crate::bytes::{Blocks, Books, Identity, SetId};
use crate::error::{Error, Result};
use crate::remote::Remote;

impl Books for Pool {
    fn charge(&self, len: u64) {
        let victims = self.lock().charge(len);
        victims.apply();
    }

    fn settle(&self, set: SetId, filed: &[(u64, u64)], refund: u64) {
        let victims = self.lock().file_blocks(set, filed, refund);
        victims.apply();
    }

    fn forget(&self, set: SetId, present: &[u64]) {
        self.lock().forget_blocks(set, present);
    }

    fn budget(&self) -> u64 {
        self.lock().budget()
    }
}

impl Cache {
    /// The local blocks of remote archive `remote`, whose id in the mount is `id`, in its
    /// directory of the cache (those a clean earlier mount of the same version left reused).
    pub fn blocks(&self, remote: Arc<Remote>, id: u64) -> Result<Arc<Blocks>> {
        let identity = Identity::of_remote(&remote);
        // One set per object version: a reopen while the first is in use shares its blocks.
        // Upgraded outside the lock: the last reference to a set may go with ours, and its
        // drop takes the lock.
        let live = self.pool.lock().block_set(id);
        if let Some(blocks) = live.as_ref().and_then(Weak::upgrade)
            && Identity::of_remote(blocks.remote()) == identity
        {
            return Ok(blocks);
        }
        let path = std::path::PathBuf::from(remote.display());
        let store = self.store(&path, identity, id)?;
        let failed = |e| {
            let what = format!("the block file in {}", store.dir().display());
            Error::io("open", what, e)
        };
        let (file, listed) = store.open_blocks().map_err(failed)?;
        let books: Arc<dyn Books> = self.pool.clone();
        let file = (file, store.blocks_path());
        let blocks = Blocks::open(remote, id, file, listed, books).map_err(failed)?;
        let present = blocks.present();
        let victims = self
            .pool
            .lock()
            .add_block_set(blocks.id, Arc::downgrade(&blocks), &present);
        victims.apply();
        if !present.is_empty() {
            log::debug!(
                "{}: {} blocks reused from an earlier mount",
                blocks.remote().display(),
                present.len()
            );
        }
        Ok(blocks)
    }

    /// At unmount: every live block set synced and its present blocks listed for the next
    /// mount.
    pub(super) fn close_blocks(&self) {
        let sets = self.pool.lock().block_sets();
        for blocks in sets.iter().filter_map(Weak::upgrade) {
            let store = self.pool.lock().store(blocks.id.archive_id).cloned();
            if let (Some(store), Some(listed)) = (store, blocks.close()) {
                let _ = store.list_blocks(&listed);
            }
        }
    }
}
