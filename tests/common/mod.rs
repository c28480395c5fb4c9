//! Shared test helpers: the archive builder (`zip`), the core fixture (`fs`), real mounts
//! (`mount`), and what a cache directory holds.
#![allow(dead_code)]

pub mod fs;
pub mod mount;
pub mod zip;

#[allow(unused_imports)]
pub use fs::{cache_files, seek_files};
pub use zip::*;
