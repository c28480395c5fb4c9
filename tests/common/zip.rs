//! A ZIP builder for the cases numpy cannot produce, and member content that verifies itself
//! at any offset (no golden files). Shared by the tests and the fuzz targets.
#![allow(dead_code)]

use std::path::Path;

/// Byte `i` of a member seeded with `seed`: computable at any offset, different per member.
pub fn byte_at(seed: u64, i: u64) -> u8 {
    let x = (i ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15)).wrapping_mul(0xff51_afd7_ed55_8ccd);
    (x >> 56) as u8
}

/// `len` bytes of the pattern for `seed` from `offset`.
pub fn pattern(seed: u64, offset: u64, len: usize) -> Vec<u8> {
    (0..len as u64).map(|i| byte_at(seed, offset + i)).collect()
}

/// One member of a hand-built archive.
#[derive(Clone)]
pub struct Entry {
    pub name: Vec<u8>,
    pub data: Vec<u8>,
    /// 0 stored, 8 deflated (compressed here), anything else is written as is.
    pub method: u16,
    /// Bit 3: sizes and CRC in a data descriptor after the data, zeros in the local header.
    pub descriptor: bool,
    /// numpy's style: 0xFFFFFFFF sizes and a zip64 extra field in the local header only.
    pub zip64_local: bool,
    /// Bit 0 set (the data is not actually encrypted).
    pub encrypted: bool,
    /// Size written to the central directory instead of the real one.
    pub declared_size: Option<u64>,
    /// Method written to the local header instead of `method`.
    pub local_method: Option<u16>,
    /// CRC-32 written to both headers instead of the real one.
    pub declared_crc: Option<u32>,
    /// Compressed size written to the central directory instead of the real one.
    pub declared_csize: Option<u64>,
    /// Local header offset written to the central directory instead of the real one.
    pub declared_offset: Option<u32>,
    /// Name written to the local header instead of `name`.
    pub local_name: Option<Vec<u8>>,
    /// `data` is already the member's stream (a hand-made deflate stream, say): written as is.
    pub raw: bool,
    /// General purpose flag bits set in both headers (bit 11: the name is UTF-8).
    pub extra_flags: u16,
}

impl Entry {
    pub fn stored(name: &str, data: Vec<u8>) -> Entry {
        Entry {
            name: name.as_bytes().to_vec(),
            data,
            method: 0,
            descriptor: false,
            zip64_local: false,
            encrypted: false,
            declared_size: None,
            local_method: None,
            declared_crc: None,
            declared_csize: None,
            declared_offset: None,
            local_name: None,
            extra_flags: 0,
            raw: false,
        }
    }

    pub fn deflated(name: &str, data: Vec<u8>) -> Entry {
        Entry {
            method: 8,
            ..Entry::stored(name, data)
        }
    }
}

/// Writes a ZIP archive from `entries`, after `prefix` (bytes before the first local header,
/// as in a self-extracting archive; offsets stay relative to the file start, as `cat` makes).
pub fn build_zip(prefix: &[u8], entries: &[Entry]) -> Vec<u8> {
    let mut out = prefix.to_vec();
    let mut central = Vec::new();
    for e in entries {
        let crc = e.declared_crc.unwrap_or_else(|| crc32fast::hash(&e.data));
        let payload = match e.method {
            8 if !e.raw => deflate(&e.data),
            _ => e.data.clone(),
        };
        let (csize, size) = (payload.len() as u64, e.data.len() as u64);
        let offset = (out.len() - prefix.len()) as u32;
        let flags: u16 =
            (if e.descriptor { 8 } else { 0 }) | u16::from(e.encrypted) | e.extra_flags;
        let extra = if e.zip64_local {
            let mut x = vec![1, 0, 16, 0];
            x.extend_from_slice(&size.to_le_bytes());
            x.extend_from_slice(&csize.to_le_bytes());
            x
        } else {
            Vec::new()
        };
        // Local header.
        put32(&mut out, 0x0403_4b50);
        put16(&mut out, if e.zip64_local { 45 } else { 20 });
        put16(&mut out, flags);
        put16(&mut out, e.local_method.unwrap_or(e.method));
        put16(&mut out, 0);
        put16(&mut out, 0x21); // 1980-01-01, as numpy writes
        let (lcrc, lcsize, lsize) = match (e.descriptor, e.zip64_local) {
            (true, _) => (0, 0, 0),
            (false, true) => (crc, u32::MAX, u32::MAX),
            (false, false) => (crc, csize as u32, size as u32),
        };
        put32(&mut out, lcrc);
        put32(&mut out, lcsize);
        put32(&mut out, lsize);
        let local_name = e.local_name.as_ref().unwrap_or(&e.name);
        put16(&mut out, local_name.len() as u16);
        put16(&mut out, extra.len() as u16);
        out.extend_from_slice(local_name);
        out.extend_from_slice(&extra);
        out.extend_from_slice(&payload);
        if e.descriptor {
            put32(&mut out, 0x0807_4b50);
            put32(&mut out, crc);
            put32(&mut out, csize as u32);
            put32(&mut out, size as u32);
        }
        // Central directory header.
        put32(&mut central, 0x0201_4b50);
        put16(&mut central, 0x0314);
        put16(&mut central, 20);
        put16(&mut central, flags);
        put16(&mut central, e.method);
        put16(&mut central, 0);
        put16(&mut central, 0x21);
        put32(&mut central, crc);
        put32(&mut central, e.declared_csize.unwrap_or(csize) as u32);
        put32(&mut central, e.declared_size.unwrap_or(size) as u32);
        put16(&mut central, e.name.len() as u16);
        put16(&mut central, 0);
        put16(&mut central, 0);
        put16(&mut central, 0);
        put16(&mut central, 0);
        put32(&mut central, 0o100644 << 16);
        put32(&mut central, e.declared_offset.unwrap_or(offset));
        central.extend_from_slice(&e.name);
    }
    let cd_offset = (out.len() - prefix.len()) as u64;
    out.extend_from_slice(&central);
    let count = entries.len() as u64;
    if count > 0xffff {
        // Zip64 end of central directory record and its locator.
        let record = (out.len() - prefix.len()) as u64;
        put32(&mut out, 0x0606_4b50);
        out.extend_from_slice(&44u64.to_le_bytes());
        put16(&mut out, 45);
        put16(&mut out, 45);
        put32(&mut out, 0);
        put32(&mut out, 0);
        for v in [count, count, central.len() as u64, cd_offset] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        put32(&mut out, 0x0706_4b50);
        put32(&mut out, 0);
        out.extend_from_slice(&record.to_le_bytes());
        put32(&mut out, 1);
    }
    put32(&mut out, 0x0605_4b50);
    put16(&mut out, 0);
    put16(&mut out, 0);
    put16(&mut out, count.min(0xffff) as u16);
    put16(&mut out, count.min(0xffff) as u16);
    put32(&mut out, central.len() as u32);
    put32(&mut out, cd_offset as u32);
    put16(&mut out, 0);
    out
}

/// Compressible bytes (runs and a slow ramp, like real arrays) for deflated members.
pub fn compressible(seed: u64, len: usize) -> Vec<u8> {
    (0..len as u64)
        .map(|i| ((i / 64 + seed * 31) % 251) as u8 ^ byte_at(seed, i / 4096))
        .collect()
}

/// Where member `i`'s payload starts in an archive `build_zip` made without a prefix.
pub fn payload_offset(entries: &[Entry], i: usize) -> usize {
    build_zip(b"", &entries[..i]).len() - eocd_and_central_len(&entries[..i])
        + 30
        + entries[i].name.len()
        + if entries[i].zip64_local { 20 } else { 0 }
}

fn eocd_and_central_len(entries: &[Entry]) -> usize {
    22 + entries.iter().map(|e| 46 + e.name.len()).sum::<usize>()
}

/// Writes the archive `build_zip` makes to `path`.
pub fn write_zip(path: &Path, prefix: &[u8], entries: &[Entry]) {
    std::fs::write(path, build_zip(prefix, entries)).unwrap();
}

fn deflate(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

fn put16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}
