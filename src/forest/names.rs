//! How a source directory's entries are named in the mount: the one rule for clashes.
//!
//! An archive `x.npz` (a regular file) is shown as the directory `x`, unless its directory
//! holds another entry literally called `x`: then the archive keeps its full name `x.npz`
//! (and is still a directory). Every other entry keeps its own name. Devices, FIFOs and
//! sockets are not shown. At the top level of several sources, each source is shown under
//! its base name (an archive's without `.npz`); a later source whose name is taken gets the
//! first free `name (N)`, the rule members of one archive follow.

use std::collections::HashSet;

use crate::source::{Meta, Type};

/// The suffix that makes a regular file an archive.
pub const SUFFIX: &[u8] = b".npz";

/// What an entry of a source directory is shown as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shows {
    /// An archive: a directory of its members.
    Archive,
    /// A directory, regular file or symlink, as itself.
    Plain,
    /// Not shown.
    Hidden,
}

/// What the entry `name` with `meta` is shown as.
pub fn shows(name: &[u8], meta: &Meta) -> Shows {
    match meta.kind {
        Type::File if stem(name).is_some() => Shows::Archive,
        Type::Other => Shows::Hidden,
        _ => Shows::Plain,
    }
}

/// What a lookup of `name` in a source directory asks the source for besides `name`, in one
/// walk: the archive `name.npz` it may stand for, and the short name (`x` for `x.npz`) an
/// archive `name` would be shown under.
pub fn looked_for(name: &[u8]) -> (Vec<u8>, &[u8]) {
    ([name, SUFFIX].concat(), stem(name).unwrap_or(name))
}

/// `x` for `x.npz` (never empty).
pub fn stem(name: &[u8]) -> Option<&[u8]> {
    name.strip_suffix(SUFFIX).filter(|s| !s.is_empty())
}

/// The shown names of a directory's entries, in the order given: `literal` holds every
/// entry's own name.
pub fn shown<'a>(entries: &[(&'a [u8], Shows)], literal: &HashSet<&[u8]>) -> Vec<Option<&'a [u8]>> {
    entries
        .iter()
        .map(|&(name, shows)| match shows {
            Shows::Hidden => None,
            Shows::Plain => Some(name),
            Shows::Archive => match stem(name) {
                Some(s) if !literal.contains(s) => Some(s),
                _ => Some(name),
            },
        })
        .collect()
}

/// The top-level names of several sources, from their base names in command-line order.
pub fn top_level(names: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut taken: HashSet<Vec<u8>> = HashSet::new();
    names
        .iter()
        .map(|name| {
            let mut candidate = name.clone();
            let mut n = 1;
            while taken.contains(&candidate) {
                candidate = format!("{} ({n})", String::from_utf8_lossy(name)).into_bytes();
                n += 1;
            }
            taken.insert(candidate.clone());
            candidate
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(kind: Type) -> Meta {
        Meta {
            dev: 1,
            ino: 2,
            kind,
            perm: 0o644,
            uid: 0,
            gid: 0,
            size: 0,
            mtime: 0,
            mtime_nsec: 0,
        }
    }

    #[test]
    fn an_archive_loses_its_suffix_unless_the_short_name_is_taken() {
        let names: [&[u8]; 6] = [b"a.npz", b"b.npz", b"b", b"c.npz.npz", b".npz", b"link.npz"];
        let kinds = [
            Type::File,
            Type::File,
            Type::Dir,
            Type::File,
            Type::File,
            Type::Symlink,
        ];
        let entries: Vec<_> = names
            .iter()
            .zip(kinds)
            .map(|(n, k)| (*n, shows(n, &meta(k))))
            .collect();
        let literal: HashSet<&[u8]> = names.iter().copied().collect();
        let shown = shown(&entries, &literal);
        let expected: [Option<&[u8]>; 6] = [
            Some(b"a"),
            Some(b"b.npz"),
            Some(b"b"),
            Some(b"c.npz"),
            Some(b".npz"),
            Some(b"link.npz"),
        ];
        assert_eq!(shown, expected);
        assert_eq!(entries[5].1, Shows::Plain, "a symlink is never an archive");
        assert_eq!(shows(b"fifo", &meta(Type::Other)), Shows::Hidden);
    }

    #[test]
    fn sources_with_one_name_are_numbered_in_command_line_order() {
        let names = vec![b"x".to_vec(), b"y".to_vec(), b"x".to_vec(), b"x".to_vec()];
        let got = top_level(&names);
        assert_eq!(
            got,
            vec![
                b"x".to_vec(),
                b"y".to_vec(),
                b"x (1)".to_vec(),
                b"x (2)".to_vec()
            ]
        );
    }
}
