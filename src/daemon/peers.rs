//! Host to host, at start-up: the TCP listener other daemons connect to and
//! the export directories they write into, opened while the daemon still
//! has the rights it started with (before `drop_after_startup`), and
//! checked, so that a bad setting stops the daemon with its reason rather
//! than refusing every transfer later.

use std::fs::OpenOptions;
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;

use tracing::{info, warn};

use crate::engine::{Export, PeerSetup};
use crate::privileges;
use crate::settings::{keys, ExportSetting, Settings};

/// The listener and exports `settings` ask for; None when `listen_tcp` is
/// off.
pub fn open(settings: &Settings) -> Result<Option<PeerSetup>, String> {
    let Some(address) = settings.listen_tcp else {
        if !settings.exports.is_empty() {
            info!(
                "[[export]] tables are set but listen_tcp is off: no other daemon can reach them"
            );
        }
        return Ok(None);
    };
    let origin = settings.origin(&keys::LISTEN_TCP);
    if !settings.insecure_plaintext {
        return Err(format!(
            "listen_tcp = {address} ({origin}): this version talks to other daemons only without \
             encryption (TLS is not built yet); set insecure_plaintext = true to serve plaintext, \
             on a loopback address only"
        ));
    }
    if !address.ip().is_loopback() {
        return Err(format!(
            "listen_tcp = {address} ({origin}) is not a loopback address, and insecure_plaintext \
             serves only loopback: anyone on the network could write into the exports"
        ));
    }
    if settings.exports.is_empty() {
        warn!("listen_tcp is on but no [[export]] is set: every file other daemons offer will be refused");
    }
    let exports = settings
        .exports
        .iter()
        .map(open_export)
        .collect::<Result<Vec<_>, _>>()?;
    let listener = std::net::TcpListener::bind(address)
        .map_err(|e| format!("listen_tcp = {address} ({origin}): cannot listen: {e}"))?;
    let bound = listener
        .local_addr()
        .map_or_else(|_| address.to_string(), |a| a.to_string());
    info!(address = %bound, exports = exports.len(), "listening for other daemons (plaintext, insecure_plaintext)");
    Ok(Some(PeerSetup {
        listener: OwnedFd::from(listener),
        exports,
    }))
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
    })
}
