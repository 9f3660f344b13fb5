//! When the client stub starts its event thread: only once something waits
//! for an answer that no dispatcher reads. A program that reads its own
//! events (the CLI) starts none, and does not pay for starting and joining
//! it on every run. Alone in its test binary: it counts the process's
//! threads by name, which other tests' clients would add to.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::thread;
use std::time::Duration;

use ringxfer_ipc::{
    codec, Client, Event, Limits, Request, Strategy, TransferOptions, FRAME_HEADER_LEN,
    PROTOCOL_VERSION,
};

const LIMITS: Limits = Limits {
    max_frame: 64 * 1024,
    max_jobs_per_connection: 64,
    max_fds_per_message: 2,
    max_jobs_per_user: 64,
    max_queued_bytes_per_connection: 0,
    max_queued_bytes_per_user: 0,
};

/// Long enough never to fire on a working stub, short enough to fail fast.
const GUARD: Duration = Duration::from_secs(10);

fn send(peer: &mut UnixStream, event: &Event) {
    let mut buf = Vec::new();
    codec::encode_frame(event, &mut buf, 1 << 20).expect("encode");
    peer.write_all(&buf).expect("send an event");
}

fn recv(peer: &mut UnixStream) -> Request {
    let mut header = [0u8; FRAME_HEADER_LEN];
    peer.read_exact(&mut header).expect("a frame header");
    let mut payload = vec![0u8; codec::frame_len(header) as usize];
    peer.read_exact(&mut payload).expect("a frame");
    codec::decode_payload(&payload).expect("a request")
}

/// A daemon that welcomes the client, then answers each Submit with
/// Accepted and Completed once told to (one message per job on `go`).
fn peer(mut sock: UnixStream, go: crossbeam_channel::Receiver<()>) {
    assert!(matches!(recv(&mut sock), Request::Hello { .. }));
    send(
        &mut sock,
        &Event::Welcome {
            version: PROTOCOL_VERSION,
            limits: LIMITS,
        },
    );
    while go.recv().is_ok() {
        let Request::Submit(submit) = recv(&mut sock) else {
            panic!("expected Submit");
        };
        let (req, job) = (submit.req, submit.req + 100);
        send(&mut sock, &Event::Accepted { req, job });
        send(
            &mut sock,
            &Event::Completed {
                req,
                job,
                bytes: 0,
                strategy: Strategy::Splice,
                elapsed_us: 1,
                note: None,
                synced: false,
                checksums: None,
            },
        );
    }
}

/// Threads of this process named as the stub names its event threads.
fn event_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("list threads")
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.trim_end() == "ringxfer-ipc-ev")
        .count()
}

fn client() -> (
    Client,
    crossbeam_channel::Sender<()>,
    thread::JoinHandle<()>,
) {
    let (ours, theirs) = UnixStream::pair().expect("socketpair");
    let (go, told) = crossbeam_channel::unbounded();
    let daemon = thread::spawn(move || peer(theirs, told));
    (Client::from_stream(ours).expect("handshake"), go, daemon)
}

#[test]
fn the_event_thread_starts_only_when_no_dispatcher_reads() {
    let null = File::open("/dev/null").expect("open /dev/null");
    let opts = TransferOptions::default();
    let (first, go, daemon) = client();
    assert_eq!(event_threads(), 0, "the handshake started an event thread");

    // A job whose events this thread reads: no event thread, before or after.
    let mut events = first.dispatch_here();
    let job = first.submit(&null, &null, &opts).expect("submit");
    go.send(()).expect("peer");
    while !job.is_finished() {
        events.dispatch(Some(GUARD)).expect("dispatch");
    }
    drop(events);
    assert_eq!(job.wait().expect("completed").bytes, 0);
    assert_eq!(
        event_threads(),
        0,
        "a dispatched job started an event thread"
    );

    // Waiting without a dispatcher: the thread starts and reads.
    let job = first.submit(&null, &null, &opts).expect("submit");
    go.send(()).expect("peer");
    assert!(job.wait_timeout(GUARD).expect("resolves").is_ok());
    assert_eq!(event_threads(), 1);

    // A dispatcher dropped while its job is out: the thread takes over.
    let (second, go2, daemon2) = client();
    let events = second.dispatch_here();
    let job = second.submit(&null, &null, &opts).expect("submit");
    drop(events);
    go2.send(()).expect("peer");
    assert!(job.wait_timeout(GUARD).expect("resolves").is_ok());
    assert_eq!(event_threads(), 2);

    drop((first, second, go, go2));
    daemon.join().expect("peer");
    daemon2.join().expect("peer");
    assert_eq!(
        event_threads(),
        0,
        "dropping the clients joins their threads"
    );
}
