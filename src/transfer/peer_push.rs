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
//! Resumed (`Put { resume: true }`), the other daemon first sends the
//! CRC-32Cs of the blocks of the part it kept, then `Ready` at their end;
//! the file's own blocks are read through the same buffer and compared,
//! and the push answers `Ready` at the end of the longest prefix that
//! matches, with the data from there (resume.rs of the receiving side).
//!
//! The control frames travel in buffers the operations own and hand back
//! (`op::Send` of an `Outgoing`, `op::ReadInto`), as a connection's do.

use std::os::fd::OwnedFd;
use std::rc::Rc;
use std::time::{Duration, Instant};

use ringxfer_ipc::proto::peer::{
    encode, Checksum, FileMeta, PeerMessage, Put, RemotePath, Stripe, StripeId,
    PEER_PROTOCOL_VERSION,
};
use ringxfer_ipc::{FailureKind, Strategy};
use tracing::{info, warn};

use super::block_sums::Received;
use super::peer_link::{self, Got, PeerLink, SocketEnd};
use super::peer_socket::tune_peer_socket;
use super::pipeline::Returned;
use super::redial::{self, Redial};
use super::step::CopyStep;
use super::{Endpoints, FdKind, Shape, TransferError};
use crate::io::buffer_pool::BufRef;
use crate::io::fd::SharedFd;
use crate::io::op::{self, AnyOp};
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
    /// Resuming: the file's blocks are compared with the part's sums.
    Checking,
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

/// The other daemon's sums of the part it kept, and how far the file's
/// own blocks have been read and compared.
#[derive(Default)]
struct Resume {
    got: Received,
    /// Bytes the sums cover (the other daemon's `Ready`).
    upto: u64,
    /// Bytes of the file read for the comparison; the CRC-32C of the
    /// block being read.
    checked: u64,
    block_crc: u32,
}

/// Blocks compared between two `Ping`s, which tell the other daemon that
/// this one is still there while it reads.
const PING_EVERY: u64 = 256;

pub(crate) struct PeerPush {
    ends: Rc<Endpoints>,
    shape: Shape,
    size: u64,
    path: RemotePath,
    meta: FileMeta,
    fsync: bool,
    mkdir: bool,
    /// One stripe of the file among several pushed at once: `size` is
    /// the stripe's, `meta.size` the file's.
    stripe: Option<Stripe>,
    /// Resuming: the part's block sums, and the comparison's progress.
    resume: Option<Resume>,
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
    /// Resumed: where the data sent started.
    resumed_from: Option<u64>,
    /// Cancelled: `Cancel` goes out once no piece is in flight, so that
    /// the other daemon drops its part rather than keep it for a resume;
    /// unless a piece went out short (`torn`), which leaves the stream
    /// mid-frame.
    cancel_owed: bool,
    torn: bool,
    /// A detached push dials the other daemon again when its connection
    /// is lost (redial.rs); the loss, while it does.
    redial: Option<Redial>,
    lost: Option<TransferError>,
    pub(crate) moved: u64,
    failure: Option<TransferError>,
}

impl PeerPush {
    /// Pushes `shape.total` bytes of `ends.src` (from `shape.src_start`) to
    /// `path` through the socket `ends.dst`; with `stripe`, as that stripe
    /// of the file (`meta.size` bytes), landing at the same offsets.
    pub(crate) fn new(
        ends: Rc<Endpoints>,
        shape: Shape,
        (path, mkdir, resume, stripe): (RemotePath, bool, bool, Option<StripeId>),
        meta: FileMeta,
        fsync: bool,
        (tls, redial): (Option<Session>, Option<Redial>),
        kept: Option<PeerLink>,
    ) -> PeerPush {
        let size = shape.total.unwrap_or(0);
        let stripe = stripe.map(|id| Stripe {
            id,
            offset: shape.src_start,
            len: size,
        });
        let file_size = if stripe.is_some() { meta.size } else { size };
        let link =
            kept.unwrap_or_else(|| PeerLink::new(Rc::clone(&ends), SocketEnd::Destination, tls));
        PeerPush {
            ends,
            shape,
            size,
            path,
            meta: FileMeta {
                size: file_size,
                ..meta
            },
            fsync,
            mkdir,
            stripe,
            resume: (resume && stripe.is_none()).then(Resume::default),
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
            resumed_from: None,
            cancel_owed: false,
            torn: false,
            redial,
            lost: None,
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

    /// Every descriptor it holds, to close off the loop thread.
    pub(crate) fn into_descriptors(self) -> Vec<OwnedFd> {
        let PeerPush { ends, link, .. } = self;
        peer_link::let_go(ends, link, false).0
    }

    /// The descriptors to close, and the conversation, kept for the next
    /// file if the file landed (and the link can be kept: `let_go`).
    pub(crate) fn into_kept(self) -> (Vec<OwnedFd>, Option<PeerLink>) {
        let landed = self.phase == Phase::Landed && self.failure.is_none();
        let PeerPush { ends, link, .. } = self;
        peer_link::let_go(ends, link, landed)
    }

    pub(crate) fn failure(&self) -> Option<&TransferError> {
        self.failure.as_ref()
    }

    /// While the push waits for the other daemon's answer (to `Put`, or to
    /// `End`): its silence, and how long a `Ping` went unanswered
    /// (`PeerLink::silence`); None when not waiting on it.
    pub(crate) fn peer_silence(&self, now: Instant) -> Option<(Duration, Option<Duration>)> {
        let waiting = matches!(self.phase, Phase::Offered | Phase::Ending);
        (waiting && !self.stopped())
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

    /// The other daemon stayed silent, even to a `Ping`: the connection is
    /// lost, as if cut (a detached push dials again).
    pub(crate) fn peer_silent(&mut self, err: TransferError, owner: Owner, io: &mut Io) {
        self.failed(err);
        self.link.cancel(io);
        self.redial_when_idle(owner, io);
    }

    /// Nothing more moves: failed, or lost and waiting to dial again.
    fn stopped(&self) -> bool {
        self.failure.is_some() || self.lost.is_some()
    }

    /// How many times the other daemon was dialled again, if it was.
    pub(crate) fn redials(&self) -> Option<u32> {
        self.redial.as_ref().map(|r| r.dials).filter(|&n| n > 0)
    }

    pub(crate) fn is_finished(&self) -> bool {
        self.in_flight == 0
            && self.link.in_flight == 0
            && (self.phase == Phase::Landed || self.failure.is_some())
    }

    pub(crate) fn set_piece_limit(&mut self, bytes: u64) {
        self.piece_limit = bytes.max(1);
    }

    /// Resumed: the bytes of the other daemon's part kept (the data sent
    /// started there).
    pub(crate) fn resumed_from(&self) -> Option<u64> {
        self.resumed_from
    }

    /// The CRC-32C of what was sent and of what landed, once it landed.
    pub(crate) fn checksums(&self) -> Option<(u32, u32)> {
        self.landed_crc.map(|landed| (self.crc, landed))
    }

    pub(crate) fn wants_buffer(&self) -> bool {
        // Under TLS the next piece waits until the last one's records are
        // out: what is sealed and unsent stays at most a piece.
        let flushed = !self.link.tls() || self.link.send_idle();
        let reads = match self.phase {
            Phase::Body => self.sent < self.size,
            Phase::Checking => true,
            _ => false,
        };
        reads && !self.stopped() && self.buf.is_none() && self.doing == Doing::Idle && flushed
    }

    /// Says `Hello` and offers the file, and listens for the answers.
    pub(crate) fn start(&mut self, owner: Owner, io: &mut Io) {
        let put = Put {
            xfer: XFER,
            path: self.path.clone(),
            meta: self.meta,
            checksum: Checksum::Crc32c,
            resume: self.resume.is_some(),
            fsync: self.fsync,
            mkdir: self.mkdir,
            stripe: self.stripe,
            directory: self.ends.src_kind == FdKind::Directory,
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
            (Some(CopyStep::Redial), _) => self.dial(result, owner, io),
            (Some(CopyStep::Connect), poll) => {
                // The poll's share of the socket goes first.
                drop(poll);
                self.on_dialled(result, owner, io)
            }
            _ => Ok(()),
        };
        if let Err(e) = handled {
            self.failed(e);
        }
        if self.stopped() {
            self.link.cancel(io);
        }
        self.redial_when_idle(owner, io);
    }

    /// Lost, with nothing in flight any more: wait, then dial again.
    fn redial_when_idle(&mut self, owner: Owner, io: &mut Io) {
        let idle = self.in_flight == 0 && self.link.in_flight == 0;
        let Some(r) = self.redial.as_mut() else {
            return;
        };
        let Some(lost) = self.lost.as_ref() else {
            return;
        };
        if !idle || r.op.is_some() || r.connecting.is_some() {
            return;
        }
        let wait = r.wait();
        warn!(to = %r.address, "a detached push to another daemon lost its connection ({lost}); dialling again in {wait:?}");
        match io.queue_op(owner, CopyStep::Redial.tag(), op::Timeout::new(wait)) {
            Ok(ud) => r.op = Some(ud),
            Err(e) => self.give_up(&format!("cannot queue a timeout: {e}")),
        }
    }

    /// The wait is over: a non-blocking connect, then a poll for its end.
    fn dial(&mut self, result: i32, owner: Owner, io: &mut Io) -> Result<(), TransferError> {
        let cancelled = result == -libc::ECANCELED || self.failure.is_some();
        let Some(r) = self.redial.as_mut() else {
            return Ok(());
        };
        r.op = None;
        if cancelled {
            return Ok(());
        }
        r.dials += 1;
        let socket = match redial::start_connect(r.address) {
            Ok(socket) => Rc::new(socket),
            Err(e) => return self.dial_failed(e.raw_os_error().unwrap_or(libc::EIO)),
        };
        let poll = op::Poll::new(SharedFd::owned(&socket), libc::POLLOUT);
        let ud = io
            .queue_op(owner, CopyStep::Connect.tag(), poll)
            .map_err(|e| {
                TransferError::new(FailureKind::Io, format!("cannot queue a poll: {e}"))
            })?;
        r.op = Some(ud);
        r.connecting = Some(socket);
        Ok(())
    }

    /// The connect ended: on a connection, the push starts over and
    /// resumes from the part the other daemon kept.
    fn on_dialled(&mut self, result: i32, owner: Owner, io: &mut Io) -> Result<(), TransferError> {
        let Some(r) = self.redial.as_mut() else {
            return Ok(());
        };
        r.op = None;
        let Some(socket) = r.connecting.take() else {
            return Ok(());
        };
        if self.failure.is_some() {
            return Ok(());
        }
        if result < 0 {
            return self.dial_failed(-result);
        }
        let Ok(socket) = Rc::try_unwrap(socket) else {
            return self.dial_failed(libc::EBUSY);
        };
        if let Err(errno) = redial::finish_connect(&socket) {
            return self.dial_failed(errno);
        }
        tune_peer_socket(std::os::fd::AsFd::as_fd(&socket), r.timeout);
        let tls = match r.tls.as_ref().map(|setup| setup.connect()).transpose() {
            Ok(tls) => tls,
            Err(e) => return Err(TransferError::new(FailureKind::Io, e)),
        };
        info!(to = %r.address, dial = r.dials, "a detached push dialled the other daemon again: resuming");
        self.link.redial(Rc::new(socket), tls);
        self.lost = None;
        self.phase = Phase::Offered;
        // A stripe or a directory starts over: neither resumes.
        let resumable = self.stripe.is_none() && self.ends.src_kind != FdKind::Directory;
        self.resume = resumable.then(Resume::default);
        self.sent = 0;
        self.crc = 0;
        self.torn = false;
        self.start(owner, io);
        Ok(())
    }

    /// A dial failed: another after a longer wait, or the push fails with
    /// what lost it, once the dials are spent.
    fn dial_failed(&mut self, errno: i32) -> Result<(), TransferError> {
        let Some(r) = self.redial.as_ref() else {
            return Ok(());
        };
        let err = TransferError::os(
            format!("dialling the other daemon again at {}", r.address),
            errno,
        );
        if r.may_retry(&err) {
            self.lost = Some(err);
            return Ok(());
        }
        let dials = r.dials;
        self.give_up(&format!("{err}; {dials} dials failed"));
        Ok(())
    }

    /// The lost connection fails the push after all.
    fn give_up(&mut self, why: &str) {
        let lost = self.lost.take();
        let kind = lost.as_ref().map_or(FailureKind::PeerGone, |e| e.kind);
        let message = match lost {
            Some(e) => format!("{}; {why}", e.message),
            None => why.to_string(),
        };
        self.failure = Some(TransferError::new(kind, message));
    }

    /// Bytes from the other daemon: opened (under TLS), then every whole
    /// message is handled; the link listens on until `Done`.
    fn received(&mut self, owner: Owner, io: &mut Io) -> Result<(), TransferError> {
        if self.stopped() {
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
                if self.stopped() {
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
                Phase::Offered,
                PeerMessage::Sums {
                    block, first, crcs, ..
                },
            ) => {
                if let Err(e) = self.take_sums(block, first, &crcs) {
                    self.failed(e);
                }
            }
            (Phase::Offered, PeerMessage::Ready { offset, .. }) => self.start_check(offset),
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

    /// Block sums of the part the other daemon kept.
    fn take_sums(&mut self, block: u32, first: u64, crcs: &[u32]) -> Result<(), TransferError> {
        let size = self.size;
        let Some(resume) = self.resume.as_mut() else {
            return Err(protocol("Sums for a push that did not ask to resume"));
        };
        if !resume.got.take(block, first, crcs, size) {
            return Err(protocol("Sums that do not fit the file"));
        }
        Ok(())
    }

    /// The other daemon's sums cover `upto` bytes: compare the file's own.
    fn start_check(&mut self, upto: u64) {
        let Some(resume) = self.resume.as_mut() else {
            return self.failed(protocol("Ready past offset 0 for a push not resumed"));
        };
        if upto != resume.got.covered() {
            return self.failed(protocol("Ready where the sums do not end"));
        }
        resume.upto = upto;
        self.phase = Phase::Checking;
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
        let (from, want) = match (self.phase, self.resume.as_ref()) {
            // A comparison reads no further than the end of its block.
            (Phase::Checking, Some(r)) => (r.checked, r.got.block - r.checked % r.got.block),
            _ => (
                self.sent,
                (self.size - self.sent).min(u64::from(self.link.limits.max_data)),
            ),
        };
        let want = want.min(room).min(self.piece_limit);
        let at = self.shape.src_start + from;
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
        if self.stopped() {
            if let Doing::Sending { len, .. } = doing {
                self.torn |= usize::try_from(result).map_or(true, |n| n < len);
            }
            out.push(Returned::Buffer(buf));
            self.say_cancel(owner, io);
            return self.redial_when_idle(owner, io);
        }
        let next = match (CopyStep::from_tag(tag), doing) {
            (Some(CopyStep::In(_)), Doing::Reading) if self.phase == Phase::Checking => {
                self.after_check(buf, result, owner, io)
            }
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
        if self.stopped() {
            self.link.cancel(io);
        }
        self.redial_when_idle(owner, io);
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
        // A stripe's bytes land at the file's offsets.
        let base = self.stripe.map_or(0, |s| s.offset);
        let data = PeerMessage::Data {
            xfer: XFER,
            offset: base + self.sent,
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

    /// A piece of the file read for the comparison: its block's sum, once
    /// whole, must be the other daemon's.
    fn after_check(&mut self, buf: BufRef, result: i32, owner: Owner, io: &mut Io) -> Next {
        let Some(r) = self.resume.as_mut() else {
            return Err((buf, protocol("a comparison without sums")));
        };
        let at = self.shape.src_start + r.checked;
        if result <= 0 {
            let e = match result {
                0 => TransferError::short_source(
                    at,
                    self.shape.src_start,
                    self.size,
                    self.shape.length_requested,
                ),
                _ => TransferError::os(format!("read of the source file at offset {at}"), -result),
            };
            return Err((buf, e));
        }
        r.block_crc = crc32c::crc32c_append(r.block_crc, buf.filled(HEADER_ROOM, result as usize));
        r.checked += result as u64;
        self.buf = Some(buf);
        if !r.checked.is_multiple_of(r.got.block) {
            return Ok(None);
        }
        let index = r.checked / r.got.block - 1;
        let same = r.got.sums.get(index as usize) == Some(&r.block_crc);
        let (block, block_crc, checked, upto) = (r.got.block, r.block_crc, r.checked, r.upto);
        r.block_crc = 0;
        if !same {
            self.agree(index * block, owner, io);
        } else {
            self.crc = crc32c::crc32c_combine(self.crc, block_crc, block as usize);
            if checked == upto {
                self.agree(upto, owner, io);
            } else if (index + 1) % PING_EVERY == 0 {
                if let Err(e) = self.link.say(&PeerMessage::Ping, owner, io) {
                    self.failed(e);
                }
            }
        }
        Ok(None)
    }

    /// The comparison ended: the data goes from `offset`, the end of the
    /// blocks found the same.
    fn agree(&mut self, offset: u64, owner: Owner, io: &mut Io) {
        self.resume = None;
        self.resumed_from = Some(offset);
        self.phase = Phase::Body;
        self.sent = offset;
        self.moved = offset;
        let ready = PeerMessage::Ready {
            xfer: XFER,
            offset,
            meta: None,
        };
        if let Err(e) = self.link.say(&ready, owner, io) {
            self.failed(e);
        }
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
            fd: self.link.socket_fd(),
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
    /// the socket closes with the job. A cancelled push tells the other
    /// daemon, which drops the part; one cut off otherwise leaves it there
    /// for a resume.
    pub(crate) fn fail(
        &mut self,
        err: TransferError,
        owner: Owner,
        io: &mut Io,
        out: &mut Vec<Returned>,
    ) {
        let live = !self.stopped() && self.phase != Phase::Landed;
        self.cancel_owed = live && err.kind == FailureKind::Cancelled;
        // Failed from outside (a cancel): no more dials.
        if let Some(r) = self.redial.take() {
            if let Some(ud) = r.op {
                let _ = io.cancel(ud);
            }
        }
        self.lost = None;
        self.failed(err);
        self.link.cancel(io);
        if self.doing == Doing::Idle {
            out.extend(self.buf.take().map(Returned::Buffer));
        }
        self.say_cancel(owner, io);
    }

    /// `Cancel`, once owed and no piece is in flight.
    fn say_cancel(&mut self, owner: Owner, io: &mut Io) {
        if !self.cancel_owed || self.in_flight > 0 {
            return;
        }
        self.cancel_owed = false;
        if !self.torn {
            let _ = self
                .link
                .say(&PeerMessage::Cancel { xfer: XFER }, owner, io);
        }
    }

    fn failed(&mut self, err: TransferError) {
        if self.stopped() {
            return;
        }
        let retry =
            self.phase != Phase::Landed && self.redial.as_ref().is_some_and(|r| r.may_retry(&err));
        if retry {
            self.lost = Some(err);
        } else {
            self.failure = Some(err);
        }
    }
}

/// The connection ended before the answer `phase` waited for.
fn ended_early(phase: Phase) -> TransferError {
    let what = match phase {
        Phase::Offered | Phase::Checking => "before it accepted the file",
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
