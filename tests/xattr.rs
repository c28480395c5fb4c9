//! Member metadata as extended attributes through a real mount, at the level of the system
//! calls: getxattr's size probe and ERANGE as getxattr(2) describes them, ENODATA for an
//! unknown name, EROFS for setxattr and removexattr, listxattr's NUL-separated names, and a
//! deflated member's header read without starting its decode. (Every dtype against numpy and
//! zipfile: tests/python/test_metadata.py.)

mod common;

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::Path;

use common::fs::{OWNER, ino, mount_with_cache, stats};
use common::mount::{Mounted, fuse_or_skip, getxattr};
use common::{Entry, build_zip, compressible, write_zip};

/// A `.npy` file's bytes: numpy's version 1.0 header for `descr` and `shape`, then `data`.
fn npy(descr: &str, shape: &str, data: &[u8]) -> Vec<u8> {
    let mut text = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    while !(10 + text.len() + 1).is_multiple_of(64) {
        text.push(' ');
    }
    text.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(text.len() as u16).to_le_bytes());
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(data);
    out
}

#[test]
fn xattrs_follow_the_man_page() {
    if !fuse_or_skip("xattrs_follow_the_man_page") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("a.npz");
    let data = npy("<f4", "(300, 7)", &vec![7u8; 8400]);
    write_zip(&archive, b"", &[Entry::stored("d/w.npy", data.clone())]);
    let m = Mounted::background(&archive, &[]);
    let w = m.path("d/w.npy");
    // The size probe gives the length; a buffer that size gets the value; one byte less, ERANGE.
    let len = getxattr(&w, "user.npy.shape", 0).unwrap().len();
    assert_eq!(len, "[300,7]".len());
    assert_eq!(getxattr(&w, "user.npy.shape", len).unwrap(), b"[300,7]");
    assert_eq!(getxattr(&w, "user.npy.shape", len - 1), Err(libc::ERANGE));
    assert_eq!(getxattr(&w, "user.npy.dtype", 64).unwrap(), b"<f4");
    let crc = format!("{:08x}", crc32fast::hash(&data));
    assert_eq!(getxattr(&w, "user.zip.crc32", 64).unwrap(), crc.as_bytes());
    assert_eq!(getxattr(&w, "user.npzfs.state", 64).unwrap(), b"archive");
    assert_eq!(getxattr(&w, "user.nothing", 64), Err(libc::ENODATA));
    assert_eq!(
        getxattr(&m.path("d"), "user.zip.method", 64),
        Err(libc::ENODATA)
    );
    // listxattr: every name, each ending in NUL; a directory has none.
    let names = xattr_names(&w);
    assert_eq!(
        names,
        [
            "user.npy.dtype",
            "user.npy.shape",
            "user.npy.fortran_order",
            "user.zip.method",
            "user.zip.compressed_size",
            "user.zip.crc32",
            "user.npzfs.state"
        ]
    );
    assert!(xattr_names(&m.path("d")).is_empty());
    // Read-only, as any file of a read-only file system.
    let (p, n) = (
        CString::new(w.as_os_str().as_bytes()).unwrap(),
        CString::new("user.x").unwrap(),
    );
    // SAFETY: valid C strings and a one-byte value.
    let set = unsafe { libc::setxattr(p.as_ptr(), n.as_ptr(), b"1".as_ptr().cast(), 1, 0) };
    assert_eq!((set, errno()), (-1, libc::EROFS));
    let crc_name = CString::new("user.zip.crc32").unwrap();
    // SAFETY: valid C strings.
    let removed = unsafe { libc::removexattr(p.as_ptr(), crc_name.as_ptr()) };
    assert_eq!((removed, errno()), (-1, libc::EROFS));
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn xattr_names(path: &Path) -> Vec<String> {
    let p = CString::new(path.as_os_str().as_bytes()).unwrap();
    let mut buf = vec![0u8; 4096];
    // SAFETY: a valid C string and a 4 KiB buffer.
    let n = unsafe { libc::listxattr(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    assert!(n >= 0, "listxattr: {}", std::io::Error::last_os_error());
    buf.truncate(n as usize);
    assert!(
        buf.is_empty() || buf.ends_with(&[0]),
        "each name ends in NUL"
    );
    buf.split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

#[test]
fn a_deflated_header_is_read_without_decoding_the_member() {
    let body = compressible(3, 8 << 20);
    let data = npy("<i2", "(4194304,)", &body);
    let bytes = build_zip(b"", &[Entry::deflated("x.npy", data)]);
    let f = mount_with_cache(&bytes, OWNER, tempfile::tempdir().unwrap(), 1 << 30);
    let x = ino(&f.fs, "x.npy");
    assert_eq!(f.fs.getxattr(x, b"user.npy.dtype").unwrap(), b"<i2");
    assert_eq!(f.fs.getxattr(x, b"user.npy.shape").unwrap(), b"[4194304]");
    assert_eq!(f.fs.getxattr(x, b"user.npzfs.cached").unwrap(), b"0");
    assert_eq!(f.fs.getxattr(x, b"user.npzfs.state").unwrap(), b"archive");
    assert_eq!(f.fs.getxattr(x, b"user.zip.method").unwrap(), b"deflated");
    let s = stats(&f.fs);
    assert_eq!(
        (s.decoded, s.held.used),
        (0, 0),
        "no decode was started: {s}"
    );
    assert!(f.cache_files().is_empty(), "{:?}", f.cache_files());
}

#[test]
fn only_user_npy_names_read_the_member() {
    // `ls -l` asks every entry for security.selinux and system.posix_acl_*: those, and the ZIP
    // facts, must cost no read of the member. With the archive's bytes gone they still answer,
    // and no failed header read is remembered: once the bytes are back, the header is read.
    let data = npy("<f8", "(1000,)", &[1u8; 8000]);
    let bytes = build_zip(b"", &[Entry::stored("x.npy", data)]);
    let f = mount_with_cache(&bytes, OWNER, tempfile::tempdir().unwrap(), 1 << 20);
    let x = ino(&f.fs, "x.npy");
    let archive = || {
        std::fs::OpenOptions::new()
            .write(true)
            .open(f._file.path())
            .unwrap()
    };
    archive().set_len(0).unwrap();
    for name in ["security.selinux", "system.posix_acl_access", "user.other"] {
        assert_eq!(
            f.fs.getxattr(x, name.as_bytes()).unwrap_err().errno(),
            libc::ENODATA
        );
    }
    assert_eq!(f.fs.getxattr(x, b"user.zip.method").unwrap(), b"stored");
    archive().write_all_at(&bytes, 0).unwrap();
    assert_eq!(f.fs.getxattr(x, b"user.npy.dtype").unwrap(), b"<f8");
}
