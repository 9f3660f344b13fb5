//! What a job's copy operations were: the tag each carries in the op table
//! (io/ops.rs), which the I/O layer hands back with the completion without
//! looking at it.
//!
//! A job's tags come from three owners, told apart by the top byte: the
//! copy's steps (here, 1), verification's reads (verify.rs, 2) and the
//! job's own operations (engine/jobs.rs, 3).

/// The top byte of a copy step's tag.
const CLASS: u32 = 1;

/// One step of a chunk of the copy, or of the copy as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyStep {
    /// Source to pipe, for the chunk with this index.
    SpliceIn(u16),
    /// Pipe to destination, for the chunk with this index.
    SpliceOut(u16),
    /// Wait for the source to be readable, after EAGAIN.
    PollIn(u16),
    /// Wait for the destination to be writable, after EAGAIN.
    PollOut(u16),
    /// Read into the buffer of the chunk with this index.
    BufIn(u16),
    /// Write (or send) from the buffer of the chunk with this index.
    BufOut(u16),
    /// The first completion of a SEND_ZC from the chunk's buffer: bytes
    /// sent, and a notification still to come.
    ZcSent(u16),
    /// The notification of a SEND_ZC: the kernel is done with the buffer.
    ZcNotif(u16),
    /// Preallocation of the destination.
    Prealloc,
    /// Truncation of the destination to its final (or original) size.
    Truncate,
}

impl CopyStep {
    /// The op's tag: the class, the step in the next byte, the chunk below.
    pub fn tag(self) -> u32 {
        let (step, chunk) = match self {
            CopyStep::SpliceIn(i) => (0, i),
            CopyStep::SpliceOut(i) => (1, i),
            CopyStep::PollIn(i) => (2, i),
            CopyStep::PollOut(i) => (3, i),
            CopyStep::BufIn(i) => (4, i),
            CopyStep::BufOut(i) => (5, i),
            CopyStep::ZcSent(i) => (6, i),
            CopyStep::ZcNotif(i) => (7, i),
            CopyStep::Prealloc => (8, 0),
            CopyStep::Truncate => (9, 0),
        };
        CLASS << 24 | step << 16 | u32::from(chunk)
    }

    /// The step a tag says, if it is a copy step's.
    pub fn from_tag(tag: u32) -> Option<CopyStep> {
        if tag >> 24 != CLASS {
            return None;
        }
        let chunk = (tag & 0xffff) as u16;
        Some(match (tag >> 16) & 0xff {
            0 => CopyStep::SpliceIn(chunk),
            1 => CopyStep::SpliceOut(chunk),
            2 => CopyStep::PollIn(chunk),
            3 => CopyStep::PollOut(chunk),
            4 => CopyStep::BufIn(chunk),
            5 => CopyStep::BufOut(chunk),
            6 => CopyStep::ZcSent(chunk),
            7 => CopyStep::ZcNotif(chunk),
            8 => CopyStep::Prealloc,
            9 => CopyStep::Truncate,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_step_comes_back_from_its_tag_and_no_other_tag_is_a_step() {
        for i in [0, 1, 7, u16::MAX] {
            for step in [
                CopyStep::SpliceIn(i),
                CopyStep::SpliceOut(i),
                CopyStep::PollIn(i),
                CopyStep::PollOut(i),
                CopyStep::BufIn(i),
                CopyStep::BufOut(i),
                CopyStep::ZcSent(i),
                CopyStep::ZcNotif(i),
            ] {
                assert_eq!(CopyStep::from_tag(step.tag()), Some(step));
            }
        }
        for step in [CopyStep::Prealloc, CopyStep::Truncate] {
            assert_eq!(CopyStep::from_tag(step.tag()), Some(step));
        }
        for other in [0, 2 << 24, 3 << 24, 1 << 24 | 10 << 16] {
            assert_eq!(CopyStep::from_tag(other), None);
        }
    }
}
