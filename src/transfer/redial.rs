//! A detached push whose connection was lost (the other daemon killed or
//! restarted, the link cut) dials it again by itself, after a back-off, and
//! resumes from the part the other daemon kept (peer_push.rs): nobody is
//! there to run `ringxfer copy --resume` for it. An attached push fails at
//! once instead, so that the user waiting for it sees why.
//!
//! The dial is non-blocking: socket and connect return at once
//! (EINPROGRESS), a ring poll waits for the socket to be writable, and
//! SO_ERROR says how the connect ended. The daemon dials from its own
//! network namespace, to the address the client's socket was connected
//! to.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use ringxfer_ipc::FailureKind;

use super::TransferError;
use crate::tls::TlsSetup;

/// Dials after the first loss; the waits double from one second up to a
/// minute: about three minutes in all before the push fails.
pub(crate) const MAX_REDIALS: u32 = 8;
const FIRST_WAIT: Duration = Duration::from_secs(1);
const LONGEST_WAIT: Duration = Duration::from_secs(60);

/// What a push needs to dial the other daemon again.
pub(crate) struct Redial {
    pub(crate) address: SocketAddr,
    /// This daemon's TLS identity and trust, for the new connection's
    /// session; None: plaintext to loopback, as the first connection was.
    pub(crate) tls: Option<Arc<TlsSetup>>,
    /// Dials made so far.
    pub(crate) dials: u32,
    /// The wait or the connect in flight (its user_data, to cancel it).
    pub(crate) op: Option<u64>,
    /// The socket being connected.
    pub(crate) connecting: Option<Rc<OwnedFd>>,
    /// How long the other daemon may stay silent (the socket's options,
    /// as the first connection's).
    pub(crate) timeout: Duration,
}

impl Redial {
    pub(crate) fn new(
        address: SocketAddr,
        tls: Option<Arc<TlsSetup>>,
        timeout: Duration,
    ) -> Redial {
        Redial {
            address,
            tls,
            dials: 0,
            op: None,
            connecting: None,
            timeout,
        }
    }

    /// Whether `err` is a lost connection worth another dial, with dials
    /// left.
    pub(crate) fn may_retry(&self, err: &TransferError) -> bool {
        self.dials < MAX_REDIALS && lost_connection(err)
    }

    /// How long to wait before the next dial.
    pub(crate) fn wait(&self) -> Duration {
        let doubled = FIRST_WAIT.saturating_mul(1 << self.dials.min(16));
        doubled.min(LONGEST_WAIT)
    }
}

/// A connection lost, as against a refusal or a verdict of the other
/// daemon (which another dial would only hear again).
fn lost_connection(err: &TransferError) -> bool {
    let lost_errno = matches!(
        err.os_error,
        Some(
            libc::ECONNRESET
                | libc::ECONNREFUSED
                | libc::ECONNABORTED
                | libc::EPIPE
                | libc::ETIMEDOUT
                | libc::EHOSTUNREACH
                | libc::ENETUNREACH
                | libc::ENETDOWN
        )
    );
    lost_errno || (err.kind == FailureKind::PeerGone && err.os_error.is_none())
}

/// A new non-blocking TCP socket, its connect to `address` started.
pub(crate) fn start_connect(address: SocketAddr) -> std::io::Result<OwnedFd> {
    let family = match address {
        SocketAddr::V4(_) => libc::AF_INET,
        SocketAddr::V6(_) => libc::AF_INET6,
    };
    let kind = libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
    // SAFETY: socket(2) takes no pointers; a negative result is an error.
    let fd = unsafe { libc::socket(family, kind, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new descriptor that nothing else owns.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    let (storage, len) = sockaddr(address);
    // SAFETY: `storage` is a sockaddr of `len` bytes, alive for the call;
    // on a non-blocking socket connect returns at once.
    let rc = unsafe {
        libc::connect(
            socket.as_raw_fd(),
            (&raw const storage).cast::<libc::sockaddr>(),
            len,
        )
    };
    let err = std::io::Error::last_os_error();
    if rc == 0 || err.raw_os_error() == Some(libc::EINPROGRESS) {
        Ok(socket)
    } else {
        Err(err)
    }
}

/// How the connect of `socket` ended, once it is writable; connected, it
/// is made blocking again, as the client's sockets are.
pub(crate) fn finish_connect(socket: &OwnedFd) -> Result<(), i32> {
    let mut err: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `err`, alive here.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            (&raw mut err).cast(),
            &raw mut len,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO));
    }
    if err != 0 {
        return Err(err);
    }
    let fd = socket.as_raw_fd();
    // SAFETY: fcntl(F_GETFL) on a descriptor we own takes no pointers.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    let set = if flags < 0 {
        -1
    } else {
        // SAFETY: fcntl(F_SETFL) on a descriptor we own takes no pointers.
        unsafe { libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) }
    };
    if set < 0 {
        return Err(std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO));
    }
    Ok(())
}

/// `address` as the sockaddr connect(2) takes, and its length.
fn sockaddr(address: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain data, valid all zeros.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match address {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than, and aligned for,
            // sockaddr_in.
            unsafe { std::ptr::write((&raw mut storage).cast(), sin) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than, and aligned for,
            // sockaddr_in6.
            unsafe { std::ptr::write((&raw mut storage).cast(), sin6) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_a_minute() {
        let mut r = Redial::new(
            "127.0.0.1:1".parse().expect("address"),
            None,
            Duration::from_secs(30),
        );
        let waits: Vec<u64> = (0..MAX_REDIALS)
            .map(|i| {
                r.dials = i;
                r.wait().as_secs()
            })
            .collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60]);
    }

    #[test]
    fn only_a_lost_connection_is_dialled_again() {
        let r = Redial::new(
            "127.0.0.1:1".parse().expect("address"),
            None,
            Duration::from_secs(30),
        );
        let reset = TransferError::os("sending", libc::ECONNRESET);
        let refused_by_peer = TransferError::new(FailureKind::PermissionDenied, "not open to you");
        let closed = TransferError::new(FailureKind::PeerGone, "closed");
        assert!(r.may_retry(&reset) && r.may_retry(&closed));
        assert!(!r.may_retry(&refused_by_peer));
    }

    #[test]
    fn a_connect_to_a_closed_port_ends_in_econnrefused() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = listener.local_addr().expect("address");
        drop(listener);
        let socket = start_connect(address).expect("connect starts");
        let mut pfd = libc::pollfd {
            fd: socket.as_raw_fd(),
            events: libc::POLLOUT,
            revents: 0,
        };
        // SAFETY: one pollfd, alive for the call.
        assert_eq!(unsafe { libc::poll(&raw mut pfd, 1, 5000) }, 1);
        assert_eq!(finish_connect(&socket), Err(libc::ECONNREFUSED));
    }
}
