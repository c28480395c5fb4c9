//! The seek index of one member on disk: written while its first full decode runs, kept once
//! that decode verified, read back by later mounts of the same archive, and never trusted
//! before it is checked.
//!
//! Layout (little endian), in `<key>.seek` beside the cache files:
//!
//! ```text
//! packed histories, one per point (raw deflate), in point order
//! table: count x { out u64  input u64  bits u8  span_crc u32  history_at u64
//!                  packed_len u32  history_len u32 }
//! footer: "NPZSEEK2"  size u64  compressed_size u64  crc32 u32  count u32  table_at u64
//!         crc32 of every byte before this field, u32
//! ```
//!
//! The histories go first so that the writer can append each as its point is recorded: only
//! the table (41 bytes a point, 41 KiB per GiB at 1 MiB spans) stays in memory, never the
//! histories (32 KiB a point). Point 0 is the start of the stream (empty history). `span_crc` is
//! the CRC-32 of the decoded bytes from this point to the next (or to the end): a span decoded
//! again from its point is checked against it before anyone reads it.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;

use super::spans::Layout;
use crate::error::{Error, Result};
use crate::zipfile::inflate::{HISTORY, Point};

/// What the index's errors name: `cannot read the seek index: <cause>`.
const WHAT: &str = "the seek index";

/// The index is damaged, stale or not one: `cannot read the seek index: <cause>`.
fn damaged(cause: impl Into<String>) -> Error {
    Error::Corrupt {
        what: WHAT.into(),
        cause: cause.into(),
    }
}

const MAGIC: &[u8; 8] = b"NPZSEEK2";
const FOOTER: usize = 8 + 8 + 8 + 4 + 4 + 8 + 4;
const ROW: usize = 8 + 8 + 1 + 4 + 8 + 4 + 4;

/// What the index must agree with: the member as the central directory describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expected {
    /// Uncompressed size.
    pub size: u64,
    /// Compressed size.
    pub compressed_size: u64,
    /// CRC-32 of the whole member.
    pub crc32: u32,
}

/// One point as the table records it; its history stays on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Row {
    /// Offset in the decoded member.
    pub out: u64,
    /// Offset in the compressed member of the first byte to feed the inflater.
    pub input: u64,
    /// Bits of the byte before `input` that belong to the next block.
    pub bits: u8,
    /// CRC-32 of the span from this point to the next one (or the end).
    pub span_crc: u32,
    history_at: u64,
    packed_len: u32,
    history_len: u32,
}

/// A loaded, checked index: the table in memory, histories read from the file when needed.
pub struct SeekTable {
    rows: Vec<Row>,
    file: File,
    layout: Layout,
}

impl SeekTable {
    /// Reads and checks the index in `file` against `expected`: any damage, any disagreement
    /// with the member, any point that cannot be right is an error.
    pub fn load(mut file: File, expected: Expected) -> Result<SeekTable> {
        let len = file
            .metadata()
            .map_err(|e| Error::io("stat", WHAT, e))?
            .len();
        // Windows pack to at most about their own size: 33 KiB per point, a point per SPAN.
        if len > expected.size / 16 + (1 << 20) {
            return Err(damaged(format!("{len} bytes is too large")));
        }
        let mut bytes = Vec::with_capacity(len as usize);
        file.read_to_end(&mut bytes)
            .map_err(|e| Error::io("read", WHAT, e))?;
        let rows = parse(&bytes, expected)?;
        let layout = Layout::new(rows.iter().map(|r| r.out).collect(), expected.size);
        Ok(SeekTable { rows, file, layout })
    }

    /// The number of points (and spans).
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Always false: every index has point 0.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Point `i`'s row.
    pub fn row(&self, i: usize) -> Option<&Row> {
        self.rows.get(i)
    }

    /// Where its spans lie.
    pub fn layout(&self) -> Layout {
        self.layout.clone()
    }

    /// The span holding `offset`.
    pub fn span_of(&self, offset: u64) -> usize {
        self.layout.span_of(offset)
    }

    /// Where span `i` starts and ends.
    pub fn span(&self, i: usize) -> (u64, u64) {
        self.layout.span(i)
    }

    /// Point `i` with its history, read from the file.
    pub fn point(&self, i: usize) -> Result<Point> {
        let row = self.rows.get(i).ok_or_else(|| damaged("no such point"))?;
        let mut packed = vec![0u8; row.packed_len as usize];
        self.file
            .read_exact_at(&mut packed, row.history_at)
            .map_err(|e| Error::io("read", WHAT, e))?;
        let history = unpack(&packed, row.history_len as usize)
            .ok_or_else(|| damaged(format!("the history of point {i} is damaged")))?;
        Ok(Point {
            out: row.out,
            input: row.input,
            bits: row.bits,
            history,
        })
    }
}

/// Builds an index file while the first decode runs: histories appended as points come, the
/// table and footer at the end.
pub struct Writer {
    file: File,
    at: u64,
    crc: crc32fast::Hasher,
    rows: Vec<Row>,
}

impl Writer {
    /// Starts writing into `file` (new and empty).
    pub fn new(file: File) -> Writer {
        Writer {
            file,
            at: 0,
            crc: crc32fast::Hasher::new(),
            rows: Vec::new(),
        }
    }

    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.file.write_all(bytes)?;
        self.crc.update(bytes);
        self.at += bytes.len() as u64;
        Ok(())
    }

    /// Records `point` (its history goes to the file now).
    pub fn add(&mut self, point: &Point) -> io::Result<()> {
        let packed = pack(&point.history);
        let row = Row {
            out: point.out,
            input: point.input,
            bits: point.bits,
            span_crc: 0,
            history_at: self.at,
            packed_len: packed.len() as u32,
            history_len: point.history.len() as u32,
        };
        self.append(&packed)?;
        self.rows.push(row);
        Ok(())
    }

    /// Where the next span boundary after the closed `closed` spans lies, if known.
    pub fn boundary(&self, closed: usize) -> Option<u64> {
        self.rows.get(closed + 1).map(|r| r.out)
    }

    /// Sets the CRC-32 of span `i`.
    pub fn set_span_crc(&mut self, i: usize, crc: u32) {
        if let Some(row) = self.rows.get_mut(i) {
            row.span_crc = crc;
        }
    }

    /// The number of points so far.
    pub fn points(&self) -> usize {
        self.rows.len()
    }

    /// Writes the table and footer and syncs; the caller renames the file into place.
    pub fn finish(mut self, expected: Expected) -> io::Result<File> {
        let table_at = self.at;
        let mut tail = Vec::with_capacity(self.rows.len() * ROW + FOOTER);
        for r in &self.rows {
            tail.extend_from_slice(&r.out.to_le_bytes());
            tail.extend_from_slice(&r.input.to_le_bytes());
            tail.push(r.bits);
            tail.extend_from_slice(&r.span_crc.to_le_bytes());
            tail.extend_from_slice(&r.history_at.to_le_bytes());
            tail.extend_from_slice(&r.packed_len.to_le_bytes());
            tail.extend_from_slice(&r.history_len.to_le_bytes());
        }
        tail.extend_from_slice(MAGIC);
        tail.extend_from_slice(&expected.size.to_le_bytes());
        tail.extend_from_slice(&expected.compressed_size.to_le_bytes());
        tail.extend_from_slice(&expected.crc32.to_le_bytes());
        tail.extend_from_slice(&(self.rows.len() as u32).to_le_bytes());
        tail.extend_from_slice(&table_at.to_le_bytes());
        self.append(&tail)?;
        let crc = self.crc.clone().finalize();
        self.file.write_all(&crc.to_le_bytes())?;
        self.file.sync_data()?;
        Ok(self.file)
    }
}

fn parse(bytes: &[u8], expected: Expected) -> Result<Vec<Row>> {
    let (body, trailer) = bytes
        .split_last_chunk::<4>()
        .ok_or_else(|| damaged("shorter than its checksum"))?;
    if crc32fast::hash(body) != u32::from_le_bytes(*trailer) {
        return Err(damaged("checksum mismatch"));
    }
    let footer_at = body
        .len()
        .checked_sub(FOOTER - 4)
        .ok_or_else(|| damaged("shorter than its footer"))?;
    let mut f = Cursor {
        bytes: &body[footer_at..],
    };
    if f.take(8)? != MAGIC {
        return Err(damaged("not a seek index of this version"));
    }
    let (size, compressed_size, crc32) = (f.u64()?, f.u64()?, f.u32()?);
    if (size, compressed_size, crc32) != (expected.size, expected.compressed_size, expected.crc32) {
        return Err(damaged("written for another member"));
    }
    let count = f.u32()? as usize;
    let table_at = usize::try_from(f.u64()?).map_err(|_| damaged("bad table offset"))?;
    if count == 0 || table_at.checked_add(count * ROW) != Some(footer_at) {
        return Err(damaged("the table does not fit"));
    }
    let mut t = Cursor {
        bytes: &body[table_at..footer_at],
    };
    let mut rows: Vec<Row> = Vec::with_capacity(count);
    for i in 0..count {
        let row = Row {
            out: t.u64()?,
            input: t.u64()?,
            bits: t.u8()?,
            span_crc: t.u32()?,
            history_at: t.u64()?,
            packed_len: t.u32()?,
            history_len: t.u32()?,
        };
        let expected_history = usize::try_from(row.out).map_or(HISTORY, |o| o.min(HISTORY));
        let in_order = match rows.last() {
            None => row.out == 0 && row.input == 0 && row.bits == 0,
            Some(p) => {
                row.out > p.out
                    && row.input > p.input
                    && row.out < size
                    && row.input <= compressed_size
            }
        };
        let history_end = row.history_at.checked_add(u64::from(row.packed_len));
        if !in_order
            || row.bits > 7
            || row.history_len as usize != expected_history
            || history_end.is_none_or(|e| e > table_at as u64)
        {
            return Err(damaged(format!("point {i} cannot be right")));
        }
        rows.push(row);
    }
    Ok(rows)
}

fn pack(history: &[u8]) -> Vec<u8> {
    // The level numpy writes with: a history then packs about as well as the stream around it,
    // which is what `inflate::span_after` counts on.
    let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    // Writing to a Vec cannot fail.
    let _ = e.write_all(history);
    e.finish().unwrap_or_default()
}

fn unpack(packed: &[u8], len: usize) -> Option<Vec<u8>> {
    let mut history = Vec::with_capacity(len);
    let mut d = flate2::read::DeflateDecoder::new(packed).take(len as u64 + 1);
    d.read_to_end(&mut history).ok()?;
    (history.len() == len).then_some(history)
}

struct Cursor<'a> {
    bytes: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if n > self.bytes.len() {
            return Err(damaged("truncated"));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32> {
        let mut a = [0u8; 4];
        a.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(a))
    }

    fn u64(&mut self) -> Result<u64> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MEMBER: Expected = Expected {
        size: 3 << 20,
        compressed_size: 900_000,
        crc32: 0xdead_beef,
    };

    fn points() -> Vec<Point> {
        let history: Vec<u8> = (0..HISTORY).map(|i| (i % 251) as u8).collect();
        vec![
            Point {
                out: 0,
                input: 0,
                bits: 0,
                history: vec![],
            },
            Point {
                out: 1 << 20,
                input: 300_000,
                bits: 3,
                history: history.clone(),
            },
            Point {
                out: 2 << 20,
                input: 610_000,
                bits: 0,
                history,
            },
        ]
    }

    fn write(points: &[Point]) -> Vec<u8> {
        let file = tempfile::tempfile().unwrap();
        let mut w = Writer::new(file);
        for (i, p) in points.iter().enumerate() {
            w.add(p).unwrap();
            w.set_span_crc(i, i as u32 + 100);
        }
        let mut file = w.finish(MEMBER).unwrap();
        let mut bytes = Vec::new();
        use std::io::Seek;
        file.seek(io::SeekFrom::Start(0)).unwrap();
        file.read_to_end(&mut bytes).unwrap();
        bytes
    }

    fn load(bytes: &[u8], expected: Expected) -> Result<SeekTable> {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(bytes).unwrap();
        use std::io::Seek;
        file.seek(io::SeekFrom::Start(0)).unwrap();
        SeekTable::load(file, expected)
    }

    #[test]
    fn round_trip() {
        let bytes = write(&points());
        assert!(bytes.len() < 2 * HISTORY, "histories are stored packed");
        let t = load(&bytes, MEMBER).unwrap();
        assert_eq!(t.len(), 3);
        for (i, p) in points().iter().enumerate() {
            assert_eq!(&t.point(i).unwrap(), p);
            assert_eq!(t.row(i).unwrap().span_crc, i as u32 + 100);
        }
        assert_eq!(t.span_of(0), 0);
        assert_eq!(t.span_of((1 << 20) - 1), 0);
        assert_eq!(t.span_of(1 << 20), 1);
        assert_eq!(t.span_of(10 << 20), 2);
        assert_eq!(t.span(2), (2 << 20, 3 << 20));
    }

    #[test]
    fn any_damage_or_other_member_is_refused() {
        let bytes = write(&points());
        for at in (0..bytes.len()).step_by(37) {
            let mut bad = bytes.clone();
            bad[at] ^= 0x10;
            assert!(load(&bad, MEMBER).is_err(), "flip at {at}");
        }
        for len in [0, 3, 4, 40, bytes.len() - 1] {
            assert!(load(&bytes[..len], MEMBER).is_err(), "cut at {len}");
        }
        let e = load(&bytes, Expected { crc32: 1, ..MEMBER }).err().unwrap();
        assert_eq!(
            e.to_string(),
            "cannot read the seek index: written for another member"
        );
        // A checksum made to match does not make impossible points pass.
        let mut bad = points();
        bad[2].out = bad[1].out;
        assert!(load(&write(&bad), MEMBER).is_err());
    }
}
