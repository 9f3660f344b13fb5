//! ringxferd's command line. Every setting flag is an `Option`: "not given"
//! must be told from "given the default", or a flag's default would silently
//! override the config file.

use std::path::PathBuf;

use clap::{CommandFactory, FromArgMatches, Parser};

use super::keys::{self, Key, Value};

/// The clap parser for one key's flag: the key's own checks, so a flag and
/// the file refuse the same values in the same words.
fn by(key: &'static Key) -> impl Fn(&str) -> Result<Value, String> + Clone + Send + Sync {
    move |text: &str| key.parse_text(text)
}

/// The ringxfer transfer daemon.
///
/// Settings come from built-in defaults, then the config file
/// (/etc/ringxfer/ringxferd.toml if it exists, or --config), then the
/// environment (RINGXFER_SOCKET, RINGXFER_LOG, RINGXFER_ENGINE), then these
/// flags; each later one overrides. `ringxferd --check` shows where each came
/// from.
#[derive(Debug, Parser)]
#[command(name = "ringxferd", version, about, long_about)]
pub struct Args {
    /// Config file to read (must exist) instead of /etc/ringxfer/ringxferd.toml.
    #[arg(long, value_name = "PATH", conflicts_with = "no_config")]
    pub config: Option<PathBuf>,
    /// Read no config file, not even /etc/ringxfer/ringxferd.toml.
    #[arg(long)]
    pub no_config: bool,
    /// Probe the kernel (io_uring, opcodes, set-up flags, registered
    /// buffers), the socket and, given PATH, its O_DIRECT alignment; print
    /// the effective settings and where each came from; exit 0 if the daemon
    /// can run, 1 if not. Serves nothing.
    #[arg(long, value_name = "PATH", num_args = 0..=1)]
    pub check: Option<Option<PathBuf>>,
    /// Another path whose O_DIRECT alignment --check reports (implies --check;
    /// may be repeated).
    #[arg(long, value_name = "PATH")]
    pub check_path: Vec<PathBuf>,
    /// With --check: print one JSON object instead of lines.
    #[arg(long)]
    pub json: bool,
    /// Write a new key (DIR/key.pem, mode 0600) and self-signed certificate
    /// (DIR/cert.pem) for TLS with other daemons, print the certificate's
    /// pin for their [[peer]] tables, and exit. Refuses to overwrite.
    #[arg(long, value_name = "DIR", conflicts_with = "check")]
    pub init_keys: Option<PathBuf>,

    /// Socket to listen on [default: $RINGXFER_SOCKET, else
    /// $XDG_RUNTIME_DIR/ringxfer/ringxferd.sock, else /run/ringxfer/ringxferd.sock].
    #[arg(long, value_parser = by(&keys::SOCKET))]
    pub socket: Option<Value>,
    /// I/O engine: uring (io_uring, or refuse to start), threads (worker
    /// threads with plain system calls), auto (io_uring if the kernel allows
    /// it, else threads, saying why) [env: RINGXFER_ENGINE].
    #[arg(long, value_name = "ENGINE", value_parser = by(&keys::ENGINE))]
    pub engine: Option<Value>,
    /// Submission queue entries of the ring.
    #[arg(long, value_name = "N", value_parser = by(&keys::RING_ENTRIES))]
    pub ring_entries: Option<Value>,
    /// Jobs admitted at once across all clients.
    #[arg(long, value_name = "N", value_parser = by(&keys::MAX_JOBS))]
    pub max_jobs: Option<Value>,
    /// Unfinished jobs one connection may have.
    #[arg(long, value_name = "N", value_parser = by(&keys::MAX_JOBS_PER_CONNECTION))]
    pub max_jobs_per_connection: Option<Value>,
    /// Pipes made at start-up (each job borrows up to --chunks-per-job of them).
    #[arg(long, value_name = "N", value_parser = by(&keys::PIPES))]
    pub pipes: Option<Value>,
    /// Capacity each pipe is grown to (bytes, or 1MiB etc.).
    #[arg(long, value_name = "SIZE", value_parser = by(&keys::PIPE_SIZE))]
    pub pipe_size: Option<Value>,
    /// Pipes one job uses at once.
    #[arg(long, value_name = "N", value_parser = by(&keys::CHUNKS_PER_JOB))]
    pub chunks_per_job: Option<Value>,
    /// Aligned I/O buffers made and registered with the ring at start-up, for
    /// the direct and uncached strategies (0: none, and those strategies off).
    #[arg(long, value_name = "N", value_parser = by(&keys::BUFFERS))]
    pub buffers: Option<Value>,
    /// Bytes of each I/O buffer, a multiple of 4 KiB (e.g. 1MiB).
    #[arg(long, value_name = "SIZE", value_parser = by(&keys::BUFFER_SIZE))]
    pub buffer_size: Option<Value>,
    /// I/O buffers one job uses at once.
    #[arg(long, value_name = "N", value_parser = by(&keys::BUFFERS_PER_JOB))]
    pub buffers_per_job: Option<Value>,
    /// Under --strategy auto, files at least this large that are mostly not
    /// in the page cache go direct (like nginx's directio, plus residency).
    #[arg(long, value_name = "SIZE", value_parser = by(&keys::DIRECT_THRESHOLD))]
    pub direct_threshold: Option<Value>,
    /// Job I/O operations in flight at once across all jobs (each lent pipe,
    /// buffer or worker piece carries one).
    #[arg(long, value_name = "N", value_parser = by(&keys::MAX_INFLIGHT))]
    pub max_inflight: Option<Value>,
    /// Bytes per second all jobs together may move (e.g. 100MiB; 0: no
    /// limit); each job's own --rate-limit applies on top.
    #[arg(long, value_name = "SIZE", value_parser = by(&keys::RATE_LIMIT))]
    pub rate_limit: Option<Value>,
    /// Unfinished jobs one user may have across all connections (never more
    /// than a quarter of --max-jobs).
    #[arg(long, value_name = "N", value_parser = by(&keys::MAX_JOBS_PER_USER))]
    pub max_jobs_per_user: Option<Value>,
    /// Client connections open at once, all users together.
    #[arg(long, value_name = "N", value_parser = by(&keys::MAX_CONNECTIONS))]
    pub max_connections: Option<Value>,
    /// Client connections one user may have open at once.
    #[arg(long, value_name = "N", value_parser = by(&keys::MAX_CONNECTIONS_PER_USER))]
    pub max_connections_per_user: Option<Value>,
    /// Bytes of events queued for all clients together; past it, a client
    /// holding more than its share (one that does not read) is disconnected.
    #[arg(long, value_name = "SIZE", value_parser = by(&keys::MAX_EVENT_BYTES))]
    pub max_event_bytes: Option<Value>,
    /// Bytes one connection's unfinished jobs may still have to move (0: no limit).
    #[arg(long, value_name = "SIZE", value_parser = by(&keys::MAX_QUEUED_BYTES_PER_CONNECTION))]
    pub max_queued_bytes_per_connection: Option<Value>,
    /// Bytes one user's unfinished jobs may still have to move (0: no limit).
    #[arg(long, value_name = "SIZE", value_parser = by(&keys::MAX_QUEUED_BYTES_PER_USER))]
    pub max_queued_bytes_per_user: Option<Value>,
    /// After the first SIGTERM/SIGINT, how long running jobs may take to
    /// finish before they are cancelled (30, 1.5s, 500ms, 2m; 0: at once).
    #[arg(long, value_name = "DURATION", value_parser = by(&keys::SHUTDOWN_GRACE))]
    pub shutdown_grace: Option<Value>,
    /// How long a new connection may take to send Hello before it is closed.
    #[arg(long, value_name = "DURATION", value_parser = by(&keys::HANDSHAKE_TIMEOUT))]
    pub handshake_timeout: Option<Value>,
    /// How long a connection may hold part of a request frame unfinished.
    #[arg(long, value_name = "DURATION", value_parser = by(&keys::FRAME_TIMEOUT))]
    pub frame_timeout: Option<Value>,
    /// Accept files from other ringxferd daemons on this TCP address
    /// (127.0.0.1:7300, [::1]:7300; port 0: any free port, logged), into
    /// the directories the config file's [[export]] tables name; "off": no
    /// TCP at all. Needs TLS (tls_cert, tls_key, [[peer]]s) or
    /// --insecure-plaintext on a loopback address.
    #[arg(long, value_name = "ADDRESS", value_parser = by(&keys::LISTEN_TCP))]
    pub listen_tcp: Option<Value>,
    /// Bytes one other daemon may have received here and not yet written,
    /// over all its connections (16 at most); past it, they wait.
    #[arg(long, value_name = "BYTES", value_parser = by(&keys::PEER_BYTES_IN_FLIGHT))]
    pub peer_bytes_in_flight: Option<Value>,
    /// Serve --listen-tcp without encryption or authentication: for tests,
    /// and only on a loopback address.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true",
          value_parser = by(&keys::INSECURE_PLAINTEXT))]
    pub insecure_plaintext: Option<Value>,
    /// This daemon's certificate for TLS with other daemons (PEM; see
    /// --init-keys). Other daemons are trusted by the config file's
    /// [[peer]] pins.
    #[arg(long, value_name = "PATH", value_parser = by(&keys::TLS_CERT))]
    pub tls_cert: Option<Value>,
    /// The key of --tls-cert (PEM).
    #[arg(long, value_name = "PATH", value_parser = by(&keys::TLS_KEY))]
    pub tls_key: Option<Value>,
    /// Log filter (error, warn, info, debug, trace, or tracing directives)
    /// [env: RINGXFER_LOG].
    #[arg(long, value_name = "FILTER", value_parser = by(&keys::LOG_LEVEL))]
    pub log_level: Option<Value>,
}

impl Args {
    /// Parses the process's command line, exiting (status 2) on a usage
    /// error as clap does. The help shows each setting's built-in default,
    /// taken from the same table the daemon resolves against.
    pub fn parse_command_line() -> Args {
        let defaults = super::Settings::defaults(&super::Env::default());
        let mut cmd = Args::command();
        for key in keys::KEYS {
            if key.name == keys::SOCKET.name || key.name == keys::LOG_LEVEL.name {
                continue; // their help says where the default comes from
            }
            let default = key.show_value(&defaults.get(key));
            cmd = cmd.mut_arg(key.name, |arg| {
                let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
                arg.help(format!("{help} [default: {default}]"))
            });
        }
        let matches = cmd.get_matches_mut();
        let args = match Args::from_arg_matches(&matches) {
            Ok(args) => args,
            Err(e) => e.format(&mut cmd).exit(),
        };
        if args.json && !args.checking() {
            cmd.error(
                clap::error::ErrorKind::MissingRequiredArgument,
                "--json goes with --check",
            )
            .exit();
        }
        args
    }

    /// Whether `--check` (or `--check-path`) was given.
    pub fn checking(&self) -> bool {
        self.check.is_some() || !self.check_path.is_empty()
    }

    /// The paths `--check PATH` and `--check-path PATH` name.
    pub fn check_paths(&self) -> Vec<PathBuf> {
        let mut paths: Vec<PathBuf> = self.check.iter().flatten().cloned().collect();
        paths.extend(self.check_path.iter().cloned());
        paths
    }

    /// The settings given as flags, with their keys.
    pub fn flag_values(&self) -> Vec<(&'static Key, Value)> {
        let given = [
            (&keys::SOCKET, &self.socket),
            (&keys::ENGINE, &self.engine),
            (&keys::RING_ENTRIES, &self.ring_entries),
            (&keys::MAX_JOBS, &self.max_jobs),
            (
                &keys::MAX_JOBS_PER_CONNECTION,
                &self.max_jobs_per_connection,
            ),
            (&keys::MAX_JOBS_PER_USER, &self.max_jobs_per_user),
            (&keys::MAX_CONNECTIONS, &self.max_connections),
            (
                &keys::MAX_CONNECTIONS_PER_USER,
                &self.max_connections_per_user,
            ),
            (&keys::MAX_EVENT_BYTES, &self.max_event_bytes),
            (&keys::PIPES, &self.pipes),
            (&keys::PIPE_SIZE, &self.pipe_size),
            (&keys::CHUNKS_PER_JOB, &self.chunks_per_job),
            (&keys::BUFFERS, &self.buffers),
            (&keys::BUFFER_SIZE, &self.buffer_size),
            (&keys::BUFFERS_PER_JOB, &self.buffers_per_job),
            (&keys::DIRECT_THRESHOLD, &self.direct_threshold),
            (&keys::MAX_INFLIGHT, &self.max_inflight),
            (&keys::RATE_LIMIT, &self.rate_limit),
            (
                &keys::MAX_QUEUED_BYTES_PER_CONNECTION,
                &self.max_queued_bytes_per_connection,
            ),
            (
                &keys::MAX_QUEUED_BYTES_PER_USER,
                &self.max_queued_bytes_per_user,
            ),
            (&keys::SHUTDOWN_GRACE, &self.shutdown_grace),
            (&keys::HANDSHAKE_TIMEOUT, &self.handshake_timeout),
            (&keys::FRAME_TIMEOUT, &self.frame_timeout),
            (&keys::LISTEN_TCP, &self.listen_tcp),
            (&keys::PEER_BYTES_IN_FLIGHT, &self.peer_bytes_in_flight),
            (&keys::INSECURE_PLAINTEXT, &self.insecure_plaintext),
            (&keys::TLS_CERT, &self.tls_cert),
            (&keys::TLS_KEY, &self.tls_key),
            (&keys::LOG_LEVEL, &self.log_level),
        ];
        given
            .into_iter()
            .filter_map(|(key, value)| value.clone().map(|v| (key, v)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_has_a_flag() {
        let cmd = Args::command();
        for key in keys::KEYS {
            let arg = cmd
                .get_arguments()
                .find(|a| a.get_id() == key.name)
                .unwrap_or_else(|| panic!("no flag for {}", key.name));
            assert_eq!(
                arg.get_long().map(|l| format!("--{l}")),
                Some(key.flag()),
                "{}",
                key.name
            );
        }
        cmd.debug_assert();
    }

    #[test]
    fn flags_are_none_unless_given() {
        let args = Args::try_parse_from(["ringxferd", "--pipe-size", "2MiB"]).expect("parses");
        let given = args.flag_values();
        assert_eq!(given.len(), 1);
        assert_eq!(given[0].0.name, "pipe_size");
        assert_eq!(given[0].1, Value::Number(2 << 20));
        assert!(Args::try_parse_from(["ringxferd", "--ring-entries", "4"]).is_err());
        let err = Args::try_parse_from(["ringxferd", "--engine", "fast"])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--engine") && err.contains("\"fast\" is not one of uring, threads, auto"),
            "{err}"
        );
        let check = Args::try_parse_from(["ringxferd", "--check", "/tmp"]).expect("parses");
        assert_eq!(check.check_paths(), vec![PathBuf::from("/tmp")]);
        let bare = Args::try_parse_from(["ringxferd", "--check"]).expect("parses");
        assert!(bare.checking() && bare.check_paths().is_empty());
    }
}
