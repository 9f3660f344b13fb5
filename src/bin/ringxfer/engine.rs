//! Finding an engine to run transfers: the daemon if one answers, otherwise
//! (unless forbidden) an engine thread inside this process.

use std::path::Path;

use ringxfer::embedded::EmbeddedEngine;
use ringxfer_ipc::Client;

use crate::error::{CliError, Exit};

/// Which engine moved the bytes; reported in JSON as `"engine"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineKind {
    Daemon,
    Embedded,
}

impl EngineKind {
    pub fn name(self) -> &'static str {
        match self {
            EngineKind::Daemon => "daemon",
            EngineKind::Embedded => "embedded",
        }
    }
}

/// What to do when no daemon answers on the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// Run the engine in-process; `announce` says whether to tell stderr so.
    Embedded { announce: bool },
    /// Fail with exit status 3.
    Refuse,
}

/// A client connected to some engine.
pub struct Engine {
    // Declaration order is drop order, and it matters: the embedded engine's
    // thread stops only once the client's end of its stream is closed, and
    // dropping `EmbeddedEngine` joins that thread. Dropping `embedded` first
    // would wait forever.
    client: Client,
    embedded: Option<EmbeddedEngine>,
}

impl Engine {
    pub fn connect(socket: &Path, fallback: Fallback) -> Result<Engine, CliError> {
        let unreachable = match Client::connect(socket) {
            Ok(client) => {
                return Ok(Engine {
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
        let announce = match fallback {
            Fallback::Refuse => {
                return Err(CliError {
                    exit: Exit::Unreachable,
                    ..CliError::client("", &unreachable)
                })
            }
            Fallback::Embedded { announce } => announce,
        };
        if announce {
            crate::report::note(&format!(
                "no daemon at {}; running the engine in-process",
                socket.display()
            ));
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
        let (embedded, stream) = EmbeddedEngine::start().map_err(|err| failed(err.to_string()))?;
        // On failure `embedded` is dropped here; `stream` was moved into
        // from_stream and is closed by then, so the engine thread can stop.
        let client = Client::from_stream(stream).map_err(|err| failed(err.to_string()))?;
        Ok(Engine {
            client,
            embedded: Some(embedded),
        })
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn kind(&self) -> EngineKind {
        if self.embedded.is_some() {
            EngineKind::Embedded
        } else {
            EngineKind::Daemon
        }
    }
}
