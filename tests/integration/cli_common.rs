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
    c
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
