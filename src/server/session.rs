//! One client connection: its receive and send buffers and what it owns.
//! The protocol itself is in [`super::wire`].

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::rc::Rc;

use ringxfer_ipc::frame;

use super::wire::Wire;

/// Room for the control message of one recvmsg: up to this many
/// descriptors, so that one `SubmitBatch` frame can carry 32 jobs.
/// Advertised in `Limits::max_fds_per_message`.
pub(crate) const MAX_FDS_PER_MESSAGE: usize = 64;

/// What a session's receive buffer holds unless a larger frame is arriving:
/// a whole `SubmitBatch` of 32 jobs, with room to spare.
pub(crate) const RECV_CAPACITY: usize = 16 * 1024;

/// 8-byte words of control buffer: one `cmsghdr` (16 bytes) and the
/// descriptors, with a word to spare; `cmsghdr` needs 8-byte alignment,
/// which an array of u64 gives.
const CMSG_WORDS: usize = 2 + MAX_FDS_PER_MESSAGE * 4 / 8 + 1;

/// A session's receive side: the bytes received and not yet parsed, and the
/// `msghdr`, `iovec` and control buffer that point into them. Boxed so those
/// pointers stay valid while the op that owns it is in flight.
pub(crate) struct RecvBuf {
    msg: libc::msghdr,
    iov: libc::iovec,
    cmsg: [u64; CMSG_WORDS],
    /// Received bytes not yet parsed; its capacity, fixed at creation, is the
    /// most a frame (header and payload) can need.
    pub data: Vec<u8>,
}

/// What one recvmsg brought besides bytes.
pub(crate) struct Received {
    /// The control data was cut short: more descriptors came than fit, or
    /// the process could not take them all (EMFILE).
    pub truncated: bool,
    /// Descriptors that did arrive.
    pub fds: usize,
}

impl RecvBuf {
    pub(crate) fn new(capacity: usize) -> Box<RecvBuf> {
        Box::new(RecvBuf {
            // SAFETY: msghdr and iovec are plain C structs for which all-zero
            // bytes (null pointers, zero lengths) are valid values.
            msg: unsafe { std::mem::zeroed() },
            // SAFETY: as above.
            iov: unsafe { std::mem::zeroed() },
            cmsg: [0; CMSG_WORDS],
            data: Vec::with_capacity(capacity),
        })
    }

    /// Points the `msghdr` at the spare capacity of `data` and at the control
    /// buffer, and returns it for the recvmsg entry.
    pub(crate) fn prepare(&mut self) -> *mut libc::msghdr {
        let len = self.data.len();
        let spare = self.data.capacity() - len;
        // SAFETY: `len` is within the allocation, so the pointer stays in bounds.
        self.iov.iov_base = unsafe { self.data.as_mut_ptr().add(len) }.cast();
        self.iov.iov_len = spare;
        self.msg.msg_name = std::ptr::null_mut();
        self.msg.msg_namelen = 0;
        self.msg.msg_iov = &mut self.iov;
        self.msg.msg_iovlen = 1;
        self.msg.msg_control = self.cmsg.as_mut_ptr().cast();
        let fd_bytes = (MAX_FDS_PER_MESSAGE * std::mem::size_of::<libc::c_int>()) as u32;
        // SAFETY: CMSG_SPACE only computes a size.
        let space = unsafe { libc::CMSG_SPACE(fd_bytes) };
        self.msg.msg_controllen = space as usize;
        self.msg.msg_flags = 0;
        &mut self.msg
    }

    /// Accounts for `n` bytes received into the spare capacity and moves any
    /// descriptors that came with them into `fds`, each tagged with `end`, the
    /// stream position just past the bytes of this receive.
    pub(crate) fn received(
        &mut self,
        n: usize,
        end: u64,
        fds: &mut VecDeque<(u64, OwnedFd)>,
    ) -> Received {
        let before = fds.len();
        let n = n.min(self.data.capacity() - self.data.len());
        // SAFETY: the kernel wrote `n` bytes into the spare capacity that
        // `prepare` described, and `n` is clamped to that capacity.
        unsafe { self.data.set_len(self.data.len() + n) };
        // SAFETY: the kernel filled msg_control/msg_controllen consistently;
        // CMSG_FIRSTHDR/NXTHDR stay within msg_controllen, and each SCM_RIGHTS
        // payload holds (cmsg_len - CMSG_LEN(0)) / 4 descriptors that this
        // process now owns and nobody else will close.
        unsafe {
            let mut cmsg = libc::CMSG_FIRSTHDR(&self.msg);
            while !cmsg.is_null() {
                if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                    let payload = (*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                    let data = libc::CMSG_DATA(cmsg).cast::<libc::c_int>();
                    for i in 0..payload / std::mem::size_of::<libc::c_int>() {
                        let raw = std::ptr::read_unaligned(data.add(i));
                        fds.push_back((end, OwnedFd::from_raw_fd(raw)));
                    }
                }
                cmsg = libc::CMSG_NXTHDR(&self.msg, cmsg);
            }
        }
        Received {
            truncated: self.msg.msg_flags & libc::MSG_CTRUNC != 0,
            fds: fds.len() - before,
        }
    }

    /// Drops the first `used` bytes, which have been parsed.
    pub(crate) fn consume(&mut self, used: usize) {
        self.data.drain(..used.min(self.data.len()));
    }

    /// Sizes the buffer for the next receive, with the complete frames
    /// handled: room for the whole frame that has begun, if its header says
    /// it is large (at most `most` bytes, the largest frame allowed), else
    /// [`RECV_CAPACITY`], to which a buffer a large frame grew goes back. A
    /// thousand idle connections then hold a few KiB each, not a maximum
    /// frame each.
    pub(crate) fn fit(&mut self, most: usize) {
        let begun = frame::begun_len(&self.data).unwrap_or(0);
        let want = begun.clamp(RECV_CAPACITY, most.max(RECV_CAPACITY));
        if self.data.capacity() < want {
            self.data.reserve_exact(want - self.data.len());
        } else if want == RECV_CAPACITY && self.data.capacity() > RECV_CAPACITY {
            self.data.shrink_to(RECV_CAPACITY);
        }
    }
}

// The I/O layer queues recvmsg and send with these, without knowing sessions.
impl crate::io::queue::RecvTarget for RecvBuf {
    fn prepare(&mut self) -> *mut libc::msghdr {
        RecvBuf::prepare(self)
    }
}

impl crate::io::queue::SendSource for SendBuf {
    fn unsent(&self) -> (*const u8, u32) {
        SendBuf::unsent(self)
    }
}

/// Encoded events on their way to the client.
pub(crate) struct SendBuf {
    pub data: Vec<u8>,
    pub sent: usize,
}

impl SendBuf {
    pub(crate) fn new(capacity: usize) -> Box<SendBuf> {
        Box::new(SendBuf {
            data: Vec::with_capacity(capacity),
            sent: 0,
        })
    }

    /// The bytes still to send, as the send entry wants them.
    pub(crate) fn unsent(&self) -> (*const u8, u32) {
        let rest = &self.data[self.sent.min(self.data.len())..];
        (rest.as_ptr(), rest.len().min(u32::MAX as usize) as u32)
    }
}

/// A client connection: its wire (buffers, descriptors, protocol state)
/// and what the engine keeps about it.
pub(crate) struct Session {
    /// Unique for the daemon's lifetime, for logs.
    pub id: u64,
    /// The socket, shared with the recvmsg and send in flight (each op
    /// holds a `SharedFd` of it); the session is freed, and the socket
    /// closed, only once neither is (`is_done`).
    pub fd: Rc<OwnedFd>,
    /// Bytes and descriptors in, requests out; events in, bytes out.
    pub wire: Wire,
    /// `user_data` of the recvmsg in flight, to cancel it on close.
    pub recv_op: Option<u64>,
    /// `user_data` of the send in flight.
    pub send_op: Option<u64>,
    /// Final events of batch jobs among the wire's pending events, held
    /// back to go out together (see engine::coalesce).
    pub held_events: u32,
    /// Set once the session stops reading; it is freed when its buffers are
    /// back, its jobs have ended and its events are sent (or undeliverable).
    pub closing: bool,
    /// The client shut down its sending side but may still read: its jobs
    /// run on, and the session closes when they end or the client hangs up.
    pub half_closed: bool,
    /// Pipes, buffers and worker pieces (index 0, 1, 2: the engine's
    /// `Resource`) lent to this connection's jobs now.
    pub held: [usize; 3],
    /// Job keys submitted on this connection and not yet finished.
    pub jobs: Vec<usize>,
    /// Bytes this connection's jobs still have to move (known lengths only).
    pub queued_bytes: u64,
    /// Peer credentials (SO_PEERCRED): pid, uid, gid.
    pub peer: (i32, u32, u32),
    /// The personality its jobs run under (0: the daemon's credentials),
    /// and its RLIMIT_FSIZE when known (see `crate::privileges`).
    pub personality: u16,
    pub fsize_limit: Option<u64>,
    /// When the connection was accepted (for the handshake deadline).
    pub opened: std::time::Instant,
}

impl Session {
    /// A session for `fd`, taking requests of at most `max_frame` bytes.
    pub(crate) fn new(id: u64, fd: OwnedFd, max_frame: u32, peer: (i32, u32, u32)) -> Session {
        Session {
            id,
            fd: Rc::new(fd),
            wire: Wire::new(max_frame, RECV_CAPACITY),
            recv_op: None,
            send_op: None,
            held_events: 0,
            closing: false,
            half_closed: false,
            held: [0; 3],
            jobs: Vec::new(),
            queued_bytes: 0,
            peer,
            personality: 0,
            fsize_limit: None,
            opened: std::time::Instant::now(),
        }
    }

    /// Whether the session can be freed: closing, nothing in flight, nothing to send.
    pub(crate) fn is_done(&self) -> bool {
        self.closing
            && self.recv_op.is_none()
            && self.send_op.is_none()
            && !self.wire.has_pending()
            && self.jobs.is_empty()
    }
}

/// Whether the client closed its socket entirely, not just its sending side:
/// a Unix socket reports POLLHUP only when both directions are shut.
pub(crate) fn peer_hung_up(fd: &OwnedFd) -> bool {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLHUP,
        revents: 0,
    };
    // SAFETY: `pfd` is one valid pollfd; a zero timeout makes poll return at once.
    let n = unsafe { libc::poll(&mut pfd, 1, 0) };
    n > 0 && pfd.revents & (libc::POLLHUP | libc::POLLERR) != 0
}

/// The pid, uid and gid of the process at the other end of a Unix socket.
pub(crate) fn peer_credentials(fd: &OwnedFd) -> Option<(i32, u32, u32)> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are valid for writes of the sizes given, and
    // SO_PEERCRED writes at most `len` bytes; the call does not block.
    let ret = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    (ret == 0).then_some((cred.pid, cred.uid, cred.gid))
}
