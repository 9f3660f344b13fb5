//! Who races: ringxfer pushing over TLS and in plaintext, rsync over ssh,
//! rsync to an rsync daemon and openssl's bare TLS copy; one timed,
//! checked run of any of them.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::openssl::TlsCopy;
use crate::place::Want;
use crate::ringxfer::Pair;
use crate::rsync::{OverSsh, Rsyncd};
use crate::support::peers::children_cpu;
use crate::support::Result;

/// One run's figures, in seconds.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    /// Wall time of the sending command, start-up and handshake included;
    /// for openssl, until s_server has exited too, as s_client's end says
    /// nothing of the bytes' arrival.
    pub secs: f64,
    /// CPU of the sending end: the command (and its children) and, for
    /// ringxfer, the sending daemon.
    pub send_cpu: f64,
    /// CPU of the receiving end (its server and whatever it forked).
    pub recv_cpu: f64,
}

impl Sample {
    pub fn total_cpu(&self) -> f64 {
        self.send_cpu + self.recv_cpu
    }
}

/// What moves the file.
pub enum Runner {
    Ringxfer(Pair),
    Ssh(OverSsh),
    Daemon(Rsyncd),
    Openssl(TlsCopy),
}

pub struct Entry {
    /// Its name in the JSON.
    pub key: &'static str,
    pub label: &'static str,
    /// Where the file lands.
    pub dst_dir: PathBuf,
    pub runner: Runner,
}

impl Entry {
    /// Pushes `src` once; checks what landed against `want`. The second
    /// value is a note for the run's line.
    pub fn run(&self, src: &Path, want: &Want) -> Result<(Sample, String)> {
        let (sample, note) = match &self.runner {
            Runner::Ringxfer(p) => p.push(src, want.size)?,
            Runner::Ssh(s) => (s.push(src, &self.dst_dir)?, String::new()),
            Runner::Daemon(d) => (d.push(src)?, String::new()),
            Runner::Openssl(o) => (o.push(src, &self.dst_dir, want.size)?, String::new()),
        };
        let name = src.file_name().ok_or("the source has no name")?;
        want.check(&self.dst_dir.join(name))
            .map_err(|e| format!("{}: {e}", self.label))?;
        Ok((sample, note))
    }
}

/// What a command run to its end gave.
pub struct Timed {
    pub wall: f64,
    /// User + system seconds of the command and the children it waited for.
    pub cpu: f64,
    pub stdout: String,
}

/// Runs `cmd`, which must exit 0: wall time and CPU (RUSAGE_CHILDREN
/// deltas) and its output.
pub fn timed(mut cmd: Command) -> Result<Timed> {
    let desc = format!("{cmd:?}");
    let cpu0 = children_cpu();
    let t0 = Instant::now();
    let out = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("run {desc}: {e}"))?;
    let wall = t0.elapsed().as_secs_f64();
    let cpu = children_cpu() - cpu0;
    if !out.status.success() {
        return Err(format!(
            "{desc} exited with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(Timed {
        wall,
        cpu,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
    })
}

/// The first line `program --version` (or `-V`) prints, on either stream.
pub fn version(program: &Path, flag: &str) -> String {
    Command::new(program)
        .arg(flag)
        .stdin(Stdio::null())
        .output()
        .ok()
        .and_then(|o| {
            let text = if o.stdout.is_empty() {
                o.stderr
            } else {
                o.stdout
            };
            String::from_utf8_lossy(&text)
                .lines()
                .next()
                .map(str::to_string)
        })
        .unwrap_or_else(|| "version unknown".into())
}
