//! The copy-range and sendfile strategies: the kernel copies, a bounded
//! piece at a time, on a worker thread (io/op/copy_range.rs):
//! copy_file_range(2) from a regular file into a regular file (in the page
//! cache on ext4 and tmpfs, on the server for NFS 4.2, SMB or CephFS), or
//! sendfile(2) from a regular file into a socket. Neither syscall is an
//! io_uring opcode, and both block.
//!
//! A chunk is a worker piece lent by the piece pool through the same fair
//! queues as pipes and buffers, plus the range of bytes it copies: the
//! ranges are handed out as splice hands them (`next_range`, one piece
//! each), several chunks copy different ranges of a file at once, and at
//! each piece's end the job may give its piece back (other jobs wait, a
//! rate limit is spent), so priorities, shares, rate limits, progress and
//! cancel work as for splice. A piece holds no bytes: a piece cancelled
//! half-way has copied what its result says, and the rest of its range is
//! copied again later, so a stalled job gives its pieces back (`reclaim`)
//! whether it copies into a file or sends to a socket.
//!
//! copy_file_range refuses what the file systems cannot do (two file
//! systems that do not copy between them: EXDEV; EOPNOTSUPP, EINVAL,
//! ENOSYS, EBADF); before any byte moved, an `auto` job goes on with splice
//! and the note says why (engine/jobs.rs), and `CopyRefusals` keeps `auto`
//! from asking the same pair of file systems again for each file.

use std::rc::Rc;
use std::time::{Duration, Instant};

use ringxfer_ipc::FailureKind;

use super::errno::{self, Action, Side};
use super::pipeline::{ring_failed, Pipeline, Returned, Strategy};
use super::ranges::{RangeStrategy, Ranges, Span};
use super::step::CopyStep;
use super::{Endpoints, FdKind, Shape, TransferError};
use crate::io::op::copy_range::Kind;
use crate::io::op::CopyRange;
use crate::io::ops::Owner;
use crate::io::piece_pool::Piece;
use crate::io::Io;

/// The most one piece copies (less under a rate limit): small enough that
/// progress, a cancel, a yield to another job or a rate limit's window come
/// round every few milliseconds on a local disk, large enough that the
/// worker hand-off per piece costs nothing measurable.
pub(crate) const PIECE: u64 = 8 << 20;
/// How large a file-to-file piece grows while pieces keep coming back
/// fast: a hot 1 GiB copy in 8 MiB pieces paid 128 hand-offs to a worker
/// and back (about 3% against cp's one copy_file_range).
const MAX_PIECE: u64 = 64 << 20;
/// A whole piece back within this doubles the next; one slower than
/// `SLOW_PIECE` halves it, so a piece stays 10 to 40 ms long once it
/// grows (a hand-off costs tens of microseconds: well under 1%), and a
/// slow disk's stay `PIECE`.
const FAST_PIECE: Duration = Duration::from_millis(10);
const SLOW_PIECE: Duration = Duration::from_millis(40);

/// A transfer the kernel copies in pieces, on workers.
pub(crate) type RangeCopy = Pipeline<InKernel>;

/// A chunk's worker piece and the range it copies.
pub(crate) struct RangeChunk {
    piece: Piece,
    /// Next source and destination offsets (the destination's is unused
    /// by sendfile, which writes a socket at its position).
    src_off: u64,
    dst_off: u64,
    /// Bytes of the chunk's range not yet copied.
    to_copy: u64,
    /// When its piece in flight went, and how many bytes it asked for.
    issued: (Instant, u64),
}

/// What the in-kernel strategies keep beyond the pipeline's chunks.
pub(crate) struct InKernel {
    kind: Kind,
    /// The errno the syscall refused the files with, before any byte
    /// moved: `auto` goes on with splice.
    refused: Option<i32>,
    /// The total, ranges set aside, the destination's final size (ranges.rs).
    ranges: Ranges,
    /// The size of the next piece, between `PIECE` and `MAX_PIECE` as the
    /// pieces of a file-to-file copy come back fast or slow.
    piece: u64,
}

impl Strategy for InKernel {
    type Lent = Piece;
    type Chunk = RangeChunk;
    const OP_NAME: &'static str = "in-kernel copy";

    fn chunk(piece: Piece) -> RangeChunk {
        RangeChunk {
            piece,
            src_off: 0,
            dst_off: 0,
            to_copy: 0,
            issued: (Instant::now(), 0),
        }
    }

    fn refused(piece: Piece) -> Returned {
        Returned::Piece(piece)
    }

    fn give_back(chunk: RangeChunk, _failed: bool) -> Option<Returned> {
        Some(Returned::Piece(chunk.piece))
    }

    fn divert(p: &mut RangeCopy, slot: usize, out: &mut Vec<Returned>) -> bool {
        p.divert_reclaimed(slot, out)
    }

    /// Copies the next piece of the chunk's range, or takes the next range;
    /// with `yield_pieces` (other jobs wait, or a rate limit is spent), a
    /// chunk whose range is done lets its piece go instead.
    fn step(
        p: &mut RangeCopy,
        slot: usize,
        owner: Owner,
        io: &mut Io,
        yield_pieces: bool,
        out: &mut Vec<Returned>,
    ) -> Result<(), TransferError> {
        let Some(chunk) = p.chunks[slot].as_ref() else {
            return Ok(());
        };
        let (seq, to_copy) = (chunk.seq, chunk.s.to_copy);
        if to_copy > 0 {
            if p.in_turn(seq) {
                p.copy_piece(slot, owner, io)?;
            }
            return Ok(());
        }
        if !yield_pieces && p.take_range(slot) {
            return p.copy_piece(slot, owner, io);
        }
        p.release(slot, out);
        Ok(())
    }

    fn complete(
        p: &mut RangeCopy,
        step: CopyStep,
        slot: usize,
        result: i32,
        _linked: bool,
    ) -> Result<(), TransferError> {
        match step {
            // Cancelled to give the piece back: nothing moved.
            _ if p.taken_back(result) => Ok(()),
            CopyStep::In(_) => p.after_piece(slot, result),
            // The socket is writable (or the poll failed, and the retried
            // sendfile will say why): the chunk tries again.
            _ => Ok(()),
        }
    }

    fn side(p: &mut RangeCopy, step: CopyStep, result: i32) -> Result<bool, TransferError> {
        if step != CopyStep::Truncate {
            return Ok(false);
        }
        p.truncated(result)
    }

    fn side_op(_: &RangeCopy) -> Option<u64> {
        None
    }

    fn after_pump(p: &mut RangeCopy, owner: Owner, io: &mut Io) {
        p.settle_destination(owner, io);
    }

    fn finished(p: &RangeCopy) -> bool {
        p.ranges_finished()
    }
}

impl RangeStrategy for InKernel {
    fn ranges(&self) -> &Ranges {
        &self.ranges
    }

    fn ranges_mut(&mut self) -> &mut Ranges {
        &mut self.ranges
    }

    /// A piece holds no bytes: what its result did not count is copied
    /// again.
    fn rest(c: &RangeChunk) -> Span {
        Span {
            src_off: c.src_off,
            dst_off: c.dst_off,
            len: c.to_copy,
        }
    }

    fn start(c: &mut RangeChunk, span: Span) {
        c.src_off = span.src_off;
        c.dst_off = span.dst_off;
        c.to_copy = span.len;
    }

    /// The source's end found, or every range of a job of known length
    /// handed out: `src_done` is set as `hand_out` gives out a job's last
    /// range, but a map of the source that arrives after it can skip a
    /// trailing hole without any chunk asking for a range.
    fn all_read(p: &RangeCopy) -> bool {
        p.src_done || (!p.open_end && p.all_assigned())
    }
}

impl RangeCopy {
    /// Prepares the transfer of a regular file (a size hint or a requested
    /// length) into a regular file (copy_file_range) or a socket
    /// (sendfile), one piece in flight at a time. Two sends would
    /// interleave their bytes; two copies into one file take turns on its
    /// inode lock for every 64 KiB the kernel moves, and spin for it: with
    /// two pieces at once a hot 1 GiB copy on ext4 took 0.5-0.9 s and
    /// 0.7-0.9 s of CPU (`rwsem_spin_on_owner` a third of the samples),
    /// with one 0.25 s as cp's does.
    pub(crate) fn new(ends: Rc<Endpoints>, shape: Shape) -> RangeCopy {
        let kind = if ends.dst_kind == FdKind::File {
            Kind::CopyFileRange
        } else {
            Kind::Sendfile
        };
        let s = InKernel {
            kind,
            refused: None,
            ranges: Ranges::new(shape.total),
            piece: PIECE,
        };
        Pipeline::with_ranges(ends, &shape, 1, s)
    }

    /// Whether this is a sendfile into a socket (else copy_file_range).
    pub(crate) fn sends(&self) -> bool {
        self.s.kind == Kind::Sendfile
    }

    /// The errno the syscall refused these files with, if the job failed
    /// only for that and moved nothing: `auto` goes on with splice.
    pub(crate) fn refused(&self) -> Option<i32> {
        self.s.refused.filter(|_| self.moved == self.holes.bytes)
    }

    /// Whether another piece would let this job copy more at once.
    pub(crate) fn wants_piece(&self) -> bool {
        self.wants_range()
    }

    /// Hands an empty chunk its next range (`hand_out`). False if there is
    /// none.
    fn take_range(&mut self, slot: usize) -> bool {
        self.hand_out(slot, self.cap()).is_some()
    }

    /// Starts the job: the map of a sparse source's data first.
    pub(crate) fn start(&mut self, owner: Owner, io: &mut Io) {
        self.drive_holes(owner, io);
    }

    /// The most one piece copies.
    fn cap(&self) -> u64 {
        self.s.piece.min(self.piece_limit)
    }

    /// Queues the next piece of the chunk's range on a worker.
    fn copy_piece(&mut self, slot: usize, owner: Owner, io: &mut Io) -> Result<(), TransferError> {
        let (ends, kind, cap) = (Rc::clone(&self.ends), self.s.kind, self.cap());
        let Some(chunk) = self.chunk(slot) else {
            return Ok(());
        };
        let len = chunk.s.to_copy.min(cap) as usize;
        chunk.s.issued = (Instant::now(), len as u64);
        let op = CopyRange::new(
            kind,
            ends.shared_src(),
            ends.shared_dst(),
            (chunk.s.src_off, chunk.s.dst_off),
            len,
        );
        let ud = io.queue_op(owner, CopyStep::In(slot).tag(), op);
        chunk.busy = Some(ud.map_err(ring_failed::<InKernel>)?);
        self.touched = true;
        Ok(())
    }

    /// A piece came back: `result` bytes copied, 0 at the source's end, or
    /// an errno.
    fn after_piece(&mut self, slot: usize, result: i32) -> Result<(), TransferError> {
        if result < 0 {
            return self.piece_failed(slot, -result);
        }
        if result == 0 {
            return self.piece_end(slot);
        }
        let n = result as u64;
        let (open_end, src_start) = (self.open_end, self.src_start);
        let Some(chunk) = self.chunk(slot) else {
            return Ok(());
        };
        let n = n.min(chunk.s.to_copy);
        let (sent, asked) = chunk.s.issued;
        chunk.s.src_off += n;
        chunk.s.dst_off += n;
        chunk.s.to_copy -= n;
        let (src_off, range_done) = (chunk.s.src_off, chunk.s.to_copy == 0);
        if range_done && chunk.probing {
            // The file had a whole piece more: the next piece probes on.
            chunk.probing = false;
            self.prober = None;
        }
        self.moved += n;
        if range_done {
            self.write_seq += 1;
        }
        self.size_pieces(sent.elapsed(), n == asked);
        self.high = self.high.max(src_off - src_start);
        if open_end {
            return self.check_eof();
        }
        Ok(())
    }

    /// Sizes the next pieces by how long the last one took (`next_piece`).
    fn size_pieces(&mut self, took: Duration, whole: bool) {
        self.s.piece = next_piece(self.s.piece, self.s.kind, took, whole);
    }

    /// A copy returned 0: the source's end.
    fn piece_end(&mut self, slot: usize) -> Result<(), TransferError> {
        let open_end = self.open_end;
        let Some(chunk) = self.chunk(slot) else {
            return Ok(());
        };
        let reached = chunk.s.src_off;
        if !open_end {
            return Err(self.short_source(reached, self.s.ranges.total.unwrap_or(0)));
        }
        // End of file, wherever the size hint said it would be.
        chunk.s.to_copy = 0;
        if chunk.probing {
            chunk.probing = false;
            self.prober = None;
        }
        self.write_seq += 1;
        self.found_eof(reached - self.src_start);
        self.src_done = true;
        self.check_eof()
    }

    /// A piece failed with `errno`: retry, wait for the socket, or fail.
    fn piece_failed(&mut self, slot: usize, errno: i32) -> Result<(), TransferError> {
        let (kind, dst_kind) = (self.s.kind, self.ends.dst_kind);
        let Some(chunk) = self.chunk(slot) else {
            return Ok(());
        };
        let src_off = chunk.s.src_off;
        match errno::action(errno, Side::Destination) {
            Action::Retry => Ok(()),
            // A socket the client made non-blocking is full: wait for room.
            Action::WaitWritable | Action::WaitReadable if kind == Kind::Sendfile => {
                chunk.wait = Some(libc::POLLOUT);
                Ok(())
            }
            // A file says EAGAIN only when the client made it non-blocking;
            // the worker blocks in the syscall, so try again.
            Action::WaitWritable | Action::WaitReadable => Ok(()),
            Action::Fail if refusal(errno) && self.moved == self.holes.bytes => {
                self.s.refused = Some(errno);
                Err(refused_error(kind, errno))
            }
            Action::Fail => Err(TransferError::os(
                format!(
                    "{} from the source file at offset {src_off} into the destination {dst_kind}",
                    syscall(kind)
                ),
                errno,
            )),
        }
    }
}

fn syscall(kind: Kind) -> &'static str {
    match kind {
        Kind::CopyFileRange => "copy_file_range",
        Kind::Sendfile => "sendfile",
    }
}

/// Whether the syscall's `errno` says it cannot copy between these files
/// (rather than that copying failed): then `auto` splices instead.
pub(crate) fn refusal(errno: i32) -> bool {
    matches!(
        errno,
        libc::EXDEV | libc::EOPNOTSUPP | libc::EINVAL | libc::ENOSYS | libc::EBADF
    )
}

/// What a refusal means, for a note or a message.
pub(crate) fn refusal_reason(errno: i32) -> &'static str {
    match errno {
        libc::EXDEV => "EXDEV: the two files are on file systems that do not copy between them",
        libc::EOPNOTSUPP => "EOPNOTSUPP: the file system does not support it",
        libc::EINVAL => "EINVAL: the file system cannot copy these files (procfs, sysfs...)",
        libc::ENOSYS => "ENOSYS: the kernel does not have it",
        libc::EBADF => "EBADF: a descriptor cannot be copied from or into",
        _ => "refused",
    }
}

/// The failure of a job whose strategy was asked for explicitly and whose
/// files the syscall refuses: nothing was written, and `auto` or splice
/// would move it.
fn refused_error(kind: Kind, errno: i32) -> TransferError {
    let (strategy, what) = match kind {
        Kind::CopyFileRange => ("copy-range", "copy between these files"),
        Kind::Sendfile => ("sendfile", "send this source"),
    };
    TransferError {
        kind: FailureKind::InvalidRequest,
        os_error: Some(errno),
        message: format!(
            "the {strategy} strategy cannot {what}: {} refused ({}); use auto or splice",
            syscall(kind),
            refusal_reason(errno)
        ),
    }
}

/// Pairs of file systems copy_file_range refused to copy between, so that
/// `auto` does not ask again for every file (a refusal costs a worker
/// hand-off, then the job starts over with splice). Remembered by the pair
/// of devices: EXDEV (file systems that do not copy between them),
/// EOPNOTSUPP and ENOSYS; EINVAL and EBADF may be about one file, and are
/// not kept.
#[derive(Debug, Default)]
pub(crate) struct CopyRefusals {
    pairs: std::collections::HashMap<(u64, u64), i32>,
}

/// Pairs remembered at most; past it, memory starts over.
const MAX_REMEMBERED: usize = 4096;

impl CopyRefusals {
    /// The errno copy_file_range from device `src` to device `dst` was
    /// refused with before, if it was.
    pub(crate) fn known(&self, src: u64, dst: u64) -> Option<i32> {
        self.pairs.get(&(src, dst)).copied()
    }

    /// Remembers what a refusal's `errno` said about devices `src` and `dst`.
    pub(crate) fn learn(&mut self, errno: i32, src: u64, dst: u64) {
        if !matches!(errno, libc::EXDEV | libc::EOPNOTSUPP | libc::ENOSYS) {
            return;
        }
        if self.pairs.len() >= MAX_REMEMBERED {
            self.pairs.clear();
        }
        self.pairs.insert((src, dst), errno);
    }
}

/// The size of the next piece after one of `piece` bytes took `took`
/// (`whole`: it copied all it asked): a file-to-file copy's grows while a
/// whole piece comes back within `FAST_PIECE` and shrinks once one takes
/// longer than `SLOW_PIECE`; a socket's (sendfile) stays `PIECE`.
fn next_piece(piece: u64, kind: Kind, took: Duration, whole: bool) -> u64 {
    if kind != Kind::CopyFileRange {
        return piece;
    }
    if whole && took < FAST_PIECE {
        (piece * 2).min(MAX_PIECE)
    } else if took > SLOW_PIECE {
        (piece / 2).max(PIECE)
    } else {
        piece
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_grow_while_fast_and_shrink_when_slow_between_their_bounds() {
        let fast = Duration::from_millis(1);
        let slow = Duration::from_millis(50);
        let mut piece = PIECE;
        for _ in 0..10 {
            piece = next_piece(piece, Kind::CopyFileRange, fast, true);
        }
        assert_eq!(piece, MAX_PIECE);
        assert_eq!(
            next_piece(PIECE, Kind::CopyFileRange, fast, false),
            PIECE,
            "a short piece (the end of a range) says nothing"
        );
        assert_eq!(
            next_piece(PIECE, Kind::CopyFileRange, Duration::from_millis(20), true),
            PIECE
        );
        for _ in 0..10 {
            piece = next_piece(piece, Kind::CopyFileRange, slow, true);
        }
        assert_eq!(piece, PIECE);
        assert_eq!(next_piece(PIECE, Kind::Sendfile, fast, true), PIECE);
    }

    #[test]
    fn refusals_of_a_pair_are_remembered_and_those_of_a_file_are_not() {
        let mut r = CopyRefusals::default();
        r.learn(libc::EXDEV, 1, 2);
        r.learn(libc::EINVAL, 3, 3);
        r.learn(libc::EBADF, 4, 4);
        assert_eq!(r.known(1, 2), Some(libc::EXDEV));
        assert_eq!(r.known(2, 1), None, "a pair has a direction");
        assert_eq!(r.known(3, 3), None);
        assert_eq!(r.known(4, 4), None);
    }

    #[test]
    fn an_explicit_strategy_refused_says_why_and_what_to_use() {
        let e = refused_error(Kind::CopyFileRange, libc::EXDEV);
        assert_eq!(e.kind, FailureKind::InvalidRequest);
        assert!(e.message.contains("copy-range"), "{}", e.message);
        assert!(e.message.contains("EXDEV"), "{}", e.message);
        assert!(e.message.contains("use auto or splice"), "{}", e.message);
        assert!(refusal(libc::EXDEV) && !refusal(libc::ENOSPC) && !refusal(libc::EIO));
    }
}
