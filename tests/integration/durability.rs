//! fsync and verify: `synced` says whether the destination was synced, and
//! `checksums` are the CRC-32C of exactly the bytes moved, for every
//! strategy; verification refuses destinations it cannot read back.

use std::fs::{File, OpenOptions};
use std::net::Shutdown;
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use ringxfer_ipc::{Checksums, Client, Completion, FailureKind, Strategy, TransferOptions};

use crate::support::*;

const STRATEGIES: [Strategy; 3] = [Strategy::Splice, Strategy::Direct, Strategy::Uncached];

fn o_direct_if(strategy: Strategy) -> i32 {
    if strategy == Strategy::Direct {
        libc::O_DIRECT
    } else {
        0
    }
}

/// The source, opened as the stub would for `strategy`.
fn source_for(path: &Path, strategy: Strategy) -> File {
    OpenOptions::new()
        .read(true)
        .custom_flags(o_direct_if(strategy))
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
}

/// A new destination opened read-write, so it can be read back.
fn read_write_dst(path: &Path, strategy: Strategy) -> File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(o_direct_if(strategy))
        .open(path)
        .unwrap_or_else(|e| panic!("create {}: {e}", path.display()))
}

/// Copies a fresh `len`-byte file with `o` (strategy, fsync, verify...),
/// checks the destination and returns the completion and the bytes.
fn copy(
    c: &Client,
    dir: &Path,
    name: &str,
    len: usize,
    o: &TransferOptions,
) -> (Completion, Vec<u8>) {
    let (src, data) = make_file(dir, &format!("{name}.src"), len, len as u64 ^ 0x5eed);
    let dst = dir.join(format!("{name}.dst"));
    let h = c
        .submit(
            source_for(&src, o.strategy).as_fd(),
            read_write_dst(&dst, o.strategy).as_fd(),
            o,
        )
        .unwrap_or_else(|e| panic!("{name}: submit: {e:?}"));
    let done = completed(wait(h), name);
    assert_eq!(done.bytes, len as u64, "{name}");
    assert_eq!(done.strategy, o.strategy, "{name}");
    assert_file_eq(&dst, &data);
    (done, data)
}

fn with(strategy: Strategy, fsync: bool, verify: bool) -> TransferOptions {
    TransferOptions {
        strategy,
        fsync,
        verify,
        ..opts()
    }
}

fn both(data: &[u8]) -> Option<Checksums> {
    let crc = crc32c::crc32c(data);
    Some(Checksums {
        source: crc,
        destination: crc,
    })
}

#[test]
fn fsync_is_reported_for_file_destinations_of_every_strategy() {
    let d = Daemon::start();
    let c = d.client();
    let dir = tmpdir();
    for strategy in STRATEGIES {
        for fsync in [true, false] {
            let name = format!("{strategy}-fsync-{fsync}");
            let (done, _) = copy(
                &c,
                dir.path(),
                &name,
                (3 << 20) + 123,
                &with(strategy, fsync, false),
            );
            assert_eq!(done.synced, fsync, "{name}: {done:?}");
            assert_eq!(done.checksums, None, "{name}: not verified: {done:?}");
        }
    }
    // An empty file can be synced too.
    let (done, _) = copy(
        &c,
        dir.path(),
        "empty",
        0,
        &with(Strategy::Splice, true, false),
    );
    assert!(done.synced, "{done:?}");
}

#[test]
fn fsync_is_ignored_for_a_socket_destination() {
    let d = Daemon::start();
    let c = d.client();
    let dir = tmpdir();
    let (src, data) = make_file(dir.path(), "to-socket", (1 << 20) + 9, 3);
    let (ours, theirs) = UnixStream::pair().unwrap();
    let drain = Drain::start(theirs);
    let h = c
        .submit(
            open_src(&src).as_fd(),
            ours.as_fd(),
            &with(Strategy::Splice, true, false),
        )
        .unwrap();
    let done = completed(wait(h), "socket with fsync");
    assert_eq!(done.bytes, data.len() as u64);
    assert!(!done.synced, "a socket cannot be synced: {done:?}");
    ours.shutdown(Shutdown::Write).unwrap();
    drop(ours);
    assert_eq!(drain.finish(Duration::from_secs(10)), data.len() as u64);
}

#[test]
fn verify_reports_the_crc32c_of_the_bytes_moved_for_every_strategy() {
    let d = Daemon::start();
    let c = d.client();
    let dir = tmpdir();
    for strategy in STRATEGIES {
        for len in [0, 4096, (5 << 20) + 4097] {
            let name = format!("{strategy}-verify-{len}");
            let (done, data) = copy(&c, dir.path(), &name, len, &with(strategy, false, true));
            assert_eq!(done.checksums, both(&data), "{name}: {done:?}");
            assert!(!done.synced, "{name}: {done:?}");
        }
    }
}

#[test]
fn verify_covers_only_the_range_moved() {
    let d = Daemon::start();
    let c = d.client();
    let dir = tmpdir();
    let (src, data) = make_file(dir.path(), "range.src", 1 << 20, 77);
    let dst = dir.path().join("range.dst");
    // Something beyond the range in the destination stays, and is not
    // part of the checksum.
    std::fs::write(&dst, pattern(78, 300_000)).unwrap();
    let (off, len, dest_off) = (4096 + 5, 100_000usize, 7u64);
    let t = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&dst)
        .unwrap();
    let h = c
        .submit(
            open_src(&src).as_fd(),
            t.as_fd(),
            &TransferOptions {
                offset: off as u64,
                length: Some(len as u64),
                dest_offset: dest_off,
                ..with(Strategy::Splice, false, true)
            },
        )
        .unwrap();
    let done = completed(wait(h), "ranged verify");
    let moved = &data[off..off + len];
    assert_eq!(done.checksums, both(moved), "{done:?}");
    let got = std::fs::read(&dst).unwrap();
    assert_bytes_eq(
        &got[dest_off as usize..dest_off as usize + len],
        moved,
        "the range in the destination",
    );
}

#[test]
fn fsync_and_verify_together() {
    let d = Daemon::start();
    let c = d.client();
    let dir = tmpdir();
    for strategy in STRATEGIES {
        let name = format!("{strategy}-both");
        let (done, data) = copy(
            &c,
            dir.path(),
            &name,
            (2 << 20) + 1,
            &with(strategy, true, true),
        );
        assert!(done.synced, "{name}: {done:?}");
        assert_eq!(done.checksums, both(&data), "{name}: {done:?}");
    }
}

#[test]
fn verify_into_a_write_only_destination_is_an_invalid_request() {
    let d = Daemon::start();
    let c = d.client();
    let dir = tmpdir();
    let (src, _) = make_file(dir.path(), "wo.src", 128 << 10, 9);
    // Every strategy reads the destination back (direct from the device).
    for strategy in STRATEGIES {
        let t = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(o_direct_if(strategy))
            .open(dir.path().join(format!("{strategy}.dst")))
            .unwrap();
        let h = c
            .submit(
                source_for(&src, strategy).as_fd(),
                t.as_fd(),
                &with(strategy, false, true),
            )
            .unwrap();
        let f = failed(
            wait(h),
            FailureKind::InvalidRequest,
            &format!("{strategy} verify into O_WRONLY"),
        );
        assert!(
            f.message.contains("read"),
            "{strategy}: the message says the destination must be readable: {f:?}"
        );
    }
    // The connection is still fine.
    copy_and_check(&c, dir.path(), "after", 10_000, 1);
}

#[test]
fn verify_into_a_socket_or_pipe_is_an_invalid_request() {
    let d = Daemon::start();
    let c = d.client();
    let dir = tmpdir();
    let (src, _) = make_file(dir.path(), "stream.src", 100_000, 10);
    let (ours, _theirs) = UnixStream::pair().unwrap();
    let (_pipe_r, pipe_w) = stalled_pipe();
    for (dst, what) in [(ours.as_fd(), "socket"), (pipe_w.as_fd(), "pipe")] {
        let h = c
            .submit(
                open_src(&src).as_fd(),
                dst,
                &with(Strategy::Auto, false, true),
            )
            .unwrap();
        failed(
            wait(h),
            FailureKind::InvalidRequest,
            &format!("verify into a {what}"),
        );
    }
    copy_and_check(&c, dir.path(), "after", 10_000, 2);
}

#[test]
fn verify_into_an_append_only_destination_is_an_invalid_request() {
    let d = Daemon::start();
    let c = d.client();
    let dir = tmpdir();
    let (src, _) = make_file(dir.path(), "append.src", 100_000, 11);
    let dst = dir.path().join("append.dst");
    std::fs::write(&dst, b"kept").unwrap();
    let t = OpenOptions::new()
        .read(true)
        .append(true)
        .open(&dst)
        .unwrap();
    let h = c
        .submit(
            open_src(&src).as_fd(),
            t.as_fd(),
            &with(Strategy::Auto, false, true),
        )
        .unwrap();
    failed(
        wait(h),
        FailureKind::InvalidRequest,
        "verify into an O_APPEND file",
    );
    assert_file_eq(&dst, b"kept");
}

#[test]
fn cancel_after_the_last_byte_during_fsync_or_verify_is_consistent() {
    // Once the bytes are in, a job with fsync and verify still has the sync
    // and the read-back ahead of it. A cancel then is either taken (the job
    // fails as cancelled) or refused because the job just finished (and it
    // completed, verified): never both, never neither.
    let d = Daemon::start();
    let baseline = d.baseline();
    let c = std::sync::Arc::new(d.client());
    let dir = tmpdir();
    const LEN: usize = 64 << 20;
    for strategy in STRATEGIES {
        let (src, data) = make_file(dir.path(), &format!("{strategy}.src"), LEN, 12);
        let dst = dir.path().join(format!("{strategy}.dst"));
        let h = c
            .submit(
                source_for(&src, strategy).as_fd(),
                read_write_dst(&dst, strategy).as_fd(),
                &with(strategy, true, true),
            )
            .unwrap();
        let id = id_of(&h);
        let mut finished = false;
        poll_until(Duration::from_secs(30), || match status_of(&c, id) {
            Ok(i) => {
                finished = !matches!(
                    i.state,
                    ringxfer_ipc::JobState::Queued
                        | ringxfer_ipc::JobState::Running
                        | ringxfer_ipc::JobState::Throttled
                );
                finished || i.bytes == LEN as u64
            }
            Err(e) => panic!("{strategy}: status: {e:?}"),
        });
        let answer = cancel_job(&c, id);
        let end = wait(h);
        match answer {
            Ok(()) => {
                failed(
                    end,
                    FailureKind::Cancelled,
                    &format!("{strategy}: cancel taken"),
                );
            }
            Err(e) => {
                refused::<()>(Err(e), FailureKind::NoSuchJob, strategy.name());
                let done = completed(end, &format!("{strategy}: cancel refused"));
                assert!(done.synced, "{strategy}: {done:?}");
                assert_eq!(done.checksums, both(&data), "{strategy}: {done:?}");
            }
        }
        eprintln!(
            "{strategy}: cancel {} (job finished before: {finished})",
            if answer_taken(&c, id) {
                "taken"
            } else {
                "refused"
            }
        );
    }
    drop(c);
    d.assert_fds_return(
        baseline,
        Duration::from_secs(5),
        "after cancels in the last phases",
    );
}

/// Whether the job ended cancelled, from what the daemon remembers.
fn answer_taken(c: &std::sync::Arc<Client>, id: u64) -> bool {
    matches!(
        status_of(c, id).map(|i| i.state),
        Ok(ringxfer_ipc::JobState::Failed {
            kind: FailureKind::Cancelled,
            ..
        })
    )
}
