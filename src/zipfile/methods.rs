//! The compression methods other than deflate (deflate64, bzip2, lzma, xz, zstd), read
//! through the zip crate, which decodes them; deflate has its own reader (`inflate.rs`).

use crate::bytes::{Archive, Reader};
use crate::error::{Error, Result};

/// The zip crate's reader of the archive (over the opened archive: the same file even if the
/// path was renamed over), and the index under which it lists member `number` of `name`
/// whose local header is at `header_start`. This parses the central directory again: a cost
/// paid per use, and only for the rarer methods.
pub fn zip_crate_member<'a>(
    archive: &'a Archive,
    name: &str,
    number: usize,
    header_start: u64,
) -> Result<(ZipOver<'a>, usize)> {
    let file = archive.reader();
    let zip = zip::ZipArchive::new(std::io::BufReader::new(file))
        .map_err(|e| zip_error(name, "the zip crate cannot parse the archive", e))?;
    // The zip crate keeps one record per name (of duplicates, the last, at the first's place),
    // so its indexes are not the central directory's: the member is found by its local header.
    let at = |i: usize| zip.by_index_data(i).map(|e| e.header_start());
    let found = std::iter::once(number)
        .chain(0..zip.len())
        .find(|&i| at(i).is_ok_and(|start| start == header_start))
        .ok_or_else(|| Error::Corrupt {
            what: name.to_string(),
            cause: "the zip crate does not list this member".into(),
        })?;
    Ok((zip, found))
}

/// The error of member `name` for a zip crate failure `e` while doing `doing`: a failed read
/// of the archive stays the read's own error (its errno and exit code with it), anything else
/// is `cannot read <name>: <doing> (<e>)`, the member corrupt.
pub fn zip_error(name: &str, doing: &str, e: zip::result::ZipError) -> Error {
    match e {
        zip::result::ZipError::Io(e) => read_error(name, doing, &e),
        e => Error::Corrupt {
            what: name.to_string(),
            cause: format!("{doing} ({e})"),
        },
    }
}

/// The error of member `name` for an `io::Error` from a zip crate reader while doing `doing`:
/// the archive's own read error if that is what failed, else a corrupt stream.
pub fn read_error(name: &str, doing: &str, e: &std::io::Error) -> Error {
    match Reader::failure(e) {
        Some(failed) => failed.for_member(name),
        None => Error::Corrupt {
            what: name.to_string(),
            cause: format!("{doing} ({e})"),
        },
    }
}

/// The zip crate's view of an archive.
pub type ZipOver<'a> = zip::ZipArchive<std::io::BufReader<crate::bytes::Reader<'a>>>;
