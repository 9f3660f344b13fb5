//! Who races: ringxfer through its daemon, and cp, xcp and cpz as users run
//! them; one timed run of any of them.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::peers::{find_program, run_timed};
use crate::support::{DaemonCpu, Result};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Who {
    Ringxfer,
    Cp,
    Xcp,
    Cpz,
}

impl Who {
    const ALL: [Who; 4] = [Who::Ringxfer, Who::Cp, Who::Xcp, Who::Cpz];

    /// Its name in RINGXFER_BENCH_CONTENDERS and the JSON.
    pub fn key(self) -> &'static str {
        match self {
            Who::Ringxfer => "ringxfer",
            Who::Cp => "cp",
            Who::Xcp => "xcp",
            Who::Cpz => "cpz",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Who::Ringxfer => "ringxfer copy -r",
            Who::Cp => "cp -r",
            Who::Xcp => "xcp -r",
            Who::Cpz => "cpz",
        }
    }

    /// The versions this bench was last measured with.
    fn install_hint(self) -> &'static str {
        match self {
            Who::Ringxfer => "cargo build --release",
            Who::Cp => "coreutils",
            Who::Xcp => "cargo install xcp --version 0.24.9 --locked",
            Who::Cpz => "cargo install cpz --version 3.2.1 --locked",
        }
    }
}

pub struct Contender {
    pub who: Who,
    pub program: PathBuf,
    /// What `program --version` says first.
    pub version: String,
}

/// ringxfer's CLI and the daemon it talks to.
pub struct Ringxfer {
    pub socket: PathBuf,
    pub cpu: DaemonCpu,
}

/// One run's figures.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    pub wall: f64,
    /// The program's user + system seconds (rusage of the reaped child).
    pub cpu: f64,
    /// The daemon's, for ringxfer; 0 for the others.
    pub daemon_cpu: f64,
    /// Bytes the file system had in use more after the copy (and a sync).
    pub disk: u64,
}

impl Sample {
    pub fn total_cpu(&self) -> f64 {
        self.cpu + self.daemon_cpu
    }
}

fn version(program: &Path) -> String {
    Command::new(program)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(str::to_string)
        })
        .unwrap_or_else(|| "version unknown".into())
}

/// The contenders found (ringxfer's CLI is `cli`), and a note for each one
/// left out because it is not installed. `only` is
/// RINGXFER_BENCH_CONTENDERS's keys.
pub fn lineup(cli: &Path, only: Option<&[String]>) -> (Vec<Contender>, Vec<String>) {
    let mut out = Vec::new();
    let mut notes = Vec::new();
    for who in Who::ALL {
        if only.is_some_and(|o| !o.iter().any(|k| k == who.key())) {
            continue;
        }
        let program = match who {
            Who::Ringxfer => Some(cli.to_path_buf()).filter(|p| p.is_file()),
            _ => find_program(who.key()),
        };
        match program {
            Some(program) => out.push(Contender {
                who,
                version: version(&program),
                program,
            }),
            None => notes.push(format!(
                "{} is not installed (on PATH or in ~/.cargo/bin): skipped; install it with `{}`",
                who.key(),
                who.install_hint()
            )),
        }
    }
    (out, notes)
}

impl Contender {
    /// The command that copies the tree `src` to `dst` (which does not
    /// exist), as a user types it.
    fn command(&self, rx: &Ringxfer, src: &Path, dst: &Path) -> Command {
        let mut c = Command::new(&self.program);
        match self.who {
            Who::Ringxfer => c
                .arg("--socket")
                .arg(&rx.socket)
                .arg("--daemon-only")
                .args(["copy", "-r"]),
            Who::Cp => c.arg("-r"),
            Who::Xcp => c.args(["-r", "--no-progress"]),
            Who::Cpz => &mut c,
        };
        c.arg(src).arg(dst);
        c
    }

    /// Copies `src` to `dst`, timed: wall and CPU seconds, the daemon's
    /// CPU included for ringxfer.
    pub fn run(&self, rx: &Ringxfer, src: &Path, dst: &Path) -> Result<Sample> {
        let cmd = self.command(rx, src, dst);
        let daemon = self.who == Who::Ringxfer;
        let d0 = if daemon { rx.cpu.secs()? } else { 0.0 };
        let (wall, cpu) = run_timed(cmd)?;
        let d1 = if daemon { rx.cpu.secs()? } else { 0.0 };
        Ok(Sample {
            wall,
            cpu,
            daemon_cpu: d1 - d0,
            disk: 0,
        })
    }
}
