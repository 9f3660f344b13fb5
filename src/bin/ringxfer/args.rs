//! The command line: what the user may type, and nothing about what it does.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use ringxfer_ipc::{Priority, Reflink, Sparse, Strategy};

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
    /// $XDG_RUNTIME_DIR/ringxfer/ringxferd.sock where that socket exists,
    /// else /run/ringxfer/ringxferd.sock].
    // Neither clap `env` nor a clap default: ringxfer_ipc::client_socket_path()
    // reads RINGXFER_SOCKET and the XDG fallback as the daemon does,
    // and treats an empty variable as unset, where clap would call it a
    // missing value.
    #[arg(long, global = true, value_name = "PATH")]
    pub socket: Option<PathBuf>,

    /// How to move the bytes: auto (the engine picks, and says why), or one of
    /// splice, copy-range (copy_file_range), sendfile (into a socket),
    /// direct, uncached, buffered, reflink.
    #[arg(long, global = true, default_value = "auto", value_parser = parse_strategy)]
    pub strategy: Strategy,

    /// Print one JSON object per result on stdout instead of text.
    #[arg(long, global = true)]
    pub json: bool,

    /// With --json, also print a progress object (bytes, total, files,
    /// rate, time left, the current file) on stdout every second while a
    /// transfer runs, before its result. Without --json the bar shows on a
    /// terminal anyway.
    #[arg(long, global = true)]
    pub progress: bool,

    /// Print nothing but errors.
    #[arg(short, long, global = true)]
    pub quiet: bool,

    /// Fail (exit 3) instead of running the engine in-process when no daemon answers.
    #[arg(long, global = true)]
    pub daemon_only: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Copy files: SRC to DST, SRC... into the directory DST, or (-r) a tree.
    ///
    /// DST is written atomically: the bytes land in an unnamed temporary file
    /// in DST's directory, which takes DST's name only once the engine says
    /// every byte is there (--in-place writes DST directly instead).
    ///
    /// DST may be on another host running ringxferd with listen_tcp:
    /// HOST[:PORT]:EXPORT[/PATH] (port 7300 by default; a colon before the
    /// first slash makes it remote, so write a local name with a colon as
    /// ./a:b). A file or (-r) a tree; it lands there atomically too,
    /// checked by CRC-32C, with its mode and times. SRC may be on another
    /// host the same way (one file): a pull into DST.
    Copy {
        /// The files to read, then the destination (a file, or an existing
        /// directory to copy into; with several sources it must be one).
        /// With -t, all are sources.
        #[arg(value_name = "PATH", num_args = 1.., required = true)]
        paths: Vec<PathBuf>,
        #[command(flatten)]
        target: TargetOpts,
        #[command(flatten)]
        backup: BackupOpts,
        /// Say what is being done: "'SRC' -> 'DST'" for each file copied,
        /// "skipped 'DST'" for each one -n or -u left alone.
        #[arg(short = 'v', long)]
        verbose: bool,
        /// Copy directories and everything under them (symbolic links inside
        /// are recreated as links, not followed).
        #[arg(short = 'r', short_alias = 'R', long)]
        recursive: bool,
        /// Archive, as cp -a: -r and --preserve (mode, owner, times,
        /// extended attributes and ACLs); symbolic links stay links.
        #[arg(short = 'a', long)]
        archive: bool,
        /// Follow every symbolic link in the sources: a link is copied as
        /// what it leads to.
        #[arg(short = 'L', long, overrides_with_all = ["no_dereference", "command_line_links"])]
        dereference: bool,
        /// Follow no symbolic link, not even one named on the command line:
        /// links are copied as links.
        #[arg(short = 'P', long, overrides_with_all = ["dereference", "command_line_links"])]
        no_dereference: bool,
        /// Follow the symbolic links named on the command line only (the default).
        #[arg(short = 'H', overrides_with_all = ["dereference", "no_dereference"])]
        command_line_links: bool,
        #[command(flatten)]
        range: RangeOpts,
        #[command(flatten)]
        job: JobOpts,
        #[command(flatten)]
        dest: DestOpts,
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
        #[command(flatten)]
        job: JobOpts,
    },
    /// Accept one TCP connection and write everything it sends to a file.
    ///
    /// DST is written atomically, as by copy: it appears (or replaces the
    /// old file) only once the stream is complete.
    Recv {
        /// The address to listen on, e.g. 0.0.0.0:7000 (port 0 picks a free port).
        #[arg(value_name = "BIND_ADDR")]
        bind: String,
        /// The file to write.
        dst: PathBuf,
        /// Expect exactly this many bytes: a stream that ends sooner fails
        /// (nothing is published) [default: whatever arrives until the peer closes].
        #[arg(long, value_name = "SIZE", value_parser = parse_size)]
        length: Option<u64>,
        #[command(flatten)]
        job: JobOpts,
        /// Complete only once the received data is durable (fdatasync).
        #[arg(long)]
        fsync: bool,
    },
    /// Show the daemon's counters.
    Stats,
    /// List this user's unfinished jobs (every user's, for root).
    Jobs,
    /// Show one job, running or recently finished.
    Status {
        /// The job's id (printed by --detach, listed by `jobs`).
        job: u64,
    },
    /// Wait for a job submitted elsewhere (e.g. with --detach) and report its result.
    Wait {
        /// The job's id.
        job: u64,
    },
    /// Cancel a job of this user by its id.
    Cancel {
        /// The job's id.
        job: u64,
    },
    /// Print a completion script for SHELL on stdout (bash, zsh, fish,
    /// elvish, powershell), e.g. `ringxfer completions bash >
    /// ~/.local/share/bash-completion/completions/ringxfer`.
    Completions {
        /// The shell to complete for.
        shell: clap_complete::Shell,
    },
    /// Write the man pages (man1/, man8/) and completion scripts
    /// (completions/) into DIR; systemd/install.sh runs it.
    #[command(hide = true)]
    Manuals {
        /// Where to write them (made if missing).
        dir: PathBuf,
    },
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

impl RangeOpts {
    /// Whether the user asked for anything but the whole source.
    pub fn is_partial(&self) -> bool {
        self.offset != 0 || self.length.is_some()
    }
}

/// How the engine runs the job, for every transfer command.
#[derive(Debug, Clone, Copy, Default, Args)]
pub struct JobOpts {
    /// The job's share of the engine when it is busy: low, normal or high.
    #[arg(long, value_name = "CLASS", default_value = "normal", value_parser = parse_priority)]
    pub priority: Priority,

    /// At most this many bytes per second for the whole command, all its
    /// files together, as rsync --bwlimit (e.g. 20MiB, 20MiB/s, 500K).
    #[arg(long, value_name = "RATE", value_parser = parse_rate)]
    pub rate_limit: Option<u64>,

    /// Checksum (CRC-32C) what was read and what landed, fail on a difference,
    /// and print both checksums.
    #[arg(long)]
    pub verify: bool,

    /// Print the job's id and return at once; the job runs on in the daemon
    /// (follow it with `ringxfer wait ID`). Needs a running daemon, which
    /// gives DST its name when the job completes (nothing, if it fails).
    #[arg(long)]
    pub detach: bool,

    // --reflink (issue 16), kept apart from the options above.
    /// Clone a whole file into a new one (FICLONE) where the file systems
    /// share extents (btrfs, XFS): auto (clone where possible, else copy),
    /// always (clone or fail), never. As cp's --reflink.
    #[arg(long, value_name = "WHEN", default_value = "auto", value_parser = parse_reflink)]
    pub reflink: Reflink,

    /// Holes in a file copied to a file: auto (the copy has the source's
    /// holes), always (also turns every block of zeros into a hole), never
    /// (holes are written out as zeros: a fully allocated copy). As cp's
    /// --sparse.
    #[arg(long, value_name = "WHEN", default_value = "auto", value_parser = parse_sparse)]
    pub sparse: Sparse,
}

/// Wraps `Reflink`'s FromStr so that clap reports its message as a usage error.
fn parse_reflink(s: &str) -> Result<Reflink, String> {
    s.parse()
}

/// Wraps `Sparse`'s FromStr, as `parse_reflink`.
fn parse_sparse(s: &str) -> Result<Sparse, String> {
    s.parse()
}

/// Where the sources go, as cp's -t and -T say it.
#[derive(Debug, Clone, Default, Args)]
pub struct TargetOpts {
    /// Copy every PATH into the directory DIR.
    #[arg(
        short = 't',
        long,
        value_name = "DIR",
        conflicts_with = "no_target_directory"
    )]
    pub target_directory: Option<PathBuf>,

    /// Treat DST as a file name even when it is a directory: a tree is
    /// copied as DST (merged into it when it exists), not into it.
    #[arg(short = 'T', long)]
    pub no_target_directory: bool,
}

/// cp's backups of the files a copy replaces.
#[derive(Debug, Clone, Default, Args)]
pub struct BackupOpts {
    /// Keep each file a copy replaces under a backup name. CONTROL: none
    /// (off), numbered (t: NAME.~N~), existing (nil: numbered if numbered
    /// backups exist, else simple), simple (never: NAME~) [default:
    /// $VERSION_CONTROL, else existing].
    #[arg(long, value_name = "CONTROL", num_args = 0..=1, require_equals = true, default_missing_value = "")]
    pub backup: Option<String>,

    /// Like --backup, but takes no CONTROL.
    #[arg(short = 'b')]
    pub backup_default: bool,

    /// The simple backups' suffix [default: $SIMPLE_BACKUP_SUFFIX, else ~].
    #[arg(short = 'S', long, value_name = "SUFFIX")]
    pub suffix: Option<String>,
}

/// How a copy's destination is written.
#[derive(Debug, Clone, Copy, Default, Args)]
pub struct DestOpts {
    /// Never replace an existing file: skip it (and say so with -v).
    #[arg(short = 'n', long, conflicts_with = "update")]
    pub no_clobber: bool,

    /// Replace an existing file only when the source is newer (by
    /// modification time); copy files that do not exist yet.
    #[arg(short = 'u', long)]
    pub update: bool,

    /// Complete only once the data is durable: fdatasync of each file, and
    /// of the directory that received its name.
    #[arg(long)]
    pub fsync: bool,

    /// Write straight into DST (keeping its inode, hard links and
    /// permissions) instead of publishing a finished copy under its name.
    #[arg(long)]
    pub in_place: bool,

    /// Give copies the source's mode, owner (where permitted) and timestamps,
    /// directories included, and files their extended attributes and ACLs.
    #[arg(long)]
    pub preserve: bool,

    /// To or from another host (HOST:PATH): continue a copy that was cut
    /// off. The receiving side kept what arrived (a push: the other
    /// daemon; a pull: .DST.ringxfer-part); what of it matches the source
    /// (CRC-32C, block by block) is not sent again, and the whole file is
    /// still checked before it takes its name.
    #[arg(long)]
    pub resume: bool,

    /// To another host (HOST:PATH), one file: push it over N connections
    /// at once, each carrying a range of at least 8 MiB (as bbcp -s), for
    /// a link one TCP stream cannot fill. The other daemon publishes the
    /// file only once every range is in and checked. 1 to 16.
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=16))]
    pub streams: u32,
}

/// Wraps `Priority`'s FromStr so that clap reports its message as a usage error.
fn parse_priority(s: &str) -> Result<Priority, String> {
    s.parse()
}

/// A size per second: `20MiB`, `20MiB/s` or `20 MiB/s`; never 0, which would
/// stall the job forever.
pub fn parse_rate(s: &str) -> Result<u64, String> {
    let trimmed = s.trim();
    let size = trimmed
        .strip_suffix("/s")
        .or_else(|| trimmed.strip_suffix("/sec"))
        .unwrap_or(trimmed);
    match parse_size(size)? {
        0 => Err("a rate limit of 0 would never move a byte".to_owned()),
        rate => Ok(rate),
    }
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
    fn job_and_destination_flags() {
        let cli = Cli::try_parse_from([
            "ringxfer",
            "copy",
            "-r",
            "a",
            "b",
            "dir",
            "--priority",
            "high",
            "--rate-limit",
            "20MiB/s",
            "--verify",
            "--fsync",
            "--in-place",
            "--preserve",
        ])
        .expect("valid command line");
        match cli.command {
            Command::Copy {
                paths,
                recursive,
                job,
                dest,
                ..
            } => {
                assert_eq!(paths.len(), 3);
                assert!(recursive);
                assert_eq!(job.priority, Priority::High);
                assert_eq!(job.rate_limit, Some(20 << 20));
                assert!(job.verify && !job.detach);
                assert!(dest.fsync && dest.in_place && dest.preserve);
            }
            other => panic!("parsed as {other:?}"),
        }
        let cli = Cli::try_parse_from(["ringxfer", "send", "a", "h:1", "--detach"]).unwrap();
        match cli.command {
            Command::Send { job, .. } => {
                assert!(job.detach);
                assert_eq!(job.priority, Priority::Normal);
                assert_eq!(job.rate_limit, None);
            }
            other => panic!("parsed as {other:?}"),
        }
        let cli = Cli::try_parse_from(["ringxfer", "-R", "copy", "a", "b"]);
        assert!(cli.is_err(), "-R belongs to copy, not before it");
        let cli = Cli::try_parse_from(["ringxfer", "copy", "-R", "a", "b"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Copy {
                recursive: true,
                ..
            }
        ));
    }

    #[test]
    fn job_commands_take_an_id() {
        for (name, want) in [("status", 7), ("wait", 8), ("cancel", 9)] {
            let cli = Cli::try_parse_from(["ringxfer", name, &want.to_string()]).unwrap();
            let got = match cli.command {
                Command::Status { job } | Command::Wait { job } | Command::Cancel { job } => job,
                other => panic!("parsed as {other:?}"),
            };
            assert_eq!(got, want);
        }
        assert!(matches!(
            Cli::try_parse_from(["ringxfer", "jobs"]).unwrap().command,
            Command::Jobs
        ));
        for argv in [&["ringxfer", "status"][..], &["ringxfer", "cancel", "x"]] {
            assert_eq!(Cli::try_parse_from(argv).unwrap_err().exit_code(), 2);
        }
    }

    #[test]
    fn rates() {
        assert_eq!(parse_rate("500K"), Ok(500 << 10));
        assert_eq!(parse_rate("1MB/s"), Ok(1_000_000));
        assert_eq!(parse_rate("2 MiB/sec"), Ok(2 << 20));
        assert!(parse_rate("0").is_err());
        assert!(parse_rate("/s").is_err());
    }

    #[test]
    fn bad_size_and_strategy_are_usage_errors() {
        for argv in [
            &["ringxfer", "copy", "a", "b", "--offset", "lots"][..],
            &["ringxfer", "--strategy", "fast", "stats"][..],
            &["ringxfer", "copy", "a", "b", "--priority", "urgent"][..],
            &["ringxfer", "copy", "a", "b", "--rate-limit", "0"][..],
        ] {
            let err = Cli::try_parse_from(argv).expect_err("must be refused");
            assert_eq!(err.exit_code(), 2);
        }
    }
}
