//! The direct, uncached and buffered strategies: reads into pool buffers,
//! writes out of them.
//!
//! `direct` opens nothing itself: the descriptors were switched to O_DIRECT
//! at admission (and are switched back when the job ends), reads and writes
//! start at offsets aligned to the file system's O_DIRECT alignment and have
//! aligned lengths, and the buffers are page-aligned and registered with the
//! ring (READ_FIXED/WRITE_FIXED). The last block of a file whose size is not
//! aligned is written padded with zeros, and the destination is truncated to
//! its exact size at the end. `uncached` is the same machine with buffered
//! I/O and RWF_DONTCACHE: no alignment, pages dropped once written.
//! `buffered` is plain page-cache I/O into the registered buffers, for
//! small files (see transfer::choose).
//!
//! Before the first byte moves, the destination of a job of 4 MiB or more is
//! preallocated to its final size (fallocate), so a full disk fails the job
//! at once rather than after minutes; a failed job truncates the destination
//! back to the size it had. Only direct truncates after a success (to cut
//! its padding): uncached writes leave the file at its final size already.
//!
//! When the end of a direct transfer is not aligned and the destination has
//! data after it (a range written into the middle of a file), padding would
//! overwrite that data; then the last partial block (the "tail") is written
//! buffered instead, with O_DIRECT switched off on the destination for that
//! one write, after every other chunk is done.
//!
//! Each chunk is a pool buffer with one operation in flight: read its range,
//! then write it, then take the next range. A stream source (a socket) is
//! read by one chunk at a time, which fills its whole buffer before the next
//! chunk reads, so every write but the last stays aligned; a stream
//! destination takes chunks strictly in the order their bytes were read.
//! Into a socket, big writes are SEND_ZC from the registered buffer: the
//! kernel sends straight from it and says when it is done with it in a
//! second completion, the notification, and only then is the buffer reused.
//!
//! The chunk bookkeeping is the pipeline's (pipeline.rs): this file is what
//! the buffer strategies add to it.

use std::rc::Rc;

use ringxfer_ipc::FailureKind;

use super::dio::{restore_flags, SavedFlags};
use super::errno::{self, Action, Side};
use super::holes::{all_zero, Holes};
use super::pipeline::{raw, ring_failed, Chunk, Pipeline, Returned, Strategy};
use super::step::CopyStep;
use super::{Endpoints, FdKind, Shape, TransferError};
use crate::io::buffer_pool::BufRef;
use crate::io::ops::Owner;
use crate::io::queue::{BufIo, BufWhat, RwOpts};
use crate::io::Io;

/// How bytes go through the buffers.
#[derive(Debug, Clone, Copy)]
pub(crate) enum IoMode {
    /// O_DIRECT: offsets and lengths aligned to `align`.
    Direct { align: u64 },
    /// Buffered with RWF_DONTCACHE.
    Uncached,
    /// Buffered through the page cache.
    Buffered,
}

impl IoMode {
    /// `n` rounded up to the O_DIRECT alignment (unchanged without one).
    fn aligned_up(self, n: u64) -> u64 {
        match self {
            IoMode::Direct { align } => n.div_ceil(align) * align,
            IoMode::Uncached | IoMode::Buffered => n,
        }
    }

    /// `n` rounded down to the O_DIRECT alignment, at least one block.
    fn aligned_down(self, n: u64) -> u64 {
        match self {
            IoMode::Direct { align } => (n / align).max(1) * align,
            IoMode::Uncached | IoMode::Buffered => n.max(1),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for fallocate.
    Prealloc,
    Copy,
    /// Waiting for the final (or, after a failure, the restoring) ftruncate.
    Truncate,
    Done,
}

/// What a chunk is doing with its buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Doing {
    Idle,
    Reading,
    Writing,
    /// Writing the tail with O_DIRECT off on the destination.
    WritingTail,
}

/// Destinations of at least this many bytes are preallocated before the
/// first byte moves; below it a job is a few writes, which fail with
/// ENOSPC as early as fallocate would.
const PREALLOC_MIN: u64 = 4 << 20;

/// Sends at least this large go zero-copy (SEND_ZC); smaller ones are
/// cheaper copied (plain SEND) than pinned and notified.
const ZC_MIN: u64 = 64 * 1024;

/// With `--sparse=always`, blocks of zeros this large (or direct's
/// alignment, if larger) become holes: a page, the block of most file
/// systems.
const ZERO_BLOCK: u64 = 4096;

/// A chunk's buffer and the range it carries.
pub(crate) struct BufChunk {
    /// The chunk's buffer while no operation holds it; an operation takes it
    /// into its op-table entry and the completion brings it back.
    buf: Option<BufRef>,
    /// Offset of the range from the start of the transfer.
    rel: u64,
    /// Bytes of the range that are data.
    want: u64,
    /// Bytes each operation moves: `want` rounded up to the alignment.
    len: u64,
    /// Bytes of the current read or write done so far.
    done: u64,
    doing: Doing,
    /// Bytes of `want` whose write was skipped as blocks of zeros
    /// (`--sparse=always`), counted as holes when the write completes.
    zeros: u64,
    /// The operation in flight carries RWF_DONTCACHE (uncached).
    dontcache: bool,
}

impl BufChunk {
    /// Bytes the chunk's buffer holds (it is idle, so it has it).
    fn capacity(&self) -> u64 {
        self.buf.as_ref().map_or(0, |b| u64::from(b.len))
    }
}

/// A transfer moved through pool buffers.
pub(crate) type BufferCopy = Pipeline<Buffer>;

/// What the buffer strategies keep beyond the pipeline's chunk bookkeeping.
pub(crate) struct Buffer {
    mode: IoMode,
    fixed: bool,
    /// Bytes to move; for a stream of unknown length, u64::MAX.
    total: u64,
    /// The source is a stream: read by one chunk at a time, until its end.
    src_stream: bool,
    /// The destination is a stream: written in read order, by send.
    dst_stream: bool,
    /// The destination is an O_APPEND file: written in read order, at its end.
    dst_append: bool,
    /// Sends go zero-copy while the kernel takes SEND_ZC.
    zc: bool,
    /// Bytes at the end written buffered (see the module comment); 0 once done.
    tail: u64,
    phase: Phase,
    side_op: Option<u64>,
    saved_flags: Vec<SavedFlags>,
    /// CRC-32C of the source as read, when verification is asked for: the
    /// bytes pass through our buffers anyway, so the source need not be
    /// read twice.
    source_crc: Option<InOrderCrc>,
    /// Source reads pass RWF_DONTCACHE (uncached), until a file system
    /// without a page cache of its own (procfs, sysfs) refuses it.
    src_dontcache: bool,
    /// The same for destination writes.
    dst_dontcache: bool,
    /// fallocate extended the destination to the hint's end.
    preallocated: bool,
    /// Blocks of zeros read from the data are not written, where the
    /// destination has no bytes yet (`--sparse=always`): 0, or the size of
    /// such a block (a multiple of direct's alignment).
    zero_block: u64,
}

/// A CRC-32C over pieces that complete out of order: each piece's CRC is
/// computed when it arrives and folded in once every byte before it is.
#[derive(Debug)]
struct InOrderCrc {
    next: u64,
    crc: u32,
    /// Pieces ahead of `next`: (offset, length, CRC). At most one per chunk.
    ahead: Vec<(u64, u64, u32)>,
}

impl InOrderCrc {
    fn add(&mut self, rel: u64, bytes: &[u8]) {
        self.ahead
            .push((rel, bytes.len() as u64, crc32c::crc32c(bytes)));
        while let Some(i) = self.ahead.iter().position(|&(r, _, _)| r == self.next) {
            let (_, len, crc) = self.ahead.swap_remove(i);
            self.crc = crc32c::crc32c_combine(self.crc, crc, len as usize);
            self.next += len;
        }
    }
}

impl Strategy for Buffer {
    type Lent = BufRef;
    type Chunk = BufChunk;
    const OP_NAME: &'static str = "operation";

    fn chunk(buf: BufRef) -> BufChunk {
        BufChunk {
            buf: Some(buf),
            rel: 0,
            want: 0,
            len: 0,
            done: 0,
            doing: Doing::Idle,
            zeros: 0,
            dontcache: false,
        }
    }

    fn refused(buf: BufRef) -> Returned {
        Returned::Buffer(buf)
    }

    fn give_back(chunk: BufChunk, _failed: bool) -> Option<Returned> {
        // An idle chunk holds its buffer: no operation is in flight.
        chunk.buf.map(Returned::Buffer)
    }

    /// The buffer returns to the chunk that lent it.
    fn take_back(p: &mut BufferCopy, step: CopyStep, buf: BufRef, out: &mut Vec<Returned>) {
        match step.slot().and_then(|slot| p.chunk(slot)) {
            Some(chunk) if chunk.s.buf.is_none() => chunk.s.buf = Some(buf),
            _ => {
                debug_assert!(false, "a buffer came back to no chunk");
                out.push(Returned::Buffer(buf));
            }
        }
    }

    /// With `yield_bufs`, other jobs wait for buffers, so a chunk whose
    /// range is done gives its buffer back.
    fn step(
        p: &mut BufferCopy,
        slot: usize,
        owner: Owner,
        io: &mut Io,
        yield_bufs: bool,
        out: &mut Vec<Returned>,
    ) -> Result<(), TransferError> {
        let Some(doing) = p.chunks[slot].as_ref().map(|c| c.s.doing) else {
            return Ok(());
        };
        match doing {
            Doing::Reading => p.read(slot, owner, io),
            Doing::Writing if p.in_order => p.send(slot, owner, io),
            // The rest of the chunk was zeros, left as holes: it is idle.
            Doing::Writing if p.skip_zeros(slot) => Self::step(p, slot, owner, io, yield_bufs, out),
            Doing::Writing | Doing::WritingTail => p.write(slot, owner, io),
            Doing::Idle => {
                let more = if p.s.src_stream {
                    !p.src_done
                } else {
                    p.range_ready(p.body()) || p.tail_now() || p.may_probe()
                };
                if p.s.phase != Phase::Copy || !more || yield_bufs {
                    p.release(slot, out);
                    return Ok(());
                }
                if p.s.src_stream {
                    p.next_stream_read(slot, owner, io)
                } else if p.take_range(slot, owner, io)? {
                    Ok(())
                } else {
                    p.release(slot, out);
                    Ok(())
                }
            }
        }
    }

    fn complete(
        p: &mut BufferCopy,
        step: CopyStep,
        _slot: usize,
        result: i32,
        _linked: bool,
    ) -> Result<(), TransferError> {
        match step {
            CopyStep::In(i) if p.s.src_stream => p.after_recv(i, result),
            CopyStep::In(i) => p.after_read(i, result),
            CopyStep::Out(i) if p.in_order => p.after_send(i, result, false),
            CopyStep::ZcSent(i) => p.after_send(i, result, true),
            CopyStep::ZcNotif(i) => {
                if let Some(chunk) = p.chunk(i) {
                    chunk.notifs = chunk.notifs.saturating_sub(1);
                }
                Ok(())
            }
            CopyStep::Out(i) => p.after_write(i, result),
            // Readiness after EAGAIN (or an error the retried operation
            // will report): the chunk issues its step again.
            _ => Ok(()),
        }
    }

    fn side(p: &mut BufferCopy, step: CopyStep, result: i32) -> Result<bool, TransferError> {
        match step {
            CopyStep::Prealloc => {
                p.s.side_op = None;
                p.after_prealloc(result).map(|()| true)
            }
            CopyStep::Truncate => {
                p.s.side_op = None;
                p.s.phase = Phase::Done;
                if result < 0 && p.failure.is_none() {
                    return Err(TransferError::os(
                        "ftruncate of the destination file to its final size",
                        -result,
                    ));
                }
                Ok(true)
            }
            _ => Ok(true),
        }
    }

    fn side_op(p: &BufferCopy) -> Option<u64> {
        p.s.side_op
    }

    fn after_pump(p: &mut BufferCopy, owner: Owner, io: &mut Io) {
        p.maybe_finish(owner, io);
    }

    fn finished(p: &BufferCopy) -> bool {
        p.s.phase == Phase::Done && p.s.side_op.is_none()
    }

    /// Rounded down to the O_DIRECT alignment (at least one block), so
    /// every offset stays aligned.
    fn piece(&self, bytes: u64) -> u64 {
        self.mode.aligned_down(bytes)
    }

    fn on_end(&self) {
        for saved in &self.saved_flags {
            restore_flags(*saved);
        }
    }
}

impl BufferCopy {
    /// `plan.total` must be known (a regular file source). `orig_dst_size` is
    /// the destination's size at admission; `saved_flags` the descriptors'
    /// flags to put back when the job ends.
    pub(crate) fn new(
        ends: Rc<Endpoints>,
        plan: Shape,
        mode: IoMode,
        fixed: bool,
        max_chunks: usize,
        orig_dst_size: u64,
        saved_flags: Vec<SavedFlags>,
    ) -> BufferCopy {
        let src_stream = !ends.src_kind.seekable();
        let dst_stream = !ends.dst_kind.seekable();
        // A stream's length is unknown (u64::MAX here) unless asked for.
        let total = match plan.total {
            Some(t) => t,
            None if !src_stream => 0,
            None => u64::MAX,
        };
        let end = plan.dst_start.saturating_add(total);
        let tail = match (mode, plan.total) {
            (IoMode::Direct { align }, Some(total)) if end % align != 0 && orig_dst_size > end => {
                (end % align).min(total)
            }
            _ => 0,
        };
        // Writing into the middle of a larger file with O_DIRECT, the tail
        // is written buffered and nothing past the hint is read: the hint
        // is taken as the length (a shrunk source still fails).
        let open_end = plan.open_end(ends.src_kind) && tail == 0;
        let (grain, zero_block) = match mode {
            IoMode::Direct { align } => (align, ZERO_BLOCK.div_ceil(align) * align),
            IoMode::Uncached | IoMode::Buffered => (1, ZERO_BLOCK),
        };
        let buffer = Buffer {
            mode,
            fixed,
            total,
            src_stream,
            dst_stream,
            dst_append: plan.dst_append,
            zc: true,
            tail,
            phase: Phase::Prealloc,
            side_op: None,
            saved_flags,
            source_crc: None,
            src_dontcache: matches!(mode, IoMode::Uncached),
            dst_dontcache: matches!(mode, IoMode::Uncached),
            preallocated: false,
            zero_block: if plan.holes.zeros { zero_block } else { 0 },
        };
        let mut copy = Pipeline::with(ends, &plan, max_chunks.max(1), orig_dst_size, buffer);
        copy.in_order = dst_stream || plan.dst_append;
        copy.open_end = open_end;
        // The unaligned tail is copied as it is, holes or not.
        copy.holes = Holes::new(plan.holes, Some(total - tail), grain).sized_first(
            plan.dst_start,
            plan.total,
            orig_dst_size,
        );
        copy
    }

    /// Computes the source's CRC-32C as its bytes are read (file sources).
    pub(crate) fn checksum_source(&mut self) {
        // Holes skipped are never read: verification reads the source again.
        if !self.s.src_stream && !self.holes.plan().map {
            self.s.source_crc = Some(InOrderCrc {
                next: 0,
                crc: 0,
                ahead: Vec::with_capacity(self.chunks.len()),
            });
        }
    }

    /// The source's CRC-32C, once every byte of it has been read.
    pub(crate) fn source_checksum(&self) -> Option<u32> {
        self.s
            .source_crc
            .as_ref()
            .filter(|c| c.next == self.end() && c.ahead.is_empty())
            .map(|c| c.crc)
    }

    pub(crate) fn strategy(&self) -> ringxfer_ipc::Strategy {
        use ringxfer_ipc::Strategy;
        match self.s.mode {
            IoMode::Direct { .. } => Strategy::Direct,
            IoMode::Uncached => Strategy::Uncached,
            IoMode::Buffered => Strategy::Buffered,
        }
    }

    /// Bytes the job moves, as far as is known: past a size hint, what
    /// the reads found so far.
    pub(crate) fn total(&self) -> Option<u64> {
        let total = self.s.total;
        if self.open_end {
            return Some(self.eof.unwrap_or(total.max(self.assigned)));
        }
        (total != u64::MAX).then_some(total)
    }

    /// Where the source's bytes end, from the start of the transfer.
    fn end(&self) -> u64 {
        self.eof.unwrap_or(self.assigned)
    }

    /// Whether every byte to move has been handed to a chunk.
    fn all_assigned(&self) -> bool {
        if self.s.src_stream {
            self.src_done
        } else if self.open_end {
            self.eof.is_some() && !self.holes.busy(false)
        } else {
            self.assigned >= self.s.total && !self.holes.busy(false)
        }
    }

    /// Whether a chunk may read at or past the size hint: the hint is all
    /// handed out, no read found the end yet, and no chunk probes now.
    fn may_probe(&self) -> bool {
        self.open_end
            && self.eof.is_none()
            && self.prober.is_none()
            && self.assigned >= self.s.total
    }

    fn rw(&self) -> RwOpts {
        RwOpts {
            fixed: self.s.fixed && !matches!(self.s.mode, IoMode::Uncached),
            flags: match self.s.mode {
                IoMode::Direct { .. } | IoMode::Buffered => 0,
                IoMode::Uncached => libc::RWF_DONTCACHE,
            },
        }
    }

    /// How the destination is written: as `rw`, without RWF_DONTCACHE
    /// once its file system refused it.
    fn dst_rw(&self) -> RwOpts {
        let rw = self.rw();
        RwOpts {
            flags: if self.s.dst_dontcache { rw.flags } else { 0 },
            ..rw
        }
    }

    fn final_size(&self) -> u64 {
        self.orig_dst_size.max(self.dst_start + self.end())
    }

    /// Preallocates the destination, or goes straight to copying.
    pub(crate) fn start(&mut self, owner: Owner, io: &mut Io) {
        let total = self.s.total;
        if total == 0 && !self.open_end {
            self.s.phase = Phase::Done;
            return;
        }
        self.drive_holes(owner, io);
        if self.s.dst_stream || self.s.dst_append || total == u64::MAX || self.holes.plan().any() {
            // Nothing to preallocate: a socket, an end that moves, a
            // length nobody knows yet, or a file whose holes are kept.
            self.s.phase = Phase::Copy;
            return;
        }
        if total < PREALLOC_MIN {
            // A write or two: the first of them reports a full disk as early
            // as fallocate would, and fallocate is another op that io_uring
            // always hands to an io-wq worker.
            self.s.phase = Phase::Copy;
            return;
        }
        match io.fallocate(
            owner,
            CopyStep::Prealloc.tag(),
            self.ends.shared_dst(),
            self.dst_start,
            total,
        ) {
            Ok(ud) => {
                self.touched = true;
                self.s.preallocated = true;
                self.s.side_op = Some(ud);
            }
            Err(e) => {
                self.failure = Some(ring_failed::<Buffer>(e));
                self.s.phase = Phase::Done;
            }
        }
    }

    /// Bytes the chunks move with ordinary reads and writes.
    fn body(&self) -> u64 {
        self.s.total - self.s.tail
    }

    pub(crate) fn wants_buffer(&self) -> bool {
        let more = if self.s.src_stream {
            !self.src_done && self.reader.is_none()
        } else {
            // Reading past the hint is done by a chunk that finished its
            // range; only a job left with none asks for a buffer to probe.
            // None while the map of the source's data is not in.
            self.range_ready(self.body())
                || ((self.s.tail > 0 || self.may_probe()) && self.live_chunks() == 0)
        };
        self.s.phase == Phase::Copy
            && self.failure.is_none()
            && more
            && self.chunks.iter().any(Option::is_none)
    }

    fn after_prealloc(&mut self, result: i32) -> Result<(), TransferError> {
        if self.s.phase == Phase::Prealloc {
            self.s.phase = Phase::Copy;
        }
        match -result {
            e if e <= 0 => Ok(()),
            // Not every file system preallocates; the copy still works.
            libc::EOPNOTSUPP | libc::ENOSYS => Ok(()),
            libc::ECANCELED if self.failure.is_some() => Ok(()),
            errno => Err(TransferError::os(
                format!(
                    "preallocating {} bytes of the destination file at offset {}",
                    self.s.total, self.dst_start
                ),
                errno,
            )),
        }
    }

    /// A file system without a page cache of its own (procfs, sysfs), or
    /// one without RWF_DONTCACHE support (tmpfs, btrfs on Linux 6.18),
    /// refuses the flag with EOPNOTSUPP: the uncached strategy then reads
    /// (or writes) that end without it, and the chunk's operation is issued
    /// again. Every operation that carried the flag says so (chunks read
    /// and write at once, so several may come back refused).
    fn dontcache_refused(&mut self, slot: usize, result: i32, src: bool) -> bool {
        let Some(chunk) = self.chunk(slot) else {
            return false;
        };
        if result != -libc::EOPNOTSUPP || !std::mem::take(&mut chunk.s.dontcache) {
            return false;
        }
        if src {
            self.s.src_dontcache = false;
        } else {
            self.s.dst_dontcache = false;
        }
        true
    }

    /// Sets the chunk idle (its operation failed).
    fn idle(&mut self, slot: usize) {
        if let Some(chunk) = self.chunk(slot) {
            chunk.s.doing = Doing::Idle;
        }
    }

    /// Folds the bytes a completed read brought into the chunk's buffer into
    /// the source's checksum, if one is computed.
    fn add_to_checksum(&mut self, slot: usize) {
        let (Some(crc), Some(Some(chunk))) = (self.s.source_crc.as_mut(), self.chunks.get(slot))
        else {
            return;
        };
        // The read completed and gave the buffer back: the kernel filled at
        // least `want` bytes of it.
        if let Some(buf) = chunk.s.buf.as_ref() {
            crc.add(chunk.s.rel, buf.filled(0, chunk.s.want as usize));
        }
    }

    /// Settles a chunk's completed read or write of a file (see `settle`);
    /// `None` also when the slot is empty.
    fn settle_file(&mut self, slot: usize, result: i32) -> Result<Option<u64>, TransferError> {
        let (src_start, dst_start) = (self.src_start, self.dst_start);
        let Some(chunk) = self.chunk(slot) else {
            return Ok(None);
        };
        let (reading, at) = (chunk.s.doing == Doing::Reading, chunk.s.rel + chunk.s.done);
        settle(chunk, result, || {
            if reading {
                format!("read of the source file at offset {}", src_start + at)
            } else {
                format!("write of the destination file at offset {}", dst_start + at)
            }
        })
    }

    fn after_read(&mut self, slot: usize, result: i32) -> Result<(), TransferError> {
        if self.dontcache_refused(slot, result, true) {
            return Ok(());
        }
        if self.open_end {
            return self.after_open_read(slot, result);
        }
        let (src_start, total, tail, mode) =
            (self.src_start, self.s.total, self.s.tail, self.s.mode);
        let Some(n) = self.settle_file(slot, result)? else {
            return Ok(());
        };
        let Some(chunk) = self.chunk(slot) else {
            return Ok(());
        };
        chunk.s.done += n;
        if chunk.s.done < chunk.s.want {
            if n == 0 || matches!(mode, IoMode::Direct { .. }) {
                // End of file before the range's end. (A direct read is short
                // only at end of file.)
                let reached = src_start + chunk.s.rel + chunk.s.done;
                chunk.s.doing = Doing::Idle;
                return Err(self.short_source(reached, total));
            }
            // A short buffered read: the rest of the range is read next.
            return Ok(());
        }
        let is_tail =
            tail > 0 && chunk.s.rel + chunk.s.want == total && chunk.s.rel >= total - tail;
        self.add_to_checksum(slot);
        if is_tail {
            return self.write_tail(slot);
        }
        let dst_stream = self.s.dst_stream;
        if let Some(chunk) = self.chunk(slot) {
            prepare_write(chunk, mode, dst_stream);
        }
        Ok(())
    }

    /// The tail is read: it is written buffered, with O_DIRECT switched off
    /// on the destination for this one write (no other operation of the
    /// job is in flight).
    fn write_tail(&mut self, slot: usize) -> Result<(), TransferError> {
        let dst = raw(&self.ends.dst);
        let Some(chunk) = self.chunk(slot) else {
            return Ok(());
        };
        chunk.s.done = 0;
        chunk.s.len = chunk.s.want;
        match super::dio::set_direct(dst, false) {
            Ok(_) => {
                chunk.s.doing = Doing::WritingTail;
                Ok(())
            }
            Err(e) => {
                chunk.s.doing = Doing::Idle;
                Err(TransferError::os(
                    "switching O_DIRECT off on the destination to write the unaligned tail",
                    e.raw_os_error().unwrap_or(libc::EIO),
                ))
            }
        }
    }

    /// A read of a source whose size is only a hint completed: the range
    /// is done when full; a read returning 0 (or short past the hint, or
    /// any short O_DIRECT read) is the end of the file.
    fn after_open_read(&mut self, slot: usize, result: i32) -> Result<(), TransferError> {
        let (hint, mode) = (self.s.total, self.s.mode);
        let Some(n) = self.settle_file(slot, result)? else {
            return Ok(());
        };
        let Some(chunk) = self.chunks.get_mut(slot).and_then(Option::as_mut) else {
            return Ok(());
        };
        let c = &mut chunk.s;
        c.done += n;
        let asked = if chunk.probing { c.len } else { c.want };
        let direct = matches!(mode, IoMode::Direct { .. });
        let at_end = if c.done >= asked {
            false
        } else if n == 0 || direct || (chunk.probing && hint > 0 && c.rel + c.done >= hint) {
            // A regular file read short at or past its size has ended; a
            // file saying 0 (procfs) may return a page at a time, so only
            // a read returning 0 ends it.
            true
        } else {
            // A short read before the hint: read the rest (the next read
            // returns 0 if this was the end).
            return Ok(());
        };
        c.want = c.done.min(asked);
        let end = c.rel + c.want;
        if chunk.probing {
            chunk.probing = false;
            self.prober = None;
            if !at_end {
                // A whole buffer at or past the hint: the file goes on, and
                // the next chunk reads on from here.
                self.assigned = self.assigned.max(end);
            }
        }
        self.high = self.high.max(end);
        if at_end {
            self.found_eof(end);
        }
        self.open_read_done(slot, end, at_end)
    }

    /// An open-ended read ended its range at `end` (`at_end`: the file's
    /// end): check it against what other reads found, and write it.
    fn open_read_done(&mut self, slot: usize, end: u64, at_end: bool) -> Result<(), TransferError> {
        if let Err(e) = self.check_eof() {
            self.idle(slot);
            return Err(e);
        }
        let (src_start, hint, mode) = (self.src_start, self.s.total, self.s.mode);
        if let IoMode::Direct { align } = mode {
            if at_end && !end.is_multiple_of(align) && self.orig_dst_size > self.dst_start + end {
                // The padded last block would overwrite the destination's
                // bytes after the end.
                self.idle(slot);
                return Err(TransferError::short_source(
                    src_start + end,
                    src_start,
                    hint,
                    false,
                ));
            }
        }
        let dst_stream = self.s.dst_stream;
        let Some(chunk) = self.chunk(slot) else {
            return Ok(());
        };
        if chunk.s.want == 0 {
            chunk.s.doing = Doing::Idle;
            return Ok(());
        }
        self.add_to_checksum(slot);
        if let Some(chunk) = self.chunk(slot) {
            prepare_write(chunk, mode, dst_stream);
        }
        Ok(())
    }

    /// A receive from a stream source into the reader's buffer completed.
    fn after_recv(&mut self, slot: usize, result: i32) -> Result<(), TransferError> {
        let (mode, dst_stream, src_start) = (self.s.mode, self.s.dst_stream, self.src_start);
        let src_kind = self.ends.src_kind;
        let Some(chunk) = self.chunks.get_mut(slot).and_then(Option::as_mut) else {
            return Ok(());
        };
        let settled = settle(chunk, result, || {
            format!("receive from the source {src_kind}")
        });
        if settled.is_err() {
            self.reader = None;
        }
        let Some(n) = settled? else {
            return Ok(());
        };
        chunk.s.done += n;
        if n > 0 && chunk.s.done < chunk.s.want {
            // Keep filling: a full buffer keeps the next write aligned.
            return Ok(());
        }
        // Full, or the stream ended: this chunk's bytes are what it holds.
        self.reader = None;
        if n == 0 {
            self.src_done = true;
            if self.length_requested && self.assigned + chunk.s.done < self.s.total {
                let reached = src_start + self.assigned + chunk.s.done;
                chunk.s.doing = Doing::Idle;
                return Err(self.short_source(reached, self.s.total));
            }
        }
        chunk.s.rel = self.assigned;
        chunk.s.want = chunk.s.done;
        self.assigned += chunk.s.want;
        if self.assigned >= self.s.total {
            self.src_done = true;
        }
        chunk.seq = self.next_seq;
        self.next_seq += 1;
        if chunk.s.want == 0 {
            chunk.s.doing = Doing::Idle;
            return Ok(());
        }
        prepare_write(chunk, mode, dst_stream);
        Ok(())
    }

    /// A send to a stream destination completed; `zc`: it was SEND_ZC and a
    /// notification follows.
    fn after_send(&mut self, slot: usize, result: i32, zc: bool) -> Result<(), TransferError> {
        if self.dontcache_refused(slot, result, false) {
            return Ok(());
        }
        let (zc_on, dst_append, dst_kind) = (self.s.zc, self.s.dst_append, self.ends.dst_kind);
        let Some(chunk) = self.chunk(slot) else {
            return Ok(());
        };
        if zc {
            chunk.notifs += 1;
        }
        if result < 0 {
            match -result {
                e if errno::action(e, Side::Destination) == Action::Retry => return Ok(()),
                e if errno::action(e, Side::Destination) == Action::WaitWritable => {
                    chunk.wait = Some(libc::POLLOUT);
                    return Ok(());
                }
                // No SEND_ZC for this socket or kernel: plain sends from now on.
                libc::EOPNOTSUPP | libc::EINVAL if zc_on && !dst_append => {
                    self.s.zc = false;
                    return Ok(());
                }
                errno => {
                    chunk.s.doing = Doing::Idle;
                    let verb = if dst_append {
                        "write at the end of"
                    } else {
                        "send to"
                    };
                    return Err(TransferError::os(
                        format!("{verb} the destination {dst_kind}"),
                        errno,
                    ));
                }
            }
        }
        chunk.s.done += result as u64;
        if chunk.s.done >= chunk.s.want {
            let want = chunk.s.want;
            chunk.s.doing = Doing::Idle;
            self.moved += want;
            self.write_seq += 1;
        }
        Ok(())
    }

    fn after_write(&mut self, slot: usize, result: i32) -> Result<(), TransferError> {
        if self.dontcache_refused(slot, result, false) {
            return Ok(());
        }
        let Some(n) = self.settle_file(slot, result)? else {
            return Ok(());
        };
        let Some(chunk) = self.chunk(slot) else {
            return Ok(());
        };
        if n == 0 {
            chunk.s.doing = Doing::Idle;
            return Err(TransferError::new(
                FailureKind::Io,
                "the destination file accepted 0 bytes",
            ));
        }
        chunk.s.done += n;
        if chunk.s.done < chunk.s.len {
            return Ok(());
        }
        let tail = chunk.s.doing == Doing::WritingTail;
        self.finish_write(slot);
        if tail {
            self.s.tail = 0;
            if let Err(e) = super::dio::set_direct(raw(&self.ends.dst), true) {
                return Err(TransferError::os(
                    "switching O_DIRECT back on for the destination",
                    e.raw_os_error().unwrap_or(libc::EIO),
                ));
            }
        }
        Ok(())
    }

    /// Queues the read of the rest of the chunk's range into its buffer.
    fn read(&mut self, slot: usize, owner: Owner, io: &mut Io) -> Result<(), TransferError> {
        let src_kind = self.ends.src_kind;
        let file_rw = self.rw();
        let (src_stream, src_dontcache) = (self.s.src_stream, self.s.src_dontcache);
        let (src_start, fixed) = (self.src_start, self.s.fixed);
        let Some(chunk) = self.chunk(slot) else {
            return Ok(());
        };
        let at = chunk.s.done;
        let (len, offset, rw) = if src_stream {
            // A socket ignores the offset; any other stream (a character
            // device, a pipe) is read at its position. Per-I/O flags such
            // as RWF_DONTCACHE mean nothing to a socket.
            let offset = if src_kind == FdKind::Socket {
                0
            } else {
                u64::MAX
            };
            let rw = RwOpts { fixed, flags: 0 };
            (chunk.s.want - at, offset, rw)
        } else if src_dontcache {
            (chunk.s.len - at, src_start + chunk.s.rel + at, file_rw)
        } else {
            let rw = RwOpts {
                fixed: file_rw.fixed,
                flags: 0,
            };
            (chunk.s.len - at, src_start + chunk.s.rel + at, rw)
        };
        let span = (at as usize, len as u32);
        let what = BufWhat::Read { offset, rw };
        self.submit(CopyStep::In(slot), owner, io, span, what)
    }

    /// Queues the send (or the write at the end of an O_APPEND file) of the
    /// chunk's bytes, once every earlier chunk's went.
    fn send(&mut self, slot: usize, owner: Owner, io: &mut Io) -> Result<(), TransferError> {
        let (file_rw, dst_append, zc, fixed) =
            (self.dst_rw(), self.s.dst_append, self.s.zc, self.s.fixed);
        let write_seq = self.write_seq;
        let Some(chunk) = self.chunk(slot) else {
            return Ok(());
        };
        if chunk.seq != write_seq {
            // An earlier chunk's bytes go first.
            return Ok(());
        }
        let at = chunk.s.done;
        let len = chunk.s.want - at;
        let what = if dst_append {
            // Offset -1: the file position, which O_APPEND keeps at the end.
            BufWhat::Write {
                offset: u64::MAX,
                rw: file_rw,
            }
        } else {
            BufWhat::Send {
                zc: zc && len >= ZC_MIN,
                fixed,
            }
        };
        let span = (at as usize, len as u32);
        self.submit(CopyStep::Out(slot), owner, io, span, what)
    }

    /// Queues the write of the chunk's bytes at their offset in the file.
    fn write(&mut self, slot: usize, owner: Owner, io: &mut Io) -> Result<(), TransferError> {
        let (file_rw, dst_start) = (self.dst_rw(), self.dst_start);
        self.touched = true;
        let end = match self.chunks.get(slot).and_then(Option::as_ref) {
            Some(c) if c.s.doing == Doing::WritingTail => c.s.len,
            Some(c) => self.write_end(&c.s),
            None => return Ok(()),
        };
        let Some(chunk) = self.chunk(slot) else {
            return Ok(());
        };
        let at = chunk.s.done;
        let rw = if chunk.s.doing == Doing::WritingTail {
            RwOpts {
                fixed: file_rw.fixed,
                flags: 0,
            }
        } else {
            file_rw
        };
        let span = (at as usize, (end - at) as u32);
        let what = BufWhat::Write {
            offset: dst_start + chunk.s.rel + at,
            rw,
        };
        self.submit(CopyStep::Out(slot), owner, io, span, what)
    }

    /// Queues `what` on the chunk's buffer (from the source for `CopyStep::In`,
    /// else to the destination), moving the buffer into the operation;
    /// `span` is (offset in the buffer, length).
    fn submit(
        &mut self,
        step: CopyStep,
        owner: Owner,
        io: &mut Io,
        span: (usize, u32),
        what: BufWhat,
    ) -> Result<(), TransferError> {
        let slot = step.slot().unwrap_or(usize::MAX);
        let fd = if matches!(step, CopyStep::In(_)) {
            self.ends.shared_src()
        } else {
            self.ends.shared_dst()
        };
        let Some(chunk) = self.chunk(slot) else {
            return Ok(());
        };
        let Some(buf) = chunk.s.buf.take() else {
            return Err(TransferError::new(
                FailureKind::Io,
                "internal error: a chunk queued an operation without its buffer",
            ));
        };
        let (at, len) = span;
        chunk.s.dontcache = match what {
            BufWhat::Read { rw, .. } | BufWhat::Write { rw, .. } => {
                rw.flags & libc::RWF_DONTCACHE != 0
            }
            BufWhat::Send { .. } => false,
        };
        let kind = step.tag();
        match io.buffer_op(owner, kind, BufIo { fd, buf, at, len }, what) {
            Ok(ud) => {
                chunk.busy = Some(ud);
                Ok(())
            }
            Err(failed) => {
                chunk.s.buf = failed.buf;
                Err(ring_failed::<Buffer>(failed.error))
            }
        }
    }

    /// An idle chunk of a stream source fills its buffer next, once no
    /// other chunk is.
    fn next_stream_read(
        &mut self,
        slot: usize,
        owner: Owner,
        io: &mut Io,
    ) -> Result<(), TransferError> {
        if self.reader.is_some() {
            // Another chunk is filling; this one reads next.
            return Ok(());
        }
        let left = self.s.total - self.assigned;
        let piece_limit = self.piece_limit;
        let Some(chunk) = self.chunk(slot) else {
            return Ok(());
        };
        let c = &mut chunk.s;
        c.want = left.min(c.capacity()).min(piece_limit);
        c.len = c.want;
        c.done = 0;
        c.doing = Doing::Reading;
        self.reader = Some(slot);
        self.read(slot, owner, io)
    }

    /// Whether the unaligned tail is the range to read now: last, and alone.
    fn tail_now(&self) -> bool {
        self.s.tail > 0
            && self.assigned >= self.body()
            && self.live_chunks() == 1
            && self.assigned < self.s.total
    }

    /// An idle chunk of a file source takes the next range (the
    /// pipeline's `next_range`, data only; the tail last, alone; past the
    /// hint, one probing chunk at a time) and reads it. False if there is
    /// none.
    fn take_range(
        &mut self,
        slot: usize,
        owner: Owner,
        io: &mut Io,
    ) -> Result<bool, TransferError> {
        let (body, total) = (self.body(), self.s.total);
        // The range that reaches the hint asks for a whole buffer: a short
        // read then says where the file ends, without another read that
        // returns 0.
        let may_open = self.open_end && self.eof.is_none() && self.prober.is_none();
        let (mode, piece_limit) = (self.s.mode, self.piece_limit);
        let cap = match self.chunk(slot) {
            Some(chunk) => chunk.s.capacity().min(piece_limit),
            None => return Ok(false),
        };
        let (rel, want) = if self.tail_now() {
            // The tail as it is, holes or not (it is less than a block).
            (self.assigned, (total - self.assigned).min(cap))
        } else if let Some(r) = self.next_range(cap, body) {
            (r.rel, r.len)
        } else if self.may_probe() {
            // At or past the hint: a probe, from where the ranges end.
            (self.assigned, 0)
        } else {
            return Ok(false);
        };
        self.assigned = self.assigned.max(rel + want);
        let seq = self.take_seq();
        let Some(chunk) = self.chunk(slot) else {
            return Ok(false);
        };
        let c = &mut chunk.s;
        c.rel = rel;
        c.want = want;
        c.len = mode.aligned_up(c.want);
        chunk.probing = may_open && rel + want >= total;
        if chunk.probing {
            c.len = mode.aligned_down(cap);
        }
        c.done = 0;
        c.zeros = 0;
        c.doing = Doing::Reading;
        chunk.seq = seq;
        if chunk.probing {
            self.prober = Some(slot);
        }
        self.read(slot, owner, io).map(|()| true)
    }

    /// With `--sparse=always`, before a chunk writes on: the whole blocks
    /// of zeros where its write stands are skipped, left as holes, where
    /// the destination has no bytes yet (an existing destination's bytes
    /// are overwritten with the zeros). True if that was the rest of the
    /// chunk's bytes: its write is done.
    fn skip_zeros(&mut self, slot: usize) -> bool {
        let (block, base) = (self.s.zero_block, self.dst_start);
        let (orig, total) = (self.orig_dst_size, self.s.total);
        let Some(chunk) = self.chunk(slot).filter(|_| block > 0) else {
            return false;
        };
        let c = &mut chunk.s;
        let Some(buf) = c.buf.as_ref() else {
            return false;
        };
        let start = c.done;
        while let Some(at) = zero_block_at(buf, base + c.rel, c.done, c.len, block, orig) {
            // Padding past `want` (direct's) is not the source's.
            c.zeros += c.want.min(at + block).saturating_sub(at);
            c.done = at + block;
        }
        if c.done == start || c.done < c.len {
            return false;
        }
        let (rel, want) = (c.rel, c.want);
        self.finish_write(slot);
        if rel + want >= total {
            self.holes.ends_in_hole = true;
        }
        true
    }

    /// Where the chunk's next write stops: before its next block of zeros
    /// that `skip_zeros` will leave as a hole, or at its end.
    fn write_end(&self, c: &BufChunk) -> u64 {
        let block = self.s.zero_block;
        let (Some(buf), true) = (c.buf.as_ref(), block > 0) else {
            return c.len;
        };
        let base = self.dst_start + c.rel;
        // The first block boundary past where the write starts.
        let mut at = (base + c.done + 1).div_ceil(block) * block - base;
        while at + block <= c.len {
            if zero_block_at(buf, base, at, c.len, block, self.orig_dst_size).is_some() {
                return at;
            }
            at += block;
        }
        c.len
    }

    /// A chunk's write is done: its bytes (and zeros skipped) are moved.
    fn finish_write(&mut self, slot: usize) {
        let Some(chunk) = self.chunk(slot) else {
            return;
        };
        let (want, zeros) = (chunk.s.want, std::mem::take(&mut chunk.s.zeros));
        chunk.s.doing = Doing::Idle;
        self.moved += want;
        self.holes.bytes += zeros;
    }

    /// Once every chunk is back: truncate the destination to its exact final
    /// size (cutting the padding), or after a failure to its original size.
    fn maybe_finish(&mut self, owner: Owner, io: &mut Io) {
        let phase = self.s.phase;
        let idle = self.live_chunks() == 0 && self.s.side_op.is_none();
        let copied = self.failure.is_none() && phase == Phase::Copy && self.all_assigned();
        let failed = self.failure.is_some() && matches!(phase, Phase::Prealloc | Phase::Copy);
        if !idle || !(copied || failed) {
            return;
        }
        if (failed && !self.touched) || (copied && self.in_order) {
            // Nothing to cut or restore: a socket, or a file never written.
            self.s.phase = Phase::Done;
            return;
        }
        // fallocate took the file to the hint's end, and the source ended
        // before it: cut back. Or no write reached the end (a hole).
        let cut = (self.s.preallocated && self.end() < self.s.total)
            || self.holes.resize_at_end(self.dst_start + self.end());
        if copied && !cut && matches!(self.s.mode, IoMode::Uncached | IoMode::Buffered) {
            // Without padding the file already has its final size: the
            // writes (or fallocate, which extends to the same end) took it
            // to max(original size, end of the range).
            self.s.phase = Phase::Done;
            return;
        }
        let size = if failed {
            self.orig_dst_size
        } else {
            self.final_size()
        };
        self.s.phase = Phase::Truncate;
        match io.ftruncate(
            owner,
            CopyStep::Truncate.tag(),
            self.ends.shared_dst(),
            size,
        ) {
            Ok(ud) => self.s.side_op = Some(ud),
            Err(e) => {
                self.failure.get_or_insert(ring_failed::<Buffer>(e));
                self.s.phase = Phase::Done;
            }
        }
    }
}

/// Where a block of zeros to leave as a hole starts, if one does at `at`
/// of `buf` (which lands at destination offset `base`): a whole block of
/// the destination (`block` bytes, at a multiple of it), within the
/// chunk's `len` bytes, past the destination's `orig` bytes, all zero.
fn zero_block_at(buf: &BufRef, base: u64, at: u64, len: u64, block: u64, orig: u64) -> Option<u64> {
    let off = base + at;
    let whole = off.is_multiple_of(block) && at + block <= len && off >= orig;
    (whole && all_zero(buf.filled(at as usize, block as usize))).then_some(at)
}

/// Takes a chunk's completed operation off it. What an error means comes
/// from the errno table: an interruption gives `Ok(None)` and the chunk's
/// step is issued again; EAGAIN also `Ok(None)`, after a readiness poll.
/// Any other error idles the chunk and names the operation `op` describes;
/// success gives the count.
fn settle(
    chunk: &mut Chunk<BufChunk>,
    result: i32,
    op: impl FnOnce() -> String,
) -> Result<Option<u64>, TransferError> {
    if result >= 0 {
        return Ok(Some(result as u64));
    }
    let side = match chunk.s.doing {
        Doing::Reading => Side::Source,
        _ => Side::Destination,
    };
    match errno::action(-result, side) {
        Action::Retry => Ok(None),
        Action::WaitReadable => {
            chunk.wait = Some(libc::POLLIN);
            Ok(None)
        }
        Action::WaitWritable => {
            chunk.wait = Some(libc::POLLOUT);
            Ok(None)
        }
        Action::Fail => {
            chunk.s.doing = Doing::Idle;
            Err(TransferError::os(op(), -result))
        }
    }
}

/// Sets a chunk whose bytes are in its buffer up to write them: to a file
/// with O_DIRECT, the length is rounded up to the alignment and the padding
/// zeroed (the final truncate cuts it off again).
fn prepare_write(chunk: &mut Chunk<BufChunk>, mode: IoMode, dst_stream: bool) {
    let c = &mut chunk.s;
    c.len = if dst_stream {
        c.want
    } else {
        mode.aligned_up(c.want)
    };
    if c.len > c.want {
        // The read completed and gave the buffer back; `zero` checks the
        // padding lies within it.
        if let Some(buf) = c.buf.as_mut() {
            buf.zero(c.want as usize, c.len as usize);
        }
    }
    c.doing = Doing::Writing;
    c.done = 0;
}
