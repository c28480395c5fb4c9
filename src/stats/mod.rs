//! What a mount has done and holds, read out: a [`Snapshot`] of every figure, shown three
//! ways: the Prometheus text at `-o metrics=ADDR:PORT` ([`openmetrics`], served by
//! [`endpoint`]), JSON as the root's `user.npzfs.stats` ([`Snapshot::to_json`]), and the
//! table `npzfs --stats MOUNTPOINT` prints from it ([`table`]).

pub mod endpoint;
pub mod openmetrics;
pub mod snapshot;
pub mod table;

pub use snapshot::{Snapshot, XATTR};
