//! A finished TLS 1.3 session's keys, in the structs the kernel takes them
//! in, and their hand-over to a socket (the `tls` ULP, then TLS_TX and
//! TLS_RX). From then on the kernel seals what is sent and opens what is
//! received, so splice and sendfile work on the encrypted socket.
//!
//! The kernel makes each record's nonce as TLS 1.3 does (RFC 8446 5.3):
//! the connection's 12-byte IV, its last 8 bytes XOR the record's sequence
//! number. For AES-GCM the struct carries the IV as a 4-byte `salt` and an
//! 8-byte `iv`; ChaCha20-Poly1305 takes all 12 bytes as `iv`. `rec_seq`
//! is the sequence number of the next record, big-endian.

use std::io;
use std::os::fd::BorrowedFd;

use super::{set_key, set_tls_ulp, Cipher};

/// One direction's traffic keys, as a TLS library hands them over.
pub(crate) struct TrafficKeys<'a> {
    pub cipher: Cipher,
    pub key: &'a [u8],
    /// The connection's nonce base (12 bytes).
    pub iv: &'a [u8],
    /// The sequence number of the next record this way.
    pub seq: u64,
}

/// The kernel's crypto-info struct of one direction.
pub(crate) enum KeyInfo {
    Aes128Gcm(libc::tls12_crypto_info_aes_gcm_128),
    Aes256Gcm(libc::tls12_crypto_info_aes_gcm_256),
    Chacha20Poly1305(libc::tls12_crypto_info_chacha20_poly1305),
}

/// TLS 1.3's nonce length.
const NONCE: usize = 12;

impl KeyInfo {
    /// The struct for `keys`; an error names a key or IV of the wrong
    /// length for its cipher.
    pub(crate) fn new(keys: &TrafficKeys<'_>) -> Result<KeyInfo, String> {
        let iv: &[u8; NONCE] = keys.iv.try_into().map_err(|_| {
            format!(
                "a {} IV of {} bytes, not {NONCE}",
                keys.cipher.name(),
                keys.iv.len()
            )
        })?;
        let mut info = KeyInfo::zero(keys.cipher);
        let seq = keys.seq.to_be_bytes();
        let (key, salt, explicit, rec_seq) = info.fields();
        if key.len() != keys.key.len() {
            return Err(format!(
                "a {} key of {} bytes, not {}",
                keys.cipher.name(),
                keys.key.len(),
                key.len()
            ));
        }
        key.copy_from_slice(keys.key);
        salt.copy_from_slice(&iv[..salt.len()]);
        explicit.copy_from_slice(&iv[salt.len()..]);
        rec_seq.copy_from_slice(&seq);
        Ok(info)
    }

    /// An all-zero key of `cipher` (what the probe offers the kernel).
    pub(crate) fn zero(cipher: Cipher) -> KeyInfo {
        let v = libc::TLS_1_3_VERSION;
        match cipher {
            Cipher::Aes128Gcm => {
                KeyInfo::Aes128Gcm(CryptoInfo::zero(v, libc::TLS_CIPHER_AES_GCM_128))
            }
            Cipher::Aes256Gcm => {
                KeyInfo::Aes256Gcm(CryptoInfo::zero(v, libc::TLS_CIPHER_AES_GCM_256))
            }
            Cipher::Chacha20Poly1305 => {
                KeyInfo::Chacha20Poly1305(CryptoInfo::zero(v, libc::TLS_CIPHER_CHACHA20_POLY1305))
            }
        }
    }

    /// The key, the salt, the IV after the salt, and the record sequence.
    fn fields(&mut self) -> (&mut [u8], &mut [u8], &mut [u8], &mut [u8]) {
        match self {
            KeyInfo::Aes128Gcm(i) => (&mut i.key, &mut i.salt, &mut i.iv, &mut i.rec_seq),
            KeyInfo::Aes256Gcm(i) => (&mut i.key, &mut i.salt, &mut i.iv, &mut i.rec_seq),
            KeyInfo::Chacha20Poly1305(i) => (&mut i.key, &mut i.salt, &mut i.iv, &mut i.rec_seq),
        }
    }

    /// The struct's address and size, for setsockopt.
    pub(super) fn raw(&self) -> (*const libc::c_void, libc::socklen_t) {
        fn of<T>(t: &T) -> (*const libc::c_void, libc::socklen_t) {
            (
                std::ptr::from_ref(t).cast(),
                std::mem::size_of::<T>() as libc::socklen_t,
            )
        }
        match self {
            KeyInfo::Aes128Gcm(i) => of(i),
            KeyInfo::Aes256Gcm(i) => of(i),
            KeyInfo::Chacha20Poly1305(i) => of(i),
        }
    }

    /// The key, and the nonce of record `seq` as the kernel makes it from
    /// this struct: what the tests check against a TLS library's records.
    #[cfg(test)]
    pub(crate) fn key_and_nonce(&mut self, seq: u64) -> (Vec<u8>, [u8; NONCE]) {
        let (key, salt, explicit, rec_seq) = self.fields();
        let mut nonce = [0u8; NONCE];
        nonce[..salt.len()].copy_from_slice(salt);
        nonce[salt.len()..].copy_from_slice(explicit);
        let first = u64::from_be_bytes(rec_seq.try_into().expect("8 bytes"));
        for (n, s) in nonce[4..].iter_mut().zip((first + seq).to_be_bytes()) {
            *n ^= s;
        }
        (key.to_vec(), nonce)
    }
}

/// Hands `sock`, a connected TCP socket with nothing unread of the
/// session's records and nothing unsent, to the kernel's TLS: sealing with
/// `tx`, opening with `rx`. An error names the step; the socket is then
/// neither user-space TLS nor kernel TLS, and must be closed.
pub(crate) fn install(sock: BorrowedFd<'_>, tx: &KeyInfo, rx: &KeyInfo) -> Result<(), String> {
    let step = |what: &str, e: io::Error| format!("handing TLS to the kernel: {what}: {e}");
    set_tls_ulp(sock).map_err(|e| step("setsockopt(TCP_ULP, \"tls\")", e))?;
    set_key(sock, libc::TLS_TX, tx).map_err(|e| step("setsockopt(TLS_TX)", e))?;
    set_key(sock, libc::TLS_RX, rx).map_err(|e| step("setsockopt(TLS_RX)", e))
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
    fn gcm_keys_split_the_iv_into_salt_and_iv_and_carry_the_sequence() {
        let iv: Vec<u8> = (1..=12).collect();
        let key = [9u8; 16];
        let keys = TrafficKeys {
            cipher: Cipher::Aes128Gcm,
            key: &key,
            iv: &iv,
            seq: 0x0102,
        };
        let KeyInfo::Aes128Gcm(info) = KeyInfo::new(&keys).expect("fits") else {
            panic!("another cipher's struct");
        };
        assert_eq!((info.info.version, info.info.cipher_type), (0x0304, 51));
        assert_eq!(info.salt, [1, 2, 3, 4]);
        assert_eq!(info.iv, [5, 6, 7, 8, 9, 10, 11, 12]);
        assert_eq!(info.key, key);
        assert_eq!(info.rec_seq, [0, 0, 0, 0, 0, 0, 1, 2]);
    }

    #[test]
    fn chacha_takes_the_whole_iv_and_wrong_lengths_are_named() {
        let iv = [7u8; 12];
        let key = [3u8; 32];
        let keys = TrafficKeys {
            cipher: Cipher::Chacha20Poly1305,
            key: &key,
            iv: &iv,
            seq: 0,
        };
        let KeyInfo::Chacha20Poly1305(info) = KeyInfo::new(&keys).expect("fits") else {
            panic!("another cipher's struct");
        };
        assert_eq!(info.iv, iv);
        let short = TrafficKeys {
            cipher: Cipher::Aes256Gcm,
            key: &key[..16],
            iv: &iv,
            seq: 0,
        };
        let err = KeyInfo::new(&short).err().expect("refused");
        assert!(err.contains("AES-256-GCM key of 16 bytes, not 32"), "{err}");
    }
}
