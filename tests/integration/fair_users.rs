//! Fair shares between users: one user whose jobs stall holding every pipe
//! (socket peers that never read, over several connections) does not keep
//! another user's small copy waiting, and gets its stalled jobs' bytes
//! through intact once its peers read again.

use std::io::Read;
use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use ringxfer_ipc::{Client, Strategy, TransferOptions};

use crate::support::*;

/// The user whose copy must not starve.
const OTHER: u32 = 65534;
/// Stalled jobs of the first user, and the connections they come over.
const STALLED: usize = 32;
const CONNECTIONS: usize = 4;
/// Each stalled job's source: more than its two pipes and the socket's
/// buffer hold, so it stalls with bytes in both pipes.
const STALLED_LEN: usize = 8 << 20;
/// The other user's copy, and how long it may take.
const COPY_LEN: usize = 1 << 20;
const TARGET: Duration = Duration::from_secs(1);

/// The environment that turns `other_user_copy` on.
const COPY_SOCKET: &str = "RINGXFER_TEST_FAIR_SOCKET";
const COPY_SRC: &str = "RINGXFER_TEST_FAIR_SRC";
const COPY_DST: &str = "RINGXFER_TEST_FAIR_DST";
/// The strategy of the other user's copy (default splice: the tests that
/// hold every pipe need it to want one).
const COPY_STRATEGY: &str = "RINGXFER_TEST_FAIR_STRATEGY";

/// Run by `a_stalled_users_jobs_do_not_starve_another_users_copy` as the
/// other user (a no-op otherwise): copies `COPY_SRC` to `COPY_DST` through
/// the daemon and prints how long the job took, from submit to completion.
#[test]
fn other_user_copy() {
    let (Ok(socket), Ok(src), Ok(dst)) = (
        std::env::var(COPY_SOCKET),
        std::env::var(COPY_SRC),
        std::env::var(COPY_DST),
    ) else {
        return;
    };
    let c = Client::connect(&socket).expect("other user: connect");
    let src = open_src(Path::new(&src));
    let dst = create_dst(Path::new(&dst));
    let strategy = std::env::var(COPY_STRATEGY)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(Strategy::Splice);
    let t0 = Instant::now();
    let o = TransferOptions { strategy, ..opts() };
    let h = c
        .submit(src.as_fd(), dst.as_fd(), &o)
        .expect("other user: submit");
    let done = completed(wait(h), "other user's copy");
    assert_eq!(done.strategy, strategy, "the other user's copy");
    println!("copy-ms={} bytes={}", t0.elapsed().as_millis(), done.bytes);
}

/// Runs `other_user_copy` as `OTHER` (a copy of this test binary, `exe`):
/// the milliseconds its copy took, or what went wrong.
fn other_user_copy_ms(
    exe: &Path,
    socket: &Path,
    src: &Path,
    dst: &Path,
    dir: &Path,
) -> Result<u64, String> {
    other_user_copy_with(exe, (socket, src, dst, dir), Strategy::Splice)
}

/// `other_user_copy_ms` with the copy's strategy.
fn other_user_copy_with(
    exe: &Path,
    (socket, src, dst, dir): (&Path, &Path, &Path, &Path),
    strategy: Strategy,
) -> Result<u64, String> {
    let mut child = Command::new(exe)
        .args([
            "--exact",
            "fair_users::other_user_copy",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(COPY_SOCKET, socket)
        .env(COPY_SRC, src)
        .env(COPY_DST, dst)
        .env(COPY_STRATEGY, strategy.name())
        .uid(OTHER)
        .gid(OTHER)
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the other user's copy");
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_t = thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_t = thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let status = wait_child(&mut child, Duration::from_secs(20));
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let (out, err) = (out_t.join().unwrap(), err_t.join().unwrap());
    if !status.is_some_and(|s| s.success()) {
        return Err(format!(
            "the other user's copy (uid {OTHER}) did not succeed within 20 s ({status:?}):\n{out}\n{err}"
        ));
    }
    out.lines()
        .find_map(|l| {
            l.split("copy-ms=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .ok_or_else(|| format!("no copy-ms line in:\n{out}\n{err}"))
}

/// A shared directory with the daemon's socket open to everyone, the other
/// user's source (readable by all) and a directory of its own for the copy.
struct Setup {
    shared: tempfile::TempDir,
    exe: std::path::PathBuf,
    src: std::path::PathBuf,
    want: Vec<u8>,
    dst: std::path::PathBuf,
}

fn setup() -> Setup {
    let shared = world_tmpdir();
    let exe = executable_for_others(&std::env::current_exe().unwrap(), shared.path());
    let (src, want) = make_file(shared.path(), "src", COPY_LEN, 14);
    std::fs::set_permissions(&src, std::fs::Permissions::from_mode(0o644)).unwrap();
    let theirs = shared.path().join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    std::os::unix::fs::chown(&theirs, Some(OTHER), Some(OTHER)).unwrap();
    let dst = theirs.join("copy");
    Setup {
        shared,
        exe,
        src,
        want,
        dst,
    }
}

fn open_socket_to_all(d: &Daemon) {
    std::fs::set_permissions(&d.socket, std::fs::Permissions::from_mode(0o666)).unwrap();
}

#[test]
#[ignore = "needs root: .ci/run runs it (--include-ignored)"]
fn one_user_cannot_take_every_job_of_the_daemon() {
    require_root("root to run a client as another user");
    let s = setup();
    // The flag asks for more than a quarter of --max-jobs: each user gets
    // a quarter, and says so.
    let d = Daemon::start_at(
        Some(s.shared.path().join("rx.sock")),
        &["--max-jobs", "8", "--max-jobs-per-user", "100"],
    );
    open_socket_to_all(&d);
    let root = shared_client(&d);
    assert_eq!(
        root.limits().max_jobs_per_user,
        2,
        "the cap reported to clients"
    );
    // Root tries to take every job of the daemon: two are admitted.
    let mut idle = Vec::new();
    for _ in 0..2 {
        let (h, writer) = submit_idle(&root, &opts());
        id_of(&h);
        idle.push((h, writer));
    }
    for i in 2..8 {
        let (h, _writer) = submit_idle(&root, &opts());
        let f = failed(
            wait_within(h, Duration::from_secs(10)),
            ringxfer_ipc::FailureKind::LimitExceeded,
            &format!("root's job {i}"),
        );
        assert!(
            f.message.contains("a quarter of --max-jobs") && f.message.contains("user 0"),
            "{f:?}"
        );
    }
    // Another user still gets in.
    let ms = other_user_copy_ms(&s.exe, &d.socket, &s.src, &s.dst, s.shared.path())
        .unwrap_or_else(|e| panic!("with root at its cap: {e}"));
    eprintln!("the other user's copy took {ms} ms with root at its job cap");
    assert_file_eq(&s.dst, &s.want);
    assert!(
        d.log().contains("more than a quarter of --max-jobs"),
        "no warning about the cap:\n{}",
        d.log()
    );
}

#[test]
#[ignore = "needs root: .ci/run runs it (--include-ignored)"]
fn a_stalled_users_jobs_do_not_starve_another_users_copy() {
    require_root("root to run a client as another user");
    let s = setup();
    let d = Daemon::start_at(Some(s.shared.path().join("rx.sock")), &[]);
    open_socket_to_all(&d);
    let (shared, src, dst, want) = (&s.shared, &s.src, &s.dst, &s.want);

    // Root: 32 jobs over 4 connections into sockets nobody reads. The
    // sources are patterns, so what finally arrives can be checked.
    let conns: Vec<Arc<Client>> = (0..CONNECTIONS).map(|_| shared_client(&d)).collect();
    let mut stalled = Vec::new();
    for i in 0..STALLED {
        let (path, bytes) = make_file(
            shared.path(),
            &format!("stalled-{i}"),
            STALLED_LEN,
            i as u64,
        );
        let (into, peer) = UnixStream::pair().unwrap();
        let o = TransferOptions {
            strategy: Strategy::Splice,
            ..opts()
        };
        let h = conns[i % CONNECTIONS]
            .submit(open_src(&path).as_fd(), into.as_fd(), &o)
            .unwrap_or_else(|e| panic!("submit stalled job {i}: {e:?}"));
        stalled.push((h, peer, bytes));
    }
    let probe = shared_client(&d);
    let all_lent = poll_until(Duration::from_secs(10), || {
        let s = stats_of(&probe);
        s.pipes_in_use == s.pipes_total
    });
    assert!(
        all_lent,
        "the stalled jobs never held every pipe: {:?}",
        stats_of(&probe)
    );
    // Long enough that every one of them has stalled.
    thread::sleep(Duration::from_millis(500));

    let ms = other_user_copy_ms(&s.exe, &d.socket, src, dst, shared.path())
        .unwrap_or_else(|e| panic!("while root's {STALLED} jobs stalled: {e}"));
    eprintln!("the other user's copy took {ms} ms behind {STALLED} stalled jobs");
    assert!(
        Duration::from_millis(ms) < TARGET,
        "the other user's {COPY_LEN}-byte copy took {ms} ms behind root's {STALLED} stalled jobs (target {TARGET:?})"
    );
    assert_file_eq(dst, want);

    // The stalled jobs gave pipes back without losing or repeating a byte.
    deliver_exactly(stalled, "stalled job");
}

/// Once their peers read, every stalled job delivers its source exactly,
/// in order: giving its pipe or piece back lost or repeated no byte.
fn deliver_exactly(stalled: Vec<(ringxfer_ipc::JobHandle, UnixStream, Vec<u8>)>, what: &str) {
    let readers: Vec<_> = stalled
        .into_iter()
        .map(|(h, mut peer, bytes)| {
            let t = thread::spawn(move || {
                let mut got = Vec::with_capacity(STALLED_LEN);
                peer.read_to_end(&mut got).map(|_| got)
            });
            (h, t, bytes)
        })
        .collect();
    for (i, (h, t, bytes)) in readers.into_iter().enumerate() {
        let done = completed(wait(h), &format!("{what} {i}"));
        assert_eq!(done.bytes, STALLED_LEN as u64, "{what} {i}");
        let got = t.join().unwrap().expect("read a stalled job's socket");
        assert_bytes_eq(&got, &bytes, &format!("what {what} {i} delivered"));
    }
}

#[test]
#[ignore = "needs root: .ci/run runs it (--include-ignored)"]
fn a_stalled_users_sendfile_jobs_give_their_pieces_to_another_users_copy() {
    require_root("root to run a client as another user");
    let s = setup();
    let d = Daemon::start_at(Some(s.shared.path().join("rx.sock")), &[]);
    open_socket_to_all(&d);
    let (shared, src, dst, want) = (&s.shared, &s.src, &s.dst, &s.want);
    // Root: sendfile into sockets nobody reads, a job for every worker
    // piece, each stalled in the kernel inside a piece.
    const PIECES: usize = 8;
    // Over several connections: one may hold only half of a pool.
    let conns: Vec<Arc<Client>> = (0..CONNECTIONS).map(|_| shared_client(&d)).collect();
    let c = shared_client(&d);
    let mut stalled = Vec::new();
    for i in 0..PIECES {
        let name = format!("sendfile-{i}");
        let (path, bytes) = make_file(shared.path(), &name, STALLED_LEN, 100 + i as u64);
        let (into, peer) = UnixStream::pair().unwrap();
        let o = TransferOptions {
            strategy: Strategy::Sendfile,
            ..opts()
        };
        let h = conns[i % CONNECTIONS]
            .submit(open_src(&path).as_fd(), into.as_fd(), &o)
            .unwrap_or_else(|e| panic!("submit stalled job {i}: {e:?}"));
        stalled.push((h, peer, bytes));
    }
    let all_lent = poll_until(Duration::from_secs(10), || {
        stats_of(&c).ops_in_flight as usize == PIECES
    });
    assert!(
        all_lent,
        "the stalled jobs never held every piece: {:?}",
        stats_of(&c)
    );
    thread::sleep(Duration::from_millis(500));
    // The other user's copy-range wants a piece: root's stalled jobs give
    // theirs back (their sends in flight cancelled, what was sent counted).
    let ms = other_user_copy_with(
        &s.exe,
        (&d.socket, src, dst, shared.path()),
        Strategy::CopyRange,
    )
    .unwrap_or_else(|e| panic!("while root's sendfile jobs stalled: {e}"));
    eprintln!("the other user's copy-range took {ms} ms behind {PIECES} stalled sendfile jobs");
    assert!(
        Duration::from_millis(ms) < TARGET,
        "the other user's copy took {ms} ms behind root's stalled sendfile jobs (target {TARGET:?})"
    );
    assert_file_eq(dst, want);
    // Nothing was lost or sent twice.
    deliver_exactly(stalled, "stalled sendfile job");
}

/// The environment that turns `other_user_endless` on: the socket.
const ENDLESS_SOCKET: &str = "RINGXFER_TEST_FAIR_ENDLESS";
/// A source no test outlives: 1 PiB of zero pages.
const ENDLESS: u64 = 1 << 50;

/// Run by `users_share_by_user_not_by_job` as the other user (a no-op
/// otherwise): one endless job (zero pages into /dev/null), its id printed,
/// then waits until it is cancelled.
#[test]
fn other_user_endless() {
    let Ok(socket) = std::env::var(ENDLESS_SOCKET) else {
        return;
    };
    let c = Client::connect(&socket).expect("other user: connect");
    let src = zero_source(ENDLESS);
    let o = TransferOptions {
        strategy: Strategy::Splice,
        ..opts()
    };
    let h = c
        .submit(src.as_fd(), dev_null().as_fd(), &o)
        .expect("other user: submit");
    println!("endless-job={}", id_of(&h));
    // Cancelled by the test at the end; any outcome will do.
    let _ = h.wait();
}

#[test]
#[ignore = "needs root: .ci/run runs it (--include-ignored)"]
fn users_share_by_user_not_by_job() {
    require_root("root to run a client as another user");
    let s = setup();
    // Two slots for five jobs: someone always waits, so the shares are the
    // scheduler's choice. Root has four jobs over two connections, the
    // other user one: per job, root would get four fifths.
    let d = Daemon::start_at(
        Some(s.shared.path().join("rx.sock")),
        &["--max-inflight", "2"],
    );
    open_socket_to_all(&d);
    let ctl = shared_client(&d);
    let (mut child, theirs) = spawn_other_user_endless(&s, &d);
    let conns: Vec<Client> = (0..2).map(|_| d.client()).collect();
    let o = TransferOptions {
        strategy: Strategy::Splice,
        ..opts()
    };
    let mine: Vec<_> = (0..4)
        .map(|i| {
            let src = zero_source(ENDLESS);
            conns[i % 2]
                .submit(src.as_fd(), dev_null().as_fd(), &o)
                .expect("submit root's job")
        })
        .collect();
    let mut ids: Vec<u64> = mine.iter().map(id_of).collect();
    ids.push(theirs);
    let started = poll_until(Duration::from_secs(10), || {
        let list = jobs_of(&ctl);
        ids.iter()
            .all(|id| find_job(&list, *id).is_some_and(|i| i.bytes > 0))
    });
    assert!(started, "every job moved bytes: {:?}", jobs_of(&ctl));
    thread::sleep(Duration::from_millis(300));
    let indexes = user_shares_per_second(&ctl, &ids, 3);
    for id in &ids {
        let _ = cancel_job(&ctl, *id);
    }
    if wait_child(&mut child, Duration::from_secs(10)).is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    for h in mine {
        let _ = wait_within(h, Duration::from_secs(10));
    }
    eprintln!(
        "per 1-s window, root (4 jobs) and uid {OTHER} (1 job), MiB and Jain's index: {:?}",
        indexes
            .iter()
            .map(|(j, s)| (
                (s[0] / MIB as f64) as u64,
                (s[1] / MIB as f64) as u64,
                (j * 1000.0).round() / 1000.0
            ))
            .collect::<Vec<_>>()
    );
    for (j, shares) in &indexes {
        assert!(
            *j >= 0.9,
            "Jain's index across users {j:.3} < 0.9 in a 1-s window: {shares:?}"
        );
    }
}

/// Starts `other_user_endless` as uid OTHER against `d`; its job id.
fn spawn_other_user_endless(s: &Setup, d: &Daemon) -> (std::process::Child, u64) {
    let mut child = Command::new(&s.exe)
        .args([
            "--exact",
            "fair_users::other_user_endless",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(ENDLESS_SOCKET, &d.socket)
        .uid(OTHER)
        .gid(OTHER)
        .current_dir(s.shared.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the other user's job");
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if let Some(id) = line.split("endless-job=").nth(1) {
                let _ = tx.send(id.trim().parse::<u64>().ok());
            }
        }
    });
    let theirs = rx
        .recv_timeout(Duration::from_secs(20))
        .ok()
        .flatten()
        .expect("the other user's job id");
    (child, theirs)
}

/// Over `windows` 1-s windows, Jain's index of the bytes the jobs `ids`
/// moved per user (root, OTHER), and those bytes.
fn user_shares_per_second(ctl: &Arc<Client>, ids: &[u64], windows: usize) -> Vec<(f64, [f64; 2])> {
    let per_user = |list: &[ringxfer_ipc::JobInfo]| {
        let mut by = [0u64; 2];
        for id in ids {
            let info = find_job(list, *id).expect("listed");
            by[usize::from(info.uid == OTHER)] += info.bytes;
        }
        by
    };
    let mut indexes = Vec::new();
    let mut before = per_user(&jobs_of(ctl));
    for _ in 0..windows {
        thread::sleep(Duration::from_secs(1));
        let after = per_user(&jobs_of(ctl));
        let shares = [(after[0] - before[0]) as f64, (after[1] - before[1]) as f64];
        indexes.push((jain(&shares), shares));
        before = after;
    }
    indexes
}

#[test]
#[ignore = "needs root: .ci/run runs it (--include-ignored)"]
fn stalled_stream_jobs_over_their_users_share_are_failed_cleanly() {
    require_root("root to run a client as another user");
    let s = setup();
    let d = Daemon::start_at(Some(s.shared.path().join("rx.sock")), &[]);
    open_socket_to_all(&d);
    // Root: 32 jobs from sockets with bytes waiting (stream sources, whose
    // bytes in a pipe cannot be read again) into sockets nobody reads:
    // every pipe held, all stalled.
    let conns: Vec<Arc<Client>> = (0..CONNECTIONS).map(|_| shared_client(&d)).collect();
    let mut stalled = Vec::new();
    for i in 0..STALLED {
        let (mut feed, from) = UnixStream::pair().unwrap();
        let (into, peer) = UnixStream::pair().unwrap();
        let o = TransferOptions {
            strategy: Strategy::Splice,
            ..opts()
        };
        let h = conns[i % CONNECTIONS]
            .submit(from.as_fd(), into.as_fd(), &o)
            .unwrap_or_else(|e| panic!("submit stalled job {i}: {e:?}"));
        let writer = thread::spawn(move || {
            use std::io::Write;
            let block = vec![7u8; 64 << 10];
            while feed.write_all(&block).is_ok() {}
        });
        stalled.push((h, peer, writer));
    }
    let probe = shared_client(&d);
    let all_lent = poll_until(Duration::from_secs(10), || {
        let s = stats_of(&probe);
        s.pipes_in_use == s.pipes_total
    });
    assert!(
        all_lent,
        "the stalled jobs never held every pipe: {:?}",
        stats_of(&probe)
    );
    // Long enough that every one of them has stalled.
    thread::sleep(Duration::from_millis(500));
    let t0 = Instant::now();
    let ms = other_user_copy_ms(&s.exe, &d.socket, &s.src, &s.dst, s.shared.path())
        .unwrap_or_else(|e| panic!("while root's stream jobs stalled: {e}"));
    eprintln!(
        "the other user's copy took {ms} ms ({:?} with the start-up) behind root's stalled stream jobs",
        t0.elapsed()
    );
    assert_file_eq(&s.dst, &s.want);
    // Only as many of root's jobs as it took to bring it down to its share
    // (16 of its 32 pipes) failed, after about 5 s, each saying why; the
    // others still run.
    let mut failed_jobs = 0;
    let mut running = Vec::new();
    for (h, peer, writer) in stalled {
        match h.wait_timeout(Duration::from_millis(100)) {
            Some(Err(ringxfer_ipc::JobError::Failed { message, .. })) => {
                assert!(
                    message.contains("accepted no bytes") && message.contains("other users waited"),
                    "{message}"
                );
                failed_jobs += 1;
            }
            Some(other) => panic!("a stalled stream job ended: {other:?}"),
            None => running.push((h, peer, writer)),
        }
    }
    eprintln!("{failed_jobs} of root's {STALLED} stalled stream jobs were failed");
    assert!(
        (1..STALLED).contains(&failed_jobs),
        "{failed_jobs} of {STALLED} stalled stream jobs failed"
    );
    for (h, _, _) in &running {
        let _ = cancel_job(&probe, id_of(h));
    }
    for (h, peer, writer) in running {
        let _ = wait_within(h, Duration::from_secs(10));
        drop(peer);
        let _ = writer.join();
    }
}
