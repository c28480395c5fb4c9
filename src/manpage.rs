//! The npzfs(1) man page, rendered from the same clap command and tables as `--help`, so the
//! two cannot disagree. `npzfs --print-man-page` prints it; `make install` installs it.

use std::io::{self, Write};

use clap_mangen::Man;
use clap_mangen::roff::{Roff, bold, italic, roman};

use crate::error::EXIT_CODES;
use crate::options::{self, GENERIC_HELP, GENERIC_OPTIONS, MOUNT_OPTIONS};

const DESCRIPTION: &str = "\
npzfs mounts a NumPy .npz archive (a ZIP file) read-only on a directory, in which each member \
X.npy is a regular file. np.load(path, mmap_mode='r'), mmap(2) or any other reader then maps \
it through the kernel, which numpy cannot do for members of a ZIP archive.";

const DESCRIPTION_MORE: &[&str] = &[
    "Stored members (np.savez) are served straight from the archive's bytes. Compressed \
     members (np.savez_compressed: deflate; also deflate64, bzip2, lzma, xz and zstd) are \
     decoded in the background into a bounded on-disk cache (cache_dir=, cache_size=) and \
     served while they decode; a reader waits only for the range it asks for. Every \
     decoded member is checked against its CRC-32; a corrupt one gives EIO, never wrong bytes.",
    "npzfs returns once the mount answers, leaving the daemon in the background; with -f it \
     stays in the foreground and, under systemd (Type=notify), sends READY=1 at that moment. \
     SIGTERM, SIGINT and SIGHUP unmount and exit; a mount still in use is detached and the \
     daemon exits when its last user leaves. Unmount with umount(8) or fusermount3 -u.",
    "A directory SOURCE is mirrored live: subdirectories are directories, each x.npz is a \
     directory x of its members (x.npz when an entry x already exists), other files appear as \
     themselves, symlinks as symlinks (never followed by the daemon). Archives are opened on \
     first use, at most max_archives at once, and share one cache; a shard added, removed or \
     renamed shows within about a second. Owners and permission bits follow the source \
     (write bits removed). Several SOURCEs sit side by side under their base names.",
    "A SOURCE may be remote, read by range with no local copy: s3://BUCKET/KEY.npz (S3 and \
     S3-compatible stores), s3://BUCKET/PREFIX/ (listed like a directory SOURCE: every .npz \
     below it a directory, other objects files) or http(s)://HOST/PATH/x.npz (any server that \
     honours Range). Bytes are fetched in 1 MiB blocks into the cache (cache_size= counts \
     them), sequential readers get readahead, and every request asks for the version (ETag) \
     seen first: an object replaced while mounted gives ESTALE, never a mix of versions. \
     Throttling and server errors are retried with backoff; a server that stops answering \
     gives ETIMEDOUT (EIO if it refuses connections) after about twice remote_timeout=. Failures at mount exit with code 9.",
    "mount(8) and fstab use it as file system type fuse.npzfs through mount.fuse3(8), which \
     must find npzfs in the PATH it gives helpers (/usr/local/bin and /usr/bin are in it).",
];

const ENVIRONMENT: &[(&str, &str)] = &[
    (
        "CACHE_DIRECTORY",
        "the first default cache_dir (systemd sets it from CacheDirectory=); when it cannot \
         be used, $XDG_CACHE_HOME/npzfs, ~/.cache/npzfs and /var/tmp/npzfs-UID are tried in turn",
    ),
    (
        "XDG_CACHE_HOME",
        "the default cache_dir is $XDG_CACHE_HOME/npzfs when CACHE_DIRECTORY is not set (or \
         cannot be used)",
    ),
    (
        "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN",
        "credentials for s3:// sources; without them, those of the profile in \
         ~/.aws/credentials (AWS_PROFILE, else default), then container and instance credentials",
    ),
    (
        "AWS_REGION, AWS_ENDPOINT_URL, AWS_ALLOW_HTTP",
        "the region, an S3-compatible store's endpoint, and whether it may be plain http \
         (true); region and endpoint_url are also read from ~/.aws/config",
    ),
    (
        "AWS_PROFILE, AWS_SHARED_CREDENTIALS_FILE, AWS_CONFIG_FILE",
        "which ~/.aws profile, and where its files are",
    ),
    (
        "RUST_LOG",
        "log filter (error, warn, info, debug, trace); overrides -v and -q",
    ),
    (
        "JOURNAL_STREAM",
        "set by systemd: when stderr is that stream, log lines carry syslog priority \
         prefixes (<3>, <4>, ...) so that journalctl -p filters them",
    ),
    (
        "NOTIFY_SOCKET",
        "set by systemd for Type=notify: READY=1 once the mount answers, STOPPING=1 when \
         unmounting",
    ),
];

/// Where an installed npzfs keeps its files: the Debian package's paths, then `make install`'s.
const FILES: &[(&str, &str)] = &[
    (
        "/etc/npzfs/INSTANCE.env",
        "ARCHIVE, OPTIONS and other variables of npzfs@INSTANCE.service, where INSTANCE is \
         the escaped mount point (systemd-escape --path /mnt/run42 prints mnt-run42)",
    ),
    (
        "/etc/npzfs/npzfs.env.example",
        "a commented example of such a file (the Debian package's; make install puts it in \
         /usr/local/share/doc/npzfs)",
    ),
    (
        "/lib/systemd/system/npzfs@.service",
        "the service template (make install: /usr/local/lib/systemd/system)",
    ),
    (
        "/var/cache/npzfs/INSTANCE",
        "the service's cache directory (its CacheDirectory=), kept across restarts",
    ),
    (
        "/usr/share/doc/npzfs",
        "the systemd guide (systemd.md), an example mount unit, and the licences of npzfs \
         and of every crate in the binary",
    ),
];

/// The extended attributes of a member file (`info.rs` writes them).
const XATTRS: &[(&str, &str)] = &[
    (
        "user.npy.dtype",
        "the .npy header's descr as numpy wrote it: <f4, |b1, or the list repr of a \
         structured dtype (valid .npy members only)",
    ),
    ("user.npy.shape", "the shape as a JSON array, [] for 0-d"),
    ("user.npy.fortran_order", "true or false"),
    (
        "user.zip.method",
        "stored, deflated, deflate64, bzip2, lzma, xz or zstd",
    ),
    ("user.zip.compressed_size", "bytes in the archive, decimal"),
    ("user.zip.crc32", "8 lowercase hex digits"),
    (
        "user.npzfs.cached",
        "the member's bytes now in the cache, decimal (compressed members, and stored ones \
         that -o materialize copies)",
    ),
    (
        "user.npzfs.state",
        "where reads of it are served from now: archive, decoding, copying, sparse, cached or \
         passthrough",
    ),
];

const EXAMPLES: &[(&str, &str)] = &[
    (
        "What is in an archive, without mounting it, and the same facts of a mounted member:",
        "npzfs --list data.npz\n\
         npzfs --list --json data.npz\n\
         getfattr -d -m - /mnt/data/weights.npy",
    ),
    (
        "Mount, use with numpy, unmount:",
        "npzfs data.npz /mnt/data\n\
         python3 -c \"import numpy as np; print(np.load('/mnt/data/x.npy', mmap_mode='r')[0])\"\n\
         fusermount3 -u /mnt/data",
    ),
    (
        "A dataset of shards, and a shard's member:",
        "npzfs /data/dataset /mnt/dataset\n\
         ls /mnt/dataset/train/shard_0000/\n\
         python3 -c \"import numpy as np; print(np.load('/mnt/dataset/train/shard_0000/x.npy', mmap_mode='r')[0])\"",
    ),
    (
        "An archive in object storage, a dataset under a prefix, and an archive behind HTTP \
         (credentials from AWS_* or ~/.aws):",
        "npzfs s3://bucket/run42.npz /mnt/run42\n\
         npzfs s3://bucket/datasets/imagenet-npz/ /mnt/in\n\
         npzfs https://example.org/data/weights.npz /mnt/w",
    ),
    (
        "What a mount has done and holds (cache, bytes by path, remote requests, FUSE \
         requests), from any shell; the same as JSON; and for Prometheus:",
        "npzfs --stats /mnt/data\n\
         npzfs --stats --json /mnt/data\n\
         npzfs data.npz /mnt/data -o metrics=127.0.0.1:9477",
    ),
    (
        "Members as .npy files without a mount (CRC-32 checked, renamed into place):",
        "npzfs extract data.npz weights -o weights.npy\n\
         npzfs extract s3://bucket/run42.npz --all -o outdir/",
    ),
    (
        "Through mount(8), and the same as an fstab line:",
        "mount -t fuse.npzfs /data/x.npz /mnt/x -o allow_other,cache_size=4G\n\
         /data/x.npz /mnt/x fuse.npzfs ro,allow_other,cache_size=4G,nofail 0 0",
    ),
    (
        "As a systemd service (archive and options in /etc/npzfs/mnt-run42.env):",
        "systemctl enable --now \"npzfs@$(systemd-escape --path /mnt/run42)\"",
    ),
];

/// Writes the man page in roff.
pub fn render(w: &mut dyn Write) -> io::Result<()> {
    // clap_mangen drops the value of a short-only option from the synopsis ("[-o ]").
    let cmd = options::command().long_about(DESCRIPTION).override_usage(
        "npzfs [-f] [-v|-q] [-o OPTION[,OPTION...]]... SOURCE... MOUNTPOINT\n\
             npzfs --list [--json] ARCHIVE",
    );
    let man = Man::new(cmd).manual("User Commands");
    man.render_title(w)?;
    man.render_name_section(w)?;
    man.render_synopsis_section(w)?;
    man.render_description_section(w)?;
    let mut roff = Roff::new();
    for paragraph in DESCRIPTION_MORE {
        roff.control("PP", []).text([roman(*paragraph)]);
    }
    roff.to_writer(w)?;
    man.render_options_section(w)?;

    let mut roff = Roff::new();
    roff.control("SH", ["MOUNT OPTIONS"]);
    roff.text([roman(
        "Given with -o, comma separated, repeatable; an unknown option is an error that names it.",
    )]);
    let generic = format!("{}, x-*, comment=...", GENERIC_OPTIONS.join(", "));
    tagged(
        &mut roff,
        MOUNT_OPTIONS
            .iter()
            .map(|o| (o.usage(), o.help))
            .chain([(generic, GENERIC_HELP)]),
    );
    roff.control("SH", ["EXIT STATUS"]);
    tagged(
        &mut roff,
        EXIT_CODES.iter().map(|(c, w)| (c.to_string(), *w)),
    );
    roff.control("PP", []).text([roman(
        "Every failure is one line on stderr naming the path and its cause, and leaves no \
         mount behind.",
    )]);
    roff.control("SH", ["EXTENDED ATTRIBUTES"]);
    roff.text([roman(
        "Every member file shows what npzfs knows of it without reading its data (a \
         compressed member's header is inflated from its first bytes only; nothing else is \
         decoded). Directories have none; an unknown name is ENODATA; setting or removing \
         one fails with EROFS. The mount's root has user.npzfs.stats: every figure of the \
         mount as JSON, what npzfs --stats prints.",
    )]);
    tagged(&mut roff, XATTRS.iter().map(|(n, w)| (n.to_string(), *w)));
    roff.control("SH", ["ENVIRONMENT"]);
    tagged(
        &mut roff,
        ENVIRONMENT.iter().map(|(n, w)| (n.to_string(), *w)),
    );
    roff.control("SH", ["FILES"]);
    tagged(&mut roff, FILES.iter().map(|(n, w)| (n.to_string(), *w)));
    roff.control("SH", ["EXAMPLES"]);
    for (what, commands) in EXAMPLES {
        roff.control("PP", []).text([roman(*what)]);
        roff.control("PP", [])
            .control("nf", [])
            .control("RS", ["4"]);
        for line in commands.lines() {
            roff.text([roman(line)]).control("br", []);
        }
        roff.control("RE", []).control("fi", []);
    }
    roff.control("SH", ["SEE ALSO"]);
    roff.text([
        italic("fusermount3"),
        roman("(1), "),
        italic("mount.fuse3"),
        roman("(8), "),
        italic("fstab"),
        roman("(5), "),
        italic("systemd.mount"),
        roman("(5), "),
        italic("systemd.exec"),
        roman("(5)"),
    ]);
    roff.to_writer(w)?;
    man.render_version_section(w)
}

/// A list of `.TP` paragraphs: each tag in bold, its text below.
fn tagged<'a>(roff: &mut Roff, items: impl Iterator<Item = (String, &'a str)>) {
    for (tag, what) in items {
        roff.control("TP", []).text([bold(tag)]).text([roman(what)]);
    }
}
