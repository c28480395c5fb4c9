//! The cache directory on disk: where files live, what their names say, what survives a crash.
//!
//! Layout: `<cache_dir>/<archive key>/` per archive version (0700), holding
//! * `<number>-<crc32>-<size>`: a member decoded completely and verified (0600). Only a verified
//!   file is ever given this name, by rename, so a crash never leaves a complete-looking file.
//! * `.<number>-<crc32>-<size>.<pid>.<n>.part`: a decode in progress; removed at the next mount
//!   once its process is gone.
//! * `<number>-<crc32>-<size>.seek`: the member's seek index (`seek_index.rs`), written once
//!   its first full decode verified; kept when the member's data is evicted.
//! * `archive`: the path of the archive this key belongs to, so that a later mount of a
//!   *changed* archive at the same path can delete the stale directory.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::bytes::Identity;
use crate::error::cause;
use crate::zipfile::members::Member;

/// Which member a cache file holds: its number in the central directory, its CRC and size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FileKey {
    /// The member's number: its position in the central directory.
    pub number: usize,
    /// The member's CRC-32.
    pub crc32: u32,
    /// The member's uncompressed size.
    pub size: u64,
}

impl FileKey {
    /// The key of member number `number`, `member`.
    pub fn of(number: usize, member: &Member) -> FileKey {
        FileKey {
            number,
            crc32: member.crc32,
            size: member.size,
        }
    }

    fn name(&self) -> String {
        format!("{}-{:08x}-{:x}", self.number, self.crc32, self.size)
    }

    fn parse(name: &str) -> Option<FileKey> {
        let mut parts = name.split('-');
        let key = FileKey {
            number: parts.next()?.parse().ok()?,
            crc32: u32::from_str_radix(parts.next()?, 16).ok()?,
            size: u64::from_str_radix(parts.next()?, 16).ok()?,
        };
        (parts.next().is_none() && key.name() == name).then_some(key)
    }
}

/// The archive's own subdirectory of the cache directory.
#[derive(Debug)]
pub struct Store {
    /// The archive's id in the mount (the ledger files its members under it).
    pub id: u64,
    dir: PathBuf,
    next_part: AtomicU64,
}

/// The subdirectories of a cache directory by the archive path each belongs to, read once
/// (when the first store is opened): opening the stores of 10^4 archives must not read every
/// subdirectory 10^4 times to find stale versions.
#[derive(Debug, Default)]
pub struct Versions {
    by_archive: std::sync::Mutex<Option<std::collections::HashMap<Vec<u8>, Vec<PathBuf>>>>,
}

impl Versions {
    /// Makes `ours` the one subdirectory of `cache_dir` for `archive`: deletes those of
    /// earlier versions (an archive replaced while mounted included).
    fn remove_stale(&self, cache_dir: &Path, ours: &Path, archive: &Path) {
        let mut known = self.by_archive.lock().unwrap_or_else(|p| p.into_inner());
        let by_archive = known.get_or_insert_with(|| read_versions(cache_dir));
        let key = archive.as_os_str().as_encoded_bytes().to_vec();
        let stale = by_archive.insert(key, vec![ours.to_path_buf()]);
        drop(known);
        let stale = stale.unwrap_or_default();
        for path in stale.iter().filter(|p| *p != ours) {
            log::info!(
                "removing the cache of an earlier version of {}",
                archive.display()
            );
            if let Err(e) = fs::remove_dir_all(path) {
                log::warn!(
                    "cannot remove stale cache {}: {}",
                    path.display(),
                    cause(&e)
                );
            }
        }
    }
}

impl Store {
    /// Creates (0700) or reopens the subdirectory for the archive at `archive_path` with
    /// `identity`, removing the subdirectory of an earlier version of the same archive; `id`
    /// is the archive's id in the mount.
    pub fn open(
        cache_dir: &Path,
        archive_path: &Path,
        identity: Identity,
        id: u64,
        versions: &Versions,
    ) -> io::Result<Store> {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(cache_dir)?;
        // Absolute: a background daemon changes its directory to / after this.
        let cache_dir = &cache_dir.canonicalize()?;
        // Someone else's directory (say a /var/tmp/npzfs-<uid> made by another user first)
        // could have our subdirectory swapped for a link under us: refused.
        let uid = std::os::unix::fs::MetadataExt::uid(&fs::metadata(cache_dir)?);
        // SAFETY: geteuid has no preconditions.
        if uid != unsafe { libc::geteuid() } && uid != 0 {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("it belongs to another user (uid {uid})"),
            ));
        }
        let key = format!(
            "{:x}-{:x}.{:x}-{:x}-{:x}",
            identity.size, identity.mtime, identity.mtime_nsec, identity.dev, identity.ino
        );
        let dir = cache_dir.join(key);
        let owner = archive_path
            .canonicalize()
            .unwrap_or_else(|_| archive_path.to_path_buf());
        versions.remove_stale(cache_dir, &dir, &owner);
        match DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => write_owner(&dir, &owner)?,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                if !make_private(&dir)? {
                    // Not a directory of ours (a symlink, say): never followed, replaced.
                    log::warn!("replacing {}: not a cache directory", dir.display());
                    fs::remove_file(&dir)?;
                    DirBuilder::new().mode(0o700).create(&dir)?;
                    write_owner(&dir, &owner)?;
                }
            }
            Err(e) => return Err(e),
        }
        make_private(&dir)?;
        Ok(Store {
            id,
            dir,
            next_part: AtomicU64::new(0),
        })
    }

    /// The directory the store writes in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Complete files already present (from an earlier mount), after removing leftovers of
    /// crashed decodes and anything else that is not ours to serve.
    pub fn scan(&self) -> Vec<FileKey> {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut found = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let is_file = entry
                .file_type()
                .is_ok_and(|t| t.is_file() && !t.is_symlink());
            // The archive's path, and a remote archive's blocks (`blocks.rs`).
            if matches!(name.as_str(), "archive" | BLOCKS | BLOCKS_LISTED) && is_file {
                continue;
            }
            let seek_key = name.strip_suffix(".seek").and_then(FileKey::parse);
            match FileKey::parse(&name) {
                Some(key) if is_file => found.push(key),
                None if is_file && seek_key.is_some() => {}
                _ if name.ends_with(".part") && part_owner_alive(&name) => {}
                _ => remove(&entry.path()),
            }
        }
        found
    }

    /// A new partial file for `key` (0600, never following a planted symlink). If someone
    /// deleted the cache directory while mounted, it is made again.
    pub fn create_part(&self, key: FileKey) -> io::Result<(File, PathBuf)> {
        let n = self.next_part.fetch_add(1, Ordering::Relaxed);
        let path = self
            .dir
            .join(format!(".{}.{}.{n}.part", key.name(), std::process::id()));
        let create = || {
            OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&path)
        };
        let file = match create() {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                log::warn!(
                    "cache directory {} vanished: making it again",
                    self.dir.display()
                );
                DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(&self.dir)?;
                create()?
            }
            other => other?,
        };
        Ok((file, path))
    }

    /// Where the complete file for `key` lives.
    pub fn complete_path(&self, key: FileKey) -> PathBuf {
        self.dir.join(key.name())
    }

    /// Opens the complete file for `key` read-only.
    pub fn open_complete(&self, key: FileKey) -> io::Result<File> {
        OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(self.complete_path(key))
    }
}

impl Store {
    /// Where a remote archive's block file lives.
    pub fn blocks_path(&self) -> PathBuf {
        self.dir.join(BLOCKS)
    }

    /// A remote archive's block file (0600, never following a planted symlink), and the
    /// blocks a clean unmount listed as whole in it, if one did: the list is trusted once
    /// (it is deleted now), and without it the file is a new, empty one (a new file, not the
    /// old one emptied: a block set of this archive still being dropped may hold the old one).
    pub fn open_blocks(&self) -> io::Result<(File, Option<String>)> {
        let listed_path = self.dir.join(BLOCKS_LISTED);
        let listed = fs::read_to_string(&listed_path).ok();
        let _ = fs::remove_file(&listed_path);
        if listed.is_none() {
            let _ = fs::remove_file(self.blocks_path());
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(self.blocks_path())?;
        Ok((file, listed))
    }

    /// Records `listed` (block numbers, one per line) as the whole blocks of the block file,
    /// synced before, for the next mount of this version.
    pub fn list_blocks(&self, listed: &str) -> io::Result<()> {
        fs::write(self.dir.join(BLOCKS_LISTED), listed)
    }

    /// Where the seek index of `key` lives.
    fn seek_path(&self, key: FileKey) -> PathBuf {
        self.dir.join(format!("{}.seek", key.name()))
    }

    /// A new file to write the seek index of `key` into while it decodes; named like a partial
    /// file, so that a crash leaves nothing the next scan keeps.
    pub fn create_seek(&self, key: FileKey) -> io::Result<(File, PathBuf)> {
        let n = self.next_part.fetch_add(1, Ordering::Relaxed);
        let path = self.dir.join(format!(
            ".{}.seek.{}.{n}.part",
            key.name(),
            std::process::id()
        ));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)?;
        Ok((file, path))
    }

    /// Gives a finished seek index its name.
    pub fn keep_seek(&self, part: &Path, key: FileKey) -> io::Result<()> {
        fs::rename(part, self.seek_path(key))
    }

    /// Opens the seek index of `key`, if there is one (not yet checked).
    pub fn open_seek(&self, key: FileKey) -> Option<File> {
        OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(self.seek_path(key))
            .ok()
    }

    /// Deletes the seek index of `key` (damaged or stale).
    pub fn drop_seek(&self, key: FileKey) {
        remove(&self.seek_path(key));
    }
}

/// Records which archive the directory `dir` (just made) caches.
fn write_owner(dir: &Path, owner: &Path) -> io::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(dir.join("archive"))?;
    f.write_all(owner.as_os_str().as_encoded_bytes())
}

/// Makes `dir` ours alone (0700, whatever the umask or an earlier owner left) if it is a real
/// directory owned by this user: opened without following a symlink and changed through the
/// descriptor, so nothing it might point to is touched. False when it is not such a directory;
/// an error when it is a directory of another user's.
fn make_private(dir: &Path) -> io::Result<bool> {
    let opened = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(dir);
    let d = match opened {
        Ok(d) => d,
        Err(e) if matches!(e.raw_os_error(), Some(libc::ELOOP | libc::ENOTDIR)) => {
            return Ok(false);
        }
        Err(e) => return Err(e),
    };
    let meta = d.metadata()?;
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if std::os::unix::fs::MetadataExt::uid(&meta) != me {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("{} belongs to another user", dir.display()),
        ));
    }
    d.set_permissions(fs::Permissions::from_mode(0o700))?;
    Ok(true)
}

/// Removes a file, logging (not failing) when it cannot.
/// A remote archive's block file, and the list of its whole blocks a clean unmount leaves.
const BLOCKS: &str = "blocks";
const BLOCKS_LISTED: &str = "blocks.clean";

pub fn remove(path: &Path) {
    if let Err(e) = fs::remove_file(path)
        && e.kind() != io::ErrorKind::NotFound
    {
        log::warn!("cannot remove cache file {}: {}", path.display(), cause(&e));
    }
}

/// Whether the process that named a `.part` file still runs (another daemon decoding).
fn part_owner_alive(name: &str) -> bool {
    let pid = name
        .rsplit('.')
        .nth(2)
        .and_then(|p| p.parse::<libc::pid_t>().ok());
    match pid {
        Some(pid) if pid as u32 != std::process::id() && pid > 0 => {
            // SAFETY: signal 0 only checks that the process exists.
            unsafe { libc::kill(pid, 0) == 0 }
        }
        _ => false,
    }
}

/// Every subdirectory of `cache_dir` by the archive path its `archive` file names.
/// Whether a process holds a flock on the file at `path` (a process that maps a complete
/// cache file holds a shared one for the map's life): such a file is never evicted.
pub fn is_mapped(path: &Path) -> bool {
    use rustix::fs::{FlockOperation, flock};
    let Ok(file) = std::fs::File::open(path) else {
        return false;
    };
    // Ours for a moment if no one else has it; closing the file lets it go.
    flock(&file, FlockOperation::NonBlockingLockExclusive).is_err()
}

fn read_versions(cache_dir: &Path) -> std::collections::HashMap<Vec<u8>, Vec<PathBuf>> {
    let mut by_archive: std::collections::HashMap<Vec<u8>, Vec<PathBuf>> = Default::default();
    for entry in fs::read_dir(cache_dir).into_iter().flatten().flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            let owner = fs::read(entry.path().join("archive")).unwrap_or_default();
            by_archive.entry(owner).or_default().push(entry.path());
        }
    }
    by_archive
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn identity(size: u64) -> Identity {
        Identity {
            dev: 1,
            ino: 2,
            size,
            mtime: 3,
            mtime_nsec: 4,
        }
    }

    #[test]
    fn names_round_trip_and_reject_lookalikes() {
        let key = FileKey {
            number: 12,
            crc32: 0xdead_beef,
            size: 0x1234,
        };
        assert_eq!(FileKey::parse(&key.name()), Some(key));
        assert_eq!(FileKey::parse("12-deadbeef-1234-x"), None);
        assert_eq!(FileKey::parse("12-DEADBEEF-1234"), None);
        assert_eq!(FileKey::parse(".12-deadbeef-1234.1.0.part"), None);
    }

    #[test]
    fn scan_keeps_complete_files_and_drops_the_rest() {
        let root = tempfile::tempdir().unwrap();
        let archive = root.path().join("a.npz");
        fs::write(&archive, b"x").unwrap();
        let store = Store::open(
            &root.path().join("cache"),
            &archive,
            identity(1),
            0,
            &Versions::default(),
        )
        .unwrap();
        assert_eq!(fs::metadata(store.dir()).unwrap().mode() & 0o777, 0o700);
        let key = FileKey {
            number: 0,
            crc32: 1,
            size: 2,
        };
        let (part, path) = store.create_part(key).unwrap();
        assert_eq!(part.metadata().unwrap().mode() & 0o777, 0o600);
        fs::rename(&path, store.complete_path(key)).unwrap();
        let (_, dead_part) = store.create_part(key).unwrap();
        let dead = store.dir().join(".0-00000001-2.999999999.0.part");
        fs::rename(&dead_part, &dead).unwrap();
        fs::write(store.dir().join("junk"), b"?").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", store.dir().join("1-00000001-2")).unwrap();
        assert_eq!(store.scan(), vec![key]);
        assert!(!dead.exists() && !store.dir().join("junk").exists());
        assert!(fs::symlink_metadata(store.dir().join("1-00000001-2")).is_err());
    }

    #[test]
    fn a_changed_archive_drops_the_old_cache() {
        let root = tempfile::tempdir().unwrap();
        let archive = root.path().join("a.npz");
        fs::write(&archive, b"x").unwrap();
        let cache = root.path().join("cache");
        let old = Store::open(&cache, &archive, identity(1), 0, &Versions::default()).unwrap();
        let old_dir = old.dir().to_path_buf();
        let new = Store::open(&cache, &archive, identity(2), 0, &Versions::default()).unwrap();
        assert!(!old_dir.exists());
        assert!(new.dir().exists());
    }

    #[test]
    fn a_symlink_planted_as_the_archive_directory_is_replaced_not_followed() {
        let root = tempfile::tempdir().unwrap();
        let archive = root.path().join("a.npz");
        fs::write(&archive, b"x").unwrap();
        let cache = root.path().join("cache");
        let dir = Store::open(&cache, &archive, identity(1), 0, &Versions::default())
            .unwrap()
            .dir()
            .to_path_buf();
        fs::remove_dir_all(&dir).unwrap();
        let victim = root.path().join("victim");
        fs::create_dir(&victim).unwrap();
        fs::set_permissions(&victim, fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink(&victim, &dir).unwrap();
        let store = Store::open(&cache, &archive, identity(1), 0, &Versions::default()).unwrap();
        let meta = fs::symlink_metadata(store.dir()).unwrap();
        assert!(meta.is_dir() && meta.mode() & 0o777 == 0o700);
        store
            .create_part(FileKey {
                number: 0,
                crc32: 1,
                size: 2,
            })
            .unwrap();
        let victim_meta = fs::metadata(&victim).unwrap();
        assert_eq!(victim_meta.mode() & 0o777, 0o755);
        assert_eq!(fs::read_dir(&victim).unwrap().count(), 0);
    }
}
