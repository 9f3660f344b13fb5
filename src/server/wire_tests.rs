//! The wire driven without a ring: real bytes and real descriptors over a
//! socketpair, received with a plain recvmsg into the session's own
//! receive buffer, and sends made with a plain send from its send buffer.

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;

use ringxfer_ipc::fdpass::send_with_fds;
use ringxfer_ipc::{
    codec, frame, Event, ProtocolErrorKind, Request, SubmitRequest, PROTOCOL_VERSION,
};

use super::wire::{over_event_share, Incoming, Receipt, Sent, Wire, MAX_PENDING_EVENTS};

const MAX_FRAME: u32 = 64 * 1024;

fn pair() -> (Wire, UnixStream, UnixStream) {
    let (daemon, client) = UnixStream::pair().expect("socketpair");
    (Wire::new(MAX_FRAME, 16 * 1024), daemon, client)
}

fn bytes(requests: &[Request]) -> Vec<u8> {
    let mut v = Vec::new();
    for r in requests {
        codec::encode_frame(r, &mut v, MAX_FRAME).expect("encodes");
    }
    v
}

fn hello() -> Request {
    Request::Hello {
        version: PROTOCOL_VERSION,
    }
}

fn submit() -> Request {
    Request::Submit(SubmitRequest {
        req: 7,
        tag: String::new(),
        offset: 0,
        length: None,
        dest_offset: 0,
        strategy: ringxfer_ipc::Strategy::Auto,
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
    })
}

/// One receive, as the ring's recvmsg would do it, fed to the wire.
fn receive(wire: &mut Wire, sock: &UnixStream) -> Receipt {
    let mut buf = wire.take_recv().expect("no receive in flight");
    let msg = buf.prepare();
    // SAFETY: `msg` points into `buf` (iovec, control buffer, spare bytes),
    // which lives, unmoved, across the call.
    let n = unsafe {
        libc::recvmsg(
            sock.as_raw_fd(),
            msg,
            libc::MSG_CMSG_CLOEXEC | libc::MSG_DONTWAIT,
        )
    };
    let result = match n {
        n if n >= 0 => n as i32,
        _ => -std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO),
    };
    wire.on_recv(result, buf)
}

/// Every frame the last receive completed, and how the receive ended.
fn take_all(
    wire: &mut Wire,
    doomed: &mut Vec<OwnedFd>,
) -> (Vec<Incoming>, Result<(), ProtocolErrorKind>) {
    let mut got = Vec::new();
    let outcome = loop {
        match wire.next_incoming(doomed) {
            None => break Ok(()),
            Some(Ok(incoming)) => got.push(incoming),
            Some(Err(e)) => break Err(e),
        }
    };
    let end = wire.finish_frames(outcome, doomed).map_err(|e| e.kind);
    (got, end)
}

fn greeted() -> (Wire, UnixStream, UnixStream) {
    let (mut wire, daemon, client) = pair();
    (&client).write_all(&bytes(&[hello()])).expect("send");
    assert_eq!(receive(&mut wire, &daemon), Receipt::Bytes);
    let (got, end) = take_all(&mut wire, &mut Vec::new());
    assert!(matches!(got[..], [Incoming::Hello]) && end.is_ok());
    (wire, daemon, client)
}

/// A pipe, for descriptors whose identity a test can check by writing.
fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: pipe2 just made both descriptors, owned by nothing else.
    unsafe {
        use std::os::fd::FromRawFd;
        (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1]))
    }
}

fn ends(p: &[(OwnedFd, OwnedFd)]) -> Vec<BorrowedFd<'_>> {
    p.iter().map(|(r, _)| r.as_fd()).collect()
}

#[test]
fn a_frame_in_pieces_waits_for_its_rest() {
    let (mut wire, daemon, client) = pair();
    let all = bytes(&[hello()]);
    (&client).write_all(&all[..3]).expect("send");
    assert_eq!(receive(&mut wire, &daemon), Receipt::Bytes);
    let (got, end) = take_all(&mut wire, &mut Vec::new());
    assert!(got.is_empty() && end.is_ok());
    assert!(wire.partial_since().is_some(), "a half frame is timed");
    (&client).write_all(&all[3..]).expect("send");
    assert_eq!(receive(&mut wire, &daemon), Receipt::Bytes);
    let (got, end) = take_all(&mut wire, &mut Vec::new());
    assert!(matches!(got[..], [Incoming::Hello]) && end.is_ok());
    assert!(wire.greeted() && wire.partial_since().is_none());
}

#[test]
fn several_frames_in_one_receive_come_out_in_order() {
    let (mut wire, daemon, client) = pair();
    let cancel = Request::Cancel { req: 2, job: 9 };
    (&client)
        .write_all(&bytes(&[hello(), Request::Stats, cancel.clone()]))
        .expect("send");
    assert_eq!(receive(&mut wire, &daemon), Receipt::Bytes);
    let (got, end) = take_all(&mut wire, &mut Vec::new());
    assert!(end.is_ok());
    match &got[..] {
        [Incoming::Hello, Incoming::Request(Request::Stats, a), Incoming::Request(c, b)] => {
            assert!(a.is_empty() && b.is_empty());
            assert_eq!(c, &cancel);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_submit_gets_the_very_descriptors_sent_with_it() {
    let (mut wire, daemon, client) = greeted();
    let pipes = [pipe(), pipe()];
    send_with_fds(client.as_fd(), &bytes(&[submit()]), &ends(&pipes)).expect("sendmsg");
    assert_eq!(receive(&mut wire, &daemon), Receipt::Bytes);
    let (got, end) = take_all(&mut wire, &mut Vec::new());
    assert!(end.is_ok());
    let [Incoming::Request(Request::Submit(_), fds)] = &got[..] else {
        panic!("{got:?}");
    };
    assert_eq!(fds.len(), 2);
    // Each claimed descriptor reads what was written into its own pipe.
    for (i, ((_, w), fd)) in pipes.iter().zip(fds).enumerate() {
        std::fs::File::from(w.try_clone().expect("dup"))
            .write_all(&[i as u8])
            .expect("write");
        let mut b = [0u8];
        std::fs::File::from(fd.try_clone().expect("dup"))
            .read_exact(&mut b)
            .expect("read");
        assert_eq!(b[0], i as u8);
    }
}

#[test]
fn descriptors_sent_with_the_first_piece_of_a_frame_wait_for_the_rest() {
    let (mut wire, daemon, client) = greeted();
    let pipes = [pipe(), pipe()];
    let all = bytes(&[submit()]);
    send_with_fds(client.as_fd(), &all[..5], &ends(&pipes)).expect("sendmsg");
    assert_eq!(receive(&mut wire, &daemon), Receipt::Bytes);
    let (got, end) = take_all(&mut wire, &mut Vec::new());
    assert!(got.is_empty() && end.is_ok());
    (&client).write_all(&all[5..]).expect("send");
    assert_eq!(receive(&mut wire, &daemon), Receipt::Bytes);
    let (got, end) = take_all(&mut wire, &mut Vec::new());
    assert!(end.is_ok());
    assert!(matches!(&got[..], [Incoming::Request(Request::Submit(_), fds)] if fds.len() == 2));
}

#[test]
fn descriptors_before_their_frame_are_refused_and_closed() {
    let (mut wire, daemon, client) = greeted();
    let pipes = [pipe(), pipe()];
    // With a Stats frame, which takes none; the Submit follows bare.
    send_with_fds(client.as_fd(), &bytes(&[Request::Stats]), &ends(&pipes)).expect("sendmsg");
    (&client).write_all(&bytes(&[submit()])).expect("send");
    assert_eq!(receive(&mut wire, &daemon), Receipt::Bytes);
    let mut doomed = Vec::new();
    let (got, end) = take_all(&mut wire, &mut doomed);
    assert!(got.is_empty());
    assert_eq!(end, Err(ProtocolErrorKind::ExtraDescriptors));
    assert_eq!(
        doomed.len(),
        2,
        "the refused descriptors are handed back to close"
    );
}

#[test]
fn descriptors_after_their_frame_leave_it_missing_them() {
    let (mut wire, daemon, client) = greeted();
    let pipes = [pipe(), pipe()];
    (&client).write_all(&bytes(&[submit()])).expect("send");
    send_with_fds(client.as_fd(), &bytes(&[Request::Stats]), &ends(&pipes)).expect("sendmsg");
    let mut doomed = Vec::new();
    let mut end = Ok(());
    // One or two receives, as the kernel splits them.
    while end.is_ok() && receive(&mut wire, &daemon) == Receipt::Bytes {
        end = take_all(&mut wire, &mut doomed).1;
    }
    assert_eq!(end, Err(ProtocolErrorKind::MissingDescriptors));
}

#[test]
fn descriptors_no_frame_can_claim_are_refused_at_once() {
    let (mut wire, daemon, client) = greeted();
    let p = [pipe()];
    send_with_fds(client.as_fd(), &bytes(&[Request::Stats]), &ends(&p)).expect("sendmsg");
    assert_eq!(receive(&mut wire, &daemon), Receipt::Bytes);
    let mut doomed = Vec::new();
    let (_, end) = take_all(&mut wire, &mut doomed);
    assert_eq!(end, Err(ProtocolErrorKind::ExtraDescriptors));
    assert_eq!(doomed.len(), 1);
}

#[test]
fn more_descriptors_than_a_message_may_carry_break_the_connection() {
    let (mut wire, daemon, client) = greeted();
    let pipes: Vec<_> = (0..65).map(|_| pipe()).collect();
    send_with_fds(client.as_fd(), &bytes(&[Request::Stats]), &ends(&pipes)).expect("sendmsg");
    match receive(&mut wire, &daemon) {
        Receipt::Broken(e) => assert_eq!(e.kind, ProtocolErrorKind::TooManyDescriptors),
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_oversize_frame_is_refused_from_its_header() {
    let (mut wire, daemon, client) = greeted();
    (&client)
        .write_all(&(MAX_FRAME + 1).to_le_bytes())
        .expect("send");
    assert_eq!(receive(&mut wire, &daemon), Receipt::Bytes);
    let (_, end) = take_all(&mut wire, &mut Vec::new());
    assert_eq!(end, Err(ProtocolErrorKind::FrameTooLarge));
}

#[test]
fn hello_must_come_first_once_and_in_this_version() {
    let cases = [
        (vec![Request::Stats], ProtocolErrorKind::UnexpectedRequest),
        (
            vec![Request::Hello { version: 1 }],
            ProtocolErrorKind::BadVersion,
        ),
        (vec![hello(), hello()], ProtocolErrorKind::UnexpectedRequest),
    ];
    for (requests, kind) in cases {
        let (mut wire, daemon, client) = pair();
        (&client).write_all(&bytes(&requests)).expect("send");
        assert_eq!(receive(&mut wire, &daemon), Receipt::Bytes);
        let (_, end) = take_all(&mut wire, &mut Vec::new());
        assert_eq!(end, Err(kind), "{requests:?}");
    }
}

#[test]
fn end_of_stream_is_clean_between_frames_and_truncation_inside_one() {
    let (mut wire, daemon, client) = greeted();
    client
        .shutdown(std::net::Shutdown::Write)
        .expect("shutdown");
    assert_eq!(receive(&mut wire, &daemon), Receipt::Eof);

    let (mut wire, daemon, client) = greeted();
    (&client)
        .write_all(&bytes(&[Request::Stats])[..2])
        .expect("send");
    client
        .shutdown(std::net::Shutdown::Write)
        .expect("shutdown");
    assert_eq!(receive(&mut wire, &daemon), Receipt::Bytes);
    take_all(&mut wire, &mut Vec::new())
        .1
        .expect("half a frame so far");
    match receive(&mut wire, &daemon) {
        Receipt::Broken(e) => assert_eq!(e.kind, ProtocolErrorKind::Truncated),
        other => panic!("{other:?}"),
    }
    let (mut wire, daemon, _client) = pair();
    assert_eq!(receive(&mut wire, &daemon), Receipt::Again, "nothing yet");
}

#[test]
fn the_event_budget_cuts_off_only_a_client_over_its_share() {
    let (floor, budget) = (64 << 10, 1 << 20);
    // Under the floor, never, however full the daemon.
    assert!(!over_event_share(floor, || usize::MAX, budget, 1));
    // Over the budget in all, and this client holds at least its share.
    assert!(over_event_share(600 << 10, || 2 << 20, budget, 2));
    // Over the budget in all, but this client holds less than its share.
    assert!(!over_event_share(100 << 10, || 2 << 20, budget, 4));
    // Under the budget in all.
    assert!(!over_event_share(600 << 10, || 900 << 10, budget, 2));

    let (mut wire, _daemon, _client) = greeted();
    let listing = Event::Stats(Default::default());
    while !wire.not_reading() {
        let before = wire.unsent();
        wire.queue_event(&listing).expect("encodes");
        assert!(wire.unsent() > before);
    }
    assert!(!wire.keeps_up() && wire.unsent() > MAX_PENDING_EVENTS);
    wire.drop_pending();
    assert_eq!(wire.unsent(), 0);
}

/// One send, as the ring's would do it, fed to the wire.
fn send(wire: &mut Wire, sock: &UnixStream, closing: bool) -> Option<Sent> {
    let buf = wire.start_send()?;
    let (ptr, len) = buf.unsent();
    // SAFETY: `ptr` and `len` name the unsent bytes of `buf`, alive across the call.
    let n = unsafe {
        libc::send(
            sock.as_raw_fd(),
            ptr.cast(),
            len as usize,
            libc::MSG_DONTWAIT,
        )
    };
    let result = match n {
        n if n >= 0 => n as i32,
        _ => -std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO),
    };
    Some(wire.on_sent(result, buf, closing))
}

#[test]
fn a_full_socket_puts_the_bytes_back_in_order_and_a_closing_one_drops_them() {
    let (mut wire, daemon, client) = greeted();
    let events: Vec<Event> = (0..2000)
        .map(|i| Event::ProtocolError {
            kind: ProtocolErrorKind::TimedOut,
            message: format!("{i:01000}"),
        })
        .collect();
    let mut queued = events.iter();
    // Queue events while sending until the socket is full.
    let mut full = false;
    while !full {
        for e in queued.by_ref().take(50) {
            wire.queue_event(e).expect("encodes");
        }
        match send(&mut wire, &daemon, false) {
            Some(Sent::Again) => full = true,
            Some(Sent::Done) | None => {}
            Some(Sent::Failed(e)) => panic!("send failed: {e}"),
        }
        assert!(queued.len() > 0, "the socket never filled");
    }
    for e in queued {
        wire.queue_event(e).expect("encodes");
    }
    // The client reads everything while the daemon keeps sending.
    client.set_nonblocking(true).expect("nonblocking");
    let mut received = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    while wire.has_pending() {
        let _ = send(&mut wire, &daemon, false);
        if let Ok(n) = (&client).read(&mut chunk) {
            received.extend_from_slice(&chunk[..n]);
        }
    }
    while let Ok(n) = (&client).read(&mut chunk) {
        if n == 0 {
            break;
        }
        received.extend_from_slice(&chunk[..n]);
    }
    let mut got = Vec::new();
    let mut at = 0;
    while let Some((event, used)) = frame::next::<Event>(&received[at..], u32::MAX).expect("frames")
    {
        got.push(event);
        at += used;
    }
    assert_eq!(at, received.len());
    assert_eq!(got, events, "every event once, in order");

    // A closing session does not wait for a full socket.
    while send(&mut wire, &daemon, false) != Some(Sent::Again) {
        wire.queue_event(&events[0]).expect("encodes");
    }
    assert_eq!(
        send(&mut wire, &daemon, true),
        Some(Sent::Failed(libc::EAGAIN))
    );
    assert!(!wire.has_pending());
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    /// A request of each shape a stream mixes: bare, or carrying two descriptors.
    fn request(i: u8) -> Request {
        match i % 3 {
            0 => Request::Stats,
            1 => Request::Cancel {
                req: u64::from(i),
                job: 1,
            },
            _ => submit(),
        }
    }

    // The fuzzing of the daemon's decoder (issue 15): cargo-fuzz needs a

    // nightly toolchain, so these properties run with many cases in every

    // test run (.ci/run included): about 4 s together in a debug build.

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1_000))]

        /// However each frame is cut into sends, and whichever of its
        /// pieces carries its descriptors, the same requests come out in
        /// order, each Submit with its own two descriptors, and nothing is
        /// left over.
        #[test]
        fn any_cut_of_the_frames_gives_the_same_requests(
            frames in proptest::collection::vec((any::<u8>(), 1usize..4, any::<prop::sample::Index>()), 1..12),
        ) {
            let (mut wire, daemon, client) = greeted();
            let mut doomed = Vec::new();
            let mut got = Vec::new();
            for &(i, pieces, with_fds) in &frames {
                let req = request(i);
                let all = bytes(std::slice::from_ref(&req));
                let size = all.len().div_ceil(pieces);
                let carrier = with_fds.index(all.len().div_ceil(size));
                let pipes = [pipe(), pipe()];
                for (n, piece) in all.chunks(size).enumerate() {
                    let fds = match &req {
                        Request::Submit(_) if n == carrier => ends(&pipes),
                        _ => Vec::new(),
                    };
                    send_with_fds(client.as_fd(), piece, &fds).expect("sendmsg");
                    while receive(&mut wire, &daemon) == Receipt::Bytes {
                        let (incoming, end) = take_all(&mut wire, &mut doomed);
                        prop_assert_eq!(end, Ok(()));
                        got.extend(incoming);
                    }
                }
            }
            prop_assert!(doomed.is_empty());
            prop_assert!(wire.partial_since().is_none());
            prop_assert_eq!(got.len(), frames.len());
            for (incoming, &(i, _, _)) in got.iter().zip(&frames) {
                let Incoming::Request(req, fds) = incoming else {
                    return Err(TestCaseError::fail(format!("{incoming:?}")));
                };
                prop_assert_eq!(req, &request(i));
                prop_assert_eq!(fds.len(), if i % 3 == 2 { 2 } else { 0 });
            }
        }
    }
}
