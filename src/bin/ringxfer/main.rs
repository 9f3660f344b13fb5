//! `ringxfer`: the command-line client of the ringxfer transfer engine.
//!
//! Exit status: 0 done, 1 the transfer failed (or a file or address could not
//! be opened), 2 usage error, 3 no daemon answered and --daemon-only was given.

mod args;
mod commands;
mod engine;
mod error;
mod files;
mod progress;
mod report;
mod transfer;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;

use crate::args::{Cli, Command};
use crate::commands::Context;
use crate::report::Output;

fn main() -> ExitCode {
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
            .unwrap_or_else(ringxfer_ipc::default_socket_path),
        strategy: cli.global.strategy,
        daemon_only: cli.global.daemon_only,
        out,
        progress: out.chatty() && std::io::stderr().is_terminal(),
    };
    // Returning the status (rather than process::exit) lets the engine and
    // its thread shut down through their destructors first.
    let exit = match &cli.command {
        Command::Copy { src, dst, range } => commands::copy(&ctx, src, dst, *range),
        Command::Send { src, addr, range } => commands::send(&ctx, src, addr, *range),
        Command::Recv { bind, dst } => commands::recv(&ctx, bind, dst),
        Command::Stats => commands::stats(&ctx),
    };
    exit.into()
}
