//! Shell completions and man pages, generated from the command lines
//! themselves (this CLI's and the daemon's), so they cannot drift from the
//! flags. `systemd/install.sh` installs what `manuals` writes.

use std::fs;
use std::io::{self, Write};
use std::path::Path;

use clap::CommandFactory;
use clap_complete::Shell;

use crate::args::Cli;
use crate::error::{CliError, Exit};

/// Prints the completion script for `shell` on stdout.
pub fn completions(shell: Shell) -> Exit {
    // Into memory first: clap_complete panics on a failed write, and a
    // reader that stops early (`| head`) is not an error.
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "ringxfer", &mut script);
    match io::stdout().write_all(&script) {
        Ok(()) => Exit::Done,
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Exit::Done,
        Err(e) => {
            eprintln!("ringxfer: writing the completion script: {e}");
            Exit::Failed
        }
    }
}

/// Writes into `dir`: man1/ringxfer.1 and a page per subcommand
/// (ringxfer-copy.1, ...), man8/ringxferd.8, and completions/ with the
/// scripts for bash (ringxfer), zsh (_ringxfer) and fish (ringxfer.fish).
pub fn manuals(dir: &Path) -> Exit {
    match write_manuals(dir) {
        Ok(()) => Exit::Done,
        Err(err) => {
            eprintln!("ringxfer: {err}");
            err.exit
        }
    }
}

fn write_manuals(dir: &Path) -> Result<(), CliError> {
    let man1 = dir.join("man1");
    let man8 = dir.join("man8");
    let completions = dir.join("completions");
    for d in [&man1, &man8, &completions] {
        fs::create_dir_all(d).map_err(|e| CliError::path("cannot create directory", d, &e))?;
    }
    clap_mangen::generate_to(Cli::command(), &man1)
        .map_err(|e| CliError::path("cannot write man pages into", &man1, &e))?;
    let daemon = ringxfer::settings::Args::command();
    clap_mangen::Man::new(daemon)
        .section("8")
        .generate_to(&man8)
        .map_err(|e| CliError::path("cannot write the man page into", &man8, &e))?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(shell, &mut Cli::command(), "ringxfer", &completions)
            .map_err(|e| CliError::path("cannot write completions into", &completions, &e))?;
    }
    Ok(())
}
