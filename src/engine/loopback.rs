//! Refusing descriptors that lead back to the daemon itself.
//!
//! A job whose source or destination is a connection to this daemon would
//! hold that connection's client end open: the daemon never sees the client
//! hang up, so the job, its session and its descriptors outlive every
//! client that could see or cancel them, and enough of them lock everyone
//! out until a restart. Such a descriptor is a Unix stream socket whose
//! peer's address is the listening socket's own (getpeername of a connected
//! Unix socket names the socket it connected to), whoever made the listener
//! (the daemon, or systemd for socket activation).

use std::os::fd::{AsRawFd, OwnedFd};

use ringxfer_ipc::FailureKind;

use crate::transfer::TransferError;

/// A Unix socket address as the kernel gave it: the bytes of `sun_path`
/// (abstract names included) that it says are used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct UnixAddress(Vec<u8>);

type AddressCall =
    unsafe extern "C" fn(libc::c_int, *mut libc::sockaddr, *mut libc::socklen_t) -> libc::c_int;

fn address(fd: &OwnedFd, call: AddressCall) -> Option<UnixAddress> {
    // SAFETY: an all-zero sockaddr_un is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
    // SAFETY: `addr` is writable for `len` bytes and the call writes at most
    // that; getsockname/getpeername do not block.
    let rc = unsafe {
        call(
            fd.as_raw_fd(),
            (&mut addr as *mut libc::sockaddr_un).cast(),
            &mut len,
        )
    };
    if rc != 0 || addr.sun_family != libc::AF_UNIX as libc::sa_family_t {
        return None;
    }
    let path_len = (len as usize).saturating_sub(std::mem::size_of::<libc::sa_family_t>());
    // An unnamed socket (a socketpair's) has no address to match.
    (path_len > 0).then(|| {
        UnixAddress(
            addr.sun_path[..path_len.min(addr.sun_path.len())]
                .iter()
                .map(|&c| c as u8)
                .collect(),
        )
    })
}

/// The listening socket's address, to tell connections to it apart.
pub(super) fn listener_address(listener: &OwnedFd) -> Option<UnixAddress> {
    address(listener, libc::getsockname)
}

/// Refuses `src` or `dst` if it is a connection to the listener at `ours`.
pub(super) fn refuse_loopback(
    ours: &UnixAddress,
    src: &OwnedFd,
    dst: &OwnedFd,
) -> Option<TransferError> {
    let which = [("source", src), ("destination", dst)]
        .into_iter()
        .find(|(_, fd)| address(fd, libc::getpeername).as_ref() == Some(ours))?
        .0;
    Some(TransferError::new(
        FailureKind::InvalidRequest,
        format!(
            "the {which} is a connection to this daemon's own socket, which would keep that connection open for as long as the job runs: pass a file, pipe or another socket"
        ),
    ))
}
