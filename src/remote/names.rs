//! How remote sources are named in logs, messages and `/proc/mounts`: URLs without
//! credentials or query, the object store's errors in the words a user needs, and a stable
//! hash that numbers objects and versions.

/// A stable 64-bit hash of `bytes` (FNV-1a): names of remote objects and versions as numbers.
pub fn fnv(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    h
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
pub(super) fn explain(e: &object_store::Error) -> String {
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
}
