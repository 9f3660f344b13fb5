//! One job as the stub sees it: the slot the event thread fills in, and
//! the [`JobHandle`]s that wait on it.

use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::lock;
use super::publisher::Staged;
use crate::proto::{Checksums, Event, Strategy};
use crate::JobError;
#[cfg(doc)]
use crate::{Client, TransferOptions};

/// A job that finished: every byte is in the destination.
///
/// ```
/// use ringxfer_ipc::{Completion, Strategy};
/// use std::time::Duration;
/// let done = Completion {
///     job: 7, bytes: 4096, strategy: Strategy::Splice, elapsed: Duration::from_micros(250),
///     note: None, synced: false, checksums: None,
/// };
/// assert_eq!(done.bytes, 4096);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    /// The daemon's id for the job.
    pub job: u64,
    /// Bytes moved.
    pub bytes: u64,
    /// The strategy the daemon actually used.
    pub strategy: Strategy,
    /// Time from admission to the last byte, as measured by the daemon.
    pub elapsed: Duration,
    /// Why the daemon used this strategy, when it chose (`auto`) or had to
    /// differ from the one asked for.
    pub note: Option<String>,
    /// Whether the daemon synced the destination (fdatasync) before reporting.
    pub synced: bool,
    /// CRC-32C of what was read and of what landed, when verification was asked for.
    pub checksums: Option<Checksums>,
}

pub(crate) type Callback = Box<dyn FnOnce(Result<Completion, JobError>) + Send + 'static>;

pub(crate) fn run_callback(callback: Callback, result: Result<Completion, JobError>) {
    // A panicking callback must not take the event thread with it, or every
    // other job of the connection would hang; the panic hook has already
    // printed the panic by the time catch_unwind returns.
    let _ = catch_unwind(AssertUnwindSafe(move || callback(result)));
}

/// One job as the stub sees it; shared by the table and every handle clone.
pub(crate) struct JobSlot {
    pub(crate) req: u64,
    pub(crate) state: Mutex<SlotState>,
    pub(crate) changed: Condvar,
}

pub(crate) struct SlotState {
    pub(crate) job: Option<u64>,
    pub(crate) bytes: u64,
    total: Option<u64>,
    result: Option<Result<Completion, JobError>>,
    callback: Option<Callback>,
    /// A path helper's destination, until the job ends and the publisher
    /// publishes or abandons it (or the daemon takes it over).
    staged: Option<Staged>,
    /// Threads blocked on `changed`. A condvar's notify is a futex call
    /// even with nobody waiting, and most jobs (every job of a tree copy)
    /// are never waited on: one call per job was a tenth of a 10,000-file
    /// copy's main thread.
    pub(crate) waiters: u32,
}

impl JobSlot {
    pub(crate) fn new(req: u64, callback: Option<Callback>, staged: Option<Staged>) -> JobSlot {
        JobSlot {
            req,
            state: Mutex::new(SlotState {
                job: None,
                bytes: 0,
                total: None,
                result: None,
                callback,
                staged,
                waiters: 0,
            }),
            changed: Condvar::new(),
        }
    }
}

impl JobSlot {
    /// Takes the staged destination out of the slot, if it has one that
    /// `wanted` picks.
    pub(crate) fn take_staged(&self, wanted: impl FnOnce(&Staged) -> bool) -> Option<Staged> {
        let mut state = lock(&self.state);
        match &state.staged {
            Some(staged) if wanted(staged) => state.staged.take(),
            _ => None,
        }
    }

    /// Blocks until the slot changes, counted in `waiters` so that changes
    /// nobody waits for skip the wake-up call.
    fn wait_changed<'a>(&self, mut state: MutexGuard<'a, SlotState>) -> MutexGuard<'a, SlotState> {
        state.waiters += 1;
        let mut state = self
            .changed
            .wait(state)
            .unwrap_or_else(PoisonError::into_inner);
        state.waiters -= 1;
        state
    }

    /// As `wait_changed`, for at most `timeout`.
    fn wait_changed_for<'a>(
        &self,
        mut state: MutexGuard<'a, SlotState>,
        timeout: Duration,
    ) -> MutexGuard<'a, SlotState> {
        state.waiters += 1;
        let (mut state, _) = self
            .changed
            .wait_timeout(state, timeout)
            .unwrap_or_else(PoisonError::into_inner);
        state.waiters -= 1;
        state
    }

    /// Resolves a job that will hear no more from the daemon (its connection
    /// ended, or its request never left) with `err`, and runs its callback.
    /// Not under any lock of the stub.
    pub(crate) fn abandon(&self, err: JobError) {
        // The job may still finish in the daemon, but nobody is left to
        // publish it: drop its staged destination, which removes any
        // temporary name (an unnamed file goes with its last descriptor).
        let staged = lock(&self.state).staged.take();
        drop(staged);
        let (callback, waited_on) = {
            let mut state = lock(&self.state);
            (state.resolve(Err(err)), state.waiters > 0)
        };
        if waited_on {
            self.changed.notify_all();
        }
        if let Some((callback, result)) = callback {
            run_callback(callback, result);
        }
    }
}

impl SlotState {
    /// Records what a job event says; for a final one, returns the job's
    /// result: `published`'s error if publishing its destination failed.
    pub(crate) fn record(
        &mut self,
        event: &Event,
        published: Option<Result<(), JobError>>,
    ) -> Option<Result<Completion, JobError>> {
        match event {
            Event::Accepted { job, .. } => self.job = Some(*job),
            Event::Progress {
                job, bytes, total, ..
            } => {
                self.job = Some(*job);
                self.bytes = *bytes;
                self.total = *total;
            }
            Event::Completed { job, bytes, .. } => {
                self.job = Some(*job);
                self.bytes = *bytes;
                return Some(match published {
                    Some(Err(e)) => Err(e),
                    Some(Ok(())) | None => Ok(completion(event)?),
                });
            }
            Event::Failed {
                job,
                kind,
                os_error,
                message,
                bytes,
                ..
            } => {
                if job.is_some() {
                    self.job = *job;
                }
                self.bytes = *bytes;
                return Some(Err(JobError::Failed {
                    job: *job,
                    kind: *kind,
                    os_error: *os_error,
                    message: message.clone(),
                    bytes: *bytes,
                }));
            }
            _ => {}
        }
        None
    }

    /// Records the outcome (the first one wins) and hands back the callback
    /// to run with it, to be run after the lock is released.
    pub(crate) fn resolve(
        &mut self,
        result: Result<Completion, JobError>,
    ) -> Option<(Callback, Result<Completion, JobError>)> {
        if self.result.is_some() {
            return None;
        }
        self.result = Some(result.clone());
        self.callback.take().map(|callback| (callback, result))
    }
}

/// The [`Completion`] a `Completed` event reports; `None` for any other event.
fn completion(event: &Event) -> Option<Completion> {
    let Event::Completed {
        job,
        bytes,
        strategy,
        elapsed_us,
        note,
        synced,
        checksums,
        ..
    } = event
    else {
        return None;
    };
    Some(Completion {
        job: *job,
        bytes: *bytes,
        strategy: *strategy,
        elapsed: Duration::from_micros(*elapsed_us),
        note: note.clone(),
        synced: *synced,
        checksums: *checksums,
    })
}

/// A submitted job: wait for it, or watch its progress. Clones share the job.
///
/// ```no_run
/// use std::time::Duration;
/// # use std::fs::File;
/// # let client = ringxfer_ipc::Client::connect_default()?;
/// # let (src, dst) = (File::open("in.bin")?, File::create("out.bin")?);
/// let opts = ringxfer_ipc::TransferOptions { progress: true, ..Default::default() };
/// let job = client.submit(&src, &dst, &opts)?;
/// while job.wait_timeout(Duration::from_millis(500)).is_none() {
///     println!("{} of {:?} bytes", job.bytes_so_far(), job.total());
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct JobHandle {
    pub(crate) slot: Arc<JobSlot>,
}

impl JobHandle {
    /// The request number the stub gave the job on its connection (1, 2, …).
    ///
    /// ```no_run
    /// # use std::fs::File;
    /// # let client = ringxfer_ipc::Client::connect_default()?;
    /// # let (src, dst) = (File::open("in.bin")?, File::create("out.bin")?);
    /// let job = client.submit(&src, &dst, &Default::default())?;
    /// println!("request {}", job.req());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn req(&self) -> u64 {
        self.slot.req
    }

    /// The daemon's id for the job, blocking until the daemon admits it.
    ///
    /// # Errors
    ///
    /// The job's error if it was refused, or failed, or the connection ended,
    /// before an id was known.
    ///
    /// ```no_run
    /// # use std::fs::File;
    /// # let client = ringxfer_ipc::Client::connect_default()?;
    /// # let (src, dst) = (File::open("in.bin")?, File::create("out.bin")?);
    /// let job = client.submit(&src, &dst, &Default::default())?;
    /// client.cancel(job.job_id()?)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn job_id(&self) -> Result<u64, JobError> {
        let mut state = lock(&self.slot.state);
        loop {
            if let Some(job) = state.job {
                return Ok(job);
            }
            if let Some(result) = &state.result {
                return result.clone().map(|done| done.job);
            }
            state = self.slot.wait_changed(state);
        }
    }

    /// Blocks until the job completes, fails, or the connection ends.
    ///
    /// # Errors
    ///
    /// [`JobError::Failed`] as reported by the daemon, or
    /// [`JobError::Disconnected`].
    ///
    /// ```no_run
    /// # use std::fs::File;
    /// # let client = ringxfer_ipc::Client::connect_default()?;
    /// # let (src, dst) = (File::open("in.bin")?, File::create("out.bin")?);
    /// let done = client.submit(&src, &dst, &Default::default())?.wait()?;
    /// println!("{} bytes in {:?}", done.bytes, done.elapsed);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn wait(&self) -> Result<Completion, JobError> {
        let mut state = lock(&self.slot.state);
        loop {
            if let Some(result) = &state.result {
                return result.clone();
            }
            state = self.slot.wait_changed(state);
        }
    }

    /// As [`JobHandle::wait`], but gives up after `timeout` and returns `None`.
    ///
    /// ```no_run
    /// # use std::fs::File;
    /// # use std::time::Duration;
    /// # let client = ringxfer_ipc::Client::connect_default()?;
    /// # let (src, dst) = (File::open("in.bin")?, File::create("out.bin")?);
    /// let job = client.submit(&src, &dst, &Default::default())?;
    /// if job.wait_timeout(Duration::from_secs(30)).is_none() {
    ///     eprintln!("still running after 30 s");
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn wait_timeout(&self, timeout: Duration) -> Option<Result<Completion, JobError>> {
        let Some(deadline) = Instant::now().checked_add(timeout) else {
            // Beyond what the clock can represent: as good as forever.
            return Some(self.wait());
        };
        let mut state = lock(&self.slot.state);
        loop {
            if let Some(result) = &state.result {
                return Some(result.clone());
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            state = self.slot.wait_changed_for(state, left);
        }
    }

    /// Bytes written so far, from the latest `Progress`, `Completed` or
    /// `Failed` event; stays 0 without [`TransferOptions::progress`] until the
    /// job ends.
    ///
    /// ```no_run
    /// # use std::fs::File;
    /// # let client = ringxfer_ipc::Client::connect_default()?;
    /// # let (src, dst) = (File::open("in.bin")?, File::create("out.bin")?);
    /// let job = client.submit(&src, &dst, &Default::default())?;
    /// println!("{} bytes so far", job.bytes_so_far());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn bytes_so_far(&self) -> u64 {
        lock(&self.slot.state).bytes
    }

    /// The total the job will move, if a `Progress` event said so.
    ///
    /// ```no_run
    /// # use std::fs::File;
    /// # let client = ringxfer_ipc::Client::connect_default()?;
    /// # let (src, dst) = (File::open("in.bin")?, File::create("out.bin")?);
    /// let job = client.submit(&src, &dst, &ringxfer_ipc::TransferOptions { progress: true, ..Default::default() })?;
    /// if let Some(total) = job.total() {
    ///     println!("{:.0}%", 100.0 * job.bytes_so_far() as f64 / total.max(1) as f64);
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn total(&self) -> Option<u64> {
        lock(&self.slot.state).total
    }

    /// Whether the job has a result, so that [`JobHandle::wait`] would not block.
    ///
    /// ```no_run
    /// # use std::fs::File;
    /// # let client = ringxfer_ipc::Client::connect_default()?;
    /// # let (src, dst) = (File::open("in.bin")?, File::create("out.bin")?);
    /// let job = client.submit(&src, &dst, &Default::default())?;
    /// if job.is_finished() {
    ///     println!("{:?}", job.wait());
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_finished(&self) -> bool {
        lock(&self.slot.state).result.is_some()
    }
}

impl fmt::Debug for JobHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = lock(&self.slot.state);
        f.debug_struct("JobHandle")
            .field("req", &self.slot.req)
            .field("job", &state.job)
            .field("bytes", &state.bytes)
            .field("result", &state.result)
            .finish()
    }
}
