//! The FUSE ceiling: a minimal read-only filesystem serving one byte range of a file as
//! `/x`, with the settings npzfs uses (mmap slice replies, KEEP_CACHE, long TTLs, 2 threads
//! with clone_fd, read_ahead_kb=1024) and nothing else. npzfs is measured against it.
//!
//!     cargo run --release --example ceiling -- FILE OFFSET LEN MOUNTPOINT
//!
//! Mounts, prints "ready", and unmounts when its standard input closes.

use std::ffi::OsStr;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, UNIX_EPOCH};

use fuser::{
    Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    LockOwner, MountOption, OpenFlags, ReplyAttr, ReplyData, ReplyEntry, ReplyOpen, Request,
};

const TTL: Duration = Duration::from_secs(3600);

struct Ceiling {
    map: memmap2::Mmap,
    offset: usize,
    len: u64,
}

fn attr(ino: u64, len: u64) -> FileAttr {
    let dir = ino == 1;
    FileAttr {
        ino: INodeNo(ino),
        size: if dir { 0 } else { len },
        blocks: len.div_ceil(512),
        atime: UNIX_EPOCH,
        mtime: UNIX_EPOCH,
        ctime: UNIX_EPOCH,
        crtime: UNIX_EPOCH,
        kind: if dir {
            FileType::Directory
        } else {
            FileType::RegularFile
        },
        perm: if dir { 0o555 } else { 0o444 },
        nlink: 1,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 1 << 20,
        flags: 0,
    }
}

impl Filesystem for Ceiling {
    fn lookup(&self, _: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        if parent.0 == 1 && name == "x" {
            reply.entry(&TTL, &attr(2, self.len), Generation(0));
        } else {
            reply.error(Errno::ENOENT);
        }
    }

    fn getattr(&self, _: &Request, ino: INodeNo, _: Option<FileHandle>, reply: ReplyAttr) {
        reply.attr(&TTL, &attr(ino.0, self.len));
    }

    fn open(&self, _: &Request, _: INodeNo, _: OpenFlags, reply: ReplyOpen) {
        reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE);
    }

    fn read(
        &self,
        _: &Request,
        _: INodeNo,
        _: FileHandle,
        offset: u64,
        size: u32,
        _: OpenFlags,
        _: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let start = self.offset + offset.min(self.len) as usize;
        let end = self.offset + (offset + u64::from(size)).min(self.len) as usize;
        reply.data(&self.map[start..end]);
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a: Vec<String> = std::env::args().collect();
    let [_, file, offset, len, mnt] = &a[..] else {
        return Err("usage: ceiling FILE OFFSET LEN MOUNTPOINT".into());
    };
    let file = File::open(file)?;
    // SAFETY: read-only benchmark mapping of a file nobody changes during the run.
    let map = unsafe { memmap2::Mmap::map(&file)? };
    let fs = Ceiling {
        map,
        offset: offset.parse()?,
        len: len.parse()?,
    };
    let mut config = Config::default();
    config.mount_options = vec![MountOption::RO, MountOption::FSName("ceiling".into())];
    config.n_threads = Some(2);
    config.clone_fd = true;
    let session = fuser::Session::new(fs, mnt, &config)?.spawn()?;
    let dev = std::fs::metadata(mnt)?.dev();
    let bdi = format!(
        "/sys/class/bdi/{}:{}/read_ahead_kb",
        libc::major(dev),
        libc::minor(dev)
    );
    let _ = std::fs::write(bdi, "1024");
    println!("ready");
    std::io::Read::read_to_end(&mut std::io::stdin(), &mut Vec::new())?;
    session.umount_and_join()?;
    Ok(())
}
