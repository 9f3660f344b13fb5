//! The messages that cross the daemon's Unix socket.
//!
//! Every frame is a little-endian `u32` payload length followed by the payload,
//! encoded by [`crate::codec`]. A connection starts with [`Request::Hello`]
//! answered by [`Event::Welcome`]; after that the client sends requests and the
//! daemon sends events, each side independently.
//!
//! A [`Request::Submit`] frame is sent in one `sendmsg` carrying exactly
//! [`SUBMIT_DESCRIPTORS`] descriptors with `SCM_RIGHTS`: the source first, then
//! the destination. Every other request carries none.

use serde::{Deserialize, Serialize};

/// The protocol version this crate speaks. The daemon refuses any other.
/// Version 2 added the `direct` and `uncached` strategies and `note` on
/// [`Event::Completed`].
pub const PROTOCOL_VERSION: u32 = 2;

/// How many descriptors a [`Request::Submit`] frame carries: source, destination.
pub const SUBMIT_DESCRIPTORS: usize = 2;

/// The length of a frame's header: a little-endian `u32` payload length.
pub const FRAME_HEADER_LEN: usize = 4;

/// The largest payload either side accepts unless the daemon's [`Limits`] say otherwise.
pub const DEFAULT_MAX_FRAME: u32 = 64 * 1024;

/// A request from a client to the daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// The first frame of every connection.
    Hello {
        /// Must equal the daemon's [`PROTOCOL_VERSION`].
        version: u32,
    },
    /// Start a transfer between the two descriptors passed with this frame.
    Submit(SubmitRequest),
    /// Ask the daemon to cancel a job this connection submitted.
    Cancel {
        /// The daemon's id for the job, from [`Event::Accepted`].
        job: u64,
    },
    /// Ask for the daemon's counters; answered by [`Event::Stats`].
    Stats,
}

/// What to transfer, sent with two descriptors: source then destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubmitRequest {
    /// Chosen by the client, unique on its connection; every event about this
    /// job carries it back.
    pub req: u64,
    /// Free text the daemon logs with the job (a file name, say).
    pub tag: String,
    /// Where reading starts in the source (ignored for sockets and pipes).
    pub offset: u64,
    /// How many bytes to move; `None` means to the end of the source.
    pub length: Option<u64>,
    /// Where writing starts in the destination (ignored for sockets and pipes).
    pub dest_offset: u64,
    /// Which transfer strategy to use.
    pub strategy: Strategy,
    /// Whether the client wants [`Event::Progress`] events for this job.
    pub progress: bool,
}

/// A transfer strategy, as asked for and as used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Strategy {
    /// Let the daemon pick the cheapest path the descriptors allow.
    Auto,
    /// splice(2) through a pipe: no copy through user space.
    Splice,
    /// O_DIRECT reads into the daemon's registered, aligned buffers and
    /// O_DIRECT writes (or zero-copy sends) out of them: the page cache is
    /// bypassed, so a large copy evicts nobody's hot data.
    Direct,
    /// Buffered reads and writes with RWF_DONTCACHE: no alignment rules, and
    /// the pages are dropped once written.
    Uncached,
}

impl Strategy {
    /// The lower-case name used on the command line and in logs.
    ///
    /// ```
    /// assert_eq!(ringxfer_ipc::Strategy::Splice.name(), "splice");
    /// ```
    pub fn name(self) -> &'static str {
        match self {
            Strategy::Auto => "auto",
            Strategy::Splice => "splice",
            Strategy::Direct => "direct",
            Strategy::Uncached => "uncached",
        }
    }
}

impl std::fmt::Display for Strategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Strategy {
    type Err = String;

    /// ```
    /// let s: ringxfer_ipc::Strategy = "splice".parse().unwrap();
    /// assert_eq!(s, ringxfer_ipc::Strategy::Splice);
    /// assert!("fast".parse::<ringxfer_ipc::Strategy>().is_err());
    /// ```
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Strategy::Auto),
            "splice" => Ok(Strategy::Splice),
            "direct" => Ok(Strategy::Direct),
            "uncached" => Ok(Strategy::Uncached),
            other => Err(format!(
                "unknown strategy {other:?}: expected auto, splice, direct or uncached"
            )),
        }
    }
}

/// The limits a daemon enforces on each connection, sent in [`Event::Welcome`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// The largest frame payload the daemon accepts, in bytes.
    pub max_frame: u32,
    /// How many jobs one connection may have submitted and not yet finished.
    pub max_jobs_per_connection: u32,
    /// The most descriptors one message may carry.
    pub max_fds_per_message: u32,
}

/// Why a job failed or was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FailureKind {
    /// The request itself was wrong (a bad offset, a descriptor of a kind that
    /// cannot be read or written, a strategy that does not fit).
    InvalidRequest,
    /// A daemon or connection limit refused the job.
    LimitExceeded,
    /// The source ended before the requested length was moved.
    SourceShort,
    /// The destination's file system is full (ENOSPC, EDQUOT).
    NoSpace,
    /// A descriptor was not open for the needed direction (EBADF), e.g. a
    /// read-only destination.
    BadDescriptor,
    /// The kernel refused the operation (EPERM, EACCES, EROFS).
    PermissionDenied,
    /// The peer of a socket went away (EPIPE, ECONNRESET).
    PeerGone,
    /// The job was cancelled before it finished.
    Cancelled,
    /// Any other I/O error; the message names the operation and errno.
    Io,
}

impl FailureKind {
    /// A short lower-case name for logs and JSON output.
    ///
    /// ```
    /// assert_eq!(ringxfer_ipc::FailureKind::NoSpace.name(), "no-space");
    /// ```
    pub fn name(self) -> &'static str {
        match self {
            FailureKind::InvalidRequest => "invalid-request",
            FailureKind::LimitExceeded => "limit-exceeded",
            FailureKind::SourceShort => "source-short",
            FailureKind::NoSpace => "no-space",
            FailureKind::BadDescriptor => "bad-descriptor",
            FailureKind::PermissionDenied => "permission-denied",
            FailureKind::PeerGone => "peer-gone",
            FailureKind::Cancelled => "cancelled",
            FailureKind::Io => "io",
        }
    }
}

impl std::fmt::Display for FailureKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why the daemon closed a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ProtocolErrorKind {
    /// A frame's length exceeded [`Limits::max_frame`].
    FrameTooLarge,
    /// A payload could not be decoded as a [`Request`].
    Undecodable,
    /// `Hello` named a protocol version the daemon does not speak.
    BadVersion,
    /// The connection ended in the middle of a frame.
    Truncated,
    /// A frame came with fewer descriptors than it needs.
    MissingDescriptors,
    /// Descriptors arrived that no frame claimed.
    ExtraDescriptors,
    /// One message carried more descriptors than [`Limits::max_fds_per_message`].
    TooManyDescriptors,
    /// A request came out of order (anything before `Hello`, a second `Hello`).
    UnexpectedRequest,
    /// The daemon is shutting down.
    ShuttingDown,
}

/// What the daemon counts, answered to [`Request::Stats`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsReport {
    /// Milliseconds since the engine started.
    pub uptime_ms: u64,
    /// Client connections open now.
    pub connections: u64,
    /// Jobs moving bytes or waiting for a pipe now.
    pub jobs_running: u64,
    /// Jobs that completed since start.
    pub jobs_completed: u64,
    /// Jobs that failed or were cancelled since start.
    pub jobs_failed: u64,
    /// Bytes written to destinations by finished and running jobs.
    pub bytes_moved: u64,
    /// Submission queue entries handed to the kernel.
    pub sqes_submitted: u64,
    /// `io_uring_enter` calls made by the loop.
    pub enter_calls: u64,
    /// Pipes the pool holds, idle or lent out.
    pub pipes_total: u64,
    /// Pipes lent to jobs now.
    pub pipes_in_use: u64,
    /// The capacity of each pooled pipe, in bytes.
    pub pipe_capacity: u64,
}

/// An event from the daemon to a client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// The answer to `Hello`.
    Welcome {
        /// The daemon's [`PROTOCOL_VERSION`].
        version: u32,
        /// What the daemon enforces on this connection.
        limits: Limits,
    },
    /// A job was admitted and has an id.
    Accepted {
        /// The client's [`SubmitRequest::req`].
        req: u64,
        /// The daemon's id for the job.
        job: u64,
    },
    /// Bytes moved so far, for jobs submitted with `progress: true`.
    Progress {
        /// The client's [`SubmitRequest::req`].
        req: u64,
        /// The daemon's id for the job.
        job: u64,
        /// Bytes written to the destination so far.
        bytes: u64,
        /// The total the job will move, when known in advance.
        total: Option<u64>,
    },
    /// The job finished: every byte is in the destination.
    Completed {
        /// The client's [`SubmitRequest::req`].
        req: u64,
        /// The daemon's id for the job.
        job: u64,
        /// Bytes moved.
        bytes: u64,
        /// The strategy that moved them.
        strategy: Strategy,
        /// Time from admission to the last byte, in microseconds.
        elapsed_us: u64,
        /// Why this strategy was used, when `auto` chose it or when it
        /// differs from the one asked for (e.g. "the source is 93% in the
        /// page cache", "the file system refuses O_DIRECT").
        note: Option<String>,
    },
    /// The job failed, was cancelled or was refused (then `job` is `None`).
    Failed {
        /// The client's [`SubmitRequest::req`].
        req: u64,
        /// The daemon's id, if the job had been admitted.
        job: Option<u64>,
        /// The class of failure.
        kind: FailureKind,
        /// The OS error number, when one caused the failure.
        os_error: Option<i32>,
        /// What went wrong: the operation, the descriptor kind and the cause.
        message: String,
        /// Bytes written to the destination before the failure.
        bytes: u64,
    },
    /// The answer to [`Request::Stats`].
    Stats(StatsReport),
    /// The connection is being closed because of what the client sent.
    ProtocolError {
        /// The class of error.
        kind: ProtocolErrorKind,
        /// A sentence naming what was wrong.
        message: String,
    },
}
