//! What makes the engine a system daemon, above the engine: the listening
//! socket (bound as a socket file, or passed by systemd) and the
//! notifications to systemd (READY, STATUS, the watchdog heartbeat).

pub mod activation;
pub(crate) mod listener;
pub mod notify;
