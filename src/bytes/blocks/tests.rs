//! A block set over an object store in memory: no server, every request counted, and any of
//! them held back or failed on demand. The I/O runs on the remote client's threads, so every
//! answer is waited for through a channel with a deadline.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::mpsc::{self, Receiver};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use object_store::memory::InMemory;
use object_store::path::Path as StorePath;
use object_store::{
    CopyOptions, GetOptions, GetRange, GetResult, GetResultPayload, ListResult, MultipartUpload,
    ObjectMeta, ObjectStore, ObjectStoreExt, PutMultipartOptions, PutOptions, PutPayload,
    PutResult,
};

use super::*;
use crate::remote::{Version, block_on};

/// How long any answer may take before the test fails: generous, since the machine may be
/// busy, and never slept through (answers are waited for, not guessed).
const DEADLINE: Duration = Duration::from_secs(20);

/// Byte `i` of the test objects: computable at any offset, and not periodic in a block.
fn byte(i: u64) -> u8 {
    (i * 7 + i / 251) as u8
}

fn content(size: u64) -> Vec<u8> {
    (0..size).map(byte).collect()
}

/// Boxed futures, as the `ObjectStore` trait (an `async_trait`) has them.
type Boxed<'a, T> = Pin<Box<dyn Future<Output = object_store::Result<T>> + Send + 'a>>;

/// A store in memory whose GETs are counted (with their ranges), can be held back until the
/// test opens the gate, and can be made to fail.
#[derive(Debug, Default)]
struct Counting {
    inner: InMemory,
    /// The range of every GET, in the order they came.
    gets: Mutex<Vec<Option<GetRange>>>,
    /// Which GETs wait: all of them (the gate closed), or those of ranges starting at these
    /// offsets; and who waits.
    gate: Mutex<Gate>,
    /// GETs still to fail, from the next one on.
    fail: AtomicUsize,
    /// A GET of a range starting here answers its first block, then fails.
    cut_at: Mutex<Option<u64>>,
    /// Whether If-Match was asked for on every GET.
    unconditional: AtomicBool,
}

#[derive(Debug, Default)]
struct Gate {
    closed: bool,
    held: Vec<u64>,
    waiting: Vec<Waker>,
}

impl fmt::Display for Counting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Counting({})", self.inner)
    }
}

impl Counting {
    fn gets(&self) -> Vec<Option<GetRange>> {
        self.gets.lock().unwrap().clone()
    }

    fn count(&self) -> usize {
        self.gets.lock().unwrap().len()
    }

    fn close_gate(&self) {
        self.gate.lock().unwrap().closed = true;
    }

    /// Holds the GETs of ranges starting at `start` (until the gate opens).
    fn hold(&self, start: u64) {
        self.gate.lock().unwrap().held.push(start);
    }

    fn open_gate(&self) {
        let mut gate = self.gate.lock().unwrap();
        gate.closed = false;
        gate.held.clear();
        gate.waiting.drain(..).for_each(Waker::wake);
    }

    async fn pass_gate(&self, start: u64) {
        std::future::poll_fn(|cx| {
            let mut gate = self.gate.lock().unwrap();
            match gate.closed || gate.held.contains(&start) {
                true => {
                    gate.waiting.push(cx.waker().clone());
                    Poll::Pending
                }
                false => Poll::Ready(()),
            }
        })
        .await
    }
}

impl ObjectStore for Counting {
    fn put_opts<'a, 'b, 'c>(
        &'a self,
        location: &'b StorePath,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Boxed<'c, PutResult>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        self.inner.put_opts(location, payload, opts)
    }

    fn put_multipart_opts<'a, 'b, 'c>(
        &'a self,
        location: &'b StorePath,
        opts: PutMultipartOptions,
    ) -> Boxed<'c, Box<dyn MultipartUpload>>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        self.inner.put_multipart_opts(location, opts)
    }

    fn get_opts<'a, 'b, 'c>(
        &'a self,
        location: &'b StorePath,
        options: GetOptions,
    ) -> Boxed<'c, GetResult>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        Box::pin(async move {
            self.gets.lock().unwrap().push(options.range.clone());
            if options.if_match.is_none() {
                self.unconditional.store(true, Ordering::SeqCst);
            }
            let start = match &options.range {
                Some(GetRange::Bounded(r)) => r.start,
                _ => 0,
            };
            self.pass_gate(start).await;
            let fail = self
                .fail
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
            if fail.is_ok() {
                return Err(object_store::Error::Generic {
                    store: "test",
                    source: "the injected failure".into(),
                });
            }
            // InMemory checks If-Match itself (GetOptions::check_preconditions).
            let got = self.inner.get_opts(location, options).await?;
            match self.cut_at.lock().unwrap().take_if(|at| *at == start) {
                Some(_) => Ok(cut_short(got)),
                None => Ok(got),
            }
        })
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<StorePath>>,
    ) -> BoxStream<'static, object_store::Result<StorePath>> {
        self.inner.delete_stream(locations)
    }

    fn list(
        &self,
        prefix: Option<&StorePath>,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_delimiter<'a, 'b, 'c>(
        &'a self,
        prefix: Option<&'b StorePath>,
    ) -> Boxed<'c, ListResult>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        self.inner.list_with_delimiter(prefix)
    }

    fn copy_opts<'a, 'b, 'd, 'c>(
        &'a self,
        from: &'b StorePath,
        to: &'d StorePath,
        options: CopyOptions,
    ) -> Boxed<'c, ()>
    where
        'a: 'c,
        'b: 'c,
        'd: 'c,
        Self: 'c,
    {
        self.inner.copy_opts(from, to, options)
    }
}

/// `got` with a body that gives its first block, then fails (a connection lost mid-body).
fn cut_short(got: GetResult) -> GetResult {
    let (meta, range, attributes) = (got.meta.clone(), got.range.clone(), got.attributes.clone());
    let body = got.into_stream();
    let first = body
        .map(|piece| piece.map(|b| b.slice(..BLOCK as usize)))
        .take(1);
    let lost = futures_util::stream::once(std::future::ready(Err(object_store::Error::Generic {
        store: "test",
        source: "the connection was lost".into(),
    })));
    GetResult {
        payload: GetResultPayload::Stream(first.chain(lost).boxed()),
        meta,
        range,
        attributes,
        extensions: Default::default(),
    }
}

/// Books that check themselves: nothing settled that was not charged, no block filed twice,
/// and the set forgotten with exactly the blocks filed (less those the test evicted).
#[derive(Default)]
struct TestBooks {
    ledger: Mutex<Tally>,
}

#[derive(Default, Debug)]
struct Tally {
    charged: u64,
    filed_bytes: u64,
    refunded: u64,
    /// Blocks present by the books, with their lengths.
    filed: BTreeMap<u64, u64>,
    /// What `forget` was told, once.
    forgotten: Option<Vec<u64>>,
    /// Anything that broke the rules.
    wrong: Vec<String>,
}

impl Books for TestBooks {
    fn charge(&self, len: u64) {
        self.ledger().charged += len;
    }

    fn settle(&self, _set: SetId, filed: &[(u64, u64)], refund: u64) {
        let mut l = self.ledger();
        for &(k, len) in filed {
            if l.filed.insert(k, len).is_some() {
                l.wrong.push(format!("block {k} filed twice"));
            }
            l.filed_bytes += len;
        }
        l.refunded += refund;
        if l.filed_bytes + l.refunded > l.charged {
            let said = format!("settled more than charged: {l:?}");
            l.wrong.push(said);
        }
    }

    fn budget(&self) -> u64 {
        1 << 30
    }

    fn forget(&self, _set: SetId, present: &[u64]) {
        let mut l = self.ledger();
        if l.forgotten.replace(present.to_vec()).is_some() {
            l.wrong.push("forgotten twice".into());
        }
    }
}

impl TestBooks {
    /// The ledger, even after a failed assertion held it (a set dropped while the test
    /// unwinds still forgets, and must not panic again).
    fn ledger(&self) -> MutexGuard<'_, Tally> {
        self.ledger.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cache evicting block `k`, as it does: only once the block is in its books (a
    /// reader may be answered before its blocks are settled), out of them first, then out of
    /// the set. An absent block is only asked out of the set.
    fn evict(&self, blocks: &Blocks, k: u64) {
        if blocks.present().iter().any(|&(p, _)| p == k) {
            wait_for("the block settled", || self.ledger().filed.contains_key(&k));
        }
        self.ledger().filed.remove(&k);
        blocks.evict(k);
    }

    /// Every charge settled (filed or refunded), nothing wrong, and the books' blocks are the
    /// set's present ones.
    fn assert_balanced(&self, blocks: &Blocks) {
        // A block's charge comes just before its settling, on an I/O thread.
        wait_for("every charge settled", || {
            let l = self.ledger();
            l.charged == l.filed_bytes + l.refunded
        });
        let l = self.ledger();
        assert!(l.wrong.is_empty(), "{:?}", l.wrong);
        let filed: Vec<(u64, u64)> = l.filed.iter().map(|(&k, &n)| (k, n)).collect();
        drop(l);
        assert_eq!(filed, blocks.present());
    }
}

/// One object in the counting store, a block set of it over a file in a temporary directory.
struct Fixture {
    store: Arc<Counting>,
    books: Arc<TestBooks>,
    blocks: Arc<Blocks>,
    path: StorePath,
    _dir: tempfile::TempDir,
}

fn fixture(size: u64) -> Fixture {
    let store = Arc::new(Counting::default());
    let path = StorePath::from("ds/x.npz");
    let payload = PutPayload::from(content(size));
    block_on(store.inner.put(&path, payload)).unwrap().unwrap();
    let meta = block_on(store.inner.head(&path)).unwrap().unwrap();
    let version = Version::of(&meta);
    assert!(version.etag.is_some(), "the store gives ETags");
    let remote = Remote::new(
        store.clone(),
        path.clone(),
        version,
        "mem://ds/x.npz".into(),
    );
    let dir = tempfile::tempdir().unwrap();
    let file_path = dir.path().join("x.blocks");
    let file = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&file_path)
        .unwrap();
    let books = Arc::new(TestBooks::default());
    let blocks = Blocks::open(Arc::new(remote), 1, (file, file_path), None, books.clone());
    Fixture {
        store,
        books,
        blocks: blocks.unwrap(),
        path,
        _dir: dir,
    }
}

/// Starts a read of `[offset, end)` (for the kernel, or for the daemon itself); its answer
/// comes on the channel.
fn start_read(blocks: &Arc<Blocks>, range: Range<u64>, own: bool) -> Receiver<Result<Vec<u8>>> {
    let (tx, rx) = mpsc::channel();
    let done: ReadDone = Box::new(move |r| {
        tx.send(r.map(<[u8]>::to_vec)).unwrap();
    });
    match own {
        true => blocks.read_own(range.start, range.end, done),
        false => blocks.read(range.start, range.end, done),
    }
    rx
}

fn answer_of(rx: &Receiver<Result<Vec<u8>>>) -> Result<Vec<u8>> {
    rx.recv_timeout(DEADLINE)
        .expect("the read was answered in time")
}

fn read(blocks: &Arc<Blocks>, range: Range<u64>) -> Result<Vec<u8>> {
    answer_of(&start_read(blocks, range, false))
}

/// Waits until `done()` holds, or fails the test at the deadline.
fn wait_for(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !done() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        std::thread::yield_now();
    }
}

fn block_range(k: u64, size: u64) -> Option<GetRange> {
    Some(GetRange::Bounded(k * BLOCK..((k + 1) * BLOCK).min(size)))
}

fn blocks_range(ks: Range<u64>, size: u64) -> Option<GetRange> {
    Some(GetRange::Bounded(
        ks.start * BLOCK..(ks.end * BLOCK).min(size),
    ))
}

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
