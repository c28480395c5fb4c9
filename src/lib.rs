//! npzfs mounts a NumPy `.npz` archive read-only, so that each member `X.npy` is a regular
//! file that `np.load(path, mmap_mode='r')`, `mmap(2)` or any other reader can use through the
//! kernel.
//!
//! Data flow: the archive is opened and mapped ([`archive`]); its central directory is read
//! ([`central`]) and becomes a `Vec<Member>` ([`index`]); member names become an immutable
//! inode table ([`tree`]); the filesystem core ([`fs`]) answers lookups from the tree and
//! reads of stored members with slices of the archive mapping at `data_start + offset`, which
//! the thin FUSE adapter ([`fuse`]) hands to the kernel. [`daemon`] runs the process (readiness, signals), and
//! [`mount`] mounts it as `fuse.npzfs`.
//!
//! Glossary (one name per concept):
//! * *member*: one ZIP entry of the archive.
//! * *node* / *ino*: an entry of the mounted tree and its inode number (root = 1).
//! * *handle* / *fh*: an open file as the kernel names it.
//! * *offset*: a position within a member's uncompressed bytes.
//! * *data_start*: where a member's bytes begin within the archive.
//! * *size*: a member's uncompressed size; *compressed_size*: the bytes it occupies.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod archive;
pub mod cache;
pub mod central;
pub mod daemon;
pub mod error;
pub mod fs;
pub mod fuse;
pub mod index;
pub mod logging;
pub mod manpage;
pub mod mount;
pub mod mountpoint;
pub mod options;
pub mod owner;
pub mod passthrough;
pub mod preflight;
pub mod tree;
