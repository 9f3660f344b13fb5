//! The chunked pipeline both copy strategies run: a job holds up to
//! `max_chunks` resources lent by a pool (a pipe for splice, a buffer for
//! the direct, uncached and buffered strategies); each, with the range of
//! bytes it carries, is a chunk with at most one operation in flight: read
//! the source into the resource, write it out to the destination, take the
//! next range. `Pipeline` keeps what every strategy does the same way: the
//! chunk slots, the order of a stream destination's writes, the end of file
//! a read found, the failure and the cancelling it triggers, and the routing
//! of a completion to its chunk. What differs (what a chunk's operations
//! are, what their results mean, what the job does before and after the
//! copy) is the `Strategy`'s (see splice.rs and buffered.rs).

use std::rc::Rc;

use ringxfer_ipc::FailureKind;

use super::holes::{Holes, Range};
use super::step::CopyStep;
use super::{Endpoints, Shape, TransferError};
use crate::io::buffer_pool::BufRef;
use crate::io::ops::Owner;
use crate::io::pipe_pool::Pipe;
use crate::io::Io;

/// A pool resource a job hands back.
pub(crate) enum Returned {
    /// An empty pipe: back to the pool.
    Clean(Rc<Pipe>),
    /// A pipe that may hold stray bytes of a failed job: close it and make another.
    Dirty(Rc<Pipe>),
    /// A buffer whose last operation has completed.
    Buffer(BufRef),
    /// A worker piece whose operation has completed (copy_range.rs).
    Piece(crate::io::piece_pool::Piece),
}

/// One lent resource and the bytes it carries: what every strategy's chunk
/// keeps, and the strategy's own part (`s`, which holds the resource).
pub(super) struct Chunk<C> {
    /// Order of this chunk's data in the stream; a stream destination takes
    /// chunks strictly in this order.
    pub(super) seq: u64,
    /// `user_data` of the operation in flight on this chunk.
    pub(super) busy: Option<u64>,
    /// `user_data` of a write linked behind the read in `busy`.
    pub(super) linked: Option<u64>,
    /// SEND_ZC notifications still to come: the kernel may still read the
    /// buffer until the last one.
    pub(super) notifs: u32,
    /// An end said EAGAIN: poll for these events before the next operation.
    pub(super) wait: Option<i16>,
    /// The chunk reads at or past the source's size hint, until end of file
    /// (see `Pipeline::open_end`); one chunk at a time, as a read loop would.
    pub(super) probing: bool,
    pub(super) s: C,
}

impl<C> Chunk<C> {
    pub(super) fn is_busy(&self) -> bool {
        self.busy.is_some() || self.linked.is_some() || self.notifs > 0
    }

    fn in_flight(&self) -> impl Iterator<Item = u64> {
        self.busy.into_iter().chain(self.linked)
    }
}

/// What a strategy adds to the pipeline. Its methods take the whole
/// pipeline, whose shared state they read and move on.
pub(crate) trait Strategy: Sized {
    /// What the pool lends a chunk.
    type Lent;
    /// A chunk's own state, the lent resource included.
    type Chunk;
    /// What the operations are called in "queueing the next ... failed".
    const OP_NAME: &'static str;

    fn chunk(lent: Self::Lent) -> Self::Chunk;
    /// A resource the job has no room for, handed straight back.
    fn refused(lent: Self::Lent) -> Returned;
    /// A chunk let go; `failed`: the job failed.
    fn give_back(chunk: Self::Chunk, failed: bool) -> Option<Returned>;
    /// A buffer a completion handed back: to the pool, unless the
    /// strategy's chunks lent it.
    fn take_back(_p: &mut Pipeline<Self>, _step: CopyStep, buf: BufRef, out: &mut Vec<Returned>) {
        out.push(Returned::Buffer(buf));
    }
    /// Whether an idle chunk is taken out of the pipeline instead of being
    /// moved on (the job is giving its resources back).
    fn divert(_p: &mut Pipeline<Self>, _slot: usize, _out: &mut Vec<Returned>) -> bool {
        false
    }
    /// Moves an idle chunk, with nothing to wait for, on by one operation,
    /// or lets it go.
    fn step(
        p: &mut Pipeline<Self>,
        slot: usize,
        owner: Owner,
        io: &mut Io,
        yield_lent: bool,
        out: &mut Vec<Returned>,
    ) -> Result<(), TransferError>;
    /// A chunk's operation completed; `linked`: a write linked behind a read.
    fn complete(
        p: &mut Pipeline<Self>,
        step: CopyStep,
        slot: usize,
        result: i32,
        linked: bool,
    ) -> Result<(), TransferError>;
    /// One of the job's own operations completed: whether the chunks are
    /// moved on after it.
    fn side(p: &mut Pipeline<Self>, step: CopyStep, result: i32) -> Result<bool, TransferError>;
    /// The job's own operation in flight, to cancel on failure.
    fn side_op(p: &Pipeline<Self>) -> Option<u64>;
    /// After the chunks moved on: what the job does once they are all back.
    fn after_pump(p: &mut Pipeline<Self>, owner: Owner, io: &mut Io);
    /// Whether the job, holding no chunk, is done.
    fn finished(p: &Pipeline<Self>) -> bool;
    /// The most one operation moves, from a rate limit's piece of `bytes`:
    /// any length but 0, unless the strategy aligns it.
    fn piece(&self, bytes: u64) -> u64 {
        bytes.max(1)
    }
    /// The job ends: put back what it changed on the descriptors.
    fn on_end(&self) {}
}

/// A transfer moved in chunks through resources lent by a pool.
pub(crate) struct Pipeline<S: Strategy> {
    pub(super) ends: Rc<Endpoints>,
    pub(super) src_start: u64,
    pub(super) dst_start: u64,
    pub(super) length_requested: bool,
    /// The destination takes chunks strictly in read order (`Chunk::seq`).
    pub(super) in_order: bool,
    /// Bytes handed to chunks (ranged) or read from a stream source; for a
    /// file, where the next range starts (holes before it skipped).
    pub(super) assigned: u64,
    /// No more bytes will be read: end reached, or end of file.
    pub(super) src_done: bool,
    /// The chunk whose read of a streamed source is in flight: a stream is
    /// read by one chunk at a time, or its bytes would interleave.
    pub(super) reader: Option<usize>,
    pub(super) next_seq: u64,
    pub(super) write_seq: u64,
    pub(super) chunks: Vec<Option<Chunk<S::Chunk>>>,
    /// Bytes written to the destination, and holes skipped (holes.rs).
    pub moved: u64,
    pub(super) failure: Option<TransferError>,
    /// The most one operation moves (a rate limit's piece; else the
    /// resource's size).
    pub(super) piece_limit: u64,
    /// The job's total is a regular file's size hint, not a requested
    /// length: the file is read until a read returns 0, which may come
    /// before the hint (sysfs, a file that shrank) or after it (procfs, a
    /// file that grows).
    pub(super) open_end: bool,
    /// Where a read found the source's end, from the start of the transfer.
    pub(super) eof: Option<u64>,
    /// Highest offset (from the start of the transfer) a read found bytes up to.
    pub(super) high: u64,
    /// The chunk reading past the hint (`Chunk::probing`).
    pub(super) prober: Option<usize>,
    /// The destination's size at admission, restored if the job fails after
    /// writing (regular-file destinations).
    pub(super) orig_dst_size: u64,
    /// A write was queued: a failure truncates the destination back.
    pub(super) touched: bool,
    /// The source's holes: its data map, punches, what was skipped.
    pub(super) holes: Holes,
    /// The strategy's own state.
    pub(super) s: S,
}

impl<S: Strategy> Pipeline<S> {
    /// A pipeline of `max_chunks` slots moving `plan` between `ends`.
    pub(super) fn with(
        ends: Rc<Endpoints>,
        plan: &Shape,
        max_chunks: usize,
        orig_dst_size: u64,
        s: S,
    ) -> Pipeline<S> {
        Pipeline {
            ends,
            src_start: plan.src_start,
            dst_start: plan.dst_start,
            length_requested: plan.length_requested,
            in_order: false,
            assigned: 0,
            src_done: false,
            reader: None,
            next_seq: 0,
            write_seq: 0,
            chunks: (0..max_chunks).map(|_| None).collect(),
            moved: 0,
            failure: None,
            piece_limit: u64::MAX,
            open_end: false,
            eof: None,
            high: 0,
            prober: None,
            orig_dst_size,
            touched: false,
            holes: Holes::new(plan.holes, plan.total, 1).sized_first(
                plan.dst_start,
                plan.total,
                orig_dst_size,
            ),
            s,
        }
    }

    pub(crate) fn endpoints(&self) -> Rc<Endpoints> {
        Rc::clone(&self.ends)
    }

    /// The outcome, once finished: the error, or `None` for success.
    pub(crate) fn failure(&self) -> Option<&TransferError> {
        self.failure.as_ref()
    }

    /// Whether the job has no chunk and nothing in flight, so it can end.
    pub(crate) fn is_finished(&self) -> bool {
        self.live_chunks() == 0 && !self.holes.busy(self.failure.is_some()) && S::finished(self)
    }

    /// Caps what one operation moves, so rate limits hold over short windows.
    pub(crate) fn set_piece_limit(&mut self, bytes: u64) {
        self.piece_limit = self.s.piece(bytes);
    }

    /// Gives the descriptors back (with what the job changed on them put
    /// back) once no operation holds them any more (always the case once
    /// the job is finished).
    pub(crate) fn into_endpoints(self) -> Option<Endpoints> {
        self.s.on_end();
        Rc::try_unwrap(self.ends).ok()
    }

    pub(super) fn live_chunks(&self) -> usize {
        self.chunks.iter().filter(|c| c.is_some()).count()
    }

    pub(super) fn chunk(&mut self, slot: usize) -> Option<&mut Chunk<S::Chunk>> {
        self.chunks.get_mut(slot).and_then(Option::as_mut)
    }

    /// Gives the job a resource and starts using it.
    pub(crate) fn lend(
        &mut self,
        lent: S::Lent,
        owner: Owner,
        io: &mut Io,
        yield_lent: bool,
        out: &mut Vec<Returned>,
    ) {
        let Some(slot) = self.chunks.iter().position(Option::is_none) else {
            out.push(S::refused(lent));
            return;
        };
        self.chunks[slot] = Some(Chunk {
            seq: 0,
            busy: None,
            linked: None,
            notifs: 0,
            wait: None,
            probing: false,
            s: S::chunk(lent),
        });
        self.pump(owner, io, yield_lent, out);
    }

    /// Records a failure (the first one wins) and asks the kernel to cancel
    /// whatever is in flight; chunks are let go as their operations complete.
    pub(crate) fn fail(
        &mut self,
        err: TransferError,
        owner: Owner,
        io: &mut Io,
        out: &mut Vec<Returned>,
    ) {
        self.failure.get_or_insert(err);
        self.cancel_chunks(io);
        let side = S::side_op(self).into_iter().chain(self.holes.in_flight());
        for user_data in side.collect::<Vec<_>>() {
            let _ = io.cancel(user_data);
        }
        self.pump(owner, io, false, out);
    }

    pub(super) fn cancel_chunks(&self, io: &mut Io) {
        for user_data in self.chunks.iter().flatten().flat_map(Chunk::in_flight) {
            // A failed cancel request means the ring itself is failing; the
            // operation still completes, so nothing is lost by ignoring it.
            let _ = io.cancel(user_data);
        }
    }

    /// Handles the completion of one of this job's operations, then queues
    /// whatever can happen next; `buf`: the pool buffer it held, handed
    /// back. With `yield_lent`, other jobs wait for the kind of resource
    /// this one uses, so a chunk that is done gives it back. Resources the
    /// job no longer needs go to `out`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn on_complete(
        &mut self,
        tag: u32,
        result: i32,
        buf: Option<BufRef>,
        owner: Owner,
        io: &mut Io,
        yield_lent: bool,
        out: &mut Vec<Returned>,
    ) {
        let Some(step) = CopyStep::from_tag(tag) else {
            out.extend(buf.map(Returned::Buffer));
            return;
        };
        if let Some(buf) = buf {
            S::take_back(self, step, buf, out);
        }
        let moved_on = match step.slot() {
            None if matches!(step, CopyStep::DataMap | CopyStep::Punch | CopyStep::Size) => {
                self.on_hole_step(step, result)
            }
            None => S::side(self, step, result),
            Some(slot) => {
                let Some(chunk) = self.chunk(slot) else {
                    debug_assert!(false, "completion for an empty chunk slot");
                    return;
                };
                let linked = matches!(step, CopyStep::Out(_)) && chunk.linked.is_some();
                if linked {
                    chunk.linked = None;
                } else if !matches!(step, CopyStep::ZcNotif(_)) {
                    chunk.busy = None;
                }
                S::complete(self, step, slot, result, linked).map(|()| true)
            }
        };
        match moved_on {
            Ok(true) => self.pump(owner, io, yield_lent, out),
            Ok(false) => {}
            Err(e) => self.fail(e, owner, io, out),
        }
    }

    /// Queues the next operation of every idle chunk, and lets go of chunks
    /// with nothing left to do.
    pub(super) fn pump(
        &mut self,
        owner: Owner,
        io: &mut Io,
        yield_lent: bool,
        out: &mut Vec<Returned>,
    ) {
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
            if S::divert(self, slot, out) {
                continue;
            }
            let moved_on = match self.poll_if_waiting(slot, owner, io) {
                Ok(true) => Ok(()),
                Ok(false) => S::step(self, slot, owner, io, yield_lent, out),
                Err(e) => Err(e),
            };
            if let Err(e) = moved_on {
                self.failure.get_or_insert(e);
                // Cancel whatever the other chunks have in flight.
                self.cancel_chunks(io);
                self.release(slot, out);
            }
        }
        self.drive_holes(owner, io);
        S::after_pump(self, owner, io);
    }

    /// A chunk whose last operation said EAGAIN polls for readiness first:
    /// true if it did.
    fn poll_if_waiting(
        &mut self,
        slot: usize,
        owner: Owner,
        io: &mut Io,
    ) -> Result<bool, TransferError> {
        let ends = Rc::clone(&self.ends);
        let Some(chunk) = self.chunk(slot) else {
            return Ok(false);
        };
        let Some(events) = chunk.wait.take() else {
            return Ok(false);
        };
        let (step, fd) = if events == libc::POLLIN {
            (CopyStep::PollIn(slot), ends.shared_src())
        } else {
            (CopyStep::PollOut(slot), ends.shared_dst())
        };
        let polled = io.poll(owner, step.tag(), fd, events);
        chunk.busy = Some(polled.map_err(ring_failed::<S>)?);
        Ok(true)
    }

    pub(super) fn release(&mut self, slot: usize, out: &mut Vec<Returned>) {
        if let Some(chunk) = self.chunks[slot].take() {
            if self.prober == Some(slot) {
                self.prober = None;
            }
            out.extend(S::give_back(chunk.s, self.failure.is_some()));
        }
    }

    /// The next range of a file source a chunk copies: at most `max` bytes,
    /// not past `end` (from the start of the transfer), and data only: the
    /// holes before and after it are skipped (holes.rs), so every strategy
    /// that takes its ranges here keeps the source's holes. `None`: nothing
    /// to copy now (the end, an end of file a read found, or the map of
    /// what follows is not in yet: see `range_ready`).
    pub(super) fn next_range(&mut self, max: u64, end: u64) -> Option<Range> {
        if let Some((rel, len)) = self.take_refill(max) {
            return Some(self.range(rel, len));
        }
        if self.eof.is_some() {
            return None;
        }
        self.skip_holes();
        if self.assigned >= end || self.holes_pending() {
            return None;
        }
        let rel = self.assigned;
        let len = self.data_end(end).saturating_sub(rel).min(max.max(1));
        if len == 0 {
            return None;
        }
        self.assigned += len;
        self.skip_holes();
        Some(self.range(rel, len))
    }

    /// Whether `next_range` has a range for a chunk now: what decides
    /// whether a job asks for a pipe or a buffer.
    pub(super) fn range_ready(&self, end: u64) -> bool {
        self.has_refill() || (self.eof.is_none() && self.assigned < end && !self.holes_pending())
    }

    /// The range of `len` bytes at `rel` from the start of the transfer.
    pub(super) fn range(&self, rel: u64, len: u64) -> Range {
        Range {
            rel,
            src_off: self.src_start + rel,
            dst_off: self.dst_start + rel,
            len,
        }
    }

    /// The sequence number of the next bytes read.
    pub(super) fn take_seq(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq - 1
    }

    /// Whether a chunk's bytes may be written now: any time into a file,
    /// in read order into a stream.
    pub(super) fn in_turn(&self, seq: u64) -> bool {
        !self.in_order || seq == self.write_seq
    }

    /// A read found the source's end at `end` (from the start of the transfer).
    pub(super) fn found_eof(&mut self, end: u64) {
        self.eof = Some(self.eof.map_or(end, |e| e.min(end)));
    }

    /// In an open-ended job, bytes found past the end another read found
    /// mean the file changed size under the reads; nothing after that end
    /// may be written.
    pub(super) fn check_eof(&self) -> Result<(), TransferError> {
        match self.eof {
            Some(eof) if self.high > eof => Err(TransferError::source_changed(
                self.src_start + eof,
                self.src_start + self.high,
            )),
            _ => Ok(()),
        }
    }

    /// The source ended at `reached`, before the `total` bytes from the start.
    pub(super) fn short_source(&self, reached: u64, total: u64) -> TransferError {
        TransferError::short_source(reached, self.src_start, total, self.length_requested)
    }
}

pub(super) fn raw(fd: &std::os::fd::OwnedFd) -> i32 {
    use std::os::fd::AsRawFd;
    fd.as_raw_fd()
}

pub(super) fn ring_failed<S: Strategy>(e: crate::io::EngineError) -> TransferError {
    TransferError::new(
        FailureKind::Io,
        format!("queueing the next {} failed: {e}", S::OP_NAME),
    )
}
