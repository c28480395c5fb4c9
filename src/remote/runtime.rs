//! The I/O threads every remote request runs on, and the one way request threads wait for
//! them.

use std::sync::OnceLock;

use tokio::sync::Semaphore;

use crate::error::{Error, Result};

/// Readahead requests in flight at once in the process, unless `remote_requests=` says
/// otherwise: at 50 MB/s per connection (what object stores give one request), 25 fill a
/// 10 Gbps link; 32 leave room for slower connections.
pub const DEFAULT_REQUESTS: usize = 32;

static AHEAD: OnceLock<Semaphore> = OnceLock::new();

/// Sets how many readahead requests may be in flight at once (once, at mount, before any
/// request; later calls change nothing).
pub fn set_requests(n: usize) {
    let _ = AHEAD.set(Semaphore::new(n.max(1)));
}

/// The permits readahead requests wait for, first come first served: several readers share
/// them in the order they asked. A read's own blocks never wait for one.
pub(super) fn ahead() -> &'static Semaphore {
    AHEAD.get_or_init(|| Semaphore::new(DEFAULT_REQUESTS))
}

/// The I/O threads every remote request runs on: two, started on first use (in the daemon,
/// after the fork and the signal mask) and never stopped, so no thread ever drops the
/// runtime it runs on.
pub(super) fn runtime() -> Result<&'static tokio::runtime::Runtime> {
    // The failure is kept as well: every later request gives the same error, never a retry
    // that could start a second runtime.
    static RUNTIME: OnceLock<Result<tokio::runtime::Runtime>> = OnceLock::new();
    let built = RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("npzfs-remote")
            .enable_all()
            .build()
            .map_err(|e| Error::Remote {
                url: String::new(),
                cause: format!("cannot start the I/O threads: {e}"),
            })
    });
    built.as_ref().map_err(Error::clone)
}

/// Runs `work` on the I/O threads and waits for it (never call this on them).
pub fn block_on<T>(work: impl std::future::Future<Output = T>) -> Result<T> {
    Ok(runtime()?.block_on(work))
}
