//! The slow lane: threads that answer the FUSE operations which may wait on the network, so
//! that the request threads never do.
//!
//! Reads of remote bytes never block a request thread (they park and are answered from the
//! I/O threads). Metadata could: a lookup in a bucket prefix whose listing is older than it
//! may be, an archive's first open (its end record and central directory), `user.npy.*`
//! xattrs (a member's header). The request thread hands such an operation, with its reply,
//! to this lane and goes back to the kernel at once: a slow store stalls the operations that
//! need it, never the local sources, the cached answers or the reads beside them.
//!
//! The lane has [`THREADS`] threads, started with the first operation given to it (in the
//! daemon, after the fork), taking operations in the order they came. They end when the lane
//! is dropped (the session is over) and their last operation is done.

use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex, OnceLock};

/// Operations of the lane in progress at once: more than the request threads, so that
/// several slow stores, or one slow prefix and a few archives' first opens, wait side by side.
pub const THREADS: usize = 16;

type Job = Box<dyn FnOnce() + Send + 'static>;

/// The slow lane of one session.
#[derive(Default)]
pub struct Lane {
    jobs: OnceLock<Sender<Job>>,
}

impl Lane {
    /// Runs `job` on one of the lane's threads, later. If no thread can be started, it runs
    /// here and now: slower, never lost.
    pub fn run(&self, job: impl FnOnce() + Send + 'static) {
        if let Err(unsent) = self.jobs.get_or_init(start).send(Box::new(job)) {
            (unsent.0)();
        }
    }
}

/// The lane's threads, sharing one queue; its sender. A thread that cannot be started is
/// logged; if none can, the receiver is dropped with them and every job runs where it is
/// given (see [`Lane::run`]).
fn start() -> Sender<Job> {
    let (tx, rx) = channel::<Job>();
    let rx = Arc::new(Mutex::new(rx));
    for i in 0..THREADS {
        let rx = rx.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("npzfs-lane-{i}"))
            .spawn(move || work(&rx));
        if let Err(e) = spawned {
            log::warn!("cannot start a thread for slow operations: {e}");
        }
    }
    tx
}

fn work(jobs: &Mutex<Receiver<Job>>) {
    loop {
        let job = jobs.lock().unwrap_or_else(|p| p.into_inner()).recv();
        match job {
            Ok(job) => job(),
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Barrier;
    use std::time::Duration;

    #[test]
    fn jobs_wait_side_by_side_and_a_dropped_lane_lets_its_threads_go() {
        let lane = Lane::default();
        // THREADS jobs that each wait for all the others: they only finish if all run at once.
        let all = Arc::new(Barrier::new(THREADS + 1));
        let (tx, rx) = channel();
        for _ in 0..THREADS {
            let (all, tx) = (all.clone(), tx.clone());
            lane.run(move || {
                all.wait();
                tx.send(std::thread::current().name().map(str::to_owned))
                    .unwrap();
            });
        }
        all.wait();
        for _ in 0..THREADS {
            let name = rx.recv_timeout(Duration::from_secs(20)).unwrap();
            assert!(name.unwrap().starts_with("npzfs-lane-"));
        }
        let witness = Arc::new(());
        let held = witness.clone();
        lane.run(move || drop(held));
        drop(lane);
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while Arc::strong_count(&witness) > 1 {
            assert!(
                std::time::Instant::now() < deadline,
                "the last job never ran"
            );
            std::thread::yield_now();
        }
    }
}
