//! ringxfer: a file transfer engine driven by one io_uring ring.
//!
//! `engine` is the loop thread, `transfer` the strategies that move bytes,
//! `server` the client connections, and `embedded` runs an engine inside
//! another program (the CLI, when no daemon answers). `settings` is the
//! daemon's configuration (defaults, file, environment, flags) and `check`
//! its `--check` report.

pub mod check;
pub mod duration;
pub mod embedded;
pub mod engine;
pub mod fdtable;
pub mod io;
pub mod privileges;
pub mod server;
pub mod settings;
pub mod size;
pub mod transfer;
