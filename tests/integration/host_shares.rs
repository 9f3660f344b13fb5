//! Another daemon's files take a share of this daemon's I/O as the user
//! their export names, as a local copy of that user would: each file
//! pushed here or pulled from here is a job of that user (listed by
//! `jobs`, cancelled by `cancel`), its writes or reads lent pool buffers
//! through the same fair queues, and held by the daemon's `rate_limit`.

use std::io::Write;
use std::net::Shutdown;
use std::os::fd::AsFd;
use std::thread;
use std::time::{Duration, Instant};

use ringxfer_ipc::proto::peer::PeerMessage;
use ringxfer_ipc::{FailureKind, JobInfo, Strategy, TransferOptions};

use crate::host_to_host::{failed_kind, message_of, parts_in, receiver_with, Sender};
use crate::support::*;

/// The export's user: not the test's, so that its share is another user's.
const OTHER: u32 = 65534;
const ENDLESS: u64 = 1 << 50;

/// An export directory `OTHER` may write into.
fn others_export() -> tempfile::TempDir {
    require_root("root to export a directory written as another user");
    let export = world_tmpdir();
    std::os::unix::fs::chown(export.path(), Some(OTHER), Some(OTHER)).expect("chown the export");
    export
}

/// A daemon with `settings` taking files into an export of `OTHER`, and a
/// client of it.
fn others_receiver(
    settings: &str,
) -> (
    tempfile::TempDir,
    Daemon,
    std::net::SocketAddr,
    std::sync::Arc<ringxfer_ipc::Client>,
) {
    let export = others_export();
    let (d, address) = receiver_with(export.path(), OTHER, settings);
    let ctl = shared_client(&d);
    (export, d, address, ctl)
}

/// The job of the file another daemon moves here, once listed.
fn peer_job(ctl: &std::sync::Arc<ringxfer_ipc::Client>, tag: &str) -> Option<JobInfo> {
    jobs_of(ctl)
        .into_iter()
        .find(|j| j.uid == OTHER && j.tag.starts_with(tag))
}

/// Pushes `size` bytes to `path` as fast as the receiver reads them, on a
/// thread, until the receiver or `stop` ends the connection.
fn push_in_background(sender: Sender, path: &str, size: u64) -> std::net::TcpStream {
    let mut sender = sender;
    let ready = sender.put(1, path, size, 0o644, 1_700_000_000);
    assert!(
        matches!(ready, PeerMessage::Ready { offset: 0, .. }),
        "{ready:?}"
    );
    let stop = sender.stream.try_clone().expect("clone the stream");
    thread::spawn(move || {
        let chunk = pattern(3, 1 << 20);
        let mut frame = Vec::new();
        let mut at = 0u64;
        while at < size {
            frame.clear();
            let data = PeerMessage::Data {
                xfer: 1,
                offset: at,
                len: chunk.len() as u32,
            };
            ringxfer_ipc::proto::peer::encode(&data, &mut frame, 1 << 20).expect("encode");
            let sent = sender
                .stream
                .write_all(&frame)
                .and_then(|()| sender.stream.write_all(&chunk));
            if sent.is_err() {
                return;
            }
            at += chunk.len() as u64;
        }
    });
    stop
}

#[test]
#[ignore = "needs root: .ci/run runs it (--include-ignored)"]
fn a_file_another_daemon_pushes_takes_its_export_users_share() {
    // Both users together may move 64 MiB/s: nothing else is scarce, so
    // how the daemon shares that is the whole question.
    let (export, d, address, ctl) = others_receiver("rate_limit = \"64MiB/s\"");
    let c = d.client();
    let o = TransferOptions {
        strategy: Strategy::Splice,
        ..opts()
    };
    let src = zero_source(ENDLESS);
    let mine = c
        .submit(src.as_fd(), dev_null().as_fd(), &o)
        .expect("submit root's job");
    let mine = id_of(&mine);
    let stop = push_in_background(Sender::connect(address), "inbox/big.bin", 4 << 30);
    // The push's bytes as its part file shows them, the copy's as listed.
    let part = || parts_in(export.path()).pop();
    let written = || {
        part()
            .and_then(|p| std::fs::metadata(p).ok())
            .map_or(0, |m| m.len())
    };
    let started = poll_until(Duration::from_secs(10), || written() > 0);
    assert!(started, "nothing of the push landed:\n{}", d.log());
    thread::sleep(Duration::from_millis(500));
    let bytes = || {
        let copied = find_job(&jobs_of(&ctl), mine).map_or(0, |j| j.bytes);
        [copied as f64, written() as f64]
    };
    let mut windows = Vec::new();
    let mut before = (bytes(), Instant::now());
    for _ in 0..3 {
        thread::sleep(Duration::from_secs(1));
        let after = (bytes(), Instant::now());
        let secs = after.1.duration_since(before.1).as_secs_f64();
        let rates = [
            (after.0[0] - before.0[0]) / secs / MIB as f64,
            (after.0[1] - before.0[1]) / secs / MIB as f64,
        ];
        windows.push((jain(&rates), rates));
        before = after;
    }
    let theirs = peer_job(&ctl, "from ");
    let _ = cancel_job(&ctl, mine);
    let _ = stop.shutdown(Shutdown::Both);
    eprintln!("per 1-s window, MiB/s of root's copy and of the push as uid {OTHER}, and Jain's index: {windows:?}");
    for (j, rates) in &windows {
        assert!(
            *j >= 0.9,
            "the push and the local copy do not share the daemon: Jain's index {j:.3}, MiB/s {rates:?}"
        );
        let sum = rates[0] + rates[1];
        assert!(
            sum < 64.0 * 1.25,
            "together past the daemon's rate_limit of 64 MiB/s: {rates:?}"
        );
    }
    let theirs = theirs.unwrap_or_else(|| {
        panic!(
            "the file pushed is not listed as a job of uid {OTHER}:\n{}",
            d.log()
        )
    });
    assert_eq!(theirs.strategy, Strategy::Peer);
    assert!(
        theirs.tag.ends_with("inbox/big.bin"),
        "the job names the file: {}",
        theirs.tag
    );
}

#[test]
#[ignore = "needs root: .ci/run runs it (--include-ignored)"]
fn cancelling_the_job_of_a_pushed_file_fails_it_for_the_sender_and_keeps_nothing() {
    let (export, d, address, ctl) = others_receiver("rate_limit = \"2MiB/s\"");
    let stop = push_in_background(Sender::connect(address), "inbox/slow.bin", 64 << 20);
    let mut job = None;
    let listed = poll_until(Duration::from_secs(10), || {
        job = peer_job(&ctl, "from ").filter(|j| j.bytes > 0);
        job.is_some()
    });
    assert!(listed, "no job for the pushed file: {:?}", jobs_of(&ctl));
    let job = job.expect("listed");
    cancel_job(&ctl, job.job).expect("cancel the pushed file's job");
    // The sender hears it while it is still sending (its writes may block
    // once the receiver stops reading, so it reads on this thread).
    let mut reader = Sender::from_stream(stop.try_clone().expect("clone"));
    let answer = reader.recv().expect("an answer");
    assert_eq!(failed_kind(&answer), FailureKind::Cancelled, "{answer:?}");
    assert!(
        message_of(&answer).contains("cancelled"),
        "{}",
        message_of(&answer)
    );
    let _ = stop.shutdown(Shutdown::Both);
    let gone = poll_until(Duration::from_secs(10), || {
        parts_in(export.path()).is_empty()
    });
    assert!(gone, "the part stays:\n{}", d.log());
    assert!(
        !export.path().join("slow.bin").exists(),
        "a cancelled file took its name"
    );
}

#[test]
#[ignore = "needs root: .ci/run runs it (--include-ignored)"]
fn a_file_another_daemon_pulls_is_held_by_the_daemons_rate_limit() {
    let export = others_export();
    let data = pattern(9, 12 << 20);
    let file = export.path().join("pulled.bin");
    std::fs::write(&file, &data).expect("write");
    std::os::unix::fs::chown(&file, Some(OTHER), Some(OTHER)).expect("chown");
    let (d, address) = receiver_with(export.path(), OTHER, "rate_limit = \"8MiB/s\"");
    let ctl = shared_client(&d);
    let mut puller = Sender::connect(address);
    let watch = {
        let ctl = ctl.clone();
        thread::spawn(move || {
            let mut seen = None;
            poll_until(Duration::from_secs(10), || {
                seen = peer_job(&ctl, "to ");
                seen.is_some()
            });
            seen
        })
    };
    let t0 = Instant::now();
    let (_, bytes, _) = puller.pull(1, "inbox/pulled.bin").expect("the pull");
    let took = t0.elapsed();
    assert!(bytes == data, "the bytes pulled differ");
    // 12 MiB at 8 MiB/s, less the bucket's tenth of a second.
    assert!(
        took >= Duration::from_millis(1200),
        "12 MiB served in {took:?}, past the daemon's rate_limit of 8 MiB/s"
    );
    let seen = watch.join().expect("the watcher");
    let seen =
        seen.unwrap_or_else(|| panic!("the file served is not listed as a job:\n{}", d.log()));
    assert_eq!(seen.strategy, Strategy::Peer);
    assert!(seen.tag.ends_with("inbox/pulled.bin"), "{}", seen.tag);
}

#[test]
fn without_a_buffer_pool_files_come_and_go_as_before() {
    // `buffers = 0` leaves no permit to lend: the connections' own
    // buffers carry the files, unheld.
    let export = tmpdir();
    // SAFETY: geteuid has no arguments and cannot fail.
    let me = unsafe { libc::geteuid() };
    let (d, address) = receiver_with(export.path(), me, "buffers = 0");
    let data = pattern(11, (5 << 20) + 123);
    let mut sender = Sender::connect(address);
    let answer = sender.push(1, "inbox/nopool.bin", &data, 0o640);
    assert!(
        matches!(answer, PeerMessage::Done { .. }),
        "{answer:?}\n{}",
        d.log()
    );
    assert!(std::fs::read(export.path().join("nopool.bin")).expect("read") == data);
    let (_, pulled, _) = sender.pull(2, "inbox/nopool.bin").expect("the pull");
    assert!(pulled == data, "the bytes pulled differ");
}

#[test]
fn a_draining_daemon_finishes_the_file_it_receives_and_refuses_new_ones() {
    let export = tmpdir();
    // SAFETY: geteuid has no arguments and cannot fail.
    let me = unsafe { libc::geteuid() };
    let (d, address) = receiver_with(export.path(), me, "rate_limit = \"8MiB/s\"");
    let ctl = shared_client(&d);
    let data = pattern(13, 12 << 20);
    let mut first = Sender::connect(address);
    let mut second = Sender::connect(address);
    let pushing = {
        let data = data.clone();
        thread::spawn(move || first.push(1, "inbox/slow.bin", &data, 0o644))
    };
    let moving = poll_until(Duration::from_secs(10), || {
        jobs_of(&ctl)
            .iter()
            .any(|j| j.tag.starts_with("from ") && j.bytes > 0)
    });
    assert!(moving, "the push is not listed as moving:\n{}", d.log());
    d.signal(libc::SIGTERM);
    let draining = poll_until(Duration::from_secs(5), || {
        d.log().contains("waiting for the running ones")
    });
    assert!(draining, "the daemon did not start draining:\n{}", d.log());
    let answer = second.put(1, "inbox/late.bin", 10, 0o644, 1_700_000_000);
    assert_eq!(
        failed_kind(&answer),
        FailureKind::ShuttingDown,
        "{answer:?}"
    );
    let done = pushing.join().expect("the pushing thread");
    assert!(
        matches!(done, PeerMessage::Done { .. }),
        "the file under way did not finish: {done:?}\n{}",
        d.log()
    );
    assert!(std::fs::read(export.path().join("slow.bin")).expect("read") == data);
    assert!(!export.path().join("late.bin").exists());
}
