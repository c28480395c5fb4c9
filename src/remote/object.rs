//! One remote object opened for ranged reads, pinned to the version it had when it was opened.
//!
//! The protocol work (signing, credentials from the environment, instance and container
//! credentials, retries with backoff) is the `object_store` crate's. What npzfs adds: the
//! object's version (ETag) is taken when it is opened and every ranged GET asks for exactly
//! that version (If-Match), so an object replaced while mounted gives EIO, never bytes of two
//! versions.

use std::ops::Range;
use std::sync::Arc;
use std::time::SystemTime;

use futures_util::StreamExt;
use object_store::path::Path as StorePath;
use object_store::{GetOptions, GetRange, ObjectMeta, ObjectStore};

use super::names::explain;
use super::runtime::{ahead, runtime};
use crate::error::{Error, RemoteFailure, Result};

/// One version of an object: every ranged GET asks for exactly this one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Version {
    /// Size in bytes.
    pub size: u64,
    /// The ETag (S3 and most HTTP servers give one).
    pub etag: Option<String>,
    /// Last-Modified.
    pub modified: SystemTime,
}

impl Version {
    /// The version `meta` describes.
    pub fn of(meta: &ObjectMeta) -> Version {
        Version {
            size: meta.size,
            etag: meta.e_tag.clone(),
            modified: meta.last_modified.into(),
        }
    }
}

/// Why a range is fetched, which decides when its request may go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fetch {
    /// A read waits for it: it goes at once.
    Wanted,
    /// Readahead: it waits for one of the `remote_requests=` permits, so that a sequential
    /// reader's window never crowds out what readers are waiting for.
    Ahead,
}

/// An object opened for ranged reads.
pub struct Remote {
    store: Arc<dyn ObjectStore>,
    path: StorePath,
    /// The URL without credentials or query, for messages.
    display: String,
    version: Version,
}

impl Remote {
    /// The object at `path` in `store`, as it was in `version`, shown as `display` (any store:
    /// a bucket, an HTTP server, or one in memory for tests).
    pub fn new(
        store: Arc<dyn ObjectStore>,
        path: StorePath,
        version: Version,
        display: String,
    ) -> Remote {
        Remote {
            store,
            path,
            display,
            version,
        }
    }

    /// The URL as messages show it (no credentials, no query).
    pub fn display(&self) -> &str {
        &self.display
    }

    /// The object's size.
    pub fn size(&self) -> u64 {
        self.version.size
    }

    /// The version of the object opened: every request asks for it.
    pub fn version(&self) -> &Version {
        &self.version
    }

    /// Fetches `range` of the version opened, on the I/O threads: each piece of the body is
    /// handed to `land` (its offset in the object, its bytes) as it arrives, so the first
    /// blocks of a long request serve their readers before the last one is in; then `done`
    /// says whether all of `range` came (never on the caller's thread).
    pub fn fetch(
        self: &Arc<Self>,
        range: Range<u64>,
        how: Fetch,
        mut land: impl FnMut(u64, &[u8]) -> Result<()> + Send + 'static,
        done: impl FnOnce(Result<()>) + Send + 'static,
    ) {
        let runtime = match runtime() {
            Ok(runtime) => runtime,
            Err(e) => return done(Err(e)),
        };
        let me = self.clone();
        runtime.spawn(async move {
            // Held until the body is in: readahead requests in flight stay within the limit.
            let _permit = match how {
                Fetch::Ahead => ahead().acquire().await.ok(),
                Fetch::Wanted => None,
            };
            let options = GetOptions {
                if_match: me.version.etag.clone(),
                range: Some(GetRange::Bounded(range.clone())),
                ..Default::default()
            };
            let mut at = range.start;
            let streamed = async {
                let got = me.store.get_opts(&me.path, options).await;
                let mut body = got.map_err(|e| me.failed(&range, &e))?.into_stream();
                while let Some(piece) = body.next().await {
                    let piece = piece.map_err(|e| me.failed(&range, &e))?;
                    if at + piece.len() as u64 > range.end {
                        break;
                    }
                    land(at, &piece)?;
                    at += piece.len() as u64;
                }
                Ok(())
            };
            let result = streamed.await.and_then(|()| match at == range.end {
                true => Ok(()),
                false => Err(Error::Remote {
                    url: me.display.clone(),
                    cause: format!(
                        "asked for {} bytes at {}, got another length",
                        range.end - range.start,
                        range.start,
                    ),
                }),
            });
            done(result);
        });
    }

    fn failed(&self, range: &Range<u64>, e: &object_store::Error) -> Error {
        let (cause, why) = match e {
            object_store::Error::Precondition { .. } => (
                "the object was replaced since it was mounted (its ETag changed)".to_string(),
                Some(RemoteFailure::Changed),
            ),
            other => (
                explain(other),
                timed_out(other).then_some(RemoteFailure::TimedOut),
            ),
        };
        let (url, cause) = (
            self.display.clone(),
            format!("bytes {}..{}: {cause}", range.start, range.end),
        );
        match why {
            Some(why) => Error::RemoteRead { url, cause, why },
            None => Error::Remote { url, cause },
        }
    }
}

/// Whether `e` is a request that got no answer in time (the client's timeout, after its
/// retries): the HTTP stack's own error, somewhere down `e`'s chain of sources, says so.
fn timed_out(e: &object_store::Error) -> bool {
    use object_store::client::{HttpError, HttpErrorKind};
    let mut at: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(source) = at {
        if source
            .downcast_ref::<HttpError>()
            .is_some_and(|h| matches!(h.kind(), HttpErrorKind::Timeout))
        {
            return true;
        }
        at = source.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::client::{HttpError, HttpErrorKind};

    fn generic(kind: HttpErrorKind) -> object_store::Error {
        let io = std::io::Error::other("no answer");
        object_store::Error::Generic {
            store: "S3",
            source: Box::new(HttpError::new(kind, io)),
        }
    }

    #[test]
    fn a_timeout_is_told_from_a_refused_connection_and_a_changed_object() {
        assert!(timed_out(&generic(HttpErrorKind::Timeout)));
        assert!(!timed_out(&generic(HttpErrorKind::Connect)));
        let changed = object_store::Error::Precondition {
            path: "k".into(),
            source: "412".into(),
        };
        assert!(!timed_out(&changed));
    }
}
