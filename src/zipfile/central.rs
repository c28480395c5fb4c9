//! The central directory, read the way Python's `zipfile` reads it (numpy writes its archives
//! with it): the end record found from the end of the file, its zip64 form if a locator
//! precedes it, the directory right before it, and each entry's zip64 extra field.
//!
//! Hand-written rather than the `zip` crate's parser, which builds a name-keyed map of large
//! per-entry records: that was 39% of the time and most of the peak memory of mounting 10^6
//! members (`perf record`; BENCHMARKS.md). Everything is read with `pread` through a buffer,
//! never through the archive mapping (see `archive.rs`).

use std::io::{BufReader, Read, Seek, SeekFrom};

use crate::bytes::{Archive, Reader};
use crate::error::{Error, Result};

/// Signature of the end of central directory record.
const END_SIGNATURE: u32 = 0x0605_4b50;
/// Fixed part of the end record; a comment of up to 65535 bytes follows.
const END_LEN: u64 = 22;
/// End record signatures tried, from the last: a comment may hold the signature, but a file
/// of nothing else must not cost a directory parse per byte.
const MAX_END_CANDIDATES: usize = 8;
/// Signature and length of the zip64 end record locator, right before the end record.
const LOCATOR_SIGNATURE: u32 = 0x0706_4b50;
const LOCATOR_LEN: u64 = 20;
/// Signature and fixed length of the zip64 end record, right before its locator.
const END64_SIGNATURE: u32 = 0x0606_4b50;
const END64_LEN: u64 = 56;
/// Signature and fixed length of a central directory entry.
const ENTRY_SIGNATURE: u32 = 0x0201_4b50;
const ENTRY_LEN: usize = 46;
/// Extra field ids: zip64 sizes and offset; Info-ZIP's UTF-8 name.
const ZIP64_EXTRA: u16 = 0x0001;
const UNICODE_PATH_EXTRA: u16 = 0x7075;
/// General purpose flags: encrypted; name in UTF-8.
const FLAG_ENCRYPTED: u16 = 1;
const FLAG_UTF8: u16 = 1 << 11;

/// One central directory record (the ZIP spec's "central directory file header"), as the
/// directory states it: what becomes a member.
#[derive(Debug)]
pub struct Record {
    /// The name's bytes as stored.
    pub raw_name: Vec<u8>,
    /// The name decoded: UTF-8 when flagged (or given by a matching Unicode path field), else
    /// code page 437, as `zipfile` and the `zip` crate decode it.
    pub name: String,
    /// The ZIP method number.
    pub method: u16,
    pub encrypted: bool,
    pub crc32: u32,
    pub compressed_size: u64,
    pub size: u64,
    /// Offset of the local header in the file (any prefix before the archive accounted for).
    pub header_start: u64,
}

impl Record {
    /// A directory entry: its name ends in a separator.
    pub fn is_dir(&self) -> bool {
        matches!(self.raw_name.last(), Some(b'/' | b'\\'))
    }
}

/// Where the directory lies and how far every offset it holds is shifted.
struct Directory {
    start: u64,
    size: u64,
    /// Bytes before the archive proper (a self-extractor's stub) that its offsets leave out.
    shift: u64,
}

/// The archive is not a ZIP we can read: `cannot read archive <path>: not a ZIP archive or
/// damaged (<why>)` (exit code 4).
fn damaged(archive: &Archive, why: impl std::fmt::Display) -> Error {
    Error::ArchiveFormat {
        path: archive.path().to_path_buf(),
        cause: format!("not a ZIP archive or damaged ({why})"),
    }
}

/// Reads every entry of the central directory of `archive`. A directory that is not there or
/// not right is [`Error::ArchiveFormat`], saying in a few words why; a failed read of the
/// archive is the read's own error (a local I/O error, a remote failure).
pub fn read(archive: &Archive) -> Result<Vec<Record>> {
    let len = archive.size();
    if len < END_LEN {
        return Err(damaged(archive, format!("only {len} bytes")));
    }
    // The end record is the last signature whose record fits: searched backwards through the
    // longest comment it can have, and the first one that leads to a directory wins (bytes
    // after the archive are allowed, as zipfile and unzip allow them). numpy writes no
    // comment, so the last 4 KiB almost always hold it (and a small shard's whole directory):
    // opening one of 10^4 shards then reads 4 KiB, not 64. Only when that finds nothing is the
    // whole window searched, from the end again, so the answer is the same.
    let mut first_error = None;
    for window in [4096, u64::from(u16::MAX)] {
        let from = len.saturating_sub(END_LEN + window);
        let mut tail = vec![0u8; (len - from) as usize];
        archive.read_exact_at(&mut tail, from)?;
        let candidates = (0..=tail.len() - END_LEN as usize)
            .rev()
            .filter(|&at| u32_at(&tail, at) == END_SIGNATURE)
            .take(MAX_END_CANDIDATES);
        for at in candidates {
            match directory(archive, &tail[at..at + END_LEN as usize], from + at as u64)
                .and_then(|dir| records(archive, &dir))
            {
                Ok(entries) => return Ok(entries),
                // Another candidate may still lead to a directory; a failed read ends the search.
                Err(e @ Error::ArchiveFormat { .. }) => {
                    first_error.get_or_insert(e);
                }
                Err(e) => return Err(e),
            }
        }
        if from == 0 {
            break;
        }
    }
    Err(first_error.unwrap_or_else(|| damaged(archive, "no end of central directory record")))
}

/// The directory an end record at `at` describes, its zip64 record consulted if present.
fn directory(archive: &Archive, end: &[u8], at: u64) -> Result<Directory> {
    let mut size = u64::from(u32_at(end, 12));
    let mut offset = u64::from(u32_at(end, 16));
    let mut records = END_LEN;
    if let Some(end64) = zip64_end(archive, at)? {
        size = u64_at(&end64, 40);
        offset = u64_at(&end64, 48);
        records += LOCATOR_LEN + END64_LEN;
    }
    // The directory ends where the end records begin; its stated offset tells how much of the
    // file precedes the archive.
    let start = (at + END_LEN)
        .checked_sub(records)
        .and_then(|end_of_dir| end_of_dir.checked_sub(size))
        .ok_or_else(|| damaged(archive, "the central directory is larger than the file"))?;
    let shift = start
        .checked_sub(offset)
        .ok_or_else(|| damaged(archive, "bad offset for the central directory"))?;
    Ok(Directory { start, size, shift })
}

/// The zip64 end record, if a locator right before the end record at `at` points to one
/// right before itself (where zipfile looks).
fn zip64_end(archive: &Archive, at: u64) -> Result<Option<[u8; END64_LEN as usize]>> {
    let Some(locator_at) = at.checked_sub(LOCATOR_LEN) else {
        return Ok(None);
    };
    let mut locator = [0u8; LOCATOR_LEN as usize];
    archive.read_exact_at(&mut locator, locator_at)?;
    if u32_at(&locator, 0) != LOCATOR_SIGNATURE {
        return Ok(None);
    }
    if u32_at(&locator, 4) != 0 || u32_at(&locator, 16) > 1 {
        return Err(damaged(
            archive,
            "archives that span several disks are not supported",
        ));
    }
    let missing = || {
        damaged(
            archive,
            "the zip64 end of central directory record is missing",
        )
    };
    let end64_at = locator_at.checked_sub(END64_LEN).ok_or_else(missing)?;
    let mut end64 = [0u8; END64_LEN as usize];
    archive.read_exact_at(&mut end64, end64_at)?;
    if u32_at(&end64, 0) != END64_SIGNATURE {
        return Err(missing());
    }
    Ok(Some(end64))
}

/// Every entry of `dir`, read through a buffer from its start to its stated size.
fn records(archive: &Archive, dir: &Directory) -> Result<Vec<Record>> {
    let mut reader = BufReader::with_capacity(256 << 10, archive.reader());
    reader
        .seek(SeekFrom::Start(dir.start))
        .map_err(|_| damaged(archive, "bad offset for the central directory"))?;
    let mut reader = reader.take(dir.size);
    // Running out of the directory's stated size is a format problem; a failed read is not.
    let truncated = |e: std::io::Error| {
        Reader::failure(&e)
            .unwrap_or_else(|| damaged(archive, "the central directory is truncated"))
    };
    // Each entry takes at least ENTRY_LEN bytes: a lying count cannot reserve more than that.
    let mut out = Vec::with_capacity((dir.size / ENTRY_LEN as u64) as usize);
    let mut read = 0u64;
    let mut fixed = [0u8; ENTRY_LEN];
    let mut variable = Vec::new();
    while read < dir.size {
        reader.read_exact(&mut fixed).map_err(truncated)?;
        if u32_at(&fixed, 0) != ENTRY_SIGNATURE {
            return Err(damaged(
                archive,
                format!(
                    "bad signature in the central directory at offset {}",
                    dir.start + read
                ),
            ));
        }
        let (name_len, extra_len, comment_len) = (
            usize::from(u16_at(&fixed, 28)),
            usize::from(u16_at(&fixed, 30)),
            usize::from(u16_at(&fixed, 32)),
        );
        variable.resize(name_len + extra_len + comment_len, 0);
        reader.read_exact(&mut variable).map_err(truncated)?;
        read += (ENTRY_LEN + variable.len()) as u64;
        let raw_name = variable[..name_len].to_vec();
        let extra = &variable[name_len..name_len + extra_len];
        out.push(record(archive, &fixed, raw_name, extra, dir.shift)?);
    }
    Ok(out)
}

/// One entry of `archive` from its fixed part, name and extra field.
fn record(
    archive: &Archive,
    fixed: &[u8],
    raw_name: Vec<u8>,
    extra: &[u8],
    shift: u64,
) -> Result<Record> {
    let flags = u16_at(fixed, 8);
    let mut size = u64::from(u32_at(fixed, 24));
    let mut compressed_size = u64::from(u32_at(fixed, 20));
    let mut header_start = u64::from(u32_at(fixed, 42));
    let mut unicode_name = None;
    for (id, data) in extra_fields(extra) {
        match id {
            ZIP64_EXTRA => {
                // Present in order for each field the fixed part marks as too large.
                let mut values = data.chunks_exact(8).map(|c| u64_at(c, 0));
                for field in [&mut size, &mut compressed_size, &mut header_start] {
                    if *field == u64::from(u32::MAX) {
                        *field = values.next().ok_or_else(|| {
                            let name = String::from_utf8_lossy(&raw_name);
                            damaged(archive, format!("corrupt zip64 extra field of {name:?}"))
                        })?;
                    }
                }
            }
            // Version 1, the CRC-32 of the name it replaces, the name in UTF-8.
            UNICODE_PATH_EXTRA if data.len() > 5 && data[0] == 1 => {
                if u32_at(data, 1) == crc32fast::hash(&raw_name)
                    && let Ok(name) = std::str::from_utf8(&data[5..])
                {
                    unicode_name = Some(name.to_string());
                }
            }
            _ => {}
        }
    }
    let name = match (unicode_name, flags & FLAG_UTF8 != 0) {
        (Some(name), _) => name,
        (None, true) => match std::str::from_utf8(&raw_name) {
            Ok(name) => name.to_string(),
            Err(_) => cp437(&raw_name),
        },
        (None, false) => cp437(&raw_name),
    };
    Ok(Record {
        raw_name,
        name,
        method: u16_at(fixed, 10),
        encrypted: flags & FLAG_ENCRYPTED != 0,
        crc32: u32_at(fixed, 16),
        compressed_size,
        size,
        header_start: header_start.saturating_add(shift),
    })
}

/// The (id, data) fields of an extra field block; a field that runs past the block ends it.
fn extra_fields(mut extra: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        let id = u16_at(extra.get(..4)?, 0);
        let len = usize::from(u16_at(extra, 2));
        let data = extra.get(4..4 + len)?;
        extra = &extra[4 + len..];
        Some((id, data))
    })
}

/// Decodes code page 437, the ZIP format's default: ASCII below 0x80.
fn cp437(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|&b| match b {
            0..0x80 => char::from(b),
            _ => CP437_HIGH[usize::from(b - 0x80)],
        })
        .collect()
}

#[rustfmt::skip]
const CP437_HIGH: [char; 128] = [
    'Ç', 'ü', 'é', 'â', 'ä', 'à', 'å', 'ç', 'ê', 'ë', 'è', 'ï', 'î', 'ì', 'Ä', 'Å',
    'É', 'æ', 'Æ', 'ô', 'ö', 'ò', 'û', 'ù', 'ÿ', 'Ö', 'Ü', '¢', '£', '¥', '₧', 'ƒ',
    'á', 'í', 'ó', 'ú', 'ñ', 'Ñ', 'ª', 'º', '¿', '⌐', '¬', '½', '¼', '¡', '«', '»',
    '░', '▒', '▓', '│', '┤', '╡', '╢', '╖', '╕', '╣', '║', '╗', '╝', '╜', '╛', '┐',
    '└', '┴', '┬', '├', '─', '┼', '╞', '╟', '╚', '╔', '╩', '╦', '╠', '═', '╬', '╧',
    '╨', '╤', '╥', '╙', '╘', '╒', '╓', '╫', '╪', '┘', '┌', '█', '▄', '▌', '▐', '▀',
    'α', 'ß', 'Γ', 'π', 'Σ', 'σ', 'µ', 'τ', 'Φ', 'Θ', 'Ω', 'δ', '∞', 'φ', 'ε', '∩',
    '≡', '±', '≥', '≤', '⌠', '⌡', '÷', '≈', '°', '∙', '·', '√', 'ⁿ', '²', '■', '\u{a0}',
];

fn u16_at(b: &[u8], i: usize) -> u16 {
    u16::from_le_bytes([b[i], b[i + 1]])
}

fn u32_at(b: &[u8], i: usize) -> u32 {
    u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

fn u64_at(b: &[u8], i: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[i..i + 8]);
    u64::from_le_bytes(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_page_437() {
        assert_eq!(cp437(b"caf\x82.npy"), "café.npy");
        assert_eq!(cp437(b"\xe9\xff\xfe"), "Θ\u{a0}■");
        assert_eq!(cp437(b"plain/ascii"), "plain/ascii");
    }

    /// An archive of nothing but a central directory of one entry (`name`, `flags`, the
    /// fixed part's sizes and offset, `extra`) and its end record, read back.
    fn one_record(name: &[u8], flags: u16, fixed: [u32; 3], extra: &[u8]) -> Result<Record> {
        let mut cd = Vec::new();
        cd.extend_from_slice(&ENTRY_SIGNATURE.to_le_bytes());
        cd.extend_from_slice(&[20, 0, 20, 0]);
        cd.extend_from_slice(&flags.to_le_bytes());
        cd.extend_from_slice(&[8, 0, 0, 0, 0, 0]); // deflate, time, date
        cd.extend_from_slice(&0xdead_beefu32.to_le_bytes());
        cd.extend_from_slice(&fixed[0].to_le_bytes()); // compressed
        cd.extend_from_slice(&fixed[1].to_le_bytes()); // size
        cd.extend_from_slice(&(name.len() as u16).to_le_bytes());
        cd.extend_from_slice(&(extra.len() as u16).to_le_bytes());
        cd.extend_from_slice(&[0; 10]); // comment length, disk, attributes
        cd.extend_from_slice(&fixed[2].to_le_bytes()); // local header offset
        cd.extend_from_slice(name);
        cd.extend_from_slice(extra);
        let mut file = cd.clone();
        file.extend_from_slice(&END_SIGNATURE.to_le_bytes());
        file.extend_from_slice(&[0, 0, 0, 0, 1, 0, 1, 0]);
        file.extend_from_slice(&(cd.len() as u32).to_le_bytes());
        file.extend_from_slice(&[0; 6]); // directory offset 0, no comment
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.zip");
        std::fs::write(&path, file).unwrap();
        let archive = Archive::open(&path).unwrap();
        read(&archive).map(|mut v| v.remove(0))
    }

    #[test]
    fn zip64_extra_fields_replace_the_fields_marked_too_large() {
        let max = u32::MAX;
        let mut extra = vec![1, 0, 24, 0];
        for v in [5u64 << 32, 3u64 << 32, 7u64 << 32] {
            extra.extend_from_slice(&v.to_le_bytes());
        }
        let e = one_record(b"x.npy", 0, [max, max, max], &extra).unwrap();
        assert_eq!(
            (e.size, e.compressed_size, e.header_start),
            (5 << 32, 3 << 32, 7 << 32)
        );
        // Only the marked ones, in order: here the offset alone.
        let extra = [&[1u8, 0, 8, 0][..], &(9u64 << 32).to_le_bytes()].concat();
        let e = one_record(b"x.npy", 0, [10, 20, max], &extra).unwrap();
        assert_eq!(
            (e.size, e.compressed_size, e.header_start),
            (20, 10, 9 << 32)
        );
        // A marked field with no value: the directory is refused.
        assert!(one_record(b"x.npy", 0, [max, 20, 0], &[1, 0, 0, 0]).is_err());
    }

    #[test]
    fn names_utf8_when_flagged_or_given_by_a_matching_unicode_path_field() {
        let utf8 = "caf\u{e9}.npy".as_bytes();
        assert_eq!(
            one_record(utf8, FLAG_UTF8, [0; 3], &[]).unwrap().name,
            "caf\u{e9}.npy"
        );
        // Unflagged, the same bytes are code page 437.
        assert_eq!(one_record(utf8, 0, [0; 3], &[]).unwrap().name, "caf├⌐.npy");
        let field = |crc: u32| {
            let mut f = vec![0x75, 0x70, (5 + utf8.len()) as u8, 0, 1];
            f.extend_from_slice(&crc.to_le_bytes());
            f.extend_from_slice(utf8);
            f
        };
        let raw = b"caf\x82.npy";
        let named = one_record(raw, 0, [0; 3], &field(crc32fast::hash(raw))).unwrap();
        assert_eq!(named.name, "caf\u{e9}.npy");
        // A field written for another name (the name was changed since) is ignored.
        let stale = one_record(raw, 0, [0; 3], &field(1)).unwrap();
        assert_eq!(stale.name, "café.npy");
        assert_eq!(stale.raw_name, raw);
    }

    #[test]
    fn a_failed_read_is_the_reads_error_and_a_bad_directory_a_format_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.zip");
        let mut bytes = vec![0u8; 100];
        bytes.extend_from_slice(&END_SIGNATURE.to_le_bytes());
        bytes.extend_from_slice(&[0, 0, 0, 0, 1, 0, 1, 0]);
        bytes.extend_from_slice(&46u32.to_le_bytes()); // a 46-byte directory...
        bytes.extend_from_slice(&[0; 6]); // ...at offset 0: zeros, no entry signature
        std::fs::write(&path, &bytes).unwrap();
        let archive = Archive::open(&path).unwrap();
        let e = read(&archive).unwrap_err();
        assert_eq!(e.exit_code(), crate::error::exit::ARCHIVE_FORMAT, "{e}");
        assert!(
            e.to_string().ends_with(
                "not a ZIP archive or damaged (bad signature in the central directory at \
                 offset 54)"
            ),
            "{e}"
        );
        // The same file cut on disk after it was opened: its end cannot be read, which says
        // nothing about its format.
        std::fs::File::options()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_len(10))
            .unwrap();
        let e = read(&archive).unwrap_err();
        assert!(matches!(e, Error::Io { .. }), "{e:?}");
    }

    #[test]
    fn extra_fields_stop_at_a_field_that_overruns() {
        let extra = [1, 0, 2, 0, 7, 7, 9, 0, 10, 0, 1];
        let fields: Vec<_> = extra_fields(&extra).collect();
        assert_eq!(fields, [(1, &[7u8, 7][..])]);
    }
}
