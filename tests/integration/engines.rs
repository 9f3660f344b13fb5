//! Choosing the engine: `--engine uring|threads|auto`, and the automatic
//! fallback tested for real. The daemon (and `--check`, and the CLI's
//! in-process engine) run under a seccomp filter that makes io_uring_setup
//! fail (`seccomp.rs`), as in a container whose profile forbids io_uring.
//!
//! These tests pick their engine themselves, so they test the same thing
//! whatever RINGXFER_TEST_ENGINE says.

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::path::Path;
use std::process::{Command, Output};
use std::thread;
use std::time::Duration;

use ringxfer::io::unavailable;

use crate::cli_common::{cli, describe, no_daemon_socket, run};
use crate::seccomp::{filter_or_skip, Refusal};
use crate::support::*;

/// How long a `--check` or a daemon that fails at start-up may take.
const SHORT: Duration = Duration::from_secs(30);

/// What the daemon and `--check` will say caused `refusal` (the test runs
/// on the same machine, so it reads the same sysctl they do).
fn cause(refusal: Refusal) -> String {
    unavailable::cause(&std::io::Error::from_raw_os_error(refusal.errno()), 256)
}

/// "EPERM (Operation not permitted)", as the daemon names the errno.
fn errno_text(refusal: Refusal) -> String {
    unavailable::errno_name(&std::io::Error::from_raw_os_error(refusal.errno()))
}

/// kernel.io_uring_disabled, if this kernel has it.
fn io_uring_disabled() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .ok()
        .map(|v| v.trim().to_string())
}

/// `ringxferd --check` with `args` under a filter answering `refusal`, with
/// no config file and no settings from the environment (so `engine` is at
/// its default, auto, unless `args` set it); `None` (skipped) where the
/// filter cannot be built.
fn check_under(refusal: Refusal, args: &[&str]) -> Option<Output> {
    let filter = filter_or_skip(refusal)?;
    let dir = tmpdir();
    let mut cmd = Command::new(DAEMON_BIN);
    cmd.args(["--no-config", "--check", "--socket"])
        .arg(dir.path().join("x.sock"))
        .args(args)
        .env_remove("RINGXFER_SOCKET")
        .env_remove("RINGXFER_LOG")
        .env_remove("RINGXFER_ENGINE");
    filter.apply(&mut cmd);
    Some(run_timeout(cmd, SHORT))
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The line of `text` starting with `prefix`; panics showing `text` if none.
fn line<'a>(text: &'a str, prefix: &str) -> &'a str {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starting {prefix:?} in:\n{text}"))
}

#[test]
fn check_under_an_eperm_filter_blames_seccomp_and_falls_back_to_threads() {
    let Some(out) = check_under(Refusal::Eperm, &[]) else {
        return;
    };
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}{}", stderr(&out));
    let setup = line(&text, "warn io_uring: ");
    assert!(
        setup.contains(&format!(
            "io_uring_setup with 256 entries failed with {}: {}",
            errno_text(Refusal::Eperm),
            cause(Refusal::Eperm)
        )),
        "{setup}"
    );
    if io_uring_disabled().as_deref() == Some("0") {
        // The sysctl allows io_uring, so the errno must be the filter's.
        assert!(
            setup.contains("kernel.io_uring_disabled = 0, so not the sysctl: a seccomp filter"),
            "{setup}"
        );
    }
    assert!(
        setup.ends_with("The daemon will run the threads engine: engine = auto (the default)"),
        "{setup}"
    );
    let engine = line(&text, "info engine: ");
    assert!(
        engine.contains("the daemon will run the threads engine")
            && engine.contains("io_uring_setup fails with EPERM"),
        "{engine}"
    );
    // The ring's own probes mean nothing without a ring.
    assert!(!text.contains("opcode "), "{text}");
    assert!(!text.contains("registered buffers"), "{text}");
    assert!(text.contains("result: ringxferd can run here"), "{text}");

    let Some(out) = check_under(Refusal::Eperm, &["--json"]) else {
        return;
    };
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("--json: {e}: {}", stdout(&out)));
    assert_eq!(json["ok"], true, "{json}");
    assert_eq!(json["engine"], "threads", "{json}");
}

#[test]
fn check_under_an_eperm_filter_fails_when_uring_is_insisted_on() {
    let Some(out) = check_under(Refusal::Eperm, &["--engine", "uring"]) else {
        return;
    };
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}{}", stderr(&out));
    let setup = line(&text, "FAIL io_uring: ");
    assert!(setup.contains("failed with EPERM"), "{setup}");
    assert!(
        setup.contains("With engine = uring (flag --engine) the daemon will not start"),
        "{setup}"
    );
    assert!(
        line(&text, "info engine: ").contains("so the daemon will not start"),
        "{text}"
    );
    assert!(
        text.contains("result: ringxferd cannot run like this"),
        "{text}"
    );

    // Asked for threads, the failed probe is only information.
    let Some(out) = check_under(Refusal::Eperm, &["--engine", "threads"]) else {
        return;
    };
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}{}", stderr(&out));
    let setup = line(&text, "info io_uring: ");
    assert!(
        setup.contains("failed with EPERM") && setup.contains("Not needed: engine = threads"),
        "{setup}"
    );
    assert!(
        text.contains("result: ringxferd can run here (0 warnings)"),
        "{text}"
    );
}

#[test]
fn check_under_an_enosys_filter_says_enosys() {
    let Some(out) = check_under(Refusal::Enosys, &[]) else {
        return;
    };
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}{}", stderr(&out));
    let setup = line(&text, "warn io_uring: ");
    assert!(
        setup.contains(&format!(
            "failed with ENOSYS (Function not implemented): {}",
            cause(Refusal::Enosys)
        )),
        "{setup}"
    );
    assert!(
        setup.contains("or a seccomp filter answers ENOSYS"),
        "{setup}"
    );
    assert!(
        line(&text, "info engine: ").contains("the daemon will run the threads engine"),
        "{text}"
    );
}

/// Lines of the daemon's log containing `needle`.
fn lines_with<'a>(log: &'a str, needle: &str) -> Vec<&'a str> {
    log.lines().filter(|l| l.contains(needle)).collect()
}

/// The "engine ready" line's `engine` field: the tracing formatter writes a
/// string field quoted (engine="threads"), a Display one bare; either is it.
fn engine_ready(log: &str, engine: &str) -> bool {
    lines_with(log, "engine ready").iter().any(|l| {
        l.contains(&format!("engine=\"{engine}\"")) || l.contains(&format!("engine={engine} "))
    })
}

/// A file copy and a file-to-TCP send through `d`, each checked byte for byte.
fn copy_and_send(d: &Daemon, what: &str) {
    let client = d.client();
    let dir = tmpdir();
    // Larger than a pipe and a buffer, and odd, so the copy takes several
    // pieces and a short last one.
    let len = (3 << 20) + 4097;
    let (src, data) = make_file(dir.path(), "src", len, 0xe9);
    let dst = dir.path().join("dst");
    let (s, t) = (open_src(&src), create_dst(&dst));
    let h = client
        .submit(s.as_fd(), t.as_fd(), &opts())
        .unwrap_or_else(|e| panic!("{what}: submit copy: {e:?}"));
    drop((s, t));
    let c = completed(wait(h), &format!("{what}: copy"));
    assert_eq!(c.bytes, len as u64, "{what}: copy bytes");
    assert_file_eq(&dst, &data);

    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let reader = thread::spawn(move || -> std::io::Result<Vec<u8>> {
        let (mut s, _) = listener.accept()?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        let mut v = Vec::new();
        s.read_to_end(&mut v)?;
        Ok(v)
    });
    let conn = TcpStream::connect(addr).expect("connect");
    let s = open_src(&src);
    let h = client
        .submit(s.as_fd(), conn.as_fd(), &opts())
        .unwrap_or_else(|e| panic!("{what}: submit send: {e:?}"));
    let r = wait(h);
    // Ours is then the last descriptor of the socket: closing it is the EOF.
    drop(conn);
    let got = reader
        .join()
        .expect("reader thread")
        .unwrap_or_else(|e| panic!("{what}: no EOF within 30 s of the send: {e}"));
    let c = completed(r, &format!("{what}: send"));
    assert_eq!(c.bytes, len as u64, "{what}: send bytes");
    assert_bytes_eq(&got, &data, &format!("{what}: bytes received over TCP"));
}

/// The daemon's log once the engine has said it is ready: the socket is
/// bound before the engine starts, so a daemon that answers connect may not
/// have logged it yet.
fn log_once_ready(d: &Daemon) -> String {
    let mut log = d.log();
    poll_until(Duration::from_secs(10), || {
        log = d.log();
        log.contains("engine ready")
    });
    log
}

// Needs the threads engine (and its log lines).
#[test]
fn auto_under_an_eperm_filter_says_why_once_and_serves_with_threads() {
    let Some(filter) = filter_or_skip(Refusal::Eperm) else {
        return;
    };
    let d = Daemon::start_customized(None, &["--engine", "auto"], |cmd| filter.apply(cmd));
    let log = log_once_ready(&d);
    let fallback = lines_with(&log, "using the threads engine");
    assert_eq!(fallback.len(), 1, "one fallback line; log:\n{log}");
    let why = cause(Refusal::Eperm);
    assert!(
        fallback[0].contains("EPERM") && fallback[0].contains(&why),
        "the fallback line names the errno and the cause ({why}); log:\n{log}"
    );
    assert_eq!(
        lines_with(&log, &why).len(),
        1,
        "the cause is said once; log:\n{log}"
    );
    assert!(
        engine_ready(&log, "threads"),
        "an engine ready line with engine=threads; log:\n{log}"
    );
    copy_and_send(&d, "threads after a fallback");
    // Still said only once, jobs or not.
    let log = d.log();
    assert_eq!(
        lines_with(&log, "using the threads engine").len(),
        1,
        "{log}"
    );
    d.stop();
}

// Needs the threads engine.
#[test]
fn threads_when_asked_needs_no_io_uring_and_explains_nothing() {
    let Some(filter) = filter_or_skip(Refusal::Eperm) else {
        return;
    };
    let d = Daemon::start_customized(None, &["--engine", "threads"], |cmd| filter.apply(cmd));
    copy_and_send(&d, "threads asked for");
    let log = log_once_ready(&d);
    assert!(engine_ready(&log, "threads"), "{log}");
    assert!(
        lines_with(&log, "using the threads engine").is_empty(),
        "nothing fell back, so nothing is explained; log:\n{log}"
    );
    d.stop();
}

// Needs the engine's "engine ready" line (it lands with the threads engine).
#[test]
fn auto_with_io_uring_allowed_runs_io_uring_quietly() {
    let d = Daemon::start_with(&["--engine", "auto"]);
    let log = log_once_ready(&d);
    assert!(engine_ready(&log, "uring"), "{log}");
    assert!(
        lines_with(&log, "using the threads engine").is_empty(),
        "{log}"
    );
    d.stop();
}

#[test]
fn uring_under_an_eperm_filter_refuses_to_start_naming_the_call_and_errno() {
    let Some(filter) = filter_or_skip(Refusal::Eperm) else {
        return;
    };
    let dir = tmpdir();
    let socket = dir.path().join("x.sock");
    let mut cmd = daemon_command(&socket, &["--engine", "uring"]);
    filter.apply(&mut cmd);
    let out = run_timeout(cmd, SHORT);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        lines_with(&err, "ringxferd: ")
            .iter()
            .any(|l| l.contains("io_uring_setup") && l.contains("EPERM")),
        "the error names io_uring_setup and EPERM: {err}"
    );
    assert!(
        !socket.exists(),
        "a daemon that did not start leaves no socket"
    );
}

/// `ringxfer copy` with no daemon, so through its in-process engine, under
/// `refusal`'s filter with `RINGXFER_ENGINE` = `engine`.
fn cli_copy_under(refusal: Refusal, engine: &str, dir: &Path) -> Option<(Output, Vec<u8>)> {
    let filter = filter_or_skip(refusal)?;
    // Over the most data a hot single file the CLI copies itself may hold
    // (32 MiB), so that the engine copies it.
    let (src, data) = make_file(dir, "src", (32 << 20) + 3, 0xc1);
    let mut c = cli(&no_daemon_socket(dir));
    c.env("RINGXFER_ENGINE", engine)
        .arg("copy")
        .arg(&src)
        .arg(dir.join("dst"));
    filter.apply(&mut c);
    Some((run(c), data))
}

// Needs the threads engine.
#[test]
fn the_in_process_engine_falls_back_too() {
    let dir = tmpdir();
    let Some((out, data)) = cli_copy_under(Refusal::Eperm, "auto", dir.path()) else {
        return;
    };
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_file_eq(&dir.path().join("dst"), &data);
}

#[test]
fn the_in_process_engine_honours_ringxfer_engine() {
    let dir = tmpdir();
    let Some((out, _)) = cli_copy_under(Refusal::Eperm, "uring", dir.path()) else {
        return;
    };
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("in-process engine failed to start") && err.contains("io_uring_setup"),
        "{}",
        describe(&out)
    );

    let dir = tmpdir();
    let mut c = cli(&no_daemon_socket(dir.path()));
    // Over 32 MiB: the CLI would copy a smaller hot file itself, needing
    // no engine.
    let (src, _) = make_file(dir.path(), "src", (32 << 20) + 100, 0xc2);
    c.env("RINGXFER_ENGINE", "fast")
        .arg("copy")
        .arg(&src)
        .arg(dir.path().join("dst"));
    let out = run(c);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "environment variable RINGXFER_ENGINE: \"fast\" is not one of uring, threads, auto"
        ),
        "{}",
        describe(&out)
    );
}
