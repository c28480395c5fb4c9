//! The process lifecycle: mount, background or foreground, readiness, signals, unmount.
//!
//! `npzfs ARCHIVE DIR` returns only once the mount answers: the daemon forks before mounting
//! (no thread exists yet, so the fork is safe), the child mounts and serves, and a pipe carries
//! "ready" or the failure back to the parent, which exits 0 or prints it with its exit code.

use std::io::{Read, Write};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fuser::{Config, MountOption, SessionACL};

use crate::error::{Error, Result, cause};
use crate::fuse::Fuse;
use crate::mount::{self, Unmounter};
use crate::mounted::{self, Service};
use crate::options::Options;
use crate::owner::Owner;
use crate::preflight::{self, Needs};
use crate::stats::endpoint;
use crate::{logging, mountpoint};

/// How long the mount may take to answer its first `stat` before we give up on it.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Validates everything, mounts, and serves until unmounted (with `-f`) or until the mount
/// is live (without).
pub fn run(opts: &Options) -> Result<()> {
    let (mountpoint, under_dev) = mountpoint::check(&opts.mountpoint)?;
    outside_sources(&opts.mountpoint, &opts.sources)?;
    // Taken before anything else, and before the fork: the owner must exist now.
    let watched = opts.owner_pid.map(Owner::watch).transpose()?;
    preflight::check(
        &opts.mountpoint,
        Needs {
            allow_other: opts.allow_other || opts.allow_root,
            auto_unmount: opts.auto_unmount,
        },
    )?;
    let service = mounted::prepare(opts, true)?;
    // Bound now, so that a port in use is the mount's failure, told by the parent.
    let metrics = opts.metrics.map(endpoint::bind).transpose()?;
    let mut plan = plan(opts, watched);
    plan.metrics = metrics;
    let ready = Readiness {
        mountpoint,
        under_dev,
        read_ahead_kb: opts.read_ahead_kb,
        pipe: None,
    };
    log::debug!(
        "mounting {} on {}",
        sources_name(&opts.sources),
        opts.mountpoint.display()
    );
    if opts.foreground {
        serve(service, plan, ready)
    } else {
        background(service, plan, ready)
    }
}

/// Refuses a mount point inside a directory source: the tree would hold the mount itself,
/// and the daemon would ask its own mount about it.
fn outside_sources(mountpoint: &Path, sources: &[PathBuf]) -> Result<()> {
    let Ok(at) = mountpoint.canonicalize() else {
        return Ok(());
    };
    let dirs = sources.iter().filter(|s| s.is_dir());
    match dirs
        .filter_map(|s| s.canonicalize().ok())
        .find(|d| at.starts_with(d))
    {
        Some(dir) => Err(Error::Mountpoint {
            path: mountpoint.to_path_buf(),
            cause: format!(
                "it is inside the source {}, whose tree would then hold the mount itself",
                dir.display()
            ),
        }),
        None => Ok(()),
    }
}

/// The sources as /proc/mounts shows them: their resolved paths, joined by `:`.
fn sources_name(sources: &[PathBuf]) -> String {
    let names: Vec<String> = sources
        .iter()
        .map(|p| match crate::remote::is_remote(p) {
            // Never the credentials a URL may carry.
            true => crate::remote::display(&p.to_string_lossy()),
            false => p
                .canonicalize()
                .unwrap_or_else(|_| p.clone())
                .display()
                .to_string(),
        })
        .collect();
    names.join(":")
}

/// fuser's settings and what our own mount(2) needs.
struct MountPlan {
    config: Config,
    fsname: String,
    acl: SessionACL,
    fusermount: bool,
    passthrough: bool,
    /// `owner_pid=`: unmount when this process exits.
    owner: Option<Owner>,
    /// `rmdir`: remove the mount point once unmounted.
    rmdir: bool,
    /// `metrics=`: the address to serve the figures at, bound already.
    metrics: Option<std::net::TcpListener>,
}

fn plan(opts: &Options, owner: Option<Owner>) -> MountPlan {
    // fusermount3 splits its -o list on commas.
    let fsname = opts
        .fsname
        .clone()
        .unwrap_or_else(|| sources_name(&opts.sources).replace(',', "_"));
    let mut config = Config::default();
    // Used when fusermount3 mounts; mount::mount_syscall sets the same itself.
    config.mount_options = vec![
        MountOption::RO,
        MountOption::NoDev,
        MountOption::NoSuid,
        MountOption::FSName(fsname.clone()),
        MountOption::Subtype(mount::SUBTYPE.into()),
        // The kernel checks uid=/gid=/umask= permissions itself.
        MountOption::DefaultPermissions,
    ];
    if opts.auto_unmount {
        config.mount_options.push(MountOption::AutoUnmount);
    }
    let acl = match (opts.allow_other, opts.allow_root) {
        (true, _) => SessionACL::All,
        (false, true) => SessionACL::RootAndOwner,
        (false, false) => SessionACL::Owner,
    };
    config.acl = acl;
    config.n_threads = Some(opts.threads);
    config.clone_fd = opts.threads > 1;
    MountPlan {
        config,
        fsname,
        acl,
        fusermount: opts.auto_unmount,
        passthrough: opts.passthrough,
        owner,
        rmdir: opts.rmdir,
        metrics: None,
    }
}

/// What the serving process does once the mount exists.
struct Readiness {
    mountpoint: PathBuf,
    /// Device of the directory before the mount: the mount has arrived when it changes.
    under_dev: u64,
    read_ahead_kb: u32,
    /// The parent waiting for our status, in background mode.
    pipe: Option<std::io::PipeWriter>,
}

fn background(service: Service, plan: MountPlan, mut ready: Readiness) -> Result<()> {
    let fork_err = |e: std::io::Error| Error::Mount {
        path: ready.mountpoint.clone(),
        cause: format!("cannot start the daemon: {}", cause(&e)),
    };
    let (mut reader, writer) = std::io::pipe().map_err(fork_err)?;
    // SAFETY: no other thread exists yet (the session threads start after the fork), so the
    // child is a full copy of a single-threaded process.
    match unsafe { libc::fork() } {
        -1 => Err(fork_err(std::io::Error::last_os_error())),
        0 => {
            drop(reader);
            detach();
            let status = writer.try_clone().ok();
            ready.pipe = Some(writer);
            // A remote archive is opened in `serve`, after the fork: its client's threads
            // must be the daemon's.
            let code = match serve(service, plan, ready) {
                Ok(()) => 0,
                Err(e) => {
                    // Before readiness the waiting parent prints it, once; after it (the
                    // parent is gone, the report fails), the log has it.
                    let told = status.is_some_and(|mut pipe| {
                        report(&mut pipe, &format!("{}\t{e}", e.exit_code()))
                    });
                    if !told {
                        log::error!("{e}");
                    }
                    e.exit_code()
                }
            };
            std::process::exit(code)
        }
        _child => {
            drop(writer);
            // One read: each report is a single write shorter than PIPE_BUF, and the child
            // keeps its end open while it serves, so there is no EOF to wait for.
            let mut buf = [0u8; 4096];
            let n = loop {
                match reader.read(&mut buf) {
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    other => break other.unwrap_or(0),
                }
            };
            parent_outcome(&String::from_utf8_lossy(&buf[..n]), &ready.mountpoint)
        }
    }
}

/// Sends one status message to the waiting parent in a single write (atomic below PIPE_BUF);
/// false if no parent is listening any more.
fn report(pipe: &mut std::io::PipeWriter, msg: &str) -> bool {
    let bytes = &msg.as_bytes()[..msg.len().min(4000)];
    match pipe.write_all(bytes) {
        Ok(()) => true,
        Err(e) => {
            log::debug!("cannot report to the parent: {}", cause(&e));
            false
        }
    }
}

/// Turns the child's report ("ready", or "CODE\tmessage", or nothing if it died) into ours.
fn parent_outcome(status: &str, mountpoint: &Path) -> Result<()> {
    if status.starts_with("ready") {
        return Ok(());
    }
    match status
        .split_once('\t')
        .and_then(|(c, m)| Some((c.parse().ok()?, m)))
    {
        Some((code, message)) => Err(Error::Daemon {
            code,
            message: message.to_string(),
        }),
        None => Err(Error::Mount {
            path: mountpoint.to_path_buf(),
            cause: "the daemon exited before the mount was live".into(),
        }),
    }
}

/// Leaves the caller's session and working directory; stdin and stdout go to /dev/null.
/// stderr stays until the mount is live, so early failures still reach the log.
fn detach() {
    // SAFETY: plain syscalls on our own process; the paths are static C strings.
    unsafe {
        libc::setsid();
        libc::chdir(c"/".as_ptr());
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if null >= 0 {
            libc::dup2(null, 0);
            libc::dup2(null, 1);
            if null > 2 {
                libc::close(null);
            }
        }
    }
}

fn serve(service: Service, plan: MountPlan, ready: Readiness) -> Result<()> {
    // Blocked before any thread exists (a remote client's start with the build), so that
    // every thread inherits the mask and only the signal thread takes them.
    let signals = block_signals();
    let fs = Arc::new(service.build()?);
    let path = ready.mountpoint.clone();
    let mount_err = |e: std::io::Error| preflight::explain(&path, &e);
    let request = mount::Request {
        fsname: &plan.fsname,
        acl: plan.acl,
        fusermount: plan.fusermount,
    };
    let (session, unmounter) = mount::mount(
        Fuse::new(fs.clone(), plan.passthrough),
        &path,
        &plan.config,
        &request,
    )
    .map_err(mount_err)?;
    let ours = matches!(unmounter, Unmounter::Kernel);
    if let Some(listener) = plan.metrics {
        let figures = fs.clone();
        if let Err(e) = endpoint::serve(listener, Arc::new(move || figures.snapshot())) {
            if ours {
                mount::unmount(&path, true).ok();
            }
            return Err(e);
        }
    }
    let signal_path = path.clone();
    let rmdir = plan.rmdir;
    spawn("npzfs-signals", move || {
        handle_signals(signals, unmounter, &signal_path, rmdir)
    })?;
    if let Some(owner) = plan.owner {
        let owned = path.clone();
        spawn("npzfs-owner", move || {
            owner.wait();
            log::info!(
                "owner process {} exited: unmounting {}",
                owner.pid(),
                owned.display()
            );
            // The signal thread unmounts, exactly as for a SIGTERM from outside.
            // SAFETY: kill on our own pid with a valid signal number.
            unsafe { libc::kill(libc::getpid(), libc::SIGTERM) };
        })?;
    }
    spawn("npzfs-ready", move || announce_ready(ready))?;
    match session.run() {
        Ok(()) => {}
        // With several request threads, one can be mid-read when the kernel tears the
        // connection down after an unmount: it sees ECONNABORTED where the others see ENODEV.
        Err(e) if e.raw_os_error() == Some(libc::ECONNABORTED) && !still_mounted(&path) => {}
        Err(e) => {
            if ours {
                // The session failed while mounted: leave no stale mount behind.
                mount::unmount(&path, true).ok();
            }
            return Err(Error::Session {
                path: path.clone(),
                cause: cause(&e),
            });
        }
    }
    log::info!("unmounted {}", path.display());
    if plan.rmdir {
        remove_mountpoint(&path);
    }
    Ok(())
}

/// `-o rmdir`: removes the (now unmounted, empty) mount point; gone already is fine.
fn remove_mountpoint(path: &Path) {
    match std::fs::remove_dir(path) {
        Ok(()) => log::debug!("removed {}", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => log::warn!("cannot remove {}: {}", path.display(), cause(&e)),
    }
}

/// Whether a FUSE file system is still mounted at `path` (not unmounted, not detached).
fn still_mounted(path: &Path) -> bool {
    mountpoint::mounted_fstype(path).is_some_and(|t| t.starts_with("fuse"))
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<()> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .map(drop)
        .map_err(|e| Error::Mount {
            path: PathBuf::from(name),
            cause: format!("cannot start a thread: {}", cause(&e)),
        })
}

/// Waits for the mount to be listed (the FUSE handshake is done by then: requests wait in the
/// kernel until the session reads them), raises its readahead, then tells whoever waits. The
/// mount is found in /proc/self/mountinfo, never by a stat of it: a daemon thread waiting on
/// its own mount would keep the process from exiting if it were killed meanwhile.
fn announce_ready(mut r: Readiness) {
    let deadline = Instant::now() + READY_TIMEOUT;
    let dev = loop {
        match mountpoint::mounted_at(&r.mountpoint) {
            Some((dev, fstype)) if fstype.starts_with("fuse") && dev != r.under_dev => {
                break Some(dev);
            }
            _ if Instant::now() > deadline => break None,
            _ => std::thread::sleep(Duration::from_millis(5)),
        }
    };
    let Some(dev) = dev else {
        if let Some(pipe) = &mut r.pipe {
            let e = Error::Mount {
                path: r.mountpoint.clone(),
                cause: "the mount did not answer".into(),
            };
            report(pipe, &format!("{}\t{e}", e.exit_code()));
        }
        return;
    };
    mountpoint::set_read_ahead(dev, r.read_ahead_kb);
    sd_notify("READY=1");
    if let Some(mut pipe) = r.pipe.take() {
        // The parent returns now. Whoever started it may be waiting for its stderr to close
        // (`$(npzfs ...)`, subprocess capture): let go of it, and log to syslog instead,
        // unless stderr is systemd's journal stream.
        if !logging::stderr_is_journal() {
            logging::use_syslog();
            // SAFETY: open and dup2 on our own descriptors.
            unsafe {
                let null = libc::open(c"/dev/null".as_ptr(), libc::O_WRONLY);
                if null >= 0 {
                    libc::dup2(null, 2);
                    libc::close(null);
                }
            }
        }
        report(&mut pipe, "ready");
    }
    log::info!("mounted {}", r.mountpoint.display());
}

/// Blocks SIGINT, SIGTERM and SIGHUP in this thread and every thread it starts, so that only
/// the signal thread's `sigwait` sees them.
fn block_signals() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data initialised by sigemptyset before use.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaddset(&mut set, sig);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

fn handle_signals(set: libc::sigset_t, mut unmounter: Unmounter, mountpoint: &Path, rmdir: bool) {
    loop {
        let mut sig = 0;
        // SAFETY: `set` is an initialised signal set and `sig` a valid out pointer.
        if unsafe { libc::sigwait(&set, &mut sig) } != 0 {
            continue;
        }
        log::info!("signal {sig}: unmounting {}", mountpoint.display());
        sd_notify("STOPPING=1");
        match unmounter.unmount(mountpoint) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                log::warn!(
                    "{} is busy: detached it; the daemon exits when its last user leaves",
                    mountpoint.display()
                );
                lazy_unmount(mountpoint);
            }
            Err(e) => {
                log::warn!("cannot unmount {}: {}", mountpoint.display(), cause(&e));
                continue;
            }
        }
        // Detached or not, the directory is free now: users of a detached mount keep it
        // through their open files, not through its path.
        if rmdir && !still_mounted(mountpoint) {
            remove_mountpoint(mountpoint);
        }
    }
}

fn lazy_unmount(mountpoint: &Path) {
    if mount::unmount(mountpoint, true).is_ok() {
        return;
    }
    let status = std::process::Command::new("fusermount3")
        .arg("-u")
        .arg("-z")
        .arg(mountpoint)
        .status();
    if !status.is_ok_and(|s| s.success()) {
        log::warn!("cannot detach {}", mountpoint.display());
    }
}

/// Tells systemd (`Type=notify`) about our state, if it is listening.
pub fn sd_notify(state: &str) {
    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(sock) = UnixDatagram::unbound() else {
        return;
    };
    use std::os::unix::ffi::OsStrExt;
    let bytes = target.as_bytes();
    let sent = if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(name)
            .and_then(|addr| sock.send_to_addr(state.as_bytes(), &addr))
    } else {
        sock.send_to(state.as_bytes(), Path::new(&target))
    };
    match sent {
        Ok(_) => {}
        // The listener is gone (a program that waited for READY=1 and then let go).
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ECONNREFUSED)) => {
            log::debug!("cannot notify ({state}): {}", cause(&e))
        }
        Err(e) => log::warn!("cannot notify systemd ({state}): {}", cause(&e)),
    }
}
