//! What the CLI test modules (cli_tree, cli_jobs) share: running the
//! `ringxfer` binary and reading what it printed.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;

use crate::support::*;

pub const CLI_TIMEOUT: Duration = Duration::from_secs(60);

/// `ringxfer --socket SOCKET` with no ambient socket configuration.
pub fn cli(socket: &Path) -> Command {
    let mut c = Command::new(CLI_BIN);
    c.env_remove("RINGXFER_SOCKET")
        .env("XDG_RUNTIME_DIR", socket.parent().unwrap_or(Path::new("/")))
        .arg("--socket")
        .arg(socket);
    cli_engine_env(&mut c);
    default_signals(&mut c);
    c
}

/// The CLI gets SIGINT, SIGTERM and SIGHUP with their default actions, as
/// from an interactive shell: a test run started in the background (`cmd
/// &` ignores SIGINT, nohup SIGHUP) would hand its ignored signals down,
/// and the CLI keeps an ignored signal ignored, as nohup asks, so a test
/// that signals it would wait for a copy that never stops.
pub fn default_signals(c: &mut Command) {
    // SAFETY: signal(2) is async-signal-safe, and only this child's
    // dispositions change, between fork and exec.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(c, || {
            for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
                libc::signal(sig, libc::SIG_DFL);
            }
            Ok(())
        });
    }
}

/// `ringxfer --json copy ARGS... SRC DST`: its output.
pub fn copy_json(d: &Daemon, args: &[&str], src: &Path, dst: &Path) -> Output {
    let mut c = cli(&d.socket);
    c.args(["--json", "copy"]).args(args).arg(src).arg(dst);
    run(c)
}

/// Runs `cmd` to its end (panics after [`CLI_TIMEOUT`]).
pub fn run(cmd: Command) -> Output {
    run_timeout(cmd, CLI_TIMEOUT)
}

pub fn describe(out: &Output) -> String {
    format!(
        "status {}; stdout: {:?}; stderr: {:?}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts the exit status, showing everything the command printed if not.
pub fn assert_exit(out: &Output, code: i32, what: &str) {
    assert_eq!(out.status.code(), Some(code), "{what}: {}", describe(out));
}

/// The JSON objects on stdout, one per non-empty line.
pub fn json_lines(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| {
                panic!("stdout line is not JSON ({e}): {l:?}; {}", describe(out))
            })
        })
        .collect()
}

/// A socket path in `dir` that nothing listens on.
pub fn no_daemon_socket(dir: &Path) -> PathBuf {
    dir.join("nobody-here.sock")
}

/// Jobs the daemon completed while `f` ran.
pub fn jobs_during(d: &Daemon, f: impl FnOnce()) -> u64 {
    let client = std::sync::Arc::new(d.client());
    let before = stats_of(&client).jobs_completed;
    f();
    stats_of(&client).jobs_completed - before
}

/// Drops `path`'s pages from the page cache (written back first).
pub fn evict(path: &Path) {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(path).unwrap();
    f.sync_all().unwrap();
    // SAFETY: an open descriptor; fadvise only drops clean cached pages.
    let ret = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(ret, 0, "fadvise {}", path.display());
}
