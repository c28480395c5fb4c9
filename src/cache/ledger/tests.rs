//! The books balance after every change (each method checks it in debug builds, and these
//! tests also compare `used` with what they put in), and evictions take what the module docs
//! say, in that order.

use super::*;
use crate::bytes::SetId;

fn ledger(budget: u64) -> Ledger {
    Ledger::new(budget, Arc::new(Stats::default()))
}

fn key(number: usize, size: u64) -> FileKey {
    FileKey {
        number,
        size,
        crc32: 0,
    }
}

fn balanced(l: &Ledger) {
    assert_eq!(l.used(), l.counted());
}

#[test]
fn a_charge_is_pending_until_filed_or_refunded() {
    let mut l = ledger(100);
    let _ = l.charge(10);
    assert_eq!(l.used(), 10);
    balanced(&l);
    let _ = l.file_span((1, 0), 0, 10);
    assert_eq!(l.used(), 10);
    balanced(&l);
    let _ = l.charge(5);
    l.refund(5);
    assert_eq!(l.used(), 10);
    balanced(&l);
}

#[test]
fn kept_files_go_first_then_spans_then_blocks() {
    let stats = Arc::new(Stats::default());
    let mut l = Ledger::new(100, stats.clone());
    let set = SetId {
        archive_id: 7,
        serial: 1,
    };
    let _ = l.add_block_set(set, std::sync::Weak::new(), &[(0, 30)]);
    let _ = l.charge(30);
    let _ = l.file_span((1, 0), 3, 30);
    l.keep_found((2, 4), key(4, 30));
    balanced(&l);
    assert_eq!(l.used(), 90);
    // 20 more: the kept file goes (it is first in the order), nothing else.
    let _ = l.charge(20);
    balanced(&l);
    assert_eq!(l.kept_size((2, 4)), None);
    assert_eq!(l.used(), 80);
    assert_eq!(stats.evicted.load(Ordering::Relaxed), 1);
    // 40 more: the span goes (30 + 20 pending + 40 fit again), the block stays.
    let _ = l.charge(40);
    balanced(&l);
    assert_eq!(stats.evicted_spans.load(Ordering::Relaxed), 1);
    assert_eq!(l.used(), 90);
    // 30 more: the block goes, and then only pending bytes are left.
    let _ = l.charge(30);
    balanced(&l);
    assert_eq!(l.used(), 90);
    assert_eq!(stats.evicted_bytes.load(Ordering::Relaxed), 90);
}

#[test]
fn blocks_are_filed_refunded_and_forgotten_by_set() {
    let mut l = ledger(1000);
    let old = SetId {
        archive_id: 3,
        serial: 1,
    };
    let new = SetId {
        archive_id: 3,
        serial: 2,
    };
    let _ = l.add_block_set(old, std::sync::Weak::new(), &[]);
    let _ = l.charge(30);
    let _ = l.file_blocks(old, &[(0, 10), (1, 10)], 10);
    balanced(&l);
    assert_eq!(l.used(), 20);
    // A set made since for the same archive keeps its place when the old one goes.
    let _ = l.add_block_set(new, std::sync::Weak::new(), &[(5, 7)]);
    l.forget_blocks(old, &[0, 1]);
    balanced(&l);
    assert_eq!(l.used(), 7);
    assert!(l.block_set(3).is_some());
    l.forget_blocks(new, &[5]);
    balanced(&l);
    assert_eq!(l.used(), 0);
    assert!(l.block_set(3).is_none());
}

#[test]
fn a_kept_file_taken_again_is_pending_until_refunded() {
    let mut l = ledger(100);
    l.keep_found((1, 2), key(2, 40));
    assert_eq!(l.take_kept((1, 2)).map(|k| k.size), Some(40));
    balanced(&l);
    assert_eq!(l.used(), 40);
    l.refund(40);
    balanced(&l);
    assert_eq!(l.used(), 0);
    assert!(l.take_kept((1, 2)).is_none());
}

#[test]
fn a_kept_file_some_process_maps_is_passed_over() {
    use crate::bytes::Identity;
    use rustix::fs::{FlockOperation, flock};
    let root = tempfile::tempdir().unwrap();
    let archive = root.path().join("a.npz");
    std::fs::write(&archive, b"x").unwrap();
    let identity = Identity {
        dev: 1,
        ino: 2,
        size: 1,
        mtime: 3,
        mtime_nsec: 4,
    };
    let versions = super::super::store::Versions::default();
    let store = Store::open(&root.path().join("cache"), &archive, identity, 9, &versions).unwrap();
    let mut l = ledger(100);
    let store = l.add_store(9, Arc::new(store));
    let (old, new) = (key(1, 40), key(2, 40));
    for k in [old, new] {
        std::fs::write(store.complete_path(k), vec![0u8; 40]).unwrap();
        l.keep_found((9, k.number), k);
    }
    // The least recently used one is mapped (a shared flock): the other one goes instead.
    let mapped = std::fs::File::open(store.complete_path(old)).unwrap();
    flock(&mapped, FlockOperation::LockShared).unwrap();
    let victims = l.charge(40);
    assert_eq!(victims.files, [store.complete_path(new)]);
    assert_eq!(l.kept_size((9, 1)), Some(40));
    balanced(&l);
    // Only the mapped one is left: it stays, over the budget rather than under a map.
    l.refund(40);
    let victims = l.charge(61);
    assert!(victims.files.is_empty());
    assert_eq!(l.kept_size((9, 1)), Some(40));
    l.refund(61);
    // Its map gone, it goes.
    drop(mapped);
    let victims = l.charge(61);
    assert_eq!(victims.files, [store.complete_path(old)]);
    balanced(&l);
}
