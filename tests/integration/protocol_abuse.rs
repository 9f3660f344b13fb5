//! Malformed input on raw Unix sockets. Each case must get a `ProtocolError`
//! of the right kind, then EOF; and the daemon must keep serving others and
//! give back every descriptor the bad connection brought.

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::net::Shutdown;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use ringxfer_ipc::{
    codec, fdpass::send_with_fds, Event, Limits, ProtocolErrorKind, Request, Strategy,
    SubmitRequest, DEFAULT_MAX_FRAME, FRAME_HEADER_LEN, PROTOCOL_VERSION,
};

use crate::support::*;

pub(crate) fn raw(d: &Daemon) -> UnixStream {
    let s = UnixStream::connect(&d.socket).expect("raw connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

pub(crate) fn frame(req: &Request) -> Vec<u8> {
    let mut buf = Vec::new();
    codec::encode_frame(req, &mut buf, DEFAULT_MAX_FRAME).expect("encode");
    buf
}

fn send(s: &UnixStream, bytes: &[u8], fds: &[BorrowedFd<'_>]) {
    if fds.is_empty() {
        (&*s).write_all(bytes).expect("write frame");
    } else {
        send_with_fds(s.as_fd(), bytes, fds).expect("sendmsg with fds");
    }
}

/// Reads one event; `None` at a clean EOF before any byte of a header.
pub(crate) fn read_event(s: &UnixStream) -> Option<Event> {
    let mut hdr = [0u8; FRAME_HEADER_LEN];
    let mut got = 0;
    while got < hdr.len() {
        match (&*s).read(&mut hdr[got..]) {
            Ok(0) if got == 0 => return None,
            Ok(0) => panic!("EOF inside an event header"),
            Ok(n) => got += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!("reading an event header: {e} (no reply within the timeout?)"),
        }
    }
    let len = codec::frame_len(hdr) as usize;
    assert!(len <= 16 << 20, "event frame claims {len} bytes");
    let mut payload = vec![0u8; len];
    (&*s)
        .read_exact(&mut payload)
        .unwrap_or_else(|e| panic!("reading a {len}-byte event payload: {e}"));
    Some(codec::decode_payload::<Event>(&payload).expect("daemon sent an undecodable event"))
}

pub(crate) fn hello(s: &UnixStream) -> Limits {
    send(
        s,
        &frame(&Request::Hello {
            version: PROTOCOL_VERSION,
        }),
        &[],
    );
    match read_event(s) {
        Some(Event::Welcome { version, limits }) => {
            assert_eq!(version, PROTOCOL_VERSION);
            limits
        }
        other => panic!("expected Welcome, got {other:?}"),
    }
}

pub(crate) fn submit_request(req: u64) -> SubmitRequest {
    SubmitRequest {
        req,
        tag: "abuse".into(),
        offset: 0,
        length: None,
        dest_offset: 0,
        strategy: Strategy::Auto,
        progress: false,
        priority: Default::default(),
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
}

fn batch_frame(jobs: u64) -> Vec<u8> {
    frame(&Request::SubmitBatch(
        (1..=jobs).map(submit_request).collect(),
    ))
}

fn submit_frame() -> Vec<u8> {
    frame(&Request::Submit(submit_request(1)))
}

/// Asserts the next event is a ProtocolError of one of `kinds`, then EOF.
fn expect_error(s: &UnixStream, kinds: &[ProtocolErrorKind], what: &str) {
    match read_event(s) {
        Some(Event::ProtocolError { kind, message }) => {
            assert!(
                kinds.contains(&kind),
                "{what}: ProtocolError kind {kind:?} (message {message:?}), expected {kinds:?}"
            );
            assert!(
                !message.trim().is_empty(),
                "{what}: empty ProtocolError message"
            );
        }
        None => panic!("{what}: connection closed without a ProtocolError event"),
        Some(other) => panic!("{what}: expected ProtocolError {kinds:?}, got {other:?}"),
    }
    let mut b = [0u8; 64];
    match (&*s).read(&mut b) {
        Ok(0) => {}
        Ok(n) => panic!("{what}: expected EOF after the ProtocolError, got {n} more bytes"),
        Err(e) => panic!("{what}: expected EOF after the ProtocolError, got {e}"),
    }
}

/// Two throwaway files to pass as descriptors.
struct Fds {
    _dir: tempfile::TempDir,
    files: Vec<File>,
}

fn fds(n: usize) -> Fds {
    let dir = tmpdir();
    let files = (0..n)
        .map(|i| {
            let (p, _) = make_file(dir.path(), &format!("f{i}"), 100, i as u64);
            if i % 2 == 0 {
                open_src(&p)
            } else {
                create_dst(&p)
            }
        })
        .collect();
    Fds { _dir: dir, files }
}

impl Fds {
    fn borrow(&self) -> Vec<BorrowedFd<'_>> {
        self.files.iter().map(|f| f.as_fd()).collect()
    }
}

/// Starts a daemon, runs `abuse` on a raw connection, expects one of `kinds`
/// and EOF, then checks the daemon still serves and gave back every fd.
fn case(what: &str, kinds: &[ProtocolErrorKind], abuse: impl FnOnce(&UnixStream, &Path)) {
    let d = Daemon::start();
    let baseline = d.baseline();
    {
        let s = raw(&d);
        abuse(&s, d.dir());
        expect_error(&s, kinds, what);
    }
    d.assert_healthy(baseline, what);
}

#[test]
fn garbage_first_frame_is_undecodable() {
    case(
        "garbage frame",
        &[ProtocolErrorKind::Undecodable],
        |s, _| {
            let payload = [0xffu8; 16];
            assert!(codec::decode_payload::<Request>(&payload).is_err());
            let mut b = (payload.len() as u32).to_le_bytes().to_vec();
            b.extend_from_slice(&payload);
            send(s, &b, &[]);
        },
    );
}

#[test]
fn trailing_bytes_after_a_request_are_undecodable() {
    case(
        "hello with trailing bytes",
        &[ProtocolErrorKind::Undecodable],
        |s, _| {
            let mut f = frame(&Request::Hello {
                version: PROTOCOL_VERSION,
            });
            f.push(0);
            let len = (f.len() - FRAME_HEADER_LEN) as u32;
            f[..FRAME_HEADER_LEN].copy_from_slice(&len.to_le_bytes());
            send(s, &f, &[]);
        },
    );
}

#[test]
fn frame_over_the_limit_after_hello() {
    case(
        "frame over the limit",
        &[ProtocolErrorKind::FrameTooLarge],
        |s, _| {
            let limits = hello(s);
            send(s, &(limits.max_frame + 1).to_le_bytes(), &[]);
        },
    );
}

#[test]
fn huge_length_prefix_as_first_frame() {
    case(
        "u32::MAX length prefix",
        &[ProtocolErrorKind::FrameTooLarge],
        |s, _| {
            send(s, &u32::MAX.to_le_bytes(), &[]);
        },
    );
}

#[test]
fn hello_with_wrong_version() {
    case(
        "Hello version+1",
        &[ProtocolErrorKind::BadVersion],
        |s, _| {
            send(
                s,
                &frame(&Request::Hello {
                    version: PROTOCOL_VERSION + 1,
                }),
                &[],
            );
        },
    );
}

#[test]
fn truncated_frame() {
    case(
        "truncated frame",
        &[ProtocolErrorKind::Truncated],
        |s, _| {
            let mut b = 100u32.to_le_bytes().to_vec();
            b.extend_from_slice(&[0u8; 10]);
            send(s, &b, &[]);
            s.shutdown(Shutdown::Write).unwrap();
        },
    );
}

#[test]
fn truncated_header_after_hello() {
    case(
        "truncated header",
        &[ProtocolErrorKind::Truncated],
        |s, _| {
            hello(s);
            send(s, &[7u8, 0], &[]);
            s.shutdown(Shutdown::Write).unwrap();
        },
    );
}

#[test]
fn submit_without_descriptors() {
    case(
        "Submit with 0 fds",
        &[ProtocolErrorKind::MissingDescriptors],
        |s, _| {
            hello(s);
            send(s, &submit_frame(), &[]);
        },
    );
}

#[test]
fn submit_with_one_descriptor() {
    let f = fds(1);
    case(
        "Submit with 1 fd",
        &[ProtocolErrorKind::MissingDescriptors],
        |s, _| {
            hello(s);
            send(s, &submit_frame(), &f.borrow());
        },
    );
}

#[test]
fn submit_with_three_descriptors() {
    let f = fds(3);
    let d = Daemon::start();
    let baseline = d.baseline();
    {
        let s = raw(&d);
        let limits = hello(&s);
        send(&s, &submit_frame(), &f.borrow());
        // Three descriptors for a frame that claims two is ExtraDescriptors;
        // if the daemon's per-message limit is below three, TooManyDescriptors
        // is the other correct answer (see Limits::max_fds_per_message).
        let kinds: &[ProtocolErrorKind] = if limits.max_fds_per_message >= 3 {
            &[ProtocolErrorKind::ExtraDescriptors]
        } else {
            &[
                ProtocolErrorKind::ExtraDescriptors,
                ProtocolErrorKind::TooManyDescriptors,
            ]
        };
        expect_error(&s, kinds, "Submit with 3 fds");
    }
    d.assert_healthy(baseline, "Submit with 3 fds");
}

#[test]
fn more_descriptors_than_the_limit() {
    let d = Daemon::start();
    let baseline = d.baseline();
    {
        let s = raw(&d);
        let limits = hello(&s);
        let n = limits.max_fds_per_message as usize + 1;
        if n > 250 {
            println!("skipped: max_fds_per_message {} is above SCM_MAX_FD", n - 1);
            return;
        }
        let f = fds(n);
        send(&s, &submit_frame(), &f.borrow());
        expect_error(
            &s,
            &[ProtocolErrorKind::TooManyDescriptors],
            "Submit with max_fds_per_message + 1 fds",
        );
    }
    d.assert_healthy(baseline, "too many fds");
}

#[test]
fn hello_carrying_a_descriptor() {
    let f = fds(1);
    case(
        "Hello with 1 fd",
        &[ProtocolErrorKind::ExtraDescriptors],
        |s, _| {
            send(
                s,
                &frame(&Request::Hello {
                    version: PROTOCOL_VERSION,
                }),
                &f.borrow(),
            );
        },
    );
}

#[test]
fn stats_carrying_descriptors() {
    let f = fds(2);
    case(
        "Stats with 2 fds",
        &[ProtocolErrorKind::ExtraDescriptors],
        |s, _| {
            hello(s);
            send(s, &frame(&Request::Stats), &f.borrow());
        },
    );
}

#[test]
fn submit_before_hello() {
    let f = fds(2);
    case(
        "Submit before Hello",
        &[ProtocolErrorKind::UnexpectedRequest],
        |s, _| {
            send(s, &submit_frame(), &f.borrow());
        },
    );
}

#[test]
fn second_hello() {
    case(
        "second Hello",
        &[ProtocolErrorKind::UnexpectedRequest],
        |s, _| {
            hello(s);
            send(
                s,
                &frame(&Request::Hello {
                    version: PROTOCOL_VERSION,
                }),
                &[],
            );
        },
    );
}

#[test]
fn raw_client_can_copy_and_get_stats() {
    // The positive path of the same raw framing: Hello, Submit with two fds,
    // Accepted then Completed, then Stats.
    let d = Daemon::start();
    let dir = tmpdir();
    let (src, data) = make_file(dir.path(), "src", 123_457, 77);
    let dst = dir.path().join("dst");
    let s = raw(&d);
    hello(&s);
    {
        let (a, b) = (open_src(&src), create_dst(&dst));
        send(&s, &submit_frame(), &[a.as_fd(), b.as_fd()]);
    }
    let job = match read_event(&s) {
        Some(Event::Accepted { req: 1, job }) => job,
        other => panic!("expected Accepted for req 1, got {other:?}"),
    };
    loop {
        match read_event(&s) {
            Some(Event::Progress { .. }) => continue,
            Some(Event::Completed {
                req,
                job: j,
                bytes,
                strategy,
                ..
            }) => {
                assert_eq!((req, j), (1, job));
                assert_eq!(bytes, data.len() as u64);
                assert_eq!(strategy, Strategy::CopyRange);
                break;
            }
            other => panic!("expected Completed, got {other:?}"),
        }
    }
    assert_file_eq(&dst, &data);
    send(&s, &frame(&Request::Stats), &[]);
    match read_event(&s) {
        Some(Event::Stats(st)) => {
            assert!(st.jobs_completed >= 1, "stats: {st:?}");
            assert!(st.connections >= 1, "stats: {st:?}");
            assert!(st.bytes_moved >= data.len() as u64, "stats: {st:?}");
        }
        other => panic!("expected Stats, got {other:?}"),
    }
}

#[test]
fn descriptors_beyond_what_the_arriving_frame_can_take_are_refused_at_once() {
    // Part of a frame's header, carrying five descriptors: a frame takes two
    // per job, or the three of one Submit that publishes, never five, so
    // the daemon must refuse now rather than hoard them while it waits for
    // the rest of the frame.
    let d = Daemon::start();
    let baseline = d.baseline();
    let s = raw(&d);
    hello(&s);
    let f = fds(5);
    let five: Vec<BorrowedFd<'_>> = f.files.iter().map(|f| f.as_fd()).collect();
    send(&s, &submit_frame()[..1], &five);
    expect_error(
        &s,
        &[ProtocolErrorKind::ExtraDescriptors],
        "1 byte of a frame with 5 fds",
    );
    drop((s, f));
    d.assert_healthy(baseline, "after descriptors sent ahead of their frame");
}

#[test]
fn a_half_closed_client_still_gets_its_jobs_results() {
    // shutdown(SHUT_WR) after submitting is how a client says "no more
    // requests"; its jobs must run on and report, like an HTTP client that
    // half-closes after its request.
    let d = Daemon::start();
    let dir = tmpdir();
    let (src, data) = make_file(dir.path(), "src", 3 << 20, 91);
    let dst = dir.path().join("dst");
    let s = raw(&d);
    hello(&s);
    {
        let (a, b) = (open_src(&src), create_dst(&dst));
        send(&s, &submit_frame(), &[a.as_fd(), b.as_fd()]);
    }
    s.shutdown(Shutdown::Write).expect("shutdown(Write)");
    let mut completed = None;
    while let Some(ev) = read_event(&s) {
        match ev {
            Event::Accepted { .. } | Event::Progress { .. } => {}
            Event::Completed { bytes, .. } => completed = Some(bytes),
            other => panic!("half-closed client: unexpected event {other:?}"),
        }
    }
    assert_eq!(
        completed,
        Some(data.len() as u64),
        "Completed after half-close"
    );
    assert_file_eq(&dst, &data);
}

#[test]
fn stop_does_not_wait_for_a_client_that_stopped_reading() {
    // A client floods Stats requests and never reads the answers, so the
    // daemon's send to it waits on a full socket. SIGTERM must still stop
    // the daemon promptly (stop() asserts exit 0 within 10 s).
    let d = Daemon::start();
    let s = raw(&d);
    hello(&s);
    let one = frame(&Request::Stats);
    let flood: Vec<u8> = one
        .iter()
        .copied()
        .cycle()
        .take(one.len() * 20_000)
        .collect();
    send(&s, &flood, &[]);
    // Let the daemon answer until the socket is full.
    std::thread::sleep(Duration::from_millis(300));
    d.stop();
    drop(s);
}

#[test]
fn a_batch_with_one_descriptor_pair_too_few() {
    let f = fds(4);
    case(
        "SubmitBatch of 3 jobs with 4 fds",
        &[ProtocolErrorKind::MissingDescriptors],
        |s, _| {
            hello(s);
            send(s, &batch_frame(3), &f.borrow());
        },
    );
}

#[test]
fn a_batch_with_a_descriptor_pair_too_many() {
    let f = fds(6);
    case(
        "SubmitBatch of 2 jobs with 6 fds",
        &[ProtocolErrorKind::ExtraDescriptors],
        |s, _| {
            hello(s);
            send(s, &batch_frame(2), &f.borrow());
        },
    );
}

#[test]
fn a_batch_bigger_than_one_message_can_carry() {
    let d = Daemon::start();
    let baseline = d.baseline();
    {
        let s = raw(&d);
        let limits = hello(&s);
        let jobs = u64::from(limits.max_fds_per_message) / 2 + 1;
        send(&s, &batch_frame(jobs), &[]);
        expect_error(
            &s,
            &[ProtocolErrorKind::TooManyDescriptors],
            "SubmitBatch over max_fds_per_message / 2 jobs",
        );
    }
    d.assert_healthy(baseline, "an oversized batch");
}

#[test]
fn raw_batch_copies_every_file() {
    let d = Daemon::start();
    let dir = tmpdir();
    let s = raw(&d);
    hello(&s);
    let made: Vec<_> = (0..3)
        .map(|i| {
            make_file(
                dir.path(),
                &format!("src{i}"),
                5000 + i * 999,
                360 + i as u64,
            )
        })
        .collect();
    {
        let ends: Vec<_> = made
            .iter()
            .enumerate()
            .flat_map(|(i, (src, _))| {
                [
                    open_src(src),
                    create_dst(&dir.path().join(format!("dst{i}"))),
                ]
            })
            .collect();
        let borrowed: Vec<BorrowedFd<'_>> = ends.iter().map(|f| f.as_fd()).collect();
        send(&s, &batch_frame(3), &borrowed);
    }
    // Without progress or detach, a batch's jobs are not acknowledged: the
    // first event of each is its Completed.
    let mut done = std::collections::BTreeMap::new();
    while done.len() < 3 {
        match read_event(&s) {
            Some(Event::Completed { req, bytes, .. }) => {
                done.insert(req, bytes);
            }
            other => panic!("expected only Completed for the batch, got {other:?}"),
        }
    }
    for (i, (_, data)) in made.iter().enumerate() {
        assert_eq!(done[&(i as u64 + 1)], data.len() as u64, "job {}", i + 1);
        assert_file_eq(&dir.path().join(format!("dst{i}")), data);
    }
}

#[test]
fn a_client_of_the_bincode_protocol_still_gets_a_clear_bad_version() {
    // What a v5 client (bincode 2, standard configuration) sends for
    // `Hello { version: 5 }`: the enum tag 0 and the version, one varint
    // byte each.
    let d = Daemon::start();
    let s = raw(&d);
    send(&s, &[2, 0, 0, 0, 0, 5], &[]);
    let mut header = [0u8; FRAME_HEADER_LEN];
    (&s).read_exact(&mut header).expect("an answer");
    let mut payload = vec![0u8; codec::frame_len(header) as usize];
    (&s).read_exact(&mut payload).expect("its payload");
    // The answer in the layout bincode's standard configuration decodes:
    // Event's tag, ProtocolErrorKind's tag, the message's length, its bytes
    // (each number below 128, so one byte in either format).
    let mut tags = Vec::new();
    let probe = Event::ProtocolError {
        kind: ProtocolErrorKind::BadVersion,
        message: String::new(),
    };
    codec::encode_frame(&probe, &mut tags, DEFAULT_MAX_FRAME).expect("encode");
    let (event_tag, kind_tag) = (tags[FRAME_HEADER_LEN], tags[FRAME_HEADER_LEN + 1]);
    assert!(event_tag < 128 && kind_tag < 128);
    assert_eq!(
        (payload[0], payload[1]),
        (event_tag, kind_tag),
        "{payload:?}"
    );
    let len = payload[2] as usize;
    assert!(
        len < 128,
        "a message of {len} bytes would be read differently by bincode"
    );
    let message = std::str::from_utf8(&payload[3..]).expect("UTF-8");
    assert_eq!(message.len(), len);
    assert!(message.contains("protocol version 5"), "{message}");
    assert_eq!(read_event(&s), None, "closed after the refusal");
}
