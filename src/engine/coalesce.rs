//! Final events of batch jobs, sent together.
//!
//! A client copying many small files in batches finishes thousands of jobs a
//! second. Sent one send per loop turn, their final events woke the client's
//! event thread about once per six files; on two cores that thread then
//! took turns with the thread opening the files, and a copy of 10,000 files
//! of 4 KiB took 0.07 to 0.10 s instead of 0.055. So the final event of a
//! job that came in a `SubmitBatch` without asking for an `Accepted` (the
//! client wants throughput, not the moment each one ends) is held back
//! while the connection has other jobs running: it goes out when
//! [`HOLD_MOST_EVENTS`] are held, when the connection's last running job
//! ends, when any other event goes to the connection, or after
//! [`HOLD_AT_MOST`], whichever comes first. A client waiting for any of its
//! jobs before it submits more therefore never waits on the timer: once all
//! of its jobs are done, their events go. (An earlier rule, sending once the
//! held events outnumbered half of the running jobs, still sent about every
//! 13 events: a client opening files as fast as it can keeps only a few
//! dozen jobs running.) Every other event is sent at once, as before, and
//! order is kept: held events sit in the same buffer.

use std::time::Duration;

use tracing::error;

use super::Engine;
use crate::io::ops::Owner;
use ringxfer_ipc::proto::Event;

/// The longest a held event waits.
pub(super) const HOLD_AT_MOST: Duration = Duration::from_millis(1);

/// Held events that make one send whatever else runs.
const HOLD_MOST_EVENTS: u32 = 128;

impl Engine {
    /// Sends a job's final event, or holds it (see the module comment).
    pub(super) fn emit_final(&mut self, k: usize, event: &Event, may_hold: bool) {
        if !may_hold {
            self.emit(k, event);
            return;
        }
        if !self.encode_event(k, event) {
            return;
        }
        let Some(session) = self.sessions.slab.get_mut(k) else {
            return;
        };
        session.held_events += 1;
        if session.held_events >= HOLD_MOST_EVENTS || session.jobs.is_empty() {
            self.flush(k);
            return;
        }
        self.counters.events_held += 1;
        if session.held_events == 1 {
            self.sessions.held.push(k);
        }
        if self.timers.hold.is_none() {
            match self.io.timeout(Owner::HoldTimer, HOLD_AT_MOST) {
                Ok(ud) => self.timers.hold = Some(ud),
                Err(e) => {
                    // Without the timer nothing would send them: send now.
                    error!("cannot queue the timer for held events: {e}");
                    self.flush(k);
                }
            }
        }
    }

    /// Sends every held event.
    pub(super) fn on_hold_timer(&mut self) {
        self.timers.hold = None;
        let mut held = std::mem::take(&mut self.sessions.held);
        for &k in &held {
            // A key whose session ended (or was reused by one holding
            // nothing) has nothing held.
            if self.sessions.slab.get(k).is_some_and(|s| s.held_events > 0) {
                self.flush(k);
            }
        }
        held.clear();
        // Keep the list's memory: it fills again on the next busy turn.
        if self.sessions.held.is_empty() {
            self.sessions.held = held;
        }
    }
}
