//! Where a remote source lives and what its URL names: `s3://bucket/key.npz` (S3 and
//! S3-compatible stores) and `http(s)://host/x.npz` (any server that honours Range) are one
//! object, asked for by HEAD; `s3://bucket/prefix/` is a prefix with objects below it, served as
//! a directory source (`dir.rs`). The stores are the `object_store` crate's, given timeouts,
//! retries and the `~/.aws` profile's settings (`profile.rs`), which the crate does not read.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::http::HttpBuilder;
use object_store::list::{PaginatedListOptions, PaginatedListStore};
use object_store::path::Path as StorePath;
use object_store::{
    BackoffConfig, ClientOptions, ObjectMeta, ObjectStore, ObjectStoreExt, RetryConfig,
};

use super::counted::Counted;
use super::names::{display, explain};
use super::object::{Remote, Version};
use super::profile;
use super::runtime::block_on;
use crate::error::{Error, Result};

/// How long a remote request may take before it is given up, when `remote_timeout=` is not
/// given; retries of throttled and failed requests stop after as long again.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Whether `source` names a remote archive rather than a path.
pub fn is_remote(source: &std::path::Path) -> bool {
    let s = source.as_os_str().to_string_lossy();
    ["s3://", "http://", "https://"]
        .iter()
        .any(|scheme| s.starts_with(scheme))
}

/// Where a remote source lives: its store (a bucket, or an HTTP base) and its path there.
#[derive(Clone)]
pub struct Location {
    /// The store.
    pub store: Arc<dyn ObjectStore>,
    /// The object, or the prefix, in it.
    pub path: StorePath,
    /// The URL without credentials or query, for messages.
    pub display: String,
    /// Whether the source is listed (an S3 prefix); otherwise it is one object, asked for by
    /// HEAD (an HTTP server has no listing).
    pub lists: bool,
    /// The store's listing by pages, where a page of one key can be asked for (S3). Seen by
    /// the folder's tests, which build locations over a store in memory.
    pub(super) pages: Option<Arc<dyn PaginatedListStore>>,
}

impl Location {
    /// `url`'s store and path; each request gives up after `timeout`, retries after as
    /// long again.
    pub fn of(url: &str, timeout: Duration) -> Result<Location> {
        let display = display(url);
        let fail = |cause: String| Error::Remote {
            url: display.clone(),
            cause,
        };
        if url.contains(['?', '#']) {
            return Err(fail(
                "a URL with a query (a pre-signed URL) is not supported".into(),
            ));
        }
        Location::with_retries(url, timeout, RETRIES)
    }

    /// The location of `url`, whose requests are tried `1 + retries` times at most.
    fn with_retries(url: &str, timeout: Duration, retries: usize) -> Result<Location> {
        let display = display(url);
        let (store, pages, path) = client(url, timeout, retries)?;
        Ok(Location {
            store,
            path,
            lists: url.starts_with("s3://"),
            display,
            pages,
        })
    }

    /// The object at `path` in the same store, as it was in `version`, shown as `display`.
    pub fn object(&self, path: StorePath, version: Version, display: String) -> Remote {
        Remote::new(self.store.clone(), path, version, display)
    }

    /// The prefix the object of this location is in, to be served without listing it (its
    /// one object is asked for by HEAD), and the object's name in it.
    pub fn parent(&self) -> (Location, String) {
        let parts: Vec<_> = self.path.parts().collect();
        let (name, dir) = parts
            .split_last()
            .map_or((String::new(), &[][..]), |(n, d)| {
                (n.as_ref().to_string(), d)
            });
        // The display is scheme://host/path: its parent ends at its last slash.
        let cut = self
            .display
            .rfind('/')
            .map_or(self.display.len(), |i| i + 1);
        let parent = Location {
            store: self.store.clone(),
            path: StorePath::from_iter(dir.iter().cloned()),
            display: self.display[..cut].to_string(),
            lists: false,
            pages: None,
        };
        (parent, name)
    }

    /// What the store says of the object at `path` (one HEAD); None when there is none.
    pub fn head(&self, path: &StorePath) -> Result<Option<ObjectMeta>> {
        match block_on(self.store.head(path))? {
            Ok(meta) => Ok(Some(meta)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.failed(&e)),
        }
    }

    /// Whether there is a key below this location's path taken as a prefix: a request for a
    /// page of one key where the store has pages (S3), else the store's first page.
    async fn first_key(&self) -> Option<object_store::Result<()>> {
        let path = self.path.as_ref();
        if let Some(pages) = &self.pages {
            let prefix = (!path.is_empty()).then(|| format!("{path}/"));
            let options = PaginatedListOptions {
                max_keys: Some(1),
                ..Default::default()
            };
            return match pages.list_paginated(prefix.as_deref(), options).await {
                Ok(page) => {
                    let found = page.result.objects.len() + page.result.common_prefixes.len();
                    (found > 0).then_some(Ok(()))
                }
                Err(e) => Some(Err(e)),
            };
        }
        let prefix = (!path.is_empty()).then_some(&self.path);
        self.store.list(prefix).next().await.map(|r| r.map(|_| ()))
    }

    /// The store's error, said of this location.
    pub fn failed(&self, e: &object_store::Error) -> Error {
        Error::Remote {
            url: self.display.clone(),
            cause: explain(e),
        }
    }
}

/// What a remote URL names.
pub enum Found {
    /// One object: an archive.
    Object {
        /// Where it is.
        at: Location,
        /// It, opened.
        object: Remote,
    },
    /// A prefix of a bucket with objects below it: a directory.
    Prefix(Location),
}

/// Retries of a request that failed in a way that may pass (throttling, a 5xx, a connection
/// refused or cut, no answer in time), with backoff and jitter, within twice `remote_timeout`.
const RETRIES: usize = 10;

/// The object at `at`, if there is one. An `https://` server is asked once first: a
/// certificate the system does not trust never becomes trusted by asking again, so that is
/// the answer at once; any other failure is asked again, with retries.
fn head(url: &str, at: &Location, timeout: Duration) -> Result<Option<ObjectMeta>> {
    if url.starts_with("https://") {
        let once = Location::with_retries(url, timeout, 0)?;
        match block_on(once.store.head(&once.path))? {
            Ok(meta) => return Ok(Some(meta)),
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => {
                if let Some(why) = certificate_problem(&e) {
                    return Err(Error::Remote {
                        url: at.display.clone(),
                        cause: format!(
                            "the server's TLS certificate is not trusted ({why}): add the CA \
                             that signed it to the system's store, or name a file of CA \
                             certificates in SSL_CERT_FILE"
                        ),
                    });
                }
            }
        }
    }
    at.head(&at.path)
}

/// What the TLS library said of a certificate it refused, if that is why `e` failed: the
/// innermost cause down `e`'s sources that speaks of a certificate.
fn certificate_problem(e: &object_store::Error) -> Option<String> {
    let mut found = None;
    let mut at: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(source) = at {
        let text = source.to_string();
        if text.contains("certificate") {
            found = Some(text);
        }
        at = source.source();
    }
    found
}

/// What `url` names: an object (one HEAD), or, for `s3://` URLs that end in `/` or name no
/// object, a prefix with at least one object below it (one listing request). Each request
/// gives up after `timeout`.
pub fn find(url: &str, timeout: Duration) -> Result<Found> {
    let mut at = Location::of(url, timeout)?;
    let as_prefix = url.ends_with('/') || at.path.as_ref().is_empty();
    if !as_prefix {
        match head(url, &at, timeout)? {
            Some(meta) => {
                let (path, display) = (at.path.clone(), at.display.clone());
                let object = at.object(path, Version::of(&meta), display);
                return Ok(Found::Object { at, object });
            }
            None if !at.lists => {
                return Err(Error::Remote {
                    url: at.display,
                    cause: "no such object (HTTP 404)".into(),
                });
            }
            None => {}
        }
    }
    if !at.lists {
        return Err(Error::Remote {
            url: at.display,
            cause: "an HTTP source names a file (an HTTP server has no listing): \
                    http(s)://HOST/PATH/x.npz"
                .into(),
        });
    }
    let first = block_on(at.first_key())?;
    match first {
        Some(Ok(())) => {
            if !at.display.ends_with('/') {
                at.display.push('/');
            }
            Ok(Found::Prefix(at))
        }
        Some(Err(e)) => Err(at.failed(&e)),
        None if as_prefix => Err(Error::Remote {
            url: at.display,
            cause: "no objects under this prefix (or no such bucket)".into(),
        }),
        None => Err(Error::Remote {
            url: at.display,
            cause: "no such object, and no objects under it as a prefix".into(),
        }),
    }
}

/// A store, its paginated listing when it has one (S3), and a path in it.
type Client = (
    Arc<dyn ObjectStore>,
    Option<Arc<dyn PaginatedListStore>>,
    StorePath,
);

/// The store and the object's path in it, for `url`; each request gives up after `timeout`.
fn client(url: &str, timeout: Duration, retries: usize) -> Result<Client> {
    let fail = |cause: String| Error::Remote {
        url: display(url),
        cause,
    };
    // A request that takes `timeout` (a stalled response) is asked again too: retries go on
    // until twice `timeout` has passed since the first try.
    let retry = RetryConfig {
        backoff: BackoffConfig::default(),
        max_retries: retries,
        retry_timeout: 2 * timeout,
    };
    let env_true = |name: &str| std::env::var(name).is_ok_and(|v| v == "true" || v == "1");
    let options = ClientOptions::new()
        .with_timeout(timeout)
        .with_connect_timeout(timeout.min(Duration::from_secs(10)))
        .with_allow_http(env_true("AWS_ALLOW_HTTP") || url.starts_with("http://"));
    if let Some(rest) = url.strip_prefix("s3://") {
        let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(fail(
                "an S3 source is s3://BUCKET/KEY.npz or s3://BUCKET/PREFIX/".into(),
            ));
        }
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_client_options(options)
            .with_http_connector(Counted)
            .with_retry(retry);
        for (key, value) in profile::profile() {
            builder = builder.with_config(key, value);
        }
        let store = Arc::new(builder.build().map_err(|e| fail(explain(&e)))?);
        return Ok((store.clone(), Some(store), StorePath::from(key)));
    }
    let (base, name) = url
        .rsplit_once('/')
        .filter(|(_, name)| !name.is_empty())
        .ok_or_else(|| fail("a URL source names a file: http(s)://HOST/PATH/x.npz".into()))?;
    let store = HttpBuilder::new()
        .with_url(format!("{base}/"))
        .with_client_options(options)
        .with_http_connector(Counted)
        .with_retry(retry)
        .build()
        .map_err(|e| fail(explain(&e)))?;
    Ok((Arc::new(store), None, StorePath::from(name)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_object_source_is_served_from_its_parent_by_name() {
        for (url, parent, path, name) in [
            (
                "s3://b/runs/a b/x.npz",
                "s3://b/runs/a b/",
                "runs/a b",
                "x.npz",
            ),
            ("s3://b/x.npz", "s3://b/", "", "x.npz"),
            ("http://u:pw@h:8/d/e/w.npz", "http://h:8/d/e/", "", "w.npz"),
        ] {
            let at = Location::of(url, Duration::from_secs(1)).unwrap();
            let (up, named) = at.parent();
            assert_eq!(
                (up.display.as_str(), up.path.as_ref()),
                (parent, path),
                "{url}"
            );
            assert_eq!(named, name);
            assert!(!up.lists && up.pages.is_none());
        }
        let prefix = Location::of("s3://b/ds/", Duration::from_secs(1)).unwrap();
        assert!(prefix.lists && prefix.pages.is_some());
        assert_eq!(prefix.path.as_ref(), "ds");
        let query = Location::of("https://h/x.npz?X-Amz-Signature=s", Duration::from_secs(1));
        assert!(query.is_err_and(|e| !e.to_string().contains("Signature")));
    }
}
