//! Jobs that fail, and clients that go away mid-job.

use std::fs::OpenOptions;
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd};
use std::time::Duration;

use ringxfer_ipc::{FailureKind, TransferOptions};

use crate::support::*;

/// Waits until `fd` is readable (the daemon has started sending into it).
fn readable_within(fd: &impl AsRawFd, timeout: Duration) -> bool {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let n = unsafe { libc::poll(&mut p, 1, timeout.as_millis() as i32) };
    n == 1 && p.revents & libc::POLLIN != 0
}

#[test]
fn client_disconnecting_mid_job_to_a_stalled_socket() {
    let d = Daemon::start();
    let baseline = d.baseline();
    let dir = tmpdir();
    let (src, _) = make_file(dir.path(), "big", 32 << 20, 41);

    // A TCP peer that never reads: the job can never finish on its own, so
    // the daemon must cancel it when its client goes away.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let conn = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (peer, _) = listener.accept().unwrap();
    {
        let client = d.client();
        let s = open_src(&src);
        let _h = client.submit(s.as_fd(), conn.as_fd(), &opts()).unwrap();
        drop(s);
        assert!(
            readable_within(&peer, Duration::from_secs(10)),
            "the daemon never started sending into the socket"
        );
        // Dropping the handle and the client closes the connection mid-job.
    }
    drop(conn);
    d.assert_fds_return(
        baseline,
        Duration::from_secs(5),
        "after a client disconnected with a stalled socket job",
    );
    d.assert_healthy(baseline, "after a client disconnected mid-job");
    drop(peer);
}

#[test]
fn client_disconnecting_mid_copy() {
    let d = Daemon::start();
    let baseline = d.baseline();
    let dir = tmpdir();
    let (src, _) = make_file(dir.path(), "big", 64 << 20, 42);
    {
        let client = d.client();
        let mut handles = Vec::new();
        for i in 0..4 {
            let s = open_src(&src);
            let t = create_dst(&dir.path().join(format!("dst{i}")));
            handles.push(client.submit(s.as_fd(), t.as_fd(), &opts()).unwrap());
        }
        // Drop everything without waiting.
    }
    d.assert_fds_return(
        baseline,
        Duration::from_secs(5),
        "after a client disconnected during four 64 MiB copies",
    );
    d.assert_healthy(baseline, "after a client disconnected mid-copy");
}

#[test]
fn read_only_destination_is_a_bad_descriptor() {
    let d = Daemon::start();
    let baseline = d.baseline();
    let client = d.client();
    let dir = tmpdir();
    let (src, _) = make_file(dir.path(), "src", 100_000, 43);
    let (dst, before) = make_file(dir.path(), "dst", 10, 44);
    let s = open_src(&src);
    let t = std::fs::File::open(&dst).unwrap(); // O_RDONLY
    let f = failed(
        wait(client.submit(s.as_fd(), t.as_fd(), &opts()).unwrap()),
        FailureKind::BadDescriptor,
        "O_RDONLY destination",
    );
    assert_eq!(f.bytes, 0, "bytes reported for a read-only destination");
    assert_file_eq(&dst, &before);
    drop((s, t, client));
    d.assert_healthy(baseline, "after a read-only destination");
}

#[test]
fn write_only_source_is_a_bad_descriptor() {
    let d = Daemon::start();
    let baseline = d.baseline();
    let client = d.client();
    let dir = tmpdir();
    let (src, _) = make_file(dir.path(), "src", 100_000, 45);
    let s = OpenOptions::new().write(true).open(&src).unwrap(); // O_WRONLY
    let t = create_dst(&dir.path().join("dst"));
    let f = failed(
        wait(client.submit(s.as_fd(), t.as_fd(), &opts()).unwrap()),
        FailureKind::BadDescriptor,
        "O_WRONLY source",
    );
    assert_eq!(f.bytes, 0);
    drop((s, t, client));
    d.assert_healthy(baseline, "after a write-only source");
}

#[test]
fn swapped_descriptors_fail_clearly() {
    // Source and destination the wrong way round: the "source" is the
    // write-only destination, the "destination" the read-only source.
    let d = Daemon::start();
    let client = d.client();
    let dir = tmpdir();
    let (src, data) = make_file(dir.path(), "src", 50_000, 46);
    // The destination already holds bytes, so the swapped "source" is not empty.
    let (dst, _) = make_file(dir.path(), "dst", 50_000, 48);
    let s = open_src(&src);
    let t = OpenOptions::new().write(true).open(&dst).unwrap(); // O_WRONLY
    let f = failed(
        wait(client.submit(t.as_fd(), s.as_fd(), &opts()).unwrap()),
        FailureKind::BadDescriptor,
        "swapped descriptors",
    );
    assert_eq!(f.bytes, 0);
    assert_file_eq(&src, &data);
}

#[test]
#[ignore = "needs root: .ci/run runs it (--include-ignored)"]
fn full_destination_is_no_space() {
    // SAFETY: geteuid has no preconditions.
    require_root("root to mount tmpfs");
    let d = Daemon::start();
    let baseline = d.baseline();
    let dir = tmpdir();
    let (src, _) = make_file(dir.path(), "src", 4 << 20, 47);
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let _mount = match mount_tmpfs(&mnt, "1m") {
        Ok(m) => m,
        Err(e) => panic!("cannot mount tmpfs (as root): {e}"),
    };
    {
        let client = d.client();
        let s = open_src(&src);
        let t = create_dst(&mnt.join("dst"));
        let f = failed(
            wait(client.submit(s.as_fd(), t.as_fd(), &opts()).unwrap()),
            FailureKind::NoSpace,
            "4 MiB into a 1 MiB tmpfs",
        );
        assert_eq!(f.os_error, Some(libc::ENOSPC), "os_error for ENOSPC: {f:?}");
        assert!(
            f.bytes <= 1 << 20,
            "reported {} bytes written into a 1 MiB tmpfs",
            f.bytes
        );
        // With a length that fits, the same mount takes the copy.
        let t = create_dst(&mnt.join("dst"));
        let o = TransferOptions {
            length: Some(256 << 10),
            ..opts()
        };
        let c = completed(
            wait(client.submit(s.as_fd(), t.as_fd(), &o).unwrap()),
            "256 KiB into the tmpfs after ENOSPC",
        );
        assert_eq!(c.bytes, 256 << 10);
    }
    d.assert_healthy(baseline, "after ENOSPC");
}
