//! Finding an engine to run transfers: the daemon if one answers, otherwise
//! (unless forbidden) an engine thread inside this process; at once, or
//! (for a tree copy) when the first job needs it.

use std::cell::OnceCell;
use std::path::Path;

use ringxfer::embedded::EmbeddedEngine;
use ringxfer_ipc::Client;

use crate::error::{CliError, Exit};
use crate::report::EngineUsed;

/// What to do when no daemon answers on the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// Run the engine in-process; `announce` says whether to tell stderr so.
    Embedded { announce: bool },
    /// Fail with exit status 3.
    Refuse,
}

/// A client connected to some engine.
pub struct EngineHandle {
    // Declaration order is drop order, and it matters: the embedded engine's
    // thread stops only once the client's end of its stream is closed, and
    // dropping `EmbeddedEngine` joins that thread. Dropping `embedded` first
    // would wait forever.
    client: Client,
    embedded: Option<EmbeddedEngine>,
}

impl EngineHandle {
    pub fn connect(socket: &Path, fallback: Fallback) -> Result<EngineHandle, CliError> {
        let unreachable = match Client::connect(socket) {
            Ok(client) => {
                return Ok(EngineHandle {
                    client,
                    embedded: None,
                })
            }
            Err(err) if err.is_unreachable() => err,
            Err(err) => {
                return Err(CliError::client(
                    format!("daemon at {}", socket.display()),
                    &err,
                ))
            }
        };
        let denied = access_denied(socket, &unreachable);
        let announce = match fallback {
            Fallback::Refuse => {
                let err = CliError::client("", &unreachable);
                return Err(CliError {
                    exit: Exit::Unreachable,
                    cause: match &denied {
                        Some(how) => format!("{}; {how}", err.cause),
                        None => err.cause,
                    },
                    ..err
                });
            }
            Fallback::Embedded { announce } => announce,
        };
        match (&denied, announce) {
            (Some(how), _) => crate::report::note(&format!(
                "permission denied on the daemon's socket {}; {how}; running the engine in-process",
                socket.display()
            )),
            (None, true) => crate::report::note(&format!(
                "no daemon at {}; running the engine in-process",
                socket.display()
            )),
            (None, false) => {}
        }
        // E.g. no io_uring in this kernel or container.
        let failed = |cause: String| {
            CliError::new(
                format!(
                    "no daemon at {}, and the in-process engine failed to start",
                    socket.display()
                ),
                "engine-unavailable",
                cause,
            )
        };
        // The engine's thread must not take a signal meant for the copy.
        crate::signals::arm();
        let (embedded, stream) = EmbeddedEngine::start().map_err(|err| failed(err.to_string()))?;
        // On failure `embedded` is dropped here; `stream` was moved into
        // from_stream and is closed by then, so the engine thread can stop.
        let client = Client::from_stream(stream).map_err(|err| failed(err.to_string()))?;
        Ok(EngineHandle {
            client,
            embedded: Some(embedded),
        })
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn kind(&self) -> EngineUsed {
        if self.embedded.is_some() {
            EngineUsed::Embedded
        } else {
            EngineUsed::Daemon
        }
    }
}

/// An engine connected to when first asked for. A tree copy whose files the
/// CLI copies itself (small ones in the page cache, empty ones) asks no
/// daemon and starts no engine in-process: a copy of five small files took
/// 2.8 ms with a daemon to greet (cp: 2.3) and 23 ms where the engine
/// started in-process for nothing.
pub struct LazyEngine<'a> {
    connect: Box<dyn Fn() -> Result<EngineHandle, CliError> + 'a>,
    handle: OnceCell<EngineHandle>,
}

impl<'a> LazyEngine<'a> {
    pub fn new(connect: impl Fn() -> Result<EngineHandle, CliError> + 'a) -> LazyEngine<'a> {
        LazyEngine {
            connect: Box::new(connect),
            handle: OnceCell::new(),
        }
    }

    /// The engine, connected to (or started) on the first call. A failure
    /// is not kept: the next call tries again.
    pub fn get(&self) -> Result<&EngineHandle, CliError> {
        if let Some(handle) = self.handle.get() {
            return Ok(handle);
        }
        let handle = (self.connect)()?;
        Ok(self.handle.get_or_init(|| handle))
    }

    /// Which engine ran the jobs; the CLI's own copies if none was needed.
    pub fn used(&self) -> EngineUsed {
        self.handle
            .get()
            .map_or(EngineUsed::Cli, EngineHandle::kind)
    }
}

/// For a connect refused with EACCES/EPERM (a daemon may well run there,
/// but this user may not use its socket): how to get access.
fn access_denied(socket: &Path, err: &ringxfer_ipc::ClientError) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let ringxfer_ipc::ClientError::Connect { source, .. } = err else {
        return None;
    };
    if !matches!(source.raw_os_error(), Some(libc::EACCES | libc::EPERM)) {
        return None;
    }
    let group = std::fs::metadata(socket)
        .ok()
        .and_then(|m| group_name(m.gid()));
    Some(match group {
        Some(g) => format!(
            "it is open to group '{g}': ask an administrator to add you (usermod -aG {g} $USER), then log in again"
        ),
        None => "ask its administrator for access to it".to_string(),
    })
}

/// The name of group `gid`, from the group database.
fn group_name(gid: u32) -> Option<String> {
    // SAFETY: an all-zero `group` (null pointers, gid 0) is a valid value.
    let mut grp: libc::group = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut found: *mut libc::group = std::ptr::null_mut();
    // SAFETY: `grp`, `buf` (with its true length) and `found` are valid for
    // writes for the whole call; getgrgid_r writes only within them.
    let rc = unsafe { libc::getgrgid_r(gid, &mut grp, buf.as_mut_ptr(), buf.len(), &mut found) };
    if rc != 0 || found.is_null() || grp.gr_name.is_null() {
        return None;
    }
    // SAFETY: on success gr_name points at a NUL-terminated string in `buf`,
    // which is alive here.
    let name = unsafe { std::ffi::CStr::from_ptr(grp.gr_name) };
    Some(name.to_string_lossy().into_owned())
}
