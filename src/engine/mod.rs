//! The one thread: a ring, the op table, the pools and the loop that drives
//! every client connection and every transfer.
//!
//! Each turn of the loop hands queued entries to the kernel and waits for at
//! least one completion (one `io_uring_enter`), moves every ready completion
//! into a list, hands each to the part of the engine that owns its operation
//! (`dispatch`), and then lends idle pipes and buffers to jobs waiting for
//! one. Callbacks only queue entries; nothing here blocks.

mod admission;
mod coalesce;
mod connections;
mod control;
mod counters;
mod fd_closer;
mod jobs;
mod listener;
mod loopback;
mod peers;
mod publish;
mod rate;
mod scheduler;
mod sessions;
mod shares;
mod shutdown;
pub mod signals;
mod slots;
mod timers;

use std::os::fd::OwnedFd;
use std::time::Duration;

use crate::io::ring::Cqe;
use io_uring::cqueue;
use tracing::{debug, error, info, warn};

use crate::io::buffer_pool::{self, BufferPool};
use crate::io::ops::{OpTable, Owner, CANCEL_USER_DATA};
use crate::io::piece_pool::{PiecePool, PIECES};
use crate::io::pipe_pool::{self, PipePool};
use crate::io::ring::Ring;
use crate::io::Io;
pub use crate::io::{EngineError, EngineKind};
pub use peers::{Export, PeerSetup, DEFAULT_PEER_BYTES_IN_FLIGHT};
pub use shutdown::LoopObserver;
use shutdown::SHUTDOWN_NOW;

/// Settings of one engine.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// The I/O back end: io_uring, worker threads, or the first that works.
    pub engine: EngineKind,
    /// Submission queue entries of the ring.
    pub ring_entries: u32,
    /// Jobs admitted at once across all connections.
    pub max_jobs: usize,
    /// Jobs one connection may have unfinished at once.
    pub max_jobs_per_connection: usize,
    /// Pipes made at start-up.
    pub pipes: usize,
    /// Bytes each pipe is grown to.
    pub pipe_size: u32,
    /// Pipes one job uses at once.
    pub chunks_per_job: usize,
    /// The largest request frame accepted.
    pub max_frame: u32,
    /// Aligned I/O buffers made (and registered) at start-up, for the direct
    /// and uncached strategies.
    pub buffers: usize,
    /// Bytes of each buffer (a multiple of 4096).
    pub buffer_size: usize,
    /// Buffers one job uses at once.
    pub buffers_per_job: usize,
    /// Under `auto`, cold files at least this large go direct.
    pub direct_threshold: u64,
    /// Job I/O operations in flight at once across all jobs (each lent pipe
    /// or buffer carries one).
    pub max_inflight: usize,
    /// Bytes per second all jobs together may move; `None`: no limit.
    pub rate_limit: Option<u64>,
    /// Unfinished jobs one user may have across connections.
    pub max_jobs_per_user: usize,
    /// Client connections open at once, and per user.
    pub max_connections: usize,
    pub max_connections_per_user: usize,
    /// Bytes of events queued for all clients together.
    pub max_event_bytes: u64,
    /// How long a connection may take to send Hello, and to finish a frame.
    pub handshake_timeout: Duration,
    pub frame_timeout: Duration,
    /// Bytes one connection's jobs may still have to move (0: no limit).
    pub max_queued_bytes_per_connection: u64,
    /// Bytes one user's jobs may still have to move (0: no limit).
    pub max_queued_bytes_per_user: u64,
    /// After the first SIGTERM or SIGINT, how long running and queued jobs
    /// may take to finish before they are cancelled (zero: at once).
    pub shutdown_grace: Duration,
    /// How often the loop reports to its [`LoopObserver`] (`None`: never).
    pub tick: Option<Duration>,
}

impl EngineConfig {
    /// The defaults, as a constant so command-line flags can show them.
    pub const DEFAULT: EngineConfig = EngineConfig {
        engine: EngineKind::Auto,
        ring_entries: 256,
        max_jobs: 4096,
        max_jobs_per_connection: 1024,
        pipes: 32,
        pipe_size: 1 << 20,
        // Measured (benches/throughput/, 1 GiB hot copy on 2 cores): two
        // chunks give the best throughput; one chunk uses the least CPU
        // (like copy_file_range); four only add io-wq contention.
        chunks_per_job: 2,
        max_frame: ringxfer_ipc::DEFAULT_MAX_FRAME,
        buffers: 32,
        buffer_size: 1 << 20,
        buffers_per_job: 4,
        // Measured (cold cache, this VM's virtio disk): direct takes 1.4-2.8x
        // splice's wall time at 1-256 MiB, because splice returns with its
        // writes still dirty in the page cache, while direct costs about a
        // twentieth of the CPU (0.011 vs 0.2 s/GiB) and leaves both files
        // uncached. Below 32 MiB a copy's page-cache footprint (source plus
        // destination, at most 64 MiB) is too small to be worth the wait;
        // above it the footprint grows with the file and direct wins.
        direct_threshold: 32 << 20,
        // Every pool in full (32 pipes + 32 buffers + 8 worker pieces):
        // the cap matters when the pools are made larger than the ring and
        // io-wq should carry.
        max_inflight: 72,
        rate_limit: None,
        // A quarter of --max-jobs (and never more, see `user_job_cap`): one
        // or two users cannot take every job slot.
        max_jobs_per_user: 1024,
        // A quarter of the whole per user: one or two users cannot take
        // every connection.
        max_connections: 4096,
        max_connections_per_user: 1024,
        // 1,000 clients that never read hold at most this much.
        max_event_bytes: 32 << 20,
        handshake_timeout: Duration::from_secs(10),
        frame_timeout: Duration::from_secs(30),
        max_queued_bytes_per_connection: 0,
        max_queued_bytes_per_user: 0,
        // Long enough for most jobs in flight to end, well inside systemd's
        // default TimeoutStopSec of 90 s.
        shutdown_grace: Duration::from_secs(30),
        tick: None,
    };
}

impl EngineConfig {
    /// The most unfinished jobs one user may have: `--max-jobs-per-user`,
    /// but never more than a quarter of `--max-jobs` (at least one), so one
    /// or two users leave at least half of the daemon's jobs to the others
    /// whatever the two flags say.
    pub fn user_job_cap(&self) -> usize {
        self.max_jobs_per_user.min((self.max_jobs / 4).max(1))
    }
}

impl Default for EngineConfig {
    fn default() -> EngineConfig {
        EngineConfig::DEFAULT
    }
}

/// Progress events go out at most this often per job.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(100);
/// Finished jobs remembered for `Status` and `Wait`.
const RECENT_JOBS: usize = 1024;

/// The engine: everything the loop thread owns, in parts. A part whose work
/// needs no other part has its methods on itself (the borrow checker then
/// lets a method of `Engine` lend two parts at once); the rest are methods
/// of `Engine` in the part's file.
pub struct Engine {
    config: EngineConfig,
    /// The ring and its op table (src/io). Declared before `slots`, so the
    /// ring (which has the buffers registered) is closed before their
    /// memory is freed.
    io: Io,
    /// Client connections (sessions.rs).
    sessions: sessions::Sessions,
    /// Jobs running, being admitted, and recently finished (jobs.rs).
    jobs: jobs::Jobs,
    /// The pipes and buffers jobs borrow, and who waits for them (slots.rs).
    slots: slots::Slots,
    /// The engine's own timers in flight (timers.rs).
    timers: timers::Timers,
    /// What `Request::Stats` reports (counters.rs).
    counters: counters::Counters,
    /// Client descriptors on their way to being closed (fd_closer.rs).
    closing: fd_closer::Closing,
    /// The listening socket (listener.rs).
    listener: listener::Listener,
    /// Other daemons pushing files in (peers/).
    peers: peers::Peers,
    /// The signalfd and SIGHUP's reload (signals.rs).
    signals: signals::Signals,
    /// Draining, stopping, and who watches the loop (shutdown.rs).
    life: shutdown::Life,
    /// The completions of one turn; kept to reuse its memory.
    cqes: Vec<Cqe>,
}

/// Refuses settings the engine cannot run with, and warns of a per-user
/// job limit that the cap of a quarter of `--max-jobs` lowers.
fn check_config(config: &EngineConfig) -> Result<(), EngineError> {
    if config.pipes == 0
        || config.chunks_per_job == 0
        || config.max_jobs == 0
        || config.buffers_per_job == 0
    {
        return Err(EngineError::Config(
            "pipes, chunks per job, buffers per job and max jobs must each be at least 1".into(),
        ));
    }
    if config.user_job_cap() < config.max_jobs_per_user {
        warn!(
            "--max-jobs-per-user {} is more than a quarter of --max-jobs {}: each user may have at most {} \
             unfinished jobs, so one or two users cannot take every job",
            config.max_jobs_per_user,
            config.max_jobs,
            config.user_job_cap()
        );
    }
    Ok(())
}

/// The pipe pool: as many pipes as asked, or as the user's pipe budget
/// allows, or as could be made (at least one).
fn make_pipes(config: &EngineConfig) -> Result<PipePool, EngineError> {
    let mut wanted = config.pipes;
    if let Some((budget, soft)) = pipe_pool::pipe_budget(config.pipe_size) {
        if budget < wanted {
            warn!(
                "pipe pool limited to {budget} pipes of {} bytes (asked for {wanted}): an unprivileged user's \
                 pipes may hold {soft} pages in all (/proc/sys/fs/pipe-user-pages-soft); raise it, run as root, \
                 or lower --pipe-size",
                config.pipe_size
            );
            wanted = budget.max(1);
        }
    }
    let (pipes, err) = PipePool::new(wanted, config.pipe_size);
    if let Some(err) = err {
        if pipes.total() == 0 {
            return Err(EngineError::NoPipes(err));
        }
        warn!(
            wanted,
            made = pipes.total(),
            "pipe pool is smaller than asked: {err}"
        );
    }
    Ok(pipes)
}

/// Registers the buffer pool with the ring; without it (RLIMIT_MEMLOCK)
/// the buffers are used unregistered, with plain READ/WRITE.
fn register_buffers(ring: &mut Ring, buffers: &mut BufferPool) {
    if buffers.total() == 0 {
        return;
    }
    let iovecs = buffers.iovecs();
    // SAFETY: the pool's memory stays allocated and unmoved until
    // after the ring is closed (field order, and Drop leaks the pool
    // while operations are in flight).
    match unsafe { ring.register_buffers(&iovecs) } {
        Ok(()) => buffers.mark_registered(),
        Err(e) => warn!(
            "registering {} I/O buffers of {} bytes with the ring failed ({e}); running with \
             unregistered buffers (plain READ/WRITE). Registration pins memory, which counts \
             against RLIMIT_MEMLOCK (now {} bytes) without CAP_IPC_LOCK: raise it \
             (LimitMEMLOCK= in the unit, ulimit -l) to at least {} bytes",
            buffers.total(),
            buffers.buffer_size(),
            buffer_pool::memlock_limit().map_or("unknown".into(), |l| l.to_string()),
            buffers.total() * buffers.buffer_size() + (1 << 20),
        ),
    }
}

impl Engine {
    /// Makes the ring and the pools. Call it on the thread that will run the
    /// loop: the ring accepts submissions from that thread only.
    pub fn new(config: EngineConfig) -> Result<Engine, EngineError> {
        check_config(&config)?;
        let mut ring = Ring::new(config.ring_entries, config.engine)?;
        if let Some(why) = &ring.fallback_reason {
            warn!("io_uring is unavailable ({why}); using the threads engine");
        }
        let pipes = make_pipes(&config)?;
        let mut buffers = BufferPool::new(config.buffers, config.buffer_size)?;
        register_buffers(&mut ring, &mut buffers);
        info!(
            engine = ring.kind().name(),
            ring_entries = config.ring_entries,
            ring_setup = ring.setup,
            pipes = pipes.total(),
            pipe_capacity = pipes.pipe_capacity(),
            buffers = buffers.total(),
            buffer_size = buffers.buffer_size(),
            buffers_registered = buffers.registered(),
            max_jobs = config.max_jobs,
            "engine ready"
        );
        let ops = OpTable::with_capacity(config.ring_entries as usize * 2);
        Ok(Engine {
            io: Io { ring, ops },
            sessions: sessions::Sessions::new(),
            jobs: jobs::Jobs::new(),
            slots: slots::Slots::new(&config, pipes, buffers, PiecePool::new(PIECES)),
            timers: timers::Timers::default(),
            counters: counters::Counters::new(),
            closing: fd_closer::Closing::new(),
            listener: listener::Listener::default(),
            peers: peers::Peers::default(),
            signals: signals::Signals::new(),
            life: shutdown::Life::default(),
            cqes: Vec::with_capacity(config.ring_entries as usize * 4),
            config,
        })
    }

    /// Serves one already-connected client; with `exit_when_idle`, the loop
    /// returns once no connection and no job is left.
    pub fn add_connection(&mut self, fd: OwnedFd, exit_when_idle: bool) {
        self.life.exit_when_idle = exit_when_idle;
        self.open_session(fd);
    }

    /// The back end this engine runs on: `Uring` or `Threads` (never `Auto`:
    /// that choice is made at start-up).
    pub fn engine_kind(&self) -> EngineKind {
        self.io.ring.kind()
    }

    /// Runs the loop until a signal stops it (or, with `exit_when_idle`,
    /// until the last connection and job are gone).
    pub fn run(&mut self) -> Result<(), EngineError> {
        self.arm_listener();
        self.arm_tcp_listener();
        self.signals.arm(&mut self.io);
        self.arm_tick();
        loop {
            // Closes in flight are the kernel's business now: they hold no
            // memory of ours, and a lingering socket may take its time.
            let waiting_for = self.io.ops.len() - self.closing.in_flight;
            self.cancel_signal_read_if_last(waiting_for);
            if self.should_exit(waiting_for) {
                break;
            }
            if self.io.ops.is_empty() && !self.io.ring.has_queued() {
                // Nothing in flight and nothing to submit: waiting would never end.
                error!("the loop has nothing in flight; stopping");
                break;
            }
            self.io.ring.submit(1)?;
            let mut cqes = std::mem::take(&mut self.cqes);
            cqes.clear();
            self.io.ring.reap(&mut cqes);
            for cqe in &cqes {
                self.dispatch(cqe.user_data, cqe.result, cqe.flags);
            }
            self.cqes = cqes;
            self.lend();
            self.stop_if_drained();
            self.closing.close_doomed(&mut self.io);
        }
        info!(
            jobs_completed = self.counters.jobs_completed,
            jobs_failed = self.counters.jobs_failed,
            bytes = self.counters.bytes_finished,
            "engine stopped"
        );
        Ok(())
    }

    /// Hands a completion to the part that owns its operation.
    fn dispatch(&mut self, user_data: u64, result: i32, flags: u32) {
        if user_data == CANCEL_USER_DATA {
            return;
        }
        if cqueue::more(flags) || cqueue::notif(flags) {
            return self.on_zero_copy(user_data, result, flags);
        }
        let Some(op) = self.io.ops.complete(user_data) else {
            error!(
                user_data,
                result, "completion for an operation not in the table"
            );
            return;
        };
        match op.owner {
            Owner::Listener => self.on_listener_op(op, result),
            Owner::Session(_) => self.on_session_op(op, result),
            Owner::Admission(_) => self.on_admission_op(op, result),
            // A push's control frames: the op hands back its own buffer.
            Owner::Job(k) if jobs::is_control(op.tag) => self.on_job_control(k, op, result),
            Owner::Job(k) => {
                // The op's references to the pipe and descriptors go first,
                // so a chunk that is done can hand its pipe straight back;
                // a buffer goes back to the job that lent it.
                let buf = op.op.into_buffer();
                self.on_job(k, op.tag, result, buf);
            }
            Owner::Signal => self.on_signal_op(op, result),
            Owner::Closer => self.closing.on_closed(result),
            Owner::TcpListener | Owner::Peer(_) => self.on_peer_op(op, result),
            Owner::Throttle
            | Owner::Stall
            | Owner::Grace
            | Owner::Tick
            | Owner::HoldTimer
            | Owner::Housekeeping => self.on_timer(op, user_data, result),
        }
    }
}

impl Drop for Engine {
    /// The kernel may still write into what in-flight operations hold until
    /// their completions arrive, and closing the ring does not wait for that.
    /// The loop only ends with the table empty; if it ended early on an
    /// error, what the table holds is leaked rather than freed under the kernel.
    fn drop(&mut self) {
        if !self.io.ops.is_empty() {
            if self.io.ops.len() > self.closing.in_flight + usize::from(self.signals.op.is_some()) {
                warn!(
                    in_flight = self.io.ops.len(),
                    "engine dropped with operations in flight"
                );
            }
            debug!(
                in_flight = self.io.ops.len(),
                "leaking the op table rather than freeing what the kernel may still touch"
            );
            std::mem::forget(std::mem::replace(
                &mut self.io.ops,
                OpTable::with_capacity(0),
            ));
            // Buffers an operation may still read or write are leaked too.
            if let Ok(empty) = BufferPool::new(0, buffer_pool::BUFFER_ALIGN) {
                std::mem::forget(std::mem::replace(&mut self.slots.buffers, empty));
            }
        }
    }
}

/// The kinds of pool resource jobs borrow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resource {
    Pipe = 0,
    Buffer = 1,
    /// A worker piece: one copy_file_range or sendfile in flight.
    Piece = 2,
}

impl Resource {
    const ALL: [Resource; RESOURCES] = [Resource::Pipe, Resource::Buffer, Resource::Piece];
}

/// How many kinds of resource there are: the length of every per-kind count.
const RESOURCES: usize = 3;
