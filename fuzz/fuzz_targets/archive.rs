//! `cargo fuzz run archive`: see fuzz/README.md; the property is `harness::archive`.
#![no_main]

#[path = "../../tests/common/fs.rs"]
mod fs;
#[path = "../harness.rs"]
mod harness;
#[path = "../../tests/common/zip.rs"]
mod zip;

use zip::{Entry, build_zip};

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::archive(data));
