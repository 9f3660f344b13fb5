//! The client stub: one connection to the daemon, shared by any number of threads.
//!
//! A [`Client`] owns the socket and, once something waits for an answer
//! that no [`Dispatcher`](crate::dispatch::Dispatcher) reads, one event
//! thread. Requests go out under a send lock, so frames from different
//! threads never interleave. The event thread (or a dispatcher) reads every
//! frame the daemon sends and routes it: job events to the
//! [`JobHandle`] (and callback) of the request they name, `Stats` replies to
//! the callers waiting for them in request order, and a copy of everything to
//! each [`Client::events`] subscriber. When the connection ends, for whatever
//! reason, every job and caller still waiting is told so with that reason.
//!
//! Lock order, to keep the stub deadlock free: `tx` before `shared`, and a job
//! slot's `state` before `shared`. Nothing takes `tx` or a slot while holding
//! `shared`, and no callback runs under any of them.
//!
//! The stub is split by concern: the connection (connect, the `Hello`
//! handshake, reading whole frames), requests (submit, cancel, status,
//! jobs, wait, stats), job handles (`JobSlot`, [`JobHandle`]), the event
//! thread (routing events to slots, answers and subscribers; the end of
//! the connection), the path helpers (`copy_file`, `recv_to_file`, which
//! stage their destination) and the publisher, the thread that publishes
//! or abandons a path helper's staged destination when its job ends, so
//! that link(2), rename(2) and fsync(2) never hold up the event thread.

mod connection;
mod errors;
mod events;
mod job;
mod options;
mod paths;
mod publisher;
mod requests;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};

use crossbeam_channel::Sender;

use crate::dispatch::EventReader;
use crate::proto::{Event, Limits, StatsReport};

pub(crate) use connection::{FrameError, MAX_EVENT_FRAME};
pub(crate) use errors::send_error;
pub use errors::{ClientError, JobError};
pub(crate) use job::{Callback, JobSlot};
pub use job::{Completion, JobHandle};
pub(crate) use options::submit_request;
pub use options::TransferOptions;
use publisher::Publisher;

/// Locks a mutex of the stub, ignoring poison: no code of the stub panics while
/// holding one, and user callbacks never run under one, so the data is intact.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A connection to the daemon. Cheap methods take `&self`, so share it
/// between threads with an `Arc` (or scoped threads).
///
/// Dropping it shuts the socket down and joins the event thread (and the
/// thread publishing the path helpers' destinations, once it has published
/// those whose jobs completed); jobs still outstanding then resolve to
/// [`JobError::Disconnected`] (the daemon decides on its own whether to
/// finish them).
///
/// ```no_run
/// use ringxfer_ipc::{Client, TransferOptions};
/// use std::path::Path;
///
/// let client = Client::connect_default()?;
/// let job = client.copy_file(Path::new("in.bin"), Path::new("out.bin"), &TransferOptions::default())?;
/// let done = job.wait()?;
/// println!("{} bytes by {} in {:?}", done.bytes, done.strategy, done.elapsed);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Client {
    pub(crate) inner: Arc<Inner>,
    /// Started by the first request that no dispatcher reads the answer to
    /// (`Client::ensure_reader`); joined on drop.
    event_thread: Mutex<Option<JoinHandle<()>>>,
    /// The socket `connect` used, for `reconnect`.
    pub(crate) path: Option<PathBuf>,
}

/// A job that was still outstanding when its connection ended, as
/// [`Client::reconnect`] reports it.
///
/// The daemon cancels a connection's attached jobs when the connection
/// closes, so those are gone; a detached job (`detach: true`) runs on, and
/// [`Client::wait_job`] on the new connection follows it by `job`, unless
/// the daemon itself restarted.
///
/// ```
/// let lost = ringxfer_ipc::LostJob { request: 3, job: Some(41), bytes: 8192 };
/// assert_eq!(lost.job, Some(41));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LostJob {
    /// The stub's request number of the submit (its place in this
    /// connection's order of requests).
    pub request: u64,
    /// The daemon's job id, if the job had been given one.
    pub job: Option<u64>,
    /// Bytes the job was last reported to have moved.
    pub bytes: u64,
}

/// What the caller threads and the event thread share.
pub(crate) struct Inner {
    /// Used for sending and for shutdown; the event thread reads a clone.
    pub(crate) stream: UnixStream,
    pub(crate) limits: Limits,
    pub(crate) tx: Mutex<Tx>,
    pub(crate) shared: Mutex<Shared>,
    /// Set by `Drop` so the event thread reports why the connection ended.
    pub(crate) dropping: AtomicBool,
    /// The receiving side, taken by whoever dispatches events.
    pub(crate) reader: Mutex<EventReader>,
    /// A [`Dispatcher`](crate::dispatch::Dispatcher) dispatches events now,
    /// so the event thread stands aside.
    pub(crate) pumping: Mutex<bool>,
    pub(crate) pump_changed: Condvar,
    /// Publishes the path helpers' staged destinations off the event thread.
    pub(crate) publisher: Publisher,
}

/// The send side; its lock makes each frame one uninterrupted write.
pub(crate) struct Tx {
    pub(crate) buf: Vec<u8>,
    pub(crate) next_req: u64,
    pub(crate) next_stats: u64,
}

pub(crate) struct Shared {
    /// Unresolved jobs by `req`; a slot leaves when its job resolves.
    pub(crate) jobs: HashMap<u64, Arc<JobSlot>>,
    /// Callers of `stats`, oldest first, because replies come in request order.
    pub(crate) stats_waiters: VecDeque<(u64, Sender<StatsReport>)>,
    /// Callers of `cancel`, `status` and `jobs`, by the `req` of their request.
    pub(crate) answers: HashMap<u64, Sender<Event>>,
    pub(crate) subscribers: Vec<Sender<Event>>,
    /// Why the connection ended, once it has.
    pub(crate) closed: Option<String>,
    /// The jobs still outstanding when it ended, for `reconnect`.
    pub(crate) lost: Vec<LostJob>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shared = lock(&self.inner.shared);
        f.debug_struct("Client")
            .field("limits", &self.inner.limits)
            .field("outstanding_jobs", &shared.jobs.len())
            .field("closed", &shared.closed)
            .finish_non_exhaustive()
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.inner.dropping.store(true, Ordering::Release);
        // The event thread's blocking read then sees end of file and resolves
        // what is outstanding; the daemon sees us go. An error here means the
        // socket is already shut down, which is the goal anyway.
        let _ = self.inner.stream.shutdown(Shutdown::Both);
        let event_thread = self
            .event_thread
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        match event_thread {
            // A callback that owned the last Client drops it on the event
            // thread itself, which then ends on its own once it returns.
            Some(handle) if handle.thread().id() == thread::current().id() => {}
            // Err only if the thread panicked, which the panic hook has
            // already reported; there is nothing left to clean up.
            Some(handle) => {
                let _ = handle.join();
            }
            // Nothing was left for a thread to read; whatever is (a job
            // submitted under a dispatcher and never answered) ends here.
            None => self.inner.close("the client was dropped".to_string()),
        }
        // After the event thread, which hands it its last work as the
        // connection ends.
        self.inner.publisher.stop();
    }
}
