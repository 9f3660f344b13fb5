//! Pulling a file from another daemon (host to host) through a TCP socket
//! the client connected, into the job's destination (a staged file): the
//! peer wire spoken by one job, the other way round from peer_push.rs.
//!
//! `Hello` and `Get` go out at once; `Ready` brings the file's size, mode
//! and times; each piece of data is copied from the link's buffer into
//! write buffers (write_buffers.rs) and written at its offset, its CRC-32C
//! taken as it passes, the next read waiting for room. At `End`, once every
//! write has landed, size and CRC must be what the other daemon said; then
//! mode and times go on the file and `Done` goes back, and the job is done
//! (the client names the file). Anything else fails the job, and the
//! client drops the staged file.

use std::os::fd::OwnedFd;
use std::rc::Rc;
use std::time::{Duration, Instant};

use ringxfer_ipc::proto::peer::{FileMeta, PeerMessage, RemotePath, PEER_PROTOCOL_VERSION};
use ringxfer_ipc::{FailureKind, Strategy};

use super::block_sums::{self, BLOCK, MAX_BLOCKS};
use super::peer_link::{self, Got, PeerLink, SocketEnd};
use super::pipeline::Returned;
use super::step::CopyStep;
use super::write_buffers::WriteBuffers;
use super::{Endpoints, Shape, TransferError};
use crate::io::buffer_pool::BufRef;
use crate::io::op::{self, set_meta::Meta, AnyOp};
use crate::io::ops::Owner;
use crate::io::Io;
use crate::tls::Session;

/// The transfer's number on its connection: one file per connection.
const XFER: u64 = 1;
const WRITE_BUFFERS: usize = 2;
const WRITE_BUFFER: usize = 1 << 20;
// A kept part is summed a write buffer at a time.
const _: () = assert!(WRITE_BUFFER as u64 == BLOCK);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Resuming: the part kept in the destination is read and summed
    /// before the file is asked for.
    Summing,
    /// `Hello` and `Get` sent; `Welcome`, then `Ready`, awaited.
    Asked,
    /// Receiving the file.
    Body,
    /// Every byte is in and checked; mode and times being set.
    Checked,
    /// `Done` went back.
    Landed,
}

pub(crate) struct PeerPull {
    ends: Rc<Endpoints>,
    shape: Shape,
    path: RemotePath,
    /// The directory's listing (`List`), not a file (`Get`).
    list: bool,
    /// Resuming (`Get { resume: true }`): the sums of the destination's
    /// whole blocks, the bytes they cover; where the data started.
    resume: Option<Vec<u32>>,
    summed: u64,
    resumed_from: u64,
    phase: Phase,
    link: PeerLink,
    meta: Option<FileMeta>,
    received: u64,
    crc: u32,
    /// What `End` said: size and CRC-32C.
    end: Option<(u64, u32)>,
    writes: WriteBuffers,
    /// A pool buffer held while a read of the file's data is in flight:
    /// not written to, it is the permit that rate limits, priorities and
    /// users' shares count, as they count a copy's buffers.
    permit: Option<BufRef>,
    /// Writes and the metadata op in flight.
    in_flight: usize,
    pub(crate) moved: u64,
    failure: Option<TransferError>,
}

impl PeerPull {
    /// Pulls `path` through the socket `ends.src` into `ends.dst`.
    pub(crate) fn new(
        ends: Rc<Endpoints>,
        shape: Shape,
        (path, list, resume): (RemotePath, bool, bool),
        tls: Option<Session>,
        kept: Option<PeerLink>,
    ) -> PeerPull {
        let link = kept.unwrap_or_else(|| PeerLink::new(Rc::clone(&ends), SocketEnd::Source, tls));
        PeerPull {
            ends,
            shape,
            path,
            list,
            resume: (resume && !list).then(Vec::new),
            summed: 0,
            resumed_from: 0,
            phase: Phase::Asked,
            link,
            meta: None,
            received: 0,
            crc: 0,
            end: None,
            writes: WriteBuffers::new(WRITE_BUFFERS, WRITE_BUFFER),
            permit: None,
            in_flight: 0,
            moved: 0,
            failure: None,
        }
    }

    pub(crate) fn strategy(&self) -> Strategy {
        Strategy::Peer
    }

    /// The file's size, once `Ready` said it.
    pub(crate) fn total(&self) -> Option<u64> {
        self.meta.map(|m| m.size)
    }

    pub(crate) fn endpoints(&self) -> Rc<Endpoints> {
        Rc::clone(&self.ends)
    }

    /// Every descriptor it holds, to close off the loop thread.
    pub(crate) fn into_descriptors(self) -> Vec<OwnedFd> {
        let PeerPull { ends, link, .. } = self;
        peer_link::let_go(ends, link, false).0
    }

    /// The descriptors to close, and the conversation, kept for the next
    /// file if the file landed (and the link can be kept: `let_go`).
    pub(crate) fn into_kept(self) -> (Vec<OwnedFd>, Option<PeerLink>) {
        let landed = self.phase == Phase::Landed && self.failure.is_none();
        let PeerPull { ends, link, .. } = self;
        peer_link::let_go(ends, link, landed)
    }

    /// Bytes of the file that came, written or not.
    pub(crate) fn bytes_in(&self) -> u64 {
        self.received
    }

    pub(crate) fn failure(&self) -> Option<&TransferError> {
        self.failure.as_ref()
    }

    /// While the pull waits for the file (the answer, or its data, read as
    /// permits allow): the other daemon's silence, and how long a `Ping`
    /// went unanswered (`PeerLink::silence`); None when not waiting on it.
    pub(crate) fn peer_silence(&self, now: Instant) -> Option<(Duration, Option<Duration>)> {
        let waiting = matches!(self.phase, Phase::Asked | Phase::Body);
        (waiting && self.failure.is_none())
            .then(|| self.link.silence(now))
            .flatten()
    }

    /// Asks the other daemon whether it is still there.
    pub(crate) fn ping_peer(&mut self, owner: Owner, io: &mut Io) {
        if let Err(e) = self.link.ping(owner, io) {
            self.failed(e);
            // Nothing else would end the read still waiting.
            self.link.cancel(io);
        }
    }

    pub(crate) fn is_finished(&self) -> bool {
        self.in_flight == 0
            && self.link.in_flight == 0
            && (self.phase == Phase::Landed || self.failure.is_some())
    }

    /// The CRC-32C the other daemon sent and the one of what landed.
    pub(crate) fn checksums(&self) -> Option<(u32, u32)> {
        let (_, sent) = self.end?;
        (self.phase == Phase::Landed).then_some((sent, self.crc))
    }

    /// The file is coming and a read of it would fit: a permit is wanted.
    pub(crate) fn wants_buffer(&self) -> bool {
        self.phase == Phase::Body
            && self.failure.is_none()
            && self.permit.is_none()
            && !self.link.reading()
            && self.writes.room() >= self.link.rx_room()
    }

    /// A permit: the next read of the file goes.
    pub(crate) fn lend(&mut self, buf: BufRef, owner: Owner, io: &mut Io, out: &mut Vec<Returned>) {
        if !self.wants_buffer() {
            return out.push(Returned::Buffer(buf));
        }
        if let Err(e) = self.link.listen(owner, io) {
            out.push(Returned::Buffer(buf));
            return self.failed(e);
        }
        self.permit = Some(buf);
    }

    /// Resumed: where the data started (the bytes of the kept part that
    /// matched the other daemon's file).
    pub(crate) fn resumed_from(&self) -> u64 {
        self.resumed_from
    }

    /// Says `Hello`, asks for the file, and listens; resumed, sums the
    /// part kept first.
    pub(crate) fn start(&mut self, owner: Owner, io: &mut Io) {
        if self.resume.is_some() {
            self.phase = Phase::Summing;
            if let Err(e) = self.sum_next(owner, io) {
                self.failed(e);
            }
            return;
        }
        self.ask(owner, io);
    }

    /// Reads the part's next block, into a write buffer.
    fn sum_next(&mut self, owner: Owner, io: &mut Io) -> Result<(), TransferError> {
        let full = self.resume.as_ref().is_none_or(|s| s.len() >= MAX_BLOCKS);
        let buf = if full { None } else { self.writes.take_spare() };
        let Some(buf) = buf else {
            return self.ask_resumed(owner, io);
        };
        let at = self.shape.dst_start + self.summed;
        let read = op::ReadInto::new(self.ends.shared_dst(), buf, 0, Some(at));
        io.queue_op(owner, CopyStep::PeerSum.tag(), read)
            .map_err(|e| {
                TransferError::new(FailureKind::Io, format!("cannot queue a read: {e}"))
            })?;
        self.in_flight += 1;
        Ok(())
    }

    /// A block of the part: summed if whole; a short one ends the part.
    fn summed_block(
        &mut self,
        read: op::ReadInto,
        result: i32,
        owner: Owner,
        io: &mut Io,
    ) -> Result<(), TransferError> {
        self.in_flight -= 1;
        let whole = usize::try_from(result).is_ok_and(|n| n == read.buf.len());
        if whole {
            if let Some(sums) = self.resume.as_mut() {
                sums.push(crc32c::crc32c(&read.buf));
                self.summed += BLOCK;
            }
        }
        self.writes.give_back(read.buf);
        if result < 0 {
            let what = format!("read of the kept part at offset {}", self.summed);
            return Err(TransferError::os(what, -result));
        }
        if whole && self.failure.is_none() {
            return self.sum_next(owner, io);
        }
        self.ask_resumed(owner, io)
    }

    /// The part is summed: the file is asked for, the sums said.
    fn ask_resumed(&mut self, owner: Owner, io: &mut Io) -> Result<(), TransferError> {
        self.ask(owner, io);
        let sums = self.resume.take().unwrap_or_default();
        let mut sent = 0;
        for frame in block_sums::frames(XFER, &sums, &mut sent, true) {
            self.link.say(&frame, owner, io)?;
        }
        self.resume = Some(sums);
        let ready = PeerMessage::Ready {
            xfer: XFER,
            offset: self.summed,
            meta: None,
        };
        self.link.say(&ready, owner, io)
    }

    /// Says `Hello`, asks for the file, and listens.
    fn ask(&mut self, owner: Owner, io: &mut Io) {
        self.phase = Phase::Asked;
        let (xfer, path) = (XFER, self.path.clone());
        let get = if self.list {
            PeerMessage::List { xfer, path }
        } else {
            PeerMessage::Get {
                xfer,
                path,
                resume: self.resume.is_some(),
            }
        };
        if let Err(e) = self.link.open_with(&get, owner, io) {
            self.failed(e);
        }
    }

    /// A completion of one of its operations (each holds its own buffer);
    /// a read's permit goes back to `out`.
    pub(crate) fn on_control(
        &mut self,
        tag: u32,
        result: i32,
        op: AnyOp,
        owner: Owner,
        io: &mut Io,
        out: &mut Vec<Returned>,
    ) {
        if CopyStep::from_tag(tag) == Some(CopyStep::PeerRecv) {
            out.extend(self.permit.take().map(Returned::Buffer));
        }
        let handled = match (CopyStep::from_tag(tag), op) {
            (Some(CopyStep::PeerSend), AnyOp::Send(send)) => {
                self.link.on_sent(send, result, owner, io)
            }
            (Some(CopyStep::PeerRecv), AnyOp::ReadInto(read)) => {
                match self.link.on_read(read, result) {
                    // The read cancelled once the file landed.
                    _ if self.phase == Phase::Landed => Ok(()),
                    Ok(true) => self.received(owner, io),
                    Ok(false) => Err(TransferError::new(
                        FailureKind::PeerGone,
                        "the other daemon closed the connection before the whole file came",
                    )),
                    Err(e) => Err(e),
                }
            }
            (Some(CopyStep::PeerWrite), AnyOp::WriteFrom(write)) => {
                self.written(write, result, owner, io)
            }
            (Some(CopyStep::PeerMeta), _) => self.meta_set(result, owner, io),
            (Some(CopyStep::PeerSum), AnyOp::ReadInto(read)) => {
                self.summed_block(read, result, owner, io)
            }
            (Some(CopyStep::PeerCut), _) => self.cut(result, owner, io),
            _ => Ok(()),
        };
        if let Err(e) = handled {
            self.failed(e);
        }
        if self.failure.is_some() {
            self.link.cancel(io);
        }
    }

    /// What came is opened, cut and handled; more is read while there is
    /// room for it.
    fn received(&mut self, owner: Owner, io: &mut Io) -> Result<(), TransferError> {
        if self.failure.is_some() {
            return Ok(());
        }
        let mut full = Vec::with_capacity(WRITE_BUFFERS);
        loop {
            let more = self.link.open()?;
            let mut at = 0;
            while let Some(got) = self.link.next(&mut at)? {
                match got {
                    Got::Message(m) => self.answer(m, owner, io, &mut full)?,
                    Got::Data { offset, at, len } => self.take_data(offset, at, len, &mut full)?,
                }
            }
            self.link.consumed(at);
            self.write_full(&mut full, owner, io)?;
            if !more {
                break;
            }
        }
        self.link.flush(owner, io)?;
        self.listen(owner, io)
    }

    /// Reads on for the answers before the file; the file's own data is
    /// read with a permit (`lend`).
    fn listen(&mut self, owner: Owner, io: &mut Io) -> Result<(), TransferError> {
        if self.failure.is_none() && self.phase == Phase::Asked {
            self.link.listen(owner, io)?;
        }
        Ok(())
    }

    fn answer(
        &mut self,
        message: PeerMessage,
        owner: Owner,
        io: &mut Io,
        full: &mut Vec<(u64, Vec<u8>)>,
    ) -> Result<(), TransferError> {
        match (self.phase, message) {
            (Phase::Asked, PeerMessage::Welcome { version, .. }) if version != PEER_PROTOCOL_VERSION => Err(protocol(&format!(
                "the other daemon speaks version {version} of the wire, this one {PEER_PROTOCOL_VERSION}"
            ))),
            (Phase::Asked, PeerMessage::Welcome { .. }) => Ok(()),
            (Phase::Asked, PeerMessage::Ready { offset, meta: Some(meta), .. }) => {
                self.resume_at(offset)?;
                self.meta = Some(meta);
                self.phase = Phase::Body;
                Ok(())
            }
            (_, PeerMessage::Refused { kind, message, .. } | PeerMessage::Failed { kind, message, .. }) => {
                Err(TransferError::new(kind, format!("the other daemon: {message}")))
            }
            (Phase::Body, PeerMessage::End { size, crc32c, .. }) => {
                self.end = Some((size, crc32c));
                self.writes.flush_into(full);
                self.write_full(full, owner, io)?;
                self.check_end(owner, io)
            }
            (_, PeerMessage::Ping) => self.link.say(&PeerMessage::Pong, owner, io),
            (_, PeerMessage::Pong) => Ok(()),
            (phase, other) => Err(protocol(&format!("{other:?} while {phase:?}"))),
        }
    }

    /// The other daemon's data starts at `offset`: 0, or, resumed, the end
    /// of the blocks of the part it found the same.
    fn resume_at(&mut self, offset: u64) -> Result<(), TransferError> {
        if offset == 0 {
            return Ok(());
        }
        let fits = offset.is_multiple_of(BLOCK) && offset <= self.summed;
        let Some(sums) = self.resume.as_ref().filter(|_| fits) else {
            return Err(protocol(&format!(
                "Ready at offset {offset}, which no sum ends"
            )));
        };
        self.crc = block_sums::combined(sums, (offset / BLOCK) as usize, BLOCK);
        self.received = offset;
        self.moved = offset;
        self.resumed_from = offset;
        Ok(())
    }

    /// Data at `offset`, in the link's buffer at `at`: into the write
    /// buffers, in order, within the announced size.
    fn take_data(
        &mut self,
        offset: u64,
        at: usize,
        len: usize,
        full: &mut Vec<(u64, Vec<u8>)>,
    ) -> Result<(), TransferError> {
        let size = self.meta.map(|m| m.size);
        if self.phase != Phase::Body
            || offset != self.received
            || size.is_none_or(|s| offset + len as u64 > s)
        {
            return Err(protocol(&format!(
                "data at offset {offset} out of order or past the file's size"
            )));
        }
        let bytes = self.link.data(at, len);
        self.crc = crc32c::crc32c_append(self.crc, bytes);
        if !self.writes.copy_in(offset, bytes, full) {
            return Err(protocol("more data came than there was room for"));
        }
        self.received += len as u64;
        Ok(())
    }

    /// Writes the buffers filled, each at its offset.
    fn write_full(
        &mut self,
        full: &mut Vec<(u64, Vec<u8>)>,
        owner: Owner,
        io: &mut Io,
    ) -> Result<(), TransferError> {
        for (offset, buf) in full.drain(..) {
            let at = self.shape.dst_start + offset;
            let write = op::WriteFrom::new(self.ends.shared_dst(), buf, at);
            io.queue_op(owner, CopyStep::PeerWrite.tag(), write)
                .map_err(|e| {
                    TransferError::new(FailureKind::Io, format!("cannot queue a write: {e}"))
                })?;
            self.in_flight += 1;
        }
        Ok(())
    }

    fn written(
        &mut self,
        write: op::WriteFrom,
        result: i32,
        owner: Owner,
        io: &mut Io,
    ) -> Result<(), TransferError> {
        self.in_flight -= 1;
        let (at, mut buf) = (write.offset, write.buf);
        if result <= 0 || self.failure.is_some() {
            self.writes.give_back(buf);
            if self.failure.is_some() {
                return Ok(());
            }
            let what = format!("write of the destination file at offset {at}");
            return Err(TransferError::os(
                what,
                if result < 0 { -result } else { libc::EIO },
            ));
        }
        let n = result as usize;
        self.moved += n as u64;
        if n < buf.len() {
            buf.drain(..n);
            let rest = op::WriteFrom::new(self.ends.shared_dst(), buf, at + n as u64);
            io.queue_op(owner, CopyStep::PeerWrite.tag(), rest)
                .map_err(|e| {
                    TransferError::new(FailureKind::Io, format!("cannot queue a write: {e}"))
                })?;
            self.in_flight += 1;
            return Ok(());
        }
        self.writes.give_back(buf);
        if self.end.is_some() {
            return self.check_end(owner, io);
        }
        self.listen(owner, io)
    }

    /// Once every write has landed: the file must be whole and unchanged;
    /// then its mode and times.
    fn check_end(&mut self, owner: Owner, io: &mut Io) -> Result<(), TransferError> {
        let (Some((size, crc)), Some(meta)) = (self.end, self.meta) else {
            return Ok(());
        };
        if self.in_flight > 0 || self.phase != Phase::Body {
            return Ok(());
        }
        if size != meta.size || self.received != size {
            let why = format!(
                "the other daemon ended the file at {size} bytes ({} came), where it announced {}",
                self.received, meta.size
            );
            return Err(TransferError::new(FailureKind::SourceShort, why));
        }
        if crc != self.crc {
            let why = format!(
                "CRC-32C of what came is {:08x}, the other daemon's is {crc:08x}",
                self.crc
            );
            return Err(TransferError::new(FailureKind::Mismatch, why));
        }
        self.phase = Phase::Checked;
        if self.resume.is_some() {
            // A kept part may be longer than the file is now.
            let cut = op::Ftruncate::new(self.ends.shared_dst(), self.shape.dst_start + size);
            io.queue_op(owner, CopyStep::PeerCut.tag(), cut)
                .map_err(|e| {
                    TransferError::new(FailureKind::Io, format!("cannot queue ftruncate: {e}"))
                })?;
            self.in_flight += 1;
            return Ok(());
        }
        self.set_meta(owner, io)
    }

    /// The resumed destination is cut to the file's size: on to its mode
    /// and times.
    fn cut(&mut self, result: i32, owner: Owner, io: &mut Io) -> Result<(), TransferError> {
        self.in_flight -= 1;
        if result < 0 {
            return Err(TransferError::os(
                "cutting the pulled file to its size",
                -result,
            ));
        }
        self.set_meta(owner, io)
    }

    /// Mode and times on the file.
    fn set_meta(&mut self, owner: Owner, io: &mut Io) -> Result<(), TransferError> {
        let Some(meta) = self.meta else {
            return Ok(());
        };
        let set = Meta {
            mode: meta.mode & 0o777,
            atime: (meta.atime.secs, meta.atime.nanos),
            mtime: (meta.mtime.secs, meta.mtime.nanos),
        };
        io.queue_op(
            owner,
            CopyStep::PeerMeta.tag(),
            op::SetMeta::new(self.ends.shared_dst(), set),
        )
        .map_err(|e| {
            TransferError::new(
                FailureKind::Io,
                format!("cannot queue fchmod/futimens: {e}"),
            )
        })?;
        self.in_flight += 1;
        Ok(())
    }

    /// Mode and times are on: `Done` goes back.
    fn meta_set(&mut self, result: i32, owner: Owner, io: &mut Io) -> Result<(), TransferError> {
        self.in_flight -= 1;
        if result < 0 {
            return Err(TransferError::os(
                "setting the pulled file's mode and times",
                -result,
            ));
        }
        self.phase = Phase::Landed;
        // Nothing more comes: the read still waiting goes.
        self.link.cancel(io);
        self.link.say(
            &PeerMessage::Done {
                xfer: XFER,
                crc32c: self.crc,
            },
            owner,
            io,
        )
    }

    /// Fails the pull: the read waiting on the other daemon is cancelled;
    /// the socket closes with the job, and the other daemon stops.
    pub(crate) fn fail(&mut self, err: TransferError, io: &mut Io, out: &mut Vec<Returned>) {
        self.failed(err);
        self.link.cancel(io);
        out.extend(self.permit.take().map(Returned::Buffer));
    }

    fn failed(&mut self, err: TransferError) {
        self.writes.discard_fill();
        if self.failure.is_none() {
            self.failure = Some(err);
        }
    }
}

fn protocol(why: &str) -> TransferError {
    TransferError::new(
        FailureKind::Io,
        format!("the other daemon broke the protocol: {why}"),
    )
}
