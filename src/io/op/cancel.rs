//! IORING_OP_ASYNC_CANCEL of an operation by its user_data. It gets no op
//! table entry: its own completion carries nothing the loop needs.

use io_uring::{opcode, squeue};

use super::{Blocking, Operation};

pub(crate) struct Cancel {
    target: u64,
}

impl Cancel {
    pub(crate) fn new(target: u64) -> Cancel {
        Cancel { target }
    }
}

impl Operation for Cancel {
    fn code(&self) -> u8 {
        opcode::AsyncCancel::CODE
    }

    fn entry(&mut self) -> squeue::Entry {
        opcode::AsyncCancel::new(self.target).build()
    }

    fn blocking(&mut self) -> Blocking {
        Blocking::Cancel {
            target: self.target,
        }
    }
}
