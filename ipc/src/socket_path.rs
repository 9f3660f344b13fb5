//! Where the daemon's socket lives when nobody says otherwise.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The environment variable that names the daemon's socket explicitly.
const SOCKET_ENV: &str = "RINGXFER_SOCKET";

/// The per-user runtime directory of the XDG base directory specification.
const RUNTIME_DIR_ENV: &str = "XDG_RUNTIME_DIR";

/// The socket of a system-wide daemon: where `systemd/ringxferd.socket`
/// listens (its ListenStream= must stay equal to this; a test checks).
/// [`client_socket_path`] falls back to it, so a program that connects
/// with [`Client::connect_default`](crate::Client::connect_default) reaches
/// the system daemon when the user runs none of their own. Connect to it
/// by name to reach the system daemon even when they do.
///
/// ```
/// use ringxfer_ipc::{default_socket_path, SYSTEM_SOCKET};
///
/// // Neither variable set: the system daemon's socket.
/// std::env::remove_var("RINGXFER_SOCKET");
/// std::env::remove_var("XDG_RUNTIME_DIR");
/// assert_eq!(default_socket_path(), std::path::Path::new(SYSTEM_SOCKET));
/// ```
///
/// ```no_run
/// let client = ringxfer_ipc::Client::connect(ringxfer_ipc::SYSTEM_SOCKET)?;
/// println!("{} jobs running system-wide", client.stats()?.jobs_running);
/// # Ok::<(), ringxfer_ipc::ClientError>(())
/// ```
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

/// The socket a client connects to when it is not given one: as
/// [`default_socket_path`], except that the per-user socket under
/// `$XDG_RUNTIME_DIR` is taken only where a socket file exists there, so
/// that a logged-in user (every login session sets `$XDG_RUNTIME_DIR`)
/// reaches the system daemon at [`SYSTEM_SOCKET`] when they run no daemon
/// of their own.
///
/// ```
/// let path = ringxfer_ipc::client_socket_path();
/// assert!(path.ends_with("ringxferd.sock") || std::env::var_os("RINGXFER_SOCKET").is_some());
/// ```
pub fn client_socket_path() -> PathBuf {
    client_from_env(
        std::env::var_os(SOCKET_ENV),
        std::env::var_os(RUNTIME_DIR_ENV),
    )
}

fn client_from_env(socket: Option<OsString>, runtime_dir: Option<OsString>) -> PathBuf {
    let explicit = socket.as_ref().is_some_and(|s| !s.is_empty());
    let path = from_env(socket, runtime_dir);
    if explicit || is_socket(&path) {
        path
    } else {
        PathBuf::from(SYSTEM_SOCKET)
    }
}

fn is_socket(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata(path).is_ok_and(|m| m.file_type().is_socket())
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

    #[test]
    fn a_client_takes_the_per_user_socket_only_where_one_exists() {
        let dir = tempfile::tempdir().expect("tempdir");
        let runtime = Some(dir.path().as_os_str().to_owned());
        let per_user = dir.path().join("ringxfer").join("ringxferd.sock");
        // No per-user daemon: the system daemon.
        assert_eq!(
            client_from_env(None, runtime.clone()),
            PathBuf::from(SYSTEM_SOCKET)
        );
        std::fs::create_dir(dir.path().join("ringxfer")).expect("mkdir");
        let _listener = std::os::unix::net::UnixListener::bind(&per_user).expect("bind");
        assert_eq!(client_from_env(None, runtime.clone()), per_user);
        // Named explicitly: taken as it is, existing or not.
        let named = client_from_env(Some("/nowhere/x.sock".into()), runtime);
        assert_eq!(named, PathBuf::from("/nowhere/x.sock"));
    }
}
