//! Seek points into a deflate stream, so that decoding can start in the middle of a member.
//!
//! The method of zlib's `examples/zran.c`: while decoding, stop at deflate block boundaries
//! (`Z_BLOCK`); every [`SPAN`] bytes of output, remember where the next block starts in the
//! compressed stream (a byte offset plus the bits of the previous byte still unread) and the
//! 32 KiB of output before it, which is all the history a deflate block can refer back to.
//! Restarting there is `inflatePrime` with those bits, `inflateSetDictionary` with the history,
//! and inflating on from that byte.
//!
//! This needs zlib's C API (`inflatePrime`, `data_type`), which flate2 does not expose, so it
//! uses libz-rs-sys: the same zlib-rs engine flate2 runs on, through its zlib-compatible
//! interface.

use std::ffi::c_int;

use libz_rs_sys as z;

use crate::bytes::Archive;
use crate::error::{Error, Result};

/// History a deflate block can refer back to.
pub const HISTORY: usize = 32 << 10;

/// Decoded bytes between seek points, at least (points sit at block boundaries).
pub const SPAN: u64 = 1 << 20;

/// The span after a point whose last span took `compressed` bytes for `decoded`: at least
/// [`SPAN`], and long enough that the point's history, stored deflated, costs about 0.85% of it
/// (about 1% with the table: 0.96% of 4 GiB, 1.03% of 16 MiB). A history packs about as well as
/// the stream around it, so it costs `HISTORY * compressed / decoded`: 1 MiB spans on
/// compressible data (numpy's zeros, smooth floats), up to 3.75 MiB on data deflate barely
/// shrinks. Measured on noisy int16 (76% ratio, bench/seek.py): fixed 1 MiB spans made an index
/// of 3.2% of the member; 110x the history, 1.05% of a 1 GiB member (a history packs a little
/// worse alone than in its stream): 120x.
pub fn span_after(compressed: u64, decoded: u64) -> u64 {
    let history_cost = (HISTORY as u64).saturating_mul(compressed) / decoded.max(1);
    SPAN.max(history_cost.saturating_mul(120))
}

/// One place decoding can restart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Point {
    /// Offset in the member's decoded bytes.
    pub out: u64,
    /// Offset in the member's compressed bytes of the first byte to feed the inflater.
    pub input: u64,
    /// Bits (0-7) at the end of the byte before `input` that belong to the next block.
    pub bits: u8,
    /// The decoded bytes before `out` (all of them if fewer than [`HISTORY`]).
    pub history: Vec<u8>,
}

impl Point {
    /// The start of the stream: nothing before it.
    pub fn start() -> Point {
        Point {
            out: 0,
            input: 0,
            bits: 0,
            history: Vec::new(),
        }
    }
}

/// Compressed bytes read from the archive at a time by [`inflate_at`].
const INPUT: usize = 64 << 10;

/// Inflates `len` bytes of member `name`'s raw deflate stream, which lies at
/// `[data_start, data_start + compressed_size)` of `archive`, restarting at `point` (a seek
/// point, or [`Point::start`]). The archive is read with `pread`, never through its mapping.
pub fn inflate_at(
    archive: &Archive,
    (data_start, compressed_size): (u64, u64),
    point: &Point,
    len: usize,
    name: &str,
) -> Result<Vec<u8>> {
    // A failed read is the read's own error, zlib's refusal this member's corrupt stream.
    let failed = |e: Error| e.for_member(name);
    let mut previous = [0u8; 1];
    if point.bits > 0 && point.input > 0 {
        archive
            .read_exact_at(&mut previous, data_start + point.input - 1)
            .map_err(failed)?;
    }
    let mut inflater = Inflater::at(point, previous[0]).map_err(failed)?;
    let mut out = vec![0u8; len];
    let mut input = vec![0u8; INPUT];
    let (mut made, mut consumed) = (0usize, point.input);
    let ends_early = || Error::Corrupt {
        what: name.to_string(),
        cause: "the deflate stream ends early".into(),
    };
    while made < len {
        let n = compressed_size.saturating_sub(consumed).min(INPUT as u64) as usize;
        if n == 0 {
            return Err(ends_early());
        }
        archive
            .read_exact_at(&mut input[..n], data_start + consumed)
            .map_err(failed)?;
        let mut pos = 0;
        while pos < n && made < len {
            let step = inflater
                .inflate(&input[pos..n], &mut out[made..], false)
                .map_err(failed)?;
            pos += step.used;
            made += step.made;
            if step.end || (step.used == 0 && step.made == 0) {
                break;
            }
        }
        consumed += pos as u64;
        if made < len && pos < n {
            return Err(ends_early());
        }
    }
    Ok(out)
}

/// What one call to [`Inflater::inflate`] did.
#[derive(Debug)]
pub struct Step {
    /// Input bytes consumed.
    pub used: usize,
    /// Output bytes produced.
    pub made: usize,
    /// The stream's end marker was reached.
    pub end: bool,
    /// The call stopped at a block boundary that is not the end: a seek point may go here,
    /// with `bits` unread bits in the last consumed byte.
    pub boundary: Option<u8>,
}

/// zlib refused a stream: `cannot read a deflate stream: <cause>`, until its holder makes it
/// its member's ([`Error::for_member`]).
fn refused(cause: String) -> Error {
    Error::Corrupt {
        what: "a deflate stream".into(),
        cause,
    }
}

/// A raw-deflate inflater that can stop at block boundaries and start at a [`Point`].
pub struct Inflater {
    // zlib's API requires the stream not to move while initialised: boxed.
    strm: Box<z::z_stream>,
}

// SAFETY: the stream and its state are owned by this value and used by one thread at a time.
unsafe impl Send for Inflater {}

impl Inflater {
    /// An inflater at the start of a raw deflate stream.
    pub fn new() -> Result<Inflater> {
        let mut strm = Box::new(z::z_stream::default());
        // SAFETY: `strm` is a zeroed z_stream that stays at this address; the version and size
        // are the library's own.
        let rc = unsafe {
            z::inflateInit2_(
                &mut *strm,
                -15,
                z::zlibVersion(),
                std::mem::size_of::<z::z_stream>() as c_int,
            )
        };
        if rc != z::Z_OK {
            return Err(refused(format!("cannot start inflate (zlib error {rc})")));
        }
        Ok(Inflater { strm })
    }

    /// An inflater positioned at `point`; `previous` is the compressed byte before
    /// `point.input` (needed when `point.bits` is not 0).
    pub fn at(point: &Point, previous: u8) -> Result<Inflater> {
        let mut inflater = Inflater::new()?;
        if point.bits > 0 {
            let value = c_int::from(previous >> (8 - point.bits));
            // SAFETY: an initialised stream; bits is 1..=7.
            let rc =
                unsafe { z::inflatePrime(&mut *inflater.strm, c_int::from(point.bits), value) };
            if rc != z::Z_OK {
                return Err(refused(format!("cannot restart inflate (zlib error {rc})")));
            }
        }
        if !point.history.is_empty() {
            let len = u32::try_from(point.history.len()).unwrap_or(0);
            // SAFETY: an initialised stream; the pointer and length describe `point.history`.
            let rc = unsafe {
                z::inflateSetDictionary(&mut *inflater.strm, point.history.as_ptr(), len)
            };
            if rc != z::Z_OK {
                return Err(refused(format!("cannot restart inflate (zlib error {rc})")));
            }
        }
        Ok(inflater)
    }

    /// Inflates from `input` into `output`; with `blocks`, returns at every block boundary.
    pub fn inflate(&mut self, input: &[u8], output: &mut [u8], blocks: bool) -> Result<Step> {
        let avail_in = u32::try_from(input.len()).unwrap_or(u32::MAX);
        let avail_out = u32::try_from(output.len()).unwrap_or(u32::MAX);
        self.strm.next_in = input.as_ptr();
        self.strm.avail_in = avail_in;
        self.strm.next_out = output.as_mut_ptr();
        self.strm.avail_out = avail_out;
        let flush = if blocks { z::Z_BLOCK } else { z::Z_NO_FLUSH };
        // SAFETY: an initialised stream whose in/out pointers describe the two live slices.
        let rc = unsafe { z::inflate(&mut *self.strm, flush) };
        let used = (avail_in - self.strm.avail_in) as usize;
        let made = (avail_out - self.strm.avail_out) as usize;
        // Leave no pointers into the caller's buffers behind.
        self.strm.next_in = std::ptr::null();
        self.strm.next_out = std::ptr::null_mut();
        let end = match rc {
            z::Z_OK | z::Z_BUF_ERROR => false,
            z::Z_STREAM_END => true,
            z::Z_NEED_DICT => return Err(refused("the stream needs a preset dictionary".into())),
            rc => return Err(refused(format!("corrupt deflate stream (zlib error {rc})"))),
        };
        // data_type (zlib.h): bit 7 = stopped at a block boundary, bit 6 = the block just
        // ended was the last one, bits 0-2 = unused bits in the last byte consumed.
        let dt = self.strm.data_type;
        let boundary = (blocks && !end && dt & 128 != 0 && dt & 64 == 0).then_some((dt & 7) as u8);
        Ok(Step {
            used,
            made,
            end,
            boundary,
        })
    }
}

impl Drop for Inflater {
    fn drop(&mut self) {
        // SAFETY: the stream was initialised by inflateInit2_ and is ended once.
        unsafe { z::inflateEnd(&mut *self.strm) };
    }
}

/// The last up to [`HISTORY`] decoded bytes, across chunk boundaries: the history for a point.
#[derive(Default)]
pub struct History {
    tail: Vec<u8>,
}

impl History {
    /// The history ending `current` (this chunk's bytes so far) given the chunks before it.
    pub fn ending(&self, current: &[u8]) -> Vec<u8> {
        if current.len() >= HISTORY {
            return current[current.len() - HISTORY..].to_vec();
        }
        let need = HISTORY - current.len();
        let from_tail = &self.tail[self.tail.len().saturating_sub(need)..];
        let mut history = Vec::with_capacity(from_tail.len() + current.len());
        history.extend_from_slice(from_tail);
        history.extend_from_slice(current);
        history
    }

    /// A chunk is complete: keep its last [`HISTORY`] bytes (with what came before if short).
    pub fn push(&mut self, chunk: &[u8]) {
        self.tail = self.ending(chunk);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// Compressible but not trivial: a slow ramp with noise, so blocks back-reference a lot.
    fn data(len: usize) -> Vec<u8> {
        let mut x = 12345u64;
        (0..len)
            .map(|i| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((i / 3000) as u8).wrapping_add((x >> 61) as u8)
            })
            .collect()
    }

    fn deflate(raw: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::new(6));
        e.write_all(raw).unwrap();
        e.finish().unwrap()
    }

    /// Decodes all of `packed` in `chunk`-sized output buffers and small input pieces,
    /// recording a point every `span` bytes.
    fn decode_with_points(packed: &[u8], chunk: usize, span: u64) -> (Vec<u8>, Vec<Point>) {
        let mut inflater = Inflater::new().unwrap();
        let (mut out, mut points, mut history) = (Vec::new(), Vec::new(), History::default());
        let mut buf = vec![0u8; chunk];
        let (mut pos, mut len, mut last_point) = (0usize, 0usize, 0u64);
        loop {
            let input = &packed[pos..(pos + 7000).min(packed.len())];
            let step = inflater.inflate(input, &mut buf[len..], true).unwrap();
            pos += step.used;
            len += step.made;
            let total = (out.len() + len) as u64;
            if let Some(bits) = step.boundary
                && total - last_point >= span
            {
                points.push(Point {
                    out: total,
                    input: pos as u64,
                    bits,
                    history: history.ending(&buf[..len]),
                });
                last_point = total;
            }
            if len == chunk || step.end {
                history.push(&buf[..len]);
                out.extend_from_slice(&buf[..len]);
                len = 0;
            }
            if step.end {
                return (out, points);
            }
        }
    }

    #[test]
    fn decoding_from_every_point_gives_the_same_bytes() {
        let raw = data(6 << 20);
        let packed = deflate(&raw);
        let (out, points) = decode_with_points(&packed, 100_000, 256 << 10);
        assert!(out == raw);
        assert!(points.len() >= 15, "{} points", points.len());
        assert!(points.iter().any(|p| p.bits != 0), "no point mid-byte");
        for p in &points {
            assert_eq!(p.history.len(), HISTORY);
            assert!(p.history[..] == raw[p.out as usize - HISTORY..p.out as usize]);
            let previous = packed[p.input as usize - 1];
            let mut inflater = Inflater::at(p, previous).unwrap();
            let mut buf = vec![0u8; 300_000];
            let (mut pos, mut made) = (p.input as usize, 0usize);
            while made < buf.len() {
                let step = inflater
                    .inflate(&packed[pos..], &mut buf[made..], false)
                    .unwrap();
                pos += step.used;
                made += step.made;
                if step.end {
                    break;
                }
            }
            let from = p.out as usize;
            assert!(buf[..made] == raw[from..from + made], "point at {}", p.out);
        }
    }

    #[test]
    fn a_wrong_window_or_offset_never_passes_silently_as_the_right_bytes() {
        let raw = data(2 << 20);
        let packed = deflate(&raw);
        let (_, points) = decode_with_points(&packed, 1 << 20, 256 << 10);
        let mut p = points[2].clone();
        p.input += 1;
        let mut buf = vec![0u8; 100_000];
        let mut inflater = Inflater::at(&p, packed[p.input as usize - 1]).unwrap();
        let same = inflater
            .inflate(&packed[p.input as usize..], &mut buf, false)
            .map(|s| buf[..s.made] == raw[p.out as usize..p.out as usize + s.made]);
        assert!(!matches!(same, Ok(true)));
    }

    #[test]
    fn spans_grow_with_what_histories_cost() {
        assert_eq!(span_after(100_000, 1 << 20), SPAN);
        assert_eq!(span_after(0, 0), SPAN);
        let noisy = span_after(800_000, 1 << 20);
        assert!(noisy > 2 * SPAN && noisy < 4 * SPAN, "{noisy}");
        // A history costs at most its own size: 3.2 MiB spans at worst.
        assert!(span_after(2 << 20, 1 << 20) <= 120 * (HISTORY as u64) * 2);
    }

    #[test]
    fn history_spans_chunks() {
        let mut h = History::default();
        h.push(&[1; 10]);
        h.push(&[2; HISTORY - 4]);
        let w = h.ending(&[3; 2]);
        assert_eq!(w.len(), HISTORY);
        assert_eq!(&w[..2], &[1, 1]);
        assert_eq!(w[HISTORY - 1], 3);
        assert_eq!(History::default().ending(&[5; 7]), vec![5; 7]);
    }
}
