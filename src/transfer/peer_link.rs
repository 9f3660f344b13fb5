//! One job's connection to another daemon, either way (push or pull): the
//! control frames out, in buffers the send op owns and hands back; what
//! the other daemon sends, read into the link's own buffer and opened
//! under TLS; the cutting of it into messages and data (`PeerReader`).
//! The movers (peer_push.rs, peer_pull.rs) decide what is said and what
//! is done with what comes.

use std::os::fd::OwnedFd;
use std::rc::Rc;
use std::time::{Duration, Instant};

use ringxfer_ipc::proto::peer::{encode, PeerLimits, PeerMessage, PeerReader, Piece};
use ringxfer_ipc::FailureKind;

use super::step::CopyStep;
use super::{Endpoints, TransferError};
use crate::io::fd::SharedFd;
use crate::io::op::{self, SendFrom};
use crate::io::ops::Owner;
use crate::io::queue::SendSource;
use crate::io::Io;
use crate::tls::{HandedOver, Session};

/// Ciphertext one receive reads at most, under TLS.
const CIPHER_BUFFER: usize = 64 << 10;
/// Plaintext the link holds: a whole frame, or a piece of data.
const RX_BUFFER: usize = 256 << 10;

/// Bytes on their way out, and how much of them is sent.
struct Outgoing {
    bytes: Vec<u8>,
    sent: usize,
}

impl SendSource for Outgoing {
    fn unsent(&self) -> (*const u8, u32) {
        let rest = &self.bytes[self.sent.min(self.bytes.len())..];
        (rest.as_ptr(), u32::try_from(rest.len()).unwrap_or(u32::MAX))
    }
}

/// Which of the job's descriptors is the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SocketEnd {
    Source,
    Destination,
}

/// The socket a link speaks on.
enum Socket {
    /// One of the job's descriptors.
    Job(Rc<Endpoints>, SocketEnd),
    /// One the link holds itself: dialled again after the first was lost
    /// (redial.rs), or kept from an earlier job for the next one (a kept
    /// conversation, `keep`).
    Own(Rc<OwnedFd>),
}

pub(crate) struct PeerLink {
    socket: Socket,
    /// `Hello` went out on this conversation: a job continuing it says
    /// only its own request.
    greeted: bool,
    /// Sockets of its own it let go of (a redial replaced a kept one), to
    /// close off the loop thread with the rest (`into_sockets`).
    retired: Vec<OwnedFd>,
    pub(crate) limits: PeerLimits,
    /// The send's box when idle, and bytes waiting for it.
    outgoing: Option<Box<Outgoing>>,
    queued: Vec<u8>,
    /// Frames encoded, before they are queued (sealed, under TLS).
    scratch: Vec<u8>,
    /// Plaintext received (its length is its size; None while a read
    /// holds it), how much of it is in, and the read in flight.
    rx: Option<Vec<u8>>,
    rx_len: usize,
    rx_op: Option<u64>,
    reader: PeerReader,
    /// TLS: reads land in `cipher` (`cipher_len` bytes not yet opened).
    tls: Option<Box<Session>>,
    cipher: Option<Vec<u8>>,
    cipher_len: usize,
    /// Sends and receives in flight.
    pub(crate) in_flight: usize,
    /// When the other daemon last sent anything, and when a `Ping` went
    /// out since, unanswered (see `silence`).
    heard: Instant,
    pinged: Option<Instant>,
    /// A read was asked for while TLS waited to go to the kernel: it is
    /// armed once the hand-over is done.
    parked: bool,
}

/// What a job that spoke over `link` leaves: every descriptor to close
/// off the loop thread (the job's two, once the link lets go of its share,
/// and the link's own sockets) and, with `keep`, the link itself for the
/// next file, if it is quiet and can hold its socket (`PeerLink::keep`).
pub(crate) fn let_go(
    ends: Rc<Endpoints>,
    mut link: PeerLink,
    keep: bool,
) -> (Vec<OwnedFd>, Option<PeerLink>) {
    let kept = keep
        && link.quiet()
        && link
            .keep()
            .map_err(|e| tracing::warn!("cannot keep the connection to the other daemon: {e}"))
            .is_ok();
    let (mut fds, link) = match kept {
        true => (Vec::new(), Some(link)),
        false => (link.into_sockets(), None),
    };
    if let Ok(ends) = Rc::try_unwrap(ends) {
        fds.extend([ends.src, ends.dst]);
    }
    (fds, link)
}

/// A piece cut from what was received: a message, or the range of `rx`
/// holding file data at `offset`.
pub(crate) enum Got {
    Message(PeerMessage),
    Data { offset: u64, at: usize, len: usize },
}

fn tls_failure(why: String) -> TransferError {
    TransferError::new(
        FailureKind::PermissionDenied,
        format!("the other daemon: {why}"),
    )
}

fn queue_failure(what: &str, e: impl std::fmt::Display) -> TransferError {
    TransferError::new(FailureKind::Io, format!("cannot queue a {what}: {e}"))
}

impl PeerLink {
    pub(crate) fn new(ends: Rc<Endpoints>, socket: SocketEnd, tls: Option<Session>) -> PeerLink {
        let cipher = tls.as_ref().map(|_| vec![0; CIPHER_BUFFER]);
        PeerLink {
            socket: Socket::Job(ends, socket),
            greeted: false,
            retired: Vec::new(),
            limits: PeerLimits::default(),
            outgoing: Some(Box::new(Outgoing {
                bytes: Vec::with_capacity(512),
                sent: 0,
            })),
            queued: Vec::with_capacity(512),
            scratch: Vec::with_capacity(512),
            rx: Some(vec![0; RX_BUFFER]),
            rx_len: 0,
            rx_op: None,
            reader: PeerReader::default(),
            tls: tls.map(Box::new),
            cipher,
            cipher_len: 0,
            in_flight: 0,
            parked: false,
            heard: Instant::now(),
            pinged: None,
        }
    }

    /// The socket to the other daemon, for an operation.
    pub(crate) fn socket_fd(&self) -> SharedFd {
        match &self.socket {
            Socket::Own(socket) => SharedFd::owned(socket),
            Socket::Job(ends, SocketEnd::Source) => ends.shared_src(),
            Socket::Job(ends, SocketEnd::Destination) => ends.shared_dst(),
        }
    }

    /// The conversation is between requests: nothing in flight, nothing
    /// waiting to go out, nothing received and not handled.
    pub(crate) fn quiet(&self) -> bool {
        self.in_flight == 0
            && self.send_idle()
            && self.rx_len == 0
            && self.cipher_len == 0
            && !self.parked
    }

    /// While this side listens (a read armed; else the other daemon's
    /// silence is not its own): how long the other daemon has said
    /// nothing, and how long a `Ping` has gone unanswered, if one went out.
    /// The first may be long for good reasons (nothing was owed: a file
    /// being sent, the pause between two files of a kept connection); the
    /// second is the other daemon not answering.
    pub(crate) fn silence(&self, now: Instant) -> Option<(Duration, Option<Duration>)> {
        let since = |t: Instant| now.saturating_duration_since(t);
        self.rx_op
            .is_some()
            .then(|| (since(self.heard), self.pinged.map(since)))
    }

    /// Asks the other daemon whether it is still there: a `Ping`, once per
    /// silence, answered by its loop with `Pong` whatever it is doing.
    pub(crate) fn ping(&mut self, owner: Owner, io: &mut Io) -> Result<(), TransferError> {
        if self.pinged.is_some() {
            return Ok(());
        }
        self.pinged = Some(Instant::now());
        self.say(&PeerMessage::Ping, owner, io)
    }

    /// Keeps the conversation beyond its job (see `quiet`): the link holds
    /// the socket itself (a duplicate of the job's descriptor), so the job
    /// lets go of its descriptors as any job does.
    pub(crate) fn keep(&mut self) -> std::io::Result<()> {
        if let Socket::Job(..) = self.socket {
            let fd = self.socket_fd();
            let own = fd.borrow().try_clone_to_owned()?;
            self.socket = Socket::Own(Rc::new(own));
        }
        Ok(())
    }

    /// Starts over on `socket`, a new connection to the other daemon, with
    /// a new TLS session: nothing of the old one is kept. Called with
    /// nothing in flight (every buffer back).
    pub(crate) fn redial(&mut self, socket: Rc<OwnedFd>, tls: Option<Session>) {
        debug_assert_eq!(self.in_flight, 0, "a link redials with nothing in flight");
        if let Socket::Own(old) = std::mem::replace(&mut self.socket, Socket::Own(socket)) {
            self.retired.extend(Rc::try_unwrap(old).ok());
        }
        self.greeted = false;
        self.limits = PeerLimits::default();
        self.queued.clear();
        if let Some(out) = self.outgoing.as_mut() {
            out.bytes.clear();
            out.sent = 0;
        }
        self.rx_len = 0;
        self.reader = PeerReader::default();
        self.cipher_len = 0;
        self.parked = false;
        self.heard = Instant::now();
        self.pinged = None;
        if tls.is_some() && self.cipher.is_none() {
            self.cipher = Some(vec![0; CIPHER_BUFFER]);
        }
        self.tls = tls.map(Box::new);
    }

    pub(crate) fn tls(&self) -> bool {
        self.tls.is_some()
    }

    /// A read is in flight.
    pub(crate) fn reading(&self) -> bool {
        self.rx_op.is_some()
    }

    /// Nothing is waiting to go out, and no send is in flight.
    pub(crate) fn send_idle(&self) -> bool {
        self.outgoing.is_some() && self.queued.is_empty()
    }

    /// Opens the conversation: `Hello` (unless a kept conversation had
    /// it), then `first` (a `Put` or a `Get`), and listens for the answers.
    pub(crate) fn open_with(
        &mut self,
        first: &PeerMessage,
        owner: Owner,
        io: &mut Io,
    ) -> Result<(), TransferError> {
        if !self.greeted {
            let hello = PeerMessage::Hello {
                version: ringxfer_ipc::proto::peer::PEER_PROTOCOL_VERSION,
            };
            self.say(&hello, owner, io)?;
            self.greeted = true;
        }
        self.say(first, owner, io)?;
        self.listen(owner, io)
    }

    /// The sockets it holds itself, to close off the loop thread (a kept
    /// or redialled conversation's, and any it let go of).
    pub(crate) fn into_sockets(self) -> Vec<OwnedFd> {
        let mut fds = self.retired;
        if let Socket::Own(socket) = self.socket {
            fds.extend(Rc::try_unwrap(socket).ok());
        }
        fds
    }

    /// Queues a message, and sends what is queued unless a send is in
    /// flight.
    pub(crate) fn say(
        &mut self,
        message: &PeerMessage,
        owner: Owner,
        io: &mut Io,
    ) -> Result<(), TransferError> {
        self.scratch.clear();
        encode(message, &mut self.scratch, self.limits.max_frame).map_err(|e| {
            TransferError::new(
                FailureKind::InvalidRequest,
                format!("cannot encode a message to the other daemon: {e}"),
            )
        })?;
        let frame = std::mem::take(&mut self.scratch);
        let queued = self.enqueue(&frame);
        self.scratch = frame;
        queued?;
        self.flush(owner, io)
    }

    /// Adds bytes to what goes out: sealed into records under TLS.
    pub(crate) fn enqueue(&mut self, plain: &[u8]) -> Result<(), TransferError> {
        match self.tls.as_mut() {
            Some(tls) => tls
                .send(plain)
                .and_then(|()| tls.pending(&mut self.queued))
                .map_err(tls_failure),
            None => {
                self.queued.extend_from_slice(plain);
                Ok(())
            }
        }
    }

    /// Sends what is queued (and what TLS made on its own: the
    /// handshake's), unless a send is in flight.
    pub(crate) fn flush(&mut self, owner: Owner, io: &mut Io) -> Result<(), TransferError> {
        if let Some(tls) = self.tls.as_mut() {
            tls.pending(&mut self.queued).map_err(tls_failure)?;
        }
        if self.queued.is_empty() {
            return Ok(());
        }
        let Some(mut out) = self.outgoing.take() else {
            return Ok(());
        };
        out.bytes.clear();
        out.sent = 0;
        std::mem::swap(&mut out.bytes, &mut self.queued);
        self.send(out, owner, io)
    }

    fn send(&mut self, out: Box<Outgoing>, owner: Owner, io: &mut Io) -> Result<(), TransferError> {
        let send = op::Send::new(self.socket_fd(), SendFrom::Bytes(out), 0);
        io.queue_op(owner, CopyStep::PeerSend.tag(), send)
            .map_err(|e| queue_failure("send", e))?;
        self.in_flight += 1;
        Ok(())
    }

    /// A send completed: the rest goes again, or what queued meanwhile.
    pub(crate) fn on_sent(
        &mut self,
        send: op::Send,
        result: i32,
        owner: Owner,
        io: &mut Io,
    ) -> Result<(), TransferError> {
        self.in_flight -= 1;
        let Some(bytes) = send.into_bytes() else {
            return Ok(());
        };
        let any: Box<dyn std::any::Any> = bytes;
        let Ok(mut out) = any.downcast::<Outgoing>() else {
            return Ok(());
        };
        if result < 0 {
            self.outgoing = Some(out);
            return Err(TransferError::os("sending to the other daemon", -result));
        }
        out.sent += result as usize;
        if out.sent < out.bytes.len() {
            return self.send(out, owner, io);
        }
        self.outgoing = Some(out);
        self.flush(owner, io)?;
        if self.parked {
            self.listen(owner, io)?;
        }
        Ok(())
    }

    /// Reads more from the other daemon, unless a read is in flight.
    pub(crate) fn listen(&mut self, owner: Owner, io: &mut Io) -> Result<(), TransferError> {
        if self.rx_op.is_some() {
            return Ok(());
        }
        if !self.hand_over_when_idle()? {
            self.parked = true;
            return Ok(());
        }
        self.parked = false;
        let read = if let Some(tls) = self.tls.as_ref() {
            let limit = tls.read_limit();
            let Some(buf) = self.cipher.take() else {
                return Ok(());
            };
            op::ReadInto::new(self.socket_fd(), buf, self.cipher_len, None).at_most(limit)
        } else {
            let Some(rx) = self.rx.take() else {
                return Ok(());
            };
            op::ReadInto::new(self.socket_fd(), rx, self.rx_len, None)
        };
        let ud = io
            .queue_op(owner, CopyStep::PeerRecv.tag(), read)
            .map_err(|e| queue_failure("receive", e))?;
        self.rx_op = Some(ud);
        self.in_flight += 1;
        Ok(())
    }

    /// Hands TLS to the kernel once it wants it (Session::wants_kernel)
    /// and nothing is in flight or waiting on the socket: true when reads
    /// may go on (done, or nothing to do), false while it must wait.
    fn hand_over_when_idle(&mut self) -> Result<bool, TransferError> {
        if !self.tls.as_ref().is_some_and(|t| t.wants_kernel()) {
            return Ok(true);
        }
        if self.cipher_len > 0 {
            // Reads stop at the handshake's last record, so this cannot
            // be; were it so, waiting would never end.
            return Err(tls_failure(
                "TLS: records after the handshake were read before the kernel took over".into(),
            ));
        }
        if self.in_flight > 0 || !self.send_idle() {
            return Ok(false);
        }
        let Some(tls) = self.tls.take() else {
            return Ok(true);
        };
        let socket = self.socket_fd();
        match tls.hand_over(socket.borrow()).map_err(tls_failure)? {
            HandedOver::Kernel { suite } => {
                self.cipher = None;
                tracing::info!(suite = %suite, "TLS to the other daemon handed to the kernel");
            }
            HandedOver::Rehearsed(tls) => {
                self.tls = Some(tls);
                tracing::info!("TLS hand-over to the other daemon rehearsed (no kernel TLS here)");
            }
        }
        Ok(true)
    }

    /// A read completed: false when the other daemon closed the connection.
    pub(crate) fn on_read(
        &mut self,
        read: op::ReadInto,
        result: i32,
    ) -> Result<bool, TransferError> {
        self.in_flight -= 1;
        self.rx_op = None;
        if self.tls.is_some() {
            self.cipher = Some(read.buf);
        } else {
            self.rx = Some(read.buf);
        }
        if result > 0 {
            self.heard = Instant::now();
            self.pinged = None;
        }
        match result {
            0 => Ok(false),
            n if n < 0 => Err(TransferError::os("receiving from the other daemon", -n)),
            n if self.tls.is_some() => {
                self.cipher_len += n as usize;
                Ok(true)
            }
            n => {
                self.rx_len += n as usize;
                Ok(true)
            }
        }
    }

    /// Opens the ciphertext received into `rx`, as much as fits; false when
    /// none could be used (or there is no TLS).
    pub(crate) fn open(&mut self) -> Result<bool, TransferError> {
        let (Some(tls), Some(cipher), Some(rx)) =
            (self.tls.as_mut(), self.cipher.as_mut(), self.rx.as_mut())
        else {
            return Ok(false);
        };
        let rx_len = &mut self.rx_len;
        let used = tls
            .receive(&cipher[..self.cipher_len], &mut |plain| {
                let n = plain.len().min(rx.len() - *rx_len);
                rx[*rx_len..*rx_len + n].copy_from_slice(&plain[..n]);
                *rx_len += n;
                n
            })
            .map_err(tls_failure)?;
        cipher.copy_within(used..self.cipher_len, 0);
        self.cipher_len -= used;
        Ok(used > 0 && self.cipher_len > 0)
    }

    /// The next piece of what was received from `*at` on (which moves
    /// past it), or None until more comes.
    pub(crate) fn next(&mut self, at: &mut usize) -> Result<Option<Got>, TransferError> {
        let Some(rx) = self.rx.as_ref() else {
            return Ok(None);
        };
        let cut = self.reader.next(&rx[*at..self.rx_len], &self.limits);
        let (piece, used) = match cut {
            Ok(Some(found)) => found,
            Ok(None) => return Ok(None),
            Err(e) => {
                let why = format!("the other daemon broke the protocol: {e}");
                return Err(TransferError::new(FailureKind::Io, why));
            }
        };
        let got = match piece {
            Piece::Message(m) => Got::Message(m),
            Piece::Data { offset, bytes, .. } => Got::Data {
                offset,
                at: *at + used - bytes.len(),
                len: bytes.len(),
            },
        };
        *at += used;
        Ok(Some(got))
    }

    /// File data cut by `next`.
    pub(crate) fn data(&self, at: usize, len: usize) -> &[u8] {
        self.rx.as_ref().map_or(&[][..], |rx| &rx[at..at + len])
    }

    /// Drops what was handled (up to `at`), keeping a partial frame.
    pub(crate) fn consumed(&mut self, at: usize) {
        if let Some(rx) = self.rx.as_mut() {
            rx.copy_within(at..self.rx_len, 0);
        }
        self.rx_len -= at;
    }

    /// Room for plaintext a read may bring.
    pub(crate) fn rx_room(&self) -> usize {
        RX_BUFFER - self.rx_len
    }

    /// Cancels the read waiting on the other daemon.
    pub(crate) fn cancel(&mut self, io: &mut Io) {
        if let Some(ud) = self.rx_op {
            let _ = io.cancel(ud);
        }
    }
}
