//! The opened archive: its identity, its read-only mapping, and safe range reads.
//!
//! Rule (ARCHITECTURE.md): mapped archive bytes only ever go to the kernel, as a reply slice. If the
//! archive is truncated in place the kernel's copy faults and the reader gets EIO, while a load
//! of the same bytes in userspace would kill the daemon with SIGBUS. Everything the daemon
//! itself parses (local headers) is read with `pread`.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;

use super::blocks::Blocks;
use super::disk::unmap_pages;
use super::identity::Identity;
use super::reply::{ReadDone, answer};
use crate::error::{Error, Result, cause};

/// An opened archive: a mapped local file, or a remote object read by range into its blocks
/// on local disk (`blocks.rs`). Only this type knows which: everything above reads through
/// it the same way.
pub struct Archive {
    path: PathBuf,
    backend: Backend,
    identity: Identity,
}

enum Backend {
    Local { file: File, map: Option<Mmap> },
    Remote(Arc<Blocks>),
}

impl Archive {
    /// Opens `path` read-only and maps it; refuses anything that is not a regular file.
    pub fn open(path: &Path) -> Result<Archive> {
        let open_err = |c: String| Error::ArchiveOpen {
            path: path.to_path_buf(),
            cause: c,
        };
        let file = File::open(path).map_err(|e| open_err(cause(&e)))?;
        Archive::from_file(file, path)
    }

    /// The archive in `file`, opened from `path` (for messages); refuses anything that is not
    /// a regular file.
    pub fn from_file(file: File, path: &Path) -> Result<Archive> {
        let open_err = |c: String| Error::ArchiveOpen {
            path: path.to_path_buf(),
            cause: c,
        };
        let meta = file.metadata().map_err(|e| open_err(cause(&e)))?;
        if meta.is_dir() {
            return Err(open_err("is a directory, not an .npz file".into()));
        }
        if !meta.is_file() {
            return Err(open_err("not a regular file".into()));
        }
        let map = if meta.len() == 0 {
            None
        } else {
            // SAFETY: the mapping is read-only and private to this process. Its bytes are only
            // handed to the kernel (reply slices), never loaded in userspace, so a concurrent
            // truncation makes the kernel's copy fail with EFAULT instead of raising SIGBUS here.
            let map = unsafe { Mmap::map(&file) }.map_err(|e| open_err(cause(&e)))?;
            Some(map)
        };
        Ok(Archive {
            path: path.to_path_buf(),
            backend: Backend::Local { file, map },
            identity: Identity::of(&meta),
        })
    }

    /// The remote archive whose bytes `blocks` fetches and keeps: one ranged GET of its end,
    /// where the central directory's search starts (a server that cannot serve it is a remote
    /// failure, exit 9, not a damaged archive).
    pub fn remote(blocks: Arc<Blocks>) -> Result<Archive> {
        let archive = Archive {
            path: PathBuf::from(blocks.remote().display()),
            identity: Identity::of_remote(blocks.remote()),
            backend: Backend::Remote(blocks),
        };
        let size = archive.size();
        let len = size.min(4096 + 22);
        archive.read_exact_at(&mut vec![0; len as usize], size - len)?;
        Ok(archive)
    }

    /// Whether a read may wait on the network: then a request thread must never read
    /// synchronously ([`Archive::read_exact_at`]), only ask ([`Archive::read_own`]).
    pub fn reads_wait(&self) -> bool {
        matches!(self.backend, Backend::Remote(_))
    }

    /// The path the archive was opened from (for messages only).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The archive's identity when it was opened.
    pub fn identity(&self) -> Identity {
        self.identity
    }

    /// Size of the archive when it was opened.
    pub fn size(&self) -> u64 {
        self.identity.size
    }

    /// The file the kernel can copy ranges of the archive from (`copy_file_range`, reflinks):
    /// a local archive's own; None for a remote one, which is on local disk only in blocks.
    pub fn copy_source(&self) -> Option<&File> {
        match &self.backend {
            Backend::Local { file, .. } => Some(file),
            Backend::Remote(_) => None,
        }
    }

    /// A reader of the archive's bytes from its start, for buffered parsing.
    pub fn reader(&self) -> Reader<'_> {
        Reader {
            archive: self,
            at: 0,
        }
    }

    /// Reads exactly `buf.len()` bytes at `offset` with `pread` (never through the mapping),
    /// or from a remote archive's blocks (waiting for them).
    pub fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let file = match &self.backend {
            Backend::Local { file, .. } => file,
            Backend::Remote(blocks) => return blocks.read_exact_at(buf, offset),
        };
        file.read_exact_at(buf, offset)
            .map_err(|e| self.pread_failed(offset, e))
    }

    /// A failed `pread` of the local archive: `cannot read <path> at offset <n>: <cause>`.
    fn pread_failed(&self, offset: u64, e: std::io::Error) -> Error {
        Error::io(
            "read",
            format!("{} at offset {offset}", self.path.display()),
            e,
        )
    }

    /// Bytes `[start, end)` of the archive to `done`, which must only hand them to the kernel
    /// (a FUSE reply): a local archive's are a slice of its mapping (checked unchanged first,
    /// and the daemon's page-table entries dropped once the kernel has copied them; without
    /// that, every page ever served would count in the daemon's resident set,
    /// `bench/rss.py`); a remote archive's come from its blocks, at once or once fetched.
    pub fn reply(&self, start: u64, end: u64, done: ReadDone) {
        match &self.backend {
            Backend::Remote(blocks) => blocks.read(start, end, done),
            Backend::Local { map, .. } => {
                let slice = self
                    .check_unchanged()
                    .and_then(|()| self.slice(start, end.saturating_sub(start)));
                done(slice);
                if let Some(map) = map {
                    unmap_pages(map, start, end.saturating_sub(start));
                }
            }
        }
    }

    /// Bytes `[start, end)` of the archive, copied for the daemon itself (parsing), to `done`:
    /// at once for a local archive (`pread`), for a remote one once its blocks are here (on
    /// the I/O thread that fetched the last, never under the blocks' lock).
    pub fn read_own(&self, start: u64, end: u64, done: ReadDone) {
        match &self.backend {
            Backend::Remote(blocks) => blocks.read_own(start, end, done),
            Backend::Local { .. } => {
                let mut buf = vec![0; end.saturating_sub(start) as usize];
                answer(done, self.read_exact_at(&mut buf, start).map(|()| buf));
            }
        }
    }

    /// Starts fetching bytes `[start, end)` where they are not here nor on their way, for a
    /// read that will follow (nothing for a local archive, whose bytes are always here).
    pub fn prefetch(&self, start: u64, end: u64) {
        if let Backend::Remote(blocks) = &self.backend {
            blocks.prefetch(start, end);
        }
    }

    /// `len` bytes of the mapping from `start`, to be handed to the kernel and nothing else.
    fn slice(&self, start: u64, len: u64) -> Result<&[u8]> {
        let out_of_range = || Error::Corrupt {
            what: self.path.display().to_string(),
            cause: format!("range {start}+{len} is past the end of the archive"),
        };
        let end = start.checked_add(len).ok_or_else(out_of_range)?;
        if end > self.size() {
            return Err(out_of_range());
        }
        let (Ok(s), Ok(e)) = (usize::try_from(start), usize::try_from(end)) else {
            return Err(out_of_range());
        };
        match &self.backend {
            Backend::Local { map: Some(map), .. } => map.get(s..e).ok_or_else(out_of_range),
            _ if s == e => Ok(&[]),
            _ => Err(out_of_range()),
        }
    }

    /// Fails if the file was truncated, grown or rewritten since it was opened.
    ///
    /// One `fstat` (a few hundred ns) per read: cheap beside a 128 KiB-1 MiB copy, and it turns
    /// "rewritten in place with the same size" from wrong bytes into EIO.
    /// A remote archive is always unchanged here: every request asks for its version.
    pub fn check_unchanged(&self) -> Result<()> {
        let Backend::Local { file, .. } = &self.backend else {
            return Ok(());
        };
        let now = file
            .metadata()
            .map_err(|e| Error::io("stat", self.path.display().to_string(), e))?;
        if Identity::of(&now) == self.identity {
            Ok(())
        } else {
            Err(Error::Corrupt {
                what: self.path.display().to_string(),
                cause: "the archive was modified in place while mounted".into(),
            })
        }
    }
}

/// `Read` and `Seek` over an archive's bytes (local or remote). A failed read is returned as
/// an `io::Error` carrying the archive's own [`Error`] (a `pread` or a remote fetch), which
/// [`Reader::failure`] gets back: through the zip crate, a read failure stays one.
pub struct Reader<'a> {
    archive: &'a Archive,
    at: u64,
}

impl Reader<'_> {
    /// The archive's error inside `e`, if `e` is a failed read of this reader (rather than
    /// something a parser made of the bytes it read).
    pub fn failure(e: &std::io::Error) -> Option<Error> {
        e.get_ref()?.downcast_ref::<Error>().cloned()
    }
}

impl std::io::Read for Reader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.archive.size().saturating_sub(self.at);
        let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let part = &mut buf[..n];
        let read = match &self.archive.backend {
            Backend::Local { file, .. } => file
                .read_exact_at(part, self.at)
                .map_err(|e| self.archive.pread_failed(self.at, e)),
            Backend::Remote(blocks) => blocks.read_exact_at(part, self.at),
        };
        read.map_err(std::io::Error::other)?;
        self.at += n as u64;
        Ok(n)
    }
}

impl std::io::Seek for Reader<'_> {
    fn seek(&mut self, pos: std::io::SeekFrom) -> std::io::Result<u64> {
        let target = match pos {
            std::io::SeekFrom::Start(n) => Some(n),
            std::io::SeekFrom::End(d) => self.archive.size().checked_add_signed(d),
            std::io::SeekFrom::Current(d) => self.at.checked_add_signed(d),
        };
        self.at = target.ok_or_else(|| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
        Ok(self.at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn slices_are_bounds_checked() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(b"0123456789").unwrap();
        let a = Archive::open(f.path()).unwrap();
        assert_eq!(a.slice(2, 3).unwrap(), b"234");
        assert_eq!(a.slice(10, 0).unwrap(), b"");
        assert!(a.slice(8, 3).is_err());
        assert!(a.slice(u64::MAX, 2).is_err());
    }

    #[test]
    fn a_directory_is_refused_with_a_clear_cause() {
        let d = tempfile::tempdir().unwrap();
        let err = Archive::open(d.path()).err().unwrap();
        assert_eq!(err.exit_code(), 3);
        assert!(err.to_string().contains("is a directory"), "{err}");
    }

    #[test]
    fn a_failed_read_through_the_reader_keeps_the_archives_error() {
        use std::io::Read;
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(b"0123456789").unwrap();
        let a = Archive::open(f.path()).unwrap();
        f.as_file().set_len(4).unwrap();
        let e = a.reader().read_to_end(&mut Vec::new()).unwrap_err();
        let kept = Reader::failure(&e).unwrap();
        assert!(matches!(kept, Error::Io { .. }), "{kept:?}");
        assert!(kept.to_string().contains("at offset 0"), "{kept}");
        // An error the reader did not make is not taken for one.
        assert!(Reader::failure(&std::io::ErrorKind::UnexpectedEof.into()).is_none());
    }

    #[test]
    fn an_in_place_change_is_detected() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(b"0123456789").unwrap();
        let a = Archive::open(f.path()).unwrap();
        a.check_unchanged().unwrap();
        f.as_file().set_len(4).unwrap();
        assert!(a.check_unchanged().is_err());
    }
}
