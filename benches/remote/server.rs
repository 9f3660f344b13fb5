//! A server the bench starts as its child (sshd -D, rsync --daemon
//! --no-detach) and the CPU of everything it forks for a connection.
//!
//! Such a server forks a process per connection (sshd: a monitor, which
//! forks the session's processes and the remote rsync) and reaps it when
//! the connection ends; the kernel then adds the child's CPU, and that of
//! all the child had reaped in turn, to the server's cutime + cstime
//! (fields 16 and 17 of /proc/PID/stat). Once the server has no child
//! left, the delta of its utime + stime + cutime + cstime over a run is the
//! whole receiving side's CPU, without racing short-lived processes.

use std::fs::{self, File};
use std::io::Read;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::support::Result;

pub struct Server {
    name: &'static str,
    child: Child,
}

impl Server {
    /// Starts `cmd` (its stderr to `log`) and waits until 127.0.0.1:`port`
    /// greets with `greeting`.
    pub fn start(
        name: &'static str,
        mut cmd: Command,
        log: &Path,
        port: u16,
        greeting: &str,
    ) -> Result<Server> {
        let log_file = File::create(log).map_err(|e| format!("create {}: {e}", log.display()))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .map_err(|e| format!("start {name}: {e}"))?;
        let mut server = Server { name, child };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                let said = fs::read_to_string(log).unwrap_or_default();
                return Err(format!("{name} exited at start-up with {status}: {said}"));
            }
            if greets(port, greeting) {
                return Ok(server);
            }
            if Instant::now() > deadline {
                let host = crate::net::host();
                return Err(format!("{name} did not answer on {host}:{port} in 10 s"));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// CPU seconds of the server and every child it has reaped.
    pub fn cpu(&self) -> Result<f64> {
        stat_secs(self.pid(), &[14, 15, 16, 17])
    }

    /// Waits until the server has reaped every process it forked, so that
    /// [`Server::cpu`] holds the last connection's.
    pub fn wait_reaped(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        while has_children(self.pid()) {
            if Instant::now() > deadline {
                return Err(format!("{}'s children did not end within 20 s", self.name));
            }
            thread::sleep(Duration::from_millis(2));
        }
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        crate::support::stop_child(&mut self.child);
    }
}

/// Whether 127.0.0.1:`port` accepts and its first bytes start with `greeting`.
fn greets(port: u16, greeting: &str) -> bool {
    let Ok(mut s) = TcpStream::connect((crate::net::host(), port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let mut buf = vec![0u8; greeting.len()];
    s.read_exact(&mut buf).is_ok() && buf == greeting.as_bytes()
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no memory effects.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// The fields of /proc/PID/stat `fields` name (numbered from 1, as in
/// proc(5)), all in clock ticks, summed, in seconds.
fn stat_secs(pid: u32, fields: &[usize]) -> Result<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| format!("read /proc/{pid}/stat: {e}"))?;
    let rest = &stat[stat.rfind(')').ok_or("no ')' in /proc/PID/stat")? + 1..];
    // `rest` starts at field 3.
    let all: Vec<&str> = rest.split_whitespace().collect();
    let mut ticks = 0u64;
    for &n in fields {
        ticks += all
            .get(n - 3)
            .and_then(|f| f.parse::<u64>().ok())
            .ok_or_else(|| format!("field {n} of /proc/{pid}/stat is missing"))?;
    }
    Ok(ticks as f64 / clock_ticks())
}

/// Whether any process has `pid` as its parent.
fn has_children(pid: u32) -> bool {
    let Ok(dir) = fs::read_dir("/proc") else {
        return false;
    };
    dir.filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .any(|e| {
            fs::read_to_string(e.path().join("stat")).is_ok_and(|s| {
                s.rfind(')')
                    .and_then(|at| s[at + 1..].split_whitespace().nth(1)?.parse::<u32>().ok())
                    == Some(pid)
            })
        })
}
