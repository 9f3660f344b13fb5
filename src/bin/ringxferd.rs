//! ringxferd: the transfer daemon. One thread, one io_uring ring, every client
//! connection and every transfer.

use std::os::fd::OwnedFd;
use std::process::ExitCode;

use ringxfer::daemon::activation::{self, Listening};
use ringxfer::daemon::notify;
use ringxfer::engine::signals::{self, ReloadableLimits, Reloaded, Reloader};
use ringxfer::engine::{Engine, EngineConfig, EngineError, EngineKind};
use ringxfer::settings::{keys, Args, Origin, Settings};
use tracing::{error, info, warn};

/// Swaps the log filter on reload.
type LogFilter = Box<dyn Fn(tracing_subscriber::EnvFilter) -> Result<(), String> + Send>;

fn main() -> ExitCode {
    keep_large_allocations_apart();
    let args = Args::parse_command_line();
    if let Some(dir) = &args.init_keys {
        return match ringxfer::tls::init_keys(dir) {
            Ok(pin) => {
                println!(
                    "wrote {0}/key.pem and {0}/cert.pem\nset tls_cert and tls_key to them; on each other daemon, add\n\n[[peer]]\nname = \"{1}\"\npin = \"{pin}\"",
                    dir.display(),
                    hostname()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("ringxferd: --init-keys: {e}");
                ExitCode::FAILURE
            }
        };
    }
    // Settings errors are usage errors (exit 2, like a bad flag): the daemon
    // was told something it cannot do, and nothing has started yet.
    let settings = match Settings::load(&args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ringxferd: {e}");
            return ExitCode::from(2);
        }
    };
    if args.checking() {
        let report = ringxfer::check::run(&settings, &args.check_paths());
        if args.json {
            println!("{}", report.to_json(&settings));
        } else {
            print!("{}", report.to_text(&settings));
        }
        return if report.ok() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }
    // Checked when the settings were read; kept as an error, not an unwrap.
    let filter = match tracing_subscriber::EnvFilter::try_new(&settings.log_level) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("ringxferd: invalid log level {:?}: {e}", settings.log_level);
            return ExitCode::from(2);
        }
    };
    let logging = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_filter_reloading();
    let handle = logging.reload_handle();
    let log_filter: LogFilter = Box::new(move |f| handle.reload(f).map_err(|e| e.to_string()));
    logging.init();
    info!(
        config = %settings.config_file,
        changed = %settings.overrides(),
        "settings"
    );
    let reloader = reloader(args, settings.clone(), log_filter);
    match serve(&settings, reloader) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e}");
            eprintln!("ringxferd: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the daemon. `args` are the resolved settings (flags over the
/// environment over the config file over defaults), with the fields the
/// flags had.
fn serve(args: &Settings, reloader: Reloader) -> Result<(), String> {
    let path = args.socket.clone();
    // A socket systemd passes wins over a default path, with a warning only
    // if one was asked for (flag, environment or file).
    let explicit = args.origin(&keys::SOCKET) != Origin::Default;
    // Before the socket takes connections, so that no signal sent once a
    // client can connect finds its default action (termination) in place.
    let signals = signals::install().map_err(|e| format!("cannot set up signal handling: {e}"))?;
    // While this is the only thread: it unsets LISTEN_FDS/LISTEN_PID.
    let listening = activation::listen(&path, explicit).map_err(|e| e.to_string())?;
    let max_jobs = fit_jobs_to_fd_limit(args.max_jobs, args.pipes);
    // Before the ring's workers share the table (see ringxfer::fdtable).
    ringxfer::fdtable::reserve(fd_need(max_jobs, args.pipes));
    let config = EngineConfig {
        engine: args.engine,
        ring_entries: args.ring_entries,
        max_jobs,
        max_jobs_per_connection: args.max_jobs_per_connection,
        pipes: args.pipes,
        pipe_size: u32::try_from(args.pipe_size)
            .map_err(|_| format!("--pipe-size {} is too large", args.pipe_size))?,
        buffers: args.buffers,
        buffer_size: usize::try_from(args.buffer_size)
            .map_err(|_| format!("--buffer-size {} is too large", args.buffer_size))?,
        buffers_per_job: args.buffers_per_job,
        direct_threshold: args.direct_threshold,
        chunks_per_job: args.chunks_per_job,
        max_inflight: usize::try_from(args.max_inflight).unwrap_or(usize::MAX),
        rate_limit: args.rate_limit.filter(|&r| r > 0),
        max_jobs_per_user: args.max_jobs_per_user,
        max_connections: args.max_connections,
        max_connections_per_user: args.max_connections_per_user,
        max_event_bytes: args.max_event_bytes,
        handshake_timeout: args.handshake_timeout,
        frame_timeout: args.frame_timeout,
        max_queued_bytes_per_connection: args.max_queued_bytes_per_connection,
        max_queued_bytes_per_user: args.max_queued_bytes_per_user,
        shutdown_grace: args.shutdown_grace,
        ..EngineConfig::default()
    };
    let heartbeat = notify::Heartbeat::from_env();
    let config = EngineConfig {
        tick: heartbeat.enabled().then(|| heartbeat.period()),
        ..config
    };
    let mut engine = Engine::new(config).map_err(|e| engine_error(&e, args))?;
    if heartbeat.enabled() {
        // Ticked from the loop itself, so a stuck loop starves the watchdog.
        engine.set_observer(Box::new(heartbeat));
    }
    let Listening {
        listener,
        address,
        from_systemd,
        socket_file,
        tcp,
    } = listening;
    info!(socket = %address, from_systemd, pid = std::process::id(), "listening");
    engine.set_listener(OwnedFd::from(listener));
    if let Some(peers) = ringxfer::daemon::peers::open(args, tcp)? {
        engine.set_peers(peers);
    }
    engine.set_signalfd(signals);
    engine.set_reloader(reloader);
    // Everything that needed privilege is done: the socket is bound, the
    // descriptor table grown, pipes sized, buffers registered.
    let kept = ringxfer::privileges::drop_after_startup()
        .map_err(|e| format!("{e}; refusing to serve with the privileges it started with"))?;
    info!(
        capabilities = %ringxfer::privileges::describe(kept),
        "privileges dropped"
    );
    notify::ready(&address, status_engine(engine.engine_kind()));
    // STOPPING=1 goes out from the loop when the first stop signal is read.
    engine.run().map_err(|e| e.to_string())?;
    drop(socket_file);
    if from_systemd {
        info!("stopped; the socket stays with systemd");
    } else {
        info!("stopped; socket removed");
    }
    Ok(())
}

/// This host's name, for the `[[peer]]` table --init-keys suggests.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "this-host".into())
}

/// Why the engine did not start: the error's own text (a failed
/// io_uring_setup already has its errno by name and what causes it here, as
/// `--check` gives them), and under `engine = uring` what would run instead.
fn engine_error(e: &EngineError, settings: &Settings) -> String {
    let mut text = e.to_string();
    if matches!(e, EngineError::RingSetup { .. }) && settings.engine == EngineKind::Uring {
        text += &format!(
            "; engine = uring ({}) runs only on io_uring: engine = auto would run the threads \
             engine instead",
            settings.origin(&keys::ENGINE)
        );
    }
    text
}

/// Descriptors besides jobs and pipes: connections, the ring, the signalfd,
/// logs. A generous reserve.
const FD_RESERVE: u64 = 256;

/// Descriptors the daemon holds at most with `max_jobs` jobs and `pipes` pipes.
fn fd_need(max_jobs: usize, pipes: usize) -> u64 {
    2 * (max_jobs as u64 + pipes as u64) + FD_RESERVE
}

/// Raises the open-file limit to its hard limit and lowers `max_jobs` to
/// what it allows: each job holds two client descriptors, each pipe two, and
/// connections and the daemon itself need some more. Running out would make
/// the kernel drop descriptors clients pass, and accept fail.
fn fit_jobs_to_fd_limit(max_jobs: usize, pipes: usize) -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid rlimit for getrlimit to fill.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return max_jobs;
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: `raised` is a valid rlimit; raising the soft limit up to the
        // hard one needs no privilege.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim.rlim_cur = lim.rlim_max;
        }
    }
    let limit = lim.rlim_cur;
    let fit = limit.saturating_sub(FD_RESERVE + 2 * pipes as u64) / 2;
    if (max_jobs as u64) > fit {
        let fit = fit.max(1) as usize;
        warn!(
            "--max-jobs lowered from {max_jobs} to {fit}: the open-file limit (RLIMIT_NOFILE) is {limit} and \
             each job holds two descriptors; raise LimitNOFILE / ulimit -n to admit more"
        );
        return fit;
    }
    max_jobs
}

/// Settings a reload applies while jobs run; any other changed key is
/// reported as needing a restart.
const RELOADABLE: &[&keys::Key] = &[
    &keys::LOG_LEVEL,
    &keys::RATE_LIMIT,
    &keys::MAX_JOBS_PER_CONNECTION,
    &keys::MAX_JOBS_PER_USER,
    &keys::MAX_CONNECTIONS,
    &keys::MAX_CONNECTIONS_PER_USER,
    &keys::MAX_EVENT_BYTES,
    &keys::MAX_QUEUED_BYTES_PER_CONNECTION,
    &keys::MAX_QUEUED_BYTES_PER_USER,
    &keys::DIRECT_THRESHOLD,
    &keys::SHUTDOWN_GRACE,
];

/// SIGHUP's reader: the settings again, from the same flags, environment
/// and config file as at start; the log filter is swapped here, the limits
/// by the engine.
fn reloader(args: Args, mut current: Settings, log_filter: LogFilter) -> Reloader {
    Box::new(move || {
        let new = Settings::load(&args).map_err(|e| e.to_string())?;
        let filter = tracing_subscriber::EnvFilter::try_new(&new.log_level)
            .map_err(|e| format!("invalid log level {:?}: {e}", new.log_level))?;
        let (applied, needs_restart) = changes(&current, &new);
        if new.log_level != current.log_level {
            log_filter(filter).map_err(|e| format!("cannot swap the log filter: {e}"))?;
        }
        let limits = ReloadableLimits {
            rate_limit: new.rate_limit.filter(|&r| r > 0),
            max_jobs_per_connection: new.max_jobs_per_connection,
            max_jobs_per_user: new.max_jobs_per_user,
            max_connections: new.max_connections,
            max_connections_per_user: new.max_connections_per_user,
            max_event_bytes: new.max_event_bytes,
            max_queued_bytes_per_connection: new.max_queued_bytes_per_connection,
            max_queued_bytes_per_user: new.max_queued_bytes_per_user,
            direct_threshold: new.direct_threshold,
            shutdown_grace: new.shutdown_grace,
        };
        // What needs a restart stays as it runs, and is reported again.
        current = new;
        Ok(Reloaded {
            limits,
            applied,
            needs_restart,
        })
    })
}

/// `key: old -> new` for each setting that differs, split into those a
/// reload applies and those that need a restart.
fn changes(old: &Settings, new: &Settings) -> (Vec<String>, Vec<String>) {
    let mut applied = Vec::new();
    let mut restart = Vec::new();
    for ((key, was, _), (_, now, _)) in old.describe().into_iter().zip(new.describe()) {
        if was != now {
            let line = format!("{}: {was} -> {now}", key.name);
            if RELOADABLE.iter().any(|k| k.name == key.name) {
                applied.push(line);
            } else {
                restart.push(line);
            }
        }
    }
    (applied, restart)
}

/// The engine as READY=1's status line names it: the one that runs, after
/// `auto` has chosen.
fn status_engine(kind: EngineKind) -> &'static str {
    match kind {
        EngineKind::Uring => "io_uring",
        EngineKind::Threads | EngineKind::Auto => "threads",
    }
}

/// Makes every allocation of 128 KiB or more a mapping of its own, returned
/// to the kernel when freed. glibc otherwise raises that threshold after the
/// first large free, and large event buffers (job listings for clients that
/// do not read them) then come from the heap, whose freed middle stays
/// resident: 1,000 such clients left 100 MiB behind after their events were
/// gone. Large allocations are rare here (no allocation per chunk), so the
/// extra mmap costs nothing that matters.
fn keep_large_allocations_apart() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets an allocator parameter; called first thing in
    // main, before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}
