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

use ringxfer_ipc::FailureKind;

use super::errno::{self, Action, Side};
use super::holes::Range;
use super::pipeline::{ring_failed, Pipeline, Returned, Strategy};
use super::step::CopyStep;
use super::{Endpoints, FdKind, Shape, TransferError};
use crate::io::buffer_pool::BufRef;
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
}

/// The rest of a range whose piece was given back (`reclaim`).
#[derive(Debug, Clone, Copy)]
struct SetAside {
    seq: u64,
    src_off: u64,
    dst_off: u64,
    len: u64,
    probing: bool,
}

/// What the in-kernel strategies keep beyond the pipeline's chunks.
pub(crate) struct InKernel {
    kind: Kind,
    total: Option<u64>,
    /// `user_data` of the ftruncate restoring a failed job's destination
    /// (or, with `sizing`, giving one that ends in a hole its size).
    restoring: Option<u64>,
    sizing: bool,
    /// The destination that ends in a hole has its size.
    sized: bool,
    /// The errno the syscall refused the files with, before any byte
    /// moved: `auto` goes on with splice.
    refused: Option<i32>,
    /// Giving every piece back: chunks set their ranges aside as their
    /// operations come back, and take no new work.
    reclaiming: bool,
    set_aside: Vec<SetAside>,
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
        }
    }

    fn refused(piece: Piece) -> Returned {
        Returned::Piece(piece)
    }

    fn give_back(chunk: RangeChunk, _failed: bool) -> Option<Returned> {
        Some(Returned::Piece(chunk.piece))
    }

    fn take_back(_: &mut RangeCopy, _: CopyStep, buf: BufRef, out: &mut Vec<Returned>) {
        out.push(Returned::Buffer(buf));
    }

    fn divert(p: &mut RangeCopy, slot: usize, out: &mut Vec<Returned>) -> bool {
        if p.s.reclaiming {
            p.set_chunk_aside(slot, out);
        }
        p.s.reclaiming
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
        let taken_back =
            p.s.reclaiming && (result == -libc::ECANCELED || errno::interrupted(-result));
        match step {
            // Cancelled to give the piece back: nothing moved.
            _ if taken_back => Ok(()),
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
        p.s.restoring = None;
        if std::mem::take(&mut p.s.sizing) {
            p.s.sized = true;
            if result < 0 && p.failure.is_none() {
                return Err(TransferError::os(
                    "ftruncate of the destination file to its final size (it ends in a hole)",
                    -result,
                ));
            }
            return Ok(true);
        }
        if result < 0 {
            tracing::warn!(
                "truncating the destination back to its {} bytes after a failure: {}",
                p.orig_dst_size,
                std::io::Error::from_raw_os_error(-result)
            );
        }
        Ok(false)
    }

    fn side_op(_: &RangeCopy) -> Option<u64> {
        None
    }

    fn after_pump(p: &mut RangeCopy, owner: Owner, io: &mut Io) {
        p.restore_destination(owner, io);
        p.size_destination(owner, io);
    }

    fn finished(p: &RangeCopy) -> bool {
        let sized = p.s.sized || !p.holes.resize_at_end(p.dst_start + p.end());
        p.s.restoring.is_none()
            && (p.failure.is_some() || (p.src_done && p.s.set_aside.is_empty() && sized))
    }

    fn piece(&self, bytes: u64) -> u64 {
        bytes.max(1)
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
        let open_end = shape.open_end(ends.src_kind);
        let in_order = !ends.dst_kind.seekable();
        let s = InKernel {
            kind,
            total: shape.total,
            restoring: None,
            sizing: false,
            sized: false,
            refused: None,
            reclaiming: false,
            set_aside: Vec::new(),
        };
        let mut copy = Pipeline::with(ends, &shape, 1, shape.dst_size, s);
        copy.in_order = in_order;
        copy.open_end = open_end;
        copy.src_done = shape.total == Some(0) && !open_end;
        copy
    }

    /// Whether this is a sendfile into a socket (else copy_file_range).
    pub(crate) fn sends(&self) -> bool {
        self.s.kind == Kind::Sendfile
    }

    /// What the job moves, for another strategy to take it over.
    pub(crate) fn shape(&self) -> Shape {
        Shape {
            src_start: self.src_start,
            dst_start: self.dst_start,
            total: self.s.total,
            length_requested: self.length_requested,
            dst_append: false,
            dst_size: self.orig_dst_size,
            holes: self.holes.plan(),
        }
    }

    /// The errno the syscall refused these files with, if the job failed
    /// only for that and moved nothing: `auto` goes on with splice.
    pub(crate) fn refused(&self) -> Option<i32> {
        self.s.refused.filter(|_| self.moved == self.holes.bytes)
    }

    /// Bytes the job will move, as far as is known: past a size hint, what
    /// the copies found so far.
    pub(crate) fn total(&self) -> Option<u64> {
        if self.open_end {
            return Some(self.eof.unwrap_or(self.high.max(self.s.total.unwrap_or(0))));
        }
        self.s.total
    }

    /// Whether another piece would let this job copy more at once.
    pub(crate) fn wants_piece(&self) -> bool {
        if self.failure.is_some() || self.s.reclaiming || self.live_chunks() == self.chunks.len() {
            return false;
        }
        if !self.s.set_aside.is_empty() || self.has_refill() {
            return true;
        }
        if self.src_done {
            return false;
        }
        // Past the size hint one chunk copies on at a time, a chunk that
        // finished its range: only a job left with none asks for a piece.
        // None while the map of the source's data is not in.
        self.range_ready(self.s.total.unwrap_or(0)) || (self.may_probe() && self.live_chunks() == 0)
    }

    /// Whether a chunk may start copying past the size hint: the hint is
    /// all handed out, no copy found the end yet, and no chunk probes now.
    fn may_probe(&self) -> bool {
        self.open_end
            && self.eof.is_none()
            && self.prober.is_none()
            && self.s.set_aside.is_empty()
            && self.assigned >= self.s.total.unwrap_or(0)
    }

    /// Gives every piece back, because the job stalled holding more than
    /// its user's share while another user waits: what is in flight is
    /// cancelled, each result says how far its copy got, and the rest of
    /// each range is set aside to be copied later, lowest sequence first.
    /// True if the pieces are on their way back.
    pub(crate) fn reclaim(&mut self, owner: Owner, io: &mut Io, out: &mut Vec<Returned>) -> bool {
        if self.failure.is_some() || self.live_chunks() == 0 || self.s.reclaiming {
            return false;
        }
        self.s.reclaiming = true;
        self.cancel_chunks(io);
        self.pump(owner, io, true, out);
        true
    }

    /// Sets an idle chunk's uncopied range aside and lets its piece go.
    fn set_chunk_aside(&mut self, slot: usize, out: &mut Vec<Returned>) {
        let Some(c) = self.chunks[slot].as_ref() else {
            return;
        };
        if c.s.to_copy > 0 {
            self.s.set_aside.push(SetAside {
                seq: c.seq,
                src_off: c.s.src_off,
                dst_off: c.s.dst_off,
                len: c.s.to_copy,
                probing: c.probing,
            });
        }
        self.release(slot, out);
        if self.live_chunks() == 0 {
            self.s.reclaiming = false;
        }
    }

    /// Hands an empty chunk the next range: one set aside (lowest sequence
    /// first, so a socket gets its bytes in order), the next data of the
    /// source (`Pipeline::next_range`: holes skipped), or a piece past its
    /// size hint. False if there is none.
    fn take_range(&mut self, slot: usize) -> bool {
        let cap = self.cap();
        if self.take_set_aside(slot) {
            return true;
        }
        if let Some(r) = self.next_range(cap, self.s.total.unwrap_or(0)) {
            self.assign(slot, r);
            self.src_done = !self.open_end && self.all_assigned();
            return true;
        }
        if !self.may_probe() {
            return false;
        }
        // Past the size hint: copy on, a piece at a time, until a copy
        // returns 0 (procfs says 0, a file that grows).
        let rel = self.assigned;
        self.assigned += cap;
        self.assign(
            slot,
            Range {
                rel,
                src_off: self.src_start + rel,
                dst_off: self.dst_start + rel,
                len: cap,
            },
        );
        if let Some(chunk) = self.chunk(slot) {
            chunk.probing = true;
        }
        self.prober = Some(slot);
        true
    }

    /// Whether every range of the job was handed out (holes skipped, none
    /// waiting for a map or to be copied after a refused punch).
    fn all_assigned(&self) -> bool {
        self.assigned >= self.s.total.unwrap_or(0) && !self.has_refill()
    }

    /// Where the source's bytes end, from the start of the transfer.
    fn end(&self) -> u64 {
        let total = self.s.total.unwrap_or(0);
        if self.open_end {
            self.eof.unwrap_or(total)
        } else {
            total
        }
    }

    /// Once every byte is in, truncates a destination that ends in a hole
    /// (which no copy reached) to its final size.
    fn size_destination(&mut self, owner: Owner, io: &mut Io) {
        if self.failure.is_some()
            || self.s.sized
            || !self.holes.resize_at_end(self.dst_start + self.end())
            || self.s.restoring.is_some()
            || self.live_chunks() > 0
            || !self.s.set_aside.is_empty()
            || self.holes.busy(false)
            || !self.src_done
        {
            return;
        }
        let size = self.orig_dst_size.max(self.dst_start + self.end());
        match io.ftruncate(
            owner,
            CopyStep::Truncate.tag(),
            self.ends.shared_dst(),
            size,
        ) {
            Ok(ud) => {
                self.s.restoring = Some(ud);
                self.s.sizing = true;
            }
            Err(e) => {
                self.failure.get_or_insert(ring_failed::<InKernel>(e));
            }
        }
    }

    /// Starts the job: the map of a sparse source's data first.
    pub(crate) fn start(&mut self, owner: Owner, io: &mut Io) {
        self.drive_holes(owner, io);
    }

    fn take_set_aside(&mut self, slot: usize) -> bool {
        if let Some(eof) = self.eof {
            // Nothing is copied past an end of file a copy found.
            let end = self.src_start + eof;
            self.s.set_aside.retain(|r| r.src_off < end);
        }
        let set_aside = &mut self.s.set_aside;
        let Some(i) = (0..set_aside.len()).min_by_key(|&i| set_aside[i].seq) else {
            return false;
        };
        let r = set_aside.swap_remove(i);
        let Some(c) = self.chunk(slot) else {
            return false;
        };
        c.seq = r.seq;
        c.s.src_off = r.src_off;
        c.s.dst_off = r.dst_off;
        c.s.to_copy = r.len;
        c.probing = r.probing;
        if r.probing {
            self.prober = Some(slot);
        }
        true
    }

    /// Gives the chunk the next `len` bytes of the source.
    /// Gives the chunk range `r`.
    fn assign(&mut self, slot: usize, r: Range) {
        let seq = self.take_seq();
        if let Some(chunk) = self.chunk(slot) {
            chunk.seq = seq;
            chunk.s.src_off = r.src_off;
            chunk.s.dst_off = r.dst_off;
            chunk.s.to_copy = r.len;
        }
    }

    /// The most one piece copies.
    fn cap(&self) -> u64 {
        PIECE.min(self.piece_limit)
    }

    /// Queues the next piece of the chunk's range on a worker.
    fn copy_piece(&mut self, slot: usize, owner: Owner, io: &mut Io) -> Result<(), TransferError> {
        let (ends, kind, cap) = (Rc::clone(&self.ends), self.s.kind, self.cap());
        let Some(chunk) = self.chunk(slot) else {
            return Ok(());
        };
        let len = chunk.s.to_copy.min(cap) as usize;
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
        self.high = self.high.max(src_off - src_start);
        if open_end {
            return self.check_eof();
        }
        Ok(())
    }

    /// A copy returned 0: the source's end.
    fn piece_end(&mut self, slot: usize) -> Result<(), TransferError> {
        let open_end = self.open_end;
        let Some(chunk) = self.chunk(slot) else {
            return Ok(());
        };
        let reached = chunk.s.src_off;
        if !open_end {
            return Err(self.short_source(reached, self.s.total.unwrap_or(0)));
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

    /// After a failure, once nothing is in flight, truncates a regular-file
    /// destination that was written back to its size at admission, as
    /// every strategy does.
    fn restore_destination(&mut self, owner: Owner, io: &mut Io) {
        if self.failure.is_none()
            || !self.touched
            || self.ends.dst_kind != FdKind::File
            || self.live_chunks() > 0
            || self.s.restoring.is_some()
        {
            return;
        }
        self.touched = false;
        match io.ftruncate(
            owner,
            CopyStep::Truncate.tag(),
            self.ends.shared_dst(),
            self.orig_dst_size,
        ) {
            Ok(ud) => self.s.restoring = Some(ud),
            Err(e) => tracing::warn!("queueing the truncate of a failed job's destination: {e}"),
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

#[cfg(test)]
mod tests {
    use super::*;

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
