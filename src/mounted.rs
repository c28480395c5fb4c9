//! What a mount serves, from the command line's sources: one local archive (opened and
//! indexed now, so that a bad one fails before the fork with its own exit code), or a forest
//! of directories and archives (nothing below them opened). Sources that include a remote
//! one are resolved in the daemon itself, after the fork: the remote client's I/O threads
//! must be the daemon's.

use std::path::PathBuf;
use std::time::Instant;

use fuser::BackingId;

use crate::bytes::Archive;
use crate::cache::CacheConfig;
use crate::error::Result;
use crate::forest::Overrides;
use crate::fs::{NpzFs, Ownership, Sources};
use crate::options::Options;
use crate::preflight;
use crate::remote::{self, Found};
use crate::zipfile::members;

/// The filesystem to serve, built now or once the daemon runs.
pub struct Service(Build);

enum Build {
    Now(Box<NpzFs<BackingId>>),
    Remote {
        sources: Vec<PathBuf>,
        how: Sources,
        owner: Ownership,
        cache: CacheConfig,
    },
}

impl Service {
    /// The filesystem. Remote sources are resolved now: one remote object is the mount's
    /// archive (a HEAD, then its central directory), anything else a forest.
    pub fn build(self) -> Result<NpzFs<BackingId>> {
        match self.0 {
            Build::Now(fs) => Ok(*fs),
            Build::Remote {
                sources,
                how,
                owner,
                cache,
            } => {
                let started = Instant::now();
                let fs = remote_sources(&sources, how, owner, &cache)?;
                log::debug!(
                    "remote sources resolved in {:.3} s",
                    started.elapsed().as_secs_f64()
                );
                Ok(fs)
            }
        }
    }
}

/// Sources that include a remote one: one remote object is the mount's archive, anything
/// else a forest.
fn remote_sources(
    sources: &[PathBuf],
    how: Sources,
    owner: Ownership,
    cache: &CacheConfig,
) -> Result<NpzFs<BackingId>> {
    let url = match sources {
        [one] if !one.to_string_lossy().ends_with('/') => one.to_string_lossy(),
        _ => return NpzFs::sources(sources, how, cache),
    };
    match remote::find(&url, how.remote_timeout)? {
        Found::Object { object, .. } => NpzFs::remote(object, owner, cache),
        // Named with its slash, so that the forest lists it without asking for an object
        // of that name again.
        Found::Prefix(_) => NpzFs::sources(&[PathBuf::from(format!("{url}/"))], how, cache),
    }
}

/// Reads the sources of `opts` as far as can be done before the daemon forks. Without
/// `mounting` (`npzfs extract`), `materialize` only makes every archive's cache available for
/// copies, whatever passthrough can do here.
pub fn prepare(opts: &Options, mounting: bool) -> Result<Service> {
    // SAFETY: getuid/getgid have no preconditions.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let owner = Ownership {
        uid: opts.uid.unwrap_or(uid),
        gid: opts.gid.unwrap_or(gid),
        umask: opts.umask,
    };
    let mut cache = opts.cache.clone();
    if mounting && cache.materialize && !(opts.passthrough && preflight::passthrough_possible()) {
        // Known before mounting: the kernel would refuse the copies' passthrough.
        log::info!(
            "option materialize ignored: FUSE passthrough is unavailable here (it needs root in \
             the initial user namespace and Linux 6.9+, and not nopassthrough)"
        );
        cache.materialize = false;
    }
    let how = || {
        let max_archives = opts.max_archives.unwrap_or_else(default_max_archives);
        log::debug!("at most {max_archives} archives open at once");
        Sources {
            overrides: Overrides {
                uid: opts.uid,
                gid: opts.gid,
                umask: opts.umask,
                mounted_by: (uid, gid),
            },
            max_archives,
            remote_timeout: opts.remote_timeout,
        }
    };
    if opts.sources.iter().any(|s| remote::is_remote(s)) {
        remote::set_requests(opts.remote_requests);
        return Ok(Service(Build::Remote {
            sources: opts.sources.clone(),
            how: how(),
            owner,
            cache,
        }));
    }
    let started = Instant::now();
    let fs = match opts.sources.as_slice() {
        [one] if !one.is_dir() => {
            let archive = Archive::open(one)?;
            let members = members::read_members(&archive)?;
            let (count, indexed) = (members.len(), started.elapsed());
            let fs = NpzFs::new(archive, members, owner, &cache)?;
            log::debug!(
                "{count} members: central directory {:.3} s, tree and cache {:.3} s",
                indexed.as_secs_f64(),
                (started.elapsed() - indexed).as_secs_f64()
            );
            fs
        }
        _ => NpzFs::sources(&opts.sources, how(), &cache)?,
    };
    Ok(Service(Build::Now(Box::new(fs))))
}

/// Raises the open-file limit to its hard limit (a tree of shards wants descriptors; the
/// soft limit of 1024 is a relic of select(2)) and takes a quarter of it for open archives,
/// 16 to 4096; the rest is for cache files, handles and the reader's own opens.
fn default_max_archives() -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    let soft = unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 256;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
        lim.rlim_cur
    };
    usize::try_from(soft / 4).unwrap_or(4096).clamp(16, 4096)
}
