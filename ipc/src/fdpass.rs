//! Blocking helpers to pass descriptors with `SCM_RIGHTS` on a Unix stream socket.
//!
//! The standard library cannot attach ancillary data to a write, so the client
//! stub sends its frames through [`send_with_fds`], which calls sendmsg(2)
//! itself.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};

/// The kernel refuses more descriptors than this in one message (`SCM_MAX_FD`).
const SCM_MAX_FD: usize = 253;

/// Writes all of `bytes` on a connected Unix stream socket with one or more
/// sendmsg(2) calls (`MSG_NOSIGNAL`, so a vanished peer is `EPIPE`, not a
/// signal); `fds` ride with the first call as one `SCM_RIGHTS` control message.
///
/// The kernel attaches the descriptors to the first byte of `bytes`, so a
/// receiver that reads the message from its start gets them with that read.
/// The caller may close its own copies as soon as this returns: the message in
/// flight holds its own references.
///
/// `EINTR` is retried. On a non-blocking socket `EAGAIN` waits with poll(2)
/// until the socket is writable, because giving up half way through would
/// leave a torn frame on the stream.
///
/// # Errors
///
/// The OS error of the failing sendmsg(2) or poll(2) call; `InvalidInput`
/// if `fds` is non-empty while `bytes` is empty (descriptors need at least one
/// byte to ride with on a stream socket) or if `fds` holds more than 253
/// descriptors.
///
/// ```
/// use std::io::Read;
/// use std::os::fd::AsFd;
/// use std::os::unix::net::UnixStream;
///
/// let (a, mut b) = UnixStream::pair()?;
/// let file = std::fs::File::open("/dev/null")?;
/// ringxfer_ipc::fdpass::send_with_fds(a.as_fd(), b"hi", &[file.as_fd()])?;
/// let mut buf = [0u8; 2];
/// b.read_exact(&mut buf)?; // a plain read discards the descriptor
/// assert_eq!(&buf, b"hi");
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn send_with_fds(sock: BorrowedFd<'_>, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    if fds.len() > SCM_MAX_FD {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "cannot pass {} descriptors in one message: the kernel allows {SCM_MAX_FD}",
                fds.len()
            ),
        ));
    }
    if bytes.is_empty() {
        if fds.is_empty() {
            return Ok(());
        }
        // A zero-length write on a stream socket sends nothing, and the
        // descriptors would silently go nowhere.
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "descriptors need at least one byte to ride with",
        ));
    }

    let raw: Vec<RawFd> = fds.iter().map(|fd| fd.as_raw_fd()).collect();
    // At most 253 * 4 bytes, so the conversion to c_uint cannot truncate.
    let fd_bytes = std::mem::size_of_val(raw.as_slice()) as libc::c_uint;
    // SAFETY: CMSG_SPACE is arithmetic on its argument only; it touches no memory.
    let space = unsafe { libc::CMSG_SPACE(fd_bytes) } as usize;
    // u64 cells give the buffer the alignment of cmsghdr (that of size_t).
    let mut control = vec![0u64; space.div_ceil(8)];

    let mut sent = 0usize;
    while sent < bytes.len() {
        let rest = &bytes[sent..];
        let mut iov = libc::iovec {
            iov_base: rest.as_ptr().cast_mut().cast(),
            iov_len: rest.len(),
        };
        // SAFETY: msghdr is plain data for which all-zero bytes are a valid
        // value (null pointers, zero lengths); zeroing also fills the private
        // padding fields some libcs add, which a struct literal could not.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        // Only the first call carries descriptors: after a short write the
        // kernel has already queued them with the bytes it took.
        if sent == 0 && !raw.is_empty() {
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = space as _;
            // SAFETY: msg_control points at `space` writable, zeroed bytes
            // aligned for cmsghdr, and msg_controllen says exactly that; space
            // is at least one cmsghdr, so CMSG_FIRSTHDR returns the buffer's
            // start, not null.
            let cmsg = unsafe { libc::CMSG_FIRSTHDR(&msg) };
            // SAFETY: cmsg is the start of our buffer, which CMSG_SPACE sized
            // for one header plus `fd_bytes` of data; CMSG_DATA points just
            // past the header inside it, and we copy exactly `fd_bytes` from
            // `raw`, which holds that many bytes. Copying bytes avoids assuming
            // the data pointer is aligned for c_int.
            unsafe {
                (*cmsg).cmsg_level = libc::SOL_SOCKET;
                (*cmsg).cmsg_type = libc::SCM_RIGHTS;
                (*cmsg).cmsg_len = libc::CMSG_LEN(fd_bytes) as _;
                std::ptr::copy_nonoverlapping(
                    raw.as_ptr().cast::<u8>(),
                    libc::CMSG_DATA(cmsg),
                    fd_bytes as usize,
                );
            }
        }
        // SAFETY: msg points at `iov`, which describes `rest` (readable for
        // its length; sendmsg only reads it despite the *mut type), and on the
        // first call at the control buffer built above; all of them outlive
        // the call and the kernel keeps no pointer past it. `sock` is a
        // descriptor borrowed for the duration of this function.
        let n = unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
        if n < 0 {
            let err = io::Error::last_os_error();
            match err.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => {
                    wait_writable(sock)?;
                    continue;
                }
                _ => return Err(err),
            }
        }
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "sendmsg accepted no bytes",
            ));
        }
        // n is positive here, so the conversion is lossless.
        sent += n as usize;
    }
    Ok(())
}

/// Blocks until `sock` can take more bytes (or is in error, which the next
/// sendmsg then reports).
fn wait_writable(sock: BorrowedFd<'_>) -> io::Result<()> {
    loop {
        let mut pfd = libc::pollfd {
            fd: sock.as_raw_fd(),
            events: libc::POLLOUT,
            revents: 0,
        };
        // SAFETY: pfd is one valid pollfd living on our stack for the whole
        // call, and the count passed is 1.
        let n = unsafe { libc::poll(&mut pfd, 1, -1) };
        if n >= 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}
