//! What npzfs knows of a member without reading its data: the facts `npzfs --list` prints and
//! the extended attributes each member file shows.
//!
//! Names and formats (fixed; tools parse them): `user.npy.dtype` (the header's `descr` as
//! numpy wrote it), `user.npy.shape` (a JSON array), `user.npy.fortran_order` (`true` or
//! `false`) where the member is a valid `.npy`; `user.zip.method`, `user.zip.compressed_size`
//! (decimal), `user.zip.crc32` (8 lowercase hex digits) and `user.npzfs.state` (where reads of
//! it are served from now: `archive`, `decoding`, `copying`, `sparse`, `cached` or
//! `passthrough`) on every member; `user.npzfs.cached` (decimal: the member's bytes now in
//! the cache) on compressed members, and on stored ones that `-o materialize` copies.

use crate::npy;
use crate::zipfile::members::{Member, Method};

/// Everything `--list` says of one member.
#[derive(Clone, Debug)]
pub struct Facts {
    /// The member's name in the archive.
    pub name: String,
    /// Its compression method, by name.
    pub method: String,
    /// Uncompressed size.
    pub size: u64,
    /// Bytes it occupies in the archive.
    pub compressed_size: u64,
    /// Its CRC-32 as the central directory states it.
    pub crc32: u32,
    /// Its `.npy` header, if it is a valid `.npy`.
    pub npy: Option<npy::Header>,
}

impl Facts {
    /// The facts of `member`, with its `.npy` header as read (or not) by the caller.
    pub fn of(member: &Member, npy: Option<npy::Header>) -> Facts {
        Facts {
            name: member.name.clone(),
            method: method_name(member.method),
            size: member.size,
            compressed_size: member.compressed_size,
            crc32: member.crc32,
            npy,
        }
    }
}

/// A compression method as `user.zip.method` and `--list` name it.
pub fn method_name(method: Method) -> String {
    match method {
        Method::Stored => "stored".into(),
        Method::Deflated => "deflated".into(),
        Method::Codec(9) => "deflate64".into(),
        Method::Codec(12) => "bzip2".into(),
        Method::Codec(14) => "lzma".into(),
        Method::Codec(93) => "zstd".into(),
        Method::Codec(95) => "xz".into(),
        Method::Codec(n) | Method::Other(n) => format!("method-{n}"),
    }
}

/// Every extended attribute name npzfs answers; anything else (`security.selinux`,
/// `system.posix_acl_access`, which `ls -l` asks of every entry) is ENODATA at once.
pub const XATTR_NAMES: [&str; 8] = [
    "user.npy.dtype",
    "user.npy.shape",
    "user.npy.fortran_order",
    "user.zip.method",
    "user.zip.compressed_size",
    "user.zip.crc32",
    "user.npzfs.cached",
    "user.npzfs.state",
];

/// Whether `name` needs the member's `.npy` header (its first bytes read, or inflated).
pub fn needs_header(name: &str) -> bool {
    name.starts_with("user.npy.")
}

/// The extended attributes of a member with `facts`, in the order `listxattr` gives them;
/// `cached` is the member's bytes in the cache (members the cache holds only), `state` where
/// it is served from.
pub fn xattrs(facts: &Facts, cached: Option<u64>, state: &str) -> Vec<(&'static str, String)> {
    let mut out = Vec::with_capacity(8);
    if let Some(h) = &facts.npy {
        out.push(("user.npy.dtype", h.descr.clone()));
        out.push(("user.npy.shape", h.shape_json()));
        out.push(("user.npy.fortran_order", h.fortran_order.to_string()));
    }
    out.push(("user.zip.method", facts.method.clone()));
    out.push((
        "user.zip.compressed_size",
        facts.compressed_size.to_string(),
    ));
    out.push(("user.zip.crc32", format!("{:08x}", facts.crc32)));
    if let Some(bytes) = cached {
        out.push(("user.npzfs.cached", bytes.to_string()));
    }
    out.push(("user.npzfs.state", state.to_string()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_names_are_the_documented_ones() {
        let names: Vec<String> = [
            Method::Stored,
            Method::Deflated,
            Method::Codec(9),
            Method::Codec(12),
            Method::Codec(14),
            Method::Codec(95),
            Method::Codec(93),
        ]
        .into_iter()
        .map(method_name)
        .collect();
        assert_eq!(
            names,
            [
                "stored",
                "deflated",
                "deflate64",
                "bzip2",
                "lzma",
                "xz",
                "zstd"
            ]
        );
    }

    #[test]
    fn every_attribute_made_is_one_getxattr_answers() {
        let header = npy::Header {
            descr: "<f4".into(),
            fortran_order: false,
            shape: vec![2],
            len: 128,
        };
        let facts = Facts {
            name: "x.npy".into(),
            method: "deflated".into(),
            size: 136,
            compressed_size: 40,
            crc32: 1,
            npy: Some(header),
        };
        let made: Vec<&str> = xattrs(&facts, Some(0), "archive")
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(made, XATTR_NAMES);
    }
}
