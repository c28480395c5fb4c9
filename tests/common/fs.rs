//! The filesystem core without the kernel: fixtures over archives from the builder.

use npzfs::archive::Archive;
use npzfs::cache::CacheConfig;
use npzfs::error::Error;
use npzfs::fs::{NpzFs, Ownership};
use npzfs::index::read_index;
use npzfs::tree::ROOT;

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
    let config = CacheConfig {
        dir: cache.path().join("c"),
        size,
    };
    let archive = Archive::open(file.path()).unwrap();
    let members = read_index(&archive).unwrap();
    let fs = NpzFs::new(archive, members, owner, &config).unwrap();
    Fixture {
        fs,
        _file: file,
        cache,
    }
}

/// Reads through the core's continuation, waiting for it (the decoder may answer later).
pub fn read(fs: &NpzFs, ino: u64, offset: u64, size: u32) -> Result<Vec<u8>, Error> {
    let (tx, rx) = std::sync::mpsc::channel();
    fs.read(
        ino,
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

pub fn read_all(fs: &NpzFs, ino: u64) -> Vec<u8> {
    fs.open(ino, false).unwrap();
    let mut out = Vec::new();
    loop {
        let chunk = read(fs, ino, out.len() as u64, 100_000).unwrap();
        if chunk.is_empty() {
            fs.release(ino);
            return out;
        }
        out.extend_from_slice(&chunk);
    }
}

pub fn names(fs: &NpzFs, dir: u64) -> Vec<String> {
    fs.readdir(dir, 0)
        .unwrap()
        .map(|e| String::from_utf8_lossy(e.name).into_owned())
        .collect()
}

impl Fixture {
    /// A second mount of the same archive file with the same cache directory.
    pub fn remount(&self, size: u64) -> NpzFs {
        let config = CacheConfig {
            dir: self.cache.path().join("c"),
            size,
        };
        let archive = Archive::open(self._file.path()).unwrap();
        let members = read_index(&archive).unwrap();
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
        super::cache_files(&self.cache.path().join("c"))
    }

    /// Bytes allocated by member cache files.
    pub fn cache_bytes(&self) -> u64 {
        self.cache_files().iter().map(|(_, b)| b).sum()
    }
}
