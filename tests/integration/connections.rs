//! Limits on connections: how many in all and per user, how long one may
//! take to say Hello or to finish a frame, and how much event memory
//! clients that never read may hold.

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use ringxfer_ipc::{ClientError, ProtocolErrorKind, Request, TransferOptions, PROTOCOL_VERSION};

use crate::protocol_abuse::{frame, hello, raw};
use crate::support::*;

/// Reads until EOF (or the read timeout); what came, and whether EOF did.
fn read_to_eof(s: &std::os::unix::net::UnixStream, within: Duration) -> (Vec<u8>, bool) {
    s.set_read_timeout(Some(within)).unwrap();
    let mut got = Vec::new();
    let eof = (&*s).read_to_end(&mut got).is_ok();
    (got, eof)
}

fn refused_connect(d: &Daemon, flag: &str) {
    match ringxfer_ipc::Client::connect(&d.socket) {
        Err(ClientError::Protocol { kind, message }) => {
            assert_eq!(kind, ProtocolErrorKind::TooManyConnections, "{message}");
            assert!(message.contains(flag), "{message}");
        }
        other => panic!("expected a refusal naming {flag}, got {other:?}"),
    }
}

#[test]
fn connections_past_the_users_cap_are_refused_and_room_comes_back() {
    let d = Daemon::start_with(&["--max-connections-per-user", "2"]);
    let a = d.client();
    let b = d.client();
    refused_connect(&d, "--max-connections-per-user");
    drop(a);
    assert!(
        poll_until(Duration::from_secs(5), || ringxfer_ipc::Client::connect(
            &d.socket
        )
        .is_ok()),
        "a connection closed gives its place back"
    );
    drop(b);
    d.stop();
}

#[test]
fn connections_past_the_daemons_cap_are_refused() {
    let d = Daemon::start_with(&["--max-connections", "3"]);
    let held: Vec<_> = (0..3).map(|_| d.client()).collect();
    refused_connect(&d, "--max-connections");
    drop(held);
    d.stop();
}

#[test]
fn a_connection_that_never_says_hello_is_closed() {
    let d = Daemon::start_with(&["--handshake-timeout", "300ms"]);
    let baseline = d.baseline();
    let silent = raw(&d);
    let t0 = Instant::now();
    let (got, eof) = read_to_eof(&silent, Duration::from_secs(5));
    assert!(eof, "not closed within 5 s");
    assert!(t0.elapsed() >= Duration::from_millis(300));
    assert!(
        String::from_utf8_lossy(&got).contains("no Hello within"),
        "{got:?}"
    );
    drop(silent);
    d.assert_healthy(baseline, "after closing a silent connection");
}

#[test]
fn a_connection_holding_half_a_frame_is_closed() {
    let d = Daemon::start_with(&["--frame-timeout", "300ms"]);
    let s = raw(&d);
    hello(&s);
    // The first bytes of a Stats frame, and then nothing.
    let whole = frame(&Request::Stats);
    (&s).write_all(&whole[..whole.len() - 1]).unwrap();
    let (got, eof) = read_to_eof(&s, Duration::from_secs(5));
    assert!(eof, "not closed within 5 s");
    assert!(
        String::from_utf8_lossy(&got).contains("part of a request frame held unfinished"),
        "{got:?}"
    );
    d.stop();
}

/// The daemon's resident memory, from /proc.
fn rss_bytes(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS in /proc/PID/status");
    kib * 1024
}

/// Raises this process's open-file limit to its hard limit.
fn raise_nofile() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid rlimit the call fills in.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
    lim.rlim_cur = lim.rlim_max;
    // SAFETY: as above; the soft limit is raised to the hard one, which is allowed.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) }, 0);
}

#[test]
fn a_thousand_clients_that_never_read_hold_bounded_memory() {
    raise_nofile();
    let d = Daemon::start();
    let pid = d.pid;
    let owner = d.client();
    // Listings worth reading: 100 jobs with 1 KiB tags, about 120 KiB each.
    let idle: Vec<_> = (0..100)
        .map(|i| {
            let o = TransferOptions {
                tag: format!("{i:04}{}", "t".repeat(1020)),
                ..opts()
            };
            submit_idle(&owner, &o)
        })
        .collect();
    let mut asks = frame(&Request::Hello {
        version: PROTOCOL_VERSION,
    });
    for req in 0..5 {
        asks.extend_from_slice(&frame(&Request::Jobs { req, after: 0 }));
    }
    // A thousand clients ask for 5 listings each and never read a byte
    // (benches/clients asks for 20).
    let silent: Vec<_> = (0..1000)
        .map(|_| {
            let s = raw(&d);
            s.set_nonblocking(true).unwrap();
            let _ = (&s).write(&asks);
            s
        })
        .collect();
    // Until the daemon has answered every listing it is going to: the
    // count of events it encoded grows by no more than the Stats answer.
    let stats = shared_client(&d);
    let mut last = u64::MAX;
    assert!(
        poll_until(Duration::from_secs(30), || {
            std::thread::sleep(Duration::from_millis(300));
            let now = stats_of(&stats).events_sent;
            std::mem::replace(&mut last, now).saturating_add(1) >= now
        }),
        "the daemon kept sending events for 30 s"
    );
    let rss = rss_bytes(pid);
    assert!(
        rss < 128 << 20,
        "the daemon holds {} MiB with 1,000 clients that do not read",
        rss >> 20
    );
    // Everyone else is still served.
    let dir = tmpdir();
    copy_and_check(&owner, dir.path(), "served", 300_000, 0x1000);
    let other = d.client();
    let zero = zero_source(4096);
    let done = completed(
        wait(
            other
                .submit(zero.as_fd(), dev_null().as_fd(), &opts())
                .unwrap(),
        ),
        "a new client's job",
    );
    assert_eq!(done.bytes, 4096);
    drop((silent, idle, other, owner, stats));
    d.stop();
}

#[test]
fn listings_come_in_pages_and_tags_are_bounded() {
    raise_nofile();
    let d = Daemon::start();
    let c = d.client();
    let too_long = TransferOptions {
        tag: "x".repeat(ringxfer_ipc::MAX_TAG_BYTES + 1),
        ..opts()
    };
    let (h, _w) = submit_idle(&c, &too_long);
    let f = failed(
        wait(h),
        ringxfer_ipc::FailureKind::InvalidRequest,
        "a tag over the limit",
    );
    assert!(f.message.contains("a tag is at most 1024"), "{f:?}");

    // More jobs than a page holds, each with the longest tag allowed.
    let n = ringxfer_ipc::JOBS_PAGE * 2 + 17;
    let held: Vec<_> = (0..n)
        .map(|i| {
            let o = TransferOptions {
                tag: format!("{i:05}{}", "t".repeat(ringxfer_ipc::MAX_TAG_BYTES - 5)),
                ..opts()
            };
            submit_idle(&c, &o)
        })
        .collect();
    // A job is listed once admitted (its statx done, its id given), as the
    // Accepted event says; under load the last few may still be in admission.
    for (h, _) in &held {
        h.job_id().expect("accepted");
    }
    let listed = c.jobs().expect("jobs");
    assert_eq!(listed.len(), n, "every job, across pages");
    assert!(
        listed.windows(2).all(|w| w[0].job < w[1].job),
        "oldest first, once each"
    );
    for (i, job) in listed.iter().enumerate() {
        assert!(job.tag.starts_with(&format!("{i:05}")), "{}", &job.tag[..5]);
    }
    drop(held);
    drop(c);
    d.stop();
}

#[test]
fn waiters_on_one_job_are_bounded() {
    let d = Daemon::start();
    let c = d.client();
    let (h, _w) = submit_idle(&c, &opts());
    let id = h.job_id().expect("the job's id");
    let other = d.client();
    let waits: Vec<_> = (0..64)
        .map(|_| other.wait_job(id, false).expect("wait_job"))
        .collect();
    let over = other.wait_job(id, false).expect("wait_job");
    let f = failed(
        wait_within(over, Duration::from_secs(10)),
        ringxfer_ipc::FailureKind::LimitExceeded,
        "the 65th waiter",
    );
    assert!(f.message.contains("64 waiters"), "{f:?}");
    drop((waits, h, c, other));
    d.stop();
}
