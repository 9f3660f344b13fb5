//! IORING_OP_ACCEPT on the listening socket; accept4(2).

use std::os::fd::RawFd;

use io_uring::{opcode, squeue, types};

use super::{Blocking, Operation};
use crate::io::fd::SharedFd;

/// An accept on the listener, which it shares. The peer address is not
/// asked for (SO_PEERCRED says who the peer is), so no memory is held.
pub struct Accept {
    fd: SharedFd,
}

impl Accept {
    pub fn new(fd: SharedFd) -> Accept {
        Accept { fd }
    }
}

impl Operation for Accept {
    fn code(&self) -> u8 {
        opcode::Accept::CODE
    }

    fn entry(&mut self) -> squeue::Entry {
        opcode::Accept::new(
            types::Fd(self.fd.raw()),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
        .flags(libc::SOCK_CLOEXEC)
        .build()
    }

    fn blocking(&mut self) -> Blocking {
        Blocking::Accept(Call {
            fd: self.fd.raw(),
            flags: libc::SOCK_CLOEXEC,
        })
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Call {
    pub fd: RawFd,
    pub flags: i32,
}

impl Call {
    /// # Safety
    /// `fd` is the listener, open while the op is in flight.
    pub unsafe fn run(self) -> isize {
        // SAFETY: no address is asked for, so no memory is written.
        unsafe {
            libc::accept4(
                self.fd,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                self.flags,
            ) as isize
        }
    }
}
