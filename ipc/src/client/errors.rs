//! What can go wrong: a job's own failure ([`JobError`]) and an error
//! talking to the daemon ([`ClientError`]).

use std::io;
use std::path::PathBuf;

use super::events::event_name;
use crate::codec::CodecError;
use crate::proto::{Event, FailureKind, ProtocolErrorKind};

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
pub(crate) fn unexpected_answer(job: u64, event: Event) -> ClientError {
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
    match source.raw_os_error().map(crate::errno::failure_kind) {
        Some(FailureKind::PeerGone) => ClientError::Disconnected,
        _ => ClientError::Io { op, source },
    }
}
