//! The command line: what the user may type, and nothing about what it does.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use ringxfer_ipc::Strategy;

use ringxfer::size::parse_size;

/// Move bytes between files and sockets through the ringxfer engine.
///
/// Transfers go to the ringxferd daemon; when none answers, the engine runs
/// inside this process instead (unless --daemon-only).
#[derive(Debug, Parser)]
#[command(name = "ringxfer", version, about)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalOpts,

    #[command(subcommand)]
    pub command: Command,
}

/// Flags every subcommand understands, before or after its name.
#[derive(Debug, Args)]
#[command(next_help_heading = "Global options")]
pub struct GlobalOpts {
    /// The daemon's Unix socket [env: RINGXFER_SOCKET; default:
    /// $XDG_RUNTIME_DIR/ringxfer/ringxferd.sock, else /run/ringxfer/ringxferd.sock].
    // Neither clap `env` nor a clap default: ringxfer_ipc::default_socket_path()
    // reads RINGXFER_SOCKET and the XDG fallback exactly as the daemon does,
    // and treats an empty variable as unset, where clap would call it a
    // missing value.
    #[arg(long, global = true, value_name = "PATH")]
    pub socket: Option<PathBuf>,

    /// How to move the bytes: auto (the engine picks) or splice.
    #[arg(long, global = true, default_value = "auto", value_parser = parse_strategy)]
    pub strategy: Strategy,

    /// Print one JSON object per result on stdout instead of text.
    #[arg(long, global = true)]
    pub json: bool,

    /// Print nothing but errors.
    #[arg(short, long, global = true)]
    pub quiet: bool,

    /// Fail (exit 3) instead of running the engine in-process when no daemon answers.
    #[arg(long, global = true)]
    pub daemon_only: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Copy a file: SRC to DST, or into DST/ when DST is a directory.
    Copy {
        /// The file to read.
        src: PathBuf,
        /// The file to write (created or truncated), or a directory to copy into.
        dst: PathBuf,
        #[command(flatten)]
        range: RangeOpts,
    },
    /// Send a file to a TCP peer.
    Send {
        /// The file to read.
        src: PathBuf,
        /// Where to connect, e.g. 10.0.0.2:7000 or host.example:7000.
        #[arg(value_name = "HOST:PORT")]
        addr: String,
        #[command(flatten)]
        range: RangeOpts,
    },
    /// Accept one TCP connection and write everything it sends to a file.
    Recv {
        /// The address to listen on, e.g. 0.0.0.0:7000 (port 0 picks a free port).
        #[arg(value_name = "BIND_ADDR")]
        bind: String,
        /// The file to write (created or truncated).
        dst: PathBuf,
    },
    /// Show the daemon's counters.
    Stats,
}

/// Which part of the source to move.
#[derive(Debug, Clone, Copy, Default, Args)]
pub struct RangeOpts {
    /// Start reading SRC this many bytes in (e.g. 4096, 4KiB, 1M).
    #[arg(long, value_name = "SIZE", default_value = "0", value_parser = parse_size)]
    pub offset: u64,

    /// Move at most this many bytes (e.g. 1MiB, 2G) [default: to the end of SRC].
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub length: Option<u64>,
}

/// Wraps `Strategy`'s FromStr so that clap reports its message as a usage error.
fn parse_strategy(s: &str) -> Result<Strategy, String> {
    s.parse()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_flags_after_the_subcommand() {
        let cli = Cli::try_parse_from([
            "ringxfer",
            "copy",
            "a",
            "b",
            "--json",
            "--strategy",
            "splice",
            "--length",
            "4KiB",
        ])
        .expect("valid command line");
        assert!(cli.global.json);
        assert_eq!(cli.global.strategy, Strategy::Splice);
        match cli.command {
            Command::Copy { range, .. } => {
                assert_eq!(range.offset, 0);
                assert_eq!(range.length, Some(4096));
            }
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn bad_size_and_strategy_are_usage_errors() {
        for argv in [
            &["ringxfer", "copy", "a", "b", "--offset", "lots"][..],
            &["ringxfer", "--strategy", "fast", "stats"][..],
        ] {
            let err = Cli::try_parse_from(argv).expect_err("must be refused");
            assert_eq!(err.exit_code(), 2);
        }
    }
}
