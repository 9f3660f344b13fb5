//! Where the listening sockets come from: systemd's socket activation
//! (`ringxferd.socket`, and `ringxferd-tcp.socket` for other daemons), or a
//! socket file the daemon binds itself (and `listen_tcp`).
//!
//! Under socket activation systemd owns the socket file: it made it (with the
//! unit's owner, group and mode), it keeps listening while the daemon
//! restarts, and it removes the file when the socket unit stops. So the daemon
//! must not remove it on exit; only a socket it bound itself is its to remove.

use std::io;
use std::net::TcpListener;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use super::listener::{ListenerError, SocketFile};

/// Why no listening socket could be had.
#[derive(Debug, thiserror::Error)]
pub enum ActivationError {
    #[error("read the sockets systemd passed (LISTEN_PID, LISTEN_FDS): {0}")]
    Env(#[source] io::Error),
    #[error(
        "systemd passed {0} sockets (LISTEN_FDS={0}); ringxferd serves one Unix socket and, \
         named tcp (FileDescriptorName=tcp, as in ringxferd-tcp.socket), one TCP socket: \
         give each socket unit a single ListenStream= line"
    )]
    Count(usize),
    #[error(
        "descriptor {fd} from systemd, named tcp, is {what}, not a listening TCP socket; \
         ringxferd-tcp.socket needs ListenStream=ADDRESS:PORT and Accept=no"
    )]
    NotTcp { fd: RawFd, what: String },
    #[error(
        "descriptor {fd} from systemd is {what}, not a listening Unix stream socket; \
         ringxferd.socket needs ListenStream=/a/path and Accept=no"
    )]
    NotAListener { fd: RawFd, what: String },
    #[error("{op} on descriptor {fd} from systemd: {source}")]
    Io {
        op: &'static str,
        fd: RawFd,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Bind(#[from] ListenerError),
}

/// The socket the daemon serves on.
pub struct Listening {
    /// The listening socket, for the engine to accept on.
    pub listener: UnixListener,
    /// Where clients connect, for logs and the service status.
    pub address: String,
    /// Whether systemd handed the socket over (and so keeps its file).
    pub from_systemd: bool,
    /// The socket file the daemon bound itself, removed when this is
    /// dropped; `None` for systemd's, which outlives the daemon.
    pub socket_file: Option<SocketFile>,
    /// The TCP socket for other daemons systemd passed (named `tcp`), if
    /// it passed one: it stands for `listen_tcp`.
    pub tcp: Option<TcpListener>,
}

/// Takes the socket systemd passed (LISTEN_FDS/LISTEN_PID), else binds
/// `path`. `explicit` says `path` was asked for (by `--socket`), so a
/// different activated socket is worth a warning.
///
/// Must be called before the process starts any thread: it unsets
/// LISTEN_FDS, LISTEN_PID and LISTEN_FDNAMES, so that nothing the daemon
/// might run inherits them, and the environment is not thread-safe.
pub fn listen(path: &Path, explicit: bool) -> Result<Listening, ActivationError> {
    let Passed { unix, tcp } = from_systemd()?;
    let Some(listener) = unix else {
        let (socket_file, listener) = SocketFile::bind(path)?;
        return Ok(Listening {
            listener,
            address: socket_file.path().display().to_string(),
            from_systemd: false,
            socket_file: Some(socket_file),
            tcp,
        });
    };
    let bound: Option<PathBuf> = listener
        .local_addr()
        .ok()
        .and_then(|a| a.as_pathname().map(Path::to_path_buf));
    let shown = match &bound {
        Some(p) => p.display().to_string(),
        None => "a socket from systemd without a path".to_string(),
    };
    if explicit && bound.as_deref() != Some(path) {
        tracing::warn!(
            "--socket {} ignored: serving on the socket systemd passed ({})",
            path.display(),
            shown
        );
    }
    Ok(Listening {
        listener,
        address: shown,
        from_systemd: true,
        socket_file: None,
        tcp,
    })
}

/// The sockets systemd passed to this process.
#[derive(Default)]
struct Passed {
    unix: Option<UnixListener>,
    tcp: Option<TcpListener>,
}

/// The listening sockets systemd passed, if it passed any to this process:
/// at most one Unix socket, and one TCP socket named `tcp`
/// (LISTEN_FDNAMES, from FileDescriptorName=).
fn from_systemd() -> Result<Passed, ActivationError> {
    let names = std::env::var("LISTEN_FDNAMES").unwrap_or_default();
    // SAFETY: the caller runs this before any thread exists (see `listen`),
    // which is the one precondition of removing environment variables.
    let fds = unsafe { sd_notify::listen_fds_and_unset_env() };
    // LISTEN_FDNAMES goes with the other two; sd-notify leaves it.
    std::env::remove_var("LISTEN_FDNAMES");
    let fds = fds.map_err(ActivationError::Env)?;
    let count = fds.len();
    if count > 2 {
        return Err(ActivationError::Count(count));
    }
    let mut passed = Passed::default();
    for (fd, name) in fds.zip(names.split(':').chain(std::iter::repeat(""))) {
        if name == "tcp" && passed.tcp.is_none() {
            check_listening_tcp(fd)?;
            // SAFETY: as for the Unix socket below; checked to be a
            // listening TCP socket.
            passed.tcp = Some(TcpListener::from(unsafe { OwnedFd::from_raw_fd(fd) }));
        } else if name != "tcp" && passed.unix.is_none() {
            check_listening_unix_stream(fd)?;
            // SAFETY: LISTEN_PID named this process, so by the
            // socket-activation protocol descriptor `fd` (3 and on) was
            // opened for it and nobody in it owns it yet; LISTEN_FDS is
            // unset above, so it cannot be taken twice. It was just checked
            // to be an open socket.
            passed.unix = Some(UnixListener::from(unsafe { OwnedFd::from_raw_fd(fd) }));
        } else {
            return Err(ActivationError::Count(count));
        }
    }
    Ok(passed)
}

/// Refuses anything but a listening TCP socket (IPv4 or IPv6).
fn check_listening_tcp(fd: RawFd) -> Result<(), ActivationError> {
    let not = |what: String| ActivationError::NotTcp { fd, what };
    let domain = sockopt(fd, libc::SO_DOMAIN, "getsockopt(SO_DOMAIN)")?;
    if domain != libc::AF_INET && domain != libc::AF_INET6 {
        return Err(not(format!("a socket of address family {domain}")));
    }
    if sockopt(fd, libc::SO_TYPE, "getsockopt(SO_TYPE)")? != libc::SOCK_STREAM {
        return Err(not("not a stream socket".into()));
    }
    if sockopt(fd, libc::SO_ACCEPTCONN, "getsockopt(SO_ACCEPTCONN)")? == 0 {
        return Err(not("a TCP socket that is not listening".into()));
    }
    Ok(())
}

/// Refuses anything but a listening AF_UNIX SOCK_STREAM socket: a datagram
/// or TCP socket (a mistyped unit) would make every accept fail, and an
/// unlistened one would never get a connection; better to say so at start.
fn check_listening_unix_stream(fd: RawFd) -> Result<(), ActivationError> {
    let not = |what: String| ActivationError::NotAListener { fd, what };
    // SAFETY: fstat writes into a valid, zeroed stat buffer; a bad `fd` is an
    // error return, not undefined behaviour.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return Err(ActivationError::Io {
            op: "fstat",
            fd,
            source: io::Error::last_os_error(),
        });
    }
    if st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return Err(not("not a socket".into()));
    }
    let domain = sockopt(fd, libc::SO_DOMAIN, "getsockopt(SO_DOMAIN)")?;
    if domain != libc::AF_UNIX {
        return Err(not(format!("a socket of address family {domain}")));
    }
    let ty = sockopt(fd, libc::SO_TYPE, "getsockopt(SO_TYPE)")?;
    if ty != libc::SOCK_STREAM {
        return Err(not(format!("a Unix socket of type {ty} (not SOCK_STREAM)")));
    }
    if sockopt(fd, libc::SO_ACCEPTCONN, "getsockopt(SO_ACCEPTCONN)")? == 0 {
        return Err(not("a Unix stream socket that is not listening".into()));
    }
    Ok(())
}

fn sockopt(fd: RawFd, opt: libc::c_int, op: &'static str) -> Result<libc::c_int, ActivationError> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `value` and `len` are valid for writes of an int and its size;
    // these options all report an int.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            opt,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(ActivationError::Io {
            op,
            fd,
            source: io::Error::last_os_error(),
        });
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::{UnixDatagram, UnixStream};

    #[test]
    fn only_a_listening_unix_stream_socket_passes() {
        let dir =
            tempfile::tempdir_in(concat!(env!("CARGO_MANIFEST_DIR"), "/target")).expect("tempdir");
        let listener = UnixListener::bind(dir.path().join("l.sock")).expect("bind");
        check_listening_unix_stream(listener.as_raw_fd()).expect("a listening socket passes");

        let (a, _b) = UnixStream::pair().expect("socketpair");
        let err = check_listening_unix_stream(a.as_raw_fd()).expect_err("a connected stream");
        assert!(err.to_string().contains("not listening"), "{err}");

        let d = UnixDatagram::unbound().expect("datagram");
        let err = check_listening_unix_stream(d.as_raw_fd()).expect_err("a datagram socket");
        assert!(err.to_string().contains("type"), "{err}");

        let tcp = std::net::TcpListener::bind("127.0.0.1:0").expect("tcp");
        let err = check_listening_unix_stream(tcp.as_raw_fd()).expect_err("a TCP listener");
        assert!(err.to_string().contains("address family"), "{err}");
        check_listening_tcp(tcp.as_raw_fd()).expect("a TCP listener passes as tcp");
        let err = check_listening_tcp(listener.as_raw_fd()).expect_err("a Unix listener as tcp");
        assert!(err.to_string().contains("named tcp"), "{err}");

        let file =
            std::fs::File::open(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml")).expect("open");
        let err = check_listening_unix_stream(file.as_raw_fd()).expect_err("a file");
        assert!(err.to_string().contains("not a socket"), "{err}");
    }
}
