//! Client connections: the listening socket (bound, or from systemd), frame
//! parsing, sessions and their wire state machine; and notifications to systemd.

pub mod activation;
#[cfg(test)]
mod claim_tests;
pub mod frames;
pub mod listener;
pub mod notify;
pub mod session;
pub mod wire;
#[cfg(test)]
mod wire_tests;
