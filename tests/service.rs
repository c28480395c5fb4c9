//! Deployment: the systemd units, mount(8)/fstab, readiness notification, journald logging
//! and the install, each exercised for real.
//!
//! What needs the installed files (`/usr/local/bin/npzfs` for mount.fuse3, the man page for
//! `systemd-analyze verify`) runs `make install` into a temporary DESTDIR and then works in a
//! private mount namespace where that tree is bind-mounted on /usr/local, so the machine's own
//! /usr/local is never touched.

mod common;

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use common::mount::{BIN, Need, is_mounted, require, unmount, wait_until};
use common::{Entry, compressible, pattern, write_zip};

const UNIT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/npzfs@.service");
const ENV_EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/npzfs.env.example");

/// Root and FUSE, or skip (a failure under `NPZFS_REQUIRE_FUSE=1`).
fn root_or_skip(test: &str) -> bool {
    require(test, &[Need::Fuse, Need::Root])
}

/// An archive with a stored and a deflated member, and a mount point, in a temp dir.
struct Setup {
    dir: tempfile::TempDir,
    stored: Vec<u8>,
    deflated: Vec<u8>,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let stored = pattern(11, 0, 300_000);
        let deflated = compressible(12, 2 << 20);
        write_zip(
            &dir.path().join("data.npz"),
            b"",
            &[
                Entry::stored("stored.bin", stored.clone()),
                Entry::deflated("deflated.bin", deflated.clone()),
            ],
        );
        for sub in ["mnt", "cache", "out"] {
            std::fs::create_dir(dir.path().join(sub)).unwrap();
        }
        Setup {
            dir,
            stored,
            deflated,
        }
    }

    fn p(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Asserts that the script copied both members to out/ byte for byte.
    fn assert_copies(&self) {
        assert!(std::fs::read(self.p("out/stored")).unwrap() == self.stored);
        assert!(std::fs::read(self.p("out/deflated")).unwrap() == self.deflated);
    }
}

/// `make install` of the test binary into a temporary DESTDIR (once per test run).
fn installed() -> &'static Path {
    static DESTDIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DESTDIR
        .get_or_init(|| {
            let dest = tempfile::tempdir().unwrap();
            let out = Command::new("make")
                .arg("-C")
                .arg(env!("CARGO_MANIFEST_DIR"))
                .arg("install")
                .arg(format!("DESTDIR={}", dest.path().display()))
                .arg(format!("BIN={BIN}"))
                .output()
                .unwrap();
            assert!(out.status.success(), "make install: {}", text(&out));
            dest
        })
        .path()
}

/// Runs `script` under bash in a private mount namespace where the installed tree is
/// /usr/local. The trap detaches `mnt` whatever happens, so no daemon outlives the script.
fn in_namespace(script: &str, mnt: &Path) -> Output {
    let full = format!(
        "set -eu\ntrap 'umount -l {mnt} 2>/dev/null || true' EXIT\n\
         mount --bind {dest}/usr/local /usr/local\n{script}",
        mnt = mnt.display(),
        dest = installed().display()
    );
    Command::new("unshare")
        .args(["--mount", "--propagation", "private", "bash", "-c", &full])
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Shell lines that wait (with a deadline) for the daemon serving `mnt` to exit.
fn wait_for_daemon_exit(mnt: &Path) -> String {
    format!(
        "for i in $(seq 2000); do pgrep -f -- '^npzfs .* {mnt} ' >/dev/null || break; sleep 0.01; done\n\
         if pgrep -f -- '^npzfs .* {mnt} ' >/dev/null; then echo 'daemon still running'; exit 1; fi\n",
        mnt = mnt.display()
    )
}

#[test]
fn installed_units_pass_systemd_analyze_verify() {
    if !root_or_skip("installed_units_pass_systemd_analyze_verify") {
        return;
    }
    let mnt = tempfile::tempdir().unwrap();
    // Warnings count as failures: verify must print nothing at all.
    let out = in_namespace(
        "systemd-analyze verify npzfs@mnt-run42.service \
         /usr/local/share/doc/npzfs/mnt-data.mount\n\
         man -w npzfs\n",
        mnt.path(),
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(out.stderr.is_empty(), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "/usr/local/share/man/man1/npzfs.1"
    );
}

#[test]
fn install_respects_prefix_and_destdir() {
    let dest = tempfile::tempdir().unwrap();
    let out = Command::new("make")
        .arg("-C")
        .arg(env!("CARGO_MANIFEST_DIR"))
        .arg("install")
        .arg("PREFIX=/usr")
        .arg(format!("DESTDIR={}", dest.path().display()))
        .arg(format!("BIN={BIN}"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let root = dest.path();
    let bin = std::fs::metadata(root.join("usr/bin/npzfs")).unwrap();
    assert_eq!(bin.mode() & 0o777, 0o755);
    let unit = std::fs::read_to_string(root.join("usr/lib/systemd/system/npzfs@.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/bin/npzfs -f "), "{unit}");
    assert!(!unit.contains("/usr/local"), "{unit}");
    let man = std::fs::read_to_string(root.join("usr/share/man/man1/npzfs.1")).unwrap();
    assert!(
        man.contains(".TH npzfs 1"),
        "{}",
        &man[..200.min(man.len())]
    );
    for example in ["npzfs.env.example", "mnt-data.mount", "systemd.md"] {
        assert!(root.join("usr/share/doc/npzfs").join(example).is_file());
    }
}

#[test]
fn man_page_and_help_list_the_same_options() {
    let man = Command::new(BIN).arg("--print-man-page").output().unwrap();
    assert!(man.status.success());
    // roff escapes '-' as "\-".
    let man = String::from_utf8(man.stdout).unwrap().replace("\\-", "-");
    let help = Command::new(BIN).arg("--help").output().unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    // Every -o option and exit code: tests/readme.rs.
    for flag in ["--foreground", "--verbose", "--quiet", "--version"] {
        assert!(help.contains(flag) && man.contains(flag), "{flag}");
    }
    for section in [
        "OPTIONS",
        "MOUNT OPTIONS",
        "EXIT STATUS",
        "ENVIRONMENT",
        "EXAMPLES",
    ] {
        assert!(
            man.contains(&format!(".SH \"{section}\"")) || man.contains(&format!(".SH {section}")),
            "{section}"
        );
    }
}

#[test]
fn mount_t_fuse_npzfs_mounts_through_mount_fuse3_and_umount_stops_the_daemon() {
    if !root_or_skip("mount_t_fuse_npzfs") {
        return;
    }
    let s = Setup::new();
    let (mnt, archive) = (s.p("mnt"), s.p("data.npz"));
    let script = format!(
        "mount -t fuse.npzfs {archive} {mnt} \
         -o allow_other,cache_dir={cache},cache_size=64M,nofail,_netdev,x-systemd.automount\n\
         findmnt -n -o FSTYPE,SOURCE,OPTIONS {mnt}\n\
         cat {mnt}/stored.bin > {out}/stored\n\
         cat {mnt}/deflated.bin > {out}/deflated\n\
         umount {mnt}\n{wait}",
        archive = archive.display(),
        mnt = mnt.display(),
        cache = s.p("cache").display(),
        out = s.p("out").display(),
        wait = wait_for_daemon_exit(&mnt),
    );
    let out = in_namespace(&script, &mnt);
    assert!(out.status.success(), "{}", text(&out));
    let findmnt = String::from_utf8_lossy(&out.stdout);
    let fields: Vec<&str> = findmnt.split_whitespace().collect();
    assert_eq!(fields[0], "fuse.npzfs", "{findmnt}");
    assert_eq!(fields[1], archive.to_str().unwrap(), "{findmnt}");
    assert!(
        fields[2].starts_with("ro,") && fields[2].contains("allow_other"),
        "{findmnt}"
    );
    s.assert_copies();
}

#[test]
fn an_fstab_line_mounts_with_the_generic_options_systemd_and_mount_pass() {
    if !root_or_skip("an_fstab_line_mounts") {
        return;
    }
    let s = Setup::new();
    let mnt = s.p("mnt");
    std::fs::write(
        s.p("fstab"),
        format!(
            "# test fstab\n{archive}  {mnt}  fuse.npzfs  \
             defaults,ro,allow_other,cache_dir={cache},cache_size=1G,nofail,_netdev,noauto,\
             x-systemd.requires=foo.service,comment=x  0 0\n",
            archive = s.p("data.npz").display(),
            mnt = mnt.display(),
            cache = s.p("cache").display(),
        ),
    )
    .unwrap();
    let script = format!(
        "mount --fstab {fstab} {mnt}\n\
         findmnt -n -o FSTYPE {mnt}\n\
         cat {mnt}/stored.bin > {out}/stored\n\
         cat {mnt}/deflated.bin > {out}/deflated\n\
         umount {mnt}\n{wait}",
        fstab = s.p("fstab").display(),
        mnt = mnt.display(),
        out = s.p("out").display(),
        wait = wait_for_daemon_exit(&mnt),
    );
    let out = in_namespace(&script, &mnt);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "fuse.npzfs");
    s.assert_copies();
}

/// One `Exec*=` line of a unit, split into words and expanded the way systemd does for the
/// forms the unit uses: quotes, `%f`/`%i`, `${VAR}` as a whole word, `$$`.
fn exec_line(unit: &str, key: &str, instance: &str, env: &HashMap<String, String>) -> Vec<String> {
    let line = unit
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in the unit"));
    let path = systemd_escape(&["--unescape", "--path", instance]);
    let mut words = Vec::new();
    let mut chars = line.chars().peekable();
    while chars.peek().is_some() {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut word = String::new();
        let mut quote = None;
        while let Some(&c) = chars.peek() {
            match (quote, c) {
                (None, c) if c.is_whitespace() => break,
                (None, '\'' | '"') => quote = Some(c),
                (Some(q), c) if c == q => quote = None,
                _ => word.push(c),
            }
            chars.next();
        }
        if word.is_empty() {
            continue;
        }
        let word = word.replace("%f", &path).replace("%i", instance);
        let word = match word.strip_prefix("${").and_then(|w| w.strip_suffix('}')) {
            Some(var) => env.get(var).cloned().unwrap_or_default(),
            None => word.replace("$$", "$"),
        };
        words.push(word);
    }
    words
}

/// The example environment file with ARCHIVE and OPTIONS set for this test.
fn env_file(s: &Setup) -> HashMap<String, String> {
    let example = std::fs::read_to_string(ENV_EXAMPLE).unwrap();
    let mut env = HashMap::new();
    for line in example
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains('='))
    {
        let (k, v) = line.split_once('=').unwrap();
        let v = match k {
            "ARCHIVE" => s.p("data.npz").display().to_string(),
            "OPTIONS" => format!("{v},cache_size=64M"),
            _ => v.to_string(),
        };
        env.insert(k.to_string(), v);
    }
    assert!(env.contains_key("ARCHIVE") && env.contains_key("OPTIONS"));
    env
}

/// The instance name systemd would use for `path`.
fn instance_for(path: &Path) -> String {
    systemd_escape(&["--path", path.to_str().unwrap()])
}

fn systemd_escape(args: &[&str]) -> String {
    let out = Command::new("systemd-escape").args(args).output().unwrap();
    assert!(out.status.success(), "systemd-escape {args:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Runs the unit's ExecStart= (with the test binary in place of /usr/local/bin/npzfs) as
/// systemd would: env file, $CACHE_DIRECTORY, $NOTIFY_SOCKET.
fn start_as_systemd(s: &Setup, socket: &Path) -> (std::process::Child, PathBuf) {
    let unit = std::fs::read_to_string(UNIT).unwrap();
    let mnt = s.p("mnt");
    let instance = instance_for(&mnt);
    let env = env_file(s);
    let argv = exec_line(&unit, "ExecStart", &instance, &env);
    assert_eq!(argv[0], "/usr/local/bin/npzfs", "{argv:?}");
    assert!(
        argv.contains(&"-f".to_string()),
        "Type=notify needs -f: {argv:?}"
    );
    let child = Command::new(BIN)
        .args(&argv[1..])
        .envs(&env)
        .env("CACHE_DIRECTORY", s.p("cache"))
        .env("NOTIFY_SOCKET", socket)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    (child, mnt)
}

/// The next sd_notify message, waiting at most the socket's read timeout.
fn notification(socket: &UnixDatagram) -> String {
    let mut buf = [0u8; 256];
    let n = socket.recv(&mut buf).expect("no notification in time");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// The unit's ExecStart= started as systemd would, with a notify socket as systemd's (a
/// deadline on every wait), once it has said READY=1.
fn ready_as_systemd() -> (Setup, UnixDatagram, std::process::Child, PathBuf) {
    let s = Setup::new();
    let socket_path = s.p("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let (daemon, mnt) = start_as_systemd(&s, &socket_path);
    assert_eq!(notification(&socket), "READY=1");
    (s, socket, daemon, mnt)
}

#[test]
fn the_units_exec_start_notifies_ready_once_mounted_and_stopping_on_sigterm() {
    if !root_or_skip("exec_start_notifies") {
        return;
    }
    let (s, socket, mut daemon, mnt) = ready_as_systemd();
    // READY=1 means the mount answers: the files are there the moment systemd hears it.
    assert!(is_mounted(&mnt));
    assert!(std::fs::read(mnt.join("stored.bin")).unwrap() == s.stored);
    assert!(std::fs::read(mnt.join("deflated.bin")).unwrap() == s.deflated);
    // The deflated member was decoded into $CACHE_DIRECTORY, as CacheDirectory= sets it.
    assert!(!common::cache_files(&s.p("cache")).is_empty());

    // SAFETY: kill on our own child.
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    assert_eq!(notification(&socket), "STOPPING=1");
    assert!(wait_until(20, || daemon.try_wait().unwrap().is_some()));
    assert_eq!(daemon.wait().unwrap().code(), Some(0));
    assert!(!is_mounted(&mnt));
}

#[test]
fn the_safety_net_clears_a_killed_daemons_mount_and_nothing_else() {
    if !root_or_skip("safety_net") {
        return;
    }
    let (s, socket, mut daemon, mnt) = ready_as_systemd();
    let socket_path = s.p("notify.sock");

    let unit = std::fs::read_to_string(UNIT).unwrap();
    let stop_post = exec_line(&unit, "ExecStopPost", &instance_for(&mnt), &HashMap::new());
    let run_stop_post = |exit_code: &str| {
        let status = Command::new(&stop_post[0])
            .args(&stop_post[1..])
            .env("EXIT_CODE", exit_code)
            .status()
            .unwrap();
        assert!(status.success(), "ExecStopPost with EXIT_CODE={exit_code}");
    };
    // A daemon that exited by itself: never unmount (this mount is someone else's then).
    run_stop_post("exited");
    assert!(is_mounted(&mnt), "the safety net unmounted a live mount");

    daemon.kill().unwrap();
    daemon.wait().unwrap();
    // statfs: stat would be answered from the kernel's attribute cache.
    let stale = npzfs::mountpoint::statfs(&mnt).unwrap_err();
    assert_eq!(stale.raw_os_error(), Some(libc::ENOTCONN));
    run_stop_post("killed");
    assert!(!is_mounted(&mnt), "the stale mount is still there");
    // And the restart succeeds.
    let (mut again, _) = start_as_systemd(&s, &socket_path);
    assert_eq!(notification(&socket), "READY=1");
    assert!(std::fs::read(mnt.join("stored.bin")).unwrap() == s.stored);
    unmount(&mnt);
    assert!(wait_until(20, || again.try_wait().unwrap().is_some()));
}

/// Runs `npzfs -f` with stderr to a file and `JOURNAL_STREAM` naming (or not) that file, then
/// stops it and returns what it logged.
fn foreground_log(journal: bool) -> String {
    let s = Setup::new();
    let log = std::fs::File::create(s.p("log")).unwrap();
    let meta = log.metadata().unwrap();
    let stream = if journal {
        format!("{}:{}", meta.dev(), meta.ino())
    } else {
        format!("{}:{}", meta.dev(), meta.ino() + 1)
    };
    let mnt = s.p("mnt");
    let mut daemon = Command::new(BIN)
        .arg("-f")
        .arg(s.p("data.npz"))
        .arg(&mnt)
        .arg("-o")
        .arg(format!("cache_dir={}", s.p("cache").display()))
        .env("JOURNAL_STREAM", stream)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    // Ready once it says so: a SIGTERM during the readiness check's stat would find the
    // mount busy (and detach it, logging a warning).
    let log = s.p("log");
    assert!(wait_until(20, || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("mounted "))
    }));
    assert!(is_mounted(&mnt));
    // SAFETY: kill on our own child.
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    assert!(wait_until(20, || daemon.try_wait().unwrap().is_some()));
    std::fs::read_to_string(s.p("log")).unwrap()
}

#[test]
fn under_journald_lines_carry_priorities_and_no_timestamps() {
    if !root_or_skip("journald_lines") {
        return;
    }
    let log = foreground_log(true);
    let lines: Vec<&str> = log.lines().collect();
    assert!(lines.len() >= 2, "{log}");
    for line in &lines {
        let rest = line.strip_prefix("<6>").unwrap_or_else(|| panic!("{line}"));
        // journald stamps lines itself: a leading date or "npzfs:" would be doubled.
        assert!(
            !rest.starts_with(|c: char| c.is_ascii_digit()) && !rest.starts_with("npzfs"),
            "{line}"
        );
    }
    assert!(log.contains("<6>mounted "), "{log}");
    assert!(log.contains("<6>unmounted "), "{log}");

    // A JOURNAL_STREAM inherited by a process whose stderr is something else: plain lines.
    let plain = foreground_log(false);
    assert!(
        plain.lines().all(|l| l.starts_with("npzfs: info: ")),
        "{plain}"
    );
}
