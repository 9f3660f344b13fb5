//! The wire of one connection, as a state machine with no ring in it:
//! received bytes and descriptors go in, requests with the descriptors that
//! came inside their frames come out, or the protocol error that ends the
//! connection; events go in as bytes to send, and send completions say what
//! is left. The engine only moves the buffers to and from the kernel
//! (engine/sessions.rs) and acts on the requests.

use std::collections::VecDeque;
use std::os::fd::OwnedFd;
use std::time::Instant;

use ringxfer_ipc::codec::{self, CodecError};
use ringxfer_ipc::{
    Event, ProtocolErrorKind, Request, SubmitRequest, FRAME_HEADER_LEN, PROTOCOL_VERSION,
    PUBLISH_DESCRIPTORS, SUBMIT_DESCRIPTORS,
};

use super::frames::{next_frame, FrameError};
use super::session::{RecvBuf, SendBuf, MAX_FDS_PER_MESSAGE};
use crate::io::errno;

/// What a session's event buffers start with, and the most an idle session
/// keeps of what a large event grew them to.
const EVENT_CAPACITY: usize = 4 * 1024;
const KEEP_EVENT_CAPACITY: usize = 64 * 1024;

/// A client that lets this many bytes of events pile up is not reading them;
/// progress events are skipped past a quarter of it, and past all of it the
/// connection is closed.
pub(crate) const MAX_PENDING_EVENTS: usize = 8 << 20;

/// Unread events below this are never held against a client.
const EVENT_SHARE_FLOOR: usize = 64 << 10;

/// What a receive completion means for the connection.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Receipt {
    /// Bytes arrived: take the requests with [`Wire::next_incoming`], then
    /// call [`Wire::finish_frames`].
    Bytes,
    /// Interrupted, or nothing to read: receive again.
    Again,
    /// The client shut down its sending side between frames.
    Eof,
    /// The receive failed with this errno.
    Failed(i32),
    /// The client broke the protocol; the connection ends.
    Broken(FrameError),
}

/// A frame taken off the wire.
#[derive(Debug)]
pub(crate) enum Incoming {
    /// `Hello` with this daemon's version: answer `Welcome`.
    Hello,
    /// A request after `Hello`, with the descriptors its frame carried.
    Request(Request, Vec<OwnedFd>),
}

/// What a send completion means.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Sent {
    /// The bytes went (maybe some of them); whatever is left, or came
    /// meanwhile, is ready for the next send.
    Done,
    /// Interrupted, or the socket was full: the bytes are back in front,
    /// send again.
    Again,
    /// The client is gone (or not reading while the session closes): what
    /// was left cannot be delivered and was dropped.
    Failed(i32),
}

/// One connection's protocol state and buffers.
pub(crate) struct Wire {
    max_frame: u32,
    /// Receive buffer, or `None` while a receive holds it.
    recv: Option<Box<RecvBuf>>,
    /// Bytes of the receive buffer taken as frames since the last receive.
    used: usize,
    /// Send buffer, or `None` while a send holds it.
    send: Option<Box<SendBuf>>,
    /// Events encoded while a send was in flight, or held back.
    pending: Vec<u8>,
    /// Bytes of events in the send in flight (counted against the daemon's
    /// event memory with `pending`).
    sending: usize,
    /// Descriptors received and not yet claimed by a frame, each with the
    /// stream position at which its receive ended (see [`claim_fds`]).
    fds: VecDeque<(u64, OwnedFd)>,
    /// Bytes received on this connection so far.
    received: u64,
    /// Whether `Hello` has been accepted.
    greeted: bool,
    /// Since when the receive buffer has held part of a frame.
    partial_since: Option<Instant>,
}

impl Wire {
    /// A connection whose requests may be at most `max_frame` bytes.
    pub(crate) fn new(max_frame: u32, recv_capacity: usize) -> Wire {
        Wire {
            max_frame,
            recv: Some(RecvBuf::new(recv_capacity)),
            used: 0,
            send: Some(SendBuf::new(EVENT_CAPACITY)),
            pending: Vec::with_capacity(EVENT_CAPACITY),
            sending: 0,
            fds: VecDeque::with_capacity(MAX_FDS_PER_MESSAGE * 2),
            received: 0,
            greeted: false,
            partial_since: None,
        }
    }

    /// Whether `Hello` has been accepted.
    pub(crate) fn greeted(&self) -> bool {
        self.greeted
    }

    /// Since when part of a frame has waited for the rest.
    pub(crate) fn partial_since(&self) -> Option<Instant> {
        self.partial_since
    }

    // ---- receiving -------------------------------------------------------------

    /// The receive buffer for the next receive; `None` while one is in flight.
    pub(crate) fn take_recv(&mut self) -> Option<Box<RecvBuf>> {
        self.recv.take()
    }

    /// The receive could not be queued: the buffer went with it, so a new
    /// empty one keeps the wire whole while the session closes.
    pub(crate) fn recv_not_queued(&mut self) {
        self.recv = Some(RecvBuf::new(0));
    }

    /// A receive came back (`result`: bytes, 0 at end of stream, or
    /// -errno) with its buffer.
    pub(crate) fn on_recv(&mut self, result: i32, mut buf: Box<RecvBuf>) -> Receipt {
        if result < 0 {
            self.recv = Some(buf);
            return match -result {
                e if errno::interrupted(e) || e == libc::EAGAIN => Receipt::Again,
                e => Receipt::Failed(e),
            };
        }
        if result == 0 {
            let partial = buf.data.len();
            self.recv = Some(buf);
            if partial > 0 {
                return Receipt::Broken(FrameError {
                    kind: ProtocolErrorKind::Truncated,
                    message: format!(
                        "the connection ended in the middle of a frame ({partial} bytes received)"
                    ),
                });
            }
            return Receipt::Eof;
        }
        self.received += result as u64;
        let received = buf.received(result as usize, self.received, &mut self.fds);
        self.recv = Some(buf);
        if received.truncated {
            let message = if received.fds < MAX_FDS_PER_MESSAGE {
                // The kernel drops descriptors it cannot install (EMFILE) and
                // says so the same way as for too many.
                "descriptors sent with a message were lost: the daemon is at its open-file limit"
                    .to_string()
            } else {
                format!("a message carried more than {MAX_FDS_PER_MESSAGE} descriptors")
            };
            let kind = ProtocolErrorKind::TooManyDescriptors;
            return Receipt::Broken(FrameError { kind, message });
        }
        Receipt::Bytes
    }

    /// A receive came back after the session began closing: descriptors it
    /// brought go to `doomed`, and its bytes are not looked at.
    pub(crate) fn on_recv_closing(
        &mut self,
        result: i32,
        mut buf: Box<RecvBuf>,
        doomed: &mut Vec<OwnedFd>,
    ) {
        if result > 0 {
            let mut stray = VecDeque::new();
            buf.received(result as usize, 0, &mut stray);
            doomed.extend(stray.into_iter().map(|(_, fd)| fd));
        }
        self.recv = Some(buf);
    }

    /// The next complete frame received, with the descriptors that came
    /// inside it; `None` when the rest of a frame is still to come. An error
    /// ends the connection; descriptors that cannot be handed on go to
    /// `doomed`.
    pub(crate) fn next_incoming(
        &mut self,
        doomed: &mut Vec<OwnedFd>,
    ) -> Option<Result<Incoming, FrameError>> {
        let buf = self.recv.as_ref()?;
        let (req, n) = match next_frame(&buf.data[self.used..], self.max_frame) {
            Ok(Some(frame)) => frame,
            Ok(None) => return None,
            Err(e) => return Some(Err(e)),
        };
        let start = self.received - buf.data.len() as u64 + self.used as u64;
        self.used += n;
        let fds = match claim_fds(&mut self.fds, &req, start, start + n as u64, doomed) {
            Ok(fds) => fds,
            Err(e) => return Some(Err(e)),
        };
        // A request refused here carries its descriptors only to close them.
        Some(self.greet(req, fds).map_err(|(e, fds)| {
            doomed.extend(fds);
            e
        }))
    }

    /// Checks `Hello` and that it came first.
    fn greet(
        &mut self,
        req: Request,
        fds: Vec<OwnedFd>,
    ) -> Result<Incoming, (FrameError, Vec<OwnedFd>)> {
        let unexpected = |message: String| FrameError {
            kind: ProtocolErrorKind::UnexpectedRequest,
            message,
        };
        match req {
            Request::Hello { .. } if self.greeted => Err((
                unexpected("a second Hello on the same connection".into()),
                fds,
            )),
            Request::Hello { version } if version != PROTOCOL_VERSION => {
                let message = format!(
                    "the client speaks protocol version {version}; this daemon speaks version {PROTOCOL_VERSION}"
                );
                Err((
                    FrameError {
                        kind: ProtocolErrorKind::BadVersion,
                        message,
                    },
                    fds,
                ))
            }
            Request::Hello { .. } => {
                self.greeted = true;
                Ok(Incoming::Hello)
            }
            _ if !self.greeted => Err((
                unexpected(format!(
                    "{} before Hello: the first frame must be Hello",
                    request_name(&req)
                )),
                fds,
            )),
            req => Ok(Incoming::Request(req, fds)),
        }
    }

    /// Ends a receive's frames: drops the bytes taken, notes a frame left
    /// half-received, sizes the buffer for the next receive and, if the
    /// frames were handled without error (`outcome`), checks that no
    /// descriptor arrived that no frame can claim.
    pub(crate) fn finish_frames(
        &mut self,
        outcome: Result<(), FrameError>,
        doomed: &mut Vec<OwnedFd>,
    ) -> Result<(), FrameError> {
        let Some(buf) = self.recv.as_mut() else {
            return outcome;
        };
        buf.consume(std::mem::take(&mut self.used));
        let partial = !buf.data.is_empty();
        // What is left after the complete frames is part of one.
        self.partial_since = match partial {
            true => self.partial_since.or(Some(Instant::now())),
            false => None,
        };
        buf.fit(self.max_frame as usize + FRAME_HEADER_LEN);
        outcome?;
        // Only the frame still arriving can own descriptors now: two per
        // job, so an even number (or the three of one Submit that
        // publishes), and no more than one message holds.
        let n = self.fds.len();
        if (!partial && n > 0)
            || (!n.is_multiple_of(SUBMIT_DESCRIPTORS) && n != PUBLISH_DESCRIPTORS)
            || n > MAX_FDS_PER_MESSAGE
        {
            doomed.extend(self.fds.drain(..).map(|(_, fd)| fd));
            return Err(FrameError {
                kind: ProtocolErrorKind::ExtraDescriptors,
                message: format!("{n} descriptor(s) arrived that no request claimed; only Submit, SubmitBatch and SubmitRemote carry descriptors ({SUBMIT_DESCRIPTORS} per job)"),
            });
        }
        Ok(())
    }

    /// The session closes: descriptors no frame claimed go to `doomed`.
    pub(crate) fn close(&mut self, doomed: &mut Vec<OwnedFd>) {
        doomed.extend(self.fds.drain(..).map(|(_, fd)| fd));
    }

    // ---- sending ---------------------------------------------------------------

    /// Appends an event to the bytes to send.
    pub(crate) fn queue_event(&mut self, event: &Event) -> Result<(), CodecError> {
        codec::encode_frame(event, &mut self.pending, u32::MAX)
    }

    /// Bytes of events not yet sent, those in the send in flight included.
    pub(crate) fn unsent(&self) -> usize {
        self.pending.len() + self.sending
    }

    /// Whether more than [`MAX_PENDING_EVENTS`] wait: the client is not reading.
    pub(crate) fn not_reading(&self) -> bool {
        self.pending.len() > MAX_PENDING_EVENTS
    }

    /// Whether the client keeps up well enough to be sent progress events.
    pub(crate) fn keeps_up(&self) -> bool {
        self.pending.len() < MAX_PENDING_EVENTS / 4
    }

    /// Whether events wait to be sent.
    pub(crate) fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Forgets the events not yet sent (the client was cut off).
    pub(crate) fn drop_pending(&mut self) {
        self.pending = Vec::new();
    }

    /// The buffer for the next send, holding every pending event; `None`
    /// while a send is in flight or nothing waits.
    pub(crate) fn start_send(&mut self) -> Option<Box<SendBuf>> {
        if self.pending.is_empty() {
            return None;
        }
        let mut buf = self.send.take()?;
        buf.data.clear();
        buf.sent = 0;
        std::mem::swap(&mut buf.data, &mut self.pending);
        self.sending = buf.data.len();
        Some(buf)
    }

    /// The send could not be queued; its bytes are lost with it.
    pub(crate) fn send_not_queued(&mut self) {
        self.send = Some(SendBuf::new(0));
    }

    /// A send came back (`result`: bytes sent or -errno). `closing`: the
    /// session sends without waiting, so a full socket is a failure.
    pub(crate) fn on_sent(&mut self, result: i32, mut buf: Box<SendBuf>, closing: bool) -> Sent {
        self.sending = 0;
        if result < 0 {
            let e = -result;
            if errno::interrupted(e) || (e == libc::EAGAIN && !closing) {
                self.pending.splice(0..0, buf.data.drain(buf.sent..));
                self.send = Some(buf);
                return Sent::Again;
            }
            self.pending.clear();
            self.send = Some(buf);
            return Sent::Failed(e);
        }
        buf.sent += result as usize;
        if buf.sent < buf.data.len() {
            // Short send: what is left goes first, ahead of newer events.
            self.pending.splice(0..0, buf.data.drain(buf.sent..));
        }
        self.send = Some(buf);
        Sent::Done
    }

    /// Gives back event buffers that one large event (a long listing) grew,
    /// once they hold nothing: a thousand idle connections must not each
    /// keep the largest event they were ever sent.
    pub(crate) fn shrink_idle_buffers(&mut self) {
        if self.pending.is_empty() && self.pending.capacity() > KEEP_EVENT_CAPACITY {
            self.pending = Vec::with_capacity(EVENT_CAPACITY);
        }
        if let Some(send) = self.send.as_mut() {
            if send.data.capacity() > KEEP_EVENT_CAPACITY {
                send.data = Vec::with_capacity(EVENT_CAPACITY);
                send.sent = 0;
            }
        }
    }
}

/// Whether a client holding `mine` bytes of unsent events is over its share
/// while all `sessions` clients together hold `total()`, past `budget`
/// (`--max-event-bytes`). A client that reads its events holds little for
/// long; one that does not is cut off before the daemon's memory grows.
/// `total` is only added up for a client past the floor.
pub(crate) fn over_event_share(
    mine: usize,
    total: impl FnOnce() -> usize,
    budget: u64,
    sessions: usize,
) -> bool {
    if mine <= EVENT_SHARE_FLOOR {
        return false;
    }
    let budget = usize::try_from(budget).unwrap_or(usize::MAX);
    total() > budget && mine >= budget / sessions.max(1)
}

/// Takes the descriptors that arrived with the frame at stream positions
/// `[start, end)`, and checks their number against what the request needs.
///
/// A Unix stream socket delivers the descriptors of a `sendmsg` with the
/// receive that reads that message's first byte, and ends that receive after
/// the message's bytes; a frame is sent in one `sendmsg` and fits one socket
/// buffer. So descriptors whose receive ended inside a frame's bytes belong
/// to that frame, and only to it: a frame cannot borrow a later frame's
/// descriptors, nor leave its own for the next one.
pub(crate) fn claim_fds(
    fds: &mut VecDeque<(u64, OwnedFd)>,
    req: &Request,
    start: u64,
    end: u64,
    doomed: &mut Vec<OwnedFd>,
) -> Result<Vec<OwnedFd>, FrameError> {
    let mut claimed: Vec<OwnedFd> = Vec::new();
    let mut stray = false;
    while fds.front().is_some_and(|(pos, _)| *pos <= end) {
        if let Some((pos, fd)) = fds.pop_front() {
            // A descriptor at or before the frame's start arrived with bytes
            // already handled: nobody claimed it.
            stray |= pos <= start;
            claimed.push(fd);
        }
    }
    let want = descriptors_wanted(req);
    let got = claimed.len();
    if got == want && !stray {
        return Ok(claimed);
    }
    doomed.extend(claimed);
    Err(claim_error(req, want, got))
}

/// The descriptors a request's frame must carry.
fn descriptors_wanted(req: &Request) -> usize {
    match req {
        Request::Submit(job) => job.descriptors(),
        Request::SubmitBatch(jobs) => jobs.iter().map(SubmitRequest::descriptors).sum(),
        Request::SubmitRemote(push) => push.descriptors(),
        _ => 0,
    }
}

fn claim_error(req: &Request, want: usize, got: usize) -> FrameError {
    if want > MAX_FDS_PER_MESSAGE {
        FrameError {
            kind: ProtocolErrorKind::TooManyDescriptors,
            message: format!(
                "a SubmitBatch of {} jobs needs {want} descriptors, and one message carries at most {MAX_FDS_PER_MESSAGE}",
                want / SUBMIT_DESCRIPTORS
            ),
        }
    } else if got < want {
        FrameError {
            kind: ProtocolErrorKind::MissingDescriptors,
            message: format!(
                "{} needs {want} descriptors ({SUBMIT_DESCRIPTORS} per job: source, destination) but {got} arrived with it",
                request_name(req)
            ),
        }
    } else {
        FrameError {
            kind: ProtocolErrorKind::ExtraDescriptors,
            message: format!(
                "{got} descriptor(s) arrived with {}, which takes {want}",
                request_name(req)
            ),
        }
    }
}

/// The request's name, for messages that must not dump a whole request.
pub(crate) fn request_name(req: &Request) -> &'static str {
    match req {
        Request::Hello { .. } => "Hello",
        Request::Submit(_) => "Submit",
        Request::SubmitBatch(_) => "SubmitBatch",
        Request::SubmitRemote(_) => "SubmitRemote",
        Request::Cancel { .. } => "Cancel",
        Request::Stats => "Stats",
        Request::Status { .. } => "Status",
        Request::Wait { .. } => "Wait",
        Request::Jobs { .. } => "Jobs",
    }
}
