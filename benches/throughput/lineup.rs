//! Who races: the contenders of each group, their names, and which of them
//! this run measures.

use std::path::PathBuf;

use crate::support::peers::find_program;

/// A program run as users run it, found on PATH or in ~/.cargo/bin.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Program {
    Cp,
    Xcp,
    Cpz,
}

impl Program {
    pub fn command(self) -> &'static str {
        match self {
            Program::Cp => "cp",
            Program::Xcp => "xcp",
            Program::Cpz => "cpz",
        }
    }

    /// The flags before SRC DST.
    pub fn flags(self) -> &'static [&'static str] {
        match self {
            Program::Xcp => &["--no-progress"],
            Program::Cp | Program::Cpz => &[],
        }
    }

    fn install_hint(self) -> &'static str {
        match self {
            Program::Cp => "coreutils",
            Program::Xcp => "cargo install xcp",
            Program::Cpz => "cargo install cpz",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Contender {
    DaemonCopy,
    EmbeddedCopy,
    IoCopy,
    ReadWrite,
    /// splice(2) file -> pipe -> file on this thread, no io_uring, through a
    /// pipe of `pipe` bytes, written out at most `write` bytes a call: the
    /// ceiling of the splice path itself, to tell engine overhead from what
    /// splice costs in the kernel. The size of each write is the size of the
    /// page-cache folios it allocates, which is what fresh memory charges
    /// for; the pipe's size is not.
    SpliceLoop {
        pipe: usize,
        write: usize,
    },
    Program(Program),
    /// Through daemon N: 0 is the one started with RINGXFER_BENCH_DAEMON_ARGS,
    /// the others RINGXFER_BENCH_SEND_DAEMONS's.
    DaemonSend(usize),
    Sendfile,
}

impl Contender {
    /// The daemon whose CPU counts towards this contender's.
    pub fn daemon(self) -> Option<usize> {
        match self {
            Contender::DaemonCopy => Some(0),
            Contender::DaemonSend(n) => Some(n),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Group {
    /// File to file, page cache hot.
    Copy,
    /// File to a loopback TCP socket.
    Send,
}

/// A contender as this run knows it.
pub struct Entry {
    pub c: Contender,
    pub group: Group,
    pub name: String,
    /// Its name in RINGXFER_BENCH_CONTENDERS and the JSON.
    pub key: String,
    pub program: Option<PathBuf>,
}

fn entry(c: Contender, group: Group, name: impl Into<String>, key: impl Into<String>) -> Entry {
    Entry {
        c,
        group,
        name: name.into(),
        key: key.into(),
        program: None,
    }
}

/// Every contender this run measures, copiers first, and a note for each
/// peer left out because it is not installed. `send_daemons` holds the
/// flags of each extra daemon that races in the send group; `only` is
/// RINGXFER_BENCH_CONTENDERS: keys, or their prefixes up to an `_`.
pub fn lineup(send_daemons: &[Vec<String>], only: Option<&[String]>) -> (Vec<Entry>, Vec<String>) {
    let mut all = vec![
        entry(
            Contender::DaemonCopy,
            Group::Copy,
            "daemon copy (ringxferd)",
            "daemon_copy",
        ),
        entry(
            Contender::EmbeddedCopy,
            Group::Copy,
            "embedded engine copy",
            "embedded_copy",
        ),
        entry(
            Contender::IoCopy,
            Group::Copy,
            "std::io::copy (copy_file_range)",
            "io_copy",
        ),
        entry(
            Contender::ReadWrite,
            Group::Copy,
            "read/write loop, 1 MiB buffer",
            "read_write",
        ),
        entry(
            Contender::SpliceLoop {
                pipe: 1 << 20,
                write: 1 << 20,
            },
            Group::Copy,
            "splice(2) loop, 1 MiB pipe",
            "splice_loop_1m",
        ),
        entry(
            Contender::SpliceLoop {
                pipe: 1 << 20,
                write: 64 << 10,
            },
            Group::Copy,
            "splice(2) loop, 1 MiB pipe, 64 KiB writes",
            "splice_loop_1m_64k",
        ),
        entry(
            Contender::SpliceLoop {
                pipe: 64 << 10,
                write: 64 << 10,
            },
            Group::Copy,
            "splice(2) loop, 64 KiB pipe",
            "splice_loop_64k",
        ),
    ];
    let mut notes = Vec::new();
    for p in [Program::Cp, Program::Xcp, Program::Cpz] {
        match find_program(p.command()) {
            Some(path) => {
                let mut e = entry(Contender::Program(p), Group::Copy, p.command(), p.command());
                e.program = Some(path);
                all.push(e);
            }
            None => notes.push(format!(
                "{} is not installed ({}): its rows are skipped",
                p.command(),
                p.install_hint()
            )),
        }
    }
    all.push(entry(
        Contender::DaemonSend(0),
        Group::Send,
        "daemon send (ringxferd)",
        "daemon_send",
    ));
    for (i, flags) in send_daemons.iter().enumerate() {
        all.push(entry(
            Contender::DaemonSend(i + 1),
            Group::Send,
            format!("daemon send [{}]", flags.join(" ")),
            format!("daemon_send_{}", i + 1),
        ));
    }
    all.push(entry(
        Contender::Sendfile,
        Group::Send,
        "sendfile(2) loop",
        "sendfile",
    ));

    if let Some(only) = only {
        all.retain(|e| {
            only.iter()
                .any(|k| e.key == *k || e.key.starts_with(&format!("{k}_")))
        });
    }
    (all, notes)
}
