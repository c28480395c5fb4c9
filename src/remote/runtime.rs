//! The I/O threads every remote request runs on, and the one way request threads wait for
//! them.

use std::sync::OnceLock;

use crate::error::{Error, Result};

/// The I/O threads every remote request runs on: two, started on first use (in the daemon,
/// after the fork and the signal mask) and never stopped, so no thread ever drops the
/// runtime it runs on.
pub(super) fn runtime() -> Result<&'static tokio::runtime::Runtime> {
    static RUNTIME: OnceLock<std::result::Result<tokio::runtime::Runtime, String>> =
        OnceLock::new();
    let built = RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("npzfs-remote")
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
    });
    built.as_ref().map_err(|e| Error::Remote {
        url: String::new(),
        cause: format!("cannot start the I/O threads: {e}"),
    })
}

/// Runs `work` on the I/O threads and waits for it (never call this on them).
pub fn block_on<T>(work: impl std::future::Future<Output = T>) -> Result<T> {
    Ok(runtime()?.block_on(work))
}
