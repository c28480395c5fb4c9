//! Every input kept under `fuzz/regressions/<target>/` (crashes the fuzzers found, and seeds
//! that reach deep paths) replayed through the fuzz targets' checks, so CI runs them without
//! a fuzzer.

#[path = "common/fs.rs"]
mod fs;
#[path = "../fuzz/harness.rs"]
mod harness;
#[path = "common/zip.rs"]
mod zip;

use zip::{Entry, build_zip};

fn replay(target: &str, check: fn(&[u8])) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/regressions")
        .join(target);
    let mut inputs: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    inputs.sort();
    assert!(!inputs.is_empty(), "no inputs under {}", dir.display());
    for path in inputs {
        eprintln!("{target}: {}", path.display());
        check(&std::fs::read(&path).unwrap());
    }
}

// One test, so that the checks' count of this process's threads (every decoder thread ends
// with its mount) sees no other test's threads.
#[test]
fn kept_inputs_pass_the_fuzz_checks() {
    replay("archive", harness::archive);
    replay("read_path", harness::read_path);
}
