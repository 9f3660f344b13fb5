//! Why a command failed, in the three forms the CLI needs: a line for people,
//! a kind for scripts, and an exit code.

use std::fmt;
use std::io;

use ringxfer_ipc::errno;
use ringxfer_ipc::{ClientError, FailureKind, JobError};

use ringxfer_ipc::publish::PublishError;

/// The process exit status; the numbers are part of the CLI's interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Done = 0,
    /// The transfer failed, or a file or address could not be opened.
    Failed = 1,
    /// A usage error: clap's own status for the ones it finds, and ours for
    /// combinations it cannot see (several sources into a non-directory).
    Usage = 2,
    /// No daemon answered and --daemon-only forbade running the engine here.
    Unreachable = 3,
}

/// A failure, already phrased: `context` names the path, address or transfer
/// involved, `cause` says what went wrong with it. An empty `context` means
/// `cause` names them itself (the client stub's connect errors do).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CliError {
    pub context: String,
    pub cause: String,
    /// Stable, lower-case, for scripts: the daemon's failure kinds
    /// (`no-space`, `peer-gone`, ...) plus the CLI's own (`not-found`,
    /// `is-a-directory`, `daemon-unreachable`, ...).
    pub kind: String,
    pub os_error: Option<i32>,
    pub exit: Exit,
    /// Bytes the engine had written before the job failed.
    pub bytes: Option<u64>,
    /// Which engine ran the job, once one did.
    pub engine: Option<&'static str>,
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.context.is_empty() {
            f.write_str(&self.cause)
        } else {
            write!(f, "{}: {}", self.context, self.cause)
        }
    }
}

impl CliError {
    /// A failure the CLI itself detected, with no OS error behind it.
    pub fn new(context: impl Into<String>, kind: &str, cause: impl Into<String>) -> CliError {
        CliError {
            context: context.into(),
            cause: cause.into(),
            kind: kind.to_owned(),
            os_error: None,
            exit: Exit::Failed,
            bytes: None,
            engine: None,
        }
    }

    /// A system call made by the CLI (open, connect, bind, ...) failed.
    pub fn io(context: impl Into<String>, err: &io::Error) -> CliError {
        CliError {
            context: context.into(),
            cause: describe_io(err),
            kind: io_kind(err).to_owned(),
            os_error: err.raw_os_error(),
            exit: Exit::Failed,
            bytes: None,
            engine: None,
        }
    }

    /// A copy the CLI made itself failed: kinds as the engine's errno table
    /// names them (`no-space`, `read-only`, `io`, ...), as the same copy
    /// failing in a job would say.
    pub fn copy(context: impl Into<String>, err: &io::Error) -> CliError {
        let kind = err
            .raw_os_error()
            .map_or(FailureKind::Io, errno::failure_kind);
        CliError {
            kind: kind.name().to_owned(),
            ..CliError::io(context, err)
        }
    }

    /// The engine reported the job as failed, or the connection to it broke.
    pub fn job(context: impl Into<String>, err: &JobError) -> CliError {
        let (kind, os_error, bytes) = match err {
            JobError::Failed {
                kind,
                os_error,
                bytes,
                ..
            } => (kind.name(), *os_error, Some(*bytes)),
            JobError::Disconnected(_) => ("disconnected", None, None),
        };
        CliError {
            context: context.into(),
            cause: Self::job_cause(err),
            kind: kind.to_owned(),
            os_error,
            exit: Exit::Failed,
            bytes,
            engine: None,
        }
    }

    /// What a failed job's message says. A full disk or a read-only file
    /// system is the file system's doing, not the engine step's: say it in
    /// the user's terms, as cp does, with how much was written; other
    /// failures keep the engine's words (which step, at what offset), which
    /// are what tells them apart.
    fn job_cause(err: &JobError) -> String {
        let JobError::Failed {
            kind,
            os_error: Some(code),
            bytes,
            ..
        } = err
        else {
            return err.to_string();
        };
        filled_cause(*kind, *code, *bytes).unwrap_or_else(|| err.to_string())
    }

    /// A copy the CLI made itself failed once `written` bytes had reached
    /// the destination: said as the engine's failure would be.
    pub fn copy_written(context: impl Into<String>, err: &io::Error, written: u64) -> CliError {
        let mut failed = CliError::copy(context, err);
        let code = err.raw_os_error();
        let filled = code.and_then(|code| filled_cause(errno::failure_kind(code), code, written));
        if let Some(cause) = filled {
            failed.cause = cause;
        }
        failed
    }

    /// Says `to` wherever the message says `from`: a tree copied under a
    /// hidden name is reported under the name it is copied to.
    pub fn renamed(mut self, from: &std::path::Path, to: &std::path::Path) -> CliError {
        let (from, to) = (from.display().to_string(), to.display().to_string());
        self.context = self.context.replace(&from, &to);
        self.cause = self.cause.replace(&from, &to);
        self
    }

    /// Records which engine ran the job that failed.
    pub fn on_engine(mut self, engine: &'static str) -> CliError {
        self.engine = Some(engine);
        self
    }

    /// An operation on a path failed, phrased as cp(1) does:
    /// `cannot open 'x': Permission denied`.
    pub fn path(op: &str, path: &std::path::Path, err: &io::Error) -> CliError {
        CliError {
            context: String::new(),
            cause: format!("{op} '{}': {}", path.display(), describe_io(err)),
            ..CliError::io("", err)
        }
    }

    /// A usage error found after parsing, phrased like clap's.
    pub fn usage(cause: impl Into<String>) -> CliError {
        CliError {
            exit: Exit::Usage,
            ..CliError::new("", "usage", cause)
        }
    }

    /// Staging or publishing a destination failed; the message names the
    /// step and the path.
    pub fn publish(err: &PublishError) -> CliError {
        let io = err.io_error();
        let kind = match err {
            PublishError::IsDirectory { .. } => "is-a-directory",
            PublishError::SameFile { .. } => "invalid-request",
            PublishError::DanglingSymlink { .. } => "not-found",
            _ => io.map_or("io", io_kind),
        };
        CliError {
            context: String::new(),
            // Without std's " (os error N)" suffix, as everywhere else.
            cause: match io {
                Some(io_err) => err
                    .to_string()
                    .replace(&io_err.to_string(), &describe_io(io_err)),
                None => err.to_string(),
            },
            kind: kind.to_owned(),
            os_error: io.and_then(io::Error::raw_os_error),
            exit: Exit::Failed,
            bytes: None,
            engine: None,
        }
    }

    /// Staging a copy of a file failed: `cannot create 'dst': Permission
    /// denied`, as cp says it, when a system call failed.
    pub fn staging(dst: &std::path::Path, err: &PublishError) -> CliError {
        match (err, err.io_error()) {
            (PublishError::Io { .. }, Some(io_err)) => CliError::path("cannot create", dst, io_err),
            _ => CliError::publish(err),
        }
    }

    /// Talking to the engine failed.
    pub fn client(context: impl Into<String>, err: &ClientError) -> CliError {
        let os_error = match err {
            ClientError::Connect { source, .. }
            | ClientError::Open { source, .. }
            | ClientError::Io { source, .. } => source.raw_os_error(),
            _ => None,
        };
        let (context, kind) = match err {
            // Its message already names the socket and says what the errno
            // means for whether a daemon runs there.
            ClientError::Connect { .. } if err.is_unreachable() => {
                (String::new(), "daemon-unreachable")
            }
            ClientError::Connect { .. } => (String::new(), "ipc"),
            // It names the job itself: `job 7: no-such-job: ...`.
            ClientError::Refused { kind, .. } => (String::new(), kind.name()),
            _ => (context.into(), "ipc"),
        };
        CliError {
            context,
            cause: err.to_string(),
            kind: kind.to_owned(),
            os_error,
            exit: Exit::Failed,
            bytes: None,
            engine: None,
        }
    }
}

/// How much reached a destination before its disk filled or turned
/// read-only, in the OS's words: None for other failures.
fn filled_cause(kind: FailureKind, code: i32, bytes: u64) -> Option<String> {
    let when = match kind {
        FailureKind::NoSpace => "before it filled",
        FailureKind::ReadOnly => "before it turned read-only",
        _ => return None,
    };
    Some(format!(
        "{} ({} written {when})",
        describe_io(&io::Error::from_raw_os_error(code)),
        ringxfer::size::format_bytes(bytes)
    ))
}

/// The OS's description without std's " (os error N)" suffix: the number is
/// noise for people, and scripts get it separately as `os_error`.
pub fn describe_io(err: &io::Error) -> String {
    let text = err.to_string();
    match err.raw_os_error() {
        Some(code) => text
            .strip_suffix(&format!(" (os error {code})"))
            .map(str::to_owned)
            .unwrap_or(text),
        None => text,
    }
}

/// Classifies the CLI's own I/O errors with the same names the daemon uses
/// where they overlap, so scripts can match one set of kinds: a full disk
/// and a refusal are named by the daemon's errno table itself.
fn io_kind(err: &io::Error) -> &'static str {
    let daemons = err.raw_os_error().map(errno::failure_kind);
    if let Some(
        kind @ (FailureKind::NoSpace | FailureKind::PermissionDenied | FailureKind::ReadOnly),
    ) = daemons
    {
        return kind.name();
    }
    match err.raw_os_error() {
        Some(libc::ENOENT) => "not-found",
        Some(libc::EISDIR) => "is-a-directory",
        Some(libc::ECONNREFUSED) => "connection-refused",
        Some(libc::EADDRINUSE) => "address-in-use",
        _ if err.kind() == io::ErrorKind::InvalidInput => "invalid-address",
        _ => "io",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_are_phrased_without_the_errno_suffix() {
        let err = CliError::io("/nope", &io::Error::from_raw_os_error(libc::ENOENT));
        assert_eq!(err.kind, "not-found");
        assert_eq!(err.os_error, Some(libc::ENOENT));
        assert_eq!(err.exit, Exit::Failed);
        assert_eq!(err.to_string(), "/nope: No such file or directory");
    }

    #[test]
    fn unreachable_daemon_keeps_the_stubs_own_words() {
        let err = ClientError::Connect {
            path: "/run/x.sock".into(),
            source: io::Error::from_raw_os_error(libc::ENOENT),
        };
        let cli = CliError::client("ignored", &err);
        assert_eq!(cli.kind, "daemon-unreachable");
        assert_eq!(cli.os_error, Some(libc::ENOENT));
        // The stub's message names the socket itself; no context is added.
        assert_eq!(cli.to_string(), err.to_string());
        assert!(cli.to_string().contains("/run/x.sock"));
    }

    #[test]
    fn io_kinds_the_daemon_has_too_come_from_its_errno_table() {
        let cases = [
            (libc::ENOSPC, "no-space"),
            (libc::EDQUOT, "no-space"),
            (libc::EACCES, "permission-denied"),
            (libc::EPERM, "permission-denied"),
            (libc::EROFS, "read-only"),
            (libc::EISDIR, "is-a-directory"),
            (libc::EINVAL, "invalid-address"),
            (libc::EPIPE, "io"),
        ];
        for (e, kind) in cases {
            assert_eq!(io_kind(&io::Error::from_raw_os_error(e)), kind, "errno {e}");
        }
    }

    #[test]
    fn exit_codes_are_stable() {
        assert_eq!(Exit::Done as u8, 0);
        assert_eq!(Exit::Failed as u8, 1);
        assert_eq!(Exit::Usage as u8, 2);
        assert_eq!(Exit::Unreachable as u8, 3);
    }
}
