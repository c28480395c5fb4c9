//! When to fetch ahead of a reader, and how far: the readahead policy of a block set, apart
//! from its storage and its books.
//!
//! Object stores answer a request's first byte after tens of milliseconds and carry 50-90 MB/s
//! per connection, so a sequential reader reaches the link's rate only with many ranged
//! requests in flight. As mountpoint-s3's prefetcher does, the window grows while the reader
//! reads in a row: [`FIRST_WINDOW`] blocks once the reader is sequential, doubled each time the
//! reader has used half of it, up to a cap tied to the cache's budget; it goes out in parts of
//! [`PART`] blocks, one request each, side by side. A jump drops the window: a random reader
//! gets only the blocks it asks for (one request of one block for a 4 KiB read).

/// Bytes read in a row that make a reader sequential. More than the kernel's own readahead
/// window (1 MiB with `read_ahead_kb=1024`): a random read, or a page fault of a mapping, is
/// followed by the kernel reading around it, and that alone must not look sequential.
pub const STREAK: u64 = 2 << 20;
/// Blocks fetched ahead of a reader that has just become sequential.
pub const FIRST_WINDOW: u64 = 8;
/// Blocks one readahead request asks for: 8 MiB, the part size of mountpoint-s3 and the AWS
/// CRT. Larger parts fill the link with fewer requests in flight but make the first one
/// longer; smaller ones cost a round trip for less.
pub const PART: u64 = 8;
/// The largest window, in blocks, whatever the budget: 256 MiB, what 32 requests of 8 MiB in
/// flight need (at 50 MB/s per connection, 32 of them fill a 10 Gbps link).
pub const MAX_WINDOW: u64 = 256;

/// What the readahead knows of the reads so far.
#[derive(Debug)]
pub struct Readahead {
    /// Where the last read ended: a read starting there continues a streak.
    next: u64,
    /// Bytes read in a row without a jump: from [`STREAK`] on, the reader is sequential.
    streak: u64,
    /// Blocks the next readahead asks for; 0 until the reader is sequential.
    window: u64,
    /// The block before which readahead was asked for already.
    ahead_to: u64,
    /// The largest window.
    cap: u64,
}

impl Readahead {
    /// A readahead whose window grows to `cap` blocks at most ([`MAX_WINDOW`] at most; 0: no
    /// readahead at all).
    pub fn new(cap: u64) -> Readahead {
        Readahead {
            next: u64::MAX,
            streak: 0,
            window: 0,
            ahead_to: 0,
            cap: cap.min(MAX_WINDOW),
        }
    }

    /// The window cap for a cache of `budget` bytes and blocks of `block` bytes: an eighth of
    /// the budget, so that readahead never evicts what a reader is about to use (a cache of
    /// less than 8 blocks gets no readahead).
    pub fn cap_for(budget: u64, block: u64) -> u64 {
        (budget / 8 / block.max(1)).min(MAX_WINDOW)
    }

    /// Notes a read of `[offset, end)` (blocks of `block` bytes, `count` in the object) and
    /// returns the blocks to fetch ahead of it, of those `absent(k)` says are neither here
    /// nor on their way: none while the reader is not sequential, or while more than half
    /// of the window is still ahead of it.
    pub fn plan(
        &mut self,
        (offset, end): (u64, u64),
        (block, count): (u64, u64),
        absent: impl Fn(u64) -> bool,
    ) -> Vec<u64> {
        if offset == self.next {
            self.streak += end - offset;
        } else {
            self.streak = end - offset;
            self.window = 0;
            self.ahead_to = 0;
        }
        self.next = end;
        if self.streak < STREAK || end == 0 || self.cap == 0 {
            return Vec::new();
        }
        let after = (end - 1) / block + 1;
        if self.window == 0 {
            self.window = FIRST_WINDOW.min(self.cap);
        }
        if self.ahead_to.saturating_sub(after) > self.window / 2 {
            return Vec::new();
        }
        let to = (after + self.window).min(count);
        let from = self.ahead_to.max(after);
        self.ahead_to = to;
        self.window = (self.window * 2).min(self.cap);
        (from..to).filter(|&k| absent(k)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    /// Reads `[from, to)` MiB one MiB at a time; the blocks asked for ahead, in order.
    fn read(r: &mut Readahead, from: u64, to: u64, count: u64) -> Vec<u64> {
        let mut asked = Vec::new();
        for m in from..to {
            asked.extend(r.plan((m * MIB, (m + 1) * MIB), (MIB, count), |_| true));
        }
        asked
    }

    #[test]
    fn nothing_is_fetched_ahead_of_a_random_reader() {
        let mut r = Readahead::new(64);
        assert!(
            r.plan((10 * MIB, 10 * MIB + 4096), (MIB, 100), |_| true)
                .is_empty()
        );
        assert!(
            r.plan((50 * MIB, 51 * MIB), (MIB, 100), |_| true)
                .is_empty()
        );
        assert!(r.plan((3 * MIB, 4 * MIB), (MIB, 100), |_| true).is_empty());
    }

    #[test]
    fn the_window_doubles_while_the_reader_reads_in_a_row_up_to_its_cap() {
        let mut r = Readahead::new(64);
        // Sequential after 2 MiB: the first window is 8 blocks after the read.
        assert!(read(&mut r, 0, 1, 1000).is_empty());
        assert_eq!(read(&mut r, 1, 2, 1000), (2..10).collect::<Vec<_>>());
        // Each time half the window is used, the next one (twice as long) is asked for.
        let asked = read(&mut r, 2, 200, 1000);
        let mut sorted = asked.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted, asked, "a block asked for twice");
        assert_eq!(asked.first(), Some(&10));
        // Never more than the cap ahead of the reader, and the whole way covered.
        assert!(*asked.last().unwrap() < 200 + 64 + 1);
        assert_eq!(asked, (10..=*asked.last().unwrap()).collect::<Vec<_>>());
        assert!(*asked.last().unwrap() >= 200 + 32);
    }

    #[test]
    fn a_jump_drops_the_window_and_the_object_end_bounds_it() {
        let mut r = Readahead::new(64);
        read(&mut r, 0, 40, 1000);
        // A jump: random again until 2 MiB in a row, then the first window only.
        assert!(read(&mut r, 500, 501, 1000).is_empty());
        assert_eq!(read(&mut r, 501, 502, 1000), (502..510).collect::<Vec<_>>());
        // Near the end of the object, the window stops there.
        let mut r = Readahead::new(64);
        assert_eq!(read(&mut r, 0, 2, 5), vec![2, 3, 4]);
    }

    #[test]
    fn blocks_present_or_on_their_way_are_not_asked_for_again() {
        let mut r = Readahead::new(64);
        r.plan((0, MIB), (MIB, 100), |_| true);
        let asked = r.plan((MIB, 2 * MIB), (MIB, 100), |k| k % 2 == 0);
        assert_eq!(asked, vec![2, 4, 6, 8]);
    }

    #[test]
    fn the_cap_follows_the_budget_within_its_bounds() {
        assert_eq!(Readahead::cap_for(4 << 30, MIB), 256);
        assert_eq!(Readahead::cap_for(256 * MIB, MIB), 32);
        assert_eq!(Readahead::cap_for(32 * MIB, MIB), 4);
        assert_eq!(Readahead::cap_for(4 * MIB, MIB), 0);
        // A small cap: the first window is the cap; no cap, no readahead.
        let mut r = Readahead::new(4);
        assert_eq!(read(&mut r, 0, 2, 100), vec![2, 3, 4, 5]);
        let mut r = Readahead::new(0);
        assert!(read(&mut r, 0, 20, 100).is_empty());
    }
}
