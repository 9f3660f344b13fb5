//! The client stub against a scripted daemon on a real `UnixStream::pair()`.
//!
//! The scripted peer reads frames with recvmsg(2), so it sees the descriptors
//! exactly as the real daemon would, and writes events as the daemon would.
//! Synchronisation is by channels and joins only; timeouts are there so a
//! broken stub fails a test instead of hanging it.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crossbeam_channel::RecvTimeoutError;
use ringxfer_ipc::fdpass::send_with_fds;
use ringxfer_ipc::{
    codec, default_socket_path, Client, ClientError, Completion, Event, FailureKind, JobError,
    JobHandle, Limits, Priority, ProtocolErrorKind, Request, StatsReport, Strategy, SubmitRequest,
    TransferOptions, FRAME_HEADER_LEN, PROTOCOL_VERSION,
};

/// Long enough never to fire on a working stub, short enough to fail fast.
const GUARD: Duration = Duration::from_secs(10);

const LIMITS: Limits = Limits {
    max_frame: 64 * 1024,
    max_jobs_per_connection: 64,
    max_fds_per_message: 2,
    max_jobs_per_user: 64,
    max_queued_bytes_per_connection: 0,
    max_queued_bytes_per_user: 0,
};

/// One recvmsg(2): up to `buf.len()` bytes and any descriptors that came with them.
fn recv_some(sock: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
    // Room for 16 descriptors, far more than any frame carries, so a
    // truncation (asserted below) would be a real finding.
    let mut control = [0u64; 16];
    loop {
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: msghdr is plain data; all-zero bytes are a valid value and
        // also fill any private padding fields.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&control) as _;
        // SAFETY: msg points at iov (describing `buf`, writable for its
        // length) and at `control` (writable, aligned for cmsghdr, of the
        // stated length); all outlive the call. `sock` is borrowed, so open.
        let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        assert_eq!(
            msg.msg_flags & libc::MSG_CTRUNC,
            0,
            "descriptors were truncated"
        );
        let mut fds = Vec::new();
        // SAFETY: the kernel filled msg_control and set msg_controllen to
        // what it wrote; CMSG_FIRSTHDR only reads those two fields.
        let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(&msg) };
        while !cmsg.is_null() {
            // SAFETY: a non-null pointer from CMSG_FIRSTHDR/CMSG_NXTHDR points
            // at a whole cmsghdr inside `control`, which is still alive.
            let (level, kind, len) = unsafe {
                (
                    (*cmsg).cmsg_level,
                    (*cmsg).cmsg_type,
                    (*cmsg).cmsg_len as usize,
                )
            };
            if level == libc::SOL_SOCKET && kind == libc::SCM_RIGHTS {
                // SAFETY: CMSG_LEN is arithmetic on its argument only.
                let header = unsafe { libc::CMSG_LEN(0) } as usize;
                let count = (len - header) / std::mem::size_of::<libc::c_int>();
                // SAFETY: cmsg is valid as above; CMSG_DATA points just past
                // its header, inside the same message.
                let data = unsafe { libc::CMSG_DATA(cmsg) }.cast::<libc::c_int>();
                for i in 0..count {
                    // SAFETY: i < count keeps the read inside cmsg_len bytes,
                    // which the kernel kept inside `control`; the data need not
                    // be aligned for c_int, hence read_unaligned.
                    let raw = unsafe { data.add(i).read_unaligned() };
                    // SAFETY: the kernel installed this descriptor in our table
                    // for this message; nothing else owns it.
                    fds.push(unsafe { OwnedFd::from_raw_fd(raw) });
                }
            }
            // SAFETY: msg and cmsg are valid as above; CMSG_NXTHDR returns
            // null once the next header would pass msg_controllen.
            cmsg = unsafe { libc::CMSG_NXTHDR(&msg, cmsg) };
        }
        // n is non-negative here.
        return Ok((n as usize, fds));
    }
}

/// The daemon's end of the connection, as a test script drives it.
struct Peer {
    sock: UnixStream,
}

impl Peer {
    /// Fills `buf` completely, collecting descriptors; false on end of file
    /// before the first byte.
    fn fill(&mut self, buf: &mut [u8], fds: &mut Vec<OwnedFd>) -> bool {
        let mut got = 0;
        while got < buf.len() {
            let (n, mut more) = match recv_some(self.sock.as_fd(), &mut buf[got..]) {
                Ok(r) => r,
                // A client that closes with our events unread resets the stream.
                Err(e) if e.raw_os_error() == Some(libc::ECONNRESET) => (0, Vec::new()),
                Err(e) => panic!("peer recvmsg: {e}"),
            };
            if n == 0 {
                assert_eq!(got, 0, "connection ended inside a frame");
                return false;
            }
            fds.append(&mut more);
            got += n;
        }
        true
    }

    /// The next request and every descriptor that came with its bytes, or
    /// `None` once the client has gone.
    fn recv(&mut self) -> Option<(Request, Vec<OwnedFd>)> {
        let mut fds = Vec::new();
        let mut header = [0u8; FRAME_HEADER_LEN];
        if !self.fill(&mut header, &mut fds) {
            return None;
        }
        let mut payload = vec![0u8; codec::frame_len(header) as usize];
        assert!(
            self.fill(&mut payload, &mut fds),
            "connection ended inside a frame"
        );
        let request = codec::decode_payload(&payload).expect("peer decodes the request");
        Some((request, fds))
    }

    /// The next request, which must be a Submit with exactly its two descriptors.
    fn recv_submit(&mut self) -> (SubmitRequest, OwnedFd, OwnedFd) {
        let (request, fds) = self.recv().expect("a Submit, not end of file");
        let Request::Submit(submit) = request else {
            panic!("expected Submit, got {request:?}");
        };
        let [source, dest]: [OwnedFd; 2] = fds.try_into().unwrap_or_else(|fds: Vec<OwnedFd>| {
            panic!("Submit came with {} descriptors", fds.len())
        });
        (submit, source, dest)
    }

    fn send(&mut self, event: &Event) {
        let mut buf = Vec::new();
        codec::encode_frame(event, &mut buf, u32::MAX).expect("peer encodes the event");
        self.sock.write_all(&buf).expect("peer writes the event");
    }

    fn handshake(&mut self) {
        let (hello, fds) = self.recv().expect("Hello");
        assert_eq!(
            hello,
            Request::Hello {
                version: PROTOCOL_VERSION
            }
        );
        assert!(fds.is_empty());
        self.send(&Event::Welcome {
            version: PROTOCOL_VERSION,
            limits: LIMITS,
        });
    }
}

/// A client talking to `script`, run after a normal handshake on its own thread.
fn scripted<T: Send + 'static>(
    script: impl FnOnce(&mut Peer) -> T + Send + 'static,
) -> (Client, JoinHandle<T>) {
    let (ours, theirs) = UnixStream::pair().expect("socketpair");
    let peer = thread::spawn(move || {
        let mut peer = Peer { sock: theirs };
        peer.handshake();
        script(&mut peer)
    });
    let client = Client::from_stream(ours).expect("handshake");
    (client, peer)
}

/// The handshake answered with `answer` instead of a proper Welcome.
fn handshake_answered_with(answer: Option<Event>) -> ClientError {
    let (ours, theirs) = UnixStream::pair().expect("socketpair");
    let peer = thread::spawn(move || {
        let mut peer = Peer { sock: theirs };
        let (hello, _) = peer.recv().expect("Hello");
        assert_eq!(
            hello,
            Request::Hello {
                version: PROTOCOL_VERSION
            }
        );
        if let Some(answer) = answer {
            peer.send(&answer);
        }
    });
    let err = Client::from_stream(ours).expect_err("handshake must fail");
    peer.join().expect("peer");
    err
}

fn wait(job: &JobHandle) -> Result<Completion, JobError> {
    job.wait_timeout(GUARD).expect("job resolves")
}

fn next_event(events: &crossbeam_channel::Receiver<Event>) -> Event {
    events.recv_timeout(GUARD).expect("an event")
}

fn completed(req: u64, job: u64, bytes: u64) -> Event {
    Event::Completed {
        req,
        job,
        bytes,
        strategy: Strategy::Splice,
        elapsed_us: 1500,
        note: None,
        synced: false,
        checksums: None,
    }
}

/// Moves every byte from `source` to `dest` as the daemon would.
fn pump(source: OwnedFd, dest: OwnedFd) -> u64 {
    io::copy(&mut File::from(source), &mut File::from(dest)).expect("peer copies")
}

/// A peer that performs every Submit and reports it Completed with job = req + 100.
fn copying_peer(peer: &mut Peer) -> Vec<SubmitRequest> {
    let mut seen = Vec::new();
    while let Some((request, fds)) = peer.recv() {
        let Request::Submit(submit) = request else {
            panic!("expected Submit, got {request:?}");
        };
        let [source, dest]: [OwnedFd; 2] = fds.try_into().expect("two descriptors");
        let bytes = pump(source, dest);
        peer.send(&completed(submit.req, submit.req + 100, bytes));
        seen.push(submit);
    }
    seen
}

fn umask() -> u32 {
    let status = fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix("Umask:"))
        .expect("Umask line");
    u32::from_str_radix(line.trim(), 8).expect("octal umask")
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).expect("stat").permissions().mode() & 0o7777
}

#[test]
fn client_and_handle_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Client>();
    check::<JobHandle>();
}

#[test]
fn handshake_delivers_limits() {
    let (client, peer) = scripted(|_| ());
    assert_eq!(client.limits(), LIMITS);
    drop(client);
    peer.join().expect("peer");
}

#[test]
fn connect_by_path_and_unreachable_paths() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("ringxferd.sock");
    let listener = UnixListener::bind(&sock).expect("bind");
    let peer = thread::spawn(move || {
        let (stream, _) = listener.accept().expect("accept");
        let mut peer = Peer { sock: stream };
        peer.handshake();
        assert!(peer.recv().is_none(), "nothing after the handshake");
    });
    let client = Client::connect(&sock).expect("connect");
    assert_eq!(client.limits(), LIMITS);
    drop(client);
    peer.join().expect("peer");

    let missing = dir.path().join("missing.sock");
    let err = Client::connect(&missing).expect_err("no socket there");
    assert!(err.is_unreachable(), "{err:?}");
    let text = err.to_string();
    assert!(text.contains(&*missing.to_string_lossy()), "{text}");
    assert!(text.contains("no socket exists there"), "{text}");

    // A path that is no socket at all refuses the connection.
    let plain = dir.path().join("plain");
    File::create(&plain).expect("create");
    let err = Client::connect(&plain).expect_err("not a socket");
    assert!(err.is_unreachable(), "{err:?}");
    assert!(matches!(&err, ClientError::Connect { source, .. }
        if source.raw_os_error() == Some(libc::ECONNREFUSED)));
}

#[test]
fn handshake_failures() {
    let err = handshake_answered_with(Some(Event::Welcome {
        version: PROTOCOL_VERSION + 1,
        limits: LIMITS,
    }));
    assert!(
        matches!(&err, ClientError::Handshake(m) if m.contains(&(PROTOCOL_VERSION + 1).to_string())),
        "{err:?}"
    );

    let err = handshake_answered_with(Some(Event::ProtocolError {
        kind: ProtocolErrorKind::BadVersion,
        message: "version 1 is not spoken here".into(),
    }));
    assert!(
        matches!(&err, ClientError::Handshake(m) if m.contains("not spoken here")),
        "{err:?}"
    );

    let err = handshake_answered_with(Some(Event::ProtocolError {
        kind: ProtocolErrorKind::ShuttingDown,
        message: "bye".into(),
    }));
    assert!(
        matches!(&err, ClientError::Protocol { kind: ProtocolErrorKind::ShuttingDown, message } if message == "bye"),
        "{err:?}"
    );

    let err = handshake_answered_with(Some(Event::Stats(StatsReport::default())));
    assert!(
        matches!(&err, ClientError::Handshake(m) if m.contains("Stats")),
        "{err:?}"
    );

    let err = handshake_answered_with(None);
    assert!(
        matches!(&err, ClientError::Handshake(m) if m.contains("closed the connection")),
        "{err:?}"
    );
}

#[test]
fn submit_passes_both_descriptors_and_completes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src_path = dir.path().join("src");
    let dst_path = dir.path().join("dst");
    fs::write(&src_path, b"hello").expect("write source");

    // The test says when it has looked at the progress, so that Completed
    // cannot overtake the check.
    let (go_on, go) = crossbeam_channel::bounded::<()>(0);
    let (client, peer) = scripted(move |peer| {
        let (submit, source, dest) = peer.recv_submit();
        let bytes = pump(source, dest);
        let (req, job) = (submit.req, 42);
        peer.send(&Event::Accepted { req, job });
        peer.send(&Event::Progress {
            req,
            job,
            bytes: 3,
            total: Some(bytes),
        });
        go.recv().expect("test says go on");
        peer.send(&completed(req, job, bytes));
        let (second, _, _) = peer.recv_submit();
        peer.send(&completed(second.req, 43, 0));
        (submit, second.req)
    });
    let events = client.events();
    let opts = TransferOptions {
        tag: "greeting".into(),
        offset: 0,
        length: Some(5),
        dest_offset: 0,
        strategy: Strategy::Splice,
        progress: true,
        ..TransferOptions::default()
    };
    let source = File::open(&src_path).expect("open source");
    let dest = File::create(&dst_path).expect("create dest");
    let job = client.submit(&source, &dest, &opts).expect("submit");
    assert_eq!(job.req(), 1);

    assert_eq!(next_event(&events), Event::Accepted { req: 1, job: 42 });
    assert_eq!(job.job_id(), Ok(42));
    assert!(matches!(
        next_event(&events),
        Event::Progress { bytes: 3, .. }
    ));
    assert_eq!((job.bytes_so_far(), job.total()), (3, Some(5)));
    assert!(!job.is_finished());
    go_on.send(()).expect("peer waits");
    assert_eq!(
        wait(&job),
        Ok(Completion {
            job: 42,
            bytes: 5,
            strategy: Strategy::Splice,
            elapsed: Duration::from_micros(1500),
            note: None,
            synced: false,
            checksums: None,
        })
    );
    assert!(job.is_finished());
    assert_eq!(job.bytes_so_far(), 5);
    assert_eq!(next_event(&events), completed(1, 42, 5));
    assert_eq!(fs::read(&dst_path).expect("read dest"), b"hello");

    let second = client.submit(&source, &dest, &opts).expect("second submit");
    assert_eq!(second.req(), 2);
    assert_eq!(wait(&second).map(|c| c.job), Ok(43));

    let (submit, second_req) = peer.join().expect("peer");
    assert_eq!(
        submit,
        SubmitRequest {
            req: 1,
            tag: "greeting".into(),
            offset: 0,
            length: Some(5),
            dest_offset: 0,
            strategy: Strategy::Splice,
            progress: true,
            priority: Priority::Normal,
            rate_limit: None,
            detach: false,
            fsync: false,
            verify: false,
            truncate: false,
            publish: None,
            reflink: Default::default(),
            rate_group: None,
            sparse: Default::default(),
        }
    );
    assert_eq!(second_req, 2);
}

#[test]
fn failures_and_refusals_resolve_with_their_kind() {
    let (client, peer) = scripted(|peer| {
        let (refused, _, _) = peer.recv_submit();
        peer.send(&Event::Failed {
            req: refused.req,
            job: None,
            kind: FailureKind::LimitExceeded,
            os_error: None,
            message: "64 jobs already running".into(),
            bytes: 0,
        });
        let (failed, _, _) = peer.recv_submit();
        peer.send(&Event::Accepted {
            req: failed.req,
            job: 9,
        });
        peer.send(&Event::Failed {
            req: failed.req,
            job: Some(9),
            kind: FailureKind::NoSpace,
            os_error: Some(libc::ENOSPC),
            message: "write to destination: No space left on device".into(),
            bytes: 4096,
        });
    });
    let null = File::open("/dev/null").expect("open /dev/null");
    let refused = client
        .submit(&null, &null, &TransferOptions::default())
        .expect("submit");
    let err = refused.job_id().expect_err("refused jobs have no id");
    assert_eq!(err.kind(), Some(FailureKind::LimitExceeded));
    assert!(matches!(&err, JobError::Failed { job: None, .. }));
    assert_eq!(wait(&refused), Err(err));

    let failed = client
        .submit(&null, &null, &TransferOptions::default())
        .expect("submit");
    assert_eq!(failed.job_id(), Ok(9));
    let err = wait(&failed).expect_err("job fails");
    assert_eq!(
        err,
        JobError::Failed {
            job: Some(9),
            kind: FailureKind::NoSpace,
            os_error: Some(libc::ENOSPC),
            message: "write to destination: No space left on device".into(),
            bytes: 4096,
        }
    );
    assert_eq!(
        err.to_string(),
        "no-space: write to destination: No space left on device"
    );
    assert_eq!(failed.bytes_so_far(), 4096);
    peer.join().expect("peer");
}

#[test]
fn callbacks_run_exactly_once_including_on_disconnect() {
    let (client, peer) = scripted(|peer| {
        let (first, _, _) = peer.recv_submit();
        let (_second, _, _) = peer.recv_submit();
        peer.send(&completed(first.req, 1, 77));
        // Then wait for the client to go, leaving the second job unanswered.
        assert!(peer.recv().is_none());
    });
    let (calls, results) = crossbeam_channel::unbounded();
    let null = File::open("/dev/null").expect("open /dev/null");
    for label in ["first", "second"] {
        let calls = calls.clone();
        client
            .submit_with_callback(&null, &null, &TransferOptions::default(), move |result| {
                calls.send((label, result)).expect("test still listening");
            })
            .expect("submit");
    }
    drop(calls);

    let (label, result) = results.recv_timeout(GUARD).expect("first callback");
    assert_eq!(label, "first");
    assert_eq!(result.map(|c| c.bytes), Ok(77));

    drop(client);
    let (label, result) = results.recv_timeout(GUARD).expect("second callback");
    assert_eq!(label, "second");
    assert!(
        matches!(&result, Err(JobError::Disconnected(why)) if why.contains("dropped")),
        "{result:?}"
    );
    // Every callback (and with it every sender) is gone: no second call can come.
    assert_eq!(
        results.recv_timeout(GUARD),
        Err(RecvTimeoutError::Disconnected)
    );
    peer.join().expect("peer");
}

#[test]
fn a_panicking_callback_does_not_stop_the_event_thread() {
    let (client, peer) = scripted(|peer| {
        let (first, _, _) = peer.recv_submit();
        peer.send(&completed(first.req, 1, 1));
        let (second, _, _) = peer.recv_submit();
        peer.send(&completed(second.req, 2, 2));
    });
    let null = File::open("/dev/null").expect("open /dev/null");
    let first = client
        .submit_with_callback(&null, &null, &TransferOptions::default(), |_| {
            panic!("callback panics on purpose")
        })
        .expect("submit");
    assert_eq!(wait(&first).map(|c| c.bytes), Ok(1));
    let second = client
        .submit(&null, &null, &TransferOptions::default())
        .expect("submit");
    assert_eq!(wait(&second).map(|c| c.bytes), Ok(2));
    peer.join().expect("peer");
}

#[test]
fn events_fan_out_to_every_live_subscriber() {
    let (client, peer) = scripted(|peer| {
        let (submit, _, _) = peer.recv_submit();
        peer.send(&Event::Accepted {
            req: submit.req,
            job: 5,
        });
        peer.send(&completed(submit.req, 5, 10));
        // An event for a request the client never made still reaches subscribers.
        peer.send(&Event::Accepted { req: 999, job: 6 });
    });
    let dropped = client.events();
    let first = client.events();
    drop(dropped);
    let second = client.events();
    let null = File::open("/dev/null").expect("open /dev/null");
    let job = client
        .submit(&null, &null, &TransferOptions::default())
        .expect("submit");
    for events in [&first, &second] {
        assert_eq!(next_event(events), Event::Accepted { req: 1, job: 5 });
        assert_eq!(next_event(events), completed(1, 5, 10));
        assert_eq!(next_event(events), Event::Accepted { req: 999, job: 6 });
    }
    assert_eq!(wait(&job).map(|c| c.job), Ok(5));
    peer.join().expect("peer");
    // The peer is gone, so the connection ends and the channels disconnect.
    assert_eq!(
        first.recv_timeout(GUARD),
        Err(RecvTimeoutError::Disconnected)
    );
}

#[test]
fn peer_closing_mid_job_disconnects_everything() {
    let (client, peer) = scripted(|peer| {
        let (submit, _, _) = peer.recv_submit();
        peer.send(&Event::Accepted {
            req: submit.req,
            job: 3,
        });
        // Returning drops the socket: the daemon is gone mid-job.
    });
    let events = client.events();
    let (calls, results) = crossbeam_channel::unbounded();
    let null = File::open("/dev/null").expect("open /dev/null");
    let job = client
        .submit_with_callback(&null, &null, &TransferOptions::default(), move |result| {
            calls.send(result).expect("test still listening");
        })
        .expect("submit");

    let err = wait(&job).expect_err("the daemon went away");
    assert!(
        matches!(&err, JobError::Disconnected(why) if why.contains("closed the connection")),
        "{err:?}"
    );
    assert_eq!(err.kind(), None);
    assert_eq!(job.job_id(), Ok(3));
    assert_eq!(results.recv_timeout(GUARD), Ok(Err(err)));
    assert_eq!(next_event(&events), Event::Accepted { req: 1, job: 3 });
    assert_eq!(
        events.recv_timeout(GUARD),
        Err(RecvTimeoutError::Disconnected)
    );

    assert!(matches!(
        client.submit(&null, &null, &TransferOptions::default()),
        Err(ClientError::Disconnected)
    ));
    assert!(matches!(client.stats(), Err(ClientError::Disconnected)));
    assert!(matches!(client.cancel(3), Err(ClientError::Disconnected)));
    assert_eq!(
        client.events().recv_timeout(GUARD),
        Err(RecvTimeoutError::Disconnected)
    );
    peer.join().expect("peer");
}

#[test]
fn stats_round_trips_in_order_and_cancel_is_sent() {
    let report = |n: u64| StatsReport {
        uptime_ms: n,
        jobs_completed: n * 10,
        ..StatsReport::default()
    };
    let (client, peer) = scripted(move |peer| {
        let mut n = 0;
        while let Some((request, fds)) = peer.recv() {
            assert!(fds.is_empty(), "{request:?} carries no descriptors");
            match request {
                Request::Stats => {
                    n += 1;
                    peer.send(&Event::Stats(report(n)));
                }
                Request::Cancel { req, job } => {
                    peer.send(&Event::Cancelling { req, job });
                    return (n, job);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        panic!("client left before Cancel");
    });
    let events = client.events();
    assert_eq!(client.stats().expect("stats"), report(1));
    assert_eq!(client.stats().expect("stats"), report(2));
    assert_eq!(next_event(&events), Event::Stats(report(1)));

    // Concurrent callers each get one reply, and the replies are all distinct.
    let mut got: Vec<u64> = thread::scope(|s| {
        let callers: Vec<_> = (0..4).map(|_| s.spawn(|| client.stats())).collect();
        callers
            .into_iter()
            .map(|c| c.join().expect("caller").expect("stats").uptime_ms)
            .collect()
    });
    got.sort_unstable();
    assert_eq!(got, [3, 4, 5, 6]);

    client.cancel(77).expect("cancel");
    assert_eq!(peer.join().expect("peer"), (6, 77));
}

#[test]
fn protocol_error_frame_ends_the_connection() {
    let (client, peer) = scripted(|peer| {
        peer.recv_submit();
        peer.send(&Event::ProtocolError {
            kind: ProtocolErrorKind::ExtraDescriptors,
            message: "3 descriptors for one frame".into(),
        });
        assert!(peer.recv().is_none(), "the client hangs up");
    });
    let events = client.events();
    let null = File::open("/dev/null").expect("open /dev/null");
    let job = client
        .submit(&null, &null, &TransferOptions::default())
        .expect("submit");
    let err = wait(&job).expect_err("connection closed");
    assert!(
        matches!(&err, JobError::Disconnected(why) if why.contains("ExtraDescriptors") && why.contains("3 descriptors")),
        "{err:?}"
    );
    assert!(matches!(
        next_event(&events),
        Event::ProtocolError {
            kind: ProtocolErrorKind::ExtraDescriptors,
            ..
        }
    ));
    peer.join().expect("peer");
}

#[test]
fn oversized_and_garbage_frames_end_the_connection() {
    let cases: [(&[u8], &str); 2] = [
        (&(32u32 << 20).to_le_bytes(), "over the client's limit"),
        (&[3, 0, 0, 0, 0xff, 0xff, 0xff], "undecodable"),
    ];
    for (bytes, expected) in cases {
        let bytes = bytes.to_vec();
        let (client, peer) = scripted(move |peer| {
            peer.recv_submit();
            peer.sock.write_all(&bytes).expect("peer writes");
            assert!(peer.recv().is_none(), "the client hangs up");
        });
        let null = File::open("/dev/null").expect("open /dev/null");
        let job = client
            .submit(&null, &null, &TransferOptions::default())
            .expect("submit");
        let err = wait(&job).expect_err("connection closed");
        assert!(
            matches!(&err, JobError::Disconnected(why) if why.contains(expected)),
            "{err:?}"
        );
        peer.join().expect("peer");
    }
}

#[test]
fn oversized_tag_is_refused_locally() {
    let (client, peer) = scripted(|peer| peer.recv().is_none());
    let null = File::open("/dev/null").expect("open /dev/null");
    let opts = TransferOptions {
        tag: "x".repeat(LIMITS.max_frame as usize),
        ..TransferOptions::default()
    };
    assert!(matches!(
        client.submit(&null, &null, &opts),
        Err(ClientError::Codec(_))
    ));
    drop(client);
    assert!(peer.join().expect("peer"), "nothing was sent");
}

#[test]
fn copy_file_opens_like_cp() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src");
    let fresh = dir.path().join("fresh");
    let existing = dir.path().join("existing");
    fs::write(&src, b"0123456789").expect("write source");
    fs::set_permissions(&src, fs::Permissions::from_mode(0o600)).expect("chmod");
    fs::write(&existing, b"a much longer previous content").expect("write existing");

    let (client, peer) = scripted(copying_peer);
    let opts = TransferOptions::default();
    let job = client
        .copy_file(&src, &fresh, &opts)
        .expect("copy to a new file");
    assert_eq!(wait(&job).map(|c| c.bytes), Ok(10));
    assert_eq!(fs::read(&fresh).expect("read"), b"0123456789");
    assert_eq!(mode(&fresh), 0o600 & !umask());

    let job = client
        .copy_file(&src, &existing, &opts)
        .expect("copy over a file");
    assert_eq!(wait(&job).map(|c| c.bytes), Ok(10));
    assert_eq!(fs::read(&existing).expect("read"), b"0123456789");

    let err = client.copy_file(&src, &src, &opts).expect_err("same file");
    assert!(
        matches!(&err, ClientError::Open { path, .. } if path == &src),
        "{err:?}"
    );
    assert_eq!(
        fs::read(&src).expect("read"),
        b"0123456789",
        "source intact"
    );

    let missing = dir.path().join("missing");
    let err = client
        .copy_file(&missing, &fresh, &opts)
        .expect_err("no source");
    assert!(
        matches!(&err, ClientError::Open { path, source } if path == &missing && source.kind() == io::ErrorKind::NotFound),
        "{err:?}"
    );
    assert!(err.to_string().contains(&*missing.to_string_lossy()));

    drop(client);
    assert_eq!(peer.join().expect("peer").len(), 2);
}

#[test]
fn send_file_and_recv_to_file_use_the_callers_socket() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src");
    let dst = dir.path().join("dst");
    fs::write(&src, b"over the wire").expect("write source");
    let (client, peer) = scripted(copying_peer);

    let (outgoing, mut far_end) = UnixStream::pair().expect("socketpair");
    let job = client
        .send_file(&src, &outgoing, &TransferOptions::default())
        .expect("send_file");
    assert_eq!(wait(&job).map(|c| c.bytes), Ok(13));
    drop(outgoing);
    let mut received = Vec::new();
    far_end.read_to_end(&mut received).expect("read socket");
    assert_eq!(received, b"over the wire");

    let (incoming, mut sender) = UnixStream::pair().expect("socketpair");
    sender.write_all(b"coming in").expect("write socket");
    drop(sender);
    let job = client
        .recv_to_file(&incoming, &dst, &TransferOptions::default())
        .expect("recv_to_file");
    assert_eq!(wait(&job).map(|c| c.bytes), Ok(9));
    assert_eq!(fs::read(&dst).expect("read"), b"coming in");
    assert_eq!(mode(&dst), 0o644 & !umask());

    drop(client);
    assert_eq!(peer.join().expect("peer").len(), 2);
}

#[test]
fn send_with_fds_survives_short_writes_and_nonblocking_sockets() {
    // Larger than a socket buffer, so several sendmsg calls are needed.
    let bytes: Vec<u8> = (0..4u32 << 20).map(|i| i as u8).collect();
    for nonblocking in [false, true] {
        let (ours, theirs) = UnixStream::pair().expect("socketpair");
        ours.set_nonblocking(nonblocking).expect("nonblocking");
        let expected_len = bytes.len();
        let reader = thread::spawn(move || {
            let mut got = Vec::with_capacity(expected_len);
            let mut fds_at = Vec::new();
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let (n, fds) = recv_some(theirs.as_fd(), &mut buf).expect("recvmsg");
                if n == 0 {
                    break;
                }
                if !fds.is_empty() {
                    fds_at.push((got.len(), fds.len()));
                }
                got.extend_from_slice(&buf[..n]);
            }
            (got, fds_at)
        });
        let a = File::open("/dev/null").expect("open");
        let b = File::open("/dev/zero").expect("open");
        send_with_fds(ours.as_fd(), &bytes, &[a.as_fd(), b.as_fd()]).expect("send");
        drop(ours);
        let (got, fds_at) = reader.join().expect("reader");
        assert!(got == bytes, "bytes differ (nonblocking: {nonblocking})");
        assert_eq!(fds_at, [(0, 2)], "both descriptors with the first byte");
    }

    let (ours, _theirs) = UnixStream::pair().expect("socketpair");
    let null = File::open("/dev/null").expect("open");
    let err = send_with_fds(ours.as_fd(), b"", &[null.as_fd()]).expect_err("no byte to ride on");
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    send_with_fds(ours.as_fd(), b"", &[]).expect("nothing to do");
}

/// Every environment case in one test, because tests of one binary share the
/// environment and run in parallel.
#[test]
fn default_socket_path_precedence() {
    let saved: Vec<(&str, Option<std::ffi::OsString>)> = ["RINGXFER_SOCKET", "XDG_RUNTIME_DIR"]
        .into_iter()
        .map(|k| (k, std::env::var_os(k)))
        .collect();

    std::env::set_var("RINGXFER_SOCKET", "/tmp/custom.sock");
    std::env::set_var("XDG_RUNTIME_DIR", "/run/user/4321");
    assert_eq!(default_socket_path(), PathBuf::from("/tmp/custom.sock"));

    std::env::remove_var("RINGXFER_SOCKET");
    assert_eq!(
        default_socket_path(),
        PathBuf::from("/run/user/4321/ringxfer/ringxferd.sock")
    );

    std::env::set_var("RINGXFER_SOCKET", "");
    assert_eq!(
        default_socket_path(),
        PathBuf::from("/run/user/4321/ringxfer/ringxferd.sock"),
        "an empty variable counts as unset"
    );

    std::env::remove_var("RINGXFER_SOCKET");
    std::env::remove_var("XDG_RUNTIME_DIR");
    assert_eq!(
        default_socket_path(),
        PathBuf::from("/run/ringxfer/ringxferd.sock")
    );

    for (key, value) in saved {
        match value {
            Some(v) => std::env::set_var(key, v),
            None => std::env::remove_var(key),
        }
    }
}
