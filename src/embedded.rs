//! The engine run in-process, for the CLI when no daemon answers.
//!
//! The engine gets one end of a socket pair as its only connection and the
//! caller gets the other, so the caller speaks the same protocol through the
//! same client stub whether a daemon or this thread moves the bytes.

use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::thread::JoinHandle;

use crate::engine::{Engine, EngineConfig, EngineKind};
use crate::settings::{keys, ENV_ENGINE};

/// An engine thread serving exactly one connection, the other end of which is
/// returned to the caller by [`EmbeddedEngine::start`].
///
/// The engine stops once the caller's end is closed, so close (drop) the
/// client first: dropping this waits for the engine thread to finish.
pub struct EmbeddedEngine {
    thread: Option<JoinHandle<()>>,
}

impl EmbeddedEngine {
    /// Starts an engine thread with default settings, except the I/O
    /// buffers (one direct job's, see below) and the engine:
    /// `RINGXFER_ENGINE` (uring, threads, auto) when set. The CLI that runs
    /// this has no daemon settings, and without the variable there would be
    /// no way to pick the back end it uses (nor for the test suite to run
    /// the CLI's in-process engine under each). A bad value is an error
    /// rather than ignored, as it is for ringxferd.
    pub fn start() -> std::io::Result<(EmbeddedEngine, UnixStream)> {
        let mut config = EngineConfig::default();
        // One client, whose jobs mostly need no buffer (a hot file is
        // copied in the kernel, a small one by the CLI itself): one direct
        // job's worth, not the daemon's 32. Registering buffers pins them,
        // faulting in every page: 32 MiB cost each in-process copy 20 ms
        // (a hot 40 MiB copy took 42 ms, 24 with these; cp 15).
        config.buffers = config.buffers_per_job;
        if let Some(kind) = engine_from_env()? {
            config.engine = kind;
        }
        EmbeddedEngine::start_with(config)
    }

    /// Starts an engine thread with `config` and returns it with the client
    /// end of its connection. Fails if the engine cannot start (no io_uring,
    /// no pipes), with the engine's reason.
    pub fn start_with(config: EngineConfig) -> std::io::Result<(EmbeddedEngine, UnixStream)> {
        let (ours, theirs) = UnixStream::pair()?;
        let (ready_tx, ready_rx) = crossbeam_channel::bounded::<Result<(), String>>(1);
        let thread = std::thread::Builder::new()
            .name("ringxfer-engine".into())
            .spawn(move || {
                // The ring must be made on the thread that submits to it.
                let mut engine = match Engine::new(config) {
                    Ok(e) => e,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                engine.add_connection(OwnedFd::from(theirs), true);
                let _ = ready_tx.send(Ok(()));
                if let Err(e) = engine.run() {
                    tracing::error!("embedded engine stopped: {e}");
                }
            })?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok((
                EmbeddedEngine {
                    thread: Some(thread),
                },
                ours,
            )),
            Ok(Err(msg)) => {
                let _ = thread.join();
                Err(std::io::Error::other(msg))
            }
            Err(_) => {
                let _ = thread.join();
                Err(std::io::Error::other(
                    "the engine thread ended before it was ready",
                ))
            }
        }
    }
}

/// The engine `RINGXFER_ENGINE` names; `None` when it is unset or empty
/// (empty counts as unset, as for the daemon's environment layer).
fn engine_from_env() -> std::io::Result<Option<EngineKind>> {
    let Some(value) = std::env::var_os(ENV_ENGINE).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    match value.to_str().and_then(EngineKind::parse) {
        Some(kind) => Ok(Some(kind)),
        None => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "environment variable {ENV_ENGINE}: {value:?} is not {}",
                keys::ENGINE.allowed()
            ),
        )),
    }
}

impl Drop for EmbeddedEngine {
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_in_process_engine_holds_one_direct_jobs_buffers() {
        let (engine, stream) = EmbeddedEngine::start().expect("an engine starts");
        let client = ringxfer_ipc::Client::from_stream(stream).expect("a client");
        let stats = client.stats().expect("stats");
        let want = EngineConfig::DEFAULT.buffers_per_job as u64;
        assert_eq!(stats.buffers_total, want, "{stats:?}");
        assert!(want < EngineConfig::DEFAULT.buffers as u64);
        drop(client);
        drop(engine);
    }
}
