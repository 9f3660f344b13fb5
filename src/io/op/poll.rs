//! IORING_OP_POLL_ADD, one-shot: a stream end became readable or writable.
//! The threads back end answers it with its own poll(2).

use std::os::fd::RawFd;

use io_uring::{opcode, squeue, types};

use super::{Blocking, Keep, Operation};

/// A wait for `events` on `fd`, one of the job's descriptors it keeps.
pub struct Poll {
    fd: RawFd,
    events: i16,
    _keep: Keep,
}

impl Poll {
    pub fn new(fd: RawFd, events: i16, keep: Keep) -> Poll {
        Poll {
            fd,
            events,
            _keep: keep,
        }
    }
}

impl Operation for Poll {
    fn code(&self) -> u8 {
        opcode::PollAdd::CODE
    }

    fn entry(&mut self) -> squeue::Entry {
        opcode::PollAdd::new(types::Fd(self.fd), self.events as u16 as u32).build()
    }

    fn blocking(&mut self) -> Blocking {
        Blocking::Poll {
            fd: self.fd,
            events: self.events,
        }
    }
}
