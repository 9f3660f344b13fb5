//! The event thread: reads the daemon's events and routes each to the job,
//! caller or subscribers it is for; when the connection ends, tells
//! everyone still waiting. It starts with the first request whose answer
//! no dispatcher reads: a program that reads its own events (the CLI)
//! never pays for starting and joining it.

use std::net::Shutdown;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};
use std::thread;

use super::job::{run_callback, JobSlot};
use super::publisher::Work;
use super::{lock, Client, ClientError, FrameError, Inner, LostJob, Shared};
use crate::dispatch::wait_readable;
use crate::proto::Event;
use crate::JobError;

/// The event thread: dispatches events until the connection ends, then
/// resolves everything still waiting with the reason. It waits for the
/// socket holding nothing, and stands aside while a
/// [`Dispatcher`](crate::dispatch::Dispatcher) dispatches instead.
pub(crate) fn event_loop(inner: &Inner) {
    let fd = lock(&inner.reader).fd();
    let reason = loop {
        {
            let mut pumping = lock(&inner.pumping);
            while *pumping {
                pumping = inner
                    .pump_changed
                    .wait(pumping)
                    .unwrap_or_else(PoisonError::into_inner);
            }
        }
        if let Err(e) = wait_readable(fd, None) {
            break FrameError::Io(e).to_string();
        }
        // A dispatcher may have started (and taken the bytes) meanwhile.
        if *lock(&inner.pumping) {
            continue;
        }
        if let Err(reason) = lock(&inner.reader).pump(inner) {
            break reason;
        }
    };
    let reason = if inner.dropping.load(Ordering::Acquire) {
        "the client was dropped".to_string()
    } else {
        reason
    };
    inner.close(reason);
}

impl Client {
    /// Makes sure the answers to what was just registered (a job, a
    /// caller, a subscriber) will be read: by the dispatcher that reads
    /// now, or else by the event thread, started here if it has not been.
    /// Called after registering, so that a dispatcher dropped meanwhile
    /// sees the registration (and starts the thread itself) or this sees
    /// that no dispatcher reads.
    pub(crate) fn ensure_reader(&self) -> Result<(), ClientError> {
        if *lock(&self.inner.pumping) {
            return Ok(());
        }
        let mut event_thread = lock(&self.event_thread);
        if event_thread.is_some() {
            return Ok(());
        }
        let inner = Arc::clone(&self.inner);
        let handle = thread::Builder::new()
            .name("ringxfer-ipc-events".into())
            .spawn(move || event_loop(&inner))
            .map_err(|source| ClientError::Io {
                op: "spawning the event thread",
                source,
            })?;
        *event_thread = Some(handle);
        Ok(())
    }

    /// A dispatcher stopped reading: if anything still waits for the daemon,
    /// the event thread takes over (or, if it cannot start, the connection
    /// ends, so that nothing waits for ever).
    pub(crate) fn dispatcher_gone(&self) {
        let waiting = {
            let shared = lock(&self.inner.shared);
            shared.closed.is_none()
                && !(shared.jobs.is_empty()
                    && shared.stats_waiters.is_empty()
                    && shared.answers.is_empty()
                    && shared.subscribers.is_empty())
        };
        if waiting {
            if let Err(e) = self.ensure_reader() {
                self.inner.close(e.to_string());
            }
        }
    }
}

impl Inner {
    /// Routes one event; `Err` carries the reason to end the connection.
    pub(crate) fn dispatch(&self, event: Event) -> Result<(), String> {
        match event {
            Event::Accepted { req, .. }
            | Event::Progress { req, .. }
            | Event::Completed { req, .. }
            | Event::Failed { req, .. } => {
                self.job_event(req, event);
                Ok(())
            }
            Event::Cancelling { req, .. }
            | Event::Status { req, .. }
            | Event::Jobs { req, .. }
            | Event::Refused { req, .. } => {
                let mut shared = lock(&self.shared);
                if let Some(waiter) = shared.answers.remove(&req) {
                    // Err means the caller is gone; the answer is then moot.
                    let _ = waiter.send(event.clone());
                }
                broadcast(&mut shared, event);
                Ok(())
            }
            Event::Stats(ref report) => {
                let mut shared = lock(&self.shared);
                if let Some((_, waiter)) = shared.stats_waiters.pop_front() {
                    // Err means the caller is gone; the report is then moot.
                    let _ = waiter.send(report.clone());
                }
                broadcast(&mut shared, event);
                Ok(())
            }
            Event::ProtocolError { kind, ref message } => {
                let reason = format!("the daemon reported a protocol error ({kind:?}): {message}");
                broadcast(&mut lock(&self.shared), event);
                Err(reason)
            }
            Event::Welcome { .. } => Err("the daemon sent a second Welcome".to_string()),
        }
    }

    fn job_event(&self, req: u64, event: Event) {
        let terminal = matches!(event, Event::Completed { .. } | Event::Failed { .. });
        let Some(slot) = self.slot_for(req, terminal, &event) else {
            return;
        };
        // A staged destination is published (or abandoned) before the
        // handle resolves, so a caller that sees Ok finds the file under its
        // name: by the publisher, so that this thread goes on delivering
        // other jobs' events meanwhile (see publisher.rs).
        if terminal {
            if let Some(staged) = slot.take_staged(|_| true) {
                let work = Work::End {
                    slot,
                    staged,
                    event,
                };
                self.publisher.send(self, work);
                return;
            }
        } else if matches!(event, Event::Accepted { .. }) {
            // Admitted: a staged file the daemon publishes is its now.
            if let Some(staged) = slot.take_staged(|staged| staged.hand_over) {
                self.publisher.send(self, Work::HandOver(staged));
            }
        }
        self.finish_job_event(&slot, event, None);
    }

    /// The slot of job `req` (out of the table if the event is its last),
    /// or `None` for a job not ours to track (already resolved, or a
    /// confused daemon), whose event only subscribers then see.
    fn slot_for(&self, req: u64, terminal: bool, event: &Event) -> Option<std::sync::Arc<JobSlot>> {
        let mut shared = lock(&self.shared);
        let slot = if terminal {
            shared.jobs.remove(&req)
        } else {
            shared.jobs.get(&req).cloned()
        };
        if slot.is_none() {
            broadcast(&mut shared, event.clone());
        }
        slot
    }

    /// Records a job's event in its slot, shows it to subscribers and, for
    /// its last, resolves the job: with `published`'s error if publishing
    /// its destination failed.
    pub(crate) fn finish_job_event(
        &self,
        slot: &JobSlot,
        event: Event,
        published: Option<Result<(), JobError>>,
    ) {
        let mut state = lock(&slot.state);
        let result = state.record(&event, published);
        // Publishing under the slot lock makes both views agree: whoever saw
        // the event on a channel finds the handle updated, and a waiter woken
        // by the update finds the event already on its channel.
        broadcast(&mut lock(&self.shared), event);
        let callback = result.and_then(|result| state.resolve(result));
        let waited_on = state.waiters > 0;
        drop(state);
        if waited_on {
            slot.changed.notify_all();
        }
        if let Some((callback, result)) = callback {
            run_callback(callback, result);
        }
    }

    /// Ends the connection: afterwards nothing can be sent, and every job,
    /// `stats` caller and subscriber still waiting learns that it is over.
    pub(crate) fn close(&self, reason: String) {
        // A dispatcher and then the event thread both see the end; the
        // first says why.
        if lock(&self.shared).closed.is_some() {
            return;
        }
        // Jobs that ended before the connection did are published first,
        // so that subscribers see their final events before the end.
        self.publisher.wait_idle();
        // Wakes any sender blocked on a full socket buffer (with EPIPE), so
        // taking the send lock below cannot hang. An error means the socket
        // is already shut down.
        let _ = self.stream.shutdown(Shutdown::Both);
        // With the send lock held no Submit is half way out, so every slot in
        // the table belongs to a request that was sent whole.
        let tx = lock(&self.tx);
        let (jobs, waiters, answers, subscribers) = {
            let mut shared = lock(&self.shared);
            shared.closed = Some(reason.clone());
            (
                std::mem::take(&mut shared.jobs),
                std::mem::take(&mut shared.stats_waiters),
                std::mem::take(&mut shared.answers),
                std::mem::take(&mut shared.subscribers),
            )
        };
        drop(tx);
        // Listed for `reconnect` before any handle resolves, with no other
        // lock held (a slot's lock is never taken under the shared one).
        let mut lost: Vec<LostJob> = jobs
            .values()
            .map(|slot| {
                let state = lock(&slot.state);
                LostJob {
                    request: slot.req,
                    job: state.job,
                    bytes: state.bytes,
                }
            })
            .collect();
        lost.sort_by_key(|l| l.request);
        lock(&self.shared).lost = lost;
        // Dropping the senders is what tells stats callers and subscribers.
        drop(waiters);
        drop(answers);
        drop(subscribers);
        for slot in jobs.into_values() {
            let err = JobError::Disconnected(reason.clone());
            match slot.take_staged(|_| true) {
                Some(staged) => self
                    .publisher
                    .send(self, Work::Abandon { slot, staged, err }),
                None => slot.abandon(err),
            }
        }
    }
}

/// Hands `event` to every subscriber, forgetting those that hung up.
fn broadcast(shared: &mut Shared, event: Event) {
    shared
        .subscribers
        .retain(|subscriber| subscriber.send(event.clone()).is_ok());
}

/// The variant's name, for messages that must not dump a whole event.
pub(crate) fn event_name(event: &Event) -> &'static str {
    match event {
        Event::Welcome { .. } => "Welcome",
        Event::Accepted { .. } => "Accepted",
        Event::Progress { .. } => "Progress",
        Event::Completed { .. } => "Completed",
        Event::Failed { .. } => "Failed",
        Event::Stats(_) => "Stats",
        Event::ProtocolError { .. } => "ProtocolError",
        Event::Cancelling { .. } => "Cancelling",
        Event::Status { .. } => "Status",
        Event::Jobs { .. } => "Jobs",
        Event::Refused { .. } => "Refused",
    }
}
