//! Where the cache lives and how large it may grow: `cache_dir=` and `cache_size=`, and the
//! default chain of directories tried in turn when none is given.

use std::path::{Path, PathBuf};

use super::store::Store;
use crate::error::{Error, Result, cause};

/// The default budget when `cache_size=` is not given.
pub const DEFAULT_CACHE_SIZE: u64 = 4 << 30;

/// Where the cache lives and how much of it this mount may use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheConfig {
    /// The cache directory (the archive gets a subdirectory of it).
    pub dir: PathBuf,
    /// Directories tried in turn when `dir` cannot be used: the rest of the default chain
    /// (none for a `cache_dir=` the user chose).
    pub fallbacks: Vec<PathBuf>,
    /// The byte budget.
    pub size: u64,
    /// `materialize`: stored members are copied into the cache too, for passthrough.
    pub materialize: bool,
}

impl CacheConfig {
    /// The default chain with `size`: `$CACHE_DIRECTORY` (systemd's `CacheDirectory=`),
    /// `$XDG_CACHE_HOME/npzfs`, `$HOME/.cache/npzfs` (those whose variable is set), then
    /// `/var/tmp/npzfs-<uid>`. The first that can be used is used.
    pub fn with_default_dirs(size: u64) -> CacheConfig {
        let var = |name| {
            std::env::var_os(name)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        let mut chain = Vec::new();
        if let Some(dir) = var("CACHE_DIRECTORY") {
            // systemd may pass several, separated by ':'; the first is ours.
            let first = dir.to_string_lossy().split(':').next().map(PathBuf::from);
            chain.extend(first);
        }
        chain.extend(var("XDG_CACHE_HOME").map(|d| d.join("npzfs")));
        chain.extend(var("HOME").map(|d| d.join(".cache").join("npzfs")));
        chain.push(PathBuf::from(format!("/var/tmp/npzfs-{}", outside_uid())));
        chain.dedup();
        let dir = chain.remove(0);
        CacheConfig {
            dir,
            fallbacks: chain,
            size,
            materialize: false,
        }
    }

    /// `dir` and nothing else, with `size`: if `dir` cannot be used, that is an error.
    pub fn at(dir: PathBuf, size: u64) -> CacheConfig {
        CacheConfig {
            dir,
            fallbacks: Vec::new(),
            size,
            materialize: false,
        }
    }

    /// Uses `dir` and nothing else (`cache_dir=`): if it cannot be used, that is an error.
    pub fn set_dir(&mut self, dir: PathBuf) {
        self.dir = dir;
        self.fallbacks.clear();
    }

    /// Opens a store with `open` in the first directory of the chain that can be used, and
    /// says which that was; one log line says so when that is not the first. Fails with the
    /// first directory's cause.
    pub(super) fn open_store(
        &self,
        open: impl Fn(&Path) -> std::io::Result<Store>,
    ) -> Result<(Store, PathBuf)> {
        let first = match open(&self.dir) {
            Ok(store) => return Ok((store, self.dir.clone())),
            Err(e) => e,
        };
        let mut why = cause(&first);
        for dir in &self.fallbacks {
            match open(dir) {
                Ok(store) => {
                    log::info!(
                        "using cache directory {}: cannot use {}: {why}",
                        dir.display(),
                        self.dir.display(),
                    );
                    return Ok((store, dir.clone()));
                }
                Err(e) => why.push_str(&format!("; nor {}: {}", dir.display(), cause(&e))),
            }
        }
        Err(Error::CacheDir {
            path: self.dir.clone(),
            cause: why,
        })
    }
}

/// Our uid as the rest of the machine sees it: inside a user namespace (`unshare -Ur`) we
/// are 0, and /var/tmp/npzfs-0 would be root's. From /proc/self/uid_map ("inside outside
/// count" ranges).
fn outside_uid() -> u32 {
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    let map = std::fs::read_to_string("/proc/self/uid_map").unwrap_or_default();
    map.lines()
        .find_map(|line| {
            let f: Vec<u32> = line
                .split_whitespace()
                .filter_map(|n| n.parse().ok())
                .collect();
            let (inside, outside, count) = (*f.first()?, *f.get(1)?, *f.get(2)?);
            (uid >= inside && uid - inside < count).then(|| outside + (uid - inside))
        })
        .unwrap_or(uid)
}
