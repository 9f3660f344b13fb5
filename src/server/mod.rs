//! Client connections: the listening socket, frame parsing, sessions.

pub mod frames;
pub mod listener;
pub mod session;
