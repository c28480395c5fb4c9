//! A plain file of a source tree, not an archive: a file on disk, or an object of a bucket
//! read by range into its blocks. Whoever serves it reads it through one call, whichever it is.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use super::blocks::Blocks;
use super::reply::ReadDone;
use crate::error::Error;

/// A regular file of a source, opened.
pub enum Plain {
    /// A file on disk.
    File(File),
    /// A remote object, read by range through its blocks.
    Object(Arc<Blocks>),
}

impl Plain {
    /// Up to `size` bytes from `offset` to `done` (fewer at the end of the file): a file's
    /// with `pread` at once, an object's from its blocks, at once or once fetched.
    pub fn read(&self, offset: u64, size: u32, done: ReadDone) {
        match self {
            Plain::File(file) => {
                let mut buf = vec![0; size as usize];
                match read_full(file, &mut buf, offset) {
                    Ok(n) => done(Ok(&buf[..n])),
                    Err(e) => done(Err(Error::in_source("read", "a source file", e))),
                }
            }
            Plain::Object(blocks) => blocks.read(offset, offset + u64::from(size), done),
        }
    }
}

/// Reads until `buf` is full or the file ends; the bytes read.
fn read_full(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read_at(&mut buf[n..], offset + n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}
