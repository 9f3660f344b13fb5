//! Whether this kernel can take over TLS records (kernel TLS: TCP's `tls`
//! upper-layer protocol), and for which TLS 1.3 ciphers. Transfers between
//! hosts (issue 18) hand a finished handshake's keys to the kernel where it
//! can, so that sendfile and splice keep working on an encrypted socket,
//! and encrypt in user space where it cannot; `ringxferd --check` says
//! which.
//!
//! The answer is the kernel's: a loopback TCP connection asks for the
//! `tls` ULP, then, on a fresh connection each, for a send and a receive
//! key of each cipher (all zeroes: nothing is ever sent with them). A
//! kernel without the module says ENOENT at the first step, one that lacks
//! a cipher's code at the second.

use std::io;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

mod keys;
pub(crate) use keys::{install, KeyInfo, TrafficKeys};

/// A TLS 1.3 cipher suite the kernel may offload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cipher {
    Aes128Gcm,
    Aes256Gcm,
    Chacha20Poly1305,
}

impl Cipher {
    pub(crate) const ALL: [Cipher; 3] = [
        Cipher::Aes128Gcm,
        Cipher::Aes256Gcm,
        Cipher::Chacha20Poly1305,
    ];

    /// Its name as TLS 1.3 calls it.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Cipher::Aes128Gcm => "AES-128-GCM",
            Cipher::Aes256Gcm => "AES-256-GCM",
            Cipher::Chacha20Poly1305 => "ChaCha20-Poly1305",
        }
    }
}

/// What the probe found.
#[derive(Debug)]
pub(crate) enum KernelTls {
    /// No kernel TLS at all: why, in words, and the OS error.
    Unavailable {
        step: &'static str,
        error: io::Error,
    },
    /// The `tls` ULP is there; each cipher's send and receive offload, or
    /// the error setting it.
    Available {
        ciphers: Vec<(Cipher, io::Result<()>)>,
    },
}

/// Asks the kernel (see the module's documentation). Blocks for a loopback
/// connect and accept: call it at start-up or from `--check`, never on the
/// loop.
pub(crate) fn probe() -> KernelTls {
    let unavailable = |step, error| KernelTls::Unavailable { step, error };
    let pair = match loopback_pair() {
        Ok(pair) => pair,
        Err(e) => return unavailable("making a loopback TCP connection to probe with", e),
    };
    if let Err(e) = set_tls_ulp(pair.0.as_fd()) {
        return unavailable(
            "setsockopt(TCP_ULP, \"tls\") on a loopback TCP connection",
            e,
        );
    }
    let ciphers = Cipher::ALL
        .into_iter()
        .map(|cipher| (cipher, offloads(cipher)))
        .collect();
    KernelTls::Available { ciphers }
}

/// A connected pair of loopback TCP sockets: the connecting end and the
/// accepted one.
fn loopback_pair() -> io::Result<(TcpStream, TcpStream)> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    let near = TcpStream::connect(listener.local_addr()?)?;
    let (far, _) = listener.accept()?;
    Ok((near, far))
}

/// Gives the TCP socket `sock` the `tls` upper-layer protocol, which the
/// keys are set on after.
fn set_tls_ulp(sock: BorrowedFd<'_>) -> io::Result<()> {
    const ULP: &[u8] = b"tls";
    // SAFETY: the descriptor is open for the call (borrowed), and the
    // kernel reads ULP.len() bytes of the static name.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_TCP,
            libc::TCP_ULP,
            ULP.as_ptr().cast(),
            ULP.len() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Whether a fresh connection takes `cipher`'s send and receive keys.
fn offloads(cipher: Cipher) -> io::Result<()> {
    let (sock, _far) = loopback_pair()?;
    set_tls_ulp(sock.as_fd())?;
    let zero = KeyInfo::zero(cipher);
    for direction in [libc::TLS_TX, libc::TLS_RX] {
        set_key(sock.as_fd(), direction, &zero)?;
    }
    Ok(())
}

/// Gives `sock` (with the `tls` ULP) the key of `info`, for sending
/// (TLS_TX) or receiving (TLS_RX).
fn set_key(sock: BorrowedFd<'_>, direction: libc::c_int, info: &KeyInfo) -> io::Result<()> {
    let (ptr, len) = info.raw();
    // SAFETY: the descriptor is open for the call (borrowed); the kernel
    // reads `len` bytes at `ptr`, the crypto-info struct `info` borrows,
    // which outlives the call.
    let rc = unsafe { libc::setsockopt(sock.as_raw_fd(), libc::SOL_TLS, direction, ptr, len) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_answers_for_this_kernel_and_names_the_step_that_failed() {
        match probe() {
            KernelTls::Unavailable { step, error } => {
                assert!(
                    step.contains("TCP_ULP") || step.contains("loopback"),
                    "{step}"
                );
                assert!(error.raw_os_error().is_some(), "{error}");
            }
            KernelTls::Available { ciphers } => {
                assert_eq!(ciphers.len(), Cipher::ALL.len());
            }
        }
    }
}
