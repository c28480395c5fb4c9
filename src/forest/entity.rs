//! What the forest keeps of an entry of the sources it has been asked about: an [`Entity`]
//! (what it is, where, what it was when found), about 700 bytes resident each.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use super::ino::Key;
use crate::error::Error;
use crate::source::{Meta, Type};
use crate::tree::Ino;

/// What an entity is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Is {
    /// The mount root over several sources.
    Top,
    /// A directory of a source tree.
    Dir,
    /// A regular file of a source tree, served from it.
    File,
    /// A symlink of a source tree, shown as one.
    Symlink,
    /// An archive: a directory of its members.
    Archive,
}

/// An entry of the sources the kernel has been told about.
pub struct Entity {
    pub(super) is: Is,
    /// Its parent directory's inode (the root's is itself).
    pub(super) parent: Ino,
    /// Which source it is in, and where below that source's directory.
    pub(super) source: usize,
    pub(super) rel: PathBuf,
    /// What it was when it was found: if the disk says otherwise, it is gone.
    pub(super) key: Key,
    /// Why an archive cannot be served (logged once).
    pub(super) failed: OnceLock<Arc<Error>>,
}

/// What a plain entry of a source is.
pub(super) fn plain(meta: &Meta) -> Is {
    match meta.kind {
        Type::Dir => Is::Dir,
        Type::Symlink => Is::Symlink,
        _ => Is::File,
    }
}
