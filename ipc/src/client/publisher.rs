//! The publisher: a path helper's staged destination published, or
//! abandoned, when its job ends, on a thread of its own.
//!
//! Publishing is link(2) or rename(2), and with `fsync` an fsync(2) of the
//! file and of its directory; even without, ext4 starts writeback of the
//! new data when a rename replaces a file. Done on the event thread, it held
//! up every other event of the connection for as long as the disk took.
//! Instead the event thread hands the job's final event over with the
//! staged file and goes on. The publisher publishes (or, for a failed job,
//! drops the staged file, which removes its temporary name), and only then
//! resolves the job as the event thread would have, so the guarantees are
//! the same: a caller (or subscriber) that sees `Completed` finds the file
//! under its name, one that sees a failure finds nothing under it. Jobs are
//! published in the order their final events arrived.
//!
//! The thread starts on the caller's thread with a connection's first
//! staged job, and ends when the client is dropped, once it has done all
//! the work handed to it: a job that completed before the drop is
//! published.

use std::collections::VecDeque;
use std::fs::Metadata;
use std::io;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::{self, JoinHandle};

use super::job::JobSlot;
use super::{lock, Inner};
use crate::proto::{Event, FailureKind};
use crate::publish::StagedFile;
use crate::JobError;

/// A destination staged by a path helper, travelling with its job.
pub(crate) struct Staged {
    pub(crate) file: StagedFile,
    /// The source's metadata, when the destination is to take it on.
    pub(crate) preserve_from: Option<Metadata>,
    /// The daemon publishes it: handed over when the job is accepted,
    /// dropped (its hidden name removed) if it is refused.
    pub(crate) hand_over: bool,
}

impl Staged {
    /// Publishes a completed job's destination, turning a failure into the
    /// job's failure.
    fn publish(self, job: u64, bytes: u64) -> Result<(), JobError> {
        let path = self.file.path().to_path_buf();
        self.file.publish(self.preserve_from.as_ref()).map_err(|e| {
            let os_error = e.io_error().and_then(io::Error::raw_os_error);
            // A publish's own failures are full disks, permissions,
            // read-only file systems, or I/O.
            let kind = match os_error.map(crate::errno::failure_kind) {
                Some(
                    k @ (FailureKind::NoSpace
                    | FailureKind::PermissionDenied
                    | FailureKind::ReadOnly),
                ) => k,
                _ => FailureKind::Io,
            };
            JobError::Failed {
                job: Some(job),
                kind,
                os_error,
                message: format!(
                    "the data was written, but publishing it as {} failed: {e}",
                    path.display()
                ),
                bytes,
            }
        })
    }
}

/// What the event thread hands the publisher.
pub(crate) enum Work {
    /// The job ended with `event` (`Completed` or `Failed`): publish or
    /// abandon its destination, then resolve the job with the event.
    End {
        slot: Arc<JobSlot>,
        staged: Staged,
        event: Event,
    },
    /// The connection ended first: abandon the destination, then resolve
    /// the job with `err`.
    Abandon {
        slot: Arc<JobSlot>,
        staged: Staged,
        err: JobError,
    },
    /// The daemon admitted a job it publishes itself: let the file go
    /// (closing a descriptor can be a flush on a network file system).
    HandOver(Staged),
}

impl Work {
    fn run(self, inner: &Inner) {
        match self {
            Work::End {
                slot,
                staged,
                event,
            } => {
                let published = match &event {
                    Event::Completed { job, bytes, .. } => {
                        #[cfg(test)]
                        inner.publisher.pass_gate();
                        Some(staged.publish(*job, *bytes))
                    }
                    // Failed: nothing may appear under the destination's name.
                    _ => {
                        drop(staged);
                        None
                    }
                };
                inner.finish_job_event(&slot, event, published);
            }
            Work::Abandon { slot, staged, err } => {
                drop(staged);
                slot.abandon(err);
            }
            Work::HandOver(staged) => staged.file.hand_over(),
        }
    }
}

/// The publishing thread of one connection, and the work queued for it.
pub(crate) struct Publisher {
    queue: Mutex<Queue>,
    /// Work queued, the queue emptied, or the thread asked to stop.
    changed: Condvar,
    /// A test holds the next publish here, and learns which thread runs it.
    #[cfg(test)]
    pub(crate) gate: Mutex<
        Option<(
            crossbeam_channel::Sender<String>,
            crossbeam_channel::Receiver<()>,
        )>,
    >,
}

#[derive(Default)]
struct Queue {
    work: VecDeque<Work>,
    /// Work queued or being done.
    busy: usize,
    thread: Option<JoinHandle<()>>,
    stop: bool,
}

impl Publisher {
    pub(crate) fn new() -> Publisher {
        Publisher {
            queue: Mutex::new(Queue::default()),
            changed: Condvar::new(),
            #[cfg(test)]
            gate: Mutex::new(None),
        }
    }

    /// Starts the thread, unless it runs already.
    pub(crate) fn start(inner: &Arc<Inner>) -> io::Result<()> {
        let mut queue = lock(&inner.publisher.queue);
        if queue.thread.is_some() || queue.stop {
            return Ok(());
        }
        let for_thread = Arc::clone(inner);
        let handle = thread::Builder::new()
            .name("ringxfer-ipc-publish".into())
            .spawn(move || run(&for_thread))?;
        queue.thread = Some(handle);
        Ok(())
    }

    /// Queues `work` for the thread; done here and now if there is none
    /// (it never started, or the client is being dropped), so that no job
    /// is left unresolved.
    pub(crate) fn send(&self, inner: &Inner, work: Work) {
        let mut queue = lock(&self.queue);
        if queue.thread.is_none() || queue.stop {
            drop(queue);
            work.run(inner);
            return;
        }
        queue.work.push_back(work);
        queue.busy += 1;
        drop(queue);
        self.changed.notify_all();
    }

    /// Waits until everything queued so far is done.
    pub(crate) fn wait_idle(&self) {
        let mut queue = lock(&self.queue);
        while queue.busy > 0 {
            queue = self
                .changed
                .wait(queue)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Lets the thread finish what is queued, then joins it.
    pub(crate) fn stop(&self) {
        let handle = {
            let mut queue = lock(&self.queue);
            queue.stop = true;
            queue.thread.take()
        };
        self.changed.notify_all();
        if let Some(handle) = handle {
            if handle.thread().id() != thread::current().id() {
                // Err only if the thread panicked, which the panic hook has
                // already reported.
                let _ = handle.join();
            }
        }
    }

    /// The next work, or `None` once asked to stop with nothing left.
    fn next(&self) -> Option<Work> {
        let mut queue = lock(&self.queue);
        loop {
            if let Some(work) = queue.work.pop_front() {
                return Some(work);
            }
            if queue.stop {
                return None;
            }
            queue = self
                .changed
                .wait(queue)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    fn done_one(&self) {
        lock(&self.queue).busy -= 1;
        self.changed.notify_all();
    }

    #[cfg(test)]
    fn pass_gate(&self) {
        let gate = lock(&self.gate).take();
        if let Some((tell, wait)) = gate {
            let name = thread::current().name().unwrap_or("").to_string();
            let _ = tell.send(name);
            let _ = wait.recv();
        }
    }
}

/// The publishing thread: does the work in the order it came.
fn run(inner: &Inner) {
    let publisher = &inner.publisher;
    while let Some(work) = publisher.next() {
        work.run(inner);
        publisher.done_one();
    }
}
