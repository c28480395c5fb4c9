//! Logging: `log` + `env_logger`, one format, three sinks.
//!
//! Every line is formatted as `<N>message` with its syslog priority N. The sink then writes it
//! as is to a journald stream (`$JOURNAL_STREAM` set: `journalctl -p warning` filters on it and
//! journald adds the timestamp), as `npzfs: level: message` to a plain stderr, or through
//! syslog(3) once a background daemon has left its terminal.

use std::io::{self, Write};
use std::sync::atomic::{AtomicU8, Ordering};

const STDERR: u8 = 0;
const JOURNAL: u8 = 1;
const SYSLOG: u8 = 2;

static SINK: AtomicU8 = AtomicU8::new(STDERR);

/// Starts logging at `level`; `RUST_LOG` overrides it.
pub fn init(level: log::LevelFilter) {
    if stderr_is_journal() {
        SINK.store(JOURNAL, Ordering::Relaxed);
    }
    let mut builder = env_logger::Builder::new();
    builder.filter_level(level);
    // fuser warns about an unmount that someone else already did ("Failed to umount
    // filesystem") on every external unmount; only its errors matter at default verbosity.
    // Its debug output is a line per request and per capability: -v is for npzfs's own
    // (fills, evictions, spans), -vv shows everything.
    match level {
        log::LevelFilter::Trace => {}
        log::LevelFilter::Debug => {
            builder.filter_module("fuser", log::LevelFilter::Warn);
        }
        _ => {
            builder.filter_module("fuser", log::LevelFilter::Error);
        }
    }
    // The HTTP and TLS stack of remote sources: its debug lines are about connections and
    // certificates, and at trace it would print request headers, credentials included. Its
    // warnings and errors only, at any verbosity, unless RUST_LOG names it.
    for quiet in ["reqwest", "hyper", "hyper_util", "h2", "object_store"] {
        builder.filter_module(quiet, log::LevelFilter::Warn);
    }
    // rustls logs a certificate it cannot verify as an error on every attempt; npzfs's own
    // message names the problem once (`remote::location`).
    builder.filter_module("rustls", log::LevelFilter::Off);
    if let Ok(spec) = std::env::var("RUST_LOG") {
        builder.parse_filters(&spec);
    }
    builder
        .format(|buf, record| writeln!(buf, "<{}>{}", priority(record.level()), record.args()))
        .target(env_logger::Target::Pipe(Box::new(Sink)))
        .try_init()
        .ok();
}

/// Whether stderr is the journald stream systemd named in `$JOURNAL_STREAM` ("dev:ino"); a
/// child that inherited the variable but not the stream must not use the prefixes.
pub fn stderr_is_journal() -> bool {
    let Some(var) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = var.to_str().and_then(|v| v.split_once(':')) else {
        return false;
    };
    // SAFETY: fstat on fd 2 into a zeroed stat buffer.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(2, &mut st) } != 0 {
        return false;
    }
    dev.parse() == Ok(st.st_dev) && ino.parse() == Ok(st.st_ino)
}

/// Sends further lines to syslog(3): for a background daemon that has let go of the stderr
/// of whoever started it.
pub fn use_syslog() {
    // SAFETY: the identifier is a static NUL-terminated string, as openlog keeps the pointer.
    unsafe { libc::openlog(c"npzfs".as_ptr(), libc::LOG_PID, libc::LOG_DAEMON) };
    SINK.store(SYSLOG, Ordering::Relaxed);
}

fn priority(level: log::Level) -> i32 {
    match level {
        log::Level::Error => libc::LOG_ERR,
        log::Level::Warn => libc::LOG_WARNING,
        log::Level::Info => libc::LOG_INFO,
        log::Level::Debug | log::Level::Trace => libc::LOG_DEBUG,
    }
}

struct Sink;

impl Write for Sink {
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        let text = String::from_utf8_lossy(line);
        let (prio, msg) = split_priority(text.trim_end_matches('\n'));
        match SINK.load(Ordering::Relaxed) {
            JOURNAL => io::stderr().write_all(line)?,
            SYSLOG => syslog(prio, msg),
            _ => {
                if let Err(e) = writeln!(io::stderr(), "npzfs: {}: {msg}", label(prio)) {
                    if e.kind() != io::ErrorKind::BrokenPipe {
                        return Err(e);
                    }
                    // Whoever read our stderr is gone (a program that ran us and died):
                    // the rest goes to syslog rather than nowhere.
                    use_syslog();
                    syslog(prio, msg);
                }
            }
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}

fn syslog(prio: i32, msg: &str) {
    let c = std::ffi::CString::new(msg.replace('\0', " ")).unwrap_or_default();
    // SAFETY: "%s" with one valid NUL-terminated string argument.
    unsafe { libc::syslog(prio, c"%s".as_ptr(), c.as_ptr()) };
}

fn split_priority(line: &str) -> (i32, &str) {
    let parsed = line.strip_prefix('<').and_then(|rest| {
        let (n, msg) = rest.split_once('>')?;
        Some((n.parse().ok()?, msg))
    });
    parsed.unwrap_or((libc::LOG_INFO, line))
}

fn label(prio: i32) -> &'static str {
    match prio {
        libc::LOG_ERR => "error",
        libc::LOG_WARNING => "warning",
        libc::LOG_INFO => "info",
        _ => "debug",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priorities_round_trip() {
        assert_eq!(
            split_priority("<4>cannot read x: y"),
            (libc::LOG_WARNING, "cannot read x: y")
        );
        assert_eq!(split_priority("no prefix"), (libc::LOG_INFO, "no prefix"));
        assert_eq!(label(priority(log::Level::Error)), "error");
    }
}
