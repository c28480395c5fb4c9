//! `npzfs extract`'s command line: which archive, which members, where to.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{CommandFactory, FromArgMatches, Parser};

use crate::error::{Error, Result};
use crate::options::{Options, size};

#[derive(Parser, Debug)]
#[command(
    name = "npzfs extract",
    about = "Write members of an archive as files (.npy), without mounting it: each checked \
             against its CRC-32 and put in place by a rename, so a reader never sees half of one",
    after_help = "Examples:\n  \
        npzfs extract data.npz weights -o weights.npy\n  \
        npzfs extract s3://bucket/run42.npz --all -o outdir/\n\n\
        Exit codes are npzfs's (npzfs --help): 3 the archive cannot be opened, 4 it (or a \
        member) is not readable, 9 a remote source cannot be read, 2 bad usage (a member that \
        is not there, -o missing)."
)]
struct Cli {
    /// The archive: a path, s3://BUCKET/KEY.npz or http(s)://HOST/PATH/x.npz.
    #[arg(value_name = "ARCHIVE")]
    source: PathBuf,
    /// Members to write, with or without .npy (weights or weights.npy; sub/x for a member in a
    /// folder of the archive).
    #[arg(value_name = "MEMBER")]
    members: Vec<String>,
    /// Every member.
    #[arg(long, conflicts_with = "members")]
    all: bool,
    /// Where to: a file for one member, a directory (made if missing) for several, --all or
    /// a path that ends with /; each member keeps its name and folders in the archive there.
    #[arg(
        short = 'o',
        long = "output",
        value_name = "PATH",
        required_unless_present = "into_cache"
    )]
    output: Option<PathBuf>,
    /// Decode MEMBER into the decompression cache (the directory and budget a mount of it
    /// would use) and print its complete, checked cache file as JSON, for a process that maps
    /// it (the Python package without FUSE) and holds a shared flock on it while it does.
    #[arg(long, conflicts_with_all = ["output", "all"])]
    into_cache: bool,
    /// With --into-cache: keep a shared flock on the file until standard input closes, so
    /// that the process taking it over has its own lock before ours goes.
    #[arg(long, requires = "into_cache")]
    hold: bool,
    /// The cache directory (as -o cache_dir= of a mount).
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// The cache's budget (as -o cache_size= of a mount): 512M, 20G.
    #[arg(long, value_name = "SIZE")]
    cache_size: Option<String>,
}

/// What to extract, and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// The archive and how to serve it to ourselves (cache directory and budget).
    pub options: Options,
    /// Members named (empty with `all`).
    pub members: Vec<String>,
    /// `--all`.
    pub all: bool,
    /// `--hold`.
    pub hold: bool,
    /// Where to write.
    pub to: Target,
}

/// Where the members go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A file, or a directory.
    Path(PathBuf),
    /// The cache only (`--into-cache`).
    Cache,
}

/// The command line of `npzfs extract ...` (`args` without the program name and `extract`):
/// a request, or clap's own text to print (help, usage errors).
pub fn parse(args: Vec<OsString>) -> Result<std::result::Result<Request, clap::Error>> {
    let argv = std::iter::once(OsString::from("npzfs extract")).chain(args);
    let cli = match Cli::command()
        .try_get_matches_from(argv)
        .and_then(|m| Cli::from_arg_matches(&m))
    {
        Ok(cli) => cli,
        Err(e) => return Ok(Err(e)),
    };
    if !cli.all && cli.members.is_empty() {
        return Err(Error::Usage(
            "name the members to extract, or --all: npzfs extract ARCHIVE [MEMBER...] [--all] \
             -o PATH"
                .into(),
        ));
    }
    if cli.into_cache && cli.members.len() != 1 {
        return Err(Error::Usage("--into-cache takes one MEMBER".into()));
    }
    let mut options = Options::new(vec![cli.source], PathBuf::new());
    if let Some(dir) = cli.cache_dir {
        options.cache.set_dir(dir);
    }
    if let Some(v) = cli.cache_size {
        options.cache.size = size("cache_size", &v)?;
    }
    let to = match cli.output {
        Some(path) => Target::Path(path),
        None => Target::Cache,
    };
    Ok(Ok(Request {
        options,
        members: cli.members,
        all: cli.all,
        hold: cli.hold,
        to,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(args: &[&str]) -> Result<Request> {
        let args = args.iter().map(OsString::from).collect();
        parse(args).map(|r| r.unwrap_or_else(|e| panic!("clap: {e}")))
    }

    #[test]
    fn members_or_all_and_a_path() {
        let r = parsed(&["a.npz", "x", "y.npy", "-o", "out/"]).unwrap();
        assert_eq!(r.members, ["x", "y.npy"]);
        assert_eq!(r.to, Target::Path("out/".into()));
        assert_eq!(r.options.sources, [PathBuf::from("a.npz")]);
        let all = parsed(&["s3://b/k.npz", "--all", "-o", "d"]).unwrap();
        assert!(all.all && all.members.is_empty());
        let nothing = parsed(&["a.npz", "-o", "d"]).unwrap_err();
        assert_eq!(nothing.exit_code(), 2);
        let args = ["a.npz", "x"].iter().map(OsString::from).collect();
        assert!(parse(args).unwrap().is_err(), "-o is required");
    }

    #[test]
    fn into_cache_takes_one_member_and_the_cache_options() {
        let r = parsed(&[
            "a.npz",
            "x",
            "--into-cache",
            "--cache-dir",
            "/c",
            "--cache-size",
            "1G",
        ])
        .unwrap();
        assert_eq!(r.to, Target::Cache);
        assert_eq!(r.options.cache.dir, PathBuf::from("/c"));
        assert_eq!(r.options.cache.size, 1 << 30);
        let two = parsed(&["a.npz", "x", "y", "--into-cache"]).unwrap_err();
        assert_eq!(two.exit_code(), 2);
        let bad = parsed(&["a.npz", "x", "--into-cache", "--cache-size", "lots"]).unwrap_err();
        assert!(bad.to_string().contains("cache_size"), "{bad}");
    }
}
