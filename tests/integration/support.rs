//! The daemon harness and the helpers every test module shares.

#![allow(dead_code)]

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use ringxfer_ipc::{Client, Completion, JobError, JobHandle, Strategy, TransferOptions};

/// The daemon binary built by cargo for this test run.
pub const DAEMON_BIN: &str = env!("CARGO_BIN_EXE_ringxferd");
/// The CLI binary built by cargo for this test run.
pub const CLI_BIN: &str = env!("CARGO_BIN_EXE_ringxfer");

/// How long a single job may take before a test calls it hung.
pub const JOB_TIMEOUT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------
// Test data

/// A connected pair of loopback TCP sockets: (client side, accepted side).
pub fn tcp_pair() -> (std::net::TcpStream, std::net::TcpStream) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (a, _) = l.accept().unwrap();
    (c, a)
}

/// A loopback TCP connection whose far end a thread reads to its end (or
/// for 30 s without a byte): the connection, and the thread that hands
/// back every byte it read.
pub fn tcp_to_reader() -> (
    std::net::TcpStream,
    std::thread::JoinHandle<std::io::Result<Vec<u8>>>,
) {
    use std::io::Read;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let reader = std::thread::spawn(move || -> std::io::Result<Vec<u8>> {
        let (mut s, _) = listener.accept()?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        let mut v = Vec::new();
        s.read_to_end(&mut v)?;
        Ok(v)
    });
    (std::net::TcpStream::connect(addr).unwrap(), reader)
}

/// A fresh temporary directory on the real disk (under cargo's target tmpdir).
pub fn tmpdir() -> tempfile::TempDir {
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(&base).expect("create CARGO_TARGET_TMPDIR");
    tempfile::Builder::new()
        .prefix("ringxfer-it-")
        .tempdir_in(&base)
        .expect("create tempdir")
}

/// A fresh directory that every user may search (mode 0755), under the
/// system's temporary directory rather than the checkout: a test that runs
/// something as another user must work from a checkout only root can enter
/// (a clone under /root or in `mktemp -d`, both 0700).
pub fn world_tmpdir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let base = [std::env::temp_dir(), PathBuf::from("/tmp")]
        .into_iter()
        .find(|b| open_to_others(b))
        .expect("neither $TMPDIR nor /tmp is searchable by other users");
    let dir = tempfile::Builder::new()
        .prefix("ringxfer-it-shared-")
        .tempdir_in(&base)
        .expect("create a shared tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod 0755 the shared tempdir");
    dir
}

/// Whether every ancestor of `path` (itself included) lets other users in.
pub fn open_to_others(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.ancestors()
        .all(|p| std::fs::metadata(p).is_ok_and(|m| m.permissions().mode() & 0o001 != 0))
}

/// A copy of the executable `bin` in `dir` (a [`world_tmpdir`]) that other
/// users may run, wherever the checkout that built it lies.
pub fn executable_for_others(bin: &Path, dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let name = bin.file_name().expect("an executable has a file name");
    let copy = dir.join(name);
    // Copied by cp, never by this process: a descriptor open for writing
    // in a multi-threaded test process is inherited by every child another
    // test forks meanwhile, and exec of the copy then fails with ETXTBSY
    // ("Text file busy") until that child has exec'd in turn.
    let status = Command::new("cp")
        .arg(bin)
        .arg(&copy)
        .status()
        .unwrap_or_else(|e| panic!("run cp {} {}: {e}", bin.display(), copy.display()));
    assert!(
        status.success(),
        "cp {} {}: {status}",
        bin.display(),
        copy.display()
    );
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755))
        .expect("chmod 0755 the copied executable");
    copy
}

/// `len` deterministic pseudo-random bytes (xorshift64), different per `seed`.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    if x == 0 {
        x = 1;
    }
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Writes `pattern(seed, len)` to `dir/name` and returns the path and the bytes.
pub fn make_file(dir: &Path, name: &str, len: usize, seed: u64) -> (PathBuf, Vec<u8>) {
    let data = pattern(seed, len);
    let path = dir.join(name);
    std::fs::write(&path, &data).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    (path, data)
}

/// Opens `path` for reading.
pub fn open_src(path: &Path) -> File {
    File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
}

/// Creates (or truncates) `path` for writing, O_WRONLY.
pub fn create_dst(path: &Path) -> File {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .unwrap_or_else(|e| panic!("create {}: {e}", path.display()))
}

/// Asserts two byte strings are equal; on failure names the first differing
/// offset and both lengths instead of dumping megabytes.
pub fn assert_bytes_eq(got: &[u8], want: &[u8], what: &str) {
    if got == want {
        return;
    }
    let first = got
        .iter()
        .zip(want.iter())
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    let show = |v: &[u8]| -> String {
        let end = (first + 16).min(v.len());
        format!("{:02x?}", &v[first.min(v.len())..end])
    };
    panic!(
        "{what}: contents differ at offset {first} (got {} bytes, want {} bytes); \
         got[{first}..]={} want[{first}..]={}",
        got.len(),
        want.len(),
        show(got),
        show(want)
    );
}

/// Asserts the file at `path` holds exactly `want`.
pub fn assert_file_eq(path: &Path, want: &[u8]) {
    let got = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    assert_bytes_eq(&got, want, &path.display().to_string());
}

// ---------------------------------------------------------------------------
// Client helpers (the only place that builds TransferOptions from scratch)

/// Default options: whole source, no offsets, strategy Auto, no progress.
pub fn opts() -> TransferOptions {
    TransferOptions {
        tag: "itest".into(),
        offset: 0,
        length: None,
        dest_offset: 0,
        strategy: Strategy::Auto,
        progress: false,
        ..TransferOptions::default()
    }
}

/// Waits for `h` but gives up (panics) after `timeout`, so a hung daemon
/// fails the test instead of hanging the suite.
pub fn wait_within(h: JobHandle, timeout: Duration) -> Result<Completion, JobError> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(h.wait());
    });
    match rx.recv_timeout(timeout) {
        Ok(r) => r,
        Err(_) => panic!("job did not finish within {timeout:?}"),
    }
}

/// Waits for `h` with the default job timeout.
pub fn wait(h: JobHandle) -> Result<Completion, JobError> {
    wait_within(h, JOB_TIMEOUT)
}

/// Unwraps a completion, describing the failure if there was one.
pub fn completed(r: Result<Completion, JobError>, what: &str) -> Completion {
    match r {
        Ok(c) => c,
        Err(e) => panic!("{what}: expected completion, got {e:?}"),
    }
}

/// The fields of a `JobError::Failed`, for assertions.
#[derive(Debug)]
pub struct Failure {
    pub kind: ringxfer_ipc::FailureKind,
    pub os_error: Option<i32>,
    pub message: String,
    pub bytes: u64,
}

/// Unwraps a failure of kind `kind`, describing anything else.
pub fn failed(
    r: Result<Completion, JobError>,
    kind: ringxfer_ipc::FailureKind,
    what: &str,
) -> Failure {
    match r {
        Ok(c) => panic!(
            "{what}: expected failure {kind:?}, but the job completed ({} bytes, {:?})",
            c.bytes, c.strategy
        ),
        Err(JobError::Failed {
            kind: k,
            os_error,
            message,
            bytes,
            ..
        }) => {
            assert_eq!(
                k, kind,
                "{what}: wrong failure kind (os_error {os_error:?}, message {message:?})"
            );
            assert!(
                !message.trim().is_empty(),
                "{what}: failure {k:?} carries an empty message"
            );
            Failure {
                kind: k,
                os_error,
                message,
                bytes,
            }
        }
        Err(e) => panic!("{what}: expected Failed({kind:?}), got {e:?}"),
    }
}

/// Copies a fresh file of `len` bytes through `client` and checks the result.
pub fn copy_and_check(client: &Client, dir: &Path, name: &str, len: usize, seed: u64) {
    let (src, data) = make_file(dir, &format!("{name}.src"), len, seed);
    let dst = dir.join(format!("{name}.dst"));
    let s = open_src(&src);
    let t = create_dst(&dst);
    let h = client
        .submit(s.as_fd(), t.as_fd(), &opts())
        .unwrap_or_else(|e| panic!("{name}: submit: {e:?}"));
    drop(s);
    drop(t);
    let c = completed(wait(h), name);
    assert_eq!(c.bytes, len as u64, "{name}: completion bytes");
    assert_eq!(
        c.strategy,
        auto_between_files(len as u64),
        "{name}: strategy used"
    );
    assert_file_eq(&dst, &data);
}

/// What `auto` uses between two regular files of one file system for a
/// hot transfer of `len` bytes: small ones (an empty one too: procfs says
/// 0) go through a buffer, read to the end of the file; the kernel copies
/// the rest (copy_file_range).
pub fn auto_between_files(len: u64) -> Strategy {
    if len <= 64 * 1024 {
        Strategy::Buffered
    } else {
        Strategy::CopyRange
    }
}

/// Waits up to 10 s for `socket` to refuse connections: a daemon killed
/// with SIGKILL keeps its listener until the kernel tears its ring down, a
/// little after it is reaped.
pub fn wait_refused(socket: &Path) {
    let refused = poll_until(Duration::from_secs(10), || {
        matches!(
            UnixStream::connect(socket),
            Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED)
        )
    });
    assert!(refused, "{} still takes connections", socket.display());
}

/// Polls `cond` every 10 ms until it holds or `timeout` passes.
pub fn poll_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

// ---------------------------------------------------------------------------
// Processes

/// Runs `cmd` to completion with a deadline, collecting stdout and stderr.
/// Panics (after killing the child) if it outlives the deadline.
pub fn run_timeout(mut cmd: Command, timeout: Duration) -> Output {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let desc = format!("{cmd:?}");
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {desc}: {e}"));
    let out_t = drain(child.stdout.take().unwrap());
    let err_t = drain(child.stderr.take().unwrap());
    let Some(status) = wait_child(&mut child, timeout) else {
        let _ = child.kill();
        let _ = child.wait();
        let stderr = err_t.join().unwrap_or_default();
        panic!(
            "{desc} still running after {timeout:?}; stderr: {}",
            String::from_utf8_lossy(&stderr)
        )
    };
    Output {
        status,
        stdout: out_t.join().unwrap_or_default(),
        stderr: err_t.join().unwrap_or_default(),
    }
}

fn drain(mut r: impl Read + Send + 'static) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut v = Vec::new();
        let _ = r.read_to_end(&mut v);
        v
    })
}

/// Polls `child` until it exits or `timeout` passes.
pub fn wait_child(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let mut status = None;
    poll_until(timeout, || {
        status = child.try_wait().expect("try_wait");
        status.is_some()
    });
    status
}

// ---------------------------------------------------------------------------
// The daemon

/// The kernel's flag for io_uring worker threads (include/linux/sched.h).
const PF_IO_WORKER: u64 = 0x10;

/// One task (thread) of the daemon, from /proc/PID/task.
#[derive(Debug)]
pub struct Task {
    pub tid: String,
    pub comm: String,
    pub flags: u64,
}

impl Task {
    /// An I/O worker rather than the loop: io_uring's io-wq and sqpoll
    /// threads, or the threads engine's workers (which stand in for io-wq).
    pub fn is_io_uring_worker(&self) -> bool {
        self.comm.starts_with("iou-")
            || self.flags & PF_IO_WORKER != 0
            || self.comm == "ringxfer-worker"
    }
}

/// The variable that picks the engine every daemon of the suite runs
/// (`uring`, `threads` or `auto`); unset or empty: the daemon's default. The
/// suite runs once per engine this way (see README: "Run all the tests").
pub const TEST_ENGINE_ENV: &str = "RINGXFER_TEST_ENGINE";

/// The engine `RINGXFER_TEST_ENGINE` names, if set. A value the daemon would
/// refuse fails the test at once, rather than every daemon at start-up.
pub fn test_engine() -> Option<String> {
    let value = std::env::var(TEST_ENGINE_ENV)
        .ok()
        .filter(|v| !v.is_empty())?;
    assert!(
        ringxfer::engine::EngineKind::parse(&value).is_some(),
        "{TEST_ENGINE_ENV}={value:?}: want uring, threads or auto"
    );
    Some(value)
}

/// `--engine ENGINE` from `RINGXFER_TEST_ENGINE`, for a daemon command line
/// `args` that does not pick its engine itself (a test that does, tests
/// that engine whatever the run). The flag beats a config file's `engine`.
pub fn engine_args(args: &[&str]) -> Vec<String> {
    let chooses = args
        .iter()
        .any(|a| *a == "--engine" || a.starts_with("--engine="));
    match test_engine() {
        Some(engine) if !chooses => vec!["--engine".into(), engine],
        _ => Vec::new(),
    }
}

/// Gives a `ringxfer` CLI command the test engine for its in-process engine
/// (`RINGXFER_ENGINE`, which `EmbeddedEngine::start` reads), and otherwise
/// keeps an ambient `RINGXFER_ENGINE` from steering the test.
pub fn cli_engine_env(cmd: &mut Command) {
    match test_engine() {
        Some(engine) => cmd.env("RINGXFER_ENGINE", engine),
        None => cmd.env_remove("RINGXFER_ENGINE"),
    };
}

/// The `ringxferd` command line every test daemon starts from: `--socket`,
/// `--no-config` unless `args` name a `--config`, the test engine unless
/// `args` pick one, then `args`; no settings from the environment.
pub fn daemon_command(socket: &Path, args: &[&str]) -> Command {
    // A machine's /etc/ringxfer/ringxferd.toml must not steer the tests.
    let no_config: &[&str] = if args.contains(&"--config") {
        &[]
    } else {
        &["--no-config"]
    };
    let mut cmd = Command::new(DAEMON_BIN);
    cmd.arg("--socket")
        .arg(socket)
        .args(no_config)
        .args(engine_args(args))
        .args(args)
        .env_remove("RINGXFER_SOCKET")
        .env_remove("RINGXFER_ENGINE");
    cmd
}

/// A `ringxferd` on a socket in its own temporary directory; killed on drop.
pub struct Daemon {
    child: Option<Child>,
    pub pid: i32,
    pub socket: PathBuf,
    log: PathBuf,
    dir: tempfile::TempDir,
}

impl Daemon {
    /// Starts a daemon with default options.
    pub fn start() -> Daemon {
        Daemon::start_with(&[])
    }

    /// Starts a daemon with extra command-line arguments.
    pub fn start_with(args: &[&str]) -> Daemon {
        Daemon::start_at(None, args)
    }

    /// Starts a daemon on `socket` (default: `sock` in a fresh tempdir).
    pub fn start_at(socket: Option<PathBuf>, args: &[&str]) -> Daemon {
        Daemon::start_customized(socket, args, |_| {})
    }

    /// Starts a daemon as `start_at` does, with `customize` applied to its
    /// command before the spawn (a seccomp filter, say). Its stdout and
    /// stderr go to the log, which [`Daemon::log`] reads.
    pub fn start_customized(
        socket: Option<PathBuf>,
        args: &[&str],
        customize: impl FnOnce(&mut Command),
    ) -> Daemon {
        let dir = tmpdir();
        let socket = socket.unwrap_or_else(|| dir.path().join("ringxferd.sock"));
        let log = dir.path().join("ringxferd.log");
        let logf = File::create(&log).expect("create daemon log");
        let mut cmd = daemon_command(&socket, args);
        customize(&mut cmd);
        let child = cmd
            .stdin(Stdio::null())
            .stdout(logf.try_clone().unwrap())
            .stderr(logf)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {DAEMON_BIN}: {e}"));
        let pid = child.id() as i32;
        let mut d = Daemon {
            child: Some(child),
            pid,
            socket,
            log,
            dir,
        };
        d.wait_ready(Duration::from_secs(10));
        d
    }

    fn wait_ready(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if UnixStream::connect(&self.socket).is_ok() {
                return;
            }
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "ringxferd exited during startup with {st}; log:\n{}",
                    self.log()
                );
            }
            if Instant::now() >= deadline {
                panic!(
                    "ringxferd did not accept on {} within {timeout:?}; log:\n{}",
                    self.socket.display(),
                    self.log()
                );
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// The daemon's tempdir (holds its socket and log), usable for test files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Everything the daemon wrote to stdout/stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A connected client stub.
    pub fn client(&self) -> Client {
        Client::connect(self.socket.as_path()).unwrap_or_else(|e| {
            panic!(
                "connect {}: {e:?}; daemon log:\n{}",
                self.socket.display(),
                self.log()
            )
        })
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => c.try_wait().unwrap().is_none(),
            None => false,
        }
    }

    /// Entries of /proc/PID/fd.
    pub fn fd_count(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid))
            .expect("read /proc/PID/fd")
            .count()
    }

    /// What the daemon's descriptors point at, for failure messages.
    pub fn fd_listing(&self) -> String {
        let mut v: Vec<String> = std::fs::read_dir(format!("/proc/{}/fd", self.pid))
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| {
                        let target = std::fs::read_link(e.path())
                            .map(|p| p.display().to_string())
                            .unwrap_or_else(|_| "?".into());
                        format!("{} -> {}", e.file_name().to_string_lossy(), target)
                    })
                    .collect()
            })
            .unwrap_or_default();
        v.sort_by_key(|s| {
            s.split(' ')
                .next()
                .and_then(|n| n.parse::<u32>().ok())
                .unwrap_or(0)
        });
        v.join("\n")
    }

    /// Every task of the daemon.
    pub fn tasks(&self) -> Vec<Task> {
        let mut v = Vec::new();
        if let Ok(rd) = std::fs::read_dir(format!("/proc/{}/task", self.pid)) {
            for e in rd.filter_map(|e| e.ok()) {
                let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
                // Field 9 of stat, counted after the parenthesised comm.
                let flags = std::fs::read_to_string(e.path().join("stat"))
                    .ok()
                    .and_then(|st| {
                        let rest = &st[st.rfind(')')? + 1..];
                        rest.split_whitespace().nth(6)?.parse::<u64>().ok()
                    })
                    .unwrap_or(0);
                v.push(Task {
                    tid: e.file_name().to_string_lossy().into_owned(),
                    comm: comm.trim().to_string(),
                    flags,
                });
            }
        }
        v
    }

    /// Tasks that are neither the kernel's io_uring workers nor the thread
    /// that closes client descriptors (which moves no bytes). A worker is
    /// known by its comm ("iou-wrk-*", "iou-sqp-*") or, in the instant
    /// between its creation and its naming (when it still carries the
    /// parent's comm), by the PF_IO_WORKER flag the kernel sets on it from
    /// birth. The closer is named before the daemon says it is ready.
    pub fn loop_threads(&self) -> usize {
        self.tasks()
            .iter()
            .filter(|t| !t.is_io_uring_worker() && t.comm != "ringxfer-close")
            .count()
    }

    /// A baseline descriptor count: after one warm-up copy whose client has
    /// gone away, wait until the count has been stable for 200 ms (3 s cap).
    pub fn baseline(&self) -> usize {
        {
            let c = self.client();
            let dir = tmpdir();
            copy_and_check(&c, dir.path(), "warmup", 10_000, 0xba5e);
        }
        let mut last = self.fd_count();
        let mut stable_since = Instant::now();
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline && stable_since.elapsed() < Duration::from_millis(200) {
            thread::sleep(Duration::from_millis(20));
            let n = self.fd_count();
            if n != last {
                last = n;
                stable_since = Instant::now();
            }
        }
        last
    }

    /// Asserts the descriptor count comes back to `baseline` within `timeout`.
    pub fn assert_fds_return(&self, baseline: usize, timeout: Duration, what: &str) {
        if !poll_until(timeout, || self.fd_count() <= baseline) {
            panic!(
                "{what}: daemon holds {} descriptors, baseline {baseline}, after {timeout:?}:\n{}",
                self.fd_count(),
                self.fd_listing()
            );
        }
    }

    /// After an abuse or failure: a fresh, well-behaved client still gets a
    /// copy done, and the descriptor count returns to `baseline`.
    pub fn assert_healthy(&self, baseline: usize, what: &str) {
        {
            let c = self.client();
            let dir = tmpdir();
            copy_and_check(&c, dir.path(), "health", 70_001, 0x4ea1);
        }
        self.assert_fds_return(baseline, Duration::from_secs(3), what);
    }

    /// Sends `sig` and returns at once.
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(self.pid, sig) };
        assert_eq!(rc, 0, "kill({}, {sig})", self.pid);
    }

    /// Waits for the daemon to exit by itself (after a signal sent with
    /// [`Daemon::signal`]); asserts status 0 and the socket file gone.
    pub fn wait_exit(mut self, within: Duration) {
        let mut child = self.child.take().expect("daemon already stopped");
        let Some(status) = wait_child(&mut child, within) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "ringxferd did not exit within {within:?}; log:\n{}",
                self.log()
            );
        };
        assert_eq!(
            status.code(),
            Some(0),
            "exit status {status}; log:\n{}",
            self.log()
        );
        assert!(
            !self.socket.exists(),
            "socket file {} still exists after the daemon exited",
            self.socket.display()
        );
    }

    /// Sends `sig`, asserts exit status 0 within 10 s and the socket file gone.
    pub fn stop_with(mut self, sig: i32) {
        let mut child = self.child.take().expect("daemon already stopped");
        self.signal(sig);
        let status = match wait_child(&mut child, Duration::from_secs(10)) {
            Some(s) => s,
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "ringxferd did not exit within 10 s of signal {sig}; log:\n{}",
                    self.log()
                );
            }
        };
        assert_eq!(
            status.code(),
            Some(0),
            "ringxferd exit status after signal {sig}: {status}; log:\n{}",
            self.log()
        );
        assert!(
            !self.socket.exists(),
            "socket file {} still exists after the daemon exited",
            self.socket.display()
        );
    }

    /// SIGTERM; asserts exit 0 and the socket file removed.
    pub fn stop(self) {
        self.stop_with(libc::SIGTERM)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
            if thread::panicking() {
                eprintln!(
                    "---- ringxferd log ({}) ----\n{}",
                    self.log.display(),
                    self.log()
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Job control: requests with a deadline, endless sources, stalled ends,
// receivers that count, fairness.

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use ringxfer_ipc::{ClientError, JobInfo, StatsReport, StrategyStats};

/// How long a control request (status, jobs, cancel, stats) may go
/// unanswered before a test calls the daemon stuck.
pub const CONTROL_TIMEOUT: Duration = Duration::from_secs(10);

pub const MIB: u64 = 1 << 20;

/// Runs `f` on a thread and returns its result, panicking if it takes longer
/// than `CONTROL_TIMEOUT`: a daemon that never answers a request must fail
/// the test, not hang the suite. (The stuck thread is left behind.)
pub fn answered<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(CONTROL_TIMEOUT) {
        Ok(v) => v,
        Err(_) => panic!("{what}: no answer from the daemon within {CONTROL_TIMEOUT:?}"),
    }
}

/// A connected client that threads (and `answered`) can share.
pub fn shared_client(d: &Daemon) -> Arc<Client> {
    Arc::new(d.client())
}

/// `Client::status`, with a deadline.
pub fn status_of(c: &Arc<Client>, job: u64) -> Result<JobInfo, ClientError> {
    let c = Arc::clone(c);
    answered(&format!("status({job})"), move || c.status(job))
}

/// `Client::jobs`, with a deadline; the request itself must succeed.
pub fn jobs_of(c: &Arc<Client>) -> Vec<JobInfo> {
    let c = Arc::clone(c);
    answered("jobs()", move || c.jobs()).unwrap_or_else(|e| panic!("jobs(): {e:?}"))
}

/// `Client::cancel`, with a deadline.
pub fn cancel_job(c: &Arc<Client>, job: u64) -> Result<(), ClientError> {
    let c = Arc::clone(c);
    answered(&format!("cancel({job})"), move || c.cancel(job))
}

/// `Client::stats`, with a deadline; the request itself must succeed.
pub fn stats_of(c: &Arc<Client>) -> StatsReport {
    let c = Arc::clone(c);
    answered("stats()", move || c.stats()).unwrap_or_else(|e| panic!("stats(): {e:?}"))
}

/// The daemon's id for a submitted job, with a deadline.
pub fn id_of(h: &JobHandle) -> u64 {
    let h = h.clone();
    answered("job id", move || h.job_id()).unwrap_or_else(|e| panic!("job id: {e:?}"))
}

/// Unwraps a refusal of kind `kind` and returns its message.
pub fn refused<T: std::fmt::Debug>(
    r: Result<T, ClientError>,
    kind: ringxfer_ipc::FailureKind,
    what: &str,
) -> String {
    match r {
        Err(ClientError::Refused {
            kind: k, message, ..
        }) => {
            assert_eq!(k, kind, "{what}: refused, but for {message:?}");
            assert!(!message.trim().is_empty(), "{what}: empty refusal message");
            message
        }
        other => panic!("{what}: expected Refused({kind:?}), got {other:?}"),
    }
}

/// Polls `status(job)` until `cond` holds, returning that state; panics
/// after `timeout` with the last state seen.
pub fn status_until(
    c: &Arc<Client>,
    job: u64,
    timeout: Duration,
    what: &str,
    mut cond: impl FnMut(&JobInfo) -> bool,
) -> JobInfo {
    let deadline = Instant::now() + timeout;
    loop {
        let info = status_of(c, job).unwrap_or_else(|e| panic!("{what}: status({job}): {e:?}"));
        if cond(&info) {
            return info;
        }
        if Instant::now() >= deadline {
            panic!("{what}: condition not reached within {timeout:?}; last status {info:?}");
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// The job with id `job` in a listing.
pub fn find_job(list: &[JobInfo], job: u64) -> Option<&JobInfo> {
    list.iter().find(|i| i.job == job)
}

/// The counters of `strategy` in a stats report (zeroes if absent).
pub fn strategy_stats(s: &StatsReport, strategy: Strategy) -> StrategyStats {
    s.strategies
        .iter()
        .find(|x| x.strategy == Some(strategy))
        .cloned()
        .unwrap_or_default()
}

/// A memfd of `len` bytes that are all hole. Reading a shmem hole splices
/// the shared zero page and allocates nothing, so even terabytes cost no
/// memory: an endless, seekable, CPU-cheap source for long-running jobs.
pub fn zero_source(len: u64) -> File {
    // SAFETY: a NUL-terminated name and valid flags; the result is checked.
    let fd = unsafe { libc::memfd_create(c"ringxfer-zero".as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0, "memfd_create: {}", std::io::Error::last_os_error());
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    let f = unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    f.set_len(len).expect("ftruncate memfd");
    f
}

/// /dev/null opened write-only: a destination that takes anything at once.
pub fn dev_null() -> File {
    OpenOptions::new()
        .write(true)
        .open("/dev/null")
        .expect("open /dev/null")
}

/// A pipe shrunk to one page: (read end, write end). Passed as a destination
/// with its read end never read, it stalls a job after at most 4 KiB, so
/// the job's remaining length stays known.
pub fn stalled_pipe() -> (File, File) {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(rc, 0, "pipe2: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors are fresh and owned by nothing else.
    let (r, w) = unsafe {
        (
            <File as std::os::fd::FromRawFd>::from_raw_fd(fds[0]),
            <File as std::os::fd::FromRawFd>::from_raw_fd(fds[1]),
        )
    };
    // SAFETY: fcntl on a descriptor we own; failure only leaves it larger.
    unsafe { libc::fcntl(w.as_raw_fd(), libc::F_SETPIPE_SZ, 4096) };
    (r, w)
}

/// Starts a job that can never make progress on its own: it reads a socket
/// nobody writes to, into /dev/null. Returns the handle and the silent
/// writer, which the caller keeps (closing it ends the job with EOF).
pub fn submit_idle(c: &Client, o: &TransferOptions) -> (JobHandle, UnixStream) {
    let (writer, reader) = UnixStream::pair().expect("socketpair");
    let null = dev_null();
    let h = c
        .submit(reader.as_fd(), null.as_fd(), o)
        .unwrap_or_else(|e| panic!("submit idle job: {e:?}"));
    (h, writer)
}

/// A thread that reads a stream to its end and counts the bytes, so a test
/// can sample the count over a window of its own choosing.
pub struct Drain {
    count: Arc<AtomicU64>,
    thread: Option<thread::JoinHandle<std::io::Result<u64>>>,
}

impl Drain {
    pub fn start(mut r: impl Read + Send + 'static) -> Drain {
        let count = Arc::new(AtomicU64::new(0));
        let c = Arc::clone(&count);
        let thread = thread::spawn(move || {
            let mut buf = vec![0u8; 256 << 10];
            loop {
                match r.read(&mut buf) {
                    Ok(0) => return Ok(c.load(Ordering::SeqCst)),
                    Ok(n) => {
                        c.fetch_add(n as u64, Ordering::SeqCst);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
        });
        Drain {
            count,
            thread: Some(thread),
        }
    }

    /// Bytes read so far.
    pub fn bytes(&self) -> u64 {
        self.count.load(Ordering::SeqCst)
    }

    /// Waits (up to `timeout`) for the end of the stream; the total read.
    pub fn finish(mut self, timeout: Duration) -> u64 {
        let t = self.thread.take().expect("drain thread");
        if !poll_until(timeout, || t.is_finished()) {
            panic!("the drained stream did not end within {timeout:?}");
        }
        t.join()
            .expect("drain thread panicked")
            .unwrap_or_else(|e| panic!("drain read: {e}"))
    }
}

/// The bytes a drain received per second over `window`, measured from the
/// first sample after `settle` has passed since the first byte arrived
/// (`settle` skips a token bucket's start-up burst and the first chunk).
pub fn drain_rate(drain: &Drain, settle: Duration, window: Duration, what: &str) -> f64 {
    if !poll_until(Duration::from_secs(10), || drain.bytes() > 0) {
        panic!("{what}: no byte arrived within 10 s");
    }
    thread::sleep(settle);
    let (t0, b0) = (Instant::now(), drain.bytes());
    thread::sleep(window);
    let (t1, b1) = (Instant::now(), drain.bytes());
    (b1 - b0) as f64 / (t1 - t0).as_secs_f64()
}

/// Jain's fairness index of the shares: 1 when all are equal, 1/n when one
/// takes everything.
pub fn jain(xs: &[f64]) -> f64 {
    let sum: f64 = xs.iter().sum();
    let sq: f64 = xs.iter().map(|x| x * x).sum();
    if sq == 0.0 {
        return 0.0;
    }
    sum * sum / (xs.len() as f64 * sq)
}

/// Whether the tests run as root (the other-user checks need it).
/// For a test that needs root (marked `#[ignore]`, which `.ci/run` runs as
/// root with `--include-ignored`): fails, saying why, rather than passing
/// without having run.
pub fn require_root(why: &str) {
    assert!(
        running_as_root(),
        "this test needs root ({why}); run the suite as root, as .ci/run does"
    );
}

pub fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// This process's uid.
pub fn my_uid() -> u32 {
    // SAFETY: getuid has no preconditions.
    unsafe { libc::getuid() }
}

/// A file system mounted by a test (root only); unmounted on drop.
pub struct Mount(PathBuf);

impl Mount {
    /// Takes over unmounting what a test mounted at `dir`.
    pub fn at(dir: &Path) -> Mount {
        Mount(dir.to_path_buf())
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.0)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

/// A fresh file system of `kind` ("btrfs", "xfs" with reflink=1, "ext4",
/// or a 256 MiB "tmpfs") at `dir/mnt`, from a 400 MiB loop image in `dir`
/// (root only).
pub fn mount_fs(dir: &Path, kind: &str) -> Mount {
    let mnt = dir.join("mnt");
    std::fs::create_dir(&mnt).expect("create the mount point");
    let must = |mut c: Command, what: &str| {
        let out = c.output().unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(
            out.status.success(),
            "{what}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    if kind == "tmpfs" {
        let mut c = Command::new("mount");
        c.args(["-t", "tmpfs", "-o", "size=256m", "tmpfs"])
            .arg(&mnt);
        must(c, "mount tmpfs");
        return Mount::at(&mnt);
    }
    let img = dir.join(format!("{kind}.img"));
    File::create(&img)
        .and_then(|f| f.set_len(400 << 20))
        .expect("make the image file");
    let mut mkfs = Command::new(format!("mkfs.{kind}"));
    match kind {
        "xfs" => mkfs.args(["-q", "-f", "-m", "reflink=1"]),
        "btrfs" => mkfs.args(["-q", "-f"]),
        _ => mkfs.args(["-q", "-F"]),
    };
    mkfs.arg(&img);
    must(mkfs, &format!("mkfs.{kind}"));
    let mut c = Command::new("mount");
    c.args(["-o", "loop"]).arg(&img).arg(&mnt);
    must(c, &format!("mount -o loop of the {kind} image"));
    Mount::at(&mnt)
}

/// Mounts a tmpfs of `size` (e.g. "1m") on `dir`.
pub fn mount_tmpfs(dir: &Path, size: &str) -> Result<Mount, String> {
    let out = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(dir)
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(Mount::at(dir))
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// A fresh loop image of `mb` MiB made with `mkfs.KIND` (root only),
/// mounted on `dir` with `options` added to `loop` (e.g.
/// "errors=remount-ro"); the image is `dir` with `.img` added.
pub fn mount_image(dir: &Path, kind: &str, mb: u64, options: &str) -> Result<Mount, String> {
    let img = dir.with_extension("img");
    std::fs::File::create(&img)
        .and_then(|f| f.set_len(mb << 20))
        .map_err(|e| format!("making {}: {e}", img.display()))?;
    let force = if kind == "ext4" { "-F" } else { "-f" };
    let mut mkfs = Command::new(format!("mkfs.{kind}"));
    mkfs.args(["-q", force]).arg(&img);
    let mut mount = Command::new("mount");
    mount
        .args(["-o", &format!("loop,{options}")])
        .arg(&img)
        .arg(dir);
    for mut step in [mkfs, mount] {
        let out = step.output().map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
    }
    Ok(Mount::at(dir))
}
