//! How a read is answered: a continuation called once, with the bytes or the reason there are
//! none. Every layer that can park a read (remote blocks, a member's slot in the cache) takes
//! one, so a request thread never waits for what it asked.

use crate::error::Result;

/// A read's continuation: called once, with the bytes or the reason there are none.
pub type ReadDone = Box<dyn for<'a> FnOnce(Result<&'a [u8]>) + Send>;

/// `bytes`, or why there are none, to `done`.
pub fn answer(done: ReadDone, bytes: Result<Vec<u8>>) {
    match bytes {
        Ok(b) => done(Ok(&b)),
        Err(e) => done(Err(e)),
    }
}
