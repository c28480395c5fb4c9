//! In-process inflate of one member: the speed limit npzfs's decoder is measured against.
//! Same reader (pread of the archive in 256 KiB blocks) and the same inflate (flate2 with
//! zlib-rs, driven directly), output discarded.
//!
//!     cargo run --release --example inflate -- ARCHIVE MEMBER [RUNS] [blocks]
//!
//! `blocks` runs npzfs's seek-point inflater instead (zlib-rs through its zlib API, stopping
//! at every deflate block boundary as recording seek points needs) and prints, after the
//! speed, how many block boundaries it saw.

use std::time::Instant;

use flate2::{Decompress, FlushDecompress, Status};
use npzfs::bytes::Archive;
use npzfs::zipfile::members::read_members;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (path, name) = match (args.get(1), args.get(2)) {
        (Some(p), Some(n)) => (p, n),
        _ => return Err("usage: inflate ARCHIVE MEMBER [RUNS]".into()),
    };
    let runs: usize = args.get(3).map(|r| r.parse()).transpose()?.unwrap_or(3);
    let archive = Archive::open(std::path::Path::new(path))?;
    let members = read_members(&archive)?;
    let member = members
        .iter()
        .find(|m| &m.name == name)
        .ok_or("no such member")?;
    let start = member.data_start(&archive)?;
    let blocks = args.get(4).is_some_and(|a| a == "blocks");
    let mut times = Vec::new();
    let mut boundaries = 0u64;
    for _ in 0..runs {
        if blocks {
            let t = Instant::now();
            boundaries = inflate_blocks(&archive, start, member.compressed_size, member.size)?;
            times.push(t.elapsed().as_secs_f64());
            continue;
        }
        let t = Instant::now();
        let mut inflater = Decompress::new(false);
        let (mut input, mut out) = (vec![0u8; 256 << 10], vec![0u8; 1 << 20]);
        let mut consumed = 0u64;
        let (mut pos, mut len) = (0, 0);
        loop {
            if pos == len && consumed < member.compressed_size {
                let n = (member.compressed_size - consumed).min(input.len() as u64) as usize;
                archive.read_exact_at(&mut input[..n], start + consumed)?;
                (pos, len, consumed) = (0, n, consumed + n as u64);
            }
            let before = inflater.total_in();
            let status = inflater.decompress(&input[pos..len], &mut out, FlushDecompress::None)?;
            pos += (inflater.total_in() - before) as usize;
            if status == Status::StreamEnd {
                break;
            }
        }
        assert_eq!(inflater.total_out(), member.size, "inflated size");
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    if blocks {
        println!("{:.1} {boundaries}", member.size as f64 / median / 1e6);
    } else {
        println!("{:.1}", member.size as f64 / median / 1e6);
    }
    Ok(())
}

/// The same loop through `npzfs::zipfile::inflate::Inflater` with block stops; returns the number
/// of block boundaries.
fn inflate_blocks(
    archive: &Archive,
    start: u64,
    compressed_size: u64,
    size: u64,
) -> Result<u64, Box<dyn std::error::Error>> {
    let mut inflater = npzfs::zipfile::inflate::Inflater::new()?;
    let (mut input, mut out) = (vec![0u8; 256 << 10], vec![0u8; 1 << 20]);
    let (mut consumed, mut total, mut boundaries) = (0u64, 0u64, 0u64);
    let (mut pos, mut len, mut out_len) = (0, 0, 0);
    loop {
        if pos == len && consumed < compressed_size {
            let n = (compressed_size - consumed).min(input.len() as u64) as usize;
            archive.read_exact_at(&mut input[..n], start + consumed)?;
            (pos, len, consumed) = (0, n, consumed + n as u64);
        }
        let step = inflater.inflate(&input[pos..len], &mut out[out_len..], true)?;
        pos += step.used;
        out_len += step.made;
        total += step.made as u64;
        boundaries += u64::from(step.boundary.is_some());
        if out_len == out.len() {
            out_len = 0;
        }
        if step.end {
            break;
        }
    }
    assert_eq!(total, size, "inflated size");
    Ok(boundaries)
}
