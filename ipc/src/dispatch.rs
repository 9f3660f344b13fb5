//! Reading the daemon's events: by the client's event thread, or by the
//! caller's own thread through a [`Dispatcher`].
//!
//! The event thread waits for the socket to become readable without holding
//! anything, then takes the reader, reads what has arrived without blocking
//! and dispatches every whole frame. A [`Dispatcher`] does the same on the
//! caller's thread while the event thread stands aside. That is for a client
//! that submits as fast as it can and wants its completions in between, as
//! `ringxfer copy -r` does: on two cores the event thread, woken by each
//! batch of completions, kept preempting the thread opening the files, and
//! the copy took up to half as long again.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use crate::client::{lock, Client, ClientError, FrameError, Inner, MAX_EVENT_FRAME};
use crate::frame;
use crate::proto::Event;

/// Bytes read per receive (many small events at once); the buffer grows
/// beyond it only for a frame that does not fit.
const READ_CHUNK: usize = 64 * 1024;

/// The daemon's bytes as they arrive, cut into frames.
pub(crate) struct EventReader {
    stream: UnixStream,
    buf: Vec<u8>,
    /// Start of the bytes not yet taken as frames.
    start: usize,
    /// Why the connection ended, once a reader saw it end.
    pub(crate) ended: Option<String>,
}

/// What one read brought.
enum Filled {
    /// Some bytes (maybe with more waiting).
    Bytes,
    /// Nothing now.
    Nothing,
    /// The connection is over, for this reason.
    Ended(String),
}

impl EventReader {
    pub(crate) fn new(stream: UnixStream) -> EventReader {
        EventReader {
            stream,
            buf: Vec::with_capacity(READ_CHUNK),
            start: 0,
            ended: None,
        }
    }

    pub(crate) fn fd(&self) -> RawFd {
        self.stream.as_raw_fd()
    }

    /// One receive without waiting, into the buffer's spare room.
    fn fill(&mut self) -> Filled {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
            // One odd large event must not pin megabytes for the life of
            // the connection.
            if self.buf.capacity() > 4 * READ_CHUNK {
                self.buf.shrink_to(READ_CHUNK);
            }
        } else if self.start >= READ_CHUNK {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        if self.buf.capacity() - self.buf.len() < READ_CHUNK / 4 {
            self.buf.reserve(READ_CHUNK);
        }
        let len = self.buf.len();
        let room = self.buf.capacity() - len;
        loop {
            // SAFETY: the pointer and length name the vector's spare
            // capacity, which recv writes at most `room` bytes into; the
            // length is raised below by exactly what it wrote.
            let n = unsafe {
                libc::recv(
                    self.stream.as_raw_fd(),
                    self.buf.as_mut_ptr().add(len).cast(),
                    room,
                    libc::MSG_DONTWAIT,
                )
            };
            if n > 0 {
                // SAFETY: recv initialised those `n` bytes (n <= room).
                unsafe { self.buf.set_len(len + n as usize) };
                return Filled::Bytes;
            }
            if n == 0 {
                let why = if self.start < self.buf.len() {
                    FrameError::Truncated
                } else {
                    FrameError::Eof
                };
                return Filled::Ended(why.to_string());
            }
            let err = io::Error::last_os_error();
            match err.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => return Filled::Nothing,
                _ => return Filled::Ended(FrameError::Io(err).to_string()),
            }
        }
    }

    /// The next whole frame's event, if one has arrived.
    fn next_event(&mut self) -> Option<Result<Event, FrameError>> {
        match frame::next(&self.buf[self.start..], MAX_EVENT_FRAME) {
            Ok(None) => None,
            Ok(Some((event, used))) => {
                self.start += used;
                Some(Ok(event))
            }
            Err(e) => Some(Err(e.into())),
        }
    }

    /// Reads everything that has arrived and dispatches every whole frame.
    /// Returns how many events were dispatched, or why the connection ended.
    pub(crate) fn pump(&mut self, inner: &Inner) -> Result<usize, String> {
        if let Some(reason) = &self.ended {
            return Err(reason.clone());
        }
        let mut dispatched = 0;
        loop {
            let filled = self.fill();
            while let Some(event) = self.next_event() {
                let result = event
                    .map_err(|e| e.to_string())
                    .and_then(|event| inner.dispatch(event));
                if let Err(reason) = result {
                    self.ended = Some(reason.clone());
                    return Err(reason);
                }
                dispatched += 1;
            }
            match filled {
                Filled::Bytes => {}
                Filled::Nothing => return Ok(dispatched),
                Filled::Ended(reason) => {
                    self.ended = Some(reason.clone());
                    return Err(reason);
                }
            }
        }
    }
}

/// Waits until `fd` is readable (or hung up), at most `timeout` (`None`:
/// for as long as it takes). False when the time ran out.
pub(crate) fn wait_readable(fd: RawFd, timeout: Option<Duration>) -> io::Result<bool> {
    let deadline = timeout.map(|t| Instant::now() + t);
    loop {
        let ms = match deadline {
            None => -1,
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                // Rounded up, so a short wait is not a busy loop of zeros.
                left.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32
            }
        };
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one pollfd that lives across the call.
        let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
        if rc > 0 {
            return Ok(true);
        }
        if rc == 0 {
            return Ok(false);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Runs a connection's events on the calling thread instead of the
/// client's event thread, for as long as it lives: job callbacks, handle
/// updates and subscribers then happen inside [`Dispatcher::dispatch`]
/// (but for the final event of a path helper's job, which the client's
/// publishing thread delivers once the destination has its name).
///
/// Meant for a thread that submits jobs in a loop and collects their
/// completions between submissions: it saves the event thread's wake-ups,
/// which on a busy machine take turns with the submitting thread. A client
/// whose requests are all made while a dispatcher reads never starts the
/// event thread at all; one dropped while jobs, callers or subscribers
/// still wait for the daemon hands them to the event thread, started then
/// if it has not been.
///
/// While it lives, nothing else dispatches. A call that waits for the
/// daemon's answer ([`JobHandle::wait`](crate::JobHandle::wait),
/// [`Client::stats`], [`Client::status`], ...) made on the same thread
/// would wait forever; make such calls after dropping the dispatcher, or
/// from another thread while this one keeps dispatching.
///
/// ```no_run
/// use ringxfer_ipc::{Client, TransferOptions};
/// use std::fs::File;
/// use std::time::Duration;
///
/// let client = Client::connect_default()?;
/// let (src, dst) = (File::open("in.bin")?, File::create("out.bin")?);
/// let (tx, rx) = crossbeam_channel::unbounded();
/// let mut events = client.dispatch_here();
/// client.submit_with_callback(&src, &dst, &TransferOptions::default(), move |r| {
///     let _ = tx.send(r);
/// })?;
/// while rx.is_empty() {
///     events.dispatch(Some(Duration::from_secs(1)))?;
/// }
/// println!("{:?}", rx.recv()?);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Dispatcher<'a> {
    client: &'a Client,
}

impl Client {
    /// Moves event dispatch to the calling thread until the returned
    /// [`Dispatcher`] is dropped (see there). At most one at a time: a
    /// second waits for the first to be dropped.
    ///
    /// ```no_run
    /// let client = ringxfer_ipc::Client::connect_default()?;
    /// let mut events = client.dispatch_here();
    /// events.dispatch(Some(std::time::Duration::ZERO))?; // whatever has arrived
    /// drop(events); // the event thread dispatches again
    /// # Ok::<(), ringxfer_ipc::ClientError>(())
    /// ```
    pub fn dispatch_here(&self) -> Dispatcher<'_> {
        let inner = &self.inner;
        let mut pumping = lock(&inner.pumping);
        while *pumping {
            pumping = inner
                .pump_changed
                .wait(pumping)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        *pumping = true;
        Dispatcher { client: self }
    }
}

impl Dispatcher<'_> {
    /// The socket [`Dispatcher::dispatch`] waits on, for a caller that
    /// waits on other descriptors too: poll it for `POLLIN` with them,
    /// then dispatch what arrived with `dispatch(Some(Duration::ZERO))`.
    ///
    /// ```no_run
    /// use std::os::fd::AsRawFd;
    /// let client = ringxfer_ipc::Client::connect_default()?;
    /// let events = client.dispatch_here();
    /// println!("events arrive on descriptor {}", events.fd().as_raw_fd());
    /// # Ok::<(), ringxfer_ipc::ClientError>(())
    /// ```
    pub fn fd(&self) -> BorrowedFd<'_> {
        let fd = lock(&self.client.inner.reader).fd();
        // SAFETY: the reader's stream is the client's, open until the
        // client is dropped, which the borrow of it this holds prevents.
        unsafe { BorrowedFd::borrow_raw(fd) }
    }

    /// Dispatches every event that has arrived, first waiting up to
    /// `timeout` for one (`None`: until one arrives; `Some(ZERO)`: not at
    /// all). Returns how many were dispatched.
    ///
    /// # Errors
    ///
    /// [`ClientError::Disconnected`] once the connection has ended; every
    /// outstanding job has then been resolved with the reason
    /// ([`JobError::Disconnected`](crate::JobError::Disconnected)), as when
    /// the event thread sees the end. [`ClientError::Io`] if waiting failed.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// let client = ringxfer_ipc::Client::connect_default()?;
    /// let mut events = client.dispatch_here();
    /// let n = events.dispatch(Some(Duration::from_millis(100)))?;
    /// println!("{n} events dispatched");
    /// # Ok::<(), ringxfer_ipc::ClientError>(())
    /// ```
    pub fn dispatch(&mut self, timeout: Option<Duration>) -> Result<usize, ClientError> {
        let inner = &self.client.inner;
        let fd = lock(&inner.reader).fd();
        let ready = timeout == Some(Duration::ZERO)
            || wait_readable(fd, timeout).map_err(|source| ClientError::Io {
                op: "waiting for the daemon's events",
                source,
            })?;
        if !ready {
            return Ok(0);
        }
        let result = lock(&inner.reader).pump(inner);
        result.map_err(|reason| {
            inner.close(reason);
            ClientError::Disconnected
        })
    }
}

impl Drop for Dispatcher<'_> {
    fn drop(&mut self) {
        let inner = &self.client.inner;
        *lock(&inner.pumping) = false;
        inner.pump_changed.notify_all();
        // After the flag is down: a request registered from now on starts
        // the event thread itself if it must (`Client::ensure_reader`).
        self.client.dispatcher_gone();
    }
}
