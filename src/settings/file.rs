//! The config file: TOML, one top-level key per setting.

use std::path::Path;

use serde::Deserialize;
use toml::Spanned;

use super::exports::{self, ExportSetting, PeerSetting};
use super::keys::{self, Value, KEYS};
use super::SettingsError;

/// The file as serde sees it. Every value is read as raw TOML first and
/// checked by its `Key`, so a bad value gets our message (file, key, value,
/// what is allowed) rather than serde's "invalid type". `deny_unknown_fields`
/// refuses keys this version does not know: a misspelt key silently ignored
/// would leave the daemon on a default the operator thinks they changed.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    socket: Option<Spanned<toml::Value>>,
    engine: Option<Spanned<toml::Value>>,
    ring_entries: Option<Spanned<toml::Value>>,
    max_jobs: Option<Spanned<toml::Value>>,
    max_jobs_per_connection: Option<Spanned<toml::Value>>,
    max_jobs_per_user: Option<Spanned<toml::Value>>,
    max_connections: Option<Spanned<toml::Value>>,
    max_connections_per_user: Option<Spanned<toml::Value>>,
    max_event_bytes: Option<Spanned<toml::Value>>,
    pipes: Option<Spanned<toml::Value>>,
    pipe_size: Option<Spanned<toml::Value>>,
    chunks_per_job: Option<Spanned<toml::Value>>,
    buffers: Option<Spanned<toml::Value>>,
    buffer_size: Option<Spanned<toml::Value>>,
    buffers_per_job: Option<Spanned<toml::Value>>,
    direct_threshold: Option<Spanned<toml::Value>>,
    max_inflight: Option<Spanned<toml::Value>>,
    rate_limit: Option<Spanned<toml::Value>>,
    max_queued_bytes_per_connection: Option<Spanned<toml::Value>>,
    max_queued_bytes_per_user: Option<Spanned<toml::Value>>,
    shutdown_grace: Option<Spanned<toml::Value>>,
    handshake_timeout: Option<Spanned<toml::Value>>,
    frame_timeout: Option<Spanned<toml::Value>>,
    listen_tcp: Option<Spanned<toml::Value>>,
    peer_bytes_in_flight: Option<Spanned<toml::Value>>,
    insecure_plaintext: Option<Spanned<toml::Value>>,
    tls_cert: Option<Spanned<toml::Value>>,
    tls_key: Option<Spanned<toml::Value>>,
    log_level: Option<Spanned<toml::Value>>,
    export: Option<Vec<Spanned<toml::Table>>>,
    peer: Option<Vec<Spanned<toml::Table>>>,
}

impl RawFile {
    /// Each field with its key. A field missing here, or a key missing from
    /// `KEYS`, fails the unit test that reads a file setting every key.
    fn entries(&mut self) -> Vec<(&'static keys::Key, Option<Spanned<toml::Value>>)> {
        vec![
            (&keys::SOCKET, self.socket.take()),
            (&keys::ENGINE, self.engine.take()),
            (&keys::RING_ENTRIES, self.ring_entries.take()),
            (&keys::MAX_JOBS, self.max_jobs.take()),
            (
                &keys::MAX_JOBS_PER_CONNECTION,
                self.max_jobs_per_connection.take(),
            ),
            (&keys::MAX_JOBS_PER_USER, self.max_jobs_per_user.take()),
            (&keys::MAX_CONNECTIONS, self.max_connections.take()),
            (
                &keys::MAX_CONNECTIONS_PER_USER,
                self.max_connections_per_user.take(),
            ),
            (&keys::MAX_EVENT_BYTES, self.max_event_bytes.take()),
            (&keys::PIPES, self.pipes.take()),
            (&keys::PIPE_SIZE, self.pipe_size.take()),
            (&keys::CHUNKS_PER_JOB, self.chunks_per_job.take()),
            (&keys::BUFFERS, self.buffers.take()),
            (&keys::BUFFER_SIZE, self.buffer_size.take()),
            (&keys::BUFFERS_PER_JOB, self.buffers_per_job.take()),
            (&keys::DIRECT_THRESHOLD, self.direct_threshold.take()),
            (&keys::MAX_INFLIGHT, self.max_inflight.take()),
            (&keys::RATE_LIMIT, self.rate_limit.take()),
            (
                &keys::MAX_QUEUED_BYTES_PER_CONNECTION,
                self.max_queued_bytes_per_connection.take(),
            ),
            (
                &keys::MAX_QUEUED_BYTES_PER_USER,
                self.max_queued_bytes_per_user.take(),
            ),
            (&keys::SHUTDOWN_GRACE, self.shutdown_grace.take()),
            (&keys::HANDSHAKE_TIMEOUT, self.handshake_timeout.take()),
            (&keys::FRAME_TIMEOUT, self.frame_timeout.take()),
            (&keys::LISTEN_TCP, self.listen_tcp.take()),
            (
                &keys::PEER_BYTES_IN_FLIGHT,
                self.peer_bytes_in_flight.take(),
            ),
            (&keys::INSECURE_PLAINTEXT, self.insecure_plaintext.take()),
            (&keys::TLS_CERT, self.tls_cert.take()),
            (&keys::TLS_KEY, self.tls_key.take()),
            (&keys::LOG_LEVEL, self.log_level.take()),
        ]
    }
}

/// The settings a file gives, each checked, in the order of `KEYS`.
pub(super) type FileValues = Vec<(&'static keys::Key, Value)>;

/// The `[[export]]` and `[[peer]]` tables a file gives.
pub(super) type FileExports = (Vec<ExportSetting>, Vec<PeerSetting>);

/// Reads and checks the config file at `path`.
pub(super) fn read(path: &Path) -> Result<(FileValues, FileExports), SettingsError> {
    let text = std::fs::read_to_string(path).map_err(|source| SettingsError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(path, &text)
}

/// Checks the text of a config file; `path` only names it in errors.
pub(super) fn parse(path: &Path, text: &str) -> Result<(FileValues, FileExports), SettingsError> {
    let mut raw: RawFile = match toml::from_str(text) {
        Ok(raw) => raw,
        Err(e) => return Err(explain(path, text, e)),
    };
    let mut values = Vec::new();
    for (key, spanned) in raw.entries() {
        let Some(spanned) = spanned else { continue };
        let line = line_of(text, spanned.span().start);
        let value =
            key.from_toml(spanned.get_ref())
                .map_err(|problem| SettingsError::BadValue {
                    path: path.to_path_buf(),
                    line,
                    key: key.name,
                    problem,
                })?;
        values.push((key, value));
    }
    let exports = exports::read(path, raw.export.take(), |at| line_of(text, at))?;
    let peers = exports::read_peers(path, raw.peer.take(), |at| line_of(text, at))?;
    Ok((values, (exports, peers)))
}

/// Turns serde's error into ours. An unknown key is worth its own message
/// (with the closest known key); anything else is a TOML syntax error,
/// whose text already shows the line and a caret.
fn explain(path: &Path, text: &str, err: toml::de::Error) -> SettingsError {
    let table = match text.parse::<toml::Table>() {
        Ok(table) => table,
        Err(syntax) => {
            return SettingsError::Syntax {
                path: path.to_path_buf(),
                message: syntax.to_string().trim_end().to_string(),
            }
        }
    };
    if let Some(unknown) = table
        .keys()
        .find(|k| keys::find(k).is_none() && *k != "export" && *k != "peer")
    {
        let suggestion = match keys::closest(unknown) {
            Some(near) => format!(" (did you mean `{near}`?)"),
            None => String::new(),
        };
        return SettingsError::UnknownKey {
            path: path.to_path_buf(),
            line: err.span().map_or(0, |s| line_of(text, s.start)),
            key: unknown.clone(),
            suggestion,
            known: KEYS.iter().map(|k| k.name).collect::<Vec<_>>().join(", "),
        };
    }
    SettingsError::Syntax {
        path: path.to_path_buf(),
        message: err.to_string().trim_end().to_string(),
    }
}

/// The 1-based line of byte offset `at` in `text` (0 if it is past the end).
fn line_of(text: &str, at: usize) -> usize {
    text.get(..at)
        .map_or(0, |before| before.matches('\n').count() + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(text: &str) -> Result<FileValues, String> {
        parse(Path::new("/etc/ringxfer/ringxferd.toml"), text)
            .map(|(values, _)| values)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn every_key_is_read() {
        let text =
            "socket = \"/tmp/x.sock\"\nengine = \"threads\"\nring_entries = 64\nmax_jobs = 10\n\
            max_jobs_per_connection = 5\nmax_jobs_per_user = 7\nmax_connections = 9\n\
            max_connections_per_user = 3\nmax_event_bytes = \"8MiB\"\npipes = 4\npipe_size = \"64KiB\"\n\
            chunks_per_job = 1\nbuffers = 0\nbuffer_size = 8192\nbuffers_per_job = 2\n\
            direct_threshold = \"1MiB\"\nmax_inflight = 3\nrate_limit = \"10MiB/s\"\n\
            max_queued_bytes_per_connection = \"1GiB\"\nmax_queued_bytes_per_user = 0\n\
            shutdown_grace = \"5s\"\nhandshake_timeout = \"2s\"\nframe_timeout = 3\nlog_level = \"debug\"\n\
            listen_tcp = \"127.0.0.1:7300\"\npeer_bytes_in_flight = \"8MiB\"\ninsecure_plaintext = true\n\
            tls_cert = \"/etc/r/cert.pem\"\ntls_key = \"/etc/r/key.pem\"\n";
        let values = parse_str(text).expect("parses");
        assert_eq!(
            values.len(),
            KEYS.len(),
            "every key in KEYS is a RawFile field"
        );
        for key in KEYS {
            assert!(
                values.iter().any(|(k, _)| k.name == key.name),
                "{} not read",
                key.name
            );
        }
    }

    #[test]
    fn bad_value_names_file_line_key_value_and_what_is_allowed() {
        let err = parse_str("pipes = 4\npipe_size = \"12 parsecs\"\n").unwrap_err();
        assert_eq!(
            err,
            "/etc/ringxfer/ringxferd.toml:2: key `pipe_size`: \"12 parsecs\" is not a size \
             (use bytes or a unit: 64KiB, 1MiB)"
        );
        let err = parse_str("max_jobs = -1\n").unwrap_err();
        assert!(
            err.contains("key `max_jobs`: -1 is not an integer from 1 to 4294967295"),
            "{err}"
        );
        let err = parse_str("pipes = 4\n\nengine = \"fast\"\n").unwrap_err();
        assert_eq!(
            err,
            "/etc/ringxfer/ringxferd.toml:3: key `engine`: \"fast\" is not one of uring, \
             threads, auto"
        );
        let err = parse_str("log_level = 3\n").unwrap_err();
        assert!(
            err.contains("key `log_level`: 3 is not a log filter"),
            "{err}"
        );
    }

    #[test]
    fn unknown_key_is_named_with_the_closest_one() {
        let err = parse_str("pipes = 4\n\npipe-size = 1\n").unwrap_err();
        assert!(
            err.starts_with(
                "/etc/ringxfer/ringxferd.toml:3: unknown key `pipe-size` (did you mean `pipe_size`?)"
            ),
            "{err}"
        );
        assert!(
            err.contains("known keys: socket, engine, ring_entries"),
            "{err}"
        );
        let err = parse_str("[daemon]\npipes = 4\n").unwrap_err();
        assert!(err.contains("unknown key `daemon`"), "{err}");
    }

    #[test]
    fn syntax_errors_say_where() {
        let err = parse_str("pipes = = 4\n").unwrap_err();
        assert!(
            err.starts_with("/etc/ringxfer/ringxferd.toml: not valid TOML"),
            "{err}"
        );
        assert!(err.contains("line 1"), "{err}");
        let err = parse_str("pipes = 4\npipes = 5\n").unwrap_err();
        assert!(err.contains("not valid TOML"), "{err}");
    }
}
