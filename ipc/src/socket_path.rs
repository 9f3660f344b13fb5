//! Where the daemon's socket lives when nobody says otherwise.

use std::ffi::OsString;
use std::path::PathBuf;

/// The environment variable that names the daemon's socket explicitly.
const SOCKET_ENV: &str = "RINGXFER_SOCKET";

/// The per-user runtime directory of the XDG base directory specification.
const RUNTIME_DIR_ENV: &str = "XDG_RUNTIME_DIR";

/// The socket of a system-wide daemon: where `systemd/ringxferd.socket`
/// listens (its ListenStream= must stay equal to this; a test checks).
pub const SYSTEM_SOCKET: &str = "/run/ringxfer/ringxferd.sock";

/// The socket path a client uses when it is not given one.
///
/// In order: `$RINGXFER_SOCKET`; else `$XDG_RUNTIME_DIR/ringxfer/ringxferd.sock`;
/// else `/run/ringxfer/ringxferd.sock`. An empty variable counts as unset, and
/// so does a relative `$XDG_RUNTIME_DIR`, which the XDG specification says to
/// ignore.
///
/// ```
/// let path = ringxfer_ipc::default_socket_path();
/// assert!(path.ends_with("ringxferd.sock") || std::env::var_os("RINGXFER_SOCKET").is_some());
/// ```
pub fn default_socket_path() -> PathBuf {
    from_env(
        std::env::var_os(SOCKET_ENV),
        std::env::var_os(RUNTIME_DIR_ENV),
    )
}

fn from_env(socket: Option<OsString>, runtime_dir: Option<OsString>) -> PathBuf {
    if let Some(socket) = socket.filter(|s| !s.is_empty()) {
        return PathBuf::from(socket);
    }
    // A relative runtime dir would make the socket depend on the caller's
    // working directory, so client and daemon could disagree on it.
    if let Some(dir) = runtime_dir.map(PathBuf::from).filter(|d| d.is_absolute()) {
        return dir.join("ringxfer").join("ringxferd.sock");
    }
    PathBuf::from(SYSTEM_SOCKET)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_and_relative_values_fall_through() {
        let none = from_env(Some("".into()), Some("run/user/1".into()));
        assert_eq!(none, PathBuf::from(SYSTEM_SOCKET));
        let xdg = from_env(Some("".into()), Some("/run/user/1".into()));
        assert_eq!(xdg, PathBuf::from("/run/user/1/ringxfer/ringxferd.sock"));
        let explicit = from_env(Some("rel.sock".into()), Some("/run/user/1".into()));
        assert_eq!(explicit, PathBuf::from("rel.sock"));
    }
}
