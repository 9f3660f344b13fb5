//! Nothing blocks the loop: a file system whose getattr stalls (a real FUSE
//! mount, tests/fuse/slowfs.py) stalls only the job whose descriptor is on
//! it, never another client's.

use std::fs::File;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use ringxfer_ipc::{fdpass::send_with_fds, Event, FailureKind, Request};

use crate::protocol_abuse::{frame, hello, raw, read_event, submit_request};
use crate::support::*;

/// How long the armed getattr sleeps.
const STALL: Duration = Duration::from_secs(5);
/// The size of the file on the FUSE mount.
const FUSE_SIZE: usize = 1 << 20;

/// A mounted tests/fuse/slowfs.py: unmounted and stopped on drop.
struct SlowFs {
    server: Child,
    mount: PathBuf,
    arm: PathBuf,
    _dir: tempfile::TempDir,
}

impl SlowFs {
    /// Mounts it, or says why it cannot (no python3-fuse or fusermount3:
    /// .ci/run installs both).
    fn mount() -> Result<SlowFs, String> {
        let python = Path::new("/usr/bin/python3");
        let usable = Command::new(python)
            .args(["-c", "import fuse"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !usable || !Path::new("/usr/bin/fusermount3").exists() {
            return Err("needs /usr/bin/python3 with python3-fuse, and fuse3".into());
        }
        let dir = tmpdir();
        let mount = dir.path().join("mnt");
        std::fs::create_dir(&mount).expect("mount point");
        let arm = dir.path().join("arm");
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fuse/slowfs.py");
        let server = Command::new(python)
            .arg(script)
            .arg(&mount)
            .args([
                "-f",
                "-o",
                "attr_timeout=0,entry_timeout=0,negative_timeout=0",
            ])
            .env("SLOWFS_ARM", &arm)
            .env("SLOWFS_SIZE", FUSE_SIZE.to_string())
            .env("SLOWFS_STALL", STALL.as_secs().to_string())
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start slowfs.py: {e}"))?;
        let fs = SlowFs {
            server,
            mount,
            arm,
            _dir: dir,
        };
        if !poll_until(Duration::from_secs(10), || fs.data().exists()) {
            return Err("the FUSE file system did not come up within 10 s".into());
        }
        Ok(fs)
    }

    fn data(&self) -> PathBuf {
        self.mount.join("data")
    }

    /// The next getattr of the file sleeps `STALL`.
    fn arm(&self) {
        File::create(&self.arm).expect("arm file");
    }

    /// Whether an armed getattr has begun (it removes the arm file).
    fn stalling(&self) -> bool {
        !self.arm.exists()
    }
}

impl Drop for SlowFs {
    fn drop(&mut self) {
        let _ = Command::new("fusermount3")
            .arg("-uz")
            .arg(&self.mount)
            .status();
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

fn fuse_content() -> Vec<u8> {
    (0..FUSE_SIZE).map(|i| ((7 * i + 3) % 251) as u8).collect()
}

/// Mounts slowfs (root only: the tests are #[ignore]d for others, and
/// .ci/run installs fuse3 and python3-fuse), or fails saying why.
fn slowfs() -> SlowFs {
    require_root("to mount a FUSE file system");
    SlowFs::mount()
        .unwrap_or_else(|why| panic!("cannot mount the stalling FUSE file system: {why}"))
}

#[test]
#[ignore = "needs root: .ci/run runs it (--include-ignored)"]
fn a_stalled_getattr_stalls_only_its_own_job() {
    let fs = slowfs();
    let d = Daemon::start();
    let dir = tmpdir();
    // Connected first: connecting waits for the daemon's Welcome, and the
    // measure below is of the copy alone.
    let fast = d.client();
    // Opened before arming: the open's own lookup answers at once.
    let src = File::open(fs.data()).expect("open the FUSE file");
    let dst_path = dir.path().join("from-fuse");
    let dst = create_dst(&dst_path);
    fs.arm();
    // Submitted with bare protocol frames: ringxfer_ipc's Client looks at
    // the source itself, and its own stat would take the armed stall.
    let slow = raw(&d);
    slow.set_read_timeout(Some(JOB_TIMEOUT)).expect("timeout");
    hello(&slow);
    let submit = Request::Submit(submit_request(1));
    send_with_fds(slow.as_fd(), &frame(&submit), &[src.as_fd(), dst.as_fd()])
        .expect("sendmsg with fds");
    drop((src, dst));
    let (tx, rx) = mpsc::channel();
    let submitted = Instant::now();
    thread::spawn(move || {
        let mut events = Vec::new();
        while let Some(ev) = read_event(&slow) {
            let last = matches!(ev, Event::Completed { .. } | Event::Failed { .. });
            events.push(ev);
            if last {
                break;
            }
        }
        let _ = tx.send((events, submitted.elapsed()));
    });
    assert!(
        poll_until(Duration::from_secs(10), || fs.stalling()),
        "the daemon never asked the FUSE file system for the file's attributes"
    );

    // Another client's copy on an ordinary file system meanwhile.
    let started = Instant::now();
    copy_and_check(&fast, dir.path(), "beside-the-stall", 1 << 20, 0x57a1);
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(1),
        "a copy on a normal file system took {took:?} while another job's source stalled in getattr: the stall blocked the loop"
    );

    // The stalled job itself completes once getattr answers.
    let (events, after) = rx
        .recv_timeout(JOB_TIMEOUT)
        .expect("the stalled job never ended");
    match events.last() {
        Some(Event::Completed { bytes, .. }) => assert_eq!(*bytes, FUSE_SIZE as u64),
        other => panic!("the job whose getattr stalled did not complete: {other:?} ({events:?})"),
    }
    assert!(
        after >= STALL - Duration::from_millis(500),
        "the job ended after {after:?}, before its getattr could have answered"
    );
    assert_file_eq(&dst_path, &fuse_content());
}

#[test]
#[ignore = "needs root: .ci/run runs it (--include-ignored)"]
fn a_submit_stalled_in_getattr_is_closed_cleanly_when_its_client_leaves_and_let_in_or_refused_when_the_daemon_stops(
) {
    let fs = slowfs();
    let d = Daemon::start();
    let baseline = d.baseline();
    let dir = tmpdir();

    // A client that leaves while its submit waits on getattr: the daemon
    // closes the descriptors once getattr answers, and serves others meanwhile.
    {
        let s = raw(&d);
        hello(&s);
        let src = File::open(fs.data()).expect("open the FUSE file");
        let dst = create_dst(&dir.path().join("abandoned"));
        fs.arm();
        let submit = Request::Submit(submit_request(1));
        send_with_fds(s.as_fd(), &frame(&submit), &[src.as_fd(), dst.as_fd()])
            .expect("sendmsg with fds");
        drop((src, dst));
        assert!(
            poll_until(Duration::from_secs(10), || fs.stalling()),
            "the daemon never asked the FUSE file system"
        );
        drop(s);
    }
    let started = Instant::now();
    copy_and_check(&d.client(), dir.path(), "beside-the-left", 70_001, 0x4ea1);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "a copy took {:?} beside an abandoned submit stalled in getattr",
        started.elapsed()
    );
    // The descriptors are closed once getattr answers (they stay owned
    // by the statx until then).
    d.assert_fds_return(
        baseline,
        STALL * 2,
        "a client left while its submit stalled in getattr",
    );

    // A stop signal while a submit waits on getattr: the daemon drains,
    // letting the submit in like the jobs it already runs (it came before
    // the signal), and exits once that job is done.
    let s = stalled_submit(&fs, &dir.path().join("drained"), 7, &d);
    d.signal(libc::SIGTERM);
    match read_event(&s) {
        Some(Event::Accepted { req: 7, .. }) => {}
        other => panic!("expected the stalled submit accepted while draining, got {other:?}"),
    }
    match read_event(&s) {
        Some(Event::Completed { req: 7, bytes, .. }) => assert_eq!(bytes, FUSE_SIZE as u64),
        other => panic!("expected the drained job completed, got {other:?}"),
    }
    d.wait_exit(STALL * 3);

    // A second signal stops at once: the client of a submit still waiting
    // on getattr is told so then, and the daemon exits once getattr answers.
    let d = Daemon::start();
    let s = stalled_submit(&fs, &dir.path().join("stopped"), 8, &d);
    let stopped = Instant::now();
    d.signal(libc::SIGTERM);
    // Two signals sent at once would merge into one.
    assert!(poll_until(Duration::from_secs(5), || d
        .log()
        .contains("stop signal")));
    d.signal(libc::SIGTERM);
    match read_event(&s) {
        Some(Event::Failed {
            req: 8,
            job: None,
            kind: FailureKind::ShuttingDown,
            ..
        }) => {}
        other => panic!("expected the stalled submit refused with ShuttingDown, got {other:?}"),
    }
    assert!(
        stopped.elapsed() < Duration::from_secs(2),
        "the client of a stalled submit was told the daemon stops after {:?}",
        stopped.elapsed()
    );
    d.wait_exit(STALL * 3);
}

/// Submits a copy of the FUSE file to `dst` as request `req` on a bare
/// connection to `d`, its getattr armed, and returns once it stalls.
fn stalled_submit(fs: &SlowFs, dst: &Path, req: u64, d: &Daemon) -> std::os::unix::net::UnixStream {
    let s = raw(d);
    s.set_read_timeout(Some(JOB_TIMEOUT)).expect("timeout");
    hello(&s);
    let src = File::open(fs.data()).expect("open the FUSE file");
    let dst = create_dst(dst);
    fs.arm();
    let submit = Request::Submit(submit_request(req));
    send_with_fds(s.as_fd(), &frame(&submit), &[src.as_fd(), dst.as_fd()])
        .expect("sendmsg with fds");
    assert!(
        poll_until(Duration::from_secs(10), || fs.stalling()),
        "the daemon never asked the FUSE file system"
    );
    s
}
