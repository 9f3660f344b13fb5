//! IORING_OP_TIMEOUT: a timer. The threads back end keeps its own heap.

use std::time::Duration;

use io_uring::{opcode, squeue, types};

use super::{Blocking, Operation};

/// A timer that completes (with -ETIME) after a delay; it owns the
/// timespec the kernel reads.
pub struct Timeout {
    ts: Box<types::Timespec>,
    after: Duration,
}

impl Timeout {
    pub fn new(after: Duration) -> Timeout {
        let ts = Box::new(
            types::Timespec::new()
                .sec(after.as_secs())
                .nsec(after.subsec_nanos()),
        );
        Timeout { ts, after }
    }
}

impl Operation for Timeout {
    fn code(&self) -> u8 {
        opcode::Timeout::CODE
    }

    fn entry(&mut self) -> squeue::Entry {
        opcode::Timeout::new(&*self.ts).build()
    }

    fn blocking(&mut self) -> Blocking {
        Blocking::Timeout { after: self.after }
    }
}
