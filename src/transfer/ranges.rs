//! What splice and the in-kernel strategies (copy-range, sendfile) do the
//! same way, and the buffer strategies do not: once its operation is back,
//! neither's chunk holds a byte that cannot be read again from a file source
//! (a pipe's are dropped with the pipe, a worker piece holds none), so a
//! stalled job gives its chunks back (`reclaim`) and sets the rest of each
//! range aside; a chunk's next range is one set aside, the next data
//! (`Pipeline::next_range`), or a probe past a size hint, in that order; and
//! the job ends on its destination the same way: truncated back after a
//! failure, given its final size when it ends in a hole. The buffer
//! strategies cut aligned ranges, keep a tail and a stream's total of their
//! own, and are failed rather than reclaimed, so they keep theirs.
//!
//! What differs, where a chunk's unfinished bytes are and when every byte
//! was read, is the strategy's (`RangeStrategy`).

use std::rc::Rc;

use super::errno;
use super::pipeline::{ring_failed, Pipeline, Returned, Strategy};
use super::step::CopyStep;
use super::{Endpoints, FdKind, Shape, TransferError};
use crate::io::ops::Owner;
use crate::io::Io;

/// Bytes of a range still to copy: where they are read and written.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Span {
    pub(super) src_off: u64,
    pub(super) dst_off: u64,
    pub(super) len: u64,
}

/// The unfinished rest of a chunk's range, set aside when the job gave its
/// chunks back: copied again, with its sequence number so that a stream
/// destination still gets its bytes in order, before any new range.
#[derive(Debug, Clone, Copy)]
struct SetAside {
    seq: u64,
    span: Span,
    probing: bool,
}

/// What the strategy keeps for the pipeline's `RangeStrategy` methods.
pub(crate) struct Ranges {
    /// A requested length or a regular file's size hint; `None`: a stream
    /// read to its end (splice).
    pub(super) total: Option<u64>,
    /// Giving every chunk back (`reclaim`): chunks set their ranges aside
    /// as their operations come back, and take no new work.
    pub(super) reclaiming: bool,
    /// Ranges set aside, to be copied again before any new one.
    set_aside: Vec<SetAside>,
    /// `user_data` of the ftruncate restoring a failed job's destination
    /// (or, with `sizing`, giving one that ends in a hole its size).
    restoring: Option<u64>,
    /// The ftruncate in flight gives the destination its final size.
    sizing: bool,
    /// The destination, which ends in a hole, has its final size.
    sized: bool,
}

impl Ranges {
    pub(super) fn new(total: Option<u64>) -> Ranges {
        Ranges {
            total,
            reclaiming: false,
            set_aside: Vec::new(),
            restoring: None,
            sizing: false,
            sized: false,
        }
    }
}

/// What `Pipeline::hand_out` gave a chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Taken {
    /// The rest of a range set aside by `reclaim`.
    SetAside,
    /// The next data of the source.
    Next,
    /// A piece past the size hint, which may well come back short.
    Probe,
}

/// What a strategy whose ranges the pipeline hands out here says about its
/// chunks.
pub(crate) trait RangeStrategy: Strategy {
    fn ranges(&self) -> &Ranges;
    fn ranges_mut(&mut self) -> &mut Ranges;
    /// What of an idle chunk's range has not reached the destination.
    fn rest(chunk: &Self::Chunk) -> Span;
    /// Gives an idle chunk `span` to copy.
    fn start(chunk: &mut Self::Chunk, span: Span);
    /// Whether every byte of the source was read or handed out, so a
    /// destination that ends in a hole may be given its size.
    fn all_read(p: &Pipeline<Self>) -> bool;
    /// Whether the job's chunks may be taken back: false where the bytes
    /// they hold exist nowhere else.
    fn reclaimable(_p: &Pipeline<Self>) -> bool {
        true
    }
}

impl<S: RangeStrategy> Pipeline<S> {
    /// A pipeline of up to `max_chunks` chunks moving `shape` between `ends`.
    pub(super) fn with_ranges(
        ends: Rc<Endpoints>,
        shape: &Shape,
        max_chunks: usize,
        s: S,
    ) -> Pipeline<S> {
        let open_end = shape.open_end(ends.src_kind);
        let in_order = !ends.dst_kind.seekable();
        let mut copy = Pipeline::with(ends, shape, max_chunks, shape.dst_size, s);
        copy.in_order = in_order;
        copy.open_end = open_end;
        copy.src_done = shape.total == Some(0) && !open_end;
        copy
    }

    /// What the job moves, for another strategy to take it over.
    pub(crate) fn shape(&self) -> Shape {
        Shape {
            src_start: self.src_start,
            dst_start: self.dst_start,
            total: self.s.ranges().total,
            length_requested: self.length_requested,
            dst_append: false,
            dst_size: self.orig_dst_size,
            holes: self.holes.plan(),
        }
    }

    /// Bytes the job will move, as far as is known: past a size hint, what
    /// the reads found so far.
    pub(crate) fn total(&self) -> Option<u64> {
        let total = self.s.ranges().total;
        if self.open_end {
            return Some(self.eof.unwrap_or(self.high.max(total.unwrap_or(0))));
        }
        total
    }

    /// Where the source's bytes end, from the start of the transfer: where a
    /// read found its end, else the total.
    pub(super) fn end(&self) -> u64 {
        let total = self.s.ranges().total.unwrap_or(0);
        if self.open_end {
            self.eof.unwrap_or(total)
        } else {
            total
        }
    }

    /// Whether every range of the job was handed out (holes skipped, none
    /// waiting for a map or to be copied after a refused punch).
    pub(super) fn all_assigned(&self) -> bool {
        self.assigned >= self.s.ranges().total.unwrap_or(0) && !self.has_refill()
    }

    /// Whether another chunk would let a job reading a file move more at
    /// once.
    pub(super) fn wants_range(&self) -> bool {
        if self.failure.is_some()
            || self.s.ranges().reclaiming
            || self.live_chunks() == self.chunks.len()
        {
            return false;
        }
        if !self.s.ranges().set_aside.is_empty() || self.has_refill() {
            return true;
        }
        if self.src_done {
            return false;
        }
        // Reading past the hint is done by a chunk that finished its range,
        // so a job holds no more chunks than before for it; only a job left
        // with none (it yielded them) asks for one to probe. None while the
        // map of the source's data is not in.
        self.range_ready(self.s.ranges().total.unwrap_or(0))
            || (self.may_probe() && self.live_chunks() == 0)
    }

    /// Whether a chunk may start reading past the size hint: the hint is
    /// all handed out, no read found the end yet, and no chunk probes now.
    fn may_probe(&self) -> bool {
        self.open_end
            && self.eof.is_none()
            && self.prober.is_none()
            && self.s.ranges().set_aside.is_empty()
            && self.assigned >= self.s.ranges().total.unwrap_or(0)
    }

    /// Hands an empty chunk its next range, of at most `cap` bytes: one set
    /// aside (lowest sequence first, so a stream destination gets its bytes
    /// in order), the next data of the source (holes skipped), or a piece
    /// past the size hint, read on a piece at a time until a read returns 0
    /// (procfs says 0, a file may grow). `None` if there is none.
    pub(super) fn hand_out(&mut self, slot: usize, cap: u64) -> Option<Taken> {
        if self.take_set_aside(slot) {
            return Some(Taken::SetAside);
        }
        if let Some(r) = self.next_range(cap, self.s.ranges().total.unwrap_or(0)) {
            self.assign(slot, r.src_off, r.dst_off, r.len);
            self.src_done = !self.open_end && self.all_assigned();
            return Some(Taken::Next);
        }
        if !self.may_probe() {
            return None;
        }
        let r = self.range(self.assigned, cap);
        self.assigned += cap;
        self.assign(slot, r.src_off, r.dst_off, r.len);
        if let Some(chunk) = self.chunk(slot) {
            chunk.probing = true;
        }
        self.prober = Some(slot);
        Some(Taken::Probe)
    }

    /// Gives the chunk the bytes of `len` at these offsets, as the next in
    /// the stream.
    fn assign(&mut self, slot: usize, src_off: u64, dst_off: u64, len: u64) {
        let seq = self.take_seq();
        if let Some(chunk) = self.chunk(slot) {
            chunk.seq = seq;
            S::start(
                &mut chunk.s,
                Span {
                    src_off,
                    dst_off,
                    len,
                },
            );
        }
    }

    /// Hands an empty chunk the first range set aside. False if there is
    /// none.
    fn take_set_aside(&mut self, slot: usize) -> bool {
        if let Some(eof) = self.eof {
            // Nothing is read past an end of file a read found.
            let end = self.src_start + eof;
            self.s
                .ranges_mut()
                .set_aside
                .retain(|r| r.span.src_off < end);
        }
        let set_aside = &mut self.s.ranges_mut().set_aside;
        let Some(i) = (0..set_aside.len()).min_by_key(|&i| set_aside[i].seq) else {
            return false;
        };
        let r = set_aside.swap_remove(i);
        let Some(c) = self.chunk(slot) else {
            return false;
        };
        c.seq = r.seq;
        S::start(&mut c.s, r.span);
        c.probing = r.probing;
        if r.probing {
            self.prober = Some(slot);
        }
        true
    }

    /// Gives every chunk back, because the job stalled holding more than
    /// its user's share while another user waits: what is in flight is
    /// cancelled, and as each operation comes back its result says how far
    /// it got, so the rest of its range, set aside, starts exactly where
    /// the destination's bytes stop: nothing is lost or written twice.
    /// True if the chunks are on their way back.
    pub(crate) fn reclaim(&mut self, owner: Owner, io: &mut Io, out: &mut Vec<Returned>) -> bool {
        if !S::reclaimable(self)
            || self.failure.is_some()
            || self.live_chunks() == 0
            || self.s.ranges().reclaiming
        {
            return false;
        }
        self.s.ranges_mut().reclaiming = true;
        self.cancel_chunks(io);
        self.pump(owner, io, true, out);
        true
    }

    /// While reclaiming, an idle chunk sets its range aside and lets go
    /// instead of moving on (`Strategy::divert`): true if it did.
    pub(super) fn divert_reclaimed(&mut self, slot: usize, out: &mut Vec<Returned>) -> bool {
        if !self.s.ranges().reclaiming {
            return false;
        }
        let Some(c) = self.chunks[slot].as_ref() else {
            return true;
        };
        let (span, seq, probing) = (S::rest(&c.s), c.seq, c.probing);
        if span.len > 0 {
            let r = SetAside { seq, span, probing };
            self.s.ranges_mut().set_aside.push(r);
        }
        self.release(slot, out);
        if self.live_chunks() == 0 {
            self.s.ranges_mut().reclaiming = false;
        }
        true
    }

    /// Whether an operation came back cancelled by `reclaim`: nothing moved.
    pub(super) fn taken_back(&self, result: i32) -> bool {
        self.s.ranges().reclaiming && (result == -libc::ECANCELED || errno::interrupted(-result))
    }

    /// The job's ftruncate completed (`Strategy::side`): whether the chunks
    /// are moved on after it.
    pub(super) fn truncated(&mut self, result: i32) -> Result<bool, TransferError> {
        let ranges = self.s.ranges_mut();
        ranges.restoring = None;
        if std::mem::take(&mut ranges.sizing) {
            ranges.sized = true;
            if result < 0 && self.failure.is_none() {
                return Err(TransferError::os(
                    "ftruncate of the destination file to its final size (it ends in a hole)",
                    -result,
                ));
            }
            // A failure meanwhile restores the destination next.
            return Ok(true);
        }
        if result < 0 {
            tracing::warn!(
                "truncating the destination back to its {} bytes after a failure: {}",
                self.orig_dst_size,
                std::io::Error::from_raw_os_error(-result)
            );
        }
        Ok(false)
    }

    /// After the chunks moved on (`Strategy::after_pump`): a failed job's
    /// destination restored, a copied one that ends in a hole sized.
    pub(super) fn settle_destination(&mut self, owner: Owner, io: &mut Io) {
        self.restore_destination(owner, io);
        self.size_destination(owner, io);
    }

    /// Whether the job, holding no chunk, is done (`Strategy::finished`).
    pub(super) fn ranges_finished(&self) -> bool {
        let ranges = self.s.ranges();
        let sized = ranges.sized || !self.holes.resize_at_end(self.dst_start + self.end());
        S::side_op(self).is_none()
            && ranges.restoring.is_none()
            && (self.failure.is_some()
                || (S::all_read(self) && ranges.set_aside.is_empty() && sized))
    }

    /// After a failure, once nothing is in flight, truncates a regular-file
    /// destination that was written back to its size at admission: every
    /// strategy leaves a failed `--in-place` destination the same way.
    fn restore_destination(&mut self, owner: Owner, io: &mut Io) {
        if self.failure.is_none()
            || !self.touched
            || self.ends.dst_kind != FdKind::File
            || self.live_chunks() > 0
            || S::side_op(self).is_some()
            || self.s.ranges().restoring.is_some()
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
            Ok(ud) => self.s.ranges_mut().restoring = Some(ud),
            Err(e) => tracing::warn!("queueing the truncate of a failed job's destination: {e}"),
        }
    }

    /// Once every byte is in, truncates a destination that ends in a hole
    /// (which no write reached) to its final size.
    fn size_destination(&mut self, owner: Owner, io: &mut Io) {
        let ranges = self.s.ranges();
        if self.failure.is_some()
            || ranges.sized
            || !self.holes.resize_at_end(self.dst_start + self.end())
            || ranges.restoring.is_some()
            || self.live_chunks() > 0
            || !ranges.set_aside.is_empty()
            || self.holes.busy(false)
            || !S::all_read(self)
        {
            return;
        }
        let size = self.orig_dst_size.max(self.dst_start + self.end());
        let dst = self.ends.shared_dst();
        match io.ftruncate(owner, CopyStep::Truncate.tag(), dst, size) {
            Ok(ud) => {
                let ranges = self.s.ranges_mut();
                ranges.restoring = Some(ud);
                ranges.sizing = true;
            }
            Err(e) => {
                self.failure.get_or_insert(ring_failed::<S>(e));
            }
        }
    }
}
