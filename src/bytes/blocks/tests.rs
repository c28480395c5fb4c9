//! A block set over an object store in memory (`fixture.rs`): reads, fetches, readahead,
//! prefetches, eviction, failures and the books, each checked against the requests the store
//! saw.

use std::ops::Range;
use std::sync::atomic::Ordering;
use std::sync::mpsc;

use object_store::{GetRange, ObjectStoreExt, PutPayload};

use super::fixture::*;
use super::*;
use crate::remote::block_on;

#[test]
fn a_read_of_an_absent_range_fetches_it_and_answers_its_bytes() {
    let size = 3 * BLOCK + 12_345;
    let f = fixture(size);
    let want = content(size);
    // Across a block boundary, for the daemon itself.
    let (a, b) = (BLOCK - 100, BLOCK + 200);
    let got = answer_of(&start_read(&f.blocks, a..b, true)).unwrap();
    assert_eq!(got, want[a as usize..b as usize]);
    assert_eq!(f.store.gets(), [blocks_range(0..2, size)]);
    // The last block is short; a read past the end is clamped to the object.
    let got = read(&f.blocks, 3 * BLOCK + 5..size + 1_000).unwrap();
    assert_eq!(got, want[(3 * BLOCK + 5) as usize..]);
    let mut buf = vec![0; 300];
    f.blocks.read_exact_at(&mut buf, BLOCK + 50).unwrap();
    assert_eq!(buf, want[(BLOCK + 50) as usize..(BLOCK + 350) as usize]);
    assert!(f.blocks.read_exact_at(&mut buf, size - 10).is_err());
    assert_eq!(f.store.count(), 2, "present blocks cost no request");
    assert_eq!(f.blocks.present(), [(0, BLOCK), (1, BLOCK), (3, 12_345)]);
    assert!(
        !f.store.unconditional.load(Ordering::SeqCst),
        "every GET asks If-Match"
    );
    f.books.assert_balanced(&f.blocks);
}

#[test]
fn a_small_object_is_fetched_whole_by_its_first_read_and_block_by_block_after() {
    let size = SMALL;
    let f = fixture(size);
    let want = content(size);
    // The end of the object, as an archive's first open reads it: the whole object comes.
    let got = read(&f.blocks, size - 22..size).unwrap();
    assert_eq!(got, want[(size - 22) as usize..]);
    assert_eq!(f.store.gets(), [blocks_range(0..2, size)]);
    assert_eq!(read(&f.blocks, 0..4096).unwrap(), want[..4096]);
    assert_eq!(f.store.count(), 1, "the rest was already here");
    // Once it has blocks, an evicted one comes back alone.
    f.books.evict(&f.blocks, 0);
    assert_eq!(read(&f.blocks, 10..20).unwrap(), want[10..20]);
    assert_eq!(f.store.gets()[1], block_range(0, size));
    // A larger object's first read asks for its own block only.
    let size = SMALL + 1;
    let g = fixture(size);
    assert_eq!(
        read(&g.blocks, size - 1..size).unwrap(),
        content(size)[(size - 1) as usize..]
    );
    assert_eq!(g.store.gets(), [block_range(2, size)]);
    f.books.assert_balanced(&f.blocks);
    g.books.assert_balanced(&g.blocks);
}

#[test]
fn overlapping_concurrent_reads_of_an_absent_block_cost_one_request() {
    let size = 2 * BLOCK + 1;
    let f = fixture(size);
    let want = content(size);
    f.store.close_gate();
    let first = start_read(&f.blocks, 0..1000, false);
    wait_for("the first read's request", || f.store.count() == 1);
    let second = start_read(&f.blocks, 500..BLOCK, true);
    let third = start_read(&f.blocks, 10..20, false);
    f.store.open_gate();
    assert_eq!(answer_of(&first).unwrap(), want[..1000]);
    assert_eq!(answer_of(&second).unwrap(), want[500..BLOCK as usize]);
    assert_eq!(answer_of(&third).unwrap(), want[10..20]);
    // A later request for another block: any second request for block 0 would be before it.
    assert_eq!(
        read(&f.blocks, BLOCK..BLOCK + 1).unwrap(),
        want[BLOCK as usize..][..1]
    );
    assert_eq!(f.store.gets(), [block_range(0, size), block_range(1, size)]);
    f.books.assert_balanced(&f.blocks);
}

#[test]
fn a_sequential_reader_gets_a_window_that_grows_in_parts_and_a_jump_drops_it() {
    use crate::bytes::readahead::{FIRST_WINDOW, PART};
    let count = 200;
    let size = count * BLOCK;
    let f = fixture(size);
    let want = content(size);
    let mib = |k: u64| want[(k * BLOCK) as usize..((k + 1) * BLOCK) as usize].to_vec();
    let asked = || -> Vec<Range<u64>> {
        let mut asked: Vec<Range<u64>> = f
            .store
            .gets()
            .into_iter()
            .map(|g| match g {
                Some(GetRange::Bounded(r)) => r.start / BLOCK..r.end.div_ceil(BLOCK),
                other => panic!("not a bounded range: {other:?}"),
            })
            .collect();
        asked.sort_by_key(|r| r.start);
        asked
    };
    assert_eq!(read(&f.blocks, 0..BLOCK).unwrap(), mib(0));
    assert_eq!(f.store.count(), 1, "one MiB is not yet sequential");
    // The second MiB in a row: block 1, and a small first window after it.
    assert_eq!(read(&f.blocks, BLOCK..2 * BLOCK).unwrap(), mib(1));
    wait_for("the first window asked for", || f.store.count() == 3);
    assert_eq!(asked(), [0..1, 1..2, 2..2 + FIRST_WINDOW]);
    // Read on in a row: the window doubles, in parts of PART blocks, never a block twice.
    for k in 2..24 {
        assert_eq!(read(&f.blocks, k * BLOCK..(k + 1) * BLOCK).unwrap(), mib(k));
    }
    wait_for("every part landed", || f.blocks.fetching() == 0);
    let ranges = asked();
    assert!(ranges.iter().all(|r| r.end - r.start <= PART), "{ranges:?}");
    for pair in ranges.windows(2) {
        assert_eq!(
            pair[0].end, pair[1].start,
            "a gap or a block asked twice: {ranges:?}"
        );
    }
    let furthest = ranges.last().map_or(0, |r| r.end);
    assert!(
        furthest >= 24 + 2 * FIRST_WINDOW,
        "the window did not grow: {ranges:?}"
    );
    assert!(
        furthest < count - 2,
        "the window reached the end: {ranges:?}"
    );
    assert_eq!(f.blocks.present().len() as u64, furthest);
    // A jump: that block alone, no readahead, until the reader is sequential again.
    let before = f.store.count();
    let k = count - 2;
    assert_eq!(
        read(&f.blocks, k * BLOCK..k * BLOCK + 4096).unwrap(),
        mib(k)[..4096]
    );
    assert_eq!(f.store.count(), before + 1);
    assert_eq!(asked().last(), Some(&(k..k + 1)));
    f.books.assert_balanced(&f.blocks);
}

#[test]
fn a_prefetch_fetches_once_and_the_read_after_it_waits_for_that_fetch() {
    let size = 10 * BLOCK;
    let f = fixture(size);
    let want = content(size);
    f.store.close_gate();
    f.blocks.prefetch(BLOCK + 5, 3 * BLOCK + 1);
    wait_for("the prefetch asked", || f.store.count() == 1);
    assert_eq!(f.store.gets(), [blocks_range(1..4, size)]);
    // A read of those blocks, and a prefetch again, ask nothing more: they wait for it.
    let rx = start_read(&f.blocks, 2 * BLOCK..2 * BLOCK + 10, false);
    f.blocks.prefetch(BLOCK, 2 * BLOCK);
    f.store.open_gate();
    assert_eq!(answer_of(&rx).unwrap(), want[2 * BLOCK as usize..][..10]);
    wait_for("every block landed", || f.blocks.fetching() == 0);
    assert_eq!(f.store.count(), 1);
    // Nor does a prefetch of blocks present. It is no read either: a read that continues it
    // is not sequential (had the readahead counted 3 MiB in a row, it would fetch ahead).
    f.blocks.prefetch(BLOCK, 4 * BLOCK);
    assert_eq!(f.store.count(), 1);
    assert_eq!(
        read(&f.blocks, 4 * BLOCK..5 * BLOCK).unwrap(),
        want[4 * BLOCK as usize..5 * BLOCK as usize]
    );
    assert_eq!(f.store.gets()[1..], [block_range(4, size)]);
    wait_for("every block landed", || f.blocks.fetching() == 0);
    assert_eq!(f.store.count(), 2, "{:?}", f.store.gets());
    f.books.assert_balanced(&f.blocks);
    // A small object is fetched whole by its first read: a prefetch leaves it to that read.
    let small = fixture(SMALL);
    small.blocks.prefetch(0, 10);
    assert_eq!(read(&small.blocks, 0..10).unwrap(), content(SMALL)[..10]);
    assert_eq!(small.store.gets(), [blocks_range(0..2, SMALL)]);
}

#[test]
fn an_evicted_block_is_fetched_again() {
    let size = 2 * BLOCK + 7;
    let f = fixture(size);
    let want = content(size);
    assert_eq!(
        read(&f.blocks, BLOCK..size).unwrap(),
        want[BLOCK as usize..]
    );
    assert_eq!(f.blocks.present(), [(1, BLOCK), (2, 7)]);
    f.books.evict(&f.blocks, 1);
    assert_eq!(f.blocks.present(), [(2, 7)]);
    // Evicting an absent block does nothing.
    f.books.evict(&f.blocks, 0);
    let (a, b) = (BLOCK + 3, BLOCK + 4096);
    assert_eq!(read(&f.blocks, a..b).unwrap(), want[a as usize..b as usize]);
    assert_eq!(
        f.store.gets(),
        [blocks_range(1..3, size), block_range(1, size)]
    );
    assert_eq!(f.blocks.present(), [(1, BLOCK), (2, 7)]);
    f.books.assert_balanced(&f.blocks);
}

#[test]
fn an_object_replaced_after_opening_fails_its_reads_and_never_mixes_versions() {
    let size = 2 * BLOCK + 1;
    let f = fixture(size);
    let want = content(size);
    assert_eq!(read(&f.blocks, 0..100).unwrap(), want[..100]);
    let other: Vec<u8> = want.iter().map(|b| !b).collect();
    block_on(f.store.inner.put(&f.path, PutPayload::from(other)))
        .unwrap()
        .unwrap();
    for (range, own) in [(BLOCK..BLOCK + 10, false), (BLOCK - 5..BLOCK + 5, true)] {
        let e = answer_of(&start_read(&f.blocks, range, own)).unwrap_err();
        let said = e.to_string();
        assert!(said.contains("replaced"), "{said}");
        assert!(said.contains("mem://ds/x.npz"), "{said}");
        // The cause reaches the reader: a changed object is ESTALE, not a generic EIO.
        assert_eq!(e.errno(), libc::ESTALE, "{said}");
    }
    // The block of the version opened still serves; the new version's never came.
    assert_eq!(read(&f.blocks, 0..100).unwrap(), want[..100]);
    assert_eq!(f.blocks.present(), [(0, BLOCK)]);
    assert_eq!(f.store.count(), 3);
    f.books.assert_balanced(&f.blocks);
}

#[test]
fn a_failed_fetch_fails_every_read_parked_on_it_and_a_later_read_retries() {
    let size = 3 * BLOCK;
    let f = fixture(size);
    let want = content(size);
    f.store.close_gate();
    f.store.fail.store(1, Ordering::SeqCst);
    let parked = [
        start_read(&f.blocks, 0..BLOCK + 1, false),
        start_read(&f.blocks, 10..20, true),
        start_read(&f.blocks, BLOCK..BLOCK + 5, false),
    ];
    wait_for("the request", || f.store.count() == 1);
    f.store.open_gate();
    for rx in &parked {
        let said = answer_of(rx).unwrap_err().to_string();
        assert!(said.contains("the injected failure"), "{said}");
    }
    assert!(f.blocks.present().is_empty());
    // Nothing is left fetching: the next read asks again, and gets the bytes.
    assert_eq!(
        read(&f.blocks, 5..BLOCK + 9).unwrap(),
        want[5..(BLOCK + 9) as usize]
    );
    assert_eq!(
        f.store.gets(),
        [blocks_range(0..2, size), blocks_range(0..2, size)]
    );
    f.books.assert_balanced(&f.blocks);
}

#[test]
fn a_dropped_set_forgets_exactly_its_present_blocks() {
    let size = 4 * BLOCK;
    let f = fixture(size);
    read(&f.blocks, 0..10).unwrap();
    read(&f.blocks, 2 * BLOCK..2 * BLOCK + 10).unwrap();
    read(&f.blocks, 3 * BLOCK..3 * BLOCK + 10).unwrap();
    f.books.evict(&f.blocks, 2);
    f.books.assert_balanced(&f.blocks);
    let Fixture { books, blocks, .. } = f;
    // The I/O threads may still hold the set for a moment after answering.
    let weak = Arc::downgrade(&blocks);
    drop(blocks);
    wait_for("the set dropped", || weak.strong_count() == 0);
    let l = books.ledger();
    assert_eq!(l.forgotten.as_deref(), Some(&[0, 3][..]));
    assert_eq!(l.filed.keys().copied().collect::<Vec<_>>(), [0, 3]);
    assert!(l.wrong.is_empty(), "{:?}", l.wrong);
}

#[test]
fn a_closed_set_lists_its_blocks_and_forgets_nothing() {
    let size = 3 * BLOCK;
    let f = fixture(size);
    read(&f.blocks, BLOCK..BLOCK + 1).unwrap();
    f.books.assert_balanced(&f.blocks);
    assert_eq!(f.blocks.close().as_deref(), Some("1\n"));
    // Closed: an eviction punches nothing.
    f.blocks.evict(1);
    assert_eq!(f.blocks.present(), [(1, BLOCK)]);
    let Fixture { books, blocks, .. } = f;
    let weak = Arc::downgrade(&blocks);
    drop(blocks);
    wait_for("the set dropped", || weak.strong_count() == 0);
    assert!(books.ledger().forgotten.is_none());
}

#[test]
fn a_request_failing_midway_fails_only_reads_of_the_blocks_it_did_not_bring() {
    let size = 3 * BLOCK;
    let f = fixture(size);
    let want = content(size);
    // Block 0 comes by a request of its own, held back; blocks 1 and 2 by one that brings
    // block 1, then is cut off.
    f.store.hold(0);
    let first = start_read(&f.blocks, 0..10, false);
    *f.store.cut_at.lock().unwrap() = Some(BLOCK);
    let cut = start_read(&f.blocks, BLOCK..3 * BLOCK, true);
    let across = start_read(&f.blocks, BLOCK - 10..BLOCK + 10, false);
    let said = answer_of(&cut).unwrap_err().to_string();
    assert!(said.contains("the connection was lost"), "{said}");
    assert_eq!(f.blocks.present(), [(1, BLOCK)]);
    // The read across blocks 0 and 1 has what the failed request brought, and waits for the
    // other request: it is not failed by one that did not fail it.
    assert!(
        across
            .try_recv()
            .is_err_and(|e| e == mpsc::TryRecvError::Empty)
    );
    f.store.open_gate();
    assert_eq!(answer_of(&first).unwrap(), want[..10]);
    let (a, b) = ((BLOCK - 10) as usize, (BLOCK + 10) as usize);
    assert_eq!(answer_of(&across).unwrap(), want[a..b]);
    assert_eq!(
        read(&f.blocks, 2 * BLOCK..2 * BLOCK + 1).unwrap(),
        want[2 * BLOCK as usize..][..1]
    );
    assert_eq!(f.store.count(), 3);
    f.books.assert_balanced(&f.blocks);
}

#[test]
fn a_block_evicted_while_a_read_waits_for_its_neighbour_is_fetched_again() {
    let size = 3 * BLOCK;
    let f = fixture(size);
    let want = content(size);
    // Block 1 is on its way, held; then a read of both blocks 0 and 1 fetches block 0.
    f.store.hold(BLOCK);
    let first = start_read(&f.blocks, BLOCK..BLOCK + 10, false);
    let both = start_read(&f.blocks, BLOCK - 10..BLOCK + 10, false);
    wait_for("block 0 landed", || f.blocks.present() == [(0, BLOCK)]);
    // Evicted while the read still waits for block 1: nothing else would bring it back.
    f.books.evict(&f.blocks, 0);
    assert!(f.blocks.present().is_empty());
    f.store.open_gate();
    let at = BLOCK as usize;
    assert_eq!(answer_of(&first).unwrap(), want[at..at + 10]);
    assert_eq!(answer_of(&both).unwrap(), want[at - 10..at + 10]);
    assert_eq!(f.store.count(), 3, "block 0 fetched twice, block 1 once");
    f.books.assert_balanced(&f.blocks);
}
