//! The one thread: a ring, the op table, the pools and the loop that drives
//! every client connection and every transfer.
//!
//! Each turn of the loop hands queued entries to the kernel and waits for at
//! least one completion (one `io_uring_enter`), moves every ready completion
//! into a list, runs the owner's callback for each, and then lends idle pipes
//! to jobs waiting for one. Callbacks only queue entries; nothing here blocks.

mod admission;
mod coalesce;
mod connections;
mod control;
mod fd_closer;
mod jobs;
mod loopback;
mod publish;
pub mod rate;
pub mod scheduler;
mod sessions;
mod shares;
mod shutdown;
pub mod signals;
mod slots;

use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use crate::io::ring::Cqe;
use io_uring::cqueue;
use ringxfer_ipc::{StatsReport, Strategy, StrategyStats};
use slab::Slab;
use tracing::{debug, error, info, warn};

use crate::io::buffer_pool::{self, BufferPool};
use crate::io::op::AnyOp;
use crate::io::ops::{Op, OpTable, Owner, CANCEL_USER_DATA};
use crate::io::pipe_pool::{self, PipePool};
use crate::io::ring::Ring;
use crate::io::Io;
pub use crate::io::{EngineError, EngineKind};
use crate::server::session::Session;
use crate::transfer::splice::Returned;
use crate::transfer::step::CopyStep;
use crate::transfer::TransferError;
use fd_closer::FdCloser;
use jobs::{Finished, Job};
use rate::TokenBucket;
use scheduler::FairQueue;
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
        // Measured (benches/throughput.rs, 1 GiB hot copy on 2 cores): two
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
        // Both pools in full (32 pipes + 32 buffers): the cap matters when
        // the pools are made larger than the ring and io-wq should carry.
        max_inflight: 64,
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

/// How long the listener waits before accepting again after running out of
/// descriptors.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Progress events go out at most this often per job.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(100);
/// Finished jobs remembered for `Status` and `Wait`.
const RECENT_JOBS: usize = 1024;

/// The engine: everything the loop thread owns.
pub struct Engine {
    config: EngineConfig,
    /// The ring and its op table (src/io).
    io: Io,
    sessions: Slab<Session>,
    jobs: Slab<Job>,
    job_ids: HashMap<u64, usize>,
    /// Submits whose descriptors statx is asked about (admission.rs).
    admissions: admission::Admissions,
    pipes: PipePool,
    /// Declared after `ring`, so the ring (which has the buffers registered)
    /// is closed before their memory is freed.
    buffers: BufferPool,
    /// Jobs waiting for a pipe (index 0) or a buffer (index 1).
    queues: [FairQueue; 2],
    /// Jobs parked until their rate limits allow more.
    throttled: Vec<usize>,
    /// The rate-limit timer in flight and when it fires.
    throttle_timer: Option<(u64, Instant)>,
    /// The daemon-wide rate limit.
    global_bucket: Option<TokenBucket>,
    /// Unfinished jobs, bytes still to move, slots held and jobs waiting,
    /// per user (shares.rs).
    users: shares::Users,
    /// The timer that looks for stalled jobs, in flight.
    stall_timer: Option<u64>,
    /// Finished jobs, oldest first, at most `RECENT_JOBS`.
    recent: VecDeque<Finished>,
    /// Counters by strategy: splice, direct, uncached, buffered.
    by_strategy: [StrategyStats; 4],
    listener: Option<OwnedFd>,
    /// The listener's address, to refuse job descriptors that connect to it.
    listener_address: Option<loopback::UnixAddress>,
    listener_op: Option<u64>,
    signals: Option<OwnedFd>,
    signal_op: Option<u64>,
    /// SIGHUP's reload: the reader, and its result on the way back.
    reload: signals::Reload,
    /// Connections per user, and their deadline timer.
    connections: connections::Connections,
    /// The first stop signal came: no new jobs; the rest finish or time out.
    draining: bool,
    /// The grace period's timer in flight.
    grace_timer: Option<u64>,
    /// The observer's timer in flight.
    tick_timer: Option<u64>,
    /// Events encoded for clients, and the sends that carried them.
    events_sent: u64,
    event_sends: u64,
    events_held: u64,
    /// The timer that sends held final events, in flight (see `coalesce`).
    hold_timer: Option<u64>,
    /// Sessions that may hold events (possibly some twice, or gone).
    held_sessions: Vec<usize>,
    observer: Option<Box<dyn LoopObserver>>,
    /// The observer was told the engine is stopping; no more ticks.
    observer_done: bool,
    stopping: bool,
    signal_cancelled: bool,
    stop_now: bool,
    exit_when_idle: bool,
    next_job_id: u64,
    next_session_id: u64,
    cqes: Vec<Cqe>,
    returned: Vec<Returned>,
    /// Client descriptors to close at the end of this turn, off the loop
    /// thread: a client's descriptor can be a socket with SO_LINGER or a file
    /// on a network file system, whose last close may block.
    doomed: Vec<OwnedFd>,
    /// The thread that closes them (see fd_closer); without it, or when its
    /// queue is full, they are closed through the ring.
    closer: Option<FdCloser>,
    /// Close operations in flight; the loop does not wait for them to stop.
    closes_in_flight: usize,
    started: Instant,
    jobs_completed: u64,
    jobs_failed: u64,
    bytes_finished: u64,
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
        let closer = FdCloser::start()
            .map_err(|e| warn!("cannot start the closing thread ({e}); closing through the ring"))
            .ok();
        Ok(Engine {
            io: Io { ring, ops },
            sessions: Slab::with_capacity(64),
            jobs: Slab::with_capacity(256),
            job_ids: HashMap::with_capacity(256),
            admissions: admission::Admissions::default(),
            pipes,
            buffers,
            queues: [
                FairQueue::with_capacity(config.max_jobs * 2, 0, 2),
                FairQueue::with_capacity(config.max_jobs * 2, 1, 2),
            ],
            throttled: Vec::with_capacity(64),
            throttle_timer: None,
            global_bucket: config
                .rate_limit
                .filter(|&r| r > 0)
                .map(|r| TokenBucket::new(r, Instant::now())),
            users: shares::Users::default(),
            stall_timer: None,
            recent: VecDeque::with_capacity(RECENT_JOBS),
            by_strategy: [
                Strategy::Splice,
                Strategy::Direct,
                Strategy::Uncached,
                Strategy::Buffered,
            ]
            .map(|s| StrategyStats {
                strategy: Some(s),
                ..StrategyStats::default()
            }),
            listener: None,
            listener_address: None,
            listener_op: None,
            signals: None,
            signal_op: None,
            reload: signals::Reload::new(),
            connections: connections::Connections::default(),
            draining: false,
            grace_timer: None,
            tick_timer: None,
            events_sent: 0,
            event_sends: 0,
            events_held: 0,
            hold_timer: None,
            held_sessions: Vec::with_capacity(16),
            observer: None,
            observer_done: false,
            stopping: false,
            signal_cancelled: false,
            stop_now: false,
            exit_when_idle: false,
            next_job_id: 1,
            next_session_id: 1,
            cqes: Vec::with_capacity(config.ring_entries as usize * 4),
            returned: Vec::with_capacity(16),
            doomed: Vec::with_capacity(16),
            closer,
            closes_in_flight: 0,
            started: Instant::now(),
            jobs_completed: 0,
            jobs_failed: 0,
            bytes_finished: 0,
            config,
        })
    }

    /// Serves connections accepted on `listener`.
    pub fn set_listener(&mut self, listener: OwnedFd) {
        self.listener_address = loopback::listener_address(&listener);
        self.listener = Some(listener);
    }

    /// Reads the daemon's signals from `signalfd` (made by
    /// [`signals::install`]): the first stop signal drains, a second stops
    /// at once; SIGHUP reloads (see [`Engine::set_reloader`]).
    pub fn set_signalfd(&mut self, signalfd: OwnedFd) {
        self.signals = Some(signalfd);
    }

    /// Serves one already-connected client; with `exit_when_idle`, the loop
    /// returns once no connection and no job is left.
    pub fn add_connection(&mut self, fd: OwnedFd, exit_when_idle: bool) {
        self.exit_when_idle = exit_when_idle;
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
        self.arm_signals();
        self.arm_tick();
        loop {
            // Closes in flight are the kernel's business now: they hold no
            // memory of ours, and a lingering socket may take its time.
            let waiting_for = self.io.ops.len() - self.closes_in_flight;
            if self.stopping && waiting_for == 1 && !self.signal_cancelled {
                // Only the signal read is left: nothing else can finish now,
                // so take it back too, and exit once its completion is in.
                if let Some(ud) = self.signal_op {
                    self.signal_cancelled = true;
                    let _ = self.io.cancel(ud);
                }
            }
            if self.stop_now
                || (self.stopping && waiting_for == 0)
                || (self.exit_when_idle
                    && self.sessions.is_empty()
                    && self.jobs.is_empty()
                    && self.io.ops.is_empty())
            {
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
            if self.draining
                && !self.stopping
                && self.jobs.is_empty()
                && self.admissions.live() == 0
            {
                info!("every job has ended; stopping");
                self.stop();
            }
            self.close_doomed();
        }
        info!(
            jobs_completed = self.jobs_completed,
            jobs_failed = self.jobs_failed,
            bytes = self.bytes_finished,
            "engine stopped"
        );
        Ok(())
    }

    fn dispatch(&mut self, user_data: u64, result: i32, flags: u32) {
        if user_data == CANCEL_USER_DATA {
            return;
        }
        if cqueue::more(flags) {
            // The first of a SEND_ZC's two completions: the entry (and the
            // buffer it holds) stays until the notification.
            if let Some(&Op {
                owner: Owner::Job(k),
                tag,
                ..
            }) = self.io.ops.peek(user_data)
            {
                if let Some(CopyStep::BufOut(slot)) = CopyStep::from_tag(tag) {
                    self.on_job(k, CopyStep::ZcSent(slot).tag(), result, None);
                }
            }
            return;
        }
        if cqueue::notif(flags) {
            if let Some(Op {
                owner: Owner::Job(k),
                tag,
                op,
            }) = self.io.ops.complete(user_data)
            {
                if let Some(CopyStep::BufOut(slot)) = CopyStep::from_tag(tag) {
                    // The kernel is done with the buffer: it goes back to the job.
                    self.on_job(k, CopyStep::ZcNotif(slot).tag(), result, op.into_buffer());
                }
            }
            return;
        }
        let Some(op) = self.io.ops.complete(user_data) else {
            error!(
                user_data,
                result, "completion for an operation not in the table"
            );
            return;
        };
        let Op { owner, tag, op } = op;
        match (owner, op) {
            (Owner::Listener, AnyOp::Timeout(_)) => self.arm_listener(),
            (Owner::Listener, _) => self.on_accept(result),
            (Owner::Session(k), AnyOp::RecvMsg(op)) => {
                let buf: Box<dyn std::any::Any> = op.into_target();
                match buf.downcast() {
                    Ok(buf) => self.on_recv(k, result, buf),
                    Err(_) => error!("a receive completed without the session's buffer"),
                }
            }
            (Owner::Session(k), AnyOp::Send(op)) => {
                let buf: Option<Box<dyn std::any::Any>> = op.into_bytes().map(|b| b as _);
                match buf.map(|b| b.downcast()) {
                    Some(Ok(buf)) => self.on_send(k, result, buf),
                    _ => error!("a send completed without the session's buffer"),
                }
            }
            (Owner::Admission(a), AnyOp::Statx(op)) => {
                // The op's share of the descriptors goes first, so the last
                // statx back leaves them to the admission alone.
                let buf = op.into_buf();
                let which = u8::try_from(tag).unwrap_or(u8::MAX);
                self.on_statx(a, which, result, &buf);
            }
            (Owner::Job(k), op) => {
                // The op's references to the pipe and descriptors go first,
                // so a chunk that is done can hand its pipe straight back;
                // a buffer goes back to the job that lent it.
                let buf = op.into_buffer();
                self.on_job(k, tag, result, buf);
            }
            (Owner::Signal, AnyOp::ReadSmall(op)) => self.on_signal(result, &op.buf),
            (Owner::Signal, _) => self.on_signal(result, &[0; 128]),
            (Owner::Throttle, _) => self.on_throttle_timer(user_data),
            (Owner::Stall, _) => self.on_stall_timer(),
            (Owner::Grace, _) => self.on_grace_timer(result),
            (Owner::Tick, _) => self.on_tick(result),
            (Owner::HoldTimer, _) => self.on_hold_timer(),
            (Owner::Housekeeping, _) => self.on_deadlines(result),
            (Owner::Closer, _) => {
                self.closes_in_flight -= 1;
                if result < 0 {
                    // A close can report a failed writeback (EIO) or a full
                    // disk on network file systems.
                    warn!(
                        "closing a job's descriptor failed: {}",
                        std::io::Error::from_raw_os_error(-result)
                    );
                }
            }
            (owner, _) => error!(?owner, tag, "completion of an unexpected kind"),
        }
    }

    // ---- listener and signals -------------------------------------------------

    fn arm_listener(&mut self) {
        if self.stopping || self.draining {
            return;
        }
        let Some(fd) = self.listener.as_ref().map(|l| l.as_raw_fd()) else {
            return;
        };
        match self.io.accept(fd) {
            Ok(ud) => self.listener_op = Some(ud),
            Err(e) => error!("cannot queue accept: {e}"),
        }
    }

    fn on_accept(&mut self, result: i32) {
        self.listener_op = None;
        if result >= 0 {
            // SAFETY: a successful accept returns a new descriptor that only
            // this completion knows about.
            let fd = unsafe { OwnedFd::from_raw_fd(result) };
            if self.stopping || self.draining {
                drop(fd);
            } else {
                self.open_session(fd);
            }
        } else if -result != libc::ECANCELED {
            let err = std::io::Error::from_raw_os_error(-result);
            warn!("accept on the listening socket failed: {err}");
            if !self.stopping
                && matches!(
                    -result,
                    libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM
                )
            {
                // Out of descriptors or memory: accepting again at once would
                // fail again at once. Wait for jobs to end and give some back.
                match self.io.timeout(Owner::Listener, ACCEPT_BACKOFF) {
                    Ok(_) => return,
                    Err(e) => error!("cannot queue the accept back-off timer: {e}"),
                }
            }
        }
        if self.stopping || self.draining {
            // Close it now, so that new clients are refused at once instead
            // of waiting in the backlog of a daemon that will not answer.
            // (A socket systemd passed stays open in systemd, which queues
            // new clients for the next start.)
            self.listener = None;
            return;
        }
        self.arm_listener();
    }

    /// Stops accepting, cancels every job and closes every connection; the
    /// loop ends when the last operation has completed.
    pub fn stop(&mut self) {
        self.stop_with(SHUTDOWN_NOW);
    }

    /// As [`Engine::stop`]; `why` is what each cancelled job's owner is told.
    fn stop_with(&mut self, why: &str) {
        if self.stopping {
            return;
        }
        self.stopping = true;
        self.notify_stopping();
        for ud in [
            self.listener_op,
            self.grace_timer.take(),
            self.tick_timer.take(),
            self.connections.take_timer(),
            self.stall_timer.take(),
        ]
        .into_iter()
        .flatten()
        {
            let _ = self.io.cancel(ud);
        }
        if let Some((ud, _)) = self.throttle_timer.take() {
            let _ = self.io.cancel(ud);
        }
        // Submits still being admitted and jobs first, so their owners hear
        // why; then the connections. Detached jobs outlive their
        // connections, but not the daemon.
        self.refuse_admissions(&TransferError::new(
            ringxfer_ipc::FailureKind::ShuttingDown,
            "the daemon is shutting down and takes no new jobs",
        ));
        let keys: Vec<usize> = self.jobs.iter().map(|(k, _)| k).collect();
        for k in keys {
            self.fail_job(k, TransferError::cancelled(why));
        }
        let keys: Vec<usize> = self.sessions.iter().map(|(k, _)| k).collect();
        for k in keys {
            self.close_session(k, "the daemon is shutting down");
        }
    }

    /// Closes the client descriptors dropped this turn: hands them to the
    /// closing thread, or closes them through the ring.
    fn close_doomed(&mut self) {
        while let Some(fd) = self.doomed.pop() {
            let fd = match &self.closer {
                Some(closer) => match closer.hand_over(fd) {
                    Ok(()) => continue,
                    Err(fd) => fd,
                },
                None => fd,
            };
            let io = &mut self.io;
            if io.close_async(fd) {
                self.closes_in_flight += 1;
            }
        }
    }

    /// The counters `Request::Stats` answers with.
    pub fn stats(&self) -> StatsReport {
        let running: u64 = self.jobs.iter().map(|(_, j)| j.copy.moved()).sum();
        let count = |f: fn(&Job) -> bool| self.jobs.iter().filter(|(_, j)| f(j)).count() as u64;
        StatsReport {
            uptime_ms: self.started.elapsed().as_millis().min(u64::MAX as u128) as u64,
            connections: self.sessions.len() as u64,
            jobs_running: self.jobs.len() as u64,
            jobs_queued: count(|j| j.state() == ringxfer_ipc::JobState::Queued),
            jobs_throttled: count(|j| j.throttled),
            jobs_detached: count(|j| j.detach),
            jobs_completed: self.jobs_completed,
            jobs_failed: self.jobs_failed,
            bytes_moved: self.bytes_finished + running,
            sqes_submitted: self.io.ring.sqes_submitted,
            enter_calls: self.io.ring.enter_calls,
            events_sent: self.events_sent,
            event_sends: self.event_sends,
            events_held: self.events_held,
            pipes_total: self.pipes.total() as u64,
            pipes_in_use: (self.pipes.total() - self.pipes.idle()) as u64,
            pipe_capacity: u64::from(self.pipes.pipe_capacity()),
            buffers_total: self.buffers.total() as u64,
            buffers_in_use: (self.buffers.total() - self.buffers.idle()) as u64,
            buffer_size: self.buffers.buffer_size() as u64,
            buffers_registered: self.buffers.registered(),
            ops_in_flight: self.slots_lent() as u64,
            max_ops_in_flight: self.config.max_inflight as u64,
            rate_limit: self.global_bucket.as_ref().map(TokenBucket::rate),
            strategies: self.by_strategy.to_vec(),
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
            if self.io.ops.len() > self.closes_in_flight + usize::from(self.signal_op.is_some()) {
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
                std::mem::forget(std::mem::replace(&mut self.buffers, empty));
            }
        }
    }
}

/// The two kinds of pool resource jobs borrow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resource {
    Pipe = 0,
    Buffer = 1,
}
