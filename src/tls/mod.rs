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
use std::io::Write;
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

mod records;
mod session;
pub use session::Session;
pub(crate) use session::{HandedOver, KernelUse};

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
    /// Whether sessions go to the kernel once their handshake is done.
    kernel: KernelUse,
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

/// The one crypto provider: ring, TLS 1.3's three suites, AES-128-GCM
/// first (ring's own order puts AES-256 first): the cipher OpenSSH's
/// aes128-gcm and the benches' peers use, so comparisons are like for like.
/// Measured over a veth pair it saved no CPU that showed (sealing with
/// VAES is a small part of a push's cost), so this is no speed claim.
fn provider() -> Arc<CryptoProvider> {
    // Deprecated in 0.23.48 only for its lack of post-quantum key exchange,
    // which only aws-lc-rs offers; ring builds here without a C toolchain
    // of 400 files (see ARCHITECTURE.md).
    #[allow(deprecated)]
    let mut provider = rustls::crypto::ring::default_provider();
    provider
        .cipher_suites
        .sort_by_key(|s| s.suite() != rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
    Arc::new(provider)
}

impl TlsSetup {
    /// Reads the certificate (PEM, the first one) and key (PEM) and trusts
    /// the peers of `trust`.
    pub fn load(cert: &Path, key: &Path, trust: Trust) -> Result<TlsSetup, String> {
        TlsSetup::load_with(cert, key, trust, provider())
    }

    /// The same, with the suites of `provider`.
    fn load_with(
        cert: &Path,
        key: &Path,
        trust: Trust,
        provider: Arc<CryptoProvider>,
    ) -> Result<TlsSetup, String> {
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
            provider: Arc::clone(&provider),
        });
        let versions = &[&rustls::version::TLS13];
        let mut server = ServerConfig::builder_with_provider(Arc::clone(&provider))
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
        let mut client = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .map_err(|e| format!("TLS: {e}"))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_auth_cert(certs, key)
            .map_err(|e| format!("tls_key: does not fit the certificate: {e}"))?;
        // The kernel may take a session over (session.rs): rustls must let
        // its keys go, and send no tickets after the handshake (records
        // the kernel would have to open as handshake messages; nothing
        // here resumes sessions).
        server.enable_secret_extraction = true;
        server.send_tls13_tickets = 0;
        client.enable_secret_extraction = true;
        Ok(TlsSetup {
            server: Arc::new(server),
            client: Arc::new(client),
            own,
            trust,
            note: "TLS 1.3, sealed in user space".into(),
            kernel: KernelUse::Never,
        })
    }

    /// The same, its sessions going to the kernel as `kernel` says, and
    /// its pushes' note saying `note`.
    pub(crate) fn with_kernel(self, kernel: KernelUse, note: String) -> TlsSetup {
        TlsSetup {
            kernel,
            note,
            ..self
        }
    }

    /// A session for a connection another daemon made to this one.
    pub fn accept(&self) -> Result<Session, String> {
        ServerConnection::new(Arc::clone(&self.server))
            .map(|c| self.session(rustls::Connection::Server(c)))
            .map_err(|e| format!("TLS: {e}"))
    }

    /// A session for a connection this daemon made to another.
    pub fn connect(&self) -> Result<Session, String> {
        // No name is checked (the pin is): rustls wants one for SNI.
        let name = ServerName::try_from("ringxferd").map_err(|e| format!("TLS: {e}"))?;
        ClientConnection::new(Arc::clone(&self.client), name)
            .map(|c| self.session(rustls::Connection::Client(c)))
            .map_err(|e| format!("TLS: {e}"))
    }

    fn session(&self, conn: rustls::Connection) -> Session {
        Session::new(conn, Arc::clone(&self.trust), self.kernel.clone())
    }
}

/// Writes a fresh key and self-signed certificate into `dir` (key.pem,
/// mode 0600, and cert.pem; `dir` made, mode 0700, if missing, as
/// ssh-keygen makes ~/.ssh) and returns the certificate's pin.
pub fn init_keys(dir: &Path) -> Result<Pin, String> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("cannot make the directory {}: {e}", dir.display()))?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ktls::KeyInfo;
    use ring::aead::{
        Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM, AES_256_GCM, CHACHA20_POLY1305,
    };

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
    fn keys_go_into_a_directory_made_for_them_and_are_never_overwritten() {
        use std::os::unix::fs::PermissionsExt;
        let top = tempfile::tempdir().expect("tempdir");
        let dir = top.path().join("etc/ringxferd-keys");
        init_keys(&dir).expect("made with its directory");
        let mode = |p: &Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("key.pem")), 0o600);
        let err = init_keys(&dir).unwrap_err();
        assert!(err.contains("key.pem") && err.contains("exists"), "{err}");
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
        // The cheapest suite to seal, which every kernel TLS offloads.
        assert_eq!(client.suite().as_deref(), Some("TLS13_AES_128_GCM_SHA256"));
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

    /// Two sessions, client and server, pinned to each other, agreeing
    /// on `suite` only.
    fn pair_on(suite: rustls::CipherSuite) -> (Session, Session) {
        let (dir_a, dir_b) = (
            tempfile::tempdir().expect("tempdir"),
            tempfile::tempdir().expect("tempdir"),
        );
        let (pin_a, pin_b) = (
            init_keys(dir_a.path()).expect("keys"),
            init_keys(dir_b.path()).expect("keys"),
        );
        let mut only = (*provider()).clone();
        only.cipher_suites.retain(|s| s.suite() == suite);
        let load = |dir: &tempfile::TempDir, name: &str, pin: Pin| {
            let trust = Trust {
                peers: vec![(name.to_string(), pin)],
            };
            let cert = dir.path().join("cert.pem");
            TlsSetup::load_with(
                &cert,
                &dir.path().join("key.pem"),
                trust,
                Arc::new(only.clone()),
            )
            .expect("loads")
        };
        let (a, b) = (load(&dir_a, "b", pin_b), load(&dir_b, "a", pin_a));
        (a.connect().expect("client"), b.accept().expect("server"))
    }

    /// The kernel's sealing and opening of one record (RFC 8446 5.2),
    /// done with ring from the struct handed to the kernel.
    fn kernel_aead(suite: rustls::CipherSuite, info: &mut KeyInfo) -> (LessSafeKey, Nonce) {
        use rustls::CipherSuite as S;
        let alg = match suite {
            S::TLS13_AES_128_GCM_SHA256 => &AES_128_GCM,
            S::TLS13_AES_256_GCM_SHA384 => &AES_256_GCM,
            _ => &CHACHA20_POLY1305,
        };
        let (key, nonce) = info.key_and_nonce(0);
        let key = LessSafeKey::new(UnboundKey::new(alg, &key).expect("key"));
        (key, Nonce::assume_unique_for_key(nonce))
    }

    #[test]
    fn keys_handed_to_the_kernel_open_and_seal_records_as_the_peer_does() {
        use rustls::CipherSuite as S;
        for suite in [
            S::TLS13_AES_128_GCM_SHA256,
            S::TLS13_AES_256_GCM_SHA384,
            S::TLS13_CHACHA20_POLY1305_SHA256,
        ] {
            let (mut client, mut server) = pair_on(suite);
            client.send(b"hello").expect("queued");
            let mut got = (Vec::new(), Vec::new());
            exchange(&mut client, &mut server, &mut got).expect("handshake");
            assert_eq!(got.1, b"hello", "{suite:?}");
            // A record of the server's, held back from the client.
            server.send(b"from the server").expect("sealed");
            let mut record = Vec::new();
            server.pending(&mut record).expect("record");
            let (mut tx, mut rx) = client.kernel_keys().expect("keys");
            // The client's receive key opens it, at sequence 0.
            let (key, nonce) = kernel_aead(suite, &mut rx);
            let (header, body) = record.split_at_mut(5);
            let plain = key
                .open_in_place(nonce, Aad::from(&*header), body)
                .unwrap_or_else(|_| panic!("{suite:?}: the kernel's key does not open the record"));
            assert_eq!(plain, b"from the server\x17", "{suite:?}");
            // Its send key seals what the server opens, at sequence 1 (the
            // client's "hello" was 0).
            let (key, nonce) = kernel_aead(suite, &mut tx);
            let mut body = b"from the client\x17".to_vec();
            let len = u16::try_from(body.len() + key.algorithm().tag_len()).expect("short");
            let mut sealed = vec![0x17, 3, 3];
            sealed.extend_from_slice(&len.to_be_bytes());
            key.seal_in_place_append_tag(nonce, Aad::from(&sealed[..5]), &mut body)
                .expect("sealed");
            sealed.extend_from_slice(&body);
            let mut opened = Vec::new();
            server
                .receive(&sealed, &mut |p| {
                    opened.extend_from_slice(p);
                    p.len()
                })
                .unwrap_or_else(|e| panic!("{suite:?}: {e}"));
            assert_eq!(opened, b"from the client", "{suite:?}");
        }
    }
}
