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

use std::rc::Rc;

use ringxfer_ipc::{FailureKind, Strategy};

use super::dio::{restore_flags, SavedFlags};
use super::errno::{self, Action, Side};
use super::splice::Returned;
use super::{Endpoints, FdKind, Shape, TransferError};
use crate::io::buffer_pool::BufRef;
use crate::io::ops::Owner;
use crate::io::queue::{BufIo, BufWhat, RwOpts};
use crate::io::Io;
use crate::transfer::step::CopyStep;

/// How bytes go through the buffers.
#[derive(Debug, Clone, Copy)]
pub enum IoMode {
    /// O_DIRECT: offsets and lengths aligned to `align`.
    Direct { align: u64 },
    /// Buffered with RWF_DONTCACHE.
    Uncached,
    /// Buffered through the page cache.
    Buffered,
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
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

/// One buffer and the range it carries.
struct Chunk {
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
    step: Step,
    busy: Option<u64>,
    /// Order of this chunk's bytes in the stream (stream destinations).
    seq: u64,
    /// SEND_ZC notifications still to come: the kernel may still read the
    /// buffer until the last one.
    notifs: u32,
    /// The range reaches the source's size hint: its read asks for the whole
    /// buffer, so a short read tells where the file ends (see `open_end`).
    open: bool,
    /// A non-blocking stream said EAGAIN: poll for these events first.
    wait: Option<i16>,
}

impl Chunk {
    fn is_busy(&self) -> bool {
        self.busy.is_some() || self.notifs > 0
    }

    /// Bytes the chunk's buffer holds (it is idle, so it has it).
    fn capacity(&self) -> u64 {
        self.buf.as_ref().map_or(0, |b| u64::from(b.len))
    }
}

/// Queues `what` on the chunk's buffer, moving the buffer into the
/// operation; `span` is (offset in the buffer, length).
#[allow(clippy::too_many_arguments)]
fn submit(
    chunk: &mut Chunk,
    io: &mut Io,
    owner: Owner,
    kind: CopyStep,
    ends: &Rc<Endpoints>,
    fd: i32,
    span: (usize, u32),
    what: BufWhat,
) -> Result<(), TransferError> {
    let Some(buf) = chunk.buf.take() else {
        return Err(TransferError::new(
            FailureKind::Io,
            "internal error: a chunk queued an operation without its buffer",
        ));
    };
    let (at, len) = span;
    match io.buffer_op(owner, kind.tag(), ends, BufIo { fd, buf, at, len }, what) {
        Ok(ud) => {
            chunk.busy = Some(ud);
            Ok(())
        }
        Err(failed) => {
            chunk.buf = failed.buf;
            Err(ring_failed(failed.error))
        }
    }
}

/// A transfer moved through pool buffers.
pub struct BufferCopy {
    ends: Rc<Endpoints>,
    mode: IoMode,
    fixed: bool,
    src_start: u64,
    dst_start: u64,
    total: u64,
    length_requested: bool,
    /// The source is a stream: read by one chunk at a time, until its end.
    src_stream: bool,
    /// The destination is a stream: written in read order, by send.
    dst_stream: bool,
    /// The destination is an O_APPEND file: written in read order, at its end.
    dst_append: bool,
    /// The chunk reading a stream source now.
    reader: Option<usize>,
    /// A stream source reached its end (or the requested length).
    src_done: bool,
    next_seq: u64,
    write_seq: u64,
    /// Sends go zero-copy while the kernel takes SEND_ZC.
    zc: bool,
    /// Bytes handed to chunks so far.
    assigned: u64,
    /// Bytes at the end written buffered (see the module comment); 0 once done.
    tail: u64,
    chunks: Vec<Option<Chunk>>,
    pub moved: u64,
    phase: Phase,
    side_op: Option<u64>,
    /// The destination's size before the job, restored on failure.
    orig_dst_size: u64,
    /// Whether anything may have changed the destination's size.
    touched: bool,
    failure: Option<TransferError>,
    saved_flags: Vec<SavedFlags>,
    /// The most one read moves (a rate limit's piece; else the buffer's size).
    piece_limit: u64,
    /// CRC-32C of the source as read, when verification is asked for: the
    /// bytes pass through our buffers anyway, so the source need not be
    /// read twice.
    source_crc: Option<InOrderCrc>,
    /// `total` is a regular file's size hint, not a requested length: the
    /// file is read until a read returns 0 (procfs says 0, sysfs a page, a
    /// file may shrink or grow while it is read).
    open_end: bool,
    /// Where a read found the source's end, from the start of the transfer.
    eof: Option<u64>,
    /// Highest offset (from the start of the transfer) a read found bytes up to.
    high: u64,
    /// The chunk reading at or past the hint; one at a time, like a read loop.
    prober: Option<usize>,
    /// Source reads pass RWF_DONTCACHE (uncached), until a file system
    /// without a page cache of its own (procfs, sysfs) refuses it.
    src_dontcache: bool,
    /// fallocate extended the destination to the hint's end.
    preallocated: bool,
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

impl BufferCopy {
    /// `plan.total` must be known (a regular file source). `orig_dst_size` is
    /// the destination's size at admission; `saved_flags` the descriptors'
    /// flags to put back when the job ends.
    pub fn new(
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
        let copy = BufferCopy {
            ends,
            mode,
            fixed,
            src_start: plan.src_start,
            dst_start: plan.dst_start,
            total,
            length_requested: plan.length_requested,
            src_stream,
            dst_stream,
            dst_append: plan.dst_append,
            reader: None,
            src_done: false,
            next_seq: 0,
            write_seq: 0,
            zc: true,
            assigned: 0,
            tail: 0,
            chunks: (0..max_chunks.max(1)).map(|_| None).collect(),
            moved: 0,
            phase: Phase::Prealloc,
            side_op: None,
            orig_dst_size,
            touched: false,
            failure: None,
            saved_flags,
            piece_limit: u64::MAX,
            source_crc: None,
            open_end,
            eof: None,
            high: 0,
            prober: None,
            src_dontcache: matches!(mode, IoMode::Uncached),
            preallocated: false,
        };
        BufferCopy { tail, ..copy }
    }

    pub fn endpoints(&self) -> Rc<Endpoints> {
        Rc::clone(&self.ends)
    }

    /// Computes the source's CRC-32C as its bytes are read (file sources).
    pub fn checksum_source(&mut self) {
        if !self.src_stream {
            self.source_crc = Some(InOrderCrc {
                next: 0,
                crc: 0,
                ahead: Vec::with_capacity(self.chunks.len()),
            });
        }
    }

    /// The source's CRC-32C, once every byte of it has been read.
    pub fn source_checksum(&self) -> Option<u32> {
        self.source_crc
            .as_ref()
            .filter(|c| c.next == self.end() && c.ahead.is_empty())
            .map(|c| c.crc)
    }

    /// Caps each read at `bytes`, rounded down to the O_DIRECT alignment
    /// (at least one block), so every offset stays aligned.
    pub fn set_piece_limit(&mut self, bytes: u64) {
        self.piece_limit = match self.mode {
            IoMode::Direct { align } => (bytes / align).max(1) * align,
            IoMode::Uncached | IoMode::Buffered => bytes.max(1),
        };
    }

    pub fn strategy(&self) -> Strategy {
        match self.mode {
            IoMode::Direct { .. } => Strategy::Direct,
            IoMode::Uncached => Strategy::Uncached,
            IoMode::Buffered => Strategy::Buffered,
        }
    }

    /// Bytes the job moves, as far as is known: past a size hint, what
    /// the reads found so far.
    pub fn total(&self) -> Option<u64> {
        if self.open_end {
            return Some(self.eof.unwrap_or(self.total.max(self.assigned)));
        }
        (self.total != u64::MAX).then_some(self.total)
    }

    /// Where the source's bytes end, from the start of the transfer.
    fn end(&self) -> u64 {
        self.eof.unwrap_or(self.assigned)
    }

    /// Whether every byte to move has been handed to a chunk.
    fn all_assigned(&self) -> bool {
        if self.src_stream {
            self.src_done
        } else if self.open_end {
            self.eof.is_some()
        } else {
            self.assigned >= self.total
        }
    }

    /// Whether a chunk may read at or past the size hint: the hint is all
    /// handed out, no read found the end yet, and no chunk probes now.
    fn may_probe(&self) -> bool {
        self.open_end && self.eof.is_none() && self.prober.is_none() && self.assigned >= self.total
    }

    fn rw(&self) -> RwOpts {
        RwOpts {
            fixed: self.fixed && !matches!(self.mode, IoMode::Uncached),
            flags: match self.mode {
                IoMode::Direct { .. } | IoMode::Buffered => 0,
                IoMode::Uncached => libc::RWF_DONTCACHE,
            },
        }
    }

    fn final_size(&self) -> u64 {
        self.orig_dst_size.max(self.dst_start + self.end())
    }

    /// Preallocates the destination, or goes straight to copying.
    pub fn start(&mut self, owner: Owner, io: &mut Io) {
        if self.total == 0 && !self.open_end {
            self.phase = Phase::Done;
            return;
        }
        if self.dst_stream || self.dst_append || self.total == u64::MAX {
            // Nothing to preallocate: a socket, an end that moves, or a
            // length nobody knows yet.
            self.phase = Phase::Copy;
            return;
        }
        if self.total < PREALLOC_MIN {
            // A write or two: the first of them reports a full disk as early
            // as fallocate would, and fallocate is another op that io_uring
            // always hands to an io-wq worker.
            self.phase = Phase::Copy;
            return;
        }
        let ends = Rc::clone(&self.ends);
        match io.fallocate(
            owner,
            CopyStep::Prealloc.tag(),
            &ends,
            raw(&ends.dst),
            self.dst_start,
            self.total,
        ) {
            Ok(ud) => {
                self.touched = true;
                self.preallocated = true;
                self.side_op = Some(ud);
            }
            Err(e) => {
                self.failure = Some(ring_failed(e));
                self.phase = Phase::Done;
            }
        }
    }

    /// Bytes the chunks move with ordinary reads and writes.
    fn body(&self) -> u64 {
        self.total - self.tail
    }

    pub fn wants_buffer(&self) -> bool {
        let more = if self.src_stream {
            !self.src_done && self.reader.is_none()
        } else {
            // Reading past the hint is done by a chunk that finished its
            // range; only a job left with none asks for a buffer to probe.
            (self.assigned < self.body() && self.eof.is_none())
                || ((self.tail > 0 || self.may_probe()) && self.chunks.iter().all(Option::is_none))
        };
        self.phase == Phase::Copy
            && self.failure.is_none()
            && more
            && self.chunks.iter().any(Option::is_none)
    }

    pub fn is_finished(&self) -> bool {
        self.phase == Phase::Done
            && self.chunks.iter().all(Option::is_none)
            && self.side_op.is_none()
    }

    pub fn failure(&self) -> Option<&TransferError> {
        self.failure.as_ref()
    }

    /// Puts the descriptors' flags back and gives them up; call once the job
    /// is finished.
    pub fn into_endpoints(self) -> Option<Endpoints> {
        for saved in &self.saved_flags {
            restore_flags(*saved);
        }
        Rc::try_unwrap(self.ends).ok()
    }

    pub fn add_buffer(
        &mut self,
        buf: BufRef,
        owner: Owner,
        io: &mut Io,
        yield_bufs: bool,
        out: &mut Vec<Returned>,
    ) {
        match self.chunks.iter().position(Option::is_none) {
            Some(slot) => {
                self.chunks[slot] = Some(Chunk {
                    buf: Some(buf),
                    rel: 0,
                    want: 0,
                    len: 0,
                    done: 0,
                    step: Step::Idle,
                    busy: None,
                    seq: 0,
                    notifs: 0,
                    open: false,
                    wait: None,
                });
                self.pump(owner, io, yield_bufs, out);
            }
            None => out.push(Returned::Buffer(buf)),
        }
    }

    pub fn fail(&mut self, err: TransferError, owner: Owner, io: &mut Io, out: &mut Vec<Returned>) {
        self.failure.get_or_insert(err);
        for user_data in self
            .chunks
            .iter()
            .flatten()
            .filter_map(|c| c.busy)
            .chain(self.side_op)
        {
            let _ = io.cancel(user_data);
        }
        self.pump(owner, io, false, out);
    }

    /// A completion handed back the buffer its operation held: it returns
    /// to the chunk that lent it.
    fn take_back(&mut self, kind: CopyStep, buf: BufRef, out: &mut Vec<Returned>) {
        let slot = match kind {
            CopyStep::BufIn(i)
            | CopyStep::BufOut(i)
            | CopyStep::ZcSent(i)
            | CopyStep::ZcNotif(i) => i as usize,
            _ => usize::MAX,
        };
        match self.chunks.get_mut(slot).and_then(Option::as_mut) {
            Some(chunk) if chunk.buf.is_none() => chunk.buf = Some(buf),
            _ => {
                debug_assert!(false, "a buffer came back to no chunk");
                out.push(Returned::Buffer(buf));
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub fn on_complete(
        &mut self,
        kind: CopyStep,
        result: i32,
        buf: Option<BufRef>,
        owner: Owner,
        io: &mut Io,
        yield_bufs: bool,
        out: &mut Vec<Returned>,
    ) {
        if let Some(buf) = buf {
            self.take_back(kind, buf, out);
        }
        let step = match kind {
            CopyStep::Prealloc => {
                self.side_op = None;
                self.after_prealloc(result)
            }
            CopyStep::Truncate => {
                self.side_op = None;
                self.phase = Phase::Done;
                if result < 0 && self.failure.is_none() {
                    Err(TransferError::os(
                        "ftruncate of the destination file to its final size",
                        -result,
                    ))
                } else {
                    Ok(())
                }
            }
            CopyStep::BufIn(i) if self.src_stream => self.after_recv(i as usize, result),
            CopyStep::BufIn(i) => self.after_read(i as usize, result),
            CopyStep::BufOut(i) if self.dst_stream || self.dst_append => {
                self.after_send(i as usize, result, false)
            }
            CopyStep::ZcSent(i) => self.after_send(i as usize, result, true),
            CopyStep::ZcNotif(i) => {
                if let Some(chunk) = self.chunks.get_mut(i as usize).and_then(Option::as_mut) {
                    chunk.notifs = chunk.notifs.saturating_sub(1);
                }
                Ok(())
            }
            CopyStep::BufOut(i) => self.after_write(i as usize, result),
            // Readiness after EAGAIN (or an error the retried operation
            // will report): the chunk issues its step again.
            CopyStep::PollIn(i) | CopyStep::PollOut(i) => {
                if let Some(chunk) = self.chunks.get_mut(i as usize).and_then(Option::as_mut) {
                    chunk.busy = None;
                }
                Ok(())
            }
            _ => Ok(()),
        };
        if let Err(e) = step {
            self.fail(e, owner, io, out);
            return;
        }
        self.pump(owner, io, yield_bufs, out);
    }

    fn after_prealloc(&mut self, result: i32) -> Result<(), TransferError> {
        if self.phase == Phase::Prealloc {
            self.phase = Phase::Copy;
        }
        match -result {
            e if e <= 0 => Ok(()),
            // Not every file system preallocates; the copy still works.
            libc::EOPNOTSUPP | libc::ENOSYS => Ok(()),
            libc::ECANCELED if self.failure.is_some() => Ok(()),
            errno => Err(TransferError::os(
                format!(
                    "preallocating {} bytes of the destination file at offset {}",
                    self.total, self.dst_start
                ),
                errno,
            )),
        }
    }

    /// A file system without a page cache of its own (procfs, sysfs)
    /// refuses RWF_DONTCACHE on reads with EOPNOTSUPP: its reads cache
    /// nothing anyway, so the uncached strategy reads it without the flag.
    fn dontcache_refused(&mut self, slot: usize, result: i32) -> bool {
        if result != -libc::EOPNOTSUPP || !self.src_dontcache {
            return false;
        }
        self.src_dontcache = false;
        if let Some(chunk) = self.chunks.get_mut(slot).and_then(Option::as_mut) {
            chunk.busy = None;
        }
        true
    }

    fn after_read(&mut self, slot: usize, result: i32) -> Result<(), TransferError> {
        if self.dontcache_refused(slot, result) {
            return Ok(());
        }
        if self.open_end {
            return self.after_open_read(slot, result);
        }
        let src_start = self.src_start;
        let Some(chunk) = self.chunks.get_mut(slot).and_then(Option::as_mut) else {
            return Ok(());
        };
        let at = src_start + chunk.rel + chunk.done;
        let Some(n) = settle(chunk, result, || {
            format!("read of the source file at offset {at}")
        })?
        else {
            return Ok(());
        };
        chunk.done += n;
        if chunk.done >= chunk.want {
            if let Some(crc) = self.source_crc.as_mut() {
                // The read completed and gave the buffer back: the kernel
                // filled at least `want` bytes of it.
                if let Some(buf) = chunk.buf.as_ref() {
                    crc.add(chunk.rel, buf.filled(0, chunk.want as usize));
                }
            }
        }
        let is_tail = self.tail > 0
            && chunk.rel + chunk.want == self.total
            && chunk.rel >= self.total - self.tail;
        if chunk.done >= chunk.want && is_tail {
            // Written buffered: switch O_DIRECT off on the destination for
            // this one write (no other operation of the job is in flight).
            chunk.done = 0;
            chunk.len = chunk.want;
            return match super::dio::set_direct(raw(&self.ends.dst), false) {
                Ok(_) => {
                    chunk.step = Step::WritingTail;
                    Ok(())
                }
                Err(e) => {
                    chunk.step = Step::Idle;
                    Err(TransferError::os(
                        "switching O_DIRECT off on the destination to write the unaligned tail",
                        e.raw_os_error().unwrap_or(libc::EIO),
                    ))
                }
            };
        }
        if chunk.done >= chunk.want {
            let (mode, dst_stream) = (self.mode, self.dst_stream);
            prepare_write(chunk, mode, dst_stream);
            return Ok(());
        }
        if n == 0 || matches!(self.mode, IoMode::Direct { .. }) {
            // End of file before the range's end. (A direct read is short
            // only at end of file.)
            let reached = src_start + chunk.rel + chunk.done;
            chunk.step = Step::Idle;
            return Err(self.short_source(reached));
        }
        // A short buffered read: the rest of the range is read next.
        Ok(())
    }

    /// A read of a source whose size is only a hint completed: the range
    /// is done when full; a read returning 0 (or short past the hint, or
    /// any short O_DIRECT read) is the end of the file.
    fn after_open_read(&mut self, slot: usize, result: i32) -> Result<(), TransferError> {
        let (src_start, hint, mode) = (self.src_start, self.total, self.mode);
        let Some(chunk) = self.chunks.get_mut(slot).and_then(Option::as_mut) else {
            return Ok(());
        };
        let at = src_start + chunk.rel + chunk.done;
        let Some(n) = settle(chunk, result, || {
            format!("read of the source file at offset {at}")
        })?
        else {
            return Ok(());
        };
        chunk.done += n;
        let asked = if chunk.open { chunk.len } else { chunk.want };
        let direct = matches!(mode, IoMode::Direct { .. });
        let at_end = if chunk.done >= asked {
            false
        } else if n == 0 || direct || (chunk.open && hint > 0 && chunk.rel + chunk.done >= hint) {
            // A regular file read short at or past its size has ended; a
            // file saying 0 (procfs) may return a page at a time, so only
            // a read returning 0 ends it.
            true
        } else {
            // A short read before the hint: read the rest (the next read
            // returns 0 if this was the end).
            return Ok(());
        };
        chunk.want = chunk.done.min(asked);
        let end = chunk.rel + chunk.want;
        if chunk.open {
            chunk.open = false;
            self.prober = None;
            if !at_end {
                // A whole buffer at or past the hint: the file goes on, and
                // the next chunk reads on from here.
                self.assigned = self.assigned.max(end);
            }
        }
        self.high = self.high.max(end);
        if at_end {
            self.eof = Some(self.eof.map_or(end, |e| e.min(end)));
        }
        if let Some(eof) = self.eof.filter(|&e| self.high > e) {
            chunk.step = Step::Idle;
            return Err(TransferError::source_changed(
                src_start + eof,
                src_start + self.high,
            ));
        }
        if let IoMode::Direct { align } = mode {
            if at_end && end % align != 0 && self.orig_dst_size > self.dst_start + end {
                // The padded last block would overwrite the destination's
                // bytes after the end.
                chunk.step = Step::Idle;
                return Err(TransferError::short_source(
                    src_start + end,
                    src_start,
                    hint,
                    false,
                ));
            }
        }
        if chunk.want > 0 {
            if let Some(crc) = self.source_crc.as_mut() {
                // The read completed and gave the buffer back: the kernel
                // filled at least `want` bytes of it.
                if let Some(buf) = chunk.buf.as_ref() {
                    crc.add(chunk.rel, buf.filled(0, chunk.want as usize));
                }
            }
        }
        let Some(chunk) = self.chunks.get_mut(slot).and_then(Option::as_mut) else {
            return Ok(());
        };
        if chunk.want == 0 {
            chunk.step = Step::Idle;
            return Ok(());
        }
        prepare_write(chunk, mode, self.dst_stream);
        Ok(())
    }

    /// A receive from a stream source into the reader's buffer completed.
    fn after_recv(&mut self, slot: usize, result: i32) -> Result<(), TransferError> {
        let (mode, dst_stream, src_start) = (self.mode, self.dst_stream, self.src_start);
        let Some(chunk) = self.chunks.get_mut(slot).and_then(Option::as_mut) else {
            return Ok(());
        };
        let src_kind = self.ends.src_kind;
        let settled = settle(chunk, result, || {
            format!("receive from the source {src_kind}")
        });
        if settled.is_err() {
            self.reader = None;
        }
        let Some(n) = settled? else {
            return Ok(());
        };
        chunk.done += n;
        if n > 0 && chunk.done < chunk.want {
            // Keep filling: a full buffer keeps the next write aligned.
            return Ok(());
        }
        // Full, or the stream ended: this chunk's bytes are what it holds.
        self.reader = None;
        if n == 0 {
            self.src_done = true;
            if self.length_requested && self.assigned + chunk.done < self.total {
                let reached = src_start + self.assigned + chunk.done;
                chunk.step = Step::Idle;
                return Err(self.short_source(reached));
            }
        }
        chunk.rel = self.assigned;
        chunk.want = chunk.done;
        self.assigned += chunk.want;
        if self.assigned >= self.total {
            self.src_done = true;
        }
        chunk.seq = self.next_seq;
        self.next_seq += 1;
        if chunk.want == 0 {
            chunk.step = Step::Idle;
            return Ok(());
        }
        prepare_write(chunk, mode, dst_stream);
        Ok(())
    }

    /// A send to a stream destination completed; `zc`: it was SEND_ZC and a
    /// notification follows.
    fn after_send(&mut self, slot: usize, result: i32, zc: bool) -> Result<(), TransferError> {
        let Some(chunk) = self.chunks.get_mut(slot).and_then(Option::as_mut) else {
            return Ok(());
        };
        chunk.busy = None;
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
                libc::EOPNOTSUPP | libc::EINVAL if self.zc && !self.dst_append => {
                    self.zc = false;
                    return Ok(());
                }
                errno => {
                    chunk.step = Step::Idle;
                    let verb = if self.dst_append {
                        "write at the end of"
                    } else {
                        "send to"
                    };
                    return Err(TransferError::os(
                        format!("{verb} the destination {}", self.ends.dst_kind),
                        errno,
                    ));
                }
            }
        }
        chunk.done += result as u64;
        if chunk.done >= chunk.want {
            self.moved += chunk.want;
            self.write_seq += 1;
            chunk.step = Step::Idle;
        }
        Ok(())
    }

    fn after_write(&mut self, slot: usize, result: i32) -> Result<(), TransferError> {
        let dst_start = self.dst_start;
        let Some(chunk) = self.chunks.get_mut(slot).and_then(Option::as_mut) else {
            return Ok(());
        };
        let at = dst_start + chunk.rel + chunk.done;
        let Some(n) = settle(chunk, result, || {
            format!("write of the destination file at offset {at}")
        })?
        else {
            return Ok(());
        };
        if n == 0 {
            chunk.step = Step::Idle;
            return Err(TransferError::new(
                FailureKind::Io,
                "the destination file accepted 0 bytes",
            ));
        }
        chunk.done += n;
        if chunk.done >= chunk.len {
            self.moved += chunk.want;
            if chunk.step == Step::WritingTail {
                self.tail = 0;
                if let Err(e) = super::dio::set_direct(raw(&self.ends.dst), true) {
                    chunk.step = Step::Idle;
                    return Err(TransferError::os(
                        "switching O_DIRECT back on for the destination",
                        e.raw_os_error().unwrap_or(libc::EIO),
                    ));
                }
            }
            chunk.step = Step::Idle;
        }
        Ok(())
    }

    fn short_source(&self, reached: u64) -> TransferError {
        TransferError::short_source(reached, self.src_start, self.total, self.length_requested)
    }

    fn pump(&mut self, owner: Owner, io: &mut Io, yield_bufs: bool, out: &mut Vec<Returned>) {
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
            if let Err(e) = self.step(slot, owner, io, yield_bufs, out) {
                self.failure.get_or_insert(e);
                for user_data in self.chunks.iter().flatten().filter_map(|c| c.busy) {
                    let _ = io.cancel(user_data);
                }
                self.release(slot, out);
            }
        }
        self.maybe_finish(owner, io);
    }

    fn step(
        &mut self,
        slot: usize,
        owner: Owner,
        io: &mut Io,
        yield_bufs: bool,
        out: &mut Vec<Returned>,
    ) -> Result<(), TransferError> {
        let ends = Rc::clone(&self.ends);
        let (src_start, dst_start) = (self.src_start, self.dst_start);
        // Per-I/O flags such as RWF_DONTCACHE mean nothing to a socket.
        let file_rw = self.rw();
        let stream_rw = RwOpts {
            fixed: self.fixed,
            flags: 0,
        };
        let (src_stream, dst_stream, dst_append, zc, write_seq, src_dontcache) = (
            self.src_stream,
            self.dst_stream,
            self.dst_append,
            self.zc,
            self.write_seq,
            self.src_dontcache,
        );
        let Some(chunk) = self.chunks[slot].as_mut() else {
            return Ok(());
        };
        let tag = slot as u16;
        match chunk.step {
            _ if chunk.wait.is_some() => {
                let events = chunk.wait.take().unwrap_or(libc::POLLIN);
                let (kind, fd) = if events == libc::POLLIN {
                    (CopyStep::PollIn(tag), raw(&ends.src))
                } else {
                    (CopyStep::PollOut(tag), raw(&ends.dst))
                };
                let ud = io
                    .poll(owner, kind.tag(), &ends, fd, events)
                    .map_err(ring_failed)?;
                chunk.busy = Some(ud);
            }
            Step::Reading => {
                let at = chunk.done;
                let (len, offset, rw) = if src_stream {
                    // A socket ignores the offset; any other stream (a
                    // character device, a pipe) is read at its position.
                    let offset = if ends.src_kind == FdKind::Socket {
                        0
                    } else {
                        u64::MAX
                    };
                    (chunk.want - at, offset, stream_rw)
                } else if src_dontcache {
                    (chunk.len - at, src_start + chunk.rel + at, file_rw)
                } else {
                    let rw = RwOpts {
                        fixed: file_rw.fixed,
                        flags: 0,
                    };
                    (chunk.len - at, src_start + chunk.rel + at, rw)
                };
                submit(
                    chunk,
                    io,
                    owner,
                    CopyStep::BufIn(tag),
                    &ends,
                    raw(&ends.src),
                    (at as usize, len as u32),
                    BufWhat::Read { offset, rw },
                )?;
            }
            Step::Writing if dst_stream || dst_append => {
                if chunk.seq != write_seq {
                    // An earlier chunk's bytes go first.
                    return Ok(());
                }
                let at = chunk.done;
                let len = chunk.want - at;
                if dst_append {
                    // Offset -1: the file position, which O_APPEND keeps at the end.
                    submit(
                        chunk,
                        io,
                        owner,
                        CopyStep::BufOut(tag),
                        &ends,
                        raw(&ends.dst),
                        (at as usize, len as u32),
                        BufWhat::Write {
                            offset: u64::MAX,
                            rw: file_rw,
                        },
                    )?;
                    return Ok(());
                }
                submit(
                    chunk,
                    io,
                    owner,
                    CopyStep::BufOut(tag),
                    &ends,
                    raw(&ends.dst),
                    (at as usize, len as u32),
                    BufWhat::Send {
                        zc: zc && len >= ZC_MIN,
                        fixed: self.fixed,
                    },
                )?;
            }
            Step::Writing | Step::WritingTail => {
                let at = chunk.done;
                let rw = if chunk.step == Step::WritingTail {
                    RwOpts {
                        fixed: file_rw.fixed,
                        flags: 0,
                    }
                } else {
                    file_rw
                };
                self.touched = true;
                submit(
                    chunk,
                    io,
                    owner,
                    CopyStep::BufOut(tag),
                    &ends,
                    raw(&ends.dst),
                    (at as usize, (chunk.len - at) as u32),
                    BufWhat::Write {
                        offset: dst_start + chunk.rel + at,
                        rw,
                    },
                )?;
            }
            Step::Idle if src_stream => {
                if self.phase != Phase::Copy || self.src_done || yield_bufs {
                    self.release(slot, out);
                    return Ok(());
                }
                if self.reader.is_some() {
                    // Another chunk is filling; this one reads next.
                    return Ok(());
                }
                let Some(chunk) = self.chunks[slot].as_mut() else {
                    return Ok(());
                };
                chunk.want = (self.total - self.assigned)
                    .min(chunk.capacity())
                    .min(self.piece_limit);
                chunk.len = chunk.want;
                chunk.done = 0;
                chunk.step = Step::Reading;
                self.reader = Some(slot);
                return self.step(slot, owner, io, yield_bufs, out);
            }
            Step::Idle => {
                let body = self.total - self.tail;
                let alone = self.chunks.iter().flatten().count() == 1;
                let tail_now =
                    self.tail > 0 && self.assigned >= body && alone && self.assigned < self.total;
                let more = self.assigned < body && self.eof.is_none();
                let probe = self.may_probe();
                if self.phase != Phase::Copy || !(more || tail_now || probe) || yield_bufs {
                    self.release(slot, out);
                    return Ok(());
                }
                let (open_end, eof, prober, assigned, total) = (
                    self.open_end,
                    self.eof,
                    self.prober,
                    self.assigned,
                    self.total,
                );
                let Some(chunk) = self.chunks[slot].as_mut() else {
                    return Ok(());
                };
                let cap = chunk.capacity().min(self.piece_limit);
                chunk.rel = self.assigned;
                let end = if tail_now { self.total } else { body };
                chunk.want = end.saturating_sub(self.assigned).min(cap);
                chunk.len = match self.mode {
                    IoMode::Direct { align } => chunk.want.div_ceil(align) * align,
                    IoMode::Uncached | IoMode::Buffered => chunk.want,
                };
                // The range that reaches the hint asks for a whole buffer: a
                // short read then says where the file ends, without another
                // read that returns 0.
                chunk.open =
                    open_end && eof.is_none() && prober.is_none() && assigned + chunk.want >= total;
                if chunk.open {
                    chunk.len = match self.mode {
                        IoMode::Direct { align } => (cap / align).max(1) * align,
                        IoMode::Uncached | IoMode::Buffered => cap,
                    };
                    self.prober = Some(slot);
                }
                chunk.done = 0;
                chunk.step = Step::Reading;
                chunk.seq = self.next_seq;
                self.next_seq += 1;
                self.assigned += chunk.want;
                return self.step(slot, owner, io, yield_bufs, out);
            }
        }
        Ok(())
    }

    fn release(&mut self, slot: usize, out: &mut Vec<Returned>) {
        if let Some(chunk) = self.chunks[slot].take() {
            if self.prober == Some(slot) {
                self.prober = None;
            }
            // An idle chunk holds its buffer: no operation is in flight.
            if let Some(buf) = chunk.buf {
                out.push(Returned::Buffer(buf));
            }
        }
    }

    /// Once every chunk is back: truncate the destination to its exact final
    /// size (cutting the padding), or after a failure to its original size.
    fn maybe_finish(&mut self, owner: Owner, io: &mut Io) {
        let idle = self.chunks.iter().all(Option::is_none) && self.side_op.is_none();
        let copied = self.failure.is_none() && self.phase == Phase::Copy && self.all_assigned();
        let failed = self.failure.is_some() && matches!(self.phase, Phase::Prealloc | Phase::Copy);
        if !idle || !(copied || failed) {
            return;
        }
        if (failed && !self.touched) || (copied && (self.dst_stream || self.dst_append)) {
            // Nothing to cut or restore: a socket, or a file never written.
            self.phase = Phase::Done;
            return;
        }
        // fallocate took the file to the hint's end, and the source ended
        // before it: cut back.
        let cut = self.preallocated && self.end() < self.total;
        if copied && !cut && matches!(self.mode, IoMode::Uncached | IoMode::Buffered) {
            // Without padding the file already has its final size: the
            // writes (or fallocate, which extends to the same end) took it
            // to max(original size, end of the range).
            self.phase = Phase::Done;
            return;
        }
        let size = if failed {
            self.orig_dst_size
        } else {
            self.final_size()
        };
        let ends = Rc::clone(&self.ends);
        self.phase = Phase::Truncate;
        match io.ftruncate(owner, CopyStep::Truncate.tag(), &ends, raw(&ends.dst), size) {
            Ok(ud) => self.side_op = Some(ud),
            Err(e) => {
                self.failure.get_or_insert(ring_failed(e));
                self.phase = Phase::Done;
            }
        }
    }
}

/// Takes a chunk's completed operation off it. What an error means comes
/// from the errno table: an interruption gives `Ok(None)` and the chunk's
/// step is issued again; EAGAIN also `Ok(None)`, after a readiness poll.
/// Any other error idles the chunk and names the operation `op` describes;
/// success gives the count.
fn settle(
    chunk: &mut Chunk,
    result: i32,
    op: impl FnOnce() -> String,
) -> Result<Option<u64>, TransferError> {
    chunk.busy = None;
    if result >= 0 {
        return Ok(Some(result as u64));
    }
    let side = match chunk.step {
        Step::Reading => Side::Source,
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
            chunk.step = Step::Idle;
            Err(TransferError::os(op(), -result))
        }
    }
}

/// Sets a chunk whose bytes are in its buffer up to write them: to a file
/// with O_DIRECT, the length is rounded up to the alignment and the padding
/// zeroed (the final truncate cuts it off again).
fn prepare_write(chunk: &mut Chunk, mode: IoMode, dst_stream: bool) {
    chunk.len = match mode {
        IoMode::Direct { align } if !dst_stream => chunk.want.div_ceil(align) * align,
        _ => chunk.want,
    };
    if chunk.len > chunk.want {
        // The read completed and gave the buffer back; `zero` checks the
        // padding lies within it.
        if let Some(buf) = chunk.buf.as_mut() {
            buf.zero(chunk.want as usize, chunk.len as usize);
        }
    }
    chunk.step = Step::Writing;
    chunk.done = 0;
}

fn raw(fd: &std::os::fd::OwnedFd) -> i32 {
    use std::os::fd::AsRawFd;
    fd.as_raw_fd()
}

fn ring_failed(e: crate::io::EngineError) -> TransferError {
    TransferError::new(
        FailureKind::Io,
        format!("queueing the next operation failed: {e}"),
    )
}
