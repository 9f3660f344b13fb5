//! The one table of what a kernel error means to a job: the `FailureKind` a
//! client is told. The daemon's strategies, verification and both engines
//! ask it (through `ringxfer::transfer::errno`, which adds whether to retry
//! or wait), and so does this crate where it fails a job or a connection
//! itself (publishing a staged file, a send to a daemon that is gone), so the
//! same errno means the same thing on either side of the socket.

use crate::FailureKind;

/// The kernel's ERESTARTSYS (include/linux/errno.h): "restart the call if
/// the signal handler allows". The ERESTART* codes are not meant to reach
/// user space, and libc has no names for them, but they can leak out of an
/// interrupted io-wq worker as a completion's result; they mean the same as
/// EINTR, so a job that gets one is retried or, if it cannot be, reported
/// as cancelled.
///
/// ```
/// use ringxfer_ipc::errno::{failure_kind, interrupted, ERESTARTSYS};
/// use ringxfer_ipc::FailureKind;
///
/// // A completion's negative result, as io_uring reports it.
/// let res: i32 = -ERESTARTSYS;
/// assert!(interrupted(-res));
/// assert_eq!(failure_kind(-res), FailureKind::Cancelled);
/// ```
pub const ERESTARTSYS: i32 = 512;

/// The kernel's ERESTARTNOINTR: "always restart the call". Means EINTR
/// here, as [`ERESTARTSYS`] explains.
///
/// ```
/// use ringxfer_ipc::errno::{interrupted, ERESTARTNOINTR};
/// let err = std::io::Error::from_raw_os_error(ERESTARTNOINTR);
/// assert!(err.raw_os_error().is_some_and(interrupted));
/// ```
pub const ERESTARTNOINTR: i32 = 513;

/// The kernel's ERESTARTNOHAND: "restart the call if no signal handler
/// ran". Means EINTR here, as [`ERESTARTSYS`] explains.
///
/// ```
/// use ringxfer_ipc::errno::{failure_kind, ERESTARTNOHAND};
/// assert_eq!(failure_kind(ERESTARTNOHAND), failure_kind(libc::EINTR));
/// ```
pub const ERESTARTNOHAND: i32 = 514;

/// The kernel's ERESTART_RESTARTBLOCK: "restart through
/// restart_syscall(2)" (an interrupted sleep, say). Means EINTR here, as
/// [`ERESTARTSYS`] explains.
///
/// ```
/// use ringxfer_ipc::errno::{interrupted, ERESTART_RESTARTBLOCK};
/// assert!(interrupted(ERESTART_RESTARTBLOCK));
/// // 515 (ENOIOCTLCMD) lies between the restart codes but is none of them.
/// assert!(!interrupted(515));
/// ```
pub const ERESTART_RESTARTBLOCK: i32 = 516;

/// Whether `errno` only says the operation was interrupted.
///
/// ```
/// use ringxfer_ipc::errno::interrupted;
/// assert!(interrupted(libc::EINTR));
/// assert!(!interrupted(libc::EIO));
/// ```
pub fn interrupted(errno: i32) -> bool {
    matches!(
        errno,
        libc::EINTR | ERESTARTSYS | ERESTARTNOINTR | ERESTARTNOHAND | ERESTART_RESTARTBLOCK
    )
}

/// The class of failure an errno stands for, when it fails a job.
///
/// ```
/// use ringxfer_ipc::{errno::failure_kind, FailureKind};
/// assert_eq!(failure_kind(libc::EDQUOT), FailureKind::NoSpace);
/// assert_eq!(failure_kind(libc::ECONNRESET), FailureKind::PeerGone);
/// // Not a permission anyone could grant: the file system is read-only.
/// assert_eq!(failure_kind(libc::EROFS), FailureKind::ReadOnly);
/// ```
pub fn failure_kind(errno: i32) -> FailureKind {
    match errno {
        libc::ENOSPC | libc::EDQUOT => FailureKind::NoSpace,
        libc::EBADF => FailureKind::BadDescriptor,
        libc::EPERM | libc::EACCES => FailureKind::PermissionDenied,
        libc::EROFS => FailureKind::ReadOnly,
        libc::EPIPE | libc::ECONNRESET | libc::ENOTCONN | libc::ECONNABORTED => {
            FailureKind::PeerGone
        }
        // An interruption that could not be retried (the job was cancelled
        // meanwhile) reads as a cancel.
        e if e == libc::ECANCELED || interrupted(e) => FailureKind::Cancelled,
        libc::EINVAL | libc::ESPIPE => FailureKind::InvalidRequest,
        _ => FailureKind::Io,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restart_code_that_escapes_reads_as_a_cancel() {
        assert_eq!(failure_kind(ERESTARTSYS), FailureKind::Cancelled);
        assert_eq!(failure_kind(libc::EINTR), FailureKind::Cancelled);
        // 515 is ENOIOCTLCMD, not a restart code.
        assert!(!interrupted(515));
    }
}
