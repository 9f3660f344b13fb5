//! The daemon's settings, one `Key` each: its name (the config file key; the
//! flag is the same with dashes), what values it takes, and how a value is
//! read from flag text or from TOML. Flags and the file share these, so both
//! accept the same forms and refuse the same values with the same words.

use std::path::PathBuf;

use crate::size::parse_size;

/// What values a key takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A whole number from `min` to `max`.
    Count { min: u64, max: u64 },
    /// A byte count: an integer, or a string with a unit ("64KiB", "1MiB"),
    /// from `min` to `max` and a multiple of `multiple`.
    Size { min: u64, max: u64, multiple: u64 },
    /// Bytes per second: a size, optionally ending in "/s"; 0 is no limit.
    Rate,
    /// A file system path.
    Path,
    /// A tracing filter: a level or directives.
    LogFilter,
    /// A duration in milliseconds: seconds as a number, or text with a unit
    /// ("30s", "500ms", "2m"), at most `max_ms`.
    Duration { max_ms: u64 },
    /// One word of `values`, exactly as written there.
    Choice { values: &'static [&'static str] },
    /// A TCP address to listen on, IP and port ("127.0.0.1:7300",
    /// "[::1]:7300"), or "off".
    Address,
    /// On or off: true or false (a flag given without a value is true).
    Switch,
}

/// One setting.
#[derive(Debug)]
pub struct Key {
    /// The config file key; the flag is `--` and this with `_` made `-`.
    pub name: &'static str,
    pub kind: Kind,
}

/// A setting's value, as every layer (defaults, file, environment, flags)
/// gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Number(u64),
    Path(PathBuf),
    Text(String),
}

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const U32: u64 = u32::MAX as u64;

const fn count(name: &'static str, min: u64, max: u64) -> Key {
    Key {
        name,
        kind: Kind::Count { min, max },
    }
}

const fn size(name: &'static str, min: u64, max: u64, multiple: u64) -> Key {
    Key {
        name,
        kind: Kind::Size { min, max, multiple },
    }
}

// The ranges are what the engine accepts (EngineConfig, BufferPool) and what
// the wire can carry (the Welcome limits are u32), so a bad value is refused
// here, naming the key, instead of by the engine after start-up.
pub const SOCKET: Key = Key {
    name: "socket",
    kind: Kind::Path,
};
pub const RING_ENTRIES: Key = count("ring_entries", 8, 32768);
pub const MAX_JOBS: Key = count("max_jobs", 1, U32);
pub const MAX_JOBS_PER_CONNECTION: Key = count("max_jobs_per_connection", 1, U32);
pub const PIPES: Key = count("pipes", 1, 65535);
// The kernel rounds a pipe up to a power of two pages and caps it at 2 GiB.
pub const PIPE_SIZE: Key = size("pipe_size", 4 * KIB, 2 * GIB, 1);
pub const CHUNKS_PER_JOB: Key = count("chunks_per_job", 1, 1024);
pub const BUFFERS: Key = count("buffers", 0, 65535);
pub const BUFFER_SIZE: Key = size("buffer_size", 4 * KIB, GIB, 4 * KIB);
pub const BUFFERS_PER_JOB: Key = count("buffers_per_job", 1, 65535);
pub const DIRECT_THRESHOLD: Key = size("direct_threshold", 0, u64::MAX, 1);
pub const MAX_INFLIGHT: Key = count("max_inflight", 1, U32);
pub const RATE_LIMIT: Key = Key {
    name: "rate_limit",
    kind: Kind::Rate,
};
pub const MAX_JOBS_PER_USER: Key = count("max_jobs_per_user", 1, U32);
pub const MAX_CONNECTIONS: Key = count("max_connections", 1, U32);
pub const MAX_CONNECTIONS_PER_USER: Key = count("max_connections_per_user", 1, U32);
pub const MAX_EVENT_BYTES: Key = size("max_event_bytes", MIB, u64::MAX, 1);
pub const MAX_QUEUED_BYTES_PER_CONNECTION: Key =
    size("max_queued_bytes_per_connection", 0, u64::MAX, 1);
pub const MAX_QUEUED_BYTES_PER_USER: Key = size("max_queued_bytes_per_user", 0, u64::MAX, 1);
pub const SHUTDOWN_GRACE: Key = Key {
    name: "shutdown_grace",
    kind: Kind::Duration {
        max_ms: 24 * 3600 * 1000,
    },
};
pub const HANDSHAKE_TIMEOUT: Key = Key {
    name: "handshake_timeout",
    kind: Kind::Duration {
        max_ms: 3600 * 1000,
    },
};
pub const FRAME_TIMEOUT: Key = Key {
    name: "frame_timeout",
    kind: Kind::Duration {
        max_ms: 3600 * 1000,
    },
};
pub const LOG_LEVEL: Key = Key {
    name: "log_level",
    kind: Kind::LogFilter,
};
// The names of `EngineKind` (a unit test keeps the two the same), so the
// value is refused here, naming the key, rather than by the engine.
pub const ENGINE: Key = Key {
    name: "engine",
    kind: Kind::Choice {
        values: &["uring", "threads", "auto"],
    },
};

/// Where other daemons connect to hand this one files (host to host);
/// "off": nowhere.
pub const LISTEN_TCP: Key = Key {
    name: "listen_tcp",
    kind: Kind::Address,
};
/// Bytes one other daemon may have received here and not yet written, over
/// all its connections: past it, they wait for writes to land.
pub const PEER_BYTES_IN_FLIGHT: Key = size("peer_bytes_in_flight", MIB, GIB, 1);
/// Serve `listen_tcp` without TLS: for tests on a loopback address only.
pub const INSECURE_PLAINTEXT: Key = Key {
    name: "insecure_plaintext",
    kind: Kind::Switch,
};

/// This daemon's certificate and key for TLS with other daemons (PEM
/// files, as `ringxferd --init-keys DIR` writes them).
pub const TLS_CERT: Key = Key {
    name: "tls_cert",
    kind: Kind::Path,
};
pub const TLS_KEY: Key = Key {
    name: "tls_key",
    kind: Kind::Path,
};

/// The text of `listen_tcp` when it is off.
pub const OFF: &str = "off";

/// Every key, in the order the example file and `--check` show them.
pub const KEYS: &[&Key] = &[
    &SOCKET,
    &ENGINE,
    &RING_ENTRIES,
    &MAX_JOBS,
    &MAX_JOBS_PER_CONNECTION,
    &MAX_JOBS_PER_USER,
    &MAX_CONNECTIONS,
    &MAX_CONNECTIONS_PER_USER,
    &MAX_EVENT_BYTES,
    &PIPES,
    &PIPE_SIZE,
    &CHUNKS_PER_JOB,
    &BUFFERS,
    &BUFFER_SIZE,
    &BUFFERS_PER_JOB,
    &DIRECT_THRESHOLD,
    &MAX_INFLIGHT,
    &RATE_LIMIT,
    &MAX_QUEUED_BYTES_PER_CONNECTION,
    &MAX_QUEUED_BYTES_PER_USER,
    &SHUTDOWN_GRACE,
    &HANDSHAKE_TIMEOUT,
    &FRAME_TIMEOUT,
    &LISTEN_TCP,
    &PEER_BYTES_IN_FLIGHT,
    &INSECURE_PLAINTEXT,
    &TLS_CERT,
    &TLS_KEY,
    &LOG_LEVEL,
];

/// The key named `name`, if there is one.
pub fn find(name: &str) -> Option<&'static Key> {
    KEYS.iter().copied().find(|k| k.name == name)
}

const SIZE_FORMS: &str = "use bytes or a unit: 64KiB, 1MiB";

impl Key {
    /// The command-line flag that sets this key.
    pub fn flag(&self) -> String {
        format!("--{}", self.name.replace('_', "-"))
    }

    /// What the key takes, in words, for error messages and the example.
    pub fn allowed(&self) -> String {
        match self.kind {
            Kind::Count { min, max } => format!("an integer from {min} to {max}"),
            Kind::Size { min, max, multiple } => {
                let mut text = format!("a size ({SIZE_FORMS})");
                if multiple > 1 {
                    text += &format!(", a multiple of {}", show_size(multiple));
                }
                if (min, max) != (0, u64::MAX) {
                    text += &format!(", from {} to {}", show_size(min), show_size(max));
                }
                text
            }
            Kind::Rate => format!("bytes per second ({SIZE_FORMS}, optionally /s), 0 for no limit"),
            Kind::Path => "a path".into(),
            Kind::LogFilter => {
                "a log filter: error, warn, info, debug, trace, or tracing directives".into()
            }
            Kind::Duration { max_ms } => format!(
                "a duration: seconds, or a number with ms, s, m or h (30, 1.5s, 500ms, 2m), at most {}",
                show_ms(max_ms)
            ),
            Kind::Choice { values } => format!("one of {}", values.join(", ")),
            Kind::Address => format!("an IP address and port (127.0.0.1:7300, [::1]:7300) or {OFF}"),
            Kind::Switch => "true or false".into(),
        }
    }

    /// Reads a value from a command-line flag or an environment variable.
    pub fn parse_text(&self, text: &str) -> Result<Value, String> {
        match self.kind {
            Kind::Count { .. } => {
                let n = text
                    .trim()
                    .parse::<u64>()
                    .map_err(|_| format!("{text:?} is not {}", self.allowed()))?;
                self.check_number(n).map(Value::Number)
            }
            Kind::Size { .. } => {
                let n = parse_size(text)
                    .map_err(|_| format!("{text:?} is not a size ({SIZE_FORMS})"))?;
                self.check_number(n).map(Value::Number)
            }
            Kind::Rate => {
                let trimmed = text.trim();
                let bytes = trimmed
                    .strip_suffix("/s")
                    .or_else(|| trimmed.strip_suffix("/S"))
                    .unwrap_or(trimmed);
                parse_size(bytes)
                    .map(Value::Number)
                    .map_err(|_| format!("{text:?} is not a rate ({})", self.allowed()))
            }
            Kind::Path if text.is_empty() => Err("an empty path names nothing".into()),
            Kind::Path => Ok(Value::Path(PathBuf::from(text))),
            Kind::LogFilter => match tracing_subscriber::EnvFilter::try_new(text) {
                Ok(_) => Ok(Value::Text(text.to_string())),
                Err(e) => Err(format!("{text:?} is not {} ({e})", self.allowed())),
            },
            Kind::Duration { .. } => {
                let d = crate::duration::parse_duration(text)
                    .map_err(|_| format!("{text:?} is not {}", self.allowed()))?;
                let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
                self.check_number(ms).map(Value::Number)
            }
            // Exact words only: "URING" or " auto" in a unit file is more
            // likely a mistake than a wish, and the message lists the words.
            Kind::Choice { values } if values.contains(&text) => Ok(Value::Text(text.to_string())),
            Kind::Choice { .. } => Err(format!("{text:?} is not {}", self.allowed())),
            Kind::Address if text == OFF => Ok(Value::Text(OFF.into())),
            Kind::Address => match text.parse::<std::net::SocketAddr>() {
                Ok(address) => Ok(Value::Text(address.to_string())),
                Err(_) => Err(format!("{text:?} is not {}", self.allowed())),
            },
            Kind::Switch => match text {
                "true" => Ok(Value::Number(1)),
                "false" => Ok(Value::Number(0)),
                _ => Err(format!("{text:?} is not {}", self.allowed())),
            },
        }
    }

    /// Reads a value from the config file. TOML integers are taken as they
    /// are; strings as a flag would take them, so "1MiB" works in both.
    pub fn from_toml(&self, value: &toml::Value) -> Result<Value, String> {
        let shown = render(value);
        match (self.kind, value) {
            (Kind::Count { .. }, toml::Value::Integer(n)) => {
                let n =
                    u64::try_from(*n).map_err(|_| format!("{shown} is not {}", self.allowed()))?;
                self.check_number(n).map(Value::Number)
            }
            (Kind::Count { .. }, toml::Value::String(s)) if s.trim().parse::<u64>().is_ok() => {
                Err(format!(
                    "{shown} is a string: write the number without quotes ({})",
                    self.allowed()
                ))
            }
            (Kind::Size { .. } | Kind::Rate, toml::Value::Integer(n)) => {
                let n = u64::try_from(*n)
                    .map_err(|_| format!("{shown} is not a size ({SIZE_FORMS})"))?;
                self.check_number(n).map(Value::Number)
            }
            (Kind::Size { .. } | Kind::Rate, toml::Value::String(s)) => {
                // The flag parser's message quotes the text; the file's shows
                // the TOML value, which is the same for a string.
                self.parse_text(s)
            }
            (Kind::Size { .. }, _) => Err(format!("{shown} is not a size ({SIZE_FORMS})")),
            (
                Kind::Path
                | Kind::LogFilter
                | Kind::Duration { .. }
                | Kind::Choice { .. }
                | Kind::Address,
                toml::Value::String(s),
            ) => self.parse_text(s),
            (Kind::Switch, toml::Value::Boolean(b)) => Ok(Value::Number(u64::from(*b))),
            (Kind::Duration { .. }, toml::Value::Integer(n)) if *n >= 0 => {
                self.parse_text(&n.to_string())
            }
            (Kind::Duration { .. }, toml::Value::Float(f)) if *f >= 0.0 => {
                self.parse_text(&f.to_string())
            }
            _ => Err(format!("{shown} is not {}", self.allowed())),
        }
    }

    fn check_number(&self, n: u64) -> Result<u64, String> {
        let fits = match self.kind {
            Kind::Count { min, max } => (min..=max).contains(&n),
            Kind::Size { min, max, multiple } => {
                (min..=max).contains(&n) && n.is_multiple_of(multiple)
            }
            Kind::Duration { max_ms } => n <= max_ms,
            Kind::Rate
            | Kind::Path
            | Kind::LogFilter
            | Kind::Choice { .. }
            | Kind::Address
            | Kind::Switch => true,
        };
        if fits {
            Ok(n)
        } else {
            Err(format!(
                "{} is out of range: use {}",
                self.show(n),
                self.allowed()
            ))
        }
    }

    /// A number as this key's values are written: sizes with a unit when
    /// exact (so the text is valid in the config file too).
    pub fn show(&self, n: u64) -> String {
        match self.kind {
            Kind::Size { .. } => show_size(n),
            Kind::Rate if n == 0 => "0 (no limit)".into(),
            Kind::Rate => format!("{}/s", show_size(n)),
            Kind::Duration { .. } => show_ms(n),
            Kind::Switch => (n != 0).to_string(),
            _ => n.to_string(),
        }
    }

    /// A value as `--check` and the start-up log show it.
    pub fn show_value(&self, value: &Value) -> String {
        match value {
            Value::Number(n) => self.show(*n),
            Value::Path(p) => p.display().to_string(),
            Value::Text(t) => t.clone(),
        }
    }
}

/// `30s` for 30000, `1500ms` for 1500: valid as flag text and in the file.
pub fn show_ms(ms: u64) -> String {
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// `1MiB` for 1048576, `1536` for 1536: the largest binary unit that
/// divides the number exactly, which parse_size reads back.
pub fn show_size(n: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n == 0 {
        return "0".into();
    }
    let mut unit = None;
    let mut value = n;
    for name in UNITS {
        if !value.is_multiple_of(1024) {
            break;
        }
        value /= 1024;
        unit = Some(name);
    }
    match unit {
        Some(name) => format!("{value}{name}"),
        None => n.to_string(),
    }
}

/// A TOML value as it would be written in the file, for messages.
pub fn render(value: &toml::Value) -> String {
    match value {
        // Debug quoting matches TOML's basic strings for what people type.
        toml::Value::String(s) => format!("{s:?}"),
        toml::Value::Integer(n) => n.to_string(),
        toml::Value::Float(f) => f.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::Datetime(d) => d.to_string(),
        toml::Value::Array(_) => "an array".into(),
        toml::Value::Table(_) => "a table".into(),
    }
}

/// The known key closest to `name`, if it is close enough to be a typo:
/// dashes for underscores, a letter or two off.
pub fn closest(name: &str) -> Option<&'static str> {
    let normal = name.trim().to_ascii_lowercase().replace('-', "_");
    if let Some(k) = find(&normal) {
        return Some(k.name);
    }
    let limit = (normal.len() / 3).clamp(1, 3);
    KEYS.iter()
        .map(|k| (edit_distance(&normal, k.name), k.name))
        .filter(|&(d, _)| d <= limit)
        .min()
        .map(|(_, n)| n)
}

/// Levenshtein distance over bytes (keys are ASCII).
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.iter().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitute = prev[j] + usize::from(ca != cb);
            cur[j + 1] = substitute.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_round_trip_through_show() {
        for n in [0, 1, 1536, 4096, 1 << 20, 3 << 30, u64::MAX] {
            assert_eq!(parse_size(&show_size(n)), Ok(n), "{n}");
        }
        assert_eq!(show_size(1 << 20), "1MiB");
        assert_eq!(show_size(1536), "1536");
    }

    #[test]
    fn flags_and_file_agree() {
        assert_eq!(PIPE_SIZE.parse_text("64KiB"), Ok(Value::Number(65536)));
        let file = toml::Value::String("64KiB".into());
        assert_eq!(PIPE_SIZE.from_toml(&file), Ok(Value::Number(65536)));
        assert_eq!(
            PIPE_SIZE.from_toml(&toml::Value::Integer(65536)),
            Ok(Value::Number(65536))
        );
        let bad = PIPE_SIZE
            .from_toml(&toml::Value::String("12 parsecs".into()))
            .unwrap_err();
        assert_eq!(
            bad,
            "\"12 parsecs\" is not a size (use bytes or a unit: 64KiB, 1MiB)"
        );
        let range = RING_ENTRIES
            .from_toml(&toml::Value::Integer(4))
            .unwrap_err();
        assert_eq!(range, "4 is out of range: use an integer from 8 to 32768");
        let quoted = RING_ENTRIES
            .from_toml(&toml::Value::String("64".into()))
            .unwrap_err();
        assert!(quoted.contains("without quotes"), "{quoted}");
        assert!(BUFFER_SIZE.parse_text("5000").is_err());
        assert_eq!(
            RATE_LIMIT.parse_text("20MiB/s"),
            Ok(Value::Number(20 << 20))
        );
        assert!(LOG_LEVEL.parse_text("debug").is_ok());
        assert!(LOG_LEVEL.parse_text("[[[").is_err());
        assert!(SOCKET.from_toml(&toml::Value::Integer(3)).is_err());
    }

    #[test]
    fn typos_find_their_key() {
        assert_eq!(closest("pipe-size"), Some("pipe_size"));
        assert_eq!(closest("pipesize"), Some("pipe_size"));
        assert_eq!(closest("ring_entires"), Some("ring_entries"));
        assert_eq!(closest("colour"), None);
    }

    #[test]
    fn names_are_unique() {
        for (i, k) in KEYS.iter().enumerate() {
            assert!(
                KEYS[..i].iter().all(|o| o.name != k.name),
                "{} twice",
                k.name
            );
        }
    }
}

#[cfg(test)]
mod engine_tests {
    use super::*;
    use crate::engine::EngineKind;

    #[test]
    fn engine_takes_exactly_the_engine_kinds() {
        let Kind::Choice { values } = ENGINE.kind else {
            panic!("engine is a choice")
        };
        let kinds = [EngineKind::Uring, EngineKind::Threads, EngineKind::Auto];
        assert_eq!(values.len(), kinds.len());
        for kind in kinds {
            assert!(values.contains(&kind.name()), "{}", kind.name());
            assert_eq!(
                ENGINE.parse_text(kind.name()),
                Ok(Value::Text(kind.name().into()))
            );
        }
    }

    #[test]
    fn a_bad_engine_is_refused_with_the_words_allowed() {
        let err = ENGINE.parse_text("io_uring").unwrap_err();
        assert_eq!(err, "\"io_uring\" is not one of uring, threads, auto");
        let err = ENGINE
            .from_toml(&toml::Value::String("Threads".into()))
            .unwrap_err();
        assert_eq!(err, "\"Threads\" is not one of uring, threads, auto");
        let err = ENGINE.from_toml(&toml::Value::Integer(1)).unwrap_err();
        assert_eq!(err, "1 is not one of uring, threads, auto");
        assert_eq!(
            ENGINE.from_toml(&toml::Value::String("threads".into())),
            Ok(Value::Text("threads".into()))
        );
    }
}

#[cfg(test)]
mod duration_tests {
    use super::*;

    #[test]
    fn shutdown_grace_reads_flags_and_toml_and_says_what_is_wrong() {
        let k = &SHUTDOWN_GRACE;
        assert_eq!(k.parse_text("30"), Ok(Value::Number(30_000)));
        assert_eq!(k.parse_text("1.5s"), Ok(Value::Number(1500)));
        assert_eq!(
            k.from_toml(&toml::Value::Integer(2)),
            Ok(Value::Number(2000))
        );
        assert_eq!(
            k.from_toml(&toml::Value::String("500ms".into())),
            Ok(Value::Number(500))
        );
        assert_eq!(k.show(1500), "1500ms");
        assert_eq!(k.show(30_000), "30s");
        let err = k.parse_text("soon").unwrap_err();
        assert!(err.contains("\"soon\" is not a duration"), "{err}");
        let err = k.parse_text("48h").unwrap_err();
        assert!(
            err.contains("out of range") && err.contains("86400s"),
            "{err}"
        );
    }
}
