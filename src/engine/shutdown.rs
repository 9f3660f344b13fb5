//! Stopping gracefully, and the loop's periodic report to whoever watches it
//! (systemd's notify socket, in the daemon).
//!
//! The first SIGTERM or SIGINT drains: the listener stops accepting, new
//! jobs are refused with `ShuttingDown`, and the jobs already admitted
//! (queued ones too, and detached ones) run on for at most
//! `EngineConfig::shutdown_grace`. When the last one ends, or the grace
//! period does, the engine stops: what is left is cancelled, each owner told
//! the daemon shut down, and connections close. A second signal cancels at
//! once; a third leaves the loop without waiting for the kernel.

use std::time::Duration;

use ringxfer_ipc::{FailureKind, StatsReport};
use tracing::{error, info, warn};

use super::Engine;
use crate::io::ops::Owner;
use crate::transfer::TransferError;

/// What a job cancelled by a stop without grace (a second signal, or
/// [`Engine::stop`]) is told.
pub(super) const SHUTDOWN_NOW: &str = "shutdown: the daemon is stopping and cancelled the job";

/// Told about the loop's life, on the loop thread.
pub trait LoopObserver {
    /// Every `EngineConfig::tick`, from the loop itself: a loop that hangs
    /// stops ticking, so a watchdog fed here means something.
    fn tick(&mut self, stats: &StatsReport);
    /// Once, when the engine stops taking new work (the first stop signal).
    fn stopping(&mut self);
}

impl Engine {
    /// Sets who hears the loop's ticks and its stopping.
    pub fn set_observer(&mut self, observer: Box<dyn LoopObserver>) {
        self.observer = Some(observer);
    }

    pub(super) fn notify_stopping(&mut self) {
        if let Some(mut observer) = self.observer.take() {
            observer.stopping();
            // Ticks end with the draining: systemd wants no watchdog
            // pings once told STOPPING, only the exit.
            self.observer_done = true;
            self.observer = Some(observer);
        }
    }

    /// Refusal for a job submitted while draining.
    pub(super) fn draining_refusal(&self) -> Option<TransferError> {
        self.draining.then(|| {
            TransferError::new(
                FailureKind::ShuttingDown,
                "the daemon is shutting down and takes no new jobs",
            )
        })
    }

    /// The first stop signal: stop taking work, let the rest finish.
    pub(super) fn drain(&mut self) {
        self.draining = true;
        self.notify_stopping();
        if let Some(ud) = self.listener_op.take() {
            let _ = self.io.cancel(ud);
        }
        let grace = self.config.shutdown_grace;
        // Submits that came before the signal and wait for statx are let
        // in like the jobs already admitted, within the same grace period.
        if (self.jobs.is_empty() && self.admissions.live() == 0) || grace.is_zero() {
            info!("stop signal: stopping");
            return self.stop_with(&grace_ended(grace));
        }
        info!(
            jobs = self.jobs.len(),
            grace_s = grace.as_secs_f64(),
            "stop signal: no new connections or jobs; waiting for the running ones (a second signal cancels them)"
        );
        match self.io.timeout(Owner::Grace, grace) {
            Ok(ud) => self.grace_timer = Some(ud),
            Err(e) => {
                error!("cannot queue the shutdown grace timer ({e}); cancelling every job now");
                self.stop_with(&grace_ended(Duration::ZERO));
            }
        }
    }

    pub(super) fn on_grace_timer(&mut self, result: i32) {
        self.grace_timer = None;
        if result == -libc::ECANCELED || self.stopping {
            return;
        }
        warn!(
            jobs = self.jobs.len(),
            "the shutdown grace period ended; cancelling the jobs still running"
        );
        self.stop_with(&grace_ended(self.config.shutdown_grace));
    }

    pub(super) fn arm_tick(&mut self) {
        let Some(every) = self.config.tick else {
            return;
        };
        if self.observer.is_none() || self.observer_done || self.stopping {
            return;
        }
        match self.io.timeout(Owner::Tick, every) {
            Ok(ud) => self.tick_timer = Some(ud),
            Err(e) => error!("cannot queue the observer's timer: {e}"),
        }
    }

    pub(super) fn on_tick(&mut self, result: i32) {
        self.tick_timer = None;
        if result == -libc::ECANCELED || self.observer_done {
            return;
        }
        if let Some(mut observer) = self.observer.take() {
            let stats = self.stats();
            observer.tick(&stats);
            self.observer = Some(observer);
        }
        self.arm_tick();
    }
}

/// What a job cancelled at the end of the grace period is told.
fn grace_ended(grace: Duration) -> String {
    format!(
        "shutdown: the daemon stopped before the job finished (grace period {:.0} s)",
        grace.as_secs_f64()
    )
}
