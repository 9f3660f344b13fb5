//! `ringxfer`: the command-line client of the ringxfer transfer engine.
//!
//! Exit status: 0 done, 1 the transfer failed (or a file or address could not
//! be opened, or any file of a multi-file copy failed), 2 usage error, 3 no
//! daemon answered and the command needs one (--daemon-only, --detach,
//! stats, jobs, status, wait, cancel); 128 + N when signal N (SIGINT,
//! SIGTERM, SIGHUP) ended a copy or recv, after it removed what it staged.

// The C entry point is ours (see `main` below); tests keep their harness's.
#![cfg_attr(not(test), no_main)]

mod args;
mod backup;
mod c_pow;
mod cheap_copy;
mod commands;
mod context;
mod control;
mod dir_fds;
mod docs;
mod engine_handle;
mod error;
mod fdlimit;
mod files;
mod hardlinks;
mod job_plan;
mod listing;
mod pipeline;
mod progress;
mod progress_json;
mod pull_part;
mod read_ahead;
mod remote;
mod remote_listing;
mod remote_pull_tree;
mod remote_stripes;
mod remote_tree;
mod report;
mod signals;
mod specials;
mod staged_dirs;
mod staging;
mod stats;
mod tree;
mod walk;
mod walk_ahead;
mod xattrs;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use clap::Parser;

use crate::args::{BackupOpts, DestOpts, TargetOpts};
use crate::args::{Cli, Command};
use crate::backup::{Backup, Control};
use crate::context::{Context, CopyArgs, Follow, Target};
use crate::error::CliError;
use crate::progress::Show;
use crate::report::Output;

/// Runs the command; its exit status.
fn run() -> u8 {
    // On a usage error clap prints it and exits with status 2.
    let cli = Cli::parse();
    let out = Output {
        json: cli.global.json,
        quiet: cli.global.quiet,
    };
    let ctx = Context {
        socket: cli
            .global
            .socket
            .unwrap_or_else(ringxfer_ipc::client_socket_path),
        strategy: cli.global.strategy,
        daemon_only: cli.global.daemon_only,
        out,
        progress: if out.json && cli.global.progress {
            Show::Json
        } else if out.chatty() && std::io::stderr().is_terminal() {
            Show::Bar
        } else {
            Show::Off
        },
    };
    catch_signals(&cli.command);
    // Returning the status (rather than process::exit) lets the engine and
    // its thread shut down through their destructors first.
    let exit = match &cli.command {
        Command::Copy {
            paths,
            target,
            backup,
            verbose,
            recursive,
            archive,
            dereference,
            no_dereference,
            range,
            job,
            dest,
            command_line_links: _,
        } => match copy_operands(paths, target).and_then(|ops| Ok((ops, backups(backup)?))) {
            Ok(((sources, dst, target), backup)) => commands::copy(
                &ctx,
                &CopyArgs {
                    sources,
                    dst,
                    target,
                    recursive: *recursive || *archive,
                    follow: match (dereference, no_dereference) {
                        (true, _) => Follow::Always,
                        (_, true) => Follow::Never,
                        _ => Follow::Operands,
                    },
                    verbose: *verbose,
                    backup,
                    range: *range,
                    job: *job,
                    dest: DestOpts {
                        preserve: dest.preserve || *archive,
                        ..*dest
                    },
                },
            ),
            Err(err) => {
                ctx.out.failed(report::Op::Copy, None, &err);
                err.exit
            }
        },
        Command::Send {
            src,
            addr,
            range,
            job,
        } => commands::send(&ctx, src, addr, *range, *job),
        Command::Recv {
            bind,
            dst,
            length,
            job,
            fsync,
        } => commands::recv(&ctx, bind, dst, *length, *job, *fsync),
        Command::Stats => stats::run(&ctx),
        Command::Jobs => control::jobs(&ctx),
        Command::Status { job } => control::status(&ctx, *job),
        Command::Wait { job } => control::wait(&ctx, *job),
        Command::Cancel { job } => control::cancel(&ctx, *job),
        Command::Completions { shell } => docs::completions(*shell),
        Command::Manuals { dir } => docs::manuals(dir),
    };
    match signals::exit_status() {
        Some(status) => status,
        None => exit as u8,
    }
}

/// The process's entry point, in place of std's: a command here is over in
/// a millisecond or two, and std's start-up reads and parses
/// /proc/self/maps (glibc's pthread_getattr_np, to place a guard for the
/// main thread's stack overflow message), about 7% of a single small
/// file's copy (1.32 against 1.24 ms a command, against cp's 1.14; issue
/// 16). What std's start would do that matters here is done by hand:
/// standard descriptors that are closed are opened on /dev/null, SIGPIPE
/// is ignored (a closed pipe is an EPIPE to report rather than a silent
/// death), a panic ends the command with status 101 after unwinding (so
/// staged files are dropped), and standard output is flushed at the end.
/// The arguments reach `std::env::args` through glibc's initializers. A
/// stack overflow is a plain SIGSEGV, without std's message.
#[cfg_attr(not(test), no_mangle)]
extern "C" fn main(_argc: libc::c_int, _argv: *const *const libc::c_char) -> libc::c_int {
    open_closed_standard_fds();
    // SAFETY: setting a signal's disposition to SIG_IGN installs no
    // handler, so no code of ours runs in a signal context; nothing else
    // runs yet (no thread is started before this).
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    let status = std::panic::catch_unwind(run).unwrap_or(101);
    let _ = std::io::Write::flush(&mut std::io::stdout());
    libc::c_int::from(status)
}

/// Opens /dev/null on each of descriptors 0, 1 and 2 that is closed, as
/// std's start does: otherwise the next file or socket opened would take
/// that number, and what is printed would go into a staged file or the
/// daemon's socket (`ringxfer status >&-`).
fn open_closed_standard_fds() {
    for fd in 0..3 {
        // SAFETY: F_GETFD only reads the descriptor table.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } != -1 {
            continue;
        }
        // SAFETY: a constant NUL-terminated path; the descriptor is left
        // open on purpose, as the lowest free number, which is `fd`.
        unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR) };
    }
}

/// Where a signal is taken instead of ending the process at once (see
/// [`signals`]): commands that stage a destination. A tree copy starts it
/// itself, once its descriptor table is grown (which must happen while the
/// process has one thread); a single file's copy arms it once the engine
/// answered, a recv (which waits in accept) takes them on a thread. A
/// detached copy is the daemon's once submitted, staging included, so it
/// keeps the signals' default action.
fn catch_signals(command: &Command) {
    let copy = matches!(command, Command::Copy { .. });
    let dirs = match command {
        Command::Copy {
            paths,
            target:
                TargetOpts {
                    target_directory: None,
                    ..
                },
            recursive: false,
            archive: false,
            job,
            ..
        } if paths.len() == 2 && !job.detach => staging_dirs(&paths[1]),
        Command::Recv { dst, job, .. } if !job.detach => staging_dirs(dst),
        _ => return,
    };
    for dir in dirs {
        signals::sweep_in(dir);
    }
    if copy {
        signals::defer();
    } else {
        signals::start();
    }
}

/// What --backup, -b and --suffix ask, with cp's defaults from the
/// environment (VERSION_CONTROL, SIMPLE_BACKUP_SUFFIX).
fn backups(opts: &BackupOpts) -> Result<Option<Backup>, CliError> {
    let word = match (&opts.backup, opts.backup_default) {
        (Some(word), _) if !word.is_empty() => word.clone(),
        (Some(_), _) | (None, true) => std::env::var("VERSION_CONTROL")
            .ok()
            .filter(|w| !w.is_empty())
            .unwrap_or_else(|| "existing".into()),
        (None, false) => return Ok(None),
    };
    let control = Control::parse(&word).map_err(CliError::usage)?;
    let suffix = opts
        .suffix
        .clone()
        .or_else(|| std::env::var("SIMPLE_BACKUP_SUFFIX").ok())
        .filter(|s| !s.is_empty() && !s.contains('/'))
        .unwrap_or_else(|| "~".into());
    Ok(Some(Backup {
        control,
        suffix: suffix.into(),
    }))
}

/// The sources and the destination of `copy`, as -t and -T read its
/// operands (with cp's words for what is missing or extra).
fn copy_operands<'a>(
    paths: &'a [PathBuf],
    target: &'a TargetOpts,
) -> Result<(&'a [PathBuf], &'a Path, Target), CliError> {
    if let Some(dir) = &target.target_directory {
        if !std::fs::metadata(dir).is_ok_and(|m| m.is_dir()) {
            return Err(CliError::usage(format!(
                "target directory '{}' is not a directory",
                dir.display()
            )));
        }
        return Ok((paths, dir, Target::Into));
    }
    let Some((dst, sources)) = paths.split_last().filter(|(_, s)| !s.is_empty()) else {
        return Err(CliError::usage(format!(
            "missing destination file operand after '{}'",
            paths
                .first()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        )));
    };
    if target.no_target_directory {
        if sources.len() > 1 {
            return Err(CliError::usage(format!(
                "extra operand '{}' (-T takes one source and its destination)",
                paths[1].display()
            )));
        }
        return Ok((sources, dst, Target::AsName));
    }
    Ok((sources, dst, Target::IntoIfDirectory))
}

/// The directories a file copied to `dst` may be staged in: `dst` itself
/// if it is a directory (the file lands inside), and its parent.
fn staging_dirs(dst: &Path) -> Vec<PathBuf> {
    let parent = match dst.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut dirs = vec![parent];
    if dst.is_dir() {
        dirs.push(dst.to_path_buf());
    }
    dirs
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::panic::{catch_unwind, AssertUnwindSafe};

    /// build.rs links GCC's unwinder into the binaries statically: a panic
    /// must still unwind, dropping what its frames hold (a staged file
    /// removes itself so), and be caught where `main` catches it.
    #[test]
    fn a_panic_unwinds_through_the_linked_unwinder() {
        struct Held<'a>(&'a Cell<bool>);
        impl Drop for Held<'_> {
            fn drop(&mut self) {
                self.0.set(true);
            }
        }
        let dropped = Cell::new(false);
        let caught = catch_unwind(AssertUnwindSafe(|| {
            let _held = Held(&dropped);
            std::panic::resume_unwind(Box::new("on purpose"));
        }));
        assert!(caught.is_err(), "the panic was not caught");
        assert!(dropped.get(), "the panicking frame's value was not dropped");
    }
}
