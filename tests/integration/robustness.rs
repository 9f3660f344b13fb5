//! What one misbehaving peer must not be able to do to the daemon or to
//! other clients: over-read a stream, or starve everyone of pipes.

use std::io::{Read, Write};
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::thread;
use std::time::Duration;

use ringxfer_ipc::TransferOptions;

use crate::support::*;

#[test]
fn a_non_blocking_stream_source_gives_exactly_its_length() {
    // A non-blocking socket makes reads come back with EAGAIN, which sends
    // the job through its readiness poll; the bytes past the requested
    // length must stay in the socket for its owner.
    let d = Daemon::start();
    let client = d.client();
    let dir = tmpdir();
    let length = 3_000_000usize;
    let extra = 100_000usize;
    let data = pattern(5, length + extra);
    for round in 0..8 {
        let (mut writer, reader) = tcp_pair();
        reader.set_nonblocking(true).unwrap();
        let payload = data.clone();
        let feeder = thread::spawn(move || {
            for piece in payload.chunks(64 * 1024) {
                writer.write_all(piece).unwrap();
                thread::sleep(Duration::from_micros(300));
            }
        });
        let dst_path = dir.path().join(format!("dst{round}"));
        let dst = create_dst(&dst_path);
        let opts = TransferOptions {
            length: Some(length as u64),
            ..opts()
        };
        let h = client.submit(reader.as_fd(), dst.as_fd(), &opts).unwrap();
        let done = completed(wait(h), "non-blocking socket source with a length");
        assert_eq!(done.bytes, length as u64, "round {round}: bytes reported");
        feeder.join().unwrap();
        assert_file_eq(&dst_path, &data[..length]);
        reader.set_nonblocking(false).unwrap();
        let mut rest = Vec::new();
        (&reader).read_to_end(&mut rest).unwrap();
        assert_bytes_eq(
            &rest,
            &data[length..],
            "bytes left in the socket after the job",
        );
    }
}

fn silent_pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: pipe2 succeeded; both descriptors are new and ours.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

#[test]
fn silent_stream_sources_do_not_starve_other_clients() {
    // One client submits more jobs than the daemon has pipes, each reading
    // a pipe nobody writes. Another client's copy must still go through.
    let d = Daemon::start_with(&["--pipes", "8"]);
    let baseline = d.baseline();
    let hog = d.client();
    let dir = tmpdir();
    let mut held = Vec::new();
    for i in 0..12 {
        let (r, w) = silent_pipe();
        let dst = create_dst(&dir.path().join(format!("hog{i}")));
        let h = hog.submit(r.as_fd(), dst.as_fd(), &opts()).unwrap();
        held.push((h, w));
    }
    let other = d.client();
    let (src, data) = make_file(dir.path(), "src", 4 << 20, 17);
    let dst = dir.path().join("dst");
    let h = other.copy_file(&src, &dst, &opts()).unwrap();
    let done = completed(
        wait_within(h, Duration::from_secs(10)),
        "a copy while another client's stream jobs wait",
    );
    assert_eq!(done.bytes, data.len() as u64);
    assert_file_eq(&dst, &data);
    drop(other);
    drop(hog);
    drop(held);
    d.assert_healthy(baseline, "after the silent stream jobs were dropped");
}
