//! Host to host, at start-up: the TCP listener other daemons connect to and
//! the export directories they write into, opened while the daemon still
//! has the rights it started with (before `drop_after_startup`), and
//! checked, so that a bad setting stops the daemon with its reason rather
//! than refusing every transfer later.

use std::fs::OpenOptions;
use std::net::TcpListener;
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Arc;

use tracing::{info, warn};

use crate::engine::{Export, PeerSetup};
use crate::privileges;
use crate::settings::{keys, ExportSetting, Settings};
use crate::tls::{KernelUse, TlsSetup, Trust};

/// The listener, exports and TLS identity `settings` ask for; None when
/// the daemon talks to no other daemon (no listen_tcp, no tls_cert).
/// `activated`: the TCP socket systemd passed (ringxferd-tcp.socket),
/// which stands for `listen_tcp`.
pub fn open(
    settings: &Settings,
    activated: Option<TcpListener>,
) -> Result<Option<PeerSetup>, String> {
    let tls = tls_setup(settings)?;
    let activated_at = activated.as_ref().and_then(|l| l.local_addr().ok());
    let Some(address) = activated_at.or(settings.listen_tcp) else {
        if !settings.exports.is_empty() {
            info!(
                "[[export]] tables are set but listen_tcp is off: no other daemon can reach them"
            );
        }
        return Ok(tls.map(|tls| PeerSetup {
            listener: None,
            plaintext: false,
            exports: Vec::new(),
            tls: Some(tls),
            bytes_in_flight: settings.peer_bytes_in_flight,
        }));
    };
    let origin = match &activated {
        Some(_) => "systemd's ringxferd-tcp.socket".to_string(),
        None => settings.origin(&keys::LISTEN_TCP).to_string(),
    };
    let plaintext = settings.insecure_plaintext;
    if plaintext && !address.ip().is_loopback() {
        return Err(format!(
            "listen_tcp = {address} ({origin}) is not a loopback address, and insecure_plaintext \
             serves only loopback: anyone on the network could write into the exports"
        ));
    }
    if !plaintext && tls.is_none() {
        return Err(format!(
            "listen_tcp = {address} ({origin}) needs TLS: set tls_cert and tls_key (ringxferd \
             --init-keys DIR makes them) and pin the daemons that may connect in [[peer]] tables; \
             or, for tests on a loopback address only, insecure_plaintext = true"
        ));
    }
    if !plaintext && settings.peers.is_empty() {
        return Err(format!(
            "listen_tcp = {address} ({origin}) with TLS, but no [[peer]] is pinned: every other \
             daemon would be refused"
        ));
    }
    if settings.exports.is_empty() {
        warn!("listen_tcp is on but no [[export]] is set: every file other daemons offer will be refused");
    }
    for e in &settings.exports {
        let unknown = e
            .peers
            .iter()
            .flatten()
            .find(|n| !settings.peers.iter().any(|p| &p.name == *n));
        if let Some(name) = unknown {
            return Err(format!(
                "[[export]] {:?} (line {}): peers names {name:?}, which no [[peer]] table defines",
                e.name, e.line
            ));
        }
    }
    let exports = settings
        .exports
        .iter()
        .map(open_export)
        .collect::<Result<Vec<_>, _>>()?;
    let listener = match activated {
        Some(listener) => listener,
        None => TcpListener::bind(address)
            .map_err(|e| format!("listen_tcp = {address} ({origin}): cannot listen: {e}"))?,
    };
    let bound = listener
        .local_addr()
        .map_or_else(|_| address.to_string(), |a| a.to_string());
    let how = if plaintext {
        "plaintext, insecure_plaintext"
    } else {
        "TLS 1.3, pinned peers"
    };
    info!(address = %bound, exports = exports.len(), "listening for other daemons ({how})");
    Ok(Some(PeerSetup {
        listener: Some(OwnedFd::from(listener)),
        plaintext,
        exports,
        tls,
        bytes_in_flight: settings.peer_bytes_in_flight,
    }))
}

/// The TLS identity and trust, if tls_cert and tls_key are set.
fn tls_setup(settings: &Settings) -> Result<Option<Arc<TlsSetup>>, String> {
    let (cert, key) = match (&settings.tls_cert, &settings.tls_key) {
        (Some(cert), Some(key)) => (cert, key),
        (None, None) => return Ok(None),
        _ => return Err("tls_cert and tls_key go together: set both, or neither".into()),
    };
    let trust = Trust {
        peers: settings
            .peers
            .iter()
            .map(|p| (p.name.clone(), p.pin))
            .collect(),
    };
    let (kernel, note) = kernel_use();
    let setup = TlsSetup::load(cert, key, trust)?.with_kernel(kernel, note);
    info!(pin = %setup.own, peers = settings.peers.len(), transport = %setup.note, "TLS identity for other daemons");
    Ok(Some(Arc::new(setup)))
}

/// Whether sessions go to the kernel once their handshake is done (the
/// probe's answer), and how records are sealed, for the notes of pushes
/// (a push's note says it, as `--check` does).
fn kernel_use() -> (KernelUse, String) {
    use crate::ktls::{probe, KernelTls};
    let rehearse = std::env::var_os("RINGXFER_KTLS_REHEARSAL").is_some_and(|v| v == "1");
    match probe() {
        KernelTls::Available { ciphers } => {
            let offloaded: Vec<_> = ciphers
                .into_iter()
                .filter_map(|(c, r)| r.is_ok().then_some(c))
                .collect();
            if offloaded.is_empty() {
                let note =
                    "TLS 1.3, sealed in user space: the kernel's TLS offloads no TLS 1.3 cipher";
                return (KernelUse::Never, note.into());
            }
            let names: Vec<_> = offloaded.iter().map(|c| c.name()).collect();
            let note = format!(
                "TLS 1.3, sealed by the kernel once the handshake is done (kernel TLS offloads {})",
                names.join(", ")
            );
            (KernelUse::Offload(offloaded.into()), note)
        }
        KernelTls::Unavailable { step, error } => {
            let note = format!(
                "TLS 1.3, sealed in user space: kernel TLS is unavailable ({step}: {error})"
            );
            let kernel = if rehearse {
                KernelUse::Rehearsal
            } else {
                KernelUse::Never
            };
            (kernel, note)
        }
    }
}

/// Opens one export's directory and finds its user.
fn open_export(e: &ExportSetting) -> Result<Export, String> {
    let at = |why: String| format!("[[export]] {:?} (line {}): {why}", e.name, e.line);
    let identity = privileges::lookup_user(&e.user).map_err(at)?;
    // SAFETY: geteuid has no arguments and cannot fail.
    let own = unsafe { libc::geteuid() };
    if identity.uid != own && !privileges::can_assume() {
        return Err(at(format!(
            "user {} (uid {}) is not the daemon's own user (uid {own}), and a daemon not started \
             as root cannot write as another user",
            e.user, identity.uid
        )));
    }
    let dir = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY)
        .open(&e.path)
        .map_err(|err| at(format!("cannot open {}: {err}", e.path.display())))?;
    info!(export = %e.name, path = %e.path.display(), user = %e.user, "export");
    Ok(Export {
        name: e.name.clone(),
        path: e.path.clone(),
        dir: OwnedFd::from(dir),
        identity,
        peers: e.peers.clone(),
    })
}
