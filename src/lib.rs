//! ringxfer: a file transfer engine driven by one io_uring ring.
//!
//! `engine` is the loop thread, `transfer` the strategies that move bytes,
//! `server` the client connections, and `embedded` runs an engine inside
//! another program (the CLI, when no daemon answers).

pub mod duration;
pub mod embedded;
pub mod engine;
pub mod server;
pub mod size;
pub mod transfer;
