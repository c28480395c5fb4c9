//! npzfs mounts a NumPy `.npz` archive read-only, so that each member `X.npy` is a regular
//! file that `np.load(path, mmap_mode='r')`, `mmap(2)` or any other reader can use through the
//! kernel. ARCHITECTURE.md (beside Cargo.toml) draws the whole design.
//!
//! Layers, each using only those below it: the counters every layer bumps ([`metrics`]); the
//! remote client ([`remote`]); an archive as
//! bytes, local or remote, with its identity and ranged reads ([`bytes`]); the ZIP format over
//! those bytes: central directory, members, inflate and the other methods ([`zipfile`]); the
//! decompression [`cache`]; what a mount shows (member names become an immutable inode table,
//! [`tree`]; one archive served, [`archive_fs`]; many, [`forest`]); the filesystem core
//! ([`fs`]), which keeps the open handles ([`handles`]) and reads: a stored member is a range
//! of the archive at `data_start + offset`, handed to the kernel; a compressed one goes to the
//! cache, whose slot for it answers from its cache file, or parks the read until the thread
//! decoding that range (a first pass from the start, or one span from its seek point) answers
//! it. The thin FUSE adapter ([`fuse`]) only translates. [`stats`] reads the counters out
//! (the root's `user.npzfs.stats`, `npzfs --stats`, `-o metrics=` for Prometheus). [`daemon`] runs the process
//! (readiness, signals, owner), [`preflight`] tells why FUSE cannot be had, and [`mount`]
//! mounts it as `fuse.npzfs`.
//!
//! Glossary (one name per concept):
//! * *member*: one ZIP entry of the archive; its *number* is its position in the central
//!   directory (a central directory *record* is what the directory states of it).
//! * *node* / *ino*: an entry of the mounted tree and its inode number (root = 1).
//! * *handle* / *fh*: an open file as the kernel names it; served *stored*, *cached* or by
//!   *passthrough*.
//! * *offset*: a position within a member's uncompressed bytes.
//! * *data_start*: where a member's bytes begin within the archive.
//! * *size*: a member's uncompressed size; *compressed_size*: the bytes it occupies.
//! * *slot*: a member in the decompression cache: its cache file, pins and fill state.
//! * *first pass*: the decode of a member from its start, which records its *seek points*.
//! * *seek index*: a member's seek points on disk; *span*: the bytes from one point to the
//!   next, decoded on their own when a member is *sparse*.
//! * *window*: the part of a member larger than the cache that its first pass keeps on disk;
//!   *history*: the 32 KiB of output a deflate block may refer back to.
//! * *ledger*: the cache's books (live, kept, spans, blocks, bytes used and pending) under the
//!   cache lock; *charge*, *refund*, *file* and *evict* are its only changes.
//! * *block*: 1 MiB of a remote object on local disk ([`bytes::BLOCK`]); a *block set* is one
//!   object version's blocks. *Disk block*: the 4 KiB unit holes are punched in.
//! * *archive id*: an archive's number in the mount (`archive_id`), not the archive itself.
//! * *pending*: bytes charged for what is not filed yet (a span or blocks being written).

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod archive_fs;
pub mod attr;
pub mod bytes;
pub mod cache;
pub mod daemon;
pub mod error;
pub mod extract;
pub mod forest;
pub mod fs;
pub mod fuse;
pub mod handles;
pub mod info;
pub mod lane;
pub mod list;
pub mod logging;
pub mod manpage;
pub mod metrics;
pub mod mount;
pub mod mounted;
pub mod mountpoint;
pub mod npy;
pub mod option_table;
pub mod options;
pub mod owner;
pub mod peek;
pub mod preflight;
pub mod remote;
pub mod source;
pub mod stats;
pub mod tree;
pub mod zipfile;
