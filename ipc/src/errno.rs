//! The one table of what a kernel error means to a job: the `FailureKind` a
//! client is told. The daemon's strategies, verification and both engines
//! ask it (through `ringxfer::transfer::errno`, which adds whether to retry
//! or wait), and so does this crate where it fails a job or a connection
//! itself (publishing a staged file, a send to a daemon that is gone), so the
//! same errno means the same thing on either side of the socket.

use crate::FailureKind;

/// The kernel's ERESTART* codes (include/linux/errno.h). They are not meant
/// to reach user space, but can leak out of an interrupted io-wq worker; they
/// mean the same as EINTR.
pub const ERESTARTSYS: i32 = 512;
pub const ERESTARTNOINTR: i32 = 513;
pub const ERESTARTNOHAND: i32 = 514;
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
/// ```
pub fn failure_kind(errno: i32) -> FailureKind {
    match errno {
        libc::ENOSPC | libc::EDQUOT => FailureKind::NoSpace,
        libc::EBADF => FailureKind::BadDescriptor,
        libc::EPERM | libc::EACCES | libc::EROFS => FailureKind::PermissionDenied,
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
