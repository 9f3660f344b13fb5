//! What makes the engine a system daemon, above the engine: the listening
//! socket (bound as a socket file, or passed by systemd) and the
//! notifications to systemd (READY, STATUS, the watchdog heartbeat), and
//! the TCP listener and exports of host-to-host transfers.

pub mod activation;
pub(crate) mod listener;
pub mod notify;
pub mod peers;
