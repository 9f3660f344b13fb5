//! IORING_OP_CLOSE in an io_uring worker (IOSQE_ASYNC); close(2) on a
//! worker thread.

use std::os::fd::{IntoRawFd, OwnedFd, RawFd};

use io_uring::{opcode, squeue, types};

use super::{Blocking, Operation};

/// The close of a descriptor given up to it: once queued, the kernel (or a
/// worker) closes it, so the op holds the number, not an `OwnedFd`; one
/// that never reached a back end is closed by `close_now`.
pub struct Close {
    fd: RawFd,
}

impl Close {
    pub fn new(fd: OwnedFd) -> Close {
        Close {
            fd: fd.into_raw_fd(),
        }
    }

    /// Closes the descriptor here, for a close that was never queued.
    pub fn close_now(self) {
        // SAFETY: the descriptor was given up to this op, whose entry never
        // reached a back end, so this is its only close.
        unsafe { libc::close(self.fd) };
    }
}

impl Operation for Close {
    fn code(&self) -> u8 {
        opcode::Close::CODE
    }

    fn entry(&mut self) -> squeue::Entry {
        opcode::Close::new(types::Fd(self.fd))
            .build()
            .flags(squeue::Flags::ASYNC)
    }

    fn blocking(&mut self) -> Blocking {
        Blocking::Close(Call { fd: self.fd })
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Call {
    pub fd: RawFd,
}

impl Call {
    /// close(2) once: after EINTR the descriptor is gone on Linux, so it is
    /// not retried (a retry could close a descriptor someone else just got).
    ///
    /// # Safety
    /// The descriptor was given up to the op; this is its one close.
    pub unsafe fn run(self) -> isize {
        // SAFETY: the caller's guarantee.
        let ret = unsafe { libc::close(self.fd) };
        if ret < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            return 0;
        }
        ret as isize
    }
}
