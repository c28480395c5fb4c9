//! The slot's states and their transitions, without a kernel or a decoder: the first
//! pass's writer is played by the test.

use super::*;
use std::sync::mpsc;

type Answers = mpsc::Receiver<Result<Vec<u8>>>;

fn done() -> (ReadDone, Answers) {
    let (tx, rx) = mpsc::channel();
    let done: ReadDone = Box::new(move |r| tx.send(r.map(<[u8]>::to_vec)).unwrap());
    (done, rx)
}

const SIZE: u64 = 64 << 10;

fn bytes(offset: u64, end: u64) -> Vec<u8> {
    (offset..end).map(|i| (i % 253) as u8).collect()
}

/// A first pass over a member of SIZE bytes, with `window`.
fn first_pass(window: Option<u64>) -> (Slot, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let part = dir.path().join("x.part");
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&part)
        .unwrap();
    let key = FileKey {
        number: 0,
        crc32: 0,
        size: SIZE,
    };
    (
        Slot::first_pass((0, key), "x.npy".into(), file, part, window),
        dir,
    )
}

/// What the first pass's writer does for `[from, to)`.
fn write(slot: &Slot, from: u64, to: u64) {
    let chunk = bytes(from, to);
    slot.answer_from(from, &chunk);
    slot.file().write_all_at(&chunk, from).unwrap();
    slot.advance(to);
}

#[test]
fn reads_wait_for_the_first_pass_and_are_answered_as_it_advances() {
    let (slot, _dir) = first_pass(None);
    let (early, rx_early) = done();
    let (late, rx_late) = done();
    assert_eq!(slot.read(0, 100, early), Found::Waits(Vec::new()));
    assert_eq!(slot.read(40_000, 50_000, late), Found::Waits(Vec::new()));
    assert!(
        rx_early.try_recv().is_err() && rx_late.try_recv().is_err(),
        "parked"
    );
    write(&slot, 0, 32 << 10);
    // From the writer's chunk, before it reached the file.
    assert_eq!(rx_early.try_recv().unwrap().unwrap(), bytes(0, 100));
    assert!(rx_late.try_recv().is_err());
    write(&slot, 32 << 10, SIZE);
    assert_eq!(rx_late.try_recv().unwrap().unwrap(), bytes(40_000, 50_000));
    // Written ranges answer at once; the rest of the member too once published.
    let (now, rx_now) = done();
    assert_eq!(slot.read(10, 20, now), Found::Present);
    assert_eq!(rx_now.try_recv().unwrap().unwrap(), bytes(10, 20));
    assert!(!slot.is_complete());
    assert_eq!(slot.phase(), Phase::Filling);
    slot.publish();
    assert!(slot.is_complete() && slot.has_part());
    assert_eq!(slot.phase(), Phase::Complete);
    let renamed = slot.settle(|part| {
        assert!(part.is_some(), "the first pass settles its own file");
        Ok(())
    });
    assert!(renamed && !slot.has_part() && slot.is_complete());
}

#[test]
fn a_failed_first_pass_fails_every_waiting_read_and_every_later_one() {
    let (slot, _dir) = first_pass(None);
    let (d, rx) = done();
    let _ = slot.read(1000, 2000, d);
    let err = Error::Corrupt {
        what: "x.npy".into(),
        cause: "CRC-32 mismatch".into(),
    };
    let complete = slot.settle(|_| Err(err));
    assert!(!complete && !slot.is_complete());
    assert_eq!(slot.phase(), Phase::Absent, "a failed pass holds nothing");
    let got = rx.try_recv().unwrap().unwrap_err();
    assert_eq!(got.to_string(), "cannot read x.npy: CRC-32 mismatch");
    assert_eq!(got.errno(), libc::EIO);
    let (d, rx) = done();
    assert_eq!(slot.read(0, 1, d), Found::Failed);
    assert!(rx.try_recv().unwrap().is_err());
}

#[test]
fn a_windowed_first_pass_parks_reads_behind_its_window() {
    let (slot, _dir) = first_pass(Some(16 << 10));
    write(&slot, 0, 48 << 10);
    slot.trim((48 << 10) - (16 << 10)).unwrap();
    let (behind, rx_behind) = done();
    let (inside, rx_inside) = done();
    assert_eq!(slot.read(100, 200, behind), Found::Waits(Vec::new()));
    assert_eq!(slot.read(40_000, 41_000, inside), Found::Present);
    assert_eq!(
        rx_inside.try_recv().unwrap().unwrap(),
        bytes(40_000, 41_000)
    );
    assert!(
        rx_behind.try_recv().is_err(),
        "behind the window: waits for the seek index"
    );
    // The member is charged for its window only while it decodes.
    assert_eq!(slot.charge(), 16 << 10);
}

#[test]
fn a_cancelled_decode_is_a_clean_stop() {
    let (slot, _dir) = first_pass(None);
    assert!(!slot.is_cancelled());
    slot.cancel();
    assert!(slot.is_cancelled());
    let part = slot.take_part();
    assert!(part.is_some() && slot.take_part().is_none(), "taken once");
    let complete = slot.settle(|part| {
        assert!(part.is_none(), "whoever took the file settles it");
        Err(Error::Stopped {
            what: "x.npy".into(),
        })
    });
    assert!(!complete);
}
