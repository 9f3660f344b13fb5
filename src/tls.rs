//! TLS 1.3 between daemons (host to host), with rustls. Every use of
//! rustls is in this file, behind [`TlsSetup`] and [`Session`], so that the
//! engine sees bytes in and bytes out and an upgrade of rustls (whose
//! connection API changes in 0.24) touches nothing else.
//!
//! Trust is mutual and pinned: each daemon has a certificate and key (a
//! self-signed pair made by `ringxferd --init-keys`), and accepts a peer,
//! as client or as server, only if the SHA-256 of the certificate it
//! presents is one of the `[[peer]]` pins of its config file. No CA, no
//! host names: a pin names exactly one key, as an SSH known-hosts line does.

use std::fmt;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    ClientConfig, ClientConnection, DigitallySignedStruct, DistinguishedName, ServerConfig,
    ServerConnection, SignatureScheme,
};

/// The SHA-256 of a certificate (DER), which peers are pinned by; written
/// `sha256:` and 64 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Pin([u8; 32]);

impl Pin {
    /// The pin of a certificate, from its DER bytes.
    pub fn of(cert_der: &[u8]) -> Pin {
        let digest = ring::digest::digest(&ring::digest::SHA256, cert_der);
        let mut out = [0; 32];
        out.copy_from_slice(digest.as_ref());
        Pin(out)
    }
}

impl fmt::Display for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("sha256:")?;
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::str::FromStr for Pin {
    type Err = String;

    fn from_str(text: &str) -> Result<Pin, String> {
        let bad = || {
            format!("{text:?} is not a pin: write sha256: and the 64 hex digits `ringxferd --init-keys` printed")
        };
        let hex = text.strip_prefix("sha256:").ok_or_else(bad)?;
        if hex.len() != 64 {
            return Err(bad());
        }
        let mut out = [0; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(Pin(out))
    }
}

/// The daemons a daemon trusts: their names (for the log) and pins.
#[derive(Debug, Clone, Default)]
pub struct Trust {
    pub peers: Vec<(String, Pin)>,
}

impl Trust {
    /// The name of the peer pinned to `cert`, if one is.
    fn name_of(&self, cert: &CertificateDer<'_>) -> Option<&str> {
        let pin = Pin::of(cert.as_ref());
        self.peers
            .iter()
            .find(|(_, p)| *p == pin)
            .map(|(name, _)| name.as_str())
    }
}

/// What a daemon speaks TLS with: both sides' configurations.
pub struct TlsSetup {
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
    /// This daemon's own pin, for the log and `--check`.
    pub own: Pin,
    trust: Arc<Trust>,
    /// How records are sealed, for the note of each push.
    pub note: String,
}

impl fmt::Debug for TlsSetup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "TlsSetup({}, {} peers)",
            self.own,
            self.trust.peers.len()
        )
    }
}

/// The one crypto provider: ring, TLS 1.3's three suites.
fn provider() -> Arc<CryptoProvider> {
    // Deprecated in 0.23.48 only for its lack of post-quantum key exchange,
    // which only aws-lc-rs offers; ring builds here without a C toolchain
    // of 400 files (see ARCHITECTURE.md).
    #[allow(deprecated)]
    Arc::new(rustls::crypto::ring::default_provider())
}

impl TlsSetup {
    /// Reads the certificate (PEM, the first one) and key (PEM) and trusts
    /// the peers of `trust`.
    pub fn load(cert: &Path, key: &Path, trust: Trust) -> Result<TlsSetup, String> {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .and_then(|it| it.collect::<Result<_, _>>())
            .map_err(|e| format!("tls_cert {}: {e}", cert.display()))?;
        let Some(first) = certs.first() else {
            return Err(format!("tls_cert {}: holds no certificate", cert.display()));
        };
        let own = Pin::of(first.as_ref());
        let key = PrivateKeyDer::from_pem_file(key)
            .map_err(|e| format!("tls_key {}: {e}", key.display()))?;
        let trust = Arc::new(trust);
        let verifier = Arc::new(Pinned {
            trust: Arc::clone(&trust),
            provider: provider(),
        });
        let versions = &[&rustls::version::TLS13];
        let server = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(versions)
            .map_err(|e| format!("TLS: {e}"))?
            .with_client_cert_verifier(Arc::clone(&verifier) as Arc<dyn ClientCertVerifier>)
            .with_single_cert(certs.clone(), key.clone_key())
            .map_err(|e| {
                format!(
                    "tls_key {}: does not fit the certificate: {e}",
                    cert.display()
                )
            })?;
        let client = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(versions)
            .map_err(|e| format!("TLS: {e}"))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_auth_cert(certs, key)
            .map_err(|e| format!("tls_key: does not fit the certificate: {e}"))?;
        Ok(TlsSetup {
            server: Arc::new(server),
            client: Arc::new(client),
            own,
            trust,
            note: "TLS 1.3, sealed in user space".into(),
        })
    }

    /// The same, its pushes' note saying `note`.
    pub fn with_note(self, note: String) -> TlsSetup {
        TlsSetup { note, ..self }
    }

    /// A session for a connection another daemon made to this one.
    pub fn accept(&self) -> Result<Session, String> {
        ServerConnection::new(Arc::clone(&self.server))
            .map(|c| Session::new(rustls::Connection::Server(c), Arc::clone(&self.trust)))
            .map_err(|e| format!("TLS: {e}"))
    }

    /// A session for a connection this daemon made to another.
    pub fn connect(&self) -> Result<Session, String> {
        // No name is checked (the pin is): rustls wants one for SNI.
        let name = ServerName::try_from("ringxferd").map_err(|e| format!("TLS: {e}"))?;
        ClientConnection::new(Arc::clone(&self.client), name)
            .map(|c| Session::new(rustls::Connection::Client(c), Arc::clone(&self.trust)))
            .map_err(|e| format!("TLS: {e}"))
    }
}

/// Writes a fresh key and self-signed certificate into `dir` (key.pem,
/// mode 0600, and cert.pem) and returns the certificate's pin.
pub fn init_keys(dir: &Path) -> Result<Pin, String> {
    use std::os::unix::fs::OpenOptionsExt;
    let made = rcgen::generate_simple_self_signed(vec!["ringxferd".to_string()])
        .map_err(|e| format!("cannot make a key: {e}"))?;
    let write = |name: &str, text: String, mode: u32| {
        let path = dir.join(name);
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&path)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .map_err(|e| format!("{}: {e}", path.display()))
    };
    write("key.pem", made.signing_key.serialize_pem(), 0o600)?;
    write("cert.pem", made.cert.pem(), 0o644)?;
    Ok(Pin::of(made.cert.der()))
}

/// Accepts a certificate only if a `[[peer]]` pin names it; the handshake's
/// signatures are then checked as usual against its key.
#[derive(Debug)]
struct Pinned {
    trust: Arc<Trust>,
    provider: Arc<CryptoProvider>,
}

impl Pinned {
    fn check(&self, cert: &CertificateDer<'_>) -> Result<(), rustls::Error> {
        match self.trust.name_of(cert) {
            Some(_) => Ok(()),
            None => Err(rustls::Error::General(format!(
                "certificate {} is not pinned by any [[peer]]",
                Pin::of(cert.as_ref())
            ))),
        }
    }

    fn signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.check(end_entity)
            .map(|()| ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 is not spoken".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.schemes()
    }
}

impl ClientCertVerifier for Pinned {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.check(end_entity)
            .map(|()| ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 is not spoken".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.schemes()
    }
}

/// One connection's TLS: ciphertext in and out on one side, plaintext on
/// the other. Records are sealed and opened where these are called.
pub struct Session {
    conn: rustls::Connection,
    trust: Arc<Trust>,
}

impl Session {
    fn new(mut conn: rustls::Connection, trust: Arc<Trust>) -> Session {
        // Plaintext written before the handshake ends waits in rustls (a
        // push's Hello and Put): no limit, the caller bounds what it writes.
        conn.set_buffer_limit(None);
        Session { conn, trust }
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
            match self.conn.read_tls(&mut cipher) {
                Ok(0) => break,
                Ok(_) => {}
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
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A setup with fresh keys in a temporary directory, trusting `peers`.
    fn setup(peers: &[(&str, Pin)]) -> (TlsSetup, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("tempdir");
        init_keys(dir.path()).expect("keys");
        let trust = Trust {
            peers: peers.iter().map(|(n, p)| (n.to_string(), *p)).collect(),
        };
        let s = TlsSetup::load(
            &dir.path().join("cert.pem"),
            &dir.path().join("key.pem"),
            trust,
        )
        .expect("loads");
        (s, dir)
    }

    /// Moves records between the two sessions until neither has any;
    /// what each opens is appended to its `got`.
    fn exchange(
        a: &mut Session,
        b: &mut Session,
        got: &mut (Vec<u8>, Vec<u8>),
    ) -> Result<(), String> {
        for _ in 0..16 {
            let (mut ab, mut ba) = (Vec::new(), Vec::new());
            a.pending(&mut ab)?;
            b.pending(&mut ba)?;
            if ab.is_empty() && ba.is_empty() {
                return Ok(());
            }
            let used = b.receive(&ab, &mut |p| {
                got.1.extend_from_slice(p);
                p.len()
            })?;
            assert_eq!(used, ab.len());
            a.receive(&ba, &mut |p| {
                got.0.extend_from_slice(p);
                p.len()
            })?;
        }
        Err("the exchange did not settle".into())
    }

    #[test]
    fn a_pin_reads_back_as_written_and_bad_ones_are_named() {
        let pin = Pin::of(b"certificate bytes");
        assert_eq!(pin.to_string().parse::<Pin>(), Ok(pin));
        assert!(pin.to_string().starts_with("sha256:"));
        assert_eq!(pin.to_string().len(), 7 + 64);
        for bad in [
            "",
            "sha256:",
            "sha1:00",
            &format!("sha256:{}", "zz".repeat(32)),
        ] {
            let err = bad.parse::<Pin>().unwrap_err();
            assert!(err.contains("is not a pin"), "{err}");
        }
    }

    #[test]
    fn pinned_daemons_talk_and_see_each_others_names() {
        let (probe_a, dir_a) = setup(&[]);
        let (probe_b, dir_b) = setup(&[]);
        let reload = |dir: &tempfile::TempDir, peers: Vec<(String, Pin)>| {
            TlsSetup::load(
                &dir.path().join("cert.pem"),
                &dir.path().join("key.pem"),
                Trust { peers },
            )
            .expect("loads")
        };
        let a = reload(&dir_a, vec![("b".into(), probe_b.own)]);
        let b = reload(&dir_b, vec![("a".into(), probe_a.own)]);
        let (mut client, mut server) = (a.connect().expect("client"), b.accept().expect("server"));
        client
            .send(b"hello before the handshake ends")
            .expect("queued");
        let mut got = (Vec::new(), Vec::new());
        exchange(&mut client, &mut server, &mut got).expect("handshake");
        assert!(client.established() && server.established());
        assert_eq!(got.1, b"hello before the handshake ends");
        assert_eq!(server.peer_name().as_deref(), Some("a"));
        assert_eq!(client.peer_name().as_deref(), Some("b"));
        let big = vec![7u8; 300_000];
        server.send(&big).expect("sealed");
        exchange(&mut client, &mut server, &mut got).expect("data");
        assert_eq!(got.0, big);
    }

    #[test]
    fn a_key_nobody_pinned_is_refused() {
        let (stranger, _ds) = setup(&[]);
        // The server trusts only the stranger; the client trusts the server.
        let (b, _db) = setup(&[("stranger", stranger.own)]);
        let (a, _da) = setup(&[("b", b.own)]);
        let (mut client, mut server) = (a.connect().expect("client"), b.accept().expect("server"));
        client.send(b"let me in").expect("queued");
        let mut got = (Vec::new(), Vec::new());
        let err = exchange(&mut client, &mut server, &mut got).unwrap_err();
        let want = format!("certificate {} is not pinned by any [[peer]]", a.own);
        assert!(err.contains(&want), "{err}");
        assert!(got.1.is_empty(), "nothing reached the server's side");
    }
}
