//! Host to host: one large file pushed as several stripes at once, each
//! over a connection of its own (`Put { stripe }`, `copy --streams N`).
//! The receiving daemon publishes the file only once every stripe of its
//! set landed and checked, and answers no stripe before that; any stripe
//! failing leaves the name as it was.

use std::net::SocketAddr;
use std::time::Duration;

use ringxfer_ipc::proto::peer::{
    Checksum, FileMeta, PeerMessage, Put, RemotePath, Stripe, StripeId, Timestamp,
};
use ringxfer_ipc::proto::FailureKind;

use crate::host_to_host::{
    failed_kind, message_of, parts_in, push_cli, push_until, pushed, receiver, receiver_with,
    resumed_at, Sender,
};
use crate::support::*;

const MIB: u64 = 1 << 20;

/// Offers stripe `index` of `count` (set `set`) of a file of `size`
/// bytes, carrying `len` bytes from `offset`; the answer.
fn put_stripe(
    s: &mut Sender,
    path: &str,
    size: u64,
    (set, index, count): (u64, u32, u32),
    (offset, len): (u64, u64),
) -> PeerMessage {
    let put = Put {
        xfer: 1,
        path: RemotePath::new(path).expect("a valid remote path"),
        meta: FileMeta {
            size,
            mode: 0o644,
            atime: Timestamp::default(),
            mtime: Timestamp::default(),
        },
        checksum: Checksum::Crc32c,
        resume: false,
        fsync: false,
        mkdir: false,
        stripe: Some(Stripe {
            id: StripeId { set, index, count },
            offset,
            len,
        }),
        directory: false,
    };
    s.send(&PeerMessage::Put(put));
    s.recv().expect("an answer to Put")
}

/// Sends the bytes of `data` from `offset` to `end`, then `End` with
/// `crc` (their CRC-32C unless given).
fn send_stripe(s: &mut Sender, data: &[u8], (offset, end): (u64, u64), crc: Option<u32>) {
    let bytes = &data[offset as usize..end as usize];
    s.send_data(1, offset, bytes, 512 << 10);
    s.send(&PeerMessage::End {
        xfer: 1,
        size: end - offset,
        crc32c: crc.unwrap_or_else(|| crc32c::crc32c(bytes)),
    });
}

/// Whether the receiver says nothing on `s` for a while.
fn silent(s: &mut Sender) -> bool {
    s.stream
        .set_read_timeout(Some(Duration::from_millis(700)))
        .expect("timeout");
    let quiet = s.recv().is_none();
    s.stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    quiet
}

fn two_stripes(address: SocketAddr, set: u64, data: &[u8]) -> (Sender, Sender) {
    let size = data.len() as u64;
    let mut s0 = Sender::connect(address);
    let mut s1 = Sender::connect(address);
    let ready = put_stripe(&mut s0, "inbox/keep.bin", size, (set, 0, 2), (0, 2 * MIB));
    assert!(matches!(ready, PeerMessage::Ready { .. }), "{ready:?}");
    let ready = put_stripe(
        &mut s1,
        "inbox/keep.bin",
        size,
        (set, 1, 2),
        (2 * MIB, size - 2 * MIB),
    );
    assert!(matches!(ready, PeerMessage::Ready { .. }), "{ready:?}");
    (s0, s1)
}

#[test]
fn a_striped_file_is_published_only_when_its_last_stripe_landed() {
    let export = tmpdir();
    let keep = export.path().join("keep.bin");
    std::fs::write(&keep, b"old").expect("write");
    let (d, address) = receiver(export.path());
    let data = pattern(21, (3 << 20) + 4321);
    let size = data.len() as u64;
    let (mut s0, mut s1) = two_stripes(address, 77, &data);

    // The first stripe lands: no answer yet, and the name is unchanged.
    send_stripe(&mut s0, &data, (0, 2 * MIB), None);
    assert!(
        silent(&mut s0),
        "a stripe was answered before the set was in"
    );
    assert_file_eq(&keep, b"old");

    // Another transfer to the name is refused meanwhile, whether whole or
    // a stripe of another set, or the same stripe again.
    let mut other = Sender::connect(address);
    let answer = other.put(1, "inbox/keep.bin", 1, 0o644, 0);
    assert_eq!(
        failed_kind(&answer),
        FailureKind::LimitExceeded,
        "{answer:?}"
    );
    let mut other = Sender::connect(address);
    let answer = put_stripe(
        &mut other,
        "inbox/keep.bin",
        size,
        (78, 1, 2),
        (2 * MIB, size - 2 * MIB),
    );
    assert_eq!(
        failed_kind(&answer),
        FailureKind::LimitExceeded,
        "{answer:?}"
    );
    let mut other = Sender::connect(address);
    let answer = put_stripe(&mut other, "inbox/keep.bin", size, (77, 0, 2), (0, 2 * MIB));
    assert!(message_of(&answer).contains("came twice"), "{answer:?}");

    // The last one lands: the file is published, then both are answered.
    send_stripe(&mut s1, &data, (2 * MIB, size), None);
    let crc1 = crc32c::crc32c(&data[2 << 20..]);
    assert_eq!(
        s1.recv(),
        Some(PeerMessage::Done {
            xfer: 1,
            crc32c: crc1
        }),
        "{}",
        d.log()
    );
    let crc0 = crc32c::crc32c(&data[..2 << 20]);
    assert_eq!(
        s0.recv(),
        Some(PeerMessage::Done {
            xfer: 1,
            crc32c: crc0
        })
    );
    assert_file_eq(&keep, &data);
    assert!(parts_in(export.path()).is_empty());

    // Stripes that overlap are refused; stripes that leave a gap land
    // but are not published.
    let mut s0 = Sender::connect(address);
    let mut s1 = Sender::connect(address);
    let ready = put_stripe(&mut s0, "inbox/keep.bin", size, (80, 0, 2), (0, MIB));
    assert!(matches!(ready, PeerMessage::Ready { .. }), "{ready:?}");
    let mut over = Sender::connect(address);
    let answer = put_stripe(
        &mut over,
        "inbox/keep.bin",
        size,
        (80, 1, 2),
        (MIB - 1, MIB),
    );
    assert!(message_of(&answer).contains("overlaps"), "{answer:?}");
    let ready = put_stripe(&mut s1, "inbox/keep.bin", size, (80, 1, 2), (2 * MIB, MIB));
    assert!(matches!(ready, PeerMessage::Ready { .. }), "{ready:?}");
    send_stripe(&mut s0, &data, (0, MIB), None);
    assert!(silent(&mut s0));
    send_stripe(&mut s1, &data, (2 * MIB, 3 * MIB), None);
    let answer = s1.recv().expect("an answer");
    assert!(message_of(&answer).contains("cover"), "{answer:?}");
    let answer = s0.recv().expect("an answer");
    assert!(message_of(&answer).contains("cover"), "{answer:?}");
    assert_file_eq(&keep, &data);
    let gone = poll_until(Duration::from_secs(5), || {
        parts_in(export.path()).is_empty()
    });
    assert!(gone, "the part stays: {:?}", parts_in(export.path()));

    // A stripe that does not fit its file is refused.
    let mut bad = Sender::connect(address);
    let answer = put_stripe(&mut bad, "inbox/x.bin", MIB, (5, 0, 2), (0, 2 * MIB));
    assert_eq!(
        failed_kind(&answer),
        FailureKind::InvalidRequest,
        "{answer:?}"
    );
    let answer = put_stripe(&mut bad, "inbox/x.bin", MIB, (5, 2, 2), (0, MIB));
    assert_eq!(
        failed_kind(&answer),
        FailureKind::InvalidRequest,
        "{answer:?}"
    );
}

#[test]
fn one_stripe_failing_fails_the_file_and_the_name_keeps_what_it_had() {
    let export = tmpdir();
    let keep = export.path().join("keep.bin");
    std::fs::write(&keep, b"old").expect("write");
    let (d, address) = receiver(export.path());
    let data = pattern(22, (3 << 20) + 99);
    let size = data.len() as u64;

    // The first stripe waits, landed; the second lies about its CRC.
    let (mut s0, mut s1) = two_stripes(address, 90, &data);
    send_stripe(&mut s0, &data, (0, 2 * MIB), None);
    assert!(silent(&mut s0));
    send_stripe(&mut s1, &data, (2 * MIB, size), Some(0xdead_beef));
    let answer = s1.recv().expect("an answer");
    assert_eq!(failed_kind(&answer), FailureKind::Mismatch, "{answer:?}");
    let answer = s0.recv().expect("an answer");
    assert!(
        message_of(&answer).contains("another stripe of this file failed"),
        "{answer:?}\n{}",
        d.log()
    );
    assert_file_eq(&keep, b"old");
    let gone = poll_until(Duration::from_secs(5), || {
        parts_in(export.path()).is_empty()
    });
    assert!(gone, "the part stays: {:?}", parts_in(export.path()));

    // A stripe cancelled before the other ended: the other fails at its
    // End, and the name is free again afterwards.
    let (mut s0, mut s1) = two_stripes(address, 91, &data);
    s0.send(&PeerMessage::Cancel { xfer: 1 });
    let answer = s0.recv().expect("an answer");
    assert_eq!(failed_kind(&answer), FailureKind::Cancelled, "{answer:?}");
    send_stripe(&mut s1, &data, (2 * MIB, size), None);
    let answer = s1.recv().expect("an answer");
    assert!(message_of(&answer).contains("another stripe"), "{answer:?}");
    assert_file_eq(&keep, b"old");
    let gone = poll_until(Duration::from_secs(5), || {
        parts_in(export.path()).is_empty()
    });
    assert!(gone, "the part stays: {:?}", parts_in(export.path()));
    let mut again = Sender::connect(address);
    let done = again.push(1, "inbox/keep.bin", &data, 0o644);
    assert!(matches!(done, PeerMessage::Done { .. }), "{done:?}");
    assert_file_eq(&keep, &data);
}

#[test]
fn the_cli_pushes_a_large_file_over_several_streams() {
    let export = tmpdir();
    let (receiving, address) = receiver(export.path());
    let sending = Daemon::start();
    let data = pattern(23, (40 << 20) + 5);
    let src = sending.dir().join("big.bin");
    std::fs::write(&src, &data).expect("write");
    let dst = format!("{address}:inbox");

    let report = pushed(
        &push_cli(&sending, &["--streams", "4"], &src, &dst),
        &receiving,
    );
    let note = report["note"].as_str().unwrap_or_default();
    assert!(note.contains("pushed as 4 streams"), "{report}");
    assert_eq!(report["bytes"], data.len() as u64);
    let crc = u64::from(crc32c::crc32c(&data));
    assert_eq!(
        report["checksums"]["destination"].as_u64(),
        Some(crc),
        "{report}"
    );
    assert_file_eq(&export.path().join("big.bin"), &data);
    assert!(parts_in(export.path()).is_empty());
    let stripes = receiving
        .log()
        .matches("received a file from another daemon")
        .count();
    assert_eq!(stripes, 4, "{}", receiving.log());

    // A file too small for two stripes of 8 MiB goes as one.
    let small = sending.dir().join("small.bin");
    std::fs::write(&small, &data[..15 << 20]).expect("write");
    let report = pushed(
        &push_cli(&sending, &["--streams", "4"], &small, &dst),
        &receiving,
    );
    assert!(
        !report["note"]
            .as_str()
            .unwrap_or_default()
            .contains("streams"),
        "{report}"
    );
    assert_file_eq(&export.path().join("small.bin"), &data[..15 << 20]);

    // What --streams cannot mean is a usage error.
    for (args, to, why) in [
        (&["--streams", "17"][..], dst.as_str(), "17"),
        (
            &["--streams", "2", "--length", "1MiB"][..],
            dst.as_str(),
            "whole file",
        ),
        (
            &["--streams", "2"][..],
            "local-copy",
            "local copy needs none",
        ),
    ] {
        let out = push_cli(&sending, args, &src, to);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            crate::cli_common::describe(&out)
        );
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(why),
            "{args:?}: {}",
            crate::cli_common::describe(&out)
        );
    }
}

#[test]
fn a_striped_push_cut_off_keeps_the_old_file_and_resumes_as_one_stream() {
    let export = tmpdir();
    let keep = export.path().join("big.bin");
    std::fs::write(&keep, b"old").expect("write");
    let (receiving, address) = receiver(export.path());
    let mut sending = Daemon::start();
    let data = pattern(24, 32 << 20);
    let sources = tmpdir();
    let src = sources.path().join("big.bin");
    std::fs::write(&src, &data).expect("write");
    let dst = format!("{address}:inbox");

    let child = push_until(
        &sending,
        &["--streams", "2"],
        &src,
        &dst,
        export.path(),
        18 * MIB,
    );
    sending.signal(libc::SIGKILL);
    let out = child.wait_with_output().expect("wait");
    assert!(!out.status.success());
    let kept = poll_until(Duration::from_secs(10), || {
        receiving
            .log()
            .contains("connection of another daemon closed")
    });
    assert!(kept, "{}", receiving.log());
    assert_file_eq(&keep, b"old");
    // Every stripe was cut off, not failed: the part stays for a resume.
    let part = poll_until(Duration::from_secs(10), || {
        receiving.log().matches("receiving a file failed").count() == 2
    });
    assert!(part, "{}", receiving.log());
    assert_eq!(parts_in(export.path()).len(), 1, "{}", receiving.log());

    sending = Daemon::start();
    let out = push_cli(&sending, &["--resume", "--streams", "2"], &src, &dst);
    let report = pushed(&out, &receiving);
    assert!(String::from_utf8_lossy(&out.stderr).contains("as one stream"));
    // The part's first stripe's blocks were found whole.
    let from = resumed_at(&report).unwrap_or(0);
    assert!(from >= MIB, "{report}");
    assert_eq!(report["bytes"], data.len() as u64);
    assert_file_eq(&keep, &data);
    assert!(parts_in(export.path()).is_empty());
}

/// `peer_bytes_in_flight_max` of daemon `d`, from `ringxfer --json stats`.
fn most_in_flight(d: &Daemon) -> u64 {
    let mut c = crate::cli_common::cli(&d.socket);
    c.args(["--json", "stats"]);
    let out = crate::cli_common::run(c);
    let stats = crate::cli_common::json_lines(&out).pop().expect("stats");
    stats["peer_bytes_in_flight_max"]
        .as_u64()
        .expect("the counter")
}

#[test]
fn what_one_peer_has_in_flight_stays_under_peer_bytes_in_flight() {
    let data = pattern(25, (48 << 20) + 3);
    let sending = Daemon::start();
    let src = sending.dir().join("big.bin");
    std::fs::write(&src, &data).expect("write");
    // SAFETY: geteuid has no arguments and cannot fail.
    let uid = unsafe { libc::geteuid() };
    let limited = "peer_bytes_in_flight = \"1MiB\"";
    for (limit, settings, streams) in [
        (None, "", "6"),
        (Some(MIB), limited, "6"),
        (Some(MIB), limited, "2"),
    ] {
        let export = tmpdir();
        let (receiving, address) = crate::host_to_host::receiver_with(export.path(), uid, settings);
        let dst = format!("{address}:inbox");
        let report = pushed(
            &push_cli(&sending, &["--streams", streams], &src, &dst),
            &receiving,
        );
        assert_eq!(report["bytes"], data.len() as u64);
        assert_file_eq(&export.path().join("big.bin"), &data);
        let most = most_in_flight(&receiving);
        match limit {
            // Six connections filling their buffers at once hold more than
            // a MiB between them: the limit below is not met by chance.
            None => assert!(most > MIB, "{most}"),
            Some(limit) => assert!(most > 0 && most <= limit, "{most}\n{}", receiving.log()),
        }
    }
}

#[test]
fn a_stripe_whose_file_changed_size_is_refused() {
    let export = tmpdir();
    let (_receiving, address) = receiver(export.path());
    let sending = Daemon::start();
    let src = sending.dir().join("grown.bin");
    std::fs::write(&src, pattern(26, 3 << 20)).expect("write");
    let client = ringxfer_ipc::Client::connect(&sending.socket).expect("connect");
    let file = std::fs::File::open(&src).expect("open");
    let socket = std::net::TcpStream::connect(address).expect("connect");
    let path = RemotePath::new("inbox/grown.bin").expect("path");
    // The last of two stripes, cut when the file had 2 MiB.
    let opts = ringxfer_ipc::TransferOptions {
        offset: MIB,
        length: Some(MIB),
        stripe: Some(StripeId {
            set: 9,
            index: 1,
            count: 2,
        }),
        ..Default::default()
    };
    let err = client
        .submit_remote(&file, &socket, &path, false, &opts)
        .expect("submitted")
        .wait()
        .expect_err("refused");
    assert!(err.to_string().contains("changed size"), "{err}");
    assert!(!export.path().join("grown.bin").exists());
}

#[test]
fn a_stripe_whose_set_never_completes_fails_in_time() {
    // A sender that puts one stripe of two and never the other: the
    // stripe that landed waits at most 10 x frame_timeout, then the set
    // fails and the name is free again.
    let export = tmpdir();
    let keep = export.path().join("keep.bin");
    std::fs::write(&keep, b"old").expect("write");
    // SAFETY: geteuid has no arguments and cannot fail.
    let me = unsafe { libc::geteuid() };
    let (d, address) = receiver_with(export.path(), me, "frame_timeout = \"1s\"");
    let data = pattern(23, (3 << 20) + 99);
    let size = data.len() as u64;
    let mut s0 = Sender::connect(address);
    let ready = put_stripe(&mut s0, "inbox/keep.bin", size, (5, 0, 2), (0, 2 * MIB));
    assert!(matches!(ready, PeerMessage::Ready { .. }), "{ready:?}");
    let t0 = std::time::Instant::now();
    send_stripe(&mut s0, &data, (0, 2 * MIB), None);
    let answer = s0.recv().expect("an answer once the set gave up");
    let waited = t0.elapsed();
    assert_eq!(failed_kind(&answer), FailureKind::PeerGone, "{answer:?}");
    assert!(
        message_of(&answer).contains("did not come"),
        "{}",
        message_of(&answer)
    );
    assert!(
        waited >= Duration::from_secs(9) && waited < Duration::from_secs(19),
        "the set gave up after {waited:?}, not about 10 x frame_timeout"
    );
    assert_file_eq(&keep, b"old");
    // The name takes a whole push again.
    let mut other = Sender::connect(address);
    let done = other.push(1, "inbox/keep.bin", &data, 0o644);
    assert!(
        matches!(done, PeerMessage::Done { .. }),
        "{done:?}\n{}",
        d.log()
    );
    assert_file_eq(&keep, &data);
}
