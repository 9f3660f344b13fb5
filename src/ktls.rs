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
use std::os::fd::AsRawFd;

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
    if let Err(e) = set_tls_ulp(&pair.0) {
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

fn set_tls_ulp(sock: &TcpStream) -> io::Result<()> {
    const ULP: &[u8] = b"tls";
    // SAFETY: the descriptor is open for the call (borrowed from `sock`),
    // and the kernel reads ULP.len() bytes of the static name.
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
    set_tls_ulp(&sock)?;
    for direction in [libc::TLS_TX, libc::TLS_RX] {
        match cipher {
            Cipher::Aes128Gcm => set_key::<libc::tls12_crypto_info_aes_gcm_128>(
                &sock,
                direction,
                libc::TLS_CIPHER_AES_GCM_128,
            )?,
            Cipher::Aes256Gcm => set_key::<libc::tls12_crypto_info_aes_gcm_256>(
                &sock,
                direction,
                libc::TLS_CIPHER_AES_GCM_256,
            )?,
            Cipher::Chacha20Poly1305 => set_key::<libc::tls12_crypto_info_chacha20_poly1305>(
                &sock,
                direction,
                libc::TLS_CIPHER_CHACHA20_POLY1305,
            )?,
        }
    }
    Ok(())
}

/// Gives `sock` an all-zero TLS 1.3 key of the cipher whose crypto-info
/// struct is `T`, for sending (TLS_TX) or receiving (TLS_RX).
fn set_key<T: CryptoInfo>(sock: &TcpStream, direction: libc::c_int, cipher: u16) -> io::Result<()> {
    let info = T::zero(libc::TLS_1_3_VERSION, cipher);
    // SAFETY: the descriptor is open for the call; the kernel reads
    // size_of::<T>() bytes of `info`, which lives on this frame until the
    // call returns.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_TLS,
            direction,
            std::ptr::from_ref(&info).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A kernel crypto-info struct: its header, then key material.
trait CryptoInfo: Sized {
    fn zero(version: u16, cipher: u16) -> Self;
}

macro_rules! crypto_info {
    ($($t:ty),*) => {$(
        impl CryptoInfo for $t {
            fn zero(version: u16, cipher: u16) -> Self {
                // SAFETY: a plain C struct of integers and byte arrays:
                // all zeroes is a valid value of it.
                let mut info: $t = unsafe { std::mem::zeroed() };
                info.info.version = version;
                info.info.cipher_type = cipher;
                info
            }
        }
    )*};
}

crypto_info!(
    libc::tls12_crypto_info_aes_gcm_128,
    libc::tls12_crypto_info_aes_gcm_256,
    libc::tls12_crypto_info_chacha20_poly1305
);

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

    #[test]
    fn key_structs_start_with_the_version_and_cipher() {
        let info = <libc::tls12_crypto_info_aes_gcm_128 as CryptoInfo>::zero(
            libc::TLS_1_3_VERSION,
            libc::TLS_CIPHER_AES_GCM_128,
        );
        assert_eq!(info.info.version, 0x0304);
        assert_eq!(info.info.cipher_type, 51);
        assert!(info.key.iter().all(|b| *b == 0));
    }
}
