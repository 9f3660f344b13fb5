//! The one table of what a kernel error means: the `FailureKind` a client
//! sees, and whether the operation is retried, waits for readiness or fails
//! the job. Every strategy (splice, direct, uncached, buffered), verification,
//! fdatasync and both engines ask here, so the same errno has the same
//! outcome whichever strategy or engine met it; so do the session's wire
//! (what an interrupted receive or send is: `io::errno::interrupted`, which
//! this table re-exports, as the wire sits above `io` only) and the CLI (its own full-disk
//! and permission errors are named with the table's kinds).
//!
//! Strategy-specific capability fallbacks (SEND_ZC or RWF_DONTCACHE not
//! supported, fallocate not supported, splice refused by a file system) are
//! decided by the strategy before the table: they change how the job moves
//! bytes, not what an error means.

pub(crate) use crate::io::errno::interrupted;
/// The table's kinds, shared with the client crate (which fails jobs and
/// connections by it too).
pub(crate) use ringxfer_ipc::errno::failure_kind;

/// Which end of the job an operation touched: EAGAIN waits for the source to
/// be readable or the destination to be writable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Source,
    Destination,
}

/// What to do after an operation failed with an errno.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// Interrupted: issue the same operation again at once.
    Retry,
    /// A non-blocking stream had nothing (or no room): poll it, then retry.
    WaitReadable,
    WaitWritable,
    /// The job fails with the errno's `FailureKind`.
    Fail,
}

/// Retry, wait or fail; a failure is of the kind `failure_kind` says.
pub(crate) fn action(errno: i32, side: Side) -> Action {
    match errno {
        e if interrupted(e) => Action::Retry,
        libc::EAGAIN => match side {
            Side::Source => Action::WaitReadable,
            Side::Destination => Action::WaitWritable,
        },
        _ => Action::Fail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringxfer_ipc::errno::{ERESTARTNOHAND, ERESTARTNOINTR, ERESTARTSYS, ERESTART_RESTARTBLOCK};
    use ringxfer_ipc::FailureKind;

    #[test]
    fn interruptions_retry_on_either_side() {
        for e in [
            libc::EINTR,
            ERESTARTSYS,
            ERESTARTNOINTR,
            ERESTARTNOHAND,
            ERESTART_RESTARTBLOCK,
        ] {
            for side in [Side::Source, Side::Destination] {
                assert_eq!(action(e, side), Action::Retry, "errno {e} on {side:?}");
            }
        }
        // 515 is ENOIOCTLCMD, not a restart code.
        assert_eq!(action(515, Side::Source), Action::Fail);
    }

    #[test]
    fn eagain_waits_for_the_side_that_said_it() {
        assert_eq!(action(libc::EAGAIN, Side::Source), Action::WaitReadable);
        assert_eq!(
            action(libc::EAGAIN, Side::Destination),
            Action::WaitWritable
        );
    }

    #[test]
    fn every_other_errno_fails_with_its_kind() {
        let table = [
            (libc::ENOSPC, FailureKind::NoSpace),
            (libc::EDQUOT, FailureKind::NoSpace),
            (libc::EBADF, FailureKind::BadDescriptor),
            (libc::EPERM, FailureKind::PermissionDenied),
            (libc::EACCES, FailureKind::PermissionDenied),
            (libc::EROFS, FailureKind::ReadOnly),
            (libc::EPIPE, FailureKind::PeerGone),
            (libc::ECONNRESET, FailureKind::PeerGone),
            (libc::ENOTCONN, FailureKind::PeerGone),
            (libc::ECONNABORTED, FailureKind::PeerGone),
            (libc::ECANCELED, FailureKind::Cancelled),
            (libc::EINVAL, FailureKind::InvalidRequest),
            (libc::ESPIPE, FailureKind::InvalidRequest),
            (libc::EIO, FailureKind::Io),
            (libc::EOPNOTSUPP, FailureKind::Io),
        ];
        for (e, kind) in table {
            for side in [Side::Source, Side::Destination] {
                assert_eq!(
                    (failure_kind(e), action(e, side)),
                    (kind, Action::Fail),
                    "errno {e}"
                );
            }
        }
    }
}
