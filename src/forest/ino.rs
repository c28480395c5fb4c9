//! Inode numbers of a mount of sources: unique in the mount, and the same on every mount of
//! the same, unchanged tree.
//!
//! Every entry of the sources (directory, file, symlink, archive) gets a 40-bit *id* from its
//! identity on disk, and its nodes are `id << 24 | local`: local 1 is the entry itself, and an
//! archive's members are its tree's nodes (root 1) at the same place. Id 0 is the mount root,
//! so the root is inode 1 as FUSE wants. An archive's identity includes its size and mtime:
//! replaced or rewritten, it is a new archive with new numbers, so the kernel never mixes the
//! pages of two versions. Two identities hashing to one id (n^2 / 2^41 for n entries: about
//! one tree in 20,000 at 10^4 entries, one in 200 at 10^5) are told apart by taking the next
//! free id; only then can a number depend on the order entries were first seen.

use crate::tree::Ino;

/// Bits of an inode number for the nodes of one entry: an archive of a source tree holds
/// at most 2^24 - 1 nodes (members and their directories).
pub const LOCAL_BITS: u32 = 24;
/// The largest local node number.
pub const MAX_LOCAL: u64 = (1 << LOCAL_BITS) - 1;
/// Ids are below this.
const IDS: u64 = 1 << (64 - LOCAL_BITS);

/// What identifies an entry on disk: (dev, ino), and for an archive its size and mtime too.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Key {
    /// Device.
    pub dev: u64,
    /// Inode on that device.
    pub ino: u64,
    /// Size (archives only; 0 otherwise).
    pub size: u64,
    /// Modification time in nanoseconds (archives only; 0 otherwise).
    pub mtime_ns: i64,
}

impl Key {
    /// The key of file (`dev`, `ino`); an archive's also has its `size` and mtime
    /// (`secs`, `nsec`): a new version of it is a new archive.
    pub fn new(dev: u64, ino: u64, version: Option<(u64, i64, i64)>) -> Key {
        let (size, mtime_ns) = version.map_or((0, 0), |(size, secs, nsec)| {
            (
                size,
                secs.saturating_mul(1_000_000_000).saturating_add(nsec),
            )
        });
        Key {
            dev,
            ino,
            size,
            mtime_ns,
        }
    }
}

/// The inode of node `local` of entry `id`.
pub fn ino(id: u64, local: Ino) -> Ino {
    id << LOCAL_BITS | local
}

/// The entry and the local node of inode `ino`.
pub fn split(ino: Ino) -> (u64, Ino) {
    (ino >> LOCAL_BITS, ino & MAX_LOCAL)
}

/// Where `key` would like to live: a stable hash (splitmix64) into `1..IDS`.
pub fn home(key: &Key) -> u64 {
    let mut h = 0x9e37_79b9_7f4a_7c15u64;
    let words = [key.dev, key.ino, key.size, key.mtime_ns as u64];
    for w in words {
        h = mix(h ^ w);
    }
    h % (IDS - 1) + 1
}

/// The id after `id` when `id` is taken by another key.
pub fn next(id: u64) -> u64 {
    if id + 1 >= IDS { 1 } else { id + 1 }
}

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inodes_round_trip_and_the_root_is_one() {
        assert_eq!(ino(0, 1), 1);
        let i = ino(IDS - 1, MAX_LOCAL);
        assert_eq!(split(i), (IDS - 1, MAX_LOCAL));
        assert_eq!(split(ino(7, 3)), (7, 3));
    }

    #[test]
    fn ids_are_stable_in_range_and_differ_by_version() {
        let key = Key {
            dev: 2049,
            ino: 1234,
            size: 10,
            mtime_ns: 5,
        };
        let id = home(&key);
        assert_eq!(id, home(&key));
        assert!((1..IDS).contains(&id));
        assert_ne!(id, home(&Key { size: 11, ..key }));
        assert_eq!(next(IDS - 1), 1);
    }
}
