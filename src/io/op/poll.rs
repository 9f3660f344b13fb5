//! IORING_OP_POLL_ADD, one-shot: a stream end became readable or writable.
//! The threads back end answers it with its own poll(2).

use io_uring::{opcode, squeue, types};

use super::{Blocking, Operation};
use crate::io::fd::SharedFd;

/// A wait for `events` on `fd` (one of a job's descriptors).
pub struct Poll {
    fd: SharedFd,
    events: i16,
}

impl Poll {
    pub fn new(fd: SharedFd, events: i16) -> Poll {
        Poll { fd, events }
    }
}

impl Operation for Poll {
    fn code(&self) -> u8 {
        opcode::PollAdd::CODE
    }

    fn entry(&mut self) -> squeue::Entry {
        opcode::PollAdd::new(types::Fd(self.fd.raw()), self.events as u16 as u32).build()
    }

    fn blocking(&mut self) -> Blocking {
        Blocking::Poll {
            fd: self.fd.raw(),
            events: self.events,
        }
    }
}
