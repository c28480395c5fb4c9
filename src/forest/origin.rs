//! Where a source's entries come from: a directory on disk ([`SourceDir`], which never
//! follows a symlink) or a prefix of a bucket ([`RemoteDir`], listed by the object store).
//! The forest asks both the same questions and gets answers in the same words ([`Meta`]),
//! so it serves a bucket exactly as it serves a directory.

use std::fs::File;
use std::path::Path;

use crate::error::{Error, Result};
use crate::remote::Remote;
use crate::remote::dir::RemoteDir;
use crate::source::{Meta, SourceDir, component};

/// A source's tree.
pub enum Origin {
    /// A directory (or the directory an archive source is in).
    Local(SourceDir),
    /// A prefix of a bucket (or the place of one remote object).
    Remote(Box<RemoteDir>),
}

/// A regular entry, opened.
pub enum SourceFile {
    /// A file on disk.
    File(File),
    /// A remote object, to be read by range.
    Object(Remote),
}

impl Origin {
    /// Whether it is in a bucket or on a server: answering about it may wait on the network.
    pub fn is_remote(&self) -> bool {
        matches!(self, Origin::Remote(_))
    }

    /// Where `rel` is, for messages.
    pub fn display(&self, rel: &Path) -> String {
        match self {
            Origin::Local(d) => d.display(rel),
            Origin::Remote(r) => r.display(rel),
        }
    }

    /// What `rel` is now (a symlink is itself).
    pub fn stat(&self, rel: &Path) -> Result<Meta> {
        match self {
            Origin::Local(d) => d
                .stat(rel)
                .map_err(|err| Error::in_source("stat", d.display(rel), err)),
            Origin::Remote(r) => r.stat(rel),
        }
    }

    /// What each of `names` in directory `rel` is, if it is there.
    pub fn stat_in<const N: usize>(
        &self,
        rel: &Path,
        names: [&[u8]; N],
    ) -> Result<[Option<Meta>; N]> {
        match self {
            Origin::Local(d) => d.stat_in(rel, names.map(component)).map_err(|err| {
                Error::in_source("look up", d.display(&rel.join(component(names[0]))), err)
            }),
            Origin::Remote(r) => r.stat_in(rel, names),
        }
    }

    /// Whether [`Origin::stat_in`] of `names` in directory `rel` is answered without waiting
    /// on the network: always on disk; in a bucket, when a listing kept has the answer.
    pub fn answers_now(&self, rel: &Path, names: &[&[u8]]) -> bool {
        match self {
            Origin::Local(_) => true,
            Origin::Remote(r) => r.answers_now(rel, names),
        }
    }

    /// The entries of directory `rel`, each with what it is.
    pub fn list(&self, rel: &Path) -> Result<Vec<(Box<[u8]>, Meta)>> {
        match self {
            Origin::Local(d) => d
                .list(rel)
                .map_err(|err| Error::in_source("list", d.display(rel), err)),
            Origin::Remote(r) => r.list(rel),
        }
    }

    /// The regular entry `rel`, opened, and what the opened entry is.
    pub fn open(&self, rel: &Path) -> Result<(SourceFile, Meta)> {
        match self {
            Origin::Local(d) => {
                let io = |verb, err| Error::in_source(verb, d.display(rel), err);
                let file = d.open_file(rel).map_err(|e| io("open", e))?;
                let meta = Meta::of_file(&file).map_err(|e| io("stat", e))?;
                Ok((SourceFile::File(file), meta))
            }
            Origin::Remote(r) => r.open(rel).map(|(o, meta)| (SourceFile::Object(o), meta)),
        }
    }

    /// The target of symlink `rel`, as written (an object store has none).
    pub fn readlink(&self, rel: &Path) -> Result<Vec<u8>> {
        match self {
            Origin::Local(d) => d
                .readlink(rel)
                .map_err(|err| Error::in_source("read the link", d.display(rel), err)),
            Origin::Remote(_) => Err(Error::Usage("not a symlink".into())),
        }
    }
}
