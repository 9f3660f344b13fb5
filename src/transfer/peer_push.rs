//! Pushing a file to another daemon (host to host) over a TCP socket the
//! client connected: the peer wire (`ringxfer_ipc::proto::peer`) spoken by
//! one job.
//!
//! `Hello` and `Put` go out at once; once `Welcome` and `Ready` are back,
//! the file is read into one pool buffer at a time, each piece behind the
//! room its `Data` header takes in the same buffer, so header and bytes go
//! out in one SEND from the buffer; its CRC-32C is taken as it passes. Then
//! `End { size, crc32c }`, and the job is done only when the other daemon
//! answers `Done` with the same CRC: it then holds the file, whole, under
//! its name. `Refused`, `Failed`, a CRC that differs or a connection that
//! ends first fail the job; the other daemon then keeps its old file.
//!
//! The control frames travel in buffers the operations own and hand back
//! (`op::Send` of an `Outgoing`, `op::ReadInto`), as a connection's do.

use std::rc::Rc;

use ringxfer_ipc::proto::peer::{
    encode, Checksum, FileMeta, PeerMessage, Put, RemotePath, PEER_PROTOCOL_VERSION,
};
use ringxfer_ipc::{FailureKind, Strategy};

use super::peer_link::{Got, PeerLink, SocketEnd};
use super::pipeline::Returned;
use super::step::CopyStep;
use super::{Endpoints, Shape, TransferError};
use crate::io::buffer_pool::BufRef;
use crate::io::op::AnyOp;
use crate::io::ops::Owner;
use crate::io::queue::{BufIo, BufWhat, RwOpts};
use crate::io::Io;
use crate::tls::Session;

/// Bytes kept free at the front of the buffer for a `Data` header (one is
/// at most 4 + 1 + 3 varints of at most 10 bytes).
const HEADER_ROOM: usize = 64;
/// The transfer's number on its connection: one file per connection.
const XFER: u64 = 1;
/// After a completion: the buffer's next send (from, bytes), none (the
/// piece is done), or the failure with the buffer to give back.
type Next = Result<Option<(BufRef, usize, usize)>, (BufRef, TransferError)>;

/// Where the push is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// `Hello` and `Put` sent; `Welcome`, then `Ready`, awaited.
    Offered,
    /// Sending the file.
    Body,
    /// `End` sent; `Done` awaited.
    Ending,
    /// `Done` came, with the same CRC.
    Landed,
}

/// What the buffer's operation in flight is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Doing {
    Idle,
    Reading,
    /// Sending `len` bytes from `at` (header and data); `data` of them are
    /// the file's.
    Sending {
        at: usize,
        len: usize,
        data: u64,
    },
}

pub(crate) struct PeerPush {
    ends: Rc<Endpoints>,
    shape: Shape,
    size: u64,
    path: RemotePath,
    meta: FileMeta,
    fsync: bool,
    mkdir: bool,
    phase: Phase,
    /// The connection: control frames out, answers in, TLS.
    link: PeerLink,
    /// The pool buffer lent, when idle; what its op does.
    buf: Option<BufRef>,
    doing: Doing,
    /// The file's bytes sent, and their CRC-32C.
    sent: u64,
    crc: u32,
    landed_crc: Option<u32>,
    /// A `Data` header, encoded here before it is copied into the buffer.
    header: Vec<u8>,
    piece_limit: u64,
    /// Reads and sends through the pool buffer in flight.
    in_flight: usize,
    pub(crate) moved: u64,
    failure: Option<TransferError>,
}

impl PeerPush {
    /// Pushes `shape.total` bytes of `ends.src` (from `shape.src_start`) to
    /// `path` through the socket `ends.dst`.
    pub(crate) fn new(
        ends: Rc<Endpoints>,
        shape: Shape,
        (path, mkdir): (RemotePath, bool),
        meta: FileMeta,
        fsync: bool,
        tls: Option<Session>,
    ) -> PeerPush {
        let size = shape.total.unwrap_or(0);
        let link = PeerLink::new(Rc::clone(&ends), SocketEnd::Destination, tls);
        PeerPush {
            ends,
            shape,
            size,
            path,
            meta: FileMeta { size, ..meta },
            fsync,
            mkdir,
            phase: Phase::Offered,
            link,
            buf: None,
            doing: Doing::Idle,
            sent: 0,
            crc: 0,
            landed_crc: None,
            header: Vec::with_capacity(HEADER_ROOM),
            piece_limit: u64::MAX,
            in_flight: 0,
            moved: 0,
            failure: None,
        }
    }

    pub(crate) fn strategy(&self) -> Strategy {
        Strategy::Peer
    }

    pub(crate) fn total(&self) -> Option<u64> {
        Some(self.size)
    }

    pub(crate) fn endpoints(&self) -> Rc<Endpoints> {
        Rc::clone(&self.ends)
    }

    pub(crate) fn into_endpoints(self) -> Option<Endpoints> {
        Rc::try_unwrap(self.ends).ok()
    }

    pub(crate) fn failure(&self) -> Option<&TransferError> {
        self.failure.as_ref()
    }

    pub(crate) fn is_finished(&self) -> bool {
        self.in_flight == 0
            && self.link.in_flight == 0
            && (self.phase == Phase::Landed || self.failure.is_some())
    }

    pub(crate) fn set_piece_limit(&mut self, bytes: u64) {
        self.piece_limit = bytes.max(1);
    }

    /// The CRC-32C of what was sent and of what landed, once it landed.
    pub(crate) fn checksums(&self) -> Option<(u32, u32)> {
        self.landed_crc.map(|landed| (self.crc, landed))
    }

    pub(crate) fn wants_buffer(&self) -> bool {
        // Under TLS the next piece waits until the last one's records are
        // out: what is sealed and unsent stays at most a piece.
        let flushed = !self.link.tls() || self.link.send_idle();
        self.phase == Phase::Body
            && self.failure.is_none()
            && self.buf.is_none()
            && self.doing == Doing::Idle
            && self.sent < self.size
            && flushed
    }

    /// Says `Hello` and offers the file, and listens for the answers.
    pub(crate) fn start(&mut self, owner: Owner, io: &mut Io) {
        let put = Put {
            xfer: XFER,
            path: self.path.clone(),
            meta: self.meta,
            checksum: Checksum::Crc32c,
            resume: false,
            fsync: self.fsync,
            mkdir: self.mkdir,
        };
        if let Err(e) = self.link.open_with(&PeerMessage::Put(put), owner, io) {
            self.failed(e);
        }
    }

    /// A control send or receive completed (`op` hands its buffer back).
    pub(crate) fn on_control(
        &mut self,
        tag: u32,
        result: i32,
        op: AnyOp,
        owner: Owner,
        io: &mut Io,
    ) {
        let handled = match (CopyStep::from_tag(tag), op) {
            (Some(CopyStep::PeerSend), AnyOp::Send(send)) => {
                self.link.on_sent(send, result, owner, io)
            }
            (Some(CopyStep::PeerRecv), AnyOp::ReadInto(read)) => {
                match self.link.on_read(read, result) {
                    Ok(true) => self.received(owner, io),
                    Ok(false) => Err(ended_early(self.phase)),
                    Err(e) => Err(e),
                }
            }
            _ => Ok(()),
        };
        if let Err(e) = handled {
            self.failed(e);
        }
        if self.failure.is_some() {
            self.link.cancel(io);
        }
    }

    /// Bytes from the other daemon: opened (under TLS), then every whole
    /// message is handled; the link listens on until `Done`.
    fn received(&mut self, owner: Owner, io: &mut Io) -> Result<(), TransferError> {
        if self.failure.is_some() {
            return Ok(());
        }
        loop {
            let more = self.link.open()?;
            let mut at = 0;
            while let Some(got) = self.link.next(&mut at)? {
                match got {
                    Got::Message(m) => self.answer(m, owner, io),
                    Got::Data { .. } => {
                        return Err(protocol("the other daemon sent file data to a push"))
                    }
                }
                if self.failure.is_some() {
                    return Ok(());
                }
            }
            self.link.consumed(at);
            if !more {
                break;
            }
        }
        self.link.flush(owner, io)?;
        if self.phase != Phase::Landed {
            self.link.listen(owner, io)?;
        }
        Ok(())
    }

    /// One message from the other daemon.
    fn answer(&mut self, message: PeerMessage, owner: Owner, io: &mut Io) {
        match (self.phase, message) {
            (Phase::Offered, PeerMessage::Welcome { version, limits }) => {
                if version != PEER_PROTOCOL_VERSION {
                    return self.failed(protocol(&format!(
                        "the other daemon speaks version {version} of the wire, this one {PEER_PROTOCOL_VERSION}"
                    )));
                }
                self.link.limits.max_data = limits.max_data.min(self.link.limits.max_data);
            }
            (Phase::Offered, PeerMessage::Ready { offset: 0, .. }) => {
                self.phase = Phase::Body;
                if self.size == 0 {
                    self.end(owner, io);
                }
            }
            (
                _,
                PeerMessage::Refused { kind, message, .. }
                | PeerMessage::Failed { kind, message, .. },
            ) => {
                self.failed(TransferError::new(
                    kind,
                    format!("the other daemon: {message}"),
                ));
            }
            (Phase::Ending, PeerMessage::Done { crc32c, .. }) => self.done(crc32c),
            (_, PeerMessage::Ping) => {
                if let Err(e) = self.link.say(&PeerMessage::Pong, owner, io) {
                    self.failed(e);
                }
            }
            (_, PeerMessage::Pong) => {}
            (phase, other) => self.failed(protocol(&format!("{other:?} while {phase:?}"))),
        }
    }

    fn done(&mut self, landed: u32) {
        self.landed_crc = Some(landed);
        if landed != self.crc {
            return self.failed(TransferError::new(
                FailureKind::Mismatch,
                format!(
                    "the other daemon reports CRC-32C {landed:08x} for what landed, {:08x} was sent",
                    self.crc
                ),
            ));
        }
        self.phase = Phase::Landed;
    }

    /// A pool buffer for the file's bytes.
    pub(crate) fn lend(&mut self, buf: BufRef, owner: Owner, io: &mut Io, out: &mut Vec<Returned>) {
        if !self.wants_buffer() {
            return out.push(Returned::Buffer(buf));
        }
        self.buf = Some(buf);
        self.read_next(owner, io, out);
    }

    /// Reads the next piece of the file behind the header's room.
    fn read_next(&mut self, owner: Owner, io: &mut Io, out: &mut Vec<Returned>) {
        let Some(buf) = self.buf.take() else { return };
        let room = u64::from(buf.len).saturating_sub(HEADER_ROOM as u64);
        let want = (self.size - self.sent)
            .min(room)
            .min(u64::from(self.link.limits.max_data))
            .min(self.piece_limit);
        let at = self.shape.src_start + self.sent;
        let io_span = BufIo {
            fd: self.ends.shared_src(),
            buf,
            at: HEADER_ROOM,
            len: want as u32,
        };
        let what = BufWhat::Read {
            offset: at,
            rw: RwOpts {
                fixed: false,
                flags: 0,
            },
        };
        match io.buffer_op(owner, CopyStep::In(0).tag(), io_span, what) {
            Ok(_) => {
                self.in_flight += 1;
                self.doing = Doing::Reading;
            }
            Err(failed) => {
                out.extend(failed.buf.map(Returned::Buffer));
                self.failed(TransferError::new(
                    FailureKind::Io,
                    format!("cannot queue a read: {}", failed.error),
                ));
            }
        }
    }

    /// A read or send through the pool buffer completed. With
    /// `yield_resources` (a rate limit is spent, or others wait), a piece
    /// sent gives the buffer back, and the job waits its turn for the next.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn on_complete(
        &mut self,
        tag: u32,
        result: i32,
        buf: Option<BufRef>,
        owner: Owner,
        io: &mut Io,
        yield_resources: bool,
        out: &mut Vec<Returned>,
    ) {
        self.in_flight -= 1;
        let Some(buf) = buf else { return };
        let doing = std::mem::replace(&mut self.doing, Doing::Idle);
        if self.failure.is_some() {
            return out.push(Returned::Buffer(buf));
        }
        let next = match (CopyStep::from_tag(tag), doing) {
            (Some(CopyStep::In(_)), Doing::Reading) => self.after_read(buf, result),
            (Some(CopyStep::Out(_)), Doing::Sending { at, len, data }) => {
                self.after_send(buf, result, at, len, data)
            }
            _ => Err((buf, protocol("a completion the push did not expect"))),
        };
        match next {
            Ok(Some((buf, at, len))) if self.link.tls() => {
                self.seal_piece(buf, at, len, owner, io, out)
            }
            Ok(Some((buf, at, len))) => self.send_data(buf, at, len, owner, io, out),
            Ok(None) if self.sent < self.size && yield_resources => {
                out.extend(self.buf.take().map(Returned::Buffer));
            }
            Ok(None) if self.sent < self.size => self.read_next(owner, io, out),
            Ok(None) => {
                out.extend(self.buf.take().map(Returned::Buffer));
                self.end(owner, io);
            }
            Err((buf, e)) => {
                out.push(Returned::Buffer(buf));
                self.failed(e);
            }
        }
        if self.failure.is_some() {
            self.link.cancel(io);
        }
    }

    /// The piece is in: its header goes in front of it, the CRC takes it.
    fn after_read(&mut self, mut buf: BufRef, result: i32) -> Next {
        let at = self.shape.src_start + self.sent;
        if result < 0 {
            return Err((
                buf,
                TransferError::os(format!("read of the source file at offset {at}"), -result),
            ));
        }
        if result == 0 {
            let total = self.size;
            let e = TransferError::short_source(
                at,
                self.shape.src_start,
                total,
                self.shape.length_requested,
            );
            return Err((buf, e));
        }
        let n = result as usize;
        self.crc = crc32c::crc32c_append(self.crc, buf.filled(HEADER_ROOM, n));
        self.header.clear();
        let data = PeerMessage::Data {
            xfer: XFER,
            offset: self.sent,
            len: n as u32,
        };
        if let Err(e) = encode(&data, &mut self.header, self.link.limits.max_frame) {
            return Err((buf, protocol(&e.to_string())));
        }
        let start = HEADER_ROOM - self.header.len();
        buf.copy_in(start, &self.header);
        self.doing = Doing::Sending {
            at: start,
            len: self.header.len() + n,
            data: n as u64,
        };
        Ok(Some((buf, start, self.header.len() + n)))
    }

    /// A send of header and data completed: the rest goes again, or the
    /// piece is done.
    fn after_send(&mut self, buf: BufRef, result: i32, at: usize, len: usize, data: u64) -> Next {
        if result < 0 {
            return Err((buf, gone(-result, "sending the file to the other daemon")));
        }
        let n = result as usize;
        if n < len {
            self.doing = Doing::Sending {
                at: at + n,
                len: len - n,
                data,
            };
            return Ok(Some((buf, at + n, len - n)));
        }
        self.sent += data;
        self.moved = self.sent;
        self.buf = Some(buf);
        Ok(None)
    }

    /// Under TLS: the piece (header and data) is sealed into what goes
    /// out, and the buffer goes back at once; the next piece waits for the
    /// records to leave (`wants_buffer`).
    fn seal_piece(
        &mut self,
        buf: BufRef,
        at: usize,
        len: usize,
        owner: Owner,
        io: &mut Io,
        out: &mut Vec<Returned>,
    ) {
        let data = match std::mem::replace(&mut self.doing, Doing::Idle) {
            Doing::Sending { data, .. } => data,
            _ => 0,
        };
        let sealed = self.link.enqueue(buf.filled(at, len));
        out.push(Returned::Buffer(buf));
        if let Err(e) = sealed.and_then(|()| self.link.flush(owner, io)) {
            return self.failed(e);
        }
        self.sent += data;
        self.moved = self.sent;
        if self.sent == self.size {
            self.end(owner, io);
        }
    }

    fn send_data(
        &mut self,
        buf: BufRef,
        at: usize,
        len: usize,
        owner: Owner,
        io: &mut Io,
        out: &mut Vec<Returned>,
    ) {
        let io_span = BufIo {
            fd: self.ends.shared_dst(),
            buf,
            at,
            len: len as u32,
        };
        let what = BufWhat::Send {
            zc: false,
            fixed: false,
        };
        match io.buffer_op(owner, CopyStep::Out(0).tag(), io_span, what) {
            Ok(_) => self.in_flight += 1,
            Err(failed) => {
                self.doing = Doing::Idle;
                out.extend(failed.buf.map(Returned::Buffer));
                self.failed(TransferError::new(
                    FailureKind::Io,
                    format!("cannot queue a send: {}", failed.error),
                ));
            }
        }
    }

    /// Every byte is sent: `End`, then wait for `Done`.
    fn end(&mut self, owner: Owner, io: &mut Io) {
        self.phase = Phase::Ending;
        let end = PeerMessage::End {
            xfer: XFER,
            size: self.size,
            crc32c: self.crc,
        };
        if let Err(e) = self.link.say(&end, owner, io) {
            self.failed(e);
        }
    }

    /// Fails the push: the receive waiting on the other daemon is cancelled;
    /// the socket closes with the job, and the other daemon drops the part.
    pub(crate) fn fail(&mut self, err: TransferError, io: &mut Io, out: &mut Vec<Returned>) {
        self.failed(err);
        self.link.cancel(io);
        if self.doing == Doing::Idle {
            out.extend(self.buf.take().map(Returned::Buffer));
        }
    }

    fn failed(&mut self, err: TransferError) {
        if self.failure.is_none() {
            self.failure = Some(err);
        }
    }
}

/// The connection ended before the answer `phase` waited for.
fn ended_early(phase: Phase) -> TransferError {
    let what = match phase {
        Phase::Offered => "before it accepted the file",
        Phase::Body => "while the file was being sent",
        Phase::Ending | Phase::Landed => "before it said the file landed",
    };
    TransferError::new(
        FailureKind::PeerGone,
        format!("the other daemon closed the connection {what}"),
    )
}

fn gone(errno: i32, what: &str) -> TransferError {
    TransferError::os(what, errno)
}

fn protocol(why: &str) -> TransferError {
    TransferError::new(
        FailureKind::Io,
        format!("the other daemon broke the protocol: {why}"),
    )
}
