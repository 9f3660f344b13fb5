//! The subcommands: each opens what it needs, finds an engine, runs one
//! transfer and reports it.
//!
//! Order matters in each: the source is opened first (harmless, and a typo is
//! the commonest error), then the engine is found, and only then is anything
//! created, truncated or connected, so that a missing daemon under
//! --daemon-only leaves no empty destination file or half-open peer behind.

use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};

use ringxfer_ipc::Strategy;

use crate::args::RangeOpts;
use crate::engine::{Engine, Fallback};
use crate::error::{CliError, Exit};
use crate::files::{create_destination, open_copy_destination, open_source};
use crate::report::{self, Finished, Op, Output, Subject};
use crate::transfer::{self, Plan};

/// What every subcommand needs from the global flags.
pub struct Context {
    pub socket: PathBuf,
    pub strategy: Strategy,
    pub daemon_only: bool,
    pub out: Output,
    /// Whether to draw progress bars (stderr is a terminal, output is chatty).
    pub progress: bool,
}

impl Context {
    fn engine(&self) -> Result<Engine, CliError> {
        let fallback = if self.daemon_only {
            Fallback::Refuse
        } else {
            Fallback::Embedded {
                announce: self.out.chatty(),
            }
        };
        Engine::connect(&self.socket, fallback)
    }

    fn plan(&self, range: RangeOpts) -> Plan {
        Plan {
            offset: range.offset,
            length: range.length,
            strategy: self.strategy,
            progress: self.progress,
        }
    }

    /// Prints the outcome of a transfer and picks the exit status.
    fn finish(&self, subject: &Subject, result: Result<Finished, CliError>) -> Exit {
        match result {
            Ok(done) => {
                self.out.transfer_done(subject, &done);
                Exit::Done
            }
            Err(err) => {
                self.out.failed(subject.op, Some(subject), &err);
                err.exit
            }
        }
    }
}

fn shown(path: &Path) -> String {
    path.display().to_string()
}

pub fn copy(ctx: &Context, src: &Path, dst: &Path, range: RangeOpts) -> Exit {
    let mut subject = Subject {
        op: Op::Copy,
        src: shown(src),
        dst: shown(dst),
    };
    let result = run_copy(ctx, src, dst, range, &mut subject);
    ctx.finish(&subject, result)
}

fn run_copy(
    ctx: &Context,
    src: &Path,
    dst: &Path,
    range: RangeOpts,
    subject: &mut Subject,
) -> Result<Finished, CliError> {
    let (src_file, src_meta) = open_source(src, "recursive copy, -r, is not supported yet")?;
    let engine = ctx.engine()?;
    let (dst_file, dst_path) = open_copy_destination(src, &src_meta, dst)?;
    // Report the file actually written, which scripts cannot otherwise know
    // when DST was a directory.
    subject.dst = shown(&dst_path);
    transfer::run(&engine, subject, &src_file, &dst_file, ctx.plan(range))
}

pub fn send(ctx: &Context, src: &Path, addr: &str, range: RangeOpts) -> Exit {
    let subject = Subject {
        op: Op::Send,
        src: shown(src),
        dst: addr.to_owned(),
    };
    let result = run_send(ctx, src, addr, range, &subject);
    ctx.finish(&subject, result)
}

fn run_send(
    ctx: &Context,
    src: &Path,
    addr: &str,
    range: RangeOpts,
    subject: &Subject,
) -> Result<Finished, CliError> {
    let (src_file, _) = open_source(src, "sending a directory is not supported")?;
    let engine = ctx.engine()?;
    let socket =
        TcpStream::connect(addr).map_err(|err| CliError::io(format!("connect to {addr}"), &err))?;
    let done = transfer::run(&engine, subject, &src_file, &socket, ctx.plan(range))?;
    // The engine holds its own copy of the descriptor and may close it later
    // than we exit; shutting down our side tells the peer at once that the
    // stream is complete. It may already be closed, which is fine.
    let _ = socket.shutdown(Shutdown::Write);
    Ok(done)
}

pub fn recv(ctx: &Context, bind: &str, dst: &Path) -> Exit {
    let mut subject = Subject {
        op: Op::Recv,
        src: bind.to_owned(),
        dst: shown(dst),
    };
    let result = run_recv(ctx, bind, dst, &mut subject);
    ctx.finish(&subject, result)
}

fn run_recv(
    ctx: &Context,
    bind: &str,
    dst: &Path,
    subject: &mut Subject,
) -> Result<Finished, CliError> {
    let engine = ctx.engine()?;
    // Before listening, so a bad destination fails before a peer sends a byte.
    let dst_file = create_destination(dst)?;
    let listener =
        TcpListener::bind(bind).map_err(|err| CliError::io(format!("bind {bind}"), &err))?;
    let local = listener
        .local_addr()
        .map_err(|err| CliError::io(format!("bind {bind}"), &err))?;
    // Printed even with --json (it is on stderr, not a result): with port 0
    // this line is the only way to learn the port.
    if !ctx.out.quiet {
        report::status(&format!("listening on {local}"));
    }
    let (socket, peer) = listener
        .accept()
        .map_err(|err| CliError::io(format!("accept on {local}"), &err))?;
    // Accept only one connection: stop listening before the transfer.
    drop(listener);
    subject.src = peer.to_string();
    transfer::run(
        &engine,
        subject,
        &socket,
        &dst_file,
        ctx.plan(RangeOpts::default()),
    )
}

/// `stats` asks the daemon only: a fresh in-process engine would report
/// nothing but zeros, so no daemon is an error (exit 3) here.
pub fn stats(ctx: &Context) -> Exit {
    let result = Engine::connect(&ctx.socket, Fallback::Refuse).and_then(|engine| {
        let stats = engine
            .client()
            .stats()
            .map_err(|err| CliError::client(format!("daemon at {}", ctx.socket.display()), &err))?;
        Ok((stats, engine.kind()))
    });
    match result {
        Ok((stats, kind)) => {
            ctx.out.stats(&stats, kind);
            Exit::Done
        }
        Err(err) => {
            ctx.out.failed(Op::Stats, None, &err);
            err.exit
        }
    }
}
