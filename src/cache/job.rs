//! What a decoding thread is given (a [`Job`]: where its member's bytes are and what they must
//! come to; a [`Start`] it resolves first) and why it may stop early ([`Stop`]): shared by the
//! decoder, the copy of a stored member and the span fills.

use super::seek_index::Expected;
use crate::bytes::Archive;
use crate::error::{Error, Result};
use crate::zipfile::{Member, Method};

/// Where a member's compressed bytes start in the archive: known already, or read from its
/// local header by the decoding thread that first needs it. In an archive whose reads may wait
/// on the network that read is never made on the request thread that opened the member.
#[derive(Clone, Debug)]
pub struct Start {
    /// A copy of the member: its start is kept in it once resolved.
    member: Member,
}

impl Start {
    /// The start of `member`, resolved now if it is known.
    pub fn of(member: &Member) -> Start {
        Start {
            member: member.clone(),
        }
    }

    /// Where the compressed bytes start: reads the local header the first time (waiting for
    /// it, so only on a decoding thread when the archive's reads may wait).
    pub fn resolve(&self, archive: &Archive) -> Result<u64> {
        self.member.data_start(archive)
    }

    /// The job of decoding the member whose start is `data_start`.
    pub fn job(&self, data_start: u64) -> Job {
        let m = &self.member;
        Job {
            header_start: m.header_start,
            data_start,
            compressed_size: m.compressed_size,
            size: m.size,
            crc32: m.crc32,
            method: m.method,
        }
    }

    /// How many compressed bytes there are.
    pub fn compressed_size(&self) -> u64 {
        self.member.compressed_size
    }
}

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
