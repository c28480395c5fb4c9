//! When to fetch ahead of a reader, and how far: the readahead policy of a block set, apart
//! from its storage and its books.

use std::ops::Range;

/// Blocks kept fetched ahead of a sequential reader. They are asked for once half of them are
/// missing, all in one request: few large requests, which is what object stores serve fast
/// (their cost per request is far above their cost per MiB).
pub const READAHEAD: u64 = 16;
/// Bytes read in a row that make a reader sequential. More than the kernel's own readahead
/// window (1 MiB with `read_ahead_kb=1024`): a random read, or a page fault of a mapping, is
/// followed by the kernel reading around it, and that alone must not look sequential.
pub const STREAK: u64 = 2 << 20;

/// What the readahead knows of the reads so far.
#[derive(Debug)]
pub struct Readahead {
    /// Where the last read ended: a read starting there continues a streak.
    next: u64,
    /// Bytes read in a row without a jump: from [`STREAK`] on, the reader is sequential.
    streak: u64,
}

impl Default for Readahead {
    fn default() -> Readahead {
        Readahead {
            next: u64::MAX,
            streak: 0,
        }
    }
}

impl Readahead {
    /// Notes a read of `[offset, end)`; returns whether the reader is sequential now.
    pub fn note(&mut self, offset: u64, end: u64) -> bool {
        self.streak = match offset == self.next {
            true => self.streak + (end - offset),
            false => end - offset,
        };
        self.next = end;
        self.streak >= STREAK
    }

    /// The blocks to fetch ahead of a sequential read that ended in block `last`, of `count`
    /// blocks in all, where `absent(k)` says block `k` is neither here nor on its way: none
    /// until half the window is missing (or the object's end is near), then all of them.
    pub fn ahead(last: u64, count: u64, absent: impl Fn(u64) -> bool) -> Vec<u64> {
        let window: Range<u64> = (last + 1)..(last + 1 + READAHEAD).min(count);
        let missing: Vec<u64> = window.filter(|&k| absent(k)).collect();
        let near_end = last + 1 + READAHEAD >= count;
        match missing.len() as u64 >= READAHEAD / 2 || (near_end && !missing.is_empty()) {
            true => missing,
            false => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn a_streak_of_two_mib_makes_a_reader_sequential_and_a_jump_resets_it() {
        let mut r = Readahead::default();
        assert!(!r.note(0, MIB));
        assert!(r.note(MIB, 2 * MIB));
        assert!(!r.note(10 * MIB, 11 * MIB));
        assert!(r.note(11 * MIB, 12 * MIB));
    }

    #[test]
    fn the_window_is_asked_for_once_half_of_it_is_missing() {
        assert_eq!(
            Readahead::ahead(0, 100, |_| true),
            (1..17).collect::<Vec<_>>()
        );
        assert!(Readahead::ahead(0, 100, |k| k > 9).is_empty());
        assert_eq!(
            Readahead::ahead(0, 100, |k| k > 8),
            (9..17).collect::<Vec<_>>()
        );
        // Near the end, whatever is missing goes.
        assert_eq!(Readahead::ahead(95, 100, |k| k == 99), vec![99]);
        assert!(Readahead::ahead(99, 100, |_| true).is_empty());
    }
}
