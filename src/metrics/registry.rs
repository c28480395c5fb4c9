//! The process's counters: one static of atomics, bumped from every layer without a lock and
//! read whole by a snapshot (`stats/`). A daemon serves one mount, so the process's figures
//! are the mount's (as JuiceFS's and mountpoint-s3's registries are process-wide). The cache
//! keeps its own counters beside its books (`cache::Stats`), read the same way.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::histogram::Histogram;

/// A FUSE operation, as the metrics label it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Lookup,
    Getattr,
    Open,
    Read,
    Release,
    Flush,
    Opendir,
    Readdir,
    Readdirplus,
    Releasedir,
    Readlink,
    Statfs,
    Getxattr,
    Listxattr,
    /// Everything npzfs refuses (writes, ioctl, lseek, ...).
    Other,
}

impl Op {
    /// Every operation, in label order.
    pub const ALL: [Op; 15] = [
        Op::Lookup,
        Op::Getattr,
        Op::Open,
        Op::Read,
        Op::Release,
        Op::Flush,
        Op::Opendir,
        Op::Readdir,
        Op::Readdirplus,
        Op::Releasedir,
        Op::Readlink,
        Op::Statfs,
        Op::Getxattr,
        Op::Listxattr,
        Op::Other,
    ];

    /// The label value (and the word the log uses).
    pub fn name(self) -> &'static str {
        match self {
            Op::Lookup => "lookup",
            Op::Getattr => "getattr",
            Op::Open => "open",
            Op::Read => "read",
            Op::Release => "release",
            Op::Flush => "flush",
            Op::Opendir => "opendir",
            Op::Readdir => "readdir",
            Op::Readdirplus => "readdirplus",
            Op::Releasedir => "releasedir",
            Op::Readlink => "readlink",
            Op::Statfs => "statfs",
            Op::Getxattr => "getxattr",
            Op::Listxattr => "listxattr",
            Op::Other => "other",
        }
    }
}

/// The errnos npzfs answers with, by name; any other is counted as `other`.
pub const ERRNOS: [(i32, &str); 15] = [
    (libc::ENOENT, "ENOENT"),
    (libc::ENOTDIR, "ENOTDIR"),
    (libc::EISDIR, "EISDIR"),
    (libc::EROFS, "EROFS"),
    (libc::EOPNOTSUPP, "EOPNOTSUPP"),
    (libc::ENOSPC, "ENOSPC"),
    (libc::EINVAL, "EINVAL"),
    (libc::EIO, "EIO"),
    (libc::ENODATA, "ENODATA"),
    (libc::ERANGE, "ERANGE"),
    (libc::ESTALE, "ESTALE"),
    (libc::ETIMEDOUT, "ETIMEDOUT"),
    (libc::EACCES, "EACCES"),
    (libc::ENOSYS, "ENOSYS"),
    (libc::ENOTTY, "ENOTTY"),
];

/// The label of errno `n`'s slot: its index in [`ERRNOS`], or the last slot (`other`).
fn errno_slot(n: i32) -> usize {
    ERRNOS
        .iter()
        .position(|(e, _)| *e == n)
        .unwrap_or(ERRNOS.len())
}

/// The name of errno `n` (`ENOENT`), or `errno N` for one npzfs does not name.
pub fn errno_name(n: i32) -> String {
    match ERRNOS.get(errno_slot(n)) {
        Some((_, name)) => (*name).to_string(),
        None => format!("errno {n}"),
    }
}

/// FUSE requests by operation: how many, how many failed with which errno, how long each took
/// from its arrival to its answer (on the slow lane or a decoder's thread included).
pub struct Fuse {
    pub requests: [AtomicU64; Op::ALL.len()],
    /// [operation][errno slot]; the last slot is every other errno.
    pub errors: [[AtomicU64; ERRNOS.len() + 1]; Op::ALL.len()],
    pub latency: [Histogram; Op::ALL.len()],
}

/// Where a read's bytes come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    /// A stored member's bytes in the archive (its mapping, or a remote object's blocks).
    Archive,
    /// A compressed member's decoded bytes in the cache.
    Cache,
    /// A complete cache file the kernel reads itself (only opens are seen).
    Passthrough,
    /// A plain file of a source tree.
    Source,
}

impl Path {
    /// Every path, in label order.
    pub const ALL: [Path; 4] = [Path::Archive, Path::Cache, Path::Passthrough, Path::Source];

    /// The label value.
    pub fn name(self) -> &'static str {
        match self {
            Path::Archive => "archive",
            Path::Cache => "cache",
            Path::Passthrough => "passthrough",
            Path::Source => "source",
        }
    }
}

/// Opens and bytes read, by the path that serves them.
pub struct Served {
    pub opens: [AtomicU64; Path::ALL.len()],
    pub bytes: [AtomicU64; Path::ALL.len()],
}

/// What an HTTP request to an object store is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A ranged GET of an object's bytes.
    Get,
    /// A HEAD: an object's size and version.
    Head,
    /// A listing of a prefix.
    List,
    /// Anything else (credentials, ...).
    Other,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::Get, Kind::Head, Kind::List, Kind::Other];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Get => "get",
            Kind::Head => "head",
            Kind::List => "list",
            Kind::Other => "other",
        }
    }
}

/// How an HTTP request to an object store ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// 2xx, with the whole body.
    Ok,
    /// 404.
    NotFound,
    /// 412: the object changed (If-Match).
    Changed,
    /// 429 or 503: the store asks to slow down.
    Throttled,
    /// Another 5xx.
    ServerError,
    /// Another 4xx (or 3xx).
    ClientError,
    /// No answer in time.
    Timeout,
    /// The connection failed or was cut, before the headers or in the body.
    Cut,
}

impl Status {
    pub const ALL: [Status; 8] = [
        Status::Ok,
        Status::NotFound,
        Status::Changed,
        Status::Throttled,
        Status::ServerError,
        Status::ClientError,
        Status::Timeout,
        Status::Cut,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::NotFound => "not_found",
            Status::Changed => "changed",
            Status::Throttled => "throttled",
            Status::ServerError => "server_error",
            Status::ClientError => "client_error",
            Status::Timeout => "timeout",
            Status::Cut => "cut",
        }
    }

    /// The status of an HTTP answer's code.
    pub fn of_code(code: u16) -> Status {
        match code {
            200..=299 => Status::Ok,
            404 => Status::NotFound,
            412 => Status::Changed,
            429 | 503 => Status::Throttled,
            500..=599 => Status::ServerError,
            _ => Status::ClientError,
        }
    }

    /// Whether the client asks again after it (object_store's retry rules).
    pub fn is_retried(self) -> bool {
        matches!(
            self,
            Status::Throttled | Status::ServerError | Status::Timeout | Status::Cut
        )
    }
}

/// Requests to object stores: every HTTP attempt (retries included) by kind and outcome.
pub struct Remote {
    /// [kind][status].
    pub requests: [[AtomicU64; Status::ALL.len()]; Kind::ALL.len()],
    /// Body bytes received.
    pub bytes: AtomicU64,
    /// From sending a request to its answer's headers.
    pub first_byte: [Histogram; Kind::ALL.len()],
    /// From sending a request to the end of its body.
    pub duration: [Histogram; Kind::ALL.len()],
    /// Attempts that failed in a way the client retries (the last of a request that gives
    /// up included).
    pub retries: AtomicU64,
    /// Requests sent whose body is not in yet.
    pub in_flight: AtomicI64,
}

/// Directory sources: archives opened as they are used, closed by the LRU.
pub struct Sources {
    pub archives_opened: AtomicU64,
    pub archives_closed: AtomicU64,
}

/// A warning that can repeat: counted here, logged at warn only at its 1st, 10th, 100th, ...
/// occurrence ([`often`]), each line with the count; the rest go to debug.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Warning {
    /// A span of a sparse member could not be decoded.
    SpanFailed,
    /// Names of an archive not shown as they are: unusable, duplicated or clashing (one line
    /// per archive says how many).
    OddNames,
}

impl Warning {
    pub const ALL: [Warning; 2] = [Warning::SpanFailed, Warning::OddNames];

    pub fn name(self) -> &'static str {
        match self {
            Warning::SpanFailed => "span_failed",
            Warning::OddNames => "odd_names",
        }
    }
}

/// Whether the `n`th occurrence of a cause is logged at warn: the 1st, 10th, 100th, ...
pub fn often(n: u64) -> bool {
    let mut p = 1u64;
    while p < n {
        p = p.saturating_mul(10);
    }
    p == n
}

/// Slots of the table that counts failures by cause for the log ([`Metrics::failed`]).
const CAUSES: usize = 1024;

/// Every counter of the process.
pub struct Metrics {
    pub fuse: Fuse,
    pub served: Served,
    pub remote: Remote,
    pub sources: Sources,
    pub warnings: [AtomicU64; Warning::ALL.len()],
    /// Failures by cause (operation, errno, inode), hashed into a fixed table: two causes that
    /// share a slot only share their log lines' count.
    causes: [AtomicU64; CAUSES],
}

/// The process's counters.
pub static METRICS: Metrics = Metrics::new();

// Array repeat expressions of atomics need a constant: each element is a fresh one.
#[allow(clippy::declare_interior_mutable_const)]
const ZERO: AtomicU64 = AtomicU64::new(0);
#[allow(clippy::declare_interior_mutable_const)]
const HISTOGRAM: Histogram = Histogram::new();

impl Metrics {
    /// All zero.
    pub const fn new() -> Metrics {
        Metrics {
            fuse: Fuse {
                requests: [ZERO; Op::ALL.len()],
                errors: [const { [ZERO; ERRNOS.len() + 1] }; Op::ALL.len()],
                latency: [HISTOGRAM; Op::ALL.len()],
            },
            served: Served {
                opens: [ZERO; Path::ALL.len()],
                bytes: [ZERO; Path::ALL.len()],
            },
            remote: Remote {
                requests: [const { [ZERO; Status::ALL.len()] }; Kind::ALL.len()],
                bytes: ZERO,
                first_byte: [HISTOGRAM; Kind::ALL.len()],
                duration: [HISTOGRAM; Kind::ALL.len()],
                retries: ZERO,
                in_flight: AtomicI64::new(0),
            },
            sources: Sources {
                archives_opened: ZERO,
                archives_closed: ZERO,
            },
            warnings: [ZERO; Warning::ALL.len()],
            causes: [ZERO; CAUSES],
        }
    }

    /// FUSE request `op`, which arrived at `since`, was answered: with `errno` if it failed.
    pub fn answered(&self, op: Op, since: Instant, errno: Option<i32>) {
        let i = op as usize;
        self.fuse.requests[i].fetch_add(1, Ordering::Relaxed);
        if let Some(n) = errno {
            self.fuse.errors[i][errno_slot(n)].fetch_add(1, Ordering::Relaxed);
        }
        self.fuse.latency[i].observe(since.elapsed());
    }

    /// `op` on inode `ino` failed with `errno` once more: how many times so far (for the
    /// log: a cause that repeats on every read is logged at its 1st, 10th, 100th, ... time).
    pub fn failed(&self, op: Op, errno: i32, ino: u64) -> u64 {
        let key = (ino ^ (u64::from(errno as u32) << 40) ^ ((op as u64) << 56))
            .wrapping_mul(0x9e37_79b9_7f4a_7c15);
        self.causes[(key >> 54) as usize % CAUSES].fetch_add(1, Ordering::Relaxed) + 1
    }

    /// A member or file was opened, to be served by `path`.
    pub fn opened(&self, path: Path) {
        self.served.opens[path as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// `n` bytes were read through `path`.
    pub fn read(&self, path: Path, n: usize) {
        self.served.bytes[path as usize].fetch_add(n as u64, Ordering::Relaxed);
    }

    /// An HTTP request of `kind` was sent.
    pub fn remote_sent(&self) {
        self.remote.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    /// An HTTP request of `kind` got its headers (or failed before them) after `took`.
    pub fn remote_first_byte(&self, kind: Kind, took: Duration) {
        self.remote.first_byte[kind as usize].observe(took);
    }

    /// An HTTP request of `kind` ended with `status` after `took`, `bytes` of body received.
    pub fn remote_done(&self, kind: Kind, status: Status, took: Duration) {
        let r = &self.remote;
        r.in_flight.fetch_sub(1, Ordering::Relaxed);
        r.requests[kind as usize][status as usize].fetch_add(1, Ordering::Relaxed);
        r.duration[kind as usize].observe(took);
        if status.is_retried() {
            r.retries.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// `n` bytes of a response body arrived.
    pub fn remote_bytes(&self, n: usize) {
        self.remote.bytes.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// An archive of a source tree was opened.
    pub fn archive_opened(&self) {
        self.sources.archives_opened.fetch_add(1, Ordering::Relaxed);
    }

    /// `n` archives of source trees were closed to stay within `max_archives` or the
    /// descriptor limit.
    pub fn archives_closed(&self, n: u64) {
        self.sources.archives_closed.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts `n` more of `cause`; returns how many there have been.
    pub fn warned(&self, cause: Warning, n: u64) -> u64 {
        self.warnings[cause as usize].fetch_add(n, Ordering::Relaxed) + n
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_counts_its_operation_errno_and_latency() {
        let m = Metrics::new();
        let t = Instant::now();
        m.answered(Op::Read, t, None);
        m.answered(Op::Read, t, Some(libc::EIO));
        m.answered(Op::Lookup, t, Some(libc::ENOENT));
        m.answered(Op::Lookup, t, Some(libc::EXDEV));
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        assert_eq!(n(&m.fuse.requests[Op::Read as usize]), 2);
        assert_eq!(n(&m.fuse.requests[Op::Lookup as usize]), 2);
        assert_eq!(
            n(&m.fuse.errors[Op::Read as usize][errno_slot(libc::EIO)]),
            1
        );
        assert_eq!(n(&m.fuse.errors[Op::Lookup as usize][0]), 1);
        assert_eq!(n(&m.fuse.errors[Op::Lookup as usize][ERRNOS.len()]), 1);
        assert_eq!(m.fuse.latency[Op::Read as usize].count(), 2);
        assert_eq!(m.fuse.latency[Op::Open as usize].count(), 0);
    }

    #[test]
    fn served_bytes_and_opens_by_path() {
        let m = Metrics::new();
        m.opened(Path::Passthrough);
        m.read(Path::Archive, 4096);
        m.read(Path::Archive, 10);
        m.read(Path::Cache, 7);
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        assert_eq!(n(&m.served.bytes[Path::Archive as usize]), 4106);
        assert_eq!(n(&m.served.bytes[Path::Cache as usize]), 7);
        assert_eq!(n(&m.served.opens[Path::Passthrough as usize]), 1);
        assert_eq!(n(&m.served.opens[Path::Archive as usize]), 0);
    }

    #[test]
    fn remote_requests_by_kind_and_status_count_retries_and_in_flight() {
        let m = Metrics::new();
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        m.remote_sent();
        m.remote_sent();
        assert_eq!(m.remote.in_flight.load(Ordering::Relaxed), 2);
        m.remote_first_byte(Kind::Get, Duration::from_millis(25));
        m.remote_bytes(1 << 20);
        m.remote_done(Kind::Get, Status::of_code(206), Duration::from_millis(45));
        m.remote_done(Kind::Get, Status::of_code(503), Duration::from_millis(26));
        assert_eq!(m.remote.in_flight.load(Ordering::Relaxed), 0);
        assert_eq!(n(&m.remote.requests[0][Status::Ok as usize]), 1);
        assert_eq!(n(&m.remote.requests[0][Status::Throttled as usize]), 1);
        assert_eq!(n(&m.remote.retries), 1);
        assert_eq!(n(&m.remote.bytes), 1 << 20);
        assert_eq!(m.remote.duration[0].count(), 2);
        assert_eq!(m.remote.first_byte[0].count(), 1);
        assert_eq!(Status::of_code(404), Status::NotFound);
        assert_eq!(Status::of_code(412), Status::Changed);
        assert_eq!(Status::of_code(500), Status::ServerError);
        assert_eq!(Status::of_code(403), Status::ClientError);
    }

    #[test]
    fn a_repeated_warning_is_logged_at_powers_of_ten() {
        let m = Metrics::new();
        let logged: Vec<u64> = (0..1000)
            .map(|_| m.warned(Warning::SpanFailed, 1))
            .filter(|n| often(*n))
            .collect();
        assert_eq!(logged, [1, 10, 100, 1000]);
        assert_eq!(m.warned(Warning::OddNames, 222), 222);
        let failures: Vec<u64> = (0..3).map(|_| m.failed(Op::Read, libc::EIO, 7)).collect();
        assert_eq!(failures, [1, 2, 3]);
        // Another inode, errno or operation is another cause.
        assert_eq!(m.failed(Op::Read, libc::EIO, 8), 1);
        assert_eq!(m.failed(Op::Read, libc::ESTALE, 7), 1);
        assert_eq!(m.failed(Op::Open, libc::EIO, 7), 1);
    }

    #[test]
    fn errnos_are_named() {
        assert_eq!(errno_name(libc::ENOENT), "ENOENT");
        assert_eq!(errno_name(libc::ESTALE), "ESTALE");
        assert_eq!(errno_name(libc::EXDEV), format!("errno {}", libc::EXDEV));
    }
}
