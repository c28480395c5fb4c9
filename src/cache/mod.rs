//! The decompression cache: compressed members are decoded into files on disk, under a byte
//! budget, and served from there. ARCHITECTURE.md draws the whole path; in short:
//!
//! * [`ArchiveCache::open`] (`archive_cache.rs`) pins a member for an open handle, and decides how it will be served:
//!   joining the slot already live, reusing a complete file an earlier mount left, sparse
//!   from its seek index (`span_fill.rs`), or by a first pass from the start
//!   (`first_pass.rs`, one thread per member, single flight).
//! * [`ArchiveCache::read`] asks the member's slot (`slot.rs`), which answers at once or parks the
//!   read until the thread writing its range answers it: no request thread ever waits.
//! * The budget (`cache_size`) is kept by the ledger (`ledger.rs`, in `pool.rs`): every member
//!   with a cache file counts its size, every span of a sparse member its disk blocks, every
//!   remote block its bytes (reported through `bytes::Books`, `block_sets.rs`); members held open are
//!   never evicted whole. A deflated member larger than the whole budget keeps only a window
//!   of itself (half the budget) during its first pass and is sparse from then on.
//! * Complete files are verified (size, CRC-32) and renamed into place, so they survive the
//!   daemon and are reused by the next mount of the same, unchanged archive ([`store`]).
//!
//! The mount's [`Cache`] (`whole.rs`) opens each archive's store on first use and adopts the
//! complete files an earlier mount left.
//!
//! Locks: the cache lock (`Pool::lock`, the ledger) is taken before a slot's lock, never the
//! other way round; neither is held across decoding, and the only I/O under the cache lock is
//! a rename (promotion) and a punch (a window turned sparse), each commented where it happens.

mod archive_cache;
mod block_sets;
mod config;
mod copy;
pub mod decoder;
mod first_pass;
mod job;
mod ledger;
mod pool;
pub mod seek_index;
pub mod slot;
mod span_fill;
pub mod spans;
mod stats;
pub mod store;
mod whole;

pub use archive_cache::ArchiveCache;
pub use config::{CacheConfig, DEFAULT_CACHE_SIZE};
pub use slot::Phase;
pub use stats::CacheStats;
pub use whole::Cache;
