//! What a job's copy operations are: the tag each carries in the op table
//! (io/ops.rs), which the I/O layer hands back with the completion without
//! looking at it.
//!
//! A job's tags come from three owners, told apart by the top byte: the
//! copy's steps (here, 1), verification's reads (verify.rs, 2) and the
//! job's own operations (engine/jobs.rs, 3). A copy step names a chunk of
//! the pipeline (pipeline.rs), whatever resource it holds: the strategy
//! knows whether its chunks carry pipes or buffers.

/// The top byte of a copy step's tag.
const CLASS: u32 = 1;

/// One operation of the copy: a step of one of its chunks, or of the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CopyStep {
    /// The source into the chunk's resource.
    In(usize),
    /// The chunk's resource out to the destination.
    Out(usize),
    /// The first completion of a SEND_ZC: bytes sent, a notification to come.
    ZcSent(usize),
    /// The notification of a SEND_ZC: the kernel is done with the buffer.
    ZcNotif(usize),
    /// The chunk waits for the source to be readable.
    PollIn(usize),
    /// The chunk waits for the destination to be writable.
    PollOut(usize),
    /// The job waits for its streamed source, holding no chunk.
    Ready,
    /// Preallocation of the destination.
    Prealloc,
    /// Truncation of the destination to its final (or original) size.
    Truncate,
    /// The clone of the whole source (reflink.rs).
    Clone,
    /// The map of where the source's data is (holes.rs).
    DataMap,
    /// A hole punched into the destination (holes.rs).
    Punch,
    /// The destination given its size before a sparse copy (holes.rs).
    Size,
    /// A control frame to another daemon (peer_push.rs).
    PeerSend,
    /// A read of what the other daemon says (peer_link.rs).
    PeerRecv,
    /// A write of pulled data into the destination (peer_pull.rs).
    PeerWrite,
    /// A pulled file's mode and times (peer_pull.rs).
    PeerMeta,
    /// The wait before a lost push dials the other daemon again (redial.rs).
    Redial,
    /// The connect of that dial.
    Connect,
    /// A read of the part a resumed pull kept, for its sums (peer_pull.rs).
    PeerSum,
    /// A resumed pull's destination cut to the file's size.
    PeerCut,
}

impl CopyStep {
    /// The op's tag: the class, the step in the next byte, the chunk below.
    /// Chunk indexes are below `max_chunks`, a u16 setting.
    pub(crate) fn tag(self) -> u32 {
        let (step, chunk) = match self {
            CopyStep::In(i) => (0, i),
            CopyStep::Out(i) => (1, i),
            CopyStep::ZcSent(i) => (2, i),
            CopyStep::ZcNotif(i) => (3, i),
            CopyStep::PollIn(i) => (4, i),
            CopyStep::PollOut(i) => (5, i),
            CopyStep::Ready => (6, 0),
            CopyStep::Prealloc => (7, 0),
            CopyStep::Truncate => (8, 0),
            CopyStep::Clone => (9, 0),
            CopyStep::DataMap => (10, 0),
            CopyStep::Punch => (11, 0),
            CopyStep::Size => (12, 0),
            CopyStep::PeerSend => (13, 0),
            CopyStep::PeerRecv => (14, 0),
            CopyStep::PeerWrite => (15, 0),
            CopyStep::PeerMeta => (16, 0),
            CopyStep::Redial => (17, 0),
            CopyStep::Connect => (18, 0),
            CopyStep::PeerSum => (19, 0),
            CopyStep::PeerCut => (20, 0),
        };
        debug_assert!(chunk <= 0xffff, "chunk {chunk} does not fit a tag");
        CLASS << 24 | step << 16 | (chunk as u32 & 0xffff)
    }

    /// The step a tag says, if it is a copy step's.
    pub(crate) fn from_tag(tag: u32) -> Option<CopyStep> {
        if tag >> 24 != CLASS {
            return None;
        }
        let chunk = (tag & 0xffff) as usize;
        Some(match (tag >> 16) & 0xff {
            0 => CopyStep::In(chunk),
            1 => CopyStep::Out(chunk),
            2 => CopyStep::ZcSent(chunk),
            3 => CopyStep::ZcNotif(chunk),
            4 => CopyStep::PollIn(chunk),
            5 => CopyStep::PollOut(chunk),
            6 => CopyStep::Ready,
            7 => CopyStep::Prealloc,
            8 => CopyStep::Truncate,
            9 => CopyStep::Clone,
            10 => CopyStep::DataMap,
            11 => CopyStep::Punch,
            12 => CopyStep::Size,
            13 => CopyStep::PeerSend,
            14 => CopyStep::PeerRecv,
            15 => CopyStep::PeerWrite,
            16 => CopyStep::PeerMeta,
            17 => CopyStep::Redial,
            18 => CopyStep::Connect,
            19 => CopyStep::PeerSum,
            20 => CopyStep::PeerCut,
            _ => return None,
        })
    }

    /// The chunk the step belongs to; `None` for the job's own operations.
    pub(crate) fn slot(self) -> Option<usize> {
        match self {
            CopyStep::In(i)
            | CopyStep::Out(i)
            | CopyStep::ZcSent(i)
            | CopyStep::ZcNotif(i)
            | CopyStep::PollIn(i)
            | CopyStep::PollOut(i) => Some(i),
            CopyStep::Ready
            | CopyStep::Prealloc
            | CopyStep::Truncate
            | CopyStep::Clone
            | CopyStep::DataMap
            | CopyStep::Punch
            | CopyStep::Size
            | CopyStep::PeerSend
            | CopyStep::PeerRecv
            | CopyStep::PeerWrite
            | CopyStep::PeerMeta
            | CopyStep::Redial
            | CopyStep::Connect
            | CopyStep::PeerSum
            | CopyStep::PeerCut => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_step_comes_back_from_its_tag_and_no_other_tag_is_a_step() {
        for i in [0, 1, 7, usize::from(u16::MAX)] {
            for step in [
                CopyStep::In(i),
                CopyStep::Out(i),
                CopyStep::ZcSent(i),
                CopyStep::ZcNotif(i),
                CopyStep::PollIn(i),
                CopyStep::PollOut(i),
            ] {
                assert_eq!(CopyStep::from_tag(step.tag()), Some(step));
            }
        }
        for step in [
            CopyStep::Ready,
            CopyStep::Prealloc,
            CopyStep::Truncate,
            CopyStep::Clone,
            CopyStep::DataMap,
            CopyStep::Punch,
            CopyStep::Size,
            CopyStep::PeerSend,
            CopyStep::PeerRecv,
            CopyStep::PeerWrite,
            CopyStep::PeerMeta,
            CopyStep::Redial,
            CopyStep::Connect,
            CopyStep::PeerSum,
            CopyStep::PeerCut,
        ] {
            assert_eq!(CopyStep::from_tag(step.tag()), Some(step));
        }
        for other in [0, 2 << 24, 3 << 24, 1 << 24 | 21 << 16] {
            assert_eq!(CopyStep::from_tag(other), None);
        }
    }
}
