//! The I/O threads every remote request runs on, and the one way request threads wait for
//! them.

use std::sync::OnceLock;

use crate::error::{Error, Result};

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
