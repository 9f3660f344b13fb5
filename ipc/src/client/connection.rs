//! The connection: connecting, the `Hello` handshake, and reading one
//! whole frame from the daemon.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use super::events::event_name;
use super::{lock, Client, ClientError, Inner, LostJob, Publisher, Shared, Tx};
use crate::codec::{self, CodecError};
use crate::dispatch::EventReader;
use crate::fdpass::send_with_fds;
use crate::frame::{self, DeframeError};
use crate::proto::{
    Event, Limits, ProtocolErrorKind, Request, DEFAULT_MAX_FRAME, FRAME_HEADER_LEN,
    PROTOCOL_VERSION,
};
use crate::socket_path::client_socket_path;
#[cfg(doc)]
use crate::JobError;

/// How long [`Client::from_stream`] waits for the answer to `Hello`.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest frame accepted from the daemon. Events are small; anything
/// near this is a broken or hostile peer, not data.
pub(crate) const MAX_EVENT_FRAME: u32 = 16 * 1024 * 1024;

/// The payload buffer is shrunk back to this after a large frame, so one odd
/// event does not pin megabytes for the life of the connection.
const KEEP_PAYLOAD_CAPACITY: usize = 64 * 1024;

impl Client {
    /// Connects to the daemon's socket at `path` and performs the handshake.
    ///
    /// # Errors
    ///
    /// [`ClientError::Connect`] if connect(2) fails (see
    /// [`ClientError::is_unreachable`]); otherwise as [`Client::from_stream`].
    ///
    /// ```no_run
    /// let client = ringxfer_ipc::Client::connect("/run/ringxfer/ringxferd.sock")?;
    /// # Ok::<(), ringxfer_ipc::ClientError>(())
    /// ```
    pub fn connect(path: impl AsRef<Path>) -> Result<Client, ClientError> {
        let path = path.as_ref();
        let stream = UnixStream::connect(path).map_err(|source| ClientError::Connect {
            path: path.to_path_buf(),
            source,
        })?;
        let mut client = Client::from_stream(stream)?;
        client.path = Some(path.to_path_buf());
        Ok(client)
    }

    /// Connects to [`client_socket_path`]: the per-user daemon's socket
    /// where one exists, else the system daemon's.
    ///
    /// # Errors
    ///
    /// As [`Client::connect`].
    ///
    /// ```no_run
    /// let client = ringxfer_ipc::Client::connect_default()?;
    /// # Ok::<(), ringxfer_ipc::ClientError>(())
    /// ```
    pub fn connect_default() -> Result<Client, ClientError> {
        Client::connect(client_socket_path())
    }

    /// Speaks the protocol on an already connected stream (from socket
    /// activation, a test, or a socket connected some other way): sends
    /// `Hello` and waits up to 10 s for `Welcome`.
    ///
    /// # Errors
    ///
    /// [`ClientError::Handshake`] if the daemon does not answer in time, hangs
    /// up, or speaks another protocol version; [`ClientError::Protocol`] if it
    /// answers with another error frame; [`ClientError::Io`] for a failed
    /// system call.
    ///
    /// ```no_run
    /// use std::os::unix::net::UnixStream;
    /// let stream = UnixStream::connect("/run/ringxfer/ringxferd.sock")?;
    /// let client = ringxfer_ipc::Client::from_stream(stream)?;
    /// println!("{} jobs allowed", client.limits().max_jobs_per_connection);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn from_stream(stream: UnixStream) -> Result<Client, ClientError> {
        // The event thread relies on blocking reads, whatever the caller set.
        stream
            .set_nonblocking(false)
            .map_err(io_err("making the daemon socket blocking"))?;
        stream
            .set_read_timeout(Some(HANDSHAKE_TIMEOUT))
            .map_err(io_err("setting the handshake timeout"))?;
        let mut buf = Vec::new();
        let limits = handshake(&stream, &mut buf)?;
        stream
            .set_read_timeout(None)
            .map_err(io_err("clearing the handshake timeout"))?;
        buf.clear();
        Client::start(stream, limits, buf)
    }

    /// A client on a connection past its handshake. Its event thread
    /// starts when first needed (`Client::ensure_reader`): a program that
    /// reads its events with a dispatcher never starts one.
    fn start(stream: UnixStream, limits: Limits, buf: Vec<u8>) -> Result<Client, ClientError> {
        let reader = stream
            .try_clone()
            .map_err(io_err("duplicating the daemon socket"))?;
        let inner = Arc::new(Inner {
            stream,
            limits,
            tx: Mutex::new(Tx {
                buf,
                next_req: 1,
                next_stats: 0,
            }),
            shared: Mutex::new(Shared {
                jobs: HashMap::new(),
                stats_waiters: VecDeque::new(),
                answers: HashMap::new(),
                subscribers: Vec::new(),
                closed: None,
                lost: Vec::new(),
            }),
            dropping: AtomicBool::new(false),
            reader: Mutex::new(EventReader::new(reader)),
            pumping: Mutex::new(false),
            pump_changed: Condvar::new(),
            publisher: Publisher::new(),
        });
        Ok(Client {
            inner,
            event_thread: Mutex::new(None),
            path: None,
        })
    }

    /// Replaces this connection with a new one to the same socket (the path
    /// given to [`Client::connect`]) and returns the jobs that were still
    /// outstanding on the old one: their handles resolve (or have resolved)
    /// to [`JobError::Disconnected`]. Use it after the daemon restarted, or
    /// whenever a call returned [`ClientError::Disconnected`].
    ///
    /// # Errors
    ///
    /// As [`Client::connect`], and then the old connection is kept as it
    /// was; [`ClientError::Io`] (`InvalidInput`) for a client made by
    /// [`Client::from_stream`], which has no path: use
    /// [`Client::reconnect_to`].
    ///
    /// ```no_run
    /// let mut client = ringxfer_ipc::Client::connect_default()?;
    /// // ... the daemon restarts ...
    /// for lost in client.reconnect()? {
    ///     eprintln!("request {} (job {:?}) was lost", lost.request, lost.job);
    /// }
    /// # Ok::<(), ringxfer_ipc::ClientError>(())
    /// ```
    pub fn reconnect(&mut self) -> Result<Vec<LostJob>, ClientError> {
        let Some(path) = self.path.clone() else {
            return Err(ClientError::Io {
                op: "reconnect",
                source: io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "this client was made from a stream and has no socket path; use reconnect_to",
                ),
            });
        };
        self.reconnect_to(path)
    }

    /// As [`Client::reconnect`], to the socket at `path`.
    ///
    /// # Errors
    ///
    /// As [`Client::connect`]; the old connection is then kept as it was.
    ///
    /// ```no_run
    /// let mut client = ringxfer_ipc::Client::connect("/run/ringxfer/ringxferd.sock")?;
    /// let lost = client.reconnect_to("/run/ringxfer/ringxferd.sock")?;
    /// println!("{} jobs lost", lost.len());
    /// # Ok::<(), ringxfer_ipc::ClientError>(())
    /// ```
    pub fn reconnect_to(&mut self, path: impl AsRef<Path>) -> Result<Vec<LostJob>, ClientError> {
        let fresh = Client::connect(path)?;
        let old_inner = Arc::clone(&self.inner);
        // Dropping the old client ends its connection and joins its event
        // thread, which resolves whatever was still outstanding and lists it.
        drop(std::mem::replace(self, fresh));
        let lost = std::mem::take(&mut lock(&old_inner.shared).lost);
        Ok(lost)
    }

    /// The limits the daemon announced in its `Welcome`.
    ///
    /// ```no_run
    /// let client = ringxfer_ipc::Client::connect_default()?;
    /// assert!(client.limits().max_fds_per_message >= 2);
    /// # Ok::<(), ringxfer_ipc::ClientError>(())
    /// ```
    pub fn limits(&self) -> Limits {
        self.inner.limits
    }
    /// The daemon's process id, from the socket's peer credentials
    /// (SO_PEERCRED, as of the connect); `None` where the kernel does not say.
    ///
    /// ```no_run
    /// let client = ringxfer_ipc::Client::connect_default()?;
    /// if let Some(pid) = client.daemon_pid() {
    ///     println!("ringxferd runs as pid {pid}");
    /// }
    /// # Ok::<(), ringxfer_ipc::ClientError>(())
    /// ```
    pub fn daemon_pid(&self) -> Option<u32> {
        // SAFETY: ucred is plain data; all-zero is a valid value.
        let mut cred: libc::ucred = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
        // SAFETY: the socket is open for the call; `cred` and `len` are
        // writable and sized as getsockopt(SO_PEERCRED) expects.
        let rc = unsafe {
            libc::getsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&self.inner.stream),
                libc::SOL_SOCKET,
                libc::SO_PEERCRED,
                std::ptr::addr_of_mut!(cred).cast(),
                &mut len,
            )
        };
        (rc == 0 && cred.pid > 0).then_some(cred.pid as u32)
    }
}

/// A closure making a failed system call of the handshake a [`ClientError::Io`].
fn io_err(op: &'static str) -> impl FnOnce(io::Error) -> ClientError {
    move |source| ClientError::Io { op, source }
}

/// Sends `Hello` and reads the answer straight from the socket, not
/// through a buffer: bytes after `Welcome` belong to the event thread's
/// reader. Returns the limits the daemon announced.
fn handshake(stream: &UnixStream, buf: &mut Vec<u8>) -> Result<Limits, ClientError> {
    let hello = Request::Hello {
        version: PROTOCOL_VERSION,
    };
    codec::encode_frame(&hello, buf, DEFAULT_MAX_FRAME)?;
    // A daemon refusing the connection (too many connections) writes its
    // reason and closes, possibly before Hello arrives: the send then fails
    // with EPIPE, but the reason is still there to read, and says more.
    let sent = send_with_fds(stream.as_fd(), buf, &[]);
    let answer = match (read_frame(&mut &*stream, buf), sent) {
        (Ok(event), _) => event,
        (Err(_), Err(e)) => return Err(io_err("sending Hello")(e)),
        (Err(e), Ok(_)) => return Err(handshake_read_error(e)),
    };
    welcome_limits(answer)
}

/// The error of a handshake whose answer could not be read.
fn handshake_read_error(e: FrameError) -> ClientError {
    match e {
        FrameError::Io(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            ClientError::Handshake(format!(
                "no answer to Hello within {} s",
                HANDSHAKE_TIMEOUT.as_secs()
            ))
        }
        FrameError::Io(source) => ClientError::Io {
            op: "reading the answer to Hello",
            source,
        },
        FrameError::Decode(e) => ClientError::Codec(e),
        e => ClientError::Handshake(format!("waiting for the answer to Hello: {e}")),
    }
}

/// The limits of a `Welcome` in our version; any other answer to `Hello`
/// is an error saying what went wrong.
fn welcome_limits(answer: Event) -> Result<Limits, ClientError> {
    match answer {
        Event::Welcome { version, limits } if version == PROTOCOL_VERSION => Ok(limits),
        Event::Welcome { version, .. } => Err(ClientError::Handshake(format!(
            "the daemon speaks protocol version {version}, this client {PROTOCOL_VERSION}"
        ))),
        Event::ProtocolError {
            kind: ProtocolErrorKind::BadVersion,
            message,
        } => Err(ClientError::Handshake(format!(
            "the daemon refused protocol version {PROTOCOL_VERSION}: {message}"
        ))),
        Event::ProtocolError { kind, message } => Err(ClientError::Protocol { kind, message }),
        other => Err(ClientError::Handshake(format!(
            "expected Welcome in answer to Hello, got {}",
            event_name(&other)
        ))),
    }
}

/// Why reading a frame from the daemon failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FrameError {
    #[error("the daemon closed the connection")]
    Eof,
    #[error("the connection ended in the middle of a frame")]
    Truncated,
    #[error("the daemon sent a frame of {0} bytes, over the client's limit of {MAX_EVENT_FRAME}")]
    TooLarge(u32),
    #[error("reading from the daemon failed: {0}")]
    Io(io::Error),
    #[error("the daemon sent an undecodable event: {0}")]
    Decode(CodecError),
}

impl From<DeframeError> for FrameError {
    fn from(e: DeframeError) -> FrameError {
        match e {
            DeframeError::TooLarge { len, .. } => FrameError::TooLarge(len),
            DeframeError::Decode { source, .. } => FrameError::Decode(source),
        }
    }
}

/// Reads one whole frame and decodes the event in it, using `payload` as scratch.
fn read_frame(r: &mut impl Read, payload: &mut Vec<u8>) -> Result<Event, FrameError> {
    let mut header = [0u8; FRAME_HEADER_LEN];
    let mut got = 0;
    while got < header.len() {
        match r.read(&mut header[got..]) {
            Ok(0) if got == 0 => return Err(FrameError::Eof),
            Ok(0) => return Err(FrameError::Truncated),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(FrameError::Io(e)),
        }
    }
    let len = frame::payload_len(header, MAX_EVENT_FRAME)?;
    payload.clear();
    if payload.capacity() > KEEP_PAYLOAD_CAPACITY {
        payload.shrink_to(KEEP_PAYLOAD_CAPACITY);
    }
    // Growing with the bytes that actually arrive, instead of reserving `len`
    // up front, means a lying length costs no more memory than was sent.
    let read = r
        .take(u64::from(len))
        .read_to_end(payload)
        .map_err(FrameError::Io)?;
    if read < len as usize {
        return Err(FrameError::Truncated);
    }
    codec::decode_payload(payload).map_err(FrameError::Decode)
}
