//! The engine's own timers: one ring timeout each, at most one in flight.
//! Each fires into the part it serves (the callbacks sit next to their
//! part); stopping cancels them all but the hold timer, which only sends.

use std::time::Instant;

use tracing::error;

use super::Engine;
use crate::io::ops::{Op, Owner};

/// The user_data of each timer in flight.
#[derive(Default)]
pub(super) struct Timers {
    /// The rate-limit timer, and when it fires (slots.rs).
    pub throttle: Option<(u64, Instant)>,
    /// The end of the shutdown grace period (shutdown.rs).
    pub grace: Option<u64>,
    /// The observer's tick (shutdown.rs).
    pub tick: Option<u64>,
    /// The send of held final events (coalesce.rs).
    pub hold: Option<u64>,
    /// The connections' Hello and half-frame deadlines (connections.rs).
    pub deadlines: Option<u64>,
    /// The look for stalled jobs (shares.rs).
    pub stall: Option<u64>,
}

impl Engine {
    /// A completion of one of the engine's timers.
    pub(super) fn on_timer(&mut self, op: Op, user_data: u64, result: i32) {
        match op.owner {
            Owner::Throttle => self.on_throttle_timer(user_data),
            Owner::Stall => self.on_stall_timer(),
            Owner::Grace => self.on_grace_timer(result),
            Owner::Tick => self.on_tick(result),
            Owner::HoldTimer => self.on_hold_timer(),
            Owner::Housekeeping => self.on_deadlines(result),
            owner => error!(?owner, tag = op.tag, "completion of an unexpected kind"),
        }
    }
}
