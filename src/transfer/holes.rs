//! Holes: a copy from a regular file to a regular file writes none of the
//! source's holes, as `cp --sparse=auto` does. A worker maps where the
//! source's data is (io/op/data_map.rs: SEEK_DATA and SEEK_HOLE, which can
//! wait on a file system and so never run on the loop thread), and the
//! pipeline's `next_range` (pipeline.rs) hands chunks the data only:
//! every strategy that takes its ranges there keeps the holes. A hole is
//! skipped where the destination has no bytes yet and punched
//! (FALLOC_FL_PUNCH_HOLE) where an existing destination has some; a file
//! system that cannot punch gets the zeros written instead. A destination
//! the job extends gets its size before the first write, so no write
//! extends it (see `Holes::size_first`); one that was not, and ends in a
//! hole, is truncated to its size at the end.
//!
//! A hole counts as moved once it is skipped (or punched): progress and
//! the Completed event count the job's range, holes included, as rsync's
//! progress counts a sparse file's size (and as today's byte counts, which
//! the in-place end truncation and RLIMIT_FSIZE are measured with). What
//! is charged to rate limits, fair shares and the per-strategy stats is
//! the data alone (`hole_bytes` is taken off).
//!
//! `--sparse=always` also turns blocks of zeros read from the data into
//! holes; only the buffer strategies see the bytes (buffered.rs).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use ringxfer_ipc::{FailureKind, Sparse};

use super::pipeline::{ring_failed, Pipeline, Strategy};
use super::step::CopyStep;
use super::{FdKind, TransferError};
use crate::io::op::data_map::Mapped;
use crate::io::op::DataMap;
use crate::io::ops::Owner;
use crate::io::Io;

/// Data segments one map asks for at most: a file with more is mapped in
/// windows of this many (16 KiB of offsets each), the next asked when the
/// chunks have taken the last one's ranges.
pub(crate) const MAP_SEGMENTS: usize = 1024;

/// What a job does with holes, decided at admission.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct HolePlan {
    /// Map the source's data and copy only that.
    pub map: bool,
    /// Turn blocks of zeros in the data into holes (`--sparse=always`):
    /// only where a strategy sees the bytes.
    pub zeros: bool,
}

impl HolePlan {
    /// What `sparse` asks of a job between these ends. Only a regular file
    /// into a regular file written at offsets (not O_APPEND) can keep
    /// holes, and a source is mapped only when it may have some: its
    /// allocated blocks (`blocks` of 512 bytes) fall short of its `size` by
    /// at least a block (`blksize`), as cp decides. Most files are dense,
    /// and a map costs a worker hand-off.
    pub(crate) fn of(sparse: Sparse, ends: [FdKind; 2], append: bool, src: SrcAlloc) -> HolePlan {
        if sparse == Sparse::Never || ends != [FdKind::File; 2] || append {
            return HolePlan::default();
        }
        let allocated = src.blocks.saturating_mul(512);
        HolePlan {
            map: src.size.saturating_sub(allocated) >= u64::from(src.blksize.max(512)),
            zeros: sparse == Sparse::Always,
        }
    }

    pub(crate) fn any(self) -> bool {
        self.map || self.zeros
    }
}

/// What statx said about the source's allocation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct SrcAlloc {
    pub size: u64,
    pub blocks: u64,
    pub blksize: u32,
}

/// A range of the transfer a chunk carries: `len` bytes from `src_off` to
/// `dst_off`, `rel` bytes from the start of the transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Range {
    pub rel: u64,
    pub src_off: u64,
    pub dst_off: u64,
    pub len: u64,
}

/// Where the map stands.
#[derive(Debug)]
enum MapState {
    /// No map: every byte is data (`--sparse=never`, a dense source, a
    /// file system that cannot say, or a map that failed).
    Dense,
    /// Mapped up to `mapped_to` (relative); `segments` is the data not yet
    /// handed out, ascending and relative.
    Mapped {
        segments: VecDeque<(u64, u64)>,
        mapped_to: u64,
    },
}

/// A pipeline's holes: its map of the source's data, the holes to punch
/// into an existing destination, and what was skipped.
#[derive(Debug)]
pub(crate) struct Holes {
    plan: HolePlan,
    state: MapState,
    /// The end of what is mapped (relative): the job's total (its size
    /// hint, for a file read to its end).
    end: u64,
    /// Segments are widened to multiples of this (direct's alignment), so
    /// that every range a chunk gets stays aligned.
    grain: u64,
    /// The map in flight, and where the worker writes it.
    map_op: Option<u64>,
    out: Arc<Mutex<Mapped>>,
    /// Destination ranges (absolute) that hold bytes and must become holes.
    punches: VecDeque<(u64, u64)>,
    punch_op: Option<u64>,
    /// Relative ranges to copy after all, zeros and all: the destination
    /// refused to punch them.
    refill: Vec<(u64, u64)>,
    /// Bytes skipped as holes (counted in `moved` too).
    pub(crate) bytes: u64,
    /// The transfer ends in a hole: nothing writes its last byte, so the
    /// destination is truncated to its size at the end (unless it had it
    /// from the start).
    pub(crate) ends_in_hole: bool,
    /// The destination's final size (absolute), given to it before any
    /// byte is written so that no write extends it: XFS preallocates past
    /// the end of a file a write extends, and writeback can make that
    /// preallocation real inside a hole a later write leaves behind.
    size_first: Option<u64>,
    /// Whether that is still to be queued, and the ftruncate in flight.
    size_queued: bool,
    size_op: Option<u64>,
    /// Done: the destination has its size from the start.
    sized: bool,
}

impl Holes {
    /// `end`: the job's total; `grain`: direct's alignment, else 1.
    pub(crate) fn new(plan: HolePlan, end: Option<u64>, grain: u64) -> Holes {
        let end = end.unwrap_or(0);
        let state = if plan.map && end > 0 {
            MapState::Mapped {
                segments: VecDeque::new(),
                mapped_to: 0,
            }
        } else {
            MapState::Dense
        };
        Holes {
            plan,
            state,
            end,
            grain: grain.max(1),
            map_op: None,
            out: Arc::default(),
            punches: VecDeque::new(),
            punch_op: None,
            refill: Vec::new(),
            bytes: 0,
            ends_in_hole: false,
            size_first: None,
            size_queued: false,
            size_op: None,
            sized: false,
        }
    }

    /// A job that keeps holes and extends its destination (from
    /// `dst_start`, `total` bytes, past its `orig` size) gives it its size
    /// first.
    pub(crate) fn sized_first(mut self, dst_start: u64, total: Option<u64>, orig: u64) -> Holes {
        let end = total.map(|t| dst_start.saturating_add(t));
        self.size_first = end.filter(|&e| self.plan.any() && e > orig);
        self
    }

    /// Whether the destination needs its size set at the end, where the
    /// source's bytes end at `end` (absolute, in the destination): it ends
    /// in a hole and was not sized first, or it was sized to more than the
    /// source held.
    pub(crate) fn resize_at_end(&self, end: u64) -> bool {
        match self.size_first.filter(|_| self.sized) {
            Some(size) => end < size,
            None => self.ends_in_hole,
        }
    }

    pub(crate) fn plan(&self) -> HolePlan {
        self.plan
    }

    /// Whether ranges at `at` wait for (the next window of) the map.
    fn waiting(&self, at: u64) -> bool {
        matches!(self.state, MapState::Mapped { mapped_to, .. } if at >= mapped_to && at < self.end)
    }

    /// Whether a map or a punch is in flight, or (unless the job `failed`)
    /// a punch is still to come or ranges wait to be copied after a refused
    /// punch: the job is not done.
    pub(crate) fn busy(&self, failed: bool) -> bool {
        self.map_op.is_some()
            || self.punch_op.is_some()
            || self.size_op.is_some()
            || (!failed && (!self.punches.is_empty() || !self.refill.is_empty()))
    }

    /// The operations in flight, to cancel when the job fails.
    pub(crate) fn in_flight(&self) -> impl Iterator<Item = u64> {
        self.map_op
            .into_iter()
            .chain(self.punch_op)
            .chain(self.size_op)
    }

    /// The map's segments (absolute, as the worker wrote them) from
    /// `from` (relative), as relative ranges widened to the grain, and where
    /// the map now stops. A file that ends before the map's end (it shrank,
    /// or a length was asked past its end) is mapped to its end only: what
    /// lies past it is read as data, and that read finds the end as it
    /// always did (the job ends there, or fails short), rather than a hole
    /// making up the missing bytes.
    fn take_window(&mut self, src_start: u64, from: u64) -> (Vec<(u64, u64)>, u64) {
        let Ok(mapped) = self.out.lock() else {
            return (Vec::new(), self.end);
        };
        self.end = self
            .end
            .min(mapped.size.saturating_sub(src_start).max(from));
        let g = self.grain;
        let mut mapped_to = mapped.mapped_to.saturating_sub(src_start).min(self.end);
        let mut out: Vec<(u64, u64)> = Vec::with_capacity(mapped.segments.len());
        for &(a, b) in &mapped.segments {
            let a = (a.saturating_sub(src_start) / g * g).max(from);
            let b = b.saturating_sub(src_start).div_ceil(g).saturating_mul(g);
            let b = b.min(self.end);
            match out.last_mut() {
                Some(last) if a <= last.1 => last.1 = last.1.max(b),
                _ if a < b => out.push((a, b)),
                _ => {}
            }
        }
        // A widened last segment may reach past where the window stopped;
        // the next window starts after it.
        if let Some(&(_, b)) = out.last() {
            mapped_to = mapped_to.max(b);
        }
        (out, mapped_to)
    }
}

impl<S: Strategy> Pipeline<S> {
    /// Bytes skipped as holes (`moved` counts them too).
    pub(crate) fn hole_bytes(&self) -> u64 {
        self.holes.bytes
    }

    /// Queues what the holes need next: the map of the next window once
    /// the chunks have taken every range of the last, and the next punch.
    /// Strategies call it when they start; `pump` after every step.
    pub(super) fn drive_holes(&mut self, owner: Owner, io: &mut Io) {
        if self.failure.is_some() {
            return;
        }
        let queued = self
            .queue_size(owner, io)
            .and_then(|()| self.queue_map(owner, io))
            .and_then(|()| self.queue_punch(owner, io));
        if let Err(e) = queued {
            self.failure.get_or_insert(e);
            self.cancel_chunks(io);
        }
    }

    fn queue_map(&mut self, owner: Owner, io: &mut Io) -> Result<(), TransferError> {
        let h = &self.holes;
        if h.map_op.is_some() || !h.waiting(self.assigned) || self.eof.is_some() {
            return Ok(());
        }
        let op = DataMap::new(
            self.ends.shared_src(),
            self.src_start + self.assigned,
            self.src_start + h.end,
            MAP_SEGMENTS,
            Arc::clone(&h.out),
        );
        let ud = io
            .queue_op(owner, CopyStep::DataMap.tag(), op)
            .map_err(ring_failed::<S>)?;
        self.holes.map_op = Some(ud);
        Ok(())
    }

    fn queue_size(&mut self, owner: Owner, io: &mut Io) -> Result<(), TransferError> {
        let h = &self.holes;
        let Some(size) = h.size_first.filter(|_| !h.size_queued) else {
            return Ok(());
        };
        let dst = self.ends.shared_dst();
        let ud = io
            .ftruncate(owner, CopyStep::Size.tag(), dst, size)
            .map_err(ring_failed::<S>)?;
        self.holes.size_queued = true;
        self.holes.size_op = Some(ud);
        self.touched = true;
        Ok(())
    }

    fn queue_punch(&mut self, owner: Owner, io: &mut Io) -> Result<(), TransferError> {
        if self.holes.punch_op.is_some() {
            return Ok(());
        }
        let Some(&(a, b)) = self.holes.punches.front() else {
            return Ok(());
        };
        let dst = self.ends.shared_dst();
        let ud = io
            .punch_hole(owner, CopyStep::Punch.tag(), dst, a, b - a)
            .map_err(ring_failed::<S>)?;
        self.holes.punch_op = Some(ud);
        self.touched = true;
        Ok(())
    }

    /// A map or a punch completed: whether the chunks move on after it.
    pub(super) fn on_hole_step(
        &mut self,
        step: CopyStep,
        result: i32,
    ) -> Result<bool, TransferError> {
        match step {
            CopyStep::DataMap => {
                self.holes.map_op = None;
                self.after_map(result);
                Ok(true)
            }
            CopyStep::Punch => {
                self.holes.punch_op = None;
                let punched = self.holes.punches.pop_front();
                self.after_punch(punched, result).map(|()| true)
            }
            CopyStep::Size => {
                self.holes.size_op = None;
                match -result {
                    e if e <= 0 => {
                        self.holes.sized = true;
                        Ok(true)
                    }
                    libc::ECANCELED if self.failure.is_some() => Ok(true),
                    errno => Err(TransferError::os(
                        "ftruncate of the destination file to the source's size, before a sparse copy",
                        errno,
                    )),
                }
            }
            _ => Ok(false),
        }
    }

    fn after_map(&mut self, result: i32) {
        if self.failure.is_some() {
            return;
        }
        if result < 0 {
            // EINVAL: a file system that cannot say where its holes are.
            // The rest is copied as data, which is always right.
            tracing::debug!(
                "mapping the source's holes: {}; the rest is copied as data",
                std::io::Error::from_raw_os_error(-result)
            );
            self.holes.state = MapState::Dense;
            return;
        }
        let (window, to) = self.holes.take_window(self.src_start, self.assigned);
        if let MapState::Mapped {
            segments,
            mapped_to,
        } = &mut self.holes.state
        {
            segments.extend(window);
            *mapped_to = to;
        }
        // A file that is all hole (or a window that is) has no range for
        // a chunk to take: its holes are skipped now.
        self.skip_holes();
    }

    fn after_punch(
        &mut self,
        punched: Option<(u64, u64)>,
        result: i32,
    ) -> Result<(), TransferError> {
        let Some((a, b)) = punched else {
            return Ok(());
        };
        match -result {
            e if e <= 0 => Ok(()),
            libc::ECANCELED if self.failure.is_some() => Ok(()),
            // No punching here (a FUSE or older file system): the hole's
            // zeros are copied as data, and no more punches are tried.
            libc::EOPNOTSUPP | libc::ENOSYS | libc::EINVAL => {
                let mut refill: Vec<(u64, u64)> = std::iter::once((a, b))
                    .chain(self.holes.punches.drain(..))
                    .map(|(a, b)| (a - self.dst_start, b - self.dst_start))
                    .collect();
                let back: u64 = refill.iter().map(|(a, b)| b - a).sum();
                self.holes.bytes -= back;
                self.moved -= back;
                refill.reverse();
                self.holes.refill.extend(refill);
                Ok(())
            }
            errno => Err(TransferError::os(
                format!(
                    "punching a hole of {} bytes at offset {a} into the destination file",
                    b - a
                ),
                errno,
            )),
        }
    }

    /// Moves `assigned` over the holes from where it is: to the next data,
    /// to where the map stops, or to the end. Each hole counts as moved,
    /// and where the destination holds bytes it is queued to be punched.
    pub(super) fn skip_holes(&mut self) {
        let at = self.assigned;
        let h = &mut self.holes;
        let MapState::Mapped {
            segments,
            mapped_to,
        } = &mut h.state
        else {
            return;
        };
        while segments.front().is_some_and(|&(_, b)| b <= at) {
            segments.pop_front();
        }
        let to = match segments.front() {
            Some(&(a, _)) => a.max(at),
            None => (*mapped_to).min(h.end).max(at),
        };
        if to == at {
            return;
        }
        self.assigned = to;
        self.hole(at, to);
    }

    /// The relative range `a..b` is a hole in the destination.
    pub(super) fn hole(&mut self, a: u64, b: u64) {
        self.holes.bytes += b - a;
        self.moved += b - a;
        if b >= self.holes.end {
            self.holes.ends_in_hole = true;
        }
        // Where an existing destination has bytes, they must go. Up to the
        // grain past its end: should the punch be refused, the zeros copied
        // instead keep direct's alignment (the hole is widened no further
        // than that, as segments are).
        let existing = self.orig_dst_size.div_ceil(self.holes.grain) * self.holes.grain;
        let (a, b) = (self.dst_start + a, (self.dst_start + b).min(existing));
        if a < b {
            self.holes.punches.push_back((a, b));
        }
    }

    /// Whether ranges past `assigned` wait for the map, or for the
    /// destination's size to be set first.
    pub(super) fn holes_pending(&self) -> bool {
        let h = &self.holes;
        h.waiting(self.assigned) || (h.size_first.is_some() && !h.sized)
    }

    /// The next range to copy after a refused punch, if any.
    pub(super) fn take_refill(&mut self, max: u64) -> Option<(u64, u64)> {
        let (a, b) = self.holes.refill.pop()?;
        let len = (b - a).min(max.max(1));
        if a + len < b {
            self.holes.refill.push((a + len, b));
        }
        Some((a, len))
    }

    /// Where the next data ends, from `assigned`: the end of its segment,
    /// or `end` where everything is data (no map, or past the map's end).
    pub(super) fn data_end(&self, end: u64) -> u64 {
        match &self.holes.state {
            MapState::Mapped { segments, .. } => match segments.front() {
                Some(&(_, b)) => b.min(end),
                None if self.assigned >= self.holes.end => end,
                None => self.assigned,
            },
            MapState::Dense => end,
        }
    }

    /// Whether refused punches left ranges to copy.
    pub(super) fn has_refill(&self) -> bool {
        !self.holes.refill.is_empty()
    }
}

/// Whether `bytes` are all zero.
pub(crate) fn all_zero(bytes: &[u8]) -> bool {
    // SAFETY: every bit pattern is a valid u128; `align_to` puts only
    // whole, aligned u128s in the middle.
    let (head, body, tail) = unsafe { bytes.align_to::<u128>() };
    head.iter().all(|&b| b == 0) && body.iter().all(|&w| w == 0) && tail.iter().all(|&b| b == 0)
}

/// Refuses a strategy that cannot see the bytes it moves when blocks of
/// zeros are to become holes.
pub(crate) fn zeros_unseen(strategy: &str) -> TransferError {
    TransferError::new(
        FailureKind::InvalidRequest,
        format!(
            "sparse \"always\" turns blocks of zeros into holes, and the {strategy} strategy moves bytes without reading them: use auto, buffered, uncached or direct, or sparse \"auto\""
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holes_with(grain: u64, end: u64, segments: &[(u64, u64)], mapped_to: u64) -> Holes {
        let h = Holes::new(
            HolePlan {
                map: true,
                zeros: false,
            },
            Some(end),
            grain,
        );
        if let Ok(mut m) = h.out.lock() {
            m.segments = segments.to_vec();
            m.mapped_to = mapped_to;
            m.size = u64::MAX;
        }
        h
    }

    #[test]
    fn direct_segments_are_widened_to_the_alignment_and_merged() {
        // From source offset 8192: blocks of 1 KiB data map unaligned to
        // a 4 KiB O_DIRECT alignment.
        let mut h = holes_with(
            4096,
            40_000,
            &[(9216, 10_240), (13_312, 14_336), (30_720, 50_000)],
            48_192,
        );
        let (w, to) = h.take_window(8192, 0);
        assert_eq!(w, [(0, 8192), (20_480, 40_000)]);
        assert_eq!(to, 40_000);
        for (a, b) in w {
            assert_eq!(a % 4096, 0, "a range starts aligned");
            assert!(
                b % 4096 == 0 || b == 40_000,
                "and ends aligned or at the end"
            );
        }
    }

    #[test]
    fn a_window_that_stops_early_resumes_after_its_widened_last_segment() {
        let mut h = holes_with(4096, 1 << 20, &[(100, 5000)], 5000);
        let (w, to) = h.take_window(0, 0);
        assert_eq!((w, to), (vec![(0, 8192)], 8192));
        // The next window never reaches back before where this one stopped.
        let mut h = holes_with(4096, 1 << 20, &[(5000, 9000)], 1 << 20);
        let (w, _) = h.take_window(0, 8192);
        assert_eq!(w, [(8192, 12_288)]);
    }

    #[test]
    fn a_file_shorter_than_the_range_is_mapped_to_its_end_only() {
        let mut h = holes_with(1, 1 << 20, &[(100, 5000)], 1 << 20);
        if let Ok(mut m) = h.out.lock() {
            m.size = 6000;
        }
        let (w, to) = h.take_window(0, 0);
        assert_eq!((w, to, h.end), (vec![(100, 5000)], 6000, 6000));
    }

    #[test]
    fn only_regular_files_written_at_offsets_that_may_have_holes_are_mapped() {
        let file = [FdKind::File; 2];
        let sparse = SrcAlloc {
            size: 1 << 20,
            blocks: 8,
            blksize: 4096,
        };
        let dense = SrcAlloc {
            blocks: 2048,
            ..sparse
        };
        let mapped = |s, ends, append, src| HolePlan::of(s, ends, append, src).map;
        assert!(mapped(Sparse::Auto, file, false, sparse));
        assert!(!mapped(Sparse::Auto, file, false, dense));
        assert!(!mapped(Sparse::Never, file, false, sparse));
        assert!(!mapped(Sparse::Auto, file, true, sparse));
        assert!(!mapped(
            Sparse::Auto,
            [FdKind::File, FdKind::Socket],
            false,
            sparse
        ));
        assert!(HolePlan::of(Sparse::Always, file, false, dense).zeros);
        assert!(!HolePlan::of(Sparse::Auto, file, false, dense).zeros);
    }

    #[test]
    fn zeros_are_found_whatever_the_alignment() {
        let mut v = vec![0u8; 4099];
        assert!(all_zero(&v[1..]));
        v[4098] = 1;
        assert!(!all_zero(&v[3..]));
        assert!(all_zero(&v[..4098]));
    }
}
