//! The daemon process: one loop thread, the socket file, signals.

use std::io::Write;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use ringxfer_ipc::{FailureKind, JobError, TransferOptions};

use crate::support::*;

#[test]
fn one_loop_thread_while_busy() {
    // One thread is the io_uring engine's design (io-wq workers and the
    // thread that closes client descriptors aside); the threads engine has
    // workers by design, so this runs io_uring whatever RINGXFER_TEST_ENGINE
    // says.
    let d = Daemon::start_with(&["--engine", "uring"]);
    // The socket listens before the engine is made: once the handshake came
    // from the loop, the engine (its closer, its side pool's workers, each
    // named as it starts) exists.
    let client = d.client();
    let idle = d.loop_threads();
    assert_eq!(
        idle,
        1,
        "idle daemon has {idle} non-io_uring threads: {:?}",
        d.tasks()
    );
    assert!(
        d.tasks().iter().any(|t| t.comm == "ringxfer-close"),
        "no descriptor closer: {:?}",
        d.tasks()
    );
    let dir = tmpdir();

    // A socket -> file job kept busy by a writer that streams until told to
    // stop, so the samples below are taken while bytes are moving.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut writer = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (server_side, _) = l.accept().unwrap();
    let sock_dst = create_dst(&dir.path().join("from-socket"));
    let sock_job = client
        .submit(server_side.as_fd(), sock_dst.as_fd(), &opts())
        .unwrap();
    drop((server_side, sock_dst));
    let stop = Arc::new(AtomicBool::new(false));
    let streamer = {
        let stop = stop.clone();
        thread::spawn(move || -> std::io::Result<u64> {
            let chunk = pattern(50, 64 << 10);
            let mut total = 0u64;
            while !stop.load(Ordering::Relaxed) {
                writer.write_all(&chunk)?;
                total += chunk.len() as u64;
                // Rate limit (about 64 MB/s) so the job outlives the sampling
                // without filling the disk; not a synchronisation.
                thread::sleep(Duration::from_millis(1));
            }
            writer.shutdown(Shutdown::Write)?;
            Ok(total)
        })
    };

    // And some file copies alongside it.
    let (src, data) = make_file(dir.path(), "src", 16 << 20, 51);
    let mut copies = Vec::new();
    for i in 0..4 {
        let dst: std::path::PathBuf = dir.path().join(format!("dst{i}"));
        let (s, t) = (open_src(&src), create_dst(&dst));
        copies.push((client.submit(s.as_fd(), t.as_fd(), &opts()).unwrap(), dst));
    }

    let mut samples = 0;
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(400) {
        let n = d.loop_threads();
        assert_eq!(
            n,
            1,
            "busy daemon has {n} non-io_uring threads: {:?}",
            d.tasks()
        );
        samples += 1;
        thread::sleep(Duration::from_millis(2));
    }
    assert!(samples > 10);

    stop.store(true, Ordering::Relaxed);
    let total = streamer.join().unwrap().expect("streaming writer");
    let c = completed(wait(sock_job), "socket -> file while sampling threads");
    assert_eq!(c.bytes, total, "socket job bytes vs bytes streamed");
    for (h, dst) in copies {
        let c = completed(wait(h), "16 MiB copy while sampling threads");
        assert_eq!(c.bytes, data.len() as u64);
        assert_file_eq(&dst, &data);
    }
    let n = d.loop_threads();
    assert_eq!(
        n,
        1,
        "daemon after the jobs has {n} non-io_uring threads: {:?}",
        d.tasks()
    );
}

#[test]
fn second_daemon_on_a_live_socket_refuses_to_start() {
    let d = Daemon::start();
    let mut cmd = Command::new(DAEMON_BIN);
    cmd.arg("--socket").arg(&d.socket);
    let out = run_timeout(cmd, Duration::from_secs(10));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "second daemon on a live socket: {}; stderr: {stderr}",
        out.status
    );
    assert!(
        stderr.contains(&d.socket.display().to_string()),
        "second daemon's message should name the socket path {}: {stderr:?}",
        d.socket.display()
    );
    // The first daemon still owns its socket and still serves.
    assert!(
        d.socket.exists(),
        "the second daemon removed the live socket file"
    );
    let dir = tmpdir();
    copy_and_check(&d.client(), dir.path(), "after-second", 5000, 52);
    d.stop();
}

#[test]
fn stale_socket_file_is_replaced() {
    let dir = tmpdir();
    let path = dir.path().join("stale.sock");
    drop(UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    assert!(
        UnixStream::connect(&path).is_err(),
        "test setup: the stale socket still answers"
    );
    let d = Daemon::start_at(Some(path.clone()), &[]);
    let data_dir = tmpdir();
    copy_and_check(&d.client(), data_dir.path(), "stale", 5000, 53);
    d.stop();
    assert!(!path.exists());
}

#[test]
fn a_socket_whose_listener_is_going_away_is_taken_over() {
    // A daemon killed with SIGKILL still takes connections for a moment:
    // the kernel tears its ring, which holds the listener, down a little
    // after it is reaped. A daemon started in that moment waits it out
    // instead of calling the socket served.
    let dir = tmpdir();
    let path = dir.path().join("dying.sock");
    let dying = UnixListener::bind(&path).unwrap();
    let closer = thread::spawn(move || {
        thread::sleep(Duration::from_millis(300));
        drop(dying);
    });
    let d = Daemon::start_at(Some(path.clone()), &[]);
    closer.join().unwrap();
    // Connections that succeed from here on are the daemon's.
    assert!(
        poll_until(Duration::from_secs(10), || UnixStream::connect(&path)
            .is_ok()),
        "the daemon never took the socket over; log:\n{}",
        d.log()
    );
    let data_dir = tmpdir();
    copy_and_check(&d.client(), data_dir.path(), "taken-over", 5000, 55);
    d.stop();
}

#[test]
fn socket_mode_is_0660_and_sigterm_removes_it() {
    let d = Daemon::start();
    let md = std::fs::metadata(&d.socket).unwrap();
    assert!(
        md.file_type().is_socket(),
        "{} is not a socket",
        d.socket.display()
    );
    assert_eq!(
        md.permissions().mode() & 0o7777,
        0o660,
        "socket mode is {:o}",
        md.permissions().mode() & 0o7777
    );
    d.stop();
}

#[test]
fn sigint_exits_0_and_removes_the_socket() {
    let d = Daemon::start();
    let dir = tmpdir();
    copy_and_check(&d.client(), dir.path(), "before-sigint", 1000, 54);
    d.stop_with(libc::SIGINT);
}

#[test]
fn sigterm_with_a_client_connected() {
    // A connected, idle client must not keep the daemon from exiting.
    let d = Daemon::start();
    let _client = d.client();
    d.stop();
}

#[test]
fn sigterm_lets_running_jobs_finish_and_takes_no_new_work() {
    let d = Daemon::start();
    let dir = tmpdir();
    // About 1.5 s at 2 MiB/s: long enough to see the daemon drain.
    let (src, data) = make_file(dir.path(), "src", 3 << 20, 380);
    let client = d.client();
    let running = client
        .copy_file(
            &src,
            &dir.path().join("dst"),
            &TransferOptions {
                rate_limit: Some(2 << 20),
                ..opts()
            },
        )
        .expect("submit the slow copy");
    running.job_id().expect("admitted");
    d.signal(libc::SIGTERM);
    thread::sleep(Duration::from_millis(300));

    // No new connections: the listener is closed at once.
    match UnixStream::connect(&d.socket) {
        Err(e) => assert_eq!(e.raw_os_error(), Some(libc::ECONNREFUSED), "{e}"),
        Ok(_) => panic!("a draining daemon accepted a new connection"),
    }
    // No new jobs on an existing one.
    let late = client
        .copy_file(&src, &dir.path().join("late"), &opts())
        .expect("the request itself still goes out");
    failed(
        wait(late),
        FailureKind::ShuttingDown,
        "a job submitted while draining",
    );
    assert!(!dir.path().join("late").exists());

    // The running job finishes whole.
    let c = completed(wait(running), "the job running at SIGTERM");
    assert_eq!(c.bytes, data.len() as u64);
    assert_file_eq(&dir.path().join("dst"), &data);
    drop(client);
    // And then the daemon exits 0 on its own, socket removed.
    d.wait_exit(Duration::from_secs(10));
}

#[test]
fn a_second_sigterm_cancels_running_jobs_with_a_shutdown_message() {
    let d = Daemon::start();
    let client = d.client();
    let src = zero_source(1 << 50);
    let null = dev_null();
    let endless = client
        .submit(src.as_fd(), null.as_fd(), &opts())
        .expect("submit");
    endless.job_id().expect("admitted");
    d.signal(libc::SIGTERM);
    thread::sleep(Duration::from_millis(300));
    assert!(
        endless.wait_timeout(Duration::from_millis(10)).is_none(),
        "one SIGTERM cancelled a running job before its grace period"
    );
    d.signal(libc::SIGTERM);
    match wait(endless) {
        Err(JobError::Failed { kind, message, .. }) => {
            assert_eq!(kind, FailureKind::Cancelled);
            assert!(message.starts_with("shutdown"), "{message}");
        }
        other => panic!("expected a cancellation, got {other:?}"),
    }
    drop(client);
    d.wait_exit(Duration::from_secs(10));
}

#[test]
fn the_grace_period_ends_with_the_jobs_left_cancelled() {
    let d = Daemon::start_with(&["--shutdown-grace", "500ms"]);
    let client = d.client();
    let src = zero_source(1 << 50);
    let null = dev_null();
    let endless = client
        .submit(src.as_fd(), null.as_fd(), &opts())
        .expect("submit");
    endless.job_id().expect("admitted");
    let t = Instant::now();
    d.signal(libc::SIGTERM);
    match wait(endless) {
        Err(JobError::Failed { kind, message, .. }) => {
            assert_eq!(kind, FailureKind::Cancelled);
            assert!(message.contains("grace period"), "{message}");
        }
        other => panic!("expected a cancellation, got {other:?}"),
    }
    assert!(
        t.elapsed() >= Duration::from_millis(450),
        "cancelled after {:?}, before the grace period ended",
        t.elapsed()
    );
    drop(client);
    d.wait_exit(Duration::from_secs(10));
}
