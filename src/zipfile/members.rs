//! Central directory -> `Vec<Member>`: validation at mount, local headers on first use, and the
//! rule that turns a member name into safe path components.

use std::sync::OnceLock;

use crate::bytes::Archive;
use crate::error::{Error, Result};
use crate::zipfile::central;

/// Signature of a ZIP local file header.
const LOCAL_HEADER_SIGNATURE: u32 = 0x0403_4b50;
/// Fixed part of a local file header; the name and extra field follow it.
const LOCAL_HEADER_LEN: u64 = 30;
/// Longest name component Linux accepts (NAME_MAX).
const NAME_MAX: usize = 255;

/// How a member's bytes are stored in the archive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// Stored as is (`np.savez`): served straight from the archive.
    Stored,
    /// Deflate (`np.savez_compressed`).
    Deflated,
    /// Another method the zip crate decodes: deflate64 (9), bzip2 (12), lzma (14), zstd (93),
    /// xz (95); the raw ZIP method number.
    Codec(u16),
    /// Anything else; the raw ZIP method number.
    Other(u16),
}

/// Why a listed member cannot be served; found at mount, reported at open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    /// A method or feature npzfs does not decode (EOPNOTSUPP).
    Unsupported(String),
    /// The entry contradicts itself or the archive (EIO).
    Corrupt(String),
}

/// One ZIP entry, validated once and never mutated afterwards (but for its lazily resolved
/// `data_start`, which is written at most once). A clone carries the start as far as it was
/// resolved, and resolves its own from then on.
#[derive(Clone, Debug)]
pub struct Member {
    /// The name as the archive spells it, for messages.
    pub name: String,
    /// How the bytes are stored.
    pub method: Method,
    /// Offset of the local header within the archive.
    pub header_start: u64,
    /// Bytes the member occupies in the archive.
    pub compressed_size: u64,
    /// Uncompressed size: the file's `st_size`.
    pub size: u64,
    /// CRC-32 of the uncompressed bytes.
    pub crc32: u32,
    /// A directory entry (name ends in `/`): only creates a directory.
    pub is_dir: bool,
    /// Set when the member is listed but cannot be read.
    pub problem: Option<Problem>,
    /// FNV-1a of the name's raw bytes, to check the local header's copy against.
    name_hash: u32,
    data_start: OnceLock<u64>,
}

impl Method {
    /// Whether the member goes through the decompression cache.
    pub fn is_compressed(self) -> bool {
        matches!(self, Method::Deflated | Method::Codec(_))
    }
}

impl Member {
    /// Offset of the member's first byte within the archive, from its *local* header: numpy
    /// writes zip64 extras there that the central directory lacks, so the lengths differ.
    /// Resolved on first use (reading 10^6 local headers at mount would stall it; see
    /// ratarmount issue #121) and cached.
    pub fn data_start(&self, archive: &Archive) -> Result<u64> {
        if let Some(start) = self.data_start.get() {
            return Ok(*start);
        }
        // Only bytes within the archive are read: one that ends inside the local header is
        // `start_from`'s truncated header, a format problem; a failed read is the read's own
        // error (a local I/O error, a remote failure), never a verdict on the archive.
        let size = archive.size();
        let within = |end: u64| (end.min(size).saturating_sub(self.header_start)) as usize;
        let mut header = vec![0u8; within(self.header_start + LOCAL_HEADER_LEN)];
        archive
            .read_exact_at(&mut header, self.header_start)
            .map_err(|e| e.for_member(&self.name))?;
        // The name the local header gives (it must be this member's), then the whole check.
        if header.len() == LOCAL_HEADER_LEN as usize {
            let name_len = u64::from(u16::from_le_bytes([header[26], header[27]]));
            header.resize(within(self.header_start + LOCAL_HEADER_LEN + name_len), 0);
            archive
                .read_exact_at(
                    &mut header[LOCAL_HEADER_LEN as usize..],
                    self.header_start + LOCAL_HEADER_LEN,
                )
                .map_err(|e| e.for_member(&self.name))?;
        }
        self.start_from(&header, archive.size())
    }

    /// The start already resolved, if it is.
    pub fn known_start(&self) -> Option<u64> {
        self.data_start.get().copied()
    }

    /// Where the member's bytes most likely start, before its local header is read: after the
    /// header and the name the central directory gives, with no extra field (numpy's zip64
    /// extra is 20 bytes; the local header may carry up to 64 KiB). For fetching the bytes a
    /// first read wants beside the header, never for serving them.
    pub fn likely_start(&self) -> u64 {
        self.header_start + LOCAL_HEADER_LEN + self.name.len() as u64
    }

    /// The bytes from which [`Member::start_from`] can always resolve the start: the local
    /// header and the longest name it can give, within an archive of `size` bytes.
    pub fn header_span(&self, size: u64) -> std::ops::Range<u64> {
        let end = self.header_start + LOCAL_HEADER_LEN + u64::from(u16::MAX);
        self.header_start..end.min(size)
    }

    /// The start of the member's bytes, from `bytes` read at its local header (at least the
    /// header and its name), checked against the central directory, in an archive of `size`
    /// bytes; resolved for good.
    pub fn start_from(&self, bytes: &[u8], size: u64) -> Result<u64> {
        let fixed = LOCAL_HEADER_LEN as usize;
        if bytes.len() < fixed {
            return Err(self.corrupt(format!(
                "local header at offset {} is truncated",
                self.header_start
            )));
        }
        let u16_at = |i: usize| u64::from(u16::from_le_bytes([bytes[i], bytes[i + 1]]));
        let signature = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        if signature != LOCAL_HEADER_SIGNATURE {
            return Err(self.corrupt(format!("no local header at offset {}", self.header_start)));
        }
        if u16_at(8) != u64::from(self.method_number()) {
            return Err(
                self.corrupt("local header and central directory disagree on method".into())
            );
        }
        // The name's length places the data: a local header naming something else would
        // shift a stored member's bytes (Python's zipfile refuses it the same way).
        let local_name = bytes
            .get(fixed..fixed + u16_at(26) as usize)
            .ok_or_else(|| self.corrupt("local header is truncated".into()))?;
        if fnv1a(local_name) != self.name_hash {
            return Err(self.corrupt(format!(
                "local header names {:?}, the central directory {:?}",
                String::from_utf8_lossy(local_name),
                self.name
            )));
        }
        let start = self.header_start + LOCAL_HEADER_LEN + u16_at(26) + u16_at(28);
        if start
            .checked_add(self.compressed_size)
            .is_none_or(|end| end > size)
        {
            return Err(self.corrupt("member data runs past the end of the archive".into()));
        }
        Ok(*self.data_start.get_or_init(|| start))
    }

    fn corrupt(&self, cause: String) -> Error {
        Error::Corrupt {
            what: self.name.clone(),
            cause,
        }
    }

    fn method_number(&self) -> u16 {
        match self.method {
            Method::Stored => 0,
            Method::Deflated => 8,
            Method::Codec(n) | Method::Other(n) => n,
        }
    }
}

/// Reads and validates the central directory of `archive`. A damaged archive is
/// [`Error::ArchiveFormat`] (exit 4), a remote failure [`Error::Remote`] (exit 9), a local
/// file that cannot be read [`Error::ArchiveOpen`] (exit 3).
pub fn read_members(archive: &Archive) -> Result<Vec<Member>> {
    let format_err = |cause: String| Error::ArchiveFormat {
        path: archive.path().to_path_buf(),
        cause,
    };
    if archive.size() == 0 {
        return Err(format_err("the file is empty".into()));
    }
    let records = central::read(archive).map_err(|e| match e {
        // A failed pread leaves the archive unopened: exit 3 with the read's own words, not
        // the "internal error" a serving-time I/O error would be at startup.
        e @ Error::Io { .. } => Error::ArchiveOpen {
            path: archive.path().to_path_buf(),
            cause: e.to_string(),
        },
        e => e,
    })?;
    let mut members = Vec::with_capacity(records.len());
    for record in records {
        let method = match record.method {
            0 => Method::Stored,
            8 => Method::Deflated,
            n @ (9 | 12 | 14 | 93 | 95) => Method::Codec(n),
            n => Method::Other(n),
        };
        let mut member = Member {
            is_dir: record.is_dir(),
            name_hash: fnv1a(&record.raw_name),
            name: record.name,
            method,
            header_start: record.header_start,
            compressed_size: record.compressed_size,
            size: record.size,
            crc32: record.crc32,
            problem: None,
            data_start: OnceLock::new(),
        };
        member.problem = validate(&member, record.encrypted, archive.size());
        if let Some(problem) = &member.problem {
            log::debug!(
                "member {} is listed but unreadable: {problem:?}",
                member.name
            );
        }
        members.push(member);
    }
    Ok(members)
}

fn validate(m: &Member, encrypted: bool, archive_size: u64) -> Option<Problem> {
    if encrypted {
        return Some(Problem::Unsupported("the member is encrypted".into()));
    }
    if let Method::Other(n) = m.method {
        return Some(Problem::Unsupported(format!(
            "unsupported compression method {n}"
        )));
    }
    if m.method == Method::Stored && m.size != m.compressed_size {
        return Some(Problem::Corrupt(format!(
            "stored member declares {} bytes but occupies {}",
            m.size, m.compressed_size
        )));
    }
    let end = m
        .header_start
        .checked_add(LOCAL_HEADER_LEN + m.compressed_size);
    if end.is_none_or(|end| end > archive_size) {
        return Some(Problem::Corrupt(
            "member data runs past the end of the archive".into(),
        ));
    }
    None
}

/// The path components a member is mounted under. The rule, documented in the README:
/// `/` and `\` separate components; empty, `.` and `..` components are dropped (so nothing
/// can climb out of the mount); NUL bytes become `_`; a component longer than 255 bytes is cut
/// to 246 bytes plus `~` and 8 hex digits of a hash of the whole component.
pub fn sanitise(name: &str) -> Vec<Vec<u8>> {
    name.split(['/', '\\'])
        .filter(|c| !c.is_empty() && *c != "." && *c != "..")
        .map(|c| {
            let bytes: Vec<u8> = c.bytes().map(|b| if b == 0 { b'_' } else { b }).collect();
            if bytes.len() <= NAME_MAX {
                bytes
            } else {
                shorten(c, &bytes)
            }
        })
        .collect()
}

fn shorten(component: &str, bytes: &[u8]) -> Vec<u8> {
    let mut cut = NAME_MAX - 9;
    while !component.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut out = bytes[..cut].to_vec();
    out.extend_from_slice(format!("~{:08x}", fnv1a(bytes)).as_bytes());
    out
}

fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |h, &b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

#[cfg(test)]
impl Member {
    /// An empty stored member called `name` (a directory if it ends in `/`), for tests of what
    /// is built from members.
    pub fn named(name: &str) -> Member {
        Member {
            name: name.to_string(),
            method: Method::Stored,
            header_start: 0,
            compressed_size: 0,
            size: 0,
            crc32: 0,
            is_dir: name.ends_with('/'),
            problem: None,
            name_hash: fnv1a(name.as_bytes()),
            data_start: OnceLock::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(name: &str) -> Vec<String> {
        sanitise(name)
            .into_iter()
            .map(|c| String::from_utf8(c).unwrap())
            .collect()
    }

    #[test]
    fn plain_and_nested_names() {
        assert_eq!(s("x.npy"), ["x.npy"]);
        assert_eq!(s("a/b.npy"), ["a", "b.npy"]);
        assert_eq!(s("a\\b.npy"), ["a", "b.npy"]);
    }

    #[test]
    fn nothing_climbs_out() {
        assert_eq!(s("../../etc/passwd"), ["etc", "passwd"]);
        assert_eq!(s("/abs/x.npy"), ["abs", "x.npy"]);
        assert_eq!(s("./a//./b/../c"), ["a", "b", "c"]);
        assert!(s("..").is_empty());
        assert!(s("/").is_empty());
    }

    #[test]
    fn nul_and_long_components() {
        assert_eq!(s("a\0b"), ["a_b"]);
        let long = "é".repeat(200); // 400 bytes
        let out = sanitise(&long);
        assert_eq!(out.len(), 1);
        assert!(out[0].len() <= NAME_MAX);
        assert!(std::str::from_utf8(&out[0]).is_ok());
        let other = sanitise(&format!("{long}x"));
        assert_ne!(out, other, "different long names stay different");
    }
}
