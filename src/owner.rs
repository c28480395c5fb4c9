//! `-o owner_pid=PID`: a mount that lives only as long as the process that asked for it.
//!
//! A program that mounts for its own use (the Python package, a batch job) cannot clean up
//! after a SIGKILL, so the daemon watches its owner instead: through a pidfd (Linux 5.3+),
//! which becomes readable when the process exits, or else by checking every second that
//! `/proc/PID` is still the same process (its start time, so a reused pid is not mistaken for
//! it). When the owner is gone, the daemon unmounts as on SIGTERM.

use std::fs;
use std::os::fd::{FromRawFd, OwnedFd};
use std::time::Duration;

use crate::error::Error;

/// How often the fallback checks the owner.
const POLL: Duration = Duration::from_secs(1);

/// A process whose exit we wait for.
pub struct Owner {
    pid: i32,
    how: How,
}

enum How {
    Pidfd(OwnedFd),
    /// The owner's start time (field 22 of /proc/PID/stat).
    Poll(u64),
}

impl Owner {
    /// Takes hold of process `pid`, which must exist now (so it cannot be confused with a
    /// later process of the same pid).
    pub fn watch(pid: i32) -> Result<Owner, Error> {
        let missing = || Error::Usage(format!("option owner_pid={pid}: no such process"));
        // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd >= 0 {
            // SAFETY: the kernel just gave us this descriptor; nothing else owns it.
            let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
            return Ok(Owner {
                pid,
                how: How::Pidfd(fd),
            });
        }
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::ESRCH) {
            return Err(missing());
        }
        let started = start_time(pid).ok_or_else(missing)?;
        Ok(Owner {
            pid,
            how: How::Poll(started),
        })
    }

    /// The owner's pid.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Blocks until the owner has exited.
    pub fn wait(&self) {
        match &self.how {
            How::Pidfd(fd) => {
                use std::os::fd::AsRawFd;
                let mut pfd = libc::pollfd {
                    fd: fd.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one valid pollfd; -1 waits without a timeout.
                while unsafe { libc::poll(&mut pfd, 1, -1) } < 0 {
                    if std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                        // Cannot wait on it: fall back to looking at /proc.
                        return self.poll_until_gone(start_time(self.pid));
                    }
                }
            }
            How::Poll(started) => self.poll_until_gone(Some(*started)),
        }
    }

    fn poll_until_gone(&self, started: Option<u64>) {
        while started.is_some() && start_time(self.pid) == started {
            std::thread::sleep(POLL);
        }
    }
}

/// The start time of process `pid` in clock ticks since boot, if it exists (and is not a
/// zombie, which has exited).
fn start_time(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count after it.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split(' ');
    let state = fields.next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    // `rest` starts at field 3; the start time is field 22.
    fields.nth(22 - 4)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_process_is_a_usage_error() {
        // Pids are at most 2^22; this one cannot exist.
        let err = Owner::watch(i32::MAX).err().expect("no such process");
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("no such process"), "{err}");
    }

    #[test]
    fn waiting_ends_when_the_owner_exits() {
        let mut child = std::process::Command::new("sleep")
            .arg("0.2")
            .spawn()
            .unwrap();
        let owner = Owner::watch(child.id() as i32).unwrap();
        assert!(start_time(owner.pid()).is_some());
        owner.wait();
        child.wait().unwrap();
        assert!(start_time(owner.pid()).is_none());
    }

    #[test]
    fn our_own_start_time_is_stable() {
        let me = std::process::id() as i32;
        assert!(start_time(me).is_some());
        assert_eq!(start_time(me), start_time(me));
    }
}
