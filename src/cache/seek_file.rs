//! The seek index of one member on disk: written once its first full decode verified, read
//! back by later mounts of the same archive, and never trusted before it is checked.
//!
//! Layout (little endian), in `<key>.seek` beside the cache files:
//!
//! ```text
//! "NPZSEEK1"  size u64  compressed_size u64  crc32 u32  count u32
//! count x { out u64  input u64  bits u8  span_crc u32  window_len u32  packed_len u32
//!           packed window (raw deflate) }
//! crc32 of everything before it, u32
//! ```
//!
//! Point 0 is the start of the stream (empty window). `span_crc` is the CRC-32 of the decoded
//! bytes from this point to the next (or to the end): a span decoded again from its point is
//! checked against it before anyone reads it. Windows are stored deflated: they are the
//! bulk of the file (32 KiB per point before compression).

use std::io::{Read, Write};

use super::seek::{Point, WINDOW};

const MAGIC: &[u8; 8] = b"NPZSEEK1";
/// Header: magic, size, compressed_size, crc32, count.
const HEADER: usize = 8 + 8 + 8 + 4 + 4;
/// Per point before its packed window.
const POINT: usize = 8 + 8 + 1 + 4 + 4 + 4;

/// Where decoding of a member can restart, and what each span must decode to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeekIndex {
    /// Restart points, the first at offset 0, in increasing order.
    pub points: Vec<Point>,
    /// CRC-32 of each span `[points[i].out, points[i + 1].out or size)`.
    pub span_crcs: Vec<u32>,
}

/// What the index must agree with: the member as the central directory describes it.
#[derive(Clone, Copy, Debug)]
pub struct Member {
    /// Uncompressed size.
    pub size: u64,
    /// Compressed size.
    pub compressed_size: u64,
    /// CRC-32 of the whole member.
    pub crc32: u32,
}

impl SeekIndex {
    /// The index of the span holding `offset`.
    pub fn span_of(&self, offset: u64) -> usize {
        self.points
            .partition_point(|p| p.out <= offset)
            .saturating_sub(1)
    }

    /// Where span `i` ends.
    pub fn span_end(&self, i: usize, size: u64) -> u64 {
        self.points.get(i + 1).map_or(size, |p| p.out)
    }
}

/// Serialises `index` for `member`.
pub fn encode(index: &SeekIndex, member: Member) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + index.points.len() * (POINT + WINDOW / 2));
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&member.size.to_le_bytes());
    out.extend_from_slice(&member.compressed_size.to_le_bytes());
    out.extend_from_slice(&member.crc32.to_le_bytes());
    out.extend_from_slice(&(index.points.len() as u32).to_le_bytes());
    for (p, crc) in index.points.iter().zip(&index.span_crcs) {
        let packed = pack(&p.window);
        out.extend_from_slice(&p.out.to_le_bytes());
        out.extend_from_slice(&p.input.to_le_bytes());
        out.push(p.bits);
        out.extend_from_slice(&crc.to_le_bytes());
        out.extend_from_slice(&(p.window.len() as u32).to_le_bytes());
        out.extend_from_slice(&(packed.len() as u32).to_le_bytes());
        out.extend_from_slice(&packed);
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Parses and checks an index file for `member`: any damage, any disagreement with the
/// member, any point that cannot be right is an error (and the index is rebuilt).
pub fn decode(bytes: &[u8], member: Member) -> Result<SeekIndex, String> {
    let (body, trailer) = bytes
        .split_last_chunk::<4>()
        .ok_or("shorter than its checksum")?;
    if crc32fast::hash(body) != u32::from_le_bytes(*trailer) {
        return Err("checksum mismatch".into());
    }
    let mut r = Reader { bytes: body };
    if r.take(8)? != MAGIC {
        return Err("not a seek index of this version".into());
    }
    let (size, compressed_size, crc32) = (r.u64()?, r.u64()?, r.u32()?);
    if (size, compressed_size, crc32) != (member.size, member.compressed_size, member.crc32) {
        return Err("written for another member".into());
    }
    let count = r.u32()? as usize;
    if count == 0 || count > body.len() / POINT {
        return Err(format!("impossible point count {count}"));
    }
    let mut index = SeekIndex {
        points: Vec::with_capacity(count),
        span_crcs: Vec::with_capacity(count),
    };
    for i in 0..count {
        let (out, input, bits, crc) = (r.u64()?, r.u64()?, r.u8()?, r.u32()?);
        let (window_len, packed_len) = (r.u32()? as usize, r.u32()? as usize);
        let expected_window = usize::try_from(out).map_or(WINDOW, |o| o.min(WINDOW));
        let previous = index.points.last();
        let valid = match previous {
            None => out == 0 && input == 0 && bits == 0,
            Some(p) => out > p.out && input > p.input && out < size && input < compressed_size,
        };
        if !valid || bits > 7 || window_len != expected_window {
            return Err(format!("point {i} cannot be right"));
        }
        let window = unpack(r.take(packed_len)?, window_len)
            .ok_or_else(|| format!("the window of point {i} is damaged"))?;
        index.points.push(Point {
            out,
            input,
            bits,
            window,
        });
        index.span_crcs.push(crc);
    }
    if !r.bytes.is_empty() {
        return Err("trailing bytes".into());
    }
    Ok(index)
}

fn pack(window: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
    // Writing to a Vec cannot fail.
    let _ = e.write_all(window);
    e.finish().unwrap_or_default()
}

fn unpack(packed: &[u8], len: usize) -> Option<Vec<u8>> {
    let mut window = Vec::with_capacity(len);
    let mut d = flate2::read::DeflateDecoder::new(packed).take(len as u64 + 1);
    d.read_to_end(&mut window).ok()?;
    (window.len() == len).then_some(window)
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if n > self.bytes.len() {
            return Err("truncated".into());
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, String> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (SeekIndex, Member) {
        let window: Vec<u8> = (0..WINDOW).map(|i| (i % 251) as u8).collect();
        let index = SeekIndex {
            points: vec![
                Point {
                    out: 0,
                    input: 0,
                    bits: 0,
                    window: vec![],
                },
                Point {
                    out: 1 << 20,
                    input: 300_000,
                    bits: 3,
                    window: window.clone(),
                },
                Point {
                    out: 2 << 20,
                    input: 610_000,
                    bits: 0,
                    window,
                },
            ],
            span_crcs: vec![1, 2, 3],
        };
        let member = Member {
            size: 3 << 20,
            compressed_size: 900_000,
            crc32: 0xdead_beef,
        };
        (index, member)
    }

    #[test]
    fn round_trip() {
        let (index, member) = sample();
        let bytes = encode(&index, member);
        assert!(bytes.len() < 3 * WINDOW / 2, "windows are stored packed");
        assert_eq!(decode(&bytes, member).unwrap(), index);
        assert_eq!(index.span_of(0), 0);
        assert_eq!(index.span_of((1 << 20) - 1), 0);
        assert_eq!(index.span_of(1 << 20), 1);
        assert_eq!(index.span_of(10 << 20), 2);
        assert_eq!(index.span_end(2, member.size), 3 << 20);
    }

    #[test]
    fn any_damage_or_other_member_is_refused() {
        let (index, member) = sample();
        let bytes = encode(&index, member);
        for at in (0..bytes.len()).step_by(97) {
            let mut bad = bytes.clone();
            bad[at] ^= 0x10;
            assert!(decode(&bad, member).is_err(), "flip at {at}");
        }
        for len in [0, 3, 4, 40, bytes.len() - 1] {
            assert!(decode(&bytes[..len], member).is_err(), "cut at {len}");
        }
        let other = Member { crc32: 1, ..member };
        assert!(decode(&bytes, other).is_err());
        // A checksum made to match does not make impossible points pass.
        let mut bad_index = index.clone();
        bad_index.points[2].out = bad_index.points[1].out;
        assert!(decode(&encode(&bad_index, member), member).is_err());
    }
}
