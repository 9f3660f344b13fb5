//! Running as a system service: the units in systemd/ checked by systemd's
//! own tools, and the daemon's side of the protocol for real: socket
//! activation (LISTEN_FDS/LISTEN_PID, the socket as descriptor 3, exactly as
//! systemd hands it over) and sd_notify on a datagram socket of the test's.

use std::fs;
use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use ringxfer_ipc::Client;

use crate::support::*;

const REPO: &str = env!("CARGO_MANIFEST_DIR");

fn unit(name: &str) -> PathBuf {
    Path::new(REPO).join("systemd").join(name)
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// `systemd-analyze`, or None after saying the test is skipped.
fn systemd_analyze(test: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("systemd-analyze"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        println!("SKIPPED {test}: systemd-analyze is not installed (apt-get install systemd)");
    }
    found
}

/// The values of `key=` lines in a unit file, in order.
fn values<'a>(text: &'a str, key: &str) -> Vec<&'a str> {
    let prefix = format!("{key}=");
    text.lines()
        .map(str::trim)
        .filter_map(|l| l.strip_prefix(prefix.as_str()))
        .collect()
}

fn one_value<'a>(text: &'a str, key: &str) -> &'a str {
    match values(text, key).as_slice() {
        [v] => v,
        other => panic!("expected one {key}= line, found {other:?}"),
    }
}

#[test]
fn units_pass_systemd_analyze_verify() {
    let Some(analyze) = systemd_analyze("units_pass_systemd_analyze_verify") else {
        return;
    };
    // verify insists that ExecStart's program exists, so check copies whose
    // ExecStart is the daemon this test run built; nothing else changes.
    let dir = tmpdir();
    let service = read(&unit("ringxferd.service"));
    let exec = one_value(&service, "ExecStart");
    assert_eq!(exec, "/usr/local/bin/ringxferd", "the unit's ExecStart");
    let service = service.replace(
        "ExecStart=/usr/local/bin/ringxferd",
        &format!("ExecStart={DAEMON_BIN}"),
    );
    fs::write(dir.path().join("ringxferd.service"), service).expect("write service copy");
    for socket in ["ringxferd.socket", "ringxferd-tcp.socket"] {
        fs::copy(unit(socket), dir.path().join(socket)).expect("copy socket unit");
    }

    let mut cmd = Command::new(&analyze);
    cmd.arg("verify")
        .arg(dir.path().join("ringxferd.socket"))
        .arg(dir.path().join("ringxferd-tcp.socket"))
        .arg(dir.path().join("ringxferd.service"));
    let out = run_timeout(cmd, Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "systemd-analyze verify failed ({}):\n{stderr}",
        out.status
    );
    // Warnings (an unknown key, a bad value) do not fail verify; they name
    // the unit, so any line about ours is a failure.
    let ours: Vec<&str> = stderr.lines().filter(|l| l.contains("ringxfer")).collect();
    assert!(
        ours.is_empty(),
        "systemd-analyze verify warned:\n{}",
        ours.join("\n")
    );
}

/// The score and level from `systemd-analyze security`'s last line,
/// "→ Overall exposure level for ringxferd.service: 0.4 SAFE 😀".
fn exposure(output: &str) -> Option<(f64, String)> {
    let line = output
        .lines()
        .find(|l| l.contains("Overall exposure level for"))?;
    let (_, rest) = line.rsplit_once(": ")?;
    let mut words = rest.split_whitespace();
    let score = words.next()?.parse().ok()?;
    Some((score, words.next()?.to_string()))
}

#[test]
fn service_exposure_is_ok_or_better() {
    let Some(analyze) = systemd_analyze("service_exposure_is_ok_or_better") else {
        return;
    };
    let mut cmd = Command::new(&analyze);
    cmd.args(["security", "--offline=yes", "--no-pager"])
        .arg(unit("ringxferd.service"))
        .env("SYSTEMD_COLORS", "0");
    let out = run_timeout(cmd, Duration::from_secs(60));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "systemd-analyze security failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    let (score, level) = exposure(&stdout)
        .unwrap_or_else(|| panic!("no exposure level in the output:\n{stdout}\n{stderr}"));
    println!("ringxferd.service exposure: {score} {level}");
    // systemd's bands (analyze-security.c): 10 DANGEROUS, 9 UNSAFE, 7.5
    // EXPOSED, 5 MEDIUM, 1 OK, 0.1 SAFE, 0 PERFECT; each from its number up.
    assert!(
        ["OK", "SAFE", "PERFECT"].contains(&level.as_str()) && score < 5.0,
        "exposure {score} {level} is worse than OK:\n{stdout}"
    );
}

/// A size as systemd reads LimitMEMLOCK= (K, M, G are powers of 1024).
fn systemd_size(text: &str) -> u64 {
    let (digits, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: u64 = digits
        .parse()
        .unwrap_or_else(|e| panic!("size {text:?}: {e}"));
    n * match unit {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        other => panic!("size {text:?}: unit {other:?}"),
    }
}

#[test]
fn units_agree_with_the_daemon() {
    let socket = read(&unit("ringxferd.socket"));
    let service = read(&unit("ringxferd.service"));
    let sysusers = read(&unit("ringxfer.sysusers"));

    // Clients with no RINGXFER_SOCKET or XDG_RUNTIME_DIR look here.
    assert_eq!(
        one_value(&socket, "ListenStream"),
        ringxfer_ipc::SYSTEM_SOCKET
    );
    assert_eq!(one_value(&socket, "SocketMode"), "0660");
    assert_eq!(one_value(&socket, "SocketGroup"), "ringxfer");
    assert_eq!(one_value(&socket, "Accept"), "no");
    assert!(
        sysusers
            .lines()
            .any(|l| l.split_whitespace().take(2).eq(["u", "ringxfer"])),
        "ringxfer.sysusers does not create the ringxfer user and group:\n{sysusers}"
    );

    assert_eq!(one_value(&service, "Type"), "notify");
    assert_eq!(one_value(&service, "User"), "ringxfer");
    // The registered buffers of the default configuration fit, with room.
    let defaults = ringxfer::engine::EngineConfig::DEFAULT;
    let buffers = (defaults.buffers * defaults.buffer_size) as u64;
    let memlock = systemd_size(one_value(&service, "LimitMEMLOCK"));
    assert!(
        memlock >= 2 * buffers,
        "LimitMEMLOCK={memlock} leaves no headroom over the default {buffers} bytes of buffers"
    );
    // io_uring must stay allowed by the filter, and the page-cache probes
    // that @system-service lacks.
    let filter = values(&service, "SystemCallFilter").join(" ");
    for call in [
        "io_uring_setup",
        "io_uring_enter",
        "io_uring_register",
        "cachestat",
        "mincore",
    ] {
        assert!(
            filter.contains(call),
            "SystemCallFilter lacks {call}: {filter}"
        );
    }
    // Settings that would break the daemon, each for a reason in the unit.
    assert!(
        values(&service, "PrivateUsers").iter().all(|v| *v == "no"),
        "PrivateUsers maps clients' uids to nobody"
    );
    assert!(
        values(&service, "ProcSubset").is_empty(),
        "ProcSubset=pid hides /proc/sys/fs/pipe-user-pages-soft"
    );
    assert!(
        values(&service, "RuntimeDirectory").is_empty(),
        "RuntimeDirectory= would be removed on stop, taking systemd's socket file with it"
    );
}

#[test]
fn install_sh_stages_into_destdir() {
    let dest = tmpdir();
    let build = Path::new(DAEMON_BIN)
        .parent()
        .expect("the daemon's directory");
    let mut cmd = Command::new("sh");
    cmd.arg(unit("install.sh"))
        .env("DESTDIR", dest.path())
        .env("PREFIX", "/opt/ringxfer")
        .env("BUILD", build);
    let out = run_timeout(cmd, Duration::from_secs(60));
    assert!(
        out.status.success(),
        "install.sh failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let root = dest.path().join("opt/ringxfer");
    for bin in ["bin/ringxferd", "bin/ringxfer"] {
        let meta = fs::metadata(root.join(bin)).unwrap_or_else(|e| panic!("{bin}: {e}"));
        assert!(
            meta.permissions().mode() & 0o111 != 0,
            "{bin} is not executable"
        );
    }
    let service = read(&root.join("lib/systemd/system/ringxferd.service"));
    assert_eq!(
        one_value(&service, "ExecStart"),
        "/opt/ringxfer/bin/ringxferd"
    );
    assert_eq!(
        read(&root.join("lib/systemd/system/ringxferd.socket")),
        read(&unit("ringxferd.socket"))
    );
    assert_eq!(
        read(&root.join("lib/systemd/system/ringxferd-tcp.socket")),
        read(&unit("ringxferd-tcp.socket"))
    );
    assert!(root.join("share/doc/ringxfer/ringxferd-tcp.conf").is_file());
    assert!(root.join("lib/sysusers.d/ringxfer.conf").is_file());
    assert!(root.join("share/doc/ringxfer/README.md").is_file());
    assert_eq!(
        read(&root.join("share/doc/ringxfer/ringxferd.toml.example")),
        read(&Path::new(env!("CARGO_MANIFEST_DIR")).join("config/ringxferd.toml.example"))
    );
    installed_manuals_and_completions(&root);
    // Staging printed no follow-up steps for this machine.
    assert!(!String::from_utf8_lossy(&out.stdout).contains("systemctl"));
}

/// The man pages name every subcommand and the daemon's flags, and bash
/// completes a subcommand from the installed script.
fn installed_manuals_and_completions(root: &Path) {
    let main_page = read(&root.join("share/man/man1/ringxfer.1"));
    assert!(main_page.contains(".TH ringxfer 1"), "{main_page}");
    for sub in [
        "copy", "send", "recv", "stats", "jobs", "status", "wait", "cancel",
    ] {
        let page = root.join(format!("share/man/man1/ringxfer-{sub}.1"));
        assert!(page.is_file(), "no man page {}", page.display());
        assert!(main_page.contains(sub), "ringxfer.1 does not name {sub}");
    }
    let daemon_page = read(&root.join("share/man/man8/ringxferd.8"));
    for flag in ["max\\-jobs", "socket", "engine"] {
        assert!(daemon_page.contains(flag), "ringxferd.8 lacks {flag}");
    }
    assert!(root.join("share/zsh/site-functions/_ringxfer").is_file());
    assert!(root
        .join("share/fish/vendor_completions.d/ringxfer.fish")
        .is_file());
    let bash = root.join("share/bash-completion/completions/ringxfer");
    let script = format!(
        "source {}; COMP_WORDS=(ringxfer co); COMP_CWORD=1; _ringxfer ringxfer co ringxfer; \
         echo \"${{COMPREPLY[@]}}\"",
        bash.display()
    );
    let out = run_timeout(
        {
            let mut c = Command::new("bash");
            c.args(["-c", &script]);
            c
        },
        Duration::from_secs(10),
    );
    let words = String::from_utf8_lossy(&out.stdout);
    assert!(
        words.split_whitespace().any(|w| w == "copy"),
        "bash completed 'co' to {words:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---------------------------------------------------------------------------
// The daemon under socket activation and sd_notify.

/// The datagram socket a service manager reads notifications from.
struct NotifySocket {
    path: PathBuf,
    sock: UnixDatagram,
    seen: Vec<String>,
}

impl NotifySocket {
    fn new(dir: &Path) -> NotifySocket {
        let path = dir.join("notify.sock");
        let sock = UnixDatagram::bind(&path).expect("bind the notify socket");
        NotifySocket {
            path,
            sock,
            seen: Vec::new(),
        }
    }

    /// Reads datagrams until one has the line `line`; returns that datagram.
    fn expect(&mut self, line: &str, timeout: Duration, log: &Path) -> String {
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                panic!(
                    "no {line} within {timeout:?}; notifications so far: {:?}; daemon log:\n{}",
                    self.seen,
                    fs::read_to_string(log).unwrap_or_default()
                );
            }
            self.sock
                .set_read_timeout(Some(left))
                .expect("set the notify socket's timeout");
            match self.sock.recv(&mut buf) {
                Ok(n) => {
                    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                    self.seen.push(msg.clone());
                    if msg.lines().any(|l| l == line) {
                        return msg;
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => panic!("read the notify socket: {e}"),
            }
        }
    }
}

/// The engine READY=1's status line names for a daemon of this run: threads
/// when the run forces it, else io_uring (which `auto` gets on this kernel).
fn status_engine() -> &'static str {
    match test_engine().as_deref() {
        Some("threads") => "threads",
        _ => "io_uring",
    }
}

/// What LISTEN_PID says.
enum ListenPid {
    /// The daemon's own pid, as systemd sets it.
    Daemon,
    /// Some other process's.
    Other(u32),
}

/// Starts ringxferd with `listen_fd` as its descriptor 3 and LISTEN_FDS=1
/// (when given), NOTIFY_SOCKET=`notify`, stderr into `log`.
fn spawn(
    listen_fd: Option<RawFd>,
    pid: ListenPid,
    notify: &Path,
    log: &Path,
    args: &[&str],
) -> Child {
    let mut cmd = match pid {
        // LISTEN_PID must be the daemon's pid, known only after fork: a shell
        // sets it to its own ($$) and execs the daemon, which keeps that pid.
        ListenPid::Daemon => {
            let mut c = Command::new("sh");
            c.arg("-c")
                .arg(r#"LISTEN_PID=$$; export LISTEN_PID; exec "$0" "$@""#)
                .arg(DAEMON_BIN);
            c
        }
        ListenPid::Other(p) => {
            let mut c = Command::new(DAEMON_BIN);
            c.env("LISTEN_PID", p.to_string());
            c
        }
    };
    cmd.args(engine_args(args))
        .args(args)
        .env_remove("RINGXFER_SOCKET")
        .env_remove("RINGXFER_ENGINE")
        .env_remove("LISTEN_FDNAMES")
        .env_remove("WATCHDOG_USEC")
        .env("NOTIFY_SOCKET", notify)
        .env("RINGXFER_LOG", "debug")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(log).expect("create the daemon log"));
    match listen_fd {
        Some(fd) => {
            cmd.env("LISTEN_FDS", "1");
            // SAFETY: the closure runs between fork and exec and calls only
            // dup2 and fcntl, which are async-signal-safe, and builds an
            // io::Error from errno, which does not allocate. `fd` stays open
            // in the parent until spawn returns.
            unsafe {
                cmd.pre_exec(move || {
                    // Descriptor 3 is where systemd puts the first socket
                    // (SD_LISTEN_FDS_START). dup2 onto itself would leave
                    // FD_CLOEXEC set, so clear it instead.
                    let rc = if fd == 3 {
                        libc::fcntl(3, libc::F_SETFD, 0)
                    } else {
                        libc::dup2(fd, 3)
                    };
                    if rc == -1 {
                        return Err(io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        None => {
            cmd.env_remove("LISTEN_FDS");
        }
    }
    cmd.spawn()
        .unwrap_or_else(|e| panic!("spawn {DAEMON_BIN}: {e}"))
}

fn terminate(child: &mut Child, log: &Path) {
    // SAFETY: kill(2) on our own child's pid, which it still is (not reaped).
    let rc = unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert_eq!(rc, 0, "kill(SIGTERM): {}", io::Error::last_os_error());
    let status = wait_child(child, Duration::from_secs(10)).unwrap_or_else(|| {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "ringxferd did not stop within 10 s of SIGTERM; log:\n{}",
            read(log)
        )
    });
    assert_eq!(
        status.code(),
        Some(0),
        "exit status after SIGTERM; log:\n{}",
        read(log)
    );
}

/// Kills the child if a test fails before stopping it.
struct Reap(Option<Child>);

impl Drop for Reap {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn activated_socket_serves_and_stays_with_systemd() {
    let dir = tmpdir();
    let path = dir.path().join("activated.sock");
    // What systemd does for ringxferd.socket: bind, listen, keep it.
    let listener = UnixListener::bind(&path).expect("bind the activated socket");
    let mut notify = NotifySocket::new(dir.path());
    let log = dir.path().join("ringxferd.log");
    // The daemon's own path, which it must not use while activated.
    let unused = dir.path().join("unused.sock");
    let unused_arg = unused.to_str().expect("utf-8 path");

    let mut d = Reap(Some(spawn(
        Some(listener.as_raw_fd()),
        ListenPid::Daemon,
        &notify.path,
        &log,
        &["--socket", unused_arg],
    )));
    let ready = notify.expect("READY=1", Duration::from_secs(10), &log);
    let status = format!(
        "STATUS=serving on {}, engine {}",
        path.display(),
        status_engine()
    );
    assert!(
        ready.lines().any(|l| l == status),
        "READY without {status:?}: {ready:?}"
    );

    let client = Client::connect(&path).expect("connect through the activated socket");
    copy_and_check(&client, dir.path(), "activated", 1 << 20, 71);
    drop(client);
    assert!(
        !unused.exists(),
        "the daemon bound --socket although systemd passed one"
    );

    let child = d.0.as_mut().expect("running");
    terminate(child, &log);
    d.0 = None;
    notify.expect("STOPPING=1", Duration::from_secs(5), &log);
    let text = read(&log);
    assert!(
        text.contains("ignored"),
        "no warning that --socket was ignored:\n{text}"
    );
    assert!(text.contains("stays with systemd"), "log:\n{text}");
    assert!(path.exists(), "the daemon removed systemd's socket file");

    // systemd still listens: a client that connects while the daemon is down
    // waits in the backlog and is served by the next daemon.
    let (tx, rx) = mpsc::channel();
    let early = path.clone();
    thread::spawn(move || {
        let _ = tx.send(Client::connect(&early).map_err(|e| format!("{e:?}")));
    });
    // Give the connect time to land in the backlog before the daemon exists.
    thread::sleep(Duration::from_millis(100));
    let mut d = Reap(Some(spawn(
        Some(listener.as_raw_fd()),
        ListenPid::Daemon,
        &notify.path,
        &log,
        &[],
    )));
    notify.expect("READY=1", Duration::from_secs(10), &log);
    let client = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the waiting client was never answered")
        .expect("the waiting client's handshake");
    copy_and_check(&client, dir.path(), "restarted", 256 << 10, 72);
    drop(client);
    terminate(d.0.as_mut().expect("running"), &log);
    d.0 = None;
    assert!(
        path.exists(),
        "the restarted daemon removed systemd's socket file"
    );
}

#[test]
fn self_bound_socket_notifies_and_is_removed() {
    let dir = tmpdir();
    let path = dir.path().join("own.sock");
    let mut notify = NotifySocket::new(dir.path());
    let log = dir.path().join("ringxferd.log");
    let arg = path.to_str().expect("utf-8 path");
    let mut d = Reap(Some(spawn(
        None,
        ListenPid::Daemon,
        &notify.path,
        &log,
        &["--socket", arg],
    )));
    let ready = notify.expect("READY=1", Duration::from_secs(10), &log);
    let status = format!(
        "STATUS=serving on {}, engine {}",
        path.display(),
        status_engine()
    );
    assert!(
        ready.lines().any(|l| l == status),
        "READY without {status:?}: {ready:?}"
    );
    // READY=1 means serving: the socket answers at once.
    let client = Client::connect(&path).expect("connect right after READY=1");
    copy_and_check(&client, dir.path(), "own", 64 << 10, 73);
    drop(client);
    terminate(d.0.as_mut().expect("running"), &log);
    d.0 = None;
    notify.expect("STOPPING=1", Duration::from_secs(5), &log);
    assert!(!path.exists(), "the daemon left its own socket file behind");
}

#[test]
fn listen_pid_of_another_process_is_ignored() {
    let dir = tmpdir();
    // A socket whose LISTEN_PID names someone else (inherited by accident)
    // is not the daemon's: it binds its own.
    let stray = UnixListener::bind(dir.path().join("stray.sock")).expect("bind");
    let path = dir.path().join("own.sock");
    let mut notify = NotifySocket::new(dir.path());
    let log = dir.path().join("ringxferd.log");
    let arg = path.to_str().expect("utf-8 path");
    let mut d = Reap(Some(spawn(
        Some(stray.as_raw_fd()),
        ListenPid::Other(1),
        &notify.path,
        &log,
        &["--socket", arg],
    )));
    notify.expect("READY=1", Duration::from_secs(10), &log);
    assert!(path.exists(), "the daemon did not bind --socket");
    let client = Client::connect(&path).expect("connect to the daemon's own socket");
    copy_and_check(&client, dir.path(), "own", 4096, 74);
    drop(client);
    terminate(d.0.as_mut().expect("running"), &log);
    d.0 = None;
    assert!(!path.exists(), "the daemon left its own socket file behind");
}

#[test]
fn a_passed_descriptor_that_is_not_a_listener_is_refused() {
    let dir = tmpdir();
    let notify = NotifySocket::new(dir.path());
    // A connected stream socket and a datagram socket: what a mistyped
    // socket unit (Accept=yes, ListenDatagram=) would pass.
    let (stream, _peer) = UnixStream::pair().expect("socketpair");
    let datagram = UnixDatagram::unbound().expect("datagram socket");
    for (what, fd, want) in [
        ("connected stream", stream.as_raw_fd(), "not listening"),
        ("datagram", datagram.as_raw_fd(), "not SOCK_STREAM"),
    ] {
        let log = dir.path().join(format!("{}.log", what.replace(' ', "-")));
        let own = dir.path().join("never.sock");
        let arg = own.to_str().expect("utf-8 path");
        let mut d = Reap(Some(spawn(
            Some(fd),
            ListenPid::Daemon,
            &notify.path,
            &log,
            &["--socket", arg],
        )));
        let child = d.0.as_mut().expect("spawned");
        let status = wait_child(child, Duration::from_secs(10))
            .unwrap_or_else(|| panic!("{what}: the daemon kept running; log:\n{}", read(&log)));
        d.0 = None;
        assert!(!status.success(), "{what}: the daemon exited {status}");
        let text = read(&log);
        assert!(
            text.contains("not a listening Unix stream socket") && text.contains(want),
            "{what}: log does not say why:\n{text}"
        );
        assert!(
            !own.exists(),
            "{what}: the daemon fell back to binding its own socket"
        );
    }
}

#[test]
fn the_loop_feeds_the_watchdog_and_says_stopping_when_draining() {
    let dir = tmpdir();
    let path = dir.path().join("wd.sock");
    let mut notify = NotifySocket::new(dir.path());
    let log = dir.path().join("ringxferd.log");
    // WATCHDOG_USEC of 400 ms: the loop ticks every 200 ms. WATCHDOG_PID is
    // left unset, which sd_watchdog_enabled(3) takes as "this process".
    let mut child = Command::new(DAEMON_BIN)
        .args(["--socket", path.to_str().expect("utf-8 path")])
        .args(engine_args(&[]))
        .env_remove("RINGXFER_SOCKET")
        .env_remove("RINGXFER_ENGINE")
        .env_remove("LISTEN_FDS")
        .env_remove("LISTEN_PID")
        .env_remove("WATCHDOG_PID")
        .env("WATCHDOG_USEC", "400000")
        .env("NOTIFY_SOCKET", &notify.path)
        .env("RINGXFER_LOG", "debug")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).expect("create the daemon log"))
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {DAEMON_BIN}: {e}"));
    let mut reap = Reap(None);
    notify.expect("READY=1", Duration::from_secs(10), &log);
    // Two keep-alives, each with a status line.
    for _ in 0..2 {
        let ping = notify.expect("WATCHDOG=1", Duration::from_secs(5), &log);
        assert!(
            ping.lines()
                .any(|l| l.starts_with("STATUS=") && l.contains("running")),
            "a keep-alive without a status line: {ping:?}"
        );
    }
    // STOPPING=1 comes when the stop signal is read, before the exit.
    let client = Client::connect(&path).expect("connect");
    let src = zero_source(1 << 50);
    let null = dev_null();
    let job = client
        .submit(src.as_fd(), null.as_fd(), &opts())
        .expect("submit an endless job");
    job.job_id().expect("admitted");
    // SAFETY: kill(2) on our own child's pid, which it still is (not reaped).
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    notify.expect("STOPPING=1", Duration::from_secs(5), &log);
    assert!(
        child.try_wait().expect("try_wait").is_none(),
        "the daemon exited instead of draining its running job"
    );
    reap.0 = Some(child);
    terminate(reap.0.as_mut().expect("running"), &log);
    reap.0 = None;
    drop(client);
}

/// Starts ringxferd as systemd would with two sockets: `unix` as
/// descriptor 3 and `tcp` as 4, named by LISTEN_FDNAMES as
/// ringxferd.socket and ringxferd-tcp.socket name them.
fn spawn_two(unix: RawFd, tcp: RawFd, notify: &Path, log: &Path, args: &[&str]) -> Child {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(r#"LISTEN_PID=$$; export LISTEN_PID; exec "$0" "$@""#)
        .arg(DAEMON_BIN)
        .args(engine_args(args))
        .args(args)
        .env_remove("RINGXFER_SOCKET")
        .env_remove("RINGXFER_ENGINE")
        .env_remove("WATCHDOG_USEC")
        .env("LISTEN_FDS", "2")
        .env("LISTEN_FDNAMES", "ringxferd.socket:tcp")
        .env("NOTIFY_SOCKET", notify)
        .env("RINGXFER_LOG", "debug")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(log).expect("create the daemon log"));
    // SAFETY: the closure runs between fork and exec and calls only dup2
    // and close, which are async-signal-safe, and builds an io::Error from
    // errno, which does not allocate. Both descriptors stay open in the
    // parent until spawn returns. They go through 100 and 101 first, so
    // that neither is overwritten before it is moved (either may be 3 or 4).
    unsafe {
        cmd.pre_exec(move || {
            for (from, to) in [(unix, 100), (tcp, 101), (100, 3), (101, 4)] {
                if libc::dup2(from, to) == -1 {
                    return Err(io::Error::last_os_error());
                }
            }
            libc::close(100);
            libc::close(101);
            Ok(())
        });
    }
    cmd.spawn()
        .unwrap_or_else(|e| panic!("spawn {DAEMON_BIN}: {e}"))
}

#[test]
fn a_tcp_socket_systemd_passes_takes_other_daemons_files() {
    let dir = tmpdir();
    let path = dir.path().join("activated.sock");
    let unix = UnixListener::bind(&path).expect("bind the Unix socket");
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the TCP socket");
    let address = tcp.local_addr().expect("its address");
    let export = tmpdir();
    let conf = dir.path().join("ringxferd.toml");
    // SAFETY: geteuid has no arguments and cannot fail.
    let uid = unsafe { libc::geteuid() };
    let text = format!(
        "insecure_plaintext = true\n\n[[export]]\nname = \"inbox\"\npath = \"{}\"\nuser = \"{uid}\"\n",
        export.path().display()
    );
    fs::write(&conf, text).expect("write the config");
    let mut notify = NotifySocket::new(dir.path());
    let log = dir.path().join("ringxferd.log");
    let conf_arg = conf.to_str().expect("utf-8 path");
    let mut d = Reap(Some(spawn_two(
        unix.as_raw_fd(),
        tcp.as_raw_fd(),
        &notify.path,
        &log,
        &["--config", conf_arg],
    )));
    notify.expect("READY=1", Duration::from_secs(10), &log);
    assert!(
        read(&log).contains(&format!("address={address}")),
        "not listening on systemd's TCP socket:\n{}",
        read(&log)
    );

    let sender = Daemon::start();
    let src = sender.dir().join("pushed.bin");
    let data = pattern(5, 300_000);
    fs::write(&src, &data).expect("write");
    let mut cli = crate::cli_common::cli(&sender.socket);
    cli.arg("copy").arg(&src).arg(format!("{address}:inbox"));
    let out = crate::cli_common::run(cli);
    assert!(
        out.status.success(),
        "{}\n{}",
        crate::cli_common::describe(&out),
        read(&log)
    );
    assert_file_eq(&export.path().join("pushed.bin"), &data);

    terminate(d.0.as_mut().expect("running"), &log);
    d.0 = None;
}
