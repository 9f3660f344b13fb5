//! ringxfer: a file transfer engine driven by one io_uring ring.
//!
//! The modules form layers, each using only those below it (a test in
//! tests/integration/layers.rs fails on an upward use), lowest first:
//! `duration`, `size`, `fdtable`, `privileges` and `ktls` (plain helpers,
//! the daemon's identities, the kernel TLS probe); `io`, the ring, the op table and the pools; `transfer`,
//! the strategies that move bytes; `server`, the wire and client sessions;
//! `engine`, the loop thread that drives them all; `settings`, the daemon's
//! configuration (defaults, file, environment, flags); `embedded`, an engine
//! on a thread of another program (the CLI, when no daemon answers);
//! `daemon`, the listening socket and systemd's notifications; `check`, the
//! `--check` report.

#![warn(unreachable_pub)]

pub mod check;
pub mod daemon;
pub mod duration;
pub mod embedded;
pub mod engine;
pub mod fdtable;
pub mod io;
pub(crate) mod ktls;
pub mod privileges;
pub mod residency;
pub(crate) mod server;
pub mod settings;
pub mod size;
pub mod tls;
pub(crate) mod transfer;
