//! The first bytes of a member, without the cache: enough for its `.npy` header (for xattrs
//! and `--list`). A stored member's bytes are read from the archive with `pread`; a deflated
//! one is inflated only as far as asked, from the start of its stream (the inflate loop
//! sparse members use, `cache::inflate::inflate_at`); the rarer methods go through the zip
//! crate's reader. Nothing starts in the background, nothing is written.

use std::io::Read;

use crate::bytes::Archive;
use crate::error::{Error, Result};
use crate::npy;
use crate::zipfile::inflate::{Point, inflate_at};
use crate::zipfile::members::{Member, Method};
use crate::zipfile::methods::{read_error, zip_error};
use crate::zipfile::zip_crate_member;

/// The `.npy` header of member `number`, if it is a valid one.
pub fn npy_header(archive: &Archive, member: &Member, number: usize) -> Option<npy::Header> {
    if member.problem.is_some() || member.is_dir {
        return None;
    }
    // Most headers fit in the first 4 KiB: one read, and a second only for longer ones.
    let first = prefix(archive, member, number, 4096).ok()?;
    let len = npy::header_len(&first)?;
    if len <= first.len() {
        return npy::parse(&first);
    }
    npy::parse(&prefix(archive, member, number, len).ok()?)
}

/// Up to `want` bytes from the start of member `number` (fewer only if it is shorter).
pub fn prefix(archive: &Archive, member: &Member, number: usize, want: usize) -> Result<Vec<u8>> {
    let want = want.min(usize::try_from(member.size).unwrap_or(usize::MAX));
    let start = member.data_start(archive)?;
    match member.method {
        Method::Stored => {
            let mut out = vec![0u8; want];
            archive
                .read_exact_at(&mut out, start)
                .map_err(|e| e.for_member(&member.name))?;
            Ok(out)
        }
        Method::Deflated => {
            let range = (start, member.compressed_size);
            inflate_at(archive, range, &Point::start(), want, &member.name)
        }
        Method::Codec(_) => {
            let (mut zip, found) =
                zip_crate_member(archive, &member.name, number, member.header_start)?;
            let reader = zip
                .by_index(found)
                .map_err(|e| zip_error(&member.name, "cannot start decoding", e))?;
            let mut out = Vec::with_capacity(want);
            reader
                .take(want as u64)
                .read_to_end(&mut out)
                .map_err(|e| read_error(&member.name, "corrupt compressed stream", &e))?;
            Ok(out)
        }
        Method::Other(n) => Err(Error::Unsupported {
            what: member.name.clone(),
            cause: format!("compression method {n}"),
        }),
    }
}
