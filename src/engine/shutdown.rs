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

/// Where the engine is in its life: serving, draining, stopping.
#[derive(Default)]
pub(super) struct Life {
    /// The first stop signal came: no new jobs; the rest finish or time out.
    pub draining: bool,
    /// Every job was cancelled; the loop ends once the ring is idle.
    pub stopping: bool,
    /// Another signal came while stopping: leave the loop without waiting
    /// for the kernel.
    pub stop_now: bool,
    /// An engine serving one connection ends when it and its jobs are gone.
    pub exit_when_idle: bool,
    pub observer: Option<Box<dyn LoopObserver>>,
    /// The observer was told the engine is stopping; no more ticks.
    pub observer_done: bool,
}

impl Life {
    pub(super) fn notify_stopping(&mut self) {
        if let Some(mut observer) = self.observer.take() {
            observer.stopping();
            // Ticks end with the draining: systemd wants no watchdog
            // pings once told STOPPING, only the exit.
            self.observer_done = true;
            self.observer = Some(observer);
        }
    }
}

impl Engine {
    /// Sets who hears the loop's ticks and its stopping.
    pub fn set_observer(&mut self, observer: Box<dyn LoopObserver>) {
        self.life.observer = Some(observer);
    }

    /// Refusal for a job submitted while draining.
    pub(super) fn draining_refusal(&self) -> Option<TransferError> {
        self.life.draining.then(|| {
            TransferError::new(
                FailureKind::ShuttingDown,
                "the daemon is shutting down and takes no new jobs",
            )
        })
    }

    /// The first stop signal: stop taking work, let the rest finish.
    pub(super) fn drain(&mut self) {
        self.life.draining = true;
        self.life.notify_stopping();
        if let Some(ud) = self.listener.op.take() {
            let _ = self.io.cancel(ud);
        }
        self.stop_tcp_listener();
        let grace = self.config.shutdown_grace;
        // Submits that came before the signal and wait for statx are let
        // in like the jobs already admitted, within the same grace period.
        if (self.jobs.slab.is_empty() && self.jobs.admissions.live() == 0) || grace.is_zero() {
            info!("stop signal: stopping");
            return self.stop_with(&grace_ended(grace));
        }
        info!(
            jobs = self.jobs.slab.len(),
            grace_s = grace.as_secs_f64(),
            "stop signal: no new connections or jobs; waiting for the running ones (a second signal cancels them)"
        );
        match self.io.timeout(Owner::Grace, grace) {
            Ok(ud) => self.timers.grace = Some(ud),
            Err(e) => {
                error!("cannot queue the shutdown grace timer ({e}); cancelling every job now");
                self.stop_with(&grace_ended(Duration::ZERO));
            }
        }
    }

    pub(super) fn on_grace_timer(&mut self, result: i32) {
        self.timers.grace = None;
        if result == -libc::ECANCELED || self.life.stopping {
            return;
        }
        warn!(
            jobs = self.jobs.slab.len(),
            "the shutdown grace period ended; cancelling the jobs still running"
        );
        self.stop_with(&grace_ended(self.config.shutdown_grace));
    }

    pub(super) fn arm_tick(&mut self) {
        let Some(every) = self.config.tick else {
            return;
        };
        if self.life.observer.is_none() || self.life.observer_done || self.life.stopping {
            return;
        }
        match self.io.timeout(Owner::Tick, every) {
            Ok(ud) => self.timers.tick = Some(ud),
            Err(e) => error!("cannot queue the observer's timer: {e}"),
        }
    }

    pub(super) fn on_tick(&mut self, result: i32) {
        self.timers.tick = None;
        if result == -libc::ECANCELED || self.life.observer_done {
            return;
        }
        if let Some(mut observer) = self.life.observer.take() {
            let stats = self.stats();
            observer.tick(&stats);
            self.life.observer = Some(observer);
        }
        self.arm_tick();
    }

    /// Stops accepting, cancels every job and closes every connection; the
    /// loop ends when the last operation has completed.
    pub fn stop(&mut self) {
        self.stop_with(SHUTDOWN_NOW);
    }

    /// As [`Engine::stop`]; `why` is what each cancelled job's owner is told.
    pub(super) fn stop_with(&mut self, why: &str) {
        if self.life.stopping {
            return;
        }
        self.life.stopping = true;
        self.life.notify_stopping();
        for ud in [
            self.listener.op,
            self.timers.grace.take(),
            self.timers.tick.take(),
            self.timers.deadlines.take(),
            self.timers.stall.take(),
        ]
        .into_iter()
        .flatten()
        {
            let _ = self.io.cancel(ud);
        }
        if let Some((ud, _)) = self.timers.throttle.take() {
            let _ = self.io.cancel(ud);
        }
        // Submits still being admitted and jobs first, so their owners hear
        // why; then the connections. Detached jobs outlive their
        // connections, but not the daemon.
        self.refuse_admissions(&TransferError::new(
            ringxfer_ipc::FailureKind::ShuttingDown,
            "the daemon is shutting down and takes no new jobs",
        ));
        let keys: Vec<usize> = self.jobs.slab.iter().map(|(k, _)| k).collect();
        for k in keys {
            self.fail_job(k, TransferError::cancelled(why));
        }
        let keys: Vec<usize> = self.sessions.slab.iter().map(|(k, _)| k).collect();
        for k in keys {
            self.close_session(k, "the daemon is shutting down");
        }
        self.close_peers();
    }

    /// Whether the loop is done: a signal while stopping, a stop with nothing left in
    /// flight (`waiting_for`: operations other than closes), or, with
    /// `exit_when_idle`, nothing left at all.
    pub(super) fn should_exit(&self, waiting_for: usize) -> bool {
        self.life.stop_now
            || (self.life.stopping && waiting_for == 0)
            || (self.life.exit_when_idle
                && self.sessions.slab.is_empty()
                && self.jobs.slab.is_empty()
                && self.io.ops.is_empty())
    }

    /// A draining engine stops once its last job (and submit being
    /// admitted) has ended.
    pub(super) fn stop_if_drained(&mut self) {
        if self.life.draining
            && !self.life.stopping
            && self.jobs.slab.is_empty()
            && self.jobs.admissions.live() == 0
        {
            info!("every job has ended; stopping");
            self.stop();
        }
    }
}

/// What a job cancelled at the end of the grace period is told.
fn grace_ended(grace: Duration) -> String {
    format!(
        "shutdown: the daemon stopped before the job finished (grace period {:.0} s)",
        grace.as_secs_f64()
    )
}
