//! Issue 13, items 2, 3 and 5: nothing changes before the daemon admits a
//! job, detached jobs publish atomically, `recv` never publishes a short
//! stream, and kills at random moments leave no torn file and no leftover.

use std::fs;
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::cli_common::*;
use crate::support::*;

const OLD: &[u8] = b"hello-old: the destination before the command ran\n";

/// The names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// A small xorshift for kill moments: enough randomness, no dependency.
struct Moments(u64);

impl Moments {
    fn new() -> Moments {
        let seed = Instant::now().elapsed().as_nanos() as u64
            ^ u64::from(std::process::id()).rotate_left(32)
            ^ std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1);
        Moments(seed | 1)
    }

    fn below_ms(&mut self, max: u64) -> Duration {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        Duration::from_millis(self.0 % max)
    }
}

/// Runs `ringxfer copy ARGS SRC DST` to its end.
fn copy(socket: &Path, args: &[&str], src: &Path, dst: &Path) -> std::process::Output {
    let mut c = cli(socket);
    c.arg("copy").args(args).arg(src).arg(dst);
    run(c)
}

/// A detached, rate-limited copy that keeps a job slot busy.
fn occupy(d: &Daemon, dir: &Path) -> u64 {
    let (src, _) = make_file(dir, "busy-src", 8 << 20, 1301);
    let out = copy(
        &d.socket,
        &["--detach", "--rate-limit", "256KiB"],
        &src,
        &dir.join("busy-dst"),
    );
    assert_exit(&out, 0, "occupying copy");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("job id")
}

fn cancel(d: &Daemon, job: u64) {
    let mut c = cli(&d.socket);
    c.args(["cancel", &job.to_string()]);
    let _ = run(c);
}

/// Every refusal, with --in-place, --detach and both: the destination is
/// byte-identical afterwards, and a destination that did not exist still
/// does not.
#[test]
fn refused_jobs_leave_the_destination_as_it_was() {
    let dir = tmpdir();
    let (src, _) = make_file(dir.path(), "s", 4, 1302);
    let modes: [&[&str]; 3] = [&["--in-place"], &["--detach"], &["--in-place", "--detach"]];
    let check = |d: &Daemon, reason: &str, extra: &[&str], src: &Path, stdin: bool| {
        for mode in modes {
            for existing in [true, false] {
                let dst = dir.path().join(format!("dst-{}", existing));
                let _ = fs::remove_file(&dst);
                if existing {
                    fs::write(&dst, OLD).expect("write old");
                }
                let before = names(dir.path());
                let mut c = cli(&d.socket);
                c.arg("copy").args(mode).args(extra).arg(src).arg(&dst);
                let out = if stdin {
                    // A pipe source: the writer stays open while the CLI runs.
                    c.stdin(Stdio::piped())
                        .stdout(Stdio::piped())
                        .stderr(Stdio::piped());
                    let mut child = c.spawn().expect("spawn");
                    let mut pipe = child.stdin.take().expect("stdin");
                    let _ = pipe.write_all(b"piped");
                    let out = child.wait_with_output().expect("wait");
                    drop(pipe);
                    out
                } else {
                    run(c)
                };
                let what = format!("{reason} {mode:?} existing={existing}");
                assert_exit(&out, 1, &what);
                if existing {
                    assert_eq!(fs::read(&dst).expect("read"), OLD, "{what}");
                } else {
                    assert!(!dst.exists(), "{what}: the destination was created");
                }
                assert_eq!(names(dir.path()), before, "{what}: leftovers");
            }
        }
    };

    let d = Daemon::start_with(&["--max-jobs-per-user", "1"]);
    check(
        &d,
        "offset beyond the end",
        &["--offset", "100"],
        &src,
        false,
    );
    check(
        &d,
        "a descriptor it cannot take (--verify of a pipe)",
        &["--verify"],
        Path::new("/dev/stdin"),
        true,
    );
    let busy = occupy(&d, dir.path());
    check(&d, "--max-jobs-per-user", &[], &src, false);
    cancel(&d, busy);
    drop(d);

    let d = Daemon::start_with(&["--max-jobs", "1"]);
    let busy = occupy(&d, dir.path());
    check(&d, "--max-jobs", &[], &src, false);
    cancel(&d, busy);
}

/// After admission an in-place copy over a longer file ends at the copy's
/// end (the daemon truncates it when the job is done).
#[test]
fn in_place_copies_end_where_the_copy_ends() {
    let d = Daemon::start();
    let dir = tmpdir();
    let (src, data) = make_file(dir.path(), "src", 100_000, 1303);
    for mode in [&["--in-place"][..], &["--in-place", "--detach"]] {
        let dst = dir.path().join("dst");
        fs::write(&dst, pattern(9, 300_000)).expect("write");
        let out = copy(&d.socket, mode, &src, &dst);
        assert_exit(&out, 0, &format!("{mode:?}"));
        poll_until(Duration::from_secs(10), || {
            fs::read(&dst).is_ok_and(|got| got == data)
        });
        assert_file_eq(&dst, &data);
    }
}

/// Waits for `ringxfer wait ID`; its exit status.
fn wait_job(d: &Daemon, job: u64) -> std::process::Output {
    let mut c = cli(&d.socket);
    c.args(["wait", &job.to_string()]);
    run(c)
}

fn detach(d: &Daemon, args: &[&str], src: &Path, dst: &Path) -> u64 {
    let out = copy(&d.socket, &[&["--detach"], args].concat(), src, dst);
    assert_exit(&out, 0, "copy --detach");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("no id ({e}): {}", describe(&out)))
}

/// Polls `status ID` until the job has moved some bytes.
fn wait_moving(d: &Daemon, job: u64) {
    let moving = poll_until(Duration::from_secs(10), || {
        let mut c = cli(&d.socket);
        c.args(["--json", "status", &job.to_string()]);
        let out = run(c);
        json_lines(&out)
            .first()
            .is_some_and(|v| v["bytes"].as_u64().unwrap_or(0) > 0)
    });
    assert!(moving, "job {job} never moved a byte");
}

#[test]
fn detached_copies_publish_only_when_complete() {
    let d = Daemon::start();
    let dir = tmpdir();
    let work = dir.path().join("work");
    fs::create_dir(&work).expect("mkdir");
    let (src, data) = make_file(dir.path(), "src", 4 << 20, 1304);
    let dst = work.join("dst");

    // Cancelled mid-way: the old content, nothing else in the directory.
    fs::write(&dst, OLD).expect("write old");
    let job = detach(&d, &["--rate-limit", "1MiB"], &src, &dst);
    wait_moving(&d, job);
    assert_eq!(fs::read(&dst).expect("read"), OLD, "while running");
    assert_eq!(names(&work), ["dst"], "while running");
    cancel(&d, job);
    assert_exit(&wait_job(&d, job), 1, "wait for the cancelled job");
    assert_eq!(fs::read(&dst).expect("read"), OLD, "after cancel");
    assert_eq!(names(&work), ["dst"], "after cancel");

    // Failed mid-way (the source ends before the length asked for): the same.
    let job = detach(
        &d,
        &["--length", "8MiB", "--rate-limit", "4MiB"],
        &src,
        &dst,
    );
    wait_moving(&d, job);
    assert_eq!(fs::read(&dst).expect("read"), OLD, "while failing");
    let out = wait_job(&d, job);
    assert_exit(&out, 1, "wait for the failed job");
    assert_eq!(fs::read(&dst).expect("read"), OLD, "after failure");
    assert_eq!(names(&work), ["dst"], "after failure");

    // A new name stays absent on failure too.
    let fresh = work.join("fresh");
    let job = detach(&d, &["--rate-limit", "1MiB"], &src, &fresh);
    wait_moving(&d, job);
    assert!(!fresh.exists(), "a new name appeared before completion");
    cancel(&d, job);
    assert_exit(&wait_job(&d, job), 1, "wait for the cancelled job");
    assert_eq!(names(&work), ["dst"], "after cancel of a new name");

    // Completed: the new content under the name, the old mode kept.
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&dst, fs::Permissions::from_mode(0o604)).expect("chmod");
    let job = detach(&d, &["--fsync"], &src, &dst);
    assert_exit(&wait_job(&d, job), 0, "wait for the detached copy");
    assert_file_eq(&dst, &data);
    assert_eq!(
        fs::metadata(&dst).expect("stat").permissions().mode() & 0o777,
        0o604
    );
    let job = detach(&d, &[], &src, &fresh);
    assert_exit(&wait_job(&d, job), 0, "wait for the detached copy");
    assert_file_eq(&fresh, &data);
    assert_eq!(names(&work), ["dst", "fresh"]);
}

/// What a destination holds after a kill: the old file, the whole new one,
/// or (a new name) nothing; anything else is torn.
fn judge(dst: &Path, old: Option<&[u8]>, new: &[u8]) -> bool {
    match (fs::read(dst), old) {
        (Ok(got), Some(old)) => got == old || got == new,
        (Ok(got), None) => got == new,
        (Err(_), _) => old.is_none(),
    }
}

/// Runs `rounds` kill rounds: each starts a copy with `start`, kills
/// something at a random moment with `kill`, and counts torn destinations
/// and names left in the directory besides the destination. A later
/// (cleaning) run must leave no leftovers: those of killed runs are
/// removed by the next copy to the same name.
fn kill_rounds(
    rounds: usize,
    what: &str,
    mut start: impl FnMut(&Path, &Path) -> Child,
    mut kill: impl FnMut(&mut Child),
) {
    let dir = tmpdir();
    let (src, data) = make_file(dir.path(), "src", 6 << 20, 1305);
    let mut torn = 0;
    let mut leftovers = Vec::new();
    let mut moments = Moments::new();
    for round in 0..rounds {
        let work = dir.path().join(format!("round-{round}"));
        fs::create_dir(&work).expect("mkdir");
        let dst = work.join("dst");
        let existing = round % 2 == 0;
        if existing {
            fs::write(&dst, OLD).expect("write old");
        }
        let mut child = start(&src, &dst);
        std::thread::sleep(moments.below_ms(900));
        kill(&mut child);
        let _ = wait_child(&mut child, Duration::from_secs(20));
        // Give a daemon-side publish or cancel a moment to end.
        std::thread::sleep(Duration::from_millis(300));
        if !judge(&dst, existing.then_some(OLD), &data) {
            torn += 1;
        }
        leftovers.extend(
            names(&work)
                .into_iter()
                .filter(|n| n != "dst")
                .map(|n| format!("round {round}: {n}")),
        );
    }
    assert_eq!(torn, 0, "{what}: torn destinations");
    assert!(leftovers.is_empty(), "{what}: leftovers {leftovers:?}");
}

fn spawn_copy(socket: &Path, args: &[&str], src: &Path, dst: &Path) -> Child {
    let mut c = cli(socket);
    c.arg("copy")
        .args(args)
        .arg(src)
        .arg(dst)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c.spawn().expect("spawn ringxfer")
}

#[test]
fn daemon_killed_during_detached_copies_leaves_nothing_torn() {
    let daemon: std::cell::RefCell<Option<Daemon>> = std::cell::RefCell::new(None);
    kill_rounds(
        10,
        "daemon SIGKILL during copy --detach",
        |src, dst| {
            let d = Daemon::start();
            let child = spawn_copy(&d.socket, &["--detach", "--rate-limit", "12MiB"], src, dst);
            *daemon.borrow_mut() = Some(d);
            child
        },
        |child| {
            let _ = wait_child(child, Duration::from_secs(20));
            if let Some(d) = daemon.borrow_mut().take() {
                d.signal(libc::SIGKILL);
            }
        },
    );
}

#[test]
fn daemon_killed_during_copies_leaves_nothing_torn() {
    let daemon: std::cell::RefCell<Option<Daemon>> = std::cell::RefCell::new(None);
    kill_rounds(
        10,
        "daemon SIGKILL during copy",
        |src, dst| {
            let d = Daemon::start();
            let child = spawn_copy(
                &d.socket,
                &["--rate-limit", "12MiB", "--daemon-only"],
                src,
                dst,
            );
            *daemon.borrow_mut() = Some(d);
            child
        },
        |_| {
            if let Some(d) = daemon.borrow_mut().take() {
                d.signal(libc::SIGKILL);
            }
        },
    );
}

#[test]
fn cli_killed_during_copies_leaves_nothing_torn() {
    let d = Daemon::start();
    for sig in [libc::SIGKILL, libc::SIGINT] {
        kill_rounds(
            8,
            &format!("CLI signal {sig} during copy"),
            |src, dst| spawn_copy(&d.socket, &["--rate-limit", "12MiB"], src, dst),
            |child| {
                // SAFETY: kill(2) of our own child.
                unsafe { libc::kill(child.id() as i32, sig) };
            },
        );
    }
}

/// A single file's copy takes SIGINT, SIGTERM and SIGHUP on its main thread
/// (no thread of its own waits for them): mid-copy each ends it with
/// 128 + N, the old file kept or no new one made, and nothing left beside.
#[test]
fn a_single_copy_takes_signals_on_its_one_thread() {
    let d = Daemon::start();
    let c = d.client();
    let dir = tmpdir();
    let (src, _) = make_file(dir.path(), "src", 4 << 20, 1309);
    for (i, (sig, code)) in [
        (libc::SIGINT, 130),
        (libc::SIGTERM, 143),
        (libc::SIGHUP, 129),
    ]
    .into_iter()
    .enumerate()
    {
        let work = dir.path().join(format!("round-{i}"));
        fs::create_dir(&work).expect("mkdir");
        let dst = work.join("dst");
        let existing = i % 2 == 1;
        if existing {
            fs::write(&dst, OLD).expect("write old");
        }
        let mut child = spawn_copy(&d.socket, &["--rate-limit", "1MiB"], &src, &dst);
        let running = poll_until(Duration::from_secs(10), || {
            c.jobs().is_ok_and(|jobs| !jobs.is_empty())
        });
        assert!(running, "signal {sig}: the copy's job never ran");
        let threads = fs::read_dir(format!("/proc/{}/task", child.id()))
            .expect("the copy's threads")
            .count();
        assert_eq!(threads, 1, "signal {sig}: threads of a single copy");
        // SAFETY: kill(2) of our own child.
        unsafe { libc::kill(child.id() as i32, sig) };
        let status = wait_child(&mut child, Duration::from_secs(20)).expect("the copy ends");
        assert_eq!(status.code(), Some(code), "signal {sig}: {status:?}");
        assert!(judge(&dst, existing.then_some(OLD), b"-"), "signal {sig}");
        let left: Vec<String> = names(&work).into_iter().filter(|n| n != "dst").collect();
        assert!(left.is_empty(), "signal {sig}: left {left:?}");
        poll_until(Duration::from_secs(10), || {
            c.jobs().is_ok_and(|jobs| jobs.is_empty())
        });
    }
}

/// A hidden staging file a killed run left (its pid gone) is removed by the
/// next copy to the same name, which says so; a live process's is not.
#[test]
fn leftovers_of_killed_runs_are_removed_by_the_next_run() {
    let d = Daemon::start();
    let dir = tmpdir();
    let (src, data) = make_file(dir.path(), "src", 1000, 1306);
    let dst = dir.path().join("dst");
    // A pid that is gone: a child that exited.
    let mut gone = Command::new("true").spawn().expect("spawn true");
    let pid = gone.id();
    gone.wait().expect("wait");
    let stale = dir.path().join(format!(".dst.ringxfer-{pid}-3"));
    let live = dir
        .path()
        .join(format!(".dst.ringxfer-{}-4", std::process::id()));
    let other = dir.path().join(format!(".dstx.ringxfer-{pid}-5"));
    for p in [&stale, &live, &other] {
        fs::write(p, b"half").expect("write");
    }
    let out = copy(&d.socket, &[], &src, &dst);
    assert_exit(&out, 0, "copy");
    assert!(stderr(&out).contains("removed"), "{}", describe(&out));
    assert_file_eq(&dst, &data);
    assert!(!stale.exists(), "a dead run's staging file stays");
    assert!(live.exists(), "a live process's staging file was removed");
    assert!(other.exists(), "another name's staging file was removed");
}

/// A port nothing listens on now (bound and released).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Connects to `port` on loopback, retrying while `recv` starts listening.
fn connect(port: u16) -> TcpStream {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => return s,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("connect to recv on port {port}: {e}"),
        }
    }
}

fn spawn_recv(socket: &Path, port: u16, args: &[&str], dst: &Path) -> Child {
    let mut c = cli(socket);
    c.args(["--json", "recv"])
        .arg(format!("127.0.0.1:{port}"))
        .arg(dst)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c.spawn().expect("spawn ringxfer recv")
}

fn finish(child: Child) -> std::process::Output {
    let mut child = child;
    if wait_child(&mut child, Duration::from_secs(60)).is_none() {
        let _ = child.kill();
    }
    child.wait_with_output().expect("recv output")
}

#[test]
fn recv_with_a_length_fails_on_a_short_stream_and_keeps_the_old_file() {
    let d = Daemon::start();
    let dir = tmpdir();
    let dst = dir.path().join("dst");
    fs::write(&dst, OLD).expect("write old");
    let port = free_port();
    let child = spawn_recv(&d.socket, port, &["--length", "100000"], &dst);
    let mut peer = connect(port);
    peer.write_all(&pattern(7, 60_000)).expect("send");
    drop(peer);
    let out = finish(child);
    assert_exit(&out, 1, "recv --length with a short stream");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("source-short"),
        "{}",
        describe(&out)
    );
    assert_eq!(fs::read(&dst).expect("read"), OLD);
    assert_eq!(names(dir.path()), ["dst"]);

    // The whole length: published.
    let port = free_port();
    let child = spawn_recv(&d.socket, port, &["--length", "100000"], &dst);
    let data = pattern(8, 100_000);
    let mut peer = connect(port);
    peer.write_all(&data).expect("send");
    drop(peer);
    let out = finish(child);
    assert_exit(&out, 0, "recv --length with the whole stream");
    assert_file_eq(&dst, &data);
}

#[test]
fn recv_without_a_length_says_the_stream_ended() {
    let d = Daemon::start();
    let dir = tmpdir();
    let dst = dir.path().join("dst");
    let port = free_port();
    let child = spawn_recv(&d.socket, port, &[], &dst);
    let data = pattern(9, 12_345);
    let mut peer = connect(port);
    peer.write_all(&data).expect("send");
    drop(peer);
    let out = finish(child);
    assert_exit(&out, 0, "recv");
    let v = &json_lines(&out)[0];
    let note = v["note"].as_str().unwrap_or_default();
    assert!(
        note.contains("stream ended after 12345 bytes"),
        "{}",
        describe(&out)
    );
    assert_file_eq(&dst, &data);
}

/// The sender is a real process (`ringxfer send`, rate-limited, on its
/// own in-process engine) killed mid-stream: recv --length fails and the
/// old file stays; recv --detach likewise through the daemon.
#[test]
fn recv_of_a_killed_sender_publishes_nothing() {
    let d = Daemon::start();
    let dir = tmpdir();
    let (src, _) = make_file(dir.path(), "src", 4 << 20, 1307);
    let work = dir.path().join("work");
    fs::create_dir(&work).expect("mkdir");
    let dst = work.join("dst");
    fs::write(&dst, OLD).expect("write old");
    let nobody = no_daemon_socket(dir.path());
    for detach in [false, true] {
        let port = free_port();
        let mut args = vec!["--length", "4MiB"];
        if detach {
            args.push("--detach");
        }
        let child = spawn_recv(&d.socket, port, &args, &dst);
        // Wait until recv listens, without taking its one connection.
        let listening = poll_until(Duration::from_secs(20), || {
            fs::read_to_string("/proc/net/tcp")
                .is_ok_and(|t| t.contains(&format!(":{port:04X} 00000000:0000 0A")))
        });
        assert!(listening, "recv never listened on {port}");
        let mut sender = cli(&nobody);
        sender
            .args(["send", "--rate-limit", "1MiB"])
            .arg(&src)
            .arg(format!("127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut sender = sender.spawn().expect("spawn sender");
        let out = if detach {
            let out = finish(child);
            assert_exit(&out, 0, "recv --detach");
            out
        } else {
            std::thread::sleep(Duration::from_millis(700));
            let _ = sender.kill();
            finish(child)
        };
        if detach {
            let job = json_lines(&out)[0]["job"].as_u64().expect("job id");
            std::thread::sleep(Duration::from_millis(700));
            assert_eq!(fs::read(&dst).expect("read"), OLD, "while receiving");
            let _ = sender.kill();
            assert_exit(&wait_job(&d, job), 1, "wait for the short detached recv");
        } else {
            assert_exit(&out, 1, "recv of a killed sender");
        }
        let _ = sender.wait();
        assert_eq!(fs::read(&dst).expect("read"), OLD, "detach={detach}");
        assert_eq!(names(&work), ["dst"], "detach={detach}");
    }
}

/// The daemon takes only single-component names to publish under, in the
/// directory it was given: nothing can be named outside it.
#[test]
fn publish_names_must_be_one_component() {
    use std::os::unix::fs::OpenOptionsExt;
    let d = Daemon::start();
    let dir = tmpdir();
    let (src, _) = make_file(dir.path(), "src", 100, 1308);
    let work = dir.path().join("work");
    fs::create_dir(&work).expect("mkdir");
    let client = d.client();
    for name in [&b"../escape"[..], b"a/b", b"", b"..", b"."] {
        let staged = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_TMPFILE)
            .open(&work)
            .expect("O_TMPFILE");
        let dirfd = fs::File::open(&work).expect("open dir");
        let to = ringxfer_ipc::PublishTo {
            name: name.to_vec(),
            staged_name: None,
        };
        let opts = ringxfer_ipc::TransferOptions {
            detach: true,
            ..Default::default()
        };
        let job = client
            .submit_publish(open_src(&src), &staged, &dirfd, to, &opts)
            .expect("submit");
        failed(
            wait(job),
            ringxfer_ipc::FailureKind::InvalidRequest,
            &String::from_utf8_lossy(name),
        );
    }
    assert!(names(&work).is_empty());
    assert_eq!(names(dir.path()), ["src", "work"]);
}
