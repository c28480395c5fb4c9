//! What a decoding thread is given (a [`Job`]: where its member's bytes are and what they must
//! come to) and why it may stop early ([`Stop`]): shared by the decoder, the copy of a stored
//! member and the span fills.

use super::seek_index::Expected;
use crate::error::Error;
use crate::zipfile::Method;

/// What the decoder needs to know about its member.
#[derive(Clone, Debug)]
pub struct Job {
    /// Where the member's local header is in the archive.
    pub header_start: u64,
    /// Where the compressed bytes start in the archive.
    pub data_start: u64,
    /// How many compressed bytes there are.
    pub compressed_size: u64,
    /// The declared uncompressed size (trusted only as an upper bound).
    pub size: u64,
    /// The declared CRC-32.
    pub crc32: u32,
    /// How the bytes are compressed.
    pub method: Method,
}

impl Job {
    /// What the member's seek index must agree with.
    pub fn expected(&self) -> Expected {
        Expected {
            size: self.size,
            compressed_size: self.compressed_size,
            crc32: self.crc32,
        }
    }
}

/// Why a decode stopped early.
#[derive(Debug)]
pub enum Stop {
    /// The last holder went away.
    Cancelled,
    /// The stream, the archive or the cache disk failed: what readers get.
    Failed(Error),
}
