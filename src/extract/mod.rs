//! `npzfs extract ARCHIVE [MEMBER...] [--all] -o PATH`: members written as files without a
//! mount, for other languages and shell scripts (and, with `--into-cache`, decoded into the
//! cache for the Python package where FUSE cannot be had).
//!
//! * [`args`]: its command line.
//! * [`run`]: the archive served to ourselves, members read, checked and renamed into place.

pub mod args;
pub mod run;

pub use args::{Request, Target, parse};
pub use run::run;
