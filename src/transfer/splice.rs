//! The splice strategy: source -> pipe -> destination, a chunk at a time.
//!
//! A chunk is a pooled pipe plus the range of bytes it is carrying. When the
//! source is seekable and its length is known ("ranged"), several chunks read
//! different ranges at once and, into a seekable destination, write them at
//! their own offsets, so reads and writes of different chunks overlap. A
//! stream source (socket, pipe, or a file whose size is unknown) is read one
//! splice at a time, because only the kernel knows where it is; a stream
//! destination is written strictly in the order the data was read, which a
//! sequence number per chunk enforces.
//!
//! Each chunk alternates: fill the pipe, drain it, repeat. A ranged read
//! whose bytes may be written at once has its write linked behind it; a
//! short splice (common: a pipe takes whole pages) cancels the linked half,
//! and the chunk then writes what the pipe really holds. Stream reads are
//! often short and are not linked.
//!
//! The chunk bookkeeping is the pipeline's (pipeline.rs): this file is what
//! the splice strategy adds to it.

use std::rc::Rc;

use ringxfer_ipc::FailureKind;

use super::errno::{self, Action, Side};
use super::pipeline::{ring_failed, Chunk, Pipeline, Strategy};
use super::ranges::{RangeStrategy, Ranges, Span, Taken};
use super::step::CopyStep;
use super::{Endpoints, FdKind, Shape, TransferError};
use crate::io::fd::SharedFd;
use crate::io::ops::Owner;
use crate::io::pipe_pool::Pipe;
use crate::io::queue::SpliceEnd;
use crate::io::Io;

pub(crate) use super::pipeline::Returned;

/// A transfer moved by splice(2) through pooled pipes.
pub(crate) type SpliceCopy = Pipeline<Splice>;

/// A chunk's pipe and where the bytes it carries come from and go to.
pub(crate) struct PipeChunk {
    pipe: Rc<Pipe>,
    /// Next source offset to read (seekable sources).
    src_off: u64,
    /// Bytes of the chunk's range not yet in the pipe (ranged mode).
    to_read: u64,
    /// Bytes in the pipe not yet written.
    in_pipe: u64,
    /// Next destination offset to write (seekable destinations).
    dst_off: u64,
    /// Bytes the last read asked for.
    asked: u32,
}

/// What the splice strategy keeps beyond the pipeline's chunk bookkeeping.
pub(crate) struct Splice {
    /// The source is seekable and its length known: several chunks read
    /// different ranges at once.
    ranged: bool,
    /// A streamed source is known to have bytes (or its end) to read. While
    /// it is not, the job waits on a readiness poll and holds no pipe, so a
    /// silent peer cannot sit on pipes that other jobs need.
    src_ready: bool,
    /// `user_data` of the job's readiness poll on a streamed source.
    ready_poll: Option<u64>,
    /// The source refused splice (EINVAL) before any byte moved: `auto`
    /// moves the job to the read()+write() rung.
    source_refused: bool,
    /// The total, ranges set aside, the destination's final size (ranges.rs).
    ranges: Ranges,
}

impl Strategy for Splice {
    type Lent = Rc<Pipe>;
    type Chunk = PipeChunk;
    const OP_NAME: &'static str = "splice";

    fn chunk(pipe: Rc<Pipe>) -> PipeChunk {
        PipeChunk {
            pipe,
            src_off: 0,
            to_read: 0,
            in_pipe: 0,
            dst_off: 0,
            asked: 0,
        }
    }

    fn refused(pipe: Rc<Pipe>) -> Returned {
        Returned::Clean(pipe)
    }

    fn give_back(chunk: PipeChunk, failed: bool) -> Option<Returned> {
        Some(if chunk.in_pipe > 0 || failed {
            Returned::Dirty(chunk.pipe)
        } else {
            Returned::Clean(chunk.pipe)
        })
    }

    fn divert(p: &mut SpliceCopy, slot: usize, out: &mut Vec<Returned>) -> bool {
        p.divert_reclaimed(slot, out)
    }

    /// Moves one idle chunk on by one operation, if it has one to do. With
    /// `yield_pipes`, other jobs are waiting for pipes, so a chunk that has
    /// finished its range gives its pipe back instead of taking the next
    /// range: pipes go round the jobs in turn.
    fn step(
        p: &mut SpliceCopy,
        slot: usize,
        owner: Owner,
        io: &mut Io,
        yield_pipes: bool,
        out: &mut Vec<Returned>,
    ) -> Result<(), TransferError> {
        let cap = p.cap(slot);
        let Some(chunk) = p.chunks[slot].as_ref() else {
            return Ok(());
        };
        let (seq, in_pipe, to_read) = (chunk.seq, chunk.s.in_pipe, chunk.s.to_read);
        if in_pipe > 0 {
            if p.in_turn(seq) {
                p.touched = true;
                p.write_out(slot, owner, io)?;
            }
            return Ok(());
        }
        if p.s.ranged && to_read > 0 {
            let write_now = p.in_turn(seq);
            return p.read_into(slot, to_read.min(cap) as u32, write_now, owner, io);
        }
        // The chunk is empty and its range is done: take more work, or let go.
        let busy = if p.s.ranged {
            !yield_pipes && p.take_range(slot, owner, io)?
        } else {
            !p.src_done && !yield_pipes && p.next_stream_read(slot, owner, io)?
        };
        if busy {
            return Ok(());
        }
        p.release(slot, out);
        if !p.s.ranged {
            p.arm_ready_poll(owner, io)?;
        }
        Ok(())
    }

    fn complete(
        p: &mut SpliceCopy,
        step: CopyStep,
        slot: usize,
        result: i32,
        linked: bool,
    ) -> Result<(), TransferError> {
        match step {
            // Cancelled to give the pipe back: nothing moved.
            _ if p.taken_back(result) => Ok(()),
            CopyStep::In(_) => p.after_read(slot, result),
            // The read before it moved less than asked (or failed), which
            // cancels the linked write; the chunk writes what it really holds.
            CopyStep::Out(_) if linked && result == -libc::ECANCELED => Ok(()),
            CopyStep::Out(_) => p.after_write(slot, result),
            // Readiness arrived (or the poll failed, and the retried splice
            // will report the real error): the chunk simply tries again.
            _ => Ok(()),
        }
    }

    fn side(p: &mut SpliceCopy, step: CopyStep, result: i32) -> Result<bool, TransferError> {
        match step {
            CopyStep::Truncate => p.truncated(result),
            CopyStep::Ready => {
                // Readable, at its end, or in error: a read will tell which.
                p.s.ready_poll = None;
                p.s.src_ready = true;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    fn side_op(p: &SpliceCopy) -> Option<u64> {
        p.s.ready_poll
    }

    fn after_pump(p: &mut SpliceCopy, owner: Owner, io: &mut Io) {
        p.settle_destination(owner, io);
    }

    /// The readiness poll (`side_op`) is waited for too.
    fn finished(p: &SpliceCopy) -> bool {
        p.ranges_finished()
    }
}

impl RangeStrategy for Splice {
    fn ranges(&self) -> &Ranges {
        &self.ranges
    }

    fn ranges_mut(&mut self) -> &mut Ranges {
        &mut self.ranges
    }

    /// The bytes a cancelled write left in the pipe are read again: the
    /// pipe, handed back dirty, is dropped with them.
    fn rest(c: &PipeChunk) -> Span {
        Span {
            src_off: c.src_off - c.in_pipe,
            dst_off: c.dst_off,
            len: c.in_pipe + c.to_read,
        }
    }

    fn start(c: &mut PipeChunk, span: Span) {
        c.src_off = span.src_off;
        c.dst_off = span.dst_off;
        c.to_read = span.len;
        c.in_pipe = 0;
    }

    /// The source's end found, or every range of a job of known length
    /// handed out.
    fn all_read(p: &SpliceCopy) -> bool {
        p.src_done || (p.s.ranged && !p.open_end && p.all_assigned())
    }

    /// Only a ranged job (a seekable source): a stream source's bytes in a
    /// pipe exist nowhere else, and the job keeps its pipes.
    fn reclaimable(p: &SpliceCopy) -> bool {
        p.s.ranged
    }
}

impl SpliceCopy {
    /// Prepares the transfer; it moves nothing until it is lent a pipe.
    /// `max_chunks` pipes at most are used at once.
    pub(crate) fn new(ends: Rc<Endpoints>, plan: Shape, max_chunks: usize) -> SpliceCopy {
        let ranged = ends.src_kind.seekable() && plan.total.is_some();
        // A streamed source is read one splice at a time, so a second chunk
        // (one writing while the other reads) is all it can use.
        let max_chunks = if ranged {
            max_chunks.max(1)
        } else {
            max_chunks.clamp(1, 2)
        };
        let splice = Splice {
            ranged,
            src_ready: false,
            ready_poll: None,
            source_refused: false,
            ranges: Ranges::new(plan.total),
        };
        Pipeline::with_ranges(ends, &plan, max_chunks, splice)
    }

    /// Whether the job failed only because the source refused splice, with
    /// nothing written: the read()+write() rung can take it over. Nothing
    /// was written when nothing was moved: a write linked behind a read
    /// that failed is cancelled, and a write that fails writes nothing.
    pub(crate) fn source_refused(&self) -> bool {
        self.s.source_refused && self.moved == self.holes.bytes
    }

    /// Whether another pipe would let this job move more bytes at once.
    pub(crate) fn wants_pipe(&self) -> bool {
        if self.s.ranged {
            return self.wants_range();
        }
        if self.failure.is_some()
            || self.s.ranges.reclaiming
            || self.live_chunks() == self.chunks.len()
            || self.src_done
        {
            return false;
        }
        // One pipe reads while another writes; a second pipe is only worth
        // having once the first is busy, and none before the source has
        // something to read.
        self.s.src_ready && self.reader.is_none()
    }

    /// Starts what needs no pipe: a streamed source is first polled for
    /// readiness. Call once, right after admission.
    pub(crate) fn start(&mut self, owner: Owner, io: &mut Io) {
        if self.s.ranged {
            self.drive_holes(owner, io);
        }
        if !self.s.ranged && !self.src_done {
            if let Err(e) = self.arm_ready_poll(owner, io) {
                self.failure.get_or_insert(e);
            }
        }
    }

    fn arm_ready_poll(&mut self, owner: Owner, io: &mut Io) -> Result<(), TransferError> {
        if self.s.ready_poll.is_some()
            || self.reader.is_some()
            || self.s.src_ready
            || self.src_done
            || self.failure.is_some()
        {
            return Ok(());
        }
        let kind = CopyStep::Ready.tag();
        let ud = io
            .poll(owner, kind, self.ends.shared_src(), libc::POLLIN)
            .map_err(ring_failed::<Splice>)?;
        self.s.ready_poll = Some(ud);
        Ok(())
    }

    fn after_read(&mut self, slot: usize, result: i32) -> Result<(), TransferError> {
        if !self.s.ranged {
            self.reader = None;
        }
        if result < 0 {
            return self.read_failed(slot, -result);
        }
        if result == 0 {
            return self.read_end(slot);
        }
        let n = result as u64;
        let (ranged, open_end, src_start) = (self.s.ranged, self.open_end, self.src_start);
        let Some(chunk) = self.chunk(slot) else {
            return Ok(());
        };
        chunk.s.in_pipe += n;
        if !ranged {
            return self.after_stream_read(slot, n);
        }
        chunk.s.src_off += n;
        chunk.s.to_read -= n.min(chunk.s.to_read);
        let (src_off, done_probing) = (chunk.s.src_off, chunk.probing && chunk.s.to_read == 0);
        if done_probing {
            // The file had a whole piece more: the next piece probes on.
            chunk.probing = false;
            self.prober = None;
        }
        self.high = self.high.max(src_off - src_start);
        if open_end {
            return self.check_eof();
        }
        Ok(())
    }

    /// A read of a stream source brought `n` bytes into the chunk's pipe.
    fn after_stream_read(&mut self, slot: usize, n: u64) -> Result<(), TransferError> {
        let seq = self.take_seq();
        let dst_off = self.dst_start + self.assigned;
        let Some(chunk) = self.chunk(slot) else {
            return Ok(());
        };
        // A stream that gave less than asked has nothing more right now;
        // the next read waits for readiness first.
        let short = n < u64::from(chunk.s.asked);
        chunk.s.dst_off = dst_off;
        chunk.seq = seq;
        if short {
            self.s.src_ready = false;
        }
        self.assigned += n;
        if self.s.ranges.total.is_some_and(|t| self.assigned >= t) {
            self.src_done = true;
        }
        Ok(())
    }

    /// A read returned 0: the source's end.
    fn read_end(&mut self, slot: usize) -> Result<(), TransferError> {
        let (ranged, open_end) = (self.s.ranged, self.open_end);
        let stream_at = self.src_start + self.assigned;
        let Some(chunk) = self.chunk(slot) else {
            return Ok(());
        };
        let reached = if ranged { chunk.s.src_off } else { stream_at };
        if open_end {
            // End of file, wherever the size hint said it would be.
            chunk.s.to_read = 0;
            if chunk.probing {
                chunk.probing = false;
                self.prober = None;
            }
            self.found_eof(reached - self.src_start);
            self.src_done = true;
            return self.check_eof();
        }
        let total = self.s.ranges.total.unwrap_or(0);
        if ranged || (self.length_requested && self.assigned < total) {
            return Err(self.short_source(reached, total));
        }
        self.src_done = true;
        Ok(())
    }

    /// A read of the source failed with `errno`: retry, wait, or fail.
    fn read_failed(&mut self, slot: usize, errno: i32) -> Result<(), TransferError> {
        let Some(chunk) = self.chunks[slot].as_ref() else {
            return Ok(());
        };
        let kind = self.ends.src_kind;
        let offset = kind.seekable().then_some(chunk.s.src_off);
        match errno::action(errno, Side::Source) {
            Action::Retry => Ok(()),
            Action::WaitReadable if !self.s.ranged => {
                // A non-blocking stream had nothing after all: wait for it
                // without a pipe.
                self.s.src_ready = false;
                Ok(())
            }
            // A file does not say EAGAIN unless the client made it
            // non-blocking; the worker blocks in splice, so try again.
            Action::WaitReadable | Action::WaitWritable => Ok(()),
            Action::Fail if errno == libc::EINVAL && self.moved == self.holes.bytes => {
                self.s.source_refused = true;
                Err(splice_refused(kind))
            }
            Action::Fail => Err(TransferError::os(
                format!("splice from the source {kind} into a pipe{}", at(offset)),
                errno,
            )),
        }
    }

    fn after_write(&mut self, slot: usize, result: i32) -> Result<(), TransferError> {
        let (dst_kind, ranged) = (self.ends.dst_kind, self.s.ranged);
        let Some(chunk) = self.chunk(slot) else {
            return Ok(());
        };
        if result < 0 {
            return match errno::action(-result, Side::Destination) {
                Action::Retry => Ok(()),
                Action::WaitWritable | Action::WaitReadable => {
                    if !dst_kind.seekable() {
                        chunk.wait = Some(libc::POLLOUT);
                    }
                    Ok(())
                }
                Action::Fail => Err(TransferError::os(
                    format!(
                        "splice from a pipe to the destination {dst_kind}{}",
                        at(dst_kind.seekable().then_some(chunk.s.dst_off))
                    ),
                    -result,
                )),
            };
        }
        let n = (result as u64).min(chunk.s.in_pipe);
        if n == 0 {
            return Err(TransferError::new(
                FailureKind::Io,
                format!(
                    "the destination {dst_kind} accepted 0 bytes of {} waiting in the pipe",
                    chunk.s.in_pipe
                ),
            ));
        }
        chunk.s.in_pipe -= n;
        chunk.s.dst_off += n;
        let unit_done = chunk.s.in_pipe == 0 && (!ranged || chunk.s.to_read == 0);
        self.moved += n;
        if unit_done {
            self.write_seq += 1;
        }
        Ok(())
    }

    /// The most one splice of the chunk's pipe moves.
    fn cap(&self, slot: usize) -> u64 {
        let capacity = self.chunks[slot].as_ref().map_or(0, |c| c.s.pipe.capacity);
        u64::from(capacity).min(self.piece_limit)
    }

    /// Hands an empty chunk of a ranged job its next range (`hand_out`) and
    /// starts reading it. False if there is none.
    fn take_range(
        &mut self,
        slot: usize,
        owner: Owner,
        io: &mut Io,
    ) -> Result<bool, TransferError> {
        let cap = self.cap(slot);
        let Some(taken) = self.hand_out(slot, cap) else {
            return Ok(false);
        };
        let Some(chunk) = self.chunks[slot].as_ref() else {
            return Ok(true);
        };
        let write_now = match taken {
            // Past the size hint: not linked, this read is expected short.
            Taken::Probe => false,
            // The rest of a range whose pipe was given back.
            Taken::SetAside => !chunk.probing && self.in_turn(chunk.seq),
            Taken::Next => self.in_turn(chunk.seq),
        };
        let len = chunk.s.to_read.min(cap);
        if write_now {
            self.touched = true;
        }
        self.read_into(slot, len as u32, write_now, owner, io)?;
        Ok(true)
    }

    /// Starts the chunk reading a streamed source, if it may now: true if
    /// it did, or if it is to write what another chunk is reading.
    fn next_stream_read(
        &mut self,
        slot: usize,
        owner: Owner,
        io: &mut Io,
    ) -> Result<bool, TransferError> {
        let cap = self.cap(slot);
        if self.reader.is_some() {
            // Another chunk is reading the stream; this one writes next.
            return Ok(true);
        }
        if !self.s.src_ready {
            return Ok(false);
        }
        let left = self
            .s
            .ranges
            .total
            .map_or(cap, |t| (t - self.assigned).min(cap));
        let src_off = self.src_start + self.assigned;
        if let Some(chunk) = self.chunk(slot) {
            chunk.s.src_off = src_off;
        }
        self.reader = Some(slot);
        // Stream reads are often short, which would break a link every
        // time; they are not linked.
        self.read_into(slot, left as u32, false, owner, io)?;
        Ok(true)
    }

    /// Queues a splice of what the chunk's pipe holds to the destination.
    fn write_out(&mut self, slot: usize, owner: Owner, io: &mut Io) -> Result<(), TransferError> {
        let ends = Rc::clone(&self.ends);
        let Some(chunk) = self.chunk(slot) else {
            return Ok(());
        };
        let len = chunk.s.in_pipe.min(u64::from(u32::MAX)) as u32;
        let (src, dst) = pipe_to_dst(chunk, &ends);
        let kind = CopyStep::Out(slot).tag();
        let ud = io.splice(owner, kind, src, dst, len);
        chunk.busy = Some(ud.map_err(ring_failed::<Splice>)?);
        Ok(())
    }

    /// Queues a read of `len` bytes into the chunk's pipe; with `then_write`,
    /// a write of the same length to the destination is linked behind it.
    fn read_into(
        &mut self,
        slot: usize,
        len: u32,
        then_write: bool,
        owner: Owner,
        io: &mut Io,
    ) -> Result<(), TransferError> {
        let ends = Rc::clone(&self.ends);
        let Some(chunk) = self.chunk(slot) else {
            return Ok(());
        };
        let src = SpliceEnd {
            fd: ends.shared_src(),
            offset: ends.src_kind.seekable().then_some(chunk.s.src_off),
        };
        let dst = SpliceEnd {
            fd: SharedFd::of(&chunk.s.pipe, Pipe::write_end),
            offset: None,
        };
        let (read, write) = (CopyStep::In(slot).tag(), CopyStep::Out(slot).tag());
        chunk.s.asked = len;
        if then_write {
            let out = pipe_to_dst(chunk, &ends);
            let (a, b) = io
                .splice_linked(owner, (read, write), (src, dst), out, len)
                .map_err(ring_failed::<Splice>)?;
            chunk.busy = Some(a);
            chunk.linked = Some(b);
            return Ok(());
        }
        let ud = io.splice(owner, read, src, dst, len);
        chunk.busy = Some(ud.map_err(ring_failed::<Splice>)?);
        Ok(())
    }
}

/// The two ends of a splice from the chunk's pipe to the destination.
fn pipe_to_dst(chunk: &Chunk<PipeChunk>, ends: &Rc<Endpoints>) -> (SpliceEnd, SpliceEnd) {
    let src = SpliceEnd {
        fd: SharedFd::of(&chunk.s.pipe, Pipe::read_end),
        offset: None,
    };
    let dst = SpliceEnd {
        fd: ends.shared_dst(),
        offset: ends.dst_kind.seekable().then_some(chunk.s.dst_off),
    };
    (src, dst)
}

fn at(offset: Option<u64>) -> String {
    offset
        .map(|o| format!(" at offset {o}"))
        .unwrap_or_default()
}

/// The refusal of a source that does not splice (procfs files without
/// splice_read, /dev/null): nothing was written, and `auto` moves such a job
/// to buffered read() and write().
fn splice_refused(kind: FdKind) -> TransferError {
    let who = match kind {
        FdKind::File => "its file system refuses splice".to_string(),
        other => format!("the {other} refuses splice"),
    };
    TransferError {
        kind: FailureKind::InvalidRequest,
        os_error: Some(libc::EINVAL),
        message: format!(
            "the splice strategy cannot read this source: {who} (EINVAL); use auto or buffered"
        ),
    }
}
