//! What the entries of the sources show: owner, group and permission bits from the source
//! (write bits removed; an archive's read bits give its directory search bits, and its
//! members inherit them), or from `uid=`, `gid=` and `umask=`. The kernel checks them for every
//! reader (`default_permissions`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::entity::Is;
use super::ino::Key;
use crate::attr::{Attr, Kind, LIVE, Shown};
use crate::source::Meta;
use crate::tree::Ino;

/// What the options say of owners and permissions.
#[derive(Clone, Copy, Debug, Default)]
pub struct Overrides {
    /// `uid=`: every node's owner.
    pub uid: Option<u32>,
    /// `gid=`: every node's group.
    pub gid: Option<u32>,
    /// `umask=`: bits removed from every node.
    pub umask: u16,
    /// The mounting user and group: the owner of the root over several sources.
    pub mounted_by: (u32, u32),
}

/// The root over several sources (or over a source that is gone): the mounting user's,
/// 0555.
pub fn top_attr(o: &Overrides, mounted_at: SystemTime) -> Attr {
    let (uid, gid) = o.mounted_by;
    Attr {
        ino: 1,
        kind: Kind::Dir,
        size: 0,
        blocks: 0,
        perm: 0o555 & !o.umask,
        nlink: 1,
        uid: o.uid.unwrap_or(uid),
        gid: o.gid.unwrap_or(gid),
        mtime: mounted_at,
        ttl: LIVE,
    }
}

/// What an archive's nodes show, from the archive's own attributes (`meta`).
pub fn shown(o: &Overrides, meta: Option<&Meta>) -> Shown {
    let (perm, uid, gid) = meta.map_or((0o444, o.mounted_by.0, o.mounted_by.1), |m| {
        (m.perm, m.uid, m.gid)
    });
    let read = perm & 0o444;
    Shown {
        uid: o.uid.unwrap_or(uid),
        gid: o.gid.unwrap_or(gid),
        file_perm: read & !o.umask,
        dir_perm: (read | read >> 2) & !o.umask,
    }
}

/// The attributes of entry `ino`, an `is` the source says `meta` of.
pub fn attr_of(o: &Overrides, ino: Ino, is: Is, meta: &Meta) -> Attr {
    let (kind, perm, size) = match is {
        Is::Top | Is::Dir => (Kind::Dir, meta.perm & 0o555 & !o.umask, 0),
        Is::File => (Kind::File, meta.perm & 0o555 & !o.umask, meta.size),
        Is::Symlink => (Kind::Symlink, 0o777, meta.size),
        Is::Archive => (Kind::Dir, shown(o, Some(meta)).dir_perm, 0),
    };
    let mtime = u64::try_from(meta.mtime).map_or(UNIX_EPOCH, |s| {
        UNIX_EPOCH + Duration::new(s, meta.mtime_nsec.clamp(0, 999_999_999) as u32)
    });
    Attr {
        ino,
        kind,
        size,
        blocks: size.div_ceil(512),
        perm,
        nlink: 1,
        uid: o.uid.unwrap_or(meta.uid),
        gid: o.gid.unwrap_or(meta.gid),
        mtime,
        ttl: LIVE,
    }
}

/// What identifies an entry on disk (an archive by its version too).
pub fn key_of(meta: &Meta, archive: bool) -> Key {
    let version = archive.then_some((meta.size, meta.mtime, meta.mtime_nsec));
    Key::new(meta.dev, meta.ino, version)
}
