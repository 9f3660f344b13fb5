//! Client connections: the listening socket (bound, or from systemd), frame
//! parsing, sessions; and notifications to systemd.

pub mod activation;
pub mod frames;
pub mod listener;
pub mod notify;
pub mod session;
