//! One connection's TLS session: rustls sealing and opening records in
//! user space, then, where the kernel can, handing its keys to the kernel
//! (kernel TLS) so that the socket carries plaintext for this process and
//! splice and sendfile keep working on it.

use std::io::{Read, Write};
use std::os::fd::BorrowedFd;
use std::sync::Arc;

use rustls::ConnectionTrafficSecrets;

use super::records::RecordCursor;
use super::Trust;
use crate::ktls::{self, Cipher, KeyInfo, TrafficKeys};

/// Whether sessions are handed to the kernel once their handshake is done.
#[derive(Debug, Clone)]
pub(crate) enum KernelUse {
    /// No: this kernel has no TLS offload.
    Never,
    /// Yes, when the suite agreed is one of these (the probe's answer).
    Offload(Arc<[Cipher]>),
    /// Where the kernel has no TLS, tests rehearse the hand-over: it
    /// waits for the same moment and checks the same conditions, then
    /// goes on in user space (RINGXFER_KTLS_REHEARSAL=1).
    Rehearsal,
}

/// What became of a session handed over.
pub(crate) enum HandedOver {
    /// The kernel seals and opens records from here on: to this process
    /// the socket carries plaintext. The suite, for the log.
    Kernel { suite: String },
    /// A rehearsal: every condition of a hand-over held; the session goes
    /// on in user space.
    Rehearsed(Box<Session>),
}

/// One connection's TLS: ciphertext in and out on one side, plaintext on
/// the other. Records are sealed and opened where these are called.
pub struct Session {
    conn: rustls::Connection,
    trust: Arc<Trust>,
    /// Where the records received begin and end.
    records: RecordCursor,
    /// Ciphertext opened here after the handshake: a kernel taking the
    /// session over would not see those records.
    after_handshake: usize,
    kernel: KernelUse,
}

impl Session {
    pub(super) fn new(
        mut conn: rustls::Connection,
        trust: Arc<Trust>,
        kernel: KernelUse,
    ) -> Session {
        // Plaintext written before the handshake ends waits in rustls (a
        // push's Hello and Put): no limit, the caller bounds what it writes.
        conn.set_buffer_limit(None);
        Session {
            conn,
            trust,
            records: RecordCursor::default(),
            after_handshake: 0,
            kernel,
        }
    }

    /// Takes ciphertext received, and hands the plaintext it opens to
    /// `plain` (which says how much it took; less than offered stops).
    /// Returns the ciphertext bytes used: the rest is offered again later,
    /// once `plain` has room. An error is a TLS failure: the connection ends.
    pub fn receive(
        &mut self,
        mut cipher: &[u8],
        plain: &mut dyn FnMut(&[u8]) -> usize,
    ) -> Result<usize, String> {
        let offered = cipher.len();
        loop {
            if !self.drain_plain(plain)? {
                break;
            }
            if cipher.is_empty() {
                break;
            }
            // While the handshake lasts, one record at a time: the one
            // that ends it is the last rustls takes before the kernel may.
            let handshaking = self.conn.is_handshaking();
            let mut piece = match handshaking {
                true => &cipher[..cipher.len().min(self.records.to_boundary())],
                false => cipher,
            };
            match self.conn.read_tls(&mut piece) {
                Ok(0) => break,
                Ok(n) => {
                    self.records.advance(&cipher[..n]);
                    if !handshaking {
                        self.after_handshake += n;
                    }
                    cipher = &cipher[n..];
                }
                // rustls holds as much as it will: the caller offers the
                // rest once the plaintext is taken.
                Err(e) if e.kind() == std::io::ErrorKind::Other => break,
                Err(e) => return Err(format!("TLS: {e}")),
            }
            self.conn
                .process_new_packets()
                .map_err(|e| format!("TLS: {e}"))?;
        }
        Ok(offered - cipher.len())
    }

    /// Hands opened plaintext to `plain`; false once it takes less than
    /// offered.
    fn drain_plain(&mut self, plain: &mut dyn FnMut(&[u8]) -> usize) -> Result<bool, String> {
        let mut chunk = [0u8; 16 << 10];
        loop {
            let n = match self.conn.reader().read(&mut chunk) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(true),
                // close_notify: nothing more will come.
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(true),
                Err(e) => return Err(format!("TLS: {e}")),
            };
            if n == 0 {
                return Ok(true);
            }
            let took = plain(&chunk[..n]);
            if took < n {
                return Err("TLS: more plaintext arrived than the connection can hold".into());
            }
        }
    }

    /// Seals `plain` to be sent (queued in the session until the
    /// handshake is done).
    pub fn send(&mut self, plain: &[u8]) -> Result<(), String> {
        self.conn
            .writer()
            .write_all(plain)
            .map_err(|e| format!("TLS: {e}"))
    }

    /// Moves every record ready to go out to the end of `out`.
    pub fn pending(&mut self, out: &mut Vec<u8>) -> Result<(), String> {
        while self.conn.wants_write() {
            self.conn.write_tls(out).map_err(|e| format!("TLS: {e}"))?;
        }
        Ok(())
    }

    /// The handshake is done.
    pub fn established(&self) -> bool {
        !self.conn.is_handshaking()
    }

    /// The `[[peer]]` name of the other end, once its certificate is in.
    pub fn peer_name(&self) -> Option<String> {
        let certs = self.conn.peer_certificates()?;
        self.trust.name_of(certs.first()?).map(str::to_string)
    }

    /// The cipher suite, once agreed ("TLS13_AES_128_GCM_SHA256").
    pub fn suite(&self) -> Option<String> {
        self.conn
            .negotiated_cipher_suite()
            .map(|s| format!("{:?}", s.suite()))
    }

    /// At most this many bytes may be read from the socket next (None:
    /// any number): while the handshake lasts, up to the end of the record
    /// under way (see records.rs).
    pub(crate) fn read_limit(&self) -> Option<usize> {
        self.conn
            .is_handshaking()
            .then(|| self.records.to_boundary())
    }

    /// The handshake is done and the kernel is to take the session over:
    /// the caller calls `hand_over` once nothing is in flight on the
    /// socket, and reads nothing from it before.
    pub(crate) fn wants_kernel(&self) -> bool {
        if self.conn.is_handshaking() {
            return false;
        }
        match &self.kernel {
            KernelUse::Never => false,
            KernelUse::Rehearsal => true,
            KernelUse::Offload(ciphers) => self.cipher().is_some_and(|c| ciphers.contains(&c)),
        }
    }

    /// The agreed suite's cipher.
    fn cipher(&self) -> Option<Cipher> {
        use rustls::CipherSuite as S;
        match self.conn.negotiated_cipher_suite()?.suite() {
            S::TLS13_AES_128_GCM_SHA256 => Some(Cipher::Aes128Gcm),
            S::TLS13_AES_256_GCM_SHA384 => Some(Cipher::Aes256Gcm),
            S::TLS13_CHACHA20_POLY1305_SHA256 => Some(Cipher::Chacha20Poly1305),
            _ => None,
        }
    }

    /// Hands the session to the kernel for `sock` (see `wants_kernel`).
    /// The caller holds no ciphertext unopened and has nothing unsent and
    /// no operation on the socket in flight; the session checks what is
    /// its own to know: no record read in part, no record unsent, no
    /// plaintext opened and not taken. An error ends the connection.
    pub(crate) fn hand_over(
        mut self: Box<Self>,
        sock: BorrowedFd<'_>,
    ) -> Result<HandedOver, String> {
        let state = self
            .conn
            .process_new_packets()
            .map_err(|e| format!("TLS: {e}"))?;
        let unsent = self.conn.wants_write();
        let untaken = state.plaintext_bytes_to_read();
        if !self.records.at_boundary() || unsent || untaken > 0 || self.after_handshake > 0 {
            return Err(format!(
                "TLS: not handed to the kernel: {} bytes of records read after the handshake, \
                 a record read in part: {}, records unsent: {unsent}, {untaken} bytes opened \
                 and not taken",
                self.after_handshake,
                !self.records.at_boundary(),
            ));
        }
        if matches!(self.kernel, KernelUse::Rehearsal) {
            self.kernel = KernelUse::Never;
            return Ok(HandedOver::Rehearsed(self));
        }
        let suite = self.suite().unwrap_or_default();
        let (tx, rx) = self.kernel_keys()?;
        ktls::install(sock, &tx, &rx)?;
        Ok(HandedOver::Kernel { suite })
    }

    /// The session's keys of both ways, as the kernel takes them.
    pub(crate) fn kernel_keys(self) -> Result<(KeyInfo, KeyInfo), String> {
        let secrets = self
            .conn
            .dangerous_extract_secrets()
            .map_err(|e| format!("TLS: taking the keys for the kernel: {e}"))?;
        let tx = key_info(secrets.tx.0, &secrets.tx.1)?;
        let rx = key_info(secrets.rx.0, &secrets.rx.1)?;
        Ok((tx, rx))
    }
}

/// One direction's keys in the kernel's struct.
fn key_info(seq: u64, secrets: &ConnectionTrafficSecrets) -> Result<KeyInfo, String> {
    let (cipher, key, iv) = match secrets {
        ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (Cipher::Aes128Gcm, key, iv),
        ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (Cipher::Aes256Gcm, key, iv),
        ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => {
            (Cipher::Chacha20Poly1305, key, iv)
        }
        _ => return Err("TLS: a cipher the kernel does not take".into()),
    };
    KeyInfo::new(&TrafficKeys {
        cipher,
        key: key.as_ref(),
        iv: iv.as_ref(),
        seq,
    })
    .map_err(|e| format!("TLS: {e}"))
}
