//! The immutable inode table: directories synthesised from member paths, files = members.
//!
//! Inode numbers are positions in a `Vec` plus one (the root is 1), assigned in central
//! directory order, so the same archive always mounts with the same numbers. Built once at
//! mount; lookups are a binary search over a directory's children sorted by name.

use std::hash::BuildHasher;

use hashbrown::HashTable;

use crate::error::{Error, Result};
use crate::zipfile::members::{Member, sanitise};

/// An inode number of the mounted tree.
pub type Ino = u64;

/// The root directory's inode number.
pub const ROOT: Ino = 1;

/// What a node is.
#[derive(Debug)]
pub enum NodeKind {
    /// A directory; `children` sorted by name, `subdirs` counts the directories among them.
    Dir { children: Box<[Ino]>, subdirs: u32 },
    /// A file serving `members[member]`.
    File { member: usize },
}

/// One entry of the mounted tree.
#[derive(Debug)]
pub struct Node {
    /// Its name within its parent (the root's is empty).
    pub name: Box<[u8]>,
    /// The parent directory (the root is its own parent).
    pub parent: Ino,
    /// Directory or file.
    pub kind: NodeKind,
}

/// The mounted tree of one archive.
#[derive(Debug)]
pub struct Tree {
    nodes: Vec<Node>,
}

/// Names the tree could not show as the archive gives them, counted by cause, for one log
/// line per archive (the name-by-name detail is at debug): an archive of hostile names, or a
/// directory of thousands of such shards, must not flood the journal.
#[derive(Debug, Default)]
pub struct Oddities {
    /// Members with no usable name: not shown.
    pub unnamed: Noted,
    /// Members whose path a later member has too: the last entry wins.
    pub duplicates: Noted,
    /// Files whose path a directory needs: shown as `name (N)`.
    pub clashes: Noted,
}

/// How many names had one oddity, and the first few of them.
#[derive(Debug, Default)]
pub struct Noted {
    pub count: usize,
    pub first: Vec<String>,
}

/// Names quoted per cause in the summary line.
const QUOTED: usize = 3;

impl Noted {
    fn add(&mut self, name: &[u8]) {
        self.count += 1;
        if self.first.len() < QUOTED {
            self.first
                .push(format!("{:?}", String::from_utf8_lossy(name)));
        }
    }
}

impl Oddities {
    /// How many names were not shown as given.
    pub fn count(&self) -> u64 {
        [&self.unnamed, &self.duplicates, &self.clashes]
            .iter()
            .map(|n| n.count as u64)
            .sum()
    }

    /// One line for all of them (None if there are none), e.g. `2 member names not shown as
    /// given: 1 without a usable name, not shown ("/"); 1 duplicated, the last entry wins
    /// ("a.npy")`.
    pub fn summary(&self) -> Option<String> {
        let causes = [
            (&self.unnamed, "without a usable name, not shown"),
            (
                &self.duplicates,
                "duplicated, the last entry wins as in Python's zipfile",
            ),
            (
                &self.clashes,
                "also a directory's path, the file shown as \"NAME (N)\"",
            ),
        ];
        let total: usize = causes.iter().map(|(n, _)| n.count).sum();
        if total == 0 {
            return None;
        }
        let parts: Vec<String> = causes
            .iter()
            .filter(|(n, _)| n.count > 0)
            .map(|(n, what)| {
                let more = if n.count > n.first.len() { ", ..." } else { "" };
                format!("{} {what} ({}{more})", n.count, n.first.join(", "))
            })
            .collect();
        Some(format!(
            "{total} member names not shown as given: {}",
            parts.join("; ")
        ))
    }
}

impl Tree {
    /// Builds the tree. Names are made safe by [`sanitise`]; clashes follow the README rule:
    /// for duplicate file paths the last entry wins (as in Python's `zipfile`); where a file
    /// and a directory share a path the directory keeps the name and the file is shown as
    /// `name (1)` (or the first free `name (N)`); a name with no usable component is skipped.
    /// Each of these is logged at debug and counted in the [`Oddities`] returned beside it.
    pub fn build(members: &[Member]) -> (Tree, Oddities) {
        // Room for every member and the root up front: growing a table of 10^6 inos rehashes
        // each key from its node (a cache miss apiece) about twenty times over.
        let mut b = Builder::default();
        b.nodes.reserve(members.len() + 1);
        let (nodes, hasher) = (&b.nodes, &b.hasher);
        b.by_name.reserve(members.len() + 1, |&i: &Ino| {
            let n = &nodes[(i - 1) as usize];
            key_hash(hasher, n.parent, &n.name)
        });
        b.nodes.push(Node {
            name: Box::default(),
            parent: ROOT,
            kind: dir(),
        });
        for (i, member) in members.iter().enumerate() {
            let comps = sanitise(&member.name);
            let Some((last, dirs)) = comps.split_last() else {
                log::debug!("member {:?} has no usable name: not shown", member.name);
                b.oddities.unnamed.add(member.name.as_bytes());
                continue;
            };
            let mut parent = ROOT;
            for comp in dirs {
                parent = b.ensure_dir(parent, comp);
            }
            if member.is_dir {
                b.ensure_dir(parent, last);
            } else {
                b.add_file(parent, last, i, members);
            }
        }
        b.finish()
    }

    /// The node with inode number `ino`.
    pub fn node(&self, ino: Ino) -> Result<&Node> {
        let i = usize::try_from(ino.wrapping_sub(1)).map_err(|_| Error::NotFound)?;
        self.nodes.get(i).ok_or(Error::NotFound)
    }

    /// The children of directory `ino`, sorted by name.
    pub fn children(&self, ino: Ino) -> Result<&[Ino]> {
        match &self.node(ino)?.kind {
            NodeKind::Dir { children, .. } => Ok(children),
            NodeKind::File { .. } => Err(Error::NotDir),
        }
    }

    /// The child of directory `parent` called `name`.
    pub fn lookup(&self, parent: Ino, name: &[u8]) -> Result<Ino> {
        let children = self.children(parent)?;
        let found = children.binary_search_by(|&c| match self.node(c) {
            Ok(node) => (*node.name).cmp(name),
            Err(_) => std::cmp::Ordering::Less,
        });
        found
            .ok()
            .and_then(|i| children.get(i).copied())
            .ok_or(Error::NotFound)
    }

    /// Number of nodes, the root included.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the tree is only its root.
    pub fn is_empty(&self) -> bool {
        self.nodes.len() <= 1
    }
}

fn dir() -> NodeKind {
    NodeKind::Dir {
        children: Box::default(),
        subdirs: 0,
    }
}

/// Builds the node table. Its inos come from `push`, so indexing `nodes` by `ino - 1` is in
/// range by construction; the builder runs before the mount exists.
///
/// Names are found through a hash table of inos keyed by (parent, name) as the nodes hold
/// them, so a lookup allocates nothing (10^6 members look up several components each). The
/// hasher is seeded per process: names come from whoever wrote the archive.
#[derive(Default)]
struct Builder {
    nodes: Vec<Node>,
    by_name: HashTable<Ino>,
    hasher: foldhash::quality::RandomState,
    oddities: Oddities,
}

/// The hash of a (parent, name) key.
fn key_hash(hasher: &foldhash::quality::RandomState, parent: Ino, name: &[u8]) -> u64 {
    hasher.hash_one((parent, name))
}

impl Builder {
    fn push(&mut self, parent: Ino, name: &[u8], kind: NodeKind) -> Ino {
        self.nodes.push(Node {
            name: name.into(),
            parent,
            kind,
        });
        let ino = self.nodes.len() as Ino;
        self.make_findable(ino);
        ino
    }

    /// Makes node `ino` findable under its parent and current name.
    fn make_findable(&mut self, ino: Ino) {
        let (nodes, hasher) = (&self.nodes, &self.hasher);
        let hash_of = |&i: &Ino| {
            let n = &nodes[(i - 1) as usize];
            key_hash(hasher, n.parent, &n.name)
        };
        self.by_name.insert_unique(hash_of(&ino), ino, hash_of);
    }

    fn find(&self, parent: Ino, name: &[u8]) -> Option<Ino> {
        let hash = key_hash(&self.hasher, parent, name);
        let nodes = &self.nodes;
        self.by_name
            .find(hash, |&i| {
                let n = &nodes[(i - 1) as usize];
                n.parent == parent && *n.name == *name
            })
            .copied()
    }

    fn node_mut(&mut self, ino: Ino) -> &mut Node {
        &mut self.nodes[(ino - 1) as usize]
    }

    fn ensure_dir(&mut self, parent: Ino, name: &[u8]) -> Ino {
        if let Some(ino) = self.find(parent, name) {
            if matches!(self.node_mut(ino).kind, NodeKind::Dir { .. }) {
                return ino;
            }
            // A file holds the name the directory needs: the directory wins.
            let aside = self.free_name(parent, name);
            let hash = key_hash(&self.hasher, parent, name);
            if let Ok(entry) = self.by_name.find_entry(hash, |&i| i == ino) {
                entry.remove();
            }
            self.node_mut(ino).name = aside;
            self.make_findable(ino);
        }
        self.push(parent, name, dir())
    }

    fn add_file(&mut self, parent: Ino, name: &[u8], member: usize, members: &[Member]) {
        let Some(ino) = self.find(parent, name) else {
            self.push(parent, name, NodeKind::File { member });
            return;
        };
        if let NodeKind::File { member: old } = &mut self.node_mut(ino).kind {
            let name = &members[*old].name;
            log::debug!(
                "duplicate member name {name:?}: the last entry wins, as in Python's zipfile"
            );
            *old = member;
            self.oddities.duplicates.add(name.as_bytes());
        } else {
            let aside = self.free_name(parent, name);
            self.push(parent, &aside, NodeKind::File { member });
        }
    }

    /// The first `name (N)` free in `parent`, for a file that clashes with a directory.
    fn free_name(&mut self, parent: Ino, name: &[u8]) -> Box<[u8]> {
        self.oddities.clashes.add(name);
        let base = String::from_utf8_lossy(name);
        let mut n = 1u64;
        loop {
            let candidate: Box<[u8]> = format!("{base} ({n})").into_bytes().into();
            if self.find(parent, &candidate).is_none() {
                log::debug!(
                    "{base:?} is both a file and a directory: the file is shown as {:?}",
                    String::from_utf8_lossy(&candidate)
                );
                return candidate;
            }
            n += 1;
        }
    }

    fn finish(mut self) -> (Tree, Oddities) {
        let mut children: Vec<Vec<Ino>> = (0..self.nodes.len()).map(|_| Vec::new()).collect();
        for (i, node) in self.nodes.iter().enumerate().skip(1) {
            children[(node.parent - 1) as usize].push(i as Ino + 1);
        }
        let nodes = &self.nodes;
        let name = |ino: &Ino| &nodes[(ino - 1) as usize].name;
        let is_dir = |ino: &&Ino| matches!(nodes[(**ino - 1) as usize].kind, NodeKind::Dir { .. });
        let lists: Vec<(Box<[Ino]>, u32)> = children
            .into_iter()
            .map(|mut list| {
                list.sort_unstable_by(|a, b| name(a).cmp(name(b)));
                let subdirs = list.iter().filter(is_dir).count() as u32;
                (list.into_boxed_slice(), subdirs)
            })
            .collect();
        for (node, (list, count)) in self.nodes.iter_mut().zip(lists) {
            if let NodeKind::Dir { children, subdirs } = &mut node.kind {
                *children = list;
                *subdirs = count;
            }
        }
        (Tree { nodes: self.nodes }, self.oddities)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_not_shown_as_given_are_counted_by_cause_with_the_first_few_quoted() {
        let mut names: Vec<String> = (0..40).map(|i| "/".repeat(i + 1)).collect();
        names.extend(
            ["a.npy", "a.npy", "a.npy", "clash", "clash/x.npy", "ok.npy"].map(String::from),
        );
        let members: Vec<Member> = names.iter().map(|n| Member::named(n)).collect();
        let (tree, odd) = Tree::build(&members);
        assert_eq!(odd.unnamed.count, 40);
        assert_eq!(odd.unnamed.first, [r#""/""#, r#""//""#, r#""///""#]);
        assert_eq!((odd.duplicates.count, odd.clashes.count), (2, 1));
        let line = odd.summary().unwrap();
        let want = [
            "43 member names not shown as given: 40 without a usable name, not shown",
            r#"("/", "//", "///", ...)"#,
            r#"2 duplicated, the last entry wins as in Python's zipfile ("a.npy", "a.npy")"#,
            r#"1 also a directory's path, the file shown as "NAME (N)" ("clash")"#,
        ];
        for part in want {
            assert!(line.contains(part), "{part} not in {line}");
        }
        assert!(tree.lookup(ROOT, b"clash (1)").is_ok());
        assert!(
            Tree::build(&[Member::named("ok.npy")])
                .1
                .summary()
                .is_none()
        );
    }
}
