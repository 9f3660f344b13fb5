//! The verification pass: after a job's bytes are in place (and synced, if
//! asked), read the source range and the destination range back through one
//! pool buffer and compare their CRC-32C.
//!
//! Reads go one at a time, source piece then destination piece, so both
//! checksums are computed in order and the pass needs a single buffer. A
//! destination open with O_DIRECT (the direct strategy) is read from the
//! device, not from the page cache, so what is compared is what landed.

use std::rc::Rc;

use ringxfer_ipc::{Checksums, FailureKind};

use super::splice::Returned;
use super::{Endpoints, TransferError};
use crate::io::buffer_pool::BufRef;
use crate::io::ops::Owner;
use crate::io::queue::{BufIo, BufWhat, RwOpts};
use crate::io::Io;

/// Reads start at offsets rounded down to this, so a descriptor open with
/// O_DIRECT (by the direct strategy, or by the client) accepts them; 4 KiB
/// is a multiple of every logical block size Linux supports for O_DIRECT
/// except on 64 KiB-sector devices, and the buffers are page aligned.
const READ_ALIGN: u64 = 4096;

/// A read of the verification pass, of the source or the destination: the
/// tag its op carries (class 2 of a job's tags, transfer/step.rs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct VerifyRead {
    pub of_dst: bool,
}

impl VerifyRead {
    const CLASS: u32 = 2;

    pub(crate) fn tag(self) -> u32 {
        Self::CLASS << 24 | u32::from(self.of_dst)
    }

    /// The read a tag says, if it is a verification read's.
    pub(crate) fn from_tag(tag: u32) -> Option<VerifyRead> {
        match tag {
            t if t == (VerifyRead { of_dst: false }).tag() => Some(VerifyRead { of_dst: false }),
            t if t == (VerifyRead { of_dst: true }).tag() => Some(VerifyRead { of_dst: true }),
            _ => None,
        }
    }
}

/// The verification of one job.
pub(crate) struct Verifier {
    ends: Rc<Endpoints>,
    src_start: u64,
    dst_start: u64,
    total: u64,
    /// Bytes of the range compared so far.
    pos: u64,
    /// Bytes of the source piece now in the buffer, to compare with the
    /// destination's.
    piece: u64,
    crc_src: u32,
    crc_dst: u32,
    /// The source's CRC-32C computed while copying: only the destination
    /// is read back.
    src_known: Option<u32>,
    buf: Option<BufRef>,
    busy: Option<u64>,
    done: bool,
    failure: Option<TransferError>,
}

impl Verifier {
    /// Verifies `total` bytes at `src_start` of the source against
    /// `dst_start` of the destination.
    pub(crate) fn new(
        ends: Rc<Endpoints>,
        (src_start, dst_start): (u64, u64),
        total: u64,
        src_known: Option<u32>,
    ) -> Verifier {
        Verifier {
            ends,
            src_start,
            dst_start,
            total,
            pos: 0,
            piece: 0,
            crc_src: src_known.unwrap_or(0),
            crc_dst: 0,
            src_known,
            buf: None,
            busy: None,
            done: total == 0,
            failure: None,
        }
    }

    pub(crate) fn wants_buffer(&self) -> bool {
        // While a read holds the buffer, `buf` is empty too.
        self.buf.is_none() && self.busy.is_none() && !self.done && self.failure.is_none()
    }

    pub(crate) fn is_finished(&self) -> bool {
        (self.done || self.failure.is_some()) && self.busy.is_none() && self.buf.is_none()
    }

    /// The outcome once finished: the checksums, or why verification failed.
    pub(crate) fn outcome(&self) -> Result<Checksums, TransferError> {
        if let Some(e) = &self.failure {
            return Err(e.clone());
        }
        let sums = Checksums {
            source: self.crc_src,
            destination: self.crc_dst,
        };
        if sums.source != sums.destination {
            return Err(TransferError::new(
                FailureKind::Mismatch,
                format!(
                    "verification failed: the source's CRC-32C is {:08x} but the destination's is {:08x} \
                     over {} bytes",
                    sums.source, sums.destination, self.total
                ),
            ));
        }
        Ok(sums)
    }

    pub(crate) fn add_buffer(
        &mut self,
        buf: BufRef,
        owner: Owner,
        io: &mut Io,
        out: &mut Vec<Returned>,
    ) {
        if self.buf.is_some() {
            out.push(Returned::Buffer(buf));
            return;
        }
        self.buf = Some(buf);
        self.next(owner, io, out);
    }

    pub(crate) fn fail(&mut self, err: TransferError, io: &mut Io, out: &mut Vec<Returned>) {
        self.failure.get_or_insert(err);
        if let Some(ud) = self.busy {
            // A failed cancel request means the ring itself is failing; the
            // read still completes, which is all that matters here.
            let _ = io.cancel(ud);
        } else {
            self.release(out);
        }
    }

    /// `buf`: the buffer the read held, handed back by its completion.
    pub(crate) fn on_complete(
        &mut self,
        tag: u32,
        result: i32,
        buf: Option<BufRef>,
        owner: Owner,
        io: &mut Io,
        out: &mut Vec<Returned>,
    ) {
        self.busy = None;
        if let Some(buf) = buf {
            if self.buf.is_some() {
                out.push(Returned::Buffer(buf));
            } else {
                self.buf = Some(buf);
            }
        }
        let Some(VerifyRead { of_dst }) = VerifyRead::from_tag(tag) else {
            return;
        };
        if self.failure.is_some() {
            self.release(out);
            return;
        }
        if result < 0 {
            let errno = -result;
            // Files: EAGAIN (a client's O_NONBLOCK) is tried again like an
            // interruption; anything the table fails, fails verification.
            if crate::transfer::errno::action(errno, crate::transfer::errno::Side::Source)
                == crate::transfer::errno::Action::Fail
            {
                let (which, kind) = if of_dst {
                    ("destination", self.ends.dst_kind)
                } else {
                    ("source", self.ends.src_kind)
                };
                self.failure = Some(TransferError::os(
                    format!("reading the {which} {kind} back for verification"),
                    errno,
                ));
                self.release(out);
                return;
            }
            // Interrupted: the same read again.
            if of_dst {
                self.read(true, owner, io, out);
            } else {
                self.next(owner, io, out);
            }
            return;
        }
        let Some(len) = self.buf.as_ref().map(|b| b.len) else {
            return;
        };
        let skip = self.skip(of_dst);
        let n = (result as u64).saturating_sub(skip);
        if !of_dst {
            // The destination's piece is read into the same buffer at its
            // own skip, so the piece must fit after the larger of the two.
            let room = u64::from(len) - skip.max(self.skip(true));
            let want = (self.total - self.pos).min(room);
            let got = n.min(want);
            if got == 0 {
                self.failure = Some(TransferError::new(
                    FailureKind::SourceShort,
                    format!(
                        "verification: the source ended at offset {} before the {} bytes copied",
                        self.src_start + self.pos,
                        self.total
                    ),
                ));
                self.release(out);
                return;
            }
            self.crc_src = crc32c::crc32c_append(self.crc_src, self.bytes(skip, got));
            self.piece = got;
            self.read(true, owner, io, out);
            return;
        }
        let got = n.min(self.piece);
        self.crc_dst = crc32c::crc32c_append(self.crc_dst, self.bytes(skip, got));
        if got < self.piece {
            // The destination is shorter than what was copied: the sums
            // differ (unless by chance), and there is nothing more to read.
            self.done = true;
            self.crc_dst = !self.src_known.unwrap_or(self.crc_src);
            self.release(out);
            return;
        }
        self.pos += got;
        self.next(owner, io, out);
    }

    /// Where the range's byte at `pos` sits in the buffer after an aligned read.
    fn skip(&self, of_dst: bool) -> u64 {
        let start = if of_dst {
            self.dst_start
        } else {
            self.src_start
        };
        (start + self.pos) % READ_ALIGN
    }

    /// The bytes of the buffer the read just filled (its completion gave
    /// the buffer back; `filled` checks they lie within it).
    fn bytes(&self, skip: u64, len: u64) -> &[u8] {
        self.buf
            .as_ref()
            .map_or(&[][..], |b| b.filled(skip as usize, len as usize))
    }

    fn next(&mut self, owner: Owner, io: &mut Io, out: &mut Vec<Returned>) {
        if self.pos >= self.total {
            self.done = true;
            self.release(out);
            return;
        }
        if self.src_known.is_some() {
            if let Some(buf) = self.buf.as_ref() {
                let room = u64::from(buf.len) - self.skip(true);
                self.piece = (self.total - self.pos).min(room);
            }
            self.read(true, owner, io, out);
            return;
        }
        self.read(false, owner, io, out);
    }

    fn read(&mut self, of_dst: bool, owner: Owner, io: &mut Io, out: &mut Vec<Returned>) {
        let Some(buf) = self.buf.take() else {
            return;
        };
        let (fd, offset) = if of_dst {
            (self.ends.shared_dst(), self.dst_start + self.pos)
        } else {
            (self.ends.shared_src(), self.src_start + self.pos)
        };
        let offset = offset - offset % READ_ALIGN;
        // A whole buffer is read each time: its length is a multiple of any
        // O_DIRECT alignment, and only the bytes of the range are hashed.
        let what = BufWhat::Read {
            offset,
            rw: RwOpts {
                fixed: false,
                flags: 0,
            },
        };
        let len = buf.len;
        let req = BufIo {
            fd,
            buf,
            at: 0,
            len,
        };
        match io.buffer_op(owner, VerifyRead { of_dst }.tag(), req, what) {
            Ok(ud) => self.busy = Some(ud),
            Err(failed) => {
                self.buf = failed.buf;
                self.failure = Some(TransferError::new(
                    FailureKind::Io,
                    format!("queueing a verification read failed: {}", failed.error),
                ));
                self.release(out);
            }
        }
    }

    fn release(&mut self, out: &mut Vec<Returned>) {
        if self.busy.is_none() {
            if let Some(buf) = self.buf.take() {
                out.push(Returned::Buffer(buf));
            }
        }
    }
}
