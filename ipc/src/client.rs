//! The client stub: one connection to the daemon, shared by any number of threads.
//!
//! A [`Client`] owns the socket and one event thread. Requests go out under a
//! send lock, so frames from different threads never interleave. The event
//! thread reads every frame the daemon sends and routes it: job events to the
//! [`JobHandle`] (and callback) of the request they name, `Stats` replies to
//! the callers waiting for them in request order, and a copy of everything to
//! each [`Client::events`] subscriber. When the connection ends, for whatever
//! reason, every job and caller still waiting is told so with that reason.
//!
//! Lock order, to keep the stub deadlock free: `tx` before `shared`, and a job
//! slot's `state` before `shared`. Nothing takes `tx` or a slot while holding
//! `shared`, and no callback runs under any of them.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::fs::{File, Metadata, OpenOptions};
use std::io::{self, Read};
use std::net::Shutdown;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use crate::codec::{self, CodecError};
use crate::dispatch::{wait_readable, EventReader};
use crate::fdpass::send_with_fds;
use crate::frame::{self, DeframeError};
use crate::proto::{
    Checksums, Event, FailureKind, JobInfo, Limits, Priority, ProtocolErrorKind, PublishTo,
    Request, StatsReport, Strategy, SubmitRequest, DEFAULT_MAX_FRAME, FRAME_HEADER_LEN,
    PROTOCOL_VERSION,
};
use crate::publish::{PublishError, PublishOptions, StagedFile};
use crate::socket_path::client_socket_path;

/// How long [`Client::from_stream`] waits for the answer to `Hello`.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest frame accepted from the daemon. Events are small; anything
/// near this is a broken or hostile peer, not data.
pub(crate) const MAX_EVENT_FRAME: u32 = 16 * 1024 * 1024;

/// The payload buffer is shrunk back to this after a large frame, so one odd
/// event does not pin megabytes for the life of the connection.
const KEEP_PAYLOAD_CAPACITY: usize = 64 * 1024;

/// What to transfer and how; everything but the two descriptors.
///
/// ```
/// use ringxfer_ipc::{Strategy, TransferOptions};
/// let opts = TransferOptions { tag: "backup.tar".into(), length: Some(4096), ..Default::default() };
/// assert_eq!(opts.strategy, Strategy::Auto);
/// ```
#[derive(Debug, Clone)]
pub struct TransferOptions {
    /// Free text the daemon logs with the job (a file name, say).
    pub tag: String,
    /// Where reading starts in the source (ignored for sockets and pipes).
    pub offset: u64,
    /// How many bytes to move; `None` means to the end of the source.
    pub length: Option<u64>,
    /// Where writing starts in the destination (ignored for sockets and pipes).
    pub dest_offset: u64,
    /// Which transfer strategy to ask for.
    pub strategy: Strategy,
    /// Whether to ask for `Progress` events, which feed [`JobHandle::bytes_so_far`].
    pub progress: bool,
    /// The job's scheduling class.
    pub priority: Priority,
    /// At most this many bytes per second for this job.
    pub rate_limit: Option<u64>,
    /// Let the job run on if this connection closes; follow it later with
    /// [`Client::wait_job`] from any connection of the same user.
    ///
    /// A staged destination of the path helpers is then published by the
    /// daemon when the job completes (this process may be gone by then):
    /// it gets the destination's directory and name with the job.
    pub detach: bool,
    /// Complete only once the destination's data is durable (fdatasync).
    pub fsync: bool,
    /// Checksum what was read and what landed, and fail on a difference.
    pub verify: bool,
    /// Path helpers only ([`Client::copy_file`], [`Client::recv_to_file`]):
    /// write straight into the destination instead of into a temporary
    /// file that takes the destination's name only once the job completed
    /// (see [`crate::publish`]).
    pub in_place: bool,
    /// [`Client::copy_file`] only: give the destination the source's mode,
    /// owner (where permitted) and timestamps once the job completed.
    pub preserve: bool,
    /// Once every byte is written, the daemon truncates a regular-file
    /// destination to where the job's writes ended (see
    /// [`SubmitRequest::truncate`]). The path helpers set it themselves for
    /// [`TransferOptions::in_place`].
    pub truncate: bool,
}

impl Default for TransferOptions {
    /// The whole source from offset 0 to destination offset 0, strategy
    /// chosen by the daemon, no progress events.
    ///
    /// ```
    /// let opts = ringxfer_ipc::TransferOptions::default();
    /// assert_eq!((opts.offset, opts.length, opts.progress), (0, None, false));
    /// ```
    fn default() -> Self {
        TransferOptions {
            tag: String::new(),
            offset: 0,
            length: None,
            dest_offset: 0,
            strategy: Strategy::Auto,
            progress: false,
            priority: Priority::Normal,
            rate_limit: None,
            detach: false,
            fsync: false,
            verify: false,
            in_place: false,
            preserve: false,
            truncate: false,
        }
    }
}

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

/// Why a job did not complete.
///
/// ```
/// use ringxfer_ipc::{FailureKind, JobError};
/// let e = JobError::Failed {
///     job: Some(3), kind: FailureKind::NoSpace, os_error: Some(28),
///     message: "write to destination: No space left on device".into(), bytes: 1 << 20,
/// };
/// assert_eq!(e.to_string(), "no-space: write to destination: No space left on device");
/// ```
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum JobError {
    /// The daemon failed, cancelled or refused the job.
    #[error("{kind}: {message}")]
    Failed {
        /// The daemon's id; `None` when the job was refused before admission.
        job: Option<u64>,
        /// The class of failure.
        kind: FailureKind,
        /// The OS error number, when one caused the failure.
        os_error: Option<i32>,
        /// What went wrong, in the daemon's words.
        message: String,
        /// Bytes written to the destination before the failure.
        bytes: u64,
    },
    /// The connection to the daemon ended before the job did; the string says why.
    /// The job may or may not have run to completion.
    #[error("the connection to the daemon ended before the job did: {0}")]
    Disconnected(String),
}

impl JobError {
    /// The daemon's class of failure, or `None` if the connection ended first.
    ///
    /// ```
    /// use ringxfer_ipc::JobError;
    /// assert_eq!(JobError::Disconnected("the daemon closed the connection".into()).kind(), None);
    /// ```
    pub fn kind(&self) -> Option<FailureKind> {
        match self {
            JobError::Failed { kind, .. } => Some(*kind),
            JobError::Disconnected(_) => None,
        }
    }
}

/// An error talking to the daemon (as opposed to a job's own failure, [`JobError`]).
///
/// ```
/// let err = ringxfer_ipc::Client::connect("/nonexistent/ringxferd.sock").unwrap_err();
/// assert!(err.is_unreachable());
/// assert!(err.to_string().contains("/nonexistent/ringxferd.sock"));
/// ```
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// connect(2) to the daemon's socket failed.
    #[error("cannot connect to the ringxfer daemon at {}: {source} ({})", .path.display(), connect_hint(.source))]
    Connect {
        /// The socket path tried.
        path: PathBuf,
        /// The OS error of connect(2).
        source: io::Error,
    },
    /// Opening (or, for a destination, truncating) a local file failed, or
    /// source and destination are the same file.
    #[error("cannot open {}: {source}", .path.display())]
    Open {
        /// The file's path.
        path: PathBuf,
        /// The OS error, or `InvalidInput` for a copy onto itself.
        source: io::Error,
    },
    /// A system call on the connection failed.
    #[error("{op}: {source}")]
    Io {
        /// What the stub was doing.
        op: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// A frame could not be encoded (e.g. a tag over the daemon's frame
    /// limit) or the daemon's answer to `Hello` could not be decoded.
    #[error("bad frame: {0}")]
    Codec(#[from] CodecError),
    /// The daemon closed the connection with an error frame.
    #[error("the daemon closed the connection ({kind:?}): {message}")]
    Protocol {
        /// The daemon's class of error.
        kind: ProtocolErrorKind,
        /// The daemon's explanation.
        message: String,
    },
    /// The daemon's answer to `Hello` was missing, malformed or named another
    /// protocol version.
    #[error("handshake with the ringxfer daemon failed: {0}")]
    Handshake(String),
    /// The connection to the daemon is closed; nothing more can be sent.
    #[error("the connection to the ringxfer daemon is closed")]
    Disconnected,
    /// The daemon refused a control request about a job (no such job, or
    /// another user's).
    #[error("job {job}: {kind}: {message}")]
    Refused {
        /// The job named.
        job: u64,
        /// [`FailureKind::NoSuchJob`] or [`FailureKind::PermissionDenied`].
        kind: FailureKind,
        /// The daemon's explanation.
        message: String,
    },
}

impl ClientError {
    /// Whether this is a failure to connect that means no daemon answers on
    /// that socket: it does not exist, nobody listens on it, or this user may
    /// not use it.
    ///
    /// ```no_run
    /// match ringxfer_ipc::Client::connect_default() {
    ///     Err(e) if e.is_unreachable() => eprintln!("start ringxferd first: {e}"),
    ///     Err(e) => eprintln!("{e}"),
    ///     Ok(_client) => {}
    /// }
    /// ```
    pub fn is_unreachable(&self) -> bool {
        match self {
            ClientError::Connect { source, .. } => matches!(
                source.raw_os_error(),
                Some(
                    libc::ENOENT
                        | libc::ENOTDIR
                        | libc::ECONNREFUSED
                        | libc::ECONNRESET
                        | libc::EACCES
                        | libc::EPERM
                )
            ),
            _ => false,
        }
    }
}

/// Says in words what a connect(2) error means for whether a daemon runs there.
fn connect_hint(err: &io::Error) -> &'static str {
    match err.raw_os_error() {
        Some(libc::ENOENT | libc::ENOTDIR) => "no socket exists there: is ringxferd running?",
        Some(libc::ECONNREFUSED) => "the path exists but no daemon is listening on it",
        Some(libc::EACCES | libc::EPERM) => "this user may not use that socket",
        Some(libc::EAGAIN) => "a daemon is running there but its listen queue is full",
        _ => "no daemon could be reached there",
    }
}

/// The error for an answer that is not the one asked for: a refusal, or a
/// confused daemon.
fn unexpected_answer(job: u64, event: Event) -> ClientError {
    match event {
        Event::Refused {
            job, kind, message, ..
        } => ClientError::Refused { job, kind, message },
        other => ClientError::Refused {
            job,
            kind: FailureKind::Io,
            message: format!("the daemon answered with {}", event_name(&other)),
        },
    }
}

/// Turns a failed send into an error; a peer that is gone is a closed connection.
pub(crate) fn send_error(op: &'static str, source: io::Error) -> ClientError {
    match source.raw_os_error() {
        Some(libc::EPIPE | libc::ECONNRESET | libc::ENOTCONN) => ClientError::Disconnected,
        _ => ClientError::Io { op, source },
    }
}

/// Locks a mutex of the stub, ignoring poison: no code of the stub panics while
/// holding one, and user callbacks never run under one, so the data is intact.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) type Callback = Box<dyn FnOnce(Result<Completion, JobError>) + Send + 'static>;

/// The Submit frame for request `req` with `opts`.
pub(crate) fn submit_request(req: u64, opts: &TransferOptions) -> Request {
    Request::Submit(SubmitRequest {
        req,
        tag: opts.tag.clone(),
        offset: opts.offset,
        length: opts.length,
        dest_offset: opts.dest_offset,
        strategy: opts.strategy,
        progress: opts.progress,
        priority: opts.priority,
        rate_limit: opts.rate_limit,
        detach: opts.detach,
        fsync: opts.fsync,
        verify: opts.verify,
        truncate: opts.truncate,
        publish: None,
    })
}

/// A connection to the daemon. Cheap methods take `&self`, so share it
/// between threads with an `Arc` (or scoped threads).
///
/// Dropping it shuts the socket down and joins the event thread; jobs still
/// outstanding then resolve to [`JobError::Disconnected`] (the daemon decides
/// on its own whether to finish them).
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
    event_thread: Option<JoinHandle<()>>,
    /// The socket `connect` used, for `reconnect`.
    path: Option<PathBuf>,
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
    dropping: AtomicBool,
    /// The receiving side, taken by whoever dispatches events.
    pub(crate) reader: Mutex<EventReader>,
    /// A [`Dispatcher`](crate::dispatch::Dispatcher) dispatches events now,
    /// so the event thread stands aside.
    pub(crate) pumping: Mutex<bool>,
    pub(crate) pump_changed: Condvar,
}

/// The send side; its lock makes each frame one uninterrupted write.
pub(crate) struct Tx {
    buf: Vec<u8>,
    pub(crate) next_req: u64,
    next_stats: u64,
}

pub(crate) struct Shared {
    /// Unresolved jobs by `req`; a slot leaves when its job resolves.
    pub(crate) jobs: HashMap<u64, Arc<JobSlot>>,
    /// Callers of `stats`, oldest first, because replies come in request order.
    stats_waiters: VecDeque<(u64, Sender<StatsReport>)>,
    /// Callers of `cancel`, `status` and `jobs`, by the `req` of their request.
    answers: HashMap<u64, Sender<Event>>,
    subscribers: Vec<Sender<Event>>,
    /// Why the connection ended, once it has.
    pub(crate) closed: Option<String>,
    /// The jobs still outstanding when it ended, for `reconnect`.
    lost: Vec<LostJob>,
}

impl Client {
    /// Connects to the daemon's socket at `path` and performs the handshake.
    ///
    /// # Errors
    ///
    /// [`ClientError::Connect`] if connect(2) fails (see
    /// [`ClientError::is_unreachable`]); otherwise as [`Client::from_stream`].
    ///
    /// ```no_run
    /// let client = ringxfer_ipc::Client::connect("/run/ringxfer/ringxferd.sock")?;
    /// # Ok::<(), ringxfer_ipc::ClientError>(())
    /// ```
    pub fn connect(path: impl AsRef<Path>) -> Result<Client, ClientError> {
        let path = path.as_ref();
        let stream = UnixStream::connect(path).map_err(|source| ClientError::Connect {
            path: path.to_path_buf(),
            source,
        })?;
        let mut client = Client::from_stream(stream)?;
        client.path = Some(path.to_path_buf());
        Ok(client)
    }

    /// Connects to [`client_socket_path`]: the per-user daemon's socket
    /// where one exists, else the system daemon's.
    ///
    /// # Errors
    ///
    /// As [`Client::connect`].
    ///
    /// ```no_run
    /// let client = ringxfer_ipc::Client::connect_default()?;
    /// # Ok::<(), ringxfer_ipc::ClientError>(())
    /// ```
    pub fn connect_default() -> Result<Client, ClientError> {
        Client::connect(client_socket_path())
    }

    /// Speaks the protocol on an already connected stream (from socket
    /// activation, a test, or a socket connected some other way): sends
    /// `Hello`, waits up to 10 s for `Welcome`, then starts the event thread.
    ///
    /// # Errors
    ///
    /// [`ClientError::Handshake`] if the daemon does not answer in time, hangs
    /// up, or speaks another protocol version; [`ClientError::Protocol`] if it
    /// answers with another error frame; [`ClientError::Io`] for a failed
    /// system call.
    ///
    /// ```no_run
    /// use std::os::unix::net::UnixStream;
    /// let stream = UnixStream::connect("/run/ringxfer/ringxferd.sock")?;
    /// let client = ringxfer_ipc::Client::from_stream(stream)?;
    /// println!("{} jobs allowed", client.limits().max_jobs_per_connection);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn from_stream(stream: UnixStream) -> Result<Client, ClientError> {
        let io_err = |op: &'static str| move |source| ClientError::Io { op, source };
        // The event thread relies on blocking reads, whatever the caller set.
        stream
            .set_nonblocking(false)
            .map_err(io_err("making the daemon socket blocking"))?;
        stream
            .set_read_timeout(Some(HANDSHAKE_TIMEOUT))
            .map_err(io_err("setting the handshake timeout"))?;

        let mut buf = Vec::new();
        let hello = Request::Hello {
            version: PROTOCOL_VERSION,
        };
        codec::encode_frame(&hello, &mut buf, DEFAULT_MAX_FRAME)?;
        send_with_fds(stream.as_fd(), &buf, &[]).map_err(io_err("sending Hello"))?;

        // Read straight from the socket, not through a buffer: bytes after
        // Welcome belong to the event thread's reader.
        let answer = match read_frame(&mut &stream, &mut buf) {
            Ok(event) => event,
            Err(FrameError::Io(e))
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(ClientError::Handshake(format!(
                    "no answer to Hello within {} s",
                    HANDSHAKE_TIMEOUT.as_secs()
                )))
            }
            Err(FrameError::Io(source)) => {
                return Err(ClientError::Io {
                    op: "reading the answer to Hello",
                    source,
                })
            }
            Err(FrameError::Decode(e)) => return Err(ClientError::Codec(e)),
            Err(e) => {
                return Err(ClientError::Handshake(format!(
                    "waiting for the answer to Hello: {e}"
                )))
            }
        };
        let limits = match answer {
            Event::Welcome { version, limits } if version == PROTOCOL_VERSION => limits,
            Event::Welcome { version, .. } => {
                return Err(ClientError::Handshake(format!(
                    "the daemon speaks protocol version {version}, this client {PROTOCOL_VERSION}"
                )))
            }
            Event::ProtocolError {
                kind: ProtocolErrorKind::BadVersion,
                message,
            } => {
                return Err(ClientError::Handshake(format!(
                    "the daemon refused protocol version {PROTOCOL_VERSION}: {message}"
                )))
            }
            Event::ProtocolError { kind, message } => {
                return Err(ClientError::Protocol { kind, message })
            }
            other => {
                return Err(ClientError::Handshake(format!(
                    "expected Welcome in answer to Hello, got {}",
                    event_name(&other)
                )))
            }
        };

        stream
            .set_read_timeout(None)
            .map_err(io_err("clearing the handshake timeout"))?;
        let reader = stream
            .try_clone()
            .map_err(io_err("duplicating the daemon socket"))?;
        buf.clear();
        let inner = Arc::new(Inner {
            stream,
            limits,
            tx: Mutex::new(Tx {
                buf,
                next_req: 1,
                next_stats: 0,
            }),
            shared: Mutex::new(Shared {
                jobs: HashMap::new(),
                stats_waiters: VecDeque::new(),
                answers: HashMap::new(),
                subscribers: Vec::new(),
                closed: None,
                lost: Vec::new(),
            }),
            dropping: AtomicBool::new(false),
            reader: Mutex::new(EventReader::new(reader)),
            pumping: Mutex::new(false),
            pump_changed: Condvar::new(),
        });
        let for_thread = Arc::clone(&inner);
        let event_thread = thread::Builder::new()
            .name("ringxfer-ipc-events".into())
            .spawn(move || event_loop(&for_thread))
            .map_err(io_err("spawning the event thread"))?;
        Ok(Client {
            inner,
            event_thread: Some(event_thread),
            path: None,
        })
    }

    /// Replaces this connection with a new one to the same socket (the path
    /// given to [`Client::connect`]) and returns the jobs that were still
    /// outstanding on the old one: their handles resolve (or have resolved)
    /// to [`JobError::Disconnected`]. Use it after the daemon restarted, or
    /// whenever a call returned [`ClientError::Disconnected`].
    ///
    /// # Errors
    ///
    /// As [`Client::connect`], and then the old connection is kept as it
    /// was; [`ClientError::Io`] (`InvalidInput`) for a client made by
    /// [`Client::from_stream`], which has no path: use
    /// [`Client::reconnect_to`].
    ///
    /// ```no_run
    /// let mut client = ringxfer_ipc::Client::connect_default()?;
    /// // ... the daemon restarts ...
    /// for lost in client.reconnect()? {
    ///     eprintln!("request {} (job {:?}) was lost", lost.request, lost.job);
    /// }
    /// # Ok::<(), ringxfer_ipc::ClientError>(())
    /// ```
    pub fn reconnect(&mut self) -> Result<Vec<LostJob>, ClientError> {
        let Some(path) = self.path.clone() else {
            return Err(ClientError::Io {
                op: "reconnect",
                source: io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "this client was made from a stream and has no socket path; use reconnect_to",
                ),
            });
        };
        self.reconnect_to(path)
    }

    /// As [`Client::reconnect`], to the socket at `path`.
    ///
    /// # Errors
    ///
    /// As [`Client::connect`]; the old connection is then kept as it was.
    ///
    /// ```no_run
    /// let mut client = ringxfer_ipc::Client::connect("/run/ringxfer/ringxferd.sock")?;
    /// let lost = client.reconnect_to("/run/ringxfer/ringxferd.sock")?;
    /// println!("{} jobs lost", lost.len());
    /// # Ok::<(), ringxfer_ipc::ClientError>(())
    /// ```
    pub fn reconnect_to(&mut self, path: impl AsRef<Path>) -> Result<Vec<LostJob>, ClientError> {
        let fresh = Client::connect(path)?;
        let old_inner = Arc::clone(&self.inner);
        // Dropping the old client ends its connection and joins its event
        // thread, which resolves whatever was still outstanding and lists it.
        drop(std::mem::replace(self, fresh));
        let lost = std::mem::take(&mut lock(&old_inner.shared).lost);
        Ok(lost)
    }

    /// The limits the daemon announced in its `Welcome`.
    ///
    /// ```no_run
    /// let client = ringxfer_ipc::Client::connect_default()?;
    /// assert!(client.limits().max_fds_per_message >= 2);
    /// # Ok::<(), ringxfer_ipc::ClientError>(())
    /// ```
    pub fn limits(&self) -> Limits {
        self.inner.limits
    }

    /// Hands the daemon a transfer from `source` to `dest`. Returns once the
    /// request is sent; the handle tells when the job is admitted and done.
    ///
    /// The daemon gets its own copies of the descriptors, so the caller may
    /// close its copies as soon as this returns.
    ///
    /// # Errors
    ///
    /// [`ClientError::Disconnected`] if the connection is closed,
    /// [`ClientError::Codec`] if the request does not fit in a frame (an
    /// enormous tag), [`ClientError::Io`] if sendmsg(2) fails (e.g. `EBADF`
    /// for a closed descriptor).
    ///
    /// ```no_run
    /// use std::fs::File;
    /// use ringxfer_ipc::{Client, TransferOptions};
    ///
    /// let client = Client::connect_default()?;
    /// let src = File::open("in.bin")?;
    /// let dst = File::create("out.bin")?;
    /// let job = client.submit(&src, &dst, &TransferOptions { progress: true, ..Default::default() })?;
    /// println!("job {} moved {} bytes", job.job_id()?, job.wait()?.bytes);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn submit(
        &self,
        source: impl AsFd,
        dest: impl AsFd,
        opts: &TransferOptions,
    ) -> Result<JobHandle, ClientError> {
        self.submit_inner(source.as_fd(), dest.as_fd(), None, opts, None, None)
    }

    /// As [`Client::submit`], and the daemon gives `dest` a name in `dir`
    /// when the job completes (see [`PublishTo`]): for a detached job whose
    /// destination is staged (an O_TMPFILE, or a hidden file named in
    /// `publish.staged_name`) and whose submitter may be gone by then. A
    /// failed or cancelled job leaves nothing under the name. `dir` is the
    /// directory both names are in, opened by the caller (O_RDONLY, so
    /// that with `fsync` the daemon can sync it too).
    /// [`StagedFile::for_daemon`] makes both.
    ///
    /// # Errors
    ///
    /// As [`Client::submit`].
    pub fn submit_publish(
        &self,
        source: impl AsFd,
        dest: impl AsFd,
        dir: impl AsFd,
        publish: PublishTo,
        opts: &TransferOptions,
    ) -> Result<JobHandle, ClientError> {
        self.submit_inner(
            source.as_fd(),
            dest.as_fd(),
            Some((dir.as_fd(), publish)),
            opts,
            None,
            None,
        )
    }

    /// As [`Client::submit`], and `on_done` runs with the job's result on the
    /// stub's event thread, exactly once: when the job completes or fails, or
    /// when the connection ends first. If this returns an error, `on_done`
    /// never runs.
    ///
    /// The callback delays every other event while it runs, so keep it short,
    /// and do not wait in it for anything only the event thread can deliver
    /// ([`JobHandle::wait`] on another job, [`Client::stats`]).
    ///
    /// # Errors
    ///
    /// As [`Client::submit`].
    ///
    /// ```no_run
    /// use std::fs::File;
    /// use ringxfer_ipc::{Client, TransferOptions};
    ///
    /// let client = Client::connect_default()?;
    /// let (src, dst) = (File::open("in.bin")?, File::create("out.bin")?);
    /// client.submit_with_callback(&src, &dst, &TransferOptions::default(), |result| match result {
    ///     Ok(done) => println!("{} bytes", done.bytes),
    ///     Err(e) => eprintln!("copy failed: {e}"),
    /// })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn submit_with_callback(
        &self,
        source: impl AsFd,
        dest: impl AsFd,
        opts: &TransferOptions,
        on_done: impl FnOnce(Result<Completion, JobError>) + Send + 'static,
    ) -> Result<JobHandle, ClientError> {
        self.submit_inner(
            source.as_fd(),
            dest.as_fd(),
            None,
            opts,
            Some(Box::new(on_done)),
            None,
        )
    }

    fn submit_inner(
        &self,
        source: BorrowedFd<'_>,
        dest: BorrowedFd<'_>,
        publish: Option<(BorrowedFd<'_>, PublishTo)>,
        opts: &TransferOptions,
        callback: Option<Callback>,
        staged: Option<Staged>,
    ) -> Result<JobHandle, ClientError> {
        let inner = &*self.inner;
        let mut tx = lock(&inner.tx);
        let tx = &mut *tx;
        let req = tx.next_req;
        tx.next_req += 1;
        let mut request = submit_request(req, opts);
        let (dir, publish) = publish.unzip();
        if let Request::Submit(submit) = &mut request {
            submit.publish = publish;
        }
        tx.buf.clear();
        codec::encode_frame(&request, &mut tx.buf, inner.limits.max_frame)?;

        // The slot must be in the table before the frame leaves: the answer
        // can arrive before sendmsg returns.
        let slot = Arc::new(JobSlot::new(req, callback, staged));
        {
            let mut shared = lock(&inner.shared);
            if shared.closed.is_some() {
                return Err(ClientError::Disconnected);
            }
            shared.jobs.insert(req, Arc::clone(&slot));
        }
        let sent = match dir {
            Some(dir) => send_with_fds(inner.stream.as_fd(), &tx.buf, &[source, dest, dir]),
            None => send_with_fds(inner.stream.as_fd(), &tx.buf, &[source, dest]),
        };
        if let Err(e) = sent {
            // The disconnect sweep takes the send lock we hold, and the daemon
            // cannot answer a request it did not get whole, so the slot is
            // still unresolved and ours to withdraw, callback unrun; a staged
            // destination in it is abandoned as the slot drops.
            lock(&inner.shared).jobs.remove(&req);
            return Err(send_error("sending Submit to the daemon", e));
        }
        Ok(JobHandle { slot })
    }

    /// A channel of every event received from now on: `Accepted`,
    /// `Progress`, `Completed`, `Failed`, `Stats` and `ProtocolError`.
    ///
    /// Each call makes a new subscriber. The channel is unbounded, so read it
    /// or drop it; a dropped receiver is pruned at the next event. When the
    /// connection ends the channel disconnects (after any events still in it).
    ///
    /// ```no_run
    /// let client = ringxfer_ipc::Client::connect_default()?;
    /// let events = client.events();
    /// for event in events.iter() {
    ///     println!("{event:?}");
    /// }
    /// # Ok::<(), ringxfer_ipc::ClientError>(())
    /// ```
    pub fn events(&self) -> Receiver<Event> {
        let (sender, receiver) = crossbeam_channel::unbounded();
        let mut shared = lock(&self.inner.shared);
        // After the end, dropping the sender here makes the receiver report
        // the disconnection at once instead of waiting forever.
        if shared.closed.is_none() {
            shared.subscribers.push(sender);
        }
        receiver
    }

    /// Asks the daemon to cancel a job by its id (from [`JobHandle::job_id`],
    /// [`Client::jobs`] or another connection): any job of this user, any
    /// job at all for root. Returns once the daemon has taken the request;
    /// the job itself then fails with [`FailureKind::Cancelled`] (seen by its
    /// [`JobHandle`] and by [`Client::wait_job`]) once every operation it had
    /// in flight is back, unless it finished first.
    ///
    /// # Errors
    ///
    /// [`ClientError::Refused`] for an unknown job ([`FailureKind::NoSuchJob`],
    /// also for one that already finished) or another user's
    /// ([`FailureKind::PermissionDenied`]); [`ClientError::Disconnected`] if
    /// the connection is closed, [`ClientError::Io`] if sending fails.
    ///
    /// ```no_run
    /// # use std::fs::File;
    /// # use ringxfer_ipc::{Client, FailureKind, TransferOptions};
    /// # let client = Client::connect_default()?;
    /// # let (src, dst) = (File::open("in.bin")?, File::create("out.bin")?);
    /// let job = client.submit(&src, &dst, &TransferOptions::default())?;
    /// client.cancel(job.job_id()?)?;
    /// if let Err(e) = job.wait() {
    ///     assert_eq!(e.kind(), Some(FailureKind::Cancelled));
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn cancel(&self, job: u64) -> Result<(), ClientError> {
        match self.ask("sending Cancel to the daemon", |req| Request::Cancel {
            req,
            job,
        })? {
            Event::Cancelling { .. } => Ok(()),
            other => Err(unexpected_answer(job, other)),
        }
    }

    /// Asks for one job's state: a running job, or one that finished
    /// recently (the daemon remembers the last few thousand).
    ///
    /// # Errors
    ///
    /// As [`Client::cancel`].
    ///
    /// ```no_run
    /// let client = ringxfer_ipc::Client::connect_default()?;
    /// let info = client.status(42)?;
    /// println!("job 42 is {}: {} of {:?} bytes", info.state.name(), info.bytes, info.total);
    /// # Ok::<(), ringxfer_ipc::ClientError>(())
    /// ```
    pub fn status(&self, job: u64) -> Result<JobInfo, ClientError> {
        match self.ask("sending Status to the daemon", |req| Request::Status {
            req,
            job,
        })? {
            Event::Status { info, .. } => Ok(info),
            other => Err(unexpected_answer(job, other)),
        }
    }

    /// Lists the unfinished jobs this user may see (every user's, for root),
    /// oldest first.
    ///
    /// # Errors
    ///
    /// [`ClientError::Disconnected`] if the connection is closed or closes
    /// before the answer, [`ClientError::Io`] if sending fails.
    ///
    /// ```no_run
    /// let client = ringxfer_ipc::Client::connect_default()?;
    /// for job in client.jobs()? {
    ///     println!("{} {} {}/{:?}", job.job, job.state.name(), job.bytes, job.total);
    /// }
    /// # Ok::<(), ringxfer_ipc::ClientError>(())
    /// ```
    pub fn jobs(&self) -> Result<Vec<JobInfo>, ClientError> {
        let mut all = Vec::new();
        let mut after = 0;
        loop {
            match self.ask("sending Jobs to the daemon", |req| Request::Jobs {
                req,
                after,
            })? {
                Event::Jobs { jobs, more, .. } => {
                    let last = jobs.last().map(|j| j.job);
                    all.extend(jobs);
                    match last {
                        // Ids only grow, so the next page starts past this one.
                        Some(last) if more && last > after => after = last,
                        _ => return Ok(all),
                    }
                }
                other => return Err(unexpected_answer(0, other)),
            }
        }
    }

    /// Follows a job submitted elsewhere (a detached job, or one of another
    /// connection of this user): the handle resolves with that job's result,
    /// at once if it finished recently. With `progress`, the handle's
    /// [`JobHandle::bytes_so_far`] follows it too.
    ///
    /// # Errors
    ///
    /// As [`Client::submit`]. An unknown job is not an error here: the
    /// handle resolves to [`JobError::Failed`] with [`FailureKind::NoSuchJob`]
    /// (or [`FailureKind::PermissionDenied`] for another user's job).
    ///
    /// ```no_run
    /// let client = ringxfer_ipc::Client::connect_default()?;
    /// let done = client.wait_job(42, false)?.wait()?;
    /// println!("job 42 moved {} bytes", done.bytes);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn wait_job(&self, job: u64, progress: bool) -> Result<JobHandle, ClientError> {
        let inner = &*self.inner;
        let mut tx = lock(&inner.tx);
        let tx = &mut *tx;
        let req = tx.next_req;
        tx.next_req += 1;
        tx.buf.clear();
        codec::encode_frame(
            &Request::Wait { req, job, progress },
            &mut tx.buf,
            inner.limits.max_frame,
        )?;
        let slot = Arc::new(JobSlot::new(req, None, None));
        {
            let mut shared = lock(&inner.shared);
            if shared.closed.is_some() {
                return Err(ClientError::Disconnected);
            }
            shared.jobs.insert(req, Arc::clone(&slot));
        }
        if let Err(e) = send_with_fds(inner.stream.as_fd(), &tx.buf, &[]) {
            lock(&inner.shared).jobs.remove(&req);
            return Err(send_error("sending Wait to the daemon", e));
        }
        Ok(JobHandle { slot })
    }

    /// Sends a request that takes a `req` and waits for the event answering it.
    fn ask(
        &self,
        op: &'static str,
        make: impl FnOnce(u64) -> Request,
    ) -> Result<Event, ClientError> {
        let inner = &*self.inner;
        let (sender, receiver) = crossbeam_channel::bounded(1);
        {
            let mut tx = lock(&inner.tx);
            let tx = &mut *tx;
            let req = tx.next_req;
            tx.next_req += 1;
            tx.buf.clear();
            codec::encode_frame(&make(req), &mut tx.buf, inner.limits.max_frame)?;
            {
                let mut shared = lock(&inner.shared);
                if shared.closed.is_some() {
                    return Err(ClientError::Disconnected);
                }
                shared.answers.insert(req, sender);
            }
            if let Err(e) = send_with_fds(inner.stream.as_fd(), &tx.buf, &[]) {
                lock(&inner.shared).answers.remove(&req);
                return Err(send_error(op, e));
            }
        }
        // The sender is dropped unanswered only when the connection ends.
        receiver.recv().map_err(|_| ClientError::Disconnected)
    }

    /// Asks the daemon for its counters and waits for the answer.
    ///
    /// Do not call this from a job callback: the answer is delivered by the
    /// thread the callback runs on.
    ///
    /// # Errors
    ///
    /// [`ClientError::Disconnected`] if the connection is closed or closes
    /// before the answer, [`ClientError::Io`] if sending fails.
    ///
    /// ```no_run
    /// let client = ringxfer_ipc::Client::connect_default()?;
    /// let stats = client.stats()?;
    /// println!("{} jobs running, {} bytes moved", stats.jobs_running, stats.bytes_moved);
    /// # Ok::<(), ringxfer_ipc::ClientError>(())
    /// ```
    pub fn stats(&self) -> Result<StatsReport, ClientError> {
        let inner = &*self.inner;
        let (sender, receiver) = crossbeam_channel::bounded(1);
        {
            let mut tx = lock(&inner.tx);
            let tx = &mut *tx;
            tx.buf.clear();
            codec::encode_frame(&Request::Stats, &mut tx.buf, inner.limits.max_frame)?;
            let id = tx.next_stats;
            tx.next_stats += 1;
            {
                let mut shared = lock(&inner.shared);
                if shared.closed.is_some() {
                    return Err(ClientError::Disconnected);
                }
                // Queued under the send lock, so queue order is send order.
                shared.stats_waiters.push_back((id, sender));
            }
            if let Err(e) = send_with_fds(inner.stream.as_fd(), &tx.buf, &[]) {
                lock(&inner.shared)
                    .stats_waiters
                    .retain(|(waiter, _)| *waiter != id);
                return Err(send_error("sending Stats to the daemon", e));
            }
        }
        // The sender is dropped unanswered only when the connection ends.
        receiver.recv().map_err(|_| ClientError::Disconnected)
    }

    /// Copies the file at `src` to `dst`, like cp(1). The source is opened
    /// read-only. The bytes go into an unnamed temporary file in `dst`'s
    /// directory, which takes the name `dst` only once the job completed (see
    /// [`crate::publish`]): until then `dst` is absent or holds its old
    /// content, and a failed, cancelled or disconnected job leaves it so. A
    /// new `dst` gets the source's permission bits less the umask; an
    /// existing one is replaced atomically and its permission bits (and,
    /// where permitted, owner) carry over, as when cp(1) overwrites.
    ///
    /// The handle resolves after the publish: [`JobHandle::wait`] returning
    /// `Ok` means `dst` holds the copy. A publish that fails turns the job's
    /// result into [`JobError::Failed`] ([`FailureKind::Io`], or
    /// [`FailureKind::NoSpace`] / [`FailureKind::PermissionDenied`] by its
    /// errno) whose message names `dst`.
    ///
    /// [`TransferOptions::in_place`] writes into `dst` itself (created, or
    /// emptied if it holds anything); so do a device or FIFO at `dst`.
    /// [`TransferOptions::preserve`] copies the source's mode, owner (where
    /// permitted) and times; [`TransferOptions::fsync`] also syncs the new
    /// name into the directory; [`Strategy::Direct`] opens both files with
    /// O_DIRECT. A symbolic link at `dst` is followed: its target is replaced.
    /// Staging needs write permission on `dst`'s directory, not on `dst`.
    ///
    /// # Errors
    ///
    /// [`ClientError::Open`] naming the path that could not be opened or
    /// staged (its `source` wraps the [`PublishError`] for staging
    /// failures), also when `dst` is a directory or the same file as `src`;
    /// otherwise as [`Client::submit`].
    ///
    /// ```no_run
    /// use std::path::Path;
    /// use ringxfer_ipc::TransferOptions;
    ///
    /// let client = ringxfer_ipc::Client::connect_default()?;
    /// let opts = TransferOptions { preserve: true, fsync: true, ..Default::default() };
    /// let job = client.copy_file(Path::new("a.iso"), Path::new("b.iso"), &opts)?;
    /// job.wait()?; // b.iso now holds all of a.iso, durably, with its mode and times
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn copy_file(
        &self,
        src: &Path,
        dst: &Path,
        opts: &TransferOptions,
    ) -> Result<JobHandle, ClientError> {
        let source = open_source(src, opts)?;
        let src_meta = source.metadata().map_err(|e| ClientError::Open {
            path: src.to_path_buf(),
            source: e,
        })?;
        let publish_opts = PublishOptions {
            mode: Some(src_meta.permissions().mode() & 0o777),
            ..publish_options(opts)
        };
        let staged = self
            .stage(dst, Some(&src_meta), &publish_opts, opts)
            .map_err(|e| staging_error(dst, e.with_source_path(src)))?;
        let preserve_from = opts.preserve.then_some(src_meta);
        self.submit_staged(source.as_fd(), staged, preserve_from, opts)
    }

    /// Sends the file at `src` into a connected socket (or pipe) the caller
    /// owns.
    ///
    /// # Errors
    ///
    /// [`ClientError::Open`] if `src` cannot be opened; otherwise as
    /// [`Client::submit`].
    ///
    /// ```no_run
    /// use std::net::TcpStream;
    /// use std::path::Path;
    /// let client = ringxfer_ipc::Client::connect_default()?;
    /// let peer = TcpStream::connect("192.0.2.1:9000")?;
    /// client.send_file(Path::new("a.iso"), &peer, &Default::default())?.wait()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn send_file(
        &self,
        src: &Path,
        socket: impl AsFd,
        opts: &TransferOptions,
    ) -> Result<JobHandle, ClientError> {
        let source = open_source(src, opts)?;
        self.submit(&source, socket, opts)
    }

    /// Receives from a connected socket (or pipe) the caller owns into the
    /// file at `dst`. Without [`TransferOptions::length`] the job runs until
    /// the peer closes.
    ///
    /// The destination is staged and published as by [`Client::copy_file`]:
    /// `dst` appears (or is replaced) only once the whole stream has landed,
    /// a new `dst` gets mode 0644 less the umask, and the handle resolves
    /// after the publish. [`TransferOptions::in_place`] writes into `dst`
    /// itself; [`TransferOptions::preserve`] has no source to copy from
    /// and is ignored.
    ///
    /// # Errors
    ///
    /// [`ClientError::Open`] if `dst` cannot be opened or staged; otherwise
    /// as [`Client::submit`].
    ///
    /// ```no_run
    /// use std::net::TcpListener;
    /// use std::path::Path;
    /// let client = ringxfer_ipc::Client::connect_default()?;
    /// let (peer, _) = TcpListener::bind("0.0.0.0:9000")?.accept()?;
    /// client.recv_to_file(&peer, Path::new("incoming.iso"), &Default::default())?.wait()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn recv_to_file(
        &self,
        socket: impl AsFd,
        dst: &Path,
        opts: &TransferOptions,
    ) -> Result<JobHandle, ClientError> {
        let publish_opts = PublishOptions {
            mode: Some(0o644),
            ..publish_options(opts)
        };
        let staged = self
            .stage(dst, None, &publish_opts, opts)
            .map_err(|e| staging_error(dst, e))?;
        self.submit_staged(socket.as_fd(), staged, None, opts)
    }

    /// Stages `dst`; for a detached job, with hidden names (where there is
    /// no O_TMPFILE) that carry the daemon's pid, since it publishes them.
    fn stage(
        &self,
        dst: &Path,
        source: Option<&Metadata>,
        publish_opts: &PublishOptions,
        opts: &TransferOptions,
    ) -> Result<StagedFile, PublishError> {
        match self.daemon_pid().filter(|_| opts.detach) {
            Some(pid) => StagedFile::create_for_daemon(dst, source, publish_opts, pid),
            None => StagedFile::create(dst, source, publish_opts),
        }
    }

    /// The daemon's process id, from the socket's peer credentials
    /// (SO_PEERCRED, as of the connect); `None` where the kernel does not say.
    pub fn daemon_pid(&self) -> Option<u32> {
        // SAFETY: ucred is plain data; all-zero is a valid value.
        let mut cred: libc::ucred = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
        // SAFETY: the socket is open for the call; `cred` and `len` are
        // writable and sized as getsockopt(SO_PEERCRED) expects.
        let rc = unsafe {
            libc::getsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&self.inner.stream),
                libc::SOL_SOCKET,
                libc::SO_PEERCRED,
                std::ptr::addr_of_mut!(cred).cast(),
                &mut len,
            )
        };
        (rc == 0 && cred.pid > 0).then_some(cred.pid as u32)
    }

    /// Submits a job into a staged destination, which the event thread
    /// publishes when the job completes and abandons otherwise.
    fn submit_staged(
        &self,
        source: BorrowedFd<'_>,
        staged: StagedFile,
        preserve_from: Option<Metadata>,
        opts: &TransferOptions,
    ) -> Result<JobHandle, ClientError> {
        // A duplicate to send, because the staged file moves into the job's
        // slot before the Submit goes out (the answer may beat sendmsg's
        // return) and must not be dropped under a borrowed descriptor.
        // Closing the duplicate is never the last close of the file.
        let dest = staged
            .file()
            .try_clone()
            .map_err(|source| ClientError::Io {
                op: "duplicating the destination's descriptor",
                source,
            })?;
        let opts = TransferOptions {
            truncate: opts.truncate || staged.wants_truncate(),
            ..opts.clone()
        };
        // A detached job's destination is published by the daemon: this
        // process may be gone when the job ends.
        let by_daemon = if opts.detach {
            staged
                .for_daemon()
                .map_err(|e| staging_error(staged.path(), e))?
        } else {
            None
        };
        let hand_over = by_daemon.is_some();
        let staged = Staged {
            file: staged,
            preserve_from,
            hand_over,
        };
        let publish = by_daemon
            .as_ref()
            .map(|(dir, to)| (dir.as_fd(), to.clone()));
        self.submit_inner(source, dest.as_fd(), publish, &opts, None, Some(staged))
    }
}

/// The staging choices a path helper's [`TransferOptions`] make.
fn publish_options(opts: &TransferOptions) -> PublishOptions {
    PublishOptions {
        in_place: opts.in_place,
        preserve: opts.preserve,
        fsync: opts.fsync,
        direct: opts.strategy == Strategy::Direct,
        mode: None,
    }
}

/// A staging failure as the path helpers report it: an open error on `dst`,
/// whose source carries the [`PublishError`] (its kind the OS error's kind).
fn staging_error(dst: &Path, err: PublishError) -> ClientError {
    let kind = match &err {
        PublishError::IsDirectory { .. } => io::ErrorKind::IsADirectory,
        PublishError::SameFile { .. } => io::ErrorKind::InvalidInput,
        other => other
            .io_error()
            .map_or(io::ErrorKind::Other, io::Error::kind),
    };
    ClientError::Open {
        path: dst.to_path_buf(),
        source: io::Error::new(kind, err),
    }
}

/// A destination staged by a path helper, travelling with its job.
pub(crate) struct Staged {
    file: StagedFile,
    /// The source's metadata, when the destination is to take it on.
    preserve_from: Option<Metadata>,
    /// The daemon publishes it: handed over when the job is accepted,
    /// dropped (its hidden name removed) if it is refused.
    hand_over: bool,
}

impl Staged {
    /// Publishes a completed job's destination, turning a failure into the
    /// job's failure.
    fn publish(self, job: u64, bytes: u64) -> Result<(), JobError> {
        let path = self.file.path().to_path_buf();
        self.file.publish(self.preserve_from.as_ref()).map_err(|e| {
            let os_error = e.io_error().and_then(io::Error::raw_os_error);
            let kind = match os_error {
                Some(libc::ENOSPC | libc::EDQUOT) => FailureKind::NoSpace,
                Some(libc::EACCES | libc::EPERM | libc::EROFS) => FailureKind::PermissionDenied,
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

fn open_source(path: &Path, opts: &TransferOptions) -> Result<File, ClientError> {
    open_direct_or_not(OpenOptions::new().read(true), path, opts).map_err(|source| {
        ClientError::Open {
            path: path.to_path_buf(),
            source,
        }
    })
}

/// Opens with O_DIRECT when the direct strategy is asked for, so the daemon
/// need not switch it on in a file description this process shares. A file
/// system that refuses O_DIRECT (EINVAL) gets a plain open, and the daemon
/// then says why direct cannot take the job.
fn open_direct_or_not(
    options: &mut OpenOptions,
    path: &Path,
    opts: &TransferOptions,
) -> io::Result<File> {
    if opts.strategy == Strategy::Direct {
        match options.clone().custom_flags(libc::O_DIRECT).open(path) {
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
            other => return other,
        }
    }
    options.open(path)
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
        if let Some(handle) = self.event_thread.take() {
            // A callback that owned the last Client drops it on the event
            // thread itself, which then ends on its own once it returns.
            if handle.thread().id() != thread::current().id() {
                // Err only if the thread panicked, which the panic hook has
                // already reported; there is nothing left to clean up.
                let _ = handle.join();
            }
        }
    }
}

/// The event thread: dispatches events until the connection ends, then
/// resolves everything still waiting with the reason. It waits for the
/// socket holding nothing, and stands aside while a
/// [`Dispatcher`](crate::dispatch::Dispatcher) dispatches instead.
fn event_loop(inner: &Inner) {
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
                publish(&mut shared, event);
                Ok(())
            }
            Event::Stats(ref report) => {
                let mut shared = lock(&self.shared);
                if let Some((_, waiter)) = shared.stats_waiters.pop_front() {
                    // Err means the caller is gone; the report is then moot.
                    let _ = waiter.send(report.clone());
                }
                publish(&mut shared, event);
                Ok(())
            }
            Event::ProtocolError { kind, ref message } => {
                let reason = format!("the daemon reported a protocol error ({kind:?}): {message}");
                publish(&mut lock(&self.shared), event);
                Err(reason)
            }
            Event::Welcome { .. } => Err("the daemon sent a second Welcome".to_string()),
        }
    }

    fn job_event(&self, req: u64, event: Event) {
        let terminal = matches!(event, Event::Completed { .. } | Event::Failed { .. });
        let slot = {
            let mut shared = lock(&self.shared);
            let slot = if terminal {
                shared.jobs.remove(&req)
            } else {
                shared.jobs.get(&req).cloned()
            };
            match slot {
                Some(slot) => slot,
                None => {
                    // Not ours to track (a job already resolved, or a confused
                    // daemon); subscribers still see it.
                    publish(&mut shared, event);
                    return;
                }
            }
        };

        // A staged destination is published (or abandoned) before the
        // handle resolves, so a caller that sees Ok finds the file under its
        // name. This runs on the event thread with no lock held: link(2),
        // rename(2) and a directory fsync are short, though not free (ext4
        // starts writeback of the new data when a rename replaces a file,
        // and fsync waits for the disk), and they delay this connection's
        // other events by that much.
        let staged = if terminal {
            lock(&slot.state).staged.take()
        } else if matches!(event, Event::Accepted { .. }) {
            // Admitted: a staged file the daemon publishes is its now.
            let mut state = lock(&slot.state);
            match state.staged.take() {
                Some(staged) if staged.hand_over => {
                    staged.file.hand_over();
                    None
                }
                other => {
                    state.staged = other;
                    None
                }
            }
        } else {
            None
        };
        let published = match (&event, staged) {
            (Event::Completed { job, bytes, .. }, Some(staged)) => {
                Some(staged.publish(*job, *bytes))
            }
            // Failed: nothing may appear under the destination's name.
            (_, staged) => {
                drop(staged);
                None
            }
        };

        let mut state = lock(&slot.state);
        let mut result = None;
        match &event {
            Event::Accepted { job, .. } => state.job = Some(*job),
            Event::Progress {
                job, bytes, total, ..
            } => {
                state.job = Some(*job);
                state.bytes = *bytes;
                state.total = *total;
            }
            Event::Completed {
                job,
                bytes,
                strategy,
                elapsed_us,
                note,
                synced,
                checksums,
                ..
            } => {
                state.job = Some(*job);
                state.bytes = *bytes;
                result = Some(match published {
                    Some(Err(e)) => Err(e),
                    Some(Ok(())) | None => Ok(Completion {
                        job: *job,
                        bytes: *bytes,
                        strategy: *strategy,
                        elapsed: Duration::from_micros(*elapsed_us),
                        note: note.clone(),
                        synced: *synced,
                        checksums: *checksums,
                    }),
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
                    state.job = *job;
                }
                state.bytes = *bytes;
                result = Some(Err(JobError::Failed {
                    job: *job,
                    kind: *kind,
                    os_error: *os_error,
                    message: message.clone(),
                    bytes: *bytes,
                }));
            }
            _ => {}
        }
        // Publishing under the slot lock makes both views agree: whoever saw
        // the event on a channel finds the handle updated, and a waiter woken
        // by the update finds the event already on its channel.
        publish(&mut lock(&self.shared), event);
        let callback = match result {
            Some(result) => state.resolve(result),
            None => None,
        };
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
            slot.abandon(JobError::Disconnected(reason.clone()));
        }
    }
}

/// Hands `event` to every subscriber, forgetting those that hung up.
fn publish(shared: &mut Shared, event: Event) {
    shared
        .subscribers
        .retain(|subscriber| subscriber.send(event.clone()).is_ok());
}

fn run_callback(callback: Callback, result: Result<Completion, JobError>) {
    // A panicking callback must not take the event thread with it, or every
    // other job of the connection would hang; the panic hook has already
    // printed the panic by the time catch_unwind returns.
    let _ = catch_unwind(AssertUnwindSafe(move || callback(result)));
}

/// One job as the stub sees it; shared by the table and every handle clone.
pub(crate) struct JobSlot {
    pub(crate) req: u64,
    state: Mutex<SlotState>,
    changed: Condvar,
}

struct SlotState {
    job: Option<u64>,
    bytes: u64,
    total: Option<u64>,
    result: Option<Result<Completion, JobError>>,
    callback: Option<Callback>,
    /// A path helper's destination, until the job ends and the event thread
    /// publishes or abandons it.
    staged: Option<Staged>,
    /// Threads blocked on `changed`. A condvar's notify is a futex call
    /// even with nobody waiting, and most jobs (every job of a tree copy)
    /// are never waited on: one call per job was a tenth of a 10,000-file
    /// copy's main thread.
    waiters: u32,
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
    /// Records the outcome (the first one wins) and hands back the callback
    /// to run with it, to be run after the lock is released.
    fn resolve(
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

/// Why reading a frame from the daemon failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FrameError {
    #[error("the daemon closed the connection")]
    Eof,
    #[error("the connection ended in the middle of a frame")]
    Truncated,
    #[error("the daemon sent a frame of {0} bytes, over the client's limit of {MAX_EVENT_FRAME}")]
    TooLarge(u32),
    #[error("reading from the daemon failed: {0}")]
    Io(io::Error),
    #[error("the daemon sent an undecodable event: {0}")]
    Decode(CodecError),
}

impl From<DeframeError> for FrameError {
    fn from(e: DeframeError) -> FrameError {
        match e {
            DeframeError::TooLarge { len, .. } => FrameError::TooLarge(len),
            DeframeError::Decode { source, .. } => FrameError::Decode(source),
        }
    }
}

/// Reads one whole frame and decodes the event in it, using `payload` as scratch.
fn read_frame(r: &mut impl Read, payload: &mut Vec<u8>) -> Result<Event, FrameError> {
    let mut header = [0u8; FRAME_HEADER_LEN];
    let mut got = 0;
    while got < header.len() {
        match r.read(&mut header[got..]) {
            Ok(0) if got == 0 => return Err(FrameError::Eof),
            Ok(0) => return Err(FrameError::Truncated),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(FrameError::Io(e)),
        }
    }
    let len = frame::payload_len(header, MAX_EVENT_FRAME)?;
    payload.clear();
    if payload.capacity() > KEEP_PAYLOAD_CAPACITY {
        payload.shrink_to(KEEP_PAYLOAD_CAPACITY);
    }
    // Growing with the bytes that actually arrive, instead of reserving `len`
    // up front, means a lying length costs no more memory than was sent.
    let read = r
        .take(u64::from(len))
        .read_to_end(payload)
        .map_err(FrameError::Io)?;
    if read < len as usize {
        return Err(FrameError::Truncated);
    }
    codec::decode_payload(payload).map_err(FrameError::Decode)
}

/// The variant's name, for messages that must not dump a whole event.
fn event_name(event: &Event) -> &'static str {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write_event(peer: &mut UnixStream, event: &Event) {
        let mut buf = Vec::new();
        codec::encode_frame(event, &mut buf, MAX_EVENT_FRAME).expect("encode event");
        peer.write_all(&buf).expect("write event");
    }

    fn read_request(peer: &mut UnixStream) -> Request {
        let mut header = [0u8; FRAME_HEADER_LEN];
        peer.read_exact(&mut header).expect("read header");
        let mut payload = vec![0u8; codec::frame_len(header) as usize];
        peer.read_exact(&mut payload).expect("read payload");
        codec::decode_payload(&payload).expect("decode request")
    }

    /// Resolved jobs must leave the table, or a long-lived client grows forever.
    #[test]
    fn resolved_jobs_leave_the_table() {
        let (ours, mut peer) = UnixStream::pair().expect("socketpair");
        let daemon = thread::spawn(move || {
            assert!(matches!(read_request(&mut peer), Request::Hello { .. }));
            let limits = Limits {
                max_frame: DEFAULT_MAX_FRAME,
                max_jobs_per_connection: 1000,
                max_fds_per_message: 2,
                max_jobs_per_user: 1000,
                max_queued_bytes_per_connection: 0,
                max_queued_bytes_per_user: 0,
            };
            write_event(
                &mut peer,
                &Event::Welcome {
                    version: PROTOCOL_VERSION,
                    limits,
                },
            );
            for job in 0..100 {
                let Request::Submit(submit) = read_request(&mut peer) else {
                    panic!("expected Submit");
                };
                let event = if job % 2 == 0 {
                    Event::Completed {
                        req: submit.req,
                        job,
                        bytes: 0,
                        strategy: Strategy::Splice,
                        elapsed_us: 1,
                        note: None,
                        synced: false,
                        checksums: None,
                    }
                } else {
                    Event::Failed {
                        req: submit.req,
                        job: None,
                        kind: FailureKind::LimitExceeded,
                        os_error: None,
                        message: "busy".into(),
                        bytes: 0,
                    }
                };
                write_event(&mut peer, &event);
            }
            peer
        });
        let client = Client::from_stream(ours).expect("handshake");
        let null = File::open("/dev/null").expect("open /dev/null");
        for _ in 0..100 {
            let job = client
                .submit(&null, &null, &TransferOptions::default())
                .expect("submit");
            let _ = job.wait();
        }
        assert!(lock(&client.inner.shared).jobs.is_empty());
        let _peer = daemon.join().expect("daemon thread");
    }

    fn welcome(peer: &mut UnixStream) {
        assert!(matches!(read_request(peer), Request::Hello { .. }));
        let limits = Limits {
            max_frame: DEFAULT_MAX_FRAME,
            max_jobs_per_connection: 8,
            max_fds_per_message: 2,
            max_jobs_per_user: 8,
            max_queued_bytes_per_connection: 0,
            max_queued_bytes_per_user: 0,
        };
        write_event(
            peer,
            &Event::Welcome {
                version: PROTOCOL_VERSION,
                limits,
            },
        );
    }

    /// A completed job whose destination cannot be published is a failed
    /// job, and its message names the destination.
    #[test]
    fn a_publish_failure_fails_the_job() {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = dir.path().join("src");
        std::fs::write(&src, b"bytes").expect("write source");
        let sub = dir.path().join("vanishing");
        std::fs::create_dir(&sub).expect("mkdir");
        let dst = sub.join("dst");

        let (ours, mut peer) = UnixStream::pair().expect("socketpair");
        let (got_submit, submitted) = crossbeam_channel::bounded(1);
        let (go, go_on) = crossbeam_channel::bounded::<()>(1);
        let daemon = thread::spawn(move || {
            welcome(&mut peer);
            let Request::Submit(submit) = read_request(&mut peer) else {
                panic!("expected Submit");
            };
            got_submit.send(()).expect("tell the test");
            go_on.recv().expect("wait for the test");
            write_event(
                &mut peer,
                &Event::Completed {
                    req: submit.req,
                    job: 9,
                    bytes: 5,
                    strategy: Strategy::Splice,
                    elapsed_us: 1,
                    note: None,
                    synced: false,
                    checksums: None,
                },
            );
            peer
        });
        let client = Client::from_stream(ours).expect("handshake");
        let job = client
            .copy_file(&src, &dst, &TransferOptions::default())
            .expect("copy_file");
        submitted.recv().expect("the peer got the Submit");
        // The unnamed staged file has no entry, so the directory is empty
        // and can go: the link at publish then has nowhere to land.
        std::fs::remove_dir(&sub).expect("remove the destination's directory");
        go.send(()).expect("let the peer complete the job");

        let err = job.wait().expect_err("the publish fails");
        let JobError::Failed {
            job,
            kind,
            os_error,
            message,
            bytes,
        } = err
        else {
            panic!("expected Failed, got {err:?}");
        };
        assert_eq!(
            (job, kind, os_error, bytes),
            (Some(9), FailureKind::Io, Some(libc::ENOENT), 5)
        );
        assert!(message.contains(&*dst.to_string_lossy()), "{message}");
        assert!(!dst.exists());
        drop(client);
        let _peer = daemon.join().expect("daemon thread");
    }
}
