//! The filesystem core without the kernel: fixtures over archives from the builder, and what
//! their cache directories hold.
#![allow(dead_code)]

use npzfs::bytes::Archive;
use npzfs::cache::{CacheConfig, CacheStats};
use npzfs::error::Error;
use npzfs::fs::{NpzFs, Ownership};
use npzfs::tree::ROOT;
use npzfs::zipfile::members::read_members;

use std::path::Path;

use super::{Entry, build_zip};

pub const OWNER: Ownership = Ownership {
    uid: 1234,
    gid: 5678,
    umask: 0,
};

pub struct Fixture {
    pub fs: NpzFs,
    pub _file: tempfile::NamedTempFile,
    pub cache: tempfile::TempDir,
}

/// The cache's counters of `fs` (which must have a cache).
pub fn stats(fs: &NpzFs) -> CacheStats {
    fs.cache_stats().expect("a cache")
}

pub fn mount_bytes(bytes: &[u8], owner: Ownership) -> Fixture {
    mount_with_cache(bytes, owner, tempfile::tempdir().unwrap(), 1 << 30)
}

pub fn mount_with_cache(
    bytes: &[u8],
    owner: Ownership,
    cache: tempfile::TempDir,
    size: u64,
) -> Fixture {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), bytes).unwrap();
    let config = CacheConfig::at(cache.path().join("c"), size);
    let archive = Archive::open(file.path()).unwrap();
    let members = read_members(&archive).unwrap();
    let fs = NpzFs::new(archive, members, owner, &config).unwrap();
    Fixture {
        fs,
        _file: file,
        cache,
    }
}

/// Reads handle `fh` through the core's continuation, waiting for it (the decoder may
/// answer later).
pub fn read(fs: &NpzFs, fh: u64, offset: u64, size: u32) -> Result<Vec<u8>, Error> {
    let (tx, rx) = std::sync::mpsc::channel();
    fs.read(
        fh,
        offset,
        size,
        Box::new(move |r| tx.send(r.map(<[u8]>::to_vec)).unwrap()),
    );
    rx.recv_timeout(std::time::Duration::from_secs(60))
        .expect("read never answered")
}

pub fn mount(entries: &[Entry]) -> Fixture {
    mount_bytes(&build_zip(b"", entries), OWNER)
}

/// The inode at `path` ("a/b.npy"), walking lookups from the root.
pub fn ino(fs: &NpzFs, path: &str) -> u64 {
    path.split('/').fold(ROOT, |dir, name| {
        fs.lookup(dir, name.as_bytes()).unwrap().ino
    })
}

/// Opens `ino`, reads it whole, and lets go of it.
pub fn read_all(fs: &NpzFs, ino: u64) -> Vec<u8> {
    let fh = fs.open(ino, false).unwrap();
    let mut out = Vec::new();
    loop {
        let chunk = read(fs, fh, out.len() as u64, 100_000).unwrap();
        if chunk.is_empty() {
            fs.release(fh);
            return out;
        }
        out.extend_from_slice(&chunk);
    }
}

/// One entry of a listing: (name, ino, next offset).
pub type Listed = (String, u64, u64);

/// The entries of directory `dir` from `offset`, as the kernel would be handed them.
pub fn entries(fs: &NpzFs, dir: u64, offset: u64) -> Result<Vec<Listed>, Error> {
    let mut out = Vec::new();
    fs.readdir(dir, 0, offset, &mut |e| {
        let name = String::from_utf8_lossy(&e.name).into_owned();
        out.push((name, e.ino, e.next_offset));
        false
    })?;
    Ok(out)
}

pub fn names(fs: &NpzFs, dir: u64) -> Vec<String> {
    let listed = entries(fs, dir, 0).unwrap();
    listed.into_iter().map(|(name, _, _)| name).collect()
}

impl Fixture {
    /// A second mount of the same archive file with the same cache directory.
    pub fn remount(&self, size: u64) -> NpzFs {
        let config = CacheConfig::at(self.cache.path().join("c"), size);
        let archive = Archive::open(self._file.path()).unwrap();
        let members = read_members(&archive).unwrap();
        NpzFs::new(archive, members, OWNER, &config).unwrap()
    }

    /// The same archive and cache directory mounted afresh, the old mount gone first (the
    /// new mount's scan removes the partial files it left, as after an unmount).
    pub fn reopen(mut self, size: u64) -> Fixture {
        let fresh = self.remount(size);
        drop(std::mem::replace(&mut self.fs, fresh));
        self.fs = self.remount(size);
        self
    }

    /// Member files under the cache directory: (name, bytes allocated on disk).
    pub fn cache_files(&self) -> Vec<(String, u64)> {
        cache_files(&self.cache.path().join("c"))
    }

    /// Bytes allocated by member cache files.
    pub fn cache_bytes(&self) -> u64 {
        self.cache_files().iter().map(|(_, b)| b).sum()
    }
}

/// Member files under a cache directory (not the `archive` marker, not seek indexes):
/// (name, bytes allocated on disk).
pub fn cache_files(root: &Path) -> Vec<(String, u64)> {
    use std::os::unix::fs::MetadataExt;
    cache_entries(root)
        .into_iter()
        .filter(|(name, _, _)| name != "archive" && !name.contains(".seek"))
        .map(|(name, _, meta)| (name, meta.blocks() * 512))
        .collect()
}

/// Seek index files under a cache directory: (path, length).
pub fn seek_files(root: &Path) -> Vec<(std::path::PathBuf, u64)> {
    cache_entries(root)
        .into_iter()
        .filter(|(name, _, _)| name.ends_with(".seek"))
        .map(|(_, path, meta)| (path, meta.len()))
        .collect()
}

/// Every file in the archive subdirectories of a cache directory, sorted by name.
fn cache_entries(root: &Path) -> Vec<(String, std::path::PathBuf, std::fs::Metadata)> {
    let mut out = Vec::new();
    for dir in std::fs::read_dir(root).into_iter().flatten().flatten() {
        for f in std::fs::read_dir(dir.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            if let Ok(meta) = f.metadata() {
                out.push((f.file_name().to_string_lossy().into_owned(), f.path(), meta));
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}
