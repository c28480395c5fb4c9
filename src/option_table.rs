//! The `-o` options as one table, and the text `--help` shows after the flags: parsing
//! (`options.rs`), the man page (`manpage.rs`) and the README check (`tests/readme.rs`) all
//! read this table, so none of them can list an option the others do not.

use crate::error::EXIT_CODES;

/// One `-o` option: its name, the placeholder of its value (None for a flag), and what it
/// does.
pub struct OptionSpec {
    /// The option's name.
    pub name: &'static str,
    /// The placeholder of its value (`N`, `DIR`, ...), or None for a flag.
    pub value: Option<&'static str>,
    /// What it does, for `--help`, the man page and the README.
    pub help: &'static str,
}

impl OptionSpec {
    /// As `--help` shows it: `name` or `name=VALUE`.
    pub fn usage(&self) -> String {
        match self.value {
            Some(v) => format!("{}={v}", self.name),
            None => self.name.to_string(),
        }
    }
}

const fn flag(name: &'static str, help: &'static str) -> OptionSpec {
    OptionSpec {
        name,
        value: None,
        help,
    }
}

const fn valued(name: &'static str, value: &'static str, help: &'static str) -> OptionSpec {
    OptionSpec {
        name,
        value: Some(value),
        help,
    }
}

/// The `-o` options: the one table that parsing (which names exist, which take a value),
/// `--help`, the man page and the README check use. `apply` gives each its effect.
pub const MOUNT_OPTIONS: &[OptionSpec] = &[
    flag(
        "allow_other",
        "let other users read the mount (needs user_allow_other in /etc/fuse.conf when not \
         root)",
    ),
    flag("allow_root", "let root read the mount too"),
    flag(
        "auto_unmount",
        "unmount when the daemon dies (needs allow_other or allow_root)",
    ),
    valued(
        "uid",
        "N",
        "owner of every file (default: the mounting user for one archive, each source file's \
         owner for directory sources)",
    ),
    valued("gid", "N", "group of every file (default: as for uid)"),
    valued(
        "umask",
        "OCTAL",
        "permission bits removed from 0444 (files) and 0555 (directories), or from the \
         source's own bits",
    ),
    valued("threads", "N", "request threads, 1 to 64 (default 2)"),
    valued(
        "remote_timeout",
        "SECS",
        "for an s3:// or http(s):// source: how long one request may take; one that takes \
         longer, is throttled or fails is asked again (backoff with jitter) until twice this \
         has passed, so a read the server never answers fails with ETIMEDOUT after about \
         twice this (default 30)",
    ),
    valued(
        "remote_requests",
        "N",
        "for s3:// and http(s):// sources: readahead requests in flight at once, 1 to 1024 \
         (default 32: at 50 MB/s per connection, enough for a 10 Gbps link); a read's own \
         request never waits for them",
    ),
    valued(
        "metrics",
        "ADDR:PORT",
        "serve the mount's figures in the Prometheus text format at http://ADDR:PORT/metrics \
         (a port alone listens on 127.0.0.1; off by default; npzfs --stats needs no port)",
    ),
    valued(
        "max_archives",
        "N",
        "archives of directory sources held open at once (a descriptor and a mapping each), \
         least recently used closed first (default: a quarter of the open-file limit, 16 to \
         4096)",
    ),
    valued(
        "read_ahead_kb",
        "N",
        "kernel readahead set on the mount when root (default 1024; 0 leaves the kernel's \
         default)",
    ),
    valued(
        "fsname",
        "NAME",
        "source name shown in /proc/mounts (default: the source paths)",
    ),
    valued(
        "cache_dir",
        "DIR",
        "where compressed members are decoded to (default: the first of $CACHE_DIRECTORY, \
         $XDG_CACHE_HOME/npzfs, ~/.cache/npzfs and /var/tmp/npzfs-UID that can be used)",
    ),
    valued(
        "cache_size",
        "SIZE",
        "disk budget of that cache, with K, M, G or T (default 4G)",
    ),
    valued(
        "owner_pid",
        "PID",
        "unmount and exit when process PID exits, however it ends (the Python package ties \
         its mounts to its own process this way)",
    ),
    flag(
        "rmdir",
        "remove the mount point directory once unmounted (for temporary mount points)",
    ),
    flag(
        "materialize",
        "copy stored members into the cache the first time they are opened, and serve them by \
         FUSE passthrough once the copy is complete and checked: local-file speed for read and \
         mmap (root on Linux 6.9+; ignored with a log line elsewhere)",
    ),
    flag(
        "nopassthrough",
        "serve complete cache files through the daemon, not by FUSE passthrough (which npzfs \
         uses when root on Linux 6.9+)",
    ),
];

/// Flags of mount(8), fstab, systemd and FUSE that mean nothing to a read-only npzfs: accepted
/// and ignored (with `x-*`, `comment=` and `subtype=`).
pub const GENERIC_OPTIONS: &[&str] = &[
    "ro",
    "rw",
    "defaults",
    "auto",
    "noauto",
    "nofail",
    "_netdev",
    "user",
    "nouser",
    "users",
    "owner",
    "group",
    "dev",
    "nodev",
    "suid",
    "nosuid",
    "exec",
    "noexec",
    "atime",
    "noatime",
    "diratime",
    "nodiratime",
    "relatime",
    "norelatime",
    "strictatime",
    "lazytime",
    "nolazytime",
    "sync",
    "async",
    "dirsync",
    "silent",
    "loud",
    "nonempty",
    "default_permissions",
];

/// What `--help` and the man page say of [`GENERIC_OPTIONS`].
pub const GENERIC_HELP: &str =
    "accepted for mount(8) and fstab; the mount is always read-only, nodev and nosuid";

/// The text after the flags in `--help`: the tables above, wrapped to 100 columns.
pub fn after_help() -> String {
    const INDENT: usize = 23;
    let mut out = String::from("Mount options (-o, comma separated, repeatable):\n");
    let generic = format!("{}, x-*, comment=...", GENERIC_OPTIONS.join(", "));
    let rows = MOUNT_OPTIONS
        .iter()
        .map(|o| (o.usage(), o.help))
        .chain([(generic, GENERIC_HELP)]);
    for (name, what) in rows {
        let mut lines = wrap(what, 100 - INDENT).into_iter();
        if name.len() + 2 < INDENT {
            let first = lines.next().unwrap_or_default();
            out.push_str(&format!("  {name:<w$}{first}\n", w = INDENT - 2));
        } else {
            for line in wrap(&name, 100 - 2) {
                out.push_str(&format!("  {line}\n"));
            }
        }
        for line in lines {
            out.push_str(&format!("{:INDENT$}{line}\n", ""));
        }
    }
    out.push_str("\nExit codes:\n");
    for (code, what) in EXIT_CODES {
        out.push_str(&format!("  {code}  {what}\n"));
    }
    out
}

/// Splits `text` into lines of at most `width` characters at spaces.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.len() + 1 + word.len() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    lines.push(line);
    lines
}
