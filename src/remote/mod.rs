//! Archives that live elsewhere: `s3://bucket/key.npz` (S3 and S3-compatible stores) and
//! `http(s)://host/x.npz` (any server that honours Range), read by range; and prefixes of a
//! bucket, `s3://bucket/prefix/`, served as directory sources.
//!
//! * [`location`]: where a source lives, what its URL names (an object or a prefix), the
//!   stores built for it.
//! * [`object`]: one object opened at one version (ETag), fetched by range on the I/O threads.
//! * [`dir`]: a prefix of a bucket served as a directory tree.
//! * [`counted`]: every HTTP request counted for the metrics (the client's connector, wrapped).
//! * [`runtime`]: the I/O threads every request runs on.
//! * [`names`]: URLs without credentials, errors in a user's words, stable hashes.
//! * `profile`: settings from `~/.aws` profiles, which the `object_store` crate does not read.

pub mod counted;
pub mod dir;
pub mod location;
pub mod names;
pub mod object;
mod profile;
pub mod runtime;

pub use location::{DEFAULT_TIMEOUT, Found, Location, find, is_remote};
pub use names::{display, fnv};
pub use object::{Fetch, Remote, Version};
pub use runtime::{DEFAULT_REQUESTS, block_on, set_requests};
