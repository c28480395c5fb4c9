//! `npzfs extract`: the archive served to ourselves (the filesystem core, no kernel), each
//! member read through it and written beside its destination under a temporary name, its
//! CRC-32 checked, then renamed into place; or, with `--into-cache`, decoded into the cache
//! and its complete file named.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::args::{Request, Target};
use crate::error::{Error, Result};
use crate::fs::{Kind, NpzFs};
use crate::mounted;
use crate::tree::{Ino, ROOT};

/// Bytes read from the core at a time.
const CHUNK: u32 = 1 << 20;

/// How long a complete decode may take to be published once its last byte is in (the CRC
/// check, the file's rename).
const PUBLISH_WITHIN: Duration = Duration::from_secs(60);

/// Runs `request`; what it made goes to `out` (one line per file, or the cache file's JSON).
/// A damaged member is the archive's fault: exit 4, as for an unreadable archive.
pub fn run(request: &Request, out: &mut impl Write) -> Result<()> {
    extract(request, out).map_err(|e| match e {
        Error::Corrupt { .. } => Error::ArchiveFormat {
            path: request.options.sources[0].clone(),
            cause: e.to_string(),
        },
        other => other,
    })
}

fn extract(request: &Request, out: &mut impl Write) -> Result<()> {
    let source = &request.options.sources[0];
    if source.is_dir() {
        return Err(Error::Usage(format!(
            "{} is a directory: npzfs extract takes one archive",
            source.display()
        )));
    }
    // One process decodes a member at a time: another one loading it waits here, and then
    // finds it complete when its cache is opened (which looks for complete files once).
    let decoding = match (&request.to, request.members.as_slice()) {
        (Target::Cache, [name]) => exclusive(&request.options.cache.dir, source, name)?,
        _ => None,
    };
    let mut options = request.options.clone();
    // Every archive gets its part of the cache: a stored member is copied there.
    options.cache.materialize = matches!(request.to, Target::Cache);
    let fs: NpzFs<fuser::BackingId> = mounted::prepare(&options, false)?.build()?;
    let members = match request.all {
        true => every_file(&fs, ROOT, "")?,
        false => request
            .members
            .iter()
            .map(|name| find(&fs, name))
            .collect::<Result<_>>()?,
    };
    let say = |out: &mut dyn Write, line: String| {
        writeln!(out, "{line}").map_err(|e| Error::io("write", "to standard output", e))
    };
    match &request.to {
        Target::Cache => {
            let (name, ino) = &members[0];
            // Held from before our own release of the member (which may evict) until the
            // process that maps the file holds its own.
            let (path, _held) = into_cache(&fs, name, *ino, request.options.cache.size)?;
            drop(decoding);
            let size = fs.getattr(*ino)?.size;
            fs.close();
            let json = serde_json::json!({"member": name, "path": path, "size": size});
            say(out, json.to_string())?;
            out.flush()
                .map_err(|e| Error::io("write", "to standard output", e))?;
            if request.hold {
                // Until the caller closes our standard input (it has its lock by then).
                let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
            }
            return Ok(());
        }
        Target::Path(to) => {
            let into_dir = members.len() > 1
                || request.all
                || to.is_dir()
                || to.as_os_str().to_string_lossy().ends_with('/');
            for (name, ino) in &members {
                let dest = match into_dir {
                    true => to.join(name),
                    false => to.clone(),
                };
                write_member(&fs, name, *ino, &dest)?;
                say(out, dest.display().to_string())?;
            }
        }
    }
    fs.close();
    Ok(())
}

/// Member `name` (with or without `.npy`): its path in the archive and its inode.
fn find(fs: &NpzFs<fuser::BackingId>, name: &str) -> Result<(String, Ino)> {
    let walk = |path: &str| -> Result<Ino> {
        let mut ino = ROOT;
        for part in path.split('/').filter(|p| !p.is_empty()) {
            ino = fs.lookup(ino, part.as_bytes())?.ino;
        }
        Ok(ino)
    };
    let with_npy = format!("{name}.npy");
    for candidate in [name, with_npy.as_str()] {
        match walk(candidate) {
            Ok(ino) if fs.getattr(ino)?.kind == Kind::File => {
                return Ok((candidate.trim_start_matches('/').to_string(), ino));
            }
            Ok(_) | Err(Error::NotFound | Error::NotDir) => {}
            Err(e) => return Err(e),
        }
    }
    Err(Error::Usage(format!(
        "no member {name} in the archive (npzfs --list ARCHIVE lists them)"
    )))
}

/// Every file below directory `ino` (whose path is `prefix`), depth first.
fn every_file(fs: &NpzFs<fuser::BackingId>, ino: Ino, prefix: &str) -> Result<Vec<(String, Ino)>> {
    let mut files = Vec::new();
    for (name, attr) in fs.list(ino)? {
        let path = format!("{prefix}{}", String::from_utf8_lossy(&name));
        match attr.kind {
            Kind::Dir => files.extend(every_file(fs, attr.ino, &format!("{path}/"))?),
            Kind::File => files.push((path, attr.ino)),
            Kind::Symlink => {}
        }
    }
    Ok(files)
}

/// Bytes `[offset, offset + size)` of handle `fh`, waiting for them.
fn read(fs: &NpzFs<fuser::BackingId>, fh: u64, offset: u64, size: u32) -> Result<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    fs.read(
        fh,
        offset,
        size,
        Box::new(move |got| {
            let _ = tx.send(got.map(<[u8]>::to_vec));
        }),
    );
    rx.recv().unwrap_or_else(|_| {
        Err(Error::Stopped {
            what: "a read".into(),
        })
    })
}

/// The member's CRC-32, as its central directory record states it.
fn declared_crc(fs: &NpzFs<fuser::BackingId>, ino: Ino) -> Result<u32> {
    let hex = fs.getxattr(ino, b"user.zip.crc32")?;
    u32::from_str_radix(&String::from_utf8_lossy(&hex), 16).map_err(|_| Error::NoAttr)
}

/// Writes member `name` (`ino`) to `dest`: under a temporary name beside it, checked, synced,
/// renamed. A failure leaves nothing behind.
fn write_member(fs: &NpzFs<fuser::BackingId>, name: &str, ino: Ino, dest: &Path) -> Result<()> {
    let dir = dest.parent().filter(|d| !d.as_os_str().is_empty());
    if let Some(dir) = dir {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io("create", dir.display().to_string(), e))?;
    }
    let file_name = dest
        .file_name()
        .map_or("member".into(), |n| n.to_string_lossy());
    let part = dest.with_file_name(format!(".{file_name}.npzfs-{}", std::process::id()));
    let written = copy_checked(fs, name, ino, &part).and_then(|()| {
        std::fs::rename(&part, dest).map_err(|e| Error::io("rename", part.display().to_string(), e))
    });
    if written.is_err() {
        let _ = std::fs::remove_file(&part);
    }
    written
}

fn copy_checked(fs: &NpzFs<fuser::BackingId>, name: &str, ino: Ino, part: &Path) -> Result<()> {
    let file =
        File::create(part).map_err(|e| Error::io("create", part.display().to_string(), e))?;
    write_checked(fs, name, ino, &file)?;
    file.sync_all()
        .map_err(|e| Error::io("sync", part.display().to_string(), e))
}

/// Member `name` (`ino`) written to `file` from its start, its CRC-32 checked.
fn write_checked(
    fs: &NpzFs<fuser::BackingId>,
    name: &str,
    ino: Ino,
    mut file: &File,
) -> Result<()> {
    let size = fs.getattr(ino)?.size;
    let crc = declared_crc(fs, ino)?;
    let fh = fs.open(ino, false)?;
    let mut hasher = crc32fast::Hasher::new();
    let mut at = 0;
    let copied = (|| {
        while at < size {
            let bytes = read(fs, fh, at, CHUNK)?;
            if bytes.is_empty() {
                break;
            }
            hasher.update(&bytes);
            file.write_all(&bytes)
                .map_err(|e| Error::io("write", format!("the copy of {name}"), e))?;
            at += bytes.len() as u64;
        }
        Ok(())
    })();
    fs.release(fh);
    copied?;
    match at == size && hasher.finalize() == crc {
        true => Ok(()),
        false => Err(Error::Corrupt {
            what: name.to_string(),
            cause: "CRC-32 mismatch (the archive is damaged)".into(),
        }),
    }
}

/// Decodes member `name` (`ino`) into the cache (a stored one: copies it) and returns its
/// complete, checked file, with a shared flock on it taken before the member is let go: no
/// evictor takes it while held.
fn into_cache(
    fs: &NpzFs<fuser::BackingId>,
    name: &str,
    ino: Ino,
    budget: u64,
) -> Result<(PathBuf, File)> {
    let size = fs.getattr(ino)?.size;
    if size > budget {
        return Err(Error::Usage(format!(
            "{name} ({size} bytes) is larger than the cache ({budget} bytes): raise cache_size"
        )));
    }
    if fs.getxattr(ino, b"user.zip.method")? == b"stored" {
        return fs.copy_into_cache(ino, |file| write_checked(fs, name, ino, file));
    }
    // Opened (pinned) first: a complete file found now stays until it is locked.
    let fh = fs.open(ino, false)?;
    // The last byte comes once the whole member is decoded (or its failure, with its cause);
    // the file is published complete once its CRC-32 matched. A member with a seek index
    // (decoded before, evicted since) is served span by span instead: it is complete once
    // every span is in, so every span is read.
    let sparse = fs.getxattr(ino, b"user.npzfs.state")? == b"sparse";
    let waited = match (size, sparse) {
        (0, _) => Ok(()),
        (n, false) => read(fs, fh, n - 1, 1).map(drop),
        (n, true) => (0..n)
            .step_by(CHUNK as usize)
            .try_for_each(|at| read(fs, fh, at, CHUNK).map(drop)),
    };
    let deadline = Instant::now() + PUBLISH_WITHIN;
    let complete = waited.and_then(|_| {
        loop {
            if let Some(path) = fs.cache_file(ino)? {
                break Ok(path);
            }
            // A CRC-32 mismatch fails the member, and every read of it says why.
            read(fs, fh, 0, 1)?;
            if Instant::now() > deadline {
                break Err(Error::Corrupt {
                    what: name.to_string(),
                    cause: "decoded, but not published in the cache".into(),
                });
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    });
    let locked = complete.and_then(|path| {
        let file =
            File::open(&path).map_err(|e| Error::io("open", path.display().to_string(), e))?;
        rustix::fs::flock(&file, rustix::fs::FlockOperation::LockShared)
            .map_err(|e| Error::io("lock", path.display().to_string(), e.into()))?;
        Ok((path, file))
    });
    fs.release(fh);
    locked
}

/// An exclusive flock on the lock file of member `name` of `source` in `cache_dir`, waited
/// for: held while the member is decoded into the cache. None where the directory cannot
/// hold one (the cache falls back to another directory then, and processes may decode side by
/// side: slower, never wrong).
fn exclusive(cache_dir: &Path, source: &Path, name: &str) -> Result<Option<File>> {
    use std::os::unix::fs::DirBuilderExt;
    let source = std::fs::canonicalize(source).unwrap_or_else(|_| source.to_path_buf());
    let key = format!("{}\0{}", source.display(), name.trim_end_matches(".npy"));
    // As the cache makes it: private to its user.
    let _ = std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(cache_dir);
    let path = cache_dir.join(format!(
        ".extract-{:016x}.lock",
        crate::remote::fnv(key.as_bytes())
    ));
    let Ok(file) = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
    else {
        return Ok(None);
    };
    rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)
        .map_err(|e| Error::io("lock", path.display().to_string(), e.into()))?;
    Ok(Some(file))
}
