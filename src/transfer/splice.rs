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
//! Each chunk has at most one operation in flight and alternates: fill the
//! pipe, drain it, repeat. Splices are not linked: a short splice (common:
//! a pipe takes whole pages, and sockets return what they have) would cancel
//! the linked half, so every result is looked at before the next step.

use std::rc::Rc;

use ringxfer_ipc::FailureKind;

use super::errno::{self, Action, Side};
use super::{Endpoints, FdKind, Shape, TransferError};
use crate::io::ops::Owner;
use crate::io::pipe_pool::Pipe;
use crate::io::queue::SpliceEnd;
use crate::io::Io;
use crate::transfer::step::CopyStep;

/// One pipe and the bytes it is carrying.
struct Chunk {
    pipe: Rc<Pipe>,
    /// Order of this chunk's data in the stream; a stream destination takes
    /// chunks strictly in this order.
    seq: u64,
    /// Next source offset to read (seekable sources).
    src_off: u64,
    /// Bytes of the chunk's range not yet in the pipe (ranged mode).
    to_read: u64,
    /// Bytes in the pipe not yet written.
    in_pipe: u64,
    /// Next destination offset to write (seekable destinations).
    dst_off: u64,
    /// `user_data` of the operation in flight on this chunk.
    busy: Option<u64>,
    /// `user_data` of a write linked behind the read in `busy`.
    linked: Option<u64>,
    /// The destination stream said EAGAIN: wait until it is writable.
    wait_for: Option<i16>,
    /// Bytes the last read asked for.
    asked: u32,
    /// The chunk reads past the source's size hint, until end of file (see
    /// `SpliceCopy::open_end`).
    probing: bool,
}

impl Chunk {
    fn is_busy(&self) -> bool {
        self.busy.is_some() || self.linked.is_some()
    }
}

/// The unwritten rest of a chunk's range, set aside when the job gave its
/// pipes back (`SpliceCopy::reclaim`): read again from the source later.
#[derive(Debug, Clone, Copy)]
struct SetAside {
    seq: u64,
    src_off: u64,
    dst_off: u64,
    len: u64,
    probing: bool,
}

/// The chunk index of the job's own readiness poll, which belongs to no chunk.
const JOB_LEVEL: u16 = u16::MAX;

/// A pool resource a job hands back.
pub enum Returned {
    /// An empty pipe: back to the pool.
    Clean(Rc<Pipe>),
    /// A pipe that may hold stray bytes of a failed job: close it and make another.
    Dirty(Rc<Pipe>),
    /// A buffer whose last operation has completed.
    Buffer(crate::io::buffer_pool::BufRef),
}

/// A transfer moved by splice(2) through pooled pipes.
pub struct SpliceCopy {
    ends: Rc<Endpoints>,
    ranged: bool,
    src_start: u64,
    dst_start: u64,
    total: Option<u64>,
    length_requested: bool,
    /// Bytes handed to chunks (ranged) or read from the source (streamed).
    assigned: u64,
    /// No more bytes will be read: end reached, or end of file.
    src_done: bool,
    /// The chunk whose read of a streamed source is in flight: a stream is
    /// read by one splice at a time, or its bytes would interleave.
    reader: Option<usize>,
    /// A streamed source is known to have bytes (or its end) to read. While
    /// it is not, the job waits on a readiness poll and holds no pipe, so a
    /// silent peer cannot sit on pipes that other jobs need.
    src_ready: bool,
    /// `user_data` of the job's readiness poll on a streamed source.
    ready_poll: Option<u64>,
    next_seq: u64,
    write_seq: u64,
    chunks: Vec<Option<Chunk>>,
    /// Bytes written to the destination.
    pub moved: u64,
    failure: Option<TransferError>,
    /// The most one splice moves (a rate limit's piece; else the pipe's size).
    pub piece_limit: u64,
    /// `total` is a regular file's size hint, not a requested length: the
    /// file is read until a read returns 0, which may come before the hint
    /// (sysfs, a file that shrank) or after it (procfs, a file that grows).
    open_end: bool,
    /// Source offset where a read found end of file (open-ended jobs).
    eof: Option<u64>,
    /// Highest source offset a read returned bytes up to.
    high: u64,
    /// The chunk reading past the hint; one at a time, as a read loop would.
    prober: Option<usize>,
    /// The destination's size at admission, restored if the job fails after
    /// writing (regular-file destinations).
    orig_dst_size: u64,
    /// A write was queued: a failure truncates the destination back.
    touched: bool,
    /// `user_data` of that restoring ftruncate.
    restoring: Option<u64>,
    /// The source refused splice (EINVAL) before any byte moved: `auto`
    /// moves the job to the read()+write() rung.
    source_refused: bool,
    /// Giving every pipe back (`reclaim`): chunks set their ranges aside as
    /// their operations come back, and take no new work.
    reclaiming: bool,
    /// Ranges set aside, to be read again before any new one.
    set_aside: Vec<SetAside>,
}

impl SpliceCopy {
    /// Prepares the transfer; it moves nothing until it is lent a pipe.
    /// `max_chunks` pipes at most are used at once.
    pub fn new(ends: Rc<Endpoints>, plan: Shape, max_chunks: usize) -> SpliceCopy {
        let ranged = ends.src_kind.seekable() && plan.total.is_some();
        let open_end = plan.open_end(ends.src_kind);
        // A streamed source is read one splice at a time, so a second chunk
        // (one writing while the other reads) is all it can use.
        let max_chunks = if ranged {
            max_chunks.max(1)
        } else {
            max_chunks.clamp(1, 2)
        };
        let src_done = plan.total == Some(0) && !open_end;
        SpliceCopy {
            ends,
            ranged,
            src_start: plan.src_start,
            dst_start: plan.dst_start,
            total: plan.total,
            length_requested: plan.length_requested,
            assigned: 0,
            src_done,
            reader: None,
            src_ready: false,
            ready_poll: None,
            next_seq: 0,
            write_seq: 0,
            chunks: (0..max_chunks).map(|_| None).collect(),
            moved: 0,
            failure: None,
            piece_limit: u64::MAX,
            open_end,
            eof: None,
            high: 0,
            prober: None,
            orig_dst_size: plan.dst_size,
            touched: false,
            restoring: None,
            source_refused: false,
            reclaiming: false,
            set_aside: Vec::new(),
        }
    }

    /// What the job moves, for another strategy to take it over.
    pub fn shape(&self) -> Shape {
        Shape {
            src_start: self.src_start,
            dst_start: self.dst_start,
            total: self.total,
            length_requested: self.length_requested,
            dst_append: false,
            dst_size: self.orig_dst_size,
        }
    }

    /// Whether the job failed only because the source refused splice, with
    /// nothing written: the read()+write() rung can take it over.
    pub fn source_refused(&self) -> bool {
        self.source_refused && !self.touched && self.moved == 0
    }

    pub fn endpoints(&self) -> Rc<Endpoints> {
        Rc::clone(&self.ends)
    }

    /// Bytes the job will move, as far as is known: past a size hint, what
    /// the reads found so far.
    pub fn total(&self) -> Option<u64> {
        if self.open_end {
            let found = self.eof.map(|e| e.saturating_sub(self.src_start));
            return Some(
                found.unwrap_or(
                    self.high
                        .saturating_sub(self.src_start)
                        .max(self.total.unwrap_or(0)),
                ),
            );
        }
        self.total
    }

    fn live_chunks(&self) -> usize {
        self.chunks.iter().filter(|c| c.is_some()).count()
    }

    fn in_flight(&self) -> usize {
        self.chunks.iter().flatten().filter(|c| c.is_busy()).count()
    }

    /// Whether another pipe would let this job move more bytes at once.
    pub fn wants_pipe(&self) -> bool {
        if self.failure.is_some() || self.reclaiming || self.live_chunks() == self.chunks.len() {
            return false;
        }
        if self.ranged && !self.set_aside.is_empty() {
            return true;
        }
        if self.src_done {
            return false;
        }
        if self.ranged {
            // Reading past the hint is done by a chunk that finished its
            // range, so a job holds no more pipes than before for it; only
            // a job left with none (it yielded them) asks for one to probe.
            self.assigned < self.total.unwrap_or(0) || (self.may_probe() && self.live_chunks() == 0)
        } else {
            // One pipe reads while another writes; a second pipe is only
            // worth having once the first is busy, and none before the
            // source has something to read.
            self.src_ready && self.reader.is_none()
        }
    }

    /// Whether a chunk may start reading past the size hint: the hint is
    /// all handed out, no read found the end yet, and no chunk probes now.
    fn may_probe(&self) -> bool {
        self.open_end
            && self.eof.is_none()
            && self.prober.is_none()
            && self.set_aside.is_empty()
            && self.assigned >= self.total.unwrap_or(0)
    }

    /// Whether the job has no chunk and nothing in flight, so it can end.
    pub fn is_finished(&self) -> bool {
        self.live_chunks() == 0
            && self.ready_poll.is_none()
            && self.restoring.is_none()
            && (self.failure.is_some() || (self.src_done && self.set_aside.is_empty()))
    }

    /// Starts what needs no pipe: a streamed source is first polled for
    /// readiness. Call once, right after admission.
    pub fn start(&mut self, owner: Owner, io: &mut Io) {
        if !self.ranged && !self.src_done {
            if let Err(e) = self.arm_ready_poll(owner, io) {
                self.failure.get_or_insert(e);
            }
        }
    }

    fn arm_ready_poll(&mut self, owner: Owner, io: &mut Io) -> Result<(), TransferError> {
        if self.ready_poll.is_some()
            || self.reader.is_some()
            || self.src_ready
            || self.src_done
            || self.failure.is_some()
        {
            return Ok(());
        }
        let ends = Rc::clone(&self.ends);
        let ud = io
            .poll(
                owner,
                CopyStep::PollIn(JOB_LEVEL).tag(),
                &ends,
                raw(&ends.src),
                libc::POLLIN,
            )
            .map_err(ring_failed)?;
        self.ready_poll = Some(ud);
        Ok(())
    }

    /// The outcome, once finished: the error, or `None` for success.
    pub fn failure(&self) -> Option<&TransferError> {
        self.failure.as_ref()
    }

    /// Gives the job a pipe and starts using it.
    pub fn add_pipe(
        &mut self,
        pipe: Rc<Pipe>,
        owner: Owner,
        io: &mut Io,
        yield_pipes: bool,
        out: &mut Vec<Returned>,
    ) {
        match self.chunks.iter().position(|c| c.is_none()) {
            Some(slot) => {
                self.chunks[slot] = Some(Chunk {
                    pipe,
                    seq: 0,
                    src_off: 0,
                    to_read: 0,
                    in_pipe: 0,
                    dst_off: 0,
                    busy: None,
                    linked: None,
                    wait_for: None,
                    asked: 0,
                    probing: false,
                });
                self.pump(owner, io, yield_pipes, out);
            }
            None => out.push(Returned::Clean(pipe)),
        }
    }

    /// Records a failure (the first one wins) and asks the kernel to cancel
    /// whatever is in flight; chunks are let go as their operations complete.
    pub fn fail(&mut self, err: TransferError, owner: Owner, io: &mut Io, out: &mut Vec<Returned>) {
        if self.failure.is_none() {
            self.failure = Some(err);
        }
        self.cancel_in_flight(io);
        self.pump(owner, io, false, out);
    }

    /// Gives every pipe back, because the job stalled holding more than its
    /// user's share while another user waits. Only a ranged job (a seekable
    /// source) can: the operations in flight are cancelled, and as each
    /// comes back its chunk sets the unwritten rest of its range aside (the
    /// bytes a cancelled write left in the pipe are dropped with the pipe,
    /// which the pool replaces) and lets go. What reached the destination is
    /// counted from the results, so the ranges read again later start
    /// exactly where the writes stopped: nothing is lost or written twice.
    /// A stream source's bytes in a pipe exist nowhere else: false, and the
    /// job keeps its pipes. True if the pipes are on their way back.
    pub fn reclaim(&mut self, owner: Owner, io: &mut Io, out: &mut Vec<Returned>) -> bool {
        if !self.ranged || self.failure.is_some() || self.live_chunks() == 0 || self.reclaiming {
            return false;
        }
        self.reclaiming = true;
        for c in self.chunks.iter().flatten() {
            for user_data in c.busy.into_iter().chain(c.linked) {
                let _ = io.cancel(user_data);
            }
        }
        self.pump(owner, io, true, out);
        true
    }

    /// Sets an idle chunk's unwritten range aside and lets its pipe go.
    fn set_chunk_aside(&mut self, slot: usize, out: &mut Vec<Returned>) {
        let Some(c) = self.chunks[slot].as_ref() else {
            return;
        };
        let len = c.in_pipe + c.to_read;
        if len > 0 {
            self.set_aside.push(SetAside {
                seq: c.seq,
                src_off: c.src_off - c.in_pipe,
                dst_off: c.dst_off,
                len,
                probing: c.probing,
            });
        }
        // A pipe still holding bytes is Dirty: the pool closes it, dropping
        // them, and makes another.
        self.release(slot, out);
        if self.live_chunks() == 0 {
            self.reclaiming = false;
        }
    }

    /// Hands an empty chunk the first range set aside (the lowest sequence
    /// number, so a stream destination gets its bytes in order). False if
    /// there is none.
    fn take_set_aside(&mut self, slot: usize) -> bool {
        if let Some(eof) = self.eof {
            // Nothing is read past an end of file a read found.
            self.set_aside.retain(|r| r.src_off < eof);
        }
        let Some(i) = (0..self.set_aside.len()).min_by_key(|&i| self.set_aside[i].seq) else {
            return false;
        };
        let r = self.set_aside.swap_remove(i);
        let Some(c) = self.chunks[slot].as_mut() else {
            return false;
        };
        c.seq = r.seq;
        c.src_off = r.src_off;
        c.dst_off = r.dst_off;
        c.to_read = r.len;
        c.in_pipe = 0;
        c.probing = r.probing;
        if r.probing {
            self.prober = Some(slot);
        }
        true
    }

    fn cancel_in_flight(&self, io: &mut Io) {
        let chunk_ops = self
            .chunks
            .iter()
            .flatten()
            .flat_map(|c| c.busy.into_iter().chain(c.linked));
        for user_data in chunk_ops.chain(self.ready_poll) {
            // A failed cancel request means the ring itself is failing; the
            // operation still completes, so nothing is lost by ignoring it.
            let _ = io.cancel(user_data);
        }
    }

    /// Handles the completion of one of this job's operations, then queues
    /// whatever can happen next. Pipes the job no longer needs go to `out`.
    pub fn on_complete(
        &mut self,
        kind: CopyStep,
        result: i32,
        owner: Owner,
        io: &mut Io,
        yield_pipes: bool,
        out: &mut Vec<Returned>,
    ) {
        if kind == CopyStep::Truncate {
            self.restoring = None;
            if result < 0 {
                tracing::warn!(
                    "truncating the destination back to its {} bytes after a failure: {}",
                    self.orig_dst_size,
                    std::io::Error::from_raw_os_error(-result)
                );
            }
            return;
        }
        if kind == CopyStep::PollIn(JOB_LEVEL) {
            // Readable, at its end, or in error: a read will tell which.
            self.ready_poll = None;
            self.src_ready = true;
            self.pump(owner, io, yield_pipes, out);
            return;
        }
        let slot = match kind {
            CopyStep::SpliceIn(i)
            | CopyStep::SpliceOut(i)
            | CopyStep::PollIn(i)
            | CopyStep::PollOut(i) => i as usize,
            _ => return,
        };
        let Some(chunk) = self.chunks.get_mut(slot).and_then(Option::as_mut) else {
            debug_assert!(false, "completion for an empty chunk slot");
            return;
        };
        let was_linked = matches!(kind, CopyStep::SpliceOut(_)) && chunk.linked.is_some();
        if was_linked {
            chunk.linked = None;
        } else {
            chunk.busy = None;
        }
        let taken_back =
            self.reclaiming && (result == -libc::ECANCELED || errno::interrupted(-result));
        let step = match kind {
            // Cancelled to give the pipe back: nothing moved.
            _ if taken_back => Ok(()),
            CopyStep::SpliceIn(_) => self.after_read(slot, result),
            // The read before it moved less than asked (or failed), which
            // cancels the linked write; the chunk writes what it really holds.
            CopyStep::SpliceOut(_) if was_linked && result == -libc::ECANCELED => Ok(()),
            CopyStep::SpliceOut(_) => self.after_write(slot, result),
            // Readiness arrived (or the poll failed, and the retried splice
            // will report the real error): the chunk simply tries again.
            _ => Ok(()),
        };
        if let Err(e) = step {
            self.fail(e, owner, io, out);
            return;
        }
        self.pump(owner, io, yield_pipes, out);
    }

    fn after_read(&mut self, slot: usize, result: i32) -> Result<(), TransferError> {
        let ranged = self.ranged;
        if !ranged {
            self.reader = None;
        }
        if result < 0 {
            return self.read_failed(slot, -result);
        }
        let open_end = self.open_end;
        let Some(chunk) = self.chunks[slot].as_mut() else {
            return Ok(());
        };
        let n = result as u64;
        if n == 0 {
            let reached = if ranged {
                chunk.src_off
            } else {
                self.src_start + self.assigned
            };
            if open_end {
                // End of file, wherever the size hint said it would be.
                chunk.to_read = 0;
                if chunk.probing {
                    chunk.probing = false;
                    self.prober = None;
                }
                self.eof = Some(self.eof.map_or(reached, |e| e.min(reached)));
                self.src_done = true;
                return self.check_eof();
            }
            if ranged || (self.length_requested && self.assigned < self.total.unwrap_or(0)) {
                return Err(self.short_source(reached));
            }
            self.src_done = true;
            return Ok(());
        }
        chunk.in_pipe += n;
        if ranged {
            chunk.src_off += n;
            chunk.to_read -= n.min(chunk.to_read);
            self.high = self.high.max(chunk.src_off);
            if chunk.probing && chunk.to_read == 0 {
                // The file had a whole piece more: the next piece probes on.
                chunk.probing = false;
                self.prober = None;
            }
            if open_end {
                return self.check_eof();
            }
        } else {
            // A stream that gave less than asked has nothing more right now;
            // the next read waits for readiness first.
            if n < u64::from(chunk.asked) {
                self.src_ready = false;
            }
            chunk.dst_off = self.dst_start + self.assigned;
            chunk.seq = self.next_seq;
            self.next_seq += 1;
            self.assigned += n;
            if self.total.is_some_and(|t| self.assigned >= t) {
                self.src_done = true;
            }
        }
        Ok(())
    }

    /// A read of the source failed with `errno`: retry, wait, or fail.
    fn read_failed(&mut self, slot: usize, errno: i32) -> Result<(), TransferError> {
        let Some(chunk) = self.chunks[slot].as_ref() else {
            return Ok(());
        };
        let kind = self.ends.src_kind;
        let offset = kind.seekable().then_some(chunk.src_off);
        match errno::action(errno, Side::Source) {
            Action::Retry => Ok(()),
            Action::WaitReadable if !self.ranged => {
                // A non-blocking stream had nothing after all: wait for it
                // without a pipe.
                self.src_ready = false;
                Ok(())
            }
            // A file does not say EAGAIN unless the client made it
            // non-blocking; the worker blocks in splice, so try again.
            Action::WaitReadable | Action::WaitWritable => Ok(()),
            Action::Fail if errno == libc::EINVAL && self.moved == 0 && !self.touched => {
                self.source_refused = true;
                Err(splice_refused(kind))
            }
            Action::Fail => Err(TransferError::os(
                format!("splice from the source {kind} into a pipe{}", at(offset)),
                errno,
            )),
        }
    }

    /// In an open-ended job, bytes found past the end another read found
    /// mean the file changed size under the reads; nothing after that end
    /// may be written.
    fn check_eof(&self) -> Result<(), TransferError> {
        match self.eof {
            Some(eof) if self.high > eof => Err(TransferError::source_changed(eof, self.high)),
            _ => Ok(()),
        }
    }

    fn after_write(&mut self, slot: usize, result: i32) -> Result<(), TransferError> {
        let Some(chunk) = self.chunks[slot].as_mut() else {
            return Ok(());
        };
        if result < 0 {
            return match errno::action(-result, Side::Destination) {
                Action::Retry => Ok(()),
                Action::WaitWritable | Action::WaitReadable => {
                    if !self.ends.dst_kind.seekable() {
                        chunk.wait_for = Some(libc::POLLOUT);
                    }
                    Ok(())
                }
                Action::Fail => Err(TransferError::os(
                    format!(
                        "splice from a pipe to the destination {}{}",
                        self.ends.dst_kind,
                        at(self.ends.dst_kind.seekable().then_some(chunk.dst_off))
                    ),
                    -result,
                )),
            };
        }
        let n = (result as u64).min(chunk.in_pipe);
        if n == 0 {
            return Err(TransferError::new(
                FailureKind::Io,
                format!(
                    "the destination {} accepted 0 bytes of {} waiting in the pipe",
                    self.ends.dst_kind, chunk.in_pipe
                ),
            ));
        }
        chunk.in_pipe -= n;
        chunk.dst_off += n;
        self.moved += n;
        let unit_done = chunk.in_pipe == 0 && (!self.ranged || chunk.to_read == 0);
        if unit_done {
            self.write_seq += 1;
        }
        Ok(())
    }

    fn short_source(&self, reached: u64) -> TransferError {
        TransferError::short_source(
            reached,
            self.src_start,
            self.total.unwrap_or(0),
            self.length_requested,
        )
    }

    /// Queues the next operation of every idle chunk, and lets go of chunks
    /// with nothing left to do. With `yield_pipes`, other jobs are waiting
    /// for pipes, so a chunk that has finished its range gives its pipe back
    /// instead of taking the next range: pipes go round the jobs in turn.
    fn pump(&mut self, owner: Owner, io: &mut Io, yield_pipes: bool, out: &mut Vec<Returned>) {
        for slot in 0..self.chunks.len() {
            let Some(chunk) = self.chunks[slot].as_ref() else {
                continue;
            };
            if chunk.is_busy() {
                continue;
            }
            if self.failure.is_some() {
                self.release(slot, out);
                continue;
            }
            if self.reclaiming {
                self.set_chunk_aside(slot, out);
                continue;
            }
            if let Err(e) = self.step(slot, owner, io, yield_pipes, out) {
                self.failure.get_or_insert(e);
                // Cancel whatever the other chunks have in flight.
                for other in self.chunks.iter().flatten() {
                    for user_data in other.busy.into_iter().chain(other.linked) {
                        let _ = io.cancel(user_data);
                    }
                }
                self.release(slot, out);
            }
        }
        self.restore_destination(owner, io);
    }

    /// Moves one idle chunk on by one operation, if it has one to do.
    fn step(
        &mut self,
        slot: usize,
        owner: Owner,
        io: &mut Io,
        yield_pipes: bool,
        out: &mut Vec<Returned>,
    ) -> Result<(), TransferError> {
        let ends = Rc::clone(&self.ends);
        let Some(chunk) = self.chunks[slot].as_mut() else {
            return Ok(());
        };
        let tag = slot as u16;
        let cap = u64::from(chunk.pipe.capacity).min(self.piece_limit);
        if let Some(events) = chunk.wait_for.take() {
            let poll = io.poll(
                owner,
                CopyStep::PollOut(tag).tag(),
                &ends,
                raw(&ends.dst),
                events,
            );
            chunk.busy = Some(poll.map_err(ring_failed)?);
            return Ok(());
        }
        if chunk.in_pipe > 0 {
            if ends.dst_kind.seekable() || chunk.seq == self.write_seq {
                self.touched = true;
                let len = chunk.in_pipe.min(u64::from(u32::MAX)) as u32;
                let dst = SpliceEnd {
                    fd: raw(&ends.dst),
                    offset: ends.dst_kind.seekable().then_some(chunk.dst_off),
                };
                let src = SpliceEnd {
                    fd: chunk.pipe.read_fd(),
                    offset: None,
                };
                chunk.busy = Some(
                    io.splice(
                        owner,
                        CopyStep::SpliceOut(tag).tag(),
                        &chunk.pipe,
                        &ends,
                        src,
                        dst,
                        len,
                    )
                    .map_err(ring_failed)?,
                );
            }
            return Ok(());
        }
        let write_now = ends.dst_kind.seekable() || chunk.seq == self.write_seq;
        if self.ranged && chunk.to_read > 0 {
            let len = chunk.to_read.min(cap) as u32;
            return Self::read_into(chunk, tag, len, write_now, owner, io, &ends);
        }
        // The chunk is empty and its range is done: take more work, or let go.
        if self.ranged {
            if !yield_pipes && self.take_set_aside(slot) {
                // The rest of a range whose pipe was given back.
                let Some(chunk) = self.chunks[slot].as_mut() else {
                    return Ok(());
                };
                let write_now =
                    !chunk.probing && (ends.dst_kind.seekable() || chunk.seq == self.write_seq);
                if write_now {
                    self.touched = true;
                }
                let len = chunk.to_read.min(cap) as u32;
                return Self::read_into(chunk, tag, len, write_now, owner, io, &ends);
            }
            let Some(chunk) = self.chunks[slot].as_mut() else {
                return Ok(());
            };
            let total = self.total.unwrap_or(0);
            if self.assigned < total && self.eof.is_none() && !yield_pipes {
                let len = (total - self.assigned).min(cap);
                chunk.seq = self.next_seq;
                self.next_seq += 1;
                chunk.src_off = self.src_start + self.assigned;
                chunk.dst_off = self.dst_start + self.assigned;
                chunk.to_read = len;
                self.assigned += len;
                self.src_done = !self.open_end && self.assigned >= total;
                let write_now = ends.dst_kind.seekable() || chunk.seq == self.write_seq;
                if write_now {
                    self.touched = true;
                }
                return Self::read_into(chunk, tag, len as u32, write_now, owner, io, &ends);
            }
            let may_probe = self.may_probe();
            if may_probe && !yield_pipes {
                // Past the size hint: read on, a piece at a time, until a
                // read returns 0. Not linked: this read is expected short.
                let Some(chunk) = self.chunks[slot].as_mut() else {
                    return Ok(());
                };
                chunk.seq = self.next_seq;
                self.next_seq += 1;
                chunk.src_off = self.src_start + self.assigned;
                chunk.dst_off = self.dst_start + self.assigned;
                chunk.to_read = cap;
                chunk.probing = true;
                self.prober = Some(slot);
                self.assigned += cap;
                return Self::read_into(chunk, tag, cap as u32, false, owner, io, &ends);
            }
        } else if !self.src_done && !yield_pipes {
            if self.src_ready && self.reader.is_none() {
                let left = self.total.map_or(cap, |t| (t - self.assigned).min(cap));
                chunk.src_off = self.src_start + self.assigned;
                self.reader = Some(slot);
                // Stream reads are often short, which would break a link
                // every time; they are not linked.
                return Self::read_into(chunk, tag, left as u32, false, owner, io, &ends);
            }
            if self.reader.is_some() {
                // Another chunk is reading the stream; this one writes next.
                return Ok(());
            }
        }
        self.release(slot, out);
        if !self.ranged {
            self.arm_ready_poll(owner, io)?;
        }
        Ok(())
    }

    /// Queues a read of `len` bytes into the chunk's pipe; with `then_write`,
    /// a write of the same length to the destination is linked behind it.
    fn read_into(
        chunk: &mut Chunk,
        tag: u16,
        len: u32,
        then_write: bool,
        owner: Owner,
        io: &mut Io,
        ends: &Rc<Endpoints>,
    ) -> Result<(), TransferError> {
        let src = SpliceEnd {
            fd: raw(&ends.src),
            offset: ends.src_kind.seekable().then_some(chunk.src_off),
        };
        let dst = SpliceEnd {
            fd: chunk.pipe.write_fd(),
            offset: None,
        };
        if then_write {
            let out = (
                SpliceEnd {
                    fd: chunk.pipe.read_fd(),
                    offset: None,
                },
                SpliceEnd {
                    fd: raw(&ends.dst),
                    offset: ends.dst_kind.seekable().then_some(chunk.dst_off),
                },
            );
            let (a, b) = io
                .splice_linked(
                    owner,
                    (
                        CopyStep::SpliceIn(tag).tag(),
                        CopyStep::SpliceOut(tag).tag(),
                    ),
                    &chunk.pipe,
                    ends,
                    (src, dst),
                    out,
                    len,
                )
                .map_err(ring_failed)?;
            chunk.asked = len;
            chunk.busy = Some(a);
            chunk.linked = Some(b);
            return Ok(());
        }
        chunk.asked = len;
        chunk.busy = Some(
            io.splice(
                owner,
                CopyStep::SpliceIn(tag).tag(),
                &chunk.pipe,
                ends,
                src,
                dst,
                len,
            )
            .map_err(ring_failed)?,
        );
        Ok(())
    }

    /// After a failure, once nothing is in flight, truncates a regular-file
    /// destination that was written back to its size at admission: every
    /// strategy leaves a failed `--in-place` destination the same way.
    fn restore_destination(&mut self, owner: Owner, io: &mut Io) {
        if self.failure.is_none()
            || !self.touched
            || self.ends.dst_kind != FdKind::File
            || self.live_chunks() > 0
            || self.ready_poll.is_some()
            || self.restoring.is_some()
        {
            return;
        }
        self.touched = false;
        let ends = Rc::clone(&self.ends);
        match io.ftruncate(
            owner,
            CopyStep::Truncate.tag(),
            &ends,
            raw(&ends.dst),
            self.orig_dst_size,
        ) {
            Ok(ud) => self.restoring = Some(ud),
            Err(e) => tracing::warn!("queueing the truncate of a failed job's destination: {e}"),
        }
    }

    fn release(&mut self, slot: usize, out: &mut Vec<Returned>) {
        if let Some(chunk) = self.chunks[slot].take() {
            if self.prober == Some(slot) {
                self.prober = None;
            }
            if chunk.in_pipe > 0 || self.failure.is_some() {
                out.push(Returned::Dirty(chunk.pipe));
            } else {
                out.push(Returned::Clean(chunk.pipe));
            }
        }
    }

    /// Gives back the descriptors once no operation holds them any more
    /// (always the case once the job is finished).
    pub fn into_endpoints(self) -> Option<Endpoints> {
        Rc::try_unwrap(self.ends).ok()
    }

    /// Whether any operation is in flight.
    pub fn busy(&self) -> bool {
        self.in_flight() > 0 || self.ready_poll.is_some()
    }
}

fn raw(fd: &std::os::fd::OwnedFd) -> i32 {
    use std::os::fd::AsRawFd;
    fd.as_raw_fd()
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

fn ring_failed(e: crate::io::EngineError) -> TransferError {
    TransferError::new(
        FailureKind::Io,
        format!("queueing the next splice failed: {e}"),
    )
}
