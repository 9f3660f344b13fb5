//! The daemon's settings: the config file, its precedence under the
//! environment and flags, its errors, the example in the repository, and
//! `ringxferd --check` on this machine's real kernel.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::support::*;

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config/ringxferd.toml.example");

/// Writes `text` as `ringxferd.toml` in `dir`.
fn config(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("ringxferd.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

/// `ringxferd ARGS` with a clean environment for settings, to completion.
/// No test engine is added: these check settings and `--check` as given.
fn daemon(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(DAEMON_BIN);
    cmd.args(args)
        .env_remove("RINGXFER_SOCKET")
        .env_remove("RINGXFER_LOG")
        .env_remove("RINGXFER_ENGINE");
    for (k, v) in env {
        cmd.env(k, v);
    }
    run_timeout(cmd, Duration::from_secs(30))
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn code(out: &Output) -> Option<i32> {
    out.status.code()
}

fn s(p: &Path) -> &str {
    p.to_str().expect("test paths are UTF-8")
}

#[test]
fn file_values_reach_clients_and_flags_override_them() {
    let dir = tmpdir();
    let path = config(
        dir.path(),
        "max_jobs_per_connection = 7\nmax_jobs_per_user = 11\nmax_queued_bytes_per_user = \"1GiB\"\n",
    );
    let d = Daemon::start_with(&["--config", s(&path)]);
    let limits = d.client().limits();
    assert_eq!(limits.max_jobs_per_connection, 7, "{}", d.log());
    assert_eq!(limits.max_jobs_per_user, 11);
    assert_eq!(limits.max_queued_bytes_per_user, 1 << 30);
    // The start-up log says where the changed settings came from.
    let log = d.log();
    assert!(
        log.contains("max_jobs_per_connection=7 (file "),
        "start-up log: {log}"
    );
    d.stop();

    let d = Daemon::start_with(&["--config", s(&path), "--max-jobs-per-connection", "9"]);
    let limits = d.client().limits();
    assert_eq!(limits.max_jobs_per_connection, 9, "the flag wins");
    assert_eq!(limits.max_jobs_per_user, 11, "the file still applies");
    d.stop();
}

#[test]
fn a_file_setting_limits_jobs_for_real() {
    // The per-connection cap from the file is enforced, not only announced.
    let dir = tmpdir();
    let path = config(dir.path(), "max_jobs_per_connection = 1\n");
    let d = Daemon::start_with(&["--config", s(&path)]);
    let c = d.client();
    let (first, _hold) = submit_idle(&c, &opts());
    let (second, _hold2) = submit_idle(&c, &opts());
    let f = failed(
        wait(second),
        ringxfer_ipc::FailureKind::LimitExceeded,
        "second job over a cap of 1",
    );
    assert!(f.message.contains("max-jobs-per-connection"), "{f:?}");
    // The idle job would hold a graceful stop for its grace period: closing
    // the connection cancels it first.
    drop(first);
    drop(c);
    d.stop();
}

#[test]
fn unknown_key_and_bad_value_exit_2_naming_file_key_and_value() {
    let dir = tmpdir();
    let sock = dir.path().join("x.sock");
    let path = config(dir.path(), "pipes = 8\npipe-size = \"2MiB\"\n");
    let out = daemon(&["--config", s(&path), "--socket", s(&sock)], &[]);
    let err = stderr(&out);
    assert_eq!(code(&out), Some(2), "{err}");
    assert!(err.contains(&format!("{}:2:", path.display())), "{err}");
    assert!(err.contains("unknown key `pipe-size`"), "{err}");
    assert!(err.contains("did you mean `pipe_size`?"), "{err}");
    assert!(!sock.exists(), "nothing was served");

    let path = config(dir.path(), "pipes = 8\npipe_size = \"12 parsecs\"\n");
    let out = daemon(&["--config", s(&path), "--socket", s(&sock)], &[]);
    let err = stderr(&out);
    assert_eq!(code(&out), Some(2), "{err}");
    assert!(
        err.contains(&format!(
            "{}:2: key `pipe_size`: \"12 parsecs\" is not a size (use bytes or a unit: 64KiB, 1MiB)",
            path.display()
        )),
        "{err}"
    );

    let path = config(dir.path(), "ring_entries = 4\n");
    let out = daemon(&["--config", s(&path), "--socket", s(&sock)], &[]);
    let err = stderr(&out);
    assert_eq!(code(&out), Some(2), "{err}");
    assert!(
        err.contains("key `ring_entries`: 4 is out of range: use an integer from 8 to 32768"),
        "{err}"
    );

    let path = config(dir.path(), "pipes = [\n");
    let out = daemon(&["--config", s(&path), "--socket", s(&sock)], &[]);
    assert_eq!(code(&out), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("not valid TOML"), "{}", stderr(&out));
}

#[test]
fn a_named_config_must_exist() {
    let dir = tmpdir();
    let missing = dir.path().join("nope.toml");
    let out = daemon(
        &[
            "--config",
            s(&missing),
            "--socket",
            s(&dir.path().join("x.sock")),
        ],
        &[],
    );
    let err = stderr(&out);
    assert_eq!(code(&out), Some(2), "{err}");
    assert!(
        err.contains(&format!(
            "{}: cannot read the config file",
            missing.display()
        )),
        "{err}"
    );
    let out = daemon(&["--config", s(&missing), "--no-config", "--check"], &[]);
    assert_eq!(code(&out), Some(2), "--config and --no-config conflict");
}

#[test]
fn environment_sits_between_file_and_flags() {
    let dir = tmpdir();
    let sock = dir.path().join("x.sock");
    let path = config(dir.path(), "log_level = \"warn\"\npipes = 5\n");
    let base = ["--config", s(&path), "--socket", s(&sock), "--check"];
    let out = daemon(&base, &[("RINGXFER_LOG", "debug")]);
    let text = stdout(&out);
    assert!(
        text.contains("setting log_level = debug (env RINGXFER_LOG)"),
        "{text}"
    );
    assert!(
        text.contains(&format!("setting pipes = 5 (file {})", path.display())),
        "{text}"
    );
    let mut with_flag = base.to_vec();
    with_flag.extend(["--log-level", "error"]);
    let out = daemon(&with_flag, &[("RINGXFER_LOG", "debug")]);
    assert!(
        stdout(&out).contains("setting log_level = error (flag --log-level)"),
        "{}",
        stdout(&out)
    );
    let out = daemon(&base, &[("RINGXFER_LOG", "info,[[[")]);
    assert_eq!(code(&out), Some(2));
    assert!(stderr(&out).contains("RINGXFER_LOG"), "{}", stderr(&out));
}

#[test]
fn the_example_config_is_accepted_and_changes_nothing() {
    let dir = tmpdir();
    let sock = dir.path().join("x.sock");
    let out = daemon(&["--config", EXAMPLE, "--socket", s(&sock), "--check"], &[]);
    let text = stdout(&out);
    assert_eq!(code(&out), Some(0), "{text}{}", stderr(&out));
    let plain = daemon(&["--no-config", "--socket", s(&sock), "--check"], &[]);
    let values = |t: &str| -> Vec<String> {
        t.lines()
            .filter(|l| l.starts_with("setting "))
            .map(|l| l.rsplit_once(" (").map_or(l, |(v, _)| v).to_string())
            .collect()
    };
    assert_eq!(
        values(&text),
        values(&stdout(&plain)),
        "the example's values are the defaults"
    );
    assert!(
        text.contains(&format!("setting pipe_size = 1MiB (file {EXAMPLE})")),
        "{text}"
    );
}

#[test]
fn check_probes_the_kernel_and_exits_0_here() {
    let dir = tmpdir();
    let sock = dir.path().join("sub").join("x.sock");
    let (file, _) = make_file(dir.path(), "probe", 4096, 1);
    let out = daemon(
        &["--no-config", "--socket", s(&sock), "--check", s(&file)],
        &[],
    );
    let text = stdout(&out);
    assert_eq!(code(&out), Some(0), "{text}{}", stderr(&out));
    assert!(
        text.contains("io_uring: io_uring_setup with 256 entries succeeded"),
        "{text}"
    );
    for op in [
        "splice",
        "read_fixed",
        "write_fixed",
        "send_zc",
        "recvmsg",
        "accept",
        "timeout",
        "async_cancel",
        "close",
        "fsync",
        "read",
    ] {
        assert!(text.contains(&format!("opcode {op}: ")), "{op}: {text}");
    }
    assert!(text.contains("setup DEFER_TASKRUN: "), "{text}");
    assert!(text.contains("registered buffers: "), "{text}");
    assert!(
        text.contains(&format!("socket {}: free", sock.display())),
        "{text}"
    );
    assert!(
        text.contains(&format!("direct I/O {}: ", file.display())),
        "{text}"
    );
    assert!(text.contains("result: ringxferd can run here"), "{text}");
    assert!(
        !sock.exists() && !sock.parent().is_some_and(Path::exists),
        "--check made nothing"
    );

    let out = daemon(
        &["--no-config", "--socket", s(&sock), "--check", "--json"],
        &[],
    );
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(json["ok"], true, "{json}");
    let settings = json["settings"].as_array().expect("settings");
    let socket = settings
        .iter()
        .find(|e| e["key"] == "socket")
        .expect("socket setting");
    assert_eq!(socket["origin"], "flag");
    assert!(json["facts"]
        .as_array()
        .expect("facts")
        .iter()
        .any(|f| f["topic"] == "opcode splice" && f["level"] == "ok"));
}

#[test]
fn check_fails_when_a_daemon_already_serves_the_socket() {
    let d = Daemon::start();
    let out = daemon(&["--no-config", "--socket", s(&d.socket), "--check"], &[]);
    let text = stdout(&out);
    assert_eq!(code(&out), Some(1), "{text}");
    assert!(text.contains("a daemon already answers there"), "{text}");
    d.stop();
}

/// Asks the kernel for TCP's `tls` upper-layer protocol on a loopback
/// connection, as a program would, apart from the daemon's probe.
fn tls_ulp_here() -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let sock = std::net::TcpStream::connect(listener.local_addr()?)?;
    let _far = listener.accept()?;
    // SAFETY: the socket is open for the call; the kernel reads 3 bytes of
    // the static name.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_TCP,
            libc::TCP_ULP,
            b"tls".as_ptr().cast(),
            3,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Transfers between hosts encrypt in the kernel where it can: `--check`
/// says whether it can, as the kernel answers (here, where the kernel has
/// no `tls` module: not available, and why).
#[test]
fn check_says_whether_the_kernel_can_take_over_tls() {
    let dir = tmpdir();
    let sock = dir.path().join("x.sock");
    let out = daemon(
        &["--no-config", "--socket", s(&sock), "--check", "--json"],
        &[],
    );
    let report: serde_json::Value = serde_json::from_str(&stdout(&out))
        .unwrap_or_else(|e| panic!("--check --json: {e}: {}", stdout(&out)));
    let facts = report["facts"].as_array().expect("facts");
    let fact = facts
        .iter()
        .find(|f| f["topic"] == "kernel TLS")
        .unwrap_or_else(|| panic!("no kernel TLS fact in {facts:?}"));
    let text = fact["text"].as_str().expect("text");
    match tls_ulp_here() {
        Ok(()) => assert!(text.starts_with("available: TLS 1.3"), "{text}"),
        Err(e) => {
            assert_eq!(fact["level"], "info", "never a failure: {fact}");
            assert!(text.starts_with("not available"), "{text}");
            assert!(text.contains(&e.to_string()), "{text} does not say {e}");
            if e.raw_os_error() == Some(libc::ENOENT) {
                assert!(text.contains("no tls module"), "{text}");
            }
        }
    }
    assert_eq!(
        report["ok"], true,
        "a kernel without TLS still runs the daemon"
    );
}
