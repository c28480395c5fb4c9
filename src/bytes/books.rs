//! How a block set keeps its books. The byte budget is the mount's, kept by the cache above
//! this layer; the byte layer knows nothing of the cache and reports every block it adds or
//! drops through [`Books`], which the cache implements.

/// One block set: the archive's id in the mount, and the set's own serial number (unique in
/// the process), so a set being dropped never touches the books of one made after it for
/// the same archive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SetId {
    /// The archive's (or plain object's) id in the mount.
    pub archive_id: u64,
    /// The set's serial number.
    pub serial: u64,
}

/// Where a block set charges the bytes it keeps on disk.
pub trait Books: Send + Sync {
    /// `len` bytes of blocks are about to be written: makes room for them (evicting others)
    /// and charges them.
    fn charge(&self, len: u64);
    /// Blocks charged by [`Books::charge`] landed: `filed` (block, bytes) are present now and
    /// may be evicted, `refund` bytes were charged for blocks that were not kept.
    fn settle(&self, set: SetId, filed: &[(u64, u64)], refund: u64);
    /// The set is going with these present blocks: they leave the books.
    fn forget(&self, set: SetId, present: &[u64]);
    /// The whole budget, in bytes: readahead is sized by it.
    fn budget(&self) -> u64;
}
