//! The ZIP layer: the archive's format over its bytes (`bytes/`). The central directory
//! ([`central`]), read as Python's zipfile reads it; the members it lists ([`members`]), with
//! names made safe and starts resolved from their local headers; and the readers of their
//! compressed bytes: deflate with seek points ([`inflate`]), the rarer methods through the zip
//! crate ([`methods`]).

pub mod central;
pub mod inflate;
pub mod members;
pub mod methods;

pub use members::{Member, Method, Problem};
pub use methods::{ZipOver, zip_crate_member};
