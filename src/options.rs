//! The command line and `-o` mount options, in mount(8) conventions.
//!
//! `mount -t fuse.npzfs ARCHIVE DIR -o OPTS` (and an fstab line) runs
//! `npzfs ARCHIVE DIR -o OPTS` through mount.fuse3, which also passes generic options such as
//! `rw`, `nofail` or `x-systemd.*`: those are accepted and ignored where they do not apply.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{ArgAction, CommandFactory, FromArgMatches, Parser};

use crate::cache::{CacheConfig, DEFAULT_CACHE_SIZE};
use crate::error::{Error, Result};
use crate::option_table::after_help;
pub use crate::option_table::{GENERIC_HELP, GENERIC_OPTIONS, MOUNT_OPTIONS, OptionSpec};
use crate::stats::endpoint;

/// Request threads when `threads=` is not given: two with `clone_fd` cut cold page-fault
/// latency from 48 to 18 us here (ARCHITECTURE.md).
pub const DEFAULT_THREADS: usize = 2;
/// Readahead for the mount's bdi when `read_ahead_kb=` is not given: +50% on cold reads and
/// mmap scans here against the kernel's 128 KiB; 4096 raised random-read p99 (ARCHITECTURE.md).
pub const DEFAULT_READ_AHEAD_KB: u32 = 1024;

/// `npzfs --print-man-page` prints the npzfs(1) man page (roff) and exits; `make install`
/// installs it from there. Undocumented in `--help`.
pub const MAN_PAGE_FLAG: &str = "--print-man-page";

#[derive(Parser, Debug)]
#[command(
    name = "npzfs",
    version,
    about = "Mount NumPy .npz archives read-only: each member X.npy becomes a regular, \
             mmappable file"
)]
struct Cli {
    /// SOURCE... MOUNTPOINT: the .npz archives and directories to mount, then the directory
    /// to mount them on. One archive is the mount's root; a directory is mirrored live, each
    /// .npz in its tree a folder of members; several sources sit side by side at the top. A
    /// SOURCE may be a URL: s3://BUCKET/KEY.npz, s3://BUCKET/PREFIX/ (a directory) or
    /// http(s)://HOST/PATH/x.npz.
    #[arg(value_name = "SOURCE", required = true, num_args = 1..)]
    paths: Vec<PathBuf>,
    /// Print what is in ARCHIVE instead of mounting it: per member its name, dtype, shape,
    /// compression method, size, compressed size and ratio (sizes in human units).
    #[arg(long, conflicts_with_all = ["options", "foreground", "stats"])]
    list: bool,
    /// Print what the mount at MOUNTPOINT has done and holds (cache, bytes read by path,
    /// remote requests and their latency, FUSE requests) instead of mounting: read from the
    /// mount itself, no port needed.
    #[arg(long, conflicts_with_all = ["options", "foreground"])]
    stats: bool,
    /// With --list: a JSON array of objects (name, dtype, shape, fortran_order, method, size,
    /// compressed_size, crc32); with --stats: every figure as JSON. For scripts.
    #[arg(long)]
    json: bool,
    /// Mount options, comma separated; see below.
    #[arg(short = 'o', value_name = "OPTIONS")]
    options: Vec<String>,
    /// Stay in the foreground (systemd); otherwise return once the mount answers.
    #[arg(short = 'f', long)]
    foreground: bool,
    /// More log output: -v debug (decodes, evictions, seek indexes), -vv trace (also spans and
    /// every FUSE request); RUST_LOG overrides. The default logs the mount, the unmount with a
    /// cache summary, and every failure.
    #[arg(short = 'v', long, action = ArgAction::Count)]
    verbose: u8,
    /// Log errors only.
    #[arg(short = 'q', long, conflicts_with = "verbose")]
    quiet: bool,
}

/// The command line as clap sees it, `--help` text included: the man page renders this.
pub fn command() -> clap::Command {
    Cli::command()
        .override_usage(
            "npzfs [OPTIONS] SOURCE... MOUNTPOINT   (a SOURCE is an ARCHIVE, a directory or a URL)\n       \
             npzfs --list [--json] ARCHIVE\n       \
             npzfs --stats [--json] MOUNTPOINT\n       \
             npzfs extract ARCHIVE [MEMBER...] [--all] -o PATH   (npzfs extract --help)",
        )
        .after_help(after_help())
}

/// Everything the command line says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// What to mount: one archive, or directories and archives.
    pub sources: Vec<PathBuf>,
    /// Where to mount it.
    pub mountpoint: PathBuf,
    /// `-f`: stay in the foreground.
    pub foreground: bool,
    /// Log level from `-v`/`-q`.
    pub log_level: log::LevelFilter,
    /// `allow_other`.
    pub allow_other: bool,
    /// `allow_root`.
    pub allow_root: bool,
    /// `auto_unmount`.
    pub auto_unmount: bool,
    /// `uid=`.
    pub uid: Option<u32>,
    /// `gid=`.
    pub gid: Option<u32>,
    /// `umask=`.
    pub umask: u16,
    /// `threads=`.
    pub threads: usize,
    /// `read_ahead_kb=` (0: leave the kernel's default).
    pub read_ahead_kb: u32,
    /// `fsname=`.
    pub fsname: Option<String>,
    /// `cache_dir=` and `cache_size=`.
    pub cache: CacheConfig,
    /// False with `nopassthrough`.
    pub passthrough: bool,
    /// `owner_pid=`: the process whose exit ends the mount.
    pub owner_pid: Option<i32>,
    /// `rmdir`: remove the mount point once unmounted.
    pub rmdir: bool,
    /// `max_archives=`: archives of source trees held open at once (None: from the open-file
    /// limit).
    pub max_archives: Option<usize>,
    /// `remote_timeout=`: how long a remote request may take, and its retries as long again.
    pub remote_timeout: std::time::Duration,
    /// `remote_requests=`: readahead requests of remote sources in flight at once.
    pub remote_requests: usize,
    /// `metrics=`: where to serve the Prometheus text (None: nowhere).
    pub metrics: Option<std::net::SocketAddr>,
}

impl Options {
    /// The defaults for serving `sources` on `mountpoint` (`npzfs extract` serves them to
    /// itself, with no mount point).
    pub fn new(sources: Vec<PathBuf>, mountpoint: PathBuf) -> Options {
        Options {
            sources,
            mountpoint,
            foreground: false,
            log_level: log::LevelFilter::Info,
            allow_other: false,
            allow_root: false,
            auto_unmount: false,
            uid: None,
            gid: None,
            umask: 0,
            threads: DEFAULT_THREADS,
            read_ahead_kb: DEFAULT_READ_AHEAD_KB,
            fsname: None,
            cache: CacheConfig::with_default_dirs(DEFAULT_CACHE_SIZE),
            passthrough: true,
            owner_pid: None,
            rmdir: false,
            max_archives: None,
            remote_timeout: crate::remote::DEFAULT_TIMEOUT,
            remote_requests: crate::remote::DEFAULT_REQUESTS,
            metrics: None,
        }
    }
}

/// The outcome of parsing: options, or text that clap already formatted (help, version,
/// usage errors) with the exit code it belongs to.
pub enum Parsed {
    /// Options to run with.
    Run(Box<Options>),
    /// Print this and exit.
    Exit(clap::Error),
    /// Print the man page and exit.
    ManPage,
    /// `--list [--json] ARCHIVE`: print the archive's members.
    List {
        /// The archive.
        archive: PathBuf,
        /// `--json`.
        json: bool,
    },
    /// `--stats [--json] MOUNTPOINT`: print the mount's figures.
    Stats {
        /// The mount point.
        mountpoint: PathBuf,
        /// `--json`.
        json: bool,
    },
}

/// Parses `args` (with the program name first).
pub fn parse<I, T>(args: I) -> Result<Parsed>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    // Not a clap flag: it would make the two paths optional in the usage line.
    if args.len() == 2 && args[1] == MAN_PAGE_FLAG {
        return Ok(Parsed::ManPage);
    }
    let mut cli = match command()
        .try_get_matches_from(args)
        .and_then(|m| Cli::from_arg_matches(&m))
    {
        Ok(cli) => cli,
        Err(e) => return Ok(Parsed::Exit(e)),
    };
    if cli.json && !cli.list && !cli.stats {
        return Err(Error::Usage("--json goes with --list or --stats".into()));
    }
    let mut paths = std::mem::take(&mut cli.paths);
    if cli.stats {
        return match <[PathBuf; 1]>::try_from(paths) {
            Ok([mountpoint]) => Ok(Parsed::Stats {
                mountpoint,
                json: cli.json,
            }),
            Err(_) => Err(Error::Usage("--stats takes one MOUNTPOINT".into())),
        };
    }
    if cli.list {
        return match <[PathBuf; 1]>::try_from(paths) {
            Ok([archive]) => Ok(Parsed::List {
                archive,
                json: cli.json,
            }),
            Err(_) => Err(Error::Usage("--list takes one ARCHIVE".into())),
        };
    }
    let (Some(mountpoint), false) = (paths.pop(), paths.is_empty()) else {
        return Err(Error::Usage(
            "missing MOUNTPOINT: npzfs [OPTIONS] SOURCE... MOUNTPOINT".into(),
        ));
    };
    let o = mount_options(&cli, paths, mountpoint)?;
    Ok(Parsed::Run(Box::new(o)))
}

/// The options of a mount of `sources` on `mountpoint`: defaults, then each `-o` option in
/// order, then the checks of options that go together.
fn mount_options(cli: &Cli, sources: Vec<PathBuf>, mountpoint: PathBuf) -> Result<Options> {
    let log_level = match (cli.quiet, cli.verbose) {
        (true, _) => log::LevelFilter::Error,
        (false, 0) => log::LevelFilter::Info,
        (false, 1) => log::LevelFilter::Debug,
        (false, _) => log::LevelFilter::Trace,
    };
    let mut o = Options {
        foreground: cli.foreground,
        log_level,
        ..Options::new(sources, mountpoint)
    };
    for opt in cli.options.iter().flat_map(|list| list.split(',')) {
        apply(&mut o, opt.trim())?;
    }
    if o.auto_unmount && !o.allow_other && !o.allow_root {
        return Err(Error::Usage(
            "option auto_unmount needs allow_other or allow_root as well".into(),
        ));
    }
    if o.allow_other && o.allow_root {
        return Err(Error::Usage(
            "options allow_other and allow_root exclude each other".into(),
        ));
    }
    Ok(o)
}

fn apply(o: &mut Options, opt: &str) -> Result<()> {
    let (key, value) = match opt.split_once('=') {
        Some((k, v)) => (k, Some(v)),
        None => (opt, None),
    };
    match (key, value) {
        ("", None) => {}
        ("allow_other", None) => o.allow_other = true,
        ("allow_root", None) => o.allow_root = true,
        ("auto_unmount", None) => o.auto_unmount = true,
        ("nopassthrough", None) => o.passthrough = false,
        ("materialize", None) => o.cache.materialize = true,
        ("rmdir", None) => o.rmdir = true,
        ("owner_pid", Some(v)) => {
            o.owner_pid = Some(number(key, v, 10, i32::MAX as u64)?.max(1) as i32)
        }
        ("uid", Some(v)) => o.uid = Some(number(key, v, 10, u64::from(u32::MAX))? as u32),
        ("gid", Some(v)) => o.gid = Some(number(key, v, 10, u64::from(u32::MAX))? as u32),
        ("umask", Some(v)) => o.umask = number(key, v, 8, 0o777)? as u16,
        ("max_archives", Some(v)) => {
            o.max_archives = Some(number(key, v, 10, 1 << 20)?.max(1) as usize)
        }
        ("remote_timeout", Some(v)) => {
            let secs = number(key, v, 10, 3600)?.max(1);
            o.remote_timeout = std::time::Duration::from_secs(secs);
        }
        ("remote_requests", Some(v)) => {
            o.remote_requests = number(key, v, 10, 1024)?.max(1) as usize
        }
        ("metrics", Some(v)) => {
            o.metrics = Some(
                endpoint::parse(v)
                    .map_err(|why| Error::Usage(format!("mount option 'metrics={v}': {why}")))?,
            )
        }
        ("threads", Some(v)) => o.threads = number(key, v, 10, 64)?.max(1) as usize,
        ("read_ahead_kb", Some(v)) => o.read_ahead_kb = number(key, v, 10, 1 << 20)? as u32,
        ("fsname", Some(v)) if !v.is_empty() => o.fsname = Some(v.to_string()),
        ("cache_dir", Some(v)) if !v.is_empty() => o.cache.set_dir(PathBuf::from(v)),
        ("cache_size", Some(v)) => o.cache.size = size(key, v)?,
        _ if is_generic(key, value) => log::debug!("ignoring mount option {opt}"),
        _ => {
            let spec = MOUNT_OPTIONS.iter().find(|o| o.name == key);
            let why = match (spec.map(|o| o.value), value) {
                (Some(None), Some(_)) => "takes no value",
                (Some(Some(_)), _) => "needs a value",
                _ => "is unknown",
            };
            return Err(Error::Usage(format!(
                "mount option '{opt}' {why} (see npzfs --help)"
            )));
        }
    }
    Ok(())
}

/// Options of mount(8), fstab, systemd and FUSE that have no effect on a read-only npzfs.
fn is_generic(key: &str, value: Option<&str>) -> bool {
    let flag = value.is_none() && GENERIC_OPTIONS.contains(&key);
    flag || key.starts_with("x-") || key == "comment" || key == "subtype"
}

/// A byte count with an optional binary suffix: `512`, `64K`, `20G`, `1.5T`, `4GiB`.
pub(crate) fn size(key: &str, value: &str) -> Result<u64> {
    let v = value.trim_end_matches(['B', 'b']).trim_end_matches('i');
    let (digits, shift) = match v.chars().last().map(|c| c.to_ascii_uppercase()) {
        Some('K') => (&v[..v.len() - 1], 10),
        Some('M') => (&v[..v.len() - 1], 20),
        Some('G') => (&v[..v.len() - 1], 30),
        Some('T') => (&v[..v.len() - 1], 40),
        _ => (v, 0),
    };
    match digits.parse::<f64>() {
        Ok(n) if n.is_finite() && n >= 0.0 && n * 2f64.powi(shift) < 2f64.powi(63) => {
            Ok((n * 2f64.powi(shift)) as u64)
        }
        _ => Err(Error::Usage(format!(
            "mount option '{key}={value}' needs a size such as 512M or 20G"
        ))),
    }
}

fn number(key: &str, value: &str, radix: u32, max: u64) -> Result<u64> {
    match u64::from_str_radix(value, radix) {
        Ok(n) if n <= max => Ok(n),
        _ => {
            let what = if radix == 8 {
                "an octal number"
            } else {
                "a number"
            };
            Err(Error::Usage(format!(
                "mount option '{key}={value}' needs {what} no larger than {}",
                if radix == 8 {
                    format!("{max:o}")
                } else {
                    max.to_string()
                }
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Options> {
        let mut all = vec!["npzfs", "a.npz", "/mnt"];
        all.extend_from_slice(args);
        match parse(all)? {
            Parsed::Run(o) => Ok(*o),
            Parsed::Exit(e) => panic!("clap exit: {e}"),
            Parsed::ManPage => panic!("man page"),
            Parsed::List { .. } => panic!("list"),
            Parsed::Stats { .. } => panic!("stats"),
        }
    }

    #[test]
    fn list_needs_no_mount_point_and_takes_json() {
        let list = |args: &[&str]| match parse(args.to_vec()) {
            Ok(Parsed::List { archive, json }) => Some((archive, json)),
            _ => None,
        };
        assert_eq!(
            list(&["npzfs", "--list", "a.npz"]),
            Some(("a.npz".into(), false))
        );
        assert_eq!(
            list(&["npzfs", "--list", "--json", "a.npz"]),
            Some(("a.npz".into(), true))
        );
        let json_alone = parse(vec!["npzfs", "--json", "a.npz", "/m"]);
        assert_eq!(json_alone.err().map(|e| e.exit_code()), Some(2));
        let two = parse(vec!["npzfs", "--list", "a.npz", "/m"]);
        assert_eq!(two.err().map(|e| e.exit_code()), Some(2));
        let alone = parse(vec!["npzfs", "a.npz"]);
        assert!(matches!(alone, Err(Error::Usage(m)) if m.contains("MOUNTPOINT")));
    }

    #[test]
    fn stats_takes_one_mount_point_and_json() {
        let stats = |args: &[&str]| match parse(args.to_vec()) {
            Ok(Parsed::Stats { mountpoint, json }) => Some((mountpoint, json)),
            _ => None,
        };
        assert_eq!(
            stats(&["npzfs", "--stats", "/m"]),
            Some(("/m".into(), false))
        );
        assert_eq!(
            stats(&["npzfs", "--stats", "--json", "/m"]),
            Some(("/m".into(), true))
        );
        let two = parse(vec!["npzfs", "--stats", "a.npz", "/m"]);
        assert_eq!(two.err().map(|e| e.exit_code()), Some(2));
    }

    #[test]
    fn metrics_is_an_address_on_the_loopback_unless_said() {
        let at = |v: &str| run(&["-o", &format!("metrics={v}")]).map(|o| o.metrics);
        assert_eq!(at("9477").unwrap().unwrap().to_string(), "127.0.0.1:9477");
        assert_eq!(at("0.0.0.0:80").unwrap().unwrap().to_string(), "0.0.0.0:80");
        assert_eq!(run(&[]).unwrap().metrics, None);
        let bad = at("nope").unwrap_err();
        assert_eq!(bad.exit_code(), 2);
        assert!(bad.to_string().contains("metrics=nope"), "{bad}");
    }

    #[test]
    fn defaults() {
        let o = run(&[]).unwrap();
        assert_eq!(o.threads, DEFAULT_THREADS);
        assert_eq!(o.read_ahead_kb, DEFAULT_READ_AHEAD_KB);
        assert!(!o.foreground && !o.allow_other && o.passthrough);
        assert_eq!(o.log_level, log::LevelFilter::Info);
        assert!(!run(&["-o", "nopassthrough"]).unwrap().passthrough);
        assert!(o.owner_pid.is_none() && !o.rmdir);
        let o = run(&["-o", "owner_pid=42,rmdir"]).unwrap();
        assert_eq!((o.owner_pid, o.rmdir), (Some(42), true));
        assert!(run(&["-o", "owner_pid=x"]).is_err());
        assert!(
            o.cache
                .fallbacks
                .ends_with(&[PathBuf::from(format!("/var/tmp/npzfs-{}", unsafe {
                    libc::getuid()
                }))])
                || o.cache.dir.starts_with("/var/tmp"),
            "the default chain ends in /var/tmp/npzfs-UID"
        );
    }

    #[test]
    fn comma_lists_and_repeats() {
        let o = run(&[
            "-o",
            "allow_other,uid=7,gid=8",
            "-o",
            "umask=022,threads=4",
            "-f",
        ])
        .unwrap();
        assert!(o.allow_other && o.foreground);
        assert_eq!(
            (o.uid, o.gid, o.umask, o.threads),
            (Some(7), Some(8), 0o22, 4)
        );
    }

    #[test]
    fn generic_mount_options_are_accepted() {
        let o = run(&[
            "-o",
            "ro,rw,nofail,_netdev,noauto,dev,suid,x-systemd.automount,defaults",
        ]);
        assert!(o.is_ok());
    }

    #[test]
    fn unknown_and_malformed_options_name_the_option() {
        for (opt, word) in [
            ("bogus", "'bogus' is unknown"),
            ("uid=abc", "'uid=abc' needs a number"),
            ("umask=999", "octal"),
            ("threads=1000", "no larger than 64"),
            ("allow_other=1", "takes no value"),
            ("uid", "needs a value"),
        ] {
            let err = run(&["-o", opt]).unwrap_err();
            assert_eq!(err.exit_code(), 2);
            assert!(err.to_string().contains(word), "{opt}: {err}");
        }
    }

    #[test]
    fn cache_options() {
        let o = run(&["-o", "cache_dir=/var/cache/x,cache_size=20G"]).unwrap();
        assert_eq!(o.cache.dir, PathBuf::from("/var/cache/x"));
        assert!(
            o.cache.fallbacks.is_empty(),
            "an explicit cache_dir has no fallback"
        );
        assert_eq!(o.cache.size, 20 << 30);
        for (text, bytes) in [
            ("512", 512),
            ("64k", 64 << 10),
            ("1.5M", 3 << 19),
            ("2GiB", 2 << 30),
        ] {
            assert_eq!(size("cache_size", text).unwrap(), bytes, "{text}");
        }
        for bad in ["", "G", "-1G", "12X", "1e300T"] {
            assert!(size("cache_size", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn every_option_in_the_table_is_parsed_as_the_table_says() {
        for o in MOUNT_OPTIONS {
            let text = match o.value {
                None => o.name.to_string(),
                Some(_) => format!("{}={}", o.name, sample(o.name)),
            };
            let opts = if o.name == "auto_unmount" {
                format!("{text},allow_root")
            } else {
                text.clone()
            };
            assert!(run(&["-o", &opts]).is_ok(), "{text}");
            let wrong = match o.value {
                None => format!("{}=1", o.name),
                Some(_) => o.name.to_string(),
            };
            let err = run(&["-o", &wrong]).unwrap_err().to_string();
            assert!(err.contains(&format!("'{wrong}'")), "{wrong}: {err}");
        }
    }

    /// A valid value for option `name`.
    fn sample(name: &str) -> &'static str {
        match name {
            "umask" => "022",
            "cache_size" => "1G",
            "owner_pid" => "1",
            "cache_dir" | "fsname" => "x",
            _ => "2",
        }
    }

    #[test]
    fn auto_unmount_needs_an_allow_option() {
        assert!(run(&["-o", "auto_unmount"]).is_err());
        assert!(run(&["-o", "auto_unmount,allow_root"]).is_ok());
    }

    #[test]
    fn verbosity() {
        assert_eq!(run(&["-v"]).unwrap().log_level, log::LevelFilter::Debug);
        assert_eq!(run(&["-vv"]).unwrap().log_level, log::LevelFilter::Trace);
        assert_eq!(run(&["-q"]).unwrap().log_level, log::LevelFilter::Error);
    }
}
