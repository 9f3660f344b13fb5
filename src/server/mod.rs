//! The wire: frame parsing, client sessions and their state machine (bytes
//! and descriptors in, requests out; events in, sends out), below the engine
//! that drives them through the ring. The listening socket and systemd's
//! notifications are the daemon's (`crate::daemon`).

#[cfg(test)]
mod claim_tests;
pub(crate) mod frames;
pub(crate) mod session;
pub(crate) mod wire;
#[cfg(test)]
mod wire_tests;
