use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::thread;

use super::*;
use crate::codec;
use crate::proto::{
    FailureKind, Limits, Request, Strategy, DEFAULT_MAX_FRAME, FRAME_HEADER_LEN, PROTOCOL_VERSION,
};

fn write_event(peer: &mut UnixStream, event: &Event) {
    let mut buf = Vec::new();
    codec::encode_frame(event, &mut buf, MAX_EVENT_FRAME).expect("encode event");
    peer.write_all(&buf).expect("write event");
}

fn read_request(peer: &mut UnixStream) -> Request {
    let mut header = [0u8; FRAME_HEADER_LEN];
    peer.read_exact(&mut header).expect("read header");
    let mut payload = vec![0u8; codec::frame_len(header) as usize];
    peer.read_exact(&mut payload).expect("read payload");
    codec::decode_payload(&payload).expect("decode request")
}

/// Resolved jobs must leave the table, or a long-lived client grows forever.
#[test]
fn resolved_jobs_leave_the_table() {
    let (ours, mut peer) = UnixStream::pair().expect("socketpair");
    let daemon = thread::spawn(move || {
        assert!(matches!(read_request(&mut peer), Request::Hello { .. }));
        let limits = Limits {
            max_frame: DEFAULT_MAX_FRAME,
            max_jobs_per_connection: 1000,
            max_fds_per_message: 2,
            max_jobs_per_user: 1000,
            max_queued_bytes_per_connection: 0,
            max_queued_bytes_per_user: 0,
        };
        write_event(
            &mut peer,
            &Event::Welcome {
                version: PROTOCOL_VERSION,
                limits,
            },
        );
        for job in 0..100 {
            let Request::Submit(submit) = read_request(&mut peer) else {
                panic!("expected Submit");
            };
            let event = if job % 2 == 0 {
                Event::Completed {
                    req: submit.req,
                    job,
                    bytes: 0,
                    strategy: Strategy::Splice,
                    elapsed_us: 1,
                    note: None,
                    synced: false,
                    checksums: None,
                }
            } else {
                Event::Failed {
                    req: submit.req,
                    job: None,
                    kind: FailureKind::LimitExceeded,
                    os_error: None,
                    message: "busy".into(),
                    bytes: 0,
                }
            };
            write_event(&mut peer, &event);
        }
        peer
    });
    let client = Client::from_stream(ours).expect("handshake");
    let null = File::open("/dev/null").expect("open /dev/null");
    for _ in 0..100 {
        let job = client
            .submit(&null, &null, &TransferOptions::default())
            .expect("submit");
        let _ = job.wait();
    }
    assert!(lock(&client.inner.shared).jobs.is_empty());
    let _peer = daemon.join().expect("daemon thread");
}

fn welcome(peer: &mut UnixStream) {
    assert!(matches!(read_request(peer), Request::Hello { .. }));
    let limits = Limits {
        max_frame: DEFAULT_MAX_FRAME,
        max_jobs_per_connection: 8,
        max_fds_per_message: 2,
        max_jobs_per_user: 8,
        max_queued_bytes_per_connection: 0,
        max_queued_bytes_per_user: 0,
    };
    write_event(
        peer,
        &Event::Welcome {
            version: PROTOCOL_VERSION,
            limits,
        },
    );
}

/// A completed job whose destination cannot be published is a failed
/// job, and its message names the destination.
#[test]
fn a_publish_failure_fails_the_job() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src");
    std::fs::write(&src, b"bytes").expect("write source");
    let sub = dir.path().join("vanishing");
    std::fs::create_dir(&sub).expect("mkdir");
    let dst = sub.join("dst");

    let (ours, mut peer) = UnixStream::pair().expect("socketpair");
    let (got_submit, submitted) = crossbeam_channel::bounded(1);
    let (go, go_on) = crossbeam_channel::bounded::<()>(1);
    let daemon = thread::spawn(move || {
        welcome(&mut peer);
        let Request::Submit(submit) = read_request(&mut peer) else {
            panic!("expected Submit");
        };
        got_submit.send(()).expect("tell the test");
        go_on.recv().expect("wait for the test");
        write_event(
            &mut peer,
            &Event::Completed {
                req: submit.req,
                job: 9,
                bytes: 5,
                strategy: Strategy::Splice,
                elapsed_us: 1,
                note: None,
                synced: false,
                checksums: None,
            },
        );
        peer
    });
    let client = Client::from_stream(ours).expect("handshake");
    let job = client
        .copy_file(&src, &dst, &TransferOptions::default())
        .expect("copy_file");
    submitted.recv().expect("the peer got the Submit");
    // The unnamed staged file has no entry, so the directory is empty
    // and can go: the link at publish then has nowhere to land.
    std::fs::remove_dir(&sub).expect("remove the destination's directory");
    go.send(()).expect("let the peer complete the job");

    let err = job.wait().expect_err("the publish fails");
    let JobError::Failed {
        job,
        kind,
        os_error,
        message,
        bytes,
    } = err
    else {
        panic!("expected Failed, got {err:?}");
    };
    assert_eq!(
        (job, kind, os_error, bytes),
        (Some(9), FailureKind::Io, Some(libc::ENOENT), 5)
    );
    assert!(message.contains(&*dst.to_string_lossy()), "{message}");
    assert!(!dst.exists());
    drop(client);
    let _peer = daemon.join().expect("daemon thread");
}

/// Long enough never to fire on a working stub, short enough to fail fast.
const GUARD: std::time::Duration = std::time::Duration::from_secs(5);

fn completed(req: u64, job: u64) -> Event {
    Event::Completed {
        req,
        job,
        bytes: 0,
        strategy: Strategy::Splice,
        elapsed_us: 1,
        note: None,
        synced: false,
        checksums: None,
    }
}

/// Holds the client's next publish at its start; returns where to learn
/// which thread got there, and how to let it go on.
fn hold_next_publish(
    client: &Client,
) -> (
    crossbeam_channel::Receiver<String>,
    crossbeam_channel::Sender<()>,
) {
    let (tell, told) = crossbeam_channel::bounded(1);
    let (go, wait) = crossbeam_channel::bounded(1);
    *lock(&client.inner.publisher.gate) = Some((tell, wait));
    (told, go)
}

fn event_req(event: &Event) -> Option<u64> {
    match event {
        Event::Completed { req, .. } => Some(*req),
        _ => None,
    }
}

/// Publishing a path helper's destination (link, rename, fsync: as slow
/// as the disk) runs on the publisher thread, never on the event thread:
/// while one job's publish is held, another job's final event still
/// reaches its handle and subscribers, and the held job resolves (with
/// its file under its name) only once its publish is done.
#[test]
fn a_held_publish_does_not_hold_up_other_jobs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src");
    std::fs::write(&src, b"bytes").expect("write source");
    let dst = dir.path().join("dst");

    let (ours, mut peer) = UnixStream::pair().expect("socketpair");
    let daemon = thread::spawn(move || {
        welcome(&mut peer);
        let mut reqs = Vec::new();
        for _ in 0..2 {
            let Request::Submit(submit) = read_request(&mut peer) else {
                panic!("expected Submit");
            };
            reqs.push(submit.req);
        }
        for (job, req) in reqs.into_iter().enumerate() {
            write_event(&mut peer, &completed(req, job as u64));
        }
        peer
    });
    let client = Client::from_stream(ours).expect("handshake");
    let (publishing_on, go) = hold_next_publish(&client);
    let events = client.events();
    let staged = client
        .copy_file(&src, &dst, &TransferOptions::default())
        .expect("copy_file");
    let null = File::open("/dev/null").expect("open /dev/null");
    let plain = client
        .submit(&null, &null, &TransferOptions::default())
        .expect("submit");

    let thread = publishing_on
        .recv_timeout(GUARD)
        .expect("the publish starts");
    let done = plain.wait_timeout(GUARD);
    assert!(
        matches!(done, Some(Ok(_))),
        "the other job resolves while a publish (on {thread}) is held: {done:?}"
    );
    assert_eq!(thread, "ringxfer-ipc-publish");
    let first = events.recv_timeout(GUARD).expect("an event");
    assert_eq!(event_req(&first), Some(plain.req()));
    assert!(!staged.is_finished() && !dst.exists() && events.is_empty());

    go.send(()).expect("let the publish go on");
    staged.wait().expect("the staged job completes");
    assert!(dst.exists(), "under its name once its handle resolved");
    let last = events.recv_timeout(GUARD).expect("an event");
    assert_eq!(event_req(&last), Some(staged.req()));
    drop(client);
    let _peer = daemon.join().expect("daemon thread");
}

/// A job whose final event came before the connection ended is published,
/// and its subscribers see that event before the channel disconnects, as
/// when the event thread published it itself.
#[test]
fn a_publish_in_progress_finishes_before_the_end_is_told() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src");
    std::fs::write(&src, b"bytes").expect("write source");
    let dst = dir.path().join("dst");

    let (ours, mut peer) = UnixStream::pair().expect("socketpair");
    let daemon = thread::spawn(move || {
        welcome(&mut peer);
        let Request::Submit(submit) = read_request(&mut peer) else {
            panic!("expected Submit");
        };
        write_event(&mut peer, &completed(submit.req, 1));
        // Hangs up: the event thread sees the end while the publish is held.
    });
    let client = Client::from_stream(ours).expect("handshake");
    let (publishing_on, go) = hold_next_publish(&client);
    let events = client.events();
    let staged = client
        .copy_file(&src, &dst, &TransferOptions::default())
        .expect("copy_file");
    publishing_on
        .recv_timeout(GUARD)
        .expect("the publish starts");
    daemon.join().expect("daemon thread");
    // Time for the event thread to read the end of the stream.
    thread::sleep(std::time::Duration::from_millis(100));
    go.send(()).expect("let the publish go on");

    staged.wait().expect("completed, not disconnected");
    assert!(dst.exists());
    let last = events.recv_timeout(GUARD).expect("the final event");
    assert_eq!(event_req(&last), Some(staged.req()));
    assert!(matches!(
        events.recv_timeout(GUARD),
        Err(crossbeam_channel::RecvTimeoutError::Disconnected)
    ));
}

/// A daemon over its connection cap writes why and closes at once, often
/// before our Hello arrives. The reason must reach the caller, not the
/// EPIPE of sending Hello to a closed socket.
#[test]
fn a_refusal_sent_before_hello_arrives_is_read() {
    let (ours, mut peer) = UnixStream::pair().expect("socketpair");
    write_event(
        &mut peer,
        &Event::ProtocolError {
            kind: crate::proto::ProtocolErrorKind::TooManyConnections,
            message: "over --max-connections".into(),
        },
    );
    drop(peer);
    match Client::from_stream(ours) {
        Err(ClientError::Protocol { kind, message }) => {
            assert_eq!(kind, crate::proto::ProtocolErrorKind::TooManyConnections);
            assert!(message.contains("--max-connections"), "{message}");
        }
        Err(other) => panic!("expected the refusal, got {other}"),
        Ok(_) => panic!("expected the refusal, got a client"),
    }
}
