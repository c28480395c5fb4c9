//! Archives that live elsewhere: `s3://bucket/key.npz` (S3 and S3-compatible stores) and
//! `http(s)://host/x.npz` (any server that honours Range), read by range.
//!
//! The protocol work (signing, credentials from the environment, instance and container
//! credentials, retries with backoff) is the `object_store` crate's. What npzfs adds: the
//! object's version (ETag) is taken when it is opened and every ranged GET asks for exactly
//! that version (If-Match), so an object replaced while mounted gives EIO, never bytes of two
//! versions; credentials from `~/.aws` profiles, which the crate does not read; and a display
//! name without credentials for logs and `/proc/mounts`.

use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::http::HttpBuilder;
use object_store::path::Path as StorePath;
use object_store::{
    BackoffConfig, ClientOptions, GetOptions, GetRange, ObjectStore, ObjectStoreExt, RetryConfig,
};

use crate::archive::Identity;
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

/// An object opened for ranged reads.
pub struct Remote {
    store: Arc<dyn ObjectStore>,
    path: StorePath,
    /// The URL without credentials or query, for messages.
    display: String,
    size: u64,
    etag: Option<String>,
    modified: SystemTime,
    runtime: tokio::runtime::Runtime,
}

impl Remote {
    /// Opens the object at `url`: one HEAD for its size and version. Each request gives up
    /// after `timeout`, and retries stop after as long again.
    pub fn open(url: &str, timeout: Duration) -> Result<Remote> {
        let display = display(url);
        let fail = |cause: String| Error::Remote {
            url: display.clone(),
            cause,
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("npzfs-remote")
            .enable_all()
            .build()
            .map_err(|e| fail(format!("cannot start its I/O threads: {e}")))?;
        if url.contains(['?', '#']) {
            return Err(fail(
                "a URL with a query (a pre-signed URL) is not supported".into(),
            ));
        }
        let (store, path) = client(url, timeout).map_err(fail)?;
        let meta = runtime
            .block_on(store.head(&path))
            .map_err(|e| fail(explain(&e)))?;
        Ok(Remote {
            store,
            path,
            display,
            size: meta.size,
            etag: meta.e_tag,
            modified: meta.last_modified.into(),
            runtime,
        })
    }

    /// The URL as messages show it (no credentials, no query).
    pub fn display(&self) -> &str {
        &self.display
    }

    /// The object's size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The version of the object opened, as an [`Identity`]: its cache files are keyed by it.
    pub fn identity(&self) -> Identity {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let version = format!("{}\0{}", self.display, self.etag.as_deref().unwrap_or(""));
        for b in version.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        let since = self
            .modified
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        Identity {
            dev: 0,
            ino: h,
            size: self.size,
            mtime: i64::try_from(since.as_secs()).unwrap_or(0),
            mtime_nsec: i64::from(since.subsec_nanos()),
        }
    }

    /// Fetches `range` of the version opened, on the I/O threads, and hands it to `done`
    /// there (never on the caller's thread).
    pub fn fetch(
        self: &Arc<Self>,
        range: Range<u64>,
        done: impl FnOnce(Result<Vec<u8>>) + Send + 'static,
    ) {
        let me = self.clone();
        self.runtime.spawn(async move {
            let options = GetOptions {
                if_match: me.etag.clone(),
                range: Some(GetRange::Bounded(range.clone())),
                ..Default::default()
            };
            let got = match me.store.get_opts(&me.path, options).await {
                Ok(got) => got.bytes().await,
                Err(e) => Err(e),
            };
            let result = got.map_err(|e| me.failed(&range, &e)).and_then(|bytes| {
                match bytes.len() as u64 == range.end - range.start {
                    true => Ok(Vec::from(bytes)),
                    false => Err(Error::Remote {
                        url: me.display.clone(),
                        cause: format!(
                            "asked for {} bytes at {}, got {}",
                            range.end - range.start,
                            range.start,
                            bytes.len()
                        ),
                    }),
                }
            });
            done(result);
        });
    }

    fn failed(&self, range: &Range<u64>, e: &object_store::Error) -> Error {
        let cause = match e {
            object_store::Error::Precondition { .. } => {
                "the object was replaced since it was mounted (its ETag changed)".to_string()
            }
            other => explain(other),
        };
        Error::Remote {
            url: self.display.clone(),
            cause: format!("bytes {}..{}: {cause}", range.start, range.end),
        }
    }
}

/// The store and the object's path in it, for `url`.
fn client(
    url: &str,
    timeout: Duration,
) -> std::result::Result<(Arc<dyn ObjectStore>, StorePath), String> {
    let retry = RetryConfig {
        backoff: BackoffConfig::default(),
        max_retries: 10,
        retry_timeout: timeout,
    };
    let env_true = |name: &str| std::env::var(name).is_ok_and(|v| v == "true" || v == "1");
    let options = ClientOptions::new()
        .with_timeout(timeout)
        .with_connect_timeout(timeout.min(Duration::from_secs(10)))
        .with_allow_http(env_true("AWS_ALLOW_HTTP") || url.starts_with("http://"));
    if let Some(rest) = url.strip_prefix("s3://") {
        let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() || key.is_empty() || key.ends_with('/') {
            return Err("an S3 source is s3://BUCKET/KEY.npz (prefixes are not served yet)".into());
        }
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_client_options(options)
            .with_retry(retry);
        for (key, value) in profile() {
            builder = builder.with_config(key, value);
        }
        let store = builder.build().map_err(|e| explain(&e))?;
        return Ok((Arc::new(store), StorePath::from(key)));
    }
    let (base, name) = url
        .rsplit_once('/')
        .filter(|(_, name)| !name.is_empty())
        .ok_or("a URL source names a file: http(s)://HOST/PATH/x.npz")?;
    let store = HttpBuilder::new()
        .with_url(format!("{base}/"))
        .with_client_options(options)
        .with_retry(retry)
        .build()
        .map_err(|e| explain(&e))?;
    Ok((Arc::new(store), StorePath::from(name)))
}

/// Settings of the `~/.aws` profile (`AWS_PROFILE`, else `default`) that the environment
/// does not set already: keys and token from the credentials file, region and endpoint from
/// the config file, as every AWS tool reads them.
fn profile() -> Vec<(AmazonS3ConfigKey, String)> {
    let var = |n: &str| std::env::var(n).ok().filter(|v| !v.is_empty());
    let name = var("AWS_PROFILE").unwrap_or_else(|| "default".into());
    let home = var("HOME").map(PathBuf::from).unwrap_or_default();
    let credentials = var("AWS_SHARED_CREDENTIALS_FILE")
        .map(PathBuf::from)
        .unwrap_or_else(|| home.join(".aws/credentials"));
    let config = var("AWS_CONFIG_FILE")
        .map(PathBuf::from)
        .unwrap_or_else(|| home.join(".aws/config"));
    let mut out = Vec::new();
    let config_section = match name.as_str() {
        "default" => "default".to_string(),
        other => format!("profile {other}"),
    };
    let wanted = [
        (
            &credentials,
            name.as_str(),
            "aws_access_key_id",
            "AWS_ACCESS_KEY_ID",
            AmazonS3ConfigKey::AccessKeyId,
        ),
        (
            &credentials,
            name.as_str(),
            "aws_secret_access_key",
            "AWS_SECRET_ACCESS_KEY",
            AmazonS3ConfigKey::SecretAccessKey,
        ),
        (
            &credentials,
            name.as_str(),
            "aws_session_token",
            "AWS_SESSION_TOKEN",
            AmazonS3ConfigKey::Token,
        ),
        (
            &config,
            config_section.as_str(),
            "region",
            "AWS_REGION",
            AmazonS3ConfigKey::Region,
        ),
        (
            &config,
            config_section.as_str(),
            "endpoint_url",
            "AWS_ENDPOINT_URL",
            AmazonS3ConfigKey::Endpoint,
        ),
    ];
    // Keys from a profile only when the environment gives none: a half-set pair would mix.
    let keys_in_env = var("AWS_ACCESS_KEY_ID").is_some();
    for (file, section, key, env, config_key) in wanted {
        let is_key = file == &credentials;
        if var(env).is_some() || (is_key && keys_in_env) {
            continue;
        }
        if let Some(value) = ini_value(file, section, key) {
            out.push((config_key, value));
        }
    }
    out
}

/// `key` of `[section]` in the INI file at `path`.
fn ini_value(path: &std::path::Path, section: &str, key: &str) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut inside = false;
    for line in text.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            inside = name.trim() == section;
        } else if inside
            && let Some((k, v)) = line.split_once('=')
            && k.trim() == key
        {
            return Some(v.trim().to_string());
        }
    }
    None
}

/// `url` without credentials (`user:password@`) or query (`?X-Amz-Signature=...`).
pub fn display(url: &str) -> String {
    let url = url.split(['?', '#']).next().unwrap_or(url);
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
            let host = authority.rsplit('@').next().unwrap_or(authority);
            format!("{scheme}://{host}/{path}")
        }
        None => url.to_string(),
    }
}

/// The crate's error in the words a user needs.
fn explain(e: &object_store::Error) -> String {
    let text = e.to_string();
    let said = |what: &str| format!("{what} ({})", one_line(&text));
    match e {
        object_store::Error::NotFound { .. } => said("no such object"),
        // Neither the environment nor ~/.aws had keys: the crate asked the instance metadata
        // service, which is not there (or refused).
        _ if text.contains("169.254.169.254") => said(
            "no credentials: none in AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, in a ~/.aws \
             profile, or from the instance or container",
        ),
        _ if text.contains("NoSuchBucket") => said("no such bucket"),
        _ if text.contains("InvalidAccessKeyId") || text.contains("SignatureDoesNotMatch") => said(
            "the credentials were refused (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, or the profile in ~/.aws)",
        ),
        _ if text.contains("403") || text.contains("Forbidden") => said("access denied"),
        _ if text.contains("non-partial response") || text.contains("Range") => {
            said("the server does not honour Range requests")
        }
        _ => one_line(&text),
    }
}

/// `text` on one line, shortened (errors of the HTTP stack nest their causes over lines), and
/// every URL in it without credentials.
fn one_line(text: &str) -> String {
    let words = text.split_whitespace().map(|w| match w.contains("://") {
        true => display(w),
        false => w.to_string(),
    });
    let flat = words.collect::<Vec<_>>().join(" ");
    match flat.char_indices().nth(300) {
        Some((cut, _)) => format!("{}...", &flat[..cut]),
        None => flat,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_and_queries_never_show() {
        assert_eq!(
            display("https://user:secret@example.org/a/x.npz?X-Amz-Signature=abc"),
            "https://example.org/a/x.npz"
        );
        assert_eq!(display("s3://bucket/run/x.npz"), "s3://bucket/run/x.npz");
        let said = one_line("Error performing HEAD http://u:pw@host:1/x.npz in 1ms\n - 404");
        assert_eq!(
            said,
            "Error performing HEAD http://host:1/x.npz in 1ms - 404"
        );
    }

    #[test]
    fn profiles_are_read_as_aws_tools_read_them() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("credentials");
        std::fs::write(
            &file,
            "[default]\naws_access_key_id = A\n\n[lab]\naws_access_key_id=B\naws_secret_access_key = s\n",
        )
        .unwrap();
        assert_eq!(
            ini_value(&file, "lab", "aws_access_key_id").as_deref(),
            Some("B")
        );
        assert_eq!(
            ini_value(&file, "default", "aws_access_key_id").as_deref(),
            Some("A")
        );
        assert_eq!(ini_value(&file, "lab", "region"), None);
    }
}
