//! The byte layer: an archive as bytes, whether a mapped local file or a remote object read by
//! range into blocks on local disk; its identity; ranged reads for the kernel (replies) and
//! for the daemon itself (parsing, decoding). Nothing above this layer knows which kind of
//! archive it reads. Below it are only the remote client (`remote/`) and the error type.
//!
//! * [`archive`]: [`Archive`], the one face of both kinds.
//! * [`blocks`]: a remote object's blocks: fetched, stored, replied from.
//! * [`plain`]: a plain file of a source tree (on disk or in a bucket), read the same way.
//! * [`readahead`]: when and how far to fetch ahead of a sequential reader.
//! * [`books`]: what a block set reports to the mount's budget ([`Books`], which the cache
//!   implements).
//! * [`identity`], [`reply`], [`disk`]: an archive's version, a read's continuation, and
//!   what is done to mappings and files beside reading.

pub mod archive;
pub mod blocks;
pub mod books;
pub mod disk;
pub mod identity;
pub mod plain;
pub mod readahead;
pub mod reply;

pub use archive::{Archive, Reader};
pub use blocks::{BLOCK, Blocks};
pub use books::{Books, SetId};
pub use identity::Identity;
pub use plain::Plain;
pub use reply::{ReadDone, answer};
