//! The daemon's settings and where each one came from.
//!
//! Layers, each overriding the one before, key by key:
//!
//! 1. built-in defaults (`EngineConfig::DEFAULT`, the default socket path);
//! 2. the config file: `--config PATH` (which must exist), else
//!    `/etc/ringxfer/ringxferd.toml` if it exists, else none (`--no-config`:
//!    none at all);
//! 3. the environment: `RINGXFER_SOCKET`, `RINGXFER_LOG`, `RINGXFER_ENGINE`;
//! 4. command-line flags.
//!
//! Every key is described once in `keys.rs` (name, allowed values, parsing);
//! flags (`args.rs`) and the file (`file.rs`) both parse through it.
//!
//! Adding a setting: a `Key` in `keys.rs` (and in `KEYS`), a field in
//! `Settings` with its default and its arms in `set`/`get` here, a field in
//! `RawFile` (file.rs) and in `Args` (args.rs) with their `entries` /
//! `flag_values` lines, and a commented entry in
//! `config/ringxferd.toml.example`. The unit tests and the example test fail
//! until all of them are there.

pub mod args;
mod exports;
mod file;
pub mod keys;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::engine::{EngineConfig, EngineKind};
pub use args::Args;
pub use exports::{ExportSetting, PeerSetting};
use keys::{Key, Value};

/// The config file read when no `--config` is given, if it exists.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/ringxfer/ringxferd.toml";
/// The environment variable that sets the log filter.
pub const ENV_LOG: &str = "RINGXFER_LOG";
/// The environment variable that sets the socket (clients read it too).
pub const ENV_SOCKET: &str = "RINGXFER_SOCKET";
/// The environment variable that sets the engine. The CLI's in-process
/// engine (`EmbeddedEngine::start`) reads it too, since it has no settings
/// of its own: one variable picks the back end wherever the engine runs.
pub const ENV_ENGINE: &str = "RINGXFER_ENGINE";

/// Where a setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Default,
    File(PathBuf),
    Env(&'static str),
    Flag(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => f.write_str("default"),
            Origin::File(path) => write!(f, "file {}", path.display()),
            Origin::Env(var) => write!(f, "env {var}"),
            Origin::Flag(flag) => write!(f, "flag {flag}"),
        }
    }
}

impl Origin {
    /// One word for JSON: default, file, env or flag.
    pub fn kind(&self) -> &'static str {
        match self {
            Origin::Default => "default",
            Origin::File(_) => "file",
            Origin::Env(_) => "env",
            Origin::Flag(_) => "flag",
        }
    }
}

/// Which config file was looked at, and what came of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigFile {
    /// Read (from `--config`, or the default path, which existed).
    Read(PathBuf),
    /// The default path, which does not exist: built-in defaults stand.
    Absent(PathBuf),
    /// `--no-config`.
    Disabled,
}

impl fmt::Display for ConfigFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigFile::Read(p) => write!(f, "{} (read)", p.display()),
            ConfigFile::Absent(p) => write!(f, "{} (absent; built-in defaults)", p.display()),
            ConfigFile::Disabled => f.write_str("none (--no-config)"),
        }
    }
}

/// Why the settings could not be made: each names the file or variable, the
/// key and the value, and says what is allowed.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("{}: cannot read the config file: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: not valid TOML: {message}", path.display())]
    Syntax { path: PathBuf, message: String },
    #[error("{}:{line}: unknown key `{key}`{suggestion}; known keys: {known}", path.display())]
    UnknownKey {
        path: PathBuf,
        line: usize,
        key: String,
        suggestion: String,
        known: String,
    },
    #[error("{}:{line}: key `{key}`: {problem}", path.display())]
    BadValue {
        path: PathBuf,
        line: usize,
        key: &'static str,
        problem: String,
    },
    #[error("environment variable {var}: {problem}")]
    BadEnv { var: &'static str, problem: String },
}

/// The environment variables that settings read, taken once so resolving is
/// a function of its inputs (and testable without touching the process).
#[derive(Debug, Clone, Default)]
pub struct Env {
    pub socket: Option<OsString>,
    pub log: Option<OsString>,
    pub engine: Option<OsString>,
    /// What the socket defaults to when nothing sets it.
    pub default_socket: Option<PathBuf>,
}

impl Env {
    /// The process's environment. Empty variables count as unset, as they
    /// do for clients' `default_socket_path`.
    pub fn from_process() -> Env {
        let var = |name| std::env::var_os(name).filter(|v| !v.is_empty());
        Env {
            socket: var(ENV_SOCKET),
            log: var(ENV_LOG),
            engine: var(ENV_ENGINE),
            default_socket: Some(ringxfer_ipc::default_socket_path()),
        }
    }
}

/// The daemon's effective settings. The fields have the names and types the
/// flags had, so `serve()` reads them as it read the flags.
#[derive(Debug, Clone)]
pub struct Settings {
    pub socket: PathBuf,
    /// The I/O back end: io_uring, worker threads, or io_uring if allowed.
    pub engine: EngineKind,
    pub ring_entries: u32,
    pub max_jobs: usize,
    pub max_jobs_per_connection: usize,
    pub pipes: usize,
    pub pipe_size: u64,
    pub chunks_per_job: usize,
    pub buffers: usize,
    pub buffer_size: u64,
    pub buffers_per_job: usize,
    pub direct_threshold: u64,
    pub max_inflight: u64,
    /// Bytes per second for all jobs together; `None`: no limit (0 in the
    /// file or on the command line).
    pub rate_limit: Option<u64>,
    pub max_jobs_per_user: usize,
    pub max_connections: usize,
    pub max_connections_per_user: usize,
    pub max_event_bytes: u64,
    pub max_queued_bytes_per_connection: u64,
    pub max_queued_bytes_per_user: u64,
    /// How long running jobs may take to finish after a stop signal.
    pub shutdown_grace: std::time::Duration,
    pub handshake_timeout: std::time::Duration,
    pub frame_timeout: std::time::Duration,
    /// Where other daemons connect; None: off.
    pub listen_tcp: Option<std::net::SocketAddr>,
    /// Bytes one other daemon may have received and not yet written here.
    pub peer_bytes_in_flight: u64,
    pub insecure_plaintext: bool,
    /// The directories other daemons may write into (the file's
    /// `[[export]]` tables).
    pub exports: Vec<ExportSetting>,
    /// The other daemons trusted, by certificate pin (`[[peer]]`).
    pub peers: Vec<PeerSetting>,
    /// This daemon's certificate and key for TLS with other daemons.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub log_level: String,
    /// The config file looked at.
    pub config_file: ConfigFile,
    origins: BTreeMap<&'static str, Origin>,
}

/// Counts are checked against `Key` ranges that fit in u32, so these never
/// saturate in practice; saturating keeps them total without an unwrap.
fn to_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

impl Settings {
    /// The built-in defaults, every origin `Default`.
    pub fn defaults(env: &Env) -> Settings {
        let d = EngineConfig::DEFAULT;
        Settings {
            socket: env
                .default_socket
                .clone()
                .unwrap_or_else(ringxfer_ipc::default_socket_path),
            engine: d.engine,
            ring_entries: d.ring_entries,
            max_jobs: d.max_jobs,
            max_jobs_per_connection: d.max_jobs_per_connection,
            pipes: d.pipes,
            pipe_size: u64::from(d.pipe_size),
            chunks_per_job: d.chunks_per_job,
            buffers: d.buffers,
            buffer_size: d.buffer_size as u64,
            buffers_per_job: d.buffers_per_job,
            direct_threshold: d.direct_threshold,
            max_inflight: d.max_inflight as u64,
            rate_limit: d.rate_limit,
            max_jobs_per_user: d.max_jobs_per_user,
            max_connections: d.max_connections,
            max_connections_per_user: d.max_connections_per_user,
            max_event_bytes: d.max_event_bytes,
            max_queued_bytes_per_connection: d.max_queued_bytes_per_connection,
            max_queued_bytes_per_user: d.max_queued_bytes_per_user,
            shutdown_grace: d.shutdown_grace,
            handshake_timeout: d.handshake_timeout,
            frame_timeout: d.frame_timeout,
            listen_tcp: None,
            peer_bytes_in_flight: crate::engine::DEFAULT_PEER_BYTES_IN_FLIGHT,
            insecure_plaintext: false,
            exports: Vec::new(),
            peers: Vec::new(),
            tls_cert: None,
            tls_key: None,
            log_level: "info".into(),
            config_file: ConfigFile::Disabled,
            origins: keys::KEYS
                .iter()
                .map(|k| (k.name, Origin::Default))
                .collect(),
        }
    }

    /// Loads the settings for this process: its command line and environment.
    pub fn load(args: &Args) -> Result<Settings, SettingsError> {
        Settings::resolve(args, &Env::from_process())
    }

    /// Defaults, then the config file, then `env`, then the flags in `args`.
    pub fn resolve(args: &Args, env: &Env) -> Result<Settings, SettingsError> {
        let mut settings = Settings::defaults(env);
        let (config_file, values) = match (&args.config, args.no_config) {
            (_, true) => (ConfigFile::Disabled, Default::default()),
            (Some(path), false) => (ConfigFile::Read(path.clone()), file::read(path)?),
            (None, false) => {
                let path = Path::new(DEFAULT_CONFIG_PATH);
                match file::read(path) {
                    Ok(values) => (ConfigFile::Read(path.to_path_buf()), values),
                    // Only "not there" is silent: a file that exists but
                    // cannot be read (permissions, not UTF-8) is an error, or
                    // the daemon would run on settings nobody chose.
                    Err(SettingsError::Read { source, .. })
                        if source.kind() == std::io::ErrorKind::NotFound =>
                    {
                        (ConfigFile::Absent(path.to_path_buf()), Default::default())
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        let (values, (exports, peers)) = values;
        settings.exports = exports;
        settings.peers = peers;
        if let ConfigFile::Read(path) = &config_file {
            for (key, value) in values {
                settings.set(key, value, Origin::File(path.clone()));
            }
        }
        settings.config_file = config_file;
        for (var, key, text) in [
            (ENV_SOCKET, &keys::SOCKET, &env.socket),
            (ENV_LOG, &keys::LOG_LEVEL, &env.log),
            (ENV_ENGINE, &keys::ENGINE, &env.engine),
        ] {
            let Some(text) = text else { continue };
            let text = text.to_str().ok_or_else(|| SettingsError::BadEnv {
                var,
                problem: format!("{text:?} is not valid UTF-8"),
            })?;
            let value = key
                .parse_text(text)
                .map_err(|problem| SettingsError::BadEnv { var, problem })?;
            settings.set(key, value, Origin::Env(var));
        }
        for (key, value) in args.flag_values() {
            settings.set(key, value, Origin::Flag(key.flag()));
        }
        Ok(settings)
    }

    /// Sets one key. A value of the wrong variant cannot come from the
    /// parsers (each key's parser makes one variant), and is ignored.
    fn set(&mut self, key: &'static Key, value: Value, origin: Origin) {
        use Value::{Number as N, Path as P, Text as T};
        match (key.name, value) {
            ("socket", P(p)) => self.socket = p,
            ("engine", T(t)) => match EngineKind::parse(&t) {
                Some(kind) => self.engine = kind,
                // keys::ENGINE admits only EngineKind's names (a unit test
                // keeps them equal), so this is the wrong-variant case below.
                None => {
                    debug_assert!(false, "no engine {t:?}");
                    return;
                }
            },
            ("ring_entries", N(n)) => self.ring_entries = u32::try_from(n).unwrap_or(u32::MAX),
            ("max_jobs", N(n)) => self.max_jobs = to_usize(n),
            ("max_jobs_per_connection", N(n)) => self.max_jobs_per_connection = to_usize(n),
            ("max_jobs_per_user", N(n)) => self.max_jobs_per_user = to_usize(n),
            ("max_connections", N(n)) => self.max_connections = to_usize(n),
            ("max_connections_per_user", N(n)) => self.max_connections_per_user = to_usize(n),
            ("max_event_bytes", N(n)) => self.max_event_bytes = n,
            ("pipes", N(n)) => self.pipes = to_usize(n),
            ("pipe_size", N(n)) => self.pipe_size = n,
            ("chunks_per_job", N(n)) => self.chunks_per_job = to_usize(n),
            ("buffers", N(n)) => self.buffers = to_usize(n),
            ("buffer_size", N(n)) => self.buffer_size = n,
            ("buffers_per_job", N(n)) => self.buffers_per_job = to_usize(n),
            ("direct_threshold", N(n)) => self.direct_threshold = n,
            ("max_inflight", N(n)) => self.max_inflight = n,
            ("rate_limit", N(n)) => self.rate_limit = (n > 0).then_some(n),
            ("max_queued_bytes_per_connection", N(n)) => self.max_queued_bytes_per_connection = n,
            ("max_queued_bytes_per_user", N(n)) => self.max_queued_bytes_per_user = n,
            ("shutdown_grace", N(ms)) => self.shutdown_grace = std::time::Duration::from_millis(ms),
            ("handshake_timeout", N(ms)) => {
                self.handshake_timeout = std::time::Duration::from_millis(ms)
            }
            ("frame_timeout", N(ms)) => self.frame_timeout = std::time::Duration::from_millis(ms),
            ("listen_tcp", T(t)) => self.listen_tcp = t.parse().ok(),
            ("peer_bytes_in_flight", N(n)) => self.peer_bytes_in_flight = n,
            ("insecure_plaintext", N(n)) => self.insecure_plaintext = n != 0,
            ("tls_cert", P(p)) => self.tls_cert = Some(p),
            ("tls_key", P(p)) => self.tls_key = Some(p),
            ("log_level", T(t)) => self.log_level = t,
            (name, value) => {
                debug_assert!(false, "no setting {name} of {value:?}");
                return;
            }
        }
        self.origins.insert(key.name, origin);
    }

    /// One key's effective value.
    pub fn get(&self, key: &Key) -> Value {
        use Value::{Number as N, Path as P, Text as T};
        match key.name {
            "socket" => P(self.socket.clone()),
            "engine" => T(self.engine.name().into()),
            "ring_entries" => N(u64::from(self.ring_entries)),
            "max_jobs" => N(self.max_jobs as u64),
            "max_jobs_per_connection" => N(self.max_jobs_per_connection as u64),
            "max_jobs_per_user" => N(self.max_jobs_per_user as u64),
            "max_connections" => N(self.max_connections as u64),
            "max_connections_per_user" => N(self.max_connections_per_user as u64),
            "max_event_bytes" => N(self.max_event_bytes),
            "pipes" => N(self.pipes as u64),
            "pipe_size" => N(self.pipe_size),
            "chunks_per_job" => N(self.chunks_per_job as u64),
            "buffers" => N(self.buffers as u64),
            "buffer_size" => N(self.buffer_size),
            "buffers_per_job" => N(self.buffers_per_job as u64),
            "direct_threshold" => N(self.direct_threshold),
            "max_inflight" => N(self.max_inflight),
            "rate_limit" => N(self.rate_limit.unwrap_or(0)),
            "max_queued_bytes_per_connection" => N(self.max_queued_bytes_per_connection),
            "max_queued_bytes_per_user" => N(self.max_queued_bytes_per_user),
            "handshake_timeout" => N(millis(self.handshake_timeout)),
            "frame_timeout" => N(millis(self.frame_timeout)),
            "shutdown_grace" => N(millis(self.shutdown_grace)),
            "listen_tcp" => T(self
                .listen_tcp
                .map_or(keys::OFF.to_string(), |a| a.to_string())),
            "peer_bytes_in_flight" => N(self.peer_bytes_in_flight),
            "insecure_plaintext" => N(u64::from(self.insecure_plaintext)),
            "tls_cert" => P(self.tls_cert.clone().unwrap_or_default()),
            "tls_key" => P(self.tls_key.clone().unwrap_or_default()),
            "log_level" => T(self.log_level.clone()),
            _ => T(String::new()),
        }
    }

    /// Where one key's value came from.
    pub fn origin(&self, key: &Key) -> Origin {
        self.origins
            .get(key.name)
            .cloned()
            .unwrap_or(Origin::Default)
    }

    /// Every key with its value (as it would be written) and origin.
    pub fn describe(&self) -> Vec<(&'static Key, String, Origin)> {
        keys::KEYS
            .iter()
            .map(|&k| (k, k.show_value(&self.get(k)), self.origin(k)))
            .collect()
    }

    /// The settings not at their default, as `key=value (origin)`, for the
    /// start-up log line.
    pub fn overrides(&self) -> String {
        let changed: Vec<String> = self
            .describe()
            .into_iter()
            .filter(|(_, _, origin)| *origin != Origin::Default)
            .map(|(k, value, origin)| format!("{}={value} ({origin})", k.name))
            .collect();
        if changed.is_empty() {
            "none".into()
        } else {
            changed.join(", ")
        }
    }
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn env() -> Env {
        Env {
            socket: None,
            log: None,
            engine: None,
            default_socket: Some("/run/ringxfer/ringxferd.sock".into()),
        }
    }

    fn write(dir: &Path, text: &str) -> PathBuf {
        let path = dir.join("ringxferd.toml");
        std::fs::write(&path, text).expect("write config");
        path
    }

    #[test]
    fn layers_override_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = write(
            dir.path(),
            "pipes = 8\npipe_size = \"64KiB\"\nlog_level = \"debug\"\nsocket = \"/tmp/f.sock\"\n",
        );
        let config = path.to_str().expect("utf-8 tempdir");
        let args = Args::parse_from(["ringxferd", "--config", config, "--pipes", "9"]);
        let mut env = env();
        env.log = Some("warn".into());
        let s = Settings::resolve(&args, &env).expect("resolves");
        assert_eq!(s.pipes, 9);
        assert_eq!(s.origin(&keys::PIPES), Origin::Flag("--pipes".into()));
        assert_eq!(s.pipe_size, 64 << 10);
        assert_eq!(s.origin(&keys::PIPE_SIZE), Origin::File(path.clone()));
        assert_eq!(s.log_level, "warn");
        assert_eq!(s.origin(&keys::LOG_LEVEL), Origin::Env(ENV_LOG));
        assert_eq!(s.socket, PathBuf::from("/tmp/f.sock"));
        assert_eq!(s.ring_entries, EngineConfig::DEFAULT.ring_entries);
        assert_eq!(s.origin(&keys::RING_ENTRIES), Origin::Default);
        assert_eq!(s.config_file, ConfigFile::Read(path));
        let o = s.overrides();
        assert!(o.contains("pipes=9 (flag --pipes)"), "{o}");
        assert!(o.contains("pipe_size=64KiB (file "), "{o}");
    }

    #[test]
    fn every_key_round_trips_through_set_and_get() {
        let mut s = Settings::defaults(&env());
        for key in keys::KEYS {
            let value = match key.kind {
                keys::Kind::Path => Value::Path("/x".into()),
                keys::Kind::LogFilter => Value::Text("trace".into()),
                keys::Kind::Rate => Value::Number(12345),
                keys::Kind::Size { .. } | keys::Kind::Count { .. } => Value::Number(8192),
                keys::Kind::Duration { .. } => Value::Number(1500),
                keys::Kind::Choice { values } => Value::Text(values[0].into()),
                keys::Kind::Address => Value::Text("127.0.0.1:7300".into()),
                keys::Kind::Switch => Value::Number(1),
            };
            s.set(key, value.clone(), Origin::Flag(key.flag()));
            assert_eq!(s.get(key), value, "{}", key.name);
            assert_eq!(s.origin(key), Origin::Flag(key.flag()));
        }
    }

    #[test]
    fn missing_config_is_an_error_only_when_named() {
        let args = Args::parse_from(["ringxferd", "--config", "/nonexistent/ringxferd.toml"]);
        let err = Settings::resolve(&args, &env()).unwrap_err().to_string();
        assert!(
            err.starts_with("/nonexistent/ringxferd.toml: cannot read the config file"),
            "{err}"
        );
        let none = Args::parse_from(["ringxferd", "--no-config"]);
        let s = Settings::resolve(&none, &env()).expect("resolves");
        assert_eq!(s.config_file, ConfigFile::Disabled);
    }

    #[test]
    fn engine_comes_from_file_environment_and_flag() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = write(dir.path(), "engine = \"uring\"\n");
        let config = path.to_str().expect("utf-8 tempdir");
        let s = Settings::resolve(&Args::parse_from(["ringxferd", "--no-config"]), &env())
            .expect("resolves");
        assert_eq!(s.engine, EngineKind::Auto, "the default");
        let file = Args::parse_from(["ringxferd", "--config", config]);
        let s = Settings::resolve(&file, &env()).expect("resolves");
        assert_eq!(s.engine, EngineKind::Uring);
        assert_eq!(s.origin(&keys::ENGINE), Origin::File(path.clone()));
        let mut threads = env();
        threads.engine = Some("threads".into());
        let s = Settings::resolve(&file, &threads).expect("resolves");
        assert_eq!(
            s.engine,
            EngineKind::Threads,
            "the environment beats the file"
        );
        assert_eq!(s.origin(&keys::ENGINE), Origin::Env(ENV_ENGINE));
        let flag = Args::parse_from(["ringxferd", "--config", config, "--engine", "auto"]);
        let s = Settings::resolve(&flag, &threads).expect("resolves");
        assert_eq!(s.engine, EngineKind::Auto, "the flag beats both");
        assert!(s.overrides().contains("engine=auto (flag --engine)"));
        let mut bad = env();
        bad.engine = Some("fast".into());
        let err = Settings::resolve(&file, &bad).unwrap_err().to_string();
        assert_eq!(
            err,
            "environment variable RINGXFER_ENGINE: \"fast\" is not one of uring, threads, auto"
        );
    }

    #[test]
    fn bad_environment_is_named() {
        let args = Args::parse_from(["ringxferd", "--no-config"]);
        let mut env = env();
        env.log = Some("info,[[[".into());
        let err = Settings::resolve(&args, &env).unwrap_err().to_string();
        assert!(
            err.starts_with("environment variable RINGXFER_LOG: "),
            "{err}"
        );
    }

    /// The annotated example in the repository sets every key to its
    /// default, so it documents the daemon as built and cannot rot.
    #[test]
    fn example_config_is_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/ringxferd.toml.example");
        let text = std::fs::read_to_string(&path).expect("read the example config");
        let (values, _) = file::parse(&path, &text).unwrap_or_else(|e| panic!("{e}"));
        let defaults = Settings::defaults(&env());
        for key in keys::KEYS {
            // The socket's default depends on the environment
            // ($XDG_RUNTIME_DIR), and the TLS files have none, so the
            // example shows them commented out.
            if [keys::SOCKET.name, keys::TLS_CERT.name, keys::TLS_KEY.name].contains(&key.name) {
                assert!(
                    text.contains(&format!("\n# {} = \"/", key.name)),
                    "the example documents {}",
                    key.name
                );
                continue;
            }
            let set = values.iter().find(|(k, _)| k.name == key.name);
            let Some((_, value)) = set else {
                panic!("the example does not set {}", key.name)
            };
            assert_eq!(*value, defaults.get(key), "example's {}", key.name);
            // Each key is explained: a comment line right before it.
            let at = text
                .find(&format!("\n{} = ", key.name))
                .unwrap_or_else(|| panic!("{} not at a line start", key.name));
            let before = text[..at].lines().last().unwrap_or("");
            assert!(before.starts_with('#'), "{} has no comment", key.name);
            assert!(
                text.contains(&format!("Default: {}", key.show_value(value))),
                "{}'s comment gives its default",
                key.name
            );
        }
    }
}
