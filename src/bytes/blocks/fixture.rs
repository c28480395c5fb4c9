//! What the block set's tests run on: an object store in memory (no server) whose every
//! request is counted, and any of them held back or failed on demand; books that check
//! themselves; a block set over a file in a temporary directory. The I/O runs on the remote
//! client's threads, so every answer is waited for through a channel with a deadline.

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
pub(super) fn byte(i: u64) -> u8 {
    (i * 7 + i / 251) as u8
}

pub(super) fn content(size: u64) -> Vec<u8> {
    (0..size).map(byte).collect()
}

/// Boxed futures, as the `ObjectStore` trait (an `async_trait`) has them.
type Boxed<'a, T> = Pin<Box<dyn Future<Output = object_store::Result<T>> + Send + 'a>>;

/// A store in memory whose GETs are counted (with their ranges), can be held back until the
/// test opens the gate, and can be made to fail.
#[derive(Debug, Default)]
pub(super) struct Counting {
    pub(super) inner: InMemory,
    /// The range of every GET, in the order they came.
    pub(super) gets: Mutex<Vec<Option<GetRange>>>,
    /// Which GETs wait: all of them (the gate closed), or those of ranges starting at these
    /// offsets; and who waits.
    gate: Mutex<Gate>,
    /// GETs still to fail, from the next one on.
    pub(super) fail: AtomicUsize,
    /// A GET of a range starting here answers its first block, then fails.
    pub(super) cut_at: Mutex<Option<u64>>,
    /// Whether If-Match was asked for on every GET.
    pub(super) unconditional: AtomicBool,
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
    pub(super) fn gets(&self) -> Vec<Option<GetRange>> {
        self.gets.lock().unwrap().clone()
    }

    pub(super) fn count(&self) -> usize {
        self.gets.lock().unwrap().len()
    }

    pub(super) fn close_gate(&self) {
        self.gate.lock().unwrap().closed = true;
    }

    /// Holds the GETs of ranges starting at `start` (until the gate opens).
    pub(super) fn hold(&self, start: u64) {
        self.gate.lock().unwrap().held.push(start);
    }

    pub(super) fn open_gate(&self) {
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
pub(super) struct TestBooks {
    ledger: Mutex<Tally>,
}

#[derive(Default, Debug)]
pub(super) struct Tally {
    charged: u64,
    filed_bytes: u64,
    refunded: u64,
    /// Blocks present by the books, with their lengths.
    pub(super) filed: BTreeMap<u64, u64>,
    /// What `forget` was told, once.
    pub(super) forgotten: Option<Vec<u64>>,
    /// Anything that broke the rules.
    pub(super) wrong: Vec<String>,
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
    pub(super) fn ledger(&self) -> MutexGuard<'_, Tally> {
        self.ledger.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cache evicting block `k`, as it does: only once the block is in its books (a
    /// reader may be answered before its blocks are settled), out of them first, then out of
    /// the set. An absent block is only asked out of the set.
    pub(super) fn evict(&self, blocks: &Blocks, k: u64) {
        if blocks.present().iter().any(|&(p, _)| p == k) {
            wait_for("the block settled", || self.ledger().filed.contains_key(&k));
        }
        self.ledger().filed.remove(&k);
        blocks.evict(k);
    }

    /// Every charge settled (filed or refunded), nothing wrong, and the books' blocks are the
    /// set's present ones.
    pub(super) fn assert_balanced(&self, blocks: &Blocks) {
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
pub(super) struct Fixture {
    pub(super) store: Arc<Counting>,
    pub(super) books: Arc<TestBooks>,
    pub(super) blocks: Arc<Blocks>,
    pub(super) path: StorePath,
    pub(super) _dir: tempfile::TempDir,
}

pub(super) fn fixture(size: u64) -> Fixture {
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
pub(super) fn start_read(
    blocks: &Arc<Blocks>,
    range: Range<u64>,
    own: bool,
) -> Receiver<Result<Vec<u8>>> {
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

pub(super) fn answer_of(rx: &Receiver<Result<Vec<u8>>>) -> Result<Vec<u8>> {
    rx.recv_timeout(DEADLINE)
        .expect("the read was answered in time")
}

pub(super) fn read(blocks: &Arc<Blocks>, range: Range<u64>) -> Result<Vec<u8>> {
    answer_of(&start_read(blocks, range, false))
}

/// Waits until `done()` holds, or fails the test at the deadline.
pub(super) fn wait_for(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !done() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        std::thread::yield_now();
    }
}

pub(super) fn block_range(k: u64, size: u64) -> Option<GetRange> {
    Some(GetRange::Bounded(k * BLOCK..((k + 1) * BLOCK).min(size)))
}

pub(super) fn blocks_range(ks: Range<u64>, size: u64) -> Option<GetRange> {
    Some(GetRange::Bounded(
        ks.start * BLOCK..(ks.end * BLOCK).min(size),
    ))
}
