//! `impl fuser::Filesystem`: each operation calls one core function and replies; every answer
//! is counted here (operation, errno, latency: `metrics`), and a failure is logged once, here,
//! with the operation, the inode and the errno (ENOENT and friends at debug, everything else
//! at warn the 1st, 10th, 100th, ... time). The core (`fs.rs`) owns the handles, passthrough
//! included; this file only turns its answers into fuser's replies. An operation whose answer
//! may wait on the network (an inode of a remote source) is answered from the slow lane
//! (`lane.rs`), never on the request thread.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use fuser::{
    BackingId, CopyFileRangeFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags,
    Generation, INodeNo, InitFlags, IoctlFlags, KernelConfig, LockOwner, OpenAccMode, OpenFlags,
    PollEvents, PollFlags, PollNotifier, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyIoctl, ReplyLseek, ReplyOpen,
    ReplyPoll, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use crate::error::Error;
use crate::fs::{Asks, Attr, BLOCK_SIZE, Kind, NpzFs};
use crate::handles::{Opened, Served};
use crate::lane::Lane;
use crate::metrics::{METRICS, Op, errno_name, often};

type Core = NpzFs<BackingId>;

/// The FUSE face of [`NpzFs`].
pub struct Fuse {
    fs: Arc<Core>,
    /// Whether to ask the kernel for passthrough (the `nopassthrough` option turns it off).
    passthrough: bool,
    lane: Lane,
}

impl Fuse {
    /// Wraps the core for `fuser`.
    pub fn new(fs: Arc<NpzFs<BackingId>>, passthrough: bool) -> Fuse {
        Fuse {
            fs,
            passthrough,
            lane: Lane::default(),
        }
    }

    /// Runs `op` (which answers the kernel) on the slow lane when answering `asks` about `ino`
    /// may wait on the network, else here.
    fn answer(&self, ino: u64, asks: Asks<'_>, op: impl FnOnce(&Core) + Send + 'static) {
        match self.fs.may_wait(ino, asks) {
            true => {
                let fs = self.fs.clone();
                self.lane.run(move || op(&fs));
            }
            false => op(&self.fs),
        }
    }
}

/// One request being answered: its operation and when it arrived, counted (with its errno
/// and latency) once it is answered, wherever that happens.
#[derive(Clone, Copy)]
struct Call {
    op: Op,
    since: Instant,
}

impl Call {
    fn new(op: Op) -> Call {
        Call {
            op,
            since: Instant::now(),
        }
    }

    /// Answered.
    fn ok(self) {
        METRICS.answered(self.op, self.since, None);
    }

    /// Refused with `errno`, which is the answer itself (EROFS to a write), not a failure
    /// worth a log line.
    fn refuse(self, errno: Errno) -> Errno {
        METRICS.answered(self.op, self.since, Some(errno.code()));
        errno
    }

    /// Failed with `err`: counted, logged with the operation, the inode and the errno, and
    /// its errno returned. ENOENT and friends go to debug; anything else to warn at the 1st,
    /// 10th, 100th, ... time this operation fails with this errno on this inode (the rest to
    /// debug), so a cause that repeats on every read stays a few lines, each with its count.
    fn fail(self, ino: u64, err: &Error) -> Errno {
        let errno = err.errno();
        METRICS.answered(self.op, self.since, Some(errno));
        let n = METRICS.failed(self.op, errno, ino);
        let (op, name) = (self.op.name(), errno_name(errno));
        match (err.is_expected(), often(n), n) {
            (false, true, 1) => log::warn!("{op} ino {ino}: {name}: {err}"),
            (false, true, n) => log::warn!("{op} ino {ino}: {name}: {err} ({n} times so far)"),
            _ => log::debug!("{op} ino {ino}: {name}: {err}"),
        }
        Errno::from_i32(errno)
    }
}

/// getxattr(2)/listxattr(2): a size of 0 asks for the length; a buffer too small is ERANGE.
fn xattr_reply(call: Call, bytes: Vec<u8>, size: u32, reply: ReplyXattr) {
    match u32::try_from(bytes.len()) {
        Ok(len) if size == 0 => reply.size(len),
        Ok(len) if len <= size => reply.data(&bytes),
        _ => return reply.error(call.refuse(Errno::from_i32(libc::ERANGE))),
    }
    call.ok();
}

/// An operation npzfs refuses (a write on a read-only mount, ioctl, ...): counted as `other`.
fn refused(errno: Errno) -> Errno {
    Call::new(Op::Other).refuse(errno)
}

fn file_attr(a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.blocks,
        atime: a.mtime,
        mtime: a.mtime,
        ctime: a.mtime,
        crtime: a.mtime,
        kind: file_type(a.kind),
        perm: a.perm,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: 0,
        blksize: BLOCK_SIZE,
        flags: 0,
    }
}

fn file_type(kind: Kind) -> FileType {
    match kind {
        Kind::Dir => FileType::Directory,
        Kind::File => FileType::RegularFile,
        Kind::Symlink => FileType::Symlink,
    }
}

/// Opens `ino` and replies: by passthrough to a complete cache file, or a handle of the
/// core's. Every open is NOFLUSH: nothing is ever written, so a close has nothing to flush,
/// and the kernel spares a round trip per close(2) (numpy's np.load closes a member two or
/// three times).
fn open(fs: &Core, call: Call, ino: INodeNo, write: bool, reply: ReplyOpen) {
    // KEEP_CACHE with passthrough makes the kernel fail the open (EIO); NOFLUSH is allowed.
    let flags = FopenFlags::FOPEN_NOFLUSH;
    match fs.open_with(ino.0, write, |file| reply.open_backing(file)) {
        Ok(Opened {
            fh,
            backing: Some(id),
            ..
        }) => {
            log::debug!("open ino {}: passthrough to its cache file", ino.0);
            reply.opened_passthrough(FileHandle(fh), flags, &id);
        }
        // A file of a source tree may change: its pages are dropped on open.
        Ok(opened) if opened.served == Served::Source => reply.opened(FileHandle(opened.fh), flags),
        // A member's open keeps the page cache across opens and processes; never
        // DIRECT_IO, which breaks shared mmap (the kernel then answers mmap with ENODEV).
        Ok(opened) => reply.opened(FileHandle(opened.fh), flags | FopenFlags::FOPEN_KEEP_CACHE),
        Err(e) => return reply.error(call.fail(ino.0, &e)),
    }
    call.ok();
}

impl Filesystem for Fuse {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // readdirplus answers `ls -l` without a lookup per entry; the flags are optional, so a
        // kernel without them just keeps plain readdir.
        let wanted = InitFlags::FUSE_DO_READDIRPLUS | InitFlags::FUSE_READDIRPLUS_AUTO;
        if let Err(missing) = config.add_capabilities(wanted) {
            log::debug!("kernel lacks {missing:?}");
        }
        // Passthrough of complete cache files: the cache lives on a local file system, so a
        // stack depth of 1 is enough (and what worked here).
        let passthrough = self.passthrough
            && config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
            && config.set_max_stack_depth(1).is_ok();
        if passthrough {
            self.fs.enable_passthrough();
        } else {
            self.fs.passthrough_unavailable();
        }
        Ok(())
    }

    fn destroy(&mut self) {
        if let Some(stats) = self.fs.cache_stats() {
            log::info!("{stats}");
        }
        self.fs.close();
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let call = Call::new(Op::Lookup);
        let name = name.as_bytes();
        let asks = Asks::Lookup(name);
        let name = name.to_vec();
        self.answer(parent.0, asks, move |fs| match fs.lookup(parent.0, &name) {
            Ok(a) => {
                reply.entry(&a.ttl, &file_attr(&a), Generation(0));
                call.ok();
            }
            Err(e) => reply.error(call.fail(parent.0, &e)),
        });
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let call = Call::new(Op::Getattr);
        self.answer(ino.0, Asks::Attr, move |fs| match fs.getattr(ino.0) {
            Ok(a) => {
                reply.attr(&a.ttl, &file_attr(&a));
                call.ok();
            }
            Err(e) => reply.error(call.fail(ino.0, &e)),
        });
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let (call, write) = (
            Call::new(Op::Open),
            !matches!(flags.acc_mode(), OpenAccMode::O_RDONLY),
        );
        self.answer(ino.0, Asks::Open, move |fs| {
            open(fs, call, ino, write, reply)
        });
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        // Stored bytes are a slice of the archive mapping that goes straight into the reply's
        // writev: the kernel copies it, so a truncated archive gives the reader EIO instead of
        // SIGBUS here. Compressed ranges may be answered later, from the cache's writer thread.
        let (call, ino) = (Call::new(Op::Read), ino.0);
        self.fs.read(
            fh.0,
            offset,
            size,
            Box::new(move |result| match result {
                Ok(bytes) => {
                    reply.data(bytes);
                    call.ok();
                }
                Err(e) => reply.error(call.fail(ino, &e)),
            }),
        );
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let call = Call::new(Op::Release);
        self.fs.release(fh.0);
        reply.ok();
        call.ok();
    }

    fn flush(&self, _: &Request, _: INodeNo, _: FileHandle, _: LockOwner, reply: ReplyEmpty) {
        let call = Call::new(Op::Flush);
        reply.ok();
        call.ok();
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let call = Call::new(Op::Opendir);
        self.answer(ino.0, Asks::Entries, move |fs| {
            match fs.opendir(ino.0) {
                // An archive's listing never changes: the kernel may keep it across opendirs.
                Ok((fh, true)) => reply.opened(
                    FileHandle(fh),
                    FopenFlags::FOPEN_KEEP_CACHE | FopenFlags::FOPEN_CACHE_DIR,
                ),
                Ok((fh, false)) => reply.opened(FileHandle(fh), FopenFlags::empty()),
                Err(e) => return reply.error(call.fail(ino.0, &e)),
            }
            call.ok();
        });
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let call = Call::new(Op::Readdir);
        self.answer(ino.0, Asks::Entries, move |fs| {
            let listed = fs.readdir(ino.0, fh.0, offset, &mut |e| {
                let name = OsStr::from_bytes(&e.name);
                reply.add(INodeNo(e.ino), e.next_offset, file_type(e.kind), name)
            });
            match listed {
                Ok(()) => {
                    reply.ok();
                    call.ok();
                }
                Err(e) => reply.error(call.fail(ino.0, &e)),
            }
        });
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let call = Call::new(Op::Readdirplus);
        self.answer(ino.0, Asks::EntriesPlus, move |fs| {
            let listed = fs.readdir(ino.0, fh.0, offset, &mut |e| {
                let Some(a) = e.attr.or_else(|| fs.getattr(e.ino).ok()) else {
                    return false;
                };
                let name = OsStr::from_bytes(&e.name);
                let attr = file_attr(&a);
                reply.add(
                    INodeNo(e.ino),
                    e.next_offset,
                    name,
                    &a.ttl,
                    &attr,
                    Generation(0),
                )
            });
            match listed {
                Ok(()) => {
                    reply.ok();
                    call.ok();
                }
                Err(e) => reply.error(call.fail(ino.0, &e)),
            }
        });
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        let call = Call::new(Op::Releasedir);
        self.fs.releasedir(fh.0);
        reply.ok();
        call.ok();
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let call = Call::new(Op::Readlink);
        match self.fs.readlink(ino.0) {
            Ok(target) => {
                reply.data(&target);
                call.ok();
            }
            Err(e) => reply.error(call.fail(ino.0, &e)),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let (call, s) = (Call::new(Op::Statfs), self.fs.statfs());
        reply.statfs(s.blocks, 0, 0, s.files, 0, BLOCK_SIZE, 255, BLOCK_SIZE);
        call.ok();
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let (call, name) = (Call::new(Op::Getxattr), name.as_bytes().to_vec());
        self.answer(ino.0, Asks::Xattr, move |fs| {
            match fs.getxattr(ino.0, &name) {
                Ok(value) => xattr_reply(call, value, size, reply),
                Err(e) => reply.error(call.fail(ino.0, &e)),
            }
        });
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let call = Call::new(Op::Listxattr);
        self.answer(ino.0, Asks::Xattr, move |fs| match fs.listxattr(ino.0) {
            Ok(names) => xattr_reply(call, names, size, reply),
            Err(e) => reply.error(call.fail(ino.0, &e)),
        });
    }

    fn ioctl(
        &self,
        _: &Request,
        _: INodeNo,
        _: FileHandle,
        _: IoctlFlags,
        _: u32,
        _: &[u8],
        _: u32,
        reply: ReplyIoctl,
    ) {
        reply.error(refused(Errno::from_i32(libc::ENOTTY)));
    }

    fn lseek(&self, _: &Request, _: INodeNo, _: FileHandle, _: i64, _: i32, reply: ReplyLseek) {
        // ENOSYS once makes the kernel use its generic lseek, exact for files without holes.
        reply.error(refused(Errno::ENOSYS));
    }

    fn poll(
        &self,
        _: &Request,
        _: INodeNo,
        _: FileHandle,
        _: PollNotifier,
        _: PollEvents,
        _: PollFlags,
        reply: ReplyPoll,
    ) {
        reply.error(refused(Errno::ENOSYS));
    }

    fn copy_file_range(
        &self,
        _: &Request,
        _: INodeNo,
        _: FileHandle,
        _: u64,
        _: INodeNo,
        _: FileHandle,
        _: u64,
        _: u64,
        _: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        // The destination is never on this read-only mount; ENOSYS lets the kernel fall back.
        reply.error(refused(Errno::ENOSYS));
    }

    // Everything below modifies the tree. The mount is MS_RDONLY, so the kernel answers EROFS
    // itself; these are the second line for a kernel that asks anyway.

    fn setattr(
        &self,
        _: &Request,
        _: INodeNo,
        _: Option<u32>,
        _: Option<u32>,
        _: Option<u32>,
        _: Option<u64>,
        _: Option<TimeOrNow>,
        _: Option<TimeOrNow>,
        _: Option<SystemTime>,
        _: Option<FileHandle>,
        _: Option<SystemTime>,
        _: Option<SystemTime>,
        _: Option<SystemTime>,
        _: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        reply.error(refused(Errno::EROFS));
    }

    fn write(
        &self,
        _: &Request,
        _: INodeNo,
        _: FileHandle,
        _: u64,
        _: &[u8],
        _: WriteFlags,
        _: OpenFlags,
        _: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        reply.error(refused(Errno::EROFS));
    }

    fn create(
        &self,
        _: &Request,
        _: INodeNo,
        _: &OsStr,
        _: u32,
        _: u32,
        _: i32,
        reply: ReplyCreate,
    ) {
        reply.error(refused(Errno::EROFS));
    }

    fn mknod(&self, _: &Request, _: INodeNo, _: &OsStr, _: u32, _: u32, _: u32, r: ReplyEntry) {
        r.error(refused(Errno::EROFS));
    }

    fn mkdir(&self, _: &Request, _: INodeNo, _: &OsStr, _: u32, _: u32, reply: ReplyEntry) {
        reply.error(refused(Errno::EROFS));
    }

    fn unlink(&self, _: &Request, _: INodeNo, _: &OsStr, reply: ReplyEmpty) {
        reply.error(refused(Errno::EROFS));
    }

    fn rmdir(&self, _: &Request, _: INodeNo, _: &OsStr, reply: ReplyEmpty) {
        reply.error(refused(Errno::EROFS));
    }

    fn symlink(&self, _: &Request, _: INodeNo, _: &OsStr, _: &Path, reply: ReplyEntry) {
        reply.error(refused(Errno::EROFS));
    }

    fn rename(
        &self,
        _: &Request,
        _: INodeNo,
        _: &OsStr,
        _: INodeNo,
        _: &OsStr,
        _: RenameFlags,
        reply: ReplyEmpty,
    ) {
        reply.error(refused(Errno::EROFS));
    }

    fn link(&self, _: &Request, _: INodeNo, _: INodeNo, _: &OsStr, reply: ReplyEntry) {
        reply.error(refused(Errno::EROFS));
    }

    fn setxattr(
        &self,
        _: &Request,
        _: INodeNo,
        _: &OsStr,
        _: &[u8],
        _: i32,
        _: u32,
        reply: ReplyEmpty,
    ) {
        reply.error(refused(Errno::EROFS));
    }

    fn removexattr(&self, _: &Request, _: INodeNo, _: &OsStr, reply: ReplyEmpty) {
        reply.error(refused(Errno::EROFS));
    }

    fn fallocate(
        &self,
        _: &Request,
        _: INodeNo,
        _: FileHandle,
        _: u64,
        _: u64,
        _: i32,
        reply: ReplyEmpty,
    ) {
        reply.error(refused(Errno::EROFS));
    }
}
